//! Benchmarks: they print figures and compare them with their targets; they
//! never pass or fail on timing. Ratios are measured against a baseline in
//! the same run, because the machines are noisy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{ci, util, vm};

pub const BENCHES: [&str; 6] = [
    "throttle-sim",
    "throttle-footprint",
    "start",
    "backup",
    "cipher",
    "size",
];

pub fn bench(name: &str, args: &[String]) -> Result<()> {
    match name {
        "throttle-sim" => throttle_sim(args),
        "throttle-footprint" => footprint(args),
        "start" => vm_bench("start", args, None),
        "backup" => vm_bench("backup", args, None),
        // The same guest with the CPU's AES instructions shown (as on a PC
        // or a Pi 5) and hidden (as on a Pi 4).
        "cipher" => {
            for cpu in ["max", "max,-aes"] {
                vm_bench("cipher", args, Some(cpu))?;
            }
            Ok(())
        }
        "size" => size(),
        _ => bail!(
            "no benchmark `{name}`; the benchmarks are: {}",
            BENCHES.join(", ")
        ),
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(util::root());
    c
}

fn release_bin(name: &str) -> PathBuf {
    util::target_dir().join("release").join(name)
}

/// The simulator on both scenario files, every policy in the same run.
fn throttle_sim(args: &[String]) -> Result<()> {
    util::run(cargo().args(["build", "--locked", "--release", "-p", "throttle-sim"]))?;
    let sim = release_bin("throttle-sim");
    for scenario in [
        "bench/throttle-official-case.toml",
        "bench/throttle-drain.toml",
    ] {
        eprintln!("\n== {scenario} ==");
        util::run(
            Command::new(&sim)
                .current_dir(util::root())
                .arg(scenario)
                .args(args),
        )?;
    }
    Ok(())
}

struct Sample {
    rss_kib: u64,
    cpu_ticks: u64,
}

/// (kB) RSS split into private anonymous memory and file-backed pages
/// (code of the binary and of shared libraries), and PSS.
fn memory_breakdown(pid: u32) -> Option<(u64, u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let pss = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some((field("RssAnon:")?, field("RssFile:")?, pss))
}

fn sample(pid: u32) -> Option<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field overall, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu_ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Sample { rss_kib, cpu_ticks })
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon for a few minutes at the default 2 s poll, against a sysfs
/// tree whose temperature swings through the control range and a fake
/// Immich with a backlog: peak RSS and CPU share. Without systemd on this
/// machine the daemon runs with `--without-quota` (no D-Bus calls); the VM
/// story 30-throttle runs it with them.
fn footprint(args: &[String]) -> Result<()> {
    let secs: u64 = match args.first() {
        Some(s) => s
            .parse()
            .context("the argument is the duration in seconds")?,
        None => 180,
    };
    util::run(cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        "immich-throttle",
        "-p",
        "fake-immich",
        "--features",
        crate::ci::TEST_HOOKS,
    ]))?;
    let dir = tempdir("footprint")?;
    let sys = dir.join("sys");
    util::run(
        Command::new(release_bin("immich-throttle"))
            .args(["fake-sysfs"])
            .arg(&sys)
            .args(["--temp-mc", "60000"]),
    )?;
    let key = "footprint-bench-key";
    let creds = dir.join("creds");
    fs::create_dir_all(&creds)?;
    fs::write(creds.join("immich_api-key"), key)?;
    let port = 24_000 + (std::process::id() % 1000) as u16;
    let cfg = dir.join("config.toml");
    fs::write(
        &cfg,
        format!(
            "[immich]\nurl = \"http://127.0.0.1:{port}\"\n\
             [throttle]\nsysfs-root = \"{s}\"\nstate-file = \"{d}/state.json\"\n\
             status-file = \"{d}/status.json\"\npause-switch-file = \"{d}/pause\"\n",
            s = sys.display(),
            d = dir.display()
        ),
    )?;
    let _fake = Kill(
        Command::new(release_bin("fake-immich"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--api-key", key])
            .args([
                "--backlog",
                "thumbnailGeneration=5000",
                "--backlog",
                "videoConversion=200",
                "--drain-per-sec",
                "2",
            ])
            .stderr(Stdio::null())
            .spawn()
            .context("starting fake-immich")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let daemon = Kill(
        Command::new(release_bin("immich-throttle"))
            .arg("--config")
            .arg(&cfg)
            .args(["-q", "run", "--without-quota"])
            .env("CREDENTIALS_DIRECTORY", &creds)
            .spawn()
            .context("starting immich-throttle")?,
    );
    let pid = daemon.0.id();
    let hz = 100.0; // USER_HZ on Linux
    eprintln!(
        "running immich-throttle (pid {pid}) for {secs} s at a 2 s poll; the SoC temperature swings 60-82 °C"
    );
    let temp = sys.join("class/thermal/thermal_zone0/temp");
    let t0 = Instant::now();
    let mut peak_rss = 0;
    let mut breakdown = None;
    let mut first: Option<(Instant, u64)> = None;
    let mut last = (t0, 0);
    while t0.elapsed() < Duration::from_secs(secs) {
        let t = t0.elapsed().as_secs_f64();
        // One swing every 2 minutes, through the setpoint and the ceiling.
        let c = 71.0 + 11.0 * (t * std::f64::consts::TAU / 120.0).sin();
        fs::write(&temp, format!("{}\n", (c * 1000.0) as i64))?;
        std::thread::sleep(Duration::from_secs(1));
        let Some(s) = sample(pid) else {
            bail!("immich-throttle exited early");
        };
        if s.rss_kib >= peak_rss {
            peak_rss = s.rss_kib;
            breakdown = memory_breakdown(pid);
        }
        // The first 10 s (start-up) are left out of the CPU share.
        if first.is_none() && t >= 10.0 {
            first = Some((Instant::now(), s.cpu_ticks));
        }
        last = (Instant::now(), s.cpu_ticks);
    }
    let (a, ticks0) = first.context("the run was shorter than the 10 s warm-up")?;
    let cpu_secs = (last.1 - ticks0) as f64 / hz;
    let wall = last.0.duration_since(a).as_secs_f64();
    let share = 100.0 * cpu_secs / wall;
    let status: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("status.json")).unwrap_or_default())
            .unwrap_or_default();
    println!("\n== immich-throttle footprint ({secs} s, 2 s poll) ==");
    println!(
        "peak RSS      {:>8.2} MiB   (target <= 4 MiB: {})",
        peak_rss as f64 / 1024.0,
        verdict(peak_rss as f64 / 1024.0 <= 4.0)
    );
    if let Some((anon, file, pss)) = breakdown {
        println!(
            "  of which   {:>8.2} MiB private (heap, stack) and {:.2} MiB file-backed code pages\n             \
             (the binary and shared libraries, shared with other processes); PSS {:.2} MiB",
            anon as f64 / 1024.0,
            file as f64 / 1024.0,
            pss as f64 / 1024.0
        );
    }
    println!(
        "CPU           {:>8.3} %     of one core over {wall:.0} s (target <= 0.2 %: {}; tick resolution {:.3} %)",
        share,
        verdict(share <= 0.2),
        100.0 / hz / wall
    );
    println!(
        "last status   mode {}, clock {} MHz, paused {}",
        status["mode"], status["clock_limit_mhz"], status["paused_queues"]
    );
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn tempdir(what: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("immich-bench-{what}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d)?;
    Ok(d)
}

/// A benchmark story in the VM with release binaries; its FIGURE lines are
/// printed as a table.
fn vm_bench(name: &str, args: &[String], cpu: Option<&str>) -> Result<()> {
    crate::require_root("the VM benchmarks")?;
    vm::check_host_tools()?;
    let story = vm::Story::load(&util::root().join(format!("tests/vm/bench/{name}.sh")))?;
    let share = util::timed("build and stage the release binaries", || {
        ci::stage_binaries(true, "bench-share")
    })?;
    vm::image(false)?;
    let out = util::root().join(format!("target/bench/{name}"));
    let _ = fs::remove_dir_all(&out);
    let mut o = vm::RunOptions::new(story.path.clone());
    o.bus = story.buses[0];
    o.disk_size = story.disk_size.clone();
    o.disks = story.disks;
    o.timeout = story.timeout;
    o.mem_mb = story.mem_mb;
    o.cpu = cpu.map_or_else(|| story.cpu.clone(), str::to_owned);
    o.share = Some(share);
    o.out = Some(out.clone());
    o.stream_console = false;
    o.args = args.to_vec();
    let r = vm::run(&o)?;
    let log = fs::read_to_string(out.join("test.log")).unwrap_or_default();
    println!(
        "\n== bench {name}, qemu -cpu {} (VM under TCG emulation; compare ratios, not absolute times) ==",
        o.cpu
    );
    for l in log.lines() {
        if let Some(f) = l.strip_prefix("FIGURE ") {
            println!("  {f}");
        }
    }
    if r.code != 0 {
        eprintln!("{log}");
        bail!(
            "the benchmark story failed (exit {}); log in {}",
            r.code,
            out.display()
        );
    }
    Ok(())
}

/// Sizes of the release binaries: the x86_64 ones, and the aarch64 ones the
/// SD card carries (target: 3 MiB each), cross-built with Debian's cross gcc
/// and libcryptsetup-dev:arm64.
fn size() -> Result<()> {
    let bins = ["immich-server", "immich-throttle"];
    let build = |target: Option<&str>| -> Result<()> {
        let mut c = cargo();
        c.args(["build", "--locked", "--release"]);
        for b in bins {
            c.args(["-p", b]);
        }
        if let Some(t) = target {
            c.args(["--target", t]);
            let triple = "aarch64-linux-gnu";
            c.env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                format!("{triple}-gcc"),
            )
            .env("PKG_CONFIG_ALLOW_CROSS", "1")
            .env("PKG_CONFIG_LIBDIR", format!("/usr/lib/{triple}/pkgconfig"))
            // bindgen parses libcryptsetup.h as the target sees it.
            .env(
                "BINDGEN_EXTRA_CLANG_ARGS",
                format!("--target={triple} -I/usr/{triple}/include -I/usr/include"),
            );
        }
        util::run(&mut c)
    };
    let print = |dir: PathBuf| -> Result<()> {
        for b in bins {
            let p = dir.join(b);
            let len = fs::metadata(&p)
                .with_context(|| format!("{}", p.display()))?
                .len();
            let mib = len as f64 / 1024.0 / 1024.0;
            let verdict = if mib <= 3.0 { "met" } else { "MISSED" };
            println!("  {b:<16} {mib:>6.2} MiB  (target <= 3 MiB: {verdict})");
        }
        Ok(())
    };

    build(None)?;
    println!("\n== release binaries, x86_64 (opt-level s, fat LTO, stripped) ==");
    print(util::target_dir().join("release"))?;

    let target = "aarch64-unknown-linux-gnu";
    let missing = cross_missing(target);
    if !missing.is_empty() {
        println!(
            "\n== aarch64: NOT MEASURED; missing {} ==\n  \
             rustup target add {target}; dpkg --add-architecture arm64; apt-get update; \
             apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross libcryptsetup-dev:arm64\n  \
             (or, with Nix: nix build .#packages.aarch64-linux.default)",
            missing.join(", ")
        );
        return Ok(());
    }
    build(Some(target))?;
    println!("\n== release binaries, aarch64 (what the SD card carries) ==");
    print(util::target_dir().join(target).join("release"))
}

/// What the aarch64 cross build lacks on this machine, if anything.
fn cross_missing(target: &str) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let has_std = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .map(|o| {
            o.status.success() && Path::new(String::from_utf8_lossy(&o.stdout).trim()).exists()
        })
        .unwrap_or(false);
    if !has_std {
        missing.push("the Rust standard library for aarch64");
    }
    if util::which("aarch64-linux-gnu-gcc").is_none() {
        missing.push("aarch64-linux-gnu-gcc");
    }
    if !Path::new("/usr/lib/aarch64-linux-gnu/pkgconfig/libcryptsetup.pc").exists() {
        missing.push("libcryptsetup-dev:arm64");
    }
    missing
}
