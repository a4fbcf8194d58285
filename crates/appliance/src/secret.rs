//! Passphrases: read from the tty, a file or stdin; never from argv or the
//! environment; wiped from memory when dropped; never printed.

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A secret byte string. Its Debug output is redacted and its memory is
/// overwritten when it is dropped.
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    pub fn new(bytes: Vec<u8>) -> Self {
        Passphrase(Zeroizing::new(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The secret and a newline, as a password file holds it. Made in one
    /// allocation of the exact size: a `to_vec()` then `push` may move the
    /// bytes to a bigger buffer and leave an unwiped copy in the old one.
    pub fn line(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(self.0.len() + 1));
        v.extend_from_slice(&self.0);
        v.push(b'\n');
        v
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passphrase(<{} bytes, redacted>)", self.0.len())
    }
}

/// Where a passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Prompt on the controlling terminal (rpassword reads /dev/tty).
    Tty,
    /// `--passphrase-file -`
    Stdin,
    /// `--passphrase-file PATH`
    File(PathBuf),
}

impl Source {
    /// `None` → tty, `-` → stdin, anything else → a file.
    pub fn from_arg(arg: Option<&Path>) -> Source {
        match arg {
            None => Source::Tty,
            Some(p) if p == Path::new("-") => Source::Stdin,
            Some(p) => Source::File(p.to_owned()),
        }
    }
    pub fn is_interactive(&self) -> bool {
        matches!(self, Source::Tty)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the passphrase from {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the passphrase from {0} is empty")]
    Empty(String),
    #[error(
        "no terminal to ask for the passphrase on; pass --passphrase-file PATH, or - for stdin"
    )]
    NoTty,
    #[error("the two passphrases differ; nothing was changed")]
    Mismatch,
    #[error(
        "the passphrase is too short ({len} bytes); use at least {min} (a few random words are best)"
    )]
    TooShort { len: usize, min: usize },
}

/// Reads one passphrase. From a file or stdin the passphrase is the content
/// up to a final newline ("\n" or "\r\n"); spaces and any UTF-8 are kept.
pub fn read(source: &Source, prompt: &str) -> Result<Passphrase, SecretError> {
    match source {
        Source::Tty => {
            if !std::path::Path::new("/dev/tty").exists() {
                return Err(SecretError::NoTty);
            }
            let s = Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| {
                if e.raw_os_error() == Some(libc::ENXIO) {
                    SecretError::NoTty
                } else {
                    SecretError::Read {
                        what: "the terminal".into(),
                        source: e,
                    }
                }
            })?);
            let p = Passphrase::new(s.as_bytes().to_vec());
            if p.is_empty() {
                return Err(SecretError::Empty("the terminal".into()));
            }
            Ok(p)
        }
        Source::Stdin => from_reader(std::io::stdin().lock(), "stdin"),
        Source::File(path) => {
            let f = std::fs::File::open(path).map_err(|e| SecretError::Read {
                what: path.display().to_string(),
                source: e,
            })?;
            from_reader(f, &path.display().to_string())
        }
    }
}

/// How often `init` asks again on a terminal when the passphrase is too short
/// or the second typing differs: a typo should not end the run.
pub const NEW_PASSPHRASE_TRIES: usize = 3;

/// Reads a new passphrase for `init`: twice on a tty (asking again, up to
/// [`NEW_PASSPHRASE_TRIES`] times, after a mismatch or a short one), once
/// otherwise.
pub fn read_new(source: &Source, min_len: usize) -> Result<Passphrase, SecretError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let last = !source.is_interactive() || tries >= NEW_PASSPHRASE_TRIES;
        let p = read(source, "New drive passphrase: ")?;
        let problem = if p.len() < min_len {
            SecretError::TooShort {
                len: p.len(),
                min: min_len,
            }
        } else if source.is_interactive()
            && read(source, "Type it again: ")?.as_bytes() != p.as_bytes()
        {
            SecretError::Mismatch
        } else {
            return Ok(p);
        };
        if last {
            return Err(problem);
        }
        match problem {
            SecretError::Mismatch => eprintln!("The two passphrases differ; try again."),
            other => eprintln!("{other}; try again."),
        }
    }
}

pub fn from_reader(mut r: impl Read, what: &str) -> Result<Passphrase, SecretError> {
    let mut buf = Zeroizing::new(Vec::new());
    r.read_to_end(&mut buf).map_err(|e| SecretError::Read {
        what: what.to_owned(),
        source: e,
    })?;
    let mut end = buf.len();
    if end > 0 && buf[end - 1] == b'\n' {
        end -= 1;
        if end > 0 && buf[end - 1] == b'\r' {
            end -= 1;
        }
    }
    if end == 0 {
        return Err(SecretError::Empty(what.to_owned()));
    }
    Ok(Passphrase::new(buf[..end].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spaces_and_unicode_strips_one_final_newline() {
        let p = from_reader("  correct horse – bätterÿ 🐎 \n".as_bytes(), "t").unwrap();
        assert_eq!(p.as_bytes(), "  correct horse – bätterÿ 🐎 ".as_bytes());
        let p = from_reader(&b"pw\r\n"[..], "t").unwrap();
        assert_eq!(p.as_bytes(), b"pw");
        let p = from_reader(&b"pw\n\n"[..], "t").unwrap();
        assert_eq!(p.as_bytes(), b"pw\n", "only the final newline is removed");
        let p = from_reader(&b"no newline"[..], "t").unwrap();
        assert_eq!(p.as_bytes(), b"no newline");
    }

    #[test]
    fn empty_is_refused() {
        assert!(matches!(
            from_reader(&b"\n"[..], "t"),
            Err(SecretError::Empty(_))
        ));
        assert!(matches!(
            from_reader(&b""[..], "t"),
            Err(SecretError::Empty(_))
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let p = Passphrase::new(b"hunter2".to_vec());
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"));
        assert_eq!(shown, "Passphrase(<7 bytes, redacted>)");
    }

    #[test]
    fn sources_from_args() {
        assert_eq!(Source::from_arg(None), Source::Tty);
        assert_eq!(Source::from_arg(Some(Path::new("-"))), Source::Stdin);
        assert_eq!(
            Source::from_arg(Some(Path::new("/run/pw"))),
            Source::File("/run/pw".into())
        );
    }

    #[test]
    fn new_passphrase_minimum_length() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "short\n").unwrap();
        let err = read_new(&Source::File(f.clone()), 8).unwrap_err();
        assert!(matches!(err, SecretError::TooShort { len: 5, min: 8 }));
        std::fs::write(&f, "long enough phrase\n").unwrap();
        assert_eq!(read_new(&Source::File(f), 8).unwrap().len(), 18);
    }

    #[test]
    fn a_password_line_is_made_without_a_second_buffer() {
        let p = Passphrase::new(b"correct horse".to_vec());
        let line = p.line();
        assert_eq!(&line[..], b"correct horse\n");
        // Exactly the size asked for (Vec's guarantee for with_capacity),
        // so the push never reallocated.
        assert_eq!(line.capacity(), p.len() + 1);
    }
}
