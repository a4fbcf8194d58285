//! Alerts: the appliance tells its owner, once, when it needs them, and once
//! when it is fixed.
//!
//! `immich-server alerts check` (a timer, and once at boot) reads what
//! `status` gathers, turns it into a [`Reading`] per [`Condition`], and
//! tells each configured [`channels::Channel`] what changed since the last
//! check. What each channel was told lives in a small state file, so that a
//! restart of the timer, or of the Pi, repeats nothing.

pub mod channels;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backup::state::Outcome;
use crate::config::Config;
use crate::status::{DRIVE_FULL_WARN_PERCENT, Status};

use channels::Channel;

/// Something the owner must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    Locked,
    DriveGone,
    DriveFull,
    SmartFailing,
    BackupFailed,
    BackupStale,
    CheckFailed,
    DrillFailed,
    SocHot,
    ThrottleEmergency,
    UnderVoltage,
}

impl Condition {
    pub const ALL: [Condition; 11] = [
        Condition::Locked,
        Condition::DriveGone,
        Condition::DriveFull,
        Condition::SmartFailing,
        Condition::BackupFailed,
        Condition::BackupStale,
        Condition::CheckFailed,
        Condition::DrillFailed,
        Condition::SocHot,
        Condition::ThrottleEmergency,
        Condition::UnderVoltage,
    ];

    /// Its name in the state file, the webhook's JSON and ntfy's tags.
    pub fn key(self) -> &'static str {
        match self {
            Condition::Locked => "locked",
            Condition::DriveGone => "drive-gone",
            Condition::DriveFull => "drive-full",
            Condition::SmartFailing => "smart-failing",
            Condition::BackupFailed => "backup-failed",
            Condition::BackupStale => "backup-stale",
            Condition::CheckFailed => "check-failed",
            Condition::DrillFailed => "drill-failed",
            Condition::SocHot => "soc-hot",
            Condition::ThrottleEmergency => "throttle-emergency",
            Condition::UnderVoltage => "under-voltage",
        }
    }

    fn headline(self) -> &'static str {
        match self {
            Condition::Locked => "the drive is locked and Immich is stopped",
            Condition::DriveGone => "the drive was unplugged while Immich was running",
            Condition::DriveFull => "the drive is nearly full",
            Condition::SmartFailing => "the drive reports that it is failing (SMART)",
            Condition::BackupFailed => "the last backup failed",
            Condition::BackupStale => "no backup has succeeded for too long",
            Condition::CheckFailed => "the check of the backup repository failed",
            Condition::DrillFailed => "the restore drill failed",
            Condition::SocHot => "the processor stays at its temperature ceiling",
            Condition::ThrottleEmergency => "the throttler had to pause all heavy work",
            Condition::UnderVoltage => "the power supply is too weak (under-voltage)",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            Condition::Locked => {
                "The appliance restarted (a power cut, an update) or was stopped, and waits for the drive's passphrase. Unlock it with `sudo immich-server --start` (docs/after-a-reboot.md)."
            }
            Condition::DriveGone => {
                "Immich and its database stopped. Plug the drive back in, then run `sudo immich-server --stop` and `sudo immich-server --start` (docs/after-a-reboot.md)."
            }
            Condition::DriveFull => {
                "Immich, its database and the backups stop working when it is full. Delete what you do not need in Immich and empty its trash, or move to a larger drive (docs/after-a-reboot.md, \"The drive is full\")."
            }
            Condition::SmartFailing => {
                "Copy your library off it now: make sure the last backup succeeded (`immich-server backup status`), then move to a new drive (docs/disaster-recovery.md)."
            }
            Condition::BackupFailed | Condition::BackupStale => {
                "Your photos are safe on the drive, but the copy elsewhere is out of date. `immich-server backup status` says why (docs/backups.md)."
            }
            Condition::CheckFailed => {
                "The stored backup may be damaged. Run `sudo immich-server backup check` and see docs/backups.md."
            }
            Condition::DrillFailed => {
                "A restore from the backup might not work. `immich-server backup status` says why (docs/disaster-recovery.md)."
            }
            Condition::SocHot | Condition::ThrottleEmergency => {
                "The throttler keeps the Pi below the firmware's limit by slowing Immich down. If this lasts, give the Pi more air: a case with a fan or a heatsink, away from other heat."
            }
            Condition::UnderVoltage => {
                "Under-voltage can corrupt the drive and the SD card. Use the official 5.1 V, 3 A supply, and give the USB drive its own power if it can take it."
            }
        }
    }

    fn resolved(self) -> &'static str {
        match self {
            Condition::Locked => "the drive is unlocked and Immich runs again",
            Condition::DriveGone => "the unplugged drive is dealt with",
            Condition::DriveFull => "the drive has room again",
            Condition::SmartFailing => "the drive no longer reports a failure",
            Condition::BackupFailed => "backups work again",
            Condition::BackupStale => "a backup succeeded again",
            Condition::CheckFailed => "the repository check passes again",
            Condition::DrillFailed => "the restore drill passes again",
            Condition::SocHot => "the processor is below its ceiling again",
            Condition::ThrottleEmergency => "the throttler's emergency pause has ended",
            Condition::UnderVoltage => "the power supply is steady again",
        }
    }
}

/// What one check found about a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// It holds; the text says what was seen.
    Firing(String),
    Clear,
    /// It cannot be seen now (the backup record while the drive is locked):
    /// nothing is raised or resolved on its account.
    Unknown,
}

/// Reads every condition from what `status` gathered.
pub fn observe(cfg: &Config, s: &Status) -> BTreeMap<Condition, Reading> {
    use Reading::{Clear, Firing, Unknown};
    let d = &s.drive;
    let set_up = d.remembered_uuid.is_some() || d.unremembered_appliance_drive.is_some();
    let mut r = BTreeMap::new();
    r.insert(
        Condition::Locked,
        if s.state == "stopped" && set_up {
            Firing(
                if d.present_at.is_some() || d.unremembered_appliance_drive.is_some() {
                    "The drive is plugged in and locked.".into()
                } else {
                    "The drive is locked, and not plugged in.".into()
                },
            )
        } else {
            Clear
        },
    );
    r.insert(
        Condition::DriveGone,
        if s.state == "unplugged" {
            Firing("The encrypted drive disappeared while it was unlocked.".into())
        } else {
            Clear
        },
    );
    r.insert(
        Condition::DriveFull,
        match d.used_percent {
            Some(u) if u >= DRIVE_FULL_WARN_PERCENT => Firing(format!(
                "It is {u:.0} % full ({} free).",
                d.free_bytes
                    .map(crate::units::human_bytes)
                    .unwrap_or_else(|| "?".into())
            )),
            Some(_) => Clear,
            None => Unknown,
        },
    );

    r.insert(
        Condition::SmartFailing,
        match &d.smart {
            Some(crate::smart::Health::Failing(why)) => Firing(format!("The drive says: {why}")),
            Some(crate::smart::Health::Passed) => Clear,
            // The bridge hides SMART, or the drive is not plugged in.
            _ => Unknown,
        },
    );

    let b = &s.backup;
    let backup = |outcome: Option<&crate::backup::state::Run>, what: &str| {
        if !cfg.backup.enable {
            Clear
        } else if !d.mounted {
            Unknown
        } else {
            match outcome {
                Some(run) if run.outcome == Outcome::Failed => Firing(format!(
                    "The {what} of {} failed: {}",
                    run.finished,
                    scrub(&gist(&run.message), &cfg.drive.mount_point)
                )),
                _ => Clear,
            }
        }
    };
    r.insert(
        Condition::BackupFailed,
        backup(b.last_backup.as_ref(), "backup"),
    );
    r.insert(
        Condition::CheckFailed,
        backup(b.last_check.as_ref(), "repository check"),
    );
    r.insert(
        Condition::DrillFailed,
        backup(b.last_drill.as_ref(), "restore drill"),
    );
    r.insert(
        Condition::BackupStale,
        if !cfg.backup.enable {
            Clear
        } else if !d.mounted {
            Unknown
        } else {
            match b.health.last_success_age_hours {
                Some(h) if h > cfg.backup.stale_after_hours as f64 => Firing(format!(
                    "The last successful backup is {h:.0} hours old (the limit is {} hours).",
                    cfg.backup.stale_after_hours
                )),
                _ => Clear,
            }
        },
    );

    r.insert(
        Condition::SocHot,
        match s.soc.temperature_c {
            Some(t) if t >= cfg.throttle.ceiling_celsius => Firing(format!(
                "The processor is at {t:.1} °C; the throttler's ceiling is {:.0} °C.",
                cfg.throttle.ceiling_celsius
            )),
            Some(_) => Clear,
            None => Unknown,
        },
    );
    let mode = s
        .throttle
        .as_ref()
        .and_then(|t| t.get("mode"))
        .and_then(|m| m.as_str());
    r.insert(
        Condition::ThrottleEmergency,
        if mode == Some("emergency") {
            let why = s
                .throttle
                .as_ref()
                .and_then(|t| t.get("reason"))
                .and_then(|m| m.as_str())
                .unwrap_or("");
            Firing(format!("The throttler paused all heavy work: {why}"))
        } else {
            Clear
        },
    );
    r.insert(
        Condition::UnderVoltage,
        match (s.soc.undervoltage, s.soc.throttled_bits) {
            (Some(true), _) => Firing("The board reports under-voltage now.".into()),
            (_, Some(bits)) if bits & 1 != 0 => {
                Firing("The board reports under-voltage now.".into())
            }
            (None, None) => Unknown,
            _ => Clear,
        },
    );
    r
}

/// A failure's first line (what failed) and its last (usually why), not
/// the retries a tool printed between them: a phone shows a few lines.
fn gist(message: &str) -> String {
    // A tool's progress and retry notes, and its hints about backtraces,
    // say nothing about what went wrong.
    let noise = ["[WARN]", "[INFO]", "Backtrace:", "disabled backtrace"];
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !noise.iter().any(|n| l.starts_with(n)))
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [first, .., last] => format!("{first} … {last}"),
    }
}

/// Paths on the drive say what is in the library (an album's name, a
/// person's): each becomes "(a path on the drive)". A path ends where an
/// error message goes on (": ", a quote, a bracket, the line's end), since
/// it may hold spaces.
fn cut_drive_paths(text: &str, drive: &str) -> String {
    let root = drive.trim_end_matches('/');
    if root.is_empty() {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(root) {
        let after = &rest[i + root.len()..];
        // "/srv/immich2" is not on the drive at /srv/immich.
        if !(after.is_empty()
            || after.starts_with('/')
            || after.starts_with([':', ' ', ')', '"', '\'']))
        {
            out.push_str(&rest[..i + root.len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..i]);
        out.push_str("(a path on the drive)");
        let end = [": ", "\"", "'", ")", "\n"]
            .iter()
            .filter_map(|stop| after.find(stop))
            .min()
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// An error text as an alert may carry it to a third party: every URL cut
/// to its scheme and host (a token or password may sit in the rest), and
/// at most a few hundred characters.
pub fn scrub(text: &str, drive: &Path) -> String {
    let text = cut_drive_paths(text, &drive.display().to_string());
    let mut out: Vec<String> = vec![];
    for word in text.split(' ') {
        if word.contains("://") {
            let (head, rest) =
                word.split_at(word.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0));
            // Punctuation after a URL ("(http://host/x).") is the sentence's.
            let url = rest.trim_end_matches([')', '.', ',', ';', ':']);
            let tail = &rest[url.len()..];
            out.push(format!("{head}{}{tail}", crate::backup::redact_url(url)));
        } else {
            out.push(word.to_owned());
        }
    }
    let joined = out.join(" ");
    match joined.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &joined[..i]),
        None => joined,
    }
}

/// What a channel is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Raised,
    Resolved,
    Test,
}

/// One message, the same on every channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub appliance: String,
    pub condition: Option<Condition>,
    pub kind: Kind,
    pub title: String,
    pub body: String,
    pub page_url: Option<String>,
    pub time: String,
}

/// Who the messages name, and where they send the owner.
#[derive(Debug, Clone)]
pub struct Context {
    pub appliance: String,
    pub page_url: Option<String>,
}

impl Context {
    pub fn new(cfg: &Config) -> Context {
        let appliance = if cfg.alerts.name.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "immich".into())
        } else {
            cfg.alerts.name.clone()
        };
        Context {
            appliance,
            page_url: (!cfg.alerts.page_url.is_empty()).then(|| cfg.alerts.page_url.clone()),
        }
    }

    pub fn message(&self, c: Condition, kind: Kind, detail: &str) -> Message {
        let (title, mut body) = match kind {
            Kind::Raised => (
                format!("{}: {}", self.appliance, c.headline()),
                format!("{detail}\n\n{}", c.advice()),
            ),
            Kind::Resolved | Kind::Test => (
                format!("{}: resolved: {}", self.appliance, c.resolved()),
                format!("Earlier: {}. It needs nothing more from you.", c.headline()),
            ),
        };
        if let Some(u) = &self.page_url {
            body.push_str(&format!("\n\nOpen {u}"));
        }
        Message {
            appliance: self.appliance.clone(),
            condition: Some(c),
            kind,
            title,
            body,
            page_url: self.page_url.clone(),
            time: crate::backup::state::now_rfc3339(),
        }
    }

    /// The message of `immich-server alerts test`.
    pub fn test_message(&self) -> Message {
        let mut body = format!(
            "A test from {}: alerts reach you here. Nothing needs you.",
            self.appliance
        );
        if let Some(u) = &self.page_url {
            body.push_str(&format!("\n\nOpen {u}"));
        }
        Message {
            appliance: self.appliance.clone(),
            condition: None,
            kind: Kind::Test,
            title: format!("{}: test alert", self.appliance),
            body,
            page_url: self.page_url.clone(),
            time: crate::backup::state::now_rfc3339(),
        }
    }
}

/// What each channel was told, per condition: kept across runs and reboots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub conditions: BTreeMap<String, CondState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CondState {
    /// Since when (Unix seconds) the condition has held without a break.
    pub seen_since: Option<u64>,
    #[serde(default)]
    pub told: BTreeMap<String, Told>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    /// The channel was told it holds, and not yet that it cleared.
    pub raised: bool,
    /// When the channel was last told it holds (Unix seconds).
    pub raised_at: Option<u64>,
}

/// The rules of timing.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A condition that returns sooner than this after its last alert waits.
    pub repeat_after: Duration,
    /// How long the SoC must stay hot before it is an alert.
    pub hot_hold: Duration,
}

impl Policy {
    pub fn new(cfg: &Config) -> Policy {
        Policy {
            repeat_after: Duration::from_secs(cfg.alerts.repeat_after_minutes * 60),
            hot_hold: Duration::from_secs(cfg.alerts.hot_minutes * 60),
        }
    }

    fn hold(&self, c: Condition) -> u64 {
        match c {
            Condition::SocHot => self.hot_hold.as_secs(),
            _ => 0,
        }
    }
}

/// What one check did, channel by channel.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub sent: Vec<(String, &'static str, Kind)>,
    /// Held back because the condition returned too soon (flapping).
    pub held_back: Vec<(String, &'static str)>,
    pub failed: Vec<(String, &'static str, String)>,
}

/// One check: compares the readings with what each channel was told, tells
/// it what changed and records what went through. A delivery that fails is
/// not recorded, so the next check tries again.
pub fn check(
    state: &mut State,
    readings: &BTreeMap<Condition, Reading>,
    now: SystemTime,
    policy: Policy,
    ctx: &Context,
    channels: &[&dyn Channel],
) -> Report {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut report = Report::default();
    for c in Condition::ALL {
        let reading = readings.get(&c).cloned().unwrap_or(Reading::Unknown);
        let st = state.conditions.entry(c.key().to_owned()).or_default();
        let (active, detail) = match &reading {
            Reading::Unknown => continue,
            Reading::Clear => {
                st.seen_since = None;
                (false, String::new())
            }
            Reading::Firing(detail) => {
                // A clock set back puts the start in the future: start afresh
                // rather than wait for a time that may not come.
                let since = match st.seen_since {
                    Some(t) if t <= now => t,
                    _ => now,
                };
                st.seen_since = Some(since);
                (now - since >= policy.hold(c), detail.clone())
            }
        };
        for ch in channels {
            if !ch.carries(c) {
                continue;
            }
            let told = st.told.entry(ch.name().to_owned()).or_default();
            let kind = match (active, told.raised) {
                (true, false) => {
                    let recent = told
                        .raised_at
                        .is_some_and(|t| t <= now && now - t < policy.repeat_after.as_secs());
                    if recent {
                        report.held_back.push((ch.name().to_owned(), c.key()));
                        continue;
                    }
                    Kind::Raised
                }
                (false, true) => Kind::Resolved,
                _ => continue,
            };
            match ch.send(&ctx.message(c, kind, &detail)) {
                Ok(()) => {
                    told.raised = kind == Kind::Raised;
                    if kind == Kind::Raised {
                        told.raised_at = Some(now);
                    }
                    report.sent.push((ch.name().to_owned(), c.key(), kind));
                }
                Err(e) => report.failed.push((ch.name().to_owned(), c.key(), e)),
            }
        }
    }
    // Only what matters is kept: the file stays a few lines long.
    for st in state.conditions.values_mut() {
        st.told.retain(|_, t| *t != Told::default());
    }
    state.conditions.retain(|_, st| *st != CondState::default());
    report
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Lock(#[from] crate::host::LockError),
    #[error("cannot record what was told in {path}: {source}; the next check may repeat it")]
    Save {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `immich-server alerts check`: one check under the alerts' lock, and the
/// state file written back.
pub fn run_check(
    cfg: &Config,
    status: &Status,
    channels: &[&dyn Channel],
    now: SystemTime,
) -> Result<Report, AlertError> {
    let _lock = crate::host::RunLock::acquire(
        &cfg.alerts.lock_file,
        Some(Duration::from_secs(cfg.alerts.timeout_secs * 4)),
        |_| {},
    )?;
    let mut state = load_state(&cfg.alerts.state_file);
    let report = check(
        &mut state,
        &observe(cfg, status),
        now,
        Policy::new(cfg),
        &Context::new(cfg),
        channels,
    );
    save_state(&cfg.alerts.state_file, &state).map_err(|source| AlertError::Save {
        path: cfg.alerts.state_file.clone(),
        source,
    })?;
    Ok(report)
}

/// `immich-server alerts email-password`: the SMTP password, written onto
/// the unlocked drive (never the SD card), readable by root alone.
pub fn store_email_password(
    cfg: &Config,
    password: &crate::secret::Passphrase,
) -> Result<std::path::PathBuf, String> {
    if !crate::backup::drive_ready(cfg) {
        return Err(format!(
            "the drive is not unlocked at {}; the password is kept on it, so unlock it first: `sudo immich-server --start`",
            cfg.drive.mount_point.display()
        ));
    }
    let path = cfg.drive.mount_point.join(&cfg.alerts.smtp_password_file);
    crate::host::write_atomic(&path, password.as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Reads the state file; a missing file is a fresh start, and an unreadable
/// one too (after saying so), so that alerts never stop over it.
pub fn load_state(path: &Path) -> State {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "the alert state is unreadable; starting afresh");
            State::default()
        }),
        Err(_) => State::default(),
    }
}

pub fn save_state(path: &Path, s: &State) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(s).expect("serialises");
    text.push('\n');
    crate::host::write_atomic(path, text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests;
