//! Thalamus v4: `POST /api/v4/cases/{caseInstanceId}/files`, multipart with one `file`
//! part; credentials as `touchpoint` + `token` (query or `Thalamus-*` headers). Its answer
//! lists every attachment of the case under the misspelt key `attachements`; every
//! failure is the text `FAILED`, for logical failures even with status 200. Comments go
//! to the case's notes by a second call. Files are downloaded by id alone
//! (`GET /api/v4/cases/files/{id}`) and deleted under their case (200 `true`/`false`);
//! Thalamus has no list, record or info of its own, so casegate answers those from its
//! ledger.

use std::borrow::Cow;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::Value;

use super::wire::{self, segment as seg, MultipartBody};
use super::{
    by_method, Answer, AuthKind, BackCtx, Call, Dialect, DialectId, FrontAuth, IdKind, Match, Op,
    Outbound, Request,
};
use crate::codec::json_out::{json_object, Object};
use crate::codec::json_read::{Reader, Val};
use crate::error::{
    json_bytes_response, json_pieces_response, json_response, text_response, Body, Error, Side,
};
use crate::inbound::{self, BodyStream, FormSpec, Inbound, Limits};
use crate::ledger::CaseFiles;
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
        let s = wire::segment_strs(&segs);
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
            .map(Cow::Borrowed)
            .or_else(|| wire::query_value(parts, "token"));
        let touchpoint = wire::header(parts, "thalamus-touchpoint")
            .map(Cow::Borrowed)
            .or_else(|| wire::query_value(parts, "touchpoint"));
        match (token, touchpoint) {
            (Some(t), Some(tp)) if !tp.is_empty() && auth.tokens.matches(&t) => Ok(()),
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
        upload_answer(&context(o.file.uploader.as_ref()), &o.case_files, &o.links).response()
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
            path: ["/api/v4/cases/", &wire::segment(case), "/files"]
                .concat()
                .into(),
            headers: vec![(http::header::CONTENT_TYPE, ct)],
            body: Box::new(enc),
        })
    }

    fn read_stored(&self, body: &[u8], _meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Answer {
        if self.failed_answer(body) {
            return Answer::Failed(Error::upstream_failed("The case system answered FAILED."));
        }
        let read = match answer_in_place(body) {
            Some(read) => read,
            None => match answer_by_tree(body) {
                Some(read) => read,
                None => return Answer::StoredUnreadable("the answer is not JSON".into()),
            },
        };
        let (Some(newest), uploader) = read else {
            return Answer::StoredUnreadable("the answer has no attachments.attachements".into());
        };
        let Some(attachment) = newest else {
            return Answer::StoredUnreadable("the answer lists no attachment".into());
        };
        Answer::Stored(Box::new(UploadResult {
            attachment,
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
            ["/api/v4/cases/", &wire::segment(case), "/notes"].concat(),
            json_object(|o| {
                o.str("description", comment);
            }),
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

/// What an upload's answer says: its newest attachment (`None` without
/// `attachments.attachements`, `Some(None)` when no entry has an id), and the uploader's
/// profile. A key given twice keeps its last value, as in a tree.
///
/// The answer does not say which attachment is new: the highest id is ([`id_order`]; of
/// equal ids, the last listed, as `Iterator::max_by` picks). Only that one is kept: the
/// answer lists every file of the case, which may be thousands.
type Read = (Option<Option<Attachment>>, Person);

/// An upload's answer read in place by a [`Reader`], as [`answer_by_tree`] reads it;
/// `None` when it is read that way instead (an escape in a text it keeps, an id written
/// other than as a string or a plain integer, anything the reader does not take). Each
/// entry's id and link stay borrowed from the body; only the newest is copied out.
fn answer_in_place(body: &[u8]) -> Option<Read> {
    let mut r = Reader::new(body)?;
    let (mut newest, mut who) = (None, Person::default());
    while let Some(key) = r.next_key()? {
        match key {
            "attachments" => {
                newest = None;
                if !r.object_or_skip()? {
                    continue;
                }
                while r.next_named("attachements")? {
                    newest = None;
                    if !r.array_or_skip()? {
                        continue;
                    }
                    // The newest entry so far: its id's text, and its link as read.
                    let mut best: Option<(Cow<'_, str>, Val<'_>)> = None;
                    while r.next_item()? {
                        let (mut id, mut url) = (None, Val::Null);
                        if r.object_or_skip()? {
                            while let Some(key) = r.next_key()? {
                                match key {
                                    "id" => id = id_in_place(r.value()?)?,
                                    "url" => url = r.value()?,
                                    _ => r.skip()?,
                                }
                            }
                        }
                        let Some(id) = id else { continue };
                        let newer = best.as_ref().is_none_or(|(held, _)| {
                            id_order(&id, held) != std::cmp::Ordering::Less
                        });
                        if newer {
                            best = Some((id, url));
                        }
                    }
                    newest = Some(match best {
                        None => None,
                        Some((id, url)) => Some(Attachment {
                            id: Some(id.into_owned()),
                            url: url.text()?,
                            ..Default::default()
                        }),
                    });
                }
            }
            "context" => {
                who = Person::default();
                if !r.object_or_skip()? {
                    continue;
                }
                while r.next_named("simpleProfile")? {
                    who = Person::default();
                    if !r.object_or_skip()? {
                        continue;
                    }
                    while let Some(key) = r.next_key()? {
                        let field = match key {
                            "firstname" => &mut who.first_name,
                            "lastname" => &mut who.last_name,
                            "email" => &mut who.email,
                            _ => {
                                r.skip()?;
                                continue;
                            }
                        };
                        *field = r.value()?.text()?.filter(|s| !s.is_empty());
                    }
                }
            }
            _ => r.skip()?,
        }
    }
    r.finish()?;
    Some((newest, who))
}

/// An entry's id as [`Val::id_text`] reads it, borrowed where it is a string: `Some(None)`
/// when it is not a string or a number; `None` (declined) where `id_text` declines.
fn id_in_place(v: Val<'_>) -> Option<Option<Cow<'_, str>>> {
    match v {
        Val::Str(s) => Some(Some(Cow::Borrowed(s))),
        other => Some(other.id_text()?.map(Cow::Owned)),
    }
}

/// An upload's answer read from its JSON tree; `None` when it is not JSON.
fn answer_by_tree(body: &[u8]) -> Option<Read> {
    let v = wire::from_json::<Value>(body).ok()?;
    let newest = v
        .pointer("/attachments/attachements")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| Some((a.get("id").and_then(id_text)?, a)))
                .max_by(|(a, _), (b, _)| id_order(a, b))
                .map(|(id, a)| Attachment {
                    id: Some(id),
                    url: a.get("url").and_then(Value::as_str).map(str::to_string),
                    ..Default::default()
                })
        });
    let profile = v.pointer("/context/simpleProfile");
    let field = |k: &str| {
        profile
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let who = Person {
        first_name: field("firstname"),
        last_name: field("lastname"),
        email: field("email"),
        ..Default::default()
    };
    Some((newest, who))
}

/// Orders ids numerically when both are all digits, else as text.
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(a) && digits(b) {
        let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
    } else {
        a.cmp(b)
    }
}

/// The answer's `context`: `{"simpleProfile":{"email":…,"firstname":…,"lastname":…}}`
/// (serde_json's map order, as the answer was written from a tree before), `""` for what
/// the uploader lacks; the first name falls back to the full name, then the user name.
fn context(who: Option<&Person>) -> String {
    let text = |f: fn(&Person) -> Option<&str>| who.and_then(f).unwrap_or("");
    let first = text(|p| {
        p.first_name
            .as_deref()
            .or(p.full_name.as_deref())
            .or(p.username.as_deref())
    });
    let (email, last) = (
        text(|p| p.email.as_deref()),
        text(|p| p.last_name.as_deref()),
    );
    let mut out = String::with_capacity(64 + first.len());
    let mut context = Object::new(&mut out);
    context.object("simpleProfile", |p| {
        p.str("email", email)
            .str("firstname", first)
            .str("lastname", last);
    });
    context.end();
    out
}

/// Where a file's download link points, before its id (under the route's prefix).
const FILES_PATH: &str = "/api/v4/cases/files/";

/// A Thalamus upload answer (the `attachements` spelling is Thalamus's own):
/// `{"context":…,"attachments":{"attachements":[{"id":…,"url":…},…]}}`, in pieces: its
/// head, the listed entries, and its tail (the new file's entry when it is not listed,
/// and the closing brackets). The list holds every file of the case (up to
/// [`CASE_FILES_MAX`](crate::upload::CASE_FILES_MAX)); their links differ only in the id,
/// so what comes before it is escaped once, not once per file (a link built and escaped
/// per entry was most of the answer's cost), and the entries are kept written with the
/// case's listing ([`CaseFiles::written`]): an answer writes only the files added since
/// the last, and sends the rest as they are kept, without copying them.
/// Answers listing at most this many bytes of entries are one buffer, the entries copied
/// into it; a larger one sends the entries' pieces as the listing keeps them.
const COPY_UP_TO: usize = 16 * 1024;

fn upload_answer(context: &str, files: &CaseFiles, links: &Links) -> UploadAnswer {
    let start = serde_json::to_string(&links.url(FILES_PATH)).unwrap_or_default();
    // The JSON string's content, without its quotes.
    let start = start
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default();
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
    files.with_written(start, entry, |listed| {
        let whole = listed.len() <= COPY_UP_TO;
        let mut out = Vec::with_capacity(
            128 + context.len() + start.len() + if whole { listed.len() } else { 0 },
        );
        out.extend_from_slice(b"{\"context\":");
        out.extend_from_slice(context.as_bytes());
        out.extend_from_slice(b",\"attachments\":{\"attachements\":[");
        let mut pieces = Vec::new();
        if whole {
            listed.copy_to(&mut out);
        } else {
            pieces.reserve(12);
            pieces.push(Bytes::from(std::mem::take(&mut out)));
            pieces.extend(listed.shared());
        }
        match files.extra() {
            Some(id) => {
                entry(id, &mut out);
                out.pop();
            }
            // The last listed entry's comma.
            None if whole => {
                if out.last() == Some(&b',') {
                    out.pop();
                }
            }
            None => {
                if let Some(last) = pieces.last_mut().filter(|l| l.ends_with(b",")) {
                    last.truncate(last.len() - 1);
                }
            }
        }
        out.extend_from_slice(b"]}}");
        if whole {
            return UploadAnswer::Whole(out);
        }
        pieces.push(Bytes::from(out));
        UploadAnswer::Pieces(pieces)
    })
}

/// A Thalamus upload answer's bytes: one buffer, or pieces ([`COPY_UP_TO`]).
enum UploadAnswer {
    Whole(Vec<u8>),
    Pieces(Vec<Bytes>),
}

impl UploadAnswer {
    fn response(self) -> Response<Body> {
        match self {
            UploadAnswer::Whole(bytes) => json_bytes_response(StatusCode::OK, bytes),
            UploadAnswer::Pieces(pieces) => json_pieces_response(StatusCode::OK, pieces),
        }
    }

    #[cfg(test)]
    fn bytes(self) -> Vec<u8> {
        match self {
            UploadAnswer::Whole(bytes) => bytes,
            UploadAnswer::Pieces(pieces) => pieces.concat(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            prefix: "".into(),
        };
        let odd = Links {
            base: "https://cases.example/a\"b\\".into(),
            prefix: "/thal ü".into(),
        };
        for links in [&plain, &odd] {
            for n in [0, 1, 3, ids.len()] {
                let ours = upload_answer(
                    &context.to_string(),
                    &CaseFiles::of(ids[..n].to_vec()),
                    links,
                );
                assert_eq!(
                    String::from_utf8(ours.bytes()).unwrap(),
                    String::from_utf8(answer_by_serde(&context, &ids[..n], links)).unwrap()
                );
                // The same files with the last one new: listed after the others, from the
                // answer's tail; or listed already, and not again.
                if let Some((new, listed)) = ids[..n].split_last() {
                    for files in [
                        CaseFiles::of_and(listed.to_vec(), new),
                        CaseFiles::of_and(ids[..n].to_vec(), new),
                    ] {
                        let ours = upload_answer(&context.to_string(), &files, links);
                        assert_eq!(
                            String::from_utf8(ours.bytes()).unwrap(),
                            String::from_utf8(answer_by_serde(&context, &ids[..n], links)).unwrap()
                        );
                    }
                }
            }
        }
        // A case whose entries are past COPY_UP_TO: sent as the pieces the listing keeps.
        let many: Vec<String> = (0..400).map(|i| format!("{i}")).collect();
        for files in [
            CaseFiles::of(many.clone()),
            CaseFiles::of_and(many[..399].to_vec(), "399"),
        ] {
            let ours = upload_answer(&context.to_string(), &files, &odd);
            assert!(
                matches!(&ours, UploadAnswer::Pieces(p) if p.len() > 2),
                "sent in pieces"
            );
            assert_eq!(
                String::from_utf8(ours.bytes()).unwrap(),
                String::from_utf8(answer_by_serde(&context, &many, &odd)).unwrap()
            );
        }
        // One listing answered with links to one place, then another, then the first:
        // the entries it keeps written are written again for the other.
        let held = CaseFiles::of(ids.clone());
        for links in [&plain, &odd, &plain] {
            let ours = upload_answer(&context.to_string(), &held, links);
            assert_eq!(
                String::from_utf8(ours.bytes()).unwrap(),
                String::from_utf8(answer_by_serde(&context, &ids, links)).unwrap()
            );
        }
    }

    /// The note carrying a comment has the bytes its tree had.
    #[test]
    fn a_note_has_the_bytes_its_tree_had() {
        let meta = UploadMeta::from_path(Some("4 2".into()), None);
        for comment in crate::codec::json_out::AWKWARD {
            let call = Thalamus
                .comment_call(comment, &meta, &UploadResult::default(), &ctx())
                .unwrap();
            assert_eq!(call.path, "/api/v4/cases/4%202/notes");
            assert_eq!(
                call.body.as_deref(),
                Some(json!({ "description": comment }).to_string().as_bytes())
            );
        }
    }

    /// The context as it was built before, a tree written by serde_json: the oracle for
    /// [`context`].
    fn context_by_tree(who: Option<&Person>) -> String {
        let who = who.cloned().unwrap_or_default();
        let first = who
            .first_name
            .or(who.full_name)
            .or(who.username)
            .unwrap_or_default();
        json!({"simpleProfile": {
            "firstname": first,
            "lastname": who.last_name.unwrap_or_default(),
            "email": who.email.unwrap_or_default(),
        }})
        .to_string()
    }

    #[test]
    fn the_context_has_the_bytes_its_tree_had() {
        let texts = [None, Some(""), Some("Ann"), Some("\"q\" \\ \u{1}\n ü€ </")];
        let mut seen = std::collections::HashSet::new();
        assert_eq!(context(None), context_by_tree(None));
        for (i, first) in texts.iter().enumerate() {
            for (j, full) in texts.iter().enumerate() {
                for (k, user) in texts.iter().enumerate() {
                    let (last, email) = (texts[(i + k) % 4], texts[(j + k + 1) % 4]);
                    let who = Person {
                        first_name: first.map(String::from),
                        full_name: full.map(String::from),
                        username: user.map(String::from),
                        last_name: last.map(String::from),
                        email: email.map(String::from),
                        ..Default::default()
                    };
                    let ours = context(Some(&who));
                    assert_eq!(ours, context_by_tree(Some(&who)), "{who:?}");
                    seen.insert(ours);
                }
            }
        }
        // Each text reached each member somewhere.
        assert!(seen.len() >= 20, "{}", seen.len());
    }

    /// A generated upload answer: `context.simpleProfile` and `attachments.attachements`
    /// of entries with ids and links, most of them as Thalamus writes them, the rest odd
    /// (members given twice, of the wrong kind, with escapes), broken one time in three.
    fn generated_answer(g: &mut crate::codec::json_read::gen::Gen) -> String {
        use crate::codec::json_read::gen::{IDS, TEXTS};
        let object = |g: &mut crate::codec::json_read::gen::Gen, mut members: Vec<String>| {
            for _ in 0..g.next(3) {
                let at = g.next(members.len() + 1);
                members.insert(at, format!("\"other\":{}", g.other()));
            }
            format!("{{{}}}", members.join(","))
        };
        let mut members = Vec::new();
        for _ in 0..=g.next(2) {
            let entries: Vec<String> = (0..g.next(5))
                .map(|_| match g.next(8) {
                    0 => g.pick(&["1", "\"k\"", "null", "[]"]).to_string(),
                    _ => {
                        // Mostly ids and links as Thalamus writes them.
                        let id = match g.next(4) {
                            0 => g.pick(IDS),
                            _ => g.pick(&["7", "12", "\"9\""]),
                        };
                        let mut m = vec![format!("\"id\":{id}")];
                        if g.next(4) > 0 {
                            let url = match g.next(3) {
                                0 => g.pick(TEXTS),
                                _ => "\"http://t/api/v4/cases/files/7\"",
                            };
                            m.push(format!("\"url\":{url}"));
                        }
                        if g.next(8) == 0 {
                            m.push(format!("\"id\":{}", g.pick(IDS)));
                        }
                        object(g, m)
                    }
                })
                .collect();
            let list = match g.next(10) {
                0 => g.pick(&["null", "{}", "\"x\""]).to_string(),
                _ => format!("[{}]", entries.join(",")),
            };
            let attachments = match g.next(10) {
                0 => g.pick(&["null", "[]", "7"]).to_string(),
                // The list given twice, the second of the wrong kind or empty.
                1 => {
                    let second = g.pick(&["null", "{}", "[]"]);
                    let twice = vec![
                        format!("\"attachements\":{list}"),
                        format!("\"attachements\":{second}"),
                    ];
                    object(g, twice)
                }
                _ => object(g, vec![format!("\"attachements\":{list}")]),
            };
            members.push(format!("\"attachments\":{attachments}"));
        }
        for _ in 0..g.next(3) {
            let mut profile = Vec::new();
            for k in ["firstname", "lastname", "email", "email"] {
                if g.next(4) > 0 {
                    profile.push(format!("\"{k}\":{}", g.pick(TEXTS)));
                }
            }
            let profile = match g.next(10) {
                0 => g.pick(&["null", "[]", "\"p\""]).to_string(),
                _ => object(g, profile),
            };
            members.push(format!(
                "\"context\":{}",
                object(g, vec![format!("\"simpleProfile\":{profile}")])
            ));
        }
        let body = object(g, members);
        g.break_sometimes(body)
    }

    /// Generated answers read in place give what their tree gives.
    #[test]
    fn generated_answers_read_in_place_give_what_the_tree_gives() {
        let mut g = crate::codec::json_read::gen::Gen::new(
            0x3c6e_f372_fe94_f82b,
            &["\"id\"", "\"url\"", "\"attachements\"", "\"simpleProfile\""],
        );
        let (mut in_place, mut picked, mut named) = (0, 0, 0);
        for _ in 0..10_000 {
            let body = generated_answer(&mut g);
            let Some(read) = answer_in_place(body.as_bytes()) else {
                continue;
            };
            in_place += 1;
            picked += usize::from(matches!(read.0, Some(Some(_))));
            named += usize::from(read.1 != Person::default());
            assert_eq!(Some(read), answer_by_tree(body.as_bytes()), "{body}");
        }
        assert!(
            in_place > 3_000 && picked > 1_000 && named > 1_000 && in_place < 9_000,
            "{in_place} read in place, {picked} with a newest file, {named} profiles"
        );
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
        assert_eq!(r.uploader.unwrap().email.as_deref(), Some("c@d"));
    }

    #[test]
    fn a_case_of_many_files_gives_its_highest_id() {
        // 20 000 entries in a shuffled order (a stride prime to the count), the highest
        // id (a number past the others' length) in the middle, the rest strings and numbers.
        let n = 20_000u64;
        let entries: Vec<String> = (0..n)
            .map(|i| (i * 7_919) % n)
            .map(|id| match id {
                10_000 => r#"{"id":100000,"url":"new"}"#.to_string(),
                id if id % 2 == 0 => format!(r#"{{"id":{id},"url":"u{id}"}}"#),
                id => format!(r#"{{"url":"u{id}","id":"{id}"}}"#),
            })
            .collect();
        let body = format!(
            r#"{{"context":{{}},"attachments":{{"attachements":[{}]}}}}"#,
            entries.join(",")
        );
        let Answer::Stored(r) =
            Thalamus.read_stored(body.as_bytes(), &UploadMeta::default(), &ctx())
        else {
            panic!("not stored")
        };
        assert_eq!(r.attachment.id.as_deref(), Some("100000"));
        assert_eq!(r.attachment.url.as_deref(), Some("new"));
        assert_eq!(
            answer_in_place(body.as_bytes()),
            answer_by_tree(body.as_bytes())
        );
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
