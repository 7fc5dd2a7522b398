//! Listeners, connections and shutdown. Each connection is served by hyper's HTTP/1
//! server with a header read timeout and caps on header size and count; each request is
//! routed (route and operation, method-aware), checked (concurrency, credentials, the
//! front's own rules) and handed to its pipeline: uploads, reads, the dialect's own
//! endpoint, or passthrough. SIGTERM or Ctrl-C stop accepting and let requests in flight
//! finish (up to a drain limit).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{Config, UpstreamUrl};
use crate::dialect::{respond, FrontAuth, Op, Request as OpRequest};
use crate::emulator::{self, Emulator};
use crate::error::{Body, Error};
use crate::forward::{self, Settings};
use crate::inbound::{body_stream, discard, Limits};
use crate::ledger::Ledger;
use crate::router::{RouteRuntime, Routed, Router};
use crate::secret::Secret;
use crate::upstream::Upstream;

/// Longest wait for a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most header fields a request may have.
pub const MAX_HEADERS: usize = 100;
/// Largest buffered request head, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request needs: routes, settings, the concurrency cap.
pub struct Gateway {
    router: Router,
    settings: Settings,
    permits: Arc<Semaphore>,
    next_id: AtomicU64,
    /// Embedded upstreams, kept alive with the gateway.
    emulators: Vec<Emulator>,
}

impl Gateway {
    /// Builds the routes: upstream clients, and an in-process emulator for each
    /// `url = "embedded"`.
    pub async fn build(cfg: &Config) -> Result<Gateway, String> {
        let mut routes = Vec::new();
        let mut emulators = Vec::new();
        for r in &cfg.routes {
            let base = match &r.upstream.url {
                UpstreamUrl::Url(u) => u.clone(),
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
                    emulators.push(emu);
                    url
                }
            };
            let upstream =
                Upstream::new(&r.upstream, base).map_err(|e| format!("route {:?}: {e}", r.name))?;
            if r.client_tokens.is_empty() {
                tracing::warn!(route = %r.name, "route is open: client_tokens is not set, so any client may upload");
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
                tokens: r.client_tokens.clone(),
                signing_key,
                route: r.name.clone(),
            };
            routes.push(RouteRuntime::new(r.clone(), upstream, auth));
        }
        let spool_dir = cfg.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let ledger = Ledger::open(&cfg.ledger)
            .await
            .map_err(|e| format!("ledger {}: {e}", cfg.ledger.describe()))?;
        Ok(Gateway {
            router: Router::new(routes),
            settings: Settings {
                limits: Limits::new(cfg.max_upload_bytes),
                spool_dir,
                ledger,
                public_url: cfg.public_url.clone(),
                scheme: "http",
            },
            permits: Arc::new(Semaphore::new(cfg.max_in_flight)),
            next_id: AtomicU64::new(1),
            emulators,
        })
    }

    /// The embedded emulators, in route order.
    pub fn emulators(&self) -> &[Emulator] {
        &self.emulators
    }

    /// Adjusts limits (tests and benchmarks).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// The ledger (tests and the `ledger` command read it).
    pub fn ledger(&self) -> &Ledger {
        &self.settings.ledger
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (parts, body) = req.into_parts();
        let method = parts.method.clone();
        // Never the raw URL: a Thalamus token may ride in the query.
        let path = parts.uri.path().to_string();
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let mut route_name = "-".to_string();
        let mut op_name = "-";
        let mut report = forward::Report::default();
        let mut resp = match self.router.route(host.as_deref(), &method, &path) {
            Routed::Op(rt, req) => {
                route_name = rt.cfg.name.clone();
                op_name = req.op.name();
                let (r, rep) = self.operation(rt, parts, body, req).await;
                report = rep;
                r
            }
            Routed::Method(rt, _) | Routed::Other(rt, _) if rt.cfg.passthrough => {
                route_name = rt.cfg.name.clone();
                op_name = "passthrough";
                let rest = crate::router::strip_prefix(&path, &rt.cfg.prefix)
                    .unwrap_or(&path)
                    .to_string();
                match self.permits.clone().try_acquire_owned() {
                    Ok(_permit) => {
                        crate::passthrough::forward(rt, &self.settings, parts, body, &rest).await
                    }
                    Err(_) => {
                        discard(body);
                        respond(rt.front, &Error::overloaded())
                    }
                }
            }
            Routed::Method(rt, allow) => {
                route_name = rt.cfg.name.clone();
                discard(body);
                respond(rt.front, &Error::method_not_allowed(allow))
            }
            Routed::Other(rt, _) => {
                route_name = rt.cfg.name.clone();
                discard(body);
                respond(rt.front, &Error::not_found("Not Found"))
            }
            Routed::NotFound(Some(d)) => {
                discard(body);
                respond(d, &Error::not_found("Not Found"))
            }
            Routed::NotFound(None) => {
                discard(body);
                let mut r = crate::error::text_response(http::StatusCode::NOT_FOUND, "Not Found");
                r.headers_mut().insert(
                    "casegate-error",
                    HeaderValue::from_static(crate::error::Code::NotFound.as_str()),
                );
                r
            }
        };
        if let Ok(v) = HeaderValue::from_str(&format!("{id}")) {
            resp.headers_mut().insert("casegate-request-id", v);
        }
        let code = resp
            .headers()
            .get("casegate-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        tracing::info!(
            target: "casegate::access",
            id,
            method = %method,
            path = %path,
            route = %route_name,
            op = op_name,
            status = resp.status().as_u16(),
            error = %code,
            file_bytes = report.file_bytes,
            spooled = report.spooled,
            dropped = %report.dropped.join(","),
            ms = started.elapsed().as_millis() as u64,
        );
        resp
    }

    /// One of a route's operations: the concurrency cap, the client's credential and the
    /// front's own rules, then its pipeline.
    async fn operation(
        &self,
        rt: &RouteRuntime,
        parts: http::request::Parts,
        body: Incoming,
        req: OpRequest,
    ) -> (Response<Body>, forward::Report) {
        if req.op == Op::Token {
            let stream = body_stream(body, 64 * 1024, self.settings.limits.body_idle);
            let resp = rt
                .front
                .serve_own(req, parts, stream, rt.auth.clone())
                .await;
            return (resp, Default::default());
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            discard(body);
            return (respond(rt.front, &Error::overloaded()), Default::default());
        };
        let checked = if rt.auth.tokens.is_empty() {
            Ok(())
        } else {
            rt.front.authenticate(&parts, &rt.auth)
        };
        if let Err(e) = checked.and_then(|()| rt.front.preflight(&parts, &req)) {
            discard(body);
            return (respond(rt.front, &e), Default::default());
        }
        match req.op {
            Op::Upload => forward::upload(rt, &self.settings, parts, body, req).await,
            _ => {
                discard(body);
                let resp = crate::read::serve(rt, &self.settings, parts, req).await;
                (resp, Default::default())
            }
        }
    }
}

/// A running casegate: its address, and the way to stop it.
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    gateway: Arc<Gateway>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Stops accepting, waits for requests in flight (up to the drain limit).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds `cfg.listen` and serves in the background.
pub async fn start(cfg: &Config) -> Result<Running, String> {
    let gateway = Gateway::build(cfg).await?;
    start_with(gateway, cfg.listen).await
}

/// Serves a built gateway on `listen` in the background.
pub async fn start_with(gateway: Gateway, listen: SocketAddr) -> Result<Running, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let gateway = Arc::new(gateway);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, gateway.clone(), stopped));
    Ok(Running {
        addr,
        stop,
        task,
        gateway,
    })
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES.max(8192));
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let svc = service_fn(move |req| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(gw.handle(req).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain limit reached; closing remaining connections");
    }
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn serve(cfg: &Config) -> Result<(), String> {
    let running = start(cfg).await?;
    tracing::info!(addr = %running.addr(), routes = cfg.routes.len(), "casegate listening");
    for r in running.gateway().router.routes() {
        tracing::info!(
            route = %r.cfg.name,
            front = %r.cfg.front,
            prefix = %r.cfg.prefix,
            upstream = %r.cfg.upstream.dialect,
            "route"
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; waiting for uploads in flight");
    running.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
