//! What one request knows about itself wherever its code runs: its id (sent upstream as
//! `X-Request-Id` on every call it makes) and the facts its access-log event and metrics
//! report (route, operation, upstream status and time, file bytes, spooling). The service
//! stack ([`crate::service`]) creates a [`RequestCtx`] per request and runs the request's
//! future inside [`scope`]; code below reads it with [`current`] instead of threading it
//! through every call. Outside a request (tests calling pipelines directly) there is none,
//! and recording is a no-op.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Method, Uri};

tokio::task_local! {
    static CURRENT: Arc<RequestCtx>;
}

/// One request's identity and the facts gathered while it is served.
pub struct RequestCtx {
    /// The request id: the client's sane `X-Request-Id`, else a fresh UUID.
    pub id: Arc<str>,
    pub method: Method,
    /// The request's URI, kept whole (a reference count on the request line's bytes).
    /// Only its path is ever logged: a Thalamus token may ride in the query.
    pub uri: Uri,
    info: Mutex<Info>,
}

/// What the access log and the metrics report about a request.
#[derive(Debug, Default)]
pub struct Info {
    /// The route's name, when one matched.
    pub route: Option<Arc<str>>,
    pub front: &'static str,
    pub back: &'static str,
    /// The operation's name (`upload`, `download`, ..., `passthrough`).
    pub operation: &'static str,
    /// The last upstream answer's status, and the time each upstream call took to answer.
    pub upstream_status: Option<u16>,
    pub upstream_times: Times,
    /// File bytes casegate counted through an upload.
    pub file_bytes: u64,
    pub spooled: bool,
    /// Fields named in `Casegate-Dropped`.
    pub dropped: Vec<&'static str>,
    /// Held while the request is in flight (the metrics gauge's guard and the ledger's
    /// load count).
    pub in_flight: Option<(crate::metrics::InFlight, crate::ledger::Serving)>,
}

/// The time each upstream call of a request took: the first [`Times::INLINE`] in place
/// (a request makes one or two), any more in a vector. A `Vec` alone allocated for
/// every request.
#[derive(Debug, Default)]
pub struct Times {
    first: [Duration; Times::INLINE],
    len: usize,
    more: Vec<Duration>,
}

impl Times {
    const INLINE: usize = 4;

    pub fn push(&mut self, d: Duration) {
        match self.first.get_mut(self.len) {
            Some(slot) => *slot = d,
            None => self.more.push(d),
        }
        self.len += 1;
    }

    /// Every time pushed, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Duration> {
        self.first[..self.len.min(Self::INLINE)]
            .iter()
            .chain(self.more.iter())
    }
}

/// The URI's path only: its query may carry a Thalamus token.
impl std::fmt::Debug for RequestCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCtx")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("path", &self.uri.path())
            .field("info", &self.info)
            .finish()
    }
}

impl RequestCtx {
    pub fn new(id: Arc<str>, method: Method, uri: Uri) -> Arc<RequestCtx> {
        Arc::new(RequestCtx {
            id,
            method,
            uri,
            info: Mutex::new(Info {
                front: "-",
                back: "-",
                operation: "-",
                ..Info::default()
            }),
        })
    }

    /// The facts so far, locked.
    pub fn info(&self) -> MutexGuard<'_, Info> {
        self.info.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The current request's context, if code runs inside one.
pub fn current() -> Option<Arc<RequestCtx>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// `f` of the current request's context, if code runs inside one (without the reference
/// count [`current`] takes).
pub fn with_current<R>(f: impl FnOnce(&RequestCtx) -> R) -> Option<R> {
    CURRENT.try_with(|ctx| f(ctx)).ok()
}

/// Records into the current request's facts (nothing outside a request).
pub fn record(f: impl FnOnce(&mut Info)) {
    if let Some(ctx) = current() {
        f(&mut ctx.info());
    }
}

/// `fut`, run as the request `ctx` (a future of a type that can be named, so that the
/// service stack's futures need no box).
pub fn scope<F: Future>(ctx: Arc<RequestCtx>, fut: F) -> Scoped<F> {
    CURRENT.scope(ctx, fut)
}

/// `f`, run as the request `ctx`: for the synchronous parts of a request (a service's
/// `call`, a poll of its answer's body).
pub fn sync_scope<R>(ctx: Arc<RequestCtx>, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(ctx, f)
}

/// A future run as a request: [`scope`]'s.
pub type Scoped<F> = tokio::task::futures::TaskLocalFuture<Arc<RequestCtx>, F>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_never_shows_the_query() {
        let uri: http::Uri = "/r/api/v4/cases/7/files?touchpoint=t&token=s3cret"
            .parse()
            .unwrap();
        let ctx = RequestCtx::new("id-1".into(), Method::POST, uri);
        let shown = format!("{ctx:?}");
        assert!(shown.contains("/r/api/v4/cases/7/files"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("token"),
            "{shown}"
        );
    }

    #[test]
    fn times_keep_every_push_in_order_past_the_inline_ones() {
        for n in 0..=9u64 {
            let mut times = Times::default();
            let pushed: Vec<Duration> = (1..=n).map(Duration::from_millis).collect();
            for d in &pushed {
                times.push(*d);
            }
            let kept: Vec<Duration> = times.iter().copied().collect();
            assert_eq!(kept, pushed, "{n} pushed");
        }
    }
}
