# nixpkgs' nixos/lib/utils.nix, reduced to escapeSystemdPath, which the
# modules use to name the drive's mount unit. Same rules: "/" becomes "-",
# characters special to systemd (among them "-") become \xNN, and leading
# and trailing slashes go.
{ lib }:

{
  escapeSystemdPath =
    s:
    let
      special = lib.stringToCharacters " !\"#$%&'()*+,;<=>=@[\\]^`{|}~-";
      norm = lib.strings.normalizePath s;
      trimmed = if norm == "/" then norm else lib.removeSuffix "/" (lib.removePrefix "/" norm);
      escaped = lib.strings.escapeC special trimmed;
      dotFixed = if lib.hasPrefix "." escaped then "\\x2e" + lib.removePrefix "." escaped else escaped;
    in
    lib.replaceStrings [ "/" ] [ "-" ] dotFixed;
}
