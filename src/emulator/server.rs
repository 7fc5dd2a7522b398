//! The server loop every emulator runs, written once: listener and optional TLS, one task
//! per connection, shutdown; the shared state (stored files, counters, the fault); and the
//! request pipeline that routes, authenticates, applies faults and fast mode, and only then
//! hands a request to its dialect through the [`Api`] trait.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::fault::{self, Fault};
use super::wire::{self, ReqBody, Resp};
use super::{caseiq, kibana, thalamus, tines, Config, DialectId, StoredComment, StoredFile};

/// What an endpoint is, for counters, faults and fast mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The upload endpoint (POST).
    Upload,
    /// The second call that carries a comment: Kibana comments, Thalamus notes.
    Second,
    /// The Case IQ token endpoint, which checks its credentials itself.
    Token,
    /// Lists, gets and downloads.
    Read,
}

/// One emulated API. The shared pipeline calls `route`, then `authorize`, then (unless a
/// fault or fast mode answers instead) `handle`.
pub(super) trait Api: 'static {
    /// A routed request: which endpoint, with its path parameters.
    type Call: Send + 'static;

    /// Routes by method and percent-decoded path segments; `Err` is 404 or 405.
    fn route(method: &Method, path: &[&str]) -> Result<(Kind, Self::Call), StatusCode>;

    /// The dialect's error answer.
    fn error(status: StatusCode, message: &str) -> Resp;

    /// Checks the request's credentials (Kibana: and `kbn-xsrf`); `Err` is the refusal's
    /// status and message, answered in the dialect's error form.
    fn authorize(sh: &Shared, kind: Kind, call: &Self::Call, parts: &Parts) -> Result<(), Refusal>;

    /// Serves the request as the real system does.
    fn handle(
        sh: Arc<Shared>,
        call: Self::Call,
        parts: Parts,
        body: ReqBody,
    ) -> impl Future<Output = Resp> + Send;

    /// Fast mode's canned upload success, after `drained` body bytes were read unparsed.
    fn fast(sh: &Shared, call: &Self::Call, parts: &Parts, drained: u64) -> Resp;
}

/// A refused request: the status and message of its error answer.
pub(super) type Refusal = (StatusCode, &'static str);

/// Everything the emulator keeps: files, comments and each dialect's own records.
#[derive(Default)]
pub(super) struct Store {
    pub files: Vec<StoredFile>,
    pub comments: Vec<StoredComment>,
    last_id: u64,
    last_note_id: u64,
    /// Case IQ: issued access tokens and when they expire.
    pub tokens: HashMap<String, Instant>,
    /// Kibana: cases by (space, case id).
    pub cases: HashMap<(Option<String>, String), kibana::Case>,
}

impl Store {
    /// The next integer attachment id (Thalamus, Tines): 1, 2, ...
    pub fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// The next Thalamus note id: 1, 2, ...
    pub fn next_note_id(&mut self) -> u64 {
        self.last_note_id += 1;
        self.last_note_id
    }
}

/// State shared by the server task, its connections and the [`super::Emulator`] handle.
pub(super) struct Shared {
    pub cfg: Config,
    pub addr: SocketAddr,
    fault: Mutex<Option<Fault>>,
    store: Mutex<Store>,
    pub requests: AtomicU64,
    pub uploads: AtomicU64,
    pub token_requests: AtomicU64,
    pub open_connections: AtomicU64,
    /// Uploads seen under a `flaky` fault (which of them fail follows from the count).
    flaky_seq: AtomicU64,
}

impl Shared {
    /// The store, locked.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// No credentials configured: every request is accepted.
    pub fn is_open(&self) -> bool {
        self.cfg.tokens.is_empty()
    }

    /// Whether `credential` is accepted (always, when open).
    pub fn accepts(&self, credential: Option<&str>) -> bool {
        self.is_open() || credential.is_some_and(|c| self.cfg.tokens.iter().any(|t| t == c))
    }

    /// `http(s)://host[:port]` as the client addressed us, for URLs in answers.
    pub fn base_url(&self, parts: &Parts) -> String {
        let scheme = if self.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        match wire::header(parts, "host").filter(|h| !h.is_empty()) {
            Some(host) => format!("{scheme}://{host}"),
            None => format!("{scheme}://{}", self.addr),
        }
    }
}

/// The error that makes hyper drop a connection without answering (the reset faults).
#[derive(Debug)]
pub(super) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

type Handler = fn(Arc<Shared>, Request<Incoming>) -> BoxFuture<'static, Result<Resp, Dropped>>;

fn handler(dialect: DialectId) -> Handler {
    match dialect {
        DialectId::Thalamus => |sh, req| Box::pin(dispatch::<thalamus::Thalamus>(sh, req)),
        DialectId::Tines => |sh, req| Box::pin(dispatch::<tines::Tines>(sh, req)),
        DialectId::Caseiq => |sh, req| Box::pin(dispatch::<caseiq::CaseIq>(sh, req)),
        DialectId::Kibana => |sh, req| Box::pin(dispatch::<kibana::Kibana>(sh, req)),
    }
}

/// The message of `status=N` and `comment-status=N` answers.
const EMULATED: &str = "emulated failure";

async fn dispatch<A: Api>(sh: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Dropped> {
    sh.requests.fetch_add(1, Relaxed);
    let (parts, body) = req.into_parts();
    let body = ReqBody::new(body);
    let resp = answer::<A>(&sh, parts, body.clone()).await?;
    body.drain().await;
    Ok(resp)
}

async fn answer<A: Api>(sh: &Arc<Shared>, parts: Parts, body: ReqBody) -> Result<Resp, Dropped> {
    let path = wire::segments(parts.uri.path());
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let (kind, call) = match A::route(&parts.method, &path) {
        Ok(routed) => routed,
        Err(status) => return Ok(A::error(status, wire::reason(status))),
    };
    let counter = match kind {
        Kind::Upload => Some(&sh.uploads),
        Kind::Token => Some(&sh.token_requests),
        Kind::Second | Kind::Read => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Relaxed);
    }
    if let Err((status, message)) = A::authorize(sh, kind, &call, &parts) {
        return Ok(A::error(status, message));
    }
    match (kind, sh.fault()) {
        (Kind::Upload, fault) => upload::<A>(sh, call, parts, body, fault).await,
        (Kind::Second, Some(Fault::CommentStatus(n))) => {
            body.drain().await;
            Ok(A::error(fault::status(n), EMULATED))
        }
        // Fast mode stores no cases, so the second call gets the canned success too.
        (Kind::Second, _) if sh.cfg.fast => {
            let drained = body.drain().await;
            Ok(A::fast(sh, &call, &parts, drained))
        }
        _ => Ok(A::handle(sh.clone(), call, parts, body).await),
    }
}

/// How much of the body `reset-mid-body` reads before dropping the connection.
fn half_of_declared(parts: &Parts) -> u64 {
    wire::header(parts, "content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(64 << 10, |n| n / 2)
}

async fn upload<A: Api>(
    sh: &Arc<Shared>,
    call: A::Call,
    parts: Parts,
    body: ReqBody,
    fault: Option<Fault>,
) -> Result<Resp, Dropped> {
    let half = half_of_declared(&parts);
    let normal = {
        let (sh, body) = (sh.clone(), body.clone());
        async move {
            if sh.cfg.fast {
                let drained = body.drain().await;
                A::fast(&sh, &call, &parts, drained)
            } else {
                A::handle(sh, call, parts, body).await
            }
        }
    };
    let Some(fault) = fault else {
        return Ok(normal.await);
    };
    match fault {
        // Uploads are normal under a fault meant for comments.
        Fault::CommentStatus(_) => Ok(normal.await),
        Fault::Delay(delay) => {
            let resp = normal.await;
            tokio::time::sleep(delay).await;
            Ok(resp)
        }
        Fault::Status(n) => {
            body.drain().await;
            Ok(A::error(fault::status(n), EMULATED))
        }
        Fault::Flaky(percent) => {
            // Every upload whose count crosses a multiple of 100/percent fails: exactly
            // `percent` in every hundred, spread evenly.
            let n = sh.flaky_seq.fetch_add(1, Relaxed);
            let p = u64::from(percent.min(100));
            if (n + 1) * p / 100 > n * p / 100 {
                body.drain().await;
                Ok(A::error(StatusCode::INTERNAL_SERVER_ERROR, EMULATED))
            } else {
                Ok(normal.await)
            }
        }
        Fault::Failed => {
            body.drain().await;
            Ok(fault::failed())
        }
        Fault::HtmlError => {
            body.drain().await;
            Ok(fault::nginx_502())
        }
        Fault::ResetBeforeAnswer => {
            body.drain().await;
            Err(Dropped)
        }
        Fault::ResetMidBody => {
            body.read_up_to(half).await;
            Err(Dropped)
        }
        Fault::HeadersThenHang
        | Fault::Html
        | Fault::TruncatedJson
        | Fault::EmptyBody
        | Fault::Trickle
        | Fault::HugeBody => Ok(fault::spoil(&fault, normal.await).await),
    }
}

/// Counts a connection as open from accept until its task ends.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(sh: &Arc<Shared>) -> Self {
        sh.open_connections.fetch_add(1, Relaxed);
        OpenConnection(sh.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Relaxed);
    }
}

/// Resolves once shutdown was asked for (never, if the handle went away without asking).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `listen` and serves `cfg` in a background task until `true` is sent on the
/// returned channel; the task ends after every connection closed.
pub(super) async fn spawn(
    cfg: Config,
    listen: SocketAddr,
) -> std::io::Result<(Arc<Shared>, watch::Sender<bool>, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let tls = cfg.tls.clone().map(TlsAcceptor::from);
    let handler = handler(cfg.dialect);
    let sh = Arc::new(Shared {
        addr: listener.local_addr()?,
        fault: Mutex::new(cfg.fault.clone()),
        store: Mutex::new(Store::default()),
        cfg,
        requests: AtomicU64::new(0),
        uploads: AtomicU64::new(0),
        token_requests: AtomicU64::new(0),
        flaky_seq: AtomicU64::new(0),
        open_connections: AtomicU64::new(0),
    });
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, sh.clone(), handler, tls, stop));
    Ok((sh, stop_tx, task))
}

async fn accept_loop(
    listener: TcpListener,
    sh: Arc<Shared>,
    handler: Handler,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let conn_stop = stop.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let open = OpenConnection::new(&sh);
                    connections.spawn(connection(
                        stream, sh.clone(), handler, tls.clone(), conn_stop.clone(), open,
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    sh: Arc<Shared>,
    handler: Handler,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    _open: OpenConnection,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handler(sh.clone(), req));
    let serve = async move {
        // No header timeout: idle keep-alive connections stay until the client or shutdown
        // closes them, so a pooled client never races a server-side close.
        let mut http = http1::Builder::new();
        http.header_read_timeout(None);
        let result = match tls {
            None => http.serve_connection(TokioIo::new(stream), service).await,
            Some(acceptor) => {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                    _ => return,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "emulator: connection ended with an error");
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = stopped(&mut stop) => {}
    }
}
