//! The throttler simulator: the daemon's own [`Controller`] against a Pi 4
//! plant, beside three other policies, on the same backlog and weather.
//!
//! Plant (thermal-and-jobs.md §1.6): two thermal nodes (SoC die and
//! board/case), power `P_idle + Σ busy cores · p_core · (f/f_max)^α`, work
//! per core ∝ f; the firmware clocks down at 80 °C (1500 → 1000 → 750 → 600
//! MHz) and harder at 85 °C; the sensor reads in 0.487 °C steps with noise.
//! Jobs follow Immich: a pause stops new jobs while running ones finish,
//! concurrency bounds what runs per queue, a CPU quota slows Immich only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::controller::{Controller, Observation, Params, QueueAction, QueueView};

/// Thermal presets fitted in the reference (R in K/W, C in J/K).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thermal {
    pub r_jb: f64,
    pub c_j: f64,
    pub r_ba: f64,
    pub c_b: f64,
}

pub fn preset(name: &str) -> Option<Thermal> {
    Some(match name {
        "bare-board" => Thermal {
            r_jb: 3.2,
            c_j: 1.5,
            r_ba: 4.6,
            c_b: 26.0,
        },
        "official-case" => Thermal {
            r_jb: 3.2,
            c_j: 1.5,
            r_ba: 9.8,
            c_b: 90.0,
        },
        "passive-alu" => Thermal {
            r_jb: 1.9,
            c_j: 2.0,
            r_ba: 5.0,
            c_b: 120.0,
        },
        "fan" => Thermal {
            r_jb: 1.6,
            c_j: 2.0,
            r_ba: 1.4,
            c_b: 60.0,
        },
        _ => return None,
    })
}

pub const PRESETS: [&str; 4] = ["bare-board", "official-case", "passive-alu", "fan"];

/// A kind of Immich job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobKind {
    pub queue: String,
    /// CPU seconds at full clock per job.
    pub cpu_secs: f64,
    /// Threads one job keeps busy.
    pub threads: f64,
    /// Watts per busy core at full clock (NEON-heavy code draws more).
    pub watts_per_core: f64,
    /// The queue's default concurrency.
    pub concurrency: u64,
}

/// The backlog of a typical import: thumbnails, metadata, a few long
/// transcodes, and the ML queues (CLIP, faces, OCR).
pub fn default_kinds() -> Vec<JobKind> {
    let k = |q: &str, cpu: f64, threads: f64, w: f64, c: u64| JobKind {
        queue: q.into(),
        cpu_secs: cpu,
        threads,
        watts_per_core: w,
        concurrency: c,
    };
    vec![
        k("thumbnailGeneration", 2.0, 1.0, 1.1, 3),
        k("metadataExtraction", 0.4, 1.0, 0.85, 5),
        k("videoConversion", 720.0, 4.0, 1.2, 1),
        k("smartSearch", 1.5, 2.0, 1.15, 2),
        k("faceDetection", 2.0, 2.0, 1.15, 2),
        k("ocr", 1.2, 2.0, 1.15, 1),
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub preset: String,
    pub ambient_c: f64,
    pub duration_secs: f64,
    pub seed: u64,
    /// Jobs waiting per queue at the start.
    pub backlog: BTreeMap<String, u64>,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "default_idle")]
    pub idle_watts: f64,
    #[serde(default = "default_noise")]
    pub sensor_noise_c: f64,
    #[serde(default)]
    pub sweep: Option<Sweep>,
}

fn default_alpha() -> f64 {
    2.0
}
fn default_idle() -> f64 {
    2.7
}
fn default_noise() -> f64 {
    0.3
}

/// Randomised variations of the scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    pub count: u32,
    /// ± fraction applied to the Rs and Cs (0.4 = ±40 %).
    pub rc_spread: f64,
    pub ambient_min_c: f64,
    pub ambient_max_c: f64,
    /// Presets drawn from; the scenario's own when empty.
    #[serde(default)]
    pub presets: Vec<String>,
}

/// Deterministic random numbers (SplitMix64), so a seed replays a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Firmware only: it clocks down at 80 °C.
    None,
    /// Pause every heavy queue at 75 °C, resume at 70 °C (what others do).
    Hysteresis,
    /// The daemon's controller.
    Ours,
    /// Full speed until 78 °C, then the exact clock (and duty) that holds it,
    /// from perfect knowledge of the model.
    Oracle,
}

pub const POLICIES: [Policy; 4] = [
    Policy::None,
    Policy::Hysteresis,
    Policy::Ours,
    Policy::Oracle,
];

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Hysteresis => "hysteresis-75-70",
            Policy::Ours => "ours",
            Policy::Oracle => "oracle",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub secs_at_or_above_80: f64,
    pub max_temp_c: f64,
    /// CPU seconds of Immich work done, at full-clock equivalent.
    pub work: f64,
    /// When the backlog was done; None if not within the duration.
    pub drain_secs: Option<f64>,
    pub mean_clock_mhz: f64,
    pub queue_actions: u64,
    /// Seconds the controller spent latched in its emergency mode.
    pub emergency_secs: f64,
}

/// One run's inputs after the sweep's draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSetup {
    pub preset: String,
    pub thermal: Thermal,
    pub ambient_c: f64,
    pub seed: u64,
}

const F_MAX: f64 = 1_500_000.0;
const F_MIN: f64 = 600_000.0;
const CORES: f64 = 4.0;
const DT: f64 = 0.1;
const POLL: f64 = 2.0;
const QUEUE_LOOP: f64 = 30.0;
const HYST_POLL: f64 = 10.0;
const ORACLE_CAP: f64 = 78.0;

#[derive(Debug, Clone)]
struct Running {
    kind: usize,
    left: f64,
}

#[derive(Debug, Clone)]
struct Jobs {
    kinds: Vec<JobKind>,
    waiting: Vec<u64>,
    running: Vec<Running>,
    paused: Vec<bool>,
    concurrency: Vec<u64>,
}

impl Jobs {
    fn new(kinds: Vec<JobKind>, backlog: &BTreeMap<String, u64>) -> Jobs {
        let n = kinds.len();
        Jobs {
            waiting: kinds
                .iter()
                .map(|k| backlog.get(&k.queue).copied().unwrap_or(0))
                .collect(),
            concurrency: kinds.iter().map(|k| k.concurrency).collect(),
            running: vec![],
            paused: vec![false; n],
            kinds,
        }
    }

    fn idx(&self, q: &str) -> Option<usize> {
        self.kinds.iter().position(|k| k.queue == q)
    }

    fn start_jobs(&mut self) {
        for i in 0..self.kinds.len() {
            if self.paused[i] {
                continue;
            }
            let mut active = self.running.iter().filter(|r| r.kind == i).count() as u64;
            while active < self.concurrency[i] && self.waiting[i] > 0 {
                self.waiting[i] -= 1;
                self.running.push(Running {
                    kind: i,
                    left: self.kinds[i].cpu_secs,
                });
                active += 1;
            }
        }
    }

    fn done(&self) -> bool {
        self.running.is_empty() && self.waiting.iter().all(|w| *w == 0)
    }

    /// Cores demanded by running jobs.
    fn demand(&self) -> f64 {
        self.running
            .iter()
            .map(|r| self.kinds[r.kind].threads)
            .sum()
    }

    /// Advances jobs for `dt` at clock ratio `fr` with `cores` usable;
    /// returns (work done, power above idle at full clock per core-weight).
    fn advance(&mut self, dt: f64, fr: f64, cores: f64, alpha: f64) -> (f64, f64) {
        let demand = self.demand();
        if demand <= 0.0 {
            return (0.0, 0.0);
        }
        let share = (cores.min(CORES) / demand).min(1.0);
        let mut work = 0.0;
        let mut power = 0.0;
        for r in self.running.iter_mut() {
            let k = &self.kinds[r.kind];
            let busy = k.threads * share;
            let progress = (busy * fr * dt).min(r.left);
            r.left -= progress;
            work += progress;
            power += busy * k.watts_per_core * fr.powf(alpha);
        }
        self.running.retain(|r| r.left > 1e-9);
        (work, power)
    }

    /// Power per busy core at full clock, demand-weighted (for the oracle).
    fn demand_power(&self, cores: f64) -> f64 {
        let demand = self.demand();
        if demand <= 0.0 {
            return 0.0;
        }
        let share = (cores.min(CORES) / demand).min(1.0);
        self.running
            .iter()
            .map(|r| self.kinds[r.kind].threads * share * self.kinds[r.kind].watts_per_core)
            .sum()
    }

    fn views(&self) -> Vec<QueueView> {
        let mut v: Vec<QueueView> = self
            .kinds
            .iter()
            .enumerate()
            .map(|(i, k)| QueueView {
                name: k.queue.clone(),
                paused: self.paused[i],
                work: self.waiting[i] + self.running.iter().filter(|r| r.kind == i).count() as u64,
                concurrency: Some(self.concurrency[i]),
            })
            .collect();
        for protected in ["backgroundTask", "notifications", "backupDatabase"] {
            v.push(QueueView {
                name: protected.into(),
                paused: false,
                work: 0,
                concurrency: Some(5),
            });
        }
        v
    }

    fn apply(&mut self, a: &QueueAction) {
        match a {
            QueueAction::Pause { queue } => {
                if let Some(i) = self.idx(queue) {
                    self.paused[i] = true;
                }
            }
            QueueAction::Resume { queue } => {
                if let Some(i) = self.idx(queue) {
                    self.paused[i] = false;
                }
            }
            QueueAction::SetConcurrency { queue, concurrency } => {
                if let Some(i) = self.idx(queue) {
                    self.concurrency[i] = (*concurrency).max(1);
                }
            }
        }
    }

    fn pause_all(&mut self, paused: bool) {
        for p in self.paused.iter_mut() {
            *p = paused;
        }
    }
}

/// The firmware's clock steps when hot.
#[derive(Debug, Clone)]
struct Firmware {
    level: usize,
    hot_for: f64,
    cool_for: f64,
}

const FW_STEPS: [f64; 4] = [1_500_000.0, 1_000_000.0, 750_000.0, 600_000.0];

impl Firmware {
    fn update(&mut self, t: f64, dt: f64) -> f64 {
        if t >= 85.0 {
            self.level = 3;
        }
        if t >= 80.0 {
            self.hot_for += dt;
            self.cool_for = 0.0;
            if self.hot_for >= 1.0 && self.level < 3 {
                self.level += 1;
                self.hot_for = 0.0;
            }
        } else {
            self.hot_for = 0.0;
            if t < 79.0 {
                self.cool_for += dt;
                if self.cool_for >= 5.0 && self.level > 0 {
                    self.level -= 1;
                    self.cool_for = 0.0;
                }
            }
        }
        FW_STEPS[self.level]
    }
    fn bits(&self) -> u32 {
        if self.level > 0 { 0x2 | 0x4 | 0x8 } else { 0 }
    }
}

/// Runs one policy on one setup.
pub fn run(s: &Scenario, setup: &RunSetup, policy: Policy) -> Metrics {
    run_with(s, setup, policy, &|_| {})
}

/// As [`run`], with the controller's parameters adjusted (for tuning).
pub fn run_with(
    s: &Scenario,
    setup: &RunSetup,
    policy: Policy,
    tweak: &dyn Fn(&mut Params),
) -> Metrics {
    run_traced(s, setup, policy, tweak, None)
}

/// As [`run_with`], writing a CSV line per simulated second to `trace`:
/// time, die and board temperature, sensor reading, clock, quota, firmware
/// level, running jobs and cumulative work.
pub fn run_traced(
    s: &Scenario,
    setup: &RunSetup,
    policy: Policy,
    tweak: &dyn Fn(&mut Params),
    mut trace: Option<&mut dyn std::io::Write>,
) -> Metrics {
    if let Some(t) = trace.as_deref_mut() {
        let _ = writeln!(t, "t,tj,tb,reading,clock_mhz,quota,fw_level,running,work");
    }
    let th = setup.thermal;
    let mut rng = Rng::new(setup.seed);
    let mut jobs = Jobs::new(default_kinds(), &s.backlog);
    let idle_tj = setup.ambient_c + s.idle_watts * (th.r_jb + th.r_ba);
    let idle_tb = setup.ambient_c + s.idle_watts * th.r_ba;
    let (mut tj, mut tb) = (idle_tj, idle_tb);
    let mut fw = Firmware {
        level: 0,
        hot_for: 0.0,
        cool_for: 0.0,
    };
    let steps: Vec<u32> = (6..=15).map(|m| m * 100_000).collect();
    let mut params = Params::new(77.0, 78.0, 70.0, steps, CORES);
    params.alpha = 2.0;
    params.pause_order = crate::config::Config::defaults().throttle.pause_order;
    tweak(&mut params);
    let mut ctl = Controller::new(params);
    let (mut clock, mut quota): (f64, Option<f64>) = (F_MAX, None);
    let mut oracle_duty = 1.0;
    let mut m = Metrics {
        secs_at_or_above_80: 0.0,
        max_temp_c: tj,
        work: 0.0,
        drain_secs: None,
        mean_clock_mhz: 0.0,
        queue_actions: 0,
        emergency_secs: 0.0,
    };
    let mut next_poll = 0.0;
    // The CPU's busy share, averaged between polls as /proc/stat would give it.
    let (mut busy_acc, mut busy_n, mut busy) = (0.0, 0u32, 0.0);
    let mut next_queue_tick = 0.0;
    let mut next_hyst = 0.0;
    let mut clock_sum = 0.0;
    let n_steps = (s.duration_secs / DT).round() as u64;
    for i in 0..n_steps {
        let now = i as f64 * DT;
        let reading = ((tj + s.sensor_noise_c * rng.normal()) / 0.487).floor() * 0.487;
        match policy {
            Policy::None => {}
            Policy::Hysteresis => {
                if now >= next_hyst {
                    next_hyst += HYST_POLL;
                    if reading >= 75.0 {
                        if jobs.paused.iter().any(|p| !p) {
                            m.queue_actions += 1;
                        }
                        jobs.pause_all(true);
                    } else if reading <= 70.0 {
                        if jobs.paused.iter().any(|p| *p) {
                            m.queue_actions += 1;
                        }
                        jobs.pause_all(false);
                    }
                }
            }
            Policy::Ours => {
                if now >= next_poll {
                    next_poll += POLL;
                    if busy_n > 0 {
                        busy = busy_acc / busy_n as f64;
                    }
                    busy_acc = 0.0;
                    busy_n = 0;
                    let views = jobs.views();
                    let slow = now >= next_queue_tick;
                    if slow {
                        next_queue_tick += QUEUE_LOOP;
                    }
                    let d = ctl.step(&Observation {
                        now,
                        temp_c: Some(reading),
                        firmware_bits: fw.bits(),
                        busy: Some(busy),
                        queues: slow.then_some(views.as_slice()),
                        config_writable: true,
                        heavy_window: true,
                        user_pause: false,
                    });
                    clock = d.clock_khz as f64;
                    quota = d.quota;
                    if d.mode == super::controller::Mode::Emergency {
                        m.emergency_secs += POLL;
                    }
                    for a in &d.actions {
                        jobs.apply(a);
                        m.queue_actions += 1;
                    }
                }
            }
            Policy::Oracle => {
                // Perfect knowledge, greedily: the power that brings the die
                // exactly to the cap at the next step (C_j dTj/dt = P − flow),
                // which is full power whenever the cap is out of reach.
                let p_dyn_full = jobs.demand_power(CORES);
                let allowed =
                    (ORACLE_CAP - tb) / th.r_jb + th.c_j * (ORACLE_CAP - tj) / DT - s.idle_watts;
                if p_dyn_full <= 0.0 || allowed >= p_dyn_full {
                    clock = F_MAX;
                    oracle_duty = 1.0;
                } else {
                    let f = F_MAX * (allowed.max(0.0) / p_dyn_full).powf(1.0 / s.alpha);
                    if f >= F_MIN {
                        clock = f;
                        oracle_duty = 1.0;
                    } else {
                        clock = F_MIN;
                        oracle_duty =
                            allowed.max(0.0) / (p_dyn_full * (F_MIN / F_MAX).powf(s.alpha));
                    }
                }
            }
        }
        jobs.start_jobs();
        let fw_clock = fw.update(tj, DT);
        let f = clock.min(fw_clock);
        clock_sum += f;
        let cores = match policy {
            Policy::Oracle => jobs.demand().min(CORES) * oracle_duty,
            _ => quota.unwrap_or(CORES),
        };
        busy_acc += jobs.demand().min(cores).min(CORES) / CORES;
        busy_n += 1;
        let (work, p_dyn) = jobs.advance(DT, f / F_MAX, cores, s.alpha);
        m.work += work;
        let p = s.idle_watts + p_dyn;
        let q_jb = (tj - tb) / th.r_jb;
        let q_ba = (tb - setup.ambient_c) / th.r_ba;
        tj += DT * (p - q_jb) / th.c_j;
        tb += DT * (q_jb - q_ba) / th.c_b;
        if tj >= 80.0 {
            m.secs_at_or_above_80 += DT;
        }
        m.max_temp_c = m.max_temp_c.max(tj);
        if m.drain_secs.is_none() && jobs.done() {
            m.drain_secs = Some(now);
        }
        if i % 10 == 0
            && let Some(t) = trace.as_deref_mut()
        {
            let _ = writeln!(
                t,
                "{now:.0},{tj:.2},{tb:.2},{reading:.2},{:.0},{},{},{},{:.0}",
                f / 1000.0,
                quota.map(|q| format!("{q:.2}")).unwrap_or_default(),
                fw.level,
                jobs.running.len(),
                m.work
            );
        }
    }
    m.mean_clock_mhz = clock_sum / n_steps.max(1) as f64 / 1000.0;
    m
}

/// The die's idle temperature of a setup.
pub fn idle_temp(s: &Scenario, r: &RunSetup) -> f64 {
    r.ambient_c + s.idle_watts * (r.thermal.r_jb + r.thermal.r_ba)
}

/// Draws whose idle temperature is already this hot are left out of a
/// sweep: no policy can help a board that throttles doing nothing, and a
/// real Pi is not set up that way.
pub const MAX_IDLE_C: f64 = 75.0;

/// The runs of a scenario: itself, or its sweep's draws (those with an idle
/// temperature below [`MAX_IDLE_C`]), and how many draws were left out.
pub fn setups(s: &Scenario) -> Result<(Vec<RunSetup>, u32), String> {
    let base = preset(&s.preset).ok_or_else(|| {
        format!(
            "unknown preset `{}`; the presets are {}",
            s.preset,
            PRESETS.join(", ")
        )
    })?;
    let Some(sw) = &s.sweep else {
        return Ok((
            vec![RunSetup {
                preset: s.preset.clone(),
                thermal: base,
                ambient_c: s.ambient_c,
                seed: s.seed,
            }],
            0,
        ));
    };
    let mut rng = Rng::new(s.seed);
    let presets: Vec<String> = if sw.presets.is_empty() {
        vec![s.preset.clone()]
    } else {
        sw.presets.clone()
    };
    let mut out = vec![];
    let mut excluded = 0;
    let mut i = 0;
    while out.len() < sw.count as usize {
        if i > sw.count * 20 {
            return Err(
                "the sweep's ranges give almost no board with a plausible idle temperature".into(),
            );
        }
        let name = presets[i as usize % presets.len()].clone();
        let t = preset(&name).ok_or_else(|| format!("unknown preset `{name}`"))?;
        let mut f = |x: f64| x * rng.range(1.0 - sw.rc_spread, 1.0 + sw.rc_spread);
        let thermal = Thermal {
            r_jb: f(t.r_jb),
            c_j: f(t.c_j),
            r_ba: f(t.r_ba),
            c_b: f(t.c_b),
        };
        let r = RunSetup {
            preset: name,
            thermal,
            ambient_c: rng.range(sw.ambient_min_c, sw.ambient_max_c),
            seed: rng.next_u64(),
        };
        i += 1;
        if idle_temp(s, &r) >= MAX_IDLE_C {
            excluded += 1;
            continue;
        }
        out.push(r);
    }
    Ok((out, excluded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(preset: &str, ambient: f64, secs: f64) -> Scenario {
        Scenario {
            preset: preset.into(),
            ambient_c: ambient,
            duration_secs: secs,
            seed: 7,
            backlog: BTreeMap::from([
                ("thumbnailGeneration".into(), 100_000),
                ("videoConversion".into(), 50),
                ("smartSearch".into(), 100_000),
            ]),
            alpha: 2.0,
            idle_watts: 2.7,
            sensor_noise_c: 0.3,
            sweep: None,
        }
    }

    #[test]
    fn idle_temperatures_match_the_reference() {
        // thermal-and-jobs.md §1.6: official case idles at about 57 °C at 22 °C.
        let s = scenario("official-case", 22.0, 10.0);
        let t = preset("official-case").unwrap();
        let idle = s.ambient_c + s.idle_watts * (t.r_jb + t.r_ba);
        assert!((idle - 57.1).abs() < 0.5, "{idle}");
    }

    #[test]
    fn without_a_throttler_the_official_case_hits_80() {
        let s = scenario("official-case", 30.0, 1800.0);
        let setup = &setups(&s).unwrap().0[0];
        let none = run(&s, setup, Policy::None);
        assert!(none.secs_at_or_above_80 > 10.0, "{none:?}");
    }

    #[test]
    fn ours_stays_below_80_and_the_oracle_below_its_cap() {
        let s = scenario("official-case", 30.0, 1800.0);
        let setup = &setups(&s).unwrap().0[0];
        let ours = run(&s, setup, Policy::Ours);
        assert_eq!(ours.secs_at_or_above_80, 0.0, "{ours:?}");
        let oracle = run(&s, setup, Policy::Oracle);
        assert!(oracle.max_temp_c < 78.2, "{oracle:?}");
        assert!(
            ours.work > 0.8 * oracle.work,
            "ours {} vs oracle {}",
            ours.work,
            oracle.work
        );
    }

    #[test]
    fn seeds_replay() {
        let s = scenario("bare-board", 25.0, 300.0);
        let setup = &setups(&s).unwrap().0[0];
        assert_eq!(run(&s, setup, Policy::Ours), run(&s, setup, Policy::Ours));
    }

    #[test]
    fn sweeps_draw_within_the_ranges() {
        let mut s = scenario("official-case", 30.0, 10.0);
        s.sweep = Some(Sweep {
            count: 50,
            rc_spread: 0.4,
            ambient_min_c: 15.0,
            ambient_max_c: 35.0,
            presets: vec!["official-case".into(), "bare-board".into()],
        });
        let (all, _) = setups(&s).unwrap();
        assert_eq!(all.len(), 50);
        for r in &all {
            assert!(idle_temp(&s, r) < MAX_IDLE_C);
            assert!((15.0..35.0).contains(&r.ambient_c));
            let base = preset(&r.preset).unwrap();
            assert!(
                r.thermal.r_ba >= base.r_ba * 0.6 - 1e-9
                    && r.thermal.r_ba <= base.r_ba * 1.4 + 1e-9
            );
        }
        assert!(
            setups(&Scenario {
                preset: "nope".into(),
                ..s
            })
            .is_err()
        );
    }
}
