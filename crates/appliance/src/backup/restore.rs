//! Recovery onto a new drive, in one command: reach the repository, pick
//! the snapshot, restore the files, fix their owners, load the database,
//! verify both against the snapshot and the dump, then start the stack.
//!
//! A failure leaves nothing running: PostgreSQL is stopped again, and a
//! drive this command unlocked is unmounted and locked. Files already
//! restored stay on the drive, and running the command again resumes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::db::{Database, compare_counts};
use super::drill::{pick, snapshot_root};
use super::rustic::Repo;
use super::setup::{AccessArgs, Ask, gather, write_access};
use super::{BackupError, Paths, free_bytes, human_bytes, read_counts, short, tree, wait_active};
use crate::blockdev;
use crate::config::Config;
use crate::host;
use crate::layout;
use crate::lifecycle::{self, Failure, Parts, Progress, StartOptions};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Unlocking or mounting (or the final start) failed; lifecycle rolled
    /// back what it did.
    #[error("{0}")]
    Start(Failure),
    #[error("{error}{undo}", undo = fmt_undo(undone))]
    Backup {
        error: BackupError,
        undone: Vec<String>,
    },
}

fn fmt_undo(undone: &[String]) -> String {
    if undone.is_empty() {
        String::new()
    } else {
        format!("\nRolled back: {}.", undone.join(", "))
    }
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub start: StartOptions,
    pub access: AccessArgs,
    pub snapshot: Option<String>,
    pub dry_run: bool,
    /// Start the whole stack at the end (the default).
    pub start_after: bool,
    /// Draw rustic's progress bar (on a terminal).
    pub progress_bar: bool,
}

pub struct RestoreEnv<'a> {
    pub cfg: &'a Config,
    pub parts: &'a Parts<'a>,
    pub db: &'a dyn Database,
    pub ask: &'a dyn Ask,
    /// Builds the repository from a profile and a cache folder.
    pub make_repo: &'a dyn Fn(&Path, &Path) -> Box<dyn Repo>,
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for RestoreEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreEnv").finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub dry_run: bool,
    pub snapshot: String,
    pub snapshot_time: String,
    pub files: u64,
    pub bytes: u64,
    pub tables: usize,
    pub rows: u64,
    pub started: bool,
    /// The repository's access was written to this drive (it now backs up
    /// to the same repository, with that repository's password).
    pub access_written: bool,
    pub plan: Vec<String>,
    pub urls: crate::net::Urls,
}

/// Written before files are restored and removed at the end, so that a
/// rerun after a failure may continue on a drive that already holds files.
#[derive(Debug, Serialize, serde::Deserialize)]
struct InProgress {
    snapshot: String,
    started: String,
}

const MARKER: &str = "restore-in-progress.json";

// Returned once per run and printed; its size does not matter.
#[allow(clippy::result_large_err)]
pub fn restore(env: &RestoreEnv, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    let cfg = env.cfg;
    let p = Paths::new(cfg);

    // Restore fills a drive; it never runs beside a live appliance.
    let mut running = vec![];
    for u in &cfg.units.stack {
        if env
            .parts
            .systemd
            .state(u)
            .map(|s| s.is_active())
            .unwrap_or(false)
        {
            running.push(u.clone());
        }
    }
    if !running.is_empty() {
        return Err(RestoreError::Backup {
            error: BackupError::Other(format!(
                "Immich is running ({}). Restore is for a new drive: stop the appliance first (`sudo immich-server --stop`), plug in the new drive, and prepare it with `sudo immich-server init`",
                running.join(", ")
            )),
            undone: vec![],
        });
    }
    let _lock = super::try_lock(cfg).map_err(|error| RestoreError::Backup {
        error,
        undone: vec![],
    })?;

    let was_mounted =
        !blockdev::mounts_at(&blockdev::mountinfo(), &cfg.drive.mount_point).is_empty();
    let mount_only = StartOptions {
        start_units: false,
        ..opts.start.clone()
    };
    env.progress.step("Unlocking and mounting the new drive");
    lifecycle::start(cfg, env.parts, &mount_only, env.progress).map_err(RestoreError::Start)?;

    let mut started_pg = false;
    let result = steps(env, opts, &p, &mut started_pg);
    let finish_ok = matches!(&result, Ok(r) if !r.dry_run);
    if finish_ok {
        return result.map_err(|error| RestoreError::Backup {
            error,
            undone: vec![],
        });
    }

    // A dry run, or a failure: put things back as they were.
    let mut undone = vec![];
    if started_pg {
        let target = &cfg.units.stack[0];
        match env
            .parts
            .systemd
            .stop(target, Duration::from_secs(cfg.units.stop_timeout_secs))
        {
            Ok(()) => undone.push(format!("stopped {target}")),
            Err(e) => undone.push(format!("could not stop {target}: {e}")),
        }
    }
    if !was_mounted {
        match lifecycle::stop_holding_backup_lock(cfg, env.parts, env.progress) {
            Ok(_) => undone.push("unmounted and locked the drive".into()),
            Err(f) => undone.push(format!("could not unmount and lock the drive: {f}")),
        }
    }
    match result {
        Ok(r) => Ok(r),
        Err(error) => Err(RestoreError::Backup { error, undone }),
    }
}

/// Removes a directory when dropped.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = fs::remove_dir_all(d);
        }
    }
}

fn steps(
    env: &RestoreEnv,
    opts: &RestoreOptions,
    p: &Paths,
    started_pg: &mut bool,
) -> Result<RestoreReport, BackupError> {
    let cfg = env.cfg;
    let marker = cfg.drive_path(&cfg.layout.state).join(MARKER);
    let resuming = marker.exists();
    if !resuming && tree::has_files(&p.media).map_err(BackupError::io("cannot read the drive"))? {
        return Err(BackupError::Other(format!(
            "this drive already holds photos ({}). Restore onto a new drive prepared with `sudo immich-server init`; to keep this one, use it as it is",
            p.media.display()
        )));
    }

    // The repository: the one set up on this drive (a rerun), or the one
    // the owner names now.
    let mut access_written = false;
    let (profile, cache, tmp) = if p.profile.is_file() {
        env.progress.note(&format!(
            "using the repository set up in {}",
            p.profile.display()
        ));
        (p.profile.clone(), p.cache.clone(), None)
    } else {
        let access = gather(&opts.access, env.ask, None)?;
        if opts.dry_run {
            // Nothing is written to the drive by a dry run.
            let dir = PathBuf::from("/run/immich-appliance/restore-dry-run");
            let _ = fs::remove_dir_all(&dir);
            write_access(&access, &dir.join("rustic.toml"), &dir.join("password"))?;
            (dir.join("rustic.toml"), dir.join("cache"), Some(dir))
        } else {
            write_access(&access, &p.profile, &p.password)?;
            access_written = true;
            (p.profile.clone(), p.cache.clone(), None)
        }
    };
    // Whatever way this function ends, a dry run's files (the repository
    // password among them) go with it.
    let _tmp = RemoveOnDrop(tmp.clone());
    let repo = (env.make_repo)(&profile, &cache);
    let snaps = match repo.snapshots() {
        Ok(s) => s,
        Err(e) => {
            if tmp.is_none() && !resuming {
                // Ask again next time rather than keep a wrong password.
                let _ = fs::remove_file(&p.profile);
                let _ = fs::remove_file(&p.password);
            }
            return Err(e.into());
        }
    };
    let snap = pick(&snaps, opts.snapshot.as_deref(), &cfg.backup.label)?;
    let root = snapshot_root(&snap, cfg)?;
    let summary = snap.summary.clone().unwrap_or_default();
    let mut report = RestoreReport {
        dry_run: opts.dry_run,
        snapshot: snap.id.clone(),
        snapshot_time: snap.time.clone(),
        files: summary.total_files_processed,
        bytes: summary.total_bytes_processed,
        access_written,
        ..Default::default()
    };

    let free = free_bytes(&p.mount).map_err(BackupError::io("cannot read the free space"))?;
    let need = summary.total_bytes_processed + 64 * 1024 * 1024;
    report.plan = vec![
        format!(
            "restore snapshot {} of {} from {} ({} files, {}) into {}",
            short(&snap.id),
            snap.time,
            snap.hostname,
            summary.total_files_processed,
            human_bytes(summary.total_bytes_processed),
            p.mount.display()
        ),
        format!(
            "give the photos to {}:{} and the dumps to root",
            cfg.layout.media.owner, cfg.layout.media.group
        ),
        format!(
            "start {} and load the database dump into `{}`",
            cfg.units.stack[0], cfg.backup.database
        ),
        "check the files against the snapshot and the tables against the dump".into(),
        if opts.start_after {
            "start Immich".into()
        } else {
            "leave Immich stopped (--no-start)".into()
        },
    ];
    if free < need {
        return Err(BackupError::Other(format!(
            "the drive has {} free but snapshot {} needs {}: restore onto a bigger drive. Nothing was started",
            human_bytes(free),
            short(&snap.id),
            human_bytes(need)
        )));
    }
    if opts.dry_run {
        return Ok(report);
    }

    // Files.
    let mark = InProgress {
        snapshot: snap.id.clone(),
        started: super::state::now_rfc3339(),
    };
    host::write_atomic(
        &marker,
        serde_json::to_string(&mark).expect("serialises").as_bytes(),
        0o644,
    )
    .map_err(BackupError::io("cannot write the restore marker"))?;
    env.progress.step(&format!(
        "Restoring {} files ({}) from snapshot {}",
        summary.total_files_processed,
        human_bytes(summary.total_bytes_processed),
        short(&snap.id)
    ));
    fs::create_dir_all(&cache).map_err(BackupError::io("cannot create the rustic cache"))?;
    repo.restore(&snap.id, &root, &p.mount, opts.progress_bar)
        .map_err(|e| {
            BackupError::Other(format!(
                "{e}\nThe files restored so far stay on the drive; run the same command again to continue"
            ))
        })?;

    env.progress.step("Fixing owners");
    let (uid, gid) =
        host::ids(&cfg.layout.media.owner, &cfg.layout.media.group).map_err(BackupError::Other)?;
    tree::chown_tree(&p.media, uid.as_raw(), gid.as_raw())
        .map_err(BackupError::io("cannot set the owner of the photos"))?;
    tree::chown_tree(&p.dumps, 0, 0)
        .map_err(BackupError::io("cannot set the owner of the dumps"))?;
    layout::ensure(cfg).map_err(|e| BackupError::Other(e.to_string()))?;

    env.progress.step("Checking the files against the snapshot");
    let mut got = tree::tally(&p.dumps).map_err(BackupError::io("cannot count the files"))?;
    got += tree::tally(&p.media).map_err(BackupError::io("cannot count the files"))?;
    if !got.matches(summary.total_files_processed, summary.total_bytes_processed) {
        return Err(BackupError::Verify(format!(
            "the drive holds {} files and {} bytes after the restore; snapshot {} has {} files and {} bytes. Run the command again to restore the rest",
            got.files,
            got.bytes,
            short(&snap.id),
            summary.total_files_processed,
            summary.total_bytes_processed
        )));
    }

    // After the count, which they are not part of: the folders Immich
    // regenerates, with their markers, in case the backup left them out
    // (an essential-only backup from before it kept them).
    for d in &cfg.backup.regenerable_media {
        let dir = p.media.join(d);
        let marker = dir.join(super::IMMICH_FOLDER_MARKER);
        if marker.exists() {
            continue;
        }
        fs::create_dir_all(&dir)
            .and_then(|()| fs::write(&marker, b"restored by immich-server\n"))
            .and_then(|()| tree::chown_tree(&dir, uid.as_raw(), gid.as_raw()).map(drop))
            .map_err(BackupError::io(format!(
                "cannot write {}",
                marker.display()
            )))?;
        env.progress.note(&format!(
            "wrote {} (Immich regenerates that folder)",
            marker.display()
        ));
    }

    // The database.
    let target = &cfg.units.stack[0];
    env.progress.step(&format!("Starting {target}"));
    *started_pg = true;
    env.parts
        .systemd
        .start(target, Duration::from_secs(cfg.units.start_timeout_secs))?;
    let server = &cfg.units.postgresql_server;
    if !wait_active(env.parts.systemd, server, Duration::from_secs(60)) {
        return Err(BackupError::DbNotRunning(server.clone()));
    }
    let name = &cfg.backup.database;
    if env.db.exists(name)? {
        let tables = env.db.row_counts(name)?;
        if tables.keys().any(|t| t.starts_with("public.")) {
            return Err(BackupError::Other(format!(
                "the database `{name}` on this drive is not empty; restore needs a drive prepared with `sudo immich-server init` on which Immich has not run"
            )));
        }
    } else {
        env.db.create(name)?;
    }
    env.progress
        .step(&format!("Loading the database dump into `{name}`"));
    env.db.restore(name, &p.dump_file)?;
    let expected = read_counts(&p.counts_file)?;
    let found = env.db.row_counts(name)?;
    let diffs = compare_counts(&expected, &found);
    if !diffs.is_empty() {
        return Err(BackupError::Verify(format!(
            "the restored database differs from the dump: {}",
            diffs.join("; ")
        )));
    }
    report.tables = expected.len();
    report.rows = expected.values().sum();
    let _ = fs::remove_file(&marker);

    if opts.start_after {
        let full = StartOptions {
            start_units: true,
            ..opts.start.clone()
        };
        env.progress.step("Starting Immich");
        match lifecycle::start(cfg, env.parts, &full, env.progress) {
            Ok(r) => {
                report.started = true;
                report.urls = r.urls;
            }
            Err(f) => {
                return Err(BackupError::Other(format!(
                    "the photos and the database are restored and verified, but Immich did not start: {f}\nFix that, then run `sudo immich-server --start`"
                )));
            }
        }
    } else {
        env.parts
            .systemd
            .stop(target, Duration::from_secs(cfg.units.stop_timeout_secs))?;
        *started_pg = false;
    }
    Ok(report)
}
