//! The server loop every emulator runs, written once: listener and optional TLS, one task
//! per connection, shutdown; the shared state (stored files, counters, the record of calls,
//! the fault); the request pipeline that records, routes, authenticates, applies faults and
//! fast mode, and only then hands a request to its dialect through the [`Api`] trait; and
//! what the dialects share on the way: finding a stored file or answering the dialect's
//! 404, and serving a download in the dialect's style.

use std::collections::{HashMap, VecDeque};
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
use super::wire::{self, DownloadStyle, Dropped, ReqBody, Resp};
use super::{
    caseiq, kibana, thalamus, tines, Config, DialectId, RecordedCall, StoredComment, StoredFile,
};

/// What an endpoint is, for counters, faults and fast mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The upload endpoint (POST).
    Upload,
    /// The second call that carries a comment: Kibana comments, Thalamus notes.
    Second,
    /// The Case IQ token endpoint, which checks its credentials itself.
    Token,
    /// Lists, gets, downloads and deletes.
    Read,
}

/// One emulated API. The shared pipeline calls `route`, then checks the `credential` (and
/// the dialect's own `refuse`), then (unless a fault or fast mode answers instead) `handle`.
pub(super) trait Api: 'static {
    /// A routed request: which endpoint, with its path parameters.
    type Call: Send + 'static;

    /// How downloads are served (default: no ranges, always as attachments).
    const DOWNLOADS: DownloadStyle = DownloadStyle {
        ranges: false,
        inline_images: false,
    };

    /// The message of the 401 for a request that presents no credential.
    const NO_CREDENTIAL: &'static str = "Unauthorized";

    /// The message of the 401 for a request whose credential is not accepted.
    const BAD_CREDENTIAL: &'static str = "Unauthorized";

    /// Routes by method and percent-decoded path segments; `Err` is 404 or 405.
    fn route(method: &Method, path: &[&str]) -> Result<(Kind, Self::Call), StatusCode>;

    /// The dialect's error answer: the one place its error form is written.
    fn error(status: StatusCode, message: &str) -> Resp;

    /// A 400 in the dialect's form.
    fn bad_request(message: &str) -> Resp {
        Self::error(StatusCode::BAD_REQUEST, message)
    }

    /// The dialect's answer for something that is not there (a 404 in its form).
    fn not_found(message: &str) -> Resp {
        Self::error(StatusCode::NOT_FOUND, message)
    }

    /// The credential the request presents, in the dialect's way (None: it presents none).
    /// [`authorize`] checks it against [`Shared::accepts_credential`].
    fn credential(parts: &Parts) -> Option<String>;

    /// A refusal of the dialect's own, checked after the credential (Kibana: `kbn-xsrf`).
    fn refuse(_kind: Kind, _parts: &Parts) -> Option<Refusal> {
        None
    }

    /// Serves the request as the real system does.
    fn handle(
        sh: Arc<Shared>,
        call: Self::Call,
        parts: Parts,
        body: ReqBody,
    ) -> impl Future<Output = Resp> + Send;

    /// Fast mode's canned upload success, after a body carrying `file_len` file bytes was
    /// read unparsed (a second call: `file_len` is the body's length).
    fn fast(sh: &Shared, call: &Self::Call, parts: &Parts, file_len: u64) -> Resp;

    /// Fast mode: whether `call` downloads the canned file [`Api::fast`]'s answers name.
    fn fast_download(_sh: &Shared, _call: &Self::Call) -> bool {
        false
    }

    /// Fast mode: the canned file's name and type, as its download gives them.
    const FAST_FILE: (&'static str, &'static str) = ("upload.bin", "application/octet-stream");
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
    /// Tines: the GUID each file was given at upload, by file id.
    pub guids: HashMap<String, String>,
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

    /// Removes the file `id` (and what a dialect kept beside it); whether it was there.
    pub fn remove_file(&mut self, id: &str) -> bool {
        let before = self.files.len();
        self.files.retain(|f| f.id != id);
        self.guids.remove(id);
        self.files.len() != before
    }
}

/// The first stored file that `matches`, or the dialect's not-found answer with `message`
/// (boxed: an answer is large, and this one is returned once).
pub(super) fn find_file<'a, A: Api>(
    files: &'a [StoredFile],
    message: &str,
    matches: impl Fn(&StoredFile) -> bool,
) -> Result<&'a StoredFile, Box<Resp>> {
    files
        .iter()
        .find(|f| matches(f))
        .ok_or_else(|| Box::new(A::not_found(message)))
}

/// `file` as a download in the dialect's style (see [`wire::download`]).
pub(super) fn download<A: Api>(file: &StoredFile, parts: &Parts) -> Resp {
    wire::download(file, parts, A::DOWNLOADS, A::error)
}

/// How many calls [`Shared::calls`] keeps: the most recent ones.
const CALLS_KEPT: usize = 10_000;

/// Headers whose values the record of calls masks.
const SECRET_HEADERS: &[&str] = &["authorization", "thalamus-token", "x-user-token"];
/// Query parameters whose values the record of calls masks (Thalamus's token).
const SECRET_PARAMS: &[&str] = &["token"];
const MASK: &str = "***";

impl RecordedCall {
    fn of(parts: &Parts) -> RecordedCall {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = if SECRET_HEADERS.contains(&name.as_str()) {
                    MASK.to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_owned(), value)
            })
            .collect();
        let raw = parts.uri.query().unwrap_or_default();
        let query = if wire::query(parts)
            .iter()
            .any(|(k, _)| SECRET_PARAMS.contains(&k.as_str()))
        {
            let mut masked = form_urlencoded::Serializer::new(String::new());
            for (k, v) in wire::query(parts) {
                let secret = SECRET_PARAMS.contains(&k.as_str());
                masked.append_pair(&k, if secret { MASK } else { &v });
            }
            masked.finish()
        } else {
            raw.to_owned()
        };
        RecordedCall {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query,
            headers,
        }
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
    /// Uploads and reads seen under a `flaky` fault (which of them fail follows from the
    /// count).
    flaky_seq: AtomicU64,
    /// The most recent requests received, oldest first.
    calls: Mutex<VecDeque<RecordedCall>>,
    /// Fast mode: the file bytes of the last upload, what a download of the canned file
    /// sends.
    pub fast_file_len: AtomicU64,
    /// Fast mode: the uploads answered so far (the last file id named, with unique ids).
    pub fast_uploads: AtomicU64,
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

    /// Whether a request presenting `credential` is let in: a configured credential, or an
    /// access token the (Case IQ) token endpoint issued that has not expired.
    pub fn accepts_credential(&self, credential: &str) -> bool {
        self.accepts(Some(credential))
            || self
                .store()
                .tokens
                .get(credential)
                .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Every request recorded, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().cloned().collect()
    }

    /// Records a request received.
    pub(super) fn record(&self, parts: &Parts) {
        let call = RecordedCall::of(parts);
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.len() == CALLS_KEPT {
            calls.pop_front();
        }
        calls.push_back(call);
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
    sh.record(&parts);
    let body = ReqBody::new(body);
    let resp = answer::<A>(&sh, parts, body.clone()).await?;
    body.drain().await;
    Ok(resp)
}

/// Checks the request's credential (except at the token endpoint, which checks its own) and
/// the dialect's own refusals; `Err` is answered in the dialect's error form.
fn authorize<A: Api>(sh: &Shared, kind: Kind, parts: &Parts) -> Result<(), Refusal> {
    if kind != Kind::Token && !sh.is_open() {
        match A::credential(parts) {
            None => return Err((StatusCode::UNAUTHORIZED, A::NO_CREDENTIAL)),
            Some(c) if !sh.accepts_credential(&c) => {
                return Err((StatusCode::UNAUTHORIZED, A::BAD_CREDENTIAL))
            }
            Some(_) => {}
        }
    }
    A::refuse(kind, parts).map_or(Ok(()), Err)
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
    if let Err((status, message)) = authorize::<A>(sh, kind, &parts) {
        return Ok(A::error(status, message));
    }
    let fault = sh.fault();
    match kind {
        Kind::Second => {
            if let Some(Fault::CommentDelay(delay)) = fault {
                tokio::time::sleep(delay).await;
            }
            match fault {
                Some(Fault::CommentStatus(n)) => {
                    body.drain().await;
                    Ok(A::error(fault::status(n), EMULATED))
                }
                // Fast mode stores no cases, so the second call gets the canned success too.
                _ if sh.cfg.fast => {
                    let drained = body.drain().await;
                    Ok(A::fast(sh, &call, &parts, drained))
                }
                _ => Ok(A::handle(sh.clone(), call, parts, body).await),
            }
        }
        Kind::Token => Ok(A::handle(sh.clone(), call, parts, body).await),
        Kind::Upload | Kind::Read => {
            let request = Faulted {
                kind,
                get: parts.method == Method::GET,
                half: half_of_declared(&parts),
                body: body.clone(),
            };
            let (shared, fast) = (sh.clone(), sh.cfg.fast);
            let normal = async move {
                match kind {
                    Kind::Upload if fast => {
                        let sample = body.drain_sampled().await;
                        let file_len = super::fast::file_len(&parts, &sample);
                        shared.fast_file_len.store(file_len, Relaxed);
                        A::fast(&shared, &call, &parts, file_len)
                    }
                    Kind::Read if fast && A::fast_download(&shared, &call) => {
                        let (name, content_type) = A::FAST_FILE;
                        let len = shared.fast_file_len.load(Relaxed);
                        super::fast::download(len, name, content_type)
                    }
                    _ => A::handle(shared, call, parts, body).await,
                }
            };
            match fault {
                None => Ok(normal.await),
                Some(fault) => faulted::<A>(sh, request, fault, normal).await,
            }
        }
    }
}

/// How much of the body `reset-mid-body` reads before dropping the connection.
fn half_of_declared(parts: &Parts) -> u64 {
    wire::header(parts, "content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(64 << 10, |n| n / 2)
}

/// What [`faulted`] needs to know of the request.
struct Faulted {
    kind: Kind,
    /// A GET (a read that changes nothing).
    get: bool,
    /// How much of an upload `reset-mid-body` reads.
    half: u64,
    body: ReqBody,
}

/// Whether `flaky=percent` fails this request, counting every upload and read it sees.
fn flaky_fails(sh: &Shared, percent: u8) -> bool {
    // Every request whose count crosses a multiple of 100/percent fails: exactly `percent`
    // in every hundred, spread evenly.
    let n = sh.flaky_seq.fetch_add(1, Relaxed);
    let p = u64::from(percent.min(100));
    (n + 1) * p / 100 > n * p / 100
}

/// The answer to an upload or a read under `fault`; `normal` serves it as if all were well.
/// A fault that answers an error serves nothing (an upload is not stored, a delete deletes
/// nothing); one that spoils a confirmation serves first.
async fn faulted<A: Api>(
    sh: &Shared,
    request: Faulted,
    fault: Fault,
    normal: impl Future<Output = Resp>,
) -> Result<Resp, Dropped> {
    let Faulted {
        kind,
        get,
        half,
        body,
    } = request;
    match fault {
        // Uploads and reads are normal under a fault meant for comments.
        Fault::CommentStatus(_) | Fault::CommentDelay(_) => Ok(normal.await),
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
            if flaky_fails(sh, percent) {
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
        Fault::ResetMidBody if kind == Kind::Upload => {
            body.read_up_to(half).await;
            Err(Dropped)
        }
        // A download sends its head and half its bytes; another read gets nothing.
        Fault::ResetMidBody if get => fault::cut_off(normal.await).ok_or(Dropped),
        Fault::ResetMidBody => Err(Dropped),
        Fault::HeadersThenHang
        | Fault::Html
        | Fault::TruncatedJson
        | Fault::EmptyBody
        | Fault::Trickle
        | Fault::HugeBody => fault::spoil(&fault, normal.await).await,
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
        calls: Mutex::new(VecDeque::new()),
        fast_file_len: AtomicU64::new(0),
        fast_uploads: AtomicU64::new(0),
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
    let mut failures = crate::server::AcceptFailures::default();
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
                Err(e) => failures.failed("emulator", &e).await,
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
