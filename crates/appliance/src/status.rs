//! `immich-server status`: what is up, what is not, and what to do about
//! it, as text for people and JSON for scripts. It changes nothing.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::backup::state as backup_state;
use crate::blockdev;
use crate::config::Config;
use crate::drive;
use crate::lifecycle::Parts;
use crate::net::{self, Urls};
use crate::throttle::sysfs::{self, Sensors, Sysfs};

/// The version of the JSON shape of `status --json` (and of every `--json`
/// error): bumped when a key changes meaning or goes away.
pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Status {
    pub schema_version: u32,
    /// running | stopped | degraded | unplugged
    pub state: &'static str,
    /// Something needs the owner: `status` then exits 13 (see the advice).
    pub needs_owner: bool,
    pub summary: String,
    pub drive: DriveStatus,
    pub units: Vec<UnitStatus>,
    pub immich: ImmichStatus,
    pub throttle: Option<serde_json::Value>,
    pub backup: BackupStatus,
    pub soc: SocStatus,
    pub system: SystemStatus,
    pub urls: Urls,
    /// The alert channels that are set (ntfy, webhook, email).
    pub alerts: Vec<&'static str>,
    pub advice: Vec<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct DriveStatus {
    pub remembered_uuid: Option<String>,
    /// The remembered drive's device node, when plugged in.
    pub present_at: Option<String>,
    /// The cipher in its LUKS header (`init` chose it on this CPU).
    pub cipher: Option<String>,
    /// The drive's SMART verdict, when it is plugged in.
    pub smart: Option<crate::smart::Health>,
    pub unlocked: bool,
    /// The device under the open mapping; "(gone)" once unplugged.
    pub backing_device: Option<String>,
    pub mounted: bool,
    pub mount_point: String,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// Percent of the drive in use, when mounted.
    pub used_percent: Option<f64>,
    /// Nothing remembered, but this device carries the appliance's LUKS mark.
    pub unremembered_appliance_drive: Option<String>,
    /// The remembered-drive file exists but cannot be read.
    pub remembered_error: Option<String>,
}

/// From this share of the drive in use, status warns and says what to do.
pub const DRIVE_FULL_WARN_PERCENT: f64 = 90.0;

/// The advice for a drive that is nearly or completely full.
pub fn drive_full_advice(used_percent: f64, free_bytes: u64) -> String {
    format!(
        "the drive is {used_percent:.0} % full ({} free): Immich, its database and the backups stop working when it is full. Delete what you do not need in Immich and empty its trash, or restore the backup onto a larger drive (docs/after-a-reboot.md, \"The drive is full\")",
        crate::units::human_bytes(free_bytes)
    )
}

#[derive(Debug, Serialize)]
pub struct UnitStatus {
    pub name: String,
    pub state: String,
    pub active: bool,
}

#[derive(Debug, Serialize, Default)]
pub struct ImmichStatus {
    pub answers: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BackupStatus {
    pub health: backup_state::Health,
    pub last_backup: Option<backup_state::Run>,
    pub last_check: Option<backup_state::Run>,
    pub last_drill: Option<backup_state::Run>,
    /// A run skipped while the drive was locked (recorded on the SD card).
    pub last_skip: Option<backup_state::Run>,
    /// A backup running now, or one that was interrupted.
    pub running: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct SocStatus {
    pub temperature_c: Option<f64>,
    pub throttled_bits: Option<u32>,
    pub throttled: Vec<&'static str>,
    /// The hwmon under-voltage alarm, where the kernel has it.
    pub undervoltage: Option<bool>,
    pub clock_max_mhz: Option<u32>,
}

#[derive(Debug, Serialize, Default)]
pub struct SystemStatus {
    pub load_1m: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
}

pub fn gather(cfg: &Config, parts: &Parts) -> Status {
    let mut advice = vec![];
    let mapper = &cfg.drive.mapper_name;
    let mut d = DriveStatus {
        mount_point: cfg.drive.mount_point.display().to_string(),
        ..Default::default()
    };
    match drive::load(&cfg.drive.remembered_drive_file) {
        Ok(Some(r)) => {
            let link = drive::by_uuid(&r.luks_uuid);
            d.present_at = link.canonicalize().ok().map(|p| p.display().to_string());
            d.remembered_uuid = Some(r.luks_uuid);
        }
        Ok(None) => {
            if let drive::DriveError::NotRemembered { found } = drive::unremembered(
                std::path::Path::new("/sys"),
                std::path::Path::new("/dev"),
                &cfg.drive.luks_subsystem,
            ) {
                d.unremembered_appliance_drive = found.first().map(|p| p.display().to_string());
            }
        }
        Err(e) => {
            advice.push(e.to_string());
            d.remembered_error = Some(e.to_string());
        }
    }
    d.smart = d
        .present_at
        .as_ref()
        .map(|p| crate::smart::health(&cfg.tools.smartctl, std::path::Path::new(p)));
    if let Some(crate::smart::Health::Failing(why)) = &d.smart {
        advice.push(format!(
            "the drive reports that it is failing ({why}): make sure the last backup succeeded, then move to a new drive (docs/disaster-recovery.md)"
        ));
    }
    d.cipher = d
        .present_at
        .as_ref()
        .and_then(|p| parts.luks.cipher(std::path::Path::new(p)).ok());
    let mapping = parts.luks.mapping(mapper).ok().flatten();
    d.unlocked = mapping.is_some();
    let gone = mapping
        .as_ref()
        .is_some_and(|m| parts.machine.device_number(&m.device).is_none());
    d.backing_device = mapping.map(|m| m.device.display().to_string());
    d.mounted = !blockdev::mounts_at(&parts.machine.mounts(), &cfg.drive.mount_point).is_empty();
    if d.mounted
        && let Ok(space) = parts.machine.space(&cfg.drive.mount_point)
    {
        d.free_bytes = Some(space.free_bytes);
        d.total_bytes = Some(space.total_bytes);
        d.used_percent = Some(space.used_percent());
        if space.used_percent() >= DRIVE_FULL_WARN_PERCENT {
            advice.push(drive_full_advice(space.used_percent(), space.free_bytes));
        }
    }

    let units: Vec<UnitStatus> = cfg
        .units
        .stack
        .iter()
        .chain(&cfg.units.after_start)
        .map(|u| match parts.systemd.state(u) {
            Ok(s) => UnitStatus {
                name: u.clone(),
                active: s.is_active(),
                state: s.to_string(),
            },
            Err(e) => UnitStatus {
                name: u.clone(),
                active: false,
                state: format!("unknown ({e})"),
            },
        })
        .collect();
    let stack_up = units
        .iter()
        .filter(|u| cfg.units.stack.contains(&u.name))
        .all(|u| u.active);
    let any_up = units.iter().any(|u| u.active);

    let immich = if any_up {
        match parts.immich.ping() {
            Ok(()) => ImmichStatus {
                answers: true,
                error: None,
            },
            Err(e) => ImmichStatus {
                answers: false,
                error: Some(e.to_string()),
            },
        }
    } else {
        ImmichStatus::default()
    };

    let throttle = std::fs::read_to_string(&cfg.throttle.status_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());

    let backup = backup_status(cfg, d.mounted);
    if backup.health.colour == "red" {
        advice.push(format!(
            "backups need attention: {}",
            backup.health.reasons.join("; ")
        ));
    }

    let sensors = Sysfs::new(
        &cfg.throttle.sysfs_root,
        &cfg.throttle.thermal_zone,
        &cfg.throttle.cpufreq_policy,
    );
    let bits = sensors.throttled();
    let soc = SocStatus {
        temperature_c: sensors.temperature_mc().ok().map(|m| m as f64 / 1000.0),
        throttled_bits: bits,
        throttled: bits.map(sysfs::throttled_names).unwrap_or_default(),
        undervoltage: sensors.undervoltage_alarm(),
        clock_max_mhz: sysfs::CpuFreq::freq(&sensors)
            .ok()
            .map(|f| f.scaling_max_khz / 1000),
    };

    let system = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            SystemStatus {
                load_1m: sysinfo::System::load_average()
                    .map(|l| l.one)
                    .unwrap_or(f64::NAN),
                memory_used_bytes: sys.used_memory(),
                memory_total_bytes: sys.total_memory(),
            }
        }
        Err(_) => SystemStatus::default(),
    };

    let (state, summary) = if gone {
        advice.push(
            "run `sudo immich-server --stop` to clean up, then plug the drive in and start again"
                .into(),
        );
        (
            "unplugged",
            "the drive was unplugged while unlocked; the services are stopped".to_owned(),
        )
    } else if d.mounted && stack_up && immich.answers {
        ("running", "Immich is running".to_owned())
    } else if !d.unlocked && !d.mounted && !any_up {
        if let Some(dev) = &d.unremembered_appliance_drive {
            advice.push(format!(
                "{dev} looks like your appliance drive (this SD card does not remember it yet): unlock it with `sudo immich-server --start --immich-drive {dev}`; do not run init on it"
            ));
        } else if d.remembered_error.is_some() {
            // The repair is in the advice already.
        } else if d.remembered_uuid.is_none() {
            advice.push(
                "prepare a drive with `sudo immich-server init --immich-drive /dev/sdX`, or plug in your appliance drive".into(),
            );
        } else if d.present_at.is_some() {
            advice.push("start with `sudo immich-server --start`".into());
        } else {
            advice.push("plug in the drive, then `sudo immich-server --start`".into());
        }
        (
            "stopped",
            "the drive is locked and Immich is stopped".to_owned(),
        )
    } else {
        let down: Vec<&str> = units
            .iter()
            .filter(|u| !u.active && cfg.units.stack.contains(&u.name))
            .map(|u| u.name.as_str())
            .collect();
        let mut what = vec![];
        if d.unlocked && !d.mounted {
            what.push("the drive is unlocked but not mounted".to_owned());
        }
        if !down.is_empty() {
            what.push(format!("not running: {}", down.join(", ")));
        }
        if any_up && !immich.answers {
            what.push("Immich does not answer".to_owned());
        }
        advice.push(
            "run `sudo immich-server --start` to bring everything up, or `--stop` to bring it down"
                .into(),
        );
        ("degraded", what.join("; "))
    };

    let needs_owner = matches!(state, "degraded" | "unplugged")
        || backup.health.colour == "red"
        || d.used_percent.is_some_and(|u| u >= DRIVE_FULL_WARN_PERCENT)
        || d.remembered_error.is_some()
        || matches!(d.smart, Some(crate::smart::Health::Failing(_)));
    Status {
        schema_version: JSON_SCHEMA_VERSION,
        state,
        needs_owner,
        summary,
        drive: d,
        units,
        immich,
        throttle,
        backup,
        soc,
        system,
        alerts: crate::alerts::channels::set(&cfg.alerts),
        urls: if state == "running" {
            net::urls(cfg, parts.addresses)
        } else {
            Urls::default()
        },
        advice,
    }
}

/// The backup part of the status (also `immich-server backup status`).
pub fn backup_status(cfg: &Config, mounted: bool) -> BackupStatus {
    if !cfg.backup.enable {
        return BackupStatus {
            health: backup_state::Health {
                colour: "off",
                reasons: vec![
                    "backups are turned off (services.immich-appliance.backup.enable)".into(),
                ],
                last_success_age_hours: None,
            },
            last_backup: None,
            last_check: None,
            last_drill: None,
            last_skip: None,
            running: None,
            note: Some("turned off in the configuration".into()),
        };
    }
    let stale = Duration::from_secs(cfg.backup.stale_after_hours * 3600);
    let last_skip: Option<backup_state::Run> =
        std::fs::read_to_string(&cfg.backup.skip_record_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    if !mounted {
        return BackupStatus {
            health: backup_state::Health {
                colour: "unknown",
                reasons: vec!["the drive is locked, so the backup record cannot be read".into()],
                last_success_age_hours: None,
            },
            last_backup: None,
            last_check: None,
            last_drill: None,
            last_skip,
            running: None,
            note: Some("unknown until the drive is unlocked".into()),
        };
    }
    let path = cfg
        .drive_path(&cfg.layout.state)
        .join(backup_state::STATE_FILE);
    match backup_state::load(&path) {
        Ok(s) => BackupStatus {
            health: backup_state::health(&s, SystemTime::now(), stale),
            running: s.in_progress.as_ref().map(|p| {
                if p.alive() {
                    format!(
                        "a {} has been running since {} (pid {})",
                        p.what, p.started, p.pid
                    )
                } else {
                    format!(
                        "the {} that started at {} was interrupted; the next run starts afresh",
                        p.what, p.started
                    )
                }
            }),
            last_backup: s.last_backup,
            last_check: s.last_check,
            last_drill: s.last_drill,
            last_skip,
            note: None,
        },
        Err(e) => BackupStatus {
            health: backup_state::Health {
                colour: "red",
                reasons: vec![format!("the backup record is unreadable: {e}")],
                last_success_age_hours: None,
            },
            last_backup: None,
            last_check: None,
            last_drill: None,
            last_skip,
            running: None,
            note: None,
        },
    }
}

/// The human rendering.
pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let line = |o: &mut String, k: &str, v: String| o.push_str(&format!("{k:<12} {v}\n"));
    line(&mut o, "State:", format!("{} — {}", s.state, s.summary));
    let d = &s.drive;
    let mut drive = match (&d.remembered_uuid, &d.present_at) {
        (Some(u), Some(p)) => format!("{p} (LUKS {u})"),
        (Some(u), None) => format!("not plugged in (LUKS {u})"),
        (None, _) if d.remembered_error.is_some() => {
            "unknown (the file that remembers it is damaged)".into()
        }
        (None, _) => match &d.unremembered_appliance_drive {
            Some(dev) => format!("{dev} is an appliance drive this SD card does not remember"),
            None => "none remembered yet".into(),
        },
    };
    drive.push_str(if d.mounted {
        ", unlocked, mounted"
    } else if d.unlocked {
        ", unlocked, not mounted"
    } else {
        ", locked"
    });
    if let (Some(f), Some(t)) = (d.free_bytes, d.total_bytes) {
        drive.push_str(&format!(
            ", {} free of {}",
            crate::units::human_bytes(f),
            crate::units::human_bytes(t)
        ));
    }
    if let Some(c) = &d.cipher {
        drive.push_str(&format!(", cipher {c}"));
    }
    if let Some(h) = &d.smart {
        drive.push_str(&format!(", SMART {}", h.describe()));
    }
    line(&mut o, "Drive:", drive);
    for u in &s.units {
        line(&mut o, "Service:", format!("{:<36} {}", u.name, u.state));
    }
    line(
        &mut o,
        "Immich:",
        if s.immich.answers {
            "answers its ping".into()
        } else {
            s.immich
                .error
                .clone()
                .unwrap_or_else(|| "not running".into())
        },
    );
    let throttle = match &s.throttle {
        Some(t) => format!(
            "{} (clock limit {} MHz, quota {}, paused: {})",
            t.get("mode").and_then(|v| v.as_str()).unwrap_or("?"),
            t.get("clock_limit_mhz")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            t.get("quota_percent")
                .filter(|v| !v.is_null())
                .map(|v| format!("{v}%"))
                .unwrap_or_else(|| "none".into()),
            t.get("paused_queues")
                .and_then(|v| v.as_array())
                .map(|a| if a.is_empty() {
                    "none".to_owned()
                } else {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "?".into()),
        ),
        None => "not running".into(),
    };
    line(&mut o, "Throttle:", throttle);
    o.push_str(&render_backup(&s.backup));
    let mut soc = match s.soc.temperature_c {
        Some(t) => format!("{t:.1} °C"),
        None => "temperature unknown".into(),
    };
    if let Some(m) = s.soc.clock_max_mhz {
        soc.push_str(&format!(", clock limit {m} MHz"));
    }
    if let Some(bits) = s.soc.throttled_bits {
        soc.push_str(&format!(
            ", firmware: {}",
            if bits == 0 {
                "no throttling".to_owned()
            } else {
                s.soc.throttled.join(", ")
            }
        ));
    }
    line(&mut o, "SoC:", soc);
    line(
        &mut o,
        "System:",
        format!(
            "load {:.2}, memory {} of {}",
            s.system.load_1m,
            crate::units::human_bytes(s.system.memory_used_bytes),
            crate::units::human_bytes(s.system.memory_total_bytes)
        ),
    );
    line(
        &mut o,
        "Alerts:",
        if s.alerts.is_empty() {
            "none set: nobody is told when something fails (docs/alerts.md)".to_owned()
        } else {
            s.alerts.join(", ")
        },
    );
    for u in s.urls.all() {
        line(&mut o, "URL:", u.clone());
    }
    if let Some(n) = &s.urls.tailscale_note
        && s.state == "running"
    {
        line(&mut o, "Tailscale:", n.clone());
    }
    for a in &s.advice {
        line(&mut o, "Next:", a.clone());
    }
    o
}

/// The backup lines of `status` (also `immich-server backup status`).
pub fn render_backup(b: &BackupStatus) -> String {
    let mut o = String::new();
    let line = |o: &mut String, k: &str, v: String| o.push_str(&format!("{k:<12} {v}\n"));
    let mut backup = match &b.last_backup {
        Some(r) => format!(
            "{} at {} ({})",
            match r.outcome {
                backup_state::Outcome::Success => "succeeded",
                backup_state::Outcome::Failed => "FAILED",
                backup_state::Outcome::Skipped => "skipped",
            },
            r.finished,
            r.message
        ),
        None => b
            .note
            .clone()
            .unwrap_or_else(|| "unknown (no backup has run yet)".into()),
    };
    backup.push_str(&format!(" — {}", b.health.colour));
    line(&mut o, "Backup:", backup);
    if let Some(r) = &b.running {
        line(&mut o, "", r.clone());
    }
    if let Some(c) = &b.last_check {
        line(
            &mut o,
            "Check:",
            format!("{:?} at {} ({})", c.outcome, c.finished, c.message),
        );
    }
    if let Some(sk) = &b.last_skip {
        line(
            &mut o,
            "",
            format!("last skipped run: {} ({})", sk.finished, sk.message),
        );
    }
    if let Some(dr) = &b.last_drill {
        line(
            &mut o,
            "Drill:",
            format!("{:?} at {} ({})", dr.outcome, dr.finished, dr.message),
        );
    }
    if b.health.colour == "red" {
        for r in &b.health.reasons {
            line(&mut o, "", format!("! {r}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_health_reads_the_record_or_says_why_not() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::from_str_with_defaults(
            &format!(
                "[drive]\nmount-point = \"{m}\"\n[backup]\nskip-record-file = \"{m}/skip.json\"\n",
                m = d.path().display()
            ),
            std::path::Path::new("<test>"),
        )
        .unwrap();
        // Locked: nothing can be read, and status says so.
        let b = backup_status(&cfg, false);
        assert_eq!(b.health.colour, "unknown");
        assert!(b.note.unwrap().contains("unlocked"));
        // Unlocked, no record yet.
        assert_eq!(backup_status(&cfg, true).health.colour, "unknown");
        // An unreadable record is red, not "no backup yet".
        let state = cfg.drive_path(&cfg.layout.state);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(backup_state::STATE_FILE), "{not json").unwrap();
        let b = backup_status(&cfg, true);
        assert_eq!(b.health.colour, "red");
        assert!(b.health.reasons[0].contains("unreadable"), "{:?}", b.health);
        // Turned off in the configuration: said plainly.
        cfg.backup.enable = false;
        let b = backup_status(&cfg, true);
        assert_eq!(b.health.colour, "off");
        assert!(render_backup(&b).contains("turned off"));
    }
}
