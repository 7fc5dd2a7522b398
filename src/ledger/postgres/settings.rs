//! The PostgreSQL ledger URL: what tokio-postgres is given, and what casegate keeps for
//! itself (`sslmode`, `sslrootcert`, `pool_size`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;

/// Connections the pool opens at most, unless the URL says `pool_size=N`.
pub(super) const DEFAULT_POOL_SIZE: usize = 8;
/// The most `pool_size` may say.
const MAX_POOL_SIZE: usize = 256;
/// How long opening one connection (TCP, TLS, authentication) may take, unless the URL
/// says `connect_timeout=SECONDS`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one operation may wait for a connection of the pool, and then for its
/// answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The parameters tokio-postgres itself reads from a URL's query (its 0.7 `Config`).
const PASSED_ON: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// libpq's `sslmode`, as casegate applies it (see the module doc of `postgres`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, its certificate unchecked (libpq's default).
    Prefer,
    /// TLS, the certificate chain checked against the trusted roots, not the host name.
    Require,
    /// The same as [`SslMode::Require`].
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` means "plain first": casegate does not try plain before TLS.
            other => {
                return Err(format!(
                    "sslmode={other} is not supported (disable, prefer, require, verify-ca \
                     or verify-full)"
                ))
            }
        })
    }

    /// Whether the server's certificate is checked at all.
    pub(super) fn verifies(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// Everything [`super::PostgresStore::open`] needs from the URL.
#[derive(Debug)]
pub(super) struct Settings {
    /// What tokio-postgres connects with (`sslmode` already mapped onto its three).
    pub pg: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    /// `sslrootcert`: trusted besides the webpki roots (`system`: the webpki roots only).
    pub root_cert: Option<PathBuf>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    /// Query parameters dropped because neither casegate nor tokio-postgres reads them.
    pub ignored: Vec<String>,
}

impl Settings {
    /// Reads a `postgres://user:password@host:port/db?param=value&...` URL. Err: what is
    /// wrong, never echoing the password.
    pub(super) fn parse(url: &str) -> Result<Settings, String> {
        let url = url.trim();
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut ignored = Vec::new();
        let mut passed = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = param.split_once('=').unwrap_or((param, ""));
            let key = decode(raw_key, "a parameter name")?;
            match key.as_str() {
                "sslmode" => ssl_mode = SslMode::parse(&decode(raw_value, "sslmode")?)?,
                "sslrootcert" => {
                    let value = decode(raw_value, "sslrootcert")?;
                    root_cert = (value != "system").then(|| PathBuf::from(value));
                }
                "pool_size" => {
                    pool_size = decode(raw_value, "pool_size")?
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                        .ok_or_else(|| {
                            format!("pool_size must be a number from 1 to {MAX_POOL_SIZE}")
                        })?;
                }
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(format!(
                        "{key}: client certificates are not supported; authenticate with a \
                         password"
                    ))
                }
                known if PASSED_ON.contains(&known) => passed.push(param),
                _ => ignored.push(key),
            }
        }
        if root_cert.is_some() && !ssl_mode.verifies() {
            return Err(
                "sslrootcert is only used with sslmode=require, verify-ca or verify-full"
                    .to_string(),
            );
        }
        let rebuilt = if passed.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        // tokio-postgres's errors name the parameter, never its value.
        let mut pg = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        pg.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if pg.get_application_name().is_none() {
            pg.application_name("casegate");
        }
        let connect_timeout = pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        pg.connect_timeout(connect_timeout);
        if pg.get_hosts().is_empty() {
            return Err("the URL names no host".to_string());
        }
        Ok(Settings {
            pg,
            ssl_mode,
            root_cert,
            pool_size,
            connect_timeout,
            query_timeout: QUERY_TIMEOUT,
            ignored,
        })
    }
}

fn decode(raw: &str, what: &str) -> Result<String, String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casegate_keeps_its_own_parameters_and_passes_the_rest_on() {
        let s = Settings::parse(
            "postgres://casegate:s%40cret@db.example.org:6432/ledger?sslmode=verify-full\
             &sslrootcert=/etc/ca%20files/db.pem&pool_size=3&application_name=cg-1\
             &connect_timeout=2&fallback_application_name=x&gssencmode=disable",
        )
        .unwrap();
        assert_eq!(s.ssl_mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca files/db.pem")));
        assert_eq!(s.pool_size, 3);
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.ignored, ["fallback_application_name", "gssencmode"]);
        assert_eq!(s.pg.get_user(), Some("casegate"));
        assert_eq!(s.pg.get_password(), Some(&b"s@cret"[..]));
        assert_eq!(s.pg.get_dbname(), Some("ledger"));
        assert_eq!(s.pg.get_ports(), [6432]);
        assert_eq!(s.pg.get_application_name(), Some("cg-1"));
        assert_eq!(
            s.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn defaults() {
        let s = Settings::parse("postgresql://u@db/x").unwrap();
        assert_eq!(s.ssl_mode, SslMode::Prefer);
        assert_eq!(s.root_cert, None);
        assert_eq!(s.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(s.pg.get_application_name(), Some("casegate"));
        assert_eq!(s.pg.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
        let s = Settings::parse("postgres://u@db/x?sslmode=disable").unwrap();
        assert_eq!(
            s.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        for mode in ["require", "verify-ca"] {
            let s = Settings::parse(&format!("postgres://u@db/x?sslmode={mode}")).unwrap();
            assert!(s.ssl_mode.verifies());
        }
        let s = Settings::parse("postgres://u@db/x?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(s.root_cert, None);
    }

    #[test]
    fn mistakes_are_refused_without_the_password() {
        for (url, expected) in [
            ("postgres://u:hunter2@db/x?sslmode=allow", "sslmode=allow"),
            (
                "postgres://u:hunter2@db/x?sslmode=prefer&sslrootcert=/ca.pem",
                "sslrootcert",
            ),
            ("postgres://u:hunter2@db/x?pool_size=0", "pool_size"),
            ("postgres://u:hunter2@db/x?pool_size=many", "pool_size"),
            (
                "postgres://u:hunter2@db/x?sslcert=/c.pem",
                "client certificates",
            ),
            ("postgres://u:hunter2@db:port/x", "not a PostgreSQL URL"),
            ("postgres://u:hunter2@/x", "no host"),
        ] {
            let err = Settings::parse(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }
}
