//! Unit tests of the backup logic with stand-ins for the database and the
//! repository. The whole run, restore and drill against real rustic, real
//! PostgreSQL and a real drive are VM stories (tests/vm/stories/4*).

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::db::{Database, DbError, RowCounts};
use super::drill::{pick, snapshot_root};
use super::rustic::{Snapshot, Summary};
use super::*;
use crate::config::Config;

fn cfg_at(mount: &Path) -> Config {
    Config::from_str_with_defaults(
        &format!(
            "[drive]\nmount-point = \"{}\"\n[backup]\nskip-record-file = \"{}\"\nlock-file = \"{}\"\n",
            mount.display(),
            mount.join("sd/skip.json").display(),
            mount.join("run/backup.lock").display()
        ),
        Path::new("<test>"),
    )
    .unwrap()
}

struct FakeDb {
    fail: bool,
    dumped: RefCell<u32>,
}

impl Database for FakeDb {
    fn dump(&self, _db: &str, out: &File) -> Result<RowCounts, DbError> {
        *self.dumped.borrow_mut() += 1;
        let mut f = out;
        f.write_all(b"PGDMP fake")?;
        if self.fail {
            return Err(DbError::Failed {
                what: "pg_dump".into(),
                status: "exit 1".into(),
                stderr: "connection refused".into(),
            });
        }
        Ok([("public.asset".to_owned(), 3u64)].into())
    }
    fn restore(&self, _: &str, _: &Path) -> Result<(), DbError> {
        unreachable!()
    }
    fn row_counts(&self, _: &str) -> Result<RowCounts, DbError> {
        unreachable!()
    }
    fn exists(&self, _: &str) -> Result<bool, DbError> {
        unreachable!()
    }
    fn create(&self, _: &str) -> Result<(), DbError> {
        unreachable!()
    }
    fn drop(&self, _: &str) -> Result<(), DbError> {
        unreachable!()
    }
}

#[test]
fn a_dump_is_atomic_and_carries_its_row_counts() {
    let d = tempfile::tempdir().unwrap();
    let cfg = cfg_at(d.path());
    let p = Paths::new(&cfg);
    let db = FakeDb {
        fail: false,
        dumped: RefCell::new(0),
    };
    let counts = dump(&db, "immich", &p).unwrap();
    assert_eq!(counts["public.asset"], 3);
    assert_eq!(std::fs::read(&p.dump_file).unwrap(), b"PGDMP fake");
    assert_eq!(read_counts(&p.counts_file).unwrap(), counts);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&p.dump_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the dump is private");

    // A failed dump leaves the previous one in place, and no partial file.
    let bad = FakeDb {
        fail: true,
        dumped: RefCell::new(0),
    };
    assert!(dump(&bad, "immich", &p).is_err());
    assert_eq!(std::fs::read(&p.dump_file).unwrap(), b"PGDMP fake");
    let left: Vec<_> = std::fs::read_dir(&p.dumps)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn essential_only_really_changes_what_is_saved() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = cfg_at(d.path());
    let p = Paths::new(&cfg);
    for sub in ["upload", "library", "thumbs", "encoded-video"] {
        std::fs::create_dir_all(p.media.join(sub)).unwrap();
        std::fs::write(p.media.join(sub).join(".immich"), b"x").unwrap();
    }
    assert_eq!(p.sources(&cfg), vec![p.dumps.clone(), p.media.clone()]);
    cfg.backup.essential_only = true;
    let s = p.sources(&cfg);
    assert!(s.contains(&p.dumps));
    assert!(s.contains(&p.media.join("upload")) && s.contains(&p.media.join("library")));
    assert!(
        !s.iter()
            .any(|x| x.ends_with("thumbs") || x.ends_with("encoded-video"))
    );
    assert!(!s.contains(&p.media), "not the whole media folder");
    // Immich refuses to start on a restored library without them.
    for sub in ["thumbs", "encoded-video"] {
        assert!(
            s.contains(&p.media.join(sub).join(".immich")),
            "{sub}'s marker"
        );
    }
}

#[test]
fn a_run_while_the_drive_is_locked_is_a_recorded_skip() {
    struct NoRepo;
    impl rustic::Repo for NoRepo {
        fn backup(
            &self,
            _: &[PathBuf],
            _: &[String],
            _: rustic::OnProgress,
        ) -> Result<rustic::Backed, RepoError> {
            panic!("must not run")
        }
        fn forget(&self, _: Keep) -> Result<usize, RepoError> {
            panic!("must not run")
        }
        fn prune(&self) -> Result<(), RepoError> {
            panic!("must not run")
        }
        fn check(&self, _: Option<&str>) -> Result<(), RepoError> {
            panic!("must not run")
        }
        fn snapshots(&self) -> Result<Vec<Snapshot>, RepoError> {
            panic!("must not run")
        }
        fn restore(&self, _: &str, _: &Path, _: &Path, _: bool) -> Result<(), RepoError> {
            panic!("must not run")
        }
        fn init(&self) -> Result<(), RepoError> {
            panic!("must not run")
        }
    }
    struct Quiet;
    impl crate::lifecycle::Progress for Quiet {
        fn step(&self, _: &str) {}
        fn note(&self, _: &str) {}
    }
    struct NoPing;
    impl Pinger for NoPing {
        fn ping(&self, _: &str) -> Result<(), String> {
            panic!("a skip is not a run")
        }
    }
    let d = tempfile::tempdir().unwrap();
    // The temporary directory is not a mount point: the drive is "locked".
    let cfg = cfg_at(&d.path().join("mnt"));
    let db = FakeDb {
        fail: false,
        dumped: RefCell::new(0),
    };
    let systemd = crate::systemd::tests_support::NoSystemd;
    let env = Env {
        cfg: &cfg,
        repo: &NoRepo,
        db: &db,
        systemd: &systemd,
        pinger: &NoPing,
        progress: &Quiet,
    };
    assert!(run(&env).unwrap().is_none());
    let skip: state::Run =
        serde_json::from_str(&std::fs::read_to_string(&cfg.backup.skip_record_file).unwrap())
            .unwrap();
    assert_eq!(skip.outcome, Outcome::Skipped);
    assert_eq!(skip.message, "skipped: drive locked");
    assert_eq!(*db.dumped.borrow(), 0);
    assert!(
        !cfg.drive.mount_point.join("state").exists(),
        "nothing is written under the mount point"
    );
}

fn snap(id: &str, time: &str, paths: &[&str]) -> Snapshot {
    Snapshot {
        id: id.into(),
        time: time.into(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
        tags: vec![],
        label: "immich-appliance".into(),
        hostname: "pi".into(),
        summary: Some(Summary::default()),
    }
}

#[test]
fn snapshots_are_picked_by_time_or_id_prefix() {
    let s = vec![
        snap("aaaa1111", "2026-11-20T03:30:00Z", &[]),
        snap("bbbb2222", "2026-11-21T03:30:00Z", &[]),
        snap("bbbb3333", "2026-11-21T04:30:00Z", &[]),
    ];
    assert_eq!(pick(&s, None, "l").unwrap().id, "bbbb3333");
    assert_eq!(pick(&s, Some("latest"), "l").unwrap().id, "bbbb3333");
    assert_eq!(pick(&s, Some("aaaa"), "l").unwrap().id, "aaaa1111");
    assert!(
        pick(&s, Some("bbbb"), "l")
            .unwrap_err()
            .to_string()
            .contains("matches 2")
    );
    assert!(matches!(
        pick(&s, Some("cccc"), "l"),
        Err(BackupError::Repo(RepoError::UnknownSnapshot(_)))
    ));
    assert!(matches!(
        pick(&[], None, "l"),
        Err(BackupError::Repo(RepoError::NoSnapshot(_)))
    ));
}

#[test]
fn the_snapshot_root_is_found_from_its_dumps_folder() {
    let cfg = Config::defaults();
    let full = snap("a", "t", &["/srv/immich/dumps", "/srv/immich/immich"]);
    assert_eq!(
        snapshot_root(&full, &cfg).unwrap(),
        PathBuf::from("/srv/immich")
    );
    let essential = snap(
        "b",
        "t",
        &[
            "/mnt/old/immich/upload",
            "/mnt/old/dumps",
            "/mnt/old/immich/library",
        ],
    );
    assert_eq!(
        snapshot_root(&essential, &cfg).unwrap(),
        PathBuf::from("/mnt/old")
    );
    assert!(snapshot_root(&snap("c", "t", &["/home/x"]), &cfg).is_err());
}

#[test]
fn a_monitor_url_is_shown_without_its_token() {
    assert_eq!(
        super::redact_url("https://hc-ping.com/3f1c-secret-uuid/fail?x=1"),
        "https://hc-ping.com/…"
    );
    assert_eq!(
        super::redact_url("https://user:pw@ntfy.example/topic"),
        "https://ntfy.example/…"
    );
    assert_eq!(super::redact_url("no scheme/token"), "(a URL)");
    // A refused connection names the host, never the path.
    let e = super::HttpPinger::default()
        .ping("http://127.0.0.1:9/secret-token")
        .unwrap_err();
    assert!(
        !e.contains("secret-token") && e.contains("127.0.0.1"),
        "{e}"
    );
}

#[test]
fn forget_says_how_many_snapshots_it_removed() {
    // rustic 0.11's `forget --json`, cut to what is read.
    let out = r#"[{"group_key":{"hostname":"pi","label":"immich-appliance","paths":["/srv/immich/dumps"]},
        "items":[{"snapshot":{"id":"a"},"keep":true,"reasons":["daily"]},
                 {"snapshot":{"id":"b"},"keep":false,"reasons":[]},
                 {"snapshot":{"id":"c"},"keep":false,"reasons":[]}]},
        {"group_key":{},"items":[{"snapshot":{"id":"d"},"keep":false,"reasons":[]}]}]"#;
    assert_eq!(rustic::removed_by_forget(out).unwrap(), 3);
    assert_eq!(rustic::removed_by_forget("").unwrap(), 0);
    assert_eq!(rustic::removed_by_forget("[]").unwrap(), 0);
    assert!(rustic::removed_by_forget("not json").is_err());
}
