//! LUKS2 through libcryptsetup (libcryptsetup-rs), behind one trait.
//!
//! libcryptsetup is not thread-safe and the crate panics when called from a
//! second thread, so every call here happens on the caller's thread, which
//! is the main thread of the binaries.

use std::path::{Path, PathBuf};

use libcryptsetup_rs::consts::flags::{CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey};
use libcryptsetup_rs::consts::vals::{CryptKdf, EncryptionFormat};
use libcryptsetup_rs::{CryptInit, CryptPbkdfType, Either, LibcryptErr};

use crate::cipher::Cipher;
use crate::secret::Passphrase;

#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("wrong passphrase for {0} (no key slot matched)")]
    WrongPassphrase(PathBuf),
    #[error(
        "{0} is not a LUKS drive. Prepare it with `sudo immich-server init --immich-drive {0}` (that erases it), or pass --no-decryption for an unencrypted drive"
    )]
    NotLuks(PathBuf),
    #[error("{device} is unlocked already, as /dev/mapper/{name}")]
    AlreadyOpen { device: PathBuf, name: String },
    #[error(
        "/dev/mapper/{0} is still in use (mounted, or held by a process); stop what uses it first"
    )]
    Busy(String),
    #[error("libcryptsetup failed to {action} {what}: {message}")]
    Crypt {
        action: &'static str,
        what: String,
        message: String,
    },
}

/// The key derivation cost of a new key slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// argon2id, benchmarked by libcryptsetup to take `iter_time_ms` within
    /// `max_memory_kib` (cryptsetup's defaults: 2000 ms, 1 GiB).
    Argon2id {
        iter_time_ms: u32,
        max_memory_kib: u32,
    },
    /// argon2id with fixed, tiny costs: only for the test VM, where the
    /// emulated CPU makes the real cost take minutes. Never the default.
    Argon2idFixedForTests,
}

impl Default for Kdf {
    fn default() -> Self {
        Kdf::Argon2id {
            iter_time_ms: 2000,
            max_memory_kib: 1024 * 1024,
        }
    }
}

/// An open mapping: /dev/mapper/NAME over DEVICE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub name: String,
    pub device: PathBuf,
}

/// The cipher benchmark is libcryptsetup's too, hence a supertrait.
pub trait Luks: crate::cipher::Bench {
    /// The LUKS UUID, or `None` when the device holds no LUKS header.
    fn uuid(&self, device: &Path) -> Result<Option<String>, LuksError>;
    /// Formats LUKS2 with one key slot for `passphrase`; returns the UUID.
    fn format(
        &self,
        device: &Path,
        passphrase: &Passphrase,
        kdf: Kdf,
        cipher: &Cipher,
    ) -> Result<String, LuksError>;
    /// The cipher in the header, as cryptsetup names it (`aes-xts-plain64`).
    fn cipher(&self, device: &Path) -> Result<String, LuksError>;
    /// Adds a key slot for `new`, authorised by `existing`.
    fn add_key(
        &self,
        device: &Path,
        existing: &Passphrase,
        new: &Passphrase,
        kdf: Kdf,
    ) -> Result<(), LuksError>;
    /// Writes `subsystem` into the LUKS2 header's subsystem field (the
    /// label stays empty), so that the drive is recognised while locked.
    fn mark(&self, device: &Path, subsystem: &str) -> Result<(), LuksError>;
    fn open(&self, device: &Path, name: &str, passphrase: &Passphrase) -> Result<(), LuksError>;
    fn close(&self, name: &str) -> Result<(), LuksError>;
    /// The active mapping with this name, if any.
    fn mapping(&self, name: &str) -> Result<Option<Mapping>, LuksError>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Cryptsetup;

fn crypt(
    action: &'static str,
    what: impl std::fmt::Display,
) -> impl FnOnce(LibcryptErr) -> LuksError {
    let what = what.to_string();
    move |e| LuksError::Crypt {
        action,
        what,
        message: e.to_string(),
    }
}

fn errno(e: &LibcryptErr) -> Option<i32> {
    match e {
        LibcryptErr::IOError(io) => io.raw_os_error(),
        _ => None,
    }
}

fn pbkdf(kdf: Kdf) -> CryptPbkdfType {
    match kdf {
        Kdf::Argon2id {
            iter_time_ms,
            max_memory_kib,
        } => CryptPbkdfType {
            type_: CryptKdf::Argon2Id,
            hash: Some("sha256".into()),
            time_ms: iter_time_ms,
            iterations: 0,
            max_memory_kb: max_memory_kib,
            parallel_threads: 4,
            flags: CryptPbkdf::empty(),
        },
        Kdf::Argon2idFixedForTests => CryptPbkdfType {
            type_: CryptKdf::Argon2Id,
            hash: Some("sha256".into()),
            time_ms: 0,
            iterations: 4,
            max_memory_kb: 32 * 1024,
            parallel_threads: 1,
            flags: CryptPbkdf::NO_BENCHMARK,
        },
    }
}

impl crate::cipher::Bench for Cryptsetup {
    fn measure(&self, c: &Cipher) -> Result<crate::cipher::Speed, String> {
        crate::cipher::Libcryptsetup.measure(c)
    }
}

impl Luks for Cryptsetup {
    fn uuid(&self, device: &Path) -> Result<Option<String>, LuksError> {
        let mut dev = CryptInit::init(device).map_err(crypt("open", device.display()))?;
        match dev
            .context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
        {
            Ok(()) => {}
            // LUKS1 drives are accepted too; they unlock the same way.
            Err(_) => match dev
                .context_handle()
                .load::<()>(Some(EncryptionFormat::Luks1), None)
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EINVAL) => return Ok(None),
                Err(e) => return Err(crypt("read the LUKS header of", device.display())(e)),
            },
        }
        let uuid = dev
            .status_handle()
            .get_uuid()
            .map_err(crypt("read the UUID of", device.display()))?;
        Ok(Some(uuid.to_string()))
    }

    fn format(
        &self,
        device: &Path,
        passphrase: &Passphrase,
        kdf: Kdf,
        cipher: &Cipher,
    ) -> Result<String, LuksError> {
        let mut dev = CryptInit::init(device).map_err(crypt("open", device.display()))?;
        dev.settings_handle()
            .set_pbkdf_type(&pbkdf(kdf))
            .map_err(crypt("set the key derivation for", device.display()))?;
        dev.context_handle()
            .format::<()>(
                EncryptionFormat::Luks2,
                (cipher.cipher, cipher.mode),
                None,
                Either::Right(cipher.key_bytes),
                None,
            )
            .map_err(crypt("format", device.display()))?;
        dev.keyslot_handle()
            .add_by_key(None, None, passphrase.as_bytes(), CryptVolumeKey::empty())
            .map_err(crypt("add a key slot to", device.display()))?;
        let uuid = dev
            .status_handle()
            .get_uuid()
            .map_err(crypt("read the UUID of", device.display()))?;
        Ok(uuid.to_string())
    }

    fn cipher(&self, device: &Path) -> Result<String, LuksError> {
        let mut dev = CryptInit::init(device).map_err(crypt("open", device.display()))?;
        dev.context_handle()
            .load::<()>(None, None)
            .map_err(crypt("read the LUKS header of", device.display()))?;
        let mut st = dev.status_handle();
        let c = st
            .get_cipher()
            .map_err(crypt("read the cipher of", device.display()))?;
        let m = st
            .get_cipher_mode()
            .map_err(crypt("read the cipher of", device.display()))?;
        Ok(format!("{c}-{m}"))
    }

    fn add_key(
        &self,
        device: &Path,
        existing: &Passphrase,
        new: &Passphrase,
        kdf: Kdf,
    ) -> Result<(), LuksError> {
        let mut dev = CryptInit::init(device).map_err(crypt("open", device.display()))?;
        dev.context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .map_err(crypt("read the LUKS header of", device.display()))?;
        dev.settings_handle()
            .set_pbkdf_type(&pbkdf(kdf))
            .map_err(crypt("set the key derivation for", device.display()))?;
        match dev
            .keyslot_handle()
            .add_by_passphrase(None, existing.as_bytes(), new.as_bytes())
        {
            Ok(_) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EPERM) => {
                Err(LuksError::WrongPassphrase(device.to_owned()))
            }
            Err(e) => Err(crypt("add a key slot to", device.display())(e)),
        }
    }

    fn mark(&self, device: &Path, subsystem: &str) -> Result<(), LuksError> {
        let mut dev = CryptInit::init(device).map_err(crypt("open", device.display()))?;
        dev.context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .map_err(crypt("read the LUKS header of", device.display()))?;
        dev.context_handle()
            .set_label(None, Some(subsystem))
            .map_err(crypt("mark the LUKS header of", device.display()))
    }

    fn open(&self, device: &Path, name: &str, passphrase: &Passphrase) -> Result<(), LuksError> {
        let mut dev = CryptInit::init(device).map_err(crypt("open", device.display()))?;
        if dev.context_handle().load::<()>(None, None).is_err() {
            return Err(LuksError::NotLuks(device.to_owned()));
        }
        match dev.activate_handle().activate_by_passphrase(
            Some(name),
            None,
            passphrase.as_bytes(),
            CryptActivate::empty(),
        ) {
            Ok(_) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EPERM) => {
                Err(LuksError::WrongPassphrase(device.to_owned()))
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => Err(LuksError::AlreadyOpen {
                device: device.to_owned(),
                name: name.to_owned(),
            }),
            Err(e) => Err(crypt("unlock", device.display())(e)),
        }
    }

    fn close(&self, name: &str) -> Result<(), LuksError> {
        let mut dev = CryptInit::init_by_name_and_header(name, None)
            .map_err(crypt("find", format!("/dev/mapper/{name}")))?;
        match dev
            .activate_handle()
            .deactivate(name, CryptDeactivate::empty())
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EBUSY) => Err(LuksError::Busy(name.to_owned())),
            Err(e) => Err(crypt("close", format!("/dev/mapper/{name}"))(e)),
        }
    }

    fn mapping(&self, name: &str) -> Result<Option<Mapping>, LuksError> {
        Ok(mapping_from_sysfs(name))
    }
}

/// An open mapping found through sysfs rather than libcryptsetup: this works
/// without root (for `status`) and stays readable when the USB disk has been
/// unplugged underneath the mapping.
pub fn mapping_from_sysfs(name: &str) -> Option<Mapping> {
    for e in std::fs::read_dir("/sys/class/block").ok()?.flatten() {
        let kname = e.file_name().to_string_lossy().into_owned();
        if !kname.starts_with("dm-") {
            continue;
        }
        let dm = std::fs::read_to_string(e.path().join("dm/name")).unwrap_or_default();
        if dm.trim() == name {
            return Some(Mapping {
                name: name.to_owned(),
                device: backing_device(name).unwrap_or_else(|| PathBuf::from("(gone)")),
            });
        }
    }
    None
}

/// The device under /dev/mapper/NAME, from /sys/block/dm-*/slaves.
pub fn backing_device(name: &str) -> Option<PathBuf> {
    let mapper = Path::new("/dev/mapper").join(name).canonicalize().ok()?;
    let kname = mapper.file_name()?.to_string_lossy().into_owned();
    let slaves =
        std::fs::read_dir(Path::new("/sys/class/block").join(kname).join("slaves")).ok()?;
    slaves
        .flatten()
        .next()
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|p| p.exists())
}

/// A random recovery key: ten groups of four characters from an alphabet
/// without look-alikes (about 200 bits), easy to type from a printout.
pub fn recovery_key() -> std::io::Result<Passphrase> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut raw = zeroize::Zeroizing::new([0u8; 40]);
    getrandom(&mut raw[..])?;
    let mut out = Vec::with_capacity(49);
    for (i, b) in raw.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(b'-');
        }
        out.push(ALPHABET[(*b & 31) as usize]);
    }
    Ok(Passphrase::new(out))
}

/// A random secret for machine use (e.g. the backup repository password),
/// printable: 32 characters from the same alphabet, 160 bits.
pub fn random_secret() -> std::io::Result<Passphrase> {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789Z";
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    getrandom(&mut raw[..])?;
    Ok(Passphrase::new(
        raw.iter().map(|b| ALPHABET[(*b & 31) as usize]).collect(),
    ))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of buf.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_keys_are_grouped_and_random() {
        let a = recovery_key().unwrap();
        let b = recovery_key().unwrap();
        let s = std::str::from_utf8(a.as_bytes()).unwrap();
        assert_eq!(s.len(), 49);
        assert_eq!(s.split('-').count(), 10);
        assert!(s.split('-').all(|g| g.len() == 4));
        assert!(!s.contains(['0', 'O', '1', 'I']));
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(random_secret().unwrap().len(), 32);
    }

    #[test]
    fn kdf_parameters() {
        let p = pbkdf(Kdf::default());
        assert_eq!(p.type_, CryptKdf::Argon2Id);
        assert_eq!((p.time_ms, p.max_memory_kb), (2000, 1024 * 1024));
        let t = pbkdf(Kdf::Argon2idFixedForTests);
        assert!(t.flags.contains(CryptPbkdf::NO_BENCHMARK));
    }
}
