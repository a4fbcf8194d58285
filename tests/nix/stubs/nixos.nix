# Declarations of the NixOS options the appliance's modules, hosts and image
# set or read, with the types nixpkgs 26.05 gives them, so that
# lib.evalModules can check our modules without a nixpkgs tree. Every path
# declared here is checked against the NixOS option list by
# `cargo xtask nix-test` (see tests/nix/README.md), so a stub cannot invent
# an option that nixpkgs lacks.
{ lib, pkgs, ... }:

let
  inherit (lib) mkOption types;
  t = types;
  opt = type: default: mkOption { inherit type default; };
  optNoDefault = type: mkOption { inherit type; };
  fake = pkgs.fakePackage;

  # nixos/lib/systemd-unit-options.nix: lists concatenate, other values
  # must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (d: lib.isList d.value) defs' then
        lib.concatMap (d: lib.toList d.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  unitNames = opt (t.listOf t.str) [ ];
  # Options shared by every unit type (nixos/lib/systemd-unit-options.nix).
  commonUnit = {
    description = opt t.singleLineStr "";
    wantedBy = unitNames;
    requiredBy = unitNames;
    wants = unitNames;
    requires = unitNames;
    after = unitNames;
    before = unitNames;
    bindsTo = unitNames;
    partOf = unitNames;
    conflicts = unitNames;
    unitConfig = opt (t.attrsOf unitOption) { };
    enable = opt t.bool true;
  };
  serviceUnit = t.submodule {
    options = commonUnit // {
      serviceConfig = opt (t.attrsOf unitOption) { };
      environment = opt (t.attrsOf (t.nullOr (t.oneOf [
        t.str
        t.path
        t.package
      ]))) { };
      path = opt (t.listOf (t.oneOf [
        t.package
        t.str
      ])) [ ];
      script = opt t.lines "";
      preStart = opt t.lines "";
      postStart = opt t.lines "";
    };
  };
  timerUnit = t.submodule {
    options = commonUnit // {
      timerConfig = opt (t.attrsOf unitOption) { };
    };
  };
  targetUnit = t.submodule { options = commonUnit; };

  tmpfilesEntry = t.submodule {
    options = {
      type = opt t.str "";
      mode = opt t.str "-";
      user = opt t.str "-";
      group = opt t.str "-";
      age = opt t.str "-";
      argument = opt t.str "";
    };
  };

  userOpts = t.submodule (
    { name, ... }:
    {
      options = {
        name = opt t.str name;
        isNormalUser = opt t.bool false;
        isSystemUser = opt t.bool false;
        extraGroups = opt (t.listOf t.str) [ ];
        # Declared so that the tests can see that the appliance sets none.
        password = opt (t.nullOr t.str) null;
        hashedPassword = opt (t.nullOr t.str) null;
        hashedPasswordFile = opt (t.nullOr t.str) null;
        initialPassword = opt (t.nullOr t.str) null;
        initialHashedPassword = opt (t.nullOr t.str) null;
        openssh.authorizedKeys.keys = opt (t.listOf t.singleLineStr) [ ];
      };
    }
  );

  redisServer = t.submodule {
    options = {
      enable = opt t.bool false;
      save = opt (t.listOf (t.listOf t.int)) [
        [
          900
          1
        ]
        [
          300
          10
        ]
        [
          60
          10000
        ]
      ];
      appendOnly = opt t.bool false;
    };
  };

  etcEntry = t.submodule {
    options = {
      source = optNoDefault t.path;
      text = opt (t.nullOr t.lines) null;
      mode = opt t.str "symlink";
    };
  };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = opt (t.listOf t.unspecified) [ ];
    warnings = opt (t.listOf t.str) [ ];

    # nixos/modules/misc/nixpkgs.nix (the platform only)
    nixpkgs.hostPlatform = mkOption {
      type = t.either t.str t.attrs;
      apply = p: if lib.isString p then { system = p; } else p;
    };

    # nixos/modules/system/activation/top-level.nix, misc/version.nix
    system.checks = opt (t.listOf t.package) [ ];
    system.stateVersion = opt t.str "26.05";
    system.nixos.label = opt t.str "26.05.test";
    system.build = opt (t.attrsOf t.unspecified) { };

    # nixos/modules/system/boot/kernel.nix, loader/generic-extlinux-compatible
    boot.kernelPackages = opt t.raw pkgs.linuxPackages;
    boot.kernelParams = opt (t.listOf t.str) [ ];
    boot.kernel.sysctl = opt (t.attrsOf (t.nullOr (t.oneOf [
      t.bool
      t.str
      t.int
    ]))) { };
    boot.loader.grub.enable = opt t.bool true;
    boot.loader.generic-extlinux-compatible = {
      enable = opt t.bool false;
      useGenerationDeviceTree = opt t.bool true;
      populateCmd = opt t.str "/nix/store/00000000000000000000000000000000-extlinux-conf-builder.sh";
    };
    # nixos/modules/system/boot/tmp.nix
    boot.tmp.useTmpfs = opt t.bool false;
    boot.tmp.tmpfsSize = opt (t.oneOf [
      t.str
      t.ints.positive
    ]) "50%";
    # nixos/modules/config/zram.nix
    zramSwap.enable = opt t.bool false;
    zramSwap.memoryPercent = opt t.ints.positive 50;

    # nixos-hardware raspberry-pi/common/firmware.nix, config-txt.nix
    hardware.raspberry-pi.firmware.enable = opt t.bool false;
    hardware.raspberry-pi.firmware.uboot.enable = opt t.bool false;
    hardware.raspberry-pi.configtxt.settings = opt (t.attrsOf (t.attrsOf t.anything)) { };

    # nixos/modules/tasks/network-interfaces.nix, services/networking/firewall.nix
    networking.hostName = opt t.str "nixos";
    # nixos/modules/config/locale.nix
    time.timeZone = opt (t.nullOr t.str) null;
    networking.firewall = {
      enable = opt t.bool true;
      allowedTCPPorts = opt (t.listOf t.port) [ ];
      trustedInterfaces = opt (t.listOf t.str) [ ];
    };

    # nixos/modules/system/etc/etc.nix, config/system-path.nix
    environment.etc = opt (t.attrsOf etcEntry) { };
    environment.systemPackages = opt (t.listOf t.package) [ ];

    # nixos/modules/system/boot/systemd.nix, systemd/tmpfiles.nix
    systemd.package = opt t.package (fake "systemd");
    systemd.services = opt (t.attrsOf serviceUnit) { };
    systemd.timers = opt (t.attrsOf timerUnit) { };
    systemd.targets = opt (t.attrsOf targetUnit) { };
    systemd.tmpfiles.settings = opt (t.attrsWith {
      placeholder = "config-name";
      elemType = t.attrsWith {
        placeholder = "path";
        elemType = t.attrsWith {
          placeholder = "tmpfiles-type";
          elemType = tmpfilesEntry;
        };
      };
    }) { };

    # nixos/modules/config/users-groups.nix, security/sudo.nix
    users.users = opt (t.attrsOf userOpts) { };
    security.sudo.wheelNeedsPassword = opt t.bool true;

    # nixos/modules/services/web-apps/immich.nix
    services.immich = {
      enable = opt t.bool false;
      package = opt t.package (fake "immich");
      host = opt t.str "localhost";
      port = opt t.port 2283;
      mediaLocation = opt t.path "/var/lib/immich";
      user = opt t.str "immich";
      group = opt t.str "immich";
      settings = opt (t.nullOr (t.submodule { freeformType = t.attrsOf t.anything; })) { };
      database.enable = opt t.bool true;
      database.name = opt t.str "immich";
      redis.enable = opt t.bool true;
      machine-learning = {
        enable = opt t.bool true;
        environment = opt (t.attrsOf t.str) { };
      };
    };

    # nixos/modules/services/databases/postgresql.nix
    services.postgresql = {
      enable = opt t.bool false;
      package = opt t.package pkgs.postgresql_17;
      finalPackage = mkOption {
        type = t.package;
        readOnly = true;
        default = pkgs.postgresql_17;
      };
      dataDir = opt t.path "/var/lib/postgresql/17";
    };

    # nixos/modules/services/databases/redis.nix
    services.redis.servers = opt (t.attrsOf redisServer) { };

    # nixos/modules/services/networking/tailscale.nix
    services.tailscale = {
      enable = opt t.bool false;
      package = opt t.package (fake "tailscale");
      openFirewall = opt t.bool false;
      interfaceName = opt t.str "tailscale0";
      authKeyFile = opt (t.nullOr t.path) null;
    };

    # nixos/modules/services/networking/avahi-daemon.nix
    services.avahi = {
      enable = opt t.bool false;
      hostName = opt t.str "nixos";
      nssmdns4 = opt t.bool false;
      openFirewall = opt t.bool true;
      publish.enable = opt t.bool false;
      publish.addresses = opt t.bool false;
    };

    # nixos/modules/services/networking/ssh/sshd.nix
    services.openssh = {
      enable = opt t.bool false;
      openFirewall = opt t.bool true;
      authorizedKeysFiles = opt (t.listOf t.str) [ ];
      settings = mkOption {
        type = t.submodule {
          freeformType = t.attrsOf t.anything;
          options = {
            PasswordAuthentication = opt (t.nullOr t.bool) true;
            KbdInteractiveAuthentication = opt (t.nullOr t.bool) true;
            PermitRootLogin = opt (t.nullOr (t.enum [
              "yes"
              "without-password"
              "prohibit-password"
              "forced-commands-only"
              "no"
            ])) "prohibit-password";
            AllowUsers = opt (t.nullOr (t.listOf t.str)) null;
          };
        };
        default = { };
      };
    };

    # nixos/modules/services/ttys/getty.nix
    services.getty.autologinUser = opt (t.nullOr t.str) null;

    # nixos/modules/system/boot/journald.nix
    services.journald = {
      storage = opt (t.enum [
        "persistent"
        "volatile"
        "auto"
        "none"
      ]) "persistent";
      extraConfig = opt t.lines "";
    };

    # nixos/modules/services/system/nix-gc.nix, config/nix.nix
    nix.gc = {
      automatic = opt t.bool false;
      dates = mkOption {
        type = t.either t.singleLineStr (t.listOf t.str);
        default = [ "03:15" ];
        apply = lib.toList;
      };
      options = opt t.singleLineStr "";
    };
    nix.settings = mkOption {
      type = t.submodule { freeformType = t.attrsOf t.anything; };
      default = { };
    };
  };

  config = {
    _module.args.utils = import ./utils.nix { inherit lib; };
    system.build.toplevel = fake "nixos-system";
  };
}
