//! The four dialects as a client speaks them: for each, the one request body the benchmark
//! uploads, its path and its credentials (README "Try it" and SPEC section 1). The same
//! builder serves both runs of a scenario: a front dialect's request to casegate, and the
//! back dialect's equivalent request straight to the upstream emulator.

use std::fmt;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use casegate::codec::multipart::Writer;
use casegate::dialect::DialectId;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::payload::{Encoding, Payload};
use crate::runner::{self, Download, Upload};
use crate::Res;

/// What clients present to casegate (every route's `client_tokens`).
pub const CLIENT_TOKEN: &str = "bench-client-token";
/// What casegate presents to the upstream emulators (their `--token`).
pub const UPSTREAM_TOKEN: &str = "bench-upstream-token";

/// Case id for upstreams that want a UUID (Case IQ); Kibana takes any string.
const CASE_UUID: &str = "9c235210-6834-11ea-a78c-6ffb38a34414";
/// Case id for upstreams that want an integer (Thalamus, Tines).
const CASE_NUMBER: &str = "42";

/// The owner of Kibana cases (the emulators' default), in Kibana's file download path.
const KIBANA_OWNER: &str = "cases";

const FILE_NAME: &str = "bench.pdf";
const FILE_TYPE: &str = "application/pdf";
const COMMENT: &str = "bench comment";

/// A front dialect routed to a back dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pairing {
    pub front: DialectId,
    pub back: DialectId,
}

impl Pairing {
    pub const fn new(front: DialectId, back: DialectId) -> Self {
        Self { front, back }
    }

    /// The route's name in routes.toml.
    pub fn route_name(self) -> String {
        format!("{}-{}", self.front, self.back)
    }

    /// The route's path prefix.
    pub fn prefix(self) -> String {
        format!("/{}", self.route_name())
    }
}

impl fmt::Display for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.front, self.back)
    }
}

/// The case id a client uses so that the upstream accepts it: casegate passes ids through
/// unchanged (SPEC section 1), and a Case IQ client always sends a UUID.
pub fn case_id(front: DialectId, back: DialectId) -> &'static str {
    match (front, back) {
        (DialectId::Caseiq, _) | (_, DialectId::Caseiq | DialectId::Kibana) => CASE_UUID,
        (_, DialectId::Thalamus | DialectId::Tines) => CASE_NUMBER,
    }
}

/// How a Tines JSON body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinesTail {
    /// `..."file_contents":"...","value":"bench comment"}`.
    Value,
    /// As tapi sends it: `..."value":"bench comment","author_email":null}`.
    ValueAndNulls,
    /// `{"filename":"bench.pdf","value":"bench comment","file_contents":"..."}`: the comment
    /// before the file, so that casegate can stream it to a Case IQ upstream unspooled.
    ValueFirst,
}

/// Where one side of a scenario sends its uploads: a dialect's endpoints at an address
/// (under a path prefix), with the credential and case id that side uses.
#[derive(Debug, Clone)]
pub struct Endpoint {
    dialect: DialectId,
    addr: SocketAddr,
    prefix: String,
    secret: &'static str,
    case_id: &'static str,
}

impl Endpoint {
    /// A client of `pairing`'s route on casegate at `addr`.
    pub fn casegate(addr: SocketAddr, pairing: Pairing) -> Self {
        Self {
            dialect: pairing.front,
            addr,
            prefix: pairing.prefix(),
            secret: CLIENT_TOKEN,
            case_id: case_id(pairing.front, pairing.back),
        }
    }

    /// A client of the upstream emulator of `pairing.back` at `addr`, with the upstream
    /// credentials: the direct baseline.
    pub fn direct(addr: SocketAddr, pairing: Pairing) -> Self {
        Self {
            dialect: pairing.back,
            addr,
            prefix: String::new(),
            secret: UPSTREAM_TOKEN,
            case_id: case_id(pairing.back, pairing.back),
        }
    }

    /// The upload of a `file_len`-byte file in this endpoint's dialect (getting a Case IQ
    /// access token first). `tail` shapes a Tines body and is ignored by the others.
    pub async fn upload(&self, file_len: u64, tail: TinesTail) -> Res<Upload> {
        let p = &self.prefix;
        let case = self.case_id;
        let secret = self.secret;
        let (path, mut headers, (payload, content_type)) = match self.dialect {
            DialectId::Thalamus => (
                format!("{p}/api/v4/cases/{case}/files?touchpoint=bench&token={secret}"),
                Vec::new(),
                multipart(&[], file_len),
            ),
            DialectId::Tines => (
                format!("{p}/api/v2/cases/{case}/files"),
                vec![header(AUTHORIZATION, &format!("Bearer {secret}"))?],
                tines_json(file_len, tail),
            ),
            DialectId::Caseiq => {
                let token = self.caseiq_token().await?;
                (
                    format!("{p}/api-public/1.0/save_file"),
                    vec![header(AUTHORIZATION, &format!("Bearer {token}"))?],
                    multipart(&[("caseId", case), ("description", COMMENT)], file_len),
                )
            }
            DialectId::Kibana => (
                format!("{p}/api/cases/{case}/files"),
                vec![
                    header(AUTHORIZATION, &format!("ApiKey {secret}"))?,
                    header(HeaderName::from_static("kbn-xsrf"), "true")?,
                ],
                multipart(&[("filename", "bench")], file_len),
            ),
        };
        headers.push(header(CONTENT_TYPE, &content_type)?);
        Ok(Upload::new(self.addr, path, headers, payload))
    }

    /// The id a client of this endpoint downloads a file by, from the answer to its upload
    /// (see [`uploaded_file_id`]).
    pub fn uploaded_file_id(&self, answer: &[u8]) -> Res<String> {
        uploaded_file_id(self.dialect, answer)
    }

    /// The download of the file `id` (in this endpoint's dialect, as its upload answer
    /// gave it), expected to be `file_len` bytes (getting a Case IQ access token first).
    pub async fn download(&self, id: &str, file_len: u64) -> Res<Download> {
        let p = &self.prefix;
        let case = self.case_id;
        let secret = self.secret;
        let (path, headers) = match self.dialect {
            DialectId::Thalamus => (
                format!("{p}/api/v4/cases/files/{id}?touchpoint=bench&token={secret}"),
                Vec::new(),
            ),
            DialectId::Tines => (
                format!("{p}/api/v2/cases/{case}/files/{id}/download"),
                vec![header(AUTHORIZATION, &format!("Bearer {secret}"))?],
            ),
            DialectId::Caseiq => {
                let token = self.caseiq_token().await?;
                (
                    format!("{p}/api-public/1.0/attachment/{id}/attachment"),
                    vec![header(AUTHORIZATION, &format!("Bearer {token}"))?],
                )
            }
            DialectId::Kibana => (
                format!("{p}/api/files/files/{KIBANA_OWNER}FilesCases/{id}/blob"),
                vec![header(AUTHORIZATION, &format!("ApiKey {secret}"))?],
            ),
        };
        Ok(Download::new(self.addr, path, headers, file_len))
    }

    /// A Case IQ access token from this endpoint's `POST /auth/oauth2/token` (casegate's
    /// own, or the emulator's), valid for an hour.
    async fn caseiq_token(&self) -> Res<String> {
        let path = format!("{}/auth/oauth2/token", self.prefix);
        let request = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": "bench",
            "client_secret": self.secret,
            "ttl": 3600,
        });
        let headers = [header(CONTENT_TYPE, "application/json")?];
        let (status, body) =
            runner::send_once(self.addr, &path, &headers, Bytes::from(request.to_string())).await?;
        let what = || format!("the token request to http://{}{path}", self.addr);
        if !status.is_success() {
            return Err(format!(
                "{} answered HTTP {status}: {}",
                what(),
                runner::quote(&body, 300)
            ));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{} answered something that is not JSON: {e}", what()))?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{} answered no access_token: {answer}", what()))
    }
}

/// A multipart body: text `fields`, then the file part `file` (last, as Case IQ requires).
/// Gives the payload and its `Content-Type`.
fn multipart(fields: &[(&str, &str)], file_len: u64) -> (Payload, String) {
    let writer = Writer::new();
    let mut prefix = BytesMut::new();
    for (name, value) in fields {
        writer.text(&mut prefix, name, value);
    }
    writer.file_start(&mut prefix, "file", FILE_NAME, FILE_TYPE);
    let mut suffix = BytesMut::new();
    writer.file_end(&mut suffix);
    writer.close(&mut suffix);
    let payload = Payload::new(prefix.freeze(), file_len, Encoding::Raw, suffix.freeze());
    (payload, writer.content_type())
}

/// A Tines body: `filename`, the base64 `file_contents`, then `value` (after the file, as
/// tapi sends it) and, for [`TinesTail::ValueAndNulls`], tapi's `"author_email":null`.
/// Gives the payload and its `Content-Type`.
fn tines_json(file_len: u64, tail: TinesTail) -> (Payload, String) {
    let prefix = match tail {
        TinesTail::ValueFirst => {
            format!(r#"{{"filename":"{FILE_NAME}","value":"{COMMENT}","file_contents":""#)
        }
        _ => format!(r#"{{"filename":"{FILE_NAME}","file_contents":""#),
    };
    let suffix = match tail {
        TinesTail::Value => format!(r#"","value":"{COMMENT}"}}"#),
        TinesTail::ValueAndNulls => format!(r#"","value":"{COMMENT}","author_email":null}}"#),
        TinesTail::ValueFirst => r#""}"#.to_owned(),
    };
    let payload = Payload::new(
        Bytes::from(prefix),
        file_len,
        Encoding::Base64,
        Bytes::from(suffix),
    );
    (payload, "application/json".to_owned())
}

/// The id a client downloads the file by, from the answer to its upload in `dialect`:
/// Thalamus, the last of the case's `attachements`; Tines and Case IQ, the record's `id`;
/// Kibana, the `externalReferenceId` (the file id) of the case's last `.files` comment.
pub fn uploaded_file_id(dialect: DialectId, answer: &[u8]) -> Res<String> {
    let quoted = || runner::quote(answer, 300);
    let v: serde_json::Value = serde_json::from_slice(answer).map_err(|e| {
        format!(
            "the {dialect} upload answer is not JSON ({e}): {}",
            quoted()
        )
    })?;
    let id = match dialect {
        DialectId::Thalamus => v
            .pointer("/attachments/attachements")
            .and_then(serde_json::Value::as_array)
            .and_then(|list| list.last())
            .and_then(|a| a.get("id")),
        DialectId::Tines | DialectId::Caseiq => v.get("id"),
        DialectId::Kibana => v
            .get("comments")
            .and_then(serde_json::Value::as_array)
            .and_then(|comments| {
                comments
                    .iter()
                    .rev()
                    .find(|c| c["externalReferenceAttachmentTypeId"] == ".files")
            })
            .and_then(|c| c.get("externalReferenceId")),
    };
    match id {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!(
            "the {dialect} upload answer names no file id: {}",
            quoted()
        )),
    }
}

fn header(name: HeaderName, value: &str) -> Res<(HeaderName, HeaderValue)> {
    let value = HeaderValue::from_str(value)
        .map_err(|e| format!("{name}: {value:?} is not a valid header value: {e}"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tines_body_is_the_json_tapi_sends() {
        let (payload, _) = tines_json(4, TinesTail::ValueAndNulls);
        let body: serde_json::Value = serde_json::from_slice(&payload.gather()).expect("JSON");
        assert_eq!(body["filename"], "bench.pdf");
        assert_eq!(body["file_contents"].as_str().map(str::len), Some(8));
        assert_eq!(body["value"], COMMENT);
        assert!(body["author_email"].is_null());
    }

    #[test]
    fn file_ids_come_from_each_upload_answer() {
        use DialectId::*;
        let thalamus = br#"{"context":{},"attachments":{"attachements":[{"id":3,"url":"u"},{"id":7,"url":"u"}]}}"#;
        assert_eq!(uploaded_file_id(Thalamus, thalamus), Ok("7".to_owned()));
        assert_eq!(
            uploaded_file_id(Tines, br#"{"case_id":42,"id":12,"file":{}}"#),
            Ok("12".to_owned())
        );
        assert_eq!(
            uploaded_file_id(Caseiq, br#"{"id":"u-1","objectId":"c"}"#),
            Ok("u-1".to_owned())
        );
        let kibana = br#"{"id":"c","comments":[
            {"type":"user","id":"x"},
            {"id":"k1","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f1"},
            {"id":"k2","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f2"},
            {"type":"user","id":"y"}]}"#;
        assert_eq!(uploaded_file_id(Kibana, kibana), Ok("f2".to_owned()));
        assert!(uploaded_file_id(Tines, b"FAILED").is_err());
        assert!(uploaded_file_id(Caseiq, br#"{"id":""}"#).is_err());
        assert!(uploaded_file_id(Thalamus, br#"{"attachments":{"attachements":[]}}"#).is_err());
    }

    #[test]
    fn case_ids_suit_the_upstream() {
        use DialectId::*;
        assert_eq!(case_id(Thalamus, Tines), "42");
        assert_eq!(case_id(Tines, Kibana), CASE_UUID);
        assert_eq!(case_id(Kibana, Caseiq), CASE_UUID);
        assert_eq!(case_id(Caseiq, Caseiq), CASE_UUID);
    }
}
