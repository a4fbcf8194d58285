//! Which drive is "the" drive: `init` remembers its LUKS UUID on the SD card
//! (not a secret), so `start` can find it by UUID and never has to guess
//! from /dev/sdX names, which change with plug order.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blockdev::{self, BlockDevice, DeviceError};
use crate::host;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Remembered {
    pub luks_uuid: String,
    /// When `init` prepared it (RFC 3339, UTC).
    pub prepared: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(
        "no drive given and none remembered. Pass --immich-drive /dev/sdX (the disks here are listed below), or prepare one with `immich-server init`.\n{0}"
    )]
    NoneRemembered(String),
    #[error(
        "the appliance drive (LUKS UUID {uuid}, prepared {prepared}) is not plugged in. Plug it in and try again, or pass --immich-drive for another drive. The disks here are:\n{disks}"
    )]
    NotPresent {
        uuid: String,
        prepared: String,
        disks: String,
    },
    #[error("cannot read the remembered drive in {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("cannot save the remembered drive to {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn load(path: &Path) -> Result<Option<Remembered>, DriveError> {
    match std::fs::read_to_string(path) {
        Ok(t) => toml::from_str(&t)
            .map(Some)
            .map_err(|e| DriveError::Corrupt {
                path: path.to_owned(),
                message: e.message().to_owned(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriveError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

pub fn save(path: &Path, r: &Remembered) -> Result<(), DriveError> {
    let text = format!(
        "# Written by `immich-server init`: the appliance drive's LUKS UUID (not a secret).\n{}",
        toml::to_string(r).expect("serialises")
    );
    host::write_atomic(path, text.as_bytes(), 0o644).map_err(|source| DriveError::Save {
        path: path.to_owned(),
        source,
    })
}

/// The device to unlock: the one given, or the remembered one by UUID.
pub fn choose(given: Option<&Path>, remembered_file: &Path) -> Result<BlockDevice, DriveError> {
    if let Some(p) = given {
        return Ok(blockdev::resolve(p)?);
    }
    let sys = Path::new("/sys");
    let r = load(remembered_file)?
        .ok_or_else(|| DriveError::NoneRemembered(blockdev::disk_list(sys)))?;
    let link = by_uuid(&r.luks_uuid);
    if !link.exists() {
        return Err(DriveError::NotPresent {
            uuid: r.luks_uuid,
            prepared: r.prepared,
            disks: blockdev::disk_list(sys),
        });
    }
    Ok(blockdev::resolve(&link)?)
}

pub fn by_uuid(uuid: &str) -> PathBuf {
    Path::new("/dev/disk/by-uuid").join(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("drive.toml");
        assert_eq!(load(&f).unwrap(), None);
        let r = Remembered {
            luks_uuid: "0c1f2e3d-aaaa-bbbb-cccc-1234567890ab".into(),
            prepared: "2026-11-21T10:00:00Z".into(),
        };
        save(&f, &r).unwrap();
        assert_eq!(load(&f).unwrap(), Some(r));
        std::fs::write(&f, "luks-uuid = 1\n").unwrap();
        assert!(matches!(load(&f), Err(DriveError::Corrupt { .. })));
    }

    #[test]
    fn nothing_remembered_and_nothing_given_is_an_error_not_a_guess() {
        let d = tempfile::tempdir().unwrap();
        let err = choose(None, &d.path().join("none.toml")).unwrap_err();
        assert!(matches!(err, DriveError::NoneRemembered(_)));
        assert!(err.to_string().contains("--immich-drive"));
    }

    #[test]
    fn a_remembered_drive_that_is_absent_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("drive.toml");
        save(
            &f,
            &Remembered {
                luks_uuid: "00000000-0000-0000-0000-00000000dead".into(),
                prepared: "2026-01-01T00:00:00Z".into(),
            },
        )
        .unwrap();
        let err = choose(None, &f).unwrap_err().to_string();
        assert!(err.contains("not plugged in"), "{err}");
        assert!(
            err.contains("00000000-0000-0000-0000-00000000dead"),
            "{err}"
        );
    }
}
