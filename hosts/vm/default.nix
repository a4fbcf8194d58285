# The appliance in a QEMU virtual machine on an x86_64 Linux PC, to try it
# before flashing a card: `nix run .#vm`. The VM gets a blank second disk,
# /dev/vdb, to play the USB drive.
{ modulesPath, lib, ... }:

{
  imports = [ "${modulesPath}/virtualisation/qemu-vm.nix" ];

  nixpkgs.hostPlatform = "x86_64-linux";
  networking.hostName = "immich-vm";

  virtualisation = {
    memorySize = 4096;
    cores = 2;
    graphics = false;
    # MiB: the virtual USB drive.
    emptyDiskImages = [ 8192 ];
    # Immich is reachable from this PC only, at http://127.0.0.1:2283. There
    # is no SSH forward: the VM has no key to log in with; its console logs
    # you in instead.
    forwardPorts = [
      {
        from = "host";
        host.address = "127.0.0.1";
        host.port = 2283;
        guest.port = 2283;
      }
    ];
  };

  services.immich-appliance = {
    enable = true;
    boardMemoryGiB = 4;
    # A throw-away VM on your own PC: log in on its console without a key.
    # Never set this on the Pi.
    access.consoleAutologin = true;
    # No Tailscale in a local demo.
    remoteAccess.tailscale.enable = false;
    remoteAccess.lan.mdns = false;
    # The VM has no Pi sensors: the throttler would refuse to start.
    throttle.enable = false;
  };

  system.stateVersion = "26.05";
}
