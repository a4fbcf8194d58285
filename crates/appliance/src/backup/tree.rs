//! Walking restored trees: counting files and bytes (to compare with the
//! snapshot) and setting the owner the services expect.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Regular files and their total size under a directory (symlinks are not
/// followed; a missing directory counts as empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.files += o.files;
        self.bytes += o.bytes;
    }
}

pub fn tally(dir: &Path) -> io::Result<Tally> {
    let mut t = Tally::default();
    walk(dir, |e, ft| {
        if ft.is_file() {
            t.files += 1;
            t.bytes += e.metadata()?.len();
        }
        Ok(true)
    })?;
    Ok(t)
}

/// Visits every entry below `dir` (not following symlinks) until `visit`
/// returns false; a missing directory has no entries.
fn walk(
    dir: &Path,
    mut visit: impl FnMut(&fs::DirEntry, fs::FileType) -> io::Result<bool>,
) -> io::Result<()> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if !visit(&e, ft)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Sets the owner of `dir` and everything below it (without following
/// symlinks). Returns how many entries changed.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<u64> {
    let mut changed = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if md.uid() != uid || md.gid() != gid {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
            changed += 1;
        }
        if md.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(changed)
}

/// Whether a directory holds any regular file, at any depth.
pub fn has_files(dir: &Path) -> io::Result<bool> {
    let mut found = false;
    walk(dir, |_, _| {
        found = true;
        Ok(false)
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_files_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(tally(&d.path().join("missing")).unwrap(), Tally::default());
        assert!(!has_files(d.path()).unwrap());
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        assert!(
            !has_files(d.path()).unwrap(),
            "empty directories hold no files"
        );
        fs::write(d.path().join("a/x"), b"12345").unwrap();
        fs::write(d.path().join("a/b/y"), b"123").unwrap();
        std::os::unix::fs::symlink("x", d.path().join("a/link")).unwrap();
        assert_eq!(tally(d.path()).unwrap(), Tally { files: 2, bytes: 8 });
        assert!(has_files(d.path()).unwrap());
    }

    #[test]
    fn chown_to_the_current_owner_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"x").unwrap();
        let md = fs::metadata(d.path()).unwrap();
        assert_eq!(chown_tree(d.path(), md.uid(), md.gid()).unwrap(), 0);
    }
}
