//! Logging with tracing: to the journal (keeping structured fields) when the
//! process runs under systemd, else to stderr. RUST_LOG overrides the level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// `verbosity`: -1 quiet, 0 normal, 1 `-v`, 2+ `-vv`.
pub fn init(verbosity: i8) {
    let default = match verbosity {
        i8::MIN..=-1 => "error",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Services log their state changes at info.
        EnvFilter::new(if under_systemd && verbosity == 0 {
            "info"
        } else {
            default
        })
    });
    if under_systemd && let Ok(journald) = tracing_journald::layer() {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
