# The flake's wiring, evaluated with stand-ins for its inputs: nixpkgs' lib
# with lib.nixosSystem replaced by the stubbed module evaluation, stub
# packages, and an empty nixos-hardware module. Checks the lock against the
# inputs, the outputs the README promises, and that the hosts and the NixOS
# test machine evaluate as the flake assembles them.
{ lib }:

let
  e = import ./eval.nix { inherit lib; };
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  pkgsFor =
    system:
    let
      platform = {
        inherit system;
        isAarch64 = system == "aarch64-linux";
      };
      withOverride =
        p:
        p
        // {
          overrideAttrs = f: withOverride (p // f p);
        };
    in
    e.pkgs
    // {
      stdenv = e.pkgs.stdenv // {
        hostPlatform = platform;
      };
      callPackage = path: _args: withOverride (e.pkgs.fakePackage "immich-appliance" // { inherit system; });
      mkShell = args: e.pkgs.fakePackage "shell" // { inherit args; };
      testers.runNixOSTest = test: e.pkgs.fakePackage "nixos-test" // { inherit test; };
      nixosOptionsDoc =
        { options, ... }:
        {
          optionsCommonMark = e.pkgs.fakePackage "options.md" // {
            names = lib.attrNames options;
          };
        };
    }
    // lib.genAttrs [
      "nixfmt"
      "cargo"
      "clippy"
      "rustfmt"
      "rust-analyzer"
      "qemu"
      "debootstrap"
      "nodejs"
    ] e.pkgs.fakePackage;

  flake = import ../../flake.nix;
  lock = builtins.fromJSON (builtins.readFile ../../flake.lock);
  inputs = {
    nixpkgs = {
      lib = lib // {
        nixosSystem = args: e.evalWithStubs args.modules;
      };
      legacyPackages = lib.genAttrs systems pkgsFor;
    };
    nixos-hardware.nixosModules.raspberry-pi-4 = { };
  };
  self = flake.outputs (inputs // { inherit self; });

  # templates/site/flake.nix as `nix flake init -t` gives it to an owner,
  # with this repository as its immich-appliance input; and the same file
  # with its EDIT lines changed, as an owner changes them.
  templateText = builtins.readFile ../../templates/site/flake.nix;
  edits = {
    "networking.hostName = \"immich\";" = "networking.hostName = \"photos\";";
    "boardMemoryGiB = 4;" = "boardMemoryGiB = 8;";
    "time.timeZone = \"Europe/Berlin\";" = "time.timeZone = \"America/New_York\";";
    "# machineLearning.mode = \"off\";" = "machineLearning.mode = \"local\";";
    "# backup.essentialOnly = false;" = "backup.essentialOnly = true;";
  };
  flakeOf =
    text:
    let
      outputs = (import (builtins.toFile "flake.nix" text)).outputs {
        self = outputs;
        inherit (inputs) nixpkgs nixos-hardware;
        immich-appliance = self // {
          outPath = toString ../..;
        };
      };
    in
    outputs;
  template = flakeOf templateText;
  templateConfig = template.nixosConfigurations.immich;
  editedConfig =
    (flakeOf (lib.replaceStrings (lib.attrNames edits) (lib.attrValues edits) templateText))
    .nixosConfigurations.immich;

  # Every ```nix block of docs/ (options.md is generated from the modules and
  # holds option values, not snippets), as a module on top of a system.
  docFiles = lib.filter (f: lib.hasSuffix ".md" f && f != "options.md") (
    lib.attrNames (builtins.readDir ../../docs)
  );
  snippets = lib.concatMap (
    file:
    lib.imap1 (i: block: {
      name = "docs/${file}, nix block ${toString i}";
      text = lib.head (lib.splitString "```" block);
    }) (lib.tail (lib.splitString "```nix\n" (builtins.readFile (../../docs + "/${file}"))))
  ) docFiles;
  asModule =
    text:
    import (
      builtins.toFile "doc-snippet.nix" (
        if lib.hasPrefix "{" (lib.trim text) then
          text
        else
          "{ lib, pkgs, config, ... }: {\n${text}\n}"
      )
    );
  # The option paths a module defines (down to a value or an mkIf/mkForce).
  definedPaths =
    prefix: v:
    if builtins.isAttrs v && !(v ? _type) && v != { } then
      lib.concatLists (lib.mapAttrsToList (n: definedPaths (prefix ++ [ n ])) v)
    else
      [ prefix ];
  # Evaluates the parts of a system a module can break: every option it
  # sets (its type, a conflict with the host), the assertions, and the
  # generated config.toml.
  evaluates =
    system: module:
    let
      c = (system.extendModules { modules = [ module ]; }).config;
      defs =
        if builtins.isFunction module then
          module {
            inherit lib;
            inherit (e) pkgs;
            config = c;
          }
        else
          module;
      values = map (p: lib.attrByPath p null c) (definedPaths [ ] defs);
      forced = builtins.deepSeq values (builtins.deepSeq (e.settings c) (failed c));
      r = builtins.tryEval forced;
    in
    r.success && r.value == [ ];
  failed = cfg: e.failedAssertions cfg;
  isRev = s: builtins.match "[0-9a-f]{40}" s != null;
in
lib.runTests {
  testInputsArePinnedAsTheDesignSays = {
    expr = {
      nixpkgs = flake.inputs.nixpkgs.url;
      hardware = flake.inputs.nixos-hardware.url;
      follows = flake.inputs.nixos-hardware.inputs.nixpkgs.follows;
    };
    expected = {
      nixpkgs = "github:NixOS/nixpkgs/nixos-26.05";
      hardware = "github:NixOS/nixos-hardware";
      follows = "nixpkgs";
    };
  };
  # A lock whose `original` differs from the input URL makes Nix re-lock,
  # which needs the network; a made-up narHash breaks every user.
  testLockMatchesTheInputs = {
    expr = {
      nixpkgs = lock.nodes.nixpkgs.original;
      hardware = lock.nodes.nixos-hardware.original;
      follows = lock.nodes.nixos-hardware.inputs.nixpkgs;
      root = lock.nodes.root.inputs;
      revs = map (n: isRev lock.nodes.${n}.locked.rev) [
        "nixpkgs"
        "nixos-hardware"
      ];
      hashes = map (n: lib.hasPrefix "sha256-" lock.nodes.${n}.locked.narHash) [
        "nixpkgs"
        "nixos-hardware"
      ];
      inherit (lock) version;
    };
    expected = {
      nixpkgs = {
        owner = "NixOS";
        repo = "nixpkgs";
        ref = "nixos-26.05";
        type = "github";
      };
      hardware = {
        owner = "NixOS";
        repo = "nixos-hardware";
        type = "github";
      };
      follows = [ "nixpkgs" ];
      root = {
        nixpkgs = "nixpkgs";
        nixos-hardware = "nixos-hardware";
      };
      revs = [
        true
        true
      ];
      hashes = [
        true
        true
      ];
      version = 7;
    };
  };
  testPackages = {
    expr = {
      x86 = lib.attrNames self.packages.x86_64-linux;
      arm = lib.attrNames self.packages.aarch64-linux;
      docOf = lib.elem "throttle" self.packages.x86_64-linux.options-doc.names;
      mainPrograms = map (p: p.meta.mainProgram) [
        self.packages.x86_64-linux.immich-server
        self.packages.x86_64-linux.immich-throttle
      ];
    };
    expected = {
      x86 = [
        "default"
        "immich-server"
        "immich-throttle"
        "options-doc"
        "sd-image"
      ];
      arm = [
        "default"
        "immich-server"
        "immich-throttle"
        "options-doc"
        "sd-image"
      ];
      mainPrograms = [
        "immich-appliance"
        "immich-throttle"
      ];
      docOf = true;
    };
  };
  testOutputsExist = {
    expr = {
      configs = lib.attrNames self.nixosConfigurations;
      app = self.apps.x86_64-linux.vm.type;
      checksX86 = lib.attrNames self.checks.x86_64-linux;
      checksArm = lib.attrNames self.checks.aarch64-linux;
      formatter = self.formatter.x86_64-linux.name;
      shells = lib.attrNames self.devShells.aarch64-linux;
      template = builtins.pathExists (self.templates.default.path + "/flake.nix");
    };
    expected = {
      configs = [
        "rpi4"
        "vm"
      ];
      app = "app";
      checksX86 = [
        "backup-restore"
        "lifecycle"
        "module-tests"
        "package"
        "unplug"
        "vm-system"
      ];
      checksArm = [
        "module-tests"
        "package"
        "rpi4-system"
      ];
      formatter = "nixfmt";
      shells = [ "default" ];
      template = true;
    };
  };
  testRpi4AsTheFlakeAssemblesIt = {
    expr =
      let
        c = self.nixosConfigurations.rpi4.config;
      in
      {
        failed = failed c;
        # The flake hands the Pi the aarch64 build of its own package.
        package = c.services.immich-appliance.package.system;
      };
    expected = {
      failed = [ ];
      package = "aarch64-linux";
    };
  };
  # The template an owner starts from evaluates as shipped and with its
  # EDIT lines changed.
  testTheTemplateEvaluates = {
    expr = {
      failed = failed templateConfig.config;
      host = templateConfig.config.networking.hostName;
      mdns = templateConfig.config.services.immich-appliance.remoteAccess.lan.mdnsHostName;
      images = lib.mapAttrs (_: lib.attrNames) template.packages;
      editLinesFound = lib.all (l: lib.hasInfix l templateText) (lib.attrNames edits);
      edited = evaluates editedConfig { };
      editedHost = editedConfig.config.networking.hostName;
      editedMl = lib.elem "immich-machine-learning.service" (e.settings editedConfig.config).units.stack;
    };
    expected = {
      failed = [ ];
      host = "immich";
      mdns = "immich";
      images = {
        aarch64-linux = [ "sd-image" ];
        x86_64-linux = [ "sd-image" ];
      };
      editLinesFound = true;
      edited = true;
      editedHost = "photos";
      editedMl = true;
    };
  };
  # Each Nix snippet of the guides, on top of the Pi 4 system: one that does
  # not evaluate is named here.
  testEveryDocSnippetEvaluatesOnTheRpi4Host = {
    expr = {
      found = lib.length snippets > 2;
      broken = map (s: s.name) (
        lib.filter (s: !(evaluates self.nixosConfigurations.rpi4 (asModule s.text))) snippets
      );
    };
    expected = {
      found = true;
      broken = [ ];
    };
  };
  testVmAsTheFlakeAssemblesIt = {
    expr = failed self.nixosConfigurations.vm.config;
    expected = [ ];
  };
  # Each NixOS test's machine evaluates with the appliance's module (its
  # test script needs the NixOS test driver: nix flake check runs it).
  testTheNixosTestMachinesEvaluate = {
    expr = map (
      name:
      let
        test = self.checks.x86_64-linux.${name}.test;
        c =
          (e.evalWithStubs [
            ./stubs/modulesPath/virtualisation/qemu-vm.nix
            test.nodes.machine
          ]).config;
      in
      let
        source = builtins.readFile (../nixos + "/${name}.nix");
        installed = map (p: p.pname or p.name) c.environment.systemPackages;
      in
      {
        inherit (test) name;
        failed = failed c;
        disks = lib.length c.virtualisation.emptyDiskImages;
        throttle = c.services.immich-appliance.throttle.enable;
        script = lib.hasInfix "immich-server" test.testScript;
        # Tools the script runs that NixOS does not install by itself (curl
        # and e2fsprogs' lsattr it does): each must be on the machine.
        notInstalled = lib.filter (t: lib.hasInfix "${t} " test.testScript && !lib.elem t installed) [
          "jq"
          "cryptsetup"
        ];
        # Names come from defaults.toml, never a literal that can drift.
        literalNames = lib.filter (n: lib.hasInfix n source) [
          "/srv/immich"
          "/dev/mapper/immich"
          "immich-data"
        ];
      }
    ) [
      "lifecycle"
      "unplug"
      "backup-restore"
    ];
    expected = [
      {
        name = "immich-appliance-lifecycle";
        notInstalled = [ ];
        literalNames = [ ];
        failed = [ ];
        disks = 1;
        throttle = false;
        script = true;
      }
      {
        name = "immich-appliance-unplug";
        notInstalled = [ ];
        literalNames = [ ];
        failed = [ ];
        disks = 1;
        throttle = false;
        script = true;
      }
      {
        name = "immich-appliance-backup-restore";
        notInstalled = [ ];
        literalNames = [ ];
        failed = [ ];
        disks = 2;
        throttle = false;
        script = true;
      }
    ];
  };
}
