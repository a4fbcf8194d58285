# The appliance's Rust binaries, immich-server and immich-throttle, built
# from this workspace with the Cargo.lock committed beside it.
{
  lib,
  stdenv,
  rustPlatform,
  pkg-config,
  cryptsetup,
  installShellFiles,
}:

let
  # Only what the build reads: a change to docs or Nix modules does not
  # rebuild the binaries (defaults.toml is embedded by the config loader).
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../.cargo
      ../crates
      ../xtask
      ../modules/defaults.toml
    ];
  };
  manifest = lib.importTOML ../Cargo.toml;
  # A cross build cannot run the target binaries to write man pages and
  # completions; they are generated when the build machine can run them.
  canRun = stdenv.buildPlatform.canExecute stdenv.hostPlatform;
in
rustPlatform.buildRustPackage {
  pname = "immich-appliance";
  inherit (manifest.workspace.package) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;
  # [profile.nix] in Cargo.toml: buildable on a Pi in reasonable time; the
  # check phase uses it too, so dependencies are compiled once.
  buildType = "nix";
  cargoBuildFlags = [
    "--package=immich-server"
    "--package=immich-throttle"
  ];
  # The unit and integration tests of the library and both binaries; the
  # API contract test needs @immich/sdk from npm and runs in `cargo xtask ci`.
  cargoTestFlags = [
    "--package=appliance"
    "--package=immich-server"
    "--package=immich-throttle"
  ];

  # libcryptsetup-rs-sys runs bindgen against libcryptsetup's headers.
  nativeBuildInputs = [
    pkg-config
    rustPlatform.bindgenHook
    installShellFiles
  ];
  buildInputs = [ cryptsetup ];

  postInstall = lib.optionalString canRun ''
    $out/bin/immich-server man --out man
    installManPage man/*.1
    for shell in bash fish zsh; do
      $out/bin/immich-server completions $shell > immich-server.$shell
    done
    installShellCompletion immich-server.{bash,fish,zsh}
  '';

  meta = {
    description = "Unlock the Immich appliance's drive and start Immich; keep the Pi below throttling";
    homepage = manifest.workspace.package.repository;
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "immich-server";
  };
}
