# The appliance on real NixOS under the NixOS test driver (x86_64, KVM):
# nothing runs at boot, init prepares the second disk, --start brings up
# nixpkgs' PostgreSQL, Redis and Immich, and --stop leaves an empty,
# immutable mount point. Run with: nix build .#checks.x86_64-linux.lifecycle
{ self }:

let
  # Names from the one definition, never a literal.
  defaults = builtins.fromTOML (builtins.readFile ../../modules/defaults.toml);
  mapper = "/dev/mapper/${defaults.drive.mapper-name}";
  mountPoint = defaults.drive.mount-point;
in
{
  name = "immich-appliance-lifecycle";

  nodes.machine = {
    imports = [
      (import ./machine.nix {
        inherit self;
        disks = [ 4096 ];
      })
    ];
    services.immich-appliance.backup.enable = false;
  };

  testScript = ''
    stack = ["postgresql.service", "redis-immich.service", "immich-server.service"]

    machine.wait_for_unit("multi-user.target")
    with subtest("the drive is locked: nothing of the stack runs, nothing is mounted"):
        for unit in stack:
            machine.fail(f"systemctl is-active --quiet {unit}")
        machine.succeed("test -z \"$(ls -A ${mountPoint})\"")

    machine.succeed("printf %s 'correct horse battery staple' > /run/pass")

    with subtest("init prepares the drive"):
        machine.succeed("immich-server init --immich-drive /dev/vdb --yes --force --passphrase-file /run/pass")
        machine.succeed("cryptsetup isLuks --type luks2 /dev/vdb")

    with subtest("a wrong passphrase exits 3 and starts nothing"):
        machine.succeed("printf %s 'wrong' > /run/wrong")
        machine.fail("immich-server --start --immich-drive /dev/vdb --passphrase-file /run/wrong")
        rc = machine.execute("immich-server --start --immich-drive /dev/vdb --passphrase-file /run/wrong")[0]
        assert rc == 3, f"exit {rc}, expected 3"
        machine.fail("systemctl is-active --quiet immich-server.service")

    with subtest("start unlocks, mounts and starts the stack"):
        machine.succeed("immich-server --start --immich-drive /dev/vdb --passphrase-file /run/pass")
        for unit in stack:
            machine.succeed(f"systemctl is-active --quiet {unit}")
        machine.succeed("curl -sf http://127.0.0.1:2283/api/server/ping | grep -q pong")
        machine.succeed("immich-server --status --json | jq -e '.state == \"running\"'")

    with subtest("start again is a no-op"):
        out = machine.succeed("immich-server --start --passphrase-file /run/pass")
        assert "nothing to do" in out, out

    with subtest("stop leaves the mount point empty, immutable, and the drive locked"):
        machine.succeed("immich-server --stop")
        for unit in stack:
            machine.fail(f"systemctl is-active --quiet {unit}")
        machine.succeed("test -z \"$(ls -A ${mountPoint})\"")
        machine.succeed("lsattr -d ${mountPoint} | cut -d' ' -f1 | grep -q i")
        machine.fail("touch ${mountPoint}/probe")
        machine.fail("test -e ${mapper}")

    with subtest("a reboot starts nothing"):
        machine.shutdown()
        machine.start()
        machine.wait_for_unit("multi-user.target")
        for unit in stack:
            machine.fail(f"systemctl is-active --quiet {unit}")
  '';
}
