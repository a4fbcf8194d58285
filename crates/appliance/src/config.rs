//! The appliance configuration: `/etc/immich-appliance/config.toml`.
//!
//! The NixOS module writes that file; `modules/defaults.toml` is the single
//! definition of every key and its default, shared with the module. A user
//! file is merged over the embedded defaults, and any key the defaults do not
//! know is an error that names the key with its full path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The shared defaults, embedded at build time.
pub const DEFAULTS_TOML: &str = include_str!("../../../modules/defaults.toml");

/// Where the NixOS module writes the config.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/immich-appliance/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML at line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "unknown key `{key}` in {path}{hint}; the keys are defined in modules/defaults.toml (see `immich-server show-config`)"
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: String,
    },
    #[error("key `{key}` in {path} must be {expected}, not {found}")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub drive: Drive,
    pub layout: Layout,
    pub units: Units,
    pub immich: Immich,
    pub throttle: Throttle,
    pub backup: Backup,
    pub alerts: Alerts,
    pub tools: Tools,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Drive {
    pub mapper_name: String,
    pub mount_point: PathBuf,
    pub filesystem: String,
    pub mount_options: Vec<String>,
    pub label: String,
    pub luks_subsystem: String,
    pub cipher: String,
    pub remembered_drive_file: PathBuf,
    pub lock_file: PathBuf,
    pub lock_wait_secs: u64,
    pub passphrase_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Layout {
    pub marker: String,
    pub postgres: Dir,
    pub media: Dir,
    pub secrets: Dir,
    pub throttle_key: Dir,
    pub dumps: Dir,
    pub state: Dir,
}

/// One directory on the drive, with the owner and mode the services expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Dir {
    pub path: PathBuf,
    pub owner: String,
    pub group: String,
    pub mode: String,
}

impl Dir {
    pub fn mode_bits(&self) -> Result<u32, String> {
        u32::from_str_radix(&self.mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("mode `{}` is not an octal file mode", self.mode))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Units {
    pub stack: Vec<String>,
    pub after_start: Vec<String>,
    pub stop_first: Vec<String>,
    pub throttle: String,
    pub backup: String,
    pub backup_timer: String,
    pub backup_after_unlock: String,
    pub drill: String,
    pub drill_timer: String,
    pub alerts: String,
    pub alerts_timer: String,
    pub postgresql_server: String,
    pub immich_slice: String,
    pub start_timeout_secs: u64,
    pub stop_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Immich {
    pub url: String,
    pub lan_port: u16,
    pub ping_timeout_secs: u64,
    pub tailscale: bool,
    pub tailscale_serve: bool,
    pub mdns_name: String,
    pub ml_enabled: bool,
    pub ml_urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Throttle {
    pub sysfs_root: PathBuf,
    pub thermal_zone: String,
    pub cpufreq_policy: String,
    pub setpoint_celsius: f64,
    pub ceiling_celsius: f64,
    pub release_celsius: f64,
    pub poll_secs: f64,
    pub queue_loop_secs: f64,
    pub min_freq_mhz: u32,
    pub min_quota_percent: u32,
    pub config_write_interval_secs: u64,
    pub protected_queues: Vec<String>,
    pub pause_order: Vec<String>,
    pub quiet_hours_start: String,
    pub quiet_hours_end: String,
    pub api_key_credential: String,
    pub state_file: PathBuf,
    pub status_file: PathBuf,
    pub pause_switch_file: PathBuf,
    pub prometheus_textfile: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Backup {
    pub enable: bool,
    pub rustic_profile: PathBuf,
    pub password_file: PathBuf,
    pub cache_dir: PathBuf,
    pub label: String,
    pub database: String,
    pub db_superuser: String,
    pub essential_media: Vec<String>,
    pub regenerable_media: Vec<String>,
    pub essential_only: bool,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub check_every_days: u32,
    pub check_read_subset: String,
    pub ping_url: String,
    pub stale_after_hours: u64,
    pub drill_every_days: u32,
    pub skip_record_file: PathBuf,
    pub drill_scratch: PathBuf,
    pub drill_free_margin_mib: u64,
    pub lock_file: PathBuf,
    pub stop_wait_secs: u64,
    pub progress_every_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Alerts {
    pub name: String,
    pub page_url: String,
    pub ntfy_url: String,
    pub ntfy_priority: String,
    pub webhook_url: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_security: String,
    pub smtp_user: String,
    pub smtp_password_file: PathBuf,
    pub email_from: String,
    pub email_to: Vec<String>,
    pub state_file: PathBuf,
    pub lock_file: PathBuf,
    pub repeat_after_minutes: u64,
    pub hot_minutes: u64,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Tools {
    pub e2fsck: String,
    pub mkfs_ext4: String,
    pub journalctl: String,
    pub tailscale: String,
    pub rustic: String,
    pub pg_dump: String,
    pub pg_restore: String,
    pub psql: String,
    pub smartctl: String,
}

impl Config {
    /// The built-in defaults (modules/defaults.toml).
    pub fn defaults() -> Config {
        Self::from_str_with_defaults("", Path::new("<defaults>"))
            .expect("modules/defaults.toml is valid; a unit test guards this")
    }

    /// Reads `path` and merges it over the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str_with_defaults(&text, path)
    }

    /// Loads `path` when given, else the system config if it exists, else the
    /// defaults. An explicit path that is missing is an error.
    pub fn load_or_default(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match explicit {
            Some(p) => Self::load(p),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::load(Path::new(DEFAULT_CONFIG_PATH))
            }
            None => Ok(Self::defaults()),
        }
    }

    pub fn from_str_with_defaults(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut merged: toml::Table = DEFAULTS_TOML
            .parse()
            .expect("modules/defaults.toml parses; a unit test guards this");
        let user: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        merge(&mut merged, user, "", path)?;
        let cfg: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if !self.drive.mount_point.is_absolute() {
            return Err(invalid("drive.mount-point must be an absolute path".into()));
        }
        if self.drive.mapper_name.is_empty() || self.drive.mapper_name.contains('/') {
            return Err(invalid(
                "drive.mapper-name must be a non-empty name without '/'".into(),
            ));
        }
        for (role, dir) in self.layout.dirs() {
            if dir.path.is_absolute()
                || dir.path.as_os_str().is_empty()
                || dir.path.components().any(|c| {
                    matches!(
                        c,
                        std::path::Component::ParentDir | std::path::Component::CurDir
                    )
                })
            {
                return Err(invalid(format!(
                    "layout.{role}.path must be a plain relative path inside the drive, not `{}`",
                    dir.path.display()
                )));
            }
            dir.mode_bits()
                .map_err(|m| invalid(format!("layout.{role}.mode: {m}")))?;
        }
        if self.units.stack.is_empty() {
            return Err(invalid("units.stack must list at least one unit".into()));
        }
        let mut seen = BTreeSet::new();
        for u in self.units.stack.iter().chain(&self.units.after_start) {
            if !seen.insert(u) {
                return Err(invalid(format!(
                    "unit `{u}` appears twice in units.stack/after-start"
                )));
            }
            if !crate::systemd::is_valid_unit_name(u) {
                return Err(invalid(format!("`{u}` is not a systemd unit name")));
            }
        }
        // Every number must be one: TOML allows inf and nan, which would
        // pass a comparison below or panic where a duration is made.
        if let Some(key) = first_non_finite(&toml::Value::try_from(self).expect("serialises"), "") {
            return Err(invalid(format!("{key} must be a finite number")));
        }
        let t = &self.throttle;
        if !(t.release_celsius < t.setpoint_celsius && t.setpoint_celsius <= t.ceiling_celsius) {
            return Err(invalid(format!(
                "throttle temperatures must satisfy release-celsius < setpoint-celsius <= ceiling-celsius (got {} < {} <= {})",
                t.release_celsius, t.setpoint_celsius, t.ceiling_celsius
            )));
        }
        if t.ceiling_celsius >= 80.0 {
            return Err(invalid(
                "throttle.ceiling-celsius must stay below 80, where the Pi firmware throttles"
                    .into(),
            ));
        }
        if !(0.1..=60.0).contains(&t.poll_secs)
            || !(t.poll_secs..=3600.0).contains(&t.queue_loop_secs)
        {
            return Err(invalid(format!(
                "throttle.poll-secs must be between 0.1 and 60, and queue-loop-secs between poll-secs and 3600 (got {} and {})",
                t.poll_secs, t.queue_loop_secs
            )));
        }
        if !(1..=100).contains(&t.min_quota_percent) {
            return Err(invalid(
                "throttle.min-quota-percent must be between 1 and 100".into(),
            ));
        }
        crate::throttle::QuietHours::parse(&t.quiet_hours_start, &t.quiet_hours_end)
            .map_err(|m| invalid(format!("throttle.quiet-hours: {m}")))?;
        if self.drive.cipher != "auto" && crate::cipher::by_name(&self.drive.cipher).is_none() {
            return Err(invalid(format!(
                "drive.cipher must be \"auto\" or one of {}, not `{}`",
                crate::cipher::KNOWN.map(|c| c.name()).join(", "),
                self.drive.cipher
            )));
        }
        crate::alerts::channels::validate(&self.alerts)
            .map_err(|m| invalid(format!("alerts.{m}")))?;
        Ok(())
    }

    /// Absolute path of a layout directory.
    pub fn drive_path(&self, dir: &Dir) -> PathBuf {
        self.drive.mount_point.join(&dir.path)
    }

    pub fn mapper_path(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.drive.mapper_name)
    }

    /// The systemd mount unit for the mount point (e.g. `srv-immich.mount`).
    pub fn mount_unit(&self) -> String {
        crate::systemd::path_unit_name(&self.drive.mount_point, "mount")
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serialises")
    }
}

impl Layout {
    /// Every directory with its role name, in creation order.
    pub fn dirs(&self) -> [(&'static str, &Dir); 6] {
        [
            ("postgres", &self.postgres),
            ("media", &self.media),
            ("secrets", &self.secrets),
            ("throttle-key", &self.throttle_key),
            ("dumps", &self.dumps),
            ("state", &self.state),
        ]
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// The dotted key of the first float that is infinite or NaN.
fn first_non_finite(v: &toml::Value, prefix: &str) -> Option<String> {
    match v {
        toml::Value::Float(f) if !f.is_finite() => Some(prefix.to_owned()),
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            first_non_finite(v, &key)
        }),
        toml::Value::Array(a) => a.iter().find_map(|v| first_non_finite(v, prefix)),
        _ => None,
    }
}

/// 1-based line and column (in characters) of a byte offset, as editors count.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Merges `user` into `base`, refusing keys that `base` does not have.
fn merge(
    base: &mut toml::Table,
    user: toml::Table,
    prefix: &str,
    path: &Path,
) -> Result<(), ConfigError> {
    for (key, value) in user {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(slot) = base.get_mut(&key) else {
            let known: Vec<&str> = base.keys().map(String::as_str).collect();
            let hint = match closest(&key, &known) {
                Some(k) => format!(" (did you mean `{}`?)", join_key(prefix, k)),
                None => String::new(),
            };
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key: full,
                hint,
            });
        };
        match (slot, value) {
            (toml::Value::Table(b), toml::Value::Table(u)) => merge(b, u, &full, path)?,
            (toml::Value::Table(_), other) => {
                return Err(ConfigError::WrongType {
                    path: path.to_owned(),
                    key: full,
                    expected: "a table",
                    found: type_name(&other),
                });
            }
            // An integer where a float is expected is what users write ("77").
            (slot @ toml::Value::Float(_), toml::Value::Integer(i)) => {
                *slot = toml::Value::Float(i as f64)
            }
            (slot, other) => {
                if std::mem::discriminant(slot) != std::mem::discriminant(&other) {
                    return Err(ConfigError::WrongType {
                        path: path.to_owned(),
                        key: full,
                        expected: type_name(slot),
                        found: type_name(&other),
                    });
                }
                *slot = other;
            }
        }
    }
    Ok(())
}

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The known key closest to `key` by edit distance, if it is plausibly a typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str_with_defaults(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::defaults();
        assert_eq!(c.drive.mount_point, Path::new("/srv/immich"));
        assert_eq!(c.mapper_path(), Path::new("/dev/mapper/immich-data"));
        assert_eq!(c.mount_unit(), "srv-immich.mount");
        assert_eq!(c.units.stack[0], "postgresql.target");
        assert_eq!(c.layout.postgres.mode_bits().unwrap(), 0o700);
    }

    #[test]
    fn user_values_override_defaults() {
        let c =
            parse("[drive]\nmount-point = \"/mnt/photos\"\n[throttle]\nsetpoint-celsius = 75\n")
                .unwrap();
        assert_eq!(c.drive.mount_point, Path::new("/mnt/photos"));
        assert_eq!(c.mount_unit(), "mnt-photos.mount");
        assert_eq!(c.throttle.setpoint_celsius, 75.0);
        // untouched keys keep their defaults
        assert_eq!(c.drive.mapper_name, "immich-data");
    }

    #[test]
    fn unknown_key_is_named_with_its_path_and_a_suggestion() {
        let err = parse("[throttle]\nsetpiont-celsius = 75\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`throttle.setpiont-celsius`"), "{msg}");
        assert!(
            msg.contains("did you mean `throttle.setpoint-celsius`"),
            "{msg}"
        );
        let err = parse("[nonsense]\nx = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown key `nonsense`"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = parse("[drive]\nmount-point = 3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key `drive.mount-point` in test.toml must be a string, not an integer"
        );
        let err = parse("drive = 1\n").unwrap_err();
        assert!(err.to_string().contains("must be a table"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused() {
        for (text, needle) in [
            ("[drive]\nmount-point = \"relative\"\n", "absolute"),
            (
                "[layout.media]\npath = \"../escape\"\n",
                "layout.media.path",
            ),
            ("[layout.media]\nmode = \"0999\"\n", "layout.media.mode"),
            ("[throttle]\nceiling-celsius = 82.0\n", "below 80"),
            (
                "[throttle]\nsetpoint-celsius = 60.0\n",
                "release-celsius < setpoint-celsius",
            ),
            ("[units]\nstack = []\n", "at least one unit"),
            (
                "[units]\nstack = [\"a.service\", \"a.service\"]\n",
                "appears twice",
            ),
            (
                "[units]\nstack = [\"not a unit\"]\n",
                "not a systemd unit name",
            ),
            (
                "[throttle]\nquiet-hours-start = \"25:00\"\nquiet-hours-end = \"07:00\"\n",
                "quiet-hours",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn syntax_errors_name_the_file_line_and_column() {
        let err = parse("[drive\n").unwrap_err().to_string();
        assert!(
            err.starts_with("config file test.toml is not valid TOML at line 1, column 7:"),
            "{err}"
        );
        let err = parse("[drive]\nmapper-name = \"x\"\n  lable = = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at line 3, column "), "{err}");
    }

    #[test]
    fn numbers_are_bounded_and_finite() {
        for (text, needle) in [
            (
                "[throttle]\npoll-secs = inf\nqueue-loop-secs = inf\n",
                "throttle.poll-secs must be a finite number",
            ),
            (
                "[throttle]\nsetpoint-celsius = nan\n",
                "throttle.setpoint-celsius must be a finite number",
            ),
            (
                "[throttle]\npoll-secs = 0.01\n",
                "poll-secs must be between 0.1 and 60",
            ),
            (
                "[throttle]\nqueue-loop-secs = 1e9\n",
                "queue-loop-secs between poll-secs and 3600",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn serialised_config_round_trips() {
        let c = Config::defaults();
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
