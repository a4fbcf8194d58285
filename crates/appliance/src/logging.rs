//! Logging with tracing: to the journal (keeping structured fields) when the
//! process runs under systemd, else to stderr. RUST_LOG (one level: error,
//! warn, info, debug or trace) overrides the level.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// `verbosity`: -1 quiet, 0 normal, 1 `-v`, 2+ `-vv`.
pub fn init(verbosity: i8) {
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
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
