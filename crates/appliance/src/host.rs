//! Small host facts and actions: root check, the run lock, atomic writes,
//! the immutable flag on the mount point, and the processes that keep a
//! mount busy.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Space on the filesystem holding `path`, as an unprivileged user may use
/// it (ext4 keeps a reserve for root that Immich cannot use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl Space {
    /// Percent in use, counting root's reserve as used.
    pub fn used_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.free_bytes as f64 / self.total_bytes as f64)
    }

    /// Too little left for PostgreSQL to start and write its journal: under
    /// 1 % or 64 MiB, whichever is more.
    pub fn is_full(&self) -> bool {
        self.free_bytes < (self.total_bytes / 100).max(64 << 20)
    }
}

pub fn space(path: &Path) -> std::io::Result<Space> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = st.fragment_size() as u64;
    Ok(Space {
        free_bytes: st.blocks_available() as u64 * frag,
        total_bytes: st.blocks() as u64 * frag,
    })
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Serialises start/stop/init. Held until dropped.
#[derive(Debug)]
pub struct RunLock {
    _lock: Flock<fs::File>,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another run{} holds {path}{}", pid_text(*.holder), if *.waited { ", and did not finish within the wait" } else { "" })]
    Busy {
        path: PathBuf,
        holder: Option<u32>,
        /// False for --no-wait: nothing was waited for.
        waited: bool,
    },
    #[error("cannot take the lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl RunLock {
    /// Takes the lock, waiting up to `wait` for another run (none: fail at
    /// once); `on_wait` is told which process holds it before the wait.
    pub fn acquire(
        path: &Path,
        wait: Option<std::time::Duration>,
        on_wait: impl FnOnce(Option<u32>),
    ) -> Result<RunLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let busy = |waited| LockError::Busy {
            path: path.to_owned(),
            holder: holder(path),
            waited,
        };
        match RunLock::try_acquire(path).map_err(io)? {
            Ok(l) => return Ok(l),
            Err(_) if wait.is_none() => return Err(busy(false)),
            Err(pid) => on_wait(pid),
        }
        let deadline = std::time::Instant::now() + wait.unwrap_or_default();
        // A poll, not a blocking flock: the wait must end at the deadline.
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if let Ok(l) = RunLock::try_acquire(path).map_err(io)? {
                return Ok(l);
            }
        }
        Err(busy(true))
    }

    /// Records our pid for the next waiter's message.
    fn held(lock: Flock<fs::File>) -> std::io::Result<RunLock> {
        let f: &fs::File = &lock;
        f.set_len(0)?;
        (&*f).write_all(format!("{}\n", std::process::id()).as_bytes())?;
        Ok(RunLock { _lock: lock })
    }
}

fn open_lock(path: &Path) -> std::io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// The pid the lock's holder recorded, if any.
fn holder(path: &Path) -> Option<u32> {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

impl RunLock {
    /// Takes the lock if it is free; otherwise returns the holder's pid (if
    /// it recorded one) without waiting.
    pub fn try_acquire(path: &Path) -> std::io::Result<Result<RunLock, Option<u32>>> {
        match Flock::lock(open_lock(path)?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => RunLock::held(lock).map(Ok),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Err(holder(path))),
            Err((_, e)) => Err(e.into()),
        }
    }
}

/// Writes a file atomically: temp file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS take a long on 64-bit ABIs in the
// kernel's definition but the kernel reads an int; use c_int like e2fsprogs.
nix::ioctl_read!(fs_ioc_getflags, b'f', 1, libc::c_long);
nix::ioctl_write_ptr!(fs_ioc_setflags, b'f', 2, libc::c_long);
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

/// Sets or clears the immutable flag (`chattr +i`) on a directory. The empty
/// mount point is made immutable so that, while the drive is not mounted,
/// nothing (not even root) can write photos or a database onto the SD card.
pub fn set_immutable(dir: &Path, on: bool) -> std::io::Result<()> {
    let f = fs::File::open(dir)?;
    let fd = f.as_raw_fd();
    let mut flags: libc::c_int = 0;
    // SAFETY: fd is open for the whole call and flags is a valid c_int.
    unsafe { fs_ioc_getflags(fd, (&mut flags as *mut libc::c_int).cast()) }?;
    let new = if on {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if new != flags {
        // SAFETY: as above.
        unsafe { fs_ioc_setflags(fd, (&new as *const libc::c_int).cast()) }?;
    }
    Ok(())
}

pub fn is_immutable(dir: &Path) -> std::io::Result<bool> {
    let f = fs::File::open(dir)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: as in set_immutable.
    unsafe { fs_ioc_getflags(f.as_raw_fd(), (&mut flags as *mut libc::c_int).cast()) }?;
    Ok(flags & FS_IMMUTABLE_FL != 0)
}

/// A process that keeps a path busy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// How it holds the path: "cwd", "root", "open file ...", "mapped file ...".
    pub how: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({}): {}", self.pid, self.command, self.how)
    }
}

/// Processes whose cwd, root, open files or mapped files are under `dir`
/// (what `fuser -m` finds), from /proc.
pub fn holders_of(dir: &Path) -> Vec<Holder> {
    let mut out = vec![];
    let under = |p: &Path| p == dir || p.starts_with(dir);
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for e in procs.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let base = e.path();
        let command = fs::read_to_string(base.join("comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        let mut hows = vec![];
        for link in ["cwd", "root"] {
            if let Ok(t) = fs::read_link(base.join(link))
                && under(&t)
            {
                hows.push(link.to_owned());
            }
        }
        if let Ok(fds) = fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(t) = fs::read_link(fd.path())
                    && under(&t)
                {
                    hows.push(format!("open file {}", t.display()));
                    break;
                }
            }
        }
        if let Ok(maps) = fs::read_to_string(base.join("maps"))
            && let Some(p) = maps
                .lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .map(PathBuf::from)
                .find(|p| under(p))
        {
            hows.push(format!("mapped file {}", p.display()));
        }
        if !hows.is_empty() {
            out.push(Holder {
                pid,
                command,
                how: hows.join(", "),
            });
        }
    }
    out.sort_by_key(|h| h.pid);
    out
}

/// Looks up a user and group by name for chown.
pub fn ids(user: &str, group: &str) -> Result<(nix::unistd::Uid, nix::unistd::Gid), String> {
    let u = nix::unistd::User::from_name(user)
        .map_err(|e| format!("cannot look up user {user}: {e}"))?
        .ok_or_else(|| format!("user `{user}` does not exist on this system"))?;
    let g = nix::unistd::Group::from_name(group)
        .map_err(|e| format!("cannot look up group {group}: {e}"))?
        .ok_or_else(|| format!("group `{group}` does not exist on this system"))?;
    Ok((u.uid, g.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn finds_a_process_by_cwd() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(d.path())
            .spawn()
            .unwrap();
        // The child's cwd is set before exec, so it is visible at once.
        let found = holders_of(d.path());
        child.kill().unwrap();
        child.wait().unwrap();
        let h = found
            .iter()
            .find(|h| h.pid == child.id())
            .expect("the child holds the dir");
        assert_eq!(h.command, "sleep");
        assert!(h.how.contains("cwd"), "{h}");
    }

    #[test]
    fn run_lock_serialises() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let wait = Some(std::time::Duration::from_secs(30));
        let first = RunLock::acquire(&p, wait, |_| panic!("the first run does not wait")).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap().trim(),
            std::process::id().to_string()
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let _second = RunLock::acquire(&p2, wait, |holder| tx.send(holder).unwrap()).unwrap();
        });
        let holder = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(holder, Some(std::process::id()));
        drop(first);
        t.join().unwrap();
    }

    #[test]
    fn run_lock_wait_is_bounded_and_no_wait_fails_at_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let _first = RunLock::acquire(&p, None, |_| {}).unwrap();
        let t = std::time::Instant::now();
        let e = RunLock::acquire(&p, None, |_| panic!("--no-wait does not wait")).unwrap_err();
        assert!(
            matches!(
                e,
                LockError::Busy {
                    waited: false,
                    holder: Some(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
        let e =
            RunLock::acquire(&p, Some(std::time::Duration::from_millis(500)), |_| {}).unwrap_err();
        assert!(matches!(e, LockError::Busy { waited: true, .. }), "{e}");
        assert!(
            e.to_string().contains("did not finish within the wait"),
            "{e}"
        );
    }

    #[test]
    fn user_lookup_errors_name_the_user() {
        assert!(ids("root", "root").is_ok());
        let e = ids("no-such-user-xyz", "root").unwrap_err();
        assert!(e.contains("no-such-user-xyz"), "{e}");
    }
}
