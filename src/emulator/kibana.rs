//! Kibana Cases: `POST [/s/{space}]/api/cases/{caseId}/files` (multipart `file`, optional
//! display `filename`), answered with the whole case, the file being one of its
//! `externalReference` comments; user comments (`POST .../comments`), the case itself
//! (`GET .../api/cases/{caseId}`), the user comments a page at a time
//! (`GET .../comments/_find`), one comment (`GET .../comments/{commentId}`) and its delete
//! (`DELETE`, which deletes a file with its comment), and file downloads with `Range`
//! (`GET .../api/files/files/{owner}FilesCases/{fileId}/blob[/{name}]`; an empty file is
//! 204). Credentials: `Authorization: ApiKey K` or Basic; every POST and DELETE needs
//! `kbn-xsrf`. The MIME type comes from the part filename's extension and must be on
//! Kibana's allow-list. Cases are created on first upload, per space; Kibana's own words
//! under `/api/cases/` (`_find`, `tags`, ...) are never case ids. Errors are
//! `{"statusCode":S,"error":<reason phrase>,"message":M}`.

use std::sync::Arc;

use base64::Engine as _;
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::server::{self, Api, Kind, Refusal, Shared};
use super::wire::{self, DownloadStyle, FormError, Object, ReqBody, Resp};
use super::{StoredComment, StoredFile};

/// The Kibana Cases API.
pub(super) struct Kibana;

/// A routed Kibana request: its space (None for the default one) and endpoint.
pub(super) struct Call {
    space: Option<String>,
    op: Op,
}

/// A Kibana endpoint, with its path parameters.
enum Op {
    Upload(String),
    Comment(String),
    Case(String),
    /// Case id.
    FindComments(String),
    /// Case and comment id.
    GetComment(String, String),
    /// Case and comment id.
    DeleteComment(String, String),
    /// File kind (`{owner}FilesCases`) and file id.
    Blob(String, String),
}

/// Fast mode's one file id (the file comment's id ends in 2).
const FAST_FILE_ID: &str = "00000000-0000-4000-8000-000000000001";

/// Words Kibana serves under `/api/cases/` that are not case ids (besides anything that
/// starts with `_`).
const RESERVED_CASE_WORDS: &[&str] = &["tags", "reporters", "configure", "status", "alerts"];

/// Whether `case` can be a case id.
fn is_case_id(case: &str) -> bool {
    !case.is_empty() && !case.starts_with('_') && !RESERVED_CASE_WORDS.contains(&case)
}

/// The MIME types Kibana Cases accepts by default.
const ALLOWED_MIME_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "text/json",
    "application/json",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/x-7z-compressed",
    "application/x-bzip",
    "application/x-bzip2",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "image/svg+xml",
    "image/avif",
    "image/heic",
    "image/heif",
];

/// Largest file: 100 MiB, images 10 MiB.
const MAX_FILE: u64 = 100 << 20;
const MAX_IMAGE: u64 = 10 << 20;
/// Longest display name.
const MAX_FILENAME_CHARS: usize = 160;
/// The version Kibana gives a fresh attachment.
const COMMENT_VERSION: &str = "WzEsMV0=";
/// `perPage` of `comments/_find` when none is given, and the most it can be.
const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 100;
/// The deepest `comments/_find` pages: `page * perPage` at most this.
const MAX_DOCS: u64 = 10_000;

fn case_not_found(case_id: &str) -> Resp {
    Kibana::not_found(&format!("Saved object [cases/{case_id}] not found"))
}

fn comment_not_found(comment_id: &str) -> Resp {
    Kibana::not_found(&format!(
        "Saved object [cases-comments/{comment_id}] not found"
    ))
}

/// The file kind under which a case owner's files are served.
fn file_kind(owner: &str) -> String {
    format!("{owner}FilesCases")
}

fn user(profile: bool) -> Value {
    let mut user = json!({"email": null, "username": "elastic", "full_name": null});
    if let (true, Some(map)) = (profile, user.as_object_mut()) {
        map.insert("profile_uid".to_owned(), json!("u_emulated"));
    }
    user
}

/// A case, created on its first upload.
pub(super) struct Case {
    id: String,
    owner: String,
    created_at: String,
    updated_at: String,
    /// Bumped on every change; rendered as Kibana's opaque `version`.
    version: u64,
    comments: Vec<Comment>,
}

/// One entry of a case's `comments`.
enum Comment {
    File {
        id: String,
        file_id: String,
        name: String,
        extension: String,
        mime: String,
        created_at: String,
    },
    User {
        id: String,
        text: String,
        created_at: String,
    },
}

impl Comment {
    fn id(&self) -> &str {
        match self {
            Comment::File { id, .. } | Comment::User { id, .. } => id,
        }
    }

    fn to_json(&self, owner: &str) -> Value {
        match self {
            Comment::File {
                id,
                file_id,
                name,
                extension,
                mime,
                created_at,
            } => json!({
                "id": id,
                "type": "externalReference",
                "owner": owner,
                "externalReferenceAttachmentTypeId": ".files",
                "externalReferenceId": file_id,
                "externalReferenceStorage": {"type": "savedObject", "soType": "file"},
                "externalReferenceMetadata": {"files": [
                    {"name": name, "extension": extension, "mimeType": mime, "created": created_at}
                ]},
                "created_at": created_at,
                "created_by": user(false),
                "pushed_at": null,
                "pushed_by": null,
                "updated_at": null,
                "updated_by": null,
                "version": COMMENT_VERSION,
            }),
            Comment::User {
                id,
                text,
                created_at,
            } => json!({
                "id": id,
                "type": "user",
                "owner": owner,
                "comment": text,
                "version": COMMENT_VERSION,
                "created_at": created_at,
                "created_by": user(false),
                "pushed_at": null,
                "pushed_by": null,
                "updated_at": null,
                "updated_by": null,
            }),
        }
    }
}

impl Case {
    fn new(id: &str, owner: &str, now: &str) -> Case {
        Case {
            id: id.to_owned(),
            owner: owner.to_owned(),
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            version: 1,
            comments: Vec::new(),
        }
    }

    fn add(&mut self, comment: Comment, now: &str) {
        self.comments.push(comment);
        self.touch(now);
    }

    /// Removes the comment `id`; the comment, when it was there.
    fn remove(&mut self, id: &str, now: &str) -> Option<Comment> {
        let at = self.comments.iter().position(|c| c.id() == id)?;
        let comment = self.comments.remove(at);
        self.touch(now);
        Some(comment)
    }

    fn touch(&mut self, now: &str) {
        self.version += 1;
        self.updated_at = now.to_owned();
    }

    /// The case as Kibana answers it, with every field of its sample response.
    fn to_json(&self) -> Value {
        let user_comments = self
            .comments
            .iter()
            .filter(|c| matches!(c, Comment::User { .. }))
            .count();
        let version =
            base64::engine::general_purpose::STANDARD.encode(format!("[{},1]", self.version));
        json!({
            "id": self.id,
            "tags": [],
            "owner": self.owner,
            "title": format!("Emulated case {}", self.id),
            "status": "open",
            "version": version,
            "category": null,
            "comments": self.comments.iter().map(|c| c.to_json(&self.owner)).collect::<Vec<_>>(),
            "duration": null,
            "settings": {"syncAlerts": false},
            "severity": "low",
            "assignees": [],
            "closed_at": null,
            "closed_by": null,
            "connector": {"id": "none", "name": "none", "type": ".none", "fields": null},
            "created_at": self.created_at,
            "created_by": user(true),
            "updated_at": self.updated_at,
            "updated_by": user(true),
            "description": "",
            "totalAlerts": 0,
            "customFields": [],
            "totalComment": user_comments,
            "external_service": null,
        })
    }
}

impl Api for Kibana {
    type Call = Call;

    /// Kibana's blob route honours `Range`.
    const DOWNLOADS: DownloadStyle = DownloadStyle {
        ranges: true,
        inline_images: false,
    };

    fn route(method: &Method, path: &[&str]) -> Result<(Kind, Call), StatusCode> {
        let (space, path) = match path {
            ["s", space, rest @ ..] if !space.is_empty() => {
                let space = (*space != "default").then(|| space.to_string());
                (space, rest)
            }
            _ => (None, path),
        };
        let (allowed, kind, op) = match path {
            ["api", "cases", case, ..] if !is_case_id(case) => return Err(StatusCode::NOT_FOUND),
            ["api", "cases", case, "files"] => {
                (Method::POST, Kind::Upload, Op::Upload(case.to_string()))
            }
            ["api", "cases", case, "comments"] => {
                (Method::POST, Kind::Second, Op::Comment(case.to_string()))
            }
            // A DELETE of `_find` is one of a comment that does not exist, as in Kibana.
            ["api", "cases", case, "comments", comment] if method == Method::DELETE => (
                Method::DELETE,
                Kind::Read,
                Op::DeleteComment(case.to_string(), comment.to_string()),
            ),
            ["api", "cases", case, "comments", "_find"] => {
                (Method::GET, Kind::Read, Op::FindComments(case.to_string()))
            }
            ["api", "cases", case, "comments", comment] => (
                Method::GET,
                Kind::Read,
                Op::GetComment(case.to_string(), comment.to_string()),
            ),
            ["api", "cases", case] => (Method::GET, Kind::Read, Op::Case(case.to_string())),
            ["api", "files", "files", kind, file, "blob"]
            | ["api", "files", "files", kind, file, "blob", _] => (
                Method::GET,
                Kind::Read,
                Op::Blob(kind.to_string(), file.to_string()),
            ),
            _ => return Err(StatusCode::NOT_FOUND),
        };
        if method != allowed {
            return Err(StatusCode::METHOD_NOT_ALLOWED);
        }
        Ok((kind, Call { space, op }))
    }

    fn error(status: StatusCode, message: &str) -> Resp {
        wire::json(
            status,
            &json!({"statusCode": status.as_u16(), "error": wire::reason(status), "message": message}),
        )
    }

    /// An API key (`Authorization: ApiKey K`), or `user:password` from Basic.
    fn credential(parts: &Parts) -> Option<String> {
        wire::authorization(parts, "ApiKey")
            .map(str::to_owned)
            .or_else(|| wire::basic_credentials(parts))
    }

    /// Every request but a GET (or HEAD, OPTIONS) needs `kbn-xsrf`.
    fn refuse(_kind: Kind, parts: &Parts) -> Option<Refusal> {
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        (!safe && !parts.headers.contains_key("kbn-xsrf")).then_some((
            StatusCode::BAD_REQUEST,
            "Request must contain a kbn-xsrf header.",
        ))
    }

    async fn handle(sh: Arc<Shared>, call: Call, parts: Parts, body: ReqBody) -> Resp {
        let space = call.space;
        match call.op {
            Op::Upload(case) => upload(&sh, space, &case, &parts, body).await,
            Op::Comment(case) => comment(&sh, space, &case, &parts, body).await,
            Op::Case(case) => match sh.store().cases.get(&(space, case.clone())) {
                Some(found) => wire::json(StatusCode::OK, &found.to_json()),
                None => case_not_found(&case),
            },
            Op::FindComments(case) => find_comments(&sh, space, &case, &parts),
            Op::GetComment(case, comment) => {
                let store = sh.store();
                let Some(found) = store.cases.get(&(space, case.clone())) else {
                    return case_not_found(&case);
                };
                match found.comments.iter().find(|c| c.id() == comment) {
                    Some(c) => wire::json(StatusCode::OK, &c.to_json(&found.owner)),
                    None => comment_not_found(&comment),
                }
            }
            Op::DeleteComment(case, comment) => delete_comment(&sh, space, &case, &comment),
            Op::Blob(kind, file_id) => {
                let store = sh.store();
                let message = format!("File [{file_id}] of kind [{kind}] not found");
                let found = server::find_file::<Kibana>(&store.files, &message, |f| {
                    f.id == file_id
                        && f.space == space
                        && store
                            .cases
                            .get(&(space.clone(), f.case_id.clone()))
                            .is_some_and(|c| file_kind(&c.owner) == kind)
                });
                match found {
                    // Kibana answers an empty file with 204, no body.
                    Ok(file) if file.data.is_empty() => wire::no_content(),
                    Ok(file) => server::download::<Kibana>(file, &parts),
                    Err(not_found) => *not_found,
                }
            }
        }
    }

    fn fast(sh: &Shared, call: &Call, _parts: &Parts, _file_len: u64) -> Resp {
        let case_id = match &call.op {
            Op::Upload(case) => case.as_str(),
            _ => "case",
        };
        let now = wire::now_millis();
        let mut case = Case::new(case_id, &sh.cfg.kibana_owner, &now);
        let file = Comment::File {
            id: "00000000-0000-4000-8000-000000000002".to_owned(),
            file_id: FAST_FILE_ID.to_owned(),
            name: "upload".to_owned(),
            extension: "txt".to_owned(),
            mime: "text/plain".to_owned(),
            created_at: now.clone(),
        };
        case.add(file, &now);
        wire::json(StatusCode::OK, &case.to_json())
    }

    fn fast_download(_sh: &Shared, call: &Call) -> bool {
        matches!(&call.op, Op::Blob(_, file) if file == FAST_FILE_ID)
    }

    const FAST_FILE: (&'static str, &'static str) = ("upload.txt", "text/plain");
}

/// A `comments/_find` paging parameter, validated as Kibana does: absent is `default`; at
/// least 1, at most `max`. `Err` is the message of the 400.
fn find_param(parts: &Parts, name: &str, default: u64, max: Option<u64>) -> Result<u64, String> {
    let Some(text) = wire::query_param(parts, name) else {
        return Ok(default);
    };
    match (wire::positive_integer(&text), max) {
        (Some(n), Some(max)) if n > max => {
            Err(format!("The {name} field cannot be more than {max}."))
        }
        (Some(n), _) => Ok(n),
        (None, _) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("The {name} field cannot be less than 1."))
        }
        (None, _) => Err(format!("Invalid value \"{text}\" supplied to \"{name}\"")),
    }
}

/// `GET .../comments/_find?page=&perPage=`: a page of the case's user comments (its files
/// are not in it), oldest first.
fn find_comments(sh: &Shared, space: Option<String>, case_id: &str, parts: &Parts) -> Resp {
    let paging = find_param(parts, "perPage", DEFAULT_PER_PAGE, Some(MAX_PER_PAGE))
        .and_then(|per_page| Ok((per_page, find_param(parts, "page", 1, None)?)));
    let (per_page, page) = match paging {
        Ok(paging) => paging,
        Err(message) => return Kibana::bad_request(&message),
    };
    if page.saturating_mul(per_page) > MAX_DOCS {
        return Kibana::bad_request(
            "The number of documents is too high. Paginating through more than 10,000 documents is not possible.",
        );
    }
    let store = sh.store();
    let Some(case) = store.cases.get(&(space, case_id.to_owned())) else {
        return case_not_found(case_id);
    };
    let users: Vec<&Comment> = case
        .comments
        .iter()
        .filter(|c| matches!(c, Comment::User { .. }))
        .collect();
    // Within MAX_DOCS, so these fit in usize.
    let comments: Vec<Value> = users
        .iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .map(|c| c.to_json(&case.owner))
        .collect();
    wire::json(
        StatusCode::OK,
        &json!({"page": page, "per_page": per_page, "total": users.len(), "comments": comments}),
    )
}

/// `DELETE .../comments/{commentId}`: 204; a `.files` comment takes its file with it.
fn delete_comment(sh: &Shared, space: Option<String>, case_id: &str, comment_id: &str) -> Resp {
    let now = wire::now_millis();
    let mut store = sh.store();
    let Some(case) = store.cases.get_mut(&(space, case_id.to_owned())) else {
        return case_not_found(case_id);
    };
    match case.remove(comment_id, &now) {
        Some(Comment::File { file_id, .. }) => {
            store.remove_file(&file_id);
        }
        Some(Comment::User { .. }) => {}
        None => return comment_not_found(comment_id),
    }
    wire::no_content()
}

/// The part's MIME type as Kibana derives it: from the filename's extension.
fn mime_of(part_filename: &str) -> String {
    wire::file_type(None, part_filename)
}

/// `name` without a trailing `.ext` (ASCII case-insensitive).
fn strip_extension<'a>(name: &'a str, ext: &str) -> &'a str {
    let Some(cut) = name.len().checked_sub(ext.len() + 1) else {
        return name;
    };
    match (name.get(..cut), name.get(cut..)) {
        (Some(stem), Some(tail))
            if !stem.is_empty() && tail.starts_with('.') && tail[1..].eq_ignore_ascii_case(ext) =>
        {
            stem
        }
        _ => name,
    }
}

async fn upload(
    sh: &Shared,
    space: Option<String>,
    case_id: &str,
    parts: &Parts,
    body: ReqBody,
) -> Resp {
    let limit = |name: &str, filename: Option<&str>| match (name, filename) {
        ("file", Some(filename)) if mime_of(filename).starts_with("image/") => Some(MAX_IMAGE),
        ("file", _) => Some(MAX_FILE),
        _ => None,
    };
    let form = match wire::read_form(parts, body, limit).await {
        Ok(form) => form,
        Err(FormError::NotMultipart) => {
            return Kibana::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
        }
        Err(FormError::Broken(e)) => {
            return Kibana::bad_request(&format!("Invalid multipart payload: {e}"))
        }
        Err(FormError::TooLarge { limit }) => {
            return Kibana::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("File is too large: the maximum size is {limit} bytes"),
            )
        }
    };
    let mut file = None;
    let mut display = None;
    let mut fields = Vec::new();
    for part in &form {
        match part.name.as_str() {
            "file" if file.is_some() => {
                return Kibana::bad_request(
                    "[request body.file]: expected value of type [Stream] but got [Array]",
                )
            }
            "file" if part.filename.is_none() => {
                return Kibana::bad_request(
                    "[request body.file]: expected value of type [Stream] but got [string]",
                )
            }
            "file" => file = Some(part),
            "filename" if display.is_some() => {
                return Kibana::bad_request(
                    "[request body.filename]: expected value of type [string] but got [Array]",
                )
            }
            "filename" => {
                let text = part.text();
                fields.push((part.name.clone(), text.clone()));
                display = Some(text);
            }
            other => {
                return Kibana::bad_request(&format!(
                    "[request body.{other}]: definition for this key is missing"
                ))
            }
        }
    }
    let Some(file) = file else {
        return Kibana::bad_request(
            "[request body.file]: expected value of type [Stream] but got [undefined]",
        );
    };
    if let Some(chars) = display.as_deref().map(|d| d.chars().count()) {
        if chars > MAX_FILENAME_CHARS {
            return Kibana::bad_request(&format!(
                "[request body.filename]: value has length [{chars}] but it must have a maximum length of [{MAX_FILENAME_CHARS}]."
            ));
        }
    }
    let part_filename = file.filename.clone().unwrap_or_default();
    let mime = mime_of(&part_filename);
    if !ALLOWED_MIME_TYPES.contains(&mime.as_str()) {
        return Kibana::bad_request(&format!("Unsupported file type: {mime} is not allowed"));
    }
    let extension = wire::extension(&part_filename)
        .unwrap_or_default()
        .to_owned();
    let name = match display.as_deref().filter(|d| !d.is_empty()) {
        Some(display) => strip_extension(display, &extension),
        None => wire::without_extension(&part_filename),
    }
    .to_owned();

    let now = wire::now_millis();
    let file_id = uuid::Uuid::new_v4().to_string();
    let stored = StoredFile::new(
        case_id.to_owned(),
        file_id.clone(),
        format!("{name}.{extension}"),
        mime.clone(),
        file.data.clone(),
    );
    let stored = StoredFile {
        fields,
        part_filename,
        space: space.clone(),
        created_at: now.clone(),
        ..stored
    };
    let mut guard = sh.store();
    let store = &mut *guard;
    let case = store
        .cases
        .entry((space, case_id.to_owned()))
        .or_insert_with(|| Case::new(case_id, &sh.cfg.kibana_owner, &now));
    let attachment = Comment::File {
        id: uuid::Uuid::new_v4().to_string(),
        file_id,
        name,
        extension,
        mime,
        created_at: now.clone(),
    };
    case.add(attachment, &now);
    let answer = case.to_json();
    store.files.push(stored);
    wire::json(StatusCode::OK, &answer)
}

async fn comment(
    sh: &Shared,
    space: Option<String>,
    case_id: &str,
    parts: &Parts,
    body: ReqBody,
) -> Resp {
    if !wire::has_content_type(parts, &mime::APPLICATION_JSON) {
        return Kibana::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type");
    }
    let Ok(bytes) = body.collect().await else {
        return Kibana::bad_request("Invalid request payload: the body could not be read");
    };
    let Some(request) = Object::parse(&bytes) else {
        return Kibana::bad_request("Invalid request payload JSON format");
    };
    if let Some((key, _)) = request
        .0
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "type" | "comment" | "owner"))
    {
        return Kibana::bad_request(&format!(
            "[request body.{key}]: definition for this key is missing"
        ));
    }
    if request.get("type").and_then(Value::as_str) != Some("user") {
        return Kibana::bad_request("[request body.type]: expected value to equal [user]");
    }
    let text = match request.get("comment") {
        Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
        Some(Value::String(_)) => {
            return Kibana::bad_request(
                "[request body.comment]: The comment field cannot be an empty string.",
            )
        }
        _ => return Kibana::bad_request("[request body.comment]: expected value of type [string]"),
    };
    let Some(owner) = request.get("owner").and_then(Value::as_str) else {
        return Kibana::bad_request("[request body.owner]: expected value of type [string]");
    };
    let now = wire::now_millis();
    let mut guard = sh.store();
    let store = &mut *guard;
    let Some(case) = store.cases.get_mut(&(space, case_id.to_owned())) else {
        return case_not_found(case_id);
    };
    if case.owner != owner {
        return Kibana::bad_request(&format!(
            "The owner field of the comment must match the case: expected [{}], got [{owner}]",
            case.owner
        ));
    }
    let user_comment = Comment::User {
        id: uuid::Uuid::new_v4().to_string(),
        text: text.clone(),
        created_at: now.clone(),
    };
    case.add(user_comment, &now);
    let answer = case.to_json();
    store.comments.push(StoredComment {
        case_id: case_id.to_owned(),
        text,
    });
    wire::json(StatusCode::OK, &answer)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Config, DialectId, Emulator, Fault};
    use base64::Engine as _;
    use reqwest::multipart::{Form, Part};
    use serde_json::{json, Value};

    fn config() -> Config {
        Config {
            tokens: vec!["apikey".into(), "elastic:changeme".into()],
            ..Config::new(DialectId::Kibana)
        }
    }

    fn post(emu: &Emulator, path: &str) -> reqwest::RequestBuilder {
        client()
            .post(format!("{}{path}", emu.url()))
            .header("authorization", "ApiKey apikey")
            .header("kbn-xsrf", "true")
    }

    fn file(data: impl Into<std::borrow::Cow<'static, [u8]>>, name: &str) -> Form {
        Form::new().part("file", Part::bytes(data).file_name(name.to_owned()))
    }

    fn kibana_error(status: u16, message: &str) -> Value {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason());
        json!({"statusCode": status, "error": reason, "message": message})
    }

    #[tokio::test]
    async fn upload_answers_the_whole_case() {
        let emu = start(config()).await;
        let form = file(&b"a,b\n1,2\n"[..], "export.csv").text("filename", "Quarterly export.csv");
        let resp = post(&emu, "/api/cases/case-1/files")
            .multipart(form)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let case: Value = resp.json().await.expect("json");
        let stored = &emu.files()[0];
        assert_eq!(stored.name, "Quarterly export.csv");
        assert_eq!(stored.content_type, "text/csv");
        assert_eq!(stored.part_filename, "export.csv");
        assert_eq!(stored.sha256, sha256(b"a,b\n1,2\n"));
        assert_eq!(
            stored.fields,
            vec![("filename".to_owned(), "Quarterly export.csv".to_owned())]
        );
        assert_eq!(stored.space, None);
        let comment = &case["comments"][0];
        let created = comment["created_at"].clone();
        assert_eq!(
            case,
            json!({
                "id": "case-1", "tags": [], "owner": "cases", "title": "Emulated case case-1", "status": "open",
                "version": "WzIsMV0=", "category": null,
                "comments": [{
                    "id": comment["id"], "type": "externalReference", "owner": "cases",
                    "externalReferenceAttachmentTypeId": ".files", "externalReferenceId": stored.id,
                    "externalReferenceStorage": {"type": "savedObject", "soType": "file"},
                    "externalReferenceMetadata": {"files": [
                        {"name": "Quarterly export", "extension": "csv", "mimeType": "text/csv", "created": created}
                    ]},
                    "created_at": created, "created_by": {"email": null, "username": "elastic", "full_name": null},
                    "pushed_at": null, "pushed_by": null, "updated_at": null, "updated_by": null, "version": "WzEsMV0="
                }],
                "duration": null, "settings": {"syncAlerts": false}, "severity": "low", "assignees": [],
                "closed_at": null, "closed_by": null,
                "connector": {"id": "none", "name": "none", "type": ".none", "fields": null},
                "created_at": case["created_at"],
                "created_by": {"email": null, "username": "elastic", "full_name": null, "profile_uid": "u_emulated"},
                "updated_at": case["updated_at"],
                "updated_by": {"email": null, "username": "elastic", "full_name": null, "profile_uid": "u_emulated"},
                "description": "", "totalAlerts": 0, "customFields": [], "totalComment": 0, "external_service": null
            })
        );
        assert!(comment["id"]
            .as_str()
            .is_some_and(|id| id.len() == 36 && id != stored.id));

        // A second file without a display name joins the same case; Basic works too.
        let resp = client()
            .post(format!("{}/api/cases/case-1/files", emu.url()))
            .basic_auth("elastic", Some("changeme"))
            .header("kbn-xsrf", "x")
            .multipart(file(&b"\x89PNG"[..], "shot.final.png"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let case: Value = resp.json().await.expect("json");
        assert_eq!(case["comments"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            case["comments"][1]["externalReferenceMetadata"]["files"][0]["name"],
            "shot.final"
        );
        assert_eq!(
            case["comments"][1]["externalReferenceMetadata"]["files"][0]["mimeType"],
            "image/png"
        );
        assert_eq!(emu.files()[1].name, "shot.final.png");
    }

    #[tokio::test]
    async fn spaces_keep_their_own_cases_and_files() {
        let emu = start(config()).await;
        let resp = post(&emu, "/s/team/api/cases/c/files")
            .multipart(file(&b"x"[..], "a.txt"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let stored = emu.files()[0].clone();
        assert_eq!(stored.space.as_deref(), Some("team"));
        let get = |path: String| {
            client()
                .get(format!("{}{path}", emu.url()))
                .header("authorization", "ApiKey apikey")
                .send()
        };
        assert_eq!(
            get("/s/team/api/cases/c".into())
                .await
                .expect("send")
                .status(),
            200
        );
        let resp = get("/api/cases/c".into()).await.expect("send");
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(404, "Saved object [cases/c] not found")
        );
        let blob = format!("/s/team/api/files/files/casesFilesCases/{}/blob", stored.id);
        let resp = get(blob.clone()).await.expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), "text/plain");
        assert_eq!(resp.bytes().await.expect("body").as_ref(), b"x");
        let named = get(format!("{blob}/a.txt")).await.expect("send");
        assert_eq!(named.status(), 200);
        let elsewhere = get(format!(
            "/api/files/files/casesFilesCases/{}/blob",
            stored.id
        ))
        .await
        .expect("send");
        assert_eq!(elsewhere.status(), 404);
        let wrong_kind = get(format!(
            "/s/team/api/files/files/securitySolutionFilesCases/{}/blob",
            stored.id
        ))
        .await
        .expect("send");
        assert_eq!(wrong_kind.status(), 404);
        // "/s/default" is the default space.
        let resp = post(&emu, "/s/default/api/cases/d/files")
            .multipart(file(&b"y"[..], "b.txt"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            get("/api/cases/d".into()).await.expect("send").status(),
            200
        );
    }

    #[tokio::test]
    async fn comments_are_added_to_the_case() {
        let emu = start(Config {
            kibana_owner: "securitySolution".into(),
            ..config()
        })
        .await;
        let comment = |case: &str, body: Value| {
            post(&emu, &format!("/api/cases/{case}/comments"))
                .json(&body)
                .send()
        };
        let resp = comment(
            "c",
            json!({"type": "user", "comment": "hi", "owner": "securitySolution"}),
        )
        .await
        .expect("send");
        assert_eq!(resp.status(), 404);
        post(&emu, "/api/cases/c/files")
            .multipart(file(&b"x"[..], "a.txt"))
            .send()
            .await
            .expect("send");
        let resp = comment(
            "c",
            json!({"type": "user", "comment": "hi", "owner": "securitySolution"}),
        )
        .await
        .expect("send");
        assert_eq!(resp.status(), 200);
        let case: Value = resp.json().await.expect("json");
        assert_eq!(case["totalComment"], 1);
        assert_eq!(case["owner"], "securitySolution");
        let user = &case["comments"][1];
        assert_eq!(
            user,
            &json!({
                "id": user["id"], "type": "user", "owner": "securitySolution", "comment": "hi", "version": "WzEsMV0=",
                "created_at": user["created_at"], "created_by": {"email": null, "username": "elastic", "full_name": null},
                "pushed_at": null, "pushed_by": null, "updated_at": null, "updated_by": null
            })
        );
        assert_eq!(
            emu.comments(),
            vec![super::StoredComment {
                case_id: "c".into(),
                text: "hi".into()
            }]
        );
        let bad = [
            json!({"type": "alert", "comment": "hi", "owner": "securitySolution"}),
            json!({"type": "user", "comment": "", "owner": "securitySolution"}),
            json!({"type": "user", "comment": "hi", "owner": "cases"}),
            json!({"type": "user", "comment": "hi"}),
            json!({"type": "user", "comment": "hi", "owner": "securitySolution", "extra": 1}),
        ];
        for body in bad {
            let resp = comment("c", body.clone()).await.expect("send");
            assert_eq!(resp.status(), 400, "{body}");
        }
        let blob = format!(
            "/api/files/files/securitySolutionFilesCases/{}/blob",
            emu.files()[0].id
        );
        let resp = client()
            .get(format!("{}{blob}", emu.url()))
            .header("authorization", "ApiKey apikey")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);

        emu.set_fault(Some(Fault::CommentStatus(503)));
        let resp = comment(
            "c",
            json!({"type": "user", "comment": "again", "owner": "securitySolution"}),
        )
        .await
        .expect("send");
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(503, "emulated failure")
        );
        assert_eq!(emu.comments().len(), 1);
    }

    fn get(emu: &Emulator, path: &str) -> reqwest::RequestBuilder {
        client()
            .get(format!("{}{path}", emu.url()))
            .header("authorization", "ApiKey apikey")
    }

    fn delete(emu: &Emulator, path: &str) -> reqwest::RequestBuilder {
        client()
            .delete(format!("{}{path}", emu.url()))
            .header("authorization", "ApiKey apikey")
            .header("kbn-xsrf", "true")
    }

    async fn json_of(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    /// Case `c` with a file and `n` user comments "c0", "c1", ...; the case as answered
    /// last.
    async fn case_with_comments(emu: &Emulator, space: &str, n: usize) -> Value {
        let (status, mut case) = json_of(
            post(emu, &format!("{space}/api/cases/c/files")).multipart(file(&b"x"[..], "a.txt")),
        )
        .await;
        assert_eq!(status, 200);
        for i in 0..n {
            let body = json!({"type": "user", "comment": format!("c{i}"), "owner": "cases"});
            let (status, answered) =
                json_of(post(emu, &format!("{space}/api/cases/c/comments")).json(&body)).await;
            assert_eq!(status, 200);
            case = answered;
        }
        case
    }

    #[tokio::test]
    async fn find_lists_user_comments_only() {
        let emu = start(config()).await;
        let case = case_with_comments(&emu, "", 3).await;
        let users: Vec<Value> = case["comments"]
            .as_array()
            .map(|c| c[1..].to_vec())
            .unwrap_or_default();
        assert_eq!(users.len(), 3);

        let (status, page) = json_of(get(&emu, "/api/cases/c/comments/_find")).await;
        assert_eq!(status, 200);
        assert_eq!(
            page,
            json!({"page": 1, "per_page": 20, "total": 3, "comments": users})
        );
        let (_, page) = json_of(get(&emu, "/api/cases/c/comments/_find?perPage=2&page=2")).await;
        assert_eq!(
            page,
            json!({"page": 2, "per_page": 2, "total": 3, "comments": [users[2]]})
        );
        let (_, page) = json_of(get(&emu, "/api/cases/c/comments/_find?page=5&perPage=100")).await;
        assert_eq!(
            page,
            json!({"page": 5, "per_page": 100, "total": 3, "comments": []})
        );
        for (query, message) in [
            ("perPage=101", "The perPage field cannot be more than 100."),
            ("perPage=0", "The perPage field cannot be less than 1."),
            ("perPage=x", "Invalid value \"x\" supplied to \"perPage\""),
            ("page=0", "The page field cannot be less than 1."),
            ("page=-2", "Invalid value \"-2\" supplied to \"page\""),
            (
                "page=101&perPage=100",
                "The number of documents is too high. Paginating through more than 10,000 documents is not possible.",
            ),
        ] {
            let (status, body) =
                json_of(get(&emu, &format!("/api/cases/c/comments/_find?{query}"))).await;
            assert_eq!(status, 400, "{query}");
            assert_eq!(body, kibana_error(400, message), "{query}");
        }
        let (status, body) = json_of(get(&emu, "/api/cases/nope/comments/_find")).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            kibana_error(404, "Saved object [cases/nope] not found")
        );
        // Spaces keep their own cases.
        let (status, _) = json_of(get(&emu, "/s/team/api/cases/c/comments/_find")).await;
        assert_eq!(status, 404);
        case_with_comments(&emu, "/s/team", 1).await;
        let (_, page) = json_of(get(&emu, "/s/team/api/cases/c/comments/_find")).await;
        assert_eq!(page["total"], 1);
        assert_eq!(page["comments"][0]["comment"], "c0");
    }

    #[tokio::test]
    async fn one_comment_as_the_case_shows_it() {
        let emu = start(config()).await;
        let case = case_with_comments(&emu, "", 1).await;
        for at in 0..2 {
            let comment = &case["comments"][at];
            let id = comment["id"].as_str().unwrap_or_default();
            let (status, got) = json_of(get(&emu, &format!("/api/cases/c/comments/{id}"))).await;
            assert_eq!(status, 200);
            assert_eq!(&got, comment);
        }
        assert_eq!(
            case["comments"][0]["externalReferenceAttachmentTypeId"],
            ".files"
        );
        let (status, body) = json_of(get(&emu, "/api/cases/c/comments/nope")).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            kibana_error(404, "Saved object [cases-comments/nope] not found")
        );
        let id = case["comments"][0]["id"].as_str().unwrap_or_default();
        for path in [
            format!("/api/cases/other/comments/{id}"),
            format!("/s/team/api/cases/c/comments/{id}"),
        ] {
            let (status, body) = json_of(get(&emu, &path)).await;
            assert_eq!(status, 404, "{path}");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Saved object [cases/")),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn kibana_words_are_not_cases() {
        let emu = start(config()).await;
        for word in [
            "_find",
            "tags",
            "reporters",
            "configure",
            "status",
            "alerts",
            "_x",
        ] {
            let resp = get(&emu, &format!("/api/cases/{word}"))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 404, "{word}");
            let resp = post(&emu, &format!("/api/cases/{word}/files"))
                .multipart(file(&b"x"[..], "a.txt"))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 404, "{word}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                kibana_error(404, "Not Found")
            );
        }
        assert!(emu.files().is_empty());
    }

    #[tokio::test]
    async fn deleting_a_comment_needs_xsrf_and_takes_its_file() {
        let emu = start(config()).await;
        let case = case_with_comments(&emu, "", 2).await;
        let file_comment = case["comments"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let user_comment = case["comments"][1]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let file_id = emu.files()[0].id.clone();
        let blob = format!("/api/files/files/casesFilesCases/{file_id}/blob");

        let path = format!("/api/cases/c/comments/{file_comment}");
        let resp = client()
            .delete(format!("{}{path}", emu.url()))
            .header("authorization", "ApiKey apikey")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(400, "Request must contain a kbn-xsrf header.")
        );
        let resp = client()
            .delete(format!("{}{path}", emu.url()))
            .header("kbn-xsrf", "true")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        // In another space the comment is not there.
        let resp = delete(&emu, &format!("/s/team{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
        assert_eq!(emu.files().len(), 1);

        let resp = delete(&emu, &path).send().await.expect("send");
        assert_eq!(resp.status(), 204);
        assert_eq!(resp.bytes().await.expect("body").len(), 0);
        assert!(emu.files().is_empty());
        let resp = get(&emu, &blob).send().await.expect("send");
        assert_eq!(resp.status(), 404);
        let (status, _) = json_of(get(&emu, &path)).await;
        assert_eq!(status, 404);
        let (_, case) = json_of(get(&emu, "/api/cases/c")).await;
        let ids: Vec<&str> = case["comments"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(ids.len(), 2);
        assert!(!ids.contains(&file_comment.as_str()));
        assert_eq!(case["totalComment"], 2);

        // A user comment: gone from the case and from _find.
        let resp = delete(&emu, &format!("/api/cases/c/comments/{user_comment}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 204);
        let (_, page) = json_of(get(&emu, "/api/cases/c/comments/_find")).await;
        assert_eq!(page["total"], 1);
        assert_eq!(page["comments"][0]["comment"], "c1");

        for path in [
            path.clone(),
            "/api/cases/c/comments/_find".to_owned(),
            "/api/cases/nope/comments/x".to_owned(),
        ] {
            let (status, body) = json_of(delete(&emu, &path)).await;
            assert_eq!(status, 404, "{path}");
            assert_eq!(body["statusCode"], 404);
        }
    }

    #[tokio::test]
    async fn blobs_honour_ranges_and_empty_files_are_204() {
        let emu = start(config()).await;
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let resp = post(&emu, "/api/cases/c/files")
            .multipart(file(data.clone(), "data.json"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let blob = format!(
            "/api/files/files/casesFilesCases/{}/blob",
            emu.files()[0].id
        );

        let resp = get(&emu, &blob).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), "application/json");
        assert_eq!(header(&resp, "content-length"), "1000");
        assert_eq!(header(&resp, "accept-ranges"), "bytes");
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename=\"data.json\""
        );
        assert_eq!(resp.bytes().await.expect("body").as_ref(), data.as_slice());

        let resp = get(&emu, &format!("{blob}/data.json"))
            .header("range", "bytes=10-19")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 206);
        assert_eq!(header(&resp, "content-range"), "bytes 10-19/1000");
        assert_eq!(header(&resp, "content-length"), "10");
        assert_eq!(resp.bytes().await.expect("body").as_ref(), &data[10..20]);
        let resp = get(&emu, &blob)
            .header("range", "bytes=-1")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 206);
        assert_eq!(resp.bytes().await.expect("body").as_ref(), &data[999..]);
        let resp = get(&emu, &blob)
            .header("range", "bytes=1000-")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 416);
        assert_eq!(header(&resp, "content-range"), "bytes */1000");
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(416, "Range Not Satisfiable")
        );
        let resp = get(&emu, &blob)
            .header("range", "bytes=0-1, 4-5")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.expect("body").len(), 1000);

        // An empty file: 204, no body, whatever the range.
        let resp = post(&emu, "/api/cases/c/files")
            .multipart(file(&b""[..], "empty.txt"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let empty = format!(
            "/api/files/files/casesFilesCases/{}/blob",
            emu.files()[1].id
        );
        for range in [None, Some("bytes=0-")] {
            let mut req = get(&emu, &empty);
            if let Some(range) = range {
                req = req.header("range", range);
            }
            let resp = req.send().await.expect("send");
            assert_eq!(resp.status(), 204, "{range:?}");
            assert_eq!(resp.bytes().await.expect("body").len(), 0);
        }
        let resp = get(&emu, "/api/files/files/casesFilesCases/nope/blob")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(404, "File [nope] of kind [casesFilesCases] not found")
        );
    }

    #[tokio::test]
    async fn refusals_name_the_problem() {
        let emu = start(config()).await;
        let url = format!("{}/api/cases/c/files", emu.url());
        let resp = client()
            .post(&url)
            .header("kbn-xsrf", "t")
            .multipart(file(&b"x"[..], "a.txt"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(401, "Unauthorized")
        );
        let resp = client()
            .post(&url)
            .header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("elastic:wrong")
                ),
            )
            .header("kbn-xsrf", "t")
            .multipart(file(&b"x"[..], "a.txt"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        let resp = client()
            .post(&url)
            .header("authorization", "ApiKey apikey")
            .multipart(file(&b"x"[..], "a.txt"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(400, "Request must contain a kbn-xsrf header.")
        );

        let long = "n".repeat(161);
        let cases: Vec<(Form, &str)> = vec![
            (file(&b"MZ"[..], "tool.exe"), "Unsupported file type: application/octet-stream is not allowed"),
            (file(&b"#"[..], "notes.md"), "Unsupported file type: text/markdown is not allowed"),
            (file(&b"x"[..], "noextension"), "Unsupported file type: application/octet-stream is not allowed"),
            (Form::new().text("filename", "x"), "[request body.file]: expected value of type [Stream] but got [undefined]"),
            (Form::new().text("file", "x"), "[request body.file]: expected value of type [Stream] but got [string]"),
            (file(&b"x"[..], "a.txt").text("caseId", "x"), "[request body.caseId]: definition for this key is missing"),
            (
                file(&b"x"[..], "a.txt").text("filename", long.clone()),
                "[request body.filename]: value has length [161] but it must have a maximum length of [160].",
            ),
        ];
        for (form, message) in cases {
            let resp = post(&emu, "/api/cases/c/files")
                .multipart(form)
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 400, "{message}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                kibana_error(400, message)
            );
        }
        // 160 characters is fine.
        let resp = post(&emu, "/api/cases/c/files")
            .multipart(file(&b"x"[..], "a.txt").text("filename", "é".repeat(160)))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let resp = post(&emu, "/api/cases/c/files")
            .json(&json!({}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 415);
        let resp = client()
            .get(&url)
            .header("authorization", "ApiKey apikey")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 405);
        let resp = post(&emu, "/api/nothing").send().await.expect("send");
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(404, "Not Found")
        );
        assert_eq!(emu.files().len(), 1);
    }

    #[tokio::test]
    async fn images_over_ten_mebibytes_are_too_large() {
        let emu = start(config()).await;
        let big = vec![0u8; (10 << 20) + 1];
        let resp = post(&emu, "/api/cases/c/files")
            .multipart(file(big.clone(), "huge.png"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 413);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            kibana_error(413, "File is too large: the maximum size is 10485760 bytes")
        );
        // The same bytes as a PDF are within the 100 MiB limit.
        let resp = post(&emu, "/api/cases/c/files")
            .multipart(file(big, "huge.pdf"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(emu.files().len(), 1);
    }

    #[test]
    fn display_names_lose_the_part_extension() {
        assert_eq!(super::strip_extension("Report.PDF", "pdf"), "Report");
        assert_eq!(super::strip_extension("Report", "pdf"), "Report");
        assert_eq!(super::strip_extension(".pdf", "pdf"), ".pdf");
        assert_eq!(super::strip_extension("a.tar.gz", "gz"), "a.tar");
        assert_eq!(super::strip_extension("éé", "x"), "éé");
    }
}
