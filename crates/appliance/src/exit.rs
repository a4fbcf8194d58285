//! Exit codes of `immich-server`, documented in its --help and in
//! docs/after-a-reboot.md. Scripts may rely on them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, or nothing to do (the verb was already in effect).
    Ok = 0,
    /// Something failed; what `start` had done was rolled back.
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The drive passphrase was wrong; nothing was changed.
    WrongPassphrase = 3,
    /// The drive: missing, not LUKS, in use, the wrong drive, or unplugged.
    Drive = 4,
    /// Not run as root.
    NotRoot = 5,
    /// The drive is busy (a process holds the mount); it stays mounted.
    Busy = 6,
    /// A service failed to start (rolled back) or to stop.
    Unit = 7,
    /// The config file is invalid.
    Config = 8,
    /// Immich did not answer its ping in time (rolled back).
    Immich = 9,
    /// `init` was not confirmed.
    Aborted = 10,
    /// A backup, check, restore or drill failed.
    Backup = 11,
    /// Interrupted by SIGINT, SIGTERM or SIGHUP (a dropped SSH session);
    /// what the run had done was rolled back.
    Interrupted = 12,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The table printed in --help.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done, or already in the requested state
  1  failed; whatever start had done was rolled back
  2  bad command line
  3  wrong passphrase (nothing changed)
  4  drive problem: missing, not LUKS, in use, wrong drive, unplugged
  5  not run as root (use sudo)
  6  the drive is busy: a process still uses it (it stays mounted)
  7  a service failed to start (rolled back) or to stop
  8  invalid config file
  9  Immich did not answer in time (rolled back)
 10  init was not confirmed
 11  backup, check, restore or drill failed
 12  interrupted (Ctrl-C, a stop, a dropped SSH session); rolled back";
