//! `immich-server`'s verbs: the command users type after every reboot. It
//! parses (`args`), runs the verb through the library with the real seams,
//! prints, and maps every failure to a documented exit code; the binary
//! only calls [`main`].

mod alerts_cmd;
pub mod args;

use args as cli;

use std::process::ExitCode;

use crate::backup::db::PgTools;
use crate::backup::rustic::{Repo, RusticCli};
use crate::backup::{self, BackupError, HttpPinger, restore, setup};
use crate::config::{Config, ConfigError};
use crate::exit::Exit;
use crate::fs_tools::E2fsprogs;
use crate::immich::Client;
use crate::lifecycle::{self, Parts, Progress, StartOptions};
use crate::luks::{Cryptsetup, Kdf};
use crate::machine::ThisMachine;
use crate::net::SystemAddresses;
use crate::secret::Source;
use crate::systemd::DbusSystemd;
use crate::{host, init, status};
use clap::CommandFactory;
use std::io::{IsTerminal, Write};
use std::path::Path;

use cli::{BackupCmd, Cli, Cmd, Verb};

/// Progress lines on stderr (the terminal), unless --quiet or --json.
struct Term {
    quiet: bool,
}

// Progress is written with errors ignored, never with eprintln!, which
// panics when the terminal is gone: after a dropped SSH session (SIGHUP) the
// run must still reach its rollback.
impl Progress for Term {
    fn step(&self, msg: &str) {
        tracing::info!("{msg}");
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "==> {msg}");
        }
    }
    fn note(&self, msg: &str) {
        tracing::info!("{msg}");
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "    {msg}");
        }
    }
}

/// A boxed error, as the verbs report it.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error with the exit code it maps to.
pub(crate) struct Fail(pub(crate) Exit, pub(crate) BoxError);

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(Exit::Failure, Box::new(e))
    }
}

/// A message of our own as an error.
pub(crate) fn msg(text: String) -> BoxError {
    text.into()
}

/// Parses the command line, runs the verb and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_args();
    crate::logging::init(cli.verbosity());
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, e)) => {
            crate::logging::fatal("immich-server", code.code(), &*e);
            if cli.global.json {
                // A script that asked for JSON gets JSON on failure too.
                let v = serde_json::json!({
                    "schema_version": status::JSON_SCHEMA_VERSION,
                    "error": {
                        "exit": code.code(),
                        "message": crate::logging::error_text(&*e),
                    },
                });
                println!("{v}");
            }
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
            msg(format!(
                "{what} needs root, because it unlocks the drive and starts system services. Run it with sudo: `sudo immich-server {what}`"
            )),
        ))
    }
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let Some(verb) = cli.verb() else {
        let mut cmd = Cli::command();
        cmd.print_help().ok();
        return Err(Fail(
            Exit::Usage,
            msg("say what to do: --start, --stop or --status".into()),
        ));
    };
    let term = Term {
        quiet: cli.global.quiet || cli.global.json,
    };
    match verb {
        Verb::Start(args) => {
            need_root("--start")?;
            let cfg = load_config(cli)?;
            let _lock = lock(cli, &cfg, &term)?;
            let seams = Seams::new(&cfg)?;
            let opts = StartOptions {
                device: args.immich_drive.clone(),
                no_decryption: args.no_decryption,
                passphrase: Source::from_arg(cli.global.passphrase_file.as_deref()),
                start_units: true,
            };
            match lifecycle::start(&cfg, &seams.parts(), &opts, &term) {
                Ok(r) => {
                    print_start(cli, args.timings, &r);
                    Ok(())
                }
                Err(f) => Err(Fail(f.exit(), msg(format!("{f}")))),
            }
        }
        Verb::Stop => {
            need_root("--stop")?;
            let cfg = load_config(cli)?;
            let _lock = lock(cli, &cfg, &term)?;
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
                Err(f) => Err(Fail(f.exit(), msg(format!("{f}")))),
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
            if s.needs_owner {
                // Printed already; the code alone tells a monitor.
                let _ = std::io::stdout().flush();
                std::process::exit(Exit::Attention.code().into());
            }
            Ok(())
        }
        Verb::Other(cmd) => other(cli, cmd, &term),
    }
}

fn lock(cli: &Cli, cfg: &Config, term: &Term) -> Result<host::RunLock, Fail> {
    let wait =
        (!cli.global.no_wait).then(|| std::time::Duration::from_secs(cfg.drive.lock_wait_secs));
    host::RunLock::acquire(&cfg.drive.lock_file, wait, |holder| {
        let who = holder.map(|p| format!(" (pid {p})")).unwrap_or_default();
        term.note(&format!(
            "another immich-server run{who} is in progress; waiting for it to finish (at most {} s)",
            cfg.drive.lock_wait_secs
        ));
    })
    .map_err(|e| match e {
        host::LockError::Busy { .. } => Fail(Exit::Busy, e.into()),
        host::LockError::Io { .. } => Fail(Exit::Failure, e.into()),
    })
}

/// The real implementations of the seams.
struct Seams {
    luks: Cryptsetup,
    systemd: DbusSystemd,
    fs: E2fsprogs,
    immich: Client,
    addresses: SystemAddresses,
    machine: ThisMachine,
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
            machine: ThisMachine,
        })
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            luks: &self.luks,
            systemd: &self.systemd,
            fs: &self.fs,
            immich: &self.immich,
            addresses: &self.addresses,
            machine: &self.machine,
        }
    }
}

fn print_start(cli: &Cli, timings: bool, r: &lifecycle::StartReport) {
    if cli.global.json {
        println!("{}", serde_json::to_string_pretty(r).expect("serialises"));
        return;
    }
    for w in &r.warnings {
        let _ = writeln!(std::io::stderr(), "warning: {w}");
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
            let wanted = a.cipher.as_deref().unwrap_or(&cfg.drive.cipher);
            let cipher = match wanted {
                "auto" => None,
                name => Some(crate::cipher::by_name(name).ok_or_else(|| {
                    Fail(
                        Exit::Usage,
                        msg(format!(
                            "unknown cipher `{name}`: use auto, {}",
                            crate::cipher::KNOWN.map(|c| c.name()).join(", ")
                        )),
                    )
                })?),
            };
            let _lock = lock(cli, &cfg, term)?;
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
                kdf: kdf(a),
                cipher,
            };
            let r = init::prepare(&cfg, &seams.parts(), &survey, &opts, term)
                .map_err(|e| Fail(e.exit(), e.into()))?;
            print!("{}", r.emergency_kit);
            println!(
                "\nThe drive is ready and locked again. Next: sudo immich-server --start\n(it is remembered by its LUKS UUID, so --immich-drive is not needed)"
            );
            Ok(())
        }
        Cmd::Backup { cmd } => backup_cmd(cli, cmd, term),
        Cmd::Restore(a) => restore_cmd(cli, a, term),
        Cmd::Alerts { cmd } => {
            if !matches!(cmd, cli::AlertsCmd::Test) {
                need_root("alerts")?;
            }
            let cfg = load_config(cli)?;
            alerts_cmd::run(
                &cfg,
                cmd,
                &Source::from_arg(cli.global.passphrase_file.as_deref()),
                || Ok(status::gather(&cfg, &Seams::new(&cfg)?.parts())),
                term,
            )
        }
        Cmd::Ciphers => {
            let c = crate::cipher::survey(
                crate::cipher::this_cpu_has_aes(),
                &crate::cipher::Libcryptsetup,
            );
            if cli.global.json {
                println!("{}", serde_json::to_string_pretty(&c).expect("serialises"));
            } else {
                println!(
                    "AES instructions: {}
{}",
                    if c.cpu_has_aes { "yes" } else { "no" },
                    c.render().trim_end()
                );
            }
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
            std::fs::create_dir_all(out)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), out))
                .map_err(|e| {
                    Fail(
                        Exit::Failure,
                        msg(format!("writing man pages to {}: {e}", out.display())),
                    )
                })?;
            Ok(())
        }
        Cmd::Start(_) | Cmd::Stop | Cmd::Status => unreachable!("handled as verbs"),
    }
}

/// The real seams of the backup.
struct BackupSeams {
    repo: RusticCli,
    db: PgTools,
    systemd: DbusSystemd,
    pinger: HttpPinger,
}

impl BackupSeams {
    fn new(cfg: &Config) -> Result<BackupSeams, Fail> {
        let p = backup::Paths::new(cfg);
        Ok(BackupSeams {
            repo: rustic_cli(cfg, &p.profile, &p.cache),
            db: pg_tools(cfg),
            systemd: DbusSystemd::system(&cfg.tools.journalctl)
                .map_err(|e| Fail(Exit::Failure, e.into()))?,
            pinger: HttpPinger::default(),
        })
    }

    fn env<'a>(&'a self, cfg: &'a Config, term: &'a Term) -> backup::Env<'a> {
        backup::Env {
            cfg,
            repo: &self.repo,
            db: &self.db,
            systemd: &self.systemd,
            pinger: &self.pinger,
            progress: term,
        }
    }
}

fn rustic_cli(cfg: &Config, profile: &Path, cache: &Path) -> RusticCli {
    RusticCli {
        bin: cfg.tools.rustic.clone(),
        profile: profile.to_owned(),
        cache_dir: cache.to_owned(),
        label: cfg.backup.label.clone(),
        progress_every: std::time::Duration::from_secs(cfg.backup.progress_every_secs),
    }
}

/// The KDF `init` uses: the real one, unless a test build asks for the
/// cheap one (`test-hooks`, which the Nix package never enables).
fn kdf(a: &cli::InitArgs) -> Kdf {
    #[cfg(feature = "test-hooks")]
    if a.insecure_fast_kdf_for_tests {
        return Kdf::Argon2idFixedForTests;
    }
    let _ = a;
    Kdf::default()
}

fn pg_tools(cfg: &Config) -> PgTools {
    PgTools {
        pg_dump: cfg.tools.pg_dump.clone(),
        pg_restore: cfg.tools.pg_restore.clone(),
        psql: cfg.tools.psql.clone(),
        superuser: cfg.backup.db_superuser.clone(),
    }
}

fn backup_fail(e: BackupError) -> Fail {
    let code = match &e {
        BackupError::DriveLocked(_) => Exit::Drive,
        _ => Exit::Backup,
    };
    Fail(code, e.into())
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialises"));
}

fn backup_cmd(cli: &Cli, cmd: &BackupCmd, term: &Term) -> Result<(), Fail> {
    let cfg = load_config(cli)?;
    if !matches!(cmd, BackupCmd::Status) {
        need_root("backup")?;
    }
    match cmd {
        BackupCmd::Run => {
            let seams = BackupSeams::new(&cfg)?;
            match backup::run(&seams.env(&cfg, term)).map_err(backup_fail)? {
                None => {
                    if cli.global.json {
                        print_json(&serde_json::json!({"skipped": "drive locked"}));
                    } else {
                        println!("Skipped: the drive is locked.");
                    }
                }
                Some(r) if cli.global.json => print_json(&r),
                Some(r) => {
                    println!(
                        "Backup done: {} in {:.0} s (dump {:.1} s, backup {:.1} s, retention {:.1} s).",
                        r.backup.message,
                        r.backup.duration_secs,
                        r.dump_secs,
                        r.backup_secs,
                        r.forget_secs
                    );
                    if let Some(b) = r.backup.bytes_added {
                        println!("  New data sent: {}.", backup::human_bytes(b));
                    }
                    if let Some(c) = &r.check {
                        println!("Repository check: {}.", c.message);
                    }
                }
            }
            Ok(())
        }
        BackupCmd::Check { read_all } => {
            let seams = BackupSeams::new(&cfg)?;
            let r = backup::check(&seams.env(&cfg, term), *read_all).map_err(backup_fail)?;
            if cli.global.json {
                print_json(&r);
            } else {
                println!("Repository check passed: {}.", r.message);
            }
            Ok(())
        }
        BackupCmd::Drill => {
            let seams = BackupSeams::new(&cfg)?;
            match backup::drill::drill(&seams.env(&cfg, term)).map_err(backup_fail)? {
                None => println!("Skipped: the drive is locked."),
                Some(r) if cli.global.json => print_json(&r),
                Some(r) => println!("Restore drill passed: {}.", r.message),
            }
            Ok(())
        }
        BackupCmd::Setup(a) => {
            let opts = setup::SetupOptions {
                access: access_args(&a.access),
                existing: a.existing,
                force: a.force,
            };
            let make = |profile: &Path| -> Box<dyn Repo> {
                let p = backup::Paths::new(&cfg);
                Box::new(rustic_cli(&cfg, profile, &p.cache))
            };
            let r = setup::setup(&cfg, &opts, &setup::Tty, &make).map_err(backup_fail)?;
            print!("{}", setup_kit(&r));
            Ok(())
        }
        BackupCmd::Status => {
            let b = status::backup_status(&cfg, backup::drive_ready(&cfg));
            if cli.global.json {
                print_json(&b);
            } else {
                print!("{}", status::render_backup(&b));
            }
            Ok(())
        }
        BackupCmd::Snapshots => {
            let seams = BackupSeams::new(&cfg)?;
            let snaps = backup::snapshots(&seams.env(&cfg, term)).map_err(backup_fail)?;
            if cli.global.json {
                print_json(&snaps);
            } else if snaps.is_empty() {
                println!("No snapshots yet.");
            } else {
                for s in &snaps {
                    let sum = s.summary.clone().unwrap_or_default();
                    println!(
                        "{}  {}  {:>7} files  {:>10}  {}",
                        backup::short(&s.id),
                        s.time,
                        sum.total_files_processed,
                        backup::human_bytes(sum.total_bytes_processed),
                        s.tags.join(",")
                    );
                }
            }
            Ok(())
        }
    }
}

fn access_args(a: &cli::AccessArgs) -> setup::AccessArgs {
    setup::AccessArgs {
        repository: a.repository.clone(),
        password: a.password_file.clone(),
        options_file: a.options_file.clone(),
    }
}

/// The backup half of the emergency kit, shown once.
fn setup_kit(r: &setup::SetupReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} the backup repository {}.",
        if r.created { "Created" } else { "Connected to" },
        r.repository
    );
    if !r.created {
        let _ = writeln!(s, "It holds {} snapshot(s) of this appliance.", r.snapshots);
    }
    let _ = writeln!(
        s,
        "\n================ EMERGENCY KIT: BACKUPS ================\n\
         Store these in your password manager now. If this drive dies, they are\n\
         the only way to get your photos back from the backup:"
    );
    let _ = writeln!(s, "  Repository:           {}", r.repository);
    match &r.generated_password {
        None if r.password_from_kit => {
            let _ = writeln!(
                s,
                "  Repository password:  the backup password in the drive's emergency kit (from init)"
            );
        }
        Some(p) => {
            let _ = writeln!(
                s,
                "  Repository password:  {}",
                String::from_utf8_lossy(p.as_bytes())
            );
        }
        None => {
            let _ = writeln!(s, "  Repository password:  (the one you gave)");
        }
    }
    if !r.option_names.is_empty() {
        let _ = writeln!(
            s,
            "  Backend options:      {} (with their values, e.g. the bucket and keys)",
            r.option_names.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "Without the repository password nobody can read the backups, including you.\n\
         ========================================================\n\
         Backups now run every night and after each unlock. Check them with\n\
         `immich-server backup status`; test a restore with `sudo immich-server backup drill`."
    );
    s
}

fn restore_cmd(cli: &Cli, a: &cli::RestoreArgs, term: &Term) -> Result<(), Fail> {
    need_root("restore")?;
    let cfg = load_config(cli)?;
    if cli.global.passphrase_file.as_deref() == Some(Path::new("-"))
        && a.access.password_file.as_deref() == Some(Path::new("-"))
    {
        return Err(Fail(
            Exit::Usage,
            msg(
                "--passphrase-file - and --password-file - cannot both read stdin; give one of them a file"
                    .into(),
            ),
        ));
    }
    let _lock = lock(cli, &cfg, term)?;
    let seams = Seams::new(&cfg)?;
    let parts = seams.parts();
    let db = pg_tools(&cfg);
    let make = |profile: &Path, cache: &Path| -> Box<dyn Repo> {
        Box::new(rustic_cli(&cfg, profile, cache))
    };
    let env = restore::RestoreEnv {
        cfg: &cfg,
        parts: &parts,
        db: &db,
        ask: &setup::Tty,
        make_repo: &make,
        progress: term,
    };
    let opts = restore::RestoreOptions {
        start: StartOptions {
            device: a.immich_drive.clone(),
            no_decryption: false,
            passphrase: Source::from_arg(cli.global.passphrase_file.as_deref()),
            start_units: true,
        },
        access: access_args(&a.access),
        snapshot: a.snapshot.clone(),
        dry_run: a.dry_run,
        start_after: !a.no_start,
        progress_bar: !cli.global.quiet && !cli.global.json && std::io::stderr().is_terminal(),
    };
    match restore::restore(&env, &opts) {
        Ok(r) if cli.global.json => {
            print_json(&r);
            Ok(())
        }
        Ok(r) if r.dry_run => {
            println!("Dry run: nothing was changed. A restore would:");
            for step in &r.plan {
                println!("  - {step}");
            }
            Ok(())
        }
        Ok(r) => {
            println!(
                "Restored snapshot {} ({}): {} files ({}) and {} tables ({} rows), all verified.",
                backup::short(&r.snapshot),
                r.snapshot_time,
                r.files,
                backup::human_bytes(r.bytes),
                r.tables,
                r.rows
            );
            if r.access_written {
                println!(
                    "Backups continue to the same repository, with its password (the backup password\n\
                     shown by `init` for this drive is no longer used: keep the repository's)."
                );
            }
            if r.started {
                println!("Immich is running.");
                for u in r.urls.all() {
                    println!("  Open: {u}");
                }
            } else {
                println!(
                    "Immich is stopped (--no-start). Start it with: sudo immich-server --start"
                );
            }
            Ok(())
        }
        Err(restore::RestoreError::Start(f)) => Err(Fail(f.exit(), msg(format!("{f}")))),
        Err(e) => Err(Fail(Exit::Backup, msg(format!("{e}")))),
    }
}

/// One value of the effective config by dotted key.
fn get_key(cfg: &Config, key: &str) -> Result<String, Fail> {
    let mut v: toml::Value = toml::Value::try_from(cfg)
        .map_err(|e| Fail(Exit::Failure, msg(format!("serialising the config: {e}"))))?;
    for part in key.split('.') {
        v = v
            .get(part)
            .cloned()
            .ok_or_else(|| Fail(Exit::Config, msg(format!("no config key `{key}`"))))?;
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
