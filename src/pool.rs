//! casegate's upstream connections: HTTP/1 over TCP or TLS, kept alive in a small pool
//! per route, and driven by the request that uses them. Over plain TCP a connection is
//! casegate's own (`pool/raw.rs`): the request's task writes the request and reads the
//! answer's head straight on the socket, and the answer's body reads the rest. Over TLS
//! it is hyper's `client::conn::http1` pair (the sender and the connection future),
//! whose connection future the request's task polls while it waits for the answer's
//! head, and the answer's body while it is read. Either way an upload's bytes go from
//! the client's connection to the upstream's inside one task (the client's connection
//! task), with no hand-off to a connection task of the pool's and no wake-up across
//! threads per chunk. (hyper-util's pooled client, which STYLE.md names, spawns a task
//! per connection and reaches it through a channel; driving hyper's connections here
//! cost 5-9 % less CPU per small upload, and casegate's own client on plain TCP
//! 6-12 % less again: bench/RESULTS.md, the fourth and twenty-second rounds.)
//!
//! A connection goes back to the pool only once its answer was read to the end and it
//! is ready for another request; an answer dropped part-way closes its connection.
//! Idle connections are closed after [`IDLE_TIMEOUT`] (a task looks every few seconds)
//! and at most [`MAX_IDLE`] are kept. A request that a reused connection could not send
//! (the upstream closed it while it was idle) is sent again on another one; nothing
//! is sent again once any of it went out.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::Scheme;
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::error::{Body, BoxError};

mod raw;

pub use raw::Outgoing;

/// How long a connection may sit idle in the pool.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most idle connections kept per route.
pub const MAX_IDLE: usize = 256;
/// How often idle connections are looked at.
const REAP_EVERY: Duration = Duration::from_secs(5);

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// One connection: casegate's own over plain TCP, or hyper's over TLS.
// Always boxed itself (`Box<Conn>`), and the plain connection is the common one.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Raw(raw::RawConn),
    /// Boxed: hyper's connection is seven times the size of casegate's own.
    Hyper(Box<HyperConn>),
}

impl Conn {
    /// Still open, as far as can be told without waiting.
    fn usable(&self) -> bool {
        match self {
            Conn::Raw(c) => c.alive(),
            Conn::Hyper(c) => !c.ended() && !c.send.is_closed(),
        }
    }
}

/// A TLS connection: hyper's sender and the connection future that does its I/O.
struct HyperConn {
    send: http1::SendRequest<Body>,
    /// None once it has ended (closed, or failed). It is dropped then, which fails
    /// whatever still waits on it (a request not sent comes back for another try).
    io: Option<http1::Connection<Io, Body>>,
}

impl HyperConn {
    /// Polls the connection future, unless it has ended.
    fn poll_io(&mut self, cx: &mut Context<'_>) {
        poll_io(&mut self.io, cx);
    }

    fn ended(&self) -> bool {
        self.io.is_none()
    }
}

/// Polls a connection future; drops it when it ends.
fn poll_io(io: &mut Option<http1::Connection<Io, Body>>, cx: &mut Context<'_>) {
    if let Some(conn) = io.as_mut() {
        if Pin::new(conn).poll(cx).is_ready() {
            *io = None;
        }
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect: {0}")]
    Connect(#[source] BoxError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Raw(#[from] raw::RawError),
}

/// Idle connections, kept apart per connection worker ([`crate::workers::current`]): a
/// connection is registered with the runtime of the worker that opened it, so a request
/// reuses only its own worker's, and its I/O never wakes another thread.
#[derive(Default)]
struct Idles {
    per_worker: Vec<Vec<Idle>>,
    count: usize,
}

impl Idles {
    fn slot(&mut self, worker: usize) -> &mut Vec<Idle> {
        if self.per_worker.len() <= worker {
            self.per_worker.resize_with(worker + 1, Vec::new);
        }
        &mut self.per_worker[worker]
    }
}

/// A route's upstream connections.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Idles>,
    max_buf: usize,
}

impl Pool {
    /// A pool connecting with `connector`; starts its idle reaper when inside a runtime.
    pub fn new(connector: HttpsConnector<HttpConnector>, max_buf: usize) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            connector,
            idle: Mutex::new(Idles::default()),
            max_buf,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&pool)));
        }
        pool
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idles> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The calling worker's most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle();
        let mut taken = 0;
        let mut found = None;
        let slot = idle.slot(crate::workers::current());
        // The poll's clock (`crate::clock`): an idle limit, not a report.
        let now = crate::clock::now();
        while let Some(i) = slot.pop() {
            taken += 1;
            if now.saturating_duration_since(i.since) < IDLE_TIMEOUT && i.conn.usable() {
                found = Some(i.conn);
                break;
            }
        }
        idle.count -= taken;
        found
    }

    fn put(&self, conn: Box<Conn>) {
        let mut idle = self.idle();
        if idle.count < MAX_IDLE {
            idle.count += 1;
            idle.slot(crate::workers::current()).push(Idle {
                conn,
                since: crate::clock::now(),
            });
        }
    }

    /// Idle connections, of every worker.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle().count
    }

    async fn connect(&self, uri: &Uri) -> Result<Box<Conn>, PoolError> {
        let io = tower::Service::call(&mut self.connector.clone(), uri.clone())
            .await
            .map_err(PoolError::Connect)?;
        match io {
            MaybeHttpsStream::Http(tcp) => Ok(Box::new(Conn::Raw(raw::RawConn::new(
                tcp.into_inner(),
                self.max_buf,
            )))),
            tls @ MaybeHttpsStream::Https(_) => {
                let (send, io) = http1::Builder::new()
                    .max_buf_size(self.max_buf)
                    .handshake(tls)
                    .await?;
                Ok(Box::new(Conn::Hyper(Box::new(HyperConn {
                    send,
                    io: Some(io),
                }))))
            }
        }
    }

    /// A connection: the calling worker's idle one, else a new one (boxed: connecting,
    /// with TCP, maybe TLS and the handshake, is a large future that a request on a
    /// reused connection need not carry). True when reused.
    async fn conn(&self, target: &Uri) -> Result<(Box<Conn>, bool), PoolError> {
        match self.checkout() {
            Some(conn) => Ok((conn, true)),
            None => Ok((Box::pin(self.connect(target)).await?, false)),
        }
    }

    /// Sends `req` (its URI absolute: it says where to connect; it goes out in origin
    /// form with a `Host` header) and waits for the answer's head, driving the
    /// connection meanwhile.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        // Taken, not cloned: the request goes out with its path alone.
        let target = std::mem::take(req.uri_mut());
        if !req.headers().contains_key(HOST) {
            if let Some(host) = target
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(HOST, host);
            }
        }
        if target.scheme() == Some(&Scheme::HTTP) {
            let path = target.path_and_query().map_or("/", |p| p.as_str());
            return self.send_raw(raw::Outgoing::new(req, path), &target).await;
        }
        if let Some(path) = target.path_and_query() {
            *req.uri_mut() = Uri::from(path.clone());
        }
        loop {
            let (mut conn, reused) = self.conn(&target).await?;
            let Conn::Hyper(hyper) = &mut *conn else {
                continue; // not one of hyper's (a pool serves one upstream): closed
            };
            let HyperConn { send, io } = &mut **hyper;
            let ready = std::future::poll_fn(|cx| {
                poll_io(io, cx);
                send.poll_ready(cx)
            })
            .await;
            if let Err(e) = ready {
                if reused {
                    continue; // closed while idle: another one
                }
                return Err(e.into());
            }
            let mut answer = std::pin::pin!(send.try_send_request(req));
            let answered = std::future::poll_fn(|cx| {
                poll_io(io, cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(resp) => {
                    let pool = Arc::downgrade(self);
                    return Ok(resp.map(|body| UpstreamBody {
                        inner: Inner::Hyper {
                            body,
                            conn: Some(conn),
                        },
                        pool,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Never went out: a reused connection the upstream had closed.
                    Some(again) if reused => req = again,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// [`Pool::send`] on casegate's own connections (plain TCP).
    async fn send_raw(
        self: &Arc<Self>,
        mut out: raw::Outgoing,
        target: &Uri,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        loop {
            let (mut conn, reused) = self.conn(target).await?;
            let Conn::Raw(c) = &mut *conn else {
                continue; // not one of casegate's own (a pool serves one upstream): closed
            };
            c.start(out);
            match std::future::poll_fn(|cx| c.poll_head(cx)).await {
                Ok(head) => {
                    let mut body = UpstreamBody {
                        inner: Inner::Raw(Some(conn)),
                        pool: Arc::downgrade(self),
                    };
                    body.release_if_done();
                    return Ok(head.map(|()| body));
                }
                Err(e) => {
                    let retry = matches!(e, raw::RawError::Io(_) | raw::RawError::Closed);
                    match c.take_unsent() {
                        // Never went out: a reused connection the upstream had closed.
                        Some(again) if reused && retry => out = again,
                        _ => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// Closes idle connections past [`IDLE_TIMEOUT`] (and ones their upstream closed),
/// every [`REAP_EVERY`], for as long as the pool lives.
async fn reap(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        let stale: Vec<Idle> = {
            let mut idle = pool.idle();
            let mut stale = Vec::new();
            for slot in idle.per_worker.iter_mut() {
                let (keep, gone): (Vec<Idle>, Vec<Idle>) = std::mem::take(slot)
                    .into_iter()
                    .partition(|i| i.since.elapsed() < IDLE_TIMEOUT && i.conn.usable());
                *slot = keep;
                stale.extend(gone);
            }
            idle.count -= stale.len();
            stale
        };
        drop(stale);
    }
}

/// An upstream answer's body. Reading it drives its connection; read to the end, the
/// connection goes back to the pool, dropped before, it is closed.
pub struct UpstreamBody {
    inner: Inner,
    pool: Weak<Pool>,
}

enum Inner {
    /// On casegate's own connection; None once the body ended (the connection is back
    /// in the pool, or closed).
    ///
    /// Boxed: a connection (its buffers and state) is large, and an answer is moved
    /// through several futures; it is allocated once per connection, not per request.
    Raw(Option<Box<Conn>>),
    Hyper {
        body: Incoming,
        conn: Option<Box<Conn>>,
    },
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pooled = match &self.inner {
            Inner::Raw(conn) | Inner::Hyper { conn, .. } => conn.is_some(),
        };
        f.debug_struct("UpstreamBody")
            .field("pooled", &pooled)
            .finish()
    }
}

impl UpstreamBody {
    /// Drives the connection (the rest of the request's body still going out after an
    /// early answer) until `fut` is ready, without reading the answer's body.
    pub async fn drive_while<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            match &mut self.inner {
                Inner::Raw(Some(conn))
                | Inner::Hyper {
                    conn: Some(conn), ..
                } => match &mut **conn {
                    Conn::Raw(c) => c.drive_quietly(cx),
                    Conn::Hyper(c) => c.poll_io(cx),
                },
                _ => {}
            }
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// A body that has ended before it is read (nothing after a `HEAD`, a `204`, an
    /// empty one) gives its connection back at once, when its request is all sent.
    fn release_if_done(&mut self) {
        if let Inner::Raw(slot) = &mut self.inner {
            if let Some(Conn::Raw(c)) = slot.as_deref() {
                if c.body_ended() && c.idle_now() {
                    self.release_raw();
                }
            }
        }
    }

    /// At the body's end: a plain connection back to the pool when it can be used
    /// again, else closed.
    fn release_raw(&mut self) {
        let Inner::Raw(slot) = &mut self.inner else {
            return;
        };
        let Some(conn) = slot.take() else {
            return;
        };
        if let Conn::Raw(c) = &*conn {
            if c.reusable() {
                if let Some(pool) = self.pool.upgrade() {
                    pool.put(conn);
                }
            }
        }
    }

    /// At the body's end: back to the pool when the connection is ready for more.
    fn release_hyper(&mut self, cx: &mut Context<'_>) {
        let Inner::Hyper { conn: slot, .. } = &mut self.inner else {
            return;
        };
        let Some(mut conn) = slot.take() else {
            return;
        };
        let Conn::Hyper(c) = &mut *conn else {
            return;
        };
        // One more turn lets the connection see the answer is over and become idle.
        c.poll_io(cx);
        if c.ended() {
            return;
        }
        if c.send.is_ready() {
            if let Some(pool) = self.pool.upgrade() {
                pool.put(conn);
            }
        } else if let Some(io) = c.io.take() {
            // Still busy (the request's body after an early answer): let it finish on
            // its own, not to be reused.
            tokio::spawn(async move {
                let _ = io.await;
            });
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Raw(slot) => {
                let Some(Conn::Raw(c)) = slot.as_deref_mut() else {
                    return Poll::Ready(None);
                };
                c.drive_quietly(cx);
                match std::task::ready!(c.poll_body(cx)) {
                    Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(Err(e)) => {
                        *slot = None; // closed
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    None => {
                        this.release_raw();
                        Poll::Ready(None)
                    }
                }
            }
            Inner::Hyper { body, conn } => {
                if let Some(Conn::Hyper(c)) = conn.as_deref_mut() {
                    c.poll_io(cx);
                }
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                if frame.is_none() {
                    this.release_hyper(cx);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Raw(conn) => conn.is_none(),
            // While it holds its connection, the body is read to its end (`None`), which
            // is where the connection goes back to the pool.
            Inner::Hyper { body, conn } => conn.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Raw(Some(conn)) => match &**conn {
                Conn::Raw(c) => c.size_hint(),
                Conn::Hyper(_) => SizeHint::default(),
            },
            Inner::Raw(None) => SizeHint::with_exact(0),
            Inner::Hyper { body, .. } => body.size_hint(),
        }
    }
}

/// The pool as a tower service (under casegate's silence timeout).
#[derive(Clone)]
pub struct PoolService(pub Arc<Pool>);

impl tower::Service<Request<Body>> for PoolService {
    type Response = Response<UpstreamBody>;
    type Error = PoolError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, PoolError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PoolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let pool = self.0.clone();
        crate::boxed(|| async move { pool.send(req).await })
    }
}

/// [`PoolService`] for a request encoded already for casegate's own connections (plain
/// TCP, [`Outgoing::from_head`]): `root` is the upstream's origin, where a new
/// connection goes.
pub struct EncodedService {
    pub pool: Arc<Pool>,
    pub root: Uri,
}

impl tower::Service<Outgoing> for EncodedService {
    type Response = Response<UpstreamBody>;
    type Error = PoolError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, PoolError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PoolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, out: Outgoing) -> Self::Future {
        let (pool, root) = (self.pool.clone(), self.root.clone());
        crate::boxed(|| async move { pool.send_raw(out, &root).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pool() -> Arc<Pool> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Pool::new(https, 64 * 1024)
    }

    /// A bare HTTP/1 server on 127.0.0.1: answers every request on a connection with
    /// `body` (its request line and `Host` echoed in headers), closing the connection
    /// `close_after` after its first answer when set. Counts the connections it accepted.
    async fn server(body: Vec<u8>, close_after: Option<Duration>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or("").to_string();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: "))
                            .unwrap_or("")
                            .to_string();
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-line: {line}\r\nx-host: {host}\r\n\r\n",
                            body.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err()
                            || s.write_all(&body).await.is_err()
                        {
                            return;
                        }
                        if let Some(after) = close_after {
                            tokio::time::sleep(after).await;
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    fn get(url: &str) -> Request<Body> {
        Request::get(url)
            .body(crate::error::full(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn answers_read_to_the_end_give_their_connection_back() {
        let (base, accepted) = server(b"hello".to_vec(), None).await;
        let pool = pool();
        for i in 0..5 {
            let resp = pool
                .send(get(&format!("{base}/files/{i}?x=1")))
                .await
                .unwrap();
            // Origin form on the wire, and the upstream's own Host.
            assert_eq!(
                resp.headers()["x-line"],
                format!("GET /files/{i}?x=1 HTTP/1.1")
            );
            assert_eq!(resp.headers()["x-host"], base.trim_start_matches("http://"));
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_answer_dropped_part_way_closes_its_connection() {
        let (base, accepted) = server(vec![7u8; 4 << 20], None).await;
        let pool = pool();
        let resp = pool.send(get(&format!("{base}/big"))).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(get(&format!("{base}/big"))).await.unwrap();
        let all = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 4 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_an_error() {
        let (base, accepted) = server(b"ok".to_vec(), Some(Duration::from_millis(50))).await;
        let pool = pool();
        for _ in 0..3 {
            let resp = pool.send(get(&format!("{base}/a"))).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            // The upstream closes it meanwhile; the pool still holds it.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// A scripted upstream on 127.0.0.1: on every connection it reads requests (the
    /// head, then a body framed by `content-length` or chunked) and answers each with the
    /// next of `answers`, as raw bytes; `close` ends a connection after each answer.
    /// Gives the base URL, every request as it came on the wire, and the connections.
    async fn scripted(
        answers: Vec<&'static [u8]>,
        close: bool,
    ) -> (String, Arc<Mutex<Vec<Vec<u8>>>>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let (log, count) = (seen.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (log, answers) = (log.clone(), answers.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut s, &mut buf).await else {
                            return;
                        };
                        log.lock().unwrap().push(request);
                        let Some(answer) = answers.lock().unwrap().pop_front() else {
                            return;
                        };
                        if s.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (base, seen, accepted)
    }

    /// One request off the wire: its head and its body as they came.
    async fn read_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let done = |b: &[u8]| -> Option<usize> {
            if head.contains("transfer-encoding: chunked") {
                b[end..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .map(|p| end + p + 5)
            } else {
                let n: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse().unwrap());
                (b.len() >= end + n).then_some(end + n)
            }
        };
        loop {
            if let Some(total) = done(buf) {
                return Some(buf.drain(..total).collect());
            }
            let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn post(url: &str, body: Body) -> Request<Body> {
        Request::post(url).body(body).unwrap()
    }

    /// A body of unknown length: `pieces`, then `fail` as an error when set.
    fn streamed(pieces: &[&'static [u8]], fail: bool) -> Body {
        let mut items: Vec<Result<Frame<Bytes>, BoxError>> = pieces
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        if fail {
            items.push(Err("the client went away".into()));
        }
        http_body_util::StreamBody::new(futures_util::stream::iter(items)).boxed_unsync()
    }

    async fn text(resp: Response<UpstreamBody>) -> Result<String, BoxError> {
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_out_chunked_and_a_known_one_with_its_length() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (base, seen, accepted) = scripted(vec![ok, ok, ok], false).await;
        let pool = pool();
        let resp = pool
            .send(post(
                &format!("{base}/a?b=c"),
                streamed(&[b"hello ", b"", b"world"], false),
            ))
            .await
            .unwrap();
        assert_eq!(text(resp).await.unwrap(), "ok");
        let resp = pool
            .send(post(&format!("{base}/d"), crate::error::full("exact")))
            .await
            .unwrap();
        assert_eq!(text(resp).await.unwrap(), "ok");
        let resp = pool.send(get(&format!("{base}/e"))).await.unwrap();
        assert_eq!(text(resp).await.unwrap(), "ok");
        let host = base.trim_start_matches("http://");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            String::from_utf8(seen[0].clone()).unwrap(),
            format!(
                "POST /a?b=c HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n\r\n\
                 6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
            )
        );
        assert_eq!(
            String::from_utf8(seen[1].clone()).unwrap(),
            format!("POST /d HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\n\r\nexact")
        );
        assert_eq!(
            String::from_utf8(seen[2].clone()).unwrap(),
            format!("GET /e HTTP/1.1\r\nhost: {host}\r\n\r\n")
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_large_body_goes_out_whole_in_chunks_as_it_comes() {
        let ok: &[u8] = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
        let (base, seen, _) = scripted(vec![ok], false).await;
        let big: &'static [u8] = Box::leak(vec![b'x'; 300 * 1024].into_boxed_slice());
        let pieces = [b"head".as_slice(), big, b"tail", big];
        let resp = pool()
            .send(post(&format!("{base}/big"), streamed(&pieces, false)))
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let mut expected = Vec::new();
        for p in pieces {
            expected.extend_from_slice(format!("{:X}\r\n", p.len()).as_bytes());
            expected.extend_from_slice(p);
            expected.extend_from_slice(b"\r\n");
        }
        expected.extend_from_slice(b"0\r\n\r\n");
        let seen = seen.lock().unwrap()[0].clone();
        let start = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(seen[start..] == expected[..]);
    }

    #[tokio::test]
    async fn chunked_answers_with_extensions_and_trailers_are_read_and_the_connection_kept() {
        let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5;name=value\r\nhello\r\n1 \r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        let (base, _, accepted) = scripted(vec![chunked, chunked], false).await;
        let pool = pool();
        for _ in 0..2 {
            let resp = pool.send(get(&format!("{base}/c"))).await.unwrap();
            assert_eq!(text(resp).await.unwrap(), "hello 0123456789");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_bodiless_answers_end_at_once() {
        let answers: Vec<&[u8]> = vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: 1\r\nx-a: 2\r\n\r\nabc",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
        ];
        let (base, _, accepted) = scripted(answers, false).await;
        let pool = pool();
        let resp = pool.send(get(&format!("{base}/a"))).await.unwrap();
        assert_eq!(resp.status(), 200);
        let values: Vec<_> = resp.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(resp.body().size_hint().exact(), Some(3));
        assert_eq!(text(resp).await.unwrap(), "abc");
        let resp = pool.send(get(&format!("{base}/b"))).await.unwrap();
        assert_eq!(resp.status(), 204);
        assert!(resp.body().is_end_stream());
        let head = Request::head(format!("{base}/c"))
            .body(crate::error::full(Bytes::new()))
            .unwrap();
        let resp = pool.send(head).await.unwrap();
        // The length of what a GET would give; no body follows a HEAD's answer.
        assert_eq!(resp.headers()["content-length"], "10");
        assert!(resp.body().is_end_stream());
        assert_eq!(text(resp).await.unwrap(), "");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn answers_that_end_with_the_connection_or_ask_to_close_are_not_reused() {
        let answers: Vec<&[u8]> = vec![
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na",
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\ncEXTRA",
        ];
        let (base, _, accepted) = scripted(answers, false).await;
        let pool = pool();
        for want in ["a", "b", "c"] {
            let resp = pool.send(get(&format!("{base}/x"))).await.unwrap();
            assert_eq!(text(resp).await.unwrap(), want);
            assert_eq!(pool.idle_count(), 0);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // Framed by the connection's end.
        let (base, _, _) = scripted(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], true).await;
        let resp = pool.send(get(&format!("{base}/y"))).await.unwrap();
        assert_eq!(text(resp).await.unwrap(), "until the end");
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn answers_split_anywhere_on_the_wire_read_back_byte_for_byte() {
        // Seeded cases: a body framed by its length or in chunks of random sizes (some
        // with extensions, some with trailers), written in pieces of 1-40 bytes, two
        // answers on one connection. What the client reads is the body, and the
        // connection is used again.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for case in 0..150 {
            let mut bodies = Vec::new();
            let mut answers = Vec::new();
            for _ in 0..2 {
                let body: Vec<u8> = (0..next(3000)).map(|_| next(256) as u8).collect();
                let mut wire = Vec::new();
                if next(2) == 0 {
                    wire.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    );
                    wire.extend_from_slice(&body);
                } else {
                    wire.extend_from_slice(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                    );
                    let mut rest = &body[..];
                    while !rest.is_empty() {
                        let n = (1 + next(700)).min(rest.len());
                        let ext = if next(3) == 0 { ";a=b" } else { "" };
                        wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                        wire.extend_from_slice(&rest[..n]);
                        wire.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    let trailer = if next(3) == 0 { "x-sum: 1\r\n" } else { "" };
                    wire.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
                }
                let pieces: Vec<usize> = (0..wire.len()).map(|_| 1 + next(40)).collect();
                answers.push((wire, pieces));
                bodies.push(body);
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let mut buf = Vec::new();
                for (wire, pieces) in answers {
                    read_request(&mut s, &mut buf).await.unwrap();
                    let mut at = 0;
                    for n in pieces {
                        let end = (at + n).min(wire.len());
                        s.write_all(&wire[at..end]).await.unwrap();
                        tokio::task::yield_now().await;
                        at = end;
                    }
                }
                // Nothing more: the client closes the connection when its pool goes.
                read_request(&mut s, &mut buf).await
            });
            let pool = pool();
            for (i, body) in bodies.iter().enumerate() {
                let resp = pool.send(get(&format!("{base}/{i}"))).await.unwrap();
                let got = resp.into_body().collect().await.unwrap().to_bytes();
                assert!(got[..] == body[..], "case {case}, answer {i}");
            }
            assert_eq!(pool.idle_count(), 1, "case {case}");
            drop(pool);
            assert!(server.await.unwrap().is_none(), "case {case}");
        }
    }

    #[tokio::test]
    async fn answers_read_without_their_headers_are_framed_as_with_them() {
        // Names in any case, lists, the connection's end, an HTTP/1.0 answer, lengths
        // that disagree: what the framing reads from the head's fields directly (an
        // answer whose headers are not wanted) is what it reads through the header map.
        let answers: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nuntil the end",
            b"HTTP/1.1 201 Created\r\ncontent-length: 2, 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nCONNECTION: keep-alive, Close\r\ncontent-length: 1\r\n\r\na",
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
        ];
        for answer in answers {
            let mut read = Vec::new();
            for wanted in [true, false] {
                let (base, _, _) = scripted(vec![answer], true).await;
                let pool = pool();
                let root: Uri = base.parse().unwrap();
                let body = crate::error::full(Bytes::new());
                let mut out =
                    Outgoing::from_head(&http::Method::GET, "/x", std::iter::empty(), body);
                if !wanted {
                    out = out.without_answer_headers();
                }
                read.push(match pool.send_raw(out, &root).await {
                    Ok(resp) => {
                        // Read, every header of the head; skipped, none.
                        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n");
                        let fields = head_end.is_some_and(|end| answer[..end].contains(&b':'));
                        assert_eq!(!resp.headers().is_empty(), wanted && fields, "{answer:?}");
                        let status = resp.status();
                        let text = text(resp).await.map_err(|e| e.to_string());
                        (Some(status), text, pool.idle_count())
                    }
                    Err(e) => (None, Err(e.to_string()), pool.idle_count()),
                });
            }
            assert_eq!(read[0], read[1], "{answer:?}");
        }
    }

    #[tokio::test]
    async fn malformed_answers_are_errors() {
        let long: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nx-long: {}\r\n\r\n",
                "a".repeat(70 * 1024)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let heads: Vec<(&[u8], &str)> = vec![
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "Content-Length",
            ),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "cannot be parsed"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switches"),
            (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "cannot be parsed"),
            (long, "too large"),
            (b"HTTP/1.1 200 O", "closed the connection"),
        ];
        for (answer, why) in heads {
            let (base, _, _) = scripted(vec![answer], true).await;
            let err = pool().send(get(&format!("{base}/h"))).await.unwrap_err();
            assert!(err.to_string().contains(why), "{err} for {answer:?}");
        }
        let bodies: Vec<(&[u8], &str)> = vec![
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
                "closed the connection",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nZ\r\n",
                "size is invalid",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\n",
                "size is invalid",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabX\r\n",
                "CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n",
                "closed the connection",
            ),
        ];
        for (answer, why) in bodies {
            let (base, _, _) = scripted(vec![answer], true).await;
            let pool = pool();
            let resp = pool.send(get(&format!("{base}/b"))).await.unwrap();
            let err = text(resp).await.unwrap_err();
            assert!(err.to_string().contains(why), "{err} for {answer:?}");
            assert_eq!(pool.idle_count(), 0);
        }
    }

    #[tokio::test]
    async fn a_body_that_fails_never_reaches_its_end_upstream() {
        // The upstream gets the body's first piece, then the connection closes without
        // the last chunk: it cannot take the request as whole.
        let (base, got) = sink().await;
        let failing = http_body_util::BodyExt::boxed_unsync(Failing(0));
        let err = pool()
            .send(post(&format!("{base}/f"), failing))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the client went away"), "{err}");
        let all = String::from_utf8(got.await.unwrap()).unwrap();
        assert!(all.ends_with("\r\n\r\n5\r\nfirst\r\n"), "{all:?}");
        // A body longer than it said it was is refused the same way.
        let (base, got) = sink().await;
        let lying = http_body_util::BodyExt::boxed_unsync(Lying);
        let err = pool()
            .send(post(&format!("{base}/g"), lying))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("longer than its declared length"),
            "{err}"
        );
        // Found before anything went out: the upstream saw nothing at all.
        let all = String::from_utf8(got.await.unwrap()).unwrap();
        assert_eq!(all, "");
    }

    /// An upstream on 127.0.0.1 that takes one connection and answers nothing: gives
    /// everything that came on it, once the client closed it.
    async fn sink() -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let got = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            all
        });
        (base, got)
    }

    /// A body that gives `first`, waits a turn, and fails.
    struct Failing(u8);

    impl http_body::Body for Failing {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0 += 1;
            match self.0 {
                1 => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first"))))),
                2 => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                _ => Poll::Ready(Some(Err("the client went away".into()))),
            }
        }
    }

    /// A body that says it has 2 bytes and gives 3.
    struct Lying;

    impl http_body::Body for Lying {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"abc")))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(2)
        }
    }

    #[tokio::test]
    async fn an_early_answer_is_read_while_the_rest_of_the_body_cannot_go() {
        // The upstream refuses after the head and closes without reading the body.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!")
                .await;
            let _ = s.shutdown().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let big: &'static [u8] = Box::leak(vec![b'x'; 8 << 20].into_boxed_slice());
        let pool = pool();
        let resp = pool
            .send(post(&format!("{base}/u"), crate::error::full(big)))
            .await
            .unwrap();
        assert_eq!(resp.status(), 413);
        assert_eq!(text(resp).await.unwrap(), "too big!");
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        // Bound, never listening: refused, and the port not free for another test.
        let bound = tokio::net::TcpSocket::new_v4().unwrap();
        bound.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = bound.local_addr().unwrap();
        let err = pool()
            .send(get(&format!("http://{addr}/")))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
    }
}
