//! systemd over D-Bus: the seam every unit start, stop, mount and CPU quota
//! goes through. Nothing here shells out to `systemctl`.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};
use zbus_systemd::zbus::{self, Connection, OwnedObjectPath, OwnedVariant, Variant};

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("cannot talk to systemd over D-Bus: {0}")]
    Bus(String),
    #[error("unit {unit} failed to {verb} ({result}){tail}", tail = fmt_tail(journal))]
    JobFailed {
        unit: String,
        verb: &'static str,
        result: String,
        journal: String,
    },
    #[error("unit {unit} did not {verb} within {secs} s{tail}", tail = fmt_tail(journal))]
    Timeout {
        unit: String,
        verb: &'static str,
        secs: u64,
        journal: String,
    },
    #[error("unit {unit} does not exist (is the NixOS module enabled and the system switched?)")]
    NotFound { unit: String },
    #[error(
        "systemd still holds {unit} from an earlier run and does not let it go. Run `sudo systemctl stop {unit}` and `sudo systemctl reset-failed`, then start again"
    )]
    Stale { unit: String },
}

fn fmt_tail(journal: &str) -> String {
    if journal.trim().is_empty() {
        String::new()
    } else {
        format!("; its journal ends with:\n{}", indent(journal))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl From<zbus::Error> for UnitError {
    fn from(e: zbus::Error) -> Self {
        UnitError::Bus(e.to_string())
    }
}

/// What `systemctl show -p LoadState,ActiveState,SubState` would say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
}

impl UnitState {
    /// What a unit systemd has not loaded is: inactive, with nothing to say.
    pub fn not_loaded() -> UnitState {
        UnitState {
            load: "not-loaded".into(),
            active: "inactive".into(),
            sub: "dead".into(),
        }
    }
    pub fn is_active(&self) -> bool {
        self.active == "active" || self.active == "reloading"
    }
    /// Failed, or died and waiting to be restarted (Restart=on-failure).
    pub fn is_failed(&self) -> bool {
        self.active == "failed" || self.sub == "auto-restart"
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.load != "loaded" && self.load != "not-loaded" {
            write!(f, "{} ({})", self.active, self.load)
        } else {
            write!(f, "{} ({})", self.active, self.sub)
        }
    }
}

/// A mount made as a transient systemd mount unit, so that systemd knows it,
/// units can bind to it, and it is stopped when its backing device vanishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub what: String,
    pub r#where: std::path::PathBuf,
    pub fstype: String,
    pub options: Vec<String>,
    /// Device units the mount is bound to (e.g. `dev-sda.device`): when the
    /// disk disappears, systemd stops the mount and everything bound to it.
    pub binds_to: Vec<String>,
}

/// The side effects on systemd, behind one narrow trait.
pub trait Systemd {
    fn start(&self, unit: &str, timeout: Duration) -> Result<(), UnitError>;
    fn stop(&self, unit: &str, timeout: Duration) -> Result<(), UnitError>;
    fn state(&self, unit: &str) -> Result<UnitState, UnitError>;
    /// Clears a unit's failed state and start rate limit, as
    /// `systemctl reset-failed UNIT` does; a unit that is not loaded is fine.
    fn reset_failed(&self, unit: &str) -> Result<(), UnitError>;
    fn mount(&self, spec: &MountSpec, timeout: Duration) -> Result<(), UnitError>;
    /// The last lines of the unit's journal for this boot, for error reports.
    fn journal_tail(&self, unit: &str, lines: usize) -> String;
}

/// The one thing the throttler asks of systemd: a slice's CPU quota.
pub trait CpuQuota {
    /// Sets `CPUQuotaPerSecUSec` at runtime; `None` removes the limit.
    fn set_cpu_quota(&self, unit: &str, usec_per_sec: Option<u64>) -> Result<(), UnitError>;
    /// The current `CPUQuotaPerSecUSec`, `None` when unlimited.
    fn cpu_quota(&self, unit: &str) -> Result<Option<u64>, UnitError>;
}

/// Every D-Bus call waits at most this long for systemd's answer (the
/// reference D-Bus library's default), so that a wedged systemd cannot hang
/// a start; waiting for a job to finish has its own, longer limit.
const DBUS_CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// How long `mount` waits for systemd to collect a transient mount unit
/// left from an earlier run before it gives up on the name.
const STALE_MOUNT_WAIT: Duration = Duration::from_secs(5);

/// systemd's "no limit" value for time properties.
const USEC_INFINITY: u64 = u64::MAX;

/// The real implementation, on the system bus.
#[derive(Debug, Clone)]
pub struct DbusSystemd {
    conn: Connection,
    journalctl: String,
}

impl DbusSystemd {
    pub fn system(journalctl: &str) -> Result<Self, UnitError> {
        let conn = zbus::block_on(async {
            let conn = zbus::connection::Builder::system()
                .method_timeout(DBUS_CALL_TIMEOUT)
                .build()
                .await?;
            // Without a subscriber systemd may not emit job signals at all;
            // one subscription per connection (a second one is an error).
            ManagerProxy::new(&conn).await?.subscribe().await?;
            Ok::<_, zbus::Error>(conn)
        })
        .map_err(|e| {
            UnitError::Bus(format!(
                "{e} (is this a systemd machine, and are you root?)"
            ))
        })?;
        Ok(DbusSystemd {
            conn,
            journalctl: journalctl.to_owned(),
        })
    }

    /// Runs a job (start/stop/transient start) and waits for its JobRemoved
    /// signal. The subscription is made before the job is queued so that a
    /// fast job cannot finish unseen.
    fn run_job<'a, F, Fut>(
        &'a self,
        unit: &str,
        verb: &'static str,
        timeout: Duration,
        queue: F,
    ) -> Result<(), UnitError>
    where
        F: FnOnce(ManagerProxy<'a>) -> Fut,
        Fut: std::future::Future<Output = zbus::Result<OwnedObjectPath>>,
    {
        let outcome = zbus::block_on(async {
            let manager = ManagerProxy::new(&self.conn).await?;
            let mut removed = manager.receive_job_removed().await?;
            let job = queue(manager.clone()).await?;
            let rt = zruntime::SharedRuntime::current()
                .map_err(|e| zbus::Error::Failure(e.to_string()))?;
            let waited = rt
                .timeout(timeout, async {
                    while let Some(signal) = removed.next().await {
                        let args = signal.args()?;
                        if args.job == job {
                            return Ok::<String, zbus::Error>(args.result.clone());
                        }
                    }
                    Err(zbus::Error::Failure("the job signal stream ended".into()))
                })
                .await;
            Ok::<_, zbus::Error>(waited)
        });
        match outcome {
            Err(zbus::Error::MethodError(name, msg, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                let _ = msg;
                Err(UnitError::NotFound {
                    unit: unit.to_owned(),
                })
            }
            Err(e) => Err(UnitError::Bus(e.to_string())),
            Ok(Err(_elapsed)) => Err(UnitError::Timeout {
                unit: unit.to_owned(),
                verb,
                secs: timeout.as_secs(),
                journal: self.journal_tail(unit, 15),
            }),
            Ok(Ok(Err(e))) => Err(UnitError::Bus(e.to_string())),
            Ok(Ok(Ok(result))) if result == "done" => Ok(()),
            Ok(Ok(Ok(result))) => {
                // "dependency" means a unit it requires failed: show that
                // unit's journal, which says why.
                let mut journal = String::new();
                if result == "dependency" {
                    for dep in self.failed_dependencies(unit) {
                        journal
                            .push_str(&format!("{dep} failed:\n{}\n", self.journal_tail(&dep, 15)));
                    }
                }
                if journal.is_empty() {
                    journal = self.journal_tail(unit, 15);
                }
                Err(UnitError::JobFailed {
                    unit: unit.to_owned(),
                    verb,
                    result,
                    journal,
                })
            }
        }
    }

    /// Whether the loaded mount unit `unit` mounts what `spec` asks for, the
    /// same way, bound to the same device: inactive, so it may be started.
    fn same_mount(&self, unit: &str, spec: &MountSpec) -> bool {
        let Ok(path) = self.load_unit_path(unit) else {
            return false;
        };
        zbus::block_on(async {
            let u = unit_proxy(&self.conn, path.clone()).await?;
            let m = zbus_systemd::systemd1::MountProxy::builder(&self.conn)
                .path(path)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await?;
            let mut binds = u.binds_to().await?;
            binds.sort();
            let mut want = spec.binds_to.clone();
            want.sort();
            Ok::<_, zbus::Error>(
                matches!(u.active_state().await?.as_str(), "inactive" | "failed")
                    && m.what().await? == spec.what
                    && m.where_property().await? == spec.r#where.display().to_string()
                    && m.type_property().await? == spec.fstype
                    && m.options().await? == spec.options.join(",")
                    && binds == want,
            )
        })
        .unwrap_or(false)
    }

    /// The failed units that depend on `unit` (BindsTo=, Requires=, Wants=
    /// it): a failed unit stays loaded, and so keeps `unit` loaded too.
    fn failed_dependents(&self, unit: &str) -> Vec<String> {
        let Ok(path) = self.load_unit_path(unit) else {
            return vec![];
        };
        let dependents = zbus::block_on(async {
            let p = unit_proxy(&self.conn, path).await?;
            let mut d = p.bound_by().await?;
            d.extend(p.required_by().await?);
            d.extend(p.wanted_by().await?);
            Ok::<_, zbus::Error>(d)
        })
        .unwrap_or_default();
        dependents
            .into_iter()
            .filter(|d| self.state(d).map(|s| s.is_failed()).unwrap_or(false))
            .collect()
    }

    /// The units `unit` requires (directly or one level down) that failed.
    fn failed_dependencies(&self, unit: &str) -> Vec<String> {
        let deps = |u: &str| -> Vec<String> {
            let Ok(path) = self.load_unit_path(u) else {
                return vec![];
            };
            zbus::block_on(async {
                let p = unit_proxy(&self.conn, path).await?;
                let mut d = p.requires().await?;
                d.extend(p.binds_to().await?);
                Ok::<_, zbus::Error>(d)
            })
            .unwrap_or_default()
        };
        let mut out = vec![];
        let mut queue = vec![unit.to_owned()];
        let mut depth = 0;
        while !queue.is_empty() && depth < 2 {
            let mut next = vec![];
            for u in &queue {
                for d in deps(u) {
                    if self.state(&d).map(|s| s.is_failed()).unwrap_or(false) && !out.contains(&d) {
                        out.push(d.clone());
                    }
                    next.push(d);
                }
            }
            queue = next;
            depth += 1;
        }
        out
    }

    fn load_unit_path(&self, unit: &str) -> Result<OwnedObjectPath, UnitError> {
        Ok(zbus::block_on(async {
            ManagerProxy::new(&self.conn)
                .await?
                .load_unit(unit.to_owned())
                .await
        })?)
    }

    fn property_interface(unit: &str) -> &'static str {
        match unit.rsplit_once('.').map(|(_, t)| t) {
            Some("slice") => "org.freedesktop.systemd1.Slice",
            Some("scope") => "org.freedesktop.systemd1.Scope",
            Some("socket") => "org.freedesktop.systemd1.Socket",
            Some("mount") => "org.freedesktop.systemd1.Mount",
            _ => "org.freedesktop.systemd1.Service",
        }
    }
}

impl Systemd for DbusSystemd {
    fn start(&self, unit: &str, timeout: Duration) -> Result<(), UnitError> {
        let r = self.run_job(unit, "start", timeout, |m| async move {
            m.start_unit(unit.to_owned(), "replace".into()).await
        });
        if r.is_ok() {
            // A Type=simple service whose process dies at once still
            // finishes its start job with "done"; look at the state too.
            let st = self.state(unit)?;
            if st.is_failed() || (!st.is_active() && st.active != "activating") {
                return Err(UnitError::JobFailed {
                    unit: unit.to_owned(),
                    verb: "start",
                    result: format!("it is {st} right after starting"),
                    journal: self.journal_tail(unit, 15),
                });
            }
        }
        r
    }

    fn stop(&self, unit: &str, timeout: Duration) -> Result<(), UnitError> {
        match self.run_job(unit, "stop", timeout, |m| async move {
            m.stop_unit(unit.to_owned(), "replace".into()).await
        }) {
            // Stopping a unit that does not exist is already done.
            Err(UnitError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    // GetUnit, not LoadUnit: loading a stack unit to read its state would
    // load the drive's mount unit it binds to as well, and while systemd has
    // not collected it again, `--start` cannot create that mount (UnitExists).
    // A status check (or the alerts timer) right before a start hit this.
    fn state(&self, unit: &str) -> Result<UnitState, UnitError> {
        let path = match zbus::block_on(async {
            ManagerProxy::new(&self.conn)
                .await?
                .get_unit(unit.to_owned())
                .await
        }) {
            Ok(p) => p,
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                return Ok(UnitState::not_loaded());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(zbus::block_on(async {
            let u = unit_proxy(&self.conn, path).await?;
            Ok::<_, zbus::Error>(UnitState {
                load: u.load_state().await?,
                active: u.active_state().await?,
                sub: u.sub_state().await?,
            })
        })?)
    }

    fn reset_failed(&self, unit: &str) -> Result<(), UnitError> {
        let r = zbus::block_on(async {
            ManagerProxy::new(&self.conn)
                .await?
                .reset_failed_unit(unit.to_owned())
                .await
        });
        match r {
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            other => Ok(other?),
        }
    }

    fn mount(&self, spec: &MountSpec, timeout: Duration) -> Result<(), UnitError> {
        let unit = path_unit_name(&spec.r#where, "mount");
        // A failed transient unit lingers until reset; clear it so the name
        // can be used again.
        self.reset_failed(&unit)?;
        // A transient unit from an earlier run that is still loaded (because a
        // failed unit referred to it until its own reset) keeps its name taken
        // until systemd collects it, which happens soon after the last
        // reference goes: wait for that instead of failing the start.
        let deadline = Instant::now() + STALE_MOUNT_WAIT;
        let mut said = false;
        loop {
            let props = mount_properties(spec)?;
            let r = self.run_job(&unit, "mount", timeout, |m| {
                let unit = unit.clone();
                async move {
                    m.start_transient_unit(unit, "fail".into(), props, vec![])
                        .await
                }
            });
            match r {
                Err(UnitError::Bus(msg))
                    if msg.contains("UnitExists") && Instant::now() < deadline =>
                {
                    if !said {
                        tracing::info!(
                            unit,
                            "a mount unit from an earlier run is still loaded; clearing the failed units that hold it"
                        );
                        said = true;
                    }
                    for holder in self.failed_dependents(&unit) {
                        self.reset_failed(&holder)?;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                // Still there: a loaded unit refers to it (an After= on the
                // mount, as immich-backup.service has, or a running service
                // ordered after the stack), so systemd never collects it. If
                // it is the same mount, start it as it is.
                Err(UnitError::Bus(msg)) if msg.contains("UnitExists") => {
                    if self.same_mount(&unit, spec) {
                        tracing::info!(unit, "starting the mount unit left from an earlier run");
                        return self.run_job(&unit, "mount", timeout, |m| {
                            let unit = unit.clone();
                            async move { m.start_unit(unit, "fail".into()).await }
                        });
                    }
                    return Err(UnitError::Stale { unit });
                }
                other => return other,
            }
        }
    }

    fn journal_tail(&self, unit: &str, lines: usize) -> String {
        let out = std::process::Command::new(&self.journalctl)
            .args(["--no-pager", "--quiet", "-b", "-o", "short-precise", "-n"])
            .arg(lines.to_string())
            .arg("-u")
            .arg(unit)
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim_end().to_owned(),
            Err(e) => format!("(could not run {}: {e})", self.journalctl),
        }
    }
}

impl CpuQuota for DbusSystemd {
    fn set_cpu_quota(&self, unit: &str, usec_per_sec: Option<u64>) -> Result<(), UnitError> {
        let value: OwnedVariant = Variant::U64(usec_per_sec.unwrap_or(USEC_INFINITY))
            .try_into()
            .map_err(|e: zbus::Error| UnitError::Bus(e.to_string()))?;
        Ok(zbus::block_on(async {
            ManagerProxy::new(&self.conn)
                .await?
                .set_unit_properties(
                    unit.to_owned(),
                    true,
                    vec![("CPUQuotaPerSecUSec".to_owned(), value)],
                )
                .await
        })?)
    }

    fn cpu_quota(&self, unit: &str) -> Result<Option<u64>, UnitError> {
        let path = self.load_unit_path(unit)?;
        let iface = Self::property_interface(unit);
        let v: u64 = zbus::block_on(async {
            let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
                .destination("org.freedesktop.systemd1")
                .path(path)
                .build()
                .await?;
            let iface = zbus::names::InterfaceName::try_from(iface)?;
            let v = props.get(iface, "CPUQuotaPerSecUSec").await?;
            u64::try_from(v)
        })?;
        Ok((v != USEC_INFINITY).then_some(v))
    }
}

fn mount_properties(spec: &MountSpec) -> Result<Vec<(String, OwnedVariant)>, UnitError> {
    fn v<'a>(x: impl Into<Variant<'a>>) -> Result<OwnedVariant, UnitError> {
        x.into()
            .try_into()
            .map_err(|e: zbus::Error| UnitError::Bus(e.to_string()))
    }
    let mut props = vec![
        (
            "Description".to_owned(),
            v(format!(
                "Immich appliance drive at {}",
                spec.r#where.display()
            ))?,
        ),
        ("What".to_owned(), v(spec.what.clone())?),
        ("Type".to_owned(), v(spec.fstype.clone())?),
        ("Options".to_owned(), v(spec.options.join(","))?),
        // Collected when it stops or fails, so the next start is clean.
        ("CollectMode".to_owned(), v("inactive-or-failed")?),
    ];
    if !spec.binds_to.is_empty() {
        props.push(("BindsTo".to_owned(), v(spec.binds_to.clone())?));
        props.push(("After".to_owned(), v(spec.binds_to.clone())?));
    }
    Ok(props)
}

/// Waits until `check` is true or the deadline passes, polling gently.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `systemd-escape --path`: the unit name systemd uses for a path.
pub fn escape_path(path: &Path) -> String {
    let s = path.to_string_lossy();
    let trimmed: Vec<&str> = s.split('/').filter(|c| !c.is_empty()).collect();
    if trimmed.is_empty() {
        return "-".to_owned();
    }
    let joined = trimmed.join("/");
    let mut out = String::with_capacity(joined.len());
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The unit name for a path with a suffix, e.g. `/dev/sda` → `dev-sda.device`.
pub fn path_unit_name(path: &Path, suffix: &str) -> String {
    format!("{}.{suffix}", escape_path(path))
}

/// A plausible systemd unit name: `name.type`, no spaces or slashes.
pub fn is_valid_unit_name(name: &str) -> bool {
    const TYPES: [&str; 11] = [
        "service",
        "socket",
        "target",
        "device",
        "mount",
        "automount",
        "swap",
        "timer",
        "path",
        "slice",
        "scope",
    ];
    match name.rsplit_once('.') {
        Some((stem, ty)) => {
            !stem.is_empty()
                && name.len() <= 255
                && TYPES.contains(&ty)
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
        }
        None => false,
    }
}

/// A unit's proxy that reads properties when asked. zbus caches by default,
/// which subscribes to PropertiesChanged and fetches all of a unit's ~250
/// properties to read three: measurable in every `start`, `status` and
/// `stop`, which query each unit of the stack.
async fn unit_proxy(conn: &Connection, path: OwnedObjectPath) -> zbus::Result<UnitProxy<'static>> {
    UnitProxy::builder(conn)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_paths_like_systemd_escape() {
        // Expected values are what `systemd-escape --path` prints.
        for (path, want) in [
            ("/srv/immich", "srv-immich"),
            ("/dev/sda", "dev-sda"),
            ("/", "-"),
            ("/dev/mapper/immich-data", "dev-mapper-immich\\x2ddata"),
            ("/mnt/my photos/", "mnt-my\\x20photos"),
            ("//a//b", "a-b"),
            ("/.hidden/x", "\\x2ehidden-x"),
            (
                "/dev/disk/by-id/usb-QEMU_x-0:0",
                "dev-disk-by\\x2did-usb\\x2dQEMU_x\\x2d0:0",
            ),
        ] {
            assert_eq!(escape_path(Path::new(path)), want, "{path}");
        }
        assert_eq!(
            path_unit_name(Path::new("/srv/immich"), "mount"),
            "srv-immich.mount"
        );
    }

    #[test]
    fn unit_names_are_checked() {
        for ok in [
            "postgresql.target",
            "redis-immich.service",
            "system-immich.slice",
            "dev-mapper-immich\\x2ddata.device",
            "getty@tty1.service",
        ] {
            assert!(is_valid_unit_name(ok), "{ok}");
        }
        for bad in [
            "",
            "postgresql",
            "a b.service",
            ".service",
            "x.exe",
            "a/b.service",
        ] {
            assert!(!is_valid_unit_name(bad), "{bad}");
        }
    }

    #[test]
    fn unit_state_display_and_predicates() {
        let s = UnitState {
            load: "loaded".into(),
            active: "active".into(),
            sub: "running".into(),
        };
        assert!(s.is_active());
        assert_eq!(s.to_string(), "active (running)");
        let missing = UnitState {
            load: "not-found".into(),
            active: "inactive".into(),
            sub: "dead".into(),
        };
        assert!(!missing.is_active());
        assert_eq!(missing.to_string(), "inactive (not-found)");
        assert_eq!(UnitState::not_loaded().to_string(), "inactive (dead)");
        assert!(!UnitState::not_loaded().is_active() && !UnitState::not_loaded().is_failed());
    }

    #[test]
    fn mount_properties_bind_to_the_device() {
        let spec = MountSpec {
            what: "/dev/mapper/immich-data".into(),
            r#where: "/srv/immich".into(),
            fstype: "ext4".into(),
            options: vec!["nodev".into(), "nosuid".into()],
            binds_to: vec!["dev-sda.device".into()],
        };
        let props = mount_properties(&spec).unwrap();
        let names: Vec<&str> = props.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Description",
                "What",
                "Type",
                "Options",
                "CollectMode",
                "BindsTo",
                "After"
            ]
        );
        let opts = &props[3].1;
        assert_eq!(
            String::try_from(opts.try_clone().unwrap()).unwrap(),
            "nodev,nosuid"
        );
    }
}

/// For the throttler's footprint benchmark on a machine without systemd:
/// the CPU quota is "unlimited" and setting it does nothing.
#[derive(Debug)]
pub struct QuotaDisabled;

impl CpuQuota for QuotaDisabled {
    fn set_cpu_quota(&self, _: &str, _: Option<u64>) -> Result<(), UnitError> {
        Ok(())
    }
    fn cpu_quota(&self, _: &str) -> Result<Option<u64>, UnitError> {
        Ok(None)
    }
}

/// A stand-in for unit tests of code that must not touch systemd at all.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    #[derive(Debug)]
    pub struct NoSystemd;

    impl Systemd for NoSystemd {
        fn start(&self, unit: &str, _: Duration) -> Result<(), UnitError> {
            panic!("systemd must not be used here (start {unit})")
        }
        fn stop(&self, unit: &str, _: Duration) -> Result<(), UnitError> {
            panic!("systemd must not be used here (stop {unit})")
        }
        fn state(&self, unit: &str) -> Result<UnitState, UnitError> {
            panic!("systemd must not be used here (state {unit})")
        }
        fn reset_failed(&self, unit: &str) -> Result<(), UnitError> {
            panic!("systemd must not be used here (reset-failed {unit})")
        }
        fn mount(&self, _: &MountSpec, _: Duration) -> Result<(), UnitError> {
            panic!("systemd must not be used here (mount)")
        }
        fn journal_tail(&self, _: &str, _: usize) -> String {
            panic!("systemd must not be used here (journal)")
        }
    }
}
