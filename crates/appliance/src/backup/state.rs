//! What the backup service records: the result of each run, check and
//! restore drill, in `state/backup.json` on the drive; and, while the drive
//! is locked, the skip in a small file on the SD card (a time and a reason,
//! nothing private).

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::host;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    Failed,
    Skipped,
}

/// One run of a backup, check or drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Run {
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: String,
    pub outcome: Outcome,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    pub duration_secs: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct State {
    pub last_backup: Option<Run>,
    pub last_success: Option<Run>,
    pub last_check: Option<Run>,
    pub last_drill: Option<Run>,
    /// Set while a backup runs; left behind when it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<InProgress>,
}

/// A run that has started and not yet recorded its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InProgress {
    pub what: String,
    pub started: String,
    pub pid: u32,
    /// The kernel's boot id, so that a pid reused after a reboot is not
    /// mistaken for the run.
    pub boot_id: String,
}

impl InProgress {
    pub fn now(what: &str) -> InProgress {
        InProgress {
            what: what.to_owned(),
            started: now_rfc3339(),
            pid: std::process::id(),
            boot_id: boot_id(),
        }
    }

    /// Whether the process that wrote this is still running.
    pub fn alive(&self) -> bool {
        self.boot_id == boot_id() && Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl State {
    /// The record of a run that was killed (stop during a backup, power
    /// loss), if one is left behind.
    pub fn interrupted(&self) -> Option<Run> {
        let p = self.in_progress.as_ref()?;
        if p.alive() {
            return None;
        }
        Some(Run {
            started: p.started.clone(),
            finished: p.started.clone(),
            outcome: Outcome::Failed,
            message: format!(
                "the {} that started at {} was interrupted (stopped, killed or the power went)",
                p.what, p.started
            ),
            snapshot: None,
            files: None,
            bytes_added: None,
            duration_secs: 0.0,
        })
    }
}

/// Whether a periodic job is due: never run, or its last run is at least
/// `every_days` old (a failed run counts, so a broken repository is not
/// checked in a loop).
pub fn due(last: Option<&Run>, now: SystemTime, every_days: u32) -> bool {
    match last.and_then(|r| age(&r.started, now)) {
        None => true,
        Some(a) => a >= Duration::from_secs(u64::from(every_days) * 86_400),
    }
}

/// Records a skipped run on the SD card: a time and a reason, nothing else.
pub fn record_skip(path: &Path, run: &Run) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut text = serde_json::to_string_pretty(run).expect("serialises");
    text.push('\n');
    host::write_atomic(path, text.as_bytes(), 0o644)
}

pub const STATE_FILE: &str = "backup.json";

pub fn load(path: &Path) -> Result<State, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn save(path: &Path, s: &State) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(s).expect("serialises");
    text.push('\n');
    host::write_atomic(path, text.as_bytes(), 0o644)
}

/// The verdict `status` shows beside the backup age.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// "green", "red" or "unknown" (no backup has run yet).
    pub colour: &'static str,
    pub reasons: Vec<String>,
    pub last_success_age_hours: Option<f64>,
}

pub fn health(s: &State, now: SystemTime, stale_after: Duration) -> Health {
    let mut reasons = vec![];
    let age = s
        .last_success
        .as_ref()
        .and_then(|r| age(&r.finished, now))
        .map(|d| d.as_secs_f64() / 3600.0);
    match age {
        None if s.last_backup.is_none() => {
            return Health {
                colour: "unknown",
                reasons: vec!["no backup has run yet".into()],
                last_success_age_hours: None,
            };
        }
        None => reasons.push("no backup has succeeded yet".into()),
        Some(h) if h > stale_after.as_secs_f64() / 3600.0 => reasons.push(format!(
            "the last successful backup is {h:.0} h old (more than {} h)",
            stale_after.as_secs() / 3600
        )),
        Some(_) => {}
    }
    if let Some(b) = &s.last_backup
        && b.outcome == Outcome::Failed
    {
        reasons.push(format!("the last backup failed: {}", b.message));
    }
    if let Some(c) = &s.last_check
        && c.outcome == Outcome::Failed
    {
        reasons.push(format!("the last repository check failed: {}", c.message));
    }
    if let Some(d) = &s.last_drill
        && d.outcome == Outcome::Failed
    {
        reasons.push(format!("the last restore drill failed: {}", d.message));
    }
    Health {
        colour: if reasons.is_empty() { "green" } else { "red" },
        reasons,
        last_success_age_hours: age,
    }
}

fn age(rfc3339: &str, now: SystemTime) -> Option<Duration> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(now.duration_since(t).unwrap_or(Duration::ZERO))
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcome: Outcome, finished: &str) -> Run {
        Run {
            started: finished.into(),
            finished: finished.into(),
            outcome,
            message: "m".into(),
            snapshot: None,
            files: None,
            bytes_added: None,
            duration_secs: 1.0,
        }
    }

    #[test]
    fn health_rules() {
        let now = humantime::parse_rfc3339("2026-11-21T12:00:00Z").unwrap();
        let day2 = Duration::from_secs(48 * 3600);
        assert_eq!(health(&State::default(), now, day2).colour, "unknown");
        let ok = run(Outcome::Success, "2026-11-21T03:00:00Z");
        let mut s = State {
            last_backup: Some(ok.clone()),
            last_success: Some(ok.clone()),
            ..Default::default()
        };
        let h = health(&s, now, day2);
        assert_eq!(h.colour, "green");
        assert_eq!(h.last_success_age_hours, Some(9.0));
        s.last_drill = Some(run(Outcome::Failed, "2026-11-20T03:00:00Z"));
        let h = health(&s, now, day2);
        assert_eq!(h.colour, "red", "a backup that cannot be restored is red");
        assert!(h.reasons[0].contains("restore drill"));
        s.last_drill = None;
        s.last_success = Some(run(Outcome::Success, "2026-11-18T03:00:00Z"));
        let h = health(&s, now, day2);
        assert_eq!(h.colour, "red");
        assert!(h.reasons[0].contains("81 h old"), "{:?}", h.reasons);
        s.last_success = None;
        s.last_backup = Some(run(Outcome::Failed, "2026-11-21T03:00:00Z"));
        assert_eq!(health(&s, now, day2).colour, "red");
    }

    #[test]
    fn checks_fall_due() {
        let now = humantime::parse_rfc3339("2026-11-21T12:00:00Z").unwrap();
        assert!(due(None, now, 7));
        let r = run(Outcome::Success, "2026-11-15T12:00:00Z");
        assert!(!due(Some(&r), now, 7), "six days old");
        let r = run(Outcome::Failed, "2026-11-14T12:00:00Z");
        assert!(due(Some(&r), now, 7), "seven days old");
    }

    #[test]
    fn a_dead_run_is_reported_as_interrupted() {
        let mut s = State::default();
        assert!(s.interrupted().is_none());
        s.in_progress = Some(InProgress::now("backup"));
        assert!(s.interrupted().is_none(), "this process is alive");
        s.in_progress.as_mut().unwrap().pid = u32::MAX;
        let r = s.interrupted().unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(r.message.contains("interrupted"));
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("backup.json");
        assert_eq!(load(&p).unwrap(), State::default());
        let s = State {
            last_check: Some(run(Outcome::Success, "2026-11-21T03:00:00Z")),
            ..Default::default()
        };
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
    }
}
