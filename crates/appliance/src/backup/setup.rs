//! Setting up the repository: where it is, its password and the backend's
//! options (cloud keys) go into rustic's profile in the drive's secrets
//! folder, never onto the SD card. `restore` uses the same pieces to reach
//! the repository from a new drive.

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::rustic::Repo;
use super::{BackupError, Paths, drive_ready, write_secret};
use crate::config::Config;
use crate::luks;
use crate::secret::{self, Passphrase, Source};

/// How to reach a repository. The options may hold cloud keys.
pub struct Access {
    pub repository: String,
    pub password: Passphrase,
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("repository", &self.repository)
            .field(
                "options",
                &self.options.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Questions for the person at the terminal.
pub trait Ask {
    /// Whether there is a terminal to ask on.
    fn interactive(&self) -> bool;
    fn line(&self, prompt: &str) -> Result<String, BackupError>;
    /// A line typed without echo (a cloud key).
    fn hidden(&self, prompt: &str) -> Result<String, BackupError>;
}

/// Asks on /dev/tty.
#[derive(Debug)]
pub struct Tty;

impl Ask for Tty {
    fn interactive(&self) -> bool {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .is_ok()
    }
    fn line(&self, prompt: &str) -> Result<String, BackupError> {
        let tty = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|_| {
                BackupError::Other(
                    "there is no terminal to ask on; give the answers as options (see --help)"
                        .into(),
                )
            })?;
        let mut w = &tty;
        let _ = w.write_all(prompt.as_bytes());
        let _ = w.flush();
        let mut line = String::new();
        std::io::BufReader::new(&tty)
            .read_line(&mut line)
            .map_err(BackupError::io("cannot read from the terminal"))?;
        Ok(line.trim().to_owned())
    }
    fn hidden(&self, prompt: &str) -> Result<String, BackupError> {
        rpassword::prompt_password(prompt)
            .map(|l| l.trim().to_owned())
            .map_err(BackupError::io("cannot read from the terminal"))
    }
}

/// Whether an option's value is a secret, to be typed without echo: the
/// names opendal's services give their keys and passwords.
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "key", "password", "token", "credential", "sas"]
        .iter()
        .any(|w| k.contains(w))
}

/// Options for the backend: `key = value` lines, `#` comments. They can
/// hold secrets, so they come from a file or the terminal, never argv.
pub fn parse_options(text: &str) -> Result<Vec<(String, String)>, BackupError> {
    let mut v = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, val) = line.split_once('=').ok_or_else(|| {
            BackupError::Other(format!(
                "line {} of the options is not `key = value`: `{line}`",
                n + 1
            ))
        })?;
        let k = k.trim();
        let val = val.trim().trim_matches('"');
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(BackupError::Other(format!(
                "line {}: `{k}` is not an option name",
                n + 1
            )));
        }
        v.push((k.to_owned(), val.to_owned()));
    }
    Ok(v)
}

/// What `setup` and `restore` were told about the repository.
#[derive(Debug, Default, Clone)]
pub struct AccessArgs {
    pub repository: Option<String>,
    /// The repository password: a file, or `-` for stdin; the terminal
    /// when absent.
    pub password: Option<PathBuf>,
    pub options_file: Option<PathBuf>,
}

/// Gathers the access from the arguments and, where they are silent, the
/// terminal. `new_password` is Some for a new repository (the password is
/// generated, not asked).
pub fn gather(
    args: &AccessArgs,
    ask: &dyn Ask,
    new_password: Option<Passphrase>,
) -> Result<Access, BackupError> {
    let repository = match &args.repository {
        Some(r) => r.trim().to_owned(),
        None => {
            if !ask.interactive() {
                return Err(BackupError::Other(
                    "say where the repository is: --repository (for example rest:https://host:8000/immich or opendal:b2)"
                        .into(),
                ));
            }
            ask.line(
                "Repository (for example opendal:b2, opendal:s3, rest:https://host:8000/immich, or a local path): ",
            )?
        }
    };
    if repository.is_empty() || repository.contains('\n') {
        return Err(BackupError::Other("the repository cannot be empty".into()));
    }
    if repository.starts_with("rclone:") {
        // rclone would read its own config, with the cloud keys, from outside
        // the encrypted drive; and the backup unit does not carry it.
        return Err(BackupError::Other(
            "rclone: repositories are not supported: rclone keeps its cloud keys in its own config, outside the encrypted drive. Use opendal:s3 or opendal:b2, or `rclone serve restic` on another machine with a rest: repository (docs/backups.md)".into(),
        ));
    }
    let options = match &args.options_file {
        Some(f) => parse_options(&fs::read_to_string(f).map_err(BackupError::io(format!(
            "cannot read the options file {}",
            f.display()
        )))?)?,
        None if ask.interactive() && repository.starts_with("opendal:") => {
            let mut text = String::new();
            eprintln!(
                "The {repository} backend needs options, such as the bucket and the keys (see docs/backups.md)."
            );
            loop {
                let key = ask.line("  option name (for example bucket; empty line when done): ")?;
                if key.is_empty() {
                    break;
                }
                let value = if looks_secret(&key) {
                    ask.hidden(&format!("  {key} (not shown as you type): "))?
                } else {
                    ask.line(&format!("  {key}: "))?
                };
                text.push_str(&format!("{key} = {value}\n"));
            }
            parse_options(&text)?
        }
        None => vec![],
    };
    let password = match new_password {
        Some(p) => p,
        None => secret::read(
            &Source::from_arg(args.password.as_deref()),
            "Repository password: ",
        )
        .map_err(|e| BackupError::Other(e.to_string()))?,
    };
    if password.is_empty() {
        return Err(BackupError::Other(
            "the repository password is empty".into(),
        ));
    }
    Ok(Access {
        repository,
        password,
        options,
    })
}

/// rustic's profile: the repository, where its password is, and the
/// backend's options.
pub fn profile_text(access: &Access, password_file: &Path) -> String {
    let mut repo = toml::Table::new();
    repo.insert("repository".into(), access.repository.clone().into());
    repo.insert(
        "password-file".into(),
        password_file.display().to_string().into(),
    );
    if !access.options.is_empty() {
        let mut o = toml::Table::new();
        for (k, v) in &access.options {
            o.insert(k.clone(), v.clone().into());
        }
        repo.insert("options".into(), o.into());
    }
    let mut root = toml::Table::new();
    root.insert("repository".into(), repo.into());
    format!(
        "# rustic's profile for the Immich appliance, written by immich-server.\n\
         # It lives on the encrypted drive only. Keep a copy of the repository\n\
         # and its password in your password manager.\n{}",
        toml::to_string(&root).expect("serialises")
    )
}

/// Writes the profile and the password file (both 0600).
pub fn write_access(
    access: &Access,
    profile: &Path,
    password_file: &Path,
) -> Result<(), BackupError> {
    let r = write_secret(password_file, &access.password.line());
    r.map_err(BackupError::io(format!(
        "cannot write {}",
        password_file.display()
    )))?;
    write_secret(profile, profile_text(access, password_file).as_bytes()).map_err(BackupError::io(
        format!("cannot write {}", profile.display()),
    ))
}

#[derive(Debug, Default, Clone)]
pub struct SetupOptions {
    pub access: AccessArgs,
    /// Use a repository that exists already (its password is asked for).
    pub existing: bool,
    /// Replace a profile that is set up already.
    pub force: bool,
}

/// What setup did; the generated password is shown once, in the
/// emergency kit.
#[derive(Debug)]
pub struct SetupReport {
    pub repository: String,
    pub created: bool,
    /// The password, when setup made it up (shown once).
    pub generated_password: Option<Passphrase>,
    /// The repository uses the backup password of the drive's emergency kit.
    pub password_from_kit: bool,
    pub option_names: Vec<String>,
    pub snapshots: usize,
}

pub fn setup(
    cfg: &Config,
    opts: &SetupOptions,
    ask: &dyn Ask,
    make_repo: &dyn Fn(&Path) -> Box<dyn Repo>,
) -> Result<SetupReport, BackupError> {
    if !drive_ready(cfg) {
        return Err(BackupError::DriveLocked(cfg.drive.mount_point.clone()));
    }
    let _lock = super::try_lock(cfg)?;
    let p = Paths::new(cfg);
    if p.profile.exists() && !opts.force {
        return Err(BackupError::Other(format!(
            "a repository is set up already ({}). To replace it, run setup again with --force",
            p.profile.display()
        )));
    }
    // A new repository uses the backup password `init` generated and put in
    // the emergency kit; a given password wins, and one is generated only
    // for a drive that has none.
    let mut from_kit = false;
    let generated = if opts.existing || opts.access.password.is_some() {
        None
    } else if let Ok(text) = fs::read(&p.password) {
        let pw = Passphrase::new(
            String::from_utf8_lossy(&text)
                .trim_end_matches(['\n', '\r'])
                .as_bytes()
                .to_vec(),
        );
        from_kit = !pw.is_empty();
        from_kit.then_some(pw)
    } else {
        None
    };
    let generated = match generated {
        Some(pw) => Some(pw),
        None if !opts.existing && opts.access.password.is_none() => {
            Some(luks::random_secret().map_err(BackupError::io("cannot generate a password"))?)
        }
        None => None,
    };
    let show = generated
        .as_ref()
        .filter(|_| !from_kit)
        .map(|g| Passphrase::new(g.as_bytes().to_vec()));
    let access = gather(&opts.access, ask, generated)?;

    // Keep the previous profile until the new one works.
    let aside = |f: &Path| f.with_extension("previous");
    let had = p.profile.exists();
    if had {
        for f in [&p.profile, &p.password] {
            if f.exists() {
                fs::rename(f, aside(f))
                    .map_err(BackupError::io("cannot move the old profile aside"))?;
            }
        }
    }
    let undo = |p: &Paths| {
        let _ = fs::remove_file(&p.profile);
        let _ = fs::remove_file(&p.password);
        if had {
            for f in [&p.profile, &p.password] {
                let _ = fs::rename(aside(f), f);
            }
        }
    };
    if let Err(e) = write_access(&access, &p.profile, &p.password) {
        undo(&p);
        return Err(e);
    }
    let _ = fs::create_dir_all(&p.cache);
    let repo = make_repo(&p.profile);
    let outcome = if opts.existing {
        repo.snapshots().map(|s| s.len())
    } else {
        repo.init().map(|()| 0)
    };
    match outcome {
        Ok(snapshots) => {
            for f in [&p.profile, &p.password] {
                let _ = fs::remove_file(aside(f));
            }
            Ok(SetupReport {
                repository: access.repository.clone(),
                created: !opts.existing,
                generated_password: show,
                password_from_kit: from_kit,
                option_names: access.options.iter().map(|(k, _)| k.clone()).collect(),
                snapshots,
            })
        }
        Err(e) => {
            undo(&p);
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_keys_are_asked_without_echo_and_the_rest_in_the_clear() {
        struct Script {
            answers: std::cell::RefCell<Vec<&'static str>>,
            asked: std::cell::RefCell<Vec<String>>,
        }
        impl Ask for Script {
            fn interactive(&self) -> bool {
                true
            }
            fn line(&self, p: &str) -> Result<String, BackupError> {
                self.asked.borrow_mut().push(format!("shown: {p}"));
                Ok(self.answers.borrow_mut().remove(0).into())
            }
            fn hidden(&self, p: &str) -> Result<String, BackupError> {
                self.asked.borrow_mut().push(format!("hidden: {p}"));
                Ok(self.answers.borrow_mut().remove(0).into())
            }
        }
        let ask = Script {
            answers: vec![
                "bucket",
                "photos",
                "secret_access_key",
                "s3cr3t",
                "access_key_id",
                "AKIA",
                "",
            ]
            .into(),
            asked: Default::default(),
        };
        let args = AccessArgs {
            repository: Some("opendal:s3".into()),
            password: None,
            options_file: None,
        };
        let access = gather(
            &args,
            &ask,
            Some(Passphrase::new(b"a long repository password".to_vec())),
        )
        .unwrap();
        let asked = ask.asked.borrow();
        assert!(asked.iter().any(|a| a == "shown:   bucket: "), "{asked:?}");
        assert!(
            asked
                .iter()
                .any(|a| a.starts_with("hidden:   secret_access_key")),
            "{asked:?}"
        );
        assert!(
            asked
                .iter()
                .any(|a| a.starts_with("hidden:   access_key_id")),
            "{asked:?}"
        );
        assert_eq!(
            access.options,
            [
                ("bucket".to_owned(), "photos".to_owned()),
                ("secret_access_key".to_owned(), "s3cr3t".to_owned()),
                ("access_key_id".to_owned(), "AKIA".to_owned()),
            ]
        );
        assert!(!format!("{access:?}").contains("s3cr3t"), "{access:?}");
    }

    #[test]
    fn rclone_repositories_are_refused_with_the_alternatives() {
        let args = AccessArgs {
            repository: Some("rclone:gdrive:immich".into()),
            password: None,
            options_file: None,
        };
        struct NoTty;
        impl Ask for NoTty {
            fn interactive(&self) -> bool {
                false
            }
            fn line(&self, _: &str) -> Result<String, BackupError> {
                Err(BackupError::Other("no terminal".into()))
            }
            fn hidden(&self, _: &str) -> Result<String, BackupError> {
                Err(BackupError::Other("no terminal".into()))
            }
        }
        let err = gather(&args, &NoTty, None).unwrap_err().to_string();
        assert!(
            err.contains("not supported") && err.contains("rclone serve restic"),
            "{err}"
        );
    }

    #[test]
    fn options_parse_and_refuse_garbage() {
        let o = parse_options("# keys\nbucket = photos\napplication_key_id=\"004a\"\n\n").unwrap();
        assert_eq!(
            o,
            vec![
                ("bucket".to_owned(), "photos".to_owned()),
                ("application_key_id".to_owned(), "004a".to_owned())
            ]
        );
        assert!(parse_options("just words").is_err());
        assert!(parse_options("bad key = 1").is_err());
    }

    #[test]
    fn the_profile_holds_no_password_and_quotes_everything() {
        let a = Access {
            repository: "rest:http://127.0.0.1:8000/x \"y\"".into(),
            password: Passphrase::new(b"hunter2-secret".to_vec()),
            options: vec![("secret_access_key".into(), "a\"b".into())],
        };
        let text = profile_text(&a, Path::new("/srv/immich/secrets/backup-password"));
        assert!(!text.contains("hunter2"), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let r = parsed["repository"].as_table().unwrap();
        assert_eq!(
            r["repository"].as_str(),
            Some("rest:http://127.0.0.1:8000/x \"y\"")
        );
        assert_eq!(r["options"]["secret_access_key"].as_str(), Some("a\"b"));
        assert_eq!(
            r["password-file"].as_str(),
            Some("/srv/immich/secrets/backup-password")
        );
        assert!(
            !format!("{a:?}").contains("a\\\"b"),
            "Debug hides option values"
        );
    }
}
