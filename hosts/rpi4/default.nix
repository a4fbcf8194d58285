# The Raspberry Pi 4 appliance. The flake combines this file with
# nixos-hardware's raspberry-pi-4 module, the appliance's modules and
# images/sd-image.nix, so the system you flash and the one
# `nixos-rebuild switch` builds later are the same.
# Every value an owner may want to change is a default (lib.mkDefault), so
# that a flake on top of this one (templates/site) can set it plainly.
{ lib, pkgs, ... }:

{
  nixpkgs.hostPlatform = "aarch64-linux";

  # The mainline LTS kernel from the binary cache, instead of
  # nixos-hardware's default, the vendor kernel, which is not cached and
  # takes hours to build on a Pi. Mainline has everything the appliance
  # uses on a Pi 4: USB mass storage and UAS, dm-crypt, cpufreq, the
  # thermal zone and the under-voltage alarm.
  boot.kernelPackages = lib.mkDefault pkgs.linuxPackages;
  # The mini UART is ttyS1 under the mainline device tree.
  boot.kernelParams = [
    "console=ttyS1,115200n8"
    "console=tty1"
  ];

  # The GPU firmware chain-loads U-Boot, which reads extlinux.conf; U-Boot
  # then loads the kernel's own (mainline) device tree from the generation
  # rather than the vendor one the firmware passes, which is written for the
  # vendor kernel.
  hardware.raspberry-pi.firmware.uboot.enable = true;
  boot.loader.generic-extlinux-compatible.useGenerationDeviceTree = true;
  # Keep the firmware's over-temperature and under-voltage warnings: the
  # throttler keeps the SoC below them, so one showing means something is
  # wrong (nixpkgs' own SD image hides them with avoid_warnings=1).
  hardware.raspberry-pi.configtxt.settings.all.avoid_warnings = lib.mkDefault 0;

  networking.hostName = lib.mkDefault "immich";

  services.immich-appliance = {
    enable = true;
    # Raspberry Pi Imager, or any editor, can put `authorized_keys` on the
    # card's FAT partition before the first boot; that is how an owner of a
    # downloaded image gets in, with no default password.
    access.importKeysFromBootPartition = lib.mkDefault true;
    # The same image is flashed on every Pi 4: assume the common 4 GB board,
    # which keeps machine learning off. Set 8 in your own flake for an 8 GB
    # board (see docs/customise.md).
    boardMemoryGiB = lib.mkDefault 4;
  };

  # The release the state on the drive and the SD card was first created
  # with. It picks PostgreSQL 17 for Immich. Do not change it on an
  # installed appliance: docs/updating.md explains major upgrades.
  system.stateVersion = lib.mkDefault "26.05";
}
