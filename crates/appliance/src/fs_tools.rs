//! The ext4 filesystem on the drive: its superblock state, e2fsck and
//! mkfs.ext4 (from e2fsprogs), behind one trait.

use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot read the filesystem superblock of {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no ext4 filesystem; was the drive prepared with `immich-server init`?")]
    NotExt4(String),
    #[error("cannot run {tool}: {source} (is e2fsprogs installed?)")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the filesystem on {path} has errors that `e2fsck -p` could not fix (exit {code}). Nothing was mounted. Repair it by hand: `e2fsck -f {path}` (see docs/after-a-reboot.md){output}",
        output = if output.trim().is_empty() { String::new() } else { format!("\n{}", output.trim_end()) }
    )]
    Unrepaired {
        path: String,
        code: i32,
        output: String,
    },
    #[error("mkfs.ext4 on {path} failed (exit {code}): {output}")]
    Mkfs {
        path: String,
        code: i32,
        output: String,
    },
}

/// What the ext4 superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4State {
    /// Cleanly unmounted and without recorded errors.
    pub clean: bool,
    /// The journal has to be replayed (power loss while mounted).
    pub needs_recovery: bool,
    pub has_errors: bool,
    pub label: String,
}

impl Ext4State {
    pub fn needs_fsck(&self) -> bool {
        !self.clean || self.needs_recovery || self.has_errors
    }
}

/// Parses the ext2/3/4 superblock (the 1024 bytes at offset 1024).
pub fn parse_superblock(sb: &[u8]) -> Option<Ext4State> {
    let u16le = |o: usize| sb.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32le = |o: usize| {
        sb.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u16le(0x38)? != 0xEF53 {
        return None;
    }
    let state = u16le(0x3A)?;
    let incompat = u32le(0x60)?;
    const VALID_FS: u16 = 0x1;
    const ERROR_FS: u16 = 0x2;
    const INCOMPAT_RECOVER: u32 = 0x4;
    let label = sb
        .get(0x78..0x88)
        .map(|b| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        })
        .unwrap_or_default();
    Some(Ext4State {
        clean: state & VALID_FS != 0,
        has_errors: state & ERROR_FS != 0,
        needs_recovery: incompat & INCOMPAT_RECOVER != 0,
        label,
    })
}

pub trait Filesystem {
    fn state(&self, device: &Path) -> Result<Ext4State, FsError>;
    /// `e2fsck -p`: repairs what is safe to repair without asking.
    fn check(&self, device: &Path) -> Result<String, FsError>;
    fn make(&self, device: &Path, label: &str) -> Result<(), FsError>;
}

/// The real tools, by path from the config's [tools].
#[derive(Debug, Clone)]
pub struct E2fsprogs {
    pub e2fsck: String,
    pub mkfs: String,
}

impl Filesystem for E2fsprogs {
    fn state(&self, device: &Path) -> Result<Ext4State, FsError> {
        use std::io::{Read, Seek, SeekFrom};
        let read_err = |source| FsError::Read {
            path: device.display().to_string(),
            source,
        };
        let mut f = std::fs::File::open(device).map_err(read_err)?;
        let mut sb = [0u8; 1024];
        f.seek(SeekFrom::Start(1024)).map_err(read_err)?;
        f.read_exact(&mut sb).map_err(read_err)?;
        parse_superblock(&sb).ok_or_else(|| FsError::NotExt4(device.display().to_string()))
    }

    fn check(&self, device: &Path) -> Result<String, FsError> {
        let out = Command::new(&self.e2fsck)
            .arg("-p")
            .arg(device)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| FsError::Spawn {
                tool: self.e2fsck.clone(),
                source,
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // 0: clean; 1: errors corrected; 2: corrected, reboot advised (only
        // matters for the root filesystem). 4 and up: not fixed.
        match out.status.code() {
            Some(0..=2) => Ok(text),
            code => Err(FsError::Unrepaired {
                path: device.display().to_string(),
                code: code.unwrap_or(-1),
                output: text,
            }),
        }
    }

    fn make(&self, device: &Path, label: &str) -> Result<(), FsError> {
        // -m 1: a data drive needs little space reserved for root.
        let out = Command::new(&self.mkfs)
            .args(["-q", "-F", "-m", "1", "-L", label])
            .arg(device)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| FsError::Spawn {
                tool: self.mkfs.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(FsError::Mkfs {
                path: device.display().to_string(),
                code: out.status.code().unwrap_or(-1),
                output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(state: u16, incompat: u32) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[0x3A..0x3C].copy_from_slice(&state.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        b[0x78..0x7E].copy_from_slice(b"immich");
        b
    }

    #[test]
    fn superblock_states() {
        let clean = parse_superblock(&sb(1, 0x2c2)).unwrap();
        assert!(!clean.needs_fsck());
        assert_eq!(clean.label, "immich");
        let dirty = parse_superblock(&sb(1, 0x2c2 | 0x4)).unwrap();
        assert!(dirty.needs_recovery && dirty.needs_fsck());
        let errors = parse_superblock(&sb(3, 0)).unwrap();
        assert!(errors.has_errors && errors.needs_fsck());
        let not_valid = parse_superblock(&sb(0, 0)).unwrap();
        assert!(not_valid.needs_fsck());
        assert_eq!(parse_superblock(&[0u8; 1024]), None);
    }

    #[test]
    fn unrepaired_message_tells_what_to_do() {
        let e = FsError::Unrepaired {
            path: "/dev/mapper/immich-data".into(),
            code: 4,
            output: "UNEXPECTED INCONSISTENCY".into(),
        };
        let m = e.to_string();
        assert!(m.contains("e2fsck -f /dev/mapper/immich-data"), "{m}");
        assert!(m.contains("Nothing was mounted"), "{m}");
    }
}
