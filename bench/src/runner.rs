//! The load generator, the one runner behind every casegate and direct run: N worker tasks,
//! each owning one keep-alive HTTP/1.1 connection (hyper's low-level client over a
//! `TcpStream` with `TCP_NODELAY`), sending one [`Job`] (an [`Upload`] or a [`Download`])
//! back to back until the run's time or request cap is reached. Each request's latency runs
//! from sending it to the end of the answer's body. An upload counts as an error on any
//! non-2xx answer or transport error; a download, on anything but a 200 whose body (read
//! and discarded as it arrives) is exactly the file's length.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::payload::{Payload, ReqBody};
use crate::Res;

/// Files up to this size are gathered into one buffer once per run; larger ones are
/// generated chunk by chunk for every request.
const PREPARE_LIMIT: u64 = 32 << 20;

/// The longest answer body read (casegate's and the emulators' answers are small).
const MAX_ANSWER: usize = 4 << 20;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An error's answer body is quoted up to this many characters.
const QUOTE_CHARS: usize = 300;

/// One upload request, ready to be sent any number of times.
pub struct Upload {
    addr: SocketAddr,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    payload: Payload,
    prepared: Option<Bytes>,
}

impl Upload {
    /// `path` is the path and query; `headers` come on top of `Host` and `Content-Length`.
    pub fn new(
        addr: SocketAddr,
        path: String,
        headers: Vec<(HeaderName, HeaderValue)>,
        payload: Payload,
    ) -> Self {
        let prepared = (payload.file_len() <= PREPARE_LIMIT).then(|| payload.gather());
        Self {
            addr,
            path,
            headers,
            payload,
            prepared,
        }
    }

    fn build_request(&self) -> Res<Request<ReqBody>> {
        let body = match &self.prepared {
            Some(bytes) => ReqBody::whole(bytes.clone()),
            None => ReqBody::generated(&self.payload),
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header(HOST, self.addr.to_string())
            .header(CONTENT_LENGTH, self.payload.wire_len());
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req.body(body)
            .map_err(|e| format!("cannot build a request for {}: {e}", self.path))
    }
}

/// One download request, ready to be sent any number of times: a GET whose answer must be
/// 200 with exactly `file_len` bytes, read and discarded as they arrive.
pub struct Download {
    addr: SocketAddr,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    file_len: u64,
}

impl Download {
    /// `path` is the path and query; `headers` come on top of `Host`.
    pub fn new(
        addr: SocketAddr,
        path: String,
        headers: Vec<(HeaderName, HeaderValue)>,
        file_len: u64,
    ) -> Self {
        Self {
            addr,
            path,
            headers,
            file_len,
        }
    }
}

/// A request the runner sends again and again, and how its answer is read and judged.
pub trait Job: Send + Sync + 'static {
    /// Where it goes.
    fn addr(&self) -> SocketAddr;
    /// A fresh copy of the request.
    fn request(&self) -> Res<Request<ReqBody>>;
    /// The exact body length a success has, read and discarded; `None`: any 2xx is a
    /// success and its (small) body is kept.
    fn expect_len(&self) -> Option<u64>;
}

impl Job for Upload {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn request(&self) -> Res<Request<ReqBody>> {
        self.build_request()
    }

    fn expect_len(&self) -> Option<u64> {
        None
    }
}

impl Job for Download {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn request(&self) -> Res<Request<ReqBody>> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(&self.path)
            .header(HOST, self.addr.to_string());
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req.body(ReqBody::whole(Bytes::new()))
            .map_err(|e| format!("cannot build a request for {}: {e}", self.path))
    }

    fn expect_len(&self) -> Option<u64> {
        Some(self.file_len)
    }
}

/// How long a run goes on, and how hard.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Workers, each with its own connection.
    pub concurrency: usize,
    /// No request starts after this much time.
    pub duration: Duration,
    /// No more requests than this are started, in all.
    pub max_requests: u64,
    /// One request (send and answer) may take this long before it counts as an error.
    pub request_timeout: Duration,
    /// Each request asks for `Connection: close` and goes on a new connection (the time
    /// to connect counts in its latency); otherwise each worker keeps its connection.
    pub new_connections: bool,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers, transport errors and timeouts.
    pub errors: u64,
    /// From the first request's start to the last answer's end.
    pub elapsed: Duration,
    /// Latencies of the 2xx answers, sorted once the run is over.
    latencies: Vec<Duration>,
    /// The first error, described.
    pub first_error: Option<String>,
    /// 2xx answers that named fields in `Casegate-Dropped`, and the first such header.
    pub dropped: u64,
    pub first_dropped: Option<String>,
}

impl Outcome {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        self.dropped += other.dropped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if self.first_dropped.is_none() {
            self.first_dropped = other.first_dropped;
        }
    }

    /// 2xx answers per second.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the 2xx latencies, if there were any.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let last = self.latencies.len().checked_sub(1)?;
        let at = ((last as f64) * q).round() as usize;
        self.latencies.get(at.min(last)).copied()
    }
}

/// Runs `job` under `plan` and returns what was measured.
pub async fn run<J: Job>(job: &Arc<J>, plan: Plan) -> Outcome {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|_| tokio::spawn(worker(job.clone(), plan, deadline, issued.clone())))
        .collect();
    let mut total = Outcome::default();
    for worker in workers {
        match worker.await {
            Ok(outcome) => total.merge(outcome),
            Err(e) => total.error(format!("a load worker failed: {e}")),
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}

/// Sends one request with a small body on a connection of its own and returns the status
/// and body of the answer (for token requests).
pub async fn send_once(
    addr: SocketAddr,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Res<(StatusCode, Bytes)> {
    let exchange = async {
        let mut sender = connect(addr).await?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(ReqBody::whole(body))
            .map_err(|e| format!("cannot build a request for {path}: {e}"))?;
        let answer = exchange(&mut sender, req, None).await?;
        Ok((answer.status, answer.body))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("POST http://{addr}{path}: no answer within 30 s"))?
}

/// Which way a benchmark carries files through casegate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    /// "uploads" or "downloads", for counts and rates.
    pub fn plural(self) -> &'static str {
        match self {
            Direction::Upload => "uploads",
            Direction::Download => "downloads",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        })
    }
}

/// Sends `upload` once on a connection of its own and returns the status and body of the
/// answer (to read the id it gives), within `timeout`.
pub async fn upload_once(upload: &Upload, timeout: Duration) -> Res<(StatusCode, Bytes)> {
    let exchange = async {
        let mut sender = connect(upload.addr).await?;
        let answer = exchange(&mut sender, upload.build_request()?, None).await?;
        Ok((answer.status, answer.body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("POST {}: no answer within {timeout:?}", upload.path))?
}

/// One worker: one connection (re-opened if the server closes it), requests back to back.
async fn worker<J: Job>(
    job: Arc<J>,
    plan: Plan,
    deadline: Instant,
    issued: Arc<AtomicU64>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut conn: Option<SendRequest<ReqBody>> = None;
    while Instant::now() < deadline && issued.fetch_add(1, Relaxed) < plan.max_requests {
        let started = Instant::now();
        let attempt = async {
            let sender = match conn.take().filter(|c| !c.is_closed()) {
                Some(sender) => conn.insert(sender),
                None => conn.insert(connect(job.addr()).await?),
            };
            let mut req = job.request()?;
            if plan.new_connections {
                req.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            exchange(sender, req, job.expect_len()).await
        };
        let result = tokio::time::timeout(plan.request_timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", plan.request_timeout)));
        if plan.new_connections {
            conn = None;
        }
        match result {
            Ok(answer) if !answer.judged_ok(job.expect_len()) => {
                // A 200 whose body is not the file's length: the connection is left to
                // whatever state the short or long body left it in.
                conn = None;
                out.error(format!(
                    "HTTP {} with a body of {} bytes, not {}",
                    answer.status,
                    answer.body_len,
                    job.expect_len().unwrap_or_default()
                ));
            }
            Ok(answer) if answer.status.is_success() => {
                out.ok += 1;
                out.latencies.push(started.elapsed());
                if let Some(dropped) = answer.dropped {
                    out.dropped += 1;
                    out.first_dropped.get_or_insert(dropped);
                }
            }
            Ok(answer) => out.error(format!(
                "HTTP {} {}",
                answer.status,
                quote(&answer.body, QUOTE_CHARS)
            )),
            Err(e) => {
                // The connection's state is unknown: start afresh, after a breath so a
                // refusing server is not hammered.
                conn = None;
                out.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    out
}

/// Opens a keep-alive HTTP/1.1 connection and drives it on its own task.
async fn connect(addr: SocketAddr) -> Res<SendRequest<ReqBody>> {
    let open = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY on a connection to {addr}: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
        // Ends when the connection closes: the sender is dropped, or the server closed it.
        tokio::spawn(connection);
        Ok(sender)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| format!("cannot connect to {addr} within {CONNECT_TIMEOUT:?}"))?
}

/// The parts of an answer the benchmark looks at.
struct Answer {
    status: StatusCode,
    /// The body, unless it was discarded as it arrived.
    body: Bytes,
    /// How long the body was.
    body_len: u64,
    dropped: Option<String>,
}

impl Answer {
    /// False for a 2xx that is not what a download expects (another 2xx than 200, or a
    /// body of another length than `expect_len`); true otherwise (errors are told apart
    /// by their status).
    fn judged_ok(&self, expect_len: Option<u64>) -> bool {
        match expect_len {
            Some(len) if self.status.is_success() => {
                self.status == StatusCode::OK && self.body_len == len
            }
            _ => true,
        }
    }
}

/// Sends `req` and reads the whole answer: a 2xx body is read and discarded, counted,
/// when `discard` (a download's expected length) is given; any other body is kept (up to
/// [`MAX_ANSWER`]).
async fn exchange(
    sender: &mut SendRequest<ReqBody>,
    req: Request<ReqBody>,
    discard: Option<u64>,
) -> Res<Answer> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let (parts, mut body) = resp.into_parts();
    let failed = |e: &dyn std::fmt::Display, read: u64| {
        format!(
            "reading the answer (HTTP {}) failed after {read} bytes: {e}",
            parts.status
        )
    };
    let (body, body_len) = if discard.is_some() && parts.status.is_success() {
        let mut read = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| failed(&e, read))?;
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
            }
        }
        (Bytes::new(), read)
    } else {
        let bytes = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| failed(&e, 0))?
            .to_bytes();
        let len = bytes.len() as u64;
        (bytes, len)
    };
    let dropped = parts
        .headers
        .get("casegate-dropped")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok(Answer {
        status: parts.status,
        body,
        body_len,
        dropped,
    })
}

/// The start of a body as text, for messages.
pub fn quote(body: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut quoted: String = text.chars().take(max_chars).collect();
    if quoted.len() < text.len() {
        quoted.push_str("...");
    }
    quoted
}
