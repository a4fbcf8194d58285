# The Immich appliance: one option tree, services.immich-appliance, built on
# nixpkgs' services.immich, services.postgresql, services.redis and
# services.tailscale.
{
  imports = [
    ./appliance.nix
    ./machine-learning.nix
    ./throttle.nix
    ./backup.nix
    ./alerts.nix
    ./remote-access.nix
    ./hardening.nix
  ];
}
