# What nixpkgs' own modules define that the appliance must override: each of
# them starts its units at boot. Without these the tests could not tell a
# mkForce that works from one that is missing.
{ config, lib, ... }:

let
  immich = config.services.immich;
  boot = [ "multi-user.target" ];
in
{
  config = lib.mkMerge [
    # nixos/modules/services/web-apps/immich.nix
    (lib.mkIf immich.enable {
      services.postgresql.enable = lib.mkIf immich.database.enable true;
      services.redis.servers.immich.enable = lib.mkIf immich.redis.enable true;
      systemd.services.immich-server = {
        wantedBy = boot;
        requires = [ "postgresql.target" ];
        after = [ "postgresql.target" ];
      };
      systemd.services.immich-machine-learning = lib.mkIf immich.machine-learning.enable {
        wantedBy = boot;
      };
    })
    # nixos/modules/services/databases/postgresql.nix
    (lib.mkIf config.services.postgresql.enable {
      systemd.services.postgresql = {
        wants = [ "postgresql.target" ];
        partOf = [ "postgresql.target" ];
        unitConfig.RequiresMountsFor = config.services.postgresql.dataDir;
      };
      systemd.services.postgresql-setup = {
        requires = [ "postgresql.service" ];
        after = [ "postgresql.service" ];
      };
      systemd.targets.postgresql = {
        requires = [
          "postgresql.service"
          "postgresql-setup.service"
        ];
        wantedBy = boot;
      };
    })
    # nixos/modules/services/databases/redis.nix
    {
      systemd.services = lib.mapAttrs' (
        name: _: lib.nameValuePair "redis-${name}" { wantedBy = boot; }
      ) (lib.filterAttrs (_: s: s.enable) config.services.redis.servers);
    }
    # nixos/modules/services/networking/tailscale.nix
    (lib.mkIf (config.services.tailscale.enable && config.services.tailscale.authKeyFile != null) {
      systemd.services.tailscaled-autoconnect.wantedBy = boot;
    })
  ];
}
