# nixos/modules/virtualisation/qemu-vm.nix: the options hosts/vm sets.
{ lib, ... }:

let
  t = lib.types;
  opt = type: default: lib.mkOption { inherit type default; };
in
{
  options.virtualisation = {
    memorySize = opt t.ints.positive 1024;
    cores = opt t.ints.positive 1;
    graphics = opt t.bool true;
    qemu.diskInterface = opt (t.enum [
      "virtio"
      "scsi"
      "ide"
    ]) "virtio";
    # Sizes in MiB (nixpkgs also accepts submodules with drive options).
    emptyDiskImages = opt (t.listOf t.ints.positive) [ ];
    forwardPorts = opt (t.listOf (t.submodule {
      options = {
        from = opt (t.enum [
          "host"
          "guest"
        ]) "host";
        proto = opt (t.enum [
          "tcp"
          "udp"
        ]) "tcp";
        host.address = opt t.str "";
        host.port = lib.mkOption { type = t.port; };
        guest.address = opt t.str "";
        guest.port = lib.mkOption { type = t.port; };
      };
    })) [ ];
  };
}
