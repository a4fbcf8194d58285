# Backups on real NixOS with nixpkgs' rustic, PostgreSQL and Immich: set up
# a repository (a local folder here), back up, run the restore drill, then
# restore onto a second, new drive with one command and find every file
# byte for byte. Run with:
#   nix build .#checks.x86_64-linux.backup-restore
{ self }:

let
  # Names from the one definition, never a literal.
  defaults = builtins.fromTOML (builtins.readFile ../../modules/defaults.toml);
  mountPoint = defaults.drive.mount-point;
  media = "${mountPoint}/${defaults.layout.media.path}";
in
{
  name = "immich-appliance-backup-restore";

  # The first drive, and the new one it is restored onto.
  nodes.machine = {
    imports = [
      (import ./machine.nix {
        inherit self;
        disks = [
          4096
          4096
        ];
      })
    ];
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.succeed("printf %s 'correct horse battery staple' > /run/pass")
    machine.succeed("printf %s 'a repository password for the test' > /run/repo.pass")

    with subtest("a drive with photos and a backup"):
        machine.succeed("immich-server init --immich-drive /dev/vdb --yes --force --passphrase-file /run/pass")
        machine.succeed("immich-server --start --passphrase-file /run/pass")
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:2283/api/server/ping")
        machine.succeed(
            "install -d -o immich -g immich ${media}/upload/test",
            "for i in $(seq 1 50); do head -c 200000 /dev/urandom > ${media}/upload/test/IMG_$i.jpg; done",
            "chown -R immich:immich ${media}/upload/test",
        )
        machine.succeed("immich-server backup setup --repository /var/lib/backup-repo --password-file /run/repo.pass")
        out = machine.succeed("immich-server backup run --json")
        machine.log(out)
        machine.succeed("immich-server backup status --json | jq -e '.health.colour == \"green\"'")

    with subtest("the restore drill passes"):
        machine.succeed("immich-server backup drill")
        machine.succeed("immich-server backup status --json | jq -e '.last_drill.outcome == \"success\"'")

    sums = machine.succeed("cd ${mountPoint} && find ${defaults.layout.media.path}/upload -type f -print0 | sort -z | xargs -0 sha256sum")
    machine.succeed("immich-server --stop")

    with subtest("one command restores onto a new drive"):
        machine.succeed("immich-server init --immich-drive /dev/vdc --yes --force --passphrase-file /run/pass")
        machine.succeed(
            "immich-server restore --immich-drive /dev/vdc --repository /var/lib/backup-repo"
            " --password-file /run/repo.pass --passphrase-file /run/pass"
        )
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:2283/api/server/ping")
        after = machine.succeed("cd ${mountPoint} && find ${defaults.layout.media.path}/upload -type f -print0 | sort -z | xargs -0 sha256sum")
        assert sums == after, "the restored files differ"
        machine.succeed("immich-server backup run")
        machine.succeed("immich-server --stop")
  '';
}
