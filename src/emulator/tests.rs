//! Test helpers shared by the dialects' tests, and the tests of what every emulator shares:
//! faults, fast mode, TLS, counters and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Config, DialectId, Emulator, Fault};

/// Starts `cfg` on a free loopback port.
pub(super) async fn start(cfg: Config) -> Emulator {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Emulator::start(cfg, listen).await.expect("start emulator")
}

/// A client that talks to loopback directly, whatever proxy the environment names.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

pub(super) fn sha256(data: &[u8]) -> String {
    super::wire::sha256_hex(data)
}

pub(super) fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

const CASE_UUID: &str = "9c235210-6834-11ea-a78c-6ffb38a34414";

/// A valid upload of `data` as `data.txt` to an open emulator of `dialect`.
fn upload(emu: &Emulator, dialect: DialectId, data: &'static [u8]) -> reqwest::RequestBuilder {
    let base = emu.url();
    let part = || reqwest::multipart::Part::bytes(data).file_name("data.txt");
    match dialect {
        DialectId::Thalamus => client()
            .post(format!("{base}/api/v4/cases/1/files"))
            .multipart(reqwest::multipart::Form::new().part("file", part())),
        DialectId::Tines => {
            let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data);
            client()
                .post(format!("{base}/api/v2/cases/1/files"))
                .json(&json!({"filename": "data.txt", "file_contents": encoded}))
        }
        DialectId::Caseiq => client()
            .post(format!("{base}/api-public/1.0/save_file"))
            .multipart(
                reqwest::multipart::Form::new()
                    .text("caseId", CASE_UUID)
                    .part("file", part()),
            ),
        DialectId::Kibana => client()
            .post(format!("{base}/api/cases/c/files"))
            .header("kbn-xsrf", "t")
            .multipart(reqwest::multipart::Form::new().part("file", part())),
    }
}

/// A GET of the download of the first file stored in an open emulator of `dialect`.
fn download(emu: &Emulator, dialect: DialectId) -> reqwest::RequestBuilder {
    let base = emu.url();
    let id = emu
        .files()
        .first()
        .map(|f| f.id.clone())
        .unwrap_or_default();
    client().get(match dialect {
        DialectId::Thalamus => format!("{base}/api/v4/cases/files/{id}"),
        DialectId::Tines => format!("{base}/api/v2/cases/1/files/{id}/download"),
        DialectId::Caseiq => format!("{base}/api-public/1.0/attachment/{id}/attachment"),
        DialectId::Kibana => format!("{base}/api/files/files/casesFilesCases/{id}/blob"),
    })
}

/// A GET of a list (or the case) of an open emulator of `dialect`.
fn list(emu: &Emulator, dialect: DialectId) -> reqwest::RequestBuilder {
    let base = emu.url();
    client().get(match dialect {
        DialectId::Thalamus => format!("{base}/api/v4/cases/1/files"),
        DialectId::Tines => format!("{base}/api/v2/cases/1/files"),
        DialectId::Caseiq => format!("{base}/api-public/1.0/attachments"),
        DialectId::Kibana => format!("{base}/api/cases/c"),
    })
}

/// An open emulator of `dialect` holding one file of `data`.
async fn holding(dialect: DialectId, data: &'static [u8]) -> Emulator {
    let emu = start(Config::new(dialect)).await;
    let resp = upload(&emu, dialect, data).send().await.expect("send");
    assert_eq!(resp.status(), 200, "{dialect}");
    emu
}

const MIB: &[u8] = &[b'd'; 1 << 20];

async fn start_with(dialect: DialectId, fault: Fault) -> Emulator {
    start(Config {
        fault: Some(fault),
        ..Config::new(dialect)
    })
    .await
}

#[tokio::test]
async fn status_fault_answers_each_dialects_error_form() {
    let expected = [
        (DialectId::Thalamus, None),
        (
            DialectId::Tines,
            Some(json!({"errors": [{"message": "emulated failure"}]})),
        ),
        (
            DialectId::Caseiq,
            Some(
                json!({"name": "SERVICE_ACCOUNT_ERROR", "httpstatus": 503, "meta": {"message": "emulated failure"}, "message": "SERVICE_UNAVAILABLE"}),
            ),
        ),
        (
            DialectId::Kibana,
            Some(
                json!({"statusCode": 503, "error": "Service Unavailable", "message": "emulated failure"}),
            ),
        ),
    ];
    for (dialect, body) in expected {
        let emu = start_with(dialect, Fault::Status(503)).await;
        let resp = upload(&emu, dialect, b"x").send().await.expect("send");
        assert_eq!(resp.status(), 503, "{dialect}");
        match body {
            Some(body) => assert_eq!(resp.json::<Value>().await.expect("json"), body),
            None => assert_eq!(resp.text().await.expect("body"), "FAILED"),
        }
        assert!(emu.files().is_empty());
        assert_eq!(emu.uploads(), 1);

        // The fault can be lifted at run time.
        emu.set_fault(None);
        let resp = upload(&emu, dialect, b"x").send().await.expect("send");
        assert_eq!(resp.status(), 200, "{dialect}");
        assert_eq!(emu.files().len(), 1);
    }
}

#[tokio::test]
async fn faults_leave_credential_checks_alone_and_apply_to_reads() {
    let emu = start(Config {
        tokens: vec!["key".into()],
        fault: Some(Fault::Status(500)),
        ..Config::new(DialectId::Tines)
    })
    .await;
    let resp = upload(&emu, DialectId::Tines, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let list = client()
        .get(format!("{}/api/v2/cases/1/files", emu.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(list.status(), 401);
    let list = client()
        .get(format!("{}/api/v2/cases/1/files", emu.url()))
        .bearer_auth("key")
        .send()
        .await
        .expect("send");
    assert_eq!(list.status(), 500);
    assert_eq!(
        list.json::<Value>().await.expect("json"),
        json!({"errors": [{"message": "emulated failure"}]})
    );
}

#[tokio::test]
async fn large_refused_uploads_still_get_their_answer() {
    let big: &'static [u8] = &[b'x'; 4 << 20];
    for dialect in DialectId::ALL {
        let emu = start(Config {
            tokens: vec!["key".into()],
            ..Config::new(dialect)
        })
        .await;
        for _ in 0..3 {
            let resp = upload(&emu, dialect, big)
                .send()
                .await
                .expect("an answer, not a broken pipe");
            assert_eq!(resp.status(), 401, "{dialect}");
        }
        assert_eq!(emu.uploads(), 3);
    }
}

#[tokio::test]
async fn delay_fault_stores_then_waits() {
    let emu = start_with(DialectId::Tines, Fault::Delay(Duration::from_millis(300))).await;
    let began = Instant::now();
    let resp = upload(&emu, DialectId::Tines, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(emu.files().len(), 1);
}

#[tokio::test]
async fn failed_fault_answers_200_failed() {
    let emu = start_with(DialectId::Kibana, Fault::Failed).await;
    let resp = upload(&emu, DialectId::Kibana, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/plain");
    assert_eq!(resp.text().await.expect("body"), "FAILED");
    assert!(emu.files().is_empty());
}

#[tokio::test]
async fn reset_faults_drop_the_connection() {
    for fault in [Fault::ResetBeforeAnswer, Fault::ResetMidBody] {
        let emu = start_with(DialectId::Thalamus, fault.clone()).await;
        let big: &'static [u8] = &[b'x'; 1 << 20];
        let err = upload(&emu, DialectId::Thalamus, big)
            .send()
            .await
            .expect_err("no answer");
        assert!(!err.is_timeout(), "{fault}: {err}");
        assert!(emu.files().is_empty(), "{fault}");
        assert_eq!(emu.uploads(), 1);
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn headers_then_hang_never_sends_the_body() {
    let emu = start_with(DialectId::Caseiq, Fault::HeadersThenHang).await;
    let mut resp = upload(&emu, DialectId::Caseiq, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/json");
    let chunk = tokio::time::timeout(Duration::from_millis(300), resp.chunk()).await;
    assert!(chunk.is_err(), "the body must never come");
    assert_eq!(emu.files().len(), 1);
    assert_eq!(emu.open_connections(), 1);
    // Shutdown cuts the hanging answer off.
    tokio::time::timeout(Duration::from_secs(2), emu.shutdown())
        .await
        .expect("shutdown does not wait for the hang");
    assert!(resp.chunk().await.is_err());
}

#[tokio::test]
async fn html_faults_answer_html() {
    let emu = start_with(DialectId::Tines, Fault::Html).await;
    let resp = upload(&emu, DialectId::Tines, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/html");
    assert!(resp
        .text()
        .await
        .expect("body")
        .starts_with("<!DOCTYPE html>"));
    assert_eq!(emu.files().len(), 1);

    emu.set_fault(Some(Fault::HtmlError));
    let resp = upload(&emu, DialectId::Tines, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 502);
    assert_eq!(header(&resp, "content-type"), "text/html");
    assert!(resp
        .text()
        .await
        .expect("body")
        .contains("<h1>502 Bad Gateway</h1>"));
    assert_eq!(emu.files().len(), 1);
}

#[tokio::test]
async fn json_faults_spoil_the_answer() {
    let emu = start_with(DialectId::Thalamus, Fault::TruncatedJson).await;
    let resp = upload(&emu, DialectId::Thalamus, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/json");
    let text = resp.text().await.expect("body");
    assert!(
        text.starts_with("{\"") && serde_json::from_str::<Value>(&text).is_err(),
        "{text}"
    );
    emu.set_fault(None);
    let whole = upload(&emu, DialectId::Thalamus, b"x")
        .send()
        .await
        .expect("send");
    let whole = whole.text().await.expect("body");
    // The second answer lists two attachments; the first listed one, so compare lengths loosely.
    assert!(text.len() < whole.len() / 2 + 2);

    emu.set_fault(Some(Fault::EmptyBody));
    let resp = upload(&emu, DialectId::Thalamus, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/json");
    assert_eq!(resp.text().await.expect("body"), "");
    assert_eq!(emu.files().len(), 3);
}

#[tokio::test]
async fn trickle_sends_a_byte_at_a_time() {
    let emu = start_with(DialectId::Tines, Fault::Trickle).await;
    let began = Instant::now();
    let mut resp = upload(&emu, DialectId::Tines, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    while got.len() < 3 {
        let chunk = resp.chunk().await.expect("chunk").expect("more");
        assert_eq!(chunk.len(), 1);
        got.extend_from_slice(&chunk);
    }
    assert_eq!(&got[..2], b"{\"");
    assert!(
        began.elapsed() >= Duration::from_millis(550),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(emu.files().len(), 1);
}

#[tokio::test]
async fn huge_body_is_64_mebibytes_of_valid_json() {
    let emu = start_with(DialectId::Tines, Fault::HugeBody).await;
    let mut resp = upload(&emu, DialectId::Tines, b"x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/json");
    let mut total = 0usize;
    let mut tail = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        total += chunk.len();
        tail.extend_from_slice(&chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    assert_eq!(total, 64 << 20);
    let text = String::from_utf8_lossy(&tail);
    let json: Value = serde_json::from_str(text.trim()).expect("the answer ends the padding");
    assert_eq!(json["activity_type"], "FILE_ATTACHED");
    assert_eq!(emu.files().len(), 1);
}

#[tokio::test]
async fn fast_mode_answers_without_storing() {
    for dialect in DialectId::ALL {
        let emu = start(Config {
            fast: true,
            tokens: vec!["key".into()],
            ..Config::new(dialect)
        })
        .await;
        let base = emu.url();
        // Bodies are not parsed: garbage is fine once the credentials are.
        let req = match dialect {
            DialectId::Thalamus => client().post(format!(
                "{base}/api/v4/cases/9/files?touchpoint=t&token=key"
            )),
            DialectId::Tines => client()
                .post(format!("{base}/api/v2/cases/9/files"))
                .bearer_auth("key"),
            DialectId::Caseiq => client()
                .post(format!("{base}/api-public/1.0/save_file"))
                .bearer_auth("key"),
            DialectId::Kibana => client()
                .post(format!("{base}/api/cases/c9/files"))
                .header("authorization", "ApiKey key")
                .header("kbn-xsrf", "t"),
        };
        let resp = req.body(vec![b'z'; 100_000]).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{dialect}");
        let body: Value = resp.json().await.expect("json");
        match dialect {
            DialectId::Thalamus => assert_eq!(
                body,
                json!({
                    "context": {"simpleProfile": {"firstname": "Thea", "lastname": "Lamus", "email": "thea@thalamus.test"}},
                    "attachments": {"attachements": [{"id": 1, "url": format!("{base}/api/v4/cases/files/1")}]}
                })
            ),
            DialectId::Tines => {
                assert_eq!(body["case_id"], 9);
                assert_eq!(body["id"], 1);
                assert_eq!(body["activity_type"], "FILE_ATTACHED");
                assert_eq!(
                    body["file"]["url"],
                    format!("{base}/api/v2/cases/9/files/1/download")
                );
                assert_eq!(body["user"]["email"], "tina@tines.test");
            }
            DialectId::Caseiq => {
                assert_eq!(body["sizeBytes"], 100_000);
                assert_eq!(body["encoding"], "7bit");
                assert!(body["id"].is_string() && body["objectId"].is_string());
            }
            DialectId::Kibana => {
                assert_eq!(body["id"], "c9");
                assert_eq!(
                    body["comments"][0]["externalReferenceAttachmentTypeId"],
                    ".files"
                );
                assert_eq!(
                    body["comments"][0]["externalReferenceMetadata"]["files"][0]["mimeType"],
                    "text/plain"
                );
                assert_eq!(body["totalComment"], 0);
            }
        }
        assert!(emu.files().is_empty(), "{dialect}");
        assert_eq!(emu.uploads(), 1);
        // Credentials still count.
        let resp = upload(&emu, dialect, b"x").send().await.expect("send");
        assert_eq!(resp.status(), 401, "{dialect}");
    }
    // Kibana still wants kbn-xsrf.
    let emu = start(Config {
        fast: true,
        ..Config::new(DialectId::Kibana)
    })
    .await;
    let resp = client()
        .post(format!("{}/api/cases/c/files", emu.url()))
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn fast_mode_downloads_the_last_uploads_length() {
    static FILE: [u8; 200_003] = [b'f'; 200_003];
    for dialect in DialectId::ALL {
        let emu = start(Config {
            fast: true,
            ..Config::new(dialect)
        })
        .await;
        let base = emu.url();
        // The canned file's download, and another file's.
        let url = |n: u8| match dialect {
            DialectId::Thalamus => format!("{base}/api/v4/cases/files/{n}"),
            DialectId::Tines => format!("{base}/api/v2/cases/9/files/{n}/download"),
            DialectId::Caseiq => format!(
                "{base}/api-public/1.0/attachment/00000000-0000-4000-8000-00000000000{n}/attachment"
            ),
            DialectId::Kibana => format!(
                "{base}/api/files/files/casesFilesCases/00000000-0000-4000-8000-00000000000{n}/blob"
            ),
        };
        let (canned, other) = (url(1), url(2));
        // Before any upload, the canned file is empty.
        let resp = client().get(&canned).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{dialect}");
        assert_eq!(resp.bytes().await.expect("body").len(), 0, "{dialect}");
        for file in [&FILE[..], &FILE[..7]] {
            let resp = upload(&emu, dialect, file).send().await.expect("send");
            assert_eq!(resp.status(), 200, "{dialect}");
            // The file's own bytes, not the body's (multipart framing, base64).
            assert_eq!(emu.fast_file_len(), file.len() as u64, "{dialect}");
            let resp = client()
                .get(&canned)
                .header("range", "bytes=0-1")
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200, "{dialect}");
            assert_eq!(
                header(&resp, "content-length"),
                file.len().to_string(),
                "{dialect}"
            );
            assert!(header(&resp, "content-disposition").starts_with("attachment"));
            let body = resp.bytes().await.expect("body");
            assert_eq!(body.len(), file.len(), "{dialect}");
            let pattern = (0..body.len()).all(|i| body[i] == super::fast::pattern_byte(i as u64));
            assert!(pattern, "{dialect}");
        }
        assert!(emu.files().is_empty(), "{dialect}");
        // Another id is not there.
        let resp = client().get(&other).send().await.expect("send");
        let status = resp.status().as_u16();
        assert!(
            status == 404 || (dialect == DialectId::Thalamus && status == 200),
            "{dialect} {status}"
        );
        if status == 200 {
            assert_eq!(resp.text().await.expect("body"), "FAILED");
        }
    }
}

#[tokio::test]
async fn fast_mode_with_unique_ids_names_a_new_file_per_upload() {
    for dialect in [DialectId::Thalamus, DialectId::Tines, DialectId::Caseiq] {
        let emu = start(Config {
            fast: true,
            fast_unique_ids: true,
            ..Config::new(dialect)
        })
        .await;
        let base = emu.url();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let resp = upload(&emu, dialect, b"four").send().await.expect("send");
            assert_eq!(resp.status(), 200, "{dialect}");
            let body: Value = resp.json().await.expect("json");
            let id = match dialect {
                DialectId::Thalamus => body["attachments"]["attachements"][0]["id"].to_string(),
                DialectId::Tines => body["id"].to_string(),
                _ => body["id"].as_str().expect("id").to_owned(),
            };
            ids.push(id);
        }
        let expected: Vec<String> = match dialect {
            // 1 as documented, then scattered as random UUIDs are.
            DialectId::Caseiq => (1..=3).map(super::fast::uuid).collect(),
            _ => (1..=3).map(|n| n.to_string()).collect(),
        };
        assert_eq!(ids, expected, "{dialect}");
        let url = |id: &str| match dialect {
            DialectId::Thalamus => format!("{base}/api/v4/cases/files/{id}"),
            DialectId::Tines => format!("{base}/api/v2/cases/1/files/{id}/download"),
            _ => format!("{base}/api-public/1.0/attachment/{id}/attachment"),
        };
        // Every id named so far downloads the last upload's length; the next one does not.
        let resp = client().get(url(&ids[1])).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{dialect}");
        assert_eq!(resp.bytes().await.expect("body").len(), 4, "{dialect}");
        let next = match dialect {
            DialectId::Caseiq => super::fast::uuid(4),
            _ => "4".to_owned(),
        };
        let resp = client().get(url(&next)).send().await.expect("send");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        assert!(
            status == 404 || (status == 200 && body == "FAILED"),
            "{dialect} {status} {body}"
        );
    }
}

#[tokio::test]
async fn fast_mode_keeps_the_token_endpoint() {
    let emu = start(Config {
        fast: true,
        tokens: vec!["secret".into()],
        ..Config::new(DialectId::Caseiq)
    })
    .await;
    let resp = client()
        .post(format!("{}/auth/oauth2/token", emu.url()))
        .json(&json!({"grant_type": "client_credentials", "client_id": "c", "client_secret": "secret", "ttl": 5}))
        .send()
        .await
        .expect("send");
    let body: Value = resp.json().await.expect("json");
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(body["expires_in"], 5);
    let resp = client()
        .post(format!("{}/api-public/1.0/save_file", emu.url()))
        .bearer_auth(token)
        .body("anything")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(emu.token_requests(), 1);
}

#[tokio::test]
async fn counters_and_shutdown() {
    let emu = start(Config::new(DialectId::Tines)).await;
    let url = emu.url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    upload(&emu, DialectId::Tines, b"x")
        .send()
        .await
        .expect("send");
    client()
        .get(format!("{url}/api/v2/cases/1/files"))
        .send()
        .await
        .expect("send");
    client()
        .get(format!("{url}/nothing"))
        .send()
        .await
        .expect("send");
    assert_eq!(emu.requests(), 3);
    assert_eq!(emu.uploads(), 1);
    assert_eq!(emu.token_requests(), 0);

    // A keep-alive connection stays open until shutdown closes it.
    let raw = tokio::net::TcpStream::connect(emu.addr())
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(2);
    while emu.open_connections() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(emu.open_connections() >= 1);
    let addr = emu.addr();
    tokio::time::timeout(Duration::from_secs(2), emu.shutdown())
        .await
        .expect("shutdown is prompt");
    drop(raw);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn connections_are_released() {
    let emu = start(Config::new(DialectId::Tines)).await;
    for _ in 0..3 {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let encoded = "eA==";
        let resp = fresh
            .post(format!("{}/api/v2/cases/1/files", emu.url()))
            .json(&json!({"filename": "x", "file_contents": encoded}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while emu.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(emu.open_connections(), 0);
}

mod tls {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    struct Pki {
        ca: CertificateDer<'static>,
        server: Arc<rustls::ServerConfig>,
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "casegate emulator test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        Pki {
            ca: ca.der().clone(),
            server: Arc::new(server),
        }
    }

    #[tokio::test]
    async fn serves_https() {
        let pki = pki();
        let emu = start(Config {
            tls: Some(pki.server.clone()),
            ..Config::new(DialectId::Tines)
        })
        .await;
        assert!(emu.url().starts_with("https://127.0.0.1:"));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let tcp = tokio::net::TcpStream::connect(emu.addr())
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        let host = format!("localhost:{}", emu.addr().port());
        let req = http::Request::post("/api/v2/cases/3/files")
            .header("host", &host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"filename":"a.txt","file_contents":"aGk="}"#,
            )))
            .expect("request");
        let resp = sender.send_request(req).await.expect("send");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body["file"]["url"],
            format!("https://{host}/api/v2/cases/3/files/1/download")
        );
        assert_eq!(emu.files()[0].data.as_ref(), b"hi");

        // Plain HTTP against the TLS port gets nothing, and the server carries on.
        let plain = client()
            .get(format!("http://{}/api/v2/cases/3/files", emu.addr()))
            .send()
            .await;
        assert!(plain.is_err());
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn flaky_fault_fails_exactly_its_share() {
    let emu = start_with(DialectId::Tines, Fault::Flaky(10)).await;
    let mut failed = 0;
    for _ in 0..50 {
        let resp = upload(&emu, DialectId::Tines, b"x")
            .send()
            .await
            .expect("send");
        match resp.status().as_u16() {
            200 => {}
            500 => failed += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(failed, 5);
    assert_eq!(emu.files().len(), 45);
    emu.shutdown().await;
}

#[tokio::test]
async fn status_fault_answers_reads_in_each_dialects_form() {
    for dialect in DialectId::ALL {
        let emu = holding(dialect, b"abc").await;
        emu.set_fault(Some(Fault::Status(500)));
        for req in [download(&emu, dialect), list(&emu, dialect)] {
            let resp = req.send().await.expect("send");
            assert_eq!(resp.status(), 500, "{dialect}");
            let text = resp.text().await.expect("body");
            match dialect {
                DialectId::Thalamus => assert_eq!(text, "FAILED"),
                _ => assert!(text.contains("emulated failure"), "{dialect}: {text}"),
            }
        }
        emu.set_fault(Some(Fault::Failed));
        let resp = download(&emu, dialect).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "FAILED");
        // A fault meant for comments leaves reads alone.
        emu.set_fault(Some(Fault::CommentStatus(500)));
        let resp = download(&emu, dialect).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.expect("body").as_ref(), b"abc");
    }
}

#[tokio::test]
async fn status_fault_on_a_delete_deletes_nothing() {
    let emu = holding(DialectId::Tines, b"abc").await;
    let delete = || client().delete(format!("{}/api/v2/cases/1/files/1", emu.url()));
    emu.set_fault(Some(Fault::Status(503)));
    let resp = delete().send().await.expect("send");
    assert_eq!(resp.status(), 503);
    assert_eq!(emu.files().len(), 1);
    emu.set_fault(Some(Fault::ResetBeforeAnswer));
    delete().send().await.expect_err("no answer");
    emu.set_fault(Some(Fault::ResetMidBody));
    delete().send().await.expect_err("no answer");
    assert_eq!(emu.files().len(), 1);
    emu.set_fault(None);
    assert_eq!(delete().send().await.expect("send").status(), 204);
    assert!(emu.files().is_empty());
}

#[tokio::test]
async fn reset_mid_body_cuts_a_download_in_half() {
    for dialect in DialectId::ALL {
        let emu = holding(dialect, MIB).await;
        emu.set_fault(Some(Fault::ResetMidBody));
        let mut resp = download(&emu, dialect)
            .send()
            .await
            .expect("the head comes");
        assert_eq!(resp.status(), 200, "{dialect}");
        assert_eq!(header(&resp, "content-length"), "1048576", "{dialect}");
        let mut got = 0usize;
        let ended = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => got += chunk.len(),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(ended.is_err(), "{dialect}: the body must break off");
        assert_eq!(got, MIB.len() / 2, "{dialect}");
        // Any other read is dropped without an answer.
        let err = list(&emu, dialect).send().await.expect_err("no answer");
        assert!(!err.is_timeout(), "{dialect}: {err}");
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn reset_before_answer_drops_reads() {
    let emu = holding(DialectId::Kibana, b"abc").await;
    emu.set_fault(Some(Fault::ResetBeforeAnswer));
    let err = download(&emu, DialectId::Kibana)
        .send()
        .await
        .expect_err("no answer");
    assert!(!err.is_timeout(), "{err}");
}

#[tokio::test]
async fn headers_then_hang_on_a_download() {
    for dialect in [DialectId::Tines, DialectId::Caseiq] {
        let emu = holding(dialect, b"abcdef").await;
        emu.set_fault(Some(Fault::HeadersThenHang));
        let mut resp = download(&emu, dialect).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), "6");
        assert_eq!(header(&resp, "content-type"), "text/plain");
        let chunk = tokio::time::timeout(Duration::from_millis(300), resp.chunk()).await;
        assert!(chunk.is_err(), "{dialect}: the body must never come");
        tokio::time::timeout(Duration::from_secs(2), emu.shutdown())
            .await
            .expect("shutdown does not wait for the hang");
    }
}

#[tokio::test]
async fn trickle_sends_a_download_a_kibibyte_at_a_time() {
    let data: &'static [u8] = &[b't'; 3000];
    let emu = holding(DialectId::Thalamus, data).await;
    emu.set_fault(Some(Fault::Trickle));
    let began = Instant::now();
    let mut resp = download(&emu, DialectId::Thalamus)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "3000");
    let mut sizes = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        sizes.push(chunk.len());
    }
    assert_eq!(sizes, [1024, 1024, 952]);
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn json_faults_spoil_read_answers() {
    let emu = holding(DialectId::Caseiq, b"abc").await;
    let get = || {
        let id = emu.files()[0].id.clone();
        client().get(format!("{}/api-public/1.0/attachment/{id}", emu.url()))
    };
    let whole = get()
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    emu.set_fault(Some(Fault::TruncatedJson));
    let text = get()
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert_eq!(text, whole[..whole.len() / 2]);
    emu.set_fault(Some(Fault::EmptyBody));
    let resp = get().send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "");
    emu.set_fault(Some(Fault::Html));
    let resp = get().send().await.expect("send");
    assert_eq!(header(&resp, "content-type"), "text/html");
    emu.set_fault(Some(Fault::HtmlError));
    let resp = get().send().await.expect("send");
    assert_eq!(resp.status(), 502);
    emu.set_fault(Some(Fault::Delay(Duration::from_millis(200))));
    let began = Instant::now();
    let resp = get().send().await.expect("send");
    assert_eq!(resp.text().await.expect("body"), whole);
    assert!(began.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn flaky_counts_uploads_and_reads_together() {
    let emu = start_with(DialectId::Tines, Fault::Flaky(50)).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let resp = upload(&emu, DialectId::Tines, b"x")
            .send()
            .await
            .expect("send");
        statuses.push(resp.status().as_u16());
        let resp = list(&emu, DialectId::Tines).send().await.expect("send");
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 500, 200, 500]);
    assert_eq!(emu.files().len(), 2);
}

#[tokio::test]
async fn calls_are_recorded_with_secrets_masked() {
    let emu = start(Config {
        tokens: vec!["key".into()],
        ..Config::new(DialectId::Tines)
    })
    .await;
    client()
        .get(format!(
            "{}/api/v2/cases/1/files?per_page=5&page=2",
            emu.url()
        ))
        .bearer_auth("key")
        .header("x-request-id", "req-1")
        .send()
        .await
        .expect("send");
    client()
        .delete(format!("{}/api/v2/cases/1/files/%37", emu.url()))
        .header("X-User-Token", "key")
        .send()
        .await
        .expect("send");
    let calls = emu.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, "/api/v2/cases/1/files");
    assert_eq!(calls[0].query, "per_page=5&page=2");
    assert_eq!(calls[0].header("x-request-id"), Some("req-1"));
    assert_eq!(calls[0].header("authorization"), Some("***"));
    assert!(calls[0].headers.iter().any(|(k, _)| k == "host"));
    assert_eq!(calls[1].method, "DELETE");
    assert_eq!(calls[1].path, "/api/v2/cases/1/files/%37");
    assert_eq!(calls[1].query, "");
    assert_eq!(calls[1].header("x-user-token"), Some("***"));
    assert_eq!(calls[1].header("x-request-id"), None);

    let emu = start(Config::new(DialectId::Thalamus)).await;
    client()
        .get(format!(
            "{}/api/v4/cases/files/1?touchpoint=tp&token=secret",
            emu.url()
        ))
        .header("Thalamus-Token", "secret")
        .send()
        .await
        .expect("send");
    let call = &emu.calls()[0];
    assert_eq!(call.query, "touchpoint=tp&token=***");
    assert_eq!(call.header("thalamus-token"), Some("***"));
    assert!(!format!("{call:?}").contains("secret"));
}

#[tokio::test]
async fn the_record_of_calls_is_bounded() {
    let emu = start(Config::new(DialectId::Tines)).await;
    for i in 0..10_005 {
        let parts = http::Request::get(format!("/n/{i}"))
            .body(())
            .expect("request")
            .into_parts()
            .0;
        emu.shared.record(&parts);
    }
    let calls = emu.calls();
    assert_eq!(calls.len(), 10_000);
    assert_eq!(calls[0].path, "/n/5");
    assert_eq!(calls[9_999].path, "/n/10004");
}
