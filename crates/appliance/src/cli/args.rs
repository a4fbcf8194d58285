//! The command line. The documented flag form (`--start --immich-drive
//! /dev/sda`) and the subcommands map to the same verbs.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

const ABOUT: &str =
    "Unlock the Immich appliance's encrypted drive and start Immich; stop it and lock the drive";

const AFTER_HELP: &str = "\
Examples:
  After every reboot, unlock the drive and start Immich:
    sudo immich-server --start --immich-drive /dev/sda
  The drive remembered by `init` is found by its LUKS UUID, so this is enough:
    sudo immich-server --start
  Stop Immich, unmount the drive and lock it (before unplugging it):
    sudo immich-server --stop
  What is running, and the URLs to open:
    immich-server --status          (or: immich-server status --json)
  Prepare a new drive (destroys what is on it):
    sudo immich-server init --immich-drive /dev/sda
  Unattended unlock, passphrase from a file or from stdin:
    sudo immich-server --start --passphrase-file /run/keys/drive
    printf '%s' \"$PW\" | sudo immich-server --start --passphrase-file -

It runs as root through sudo. The appliance's admin account has no password
(your SSH key is the login), so sudo asks for nothing; immich-server then asks
for the drive passphrase.

DEV may be /dev/sdX, a partition, or a /dev/disk/by-id, by-uuid or by-label link.
";

#[derive(Debug, Parser)]
#[command(
    name = "immich-server",
    version,
    about = ABOUT,
    after_help = format!("{AFTER_HELP}\n{}", crate::exit::help_table()),
    group(ArgGroup::new("verb").args(["start", "stop", "status"]))
)]
pub struct Cli {
    /// Unlock the drive, mount it and start PostgreSQL, Redis and Immich
    #[arg(long)]
    pub start: bool,
    /// Stop the services, unmount and lock the drive
    #[arg(long)]
    pub stop: bool,
    /// Show the drive, services, backups, temperature and URLs
    #[arg(long)]
    pub status: bool,

    #[command(flatten)]
    pub drive: DriveArgs,

    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DriveArgs {
    /// The drive to unlock (default: the one `init` remembered, by LUKS UUID)
    #[arg(long, value_name = "DEV")]
    pub immich_drive: Option<PathBuf>,
    /// The drive is unlocked already, or not encrypted at all
    #[arg(long)]
    pub no_decryption: bool,
    /// Print how long each step of --start took
    #[arg(long)]
    pub timings: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct Global {
    /// Config file [default: /etc/immich-appliance/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Read the passphrase from PATH, or from stdin with `-`, instead of the terminal
    #[arg(long, global = true, value_name = "PATH|-")]
    pub passphrase_file: Option<PathBuf>,
    /// Print a JSON report (status, start, stop)
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Fail at once (exit 6) when another run holds the lock, instead of waiting for it
    #[arg(long, global = true)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Unlock, mount and start (same as --start)
    Start(DriveArgs),
    /// Stop, unmount and lock (same as --stop)
    Stop,
    /// Show what is running (same as --status)
    Status,
    /// Prepare a new drive: LUKS2 + ext4, the layout and the secrets (destroys its contents)
    Init(InitArgs),
    /// Encrypted backups: run, check, drill, setup, status, snapshots
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Recover onto a new drive from the latest backup: restore, verify, start
    #[command(after_help = RESTORE_HELP)]
    Restore(RestoreArgs),
    /// Alerts to the owner's phone or e-mail: check now (what the timer runs), or send a test
    Alerts {
        #[command(subcommand)]
        cmd: AlertsCmd,
    },
    /// Measure the drive ciphers on this CPU and say which one init would choose (changes nothing)
    Ciphers,
    /// Show the effective configuration
    ShowConfig(ShowConfigArgs),
    /// Print shell completions
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Write the man pages
    Man {
        /// Directory to write immich-server.1 (and one page per subcommand) into
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

const RESTORE_HELP: &str = "\
Examples:
  Prepare the new drive, then restore the latest snapshot onto it:
    sudo immich-server init --immich-drive /dev/sda
    sudo immich-server restore --dry-run
    sudo immich-server restore
  The drive passphrase is asked first, then the repository and its password
  (from your emergency kit). docs/disaster-recovery.md walks through it.";

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Dump the database, back up, apply retention and check when due (what the timers run)
    Run,
    /// Check the repository now, reading a share of the stored data (all with --read-all)
    Check {
        #[arg(long)]
        read_all: bool,
    },
    /// Restore the latest snapshot into scratch space and verify files and database
    Drill,
    /// Set up the repository: where it is, its password and the backend's keys
    Setup(SetupArgs),
    /// The last backup, check and drill, and whether backups are healthy
    Status,
    /// List this appliance's snapshots
    Snapshots,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Tell each channel what changed since the last check (what the timer runs)
    Check,
    /// Send a test message through every configured channel
    Test,
    /// Store the SMTP password on the drive (asked without echo, or --passphrase-file)
    EmailPassword,
}

#[derive(Debug, Args, Clone, Default)]
pub struct AccessArgs {
    /// The rustic repository: opendal:b2, opendal:s3, rest:https://host:8000/immich or a path
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,
    /// Read the repository password from PATH, or stdin with `-` (default: ask on the terminal)
    #[arg(long, value_name = "PATH|-")]
    pub password_file: Option<PathBuf>,
    /// The backend's options (bucket, keys) as `key = value` lines (default: ask on the terminal)
    #[arg(long, value_name = "PATH")]
    pub options_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub access: AccessArgs,
    /// Use an existing repository (its password is asked) instead of creating one
    #[arg(long)]
    pub existing: bool,
    /// Replace the repository that is set up already
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The new drive (default: the one `init` remembered)
    #[arg(long, value_name = "DEV")]
    pub immich_drive: Option<PathBuf>,
    /// The snapshot to restore, by id or id prefix (default: the latest)
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Show what would be restored, and check access and space, without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Leave Immich stopped at the end
    #[arg(long)]
    pub no_start: bool,
    #[command(flatten)]
    pub access: AccessArgs,
}

impl Cmd {
    /// The subcommand as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Cmd::Backup { .. } => "backup",
            Cmd::Alerts { .. } => "alerts",
            Cmd::Ciphers => "ciphers",
            Cmd::Restore(_) => "restore",
            Cmd::Start(_) => "start",
            Cmd::Stop => "stop",
            Cmd::Status => "status",
            Cmd::Init(_) => "init",
            Cmd::ShowConfig(_) => "show-config",
            Cmd::Completions { .. } => "completions",
            Cmd::Man { .. } => "man",
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The drive to prepare
    #[arg(long, value_name = "DEV")]
    pub immich_drive: PathBuf,
    /// Do not ask for confirmation (needs --force too)
    #[arg(long)]
    pub yes: bool,
    /// Do not ask for confirmation (needs --yes too)
    #[arg(long)]
    pub force: bool,
    /// The cipher: auto (measure, and take Adiantum only on a CPU without AES instructions
    /// where it is faster), aes-xts-plain64, xchacha12,aes-adiantum-plain64 or
    /// xchacha20,aes-adiantum-plain64 [default: drive.cipher]
    #[arg(long, value_name = "CIPHER")]
    pub cipher: Option<String>,
    /// Cheap key derivation for the emulated test VM only; never use on a real drive
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub insecure_fast_kdf_for_tests: bool,
}

#[derive(Debug, Args)]
pub struct ShowConfigArgs {
    /// Print one value, e.g. drive.mount-point (lists print one item per line)
    #[arg(long, value_name = "KEY")]
    pub get: Option<String>,
    /// Ignore the config file: the built-in defaults
    #[arg(long)]
    pub defaults: bool,
}

/// The verb, whichever form was used.
#[derive(Debug)]
pub enum Verb<'a> {
    Start(&'a DriveArgs),
    Stop,
    Status,
    Other(&'a Cmd),
}

impl Cli {
    /// Parses the command line; exits with a usage error (code 2) on a
    /// contradiction.
    pub fn parse_args() -> Self {
        let cli = <Self as Parser>::parse();
        if let Err(e) = cli.check() {
            e.exit();
        }
        cli
    }

    /// The flag form and the subcommands are two spellings of one verb; mixing
    /// them is an error. (Global options such as --config go anywhere.)
    pub fn check(&self) -> Result<(), clap::Error> {
        let flags = [
            ("--start", self.start),
            ("--stop", self.stop),
            ("--status", self.status),
            ("--immich-drive", self.drive.immich_drive.is_some()),
            ("--no-decryption", self.drive.no_decryption),
            ("--timings", self.drive.timings),
        ];
        if let (Some(cmd), Some((flag, _))) = (&self.cmd, flags.iter().find(|(_, set)| *set)) {
            let name = cmd.name();
            let mut c = <Self as clap::CommandFactory>::command();
            return Err(c.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "{flag} cannot be combined with the `{name}` subcommand; use the flags alone \
                     (immich-server --start --immich-drive DEV) or the subcommand alone \
                     (immich-server start --immich-drive DEV)"
                ),
            ));
        }
        Ok(())
    }

    pub fn verb(&self) -> Option<Verb<'_>> {
        match &self.cmd {
            Some(Cmd::Start(a)) => Some(Verb::Start(a)),
            Some(Cmd::Stop) => Some(Verb::Stop),
            Some(Cmd::Status) => Some(Verb::Status),
            Some(other) => Some(Verb::Other(other)),
            None if self.start => Some(Verb::Start(&self.drive)),
            None if self.stop => Some(Verb::Stop),
            None if self.status => Some(Verb::Status),
            None => None,
        }
    }

    pub fn verbosity(&self) -> i8 {
        if self.global.quiet {
            -1
        } else {
            self.global.verbose.min(2) as i8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let c = Cli::try_parse_from(std::iter::once("immich-server").chain(args.iter().copied()))?;
        c.check()?;
        Ok(c)
    }

    /// The package Nix builds has no cheap KDF to reach by mistake: the
    /// test layer builds without `test-hooks`, the VM stories with it.
    #[test]
    fn the_cheap_kdf_exists_only_in_test_builds() {
        let r = parse(&[
            "init",
            "--immich-drive",
            "/dev/sda",
            "--insecure-fast-kdf-for-tests",
        ]);
        assert_eq!(r.is_ok(), cfg!(feature = "test-hooks"), "{r:?}");
    }

    #[test]
    fn the_documented_flag_form_parses_exactly() {
        let c = parse(&["--start", "--immich-drive", "/dev/sda"]).unwrap();
        match c.verb() {
            Some(Verb::Start(a)) => {
                assert_eq!(
                    a.immich_drive.as_deref(),
                    Some(std::path::Path::new("/dev/sda"))
                );
                assert!(!a.no_decryption);
            }
            other => panic!("{other:?}"),
        }
        let c = parse(&["--start", "--no-decryption"]).unwrap();
        assert!(matches!(c.verb(), Some(Verb::Start(a)) if a.no_decryption));
        assert!(matches!(
            parse(&["--stop"]).unwrap().verb(),
            Some(Verb::Stop)
        ));
        assert!(matches!(
            parse(&["--status", "--json"]).unwrap().verb(),
            Some(Verb::Status)
        ));
    }

    #[test]
    fn subcommands_mean_the_same() {
        let c = parse(&[
            "start",
            "--immich-drive",
            "/dev/disk/by-id/usb-x",
            "--passphrase-file",
            "-",
        ])
        .unwrap();
        assert!(matches!(c.verb(), Some(Verb::Start(_))));
        assert_eq!(
            c.global.passphrase_file.as_deref(),
            Some(std::path::Path::new("-"))
        );
        assert!(matches!(
            parse(&["status", "--json"]).unwrap().verb(),
            Some(Verb::Status)
        ));
    }

    #[test]
    fn contradictions_are_usage_errors() {
        assert!(parse(&["--start", "--stop"]).is_err());
        assert!(parse(&["--start", "stop"]).is_err());
        assert!(parse(&["--immich-drive", "/dev/sda", "init"]).is_err());
        assert!(parse(&["stop", "--start"]).is_err());
        assert!(parse(&["-v", "-q", "--status"]).is_err());
        assert!(parse(&["--immich-drive"]).is_err());
        assert!(parse(&["init"]).is_err(), "init needs the device");
    }

    #[test]
    fn help_has_examples_and_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("sudo immich-server --start --immich-drive /dev/sda"));
        assert!(help.contains("3  wrong passphrase"));
        Cli::command().debug_assert();
    }
}
