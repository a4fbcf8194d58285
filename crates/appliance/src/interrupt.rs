//! SIGINT, SIGTERM and SIGHUP during a verb that changes things (`start`,
//! `init`, `restore`): the signal is recorded instead of killing the
//! process half-way, and the verb checks for it between its steps and rolls
//! back as a failure does. An SSH session that drops sends SIGHUP, so an
//! unlock from a phone that loses its connection ends locked, not half-up.
//!
//! Until [`defer`] is called the signals keep their default action: a
//! Ctrl-C at the passphrase prompt, before anything changed, ends the run.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The first signal received since [`defer`], or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn record(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {name} (a Ctrl-C, a stop, or a dropped SSH connection); what was done is rolled back", name = signal_name(*.0))]
pub struct Interrupted(pub i32);

fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("a signal")
}

/// From now on the three signals are recorded, not fatal. Idempotent.
/// SA_RESTART keeps the system calls of a step from failing half-way.
pub fn defer() {
    let action = SigAction::new(
        SigHandler::Handler(record),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in SIGNALS {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(s, &action) };
    }
}

/// Err once one of the signals arrived after [`defer`].
pub fn check() -> Result<(), Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => Ok(()),
        sig => Err(Interrupted(sig)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_after_defer_is_recorded_and_reported_not_fatal() {
        assert_eq!(check(), Ok(()));
        defer();
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();
        let e = check().unwrap_err();
        assert_eq!(e, Interrupted(libc::SIGHUP));
        assert!(e.to_string().contains("SIGHUP"), "{e}");
        // The first signal is the one reported.
        nix::sys::signal::raise(Signal::SIGTERM).unwrap();
        assert_eq!(check(), Err(Interrupted(libc::SIGHUP)));
    }
}
