//! The drive's cipher, chosen by measuring on the machine that formats it.
//!
//! A Pi 4's Cortex-A72 has no AES instructions, so AES-XTS runs in software
//! there, slower than a USB 3 SSD and heating the SoC with every byte.
//! Adiantum (XChaCha12 and AES on one block per sector) was designed for
//! exactly such processors. The rule, in [`choose`]: Adiantum only when the
//! CPU lacks AES instructions and Adiantum measures faster here; AES-XTS
//! everywhere else, the default of cryptsetup.

use serde::Serialize;

/// A cipher `init` may format the drive with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cipher {
    /// As LUKS names it: `aes`, `xchacha12,aes`.
    pub cipher: &'static str,
    /// As LUKS names it: `xts-plain64`, `adiantum-plain64`.
    pub mode: &'static str,
    pub key_bytes: usize,
    /// The mode and IV size for libcryptsetup's benchmark.
    #[serde(skip)]
    bench_mode: &'static str,
    #[serde(skip)]
    bench_iv_bytes: usize,
}

impl Cipher {
    /// cryptsetup's spelling, which `--cipher` and `drive.cipher` take.
    pub fn name(&self) -> String {
        format!("{}-{}", self.cipher, self.mode)
    }
}

pub const AES_XTS: Cipher = Cipher {
    cipher: "aes",
    mode: "xts-plain64",
    key_bytes: 64,
    bench_mode: "xts",
    bench_iv_bytes: 16,
};

pub const ADIANTUM: Cipher = Cipher {
    cipher: "xchacha12,aes",
    mode: "adiantum-plain64",
    key_bytes: 32,
    bench_mode: "adiantum",
    bench_iv_bytes: 32,
};

/// The stronger Adiantum variant, for those who prefer 20 rounds.
pub const ADIANTUM_20: Cipher = Cipher {
    cipher: "xchacha20,aes",
    mode: "adiantum-plain64",
    key_bytes: 32,
    bench_mode: "adiantum",
    bench_iv_bytes: 32,
};

/// What `init` measures, in order.
pub const CANDIDATES: [Cipher; 2] = [AES_XTS, ADIANTUM];
/// What `--cipher` accepts besides `auto`.
pub const KNOWN: [Cipher; 3] = [AES_XTS, ADIANTUM, ADIANTUM_20];

pub fn by_name(name: &str) -> Option<Cipher> {
    KNOWN.into_iter().find(|c| c.name() == name)
}

/// Throughput in MiB/s, as libcryptsetup measures it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Speed {
    pub encrypt_mib_s: f64,
    pub decrypt_mib_s: f64,
}

impl Speed {
    /// A drive reads and writes: the slower direction decides.
    fn worst(&self) -> f64 {
        self.encrypt_mib_s.min(self.decrypt_mib_s)
    }
}

/// Measures a cipher on this CPU.
pub trait Bench {
    fn measure(&self, c: &Cipher) -> Result<Speed, String>;
}

/// libcryptsetup's `crypt_benchmark`, which the safe crate does not wrap:
/// the kernel's own implementation through its crypto API, on a 1 MiB
/// buffer, as `cryptsetup benchmark` does.
#[derive(Debug, Default, Clone, Copy)]
pub struct Libcryptsetup;

impl Bench for Libcryptsetup {
    // Twice, keeping the faster figure of each direction: the first use of
    // a cipher loads its kernel module and runs its self-tests, which the
    // first figure pays for (0.45 of cryptsetup's own in the VM bench).
    fn measure(&self, c: &Cipher) -> Result<Speed, String> {
        let a = crypt_benchmark(c)?;
        let b = crypt_benchmark(c)?;
        Ok(Speed {
            encrypt_mib_s: a.encrypt_mib_s.max(b.encrypt_mib_s),
            decrypt_mib_s: a.decrypt_mib_s.max(b.decrypt_mib_s),
        })
    }
}

fn crypt_benchmark(c: &Cipher) -> Result<Speed, String> {
    let cipher = std::ffi::CString::new(c.cipher).expect("no NUL");
    let mode = std::ffi::CString::new(c.bench_mode).expect("no NUL");
    let (mut enc, mut dec) = (0f64, 0f64);
    // SAFETY: a null device is allowed (cryptsetup's own benchmark
    // passes one); the strings outlive the call and the out-pointers
    // are valid f64s.
    let r = unsafe {
        libcryptsetup_rs_sys::crypt_benchmark(
            std::ptr::null_mut(),
            cipher.as_ptr(),
            mode.as_ptr(),
            c.key_bytes,
            c.bench_iv_bytes,
            1024 * 1024,
            &mut enc,
            &mut dec,
        )
    };
    if r == -libc::ENOENT {
        return Err("not available in this kernel".into());
    }
    if r < 0 {
        return Err(format!(
            "cannot be measured here: {}",
            std::io::Error::from_raw_os_error(-r)
        ));
    }
    Ok(Speed {
        encrypt_mib_s: enc,
        decrypt_mib_s: dec,
    })
}

/// Whether the CPU has AES instructions, from /proc/cpuinfo: `aes` among
/// x86's `flags` or arm64's `Features`.
pub fn cpu_has_aes(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|l| {
        let (key, value) = l.split_once(':').unwrap_or(("", ""));
        matches!(key.trim(), "flags" | "Features") && value.split_whitespace().any(|f| f == "aes")
    })
}

/// One cipher's figures, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub cipher: String,
    #[serde(flatten)]
    pub speed: Option<Speed>,
    pub error: Option<String>,
}

fn measure(bench: &dyn Bench, c: &Cipher) -> Measured {
    let r = bench.measure(c);
    Measured {
        cipher: c.name(),
        error: r.as_ref().err().cloned(),
        speed: r.ok(),
    }
}

/// The figures and the choice, as `init` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub cipher: Cipher,
    pub reason: String,
    pub cpu_has_aes: bool,
    pub measured: Vec<Measured>,
}

impl Choice {
    pub fn render(&self) -> String {
        let mut s = String::new();
        for m in &self.measured {
            let name = &m.cipher;
            match (&m.speed, &m.error) {
                (Some(sp), _) => s.push_str(&format!(
                    "  {name:<32} {:>8.1} MiB/s encrypt {:>8.1} MiB/s decrypt\n",
                    sp.encrypt_mib_s, sp.decrypt_mib_s
                )),
                (None, e) => s.push_str(&format!(
                    "  {name:<32} {}\n",
                    e.as_deref().unwrap_or("not measured")
                )),
            }
        }
        s.push_str(&format!(
            "  chosen: {} ({})\n",
            self.cipher.name(),
            self.reason
        ));
        s
    }
}

/// `immich-server ciphers`: every known cipher measured here, and what
/// `init` would choose (which measures only where the choice depends on it).
pub fn survey(cpu_has_aes: bool, bench: &dyn Bench) -> Choice {
    let mut c = choose(None, cpu_has_aes, bench);
    c.measured = KNOWN.iter().map(|k| measure(bench, k)).collect();
    c
}

/// Whether this machine's CPU has AES instructions.
pub fn this_cpu_has_aes() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| cpu_has_aes(&t))
        .unwrap_or(false)
}

/// Picks the cipher: a forced one as it is; otherwise Adiantum only when
/// the CPU lacks AES instructions and Adiantum measured faster (in its
/// slower direction) than AES-XTS, which stays the default when a figure is
/// missing.
pub fn choose(forced: Option<Cipher>, cpu_has_aes: bool, bench: &dyn Bench) -> Choice {
    if let Some(c) = forced {
        return Choice {
            cipher: c,
            reason: "set by drive.cipher or --cipher".into(),
            cpu_has_aes,
            measured: vec![],
        };
    }
    if cpu_has_aes {
        // The rule needs no figures here; measuring would only cost time.
        return Choice {
            cipher: AES_XTS,
            reason: "this CPU has AES instructions".into(),
            cpu_has_aes,
            measured: vec![],
        };
    }
    let measured: Vec<Measured> = CANDIDATES.iter().map(|c| measure(bench, c)).collect();
    let speed = |c: &Cipher| {
        measured
            .iter()
            .find(|m| m.cipher == c.name())
            .and_then(|m| m.speed.as_ref())
            .map(Speed::worst)
    };
    let (cipher, reason) = match (speed(&AES_XTS), speed(&ADIANTUM)) {
        (Some(aes), Some(adi)) if adi > aes => (
            ADIANTUM,
            format!(
                "no AES instructions here, and Adiantum is {:.1}x as fast",
                adi / aes.max(f64::MIN_POSITIVE)
            ),
        ),
        (Some(_), Some(_)) => (
            AES_XTS,
            "no AES instructions here, but AES-XTS still measured faster".to_owned(),
        ),
        (None, None) => (
            AES_XTS,
            "nothing could be measured (is the kernel's crypto API for programs, algif_skcipher, missing?); cryptsetup's default".to_owned(),
        ),
        (Some(_), None) => (
            AES_XTS,
            "Adiantum could not be measured in this kernel".to_owned(),
        ),
        (None, Some(_)) => (
            ADIANTUM,
            "no AES instructions here, and AES-XTS could not be measured".to_owned(),
        ),
    };
    Choice {
        cipher,
        reason,
        cpu_has_aes,
        measured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Figure = (&'static str, Result<(f64, f64), &'static str>);
    struct Fixed(Vec<Figure>);
    impl Bench for Fixed {
        fn measure(&self, c: &Cipher) -> Result<Speed, String> {
            let (_, r) = self
                .0
                .iter()
                .find(|(n, _)| *n == c.name())
                .expect("asked only for candidates");
            r.map(|(e, d)| Speed {
                encrypt_mib_s: e,
                decrypt_mib_s: d,
            })
            .map_err(str::to_owned)
        }
    }

    fn figures(aes: (f64, f64), adi: (f64, f64)) -> Fixed {
        Fixed(vec![
            ("aes-xts-plain64", Ok(aes)),
            ("xchacha12,aes-adiantum-plain64", Ok(adi)),
        ])
    }

    #[test]
    fn a_pi_without_aes_instructions_gets_adiantum_when_it_is_faster() {
        // The shape of published Pi 4 figures: AES-XTS ~50-85 MiB/s in
        // software, Adiantum well above.
        let c = choose(None, false, &figures((62.0, 60.0), (180.0, 190.0)));
        assert_eq!(c.cipher, ADIANTUM);
        assert!(c.reason.contains("3.0x"), "{}", c.reason);
        assert!(
            c.render()
                .contains("chosen: xchacha12,aes-adiantum-plain64")
        );
    }

    #[test]
    fn aes_instructions_keep_aes_xts_whatever_the_figures() {
        let c = choose(None, true, &figures((100.0, 100.0), (900.0, 900.0)));
        assert_eq!(c.cipher, AES_XTS);
        // Nothing is measured where nothing depends on it.
        assert!(c.measured.is_empty());
        assert!(c.render().contains("AES instructions"));
    }

    #[test]
    fn the_slower_direction_decides_and_a_tie_keeps_aes() {
        let c = choose(None, false, &figures((100.0, 100.0), (300.0, 90.0)));
        assert_eq!(c.cipher, AES_XTS);
        let c = choose(None, false, &figures((100.0, 100.0), (100.0, 100.0)));
        assert_eq!(c.cipher, AES_XTS);
    }

    #[test]
    fn a_kernel_without_adiantum_keeps_aes_and_says_so() {
        let f = Fixed(vec![
            ("aes-xts-plain64", Ok((60.0, 60.0))),
            (
                "xchacha12,aes-adiantum-plain64",
                Err("not available in this kernel"),
            ),
        ]);
        let c = choose(None, false, &f);
        assert_eq!(c.cipher, AES_XTS);
        assert!(c.reason.contains("could not be measured"), "{}", c.reason);
        assert!(c.render().contains("not available in this kernel"));
    }

    #[test]
    fn a_forced_cipher_is_not_measured() {
        let c = choose(Some(ADIANTUM_20), true, &Fixed(vec![]));
        assert_eq!(c.cipher.name(), "xchacha20,aes-adiantum-plain64");
        assert!(c.measured.is_empty());
    }

    #[test]
    fn aes_instructions_are_read_from_cpuinfo() {
        let pi4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n";
        let pi5 =
            "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n";
        let x86 = "flags\t\t: fpu vme sse2 aes avx\n";
        let qemu = "flags\t\t: fpu vme sse2 ssse3\n";
        assert!(!cpu_has_aes(pi4));
        assert!(cpu_has_aes(pi5));
        assert!(cpu_has_aes(x86));
        assert!(!cpu_has_aes(qemu));
        // "aes" as part of another word is not the flag.
        assert!(!cpu_has_aes("flags\t: vaes_like sse\n"));
    }

    #[test]
    fn names_round_trip() {
        for c in KNOWN {
            assert_eq!(by_name(&c.name()), Some(c));
        }
        assert_eq!(by_name("aes-cbc-essiv:sha256"), None);
    }
}
