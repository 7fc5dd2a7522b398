//! HTTP plumbing shared by the four emulated APIs: the response body type and response
//! builders, the request body handle (stream, collect, drain), multipart forms read with
//! multer, order-preserving JSON objects, and small parsing helpers (path segments, query
//! strings, credentials, timestamps). Nothing here knows a dialect.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Every answer's body: whole, streamed, or never-ending (faults).
pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;
/// Every answer.
pub(super) type Resp = Response<Body>;

/// A body holding `data` in one piece.
pub(super) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

/// A body streamed from `chunks`.
pub(super) fn streamed(chunks: impl Stream<Item = Bytes> + Send + 'static) -> Body {
    StreamBody::new(chunks.map(|c| Ok::<_, Infallible>(Frame::data(c)))).boxed_unsync()
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

/// A JSON answer.
pub(super) fn json(status: StatusCode, value: &Value) -> Resp {
    respond(status, "application/json", value.to_string())
}

/// A stored file's bytes as a download, with its type and name.
pub(super) fn download(file: &super::StoredFile) -> Resp {
    let mut resp = Response::new(full(file.data.clone()));
    let headers = resp.headers_mut();
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_TYPE, content_type);
    if let Ok(disposition) = HeaderValue::from_str(&content_disposition(&file.name)) {
        headers.insert(CONTENT_DISPOSITION, disposition);
    }
    resp
}

/// `attachment; filename="..."`, with an RFC 5987 `filename*` when the name is not plain ASCII.
fn content_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '_',
        })
        .collect();
    if plain == name {
        return format!("attachment; filename=\"{plain}\"");
    }
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}")
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

/// Whether the request's Content-Type essence is `essence` (case-insensitive).
pub(super) fn has_content_type(parts: &Parts, essence: &str) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(essence))
}

/// Reads every part of a multipart/form-data body, in order. `limit(name, filename)` may cap
/// a part's size; a part over its cap makes the whole form [`FormError::TooLarge`].
pub(super) async fn read_form(
    parts: &Parts,
    body: ReqBody,
    limit: impl Fn(&str, Option<&str>) -> Option<u64> + Send,
) -> Result<Vec<Part>, FormError> {
    if !has_content_type(parts, "multipart/form-data") {
        return Err(FormError::NotMultipart);
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| FormError::Broken(e.to_string()))?;
    let mut multipart = multer::Multipart::new(body.stream(), boundary);
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

/// Decodes `%XX` escapes (invalid ones are kept as they are); `plus` also turns `+` into a
/// space, as query strings do.
fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path's segments, percent-decoded: `/api/v4/cases/1/files` is
/// `["api", "v4", "cases", "1", "files"]`.
pub(super) fn segments(path: &str) -> Vec<String> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect()
}

/// The query string's parameters, decoded, in order.
pub(super) fn query(parts: &Parts) -> Vec<(String, String)> {
    parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
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
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9", false), "café");
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
        assert_eq!(integer_id(""), None);
    }

    #[test]
    fn disposition_escapes_names() {
        assert_eq!(
            content_disposition("a.txt"),
            "attachment; filename=\"a.txt\""
        );
        assert_eq!(
            content_disposition("é \"q\".txt"),
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
