//! The Pi's temperature, firmware throttle bits and CPU clock, read and set
//! through sysfs under a configurable root, so tests can supply a tree.
//! (sysinfo cannot be pointed at a test tree, hence this seam.)

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("the temperature sensor {0} is missing; the throttler cannot protect this board")]
    NoThermal(PathBuf),
    #[error("the temperature sensor {path} gave `{value}`, which is not a plausible temperature")]
    BadReading { path: PathBuf, value: String },
    #[error("cpufreq is not available at {0}")]
    NoCpufreq(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The clock limits of the CPU policy, in kHz as sysfs has them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Freq {
    pub hw_min_khz: u32,
    pub hw_max_khz: u32,
    pub scaling_max_khz: u32,
    pub cur_khz: Option<u32>,
    /// The steps the driver offers (100 MHz on a Pi 4), ascending.
    pub available_khz: Vec<u32>,
}

/// Temperature and firmware state.
pub trait Sensors {
    /// SoC temperature in milli-degrees Celsius.
    fn temperature_mc(&self) -> Result<i64, SensorError>;
    /// The firmware's get_throttled bits, where the vendor kernel has them.
    fn throttled(&self) -> Option<u32>;
    /// The hwmon under-voltage alarm (mainline and vendor kernels).
    fn undervoltage_alarm(&self) -> Option<bool>;
}

/// The CPU clock limit.
pub trait CpuFreq {
    fn freq(&self) -> Result<Freq, SensorError>;
    fn set_max_khz(&self, khz: u32) -> Result<(), SensorError>;
}

#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
    zone: String,
    policy: String,
}

impl Sysfs {
    pub fn new(root: &Path, zone: &str, policy: &str) -> Self {
        Sysfs {
            root: root.to_owned(),
            zone: zone.to_owned(),
            policy: policy.to_owned(),
        }
    }

    pub fn temp_path(&self) -> PathBuf {
        self.root
            .join("class/thermal")
            .join(&self.zone)
            .join("temp")
    }
    pub fn throttled_path(&self) -> PathBuf {
        self.root
            .join("devices/platform/soc/soc:firmware/get_throttled")
    }
    pub fn policy_dir(&self) -> PathBuf {
        self.root
            .join("devices/system/cpu/cpufreq")
            .join(&self.policy)
    }

    fn read_u32(&self, file: &str) -> Result<u32, SensorError> {
        let p = self.policy_dir().join(file);
        let s = fs::read_to_string(&p).map_err(|source| SensorError::Io {
            action: "read",
            path: p.clone(),
            source,
        })?;
        s.trim().parse().map_err(|_| SensorError::BadReading {
            path: p,
            value: s.trim().to_owned(),
        })
    }
}

impl Sensors for Sysfs {
    fn temperature_mc(&self) -> Result<i64, SensorError> {
        let p = self.temp_path();
        let s = match fs::read_to_string(&p) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SensorError::NoThermal(p));
            }
            Err(source) => {
                return Err(SensorError::Io {
                    action: "read",
                    path: p,
                    source,
                });
            }
        };
        match s.trim().parse::<i64>() {
            // -40 to 150 °C: anything else is a broken sensor, not weather.
            Ok(v) if (-40_000..=150_000).contains(&v) => Ok(v),
            _ => Err(SensorError::BadReading {
                path: p,
                value: s.trim().to_owned(),
            }),
        }
    }

    fn throttled(&self) -> Option<u32> {
        let s = fs::read_to_string(self.throttled_path()).ok()?;
        u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
    }

    fn undervoltage_alarm(&self) -> Option<bool> {
        let hwmon = self.root.join("class/hwmon");
        for e in fs::read_dir(hwmon).ok()?.flatten() {
            let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
            if name.trim() == "rpi_volt" {
                let v = fs::read_to_string(e.path().join("in0_lcrit_alarm")).ok()?;
                return Some(v.trim() == "1");
            }
        }
        None
    }
}

impl CpuFreq for Sysfs {
    fn freq(&self) -> Result<Freq, SensorError> {
        if !self.policy_dir().exists() {
            return Err(SensorError::NoCpufreq(self.policy_dir()));
        }
        let mut available: Vec<u32> =
            fs::read_to_string(self.policy_dir().join("scaling_available_frequencies"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
        available.sort_unstable();
        available.dedup();
        Ok(Freq {
            hw_min_khz: self.read_u32("cpuinfo_min_freq")?,
            hw_max_khz: self.read_u32("cpuinfo_max_freq")?,
            scaling_max_khz: self.read_u32("scaling_max_freq")?,
            cur_khz: self.read_u32("scaling_cur_freq").ok(),
            available_khz: available,
        })
    }

    fn set_max_khz(&self, khz: u32) -> Result<(), SensorError> {
        let p = self.policy_dir().join("scaling_max_freq");
        fs::write(&p, format!("{khz}\n")).map_err(|source| SensorError::Io {
            action: "write",
            path: p,
            source,
        })
    }
}

/// Names of the set bits of get_throttled, for status output.
pub fn throttled_names(bits: u32) -> Vec<&'static str> {
    const NAMES: [(u32, &str); 8] = [
        (0x1, "under-voltage now"),
        (0x2, "clock capped now"),
        (0x4, "throttled now"),
        (0x8, "soft temperature limit now"),
        (0x10000, "under-voltage has occurred"),
        (0x20000, "clock capping has occurred"),
        (0x40000, "throttling has occurred"),
        (0x80000, "soft temperature limit has occurred"),
    ];
    NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The "now" bits (0-3) that mean the firmware is acting.
pub const THROTTLED_NOW_MASK: u32 = 0xF;

/// Writes a fake Pi 4 sysfs tree under `root` (for tests, the footprint
/// benchmark and the VM story). `temp_mc` is the initial temperature.
pub fn write_fake_tree(root: &Path, temp_mc: i64, with_throttled: bool) -> std::io::Result<()> {
    let zone = root.join("class/thermal/thermal_zone0");
    fs::create_dir_all(&zone)?;
    fs::write(zone.join("type"), "cpu-thermal\n")?;
    fs::write(zone.join("temp"), format!("{temp_mc}\n"))?;
    let pol = root.join("devices/system/cpu/cpufreq/policy0");
    fs::create_dir_all(&pol)?;
    fs::write(pol.join("cpuinfo_min_freq"), "600000\n")?;
    fs::write(pol.join("cpuinfo_max_freq"), "1500000\n")?;
    fs::write(pol.join("scaling_max_freq"), "1500000\n")?;
    fs::write(pol.join("scaling_cur_freq"), "1500000\n")?;
    let steps: Vec<String> = (6..=15).map(|m| format!("{}", m * 100_000)).collect();
    fs::write(
        pol.join("scaling_available_frequencies"),
        format!("{} \n", steps.join(" ")),
    )?;
    if with_throttled {
        let fw = root.join("devices/platform/soc/soc:firmware");
        fs::create_dir_all(&fw)?;
        fs::write(fw.join("get_throttled"), "0\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pi_tree() {
        let d = tempfile::tempdir().unwrap();
        write_fake_tree(d.path(), 61_835, true).unwrap();
        let s = Sysfs::new(d.path(), "thermal_zone0", "policy0");
        assert_eq!(s.temperature_mc().unwrap(), 61_835);
        assert_eq!(s.throttled(), Some(0));
        assert_eq!(s.undervoltage_alarm(), None);
        let f = s.freq().unwrap();
        assert_eq!(
            (f.hw_min_khz, f.hw_max_khz, f.scaling_max_khz),
            (600_000, 1_500_000, 1_500_000)
        );
        assert_eq!(f.available_khz.len(), 10);
        s.set_max_khz(1_200_000).unwrap();
        assert_eq!(s.freq().unwrap().scaling_max_khz, 1_200_000);
        fs::write(s.throttled_path(), "50005\n").unwrap();
        assert_eq!(s.throttled(), Some(0x50005));
        assert_eq!(
            throttled_names(0x50005),
            [
                "under-voltage now",
                "throttled now",
                "under-voltage has occurred",
                "throttling has occurred"
            ]
        );
    }

    #[test]
    fn missing_or_broken_sensor_fails_safe_with_a_reason() {
        let d = tempfile::tempdir().unwrap();
        let s = Sysfs::new(d.path(), "thermal_zone0", "policy0");
        assert!(matches!(s.temperature_mc(), Err(SensorError::NoThermal(_))));
        assert!(matches!(s.freq(), Err(SensorError::NoCpufreq(_))));
        write_fake_tree(d.path(), 0, false).unwrap();
        fs::write(s.temp_path(), "-274000\n").unwrap();
        assert!(matches!(
            s.temperature_mc(),
            Err(SensorError::BadReading { .. })
        ));
        fs::write(s.temp_path(), "garbage\n").unwrap();
        assert!(matches!(
            s.temperature_mc(),
            Err(SensorError::BadReading { .. })
        ));
        assert_eq!(
            s.throttled(),
            None,
            "the mainline kernel has no get_throttled"
        );
    }

    #[test]
    fn undervoltage_from_hwmon() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join("class/hwmon/hwmon1");
        fs::create_dir_all(&h).unwrap();
        fs::write(h.join("name"), "rpi_volt\n").unwrap();
        fs::write(h.join("in0_lcrit_alarm"), "1\n").unwrap();
        let s = Sysfs::new(d.path(), "thermal_zone0", "policy0");
        assert_eq!(s.undervoltage_alarm(), Some(true));
    }
}
