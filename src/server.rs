//! Listeners, connections, reload and drain. The public listener serves HTTP/1.1 and
//! HTTP/2 (h2c with prior knowledge on plain TCP; `h2` or `http/1.1` by ALPN under TLS)
//! through hyper-util, each connection its own task, with caps on request heads, header
//! counts, streams per connection and a header read timeout. Every request goes through
//! the tower stack of [`crate::service`] into the [`Gateway`], which holds the route table
//! behind an `ArcSwap`: SIGHUP builds a new table (keeping the routes that did not change,
//! with their upstream pools, token caches and generated keys) and swaps it in, while
//! requests in flight finish on the table they started with. SIGTERM drains: `/readyz`
//! turns 503, casegate keeps serving for `drain_delay_secs` (when an admin listener tells
//! a balancer), stops accepting, lets requests in flight finish for `drain_timeout_secs`,
//! then cuts what is left (their upstream requests are aborted, nothing is stored short);
//! a second SIGTERM or Ctrl-C cuts it short.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceBuilder;

use crate::admin::{Admin, Readiness};
use crate::config::{self, Config, UpstreamUrl};
use crate::context;
use crate::dialect::{respond, FrontAuth, Op};
use crate::emulator::{self, Emulator};
use crate::error::{Body, Error};
use crate::forward::{self, Settings};
use crate::inbound::{body_stream, Limits};
use crate::ledger::{Ledger, Load, Serving};
use crate::metrics::{LedgerFigures, Metrics};
use crate::router::{RouteRuntime, Router, Target};
use crate::secret::Secret;
use crate::service::{self, AccessBody, DrainOnDrop};
use crate::upstream::Upstream;

/// Longest wait for a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most header fields a request may have.
pub const MAX_HEADERS: usize = 100;
/// Largest buffered request head (HTTP/1) or header list (HTTP/2), in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most concurrent HTTP/2 streams on one connection.
pub const MAX_STREAMS: u32 = 256;
/// Longest TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of a request as the gateway sees it, after the service stack.
pub type ReqBody = DrainOnDrop<service::IdleBody<Incoming>>;

/// One generation of the configuration: the routes and what every request shares.
pub struct Table {
    pub router: Router,
    pub settings: Arc<Settings>,
    pub config: Config,
}

/// A request the service stack routed: the request, where it goes, and the table it was
/// routed by. The layers below the route's take this rather than a `Request` carrying the
/// route in its extensions (a box, a map and its table on every request).
pub struct Routed<B> {
    pub req: Request<B>,
    pub target: Target,
    pub table: Arc<Table>,
}

impl<B> Routed<B> {
    /// The same request with its body mapped.
    pub fn map_body<C>(self, f: impl FnOnce(B) -> C) -> Routed<C> {
        Routed {
            req: self.req.map(f),
            target: self.target,
            table: self.table,
        }
    }
}

/// Everything a request needs: the route table of the moment, the ledger, the metrics,
/// and whether casegate is draining.
pub struct Gateway {
    table: ArcSwap<Table>,
    ledger: Ledger,
    /// How many routed requests are being served (the ledger reads it).
    load: Load,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// casegate's own TLS config, when it serves HTTPS (swapped on reload).
    tls: ArcSwapOption<rustls::ServerConfig>,
}

impl Gateway {
    /// Builds the routes (upstream clients, and an in-process emulator for each
    /// `url = "embedded"`) and opens the ledger.
    pub async fn build(cfg: &Config) -> Result<Gateway, String> {
        let load = Load::default();
        let ledger = Ledger::open_with_load(&cfg.ledger, Some(load.clone()))
            .await
            .map_err(|e| format!("ledger {}: {e}", cfg.ledger.describe()))?;
        ledger.start_tasks();
        let metrics = Metrics::new();
        {
            let ledger = ledger.clone();
            metrics.set_ledger_source(Box::new(move || LedgerFigures {
                errors: ledger.errors(),
                available: ledger.healthy(),
                waiting: ledger.pending() as u64,
                lost: ledger.rows_lost(),
            }));
        }
        let table = build_table(cfg, &ledger, None).await?;
        let tls = match &cfg.tls {
            Some(files) => {
                let tls = tls_config(files)?;
                metrics.set_tls_cert_expiry(crate::tls::note_expiry(&files.cert));
                Some(Arc::new(tls))
            }
            None => None,
        };
        Ok(Gateway {
            table: ArcSwap::from_pointee(table),
            ledger,
            load,
            metrics,
            draining: AtomicBool::new(false),
            tls: ArcSwapOption::new(tls),
        })
    }

    /// The route table of the moment.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Counts a routed request as being served until the guard drops.
    pub fn serving(&self) -> Serving {
        self.load.enter()
    }

    /// The ledger (tests and the `ledger` command read it).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The embedded emulators, in route order.
    pub fn emulators(&self) -> Vec<Arc<Emulator>> {
        let table = self.table();
        table
            .config
            .routes
            .iter()
            .filter_map(|r| {
                table
                    .router
                    .routes()
                    .iter()
                    .find(|rt| rt.cfg.name == r.name)
                    .and_then(|rt| rt.emulator.clone())
            })
            .collect()
    }

    /// Swaps in the routes of `cfg` for new requests; requests in flight finish on the
    /// old ones. Routes whose configuration did not change are kept as they are (their
    /// upstream pools, token caches, generated token keys and embedded emulators). What
    /// needs a restart (listen, admin_listen, ledger, max_in_flight, workers, log_format) is
    /// logged and otherwise ignored.
    pub async fn reload(&self, cfg: Config) -> Result<(), String> {
        let old = self.table();
        let tls = match &cfg.tls {
            Some(files) => Some(Arc::new(tls_config(files)?)),
            None => None,
        };
        let o = &old.config;
        for (changed, what) in [
            (o.listen != cfg.listen, "listen"),
            (o.admin_listen != cfg.admin_listen, "admin_listen"),
            (o.ledger != cfg.ledger, "ledger"),
            (o.max_in_flight != cfg.max_in_flight, "max_in_flight"),
            (o.workers != cfg.workers, "workers"),
            (o.log_format != cfg.log_format, "log_format"),
        ] {
            if changed {
                tracing::warn!(
                    key = what,
                    "a change of this key needs a restart; it is ignored until then"
                );
            }
        }
        let table = build_table(&cfg, &self.ledger, Some(&old)).await?;
        // Nothing is swapped in before everything the file names was built.
        if tls.is_some() != self.tls.load().is_some() {
            tracing::warn!(
                "turning TLS on or off needs a restart; the listener keeps what it serves"
            );
        } else {
            if let Some(files) = &cfg.tls {
                self.metrics
                    .set_tls_cert_expiry(crate::tls::note_expiry(&files.cert));
            }
            self.tls.store(tls);
        }
        let routes = table.router.routes().len();
        self.table.store(Arc::new(table));
        tracing::info!(routes, "routes reloaded");
        Ok(())
    }

    /// Reads `path` and [`Gateway::reload`]s it; a file that fails validation changes
    /// nothing. Counted in `casegate_config_reloads_total`.
    pub async fn reload_from(&self, path: &Path) -> Result<(), String> {
        let result = match config::load(path) {
            Ok(cfg) => self.reload(cfg).await,
            Err(e) => Err(e.to_string()),
        };
        self.metrics.config_reload(result.is_ok());
        if let Err(e) = &result {
            tracing::error!(error = %e, "the new configuration was refused; the old routes keep serving");
        }
        result
    }

    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Serves one request the service stack routed.
    ///
    /// Each operation's future is boxed where it starts (an upload's in
    /// [`forward::upload`]): they are several KiB, and a future moves into each one that
    /// awaits it, so carried inline they would be copied once per level above (the
    /// handler's future, then the stack's) on every request. Each is built in its box
    /// ([`crate::boxed`]), not built and then copied there.
    async fn handle(&self, routed: Routed<ReqBody>) -> Response<Body> {
        let Routed { req, target, table } = routed;
        let settings = &table.settings;
        let (parts, body) = req.into_parts();
        match target {
            Target::Op(rt, op) => self.operation(&rt, settings, parts, body, op).await,
            Target::Method(rt, _) | Target::Other(rt, _) if rt.cfg.passthrough => {
                let rest = crate::router::strip_prefix(parts.uri.path(), &rt.cfg.prefix)
                    .unwrap_or("/")
                    .to_string();
                crate::boxed(|| crate::passthrough::forward(&rt, settings, parts, body, &rest))
                    .await
            }
            Target::Method(rt, allow) => respond(rt.front, &Error::method_not_allowed(allow)),
            Target::Other(rt, _) => respond(rt.front, &Error::not_found("Not Found")),
            Target::NotFound(Some(d)) => respond(d, &Error::not_found("Not Found")),
            Target::NotFound(None) => {
                let mut r = crate::error::text_response(http::StatusCode::NOT_FOUND, "Not Found");
                r.headers_mut().insert(
                    "casegate-error",
                    http::HeaderValue::from_static(crate::error::Code::NotFound.as_str()),
                );
                r
            }
        }
    }

    /// One of a route's operations: the client's credential and the front's own rules,
    /// then its pipeline.
    async fn operation(
        &self,
        rt: &RouteRuntime,
        settings: &Settings,
        parts: http::request::Parts,
        body: ReqBody,
        req: crate::dialect::Request,
    ) -> Response<Body> {
        if req.op == Op::Token {
            let stream = body_stream(body, 64 * 1024);
            return rt
                .front
                .serve_own(req, parts, stream, rt.auth.clone())
                .await;
        }
        let checked = if rt.auth.tokens.is_empty() {
            Ok(())
        } else {
            rt.front.authenticate(&parts, &rt.auth)
        };
        if let Err(e) = checked.and_then(|()| rt.front.preflight(&parts, &req)) {
            return respond(rt.front, &e);
        }
        match req.op {
            Op::Upload => {
                let (resp, report) = forward::upload(rt, settings, parts, body, req).await;
                context::record(|i| {
                    i.file_bytes = report.file_bytes;
                    i.spooled = report.spooled;
                    i.dropped = report.dropped;
                });
                resp
            }
            _ => {
                drop(body);
                crate::boxed(|| crate::read::serve(rt, settings, parts, req)).await
            }
        }
    }
}

impl Readiness for Gateway {
    fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining".into());
        }
        if !self.ledger.healthy() {
            return Err("ledger unavailable".into());
        }
        Ok(())
    }
}

/// Builds a route table, keeping from `old` every route whose configuration is the same.
async fn build_table(cfg: &Config, ledger: &Ledger, old: Option<&Table>) -> Result<Table, String> {
    let mut routes = Vec::new();
    for r in &cfg.routes {
        let kept = old.and_then(|t| t.router.routes().iter().find(|rt| rt.cfg == *r).cloned());
        match kept {
            Some(rt) => routes.push(rt),
            None => routes.push(Arc::new(build_route(r).await?)),
        }
    }
    let spool_dir = cfg.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    Ok(Table {
        router: Router::new(routes),
        settings: Arc::new(Settings {
            limits: Limits::new(cfg.max_upload_bytes),
            spool_dir,
            ledger: ledger.clone(),
            public_url: cfg.public_url.clone(),
            scheme: if cfg.tls.is_some() { "https" } else { "http" },
        }),
        config: cfg.clone(),
    })
}

/// One route: its upstream client (and embedded emulator), its clients' credentials.
async fn build_route(r: &config::Route) -> Result<RouteRuntime, String> {
    let (base, emulator) = match &r.upstream.url {
        UpstreamUrl::Url(u) => (u.clone(), None),
        UpstreamUrl::Embedded => {
            let mut ec = emulator::Config::new(r.upstream.dialect);
            ec.tokens = r.upstream.auth.accepted_credential().into_iter().collect();
            if let Some(owner) = r.upstream.options.get("owner") {
                ec.kibana_owner = owner.clone();
            }
            let emu = Emulator::start(ec, SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map_err(|e| {
                    format!(
                        "route {:?}: cannot start the embedded {} emulator: {e}",
                        r.name, r.upstream.dialect
                    )
                })?;
            let url = emu.url();
            tracing::info!(route = %r.name, dialect = %r.upstream.dialect, url = %url, "embedded emulator started");
            (url, Some(Arc::new(emu)))
        }
    };
    let upstream =
        Upstream::new(&r.upstream, base).map_err(|e| format!("route {:?}: {e}", r.name))?;
    if r.client_tokens.is_empty() {
        tracing::warn!(route = %r.name, "route is open: client_tokens is not set, so any client may use it");
    }
    if r.upstream.auth.kind().is_none() {
        tracing::warn!(route = %r.name, "route presents no credentials upstream");
    }
    let signing_key = r.token_key.clone().unwrap_or_else(|| {
        Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    });
    let auth = FrontAuth {
        tokens: crate::secret::Accepted::new(&r.client_tokens),
        signing_key: crate::secret::MacKey::new(&signing_key),
        route: r.name.clone(),
        check: crate::secret::CheckId::fresh(),
    };
    Ok(RouteRuntime::new(r.clone(), upstream, auth, emulator))
}

/// casegate's own TLS server config: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
fn tls_config(files: &config::TlsFiles) -> Result<rustls::ServerConfig, String> {
    let mut tls = crate::tls::server_config(&files.cert, &files.key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The innermost service: the gateway.
#[derive(Clone)]
struct Handler(Arc<Gateway>);

impl tower::Service<Routed<ReqBody>> for Handler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Routed<ReqBody>) -> Self::Future {
        let gw = self.0.clone();
        crate::boxed(|| async move { Ok(gw.handle(req).await) })
    }
}

/// What every connection serves ([`stack`]), whatever its type.
trait ConnService:
    tower::Service<
        Request<Incoming>,
        Response = Response<AccessBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<AccessBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The service every connection serves: the stack of [`crate::service`] over the gateway.
/// Its type is left unnamed rather than boxed: hyper clones the service for each request,
/// and tower's `BoxCloneService` allocated for that clone and again for the request's
/// future.
fn stack(gateway: Arc<Gateway>, max_in_flight: usize, body_idle: Duration) -> impl ConnService {
    use http_body_util::BodyExt;
    // A `tracing` span per request only where the log needs one (the coloured format, a
    // filter naming spans); otherwise log lines name the request from its context
    // (`crate::logging`).
    let trace = crate::logging::request_spans().then(|| {
        ServiceBuilder::new()
            .layer(service::RequestIdLayer)
            .map_response(|r: Response<_>| {
                r.map(
                    |b: tower_http::trace::ResponseBody<AccessBody, _, (), (), ()>| {
                        AccessBody::unlogged(b.boxed_unsync())
                    },
                )
            })
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(service::request_span::<Incoming>)
                    .on_request(())
                    .on_response(())
                    .on_body_chunk(())
                    .on_eos(())
                    .on_failure(()),
            )
    });
    ServiceBuilder::new()
        .option_layer(trace)
        .layer(service::AccessLayer {
            metrics: gateway.metrics(),
        })
        .layer(service::RouteLayer {
            gateway: gateway.clone(),
        })
        .layer(service::RescueLayer)
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::ConcurrencyLimitLayer::new(max_in_flight))
        .layer(service::BodyIdleLayer { limit: body_idle })
        .layer(service::DrainLayer)
        .service(Handler(gateway))
}

/// The settings of the public listener's HTTP/1 connections, on hyper's builder or
/// hyper-util's (the same method names on two types).
macro_rules! http1_settings {
    ($b:expr) => {
        $b
            // Its one timer, the header-read timeout, is coarse on a worker (crate::coarse).
            .timer(crate::coarse::WorkerTimer)
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEAD_BYTES.max(8192))
    };
}

/// The settings of the public listener's HTTP/2 connections, as [`http1_settings`].
macro_rules! http2_settings {
    ($b:expr) => {
        $b.timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS)
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .keep_alive_interval(Some(Duration::from_secs(60)))
            .keep_alive_timeout(Duration::from_secs(20))
    };
}

/// How the public listener serves a connection, set up once: HTTP/1.1 or HTTP/2 directly
/// when the connection's first bytes (or its ALPN protocol) say which, and hyper-util's
/// `auto` builder, which reads them itself, when they do not yet ([`connection`]).
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

fn builders() -> Builders {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1_settings!(http1);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2_settings!(http2);
    let mut auto = auto::Builder::new(TokioExecutor::new());
    http1_settings!(auto.http1());
    http2_settings!(auto.http2());
    Builders { http1, http2, auto }
}

/// The client preface that opens every HTTP/2 connection (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks, from its first bytes or its ALPN protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Http1,
    Http2,
    /// Not known yet: no bytes, or a start of the HTTP/2 preface and no more.
    Unknown,
}

impl Speaks {
    /// From a connection's first bytes: a request of HTTP/1 differs from the HTTP/2
    /// preface within its method (at the second byte for `POST`, `PUT` and `PATCH`; the
    /// method `PRI` is the preface's own, RFC 9113 section 3.4).
    fn from_first_bytes(first: &[u8]) -> Speaks {
        let n = first.len().min(H2_PREFACE.len());
        if first[..n] != H2_PREFACE[..n] {
            Speaks::Http1
        } else if n == H2_PREFACE.len() {
            Speaks::Http2
        } else {
            Speaks::Unknown
        }
    }

    /// From the protocol a TLS handshake agreed on (ALPN), if any.
    fn from_alpn(protocol: Option<&[u8]>) -> Speaks {
        match protocol {
            Some(b"h2") => Speaks::Http2,
            Some(b"http/1.1") => Speaks::Http1,
            _ => Speaks::Unknown,
        }
    }
}

/// What a plain connection's first bytes say it speaks, looked at without reading them
/// (`MSG_PEEK`), so that hyper's own first read takes the whole request head: hyper-util's
/// `auto` builder reads the first 24 bytes itself and hands them back to HTTP/1 apart,
/// which then parses the head twice (the first time cut at 24 bytes) and makes one more
/// system call. `None`: nothing came within the header-read timeout, or the connection
/// failed.
async fn sniff(stream: &TcpStream) -> Option<Speaks> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut quiet = std::pin::pin!(crate::coarse::Timer::after(HEADER_READ_TIMEOUT));
    // `poll_peek`, not `peek`: the latter's future (a waiter of its own in the socket's
    // readiness) weighed about 250 bytes in every connection's task, which tokio copies
    // as it spawns the task and as the task ends.
    let peeked = std::future::poll_fn(|cx| {
        match stream.poll_peek(cx, &mut tokio::io::ReadBuf::new(&mut first)) {
            Poll::Ready(peeked) => Poll::Ready(Some(peeked)),
            Poll::Pending => quiet.as_mut().poll(cx).map(|()| None),
        }
    })
    .await;
    match peeked {
        Some(Ok(n)) => Some(Speaks::from_first_bytes(&first[..n])),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "connection failed before its first byte");
            None
        }
        None => {
            tracing::debug!("connection closed: nothing sent within the header-read timeout");
            None
        }
    }
}

/// A running casegate: its addresses, and the ways to reload and stop it.
pub struct Running {
    addr: SocketAddr,
    admin: Option<Admin>,
    stop: watch::Sender<Option<Duration>>,
    /// The accept loops; ends with how many connections the drain cut.
    task: tokio::task::JoinHandle<usize>,
    gateway: Arc<Gateway>,
    drain_delay: Duration,
    drain_timeout: Duration,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::addr)
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Stops at once: no new connections; requests in flight get `drain_timeout_secs`.
    pub async fn shutdown(self) {
        self.gateway.start_draining();
        let _ = self.stop.send(Some(self.drain_timeout));
        say_cut(self.task.await.unwrap_or(0), false);
        if let Some(admin) = self.admin {
            admin.shutdown().await;
        }
    }

    /// SPEC 8's drain: `/readyz` 503 at once, serving on for `drain_delay_secs` when the
    /// admin listener is on (a balancer is watching), then as [`Running::shutdown`], then
    /// up to [`LEDGER_DRAIN`] for rows still waiting in the ledger's retry queue. When `hurry`
    /// resolves first (a second SIGTERM or Ctrl-C), what is left of it is cut short: no
    /// more waiting for balancers, requests still in flight cut at once (their upstream
    /// requests aborted, as at the drain limit), and rows still waiting for the ledger
    /// logged as lost without their last try.
    pub async fn drain(self, hurry: impl Future<Output = ()>) {
        use futures_util::FutureExt;
        let mut hurry = std::pin::pin!(hurry.fuse());
        let mut hurried = false;
        self.gateway.start_draining();
        if self.admin.is_some() && !self.drain_delay.is_zero() {
            tracing::info!(
                secs = self.drain_delay.as_secs(),
                "draining: /readyz is 503; still serving while balancers notice"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.drain_delay) => {}
                _ = &mut hurry => hurried = true,
            }
        }
        let limit = if hurried {
            Duration::ZERO
        } else {
            self.drain_timeout
        };
        tracing::info!(
            secs = limit.as_secs(),
            "draining: no new connections; waiting for requests in flight"
        );
        let ledger = self.gateway.ledger().clone();
        let _ = self.stop.send(Some(limit));
        let mut task = self.task;
        let ended = if hurried {
            None
        } else {
            tokio::select! {
                cut = &mut task => Some(cut),
                _ = &mut hurry => {
                    hurried = true;
                    // The accept loops shorten their drain to nothing.
                    let _ = self.stop.send(Some(Duration::ZERO));
                    None
                }
            }
        };
        let cut = match ended {
            Some(cut) => cut,
            None => task.await,
        };
        say_cut(cut.unwrap_or(0), hurried);
        if let Some(admin) = self.admin {
            admin.shutdown().await;
        }
        // Rows the upstream confirmed while the ledger did not answer get a last chance;
        // what still waits after that is logged as lost (one replayable line each) when
        // the ledger is dropped.
        let waiting = ledger.pending();
        if waiting == 0 {
            return;
        }
        let left = if hurried {
            waiting
        } else {
            tracing::info!(
                rows = waiting,
                secs = LEDGER_DRAIN.as_secs(),
                "draining: writing the rows that wait for the ledger"
            );
            tokio::select! {
                left = ledger.drain(LEDGER_DRAIN) => left,
                // A write begun is given up: its rows stay queued until they are logged.
                _ = &mut hurry => ledger.pending(),
            }
        };
        if left > 0 {
            tracing::warn!(
                rows = left,
                "the ledger did not take every waiting row before shutdown; they are logged as lost"
            );
        }
    }
}

/// Says how many connections the drain cut, if any, and what cut them.
fn say_cut(cut: usize, hurried: bool) {
    if cut == 0 {
        return;
    }
    if hurried {
        tracing::warn!(
            cut,
            "drain cut short by a second signal; the connections still serving requests were cut (their upstream requests aborted)"
        );
    } else {
        tracing::warn!(
            cut,
            "drain limit reached; the connections still serving requests were cut (their upstream requests aborted)"
        );
    }
}

/// Binds `cfg.listen` (and `admin_listen`) and serves in the background.
pub async fn start(cfg: &Config) -> Result<Running, String> {
    let gateway = Arc::new(Gateway::build(cfg).await?);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin = match cfg.admin_listen {
        Some(a) => Some(Admin::start(a, gateway.metrics(), gateway.clone()).await?),
        None => None,
    };
    let stop = watch::Sender::new(None);
    let svc = stack(
        gateway.clone(),
        cfg.max_in_flight,
        Limits::new(cfg.max_upload_bytes).body_idle,
    );
    let workers =
        crate::workers::Workers::start(cfg.workers.unwrap_or_else(crate::workers::default_count))
            .map_err(|e| format!("cannot start the connection workers: {e}"))?;
    let task = match accept_on_workers(listener, workers, gateway.clone(), svc, &stop).await {
        Ok(task) => task,
        Err(e) => {
            if let Some(admin) = admin {
                admin.shutdown().await;
            }
            return Err(format!("cannot listen on {}: {e}", cfg.listen));
        }
    };
    Ok(Running {
        addr,
        admin,
        stop,
        task,
        gateway,
        drain_delay: cfg.drain_delay,
        drain_timeout: cfg.drain_timeout,
    })
}

/// Starts an accept loop on every connection worker ([`crate::workers`]), each on a
/// duplicate of the one listening socket registered with that worker's reactor, and
/// returns the task that waits for them once each has its part: when one cannot have it
/// (descriptors or the reactor's watches exhausted), those started are stopped and the
/// error returned, so that casegate does not run without accepting. On stop, they let
/// their connections finish (up to the drain limit), then the workers end.
async fn accept_on_workers<S: ConnService>(
    listener: TcpListener,
    workers: crate::workers::Workers,
    gateway: Arc<Gateway>,
    svc: S,
    stop: &watch::Sender<Option<Duration>>,
) -> Result<tokio::task::JoinHandle<usize>, String> {
    // Off this runtime's reactor: each worker registers a duplicate with its own.
    let listener = listener
        .into_std()
        .map_err(|e| format!("the listening socket cannot be shared with the workers: {e}"))?;
    let mut parts = Vec::new();
    let loops = workers.accept_on_each(|seat, inbox| {
        let part = seat.accepts().then(|| listener.try_clone()).transpose();
        let (has_part, told) = tokio::sync::oneshot::channel();
        parts.push(told);
        let (gateway, svc, stopped) = (gateway.clone(), svc.clone(), stop.subscribe());
        async move {
            match part.and_then(|l| l.map(TcpListener::from_std).transpose()) {
                Ok(l) => {
                    let _ = has_part.send(Ok(()));
                    accept_here(l, seat, inbox, gateway, svc, stopped).await
                }
                Err(e) => {
                    let _ = has_part.send(Err(e));
                    0
                }
            }
        }
    });
    drop(listener);
    let mut failed = None;
    for told in parts {
        let error = match told.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("a connection worker cannot share the listening socket: {e}"),
            Err(_) => "a connection worker stopped before it could accept".to_string(),
        };
        failed.get_or_insert(error);
    }
    let ended = async move {
        let mut cut = 0;
        for l in loops {
            cut += l.await.unwrap_or(0);
        }
        drop(workers);
        cut
    };
    match failed {
        None => Ok(tokio::spawn(ended)),
        Some(error) => {
            let _ = stop.send(Some(Duration::ZERO));
            ended.await;
            Err(error)
        }
    }
}

/// An accept loop's failures: mostly the process's descriptors running out (`Too many
/// open files`), which lasts until connections close. The loop waits [`ACCEPT_RETRY`]
/// before it tries again (the client waits in the listen queue, nothing is refused), and
/// warns at most once a second, saying how many failures the warning stands for: a
/// warning a try would be twenty lines a second for each worker.
#[derive(Default)]
pub(crate) struct AcceptFailures {
    warned: Option<std::time::Instant>,
    unwarned: u64,
}

/// How long an accept loop waits after a failed accept.
pub(crate) const ACCEPT_RETRY: Duration = Duration::from_millis(50);

impl AcceptFailures {
    /// Notes a failed accept (warning if none was given in the last second) and waits
    /// [`ACCEPT_RETRY`].
    pub(crate) async fn failed(&mut self, listener: &'static str, e: &std::io::Error) {
        self.unwarned += 1;
        let now = std::time::Instant::now();
        if self
            .warned
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(
                listener,
                error = %e,
                failures = self.unwarned,
                "accept failed; trying again every 50 ms"
            );
            self.warned = Some(now);
            self.unwarned = 0;
        }
        tokio::time::sleep(ACCEPT_RETRY).await;
    }
}

/// One worker's accept loop: serves what it accepts (when it has a part of the listener,
/// [`crate::workers::Seat::accepts`]), unless another worker serves fewer connections
/// ([`crate::workers::Seat::place`]), and what other workers hand to it; on stop, closes
/// its part of the listener and drains its connections; returns how many the drain limit cut.
async fn accept_here<S: ConnService>(
    listener: Option<TcpListener>,
    seat: crate::workers::Seat,
    mut handed: tokio::sync::mpsc::UnboundedReceiver<crate::workers::Handed>,
    gateway: Arc<Gateway>,
    svc: S,
    mut stopped: watch::Receiver<Option<Duration>>,
) -> usize {
    let accept = || async {
        match &listener {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    };
    let builder = Arc::new(builders());
    let drain = Arc::new(Drain::default());
    let mut connections = JoinSet::new();
    let (stopping, draining) = (stopped.clone(), drain.clone());
    let metrics = gateway.metrics();
    let serve = move |stream: TcpStream| {
        connection(
            stream,
            gateway.tls.load_full().map(|config| TlsIn {
                config,
                gateway: gateway.clone(),
            }),
            builder.clone(),
            svc.clone(),
            draining.clone(),
            stopping.clone(),
        )
    };
    let mut failures = AcceptFailures::default();
    let drain_timeout = loop {
        tokio::select! {
            accepted = accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let Some(other) = seat.place() else {
                        connections.spawn(seat.count_here(serve(stream)));
                        continue;
                    };
                    // Off this worker's reactor, onto the other's.
                    match stream.into_std().map(|s| seat.hand(other, s)) {
                        Ok(Ok(())) => {}
                        Ok(Err(back)) => match TcpStream::from_std(back) {
                            Ok(s) => drop(connections.spawn(seat.count_here(serve(s)))),
                            Err(e) => tracing::warn!(error = %e, "accepted connection lost"),
                        },
                        Err(e) => tracing::warn!(error = %e, "accepted connection lost"),
                    }
                }
                Err(e) => failures.failed("public", &e).await,
            },
            Some(h) = handed.recv() => {
                let (stream, counted) = h.into_parts();
                match TcpStream::from_std(stream) {
                    Ok(s) => drop(connections.spawn(counted.around(serve(s)))),
                    Err(e) => tracing::warn!(error = %e, "accepted connection lost"),
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped.changed() => {
                break stopped.borrow().unwrap_or(Duration::ZERO);
            }
        }
    };
    drop(listener);
    // Connections handed over but not yet served are closed, as those still in the
    // listen queue are.
    handed.close();
    while handed.try_recv().is_ok() {}
    // Each connection ends once its request in flight is answered (an idle one at once);
    // the drain waits for all of them, up to its limit.
    drain.start();
    let mut limit = std::pin::pin!(tokio::time::sleep(drain_timeout));
    loop {
        tokio::select! {
            ended = connections.join_next() => if ended.is_none() { break },
            _ = &mut limit => break,
            // A second signal shortens the drain (to nothing: cut now).
            Ok(()) = stopped.changed() => {
                let shorter = stopped.borrow().unwrap_or(Duration::ZERO);
                let at = tokio::time::Instant::now().checked_add(shorter);
                if let Some(at) = at.filter(|&at| at < limit.deadline()) {
                    limit.as_mut().reset(at);
                }
            }
        }
    }
    // What is still running when the limit is reached is cut (and its requests logged
    // as cut by the drain, not by their clients).
    if !connections.is_empty() {
        metrics.start_drain_cut();
    }
    connections.abort_all();
    let mut cut = 0;
    while let Some(ended) = connections.join_next().await {
        cut += usize::from(ended.is_err_and(|e| e.is_cancelled()));
    }
    cut
}

/// Serves HTTP on a connection whose protocol is `speaks` (hyper-util's `auto` builder
/// finds out when it is not known), until it ends or a drain ends it.
async fn serve_http<I, S>(
    builder: &Builders,
    speaks: Speaks,
    io: I,
    svc: TowerToHyperService<S>,
    drain: Arc<Drain>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: ConnService,
{
    match speaks {
        Speaks::Http1 => Ok(Drained::new(builder.http1.serve_connection(io, svc), drain).await?),
        Speaks::Http2 => Ok(Drained::new(builder.http2.serve_connection(io, svc), drain).await?),
        Speaks::Unknown => {
            Drained::new(builder.auto.serve_connection(io, svc).into_owned(), drain).await
        }
    }
}

/// A worker's drain, told to its connections ([`Drained`]).
#[derive(Default)]
struct Drain {
    started: AtomicBool,
    notify: Arc<tokio::sync::Notify>,
}

impl Drain {
    /// Tells every connection, those waiting for a request woken.
    fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

pin_project_lite::pin_project! {
    /// A connection that shuts down gracefully once its worker drains (it finishes the
    /// request in flight, then closes; an idle one closes at once), as hyper-util's
    /// `GracefulShutdown::watch` does. That one polled its watch channel's `changed` at
    /// every poll of the connection (a lock on the channel's waiters each time, about 480
    /// instructions an upload); this one polls its wait only when the drain has started
    /// or the connection's task is woken through another waker than the one it left,
    /// and otherwise reads one flag.
    struct Drained<C> {
        #[pin]
        conn: C,
        #[pin]
        told: tokio::sync::futures::OwnedNotified,
        drain: Arc<Drain>,
        // The waker the wait holds; `None` until it is first polled.
        waker: Option<std::task::Waker>,
        shut: bool,
    }
}

impl<C> Drained<C> {
    fn new(conn: C, drain: Arc<Drain>) -> Self {
        // Made now: a drain started from here on reaches it even before its first poll
        // (`notify_waiters` counts the waits made before it); one started earlier, the
        // flag tells at that poll.
        let told = drain.notify.clone().notified_owned();
        Drained {
            conn,
            told,
            drain,
            waker: None,
            shut: false,
        }
    }
}

impl<C> Future for Drained<C>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.shut {
            let stale = this.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker()));
            // The flag; else, when the wait must be left this waker, the wait itself,
            // which also sees a drain started (on another thread) after the flag was read.
            let drained = this.drain.started.load(Ordering::SeqCst)
                || (stale && this.told.as_mut().poll(cx).is_ready());
            if drained {
                *this.shut = true;
                this.conn.as_mut().graceful_shutdown();
            } else if stale {
                *this.waker = Some(cx.waker().clone());
            }
        }
        this.conn.poll(cx)
    }
}

/// One connection: the TLS handshake (bounded) when casegate serves HTTPS, then HTTP/1.1
/// or HTTP/2 as the client speaks (ALPN, or h2c prior knowledge).
async fn connection<S: ConnService>(
    stream: TcpStream,
    tls: Option<TlsIn>,
    builder: Arc<Builders>,
    svc: S,
    drain: Arc<Drain>,
    mut stopping: watch::Receiver<Option<Duration>>,
) {
    let svc = TowerToHyperService::new(svc);
    // The connection's HTTP state (and under TLS the handshake's and the session's) in a
    // box of its own, made in a statement before it is awaited, so that its size is not
    // this future's: tokio copies a task's whole future when it is spawned and its whole
    // place again as it ends (bench/RESULTS.md, the forty-first round). A local that
    // lives across an await keeps its place in the future even once moved out.
    let result = match tls {
        None => {
            // Until hyper has the connection, the drain cannot end it through hyper: a
            // connection still silent when the drain starts is closed then.
            let speaks = tokio::select! {
                biased;
                speaks = sniff(&stream) => speaks,
                _ = stopping.wait_for(Option::is_some) => None,
            };
            let Some(speaks) = speaks else {
                return;
            };
            let served = Box::pin(serve_http(
                &builder,
                speaks,
                TokioIo::new(stream),
                svc,
                drain,
            ));
            served.await
        }
        Some(tls) => {
            let served = Box::pin(serve_tls(stream, tls, builder, svc, drain));
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a connection to the HTTPS listener needs: the TLS config of the moment, and the
/// gateway, whose routes give a plain HTTP request's refusal its dialect ([`plain_on_tls`]).
struct TlsIn {
    config: Arc<rustls::ServerConfig>,
    gateway: Arc<Gateway>,
}

/// A TLS connection: the handshake, within [`TLS_HANDSHAKE_TIMEOUT`], then HTTP/1.1 or
/// HTTP/2 as ALPN agreed (as the first bytes say, without ALPN). A client that speaks
/// plain HTTP instead is told so ([`plain_on_tls`]).
async fn serve_tls<S: ConnService>(
    stream: TcpStream,
    tls: TlsIn,
    builder: Arc<Builders>,
    svc: TowerToHyperService<S>,
    drain: Arc<Drain>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT;
    // A TLS client's first byte is its record's type (22, a handshake); a plain HTTP
    // client's is its method's first letter.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
            return plain_on_tls(stream, tls.gateway, &builder, drain).await;
        }
        Ok(Ok(1)) => {}
        _ => {
            tracing::debug!("connection closed before a TLS handshake");
            return Ok(());
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return Ok(());
        }
    };
    let speaks = Speaks::from_alpn(stream.get_ref().1.alpn_protocol());
    serve_http(&builder, speaks, TokioIo::new(stream), svc, drain).await
}

/// What a plain HTTP request to the HTTPS listener is told.
pub const PLAIN_ON_TLS: &str = "This port serves HTTPS: send the request with https://.";

/// A client speaking plain HTTP to the HTTPS listener (`http://` where `https://` was
/// meant): each request is answered 400 in its route's dialect, saying so, and an
/// HTTP/1 connection is closed, as nginx answers one; a TLS alert, which is all a TLS server
/// could send, reads to curl as "Received HTTP/0.9 when not allowed".
async fn plain_on_tls(
    stream: TcpStream,
    gateway: Arc<Gateway>,
    builder: &Builders,
    drain: Arc<Drain>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let refuse = tower::service_fn(move |req: Request<Incoming>| {
        // Found as the service stack finds it (crate::service::RouteLayer).
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let target = gateway
            .table()
            .router
            .route(host, req.method(), req.uri().path());
        let front = match target {
            Target::Op(rt, _) | Target::Method(rt, _) | Target::Other(rt, _) => Some(rt.front),
            Target::NotFound(front) => front,
        };
        let err = Error::bad_request(PLAIN_ON_TLS);
        let mut resp = match front {
            Some(front) => respond(front, &err),
            None => {
                let mut r =
                    crate::error::text_response(http::StatusCode::BAD_REQUEST, PLAIN_ON_TLS);
                r.headers_mut().insert(
                    "casegate-error",
                    http::HeaderValue::from_static(err.code.as_str()),
                );
                r
            }
        };
        // (HTTP/2 has no `Connection` field: such a client may go on asking.)
        if req.version() < http::Version::HTTP_2 {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        tracing::debug!(
            path = req.uri().path(),
            "plain HTTP on the HTTPS listener: refused"
        );
        std::future::ready(Ok::<_, Infallible>(resp.map(AccessBody::unlogged)))
    });
    // HTTP/1.1, or HTTP/2 with prior knowledge (`PRI`), as the first bytes say.
    let io = TokioIo::new(stream);
    serve_http(
        builder,
        Speaks::Unknown,
        io,
        TowerToHyperService::new(refuse),
        drain,
    )
    .await
}

/// How long a shutdown waits for the ledger to take rows still waiting in its retry queue.
pub const LEDGER_DRAIN: Duration = Duration::from_secs(10);

/// The process's open-files limit, its soft limit first raised to its hard limit, as Go's
/// runtime and HAProxy raise theirs at start: each connection through casegate holds two
/// descriptors (the client's and the upstream's), and the soft limit most shells and
/// systemd give, 1 024, would stop casegate near 500 connections, under the default
/// `max_in_flight`. `None`: no limit, or none known.
#[cfg(unix)]
fn open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::info!(
                        from = soft,
                        to = hard,
                        "open-files limit raised to its hard limit"
                    );
                    Some(hard)
                }
                Err(e) => {
                    tracing::warn!(error = %e, soft, hard, "the open-files limit could not be raised");
                    Some(soft)
                }
            }
        }
        (soft, _) => soft,
    }
}

#[cfg(not(unix))]
fn open_files_limit() -> Option<u64> {
    None
}

/// Serves `path` until SIGTERM or Ctrl-C (then drains; a second one cuts the drain short);
/// SIGHUP reloads it.
pub async fn serve(path: &Path, cfg: &Config) -> Result<(), String> {
    // Watched before anything starts: from here on these signals never end the process
    // unannounced.
    let mut stops = StopSignals::watch()?;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    #[cfg(not(unix))]
    let mut hup = ();
    let open_files = open_files_limit();
    let running = start(cfg).await?;
    let admin = running
        .admin_addr()
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    let files = open_files.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    tracing::info!(addr = %running.addr(), admin = %admin, tls = cfg.tls.is_some(), routes = cfg.routes.len(), open_files = %files, "casegate listening");
    // Two descriptors a request in flight, and a few for the listeners, the ledger and
    // the runtime.
    let wanted = 2 * cfg.max_in_flight as u64 + 64;
    if let Some(n) = open_files.filter(|&n| n < wanted) {
        tracing::warn!(
            open_files = n,
            max_in_flight = cfg.max_in_flight,
            "the process may open fewer files than max_in_flight requests need (two each: \
             the client's connection and the upstream's); once they run out new \
             connections wait: raise the hard limit (systemd's LimitNOFILE, ulimit -Hn) \
             or lower max_in_flight"
        );
    }
    for r in cfg.routes.iter() {
        tracing::info!(
            route = %r.name,
            front = %r.front,
            prefix = %r.prefix,
            upstream = %r.upstream.dialect,
            "route"
        );
    }
    let path: PathBuf = path.to_path_buf();
    let signal = loop {
        tokio::select! {
            _ = sighup(&mut hup) => {
                tracing::info!(config = %path.display(), "SIGHUP: reloading");
                let _ = running.gateway().reload_from(&path).await;
            }
            signal = stops.next() => break signal,
        }
    };
    tracing::info!(
        signal,
        "shutting down: draining (a second SIGTERM or Ctrl-C stops at once)"
    );
    running
        .drain(async move {
            let signal = loop {
                tokio::select! {
                    _ = sighup(&mut hup) => tracing::info!("SIGHUP while draining: not reloading"),
                    signal = stops.next() => break signal,
                }
            };
            tracing::warn!(
                signal,
                "a second signal: stopping now; requests still in flight are cut"
            );
        })
        .await;
    Ok(())
}

/// The next SIGHUP.
#[cfg(unix)]
async fn sighup(hup: &mut tokio::signal::unix::Signal) {
    hup.recv().await;
}

#[cfg(not(unix))]
async fn sighup(_: &mut ()) {
    std::future::pending::<()>().await
}

/// SIGTERM and SIGINT (Ctrl-C), watched from start to exit, so that a second one is seen
/// however soon it follows the first.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn watch() -> Result<StopSignals, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let watch = |kind, name| signal(kind).map_err(|e| format!("cannot watch {name}: {e}"));
            Ok(StopSignals {
                term: watch(SignalKind::terminate(), "SIGTERM")?,
                int: watch(SignalKind::interrupt(), "SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// The next one, by name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sniff, Speaks, H2_PREFACE, HEADER_READ_TIMEOUT};
    use std::io::Write;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_sniffed_by_its_first_bytes_or_given_up_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (sent, speaks) in [
            (&H2_PREFACE[..], Speaks::Http2),
            (b"POST /x HTTP/1.1\r\n", Speaks::Http1),
            (b"PR", Speaks::Unknown),
        ] {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client.write_all(sent).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let started = tokio::time::Instant::now();
            assert_eq!(sniff(&stream).await, Some(speaks), "{sent:?}");
            assert!(started.elapsed() < HEADER_READ_TIMEOUT, "{sent:?}");
            // Peeked, not read: the bytes are still there for HTTP.
            let mut again = [0u8; 64];
            assert_eq!(stream.peek(&mut again).await.unwrap(), sent.len());
        }
        // A client that says nothing is given up on when the timeout has passed.
        let _silent = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(sniff(&stream).await, None);
        assert!(started.elapsed() >= HEADER_READ_TIMEOUT);
    }

    #[test]
    fn first_bytes_tell_http1_from_the_http2_preface() {
        for request in [
            &b"POST /x HTTP/1.1\r\n"[..],
            b"GET / HTTP/1.1",
            b"PUT",
            b"PA",
            b"X",
        ] {
            assert_eq!(
                Speaks::from_first_bytes(request),
                Speaks::Http1,
                "{request:?}"
            );
        }
        // "PR" could still be either; so could nothing at all.
        for start in [&b""[..], b"P", b"PR", b"PRI * HTTP/2.0\r\n"] {
            assert_eq!(
                Speaks::from_first_bytes(start),
                Speaks::Unknown,
                "{start:?}"
            );
        }
        assert_eq!(Speaks::from_first_bytes(H2_PREFACE), Speaks::Http2);
        // A preface that goes wrong late is not HTTP/2.
        let mut wrong = *H2_PREFACE;
        wrong[23] = b'x';
        assert_eq!(Speaks::from_first_bytes(&wrong), Speaks::Http1);
    }

    #[test]
    fn alpn_names_the_protocol_or_leaves_it_to_the_bytes() {
        assert_eq!(Speaks::from_alpn(Some(b"h2")), Speaks::Http2);
        assert_eq!(Speaks::from_alpn(Some(b"http/1.1")), Speaks::Http1);
        assert_eq!(Speaks::from_alpn(None), Speaks::Unknown);
        assert_eq!(Speaks::from_alpn(Some(b"spdy/3")), Speaks::Unknown);
    }
}
