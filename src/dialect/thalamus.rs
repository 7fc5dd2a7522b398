//! Thalamus v4: `POST /api/v4/cases/{caseInstanceId}/files`, multipart with one `file`
//! part; credentials as `touchpoint` + `token` (query or `Thalamus-*` headers). Its answer
//! lists every attachment of the case under the misspelt key `attachements`; every
//! failure is the text `FAILED`, for logical failures even with status 200. Comments go
//! to the case's notes by a second call. Files are downloaded by id alone
//! (`GET /api/v4/cases/files/{id}`) and deleted under their case (200 `true`/`false`);
//! Thalamus has no list, record or info of its own, so casegate answers those from its
//! ledger.

use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::wire::{self, encode_segment as seg, MultipartBody};
use super::{
    by_method, Answer, AuthKind, BackCtx, Call, Dialect, DialectId, FrontAuth, IdKind, Match, Op,
    Outbound, Request,
};
use crate::error::{json_bytes_response, json_response, text_response, Body, Error, Side};
use crate::inbound::{self, BodyStream, FormSpec, Inbound, Limits};
use crate::ledger::CaseFiles;
use crate::secret::ct_any;
use crate::upload::{
    id_text, Attachment, FileRef, JsonId, Kind, Kinds, Links, Outcome, Person, UploadMeta,
    UploadResult,
};

pub struct Thalamus;

const FAILED: &str = "FAILED";

impl Dialect for Thalamus {
    fn id(&self) -> DialectId {
        DialectId::Thalamus
    }

    fn id_kind(&self) -> IdKind {
        IdKind::Integer
    }

    fn as_dyn(&self) -> &dyn Dialect {
        self
    }

    fn recognize(&self, method: &Method, path: &str) -> Match {
        let Some(segs) = wire::segments(path) else {
            return Match::None;
        };
        let s: Vec<&str> = segs.iter().map(|seg| &**seg).collect();
        match s.as_slice() {
            // `/api/v4/cases/files/files` is both paths: the method decides.
            ["api", "v4", "cases", "files", id] if *id != "files" || method == Method::GET => {
                by_method(method, &[(Method::GET, Op::Download)], |op| {
                    Request::new(op).file(id)
                })
            }
            ["api", "v4", "cases", case, "files"] => {
                by_method(method, &[(Method::POST, Op::Upload)], |op| {
                    Request::new(op).case(case)
                })
            }
            ["api", "v4", "cases", case, "files", id] => {
                by_method(method, &[(Method::DELETE, Op::Delete)], |op| {
                    Request::new(op).case(case).file(id)
                })
            }
            _ => Match::None,
        }
    }

    fn owns(&self, path: &str) -> bool {
        path == "/api/v4" || path.starts_with("/api/v4/")
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
        req: &Request,
        body: BodyStream,
        limits: &Limits,
    ) -> Result<Inbound, Error> {
        let boundary = wire::multipart_boundary(parts)?;
        let spec = FormSpec {
            file_field: "file",
            file_last: false,
            map: |_, _| Ok(None),
        };
        Ok(Inbound {
            meta: UploadMeta::from_path(req.case_id.clone(), None),
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

    fn link(&self, links: &Links, _case_id: &str, file_id: &str) -> Option<String> {
        Some(links.url_of(&[FILES_PATH, &wire::segment(file_id)]))
    }

    fn upload_lists_case(&self) -> bool {
        true
    }

    fn render_upload(&self, o: &Outcome) -> Response<Body> {
        let who = o.file.uploader.clone().unwrap_or_default();
        let first = who
            .first_name
            .or(who.full_name)
            .or(who.username)
            .unwrap_or_default();
        let context = json!({"simpleProfile": {
            "firstname": first,
            "lastname": who.last_name.unwrap_or_default(),
            "email": who.email.unwrap_or_default(),
        }});
        json_bytes_response(
            StatusCode::OK,
            upload_answer(&context, &o.case_files, &o.links),
        )
    }

    fn render_deleted(&self, deleted: bool) -> Response<Body> {
        json_response(StatusCode::OK, &Value::Bool(deleted))
    }

    fn render_error(&self, err: &Error) -> Response<Body> {
        // Thalamus reports upstream trouble as a logical failure: 200 with FAILED.
        let status = match err.side {
            Side::Upstream => StatusCode::OK,
            Side::Client | Side::Internal => err.status,
        };
        text_response(status, FAILED)
    }

    fn strip_credentials(&self, parts: &mut Parts) {
        parts.headers.remove("thalamus-token");
        parts.headers.remove("thalamus-touchpoint");
    }

    fn credential_query_keys(&self) -> &'static [&'static str] {
        &["token", "touchpoint"]
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
            path: format!("/api/v4/cases/{}/files", seg(case)),
            headers: vec![(http::header::CONTENT_TYPE, ct)],
            body: Box::new(enc),
        })
    }

    fn read_stored(&self, body: &[u8], _meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Answer {
        if self.failed_answer(body) {
            return Answer::Failed(Error::upstream_failed("The case system answered FAILED."));
        }
        let Ok(v) = wire::from_json::<Value>(body) else {
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

    fn failed_answer(&self, body: &[u8]) -> bool {
        body.trim_ascii() == FAILED.as_bytes()
    }

    fn fails_with_200(&self) -> bool {
        true
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
    ) -> Option<Call> {
        let case = meta.case_id.as_deref()?;
        Some(Call::post_json(
            format!("/api/v4/cases/{}/notes", seg(case)),
            json!({ "description": comment }),
        ))
    }

    fn read_comment_answer(&self, body: &[u8], _result: &mut UploadResult) -> bool {
        !self.failed_answer(body)
    }

    fn needs_case(&self, op: Op) -> bool {
        op == Op::Delete
    }

    fn asked_by_id_alone(&self) -> bool {
        false
    }

    fn download_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Call {
        Call::get(format!("/api/v4/cases/files/{}", seg(&file.id)))
    }

    fn delete_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::delete(format!(
            "/api/v4/cases/{}/files/{}",
            seg(file.case_id.as_deref().unwrap_or_default()),
            seg(&file.id)
        )))
    }

    fn read_deleted(&self, body: &[u8]) -> bool {
        body.trim_ascii() == b"true"
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

/// Where a file's download link points, before its id (under the route's prefix).
const FILES_PATH: &str = "/api/v4/cases/files/";

/// A Thalamus upload answer (the `attachements` spelling is Thalamus's own):
/// `{"context":…,"attachments":{"attachements":[{"id":…,"url":…},…]}}`, written straight
/// into one buffer. The list holds every file of the case (up to
/// [`CASE_FILES_MAX`](crate::upload::CASE_FILES_MAX)); their links differ only in the id,
/// so what comes before it is escaped once, not once per file (a link built and escaped
/// per entry was most of the answer's cost), and the entries are kept written with the
/// case's listing ([`CaseFiles::with_written`]): an answer copies them, and writes only the
/// files added since the last.
fn upload_answer(context: &Value, files: &CaseFiles, links: &Links) -> Vec<u8> {
    let start = serde_json::to_string(&links.url(FILES_PATH)).unwrap_or_default();
    // The JSON string's content, without its quotes.
    let start = start
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(128 + files.count() * (start.len() + 32));
    out.extend_from_slice(b"{\"context\":");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, context);
    out.extend_from_slice(b",\"attachments\":{\"attachements\":[");
    // One file's entry; the comma after the last is taken off below.
    let entry = |id: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(b"{\"id\":");
        let _ = serde_json::to_writer(&mut *out, &JsonId(id));
        out.extend_from_slice(b",\"url\":\"");
        out.extend_from_slice(start.as_bytes());
        // A percent-encoded segment is unreserved ASCII and `%`: nothing JSON escapes.
        out.extend_from_slice(wire::segment(id).as_bytes());
        out.extend_from_slice(b"\"},");
    };
    files.with_written(start, entry, |listed, new| {
        out.extend_from_slice(listed);
        if let Some(id) = new {
            entry(id, &mut out);
        }
    });
    // The last entry's comma.
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.extend_from_slice(b"]}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer as serde wrote it from structs before it was written by hand: the
    /// oracle for [`upload_answer`].
    fn answer_by_serde(context: &Value, ids: &[String], links: &Links) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Answer<'a> {
            context: &'a Value,
            attachments: Attachments,
        }
        #[derive(serde::Serialize)]
        struct Attachments {
            attachements: Vec<Entry>,
        }
        #[derive(serde::Serialize)]
        struct Entry {
            id: Value,
            url: String,
        }
        let attachements = ids
            .iter()
            .map(|id| Entry {
                id: crate::upload::id_json(id),
                url: Thalamus.link(links, "case", id).unwrap_or_default(),
            })
            .collect();
        serde_json::to_vec(&Answer {
            context,
            attachments: Attachments { attachements },
        })
        .unwrap()
    }

    #[test]
    fn an_upload_answer_has_the_bytes_serde_writes() {
        let context = json!({"simpleProfile": {
            "firstname": "Ann \"A\" \\ \u{1}",
            "lastname": "",
            "email": "a@example.com",
        }});
        let ids: Vec<String> = [
            "1",
            "42",
            "007",
            "0",
            "18446744073709551616",
            "a b/c",
            "\"q\"\\",
            "ü€",
            "",
        ]
        .map(String::from)
        .to_vec();
        let plain = Links {
            base: "http://127.0.0.1:8080".into(),
            prefix: String::new(),
        };
        let odd = Links {
            base: "https://cases.example/a\"b\\".into(),
            prefix: "/thal ü".into(),
        };
        for links in [&plain, &odd] {
            for n in [0, 1, 3, ids.len()] {
                let ours = upload_answer(&context, &CaseFiles::of(ids[..n].to_vec()), links);
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(answer_by_serde(&context, &ids[..n], links)).unwrap()
                );
            }
        }
        // One listing answered with links to one place, then another, then the first:
        // the entries it keeps written are written again for the other.
        let held = CaseFiles::of(ids.clone());
        for links in [&plain, &odd, &plain] {
            assert_eq!(
                String::from_utf8(upload_answer(&context, &held, links)).unwrap(),
                String::from_utf8(answer_by_serde(&context, &ids, links)).unwrap()
            );
        }
    }

    fn ctx() -> BackCtx<'static> {
        static OPTIONS: std::sync::LazyLock<super::super::UpstreamOptions> =
            std::sync::LazyLock::new(Default::default);
        BackCtx {
            base_url: "http://t",
            options: &OPTIONS,
            client_space: None,
            raw_wanted: false,
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
    fn recognizes_its_paths_and_methods() {
        let post = Method::POST;
        assert_eq!(
            Thalamus.recognize(&post, "/api/v4/cases/17/files"),
            Match::Op(Request::new(Op::Upload).case("17"))
        );
        assert_eq!(
            Thalamus.recognize(&Method::GET, "/api/v4/cases/17/files"),
            Match::Method("POST")
        );
        assert_eq!(
            Thalamus.recognize(&Method::GET, "/api/v4/cases/files/9"),
            Match::Op(Request::new(Op::Download).file("9"))
        );
        assert_eq!(
            Thalamus.recognize(&Method::DELETE, "/api/v4/cases/17/files/9"),
            Match::Op(Request::new(Op::Delete).case("17").file("9"))
        );
        assert_eq!(
            Thalamus.recognize(&Method::GET, "/api/v4/cases/17/files/9"),
            Match::Method("DELETE")
        );
        assert_eq!(
            Thalamus.recognize(&Method::GET, "/api/v4/cases/files/files"),
            Match::Op(Request::new(Op::Download).file("files"))
        );
        assert_eq!(
            Thalamus.recognize(&post, "/api/v4/cases/files/files"),
            Match::Op(Request::new(Op::Upload).case("files"))
        );
        assert_eq!(
            Thalamus.recognize(&post, "/api/v2/cases/17/files"),
            Match::None
        );
        assert!(Thalamus.owns("/api/v4/cases/17/notes"));
        assert!(!Thalamus.owns("/api/v2/cases"));
    }
}
