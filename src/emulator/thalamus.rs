//! Thalamus v4: multipart upload to `POST /api/v4/cases/{caseInstanceId}/files`, answered
//! with the case's whole attachment list (under the misspelt key `attachements`); list,
//! download (`GET /api/v4/cases/files/{id}`, no `Range`), delete (`DELETE /api/v4/cases/
//! {caseInstanceId}/files/{id}`, 200 `true` or `false`), and notes (the second call that
//! carries a comment). Credentials come as the `touchpoint` + `token` query parameters or
//! the `Thalamus-Touchpoint` / `Thalamus-Token` headers. Every error, whatever its status,
//! is the text `FAILED`; a broken or file-less form, or an unknown file, is Thalamus's
//! logical failure, 200 `FAILED`.

use std::sync::Arc;

use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::server::{self, Api, Kind, Shared};
use super::wire::{self, ReqBody, Resp};
use super::{StoredComment, StoredFile};

/// The Thalamus v4 API.
pub(super) struct Thalamus;

/// A routed Thalamus request; ids are the raw path segments.
pub(super) enum Call {
    Upload(String),
    List(String),
    Download(String),
    /// Case and file id.
    Delete(String, String),
    Note(String),
}

fn failed(status: StatusCode) -> Resp {
    wire::respond(status, "text/plain", "FAILED")
}

/// The answer to an upload or a list: the session's profile and every attachment of `case`.
fn attachments(sh: &Shared, base: &str, case: &str) -> Resp {
    let store = sh.store();
    let list: Vec<Value> = store
        .files
        .iter()
        .filter(|f| f.case_id == case)
        .map(|f| attachment(base, &f.id))
        .collect();
    wire::json(StatusCode::OK, &answer(list))
}

fn attachment(base: &str, id: &str) -> Value {
    let number = id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n));
    json!({"id": number, "url": format!("{base}/api/v4/cases/files/{id}")})
}

fn answer(attachments: Vec<Value>) -> Value {
    json!({
        "context": {"simpleProfile": {
            "firstname": "Thea", "lastname": "Lamus", "email": "thea@thalamus.test"
        }},
        "attachments": {"attachements": attachments}
    })
}

impl Api for Thalamus {
    type Call = Call;

    fn route(method: &Method, path: &[&str]) -> Result<(Kind, Call), StatusCode> {
        let (kind, call) = match (path, method) {
            (["api", "v4", "cases", "files", id], &Method::GET) => {
                (Kind::Read, Call::Download(id.to_string()))
            }
            (["api", "v4", "cases", "files", _], _) => return Err(StatusCode::METHOD_NOT_ALLOWED),
            (["api", "v4", "cases", case, "files", id], &Method::DELETE) => {
                (Kind::Read, Call::Delete(case.to_string(), id.to_string()))
            }
            (["api", "v4", "cases", _, "files", _], _) => {
                return Err(StatusCode::METHOD_NOT_ALLOWED)
            }
            (["api", "v4", "cases", case, "files"], &Method::POST) => {
                (Kind::Upload, Call::Upload(case.to_string()))
            }
            (["api", "v4", "cases", case, "files"], &Method::GET) => {
                (Kind::Read, Call::List(case.to_string()))
            }
            (["api", "v4", "cases", case, "notes"], &Method::POST) => {
                (Kind::Second, Call::Note(case.to_string()))
            }
            (["api", "v4", "cases", _, "files" | "notes"], _) => {
                return Err(StatusCode::METHOD_NOT_ALLOWED)
            }
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok((kind, call))
    }

    fn error(status: StatusCode, _message: &str) -> Resp {
        failed(status)
    }

    /// An unknown file is a logical failure: 200 `FAILED`.
    fn not_found(_message: &str) -> Resp {
        failed(StatusCode::OK)
    }

    /// The token, when a non-empty touchpoint comes with it; each from the query, else its
    /// header.
    fn credential(parts: &Parts) -> Option<String> {
        let param = |name: &str, header: &str| {
            wire::query_param(parts, name)
                .or_else(|| wire::header(parts, header).map(str::to_owned))
        };
        param("touchpoint", "thalamus-touchpoint")
            .filter(|t| !t.is_empty())
            .and_then(|_| param("token", "thalamus-token"))
    }

    async fn handle(sh: Arc<Shared>, call: Call, parts: Parts, body: ReqBody) -> Resp {
        match call {
            Call::Upload(case) => upload(&sh, &case, &parts, body).await,
            Call::List(case) => match wire::integer_id(&case) {
                Some(case) => attachments(&sh, &sh.base_url(&parts), &case.to_string()),
                None => failed(StatusCode::BAD_REQUEST),
            },
            Call::Download(id) => {
                let id = wire::integer_id(&id).map(|n| n.to_string());
                let store = sh.store();
                match server::find_file::<Thalamus>(&store.files, "", |f| {
                    Some(&f.id) == id.as_ref()
                }) {
                    Ok(file) => server::download::<Thalamus>(file, &parts),
                    Err(resp) => *resp,
                }
            }
            Call::Delete(case, id) => {
                let (case, id) = (wire::integer_id(&case), wire::integer_id(&id));
                let mut store = sh.store();
                let deleted = match (case, id) {
                    (Some(case), Some(id)) => {
                        let (case, id) = (case.to_string(), id.to_string());
                        let on_case = store.files.iter().any(|f| f.id == id && f.case_id == case);
                        on_case && store.remove_file(&id)
                    }
                    _ => false,
                };
                wire::json(StatusCode::OK, &json!(deleted))
            }
            Call::Note(case) => note(&sh, &case, &parts, body).await,
        }
    }

    fn fast(sh: &Shared, _call: &Call, parts: &Parts, _file_len: u64) -> Resp {
        let id = super::fast::next_number(sh).to_string();
        let list = vec![attachment(&sh.base_url(parts), &id)];
        wire::json(StatusCode::OK, &answer(list))
    }

    fn fast_download(sh: &Shared, call: &Call) -> bool {
        matches!(call, Call::Download(id)
            if wire::integer_id(id).is_some_and(|n| super::fast::is_named(sh, n)))
    }
}

async fn upload(sh: &Shared, case: &str, parts: &Parts, body: ReqBody) -> Resp {
    let Some(case) = wire::integer_id(case).map(|n| n.to_string()) else {
        return failed(StatusCode::BAD_REQUEST);
    };
    if !wire::has_content_type(parts, &mime::MULTIPART_FORM_DATA) {
        return failed(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let Ok(form) = wire::read_form(parts, body, |_, _| None).await else {
        return failed(StatusCode::OK);
    };
    let Some(at) = form
        .iter()
        .position(|p| p.name == "file" && p.filename.is_some())
    else {
        return failed(StatusCode::OK);
    };
    let file = &form[at];
    let name = file.filename.clone().unwrap_or_default();
    let content_type = wire::file_type(file.content_type.as_deref(), &name);
    let fields = form
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, p)| (p.name.clone(), p.text()))
        .collect();
    {
        let mut store = sh.store();
        let id = store.next_id().to_string();
        let stored = StoredFile::new(case.clone(), id, name, content_type, file.data.clone());
        store.files.push(StoredFile { fields, ..stored });
    }
    attachments(sh, &sh.base_url(parts), &case)
}

async fn note(sh: &Shared, case: &str, parts: &Parts, body: ReqBody) -> Resp {
    let Some(case) = wire::integer_id(case).map(|n| n.to_string()) else {
        return failed(StatusCode::BAD_REQUEST);
    };
    if !wire::has_content_type(parts, &mime::APPLICATION_JSON) {
        return failed(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let Ok(bytes) = body.collect().await else {
        return failed(StatusCode::BAD_REQUEST);
    };
    let description = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        v.get("description")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let Some(description) = description else {
        return failed(StatusCode::BAD_REQUEST);
    };
    let id = {
        let mut store = sh.store();
        store.comments.push(StoredComment {
            case_id: case,
            text: description.clone(),
        });
        store.next_note_id()
    };
    wire::json(
        StatusCode::OK,
        &json!({"id": id, "description": description}),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Config, DialectId, Fault};
    use reqwest::multipart::{Form, Part};
    use serde_json::{json, Value};

    fn config() -> Config {
        Config {
            tokens: vec!["tok".into()],
            ..Config::new(DialectId::Thalamus)
        }
    }

    fn form(data: &'static [u8]) -> Form {
        Form::new()
            .text("comment", "ignored")
            .part("file", Part::bytes(data).file_name("report.pdf"))
    }

    const AUTH: &str = "touchpoint=tp&token=tok";

    #[tokio::test]
    async fn upload_lists_every_attachment_of_the_case() {
        let emu = start(config()).await;
        let url = format!("{}/api/v4/cases/7/files?{AUTH}", emu.url());
        let first = client()
            .post(&url)
            .multipart(form(b"one"))
            .send()
            .await
            .expect("send");
        assert_eq!(first.status(), 200);
        let second = client()
            .post(format!("{}/api/v4/cases/007/files", emu.url()))
            .header("Thalamus-Touchpoint", "tp")
            .header("Thalamus-Token", "tok")
            .multipart(form(b"two"))
            .send()
            .await
            .expect("send");
        assert_eq!(second.status(), 200);
        let body: Value = second.json().await.expect("json");
        let base = emu.url();
        assert_eq!(
            body,
            json!({
                "context": {"simpleProfile": {"firstname": "Thea", "lastname": "Lamus", "email": "thea@thalamus.test"}},
                "attachments": {"attachements": [
                    {"id": 1, "url": format!("{base}/api/v4/cases/files/1")},
                    {"id": 2, "url": format!("{base}/api/v4/cases/files/2")}
                ]}
            })
        );
        let files = emu.files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].case_id, "7");
        assert_eq!(files[1].name, "report.pdf");
        assert_eq!(files[1].content_type, "application/pdf");
        assert_eq!(files[1].sha256, sha256(b"two"));
        assert_eq!(
            files[1].fields,
            vec![("comment".to_owned(), "ignored".to_owned())]
        );
        assert_eq!(emu.uploads(), 2);

        // Another case has its own list; the list endpoint answers the same shape.
        let other = format!("{}/api/v4/cases/8/files?{AUTH}", emu.url());
        let resp = client()
            .post(&other)
            .multipart(form(b"x"))
            .send()
            .await
            .expect("send");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body["attachments"]["attachements"],
            json!([{"id": 3, "url": format!("{base}/api/v4/cases/files/3")}])
        );
        let listed: Value = client()
            .get(&url)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(
            listed["attachments"]["attachements"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }

    #[tokio::test]
    async fn download_round_trip() {
        let emu = start(config()).await;
        let url = format!("{}/api/v4/cases/1/files?{AUTH}", emu.url());
        client()
            .post(&url)
            .multipart(form(b"%PDF-1.4 bytes"))
            .send()
            .await
            .expect("send");
        let resp = client()
            .get(format!("{}/api/v4/cases/files/1?{AUTH}", emu.url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), "application/pdf");
        assert_eq!(header(&resp, "content-length"), "14");
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename=\"report.pdf\""
        );
        assert_eq!(
            resp.bytes().await.expect("body").as_ref(),
            b"%PDF-1.4 bytes"
        );
        // An unknown file is Thalamus's logical failure.
        for id in ["9", "x"] {
            let missing = client()
                .get(format!("{}/api/v4/cases/files/{id}?{AUTH}", emu.url()))
                .send()
                .await
                .expect("send");
            assert_eq!(missing.status(), 200);
            assert_eq!(missing.text().await.expect("body"), "FAILED");
        }
    }

    #[tokio::test]
    async fn downloads_ignore_ranges() {
        let emu = start(config()).await;
        let url = format!("{}/api/v4/cases/1/files?{AUTH}", emu.url());
        client()
            .post(&url)
            .multipart(form(b"0123456789"))
            .send()
            .await
            .expect("send");
        let resp = client()
            .get(format!("{}/api/v4/cases/files/1?{AUTH}", emu.url()))
            .header("range", "bytes=0-3")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), "10");
        assert!(resp.headers().get("accept-ranges").is_none());
        assert!(resp.headers().get("content-range").is_none());
        assert_eq!(resp.bytes().await.expect("body").as_ref(), b"0123456789");
    }

    #[tokio::test]
    async fn delete_answers_whether_it_deleted() {
        let emu = start(config()).await;
        for case in ["1", "1", "2"] {
            let url = format!("{}/api/v4/cases/{case}/files?{AUTH}", emu.url());
            let resp = client()
                .post(&url)
                .multipart(form(b"x"))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200);
        }
        let delete = |path: &'static str| {
            client()
                .delete(format!("{}{path}?{AUTH}", emu.url()))
                .send()
        };
        // Another case's file, an unknown one, a bad id: false, nothing deleted.
        for path in [
            "/api/v4/cases/2/files/1",
            "/api/v4/cases/1/files/9",
            "/api/v4/cases/1/files/x",
            "/api/v4/cases/x/files/1",
        ] {
            let resp = delete(path).await.expect("send");
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(header(&resp, "content-type"), "application/json");
            assert_eq!(resp.text().await.expect("body"), "false", "{path}");
        }
        assert_eq!(emu.files().len(), 3);
        let resp = delete("/api/v4/cases/01/files/001").await.expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "true");
        let ids: Vec<String> = emu.files().into_iter().map(|f| f.id).collect();
        assert_eq!(ids, ["2", "3"]);
        // Gone: the download fails, the case lists one file, a second delete is false.
        let resp = client()
            .get(format!("{}/api/v4/cases/files/1?{AUTH}", emu.url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.text().await.expect("body"), "FAILED");
        let listed: Value = client()
            .get(format!("{}/api/v4/cases/1/files?{AUTH}", emu.url()))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(
            listed["attachments"]["attachements"],
            json!([{"id": 2, "url": format!("{}/api/v4/cases/files/2", emu.url())}])
        );
        let resp = delete("/api/v4/cases/1/files/1").await.expect("send");
        assert_eq!(resp.text().await.expect("body"), "false");
        // Credentials are checked as for every call.
        let resp = client()
            .delete(format!("{}/api/v4/cases/1/files/2", emu.url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.text().await.expect("body"), "FAILED");
        let resp = client()
            .put(format!("{}/api/v4/cases/1/files/2?{AUTH}", emu.url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 405);
        assert_eq!(emu.files().len(), 2);
    }

    #[tokio::test]
    async fn refusals_are_failed() {
        let emu = start(config()).await;
        let base = emu.url();
        let cases = [
            // (path and query, content type, body, expected status)
            ("/api/v4/cases/1/files", "multipart/form-data; boundary=b", "--b--\r\n", 401),
            ("/api/v4/cases/1/files?touchpoint=&token=tok", "multipart/form-data; boundary=b", "", 401),
            ("/api/v4/cases/1/files?touchpoint=tp&token=bad", "multipart/form-data; boundary=b", "", 401),
            ("/api/v4/cases/abc/files?touchpoint=tp&token=tok", "multipart/form-data; boundary=b", "", 400),
            ("/api/v4/cases/1/files?touchpoint=tp&token=tok", "application/json", "{}", 415),
            ("/api/v4/cases/1/files?touchpoint=tp&token=tok", "multipart/form-data; boundary=b", "--b\r\nbroken", 200),
            ("/api/v4/cases/1/files?touchpoint=tp&token=tok", "multipart/form-data", "", 200),
            (
                "/api/v4/cases/1/files?touchpoint=tp&token=tok",
                "multipart/form-data; boundary=b",
                "--b\r\nContent-Disposition: form-data; name=\"other\"; filename=\"a.txt\"\r\n\r\nx\r\n--b--\r\n",
                200,
            ),
            (
                "/api/v4/cases/1/files?touchpoint=tp&token=tok",
                "multipart/form-data; boundary=b",
                "--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nnot a file part\r\n--b--\r\n",
                200,
            ),
            ("/api/v4/nothing?touchpoint=tp&token=tok", "text/plain", "", 404),
        ];
        for (path, content_type, body, status) in cases {
            let resp = client()
                .post(format!("{base}{path}"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status().as_u16(), status, "{path} {body}");
            assert_eq!(resp.text().await.expect("body"), "FAILED", "{path}");
        }
        let resp = client()
            .delete(format!("{base}/api/v4/cases/1/files"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 405);
        assert!(emu.files().is_empty());
        assert_eq!(emu.uploads(), 9);
    }

    #[tokio::test]
    async fn notes_are_stored() {
        let emu = start(config()).await;
        let url = format!("{}/api/v4/cases/3/notes?{AUTH}", emu.url());
        let resp = client()
            .post(&url)
            .json(&json!({"description": "looked at it"}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            json!({"id": 1, "description": "looked at it"})
        );
        for bad in [json!({}), json!({"description": 5}), json!("x")] {
            let resp = client().post(&url).json(&bad).send().await.expect("send");
            assert_eq!(resp.status(), 400, "{bad}");
            assert_eq!(resp.text().await.expect("body"), "FAILED");
        }
        let resp = client().post(&url).body("{}").send().await.expect("send");
        assert_eq!(resp.status(), 415);
        let resp = client()
            .post(format!("{}/api/v4/cases/3/notes", emu.url()))
            .json(&json!({"description": "x"}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);

        emu.set_fault(Some(Fault::CommentStatus(500)));
        let resp = client()
            .post(&url)
            .json(&json!({"description": "again"}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.text().await.expect("body"), "FAILED");
        let upload = format!("{}/api/v4/cases/3/files?{AUTH}", emu.url());
        let resp = client()
            .post(&upload)
            .multipart(form(b"x"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            emu.comments(),
            vec![super::StoredComment {
                case_id: "3".into(),
                text: "looked at it".into()
            }]
        );
    }

    #[tokio::test]
    async fn open_emulator_needs_no_credentials() {
        let emu = start(Config::new(DialectId::Thalamus)).await;
        let resp = client()
            .post(format!("{}/api/v4/cases/1/files", emu.url()))
            .multipart(form(b"x"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(emu.files().len(), 1);
    }
}
