# The appliance as the NixOS tests run it: a VM whose blank disks play the
# USB drives, without Pi sensors (no throttler) and without a tailnet.
{ self, disks }:

{ pkgs, ... }:
{
  imports = [ self.nixosModules.default ];

  # The test scripts read JSON with jq; the appliance installs cryptsetup
  # itself (docs/after-a-reboot.md uses it), so it is not repeated here.
  environment.systemPackages = [ pkgs.jq ];

  virtualisation = {
    memorySize = 4096;
    cores = 2;
    emptyDiskImages = disks;
  };

  services.immich-appliance = {
    enable = true;
    access.authorizedKeys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3ZXN0a2V5d2VzdGtleXdlc3RrZXl3ZXN0a2V5 test@driver"
    ];
    throttle.enable = false;
    remoteAccess.tailscale.enable = false;
  };
  system.stateVersion = "26.05";
}
