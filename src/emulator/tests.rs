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
