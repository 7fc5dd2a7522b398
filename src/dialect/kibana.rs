//! Kibana Cases: `POST [/s/{space}]/api/cases/{caseId}/files`, multipart with `file`
//! and an optional `filename` display name; every POST and DELETE needs `kbn-xsrf`.
//! Kibana derives the MIME type from the part filename's extension and refuses types
//! outside its allow-list, so the part filename always carries the right extension. The
//! answer is the whole case; the file is its `.files` external-reference comment, so a
//! file has two ids: the comment's (read and delete it) and the file's (download it).
//! Comments go in by a second call, `POST /api/cases/{id}/comments`. Reading back: the
//! case (`GET /api/cases/{id}`) lists its files, `comments/{id}` is one, `comments/_find`
//! pages the user comments, and the blob route serves the bytes (204 when empty).

use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::wire::{self, segment as seg, MultipartBody};
use super::{
    by_method, Answer, AuthKind, BackCtx, Call, Dialect, DialectId, FrontAuth, IdKind, Match, Op,
    Outbound, Request,
};
use crate::codec::b64;
use crate::codec::json_out::{json_object, Object};
use crate::codec::json_read::{Reader, Val};
use crate::error::{json_bytes_response, json_response, Body, Error};
use crate::inbound::{self, BodyStream, FormSpec, Inbound, Limits};
use crate::upload::{
    id_text, now_rfc3339_millis, split_ext, Attachment, CommentsPage, Field, FileRef, FileView,
    Kind, Kinds, Listed, Listing, Outcome, Page, Person, UploadMeta, UploadResult,
};

pub struct Kibana;

/// Longest display name Kibana accepts in the `filename` field.
pub const MAX_DISPLAY_CHARS: usize = 160;
const XSRF_MESSAGE: &str = "Request must contain a kbn-xsrf header.";
/// The attachment type of a file's comment, as a literal for `concat!` (the made
/// comment's fixed members are written as one run) and as [`FILES_TYPE`].
macro_rules! files_type {
    () => {
        ".files"
    };
}
/// The `version` of the cases and comments casegate makes, likewise.
macro_rules! made_version {
    () => {
        "WzAsMV0="
    };
}
const FILES_TYPE: &str = files_type!();
/// The `version` of the cases and comments casegate makes (the tests' trees use it).
#[cfg(test)]
const VERSION: &str = made_version!();
/// The owner of cases when nobody says otherwise.
const DEFAULT_OWNER: &str = "cases";
/// Words under `/api/cases/` that are Kibana's own endpoints, never case ids.
const CASE_WORDS: &[&str] = &["tags", "reporters", "configure", "status", "alerts"];
/// `comments/_find`: 20 per page unless asked, at most 100.
const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 100;

/// A case id, not one of Kibana's own words (`_find`, `tags`, anything starting with
/// `_`). An empty one is left for the pipeline to refuse.
fn is_case(id: &str) -> bool {
    !id.starts_with('_') && !CASE_WORDS.contains(&id)
}

impl Dialect for Kibana {
    fn id(&self) -> DialectId {
        DialectId::Kibana
    }

    fn id_kind(&self) -> IdKind {
        IdKind::Text
    }

    fn as_dyn(&self) -> &dyn Dialect {
        self
    }

    fn recognize(&self, method: &Method, path: &str) -> Match {
        let (space, rest) = wire::split_space(path);
        let Some(segs) = wire::segments(rest) else {
            return Match::None;
        };
        let s = wire::segment_strs(&segs);
        let make = |op: Op, case: Option<&str>, file: Option<&str>| {
            let mut r = Request::new(op);
            r.case_id = case.map(str::to_string);
            r.file_id = file.map(str::to_string);
            r.space = space.clone();
            r
        };
        match s.as_slice() {
            ["api", "cases", case] if is_case(case) => {
                by_method(method, &[(Method::GET, Op::List)], |op| {
                    make(op, Some(case), None)
                })
            }
            ["api", "cases", case, "files"] if is_case(case) => {
                by_method(method, &[(Method::POST, Op::Upload)], |op| {
                    make(op, Some(case), None)
                })
            }
            ["api", "cases", case, "comments", "_find"] if is_case(case) => {
                by_method(method, &[(Method::GET, Op::Comments)], |op| {
                    make(op, Some(case), None)
                })
            }
            ["api", "cases", case, "comments", id] if is_case(case) && !id.starts_with('_') => {
                by_method(
                    method,
                    &[(Method::GET, Op::Get), (Method::DELETE, Op::Delete)],
                    |op| make(op, Some(case), Some(id)),
                )
            }
            ["api", "files", "files", kind, file, "blob"]
            | ["api", "files", "files", kind, file, "blob", _] => {
                let Some(owner) = kind.strip_suffix("FilesCases").filter(|o| !o.is_empty()) else {
                    return Match::None;
                };
                by_method(method, &[(Method::GET, Op::Download)], |op| {
                    let mut r = make(op, None, Some(file));
                    r.owner = Some(owner.to_string());
                    r
                })
            }
            _ => Match::None,
        }
    }

    fn owns(&self, path: &str) -> bool {
        let (_, rest) = wire::split_space(path);
        path.starts_with("/s/")
            || rest == "/api/cases"
            || rest.starts_with("/api/cases/")
            || rest.starts_with("/api/files/")
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
            Some(p) if auth.tokens.matches(&p) => Ok(()),
            _ => Err(Error::unauthorized("Unauthorized")),
        }
    }

    /// Every POST and DELETE needs `kbn-xsrf`; GETs never do.
    fn preflight(&self, parts: &Parts, _req: &Request) -> Result<(), Error> {
        let changes = parts.method == Method::POST || parts.method == Method::DELETE;
        if changes && !parts.headers.contains_key("kbn-xsrf") {
            return Err(Error::bad_request(XSRF_MESSAGE));
        }
        Ok(())
    }

    fn page(&self, req: &Request, parts: &Parts) -> Result<Page, Error> {
        if req.op != Op::Comments {
            return Ok(Page::ALL);
        }
        let size = wire::query_number(parts, "perPage")?.unwrap_or(DEFAULT_PER_PAGE);
        let number = wire::query_number(parts, "page")?.unwrap_or(1);
        Ok(Page {
            number,
            size: size.min(MAX_PER_PAGE),
        })
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
            map: |name, value| {
                Ok((name == "filename" && !value.is_empty()).then_some(Field::DisplayName(value)))
            },
        };
        Ok(Inbound {
            meta: UploadMeta::from_path(req.case_id.clone(), req.space.clone()),
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

    fn render_upload(&self, o: &Outcome) -> Response<Body> {
        match &o.case {
            Some(case) => json_response(StatusCode::OK, &WithId(case, &o.file.case_id)),
            None => synthesized_case_response(&o.file.case_id, std::slice::from_ref(&o.file)),
        }
    }

    fn render_list(&self, l: &Listing) -> Response<Body> {
        match &l.case {
            Some(case) => json_response(StatusCode::OK, &WithId(case, &l.case_id)),
            None => synthesized_case_response(&l.case_id, &l.files),
        }
    }

    fn render_record(&self, f: &FileView) -> Response<Body> {
        json_bytes_response(StatusCode::OK, file_comment(f).into_bytes())
    }

    fn render_comments(&self, p: &CommentsPage) -> Response<Body> {
        let body = p.raw.clone().unwrap_or_else(
            || json!({"page": p.page.number, "per_page": p.page.size, "total": 0, "comments": []}),
        );
        json_response(StatusCode::OK, &body)
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

    fn upstream_keys(&self) -> &'static [&'static str] {
        &["space", "owner"]
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
            path: [
                &space_prefix(ctx),
                "/api/cases/",
                &wire::segment(case),
                "/files",
            ]
            .concat()
            .into(),
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
        let Some(read) = read_case_files(body, ctx.raw_wanted, Some(&want)) else {
            return Answer::StoredUnreadable("the answer is not JSON".into());
        };
        let Some(files) = read.files else {
            return Answer::StoredUnreadable("the case has no comments".into());
        };
        // The one picked (the newest named like the upload, else the newest); both readings
        // give only `.files` comments with a file id.
        let Some(mut attachment) = files.into_iter().next() else {
            return Answer::StoredUnreadable("the case holds no .files comment".into());
        };
        // The uploader taken out: the upload reads it from here when the file has none.
        let uploader = attachment.uploader.take();
        Answer::Stored(Box::new(UploadResult {
            owner: read.owner,
            uploader,
            attachment,
            case: read.case,
            ..Default::default()
        }))
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
    ) -> Option<Call> {
        let case = meta.case_id.as_deref()?;
        let owner = result
            .owner
            .as_deref()
            .or(ctx.option("owner"))
            .unwrap_or(DEFAULT_OWNER);
        Some(
            Call::post_json(
                [
                    &space_prefix(ctx),
                    "/api/cases/",
                    &wire::segment(case),
                    "/comments",
                ]
                .concat(),
                // In serde_json's (sorted) key order, as it was written from a tree.
                json_object(|o| {
                    o.str("comment", comment)
                        .str("owner", owner)
                        .str("type", "user");
                }),
            )
            .header("kbn-xsrf", "true"),
        )
    }

    fn read_comment_answer(&self, body: &[u8], result: &mut UploadResult) -> bool {
        // The case after the comment, for a Kibana client (the only one shown the case).
        if result.case.is_some() {
            if let Ok(case @ Value::Object(_)) = serde_json::from_slice::<Value>(body) {
                result.case = Some(case);
            }
        }
        true
    }

    fn needs_case(&self, op: Op) -> bool {
        op != Op::Download
    }

    fn list_call(&self, case_id: &str, _page: Page, ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::get(format!(
            "{}/api/cases/{}",
            space_prefix(ctx),
            seg(case_id)
        )))
    }

    fn read_list(&self, body: &[u8], ctx: &BackCtx<'_>) -> Result<Listed, String> {
        let read = read_case_files(body, ctx.raw_wanted, None).ok_or("the case is not JSON")?;
        let files = read.files.ok_or("the case has no comments")?;
        Ok(Listed {
            total: Some(files.len() as u64),
            files,
            case: read.case,
            whole: true,
        })
    }

    fn record_call(&self, file: &FileRef, ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::get(comment_path(file, ctx)))
    }

    fn read_record(&self, body: &[u8], ctx: &BackCtx<'_>) -> Result<Attachment, String> {
        let c: Value = serde_json::from_slice(body).map_err(|_| "the comment is not JSON")?;
        if c.get("id").and_then(id_text).is_none() {
            return Err("the comment has no id".into());
        }
        Ok(comment_attachment(&c, ctx.raw_wanted))
    }

    fn download_call(&self, file: &FileRef, ctx: &BackCtx<'_>) -> Call {
        let owner = file
            .owner
            .as_deref()
            .or(ctx.option("owner"))
            .unwrap_or(DEFAULT_OWNER);
        Call::get(format!(
            "{}/api/files/files/{}FilesCases/{}/blob",
            space_prefix(ctx),
            seg(owner),
            seg(&file.id)
        ))
    }

    fn honours_range(&self) -> bool {
        true
    }

    fn delete_call(&self, file: &FileRef, ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::delete(comment_path(file, ctx)).header("kbn-xsrf", "true"))
    }

    fn comments_call(&self, case_id: &str, page: Page, ctx: &BackCtx<'_>) -> Option<Call> {
        let q = wire::query(&[
            ("page", page.number.to_string()),
            ("perPage", page.size.to_string()),
        ]);
        Some(Call::get(format!(
            "{}/api/cases/{}/comments/_find?{q}",
            space_prefix(ctx),
            seg(case_id)
        )))
    }
}

/// `/s/{space}` for the route's space, else the client's, else nothing.
fn space_prefix(ctx: &BackCtx<'_>) -> String {
    match ctx.option("space").or(ctx.client_space) {
        Some(s) if !s.is_empty() => format!("/s/{}", seg(s)),
        _ => String::new(),
    }
}

/// `{space}/api/cases/{case}/comments/{comment}`.
fn comment_path(file: &FileRef, ctx: &BackCtx<'_>) -> String {
    format!(
        "{}/api/cases/{}/comments/{}",
        space_prefix(ctx),
        seg(file.case_id.as_deref().unwrap_or_default()),
        seg(file.comment_id.as_deref().unwrap_or(&file.id))
    )
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
                // `.` then the extension in any ASCII case (the `.` is one byte).
                if tail
                    .strip_prefix('.')
                    .is_some_and(|t| t.eq_ignore_ascii_case(ext))
                {
                    stem = s;
                }
            }
        }
    }
    // The first characters, copied as one slice.
    let end = stem
        .char_indices()
        .nth(MAX_DISPLAY_CHARS)
        .map_or(stem.len(), |(at, _)| at);
    stem[..end].to_owned()
}

fn is_file_comment(c: &Value) -> bool {
    c.get("type").and_then(Value::as_str) == Some("externalReference")
        && c.get("externalReferenceAttachmentTypeId")
            .and_then(Value::as_str)
            == Some(FILES_TYPE)
}

/// What an upload's answer or a list's says of a case: its owner, its `.files` comments as
/// [`case_files`] gives them, the case's id in each (`None`: the case has no array of
/// comments), and the case itself when a Kibana client is to be shown it.
struct CaseRead {
    owner: Option<String>,
    files: Option<Vec<Attachment>>,
    case: Option<Value>,
}

/// A case from its bytes (`None`: not JSON). For another dialect's client it is read in
/// place ([`case_in_place`]) when it can be, else as [`read_case`] reads it; the two read
/// the same answer the same way. With `pick`, an upload's answer: of the `.files` comments
/// only the one [`Kibana::read_stored`] keeps is given (the newest named `pick`, else the
/// newest), by either reading.
fn read_case_files(body: &[u8], raw_wanted: bool, pick: Option<&str>) -> Option<CaseRead> {
    if let Some(read) = (!raw_wanted).then(|| case_in_place(body, pick)).flatten() {
        return Some(read);
    }
    let (case, whole) = match read_case(body, raw_wanted) {
        Some(case) => (case, raw_wanted),
        // An answer whose members read but whose whole tree does not (bytes that are not
        // UTF-8 in a string the members' reader skips, as serde_json skips them) is read
        // for a Kibana client as for any other, which is then shown a case made from what
        // casegate knows: the same file either way, never a stored file read as unreadable
        // for one client only.
        None if raw_wanted => (read_case(body, false)?, false),
        None => return None,
    };
    Some(CaseRead {
        owner: wire::text(&case, "owner"),
        files: case_files(&case, pick),
        case: whole.then_some(case),
    })
}

/// A case's id, owner and `.files` comments read in place by a [`Reader`], as
/// [`case_files`] reads them from the tree (a key given twice keeps its last value);
/// `None` when it is read the slower way (an escape in a text it keeps, an id written other
/// than as a string or a plain integer). Each comment is read borrowed from the answer
/// ([`CommentRef`]) and made an [`Attachment`] only when given: with `pick`, only the one
/// picked (a case with many files costs an upload a read of each, not a copy).
fn case_in_place(body: &[u8], pick: Option<&str>) -> Option<CaseRead> {
    let mut r = Reader::new(body)?;
    let (mut id, mut owner, mut files) = (None, None, None);
    while let Some(key) = r.next_key()? {
        match key {
            "id" => id = r.value()?.id_text()?,
            "owner" => owner = r.value()?.text()?,
            "comments" => {
                files = None;
                if !r.array_or_skip()? {
                    continue;
                }
                let mut list = Vec::new();
                // With `pick`: the newest named like it, and the newest.
                let (mut named, mut newest) = (None, None);
                while r.next_item()? {
                    if !r.object_or_skip()? {
                        continue;
                    }
                    let Some(comment) = comment_in_place(&mut r)? else {
                        continue;
                    };
                    match pick {
                        None => list.push(comment.attachment()),
                        Some(want) => {
                            if comment.is_named(want) {
                                named = Some(comment);
                            }
                            newest = Some(comment);
                        }
                    }
                }
                list.extend(named.or(newest).map(CommentRef::attachment));
                files = Some(list);
            }
            _ => r.skip()?,
        }
    }
    r.finish()?;
    for a in files.iter_mut().flatten() {
        a.case_id.clone_from(&id);
    }
    Some(CaseRead {
        owner,
        files,
        case: None,
    })
}

/// A `.files` comment with a file id, as [`comment_in_place`] reads it: borrowed from the
/// answer, its ids checked as [`Val::id_text`] reads them.
#[derive(Clone, Copy)]
struct CommentRef<'a> {
    comment_id: Option<Val<'a>>,
    id: Val<'a>,
    created_at: Option<&'a str>,
    /// `created_by`'s username, full name and email; `None`: no `created_by`.
    who: Option<[Option<&'a str>; 3]>,
    /// `externalReferenceMetadata.files[0]`: name, extension, type, creation.
    file: [Option<&'a str>; 4],
}

impl CommentRef<'_> {
    /// Whether the file's name as [`CommentRef::attachment`] writes it is `want`.
    fn is_named(&self, want: &str) -> bool {
        file_named(self.file[0], self.file[1], want)
    }

    /// The comment as [`comment_attachment`] reads it from the tree (its case id not yet
    /// set).
    fn attachment(self) -> Attachment {
        let owned = |t: Option<&str>| t.map(str::to_owned);
        let [name, extension, mime, created] = self.file;
        Attachment {
            id: self.id.id_text().flatten(),
            comment_id: self.comment_id.and_then(|v| v.id_text().flatten()),
            name: match (name, extension) {
                (Some(name), Some(ext)) if !ext.is_empty() => {
                    let mut joined = String::with_capacity(name.len() + 1 + ext.len());
                    joined.push_str(name);
                    joined.push('.');
                    joined.push_str(ext);
                    Some(joined)
                }
                (name, _) => owned(name),
            },
            content_type: owned(mime),
            created_at: owned(created.or(self.created_at)),
            uploader: self.who.map(|[username, full_name, email]| Person {
                username: owned(username),
                full_name: owned(full_name),
                email: owned(email),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Whether a `.files` comment's file of that name and extension is named `want` as an
/// attachment names it (`name.extension`, the name alone when there is no extension), the
/// two not joined to compare.
fn file_named(name: Option<&str>, extension: Option<&str>, want: &str) -> bool {
    match (name, extension) {
        (Some(name), Some(ext)) if !ext.is_empty() => {
            want.len() == name.len() + 1 + ext.len()
                && want.starts_with(name)
                && want.as_bytes().get(name.len()) == Some(&b'.')
                && want.ends_with(ext)
        }
        (name, _) => name == Some(want),
    }
}

/// The rest of a comment object the reader has entered, as [`comment_attachment`] reads
/// it: `Some(None)` when it is not a `.files` comment or names no file.
fn comment_in_place<'a>(r: &mut Reader<'a>) -> Option<Option<CommentRef<'a>>> {
    let (mut kind, mut type_id, mut id, mut comment_id) = (None, None, None, None);
    let (mut created_at, mut who) = (None, None);
    // `externalReferenceMetadata.files[0]`: name, extension, type, creation.
    let mut file: [Option<&str>; 4] = [None; 4];
    while let Some(key) = r.next_key()? {
        match key {
            "id" => comment_id = r.value()?.id_ref()?,
            "type" => kind = r.value()?.text_ref()?,
            "externalReferenceAttachmentTypeId" => type_id = r.value()?.text_ref()?,
            "externalReferenceId" => id = r.value()?.id_ref()?,
            "created_at" => created_at = r.value()?.text_ref()?,
            "created_by" => {
                let mut person = [None; 3];
                if r.object_or_skip()? {
                    while let Some(key) = r.next_key()? {
                        let at = match key {
                            "username" => 0,
                            "full_name" => 1,
                            "email" => 2,
                            _ => {
                                r.skip()?;
                                continue;
                            }
                        };
                        person[at] = r.value()?.text_ref()?;
                    }
                }
                who = Some(person);
            }
            "externalReferenceMetadata" => {
                file = [None; 4];
                if !r.object_or_skip()? {
                    continue;
                }
                while r.next_named("files")? {
                    file = [None; 4];
                    if !r.array_or_skip()? {
                        continue;
                    }
                    let mut first = true;
                    while r.next_item()? {
                        if !std::mem::take(&mut first) || !r.object()? {
                            r.skip()?;
                            continue;
                        }
                        while let Some(key) = r.next_key()? {
                            let at = match key {
                                "name" => 0,
                                "extension" => 1,
                                "mimeType" => 2,
                                "created" => 3,
                                _ => {
                                    r.skip()?;
                                    continue;
                                }
                            };
                            file[at] = r.value()?.text_ref()?;
                        }
                    }
                }
            }
            _ => r.skip()?,
        }
    }
    if kind != Some("externalReference") || type_id != Some(FILES_TYPE) {
        return Some(None);
    }
    Some(id.map(|id| CommentRef {
        comment_id,
        id,
        created_at,
        who,
        file,
    }))
}

/// A Kibana case from its bytes: whole when `whole` (a Kibana client is shown it as it
/// is), else only what [`case_files`] reads ([`CaseIn`]), unless the answer is unusual
/// (a key given twice, a comment that is not an object), which is read whole. `None`:
/// not JSON.
fn read_case(body: &[u8], whole: bool) -> Option<Value> {
    let slim = (!whole)
        .then(|| wire::from_json::<wire::Obj<CaseIn>>(body).ok())
        .flatten();
    match slim {
        Some(wire::Obj(case)) => Some(case.into_value()),
        None => wire::from_json(body).ok(),
    }
}

/// A case's members that [`case_files`] reads, each as whatever JSON it holds (`null`
/// kept), the rest skipped: the case of an upload's answer is read without building a
/// tree of all of it (about a tenth of a translated upload's CPU) and without copying
/// the comments for a client that is not shown them.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CaseIn {
    #[serde(deserialize_with = "present")]
    id: Option<Value>,
    #[serde(deserialize_with = "present")]
    owner: Option<Value>,
    #[serde(deserialize_with = "comments_in")]
    comments: Option<Option<CommentsIn>>,
}

type CommentsIn = Vec<wire::Obj<CommentIn>>;

/// A comment's members that [`comment_attachment`] and [`is_file_comment`] read.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CommentIn {
    #[serde(deserialize_with = "present")]
    id: Option<Value>,
    #[serde(rename = "type", deserialize_with = "present")]
    kind: Option<Value>,
    #[serde(
        rename = "externalReferenceAttachmentTypeId",
        deserialize_with = "present"
    )]
    type_id: Option<Value>,
    #[serde(rename = "externalReferenceId", deserialize_with = "present")]
    reference_id: Option<Value>,
    #[serde(rename = "externalReferenceMetadata", deserialize_with = "present")]
    metadata: Option<Value>,
    #[serde(deserialize_with = "present")]
    created_at: Option<Value>,
    #[serde(deserialize_with = "present")]
    created_by: Option<Value>,
}

/// A member that is there, `null` included (an absent one stays `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// `comments`: an array of objects, or `null` (kept as `Some(None)`, as a tree would).
fn comments_in<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<CommentsIn>>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

impl CaseIn {
    /// The case as a tree of only these members: what [`case_files`] reads of it gives
    /// the same as the whole case would.
    fn into_value(self) -> Value {
        let mut case = serde_json::Map::new();
        put(&mut case, "id", self.id);
        put(&mut case, "owner", self.owner);
        match self.comments {
            None => {}
            Some(None) => put(&mut case, "comments", Some(Value::Null)),
            Some(Some(comments)) => {
                let comments = comments.into_iter().map(|c| c.0.into_value()).collect();
                case.insert("comments".into(), Value::Array(comments));
            }
        }
        Value::Object(case)
    }
}

impl CommentIn {
    fn into_value(self) -> Value {
        let mut c = serde_json::Map::new();
        put(&mut c, "id", self.id);
        put(&mut c, "type", self.kind);
        put(&mut c, "externalReferenceAttachmentTypeId", self.type_id);
        put(&mut c, "externalReferenceId", self.reference_id);
        put(&mut c, "externalReferenceMetadata", self.metadata);
        put(&mut c, "created_at", self.created_at);
        put(&mut c, "created_by", self.created_by);
        Value::Object(c)
    }
}

fn put(map: &mut serde_json::Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.into(), v);
    }
}

/// The `.files` comments of a case that name a file, oldest first; `None` when it is not
/// a case. With `pick`, only the newest named `pick` (else the newest). Their comments'
/// JSON is not kept: a client shown the case (a Kibana client) is shown it whole, and
/// another never sees it.
fn case_files(case: &Value, pick: Option<&str>) -> Option<Vec<Attachment>> {
    let comments = case.get("comments")?.as_array()?;
    // A file id as `id_text` reads one: a string or a number.
    let files = comments.iter().filter(|c| {
        is_file_comment(c)
            && c.get("externalReferenceId")
                .is_some_and(|id| id.is_string() || id.is_number())
    });
    let picked: Vec<&Value> = match pick {
        None => files.collect(),
        Some(want) => {
            let (mut named, mut newest) = (None, None);
            for c in files {
                let file = first_file(c);
                let f = |k: &str| file.and_then(|f| f.get(k)).and_then(Value::as_str);
                if file_named(f("name"), f("extension"), want) {
                    named = Some(c);
                }
                newest = Some(c);
            }
            named.or(newest).into_iter().collect()
        }
    };
    Some(
        picked
            .into_iter()
            .map(|c| {
                let mut a = comment_attachment(c, false);
                a.case_id = case.get("id").and_then(id_text);
                a
            })
            .collect(),
    )
}

/// A case comment as a canonical attachment: for a `.files` comment the file id, name,
/// type and creation; always the comment's id, and the comment itself when `keep_raw`.
fn comment_attachment(c: &Value, keep_raw: bool) -> Attachment {
    let comment_id = c.get("id").and_then(id_text);
    let raw = keep_raw.then(|| c.clone());
    if !is_file_comment(c) {
        return Attachment {
            id: comment_id.clone(),
            comment_id,
            raw,
            ..Default::default()
        };
    }
    let file = first_file(c);
    let f = |k: &str| file.and_then(|f| f.get(k)).and_then(Value::as_str);
    let name = match (f("name"), f("extension")) {
        (Some(n), Some(e)) if !e.is_empty() => Some(format!("{n}.{e}")),
        (Some(n), _) => Some(n.to_string()),
        _ => None,
    };
    Attachment {
        id: c.get("externalReferenceId").and_then(id_text),
        comment_id,
        name,
        content_type: f("mimeType").map(str::to_string),
        created_at: f("created")
            .or_else(|| c.get("created_at").and_then(Value::as_str))
            .map(str::to_string),
        uploader: c.get("created_by").map(person),
        raw,
        ..Default::default()
    }
}

/// A comment's `externalReferenceMetadata.files[0]`: the first item of an array, as the
/// in-place reader reads it (`pointer` would also take a `"0"` member of an object, and
/// copies each part of its path).
fn first_file(comment: &Value) -> Option<&Value> {
    comment
        .get("externalReferenceMetadata")?
        .get("files")?
        .get(0)
}

fn person(v: &Value) -> Person {
    Person {
        username: wire::text(v, "username"),
        full_name: wire::text(v, "full_name"),
        email: wire::text(v, "email"),
        ..Default::default()
    }
}

/// A case written with its `id` set to the front's case id, as the case with `id`
/// inserted would be written (members in the map's order, `id` among them), without
/// copying the case to insert it: a case of many comments is written as it was read.
struct WithId<'a>(&'a Value, &'a str);

impl serde::Serialize for WithId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let Value::Object(members) = self.0 else {
            return self.0.serialize(s);
        };
        let len = members.len() + usize::from(!members.contains_key("id"));
        let mut map = s.serialize_map(Some(len))?;
        let mut id = Some(self.1);
        for (key, value) in members {
            // Keys come in order: `id` goes where the map would keep it.
            if key.as_str() >= "id" {
                if let Some(id) = id.take() {
                    map.serialize_entry("id", id)?;
                }
                if key == "id" {
                    continue;
                }
            }
            map.serialize_entry(key, value)?;
        }
        if let Some(id) = id {
            map.serialize_entry("id", id)?;
        }
        map.end()
    }
}

// Kibana's answers as casegate makes them, written straight into one buffer by
// `json_out` rather than built as JSON trees (a tenth of a small upload's CPU for a Kibana
// client) or serialised by serde's derive (which escaped each string a byte at a time: a
// sixth of kibana->caseiq's instructions). The members are written in the order a tree
// would print them (sorted, as serde_json's maps keep them); a test holds the bytes to
// the tree's.

/// The user object of Kibana's answers for a canonical uploader, as member `key`: email,
/// full name, `profile_uid` (`null`, a case's users have it; a comment's do not), and the
/// user name (else the first and last names).
fn write_user(o: &mut Object<'_>, key: &'static str, who: Option<&Person>, profile_uid: bool) {
    o.object(key, |u| {
        u.opt_str("email", who.and_then(|w| w.email.as_deref()))
            .opt_str("full_name", who.and_then(|w| w.full_name.as_deref()));
        if profile_uid {
            u.raw("profile_uid", "null");
        }
        // The user name, else the first and last names (`null` when both are absent).
        let full;
        let username = match who {
            Some(Person {
                username: Some(name),
                ..
            }) => Some(name.as_str()),
            Some(w) => {
                full = [w.first_name.as_deref(), w.last_name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                (!full.is_empty()).then_some(full.as_str())
            }
            None => None,
        };
        u.opt_str("username", username);
    });
}

/// A file as its `.files` comment (the back's own when the back is Kibana), onto `out`.
fn write_file_comment(out: &mut String, f: &FileView) {
    if let Some(raw) = &f.raw {
        // A `Value`'s `Display` is its compact JSON; writing into a `String` cannot fail.
        let _ = std::fmt::Write::write_fmt(out, format_args!("{raw}"));
        return;
    }
    let (stem, ext) = split_ext(&f.name);
    let created = stamp(f.created_at.as_deref());
    let mut c = Object::new(out);
    c.str("created_at", &created);
    write_user(&mut c, "created_by", f.uploader.as_ref(), false);
    c.members(concat!(
        r#""externalReferenceAttachmentTypeId":""#,
        files_type!(),
        '"'
    ))
    .str("externalReferenceId", &f.id)
    .object("externalReferenceMetadata", |m| {
        m.items("files", [()], |out, ()| {
            let mut file = Object::new(out);
            file.str("created", &created)
                .str("extension", ext.unwrap_or(""))
                .str("mimeType", &f.content_type)
                .str("name", stem);
            file.end();
        });
    })
    .members(r#""externalReferenceStorage":{"soType":"file","type":"savedObject"}"#)
    .str("id", &f.comment_id)
    .str("owner", &f.owner)
    .members(concat!(
        r#""pushed_at":null,"pushed_by":null,"type":"externalReference","#,
        r#""updated_at":null,"updated_by":null,"version":""#,
        made_version!(),
        '"'
    ));
    c.end();
}

/// A time as the ledger gave it (borrowed), else now.
fn stamp(at: Option<&str>) -> std::borrow::Cow<'_, str> {
    at.map_or_else(|| now_rfc3339_millis().into(), Into::into)
}

/// A file's `.files` comment as its JSON text.
fn file_comment(f: &FileView) -> String {
    let mut out = String::with_capacity(COMMENT_BYTES);
    write_file_comment(&mut out, f);
    out
}

/// About the bytes of one file's comment as casegate writes it (the buffer's first size).
const COMMENT_BYTES: usize = 640;

/// Answers with a case for a Kibana client whose upstream is not Kibana: every field of
/// Kibana's answer, the files as its `.files` comments.
fn synthesized_case_response(case_id: &str, files: &[FileView]) -> Response<Body> {
    let first = files.first();
    let created = stamp(first.and_then(|f| f.created_at.as_deref()));
    let updated = files.last().and_then(|f| f.created_at.as_deref());
    let case_user = first.and_then(|f| f.uploader.as_ref());
    let mut out = String::with_capacity(1024 + files.len() * COMMENT_BYTES);
    let mut case = Object::new(&mut out);
    case.members(r#""assignees":[],"category":null,"closed_at":null,"closed_by":null"#)
        .items("comments", files, write_file_comment)
        .members(r#""connector":{"fields":null,"id":"none","name":"none","type":".none"}"#)
        .str("created_at", &created);
    write_user(&mut case, "created_by", case_user, true);
    case.members(r#""customFields":[],"description":"","duration":null,"external_service":null"#)
        .str("id", case_id)
        .str("owner", first.map_or(DEFAULT_OWNER, |f| &f.owner))
        .members(concat!(
            r#""settings":{"syncAlerts":false},"severity":"low","status":"open","tags":[],"#,
            r#""title":"","totalAlerts":0,"totalComment":0"#
        ))
        .str("updated_at", updated.unwrap_or(&created));
    write_user(&mut case, "updated_by", case_user, true);
    case.members(concat!(r#""version":""#, made_version!(), '"'));
    case.end();
    json_bytes_response(StatusCode::OK, out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// The tree the answers were built as before they were written by hand: the oracle
    /// of their bytes.
    fn user_tree(who: Option<&Person>) -> Value {
        let who = who.cloned().unwrap_or_default();
        let username = who.username.clone().or_else(|| {
            let full = [who.first_name.as_deref(), who.last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!full.is_empty()).then_some(full)
        });
        json!({"email": who.email, "username": username, "full_name": who.full_name})
    }

    /// A file as its `.files` comment (the back's own when the back is Kibana).
    fn file_comment_tree(f: &FileView) -> Value {
        if let Some(raw) = &f.raw {
            return raw.clone();
        }
        let (stem, ext) = split_ext(&f.name);
        let created = f.created_at.clone().unwrap_or_else(now_rfc3339_millis);
        json!({
            "id": f.comment_id,
            "type": "externalReference",
            "owner": f.owner,
            "externalReferenceAttachmentTypeId": FILES_TYPE,
            "externalReferenceId": f.id,
            "externalReferenceStorage": {"type": "savedObject", "soType": "file"},
            "externalReferenceMetadata": {"files": [{
                "name": stem,
                "extension": ext.unwrap_or(""),
                "mimeType": f.content_type,
                "created": created,
            }]},
            "created_at": created,
            "created_by": user_tree(f.uploader.as_ref()),
            "pushed_at": null,
            "pushed_by": null,
            "updated_at": null,
            "updated_by": null,
            "version": VERSION,
        })
    }

    /// A case for a Kibana client whose upstream is not Kibana: every field of Kibana's
    /// answer, the files as its `.files` comments.
    fn synthesized_case_tree(case_id: &str, files: &[FileView]) -> Value {
        let first = files.first();
        let owner = first.map_or(DEFAULT_OWNER, |f| &f.owner);
        let created = first
            .and_then(|f| f.created_at.clone())
            .unwrap_or_else(now_rfc3339_millis);
        let updated = files
            .last()
            .and_then(|f| f.created_at.clone())
            .unwrap_or_else(|| created.clone());
        let mut case_user = user_tree(first.and_then(|f| f.uploader.as_ref()));
        if let Value::Object(m) = &mut case_user {
            m.insert("profile_uid".into(), Value::Null);
        }
        json!({
            "id": case_id,
            "tags": [],
            "owner": owner,
            "title": "",
            "status": "open",
            "version": VERSION,
            "category": null,
            "comments": files.iter().map(file_comment_tree).collect::<Vec<_>>(),
            "duration": null,
            "settings": {"syncAlerts": false},
            "severity": "low",
            "assignees": [],
            "closed_at": null,
            "closed_by": null,
            "connector": {"id": "none", "name": "none", "type": ".none", "fields": null},
            "created_at": created,
            "created_by": case_user,
            "updated_at": updated,
            "updated_by": case_user,
            "description": "",
            "totalAlerts": 0,
            "customFields": [],
            "totalComment": 0,
            "external_service": null,
        })
    }

    #[tokio::test]
    async fn made_answers_have_the_bytes_the_trees_had() {
        let person = |username: Option<&str>, first: Option<&str>, last: Option<&str>| Person {
            username: username.map(str::to_string),
            first_name: first.map(str::to_string),
            last_name: last.map(str::to_string),
            email: Some("a@b".into()),
            ..Default::default()
        };
        let file = |name: &str, uploader: Option<Person>, raw: Option<Value>| FileView {
            id: "f1".into(),
            comment_id: "c1".into(),
            case_id: "k".into(),
            name: name.into(),
            content_type: "text/plain".into(),
            created_at: Some("2026-01-01T00:00:00.000Z".into()),
            uploader,
            owner: "securitySolution".into(),
            raw,
            ..Default::default()
        };
        let files = [
            file("notes.txt", None, None),
            file("archive", Some(person(Some("u \"q\""), None, None)), None),
            file(".hidden", Some(person(None, Some("Ada"), Some("L"))), None),
            file("x.tar.gz", Some(person(None, None, None)), None),
            file("r.pdf", None, Some(json!({"id": "c9", "owner": "cases"}))),
            // Texts JSON escapes, in every member a file gives.
            FileView {
                id: "f\"2\\".into(),
                comment_id: "c\u{7f}\u{2028}".into(),
                content_type: "text/x-\"q\"".into(),
                owner: "o\u{1}ü".into(),
                created_at: Some("2026-01-02T00:00:00.000Z\"".into()),
                ..file(
                    "ü \u{1}\"q\".t\\xt",
                    Some(Person {
                        full_name: Some("F \n N".into()),
                        email: Some("e\"@b".into()),
                        last_name: Some("\t".into()),
                        ..Default::default()
                    }),
                    None,
                )
            },
        ];
        for f in &files {
            assert_eq!(
                file_comment(f),
                serde_json::to_string(&file_comment_tree(f)).unwrap(),
                "{}",
                f.name
            );
        }
        async fn body(resp: Response<Body>) -> String {
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        }
        for n in [0, 1, files.len()] {
            let made = body(synthesized_case_response("k1", &files[..n])).await;
            let tree = serde_json::to_string(&synthesized_case_tree("k1", &files[..n])).unwrap();
            if n == 0 {
                // No file: both stamp the time they were made, which may differ.
                let strip = |t: &str| {
                    let mut v: Value = serde_json::from_str(t).unwrap();
                    v["created_at"] = Value::Null;
                    v["updated_at"] = Value::Null;
                    v
                };
                assert_eq!(strip(&made), strip(&tree));
            } else {
                assert_eq!(made, tree);
            }
        }
        // Through the dialect: an upload's answer and a list for a Kibana client.
        let view = &files[2];
        let outcome = Outcome {
            file: view.clone(),
            case: None,
            ..Outcome::default()
        };
        assert_eq!(
            body(Kibana.render_upload(&outcome)).await,
            serde_json::to_string(&synthesized_case_tree(
                &view.case_id,
                std::slice::from_ref(view)
            ))
            .unwrap()
        );
    }

    /// Kibana's own case answer, then ones a tree reads leniently (nulls, numbers where
    /// strings go, comments that are not objects, a key given twice).
    const CASES: [&str; 10] = [
        r#"{"id":"c1","owner":"cases","title":"t","totalComment":1,"comments":[
            {"id":"u1","type":"user","comment":"hello","owner":"cases","created_at":"2026-01-01T00:00:00.000Z","created_by":{"username":"elastic","full_name":null,"email":null}},
            {"id":"k1","type":"externalReference","owner":"cases","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f1","externalReferenceStorage":{"type":"savedObject","soType":"file"},"externalReferenceMetadata":{"files":[{"name":"notes","extension":"txt","mimeType":"text/plain","created":"2026-01-01T00:00:01.000Z"}]},"created_at":"2026-01-01T00:00:01.000Z","created_by":{"username":"elastic","full_name":"E","email":"e@x"},"pushed_at":null,"version":"WzEsMV0="},
            {"id":"k2","type":"externalReference","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f2","externalReferenceMetadata":{"files":[{"name":"a.b","extension":"","mimeType":"image/png"}]},"created_at":"2026-01-02T00:00:00.000Z"}
        ],"settings":{"syncAlerts":false}}"#,
        r#"{"id":7,"owner":null,"comments":[{"id":9,"type":"externalReference","externalReferenceAttachmentTypeId":".files","externalReferenceId":10,"externalReferenceMetadata":null,"created_at":null,"created_by":null}]}"#,
        r#"{"id":"c","comments":[{"id":"k","type":"externalReference","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f","created_by":"someone"}]}"#,
        r#"{"id":"c","comments":null}"#,
        r#"{"id":"c"}"#,
        r#"{"id":"c","comments":[1,"x",{"id":"k","type":"externalReference","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f"}]}"#,
        r#"{"id":"c","id":"d","comments":[{"id":"k","id":"k2","type":"externalReference","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f"}]}"#,
        r#"{"id":"c","comments":{"id":"k"}}"#,
        r#"{"id":"c","comments":[["k","externalReference",".files","f"]]}"#,
        r#"["c","cases",[{"id":"k","type":"externalReference","externalReferenceAttachmentTypeId":".files","externalReferenceId":"f"}]]"#,
    ];

    fn read_ctx(options: &crate::dialect::UpstreamOptions, raw_wanted: bool) -> BackCtx<'_> {
        BackCtx {
            base_url: "",
            options,
            client_space: None,
            raw_wanted,
        }
    }

    /// The comment carrying an upload's comment has the bytes its tree had.
    #[test]
    fn a_comment_call_has_the_bytes_its_tree_had() {
        let options = Default::default();
        let meta = UploadMeta::from_path(Some("c 1".into()), None);
        for comment in crate::codec::json_out::AWKWARD {
            for owner in [None, Some("o\"b")] {
                let result = UploadResult {
                    owner: owner.map(String::from),
                    ..Default::default()
                };
                let call = Kibana
                    .comment_call(comment, &meta, &result, &read_ctx(&options, false))
                    .unwrap();
                assert_eq!(call.path, "/api/cases/c%201/comments");
                let owner = owner.unwrap_or(DEFAULT_OWNER);
                let tree = json!({"type": "user", "comment": comment, "owner": owner});
                assert_eq!(call.body.as_deref(), Some(tree.to_string().as_bytes()));
            }
        }
    }

    /// Reads `body` for a Kibana client (the whole tree) and for another dialect's (in
    /// place, or through the slimmer readers), and checks that the two agree.
    fn assert_same_reading(body: &str) {
        let options = Default::default();
        let ctx = |raw_wanted| read_ctx(&options, raw_wanted);
        let meta = UploadMeta {
            file_name: Some("notes.txt".into()),
            ..Default::default()
        };
        let strip = |mut r: UploadResult| {
            r.case = None;
            r.attachment.raw = None;
            r
        };
        let whole = Kibana.read_stored(body.as_bytes(), &meta, &ctx(true));
        let slim = Kibana.read_stored(body.as_bytes(), &meta, &ctx(false));
        match (whole, slim) {
            (Answer::Stored(w), Answer::Stored(s)) => {
                assert!(w.case.is_some() && s.case.is_none(), "{body}");
                // The case is kept whole for a Kibana client, not each comment's JSON.
                assert!(w.attachment.raw.is_none() && s.attachment.raw.is_none());
                assert_eq!(strip(*w), strip(*s), "{body}");
            }
            (Answer::StoredUnreadable(w), Answer::StoredUnreadable(s)) => {
                assert_eq!(w, s, "{body}")
            }
            _ => panic!("the two readings differ: {body}"),
        }
        let whole = Kibana.read_list(body.as_bytes(), &ctx(true));
        let slim = Kibana.read_list(body.as_bytes(), &ctx(false));
        match (whole, slim) {
            (Ok(w), Ok(s)) => {
                assert!(w.case.is_some() && s.case.is_none(), "{body}");
                let bare = |files: Vec<Attachment>| {
                    files
                        .into_iter()
                        .map(|a| Attachment { raw: None, ..a })
                        .collect::<Vec<_>>()
                };
                assert_eq!(bare(w.files), bare(s.files), "{body}");
                assert_eq!(w.total, s.total);
            }
            (Err(w), Err(s)) => assert_eq!(w, s, "{body}"),
            _ => panic!("the two readings differ: {body}"),
        }
    }

    /// A byte that is not UTF-8 in a member no reader keeps (found by the
    /// `upstream_answers` fuzz target): the answer's file is read the same for a Kibana
    /// client, which cannot be shown that case as it is, as for any other.
    #[test]
    fn a_case_with_a_stray_byte_in_a_skipped_member_gives_the_same_file_to_every_client() {
        let options = Default::default();
        let ctx = |raw_wanted| read_ctx(&options, raw_wanted);
        let meta = UploadMeta::default();
        let body: &[u8] = b"{\"id\":\"c1\",\"owner\":\"cases\",\"comments\":[{\"id\":\"k1\",\
            \"type\":\"externalReference\",\"externalReferenceAttachmentTypeId\":\".files\",\
            \"externalReferenceId\":\"f0\",\"other\":{\"mimeType\":\"t\xb9xt\"}}]}";
        let read = |raw_wanted| match Kibana.read_stored(body, &meta, &ctx(raw_wanted)) {
            Answer::Stored(r) => r,
            _ => panic!("not read as stored (raw_wanted {raw_wanted})"),
        };
        let (whole, slim) = (read(true), read(false));
        assert_eq!(whole.attachment.id.as_deref(), Some("f0"));
        assert_eq!(whole.attachment, slim.attachment);
        assert_eq!(whole.owner.as_deref(), Some("cases"));
        assert!(
            whole.case.is_none(),
            "a case that is not all UTF-8 is not shown"
        );
        let listed = |raw_wanted| Kibana.read_list(body, &ctx(raw_wanted)).map(|l| l.files);
        assert_eq!(listed(true), listed(false));
        assert_eq!(listed(true).map(|f| f.len()), Ok(1));
    }

    #[test]
    fn a_case_read_for_another_dialect_gives_what_the_whole_case_gives() {
        let options = Default::default();
        let ctx = |raw_wanted| read_ctx(&options, raw_wanted);
        let meta = UploadMeta {
            file_name: Some("notes.txt".into()),
            ..Default::default()
        };
        // The first five fit the typed reader, the rest fall back to the tree; all but the
        // last (an array) are read in place.
        for (i, body) in CASES.iter().enumerate() {
            let slim = serde_json::from_slice::<wire::Obj<CaseIn>>(body.as_bytes());
            assert_eq!(slim.is_ok(), i < 5, "{body}");
            let in_place = case_in_place(body.as_bytes(), None).is_some();
            assert_eq!(in_place, i < 9, "{body}");
            assert_same_reading(body);
        }
        // The first case as read: both files, the newest named like the upload.
        let Answer::Stored(r) = Kibana.read_stored(CASES[0].as_bytes(), &meta, &ctx(false)) else {
            panic!("not stored");
        };
        let files = case_in_place(CASES[0].as_bytes(), None).and_then(|c| c.files);
        assert_eq!(files.map(|f| f.len()), Some(2));
        // An upload's answer read in place gives only the file picked: the newest named
        // like the upload (not the newest), else the newest; a name without extension
        // compared whole.
        for (want, id) in [
            ("notes.txt", "f1"),
            ("report.pdf", "f2"),
            ("a.b", "f2"),
            ("notes", "f2"),
        ] {
            let files = case_in_place(CASES[0].as_bytes(), Some(want)).and_then(|c| c.files);
            let ids: Vec<_> = files.iter().flatten().map(|a| a.id.as_deref()).collect();
            assert_eq!(ids, [Some(id)], "{want}");
        }
        assert_eq!(r.attachment.id.as_deref(), Some("f1"));
        assert_eq!(r.attachment.comment_id.as_deref(), Some("k1"));
        assert_eq!(r.attachment.name.as_deref(), Some("notes.txt"));
        assert_eq!(r.attachment.content_type.as_deref(), Some("text/plain"));
        // The uploader moved to the result, where the upload reads it.
        assert_eq!(
            r.uploader.as_ref().and_then(|p| p.email.as_deref()),
            Some("e@x")
        );
        assert_eq!(r.attachment.uploader, None);
        assert_eq!(r.attachment.case_id.as_deref(), Some("c1"));
        assert_eq!(r.owner.as_deref(), Some("cases"));
    }

    /// A case as Kibana answers one, with members, comments and files picked at random
    /// (ids and texts of every kind, keys given twice, values of the wrong kind), broken
    /// now and then.
    fn generated_case(g: &mut crate::codec::json_read::gen::Gen) -> String {
        use crate::codec::json_read::gen::{IDS, TEXTS};
        // One `comments` member among a few others (now and then a second one).
        let mut members = Vec::new();
        for _ in 0..g.next(5) {
            members.push(match g.next(7) {
                0 | 1 => format!("\"id\":{}", g.pick(IDS)),
                2 => format!("\"owner\":{}", g.pick(TEXTS)),
                3 => format!("\"comments\":{}", g.pick(&["null", "\"x\"", "{}", "[]"])),
                _ => format!("\"other\":{}", g.other()),
            });
        }
        let comments = if g.next(8) == 0 {
            g.pick(&["null", "\"x\"", "{}"]).to_string()
        } else {
            let items: Vec<String> = (0..=g.next(4))
                .map(|_| generated_comment(g, IDS, TEXTS))
                .collect();
            format!("[{}]", items.join(","))
        };
        let at = g.next(members.len() + 1);
        members.insert(at, format!("\"comments\":{comments}"));
        g.break_sometimes(format!("{{{}}}", members.join(",")))
    }

    fn generated_comment(
        g: &mut crate::codec::json_read::gen::Gen,
        ids: &[&str],
        texts: &[&str],
    ) -> String {
        if g.next(6) == 0 {
            return g.pick(&["1", "\"k\"", "null", "[]"]).into();
        }
        // Most comments name a file, as Kibana's `.files` comments do.
        let mut members = vec![
            format!(
                "\"type\":{}",
                g.pick(&[
                    "\"externalReference\"",
                    "\"externalReference\"",
                    "\"externalReference\"",
                    "\"user\""
                ])
            ),
            format!(
                "\"externalReferenceAttachmentTypeId\":{}",
                g.pick(&["\".files\"", "\".files\"", "\".files\"", "\".other\""])
            ),
            format!(
                "\"externalReferenceId\":{}",
                g.pick(&["\"f1\"", "\"f2\"", "9", "null"])
            ),
        ];
        for _ in 0..g.next(6) {
            let (key, value) = match g.next(9) {
                0 => ("id", g.pick(ids).to_string()),
                1 => (
                    "type",
                    g.pick(&[
                        "\"externalReference\"",
                        "\"externalReference\"",
                        "\"user\"",
                        "3",
                    ])
                    .into(),
                ),
                2 => (
                    "externalReferenceAttachmentTypeId",
                    g.pick(&["\".files\"", "\".files\"", "\".other\"", "null"])
                        .into(),
                ),
                3 => ("externalReferenceId", g.pick(ids).to_string()),
                4 => ("created_at", g.pick(texts).to_string()),
                5 => {
                    let who = if g.next(4) == 0 {
                        g.pick(texts).to_string()
                    } else {
                        let keys = ["username", "full_name", "email", "other"];
                        let fields: Vec<String> = (0..g.next(4))
                            .map(|_| format!("\"{}\":{}", g.pick(&keys), g.pick(texts)))
                            .collect();
                        format!("{{{}}}", fields.join(","))
                    };
                    ("created_by", who)
                }
                6 | 7 => {
                    let files: Vec<String> = (0..g.next(3))
                        .map(|_| {
                            if g.next(5) == 0 {
                                return g.pick(texts).to_string();
                            }
                            let keys = ["name", "extension", "mimeType", "created", "other"];
                            let mut fields: Vec<String> = (0..g.next(6))
                                .map(|_| format!("\"{}\":{}", g.pick(&keys), g.pick(texts)))
                                .collect();
                            // Now and then the upload's own name (`notes.txt`), where the
                            // fields after it can still change it.
                            if g.next(2) == 0 {
                                let at = g.next(fields.len() + 1);
                                fields.insert(at, r#""name":"notes","extension":"txt""#.into());
                            }
                            format!("{{{}}}", fields.join(","))
                        })
                        .collect();
                    let meta = match g.next(6) {
                        0 => g.pick(texts).to_string(),
                        1 => format!("{{\"files\":{}}}", g.pick(texts)),
                        // `files` given twice, the second of the wrong kind or empty.
                        2 => format!(
                            "{{\"files\":[{}],\"files\":{}}}",
                            files.join(","),
                            g.pick(&["null", "[]", "{}"])
                        ),
                        _ => format!("{{\"files\":[{}]}}", files.join(",")),
                    };
                    ("externalReferenceMetadata", meta)
                }
                _ => ("other", g.other()),
            };
            members.push(format!("\"{key}\":{value}"));
        }
        format!("{{{}}}", members.join(","))
    }

    #[test]
    fn generated_cases_read_in_place_give_what_the_whole_case_gives() {
        let mut g = crate::codec::json_read::gen::Gen::new(
            0xbb67_ae85_84ca_a73b,
            &["\"id\"", "\"comments\"", "\"files\"", "\"name\""],
        );
        let (mut in_place, mut files, mut picked_named, mut picked_other) = (0, 0, 0, 0);
        for _ in 0..10_000 {
            let body = generated_case(&mut g);
            let all = case_in_place(body.as_bytes(), None);
            let picked = case_in_place(body.as_bytes(), Some("notes.txt"));
            if let Some(read) = all {
                in_place += 1;
                // What a pick gives is what choosing from them all gives: the newest named
                // like it, else the newest.
                let all = read.files.unwrap_or_default();
                files += all.len();
                let named = all
                    .iter()
                    .rposition(|a| a.name.as_deref() == Some("notes.txt"));
                match (named, all.len()) {
                    (Some(_), 2..) => picked_named += 1,
                    (None, 2..) => picked_other += 1,
                    _ => {}
                }
                let chosen = named.or(all.len().checked_sub(1)).map(|at| &all[at]);
                let picked = picked.and_then(|p| p.files).unwrap_or_default();
                assert_eq!(picked.first(), chosen, "{body}");
                assert!(picked.len() <= 1, "{body}");
            } else {
                assert!(picked.is_none(), "{body}");
            }
            assert_same_reading(&body);
        }
        assert!(
            in_place > 3_000 && files > 1_000 && picked_named > 10 && picked_other > 100,
            "{in_place} read in place, {files} files, of two or more {picked_named} \
             picked by name, {picked_other} the newest"
        );
    }

    #[test]
    fn a_case_is_written_with_the_front_case_id_as_the_tree_with_it_set_is() {
        let cases = [
            r#"{"assignees":[],"id":"c1","owner":"cases","comments":[{"id":"k"}]}"#,
            r#"{"assignees":[],"owner":"cases"}"#,
            r#"{"a":1,"b":2}"#,
            r#"{"j":1,"z":2}"#,
            r#"{"i":1,"id":null,"ida":2,"iD":3}"#,
            r#"{"id":{"id":"inner"}}"#,
            r#"{}"#,
            r#"[1,"id"]"#,
            r#""case""#,
        ];
        for case in cases {
            let case: Value = serde_json::from_str(case).unwrap_or_default();
            for id in ["front-7", "", "quote\"d"] {
                let mut tree = case.clone();
                if let Value::Object(m) = &mut tree {
                    m.insert("id".into(), Value::from(id));
                }
                let written = serde_json::to_vec(&WithId(&case, id)).unwrap_or_default();
                assert_eq!(
                    written,
                    serde_json::to_vec(&tree).unwrap_or_default(),
                    "{case} {id}"
                );
            }
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name("notes.txt", "notes.txt"), "notes");
        assert_eq!(display_name("notes", "notes.txt"), "notes");
        assert_eq!(display_name("Notes.TXT", "notes.txt"), "Notes");
        assert_eq!(display_name("a.tar.gz", "a.tar.gz"), "a.tar");
        assert_eq!(display_name("ü.pdf", "ü.pdf"), "ü");
        assert_eq!(display_name(&"é".repeat(200), "x.pdf").chars().count(), 160);
        assert_eq!(display_name(&"é".repeat(200), "x.pdf"), "é".repeat(160));
        assert_eq!(display_name(&"a".repeat(160), "x.pdf"), "a".repeat(160));
        assert_eq!(display_name("a.PDF", "a.pdf"), "a");
        assert_eq!(display_name("a.pdfx", "a.pdf"), "a.pdfx");
        assert_eq!(display_name("apdf", "a.pdf"), "apdf");
        assert_eq!(display_name("xapdf", "a.pdf"), "xapdf");
        assert_eq!(display_name("ab.pdf", "x.txt"), "ab.pdf");
        assert_eq!(display_name("ab.pdf", "x"), "ab.pdf");
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
    fn recognizes_spaces_methods_and_kibana_words() {
        let get = Method::GET;
        let mut up = Request::new(Op::Upload).case("abc");
        up.space = Some("ops".into());
        assert_eq!(
            Kibana.recognize(&Method::POST, "/s/ops/api/cases/abc/files"),
            Match::Op(up)
        );
        assert_eq!(
            Kibana.recognize(&get, "/api/cases/abc"),
            Match::Op(Request::new(Op::List).case("abc"))
        );
        assert_eq!(
            Kibana.recognize(&get, "/api/cases/abc/comments/_find"),
            Match::Op(Request::new(Op::Comments).case("abc"))
        );
        assert_eq!(
            Kibana.recognize(&Method::DELETE, "/api/cases/abc/comments/c1"),
            Match::Op(Request::new(Op::Delete).case("abc").file("c1"))
        );
        let mut blob = Request::new(Op::Download).file("f1");
        blob.owner = Some("securitySolution".into());
        assert_eq!(
            Kibana.recognize(
                &get,
                "/api/files/files/securitySolutionFilesCases/f1/blob/x.txt"
            ),
            Match::Op(blob)
        );
        assert_eq!(
            Kibana.recognize(&Method::POST, "/api/cases/abc"),
            Match::Method("GET")
        );
        for word in [
            "_find",
            "tags",
            "reporters",
            "configure",
            "status",
            "alerts",
            "_other",
        ] {
            assert_eq!(
                Kibana.recognize(&get, &format!("/api/cases/{word}")),
                Match::None
            );
        }
        assert_eq!(
            Kibana.recognize(&Method::POST, "/api/cases/abc/comments"),
            Match::None
        );
        assert!(Kibana.owns("/api/cases/_find"));
        assert!(Kibana.owns("/s/x/api/cases"));
        assert!(!Kibana.owns("/api/v2/cases/1/files"));
    }
}
