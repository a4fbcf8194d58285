//! Encrypted backups with rustic: the scheduled run (dump, backup,
//! retention, check, record, ping), the repository check, the restore drill,
//! the guided setup, and recovery onto a new drive.
//!
//! Every side effect sits behind a seam: the repository ([`rustic::Repo`]),
//! the database ([`db::Database`]), systemd, and the ping ([`Pinger`]).

pub mod db;
pub mod drill;
pub mod restore;
pub mod rustic;
pub mod setup;
pub mod state;
pub mod tree;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::blockdev;
use crate::config::Config;
use crate::host;
use crate::layout;
use crate::lifecycle::Progress;
use crate::systemd::{Systemd, UnitError};

use db::{Database, DbError, RowCounts};
use rustic::{Keep, Repo, RepoError};
use state::{Outcome, Run, State};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(
        "the drive is not unlocked and mounted at {0}; unlock it first: `sudo immich-server --start`"
    )]
    DriveLocked(PathBuf),
    #[error(
        "PostgreSQL ({0}) is not running, so the database cannot be dumped. Start the appliance with `sudo immich-server --start`"
    )]
    DbNotRunning(String),
    #[error(
        "another backup, check, drill or restore is running{}; try again when it has finished",
        .0.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Busy(Option<u32>),
    #[error(
        "the backup is incomplete: {count} file(s) could not be read and are not in snapshot {} (everything else is): {}{}. \
A file that cannot be read usually means the drive is failing: run `sudo immich-server status` for its health, and copy your photos to a new drive soon (docs/moving-your-library.md). \
No older snapshot was removed; the next backup tries these files again",
        short(.snapshot),
        .names.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
        if .names.len() > 10 { format!(" and {} more", .names.len() - 10) } else { String::new() }
    )]
    Partial {
        snapshot: String,
        /// Files rustic left out.
        count: usize,
        /// Where they are, each once (a file, or its folder).
        names: Vec<String>,
    },
    #[error("{0}")]
    Verify(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl BackupError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
        let what = what.into();
        move |source| BackupError::Io { what, source }
    }
}

/// Pings a healthchecks-style URL.
pub trait Pinger {
    fn ping(&self, url: &str) -> Result<(), String>;
}

/// An HTTP GET with a short timeout and a few retries; the ping never
/// decides the outcome of a run.
pub struct HttpPinger {
    agent: ureq::Agent,
}

impl Default for HttpPinger {
    fn default() -> Self {
        HttpPinger {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(std::time::Duration::from_secs(10)))
                .build()
                .new_agent(),
        }
    }
}

impl std::fmt::Debug for HttpPinger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpPinger")
    }
}

/// A URL as logs and errors may show it: its scheme and host, not its path
/// or query, where a monitor's token lives (hc-ping.com/<uuid>).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    if scheme.is_empty() {
        "(a URL)".into()
    } else {
        format!("{scheme}://{host}/…")
    }
}

// In-process over HTTP: the URL, which may carry a token, is never on a
// command line that `ps` shows. Three tries, as a monitor may blip.
impl Pinger for HttpPinger {
    fn ping(&self, url: &str) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
            match self.agent.get(url).call() {
                Ok(_) => return Ok(()),
                Err(ureq::Error::StatusCode(code)) => last = format!("HTTP {code}"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!(
            "{} did not answer: {}",
            redact_url(url),
            last.replace(url, &redact_url(url))
        ))
    }
}

/// What a backup operation works with.
pub struct Env<'a> {
    pub cfg: &'a Config,
    pub repo: &'a dyn Repo,
    pub db: &'a dyn Database,
    pub systemd: &'a dyn Systemd,
    pub pinger: &'a dyn Pinger,
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

/// The places on the drive the backup uses.
#[derive(Debug, Clone)]
pub struct Paths {
    pub mount: PathBuf,
    pub media: PathBuf,
    pub dumps: PathBuf,
    pub dump_file: PathBuf,
    pub counts_file: PathBuf,
    pub state_file: PathBuf,
    pub profile: PathBuf,
    pub password: PathBuf,
    pub cache: PathBuf,
    pub scratch: PathBuf,
}

impl Paths {
    pub fn new(cfg: &Config) -> Paths {
        let mount = cfg.drive.mount_point.clone();
        let dumps = cfg.drive_path(&cfg.layout.dumps);
        let db = &cfg.backup.database;
        Paths {
            media: cfg.drive_path(&cfg.layout.media),
            dump_file: dumps.join(format!("{db}.pgdump")),
            counts_file: dumps.join(format!("{db}.rows.json")),
            dumps,
            state_file: cfg.drive_path(&cfg.layout.state).join(state::STATE_FILE),
            profile: mount.join(&cfg.backup.rustic_profile),
            password: mount.join(&cfg.backup.password_file),
            cache: mount.join(&cfg.backup.cache_dir),
            scratch: mount.join(&cfg.backup.drill_scratch),
            mount,
        }
    }

    /// What a backup saves: the dumps, and the media (all of it, or only
    /// what cannot be regenerated).
    pub fn sources(&self, cfg: &Config) -> Vec<PathBuf> {
        let mut v = vec![self.dumps.clone()];
        if cfg.backup.essential_only {
            for d in &cfg.backup.essential_media {
                let p = self.media.join(d);
                if p.exists() {
                    v.push(p);
                }
            }
            // Only the markers of what Immich regenerates, so that the
            // restored library passes Immich's folder checks.
            for d in &cfg.backup.regenerable_media {
                let p = self.media.join(d).join(IMMICH_FOLDER_MARKER);
                if p.exists() {
                    v.push(p);
                }
            }
        } else {
            v.push(self.media.clone());
        }
        v
    }
}

/// The file Immich keeps in each of its folders and checks at start.
pub const IMMICH_FOLDER_MARKER: &str = ".immich";

/// Whether the drive is mounted at the mount point and is ours.
pub fn drive_ready(cfg: &Config) -> bool {
    !blockdev::mounts_at(&blockdev::mountinfo(), &cfg.drive.mount_point).is_empty()
        && layout::read_marker(cfg).is_ok()
}

/// Serialises backup, check, drill and restore; fails at once when taken.
pub fn try_lock(cfg: &Config) -> Result<host::RunLock, BackupError> {
    match host::RunLock::try_acquire(&cfg.backup.lock_file) {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(holder)) => Err(BackupError::Busy(holder)),
        Err(e) => Err(BackupError::Io {
            what: format!("cannot take the lock {}", cfg.backup.lock_file.display()),
            source: e,
        }),
    }
}

/// Backups, checks and drills are guests on the Pi: lowest CPU and IO
/// priority (the systemd units say so too; this covers runs from a shell).
pub fn lower_priority() {
    // SAFETY: setpriority and ioprio_set on the calling process only change
    // its scheduling; failures are harmless and ignored.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

fn load_state(p: &Paths) -> Result<State, BackupError> {
    state::load(&p.state_file).map_err(|e| {
        BackupError::Other(format!(
            "the backup record is unreadable ({e}); move it aside to start a new one"
        ))
    })
}

fn save_state(p: &Paths, s: &State) -> Result<(), BackupError> {
    state::save(&p.state_file, s).map_err(BackupError::io(format!(
        "cannot write the backup record {}",
        p.state_file.display()
    )))
}

fn finished(started: &str, t0: Instant, outcome: Outcome, message: String) -> Run {
    Run {
        started: started.to_owned(),
        finished: state::now_rfc3339(),
        outcome,
        message,
        snapshot: None,
        files: None,
        bytes_added: None,
        duration_secs: t0.elapsed().as_secs_f64(),
    }
}

/// What `backup run` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub backup: Run,
    pub check: Option<Run>,
    pub dump_secs: f64,
    pub backup_secs: f64,
    pub forget_secs: f64,
    pub check_secs: f64,
}

/// One scheduled run: precondition, dump, backup, retention, check (when
/// due), record, ping. While the drive is locked it records a skip (on the
/// SD card: a time and a reason) and succeeds, so a locked appliance does
/// not fail every day; `status` shows the skip.
pub fn run(env: &Env) -> Result<Option<RunReport>, BackupError> {
    let cfg = env.cfg;
    let started = state::now_rfc3339();
    let t0 = Instant::now();
    if !drive_ready(cfg) {
        let skip = finished(
            &started,
            t0,
            Outcome::Skipped,
            "skipped: drive locked".into(),
        );
        state::record_skip(&cfg.backup.skip_record_file, &skip).map_err(BackupError::io(
            format!(
                "cannot record the skip in {}",
                cfg.backup.skip_record_file.display()
            ),
        ))?;
        env.progress
            .note("The drive is locked: this backup is skipped (recorded for `status`).");
        return Ok(None);
    }
    let _lock = try_lock(cfg)?;
    lower_priority();
    let p = Paths::new(cfg);
    let mut st = load_state(&p)?;
    if let Some(run) = st.interrupted() {
        st.last_backup = Some(run);
    }
    st.in_progress = Some(state::InProgress::now("backup"));
    save_state(&p, &st)?;

    let mut timings = [0.0f64; 3];
    let check_due = state::due(
        st.last_check.as_ref(),
        SystemTime::now(),
        cfg.backup.check_every_days,
    );
    let result = backup_steps(env, &p, check_due, &mut timings);
    st.in_progress = None;
    let mut report = match result {
        Ok((snap, counts_tables)) => {
            let mut r = finished(
                &started,
                t0,
                Outcome::Success,
                format!(
                    "snapshot {} ({} files; {} tables dumped)",
                    short(&snap.id),
                    snap.summary.as_ref().map_or(0, |s| s.total_files_processed),
                    counts_tables
                ),
            );
            r.snapshot = Some(snap.id.clone());
            r.files = snap.summary.as_ref().map(|s| s.total_files_processed);
            r.bytes_added = snap.summary.as_ref().map(|s| s.data_added);
            st.last_success = Some(r.clone());
            st.last_backup = Some(r.clone());
            RunReport {
                backup: r,
                check: None,
                dump_secs: timings[0],
                backup_secs: timings[1],
                forget_secs: timings[2],
                check_secs: 0.0,
            }
        }
        Err(e) => {
            let mut r = finished(&started, t0, Outcome::Failed, e.to_string());
            if let BackupError::Partial { snapshot, .. } = &e {
                r.snapshot = Some(snapshot.clone());
            }
            st.last_backup = Some(r);
            save_state(&p, &st)?;
            ping(env, false);
            return Err(e);
        }
    };

    // The check, on its own cadence, after a successful backup.
    let mut check_failed = None;
    if check_due {
        env.progress.step(&format!(
            "Checking the repository (reading {} of the data)",
            cfg.backup.check_read_subset
        ));
        let tc = Instant::now();
        let c_started = state::now_rfc3339();
        let r = env.repo.check(Some(&cfg.backup.check_read_subset));
        report.check_secs = tc.elapsed().as_secs_f64();
        let run = match &r {
            Ok(()) => finished(
                &c_started,
                tc,
                Outcome::Success,
                format!(
                    "read {} of the data; no errors",
                    cfg.backup.check_read_subset
                ),
            ),
            Err(e) => finished(&c_started, tc, Outcome::Failed, e.to_string()),
        };
        st.last_check = Some(run.clone());
        report.check = Some(run);
        check_failed = r.err();
    }
    save_state(&p, &st)?;
    ping(env, check_failed.is_none());
    match check_failed {
        Some(e) => Err(e.into()),
        None => Ok(Some(report)),
    }
}

fn backup_steps(
    env: &Env,
    p: &Paths,
    check_due: bool,
    timings: &mut [f64; 3],
) -> Result<(rustic::Snapshot, usize), BackupError> {
    let cfg = env.cfg;
    // The repository first: a run without one fails in a second, not after
    // a long dump.
    if !p.profile.is_file() {
        return Err(RepoError::NotConfigured(p.profile.clone()).into());
    }
    let pg = &cfg.units.postgresql_server;
    if !env.systemd.state(pg)?.is_active() {
        return Err(BackupError::DbNotRunning(pg.clone()));
    }
    env.progress.step("Dumping the database");
    let t = Instant::now();
    let counts = dump(env.db, &cfg.backup.database, p)?;
    timings[0] = t.elapsed().as_secs_f64();

    env.progress.step(if cfg.backup.essential_only {
        "Backing up the originals and the database (essential only)"
    } else {
        "Backing up the photos, videos and the database"
    });
    let t = Instant::now();
    fs::create_dir_all(&p.cache).map_err(BackupError::io("cannot create the rustic cache"))?;
    let tag = if cfg.backup.essential_only {
        "essential"
    } else {
        "full"
    };
    let sources = p.sources(cfg);
    // The size to expect, for "how far": a walk of the sources, cheap next
    // to reading them.
    let total: u64 = sources
        .iter()
        .filter_map(|s| tree::tally(s).ok().map(|t| t.bytes))
        .sum::<u64>()
        + sources
            .iter()
            .filter(|s| s.is_file())
            .filter_map(|s| fs::metadata(s).ok().map(|m| m.len()))
            .sum::<u64>();
    let report = |read: u64, elapsed: std::time::Duration| {
        let pct = if total > 0 {
            format!(" ({:.0} %)", 100.0 * read.min(total) as f64 / total as f64)
        } else {
            String::new()
        };
        env.progress.note(&format!(
            "read {} of {}{pct} in {}",
            human_bytes(read),
            human_bytes(total),
            humantime::format_duration(std::time::Duration::from_secs(elapsed.as_secs()))
        ));
    };
    let backed = env.repo.backup(&sources, &[tag.to_owned()], &report)?;
    timings[1] = t.elapsed().as_secs_f64();
    let snap = backed.snapshot;
    // A snapshot with holes must not count towards the retention: under
    // keep-daily it would push out today's complete one.
    if !backed.unreadable.is_empty() {
        // rustic names the folder of a file whose read failed midway (only
        // a file that cannot be opened is named itself).
        let mut names: Vec<String> = vec![];
        for p in &backed.unreadable {
            let name = if Path::new(p).is_dir() {
                format!("{p} (a file in this folder)")
            } else {
                p.clone()
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        return Err(BackupError::Partial {
            snapshot: snap.id,
            count: backed.unreadable.len(),
            names,
        });
    }

    env.progress.step("Applying the retention policy");
    let t = Instant::now();
    let keep = Keep {
        daily: cfg.backup.keep_daily,
        weekly: cfg.backup.keep_weekly,
        monthly: cfg.backup.keep_monthly,
    };
    let retention_failed = |e: RepoError| {
        BackupError::Other(format!(
            "the backup was saved as snapshot {}, but applying the retention policy failed: {e}",
            short(&snap.id)
        ))
    };
    let removed = env.repo.forget(keep).map_err(retention_failed)?;
    // Pruning reads and rewrites pack files: weekly, with the check, is
    // enough, and keeps the daily run close to a bare `rustic backup`. What
    // forget removed meanwhile only waits for it.
    if check_due {
        env.progress.step(&format!(
            "Pruning the repository ({removed} snapshot(s) forgotten now, and what earlier runs forgot)"
        ));
        env.repo.prune().map_err(retention_failed)?;
    } else if removed > 0 {
        env.progress.note(&format!(
            "{removed} snapshot(s) forgotten; their data goes at the next weekly check"
        ));
    }
    timings[2] = t.elapsed().as_secs_f64();
    Ok((snap, counts.len()))
}

/// Dumps the database into the drive's dumps folder: written to a temporary
/// file, synced, then renamed over the previous dump, with the row counts
/// beside it. A crash leaves the previous dump intact.
pub fn dump(db: &dyn Database, name: &str, p: &Paths) -> Result<RowCounts, BackupError> {
    fs::create_dir_all(&p.dumps).map_err(BackupError::io("cannot create the dumps folder"))?;
    let tmp = p.dumps.join(format!(".{name}.pgdump.partial"));
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(BackupError::io(format!("cannot create {}", tmp.display())))?;
    let counts = match db.dump(name, &file) {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    file.sync_all()
        .map_err(BackupError::io("cannot sync the dump"))?;
    drop(file);
    fs::rename(&tmp, &p.dump_file).map_err(BackupError::io("cannot move the dump in place"))?;
    let mut text = serde_json::to_string_pretty(&counts).expect("serialises");
    text.push('\n');
    host::write_atomic(&p.counts_file, text.as_bytes(), 0o600)
        .map_err(BackupError::io("cannot write the row counts"))?;
    if let Ok(d) = fs::File::open(&p.dumps) {
        let _ = d.sync_all();
    }
    Ok(counts)
}

fn ping(env: &Env, ok: bool) {
    let url = &env.cfg.backup.ping_url;
    if url.is_empty() {
        return;
    }
    let url = if ok {
        url.clone()
    } else {
        format!("{}/fail", url.trim_end_matches('/'))
    };
    if let Err(e) = env.pinger.ping(&url) {
        tracing::warn!(error = %e, "cannot ping the backup monitor");
        env.progress
            .note(&format!("could not ping the backup monitor: {e}"));
    }
}

/// `backup check`: checks the repository now and records the result.
pub fn check(env: &Env, read_all: bool) -> Result<Run, BackupError> {
    let cfg = env.cfg;
    if !drive_ready(cfg) {
        return Err(BackupError::DriveLocked(cfg.drive.mount_point.clone()));
    }
    let _lock = try_lock(cfg)?;
    lower_priority();
    let p = Paths::new(cfg);
    let mut st = load_state(&p)?;
    let started = state::now_rfc3339();
    let t0 = Instant::now();
    let subset = if read_all {
        "all".to_owned()
    } else {
        cfg.backup.check_read_subset.clone()
    };
    env.progress.step(&format!(
        "Checking the repository (reading {} of the data)",
        if read_all { "all" } else { &subset }
    ));
    fs::create_dir_all(&p.cache).map_err(BackupError::io("cannot create the rustic cache"))?;
    let r = env.repo.check(Some(&subset));
    let run = match &r {
        Ok(()) => finished(
            &started,
            t0,
            Outcome::Success,
            format!(
                "read {} of the data; no errors",
                if read_all { "all" } else { &subset }
            ),
        ),
        Err(e) => finished(&started, t0, Outcome::Failed, e.to_string()),
    };
    st.last_check = Some(run.clone());
    save_state(&p, &st)?;
    r?;
    Ok(run)
}

/// The snapshots of this appliance, newest last.
pub fn snapshots(env: &Env) -> Result<Vec<rustic::Snapshot>, BackupError> {
    if !drive_ready(env.cfg) {
        return Err(BackupError::DriveLocked(env.cfg.drive.mount_point.clone()));
    }
    Ok(env.repo.snapshots()?)
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

pub use crate::units::human_bytes;

/// Free bytes for unprivileged writes on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    host::space(path).map(|s| s.free_bytes)
}

/// Reads the row counts written beside a dump.
pub fn read_counts(path: &Path) -> Result<RowCounts, BackupError> {
    let t = fs::read_to_string(path).map_err(BackupError::io(format!(
        "cannot read the row counts {}",
        path.display()
    )))?;
    serde_json::from_str(&t)
        .map_err(|e| BackupError::Other(format!("{} is not valid: {e}", path.display())))
}

/// Writes a file that holds a secret: mode 0600 from the start.
pub fn write_secret(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("partial");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

/// Waits (bounded) for a unit to be active; PostgreSQL's target is active a
/// moment after its start job finishes.
pub fn wait_active(systemd: &dyn Systemd, unit: &str, timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if systemd.state(unit).map(|s| s.is_active()).unwrap_or(false) {
            return true;
        }
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests;
