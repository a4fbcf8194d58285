# Evaluates the appliance's modules (and the hosts) against the stubs in
# ./stubs, with nixpkgs' lib only.
{ lib }:

rec {
  pkgs = import ./stubs/pkgs.nix { inherit lib; };

  key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3ZXN0a2V5d2VzdGtleXdlc3RrZXl3ZXN0a2V5 owner@laptop";

  # The stubbed NixOS alone: what lib.nixosSystem is in these tests.
  evalWithStubs =
    modules:
    lib.evalModules {
      # As in NixOS: modulesPath is known before the modules are imported.
      specialArgs.modulesPath = ./stubs/modulesPath;
      modules = [
        ./stubs/nixos.nix
        ./stubs/upstream.nix
        { _module.args.pkgs = pkgs; }
      ]
      ++ modules;
    };

  evalModules =
    modules:
    evalWithStubs (
      [
        ../../modules
        { services.immich-appliance.package = pkgs.fakePackage "immich-appliance"; }
      ]
      ++ modules
    );

  # The smallest appliance a user can build: enabled, with a key.
  base = {
    services.immich-appliance = {
      enable = true;
      access.authorizedKeys = [ key ];
    };
  };

  config = modules: (evalModules ([ base ] ++ modules)).config;
  # Without `base`: for the hosts, and for what happens with no key.
  bareConfig = modules: (evalModules modules).config;

  rpi4 = bareConfig [
    ../../hosts/rpi4
    ../../images/sd-image.nix
  ];
  vm = bareConfig [ ../../hosts/vm ];

  failedAssertions = cfg: map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  settings = cfg: cfg.services.immich-appliance.settings;

  # Option paths declared by the stubs (not by the appliance), as NixOS
  # documents them.
  stubOptionPaths =
    let
      docs =
        modules:
        lib.optionAttrSetToDocList (evalModules modules).options;
      names = lib.concatMap (m: map (o: o.name) (docs m)) [
        [ base ]
        [
          ../../hosts/rpi4
          ../../images/sd-image.nix
        ]
        [ ../../hosts/vm ]
      ];
    in
    lib.unique (
      lib.filter (
        n: !(lib.hasPrefix "services.immich-appliance." n) && !(lib.hasPrefix "_module." n) && !(lib.hasInfix "._module." n)
      ) names
    );

  applianceOptions = lib.filter (
    o: lib.hasPrefix "services.immich-appliance." o.name && o.visible && !o.internal
  ) (
    lib.optionAttrSetToDocList (evalModules [ base ]).options
  );
}
