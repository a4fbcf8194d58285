# Security and SD-card care. There is no default password anywhere: the
# owner logs in over SSH with a key, given in the site flake or written to
# the SD card's FAT partition before the first boot.
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
    mkIf
    mkDefault
    types
    ;
  al = import ./lib.nix { inherit lib utils config; };
  inherit (al) cfg;
  h = cfg.access;
  importedKeys = "/var/lib/immich-appliance/ssh";
  keyPattern = "^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\.com) [A-Za-z0-9+/]+=*( .*)?$";
in
{
  options.services.immich-appliance.access = {
    adminUser = mkOption {
      type = types.strMatching "[a-z_][a-z0-9_-]*";
      default = "admin";
      example = "alice";
      description = "The account you log in with over SSH; it may use sudo.";
    };

    authorizedKeys = mkOption {
      type = types.listOf types.singleLineStr;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... alice@laptop" ];
      description = ''
        SSH public keys that may log in as the admin user. Password logins
        are off, so without a key here (or on the boot partition, see
        `importKeysFromBootPartition`) nobody can log in over the network.
      '';
    };

    importKeysFromBootPartition = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = ''
        At every boot, read `authorized_keys` from the SD card's FAT
        partition (label `FIRMWARE`) and allow those keys for the admin
        user. Write the file before flashing, as Raspberry Pi Imager does:
        this is how a downloaded image lets its owner in. Lines that are
        not SSH public keys are ignored.
      '';
    };

    consoleAutologin = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = ''
        Log the admin user in on the local console without a password.
        Meant for the throw-away VM (`nix run .#vm`); on a Pi it lets
        anyone with a keyboard and a screen in.
      '';
    };

    bootPartitionLabel = mkOption {
      type = types.str;
      default = "FIRMWARE";
      example = "BOOT";
      description = "Label of the FAT partition `importKeysFromBootPartition` reads.";
    };
  };

  config = mkIf cfg.enable {
    users.users.${h.adminUser} = {
      isNormalUser = true;
      extraGroups = [ "wheel" ];
      openssh.authorizedKeys.keys = h.authorizedKeys;
      # No password is set: the account is locked for password logins and
      # opens only with an SSH key.
    };

    services.getty.autologinUser = mkIf h.consoleAutologin h.adminUser;

    # Key-only accounts have no password to give sudo.
    security.sudo.wheelNeedsPassword = mkDefault false;

    # `nixos-rebuild switch --target-host admin@... --sudo` copies the new
    # system into the Pi's store as the admin user; Nix refuses unsigned
    # paths from an untrusted user. The admin user is root already (sudo
    # without a password), so trusting it adds no power: see
    # docs/threat-model.md.
    nix.settings.trusted-users = [ h.adminUser ];

    services.openssh = {
      enable = true;
      # SSH stays reachable on the LAN: it is how the drive gets unlocked.
      openFirewall = true;
      authorizedKeysFiles = lib.optional h.importKeysFromBootPartition "${importedKeys}/%u";
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "no";
        AllowUsers = [ h.adminUser ];
      };
    };

    systemd.services.immich-appliance-import-ssh-keys = mkIf h.importKeysFromBootPartition {
      description = "Allow the SSH keys written to the boot partition's authorized_keys";
      wantedBy = [ "multi-user.target" ];
      before = [ "sshd.service" ];
      path = [
        pkgs.util-linux
        pkgs.gnugrep
        pkgs.coreutils
      ];
      serviceConfig = {
        Type = "oneshot";
        PrivateMounts = true;
      };
      script = ''
        set -eu
        dev=/dev/disk/by-label/${h.bootPartitionLabel}
        if [ ! -e "$dev" ]; then
          echo "no $dev; keeping the keys imported before"
          exit 0
        fi
        mnt=$(mktemp -d)
        trap 'umount "$mnt" 2> /dev/null || true; rmdir "$mnt"' EXIT
        mount -o ro,nodev,nosuid,noexec "$dev" "$mnt"
        if [ ! -f "$mnt/authorized_keys" ]; then
          echo "no authorized_keys on the boot partition"
          exit 0
        fi
        install -d -m 0755 ${importedKeys}
        tmp=$(mktemp -p ${importedKeys})
        tr -d '\r' < "$mnt/authorized_keys" | grep -E '${keyPattern}' > "$tmp" || true
        chmod 0644 "$tmp"
        mv "$tmp" ${importedKeys}/${h.adminUser}
        echo "allowed $(wc -l < ${importedKeys}/${h.adminUser}) key(s) for ${h.adminUser}"
      '';
    };

    assertions = [
      {
        assertion = h.authorizedKeys != [ ] || h.importKeysFromBootPartition || h.consoleAutologin;
        message = ''
          Nobody could log in: the appliance has no passwords and no SSH key was given.
          Set services.immich-appliance.access.authorizedKeys, or importKeysFromBootPartition.
        '';
      }
    ];

    # Kernel hardening for a network-facing appliance.
    boot.kernel.sysctl = {
      "kernel.kptr_restrict" = 2;
      "kernel.dmesg_restrict" = 1;
      "kernel.unprivileged_bpf_disabled" = 1;
      "net.core.bpf_jit_harden" = 2;
      "kernel.yama.ptrace_scope" = 1;
      "fs.protected_fifos" = 2;
      "fs.protected_regular" = 2;
      "net.ipv4.tcp_syncookies" = 1;
      "net.ipv4.conf.all.accept_redirects" = 0;
      "net.ipv4.conf.default.accept_redirects" = 0;
      "net.ipv6.conf.all.accept_redirects" = 0;
      "net.ipv6.conf.default.accept_redirects" = 0;
      "net.ipv4.conf.all.send_redirects" = 0;
      "net.ipv4.conf.all.accept_source_route" = 0;
      "net.ipv6.conf.all.accept_source_route" = 0;
    };

    # The journal stays in RAM: Immich's log lines can name photos, and the
    # SD card holds nothing private (and is spared the writes).
    services.journald.storage = "volatile";
    services.journald.extraConfig = ''
      RuntimeMaxUse=64M
      MaxRetentionSec=7day
    '';

    boot.tmp = {
      useTmpfs = true;
      tmpfsSize = "25%";
    };

    zramSwap = {
      enable = true;
      memoryPercent = 50;
    };

    nix = {
      gc = {
        automatic = true;
        dates = [ "weekly" ];
        options = "--delete-older-than 30d";
      };
      settings = {
        auto-optimise-store = true;
        experimental-features = [
          "nix-command"
          "flakes"
        ];
      };
    };
  };
}
