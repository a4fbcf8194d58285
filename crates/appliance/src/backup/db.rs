//! Immich's PostgreSQL database, behind one trait: a consistent dump with
//! the exact row counts of what it holds, a restore, and scratch databases
//! for the drill. The real implementation runs pg_dump, pg_restore and psql
//! as the PostgreSQL superuser over the local socket (peer authentication;
//! no password anywhere).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read {what}: {error}")]
    Output { what: String, error: String },
    #[error("the PostgreSQL user `{0}` does not exist on this system")]
    NoUser(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Row counts per table (schema-qualified name → rows).
pub type RowCounts = BTreeMap<String, u64>;

pub trait Database {
    /// Writes a consistent dump (custom format) of `db` into `out` and
    /// returns the row counts of exactly what the dump holds.
    fn dump(&self, db: &str, out: &File) -> Result<RowCounts, DbError>;
    /// Loads `dump` into `db` in one transaction (all or nothing).
    fn restore(&self, db: &str, dump: &Path) -> Result<(), DbError>;
    /// Exact row counts of every table outside the system schemas.
    fn row_counts(&self, db: &str) -> Result<RowCounts, DbError>;
    /// Whether `db` exists.
    fn exists(&self, db: &str) -> Result<bool, DbError>;
    fn create(&self, db: &str) -> Result<(), DbError>;
    fn drop(&self, db: &str) -> Result<(), DbError>;
}

/// pg_dump, pg_restore and psql as the superuser, over the local socket.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub pg_dump: String,
    pub pg_restore: String,
    pub psql: String,
    pub superuser: String,
}

// Counts every user table exactly, in one query: query_to_xml runs a
// count(*) per table, so the statistics' estimates are never used.
const ROW_COUNTS_SQL: &str = "SELECT format('%I.%I', table_schema, table_name) || chr(9) || \
    (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text \
    FROM information_schema.tables \
    WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') \
    ORDER BY 1";

const END: &str = "__immich_appliance_end__";

impl PgTools {
    fn as_superuser(&self, tool: &str) -> Result<Command, DbError> {
        let user = nix::unistd::User::from_name(&self.superuser)
            .ok()
            .flatten()
            .ok_or_else(|| DbError::NoUser(self.superuser.clone()))?;
        let mut c = Command::new(tool);
        c.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        // The tools look for ~/.psqlrc and friends; root's home is not theirs.
        c.env("HOME", &user.dir).env("PGUSER", &self.superuser);
        c.current_dir("/");
        Ok(c)
    }

    /// Runs `c` with `stdin`, and returns its standard output, or its
    /// standard error in the failure.
    fn output(&self, what: &str, mut c: Command, stdin: Stdio) -> Result<String, DbError> {
        let tool = c.get_program().to_string_lossy().into_owned();
        let out = c
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| DbError::Spawn { tool, source })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(DbError::Failed {
                what: what.to_owned(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    fn psql(&self, db: &str, sql: &str) -> Result<String, DbError> {
        let mut c = self.as_superuser(&self.psql)?;
        c.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]);
        self.output(&format!("psql on {db}"), c, Stdio::null())
    }

    /// The body of `dump`, run while the psql session holds the snapshot.
    fn dump_in_session(
        &self,
        db: &str,
        out: &File,
        to: &mut impl Write,
        from: &mut impl BufRead,
    ) -> Result<RowCounts, DbError> {
        writeln!(
            to,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();"
        )?;
        to.flush()?;
        let snapshot = read_line(from, "the exported snapshot")?;

        let mut d = self.as_superuser(&self.pg_dump)?;
        d.args(["--format=custom", "--snapshot", &snapshot, "--dbname", db]);
        // Root opened the file on the drive; pg_dump writes to it through its
        // stdout and never needs access to the directory itself.
        d.stdout(out.try_clone()?);
        let o = d
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DbError::Spawn {
                tool: self.pg_dump.clone(),
                source,
            })?
            .wait_with_output()?;
        if !o.status.success() {
            return Err(DbError::Failed {
                what: format!("pg_dump of {db}"),
                status: o.status.to_string(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            });
        }

        writeln!(to, "{ROW_COUNTS_SQL};\n\\echo {END}")?;
        to.flush()?;
        let mut text = String::new();
        loop {
            let line = read_line(from, "the row counts")?;
            if line == END {
                break;
            }
            text.push_str(&line);
            text.push('\n');
        }
        writeln!(to, "COMMIT;")?;
        to.flush()?;
        parse_counts(&text)
    }
}

fn read_line(r: &mut impl BufRead, what: &str) -> Result<String, DbError> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(DbError::Output {
            what: what.to_owned(),
            error: "psql ended early".into(),
        });
    }
    Ok(line.trim_end().to_owned())
}

/// A database name as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Database for PgTools {
    fn dump(&self, db: &str, out: &File) -> Result<RowCounts, DbError> {
        // A psql session holds a repeatable-read transaction and exports its
        // snapshot; pg_dump uses that snapshot, and the row counts are taken
        // in the same transaction, so they describe exactly the dump.
        let mut c = self.as_superuser(&self.psql)?;
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db]);
        let mut session = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DbError::Spawn {
                tool: self.psql.clone(),
                source,
            })?;
        let mut to = session.stdin.take().expect("piped");
        let mut from = BufReader::new(session.stdout.take().expect("piped"));
        let result = self.dump_in_session(db, out, &mut to, &mut from);
        // Closing stdin ends the session (and the transaction, if it failed).
        drop(to);
        let status = session.wait()?;
        let mut stderr = String::new();
        if let Some(mut e) = session.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        match result {
            Ok(counts) if status.success() => Ok(counts),
            Ok(_) => Err(DbError::Failed {
                what: format!("the psql session of the dump of {db}"),
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            }),
            Err(e) if !stderr.trim().is_empty() => Err(DbError::Failed {
                what: format!("the dump of {db} ({e})"),
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            }),
            Err(e) => Err(e),
        }
    }

    fn restore(&self, db: &str, dump: &Path) -> Result<(), DbError> {
        let mut c = self.as_superuser(&self.pg_restore)?;
        c.args(["--single-transaction", "--exit-on-error", "--dbname", db]);
        let dump = File::open(dump)?;
        self.output(&format!("pg_restore into {db}"), c, dump.into())
            .map(drop)
    }

    fn row_counts(&self, db: &str) -> Result<RowCounts, DbError> {
        parse_counts(&self.psql(db, ROW_COUNTS_SQL)?)
    }

    fn exists(&self, db: &str) -> Result<bool, DbError> {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                db.replace('\'', "''")
            ),
        )?;
        Ok(out.trim() == "1")
    }

    fn create(&self, db: &str) -> Result<(), DbError> {
        self.psql("postgres", &format!("CREATE DATABASE {}", ident(db)))
            .map(|_| ())
    }

    fn drop(&self, db: &str) -> Result<(), DbError> {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db)),
        )
        .map(|_| ())
    }
}

pub fn parse_counts(out: &str) -> Result<RowCounts, DbError> {
    let mut m = RowCounts::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (table, n) = line.split_once('\t').ok_or_else(|| DbError::Output {
            what: "row counts".into(),
            error: format!("unexpected line `{line}`"),
        })?;
        let n = n.trim().parse().map_err(|e| DbError::Output {
            what: "row counts".into(),
            error: format!("`{line}`: {e}"),
        })?;
        m.insert(table.to_owned(), n);
    }
    Ok(m)
}

/// Differences between expected and found row counts, as sentences.
pub fn compare_counts(expected: &RowCounts, found: &RowCounts) -> Vec<String> {
    let mut diffs = vec![];
    for (t, n) in expected {
        match found.get(t) {
            None => diffs.push(format!("table {t} is missing (expected {n} rows)")),
            Some(m) if m != n => diffs.push(format!("table {t} has {m} rows, expected {n}")),
            Some(_) => {}
        }
    }
    for t in found.keys().filter(|t| !expected.contains_key(*t)) {
        diffs.push(format!("table {t} was not in the dump"));
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_and_compare() {
        let a = parse_counts("public.asset\t12\npublic.\"user\"\t1\n\n").unwrap();
        assert_eq!(a["public.asset"], 12);
        let mut b = a.clone();
        assert!(compare_counts(&a, &b).is_empty());
        b.insert("public.asset".into(), 11);
        b.remove("public.\"user\"");
        b.insert("public.extra".into(), 0);
        let d = compare_counts(&a, &b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(
            d.iter().any(|x| x.contains("11 rows, expected 12")),
            "{d:?}"
        );
        assert!(parse_counts("garbage").is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("immich"), "\"immich\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
