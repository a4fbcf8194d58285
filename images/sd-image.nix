# The SD card image for the Pi 4, from nixpkgs' sd-image-aarch64.nix: a FAT
# partition with the GPU firmware, U-Boot and config.txt (nixos-hardware
# writes these, replacing nixpkgs' own config.txt), and the NixOS root
# partition, zstd-compressed, which grows to fill the card on first boot.
{ modulesPath, config, ... }:

{
  imports = [ "${modulesPath}/installer/sd-card/sd-image-aarch64.nix" ];

  image.baseName = "immich-appliance-${config.system.nixos.label}-${config.nixpkgs.hostPlatform.system}";

  sdImage = {
    compressImage = true;
    expandOnBoot = true;
  };
}
