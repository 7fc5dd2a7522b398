//! routes.toml: loaded with figment (file, then the `CASEGATE_*` overrides of the
//! top-level keys), secrets expanded from `${NAME}`, case-id maps read (inline or from a
//! CSV file), every key checked. Errors name the route and the key, and all of them are
//! reported at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::Value as FValue;
use figment::Figment;
use serde::Deserialize;

use crate::dialect::{self, AuthKind, DialectId, UpstreamOptions};
use crate::ledger::LedgerUrl;
use crate::secret::Secret;

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Largest file, in decoded bytes.
    pub max_upload_bytes: u64,
    /// Requests served at once.
    pub max_in_flight: usize,
    /// Connection workers, one single-threaded runtime each (`None`: one per core).
    pub workers: Option<usize>,
    /// Where bodies are spooled when field order forces it (`None`: the system temp dir).
    pub spool_dir: Option<PathBuf>,
    /// Base of links in answers (`None`: the request's own scheme and Host).
    pub public_url: Option<String>,
    /// Where ids and file records are kept.
    pub ledger: LedgerUrl,
    /// HTTPS on `listen` (and h2 by ALPN) with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// `/healthz`, `/readyz`, `/metrics` on their own listener (`None`: off).
    pub admin_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// SIGTERM: keep serving this long with `/readyz` 503 (admin listener on).
    pub drain_delay: Duration,
    /// Then wait this long for requests in flight.
    pub drain_timeout: Duration,
    pub routes: Vec<Route>,
}

/// The PEM files of casegate's own TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub front: DialectId,
    /// `""` or a path prefix like `/kibana` (no trailing slash).
    pub prefix: String,
    /// Lower-cased `Host` to match; with a port it must match exactly, without one any port.
    pub host: Option<String>,
    pub client_tokens: Vec<Secret>,
    pub strict: bool,
    pub token_key: Option<Secret>,
    /// Base of links in this route's answers, over the top-level one.
    pub public_url: Option<String>,
    /// Same-dialect routes: forward every other request of the API unchanged.
    pub passthrough: bool,
    /// Case ids mapped front -> back (`[routes.cases]`, `cases_file`); `None`: unchanged.
    pub cases: Option<CaseMap>,
    pub upstream: Upstream,
}

/// A route's case-id map, both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseMap {
    to_back: HashMap<String, String>,
    to_front: HashMap<String, String>,
}

impl CaseMap {
    /// The back's case id for a front one.
    pub fn back(&self, front: &str) -> Option<&str> {
        self.to_back.get(front).map(String::as_str)
    }

    /// The front's case id for a back one.
    pub fn front(&self, back: &str) -> Option<&str> {
        self.to_front.get(back).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.to_back.len()
    }

    pub fn is_empty(&self) -> bool {
        self.to_back.is_empty()
    }
}

/// `[routes.upstream]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub dialect: DialectId,
    pub url: UpstreamUrl,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Keys only the back dialect knows (Kibana's `space` and `owner`).
    pub options: UpstreamOptions,
    pub auth: UpstreamAuth,
}

/// Where the upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamUrl {
    /// An in-process emulator of the upstream's dialect.
    Embedded,
    /// `http://` or `https://` base URL, without trailing slash.
    Url(String),
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamUrl::Embedded => f.write_str("embedded"),
            UpstreamUrl::Url(u) => f.write_str(u),
        }
    }
}

/// What casegate presents upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    None,
    Bearer(Secret),
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    TouchpointToken {
        touchpoint: String,
        token: Secret,
    },
    ApiKey(Secret),
    Basic {
        username: String,
        password: Secret,
    },
}

impl UpstreamAuth {
    pub fn kind(&self) -> Option<AuthKind> {
        Some(match self {
            UpstreamAuth::None => return None,
            UpstreamAuth::Bearer(_) => AuthKind::Bearer,
            UpstreamAuth::ClientCredentials { .. } => AuthKind::ClientCredentials,
            UpstreamAuth::TouchpointToken { .. } => AuthKind::TouchpointToken,
            UpstreamAuth::ApiKey(_) => AuthKind::ApiKey,
            UpstreamAuth::Basic { .. } => AuthKind::Basic,
        })
    }

    /// For `casegate check`: what kind, never the secret.
    pub fn describe(&self) -> String {
        match self {
            UpstreamAuth::None => "none".into(),
            UpstreamAuth::Bearer(_) => "token ***".into(),
            UpstreamAuth::ClientCredentials { client_id, .. } => {
                format!("client {client_id} + secret ***")
            }
            UpstreamAuth::TouchpointToken { touchpoint, .. } => {
                format!("touchpoint {touchpoint} + token ***")
            }
            UpstreamAuth::ApiKey(_) => "api_key ***".into(),
            UpstreamAuth::Basic { username, .. } => format!("basic {username}:***"),
        }
    }

    /// The credential an emulator must accept for this auth (embedded upstreams).
    pub fn accepted_credential(&self) -> Option<String> {
        match self {
            UpstreamAuth::None => None,
            UpstreamAuth::Bearer(t) | UpstreamAuth::ApiKey(t) => Some(t.expose().to_string()),
            UpstreamAuth::ClientCredentials { client_secret, .. } => {
                Some(client_secret.expose().to_string())
            }
            UpstreamAuth::TouchpointToken { token, .. } => Some(token.expose().to_string()),
            UpstreamAuth::Basic { username, password } => {
                Some(format!("{username}:{}", password.expose()))
            }
        }
    }
}

/// Defaults (SPEC section 3).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// The most connection workers `workers` may ask for.
pub const MAX_WORKERS: u64 = 256;
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The ledger beside routes.toml, when it names none.
pub const DEFAULT_LEDGER: &str = "sqlite://casegate-ledger.sqlite3";
pub const DEFAULT_DRAIN_DELAY_SECS: u64 = 5;
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    listen: Option<FValue>,
    max_upload_bytes: Option<FValue>,
    max_in_flight: Option<FValue>,
    workers: Option<FValue>,
    spool_dir: Option<FValue>,
    public_url: Option<FValue>,
    ledger: Option<FValue>,
    tls_cert: Option<FValue>,
    tls_key: Option<FValue>,
    admin_listen: Option<FValue>,
    log_format: Option<FValue>,
    drain_delay_secs: Option<FValue>,
    drain_timeout_secs: Option<FValue>,
    #[serde(default)]
    routes: Vec<FValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    front: String,
    prefix: Option<String>,
    host: Option<String>,
    client_tokens: Option<Vec<String>>,
    strict: Option<bool>,
    token_key: Option<String>,
    public_url: Option<String>,
    passthrough: Option<bool>,
    cases_file: Option<String>,
    cases: Option<BTreeMap<String, FValue>>,
    upstream: RawUpstream,
}

/// `[routes.upstream]`: the generic keys, and whatever else for the back dialect to
/// judge ([`crate::dialect::Dialect::upstream_keys`]).
#[derive(Deserialize)]
struct RawUpstream {
    dialect: String,
    url: Option<String>,
    timeout_secs: Option<u64>,
    ca_file: Option<String>,
    auth: Option<RawAuth>,
    #[serde(flatten)]
    other: BTreeMap<String, FValue>,
}

const UPSTREAM_KEYS: &[&str] = &["dialect", "url", "timeout_secs", "ca_file", "auth"];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    token: Option<String>,
    touchpoint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    api_key: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The environment, as config loading sees it (a function so tests can supply one).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Loads and validates `path` with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let env = |k: &str| std::env::var(k).ok();
    load_with(path, &env, true)
}

/// Loads and validates `path`; `env` resolves `${NAME}`; `env_overrides` applies the
/// `CASEGATE_*` top-level overrides from the process environment.
pub fn load_with(
    path: &Path,
    env: EnvLookup<'_>,
    env_overrides: bool,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![format!(
            "cannot read {}: {}",
            path.display(),
            e.kind()
        )])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_at(&text, env, env_overrides, Some(base)).map_err(|mut e| {
        for m in &mut e.0 {
            *m = format!("{}: {m}", path.display());
        }
        e
    })
}

/// Parses and validates routes.toml text that has no file: relative paths are relative
/// to the working directory, and the ledger, unless named, is kept in memory.
pub fn parse(text: &str, env: EnvLookup<'_>, env_overrides: bool) -> Result<Config, ConfigError> {
    parse_at(text, env, env_overrides, None)
}

/// Parses and validates routes.toml text read from a file in `base` (relative paths and
/// the default ledger are there).
pub fn parse_at(
    text: &str,
    env: EnvLookup<'_>,
    env_overrides: bool,
    base: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut fig = Figment::new().merge(Toml::string(text));
    if env_overrides {
        fig = fig.merge(Env::prefixed("CASEGATE_").only(&[
            "listen",
            "max_upload_bytes",
            "max_in_flight",
            "workers",
            "spool_dir",
            "public_url",
            "ledger",
            "admin_listen",
            "log_format",
        ]));
    }
    let base_dir = base.unwrap_or(Path::new("."));
    let raw: RawTop = fig
        .extract()
        .map_err(|e| ConfigError(figment_errors(e, None)))?;
    let mut errs = Vec::new();
    let mut top = |key: &str, v: Option<FValue>| -> Option<String> {
        let s = v.map(|v| scalar_text(&v))?;
        match s {
            Some(s) => expand(&s, env)
                .map_err(|e| errs.push(format!("{key}: {e}")))
                .ok(),
            None => {
                errs.push(format!("{key}: expected a string or number"));
                None
            }
        }
    };
    let listen_s = top("listen", raw.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let max_s = top("max_upload_bytes", raw.max_upload_bytes);
    let inflight_s = top("max_in_flight", raw.max_in_flight);
    let workers_s = top("workers", raw.workers);
    let spool_dir = top("spool_dir", raw.spool_dir).map(PathBuf::from);
    let public_url = top("public_url", raw.public_url);
    let ledger_s = top("ledger", raw.ledger);
    let tls_cert = top("tls_cert", raw.tls_cert).map(|p| base_dir.join(p));
    let tls_key = top("tls_key", raw.tls_key).map(|p| base_dir.join(p));
    let admin_s = top("admin_listen", raw.admin_listen);
    let log_format_s = top("log_format", raw.log_format);
    let drain_delay_s = top("drain_delay_secs", raw.drain_delay_secs);
    let drain_timeout_s = top("drain_timeout_secs", raw.drain_timeout_secs);
    let listen = listen_s.parse::<SocketAddr>().unwrap_or_else(|_| {
        errs.push(format!(
            "listen: {listen_s:?} is not an address like 127.0.0.1:8080"
        ));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let max_upload_bytes = positive(
        &mut errs,
        "max_upload_bytes",
        max_s,
        DEFAULT_MAX_UPLOAD_BYTES,
    );
    let max_in_flight = positive(
        &mut errs,
        "max_in_flight",
        inflight_s,
        DEFAULT_MAX_IN_FLIGHT as u64,
    ) as usize;
    let workers = workers_s.map(|s| {
        let n = positive(&mut errs, "workers", Some(s), 1);
        if n > MAX_WORKERS {
            errs.push(format!("workers: {n} is more than {MAX_WORKERS}"));
        }
        n as usize
    });
    if let Some(d) = &spool_dir {
        if !d.is_dir() {
            errs.push(format!("spool_dir: {} is not a directory", d.display()));
        }
    }
    let public_url = public_url.and_then(|u| {
        check_public_url(&u)
            .map_err(|e| errs.push(format!("public_url: {e}")))
            .ok()
    });
    let tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            if let Err(e) = crate::tls::server_config(&cert, &key) {
                errs.push(format!("tls_cert/tls_key: {e}"));
            }
            Some(TlsFiles { cert, key })
        }
        (Some(_), None) => {
            errs.push("tls_key: missing (tls_cert needs its private key)".into());
            None
        }
        (None, Some(_)) => {
            errs.push("tls_cert: missing (tls_key needs its certificate)".into());
            None
        }
    };
    let admin_listen = admin_s.and_then(|a| {
        a.parse::<SocketAddr>()
            .map_err(|_| {
                errs.push(format!(
                    "admin_listen: {a:?} is not an address like 127.0.0.1:9190"
                ))
            })
            .ok()
    });
    let log_format = match log_format_s.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errs.push(format!("log_format: {other:?} is not \"text\" or \"json\""));
            LogFormat::Text
        }
    };
    let secs = |errs: &mut Vec<String>, key: &str, v: Option<String>, default: u64| match v {
        None => Duration::from_secs(default),
        Some(s) => match s.trim().parse::<u64>() {
            Ok(n) => Duration::from_secs(n),
            Err(_) => {
                errs.push(format!("{key}: {s:?} is not a number of seconds"));
                Duration::from_secs(default)
            }
        },
    };
    let drain_delay = secs(
        &mut errs,
        "drain_delay_secs",
        drain_delay_s,
        DEFAULT_DRAIN_DELAY_SECS,
    );
    let drain_timeout = secs(
        &mut errs,
        "drain_timeout_secs",
        drain_timeout_s,
        DEFAULT_DRAIN_TIMEOUT_SECS,
    );
    let ledger = match (ledger_s, base) {
        (Some(s), _) => LedgerUrl::parse(&s, base_dir).unwrap_or_else(|e| {
            errs.push(format!("ledger: {e}"));
            LedgerUrl::SqliteMemory
        }),
        (None, Some(dir)) => {
            LedgerUrl::parse(DEFAULT_LEDGER, dir).unwrap_or(LedgerUrl::SqliteMemory)
        }
        (None, None) => LedgerUrl::SqliteMemory,
    };

    let mut routes = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    if raw.routes.is_empty() {
        errs.push("routes: no [[routes]] are defined".into());
    }
    for (i, value) in raw.routes.into_iter().enumerate() {
        let label = value
            .find_ref("name")
            .and_then(|n| n.as_str().map(|s| format!("route {s:?}")))
            .unwrap_or_else(|| format!("route #{}", i + 1));
        let raw_route: RawRoute = match value.deserialize() {
            Ok(r) => r,
            Err(e) => {
                errs.extend(figment_errors(e, Some(&label)));
                continue;
            }
        };
        if let Some(first) = names.insert(raw_route.name.clone(), i) {
            errs.push(format!(
                "{label}: name: route #{} has the same name; names must be unique",
                first + 1
            ));
        }
        let mut ctx = RouteCheck {
            label: &label,
            env,
            base: base_dir,
            errs: &mut errs,
        };
        if let Some(r) = ctx.route(raw_route) {
            routes.push(r);
        }
    }
    check_overlaps(&routes, &mut errs);
    if errs.is_empty() {
        Ok(Config {
            listen,
            max_upload_bytes,
            max_in_flight,
            workers,
            spool_dir,
            public_url,
            ledger,
            tls,
            admin_listen,
            log_format,
            drain_delay,
            drain_timeout,
            routes,
        })
    } else {
        Err(ConfigError(errs))
    }
}

fn positive(errs: &mut Vec<String>, key: &str, v: Option<String>, default: u64) -> u64 {
    match v {
        None => default,
        Some(s) => match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                errs.push(format!("{key}: {s:?} is not a positive integer"));
                default
            }
        },
    }
}

fn scalar_text(v: &FValue) -> Option<String> {
    match v {
        FValue::String(_, s) => Some(s.clone()),
        FValue::Num(_, n) => n
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| n.to_i128().map(|n| n.to_string())),
        _ => None,
    }
}

/// Expands `${NAME}` from the environment; `$${` is a literal `${`.
pub fn expand(s: &str, env: EnvLookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated ${...}".into());
        };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("${{{name}}} is not a valid variable name"));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn figment_errors(e: figment::Error, label: Option<&str>) -> Vec<String> {
    e.into_iter()
        .map(|err| {
            let mut segs = err.path.clone();
            if let figment::error::Kind::UnknownField(f, _) = &err.kind {
                if segs.last() == Some(f) {
                    segs.pop();
                }
            }
            let path = segs.join(".");
            let what = match &err.kind {
                figment::error::Kind::UnknownField(f, expected) => {
                    format!(
                        "unknown key `{f}` (expected one of: {})",
                        expected.join(", ")
                    )
                }
                figment::error::Kind::MissingField(f) => format!("missing key `{f}`"),
                other => other.to_string(),
            };
            let mut s = String::new();
            if let Some(l) = label {
                s.push_str(l);
                s.push_str(": ");
            }
            if !path.is_empty() {
                s.push_str(&path);
                s.push_str(": ");
            }
            s.push_str(&what);
            if label.is_none() {
                if let Some(src) = err.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                    if !matches!(src, figment::Source::Code(_)) {
                        s.push_str(&format!(" (from {src})"));
                    }
                }
            }
            s
        })
        .collect()
}

struct RouteCheck<'a> {
    label: &'a str,
    env: EnvLookup<'a>,
    /// Where relative paths are.
    base: &'a Path,
    errs: &'a mut Vec<String>,
}

impl RouteCheck<'_> {
    fn err(&mut self, key: &str, msg: impl fmt::Display) {
        self.errs.push(format!("{}: {key}: {msg}", self.label));
    }

    fn exp(&mut self, key: &str, v: Option<String>) -> Option<String> {
        let v = v?;
        match expand(&v, self.env) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    fn dialect(&mut self, key: &str, name: &str) -> Option<DialectId> {
        let d = DialectId::parse(name);
        if d.is_none() {
            let all: Vec<&str> = DialectId::ALL.iter().map(|d| d.name()).collect();
            self.err(
                key,
                format!(
                    "unknown dialect {name:?} (expected one of {})",
                    all.join(", ")
                ),
            );
        }
        d
    }

    fn route(&mut self, r: RawRoute) -> Option<Route> {
        let front = self.dialect("front", &r.front);
        let prefix = match self.exp("prefix", r.prefix) {
            None => String::new(),
            Some(p) => {
                let trimmed = p.trim_end_matches('/').to_string();
                if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                    self.err("prefix", format!("{p:?} must be a path starting with /"));
                }
                trimmed
            }
        };
        let host = self
            .exp("host", r.host)
            .map(|h| h.trim().to_ascii_lowercase());
        if host.as_deref() == Some("") {
            self.err("host", "must not be empty");
        }
        let mut client_tokens = Vec::new();
        for (i, t) in r.client_tokens.unwrap_or_default().into_iter().enumerate() {
            if let Some(t) = self.exp(&format!("client_tokens[{i}]"), Some(t)) {
                if t.is_empty() {
                    self.err(&format!("client_tokens[{i}]"), "must not be empty");
                }
                client_tokens.push(Secret::new(t));
            }
        }
        let token_key = self.exp("token_key", r.token_key).map(Secret::new);
        if token_key.is_some() && front.is_some() && front != Some(DialectId::Caseiq) {
            self.err("token_key", "only a caseiq front issues access tokens");
        }
        if token_key.as_ref().is_some_and(|k| k.expose().len() < 16) {
            self.err("token_key", "must be at least 16 characters");
        }
        let public_url = self.exp("public_url", r.public_url).and_then(|u| {
            check_public_url(&u)
                .map_err(|e| self.err("public_url", e))
                .ok()
        });
        let upstream = self.upstream(r.upstream);
        let passthrough = r.passthrough.unwrap_or(false);
        if let (true, Some(f), Some(u)) = (passthrough, front, upstream.as_ref()) {
            if f != u.dialect {
                self.err(
                    "passthrough",
                    format!(
                        "only a route whose front and upstream speak the same dialect can pass requests through (front {f}, upstream {})",
                        u.dialect
                    ),
                );
            }
        }
        let back = upstream.as_ref().map(|u| u.dialect);
        let cases = self.cases(r.cases, r.cases_file, back);
        Some(Route {
            name: r.name,
            front: front?,
            prefix,
            host,
            client_tokens,
            strict: r.strict.unwrap_or(false),
            token_key,
            public_url,
            passthrough,
            cases,
            upstream: upstream?,
        })
    }

    /// The case-id map from `[routes.cases]` and `cases_file` (both may be given; each
    /// front id once, each back id once, none empty; a Case IQ back takes UUIDs only).
    fn cases(
        &mut self,
        inline: Option<BTreeMap<String, FValue>>,
        file: Option<String>,
        back: Option<DialectId>,
    ) -> Option<CaseMap> {
        if inline.is_none() && file.is_none() {
            return None;
        }
        let mut pairs: Vec<(String, String, String)> = Vec::new();
        for (front, v) in inline.unwrap_or_default() {
            match scalar_text(&v) {
                Some(b) => pairs.push((front.clone(), b, format!("cases.{front:?}"))),
                None => self.err(
                    &format!("cases.{front:?}"),
                    "expected a case id (a string or number)",
                ),
            }
        }
        if let Some(f) = self.exp("cases_file", file) {
            let path = self.base.join(&f);
            match std::fs::read_to_string(&path) {
                Err(e) => self.err(
                    "cases_file",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                ),
                Ok(text) => match parse_cases_csv(&text) {
                    Ok(rows) => pairs.extend(rows.into_iter().map(|(line, front, back)| {
                        (front, back, format!("cases_file line {line}"))
                    })),
                    Err(e) => self.err("cases_file", format!("{}: {e}", path.display())),
                },
            }
        }
        let mut map = CaseMap::default();
        for (front, back_id, at) in pairs {
            if front.trim().is_empty() || back_id.trim().is_empty() {
                self.err(&at, "case ids must not be empty");
                continue;
            }
            if back == Some(DialectId::Caseiq) && uuid::Uuid::try_parse(&back_id).is_err() {
                self.err(
                    &at,
                    format!("{back_id:?} is not a UUID, and a caseiq upstream takes UUID case ids"),
                );
            }
            if map.to_back.contains_key(&front) {
                self.err(&at, format!("front case {front:?} is mapped twice"));
                continue;
            }
            if let Some(other) = map.to_front.get(&back_id) {
                self.err(
                    &at,
                    format!("back case {back_id:?} is already the map of front case {other:?}"),
                );
                continue;
            }
            map.to_front.insert(back_id.clone(), front.clone());
            map.to_back.insert(front, back_id);
        }
        Some(map)
    }

    fn upstream(&mut self, u: RawUpstream) -> Option<Upstream> {
        let d = self.dialect("upstream.dialect", &u.dialect);
        let url = match self.exp("upstream.url", u.url) {
            None => {
                self.err(
                    "upstream.url",
                    "missing (a http(s):// URL, or \"embedded\")",
                );
                None
            }
            Some(s) if s == "embedded" => Some(UpstreamUrl::Embedded),
            Some(s) => match check_url(&s) {
                Ok(u) => Some(UpstreamUrl::Url(u)),
                Err(e) => {
                    self.err("upstream.url", e);
                    None
                }
            },
        };
        let timeout = match u.timeout_secs {
            None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            Some(0) => {
                self.err("upstream.timeout_secs", "must be at least 1");
                Duration::from_secs(DEFAULT_TIMEOUT_SECS)
            }
            Some(n) => Duration::from_secs(n),
        };
        let ca_file = self.exp("upstream.ca_file", u.ca_file).map(PathBuf::from);
        if let Some(ca) = &ca_file {
            let https = matches!(&url, Some(UpstreamUrl::Url(s)) if s.starts_with("https://"));
            if !https && url.is_some() {
                self.err("upstream.ca_file", "only applies to an https:// url");
            }
            if let Err(e) = crate::tls::read_certs(ca) {
                self.err("upstream.ca_file", e);
            }
        }
        let mut options = UpstreamOptions::new();
        let takes = d.map(|d| dialect::get(d).upstream_keys()).unwrap_or(&[]);
        for (key, v) in u.other {
            let at = format!("upstream.{key}");
            if d.is_some() && !takes.contains(&key.as_str()) {
                let expected: Vec<&str> = UPSTREAM_KEYS.iter().chain(takes).copied().collect();
                let d = d.map(|d| d.name()).unwrap_or_default();
                self.err(
                    &at,
                    format!(
                        "unknown key `{key}` for a {d} upstream (expected one of: {})",
                        expected.join(", ")
                    ),
                );
                continue;
            }
            match scalar_text(&v).map(|t| self.exp(&at, Some(t))) {
                Some(Some(t)) => {
                    options.insert(key, t);
                }
                Some(None) => {}
                None => self.err(&at, "expected a string"),
            }
        }
        let auth = self.auth(d, u.auth.unwrap_or_default());
        Some(Upstream {
            dialect: d?,
            url: url?,
            timeout,
            ca_file,
            options,
            auth: auth?,
        })
    }

    fn auth(&mut self, d: Option<DialectId>, a: RawAuth) -> Option<UpstreamAuth> {
        let token = self.exp("upstream.auth.token", a.token);
        let touchpoint = self.exp("upstream.auth.touchpoint", a.touchpoint);
        let client_id = self.exp("upstream.auth.client_id", a.client_id);
        let client_secret = self.exp("upstream.auth.client_secret", a.client_secret);
        let api_key = self.exp("upstream.auth.api_key", a.api_key);
        let username = self.exp("upstream.auth.username", a.username);
        let password = self.exp("upstream.auth.password", a.password);
        let given: Vec<&str> = [
            ("token", token.is_some()),
            ("touchpoint", touchpoint.is_some()),
            ("client_id", client_id.is_some()),
            ("client_secret", client_secret.is_some()),
            ("api_key", api_key.is_some()),
            ("username", username.is_some()),
            ("password", password.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, there)| there.then_some(k))
        .collect();
        let auth = match given.as_slice() {
            [] => UpstreamAuth::None,
            ["token"] => UpstreamAuth::Bearer(Secret::new(token?)),
            ["token", "touchpoint"] => UpstreamAuth::TouchpointToken {
                touchpoint: touchpoint?,
                token: Secret::new(token?),
            },
            ["client_id", "client_secret"] => UpstreamAuth::ClientCredentials {
                client_id: client_id?,
                client_secret: Secret::new(client_secret?),
            },
            ["api_key"] => UpstreamAuth::ApiKey(Secret::new(api_key?)),
            ["username", "password"] => UpstreamAuth::Basic {
                username: username?,
                password: Secret::new(password?),
            },
            other => {
                self.err(
                    "upstream.auth",
                    format!(
                        "{} do not go together; use token, touchpoint + token, client_id + client_secret, api_key, or username + password",
                        other.join(" + ")
                    ),
                );
                return None;
            }
        };
        let d = d?;
        if let Some(kind) = auth.kind() {
            let accepted = dialect::get(d).auth_kinds();
            if !accepted.contains(&kind) {
                let want: Vec<&str> = accepted.iter().map(|k| auth_keys(*k)).collect();
                self.err(
                    &format!("upstream.auth.{}", given[0]),
                    format!("a {d} upstream takes {}", want.join(", or ")),
                );
                return None;
            }
        }
        Some(auth)
    }
}

fn auth_keys(k: AuthKind) -> &'static str {
    match k {
        AuthKind::Bearer => "token",
        AuthKind::ClientCredentials => "client_id + client_secret",
        AuthKind::TouchpointToken => "touchpoint + token",
        AuthKind::ApiKey => "api_key",
        AuthKind::Basic => "username + password",
    }
}

/// Checks an upstream URL; returns it without trailing slash.
fn check_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{s:?} must start with http:// or https://")),
    }
    let Some(auth) = uri.authority() else {
        return Err(format!("{s:?} has no host"));
    };
    if auth.as_str().contains('@') {
        return Err(
            "credentials in the URL are not allowed; put them in [routes.upstream.auth]".into(),
        );
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Checks a `public_url`; returns it without trailing slash.
fn check_public_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{s:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Reads a `cases_file`: one `front,back` pair per line, an optional `front,back`
/// header, blank lines and `#` comments skipped, fields optionally in double quotes.
/// Returns (line number, front, back).
pub fn parse_cases_csv(text: &str) -> Result<Vec<(usize, String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        let [front, back] = fields.as_slice() else {
            return Err(format!(
                "line {}: expected two fields, front,back (found {})",
                i + 1,
                fields.len()
            ));
        };
        if out.is_empty()
            && front.eq_ignore_ascii_case("front")
            && back.eq_ignore_ascii_case("back")
        {
            continue;
        }
        out.push((i + 1, front.to_string(), back.to_string()));
    }
    Ok(out)
}

/// Two routes with the same front, prefix and host would match the same requests.
fn check_overlaps(routes: &[Route], errs: &mut Vec<String>) {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if a.front == b.front && a.prefix == b.prefix && a.host == b.host {
                errs.push(format!(
                    "route {:?}: routes {:?} and {:?} would match the same requests (front {}, prefix {:?}, host {})",
                    b.name,
                    a.name,
                    b.name,
                    a.front,
                    a.prefix,
                    a.host.as_deref().unwrap_or("any")
                ));
            }
        }
    }
}

impl Config {
    /// The route table, as `casegate check` prints it. Secrets show as `***`.
    pub fn table(&self) -> String {
        const COLS: usize = 9;
        let mut rows = vec![[
            "ROUTE".to_string(),
            "FRONT".into(),
            "MATCH".into(),
            "CLIENTS".into(),
            "UPSTREAM".into(),
            "UPSTREAM AUTH".into(),
            "STRICT".into(),
            "PASSTHROUGH".into(),
            "CASES".into(),
        ]];
        for r in &self.routes {
            let matches = format!("{}{}/...", r.host.as_deref().unwrap_or("*"), r.prefix);
            let clients = if r.client_tokens.is_empty() {
                "open".to_string()
            } else {
                format!("{} token(s) ***", r.client_tokens.len())
            };
            let mut up = format!("{} {}", r.upstream.dialect, r.upstream.url);
            for (k, v) in &r.upstream.options {
                up.push_str(&format!(" {k}={v}"));
            }
            let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
            rows.push([
                r.name.clone(),
                r.front.to_string(),
                matches,
                clients,
                up,
                r.upstream.auth.describe(),
                yes_no(r.strict),
                yes_no(r.passthrough),
                match &r.cases {
                    Some(m) => format!("{} mapped", m.len()),
                    None => "unchanged".into(),
                },
            ]);
        }
        let mut widths = [0usize; COLS];
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = format!(
            "listen {}{}  max_upload_bytes {}  max_in_flight {}  workers {}  spool_dir {}\nledger {}  public_url {}  admin_listen {}  log_format {}\n",
            self.listen,
            match &self.tls {
                Some(files) => format!(" (https, h2){}", cert_until(&files.cert)),
                None => " (http, h2c)".to_string(),
            },
            self.max_upload_bytes,
            self.max_in_flight,
            self.workers
                .map_or_else(|| "(one per core)".to_string(), |n| n.to_string()),
            self.spool_dir
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(system temp)".into()),
            self.ledger.describe(),
            self.public_url.as_deref().unwrap_or("(the request's own)"),
            self.admin_listen
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into()),
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        );
        for row in rows {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// For `casegate check`: until when the served certificate is valid, or that it expired.
fn cert_until(cert: &Path) -> String {
    let Some(not_after) = crate::tls::file_not_after(cert) else {
        return " certificate expiry unreadable".to_string();
    };
    let at = crate::tls::expiry_text(not_after);
    if crate::tls::seconds_left(not_after) <= 0 {
        format!(" certificate EXPIRED {at}")
    } else {
        format!(" certificate until {at}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "KEY" => Some("kibana-key".into()),
            "SOAR" => Some("soar-token".into()),
            _ => None,
        }
    }

    fn parse_ok(t: &str) -> Config {
        parse(t, &env, false).unwrap()
    }

    fn parse_err(t: &str) -> Vec<String> {
        parse(t, &env, false).unwrap_err().0
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:9000"
max_upload_bytes = 1000
[[routes]]
name = "soar-to-kibana"
front = "tines"
prefix = "/kibana/"
client_tokens = ["${SOAR}"]
[routes.upstream]
dialect = "kibana"
url = "http://127.0.0.1:5601/"
space = "ops"
[routes.upstream.auth]
api_key = "${KEY}"
"#;

    #[test]
    fn workers_is_a_count_from_1_to_256() {
        let with = |w: &str| format!("workers = {w}\n{GOOD}");
        assert_eq!(parse_ok(&with("3")).workers, Some(3));
        assert_eq!(parse_ok(&with("\"2\"")).workers, Some(2));
        assert_eq!(
            parse_err(&with("0")),
            vec!["workers: \"0\" is not a positive integer".to_string()]
        );
        assert_eq!(
            parse_err(&with("\"many\"")),
            vec!["workers: \"many\" is not a positive integer".to_string()]
        );
        assert_eq!(
            parse_err(&with("257")),
            vec!["workers: 257 is more than 256".to_string()]
        );
    }

    #[test]
    fn good_config() {
        let c = parse_ok(GOOD);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_upload_bytes, 1000);
        assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(c.workers, None);
        let r = &c.routes[0];
        assert_eq!(r.prefix, "/kibana");
        assert_eq!(r.client_tokens, vec![Secret::new("soar-token")]);
        assert_eq!(
            r.upstream.url,
            UpstreamUrl::Url("http://127.0.0.1:5601".into())
        );
        assert_eq!(
            r.upstream.auth,
            UpstreamAuth::ApiKey(Secret::new("kibana-key"))
        );
        let table = c.table();
        assert!(table.contains("soar-to-kibana"));
        assert!(!table.contains("kibana-key") && !table.contains("soar-token"));
        let debug = format!("{c:?}");
        assert!(debug.contains("soar-to-kibana") && debug.contains("***"));
        assert!(
            !debug.contains("kibana-key") && !debug.contains("soar-token"),
            "{debug}"
        );
    }

    #[test]
    fn errors_name_route_and_key() {
        let e = parse_err(&GOOD.replace("dialect = \"kibana\"", "dialect = \"kibna\""));
        assert!(
            e.iter().any(|m| m
                .contains("route \"soar-to-kibana\": upstream.dialect: unknown dialect \"kibna\"")),
            "{e:?}"
        );
        let e = parse_err(&GOOD.replace("url = \"http://127.0.0.1:5601/\"", ""));
        assert!(
            e.iter()
                .any(|m| m.contains("route \"soar-to-kibana\": upstream.url: missing")),
            "{e:?}"
        );
        let e = parse_err(&GOOD.replace("${KEY}", "${NOPE}"));
        assert!(
            e.iter()
                .any(|m| m.contains("upstream.auth.api_key: environment variable NOPE is not set")),
            "{e:?}"
        );
        let e = parse_err(&GOOD.replace("dialect = \"kibana\"", "dialect = \"tines\""));
        assert!(
            e.iter().any(|m| m
                .contains("route \"soar-to-kibana\": upstream.space: unknown key `space` for a tines upstream")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("upstream.auth.api_key: a tines upstream takes token")),
            "{e:?}"
        );
        let e = parse_err(
            &GOOD
                .replace("strict", "x")
                .replace("front = \"tines\"", "front = \"tines\"\nstrictly = true"),
        );
        assert!(
            e.iter()
                .any(|m| m.contains("route \"soar-to-kibana\": unknown key `strictly`")),
            "{e:?}"
        );
        let e = parse_err(&format!("{GOOD}\nbogus = 1\n"));
        assert!(!e.is_empty());
    }

    #[test]
    fn unknown_top_level_key() {
        let e = parse_err(&format!("colour = 1\n{GOOD}"));
        assert!(
            e.iter().any(|m| m.contains("unknown key `colour`")),
            "{e:?}"
        );
    }

    #[test]
    fn overlapping_routes() {
        let twice = format!(
            "{GOOD}{}",
            GOOD.replace("listen = \"127.0.0.1:9000\"\nmax_upload_bytes = 1000\n", "")
                .replace("soar-to-kibana", "second")
        );
        let e = parse_err(&twice);
        assert!(
            e.iter().any(|m| m.contains(
                "routes \"soar-to-kibana\" and \"second\" would match the same requests"
            )),
            "{e:?}"
        );
    }

    const MAPPED: &str = r#"
[[routes]]
name = "soar"
front = "tines"
cases_file = "CASES"
[routes.cases]
"42" = "9c235210-6834-11ea-a78c-6ffb38a34414"
[routes.upstream]
dialect = "caseiq"
url = "http://127.0.0.1:1"
"#;

    fn mapped(csv: &str, extra: &str) -> Result<Config, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cases.csv"), csv).unwrap();
        let text = MAPPED
            .replace("CASES", "cases.csv")
            .replace("[routes.cases]\n", &format!("[routes.cases]\n{extra}"));
        parse_at(&text, &env, false, Some(dir.path())).map_err(|e| e.0)
    }

    #[test]
    fn case_maps_from_the_table_and_the_file() {
        let c = mapped(
            "front,back\n# a comment\n\n7,\"3f2b7c8e-1d4a-4e5f-9a6b-7c8d9e0f1a2b\"\n",
            "",
        )
        .unwrap();
        let m = c.routes[0].cases.as_ref().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.back("42"), Some("9c235210-6834-11ea-a78c-6ffb38a34414"));
        assert_eq!(m.back("7"), Some("3f2b7c8e-1d4a-4e5f-9a6b-7c8d9e0f1a2b"));
        assert_eq!(m.front("3f2b7c8e-1d4a-4e5f-9a6b-7c8d9e0f1a2b"), Some("7"));
        assert_eq!(m.back("8"), None);
        assert!(c.table().contains("2 mapped"), "{}", c.table());
    }

    #[test]
    fn case_map_mistakes_name_route_and_key() {
        let uuid = "3f2b7c8e-1d4a-4e5f-9a6b-7c8d9e0f1a2b";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("42,{uuid}\n"),
                "",
                "front case \"42\" is mapped twice",
            ),
            (
                format!("7,{uuid}\n8,{uuid}\n"),
                "",
                "is already the map of front case \"7\"",
            ),
            ("7,not-a-uuid\n".into(), "", "is not a UUID"),
            (format!(",{uuid}\n"), "", "must not be empty"),
            ("7\n".into(), "", "line 1: expected two fields"),
            (String::new(), "\"\" = \"x\"\n", "must not be empty"),
        ];
        for (csv, extra, want) in cases {
            let e = mapped(&csv, extra).unwrap_err();
            assert!(
                e.iter()
                    .any(|m| m.starts_with("route \"soar\": ") && m.contains(want)),
                "{csv:?} {extra:?}: {e:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let e = parse_at(
            &MAPPED.replace("CASES", "nope.csv"),
            &env,
            false,
            Some(dir.path()),
        )
        .unwrap_err()
        .0;
        assert!(
            e.iter()
                .any(|m| m.contains("route \"soar\": cases_file: cannot read")),
            "{e:?}"
        );
    }

    #[test]
    fn passthrough_only_on_same_dialect_routes() {
        let e = parse_err(
            &GOOD
                .replace("strict", "x")
                .replace("front = \"tines\"", "front = \"tines\"\npassthrough = true"),
        );
        assert!(
            e.iter().any(|m| m.contains(
                "route \"soar-to-kibana\": passthrough: only a route whose front and upstream speak the same dialect"
            )),
            "{e:?}"
        );
        let same = GOOD.replace(
            "front = \"tines\"",
            "front = \"kibana\"\npassthrough = true",
        );
        assert!(parse_ok(&same).routes[0].passthrough);
    }

    #[test]
    fn public_url_and_ledger() {
        let c = parse_ok(&format!(
            "public_url = \"https://gw.example.org/cases/\"\nledger = \"sqlite:///var/lib/cg.sqlite3\"\n{GOOD}"
        ));
        assert_eq!(
            c.public_url.as_deref(),
            Some("https://gw.example.org/cases")
        );
        assert_eq!(
            c.ledger,
            LedgerUrl::Sqlite(PathBuf::from("/var/lib/cg.sqlite3"))
        );
        // Without a file, the default ledger keeps nothing; beside a file, it is a file.
        assert_eq!(parse_ok(GOOD).ledger, LedgerUrl::SqliteMemory);
        let dir = tempfile::tempdir().unwrap();
        let c = parse_at(GOOD, &env, false, Some(dir.path())).unwrap();
        assert_eq!(
            c.ledger,
            LedgerUrl::Sqlite(dir.path().join("casegate-ledger.sqlite3"))
        );
        let e = parse_err(&format!("public_url = \"ftp://x\"\n{GOOD}"));
        assert!(e.iter().any(|m| m.starts_with("public_url: ")), "{e:?}");
        let e = parse_err(&format!("ledger = \"mysql://x\"\n{GOOD}"));
        assert!(e.iter().any(|m| m.starts_with("ledger: ")), "{e:?}");
    }

    #[test]
    fn production_edge_keys() {
        let c = parse_ok(&format!(
            "admin_listen = \"127.0.0.1:9190\"\nlog_format = \"json\"\ndrain_delay_secs = 0\ndrain_timeout_secs = 7\n{GOOD}"
        ));
        assert_eq!(c.admin_listen, Some("127.0.0.1:9190".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.drain_delay, Duration::ZERO);
        assert_eq!(c.drain_timeout, Duration::from_secs(7));
        let d = parse_ok(GOOD);
        assert_eq!(
            (d.admin_listen, d.log_format, d.tls.as_ref()),
            (None, LogFormat::Text, None)
        );
        assert_eq!(d.drain_delay, Duration::from_secs(DEFAULT_DRAIN_DELAY_SECS));
        for (line, want) in [
            ("admin_listen = \"nine\"", "admin_listen: "),
            ("log_format = \"xml\"", "log_format: "),
            ("drain_timeout_secs = \"soon\"", "drain_timeout_secs: "),
            ("tls_cert = \"/nonexistent/c.pem\"", "tls_key: missing"),
            ("tls_key = \"/nonexistent/k.pem\"", "tls_cert: missing"),
        ] {
            let e = parse_err(&format!("{line}\n{GOOD}"));
            assert!(e.iter().any(|m| m.starts_with(want)), "{line}: {e:?}");
        }
        let e = parse_err(&format!(
            "tls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n{GOOD}"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("tls_cert/tls_key: cannot read /nonexistent/c.pem")),
            "{e:?}"
        );
    }

    #[test]
    fn tls_key_pairs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let (c, k) = (
                dir.path().join(format!("{name}.pem")),
                dir.path().join(format!("{name}-key.pem")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        };
        let (a_cert, a_key) = make("a");
        let (_, b_key) = make("b");
        let with =
            |cert: &Path, key: &Path| format!("tls_cert = {:?}\ntls_key = {:?}\n{GOOD}", cert, key);
        let c = parse_ok(&with(&a_cert, &a_key));
        assert_eq!(c.tls.as_ref().map(|t| t.cert.clone()), Some(a_cert.clone()));
        assert!(c.table().contains("(https, h2)"));
        let e = parse_err(&with(&a_cert, &b_key));
        assert!(
            e.iter().any(|m| m
                .starts_with("tls_cert/tls_key: the certificate and key do not make a TLS server")),
            "{e:?}"
        );
        let e = parse_err(&with(&a_cert, &a_cert));
        assert!(
            e.iter().any(|m| m.starts_with("tls_cert/tls_key: ")),
            "{e:?}"
        );
    }

    #[test]
    fn expansion() {
        assert_eq!(expand("a${SOAR}b", &env).unwrap(), "asoar-tokenb");
        assert_eq!(expand("$${SOAR}", &env).unwrap(), "${SOAR}");
        assert!(expand("${NOPE}", &env).is_err());
        assert!(expand("${SO", &env).is_err());
    }
}
