//! The Nix layer: unit tests of the NixOS modules with `lib.evalModules` on
//! nixpkgs' lib (no nixpkgs tree, no network), the flake's wiring, the
//! config.toml the module writes (loaded by the real `immich-server`), the
//! stubbed option paths against NixOS's option list, and a parse of every
//! Nix file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util;

const INSTALL_HINT: &str = "install Nix (https://nixos.org/download); on a Debian CI machine .ci/run \
     sets up an offline Nix and puts it on PATH";

pub fn test() -> Result<()> {
    let nix = Nix::find()?;
    let root = util::root();

    util::timed("parse every .nix file", || parse_all(&nix, &root))?;
    util::timed("module unit tests (tests/nix)", || {
        expect_no_failures(&nix, "tests/nix/default.nix")
    })?;
    util::timed("flake wiring (tests/nix/flake-outputs.nix)", || {
        expect_no_failures(&nix, "tests/nix/flake-outputs.nix")
    })?;
    let export = util::timed("export configs and option paths", || {
        nix.eval_json("tests/nix/export.nix")
    })?;
    util::timed("config.toml from the module loads in immich-server", || {
        check_configs(&export)
    })?;
    util::timed("stubbed options exist in NixOS", || {
        check_option_paths(&export)
    })?;
    util::timed("docs/options.md is current", || check_options_doc(&export))?;
    util::timed("flake.lock resolves without re-locking", || {
        nix.flake_lock_ok(&root)
    })?;
    Ok(())
}

struct Nix {
    instantiate: PathBuf,
    nix: Option<PathBuf>,
    lib_expr: String,
}

impl Nix {
    fn find() -> Result<Self> {
        let instantiate = util::require("nix-instantiate", INSTALL_HINT)?;
        let nix = util::which("nix");
        // NIXPKGS_LIB points at a nixpkgs `lib` directory; otherwise the pinned
        // lib is fetched (or found in the store, offline).
        let lib_expr = match std::env::var_os("NIXPKGS_LIB") {
            Some(p) => {
                let p = PathBuf::from(p);
                if !p.join("default.nix").is_file() {
                    bail!(
                        "NIXPKGS_LIB={} is not a nixpkgs lib directory (no default.nix)",
                        p.display()
                    );
                }
                format!("import {}", p.display())
            }
            None => "import ./tests/nix/nixpkgs-lib.nix".to_owned(),
        };
        Ok(Self {
            instantiate,
            nix,
            lib_expr,
        })
    }

    fn instantiate(&self) -> Command {
        let mut c = Command::new(&self.instantiate);
        c.current_dir(util::root());
        c
    }

    /// Evaluates `file` (a function of `{ lib }`) strictly to JSON.
    fn eval_json(&self, file: &str) -> Result<Value> {
        // --read-write-mode: the stubs' modulesPath is a directory that the
        // evaluator must add to the store.
        let out = util::output(
            self.instantiate()
                .args(["--read-write-mode", "--eval", "--strict", "--json", file])
                .args(["--arg", "lib", &self.lib_expr]),
        )?;
        serde_json::from_str(&out).with_context(|| format!("{file} did not print JSON"))
    }

    fn flake_lock_ok(&self, root: &Path) -> Result<()> {
        let Some(nix) = &self.nix else {
            bail!("`nix` is not installed; {INSTALL_HINT}");
        };
        // Resolving the lock reads only the lock file and nixos-hardware's
        // flake (seeded into the store on CI); any re-lock would need the
        // network and fail here.
        // Only flake.nix and flake.lock matter here; a copy of just those
        // keeps Nix from copying the whole tree (target/ included).
        let dir = root.join("target/nix-test/flake");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        for f in ["flake.nix", "flake.lock"] {
            fs::copy(root.join(f), dir.join(f))?;
        }
        let out = util::output(
            Command::new(nix)
                .args(["flake", "metadata", "--json", "--no-update-lock-file"])
                .arg(format!("path:{}", dir.display())),
        )
        .context(
            "flake.lock does not resolve as committed; it must match flake.nix's inputs \
             (see tests/nix/README.md)",
        )?;
        let meta: Value = serde_json::from_str(&out)?;
        let committed: Value = serde_json::from_str(&fs::read_to_string(root.join("flake.lock"))?)?;
        if meta["locks"] != committed {
            bail!("Nix would rewrite flake.lock:\n{}", meta["locks"]);
        }
        Ok(())
    }
}

fn expect_no_failures(nix: &Nix, file: &str) -> Result<()> {
    let v = nix.eval_json(file)?;
    let failures = v
        .as_array()
        .with_context(|| format!("{file} should evaluate to a list (lib.runTests)"))?;
    if failures.is_empty() {
        eprintln!("    {file}: all tests passed");
        return Ok(());
    }
    for f in failures {
        eprintln!(
            "FAIL {}\n  expected: {}\n  result:   {}",
            f["name"].as_str().unwrap_or("?"),
            f["expected"],
            f["result"]
        );
    }
    bail!("{} test(s) in {file} failed", failures.len())
}

fn parse_all(nix: &Nix, root: &Path) -> Result<()> {
    let files = util::output(Command::new("git").current_dir(root).args([
        "ls-files",
        "--cached",
        "--others",
        "--exclude-standard",
        "*.nix",
    ]))?;
    let files: Vec<&str> = files.lines().filter(|l| !l.is_empty()).collect();
    if files.is_empty() {
        bail!("no .nix files found under {}", root.display());
    }
    for f in &files {
        util::output(nix.instantiate().args(["--parse", f]))
            .with_context(|| format!("{f} does not parse"))?;
    }
    eprintln!("    {} files parse", files.len());
    Ok(())
}

/// Writes each exported config as TOML, as the module does, and loads it
/// with the real config loader: the accepted ones must load, the rejected
/// ones must fail with an error that names the key.
fn check_configs(export: &Value) -> Result<()> {
    let bin = util::target_dir().join("debug/immich-server");
    util::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(util::root())
            .args(["build", "--locked", "--workspace", "--bins"]),
    )?;
    let dir = util::root().join("target/nix-test");
    fs::create_dir_all(&dir)?;
    let write = |name: &str, v: &Value| -> Result<PathBuf> {
        let failed = v["failed"].as_array().context("no `failed` in export")?;
        if !failed.is_empty() {
            bail!("the `{name}` configuration fails the module's assertions: {failed:?}");
        }
        let t: toml::Value = serde_json::from_value(v["settings"].clone())
            .with_context(|| format!("config `{name}` is not representable as TOML"))?;
        let p = dir.join(format!("{name}.toml"));
        fs::write(&p, toml::to_string(&t)?)?;
        Ok(p)
    };
    let accepted = export["configs"]
        .as_object()
        .context("export.nix has no configs")?;
    for (name, v) in accepted {
        let p = write(name, v)?;
        util::output(
            Command::new(&bin)
                .arg("--config")
                .arg(&p)
                .arg("show-config"),
        )
        .with_context(|| {
            format!(
                "immich-server rejects the `{name}` config ({})",
                p.display()
            )
        })?;
        eprintln!("    config `{name}` loads");
    }
    let expect_key: BTreeMap<&str, &str> = [
        ("unknown-key", "bogus"),
        ("wrong-type", "start-timeout-secs"),
        ("plain-smtp-to-another-host", "smtp-security"),
    ]
    .into();
    let rejected = export["rejected"]
        .as_object()
        .context("export.nix has no rejected configs")?;
    for (name, v) in rejected {
        let p = write(name, v)?;
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&p)
            .arg("show-config")
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        let key = expect_key
            .get(name.as_str())
            .with_context(|| format!("no expected key for rejected config `{name}`"))?;
        if out.status.success() || !err.contains(key) {
            bail!(
                "config `{name}` should be rejected with an error naming `{key}`; got {}:\n{err}",
                out.status
            );
        }
        eprintln!(
            "    config `{name}` is rejected: {}",
            err.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// Every NixOS option the stubs declare must exist in NixOS 26.05: in the
/// option list (NIXOS_OPTIONS_JSON), or in tests/nix/extra-options.json,
/// which names the nixpkgs file that declares each of the others.
fn check_option_paths(export: &Value) -> Result<()> {
    let paths: Vec<&str> = export["stubOptionPaths"]
        .as_array()
        .context("export.nix has no stubOptionPaths")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let list = match std::env::var_os("NIXOS_OPTIONS_JSON") {
        Some(p) => PathBuf::from(p),
        None => {
            let shared = util::root().join("../shared/nix/nixos-options.json");
            if !shared.is_file() {
                let why = format!(
                    "the check of {} stubbed option paths against NixOS's option list cannot run: \
                     no list. Set NIXOS_OPTIONS_JSON to a JSON object keyed by option path \
                     (CI uses ../shared/nix/nixos-options.json)",
                    paths.len()
                );
                // In CI a check that did not run is a failure, never a pass.
                if std::env::var_os("CI").is_some() {
                    bail!("{why}");
                }
                eprintln!("\n!!! SKIPPED: {why}.\n!!! CI fails on this skip.\n");
                return Ok(());
            }
            shared
        }
    };
    let known: Value = serde_json::from_str(
        &fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?,
    )
    .with_context(|| format!("{} is not JSON", list.display()))?;
    let extra: Value = serde_json::from_str(&fs::read_to_string(
        util::root().join("tests/nix/extra-options.json"),
    )?)?;
    let missing: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| known.get(p).is_none() && extra.get(p).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the stubs declare options that NixOS does not have (or that {} lacks):\n  {}\n\
             Read the nixpkgs module; if the option is real, add it to tests/nix/extra-options.json \
             with the file that declares it.",
            list.display(),
            missing.join("\n  ")
        );
    }
    eprintln!(
        "    {} option paths found in {} (+ {} verified extras)",
        paths.len(),
        list.display(),
        extra.as_object().map_or(0, |o| o.len().saturating_sub(1))
    );
    Ok(())
}

/// The option reference, rendered from the module's own declarations.
fn render_options_doc(export: &Value) -> Result<String> {
    let opts = export["options"]
        .as_array()
        .context("export.nix has no options")?;
    let mut s = String::from(
        "# Options reference\n\n\
         Every option of `services.immich-appliance`, generated from the NixOS modules\n\
         (`cargo xtask options-doc`; `cargo xtask ci` fails when this file is stale).\n\
         With Nix, `nix build .#options-doc` renders the same options with NixOS's own\n\
         `nixosOptionsDoc`. Set them in your own flake (see [customise.md](customise.md)).\n",
    );
    for o in opts {
        let name = o["name"].as_str().unwrap_or("?");
        s.push_str(&format!("\n## `{name}`\n\n"));
        if let Some(d) = o["description"].as_str() {
            s.push_str(d.trim());
            s.push_str("\n\n");
        }
        s.push_str(&format!("- Type: {}\n", o["type"].as_str().unwrap_or("?")));
        for (k, label) in [("default", "Default"), ("example", "Example")] {
            if let Some(v) = o[k].as_str() {
                let v = v.trim();
                if v.contains('\n') {
                    s.push_str(&format!("- {label}:\n\n  ```nix\n"));
                    for line in v.lines() {
                        s.push_str(&format!("  {line}\n"));
                    }
                    s.push_str("  ```\n");
                } else {
                    s.push_str(&format!("- {label}: `{v}`\n"));
                }
            }
        }
    }
    Ok(s)
}

fn check_options_doc(export: &Value) -> Result<()> {
    let want = render_options_doc(export)?;
    let path = util::root().join("docs/options.md");
    let have = fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        bail!(
            "{} is stale: regenerate it with `cargo xtask options-doc` and commit it",
            path.display()
        );
    }
    eprintln!(
        "    {} options documented",
        export["options"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

/// Writes docs/options.md from the modules.
pub fn write_options_doc() -> Result<()> {
    let nix = Nix::find()?;
    let export = nix.eval_json("tests/nix/export.nix")?;
    let path = util::root().join("docs/options.md");
    fs::create_dir_all(path.parent().expect("docs/"))?;
    fs::write(&path, render_options_doc(&export)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
