# The drive is pulled out while Immich runs (the kernel removes the SCSI
# disk, as it does for a USB drive): the stack stops on its own because it
# is bound to the mount, nothing is written under the mount point, status
# says what happened, and --stop cleans up. Run with:
#   nix build .#checks.x86_64-linux.unplug
{ self }:

let
  # Names from the one definition, never a literal.
  defaults = builtins.fromTOML (builtins.readFile ../../modules/defaults.toml);
  mapper = "/dev/mapper/${defaults.drive.mapper-name}";
  mountPoint = defaults.drive.mount-point;
in
{
  name = "immich-appliance-unplug";

  nodes.machine = {
    imports = [
      (import ./machine.nix {
        inherit self;
        disks = [ 4096 ];
      })
    ];
    # SCSI disks can be removed from inside the guest, like an unplug.
    virtualisation.qemu.diskInterface = "scsi";
    services.immich-appliance.backup.enable = false;
  };

  testScript = ''
    stack = ["postgresql.service", "redis-immich.service", "immich-server.service"]
    machine.wait_for_unit("multi-user.target")
    # The blank 4 GiB disk, whatever the kernel named it.
    drive = machine.succeed("lsblk -dnbo NAME,SIZE | awk '$2 == 4294967296 { print $1 }'").strip()
    assert drive, "the blank disk is missing"

    machine.succeed("printf %s 'correct horse battery staple' > /run/pass")
    machine.succeed(f"immich-server init --immich-drive /dev/{drive} --yes --force --passphrase-file /run/pass")
    machine.succeed("immich-server --start --passphrase-file /run/pass")
    machine.wait_until_succeeds("curl -sf http://127.0.0.1:2283/api/server/ping")

    with subtest("the drive goes away: the stack stops and the mount is gone"):
        machine.succeed(f"echo 1 > /sys/block/{drive}/device/delete")
        for unit in stack:
            machine.wait_until_fails(f"systemctl is-active --quiet {unit}", timeout=120)
        machine.wait_until_fails("findmnt ${mountPoint}")

    with subtest("nothing is written under the mount point on the SD card"):
        machine.succeed("test -z \"$(ls -A ${mountPoint})\"")
        machine.fail("touch ${mountPoint}/probe")
        machine.succeed("lsattr -d ${mountPoint} | cut -d' ' -f1 | grep -q i")

    with subtest("status says the drive was unplugged; stop cleans up"):
        machine.succeed("immich-server --status --json | jq -e '.state == \"unplugged\"'")
        machine.succeed("immich-server --stop")
        machine.fail("test -e ${mapper}")
        machine.succeed("immich-server --status --json | jq -e '.state == \"stopped\"'")
  '';
}
