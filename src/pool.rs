//! casegate's upstream connections: HTTP/1 over TCP or TLS, kept alive in a small pool
//! per route, and driven by the request that uses them. A connection is hyper's
//! `client::conn::http1` pair (the sender and the connection future); the request's own
//! task polls the connection future while it waits for the answer's head, and the
//! answer's body polls it while it is read. So an upload's bytes go from the client's
//! connection to the upstream's inside one task (the client's connection task), with no
//! hand-off to a connection task of the pool's and no wake-up across threads per chunk.
//! (hyper-util's pooled client, which STYLE.md names, spawns a task per connection and
//! reaches it through a channel; measured side by side, this costs 5-9 % less CPU per
//! small upload: bench/RESULTS.md.)
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
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::error::{Body, BoxError};

/// How long a connection may sit idle in the pool.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most idle connections kept per route.
pub const MAX_IDLE: usize = 256;
/// How often idle connections are looked at.
const REAP_EVERY: Duration = Duration::from_secs(5);

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// One connection: the sender and the connection future that does its I/O.
struct Conn {
    send: http1::SendRequest<Body>,
    /// None once it has ended (closed, or failed). It is dropped then, which fails
    /// whatever still waits on it (a request not sent comes back for another try).
    io: Option<http1::Connection<Io, Body>>,
}

impl Conn {
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
    Connect(BoxError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
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
        while let Some(i) = slot.pop() {
            taken += 1;
            if !i.conn.ended() && !i.conn.send.is_closed() && i.since.elapsed() < IDLE_TIMEOUT {
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
                since: Instant::now(),
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
        let (send, io) = http1::Builder::new()
            .max_buf_size(self.max_buf)
            .handshake(io)
            .await?;
        Ok(Box::new(Conn { send, io: Some(io) }))
    }

    /// Sends `req` (its URI absolute: it says where to connect; it goes out in origin
    /// form with a `Host` header) and waits for the answer's head, driving the
    /// connection meanwhile.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let target = req.uri().clone();
        if !req.headers().contains_key(HOST) {
            if let Some(host) = target
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(HOST, host);
            }
        }
        if let Some(path) = target.path_and_query() {
            *req.uri_mut() = Uri::from(path.clone());
        }
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                // Boxed: connecting (TCP, maybe TLS, the handshake) is a large future
                // that a request on a reused connection need not carry.
                None => (Box::pin(self.connect(&target)).await?, false),
            };
            let Conn { send, io } = &mut *conn;
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
                        body,
                        conn: Some(conn),
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
                    .partition(|i| !i.conn.send.is_closed() && i.since.elapsed() < IDLE_TIMEOUT);
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
    body: Incoming,
    /// Boxed: a connection (hyper's buffers and state) is large, and an answer is moved
    /// through several futures; it is allocated once per connection, not per request.
    conn: Option<Box<Conn>>,
    pool: Weak<Pool>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.conn.is_some())
            .finish()
    }
}

impl UpstreamBody {
    /// Drives the connection (the rest of the request's body still going out after an
    /// early answer) until `fut` is ready, without reading the answer's body.
    pub async fn drive_while<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Some(conn) = self.conn.as_mut() {
                conn.poll_io(cx);
            }
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// At the body's end: back to the pool when the connection is ready for more.
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // One more turn lets the connection see the answer is over and become idle.
        conn.poll_io(cx);
        if conn.ended() {
            return;
        }
        if conn.send.is_ready() {
            if let Some(pool) = self.pool.upgrade() {
                pool.put(conn);
            }
        } else if let Some(io) = conn.io.take() {
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = this.conn.as_mut() {
            conn.poll_io(cx);
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none() {
            this.release(cx);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // While it holds its connection, the body is read to its end (`None`), which is
        // where the connection goes back to the pool.
        self.conn.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
        Box::pin(async move { pool.send(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = pool()
            .send(get(&format!("http://{addr}/")))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
    }
}
