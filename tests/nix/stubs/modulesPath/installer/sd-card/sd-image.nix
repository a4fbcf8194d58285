# nixos/modules/installer/sd-card/sd-image.nix and image/file-options.nix:
# the options images/sd-image.nix sets. There is deliberately no stub of
# sd-image-aarch64.nix: importing it (and its installer profile) fails here.
{ lib, config, ... }:

let
  t = lib.types;
  opt = type: default: lib.mkOption { inherit type default; };
in
{
  options = {
    image.baseName = opt t.str "nixos-image-${config.system.nixos.label}";
    sdImage = {
      compressImage = opt t.bool true;
      expandOnBoot = opt t.bool true;
      populateRootCommands = lib.mkOption { type = t.lines; };
    };
  };
}
