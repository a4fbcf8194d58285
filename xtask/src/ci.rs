//! The layers of `cargo xtask ci`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{nix, util, vm};

pub const LAYERS: [&str; 6] = ["fmt", "clippy", "test", "contract", "nix", "vm"];

/// The features that put the tests' switches into the binaries: a cheap KDF
/// (`init --insecure-fast-kdf-for-tests`), `immich-throttle fake-sysfs` and
/// `run --without-quota`. The Nix package enables none of them.
pub const TEST_HOOKS: &str = "immich-server/test-hooks,immich-throttle/test-hooks";

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
    // The whole workspace's binaries, with the switches only tests use (the
    // library is built as the other layers build it; only the two binaries
    // differ).
    c.args(["build", "--locked", "--workspace", "--bins"]);
    c.args(["--features", TEST_HOOKS]);
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
    let times_file = util::cache_dir().join("vm/story-times.tsv");
    let queue = Mutex::new(schedule(
        &chosen,
        &fs::read_to_string(&times_file).unwrap_or_default(),
    ));
    let jobs = vm_jobs()?;
    // No more vCPUs than host cores in all: a TCG vCPU thread that waits
    // for a host core holds up the guest's other vCPU spinning on its lock.
    let host_cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cpus = (host_cores / jobs).clamp(1, 4) as u32;
    eprintln!(
        "vm: {} runs on {jobs} lane(s) of {cpus} vCPU(s) each, longest first",
        queue.lock().unwrap().len()
    );
    let done: Mutex<Vec<(String, vm::RunResult, String)>> = Mutex::new(vec![]);
    // Each lane takes the next run off the queue, longest first, so that
    // the lanes end close together.
    std::thread::scope(|scope| -> Result<()> {
        let lanes: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some((story, bus)) = queue.lock().unwrap().pop() else {
                            return Ok(());
                        };
                        let label = story.label(bus);
                        let out = results.join(&label);
                        let mut o = vm::RunOptions::new(story.path.clone());
                        o.bus = bus;
                        o.disk_size = story.disk_size.clone();
                        o.disks = story.disks;
                        o.timeout = story.timeout;
                        o.mem_mb = story.mem_mb;
                        o.cpu = story.cpu.clone();
                        o.cpus = cpus;
                        o.share = Some(share.clone());
                        o.out = Some(out.clone());
                        o.stream_console = false;
                        eprintln!("==> story {label}");
                        let r = vm::run(&o)?;
                        let log = fs::read_to_string(out.join("test.log")).unwrap_or_default();
                        // One story's lines together, not interleaved with the other lane's.
                        let mut text = String::new();
                        if r.code == 0 {
                            text.push_str(&checks(&log));
                        } else {
                            text.push_str(&format!(
                                "--- story output ({}):\n{log}\n",
                                out.join("test.log").display()
                            ));
                        }
                        text.push_str(&format!(
                            "<== story {label}: exit {} in {:.0} s\n",
                            r.code,
                            r.elapsed.as_secs_f64()
                        ));
                        eprint!("{text}");
                        done.lock()
                            .unwrap()
                            .push((label, r, out.display().to_string()));
                    }
                })
            })
            .collect();
        for l in lanes {
            l.join()
                .map_err(|_| anyhow::anyhow!("a VM lane panicked"))??;
        }
        Ok(())
    })?;
    let mut done = done.into_inner().unwrap();
    done.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rows = vec![];
    let mut failed = vec![];
    let mut times = String::new();
    for (label, r, out) in &done {
        let summary = fs::read_to_string(Path::new(out).join("summary.txt")).unwrap_or_default();
        if r.code != 0 {
            failed.push(label.clone());
        }
        times.push_str(&format!("{label}\t{:.0}\n", r.elapsed.as_secs_f64()));
        rows.push(format!(
            "{label:<40} {:<6} {:>5.0} s  boot {:>4.0} s  {}",
            if r.code == 0 { "ok" } else { "FAILED" },
            r.elapsed.as_secs_f64(),
            r.boot_secs.unwrap_or(f64::NAN),
            summary.trim()
        ));
    }
    // Only a full, green set of runs orders the next ones: a partial or red
    // run's times say little about the others.
    if failed.is_empty() && names.is_empty() {
        let _ = fs::write(&times_file, &times);
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

/// How many guests run at once: `IMMICH_VM_JOBS`, or one per two host
/// cores. Measured on this 2-core machine, two guests at once gain nothing:
/// TCG guests are CPU-bound (a story alone keeps 1.4 cores busy), and each
/// story took twice as long (41: 1010 s with one vCPU each, 1102 s with
/// two, against 467 s alone), so two cores get one lane.
fn vm_jobs() -> Result<usize> {
    match std::env::var("IMMICH_VM_JOBS") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => bail!("IMMICH_VM_JOBS must be a whole number of 1 or more, not `{v}`"),
        },
        Err(_) => Ok(std::thread::available_parallelism()
            .map(|n| (n.get() / 2).max(1))
            .unwrap_or(1)),
    }
}

/// The runs as a stack to pop from: the longest last (so popped first), by
/// the times of the last full green run; a run with no time yet counts by
/// its time limit, which is how long its author expected it might take.
fn schedule<'a>(stories: &[&'a vm::Story], last_times: &str) -> Vec<(&'a vm::Story, vm::Bus)> {
    let known: std::collections::HashMap<&str, f64> = last_times
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect();
    let mut runs: Vec<(f64, &vm::Story, vm::Bus)> = stories
        .iter()
        .flat_map(|s| {
            s.buses.iter().map(|b| {
                let label = s.label(*b);
                let guess = known
                    .get(label.as_str())
                    .copied()
                    .unwrap_or(s.timeout.as_secs_f64() / 3.0);
                (guess, *s, *b)
            })
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs.into_iter().map(|(_, s, b)| (s, b)).collect()
}

/// The PASS/FAIL lines and figures of a passing story, so the CI log shows
/// what was checked without the noise.
fn checks(log: &str) -> String {
    log.lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("FIGURE "))
        .map(|l| format!("    {l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn story(name: &str, buses: Vec<vm::Bus>, timeout: u64) -> vm::Story {
        vm::Story {
            path: PathBuf::from(format!("{name}.sh")),
            name: name.into(),
            buses,
            disk_size: "1G".into(),
            disks: 1,
            timeout: std::time::Duration::from_secs(timeout),
            mem_mb: 2048,
            cpu: "max".into(),
        }
    }

    #[test]
    fn the_longest_runs_are_taken_first() {
        let a = story("10-a", vec![vm::Bus::Virtio, vm::Bus::Usb], 900);
        let b = story("40-b", vec![vm::Bus::Virtio], 2400);
        let c = story("50-new", vec![vm::Bus::Virtio], 1200);
        let all = [&a, &b, &c];
        let label = |(s, bus): (&vm::Story, vm::Bus)| s.label(bus);
        // Last times known for all but the new story, which counts as a
        // third of its limit (400 s).
        let times = "10-a[virtio]\t100\n10-a[usb]\t500\n40-b[virtio]\t300\n";
        let mut q = schedule(&all, times);
        let mut order = vec![];
        while let Some(r) = q.pop() {
            order.push(label(r));
        }
        assert_eq!(
            order,
            [
                "10-a[usb]",
                "50-new[virtio]",
                "40-b[virtio]",
                "10-a[virtio]"
            ]
        );
        // With no times at all, the limits order them.
        let mut q = schedule(&all, "");
        assert_eq!(label(q.pop().unwrap()), "40-b[virtio]");
    }
}
