//! `immich-server`: the command users type after every reboot. A thin shell
//! over the `appliance` library: parse, set up logging, run the verb, print,
//! and exit with a documented code.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};
use appliance::config::{Config, ConfigError};
use appliance::exit::Exit;
use appliance::fs_tools::E2fsprogs;
use appliance::immich::Client;
use appliance::lifecycle::{self, Parts, Progress, StartOptions};
use appliance::luks::{Cryptsetup, Kdf};
use appliance::net::SystemAddresses;
use appliance::secret::Source;
use appliance::systemd::DbusSystemd;
use appliance::{host, init, status};
use clap::CommandFactory;

use cli::{Cli, Cmd, Verb};

/// Progress lines on stderr (the terminal), unless --quiet or --json.
struct Term {
    quiet: bool,
}

impl Progress for Term {
    fn step(&self, msg: &str) {
        tracing::info!("{msg}");
        if !self.quiet {
            eprintln!("==> {msg}");
        }
    }
    fn note(&self, msg: &str) {
        tracing::info!("{msg}");
        if !self.quiet {
            eprintln!("    {msg}");
        }
    }
}

/// An error with the exit code it maps to.
struct Fail(Exit, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(Exit::Failure, e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    appliance::logging::init(cli.verbosity());
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, e)) => {
            tracing::error!(exit = code.code(), "{e:#}");
            eprintln!("immich-server: error: {e:#}");
            ExitCode::from(code.code())
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, Fail> {
    Config::load_or_default(cli.global.config.as_deref())
        .map_err(|e: ConfigError| Fail(Exit::Config, e.into()))
}

fn need_root(what: &str) -> Result<(), Fail> {
    if host::is_root() {
        Ok(())
    } else {
        Err(Fail(
            Exit::NotRoot,
            anyhow::anyhow!(
                "{what} needs root, because it unlocks the drive and starts system services. Run it with sudo: `sudo immich-server {what}`"
            ),
        ))
    }
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let Some(verb) = cli.verb() else {
        let mut cmd = Cli::command();
        cmd.print_help().ok();
        return Err(Fail(
            Exit::Usage,
            anyhow::anyhow!("say what to do: --start, --stop or --status"),
        ));
    };
    let term = Term {
        quiet: cli.global.quiet || cli.global.json,
    };
    match verb {
        Verb::Start(args) => {
            need_root("--start")?;
            let cfg = load_config(cli)?;
            let _lock = lock(&cfg, &term)?;
            let seams = Seams::new(&cfg)?;
            let opts = StartOptions {
                device: args.immich_drive.clone(),
                no_decryption: args.no_decryption,
                passphrase: Source::from_arg(cli.global.passphrase_file.as_deref()),
            };
            match lifecycle::start(&cfg, &seams.parts(), &opts, &term) {
                Ok(r) => {
                    print_start(cli, args.timings, &r);
                    Ok(())
                }
                Err(f) => Err(Fail(f.exit(), anyhow::anyhow!("{f}"))),
            }
        }
        Verb::Stop => {
            need_root("--stop")?;
            let cfg = load_config(cli)?;
            let _lock = lock(&cfg, &term)?;
            let seams = Seams::new(&cfg)?;
            match lifecycle::stop(&cfg, &seams.parts(), &term) {
                Ok(r) => {
                    if cli.global.json {
                        println!("{}", serde_json::to_string_pretty(&r).expect("serialises"));
                    } else if r.already_stopped {
                        println!("Already stopped: the drive is locked and Immich is not running.");
                    } else {
                        println!(
                            "Immich is stopped and the drive is locked. It is safe to unplug it."
                        );
                    }
                    Ok(())
                }
                Err(f) => Err(Fail(f.exit(), anyhow::anyhow!("{f}"))),
            }
        }
        Verb::Status => {
            let cfg = load_config(cli)?;
            let seams = Seams::new(&cfg)?;
            let s = status::gather(&cfg, &seams.parts());
            if cli.global.json {
                println!("{}", serde_json::to_string_pretty(&s).expect("serialises"));
            } else {
                print!("{}", status::render(&s));
            }
            Ok(())
        }
        Verb::Other(cmd) => other(cli, cmd, &term),
    }
}

fn lock(cfg: &Config, term: &Term) -> Result<host::RunLock, Fail> {
    host::RunLock::acquire(&cfg.drive.lock_file, |holder| {
        let who = holder.map(|p| format!(" (pid {p})")).unwrap_or_default();
        term.note(&format!(
            "another immich-server run{who} is in progress; waiting for it to finish"
        ));
    })
    .with_context(|| format!("cannot take the lock {}", cfg.drive.lock_file.display()))
    .map_err(Fail::from)
}

/// The real implementations of the seams.
struct Seams {
    luks: Cryptsetup,
    systemd: DbusSystemd,
    fs: E2fsprogs,
    immich: Client,
    addresses: SystemAddresses,
}

impl Seams {
    fn new(cfg: &Config) -> Result<Seams, Fail> {
        Ok(Seams {
            luks: Cryptsetup,
            systemd: DbusSystemd::system(&cfg.tools.journalctl)
                .map_err(|e| Fail(Exit::Failure, e.into()))?,
            fs: E2fsprogs {
                e2fsck: cfg.tools.e2fsck.clone(),
                mkfs: cfg.tools.mkfs_ext4.clone(),
            },
            immich: Client::new(&cfg.immich.url, None, std::time::Duration::from_secs(3)),
            addresses: SystemAddresses {
                tailscale_cli: cfg.tools.tailscale.clone(),
            },
        })
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            luks: &self.luks,
            systemd: &self.systemd,
            fs: &self.fs,
            immich: &self.immich,
            addresses: &self.addresses,
        }
    }
}

fn print_start(cli: &Cli, timings: bool, r: &lifecycle::StartReport) {
    if cli.global.json {
        println!("{}", serde_json::to_string_pretty(r).expect("serialises"));
        return;
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if r.already_running {
        println!("Immich is running already; nothing to do.");
    } else {
        println!("Immich is running.");
    }
    let mut first = true;
    for u in r.urls.all() {
        println!("{} {u}", if first { "  Open:" } else { "       " });
        first = false;
    }
    if let Some(n) = &r.urls.tailscale_note {
        println!("  Tailscale: {n}");
    }
    if timings {
        println!("Timings:\n{}", r.timings.render());
    }
}

fn other(cli: &Cli, cmd: &Cmd, term: &Term) -> Result<(), Fail> {
    match cmd {
        Cmd::Init(a) => {
            need_root("init")?;
            let cfg = load_config(cli)?;
            let _lock = lock(&cfg, term)?;
            let survey =
                init::survey(&cfg, &a.immich_drive).map_err(|e| Fail(e.exit(), e.into()))?;
            println!("{}", survey.render());
            match (a.yes, a.force) {
                (true, true) => {}
                (false, false) => init::confirm_on_tty(&survey.device, &a.immich_drive)
                    .map_err(|e| Fail(e.exit(), e.into()))?,
                _ => return Err(Fail(Exit::Usage, init::InitError::HalfForced.into())),
            }
            let seams = Seams::new(&cfg)?;
            let opts = init::InitOptions {
                device: a.immich_drive.clone(),
                yes: a.yes,
                force: a.force,
                passphrase: Source::from_arg(cli.global.passphrase_file.as_deref()),
                kdf: if a.insecure_fast_kdf_for_tests {
                    Kdf::Argon2idFixedForTests
                } else {
                    Kdf::default()
                },
            };
            let r = init::prepare(
                &cfg,
                &seams.luks,
                &seams.fs,
                &seams.systemd,
                &survey,
                &opts,
                term,
            )
            .map_err(|e| Fail(e.exit(), e.into()))?;
            print!("{}", r.emergency_kit);
            println!(
                "\nThe drive is ready and locked again. Next: sudo immich-server --start\n(it is remembered by its LUKS UUID, so --immich-drive is not needed)"
            );
            Ok(())
        }
        Cmd::ShowConfig(a) => {
            let cfg = if a.defaults {
                Config::defaults()
            } else {
                load_config(cli)?
            };
            match &a.get {
                None => print!("{}", cfg.to_toml()),
                Some(key) => println!("{}", get_key(&cfg, key)?),
            }
            Ok(())
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "immich-server",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Man { out } => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            clap_mangen::generate_to(Cli::command(), out)
                .with_context(|| format!("writing man pages to {}", out.display()))?;
            Ok(())
        }
        Cmd::Start(_) | Cmd::Stop | Cmd::Status => unreachable!("handled as verbs"),
    }
}

/// One value of the effective config by dotted key.
fn get_key(cfg: &Config, key: &str) -> Result<String, Fail> {
    let mut v: toml::Value = toml::Value::try_from(cfg).context("serialising the config")?;
    for part in key.split('.') {
        v = v
            .get(part)
            .cloned()
            .ok_or_else(|| Fail(Exit::Config, anyhow::anyhow!("no config key `{key}`")))?;
    }
    Ok(match v {
        toml::Value::String(s) => s,
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        toml::Value::Table(t) => toml::to_string(&t).unwrap_or_default(),
        other => other.to_string(),
    })
}
