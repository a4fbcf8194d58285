//! The backup repository, behind one trait, and its real implementation:
//! the `rustic` binary with the profile on the drive. Passwords and cloud
//! keys stay in that profile (and the password file it names); nothing
//! secret is passed in argv or the environment.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// What one snapshot says about itself (`rustic snapshots --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub time: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub total_files_processed: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub data_added_packed: u64,
    #[serde(default)]
    pub backup_duration: f64,
}

/// What `backup` made: the snapshot, and what rustic could not read and
/// left out of it (a failing drive, a file that vanished meanwhile).
#[derive(Debug, Clone, PartialEq)]
pub struct Backed {
    pub snapshot: Snapshot,
    pub unreadable: Vec<String>,
}

/// The entries rustic left out of a snapshot, from its warnings. rustic
/// 0.11 (rustic_core 0.13) logs a file it could not open or read as
/// `[WARN] ignoring error: ...` and carries on, exiting 0; the message, over
/// several lines, names the path in backquotes: the file when it could not
/// be opened ("Failed to open ReadSourceOpen at `/srv/...`"), its folder
/// when a read failed midway ("Error while backing up `/srv/...`", as
/// story 41 saw it with a device-mapper error under a photo).
/// An item dropped because its parent tree could not be read is logged as
/// `ignoring error reading parent snapshot`. A warning with no path is kept
/// as its first line, so that nothing is left out silently; a file that no
/// longer exists (deleted while the backup ran) is not counted. One entry
/// per warning: two files of one folder may both be named by the folder.
pub fn unreadable(stderr: &str) -> Vec<String> {
    const STARTS: [&str; 2] = [
        "[WARN] ignoring error: ",
        "[WARN] ignoring error reading parent snapshot: ",
    ];
    let mut found: Vec<String> = vec![];
    let mut lines = stderr.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(first) = STARTS.iter().find_map(|s| line.strip_prefix(s)) else {
            continue;
        };
        // The rest of the record, up to the next `[LEVEL] ` line, repeats
        // the path with rustic's advice and the OS error.
        // A file deleted between rustic's walk and its read (Immich
        // emptying its trash) was not lost: it no longer exists.
        let mut gone = first.contains("(os error 2)");
        while let Some(next) = lines.next_if(|next| !is_log_line(next)) {
            gone |= next.contains("(os error 2)");
        }
        if gone {
            continue;
        }
        // The path is quoted at the end of the first line, so a name that
        // itself holds a backquote is taken whole.
        let quoted = first.find("`/").and_then(|a| {
            let b = first.rfind('`')?;
            (b > a + 1).then(|| first[a + 1..b].to_owned())
        });
        let entry = quoted.unwrap_or_else(|| first.trim().to_owned());
        found.push(entry);
    }
    found
}

/// rustic's stderr with any password in a URL cut out (`rest:https://user:
/// password@host/` is a valid repository), logged line by line to the
/// journal and returned for the error message.
fn logged_stderr(raw: &[u8]) -> String {
    let text = scrub_userinfo(&String::from_utf8_lossy(raw));
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(target: "rustic", "{line}");
    }
    text
}

/// Replaces the `user:password@` of every URL in `text` with `***@`.
pub fn scrub_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '`' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn is_log_line(l: &str) -> bool {
    ["[ERROR] ", "[WARN] ", "[INFO] ", "[DEBUG] ", "[TRACE] "]
        .iter()
        .any(|p| l.starts_with(p))
}

/// Retention: how many snapshots of each period to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "no backup repository is set up: {0} does not exist. Run `sudo immich-server backup setup` (docs/backups.md)"
    )]
    NotConfigured(PathBuf),
    #[error(
        "the repository password is wrong (rustic found no key for it). Check the password in your emergency kit; nothing was changed"
    )]
    WrongPassword,
    #[error("the repository holds no snapshot of this appliance (label `{0}`)")]
    NoSnapshot(String),
    #[error("no snapshot `{0}` in the repository; `immich-server backup snapshots` lists them")]
    UnknownSnapshot(String),
    #[error("the disk is full: {0}")]
    DiskFull(String),
    #[error(
        "rustic {verb}: the backup repository cannot be reached (its server is down, or the network is): {detail}. Nothing was lost; the next run tries again"
    )]
    Unreachable { verb: &'static str, detail: String },
    #[error("cannot run rustic ({tool}): {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rustic {verb} failed ({status}){tail}")]
    Failed {
        verb: &'static str,
        status: String,
        tail: String,
    },
    #[error("rustic {verb} printed output we cannot read: {error}")]
    Output { verb: &'static str, error: String },
}

/// How far a backup has come: bytes read from the sources so far.
pub type OnProgress<'a> = &'a dyn Fn(u64, std::time::Duration);

/// The repository operations the appliance uses.
pub trait Repo {
    /// Backs up `paths` (absolute) and returns the new snapshot with what
    /// could not be read; `progress` is told, every little while, how much
    /// it has read.
    fn backup(
        &self,
        paths: &[PathBuf],
        tags: &[String],
        progress: OnProgress,
    ) -> Result<Backed, RepoError>;
    /// Applies the retention policy to this appliance's snapshots; returns
    /// how many it removed.
    fn forget(&self, keep: Keep) -> Result<usize, RepoError>;
    /// Deletes the data no snapshot needs any more.
    fn prune(&self) -> Result<(), RepoError>;
    /// Checks the repository; `read` is None (structure only), Some("5%")
    /// (a share of the data) or Some("all").
    fn check(&self, read: Option<&str>) -> Result<(), RepoError>;
    /// This appliance's snapshots, oldest first.
    fn snapshots(&self) -> Result<Vec<Snapshot>, RepoError>;
    /// Restores `source` (a path in the snapshot) of snapshot `id` into `dest`.
    fn restore(
        &self,
        id: &str,
        source: &Path,
        dest: &Path,
        progress: bool,
    ) -> Result<(), RepoError>;
    /// Creates a new repository.
    fn init(&self) -> Result<(), RepoError>;
}

/// rustic, run with the profile on the drive.
#[derive(Debug, Clone)]
pub struct RusticCli {
    pub bin: String,
    pub profile: PathBuf,
    pub cache_dir: PathBuf,
    pub label: String,
    /// How often a running backup reports how far it is.
    pub progress_every: std::time::Duration,
}

impl RusticCli {
    fn cmd(&self) -> Command {
        self.cmd_with(false)
    }

    fn cmd_with(&self, progress: bool) -> Command {
        let mut c = Command::new(&self.bin);
        // rustic accepts a profile path (with or without .toml).
        c.arg("-P").arg(&self.profile);
        c.arg("--cache-dir").arg(&self.cache_dir);
        if !progress {
            c.arg("--no-progress");
        }
        // Plain messages in logs and errors.
        c.env("NO_COLOR", "1").env("RUST_BACKTRACE", "0");
        c.stdin(Stdio::null());
        c
    }

    fn profile_exists(&self) -> Result<(), RepoError> {
        let toml = if self.profile.extension().is_some() {
            self.profile.clone()
        } else {
            self.profile.with_extension("toml")
        };
        if toml.is_file() {
            Ok(())
        } else {
            Err(RepoError::NotConfigured(toml))
        }
    }

    fn spawn_error(&self) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
        |source| RepoError::Spawn {
            tool: self.bin.clone(),
            source,
        }
    }

    /// Runs rustic, capturing stdout; stderr is captured too and logged.
    fn run(&self, verb: &'static str, mut c: Command) -> Result<String, RepoError> {
        self.profile_exists()?;
        tracing::debug!(command = ?c, "running rustic");
        let out = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(self.spawn_error())?;
        let stderr = logged_stderr(&out.stderr);
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(classify(verb, &out.status.to_string(), &stderr))
    }
}

/// How many snapshots `forget --json` removed: its groups list every
/// snapshot with `keep` true or false (rustic 0.11). Nothing to forget
/// prints nothing at all.
pub fn removed_by_forget(json: &str) -> Result<usize, String> {
    #[derive(serde::Deserialize)]
    struct Group {
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        keep: bool,
    }
    if json.trim().is_empty() {
        return Ok(0);
    }
    let groups: Vec<Group> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(groups
        .iter()
        .flat_map(|g| &g.items)
        .filter(|i| !i.keep)
        .count())
}

/// Turns rustic's error text into an error that says what to do.
pub fn classify(verb: &'static str, status: &str, stderr: &str) -> RepoError {
    if stderr.contains("errors/C002") || stderr.contains("password that has been entered") {
        return RepoError::WrongPassword;
    }
    if stderr.contains("No space left on device") || stderr.contains("os error 28") {
        return RepoError::DiskFull(tail(stderr, 3).trim().to_owned());
    }
    // rustic's backends retry, then give up with "Backoff failed"; the
    // cause is a connection that was refused or timed out, or a name that
    // did not resolve.
    let unreachable = [
        "Backoff failed",
        "error sending request",
        "Connection refused",
        "dns error",
    ];
    if unreachable.iter().any(|n| stderr.contains(n)) {
        let detail = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| {
                l.contains("error sending request")
                    || l.contains("Connection refused")
                    || l.contains("dns error")
            })
            .unwrap_or("rustic gave up after its retries")
            .trim_start_matches("[WARN] ")
            .to_owned();
        return RepoError::Unreachable { verb, detail };
    }
    RepoError::Failed {
        verb,
        status: status.to_owned(),
        tail: {
            let t = tail(stderr, 12);
            if t.trim().is_empty() {
                String::new()
            } else {
                format!(":\n{t}")
            }
        },
    }
}

/// The last `n` meaningful lines (rustic ends errors with a backtrace
/// header and a docs link that say nothing to a user).
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s
        .lines()
        .filter(|l| {
            let t = l.trim();
            !t.is_empty()
                && !t.starts_with("Backtrace")
                && !t.starts_with("Some additional details")
                && !t.starts_with("[INFO]")
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Seconds since the epoch of an RFC 3339 time with any offset, as rustic
/// writes them (local time, with nanoseconds); None when unreadable.
pub fn epoch_secs(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { t.get(r)?.parse().ok() };
    if b.len() < 19 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days * 86_400 + h * 3600 + mi * 60 + s - offset)
}

#[derive(Deserialize)]
struct Group {
    snapshots: Vec<Snapshot>,
}

/// Bytes a process has read (`rchar`: read calls, from the page cache too,
/// where `read_bytes` would miss files the cache holds): rustic reads each
/// source file once, so this is how far it is, give or take its own index.
fn read_bytes(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))?
        .trim()
        .parse()
        .ok()
}

impl Repo for RusticCli {
    fn backup(
        &self,
        paths: &[PathBuf],
        tags: &[String],
        progress: OnProgress,
    ) -> Result<Backed, RepoError> {
        self.profile_exists()?;
        let mut c = self.cmd();
        c.args(["backup", "--json", "--label", &self.label]);
        if !tags.is_empty() {
            c.arg("--tag").arg(tags.join(","));
        }
        c.args(paths);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(self.spawn_error())?;
        // Both pipes drain on their own threads, so neither can fill up and
        // stall rustic while this one watches the clock.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("piped")));
        let err = drain(Box::new(child.stderr.take().expect("piped")));
        let t0 = std::time::Instant::now();
        let mut next = t0 + self.progress_every;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(self.spawn_error())? {
                break st;
            }
            if std::time::Instant::now() >= next {
                if let Some(read) = read_bytes(child.id()) {
                    progress(read, t0.elapsed());
                }
                next += self.progress_every;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let out = out.join().unwrap_or_default();
        let stderr = logged_stderr(&err.join().unwrap_or_default());
        if !status.success() {
            return Err(classify("backup", &status.to_string(), &stderr));
        }
        let snapshot = serde_json::from_str(&String::from_utf8_lossy(&out)).map_err(|e| {
            RepoError::Output {
                verb: "backup",
                error: e.to_string(),
            }
        })?;
        Ok(Backed {
            snapshot,
            unreadable: unreadable(&stderr),
        })
    }

    fn forget(&self, keep: Keep) -> Result<usize, RepoError> {
        let mut c = self.cmd();
        c.args(["forget", "--json", "--filter-label", &self.label]);
        c.arg("--keep-daily").arg(keep.daily.to_string());
        c.arg("--keep-weekly").arg(keep.weekly.to_string());
        c.arg("--keep-monthly").arg(keep.monthly.to_string());
        let out = self.run("forget", c)?;
        removed_by_forget(&out).map_err(|error| RepoError::Output {
            verb: "forget",
            error,
        })
    }

    fn prune(&self) -> Result<(), RepoError> {
        let mut c = self.cmd();
        c.arg("prune");
        self.run("prune", c).map(|_| ())
    }

    fn check(&self, read: Option<&str>) -> Result<(), RepoError> {
        let mut c = self.cmd();
        c.arg("check");
        match read {
            None => {}
            Some("all") => {
                c.arg("--read-data");
            }
            Some(subset) => {
                // rustic 0.11 wants --read-data beside the subset.
                c.arg("--read-data").arg("--read-data-subset").arg(subset);
            }
        }
        self.run("check", c).map(|_| ())
    }

    fn snapshots(&self) -> Result<Vec<Snapshot>, RepoError> {
        let mut c = self.cmd();
        c.args(["snapshots", "--json", "--filter-label", &self.label]);
        let out = self.run("snapshots", c)?;
        let groups: Vec<Group> = serde_json::from_str(&out).map_err(|e| RepoError::Output {
            verb: "snapshots",
            error: e.to_string(),
        })?;
        let mut all: Vec<Snapshot> = groups.into_iter().flat_map(|g| g.snapshots).collect();
        all.sort_by_key(|s| epoch_secs(&s.time));
        Ok(all)
    }

    fn restore(
        &self,
        id: &str,
        source: &Path,
        dest: &Path,
        progress: bool,
    ) -> Result<(), RepoError> {
        self.profile_exists()?;
        let mut c = self.cmd_with(progress);
        c.arg("restore")
            .arg(format!("{id}:{}", source.display()))
            .arg(dest);
        if !progress {
            return self.run("restore", c).map(|_| ());
        }
        // rustic draws its progress bar on the terminal; errors are also
        // collected to say what went wrong.
        let mut child = c
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(self.spawn_error())?;
        let mut err = child.stderr.take().expect("piped");
        let mut collected = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(&buf[..n]);
                    collected.extend_from_slice(&buf[..n]);
                }
            }
        }
        let status = child.wait().map_err(self.spawn_error())?;
        if status.success() {
            Ok(())
        } else {
            Err(classify(
                "restore",
                &status.to_string(),
                &String::from_utf8_lossy(&collected),
            ))
        }
    }

    fn init(&self) -> Result<(), RepoError> {
        let mut c = self.cmd();
        c.arg("init");
        self.run("init", c).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_happened() {
        let wrong = "[INFO] using config /x.toml\nerror: `rustic_core` experienced an error related to `credentials handling`.\n\nMessage:\nThe password that has been entered, seems to be incorrect.\n\nFor more information, see: https://rustic.cli.rs/docs/errors/C002\n\nSome additional details ...\n\nBacktrace:\n";
        assert!(matches!(
            classify("snapshots", "exit status: 1", wrong),
            RepoError::WrongPassword
        ));
        let full = "[ERROR] writing /srv/immich/immich/upload/a.jpg: No space left on device (os error 28)\n";
        assert!(matches!(
            classify("restore", "exit status: 1", full),
            RepoError::DiskFull(m) if m.contains("a.jpg")
        ));
        // What rustic 0.11 printed in story 43 with the REST server down.
        let down = "[WARN] Error error sending request for url (http://127.0.0.1:8000/config) at 1s, retrying\n[WARN] Error error sending request for url (http://127.0.0.1:8000/config) at 16s, retrying\nerror: `rustic_core` experienced an error related to `the backend`.\nMessage:\nBackoff failed, please check the logs for more information.\nCaused by:\nerror sending request for url (http://127.0.0.1:8000/config)\n : (source: client error (Connect))\nBacktrace:\n";
        let e = classify("backup", "exit status: 1", down);
        assert!(matches!(&e, RepoError::Unreachable { .. }), "{e:?}");
        let t = e.to_string();
        assert!(
            t.contains("cannot be reached")
                && t.contains("error sending request for url (http://127.0.0.1:8000/config)")
                && !t.contains("retrying"),
            "{t}"
        );
        let other = "[INFO] x\nerror: connection refused\nBacktrace:\n";
        let e = classify("backup", "exit status: 1", other).to_string();
        assert!(
            e.contains("connection refused") && !e.contains("Backtrace"),
            "{e}"
        );
    }

    #[test]
    fn warnings_about_unread_files_name_them() {
        // As rustic 0.11.4 printed it for a file whose open failed (checked
        // by hand with a bind-mounted write-only sysfs file), then a read
        // error's form and one with no path.
        let stderr = "[INFO] starting to backup [\"/srv/immich/immich\"] ...\n\
[WARN] ignoring error: Error: Failed to open ReadSourceOpen at `/srv/immich/immich/upload/photo two.jpg`\n\
Failed to open file at `/srv/immich/immich/upload/photo two.jpg`. Please make sure the file exists and is accessible. (kind: related to input/output operations): caused by: Permission denied (os error 13)\n\
[WARN] ignoring error: Error while backing up `/srv/immich/immich/library/a`b folder`\n\
Failed to read from reader in iterator: Input/output error (os error 5)\n\
[WARN] ignoring error: Error while backing up `/srv/immich/immich/library/a`b folder`\n\
Failed to read from reader in iterator: Input/output error (os error 5)\n\
[WARN] ignoring error reading parent snapshot: tree not found\n\
[WARN] ignoring error: Error: Failed to open ReadSourceOpen at `/srv/immich/immich/upload/deleted.jpg`\n\
Failed to open file at `/srv/immich/immich/upload/deleted.jpg`. Please make sure the file exists and is accessible. (kind: related to input/output operations): caused by: No such file or directory (os error 2)\n\
[WARN] ignoring error when loading parent tree Id(1): not found\n\
[INFO] backup of /srv/immich/immich done.\n";
        assert_eq!(
            unreadable(stderr),
            vec![
                "/srv/immich/immich/upload/photo two.jpg".to_owned(),
                "/srv/immich/immich/library/a`b folder".to_owned(),
                "/srv/immich/immich/library/a`b folder".to_owned(),
                "tree not found".to_owned(),
            ]
        );
        assert!(unreadable("[INFO] backup of /x done.\n[WARN] ignoring error x\n").is_empty());
    }

    #[test]
    fn passwords_in_urls_never_reach_the_journal() {
        let line = "[INFO] repository rest:https://pi:hunter2@nas.local:8000/immich/: password is correct. Also http://host/x and `s3://k:v@b/c`";
        let s = scrub_userinfo(line);
        assert_eq!(
            s,
            "[INFO] repository rest:https://***@nas.local:8000/immich/: password is correct. Also http://host/x and `s3://***@b/c`"
        );
        assert_eq!(scrub_userinfo("no url here"), "no url here");
        assert_eq!(
            scrub_userinfo("ends in https://a:b@h"),
            "ends in https://***@h"
        );
    }

    #[test]
    fn times_with_offsets_order_correctly() {
        assert_eq!(epoch_secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            epoch_secs("2026-11-21T23:00:00.988466981+00:00"),
            Some(1_795_302_000)
        );
        // 02:30 at +02:00 is earlier than 01:45 at +00:00.
        assert!(epoch_secs("2026-03-29T02:30:00+02:00") < epoch_secs("2026-03-29T01:45:00+00:00"));
        assert_eq!(epoch_secs("yesterday"), None);
    }

    #[test]
    fn snapshots_json_parses() {
        let json = r#"[{"group_key":{"hostname":"pi","label":"immich-appliance","paths":["/srv/immich/dumps","/srv/immich/immich"]},
          "snapshots":[{"time":"2026-11-21T03:30:00+00:00","id":"b1","paths":["/srv/immich/dumps","/srv/immich/immich"],"label":"immich-appliance","hostname":"pi","tags":["full"],
          "summary":{"total_files_processed":3,"total_bytes_processed":10,"data_added":5,"data_added_packed":4,"backup_duration":0.5,"files_new":3}},
          {"time":"2026-11-20T03:30:00+00:00","id":"a1","paths":[],"label":"immich-appliance","hostname":"pi","tags":[]}]}]"#;
        let groups: Vec<Group> = serde_json::from_str(json).unwrap();
        let mut all: Vec<Snapshot> = groups.into_iter().flat_map(|g| g.snapshots).collect();
        all.sort_by_key(|s| epoch_secs(&s.time));
        assert_eq!(all[1].id, "b1");
        assert_eq!(all[1].summary.as_ref().unwrap().total_files_processed, 3);
        assert!(all[0].summary.is_none());
    }
}
