//! Every failure reaches the client in its own dialect's error form, with the status of
//! SPEC section 4 and `Casegate-Error`: the client's own mistakes (for every front) and
//! the upstream's failures (for every back, rendered in every front's form). Where the
//! client erred, the upstream sees nothing, or at least stores nothing.

mod common;

use std::time::Duration;

use casegate::dialect::DialectId;
use casegate::emulator::Fault;
use common::*;

const BOUNDARY: &str = "test-boundary-42";

fn multipart_ct() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A raw POST with the front's credentials.
async fn raw(
    h: &Harness,
    front: DialectId,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Reply {
    let base = format!("{}{}", h.base(), Harness::prefix(front));
    let mut req = h
        .http
        .post(format!("{base}{path}"))
        .header("content-type", content_type)
        .body(body);
    req = match front {
        Thalamus => req
            .header("thalamus-touchpoint", "t")
            .header("thalamus-token", CLIENT_TOKEN),
        Tines => req.bearer_auth(CLIENT_TOKEN),
        Caseiq => req.bearer_auth(caseiq_token(&h.http, &base, CLIENT_TOKEN).await),
        Kibana => req
            .header("authorization", format!("ApiKey {CLIENT_TOKEN}"))
            .header("kbn-xsrf", "x"),
    };
    reply(req.send().await.unwrap()).await
}

fn upload_path(front: DialectId, case: &str) -> String {
    match front {
        Thalamus => format!("/api/v4/cases/{case}/files"),
        Tines => format!("/api/v2/cases/{case}/files"),
        Caseiq => "/api-public/1.0/save_file".into(),
        Kibana => format!("/api/cases/{case}/files"),
    }
}

/// A multipart body from (name, filename, value) parts.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, filename, value) in parts {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = filename {
            b.extend_from_slice(
                format!("; filename=\"{f}\"\r\nContent-Type: text/plain").as_bytes(),
            );
        }
        b.extend_from_slice(b"\r\n\r\n");
        b.extend_from_slice(value);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

async fn client_mistakes(front: DialectId) {
    let back = Tines;
    let h = setup(
        &[front],
        back,
        Opts {
            max_upload_bytes: 1000,
            ..Opts::default()
        },
    )
    .await;
    let case = case_id_for(back);
    let path = upload_path(front, case);
    let caseid_field: &[(&str, Option<&str>, &[u8])] = if front == Caseiq {
        &[("caseId", None, case.as_bytes())]
    } else {
        &[]
    };

    // Wrong content type.
    let (ct, body) = if front == Tines {
        (multipart_ct(), form(&[("file", Some("a.txt"), b"x")]))
    } else {
        ("application/json".to_string(), br#"{"file":"x"}"#.to_vec())
    };
    let r = raw(&h, front, &path, &ct, body).await;
    assert_error(front, &r, 415, "unsupported_media_type", false);

    if front == Tines {
        // Bad JSON.
        let r = raw(
            &h,
            front,
            &path,
            "application/json",
            br#"{"filename":"a.txt","file_contents":"aGk=""#.to_vec(),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false).unwrap();
        assert!(m.contains("JSON"), "{m}");
        let r = raw(&h, front, &path, "application/json", b"[1,2]".to_vec()).await;
        assert_error(front, &r, 400, "bad_request", false);
        // Bad base64.
        let r = raw(
            &h,
            front,
            &path,
            "application/json",
            br#"{"filename":"a.txt","file_contents":"aGk*"}"#.to_vec(),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false).unwrap();
        assert!(m.contains("base64"), "{m}");
        // Missing file / missing name.
        let r = raw(
            &h,
            front,
            &path,
            "application/json",
            br#"{"filename":"a.txt","value":null}"#.to_vec(),
        )
        .await;
        assert_error(front, &r, 400, "bad_request", false);
        let r = raw(
            &h,
            front,
            &path,
            "application/json",
            br#"{"file_contents":"aGk=","value":null}"#.to_vec(),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false).unwrap();
        assert!(m.contains("filename"), "{m}");
        let r = raw(
            &h,
            front,
            &path,
            "application/json",
            br#"{"file_contents":null,"filename":"a.txt"}"#.to_vec(),
        )
        .await;
        assert_error(front, &r, 400, "bad_request", false);
    } else {
        // Broken multipart: the closing delimiter never comes.
        let mut broken = form(&[caseid_field, &[("file", Some("a.txt"), b"hello")]].concat());
        broken.truncate(broken.len() - 12);
        let r = raw(&h, front, &path, &multipart_ct(), broken).await;
        let m = assert_error(front, &r, 400, "bad_request", false);
        if let Some(m) = m {
            assert!(m.contains("malformed"), "{m}");
        }
        // A part with more headers than a part may have (32).
        let mut many = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
        );
        for i in 0..40 {
            many.push_str(&format!("X-Header-{i}: v\r\n"));
        }
        many.push_str(&format!("\r\nhello\r\n--{BOUNDARY}--\r\n"));
        let r = raw(&h, front, &path, &multipart_ct(), many.into_bytes()).await;
        let m = assert_error(front, &r, 400, "bad_request", false);
        if let Some(m) = m {
            assert!(m.contains("malformed"), "{m}");
        }
        // Missing file part.
        let r = raw(
            &h,
            front,
            &path,
            &multipart_ct(),
            form(&[caseid_field, &[("other", None, b"v")]].concat()),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false);
        if let Some(m) = m {
            assert!(m.contains("no file"), "{m}");
        }
        // Two file parts.
        let two = form(
            &[
                caseid_field,
                &[("file", Some("a.txt"), b"a"), ("file", Some("b.txt"), b"b")],
            ]
            .concat(),
        );
        let r = raw(&h, front, &path, &multipart_ct(), two).await;
        assert_error(front, &r, 400, "bad_request", false);
    }

    // Missing case id.
    if front == Caseiq {
        let r = raw(
            &h,
            front,
            &path,
            &multipart_ct(),
            form(&[("file", Some("a.txt"), b"x")]),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false).unwrap();
        assert!(m.contains("caseId"), "{m}");
        // And the file must be the last part.
        let r = raw(
            &h,
            front,
            &path,
            &multipart_ct(),
            form(&[
                ("file", Some("a.txt"), b"x"),
                ("caseId", None, case.as_bytes()),
            ]),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false).unwrap();
        assert!(m.contains("caseId") && m.contains("before the file"), "{m}");
        let r = raw(
            &h,
            front,
            &path,
            &multipart_ct(),
            form(&[
                ("caseId", None, case.as_bytes()),
                ("file", Some("a.txt"), b"x"),
                ("description", None, b"late"),
            ]),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false).unwrap();
        assert!(m.contains("last"), "{m}");
        assert!(h.upstream.files().is_empty());
    } else {
        let empty_case = upload_path(front, "");
        let (ct, body) = if front == Tines {
            (
                "application/json".to_string(),
                br#"{"filename":"a.txt","file_contents":"aGk="}"#.to_vec(),
            )
        } else {
            (multipart_ct(), form(&[("file", Some("a.txt"), b"x")]))
        };
        let r = raw(&h, front, &empty_case, &ct, body).await;
        assert_error(front, &r, 400, "bad_request", false);
    }

    // Credentials: missing and wrong; the upstream hears nothing.
    let base = format!("{}{}", h.base(), Harness::prefix(front));
    for cred in [Cred::Missing, Cred::Wrong] {
        let r = send(&h.http, front, &base, &small_upload(back), cred).await;
        assert_error(front, &r, 401, "unauthorized", false);
    }
    if front == Caseiq {
        let r = reply(
            h.http
                .post(format!("{base}/auth/oauth2/token"))
                .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": "wrong"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (r.status, r.json()),
            (401, serde_json::json!({"error": "invalid_client"}))
        );
    }

    // Kibana without kbn-xsrf: the exact message.
    if front == Kibana {
        let r = reply(
            h.http
                .post(format!("{base}{path}"))
                .header("authorization", format!("ApiKey {CLIENT_TOKEN}"))
                .header("content-type", multipart_ct())
                .body(form(&[("file", Some("a.txt"), b"x")]))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let m = assert_error(front, &r, 400, "bad_request", false).unwrap();
        assert_eq!(m, "Request must contain a kbn-xsrf header.");
    }
    assert_eq!(
        h.upstream.requests(),
        0,
        "{front}: the upstream saw a request"
    );

    // One byte over max_upload_bytes (1000): 413, nothing stored; exactly the limit: stored.
    let mut up = small_upload(back);
    up.data = random_bytes(1001, 3);
    let r = send(&h.http, front, &base, &up, Cred::Good).await;
    assert_error(front, &r, 413, "too_large", false);
    assert!(
        h.upstream.files().is_empty(),
        "{front}: a file over the limit was stored"
    );
    up.data.truncate(1000);
    let r = send(&h.http, front, &base, &up, Cred::Good).await;
    assert_eq!(r.status, 200, "{front}: {}", r.text());
    assert_eq!(h.upstream.files()[0].sha256, sha256_hex(&up.data));

    // A declared Content-Length far over the limit is refused before the body is read.
    let r = raw(
        &h,
        front,
        &path,
        if front == Tines {
            "application/json"
        } else {
            "multipart/form-data; boundary=x"
        },
        vec![b' '; 4 * 1024 * 1024],
    )
    .await;
    assert_error(front, &r, 413, "too_large", false);
    h.stop().await;
}

#[tokio::test]
async fn thalamus_client_mistakes() {
    client_mistakes(Thalamus).await;
}

#[tokio::test]
async fn tines_client_mistakes() {
    client_mistakes(Tines).await;
}

#[tokio::test]
async fn caseiq_client_mistakes() {
    client_mistakes(Caseiq).await;
}

#[tokio::test]
async fn kibana_client_mistakes() {
    client_mistakes(Kibana).await;
}

/// Each upstream failure, seen through every front.
async fn upstream_failures(back: DialectId) {
    let h = setup(
        &DialectId::ALL,
        back,
        Opts {
            timeout_secs: 1,
            ..Opts::default()
        },
    )
    .await;
    let carried_message = back != Thalamus;
    let cases: Vec<(Fault, u16, &str)> = vec![
        (Fault::Status(401), 502, "upstream_rejected"),
        (Fault::Status(403), 502, "upstream_rejected"),
        (Fault::Status(404), 404, "upstream_rejected"),
        (Fault::Status(400), 400, "upstream_rejected"),
        (Fault::Status(500), 502, "upstream_failed"),
        (Fault::Status(503), 502, "upstream_failed"),
        (
            Fault::Delay(Duration::from_millis(2500)),
            504,
            "upstream_timeout",
        ),
    ];
    let mut cases = cases;
    if back == Thalamus {
        cases.push((Fault::Failed, 502, "upstream_failed"));
    }
    for (fault, status, code) in cases {
        h.upstream.set_fault(Some(fault.clone()));
        for front in DialectId::ALL {
            let base = format!("{}{}", h.base(), Harness::prefix(front));
            let before = h.upstream.files().len();
            let r = send(&h.http, front, &base, &small_upload(back), Cred::Good).await;
            let m = assert_error(front, &r, status, code, true);
            if let (Some(m), Fault::Status(400 | 404)) = (&m, &fault) {
                if carried_message {
                    assert_eq!(m, "emulated failure", "{front}->{back} {fault}");
                }
            }
            if !matches!(fault, Fault::Delay(_)) {
                assert_eq!(h.upstream.files().len(), before, "{front}->{back} {fault}");
            }
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn thalamus_upstream_failures() {
    upstream_failures(Thalamus).await;
}

#[tokio::test]
async fn tines_upstream_failures() {
    upstream_failures(Tines).await;
}

#[tokio::test]
async fn caseiq_upstream_failures() {
    upstream_failures(Caseiq).await;
}

#[tokio::test]
async fn kibana_upstream_failures() {
    upstream_failures(Kibana).await;
}

/// An upstream that is not there: 502 upstream_unreachable in every front's form.
#[tokio::test]
async fn upstream_down() {
    for back in DialectId::ALL {
        // A port bound and never listening: connections are refused, and nothing else can
        // take the port meanwhile (as it could one let go).
        let gone = tokio::net::TcpSocket::new_v4().unwrap();
        gone.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}", gone.local_addr().unwrap());
        let cg = start_casegate(&routes_toml(&DialectId::ALL, back, &url, &Opts::default())).await;
        let http = client();
        for front in DialectId::ALL {
            let base = format!("http://{}{}", cg.addr(), Harness::prefix(front));
            let r = send(&http, front, &base, &small_upload(back), Cred::Good).await;
            assert_error(front, &r, 502, "upstream_unreachable", true);
        }
        cg.shutdown().await;
    }
}
