//! routes.toml: loaded with figment (file, then `CASEGATE_LISTEN`,
//! `CASEGATE_MAX_UPLOAD_BYTES`, `CASEGATE_MAX_IN_FLIGHT`, `CASEGATE_SPOOL_DIR`), secrets
//! expanded from `${NAME}`, every key checked. Errors name the route and the key, and all
//! of them are reported at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::Value as FValue;
use figment::Figment;
use serde::Deserialize;

use crate::dialect::{self, AuthKind, DialectId};
use crate::secret::Secret;

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Largest file, in decoded bytes.
    pub max_upload_bytes: u64,
    /// Uploads served at once.
    pub max_in_flight: usize,
    /// Where bodies are spooled when field order forces it (`None`: the system temp dir).
    pub spool_dir: Option<PathBuf>,
    pub routes: Vec<Route>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
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
    pub upstream: Upstream,
}

/// `[routes.upstream]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub dialect: DialectId,
    pub url: UpstreamUrl,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub space: Option<String>,
    pub owner: Option<String>,
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
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

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
    spool_dir: Option<FValue>,
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
    upstream: RawUpstream,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    dialect: String,
    url: Option<String>,
    timeout_secs: Option<u64>,
    ca_file: Option<String>,
    space: Option<String>,
    owner: Option<String>,
    auth: Option<RawAuth>,
}

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
    parse(&text, env, env_overrides).map_err(|mut e| {
        for m in &mut e.0 {
            *m = format!("{}: {m}", path.display());
        }
        e
    })
}

/// Parses and validates routes.toml text.
pub fn parse(text: &str, env: EnvLookup<'_>, env_overrides: bool) -> Result<Config, ConfigError> {
    let mut fig = Figment::new().merge(Toml::string(text));
    if env_overrides {
        fig = fig.merge(Env::prefixed("CASEGATE_").only(&[
            "listen",
            "max_upload_bytes",
            "max_in_flight",
            "spool_dir",
        ]));
    }
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
    let spool_dir = top("spool_dir", raw.spool_dir).map(PathBuf::from);
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
    if let Some(d) = &spool_dir {
        if !d.is_dir() {
            errs.push(format!("spool_dir: {} is not a directory", d.display()));
        }
    }

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
            spool_dir,
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
        let upstream = self.upstream(r.upstream);
        Some(Route {
            name: r.name,
            front: front?,
            prefix,
            host,
            client_tokens,
            strict: r.strict.unwrap_or(false),
            token_key,
            upstream: upstream?,
        })
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
            if let Err(e) = crate::upstream::read_ca_file(ca) {
                self.err("upstream.ca_file", e);
            }
        }
        let space = self.exp("upstream.space", u.space);
        let owner = self.exp("upstream.owner", u.owner);
        if d.is_some() && d != Some(DialectId::Kibana) {
            if space.is_some() {
                self.err("upstream.space", "only for a kibana upstream");
            }
            if owner.is_some() {
                self.err("upstream.owner", "only for a kibana upstream");
            }
        }
        let auth = self.auth(d, u.auth.unwrap_or_default());
        Some(Upstream {
            dialect: d?,
            url: url?,
            timeout,
            ca_file,
            space,
            owner,
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
        let mut rows = vec![[
            "ROUTE".to_string(),
            "FRONT".into(),
            "MATCH".into(),
            "CLIENTS".into(),
            "UPSTREAM".into(),
            "UPSTREAM AUTH".into(),
            "STRICT".into(),
        ]];
        for r in &self.routes {
            let matches = format!("{}{}/...", r.host.as_deref().unwrap_or("*"), r.prefix);
            let clients = if r.client_tokens.is_empty() {
                "open".to_string()
            } else {
                format!("{} token(s) ***", r.client_tokens.len())
            };
            let mut up = format!("{} {}", r.upstream.dialect, r.upstream.url);
            if let Some(s) = &r.upstream.space {
                up.push_str(&format!(" space={s}"));
            }
            rows.push([
                r.name.clone(),
                r.front.to_string(),
                matches,
                clients,
                up,
                r.upstream.auth.describe(),
                if r.strict { "yes" } else { "no" }.into(),
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = format!(
            "listen {}  max_upload_bytes {}  max_in_flight {}  spool_dir {}\n",
            self.listen,
            self.max_upload_bytes,
            self.max_in_flight,
            self.spool_dir
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(system temp)".into())
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
    fn good_config() {
        let c = parse_ok(GOOD);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_upload_bytes, 1000);
        assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
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
                .contains("route \"soar-to-kibana\": upstream.space: only for a kibana upstream")),
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

    #[test]
    fn expansion() {
        assert_eq!(expand("a${SOAR}b", &env).unwrap(), "asoar-tokenb");
        assert_eq!(expand("$${SOAR}", &env).unwrap(), "${SOAR}");
        assert!(expand("${NOPE}", &env).is_err());
        assert!(expand("${SO", &env).is_err());
    }
}
