//! Immich's folder checks (its "system integrity" check): every folder of
//! the media location carries a `.immich` file, written on the first start.
//! Once a library has been started, Immich refuses to start when a folder's
//! file is missing, because the folder may be an empty mount where the
//! photos should be (immich-app/immich issues 17229 and 24174 are restores
//! that hit it).
//!
//! Immich remembers "checked before" in its database; the stand-in takes
//! any marker present as the sign of an earlier start, which is the same
//! in the appliance's cases: a new drive has none, a restored one has some.

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

/// Creates the folders and their markers on a first start; afterwards,
/// refuses a folder whose marker is missing, with Immich's message.
pub fn verify_or_create(media: &Path) -> Result<(), String> {
    let started_before = FOLDERS.iter().any(|f| media.join(f).join(MARKER).exists());
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
}
