# Helpers shared by the appliance's module files.
{
  lib,
  utils,
  config,
}:

rec {
  cfg = config.services.immich-appliance;
  # The one definition of names, paths and tunables (also embedded in the
  # Rust tools).
  defaults = lib.importTOML ./defaults.toml;
  # The effective config.toml.
  s = cfg.settings;

  mountPoint = cfg.drive.mountPoint;
  mountUnit = "${utils.escapeSystemdPath mountPoint}.mount";
  onDrive = dir: "${mountPoint}/${dir.path}";

  # "immich-backup.timer" -> "immich-backup", the attribute name NixOS uses.
  unitAttr = name: lib.head (lib.splitString "." name);

  # Every unit that reads or writes the drive: never started at boot, bound
  # to the drive's mount (stopped when the drive goes away), ordered after
  # it, and needing the paths it uses.
  boundToDrive = paths: {
    wantedBy = lib.mkForce [ ];
    bindsTo = [ mountUnit ];
    after = [ mountUnit ];
    unitConfig.RequiresMountsFor = paths;
  };

  # mkDefault on every leaf, so that one key set in settings overrides just
  # that key.
  deepDefault = v: if lib.isAttrs v then lib.mapAttrs (_: deepDefault) v else lib.mkDefault v;
}
