//! The layers of `cargo xtask ci`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{nix, util, vm};

pub const LAYERS: [&str; 6] = ["fmt", "clippy", "test", "contract", "nix", "vm"];

/// The npm package whose generated client is Immich's API contract.
pub const IMMICH_SDK: &str = "@immich/sdk@3.2.2";

pub fn ci(only: &[String]) -> Result<()> {
    for l in only {
        if !LAYERS.contains(&l.as_str()) {
            bail!("unknown layer `{l}`; the layers are {}", LAYERS.join(", "));
        }
    }
    let wanted = |l: &str| only.is_empty() || only.iter().any(|o| o == l);
    let t0 = Instant::now();
    let mut report = vec![];
    for layer in LAYERS {
        if !wanted(layer) {
            report.push(format!("{layer:>9}: not selected (--only)"));
            continue;
        }
        let t = Instant::now();
        let r = util::timed(&format!("layer {layer}"), || match layer {
            "fmt" => fmt(),
            "clippy" => clippy(),
            "test" => test(),
            "contract" => contract(),
            "nix" => nix::test(),
            // The debug build the test layer made: the stories check behaviour,
            // and a release build would add minutes (benchmarks use release).
            "vm" => vm_stories(&[], false),
            _ => unreachable!(),
        });
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok(()) => report.push(format!("{layer:>9}: ok ({secs:.0} s)")),
            Err(e) => {
                report.push(format!("{layer:>9}: FAILED ({secs:.0} s)"));
                print_report(&report, t0);
                return Err(e.context(format!("layer `{layer}` failed")));
            }
        }
    }
    print_report(&report, t0);
    Ok(())
}

fn print_report(report: &[String], t0: Instant) {
    eprintln!("\n== cargo xtask ci ==");
    for line in report {
        eprintln!("{line}");
    }
    eprintln!("    total: {:.0} s", t0.elapsed().as_secs_f64());
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(util::root());
    c
}

fn fmt() -> Result<()> {
    util::run(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs; run `cargo fmt --all`")
}

fn clippy() -> Result<()> {
    util::run(cargo().args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        // The contract test builds only with its feature; lint it too.
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> Result<()> {
    util::run(cargo().args(["test", "--locked", "--workspace"]))
}

/// Fetches the pinned @immich/sdk and checks our client, our fake server and
/// the queue names against its generated contract.
fn contract() -> Result<()> {
    let dir = immich_sdk()?;
    util::run(
        cargo()
            .args([
                "test",
                "--locked",
                "-p",
                "appliance",
                "--features",
                "contract",
                "--test",
                "immich_contract",
            ])
            .env("IMMICH_SDK_DIR", &dir),
    )
}

/// The unpacked @immich/sdk package, cached.
pub fn immich_sdk() -> Result<PathBuf> {
    let cache = util::cache_dir().join("npm");
    let unpacked = cache.join("immich-sdk-3.2.2/package");
    if unpacked.join("build/fetch-client.d.ts").exists() {
        return Ok(unpacked);
    }
    util::require(
        "npm",
        "install Node.js and npm (apt-get install nodejs npm)",
    )?;
    fs::create_dir_all(&cache)?;
    let out = util::output(
        Command::new("npm")
            .args(["pack", "--silent", IMMICH_SDK, "--pack-destination"])
            .arg(&cache),
    )
    .context("npm pack @immich/sdk (needs the npm registry)")?;
    let tgz = cache.join(out.lines().last().unwrap_or("").trim());
    let dest = cache.join("immich-sdk-3.2.2");
    fs::create_dir_all(&dest)?;
    util::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(&dest),
    )?;
    if !unpacked.join("build/fetch-client.d.ts").exists() {
        bail!("{IMMICH_SDK} has no build/fetch-client.d.ts; the package layout changed");
    }
    Ok(unpacked)
}

/// Binaries staged for the VM share: release builds (what users run), or
/// debug builds for quicker local iteration.
pub fn stage_binaries(release: bool, name: &str) -> Result<PathBuf> {
    let mut c = cargo();
    // The whole workspace's binaries: the same feature set as the other
    // layers' builds, so that switching between them rebuilds nothing.
    c.args(["build", "--locked", "--workspace", "--bins"]);
    if release {
        c.arg("--release");
    }
    util::run(&mut c)?;
    // Each user of the share has its own folder: a benchmark must not swap
    // the binaries under a story that is running.
    let share = util::target_dir().join(name);
    let _ = fs::remove_dir_all(&share);
    fs::create_dir_all(&share)?;
    let release = util::target_dir().join(if release { "release" } else { "debug" });
    for b in ["immich-server", "immich-throttle", "fake-immich"] {
        fs::copy(release.join(b), share.join(b)).with_context(|| format!("staging {b}"))?;
    }
    let rustic = rustic()?;
    fs::copy(&rustic, share.join("rustic")).context("staging rustic")?;
    Ok(share)
}

/// rustic, built from the crate registry once and cached. A lock makes a
/// second caller (the VM layer while .ci/run builds it in the background)
/// wait for the first instead of building it twice.
pub fn rustic() -> Result<PathBuf> {
    let root = util::cache_dir().join("rustic");
    let bin = root.join("bin/rustic");
    fs::create_dir_all(&root)?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("build.lock"))?;
    lock.lock().context("locking the rustic build")?;
    if bin.exists() {
        return Ok(bin);
    }
    util::timed("cargo install rustic-rs (cached afterwards)", || {
        util::run(
            cargo()
                .args([
                    "install",
                    "--locked",
                    "rustic-rs",
                    "--version",
                    RUSTIC_VERSION,
                ])
                // Only what the tests use; the backends (local, REST,
                // rclone, opendal) come with rustic_backend regardless.
                .args(["--no-default-features", "--root"])
                .arg(&root)
                .arg("--target-dir")
                .arg(root.join("target"))
                // A test tool, not a release: on CI's two cores this build
                // runs beside the Rust layers, and minutes saved there matter
                // more than rustic's speed on the stories' small libraries.
                .env("CARGO_PROFILE_RELEASE_LTO", "off")
                .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
                .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
                .env("CARGO_PROFILE_RELEASE_DEBUG", "false"),
        )
    })?;
    let _ = fs::remove_dir_all(root.join("target"));
    Ok(bin)
}

/// The rustic release the backup stories and benchmarks use.
pub const RUSTIC_VERSION: &str = "0.11.4";

pub fn vm_stories(names: &[String], release: bool) -> Result<()> {
    crate::require_root("the VM layer (debootstrap, chroot)")?;
    vm::check_host_tools()?;
    let all = vm::stories()?;
    for n in names {
        if !all.iter().any(|s| &s.name == n) {
            bail!(
                "no story `{n}`; the stories are: {}",
                all.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let chosen: Vec<&vm::Story> = all
        .iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .collect();
    let share = util::timed("build and stage the binaries", || {
        stage_binaries(release, "vm-share")
    })?;
    util::timed("VM image", || vm::image(false).map(|_| ()))?;
    let results = util::root().join("target/vm-results");
    let _ = fs::remove_dir_all(&results);
    let mut rows = vec![];
    let mut failed = vec![];
    for story in chosen {
        for bus in &story.buses {
            let label = format!("{}[{}]", story.name, bus.name());
            let out = results.join(&label);
            let mut o = vm::RunOptions::new(story.path.clone());
            o.bus = *bus;
            o.disk_size = story.disk_size.clone();
            o.disks = story.disks;
            o.timeout = story.timeout;
            o.mem_mb = story.mem_mb;
            o.cpu = story.cpu.clone();
            o.share = Some(share.clone());
            o.out = Some(out.clone());
            o.stream_console = false;
            eprintln!("==> story {label}");
            let r = vm::run(&o)?;
            let log = fs::read_to_string(out.join("test.log")).unwrap_or_default();
            let summary = fs::read_to_string(out.join("summary.txt")).unwrap_or_default();
            if r.code == 0 {
                print_checks(&log);
            } else {
                eprintln!(
                    "--- story output ({}):\n{log}",
                    out.join("test.log").display()
                );
                failed.push(label.clone());
            }
            rows.push(format!(
                "{label:<40} {:<6} {:>5.0} s  boot {:>4.0} s  {}",
                if r.code == 0 { "ok" } else { "FAILED" },
                r.elapsed.as_secs_f64(),
                r.boot_secs.unwrap_or(f64::NAN),
                summary.trim()
            ));
            eprintln!(
                "<== story {label}: exit {} in {:.0} s",
                r.code,
                r.elapsed.as_secs_f64()
            );
        }
    }
    let table = rows.join("\n");
    eprintln!(
        "\n== VM stories (logs in {}) ==\n{table}",
        results.display()
    );
    fs::create_dir_all(&results)?;
    fs::write(results.join("summary.txt"), format!("{table}\n"))?;
    if !failed.is_empty() {
        bail!("VM stories failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Echoes the PASS/FAIL lines and figures of a passing story, so the CI log
/// shows what was checked without the noise.
fn print_checks(log: &str) {
    for l in log.lines() {
        if l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("FIGURE ") {
            eprintln!("    {l}");
        }
    }
}
