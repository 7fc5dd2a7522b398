//! The four APIs, each in its own file behind one trait.
//!
//! A dialect file knows its API and nothing of the others: it parses its inbound upload
//! into the canonical [`UploadMeta`] plus a stream of file bytes, builds its outbound
//! upload from them, reads its upstream's answers into an [`UploadResult`], and renders
//! successes and errors in its own form. Pairings are never written out: any front works
//! with any back because both sides meet in the canonical types.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::error::{Body, Error};
use crate::inbound::{BodyStream, Inbound, Limits};
use crate::secret::Secret;
use crate::upload::{Kind, Kinds, Outcome, UploadMeta, UploadResult};

pub mod caseiq;
pub mod kibana;
pub mod thalamus;
pub mod tines;

/// The four APIs casegate speaks. Adding a fifth means one new file in `dialect/` and one
/// line in each of `ALL`, `name` and [`get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DialectId {
    Thalamus,
    Tines,
    Caseiq,
    Kibana,
}

impl DialectId {
    pub const ALL: [DialectId; 4] = [
        DialectId::Thalamus,
        DialectId::Tines,
        DialectId::Caseiq,
        DialectId::Kibana,
    ];

    /// The name used in routes.toml and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DialectId::Thalamus => "thalamus",
            DialectId::Tines => "tines",
            DialectId::Caseiq => "caseiq",
            DialectId::Kibana => "kibana",
        }
    }

    pub fn parse(s: &str) -> Option<DialectId> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl std::fmt::Display for DialectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The implementation of a dialect.
pub fn get(id: DialectId) -> &'static dyn Dialect {
    match id {
        DialectId::Thalamus => &thalamus::Thalamus,
        DialectId::Tines => &tines::Tines,
        DialectId::Caseiq => &caseiq::CaseIq,
        DialectId::Kibana => &kibana::Kibana,
    }
}

/// What a request asks of a front dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Attach a file. `case_id` when the path carries it; `space` for Kibana's `/s/{space}`.
    Upload {
        case_id: Option<String>,
        space: Option<String>,
    },
    /// Case IQ's OAuth2 token endpoint (served by casegate itself).
    Token,
}

impl Operation {
    /// The method the operation is served on.
    pub fn method(&self) -> Method {
        Method::POST
    }
}

/// What a route knows to check its clients: the accepted credentials, and the key that
/// signs access tokens casegate issues (Case IQ fronts).
#[derive(Debug, Clone)]
pub struct FrontAuth {
    /// Empty: an open route.
    pub tokens: Vec<Secret>,
    pub signing_key: Secret,
    /// The route's name, bound into issued tokens so one route's token opens no other.
    pub route: String,
}

/// How casegate presents itself to an upstream; config picks the kind from the keys
/// given, each dialect lists the kinds it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `Authorization: Bearer T`.
    Bearer,
    /// OAuth2 client credentials exchanged for a bearer token at `{url}/auth/oauth2/token`.
    ClientCredentials,
    /// `Thalamus-Touchpoint` / `Thalamus-Token` headers.
    TouchpointToken,
    /// `Authorization: ApiKey K`.
    ApiKey,
    /// `Authorization: Basic`.
    Basic,
}

/// The upstream side of a route, as a back dialect needs it.
#[derive(Debug, Clone)]
pub struct BackCtx<'a> {
    /// The upstream's base URL without trailing slash (for download links).
    pub base_url: &'a str,
    /// Kibana space (route's, else the client's).
    pub space: Option<&'a str>,
    /// Kibana owner from the route.
    pub owner: Option<&'a str>,
}

/// The body of an outbound upload, produced around the file's bytes.
pub trait BodyEncoder: Send {
    /// Everything before the file's bytes.
    fn head(&mut self) -> Bytes;
    /// The file's bytes as they go on the wire (for JSON: base64).
    fn data(&mut self, chunk: Bytes) -> Bytes;
    /// Everything after the file. `late` holds the fields that arrived after it.
    fn tail(&mut self, late: &UploadMeta) -> Bytes;
    /// Total body length for a file of `file_len` bytes, when no field can arrive late.
    fn len(&self, file_len: u64) -> u64;
}

/// An outbound upload request, minus credentials.
pub struct Outbound {
    /// Path and query, appended to the upstream's base URL.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Box<dyn BodyEncoder>,
}

/// A small JSON request (the second call that carries a comment).
#[derive(Debug, Clone)]
pub struct JsonCall {
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: serde_json::Value,
}

/// How an upstream's 2xx answer to an upload reads.
#[derive(Debug)]
pub enum Answer {
    /// Stored, and the answer says what it stored.
    Stored(Box<UploadResult>),
    /// Stored, but the answer cannot be read: casegate answers from what it knows.
    StoredUnreadable(String),
    /// Not stored after all (Thalamus `FAILED`).
    Failed(Error),
}

/// A boxed future answering a request.
pub type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// One API, both as a front (served to clients) and as a back (spoken to upstreams).
pub trait Dialect: Send + Sync + 'static {
    fn id(&self) -> DialectId;

    // ---- front ----

    /// What `path` (the route prefix already removed, no query) asks for, if it is one of
    /// this dialect's paths.
    fn recognize(&self, path: &str) -> Option<Operation>;

    /// Checks the client's credential; called only on routes with `client_tokens`.
    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error>;

    /// Starts reading an upload: checks the headers and returns the path's fields with
    /// the stream of the body's fields and file bytes.
    fn read_upload(
        &self,
        parts: &Parts,
        op: &Operation,
        body: BodyStream,
        limits: &Limits,
    ) -> Result<Inbound, Error>;

    /// The largest raw body that can carry a file of `limits.max_file_bytes` (by default
    /// a multipart form's).
    fn max_body_bytes(&self, limits: &Limits) -> u64 {
        limits.multipart_body()
    }

    /// Fields that may still arrive after the file starts.
    fn late_fields(&self) -> Kinds;

    /// The name this dialect's clients give a canonical field (for `Casegate-Dropped`).
    fn field_name(&self, kind: Kind) -> &'static str;

    fn render_success(&self, outcome: &Outcome<'_>) -> Response<Body>;

    /// The dialect's error form for `err` (headers common to all are added by
    /// [`crate::error::respond`]).
    fn render_error(&self, err: &Error) -> Response<Body>;

    /// Serves an operation other than an upload (Case IQ's token endpoint).
    fn serve_other(
        &self,
        _op: Operation,
        _parts: Parts,
        _body: BodyStream,
        _auth: FrontAuth,
    ) -> Reply {
        let resp = crate::error::respond(self.as_dyn(), &Error::not_found("Not Found"));
        Box::pin(async move { resp })
    }

    /// `self` as a trait object (for default methods).
    fn as_dyn(&self) -> &dyn Dialect;

    // ---- back ----

    /// The optional fields this dialect's upstream stores.
    fn carries(&self) -> Kinds;

    /// Fields that must be known before the first byte of the file is sent.
    fn needs_before_file(&self) -> Kinds;

    /// The credential kinds an upstream of this dialect accepts.
    fn auth_kinds(&self) -> &'static [AuthKind];

    /// Builds the upload request from what is known when the file starts.
    fn build_upload(&self, meta: &UploadMeta, ctx: &BackCtx<'_>) -> Result<Outbound, Error>;

    /// Reads a 2xx answer to an upload.
    fn read_stored(&self, body: &[u8], meta: &UploadMeta, ctx: &BackCtx<'_>) -> Answer;

    /// The message in an upstream error body, if it has one.
    fn error_message(&self, body: &[u8]) -> Option<String>;

    /// The second call carrying the comment, for dialects that store comments that way.
    fn comment_call(
        &self,
        _comment: &str,
        _meta: &UploadMeta,
        _result: &UploadResult,
        _ctx: &BackCtx<'_>,
    ) -> Option<JsonCall> {
        None
    }

    /// Reads the second call's 2xx answer into the result (Kibana returns the case);
    /// false when the answer says the comment was not stored after all.
    fn read_comment_answer(&self, _body: &[u8], _result: &mut UploadResult) -> bool {
        true
    }
}

/// The status and message an upstream's non-2xx answer becomes (SPEC section 4).
pub fn upstream_error(back: &dyn Dialect, status: StatusCode, body: &[u8]) -> Error {
    if status.is_server_error() {
        Error::upstream_failed(format!("The case system failed ({}).", status.as_u16()))
    } else {
        Error::upstream_rejected(status, back.error_message(body))
    }
}

/// Shared pieces of the dialects' wire formats.
pub mod wire {
    use super::*;

    /// `application/json` as a header pair.
    pub fn json_content_type() -> (HeaderName, HeaderValue) {
        (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
    }

    /// The request's content type essence, lower-cased (`multipart/form-data`).
    pub fn content_type_essence(parts: &Parts) -> Option<String> {
        let ct = parts
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        Some(
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase(),
        )
    }

    /// The raw content type header, for multipart boundary extraction.
    pub fn content_type(parts: &Parts) -> Option<&str> {
        parts.headers.get(http::header::CONTENT_TYPE)?.to_str().ok()
    }

    /// Requires `multipart/form-data` with a boundary; 415 otherwise.
    pub fn multipart_boundary(parts: &Parts) -> Result<String, Error> {
        let ct = content_type(parts).unwrap_or("");
        if content_type_essence(parts).as_deref() != Some("multipart/form-data") {
            return Err(Error::unsupported_media_type(
                "The request must be sent as multipart/form-data.",
            ));
        }
        multer::parse_boundary(ct)
            .map_err(|_| Error::bad_request("The multipart/form-data boundary is missing."))
    }

    /// A header value, or `None` when absent or not visible ASCII.
    pub fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
        parts.headers.get(name)?.to_str().ok()
    }

    /// The token after `scheme ` in the Authorization header (scheme case-insensitive).
    pub fn authorization<'a>(parts: &'a Parts, scheme: &str) -> Option<&'a str> {
        let v = header(parts, "authorization")?;
        let (s, rest) = v.split_once(' ')?;
        s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(parts: &Parts, name: &str) -> Option<String> {
        let q = parts.uri.query()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == name)
                .then(|| percent_decode(v))
                .flatten()
        })
    }

    /// Decodes `%XX` and `+` (form encoding); `None` if not valid UTF-8 afterwards.
    pub fn percent_decode(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' => {
                    let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(h, 16).ok()?);
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).ok()
    }

    /// Percent-encodes one URL path segment.
    pub fn encode_segment(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Splits a path into its segments, percent-decoded; `None` if a segment does not
    /// decode to UTF-8 or holds a `/`.
    pub fn segments(path: &str) -> Option<Vec<String>> {
        let trimmed = path.strip_prefix('/')?;
        trimmed
            .split('/')
            .map(|s| {
                let d = percent_decode_path(s)?;
                (!d.contains('/')).then_some(d)
            })
            .collect()
    }

    /// Decodes `%XX` only (`+` stays `+` in paths).
    fn percent_decode_path(s: &str) -> Option<String> {
        if !s.contains('%') {
            return Some(s.to_string());
        }
        percent_decode(&s.replace('+', "%2B"))
    }

    /// The Kibana-style `/s/{space}` prefix split off a path.
    pub fn split_space(path: &str) -> (Option<String>, &str) {
        if let Some(rest) = path.strip_prefix("/s/") {
            if let Some(i) = rest.find('/') {
                if let Some(space) = percent_decode_path(&rest[..i]) {
                    if !space.is_empty() {
                        return (Some(space), &rest[i..]);
                    }
                }
            }
        }
        (None, path)
    }

    /// A multipart upload body: text fields, the file part, and fields that may only be
    /// known after the file (sent after it).
    pub struct MultipartBody {
        writer: crate::codec::multipart::Writer,
        head: Bytes,
        head_len: u64,
        late: LateFields,
    }

    /// Fields to send after the file part, from what arrived late.
    pub type LateFields = Box<dyn Fn(&UploadMeta) -> Vec<(&'static str, String)> + Send>;

    impl MultipartBody {
        /// `fields` go before the file part, `late` after it. Returns the encoder and
        /// the request's Content-Type header value.
        pub fn new(
            fields: &[(&str, &str)],
            file_field: &str,
            filename: &str,
            content_type: &str,
            late: LateFields,
        ) -> (Self, HeaderValue) {
            let writer = crate::codec::multipart::Writer::new();
            let mut head = bytes::BytesMut::new();
            for (name, value) in fields {
                writer.text(&mut head, name, value);
            }
            writer.file_start(&mut head, file_field, filename, content_type);
            let ct = HeaderValue::from_str(&writer.content_type())
                .unwrap_or_else(|_| HeaderValue::from_static("multipart/form-data"));
            let head = head.freeze();
            let head_len = head.len() as u64;
            (
                MultipartBody {
                    writer,
                    head,
                    head_len,
                    late,
                },
                ct,
            )
        }
    }

    impl BodyEncoder for MultipartBody {
        fn head(&mut self) -> Bytes {
            std::mem::take(&mut self.head)
        }

        fn data(&mut self, chunk: Bytes) -> Bytes {
            chunk
        }

        fn tail(&mut self, late: &UploadMeta) -> Bytes {
            let mut out = bytes::BytesMut::new();
            self.writer.file_end(&mut out);
            for (name, value) in (self.late)(late) {
                self.writer.text(&mut out, name, &value);
            }
            self.writer.close(&mut out);
            out.freeze()
        }

        fn len(&self, file_len: u64) -> u64 {
            let mut out = bytes::BytesMut::new();
            self.writer.file_end(&mut out);
            for (name, value) in (self.late)(&UploadMeta::default()) {
                self.writer.text(&mut out, name, &value);
            }
            self.writer.close(&mut out);
            self.head_len + file_len + out.len() as u64
        }
    }

    /// No late fields.
    pub fn no_late() -> LateFields {
        Box::new(|_| Vec::new())
    }

    /// A JSON body as a string, for error messages read out of upstream answers: at
    /// most 500 characters, single line.
    pub fn short_message(s: &str) -> Option<String> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let one_line: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(500)
            .collect();
        Some(one_line)
    }
}
