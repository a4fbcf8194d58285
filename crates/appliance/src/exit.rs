//! Exit codes of `immich-server`. Scripts may rely on them. This enum is
//! their one definition: `--help` prints [`help_table`], and a test checks
//! the table in docs/after-a-reboot.md against [`Exit::ALL`].

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    WrongPassphrase = 3,
    Drive = 4,
    NotRoot = 5,
    Busy = 6,
    Unit = 7,
    Config = 8,
    Immich = 9,
    Aborted = 10,
    Backup = 11,
    Interrupted = 12,
    Attention = 13,
    Alert = 14,
}

impl Exit {
    pub const ALL: [Exit; 15] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::WrongPassphrase,
        Exit::Drive,
        Exit::NotRoot,
        Exit::Busy,
        Exit::Unit,
        Exit::Config,
        Exit::Immich,
        Exit::Aborted,
        Exit::Backup,
        Exit::Interrupted,
        Exit::Attention,
        Exit::Alert,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the code tells a person or a script, in plain words.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "done, or already in the requested state",
            Exit::Failure => "failed; whatever start had done was rolled back",
            Exit::Usage => "bad command line",
            Exit::WrongPassphrase => "wrong passphrase (nothing changed)",
            Exit::Drive => {
                "a drive problem: missing, not LUKS, in use, the wrong drive, unplugged, or full"
            }
            Exit::NotRoot => "not run as root (use sudo)",
            Exit::Busy => {
                "busy: a process still uses the drive (it stays mounted), or another run or a backup holds the lock"
            }
            Exit::Unit => "a service failed to start (rolled back) or to stop",
            Exit::Config => "the config file is invalid",
            Exit::Immich => "Immich did not answer in time (rolled back)",
            Exit::Aborted => "init was not confirmed",
            Exit::Backup => "a backup, check, restore or drill failed",
            Exit::Interrupted => {
                "interrupted (Ctrl-C, a stop, a dropped SSH session); what was done was rolled back"
            }
            Exit::Attention => {
                "status: something needs you (a service down, the drive unplugged, nearly full or failing, backups red); its advice says what"
            }
            Exit::Alert => "alerts: a message could not be delivered (the next check tries again)",
        }
    }
}

/// The table printed in --help.
pub fn help_table() -> String {
    let mut s = String::from("Exit codes:");
    for e in Exit::ALL {
        s.push_str(&format!("\n {:>2}  {}", e.code(), e.meaning()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        for (i, e) in Exit::ALL.iter().enumerate() {
            assert_eq!(usize::from(e.code()), i);
        }
    }

    #[test]
    fn the_docs_table_is_the_enum() {
        let doc = include_str!("../../../docs/after-a-reboot.md");
        let section = doc
            .split("## Exit codes")
            .nth(1)
            .expect("docs/after-a-reboot.md has an Exit codes section");
        let rows: Vec<(u8, String)> = section
            .lines()
            .skip_while(|l| !l.starts_with("| code"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                (cells[0].parse().expect("a code"), cells[1].to_owned())
            })
            .collect();
        let want: Vec<(u8, String)> = Exit::ALL
            .iter()
            .map(|e| (e.code(), e.meaning().to_owned()))
            .collect();
        assert_eq!(
            rows, want,
            "docs/after-a-reboot.md's table differs from exit.rs"
        );
    }
}
