//! Case IQ: `POST /api-public/1.0/save_file`, multipart with `caseId` (a UUID),
//! `description`, `templateLocale`, repeated `bulkTags[]`, and `file`, which must be the
//! last part. Clients first exchange a client secret for a bearer token at
//! `POST /auth/oauth2/token` (OAuth2 client credentials); casegate serves that endpoint
//! for Case IQ fronts, issuing signed, expiring tokens of its own. Attachments are read
//! back by id (`GET /api-public/1.0/attachment/{id}`, `.../attachment` for the bytes) and
//! listed by case (`GET /api-public/1.0/attachments?objectId=`); Case IQ has no delete.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hmac::Mac;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::wire::{self, segment as seg, MultipartBody};
use super::{
    by_method, Answer, AuthKind, BackCtx, Call, Dialect, DialectId, FrontAuth, IdKind, Match, Op,
    Outbound, Reply, Request,
};
use crate::codec::json_out;
use crate::codec::json_read::{Reader, Val};
use crate::error::{json_bytes_response, json_response, Body, Error};
use crate::inbound::{self, BodyStream, FormSpec, Inbound, Limits};
use crate::secret::MacKey;
use crate::upload::{
    id_text, split_ext, Attachment, Field, FileRef, FileView, Kind, Kinds, Listing, Outcome, Page,
    UploadMeta, UploadResult,
};

pub struct CaseIq;

/// Largest token request body read.
const MAX_TOKEN_BODY: usize = 16 * 1024;
/// Token lifetime when the client names none, and the largest it may ask for.
const DEFAULT_TTL: u64 = 600;
const MAX_TTL: u64 = 3600;
/// The attachment list's `limit`: 100 unless asked, at most 1000.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

impl Dialect for CaseIq {
    fn id(&self) -> DialectId {
        DialectId::Caseiq
    }

    fn id_kind(&self) -> IdKind {
        IdKind::Uuid
    }

    fn as_dyn(&self) -> &dyn Dialect {
        self
    }

    fn recognize(&self, method: &Method, path: &str) -> Match {
        let Some(segs) = wire::segments(path) else {
            return Match::None;
        };
        let s = wire::segment_strs(&segs);
        let ops = |list: &[(Method, Op)], id: Option<&str>| {
            by_method(method, list, |op| {
                let r = Request::new(op);
                match id {
                    Some(id) => r.file(id),
                    None => r,
                }
            })
        };
        match s.as_slice() {
            ["auth", "oauth2", "token"] => ops(&[(Method::POST, Op::Token)], None),
            ["api-public", "1.0", "save_file"] => ops(&[(Method::POST, Op::Upload)], None),
            ["api-public", "1.0", "attachments"] => ops(&[(Method::GET, Op::List)], None),
            ["api-public", "1.0", "attachment", id] => ops(&[(Method::GET, Op::Get)], Some(id)),
            ["api-public", "1.0", "attachment", id, "attachment"] => {
                ops(&[(Method::GET, Op::Download)], Some(id))
            }
            _ => Match::None,
        }
    }

    fn owns(&self, path: &str) -> bool {
        path.starts_with("/api-public/") || path.starts_with("/auth/oauth2/")
    }

    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error> {
        match wire::authorization(parts, "bearer") {
            Some(t) if verify_held_token(t, auth, now_secs()) => Ok(()),
            Some(_) => Err(Error::unauthorized(
                "The access token is invalid or expired.",
            )),
            None => Err(Error::unauthorized("An access token is required.")),
        }
    }

    /// The list's case is its `objectId` query parameter; `limit` pages it.
    fn page(&self, _req: &Request, parts: &Parts) -> Result<Page, Error> {
        let size = wire::query_number(parts, "limit")?.unwrap_or(DEFAULT_LIMIT);
        Ok(Page {
            number: 1,
            size: size.min(MAX_LIMIT),
        })
    }

    fn list_case(&self, parts: &Parts) -> Result<String, Error> {
        wire::query_param(parts, "objectId")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Error::bad_request("objectId is required: casegate lists one case's attachments.")
            })
    }

    fn read_upload(
        &self,
        parts: &Parts,
        _req: &Request,
        body: BodyStream,
        limits: &Limits,
    ) -> Result<Inbound, Error> {
        let boundary = wire::multipart_boundary(parts)?;
        let spec = FormSpec {
            file_field: "file",
            file_last: true,
            map: map_field,
        };
        Ok(Inbound {
            meta: UploadMeta::default(),
            events: inbound::multipart(body, boundary, spec, limits),
        })
    }

    fn late_fields(&self) -> Kinds {
        Kinds::NONE
    }

    fn field_name(&self, kind: Kind) -> &'static str {
        match kind {
            Kind::CaseId => "caseId",
            Kind::FileName => "file",
            Kind::DisplayName => "name",
            Kind::Comment => "description",
            Kind::AuthorEmail => "author_email",
            Kind::BlockId => "block_id",
            Kind::Tags => "bulkTags[]",
            Kind::Locale => "templateLocale",
        }
    }

    fn needs_size(&self) -> bool {
        true
    }

    fn render_upload(&self, o: &Outcome) -> Response<Body> {
        self.render_record(&o.file)
    }

    fn render_record(&self, f: &FileView) -> Response<Body> {
        json_bytes_response(StatusCode::OK, record(f).to_json().into_bytes())
    }

    fn render_list(&self, l: &Listing) -> Response<Body> {
        #[derive(serde::Serialize)]
        struct Records<'a> {
            count: usize,
            records: Vec<Record<'a>>,
        }
        let records: Vec<Record<'_>> = l.files.iter().map(record).collect();
        json_response(
            StatusCode::OK,
            &Records {
                count: records.len(),
                records,
            },
        )
    }

    fn render_error(&self, err: &Error) -> Response<Body> {
        let body = json!({
            "name": "SERVICE_ACCOUNT_ERROR",
            "httpstatus": err.status.as_u16(),
            "meta": {"message": err.message},
            "message": status_code_name(err.status),
        });
        json_response(err.status, &body)
    }

    fn serve_own(&self, req: Request, parts: Parts, body: BodyStream, auth: FrontAuth) -> Reply {
        Box::pin(async move {
            match req.op {
                Op::Token => token_endpoint(&parts, body, &auth).await,
                _ => super::respond(&CaseIq, &Error::not_found("Not Found")),
            }
        })
    }

    fn carries(&self) -> Kinds {
        Kinds::of(&[Kind::Comment, Kind::Tags, Kind::Locale])
    }

    fn needs_before_file(&self) -> Kinds {
        Kinds::of(&[
            Kind::CaseId,
            Kind::FileName,
            Kind::Comment,
            Kind::Tags,
            Kind::Locale,
        ])
    }

    fn auth_kinds(&self) -> &'static [AuthKind] {
        &[AuthKind::ClientCredentials, AuthKind::Bearer]
    }

    fn build_upload(&self, meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Result<Outbound, Error> {
        // On the stack for the usual few fields.
        let mut fields: smallvec::SmallVec<[(&str, &str); 4]> =
            smallvec::smallvec![("caseId", meta.case_id.as_deref().unwrap_or_default())];
        if let Some(d) = &meta.comment {
            fields.push(("description", d));
        }
        if let Some(l) = &meta.locale {
            fields.push(("templateLocale", l));
        }
        for t in &meta.tags {
            fields.push(("bulkTags[]", t));
        }
        let name = meta.file_name.as_deref().unwrap_or("file");
        let (enc, ct) =
            MultipartBody::new(&fields, "file", name, &meta.content_type(), wire::no_late());
        Ok(Outbound {
            path: "/api-public/1.0/save_file".into(),
            headers: vec![(http::header::CONTENT_TYPE, ct)],
            body: Box::new(enc),
        })
    }

    fn read_stored(&self, body: &[u8], meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Answer {
        let attachment = match read_record_bytes(body, "answer") {
            Ok(a) => a,
            Err(why) => return Answer::StoredUnreadable(why),
        };
        Answer::Stored(Box::new(UploadResult {
            attachment,
            comment_stored: meta.comment.is_some(),
            ..Default::default()
        }))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let m = v
            .pointer("/meta/message")
            .and_then(Value::as_str)
            .or_else(|| v.get("message").and_then(Value::as_str))?;
        wire::short_message(m)
    }

    fn record_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::get(format!(
            "/api-public/1.0/attachment/{}",
            seg(&file.id)
        )))
    }

    fn read_record(&self, body: &[u8], _ctx: &BackCtx<'_>) -> Result<Attachment, String> {
        read_record_bytes(body, "record")
    }

    fn download_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Call {
        Call::get(format!(
            "/api-public/1.0/attachment/{}/attachment",
            seg(&file.id)
        ))
    }
}

/// An attachment record as Case IQ renders it.
/// An attachment record as Case IQ writes it, serialized straight from the view (the keys
/// in the order serde_json's own maps sort them, as every other answer of casegate's).
#[derive(serde::Serialize)]
struct Record<'a> {
    #[serde(rename = "createdDate")]
    created_date: std::borrow::Cow<'a, str>,
    encoding: &'a str,
    id: &'a str,
    #[serde(rename = "mimeType")]
    mime_type: &'a str,
    name: &'a str,
    #[serde(rename = "nameWithoutExtension")]
    name_without_extension: &'a str,
    #[serde(rename = "objectId")]
    object_id: &'a str,
    #[serde(rename = "sizeBytes")]
    size_bytes: u64,
}

impl Record<'_> {
    /// The record as its derived `Serialize` writes it, written by hand (every upload's
    /// answer is one).
    fn to_json(&self) -> String {
        // The keys, quotes and number take under 160 bytes; escapes are rare.
        let texts = [
            &*self.created_date,
            self.encoding,
            self.id,
            self.mime_type,
            self.name,
            self.name_without_extension,
            self.object_id,
        ];
        let mut out = String::with_capacity(160 + texts.iter().map(|t| t.len()).sum::<usize>());
        let mut o = json_out::Object::new(&mut out);
        o.str("createdDate", &self.created_date)
            .str("encoding", self.encoding)
            .str("id", self.id)
            .str("mimeType", self.mime_type)
            .str("name", self.name)
            .str("nameWithoutExtension", self.name_without_extension)
            .str("objectId", self.object_id)
            .u64("sizeBytes", self.size_bytes);
        o.end();
        out
    }
}

fn record(f: &FileView) -> Record<'_> {
    Record {
        created_date: match &f.created_at {
            Some(at) => at.into(),
            None => crate::upload::now_rfc3339_millis().into(),
        },
        encoding: f.encoding.as_deref().unwrap_or("7bit"),
        id: &f.id,
        mime_type: &f.content_type,
        name: &f.name,
        name_without_extension: split_ext(&f.name).0,
        object_id: &f.case_id,
        size_bytes: f.size.unwrap_or(0),
    }
}

/// An attachment record's fields as Case IQ answers them, each as whatever JSON it holds
/// (read as [`read_record`] reads them), the rest skipped: no JSON tree is built and no
/// text copied for the one record an upload's answer holds.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RecordIn {
    id: Option<Value>,
    #[serde(rename = "objectId")]
    object_id: Option<Value>,
    name: Option<Value>,
    #[serde(rename = "mimeType")]
    mime_type: Option<Value>,
    #[serde(rename = "sizeBytes")]
    size_bytes: Option<Value>,
    #[serde(rename = "createdDate")]
    created_date: Option<Value>,
    encoding: Option<Value>,
}

/// An upload's answer or a record call's (`what` names it in the error), from its bytes:
/// read in place ([`record_in_place`]) when it can be, else as typed members
/// ([`RecordIn`]), and a key given twice (which a struct refuses) or anything else unusual
/// through [`read_record`]. All three read the same answer the same way.
fn read_record_bytes(body: &[u8], what: &str) -> Result<Attachment, String> {
    if let Some(read) = record_in_place(body) {
        return read.ok_or_else(|| format!("the {what} has no id"));
    }
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let fast = is_object
        .then(|| wire::from_json::<RecordIn>(body).ok())
        .flatten();
    let Some(r) = fast else {
        let v: Value = wire::from_json(body).map_err(|_| format!("the {what} is not JSON"))?;
        return read_record(&v).ok_or_else(|| format!("the {what} has no id"));
    };
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let id = match r.id {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("the {what} has no id")),
    };
    Ok(Attachment {
        id: Some(id),
        case_id: text(r.object_id),
        name: text(r.name),
        content_type: text(r.mime_type),
        size: r.size_bytes.as_ref().and_then(Value::as_u64),
        created_at: text(r.created_date),
        encoding: text(r.encoding),
        ..Default::default()
    })
}

/// [`read_record_bytes`] for an answer whose members a [`Reader`] reads in place (no
/// escape in a text it keeps, no id or size written other than as a plain integer; a key
/// given twice keeps its last value, as the tree does): `Some(None)` when it has no id,
/// `None` when it is read the slower way.
fn record_in_place(body: &[u8]) -> Option<Option<Attachment>> {
    let mut a = Attachment::default();
    let mut r = Reader::new(body)?;
    while let Some(key) = r.next_key()? {
        let field = match key {
            "objectId" => &mut a.case_id,
            "name" => &mut a.name,
            "mimeType" => &mut a.content_type,
            "createdDate" => &mut a.created_at,
            "encoding" => &mut a.encoding,
            "id" => {
                a.id = r.value()?.id_text()?;
                continue;
            }
            "sizeBytes" => {
                a.size = match r.value()? {
                    Val::Int(n) => Some(n),
                    Val::Num => return None,
                    _ => None,
                };
                continue;
            }
            _ => {
                r.skip()?;
                continue;
            }
        };
        *field = r.value()?.text()?;
    }
    r.finish()?;
    Some(a.id.is_some().then_some(a))
}

/// Reads an attachment record (an upload's answer, a record, a list entry).
fn read_record(v: &Value) -> Option<Attachment> {
    let id = v.get("id").and_then(id_text)?;
    Some(Attachment {
        id: Some(id),
        case_id: wire::text(v, "objectId"),
        name: wire::text(v, "name"),
        content_type: wire::text(v, "mimeType"),
        size: v.get("sizeBytes").and_then(Value::as_u64),
        created_at: wire::text(v, "createdDate"),
        encoding: wire::text(v, "encoding"),
        ..Default::default()
    })
}

fn map_field(name: &str, value: String) -> Result<Option<Field>, Error> {
    Ok(match name {
        "caseId" => Some(Field::CaseId(value)),
        "description" if value.is_empty() => None,
        "description" => Some(Field::Comment(value)),
        "templateLocale" if value.is_empty() => None,
        "templateLocale" => Some(Field::Locale(value)),
        "bulkTags[]" => Some(Field::Tag(value)),
        _ => None,
    })
}

/// Case IQ's error code for a status.
fn status_code_name(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "BAD_REQUEST".into(),
        401 => "UNAUTHORIZED".into(),
        403 => "FORBIDDEN".into(),
        404 => "NOT_FOUND".into(),
        409 => "CONFLICT".into(),
        413 => "PAYLOAD_TOO_LARGE".into(),
        429 => "TOO_MANY_REQUESTS".into(),
        500 => "INTERNAL_SERVER_ERROR".into(),
        502 => "BAD_GATEWAY".into(),
        504 => "GATEWAY_TIMEOUT".into(),
        _ => crate::error::reason(status)
            .to_ascii_uppercase()
            .replace([' ', '-'], "_"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const TOKEN_PREFIX: &str = "cgt1";

/// The HMAC-SHA256 of `cgt1.{route}.{exp}.{nonce}` under the route's key; None when the
/// key could not be used (then nothing is signed and nothing verifies).
fn signature(key: &MacKey, route: &str, exp: u64, nonce: &str) -> Option<[u8; 32]> {
    let mut mac = key.mac()?;
    // Fed in pieces (no string built).
    let mut digits = [0u8; 20];
    for piece in [
        TOKEN_PREFIX.as_bytes(),
        b".",
        route.as_bytes(),
        b".",
        decimal(exp, &mut digits),
        b".",
        nonce.as_bytes(),
    ] {
        mac.update(piece);
    }
    Some(mac.finalize().into_bytes().into())
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Issues an access token for the route, valid `ttl` seconds from `now`.
fn issue_token(auth: &FrontAuth, ttl: u64, now: u64) -> String {
    let exp = now + ttl;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    // A key HMAC refused signs with random text, which verifies against nothing.
    let sig = signature(&auth.signing_key, &auth.route, exp, &nonce).map_or_else(
        || uuid::Uuid::new_v4().simple().to_string(),
        |sig| crate::codec::hex(&sig),
    );
    format!("{TOKEN_PREFIX}.{exp}.{nonce}.{sig}")
}

/// True when `token` was issued for this route with its key and has not expired: checked
/// by its signature ([`token_expiry`]), or by comparing it with the one this thread holds
/// once it has verified ([`crate::secret::verified`]).
fn verify_held_token(token: &str, auth: &FrontAuth, now: u64) -> bool {
    crate::secret::verified(auth.check, token, now, || token_expiry(token, auth))
}

/// The expiry of `token` when it was issued for this route with its key (expired or not);
/// else None.
fn token_expiry(token: &str, auth: &FrontAuth) -> Option<u64> {
    // Four parts between three dots, found as bytes (a `char` split decodes each one).
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let (Some(a), Some(b), Some(c), None) = (dots.next(), dots.next(), dots.next(), dots.next())
    else {
        return None;
    };
    let (prefix, exp, nonce, sig) = (
        &token[..a],
        &token[a + 1..b],
        &token[b + 1..c],
        &token[c + 1..],
    );
    // The expiry as issued, in plain decimal: `+1060` or `01060` would parse to the same
    // number, and so carry its signature, in another spelling.
    let mut digits = [0u8; 20];
    let exp_n = exp
        .parse::<u64>()
        .ok()
        .filter(|&n| decimal(n, &mut digits) == exp.as_bytes())?;
    // The signature is read back from its lowercase hex (any other spelling is refused,
    // as the text comparison did) and its 32 bytes compared in constant time.
    let expected = signature(&auth.signing_key, &auth.route, exp_n, nonce)?;
    let presented = crate::codec::unhex::<32>(sig)?;
    let good = bool::from(subtle::ConstantTimeEq::ct_eq(&presented[..], &expected[..]));
    (prefix == TOKEN_PREFIX && good).then_some(exp_n)
}

/// A token-endpoint answer: JSON with `Cache-Control: no-store` (RFC 6749 section 5.1).
fn token_answer(status: StatusCode, body: Value, code: Option<&'static str>) -> Response<Body> {
    let mut resp = json_response(status, &body);
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Some(code) = code {
        resp.headers_mut()
            .insert("casegate-error", HeaderValue::from_static(code));
    }
    resp
}

fn oauth_error(status: StatusCode, error: &str) -> Response<Body> {
    let code = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "bad_request"
    };
    token_answer(status, json!({ "error": error }), Some(code))
}

/// `POST /auth/oauth2/token`: JSON (as Case IQ documents) or form-encoded (as OAuth2
/// libraries send) `grant_type`, `client_id`, `client_secret`, `ttl`.
async fn token_endpoint(parts: &Parts, mut body: BodyStream, auth: &FrontAuth) -> Response<Body> {
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) if buf.len() + c.len() <= MAX_TOKEN_BODY => buf.extend_from_slice(&c),
            _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
        }
    }
    let req: Value = if wire::has_type(parts, "application/x-www-form-urlencoded") {
        let m: serde_json::Map<String, Value> = form_urlencoded::parse(&buf)
            .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
            .collect();
        Value::Object(m)
    } else {
        match serde_json::from_slice(&buf) {
            Ok(v @ Value::Object(_)) => v,
            _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
        }
    };
    let text = |k: &str| req.get(k).and_then(Value::as_str);
    match text("grant_type") {
        Some("client_credentials") => {}
        Some(_) => return oauth_error(StatusCode::NOT_IMPLEMENTED, "unsupported_grant_type"),
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    }
    let ttl = match req.get("ttl") {
        None | Some(Value::Null) => Some(DEFAULT_TTL),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(_) => None,
    };
    let Some(ttl) = ttl.filter(|t| (1..=MAX_TTL).contains(t)) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if !auth.tokens.is_empty() {
        let secret = text("client_secret").unwrap_or_default();
        if !auth.tokens.matches(secret) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
    }
    let token = issue_token(auth, ttl, now_secs());
    token_answer(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl}),
        None,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_record_written_by_hand_is_what_serde_writes() {
        for (i, text) in crate::codec::json_out::AWKWARD.iter().enumerate() {
            let f = crate::upload::FileView {
                id: text.to_string(),
                case_id: format!("{text}c"),
                name: format!("{text}.tar.gz"),
                content_type: text.to_string(),
                size: Some(u64::MAX >> i),
                created_at: (i % 2 == 0).then(|| text.to_string()),
                encoding: (i % 3 == 0).then(|| text.to_string()),
                ..Default::default()
            };
            let r = super::record(&f);
            assert_eq!(r.to_json(), serde_json::to_string(&r).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn an_answer_read_from_its_bytes_reads_as_its_json_tree_does() {
        let bodies: &[&str] = &[
            r#"{"id":"a1","objectId":"c1","name":"x.txt","mimeType":"text/plain","sizeBytes":5,"createdDate":"2026-12-01T00:00:00.000Z","encoding":"7bit","other":{"deep":[1,2]}}"#,
            r#"  {"id":42,"name":7,"sizeBytes":"5","mimeType":null}"#,
            r#"{"id":"a1","id":"a2","name":"dup"}"#,
            r#"{"id":null,"name":"x"}"#,
            r#"{"id":1.5}"#,
            r#"{"id":{"x":1}}"#,
            r#"{"name":"no id"}"#,
            r#"["a1","c1","x.txt"]"#,
            r#"{"id":"a1""#,
            "not json",
            "",
        ];
        let tree = |body: &str| {
            serde_json::from_slice::<serde_json::Value>(body.as_bytes())
                .map_err(|_| "the record is not JSON".to_string())
                .and_then(|v| read_record(&v).ok_or_else(|| "the record has no id".to_string()))
        };
        for body in bodies {
            assert_eq!(
                super::read_record_bytes(body.as_bytes(), "record"),
                tree(body),
                "{body}"
            );
        }
        assert_eq!(
            super::read_record_bytes(bodies[2].as_bytes(), "answer")
                .unwrap()
                .id
                .as_deref(),
            Some("a2")
        );
        // Generated answers, most of them read in place, the rest the slower ways.
        let mut gen = crate::codec::json_read::gen::Gen::new(
            0x9e37_79b9_7f4a_7c15,
            &[
                "\"id\"",
                "\"objectId\"",
                "\"name\"",
                "\"mimeType\"",
                "\"sizeBytes\"",
                "\"createdDate\"",
                "\"encoding\"",
                "\"other\"",
            ],
        );
        let mut in_place = 0;
        for _ in 0..5_000 {
            let body = gen.body();
            in_place += usize::from(super::record_in_place(body.as_bytes()).is_some());
            assert_eq!(
                super::read_record_bytes(body.as_bytes(), "record"),
                tree(&body),
                "{body}"
            );
        }
        assert!(in_place > 1_000, "{in_place} of 5000 read in place");
    }

    #[test]
    fn records_keep_serde_json_s_key_order() {
        let f = crate::upload::FileView {
            id: "f1".into(),
            case_id: "c1".into(),
            name: "a.tar.gz".into(),
            size: Some(5),
            created_at: Some("2026-12-01T00:00:00.000Z".into()),
            ..Default::default()
        };
        let direct = serde_json::to_string(&record(&f)).unwrap();
        let tree = serde_json::to_value(record(&f)).unwrap();
        assert_eq!(direct, tree.to_string());
        assert_eq!(tree["nameWithoutExtension"], "a.tar");
        assert_eq!(tree["encoding"], "7bit");
    }

    use super::*;
    use crate::secret::{Accepted, Secret};
    use hmac::Hmac;
    use sha2::Sha256;

    /// A token checked by its signature alone, nothing held.
    fn verify_token(token: &str, auth: &FrontAuth, now: u64) -> bool {
        token_expiry(token, auth).is_some_and(|exp| exp > now)
    }

    fn auth(route: &str, key: &str) -> FrontAuth {
        FrontAuth {
            tokens: Accepted::new(&[Secret::new("s3cret")]),
            signing_key: MacKey::new(&Secret::new(key)),
            route: route.into(),
            check: crate::secret::CheckId::fresh(),
        }
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_dotted_text() {
        for exp in [0, 7, 1_700_000_000, u64::MAX] {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"k3y").unwrap();
            mac.update(format!("cgt1.route-a.{exp}.n0nce").as_bytes());
            let want: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let sig = signature(&MacKey::new(&Secret::new("k3y")), "route-a", exp, "n0nce");
            assert_eq!(crate::codec::hex(&sig.unwrap()), want);
        }
    }

    #[test]
    fn tokens_verify_only_for_their_route_key_and_lifetime() {
        let a = auth("r1", "k1");
        let t = issue_token(&a, 60, 1000);
        assert!(verify_token(&t, &a, 1000));
        assert!(verify_token(&t, &a, 1059));
        assert!(!verify_token(&t, &a, 1060), "expired");
        assert!(!verify_token(&t, &auth("r2", "k1"), 1000), "other route");
        assert!(!verify_token(&t, &auth("r1", "k2"), 1000), "other key");
        let forged = t.replacen(".1060.", ".9999.", 1);
        assert!(!verify_token(&forged, &a, 1000), "extended expiry");
        assert!(!verify_token("s3cret", &a, 1000));
        assert!(!verify_token("", &a, 1000));
        // The signature compared whole: shorter, longer, or one digit off.
        let (head, sig) = t.rsplit_once('.').unwrap();
        assert!(!verify_token(&format!("{head}.{}", &sig[..63]), &a, 1000));
        assert!(!verify_token(&format!("{head}.{sig}0"), &a, 1000));
        assert!(!verify_token(&format!("{head}."), &a, 1000));
        let last = if sig.ends_with('0') { '1' } else { '0' };
        assert!(!verify_token(
            &format!("{head}.{}{last}", &sig[..63]),
            &a,
            1000
        ));
        assert!(verify_token(&format!("{head}.{sig}"), &a, 1000));
        // One spelling only, and four parts only.
        assert_ne!(sig.to_uppercase(), sig);
        let upper = format!("{head}.{}", sig.to_uppercase());
        assert!(!verify_token(&upper, &a, 1000), "capital hex");
        assert!(!verify_token(&format!("{t}.x"), &a, 1000), "a fifth part");
        assert!(!verify_token(&format!("x{t}"), &a, 1000), "another prefix");
        for spelling in [".+1060.", ".01060."] {
            let other = t.replacen(".1060.", spelling, 1);
            assert!(!verify_token(&other, &a, 1000), "{spelling}");
        }
    }

    #[test]
    fn a_held_token_opens_only_its_route_and_only_while_it_lasts() {
        let a = auth("r1", "k1");
        let t = issue_token(&a, 60, 1000);
        assert!(verify_held_token(&t, &a, 1000));
        assert!(
            verify_held_token(&t, &a.clone(), 1059),
            "held, by a clone too"
        );
        assert!(!verify_held_token(&t, &a, 1060), "expired");
        assert!(
            !verify_held_token(&t, &auth("r2", "k1"), 1000),
            "other route"
        );
        assert!(!verify_held_token(&t, &auth("r1", "k2"), 1000), "other key");
        assert!(
            verify_held_token(&t, &auth("r1", "k1"), 1000),
            "the same, built again"
        );
        let forged = t.replacen(".1060.", ".9999.", 1);
        assert!(!verify_held_token(&forged, &a, 1000), "extended expiry");
        let (head, sig) = t.rsplit_once('.').unwrap();
        let last = if sig.ends_with('0') { '1' } else { '0' };
        let off = format!("{head}.{}{last}", &sig[..63]);
        assert!(!verify_held_token(&off, &a, 1000), "one digit off");
        assert!(!verify_held_token(&format!("{t}0"), &a, 1000), "longer");
        assert!(!verify_held_token(&t[..t.len() - 1], &a, 1000), "shorter");
        assert!(verify_held_token(&t, &a, 1000), "still held");
    }

    #[test]
    fn status_names() {
        assert_eq!(status_code_name(StatusCode::NOT_FOUND), "NOT_FOUND");
        assert_eq!(
            status_code_name(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "UNSUPPORTED_MEDIA_TYPE"
        );
        assert_eq!(
            status_code_name(StatusCode::SERVICE_UNAVAILABLE),
            "SERVICE_UNAVAILABLE"
        );
        assert_eq!(
            status_code_name(StatusCode::PAYLOAD_TOO_LARGE),
            "PAYLOAD_TOO_LARGE"
        );
    }
}
