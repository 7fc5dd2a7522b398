//! The admin listener of SPEC section 8: `/healthz`, `/readyz` and `/metrics` on their own
//! address (`admin_listen`), apart from client traffic, so probes and scrapes never queue
//! behind uploads and `/metrics` is never reachable on the public listener.
//!
//! Plain HTTP/1.1 through hyper: each connection is its own task, with a short header
//! read timeout (which also closes idle keep-alive connections), small caps on header
//! size and count, and a cap on open connections (beyond it a new connection is closed at
//! once). Only GET and HEAD are answered; request bodies are never read.
//!
//! - `GET /healthz`: 200 `ok` while the process serves, whatever the ledger's state.
//! - `GET /readyz`: 200 `ready` when [`Readiness::ready`] says so, else 503 with its
//!   reason on one line (`draining`, `ledger unavailable`, ...).
//! - `GET /metrics`: 200 with [`Metrics::render`] in the Prometheus text format 0.0.4.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::{self, Metrics};

/// Longest wait for a request's head, and so also the longest an idle keep-alive
/// connection stays open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most admin connections open at once; probes and scrapes need a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// Most header fields a request may have.
const MAX_HEADERS: usize = 32;
/// Largest request head, in bytes (also hyper's smallest read buffer).
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long [`Admin::shutdown`] lets answers being written finish before closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What `/readyz` asks.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready; `Err(reason)` otherwise, the reason becoming the 503's body (one
    /// line, e.g. "draining", "ledger unavailable"). Called on every probe from the
    /// listener's task, so it must answer from state kept up to date elsewhere and never
    /// block or wait on the ledger.
    fn ready(&self) -> Result<(), String>;
}

/// The listener's limits; tests shorten them.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// A running admin listener.
///
/// Dropping it also stops it (without waiting); [`Admin::shutdown`] stops it and waits
/// until its connections are closed.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Admin {
    /// Binds `addr` (a bind failure is an `Err` naming the address) and serves
    /// `/healthz`, `/readyz` and `/metrics` in the background: GET and HEAD; any other
    /// method on those paths is 405 with `Allow: GET, HEAD`; any other path is 404.
    pub async fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        ready: Arc<dyn Readiness>,
    ) -> Result<Admin, String> {
        Self::start_with(addr, metrics, ready, Limits::default()).await
    }

    async fn start_with(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        ready: Arc<dyn Readiness>,
        limits: Limits,
    ) -> Result<Admin, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("admin_listen: cannot listen on {addr}: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("admin_listen {addr}: {e}"))?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, metrics, ready, limits, stopped));
        Ok(Admin {
            addr: bound,
            stop,
            task,
        })
    }

    /// The bound address (the real port when `addr` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and ends its connections: idle ones at once, one being answered
    /// after its answer (for at most a second).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the admin listener's task failed");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<dyn Readiness>,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut failures = crate::server::AcceptFailures::default();
    loop {
        let stream = tokio::select! {
            // A send or a dropped `Admin`: both mean stop.
            _ = &mut stopped => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    failures.failed("admin", &e).await;
                    continue;
                }
            },
        };
        if conns.len() >= limits.max_connections {
            tracing::debug!(
                limit = limits.max_connections,
                "admin listener: too many connections; closing a new one"
            );
            continue;
        }
        let metrics = metrics.clone();
        let ready = ready.clone();
        let svc = service_fn(move |req| {
            let answer = answer(&req, &metrics, ready.as_ref());
            async move { Ok::<_, Infallible>(answer) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin listener: closing connections still answering");
    }
    conns.shutdown().await;
}

/// The answer to one admin request.
fn answer<B>(req: &Request<B>, metrics: &Metrics, ready: &dyn Readiness) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, one_line(&reason)),
        },
        _ => {
            let mut res = text(StatusCode::OK, metrics.render());
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            res
        }
    }
}

/// A plain-text answer that no cache keeps.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `reason` on one line, newline-terminated.
fn one_line(reason: &str) -> String {
    let mut line: String = reason
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.is_empty() {
        line.push_str("not ready");
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A readiness the test flips.
    #[derive(Default)]
    struct Flag(Mutex<Option<String>>);

    impl Flag {
        fn set(&self, not_ready: Option<&str>) {
            *self.0.lock().unwrap() = not_ready.map(str::to_owned);
        }
    }

    impl Readiness for Flag {
        fn ready(&self) -> Result<(), String> {
            match &*self.0.lock().unwrap() {
                None => Ok(()),
                Some(reason) => Err(reason.clone()),
            }
        }
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn parse_answer(raw: &str) -> Answer {
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("status line");
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
        Answer {
            status: status[9..12].parse().expect("status code"),
            headers: lines
                .map(|l| {
                    let (n, v) = l.split_once(':').expect("header");
                    (n.to_owned(), v.trim().to_owned())
                })
                .collect(),
            body: body.to_owned(),
        }
    }

    /// One request on its own connection (`Connection: close`), read to the end.
    async fn call(addr: SocketAddr, method: &str, path: &str) -> Answer {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
            .await
            .expect("answer in time")
            .expect("read");
        parse_answer(&raw)
    }

    async fn start(limits: Limits) -> (Admin, Arc<Metrics>, Arc<Flag>) {
        let metrics = Metrics::new();
        let flag = Arc::new(Flag::default());
        let admin = Admin::start_with(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            flag.clone(),
            limits,
        )
        .await
        .expect("start");
        (admin, metrics, flag)
    }

    /// True when the peer closes the connection (EOF or reset) within `within`.
    async fn closed(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(within, s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn healthz_answers_ok_on_get_and_head() {
        let (admin, _m, flag) = start(Limits::default()).await;
        flag.set(Some("ledger unavailable"));
        let a = call(admin.addr(), "GET", "/healthz").await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
        assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(a.header("cache-control"), Some("no-store"));

        let a = call(admin.addr(), "HEAD", "/healthz").await;
        assert_eq!((a.status, a.body.as_str()), (200, ""));
        assert_eq!(a.header("content-length"), Some("3"));

        let a = call(admin.addr(), "GET", "/healthz?verbose=1").await;
        assert_eq!(a.status, 200);
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn readyz_follows_readiness() {
        let (admin, _m, flag) = start(Limits::default()).await;
        let a = call(admin.addr(), "GET", "/readyz").await;
        assert_eq!((a.status, a.body.as_str()), (200, "ready\n"));

        flag.set(Some("draining"));
        let a = call(admin.addr(), "GET", "/readyz").await;
        assert_eq!((a.status, a.body.as_str()), (503, "draining\n"));
        assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));

        flag.set(Some("ledger unavailable:\nconnection refused\r\n"));
        let a = call(admin.addr(), "GET", "/readyz").await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (503, "ledger unavailable: connection refused\n")
        );
        let a = call(admin.addr(), "HEAD", "/readyz").await;
        assert_eq!((a.status, a.body.as_str()), (503, ""));

        flag.set(None);
        let a = call(admin.addr(), "GET", "/readyz").await;
        assert_eq!((a.status, a.body.as_str()), (200, "ready\n"));
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn metrics_serves_the_live_registry() {
        let (admin, metrics, _flag) = start(Limits::default()).await;
        let a = call(admin.addr(), "GET", "/metrics").await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(a
            .body
            .contains("\ncasegate_config_reloads_total{result=\"ok\"} 0\n"));

        metrics.config_reload(true);
        metrics.spooled(&Arc::from("r1"));
        let a = call(admin.addr(), "GET", "/metrics").await;
        assert!(a
            .body
            .contains("\ncasegate_config_reloads_total{result=\"ok\"} 1\n"));
        assert!(a
            .body
            .contains("\ncasegate_spooled_total{route=\"r1\"} 1\n"));
        #[cfg(target_os = "linux")]
        assert!(a.body.contains("\nprocess_resident_memory_bytes "));
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn a_real_client_reads_metrics() {
        let (admin, _m, _flag) = start(Limits::default()).await;
        let res = reqwest::get(format!("http://{}/metrics", admin.addr()))
            .await
            .expect("get");
        assert_eq!(res.status(), 200);
        assert!(res
            .text()
            .await
            .expect("body")
            .contains("# TYPE casegate_ledger_errors_total counter\n"));
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn other_methods_are_405_and_other_paths_404() {
        let (admin, _m, _flag) = start(Limits::default()).await;
        for (method, path) in [
            ("POST", "/metrics"),
            ("PUT", "/healthz"),
            ("DELETE", "/readyz"),
        ] {
            let a = call(admin.addr(), method, path).await;
            assert_eq!(a.status, 405, "{method} {path}");
            assert_eq!(a.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
        for path in [
            "/",
            "/nope",
            "/metrics/",
            "/healthz/x",
            "/api/v4/cases/1/files",
        ] {
            let a = call(admin.addr(), "GET", path).await;
            assert_eq!((a.status, a.body.as_str()), (404, "not found\n"), "{path}");
        }
        let a = call(admin.addr(), "POST", "/nope").await;
        assert_eq!(a.status, 404);
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_closes_connections() {
        let (admin, _m, _flag) = start(Limits::default()).await;
        let addr = admin.addr();
        // A keep-alive connection, idle after one answer.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 1024];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\nok\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }

        tokio::time::timeout(Duration::from_secs(5), admin.shutdown())
            .await
            .expect("shutdown in time");
        assert!(closed(&mut idle, Duration::from_secs(2)).await);
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_slow_head_is_cut_off() {
        let (admin, _m, _flag) = start(Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        })
        .await;
        let mut s = TcpStream::connect(admin.addr()).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a")
            .await
            .expect("write");
        assert!(closed(&mut s, Duration::from_secs(3)).await);
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed() {
        let (admin, _m, _flag) = start(Limits {
            max_connections: 2,
            ..Limits::default()
        })
        .await;
        let _a = TcpStream::connect(admin.addr()).await.expect("connect");
        let _b = TcpStream::connect(admin.addr()).await.expect("connect");
        // Let the listener take both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(admin.addr()).await.expect("connect");
        assert!(closed(&mut c, Duration::from_secs(2)).await);
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn a_busy_address_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = Admin::start(addr, Metrics::new(), Arc::new(Flag::default()))
            .await
            .expect_err("the port is taken");
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
