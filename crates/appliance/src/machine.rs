//! What `start`, `stop`, `status` and `init` read from the machine (mounts, block devices,
//! free space, the processes holding a mount) and change on it outside the
//! other seams (the mount point's immutable flag, the drive's folders),
//! behind one trait, so that the lifecycle runs in `cargo test` against a
//! fake machine with a failure injected at every step.

use std::path::Path;

use crate::blockdev::{self, BlockDevice, DeviceError, MountEntry, Signature, Usage};
use crate::config::Config;
use crate::drive::{self, DriveError};
use crate::host::{self, Holder, Space};
use crate::layout::{self, LayoutError, LayoutReport};

pub trait Machine {
    /// The mount table (/proc/self/mountinfo).
    fn mounts(&self) -> Vec<MountEntry>;
    /// A device node or /dev/disk/by-* link, as the kernel sees it.
    fn resolve(&self, given: &Path) -> Result<BlockDevice, DeviceError>;
    /// What the device's first bytes hold.
    fn probe(&self, device: &Path) -> Result<Signature, DeviceError>;
    /// Who uses the device: mounts, swap, stacked devices.
    fn usage(&self, device: &BlockDevice, mounts: &[MountEntry]) -> Usage;
    /// The drive to unlock: the one given, or the remembered one.
    fn choose_drive(
        &self,
        given: Option<&Path>,
        remembered_file: &Path,
        subsystem: &str,
    ) -> Result<BlockDevice, DriveError>;
    /// The device number of a node, `None` when it is gone.
    fn device_number(&self, node: &Path) -> Option<(u32, u32)>;
    fn space(&self, path: &Path) -> std::io::Result<Space>;
    /// The processes keeping `dir` busy.
    fn holders(&self, dir: &Path) -> Vec<Holder>;
    fn set_immutable(&self, dir: &Path, on: bool) -> std::io::Result<()>;
    /// Checks and repairs the drive's folders (see `layout::ensure`).
    fn ensure_layout(&self, cfg: &Config) -> Result<LayoutReport, LayoutError>;
    /// Makes the folders of a new drive, with their owners and modes.
    fn create_layout(&self, cfg: &Config) -> Result<LayoutReport, LayoutError>;
}

/// This machine: /proc, /sys and /dev.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThisMachine;

impl Machine for ThisMachine {
    fn mounts(&self) -> Vec<MountEntry> {
        blockdev::mountinfo()
    }
    fn resolve(&self, given: &Path) -> Result<BlockDevice, DeviceError> {
        blockdev::resolve(given)
    }
    fn probe(&self, device: &Path) -> Result<Signature, DeviceError> {
        blockdev::probe(device)
    }
    fn usage(&self, device: &BlockDevice, mounts: &[MountEntry]) -> Usage {
        blockdev::usage(Path::new("/sys"), device, mounts)
    }
    fn choose_drive(
        &self,
        given: Option<&Path>,
        remembered_file: &Path,
        subsystem: &str,
    ) -> Result<BlockDevice, DriveError> {
        drive::choose(given, remembered_file, subsystem)
    }
    fn device_number(&self, node: &Path) -> Option<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(node).ok()?;
        Some((libc::major(md.rdev()), libc::minor(md.rdev())))
    }
    fn space(&self, path: &Path) -> std::io::Result<Space> {
        host::space(path)
    }
    fn holders(&self, dir: &Path) -> Vec<Holder> {
        host::holders_of(dir)
    }
    fn set_immutable(&self, dir: &Path, on: bool) -> std::io::Result<()> {
        host::set_immutable(dir, on)
    }
    fn ensure_layout(&self, cfg: &Config) -> Result<LayoutReport, LayoutError> {
        layout::ensure(cfg)
    }
    fn create_layout(&self, cfg: &Config) -> Result<LayoutReport, LayoutError> {
        let mut report = LayoutReport::default();
        for (_, dir) in cfg.layout.dirs() {
            layout::ensure_dir(&cfg.drive.mount_point, dir, &mut report)?;
        }
        Ok(report)
    }
}
