//! The directory layout on the drive: one definition (config [layout]) of
//! each directory with its owner and mode, created by `init` and checked by
//! every `start`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Dir};
use crate::host;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "{mount} holds no {marker}: this is not a drive prepared by `immich-server init` (or the wrong drive is unlocked). Nothing was started"
    )]
    NotOurDrive { mount: PathBuf, marker: String },
    #[error(
        "the database on the drive is PostgreSQL {found} ({found_dir}), but this system runs PostgreSQL {expected} ({expected_dir}). Starting would show an empty library. Follow docs/updating.md (\"PostgreSQL major upgrade\") to migrate; nothing was started"
    )]
    PostgresMajorChanged {
        found: String,
        found_dir: PathBuf,
        expected: String,
        expected_dir: PathBuf,
    },
    #[error("layout: {0}")]
    Other(String),
}

/// What a check changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutReport {
    pub created: Vec<PathBuf>,
    pub repaired: Vec<String>,
}

/// The marker at the drive root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Marker {
    pub format: u32,
    pub luks_uuid: String,
    pub prepared: String,
}

pub fn write_marker(cfg: &Config, marker: &Marker) -> Result<(), LayoutError> {
    let text = format!(
        "# This drive belongs to an Immich appliance (immich-server init).\n{}",
        toml::to_string(marker).expect("serialises")
    );
    host::write_atomic(
        &cfg.drive.mount_point.join(&cfg.layout.marker),
        text.as_bytes(),
        0o644,
    )
    .map_err(|e| LayoutError::Other(format!("cannot write the drive marker: {e}")))
}

pub fn read_marker(cfg: &Config) -> Result<Marker, LayoutError> {
    let path = cfg.drive.mount_point.join(&cfg.layout.marker);
    let text = std::fs::read_to_string(&path).map_err(|_| LayoutError::NotOurDrive {
        mount: cfg.drive.mount_point.clone(),
        marker: cfg.layout.marker.clone(),
    })?;
    toml::from_str(&text)
        .map_err(|e| LayoutError::Other(format!("{}: {}", path.display(), e.message())))
}

/// Checks every directory of the layout, creating missing ones and
/// repairing owner and mode. `start` calls it on the mounted drive.
pub fn ensure(cfg: &Config) -> Result<LayoutReport, LayoutError> {
    read_marker(cfg)?;
    let mut report = LayoutReport::default();
    for (role, dir) in cfg.layout.dirs() {
        if role == "postgres" && !cfg.drive_path(dir).exists() {
            refuse_postgres_major_change(cfg, dir)?;
        }
        ensure_dir(&cfg.drive.mount_point, dir, &mut report)?;
    }
    Ok(report)
}

/// A missing versioned data directory next to one that holds a cluster
/// means the PostgreSQL major version changed.
fn refuse_postgres_major_change(cfg: &Config, dir: &Dir) -> Result<(), LayoutError> {
    let expected_dir = cfg.drive_path(dir);
    let Some(parent) = expected_dir.parent() else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p != expected_dir && p.join("PG_VERSION").exists() {
            let found = std::fs::read_to_string(p.join("PG_VERSION"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            return Err(LayoutError::PostgresMajorChanged {
                found,
                found_dir: p,
                expected: dir
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                expected_dir,
            });
        }
    }
    Ok(())
}

/// Creates `dir` (and its parents inside the drive) with its owner and mode,
/// or repairs them.
pub fn ensure_dir(mount: &Path, dir: &Dir, report: &mut LayoutReport) -> Result<(), LayoutError> {
    let (uid, gid) = host::ids(&dir.owner, &dir.group).map_err(LayoutError::Other)?;
    let mode = dir.mode_bits().map_err(LayoutError::Other)?;
    let mut cur = mount.to_path_buf();
    for comp in dir.path.components() {
        cur.push(comp);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(LayoutError::Other(format!(
                    "{} is a symlink; the layout must be plain directories",
                    cur.display()
                )));
            }
            Ok(m) if !m.is_dir() => {
                return Err(LayoutError::Other(format!(
                    "{} is not a directory",
                    cur.display()
                )));
            }
            Ok(m) => {
                if m.uid() != uid.as_raw() || m.gid() != gid.as_raw() {
                    nix::unistd::chown(&cur, Some(uid), Some(gid))
                        .map_err(|e| LayoutError::Other(format!("chown {}: {e}", cur.display())))?;
                    report.repaired.push(format!(
                        "{}: owner set to {}:{}",
                        cur.display(),
                        dir.owner,
                        dir.group
                    ));
                }
                if m.mode() & 0o7777 != mode {
                    std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| LayoutError::Other(format!("chmod {}: {e}", cur.display())))?;
                    report
                        .repaired
                        .push(format!("{}: mode set to {:04o}", cur.display(), mode));
                }
            }
            Err(_) => {
                std::fs::create_dir(&cur)
                    .map_err(|e| LayoutError::Other(format!("mkdir {}: {e}", cur.display())))?;
                nix::unistd::chown(&cur, Some(uid), Some(gid))
                    .map_err(|e| LayoutError::Other(format!("chown {}: {e}", cur.display())))?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| LayoutError::Other(format!("chmod {}: {e}", cur.display())))?;
                report.created.push(cur.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_at(mount: &Path) -> Config {
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let grp = nix::unistd::Group::from_gid(nix::unistd::getegid())
            .unwrap()
            .unwrap()
            .name;
        let mut text = format!("[drive]\nmount-point = \"{}\"\n", mount.display());
        for role in [
            "postgres",
            "media",
            "secrets",
            "throttle-key",
            "dumps",
            "state",
        ] {
            text.push_str(&format!(
                "[layout.{role}]\nowner = \"{me}\"\ngroup = \"{grp}\"\n"
            ));
        }
        Config::from_str_with_defaults(&text, Path::new("t.toml")).unwrap()
    }

    fn marker() -> Marker {
        Marker {
            format: 1,
            luks_uuid: "u".into(),
            prepared: "p".into(),
        }
    }

    #[test]
    fn refuses_a_drive_without_marker() {
        let d = tempfile::tempdir().unwrap();
        let err = ensure(&cfg_at(d.path())).unwrap_err();
        assert!(matches!(err, LayoutError::NotOurDrive { .. }), "{err}");
    }

    #[test]
    fn creates_then_repairs_modes() {
        let d = tempfile::tempdir().unwrap();
        let cfg = cfg_at(d.path());
        write_marker(&cfg, &marker()).unwrap();
        let r = ensure(&cfg).unwrap();
        assert!(r.created.contains(&d.path().join("postgres")));
        assert!(r.created.contains(&d.path().join("postgres/17")));
        let mode = |p: &str| std::fs::metadata(d.path().join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("postgres/17"), 0o700);
        assert_eq!(mode("state"), 0o755);
        std::fs::set_permissions(
            d.path().join("immich"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let r = ensure(&cfg).unwrap();
        assert!(r.created.is_empty());
        assert_eq!(r.repaired.len(), 1, "{:?}", r.repaired);
        assert_eq!(mode("immich"), 0o700);
        assert_eq!(
            ensure(&cfg).unwrap(),
            LayoutReport::default(),
            "a second check changes nothing"
        );
    }

    #[test]
    fn refuses_to_start_an_empty_cluster_after_a_major_upgrade() {
        let d = tempfile::tempdir().unwrap();
        let cfg = cfg_at(d.path());
        write_marker(&cfg, &marker()).unwrap();
        std::fs::create_dir_all(d.path().join("postgres/16")).unwrap();
        std::fs::write(d.path().join("postgres/16/PG_VERSION"), "16\n").unwrap();
        let err = ensure(&cfg).unwrap_err();
        match &err {
            LayoutError::PostgresMajorChanged {
                found, expected, ..
            } => {
                assert_eq!((found.as_str(), expected.as_str()), ("16", "17"));
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("docs/updating.md"));
        assert!(
            !d.path().join("postgres/17").exists(),
            "no empty cluster directory was created"
        );
    }
}
