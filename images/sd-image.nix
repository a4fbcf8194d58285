# The SD card image for the Pi 4: a FAT partition with the GPU firmware,
# U-Boot and config.txt, and the NixOS root partition, zstd-compressed,
# which grows to fill the card on first boot.
#
# It builds on nixpkgs' generic sd-image.nix, not on sd-image-aarch64.nix:
# that one also imports the installer profile (ZFS and its kernel module,
# installer tools) and adds console= parameters for other boards. What it
# did that the appliance needs is declared here; nixos-hardware's Pi
# firmware module fills the FAT partition (sdImage.populateFirmwareCommands)
# with the firmware, its config.txt and U-Boot.
{ modulesPath, config, ... }:

{
  imports = [ "${modulesPath}/installer/sd-card/sd-image.nix" ];

  # The GPU firmware chain-loads U-Boot, which reads extlinux.conf.
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;

  image.baseName = "immich-appliance-${config.system.nixos.label}-${config.nixpkgs.hostPlatform.system}";

  sdImage = {
    compressImage = true;
    expandOnBoot = true;
    # /boot on the root partition, written as a switch would write it.
    populateRootCommands = ''
      mkdir -p ./files/boot
      ${config.boot.loader.generic-extlinux-compatible.populateCmd} -c ${config.system.build.toplevel} -d ./files/boot
    '';
  };
}
