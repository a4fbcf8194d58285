//! The throttler daemon: reads the sensors, runs the controller, applies its
//! decisions (clock, quota, queues), reports, and restores what it changed
//! on exit, and after a crash when it next starts or its unit stops.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::QuietHours;
use super::controller::{
    self, Controller, Decision, Mode, Observation, Ours, Params, QueueAction, QueueView,
};
use super::sysfs::{CpuFreq, Freq, Sensors};
use crate::config::Config;
use crate::host;
use crate::immich::{self, ImmichApi};
use crate::sd_notify::Notify;
use crate::systemd::CpuQuota;

/// What the daemon changed, kept on disk so that a crashed run's changes are
/// undone: the clock and quota it found, and its queue steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub original_max_khz: Option<u32>,
    pub original_quota: Option<FoundQuota>,
    pub ours: Ours,
}

/// The CPU quota the daemon found on the slice. (An `Option<Option<u64>>`
/// would lose "no limit" in JSON: `Some(None)` reads back as `None`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FoundQuota {
    Unlimited,
    UsecPerSec(u64),
}

impl FoundQuota {
    pub fn new(usec: Option<u64>) -> FoundQuota {
        usec.map_or(FoundQuota::Unlimited, FoundQuota::UsecPerSec)
    }
    pub fn usec(self) -> Option<u64> {
        match self {
            FoundQuota::Unlimited => None,
            FoundQuota::UsecPerSec(u) => Some(u),
        }
    }
}

pub fn load_saved(path: &Path) -> Saved {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn store_saved(path: &Path, s: &Saved) {
    let text = serde_json::to_string_pretty(s).expect("serialises");
    if let Err(e) = host::write_atomic(path, text.as_bytes(), 0o644) {
        tracing::error!(error = %e, path = %path.display(), "cannot save the throttler's state; a crash would not be undone");
    }
}

/// The status file `status` reads (and `immich-server status` shows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub mode: String,
    pub reason: String,
    pub temperature_c: Option<f64>,
    pub filtered_c: Option<f64>,
    pub setpoint_c: f64,
    pub ceiling_c: f64,
    pub clock_limit_mhz: u32,
    pub clock_max_mhz: u32,
    /// CPU quota of the Immich slice in percent of one core; None is none.
    pub quota_percent: Option<u32>,
    /// Queues the throttler paused.
    pub paused_queues: Vec<String>,
    /// Everything it stepped down, in order.
    pub stepped_down: Vec<String>,
    /// Queues paused by someone else (left alone).
    pub paused_by_others: Vec<String>,
    /// "ok", or why the Immich API is not used.
    pub immich: String,
    pub firmware_bits: Option<u32>,
    /// Bits seen since the daemon started (latched; the kernel clears them).
    pub firmware_bits_seen: u32,
    pub busy_percent: Option<f64>,
    pub updated: String,
    pub pid: u32,
}

/// The seams the daemon works through.
pub struct Parts<'a> {
    pub sensors: &'a dyn Sensors,
    pub cpufreq: &'a dyn CpuFreq,
    pub systemd: &'a dyn CpuQuota,
    /// None when there is no API key: clock and quota control go on.
    /// Shared with the daemon's Immich thread, so it must be `Send + Sync`.
    pub immich: Option<Arc<dyn ImmichApi + Send + Sync>>,
    /// Why there is no Immich API, when there is none.
    pub immich_missing: Option<String>,
    pub notify: &'a dyn Notify,
}

impl std::fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("throttle::daemon::Parts")
    }
}

/// The clock steps to control with: the driver's steps from the configured
/// minimum up to the hardware maximum, or 100 MHz steps when it lists none.
pub fn steps(f: &Freq, min_mhz: u32) -> Vec<u32> {
    let lo = (min_mhz * 1000).max(f.hw_min_khz);
    let mut s: Vec<u32> = f
        .available_khz
        .iter()
        .copied()
        .filter(|k| *k >= lo && *k <= f.hw_max_khz)
        .collect();
    if s.len() < 2 {
        s = (0..)
            .map(|i| lo + i * 100_000)
            .take_while(|k| *k <= f.hw_max_khz)
            .collect();
        if s.last() != Some(&f.hw_max_khz) {
            s.push(f.hw_max_khz);
        }
    }
    s
}

pub fn params(cfg: &Config, steps: Vec<u32>, cores: f64) -> Params {
    let t = &cfg.throttle;
    let mut p = Params::new(
        t.setpoint_celsius,
        t.ceiling_celsius,
        t.release_celsius,
        steps,
        cores,
    );
    p.min_quota = t.min_quota_percent as f64 / 100.0;
    p.config_write_interval_secs = t.config_write_interval_secs as f64;
    p.step_down_after_secs = p.step_down_after_secs.max(t.queue_loop_secs);
    p.step_up_after_secs = p.step_up_after_secs.max(2.0 * t.queue_loop_secs);
    p.protected.extend(t.protected_queues.iter().cloned());
    p.pause_order = t.pause_order.clone();
    p
}

/// What ExecStopPost runs after the daemon died without its own shutdown:
/// `restore`, except that while the SoC is still hot (at or above the
/// release point, or unreadable) the clock goes to the floor instead of
/// back to full speed, and its original limit stays in the state file for
/// the next start, which takes the control up again from there.
/// Returns what is left for the next start, and whether the clock was held
/// at its floor on purpose (not a failure).
pub fn restore_after_crash(cfg: &Config, parts: &Parts, saved: &Saved) -> (Saved, bool) {
    let temp_c = parts
        .sensors
        .temperature_mc()
        .ok()
        .map(|mc| mc as f64 / 1000.0);
    let hot = temp_c.is_none_or(|t| t >= cfg.throttle.release_celsius);
    let Some(original) = saved.original_max_khz.filter(|_| hot) else {
        return (restore(cfg, parts, saved), false);
    };
    let floor = parts
        .cpufreq
        .freq()
        .map(|f| steps(&f, cfg.throttle.min_freq_mhz)[0])
        .unwrap_or(cfg.throttle.min_freq_mhz * 1000);
    match parts.cpufreq.set_max_khz(floor) {
        Ok(()) => tracing::warn!(
            temp_c,
            clock_mhz = floor / 1000,
            "the SoC is still hot: the clock stays at its floor until the throttler runs again"
        ),
        Err(e) => tracing::error!(error = %e, "cannot hold the clock at its floor"),
    }
    let mut rest = saved.clone();
    rest.original_max_khz = None;
    let mut left = restore(cfg, parts, &rest);
    left.original_max_khz = Some(original);
    (left, true)
}

/// Undoes what `saved` records: the clock, the quota, the queue steps.
/// Returns what could not be undone (kept in the state file for next time).
pub fn restore(cfg: &Config, parts: &Parts, saved: &Saved) -> Saved {
    let mut left = Saved::default();
    if let Some(khz) = saved.original_max_khz {
        match parts.cpufreq.set_max_khz(khz) {
            Ok(()) => tracing::info!(clock_mhz = khz / 1000, "restored the clock limit"),
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the clock limit");
                left.original_max_khz = Some(khz);
            }
        }
    }
    if let Some(q) = saved.original_quota {
        match parts
            .systemd
            .set_cpu_quota(&cfg.units.immich_slice, q.usec())
        {
            Ok(()) => tracing::info!(unit = %cfg.units.immich_slice, "restored the CPU quota"),
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the CPU quota");
                left.original_quota = Some(q);
            }
        }
    }
    let undo = saved.ours.undo_all();
    if !undo.is_empty() {
        match parts.immich.as_deref() {
            Some(api) => {
                let mut failed = false;
                for a in &undo {
                    if let Err(e) = apply(api, a) {
                        tracing::error!(error = %e, action = %controller::describe(a), "cannot undo a queue change");
                        failed = true;
                    } else {
                        tracing::info!(action = %controller::describe(a), "undone: {}", controller::describe(a));
                    }
                }
                if failed {
                    left.ours = saved.ours.clone();
                }
            }
            None => {
                tracing::warn!(
                    "queues the throttler paused stay paused: no Immich API key to resume them with"
                );
                left.ours = saved.ours.clone();
            }
        }
    }
    left
}

fn apply(api: &dyn ImmichApi, a: &QueueAction) -> Result<(), immich::ImmichError> {
    match a {
        QueueAction::Pause { queue } => api.set_paused(queue, true),
        QueueAction::Resume { queue } => api.set_paused(queue, false),
        QueueAction::SetConcurrency { queue, concurrency } => {
            // Read-modify-write of the whole config, re-read just before.
            let mut c = api.system_config()?;
            if immich::set_concurrency(&mut c, queue, *concurrency) {
                api.put_system_config(&c)?;
            }
            Ok(())
        }
    }
}

/// Immich's side of the daemon, on a thread of its own. A hung Immich
/// (each call waits up to the client's time limit, several calls a tick)
/// must never hold up the temperature loop: the clock has to go down and
/// `WATCHDOG=1` has to go out on time whatever Immich does. The loop sends
/// jobs and takes the answers when they are in.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    /// A read of the queues is on its way.
    reading: bool,
    /// Jobs sent and not answered yet.
    outstanding: usize,
}

enum Job {
    Read,
    Apply(Vec<QueueAction>),
}

enum Done {
    Read {
        queues: Result<Vec<QueueView>, String>,
        config_file: Option<bool>,
    },
    Applied(Vec<(QueueAction, Result<(), String>)>),
}

/// What the Immich thread keeps between jobs.
struct WorkerState {
    api: Arc<dyn ImmichApi + Send + Sync>,
    config_file: Option<bool>,
    ml_urls_done: bool,
    ml_enabled: bool,
    ml_urls: Vec<String>,
}

impl Worker {
    fn spawn(api: Arc<dyn ImmichApi + Send + Sync>, cfg: &Config) -> std::io::Result<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let mut st = WorkerState {
            api,
            config_file: None,
            ml_urls_done: false,
            ml_enabled: cfg.immich.ml_enabled,
            ml_urls: cfg.immich.ml_urls.clone(),
        };
        // Detached on purpose: at shutdown a call may still be waiting on a
        // hung Immich; the thread ends with its next answer or time-out.
        std::thread::Builder::new()
            .name("immich-api".into())
            .spawn(move || {
                for job in job_rx {
                    let done = match job {
                        Job::Read => Done::Read {
                            queues: st.read().map_err(|e| e.to_string()),
                            config_file: st.config_file,
                        },
                        Job::Apply(actions) => Done::Applied(
                            actions
                                .into_iter()
                                .map(|a| {
                                    let r = apply(&*st.api, &a).map_err(|e| e.to_string());
                                    (a, r)
                                })
                                .collect(),
                        ),
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Worker {
            jobs,
            done,
            reading: false,
            outstanding: 0,
        })
    }

    fn send(&mut self, job: Job) -> bool {
        let read = matches!(job, Job::Read);
        if self.jobs.send(job).is_err() {
            return false;
        }
        self.outstanding += 1;
        self.reading |= read;
        true
    }

    /// The next answer, waiting at most `wait`.
    fn next(&mut self, wait: Duration) -> Option<Done> {
        let d = if wait.is_zero() {
            self.done.try_recv().ok()
        } else {
            self.done.recv_timeout(wait).ok()
        }?;
        self.outstanding = self.outstanding.saturating_sub(1);
        if matches!(d, Done::Read { .. }) {
            self.reading = false;
        }
        Some(d)
    }
}

impl WorkerState {
    /// The queues (and, once, whether Immich uses a config file).
    fn read(&mut self) -> Result<Vec<QueueView>, immich::ImmichError> {
        if self.config_file.is_none() {
            self.config_file = Some(self.api.features()?.config_file);
            if self.config_file == Some(true) {
                tracing::warn!(
                    "Immich uses a config file (services.immich.settings is set): concurrency stays as it is; pausing still works"
                );
            }
        }
        let qs = self.api.queues()?;
        let config = if self.config_file == Some(false) {
            self.api.system_config().ok()
        } else {
            None
        };
        if let (Some(c), false) = (&config, self.ml_urls_done) {
            self.apply_ml_urls(c.clone());
        }
        Ok(qs
            .iter()
            .map(|q| QueueView {
                name: q.name.clone(),
                paused: q.is_paused,
                work: q.backlog(),
                concurrency: config
                    .as_ref()
                    .and_then(|c| immich::concurrency(c, &q.name)),
            })
            .collect())
    }

    /// Applies the machine-learning settings the config manages (enabled,
    /// URLs) once, when they differ from Immich's.
    fn apply_ml_urls(&mut self, mut c: serde_json::Value) {
        let mut changed = false;
        if let Some(v) = c.pointer_mut("/machineLearning/enabled")
            && v.as_bool() != Some(self.ml_enabled)
        {
            *v = serde_json::json!(self.ml_enabled);
            changed = true;
        }
        if !self.ml_urls.is_empty()
            && let Some(v) = c.pointer_mut("/machineLearning/urls")
            && *v != serde_json::json!(self.ml_urls)
        {
            *v = serde_json::json!(self.ml_urls);
            changed = true;
        }
        if !changed {
            self.ml_urls_done = true;
            return;
        }
        match self.api.put_system_config(&c) {
            Ok(()) => {
                tracing::info!(enabled = self.ml_enabled, urls = ?self.ml_urls, "set Immich's machine-learning settings");
                self.ml_urls_done = true;
            }
            Err(e) => tracing::warn!(error = %e, "cannot set Immich's machine-learning settings"),
        }
    }
}

/// Minutes after local midnight.
fn local_minute_of_day() -> u32 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r writes into tm, which outlives the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&t, &mut tm) };
    (tm.tm_hour as u32) * 60 + tm.tm_min as u32
}

/// The daemon's main loop state.
pub struct Daemon<'a> {
    cfg: &'a Config,
    parts: Parts<'a>,
    controller: Controller,
    quiet: Option<QuietHours>,
    saved: Saved,
    last_clock: Option<u32>,
    last_quota: Option<Option<u64>>,
    last_mode: Option<(Mode, bool)>,
    api_state: String,
    next_queue_tick: f64,
    config_file: Option<bool>,
    worker: Option<Worker>,
    /// Queues read since the last tick, for the controller's next step.
    fresh_queues: Option<Vec<QueueView>>,
    bits_seen: u32,
    started: Instant,
    clock_max_khz: u32,
    sys: Option<sysinfo::System>,
    last_queues: Option<Vec<QueueView>>,
}

impl std::fmt::Debug for Daemon<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Daemon")
    }
}

impl<'a> Daemon<'a> {
    /// Restores whatever a previous run left, records the clock and quota it
    /// finds, and sets up the controller.
    pub fn start(cfg: &'a Config, parts: Parts<'a>) -> Result<Daemon<'a>, String> {
        let t = &cfg.throttle;
        let previous = load_saved(&t.state_file);
        if previous != Saved::default() {
            tracing::warn!("a previous run did not finish cleanly; undoing what it changed");
            let left = restore(cfg, &parts, &previous);
            store_saved(&t.state_file, &left);
        }
        let freq = parts.cpufreq.freq().map_err(|e| e.to_string())?;
        let original_quota = parts
            .systemd
            .cpu_quota(&cfg.units.immich_slice)
            .unwrap_or(None);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(4.0);
        let steps = steps(&freq, t.min_freq_mhz);
        let p = params(cfg, steps, cores);
        let leftover = load_saved(&t.state_file);
        let saved = Saved {
            original_max_khz: Some(freq.scaling_max_khz),
            original_quota: Some(FoundQuota::new(original_quota)),
            ours: leftover.ours,
        };
        store_saved(&t.state_file, &saved);
        let quiet = QuietHours::parse(&t.quiet_hours_start, &t.quiet_hours_end)?;
        let mut api_state = parts
            .immich_missing
            .clone()
            .unwrap_or_else(|| "not contacted yet".into());
        let worker = match parts.immich.clone().map(|api| Worker::spawn(api, cfg)) {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                api_state = format!("cannot start the thread for Immich's API: {e}");
                tracing::warn!("{api_state}; controlling the clock and the CPU quota only");
                None
            }
            None => None,
        };
        if let Some(why) = &parts.immich_missing {
            tracing::warn!("{why}; controlling the clock and the CPU quota only, no queue pauses");
        }
        let mut sys = sysinfo::System::new().ok();
        if let Some(s) = sys.as_mut() {
            s.refresh_cpu_usage();
        }
        Ok(Daemon {
            cfg,
            controller: Controller::new(p).with_ours(saved.ours.clone()),
            parts,
            quiet,
            saved,
            last_clock: None,
            last_quota: None,
            last_mode: None,
            api_state,
            next_queue_tick: 0.0,
            config_file: None,
            worker,
            fresh_queues: None,
            bits_seen: 0,
            started: Instant::now(),
            clock_max_khz: freq.hw_max_khz,
            sys,
            last_queues: None,
        })
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Takes the Immich thread's answers: queues read, actions done. Waits
    /// at most `wait` for a read on its way; returns at once otherwise.
    fn collect(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            let Some(w) = self.worker.as_mut() else {
                return;
            };
            let left = until.saturating_duration_since(Instant::now());
            let patient = w.reading && !left.is_zero();
            let Some(done) = w.next(if patient { left } else { Duration::ZERO }) else {
                return;
            };
            self.handle(done);
        }
    }

    fn handle(&mut self, done: Done) {
        match done {
            Done::Read {
                queues,
                config_file,
            } => {
                self.config_file = config_file;
                let state = match &queues {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.clone(),
                };
                if state != self.api_state {
                    if state == "ok" {
                        tracing::info!("the Immich API answers; queue control is on");
                    } else {
                        tracing::warn!(error = %state, "the Immich API is not usable; controlling the clock and the CPU quota only");
                    }
                    self.api_state = state;
                }
                self.fresh_queues = queues.ok();
            }
            Done::Applied(results) => {
                for (a, r) in results {
                    self.applied(&a, r);
                }
            }
        }
    }

    fn applied(&mut self, a: &QueueAction, r: Result<(), String>) {
        match r {
            Ok(()) => {
                tracing::info!(action = %controller::describe(a), "{}", controller::describe(a))
            }
            Err(e) => {
                tracing::warn!(action = %controller::describe(a), error = %e, "cannot apply `{}`", controller::describe(a));
                self.controller.action_failed(a);
            }
        }
    }

    /// Waits, at most `within`, until the Immich thread has answered every
    /// job sent (a clean stop, and tests, want the last actions' outcome).
    pub fn settle(&mut self, within: Duration) {
        let until = Instant::now() + within;
        while self.worker.as_ref().is_some_and(|w| w.outstanding > 0) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let Some(done) = self.worker.as_mut().and_then(|w| w.next(left)) else {
                return;
            };
            self.handle(done);
        }
    }

    /// One poll: read, decide, apply, report.
    pub fn tick(&mut self) -> Decision {
        let now = self.now();
        let t = &self.cfg.throttle;
        let temp = self.parts.sensors.temperature_mc();
        if let Err(e) = &temp {
            tracing::error!(error = %e, "no temperature reading");
        }
        let mut bits = self.parts.sensors.throttled().unwrap_or(0);
        if self.parts.sensors.undervoltage_alarm() == Some(true) {
            bits |= 0x1;
        }
        self.bits_seen |= bits | ((bits & controller::FIRMWARE_NOW_MASK) << 16);
        let busy = self.sys.as_mut().map(|s| {
            s.refresh_cpu_usage();
            (s.global_cpu_usage() as f64 / 100.0).clamp(0.0, 1.0)
        });
        self.collect(Duration::ZERO);
        let mut asked = false;
        if now >= self.next_queue_tick {
            self.next_queue_tick = now + t.queue_loop_secs;
            if let Some(w) = self.worker.as_mut()
                && !w.reading
            {
                asked = w.send(Job::Read);
            }
        }
        // A healthy Immich answers within milliseconds, in time for this
        // step; a slow one is waited for no longer than this, once, and its
        // answer is used by a later tick.
        if asked {
            self.collect(Duration::from_secs_f64((t.poll_secs / 4.0).min(0.25)));
        }
        let queues = self.fresh_queues.take();
        let heavy_window = self
            .quiet
            .is_none_or(|q| q.allows_heavy_work(local_minute_of_day()));
        let user_pause = t.pause_switch_file.exists();
        let d = self.controller.step(&Observation {
            now,
            temp_c: temp.as_ref().ok().map(|m| *m as f64 / 1000.0),
            firmware_bits: bits,
            busy,
            queues: queues.as_deref(),
            config_writable: self.config_file == Some(false) && self.api_state == "ok",
            heavy_window,
            user_pause,
        });
        self.apply(&d);
        if queues.is_some() {
            self.last_queues = queues.clone();
        }
        // The status shows the queues as last read (every slow-loop tick).
        let shown = self.last_queues.clone();
        self.report(&d, temp.ok(), busy, shown.as_deref());
        d
    }

    fn apply(&mut self, d: &Decision) {
        if self.last_clock != Some(d.clock_khz) {
            match self.parts.cpufreq.set_max_khz(d.clock_khz) {
                Ok(()) => {
                    tracing::debug!(clock_mhz = d.clock_khz / 1000, "clock limit");
                    self.last_clock = Some(d.clock_khz);
                }
                Err(e) => tracing::error!(error = %e, "cannot set the clock limit"),
            }
        }
        let usec = d.quota.map(|q| (q * 1_000_000.0).round() as u64);
        if self.last_quota != Some(usec) {
            match self
                .parts
                .systemd
                .set_cpu_quota(&self.cfg.units.immich_slice, usec)
            {
                Ok(()) => {
                    tracing::debug!(quota_percent = ?usec.map(|u| u / 10_000), "CPU quota");
                    self.last_quota = Some(usec);
                }
                Err(e) => {
                    tracing::error!(error = %e, unit = %self.cfg.units.immich_slice, "cannot set the CPU quota")
                }
            }
        }
        if !d.actions.is_empty() {
            let sent = self
                .worker
                .as_mut()
                .is_some_and(|w| w.send(Job::Apply(d.actions.clone())));
            if !sent {
                for a in &d.actions {
                    self.applied(a, Err("no Immich API".into()));
                }
            }
        }
        // The controller records its steps as it decides them: persist
        // whatever differs from what is on disk.
        if *self.controller.ours() != self.saved.ours {
            self.saved.ours = self.controller.ours().clone();
            store_saved(&self.cfg.throttle.state_file, &self.saved);
        }
    }

    fn report(
        &mut self,
        d: &Decision,
        temp_mc: Option<i64>,
        busy: Option<f64>,
        queues: Option<&[QueueView]>,
    ) {
        let api_ok = self.api_state == "ok";
        if self.last_mode != Some((d.mode, api_ok)) {
            tracing::info!(
                mode = d.mode.as_str(),
                temp_c = ?d.filtered_c,
                clock_mhz = d.clock_khz / 1000,
                quota_percent = ?d.quota.map(|q| (q * 100.0).round()),
                "{}",
                d.reason
            );
            self.last_mode = Some((d.mode, api_ok));
        }
        let ours = self.controller.ours();
        let ours_paused = ours.paused();
        let others: Vec<String> = queues
            .map(|qs| {
                qs.iter()
                    .filter(|q| q.paused && !ours_paused.contains(&q.name))
                    .map(|q| q.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let s = Status {
            mode: d.mode.as_str().into(),
            reason: d.reason.clone(),
            temperature_c: temp_mc.map(|m| m as f64 / 1000.0),
            filtered_c: d.filtered_c,
            setpoint_c: self.cfg.throttle.setpoint_celsius,
            ceiling_c: self.cfg.throttle.ceiling_celsius,
            clock_limit_mhz: d.clock_khz / 1000,
            clock_max_mhz: self.clock_max_khz / 1000,
            quota_percent: d.quota.map(|q| (q * 100.0).round() as u32),
            paused_queues: ours_paused.into_iter().collect(),
            stepped_down: ours.steps.iter().map(controller::describe).collect(),
            paused_by_others: others,
            immich: self.api_state.clone(),
            firmware_bits: self.parts.sensors.throttled(),
            firmware_bits_seen: self.bits_seen,
            busy_percent: busy.map(|b| (b * 1000.0).round() / 10.0),
            updated: crate::backup::state::now_rfc3339(),
            pid: std::process::id(),
        };
        let text = serde_json::to_string_pretty(&s).expect("serialises");
        if let Err(e) = host::write_atomic(&self.cfg.throttle.status_file, text.as_bytes(), 0o644) {
            tracing::debug!(error = %e, "cannot write the status file");
        }
        if !self.cfg.throttle.prometheus_textfile.is_empty() {
            let p = PathBuf::from(&self.cfg.throttle.prometheus_textfile);
            if let Err(e) = host::write_atomic(&p, prometheus(&s).as_bytes(), 0o644) {
                tracing::debug!(error = %e, "cannot write the Prometheus textfile");
            }
        }
        self.parts.notify.notify(&format!(
            "WATCHDOG=1\nSTATUS={} at {}, clock {} MHz{}",
            d.mode.as_str(),
            d.filtered_c
                .map(|t| format!("{t:.1} °C"))
                .unwrap_or_else(|| "? °C".into()),
            d.clock_khz / 1000,
            d.quota
                .map(|q| format!(", quota {:.0} %", q * 100.0))
                .unwrap_or_default()
        ));
    }

    /// Undoes everything and clears the state file (a clean stop).
    pub fn shutdown(&mut self) {
        self.parts.notify.notify("STOPPING=1");
        // The last actions' outcome first, so that only what was done is
        // undone; a little over the client's time limit, then on without.
        self.settle(Duration::from_secs(6));
        self.worker = None;
        self.saved.ours = self.controller.ours().clone();
        let left = restore(self.cfg, &self.parts, &self.saved);
        store_saved(&self.cfg.throttle.state_file, &left);
        if left == Saved::default() {
            let _ = std::fs::remove_file(&self.cfg.throttle.state_file);
        }
        let _ = std::fs::remove_file(&self.cfg.throttle.status_file);
    }
}

/// The Prometheus textfile with the status figures.
pub fn prometheus(s: &Status) -> String {
    let mut o = String::new();
    let mut g = |name: &str, help: &str, v: f64| {
        o.push_str(&format!("# HELP immich_throttle_{name} {help}\n# TYPE immich_throttle_{name} gauge\nimmich_throttle_{name} {v}\n"));
    };
    if let Some(t) = s.temperature_c {
        g("temperature_celsius", "SoC temperature.", t);
    }
    g(
        "setpoint_celsius",
        "Temperature the throttler holds.",
        s.setpoint_c,
    );
    g(
        "clock_limit_hertz",
        "CPU clock limit set by the throttler.",
        s.clock_limit_mhz as f64 * 1e6,
    );
    g(
        "quota_cores",
        "CPU quota on Immich in cores (0 means no quota).",
        s.quota_percent.map(|q| q as f64 / 100.0).unwrap_or(0.0),
    );
    g(
        "paused_queues",
        "Immich queues paused by the throttler.",
        s.paused_queues.len() as f64,
    );
    g(
        "emergency",
        "1 while latched in the emergency mode.",
        f64::from(u8::from(s.mode == "emergency")),
    );
    o.push_str(&format!("# HELP immich_throttle_mode Current mode.\n# TYPE immich_throttle_mode gauge\nimmich_throttle_mode{{mode=\"{}\"}} 1\n", s.mode));
    o
}

/// Reads the API key: the service credential, else the file on the drive.
pub fn api_key(cfg: &Config) -> Result<String, String> {
    let name = format!("{}_api-key", cfg.throttle.api_key_credential);
    let path = match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => PathBuf::from(dir).join(&name),
        None => cfg.drive_path(&cfg.layout.throttle_key).join("api-key"),
    };
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => Ok(k.trim().to_owned()),
        Ok(_) => Err(format!(
            "the Immich API key file {} is empty",
            path.display()
        )),
        Err(_) => Err(format!(
            "no Immich API key ({} is missing); create one with `sudo immich-throttle setup-api-key`",
            path.display()
        )),
    }
}

/// The signals that stop the daemon (systemd sends SIGTERM).
fn stop_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

/// Sleeps until the next poll or a termination signal; true when signalled.
pub fn wait_or_signal(timeout: Duration) -> bool {
    let set = stop_signals();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: set and ts are valid for the call; info may be null.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    r > 0
}

/// Blocks the termination signals so that `wait_or_signal` receives them.
pub fn block_signals() {
    let set = stop_signals();
    let _ = set.thread_block();
}
