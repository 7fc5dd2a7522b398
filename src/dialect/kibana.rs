//! Kibana Cases: `POST [/s/{space}]/api/cases/{caseId}/files`, multipart with `file`
//! and an optional `filename` display name; every POST needs `kbn-xsrf`. Kibana derives
//! the MIME type from the part filename's extension and refuses types outside its
//! allow-list, so the part filename always carries the right extension. The answer is
//! the whole case; the file is its `.files` external-reference comment. Comments go in
//! by a second call, `POST /api/cases/{id}/comments`.

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use super::wire::{self, MultipartBody};
use super::{
    Answer, AuthKind, BackCtx, Dialect, DialectId, FrontAuth, JsonCall, Operation, Outbound,
};
use crate::codec::b64;
use crate::error::{json_response, Body, Error};
use crate::inbound::{self, BodyStream, FormSpec, Inbound, Limits};
use crate::secret::ct_any;
use crate::upload::{
    id_text, split_ext, Attachment, Field, Kind, Kinds, Outcome, Person, UploadMeta, UploadResult,
};

pub struct Kibana;

/// Longest display name Kibana accepts in the `filename` field.
pub const MAX_DISPLAY_CHARS: usize = 160;
const XSRF_MESSAGE: &str = "Request must contain a kbn-xsrf header.";
const FILES_TYPE: &str = ".files";
const VERSION: &str = "WzAsMV0=";

impl Dialect for Kibana {
    fn id(&self) -> DialectId {
        DialectId::Kibana
    }

    fn as_dyn(&self) -> &dyn Dialect {
        self
    }

    fn recognize(&self, path: &str) -> Option<Operation> {
        let (space, rest) = wire::split_space(path);
        let segs = wire::segments(rest)?;
        match segs.as_slice() {
            [a, c, id, f] if a == "api" && c == "cases" && f == "files" => {
                Some(Operation::Upload {
                    case_id: Some(id.clone()),
                    space,
                })
            }
            _ => None,
        }
    }

    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error> {
        let presented = if let Some(k) = wire::authorization(parts, "apikey") {
            Some(k.to_string())
        } else if let Some(b) = wire::authorization(parts, "basic") {
            b64::decode_lenient_whitespace(b.as_bytes())
                .ok()
                .and_then(|d| String::from_utf8(d.to_vec()).ok())
        } else {
            None
        };
        match presented {
            Some(p) if ct_any(&p, &auth.tokens) => Ok(()),
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
        if !parts.headers.contains_key("kbn-xsrf") {
            return Err(Error::bad_request(XSRF_MESSAGE));
        }
        let boundary = wire::multipart_boundary(parts)?;
        let Operation::Upload { case_id, space } = op else {
            return Err(Error::not_found("Not Found"));
        };
        let spec = FormSpec {
            file_field: "file",
            file_last: false,
            map: |name, value| {
                Ok((name == "filename" && !value.is_empty()).then_some(Field::DisplayName(value)))
            },
        };
        Ok(Inbound {
            meta: UploadMeta::from_path(case_id.clone(), space.clone()),
            events: inbound::multipart(body, boundary, spec, limits),
        })
    }

    fn late_fields(&self) -> Kinds {
        Kinds::of(&[Kind::DisplayName])
    }

    fn field_name(&self, kind: Kind) -> &'static str {
        match kind {
            Kind::CaseId => "caseId",
            Kind::FileName => "file",
            Kind::DisplayName => "filename",
            Kind::Comment => "comment",
            Kind::AuthorEmail => "author_email",
            Kind::BlockId => "block_id",
            Kind::Tags => "tags",
            Kind::Locale => "locale",
        }
    }

    fn render_success(&self, o: &Outcome<'_>) -> Response<Body> {
        match &o.result.case {
            Some(case) => json_response(StatusCode::OK, case),
            None => json_response(StatusCode::OK, &synthesized_case(o)),
        }
    }

    fn render_error(&self, err: &Error) -> Response<Body> {
        json_response(
            err.status,
            &json!({"statusCode": err.status.as_u16(), "error": err.reason(), "message": err.message}),
        )
    }

    fn carries(&self) -> Kinds {
        Kinds::of(&[Kind::Comment])
    }

    fn needs_before_file(&self) -> Kinds {
        Kinds::of(&[Kind::FileName])
    }

    fn auth_kinds(&self) -> &'static [AuthKind] {
        &[AuthKind::ApiKey, AuthKind::Basic]
    }

    fn build_upload(&self, meta: &UploadMeta, ctx: &BackCtx<'_>) -> Result<Outbound, Error> {
        let case = meta.case_id.as_deref().unwrap_or_default();
        let file_name = meta.file_name.clone().unwrap_or_else(|| "file".into());
        let content_type = meta.content_type();
        let part_name = with_extension(&file_name, &content_type);
        let mut fields = Vec::new();
        let known = meta
            .display_name
            .as_deref()
            .map(|d| display_name(d, &part_name));
        if let Some(d) = &known {
            fields.push(("filename", d.as_str()));
        }
        let derive_from = part_name.clone();
        let late: wire::LateFields = if known.is_some() {
            wire::no_late()
        } else {
            Box::new(move |late: &UploadMeta| {
                let src = late.display_name.as_deref().unwrap_or(&derive_from);
                vec![("filename", display_name(src, &derive_from))]
            })
        };
        let (enc, ct) = MultipartBody::new(&fields, "file", &part_name, &content_type, late);
        Ok(Outbound {
            path: format!(
                "{}/api/cases/{}/files",
                space_prefix(ctx.space),
                wire::encode_segment(case)
            ),
            headers: vec![
                (http::header::CONTENT_TYPE, ct),
                (
                    http::header::HeaderName::from_static("kbn-xsrf"),
                    HeaderValue::from_static("true"),
                ),
            ],
            body: Box::new(enc),
        })
    }

    fn read_stored(&self, body: &[u8], meta: &UploadMeta, ctx: &BackCtx<'_>) -> Answer {
        let Ok(case) = serde_json::from_slice::<Value>(body) else {
            return Answer::StoredUnreadable("the answer is not JSON".into());
        };
        let mut result = UploadResult::default();
        if !read_case(&case, ctx, &mut result) {
            return Answer::StoredUnreadable("the case has no comments".into());
        }
        let part_name = with_extension(
            meta.file_name.as_deref().unwrap_or("file"),
            &meta.content_type(),
        );
        let want = match meta.display_name.as_deref() {
            Some(d) => format!(
                "{}.{}",
                display_name(d, &part_name),
                split_ext(&part_name).1.unwrap_or("")
            ),
            None => part_name.clone(),
        };
        let comments = case
            .get("comments")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let files: Vec<&Value> = comments.iter().filter(|c| is_file_comment(c)).collect();
        let newest = files
            .iter()
            .rev()
            .find(|c| {
                file_comment_attachment(c, ctx, result.owner.as_deref())
                    .name
                    .as_deref()
                    == Some(&want)
            })
            .or(files.last());
        let Some(comment) = newest else {
            return Answer::StoredUnreadable("the case holds no .files comment".into());
        };
        result.attachment = file_comment_attachment(comment, ctx, result.owner.as_deref());
        if result.attachment.id.is_none() {
            return Answer::StoredUnreadable(
                "the .files comment has no externalReferenceId".into(),
            );
        }
        result.comment_id = comment.get("id").and_then(id_text);
        result.uploader = comment.get("created_by").map(person);
        result.case = Some(case);
        Answer::Stored(Box::new(result))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        wire::short_message(v.get("message")?.as_str()?)
    }

    fn comment_call(
        &self,
        comment: &str,
        meta: &UploadMeta,
        result: &UploadResult,
        ctx: &BackCtx<'_>,
    ) -> Option<JsonCall> {
        let case = meta.case_id.as_deref()?;
        let owner = result.owner.as_deref().or(ctx.owner).unwrap_or("cases");
        Some(JsonCall {
            path: format!(
                "{}/api/cases/{}/comments",
                space_prefix(ctx.space),
                wire::encode_segment(case)
            ),
            headers: vec![
                wire::json_content_type(),
                (
                    http::header::HeaderName::from_static("kbn-xsrf"),
                    HeaderValue::from_static("true"),
                ),
            ],
            body: json!({"type": "user", "comment": comment, "owner": owner}),
        })
    }

    fn read_comment_answer(&self, body: &[u8], result: &mut UploadResult) -> bool {
        if let Ok(case @ Value::Object(_)) = serde_json::from_slice::<Value>(body) {
            result.case = Some(case);
        }
        true
    }
}

fn space_prefix(space: Option<&str>) -> String {
    match space {
        Some(s) if !s.is_empty() => format!("/s/{}", wire::encode_segment(s)),
        _ => String::new(),
    }
}

/// `name` with an extension Kibana maps to `content_type`: kept when it has one, else
/// the type's usual extension appended.
pub fn with_extension(name: &str, content_type: &str) -> String {
    if split_ext(name).1.is_some() {
        return name.to_string();
    }
    let ext = mime_guess::get_mime_extensions_str(content_type)
        .and_then(|e| e.first())
        .copied();
    match ext {
        Some(e) => format!("{name}.{e}"),
        None => name.to_string(),
    }
}

/// The display name Kibana shows: `given` without the part filename's extension, at most
/// [`MAX_DISPLAY_CHARS`] characters.
pub fn display_name(given: &str, part_name: &str) -> String {
    let mut stem = given;
    if let Some(ext) = split_ext(part_name).1 {
        let suffix_len = ext.len() + 1;
        if given.len() > suffix_len {
            let cut = given.len() - suffix_len;
            if given.is_char_boundary(cut) {
                let (s, tail) = given.split_at(cut);
                if tail.eq_ignore_ascii_case(&format!(".{ext}")) {
                    stem = s;
                }
            }
        }
    }
    stem.chars().take(MAX_DISPLAY_CHARS).collect()
}

fn is_file_comment(c: &Value) -> bool {
    c.get("type").and_then(Value::as_str) == Some("externalReference")
        && c.get("externalReferenceAttachmentTypeId")
            .and_then(Value::as_str)
            == Some(FILES_TYPE)
}

/// Reads the case-level parts of a Kibana case into `result`; false when it is not a case.
fn read_case(case: &Value, ctx: &BackCtx<'_>, result: &mut UploadResult) -> bool {
    let Some(comments) = case.get("comments").and_then(Value::as_array) else {
        return false;
    };
    result.case_id = case.get("id").and_then(id_text);
    result.owner = case
        .get("owner")
        .and_then(Value::as_str)
        .map(str::to_string);
    result.attachments = comments
        .iter()
        .filter(|c| is_file_comment(c))
        .map(|c| file_comment_attachment(c, ctx, result.owner.as_deref()))
        .collect();
    true
}

fn file_comment_attachment(c: &Value, ctx: &BackCtx<'_>, owner: Option<&str>) -> Attachment {
    let file = c.pointer("/externalReferenceMetadata/files/0");
    let f = |k: &str| file.and_then(|f| f.get(k)).and_then(Value::as_str);
    let name = match (f("name"), f("extension")) {
        (Some(n), Some(e)) if !e.is_empty() => Some(format!("{n}.{e}")),
        (Some(n), _) => Some(n.to_string()),
        _ => None,
    };
    let id = c.get("externalReferenceId").and_then(id_text);
    let owner = c
        .get("owner")
        .and_then(Value::as_str)
        .or(owner)
        .or(ctx.owner)
        .unwrap_or("cases");
    let url = id.as_ref().map(|id| {
        format!(
            "{}{}/api/files/files/{}FilesCases/{}/blob",
            ctx.base_url,
            space_prefix(ctx.space),
            wire::encode_segment(owner),
            wire::encode_segment(id)
        )
    });
    Attachment {
        id,
        name,
        content_type: f("mimeType").map(str::to_string),
        size: None,
        created_at: f("created")
            .or_else(|| c.get("created_at").and_then(Value::as_str))
            .map(str::to_string),
        url,
    }
}

fn person(v: &Value) -> Person {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Person {
        username: s("username"),
        full_name: s("full_name"),
        email: s("email"),
        ..Default::default()
    }
}

/// A case for a Kibana client whose upstream is not Kibana: every field of Kibana's
/// answer, the file as its one `.files` comment.
fn synthesized_case(o: &Outcome<'_>) -> Value {
    let a = &o.result.attachment;
    let name = a
        .name
        .clone()
        .or_else(|| o.meta.file_name.clone())
        .unwrap_or_default();
    let (stem, ext) = split_ext(&name);
    let created = a.created_at.clone().unwrap_or_else(|| o.now.to_string());
    let who = o.result.uploader.clone().unwrap_or_default();
    let username = who.username.clone().or_else(|| {
        let full = [who.first_name.as_deref(), who.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        (!full.is_empty()).then_some(full)
    });
    let user = json!({"email": who.email, "username": username, "full_name": who.full_name});
    let comment_id = o
        .result
        .comment_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let comment = json!({
        "id": comment_id,
        "type": "externalReference",
        "owner": o.owner,
        "externalReferenceAttachmentTypeId": FILES_TYPE,
        "externalReferenceId": a.id.clone().unwrap_or_default(),
        "externalReferenceStorage": {"type": "savedObject", "soType": "file"},
        "externalReferenceMetadata": {"files": [{
            "name": stem,
            "extension": ext.unwrap_or(""),
            "mimeType": a.content_type.clone().unwrap_or_else(|| o.content_type.to_string()),
            "created": created,
        }]},
        "created_at": created,
        "created_by": user,
        "pushed_at": null,
        "pushed_by": null,
        "updated_at": null,
        "updated_by": null,
        "version": VERSION,
    });
    let case_user = json!({"email": who.email, "username": username, "full_name": who.full_name, "profile_uid": null});
    json!({
        "id": o.meta.case_id.clone().unwrap_or_default(),
        "tags": [],
        "owner": o.owner,
        "title": "",
        "status": "open",
        "version": VERSION,
        "category": null,
        "comments": [comment],
        "duration": null,
        "settings": {"syncAlerts": false},
        "severity": "low",
        "assignees": [],
        "closed_at": null,
        "closed_by": null,
        "connector": {"id": "none", "name": "none", "type": ".none", "fields": null},
        "created_at": created,
        "created_by": case_user,
        "updated_at": created,
        "updated_by": case_user,
        "description": "",
        "totalAlerts": 0,
        "customFields": [],
        "totalComment": 0,
        "external_service": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(display_name("notes.txt", "notes.txt"), "notes");
        assert_eq!(display_name("notes", "notes.txt"), "notes");
        assert_eq!(display_name("Notes.TXT", "notes.txt"), "Notes");
        assert_eq!(display_name("a.tar.gz", "a.tar.gz"), "a.tar");
        assert_eq!(display_name("ü.pdf", "ü.pdf"), "ü");
        assert_eq!(display_name(&"é".repeat(200), "x.pdf").chars().count(), 160);
    }

    #[test]
    fn extensions_are_added_only_when_missing() {
        assert_eq!(with_extension("report", "application/pdf"), "report.pdf");
        assert_eq!(
            with_extension("report.bin", "application/pdf"),
            "report.bin"
        );
        assert_eq!(with_extension("x", "application/x-unknown-thing"), "x");
    }

    #[test]
    fn recognizes_spaces() {
        assert_eq!(
            Kibana.recognize("/s/ops/api/cases/abc/files"),
            Some(Operation::Upload {
                case_id: Some("abc".into()),
                space: Some("ops".into())
            })
        );
        assert_eq!(
            Kibana.recognize("/api/cases/abc/files"),
            Some(Operation::Upload {
                case_id: Some("abc".into()),
                space: None
            })
        );
        assert_eq!(Kibana.recognize("/api/cases/abc/comments"), None);
    }
}
