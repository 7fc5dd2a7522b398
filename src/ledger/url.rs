//! The `ledger` key: where the ledger lives, and how to name it without its password.

use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// Where the ledger lives (parsed by config from the `ledger` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerUrl {
    /// An SQLite file, its path already made absolute against routes.toml's folder.
    Sqlite(PathBuf),
    /// An SQLite database in memory: nothing survives a restart.
    SqliteMemory,
    /// A PostgreSQL URL; it may hold a password, so it stays a [`Secret`].
    Postgres(Secret),
}

impl LedgerUrl {
    /// Parses `sqlite://relative/path` (relative to `base_dir`), `sqlite:///abs/path`,
    /// `sqlite::memory:`, `postgres://...` / `postgresql://...`. The path is taken as
    /// written (no percent-decoding); surrounding whitespace is ignored. Err: a message
    /// naming what is wrong, never echoing a password.
    pub fn parse(s: &str, base_dir: &Path) -> Result<LedgerUrl, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("sqlite::memory:") {
            return Ok(LedgerUrl::SqliteMemory);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!(
                "\"{}\" is not a ledger URL: expected sqlite://path, sqlite:///abs/path, \
                 sqlite::memory: or postgres://user:password@host/db",
                redact(s)
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                if rest.is_empty() {
                    return Err("sqlite:// names no file: write sqlite://file.sqlite3 \
                                (relative to routes.toml's folder) or sqlite:///abs/path"
                        .to_string());
                }
                if rest.contains('?') {
                    return Err(format!(
                        "sqlite://{rest}: query parameters are not supported (the path is \
                         taken as written)"
                    ));
                }
                if rest.ends_with('/') {
                    return Err(format!("sqlite://{rest} names a folder, not a file"));
                }
                let path = Path::new(rest);
                if path.is_absolute() {
                    Ok(LedgerUrl::Sqlite(path.to_path_buf()))
                } else {
                    Ok(LedgerUrl::Sqlite(base_dir.join(path)))
                }
            }
            "postgres" | "postgresql" => {
                if rest.is_empty() {
                    return Err(format!(
                        "{scheme}:// names no database: write {scheme}://user:password@host/db"
                    ));
                }
                Ok(LedgerUrl::Postgres(Secret::new(s)))
            }
            other => Err(format!(
                "\"{}\": the ledger scheme {other}:// is not supported (sqlite:// or postgres://)",
                redact(s)
            )),
        }
    }

    /// For logs and `casegate check`: the path, `:memory:`, or the postgres URL with its
    /// password replaced by `***`.
    pub fn describe(&self) -> String {
        match self {
            LedgerUrl::Sqlite(path) => path.display().to_string(),
            LedgerUrl::SqliteMemory => ":memory:".to_string(),
            LedgerUrl::Postgres(url) => redact(url.expose()),
        }
    }
}

/// `url` with the password of its user info (`user:password@`) and of a `password=`
/// query parameter replaced by `***`.
fn redact(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    out.push_str(head);
    // The authority ends at the first '/', '?' or '#'; its user info at its last '@'
    // (a password may hold an unencoded '@').
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LedgerUrl, String> {
        LedgerUrl::parse(s, Path::new("/etc/casegate"))
    }

    #[test]
    fn sqlite_relative_is_under_the_base_dir() {
        assert_eq!(
            parse("sqlite://casegate-ledger.sqlite3").unwrap(),
            LedgerUrl::Sqlite(PathBuf::from("/etc/casegate/casegate-ledger.sqlite3"))
        );
        assert_eq!(
            parse("sqlite://data/l.db").unwrap(),
            LedgerUrl::Sqlite(PathBuf::from("/etc/casegate/data/l.db"))
        );
        assert_eq!(
            parse(" sqlite://./l.db ").unwrap().describe(),
            "/etc/casegate/./l.db"
        );
    }

    #[test]
    fn sqlite_absolute_and_memory() {
        assert_eq!(
            parse("sqlite:///var/lib/casegate/ledger.db").unwrap(),
            LedgerUrl::Sqlite(PathBuf::from("/var/lib/casegate/ledger.db"))
        );
        assert_eq!(parse("sqlite::memory:").unwrap(), LedgerUrl::SqliteMemory);
        assert_eq!(LedgerUrl::SqliteMemory.describe(), ":memory:");
    }

    #[test]
    fn postgres_password_is_hidden() {
        let url = parse("postgres://casegate:s3cr@t@db.example.org:5432/casegate").unwrap();
        assert_eq!(
            url,
            LedgerUrl::Postgres(Secret::new(
                "postgres://casegate:s3cr@t@db.example.org:5432/casegate"
            ))
        );
        assert_eq!(
            url.describe(),
            "postgres://casegate:***@db.example.org:5432/casegate"
        );
        assert!(!format!("{url:?}").contains("s3cr"));

        let url = parse("postgresql://db/casegate?sslmode=require&password=hunter2").unwrap();
        assert_eq!(
            url.describe(),
            "postgresql://db/casegate?sslmode=require&password=***"
        );
        assert_eq!(
            parse("postgres://u@db/x").unwrap().describe(),
            "postgres://u@db/x"
        );
    }

    #[test]
    fn junk_is_refused_without_echoing_a_password() {
        for junk in [
            "",
            "ledger.db",
            "sqlite:ledger.db",
            "sqlite://",
            "sqlite://dir/",
            "sqlite://l.db?mode=rwc",
            "postgres://",
            "mysql://root:topsecret@db/x",
        ] {
            let err = parse(junk).unwrap_err();
            assert!(!err.contains("topsecret"), "{junk}: {err}");
        }
        assert!(parse("mysql://root:topsecret@db/x")
            .unwrap_err()
            .contains("mysql://"));
    }
}
