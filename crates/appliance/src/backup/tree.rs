//! Walking restored trees: counting files and bytes (to compare with the
//! snapshot) and setting the owner the services expect.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A tree counted the way rustic's snapshot summary counts it: every entry
/// that is not a directory is a "file" (symlinks, hard links by each name,
/// empty files, FIFOs), and the bytes are the regular files' sizes. rustic
/// adds a symlink's own size (its target's length) only when it was
/// unchanged since the parent snapshot, so that is kept apart. Symlinks are
/// not followed; a missing directory counts as empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
    pub symlink_bytes: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.symlink_bytes += o.symlink_bytes;
    }
}

impl Tally {
    /// Whether this tree is what a snapshot summary describes: the same
    /// entries, and the bytes within what the symlinks may add.
    pub fn matches(&self, files: u64, bytes: u64) -> bool {
        self.files == files && (self.bytes..=self.bytes + self.symlink_bytes).contains(&bytes)
    }
}

pub fn tally(dir: &Path) -> io::Result<Tally> {
    let mut t = Tally::default();
    walk(dir, |e, ft| {
        t.files += 1;
        if ft.is_file() {
            t.bytes += e.metadata()?.len();
        } else if ft.is_symlink() {
            t.symlink_bytes += fs::symlink_metadata(e.path())?.len();
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
        assert_eq!(
            tally(d.path()).unwrap(),
            Tally {
                files: 2,
                bytes: 8,
                symlink_bytes: 0
            }
        );
        assert!(has_files(d.path()).unwrap());
    }

    /// Every kind of entry a library may hold, with awkward names, counted as
    /// rustic's summary counts them (story 40 restores such a tree for real).
    #[test]
    fn counts_every_kind_of_entry_as_the_snapshot_does() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a dir/ünï cødé");
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(d.path().join("empty dir")).unwrap();
        fs::write(a.join("-leading dash.jpg"), b"12345").unwrap();
        fs::write(a.join("empty"), b"").unwrap();
        fs::hard_link(a.join("-leading dash.jpg"), a.join("hard link")).unwrap();
        std::os::unix::fs::symlink("-leading dash.jpg", a.join("sym link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", a.join("dangling")).unwrap();
        nix::unistd::mkfifo(&a.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let t = tally(d.path()).unwrap();
        assert_eq!(
            t,
            Tally {
                files: 6,
                bytes: 10,
                symlink_bytes: 17 + 8
            }
        );
        // A first snapshot adds nothing for symlinks, a later one their size.
        assert!(t.matches(6, 10) && t.matches(6, 35));
        assert!(!t.matches(5, 10) && !t.matches(6, 9) && !t.matches(6, 36));
    }

    #[test]
    fn chown_to_the_current_owner_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"x").unwrap();
        let md = fs::metadata(d.path()).unwrap();
        assert_eq!(chown_tree(d.path(), md.uid(), md.gid()).unwrap(), 0);
    }
}
