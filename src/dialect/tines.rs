//! Tines v2: `POST /api/v2/cases/{case_id}/files` with a JSON body carrying the file as
//! base64 (`file_contents`) beside `filename`, `value` (a comment), `author_email` and
//! `team_case_block_id`. Real clients send absent fields as `null`. The answer is the
//! activity record, which is also what `GET .../files/{id}` answers; lists page with
//! `per_page`/`page` and Tines' `meta` block; `info` gives name, type, size and hashes;
//! downloads honour `Range`. Errors are `{"errors":[{"message": M}]}`.

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::wire::{self, segment as seg};
use super::{
    by_method, Answer, AuthKind, BackCtx, BodyEncoder, Call, Dialect, DialectId, FrontAuth, IdKind,
    Match, Op, Outbound, Request,
};
use crate::codec::b64;
use crate::codec::json_out;
use crate::codec::json_read::{Reader, Val};
use crate::codec::json_scan::Scalar;
use crate::error::{json_bytes_response, json_response, Body, Error};
use crate::inbound::{self, BodyStream, Inbound, JsonSpec, Limits, Mapped};
use crate::upload::{
    id_json, id_text, now_rfc3339_seconds, Attachment, Field, FileRef, FileView, JsonId, Kind,
    Kinds, Links, Listed, Listing, Outcome, Page, Person, UploadMeta, UploadResult,
};

pub struct Tines;

const FILE_KEY: &str = "file_contents";
/// The keys of an upload's body that [`map_field`] reads (the scanner hands them out
/// without copying them).
const KEYS: [&str; 5] = [
    "filename",
    FILE_KEY,
    "value",
    "author_email",
    "team_case_block_id",
];
/// Tines' page size: 20 unless asked, at most 500.
const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 500;

impl Dialect for Tines {
    fn id(&self) -> DialectId {
        DialectId::Tines
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
            ["api", "v2", "cases", case, "files"] => by_method(
                method,
                &[(Method::GET, Op::List), (Method::POST, Op::Upload)],
                |op| Request::new(op).case(case),
            ),
            ["api", "v2", "cases", case, "files", id] => by_method(
                method,
                &[(Method::GET, Op::Get), (Method::DELETE, Op::Delete)],
                |op| Request::new(op).case(case).file(id),
            ),
            ["api", "v2", "cases", case, "files", id, "info"] => {
                by_method(method, &[(Method::GET, Op::Info)], |op| {
                    Request::new(op).case(case).file(id)
                })
            }
            ["api", "v2", "cases", case, "files", id, "download"] => {
                by_method(method, &[(Method::GET, Op::Download)], |op| {
                    Request::new(op).case(case).file(id)
                })
            }
            _ => Match::None,
        }
    }

    fn owns(&self, path: &str) -> bool {
        path == "/api/v2" || path.starts_with("/api/v2/")
    }

    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error> {
        let key =
            wire::authorization(parts, "bearer").or_else(|| wire::header(parts, "x-user-token"));
        match key {
            Some(k) if auth.tokens.matches(k) => Ok(()),
            _ => Err(Error::unauthorized("Unauthorized")),
        }
    }

    fn page(&self, _req: &Request, parts: &Parts) -> Result<Page, Error> {
        let size = wire::query_number(parts, "per_page")?.unwrap_or(DEFAULT_PER_PAGE);
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
        if !wire::has_type(parts, "application/json") {
            return Err(Error::unsupported_media_type(
                "The request must be sent as application/json.",
            ));
        }
        let spec = JsonSpec {
            file_key: FILE_KEY,
            keys: &KEYS,
            map: map_field,
        };
        Ok(Inbound {
            meta: UploadMeta::from_path(req.case_id.clone(), None),
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

    fn link(&self, links: &Links, case_id: &str, file_id: &str) -> Option<String> {
        Some(links.url_of(&[
            "/api/v2/cases/",
            &wire::segment(case_id),
            "/files/",
            &wire::segment(file_id),
            "/download",
        ]))
    }

    fn render_upload(&self, o: &Outcome) -> Response<Body> {
        self.render_record(&o.file)
    }

    fn render_record(&self, f: &FileView) -> Response<Body> {
        json_bytes_response(StatusCode::OK, record(f).to_json().into_bytes())
    }

    fn render_list(&self, l: &Listing) -> Response<Body> {
        let page_link = |n: u64| {
            l.links.url(&format!(
                "/api/v2/cases/{}/files?{}",
                seg(&l.case_id),
                wire::query(&[
                    ("page", n.to_string()),
                    ("per_page", l.page.size.to_string())
                ])
            ))
        };
        let pages = l.page.pages(l.total);
        let n = l.page.number;
        let next = (n < pages).then_some(n + 1);
        let previous = (n > 1).then(|| (n - 1).min(pages.max(1)));
        let body = json!({
            "case_id": id_json(&l.case_id),
            "files": l.files.iter().map(record).collect::<Vec<_>>(),
            "meta": {
                "current_page": page_link(n),
                "previous_page": previous.map(page_link),
                "next_page": next.map(page_link),
                "next_page_number": next,
                "per_page": l.page.size,
                "pages": pages,
                "count": l.total,
            },
        });
        json_response(StatusCode::OK, &body)
    }

    fn render_info(&self, f: &FileView) -> Response<Body> {
        let body = json!({
            "filename": f.name,
            "content_type": f.content_type,
            "guid": f.guid,
            "md5": f.md5,
            "sha256": f.sha256,
            "sizeinbytes": f.size,
        });
        json_response(StatusCode::OK, &body)
    }

    fn inline(&self, content_type: &str) -> bool {
        content_type.starts_with("image/")
    }

    fn render_error(&self, err: &Error) -> Response<Body> {
        json_response(err.status, &json!({"errors": [{"message": err.message}]}))
    }

    fn strip_credentials(&self, parts: &mut Parts) {
        parts.headers.remove(http::header::AUTHORIZATION);
        parts.headers.remove("x-user-token");
    }

    fn carries(&self) -> Kinds {
        Kinds::of(&[Kind::Comment, Kind::AuthorEmail, Kind::BlockId])
    }

    fn needs_before_file(&self) -> Kinds {
        Kinds::NONE
    }

    fn sends_base64(&self) -> bool {
        true
    }

    fn auth_kinds(&self) -> &'static [AuthKind] {
        &[AuthKind::Bearer]
    }

    fn build_upload(&self, meta: &UploadMeta, _ctx: &BackCtx<'_>) -> Result<Outbound, Error> {
        let case = meta.case_id.as_deref().unwrap_or_default();
        let mut head = String::with_capacity(256);
        head.push('{');
        let emitted = push_fields(&mut head, meta, Kinds::NONE, true);
        head.push_str("\"file_contents\":\"");
        let head = Bytes::from(head);
        Ok(Outbound {
            path: ["/api/v2/cases/", &wire::segment(case), "/files"]
                .concat()
                .into(),
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
        let Some((attachment, commented)) = activity_bytes(body) else {
            return Answer::StoredUnreadable("the answer is not JSON".into());
        };
        let Some(mut attachment) = attachment else {
            return Answer::StoredUnreadable("the answer has no id".into());
        };
        let commented = commented.unwrap_or(meta.comment.is_some());
        let uploader = attachment.uploader.take();
        Answer::Stored(Box::new(UploadResult {
            attachment,
            uploader,
            comment_stored: commented,
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

    fn needs_case(&self, _op: Op) -> bool {
        true
    }

    fn list_call(&self, case_id: &str, page: Page, _ctx: &BackCtx<'_>) -> Option<Call> {
        let q = wire::query(&[
            ("per_page", page.size.min(MAX_PER_PAGE).to_string()),
            ("page", page.number.to_string()),
        ]);
        Some(Call::get(format!(
            "/api/v2/cases/{}/files?{q}",
            seg(case_id)
        )))
    }

    fn read_list(&self, body: &[u8], _ctx: &BackCtx<'_>) -> Result<Listed, String> {
        if let Some(listed) = list_in_place(body) {
            return Ok(listed);
        }
        let v: Value = serde_json::from_slice(body).map_err(|_| "the list is not JSON")?;
        let files = v
            .get("files")
            .and_then(Value::as_array)
            .ok_or("the list has no files")?;
        Ok(Listed {
            files: files.iter().filter_map(activity).collect(),
            total: v.pointer("/meta/count").and_then(Value::as_u64),
            case: None,
            whole: false,
        })
    }

    fn record_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::get(file_path(file, "")))
    }

    fn read_record(&self, body: &[u8], _ctx: &BackCtx<'_>) -> Result<Attachment, String> {
        match activity_bytes(body) {
            Some((Some(a), _)) => Ok(a),
            Some((None, _)) => Err("the record has no id".into()),
            None => Err("the record is not JSON".into()),
        }
    }

    fn info_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::get(file_path(file, "/info")))
    }

    fn read_info(&self, body: &[u8]) -> Result<Attachment, String> {
        let v: Value = serde_json::from_slice(body).map_err(|_| "the info is not JSON")?;
        let t = |k: &str| wire::text(&v, k);
        Ok(Attachment {
            name: t("filename"),
            content_type: t("content_type"),
            size: v.get("sizeinbytes").and_then(Value::as_u64),
            guid: t("guid"),
            md5: t("md5"),
            sha256: t("sha256"),
            ..Default::default()
        })
    }

    fn download_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Call {
        Call::get(file_path(file, "/download"))
    }

    fn honours_range(&self) -> bool {
        true
    }

    fn delete_call(&self, file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        Some(Call::delete(file_path(file, "")))
    }
}

/// `/api/v2/cases/{case}/files/{id}{rest}`.
fn file_path(file: &FileRef, rest: &str) -> String {
    format!(
        "/api/v2/cases/{}/files/{}{rest}",
        seg(file.case_id.as_deref().unwrap_or_default()),
        seg(&file.id)
    )
}

/// A file record as Tines renders it: the activity of its attachment, serialized straight
/// from the view (keys in the order serde_json's own maps sort them, as before).
#[derive(serde::Serialize)]
struct Activity<'a> {
    activity_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    block_id: Option<&'a Value>,
    case_id: JsonId<'a>,
    created_at: std::borrow::Cow<'a, str>,
    file: ActivityFile<'a>,
    id: JsonId<'a>,
    user: ActivityUser<'a>,
    value: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct ActivityFile<'a> {
    filename: &'a str,
    url: &'a str,
}

#[derive(serde::Serialize)]
struct ActivityUser<'a> {
    avatar_url: Option<&'a str>,
    email: Option<&'a str>,
    first_name: Option<&'a str>,
    is_service_account: bool,
    last_name: Option<&'a str>,
    user_id: Option<JsonId<'a>>,
}

impl Activity<'_> {
    /// The record as its derived `Serialize` writes it, written by hand (every upload's
    /// answer is one).
    fn to_json(&self) -> String {
        // The keys, quotes, ids, type and flags take under 400 bytes; escapes are rare.
        let u = &self.user;
        let texts = [u.avatar_url, u.email, u.first_name, u.last_name, self.value];
        let mut out = String::with_capacity(
            400 + self.created_at.len()
                + self.file.filename.len()
                + self.file.url.len()
                + texts.iter().flatten().map(|t| t.len()).sum::<usize>(),
        );
        let mut o = json_out::Object::new(&mut out);
        o.str("activity_type", self.activity_type);
        if let Some(block) = self.block_id {
            o.value("block_id", block);
        }
        self.case_id.write(&mut o, "case_id");
        o.str("created_at", &self.created_at).object("file", |o| {
            o.str("filename", self.file.filename)
                .str("url", self.file.url);
        });
        self.id.write(&mut o, "id");
        o.object("user", |o| {
            o.opt_str("avatar_url", u.avatar_url)
                .opt_str("email", u.email)
                .opt_str("first_name", u.first_name)
                .bool("is_service_account", u.is_service_account)
                .opt_str("last_name", u.last_name);
            match &u.user_id {
                Some(id) => id.write(o, "user_id"),
                None => {
                    o.raw("user_id", "null");
                }
            }
        })
        .opt_str("value", self.value);
        o.end();
        out
    }
}

fn record(f: &FileView) -> Activity<'_> {
    let who = f.uploader.as_ref();
    let text = |field: fn(&crate::upload::Person) -> &Option<String>| {
        who.and_then(|w| field(w).as_deref())
    };
    Activity {
        activity_type: if f.comment.is_some() {
            "FILE_ATTACHED_AND_COMMENTED"
        } else {
            "FILE_ATTACHED"
        },
        block_id: f.block_id.as_ref(),
        case_id: JsonId(&f.case_id),
        created_at: match &f.created_at {
            Some(at) => at.into(),
            None => now_rfc3339_seconds().into(),
        },
        file: ActivityFile {
            filename: &f.name,
            url: f.link.as_deref().unwrap_or_default(),
        },
        id: JsonId(&f.id),
        user: ActivityUser {
            avatar_url: text(|w| &w.avatar_url),
            email: text(|w| &w.email),
            first_name: text(|w| &w.first_name)
                .or(text(|w| &w.full_name))
                .or(text(|w| &w.username)),
            is_service_account: who.and_then(|w| w.is_service_account).unwrap_or(false),
            last_name: text(|w| &w.last_name),
            user_id: who.and_then(|w| w.id.as_deref()).map(JsonId),
        },
        value: f.comment.as_deref(),
    }
}

/// An activity record's members as Tines answers them (strings where Tines gives
/// strings), the rest skipped: the one record of an upload's answer is read without
/// building a JSON tree. An answer that does not fit (another type, a key given twice) is
/// read as a tree by [`activity`], which this must agree with.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ActivityIn {
    id: Option<Value>,
    case_id: Option<Value>,
    created_at: Option<String>,
    file: Option<wire::Obj<ActivityFileIn>>,
    user: Option<wire::Obj<ActivityUserIn>>,
    value: Option<String>,
    block_id: Option<Value>,
    activity_type: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ActivityFileIn {
    filename: Option<String>,
    url: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ActivityUserIn {
    user_id: Option<Value>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    avatar_url: Option<String>,
    is_service_account: Option<bool>,
}

/// An activity record from its bytes, with whether its `activity_type` says a comment was
/// stored ([`is_commented`]; `None` without one) (the attachment is `None` when the record
/// has no id); `None` when it is not JSON. Read in place
/// ([`activity_in_place`]) when it can be, else as typed members ([`ActivityIn`]), else as
/// a tree ([`activity`]); all three read the same answer the same way.
fn activity_bytes(body: &[u8]) -> Option<(Option<Attachment>, Option<bool>)> {
    if let Some(read) = activity_in_place(body) {
        return Some(read);
    }
    let Ok(wire::Obj(a)) = wire::from_json::<wire::Obj<ActivityIn>>(body) else {
        let v: Value = wire::from_json(body).ok()?;
        let commented = v
            .get("activity_type")
            .and_then(Value::as_str)
            .map(is_commented);
        return Some((activity(&v), commented));
    };
    let Some(id) = a.id.as_ref().and_then(id_text) else {
        return Some((None, a.activity_type.as_deref().map(is_commented)));
    };
    let (filename, url) = a.file.map_or((None, None), |f| (f.0.filename, f.0.url));
    let attachment = Attachment {
        id: Some(id),
        case_id: a.case_id.as_ref().and_then(id_text),
        name: filename,
        created_at: a.created_at,
        url,
        uploader: a.user.map(|wire::Obj(u)| Person {
            id: u.user_id.as_ref().and_then(id_text),
            first_name: u.first_name,
            last_name: u.last_name,
            email: u.email,
            avatar_url: u.avatar_url,
            is_service_account: u.is_service_account,
            ..Default::default()
        }),
        comment: a.value.filter(|c| !c.is_empty()),
        block_id: a.block_id.filter(|b| !b.is_null()),
        ..Default::default()
    };
    Some((
        Some(attachment),
        a.activity_type.as_deref().map(is_commented),
    ))
}

/// Whether an activity's type says its comment was stored.
fn is_commented(activity_type: &str) -> bool {
    activity_type.eq_ignore_ascii_case("FILE_ATTACHED_AND_COMMENTED")
}

/// [`activity_bytes`] for an answer whose members a [`Reader`] reads in place (no escape
/// in a text it keeps, no id written other than as a plain integer, a `block_id` that is
/// a string, an integer or a boolean), read as [`activity`] reads the tree (a key given
/// twice keeps its last value); `None` when it is read the slower way.
fn activity_in_place(body: &[u8]) -> Option<(Option<Attachment>, Option<bool>)> {
    let mut r = Reader::new(body)?;
    let (a, commented) = activity_members(&mut r)?;
    r.finish()?;
    Some((a.id.is_some().then_some(a), commented))
}

/// A page of a case's files read in place, as [`Tines::read_list`] reads its tree (each
/// record as [`activity_in_place`] reads one, those without an id left out; a key given
/// twice keeps its last value); `None` when it is read the slower way, as a page without
/// a `files` array is (whose error that way names it).
fn list_in_place(body: &[u8]) -> Option<Listed> {
    let mut r = Reader::new(body)?;
    let (mut files, mut total) = (None, None);
    while let Some(key) = r.next_key()? {
        match key {
            "files" => {
                files = None;
                if !r.array_or_skip()? {
                    continue;
                }
                let mut list = Vec::new();
                while r.next_item()? {
                    if r.object_or_skip()? {
                        let (a, _) = activity_members(&mut r)?;
                        list.extend(a.id.is_some().then_some(a));
                    }
                }
                files = Some(list);
            }
            "meta" => {
                total = None;
                if !r.object_or_skip()? {
                    continue;
                }
                while let Some(key) = r.next_key()? {
                    match key {
                        // A number the tree reads as a `u64` that this reader does not
                        // (20 digits) is read the slower way.
                        "count" => {
                            total = match r.value()? {
                                Val::Int(n) => Some(n),
                                Val::Num => return None,
                                _ => None,
                            }
                        }
                        _ => r.skip()?,
                    }
                }
            }
            _ => r.skip()?,
        }
    }
    r.finish()?;
    Some(Listed {
        files: files?,
        total,
        case: None,
        whole: false,
    })
}

/// The members of an activity record the reader has entered, as [`activity_in_place`]
/// reads them, with whether its type says a comment was stored.
fn activity_members(r: &mut Reader<'_>) -> Option<(Attachment, Option<bool>)> {
    let mut a = Attachment::default();
    let mut commented = None;
    while let Some(key) = r.next_key()? {
        match key {
            "id" => a.id = r.value()?.id_text()?,
            "case_id" => a.case_id = r.value()?.id_text()?,
            "created_at" => a.created_at = r.value()?.text()?,
            "value" => a.comment = r.value()?.text()?.filter(|c| !c.is_empty()),
            // Read as `text` reads it (an escaped one the slower way), not copied.
            "activity_type" => {
                commented = match r.value()? {
                    Val::Str(s) => Some(is_commented(s)),
                    Val::Esc => return None,
                    _ => None,
                }
            }
            "block_id" => {
                a.block_id = match r.value()? {
                    Val::Null => None,
                    Val::Str(s) => Some(Value::String(s.to_string())),
                    Val::Int(n) => Some(Value::from(n)),
                    Val::Bool(b) => Some(Value::Bool(b)),
                    Val::Num | Val::Esc | Val::Obj | Val::Arr => return None,
                }
            }
            "file" => {
                (a.name, a.url) = (None, None);
                if !r.object_or_skip()? {
                    continue;
                }
                while let Some(key) = r.next_key()? {
                    match key {
                        "filename" => a.name = r.value()?.text()?,
                        "url" => a.url = r.value()?.text()?,
                        _ => r.skip()?,
                    }
                }
            }
            "user" => {
                a.uploader = None;
                if !r.object_or_skip()? {
                    continue;
                }
                let mut p = Person::default();
                while let Some(key) = r.next_key()? {
                    match key {
                        "user_id" => p.id = r.value()?.id_text()?,
                        "first_name" => p.first_name = r.value()?.text()?,
                        "last_name" => p.last_name = r.value()?.text()?,
                        "email" => p.email = r.value()?.text()?,
                        "avatar_url" => p.avatar_url = r.value()?.text()?,
                        "is_service_account" => {
                            p.is_service_account = match r.value()? {
                                Val::Bool(b) => Some(b),
                                _ => None,
                            }
                        }
                        _ => r.skip()?,
                    }
                }
                a.uploader = Some(p);
            }
            _ => r.skip()?,
        }
    }
    Some((a, commented))
}

/// Reads an activity record (an upload's answer, a file's record, a list entry).
fn activity(v: &Value) -> Option<Attachment> {
    let id = v.get("id").and_then(id_text)?;
    // Members read with `get`: `pointer` copies each part of its path twice.
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let file = v.get("file");
    let user = v.get("user").filter(|u| u.is_object()).map(|u| Person {
        id: u.get("user_id").and_then(id_text),
        first_name: wire::text(u, "first_name"),
        last_name: wire::text(u, "last_name"),
        email: wire::text(u, "email"),
        avatar_url: wire::text(u, "avatar_url"),
        is_service_account: u.get("is_service_account").and_then(Value::as_bool),
        ..Default::default()
    });
    Some(Attachment {
        id: Some(id),
        case_id: v.get("case_id").and_then(id_text),
        name: text(file.and_then(|f| f.get("filename"))),
        created_at: text(v.get("created_at")),
        url: text(file.and_then(|f| f.get("url"))),
        uploader: user,
        comment: text(v.get("value")).filter(|c| !c.is_empty()),
        block_id: v.get("block_id").filter(|b| !b.is_null()).cloned(),
        ..Default::default()
    })
}

fn map_field(key: &str, value: Scalar) -> Result<Mapped, Error> {
    let text = |value, kind: Kind, make: fn(String) -> Field, required: bool| match value {
        Scalar::Null => Ok(Mapped::Absent(kind)),
        Scalar::String(s) if s.is_empty() && !required => Ok(Mapped::Absent(kind)),
        Scalar::String(s) => Ok(Mapped::Field(make(s))),
        _ => Err(Error::bad_request(format!("{key} must be a string."))),
    };
    match key {
        "filename" => text(value, Kind::FileName, Field::FileName, true),
        "value" => text(value, Kind::Comment, Field::Comment, false),
        "author_email" => text(value, Kind::AuthorEmail, Field::AuthorEmail, false),
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

/// Writes the members of an upload other than the file, in the documented order, each
/// `"key":value` with a comma after it (`comma_after`, the head's) or before it (the
/// tail's), skipping the fields `skip` holds (those the head wrote already). Returns the
/// fields it wrote.
fn push_fields(out: &mut String, meta: &UploadMeta, skip: Kinds, comma_after: bool) -> Kinds {
    let members = [
        (Kind::FileName, &meta.file_name),
        (Kind::Comment, &meta.comment),
        (Kind::AuthorEmail, &meta.author_email),
        (Kind::BlockId, &meta.block_id),
    ];
    let mut wrote = Kinds::NONE;
    for (kind, value) in members {
        let Some(value) = value.as_deref().filter(|_| !skip.contains(kind)) else {
            continue;
        };
        if !comma_after {
            out.push(',');
        }
        // The keys are the dialect's plain names, written as they are.
        out.push('"');
        out.push_str(Tines.field_name(kind));
        out.push_str("\":");
        match kind {
            Kind::BlockId => JsonId(value).push(out),
            _ => json_out::push_json_str(out, value),
        }
        if comma_after {
            out.push(',');
        }
        wrote.insert(kind);
    }
    wrote
}

/// `{...,"file_contents":"` + base64 as the bytes pass + `",...}`.
struct JsonBody {
    head: Bytes,
    head_len: u64,
    /// The fields the head holds.
    emitted: Kinds,
    enc: b64::Encoder,
}

impl JsonBody {
    fn tail_bytes(&self, rest: Bytes, late: &UploadMeta) -> Bytes {
        let mut out = String::with_capacity(rest.len() + 128);
        // The encoder's last group: base64, so ASCII, each byte its own character.
        out.extend(rest.iter().map(|&b| char::from(b)));
        out.push('"');
        push_fields(&mut out, late, self.emitted, false);
        out.push('}');
        Bytes::from(out)
    }
}

impl BodyEncoder for JsonBody {
    fn head(&mut self) -> Bytes {
        std::mem::take(&mut self.head)
    }

    fn data(&mut self, chunk: Bytes) -> Bytes {
        self.enc.push(&chunk)
    }

    /// The client's own text, when nothing is held back from the bytes before it (always,
    /// for a Tines front: its file comes decoded in whole groups until the last); else
    /// the text back, to be decoded and encoded again after what is held.
    fn data_coded(&mut self, base64: Bytes) -> Result<Bytes, Bytes> {
        if self.enc.holds_nothing() {
            Ok(base64)
        } else {
            Err(base64)
        }
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
    /// An upstream's context with no options, for a client of another dialect.
    fn plain_ctx(options: &crate::dialect::UpstreamOptions) -> crate::dialect::BackCtx<'_> {
        crate::dialect::BackCtx {
            base_url: "",
            options,
            client_space: None,
            raw_wanted: false,
        }
    }

    #[test]
    fn a_coded_chunk_goes_out_as_the_client_sent_it_only_after_whole_groups() {
        use super::*;
        let file: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let encoded = |b: &[u8]| {
            let mut s = String::new();
            b64::encode_into(b, &mut s);
            Bytes::from(s)
        };
        let body = || JsonBody {
            head: Bytes::new(),
            head_len: 0,
            emitted: Kinds::NONE,
            enc: b64::Encoder::new(),
        };
        let piece = |range: std::ops::Range<usize>| Bytes::copy_from_slice(&file[range]);
        for split in [0, 300, 301, 302] {
            let mut b = body();
            let mut wire = b.data(piece(0..split)).to_vec();
            let text = encoded(&file[split..900]);
            // After whole groups (a multiple of 3 bytes), the text itself, not a copy;
            // otherwise the text comes back, and its bytes are encoded after those held.
            let out = match b.data_coded(text.clone()) {
                Ok(out) => {
                    assert_eq!(out.as_ptr(), text.as_ptr(), "after {split}");
                    out
                }
                Err(back) => {
                    assert_eq!(back.as_ptr(), text.as_ptr(), "after {split}");
                    b.data(piece(split..900))
                }
            };
            assert_eq!(
                out.as_ptr() == text.as_ptr(),
                split % 3 == 0,
                "after {split}"
            );
            wire.extend_from_slice(&out);
            wire.extend_from_slice(&b.data(piece(900..1000)));
            wire.extend_from_slice(&b.enc.finish());
            assert_eq!(wire, encoded(&file), "after {split}");
        }
    }

    #[test]
    fn an_answer_read_typed_gives_what_its_tree_gives() {
        use super::*;
        // (body, read typed rather than as a tree)
        let answers = [
            (
                r#"{"id":42,"activity_type":"FILE_ATTACHED_AND_COMMENTED","value":"note","file":{"filename":"a.png","url":"https://t/files/42"},"user":{"user_id":"7","first_name":"A","last_name":"B","email":"e@x","avatar_url":"https://a","is_service_account":false},"case_id":3,"created_at":"2026-01-01T00:00:00Z","block_id":null,"extra":[1,{"x":2}]}"#,
                true,
            ),
            (
                r#"{"id":"9","file":null,"user":null,"value":"","block_id":5,"case_id":null}"#,
                true,
            ),
            (
                r#" {"activity_type":"FILE_ATTACHED","file":{"filename":"n"}}"#,
                true,
            ),
            (r#"{"id":true,"user":{}}"#, true),
            (r#"{"id":1,"created_at":5}"#, false),
            (r#"{"id":1,"user":[],"file":["n","u"]}"#, false),
            (r#"{"id":1,"user":["7","A"]}"#, false),
            (r#"{"id":1,"id":2}"#, false),
            (
                r#"{"id":1,"file":{"filename":"a","url":"u"},"user":{"email":"e"},"file":null,"user":7}"#,
                false,
            ),
            (
                r#"{"id":1,"file":[],"user":null,"file":{"filename":"a"},"user":{"email":"e"}}"#,
                false,
            ),
            (
                r#"{"id":1,"user":{"user_id":5,"is_service_account":"yes"}}"#,
                false,
            ),
            (r#"[{"id":1}]"#, false),
            (r#""x""#, false),
            ("not json", false),
        ];
        let tree = |body: &str| {
            serde_json::from_slice::<Value>(body.as_bytes())
                .ok()
                .map(|v| {
                    let t = v
                        .get("activity_type")
                        .and_then(Value::as_str)
                        .map(is_commented);
                    (activity(&v), t)
                })
        };
        for (body, typed) in answers {
            let fits = serde_json::from_slice::<wire::Obj<ActivityIn>>(body.as_bytes()).is_ok();
            assert_eq!(fits, typed, "{body}");
            assert_eq!(activity_bytes(body.as_bytes()), tree(body), "{body}");
        }
        // Generated answers, most of them read in place, the rest the slower ways.
        let mut gen = crate::codec::json_read::gen::Gen::new(
            0x6a09_e667_f3bc_c908,
            &[
                "\"id\"",
                "\"case_id\"",
                "\"created_at\"",
                "\"file\"",
                "\"filename\"",
                "\"url\"",
                "\"user\"",
                "\"user_id\"",
                "\"first_name\"",
                "\"email\"",
                "\"is_service_account\"",
                "\"value\"",
                "\"block_id\"",
                "\"activity_type\"",
                "\"other\"",
            ],
        );
        let mut in_place = 0;
        for _ in 0..10_000 {
            let body = gen.body();
            in_place += usize::from(activity_in_place(body.as_bytes()).is_some());
            assert_eq!(activity_bytes(body.as_bytes()), tree(&body), "{body}");
        }
        assert!(in_place > 800, "{in_place} of 10000 read in place");
        let (a, t) = activity_bytes(answers[0].0.as_bytes()).unwrap();
        let a = a.unwrap();
        assert_eq!(t, Some(true));
        assert_eq!(
            (a.id.as_deref(), a.case_id.as_deref(), a.name.as_deref()),
            (Some("42"), Some("3"), Some("a.png"))
        );
        assert_eq!(a.uploader.and_then(|u| u.id).as_deref(), Some("7"));
        assert_eq!(a.comment.as_deref(), Some("note"));
    }

    #[test]
    fn a_list_read_in_place_gives_what_its_tree_gives() {
        use super::*;
        let options = Default::default();
        let ctx = plain_ctx(&options);
        // The page as its tree is read: the records with an id, and `meta.count`.
        let tree = |body: &str| -> Result<(Vec<Attachment>, Option<u64>), String> {
            let v: Value = serde_json::from_str(body).map_err(|_| "the list is not JSON")?;
            let files = v
                .get("files")
                .and_then(Value::as_array)
                .ok_or("the list has no files")?;
            let total = v.pointer("/meta/count").and_then(Value::as_u64);
            Ok((files.iter().filter_map(activity).collect(), total))
        };
        let read = |body: &str| {
            Tines.read_list(body.as_bytes(), &ctx).map(|l| {
                assert!(l.case.is_none() && !l.whole);
                (l.files, l.total)
            })
        };
        let pages = [
            (
                r#"{"files":[{"id":1,"file":{"filename":"a.pdf","url":"u"}},{"id":"2"},{"x":1},7,null],"meta":{"count":3}}"#,
                true,
            ),
            (
                r#"{"meta":{"count":18446744073709551615},"files":[]}"#,
                false,
            ),
            (r#"{"files":[],"meta":{"count":1.5}}"#, false),
            (
                r#"{"files":[],"meta":{"count":"2","count":4},"meta":null}"#,
                true,
            ),
            (r#"{"files":[{"id":1}],"files":{}}"#, false),
            (r#"{"files":[{"id":1.5}]}"#, false),
            (r#"{"meta":{"count":1}}"#, false),
            (r#"[]"#, false),
            ("not json", false),
        ];
        for (body, in_place) in pages {
            assert_eq!(list_in_place(body.as_bytes()).is_some(), in_place, "{body}");
            assert_eq!(read(body), tree(body), "{body}");
        }
        let (files, total) = read(pages[0].0).unwrap_or_default();
        let ids: Vec<_> = files.iter().map(|a| a.id.as_deref()).collect();
        assert_eq!((ids, total), (vec![Some("1"), Some("2")], Some(3)));
        assert_eq!(files[0].name.as_deref(), Some("a.pdf"));
        // Generated pages: records of every kind, `files` and `meta` of the wrong kind or
        // given twice, broken now and then.
        let mut g = crate::codec::json_read::gen::Gen::new(
            0x3c6e_f372_fe94_f82b,
            &[
                "\"id\"",
                "\"case_id\"",
                "\"file\"",
                "\"filename\"",
                "\"user\"",
                "\"value\"",
                "\"other\"",
            ],
        );
        let (mut in_place, mut files) = (0, 0);
        for _ in 0..5_000 {
            let mut members = Vec::new();
            for _ in 0..=g.next(2) {
                let records: Vec<String> = (0..g.next(5))
                    .map(|_| match g.next(5) {
                        0 => g.other(),
                        1 | 2 => format!(
                            "{{\"id\":{},\"file\":{{\"filename\":{}}}}}",
                            g.pick(&["7", "\"9\"", "7", "\"9\"", "null", "1.5"]),
                            g.pick(&["\"a.pdf\"", "null", "\"x\\ny\""])
                        ),
                        _ => {
                            let mut o = String::new();
                            g.object(&mut o, 1);
                            o
                        }
                    })
                    .collect();
                members.push(match g.next(6) {
                    0 => format!("\"files\":{}", g.other()),
                    1 => format!(
                        "\"meta\":{}",
                        g.pick(&["null", "{}", "{\"count\":2.0}", "{\"count\":-1}"])
                    ),
                    2 => format!("\"meta\":{{\"count\":{}}}", g.next(50)),
                    3 => format!("\"other\":{}", g.other()),
                    _ => format!("\"files\":[{}]", records.join(",")),
                });
            }
            let body = g.break_sometimes(format!("{{{}}}", members.join(",")));
            if let Some(l) = list_in_place(body.as_bytes()) {
                in_place += 1;
                files += l.files.len();
            }
            assert_eq!(read(&body), tree(&body), "{body}");
        }
        assert!(
            in_place > 500 && files > 100,
            "{in_place} read in place, {files} files"
        );
    }

    #[test]
    fn the_members_are_written_as_serde_json_writes_them_in_their_order() {
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        for (i, text) in crate::codec::json_out::AWKWARD.iter().enumerate() {
            let block = ["123", "0123", text][i % 3];
            let meta = UploadMeta {
                file_name: Some(format!("{text}.pdf")),
                comment: Some(text.to_string()),
                author_email: Some(format!("a{text}@example.com")),
                block_id: Some(block.to_string()),
                ..Default::default()
            };
            let block_json = crate::upload::id_json(block).to_string();
            let mut head = String::new();
            let wrote = push_fields(&mut head, &meta, Kinds::NONE, true);
            assert_eq!(
                head,
                format!(
                    r#""filename":{},"value":{},"author_email":{},"team_case_block_id":{block_json},"#,
                    json(&format!("{text}.pdf")),
                    json(text),
                    json(&format!("a{text}@example.com")),
                ),
                "{text:?}"
            );
            assert_eq!(
                wrote,
                Kinds::of(&[
                    Kind::FileName,
                    Kind::Comment,
                    Kind::AuthorEmail,
                    Kind::BlockId
                ])
            );
            // The tail: a comma before each, the fields the head holds skipped.
            let mut tail = String::new();
            let head_held = Kinds::of(&[Kind::FileName, Kind::AuthorEmail]);
            let wrote = push_fields(&mut tail, &meta, head_held, false);
            assert_eq!(
                tail,
                format!(
                    r#","value":{},"team_case_block_id":{block_json}"#,
                    json(text)
                ),
                "{text:?}"
            );
            assert_eq!(wrote, Kinds::of(&[Kind::Comment, Kind::BlockId]));
            // Nothing to write, nothing written.
            let mut none = String::new();
            assert_eq!(
                push_fields(&mut none, &UploadMeta::default(), Kinds::NONE, true),
                Kinds::NONE
            );
            assert_eq!(none, "");
        }
    }

    #[test]
    fn the_record_written_by_hand_is_what_serde_writes() {
        use crate::upload::{FileView, Person};
        for (i, text) in crate::codec::json_out::AWKWARD.iter().enumerate() {
            let opt = |k: usize| (i % k == 0).then(|| text.to_string());
            let f = FileView {
                id: if i % 2 == 0 {
                    (i * 1000).to_string()
                } else {
                    text.to_string()
                },
                case_id: format!("{text}0"),
                name: text.to_string(),
                created_at: opt(2),
                link: opt(3),
                comment: opt(2),
                block_id: (i % 3 == 1).then(|| serde_json::json!({"b": text, "n": [i]})),
                uploader: (i % 4 != 3).then(|| Person {
                    id: opt(2).map(|_| i.to_string()),
                    first_name: opt(3),
                    username: opt(2),
                    last_name: opt(1),
                    email: opt(2),
                    avatar_url: opt(3),
                    is_service_account: (i % 3 != 2).then_some(i % 2 == 0),
                    ..Person::default()
                }),
                ..FileView::default()
            };
            let r = record(&f);
            assert_eq!(r.to_json(), serde_json::to_string(&r).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn records_keep_serde_json_s_key_order_and_values() {
        use crate::upload::{FileView, Person};
        let full = FileView {
            id: "17".into(),
            case_id: "0042".into(),
            name: "a.txt".into(),
            created_at: Some("2026-12-01T00:00:00Z".into()),
            link: Some("http://x/files/17".into()),
            comment: Some("c".into()),
            block_id: Some(serde_json::json!({"b": 1})),
            uploader: Some(Person {
                id: Some("9".into()),
                full_name: Some("Ada L".into()),
                email: Some("a@x".into()),
                is_service_account: Some(true),
                ..Person::default()
            }),
            ..FileView::default()
        };
        let bare = FileView {
            created_at: Some("2026-12-01T00:00:00Z".into()),
            ..FileView::default()
        };
        for f in [full, bare] {
            let direct = serde_json::to_string(&record(&f)).unwrap();
            assert_eq!(record(&f).to_json(), direct, "written by hand as by serde");
            // Through a JSON tree: serde_json's maps sort their keys.
            let tree = serde_json::to_value(record(&f)).unwrap();
            assert_eq!(direct, tree.to_string());
        }
        let v = serde_json::to_value(record(&FileView {
            id: "17".into(),
            case_id: "0042".into(),
            ..FileView::default()
        }))
        .unwrap();
        assert_eq!(v["id"], 17, "canonical digits are a number");
        assert_eq!(v["case_id"], "0042", "a leading zero keeps it a string");
        assert_eq!(v["user"]["user_id"], serde_json::Value::Null);
        assert!(v.get("block_id").is_none());
    }

    use super::*;

    #[test]
    fn body_is_json_with_late_fields_after_the_file() {
        let meta = UploadMeta {
            case_id: Some("42".into()),
            file_name: Some("a\"b.txt".into()),
            block_id: Some("7".into()),
            ..Default::default()
        };
        let options = Default::default();
        let ctx = plain_ctx(&options);
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
        let options = Default::default();
        let ctx = plain_ctx(&options);
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
