//! Logging with tracing: to the journal (keeping structured fields) when the
//! process runs under systemd, else to stderr. RUST_LOG (one level: error,
//! warn, info, debug or trace) overrides the level.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// True when the process runs under systemd, whose journal takes both the
/// log and stderr: a fatal error then goes to one of them, not both.
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some()
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

/// Reports the error a command ends with, once: to the journal under
/// systemd (where stderr lands too), else on stderr with the program's name.
pub fn fatal(program: &str, exit: u8, e: &(dyn std::error::Error + 'static)) {
    let text = error_text(e);
    if under_systemd() {
        tracing::error!(exit, "{text}");
    } else {
        eprintln!("{program}: error: {text}");
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
