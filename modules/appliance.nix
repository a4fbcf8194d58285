# The core: the drive, the config file the Rust tools read, and Immich,
# PostgreSQL and Redis wired so that nothing of them runs, or writes, unless
# the encrypted drive is unlocked and mounted.
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
    mkDefault
    mkForce
    types
    literalExpression
    ;
  al = import ./lib.nix { inherit lib utils config; };
  inherit (al)
    cfg
    defaults
    s
    mountPoint
    onDrive
    boundToDrive
    deepDefault
    ;
  settingsFormat = pkgs.formats.toml { };

  ml = cfg.machineLearning;
  mlLocal = config.services.immich.machine-learning.enable;
  throttle = cfg.throttle;
  backup = cfg.backup;
  remote = cfg.remoteAccess;
  u = defaults.units;

  computed = {
    drive = {
      mapper-name = cfg.drive.mapperName;
      mount-point = mountPoint;
      mount-options = cfg.drive.mountOptions;
      cipher = cfg.drive.cipher;
    };
    layout = {
      # One data directory per PostgreSQL major version, so that an upgrade
      # can never start Immich on an empty cluster.
      postgres.path = "postgres/${config.services.postgresql.package.psqlSchema}";
      media.owner = config.services.immich.user;
      media.group = config.services.immich.group;
    };
    units = {
      # Started in this order by `immich-server --start`.
      stack = [
        "postgresql.target"
        "redis-immich.service"
        "immich-server.service"
      ]
      ++ lib.optional mlLocal "immich-machine-learning.service"
      ++ lib.optional throttle.enable u.throttle;
      after-start =
        lib.optional backup.enable u.backup-after-unlock
        ++ lib.optional (remote.tailscale.enable && remote.tailscale.authKeyFromDrive) "tailscaled-autoconnect.service"
        ++ lib.optional (remote.tailscale.enable && remote.tailscale.serve) "immich-tailscale-serve.service";
    };
    immich = {
      url = "http://127.0.0.1:${toString config.services.immich.port}";
      lan-port = if remote.lan.enable then config.services.immich.port else 0;
      tailscale = remote.tailscale.enable;
      tailscale-serve = remote.tailscale.enable && remote.tailscale.serve;
      mdns-name = if remote.lan.enable && remote.lan.mdns then "${remote.lan.mdnsHostName}.local" else "";
      ml-enabled = ml.mode != "off";
      ml-urls = lib.optionals (ml.mode == "remote") (
        ml.remoteUrls ++ lib.optional ml.localFallback "http://localhost:3003"
      );
    };
    throttle = {
      setpoint-celsius = throttle.setpointCelsius;
      ceiling-celsius = throttle.ceilingCelsius;
      release-celsius = throttle.releaseCelsius;
      quiet-hours-start = if throttle.quietHours == null then "" else throttle.quietHours.start;
      quiet-hours-end = if throttle.quietHours == null then "" else throttle.quietHours.end;
      prometheus-textfile = if throttle.prometheusTextfile == null then "" else throttle.prometheusTextfile;
    };
    backup = {
      enable = backup.enable;
      database = config.services.immich.database.name;
      essential-only = backup.essentialOnly;
      keep-daily = backup.keep.daily;
      keep-weekly = backup.keep.weekly;
      keep-monthly = backup.keep.monthly;
      check-every-days = backup.checkEveryDays;
      check-read-subset = backup.checkReadSubset;
      ping-url = if backup.pingUrl == null then "" else backup.pingUrl;
      stale-after-hours = backup.staleAfterHours;
    };
    alerts =
      let
        a = cfg.alerts;
        orEmpty = v: if v == null then "" else v;
      in
      {
        name = orEmpty a.name;
        page-url = orEmpty a.pageUrl;
        ntfy-url = orEmpty a.ntfy.url;
        ntfy-priority = a.ntfy.priority;
        webhook-url = orEmpty a.webhookUrl;
        smtp-host = orEmpty a.email.smtpHost;
        smtp-port = a.email.port;
        smtp-security = a.email.security;
        smtp-user = orEmpty a.email.user;
        email-from = orEmpty a.email.from;
        email-to = a.email.to;
      };
    # External programs by store path, never looked up in PATH.
    tools = {
      e2fsck = "${pkgs.e2fsprogs}/bin/e2fsck";
      mkfs-ext4 = "${pkgs.e2fsprogs}/bin/mkfs.ext4";
      journalctl = "${config.systemd.package}/bin/journalctl";
      tailscale = "${config.services.tailscale.package}/bin/tailscale";
      rustic = "${backup.rusticPackage}/bin/rustic";
      pg-dump = "${config.services.postgresql.finalPackage}/bin/pg_dump";
      pg-restore = "${config.services.postgresql.finalPackage}/bin/pg_restore";
      psql = "${config.services.postgresql.finalPackage}/bin/psql";
      smartctl = "${pkgs.smartmontools}/bin/smartctl";
    };
  };
in
{
  options.services.immich-appliance = {
    enable = mkEnableOption "the Immich photo appliance (encrypted drive, Immich, PostgreSQL, Redis)";

    package = mkOption {
      type = types.package;
      defaultText = literalExpression "immich-appliance.packages.\${system}.default";
      example = literalExpression "inputs.immich-appliance.packages.aarch64-linux.default";
      description = ''
        The package with the appliance's tools, `immich-server` and
        `immich-throttle`. The flake's `nixosModules.default` sets it.
      '';
    };

    boardMemoryGiB = mkOption {
      type = types.enum [
        2
        4
        8
        16
      ];
      default = 4;
      example = 8;
      description = ''
        The board's RAM. It picks defaults that depend on memory, such as
        whether machine learning runs on the Pi (Immich needs more than
        4 GB for it). The same image runs on every Pi 4, so this is declared
        rather than detected: set it for your board.
      '';
    };

    drive = {
      mapperName = mkOption {
        type = types.strMatching "[A-Za-z0-9_.-]+";
        default = defaults.drive.mapper-name;
        example = "photos";
        description = "Name of the unlocked drive under /dev/mapper.";
      };
      mountPoint = mkOption {
        type = types.strMatching "/[^[:space:]]*[^/]";
        default = defaults.drive.mount-point;
        example = "/srv/photos";
        description = ''
          Where the unlocked drive is mounted. PostgreSQL's data, Immich's
          media and every secret live below it. While the drive is locked
          this is an empty, immutable directory on the SD card.
        '';
      };
      mountOptions = mkOption {
        type = types.listOf types.str;
        default = defaults.drive.mount-options;
        example = [
          "nodev"
          "nosuid"
          "noatime"
          "commit=60"
        ];
        description = "Mount options of the drive's ext4 filesystem.";
      };
      cipher = mkOption {
        type = types.enum [
          "auto"
          "aes-xts-plain64"
          "xchacha12,aes-adiantum-plain64"
          "xchacha20,aes-adiantum-plain64"
        ];
        default = defaults.drive.cipher;
        example = "aes-xts-plain64";
        description = ''
          The cipher `immich-server init` formats a new drive with. `auto`
          measures on the Pi itself and takes Adiantum only when the CPU has
          no AES instructions (a Pi 4 has none) and Adiantum is faster there;
          otherwise AES-XTS. A drive keeps the cipher it was formatted with.
        '';
      };
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = literalExpression ''
        {
          units.start-timeout-secs = 600;
          immich.ping-timeout-secs = 900;
        }
      '';
      description = ''
        The contents of /etc/immich-appliance/config.toml, which the Rust
        tools read: unit names, paths, the drive's layout and tunables. The
        module fills it from the options above and modules/defaults.toml;
        set keys here to override them. Unknown keys are rejected when the
        system is built.
      '';
    };
  };

  config = mkIf cfg.enable {
    # The whole config.toml, computed here from the defaults and every
    # option of the appliance (the other module files only declare them).
    services.immich-appliance.settings = deepDefault (lib.recursiveUpdate defaults computed);

    environment.etc."immich-appliance/config.toml".source = settingsFormat.generate "immich-appliance-config.toml" s;
    # cryptsetup for the documented repairs by hand (docs/after-a-reboot.md):
    # a filesystem check e2fsck -p cannot fix, a full drive.
    environment.systemPackages = [
      cfg.package
      pkgs.cryptsetup
    ];

    # Fail the build, not the first unlock, on a config the tools reject.
    system.checks =
      lib.optional (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) (
        pkgs.runCommand "immich-appliance-config-check" { } ''
          ${lib.getExe cfg.package} --config ${config.environment.etc."immich-appliance/config.toml".source} show-config > $out
        ''
      )
      # Adiantum, which `init` may pick on a Pi 4, must be in the kernel
      # (the crypto API loads it on demand): fail the build, not the init.
      ++ lib.optional (cfg.drive.cipher != "aes-xts-plain64") (
        pkgs.runCommand "immich-appliance-adiantum-check" { } ''
          for mods in ${config.boot.kernelPackages.kernel}/lib/modules/*; do
            if find "$mods" -name 'adiantum.ko*' | grep -q . ||
              grep -qs 'crypto/adiantum.ko' "$mods/modules.builtin"; then
              touch $out
              exit 0
            fi
          done
          echo "services.immich-appliance.drive.cipher = \"${cfg.drive.cipher}\" needs Adiantum (CONFIG_CRYPTO_ADIANTUM), which this kernel lacks; set drive.cipher = \"aes-xts-plain64\"" >&2
          exit 1
        ''
      );

    # The mount point: an empty directory on the SD card while the drive is
    # locked (immich-server makes it immutable before the first mount).
    systemd.tmpfiles.settings.immich-appliance.${mountPoint}.d = {
      mode = "0755";
      user = "root";
      group = "root";
    };

    services.immich = {
      enable = true;
      mediaLocation = onDrive s.layout.media;
      # Reachable on the LAN (if the firewall allows it) and the tailnet.
      host = "0.0.0.0";
      # null keeps the system config in Immich's database, where the
      # throttler may change concurrency; a config file would lock it.
      settings = mkDefault null;
    };

    services.postgresql.dataDir = onDrive s.layout.postgres;

    # Redis stays up without the drive, so it must keep nothing on disk:
    # the job queue holds asset IDs, which are private.
    services.redis.servers.immich = {
      save = [ ];
      appendOnly = false;
    };

    systemd.services = {
      postgresql = boundToDrive [ (onDrive s.layout.postgres) ];
      postgresql-setup = boundToDrive [ (onDrive s.layout.postgres) ];
      immich-server = boundToDrive [ (onDrive s.layout.media) ];
      immich-machine-learning = mkIf config.services.immich.machine-learning.enable (boundToDrive [ ]);
      # Redis keeps nothing on the drive, but it holds Immich's job queue
      # (asset ids): it runs only with the drive, like the rest of the stack.
      redis-immich = boundToDrive [ ];
    };
    systemd.targets.postgresql.wantedBy = mkForce [ ];

    assertions = [
      {
        assertion = lib.hasPrefix "/" mountPoint && !(lib.hasPrefix "/nix" mountPoint);
        message = "services.immich-appliance.drive.mountPoint must be an absolute path outside /nix.";
      }
      {
        assertion = config.services.immich.database.enable && config.services.immich.redis.enable;
        message = "The appliance runs Immich's PostgreSQL and Redis itself; keep services.immich.database.enable and services.immich.redis.enable on.";
      }
    ];

    warnings = lib.optional (config.services.immich.settings != null) ''
      services.immich.settings is set, so Immich reads a config file and refuses config
      changes through its API: the throttler can still pause queues and lower the clock,
      but cannot lower concurrency, and the machine-learning URLs from
      services.immich-appliance are not applied. Set them in that file instead.
    '';
  };
}
