//! Which route a request belongs to, and which of its front's operations: the route's
//! optional `host`, then its `prefix` (stripped), then the front dialect's own paths and
//! methods. More specific routes are tried first: a route with a host before one without,
//! a longer prefix before a shorter one.

use std::sync::Arc;

use http::Method;

use crate::config::Route;
use crate::dialect::{self, BackCtx, Dialect, DialectId, FrontAuth, IdKind, Match, Request};
use crate::emulator::Emulator;
use crate::error::Error;
use crate::ledger::IdForm;
use crate::upstream::Upstream;

/// A configured route, ready to serve.
pub struct RouteRuntime {
    pub cfg: Route,
    /// `cfg.name`, shared: what every request's log and metrics labels hold.
    pub name: Arc<str>,
    /// `cfg.prefix`, shared: what every answer's links hold.
    pub prefix: Arc<str>,
    pub front: &'static dyn Dialect,
    pub back: &'static dyn Dialect,
    pub upstream: Upstream,
    pub auth: FrontAuth,
    /// The form of the front ids casegate gives files, where the back's ids do not fit
    /// the front's (SPEC 7.3); `None`: front ids are the back's.
    pub ids: Option<IdForm>,
    /// The in-process emulator of an `url = "embedded"` upstream, kept with its route.
    pub emulator: Option<Arc<Emulator>>,
}

impl RouteRuntime {
    pub fn new(
        cfg: Route,
        upstream: Upstream,
        auth: FrontAuth,
        emulator: Option<Arc<Emulator>>,
    ) -> RouteRuntime {
        let (front, back) = (dialect::get(cfg.front), dialect::get(cfg.upstream.dialect));
        let ids = dialect::id_mapping(front, back).map(|k| match k {
            IdKind::Uuid => IdForm::Uuid,
            IdKind::Integer | IdKind::Text => IdForm::Integer,
        });
        RouteRuntime {
            name: Arc::from(cfg.name.as_str()),
            prefix: Arc::from(cfg.prefix.as_str()),
            cfg,
            front,
            back,
            upstream,
            auth,
            ids,
            emulator,
        }
    }

    /// The back's view of the route, for a request whose path named `client_space`.
    pub fn ctx<'a>(&'a self, client_space: Option<&'a str>) -> BackCtx<'a> {
        BackCtx {
            base_url: self.upstream.base_url(),
            options: &self.cfg.upstream.options,
            client_space,
            raw_wanted: self.front.id() == self.back.id(),
        }
    }

    /// The back's case id for a front one: mapped when the route maps case ids (an
    /// unmapped one is 404, nothing sent), else the same.
    pub fn back_case(&self, front: &str) -> Result<String, Error> {
        match &self.cfg.cases {
            None => Ok(front.to_string()),
            Some(map) => map.back(front).map(str::to_string).ok_or_else(|| {
                Error::not_found(format!("The case {front} is not mapped on this route."))
            }),
        }
    }

    /// The front's case id for a back one.
    pub fn front_case(&self, back: &str) -> String {
        match &self.cfg.cases {
            Some(map) => map.front(back).unwrap_or(back).to_string(),
            None => back.to_string(),
        }
    }
}

/// What a request is: the result of routing it.
#[derive(Clone)]
pub enum Target {
    /// One of the route's operations.
    Op(Arc<RouteRuntime>, Request),
    /// One of the route's operation paths with another method; the methods it takes.
    Method(Arc<RouteRuntime>, &'static str),
    /// A path under the route that is none of its operations (passed through on a
    /// passthrough route, else 404 in the front's form); the path without the prefix.
    Other(Arc<RouteRuntime>, String),
    /// No route; the dialect whose path it looks like, for the 404's form.
    NotFound(Option<&'static dyn Dialect>),
}

impl Target {
    /// The route, when one matched.
    pub fn route(&self) -> Option<&Arc<RouteRuntime>> {
        match self {
            Target::Op(rt, _) | Target::Method(rt, _) | Target::Other(rt, _) => Some(rt),
            Target::NotFound(_) => None,
        }
    }

    /// The dialect errors are answered in.
    pub fn front(&self) -> Option<&'static dyn Dialect> {
        match self {
            Target::NotFound(d) => *d,
            _ => self.route().map(|rt| rt.front),
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn operation(&self) -> &'static str {
        match self {
            Target::Op(_, req) => req.op.name(),
            Target::Method(rt, _) | Target::Other(rt, _) if rt.cfg.passthrough => "passthrough",
            _ => "-",
        }
    }
}

/// The route table.
pub struct Router {
    routes: Vec<Arc<RouteRuntime>>,
}

impl Router {
    pub fn new(mut routes: Vec<Arc<RouteRuntime>>) -> Self {
        routes.sort_by(|a, b| {
            b.cfg
                .host
                .is_some()
                .cmp(&a.cfg.host.is_some())
                .then(b.cfg.prefix.len().cmp(&a.cfg.prefix.len()))
        });
        Router { routes }
    }

    pub fn routes(&self) -> &[Arc<RouteRuntime>] {
        &self.routes
    }

    /// Finds the route and operation for `host` (the Host header, if any), `method` and
    /// `path` (no query). An operation of any route wins; then a wrong method on an
    /// operation path; then the first route whose front owns the path (or whose prefix
    /// or host claims it).
    pub fn route(&self, host: Option<&str>, method: &Method, path: &str) -> Target {
        let mut wrong_method = None;
        let mut owned = None;
        let mut claimed = None;
        for rt in &self.routes {
            if !host_matches(rt.cfg.host.as_deref(), host) {
                continue;
            }
            let Some(rest) = strip_prefix(path, &rt.cfg.prefix) else {
                continue;
            };
            match rt.front.recognize(method, rest) {
                Match::Op(req) => return Target::Op(rt.clone(), req),
                Match::Method(allow) => {
                    wrong_method.get_or_insert((rt, allow));
                }
                Match::None if rt.front.owns(rest) => {
                    owned.get_or_insert((rt, rest));
                }
                Match::None if !rt.cfg.prefix.is_empty() || rt.cfg.host.is_some() => {
                    claimed.get_or_insert((rt, rest));
                }
                Match::None => {}
            }
        }
        if let Some((rt, allow)) = wrong_method {
            return Target::Method(rt.clone(), allow);
        }
        if let Some((rt, rest)) = owned.or(claimed) {
            return Target::Other(rt.clone(), rest.to_string());
        }
        Target::NotFound(self.looks_like(method, path))
    }

    /// The dialect whose path `path` is, under any configured prefix or none.
    fn looks_like(&self, method: &Method, path: &str) -> Option<&'static dyn Dialect> {
        let prefixes = std::iter::once("").chain(self.routes.iter().map(|r| r.cfg.prefix.as_str()));
        for prefix in prefixes {
            if let Some(rest) = strip_prefix(path, prefix) {
                for id in DialectId::ALL {
                    let d = dialect::get(id);
                    if d.recognize(method, rest) != Match::None || d.owns(rest) {
                        return Some(d);
                    }
                }
            }
        }
        None
    }
}

/// `path` without `prefix`, when it is under it (at a segment boundary).
pub fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
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
