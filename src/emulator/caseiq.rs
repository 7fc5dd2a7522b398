//! Case IQ: an OAuth2 client-credentials token endpoint (`POST /auth/oauth2/token`), the
//! multipart upload `POST /api-public/1.0/save_file` (case id in the `caseId` field, the
//! `file` part last), and the attachment list (`limit` default 100, at most 1000), get and
//! download endpoints (no `Range`); Case IQ deletes nothing (405). Errors are
//! `{"name":"SERVICE_ACCOUNT_ERROR","httpstatus":S,"meta":{"message":M},"message":CODE}`,
//! except the token endpoint's OAuth2 `{"error": ...}` answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::server::{self, Api, Kind, Shared};
use super::wire::{self, FormError, ReqBody, Resp};
use super::StoredFile;

/// The Case IQ API.
pub(super) struct CaseIq;

/// A routed Case IQ request.
pub(super) enum Call {
    Token,
    Upload,
    List,
    Get(String),
    Download(String),
}

const DEFAULT_TTL: u64 = 600;
const MAX_TTL: u64 = 3600;
/// `limit` when none is given, and the most it can be.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

/// The `message` code of an error answer: the reason phrase in upper snake case
/// (`BAD_REQUEST`, `PAYLOAD_TOO_LARGE`, ...).
fn code(status: StatusCode) -> String {
    wire::reason(status)
        .chars()
        .filter(|c| *c != '\'')
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn oauth_error(status: StatusCode, error: &str) -> Resp {
    wire::json(status, &json!({"error": error}))
}

/// Case IQ's attachment record.
fn record(file: &StoredFile) -> Value {
    json!({
        "id": file.id,
        "name": file.name,
        "nameWithoutExtension": wire::without_extension(&file.name),
        "encoding": "7bit",
        "mimeType": file.content_type,
        "objectId": file.case_id,
        "sizeBytes": file.size,
        "createdDate": file.created_at,
    })
}

/// A UUID in its hyphenated form.
fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

impl Api for CaseIq {
    type Call = Call;

    fn route(method: &Method, path: &[&str]) -> Result<(Kind, Call), StatusCode> {
        let allowed = match path {
            ["auth", "oauth2", "token"] => Method::POST,
            ["api-public", "1.0", "save_file"] => Method::POST,
            ["api-public", "1.0", "attachments"]
            | ["api-public", "1.0", "attachment", _]
            | ["api-public", "1.0", "attachment", _, "attachment"] => Method::GET,
            _ => return Err(StatusCode::NOT_FOUND),
        };
        if method != allowed {
            return Err(StatusCode::METHOD_NOT_ALLOWED);
        }
        Ok(match path {
            ["auth", ..] => (Kind::Token, Call::Token),
            [_, _, "save_file"] => (Kind::Upload, Call::Upload),
            [_, _, "attachments"] => (Kind::Read, Call::List),
            [_, _, _, id] => (Kind::Read, Call::Get(id.to_string())),
            [_, _, _, id, _] => (Kind::Read, Call::Download(id.to_string())),
            _ => return Err(StatusCode::NOT_FOUND),
        })
    }

    fn error(status: StatusCode, message: &str) -> Resp {
        wire::json(
            status,
            &json!({
                "name": "SERVICE_ACCOUNT_ERROR",
                "httpstatus": status.as_u16(),
                "meta": {"message": message},
                "message": code(status),
            }),
        )
    }

    const NO_CREDENTIAL: &'static str = "Missing bearer token";
    const BAD_CREDENTIAL: &'static str = "Invalid or expired access token";

    /// The bearer token: one the token endpoint issued, or a fixed one.
    fn credential(parts: &Parts) -> Option<String> {
        wire::authorization(parts, "Bearer").map(str::to_owned)
    }

    async fn handle(sh: Arc<Shared>, call: Call, parts: Parts, body: ReqBody) -> Resp {
        let (id, download) = match call {
            Call::Token => return token(&sh, &parts, body).await,
            Call::Upload => return upload(&sh, &parts, body).await,
            Call::List => return list(&sh, &parts),
            Call::Get(id) => (id, false),
            Call::Download(id) => (id, true),
        };
        let store = sh.store();
        match server::find_file::<CaseIq>(&store.files, "Attachment not found", |f| f.id == id) {
            Ok(file) if download => server::download::<CaseIq>(file, &parts),
            Ok(file) => wire::json(StatusCode::OK, &record(file)),
            Err(not_found) => *not_found,
        }
    }

    fn fast(sh: &Shared, _call: &Call, _parts: &Parts, file_len: u64) -> Resp {
        wire::json(
            StatusCode::OK,
            &json!({
                "id": super::fast::uuid(super::fast::next_number(sh)),
                "name": "upload.bin",
                "nameWithoutExtension": "upload",
                "encoding": "7bit",
                "mimeType": "application/octet-stream",
                "objectId": "00000000-0000-4000-8000-000000000000",
                "sizeBytes": file_len,
                "createdDate": wire::now_millis(),
            }),
        )
    }

    fn fast_download(sh: &Shared, call: &Call) -> bool {
        matches!(call, Call::Download(id)
            if super::fast::uuid_number(id).is_some_and(|n| super::fast::is_named(sh, n)))
    }
}

/// `POST /auth/oauth2/token`: client credentials for an expiring bearer token.
async fn token(sh: &Shared, parts: &Parts, body: ReqBody) -> Resp {
    let invalid = || oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    if !wire::has_content_type(parts, &mime::APPLICATION_JSON) {
        return invalid();
    }
    let Ok(bytes) = body.collect().await else {
        return invalid();
    };
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&bytes) else {
        return invalid();
    };
    match request.get("grant_type") {
        Some(Value::String(grant)) if grant == "client_credentials" => {}
        Some(Value::String(_)) => {
            return oauth_error(StatusCode::NOT_IMPLEMENTED, "unsupported_grant_type")
        }
        _ => return invalid(),
    }
    let ttl = match request.get("ttl") {
        None | Some(Value::Null) => DEFAULT_TTL,
        Some(ttl) => match ttl.as_u64() {
            Some(ttl) if (1..=MAX_TTL).contains(&ttl) => ttl,
            _ => return invalid(),
        },
    };
    if !sh.accepts(request.get("client_secret").and_then(Value::as_str)) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let access_token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    {
        let now = Instant::now();
        let mut store = sh.store();
        store.tokens.retain(|_, expiry| *expiry > now);
        store
            .tokens
            .insert(access_token.clone(), now + Duration::from_secs(ttl));
    }
    wire::json(
        StatusCode::OK,
        &json!({"access_token": access_token, "token_type": "Bearer", "expires_in": ttl}),
    )
}

async fn upload(sh: &Shared, parts: &Parts, body: ReqBody) -> Resp {
    let form = match wire::read_form(parts, body, |_, _| None).await {
        Ok(form) => form,
        Err(FormError::NotMultipart) => {
            return CaseIq::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be multipart/form-data",
            )
        }
        Err(FormError::Broken(e)) => {
            return CaseIq::bad_request(&format!("Malformed multipart body: {e}"))
        }
        Err(FormError::TooLarge { .. }) => {
            return CaseIq::error(StatusCode::PAYLOAD_TOO_LARGE, "File too large")
        }
    };
    let mut case_id = None;
    let mut file = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    for part in &form {
        if file.is_some() {
            return CaseIq::bad_request("file must be the last field");
        }
        let name = part.name.as_str();
        match name {
            "file" if part.filename.is_none() => return CaseIq::bad_request("file must be a file"),
            "file" => file = Some(part),
            "caseId" | "description" | "templateLocale" => {
                if fields.iter().any(|(k, _)| k == name) {
                    return CaseIq::bad_request(&format!("{name} given more than once"));
                }
                let text = part.text();
                if name == "caseId" {
                    if !is_uuid(&text) {
                        return CaseIq::bad_request("caseId must be a UUID");
                    }
                    case_id = Some(text.clone());
                }
                fields.push((part.name.clone(), text));
            }
            "bulkTags[]" => fields.push((part.name.clone(), part.text())),
            _ => return CaseIq::bad_request(&format!("Unknown field: {name}")),
        }
    }
    let Some(case_id) = case_id else {
        return CaseIq::bad_request("caseId is required");
    };
    let Some(file) = file else {
        return CaseIq::bad_request("file is required");
    };
    let name = file.filename.clone().unwrap_or_default();
    let mime = wire::file_type(file.content_type.as_deref(), &name);
    let id = uuid::Uuid::new_v4().to_string();
    let stored = StoredFile {
        fields,
        ..StoredFile::new(case_id, id, name, mime, file.data.clone())
    };
    let answer = record(&stored);
    sh.store().files.push(stored);
    wire::json(StatusCode::OK, &answer)
}

/// `GET /api-public/1.0/attachments`: the attachments, oldest first, optionally filtered by
/// string fields of the record (`?objectId=...`), at most `limit` of them (default 100,
/// at most 1000).
fn list(sh: &Shared, parts: &Parts) -> Resp {
    let mut limit = DEFAULT_LIMIT;
    let mut filters = Vec::new();
    for (key, value) in wire::query(parts) {
        match key.as_str() {
            "limit" => match wire::positive_integer(&value) {
                Some(n) => limit = n.min(MAX_LIMIT),
                None => return CaseIq::bad_request("limit must be a positive integer"),
            },
            "sort" | "order" | "fields" => {}
            _ => filters.push((key, value)),
        }
    }
    let records: Vec<Value> = sh
        .store()
        .files
        .iter()
        .map(record)
        .filter(|r| {
            filters
                .iter()
                .all(|(k, v)| r.get(k.as_str()).and_then(Value::as_str) == Some(v.as_str()))
        })
        .take(limit as usize)
        .collect();
    let count = records.len();
    wire::json(StatusCode::OK, &json!({"records": records, "count": count}))
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Config, DialectId};
    use reqwest::multipart::{Form, Part};
    use serde_json::{json, Value};
    use std::time::Duration;

    const CASE: &str = "9c235210-6834-11ea-a78c-6ffb38a34414";

    fn config() -> Config {
        Config {
            tokens: vec!["secret".into()],
            ..Config::new(DialectId::Caseiq)
        }
    }

    async fn token(emu: &super::super::Emulator, body: Value) -> reqwest::Response {
        client()
            .post(format!("{}/auth/oauth2/token", emu.url()))
            .json(&body)
            .send()
            .await
            .expect("send")
    }

    async fn access_token(emu: &super::super::Emulator, ttl: u64) -> String {
        let resp = token(
            emu,
            json!({"grant_type": "client_credentials", "client_id": "me", "client_secret": "secret", "ttl": ttl}),
        )
        .await;
        let body: Value = resp.json().await.expect("json");
        body["access_token"].as_str().unwrap_or_default().to_owned()
    }

    fn form() -> Form {
        Form::new()
            .text("caseId", CASE)
            .text("description", "the log")
            .text("bulkTags[]", "t1")
            .text("bulkTags[]", "t2")
            .text("templateLocale", "en_US")
            .part(
                "file",
                Part::bytes(&b"log line\n"[..]).file_name("app.tar.gz"),
            )
    }

    #[tokio::test]
    async fn token_endpoint_answers() {
        let emu = start(config()).await;
        let resp = token(&emu, json!({"grant_type": "client_credentials", "client_id": "me", "client_secret": "secret"})).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 600);
        assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));

        let refusals = [
            (
                json!({"grant_type": "password", "client_id": "me", "client_secret": "secret"}),
                501,
                "unsupported_grant_type",
            ),
            (
                json!({"grant_type": "client_credentials", "client_id": "me", "client_secret": "secret", "ttl": 0}),
                400,
                "invalid_request",
            ),
            (
                json!({"grant_type": "client_credentials", "client_id": "me", "client_secret": "secret", "ttl": 3601}),
                400,
                "invalid_request",
            ),
            (
                json!({"grant_type": "client_credentials", "client_id": "me", "client_secret": "wrong"}),
                401,
                "invalid_client",
            ),
            (
                json!({"grant_type": "client_credentials", "client_id": "me"}),
                401,
                "invalid_client",
            ),
            (json!(["not", "an", "object"]), 400, "invalid_request"),
        ];
        for (body, status, error) in refusals {
            let resp = token(&emu, body.clone()).await;
            assert_eq!(resp.status().as_u16(), status, "{body}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                json!({"error": error}),
                "{body}"
            );
        }
        let resp = client()
            .post(format!("{}/auth/oauth2/token", emu.url()))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            json!({"error": "invalid_request"})
        );
        assert_eq!(emu.token_requests(), 8);
    }

    #[tokio::test]
    async fn upload_with_issued_token() {
        let emu = start(config()).await;
        let token = access_token(&emu, 60).await;
        let resp = client()
            .post(format!("{}/api-public/1.0/save_file", emu.url()))
            .bearer_auth(&token)
            .multipart(form())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        assert!(super::is_uuid(&id), "{id}");
        let created = body["createdDate"].as_str().unwrap_or_default().to_owned();
        assert_eq!(created.len(), 24, "{created}");
        assert_eq!(
            body,
            json!({
                "id": id, "name": "app.tar.gz", "nameWithoutExtension": "app.tar", "encoding": "7bit",
                "mimeType": "application/gzip", "objectId": CASE, "sizeBytes": 9, "createdDate": created
            })
        );
        let file = &emu.files()[0];
        assert_eq!(file.sha256, sha256(b"log line\n"));
        assert_eq!(
            file.fields,
            [
                ("caseId", CASE),
                ("description", "the log"),
                ("bulkTags[]", "t1"),
                ("bulkTags[]", "t2"),
                ("templateLocale", "en_US")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec()
        );

        // Read back: get, list, download.
        let got: Value = client()
            .get(format!("{}/api-public/1.0/attachment/{id}", emu.url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(got, body);
        let listed: Value = client()
            .get(format!(
                "{}/api-public/1.0/attachments?objectId={CASE}",
                emu.url()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(listed, json!({"records": [body], "count": 1}));
        let none: Value = client()
            .get(format!(
                "{}/api-public/1.0/attachments?objectId=other",
                emu.url()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(none, json!({"records": [], "count": 0}));
        let resp = client()
            .get(format!(
                "{}/api-public/1.0/attachment/{id}/attachment",
                emu.url()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        assert_eq!(header(&resp, "content-type"), "application/gzip");
        assert_eq!(resp.bytes().await.expect("body").as_ref(), b"log line\n");
        let resp = client()
            .get(format!("{}/api-public/1.0/attachment/{CASE}", emu.url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
    }

    fn caseiq_error(status: u16, message: &str, code: &str) -> Value {
        json!({"name": "SERVICE_ACCOUNT_ERROR", "httpstatus": status, "meta": {"message": message}, "message": code})
    }

    #[tokio::test]
    async fn reads_are_strict() {
        let emu = start(config()).await;
        let get = |path: String| {
            client()
                .get(format!("{}{path}", emu.url()))
                .bearer_auth("secret")
                .send()
        };
        let resp = client()
            .post(format!("{}/api-public/1.0/save_file", emu.url()))
            .bearer_auth("secret")
            .multipart(form())
            .send()
            .await
            .expect("send");
        let record: Value = resp.json().await.expect("json");
        let id = record["id"].as_str().unwrap_or_default().to_owned();

        // No Range: the whole file, 200.
        let resp = client()
            .get(format!(
                "{}/api-public/1.0/attachment/{id}/attachment",
                emu.url()
            ))
            .bearer_auth("secret")
            .header("range", "bytes=0-1")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), "9");
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename=\"app.tar.gz\""
        );
        assert!(resp.headers().get("accept-ranges").is_none());
        assert_eq!(resp.bytes().await.expect("body").as_ref(), b"log line\n");

        // Unknown ids are 404s in Case IQ's form.
        let unknown = "00000000-0000-4000-8000-000000000009";
        for path in [
            format!("/api-public/1.0/attachment/{unknown}"),
            format!("/api-public/1.0/attachment/{unknown}/attachment"),
            "/api-public/1.0/attachment/not-a-uuid".to_owned(),
        ] {
            let resp = get(path.clone()).await.expect("send");
            assert_eq!(resp.status(), 404, "{path}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                caseiq_error(404, "Attachment not found", "NOT_FOUND"),
                "{path}"
            );
        }

        // Case IQ deletes nothing.
        for path in [
            format!("/api-public/1.0/attachment/{id}"),
            format!("/api-public/1.0/attachment/{id}/attachment"),
            "/api-public/1.0/attachments".to_owned(),
        ] {
            let resp = client()
                .delete(format!("{}{path}", emu.url()))
                .bearer_auth("secret")
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 405, "{path}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                caseiq_error(405, "Method Not Allowed", "METHOD_NOT_ALLOWED")
            );
        }
        assert_eq!(emu.files().len(), 1);

        // Reads need the bearer token too.
        let resp = client()
            .get(format!("{}/api-public/1.0/attachment/{id}", emu.url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            caseiq_error(401, "Missing bearer token", "UNAUTHORIZED")
        );
    }

    #[tokio::test]
    async fn lists_are_limited() {
        let emu = start(Config::new(DialectId::Caseiq)).await;
        let url = format!("{}/api-public/1.0/save_file", emu.url());
        for i in 0..105 {
            let form = Form::new().text("caseId", CASE).part(
                "file",
                Part::bytes(&b"x"[..]).file_name(format!("f{i}.txt")),
            );
            let resp = client()
                .post(&url)
                .multipart(form)
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200);
        }
        let list = |query: &'static str| {
            client()
                .get(format!("{}/api-public/1.0/attachments{query}", emu.url()))
                .send()
        };
        for (query, count) in [
            ("", 100),
            ("?limit=3", 3),
            ("?limit=1000", 105),
            ("?limit=100000", 105),
            ("?objectId=9c235210-6834-11ea-a78c-6ffb38a34414&limit=2", 2),
            ("?objectId=other", 0),
        ] {
            let body: Value = list(query).await.expect("send").json().await.expect("json");
            assert_eq!(body["count"], count, "{query}");
            assert_eq!(
                body["records"].as_array().map(Vec::len),
                Some(count),
                "{query}"
            );
        }
        // At most 1000, however many there are.
        {
            let mut store = emu.shared.store();
            let first = store.files[0].clone();
            store.files.extend(std::iter::repeat_n(first, 1000));
        }
        let body: Value = list("?limit=100000")
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(body["count"], 1000);
        let body: Value = list("?limit=2")
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(body["records"][0]["name"], "f0.txt");
        assert_eq!(body["records"][1]["name"], "f1.txt");
        for query in ["?limit=abc", "?limit=0", "?limit=-1", "?limit="] {
            let resp = list(query).await.expect("send");
            assert_eq!(resp.status(), 400, "{query}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                caseiq_error(400, "limit must be a positive integer", "BAD_REQUEST")
            );
        }
    }

    #[tokio::test]
    async fn tokens_expire_and_fixed_tokens_work() {
        let emu = start(config()).await;
        let token = access_token(&emu, 1).await;
        let upload = |bearer: String| {
            let url = format!("{}/api-public/1.0/save_file", emu.url());
            async move {
                client()
                    .post(url)
                    .bearer_auth(bearer)
                    .multipart(form())
                    .send()
                    .await
                    .expect("send")
            }
        };
        assert_eq!(upload(token.clone()).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let resp = upload(token).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            json!({"name": "SERVICE_ACCOUNT_ERROR", "httpstatus": 401, "meta": {"message": "Invalid or expired access token"}, "message": "UNAUTHORIZED"})
        );
        assert_eq!(upload("secret".into()).await.status(), 200);
        let resp = client()
            .post(format!("{}/api-public/1.0/save_file", emu.url()))
            .multipart(form())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        assert_eq!(emu.files().len(), 2);
        assert_eq!(emu.uploads(), 4);
    }

    #[tokio::test]
    async fn refusals_name_the_problem() {
        let emu = start(config()).await;
        let url = format!("{}/api-public/1.0/save_file", emu.url());
        let file = || Part::bytes(&b"x"[..]).file_name("a.txt");
        let cases: Vec<(Form, &str)> = vec![
            (
                Form::new()
                    .text("caseId", CASE)
                    .part("file", file())
                    .text("description", "late"),
                "file must be the last field",
            ),
            (
                Form::new()
                    .text("caseId", CASE)
                    .part("file", file())
                    .part("file", file()),
                "file must be the last field",
            ),
            (Form::new().text("caseId", CASE), "file is required"),
            (Form::new().part("file", file()), "caseId is required"),
            (
                Form::new().text("caseId", "42").part("file", file()),
                "caseId must be a UUID",
            ),
            (
                Form::new()
                    .text("caseId", CASE)
                    .text("caseId", CASE)
                    .part("file", file()),
                "caseId given more than once",
            ),
            (
                Form::new()
                    .text("caseId", CASE)
                    .text("tags", "x")
                    .part("file", file()),
                "Unknown field: tags",
            ),
            (
                Form::new().text("caseId", CASE).text("file", "not a file"),
                "file must be a file",
            ),
        ];
        for (form, message) in cases {
            let resp = client()
                .post(&url)
                .bearer_auth("secret")
                .multipart(form)
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 400, "{message}");
            assert_eq!(
                resp.json::<Value>().await.expect("json"),
                json!({"name": "SERVICE_ACCOUNT_ERROR", "httpstatus": 400, "meta": {"message": message}, "message": "BAD_REQUEST"})
            );
        }
        let resp = client()
            .post(&url)
            .bearer_auth("secret")
            .json(&json!({}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 415);
        assert_eq!(
            resp.json::<Value>().await.expect("json")["message"],
            "UNSUPPORTED_MEDIA_TYPE"
        );
        let resp = client()
            .post(&url)
            .bearer_auth("secret")
            .header("content-type", "multipart/form-data; boundary=b")
            .body("--b\r\nContent-Disposition: form-data; name=\"caseId\"\r\n\r\nabc")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        let resp = client()
            .get(&url)
            .bearer_auth("secret")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 405);
        assert_eq!(
            resp.json::<Value>().await.expect("json")["message"],
            "METHOD_NOT_ALLOWED"
        );
        let resp = client()
            .get(format!("{}/nope", emu.url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.json::<Value>().await.expect("json")["message"],
            "NOT_FOUND"
        );
        assert!(emu.files().is_empty());
    }

    #[test]
    fn error_codes_follow_the_status() {
        use http::StatusCode;
        for (status, code) in [
            (400, "BAD_REQUEST"),
            (413, "PAYLOAD_TOO_LARGE"),
            (418, "IM_A_TEAPOT"),
            (502, "BAD_GATEWAY"),
            (503, "SERVICE_UNAVAILABLE"),
            (504, "GATEWAY_TIMEOUT"),
            (599, "UNKNOWN"),
        ] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(super::code(status), code);
        }
    }
}
