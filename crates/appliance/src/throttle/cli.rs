//! `immich-throttle`'s command line: keeps the Pi below firmware throttling
//! while Immich works through its backlog. The binary only calls [`main`].

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Fail, msg};
use crate::config::Config;
use crate::exit::Exit;
use crate::immich::{self, Client, ImmichApi};
use crate::sd_notify::{self, Notify};
use crate::systemd::{self, CpuQuota, DbusSystemd, Systemd};
use crate::throttle::daemon::{self, Daemon, Parts, Status};
use crate::throttle::sysfs::{self, Sysfs};
use crate::{host, secret};
use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Examples:
  What it is doing and why:          immich-throttle status
  Pause all heavy work now:           sudo immich-throttle pause-heavy
  Let it run again:                   sudo immich-throttle resume-heavy
  Give it an Immich API key (once):   sudo immich-throttle setup-api-key

It runs as the immich-throttle service; `run` and `restore` are for systemd.
Exit codes: 0 done, 1 failed, 2 bad command line, 5 not root, 8 invalid config.";

#[derive(Parser)]
#[command(name = "immich-throttle", version, about = "Keep the Pi below firmware throttling while Immich works", after_help = AFTER_HELP)]
struct Cli {
    /// Config file [default: /etc/immich-appliance/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// More detail (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the service's ExecStart)
    Run {
        /// Leave the CPU quota alone and do without systemd's bus (for the
        /// footprint benchmark on a machine without systemd)
        #[cfg(feature = "test-hooks")]
        #[arg(long, hide = true)]
        without_quota: bool,
    },
    /// Undo what a crashed or stopped daemon changed (the service's ExecStopPost)
    Restore,
    /// Temperature, setpoint, clock, quota, paused queues and why
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Pause all heavy Immich work now, until resume-heavy
    PauseHeavy,
    /// Let heavy work run again (under the throttler's control)
    ResumeHeavy,
    /// Create an Immich API key with only the permissions the throttler needs
    SetupApiKey {
        /// The Immich admin's email (asked for when missing)
        #[arg(long)]
        email: Option<String>,
        /// Read the admin's password from PATH, or - for stdin (default: ask on the terminal)
        #[arg(long, value_name = "PATH|-")]
        password_file: Option<PathBuf>,
    },
    /// Show the effective configuration
    ShowConfig,
    /// Write a fake Pi sysfs tree (thermal zone, cpufreq, get_throttled) for tests
    #[cfg(feature = "test-hooks")]
    #[command(hide = true)]
    FakeSysfs {
        dir: PathBuf,
        #[arg(long, default_value_t = 50_000)]
        temp_mc: i64,
        #[arg(long)]
        no_throttled: bool,
    },
}

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(if cli.quiet {
        -1
    } else {
        cli.verbose.min(2) as i8
    });
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, e)) => {
            crate::logging::fatal("immich-throttle", code.code(), &*e);
            ExitCode::from(code.code())
        }
    }
}

fn config(cli: &Cli) -> Result<Config, Fail> {
    Config::load_or_default(cli.config.as_deref()).map_err(|e| Fail(Exit::Config, e.into()))
}

fn need_root(what: &str) -> Result<(), Fail> {
    if host::is_root() {
        Ok(())
    } else {
        Err(Fail(
            Exit::NotRoot,
            msg(format!(
                "`immich-throttle {what}` needs root: sudo immich-throttle {what}"
            )),
        ))
    }
}

fn run(cli: &Cli) -> Result<(), Fail> {
    match &cli.cmd {
        #[cfg(feature = "test-hooks")]
        Cmd::Run { without_quota } => {
            need_root("run")?;
            let cfg = config(cli)?;
            daemon_main(&cfg, *without_quota)
        }
        #[cfg(not(feature = "test-hooks"))]
        Cmd::Run {} => {
            need_root("run")?;
            let cfg = config(cli)?;
            daemon_main(&cfg, false)
        }
        Cmd::Restore => {
            need_root("restore")?;
            let cfg = config(cli)?;
            restore_main(&cfg)
        }
        Cmd::Status { json } => {
            let cfg = config(cli)?;
            match std::fs::read_to_string(&cfg.throttle.status_file) {
                Ok(text) => {
                    let s: Status = serde_json::from_str(&text).map_err(|e| {
                        failed(format!(
                            "reading {}: {e}",
                            cfg.throttle.status_file.display()
                        ))
                    })?;
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&s).expect("serialises"));
                    } else {
                        print!("{}", render(&s));
                    }
                    Ok(())
                }
                Err(_) if *json => {
                    println!("{}", serde_json::json!({ "mode": "not-running" }));
                    Ok(())
                }
                Err(_) => {
                    println!(
                        "The throttler is not running (it runs while Immich does; start it with `sudo immich-server --start`)."
                    );
                    Ok(())
                }
            }
        }
        Cmd::PauseHeavy => {
            need_root("pause-heavy")?;
            let cfg = config(cli)?;
            host::write_atomic(
                &cfg.throttle.pause_switch_file,
                b"paused by the user\n",
                0o644,
            )
            .map_err(|e| {
                failed(format!(
                    "writing {}: {e}",
                    cfg.throttle.pause_switch_file.display()
                ))
            })?;
            println!(
                "Heavy work pauses within {} s, until `sudo immich-throttle resume-heavy` (or a reboot).",
                cfg.throttle.queue_loop_secs
            );
            Ok(())
        }
        Cmd::ResumeHeavy => {
            need_root("resume-heavy")?;
            let cfg = config(cli)?;
            match std::fs::remove_file(&cfg.throttle.pause_switch_file) {
                Ok(()) => println!("Heavy work resumes, under the throttler's control."),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("Heavy work was not paused by the switch.")
                }
                Err(e) => return Err(Fail(Exit::Failure, e.into())),
            }
            Ok(())
        }
        Cmd::SetupApiKey {
            email,
            password_file,
        } => {
            need_root("setup-api-key")?;
            let cfg = config(cli)?;
            setup_api_key(&cfg, email.clone(), password_file.as_deref())
        }
        Cmd::ShowConfig => {
            print!("{}", config(cli)?.to_toml());
            Ok(())
        }
        #[cfg(feature = "test-hooks")]
        Cmd::FakeSysfs {
            dir,
            temp_mc,
            no_throttled,
        } => {
            sysfs::write_fake_tree(dir, *temp_mc, !no_throttled)
                .map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
            Ok(())
        }
    }
}

fn sensors(cfg: &Config) -> Sysfs {
    Sysfs::new(
        &cfg.throttle.sysfs_root,
        &cfg.throttle.thermal_zone,
        &cfg.throttle.cpufreq_policy,
    )
}

fn immich_client(cfg: &Config) -> (Option<Arc<dyn ImmichApi + Send + Sync>>, Option<String>) {
    match daemon::api_key(cfg) {
        Ok(key) => (
            Some(Arc::new(Client::new(
                &cfg.immich.url,
                Some(key),
                Duration::from_secs(5),
            ))),
            None,
        ),
        Err(why) => (None, Some(why)),
    }
}

fn daemon_main(cfg: &Config, without_quota: bool) -> Result<(), Fail> {
    daemon::block_signals();
    let s = sensors(cfg);
    let dbus;
    let none = systemd::QuotaDisabled;
    let systemd: &dyn CpuQuota = if without_quota {
        tracing::warn!("--without-quota: the CPU quota is not used (benchmark mode)");
        &none
    } else {
        dbus = DbusSystemd::system(&cfg.tools.journalctl)?;
        &dbus
    };
    let (client, missing) = immich_client(cfg);
    let notify = sd_notify::Systemd::from_env();
    let parts = Parts {
        sensors: &s,
        cpufreq: &s,
        systemd,
        immich: client,
        immich_missing: missing,
        notify: &notify,
    };
    let mut d = Daemon::start(cfg, parts)
        .map_err(|e| Fail(Exit::Failure, msg(format!("cannot start: {e}"))))?;
    notify.notify("READY=1");
    tracing::info!(
        setpoint_c = cfg.throttle.setpoint_celsius,
        poll_secs = cfg.throttle.poll_secs,
        "immich-throttle started"
    );
    let poll = Duration::from_secs_f64(cfg.throttle.poll_secs);
    loop {
        d.tick();
        if daemon::wait_or_signal(poll) {
            break;
        }
    }
    tracing::info!("stopping: restoring the clock, the quota and the queues");
    d.shutdown();
    Ok(())
}

fn restore_main(cfg: &Config) -> Result<(), Fail> {
    let saved = daemon::load_saved(&cfg.throttle.state_file);
    if saved == daemon::Saved::default() {
        tracing::debug!("nothing to restore");
        return Ok(());
    }
    let s = sensors(cfg);
    let systemd = DbusSystemd::system(&cfg.tools.journalctl)?;
    let (client, missing) = immich_client(cfg);
    let notify = sd_notify::Systemd::default();
    let parts = Parts {
        sensors: &s,
        cpufreq: &s,
        systemd: &systemd,
        immich: client,
        immich_missing: missing,
        notify: &notify,
    };
    tracing::warn!("the throttler stopped without restoring; restoring now");
    let (left, held_hot) = daemon::restore_after_crash(cfg, &parts, &saved);
    if left == daemon::Saved::default() {
        let _ = std::fs::remove_file(&cfg.throttle.state_file);
        Ok(())
    } else if held_hot
        && left
            == (daemon::Saved {
                original_max_khz: left.original_max_khz,
                ..Default::default()
            })
    {
        // Only the clock, held at its floor while hot: the next start
        // finds its original limit in the state file.
        let text = serde_json::to_string_pretty(&left).expect("serialises");
        host::write_atomic(&cfg.throttle.state_file, text.as_bytes(), 0o644)?;
        Ok(())
    } else {
        let text = serde_json::to_string_pretty(&left).expect("serialises");
        host::write_atomic(&cfg.throttle.state_file, text.as_bytes(), 0o644)?;
        Err(Fail(
            Exit::Failure,
            msg(format!(
                "some changes could not be undone; they are kept in {} for the next start",
                cfg.throttle.state_file.display()
            )),
        ))
    }
}

fn render(s: &Status) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: String| o.push_str(&format!("{k:<14} {v}\n"));
    line("Mode:", format!("{} — {}", s.mode, s.reason));
    line(
        "Temperature:",
        format!(
            "{} (filtered {}), setpoint {:.1} °C, ceiling {:.1} °C",
            s.temperature_c
                .map(|t| format!("{t:.1} °C"))
                .unwrap_or_else(|| "unknown".into()),
            s.filtered_c
                .map(|t| format!("{t:.1} °C"))
                .unwrap_or_else(|| "-".into()),
            s.setpoint_c,
            s.ceiling_c
        ),
    );
    line(
        "Clock limit:",
        format!("{} of {} MHz", s.clock_limit_mhz, s.clock_max_mhz),
    );
    line(
        "CPU quota:",
        s.quota_percent
            .map(|q| format!("{q} % of one core on Immich"))
            .unwrap_or_else(|| "none".into()),
    );
    line(
        "Paused by it:",
        if s.paused_queues.is_empty() {
            "none".into()
        } else {
            s.paused_queues.join(", ")
        },
    );
    if !s.stepped_down.is_empty() {
        line("Stepped down:", s.stepped_down.join(", "));
    }
    if !s.paused_by_others.is_empty() {
        line(
            "Paused by you:",
            format!("{} (left alone)", s.paused_by_others.join(", ")),
        );
    }
    line("Immich API:", s.immich.clone());
    if let Some(b) = s.firmware_bits {
        let seen = sysfs::throttled_names(s.firmware_bits_seen);
        line(
            "Firmware:",
            format!(
                "{}{}",
                if b == 0 {
                    "no throttling".to_owned()
                } else {
                    sysfs::throttled_names(b).join(", ")
                },
                if seen.is_empty() {
                    String::new()
                } else {
                    format!("; seen since start: {}", seen.join(", "))
                }
            ),
        );
    }
    if let Some(b) = s.busy_percent {
        line("CPU busy:", format!("{b:.0} %"));
    }
    line("Updated:", s.updated.clone());
    o
}

fn setup_api_key(
    cfg: &Config,
    email: Option<String>,
    password_file: Option<&Path>,
) -> Result<(), Fail> {
    let dir = cfg.drive_path(&cfg.layout.throttle_key);
    if !cfg.drive.mount_point.join(&cfg.layout.marker).exists() {
        return Err(Fail(
            Exit::Failure,
            msg(
                "the drive is not unlocked; run `sudo immich-server --start` first (the key is stored on the drive)"
                    .into(),
            ),
        ));
    }
    let email = match email {
        Some(e) => e,
        None => prompt_line("Immich admin email: ")?,
    };
    let password = secret::read(
        &secret::Source::from_arg(password_file),
        &format!("Password for {email}: "),
    )?;
    let password =
        zeroize::Zeroizing::new(String::from_utf8_lossy(password.as_bytes()).into_owned());
    let client = Client::new(&cfg.immich.url, None, Duration::from_secs(15));
    let key = client
        .create_api_key(
            &email,
            &password,
            "immich-throttle (appliance)",
            &immich::THROTTLE_PERMISSIONS,
        )
        .map_err(|e| failed(format!("creating the API key: {e}")))?;
    drop(password);
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed(format!("creating {}: {e}", dir.display())))?;
    // One buffer of the exact size: a push that reallocates would leave a
    // copy of the key behind.
    let mut content = zeroize::Zeroizing::new(Vec::with_capacity(key.len() + 1));
    content.extend_from_slice(key.as_bytes());
    content.push(b'\n');
    host::write_atomic(&dir.join("api-key"), &content, 0o600)
        .map_err(|e| failed(format!("storing the API key: {e}")))?;
    println!(
        "Created an API key with only {} and stored it on the drive.",
        immich::THROTTLE_PERMISSIONS.join(", ")
    );
    let systemd = DbusSystemd::system(&cfg.tools.journalctl)?;
    let unit = cfg.units.throttle.as_str();
    if systemd.state(unit).map(|s| s.is_active()).unwrap_or(false) {
        systemd.stop(unit, Duration::from_secs(60))?;
        systemd.start(unit, Duration::from_secs(60))?;
        println!("Restarted {unit}; it now controls Immich's queues too.");
    }
    Ok(())
}

fn prompt_line(prompt: &str) -> Result<String, Fail> {
    use std::io::Write;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            Fail(
                Exit::Usage,
                msg(format!("no terminal to ask on ({e}); pass --email")),
            )
        })?;
    (&tty).write_all(prompt.as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    let line = line.trim().to_owned();
    if line.is_empty() {
        return Err(Fail(Exit::Usage, msg("no email given".into())));
    }
    Ok(line)
}

/// A failure of ours, exit 1.
fn failed(text: String) -> Fail {
    Fail(Exit::Failure, msg(text))
}
