# Your own appliance. `nix flake init -t github:immich-appliance/immich-appliance`
# puts this file in a directory of yours; edit the marked lines, then:
#   nix build .#sd-image    a card image with your settings. On an x86_64 PC
#                           this needs aarch64 emulation (binfmt): see
#                           docs/customise.md, "Build a card image".
#   updating a running appliance: docs/updating.md
{
  inputs = {
    immich-appliance.url = "github:immich-appliance/immich-appliance";
    nixpkgs.follows = "immich-appliance/nixpkgs";
    nixos-hardware.follows = "immich-appliance/nixos-hardware";
  };

  outputs =
    {
      self,
      nixpkgs,
      nixos-hardware,
      immich-appliance,
    }:
    {
      nixosConfigurations.immich = nixpkgs.lib.nixosSystem {
        modules = [
          immich-appliance.nixosModules.default
          nixos-hardware.nixosModules.raspberry-pi-4
          "${immich-appliance}/hosts/rpi4"
          "${immich-appliance}/images/sd-image.nix"
          {
            # EDIT: the machine's name (its prompt, and Tailscale's name for it).
            # The home-network address immich.local is set apart, by
            # services.immich-appliance.remoteAccess.lan.mdnsHostName.
            networking.hostName = "immich";
            services.immich-appliance = {
              # EDIT: your SSH public key(s).
              access.authorizedKeys = [ "ssh-ed25519 AAAA... you@laptop" ];
              # EDIT: 2, 4 or 8 (GB of RAM on your Pi).
              boardMemoryGiB = 4;
              # Machine learning (smart search, faces): "off" by default on a
              # 4 GB board, "local" on 8 GB, or "remote" with remoteUrls.
              # machineLearning.mode = "off";
              # Backups: a monitor that tells you when they stop, and whether
              # to leave out what Immich can regenerate.
              # backup.pingUrl = "https://hc-ping.com/your-uuid";
              # backup.essentialOnly = false;
            };
            # EDIT: your time zone, for backup times and quiet hours.
            time.timeZone = "Europe/Berlin";
          }
        ];
      };

      # The image is an aarch64 system either way: on an x86_64 PC, Nix builds
      # it through binfmt emulation, with everything but this flake's own
      # package coming from the binary cache (a cross build would not).
      packages.aarch64-linux.sd-image = self.nixosConfigurations.immich.config.system.build.sdImage;
      packages.x86_64-linux.sd-image = self.packages.aarch64-linux.sd-image;
    };
}
