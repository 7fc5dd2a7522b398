//! Thalamus v4: `POST /api/v4/cases/{caseInstanceId}/files`, multipart with one `file`
//! part; credentials as `touchpoint` + `token` (query or `Thalamus-*` headers). Its answer
//! lists every attachment of the case under the misspelt key `attachements`; every
//! failure is the text `FAILED`, for logical failures even with status 200. Comments go
//! to the case's notes by a second call.

use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::wire::{self, MultipartBody};
use super::{
    Answer, AuthKind, BackCtx, Dialect, DialectId, FrontAuth, JsonCall, Operation, Outbound,
};
use crate::error::{text_response, Body, Error, Side};
use crate::inbound::{self, BodyStream, FormSpec, Inbound, Limits};
use crate::secret::ct_any;
use crate::upload::{
    id_json, id_text, Attachment, Kind, Kinds, Outcome, Person, UploadMeta, UploadResult,
};

pub struct Thalamus;

const FAILED: &str = "FAILED";

impl Dialect for Thalamus {
    fn id(&self) -> DialectId {
        DialectId::Thalamus
    }

    fn as_dyn(&self) -> &dyn Dialect {
        self
    }

    fn recognize(&self, path: &str) -> Option<Operation> {
        let segs = wire::segments(path)?;
        match segs.as_slice() {
            [a, v, c, id, f] if a == "api" && v == "v4" && c == "cases" && f == "files" => {
                Some(Operation::Upload {
                    case_id: Some(id.clone()),
                    space: None,
                })
            }
            _ => None,
        }
    }

    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error> {
        let token = wire::header(parts, "thalamus-token")
            .map(str::to_string)
            .or_else(|| wire::query_param(parts, "token"));
        let touchpoint = wire::header(parts, "thalamus-touchpoint")
            .map(str::to_string)
            .or_else(|| wire::query_param(parts, "touchpoint"));
        match (token, touchpoint) {
            (Some(t), Some(tp)) if !tp.is_empty() && ct_any(&t, &auth.tokens) => Ok(()),
            _ => Err(Error::unauthorized(
                "A valid touchpoint and token are required.",
            )),
        }
    }

    fn read_upload(
        &self,
        parts: &Parts,
        op: &Operation,
        body: BodyStream,
        limits: &Limits,
    ) -> Result<Inbound, Error> {
        let boundary = wire::multipart_boundary(parts)?;
        let Operation::Upload { case_id, .. } = op else {
            return Err(Error::not_found("Not Found"));
        };
        let spec = FormSpec {
            file_field: "file",
            file_last: false,
            map: |_, _| Ok(None),
        };
        Ok(Inbound {
            meta: UploadMeta::from_path(case_id.clone(), None),
            events: inbound::multipart(body, boundary, spec, limits),
        })
    }

    fn late_fields(&self) -> Kinds {
        Kinds::NONE
    }

    fn field_name(&self, kind: Kind) -> &'static str {
        match kind {
            Kind::CaseId => "caseInstanceId",
            Kind::FileName => "file",
            Kind::DisplayName => "filename",
            Kind::Comment => "note",
            Kind::AuthorEmail => "author_email",
            Kind::BlockId => "block_id",
            Kind::Tags => "tags",
            Kind::Locale => "locale",
        }
    }

    fn render_success(&self, o: &Outcome<'_>) -> Response<Body> {
        let who = o.result.uploader.clone().unwrap_or_default();
        let first = who
            .first_name
            .or(who.full_name)
            .or(who.username)
            .unwrap_or_default();
        let mut listed: Vec<Attachment> = o.result.attachments.clone();
        let new = &o.result.attachment;
        if new.id.is_none() || !listed.iter().any(|a| a.id == new.id) {
            listed.push(new.clone());
        }
        let list: Vec<Value> = listed
            .iter()
            .map(|a| {
                json!({
                    "id": a.id.as_deref().map(id_json).unwrap_or(Value::Null),
                    "url": a.url.clone().unwrap_or_default(),
                })
            })
            .collect();
        let body = json!({
            "context": {"simpleProfile": {
                "firstname": first,
                "lastname": who.last_name.unwrap_or_default(),
                "email": who.email.unwrap_or_default(),
            }},
            "attachments": {"attachements": list},
        });
        crate::error::json_response(StatusCode::OK, &body)
    }

    fn render_error(&self, err: &Error) -> Response<Body> {
        // Thalamus reports upstream trouble as a logical failure: 200 with FAILED.
        let status = match err.side {
            Side::Upstream => StatusCode::OK,
            Side::Client | Side::Internal => err.status,
        };
        text_response(status, FAILED)
    }

    fn carries(&self) -> Kinds {
        Kinds::of(&[Kind::Comment])
    }

    fn needs_before_file(&self) -> Kinds {
        Kinds::of(&[Kind::FileName])
    }

    fn auth_kinds(&self) -> &'static [AuthKind] {
        &[AuthKind::TouchpointToken]
    }

    fn build_upload(&self, meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Result<Outbound, Error> {
        let case = meta.case_id.as_deref().unwrap_or_default();
        let name = meta.file_name.as_deref().unwrap_or("file");
        let (enc, ct) =
            MultipartBody::new(&[], "file", name, &meta.content_type(), wire::no_late());
        Ok(Outbound {
            path: format!("/api/v4/cases/{}/files", wire::encode_segment(case)),
            headers: vec![(http::header::CONTENT_TYPE, ct)],
            body: Box::new(enc),
        })
    }

    fn read_stored(&self, body: &[u8], _meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Answer {
        if String::from_utf8_lossy(body).trim() == FAILED {
            return Answer::Failed(Error::upstream_failed("The case system answered FAILED."));
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Answer::StoredUnreadable("the answer is not JSON".into());
        };
        let Some(list) = v
            .pointer("/attachments/attachements")
            .and_then(Value::as_array)
        else {
            return Answer::StoredUnreadable("the answer has no attachments.attachements".into());
        };
        let attachments: Vec<Attachment> = list
            .iter()
            .map(|a| Attachment {
                id: a.get("id").and_then(id_text),
                url: a.get("url").and_then(Value::as_str).map(str::to_string),
                ..Default::default()
            })
            .collect();
        // The answer does not say which attachment is new: the highest id is.
        let newest = attachments
            .iter()
            .filter(|a| a.id.is_some())
            .max_by(|a, b| id_order(a.id.as_deref(), b.id.as_deref()))
            .cloned();
        let Some(attachment) = newest else {
            return Answer::StoredUnreadable("the answer lists no attachment".into());
        };
        let profile = v.pointer("/context/simpleProfile");
        let field = |k: &str| {
            profile
                .and_then(|p| p.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let uploader = Person {
            first_name: field("firstname"),
            last_name: field("lastname"),
            email: field("email"),
            ..Default::default()
        };
        Answer::Stored(Box::new(UploadResult {
            attachment,
            attachments,
            uploader: Some(uploader),
            ..Default::default()
        }))
    }

    fn error_message(&self, _body: &[u8]) -> Option<String> {
        None
    }

    fn comment_call(
        &self,
        comment: &str,
        meta: &UploadMeta,
        _result: &UploadResult,
        _ctx: &BackCtx<'_>,
    ) -> Option<JsonCall> {
        let case = meta.case_id.as_deref()?;
        Some(JsonCall {
            path: format!("/api/v4/cases/{}/notes", wire::encode_segment(case)),
            headers: vec![wire::json_content_type()],
            body: json!({ "description": comment }),
        })
    }

    fn read_comment_answer(&self, body: &[u8], _result: &mut UploadResult) -> bool {
        String::from_utf8_lossy(body).trim() != FAILED
    }
}

/// Orders ids numerically when both are all digits, else as text.
fn id_order(a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
    let (a, b) = (a.unwrap_or(""), b.unwrap_or(""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(a) && digits(b) {
        let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
    } else {
        a.cmp(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BackCtx<'static> {
        BackCtx {
            base_url: "http://t",
            space: None,
            owner: None,
        }
    }

    #[test]
    fn newest_attachment_is_the_highest_id() {
        let body = br#"{"context":{"simpleProfile":{"firstname":"a","lastname":"b","email":"c@d"}},
            "attachments":{"attachements":[{"id":9,"url":"u9"},{"id":10,"url":"u10"},{"id":2,"url":"u2"}]}}"#;
        let Answer::Stored(r) = Thalamus.read_stored(body, &UploadMeta::default(), &ctx()) else {
            panic!("not stored")
        };
        assert_eq!(r.attachment.id.as_deref(), Some("10"));
        assert_eq!(r.attachment.url.as_deref(), Some("u10"));
        assert_eq!(r.attachments.len(), 3);
        assert_eq!(r.uploader.unwrap().email.as_deref(), Some("c@d"));
    }

    #[test]
    fn failed_is_a_failure() {
        for body in [&b"FAILED"[..], b"FAILED\n", b"  FAILED "] {
            assert!(matches!(
                Thalamus.read_stored(body, &UploadMeta::default(), &ctx()),
                Answer::Failed(_)
            ));
        }
        assert!(matches!(
            Thalamus.read_stored(b"<html>", &UploadMeta::default(), &ctx()),
            Answer::StoredUnreadable(_)
        ));
    }

    #[test]
    fn recognizes_its_path_only() {
        assert_eq!(
            Thalamus.recognize("/api/v4/cases/17/files"),
            Some(Operation::Upload {
                case_id: Some("17".into()),
                space: None
            })
        );
        assert_eq!(Thalamus.recognize("/api/v4/cases/17/files/x"), None);
        assert_eq!(Thalamus.recognize("/api/v2/cases/17/files"), None);
    }
}
