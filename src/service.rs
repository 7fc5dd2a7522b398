//! The tower stack every request goes through, outermost first:
//!
//! 1. [`RequestIdLayer`] and tower-http's `TraceLayer`, only where the log needs a
//!    `request` span (see [`crate::logging::request_spans`]; the trace layer's own
//!    per-request events are off: the access log is ours): the request's context
//!    ([`crate::context`]: its id, method and path) made first, in its extensions, for
//!    the span.
//! 2. [`AccessLayer`]: the request's context (made here without a span): its id a sane
//!    client `X-Request-Id` (visible ASCII, at most 128 bytes) or a new UUID, answered in
//!    `Casegate-Request-Id`. The request runs in its context (which every log line of the
//!    request names), then one access line and the request's metrics when its answer's
//!    body is done (complete, failed, or dropped by a client that went away), with the
//!    bytes of a download counted. An HTTP/1.1 request that expected `100 Continue` and
//!    is answered with a failure is answered with `Connection: close` (see
//!    [`closes_after`]).
//! 3. [`RouteLayer`]: which route and operation the request is, against the route table
//!    of the moment (a reload swaps the table; a request keeps the one it started with);
//!    the layers below take the request as a [`Routed`] one.
//! 4. [`RescueLayer`]: an error from the layers below (load shedding) as an answer in the
//!    route's front dialect.
//! 5. tower's `LoadShed` + `ConcurrencyLimit`: at most `max_in_flight` requests in the
//!    handler at once; beyond that 503 `overloaded` at once rather than a queue.
//! 6. [`BodyIdleLayer`]: a request body that stops arriving for 60 s fails (408). In
//!    tower-http's shape, but not its `RequestBodyTimeout`, which sets a new timer for
//!    every frame before looking at the body (see [`Idle`]).
//! 7. [`DrainLayer`]: a request body dropped before its end (an early refusal) is read
//!    and discarded a little longer (16 MiB, 2 s) so a client still sending reads the
//!    answer instead of a reset.
//! 8. the gateway itself ([`crate::server::Gateway`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, Service};

use crate::context::{self, RequestCtx};
use crate::dialect::{respond, Dialect};
use crate::error::{Body, BoxError, Error};
use crate::metrics::{Direction, Metrics, RequestLabels};
use crate::server::{Gateway, Routed};

/// The request header carrying a client's request id, and the answer's.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const CASEGATE_REQUEST_ID: HeaderName = HeaderName::from_static("casegate-request-id");
/// Longest client request id kept.
const MAX_REQUEST_ID: usize = 128;

// ---- 1. request ids ----

/// Makes the request's context ([`RequestCtx`]: its id, method and URI) and puts it in the
/// request's extensions, for a layer between this one and [`AccessLayer`] that needs the
/// id (tower-http's trace layer, for its span). Without such a layer the access layer
/// makes the context itself and keeps it out of the extensions (a box, a map and its
/// table on every request).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

/// A client's request id, when it is visible ASCII of at most 128 bytes.
fn sane_id(v: &HeaderValue) -> Option<&str> {
    let b = v.as_bytes();
    let ok =
        !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..=0x7e).contains(c));
    ok.then(|| v.to_str().ok()).flatten()
}

/// A request's context: its id the client's sane `X-Request-Id`, else a new one.
fn new_context<B>(req: &Request<B>) -> Arc<RequestCtx> {
    let id: Arc<str> = match req.headers().get(X_REQUEST_ID).and_then(sane_id) {
        Some(id) => id.into(),
        None => new_request_id(),
    };
    RequestCtx::new(id, req.method().clone(), req.uri().clone())
}

impl<S, B> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ctx = new_context(&req);
        req.extensions_mut().insert(ctx);
        self.inner.call(req)
    }
}

/// A new request id: a random UUID, written into one `Arc<str>` (through `to_string`, it
/// was formatted, then copied once more).
fn new_request_id() -> Arc<str> {
    let mut buf = uuid::Uuid::encode_buffer();
    Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
}

/// The `request` span of tower-http's trace layer: the request id, method and path (never
/// the query: a Thalamus token may ride in it).
pub fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .extensions()
        .get::<Arc<RequestCtx>>()
        .map(|c| c.id.clone())
        .unwrap_or_else(|| "-".into());
    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
}

// ---- 2. access log and metrics ----

/// One access-log event (target `casegate::access`) and the request's metrics per request,
/// when its answer's body is done.
#[derive(Clone)]
pub struct AccessLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for AccessLayer {
    type Service = AccessService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for AccessService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<AccessBody>;
    type Error = Infallible;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = crate::clock::exact();
        // The layers below see the context in its task-local scope: their `call` and the
        // request's future run inside it, where every log line names the request (see
        // `crate::logging`). Made here when no request-id layer made it above.
        let ctx = match req.extensions_mut().remove::<Arc<RequestCtx>>() {
            Some(ctx) => ctx,
            None => new_context(&req),
        };
        let expects_continue = expects_continue(&req);
        let inner = context::sync_scope(ctx.clone(), || self.inner.call(req));
        AccessFuture {
            inner: context::scope(ctx.clone(), inner),
            start: Some(Started {
                ctx,
                metrics: self.metrics.clone(),
                started,
                expects_continue,
            }),
        }
    }
}

/// What a request's access log event needs from its start.
struct Started {
    ctx: Arc<RequestCtx>,
    metrics: Arc<Metrics>,
    started: Instant,
    /// An HTTP/1.1 request with `Expect: 100-continue` (see [`closes_after`]).
    expects_continue: bool,
}

/// Whether `req` is an HTTP/1.1 request that waits for `100 Continue` before its body
/// (curl sends one for a body over 1 MiB). HTTP/1.0 has no such answer, and HTTP/2
/// frames each stream's body, so only HTTP/1.1 needs [`closes_after`].
fn expects_continue<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Whether an answer with `status` to a request that expected `100 Continue` closes its
/// connection. hyper sends the `100` when the body is first read; a request refused from
/// its head (a wrong credential, an unknown route, a wrong content type) is answered
/// without it, and the client may then never send the body (curl does not). hyper reads
/// on for the body whatever the client does, so the client's next request on that
/// connection would be read as this one's body. RFC 9110 section 10.1.1 asks a server
/// answering before the body to say whether it closes the connection or reads on; nginx
/// closes, and so does casegate for every failure (a failure after the body was read
/// closes a connection that could have been kept: rare, and never wrong). A success has
/// read the body.
fn closes_after(status: http::StatusCode) -> bool {
    !status.is_success()
}

pin_project_lite::pin_project! {
    /// [`AccessService`]'s future: the request run in its context, then its answer given
    /// the request id and its body wrapped to log and count the request when it is done.
    /// Not boxed: a box per layer cost an allocation and a copy of the inner future on
    /// every request (tower-http's layers name their futures the same way).
    pub struct AccessFuture<F> {
        #[pin]
        inner: context::Scoped<F>,
        start: Option<Started>,
    }

    impl<F> PinnedDrop for AccessFuture<F> {
        /// Dropped before it answered: the client went away (its connection closed, its
        /// HTTP/2 stream reset) while the request was served, or the drain's limit cut
        /// the connection. Logged and counted all the same, as nginx logs its 499: a
        /// request that made its upstream work does not vanish from the log.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(start) = this.start.take() {
                let status = if start.metrics.drain_cutting() {
                    http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    crate::error::CLIENT_CLOSED
                };
                Finished {
                    ctx: start.ctx,
                    metrics: start.metrics,
                    started: start.started,
                    status: status.as_u16(),
                    code: "-",
                }
                .emit(0, false);
            }
        }
    }
}

impl<F> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<AccessBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match std::task::ready!(this.inner.poll(cx)) {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        // Taken when the inner future answers, which it does once (polled again, the
        // task-local future would panic first); without it the answer goes out unlogged.
        let Some(start) = this.start.take() else {
            return Poll::Ready(Ok(resp.map(AccessBody::unlogged)));
        };
        let (mut parts, body) = resp.into_parts();
        if let Ok(mut id) = HeaderValue::from_str(&start.ctx.id) {
            // New in every answer: over HTTP/2 a literal never indexed, not one that
            // evicts a field of the HPACK tables each answer at the cost of the encoder's
            // insert (2 000 instructions an upload, bench/RESULTS.md's fifty-ninth round).
            id.set_sensitive(true);
            parts.headers.insert(CASEGATE_REQUEST_ID, id);
        }
        if start.expects_continue && closes_after(parts.status) {
            parts
                .headers
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let code = parts
            .headers
            .get("casegate-error")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| Error::code_from_str(c))
            .unwrap_or("-");
        let record = Finished {
            ctx: start.ctx,
            metrics: start.metrics,
            started: start.started,
            status: parts.status.as_u16(),
            code,
        };
        let body = AccessBody {
            inner: body,
            bytes: 0,
            complete: false,
            record: Some(record),
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// What a request's access log event needs once its body is done.
struct Finished {
    ctx: Arc<RequestCtx>,
    metrics: Arc<Metrics>,
    started: Instant,
    status: u16,
    code: &'static str,
}

impl Finished {
    fn emit(self, body_bytes: u64, complete: bool) {
        let elapsed = crate::clock::exact().saturating_duration_since(self.started);
        let info = self.ctx.info();
        let route_name = info.route.as_ref().unwrap_or(crate::metrics::no_route());
        let route: &str = route_name;
        let download = info.operation == "download";
        let file_bytes = if download {
            body_bytes
        } else {
            info.file_bytes
        };
        // A fold from 0.0: an empty `sum` of floats is -0.0, logged as `upstream_ms=-0.0`.
        let upstream_ms = info
            .upstream_times
            .iter()
            .fold(0.0, |ms, d| ms + d.as_secs_f64() * 1000.0);
        crate::logging::AccessLine {
            request_id: &self.ctx.id,
            method: self.ctx.method.as_str(),
            path: self.ctx.uri.path(),
            route,
            front: info.front,
            back: info.back,
            operation: info.operation,
            status: self.status,
            code: self.code,
            file_bytes,
            spooled: info.spooled,
            dropped: &info.dropped,
            upstream_status: info.upstream_status.map_or(0, u64::from),
            upstream_ms: (upstream_ms * 10.0).round() / 10.0,
            ms: (elapsed.as_secs_f64() * 10_000.0).round() / 10.0,
            complete,
        }
        .log();
        let m = &self.metrics;
        m.request(
            &RequestLabels {
                route: route_name,
                front: info.front,
                back: info.back,
                operation: info.operation,
                status: self.status,
                code: self.code,
            },
            elapsed,
        );
        if info.route.is_some() {
            for d in info.upstream_times.iter() {
                m.upstream_duration(route_name, info.back, *d);
            }
            if self.code.starts_with("upstream_") {
                m.upstream_error(route_name, self.code);
            }
            if file_bytes > 0 {
                let direction = if download {
                    Direction::Download
                } else {
                    Direction::Upload
                };
                m.file_bytes(route_name, direction, file_bytes);
            }
            if info.spooled {
                m.spooled(route_name);
            }
        }
    }
}

/// An answer's body that reports its request when it is done (or dropped): the body
/// every connection serves, as it is rather than boxed again (a box and a dynamic call
/// a response).
pub struct AccessBody {
    inner: Body,
    bytes: u64,
    complete: bool,
    record: Option<Finished>,
}

impl AccessBody {
    /// `inner` served without a record: a body a layer above [`AccessLayer`] wrapped (the
    /// request spans' layer), whose request this layer's own body already reports.
    pub fn unlogged(inner: Body) -> Self {
        AccessBody {
            inner,
            bytes: 0,
            complete: false,
            record: None,
        }
    }
}

impl http_body::Body for AccessBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Polled as the request, so that what its body logs names it.
        let this = &mut *self;
        let polled = match &this.record {
            Some(r) => {
                context::sync_scope(r.ctx.clone(), || Pin::new(&mut this.inner).poll_frame(cx))
            }
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AccessBody {
    fn drop(&mut self) {
        let complete = self.complete || self.inner.is_end_stream();
        if let Some(record) = self.record.take() {
            record.emit(self.bytes, complete);
        }
    }
}

// ---- 3. routing ----

/// Routes each request against the route table of the moment and hands it on as a
/// [`Routed`] request (the [`Target`] and the table beside it).
#[derive(Clone)]
pub struct RouteLayer {
    pub gateway: Arc<Gateway>,
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService {
            inner,
            gateway: self.gateway.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RouteService<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

impl<S, B> Service<Request<B>> for RouteService<S>
where
    S: Service<Routed<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let table = self.gateway.table();
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let target = table.router.route(host, req.method(), req.uri().path());
        // Run inside the request's context (the access layer's `call`).
        if let Some(rt) = target.route() {
            context::with_current(|ctx| {
                let mut i = ctx.info();
                i.route = Some(rt.name.clone());
                i.front = rt.front.id().name();
                i.back = rt.back.id().name();
                i.operation = target.operation();
                i.in_flight = Some((
                    self.gateway.metrics().in_flight(&rt.name),
                    self.gateway.serving(),
                ));
            });
        }
        self.inner.call(Routed { req, target, table })
    }
}

// ---- 4. errors from below, as answers ----

/// Answers an error of the layers below (load shedding) in the route's front dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = RescueService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RescueService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RescueService<S> {
    inner: S,
}

impl<S, B> Service<Routed<B>> for RescueService<S>
where
    S: Service<Routed<B>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // LoadShed is always ready; anything else would be answered in `call`.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Routed<B>) -> Self::Future {
        let front: Option<&'static dyn Dialect> = req.target.front();
        RescueFuture {
            inner: self.inner.call(req),
            front,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`RescueService`]'s future: the inner one's answer, or its error answered in the
    /// front's dialect. Not boxed (see [`AccessFuture`]).
    pub struct RescueFuture<F> {
        #[pin]
        inner: F,
        front: Option<&'static dyn Dialect>,
    }
}

impl<F, E> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match std::task::ready!(this.inner.poll(cx)) {
            Ok(resp) => resp,
            Err(e) => rescue(*this.front, e.into()),
        }))
    }
}

/// The answer to an error of the layers below: 503 when load shedding refused the
/// request, else 500; in the front's dialect when a route matched.
fn rescue(front: Option<&'static dyn Dialect>, e: BoxError) -> Response<Body> {
    let err = if e.is::<tower::load_shed::error::Overloaded>() {
        Error::overloaded()
    } else {
        tracing::error!(error = %e, "a request failed in the service stack");
        Error::internal("casegate failed to serve the request.")
    };
    match front {
        Some(d) => respond(d, &err),
        None => crate::error::text_response(err.status, "Service Unavailable"),
    }
}

// ---- 6. request body idle timeout ----

/// A bound on how long a stream may wait for its next item, counted from the poll that
/// first finds nothing ready: time the caller spends between polls is not the stream's
/// silence. A stream whose items are ready when polled never touches a timer.
///
/// tower-http's `TimeoutBody` sets a new timer for every frame and polls it before the
/// body: a registration in the runtime's timer wheel and its removal per frame, even when
/// the frame is already there (about 585 instructions a poll, three per small upload:
/// bench/RESULTS.md, the twenty-ninth round). Here the timer is set at the first wait and
/// kept: a later wait only notes when it began, and when the timer fires for a wait that
/// began after it was set, it is set again for that wait's end.
pub struct Idle {
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// An item came since the current wait began: the next wait is a new one.
    moved: bool,
    /// When the current wait began, when that was after the timer was set.
    since: Option<tokio::time::Instant>,
}

impl Idle {
    pub fn new(limit: Duration) -> Idle {
        Idle {
            limit,
            timer: None,
            moved: false,
            since: None,
        }
    }

    /// The stream gave an item.
    pub fn moved(&mut self) {
        self.moved = true;
    }

    /// The stream has nothing ready: Ready once this wait has lasted the limit (needs a
    /// tokio runtime, for the timer).
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.is_none() {
            self.moved = false;
            self.since = None;
        } else if std::mem::take(&mut self.moved) {
            self.since = Some(tokio::time::Instant::now());
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        loop {
            std::task::ready!(timer.as_mut().poll(cx));
            match self.since.take().map(|began| began + limit) {
                Some(end) if end > tokio::time::Instant::now() => timer.as_mut().reset(end),
                _ => return Poll::Ready(()),
            }
        }
    }
}

/// A request body that stopped arriving for longer than the limit (answered 408).
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
pub struct BodyIdle;

/// Wraps request bodies in [`IdleBody`].
#[derive(Debug, Clone, Copy)]
pub struct BodyIdleLayer {
    pub limit: Duration,
}

impl<S> Layer<S> for BodyIdleLayer {
    type Service = WrapBodies<S, BodyIdleLayer>;
    fn layer(&self, inner: S) -> Self::Service {
        WrapBodies { inner, wrap: *self }
    }
}

impl<B> WrapBody<B> for BodyIdleLayer {
    type Body = IdleBody<B>;
    fn wrap(&self, body: B) -> IdleBody<B> {
        IdleBody {
            body,
            idle: Idle::new(self.limit),
        }
    }
}

/// How a body layer ([`BodyIdleLayer`], [`DrainLayer`]) wraps a request's body.
pub trait WrapBody<B> {
    type Body;
    fn wrap(&self, body: B) -> Self::Body;
}

/// The service of a body layer: the request as it came, its body wrapped by `W`.
#[derive(Debug, Clone)]
pub struct WrapBodies<S, W> {
    inner: S,
    wrap: W,
}

impl<S, W, B> Service<Routed<B>> for WrapBodies<S, W>
where
    W: WrapBody<B>,
    S: Service<Routed<W::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Routed<B>) -> Self::Future {
        let req = req.map_body(|body| self.wrap.wrap(body));
        self.inner.call(req)
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyIdle`] when it waits longer than the limit
    /// for its next frame.
    pub struct IdleBody<B> {
        #[pin]
        body: B,
        idle: Idle,
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        // A wake of the connection made in the body's poll is passed on only while the
        // body goes on (see `workers::Relay`).
        let (polled, held) = crate::workers::holding_wakes(|| this.body.as_mut().poll_frame(cx));
        if let Some(held) = held {
            if !this.body.is_end_stream() {
                held.pass();
            }
        }
        if let Poll::Ready(frame) = polled {
            this.idle.moved();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        std::task::ready!(this.idle.poll_wait(cx));
        Poll::Ready(Some(Err(Box::new(BodyIdle))))
    }

    /// The body's own: a body read to its end says so (tower-http's wrapper did not, so a
    /// form read to its closing boundary was polled once more when dropped).
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// ---- 7. drain on early refusal ----

/// What an early answer lets a client still send before the connection closes. A client
/// busy writing its body may not read the answer until the body is out (hyper's client
/// does not), and a close with its bytes unread resets the connection, answer and all:
/// 16 MiB covers the bodies such a refusal usually meets at loopback or LAN speed, the
/// time limit bounds the rest (nginx's lingering close reads for up to 30 s, unbounded).
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Frames read at once when a body is dropped before its end, before a task takes over.
const DRAIN_NOW_FRAMES: usize = 8;

/// Wraps request bodies in [`DrainOnDrop`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainLayer;

impl<S> Layer<S> for DrainLayer {
    type Service = WrapBodies<S, DrainLayer>;
    fn layer(&self, inner: S) -> Self::Service {
        WrapBodies { inner, wrap: *self }
    }
}

impl<B: http_body::Body + Send + Unpin + 'static> WrapBody<B> for DrainLayer {
    type Body = DrainOnDrop<B>;
    fn wrap(&self, body: B) -> DrainOnDrop<B> {
        DrainOnDrop {
            inner: Some(body),
            ended: false,
        }
    }
}

/// A request body that, dropped before its end, is read and discarded a little longer in
/// the background (at most 16 MiB, 2 s): a client still sending then reads the early answer
/// instead of a connection reset. The body is kept in place (it is `Unpin`: moved into
/// that task as it is, not boxed for every request in case it is).
pub struct DrainOnDrop<B: http_body::Body + Send + Unpin + 'static> {
    inner: Option<B>,
    ended: bool,
}

impl<B> http_body::Body for DrainOnDrop<B>
where
    B: http_body::Body + Send + Unpin + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B> Drop for DrainOnDrop<B>
where
    B: http_body::Body + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if self.ended || body.is_end_stream() {
            return;
        }
        // Only inside a runtime: the idle timeout's timer, set when the body waits, needs one.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A look first, with no waker: a body dropped early is most often at its end
        // already (a form read to its closing boundary, under a wrapper that does not say
        // so; [`IdleBody`] does), and what has arrived is read here. Only a body still coming gets a
        // task (a spawn and a poll per upload were about 2 000 instructions).
        let mut seen = 0u64;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..DRAIN_NOW_FRAMES {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        seen += bytes::Buf::remaining(d) as u64;
                    }
                }
                Poll::Ready(_) => return,
                Poll::Pending => break,
            }
        }
        handle.spawn(async move {
            let drain = async {
                while seen < DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(f)) => {
                            if let Some(d) = f.data_ref() {
                                seen += bytes::Buf::remaining(d) as u64;
                            }
                        }
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that gives `ready` data frames at once, then is at its end (`end`) or
    /// waits, and never says it has ended; `polls` counts its polls.
    struct Script {
        ready: usize,
        end: bool,
        polls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl http_body::Body for Script {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.polls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.ready > 0 {
                self.ready -= 1;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))));
            }
            if self.end {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn outside_a_runtime_a_body_dropped_early_is_left_alone() {
        // Its idle timeout's timer would need a runtime; nothing polls it.
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        drop(DrainOnDrop {
            inner: Some(Box::pin(Script {
                ready: 1,
                end: true,
                polls: polls.clone(),
            })),
            ended: false,
        });
        assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_body_dropped_at_its_end_is_found_there_without_a_task() {
        let polls = |ready, end| {
            let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            drop(DrainOnDrop {
                inner: Some(Box::pin(Script {
                    ready,
                    end,
                    polls: n.clone(),
                })),
                ended: false,
            });
            n
        };
        let load =
            |n: &Arc<std::sync::atomic::AtomicUsize>| n.load(std::sync::atomic::Ordering::Relaxed);
        // At its end, or a few frames from it: read in the drop, nothing left to a task.
        assert_eq!(load(&polls(0, true)), 1);
        assert_eq!(load(&polls(3, true)), 4);
        // Still coming: a task keeps reading it after the drop.
        let waiting = polls(DRAIN_NOW_FRAMES + 2, false);
        assert_eq!(load(&waiting), DRAIN_NOW_FRAMES);
        for _ in 0..100 {
            if load(&waiting) == DRAIN_NOW_FRAMES + 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(load(&waiting), DRAIN_NOW_FRAMES + 3);
    }

    /// What polling a body gives.
    type Polled<B> =
        Poll<Option<Result<Frame<<B as http_body::Body>::Data>, <B as http_body::Body>::Error>>>;

    /// Polls `body` once, with a waker that does nothing.
    fn poll_once<B: http_body::Body + Unpin>(body: &mut B) -> Polled<B> {
        Pin::new(body).poll_frame(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn a_body_whose_frames_are_ready_sets_no_timer_and_says_when_it_ended() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut body = IdleBody {
            body: Script {
                ready: 3,
                end: true,
                polls,
            },
            idle: Idle::new(Duration::from_secs(60)),
        };
        for _ in 0..3 {
            assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        }
        assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
        assert!(body.idle.timer.is_none(), "a timer was set");

        // A body read to its end says so, so that dropping it polls nothing more.
        let mut full = IdleBody {
            body: http_body_util::Full::new(Bytes::from_static(b"form")),
            idle: Idle::new(Duration::from_secs(60)),
        };
        assert!(!full.is_end_stream());
        assert!(matches!(poll_once(&mut full), Poll::Ready(Some(Ok(_)))));
        assert!(full.is_end_stream());
    }

    /// A body that gives what is queued, else waits.
    fn gate(
        queue: Arc<std::sync::Mutex<std::collections::VecDeque<Bytes>>>,
    ) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Unpin {
        http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |_| {
            match queue.lock().unwrap().pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_fails_once_it_has_waited_the_limit_since_its_wait_began() {
        let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let mut body = IdleBody {
            body: gate(queue.clone()),
            idle: Idle::new(Duration::from_secs(60)),
        };
        let after = |s| tokio::time::advance(Duration::from_secs(s));
        let failed = |p: Poll<Option<Result<Frame<Bytes>, BoxError>>>| matches!(p, Poll::Ready(Some(Err(e))) if e.is::<BodyIdle>());
        // 0 s: nothing there, the wait begins (the timer is set for 60 s).
        assert!(poll_once(&mut body).is_pending());
        after(10).await;
        queue.lock().unwrap().push_back(Bytes::from_static(b"part"));
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        // The caller takes 30 s before it asks again (an upstream slow to take the
        // frame): not the body's silence. A new wait begins at 40 s.
        after(30).await;
        assert!(poll_once(&mut body).is_pending());
        // 60 s: the timer fires, for a wait that began at 40 s: set again, for 100 s.
        after(20).await;
        assert!(poll_once(&mut body).is_pending());
        after(39).await;
        assert!(poll_once(&mut body).is_pending());
        after(1).await;
        assert!(failed(poll_once(&mut body)));

        // A body that never gives a frame fails at the limit itself.
        let mut silent = IdleBody {
            body: gate(Default::default()),
            idle: Idle::new(Duration::from_secs(60)),
        };
        assert!(poll_once(&mut silent).is_pending());
        after(59).await;
        assert!(poll_once(&mut silent).is_pending());
        after(1).await;
        assert!(failed(poll_once(&mut silent)));
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(sane_id(&v("abc-123_XYZ.~")), Some("abc-123_XYZ.~"));
        assert_eq!(sane_id(&v(&"a".repeat(128))).map(str::len), Some(128));
        assert_eq!(sane_id(&v(&"a".repeat(129))), None);
        assert_eq!(sane_id(&v("has space")), None);
        assert_eq!(sane_id(&v("")), None);
        assert_eq!(
            sane_id(&HeaderValue::from_bytes(b"\xc3\xbc").unwrap()),
            None
        );
    }
}
