//! Which route a request belongs to: the route's optional `host`, then its `prefix`
//! (stripped), then the front dialect's own paths. More specific routes are tried first:
//! a route with a host before one without, a longer prefix before a shorter one.

use crate::config::Route;
use crate::dialect::{self, Dialect, DialectId, FrontAuth, Operation};
use crate::upstream::Upstream;

/// A configured route, ready to serve.
pub struct RouteRuntime {
    pub cfg: Route,
    pub front: &'static dyn Dialect,
    pub back: &'static dyn Dialect,
    pub upstream: Upstream,
    pub auth: FrontAuth,
}

/// The result of routing a request.
pub enum Routed<'a> {
    Found(&'a RouteRuntime, Operation),
    /// No route; the dialect whose path it looks like, for the 404's form.
    NotFound(Option<&'static dyn Dialect>),
}

/// The route table.
pub struct Router {
    routes: Vec<RouteRuntime>,
}

impl Router {
    pub fn new(mut routes: Vec<RouteRuntime>) -> Self {
        routes.sort_by(|a, b| {
            b.cfg
                .host
                .is_some()
                .cmp(&a.cfg.host.is_some())
                .then(b.cfg.prefix.len().cmp(&a.cfg.prefix.len()))
        });
        Router { routes }
    }

    pub fn routes(&self) -> &[RouteRuntime] {
        &self.routes
    }

    /// Finds the route for `host` (the Host header, if any) and `path` (no query).
    pub fn route(&self, host: Option<&str>, path: &str) -> Routed<'_> {
        for rt in &self.routes {
            if !host_matches(rt.cfg.host.as_deref(), host) {
                continue;
            }
            let Some(rest) = strip_prefix(path, &rt.cfg.prefix) else {
                continue;
            };
            if let Some(op) = rt.front.recognize(rest) {
                return Routed::Found(rt, op);
            }
        }
        Routed::NotFound(self.looks_like(path))
    }

    /// The dialect whose path `path` is, under any configured prefix or none.
    fn looks_like(&self, path: &str) -> Option<&'static dyn Dialect> {
        let prefixes = std::iter::once("").chain(self.routes.iter().map(|r| r.cfg.prefix.as_str()));
        for prefix in prefixes {
            if let Some(rest) = strip_prefix(path, prefix) {
                for id in DialectId::ALL {
                    let d = dialect::get(id);
                    if d.recognize(rest).is_some() {
                        return Some(d);
                    }
                }
            }
        }
        None
    }
}

/// `path` without `prefix`, when it is under it (at a segment boundary).
fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// A route's host matches the request's: exactly when the route names a port, else by
/// host name alone. Case-insensitive. A route without a host matches every request.
fn host_matches(route: Option<&str>, request: Option<&str>) -> bool {
    let Some(want) = route else { return true };
    let Some(got) = request else { return false };
    let got = got.trim().to_ascii_lowercase();
    if got == want {
        return true;
    }
    if want.contains(':') && !want.starts_with('[') {
        return false;
    }
    let name = match got.rfind(':') {
        Some(i) if !got.ends_with(']') => &got[..i],
        _ => got.as_str(),
    };
    name == want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_strip_at_segment_boundaries() {
        assert_eq!(strip_prefix("/k/api/x", "/k"), Some("/api/x"));
        assert_eq!(strip_prefix("/kk/api/x", "/k"), None);
        assert_eq!(strip_prefix("/api/x", ""), Some("/api/x"));
    }

    #[test]
    fn hosts() {
        assert!(host_matches(None, None));
        assert!(host_matches(
            Some("cases.example.org"),
            Some("Cases.Example.org:8080")
        ));
        assert!(host_matches(
            Some("cases.example.org:8080"),
            Some("cases.example.org:8080")
        ));
        assert!(!host_matches(
            Some("cases.example.org:8080"),
            Some("cases.example.org:9090")
        ));
        assert!(!host_matches(Some("a.org"), Some("b.org")));
        assert!(!host_matches(Some("a.org"), None));
    }
}
