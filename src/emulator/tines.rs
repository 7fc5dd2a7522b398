//! Tines v2: `POST /api/v2/cases/{case_id}/files` with a JSON body carrying the file as
//! base64 (`file_contents`), answered with the case activity it created; list and download.
//! Credentials: `Authorization: Bearer K` or `X-User-Token: K`. Errors are
//! `{"errors":[{"message": M}]}`.

use std::sync::Arc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::server::{Api, Kind, Refusal, Shared};
use super::wire::{self, Object, ReqBody, Resp};
use super::StoredFile;

/// The Tines v2 API.
pub(super) struct Tines;

/// A routed Tines request; ids are the raw path segments.
pub(super) enum Call {
    Upload(String),
    List(String),
    Download(String, String),
}

fn error(status: StatusCode, message: &str) -> Resp {
    wire::json(status, &json!({"errors": [{"message": message}]}))
}

fn bad_request(message: &str) -> Resp {
    error(StatusCode::BAD_REQUEST, message)
}

fn case_not_found() -> Resp {
    error(StatusCode::NOT_FOUND, "Case not found")
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

/// The activity an upload created.
struct Activity<'a> {
    case_id: u64,
    id: u64,
    value: Option<&'a str>,
    author_email: Option<&'a str>,
    block_id: Option<String>,
    filename: &'a str,
    created_at: &'a str,
}

impl Activity<'_> {
    fn answer(&self, base: &str) -> Resp {
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
        wire::json(StatusCode::OK, &activity)
    }
}

fn download_url(base: &str, case_id: impl std::fmt::Display, id: impl std::fmt::Display) -> String {
    format!("{base}/api/v2/cases/{case_id}/files/{id}/download")
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

    fn route(method: &Method, path: &[&str]) -> Result<(Kind, Call), StatusCode> {
        let (kind, call) = match (path, method) {
            (["api", "v2", "cases", case, "files"], &Method::POST) => {
                (Kind::Upload, Call::Upload(case.to_string()))
            }
            (["api", "v2", "cases", case, "files"], &Method::GET) => {
                (Kind::Read, Call::List(case.to_string()))
            }
            (["api", "v2", "cases", case, "files", id, "download"], &Method::GET) => {
                (Kind::Read, Call::Download(case.to_string(), id.to_string()))
            }
            (
                ["api", "v2", "cases", _, "files"]
                | ["api", "v2", "cases", _, "files", _, "download"],
                _,
            ) => return Err(StatusCode::METHOD_NOT_ALLOWED),
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok((kind, call))
    }

    fn error(status: StatusCode, message: &str) -> Resp {
        error(status, message)
    }

    fn authorize(sh: &Shared, _kind: Kind, _call: &Call, parts: &Parts) -> Result<(), Refusal> {
        let key =
            wire::authorization(parts, "Bearer").or_else(|| wire::header(parts, "x-user-token"));
        if sh.accepts(key) {
            Ok(())
        } else {
            Err((StatusCode::UNAUTHORIZED, "Unauthorized"))
        }
    }

    async fn handle(sh: Arc<Shared>, call: Call, parts: Parts, body: ReqBody) -> Resp {
        match call {
            Call::Upload(case) => upload(&sh, &case, &parts, body).await,
            Call::List(case) => {
                let Some(case) = wire::integer_id(&case) else {
                    return case_not_found();
                };
                let case_id = case.to_string();
                let base = sh.base_url(&parts);
                let store = sh.store();
                let files: Vec<Value> = store
                    .files
                    .iter()
                    .filter(|f| f.case_id == case_id)
                    .map(|f| {
                        let id = f.id.parse::<u64>().unwrap_or_default();
                        json!({
                            "id": id,
                            "filename": f.name,
                            "url": download_url(&base, case, id),
                            "created_at": f.created_at,
                        })
                    })
                    .collect();
                let count = files.len();
                wire::json(
                    StatusCode::OK,
                    &json!({"case_files": files, "meta": {"count": count}}),
                )
            }
            Call::Download(case, id) => {
                let Some(case) = wire::integer_id(&case).map(|n| n.to_string()) else {
                    return case_not_found();
                };
                let id = wire::integer_id(&id).map(|n| n.to_string());
                let store = sh.store();
                let file = store
                    .files
                    .iter()
                    .find(|f| f.case_id == case && Some(&f.id) == id.as_ref());
                match file {
                    Some(file) => wire::download(file),
                    None => error(StatusCode::NOT_FOUND, "File not found"),
                }
            }
        }
    }

    fn fast(sh: &Shared, call: &Call, parts: &Parts, _drained: u64) -> Resp {
        let case_id = match call {
            Call::Upload(case) => wire::integer_id(case).unwrap_or(1),
            _ => 1,
        };
        let activity = Activity {
            case_id,
            id: 1,
            value: None,
            author_email: None,
            block_id: None,
            filename: "upload.bin",
            created_at: &wire::now_seconds(),
        };
        activity.answer(&sh.base_url(parts))
    }
}

async fn upload(sh: &Shared, case: &str, parts: &Parts, body: ReqBody) -> Resp {
    let Some(case_id) = wire::integer_id(case) else {
        return case_not_found();
    };
    if !wire::has_content_type(parts, "application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let Ok(bytes) = body.collect().await else {
        return bad_request("could not read the request body");
    };
    let Some(object) = Object::parse(&bytes) else {
        return bad_request("request body must be a JSON object");
    };
    match validate(case_id, &object) {
        Ok(upload) => store(sh, parts, upload, &object),
        Err(message) => bad_request(&message),
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
    store.files.push(file);
    answer
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Config, DialectId};
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

    #[tokio::test]
    async fn list_and_download_round_trip() {
        let emu = start(config()).await;
        let url = format!("{}/api/v2/cases/5/files", emu.url());
        let bytes: Vec<u8> = (0..=255).collect();
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        let resp = client()
            .post(&url)
            .bearer_auth("key")
            .json(&json!({"filename": "data.bin", "file_contents": encoded}))
            .send()
            .await
            .expect("send");
        let activity: Value = resp.json().await.expect("json");
        let download = activity["file"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let resp = client()
            .get(&download)
            .bearer_auth("key")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.expect("body").as_ref(), bytes.as_slice());
        let listed: Value = client()
            .get(&url)
            .bearer_auth("key")
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(
            listed,
            json!({"case_files": [{"id": 1, "filename": "data.bin", "url": download, "created_at": activity["created_at"]}], "meta": {"count": 1}})
        );
        let wrong_case = client()
            .get(format!("{}/api/v2/cases/6/files/1/download", emu.url()))
            .bearer_auth("key")
            .send()
            .await
            .expect("send");
        assert_eq!(wrong_case.status(), 404);
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
