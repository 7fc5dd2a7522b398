//! Tines v2: `POST /api/v2/cases/{case_id}/files` with a JSON body carrying the file as
//! base64 (`file_contents`) beside `filename`, `value` (a comment), `author_email` and
//! `team_case_block_id`. Real clients send absent fields as `null`. The answer is the
//! activity record; errors are `{"errors":[{"message": M}]}`.

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::wire;
use super::{
    Answer, AuthKind, BackCtx, BodyEncoder, Dialect, DialectId, FrontAuth, Operation, Outbound,
};
use crate::codec::b64;
use crate::codec::json_scan::Scalar;
use crate::error::{json_response, Body, Error};
use crate::inbound::{self, BodyStream, Inbound, JsonSpec, Limits, Mapped};
use crate::secret::ct_any;
use crate::upload::{
    id_json, id_text, now_rfc3339_seconds, Attachment, Field, Kind, Kinds, Outcome, Person,
    UploadMeta, UploadResult,
};

pub struct Tines;

const FILE_KEY: &str = "file_contents";

impl Dialect for Tines {
    fn id(&self) -> DialectId {
        DialectId::Tines
    }

    fn as_dyn(&self) -> &dyn Dialect {
        self
    }

    fn recognize(&self, path: &str) -> Option<Operation> {
        let segs = wire::segments(path)?;
        match segs.as_slice() {
            [a, v, c, id, f] if a == "api" && v == "v2" && c == "cases" && f == "files" => {
                Some(Operation::Upload {
                    case_id: Some(id.clone()),
                    space: None,
                })
            }
            _ => None,
        }
    }

    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error> {
        let key =
            wire::authorization(parts, "bearer").or_else(|| wire::header(parts, "x-user-token"));
        match key {
            Some(k) if ct_any(k, &auth.tokens) => Ok(()),
            _ => Err(Error::unauthorized("Unauthorized")),
        }
    }

    fn read_upload(
        &self,
        parts: &Parts,
        op: &Operation,
        body: BodyStream,
        limits: &Limits,
    ) -> Result<Inbound, Error> {
        if wire::content_type_essence(parts).as_deref() != Some("application/json") {
            return Err(Error::unsupported_media_type(
                "The request must be sent as application/json.",
            ));
        }
        let Operation::Upload { case_id, .. } = op else {
            return Err(Error::not_found("Not Found"));
        };
        let spec = JsonSpec {
            file_key: FILE_KEY,
            map: map_field,
        };
        Ok(Inbound {
            meta: UploadMeta::from_path(case_id.clone(), None),
            events: inbound::json(body, spec, limits),
        })
    }

    fn max_body_bytes(&self, limits: &Limits) -> u64 {
        limits.base64_json_body()
    }

    fn late_fields(&self) -> Kinds {
        Kinds::of(&[
            Kind::FileName,
            Kind::Comment,
            Kind::AuthorEmail,
            Kind::BlockId,
        ])
    }

    fn field_name(&self, kind: Kind) -> &'static str {
        match kind {
            Kind::CaseId => "case_id",
            Kind::FileName => "filename",
            Kind::DisplayName => "filename",
            Kind::Comment => "value",
            Kind::AuthorEmail => "author_email",
            Kind::BlockId => "team_case_block_id",
            Kind::Tags => "tags",
            Kind::Locale => "locale",
        }
    }

    fn render_success(&self, o: &Outcome<'_>) -> Response<Body> {
        let r = o.result;
        let a = &r.attachment;
        let who = r.uploader.clone().unwrap_or_default();
        let text = |s: Option<String>| s.map(Value::from).unwrap_or(Value::Null);
        let case_id = r
            .case_id
            .as_deref()
            .or(o.meta.case_id.as_deref())
            .unwrap_or_default();
        let name = a
            .name
            .as_deref()
            .or(o.meta.file_name.as_deref())
            .unwrap_or_default();
        let comment = o.meta.comment.as_deref().filter(|_| o.comment_stored);
        let mut body = json!({
            "case_id": id_json(case_id),
            "id": a.id.as_deref().map(id_json).unwrap_or(Value::Null),
            "activity_type": if comment.is_some() { "FILE_ATTACHED_AND_COMMENTED" } else { "FILE_ATTACHED" },
            "value": comment,
            "created_at": a.created_at.clone().unwrap_or_else(now_rfc3339_seconds),
            "file": {"filename": name, "url": a.url.clone().unwrap_or_default()},
            "user": {
                "user_id": who.id.as_deref().map(id_json).unwrap_or(Value::Null),
                "first_name": text(who.first_name.or(who.full_name).or(who.username)),
                "last_name": text(who.last_name),
                "email": text(who.email),
                "avatar_url": text(who.avatar_url),
                "is_service_account": who.is_service_account.unwrap_or(false),
            },
        });
        if let (Some(block), Value::Object(m)) = (r.block_id.clone(), &mut body) {
            m.insert("block_id".into(), block);
        }
        json_response(StatusCode::OK, &body)
    }

    fn render_error(&self, err: &Error) -> Response<Body> {
        json_response(err.status, &json!({"errors": [{"message": err.message}]}))
    }

    fn carries(&self) -> Kinds {
        Kinds::of(&[Kind::Comment, Kind::AuthorEmail, Kind::BlockId])
    }

    fn needs_before_file(&self) -> Kinds {
        Kinds::NONE
    }

    fn auth_kinds(&self) -> &'static [AuthKind] {
        &[AuthKind::Bearer]
    }

    fn build_upload(&self, meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Result<Outbound, Error> {
        let case = meta.case_id.as_deref().unwrap_or_default();
        let fields = json_fields(meta);
        let mut head = BytesMut::from(&b"{"[..]);
        let mut emitted = Vec::new();
        for (k, v) in &fields {
            push_member(&mut head, k, v);
            head.extend_from_slice(b",");
            emitted.push(*k);
        }
        head.extend_from_slice(b"\"file_contents\":\"");
        let head = head.freeze();
        Ok(Outbound {
            path: format!("/api/v2/cases/{}/files", wire::encode_segment(case)),
            headers: vec![wire::json_content_type()],
            body: Box::new(JsonBody {
                head_len: head.len() as u64,
                head,
                emitted,
                enc: b64::Encoder::new(),
            }),
        })
    }

    fn read_stored(&self, body: &[u8], meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Answer {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Answer::StoredUnreadable("the answer is not JSON".into());
        };
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let Some(id) = v.get("id").and_then(id_text) else {
            return Answer::StoredUnreadable("the answer has no id".into());
        };
        let user = v.get("user").map(|u| Person {
            id: u.get("user_id").and_then(id_text),
            first_name: u
                .get("first_name")
                .and_then(Value::as_str)
                .map(str::to_string),
            last_name: u
                .get("last_name")
                .and_then(Value::as_str)
                .map(str::to_string),
            email: u.get("email").and_then(Value::as_str).map(str::to_string),
            avatar_url: u
                .get("avatar_url")
                .and_then(Value::as_str)
                .map(str::to_string),
            is_service_account: u.get("is_service_account").and_then(Value::as_bool),
            ..Default::default()
        });
        let commented = s("/activity_type")
            .map(|t| t.eq_ignore_ascii_case("FILE_ATTACHED_AND_COMMENTED"))
            .unwrap_or(meta.comment.is_some());
        Answer::Stored(Box::new(UploadResult {
            case_id: v.get("case_id").and_then(id_text),
            attachment: Attachment {
                id: Some(id),
                name: s("/file/filename"),
                created_at: s("/created_at"),
                url: s("/file/url"),
                ..Default::default()
            },
            uploader: user,
            comment_stored: commented,
            block_id: v.get("block_id").filter(|b| !b.is_null()).cloned(),
            ..Default::default()
        }))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let msgs: Vec<&str> = v
            .get("errors")?
            .as_array()?
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str))
            .collect();
        wire::short_message(&msgs.join("; "))
    }
}

/// Reads one top-level field of a Tines upload. `null` (and an empty optional string)
/// means absent.
fn map_field(key: &str, value: Scalar) -> Result<Mapped, Error> {
    let text = |kind: Kind, make: fn(String) -> Field, required: bool| match value.clone() {
        Scalar::Null => Ok(Mapped::Absent(kind)),
        Scalar::String(s) if s.is_empty() && !required => Ok(Mapped::Absent(kind)),
        Scalar::String(s) => Ok(Mapped::Field(make(s))),
        _ => Err(Error::bad_request(format!("{key} must be a string."))),
    };
    match key {
        "filename" => text(Kind::FileName, Field::FileName, true),
        "value" => text(Kind::Comment, Field::Comment, false),
        "author_email" => text(Kind::AuthorEmail, Field::AuthorEmail, false),
        "team_case_block_id" => match value {
            Scalar::Null => Ok(Mapped::Absent(Kind::BlockId)),
            Scalar::Number(n) if n.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
                Ok(Mapped::Field(Field::BlockId(n)))
            }
            Scalar::String(s) if !s.is_empty() => Ok(Mapped::Field(Field::BlockId(s))),
            _ => Err(Error::bad_request("team_case_block_id must be an integer.")),
        },
        FILE_KEY => match value {
            Scalar::Null => Err(Error::bad_request("file_contents is required.")),
            _ => Err(Error::bad_request("file_contents must be a base64 string.")),
        },
        _ => Ok(Mapped::Ignore),
    }
}

/// The JSON members of an upload other than the file, in the documented order.
fn json_fields(meta: &UploadMeta) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if let Some(n) = &meta.file_name {
        out.push(("filename", Value::from(n.as_str())));
    }
    if let Some(c) = &meta.comment {
        out.push(("value", Value::from(c.as_str())));
    }
    if let Some(e) = &meta.author_email {
        out.push(("author_email", Value::from(e.as_str())));
    }
    if let Some(b) = &meta.block_id {
        out.push(("team_case_block_id", id_json(b)));
    }
    out
}

fn push_member(out: &mut BytesMut, key: &str, value: &Value) {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    let s = Value::Object(m).to_string();
    // `{"k":v}` -> `"k":v`
    out.extend_from_slice(&s.as_bytes()[1..s.len() - 1]);
}

/// `{...,"file_contents":"` + base64 as the bytes pass + `",...}`.
struct JsonBody {
    head: Bytes,
    head_len: u64,
    emitted: Vec<&'static str>,
    enc: b64::Encoder,
}

impl JsonBody {
    fn tail_bytes(&self, rest: Bytes, late: &UploadMeta) -> Bytes {
        let mut out = BytesMut::from(&rest[..]);
        out.extend_from_slice(b"\"");
        for (k, v) in json_fields(late) {
            if !self.emitted.contains(&k) {
                out.extend_from_slice(b",");
                push_member(&mut out, k, &v);
            }
        }
        out.extend_from_slice(b"}");
        out.freeze()
    }
}

impl BodyEncoder for JsonBody {
    fn head(&mut self) -> Bytes {
        std::mem::take(&mut self.head)
    }

    fn data(&mut self, chunk: Bytes) -> Bytes {
        self.enc.push(&chunk)
    }

    fn tail(&mut self, late: &UploadMeta) -> Bytes {
        let rest = self.enc.finish();
        self.tail_bytes(rest, late)
    }

    fn len(&self, file_len: u64) -> u64 {
        let tail = self.tail_bytes(Bytes::new(), &UploadMeta::default());
        self.head_len + b64::encoded_len(file_len) + tail.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_late_fields_after_the_file() {
        let meta = UploadMeta {
            case_id: Some("42".into()),
            file_name: Some("a\"b.txt".into()),
            block_id: Some("7".into()),
            ..Default::default()
        };
        let ctx = BackCtx {
            base_url: "",
            space: None,
            owner: None,
        };
        let mut out = Tines.build_upload(&meta, &ctx).unwrap();
        let mut body = out.body.head().to_vec();
        body.extend_from_slice(&out.body.data(Bytes::from_static(b"hel")));
        body.extend_from_slice(&out.body.data(Bytes::from_static(b"lo")));
        let late = UploadMeta {
            comment: Some("c\n".into()),
            ..Default::default()
        };
        body.extend_from_slice(&out.body.tail(&late));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"filename":"a\"b.txt","team_case_block_id":7,"file_contents":"aGVsbG8=","value":"c\n"})
        );
        assert_eq!(out.path, "/api/v2/cases/42/files");
    }

    #[test]
    fn exact_length_without_late_fields() {
        let meta = UploadMeta {
            case_id: Some("1".into()),
            file_name: Some("x".into()),
            ..Default::default()
        };
        let ctx = BackCtx {
            base_url: "",
            space: None,
            owner: None,
        };
        for n in 0..8usize {
            let mut out = Tines.build_upload(&meta, &ctx).unwrap();
            let expect = out.body.len(n as u64);
            let mut body = out.body.head().to_vec();
            body.extend_from_slice(&out.body.data(Bytes::from(vec![1u8; n])));
            body.extend_from_slice(&out.body.tail(&UploadMeta::default()));
            assert_eq!(body.len() as u64, expect);
        }
    }

    #[test]
    fn nulls_are_absent() {
        assert!(matches!(
            map_field("value", Scalar::Null),
            Ok(Mapped::Absent(Kind::Comment))
        ));
        assert!(matches!(
            map_field("author_email", Scalar::String(String::new())),
            Ok(Mapped::Absent(Kind::AuthorEmail))
        ));
        assert!(map_field("team_case_block_id", Scalar::Bool(true)).is_err());
        assert!(map_field("file_contents", Scalar::Null).is_err());
        assert!(matches!(
            map_field("other", Scalar::Composite),
            Ok(Mapped::Ignore)
        ));
    }
}
