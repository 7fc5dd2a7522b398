//! HTTP plumbing shared by the four emulated APIs: the response body type and response
//! builders, file downloads (chunked bodies, `Range`), the request body handle (stream,
//! collect, drain), multipart forms read with multer, order-preserving JSON objects, and
//! small parsing helpers (path segments, query strings, credentials, timestamps). Nothing
//! here knows a dialect.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::SizeHint;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The error of an answer's body: an injected fault cutting the connection. hyper drops a
/// connection whose answer body fails, without answering (before the head) or mid-body.
#[derive(Debug)]
pub(super) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

/// Every answer's body: whole, chunked, streamed, never-ending or cut off (faults).
pub(super) type Body = UnsyncBoxBody<Bytes, Dropped>;
/// Every answer.
pub(super) type Resp = Response<Body>;

/// A body holding `data` in one piece.
pub(super) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from `chunks`.
pub(super) fn streamed(chunks: impl Stream<Item = Bytes> + Send + 'static) -> Body {
    streamed_fallible(chunks.map(Ok))
}

/// A body streamed from `chunks`, cut off (the connection dropped) at the first `Err`.
pub(super) fn streamed_fallible(
    chunks: impl Stream<Item = Result<Bytes, Dropped>> + Send + 'static,
) -> Body {
    StreamBody::new(chunks.map(|c| c.map(Frame::data))).boxed_unsync()
}

/// How big the slices of a download body are.
pub(super) const DOWNLOAD_CHUNK: usize = 64 << 10;

/// A body that hands out `Bytes` in slices of at most [`DOWNLOAD_CHUNK`] (sharing the
/// buffer, no copying), its exact length known, so a download is many frames that a fault
/// can cut and a slow client reads at its own pace.
struct Chunks(Bytes);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Dropped;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Dropped>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.0.len().min(DOWNLOAD_CHUNK);
        Poll::Ready(Some(Ok(Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

/// `data` as a chunked body of known length.
pub(super) fn chunked(data: Bytes) -> Body {
    Chunks(data).boxed_unsync()
}

/// An answer with a fixed body and content type.
pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// 204 with no body.
pub(super) fn no_content() -> Resp {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// A JSON answer.
pub(super) fn json(status: StatusCode, value: &Value) -> Resp {
    respond(status, "application/json", value.to_string())
}

/// How a dialect serves downloads.
#[derive(Clone, Copy, Debug)]
pub(super) struct DownloadStyle {
    /// Honours `Range` (206, 416) and says so (`Accept-Ranges: bytes`).
    pub ranges: bool,
    /// Serves images `inline` rather than as attachments.
    pub inline_images: bool,
}

/// A stored file as a download answer, streamed in chunks: 200 with the whole file or, when
/// the style honours ranges, 206 with the one range a `Range` header asks for, or 416 (the
/// body from `error`, in the dialect's form) when that range selects nothing. Every answer
/// but the 416 carries the file's type, `Content-Length` and `Content-Disposition`, and the
/// bytes it sends as a [`Served`] extension.
pub(super) fn download(
    file: &super::StoredFile,
    parts: &Parts,
    style: DownloadStyle,
    error: impl FnOnce(StatusCode, &str) -> Resp,
) -> Resp {
    let total = file.data.len() as u64;
    let range = match header(parts, "range") {
        Some(range) if style.ranges => parse_range(range, total),
        _ => Range::Whole,
    };
    let (status, served) = match range {
        Range::Whole => (StatusCode::OK, file.data.clone()),
        Range::Part(first, last) => {
            // Both within the file: `parse_range` caps them at `total - 1`.
            let (first, last) = (first as usize, last as usize);
            (StatusCode::PARTIAL_CONTENT, file.data.slice(first..=last))
        }
        Range::Unsatisfiable => {
            let status = StatusCode::RANGE_NOT_SATISFIABLE;
            let mut resp = error(status, reason(status));
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                resp.headers_mut().insert(CONTENT_RANGE, value);
            }
            return resp;
        }
    };
    let mut resp = Response::new(chunked(served.clone()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let inline = style.inline_images && file.content_type.starts_with("image/");
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(served.len() as u64));
    if let Ok(disposition) = HeaderValue::from_str(&content_disposition(&file.name, inline)) {
        headers.insert(CONTENT_DISPOSITION, disposition);
    }
    if style.ranges {
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if let Range::Part(first, last) = range {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/{total}")) {
            headers.insert(CONTENT_RANGE, value);
        }
    }
    resp.extensions_mut().insert(Served(served));
    resp
}

/// `attachment; filename="..."` (or `inline`), with an RFC 6266 `filename*` when the name is
/// not plain ASCII: the header casegate writes too (a format, not a translation).
pub(super) fn content_disposition(name: &str, inline: bool) -> String {
    crate::codec::disposition::download_header(inline, name)
}

/// The bytes a download answer sends (the whole file, or the range asked for), kept in the
/// answer's extensions: faults that spoil a download send these differently.
#[derive(Clone, Debug)]
pub(super) struct Served(pub Bytes);

/// What a `Range` header asks of a file of a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Range {
    /// No usable range (absent, malformed, another unit, several ranges): the whole file.
    Whole,
    /// One satisfiable range: the first and last byte, inclusive, within the file.
    Part(u64, u64),
    /// A well-formed single range that selects nothing of the file (416).
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` (RFC 9110 section 14.1.2) against a
/// file of `total` bytes. Anything else, several ranges included, is [`Range::Whole`]: a
/// server may ignore a Range header.
pub(super) fn parse_range(header: &str, total: u64) -> Range {
    let Some((unit, set)) = header.trim().split_once('=') else {
        return Range::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Range::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Longer than u64: as good as infinite.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    let (first, last) = (first.trim(), last.trim());
    let (from, to) = match (first, last) {
        // bytes=-n: the last n bytes.
        ("", last) => match number(last) {
            None => return Range::Whole,
            Some(0) => return Range::Unsatisfiable,
            Some(_) if total == 0 => return Range::Unsatisfiable,
            Some(n) => (total - n.min(total), total - 1),
        },
        // bytes=a-: from a to the end.
        (first, "") => match number(first) {
            Some(a) => (a, u64::MAX),
            None => return Range::Whole,
        },
        // bytes=a-b.
        (first, last) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => (a, b),
            _ => return Range::Whole,
        },
    };
    if from >= total {
        Range::Unsatisfiable
    } else {
        Range::Part(from, to.min(total - 1))
    }
}

/// The standard reason phrase of `status`, or "Unknown".
pub(super) fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Unknown")
}

/// The request body, shared between the handler (which may hand a stream of it to multer)
/// and the server, which drains whatever the handler left unread before answering, so a
/// client still sending its upload reads the answer instead of a broken pipe.
#[derive(Clone)]
pub(super) struct ReqBody(Arc<tokio::sync::Mutex<Incoming>>);

impl ReqBody {
    pub(super) fn new(body: Incoming) -> Self {
        ReqBody(Arc::new(tokio::sync::Mutex::new(body)))
    }

    /// Reads and discards the rest of the body; returns how many bytes that was.
    pub(super) async fn drain(&self) -> u64 {
        self.read_up_to(u64::MAX).await
    }

    /// Reads and discards the rest of the body, keeping its first and last bytes (fast
    /// mode's uploads).
    pub(super) async fn drain_sampled(&self) -> super::fast::Sample {
        let mut body = self.0.lock().await;
        let mut sample = super::fast::Sample::default();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                sample.push(data);
            }
        }
        sample
    }

    /// Reads and discards until at least `limit` bytes were read or the body ended.
    pub(super) async fn read_up_to(&self, limit: u64) -> u64 {
        let mut body = self.0.lock().await;
        let mut read = 0u64;
        while read < limit {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        read += data.len() as u64;
                    }
                }
                _ => break,
            }
        }
        read
    }

    /// The whole body in memory.
    pub(super) async fn collect(&self) -> Result<Bytes, hyper::Error> {
        let mut body = self.0.lock().await;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    }

    /// The body's data chunks as a stream (what multer reads).
    pub(super) fn stream(
        &self,
    ) -> impl Stream<Item = Result<Bytes, hyper::Error>> + Send + 'static {
        futures_util::stream::unfold(self.clone(), |body| async move {
            loop {
                let frame = body.0.lock().await.frame().await;
                match frame {
                    None => return None,
                    Some(Err(e)) => return Some((Err(e), body)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), body));
                        }
                    }
                }
            }
        })
    }
}

/// One part of a multipart form, read whole.
pub(super) struct Part {
    pub name: String,
    /// The `filename` of its Content-Disposition, when it has one (a file part).
    pub filename: Option<String>,
    /// The essence of its Content-Type header, when it has one.
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Part {
    /// The part's bytes as text (lossy), for text fields.
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Why a multipart form could not be read.
#[derive(Debug)]
pub(super) enum FormError {
    /// The request's Content-Type is not multipart/form-data.
    NotMultipart,
    /// The body is not a well-formed multipart stream (or its boundary is missing).
    Broken(String),
    /// A part exceeded the limit its caller set; the rest of the body was read and discarded.
    TooLarge { limit: u64 },
}

/// Whether the request's Content-Type is `essence` (type and subtype, any parameters;
/// case-insensitive).
pub(super) fn has_content_type(parts: &Parts, essence: &mime::Mime) -> bool {
    content_type(parts).is_some_and(|m| m.essence_str() == essence.essence_str())
}

/// The request's Content-Type, when it has a well-formed one.
fn content_type(parts: &Parts) -> Option<mime::Mime> {
    header(parts, CONTENT_TYPE.as_str())?.parse().ok()
}

/// Reads every part of a multipart/form-data body, in order. `limit(name, filename)` may cap
/// a part's size; a part over its cap makes the whole form [`FormError::TooLarge`].
pub(super) async fn read_form(
    parts: &Parts,
    body: ReqBody,
    limit: impl Fn(&str, Option<&str>) -> Option<u64> + Send,
) -> Result<Vec<Part>, FormError> {
    let Some(content_type) =
        content_type(parts).filter(|m| m.essence_str() == mime::MULTIPART_FORM_DATA.essence_str())
    else {
        return Err(FormError::NotMultipart);
    };
    let boundary = content_type
        .get_param(mime::BOUNDARY)
        .ok_or_else(|| FormError::Broken("multipart boundary not found".to_owned()))?;
    let mut multipart = multer::Multipart::new(body.stream(), boundary.as_str());
    let broken = |e: multer::Error| FormError::Broken(e.to_string());
    let mut form = Vec::new();
    let mut too_large = None;
    while let Some(mut field) = multipart.next_field().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.essence_str().to_owned());
        let cap = limit(&name, filename.as_deref());
        let mut data = BytesMut::new();
        while let Some(chunk) = field.chunk().await.map_err(broken)? {
            if too_large.is_some() {
                continue;
            }
            data.extend_from_slice(&chunk);
            if let Some(cap) = cap.filter(|&cap| data.len() as u64 > cap) {
                too_large = Some(cap);
                data = BytesMut::new();
            }
        }
        form.push(Part {
            name,
            filename,
            content_type,
            data: data.freeze(),
        });
    }
    match too_large {
        Some(limit) => Err(FormError::TooLarge { limit }),
        None => Ok(form),
    }
}

/// A JSON object with its members in the order they were sent (serde_json's own map sorts
/// them), so [`super::StoredFile::fields`] can keep the client's order.
pub(super) struct Object(pub Vec<(String, Value)>);

impl Object {
    /// Parses `bytes` as a JSON object; `None` for invalid JSON or another JSON type.
    pub(super) fn parse(bytes: &[u8]) -> Option<Object> {
        serde_json::from_slice(bytes).ok()
    }

    /// The member `key` (the last one, if sent twice); JSON `null` counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    /// The members other than `skip` as text fields: non-null scalars only, strings
    /// unquoted, numbers and booleans as their JSON text.
    pub(super) fn text_fields(&self, skip: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| k != skip)
            .filter_map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((k.clone(), text))
            })
            .collect()
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Object(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// The path's segments, percent-decoded (invalid escapes kept as they are, invalid UTF-8
/// replaced): `/api/v4/cases/1/files` is `["api", "v4", "cases", "1", "files"]`.
pub(super) fn segments(path: &str) -> Vec<String> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// The query string's parameters, decoded as a form (`+` is a space), in order.
pub(super) fn query(parts: &Parts) -> Vec<(String, String)> {
    let query = parts.uri.query().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The last value of the query parameter `name`.
pub(super) fn query_param(parts: &Parts, name: &str) -> Option<String> {
    query(parts)
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The header `name` as text, when present and visible ASCII.
pub(super) fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The credentials of `Authorization: <scheme> <credentials>` (scheme case-insensitive).
pub(super) fn authorization<'a>(parts: &'a Parts, scheme: &str) -> Option<&'a str> {
    let value = header(parts, "authorization")?.trim();
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// `user:password` from `Authorization: Basic ...`.
pub(super) fn basic_credentials(parts: &Parts) -> Option<String> {
    let encoded = authorization(parts, "Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(decoded).ok()
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub(super) fn now_seconds() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(super) fn now_millis() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Lowercase hex SHA-256 of `data`.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    crate::codec::hex(&Sha256::digest(data))
}

/// Lowercase hex MD5 of `data`.
pub(super) fn md5_hex(data: &[u8]) -> String {
    crate::codec::hex(&md5::Md5::digest(data))
}

/// The extension of a file name (after its last dot, the dot not leading): `"a.tar.gz"` is
/// `Some("gz")`, `".bashrc"` and `"README"` have none.
pub(super) fn extension(name: &str) -> Option<&str> {
    match name.rfind('.') {
        Some(i) if i > 0 && i + 1 < name.len() => Some(&name[i + 1..]),
        _ => None,
    }
}

/// A file name without its last extension: `"a.tar.gz"` is `"a.tar"`.
pub(super) fn without_extension(name: &str) -> &str {
    match extension(name) {
        Some(ext) => &name[..name.len() - ext.len() - 1],
        None => name,
    }
}

/// A file's MIME type: the one `declared` with it, else the one its name's extension
/// suggests, else `application/octet-stream`.
pub(super) fn file_type(declared: Option<&str>, name: &str) -> String {
    let guessed = || {
        let ext = extension(name)?;
        mime_guess::from_ext(ext)
            .first()
            .map(|m| m.essence_str().to_owned())
    };
    declared
        .map(str::to_owned)
        .or_else(guessed)
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// A paging parameter's value: an integer of 1 or more, written in digits only; one too big
/// for u64 is as good as `u64::MAX`. `None` for anything else.
pub(super) fn positive_integer(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX)).filter(|&n| n >= 1)
}

/// An integer path id in its canonical form (`"007"` is `"7"`); `None` unless all digits.
pub(super) fn integer_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, content_type: Option<&str>) -> Parts {
        let mut req = http::Request::get(uri);
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            segments("/a%20b+c/100%/%zz%4/caf%C3%A9/"),
            ["a b+c", "100%", "%zz%4", "café", ""]
        );
        let parts = request("/x?a=1+2&b=%C3%A9%26&flag&a=3&=e", None);
        let pairs = [
            ("a", "1 2"),
            ("b", "é&"),
            ("flag", ""),
            ("a", "3"),
            ("", "e"),
        ];
        assert_eq!(
            query(&parts),
            pairs.map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(query_param(&parts, "a").as_deref(), Some("3"));
        assert_eq!(query_param(&parts, "zz"), None);
    }

    #[test]
    fn content_types() {
        let json = &mime::APPLICATION_JSON;
        for (given, ok) in [
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some("application/json-patch+json"), false),
            (Some("text/plain"), false),
            (Some("garbage"), false),
            (None, false),
        ] {
            assert_eq!(
                has_content_type(&request("/", given), json),
                ok,
                "{given:?}"
            );
        }
    }

    #[test]
    fn ranges() {
        use Range::*;
        for (header, total, expected) in [
            ("bytes=0-4", 10, Part(0, 4)),
            ("bytes=2-", 10, Part(2, 9)),
            ("bytes=-3", 10, Part(7, 9)),
            ("bytes=-30", 10, Part(0, 9)),
            ("bytes=5-100", 10, Part(5, 9)),
            ("BYTES = 9-9", 10, Part(9, 9)),
            ("bytes=99999999999999999999999-", 10, Unsatisfiable),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            ("bytes=4-2", 10, Whole),
            ("bytes=0-1,3-4", 10, Whole),
            ("bytes=-", 10, Whole),
            ("bytes=a-b", 10, Whole),
            ("bytes=+1-2", 10, Whole),
            ("items=0-1", 10, Whole),
            ("bytes 0-1", 10, Whole),
            ("", 10, Whole),
        ] {
            assert_eq!(parse_range(header, total), expected, "{header} of {total}");
        }
    }

    #[test]
    fn names_and_extensions() {
        assert_eq!(extension("a.tar.gz"), Some("gz"));
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("README"), None);
        assert_eq!(extension("trailing."), None);
        assert_eq!(without_extension("a.tar.gz"), "a.tar");
        assert_eq!(without_extension("README"), "README");
        assert_eq!(integer_id("007"), Some(7));
        assert_eq!(integer_id("+7"), None);
        assert_eq!(positive_integer("20"), Some(20));
        assert_eq!(positive_integer("99999999999999999999999"), Some(u64::MAX));
        for bad in ["0", "000", "", "-1", "+1", "1.5", "x", " 1"] {
            assert_eq!(positive_integer(bad), None, "{bad}");
        }
        assert_eq!(integer_id(""), None);
    }

    #[test]
    fn disposition_escapes_names() {
        assert_eq!(
            content_disposition("a.txt", false),
            "attachment; filename=\"a.txt\""
        );
        assert_eq!(
            content_disposition("a.png", true),
            "inline; filename=\"a.png\""
        );
        assert_eq!(
            content_disposition("é \"q\".txt", false),
            "attachment; filename=\"_ _q_.txt\"; filename*=UTF-8''%C3%A9%20%22q%22.txt"
        );
    }

    #[test]
    fn ordered_object_keeps_order() {
        let obj = Object::parse(br#"{"z":1,"a":"x","n":null,"o":{},"b":true,"a":"y"}"#);
        let obj = obj.expect("object");
        assert_eq!(
            obj.text_fields("b"),
            vec![
                ("z".to_owned(), "1".to_owned()),
                ("a".to_owned(), "x".to_owned()),
                ("a".to_owned(), "y".to_owned())
            ]
        );
        assert_eq!(obj.get("a"), Some(&Value::String("y".into())));
        assert_eq!(obj.get("n"), None);
        assert!(Object::parse(b"[1]").is_none());
        assert!(Object::parse(b"{").is_none());
    }
}
