//! The throttler daemon against a sysfs tree, the fake Immich and an
//! in-memory quota: clock first, emergency pauses, the user's switch, the
//! API key missing, and restoring on a clean stop and after a crash.
//! (The quota over real D-Bus is in the VM story 30-throttle.)

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use appliance::config::Config;
use appliance::immich::{Client, ImmichApi};
use appliance::sd_notify::Notify;
use appliance::systemd::{CpuQuota, UnitError};
use appliance::throttle::daemon::{self, Daemon, Parts};
use appliance::throttle::sysfs::{self, CpuFreq, Sysfs};
use fake_immich::{Fake, Options};

#[derive(Default)]
struct Quota(RefCell<Option<u64>>);

impl CpuQuota for Quota {
    fn set_cpu_quota(&self, _: &str, usec: Option<u64>) -> Result<(), UnitError> {
        *self.0.borrow_mut() = usec;
        Ok(())
    }
    fn cpu_quota(&self, _: &str) -> Result<Option<u64>, UnitError> {
        Ok(*self.0.borrow())
    }
}

#[derive(Default)]
struct Notes(RefCell<Vec<String>>);
impl Notify for Notes {
    fn notify(&self, s: &str) {
        self.0.borrow_mut().push(s.to_owned());
    }
}

fn config(dir: &Path) -> Config {
    let text = format!(
        "[throttle]\nsysfs-root = \"{d}/sys\"\nstate-file = \"{d}/state.json\"\nstatus-file = \"{d}/status.json\"\npause-switch-file = \"{d}/pause\"\nprometheus-textfile = \"{d}/throttle.prom\"\npoll-secs = 0.1\nqueue-loop-secs = 0.1\n",
        d = dir.display()
    );
    Config::from_str_with_defaults(&text, Path::new("t.toml")).unwrap()
}

fn set_temp(dir: &Path, mc: i64) {
    std::fs::write(
        dir.join("sys/class/thermal/thermal_zone0/temp"),
        format!("{mc}\n"),
    )
    .unwrap();
}

fn setup(backlog: bool) -> (tempfile::TempDir, Config, Fake) {
    let d = tempfile::tempdir().unwrap();
    sysfs::write_fake_tree(&d.path().join("sys"), 60_000, true).unwrap();
    let cfg = config(d.path());
    let mut opts = Options {
        api_key: Some("k".into()),
        ..Default::default()
    };
    if backlog {
        opts.backlog = vec![
            ("videoConversion".into(), 50),
            ("thumbnailGeneration".into(), 5000),
            ("smartSearch".into(), 5000),
        ];
    }
    let f = Fake::spawn("127.0.0.1:0", opts).unwrap();
    (d, cfg, f)
}

fn ticks(d: &mut Daemon, n: usize) {
    for _ in 0..n {
        d.tick();
        std::thread::sleep(Duration::from_millis(105));
    }
    // Queue actions run on the daemon's Immich thread: wait for the last.
    d.settle(Duration::from_secs(5));
}

/// The daemon's seams for one test: the sysfs tree, the quota in memory,
/// the fake Immich (or none, with the reason) and the notifications.
struct Rig {
    s: Sysfs,
    quota: Quota,
    client: Option<Arc<Client>>,
    missing: Option<String>,
    notes: Notes,
}

impl Rig {
    fn new(cfg: &Config, fake: Result<&Fake, &str>) -> Rig {
        let (client, missing) = match fake {
            Ok(f) => (
                Some(Arc::new(Client::new(
                    &f.url(),
                    Some("k".into()),
                    Duration::from_secs(5),
                ))),
                None,
            ),
            Err(why) => (None, Some(why.to_owned())),
        };
        Rig {
            s: Sysfs::new(&cfg.throttle.sysfs_root, "thermal_zone0", "policy0"),
            quota: Quota::default(),
            client,
            missing,
            notes: Notes::default(),
        }
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            sensors: &self.s,
            cpufreq: &self.s,
            systemd: &self.quota,
            immich: self
                .client
                .clone()
                .map(|c| c as Arc<dyn ImmichApi + Send + Sync>),
            immich_missing: self.missing.clone(),
            notify: &self.notes,
        }
    }
}

fn status(cfg: &Config) -> daemon::Status {
    serde_json::from_str(&std::fs::read_to_string(&cfg.throttle.status_file).unwrap()).unwrap()
}

#[test]
fn emergency_pauses_heavy_queues_and_a_clean_stop_restores_everything() {
    let (dir, cfg, fake) = setup(true);
    let rig = Rig::new(&cfg, Ok(&fake));
    fake.set_paused("library", true); // a user's own pause, to be left alone
    let mut d = Daemon::start(&cfg, rig.parts()).unwrap();
    ticks(&mut d, 3);
    set_temp(dir.path(), 79_300);
    ticks(&mut d, 3);
    let status = status(&cfg);
    assert_eq!(status.mode, "emergency", "{status:?}");
    assert_eq!(status.clock_limit_mhz, 600);
    assert_eq!(status.quota_percent, Some(40));
    assert_eq!(*rig.quota.0.borrow(), Some(400_000), "40 % of one core");
    let paused = fake.snapshot()["paused"].clone();
    for q in [
        "videoConversion",
        "thumbnailGeneration",
        "smartSearch",
        "library",
    ] {
        assert!(
            paused.as_array().unwrap().iter().any(|p| p == q),
            "{q} not paused: {paused}"
        );
    }
    for q in ["backgroundTask", "notifications", "backupDatabase"] {
        assert!(
            !paused.as_array().unwrap().iter().any(|p| p == q),
            "{q} must never be paused"
        );
    }
    assert!(
        !status.paused_queues.contains(&"library".to_string()),
        "library was the user's pause"
    );
    assert!(status.paused_by_others.contains(&"library".to_string()));
    let saved = daemon::load_saved(&cfg.throttle.state_file);
    assert!(
        saved.ours.paused().contains("videoConversion"),
        "the pauses are persisted"
    );
    assert!(
        rig.notes
            .0
            .borrow()
            .iter()
            .any(|n| n.starts_with("WATCHDOG=1"))
    );
    let prom = std::fs::read_to_string(dir.path().join("throttle.prom")).unwrap();
    assert!(prom.contains("immich_throttle_emergency 1"), "{prom}");

    d.shutdown();
    assert_eq!(
        rig.s.freq().unwrap().scaling_max_khz,
        1_500_000,
        "the clock is restored"
    );
    assert_eq!(*rig.quota.0.borrow(), None, "the quota is removed");
    assert_eq!(
        fake.snapshot()["paused"],
        serde_json::json!(["library"]),
        "only the user's pause remains"
    );
    assert!(!cfg.throttle.state_file.exists());
}

#[test]
fn a_crash_is_undone_when_the_next_run_starts_or_by_restore() {
    let (dir, cfg, fake) = setup(true);
    let rig = Rig::new(&cfg, Ok(&fake));
    set_temp(dir.path(), 79_500);
    let mut d = Daemon::start(&cfg, rig.parts()).unwrap();
    ticks(&mut d, 3);
    assert!(!fake.snapshot()["paused"].as_array().unwrap().is_empty());
    // A crash: no shutdown; the state file says what to undo.
    drop(d);
    assert_eq!(rig.s.freq().unwrap().scaling_max_khz, 600_000);
    assert_eq!(
        *rig.quota.0.borrow(),
        Some(400_000),
        "the crashed run left a quota"
    );
    let saved = daemon::load_saved(&cfg.throttle.state_file);
    assert_eq!(saved.original_max_khz, Some(1_500_000));
    assert_eq!(
        saved.original_quota,
        Some(daemon::FoundQuota::Unlimited),
        "\"no quota\" survives the trip through the state file"
    );
    // What ExecStopPost runs, while the SoC is still hot: the clock stays
    // at its floor, and what it was before stays recorded.
    let (left, held) = daemon::restore_after_crash(&cfg, &rig.parts(), &saved);
    assert!(held);
    assert_eq!(
        rig.s.freq().unwrap().scaling_max_khz,
        600_000,
        "not back to full speed while hot"
    );
    assert_eq!(left.original_max_khz, Some(1_500_000));
    assert_eq!(*rig.quota.0.borrow(), None, "the quota is removed");
    assert_eq!(
        fake.snapshot()["paused"],
        serde_json::json!([]),
        "the queues are resumed"
    );
    // Once cooler than the release point, the same restore gives it all back.
    set_temp(dir.path(), 60_000);
    let (left, held) = daemon::restore_after_crash(&cfg, &rig.parts(), &left);
    assert!(!held);
    assert_eq!(left, daemon::Saved::default());
    assert_eq!(rig.s.freq().unwrap().scaling_max_khz, 1_500_000);
    assert_eq!(*rig.quota.0.borrow(), None, "the quota is removed again");
    assert_eq!(fake.snapshot()["paused"], serde_json::json!([]));
    // And a restart reconciles too.
    let mut d = Daemon::start(&cfg, rig.parts()).unwrap();
    ticks(&mut d, 3);
    drop(d);
    let _ = Daemon::start(&cfg, rig.parts()).unwrap();
    assert_eq!(
        fake.snapshot()["paused"],
        serde_json::json!([]),
        "the new run undid the crashed run's pauses"
    );
}

#[test]
fn without_an_api_key_it_still_controls_the_clock() {
    let (dir, cfg, _fake) = setup(false);
    let rig = Rig::new(&cfg, Err("no Immich API key"));
    let mut d = Daemon::start(&cfg, rig.parts()).unwrap();
    set_temp(dir.path(), 79_500);
    ticks(&mut d, 2);
    let status = status(&cfg);
    assert_eq!(status.clock_limit_mhz, 600);
    assert_eq!(status.immich, "no Immich API key");
    d.shutdown();
}

#[test]
fn a_missing_sensor_fails_safe() {
    let (dir, cfg, _fake) = setup(false);
    let rig = Rig::new(&cfg, Err("no key"));
    let mut d = Daemon::start(&cfg, rig.parts()).unwrap();
    std::fs::remove_file(dir.path().join("sys/class/thermal/thermal_zone0/temp")).unwrap();
    ticks(&mut d, 2);
    let status = status(&cfg);
    assert_eq!(status.mode, "sensor-failure");
    assert_eq!(status.clock_limit_mhz, 600);
    d.shutdown();
}

#[test]
fn the_user_switch_pauses_heavy_work() {
    let (dir, cfg, fake) = setup(true);
    let rig = Rig::new(&cfg, Ok(&fake));
    let mut d = Daemon::start(&cfg, rig.parts()).unwrap();
    std::fs::write(&cfg.throttle.pause_switch_file, "x").unwrap();
    ticks(&mut d, 2);
    let status = status(&cfg);
    assert_eq!(status.mode, "paused-by-user");
    assert!(
        status
            .paused_queues
            .contains(&"videoConversion".to_string())
    );
    let _ = dir;
    d.shutdown();
    assert_eq!(fake.snapshot()["paused"], serde_json::json!([]));
}

#[test]
fn a_hung_immich_never_holds_up_the_clock_or_the_watchdog() {
    let (dir, cfg, fake) = setup(true);
    let rig = Rig::new(&cfg, Ok(&fake));
    let mut d = Daemon::start(&cfg, rig.parts()).unwrap();
    ticks(&mut d, 3);
    assert_eq!(status(&cfg).immich, "ok");
    // Immich stops answering (each call then waits the client's 5 s), and
    // the SoC is at the emergency level at the same moment.
    fake.set_hang(Duration::from_secs(60));
    set_temp(dir.path(), 79_500);
    let watchdogs = |rig: &Rig| {
        rig.notes
            .0
            .borrow()
            .iter()
            .filter(|n| n.starts_with("WATCHDOG=1"))
            .count()
    };
    let before = watchdogs(&rig);
    let t0 = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    // Past the client's time limit, so the calls in flight have failed.
    while t0.elapsed() < Duration::from_secs(6) {
        let t = std::time::Instant::now();
        d.tick();
        slowest = slowest.max(t.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = status(&cfg);
    assert!(
        slowest < Duration::from_millis(300),
        "a tick waited on Immich: {slowest:?}"
    );
    assert_eq!(watchdogs(&rig) - before, n, "WATCHDOG=1 on every tick");
    assert_eq!(s.mode, "emergency", "{s:?}");
    assert_eq!(s.clock_limit_mhz, 600, "the clock went down regardless");
    assert_ne!(s.immich, "ok", "the status says Immich is not answering");
    // Immich answers again: the pauses the emergency wants are made.
    fake.set_hang(Duration::ZERO);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(15)
        && !fake.snapshot()["paused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "videoConversion")
    {
        ticks(&mut d, 1);
    }
    let paused = fake.snapshot()["paused"].clone();
    assert!(
        paused
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "videoConversion"),
        "{paused}"
    );
    assert_eq!(status(&cfg).immich, "ok");
    d.shutdown();
}
