use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::backup::state::{Health, Run};
use crate::status::{BackupStatus, DriveStatus, ImmichStatus, SocStatus, SystemStatus};

/// Records what it is told; fails while `down` is set.
#[derive(Default)]
struct Recorder {
    name: &'static str,
    got: RefCell<Vec<(Option<Condition>, Kind)>>,
    down: RefCell<bool>,
    no_locked: bool,
}

impl Recorder {
    fn named(name: &'static str) -> Recorder {
        Recorder {
            name,
            ..Default::default()
        }
    }
    fn take(&self) -> Vec<(Option<Condition>, Kind)> {
        self.got.borrow_mut().drain(..).collect()
    }
}

impl Channel for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }
    fn carries(&self, c: Condition) -> bool {
        !(self.no_locked && c == Condition::Locked)
    }
    fn send(&self, m: &Message) -> Result<(), String> {
        if *self.down.borrow() {
            return Err("the server is down".into());
        }
        self.got.borrow_mut().push((m.condition, m.kind));
        Ok(())
    }
}

fn at(mins: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + mins * 60)
}

fn policy() -> Policy {
    Policy {
        repeat_after: Duration::from_secs(3600),
        hot_hold: Duration::from_secs(300),
    }
}

fn ctx() -> Context {
    Context {
        appliance: "photos".into(),
        page_url: Some("http://immich.local/".into()),
    }
}

fn only(c: Condition, r: Reading) -> BTreeMap<Condition, Reading> {
    let mut m: BTreeMap<Condition, Reading> = Condition::ALL
        .iter()
        .map(|c| (*c, Reading::Clear))
        .collect();
    m.insert(c, r);
    m
}

fn firing(c: Condition) -> BTreeMap<Condition, Reading> {
    only(c, Reading::Firing("DETAIL-TEXT".into()))
}

fn clear() -> BTreeMap<Condition, Reading> {
    Condition::ALL
        .iter()
        .map(|c| (*c, Reading::Clear))
        .collect()
}

#[test]
fn one_alert_until_it_clears_then_one_resolved() {
    let ntfy = Recorder::named("ntfy");
    let mut st = State::default();
    let chans: [&dyn Channel; 1] = [&ntfy];
    let r = check(
        &mut st,
        &firing(Condition::BackupFailed),
        at(0),
        policy(),
        &ctx(),
        &chans,
    );
    assert_eq!(r.sent, vec![("ntfy".into(), "backup-failed", Kind::Raised)]);
    for m in [5, 10, 100] {
        check(
            &mut st,
            &firing(Condition::BackupFailed),
            at(m),
            policy(),
            &ctx(),
            &chans,
        );
    }
    assert_eq!(
        ntfy.take(),
        vec![(Some(Condition::BackupFailed), Kind::Raised)]
    );
    check(&mut st, &clear(), at(105), policy(), &ctx(), &chans);
    check(&mut st, &clear(), at(110), policy(), &ctx(), &chans);
    assert_eq!(
        ntfy.take(),
        vec![(Some(Condition::BackupFailed), Kind::Resolved)]
    );
}

#[test]
fn a_condition_that_cannot_be_seen_is_neither_raised_nor_resolved() {
    let ntfy = Recorder::named("ntfy");
    let mut st = State::default();
    let chans: [&dyn Channel; 1] = [&ntfy];
    check(
        &mut st,
        &firing(Condition::BackupFailed),
        at(0),
        policy(),
        &ctx(),
        &chans,
    );
    ntfy.take();
    // The drive is locked: the backup record cannot be read.
    let unknown = only(Condition::BackupFailed, Reading::Unknown);
    check(&mut st, &unknown, at(5), policy(), &ctx(), &chans);
    assert_eq!(ntfy.take(), vec![]);
    assert!(st.conditions["backup-failed"].told["ntfy"].raised);
    check(&mut st, &clear(), at(10), policy(), &ctx(), &chans);
    assert_eq!(
        ntfy.take(),
        vec![(Some(Condition::BackupFailed), Kind::Resolved)]
    );
}

#[test]
fn a_flapping_condition_is_announced_at_most_once_an_hour() {
    let ntfy = Recorder::named("ntfy");
    let mut st = State::default();
    let chans: [&dyn Channel; 1] = [&ntfy];
    let c = Condition::DriveFull;
    // Up and down every five minutes for two hours.
    let mut raised = vec![];
    for step in 0..24u64 {
        let r = if step % 2 == 0 { firing(c) } else { clear() };
        check(&mut st, &r, at(step * 5), policy(), &ctx(), &chans);
        for (_, k) in ntfy.take() {
            if k == Kind::Raised {
                raised.push(step * 5);
            }
        }
    }
    assert_eq!(raised, vec![0, 60]);
}

#[test]
fn a_condition_held_back_as_flapping_is_announced_once_the_hour_is_over() {
    let ntfy = Recorder::named("ntfy");
    let mut st = State::default();
    let chans: [&dyn Channel; 1] = [&ntfy];
    let c = Condition::BackupStale;
    check(&mut st, &firing(c), at(0), policy(), &ctx(), &chans);
    check(&mut st, &clear(), at(5), policy(), &ctx(), &chans);
    let r = check(&mut st, &firing(c), at(10), policy(), &ctx(), &chans);
    assert_eq!(r.held_back, vec![("ntfy".into(), "backup-stale")]);
    check(&mut st, &firing(c), at(55), policy(), &ctx(), &chans);
    assert_eq!(
        ntfy.take(),
        vec![(Some(c), Kind::Raised), (Some(c), Kind::Resolved)]
    );
    check(&mut st, &firing(c), at(60), policy(), &ctx(), &chans);
    assert_eq!(ntfy.take(), vec![(Some(c), Kind::Raised)]);
}

#[test]
fn what_was_told_survives_a_restart_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.json");
    let chans_of = |r: &Recorder| -> Vec<(Option<Condition>, Kind)> { r.take() };
    {
        let ntfy = Recorder::named("ntfy");
        let mut st = load_state(&path);
        check(
            &mut st,
            &firing(Condition::Locked),
            at(0),
            policy(),
            &ctx(),
            &[&ntfy],
        );
        save_state(&path, &st).unwrap();
        assert_eq!(
            chans_of(&ntfy),
            vec![(Some(Condition::Locked), Kind::Raised)]
        );
    }
    let ntfy = Recorder::named("ntfy");
    let mut st = load_state(&path);
    check(
        &mut st,
        &firing(Condition::Locked),
        at(3),
        policy(),
        &ctx(),
        &[&ntfy],
    );
    assert_eq!(chans_of(&ntfy), vec![]);
    // It holds condition names and times, nothing else.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("DETAIL-TEXT") && text.contains("\"locked\""),
        "{text}"
    );
    assert!(
        !text.contains("backup-failed"),
        "conditions never raised are not kept: {text}"
    );
    // A state file that is not JSON starts afresh instead of stopping alerts.
    std::fs::write(&path, "{ not json").unwrap();
    assert_eq!(load_state(&path), State::default());
}

#[test]
fn a_clock_set_back_neither_silences_nor_delays_an_alert() {
    let ntfy = Recorder::named("ntfy");
    let mut st = State::default();
    let chans: [&dyn Channel; 1] = [&ntfy];
    let c = Condition::DriveFull;
    check(&mut st, &firing(c), at(600), policy(), &ctx(), &chans);
    check(&mut st, &clear(), at(605), policy(), &ctx(), &chans);
    ntfy.take();
    // The clock goes back ten hours (a Pi without a real-time clock, before
    // NTP): the last alert now lies in the future, and does not hold it back.
    check(&mut st, &firing(c), at(0), policy(), &ctx(), &chans);
    assert_eq!(ntfy.take(), vec![(Some(c), Kind::Raised)]);

    // The same for the hold time of a hot SoC.
    let mut st = State::default();
    check(
        &mut st,
        &firing(Condition::SocHot),
        at(600),
        policy(),
        &ctx(),
        &chans,
    );
    check(
        &mut st,
        &firing(Condition::SocHot),
        at(0),
        policy(),
        &ctx(),
        &chans,
    );
    assert_eq!(ntfy.take(), vec![]);
    check(
        &mut st,
        &firing(Condition::SocHot),
        at(5),
        policy(),
        &ctx(),
        &chans,
    );
    assert_eq!(ntfy.take(), vec![(Some(Condition::SocHot), Kind::Raised)]);
}

#[test]
fn a_hot_soc_is_an_alert_only_after_it_stays_hot() {
    let ntfy = Recorder::named("ntfy");
    let mut st = State::default();
    let chans: [&dyn Channel; 1] = [&ntfy];
    let hot = firing(Condition::SocHot);
    check(&mut st, &hot, at(0), policy(), &ctx(), &chans);
    check(&mut st, &hot, at(4), policy(), &ctx(), &chans);
    assert_eq!(ntfy.take(), vec![]);
    // A dip resets the count.
    check(&mut st, &clear(), at(5), policy(), &ctx(), &chans);
    check(&mut st, &hot, at(6), policy(), &ctx(), &chans);
    check(&mut st, &hot, at(10), policy(), &ctx(), &chans);
    assert_eq!(ntfy.take(), vec![]);
    check(&mut st, &hot, at(11), policy(), &ctx(), &chans);
    assert_eq!(ntfy.take(), vec![(Some(Condition::SocHot), Kind::Raised)]);
}

#[test]
fn a_failed_delivery_is_tried_again_and_the_other_channels_go_on() {
    let ntfy = Recorder::named("ntfy");
    let hook = Recorder::named("webhook");
    *hook.down.borrow_mut() = true;
    let mut st = State::default();
    let chans: [&dyn Channel; 2] = [&ntfy, &hook];
    let r = check(
        &mut st,
        &firing(Condition::CheckFailed),
        at(0),
        policy(),
        &ctx(),
        &chans,
    );
    assert_eq!(r.failed.len(), 1);
    assert_eq!(ntfy.take().len(), 1);
    check(
        &mut st,
        &firing(Condition::CheckFailed),
        at(5),
        policy(),
        &ctx(),
        &chans,
    );
    assert_eq!(hook.take(), vec![]);
    *hook.down.borrow_mut() = false;
    check(
        &mut st,
        &firing(Condition::CheckFailed),
        at(10),
        policy(),
        &ctx(),
        &chans,
    );
    assert_eq!(
        hook.take(),
        vec![(Some(Condition::CheckFailed), Kind::Raised)]
    );
    assert_eq!(ntfy.take(), vec![]);
}

#[test]
fn e_mail_never_carries_the_locked_alert_but_gets_the_others() {
    let email = Recorder {
        name: "email",
        no_locked: true,
        ..Default::default()
    };
    let mut st = State::default();
    let mut r = firing(Condition::Locked);
    r.insert(Condition::DriveGone, Reading::Firing("gone".into()));
    check(&mut st, &r, at(0), policy(), &ctx(), &[&email]);
    assert_eq!(
        email.take(),
        vec![(Some(Condition::DriveGone), Kind::Raised)]
    );
}

#[test]
fn messages_name_the_appliance_what_happened_what_to_do_and_the_page() {
    let m = ctx().message(
        Condition::Locked,
        Kind::Raised,
        "The drive is plugged in and locked.",
    );
    assert_eq!(m.title, "photos: the drive is locked and Immich is stopped");
    assert!(m.body.contains("plugged in and locked"), "{}", m.body);
    assert!(m.body.contains("sudo immich-server --start"), "{}", m.body);
    assert!(m.body.ends_with("Open http://immich.local/"), "{}", m.body);
    let r = ctx().message(Condition::Locked, Kind::Resolved, "");
    assert_eq!(
        r.title,
        "photos: resolved: the drive is unlocked and Immich runs again"
    );
    for c in Condition::ALL {
        let m = ctx().message(c, Kind::Raised, "x");
        assert!(m.title.len() < 80, "{}", m.title);
        assert!(m.body.contains('.'), "{c:?} has no advice");
    }
}

#[test]
fn a_failure_is_told_by_its_first_and_last_lines() {
    assert_eq!(
        gist(
            "rustic backup failed (exit status: 1):\n[WARN] retrying\n[WARN] retrying\n\nError: connection refused\n"
        ),
        "rustic backup failed (exit status: 1): … Error: connection refused"
    );
    assert_eq!(
        gist(
            "rustic backup failed:\n[WARN] Error at 1s, retrying\nerror: the backend\nBacktrace:\ndisabled backtrace (set RUST_BACKTRACE)\n"
        ),
        "rustic backup failed: … error: the backend"
    );
    assert_eq!(gist("one line"), "one line");
    assert_eq!(gist(""), "");
}

#[test]
fn scrub_keeps_tokens_and_passwords_in_urls_out_of_alerts() {
    let drive = std::path::Path::new("/srv/immich");
    let s = scrub(
        "rustic: cannot reach rest:https://user:hunter2@backup.example.org/secret-repo (connection refused)",
        drive,
    );
    assert!(!s.contains("hunter2") && !s.contains("secret-repo"), "{s}");
    assert!(s.contains("backup.example.org"), "{s}");
    assert_eq!(
        scrub(
            "error sending request for url (http://127.0.0.1:8000/config). Nothing was lost",
            drive
        ),
        "error sending request for url (http://127.0.0.1:8000/…). Nothing was lost"
    );
    let long = "x".repeat(1000);
    assert!(scrub(&long, drive).chars().count() <= 301);
    // A file's path names an album or a person: it stays out, spaces and all.
    assert_eq!(
        scrub(
            "[ERROR] writing /srv/immich/immich/library/admin/2024/Birthday Anna/IMG_1.jpg: No space left on device",
            drive
        ),
        "[ERROR] writing (a path on the drive): No space left on device"
    );
    assert_eq!(
        scrub("cannot open '/srv/immich/dumps/immich.pgdump'", drive),
        "cannot open '(a path on the drive)'"
    );
    assert_eq!(
        scrub("/srv/immich2/x is elsewhere", drive),
        "/srv/immich2/x is elsewhere"
    );
}

fn status(state: &'static str) -> Status {
    Status {
        schema_version: 1,
        state,
        needs_owner: false,
        summary: String::new(),
        drive: DriveStatus::default(),
        units: vec![],
        immich: ImmichStatus::default(),
        throttle: None,
        backup: BackupStatus {
            health: Health {
                colour: "unknown",
                reasons: vec![],
                last_success_age_hours: None,
            },
            last_backup: None,
            last_check: None,
            last_drill: None,
            last_skip: None,
            running: None,
            note: None,
        },
        soc: SocStatus::default(),
        system: SystemStatus::default(),
        urls: Default::default(),
        alerts: vec![],
        advice: vec![],
    }
}

fn failed_run(msg: &str) -> Run {
    Run {
        started: "2026-12-01T03:30:00Z".into(),
        finished: "2026-12-01T03:31:00Z".into(),
        outcome: Outcome::Failed,
        message: msg.into(),
        snapshot: None,
        files: None,
        bytes_added: None,
        duration_secs: 60.0,
    }
}

#[test]
fn observe_reads_each_condition_from_the_status() {
    let cfg = Config::defaults();
    // Locked after a power cut: the drive is remembered, nothing runs. The
    // backup record is on the locked drive, so it is unknown, not clear.
    let mut s = status("stopped");
    s.drive.remembered_uuid = Some("u".into());
    s.drive.present_at = Some("/dev/sda".into());
    let r = observe(&cfg, &s);
    assert!(matches!(r[&Condition::Locked], Reading::Firing(_)));
    assert_eq!(r[&Condition::BackupFailed], Reading::Unknown);
    assert_eq!(r[&Condition::DriveFull], Reading::Unknown);
    assert_eq!(r[&Condition::UnderVoltage], Reading::Unknown);

    assert_eq!(r[&Condition::SmartFailing], Reading::Unknown);
    s.drive.smart = Some(crate::smart::Health::Unavailable(
        "Unknown USB bridge".into(),
    ));
    assert_eq!(
        observe(&cfg, &s)[&Condition::SmartFailing],
        Reading::Unknown
    );
    s.drive.smart = Some(crate::smart::Health::Failing("FAILED!".into()));
    assert!(matches!(
        observe(&cfg, &s)[&Condition::SmartFailing],
        Reading::Firing(_)
    ));
    s.drive.smart = Some(crate::smart::Health::Passed);
    assert_eq!(observe(&cfg, &s)[&Condition::SmartFailing], Reading::Clear);

    // A Pi never set up is not "locked".
    let s = status("stopped");
    assert_eq!(observe(&cfg, &s)[&Condition::Locked], Reading::Clear);

    let mut s = status("running");
    s.drive.remembered_uuid = Some("u".into());
    s.drive.mounted = true;
    s.drive.used_percent = Some(93.4);
    s.drive.free_bytes = Some(1 << 30);
    s.backup.last_backup = Some(failed_run(
        "cannot reach rest:http://u:pw@10.0.0.2:8000/repo",
    ));
    s.backup.health.last_success_age_hours = Some(49.0);
    s.soc.temperature_c = Some(cfg.throttle.ceiling_celsius);
    s.soc.undervoltage = Some(false);
    s.soc.throttled_bits = Some(0x1);
    s.throttle = Some(serde_json::json!({"mode": "emergency", "reason": "82 °C"}));
    let r = observe(&cfg, &s);
    assert_eq!(r[&Condition::Locked], Reading::Clear);
    for c in [
        Condition::DriveFull,
        Condition::BackupFailed,
        Condition::BackupStale,
        Condition::SocHot,
        Condition::ThrottleEmergency,
        Condition::UnderVoltage,
    ] {
        assert!(matches!(r[&c], Reading::Firing(_)), "{c:?}: {:?}", r[&c]);
    }
    let Reading::Firing(text) = &r[&Condition::BackupFailed] else {
        unreachable!()
    };
    assert!(!text.contains("pw@") && !text.contains("/repo"), "{text}");
    assert_eq!(r[&Condition::CheckFailed], Reading::Clear);

    // Just under each threshold: clear.
    s.drive.used_percent = Some(89.9);
    s.backup.health.last_success_age_hours = Some(47.0);
    s.soc.temperature_c = Some(cfg.throttle.ceiling_celsius - 0.1);
    s.soc.throttled_bits = Some(0x10000);
    s.throttle = Some(serde_json::json!({"mode": "queues", "reason": ""}));
    let r = observe(&cfg, &s);
    for c in [
        Condition::DriveFull,
        Condition::BackupStale,
        Condition::SocHot,
        Condition::ThrottleEmergency,
        Condition::UnderVoltage,
    ] {
        assert_eq!(r[&c], Reading::Clear, "{c:?}");
    }

    let mut s = status("unplugged");
    s.drive.remembered_uuid = Some("u".into());
    let r = observe(&cfg, &s);
    assert!(matches!(r[&Condition::DriveGone], Reading::Firing(_)));
    assert_eq!(r[&Condition::Locked], Reading::Clear);
}

#[test]
fn backups_turned_off_raise_nothing_about_backups() {
    let mut cfg = Config::defaults();
    cfg.backup.enable = false;
    let mut s = status("running");
    s.drive.mounted = true;
    s.backup.last_backup = Some(failed_run("x"));
    let r = observe(&cfg, &s);
    assert_eq!(r[&Condition::BackupFailed], Reading::Clear);
    assert_eq!(r[&Condition::BackupStale], Reading::Clear);
}

fn alerts_cfg(extra: &str) -> Result<Config, crate::config::ConfigError> {
    Config::from_str_with_defaults(
        &format!("[alerts]\n{extra}"),
        std::path::Path::new("t.toml"),
    )
}

#[test]
fn alert_settings_are_checked_when_the_config_loads() {
    let bad = [
        (
            "ntfy-url = \"ntfy.sh/topic\"",
            "ntfy-url must start with https://",
        ),
        ("ntfy-url = \"https://ntfy.sh/\"", "a topic's URL"),
        ("ntfy-priority = \"loud\"", "ntfy-priority must be one of"),
        ("smtp-security = \"ssl\"", "smtp-security must be"),
        (
            "smtp-host = \"mail.example.org\"\nsmtp-security = \"plain\"\nemail-from = \"a@b.c\"\nemail-to = [\"d@e.f\"]",
            "allowed only to a relay on this machine",
        ),
        (
            "smtp-host = \"mail.example.org\"\nemail-to = [\"d@e.f\"]",
            "email-from must be",
        ),
        (
            "smtp-host = \"mail.example.org\"\nemail-from = \"a@b.c\"",
            "email-to must list",
        ),
        (
            "smtp-password-file = \"/etc/pw\"",
            "relative to drive.mount-point",
        ),
        ("timeout-secs = 0", "timeout-secs"),
    ];
    for (text, want) in bad {
        let e = alerts_cfg(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text}: {e}");
        assert!(e.contains("alerts."), "{e}");
    }
    for good in [
        "ntfy-url = \"https://ntfy.sh/immich-x7k2\"",
        "smtp-host = \"127.0.0.1\"\nsmtp-security = \"plain\"\nsmtp-port = 25\nemail-from = \"Immich <immich@localhost>\"\nemail-to = [\"root@localhost\"]",
        "smtp-host = \"smtp.example.org\"\nemail-from = \"a@b.c\"\nemail-to = [\"d@e.f\", \"g@h.i\"]",
    ] {
        alerts_cfg(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn channels_are_built_only_from_what_is_filled_in() {
    let (v, waiting) = channels::configured(&Config::defaults());
    assert!(v.is_empty() && waiting.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = alerts_cfg(
        "ntfy-url = \"https://ntfy.sh/t\"\nsmtp-host = \"smtp.example.org\"\nsmtp-user = \"me\"\nemail-from = \"a@b.c\"\nemail-to = [\"d@e.f\"]",
    )
    .unwrap();
    cfg.drive.mount_point = dir.path().to_owned();
    let (v, waiting) = channels::configured(&cfg);
    // status lists e-mail while it waits.
    assert_eq!(channels::set(&cfg.alerts), ["ntfy", "email"]);
    // The drive is "locked": no password, so e-mail waits and says why.
    assert_eq!(v.iter().map(|c| c.name()).collect::<Vec<_>>(), ["ntfy"]);
    assert!(waiting[0].contains("waits for the drive"), "{waiting:?}");
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/smtp-password"), "pw\n").unwrap();
    let (v, waiting) = channels::configured(&cfg);
    assert_eq!(
        v.iter().map(|c| c.name()).collect::<Vec<_>>(),
        ["ntfy", "email"]
    );
    assert!(waiting.is_empty());
}

/// The real ntfy and webhook channels against the stand-in of ntfy's
/// publish API: what a phone would show.
#[test]
fn the_ntfy_and_webhook_channels_speak_ntfys_publish_api() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ntfy.jsonl");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log2 = log.clone();
    std::thread::spawn(move || fake_immich::ntfy::serve_on(listener, &log2));
    let cfg = alerts_cfg(&format!(
        "name = \"Fotos à la maison\"\npage-url = \"http://immich.local/\"\nntfy-url = \"http://127.0.0.1:{port}/immich-x7\"\nwebhook-url = \"http://127.0.0.1:{port}/hook\""
    ))
    .unwrap();
    let (v, _) = channels::configured(&cfg);
    let ctx = Context::new(&cfg);
    for ch in &v {
        ch.send(&ctx.message(
            Condition::Locked,
            Kind::Raised,
            "The drive is plugged in and locked.",
        ))
        .unwrap();
    }
    v[0].send(&ctx.message(Condition::Locked, Kind::Resolved, ""))
        .unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let n = &lines[0];
    assert_eq!(n["topic"], "immich-x7");
    assert_eq!(
        n["title"],
        "Fotos à la maison: the drive is locked and Immich is stopped"
    );
    assert_eq!(n["priority"], 4);
    assert_eq!(n["tags"], serde_json::json!(["warning", "locked"]));
    assert_eq!(n["click"], "http://immich.local/");
    assert!(
        n["message"]
            .as_str()
            .unwrap()
            .contains("sudo immich-server --start")
    );
    let hook: serde_json::Value =
        serde_json::from_str(lines[1]["message"].as_str().unwrap()).unwrap();
    assert_eq!(lines[1]["topic"], "hook");
    assert_eq!(hook["condition"], "locked");
    assert_eq!(hook["event"], "raised");
    assert_eq!(hook["appliance"], "Fotos à la maison");
    assert_eq!(lines[2]["priority"], 3);
    assert_eq!(
        lines[2]["tags"],
        serde_json::json!(["white_check_mark", "locked"])
    );

    // A server that refuses says so, with its code, and no path.
    let cfg = alerts_cfg(&format!("ntfy-url = \"http://127.0.0.1:{port}/bad.topic\"")).unwrap();
    let (v, _) = channels::configured(&cfg);
    let e = v[0].send(&ctx.test_message()).unwrap_err();
    assert!(e.contains("HTTP 400") && !e.contains("bad.topic"), "{e}");
}
