# nixpkgs' lib at the NixOS 26.05 branch-off, from nix-community/nixpkgs.lib
# (a lib-only mirror of nixpkgs). Fetched once; offline when the store
# already holds this exact tree (`.ci/run` seeds it).
import (
  builtins.fetchTarball {
    name = "source";
    url = "https://github.com/nix-community/nixpkgs.lib/archive/20dd424ff28fae4e89a8154f744743dafd902fe4.tar.gz";
    sha256 = "sha256-d5y/y8SKE7f6C3TM8jqAcl25s5Xm3t5pP8wezOdS67s=";
  }
  + "/lib"
)
