//! The upstream side: one pool of HTTP/1 connections per route ([`crate::pool`]) over
//! http and https (rustls with the webpki roots plus the route's `ca_file`), the route's credentials in the back
//! dialect's way, a cached OAuth2 token where the upstream wants one, and timeouts that
//! measure silence rather than total time, so a large upload is never cut for being
//! large.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;

use crate::codec::b64;
use crate::config::{self, UpstreamAuth};
use crate::dialect::Call;
use crate::error::{full, Body, Error};
use crate::pool::{Pool, PoolError, PoolService, UpstreamBody};

/// What the client queues per upstream connection before the socket takes it (hyper's
/// default is ~400 KiB; a small queue keeps memory per upload small).
const UPSTREAM_BUF_BYTES: usize = 64 * 1024;

/// Largest upstream answer casegate reads whole (JSON answers: a Kibana case with its
/// comments, a list); a longer one counts as unreadable. Downloads stream instead.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// When the last byte of a request body went out: the upstream timeout counts silence
/// from then (or from the start), not total time.
#[derive(Debug)]
pub struct Progress {
    /// tokio's clock (the same as std's outside tests with paused time).
    start: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Progress {
            start: crate::clock::tokio_now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Records that bytes moved.
    pub fn touch(&self) {
        let ms = self.since_start().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = self.since_start().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The time since the start on the poll's clock ([`crate::clock`]): it sets a deadline,
    /// it is not reported.
    fn since_start(&self) -> Duration {
        crate::clock::tokio_now().saturating_duration_since(self.start)
    }
}

#[derive(Clone)]
struct CachedToken {
    /// `Bearer <token>`, marked sensitive.
    header: HeaderValue,
    renew_at: Instant,
}

use crate::secret::Secret;

/// A route's upstream.
pub struct Upstream {
    pool: Arc<Pool>,
    base: String,
    /// `base` parsed once: each request's URI is its scheme and authority (reference
    /// counts) and a path, and its `Host` header is made here, not per request. None
    /// for a base these do not hold (a query in it): then the whole URL is parsed per
    /// request, as before.
    origin: Option<Origin>,
    timeout: Duration,
    auth: UpstreamAuth,
    /// The credentials' headers, built once (none for client credentials: their token is
    /// fetched and cached as needed).
    fixed_auth: Result<Vec<(HeaderName, HeaderValue)>, Error>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    /// A copy of the cached token while it is current, read under a plain lock: each
    /// request takes it from here, and only a renewal queues on `token` (whose asynchronous
    /// lock and release cost about 250 instructions a request).
    current: std::sync::Mutex<Option<CachedToken>>,
}

/// An upstream's scheme, authority, path prefix (no trailing slash) and `Host` value.
struct Origin {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
    host: HeaderValue,
    /// `http://authority/`: where casegate's own connections (plain TCP) go; None over
    /// https, whose requests go through hyper with a URI each.
    root: Option<Uri>,
}

impl Origin {
    fn parse(base: &str) -> Option<Origin> {
        let uri = base.parse::<Uri>().ok()?;
        let parts = uri.into_parts();
        let (scheme, authority) = (parts.scheme?, parts.authority?);
        let prefix = match &parts.path_and_query {
            Some(pq) if pq.query().is_some() => return None,
            Some(pq) => pq.path().trim_end_matches('/').to_string(),
            None => String::new(),
        };
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        let root = (scheme == http::uri::Scheme::HTTP)
            .then(|| {
                Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority.clone())
                    .path_and_query("/")
                    .build()
                    .ok()
            })
            .flatten();
        Some(Origin {
            scheme,
            authority,
            prefix,
            host,
            root,
        })
    }

    /// The request target of `path` (which starts with `/`) at this origin; None when
    /// it holds a space or a control byte (which would end the request line early),
    /// which `http`'s URI parser refused on the other path. Bytes past ASCII pass, as
    /// they did through it.
    fn target<'p>(&self, path: &'p str) -> Option<std::borrow::Cow<'p, str>> {
        let target: std::borrow::Cow<'p, str> = if self.prefix.is_empty() {
            path.into()
        } else {
            [self.prefix.as_str(), path].concat().into()
        };
        target
            .bytes()
            .all(|b| b > b' ' && b != 0x7f)
            .then_some(target)
    }

    /// The absolute URI of `path` (which starts with `/`) at this origin.
    fn uri(&self, path: &str) -> Option<Uri> {
        // Handed over as a `String`, which the path keeps without a copy.
        let path = Bytes::from([self.prefix.as_str(), path].concat());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(http::uri::PathAndQuery::from_maybe_shared(path).ok()?);
        Uri::from_parts(parts).ok()
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish()
    }
}

/// A request whose path cannot go out (not one of casegate's own making).
fn unbuildable() -> SendError {
    SendError::Auth(Error::internal("The upstream request could not be built."))
}

/// Whether an upstream answer's headers are read (a download passes them on), or only
/// its status and body (an upload's answer, a call read whole): over plain TCP, skipped
/// headers are not copied into a header map. Over https the answer has them either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerHeaders {
    Read,
    Skipped,
}

/// The outcome of reading an answer's body.
pub struct AnswerBody {
    pub bytes: Bytes,
    /// False when the body broke off, timed out or was longer than the cap.
    pub complete: bool,
}

impl Upstream {
    /// A client for `cfg` at `base` (the configured URL, or an embedded emulator's).
    pub fn new(cfg: &config::Upstream, base: String) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &cfg.ca_file {
            for cert in crate::tls::read_certs(ca)? {
                roots.add(cert).map_err(|_| {
                    format!(
                        "{}: a certificate cannot be used as a trust root",
                        ca.display()
                    )
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let base = base.trim_end_matches('/').to_string();
        Ok(Upstream {
            pool: Pool::new(https, UPSTREAM_BUF_BYTES),
            origin: Origin::parse(&base),
            base,
            timeout: cfg.timeout,
            auth: cfg.auth.clone(),
            fixed_auth: fixed_auth(&cfg.auth),
            token: tokio::sync::Mutex::new(None),
            current: std::sync::Mutex::new(None),
        })
    }

    /// The upstream's base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request with the route's credentials and waits for the answer's head.
    /// The timeout counts from the last body progress. Nothing is retried once any of
    /// the body was sent (the pool only re-sends a request that never left).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Body,
        progress: Arc<Progress>,
        answer: AnswerHeaders,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let token = self.client_credentials().await.map_err(SendError::Auth)?;
        // Fixed credentials are cloned header by header (a reference count each), not
        // gathered into a vector of their own first.
        let fixed = self
            .fixed_auth
            .as_ref()
            .map_err(|e| SendError::Auth(e.clone()))?;
        let ctx = crate::context::current();
        let request_id = ctx.as_ref().and_then(|c| HeaderValue::from_str(&c.id).ok());
        // Over plain TCP the head is encoded straight from the list, in this order: no
        // URI parsed and no header map built for a request that only goes out as bytes.
        if let Some((origin, root)) = self
            .origin
            .as_ref()
            .and_then(|o| Some((o, o.root.as_ref()?)))
        {
            let Some(target) = origin.target(path) else {
                return Err(unbuildable());
            };
            let token = token.map(|t| (AUTHORIZATION, t));
            let names = (X_REQUEST_ID, HOST);
            let host = !headers.iter().chain(fixed).any(|(k, _)| k == HOST);
            let head = headers
                .iter()
                .chain(token.iter())
                .chain(fixed)
                .map(|(k, v)| (k, v))
                .chain(request_id.iter().map(|v| (&names.0, v)))
                .chain(host.then_some((&names.1, &origin.host)));
            let mut out = crate::pool::Outgoing::from_head(&method, &target, head, body);
            if answer == AnswerHeaders::Skipped {
                out = out.without_answer_headers();
            }
            let mut svc = SilenceTimeout {
                inner: crate::pool::EncodedService {
                    pool: self.pool.clone(),
                    root: root.clone(),
                },
                timeout: self.timeout,
                progress,
            };
            svc.progress.touch();
            let started = crate::clock::exact();
            return Self::answered(started, tower::Service::call(&mut svc, out).await);
        }
        let uri = match &self.origin {
            Some(origin) => origin.uri(path),
            // Handed over as a `String`, which the URI keeps without a copy.
            None => Uri::try_from([self.base.as_str(), path].concat()).ok(),
        };
        let Some(uri) = uri else {
            return Err(unbuildable());
        };
        // Built in place: a `request::Builder` moves the whole request through each of
        // its calls and converts each header again.
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.reserve(headers.len() + fixed.len() + 3);
        for (k, v) in headers {
            h.append(k, v);
        }
        if let Some(token) = token {
            h.append(AUTHORIZATION, token);
        }
        for (k, v) in fixed {
            h.append(k.clone(), v.clone());
        }
        if let Some(v) = request_id {
            h.append(X_REQUEST_ID, v);
        }
        // Where the pool would put it, last, from the same authority.
        if let Some(origin) = &self.origin {
            if !h.contains_key(HOST) {
                h.insert(HOST, origin.host.clone());
            }
        }
        let mut svc = SilenceTimeout {
            inner: PoolService(self.pool.clone()),
            timeout: self.timeout,
            progress,
        };
        svc.progress.touch();
        let started = crate::clock::exact();
        Self::answered(started, tower::Service::call(&mut svc, req).await)
    }

    /// An upstream call's outcome, its wait recorded for the access log.
    fn answered(
        started: Instant,
        answered: Result<Response<UpstreamBody>, Silent<PoolError>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        crate::context::record(|i| {
            i.upstream_times
                .push(crate::clock::exact().saturating_duration_since(started));
            if let Ok(resp) = &answered {
                i.upstream_status = Some(resp.status().as_u16());
            }
        });
        answered.map_err(|e| match e {
            Silent::Silent => SendError::Timeout,
            Silent::Inner(e) => SendError::Http(e),
        })
    }

    /// Sends a call (a read, a delete, the second call carrying a comment) and waits for
    /// the answer's head; `extra` headers go with it (a client's `Range`).
    pub async fn open(
        &self,
        call: &Call,
        extra: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        self.open_with(call, extra, AnswerHeaders::Read).await
    }

    async fn open_with(
        &self,
        call: &Call,
        extra: Vec<(HeaderName, HeaderValue)>,
        answer: AnswerHeaders,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let body = match &call.body {
            Some(json) => full(json.clone()),
            None => full(Bytes::new()),
        };
        let mut headers = call.headers.clone();
        headers.extend(extra);
        self.send(
            call.method.clone(),
            &call.path,
            headers,
            body,
            Progress::new(),
            answer,
        )
        .await
    }

    /// Sends a call and reads its whole answer (at most [`MAX_ANSWER_BYTES`]); its
    /// headers are not read.
    pub async fn call(&self, call: &Call) -> Result<(StatusCode, AnswerBody), SendError> {
        let resp = self
            .open_with(call, Vec::new(), AnswerHeaders::Skipped)
            .await?;
        let status = resp.status();
        Ok((status, self.read_answer(resp).await))
    }

    /// Reads an answer's body: at most [`MAX_ANSWER_BYTES`], within the timeout.
    pub async fn read_answer(&self, resp: Response<UpstreamBody>) -> AnswerBody {
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        let deadline = crate::clock::tokio_now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) | Ok(Some(Err(_))) => {
                    return AnswerBody {
                        bytes: buf.freeze(),
                        complete: false,
                    }
                }
                Ok(None) => {
                    return AnswerBody {
                        bytes: buf.freeze(),
                        complete: true,
                    }
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if buf.len() + data.len() > MAX_ANSWER_BYTES {
                            return AnswerBody {
                                bytes: buf.freeze(),
                                complete: false,
                            };
                        }
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Forgets a cached token (after the upstream refused it).
    pub async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// The `Authorization` value of OAuth2 client credentials; None for the other kinds,
    /// whose headers do not change ([`fixed_auth`]).
    async fn client_credentials(&self) -> Result<Option<HeaderValue>, Error> {
        match &self.auth {
            UpstreamAuth::ClientCredentials {
                client_id,
                client_secret,
            } => Ok(Some(self.client_token(client_id, client_secret).await?)),
            _ => Ok(None),
        }
    }

    /// An OAuth2 client-credentials token as an `Authorization` value, cached until
    /// shortly before it expires.
    async fn client_token(&self, id: &str, secret: &Secret) -> Result<HeaderValue, Error> {
        if let Some(header) = self.current_token() {
            return Ok(header);
        }
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if crate::clock::now() < t.renew_at {
                return Ok(t.header.clone());
            }
        }
        // Boxed: the token call (a connection, a request, its answer) is a large future,
        // and every request would carry its room while only a renewal needs it.
        let fresh = Box::pin(self.fetch_token(id, secret)).await?;
        let header = fresh.header.clone();
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(fresh.clone());
        *cached = Some(fresh);
        Ok(header)
    }

    /// The cached token's header while it is current.
    fn current_token(&self) -> Option<HeaderValue> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|t| crate::clock::now() < t.renew_at)
            .map(|t| t.header.clone())
    }

    /// Asks the token endpoint for a new token.
    async fn fetch_token(&self, id: &str, secret: &Secret) -> Result<CachedToken, Error> {
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": id,
            "client_secret": secret.expose(),
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut req = Request::post(format!("{}/auth/oauth2/token", self.base))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(v) = crate::context::current().and_then(|c| HeaderValue::from_str(&c.id).ok()) {
            req = req.header(X_REQUEST_ID, v);
        }
        let req = req
            .body(full(bytes))
            .map_err(|_| Error::internal("The token request could not be built."))?;
        let resp = match tokio::time::timeout(self.timeout, self.pool.send(req)).await {
            Err(_) => return Err(Error::upstream_timeout()),
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::Chain(&e), "token endpoint unreachable");
                return Err(Error::upstream_unreachable());
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let answer = self.read_answer(resp).await;
        if !status.is_success() {
            tracing::warn!(
                status = status.as_u16(),
                "the upstream refused casegate's client credentials"
            );
            return Err(if status.is_server_error() {
                Error::upstream_failed(format!(
                    "The case system's token endpoint failed ({}).",
                    status.as_u16()
                ))
            } else {
                Error::upstream_rejected(StatusCode::UNAUTHORIZED, None)
            });
        }
        let v: Value = serde_json::from_slice(&answer.bytes).unwrap_or(Value::Null);
        let Some(token) = v.get("access_token").and_then(Value::as_str) else {
            return Err(Error::upstream_failed(
                "The case system's token answer has no access_token.",
            ));
        };
        let ttl = v.get("expires_in").and_then(Value::as_u64).unwrap_or(60);
        let margin = (ttl / 10).clamp(1, 60);
        Ok(CachedToken {
            header: sensitive(format!("Bearer {token}"))?,
            renew_at: Instant::now() + Duration::from_secs(ttl.saturating_sub(margin)),
        })
    }
}

/// A credential as a header value, marked sensitive (never printed by hyper or `http`).
fn sensitive(v: String) -> Result<HeaderValue, Error> {
    let mut hv = HeaderValue::from_str(&v)
        .map_err(|_| Error::internal("An upstream credential is not a valid header value."))?;
    hv.set_sensitive(true);
    Ok(hv)
}

/// The headers of credentials that do not change (none for client credentials, whose
/// token changes).
fn fixed_auth(auth: &UpstreamAuth) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    Ok(match auth {
        UpstreamAuth::None | UpstreamAuth::ClientCredentials { .. } => vec![],
        UpstreamAuth::Bearer(t) => {
            vec![(AUTHORIZATION, sensitive(format!("Bearer {}", t.expose()))?)]
        }
        UpstreamAuth::ApiKey(k) => {
            vec![(AUTHORIZATION, sensitive(format!("ApiKey {}", k.expose()))?)]
        }
        UpstreamAuth::Basic { username, password } => {
            let mut enc = String::new();
            b64::encode_into(
                format!("{username}:{}", password.expose()).as_bytes(),
                &mut enc,
            );
            vec![(AUTHORIZATION, sensitive(format!("Basic {enc}"))?)]
        }
        UpstreamAuth::TouchpointToken { touchpoint, token } => vec![
            (
                HeaderName::from_static("thalamus-touchpoint"),
                sensitive(touchpoint.clone())?,
            ),
            (
                HeaderName::from_static("thalamus-token"),
                sensitive(token.expose().to_string())?,
            ),
        ],
    })
}

/// The header carrying the request's id upstream.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A tower middleware over the upstream client: fails a request when the upstream stays
/// silent for the timeout, counted from the last byte of the request body that went out
/// (its [`Progress`]) or from the start, never from the start alone, so a large upload on
/// a slow link is not cut for being large. Made for each upstream request, with that
/// request's progress: carried in the request's extensions it cost three allocations
/// per request (the value's box, the map's, its table).
#[derive(Clone)]
pub struct SilenceTimeout<S> {
    inner: S,
    timeout: Duration,
    progress: Arc<Progress>,
}

/// A request the upstream did not answer: silent too long, or the inner error.
#[derive(Debug)]
pub enum Silent<E> {
    Silent,
    Inner(E),
}

impl<S, R> tower::Service<R> for SilenceTimeout<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = Silent<S::Error>;
    /// Not boxed: the box cost an allocation and a copy of the pool's future on every
    /// upstream call (bench/RESULTS.md, the twenty-sixth round).
    type Future = SilenceFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Silent::Inner)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let progress = self.progress.clone();
        let wait = self.timeout.saturating_sub(progress.idle());
        SilenceFuture {
            inner: self.inner.call(req),
            sleep: crate::coarse::Timer::after(wait),
            progress,
            timeout: self.timeout,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`SilenceTimeout`]'s future: the call's, unless the upstream stays silent for the
    /// timeout. The timer is set again only when it fires after bytes moved meanwhile.
    pub struct SilenceFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: crate::coarse::Timer,
        progress: Arc<Progress>,
        timeout: Duration,
    }
}

impl<F, T, E> std::future::Future for SilenceFuture<F>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    type Output = Result<T, Silent<E>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        if let std::task::Poll::Ready(r) = this.inner.poll(cx) {
            return std::task::Poll::Ready(r.map_err(Silent::Inner));
        }
        loop {
            std::task::ready!(this.sleep.as_mut().poll(cx));
            let wait = this.timeout.saturating_sub(this.progress.idle());
            if wait.is_zero() {
                return std::task::Poll::Ready(Err(Silent::Silent));
            }
            this.sleep.as_mut().reset(wait);
        }
    }
}

/// Why an upstream request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No credentials (token endpoint down or refusing).
    Auth(Error),
    /// Connection refused or reset, TLS refused, body aborted.
    Http(PoolError),
    /// Silent for longer than the timeout.
    Timeout,
}

impl SendError {
    /// The error the client sees (when casegate's own inbound side did not fail first).
    pub fn into_error(self) -> Error {
        match self {
            SendError::Auth(e) => e,
            SendError::Timeout => Error::upstream_timeout(),
            SendError::Http(e) => {
                tracing::warn!(error = %crate::error::Chain(&e), "upstream request failed");
                Error::upstream_unreachable()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_request_target_goes_out_only_without_spaces_or_controls() {
        let plain = Origin::parse("http://127.0.0.1:9/").unwrap();
        let under = Origin::parse("http://127.0.0.1:9/base/").unwrap();
        assert_eq!(
            plain.root.as_ref().map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:9/")
        );
        assert!(Origin::parse("https://127.0.0.1:9/")
            .unwrap()
            .root
            .is_none());
        assert_eq!(
            plain.target("/api/v4/cases/7/files?x=%20").as_deref(),
            Some("/api/v4/cases/7/files?x=%20")
        );
        assert_eq!(under.target("/a").as_deref(), Some("/base/a"));
        assert!(matches!(
            plain.target("/a"),
            Some(std::borrow::Cow::Borrowed(_))
        ));
        // What would end the request line early: refused, as `http`'s URI parser
        // refused it on the other path. Bytes past ASCII pass, as they pass there.
        for bad in [
            "/a b",
            "/a\r\nHost: x",
            "/a\nb",
            "/a\tb",
            "/a\u{7f}",
            "/a\0",
        ] {
            assert_eq!(plain.target(bad), None, "{bad:?}");
            assert!(Uri::try_from(format!("http://h{bad}")).is_err(), "{bad:?}");
        }
        assert_eq!(plain.target("/ü").as_deref(), Some("/ü"));
        assert!(Uri::try_from("http://h/ü").is_ok());
    }

    /// A token endpoint and an API on 127.0.0.1, one request per connection: tokens
    /// `t1`, `t2`, ... that expire in `expires_in` seconds; every other call answers
    /// `{}` and records its `Authorization`.
    async fn token_server(expires_in: u64) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut issued = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = sock.read_exact(&mut body).await;
                let answer = if head.starts_with("post /auth/oauth2/token ") {
                    issued += 1;
                    format!(
                        r#"{{"access_token":"t{issued}","token_type":"Bearer","expires_in":{expires_in}}}"#
                    )
                } else {
                    let auth = head.lines().find_map(|l| l.strip_prefix("authorization: "));
                    log.lock()
                        .unwrap()
                        .push(auth.unwrap_or("").trim().to_string());
                    "{}".to_string()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (base, seen)
    }

    #[tokio::test]
    async fn a_token_is_reused_while_current_and_fetched_again_once_it_is_not() {
        // 3600 s: renewed after 3540 s, so all three calls carry the first token. 1 s: its
        // margin (a tenth, at least a second) leaves it current for no time at all.
        for (expires_in, want) in [(3600, ["t1", "t1", "t1"]), (1, ["t1", "t2", "t3"])] {
            let (base, seen) = token_server(expires_in).await;
            let cfg = config::Upstream {
                dialect: crate::dialect::DialectId::Caseiq,
                url: config::UpstreamUrl::Url(base.clone()),
                timeout: Duration::from_secs(5),
                ca_file: None,
                options: Default::default(),
                auth: UpstreamAuth::ClientCredentials {
                    client_id: "me".into(),
                    client_secret: Secret::new("secret"),
                },
            };
            let up = Upstream::new(&cfg, base).unwrap();
            for _ in 0..3 {
                let (status, _) = up.call(&Call::get("/api/x".into())).await.unwrap();
                assert_eq!(status, StatusCode::OK);
            }
            let want: Vec<String> = want.iter().map(|t| format!("bearer {t}")).collect();
            assert_eq!(*seen.lock().unwrap(), want, "expires_in {expires_in}");
        }
    }

    #[test]
    fn an_origin_makes_the_uri_and_host_the_whole_url_parsed_made() {
        for base in [
            "http://127.0.0.1:8080",
            "https://cases.example",
            "https://cases.example/api/v1",
            "http://[::1]:9/x/y",
            "http://user@h:1/p",
        ] {
            let origin = Origin::parse(base).unwrap();
            for path in ["/", "/api/v2/cases/7/files", "/a%20b?x=1&y", "/%E2%82%AC#"] {
                let whole = Uri::try_from([base, path].concat()).ok();
                assert_eq!(origin.uri(path), whole, "{base} {path}");
                let authority = whole.as_ref().and_then(|u| u.authority()).unwrap();
                assert_eq!(origin.host, authority.as_str(), "{base}");
            }
        }
        // A query in the base, or no authority: the whole URL is parsed per request.
        for base in ["http://h?q=1", "/relative", "h:80", "not a url"] {
            assert!(Origin::parse(base).is_none(), "{base}");
        }
    }

    /// A call through [`SilenceTimeout`] (300 ms) to a service that answers after `after`,
    /// touching the request's progress every `every` meanwhile (bytes of its body going
    /// out) when set.
    async fn silence(after: Duration, every: Option<Duration>) -> Result<&'static str, ()> {
        let progress = Progress::new();
        progress.touch();
        let body = progress.clone();
        let slow = tower::service_fn(move |_: Request<()>| {
            let progress = body.clone();
            async move {
                let started = tokio::time::Instant::now();
                while started.elapsed() < after {
                    tokio::time::sleep(every.unwrap_or(Duration::from_millis(20))).await;
                    if every.is_some() {
                        progress.touch();
                    }
                }
                Ok::<_, std::convert::Infallible>("answered")
            }
        });
        let mut svc = SilenceTimeout {
            inner: slow,
            timeout: Duration::from_millis(300),
            progress,
        };
        match tower::Service::call(&mut svc, Request::new(())).await {
            Ok(answer) => Ok(answer),
            Err(Silent::Silent) => Err(()),
            Err(Silent::Inner(never)) => match never {},
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_upstream_timeout_counts_silence_not_time() {
        // On tokio's paused clock, which moves on only when every task waits: the
        // durations below are exact, whatever the machine's load.
        // Three timeouts long, with bytes moving every 50 ms: answered.
        let started = tokio::time::Instant::now();
        let moving = Some(Duration::from_millis(50));
        assert_eq!(
            silence(Duration::from_millis(900), moving).await,
            Ok("answered")
        );
        assert!(started.elapsed() >= Duration::from_millis(900));
        // Silent: cut after the timeout, not before, and long before the answer.
        let started = tokio::time::Instant::now();
        assert_eq!(silence(Duration::from_secs(5), None).await, Err(()));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took <= Duration::from_millis(320),
            "{took:?}"
        );
        // An answer within the timeout.
        assert_eq!(silence(Duration::ZERO, None).await, Ok("answered"));
    }
}
