//! `cargo xtask`: the project's build, test and benchmark orchestration.
//!
//! `cargo xtask ci` is the one test command: formatting, clippy, unit and
//! integration tests, the API contract check, the Nix module tests and the VM
//! stories. A layer whose tool is missing fails with an install hint; no
//! layer is skipped silently.

mod bench;
mod ci;
mod nix;
mod util;
mod vm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test and benchmark the Immich appliance")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every test layer (the README's one test command)
    Ci {
        /// Run only these layers (fmt, clippy, test, contract, nix, vm); for local iteration
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// The VM test harness
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// Nix module unit tests (lib.evalModules on nixpkgs lib, offline)
    NixTest,
    /// Build rustic (for the backup stories) into the cache, once
    Rustic,
    /// Write docs/options.md from the NixOS modules
    OptionsDoc,
    /// Benchmarks that print figures (never pass/fail on timing)
    Bench {
        /// start | throttle-sim | throttle-footprint | backup | size-aarch64
        name: String,
        /// Extra arguments for the benchmark
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Build the guest image (cached by its inputs)
    Image {
        #[arg(long)]
        force: bool,
    },
    /// Boot a guest and run one story script in it
    Run {
        /// virtio or usb
        #[arg(long, default_value = "virtio")]
        bus: String,
        #[arg(long, default_value = "1G")]
        disk_size: String,
        #[arg(long, default_value_t = 1)]
        disks: usize,
        /// Host directory shared read-only at /mnt/share
        #[arg(long)]
        share: Option<PathBuf>,
        /// Copy the story's output, journal and console here
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Print the console only when the story fails
        #[arg(long)]
        quiet: bool,
        /// Boot the guest instead of restoring the saved booted one
        #[arg(long)]
        cold_boot: bool,
        story: PathBuf,
        args: Vec<String>,
    },
    /// Build the binaries and run the stories in tests/vm/stories (all, or those named)
    Test {
        /// Use debug builds (as `cargo xtask ci` does; the default is release)
        #[arg(long)]
        debug: bool,
        names: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Ci { only } => ci::ci(&only),
        Cmd::Vm { cmd } => vm_cmd(cmd),
        Cmd::NixTest => nix::test(),
        Cmd::Rustic => ci::rustic().map(|p| println!("{}", p.display())),
        Cmd::OptionsDoc => nix::write_options_doc(),
        Cmd::Bench { name, args } => bench::bench(&name, &args),
    };
    if let Err(e) = r {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn vm_cmd(cmd: VmCmd) -> Result<()> {
    match cmd {
        VmCmd::Image { force } => {
            vm::check_host_tools()?;
            println!("{}", vm::image(force)?.display());
            Ok(())
        }
        VmCmd::Run {
            bus,
            disk_size,
            disks,
            share,
            out,
            timeout,
            quiet,
            cold_boot,
            story,
            args,
        } => {
            let mut o = vm::RunOptions::new(story);
            o.bus = vm::Bus::parse(&bus)?;
            o.disk_size = disk_size;
            o.disks = disks;
            o.share = share;
            o.out = out;
            o.timeout = Duration::from_secs(timeout);
            o.stream_console = !quiet;
            o.args = args;
            o.restore = !cold_boot;
            let r = vm::run(&o)?;
            eprintln!(
                "vmtest: story exit status {} after {:.0} s (boot {:.0} s)",
                r.code,
                r.elapsed.as_secs_f64(),
                r.boot_secs.unwrap_or(f64::NAN)
            );
            std::process::exit(r.code);
        }
        VmCmd::Test { debug, names } => ci::vm_stories(&names, !debug),
    }
}

/// Fails unless running as root, with the reason.
pub fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{why} needs root; run it as root (CI does)");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
