//! The one error type, and the one place it becomes an HTTP answer.
//!
//! Every failure (a client's mistake, an upstream's refusal or silence, casegate's own
//! trouble) is an [`Error`]: a [`Code`] for operators (sent as `Casegate-Error`), the HTTP
//! status SPEC section 4 assigns, a message safe to show the client, and which side was at
//! fault. [`crate::dialect::respond`] renders it in the front dialect's own error form;
//! nothing else turns an error into a response. This module depends on nothing else of
//! casegate's.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

/// The body type of every response casegate sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// The error type of bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A full in-memory response body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response body of pieces held in memory, sent in order, its length known (a Thalamus
/// upload answer: the listed entries are shared with the case's listing, not copied).
pub fn pieces(pieces: Vec<Bytes>) -> Body {
    use http_body_util::BodyExt;
    let left = pieces.iter().map(|p| p.len() as u64).sum();
    Pieces {
        pieces: pieces.into_iter(),
        left,
    }
    .boxed_unsync()
}

struct Pieces {
    pieces: std::vec::IntoIter<Bytes>,
    /// The bytes not yet given.
    left: u64,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let next = this.pieces.by_ref().find(|p| !p.is_empty());
        if let Some(piece) = &next {
            this.left -= piece.len() as u64;
        }
        std::task::Poll::Ready(next.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// What went wrong, as operators see it in the `Casegate-Error` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    Unauthorized,
    TooLarge,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamRejected,
    UpstreamFailed,
    Overloaded,
    LedgerUnavailable,
    Internal,
}

impl Code {
    pub const ALL: [Code; 13] = [
        Code::BadRequest,
        Code::Unauthorized,
        Code::TooLarge,
        Code::UnsupportedMediaType,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::UpstreamUnreachable,
        Code::UpstreamTimeout,
        Code::UpstreamRejected,
        Code::UpstreamFailed,
        Code::Overloaded,
        Code::LedgerUnavailable,
        Code::Internal,
    ];

    /// The code a `Casegate-Error` value names.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Unauthorized => "unauthorized",
            Code::TooLarge => "too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::UpstreamRejected => "upstream_rejected",
            Code::UpstreamFailed => "upstream_failed",
            Code::Overloaded => "overloaded",
            Code::LedgerUnavailable => "ledger_unavailable",
            Code::Internal => "internal",
        }
    }
}

/// Whose fault a failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong (or too much, or too often).
    Client,
    /// The upstream refused, failed, or could not be reached.
    Upstream,
    /// casegate itself (spool disk, a bug).
    Internal,
}

/// A failure on its way to the client. `message` is safe to show: it never holds a
/// secret, a Rust error string or an upstream's raw foreign body.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    pub status: StatusCode,
    pub message: String,
    pub side: Side,
    /// For 405: the methods the path does take (the `Allow` header).
    pub allow: Option<&'static str>,
}

impl Error {
    fn new(code: Code, status: StatusCode, side: Side, message: impl Into<String>) -> Self {
        Error {
            code,
            status,
            message: message.into(),
            side,
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            Code::BadRequest,
            StatusCode::BAD_REQUEST,
            Side::Client,
            message,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            Code::Unauthorized,
            StatusCode::UNAUTHORIZED,
            Side::Client,
            message,
        )
    }

    /// The upload is larger than `max_upload_bytes` (decoded bytes).
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            Code::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            Side::Client,
            format!("The file is larger than the limit of {limit} bytes."),
        )
    }

    /// The raw body is larger than any upload within the limit could be.
    pub fn too_large_body() -> Self {
        Self::new(
            Code::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            Side::Client,
            "The request body is larger than an upload of the largest allowed file can be.",
        )
    }

    /// The client closed its connection, or reset its HTTP/2 stream, before its body
    /// ended: nobody is left to read an answer. Logged and counted with nginx's 499
    /// ("client closed request"), so that clients giving up are not counted as malformed
    /// requests; the code stays `bad_request` (SPEC section 4's set).
    pub fn client_closed() -> Self {
        Self::new(
            Code::BadRequest,
            CLIENT_CLOSED,
            Side::Client,
            "The client closed its request before its body ended.",
        )
    }

    /// The client stopped sending its body.
    pub fn client_timeout() -> Self {
        Self::new(
            Code::BadRequest,
            StatusCode::REQUEST_TIMEOUT,
            Side::Client,
            "The request body stopped arriving.",
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            Code::UnsupportedMediaType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Side::Client,
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, StatusCode::NOT_FOUND, Side::Client, message)
    }

    /// A wrong method for the path; `allow` lists the ones it takes.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            Code::MethodNotAllowed,
            StatusCode::METHOD_NOT_ALLOWED,
            Side::Client,
            "Method Not Allowed",
        );
        e.allow = Some(allow);
        e
    }

    /// An operation the route's upstream cannot do (a delete to Case IQ). Nothing is sent.
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(
            Code::MethodNotAllowed,
            StatusCode::METHOD_NOT_ALLOWED,
            Side::Client,
            message,
        )
    }

    /// The ledger cannot be reached when an upload starts; nothing was sent.
    pub fn ledger_unavailable() -> Self {
        Self::new(
            Code::LedgerUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            Side::Internal,
            "casegate cannot reach its ledger; retry later.",
        )
    }

    /// A `strict` route refuses a field its upstream cannot carry.
    pub fn strict(fields: &[&str]) -> Self {
        Self::new(
            Code::BadRequest,
            StatusCode::UNPROCESSABLE_ENTITY,
            Side::Client,
            format!(
                "The upstream of this route cannot store these fields: {}.",
                fields.join(", ")
            ),
        )
    }

    pub fn overloaded() -> Self {
        Self::new(
            Code::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE,
            Side::Client,
            "casegate is serving as many uploads as it is allowed to; retry later.",
        )
    }

    pub fn upstream_unreachable() -> Self {
        Self::new(
            Code::UpstreamUnreachable,
            StatusCode::BAD_GATEWAY,
            Side::Upstream,
            "The case system could not be reached.",
        )
    }

    pub fn upstream_timeout() -> Self {
        Self::new(
            Code::UpstreamTimeout,
            StatusCode::GATEWAY_TIMEOUT,
            Side::Upstream,
            "The case system did not answer in time.",
        )
    }

    /// The upstream answered 4xx. Its refusals of the request itself (400, 404, 409, 413,
    /// 415, 416, 422, 429) keep their status and message; anything else, notably 401/403 to
    /// casegate's own credentials, is a 502.
    pub fn upstream_rejected(upstream_status: StatusCode, message: Option<String>) -> Self {
        let carried = matches!(
            upstream_status.as_u16(),
            400 | 404 | 409 | 413 | 415 | 416 | 422 | 429
        );
        let (status, message) = if carried {
            let m = message.unwrap_or_else(|| reason(upstream_status).to_string());
            (upstream_status, m)
        } else {
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "The case system refused casegate's request ({}).",
                    upstream_status.as_u16()
                ),
            )
        };
        Self::new(Code::UpstreamRejected, status, Side::Upstream, message)
    }

    /// The upstream answered 5xx, or Thalamus answered `FAILED`.
    pub fn upstream_failed(message: impl Into<String>) -> Self {
        Self::new(
            Code::UpstreamFailed,
            StatusCode::BAD_GATEWAY,
            Side::Upstream,
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            Code::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            Side::Internal,
            message,
        )
    }

    /// The static name of a `Casegate-Error` value (for metrics labels).
    pub fn code_from_str(s: &str) -> Option<&'static str> {
        Code::parse(s).map(Code::as_str)
    }

    /// The standard reason phrase of this error's status.
    pub fn reason(&self) -> &'static str {
        reason(self.status)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for Error {}

/// An error and its causes, `error: cause: its cause`, for a log line: hyper's and
/// hyper-util's errors keep the reason the system gave (`Too many open files`,
/// `Connection refused`) in their source, not in their own text. A cause whose text the
/// line already ends with (an error that prints its source as well) is not repeated.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        // Bounded: a chain is a few errors deep.
        for _ in 0..16 {
            let Some(c) = cause else { break };
            let t = c.to_string();
            if !text.ends_with(&t) {
                text.push_str(": ");
                text.push_str(&t);
            }
            cause = c.source();
        }
        f.write_str(&text)
    }
}

/// nginx's status for a request its client closed before it was answered.
pub const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// The standard reason phrase of a status (nginx's name for its 499).
pub fn reason(status: StatusCode) -> &'static str {
    if status == CLIENT_CLOSED {
        return "Client Closed Request";
    }
    status.canonical_reason().unwrap_or("Error")
}

/// A response with a JSON body.
pub fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<Body> {
    // Sized for a file's answer at once (serde_json starts at 128 bytes and doubles).
    let mut body = Vec::with_capacity(1024);
    if serde_json::to_writer(&mut body, value).is_err() {
        body.clear();
    }
    json_bytes_response(status, body)
}

/// A JSON answer from its bytes, written already.
pub fn json_bytes_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    json_answer(status, full(body))
}

/// A JSON answer from its bytes, written already in pieces ([`pieces`]).
pub fn json_pieces_response(status: StatusCode, body: Vec<Bytes>) -> Response<Body> {
    json_answer(status, pieces(body))
}

fn json_answer(status: StatusCode, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// A response with a plain-text body.
pub fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_status_mapping() {
        for (up, down) in [
            (400, 400),
            (401, 502),
            (403, 502),
            (404, 404),
            (405, 502),
            (413, 413),
            (415, 415),
            (422, 422),
        ] {
            let e = Error::upstream_rejected(StatusCode::from_u16(up).unwrap(), Some("m".into()));
            assert_eq!(e.status.as_u16(), down, "upstream {up}");
            assert_eq!(e.code, Code::UpstreamRejected);
        }
        let e = Error::upstream_rejected(StatusCode::UNAUTHORIZED, Some("secret detail".into()));
        assert!(!e.message.contains("secret detail"));
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("tcp open error")]
        struct Open(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect: {0}")]
        struct Connect(#[source] Open);
        let io = std::io::Error::other("Too many open files");
        assert_eq!(
            Chain(&Connect(Open(io))).to_string(),
            "cannot connect: tcp open error: Too many open files"
        );
        assert_eq!(
            Chain(&Error::not_found("x")).to_string(),
            "not_found (404): x"
        );
    }
}
