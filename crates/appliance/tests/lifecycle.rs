//! `start` and `stop` against a fake machine: every seam is one `World`
//! that keeps the state a real appliance has (drive unlocked, mounted,
//! units active, the remembered drive) and a log of every call. Each test
//! table injects a failure (or a SIGHUP) at one step and checks the exit
//! code, the exact undo in reverse order, that nothing is left half-up,
//! and that the next `start` works.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appliance::blockdev::{BlockDevice, DeviceError, MountEntry, Signature, Usage};
use appliance::cipher::{Bench, Cipher, Speed};
use appliance::config::Config;
use appliance::drive::DriveError;
use appliance::exit::Exit;
use appliance::fs_tools::{Ext4State, Filesystem, FsError};
use appliance::host::{Holder, Space};
use appliance::immich::{Features, ImmichApi, ImmichError, Queue, Version};
use appliance::init;
use appliance::layout::{LayoutError, LayoutReport};
use appliance::lifecycle::{self, Parts, Progress, StartOptions};
use appliance::luks::{Kdf, Luks, LuksError, Mapping};
use appliance::machine::Machine;
use appliance::net::{AddressSource, TailscaleSelf};
use appliance::secret::{Passphrase, Source};
use appliance::systemd::{MountSpec, Systemd, UnitError, UnitState};

const DISK: &str = "/dev/sdz";
const UUID: &str = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";
/// The mount unit's name in the log: its real name follows the mount
/// point, which is in each test's own folder.
const MOUNT: &str = "the-mount.mount";
const TOTAL: u64 = 1 << 40;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    open: bool,
    mounted: bool,
    active: BTreeSet<String>,
    /// The LUKS header carries the appliance's mark (init's last step).
    marked: bool,
    /// systemd's mount job still runs (its client was killed): the mount
    /// appears once the job ends.
    mount_job: bool,
}

/// The whole fake appliance. `fail` names the one call that fails, as it
/// appears in the log ("open", "mount", "start immich-server.service", ...).
struct World {
    cfg: Config,
    st: RefCell<State>,
    log: RefCell<Vec<String>>,
    fail: Option<String>,
    /// The call during which a SIGHUP arrives (a dropped SSH session).
    hangup: Option<String>,
    /// The drive's free space.
    free_bytes: std::cell::Cell<u64>,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl World {
    fn new(name: &str, fail: Option<&str>) -> World {
        let dir = std::env::temp_dir().join(format!(
            "lifecycle-test-{}-{name}-{}",
            std::process::id(),
            fail.unwrap_or("none").replace([' ', '/'], "_")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = Config::defaults();
        cfg.drive.mount_point = dir.join("srv/immich");
        cfg.drive.remembered_drive_file = dir.join("drive.toml");
        cfg.backup.lock_file = dir.join("backup.lock");
        cfg.immich.ping_timeout_secs = 0;
        std::fs::write(dir.join("passphrase"), "a test passphrase\n").unwrap();
        World {
            cfg,
            st: RefCell::default(),
            log: RefCell::default(),
            fail: fail.map(str::to_owned),
            hangup: None,
            free_bytes: std::cell::Cell::new(TOTAL / 2),
            _dir: TempDir(dir),
        }
    }

    fn passphrase(&self) -> Source {
        Source::File(self._dir.0.join("passphrase"))
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            luks: self,
            systemd: self,
            fs: self,
            immich: self,
            addresses: self,
            machine: self,
        }
    }

    /// Logs `call`; true when it is the one that fails.
    fn call(&self, call: String) -> bool {
        let fails = self.fail.as_deref() == Some(call.as_str());
        if self.hangup.as_deref() == Some(call.as_str()) {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        }
        self.log.borrow_mut().push(call);
        fails
    }

    fn unit_label<'a>(&self, unit: &'a str) -> &'a str {
        if unit == self.cfg.mount_unit() {
            MOUNT
        } else {
            unit
        }
    }

    // As lifecycle::start returns it.
    #[allow(clippy::result_large_err)]
    fn start(&self) -> Result<lifecycle::StartReport, lifecycle::Failure> {
        let opts = StartOptions {
            device: Some(DISK.into()),
            no_decryption: false,
            passphrase: self.passphrase(),
            start_units: true,
        };
        lifecycle::start(&self.cfg, &self.parts(), &opts, &Quiet)
    }

    fn init(&self) -> Result<init::InitReport, init::InitError> {
        let survey = init::Survey {
            device: self.resolve(Path::new(DISK)).unwrap(),
            contents: vec![],
            appliance_drive: None,
        };
        let opts = init::InitOptions {
            device: DISK.into(),
            yes: true,
            force: true,
            passphrase: self.passphrase(),
            kdf: Kdf::default(),
            cipher: Some(appliance::cipher::KNOWN[0]),
        };
        init::prepare(&self.cfg, &self.parts(), &survey, &opts, &Quiet)
    }

    #[allow(clippy::result_large_err)]
    fn stop(&self) -> Result<lifecycle::StopReport, lifecycle::Failure> {
        lifecycle::stop(&self.cfg, &self.parts(), &Quiet)
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.log.borrow_mut())
    }

    fn mapper(&self) -> PathBuf {
        self.cfg.mapper_path()
    }

    fn job_failed(unit: &str, verb: &'static str) -> UnitError {
        UnitError::JobFailed {
            unit: unit.into(),
            verb,
            result: "failed".into(),
            journal: String::new(),
        }
    }
}

struct Quiet;
impl Progress for Quiet {
    fn step(&self, _: &str) {}
    fn note(&self, _: &str) {}
}

impl Bench for World {
    fn measure(&self, _: &Cipher) -> Result<Speed, String> {
        Err("no benchmark in the fake".into())
    }
}

impl Luks for World {
    fn uuid(&self, _: &Path) -> Result<Option<String>, LuksError> {
        Ok(Some(UUID.into()))
    }
    fn format(&self, d: &Path, _: &Passphrase, _: Kdf, _: &Cipher) -> Result<String, LuksError> {
        if self.call("format".into()) {
            return Err(crypt_error("format", d));
        }
        self.st.borrow_mut().marked = false;
        Ok(UUID.into())
    }
    fn cipher(&self, _: &Path) -> Result<String, LuksError> {
        Ok("aes-xts-plain64".into())
    }
    fn add_key(&self, d: &Path, _: &Passphrase, _: &Passphrase, _: Kdf) -> Result<(), LuksError> {
        if self.call("add the recovery key".into()) {
            return Err(crypt_error("add a key to", d));
        }
        Ok(())
    }
    fn mark(&self, d: &Path, subsystem: &str) -> Result<(), LuksError> {
        let what = if subsystem.is_empty() {
            "unmark"
        } else {
            "mark"
        };
        if self.call(what.into()) {
            return Err(crypt_error("mark", d));
        }
        self.st.borrow_mut().marked = !subsystem.is_empty();
        Ok(())
    }
    fn open(&self, device: &Path, _: &str, _: &Passphrase) -> Result<(), LuksError> {
        if self.call("open".into()) {
            return Err(LuksError::WrongPassphrase(device.into()));
        }
        self.st.borrow_mut().open = true;
        Ok(())
    }
    fn close(&self, name: &str) -> Result<(), LuksError> {
        let busy = self.st.borrow().mounted || self.st.borrow().mount_job;
        if self.call("close".into()) || busy {
            return Err(LuksError::Busy(name.into()));
        }
        self.st.borrow_mut().open = false;
        Ok(())
    }
    fn mapping(&self, name: &str) -> Result<Option<Mapping>, LuksError> {
        Ok(self.st.borrow().open.then(|| Mapping {
            name: name.into(),
            device: DISK.into(),
        }))
    }
}

impl Systemd for World {
    fn start(&self, unit: &str, _: Duration) -> Result<(), UnitError> {
        if self.call(format!("start {}", self.unit_label(unit))) {
            return Err(World::job_failed(unit, "start"));
        }
        self.st.borrow_mut().active.insert(unit.into());
        Ok(())
    }
    fn stop(&self, unit: &str, _: Duration) -> Result<(), UnitError> {
        if self.call(format!("stop {}", self.unit_label(unit))) {
            return Err(World::job_failed(unit, "stop"));
        }
        let mut st = self.st.borrow_mut();
        if unit == self.cfg.mount_unit() {
            st.mounted = false;
            st.mount_job = false;
        } else {
            st.active.remove(unit);
        }
        Ok(())
    }
    fn state(&self, unit: &str) -> Result<UnitState, UnitError> {
        let st = self.st.borrow();
        let on = st.active.contains(unit) || (unit == self.cfg.mount_unit() && st.mounted);
        if unit == self.cfg.mount_unit() && st.mount_job {
            return Ok(UnitState {
                load: "loaded".into(),
                active: "activating".into(),
                sub: "mounting".into(),
            });
        }
        Ok(UnitState {
            load: "loaded".into(),
            active: if on { "active" } else { "inactive" }.into(),
            sub: if on { "running" } else { "dead" }.into(),
        })
    }
    fn reset_failed(&self, unit: &str) -> Result<(), UnitError> {
        if self.call(format!("reset-failed {}", self.unit_label(unit))) {
            return Err(UnitError::Bus("the fake bus is down".into()));
        }
        Ok(())
    }
    fn mount(&self, spec: &MountSpec, _: Duration) -> Result<(), UnitError> {
        assert_eq!(spec.r#where, self.cfg.drive.mount_point);
        // The worst case: the job times out after the mount is made.
        self.st.borrow_mut().mounted = true;
        if self.call("mount".into()) {
            return Err(UnitError::Timeout {
                unit: self.cfg.mount_unit(),
                verb: "start",
                secs: 120,
                journal: String::new(),
            });
        }
        Ok(())
    }
    fn journal_tail(&self, _: &str, _: usize) -> String {
        String::new()
    }
}

impl Filesystem for World {
    fn state(&self, device: &Path) -> Result<Ext4State, FsError> {
        if self.call("read superblock".into()) {
            return Err(FsError::NotExt4(device.display().to_string()));
        }
        // Not cleanly unmounted, so that the check is one of the steps.
        Ok(Ext4State {
            clean: false,
            needs_recovery: true,
            has_errors: false,
            label: "immich".into(),
        })
    }
    fn check(&self, device: &Path) -> Result<String, FsError> {
        if self.call("fsck".into()) {
            return Err(FsError::NotExt4(device.display().to_string()));
        }
        Ok("clean".into())
    }
    fn make(&self, device: &Path, _: &str) -> Result<(), FsError> {
        if self.call("mkfs".into()) {
            return Err(FsError::NotExt4(device.display().to_string()));
        }
        Ok(())
    }
}

impl ImmichApi for World {
    fn ping(&self) -> Result<(), ImmichError> {
        if self.call("ping".into()) {
            return Err(ImmichError::Unreachable {
                url: self.cfg.immich.url.clone(),
                message: "connection refused".into(),
            });
        }
        Ok(())
    }
    fn version(&self) -> Result<Version, ImmichError> {
        unreachable!()
    }
    fn features(&self) -> Result<Features, ImmichError> {
        unreachable!()
    }
    fn queues(&self) -> Result<Vec<Queue>, ImmichError> {
        unreachable!()
    }
    fn set_paused(&self, _: &str, _: bool) -> Result<(), ImmichError> {
        unreachable!()
    }
    fn system_config(&self) -> Result<serde_json::Value, ImmichError> {
        unreachable!()
    }
    fn put_system_config(&self, _: &serde_json::Value) -> Result<(), ImmichError> {
        unreachable!()
    }
}

impl AddressSource for World {
    fn interface_addresses(&self) -> Vec<(String, std::net::IpAddr)> {
        vec![]
    }
    fn tailscale(&self) -> Result<Option<TailscaleSelf>, String> {
        Ok(None)
    }
}

impl Machine for World {
    fn mounts(&self) -> Vec<MountEntry> {
        if !self.st.borrow().mounted {
            return vec![];
        }
        vec![MountEntry {
            major: 254,
            minor: 0,
            mount_point: self.cfg.drive.mount_point.clone(),
            fstype: "ext4".into(),
            source: self.mapper().display().to_string(),
            options: "rw,nodev,nosuid,noatime".into(),
        }]
    }
    fn resolve(&self, given: &Path) -> Result<BlockDevice, DeviceError> {
        assert_eq!(given, Path::new(DISK));
        Ok(BlockDevice {
            given: given.into(),
            path: DISK.into(),
            name: "sdz".into(),
            major: 8,
            minor: 240,
            disk: "sdz".into(),
            is_partition: false,
            size_bytes: 1 << 40,
            model: Some("Test Drive".into()),
            vendor: None,
            read_only: false,
        })
    }
    fn probe(&self, _: &Path) -> Result<Signature, DeviceError> {
        Ok(Signature::Luks {
            version: 2,
            uuid: UUID.into(),
            subsystem: self.cfg.drive.luks_subsystem.clone(),
        })
    }
    fn usage(&self, _: &BlockDevice, _: &[MountEntry]) -> Usage {
        Usage::default()
    }
    fn choose_drive(
        &self,
        given: Option<&Path>,
        _: &Path,
        _: &str,
    ) -> Result<BlockDevice, DriveError> {
        if self.call("find the drive".into()) {
            return Err(DriveError::NotPresent {
                uuid: UUID.into(),
                prepared: "in a test".into(),
                disks: String::new(),
            });
        }
        Ok(self
            .resolve(given.expect("the tests name the drive"))
            .unwrap())
    }
    fn device_number(&self, node: &Path) -> Option<(u32, u32)> {
        if node == self.mapper() {
            self.st.borrow().open.then_some((254, 0))
        } else {
            Some((8, 240))
        }
    }
    fn space(&self, _: &Path) -> std::io::Result<Space> {
        Ok(Space {
            free_bytes: self.free_bytes.get(),
            total_bytes: TOTAL,
        })
    }
    fn holders(&self, _: &Path) -> Vec<Holder> {
        vec![]
    }
    fn set_immutable(&self, _: &Path, _: bool) -> std::io::Result<()> {
        Ok(())
    }
    fn ensure_layout(&self, cfg: &Config) -> Result<LayoutReport, LayoutError> {
        if self.call("verify layout".into()) {
            return Err(LayoutError::NotOurDrive {
                mount: cfg.drive.mount_point.clone(),
                marker: cfg.layout.marker.clone(),
            });
        }
        Ok(LayoutReport::default())
    }
    fn create_layout(&self, cfg: &Config) -> Result<LayoutReport, LayoutError> {
        if self.call("create layout".into()) {
            return Err(LayoutError::Other(format!(
                "cannot create {}",
                cfg.drive.mount_point.display()
            )));
        }
        Ok(LayoutReport::default())
    }
}

fn crypt_error(action: &'static str, d: &Path) -> LuksError {
    LuksError::Crypt {
        action,
        what: d.display().to_string(),
        message: "the fake says no".into(),
    }
}

/// The calls a clean start makes, in order.
fn happy_start_calls() -> Vec<String> {
    let w = World::new("happy", None);
    w.start().expect("a clean start succeeds");
    w.take_log()
}

#[test]
fn a_clean_start_goes_in_order_and_a_second_is_a_no_op() {
    let w = World::new("clean", None);
    let r = w.start().expect("a clean start succeeds");
    let log = w.take_log();
    let cfg = &w.cfg;
    // Unlock, clear what an earlier failure left, check, mount, verify,
    // the stack in its order, Immich's answer, then the extras.
    let mut want: Vec<String> = vec!["find the drive".into(), "open".into()];
    for u in cfg
        .units
        .stack
        .iter()
        .chain(&cfg.units.after_start)
        .chain([&cfg.units.postgresql_server, &cfg.mount_unit()])
    {
        want.push(format!("reset-failed {}", w.unit_label(u)));
    }
    want.extend(["read superblock", "fsck", "mount", "verify layout"].map(String::from));
    want.extend(cfg.units.stack.iter().map(|u| format!("start {u}")));
    want.push("ping".into());
    want.extend(cfg.units.after_start.iter().map(|u| format!("start {u}")));
    assert_eq!(log, want);
    assert_eq!(r.started_units, cfg.units.stack);
    assert!(!r.already_running);
    let st = w.st.borrow().clone();
    assert!(st.open && st.mounted);
    // The drive given on the command line is remembered by its UUID.
    let remembered = std::fs::read_to_string(&cfg.drive.remembered_drive_file).unwrap();
    assert!(remembered.contains(UUID), "{remembered}");

    let again = w.start().expect("a second start succeeds");
    assert!(again.already_running);
    assert!(w.take_log().is_empty(), "a second start changes nothing");
}

/// What a failure at each step must leave: the exit code, the undo in
/// exact reverse order, and the machine as it was.
#[test]
fn a_failure_at_every_step_of_start_is_undone_in_reverse() {
    let steps = happy_start_calls();
    assert!(steps.len() > 10, "{steps:?}");
    for (i, step) in steps.iter().enumerate() {
        let w = World::new("fail", Some(step));
        let cfg = &w.cfg;
        let after_start = cfg
            .units
            .after_start
            .iter()
            .any(|u| *step == format!("start {u}"));
        let r = w.start();
        let log = w.take_log();
        if after_start {
            // An extra that fails is a warning; the start stands.
            let r = r.unwrap_or_else(|f| panic!("{step}: {f}"));
            assert!(
                r.warnings.iter().any(|x| x.contains("did not start")),
                "{step}: {:?}",
                r.warnings
            );
            continue;
        }
        let f = match r {
            Ok(_) => panic!("a failing `{step}` must fail the start"),
            Err(f) => f,
        };
        let want_exit = match step.as_str() {
            "open" => Exit::WrongPassphrase,
            "find the drive" | "verify layout" => Exit::Drive,
            "ping" => Exit::Immich,
            s if s.starts_with("start ") || s == "mount" || s.starts_with("reset-failed ") => {
                Exit::Unit
            }
            _ => Exit::Failure,
        };
        assert_eq!(f.exit(), want_exit, "{step}: {f}");
        assert!(f.undo_failed.is_empty(), "{step}: {:?}", f.undo_failed);

        // The calls up to the failing one are the clean start's; after it
        // come only the undo steps, the reverse of what was done.
        assert_eq!(&log[..=i], &steps[..=i], "{step}");
        let done = &steps[..=i];
        let mut undo: Vec<String> = done
            .iter()
            .rev()
            .filter_map(|c| {
                // A unit or mount that failed to come up is stopped too: it
                // may be half-up.
                if let Some(u) = c.strip_prefix("start ") {
                    Some(format!("stop {u}"))
                } else if c == "mount" {
                    Some(format!("stop {MOUNT}"))
                } else {
                    None
                }
            })
            .collect();
        if done.iter().any(|c| c == "open") && step != "open" {
            undo.push("close".into());
        }
        assert_eq!(&log[i + 1..], &undo[..], "{step}: the undo");

        // Nothing is left half-up, and the drive given is not remembered.
        assert_eq!(*w.st.borrow(), State::default(), "{step}");
        assert!(
            !cfg.drive.remembered_drive_file.exists(),
            "{step}: still remembered"
        );
        let text = f.to_string();
        if !undo.is_empty() {
            assert!(text.contains("Rolled back: "), "{step}: {text}");
        }

        // And the next start, with nothing failing, works.
        let next = World { fail: None, ..w };
        next.start()
            .unwrap_or_else(|e| panic!("start after a failing `{step}`: {e}"));
        assert!(next.st.borrow().mounted);
    }
}

#[test]
fn stop_undoes_start_in_reverse_and_is_idempotent() {
    let w = World::new("stop", None);
    w.start().unwrap();
    w.take_log();
    let r = w.stop().expect("stop succeeds");
    let log = w.take_log();
    let cfg = &w.cfg;
    let stops: Vec<String> = log
        .iter()
        .filter(|c| c.starts_with("stop "))
        .cloned()
        .collect();
    let mut want: Vec<String> = cfg
        .units
        .after_start
        .iter()
        .rev()
        .map(|u| format!("stop {u}"))
        .collect();
    want.extend(cfg.units.stack.iter().rev().map(|u| format!("stop {u}")));
    want.push(format!("stop {MOUNT}"));
    assert_eq!(stops, want);
    assert_eq!(log.last().map(String::as_str), Some("close"));
    assert!(r.unmounted && r.locked);
    assert_eq!(*w.st.borrow(), State::default());

    let again = w.stop().expect("a second stop succeeds");
    assert!(again.already_stopped);
    assert!(w.take_log().is_empty());
}

/// A stop that fails keeps the drive unlocked under what still runs, and
/// says why; the next stop finishes the job.
#[test]
fn a_failure_at_every_step_of_stop_leaves_a_state_the_next_stop_repairs() {
    let steps = {
        let w = World::new("stop-happy", None);
        w.start().unwrap();
        w.take_log();
        w.stop().unwrap();
        w.take_log()
    };
    for step in &steps {
        let w = World::new("stop-fail", None);
        w.start().unwrap();
        w.take_log();
        let w = World {
            fail: Some(step.clone()),
            ..w
        };
        let f = match w.stop() {
            Ok(_) => panic!("a failing `{step}` must fail the stop"),
            Err(f) => f,
        };
        // A mount that does not go away, like a lock refused, is "busy".
        let want_exit = if step == "close" || *step == format!("stop {MOUNT}") {
            Exit::Busy
        } else {
            Exit::Unit
        };
        assert_eq!(f.exit(), want_exit, "{step}: {f}");
        // Nothing after the failing step ran: no unmount under a running
        // unit, no lock under a mount.
        let log = w.take_log();
        assert_eq!(log.last(), Some(step), "{step}: {log:?}");
        let st = w.st.borrow().clone();
        if st.mounted {
            assert!(st.open, "{step}: mounted but locked");
        }
        let next = World { fail: None, ..w };
        next.stop()
            .unwrap_or_else(|e| panic!("stop after a failing `{step}`: {e}"));
        assert_eq!(*next.st.borrow(), State::default(), "{step}");
    }
}

/// A SIGHUP (the SSH session of a phone dropping) during each step of
/// `start`. Each case runs in a child process of this test binary, since a
/// received signal stays recorded for the rest of the process.
#[test]
fn a_hangup_at_every_step_of_start_is_rolled_back() {
    const CHILD: &str = "LIFECYCLE_TEST_HANGUP_AT";
    if let Ok(step) = std::env::var(CHILD) {
        return hangup_during(&step);
    }
    use std::os::unix::process::ExitStatusExt;
    for step in happy_start_calls() {
        let (status, said) = in_child(
            "a_hangup_at_every_step_of_start_is_rolled_back",
            CHILD,
            &step,
        );
        if step == "find the drive" {
            // Before the unlock nothing has changed, and the signal keeps
            // its default action: the run ends there.
            assert_eq!(status.signal(), Some(libc::SIGHUP), "{step}: {said}");
        } else {
            assert!(status.success(), "{step}: {said}");
        }
    }
}

/// Runs one test of this binary again in a child process with `var=value`
/// set; returns how it ended and what it printed.
fn in_child(test: &str, var: &str, value: &str) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(var, value)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, said)
}

fn hangup_during(step: &str) {
    let mut w = World::new("hangup", None);
    w.hangup = Some(step.to_owned());
    let r = w.start();
    let cfg = &w.cfg;
    let last = |u: &String| step == format!("start {u}");
    if step == "ping" || cfg.units.after_start.iter().any(last) {
        // Everything was up when the signal came: the start stands.
        r.unwrap_or_else(|f| panic!("{step}: {f}"));
        assert!(w.st.borrow().mounted);
        return;
    }
    let f = match r {
        Ok(_) => panic!("a hangup during `{step}` must stop the start"),
        Err(f) => f,
    };
    assert_eq!(f.exit(), Exit::Interrupted, "{step}: {f}");
    assert!(f.undo_failed.is_empty(), "{step}: {:?}", f.undo_failed);
    assert_eq!(*w.st.borrow(), State::default(), "{step}: left half-up");
    assert!(!cfg.drive.remembered_drive_file.exists(), "{step}");
}

/// `status` reads the same machine: running with room, then a drive 95 %
/// full is named with what to do, as `start` warns of it too.
#[test]
fn status_and_start_warn_of_a_nearly_full_drive() {
    let w = World::new("full", None);
    w.start().unwrap();
    let s = appliance::status::gather(&w.cfg, &w.parts());
    assert!(s.drive.unlocked && s.drive.mounted, "{s:?}");
    assert_eq!(s.drive.used_percent.map(f64::round), Some(50.0));
    assert!(
        !s.advice.iter().any(|a| a.contains("full")),
        "{:?}",
        s.advice
    );
    w.stop().unwrap();

    w.free_bytes.set(TOTAL / 20);
    let r = w.start().unwrap();
    assert!(
        r.warnings.iter().any(|x| x.contains("95")),
        "{:?}",
        r.warnings
    );
    let s = appliance::status::gather(&w.cfg, &w.parts());
    assert!(s.advice.iter().any(|a| a.contains("95")), "{:?}", s.advice);
    assert!(s.needs_owner, "a nearly full drive needs the owner");
}

/// The calls a clean init makes, in order.
fn happy_init_calls() -> Vec<String> {
    let w = World::new("init-happy", None);
    w.init().expect("a clean init succeeds");
    w.take_log()
}

#[test]
fn a_clean_init_leaves_the_drive_marked_locked_and_remembered() {
    let w = World::new("init", None);
    let r = w.init().expect("a clean init succeeds");
    let log = w.take_log();
    let want = [
        "format",
        "add the recovery key",
        "open",
        "mkfs",
        "mount",
        "create layout",
        "mark",
        &format!("stop {MOUNT}"),
        "close",
    ];
    assert_eq!(log, want);
    assert_eq!(r.luks_uuid, UUID);
    let st = w.st.borrow().clone();
    assert!(st.marked && !st.open && !st.mounted, "{st:?}");
    let remembered = std::fs::read_to_string(&w.cfg.drive.remembered_drive_file).unwrap();
    assert!(remembered.contains(UUID), "{remembered}");
    let pw = w.cfg.drive.mount_point.join(&w.cfg.backup.password_file);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// A failure at any step of init leaves the drive locked, unmounted,
/// unmarked (so never offered as an appliance drive) and not remembered,
/// and the next init works. The drive is erased from the first step on, as
/// init warned; there is nothing on it to put back.
#[test]
fn a_failure_at_every_step_of_init_leaves_no_half_drive() {
    for step in happy_init_calls() {
        let w = World::new("init-fail", Some(&step));
        let e = match w.init() {
            Ok(_) => panic!("a failing `{step}` must fail init"),
            Err(e) => e,
        };
        assert_eq!(e.exit(), Exit::Failure, "{step}: {e}");
        let st = w.st.borrow().clone();
        assert!(
            !w.cfg.drive.remembered_drive_file.exists(),
            "{step}: remembered"
        );
        match step.as_str() {
            // A drive that will not unmount stays unlocked under the mount,
            // and init says so.
            s if s == format!("stop {MOUNT}") => {
                assert!(st.mounted && st.open, "{step}: {st:?}");
                assert!(e.to_string().contains("unmounting"), "{step}: {e}");
                continue;
            }
            // A lock refused leaves it unlocked, said, and not remembered;
            // the drive was complete (marked) by then.
            "close" => {
                assert!(st.open && st.marked && !st.mounted, "{step}: {st:?}");
                assert!(e.to_string().contains("locking"), "{step}: {e}");
                continue;
            }
            // Marked last: a drive init did not finish is not an
            // appliance drive.
            _ => assert!(!st.marked, "{step}: marked"),
        }
        assert!(!st.open && !st.mounted, "{step}: {st:?}");
        let next = World { fail: None, ..w };
        next.init()
            .unwrap_or_else(|e| panic!("init after a failing `{step}`: {e}"));
    }
}

/// A SIGHUP during each step of init, each in a child process as for start.
#[test]
fn a_hangup_at_every_step_of_init_stops_it_cleanly() {
    const CHILD: &str = "LIFECYCLE_TEST_INIT_HANGUP_AT";
    if let Ok(step) = std::env::var(CHILD) {
        let mut w = World::new("init-hangup", None);
        w.hangup = Some(step.clone());
        let r = w.init();
        let st = w.st.borrow().clone();
        assert!(!st.open && !st.mounted, "{step}: {st:?}");
        // Even after the mark: the kit would go to a dead terminal, so the
        // mark comes off again and init is to be run again.
        let e = match r {
            Ok(_) => panic!("a hangup during `{step}` must stop init"),
            Err(e) => e,
        };
        assert_eq!(e.exit(), Exit::Interrupted, "{step}: {e}");
        assert!(
            !st.marked && !w.cfg.drive.remembered_drive_file.exists(),
            "{step}"
        );
        return;
    }
    for step in happy_init_calls() {
        let (status, said) = in_child(
            "a_hangup_at_every_step_of_init_stops_it_cleanly",
            CHILD,
            &step,
        );
        assert!(status.success(), "{step}: {said}");
    }
}

/// `start` killed (-9) while systemd mounts: the mount job goes on and the
/// mount appears later. `stop` must stop the mount unit before it locks,
/// not decide from a mount table read before the mount appeared.
#[test]
fn stop_after_a_start_killed_while_mounting_unmounts_first() {
    let w = World::new("killed-mounting", None);
    {
        let mut st = w.st.borrow_mut();
        st.open = true;
        st.mount_job = true;
    }
    let r = w.stop().unwrap_or_else(|f| panic!("{f}"));
    let log = w.take_log();
    assert_eq!(log, [format!("stop {MOUNT}"), "close".into()], "{log:?}");
    assert!(r.unmounted && r.locked);
    assert_eq!(*w.st.borrow(), State::default());
}
