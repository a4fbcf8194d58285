# Reaching Immich: on the home network (port 2283 and immich.local over mDNS)
# and from anywhere over Tailscale (optionally HTTPS with `tailscale serve`).
{
  config,
  lib,
  utils,
  ...
}:

let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkForce
    types
    ;
  al = import ./lib.nix { inherit lib utils config; };
  inherit (al)
    cfg
    s
    mountUnit
    onDrive
    ;
  r = cfg.remoteAccess;
  port = config.services.immich.port;
  tailscale = "${config.services.tailscale.package}/bin/tailscale";
in
{
  options.services.immich-appliance.remoteAccess = {
    lan = {
      enable = mkEnableOption "Immich on the home network (opens its port in the firewall)" // {
        default = true;
      };
      mdns = mkEnableOption "publishing the appliance's name over mDNS, so phones find it as immich.local" // {
        default = true;
      };
      mdnsHostName = mkOption {
        type = types.strMatching "[a-z0-9-]+";
        default = "immich";
        example = "photos";
        description = "The name published over mDNS (.local is added).";
      };
    };

    tailscale = {
      enable = mkEnableOption "Tailscale, to reach Immich (and SSH, to unlock) from anywhere" // {
        default = true;
      };
      authKeyFromDrive = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Log in to Tailscale with an auth key stored on the drive as
          secrets/tailscale-authkey, the first time the drive is unlocked.
          Without it, log in once with `sudo tailscale up`. (Tailscale's own
          node key stays on the SD card so that the Pi is reachable to be
          unlocked; remove a stolen Pi from your tailnet.)
        '';
      };
      serve = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Publish Immich with `tailscale serve` as https://<name>.<tailnet>.ts.net
          on the tailnet. Needs MagicDNS and HTTPS certificates enabled in
          the tailnet's admin console.
        '';
      };
    };
  };

  config = mkIf cfg.enable (
    lib.mkMerge [
      {
        networking.firewall = {
          enable = true;
          allowedTCPPorts = lib.optional r.lan.enable port;
        };
      }

      (mkIf (r.lan.enable && r.lan.mdns) {
        services.avahi = {
          enable = true;
          hostName = r.lan.mdnsHostName;
          nssmdns4 = true;
          openFirewall = true;
          publish = {
            enable = true;
            addresses = true;
          };
        };
      })

      (mkIf r.tailscale.enable {
        services.tailscale = {
          enable = true;
          # Direct connections instead of relays.
          openFirewall = true;
        };
        # Every port (Immich, SSH) is open to the tailnet, which is yours.
        networking.firewall.trustedInterfaces = [ config.services.tailscale.interfaceName ];
      })

      (mkIf (r.tailscale.enable && r.tailscale.authKeyFromDrive) {
        services.tailscale.authKeyFile = "${onDrive s.layout.secrets}/tailscale-authkey";
        # The key is on the drive: log in when it is unlocked, not at boot.
        systemd.services.tailscaled-autoconnect = {
          wantedBy = mkForce [ ];
          bindsTo = [ mountUnit ];
          after = [ mountUnit ];
        };
      })

      (mkIf (r.tailscale.enable && r.tailscale.serve) {
        systemd.services.immich-tailscale-serve = {
          description = "Publish Immich over HTTPS on the tailnet";
          after = [
            "tailscaled.service"
            "immich-server.service"
          ];
          wants = [ "tailscaled.service" ];
          # Started by `immich-server --start` after the stack, and stopped
          # with Immich.
          bindsTo = [ "immich-server.service" ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = "${tailscale} serve --bg --yes --https=443 http://127.0.0.1:${toString port}";
            ExecStop = "${tailscale} serve --https=443 off";
          };
        };
      })
    ]
  );
}
