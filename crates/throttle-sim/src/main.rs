//! `throttle-sim SCENARIO.toml`: a benchmark, not a test. It runs the
//! throttler's own controller against the thermal model beside "no
//! throttler", "hysteresis 75/70" and an oracle, over the scenario's sweep,
//! and prints the figures against the targets (it never hides a miss).

use std::path::PathBuf;

use anyhow::{Context, Result};
use appliance::throttle::sim::{self, Metrics, POLICIES, Policy, RunSetup, Scenario};
use clap::Parser;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Simulate the throttler against other policies and print figures")]
struct Args {
    /// Scenario file (TOML)
    scenario: PathBuf,
    /// Override the scenario's seed
    #[arg(long)]
    seed: Option<u64>,
    /// Override the sweep's number of runs
    #[arg(long)]
    count: Option<u32>,
    /// Write the full results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a CSV trace of run N (0-based) of POLICY: --trace 3:ours:/tmp/t.csv
    #[arg(long)]
    trace: Option<String>,
    /// Override controller parameters for tuning, e.g. kp=0.05,ki=0.003
    #[arg(long, value_delimiter = ',')]
    set: Vec<String>,
}

#[derive(Serialize)]
struct RunResult {
    setup: RunSetup,
    metrics: Vec<(&'static str, Metrics)>,
}

#[derive(Serialize)]
struct Summary {
    policy: &'static str,
    runs: usize,
    total_secs_at_or_above_80: f64,
    max_temp_c: f64,
    mean_work: f64,
    /// Total work over the oracle's total work.
    work_vs_oracle: f64,
    work_vs_oracle_worst_run: f64,
    work_vs_hysteresis: f64,
    work_vs_hysteresis_worst_run: f64,
    emergency_secs: f64,
    drained_runs: usize,
    mean_drain_secs: Option<f64>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let text =
        std::fs::read_to_string(&a.scenario).with_context(|| a.scenario.display().to_string())?;
    let mut s: Scenario =
        toml::from_str(&text).with_context(|| format!("parsing {}", a.scenario.display()))?;
    if let Some(seed) = a.seed {
        s.seed = seed;
    }
    if let (Some(c), Some(sw)) = (a.count, s.sweep.as_mut()) {
        sw.count = c;
    }
    let (mut setups, excluded) = sim::setups(&s).map_err(anyhow::Error::msg)?;
    // The order of the printed runs, so that --trace N names the same run.
    setups.sort_by_key(|r| r.seed);
    let mut overrides: Vec<(String, f64)> = vec![];
    for kv in &a.set {
        let (k, v) = kv.split_once('=').context("--set takes NAME=VALUE")?;
        overrides.push((
            k.to_owned(),
            v.parse().with_context(|| format!("--set {kv}"))?,
        ));
    }
    for (k, _) in &overrides {
        anyhow::ensure!(
            [
                "kp", "ki", "kihot", "lag", "filter", "rise", "setpoint", "alpha", "jump"
            ]
            .contains(&k.as_str()),
            "unknown parameter {k}"
        );
    }
    let tweak = move |p: &mut appliance::throttle::controller::Params| {
        for (k, v) in &overrides {
            match k.as_str() {
                "kp" => p.kp = *v,
                "ki" => p.ki = *v,
                "kihot" => p.ki_hot_factor = *v,
                "jump" => p.jump_k = *v,
                "lag" => p.lag_secs = *v,
                "filter" => p.filter_secs = *v,
                "rise" => p.max_rise_per_sec = *v,
                "setpoint" => p.setpoint = *v,
                "alpha" => p.alpha = *v,
                _ => {}
            }
        }
    };
    let tweak = &tweak;
    if let Some(spec) = &a.trace {
        let mut parts = spec.splitn(3, ':');
        let (n, pol, path) = (parts.next(), parts.next(), parts.next());
        let (Some(n), Some(pol), Some(path)) = (n, pol, path) else {
            anyhow::bail!("--trace N:POLICY:FILE")
        };
        let n: usize = n.parse()?;
        let policy = *POLICIES
            .iter()
            .find(|p| p.name() == pol)
            .context("unknown policy")?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        let m = sim::run_traced(&s, &setups[n], policy, tweak, Some(&mut f));
        println!("traced run {n} ({:?}) with {pol}: {m:?}", setups[n]);
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let chunks: Vec<Vec<RunSetup>> = (0..threads)
        .map(|i| setups.iter().skip(i).step_by(threads).cloned().collect())
        .collect();
    let mut results: Vec<RunResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let s = &s;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|setup| RunResult {
                            setup: setup.clone(),
                            metrics: POLICIES
                                .iter()
                                .map(|p| (p.name(), sim::run_with(s, setup, *p, tweak)))
                                .collect(),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a sim thread panicked"))
            .collect()
    });
    results.sort_by_key(|r| r.setup.seed);
    let wall = t0.elapsed().as_secs_f64();

    let get = |r: &RunResult, p: Policy| {
        r.metrics
            .iter()
            .find(|(n, _)| *n == p.name())
            .map(|(_, m)| m.clone())
            .expect("every policy ran")
    };
    let summaries: Vec<Summary> = POLICIES
        .iter()
        .map(|p| {
            let ms: Vec<Metrics> = results.iter().map(|r| get(r, *p)).collect();
            let total = |q: Policy| results.iter().map(|r| get(r, q).work).sum::<f64>();
            // The worst run, among runs where the other policy did real work.
            let worst = |other: Policy| {
                results
                    .iter()
                    .filter(|r| get(r, other).work > 1.0)
                    .map(|r| get(r, *p).work / get(r, other).work)
                    .fold(f64::INFINITY, f64::min)
            };
            let drained: Vec<f64> = ms.iter().filter_map(|m| m.drain_secs).collect();
            Summary {
                policy: p.name(),
                runs: ms.len(),
                total_secs_at_or_above_80: ms.iter().map(|m| m.secs_at_or_above_80).sum(),
                max_temp_c: ms.iter().map(|m| m.max_temp_c).fold(f64::MIN, f64::max),
                mean_work: ms.iter().map(|m| m.work).sum::<f64>() / ms.len() as f64,
                work_vs_oracle: total(*p) / total(Policy::Oracle),
                work_vs_oracle_worst_run: worst(Policy::Oracle),
                work_vs_hysteresis: total(*p) / total(Policy::Hysteresis),
                work_vs_hysteresis_worst_run: worst(Policy::Hysteresis),
                emergency_secs: ms.iter().map(|m| m.emergency_secs).sum(),
                drained_runs: drained.len(),
                mean_drain_secs: (!drained.is_empty())
                    .then(|| drained.iter().sum::<f64>() / drained.len() as f64),
            }
        })
        .collect();

    println!(
        "scenario {} ({} runs of {:.0} s, seed {}; {excluded} draws left out with an idle temperature >= {} °C), simulated in {wall:.1} s",
        a.scenario.display(),
        results.len(),
        s.duration_secs,
        s.seed,
        sim::MAX_IDLE_C
    );
    println!(
        "{:<18} {:>10} {:>8} {:>12} {:>14} {:>14} {:>12}",
        "policy", "s >= 80C", "max C", "work (cpu-s)", "vs oracle", "vs hysteresis", "drain (s)"
    );
    for x in &summaries {
        println!(
            "{:<18} {:>10.1} {:>8.2} {:>12.0} {:>6.3} (min {:>5.3}) {:>6.2} (min {:>4.2}) {:>12}",
            x.policy,
            x.total_secs_at_or_above_80,
            x.max_temp_c,
            x.mean_work,
            x.work_vs_oracle,
            x.work_vs_oracle_worst_run,
            x.work_vs_hysteresis,
            x.work_vs_hysteresis_worst_run,
            x.mean_drain_secs
                .map(|d| format!("{d:.0} ({}/{})", x.drained_runs, x.runs))
                .unwrap_or_else(|| format!("- (0/{})", x.runs)),
        );
    }
    let ours = summaries
        .iter()
        .find(|x| x.policy == "ours")
        .expect("ours ran");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("targets for `ours`:");
    println!(
        "  0 s at >= 80 °C:               {:>8.1} s        {}",
        ours.total_secs_at_or_above_80,
        verdict(ours.total_secs_at_or_above_80 == 0.0)
    );
    println!(
        "  work >= 95 % of the oracle:    all runs {:>5.1} %, worst run {:>5.1} %  {}",
        ours.work_vs_oracle * 100.0,
        ours.work_vs_oracle_worst_run * 100.0,
        verdict(ours.work_vs_oracle >= 0.95)
    );
    println!(
        "  work >= 1.3x hysteresis:       all runs {:>5.2}x, worst run {:>5.2}x    {}",
        ours.work_vs_hysteresis,
        ours.work_vs_hysteresis_worst_run,
        verdict(ours.work_vs_hysteresis >= 1.3)
    );
    println!(
        "  (emergency latches of `ours`: {:.0} s in all)",
        ours.emergency_secs
    );
    // The same comparisons per preset, since the presets throttle very
    // differently (a bare board barely needs it; the official case does).
    let mut presets: Vec<&str> = results.iter().map(|r| r.setup.preset.as_str()).collect();
    presets.sort_unstable();
    presets.dedup();
    if presets.len() > 1 {
        println!("per preset, `ours` against:        oracle   hysteresis (totals; mean of runs)");
        for pre in presets {
            let rs: Vec<&RunResult> = results.iter().filter(|r| r.setup.preset == pre).collect();
            let tot = |p: Policy| rs.iter().map(|r| get(r, p).work).sum::<f64>();
            let per: Vec<f64> = rs
                .iter()
                .filter(|r| get(r, Policy::Hysteresis).work > 1.0)
                .map(|r| get(r, Policy::Ours).work / get(r, Policy::Hysteresis).work)
                .collect();
            println!(
                "  {pre:<16} {:>3} runs       {:>6.1} %   {:>5.2}x; {:>5.2}x",
                rs.len(),
                tot(Policy::Ours) / tot(Policy::Oracle) * 100.0,
                tot(Policy::Ours) / tot(Policy::Hysteresis),
                per.iter().sum::<f64>() / per.len().max(1) as f64
            );
        }
    }
    if let Some(path) = a.json {
        let doc = serde_json::json!({ "scenario": s, "summaries": summaries, "runs": results });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| path.display().to_string())?;
        println!("results written to {}", path.display());
    }
    Ok(())
}
