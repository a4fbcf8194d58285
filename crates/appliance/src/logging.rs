//! Logging with tracing: to the journal (keeping structured fields) when the
//! process runs under systemd, else to stderr. RUST_LOG (one level: error,
//! warn, info, debug or trace) overrides the level.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by [`init`] when the log goes to the journal rather than stderr.
static LOG_TO_JOURNAL: AtomicBool = AtomicBool::new(false);

/// True when the process runs under systemd (or was started from a process
/// that does): the log then goes to the journal.
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}

/// True when stderr itself is the journal's stream, as systemd.exec(5)
/// says to check: JOURNAL_STREAM names its device and inode. A command run
/// from a service's shell with stderr on a pipe or a terminal is not.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// `verbosity`: -1 quiet, 0 normal, 1 `-v`, 2+ `-vv`.
pub fn init(verbosity: i8) {
    let under_systemd = under_systemd();
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(match verbosity {
            i8::MIN..=-1 => LevelFilter::ERROR,
            // Services log their state changes at info.
            0 if under_systemd => LevelFilter::INFO,
            0 => LevelFilter::WARN,
            1 => LevelFilter::INFO,
            _ => LevelFilter::DEBUG,
        });
    if under_systemd && let Ok(journald) = tracing_journald::layer() {
        let _ = tracing_subscriber::registry()
            .with(level)
            .with(journald)
            .try_init();
        LOG_TO_JOURNAL.store(true, Ordering::Relaxed);
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// An error and its causes as one line of text. A cause whose text the
/// message already contains (thiserror's `{source}` in the format) is left
/// out, so that an OS error is not said twice.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Reports the error a command ends with, once in each place a person
/// reads: the journal when the log goes there, and stderr unless stderr is
/// the journal too. With the log on stderr, only the one line is printed.
pub fn fatal(program: &str, exit: u8, e: &(dyn std::error::Error + 'static)) {
    let text = error_text(e);
    if LOG_TO_JOURNAL.load(Ordering::Relaxed) {
        tracing::error!(exit, "{text}");
    }
    if !stderr_is_journal() {
        // Not eprintln!: it panics when the terminal has gone away.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{program}: error: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot read /x: {0}")]
        Includes(#[source] std::io::Error),
        #[error("cannot start")]
        Wraps(#[source] std::io::Error),
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        assert_eq!(
            error_text(&Outer::Includes(io())),
            "cannot read /x: No such file"
        );
        assert_eq!(
            error_text(&Outer::Wraps(io())),
            "cannot start: No such file"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("start failed")]
        struct Top(#[source] Outer);
        assert_eq!(
            error_text(&Top(Outer::Includes(io()))),
            "start failed: cannot read /x: No such file"
        );
    }
}
