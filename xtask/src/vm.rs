//! The project's VM test harness: a throw-away Debian 12 guest under qemu
//! (TCG) with real systemd, D-Bus, dm-crypt, PostgreSQL and Redis, one or
//! more blank "external drives" on virtio or USB, and the freshly built
//! binaries shared in read-only.
//!
//! A story (tests/vm/stories/*.sh) runs as root in the guest; its exit
//! status comes back as the run's. A story can ask the host to act on the
//! VM (unplug a drive) by writing a request file into the control share; the
//! host answers through QMP.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::util;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    Usb,
}

impl Bus {
    pub fn parse(s: &str) -> Result<Bus> {
        match s {
            "virtio" => Ok(Bus::Virtio),
            "usb" => Ok(Bus::Usb),
            other => bail!("disk bus must be virtio or usb, not `{other}`"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Usb => "usb",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub story: PathBuf,
    pub args: Vec<String>,
    pub bus: Bus,
    pub disk_size: String,
    /// Number of blank drives (serials extdrive, extdrive2, ...).
    pub disks: usize,
    pub share: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub timeout: Duration,
    pub mem_mb: u32,
    pub cpus: u32,
    /// qemu's -cpu: "max" has AES instructions; "max,-aes" is a Pi 4's case.
    pub cpu: String,
    pub stream_console: bool,
    /// Start from the saved booted guest (made on first use) instead of
    /// booting.
    pub restore: bool,
}

impl RunOptions {
    pub fn new(story: PathBuf) -> Self {
        RunOptions {
            story,
            args: vec![],
            bus: Bus::Virtio,
            disk_size: "1G".into(),
            disks: 1,
            share: None,
            out: None,
            timeout: Duration::from_secs(1200),
            mem_mb: 2048,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get().min(4) as u32)
                .unwrap_or(2),
            cpu: "max".into(),
            stream_console: true,
            restore: true,
        }
    }
}

#[derive(Debug)]
pub struct RunResult {
    /// The story's exit status; 124 on time-out, 125 when none came back.
    pub code: i32,
    pub elapsed: Duration,
    /// Seconds from qemu's start to the story's start (guest booted).
    pub boot_secs: Option<f64>,
}

/// Builds (or reuses) the guest image and returns its directory.
pub fn image(force: bool) -> Result<PathBuf> {
    let script = util::root().join("tests/vm/image/build-image.sh");
    let cache = util::cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg(&cache);
    if force {
        cmd.arg("--force");
    }
    let out = util::output(&mut cmd).context("building the VM image (see the messages above)")?;
    let dir = out
        .lines()
        .last()
        .map(PathBuf::from)
        .filter(|p| p.join("ok").exists())
        .ok_or_else(|| anyhow!("build-image.sh printed no image directory"))?;
    Ok(dir)
}

pub fn check_host_tools() -> Result<()> {
    let hint = "apt-get install -t bookworm-backports qemu-system-x86 qemu-utils (see .ci/run)";
    util::require("qemu-system-x86_64", hint)?;
    util::require("qemu-img", hint)?;
    util::require("debootstrap", "apt-get install debootstrap")?;
    util::require("mkfs.ext4", "apt-get install e2fsprogs")?;
    Ok(())
}

/// Most drives a story may ask for. Each virtio drive needs a PCIe root
/// port, and the ports are part of the saved machine, so their number is
/// fixed.
pub const MAX_DISKS: usize = 4;

/// The guest's hardware, the same for the boot that is saved and for every
/// run restored from it (qemu restores a saved guest only into the same
/// devices). Backends, the files and sockets behind the devices, differ per
/// run and are given separately.
fn machine_args(opts: &RunOptions, img: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-name",
        "immich-appliance-vmtest",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        "q35,accel=tcg",
        "-cpu",
        &opts.cpu,
        "-smp",
        &opts.cpus.to_string(),
        "-m",
        &opts.mem_mb.to_string(),
        "-append",
        "root=/dev/vda rw console=ttyS0 panic=-1 loglevel=4 systemd.log_color=0 systemd.show_status=0",
        "-serial",
        "chardev:con",
        "-device",
        "virtio-blk-pci,drive=root",
        "-device",
        "virtio-9p-pci,fsdev=ctl,mount_tag=vmtest",
        "-device",
        "virtio-9p-pci,fsdev=share,mount_tag=share",
        "-device",
        "virtio-rng-pci",
        // A restored guest learns from a new generation ID that it was
        // restored, and Linux reseeds its random generator.
        "-device",
        "vmgenid,guid=auto",
        "-nic",
        "none",
        "-device",
        "qemu-xhci,id=xhci",
        "-device",
        "virtio-serial-pci,id=vser",
        "-device",
        "virtserialport,bus=vser.0,chardev=go,name=vmtest.go",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-kernel".into());
    a.push(img.join("vmlinuz").display().to_string());
    a.push("-initrd".into());
    a.push(img.join("initrd.img").display().to_string());
    // Drives are plugged in once the guest is up, so that every run sees
    // the same hardware at boot; virtio ones go behind a root port each,
    // which also lets a story unplug them.
    for i in 0..MAX_DISKS {
        a.push("-device".into());
        a.push(format!(
            "pcie-root-port,id=rp{i},chassis={},slot={i}",
            i + 1
        ));
    }
    a
}

/// The files and sockets of one qemu process.
struct Backends<'a> {
    work: &'a Path,
    root_disk: &'a Path,
    ctl: &'a Path,
    share: &'a Path,
    disks: &'a [PathBuf],
}

impl Backends<'_> {
    fn args(&self) -> Vec<String> {
        let w = self.work;
        let mut a = vec![
            "-chardev".into(),
            format!("file,id=con,path={}", w.join("console.log").display()),
            "-drive".into(),
            format!(
                "file={},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap",
                self.root_disk.display()
            ),
            "-fsdev".into(),
            format!(
                "local,id=ctl,path={},security_model=none",
                self.ctl.display()
            ),
            "-fsdev".into(),
            format!(
                "local,id=share,path={},security_model=none,readonly=on",
                self.share.display()
            ),
            "-chardev".into(),
            format!(
                "socket,id=go,path={},server=on,wait=off",
                w.join("go.sock").display()
            ),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", w.join("qmp.sock").display()),
        ];
        for (i, f) in self.disks.iter().enumerate() {
            a.push("-drive".into());
            a.push(format!(
                "file={},if=none,id=disk{i},format=raw,cache=unsafe",
                f.display()
            ));
        }
        a
    }
}

/// A running qemu with its QMP socket and the guest's "go" port.
struct Guest {
    child: QemuChild,
    qmp: PathBuf,
    go: UnixStream,
    console: PathBuf,
}

impl Guest {
    fn start(machine: &[String], backends: &Backends, incoming: bool) -> Result<Guest> {
        let mut q = Command::new("qemu-system-x86_64");
        q.args(machine).args(backends.args());
        if incoming {
            q.args(["-incoming", "defer"]);
        }
        q.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = QemuChild(q.spawn().context("starting qemu-system-x86_64")?);
        let go_path = backends.work.join("go.sock");
        let t0 = Instant::now();
        let go = loop {
            match UnixStream::connect(&go_path) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(30) => {
                    if let Some(st) = child.0.try_wait()? {
                        bail!("qemu ended at once ({st}): {}", child.stderr());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).context("connecting to the guest's go port"),
            }
        };
        go.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Guest {
            child,
            qmp: backends.work.join("qmp.sock"),
            go,
            console: backends.work.join("console.log"),
        })
    }

    /// Loads a saved guest into this qemu (started with `incoming`) and
    /// lets it run.
    fn restore(&mut self, state: &Path) -> Result<()> {
        let mut q = Qmp::connect(&self.qmp)?;
        q.execute(
            "migrate-incoming",
            serde_json::json!({ "uri": format!("file:{}", state.display()) }),
        )?;
        q.wait_migration(Duration::from_secs(300))?;
        q.execute("cont", serde_json::json!({}))
    }

    /// Waits until the guest is up and says "ready"; `tick` runs about ten
    /// times a second meanwhile.
    fn wait_ready(&mut self, until: Instant, tick: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let mut heard = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match self.go.read(&mut buf) {
                Ok(0) => bail!("qemu closed the guest's go port"),
                Ok(n) => {
                    heard.extend_from_slice(&buf[..n]);
                    if heard.windows(6).any(|w| w == b"ready\n") {
                        return Ok(());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("reading the guest's go port"),
            }
            tick()?;
            if let Some(st) = self.child.0.try_wait()? {
                bail!(
                    "qemu ended before the guest was up ({st}): {}\nconsole:\n{}",
                    self.child.stderr(),
                    tail(&self.console)
                );
            }
            if Instant::now() > until {
                bail!(
                    "the guest was not up in time; console:\n{}",
                    tail(&self.console)
                );
            }
        }
    }

    /// Tells the guest to go on: the time (a restored guest's clock is the
    /// saved one) and fresh randomness.
    fn go(&mut self) -> Result<()> {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let mut seed = [0u8; 32];
        fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(self.go, "go {epoch} {seed}").context("answering the guest")
    }
}

/// The last lines of a console log, for an error message.
fn tail(console: &Path) -> String {
    let text = fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The booted guest for `opts`'s machine, saved on first use: a disk
/// overlay and qemu's migration stream, taken while the guest waits for its
/// story. Restoring it takes a few seconds where a boot takes half a minute
/// under TCG. It lives in the image's folder, so a new image drops it, and
/// a change to the machine's arguments makes it again.
fn saved_boot(opts: &RunOptions, img: &Path, machine: &[String]) -> Result<PathBuf> {
    let id = machine.join("\n");
    let name: String = format!("{}-c{}-m{}", opts.cpu, opts.cpus, opts.mem_mb)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let saved = img.join("saved");
    fs::create_dir_all(&saved)?;
    let lock = fs::File::create(saved.join(format!("{name}.lock")))?;
    lock.lock().context("locking the saved guest")?;
    let dir = saved.join(&name);
    if dir.join("ok").exists()
        && fs::read_to_string(dir.join("machine.txt")).ok() == Some(id.clone())
    {
        return Ok(dir);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let t0 = Instant::now();
    util::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(img.join("rootfs.raw"))
            .arg(dir.join("root.qcow2")),
    )?;
    let work = TempDir::new(&util::cache_dir().join("vm/tmp"))?;
    let empty = work.path().join("empty");
    fs::create_dir_all(&empty)?;
    let backends = Backends {
        work: work.path(),
        root_disk: &dir.join("root.qcow2"),
        ctl: &empty,
        share: &empty,
        disks: &[],
    };
    let mut guest = Guest::start(machine, &backends, false)?;
    guest
        .wait_ready(t0 + Duration::from_secs(300), &mut || Ok(()))
        .context("booting the guest to save it")?;
    let mut q = Qmp::connect(&guest.qmp)?;
    q.execute("stop", serde_json::json!({}))?;
    q.execute(
        "migrate",
        serde_json::json!({ "uri": format!("file:{}", dir.join("state").display()) }),
    )?;
    q.wait_migration(Duration::from_secs(300))?;
    let _ = q.execute("quit", serde_json::json!({}));
    let _ = guest.child.0.wait();
    fs::copy(work.path().join("console.log"), dir.join("console.log"))?;
    fs::write(dir.join("machine.txt"), &id)?;
    fs::write(dir.join("ok"), b"")?;
    eprintln!(
        "vm: booted and saved the guest {name} in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// Starts the guest (restored from its saved boot, or booted), plugs in
/// the drives, runs the story and returns its exit status.
pub fn run(opts: &RunOptions) -> Result<RunResult> {
    check_host_tools()?;
    if opts.disks > MAX_DISKS {
        bail!(
            "a story may have at most {MAX_DISKS} drives, not {}",
            opts.disks
        );
    }
    let img = image(false)?;
    let machine = machine_args(opts, &img);
    let saved = if opts.restore {
        Some(saved_boot(opts, &img, &machine)?)
    } else {
        None
    };
    let tmp = util::cache_dir().join("vm/tmp");
    fs::create_dir_all(&tmp)?;
    let work = TempDir::new(&tmp)?;
    let ctl = work.path().join("ctl");
    for d in ["out", "requests", "lib"] {
        fs::create_dir_all(ctl.join(d))?;
    }
    let guest_dir = util::root().join("tests/vm/guest");
    fs::copy(guest_dir.join("agent.sh"), ctl.join("agent.sh"))?;
    util::copy_dir(&guest_dir.join("lib"), &ctl.join("lib"))?;
    fs::copy(&opts.story, ctl.join("story.sh"))
        .with_context(|| format!("story {}", opts.story.display()))?;
    let mut args = String::new();
    for a in &opts.args {
        if a.contains('\n') {
            bail!("story arguments must not contain newlines");
        }
        args.push_str(a);
        args.push('\n');
    }
    fs::write(ctl.join("args"), args)?;
    fs::write(ctl.join("disks"), opts.disks.to_string())?;
    fs::write(
        ctl.join("start"),
        if saved.is_some() {
            "restored"
        } else {
            "booted"
        },
    )?;

    let root_disk = work.path().join("root.qcow2");
    let (base, base_format) = match &saved {
        Some(dir) => (dir.join("root.qcow2"), "qcow2"),
        None => (img.join("rootfs.raw"), "raw"),
    };
    util::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", base_format, "-b"])
            .arg(&base)
            .arg(&root_disk),
    )?;
    let mut disk_files = vec![];
    for i in 0..opts.disks {
        let f = work.path().join(format!("extdrive{i}.raw"));
        util::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "raw"])
                .arg(&f)
                .arg(&opts.disk_size),
        )?;
        disk_files.push(f);
    }
    let share = match &opts.share {
        Some(s) => s
            .canonicalize()
            .with_context(|| format!("share {}", s.display()))?,
        None => {
            let empty = work.path().join("no-share");
            fs::create_dir_all(&empty)?;
            empty
        }
    };
    let backends = Backends {
        work: work.path(),
        root_disk: &root_disk,
        ctl: &ctl,
        share: &share,
        disks: &disk_files,
    };
    fs::write(work.path().join("console.log"), b"")?;
    let console = work.path().join("console.log");
    let qmp_sock = work.path().join("qmp.sock");

    let started = Instant::now();
    let mut guest = Guest::start(&machine, &backends, saved.is_some())?;
    if let Some(dir) = &saved {
        guest
            .restore(&dir.join("state"))
            .context("restoring the saved guest")?;
    }
    let mut console_pos = 0u64;
    let stream_console = opts.stream_console;
    guest.wait_ready(started + opts.timeout, &mut || {
        if stream_console {
            console_pos = stream(&console, console_pos)?;
        }
        Ok(())
    })?;
    {
        let mut q = Qmp::connect(&qmp_sock)?;
        for i in 0..opts.disks {
            q.execute("device_add", disk_device(opts.bus, i, &format!("disk{i}")))
                .with_context(|| format!("plugging in drive {i}"))?;
        }
    }
    guest.go()?;
    let mut boot_secs = None;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = guest.child.0.try_wait()? {
            break Some(st);
        }
        if opts.stream_console {
            console_pos = stream(&console, console_pos)?;
        }
        if boot_secs.is_none() && ctl.join("out/test.log").exists() {
            boot_secs = Some(started.elapsed().as_secs_f64());
        }
        serve_requests(&ctl.join("requests"), &qmp_sock, opts.bus, &disk_files)?;
        if started.elapsed() > opts.timeout {
            eprintln!(
                "vmtest: time limit of {} s reached; stopping qemu",
                opts.timeout.as_secs()
            );
            timed_out = true;
            guest.child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if opts.stream_console {
        stream(&console, console_pos)?;
    }
    let elapsed = started.elapsed();
    let qemu_said = guest.child.stderr();
    let code = if timed_out {
        124
    } else if let Ok(s) = fs::read_to_string(ctl.join("out/exit-code")) {
        s.trim().parse().unwrap_or(125)
    } else {
        marker(&console).unwrap_or(125)
    };
    if code == 125 {
        eprintln!("vmtest: no exit status came back (qemu: {status:?}); qemu said:\n{qemu_said}");
        if !opts.stream_console {
            eprintln!("vmtest: guest console:\n{}", fs::read_to_string(&console)?);
        }
    }
    if let Some(out) = &opts.out {
        fs::create_dir_all(out)?;
        util::copy_dir(&ctl.join("out"), out)?;
        fs::copy(&console, out.join("console.log"))?;
    }
    Ok(RunResult {
        code,
        elapsed,
        boot_secs,
    })
}

/// The device of drive `n` on `bus`, backed by the block node `node`.
fn disk_device(bus: Bus, n: usize, node: &str) -> serde_json::Value {
    match bus {
        Bus::Usb => serde_json::json!({
            "driver": "usb-storage", "bus": "xhci.0", "drive": node,
            "serial": serial(n), "id": format!("extdisk{n}"),
        }),
        Bus::Virtio => serde_json::json!({
            "driver": "virtio-blk-pci", "bus": format!("rp{n}"), "drive": node,
            "serial": serial(n), "id": format!("extdisk{n}"),
        }),
    }
}

fn serial(i: usize) -> String {
    if i == 0 {
        "extdrive".into()
    } else {
        format!("extdrive{}", i + 1)
    }
}

/// Prints what the console gained since `pos`; returns the new position.
fn stream(console: &Path, pos: u64) -> Result<u64> {
    let mut f = fs::File::open(console)?;
    let len = f.metadata()?.len();
    if len <= pos {
        return Ok(pos);
    }
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity((len - pos) as usize);
    f.take(len - pos).read_to_end(&mut buf)?;
    let mut err = std::io::stderr().lock();
    err.write_all(&buf)?;
    Ok(len)
}

fn marker(console: &Path) -> Option<i32> {
    let text = fs::read_to_string(console).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| l.split("VMTEST-EXIT-CODE: ").nth(1))
        .find_map(|rest| rest.trim().parse().ok())
}

/// Answers the guest's requests: `<id>.req` holds a command, the host writes
/// `<id>.done` with "ok" or "error: ...".
fn serve_requests(dir: &Path, qmp: &Path, bus: Bus, disks: &[PathBuf]) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("req") {
            continue;
        }
        let done = p.with_extension("done");
        if done.exists() {
            continue;
        }
        let cmd = fs::read_to_string(&p)?.trim().to_owned();
        eprintln!("vmtest: guest asks: {cmd}");
        let answer = match handle(&cmd, qmp, bus, disks) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("error: {e:#}"),
        };
        eprintln!("vmtest: answered: {answer}");
        let tmp = p.with_extension("tmp");
        fs::write(&tmp, answer)?;
        fs::rename(tmp, done)?;
    }
    Ok(())
}

fn handle(cmd: &str, qmp: &Path, bus: Bus, disks: &[PathBuf]) -> Result<()> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        // The same disk file back on the same port, as a person plugging the
        // drive in again: qemu dropped the old block backend with the device,
        // so a new one is added under a fresh node name.
        ["plug", n] => {
            let n: usize = n.parse().context("plug takes a disk index")?;
            let file = disks.get(n).context("no such disk")?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let node = format!("replug{n}-{stamp}");
            let mut q = Qmp::connect(qmp)?;
            q.execute(
                "blockdev-add",
                serde_json::json!({
                    "node-name": node,
                    "driver": "raw",
                    "file": { "driver": "file", "filename": file.display().to_string() },
                }),
            )?;
            q.execute("device_add", disk_device(bus, n, &node))
        }
        ["unplug", n] => {
            let n: usize = n.parse().context("unplug takes a disk index")?;
            let mut q = Qmp::connect(qmp)?;
            q.execute(
                "device_del",
                serde_json::json!({ "id": format!("extdisk{n}") }),
            )?;
            q.wait_event("DEVICE_DELETED", Duration::from_secs(30))
        }
        _ => bail!("unknown request `{cmd}`"),
    }
}

struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Qmp> {
        // qemu makes the socket soon after it starts, not at once.
        let t0 = Instant::now();
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("QMP socket {}", path.display()));
                }
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut q = Qmp {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        };
        q.read()?; // greeting
        q.execute("qmp_capabilities", serde_json::json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP connection closed");
        }
        Ok(serde_json::from_str(&line)?)
    }

    fn execute(&mut self, cmd: &str, args: serde_json::Value) -> Result<()> {
        self.call(cmd, args).map(|_| ())
    }

    fn call(&mut self, cmd: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        let msg = serde_json::json!({ "execute": cmd, "arguments": args });
        writeln!(self.writer, "{msg}")?;
        loop {
            let mut v = self.read()?;
            if let Some(r) = v.get_mut("return") {
                return Ok(r.take());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {cmd}: {e}");
            }
        }
    }

    /// Waits for a migration (out to a file, or in from one) to end.
    fn wait_migration(&mut self, within: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let r = self.call("query-migrate", serde_json::json!({}))?;
            match r.get("status").and_then(|s| s.as_str()) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    bail!("qemu's migration failed: {r}")
                }
                _ if t0.elapsed() > within => {
                    bail!(
                        "qemu's migration did not end in {} s: {r}",
                        within.as_secs()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn wait_event(&mut self, name: &str, within: Duration) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            let v = self.read()?;
            if v.get("event").and_then(|e| e.as_str()) == Some(name) {
                return Ok(());
            }
        }
        bail!("no {name} event within {} s", within.as_secs())
    }
}

/// Kills qemu when dropped, so an error or ^C never leaves a VM running.
struct QemuChild(Child);

impl QemuChild {
    /// What qemu wrote to stderr, once it has ended.
    fn stderr(&mut self) -> String {
        let mut said = String::new();
        if let Ok(Some(_)) = self.0.try_wait()
            && let Some(mut e) = self.0.stderr.take()
        {
            let _ = e.read_to_string(&mut said);
        }
        said
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for QemuChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<TempDir> {
        for i in 0..1000u32 {
            let p = parent.join(format!("run.{}.{i}", std::process::id()));
            match fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("cannot create a scratch directory in {}", parent.display())
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The header of a story: `# vm-KEY: VALUE` lines.
#[derive(Debug, Clone)]
pub struct Story {
    pub path: PathBuf,
    pub name: String,
    pub buses: Vec<Bus>,
    pub disk_size: String,
    pub disks: usize,
    pub timeout: Duration,
    pub mem_mb: u32,
    /// `# vm-cpu: max,-aes`: the guest's CPU model (default "max").
    pub cpu: String,
}

impl Story {
    /// The name of one run: a story runs once per disk bus it names.
    pub fn label(&self, bus: Bus) -> String {
        format!("{}[{}]", self.name, bus.name())
    }

    pub fn load(path: &Path) -> Result<Story> {
        let text = fs::read_to_string(path)?;
        let mut kv = BTreeMap::new();
        for line in text.lines().take_while(|l| l.starts_with('#')) {
            if let Some(rest) = line.strip_prefix("# vm-")
                && let Some((k, v)) = rest.split_once(':')
            {
                kv.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| anyhow!("bad story name {}", path.display()))?
            .to_owned();
        let buses = match kv.get("disk-bus") {
            Some(v) => v
                .split_whitespace()
                .map(Bus::parse)
                .collect::<Result<_>>()?,
            None => vec![Bus::Virtio],
        };
        Ok(Story {
            path: path.to_owned(),
            name,
            buses,
            disk_size: kv.get("disk-size").cloned().unwrap_or_else(|| "1G".into()),
            disks: kv.get("disks").map(|v| v.parse()).transpose()?.unwrap_or(1),
            timeout: Duration::from_secs(
                kv.get("timeout")
                    .map(|v| v.parse())
                    .transpose()?
                    .unwrap_or(900),
            ),
            mem_mb: kv
                .get("mem")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(2048),
            cpu: kv.get("cpu").cloned().unwrap_or_else(|| "max".into()),
        })
    }
}

pub fn stories() -> Result<Vec<Story>> {
    let dir = util::root().join("tests/vm/stories");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("sh"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Story::load(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved guest is restored only into the same devices, and it is
    /// made again whenever its arguments change: the machine's arguments
    /// must name devices only (no per-run file or socket), and the
    /// backends must add no device.
    #[test]
    fn the_saved_machine_is_devices_and_the_backends_are_files() {
        let opts = RunOptions::new(PathBuf::from("story.sh"));
        let machine = machine_args(&opts, Path::new("/img"));
        for backend in ["-drive", "-fsdev", "-chardev", "-qmp", "-blockdev"] {
            assert!(
                !machine.iter().any(|a| a == backend),
                "{backend} in {machine:?}"
            );
        }
        let work = Path::new("/run-1");
        let disks = [work.join("extdrive0.raw")];
        let b = Backends {
            work,
            root_disk: &work.join("root.qcow2"),
            ctl: &work.join("ctl"),
            share: &work.join("share"),
            disks: &disks,
        };
        let args = b.args();
        assert!(!args.iter().any(|a| a == "-device"), "{args:?}");
        assert!(!machine.iter().any(|a| a.contains("/run-1")));
        // Every backend a device names is given.
        for id in [
            "id=con", "id=root", "id=ctl", "id=share", "id=go", "id=disk0",
        ] {
            assert!(
                args.iter().any(|a| a.contains(id)),
                "{id} missing from {args:?}"
            );
        }
        // A story's bus and drives do not change the machine.
        let mut usb = opts.clone();
        usb.bus = Bus::Usb;
        usb.disks = MAX_DISKS;
        assert_eq!(machine, machine_args(&usb, Path::new("/img")));
    }
}
