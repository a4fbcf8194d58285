//! `start` and `stop`: unlock, check, mount, verify, start the stack in
//! order and wait for Immich; or stop it in reverse, sync, unmount, lock.
//!
//! Every step is idempotent, and a failed `start` undoes exactly what it did,
//! in reverse order, so nothing is left half-up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::blockdev::{self, BlockDevice, DeviceError};
use crate::config::Config;
use crate::drive::{self, DriveError};
use crate::exit::Exit;
use crate::fs_tools::{Filesystem, FsError};
use crate::host::{self, Holder};
use crate::immich::ImmichApi;
use crate::interrupt::{self, Interrupted};
use crate::layout::{LayoutError, LayoutReport};
use crate::luks::{Luks, LuksError};
use crate::machine::Machine;
use crate::net::{self, AddressSource, Urls};
use crate::secret::{self, SecretError, Source};
use crate::systemd::{self, MountSpec, Systemd, UnitError};

/// The seams `start`, `stop` and `status` work through.
pub struct Parts<'a> {
    pub luks: &'a dyn Luks,
    pub systemd: &'a dyn Systemd,
    pub fs: &'a dyn Filesystem,
    pub immich: &'a dyn ImmichApi,
    pub addresses: &'a dyn AddressSource,
    pub machine: &'a dyn Machine,
}

impl std::fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parts")
    }
}

/// Where progress goes: the terminal (stderr) and the log.
pub trait Progress {
    fn step(&self, msg: &str);
    fn note(&self, msg: &str);
}

#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Luks(#[from] LuksError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(
        "the drive under /dev/mapper/{mapper} is gone (unplugged while unlocked). Run `sudo immich-server --stop` to clean up, plug the drive back in, then start again"
    )]
    DriveGone { mapper: String },
    #[error(
        "another drive, {other}, is unlocked as /dev/mapper/{mapper}; stop it first with `sudo immich-server --stop`"
    )]
    OtherDriveOpen { mapper: String, other: PathBuf },
    #[error("{0} is in use: {1}. Unmount it or stop what uses it first")]
    InUse(PathBuf, String),
    #[error("{0} is encrypted (LUKS); leave out --no-decryption so that it is unlocked first")]
    EncryptedButNoDecryption(PathBuf),
    #[error(
        "--no-decryption needs --immich-drive for an unencrypted drive, or a drive unlocked already"
    )]
    NoDecryptionWithoutDevice,
    #[error(
        "the mount point {0} on the SD card is not empty: something wrote there while the drive was not mounted. Move those files away (they may be private), then start again"
    )]
    MountPointNotEmpty(PathBuf),
    #[error("{what} is mounted at {point}, not the appliance drive; unmount it first")]
    ForeignMount { what: String, point: PathBuf },
    #[error("{0}")]
    Other(String),
    #[error(
        "the drive is full ({free} free of {total}), and that is the likely cause: PostgreSQL and Immich cannot start without free space. {inner}\nNothing was lost. To go on, free space on it (docs/after-a-reboot.md, \"The drive is full\") or restore the backup onto a larger drive (docs/disaster-recovery.md, part A)",
        free = crate::units::human_bytes(space.free_bytes),
        total = crate::units::human_bytes(space.total_bytes)
    )]
    DriveFull {
        space: host::Space,
        inner: Box<Cause>,
    },
    #[error("Immich did not answer {url}/api/server/ping within {secs} s{tail}", tail = fmt_tail(journal))]
    ImmichTimeout {
        url: String,
        secs: u64,
        journal: String,
    },
    #[error(
        "a backup, check, drill or restore is still running{} and did not finish within {secs} s; nothing more was stopped. Let it finish, then run `sudo immich-server --stop` again",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    BackupRunning { pid: Option<u32>, secs: u64 },
    #[error("{mount} is busy, so it stays mounted. Close these, then run stop again:\n{list}", list = holders_list(holders))]
    Busy {
        mount: PathBuf,
        holders: Vec<Holder>,
    },
}

fn fmt_tail(journal: &str) -> String {
    if journal.trim().is_empty() {
        String::new()
    } else {
        format!("; the server's journal ends with:\n{journal}")
    }
}

fn holders_list(h: &[Holder]) -> String {
    if h.is_empty() {
        return "  (no process found; a kernel user such as a loop device or swap file may hold it)".into();
    }
    h.iter()
        .map(|h| format!("  {h}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Cause {
    pub fn exit(&self) -> Exit {
        match self {
            Cause::Secret(SecretError::NoTty) => Exit::Failure,
            Cause::Luks(LuksError::WrongPassphrase(_)) => Exit::WrongPassphrase,
            Cause::Luks(LuksError::NotLuks(_))
            | Cause::Drive(_)
            | Cause::Device(_)
            | Cause::DriveGone { .. }
            | Cause::OtherDriveOpen { .. }
            | Cause::InUse(..)
            | Cause::EncryptedButNoDecryption(_)
            | Cause::NoDecryptionWithoutDevice
            | Cause::MountPointNotEmpty(_)
            | Cause::ForeignMount { .. }
            | Cause::Layout(LayoutError::NotOurDrive { .. }) => Exit::Drive,
            Cause::Luks(LuksError::Busy(_)) | Cause::Busy { .. } | Cause::BackupRunning { .. } => {
                Exit::Busy
            }
            Cause::Unit(_) => Exit::Unit,
            Cause::ImmichTimeout { .. } => Exit::Immich,
            Cause::DriveFull { .. } => Exit::Drive,
            Cause::Interrupted(_) => Exit::Interrupted,
            _ => Exit::Failure,
        }
    }
}

/// A failed verb: the cause, and what was undone.
#[derive(Debug)]
pub struct Failure {
    pub cause: Cause,
    pub undone: Vec<String>,
    pub undo_failed: Vec<String>,
}

impl std::error::Error for Failure {}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.cause)?;
        if !self.undone.is_empty() {
            write!(f, "\nRolled back: {}.", self.undone.join(", "))?;
        }
        for u in &self.undo_failed {
            write!(f, "\nCould not roll back: {u}")?;
        }
        Ok(())
    }
}

impl Failure {
    pub fn exit(&self) -> Exit {
        self.cause.exit()
    }
}

impl From<Cause> for Failure {
    fn from(cause: Cause) -> Self {
        Failure {
            cause,
            undone: vec![],
            undo_failed: vec![],
        }
    }
}

/// Durations of the steps of one run, for `--timings` and the benchmark.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Timings {
    pub steps: Vec<(String, f64)>,
    pub total_secs: f64,
}

impl Timings {
    fn add(&mut self, name: impl Into<String>, since: Instant) {
        self.steps
            .push((name.into(), since.elapsed().as_secs_f64()));
    }

    fn sum(&self, pred: impl Fn(&str) -> bool) -> f64 {
        self.steps
            .iter()
            .filter(|(n, _)| pred(n))
            .map(|(_, s)| s)
            .sum()
    }

    /// Time that is neither the key derivation, waiting for a person, the
    /// services' own start-up, nor Immich getting ready: the orchestration's
    /// own cost.
    pub fn overhead_secs(&self) -> f64 {
        let excluded = self.sum(|n| {
            n == "unlock (KDF)"
                || n == "passphrase input"
                || n.starts_with("unit ")
                || n == "Immich ping"
                || n == "fsck"
        });
        self.total_secs - excluded
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for (n, secs) in &self.steps {
            s.push_str(&format!("  {n:<40} {:>9.1} ms\n", secs * 1000.0));
        }
        s.push_str(&format!(
            "  {:<40} {:>9.1} ms\n",
            "total",
            self.total_secs * 1000.0
        ));
        s.push_str(&format!(
            "  {:<40} {:>9.1} ms\n",
            "overhead (total - KDF - input - units - ping)",
            self.overhead_secs() * 1000.0
        ));
        s
    }
}

#[derive(Debug, Clone)]
pub struct StartOptions {
    pub device: Option<PathBuf>,
    pub no_decryption: bool,
    pub passphrase: Source,
    /// false: unlock, mount and check the layout only (restore uses this to
    /// fill the drive before anything runs on it).
    pub start_units: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct StartReport {
    pub already_running: bool,
    pub device: Option<PathBuf>,
    pub started_units: Vec<String>,
    pub layout: LayoutReport,
    pub warnings: Vec<String>,
    pub urls: Urls,
    pub timings: Timings,
}

/// What this run changed, to be undone on failure (in reverse).
#[derive(Debug, Default)]
struct Undo {
    opened: bool,
    /// Set when this run made the drive the remembered one: what the file
    /// said before (None: there was no file).
    remembered_before: Option<Option<drive::Remembered>>,
    mounted: bool,
    started: Vec<String>,
}

// A Failure is returned once per run and printed; its size does not matter.
#[allow(clippy::result_large_err)]
pub fn start(
    cfg: &Config,
    parts: &Parts,
    opts: &StartOptions,
    progress: &dyn Progress,
) -> Result<StartReport, Failure> {
    let t0 = Instant::now();
    let mut report = StartReport::default();
    let mut undo = Undo::default();
    match start_steps(cfg, parts, opts, progress, &mut report, &mut undo) {
        Ok(()) => {
            report.timings.total_secs = t0.elapsed().as_secs_f64();
            Ok(report)
        }
        Err(cause) => {
            let cause = name_a_full_drive(cfg, parts.machine, cause);
            // The binary prints the cause once; this is the log's record of it.
            tracing::info!(error = %cause, "start failed; rolling back");
            let (undone, undo_failed) = rollback(cfg, parts, &undo, progress);
            Err(Failure {
                cause,
                undone,
                undo_failed,
            })
        }
    }
}

fn start_steps(
    cfg: &Config,
    parts: &Parts,
    opts: &StartOptions,
    progress: &dyn Progress,
    report: &mut StartReport,
    undo: &mut Undo,
) -> Result<(), Cause> {
    let mapper = &cfg.drive.mapper_name;
    let t = Instant::now();
    let mapping = parts.luks.mapping(mapper)?;
    let mounts = parts.machine.mounts();
    let mounted = blockdev::mounts_at(&mounts, &cfg.drive.mount_point)
        .last()
        .cloned()
        .cloned();
    report.timings.add("inspect", t);

    // Already up: report and change nothing.
    if mounted.is_some() && opts.start_units {
        let t = Instant::now();
        let mut all_active = true;
        for u in &cfg.units.stack {
            all_active &= parts
                .systemd
                .state(u)
                .map(|s| s.is_active())
                .unwrap_or(false);
        }
        report.timings.add("unit states", t);
        if all_active && (mapping.is_some() || opts.no_decryption) {
            report.already_running = true;
            report.device = mapping.as_ref().map(|m| m.device.clone());
            report.urls = net::urls(cfg, parts.addresses);
            return Ok(());
        }
    }

    // 1. The device, unlocked.
    let (fs_device, backing): (PathBuf, Option<BlockDevice>) = if let Some(m) = &mapping {
        if parts.machine.device_number(&m.device).is_none() {
            return Err(Cause::DriveGone {
                mapper: mapper.clone(),
            });
        }
        let backing = parts.machine.resolve(&m.device)?;
        if let Some(given) = &opts.device {
            let want = parts.machine.resolve(given)?;
            if want.name != backing.name && want.name != backing.disk {
                return Err(Cause::OtherDriveOpen {
                    mapper: mapper.clone(),
                    other: backing.path.clone(),
                });
            }
        }
        progress.note(&format!("{} is unlocked already", backing.path.display()));
        (cfg.mapper_path(), Some(backing))
    } else if opts.no_decryption {
        let given = opts
            .device
            .as_deref()
            .ok_or(Cause::NoDecryptionWithoutDevice)?;
        let dev = parts.machine.resolve(given)?;
        if let blockdev::Signature::Luks { .. } = parts.machine.probe(&dev.path)? {
            return Err(Cause::EncryptedButNoDecryption(dev.path));
        }
        report.warnings.push(format!(
            "{} is not encrypted: anyone holding the drive can read the photos",
            dev.path.display()
        ));
        (dev.path.clone(), Some(dev))
    } else {
        let t = Instant::now();
        let dev = parts.machine.choose_drive(
            opts.device.as_deref(),
            &cfg.drive.remembered_drive_file,
            &cfg.drive.luks_subsystem,
        )?;
        let Some(uuid) = parts.luks.uuid(&dev.path)? else {
            return Err(LuksError::NotLuks(dev.path.clone()).into());
        };
        let usage = parts.machine.usage(&dev, &mounts);
        if !usage.is_free() {
            return Err(Cause::InUse(dev.path.clone(), describe_usage(&usage)));
        }
        report.timings.add("find the drive", t);
        unlock(cfg, parts, &dev, &opts.passphrase, progress, report)?;
        undo.opened = true;
        undo.remembered_before = remember_if_new(cfg, &uuid, progress, report);
        interrupt::check()?;
        (cfg.mapper_path(), Some(dev))
    };
    report.device = backing.as_ref().map(|b| b.path.clone());

    // What an earlier failure left behind must not stop this start: our
    // failed units keep a stale transient mount unit loaded (its name then
    // cannot be used again) and carry systemd's start rate limit.
    let t = Instant::now();
    // The stack names postgresql.target; the server behind it is the unit
    // that fails and that binds to the mount.
    for unit in cfg
        .units
        .stack
        .iter()
        .chain(&cfg.units.after_start)
        .chain([&cfg.units.postgresql_server, &cfg.mount_unit()])
    {
        parts.systemd.reset_failed(unit)?;
    }
    report.timings.add("clear failed units", t);

    // 2-3. Check and mount, unless it is mounted already.
    match &mounted {
        Some(m) => {
            if parts.machine.device_number(&fs_device) != Some((m.major, m.minor)) {
                return Err(Cause::ForeignMount {
                    what: m.source.clone(),
                    point: m.mount_point.clone(),
                });
            }
        }
        None => {
            let t = Instant::now();
            let st = parts.fs.state(&fs_device)?;
            report.timings.add("read superblock", t);
            if st.needs_fsck() {
                progress.step("Checking the filesystem (it was not cleanly unmounted)");
                let t = Instant::now();
                let out = parts.fs.check(&fs_device)?;
                report.timings.add("fsck", t);
                tracing::info!(device = %fs_device.display(), output = %out.trim(), "e2fsck -p finished");
                interrupt::check()?;
            }
            let t = Instant::now();
            prepare_mount_point(parts.machine, &cfg.drive.mount_point, report)?;
            report.timings.add("mount point", t);
            progress.step(&format!("Mounting at {}", cfg.drive.mount_point.display()));
            let t = Instant::now();
            let binds_to = backing
                .iter()
                .map(|b| systemd::path_unit_name(&b.path, "device"))
                .collect();
            // Recorded before the job, as the units are: a mount that an
            // interruption or a time-out leaves half-done is undone too.
            undo.mounted = true;
            parts.systemd.mount(
                &MountSpec {
                    what: fs_device.display().to_string(),
                    r#where: cfg.drive.mount_point.clone(),
                    fstype: cfg.drive.filesystem.clone(),
                    options: cfg.drive.mount_options.clone(),
                    binds_to,
                },
                Duration::from_secs(120),
            )?;
            report.timings.add("mount", t);
            interrupt::check()?;
        }
    }

    // 4. The layout.
    let t = Instant::now();
    report.layout = parts.machine.ensure_layout(cfg)?;
    for c in &report.layout.created {
        progress.note(&format!("created {}", c.display()));
    }
    for r in &report.layout.repaired {
        progress.note(&format!("repaired {r}"));
    }
    report.timings.add("verify layout", t);
    interrupt::check()?;
    if let Ok(space) = parts.machine.space(&cfg.drive.mount_point)
        && space.used_percent() >= crate::status::DRIVE_FULL_WARN_PERCENT
    {
        report.warnings.push(crate::status::drive_full_advice(
            space.used_percent(),
            space.free_bytes,
        ));
    }
    if !opts.no_decryption
        && let Some(b) = &backing
    {
        mark_if_unmarked(cfg, parts, &b.path, progress, report);
    }
    if !opts.start_units {
        return Ok(());
    }

    // 5. The services, in order.
    let timeout = Duration::from_secs(cfg.units.start_timeout_secs);
    for unit in &cfg.units.stack {
        interrupt::check()?;
        if parts.systemd.state(unit)?.is_active() {
            continue;
        }
        progress.step(&format!("Starting {unit}"));
        let t = Instant::now();
        // Recorded before the start so that a half-started unit is stopped too.
        undo.started.push(unit.clone());
        parts.systemd.start(unit, timeout)?;
        report.timings.add(format!("unit {unit}"), t);
        report.started_units.push(unit.clone());
    }

    // 6. Immich answers.
    progress.step("Waiting for Immich to answer");
    let t = Instant::now();
    wait_for_immich(cfg, parts)?;
    report.timings.add("Immich ping", t);

    // 7. Extras whose failure does not undo the start.
    for unit in &cfg.units.after_start {
        let t = Instant::now();
        match parts.systemd.start(unit, timeout) {
            Ok(()) => report.timings.add(format!("unit {unit}"), t),
            Err(e) => report.warnings.push(format!("{unit} did not start: {e}")),
        }
    }

    let t = Instant::now();
    report.urls = net::urls(cfg, parts.addresses);
    report.timings.add("find URLs", t);
    Ok(())
}

/// A start that fails on a full drive says so, instead of leaving the owner
/// to find "No space left on device" in PostgreSQL's journal. Only while the
/// drive is mounted: the mount point alone is the SD card.
fn name_a_full_drive(cfg: &Config, machine: &dyn Machine, cause: Cause) -> Cause {
    let mounted = !blockdev::mounts_at(&machine.mounts(), &cfg.drive.mount_point).is_empty();
    match machine.space(&cfg.drive.mount_point) {
        Ok(space) if mounted && space.is_full() => Cause::DriveFull {
            space,
            inner: Box::new(cause),
        },
        _ => cause,
    }
}

fn describe_usage(u: &blockdev::Usage) -> String {
    let mut parts = vec![];
    for (dev, at) in &u.mounted_at {
        parts.push(format!("/dev/{dev} is mounted at {}", at.display()));
    }
    for s in &u.swap {
        parts.push(format!("{s} is swap"));
    }
    for h in &u.holders {
        parts.push(format!("/dev/mapper/{h} is open on it"));
    }
    parts.join("; ")
}

fn unlock(
    cfg: &Config,
    parts: &Parts,
    dev: &BlockDevice,
    source: &Source,
    progress: &dyn Progress,
    report: &mut StartReport,
) -> Result<(), Cause> {
    let attempts = if source.is_interactive() {
        cfg.drive.passphrase_attempts.max(1)
    } else {
        1
    };
    for attempt in 1..=attempts {
        let t = Instant::now();
        let pass = secret::read(source, &format!("Passphrase for {}: ", dev.describe()))?;
        report.timings.add("passphrase input", t);
        // From here on a signal is a rollback, not a death half-way.
        interrupt::defer();
        interrupt::check()?;
        progress.step(&format!("Unlocking {}", dev.path.display()));
        let t = Instant::now();
        let r = parts.luks.open(&dev.path, &cfg.drive.mapper_name, &pass);
        drop(pass);
        report.timings.add("unlock (KDF)", t);
        match r {
            Ok(()) => return Ok(()),
            Err(LuksError::WrongPassphrase(p)) if attempt < attempts => {
                progress.note(&format!("wrong passphrase for {}; try again", p.display()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// Makes this drive the remembered one; returns what the file said before
/// when it changed it, for the rollback.
fn remember_if_new(
    cfg: &Config,
    uuid: &str,
    progress: &dyn Progress,
    report: &mut StartReport,
) -> Option<Option<drive::Remembered>> {
    let path = &cfg.drive.remembered_drive_file;
    match drive::load(path) {
        Ok(Some(r)) if r.luks_uuid == uuid => None,
        Ok(prev) => {
            let r = drive::Remembered {
                luks_uuid: uuid.to_owned(),
                prepared: prev
                    .as_ref()
                    .map(|p| p.prepared.clone())
                    .unwrap_or_else(|| "unknown (adopted by start)".into()),
            };
            match drive::save(path, &r) {
                Ok(()) => {
                    progress.note(&format!(
                        "this drive (LUKS UUID {uuid}) is now the remembered one"
                    ));
                    Some(prev)
                }
                Err(e) => {
                    report.warnings.push(e.to_string());
                    None
                }
            }
        }
        Err(e) => {
            report.warnings.push(e.to_string());
            None
        }
    }
}

/// A drive prepared before `init` marked its LUKS header gets the mark once
/// its layout has proved it ours, so that a new SD card recognises it too.
fn mark_if_unmarked(
    cfg: &Config,
    parts: &Parts,
    dev: &Path,
    progress: &dyn Progress,
    report: &mut StartReport,
) {
    let Ok(blockdev::Signature::Luks {
        version: 2,
        subsystem,
        ..
    }) = parts.machine.probe(dev)
    else {
        return;
    };
    if !subsystem.is_empty() {
        return;
    }
    match parts.luks.mark(dev, &cfg.drive.luks_subsystem) {
        Ok(()) => progress.note(&format!(
            "marked {} as the appliance drive in its LUKS header",
            dev.display()
        )),
        Err(e) => report.warnings.push(e.to_string()),
    }
}

/// The empty directory the drive mounts over: it must be empty, and it is
/// made immutable so nothing can write onto the SD card through it.
fn prepare_mount_point(
    machine: &dyn Machine,
    dir: &Path,
    report: &mut StartReport,
) -> Result<(), Cause> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Cause::Other(format!("cannot create {}: {e}", dir.display())))?;
    }
    let non_empty = std::fs::read_dir(dir)
        .map_err(|e| Cause::Other(format!("cannot read {}: {e}", dir.display())))?
        .next()
        .is_some();
    if non_empty {
        return Err(Cause::MountPointNotEmpty(dir.to_owned()));
    }
    if let Err(e) = machine.set_immutable(dir, true) {
        report.warnings.push(format!(
            "could not make {} immutable ({e}); writes to it while the drive is locked are not blocked",
            dir.display()
        ));
    }
    Ok(())
}

fn wait_for_immich(cfg: &Config, parts: &Parts) -> Result<(), Cause> {
    let deadline = Instant::now() + Duration::from_secs(cfg.immich.ping_timeout_secs);
    let mut next_unit_check = Instant::now();
    loop {
        interrupt::check()?;
        if parts.immich.ping().is_ok() {
            return Ok(());
        }
        if Instant::now() >= next_unit_check {
            // A unit that died while we wait will not come back by waiting.
            for u in &cfg.units.stack {
                if let Ok(s) = parts.systemd.state(u)
                    && s.is_failed()
                {
                    return Err(UnitError::JobFailed {
                        unit: u.clone(),
                        verb: "keep running",
                        result: format!("it is {s}"),
                        journal: parts.systemd.journal_tail(u, 15),
                    }
                    .into());
                }
            }
            next_unit_check = Instant::now() + Duration::from_secs(2);
        }
        if Instant::now() >= deadline {
            let journal = cfg
                .units
                .stack
                .iter()
                .find(|u| u.starts_with("immich-server"))
                .map(|u| parts.systemd.journal_tail(u, 15))
                .unwrap_or_default();
            return Err(Cause::ImmichTimeout {
                url: cfg.immich.url.clone(),
                secs: cfg.immich.ping_timeout_secs,
                journal,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Undoes this run's changes in reverse; returns (done, failed).
fn rollback(
    cfg: &Config,
    parts: &Parts,
    undo: &Undo,
    progress: &dyn Progress,
) -> (Vec<String>, Vec<String>) {
    let mut done = vec![];
    let mut failed = vec![];
    let timeout = Duration::from_secs(cfg.units.stop_timeout_secs);
    for unit in undo.started.iter().rev() {
        progress.step(&format!("Rolling back: stopping {unit}"));
        match parts.systemd.stop(unit, timeout) {
            Ok(()) => done.push(format!("stopped {unit}")),
            Err(e) => failed.push(format!("stopping {unit}: {e}")),
        }
    }
    if undo.mounted {
        progress.step(&format!(
            "Rolling back: unmounting {}",
            cfg.drive.mount_point.display()
        ));
        match unmount(cfg, parts) {
            Ok(()) => done.push(format!("unmounted {}", cfg.drive.mount_point.display())),
            Err(e) => failed.push(format!("unmounting: {e}")),
        }
    }
    if let Some(before) = &undo.remembered_before {
        let path = &cfg.drive.remembered_drive_file;
        let r = match before {
            Some(prev) => drive::save(path, prev)
                .map(|()| "remembered the previous drive again")
                .map_err(|e| e.to_string()),
            None => std::fs::remove_file(path)
                .map(|()| "forgot the drive again")
                .map_err(|e| e.to_string()),
        };
        match r {
            Ok(what) => done.push(what.into()),
            Err(e) => failed.push(format!("restoring {}: {e}", path.display())),
        }
    }
    if undo.opened && failed.is_empty() {
        progress.step("Rolling back: locking the drive");
        match parts.luks.close(&cfg.drive.mapper_name) {
            Ok(()) => done.push("locked the drive".into()),
            Err(e) => failed.push(format!("locking: {e}")),
        }
    }
    (done, failed)
}

fn unmount(cfg: &Config, parts: &Parts) -> Result<(), Cause> {
    nix::unistd::sync();
    let unit = cfg.mount_unit();
    let r = parts
        .systemd
        .stop(&unit, Duration::from_secs(cfg.units.stop_timeout_secs));
    let still = !blockdev::mounts_at(&parts.machine.mounts(), &cfg.drive.mount_point).is_empty();
    if still {
        let holders = parts.machine.holders(&cfg.drive.mount_point);
        tracing::info!(error = ?r.err(), "unmount failed; the mount is busy");
        return Err(Cause::Busy {
            mount: cfg.drive.mount_point.clone(),
            holders,
        });
    }
    Ok(())
}

#[derive(Debug, Default, Serialize)]
pub struct StopReport {
    pub already_stopped: bool,
    pub stopped_units: Vec<String>,
    pub unmounted: bool,
    pub locked: bool,
}

/// Stops the stack in reverse, syncs, unmounts and locks the drive.
#[allow(clippy::result_large_err)]
pub fn stop(cfg: &Config, parts: &Parts, progress: &dyn Progress) -> Result<StopReport, Failure> {
    stop_inner(cfg, parts, progress, true)
}

/// `stop` for a caller that holds the backup lock itself (a restore that
/// puts things back), so that it does not wait for itself.
#[allow(clippy::result_large_err)]
pub fn stop_holding_backup_lock(
    cfg: &Config,
    parts: &Parts,
    progress: &dyn Progress,
) -> Result<StopReport, Failure> {
    stop_inner(cfg, parts, progress, false)
}

#[allow(clippy::result_large_err)]
fn stop_inner(
    cfg: &Config,
    parts: &Parts,
    progress: &dyn Progress,
    take_backup_lock: bool,
) -> Result<StopReport, Failure> {
    let mut r = StopReport::default();
    let mapping = parts
        .luks
        .mapping(&cfg.drive.mapper_name)
        .map_err(Cause::from)?;
    let timeout = Duration::from_secs(cfg.units.stop_timeout_secs);
    // The backup units first (systemd stops rustic with them); then a backup
    // started from a shell, which no unit covers: it is waited for, and its
    // lock held until the drive is locked, so that none starts meanwhile.
    let stop_one = |unit: &String, r: &mut StopReport| -> Result<(), Failure> {
        let st = parts.systemd.state(unit).map_err(Cause::from)?;
        if st.active == "inactive" || st.load == "not-found" {
            return Ok(());
        }
        progress.step(&format!("Stopping {unit}"));
        parts.systemd.stop(unit, timeout).map_err(Cause::from)?;
        r.stopped_units.push(unit.clone());
        Ok(())
    };
    // The timers that would start a backup go too, before the lock is taken.
    for unit in cfg
        .units
        .stop_first
        .iter()
        .chain(cfg.units.after_start.iter().rev())
    {
        stop_one(unit, &mut r)?;
    }
    let wait = Duration::from_secs(cfg.backup.stop_wait_secs);
    let _backup_lock = if !take_backup_lock {
        None
    } else {
        Some(host::RunLock::acquire(&cfg.backup.lock_file, Some(wait), |pid| {
        let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        progress.step(&format!(
            "A backup, check, drill or restore{who} is running; waiting for it to finish (at most {} s)",
            wait.as_secs()
        ));
    })
    .map_err(|e| match e {
        host::LockError::Busy { holder, .. } => Cause::BackupRunning {
            pid: holder,
            secs: wait.as_secs(),
        },
        host::LockError::Io { .. } => Cause::Other(e.to_string()),
    })?)
    };
    for unit in cfg.units.stack.iter().rev() {
        stop_one(unit, &mut r)?;
    }
    // Looked at only now, and at the mount unit too: a start killed while
    // mounting leaves systemd's mount job running, and its mount may appear
    // after this stop began (story 19 saw it appear under the lock).
    let mount_unit = parts
        .systemd
        .state(&cfg.mount_unit())
        .map_err(Cause::from)?;
    let mounted = !blockdev::mounts_at(&parts.machine.mounts(), &cfg.drive.mount_point).is_empty()
        || !matches!(mount_unit.active.as_str(), "inactive" | "failed");
    if mounted {
        progress.step(&format!("Unmounting {}", cfg.drive.mount_point.display()));
        unmount(cfg, parts)?;
        r.unmounted = true;
    }
    if mapping.is_some() {
        progress.step("Locking the drive");
        parts
            .luks
            .close(&cfg.drive.mapper_name)
            .map_err(Cause::from)?;
        r.locked = true;
    }
    if cfg.drive.mount_point.is_dir()
        && let Err(e) = parts.machine.set_immutable(&cfg.drive.mount_point, true)
    {
        tracing::warn!(error = %e, "cannot make the mount point immutable");
    }
    r.already_stopped = r.stopped_units.is_empty() && !r.unmounted && !r.locked;
    Ok(r)
}
