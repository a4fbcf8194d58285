# The SD card image for the Pi 4: a FAT partition with the GPU firmware,
# U-Boot and config.txt (written by nixos-hardware), and the NixOS root
# partition, which grows to fill the card on the first boot.
{ modulesPath, config, ... }:

{
  imports = [ "${modulesPath}/installer/sd-card/sd-image.nix" ];

  image.baseName = "immich-appliance-${config.system.nixos.label}-${config.nixpkgs.hostPlatform.system}";

  sdImage = {
    compressImage = true;
    expandOnBoot = true;
    populateRootCommands = ''
      mkdir -p ./files/boot
      ${config.boot.loader.generic-extlinux-compatible.populateCmd} -c ${config.system.build.toplevel} -d ./files/boot
    '';
  };
}
