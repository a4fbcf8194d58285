//! `immich-server init`: prepares a new drive. Destructive, so it shows what
//! is on the drive, refuses the system disk and anything in use, and wants
//! the device name typed back (or `--yes --force` in scripts).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::blockdev::{self, BlockDevice};
use crate::config::Config;
use crate::drive;
use crate::exit::Exit;
use crate::host;
use crate::interrupt;
use crate::layout::{self, LayoutReport, Marker};
use crate::lifecycle::{Parts, Progress};
use crate::luks::{self, Kdf};
use crate::secret::{self, Passphrase, Source};
use crate::systemd::{self, MountSpec};

/// Bytes a new drive passphrase needs at least.
pub const MIN_PASSPHRASE: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Device(#[from] blockdev::DeviceError),
    #[error(
        "{0} holds the running system (the SD card). Refusing to touch it; give the USB drive instead. The disks here are:\n{1}"
    )]
    SystemDisk(PathBuf, String),
    #[error("{0} is in use: {1}. Unmount it first; init never formats a drive in use")]
    InUse(PathBuf, String),
    #[error("{0} is read-only (a write-protect switch?)")]
    ReadOnly(PathBuf),
    #[error(
        "the appliance drive is unlocked right now (/dev/mapper/{0}); stop it with `sudo immich-server --stop` before preparing another drive"
    )]
    ApplianceRunning(String),
    #[error("not confirmed; nothing was changed")]
    NotConfirmed,
    #[error("no terminal to confirm on; in a script pass both --yes and --force")]
    NoTty,
    #[error("--yes and --force go together; pass both to skip the confirmation")]
    HalfForced,
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error(
        "{step} failed: {message}. The drive is partly prepared and holds nothing yet; run `sudo immich-server init` again"
    )]
    Step { step: &'static str, message: String },
    #[error(
        "{0}. The drive is partly prepared, holds nothing yet and is locked again; run `sudo immich-server init` again"
    )]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

impl InitError {
    pub fn exit(&self) -> Exit {
        match self {
            InitError::NotConfirmed => Exit::Aborted,
            InitError::Device(_)
            | InitError::SystemDisk(..)
            | InitError::InUse(..)
            | InitError::ReadOnly(_)
            | InitError::ApplianceRunning(_) => Exit::Drive,
            InitError::HalfForced => Exit::Usage,
            InitError::Interrupted(_) => Exit::Interrupted,
            _ => Exit::Failure,
        }
    }
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub device: PathBuf,
    pub yes: bool,
    pub force: bool,
    pub passphrase: Source,
    pub kdf: Kdf,
    /// A cipher set by `--cipher` or `drive.cipher`; None measures.
    pub cipher: Option<crate::cipher::Cipher>,
}

/// What `init` found on the drive before formatting it.
#[derive(Debug, Serialize)]
pub struct Survey {
    pub device: BlockDevice,
    pub contents: Vec<(String, String)>,
    /// Set when the device (or a partition) is already an appliance drive:
    /// the LUKS UUID of the one found.
    pub appliance_drive: Option<String>,
}

impl Survey {
    pub fn render(&self) -> String {
        let mut s = format!("Drive:    {}\nContents:", self.device.describe());
        for (name, what) in &self.contents {
            s.push_str(&format!("\n  {name:<12} {what}"));
        }
        if let Some(uuid) = &self.appliance_drive {
            s.push_str(&format!(
                "\n\n!!! WARNING: this is already an appliance drive (LUKS UUID {uuid}), prepared by\n\
                 !!! `immich-server init`. It may hold your photos. Preparing it again ERASES them.\n\
                 !!! To use it as it is, stop here and unlock it instead:\n\
                 !!!     sudo immich-server --start --immich-drive {}",
                self.device.path.display()
            ));
        }
        s
    }
}

#[derive(Serialize)]
pub struct InitReport {
    pub device: PathBuf,
    pub luks_uuid: String,
    pub layout: LayoutReport,
    pub cipher: crate::cipher::Choice,
    /// Holds the recovery key: never in `Debug` (logs, panics) or JSON.
    #[serde(skip)]
    pub emergency_kit: String,
}

impl std::fmt::Debug for InitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitReport")
            .field("device", &self.device)
            .field("luks_uuid", &self.luks_uuid)
            .field("layout", &self.layout)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// Looks at the device and refuses what must not be formatted.
pub fn survey(cfg: &Config, device: &Path) -> Result<Survey, InitError> {
    let sys = Path::new("/sys");
    let dev = blockdev::resolve(device)?;
    let mounts = blockdev::mountinfo();
    if blockdev::system_disks(sys, &mounts).contains(&dev.disk) {
        return Err(InitError::SystemDisk(
            dev.path.clone(),
            blockdev::disk_list(sys),
        ));
    }
    if dev.read_only {
        return Err(InitError::ReadOnly(dev.path.clone()));
    }
    if luks::mapping_from_sysfs(&cfg.drive.mapper_name).is_some() {
        return Err(InitError::ApplianceRunning(cfg.drive.mapper_name.clone()));
    }
    let usage = blockdev::usage(sys, &dev, &mounts);
    if !usage.is_free() {
        let mut what = vec![];
        for (d, at) in &usage.mounted_at {
            what.push(format!("/dev/{d} is mounted at {}", at.display()));
        }
        what.extend(usage.swap.iter().map(|s| format!("{s} is swap")));
        what.extend(
            usage
                .holders
                .iter()
                .map(|h| format!("/dev/mapper/{h} is open on it")),
        );
        return Err(InitError::InUse(dev.path.clone(), what.join("; ")));
    }
    let mut found = vec![(dev.name.clone(), blockdev::probe(&dev.path))];
    if !dev.is_partition {
        for p in blockdev::partitions(sys, &dev.name) {
            let path = PathBuf::from(format!("/dev/{p}"));
            found.push((p, blockdev::probe(&path)));
        }
    }
    let appliance_drive = found.iter().find_map(|(_, sig)| match sig {
        Ok(blockdev::Signature::Luks {
            uuid, subsystem, ..
        }) if *subsystem == cfg.drive.luks_subsystem => Some(uuid.clone()),
        _ => None,
    });
    let contents = found
        .into_iter()
        .map(|(name, sig)| {
            let text = match sig {
                Ok(sig) => sig.to_string(),
                Err(e) => format!("unreadable ({e})"),
            };
            (name, text)
        })
        .collect();
    Ok(Survey {
        device: dev,
        contents,
        appliance_drive,
    })
}

/// Asks for the device name to be typed back, on the terminal.
pub fn confirm_on_tty(dev: &BlockDevice, given: &Path) -> Result<(), InitError> {
    use std::io::Write;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| InitError::NoTty)?;
    let mut out = &tty;
    write!(
        out,
        "\nALL DATA ON {} WILL BE DESTROYED.\nType the device name ({}) to continue, anything else to stop: ",
        dev.path.display(),
        dev.path.display()
    )
    .map_err(|_| InitError::NoTty)?;
    out.flush().ok();
    let mut line = String::new();
    std::io::BufReader::new(&tty)
        .read_line(&mut line)
        .map_err(|_| InitError::NoTty)?;
    let typed = line.trim();
    let accepted = [
        dev.path.display().to_string(),
        given.display().to_string(),
        dev.name.clone(),
    ];
    if accepted.iter().any(|a| a == typed) {
        Ok(())
    } else {
        Err(InitError::NotConfirmed)
    }
}

/// Formats, lays out and remembers the drive. The caller has surveyed and
/// confirmed.
pub fn prepare(
    cfg: &Config,
    parts: &Parts,
    survey: &Survey,
    opts: &InitOptions,
    progress: &dyn Progress,
) -> Result<InitReport, InitError> {
    let (luks, fs, systemd, machine) = (parts.luks, parts.fs, parts.systemd, parts.machine);
    let dev = &survey.device;
    let pass = secret::read_new(&opts.passphrase, MIN_PASSPHRASE)?;
    // From here on a signal stops init between steps, never inside one.
    interrupt::defer();
    interrupt::check()?;
    let step = |step: &'static str| {
        move |e: &dyn std::fmt::Display| InitError::Step {
            step,
            message: e.to_string(),
        }
    };

    if opts.cipher.is_none() {
        progress.step("Measuring the ciphers on this CPU (a few seconds)");
    }
    let choice = crate::cipher::choose(opts.cipher, crate::cipher::this_cpu_has_aes(), luks);
    for line in choice.render().lines() {
        progress.note(line.trim_start());
    }
    interrupt::check()?;
    progress.step(&format!(
        "Encrypting {} with LUKS2 ({}, argon2id); deriving the key takes a few seconds",
        dev.path.display(),
        choice.cipher.name()
    ));
    let uuid = luks
        .format(&dev.path, &pass, opts.kdf, &choice.cipher)
        .map_err(|e| step("LUKS formatting")(&e))?;
    interrupt::check()?;
    progress.step("Adding the recovery key");
    let recovery = luks::recovery_key().map_err(|e| step("generating the recovery key")(&e))?;
    luks.add_key(&dev.path, &pass, &recovery, opts.kdf)
        .map_err(|e| step("adding the recovery key")(&e))?;
    interrupt::check()?;
    luks.open(&dev.path, &cfg.drive.mapper_name, &pass)
        .map_err(|e| step("unlocking the new drive")(&e))?;
    drop(pass);

    let mut mounted = false;
    let result = (|| -> Result<(LayoutReport, Passphrase), InitError> {
        progress.step("Creating the ext4 filesystem");
        fs.make(&cfg.mapper_path(), &cfg.drive.label)
            .map_err(|e| step("mkfs.ext4")(&e))?;
        interrupt::check()?;
        let mp = &cfg.drive.mount_point;
        std::fs::create_dir_all(mp).map_err(|e| step("creating the mount point")(&e))?;
        if let Err(e) = machine.set_immutable(mp, true) {
            tracing::warn!(error = %e, "cannot make the mount point immutable");
        }
        // Recorded before the job, as `start` does: a mount job that times
        // out may have mounted all the same, and the drive must not stay
        // unlocked under it.
        mounted = true;
        systemd
            .mount(
                &MountSpec {
                    what: cfg.mapper_path().display().to_string(),
                    r#where: mp.clone(),
                    fstype: cfg.drive.filesystem.clone(),
                    options: cfg.drive.mount_options.clone(),
                    binds_to: vec![systemd::path_unit_name(&dev.path, "device")],
                },
                Duration::from_secs(120),
            )
            .map_err(|e| step("mounting the new filesystem")(&e))?;
        interrupt::check()?;
        progress.step("Creating the directory layout");
        // The root of the drive: readable by the service users, owned by root.
        std::fs::set_permissions(mp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| step("setting the drive root's mode")(&e))?;
        layout::write_marker(
            cfg,
            &Marker {
                format: 1,
                luks_uuid: uuid.clone(),
                prepared: crate::backup::state::now_rfc3339(),
            },
        )
        .map_err(|e| step("writing the drive marker")(&e))?;
        let report = machine
            .create_layout(cfg)
            .map_err(|e| step("creating the layout")(&e))?;
        progress.step("Generating the backup password");
        let backup_pw =
            luks::random_secret().map_err(|e| step("generating the backup password")(&e))?;
        host::write_atomic(
            &cfg.drive.mount_point.join(&cfg.backup.password_file),
            &backup_pw.line(),
            0o600,
        )
        .map_err(|e| step("writing secrets/backup-password")(&e))?;
        interrupt::check()?;
        // Marked last: a drive that init did not finish is not offered as
        // an appliance drive later.
        luks.mark(&dev.path, &cfg.drive.luks_subsystem)
            .map_err(|e| step("marking the LUKS header")(&e))?;
        Ok((report, backup_pw))
    })();

    // Leave the new drive locked, as after a reboot: `start` comes next.
    let mut cleanup_errors = vec![];
    if mounted {
        nix::unistd::sync();
        if let Err(e) = systemd.stop(&cfg.mount_unit(), Duration::from_secs(120)) {
            cleanup_errors.push(format!("unmounting: {e}"));
        }
    }
    if let Err(e) = luks.close(&cfg.drive.mapper_name) {
        cleanup_errors.push(format!("locking: {e}"));
    }
    let (layout, backup_pw) = result?;
    if !cleanup_errors.is_empty() {
        return Err(InitError::Step {
            step: "locking the new drive",
            message: cleanup_errors.join("; "),
        });
    }
    let prepared = crate::backup::state::now_rfc3339();
    drive::save(
        &cfg.drive.remembered_drive_file,
        &drive::Remembered {
            luks_uuid: uuid.clone(),
            prepared: prepared.clone(),
        },
    )
    .map_err(|e| step("remembering the drive")(&e))?;
    // A hang-up that came after the last step's check (while the drive was
    // being locked, say): the emergency kit would go to a dead terminal,
    // and the recovery key is nowhere else. The drive is made no appliance
    // drive again, so that the owner runs init again and sees the kit.
    if let Err(i) = interrupt::check() {
        if let Err(e) = luks.mark(&dev.path, "") {
            tracing::warn!(error = %e, "cannot take the appliance mark off the drive again");
        }
        let _ = std::fs::remove_file(&cfg.drive.remembered_drive_file);
        return Err(i.into());
    }
    Ok(InitReport {
        device: dev.path.clone(),
        emergency_kit: emergency_kit(dev, &uuid, &prepared, &recovery, &backup_pw),
        luks_uuid: uuid,
        layout,
        cipher: choice,
    })
}

/// Printed once, at the end of `init`.
pub fn emergency_kit(
    dev: &BlockDevice,
    uuid: &str,
    prepared: &str,
    recovery: &Passphrase,
    backup_pw: &Passphrase,
) -> String {
    let s = |p: &Passphrase| String::from_utf8_lossy(p.as_bytes()).into_owned();
    format!(
        "\
================= EMERGENCY KIT: copy this into your password manager =================
Immich appliance drive, prepared {prepared}
  Drive:             {drive}
  LUKS UUID:         {uuid}
  Drive passphrase:  the one you just typed (not shown, not stored)
  Recovery key:      {recovery}
                     (unlocks the drive if the passphrase is forgotten; not stored
                     anywhere on the appliance, this is the only copy)
  Backup password:   {backup}
                     (opens your encrypted backups; stored on the drive for the
                     automatic backups, and needed here if the drive is lost)

Why this matters: your photos, the database and every secret live only on this
encrypted drive. Without the passphrase or the recovery key nobody can read it,
including you. If the drive dies, your backups are the only copy, and only the
backup password opens them. Lose the keys and the photos are gone for good.
=========================================================================================
",
        drive = dev.describe(),
        recovery = s(recovery),
        backup = s(backup_pw),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_never_shows_the_kit() {
        let r = InitReport {
            device: "/dev/sda".into(),
            luks_uuid: "u".into(),
            layout: LayoutReport {
                created: vec![],
                repaired: vec![],
            },
            cipher: crate::cipher::Choice {
                cipher: crate::cipher::AES_XTS,
                reason: "r".into(),
                cpu_has_aes: true,
                measured: vec![],
            },
            emergency_kit: "RECOVERY-KEY-1234".into(),
        };
        let shown = format!("{r:?} {}", serde_json::to_string(&r).unwrap());
        assert!(
            shown.contains("/dev/sda") && !shown.contains("RECOVERY-KEY"),
            "{shown}"
        );
    }

    #[test]
    fn the_kit_has_what_a_password_manager_needs() {
        let dev = BlockDevice {
            given: "/dev/sda".into(),
            path: "/dev/sda".into(),
            name: "sda".into(),
            major: 8,
            minor: 0,
            disk: "sda".into(),
            is_partition: false,
            size_bytes: 1_000_204_886_016,
            model: Some("Extreme".into()),
            vendor: Some("SanDisk".into()),
            read_only: false,
        };
        let kit = emergency_kit(
            &dev,
            "0c1f2e3d-aaaa-bbbb-cccc-1234567890ab",
            "2026-11-21T10:00:00Z",
            &Passphrase::new(b"ABCD-EFGH".to_vec()),
            &Passphrase::new(b"backuppw".to_vec()),
        );
        for needle in [
            "0c1f2e3d-aaaa-bbbb-cccc-1234567890ab",
            "ABCD-EFGH",
            "backuppw",
            "/dev/sda (SanDisk Extreme, 931.5 GiB)",
            "gone for good",
        ] {
            assert!(kit.contains(needle), "{needle} missing from:\n{kit}");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(InitError::NotConfirmed.exit(), Exit::Aborted);
        assert_eq!(InitError::ReadOnly("/dev/sda".into()).exit(), Exit::Drive);
        assert_eq!(InitError::HalfForced.exit(), Exit::Usage);
    }
}
