//! The throttler's control logic, free of I/O: the daemon feeds it readings
//! and applies its decisions; the simulator runs the very same code against
//! a thermal model.
//!
//! Three loops, from most to least efficient actuator:
//! 1. A fast PI loop on the filtered SoC temperature sets a power level `u`
//!    (fraction of full power). Above the lowest clock's power it becomes a
//!    CPU clock limit (power grows about as f², work as f, so slowing the
//!    clock keeps the most work per watt); below it, a CPU quota on Immich.
//! 2. A slow loop that steps down Immich's work (lower concurrency, then
//!    pause queues, hottest first) only when the fast loop sits at its floor
//!    and still cannot hold the setpoint, and steps back up with hysteresis.
//! 3. A latched emergency at the ceiling or on any firmware throttle bit:
//!    everything to the floor and every heavy queue paused, until the SoC is
//!    below the release temperature.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Never paused, whatever the config says: pausing them breaks cleanup,
/// notifications or Immich's own database dumps.
pub const ALWAYS_PROTECTED: [&str; 3] = ["backgroundTask", "notifications", "backupDatabase"];

/// get_throttled bits 0-3: under-voltage, capped, throttled, soft limit, now.
pub const FIRMWARE_NOW_MASK: u32 = 0xF;

#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub setpoint: f64,
    pub ceiling: f64,
    pub release: f64,
    /// Clock steps the driver offers, ascending, in kHz (min..=hw max).
    pub freq_steps_khz: Vec<u32>,
    /// CPUs (a quota of `cores` is no limit).
    pub cores: f64,
    /// The lowest quota, in cores (0.4 = 40 % of one core).
    pub min_quota: f64,
    /// Proportional gain, power fraction per kelvin.
    pub kp: f64,
    /// Integral gain, power fraction per kelvin-second.
    pub ki: f64,
    /// The integral falls this many times faster above the setpoint than it
    /// rises below it: too hot is urgent, too cool only costs a little work.
    pub ki_hot_factor: f64,
    /// Seconds from a change of power to the filtered reading showing it
    /// (the die's time constant plus the filter's).
    pub lag_secs: f64,
    /// How far the die jumps (K) from idle to full load at full power, within
    /// seconds (thermal-and-jobs.md §1.5: 4-11 K). When the CPU is idle and
    /// the SoC warm, power is capped so that a burst of jobs cannot jump
    /// past the ceiling before the next reading.
    pub jump_k: f64,
    /// A latch also releases after this long below setpoint − 2 K, for boards
    /// whose idle temperature is above `release` (hot rooms, closed cases).
    pub latch_dwell_secs: f64,
    /// The exponent of dynamic power in the clock (P ∝ f^alpha).
    pub alpha: f64,
    /// Time constant of the temperature filter, seconds.
    pub filter_secs: f64,
    /// Largest rise of `u` per second (falls are never limited).
    pub max_rise_per_sec: f64,
    /// The fast loop at its floor this long (and still hot) → step down work.
    pub step_down_after_secs: f64,
    /// Room above the floor this long (and cool) → step work back up.
    pub step_up_after_secs: f64,
    pub config_write_interval_secs: f64,
    pub protected: BTreeSet<String>,
    pub pause_order: Vec<String>,
}

impl Params {
    /// Defaults tuned in the simulator (`cargo xtask bench throttle-sim`).
    pub fn new(
        setpoint: f64,
        ceiling: f64,
        release: f64,
        freq_steps_khz: Vec<u32>,
        cores: f64,
    ) -> Self {
        Params {
            setpoint,
            ceiling,
            release,
            freq_steps_khz,
            cores,
            min_quota: 0.4,
            kp: 0.2,
            ki: 0.004,
            ki_hot_factor: 6.0,
            lag_secs: 15.0,
            jump_k: 22.0,
            latch_dwell_secs: 600.0,
            alpha: 2.0,
            filter_secs: 3.0,
            max_rise_per_sec: 0.02,
            step_down_after_secs: 60.0,
            step_up_after_secs: 120.0,
            config_write_interval_secs: 120.0,
            protected: ALWAYS_PROTECTED.iter().map(|s| s.to_string()).collect(),
            pause_order: vec![],
        }
    }

    fn f_min(&self) -> f64 {
        *self.freq_steps_khz.first().unwrap_or(&600_000) as f64
    }
    fn f_max(&self) -> f64 {
        *self.freq_steps_khz.last().unwrap_or(&1_500_000) as f64
    }
    /// Power fraction at the lowest clock.
    fn r_min(&self) -> f64 {
        (self.f_min() / self.f_max()).powf(self.alpha)
    }
    /// The lowest power level: lowest clock and lowest quota.
    pub fn u_floor(&self) -> f64 {
        self.r_min() * (self.min_quota / self.cores).min(1.0)
    }
    fn is_protected(&self, q: &str) -> bool {
        self.protected.contains(q) || ALWAYS_PROTECTED.contains(&q)
    }
}

/// One queue as the slow loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    /// Waiting + active + delayed jobs.
    pub work: u64,
    /// Its concurrency setting, when it has one.
    pub concurrency: Option<u64>,
}

/// A change to Immich's queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum QueueAction {
    Pause { queue: String },
    Resume { queue: String },
    SetConcurrency { queue: String, concurrency: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    /// Seconds on a monotonic clock.
    pub now: f64,
    /// The SoC temperature; `None` when the sensor is missing or broken.
    pub temp_c: Option<f64>,
    /// get_throttled's current bits (0 where the file does not exist).
    pub firmware_bits: u32,
    /// Share of the CPU busy since the last reading (0..=1), if known.
    pub busy: Option<f64>,
    /// The queues, on slow-loop ticks when Immich answered.
    pub queues: Option<&'a [QueueView]>,
    /// Whether system-config writes are allowed (no config file, API up).
    pub config_writable: bool,
    /// Outside quiet hours, or none configured.
    pub heavy_window: bool,
    /// The user's "pause all heavy work now" switch.
    pub user_pause: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No limit needed.
    FullSpeed,
    /// Holding the setpoint with the clock.
    Clock,
    /// Clock at its minimum; the CPU quota holds the setpoint.
    Quota,
    /// Clock and quota at their floors; heavy queues stepped down.
    Queues,
    /// Latched at the ceiling or on a firmware throttle bit.
    Emergency,
    QuietHours,
    PausedByUser,
    /// The temperature sensor is missing: everything at the floor.
    SensorFailure,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::FullSpeed => "full-speed",
            Mode::Clock => "clock",
            Mode::Quota => "quota",
            Mode::Queues => "queues",
            Mode::Emergency => "emergency",
            Mode::QuietHours => "quiet-hours",
            Mode::PausedByUser => "paused-by-user",
            Mode::SensorFailure => "sensor-failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub clock_khz: u32,
    /// CPU quota in cores; `None` is no limit.
    pub quota: Option<f64>,
    pub actions: Vec<QueueAction>,
    pub mode: Mode,
    pub reason: String,
    /// The power level the fast loop asks for (0..=1).
    pub u: f64,
    pub filtered_c: Option<f64>,
}

/// What the throttler itself changed in Immich, so that it undoes exactly
/// that and never a user's own pause. Persisted by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ours {
    /// Steps taken, in order (the last is undone first).
    pub steps: Vec<QueueAction>,
    /// Concurrency values found before lowering them.
    pub original_concurrency: BTreeMap<String, u64>,
    /// Where the pauses of an emergency, the user's switch or quiet hours
    /// begin in `steps`: those end all at once, not one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blanket_from: Option<usize>,
}

impl Ours {
    pub fn paused(&self) -> BTreeSet<String> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                QueueAction::Pause { queue } => Some(queue.clone()),
                _ => None,
            })
            .collect()
    }

    /// The actions that undo everything, last step first.
    pub fn undo_all(&self) -> Vec<QueueAction> {
        self.steps.iter().rev().map(|s| self.inverse(s)).collect()
    }

    fn inverse(&self, s: &QueueAction) -> QueueAction {
        match s {
            QueueAction::Pause { queue } => QueueAction::Resume {
                queue: queue.clone(),
            },
            QueueAction::SetConcurrency { queue, .. } => QueueAction::SetConcurrency {
                queue: queue.clone(),
                concurrency: self.original_concurrency.get(queue).copied().unwrap_or(1),
            },
            QueueAction::Resume { queue } => QueueAction::Pause {
                queue: queue.clone(),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Controller {
    p: Params,
    filtered: Option<f64>,
    integ: f64,
    u: f64,
    last_now: Option<f64>,
    latched: Option<String>,
    latched_cool_since: Option<f64>,
    dither_khz: f64,
    at_floor_since: Option<f64>,
    room_since: Option<f64>,
    last_step_at: f64,
    last_config_write: f64,
    ours: Ours,
}

impl Controller {
    pub fn new(p: Params) -> Self {
        // Start at the lowest clock and ramp up: the first reading says
        // nothing about what a full load will do.
        let start = p.r_min();
        Controller {
            integ: start,
            u: start,
            p,
            filtered: None,
            last_now: None,
            latched: None,
            latched_cool_since: None,
            dither_khz: 0.0,
            at_floor_since: None,
            room_since: None,
            last_step_at: f64::NEG_INFINITY,
            last_config_write: f64::NEG_INFINITY,
            ours: Ours::default(),
        }
    }

    /// Starts from a persisted record of what a previous run changed.
    pub fn with_ours(mut self, ours: Ours) -> Self {
        self.ours = ours;
        self
    }

    pub fn ours(&self) -> &Ours {
        &self.ours
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// The daemon could not apply `a`: forget it.
    pub fn action_failed(&mut self, a: &QueueAction) {
        match a {
            QueueAction::Pause { queue } | QueueAction::SetConcurrency { queue, .. } => {
                if let Some(i) = self.ours.steps.iter().rposition(|s| s == a) {
                    self.ours.steps.remove(i);
                }
                if matches!(a, QueueAction::SetConcurrency { .. })
                    && !self.ours.steps.iter().any(
                        |s| matches!(s, QueueAction::SetConcurrency { queue: q, .. } if q == queue),
                    )
                {
                    self.ours.original_concurrency.remove(queue);
                }
            }
            // A failed resume stays ours, to be retried.
            QueueAction::Resume { queue } => self.ours.steps.push(QueueAction::Pause {
                queue: queue.clone(),
            }),
        }
    }

    pub fn step(&mut self, o: &Observation) -> Decision {
        let dt = self.last_now.map(|t| (o.now - t).max(0.0)).unwrap_or(0.0);
        self.last_now = Some(o.now);
        let mut actions = vec![];

        // The sensor: without it, fail safe at the floor.
        let Some(raw) = o.temp_c else {
            self.u = self.p.u_floor();
            self.integ = self.u;
            if let Some(q) = o.queues {
                actions.extend(self.pause_all(q));
            }
            return self.decide(
                Mode::SensorFailure,
                "the temperature sensor is missing or broken; holding everything at the floor"
                    .into(),
                actions,
            );
        };
        let filtered = match self.filtered {
            None => raw,
            Some(f) => {
                let a = if self.p.filter_secs > 0.0 {
                    dt / (self.p.filter_secs + dt)
                } else {
                    1.0
                };
                f + a * (raw - f)
            }
        };
        self.filtered = Some(filtered);

        // The emergency latch: the filtered temperature at the ceiling (noise
        // alone must not trip it), one reading a whole kelvin above it
        // (heading for the firmware's 80 °C), or any firmware bit.
        let fw = o.firmware_bits & FIRMWARE_NOW_MASK;
        let trigger = if fw != 0 {
            Some(format!("the firmware reports throttling (bits {fw:#x})"))
        } else if filtered >= self.p.ceiling || raw >= self.p.ceiling + 1.0 {
            Some(format!(
                "{raw:.1} °C reached the ceiling of {:.1} °C",
                self.p.ceiling
            ))
        } else {
            None
        };
        // Only a calm reading counts towards release: the filter lags a jump.
        let calm = trigger.is_none() && raw < self.p.ceiling;
        if let Some(t) = trigger
            && self.latched.is_none()
        {
            self.latched = Some(t);
        }
        if self.latched.is_some() && calm && filtered <= self.p.setpoint - 2.0 {
            self.latched_cool_since.get_or_insert(o.now);
        } else {
            self.latched_cool_since = None;
        }
        let dwelt = self
            .latched_cool_since
            .is_some_and(|s| o.now - s >= self.p.latch_dwell_secs);
        if self.latched.is_some() && calm && (filtered <= self.p.release || dwelt) {
            self.latched = None;
            self.latched_cool_since = None;
            // Resume from the lowest clock, with no quota.
            self.integ = self.p.r_min();
            self.u = self.integ;
        }
        if let Some(why) = self.latched.clone() {
            self.u = self.p.u_floor();
            self.integ = self.u;
            self.at_floor_since.get_or_insert(o.now);
            self.room_since = None;
            if let Some(q) = o.queues {
                actions.extend(self.pause_all(q));
            }
            return self.decide(
                Mode::Emergency,
                format!(
                    "{why}; latched until {:.1} °C, or {:.0} min below {:.1} °C",
                    self.p.release,
                    self.p.latch_dwell_secs / 60.0,
                    self.p.setpoint - 2.0
                ),
                actions,
            );
        }

        // The fast loop: PI on the error with a clamped integrator (it holds
        // the power the board can take), and a derivative on the temperature
        // near the setpoint to catch a rise before it overshoots.
        let floor = self.p.u_floor();
        let e = self.p.setpoint - filtered;
        // An idle CPU below the setpoint says nothing about what the board
        // can take: integrate in proportion to how busy it is.
        let weight = o.busy.map(|b| b.clamp(0.0, 1.0)).unwrap_or(1.0);
        let ki = if e < 0.0 {
            self.p.ki * self.p.ki_hot_factor
        } else {
            self.p.ki
        };
        self.integ = (self.integ + ki * e * dt * weight).clamp(floor, 1.0);
        let mut u = self.integ + self.p.kp * e;
        // Anticipate the die's jump: what is idle now may be busy before the
        // next reading, adding up to jump_k · u · (1 − busy) kelvin.
        if let Some(busy) = o.busy {
            let idle = 1.0 - busy.clamp(0.0, 1.0);
            if idle > 0.05 {
                let room = self.p.ceiling - 0.5 - filtered;
                let cap = (room / (self.p.jump_k * idle)).max(self.p.r_min());
                if cap < u {
                    u = cap;
                    self.integ = self.integ.min(cap);
                }
            }
        }
        // Ramp up no faster than the reading can follow: power added during
        // one lag shows up as jump_k kelvin per unit, so the overshoot stays
        // within the distance to the setpoint.
        let rise = (e.max(0.0) / (self.p.lag_secs * self.p.jump_k)).min(self.p.max_rise_per_sec);
        let rise_limit = self.u + rise * dt;
        if u > rise_limit {
            u = rise_limit;
        }
        u = u.clamp(floor, 1.0);
        self.u = u;

        // Dwell tracking for the slow loop.
        let at_floor = u <= floor + 1e-6;
        if at_floor {
            self.at_floor_since.get_or_insert(o.now);
        } else {
            self.at_floor_since = None;
        }
        let roomy = u >= self.p.r_min() * 1.5;
        if roomy {
            self.room_since.get_or_insert(o.now);
        } else {
            self.room_since = None;
        }

        // The slow loop, on ticks that bring the queues.
        let mut mode = if u >= 1.0 - 1e-9 {
            Mode::FullSpeed
        } else if u >= self.p.r_min() {
            Mode::Clock
        } else {
            Mode::Quota
        };
        let mut reason = match mode {
            Mode::FullSpeed => format!(
                "{filtered:.1} °C, below the setpoint of {:.1} °C",
                self.p.setpoint
            ),
            Mode::Clock => format!("holding {:.1} °C by lowering the clock", self.p.setpoint),
            _ => format!(
                "holding {:.1} °C with the lowest clock and a CPU quota on Immich",
                self.p.setpoint
            ),
        };
        if o.user_pause || !o.heavy_window {
            if let Some(q) = o.queues {
                actions.extend(self.pause_all(q));
            }
            let (m, r) = if o.user_pause {
                (
                    Mode::PausedByUser,
                    "heavy work paused by the user (immich-throttle pause-heavy)",
                )
            } else {
                (
                    Mode::QuietHours,
                    "quiet hours: heavy work waits for its window",
                )
            };
            return self.decide(m, r.into(), actions);
        }
        if let Some(q) = o.queues {
            self.reconcile(q);
            // The emergency, the switch or the quiet hours are over: resume
            // everything they paused at once. The fast loop, starting low,
            // holds the heat; the slow loop's own steps unwind as before.
            if let Some(from) = self.ours.blanket_from.take() {
                let from = from.min(self.ours.steps.len());
                let ended: Vec<QueueAction> = self.ours.steps.drain(from..).collect();
                actions.extend(ended.iter().rev().map(|a| self.ours.inverse(a)));
                self.last_step_at = o.now;
            }
            let hot = filtered > self.p.setpoint + 0.3;
            let cool = filtered < self.p.setpoint - 0.5;
            let dwell = |since: Option<f64>, d: f64| since.is_some_and(|s| o.now - s >= d);
            let since_last = o.now - self.last_step_at;
            if hot
                && dwell(self.at_floor_since, self.p.step_down_after_secs)
                && since_last >= self.p.step_down_after_secs
            {
                if let Some(a) = self.step_down(q, o) {
                    self.last_step_at = o.now;
                    actions.push(a);
                }
            } else if cool
                && dwell(self.room_since, self.p.step_up_after_secs)
                && since_last >= self.p.step_up_after_secs
                && let Some(a) = self.step_up(o)
            {
                self.last_step_at = o.now;
                actions.push(a);
            }
        }
        if !self.ours.steps.is_empty() {
            mode = Mode::Queues;
            reason = format!(
                "{reason}; stepped down: {}",
                self.ours
                    .steps
                    .iter()
                    .map(describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.decide(mode, reason, actions)
    }

    fn decide(&mut self, mode: Mode, reason: String, actions: Vec<QueueAction>) -> Decision {
        let (clock, quota) = self.actuate(self.u);
        Decision {
            clock_khz: clock,
            quota,
            actions,
            mode,
            reason,
            u: self.u,
            filtered_c: self.filtered,
        }
    }

    /// Maps a power level to a clock step (dithered between neighbours so
    /// the average clock is the continuous target) and a quota.
    fn actuate(&mut self, u: f64) -> (u32, Option<f64>) {
        let steps = &self.p.freq_steps_khz;
        let (f_min, f_max) = (self.p.f_min(), self.p.f_max());
        let r_min = self.p.r_min();
        if u < r_min {
            let quota = (self.p.cores * u / r_min).max(self.p.min_quota);
            return (f_min as u32, (quota < self.p.cores).then_some(quota));
        }
        let target = (f_max * u.powf(1.0 / self.p.alpha)).clamp(f_min, f_max);
        let hi_i = steps
            .iter()
            .position(|s| *s as f64 >= target - 0.5)
            .unwrap_or(steps.len() - 1);
        let hi = steps[hi_i];
        if hi_i == 0 || (hi as f64 - target).abs() < 0.5 {
            self.dither_khz = 0.0;
            return (hi, None);
        }
        let lo = steps[hi_i - 1];
        let span = (hi - lo) as f64;
        self.dither_khz += target - lo as f64;
        if self.dither_khz >= span {
            self.dither_khz -= span;
            (hi, None)
        } else {
            (lo, None)
        }
    }

    /// The heavy queues in the order they are stepped down.
    fn heavy<'q>(&self, queues: &'q [QueueView]) -> Vec<&'q QueueView> {
        let mut out: Vec<&QueueView> = vec![];
        for name in &self.p.pause_order {
            if let Some(q) = queues.iter().find(|q| &q.name == name)
                && !self.p.is_protected(&q.name)
            {
                out.push(q);
            }
        }
        let mut rest: Vec<&QueueView> = queues
            .iter()
            .filter(|q| !self.p.is_protected(&q.name) && !self.p.pause_order.contains(&q.name))
            .collect();
        rest.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(rest);
        out
    }

    /// Forgets our pauses that someone else undid, and queues that vanished.
    fn reconcile(&mut self, queues: &[QueueView]) {
        let before = self.ours.steps.len();
        let keep = |s: &QueueAction| match s {
            QueueAction::Pause { queue } => queues.iter().any(|q| &q.name == queue && q.paused),
            QueueAction::SetConcurrency { queue, .. } => queues.iter().any(|q| &q.name == queue),
            QueueAction::Resume { .. } => false,
        };
        // The blanket's start moves down by the steps dropped before it.
        if let Some(from) = self.ours.blanket_from {
            let dropped = self.ours.steps[..from.min(before)]
                .iter()
                .filter(|s| !keep(s))
                .count();
            self.ours.blanket_from = Some(from - dropped);
        }
        self.ours.steps.retain(keep);
        if self.ours.steps.len() != before {
            tracing::info!(
                "a queue the throttler had paused was resumed by someone else; leaving it to them"
            );
        }
    }

    fn pause_all(&mut self, queues: &[QueueView]) -> Vec<QueueAction> {
        self.reconcile(queues);
        if self.ours.blanket_from.is_none() {
            self.ours.blanket_from = Some(self.ours.steps.len());
        }
        let mut out = vec![];
        for q in self.heavy(queues) {
            if !q.paused && !self.ours.paused().contains(&q.name) {
                let a = QueueAction::Pause {
                    queue: q.name.clone(),
                };
                self.ours.steps.push(a.clone());
                out.push(a);
            }
        }
        out
    }

    fn step_down(&mut self, queues: &[QueueView], o: &Observation) -> Option<QueueAction> {
        let can_write = o.config_writable
            && o.now - self.last_config_write >= self.p.config_write_interval_secs;
        let paused = self.ours.paused();
        for q in self.heavy(queues) {
            if q.work == 0 || q.paused || paused.contains(&q.name) {
                continue;
            }
            let reduced = self.ours.original_concurrency.contains_key(&q.name);
            if let Some(c) = q.concurrency
                && c > 1
                && !reduced
                && can_write
            {
                self.ours.original_concurrency.insert(q.name.clone(), c);
                self.last_config_write = o.now;
                let a = QueueAction::SetConcurrency {
                    queue: q.name.clone(),
                    concurrency: 1,
                };
                self.ours.steps.push(a.clone());
                return Some(a);
            }
            let a = QueueAction::Pause {
                queue: q.name.clone(),
            };
            self.ours.steps.push(a.clone());
            return Some(a);
        }
        None
    }

    fn step_up(&mut self, o: &Observation) -> Option<QueueAction> {
        let last = self.ours.steps.last()?.clone();
        if let QueueAction::SetConcurrency { .. } = last {
            let can_write = o.config_writable
                && o.now - self.last_config_write >= self.p.config_write_interval_secs;
            if !can_write {
                return None;
            }
            self.last_config_write = o.now;
        }
        let inverse = self.ours.inverse(&last);
        self.ours.steps.pop();
        if let QueueAction::SetConcurrency { queue, .. } = &last
            && !self
                .ours
                .steps
                .iter()
                .any(|s| matches!(s, QueueAction::SetConcurrency { queue: q, .. } if q == queue))
        {
            self.ours.original_concurrency.remove(queue);
        }
        Some(inverse)
    }
}

pub fn describe(a: &QueueAction) -> String {
    match a {
        QueueAction::Pause { queue } => format!("paused {queue}"),
        QueueAction::Resume { queue } => format!("resumed {queue}"),
        QueueAction::SetConcurrency { queue, concurrency } => {
            format!("{queue} concurrency {concurrency}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        let steps: Vec<u32> = (6..=15).map(|m| m * 100_000).collect();
        let mut p = Params::new(77.0, 78.0, 70.0, steps, 4.0);
        p.pause_order = vec![
            "videoConversion".into(),
            "smartSearch".into(),
            "thumbnailGeneration".into(),
        ];
        p
    }

    fn obs(now: f64, t: f64) -> Observation<'static> {
        Observation {
            now,
            temp_c: Some(t),
            firmware_bits: 0,
            busy: None,
            queues: None,
            config_writable: true,
            heavy_window: true,
            user_pause: false,
        }
    }

    fn queues() -> Vec<QueueView> {
        [
            "videoConversion",
            "smartSearch",
            "thumbnailGeneration",
            "backgroundTask",
            "notifications",
            "backupDatabase",
            "newQueueFromV4",
        ]
        .iter()
        .map(|n| QueueView {
            name: n.to_string(),
            paused: false,
            work: 10,
            concurrency: if *n == "thumbnailGeneration" {
                Some(3)
            } else {
                Some(1)
            },
        })
        .collect()
    }

    #[test]
    fn starts_low_ramps_to_full_speed_and_heat_lowers_the_clock_first() {
        let mut c = Controller::new(params());
        let d = c.step(&obs(0.0, 50.0));
        assert_eq!(
            d.clock_khz, 600_000,
            "the first reading says nothing about a full load"
        );
        let mut t = 0.0;
        let mut last = d;
        for _ in 0..100 {
            t += 2.0;
            last = c.step(&obs(t, 50.0));
        }
        assert_eq!(
            (last.clock_khz, last.quota, last.mode),
            (1_500_000, None, Mode::FullSpeed)
        );
        for _ in 0..10 {
            t += 2.0;
            last = c.step(&obs(t, 77.6));
        }
        assert!(
            last.clock_khz < 1_500_000,
            "the clock comes down before anything else"
        );
        assert_eq!(last.quota, None);
        assert!(last.actions.is_empty());
    }

    #[test]
    fn the_quota_follows_the_clock_floor() {
        let mut c = Controller::new(params());
        let mut d = c.step(&obs(0.0, 77.0));
        for i in 1..400 {
            d = c.step(&obs(i as f64 * 2.0, 77.8));
        }
        assert_eq!(d.clock_khz, 600_000);
        assert_eq!(d.quota, Some(0.4), "quota at its floor: 40 % of one core");
        assert_eq!(d.mode, Mode::Quota);
    }

    #[test]
    fn dithering_averages_to_the_continuous_clock() {
        let mut c = Controller::new(params());
        // u for 1250 MHz with alpha 2: (1250/1500)^2
        let u = (1250.0f64 / 1500.0).powi(2);
        let avg: f64 = (0..1000).map(|_| c.actuate(u).0 as f64).sum::<f64>() / 1000.0;
        assert!((avg - 1_250_000.0).abs() < 1_000.0, "{avg}");
    }

    #[test]
    fn emergency_latches_and_unlatches_with_hysteresis() {
        let mut c = Controller::new(params());
        let q = queues();
        let mut o = obs(0.0, 76.0);
        c.step(&o);
        o.now = 2.0;
        o.temp_c = Some(78.4);
        assert_ne!(
            c.step(&o).mode,
            Mode::Emergency,
            "one noisy sample over the ceiling is not an emergency"
        );
        o.now = 4.0;
        o.temp_c = Some(79.1);
        o.queues = Some(&q);
        let d = c.step(&o);
        assert_eq!(
            d.mode,
            Mode::Emergency,
            "a reading a kelvin over the ceiling latches"
        );
        assert_eq!(d.clock_khz, 600_000);
        let paused: Vec<_> = d.actions.iter().map(describe).collect();
        assert_eq!(
            paused,
            [
                "paused videoConversion",
                "paused smartSearch",
                "paused thumbnailGeneration",
                "paused newQueueFromV4"
            ],
            "every heavy queue, including ones no list knew, and never the protected ones"
        );
        // Cooling but above the release: still latched.
        o.temp_c = Some(72.0);
        o.now = 100.0;
        o.queues = None;
        assert_eq!(c.step(&o).mode, Mode::Emergency);
        o.temp_c = Some(69.5);
        for i in 0..10 {
            o.now = 102.0 + i as f64 * 2.0;
            c.step(&o);
        }
        assert_ne!(c.step(&o).mode, Mode::Emergency, "released below 70 °C");
    }

    #[test]
    fn what_an_emergency_paused_is_resumed_at_once_after_it() {
        let mut c = Controller::new(params());
        let mut q = queues();
        // A slow-loop step from before the emergency: stays, to unwind later.
        c = c.with_ours(Ours {
            steps: vec![QueueAction::Pause {
                queue: "videoConversion".into(),
            }],
            ..Default::default()
        });
        q[0].paused = true;
        let mut o = obs(0.0, 79.5);
        o.queues = Some(&q);
        let d = c.step(&o);
        assert_eq!(d.mode, Mode::Emergency);
        for a in &d.actions {
            if let QueueAction::Pause { queue } = a {
                q.iter_mut().find(|x| &x.name == queue).unwrap().paused = true;
            }
        }
        let mut resumed = vec![];
        let mut t = 0.0;
        for _ in 0..60 {
            t += 2.0;
            let mut o = obs(t, 60.0);
            o.queues = Some(&q);
            let d = c.step(&o);
            resumed.extend(d.actions.iter().map(describe));
            if !resumed.is_empty() {
                break;
            }
        }
        assert_eq!(
            resumed,
            [
                "resumed newQueueFromV4",
                "resumed thumbnailGeneration",
                "resumed smartSearch"
            ],
            "all in one tick, once released"
        );
        assert_eq!(
            c.ours().paused().into_iter().collect::<Vec<_>>(),
            ["videoConversion"],
            "the step from before the emergency unwinds on its own cadence"
        );
    }

    #[test]
    fn any_firmware_bit_latches() {
        let mut c = Controller::new(params());
        let mut o = obs(0.0, 60.0);
        o.firmware_bits = 0x50005;
        let d = c.step(&o);
        assert_eq!(d.mode, Mode::Emergency);
        assert!(d.reason.contains("0x5"), "{}", d.reason);
        // Sticky bits alone (after the event) do not keep it latched.
        o.firmware_bits = 0x50000;
        o.now = 2.0;
        assert_ne!(c.step(&o).mode, Mode::Emergency);
    }

    #[test]
    fn steps_down_at_the_floor_and_back_up_with_hysteresis() {
        let mut c = Controller::new(params());
        let mut q = queues();
        let mut t = 0.0;
        let mut actions = vec![];
        // Hot for a long time: the fast loop reaches its floor, then steps down.
        for _ in 0..400 {
            t += 2.0;
            let mut o = obs(t, 77.9);
            let tick = (t as u64).is_multiple_of(30);
            if tick {
                o.queues = Some(&q);
            }
            let d = c.step(&o);
            for a in &d.actions {
                if let QueueAction::Pause { queue } = a {
                    q.iter_mut().find(|x| &x.name == queue).unwrap().paused = true;
                }
            }
            actions.extend(d.actions);
        }
        let first: Vec<String> = actions.iter().take(3).map(describe).collect();
        assert_eq!(first[0], "paused videoConversion");
        assert!(
            first.contains(&"thumbnailGeneration concurrency 1".to_string()) || actions.len() < 3,
            "{first:?}"
        );
        assert!(
            !actions
                .iter()
                .any(|a| describe(a).contains("backgroundTask"))
        );
        let stepped = c.ours().steps.len();
        assert!(stepped >= 2);
        // Cool for a long time: steps undone one by one, last first.
        let mut undone = vec![];
        for _ in 0..1000 {
            t += 2.0;
            let mut o = obs(t, 70.5);
            if (t as u64).is_multiple_of(30) {
                o.queues = Some(&q);
            }
            let d = c.step(&o);
            for a in &d.actions {
                if let QueueAction::Resume { queue } = a {
                    q.iter_mut().find(|x| &x.name == queue).unwrap().paused = false;
                }
            }
            undone.extend(d.actions);
        }
        assert!(c.ours().steps.is_empty(), "{:?}", c.ours());
        assert_eq!(undone.len(), stepped);
        assert_eq!(
            describe(undone.last().unwrap()),
            "resumed videoConversion",
            "first paused, last resumed"
        );
        assert!(
            undone
                .iter()
                .any(|a| matches!(a, QueueAction::SetConcurrency { concurrency: 3, .. }))
                || !actions
                    .iter()
                    .any(|a| matches!(a, QueueAction::SetConcurrency { .. }))
        );
    }

    #[test]
    fn never_resumes_a_users_pause() {
        let mut c = Controller::new(params());
        let mut q = queues();
        q[0].paused = true; // the user paused videoConversion
        let mut o = obs(0.0, 60.0);
        o.user_pause = true;
        o.queues = Some(&q);
        let d = c.step(&o);
        assert!(
            !d.actions
                .iter()
                .any(|a| describe(a) == "paused videoConversion"),
            "it was already paused"
        );
        assert!(!c.ours().paused().contains("videoConversion"));
        let undo: Vec<String> = c.ours().undo_all().iter().map(describe).collect();
        assert!(
            !undo.contains(&"resumed videoConversion".to_string()),
            "{undo:?}"
        );
        assert!(undo.contains(&"resumed smartSearch".to_string()));
    }

    #[test]
    fn a_pause_undone_by_the_user_is_forgotten() {
        let mut c = Controller::new(params());
        let mut q = queues();
        let mut o = obs(0.0, 60.0);
        o.user_pause = true;
        o.queues = Some(&q);
        c.step(&o);
        assert!(c.ours().paused().contains("smartSearch"));
        for x in q.iter_mut() {
            x.paused = x.name != "smartSearch" && !ALWAYS_PROTECTED.contains(&x.name.as_str());
        }
        let mut o = obs(2.0, 60.0);
        o.queues = Some(&q);
        c.step(&o);
        assert!(!c.ours().paused().contains("smartSearch"));
    }

    #[test]
    fn quiet_hours_and_the_switch_pause_heavy_work() {
        let mut c = Controller::new(params());
        let q = queues();
        let mut o = obs(0.0, 50.0);
        o.heavy_window = false;
        o.queues = Some(&q);
        let d = c.step(&o);
        assert_eq!(d.mode, Mode::QuietHours);
        assert_eq!(d.actions.len(), 4);
    }

    #[test]
    fn a_missing_sensor_fails_safe() {
        let mut c = Controller::new(params());
        let mut o = obs(0.0, 0.0);
        o.temp_c = None;
        let q = queues();
        o.queues = Some(&q);
        let d = c.step(&o);
        assert_eq!(d.mode, Mode::SensorFailure);
        assert_eq!(d.clock_khz, 600_000);
        assert_eq!(d.quota, Some(0.4));
        assert!(!d.actions.is_empty());
    }

    #[test]
    fn failed_actions_are_not_ours() {
        let mut c = Controller::new(params());
        let q = queues();
        let mut o = obs(0.0, 50.0);
        o.user_pause = true;
        o.queues = Some(&q);
        let d = c.step(&o);
        c.action_failed(&d.actions[0]);
        assert!(!c.ours().paused().contains("videoConversion"));
    }
}
