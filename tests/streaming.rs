//! Streaming guarantees (SPEC section 5): a slow upstream slows the client instead of
//! filling casegate's memory; a client that disconnects mid-upload leaves no file
//! upstream and no temp file behind; a chunked body that crosses the limit mid-stream is
//! cut, the upstream request aborted, and the client told 413 in its dialect.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use casegate::dialect::DialectId;
use casegate::emulator;
use common::*;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

/// An upstream that reads request bodies at about 1 MB/s and never answers.
async fn slow_reader() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            });
        }
    });
    (format!("http://{addr}"), read)
}

#[tokio::test]
async fn a_slow_upstream_slows_the_client() {
    let (url, upstream_read) = slow_reader().await;
    // Multipart to multipart, and multipart to base64 JSON.
    for back in [Tines, Kibana] {
        upstream_read.store(0, Ordering::Relaxed);
        let opts = Opts {
            max_upload_bytes: 1 << 30,
            timeout_secs: 2,
            ..Opts::default()
        };
        let toml = routes_toml(&[Thalamus], back, &url, &opts);
        let cg = start_casegate(&toml).await;
        let pulled = Arc::new(AtomicU64::new(0));
        let total: u64 = 256 * 1024 * 1024;
        let chunk = Bytes::from(random_bytes(64 * 1024, 3));
        let counter = pulled.clone();
        let body = futures_util::stream::iter(0..total / chunk.len() as u64).map(move |_| {
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(chunk.clone())
        });
        let part =
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body)).file_name("big.zip");
        let form = reqwest::multipart::Form::new().part("file", part);
        let url = format!(
            "http://{}/thalamus/api/v4/cases/1/files?touchpoint=t&token={CLIENT_TOKEN}",
            cg.addr()
        );
        let req = tokio::spawn(client().post(url).multipart(form).send());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent = pulled.load(Ordering::Relaxed);
        let received = upstream_read.load(Ordering::Relaxed);
        eprintln!("{back}: client sent {sent}, upstream read {received}");
        req.abort();
        // Without backpressure the client would have sent all 256 MiB by now. With it,
        // what it sent is what the upstream read plus socket buffers on both hops.
        assert!(received > 0, "{back}: the upstream read nothing");
        assert!(
            sent < received + 48 * 1024 * 1024,
            "{back}: the client sent {sent} bytes while the upstream read {received}"
        );
        cg.shutdown().await;
    }
}

/// How many requests the casegate whose admin listener is `admin` counted with `status`.
async fn requests_answered(
    http: &reqwest::Client,
    admin: std::net::SocketAddr,
    status: &str,
) -> f64 {
    let status = format!("status=\"{status}\"");
    metric_sum(http, admin, "casegate_requests_total", &[&status]).await
}

/// Sends the head and part of a body over a raw socket, then drops the connection.
fn send_partial_and_vanish(addr: std::net::SocketAddr, head: &str, part: &[u8]) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(part).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
}

#[tokio::test]
async fn a_client_that_vanishes_mid_upload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().to_str().unwrap().to_string();
    for (back, spooled) in [(Caseiq, true), (Tines, false), (Thalamus, false)] {
        let h = setup(
            &[Tines],
            back,
            Opts {
                spool_dir: Some(spool.clone()),
                extra_top_keys: "admin_listen = \"127.0.0.1:0\"\n".into(),
                ..Opts::default()
            },
        )
        .await;
        let case = case_id_for(back);
        let b64 = "QUJD".repeat(256 * 1024); // 1 MiB of base64
                                             // tapi order: the comment after file_contents, so a Case IQ back needs a spool.
        let body_start = format!(r#"{{"filename":"x.pdf","file_contents":"{b64}"#);
        let head = format!(
            "POST /tines/api/v2/cases/{case}/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body_start.len() * 4
        );
        let addr = h.casegate.addr();
        tokio::task::spawn_blocking(move || {
            send_partial_and_vanish(addr, &head, body_start.as_bytes())
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            h.upstream.files().is_empty(),
            "{back}: a partial file was stored"
        );
        if !spooled {
            assert_eq!(h.upstream.uploads(), 1, "{back}: the upload was streaming");
        }
        // Counted as the client's giving up (nginx's 499), not as a malformed request.
        let admin = h.casegate.admin_addr().unwrap();
        let counted = |status| requests_answered(&h.http, admin, status);
        assert_eq!(counted("499").await, 1.0, "{back}");
        assert_eq!(counted("400").await, 0.0, "{back}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{back}: spool files remain"
        );
        // casegate still serves.
        let r = send(
            &h.http,
            Tines,
            &format!("{}/tines", h.base()),
            &small_upload(back),
            Cred::Good,
        )
        .await;
        assert_eq!(r.status, 200, "{back}: {}", r.text());
        assert_eq!(
            h.upstream.open_connections(),
            1,
            "{back}: the aborted upstream connection is closed"
        );
        h.stop().await;
    }
}

/// An HTTP/2 client that cancels its upload mid-body (RST_STREAM on a connection it
/// keeps): nothing is stored, the request is counted as 499 (the client gave up), and the
/// same connection goes on to upload.
#[tokio::test]
async fn an_h2_upload_cancelled_mid_body_is_counted_as_the_clients_giving_up() {
    let h = setup(
        &[Tines],
        Tines,
        Opts {
            extra_top_keys: "admin_listen = \"127.0.0.1:0\"\n".into(),
            ..Opts::default()
        },
    )
    .await;
    let admin = h.casegate.admin_addr().unwrap();
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("{}/tines/api/v2/cases/1/files", h.base());
    let start = Bytes::from(format!(
        r#"{{"filename":"x.pdf","file_contents":"{}"#,
        "QUJD".repeat(64 * 1024)
    ));
    // The body's first piece, then nothing: the request is cancelled while casegate waits.
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(start)])
        .chain(futures_util::stream::pending());
    let request = h2c
        .post(&url)
        .bearer_auth(CLIENT_TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let sending = tokio::spawn(request);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.upstream.uploads() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sending.abort();
    let counted = |status| requests_answered(&h.http, admin, status);
    while counted("499").await != 1.0 {
        assert!(std::time::Instant::now() < deadline, "no 499 counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted("400").await, 0.0);
    assert!(
        h.upstream.files().is_empty(),
        "a cancelled upload was stored"
    );
    // The client's connection is still open and serves the next upload.
    let r = send(
        &h2c,
        Tines,
        &format!("{}/tines", h.base()),
        &small_upload(Tines),
        Cred::Good,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(counted("200").await, 1.0);
    h.stop().await;
}

/// A client that sent its whole upload and goes away while the upstream takes its time
/// to answer: the request is still logged and counted, as 499 (nginx's "client closed
/// request"), its answer not complete; before, it vanished from the access log.
#[tokio::test]
async fn a_client_gone_while_the_upstream_answers_is_logged_as_499() {
    let h = setup(
        &[Tines],
        Tines,
        Opts {
            fault: Some(emulator::Fault::Delay(Duration::from_secs(2))),
            extra_top_keys: "admin_listen = \"127.0.0.1:0\"\n".into(),
            ..Opts::default()
        },
    )
    .await;
    let admin = h.casegate.admin_addr().unwrap();
    let (head, body) = wire_upload(&h, Tines, b"sent whole", "").await;
    let mut s = tokio::net::TcpStream::connect(h.casegate.addr())
        .await
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.upstream.uploads() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
    let gone = ["status=\"499\"", "operation=\"upload\"", "code=\"-\""];
    while metric_sum(&h.http, admin, "casegate_requests_total", &gone).await != 1.0 {
        assert!(std::time::Instant::now() < deadline, "no 499 counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = metric_sum(
        &h.http,
        admin,
        "casegate_requests_total",
        &["operation=\"upload\""],
    );
    assert_eq!(all.await, 1.0);
    h.stop().await;
}

#[tokio::test]
async fn a_chunked_body_crossing_the_limit_is_cut_and_answered_413() {
    for front in [Thalamus, Tines] {
        let h = setup(
            &[front],
            Kibana,
            Opts {
                max_upload_bytes: 1024 * 1024,
                ..Opts::default()
            },
        )
        .await;
        // A chunked body (no Content-Length): 4 MiB of file.
        let (path, ct, head_bytes, tail_bytes) = match front {
            Tines => (
                "/tines/api/v2/cases/c1/files".to_string(),
                "application/json".to_string(),
                br#"{"filename":"x.pdf","file_contents":""#.to_vec(),
                br#""}"#.to_vec(),
            ),
            _ => (
                format!("/thalamus/api/v4/cases/1/files?touchpoint=t&token={CLIENT_TOKEN}"),
                "multipart/form-data; boundary=B".to_string(),
                b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.pdf\"\r\n\r\n"
                    .to_vec(),
                b"\r\n--B--\r\n".to_vec(),
            ),
        };
        let filler: &'static [u8] = if front == Tines { b"QUJD" } else { b"ABC" };
        let chunk = Bytes::from(filler.repeat(16 * 1024));
        let chunks = (4 * 1024 * 1024) / chunk.len();
        let body = futures_util::stream::iter(
            std::iter::once(Bytes::from(head_bytes))
                .chain(std::iter::repeat_n(chunk, chunks))
                .chain(std::iter::once(Bytes::from(tail_bytes)))
                .map(Ok::<_, std::io::Error>),
        );
        let mut req = h
            .http
            .post(format!("{}{path}", h.base()))
            .header("content-type", ct)
            .body(reqwest::Body::wrap_stream(body));
        if front == Tines {
            req = req.bearer_auth(CLIENT_TOKEN);
        }
        match req.send().await {
            Ok(resp) => {
                let r = reply(resp).await;
                assert_error(front, &r, 413, "too_large", false);
            }
            // The connection may close before the client finished sending; what matters is
            // that nothing was stored.
            Err(e) => eprintln!("{front}: client saw {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            h.upstream.files().is_empty(),
            "{front}: a cut upload was stored"
        );
        h.stop().await;
    }
}

/// An upload of `data` as `front`'s client puts it on the wire, for the route at
/// `h.base()/{front}`: its request head (ending in the blank line) and body. `extra` goes
/// in the body after the file (a second file part, to make the form bad), multipart
/// fronts only.
async fn wire_upload(h: &Harness, front: DialectId, data: &[u8], extra: &str) -> (String, Vec<u8>) {
    let case = case_id_for(h.back);
    let file_part = |name: &str| {
        format!(
            "--cgB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/pdf\r\n\r\n"
        )
    };
    let (target, auth, mut body) = match front {
        Tines => {
            // As tapi sends it: the name before the file, the comment (none) after.
            let b64 = base64::engine::general_purpose::STANDARD.encode(data);
            let body = format!(r#"{{"filename":"wire.pdf","file_contents":"{b64}","value":null}}"#)
                .into_bytes();
            let auth = format!(
                "Authorization: Bearer {CLIENT_TOKEN}\r\nContent-Type: application/json\r\n"
            );
            return (
                format!(
                    "POST /tines/api/v2/cases/{case}/files HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n",
                    body.len()
                ),
                body,
            );
        }
        Thalamus => (
            format!("/thalamus/api/v4/cases/{case}/files?touchpoint=t&token={CLIENT_TOKEN}"),
            String::new(),
            file_part("wire.pdf"),
        ),
        Caseiq => {
            let token = caseiq_token(&h.http, &format!("{}/caseiq", h.base()), CLIENT_TOKEN).await;
            (
                "/caseiq/api-public/1.0/save_file".to_string(),
                format!("Authorization: Bearer {token}\r\n"),
                format!(
                    "--cgB\r\nContent-Disposition: form-data; name=\"caseId\"\r\n\r\n{case}\r\n{}",
                    file_part("wire.pdf")
                ),
            )
        }
        Kibana => (
            format!("/kibana/api/cases/{case}/files"),
            format!("kbn-xsrf: true\r\nAuthorization: ApiKey {CLIENT_TOKEN}\r\n"),
            file_part("wire.pdf"),
        ),
    };
    let mut bytes = std::mem::take(&mut body).into_bytes();
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n");
    if !extra.is_empty() {
        bytes.extend_from_slice(file_part(extra).as_bytes());
        bytes.extend_from_slice(b"more\r\n");
    }
    bytes.extend_from_slice(b"--cgB--\r\n");
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=cgB\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    (head, bytes)
}

/// Writes `head` and `body` on a new connection, the body's second half `pause` after
/// the rest, and reads the answer to the connection's close: (status, whole answer).
async fn send_raw(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
    pause: Option<Duration>,
) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = head.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n");
    let mut first = head.into_bytes();
    match pause {
        None => {
            first.extend_from_slice(body);
            s.write_all(&first).await.unwrap();
        }
        Some(pause) => {
            let half = body.len() / 2;
            first.extend_from_slice(&body[..half]);
            s.write_all(&first).await.unwrap();
            tokio::time::sleep(pause).await;
            s.write_all(&body[half..]).await.unwrap();
        }
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The upload call the upstream received (its file-carrying request).
fn upload_call(h: &Harness) -> emulator::RecordedCall {
    let calls = h.upstream.calls();
    calls
        .iter()
        .rev()
        .find(|c| {
            c.method == "POST" && (c.path.ends_with("/files") || c.path.ends_with("/save_file"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no upload among {calls:?}"))
}

/// An upload whose body has all arrived when casegate starts the upstream request goes
/// out with an exact `Content-Length`, as the client's did, not chunked; one whose body
/// is still arriving streams chunked. Both store the client's bytes exactly, in every
/// kind of translation (multipart to multipart, to base64 and from it).
#[tokio::test]
async fn an_upload_that_arrived_whole_goes_upstream_with_its_length() {
    let pairs = [
        (Caseiq, Caseiq),
        (Thalamus, Tines),
        (Tines, Thalamus),
        (Tines, Kibana),
        (Kibana, Caseiq),
        (Tines, Tines),
    ];
    for (front, back) in pairs {
        let h = setup(&[front], back, Opts::default()).await;
        for (n, pause) in [(0u64, None), (1, Some(Duration::from_millis(300)))] {
            let data = random_bytes(4096, 50 + n);
            let (head, body) = wire_upload(&h, front, &data, "").await;
            let (status, answer) = send_raw(h.casegate.addr(), &head, &body, pause).await;
            assert_eq!(status, 200, "{front}->{back}: {answer}");
            let call = upload_call(&h);
            let framing = (
                call.header("content-length").map(str::to_string),
                call.header("transfer-encoding").map(str::to_string),
            );
            match pause {
                None => {
                    let len: u64 = framing
                        .0
                        .as_deref()
                        .unwrap_or_else(|| {
                            panic!("{front}->{back}: no Content-Length: {:?}", call.headers)
                        })
                        .parse()
                        .unwrap();
                    assert!(len > 4096, "{front}->{back}: {len}");
                    assert_eq!(framing.1, None, "{front}->{back}: {:?}", call.headers);
                }
                Some(_) => assert_eq!(
                    framing,
                    (None, Some("chunked".to_string())),
                    "{front}->{back}: a body still arriving streams: {:?}",
                    call.headers
                ),
            }
            let files = h.upstream.files();
            let stored = files.last().unwrap();
            assert_eq!(stored.sha256, sha256_hex(&data), "{front}->{back}");
            assert_eq!(stored.size, 4096, "{front}->{back}");
            assert_eq!(files.len() as u64, n + 1, "{front}->{back}");
        }
        h.stop().await;
    }
}

/// Whether an answer's head says the connection closes after it.
fn says_close(answer: &str) -> bool {
    answer
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
}

/// Reads from `s` until `got` holds a whole first answer (or, with `interim`, a head
/// ending the first blank line, as a `100 Continue` does); returns that many bytes as text
/// and keeps whatever came after in `got`.
async fn read_one(s: &mut tokio::net::TcpStream, got: &mut Vec<u8>, interim: bool) -> String {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let len = if interim {
            got.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|end| end + 4)
        } else {
            framed_answer_len(got)
        };
        if let Some(len) = len.filter(|&len| got.len() >= len) {
            let rest = got.split_off(len);
            let one = String::from_utf8_lossy(got).into_owned();
            *got = rest;
            return one;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("an answer within 20 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// A body over 1 MiB sent as curl sends one: the head with `Expect: 100-continue`, and
/// the body only after casegate's `100 Continue`. It is stored byte for byte, in each
/// kind of translation, and the connection is kept.
#[tokio::test]
async fn an_upload_that_expects_100_continue_is_told_to_go_on() {
    use tokio::io::AsyncWriteExt;
    let pairs = [
        (Kibana, Caseiq),
        (Tines, Thalamus),
        (Caseiq, Tines),
        (Thalamus, Kibana),
    ];
    for (front, back) in pairs {
        let h = setup(&[front], back, Opts::default()).await;
        let data = random_bytes(3 << 20, 70);
        let (head, body) = wire_upload(&h, front, &data, "").await;
        let head = head.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nExpect: 100-continue\r\n");
        let mut s = tokio::net::TcpStream::connect(h.casegate.addr())
            .await
            .unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let interim = read_one(&mut s, &mut got, true).await;
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n", "{front}->{back}");
        s.write_all(&body).await.unwrap();
        let answer = read_one(&mut s, &mut got, false).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 "),
            "{front}->{back}: {answer}"
        );
        assert!(!says_close(&answer), "{front}->{back}: {answer}");
        let files = h.upstream.files();
        assert_eq!(files.len(), 1, "{front}->{back}");
        assert_eq!(files[0].sha256, sha256_hex(&data), "{front}->{back}");
        h.stop().await;
    }
}

/// An upload that expects `100 Continue` but is refused from its head (a wrong
/// credential) is answered at once, with no `100` before the refusal, and its connection
/// closed (`Connection: close`): curl then never sends the body, and a client's next
/// request on that connection would otherwise have been read as the body it never sent.
/// One refused in its body, after the `100`, is answered while the client still sends,
/// and closed once the body is read.
#[tokio::test]
async fn an_upload_refused_before_its_100_continue_closes_its_connection() {
    use tokio::io::AsyncWriteExt;
    for front in [Tines, Kibana, Thalamus] {
        let h = setup(&[front], Caseiq, Opts::default()).await;
        let (head, _) = wire_upload(&h, front, &random_bytes(3 << 20, 71), "").await;
        let head = head
            .replace(CLIENT_TOKEN, "not-the-token")
            .replace("HTTP/1.1\r\n", "HTTP/1.1\r\nExpect: 100-continue\r\n");
        let mut s = tokio::net::TcpStream::connect(h.casegate.addr())
            .await
            .unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let answer = read_one(&mut s, &mut got, false).await;
        assert!(answer.starts_with("HTTP/1.1 401 "), "{front}: {answer}");
        assert!(says_close(&answer), "{front}: {answer}");
        // The connection ends after the answer, with nothing more said.
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
            .await
            .expect("the connection closed")
            .unwrap();
        assert!(
            got.is_empty(),
            "{front}: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(h.upstream.uploads(), 0, "{front}: the upload was sent");
        h.stop().await;
    }
    // Refused in its body, after the `100 Continue`: the client is still sending when the
    // refusal comes, and reads it whole before the connection ends.
    let h = setup(&[Kibana], Caseiq, Opts::default()).await;
    let mut body = b"--cgB\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    body.extend_from_slice(&random_bytes(3 << 20, 72));
    body.extend_from_slice(b"\r\n--cgB--\r\n");
    let head = format!(
        "POST /kibana/api/cases/{}/files HTTP/1.1\r\nHost: x\r\nkbn-xsrf: true\r\n\
         Authorization: ApiKey {CLIENT_TOKEN}\r\nExpect: 100-continue\r\n\
         Content-Type: multipart/form-data; boundary=cgB\r\nContent-Length: {}\r\n\r\n",
        case_id_for(Caseiq),
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(h.casegate.addr())
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let interim = read_one(&mut s, &mut got, true).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
        wr
    });
    // Whatever came after the `100` is the start of the answer.
    let mut all = got;
    tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut all))
        .await
        .expect("the connection closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&all).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(says_close(&answer), "{answer}");
    assert_eq!(Some(all.len()), framed_answer_len(&all), "{answer}");
    drop(writer.await.unwrap());
    assert!(h.upstream.files().is_empty());
    h.stop().await;
}

/// A bad form that has all arrived (a second file after the first) is refused before the
/// upstream hears of it; one whose bad part is still arriving has its upstream request
/// aborted (the upload starts, nothing is stored).
#[tokio::test]
async fn a_bad_upload_that_arrived_whole_is_refused_before_anything_is_sent() {
    for (front, back) in [(Thalamus, Tines), (Caseiq, Caseiq), (Kibana, Thalamus)] {
        let h = setup(&[front], back, Opts::default()).await;
        let data = random_bytes(4096, 60);
        let (head, body) = wire_upload(&h, front, &data, "second.pdf").await;
        let (status, answer) = send_raw(h.casegate.addr(), &head, &body, None).await;
        assert_eq!(status, 400, "{front}->{back}: {answer}");
        assert!(
            answer.contains("casegate-error: bad_request\r\n"),
            "{front}->{back}: {answer}"
        );
        assert_eq!(
            h.upstream.uploads(),
            0,
            "{front}->{back}: the upload was sent"
        );
        let (status, answer) = send_raw(
            h.casegate.addr(),
            &head,
            &body,
            Some(Duration::from_millis(300)),
        )
        .await;
        assert_eq!(status, 400, "{front}->{back}: {answer}");
        assert_eq!(
            h.upstream.uploads(),
            1,
            "{front}->{back}: the upload streamed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            h.upstream.files().is_empty(),
            "{front}->{back}: a file was stored"
        );
        h.stop().await;
    }
}
