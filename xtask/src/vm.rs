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

/// Boots the guest, runs the story and returns its exit status.
pub fn run(opts: &RunOptions) -> Result<RunResult> {
    check_host_tools()?;
    let img = image(false)?;
    let tmp = util::cache_dir().join("vm/tmp");
    fs::create_dir_all(&tmp)?;
    let work = TempDir::new(&tmp)?;
    let ctl = work.path().join("ctl");
    for d in ["out", "requests", "lib"] {
        fs::create_dir_all(ctl.join(d))?;
    }
    let guest = util::root().join("tests/vm/guest");
    fs::copy(guest.join("agent.sh"), ctl.join("agent.sh"))?;
    util::copy_dir(&guest.join("lib"), &ctl.join("lib"))?;
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

    let root_disk = work.path().join("root.qcow2");
    util::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(img.join("rootfs.raw"))
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

    let console = work.path().join("console.log");
    fs::write(&console, b"")?;
    let qmp_sock = work.path().join("qmp.sock");
    let mut q = Command::new("qemu-system-x86_64");
    q.args(["-name", "immich-appliance-vmtest", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot"])
        .args(["-machine", "q35,accel=tcg", "-cpu", &opts.cpu])
        .args(["-smp", &opts.cpus.to_string(), "-m", &opts.mem_mb.to_string()])
        .arg("-kernel")
        .arg(img.join("vmlinuz"))
        .arg("-initrd")
        .arg(img.join("initrd.img"))
        .args([
            "-append",
            "root=/dev/vda rw console=ttyS0 panic=-1 loglevel=4 systemd.log_color=0 systemd.show_status=0",
        ])
        .arg("-chardev")
        .arg(format!("file,id=con,path={}", console.display()))
        .args(["-serial", "chardev:con"])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap",
            root_disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=root"])
        .arg("-fsdev")
        .arg(format!("local,id=ctl,path={},security_model=none", ctl.display()))
        .args(["-device", "virtio-9p-pci,fsdev=ctl,mount_tag=vmtest"])
        .args(["-device", "virtio-rng-pci", "-nic", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()));
    if opts.bus == Bus::Usb {
        q.args(["-device", "qemu-xhci,id=xhci"]);
    }
    for (i, f) in disk_files.iter().enumerate() {
        let serial = serial(i);
        q.arg("-drive").arg(format!(
            "file={},if=none,id=disk{i},format=raw,cache=unsafe",
            f.display()
        ));
        match opts.bus {
            Bus::Usb => q.arg("-device").arg(format!(
                "usb-storage,bus=xhci.0,drive=disk{i},serial={serial},id=extdisk{i}"
            )),
            // Behind a PCIe root port so that device_del can unplug it.
            Bus::Virtio => q
                .arg("-device")
                .arg(format!(
                    "pcie-root-port,id=rp{i},chassis={},slot={i}",
                    i + 1
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-blk-pci,bus=rp{i},drive=disk{i},serial={serial},id=extdisk{i}"
                )),
        };
    }
    if let Some(share) = &opts.share {
        let share = share
            .canonicalize()
            .with_context(|| format!("share {}", share.display()))?;
        q.arg("-fsdev").arg(format!(
            "local,id=share,path={},security_model=none,readonly=on",
            share.display()
        ));
        q.args(["-device", "virtio-9p-pci,fsdev=share,mount_tag=share"]);
    }
    q.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let started = Instant::now();
    let mut child = QemuChild(q.spawn().context("starting qemu-system-x86_64")?);
    let mut console_pos = 0u64;
    let mut boot_secs = None;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.0.try_wait()? {
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
            child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if opts.stream_console {
        stream(&console, console_pos)?;
    }
    let elapsed = started.elapsed();
    let mut qemu_said = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut qemu_said);
    }
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
            let device = match bus {
                Bus::Usb => serde_json::json!({
                    "driver": "usb-storage", "bus": "xhci.0", "drive": node,
                    "serial": serial(n), "id": format!("extdisk{n}"),
                }),
                Bus::Virtio => serde_json::json!({
                    "driver": "virtio-blk-pci", "bus": format!("rp{n}"), "drive": node,
                    "serial": serial(n), "id": format!("extdisk{n}"),
                }),
            };
            q.execute("device_add", device)
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
        let s =
            UnixStream::connect(path).with_context(|| format!("QMP socket {}", path.display()))?;
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
        let msg = serde_json::json!({ "execute": cmd, "arguments": args });
        writeln!(self.writer, "{msg}")?;
        loop {
            let v = self.read()?;
            if v.get("return").is_some() {
                return Ok(());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {cmd}: {e}");
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
