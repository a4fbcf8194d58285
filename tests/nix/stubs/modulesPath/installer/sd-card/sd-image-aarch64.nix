# nixos/modules/installer/sd-card/sd-image-aarch64.nix: it imports
# sd-image.nix (and profiles/base.nix, whose tools need no stubs here).
{
  imports = [ ./sd-image.nix ];
}
