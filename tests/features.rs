//! Behaviour beyond the plain pairings: strict routes, comments carried by a second call
//! (and what happens when it fails), Tines base64 broken into lines, spooling forced by
//! field order, Case IQ's token
//! endpoint and the upstream token cache, routing and its 404/405s, Kibana spaces, the
//! concurrency cap, and an https upstream trusted through `ca_file`.

mod common;

use std::time::Duration;

use casegate::emulator::{self, Emulator, Fault};
use common::*;
use serde_json::{json, Value};

fn tines_base(h: &Harness) -> String {
    format!("{}{}", h.base(), Harness::prefix(Tines))
}

async fn post_json(h: &Harness, url: &str, body: &str) -> Reply {
    reply(
        h.http
            .post(url)
            .bearer_auth(CLIENT_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn strict_route_refuses_fields_its_upstream_cannot_store() {
    let h = setup(
        &[Tines, Caseiq],
        Thalamus,
        Opts {
            strict: true,
            ..Opts::default()
        },
    )
    .await;
    let mut up = small_upload(Thalamus);
    up.author_email = Some("a@example.org".into());
    let r = send(&h.http, Tines, &tines_base(&h), &up, Cred::Good).await;
    let m = assert_error(Tines, &r, 422, "bad_request", false).unwrap();
    assert!(m.contains("author_email"), "{m}");
    // Sent after the file (as tapi orders it): still refused before anything is sent.
    let body = r#"{"filename":"a.txt","file_contents":"aGk=","value":null,"author_email":"a@example.org","team_case_block_id":7}"#;
    let r = post_json(
        &h,
        &format!("{}/api/v2/cases/4242/files", tines_base(&h)),
        body,
    )
    .await;
    let m = assert_error(Tines, &r, 422, "bad_request", false).unwrap();
    assert!(
        m.contains("author_email") && m.contains("team_case_block_id"),
        "{m}"
    );
    // Case IQ tags and locale.
    let mut up = small_upload(Thalamus);
    up.tags = vec!["t".into()];
    let base = format!("{}{}", h.base(), Harness::prefix(Caseiq));
    let r = send(&h.http, Caseiq, &base, &up, Cred::Good).await;
    let m = assert_error(Caseiq, &r, 422, "bad_request", false).unwrap();
    assert!(m.contains("bulkTags[]"), "{m}");
    assert_eq!(
        h.upstream.uploads(),
        0,
        "a strict refusal reached the upstream"
    );
    // Nulls are absent, so a tapi-style body with only what thalamus stores goes through.
    let body = r#"{"filename":"a.txt","file_contents":"aGk=","value":"note","author_email":null,"team_case_block_id":null}"#;
    let r = post_json(
        &h,
        &format!("{}/api/v2/cases/4242/files", tines_base(&h)),
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("casegate-dropped").is_none());
    assert_eq!(h.upstream.comments()[0].text, "note");
    h.stop().await;
}

#[tokio::test]
async fn failed_comment_call_is_still_a_success_that_names_the_comment() {
    for back in [Kibana, Thalamus] {
        let h = setup(
            &[Tines, Caseiq],
            back,
            Opts {
                fault: Some(Fault::CommentStatus(500)),
                ..Opts::default()
            },
        )
        .await;
        let mut up = small_upload(back);
        up.comment = Some("lost comment".into());
        let r = send(&h.http, Tines, &tines_base(&h), &up, Cred::Good).await;
        assert_eq!(r.status, 200, "{back}: {}", r.text());
        assert_eq!(r.dropped(), ["value"], "{back}");
        let v = r.json();
        assert_eq!(v["activity_type"], "FILE_ATTACHED", "{back}");
        assert!(v["value"].is_null(), "{back}");
        let base = format!("{}{}", h.base(), Harness::prefix(Caseiq));
        let r = send(&h.http, Caseiq, &base, &up, Cred::Good).await;
        assert_eq!(r.status, 200, "{back}: {}", r.text());
        assert_eq!(r.dropped(), ["description"], "{back}");
        assert_eq!(h.upstream.files().len(), 2, "{back}: the files are stored");
        assert!(h.upstream.comments().is_empty(), "{back}");
        h.stop().await;
    }
}

/// Base64 broken into lines, as Python's `base64.encodebytes` (`\n` every 76 characters)
/// or MIME (`\r\n`) give it, JSON-escaped, with stray spaces, sent in odd-sized pieces so
/// escapes split between them: every back gets the file byte for byte.
#[tokio::test]
async fn tines_base64_in_lines_arrives_byte_exact_at_every_back() {
    let data = random_bytes(1_000_003, 11);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    for (back, sep) in [
        (Thalamus, "\\n"),
        (Kibana, "\\r\\n"),
        (Caseiq, " \\r\\n "),
        (Tines, "\\n"),
    ] {
        let h = setup(&[Tines], back, Opts::default()).await;
        let body = format!(
            r#"{{"filename":"lines.pdf","file_contents":"{}{sep}","value":"in lines"}}"#,
            lines.join(sep)
        );
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = body
            .as_bytes()
            .chunks(997)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let case = case_id_for(back);
        let r = reply(
            h.http
                .post(format!("{}/api/v2/cases/{case}/files", tines_base(&h)))
                .bearer_auth(CLIENT_TOKEN)
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    pieces,
                )))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{back}: {}", r.text());
        let files = h.upstream.files();
        assert_eq!(files.len(), 1, "{back}");
        assert_eq!(files[0].sha256, sha256_hex(&data), "{back}");
        assert_eq!(files[0].size, data.len() as u64, "{back}");
        h.stop().await;
    }
}

#[tokio::test]
async fn field_order_forces_spooling_and_spool_files_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().to_str().unwrap().to_string();
    for back in [Caseiq, Thalamus, Tines, Kibana] {
        let h = setup(
            &[Tines, Kibana],
            back,
            Opts {
                spool_dir: Some(spool.clone()),
                ..Opts::default()
            },
        )
        .await;
        // A file held in memory (at most 64 KiB), one spooled to disk, and a shorter one
        // spooled after it (into the file the longer one left, which casegate keeps for
        // reuse: only the new upload's bytes may come back out of it).
        for size in [3_000, 300_000, 100_000] {
            let data = random_bytes(size, 5);
            let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
            // file_contents first, then the name and the comment, as tapi would if it sorted keys.
            let body = format!(
                r#"{{"file_contents":"{b64}","value":"after the file","filename":"late.pdf","author_email":null}}"#
            );
            let case = case_id_for(back);
            let r = post_json(
                &h,
                &format!("{}/api/v2/cases/{case}/files", tines_base(&h)),
                &body,
            )
            .await;
            assert_eq!(r.status, 200, "{back}: {}", r.text());
            let f = h.upstream.files().pop().unwrap();
            assert_eq!(f.sha256, sha256_hex(&data), "{back}");
            assert_eq!(f.name, "late.pdf", "{back}");
            match back {
                Caseiq => assert_eq!(fields(&f)["description"], ["after the file"]),
                Tines => assert_eq!(fields(&f)["value"], ["after the file"]),
                _ => assert_eq!(h.upstream.comments()[0].text, "after the file", "{back}"),
            }
            // A Kibana client's display name after the file part.
            let form = reqwest::multipart::Form::new()
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(data.clone())
                        .file_name("scan.pdf")
                        .mime_str("application/pdf")
                        .unwrap(),
                )
                .text("filename", "Scan of the contract.pdf");
            let r = reply(
                h.http
                    .post(format!(
                        "{}{}/api/cases/{case}/files",
                        h.base(),
                        Harness::prefix(Kibana)
                    ))
                    .header("kbn-xsrf", "true")
                    .header("authorization", format!("ApiKey {CLIENT_TOKEN}"))
                    .multipart(form)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, 200, "{back}: {}", r.text());
            let f = h.upstream.files().pop().unwrap();
            assert_eq!(f.sha256, sha256_hex(&data), "{back}");
            if back == Kibana {
                assert_eq!(f.name, "Scan of the contract.pdf");
                assert_eq!(fields(&f)["filename"], ["Scan of the contract"]);
            } else {
                assert_eq!(f.name, "scan.pdf", "{back}");
            }
        }
        h.stop().await;
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "spool files remain"
    );
}

#[tokio::test]
async fn caseiq_token_endpoint_answers_as_case_iq_does() {
    let h = setup(&[Caseiq], Tines, Opts::default()).await;
    let base = format!("{}{}", h.base(), Harness::prefix(Caseiq));
    let token = |body: Value| {
        let http = h.http.clone();
        let url = format!("{base}/auth/oauth2/token");
        async move { reply(http.post(url).json(&body).send().await.unwrap()).await }
    };
    let r =
        token(json!({"grant_type": "password", "client_id": "x", "client_secret": CLIENT_TOKEN}))
            .await;
    assert_eq!(
        (r.status, r.json()),
        (501, json!({"error": "unsupported_grant_type"}))
    );
    for ttl in [0, 3601] {
        let r = token(json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": CLIENT_TOKEN, "ttl": ttl})).await;
        assert_eq!(
            (r.status, r.json()),
            (400, json!({"error": "invalid_request"})),
            "ttl {ttl}"
        );
    }
    let r = token(
        json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": "nope"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"error": "invalid_client"}))
    );
    let r = token(json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": CLIENT_TOKEN, "ttl": 1})).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        keys(&v),
        sorted(&["access_token", "expires_in", "token_type"])
    );
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 1);
    let short = v["access_token"].as_str().unwrap().to_string();
    assert!(!short.contains(CLIENT_TOKEN));
    // Form-encoded, as OAuth2 libraries send it.
    let r = reply(
        h.http
            .post(format!("{base}/auth/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id=x&client_secret={CLIENT_TOKEN}"
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["expires_in"], 600);
    // The one-second token expires.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let up = small_upload(Tines);
    let form = reqwest::multipart::Form::new()
        .text("caseId", up.case_id.clone())
        .part(
            "file",
            reqwest::multipart::Part::bytes(up.data.clone()).file_name("a.txt"),
        );
    let r = reply(
        h.http
            .post(format!("{base}/api-public/1.0/save_file"))
            .bearer_auth(&short)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Caseiq, &r, 401, "unauthorized", false);
    h.stop().await;
}

#[tokio::test]
async fn caseiq_tokens_open_only_their_own_route() {
    let up = emulator::Config::new(Tines);
    let emu = Emulator::start(up, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let toml = format!(
        r#"
[[routes]]
name = "a"
front = "caseiq"
prefix = "/a"
client_tokens = ["{CLIENT_TOKEN}"]
[routes.upstream]
dialect = "tines"
url = "{url}"
[[routes]]
name = "b"
front = "caseiq"
prefix = "/b"
client_tokens = ["{CLIENT_TOKEN}"]
[routes.upstream]
dialect = "tines"
url = "{url}"
"#,
        url = emu.url()
    );
    let cg = start_casegate(&toml).await;
    let http = client();
    let a = format!("http://{}/a", cg.addr());
    let b = format!("http://{}/b", cg.addr());
    let token_a = caseiq_token(&http, &a, CLIENT_TOKEN).await;
    let upload = |base: String, token: String| {
        let http = http.clone();
        async move {
            let form = reqwest::multipart::Form::new().text("caseId", "1").part(
                "file",
                reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.txt"),
            );
            reply(
                http.post(format!("{base}/api-public/1.0/save_file"))
                    .bearer_auth(token)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(upload(a.clone(), token_a.clone()).await.status, 200);
    let r = upload(b.clone(), token_a).await;
    assert_error(Caseiq, &r, 401, "unauthorized", false);
    cg.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn caseiq_upstream_token_is_fetched_once_and_cached() {
    let h = setup(&[Tines], Caseiq, Opts::default()).await;
    for _ in 0..3 {
        let r = send(
            &h.http,
            Tines,
            &tines_base(&h),
            &small_upload(Caseiq),
            Cred::Good,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(h.upstream.token_requests(), 1);
    assert_eq!(h.upstream.files().len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn routing_404s_and_405s_in_the_dialects_form() {
    let h = setup(&[Tines, Kibana], Tines, Opts::default()).await;
    // A path no dialect has.
    let r = reply(
        h.http
            .get(format!("{}/nothing/here", h.base()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("casegate-error").as_deref(), Some("not_found"));
    // A Thalamus path, but no Thalamus route: 404 in Thalamus' form.
    let r = reply(
        h.http
            .post(format!("{}/api/v4/cases/1/files", h.base()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Thalamus, &r, 404, "not_found", false);
    // A Tines path outside the route's prefix.
    let r = reply(
        h.http
            .post(format!("{}/api/v2/cases/1/files", h.base()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Tines, &r, 404, "not_found", false);
    // The right path with the wrong method.
    let r = reply(
        h.http
            .put(format!("{}/api/v2/cases/1/files", tines_base(&h)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Tines, &r, 405, "method_not_allowed", false);
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST"));
    // A path under the route's prefix that is none of its operations: 404 in its form.
    let r = reply(
        h.http
            .get(format!("{}/api/v2/cases/1/notes", tines_base(&h)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Tines, &r, 404, "not_found", false);
    h.stop().await;
}

#[tokio::test]
async fn routes_match_on_host() {
    let emu = Emulator::start(emulator::Config::new(Tines), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let toml = format!(
        r#"
[[routes]]
name = "cases-host"
front = "tines"
host = "cases.example.org"
[routes.upstream]
dialect = "tines"
url = "{url}"
"#,
        url = emu.url()
    );
    let cg = start_casegate(&toml).await;
    let http = client();
    let url = format!("http://{}/api/v2/cases/1/files", cg.addr());
    let body = r#"{"filename":"a.txt","file_contents":"aGk="}"#;
    let go = |host: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            reply(
                http.post(url)
                    .header("host", host)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(go("cases.example.org").await.status, 200);
    assert_eq!(go("CASES.example.org:8443").await.status, 200);
    let r = go("other.example.org").await;
    assert_error(Tines, &r, 404, "not_found", false);
    cg.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn kibana_space_from_client_or_route() {
    let h = setup(&[Kibana, Tines], Kibana, Opts::default()).await;
    let up = small_upload(Kibana);
    let base = format!("{}{}/s/ops", h.base(), Harness::prefix(Kibana));
    let r = send(&h.http, Kibana, &base, &up, Cred::Good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.upstream.files()[0].space.as_deref(), Some("ops"));
    h.stop().await;

    let h = setup(
        &[Kibana],
        Kibana,
        Opts {
            extra_upstream_keys: "space = \"forced\"\nowner = \"securitySolution\"".into(),
            ..Opts::default()
        },
    )
    .await;
    let base = format!("{}{}/s/ops", h.base(), Harness::prefix(Kibana));
    let r = send(&h.http, Kibana, &base, &up, Cred::Good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.upstream.files()[0].space.as_deref(), Some("forced"));
    h.stop().await;
}

#[tokio::test]
async fn over_max_in_flight_is_503_in_the_clients_dialect() {
    let emu = {
        let mut c = emulator::Config::new(Tines);
        c.fault = Some(Fault::Delay(Duration::from_millis(1500)));
        Emulator::start(c, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    };
    let toml = format!(
        "max_in_flight = 1\n[[routes]]\nname = \"r\"\nfront = \"kibana\"\n[routes.upstream]\ndialect = \"tines\"\nurl = \"{}\"\n",
        emu.url()
    );
    let cg = start_casegate(&toml).await;
    let http = client();
    let base = format!("http://{}", cg.addr());
    let up = small_upload(Tines);
    let first = tokio::spawn({
        let (http, base, up) = (http.clone(), base.clone(), up.clone());
        async move { send(&http, Kibana, &base, &up, Cred::Good).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = send(&http, Kibana, &base, &up, Cred::Good).await;
    assert_error(Kibana, &r, 503, "overloaded", false);
    assert_eq!(first.await.unwrap().status, 200);
    let r = send(&http, Kibana, &base, &up, Cred::Good).await;
    assert_eq!(r.status, 200, "the permit came back");
    cg.shutdown().await;
    emu.shutdown().await;
}

/// A CA and a server certificate for 127.0.0.1, made for this test.
fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "casegate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let server = casegate::tls::server_config_der(vec![cert.der().clone()], der_key).unwrap();
    (ca_file, server)
}

#[tokio::test]
async fn https_upstream_is_trusted_through_ca_file_and_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, server) = test_pki(dir.path());
    let mut ec = emulator::Config::new(Kibana);
    ec.tls = Some(std::sync::Arc::new(server));
    let emu = Emulator::start(ec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(emu.url().starts_with("https://"));
    let route = |name: &str, prefix: &str, ca: Option<&std::path::Path>| {
        let mut t = format!(
            "[[routes]]\nname = \"{name}\"\nfront = \"tines\"\nprefix = \"{prefix}\"\n[routes.upstream]\ndialect = \"kibana\"\nurl = \"{}\"\n",
            emu.url()
        );
        if let Some(ca) = ca {
            t.push_str(&format!("ca_file = {:?}\n", ca.to_str().unwrap()));
        }
        t
    };
    let toml = format!(
        "{}\n{}",
        route("trusted", "/trusted", Some(&ca_file)),
        route("untrusted", "/untrusted", None)
    );
    let cg = start_casegate(&toml).await;
    let http = client();
    let up = small_upload(Kibana);
    let r = send(
        &http,
        Tines,
        &format!("http://{}/trusted", cg.addr()),
        &up,
        Cred::Missing,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(emu.files()[0].sha256, sha256_hex(&up.data));
    let r = send(
        &http,
        Tines,
        &format!("http://{}/untrusted", cg.addr()),
        &up,
        Cred::Missing,
    )
    .await;
    assert_error(Tines, &r, 502, "upstream_unreachable", true);
    assert_eq!(emu.files().len(), 1);
    cg.shutdown().await;
    emu.shutdown().await;
}
