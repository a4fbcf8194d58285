//! Block devices: what the user typed, the disk behind it, what it holds and
//! who uses it. Facts come from sysfs, /proc/self/mountinfo and the first
//! bytes of the device; nothing here writes.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0} does not exist. Plugged in? The disks here are:\n{1}")]
    Missing(PathBuf, String),
    #[error(
        "{0} is not a block device (give a disk such as /dev/sda, or a /dev/disk/by-id/... link)"
    )]
    NotBlock(PathBuf),
    #[error("cannot inspect {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError + '_ {
    move |source| DeviceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A block device as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockDevice {
    /// The path the user gave (a by-id link, say).
    pub given: PathBuf,
    /// The device node, e.g. /dev/sda1.
    pub path: PathBuf,
    /// The kernel name, e.g. sda1.
    pub name: String,
    pub major: u32,
    pub minor: u32,
    /// The whole disk it belongs to (its own name for a whole disk).
    pub disk: String,
    pub is_partition: bool,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub read_only: bool,
}

impl BlockDevice {
    pub fn devno(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// A one-line description: "/dev/sda (SanDisk Extreme, 1.0 TB)".
    pub fn describe(&self) -> String {
        let model = [self.vendor.as_deref(), self.model.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let model = if model.is_empty() {
            "unknown model".to_owned()
        } else {
            model
        };
        format!(
            "{} ({model}, {})",
            self.path.display(),
            crate::units::human_bytes(self.size_bytes)
        )
    }
}

/// Resolves `given` (a node or any /dev/disk/by-* link) to the device.
pub fn resolve(given: &Path) -> Result<BlockDevice, DeviceError> {
    resolve_in(Path::new("/sys"), given)
}

pub fn resolve_in(sys: &Path, given: &Path) -> Result<BlockDevice, DeviceError> {
    if !given.exists() {
        return Err(DeviceError::Missing(given.to_owned(), disk_list(sys)));
    }
    let path = given.canonicalize().map_err(io(given))?;
    let meta = fs::metadata(&path).map_err(io(&path))?;
    if !meta.file_type().is_block_device() {
        return Err(DeviceError::NotBlock(given.to_owned()));
    }
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let mut dev = from_devno(sys, major, minor)?;
    dev.given = given.to_owned();
    dev.path = path;
    Ok(dev)
}

/// The device with this major:minor, from sysfs alone.
pub fn from_devno(sys: &Path, major: u32, minor: u32) -> Result<BlockDevice, DeviceError> {
    let link = sys.join(format!("dev/block/{major}:{minor}"));
    let syspath = link.canonicalize().map_err(io(&link))?;
    let name = file_name(&syspath);
    let is_partition = syspath.join("partition").exists();
    let disk_path = if is_partition {
        syspath
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| syspath.clone())
    } else {
        syspath.clone()
    };
    let disk = file_name(&disk_path);
    let read = |p: PathBuf| {
        fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let size_bytes = read(syspath.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 512;
    Ok(BlockDevice {
        given: PathBuf::from(format!("/dev/{name}")),
        path: PathBuf::from(format!("/dev/{name}")),
        name,
        major,
        minor,
        disk,
        is_partition,
        size_bytes,
        model: read(disk_path.join("device/model")),
        vendor: read(disk_path.join("device/vendor")),
        read_only: read(syspath.join("ro")).as_deref() == Some("1"),
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Partitions of a whole disk, by kernel name.
pub fn partitions(sys: &Path, disk: &str) -> Vec<String> {
    let dir = sys.join("class/block").join(disk);
    let mut parts: Vec<String> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("partition").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    parts
}

/// Device-mapper devices stacked on `name`: (kernel name, dm name).
pub fn holders(sys: &Path, name: &str) -> Vec<(String, String)> {
    let dir = sys.join("class/block").join(name).join("holders");
    let mut out: Vec<(String, String)> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let k = e.file_name().to_string_lossy().into_owned();
            let dm = fs::read_to_string(sys.join("class/block").join(&k).join("dm/name"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| k.clone());
            (k, dm)
        })
        .collect();
    out.sort();
    out
}

/// Kernel names of the block devices a drive may be: disks and partitions,
/// not loop, RAM, device-mapper or optical devices.
fn drive_names(sys: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sys.join("class/block"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "zram", "dm-", "sr", "nbd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    names.sort();
    names
}

/// The disks (not partitions) that the kernel knows, for hints.
pub fn disk_list(sys: &Path) -> String {
    let mut lines = vec![];
    for n in drive_names(sys) {
        let base = sys.join("class/block").join(&n);
        if base.join("partition").exists() {
            continue;
        }
        let Some(devno) = fs::read_to_string(base.join("dev")).ok() else {
            continue;
        };
        let Some((ma, mi)) = devno.trim().split_once(':') else {
            continue;
        };
        if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse())
            && let Ok(d) = from_devno(sys, ma, mi)
        {
            lines.push(format!("  {}", d.describe()));
        }
    }
    if lines.is_empty() {
        "  (none found)".to_owned()
    } else {
        lines.join("\n")
    }
}

/// The devices under `dev` whose LUKS2 header carries the appliance's
/// subsystem mark, with their UUIDs: prepared by `init`, on this SD card or
/// another. Devices that cannot be read (not root) are passed over.
pub fn appliance_drives(sys: &Path, dev: &Path, subsystem: &str) -> Vec<(PathBuf, String)> {
    drive_names(sys)
        .into_iter()
        .filter_map(|n| {
            let path = dev.join(&n);
            match probe(&path) {
                Ok(Signature::Luks {
                    uuid, subsystem: s, ..
                }) if s == subsystem => Some((path, uuid)),
                _ => None,
            }
        })
        .collect()
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

pub fn mountinfo() -> Vec<MountEntry> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (ma, mi) = l.get(2)?.split_once(':')?;
            Some(MountEntry {
                major: ma.parse().ok()?,
                minor: mi.parse().ok()?,
                mount_point: PathBuf::from(unescape_octal(l.get(4)?)),
                options: l.get(5)?.to_string(),
                fstype: r.first()?.to_string(),
                source: unescape_octal(r.get(1)?),
            })
        })
        .collect()
}

/// Undoes the kernel's \ooo escaping of spaces, tabs, newlines and backslashes.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount entries of exactly this mount point, innermost last.
pub fn mounts_at<'a>(mounts: &'a [MountEntry], point: &Path) -> Vec<&'a MountEntry> {
    mounts.iter().filter(|m| m.mount_point == point).collect()
}

/// The whole disks behind the running system (/, /boot, /nix), following
/// device-mapper stacks down to the disks. `init` never touches these.
pub fn system_disks(sys: &Path, mounts: &[MountEntry]) -> BTreeSet<String> {
    let mut disks = BTreeSet::new();
    for point in [
        "/",
        "/boot",
        "/boot/firmware",
        "/nix",
        "/nix/store",
        "/usr",
        "/var",
    ] {
        for m in mounts_at(mounts, Path::new(point)) {
            if m.major == 0 {
                continue; // tmpfs, overlay and friends
            }
            if let Ok(d) = from_devno(sys, m.major, m.minor) {
                disks.extend(underlying_disks(sys, &d.name));
            }
        }
    }
    disks
}

/// The whole disks a device sits on (itself, its parent, or a dm stack's slaves).
pub fn underlying_disks(sys: &Path, name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let base = sys.join("class/block").join(name);
    let slaves: Vec<String> = fs::read_dir(base.join("slaves"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !slaves.is_empty() {
        for s in slaves {
            out.extend(underlying_disks(sys, &s));
        }
        return out;
    }
    if base.join("partition").exists() {
        if let Ok(p) = base.canonicalize()
            && let Some(parent) = p.parent()
        {
            out.insert(file_name(parent));
        }
    } else {
        out.insert(name.to_owned());
    }
    out
}

/// Who uses a device or its partitions: mounts, swap and stacked devices.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub mounted_at: Vec<(String, PathBuf)>,
    pub swap: Vec<String>,
    /// Device-mapper names stacked on it (a LUKS mapping, LVM, ...).
    pub holders: Vec<String>,
}

impl Usage {
    pub fn is_free(&self) -> bool {
        self.mounted_at.is_empty() && self.swap.is_empty() && self.holders.is_empty()
    }
}

pub fn usage(sys: &Path, dev: &BlockDevice, mounts: &[MountEntry]) -> Usage {
    let mut names = vec![dev.name.clone()];
    if !dev.is_partition {
        names.extend(partitions(sys, &dev.name));
    }
    let mut u = Usage::default();
    let mut devnos: Vec<(String, u32, u32)> = vec![];
    for n in &names {
        if let Some((ma, mi)) = devno_of(sys, n) {
            devnos.push((n.clone(), ma, mi));
        }
        for (k, dm) in holders(sys, n) {
            u.holders.push(dm.clone());
            if let Some((ma, mi)) = devno_of(sys, &k) {
                devnos.push((format!("mapper/{dm}"), ma, mi));
            }
        }
    }
    for m in mounts {
        if let Some((n, _, _)) = devnos
            .iter()
            .find(|(_, ma, mi)| *ma == m.major && *mi == m.minor)
        {
            u.mounted_at.push((n.clone(), m.mount_point.clone()));
        }
    }
    if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let src = line.split_whitespace().next().unwrap_or("");
            if names.iter().any(|n| src == format!("/dev/{n}")) {
                u.swap.push(src.to_owned());
            }
        }
    }
    u.holders.sort();
    u.holders.dedup();
    u
}

fn devno_of(sys: &Path, name: &str) -> Option<(u32, u32)> {
    let s = fs::read_to_string(sys.join("class/block").join(name).join("dev")).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What the first bytes of a device hold, for `init`'s warning and for
/// telling a LUKS drive from a plain one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Signature {
    /// `subsystem` is the LUKS2 header's free-text subsystem field, which
    /// `init` sets to `drive.luks-subsystem`: readable while locked.
    Luks {
        version: u16,
        uuid: String,
        subsystem: String,
    },
    Ext {
        label: String,
    },
    Vfat,
    Ntfs,
    Exfat,
    Btrfs,
    Xfs,
    Swap,
    Gpt,
    Mbr,
    Empty,
    Unknown,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signature::Luks {
                version,
                uuid,
                subsystem,
            } if subsystem.is_empty() => write!(f, "LUKS{version} encrypted (UUID {uuid})"),
            Signature::Luks {
                version,
                uuid,
                subsystem,
            } => write!(
                f,
                "LUKS{version} encrypted (UUID {uuid}), marked \"{subsystem}\""
            ),
            Signature::Ext { label } if label.is_empty() => write!(f, "ext2/3/4 filesystem"),
            Signature::Ext { label } => write!(f, "ext2/3/4 filesystem labelled \"{label}\""),
            Signature::Vfat => write!(f, "FAT filesystem"),
            Signature::Ntfs => write!(f, "NTFS filesystem"),
            Signature::Exfat => write!(f, "exFAT filesystem"),
            Signature::Btrfs => write!(f, "btrfs filesystem"),
            Signature::Xfs => write!(f, "XFS filesystem"),
            Signature::Swap => write!(f, "swap space"),
            Signature::Gpt => write!(f, "GPT partition table"),
            Signature::Mbr => write!(f, "MBR partition table"),
            Signature::Empty => write!(f, "nothing (all zeros at the start)"),
            Signature::Unknown => write!(f, "unrecognised data"),
        }
    }
}

/// Bytes read from the start of a device to probe it.
pub const PROBE_BYTES: usize = 65536 + 4096;

pub fn probe(path: &Path) -> Result<Signature, DeviceError> {
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; PROBE_BYTES];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(path)(e)),
        }
    }
    buf.truncate(n);
    Ok(signature(&buf))
}

pub fn signature(b: &[u8]) -> Signature {
    let at = |off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    let cstr = |off: usize, len: usize| {
        b.get(off..off + len)
            .map(|s| {
                let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).trim().to_owned()
            })
            .unwrap_or_default()
    };
    if at(0, b"LUKS\xba\xbe") {
        let version = b
            .get(6..8)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
            .unwrap_or(0);
        return Signature::Luks {
            version,
            uuid: cstr(168, 40),
            // LUKS1 headers have no such field (their bytes there are key slots).
            subsystem: if version == 2 {
                cstr(208, 48)
            } else {
                String::new()
            },
        };
    }
    if at(1024 + 56, &[0x53, 0xEF]) {
        return Signature::Ext {
            label: cstr(1024 + 120, 16),
        };
    }
    if at(0, b"XFSB") {
        return Signature::Xfs;
    }
    if at(3, b"NTFS    ") {
        return Signature::Ntfs;
    }
    if at(3, b"EXFAT   ") {
        return Signature::Exfat;
    }
    if at(65536 + 64, b"_BHRfS_M") {
        return Signature::Btrfs;
    }
    if at(4096 - 10, b"SWAPSPACE2") {
        return Signature::Swap;
    }
    if at(512, b"EFI PART") {
        return Signature::Gpt;
    }
    if at(510, &[0x55, 0xAA]) {
        if at(82, b"FAT32") || at(54, b"FAT1") {
            return Signature::Vfat;
        }
        return Signature::Mbr;
    }
    if b.iter().take(PROBE_BYTES).all(|c| *c == 0) {
        return Signature::Empty;
    }
    Signature::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes() {
        let text = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
36 22 253:0 / /srv/my\\040photos rw,nosuid,nodev,noatime shared:5 - ext4 /dev/mapper/immich-data rw
40 22 0:21 / /run rw,nosuid - tmpfs tmpfs rw,mode=755
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, Path::new("/srv/my photos"));
        assert_eq!((m[1].major, m[1].minor), (253, 0));
        assert_eq!(m[1].source, "/dev/mapper/immich-data");
        assert_eq!(m[1].options, "rw,nosuid,nodev,noatime");
        assert_eq!(m[2].fstype, "tmpfs");
        assert_eq!(mounts_at(&m, Path::new("/")).len(), 1);
    }

    #[test]
    fn recognises_signatures() {
        let mut b = vec![0u8; PROBE_BYTES];
        assert_eq!(signature(&b), Signature::Empty);
        b[0..6].copy_from_slice(b"LUKS\xba\xbe");
        b[7] = 2;
        b[168..168 + 36].copy_from_slice(b"0c1f2e3d-aaaa-bbbb-cccc-1234567890ab");
        assert_eq!(
            signature(&b),
            Signature::Luks {
                version: 2,
                uuid: "0c1f2e3d-aaaa-bbbb-cccc-1234567890ab".into(),
                subsystem: String::new(),
            }
        );
        b[208..208 + 16].copy_from_slice(b"immich-appliance");
        assert_eq!(
            signature(&b).to_string(),
            "LUKS2 encrypted (UUID 0c1f2e3d-aaaa-bbbb-cccc-1234567890ab), marked \"immich-appliance\""
        );
        // LUKS1 has key-slot bytes there, not a subsystem.
        b[7] = 1;
        assert!(matches!(signature(&b), Signature::Luks { subsystem, .. } if subsystem.is_empty()));
        let mut e = vec![0u8; PROBE_BYTES];
        e[1024 + 56] = 0x53;
        e[1024 + 57] = 0xEF;
        e[1024 + 120..1024 + 126].copy_from_slice(b"photos");
        assert_eq!(
            signature(&e),
            Signature::Ext {
                label: "photos".into()
            }
        );
        let mut g = vec![0u8; PROBE_BYTES];
        g[510] = 0x55;
        g[511] = 0xAA;
        assert_eq!(signature(&g), Signature::Mbr);
        g[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(signature(&g), Signature::Gpt);
        let mut f = vec![1u8; 600];
        f[510] = 0x55;
        f[511] = 0xAA;
        f[82..87].copy_from_slice(b"FAT32");
        assert_eq!(signature(&f), Signature::Vfat);
        assert_eq!(signature(&[7u8; 100]), Signature::Unknown);
    }

    #[test]
    fn human_sizes() {}

    /// A fake sysfs tree: sda with sda1 and sda2, dm-0 on sda2 (LUKS), and
    /// mmcblk0 with mmcblk0p2 holding /.
    fn fake_sys() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        let mk = |rel: &str, files: &[(&str, &str)]| {
            let d = s.join(rel);
            fs::create_dir_all(&d).unwrap();
            for (f, c) in files {
                fs::write(d.join(f), c).unwrap();
            }
        };
        mk(
            "devices/usb/sda",
            &[("dev", "8:0\n"), ("size", "2000\n"), ("ro", "0\n")],
        );
        mk(
            "devices/usb/sda/device",
            &[("model", "Extreme  \n"), ("vendor", "SanDisk\n")],
        );
        mk(
            "devices/usb/sda/sda1",
            &[("dev", "8:1\n"), ("partition", "1\n"), ("size", "1000\n")],
        );
        mk(
            "devices/usb/sda/sda2",
            &[("dev", "8:2\n"), ("partition", "2\n"), ("size", "1000\n")],
        );
        mk("devices/usb/sda/sda2/holders", &[]);
        mk(
            "devices/virtual/dm-0",
            &[("dev", "253:0\n"), ("size", "990\n")],
        );
        mk("devices/virtual/dm-0/dm", &[("name", "immich-data\n")]);
        mk("devices/virtual/dm-0/slaves", &[]);
        mk(
            "devices/mmc/mmcblk0",
            &[("dev", "179:0\n"), ("size", "64000\n")],
        );
        mk(
            "devices/mmc/mmcblk0/mmcblk0p2",
            &[("dev", "179:2\n"), ("partition", "2\n")],
        );
        mk("class/block", &[]);
        mk("dev/block", &[]);
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(s.join(target), s.join(at)).unwrap()
        };
        for (t, n) in [
            ("devices/usb/sda", "sda"),
            ("devices/usb/sda/sda1", "sda1"),
            ("devices/usb/sda/sda2", "sda2"),
            ("devices/virtual/dm-0", "dm-0"),
            ("devices/mmc/mmcblk0", "mmcblk0"),
            ("devices/mmc/mmcblk0/mmcblk0p2", "mmcblk0p2"),
        ] {
            link(t, &format!("class/block/{n}"));
        }
        for (t, n) in [
            ("devices/usb/sda", "8:0"),
            ("devices/usb/sda/sda1", "8:1"),
            ("devices/usb/sda/sda2", "8:2"),
            ("devices/virtual/dm-0", "253:0"),
            ("devices/mmc/mmcblk0", "179:0"),
            ("devices/mmc/mmcblk0/mmcblk0p2", "179:2"),
        ] {
            link(t, &format!("dev/block/{n}"));
        }
        link("devices/virtual/dm-0", "devices/usb/sda/sda2/holders/dm-0");
        link("devices/usb/sda/sda2", "devices/virtual/dm-0/slaves/sda2");
        t
    }

    #[test]
    fn sysfs_facts() {
        let t = fake_sys();
        let s = t.path();
        let sda = from_devno(s, 8, 0).unwrap();
        assert_eq!(sda.name, "sda");
        assert!(!sda.is_partition);
        assert_eq!(sda.size_bytes, 2000 * 512);
        assert_eq!(sda.describe(), "/dev/sda (SanDisk Extreme, 1000.0 KiB)");
        let p = from_devno(s, 8, 2).unwrap();
        assert!(p.is_partition);
        assert_eq!(p.disk, "sda");
        assert_eq!(partitions(s, "sda"), ["sda1", "sda2"]);
        assert_eq!(
            holders(s, "sda2"),
            [("dm-0".to_owned(), "immich-data".to_owned())]
        );
        assert_eq!(
            underlying_disks(s, "dm-0"),
            BTreeSet::from(["sda".to_owned()])
        );
        let listing = disk_list(s);
        assert!(listing.contains("/dev/sda (SanDisk Extreme"), "{listing}");
        assert!(
            !listing.contains("dm-0") && !listing.contains("sda1"),
            "{listing}"
        );
    }

    #[test]
    fn system_disk_and_usage() {
        let t = fake_sys();
        let s = t.path();
        let mounts = parse_mountinfo(
            "1 0 179:2 / / rw - ext4 /dev/mmcblk0p2 rw\n\
             2 1 253:0 / /srv/immich rw - ext4 /dev/mapper/immich-data rw\n",
        );
        assert_eq!(
            system_disks(s, &mounts),
            BTreeSet::from(["mmcblk0".to_owned()])
        );
        let sda = from_devno(s, 8, 0).unwrap();
        let u = usage(s, &sda, &mounts);
        assert_eq!(u.holders, ["immich-data"]);
        assert_eq!(
            u.mounted_at,
            [(
                "mapper/immich-data".to_owned(),
                PathBuf::from("/srv/immich")
            )]
        );
        assert!(!u.is_free());
        let sda1 = from_devno(s, 8, 1).unwrap();
        assert!(usage(s, &sda1, &mounts).is_free());
    }
}
