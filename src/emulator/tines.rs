//! Tines v2: `POST /api/v2/cases/{case_id}/files` with a JSON body carrying the file as
//! base64 (`file_contents`), answered with the case activity it created (the file's record);
//! the paginated list (`GET .../files?per_page=&page=`), the record (`GET .../files/{id}`),
//! its hashes (`.../info`), the download with `Range` (`.../download`) and the delete
//! (`DELETE .../files/{id}`, 204). Credentials: `Authorization: Bearer K` or
//! `X-User-Token: K`. Errors are `{"errors":[{"message": M}]}`.

use std::sync::Arc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::server::{self, Api, Kind, Shared};
use super::wire::{self, DownloadStyle, Object, ReqBody, Resp};
use super::StoredFile;

/// The Tines v2 API.
pub(super) struct Tines;

/// A routed Tines request: its case id (the raw path segment) and endpoint.
pub(super) struct Call {
    case: String,
    op: Op,
}

/// A Tines endpoint.
enum Op {
    Upload,
    List,
    /// One file's endpoint, with the file id (the raw path segment).
    File(FileOp, String),
}

/// What is done with one file.
enum FileOp {
    Record,
    Info,
    Download,
    Delete,
}

/// `per_page` when none is given, and the most it can be.
const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 500;

fn case_not_found() -> Resp {
    Tines::not_found("Case not found")
}

/// Standard base64, padding optional (MIME line breaks are removed before decoding).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text.contains(['\r', '\n']) {
        let joined: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        BASE64.decode(joined).ok()
    } else {
        BASE64.decode(text).ok()
    }
}

/// The activity an upload created: the file's record.
struct Activity<'a> {
    case_id: u64,
    id: u64,
    value: Option<&'a str>,
    author_email: Option<&'a str>,
    block_id: Option<String>,
    filename: &'a str,
    created_at: &'a str,
}

impl<'a> Activity<'a> {
    /// The record of a stored file, from what its upload sent (kept in its `fields`).
    fn of(file: &'a StoredFile) -> Activity<'a> {
        let field = |name: &str| {
            file.fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        Activity {
            case_id: wire::integer_id(&file.case_id).unwrap_or_default(),
            id: wire::integer_id(&file.id).unwrap_or_default(),
            value: field("value"),
            author_email: field("author_email"),
            block_id: field("team_case_block_id").map(str::to_owned),
            filename: &file.name,
            created_at: &file.created_at,
        }
    }

    fn answer(&self, base: &str) -> Resp {
        wire::json(StatusCode::OK, &self.to_json(base))
    }

    fn to_json(&self, base: &str) -> Value {
        let commented = self.value.is_some_and(|v| !v.is_empty());
        let mut activity = json!({
            "case_id": self.case_id,
            "id": self.id,
            "activity_type": if commented { "FILE_ATTACHED_AND_COMMENTED" } else { "FILE_ATTACHED" },
            "value": self.value,
            "created_at": self.created_at,
            "file": {"filename": self.filename, "url": download_url(base, self.case_id, self.id)},
            "user": {
                "user_id": 1,
                "first_name": "Tina",
                "last_name": "Emu",
                "email": self.author_email.unwrap_or("tina@tines.test"),
                "avatar_url": "https://tines.test/avatar/1.png",
                "is_service_account": false
            }
        });
        if let (Some(block_id), Some(map)) = (&self.block_id, activity.as_object_mut()) {
            map.insert("block_id".to_owned(), json!(block_id));
        }
        activity
    }
}

fn download_url(base: &str, case_id: impl std::fmt::Display, id: impl std::fmt::Display) -> String {
    format!("{base}/api/v2/cases/{case_id}/files/{id}/download")
}

/// The link to one page of a case's files.
fn page_url(base: &str, case_id: u64, page: u64, per_page: u64) -> String {
    format!("{base}/api/v2/cases/{case_id}/files?page={page}&per_page={per_page}")
}

/// A paging parameter: absent is `default`; `Err` (the message of a 400) unless a positive
/// integer.
fn paging_param(parts: &Parts, name: &str, default: u64) -> Result<u64, String> {
    match wire::query_param(parts, name) {
        None => Ok(default),
        Some(text) => wire::positive_integer(&text)
            .ok_or_else(|| format!("{name} must be a positive integer")),
    }
}

/// An optional member that must be a string when present (null counts as absent).
fn optional_str<'a>(body: &'a Object, key: &str) -> Result<Option<&'a str>, String> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

impl Api for Tines {
    type Call = Call;

    /// Tines honours `Range`, and shows images inline.
    const DOWNLOADS: DownloadStyle = DownloadStyle {
        ranges: true,
        inline_images: true,
    };

    fn route(method: &Method, path: &[&str]) -> Result<(Kind, Call), StatusCode> {
        let ["api", "v2", "cases", case, "files", rest @ ..] = path else {
            return Err(StatusCode::NOT_FOUND);
        };
        let (kind, op) = match (rest, method) {
            ([], &Method::POST) => (Kind::Upload, Op::Upload),
            ([], &Method::GET) => (Kind::Read, Op::List),
            ([id], &Method::GET) => (Kind::Read, Op::File(FileOp::Record, id.to_string())),
            ([id], &Method::DELETE) => (Kind::Read, Op::File(FileOp::Delete, id.to_string())),
            ([id, "info"], &Method::GET) => (Kind::Read, Op::File(FileOp::Info, id.to_string())),
            ([id, "download"], &Method::GET) => {
                (Kind::Read, Op::File(FileOp::Download, id.to_string()))
            }
            ([] | [_] | [_, "info" | "download"], _) => return Err(StatusCode::METHOD_NOT_ALLOWED),
            _ => return Err(StatusCode::NOT_FOUND),
        };
        let case = case.to_string();
        Ok((kind, Call { case, op }))
    }

    fn error(status: StatusCode, message: &str) -> Resp {
        wire::json(status, &json!({"errors": [{"message": message}]}))
    }

    fn credential(parts: &Parts) -> Option<String> {
        wire::authorization(parts, "Bearer")
            .or_else(|| wire::header(parts, "x-user-token"))
            .map(str::to_owned)
    }

    async fn handle(sh: Arc<Shared>, call: Call, parts: Parts, body: ReqBody) -> Resp {
        let Some(case_id) = wire::integer_id(&call.case) else {
            return case_not_found();
        };
        let (op, file_id) = match call.op {
            Op::Upload => return upload(&sh, case_id, &parts, body).await,
            Op::List => return list(&sh, case_id, &parts),
            Op::File(op, id) => (op, wire::integer_id(&id).map(|n| n.to_string())),
        };
        let case = case_id.to_string();
        let mut store = sh.store();
        let found = server::find_file::<Tines>(&store.files, "File not found", |f| {
            f.case_id == case && Some(&f.id) == file_id.as_ref()
        });
        let file = match found {
            Ok(file) => file,
            Err(not_found) => return *not_found,
        };
        match op {
            FileOp::Record => Activity::of(file).answer(&sh.base_url(&parts)),
            FileOp::Info => {
                let guid = store.guids.get(&file.id).cloned().unwrap_or_default();
                wire::json(
                    StatusCode::OK,
                    &json!({
                        "filename": file.name,
                        "content_type": file.content_type,
                        "guid": guid,
                        "md5": file.md5,
                        "sha256": file.sha256,
                        "sizeinbytes": file.size,
                    }),
                )
            }
            FileOp::Download => server::download::<Tines>(file, &parts),
            FileOp::Delete => {
                let id = file.id.clone();
                store.remove_file(&id);
                wire::no_content()
            }
        }
    }

    fn fast(sh: &Shared, call: &Call, parts: &Parts, _file_len: u64) -> Resp {
        let activity = Activity {
            case_id: wire::integer_id(&call.case).unwrap_or(1),
            id: super::fast::next_number(sh),
            value: None,
            author_email: None,
            block_id: None,
            filename: "upload.bin",
            created_at: &wire::now_seconds(),
        };
        activity.answer(&sh.base_url(parts))
    }

    fn fast_download(sh: &Shared, call: &Call) -> bool {
        matches!(&call.op, Op::File(FileOp::Download, id)
            if wire::integer_id(id).is_some_and(|n| super::fast::is_named(sh, n)))
    }
}

/// `GET .../files?per_page=&page=`: one page of the case's files, oldest first, with
/// Tines's pagination meta.
fn list(sh: &Shared, case_id: u64, parts: &Parts) -> Resp {
    let paging = paging_param(parts, "per_page", DEFAULT_PER_PAGE)
        .and_then(|per_page| Ok((per_page.min(MAX_PER_PAGE), paging_param(parts, "page", 1)?)));
    let (per_page, page) = match paging {
        Ok(paging) => paging,
        Err(message) => return Tines::bad_request(&message),
    };
    let base = sh.base_url(parts);
    let case = case_id.to_string();
    let store = sh.store();
    let files: Vec<&StoredFile> = store.files.iter().filter(|f| f.case_id == case).collect();
    let count = files.len() as u64;
    let pages = count.div_ceil(per_page);
    // Both fit in usize once capped by the number of files.
    let skip = (page - 1).saturating_mul(per_page).min(count) as usize;
    let records: Vec<Value> = files
        .iter()
        .skip(skip)
        .take(per_page as usize)
        .map(|f| Activity::of(f).to_json(&base))
        .collect();
    let link = |page: u64| page_url(&base, case_id, page, per_page);
    let next = (page < pages).then(|| page + 1);
    wire::json(
        StatusCode::OK,
        &json!({
            "case_id": case_id,
            "files": records,
            "meta": {
                "current_page": link(page),
                "previous_page": (page > 1).then(|| link(page - 1)),
                "next_page": next.map(link),
                "next_page_number": next,
                "per_page": per_page,
                "pages": pages,
                "count": count,
            },
        }),
    )
}

async fn upload(sh: &Shared, case_id: u64, parts: &Parts, body: ReqBody) -> Resp {
    if !wire::has_content_type(parts, &mime::APPLICATION_JSON) {
        return Tines::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let Ok(bytes) = body.collect().await else {
        return Tines::bad_request("could not read the request body");
    };
    let Some(object) = Object::parse(&bytes) else {
        return Tines::bad_request("request body must be a JSON object");
    };
    match validate(case_id, &object) {
        Ok(upload) => store(sh, parts, upload, &object),
        Err(message) => Tines::bad_request(&message),
    }
}

/// A valid upload: the decoded file and the optional members.
struct Upload<'a> {
    case_id: u64,
    filename: &'a str,
    data: Vec<u8>,
    value: Option<&'a str>,
    author_email: Option<&'a str>,
    block_id: Option<String>,
}

fn validate(case_id: u64, body: &Object) -> Result<Upload<'_>, String> {
    let filename = match body.get("filename") {
        None => return Err("filename is required".to_owned()),
        Some(Value::String(s)) if s.is_empty() => return Err("filename can't be blank".to_owned()),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("filename must be a string".to_owned()),
    };
    let data = match body.get("file_contents") {
        None => return Err("file_contents is required".to_owned()),
        Some(Value::String(s)) => decode_base64(s).ok_or("file_contents must be valid base64")?,
        Some(_) => return Err("file_contents must be a string".to_owned()),
    };
    let value = optional_str(body, "value")?;
    let author_email = optional_str(body, "author_email")?;
    let block_id = match body.get("team_case_block_id") {
        None => None,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(_) => return Err("team_case_block_id must be an integer".to_owned()),
    };
    Ok(Upload {
        case_id,
        filename,
        data,
        value,
        author_email,
        block_id,
    })
}

fn store(sh: &Shared, parts: &Parts, upload: Upload<'_>, body: &Object) -> Resp {
    let content_type = wire::file_type(None, upload.filename);
    let mut store = sh.store();
    let id = store.next_id();
    let file = StoredFile::new(
        upload.case_id.to_string(),
        id.to_string(),
        upload.filename.to_owned(),
        content_type,
        upload.data.into(),
    );
    let file = StoredFile {
        fields: body.text_fields("file_contents"),
        created_at: wire::now_seconds(),
        ..file
    };
    let activity = Activity {
        case_id: upload.case_id,
        id,
        value: upload.value,
        author_email: upload.author_email,
        block_id: upload.block_id,
        filename: upload.filename,
        created_at: &file.created_at,
    };
    let answer = activity.answer(&sh.base_url(parts));
    store
        .guids
        .insert(file.id.clone(), uuid::Uuid::new_v4().to_string());
    store.files.push(file);
    answer
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Config, DialectId, Emulator};
    use serde_json::{json, Value};

    fn config() -> Config {
        Config {
            tokens: vec!["key".into()],
            ..Config::new(DialectId::Tines)
        }
    }

    #[tokio::test]
    async fn upload_answers_the_activity() {
        let emu = start(config()).await;
        let url = format!("{}/api/v2/cases/42/files", emu.url());
        let resp = client()
            .post(&url)
            .bearer_auth("key")
            .header("content-type", "application/json")
            .body(r#"{"value":"see file","file_contents":"aGVsbG8=","filename":"hello.txt","author_email":"a@b.c","team_case_block_id":7,"extra":true}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        let created_at = body["created_at"].as_str().unwrap_or_default().to_owned();
        assert_eq!(created_at.len(), 20, "{created_at}");
        assert!(created_at.ends_with('Z'));
        assert_eq!(
            body,
            json!({
                "case_id": 42,
                "id": 1,
                "activity_type": "FILE_ATTACHED_AND_COMMENTED",
                "value": "see file",
                "created_at": created_at,
                "file": {"filename": "hello.txt", "url": format!("{}/api/v2/cases/42/files/1/download", emu.url())},
                "user": {
                    "user_id": 1, "first_name": "Tina", "last_name": "Emu", "email": "a@b.c",
                    "avatar_url": "https://tines.test/avatar/1.png", "is_service_account": false
                },
                "block_id": "7"
            })
        );
        let file = &emu.files()[0];
        assert_eq!(file.sha256, sha256(b"hello"));
        assert_eq!(file.content_type, "text/plain");
        assert_eq!(file.part_filename, "hello.txt");
        assert_eq!(
            file.fields,
            [
                ("value", "see file"),
                ("filename", "hello.txt"),
                ("author_email", "a@b.c"),
                ("team_case_block_id", "7"),
                ("extra", "true")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec()
        );

        // Nulls are absent; X-User-Token works too; unpadded, line-broken base64 is fine.
        let resp = client()
            .post(&url)
            .header("X-User-Token", "key")
            .json(&json!({"filename": "blob", "file_contents": "aGVs\r\nbG8", "value": null, "author_email": null, "team_case_block_id": null}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["activity_type"], "FILE_ATTACHED");
        assert_eq!(body["value"], Value::Null);
        assert_eq!(body["id"], 2);
        assert_eq!(body["user"]["email"], "tina@tines.test");
        assert!(body.get("block_id").is_none());
        assert_eq!(emu.files()[1].content_type, "application/octet-stream");
        assert_eq!(emu.files()[1].data.as_ref(), b"hello");
    }

    /// Uploads `data` as `name` to case `case`; the activity answered.
    async fn upload(emu: &Emulator, case: &str, name: &str, data: &[u8]) -> Value {
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data);
        let resp = client()
            .post(format!("{}/api/v2/cases/{case}/files", emu.url()))
            .bearer_auth("key")
            .json(&json!({"filename": name, "file_contents": encoded}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }

    async fn get(emu: &Emulator, path: &str) -> reqwest::Response {
        client()
            .get(format!("{}{path}", emu.url()))
            .bearer_auth("key")
            .send()
            .await
            .expect("send")
    }

    fn tines_error(message: &str) -> Value {
        json!({"errors": [{"message": message}]})
    }

    #[tokio::test]
    async fn list_get_info_and_download_round_trip() {
        let emu = start(config()).await;
        let bytes: Vec<u8> = (0..=255).collect();
        let activity = upload(&emu, "5", "data.bin", &bytes).await;
        let download = activity["file"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            download,
            format!("{}/api/v2/cases/5/files/1/download", emu.url())
        );
        let resp = client()
            .get(&download)
            .bearer_auth("key")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), "application/octet-stream");
        assert_eq!(header(&resp, "content-length"), "256");
        assert_eq!(header(&resp, "accept-ranges"), "bytes");
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename=\"data.bin\""
        );
        assert_eq!(resp.bytes().await.expect("body").as_ref(), bytes.as_slice());

        // The record is the activity the upload answered, in the list and on its own.
        let listed: Value = get(&emu, "/api/v2/cases/5/files")
            .await
            .json()
            .await
            .expect("json");
        let first = format!("{}/api/v2/cases/5/files?page=1&per_page=20", emu.url());
        assert_eq!(
            listed,
            json!({
                "case_id": 5,
                "files": [activity.clone()],
                "meta": {
                    "current_page": first, "previous_page": null, "next_page": null,
                    "next_page_number": null, "per_page": 20, "pages": 1, "count": 1
                }
            })
        );
        let resp = get(&emu, "/api/v2/cases/5/files/1").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.expect("json"), activity);

        let resp = get(&emu, "/api/v2/cases/005/files/01/info").await;
        assert_eq!(resp.status(), 200);
        let info: Value = resp.json().await.expect("json");
        let guid = info["guid"].as_str().unwrap_or_default().to_owned();
        assert!(uuid::Uuid::try_parse(&guid).is_ok(), "{guid}");
        assert_eq!(
            info,
            json!({
                "filename": "data.bin",
                "content_type": "application/octet-stream",
                "guid": guid,
                "md5": "e2c865db4162bed963bfaa9ef6ac18f0",
                "sha256": sha256(&bytes),
                "sizeinbytes": 256
            })
        );
        // The GUID is the file's own: it does not change.
        let again: Value = get(&emu, "/api/v2/cases/5/files/1/info")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(again["guid"], guid.as_str());
        assert_eq!(emu.files()[0].md5, "e2c865db4162bed963bfaa9ef6ac18f0");

        // Unknown files, files of another case and bad case ids are 404s.
        for (path, message) in [
            ("/api/v2/cases/6/files/1/download", "File not found"),
            ("/api/v2/cases/6/files/1", "File not found"),
            ("/api/v2/cases/6/files/1/info", "File not found"),
            ("/api/v2/cases/5/files/2", "File not found"),
            ("/api/v2/cases/5/files/x/download", "File not found"),
            ("/api/v2/cases/x/files/1", "Case not found"),
            ("/api/v2/cases/x/files", "Case not found"),
            ("/api/v2/cases/5/files/1/other", "Not Found"),
        ] {
            let resp = get(&emu, path).await;
            assert_eq!(resp.status(), 404, "{path}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                tines_error(message),
                "{path}"
            );
        }
        let resp = client()
            .post(format!("{}/api/v2/cases/5/files/1/download", emu.url()))
            .bearer_auth("key")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 405);

        // Images are shown inline, as Tines does.
        upload(&emu, "5", "shot.png", b"\x89PNG").await;
        let resp = get(&emu, "/api/v2/cases/5/files/2/download").await;
        assert_eq!(header(&resp, "content-type"), "image/png");
        assert_eq!(
            header(&resp, "content-disposition"),
            "inline; filename=\"shot.png\""
        );
    }

    #[tokio::test]
    async fn records_keep_what_the_upload_sent() {
        let emu = start(config()).await;
        let resp = client()
            .post(format!("{}/api/v2/cases/9/files", emu.url()))
            .bearer_auth("key")
            .json(&json!({
                "filename": "a.txt", "file_contents": "eA==", "value": "first",
                "author_email": "x@y.z", "team_case_block_id": 12
            }))
            .send()
            .await
            .expect("send");
        let activity: Value = resp.json().await.expect("json");
        assert_eq!(activity["activity_type"], "FILE_ATTACHED_AND_COMMENTED");
        assert_eq!(activity["block_id"], "12");
        let record: Value = get(&emu, "/api/v2/cases/9/files/1")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(record, activity);
    }

    #[tokio::test]
    async fn lists_are_paged() {
        let emu = start(config()).await;
        for i in 0..45 {
            upload(&emu, "3", &format!("f{i}.txt"), b"x").await;
        }
        upload(&emu, "4", "other.txt", b"y").await;
        let link = |page: u64, per_page: u64| {
            format!(
                "{}/api/v2/cases/3/files?page={page}&per_page={per_page}",
                emu.url()
            )
        };
        let names = |body: &Value| -> Vec<String> {
            body["files"]
                .as_array()
                .map(|files| {
                    files
                        .iter()
                        .map(|f| {
                            f["file"]["filename"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned()
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let page = |query: &'static str| {
            let emu = &emu;
            async move {
                let resp = get(emu, &format!("/api/v2/cases/3/files{query}")).await;
                assert_eq!(resp.status(), 200, "{query}");
                resp.json::<Value>().await.expect("json")
            }
        };

        let first = page("").await;
        assert_eq!(first["case_id"], 3);
        assert_eq!(
            first["meta"],
            json!({
                "current_page": link(1, 20), "previous_page": null, "next_page": link(2, 20),
                "next_page_number": 2, "per_page": 20, "pages": 3, "count": 45
            })
        );
        let expected: Vec<String> = (0..20).map(|i| format!("f{i}.txt")).collect();
        assert_eq!(names(&first), expected);

        let third = page("?per_page=20&page=3").await;
        assert_eq!(
            third["meta"],
            json!({
                "current_page": link(3, 20), "previous_page": link(2, 20), "next_page": null,
                "next_page_number": null, "per_page": 20, "pages": 3, "count": 45
            })
        );
        let expected: Vec<String> = (40..45).map(|i| format!("f{i}.txt")).collect();
        assert_eq!(names(&third), expected);

        let second = page("?page=2&per_page=7").await;
        assert_eq!(second["meta"]["pages"], 7);
        assert_eq!(second["meta"]["next_page_number"], 3);
        assert_eq!(second["meta"]["previous_page"], link(1, 7));
        assert_eq!(names(&second)[0], "f7.txt");

        // Past the end: no files, the meta still right.
        let past = page("?page=9").await;
        assert_eq!(past["files"], json!([]));
        assert_eq!(
            past["meta"],
            json!({
                "current_page": link(9, 20), "previous_page": link(8, 20), "next_page": null,
                "next_page_number": null, "per_page": 20, "pages": 3, "count": 45
            })
        );

        // per_page above 500 is read as 500.
        let capped = page("?per_page=501").await;
        assert_eq!(capped["meta"]["per_page"], 500);
        assert_eq!(capped["meta"]["pages"], 1);
        assert_eq!(capped["meta"]["current_page"], link(1, 500));
        assert_eq!(names(&capped).len(), 45);
        let huge = page("?per_page=99999999999999999999999").await;
        assert_eq!(huge["meta"]["per_page"], 500);
        // With more than 500 files, a page holds 500 of them.
        {
            let mut store = emu.shared.store();
            let first = store.files[0].clone();
            store.files.extend(std::iter::repeat_n(first, 600));
        }
        let capped = page("?per_page=1000&page=2").await;
        assert_eq!(capped["meta"]["count"], 645);
        assert_eq!(capped["meta"]["pages"], 2);
        assert_eq!(capped["meta"]["previous_page"], link(1, 500));
        assert_eq!(names(&capped).len(), 145);
        let full = page("?per_page=1000").await;
        assert_eq!(names(&full).len(), 500);
        assert_eq!(full["meta"]["next_page"], link(2, 500));
        emu.shared.store().files.truncate(46);

        // A case without files has no pages.
        let empty: Value = get(&emu, "/api/v2/cases/8/files")
            .await
            .json()
            .await
            .expect("json");
        let url = emu.url();
        assert_eq!(
            empty,
            json!({
                "case_id": 8, "files": [],
                "meta": {
                    "current_page": format!("{url}/api/v2/cases/8/files?page=1&per_page=20"),
                    "previous_page": null, "next_page": null, "next_page_number": null,
                    "per_page": 20, "pages": 0, "count": 0
                }
            })
        );

        for (query, message) in [
            ("per_page=0", "per_page must be a positive integer"),
            ("per_page=abc", "per_page must be a positive integer"),
            ("per_page=", "per_page must be a positive integer"),
            ("per_page=-1", "per_page must be a positive integer"),
            ("page=0", "page must be a positive integer"),
            ("page=1.5", "page must be a positive integer"),
        ] {
            let resp = get(&emu, &format!("/api/v2/cases/3/files?{query}")).await;
            assert_eq!(resp.status(), 400, "{query}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                tines_error(message),
                "{query}"
            );
        }
    }

    #[tokio::test]
    async fn downloads_honour_ranges() {
        let emu = start(config()).await;
        let bytes: Vec<u8> = (0..100).collect();
        upload(&emu, "1", "data.bin", &bytes).await;
        let ranged = |range: &'static str| {
            client()
                .get(format!("{}/api/v2/cases/1/files/1/download", emu.url()))
                .bearer_auth("key")
                .header("range", range)
                .send()
        };
        for (range, first, last) in [
            ("bytes=0-9", 0, 9),
            ("bytes=90-", 90, 99),
            ("bytes=-5", 95, 99),
            ("bytes=50-500", 50, 99),
        ] {
            let resp = ranged(range).await.expect("send");
            assert_eq!(resp.status(), 206, "{range}");
            assert_eq!(
                header(&resp, "content-range"),
                format!("bytes {first}-{last}/100")
            );
            assert_eq!(
                header(&resp, "content-length"),
                (last - first + 1).to_string()
            );
            assert_eq!(header(&resp, "accept-ranges"), "bytes");
            assert_eq!(header(&resp, "content-type"), "application/octet-stream");
            assert_eq!(
                header(&resp, "content-disposition"),
                "attachment; filename=\"data.bin\""
            );
            let body = resp.bytes().await.expect("body");
            assert_eq!(body.as_ref(), &bytes[first..=last], "{range}");
        }
        for range in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
            let resp = ranged(range).await.expect("send");
            assert_eq!(resp.status(), 416, "{range}");
            assert_eq!(header(&resp, "content-range"), "bytes */100");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                tines_error("Range Not Satisfiable")
            );
        }
        for range in ["bytes=0-1,5-6", "bytes=x-", "lines=1-2", "bytes=5-1"] {
            let resp = ranged(range).await.expect("send");
            assert_eq!(resp.status(), 200, "{range}");
            assert_eq!(header(&resp, "content-length"), "100");
            assert!(resp.headers().get("content-range").is_none());
            assert_eq!(resp.bytes().await.expect("body").as_ref(), bytes.as_slice());
        }
    }

    #[tokio::test]
    async fn deleted_files_are_gone() {
        let emu = start(config()).await;
        upload(&emu, "1", "a.txt", b"a").await;
        upload(&emu, "1", "b.txt", b"b").await;
        let delete = |path: &'static str| {
            client()
                .delete(format!("{}{path}", emu.url()))
                .bearer_auth("key")
                .send()
        };
        // Another case's file, or an unknown one, is not found; nothing is deleted.
        for path in ["/api/v2/cases/2/files/1", "/api/v2/cases/1/files/3"] {
            let resp = delete(path).await.expect("send");
            assert_eq!(resp.status(), 404, "{path}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                tines_error("File not found")
            );
        }
        assert_eq!(emu.files().len(), 2);
        let resp = delete("/api/v2/cases/1/files/1").await.expect("send");
        assert_eq!(resp.status(), 204);
        assert_eq!(resp.bytes().await.expect("body").len(), 0);
        assert_eq!(emu.files().len(), 1);
        assert_eq!(emu.files()[0].name, "b.txt");
        for path in [
            "/api/v2/cases/1/files/1",
            "/api/v2/cases/1/files/1/info",
            "/api/v2/cases/1/files/1/download",
        ] {
            let resp = get(&emu, path).await;
            assert_eq!(resp.status(), 404, "{path}");
        }
        let listed: Value = get(&emu, "/api/v2/cases/1/files")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(listed["meta"]["count"], 1);
        assert_eq!(listed["files"][0]["id"], 2);
        let resp = delete("/api/v2/cases/1/files/1").await.expect("send");
        assert_eq!(resp.status(), 404);
        // Deleting needs the credential like everything else.
        let resp = client()
            .delete(format!("{}/api/v2/cases/1/files/2", emu.url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        assert_eq!(emu.files().len(), 1);
    }

    #[tokio::test]
    async fn refusals_name_the_problem() {
        let emu = start(config()).await;
        let good = format!("{}/api/v2/cases/1/files", emu.url());
        // (url, key, content type, body, status, message)
        type Case<'a> = (String, Option<&'a str>, &'a str, &'a str, u16, &'a str);
        let cases: Vec<Case<'_>> = vec![
            // (url, key, content type, body, status, message)
            (
                good.clone(),
                None,
                "application/json",
                "{}",
                401,
                "Unauthorized",
            ),
            (
                good.clone(),
                Some("nope"),
                "application/json",
                "{}",
                401,
                "Unauthorized",
            ),
            (
                format!("{}/api/v2/cases/abc/files", emu.url()),
                Some("key"),
                "application/json",
                "{}",
                404,
                "Case not found",
            ),
            (
                good.clone(),
                Some("key"),
                "text/plain",
                "{}",
                415,
                "Content-Type must be application/json",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                "{",
                400,
                "request body must be a JSON object",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                "[1]",
                400,
                "request body must be a JSON object",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"file_contents":"eA=="}"#,
                400,
                "filename is required",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"","file_contents":"eA=="}"#,
                400,
                "filename can't be blank",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":3,"file_contents":"eA=="}"#,
                400,
                "filename must be a string",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a"}"#,
                400,
                "file_contents is required",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a","file_contents":5}"#,
                400,
                "file_contents must be a string",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a","file_contents":"eA=*"}"#,
                400,
                "file_contents must be valid base64",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a","file_contents":"eA== "}"#,
                400,
                "file_contents must be valid base64",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a","file_contents":"eA","value":1}"#,
                400,
                "value must be a string",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a","file_contents":"eA","author_email":[]}"#,
                400,
                "author_email must be a string",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a","file_contents":"eA","team_case_block_id":"7"}"#,
                400,
                "team_case_block_id must be an integer",
            ),
            (
                good.clone(),
                Some("key"),
                "application/json",
                r#"{"filename":"a","file_contents":"eA","team_case_block_id":1.5}"#,
                400,
                "team_case_block_id must be an integer",
            ),
            (
                format!("{}/api/v2/elsewhere", emu.url()),
                Some("key"),
                "application/json",
                "{}",
                404,
                "Not Found",
            ),
        ];
        for (url, key, content_type, body, status, message) in cases {
            let mut req = client()
                .post(&url)
                .header("content-type", content_type)
                .body(body);
            if let Some(key) = key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.expect("send");
            assert_eq!(resp.status().as_u16(), status, "{body}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                json!({"errors": [{"message": message}]}),
                "{body}"
            );
        }
        let resp = client()
            .put(&good)
            .bearer_auth("key")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 405);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            json!({"errors": [{"message": "Method Not Allowed"}]})
        );
        assert!(emu.files().is_empty());
    }
}
