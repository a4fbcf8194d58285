# Stand-ins for the parts of nixpkgs the appliance's modules touch, so that
# the modules evaluate with nixpkgs' lib alone. Packages are inert store
# paths; nothing is built.
{ lib }:

let
  fakePackage =
    name:
    {
      type = "derivation";
      inherit name;
      pname = name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      meta.mainProgram = name;
    };
  toml = {
    # The type nixpkgs' formats.toml uses: nested attribute sets of TOML
    # values; conflicting leaves are an error.
    type =
      with lib.types;
      let
        value =
          nullOr (oneOf [
            bool
            int
            float
            str
            path
            (attrsOf value)
            (listOf value)
          ])
          // {
            description = "TOML value";
          };
      in
      attrsOf value;
    # The tests read the value back instead of a rendered file.
    generate = name: value: fakePackage name // { inherit value; };
  };
  platform = {
    system = "aarch64-linux";
    isAarch64 = true;
  };
in
lib.genAttrs [
  "coreutils"
  "cryptsetup"
  "curl"
  "e2fsprogs"
  "gnugrep"
  "rustic"
  "smartmontools"
  "systemd"
  "tailscale"
  "util-linux"
  "immich"
  "jq"
] fakePackage
// {
  inherit fakePackage;
  formats.toml = _: toml;
  postgresql_17 = fakePackage "postgresql-17" // {
    psqlSchema = "17";
  };
  stdenv = {
    hostPlatform = platform;
    buildPlatform = platform // {
      canExecute = _: true;
    };
  };
  runCommand = name: _env: script: fakePackage name // { inherit script; };
  linuxPackages = {
    kernel = fakePackage "linux" // {
      version = "6.12.60";
    };
  };
}
