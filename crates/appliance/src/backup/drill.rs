//! The restore drill: restores the latest snapshot into a scratch folder on
//! the drive, checks it against the snapshot, and loads the database dump
//! into a scratch database. A backup that cannot be restored turns `status`
//! red.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::db::compare_counts;
use super::rustic::{RepoError, Snapshot};
use super::state::{self, Outcome, Run};
use super::{
    BackupError, Env, Paths, drive_ready, free_bytes, human_bytes, load_state, lower_priority,
    read_counts, save_state, short, tree, try_lock,
};
use crate::config::Config;

/// How much of the snapshot the drill restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every file, compared with the snapshot.
    Full,
    /// The database dump only; every stored file was read back and verified
    /// by `rustic check --read-data` instead (not enough room on the drive).
    DumpAndReadBack,
}

/// The path in a snapshot that was the drive's mount point when it was
/// taken (found from the dumps folder, which every snapshot holds).
pub fn snapshot_root(snap: &Snapshot, cfg: &Config) -> Result<PathBuf, BackupError> {
    let dumps = &cfg.layout.dumps.path;
    snap.paths
        .iter()
        .map(PathBuf::from)
        .find_map(|p| {
            p.ends_with(dumps).then(|| {
                let mut root = p.clone();
                for _ in dumps.components() {
                    root.pop();
                }
                root
            })
        })
        .ok_or_else(|| {
            BackupError::Other(format!(
                "snapshot {} has no {} folder; it was not made by this appliance",
                short(&snap.id),
                dumps.display()
            ))
        })
}

/// The newest snapshot of this appliance, or the one asked for (by id or
/// id prefix).
pub fn pick(snaps: &[Snapshot], want: Option<&str>, label: &str) -> Result<Snapshot, BackupError> {
    match want {
        None | Some("latest") => snaps
            .last()
            .cloned()
            .ok_or_else(|| RepoError::NoSnapshot(label.to_owned()).into()),
        Some(id) => {
            let found: Vec<&Snapshot> = snaps.iter().filter(|s| s.id.starts_with(id)).collect();
            match found.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(RepoError::UnknownSnapshot(id.to_owned()).into()),
                _ => Err(BackupError::Other(format!(
                    "`{id}` matches {} snapshots; give more of the id",
                    found.len()
                ))),
            }
        }
    }
}

/// Runs the drill. While the drive is locked it records a skip, like the
/// backup.
pub fn drill(env: &Env) -> Result<Option<Run>, BackupError> {
    let cfg = env.cfg;
    let started = state::now_rfc3339();
    let t0 = Instant::now();
    if !drive_ready(cfg) {
        let skip = super::finished(
            &started,
            t0,
            Outcome::Skipped,
            "restore drill skipped: drive locked".into(),
        );
        state::record_skip(&cfg.backup.skip_record_file, &skip)
            .map_err(BackupError::io("cannot record the skip"))?;
        env.progress
            .note("The drive is locked: the restore drill is skipped (recorded for `status`).");
        return Ok(None);
    }
    let _lock = try_lock(cfg)?;
    lower_priority();
    let p = Paths::new(cfg);
    let mut st = load_state(&p)?;
    let result = steps(env, &p);
    let _ = fs::remove_dir_all(&p.scratch);
    let run = match &result {
        Ok(((_, id), msg)) => {
            let mut r = super::finished(&started, t0, Outcome::Success, msg.clone());
            r.snapshot = Some(id.clone());
            r
        }
        Err(e) => super::finished(&started, t0, Outcome::Failed, e.to_string()),
    };
    st.last_drill = Some(run.clone());
    save_state(&p, &st)?;
    result.map(|_| Some(run))
}

type Done = ((Mode, String), String);

fn steps(env: &Env, p: &Paths) -> Result<Done, BackupError> {
    let cfg = env.cfg;
    let pg = &cfg.units.postgresql_server;
    if !env.systemd.state(pg)?.is_active() {
        return Err(BackupError::DbNotRunning(pg.clone()));
    }
    fs::create_dir_all(&p.cache).map_err(BackupError::io("cannot create the rustic cache"))?;
    let snaps = env.repo.snapshots()?;
    let snap = pick(&snaps, None, &cfg.backup.label)?;
    let root = snapshot_root(&snap, cfg)?;
    let summary = snap.summary.clone().unwrap_or_default();

    let _ = fs::remove_dir_all(&p.scratch);
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&p.scratch)
        .map_err(BackupError::io("cannot create the drill's scratch folder"))?;

    let free = free_bytes(&p.mount).map_err(BackupError::io("cannot read the free space"))?;
    let need = summary.total_bytes_processed + cfg.backup.drill_free_margin_mib * 1024 * 1024;
    let mode = if free >= need {
        Mode::Full
    } else {
        Mode::DumpAndReadBack
    };
    let files_msg = match mode {
        Mode::Full => {
            env.progress.step(&format!(
                "Restoring snapshot {} ({} files, {}) into {}",
                short(&snap.id),
                summary.total_files_processed,
                human_bytes(summary.total_bytes_processed),
                p.scratch.display()
            ));
            env.repo.restore(&snap.id, &root, &p.scratch, false)?;
            let got = tree::tally(&p.scratch)
                .map_err(BackupError::io("cannot count the restored files"))?;
            if !got.matches(summary.total_files_processed, summary.total_bytes_processed) {
                return Err(BackupError::Verify(format!(
                    "the restored snapshot {} holds {} files and {} bytes; the snapshot says {} files and {} bytes",
                    short(&snap.id),
                    got.files,
                    got.bytes,
                    summary.total_files_processed,
                    summary.total_bytes_processed
                )));
            }
            format!(
                "restored all {} files ({}) and they match the snapshot",
                got.files,
                human_bytes(got.bytes)
            )
        }
        Mode::DumpAndReadBack => {
            env.progress.step(&format!(
                "Not enough room for a full restore ({} free, {} needed): restoring the database dump and reading back every stored file",
                human_bytes(free),
                human_bytes(need)
            ));
            let rel = cfg.layout.dumps.path.clone();
            env.repo
                .restore(&snap.id, &root.join(&rel), &p.scratch.join(&rel), false)?;
            env.repo.check(Some("all"))?;
            format!(
                "read back and verified all stored data ({} files, {}); a full restore did not fit in {} free",
                summary.total_files_processed,
                human_bytes(summary.total_bytes_processed),
                human_bytes(free)
            )
        }
    };

    env.progress
        .step("Loading the database dump into a scratch database");
    let scratch_paths = Paths {
        dumps: p.scratch.join(&cfg.layout.dumps.path),
        ..p.clone()
    };
    let dump = scratch_paths
        .dumps
        .join(format!("{}.pgdump", cfg.backup.database));
    let counts_file = scratch_paths
        .dumps
        .join(format!("{}.rows.json", cfg.backup.database));
    let tables = load_into_scratch_db(env, &dump, &counts_file)?;
    Ok((
        (mode, snap.id.clone()),
        format!(
            "snapshot {}: {files_msg}; the database dump loads and its {tables} tables have the dumped row counts",
            short(&snap.id)
        ),
    ))
}

fn load_into_scratch_db(env: &Env, dump: &Path, counts_file: &Path) -> Result<usize, BackupError> {
    let name = format!("{}_drill", env.cfg.backup.database);
    let expected = read_counts(counts_file)?;
    env.db.drop(&name)?;
    env.db.create(&name)?;
    let result = (|| {
        env.db.restore(&name, dump)?;
        let found = env.db.row_counts(&name)?;
        let diffs = compare_counts(&expected, &found);
        if diffs.is_empty() {
            Ok(expected.len())
        } else {
            Err(BackupError::Verify(format!(
                "the restored database differs from the dump: {}",
                diffs.join("; ")
            )))
        }
    })();
    if let Err(e) = env.db.drop(&name) {
        tracing::warn!(error = %e, "cannot drop the drill's scratch database");
    }
    result
}
