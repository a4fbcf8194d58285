# The thermal-aware throttler as a service. It runs while the stack runs
# (bound to the drive, which holds its Immich API key) and restores the clock,
# the CPU quota and its queue pauses when it stops, even after a crash.
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
    types
    ;
  al = import ./lib.nix { inherit lib utils config; };
  inherit (al)
    cfg
    defaults
    s
    onDrive
    boundToDrive
    unitAttr
    ;
  t = cfg.throttle;
  exe = "${cfg.package}/bin/immich-throttle";
  hhmm = types.strMatching "([01][0-9]|2[0-3]):[0-5][0-9]";
in
{
  options.services.immich-appliance.throttle = {
    enable = mkEnableOption "the thermal-aware job throttler" // {
      default = true;
    };

    setpointCelsius = mkOption {
      type = types.numbers.between 50 79;
      default = defaults.throttle.setpoint-celsius;
      example = 72;
      description = ''
        The SoC temperature the throttler holds by lowering the CPU clock,
        then Immich's CPU quota, then pausing Immich's heavy queues. The
        firmware throttles at 80 °C; see docs/heat-and-background-jobs.md
        for tuning it to your case.
      '';
    };

    ceilingCelsius = mkOption {
      type = types.numbers.between 50 79.5;
      default = defaults.throttle.ceiling-celsius;
      example = 75;
      description = ''
        At this temperature (or on any firmware throttle bit) the throttler
        latches an emergency: lowest clock, lowest quota, every heavy queue
        paused, until the SoC is below `releaseCelsius`.
      '';
    };

    releaseCelsius = mkOption {
      type = types.numbers.between 30 78;
      default = defaults.throttle.release-celsius;
      example = 65;
      description = "Where a latched emergency is released.";
    };

    quietHours = mkOption {
      type = types.nullOr (
        types.submodule {
          options = {
            start = mkOption {
              type = hhmm;
              example = "23:00";
              description = "Local time from which heavy work may run.";
            };
            end = mkOption {
              type = hhmm;
              example = "07:00";
              description = "Local time until which heavy work may run.";
            };
          };
        }
      );
      default = null;
      example = {
        start = "23:00";
        end = "07:00";
      };
      description = ''
        Run heavy work (thumbnails, transcoding, machine learning) only in
        this window, for example at night. null runs it whenever the
        temperature allows.
      '';
    };

    prometheusTextfile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/prometheus-node-exporter/immich-throttle.prom";
      description = "Also write the throttler's figures to this Prometheus node-exporter textfile.";
    };
  };

  config = mkIf (cfg.enable && t.enable) {
    assertions = [
      {
        assertion = t.releaseCelsius < t.setpointCelsius && t.setpointCelsius <= t.ceilingCelsius;
        message = "services.immich-appliance.throttle: releaseCelsius < setpointCelsius <= ceilingCelsius must hold (they are ${toString t.releaseCelsius}, ${toString t.setpointCelsius}, ${toString t.ceilingCelsius}).";
      }
    ];

    systemd.services.${unitAttr s.units.throttle} = lib.mkMerge [
      (boundToDrive [ (onDrive s.layout.throttle-key) ])
      {
        description = "Immich thermal-aware job throttler";
        after = [ "immich-server.service" ];
        serviceConfig = {
          Type = "notify";
          NotifyAccess = "main";
          WatchdogSec = 30;
          ExecStart = "${exe} run";
          # After a crash (or SIGKILL) the clock, the quota and the queue
          # pauses it changed are put back.
          ExecStopPost = "${exe} restore";
          Restart = "on-failure";
          RestartSec = 5;
          # The key directory may still be empty: the daemon then controls
          # the clock and the quota only, and says so.
          LoadCredential = "${s.throttle.api-key-credential}:${onDrive s.layout.throttle-key}";
          StateDirectory = "immich-throttle";
          RuntimeDirectory = "immich-throttle";
          # Root writes the cpufreq limit and asks systemd for the quota over
          # D-Bus; everything else is read-only or hidden.
          ProtectSystem = "strict";
          ReadWritePaths = [
            "/sys/devices/system/cpu"
            "/run/immich-appliance"
          ]
          ++ lib.optional (t.prometheusTextfile != null) (dirOf t.prometheusTextfile);
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          NoNewPrivileges = true;
          CapabilityBoundingSet = "";
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          RestrictNamespaces = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          ProtectClock = true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectControlGroups = true;
        };
      }
    ];

    # The pause switch lives here, so that it outlasts a restart of the
    # throttler (it is cleared by a reboot).
    systemd.tmpfiles.settings.immich-appliance."/run/immich-appliance".d = {
      mode = "0755";
      user = "root";
      group = "root";
    };
  };
}
