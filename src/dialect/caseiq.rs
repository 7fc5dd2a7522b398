//! Case IQ: `POST /api-public/1.0/save_file`, multipart with `caseId` (a UUID),
//! `description`, `templateLocale`, repeated `bulkTags[]`, and `file`, which must be the
//! last part. Clients first exchange a client secret for a bearer token at
//! `POST /auth/oauth2/token` (OAuth2 client credentials); casegate serves that endpoint
//! for Case IQ fronts, issuing signed, expiring tokens of its own.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use super::wire::{self, MultipartBody};
use super::{Answer, AuthKind, BackCtx, Dialect, DialectId, FrontAuth, Operation, Outbound, Reply};
use crate::error::{json_response, Body, Error};
use crate::inbound::{self, BodyStream, FormSpec, Inbound, Limits};
use crate::secret::{ct_any, ct_eq, Secret};
use crate::upload::{split_ext, Attachment, Field, Kind, Kinds, Outcome, UploadMeta, UploadResult};

pub struct CaseIq;

/// Largest token request body read.
const MAX_TOKEN_BODY: usize = 16 * 1024;
/// Token lifetime when the client names none, and the largest it may ask for.
const DEFAULT_TTL: u64 = 600;
const MAX_TTL: u64 = 3600;

impl Dialect for CaseIq {
    fn id(&self) -> DialectId {
        DialectId::Caseiq
    }

    fn as_dyn(&self) -> &dyn Dialect {
        self
    }

    fn recognize(&self, path: &str) -> Option<Operation> {
        match path {
            "/api-public/1.0/save_file" => Some(Operation::Upload {
                case_id: None,
                space: None,
            }),
            "/auth/oauth2/token" => Some(Operation::Token),
            _ => None,
        }
    }

    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error> {
        match wire::authorization(parts, "bearer") {
            Some(t) if verify_token(t, auth, now_secs()) => Ok(()),
            Some(_) => Err(Error::unauthorized(
                "The access token is invalid or expired.",
            )),
            None => Err(Error::unauthorized("An access token is required.")),
        }
    }

    fn read_upload(
        &self,
        parts: &Parts,
        _op: &Operation,
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

    fn render_success(&self, o: &Outcome<'_>) -> Response<Body> {
        let a = &o.result.attachment;
        let name = a
            .name
            .clone()
            .or_else(|| o.meta.file_name.clone())
            .unwrap_or_default();
        let stem = split_ext(&name).0.to_string();
        let body = json!({
            "id": a.id.clone().unwrap_or_default(),
            "name": name,
            "nameWithoutExtension": stem,
            "encoding": o.result.encoding.clone().unwrap_or_else(|| "7bit".into()),
            "mimeType": a.content_type.clone().unwrap_or_else(|| o.content_type.to_string()),
            "objectId": o.meta.case_id.clone().unwrap_or_default(),
            "sizeBytes": a.size.unwrap_or(o.size),
            "createdDate": a.created_at.clone().unwrap_or_else(|| o.now.to_string()),
        });
        json_response(StatusCode::OK, &body)
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

    fn serve_other(&self, op: Operation, parts: Parts, body: BodyStream, auth: FrontAuth) -> Reply {
        Box::pin(async move {
            match op {
                Operation::Token => token_endpoint(&parts, body, &auth).await,
                Operation::Upload { .. } => {
                    crate::error::respond(&CaseIq, &Error::not_found("Not Found"))
                }
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
        let mut fields: Vec<(&str, &str)> =
            vec![("caseId", meta.case_id.as_deref().unwrap_or_default())];
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

    fn read_stored(&self, body: &[u8], meta: &UploadMeta, ctx: &BackCtx<'_>) -> Answer {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Answer::StoredUnreadable("the answer is not JSON".into());
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let Some(id) = v.get("id").and_then(crate::upload::id_text) else {
            return Answer::StoredUnreadable("the answer has no id".into());
        };
        let url = format!(
            "{}/api-public/1.0/attachment/{}/attachment",
            ctx.base_url,
            wire::encode_segment(&id)
        );
        Answer::Stored(Box::new(UploadResult {
            case_id: s("objectId"),
            attachment: Attachment {
                id: Some(id),
                name: s("name"),
                content_type: s("mimeType"),
                size: v.get("sizeBytes").and_then(Value::as_u64),
                created_at: s("createdDate"),
                url: Some(url),
            },
            encoding: s("encoding"),
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

fn signature(key: &Secret, route: &str, exp: u64, nonce: &str) -> String {
    // HMAC takes keys of any length; were it ever to refuse one, a random signature
    // makes every token fail to verify rather than pass.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) else {
        return uuid::Uuid::new_v4().simple().to_string();
    };
    mac.update(format!("{TOKEN_PREFIX}.{route}.{exp}.{nonce}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Issues an access token for the route, valid `ttl` seconds from `now`.
fn issue_token(auth: &FrontAuth, ttl: u64, now: u64) -> String {
    let exp = now + ttl;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature(&auth.signing_key, &auth.route, exp, &nonce);
    format!("{TOKEN_PREFIX}.{exp}.{nonce}.{sig}")
}

/// True when `token` was issued for this route with its key and has not expired.
fn verify_token(token: &str, auth: &FrontAuth, now: u64) -> bool {
    let mut parts = token.split('.');
    let (Some(prefix), Some(exp), Some(nonce), Some(sig), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Ok(exp_n) = exp.parse::<u64>() else {
        return false;
    };
    let expected = signature(&auth.signing_key, &auth.route, exp_n, nonce);
    let good = ct_eq(sig.as_bytes(), expected.as_bytes());
    prefix == TOKEN_PREFIX && good && exp_n > now
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
    let form =
        wire::content_type_essence(parts).as_deref() == Some("application/x-www-form-urlencoded");
    let req: Value = if form {
        let text = String::from_utf8_lossy(&buf);
        let mut m = serde_json::Map::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if let (Some(k), Some(v)) = (wire::percent_decode(k), wire::percent_decode(v)) {
                m.insert(k, Value::from(v));
            }
        }
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
        if !ct_any(secret, &auth.tokens) {
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
    use super::*;

    fn auth(route: &str, key: &str) -> FrontAuth {
        FrontAuth {
            tokens: vec![Secret::new("s3cret")],
            signing_key: Secret::new(key),
            route: route.into(),
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
