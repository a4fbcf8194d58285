//! Immich's folder checks (its "system integrity" check): every folder of
//! the media location carries a `.immich` file, written on the first start.
//! Once a library has been started, Immich refuses to start when a folder's
//! file is missing, because the folder may be an empty mount where the
//! photos should be (immich-app/immich issues 17229 and 24174 are restores
//! that hit it).
//!
//! Immich remembers which folders it checked in its database (system
//! metadata), saved once the markers are written: a first start killed
//! half-way writes them again on the next one. The stand-in keeps that
//! record in a file at the media root, which a backup and a restore carry
//! as they carry Immich's database.

use std::fs;
use std::path::Path;

/// The folders Immich checks, as its StorageFolder enum names them.
pub const FOLDERS: [&str; 6] = [
    "library",
    "upload",
    "profile",
    "thumbs",
    "encoded-video",
    "backups",
];

pub const MARKER: &str = ".immich";

/// The stand-in's record of Immich's "folders checked" flags.
pub const CHECKED: &str = ".fake-immich-folders-checked";

/// Creates the folders and their markers on a first start; afterwards,
/// refuses a folder whose marker is missing, with Immich's message.
pub fn verify_or_create(media: &Path) -> Result<(), String> {
    let checked = media.join(CHECKED);
    let started_before = checked.exists();
    for f in FOLDERS {
        let marker = media.join(f).join(MARKER);
        if marker.exists() {
            continue;
        }
        if started_before {
            return Err(format!(
                "Failed to read \"{}\": ENOENT. Please see https://immich.app/docs/administration/system-integrity#folder-checks for more information",
                marker.display()
            ));
        }
        fs::create_dir_all(media.join(f))
            .and_then(|()| fs::write(&marker, b"first start\n"))
            .map_err(|e| format!("Failed to write \"{}\": {e}", marker.display()))?;
    }
    if !started_before {
        fs::write(&checked, FOLDERS.join("\n") + "\n")
            .map_err(|e| format!("Failed to write \"{}\": {e}", checked.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_start_writes_the_markers_a_later_one_needs_them() {
        let d = tempfile::tempdir().unwrap();
        verify_or_create(d.path()).unwrap();
        for f in FOLDERS {
            assert!(d.path().join(f).join(MARKER).is_file(), "{f}");
        }
        verify_or_create(d.path()).unwrap();
        fs::remove_file(d.path().join("thumbs").join(MARKER)).unwrap();
        let e = verify_or_create(d.path()).unwrap_err();
        assert!(
            e.contains("thumbs/.immich") && e.contains("folder-checks"),
            "{e}"
        );
        assert!(
            !d.path().join("thumbs").join(MARKER).exists(),
            "not recreated"
        );
    }

    /// A first start stopped after some markers (story 19 stopped one 0.1 s
    /// in) is no earlier start: the next one writes the rest.
    #[test]
    fn a_first_start_cut_short_is_finished_by_the_next() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("library")).unwrap();
        fs::write(d.path().join("library").join(MARKER), b"first start\n").unwrap();
        verify_or_create(d.path()).unwrap();
        for f in FOLDERS {
            assert!(d.path().join(f).join(MARKER).is_file(), "{f}");
        }
        assert!(d.path().join(CHECKED).is_file());
    }
}
