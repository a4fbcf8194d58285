# Unit tests of the appliance's NixOS modules, on nixpkgs' lib alone:
#   nix-instantiate --eval --strict --json tests/nix --arg lib 'import <nixpkgs/lib>'
# prints [] when every test passes, else the failures.
{ lib }:

let
  e = import ./eval.nix { inherit lib; };
  inherit (e) config failedAssertions settings;
  ia = v: { services.immich-appliance = v; };
  mount = "srv-immich.mount";
  svc = cfg: name: cfg.systemd.services.${name};
  unitAttr = name: lib.head (lib.splitString "." name);
  wantedBy =
    cfg: unit:
    if lib.hasSuffix ".target" unit then
      cfg.systemd.targets.${unitAttr unit}.wantedBy
    else
      cfg.systemd.services.${unitAttr unit}.wantedBy;
  hasMessage = infix: cfg: lib.any (lib.hasInfix infix) (failedAssertions cfg);
  big = config [ (ia { boardMemoryGiB = 8; }) ];
in
lib.runTests {
  testTheSmallestApplianceHasNoFailedAssertions = {
    expr = failedAssertions (config [ ]);
    expected = [ ];
  };

  # The threat model: nothing of the stack starts at boot, while the drive
  # is locked (nixpkgs starts all of them at boot; see stubs/upstream.nix).
  testNoStackUnitStartsAtBoot = {
    expr = lib.filter (u: wantedBy big u != [ ]) (settings big).units.stack;
    expected = [ ];
  };
  testTheStackIsWhatImmichServerStarts = {
    expr = (settings big).units.stack;
    expected = [
      "postgresql.target"
      "redis-immich.service"
      "immich-server.service"
      "immich-machine-learning.service"
      "immich-throttle.service"
    ];
  };
  testEveryUnitThatTouchesTheDriveIsBoundToItsMount = {
    expr = lib.filter (n: !(lib.elem mount (svc big n).bindsTo && lib.elem mount (svc big n).after)) [
      "postgresql"
      "postgresql-setup"
      "redis-immich"
      "immich-server"
      "immich-machine-learning"
      "immich-throttle"
    ];
    expected = [ ];
  };
  testPostgresqlNeedsItsDataDirOnTheDrive = {
    expr = (svc big "postgresql").unitConfig.RequiresMountsFor;
    expected = [
      "/srv/immich/postgres/17"
      "/srv/immich/postgres/17"
    ];
  };
  testMountUnitNameIsEscapedLikeSystemd = {
    expr =
      let
        c = config [ (ia { drive.mountPoint = "/srv/my-photos"; }) ];
      in
      {
        bindsTo = (svc c "immich-server").bindsTo;
        media = c.services.immich.mediaLocation;
        pg = c.services.postgresql.dataDir;
        toml = (settings c).drive.mount-point;
      };
    expected = {
      bindsTo = [ "srv-my\\x2dphotos.mount" ];
      media = "/srv/my-photos/immich";
      pg = "/srv/my-photos/postgres/17";
      toml = "/srv/my-photos";
    };
  };
  testMountPointMustBeAbsolute = {
    expr = builtins.tryEval (config [ (ia { drive.mountPoint = "srv/immich"; }) ]).services.immich-appliance.drive.mountPoint;
    expected = {
      success = false;
      value = false;
    };
  };

  # The config.toml the Rust tools read.
  testConfigTomlFollowsTheOptions = {
    expr =
      let
        s = settings (
          config [
            (ia {
              drive.mapperName = "photos";
              throttle.setpointCelsius = 68;
              backup.keep.daily = 14;
            })
          ]
        );
      in
      {
        inherit (s.drive) mapper-name;
        inherit (s.throttle) setpoint-celsius;
        inherit (s.backup) keep-daily;
        pg = s.layout.postgres.path;
        owner = s.layout.media.owner;
        db = s.backup.database;
        url = s.immich.url;
      };
    expected = {
      mapper-name = "photos";
      setpoint-celsius = 68;
      keep-daily = 14;
      pg = "postgres/17";
      owner = "immich";
      db = "immich";
      url = "http://127.0.0.1:2283";
    };
  };
  testOneSettingOverridesOneKey = {
    expr =
      let
        s = settings (config [ (ia { settings.units.start-timeout-secs = 900; }) ]);
      in
      {
        timeout = s.units.start-timeout-secs;
        stackKept = lib.head s.units.stack;
        throttleKept = s.units.throttle;
      };
    expected = {
      timeout = 900;
      stackKept = "postgresql.target";
      throttleKept = "immich-throttle.service";
    };
  };
  testConfigFileIsInEtc = {
    expr = (config [ ]).environment.etc."immich-appliance/config.toml".source.value.drive.mount-point;
    expected = "/srv/immich";
  };
  testToolsAreStorePaths = {
    expr = lib.filter (p: !(lib.hasPrefix "/nix/store/" p)) (lib.attrValues (settings (config [ ])).tools);
    expected = [ ];
  };

  # Immich's own config stays in its database, where the throttler can
  # lower concurrency.
  testImmichSettingsStayNull = {
    expr = {
      inherit ((config [ ]).services.immich) settings;
      inherit ((config [ ])) warnings;
    };
    expected = {
      settings = null;
      warnings = [ ];
    };
  };
  testImmichSettingsFileWarns = {
    expr = lib.length (config [ { services.immich.settings.newVersionCheck.enabled = false; } ]).warnings;
    expected = 1;
  };

  # Logins: no password anywhere.
  testNoPasswordIsSet = {
    expr =
      let
        c = config [ ];
        u = c.users.users.admin;
      in
      {
        inherit (u)
          password
          hashedPassword
          hashedPasswordFile
          initialPassword
          initialHashedPassword
          ;
        keys = u.openssh.authorizedKeys.keys;
        inherit (c.services.openssh.settings)
          PasswordAuthentication
          KbdInteractiveAuthentication
          PermitRootLogin
          AllowUsers
          ;
      };
    expected = {
      password = null;
      hashedPassword = null;
      hashedPasswordFile = null;
      initialPassword = null;
      initialHashedPassword = null;
      keys = [ e.key ];
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "no";
      AllowUsers = [ "admin" ];
    };
  };
  testWithoutAnyKeyTheBuildFails = {
    expr = hasMessage "Nobody could log in" (e.bareConfig [ (ia { enable = true; }) ]);
    expected = true;
  };
  testKeysFromTheBootPartitionAreEnough = {
    expr =
      let
        c = e.bareConfig [
          (ia {
            enable = true;
            access.importKeysFromBootPartition = true;
          })
        ];
      in
      {
        failed = failedAssertions c;
        files = c.services.openssh.authorizedKeysFiles;
        beforeSshd = (svc c "immich-appliance-import-ssh-keys").before;
      };
    expected = {
      failed = [ ];
      files = [ "/var/lib/immich-appliance/ssh/%u" ];
      beforeSshd = [ "sshd.service" ];
    };
  };
  testNoConsoleAutologinByDefault = {
    expr = (config [ ]).services.getty.autologinUser;
    expected = null;
  };

  # Machine learning.
  testMachineLearningFollowsBoardMemory = {
    expr = map (
      gib:
      let
        c = config [ (ia { boardMemoryGiB = gib; }) ];
      in
      {
        inherit (c.services.immich-appliance.machineLearning) mode;
        service = c.services.immich.machine-learning.enable;
        enabled = (settings c).immich.ml-enabled;
        inStack = lib.elem "immich-machine-learning.service" (settings c).units.stack;
      }
    ) [
      4
      8
    ];
    expected = [
      {
        mode = "off";
        service = false;
        enabled = false;
        inStack = false;
      }
      {
        mode = "local";
        service = true;
        enabled = true;
        inStack = true;
      }
    ];
  };
  testRemoteMachineLearningFallsBackToThePi = {
    expr = map (
      gib:
      let
        c = config [
          (ia {
            boardMemoryGiB = gib;
            machineLearning = {
              mode = "remote";
              remoteUrls = [ "http://desktop:3003" ];
            };
          })
        ];
      in
      {
        urls = (settings c).immich.ml-urls;
        local = c.services.immich.machine-learning.enable;
      }
    ) [
      4
      8
    ];
    expected = [
      {
        urls = [ "http://desktop:3003" ];
        local = false;
      }
      {
        urls = [
          "http://desktop:3003"
          "http://localhost:3003"
        ];
        local = true;
      }
    ];
  };
  testRemoteMachineLearningNeedsUrls = {
    expr = hasMessage "set machineLearning.remoteUrls" (config [ (ia { machineLearning.mode = "remote"; }) ]);
    expected = true;
  };

  # The throttler.
  testThrottleTemperaturesMustBeOrdered = {
    expr = hasMessage "releaseCelsius < setpointCelsius <= ceilingCelsius" (
      config [
        (ia {
          throttle = {
            setpointCelsius = 76;
            ceilingCelsius = 74;
          };
        })
      ]
    );
    expected = true;
  };
  testThrottleServiceRestoresAfterACrash = {
    expr =
      let
        sc = (svc (config [ ]) "immich-throttle").serviceConfig;
      in
      {
        inherit (sc) Type Restart;
        stopPost = lib.hasSuffix "/bin/immich-throttle restore" sc.ExecStopPost;
        credential = sc.LoadCredential;
      };
    expected = {
      Type = "notify";
      Restart = "on-failure";
      stopPost = true;
      credential = "immich:/srv/immich/secrets/immich-throttle";
    };
  };
  testWithoutTheThrottlerItIsNotStarted = {
    expr =
      let
        c = config [ (ia { throttle.enable = false; }) ];
      in
      {
        inStack = lib.elem "immich-throttle.service" (settings c).units.stack;
        unit = c.systemd.services ? immich-throttle;
      };
    expected = {
      inStack = false;
      unit = false;
    };
  };

  # Reaching Immich.
  testLanOpensImmichsPortOnly = {
    expr = map (c: c.networking.firewall.allowedTCPPorts) [
      (config [ ])
      (config [ (ia { remoteAccess.lan.enable = false; }) ])
      (config [ { services.immich.port = 3001; } ])
    ];
    expected = [
      [ 2283 ]
      [ ]
      [ 3001 ]
    ];
  };
  testTailscaleInterfaceIsTrusted = {
    expr = (config [ ]).networking.firewall.trustedInterfaces;
    expected = [ "tailscale0" ];
  };
  testTailscaleKeyOnTheDriveLogsInAfterUnlock = {
    expr =
      let
        c = config [ (ia { remoteAccess.tailscale.authKeyFromDrive = true; }) ];
        u = svc c "tailscaled-autoconnect";
      in
      {
        key = c.services.tailscale.authKeyFile;
        inherit (u) wantedBy bindsTo;
        afterStart = (settings c).units.after-start;
      };
    expected = {
      key = "/srv/immich/secrets/tailscale-authkey";
      wantedBy = [ ];
      bindsTo = [ mount ];
      afterStart = [
        "immich-backup-after-unlock.timer"
        "tailscaled-autoconnect.service"
      ];
    };
  };
  testTailscaleServeComesAndGoesWithImmich = {
    expr =
      let
        c = config [ (ia { remoteAccess.tailscale.serve = true; }) ];
        u = svc c "immich-tailscale-serve";
      in
      {
        inherit (u) wantedBy bindsTo;
        afterStart = lib.elem "immich-tailscale-serve.service" (settings c).units.after-start;
        https = (settings c).immich.tailscale-serve;
      };
    expected = {
      wantedBy = [ ];
      bindsTo = [ "immich-server.service" ];
      afterStart = true;
      https = true;
    };
  };
  testRedisKeepsNothingOnDisk = {
    expr = {
      inherit ((config [ ]).services.redis.servers.immich) save appendOnly;
    };
    expected = {
      save = [ ];
      appendOnly = false;
    };
  };
  testJournalStaysInRam = {
    expr = (config [ ]).services.journald.storage;
    expected = "volatile";
  };

  # Backups.
  testBackupTimers = {
    expr =
      let
        c = config [ (ia { backup.schedule = "*-*-* 02:00:00"; }) ];
      in
      {
        daily = c.systemd.timers.immich-backup.timerConfig;
        dailyAtBoot = c.systemd.timers.immich-backup.wantedBy;
        afterUnlock = {
          inherit (c.systemd.timers.immich-backup-after-unlock) wantedBy bindsTo;
        };
        # A run while the drive is locked records a skip instead of not
        # running at all.
        serviceBound = (svc c "immich-backup").bindsTo;
      };
    expected = {
      daily = {
        OnCalendar = "*-*-* 02:00:00";
        Persistent = true;
        RandomizedDelaySec = "20min";
        Unit = "immich-backup.service";
      };
      dailyAtBoot = [ "timers.target" ];
      afterUnlock = {
        wantedBy = [ ];
        bindsTo = [ mount ];
      };
      serviceBound = [ ];
    };
  };
  testWithoutBackupsNothingIsScheduled = {
    expr =
      let
        c = config [ (ia { backup.enable = false; }) ];
      in
      {
        timers = lib.attrNames c.systemd.timers;
        afterStart = (settings c).units.after-start;
        # status says "off" rather than waiting for a backup.
        told = (settings c).backup.enable;
      };
    expected = {
      timers = [ ];
      afterStart = [ ];
      told = false;
    };
  };

  # Hosts: what an owner's module on top of them can change, and what the
  # host's choices make of the generated config (not the host's own values
  # read back, which cannot fail).
  testAnOwnerCanChangeWhatTheRpi4HostChose = {
    expr =
      let
        c = e.bareConfig [
          ../../hosts/rpi4
          ../../images/sd-image.nix
          {
            networking.hostName = "photos";
            time.timeZone = "Europe/Berlin";
            boot.kernelPackages = e.pkgs.linuxPackages // {
              owner = "me";
            };
            hardware.raspberry-pi.configtxt.settings.all.avoid_warnings = 1;
            services.immich-appliance = {
              access.importKeysFromBootPartition = false;
              access.authorizedKeys = [ e.key ];
              boardMemoryGiB = 8;
            };
          }
        ];
      in
      {
        failed = failedAssertions c;
        host = c.networking.hostName;
        kernel = c.boot.kernelPackages.owner or "host";
        warnings = c.hardware.raspberry-pi.configtxt.settings.all.avoid_warnings;
        keysFromCard = c.services.immich-appliance.access.importKeysFromBootPartition;
        ml = lib.elem "immich-machine-learning.service" (settings c).units.stack;
      };
    expected = {
      failed = [ ];
      host = "photos";
      kernel = "me";
      warnings = 1;
      keysFromCard = false;
      ml = true;
    };
  };
  testTheRpi4ImageHasNoMachineLearningAndNoThrottleMissing = {
    expr = {
      failed = failedAssertions e.rpi4;
      stack = (settings e.rpi4).units.stack;
    };
    expected = {
      failed = [ ];
      stack = [
        "postgresql.target"
        "redis-immich.service"
        "immich-server.service"
        "immich-throttle.service"
      ];
    };
  };
  # The image module stands on sd-image.nix alone (the stubs have no
  # sd-image-aarch64.nix, so importing it fails): U-Boot's extlinux, not
  # GRUB, and only the Pi's own consoles.
  testTheImageIsBuiltWithoutTheInstallerProfile = {
    expr = {
      grub = e.rpi4.boot.loader.grub.enable;
      extlinux = e.rpi4.boot.loader.generic-extlinux-compatible.enable;
      consoles = lib.filter (lib.hasPrefix "console=") e.rpi4.boot.kernelParams;
      boot = lib.hasInfix "-d ./files/boot" e.rpi4.sdImage.populateRootCommands;
    };
    expected = {
      grub = false;
      extlinux = true;
      consoles = [
        "console=ttyS1,115200n8"
        "console=tty1"
      ];
      boot = true;
    };
  };
  # A first backup of a big library must not be killed half-way.
  testABackupRunsAsLongAsItNeeds = {
    expr = (svc big "immich-backup").serviceConfig.TimeoutStartSec;
    expected = "infinity";
  };
  # An update from another computer (docs/updating.md) copies the system
  # as the admin user, who must be trusted by the Pi's Nix for that.
  testTheAdminMayCopyAnUpdateIn = {
    expr = map (c: lib.elem c.services.immich-appliance.access.adminUser c.nix.settings.trusted-users) [
      e.rpi4
      (config [ (ia { access.adminUser = "alice"; }) ])
    ];
    expected = [
      true
      true
    ];
  };
  testTheVmHasNeitherThrottleNorMachineLearning = {
    expr = {
      failed = failedAssertions e.vm;
      stack = (settings e.vm).units.stack;
      # No SSH forward: the VM has no key to log in with.
      ports = map (p: p.guest.port) e.vm.virtualisation.forwardPorts;
    };
    expected = {
      failed = [ ];
      stack = [
        "postgresql.target"
        "redis-immich.service"
        "immich-server.service"
      ];
      ports = [ 2283 ];
    };
  };

  # The cipher: init measures unless one is set; a build that may pick
  # Adiantum checks that the kernel has it.
  testTheCipherReachesConfigTomlAndAdiantumIsCheckedInTheKernel = {
    expr =
      let
        checks = c: map (d: d.name) c.system.checks;
        auto = config [ ];
        aes = config [ (ia { drive.cipher = "aes-xts-plain64"; }) ];
        adiantum = config [ (ia { drive.cipher = "xchacha12,aes-adiantum-plain64"; }) ];
      in
      {
        auto = (settings auto).drive.cipher;
        autoChecks = lib.elem "immich-appliance-adiantum-check" (checks auto);
        aesChecks = lib.elem "immich-appliance-adiantum-check" (checks aes);
        forced = (settings adiantum).drive.cipher;
        looksInTheKernel = lib.hasInfix "/lib/modules/" (lib.findFirst (d: d.name == "immich-appliance-adiantum-check") null adiantum.system.checks).script;
      };
    expected = {
      auto = "auto";
      autoChecks = true;
      aesChecks = false;
      forced = "xchacha12,aes-adiantum-plain64";
      looksInTheKernel = true;
    };
  };
  testAnUnknownCipherIsRefused = {
    expr = (builtins.tryEval (config [ (ia { drive.cipher = "aes-cbc-essiv:sha256"; }) ]).services.immich-appliance.drive.cipher).success;
    expected = false;
  };

  # Alerts: nothing runs until a channel is set, by an option or by a
  # settings key; then a timer checks, starting soon after boot, while the
  # drive may still be locked.
  testAlertsAreOffUntilAChannelIsSet = {
    expr =
      let
        c = config [ ];
      in
      {
        timer = c.systemd.timers ? immich-alerts;
        service = c.systemd.services ? immich-alerts;
      };
    expected = {
      timer = false;
      service = false;
    };
  };
  testAnNtfyTopicAloneSchedulesTheCheck = {
    expr =
      let
        c = config [ (ia { alerts.ntfy.url = "https://ntfy.sh/immich-7f3k9q2m4x"; }) ];
        svc' = svc c "immich-alerts";
      in
      {
        inherit (c.systemd.timers.immich-alerts) wantedBy timerConfig;
        inherit (svc'.serviceConfig) ExecStart;
        # It must run while the drive is locked: that is the "locked" alert.
        bound = svc'.bindsTo;
        after = svc'.after;
        url = (settings c).alerts.ntfy-url;
        email = (settings c).alerts.smtp-host;
      };
    expected = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "1min";
        OnUnitActiveSec = "5min";
        Unit = "immich-alerts.service";
      };
      ExecStart = "/nix/store/00000000000000000000000000000000-immich-appliance/bin/immich-server alerts check";
      bound = [ ];
      after = [ "network-online.target" ];
      url = "https://ntfy.sh/immich-7f3k9q2m4x";
      email = "";
    };
  };
  testAChannelSetInSettingsSchedulesTheCheckToo = {
    expr = (config [ (ia { settings.alerts.webhook-url = "http://hub.local/hook"; }) ]).systemd.timers ? immich-alerts;
    expected = true;
  };
  testANtfyUrlMustNameATopic = {
    expr =
      (builtins.tryEval (config [ (ia { alerts.ntfy.url = "https://ntfy.sh/"; }) ]).services.immich-appliance.alerts.ntfy.url).success;
    expected = false;
  };
  testEmailNeedsASenderAndARecipient = {
    expr = hasMessage "alerts.email needs `from`" (config [
      (ia { alerts.email.smtpHost = "smtp.example.org"; })
    ]);
    expected = true;
  };

  # Every option of the appliance is documented.
  testEveryOptionHasADescriptionAndAnExample = {
    expr = map (o: o.name) (
      lib.filter (o: (o.description or "") == "" || !(o ? example)) e.applianceOptions
    );
    expected = [ ];
  };
}
