# Encrypted backups with rustic: a timer that survives downtime, a run soon
# after each unlock, retention, periodic checks, and a monthly restore drill.
# The run itself (immich-server backup run) skips, and records the skip,
# while the drive is locked, and never stops Immich.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    types
    mkPackageOption
    ;
  al = import ./lib.nix { inherit lib utils config; };
  inherit (al)
    cfg
    defaults
    s
    mountUnit
    unitAttr
    ;
  b = cfg.backup;
  exe = "${cfg.package}/bin/immich-server";
  keepOption =
    period: example:
    mkOption {
      type = types.ints.unsigned;
      default = defaults.backup."keep-${period}";
      inherit example;
      description = "How many ${period} snapshots rustic keeps (`forget --keep-${period}`).";
    };
  # Backups and drills are guests: lowest CPU and IO priority.
  lowPriority = {
    Type = "oneshot";
    Nice = 19;
    IOSchedulingClass = "idle";
    CPUSchedulingPolicy = "idle";
  };
in
{
  options.services.immich-appliance.backup = {
    enable = mkEnableOption "encrypted backups with rustic (configure the repository with `immich-server backup setup`)" // {
      default = true;
    };

    rusticPackage = mkPackageOption pkgs "rustic" {
      example = "pkgs.rustic.overrideAttrs { doCheck = false; }";
      extraDescription = "The appliance is tested with rustic 0.11.";
    };

    schedule = mkOption {
      type = types.str;
      default = "*-*-* 03:30:00";
      example = "*-*-* 02:00:00";
      description = ''
        When the daily backup runs (systemd calendar syntax). A run missed
        while the Pi was off runs when it is back; a run while the drive is
        locked is skipped and recorded. Another run follows each unlock.
      '';
    };

    afterUnlockDelay = mkOption {
      type = types.str;
      default = "15min";
      example = "1h";
      description = "How long after `immich-server --start` the extra run comes.";
    };

    essentialOnly = mkOption {
      type = types.bool;
      default = defaults.backup.essential-only;
      example = true;
      description = ''
        Back up only what cannot be regenerated: originals, the library,
        profile pictures and the database dumps. Thumbnails and encoded
        videos are left out; Immich can rebuild them, slowly, after a
        restore.
      '';
    };

    keep = {
      daily = keepOption "daily" 14;
      weekly = keepOption "weekly" 8;
      monthly = keepOption "monthly" 24;
    };

    checkEveryDays = mkOption {
      type = types.ints.positive;
      default = defaults.backup.check-every-days;
      example = 30;
      description = "How often a run also checks the repository (`rustic check`).";
    };

    checkReadSubset = mkOption {
      type = types.strMatching "[0-9]+(\\.[0-9]+)?%|[0-9]+/[0-9]+";
      default = defaults.backup.check-read-subset;
      example = "10%";
      description = "The share of the stored data a check reads back and verifies.";
    };

    pingUrl = mkOption {
      type = types.nullOr (types.strMatching "https?://.+");
      default = null;
      example = "https://hc-ping.com/your-uuid";
      description = ''
        A healthchecks-style URL pinged after each run: the URL on success,
        URL/fail on failure. Your monitor then tells you when backups stop.
      '';
    };

    staleAfterHours = mkOption {
      type = types.ints.positive;
      default = defaults.backup.stale-after-hours;
      example = 72;
      description = "`immich-server status` turns red when the last successful backup is older than this.";
    };

    drillSchedule = mkOption {
      type = types.nullOr types.str;
      default = "monthly";
      example = "weekly";
      description = ''
        When the restore drill runs: it restores the latest snapshot into a
        scratch area, checks it against the snapshot, and loads the database
        dump into a scratch database. null disables the scheduled drill.
      '';
    };
  };

  config = mkIf (cfg.enable && b.enable) {
    systemd.services.${unitAttr s.units.backup} = {
      description = "Immich appliance backup (rustic)";
      # Not bound to the drive: while it is locked the run records a skip.
      after = [ mountUnit ];
      serviceConfig = lowPriority // {
        ExecStart = "${exe} backup run";
        # No time limit: the first backup of a large library runs for as
        # long as the upload takes (a limit killed it, and status was red
        # on the first morning). Runs never overlap: systemd does not start
        # the unit again while it runs, and a run from a shell takes the
        # same lock.
        TimeoutStartSec = "infinity";
      };
    };

    systemd.timers.${unitAttr s.units.backup-timer} = {
      description = "Daily Immich appliance backup";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = b.schedule;
        Persistent = true;
        RandomizedDelaySec = "20min";
        Unit = s.units.backup;
      };
    };

    # Started by `immich-server --start`, and gone with the drive.
    systemd.timers.${unitAttr s.units.backup-after-unlock} = {
      description = "Immich appliance backup soon after the drive is unlocked";
      bindsTo = [ mountUnit ];
      after = [ mountUnit ];
      timerConfig = {
        OnActiveSec = b.afterUnlockDelay;
        RemainAfterElapse = false;
        Unit = s.units.backup;
      };
    };

    systemd.services.${unitAttr s.units.drill} = {
      description = "Immich appliance restore drill";
      after = [ mountUnit ];
      serviceConfig = lowPriority // {
        ExecStart = "${exe} backup drill";
        TimeoutStartSec = "24h";
      };
    };

    systemd.timers.${unitAttr s.units.drill-timer} = mkIf (b.drillSchedule != null) {
      description = "Monthly Immich appliance restore drill";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = b.drillSchedule;
        Persistent = true;
        RandomizedDelaySec = "2h";
        Unit = s.units.drill;
      };
    };

    environment.systemPackages = [ b.rusticPackage ];
  };
}
