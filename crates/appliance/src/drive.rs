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
        "no drive given and none remembered. Pass --immich-drive /dev/sdX (the disks here are listed below), or prepare one with `sudo immich-server init --immich-drive /dev/sdX`.\n{0}"
    )]
    NoneRemembered(String),
    #[error(
        "this SD card remembers no drive, but {} looks like your appliance drive (its LUKS header says `immich-server init` prepared it). Unlock it with:\n    sudo immich-server --start --immich-drive {}\n(it is remembered from then on). Do not run init on it: that erases it", .found[0].display(), .found[0].display()
    )]
    NotRemembered { found: Vec<PathBuf> },
    #[error(
        "the appliance drive (LUKS UUID {uuid}, prepared {prepared}) is not plugged in. Plug it in and try again, or pass --immich-drive for another drive. The disks here are:\n{disks}"
    )]
    NotPresent {
        uuid: String,
        prepared: String,
        disks: String,
    },
    #[error(
        "the file that remembers the drive, {path}, is damaged ({message}). Remove it with `sudo rm {path}`, then start with `sudo immich-server --start --immich-drive /dev/sdX`, which remembers the drive again"
    )]
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
/// With neither, a drive whose LUKS header carries `subsystem` is named in
/// the error (a new SD card with the old drive), never unlocked unasked.
pub fn choose(
    given: Option<&Path>,
    remembered_file: &Path,
    subsystem: &str,
) -> Result<BlockDevice, DriveError> {
    if let Some(p) = given {
        return Ok(blockdev::resolve(p)?);
    }
    let sys = Path::new("/sys");
    let Some(r) = load(remembered_file)? else {
        return Err(unremembered(sys, Path::new("/dev"), subsystem));
    };
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

/// The error for "nothing remembered": naming the appliance drives plugged
/// in, if there are any.
pub fn unremembered(sys: &Path, dev: &Path, subsystem: &str) -> DriveError {
    let found: Vec<PathBuf> = blockdev::appliance_drives(sys, dev, subsystem)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    if found.is_empty() {
        DriveError::NoneRemembered(blockdev::disk_list(sys))
    } else {
        DriveError::NotRemembered { found }
    }
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
        let err = choose(None, &d.path().join("none.toml"), "no-such-mark").unwrap_err();
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
        let err = choose(None, &f, "immich-appliance")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not plugged in"), "{err}");
        assert!(
            err.contains("00000000-0000-0000-0000-00000000dead"),
            "{err}"
        );
    }

    /// A fake /sys and /dev: three drives, one of them marked by init.
    fn drives_with_one_marked(root: &Path) -> (PathBuf, PathBuf) {
        let (sys, dev) = (root.join("sys"), root.join("dev"));
        std::fs::create_dir_all(&dev).unwrap();
        for (name, subsystem) in [
            ("sda", ""),
            ("sdb", "immich-appliance"),
            ("loop0", "immich-appliance"),
        ] {
            std::fs::create_dir_all(sys.join("class/block").join(name)).unwrap();
            let mut header = vec![0u8; 4096];
            header[0..6].copy_from_slice(b"LUKS\xba\xbe");
            header[7] = 2;
            header[168..172].copy_from_slice(b"uuid");
            header[208..208 + subsystem.len()].copy_from_slice(subsystem.as_bytes());
            std::fs::write(dev.join(name), header).unwrap();
        }
        (sys, dev)
    }

    #[test]
    fn an_unremembered_appliance_drive_is_named_with_the_command_to_unlock_it() {
        let d = tempfile::tempdir().unwrap();
        let (sys, dev) = drives_with_one_marked(d.path());
        let err = unremembered(&sys, &dev, "immich-appliance");
        let sdb = dev.join("sdb");
        assert!(
            matches!(&err, DriveError::NotRemembered { found } if found == std::slice::from_ref(&sdb)),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "sudo immich-server --start --immich-drive {}",
                sdb.display()
            )),
            "{text}"
        );
        assert!(
            !text.contains("sudo immich-server init"),
            "no advice to erase it: {text}"
        );
        // Without the mark it is just "none remembered".
        assert!(matches!(
            unremembered(&sys, &dev, "other-mark"),
            DriveError::NoneRemembered(_)
        ));
    }

    #[test]
    fn a_damaged_remembered_file_says_so_and_how_to_repair_it() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("drive.toml");
        std::fs::write(&f, "luks-uuid = \"x\"\nprepared = \n").unwrap();
        let err = choose(None, &f, "immich-appliance").unwrap_err();
        assert!(matches!(err, DriveError::Corrupt { .. }));
        let text = err.to_string();
        assert!(
            text.contains("is damaged") && text.contains("sudo rm"),
            "{text}"
        );
    }
}
