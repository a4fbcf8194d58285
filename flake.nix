{
  description = "Immich on a Raspberry Pi 4: an encrypted USB drive, encrypted backups, and a throttler that keeps the Pi cool";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    nixos-hardware = {
      url = "github:NixOS/nixos-hardware";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      nixos-hardware,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      vm = self.nixosConfigurations.vm;
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          tools = pkgs.callPackage ./crates/package.nix { };
          system = pkgs.stdenv.hostPlatform.system;
          # The options of the modules alone, for the reference.
          bare = lib.nixosSystem {
            modules = [
              self.nixosModules.default
              { nixpkgs.hostPlatform = system; }
            ];
          };
        in
        {
          default = tools;
          # nix build .#options-doc: the options reference as CommonMark (the
          # same content as docs/options.md, which `cargo xtask options-doc`
          # writes without nixpkgs).
          options-doc =
            (pkgs.nixosOptionsDoc {
              options = bare.options.services.immich-appliance;
              transformOptions =
                opt:
                opt
                // {
                  declarations = map (d: lib.removePrefix "${self}/" (toString d)) opt.declarations;
                };
            }).optionsCommonMark;
          immich-server = tools;
          # The same build; `nix run .#immich-throttle` runs the throttler.
          immich-throttle = tools.overrideAttrs (old: {
            meta = old.meta // {
              mainProgram = "immich-throttle";
            };
          });
          # The card image, an aarch64 system on every build host: `nix build
          # .#sd-image` on an aarch64 machine, or on an x86_64 PC with binfmt
          # emulation (docs/customise.md), which keeps the binary cache usable
          # where a cross build would compile everything.
          sd-image = self.nixosConfigurations.rpi4.config.system.build.sdImage;
        }
      );

      # The appliance's modules, with its tools from this flake. Import it in
      # your own flake to customise the appliance (templates/site).
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./modules ];
          services.immich-appliance.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      nixosConfigurations = {
        rpi4 = lib.nixosSystem {
          modules = [
            self.nixosModules.default
            nixos-hardware.nixosModules.raspberry-pi-4
            ./hosts/rpi4
            ./images/sd-image.nix
          ];
        };
        vm = lib.nixosSystem {
          modules = [
            self.nixosModules.default
            ./hosts/vm
          ];
        };
      };

      # nix run .#vm: the appliance in QEMU, with a blank disk as its drive.
      apps.x86_64-linux.vm = {
        type = "app";
        program = "${vm.config.system.build.vm}/bin/run-${vm.config.system.name}-vm";
        meta.description = "Boot the appliance in a QEMU VM with a blank second disk (/dev/vdb) as the drive";
      };

      checks = forAllSystems (
        pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
          moduleTests =
            let
              failures = import ./tests/nix { inherit lib; };
            in
            if failures == [ ] then
              pkgs.runCommand "immich-appliance-module-tests" { } "touch $out"
            else
              throw "module tests failed: ${builtins.toJSON failures}";
        in
        {
          package = self.packages.${system}.default;
          module-tests = moduleTests;
        }
        // lib.optionalAttrs (system == "x86_64-linux") (
          {
            vm-system = vm.config.system.build.toplevel;
          }
          # The real NixOS units, LUKS, PostgreSQL, Immich and rustic under
          # the NixOS test driver: one file per story in tests/nixos.
          // lib.genAttrs [ "lifecycle" "unplug" "backup-restore" ] (
            name: pkgs.testers.runNixOSTest (import ./tests/nixos/${name}.nix { inherit self; })
          )
        )
        // lib.optionalAttrs (system == "aarch64-linux") {
          rpi4-system = self.nixosConfigurations.rpi4.config.system.build.toplevel;
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [
            cargo
            clippy
            rustfmt
            rust-analyzer
            nixfmt
            # The VM test harness and the API contract check.
            qemu
            debootstrap
            nodejs
          ];
        };
      });

      templates.default = {
        path = ./templates/site;
        description = "Your own appliance: this flake's modules plus your keys and choices";
      };
    };
}
