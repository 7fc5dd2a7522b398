//! Hostile clients: file names built to break headers, JSON or paths; oversized and
//! over-numerous headers; request smuggling; a slowloris connection; TLS handshakes that
//! never finish; HTTP/2's resets and floods; floods whose answers are never read. None of it may crash casegate, reach an
//! upstream raw, or slow down other clients.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use casegate::dialect::DialectId;
use common::*;

/// A small upload through the harness's Tines route, sent with `http`.
async fn small_tines_upload(http: &reqwest::Client, h: &Harness) -> Reply {
    let base = format!("{}/tines", h.base());
    send(http, Tines, &base, &small_upload(Tines), Cred::Good).await
}

/// Raw HTTP/1.1 over a socket (off the runtime's thread); returns the answer as text.
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let request = request.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn hostile_file_names_are_made_safe_or_refused() {
    for back in DialectId::ALL {
        let h = setup(&[Tines, Kibana], back, Opts::default()).await;
        // (name sent, what the upstream must store, or None for a 400)
        let cases: Vec<(String, Option<&str>)> = vec![
            ("../../etc/passwd.txt".into(), Some("passwd.txt")),
            ("C:\\Users\\x\\report.txt".into(), Some("report.txt")),
            ("quote\"d.txt".into(), Some("quote\"d.txt")),
            ("semi;colon=x.txt".into(), Some("semi;colon=x.txt")),
            (
                "Prüfbericht ü 2026.pdf".into(),
                Some("Prüfbericht ü 2026.pdf"),
            ),
            ("a\r\nContent-Type: text/html\r\n\r\nx.txt".into(), None),
            ("nul\0byte.txt".into(), None),
            ("tab\there.txt".into(), None),
            (format!("{}.txt", "n".repeat(300)), None),
            ("..".into(), None),
            ("dir/".into(), None),
        ];
        for front in [Tines, Kibana] {
            for (name, want) in &cases {
                // Kibana clients put the name in a multipart header, where CR/LF/NUL cannot
                // be sent raw by a well-formed client; test those through Tines JSON only.
                if front == Kibana && name.chars().any(|c| c.is_control()) {
                    continue;
                }
                let mut up = small_upload(back);
                up.file_name = name.clone();
                let base = format!("{}{}", h.base(), Harness::prefix(front));
                let before = h.upstream.files().len();
                let r = send(&h.http, front, &base, &up, Cred::Good).await;
                match want {
                    Some(stored) => {
                        assert_eq!(r.status, 200, "{front}->{back} {name:?}: {}", r.text());
                        let f = h.upstream.files().pop().unwrap();
                        assert_eq!(f.name, *stored, "{front}->{back} {name:?}");
                        assert_eq!(f.sha256, sha256_hex(&up.data));
                    }
                    None => {
                        assert_error(front, &r, 400, "bad_request", false);
                        assert_eq!(h.upstream.files().len(), before, "{front}->{back} {name:?}");
                    }
                }
            }
        }
        h.stop().await;
    }
}

#[tokio::test]
async fn multipart_name_forms_invalid_utf8_and_rfc5987() {
    let h = setup(&[Thalamus], Tines, Opts::default()).await;
    let path = format!("/thalamus/api/v4/cases/1/files?touchpoint=t&token={CLIENT_TOKEN}");
    let request = |disposition: &[u8]| {
        let mut body = b"--B\r\nContent-Disposition: ".to_vec();
        body.extend_from_slice(disposition);
        body.extend_from_slice(b"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B--\r\n");
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req
    };
    let addr = h.casegate.addr();
    let ok = raw_http(addr, &request(b"form-data; name=\"file\"; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(h.upstream.files().pop().unwrap().name, "€ rates.txt");
    let bad = raw_http(
        addr,
        &request(b"form-data; name=\"file\"; filename=\"\xff\xfe.txt\""),
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let bad = raw_http(
        addr,
        &request(b"form-data; name=\"file\"; filename*=UTF-8''%FF.txt"),
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert_eq!(
        h.upstream.files().len(),
        1,
        "only the good upload was stored"
    );
    h.stop().await;
}

#[tokio::test]
async fn header_abuse_and_smuggling_are_refused() {
    let h = setup(&[Tines], Tines, Opts::default()).await;
    let addr = h.casegate.addr();
    // Too many header fields.
    let mut many = String::from("POST /tines/api/v2/cases/1/files HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Content-Length: 0\r\n\r\n");
    let r = raw_http(addr, many.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // A huge header.
    let big = format!(
        "POST /tines/api/v2/cases/1/files HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let r = raw_http(addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431") || r.is_empty(), "{r}");
    // Content-Length and Transfer-Encoding together: hyper frames the body by
    // Transfer-Encoding alone and closes the connection after answering (RFC 9112 6.1), so
    // the request smuggled behind it is never served.
    let body = r#"{"filename":"a.txt","file_contents":"aGk="}"#;
    let smuggle = format!(
        "POST /tines/api/v2/cases/1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\nPOST /tines/api/v2/cases/2/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        body.len()
    );
    let r = raw_http(addr, smuggle.as_bytes()).await;
    assert_eq!(
        r.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request was served: {r}"
    );
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    assert_eq!(h.upstream.uploads(), 1);
    // Two Content-Length values.
    let r = raw_http(
        addr,
        b"POST /tines/api/v2/cases/1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    ).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert_eq!(h.upstream.uploads(), 1);
    // casegate still serves.
    let r = small_tines_upload(&h.http, &h).await;
    assert_eq!(r.status, 200);
    h.stop().await;
}

/// Framings a server and the proxy before it could read differently (request smuggling's
/// raw material) are refused with 400 before anything reaches the upstream, and the
/// request pipelined behind each is never served.
#[tokio::test]
async fn ambiguous_framings_are_refused_before_the_upstream() {
    let h = setup(&[Tines], Tines, Opts::default()).await;
    let body = r#"{"filename":"a.txt","file_contents":"aGk="}"#;
    let head = format!(
        "POST /tines/api/v2/cases/1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
         {CLIENT_TOKEN}\r\nContent-Type: application/json\r\n"
    );
    // A whole upload, pipelined behind each: served only if the framing was misread.
    let behind = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    let (len, chunked) = (
        body.len(),
        format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()),
    );
    let framings = [
        ("chunked not last", format!("Transfer-Encoding: chunked, identity\r\nContent-Length: {}\r\n\r\n{chunked}", chunked.len())),
        ("an unknown coding", format!("Transfer-Encoding: xchunked\r\nContent-Length: {len}\r\n\r\n{body}")),
        ("two Transfer-Encoding fields", format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked}")),
        ("a space before the colon", format!("Transfer-Encoding : chunked\r\nContent-Length: {len}\r\n\r\n{body}")),
        ("a folded line", format!("Transfer-Encoding:\r\n chunked\r\nContent-Length: {len}\r\n\r\n{body}")),
        ("a signed length", format!("Content-Length: +{len}\r\n\r\n{body}")),
        ("a list of lengths", format!("Content-Length: {len}, {len}\r\n\r\n{body}")),
        ("a chunk size past 64 bits", format!("Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff{len:x}\r\n{body}\r\n0\r\n\r\n")),
        ("chunk lines ended by a bare LF", format!("Transfer-Encoding: chunked\r\n\r\n{len:x}\n{body}\n0\n\n")),
        ("a bare CR in a field", format!("X-A: a\rb\r\nContent-Length: {len}\r\n\r\n{body}")),
        ("a NUL in a field", format!("X-A: a\0b\r\nContent-Length: {len}\r\n\r\n{body}")),
    ];
    for (name, rest) in framings {
        let r = raw_http(
            h.casegate.addr(),
            format!("{head}{rest}{behind}").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{name}: {r}");
        assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "{name}: {r}");
        assert_eq!(h.upstream.uploads(), 0, "{name}: reached the upstream");
    }
    // HTTP/1.0 has no chunked coding (RFC 9112 section 6.1).
    let r = raw_http(
        h.casegate.addr(),
        format!(
            "{}Transfer-Encoding: chunked\r\n\r\n{chunked}{behind}",
            head.replace("HTTP/1.1", "HTTP/1.0")
        )
        .as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400 "), "HTTP/1.0 chunked: {r}");
    assert_eq!(h.upstream.uploads(), 0);
    h.stop().await;
}

#[tokio::test]
async fn a_slowloris_connection_does_not_delay_others() {
    let h = setup(&[Tines], Tines, Opts::default()).await;
    let addr = h.casegate.addr();
    // Many connections that send a header byte now and then and never finish.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /tines/api/v2/cases/1/files HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        slow.push(s);
    }
    let trickle = std::thread::spawn(move || {
        for _ in 0..10 {
            for s in &mut slow {
                let _ = s.write_all(b"a");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        slow
    });
    let started = Instant::now();
    for _ in 0..10 {
        let r = small_tines_upload(&h.http, &h).await;
        assert_eq!(r.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "uploads waited behind slow clients: {:?}",
        started.elapsed()
    );
    drop(trickle.join().unwrap());
    h.stop().await;
}

/// Connections to the HTTPS listener that never finish their TLS handshake (silent after
/// connecting, a ClientHello cut short, one silent for 5 s and then trickled a byte at a
/// time) hold nobody up and are closed once the handshake's time
/// ([`casegate::server::TLS_HANDSHAKE_TIMEOUT`]) is spent, counted from the connection's
/// start, however late or slowly its bytes come.
#[tokio::test]
async fn tls_handshakes_that_never_finish_are_ended_and_delay_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let o = Opts {
        extra_top_keys: format!("tls_cert = {cert:?}\ntls_key = {key:?}"),
        ..Opts::default()
    };
    let h = setup(&[Tines], Tines, o).await;
    let addr = h.casegate.addr();
    // A TLS record header (a handshake of 256 bytes), then the start of a ClientHello.
    let hello_start: &[u8] = &[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03];
    let stalled: Vec<std::thread::JoinHandle<(&str, Duration, String)>> = (0..30)
        .map(|i| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                let kind = match i % 3 {
                    0 => "silent",
                    1 => {
                        s.write_all(hello_start).unwrap();
                        "cut short"
                    }
                    _ => "trickled",
                };
                let step = Duration::from_millis(500);
                let mut sent = 0;
                let mut buf = [0u8; 512];
                loop {
                    // Trickled: after 5 s, a byte of the ClientHello each half second, the
                    // record never complete; the others only wait.
                    if kind == "trickled"
                        && started.elapsed() >= Duration::from_secs(5)
                        && sent < hello_start.len()
                    {
                        let _ = s.write_all(&hello_start[sent..=sent]);
                        sent += 1;
                    }
                    s.set_read_timeout(Some(step)).unwrap();
                    let end = match s.read(&mut buf) {
                        Ok(0) => "closed".to_string(),
                        Ok(n) => format!("{n} bytes"),
                        // A read timeout (`WouldBlock` on Linux, `TimedOut` elsewhere).
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            if started.elapsed() > Duration::from_secs(20) {
                                "still open after 20 s".to_string()
                            } else {
                                continue;
                            }
                        }
                        Err(e) => format!("closed: {}", e.kind()),
                    };
                    return (kind, started.elapsed(), end);
                }
            })
        })
        .collect();
    // Meanwhile HTTPS uploads go through at once.
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{}/tines", addr.port());
    let started = Instant::now();
    for _ in 0..10 {
        let r = send(&https, Tines, &base, &small_upload(Tines), Cred::Good).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "uploads waited behind stalled handshakes: {:?}",
        started.elapsed()
    );
    assert_eq!(h.upstream.uploads(), 10);
    let ended = tokio::task::spawn_blocking(move || {
        stalled
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let limit = casegate::server::TLS_HANDSHAKE_TIMEOUT;
    for (kind, after, end) in ended {
        assert!(end.starts_with("closed"), "{kind}: {end} after {after:?}");
        assert!(
            after >= limit - Duration::from_millis(500) && after < limit + Duration::from_secs(3),
            "{kind}: closed after {after:?}, not at the handshake's limit ({limit:?})"
        );
    }
    h.stop().await;
}

/// Reads one HTTP/1.1 answer with a `Content-Length` from `s`: its status and body.
fn read_answer(s: &mut std::net::TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("an answer before the read timeout");
        assert!(n > 0, "casegate closed the connection: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let Some(len) = framed_answer_len(&got) else {
            continue;
        };
        if got.len() >= len {
            assert_eq!(got.len(), len, "more than one answer");
            let text = String::from_utf8_lossy(&got).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            return (head[9..12].parse().unwrap(), body.to_owned());
        }
    }
}

/// A request answered before its body has arrived (a wrong credential is refused from the
/// head) leaves its connection serving: the part of the body casegate held when it
/// answered, the rest sent after the answer, and then the next request, which is
/// answered on the same connection. Each round sends the body in two writes, so
/// casegate holds a first piece of it when it answers.
#[tokio::test]
async fn a_connection_answered_before_its_body_arrived_serves_its_next_request() {
    let h = setup(&[Tines], Tines, Opts::default()).await;
    let addr = h.casegate.addr();
    let body = format!(
        "{{\"file\": {{\"filename\": \"a.txt\", \"content\": \"{}\"}}}}",
        "QUJD".repeat(5000)
    );
    let head = format!(
        "POST /tines/api/v2/cases/1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let rounds = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let (first, rest) = body.as_bytes().split_at(1000);
        let mut answers = Vec::new();
        for _ in 0..5 {
            s.write_all(&[head.as_bytes(), first].concat()).unwrap();
            let answer = read_answer(&mut s);
            s.write_all(rest).unwrap();
            answers.push(answer);
        }
        answers
    })
    .await
    .unwrap();
    assert_eq!(rounds.len(), 5);
    for (status, body) in rounds {
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("error"), "{body}");
    }
    h.stop().await;
}

/// One HTTP/2 frame (RFC 9113 section 4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 7;
const ENHANCE_YOUR_CALM: u32 = 11;

/// The client preface and an empty SETTINGS frame: an h2c connection's first bytes.
fn h2_preface() -> Vec<u8> {
    let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    wire.extend(h2_frame(SETTINGS, 0, 0, &[]));
    wire
}

/// The HPACK block of a Tines upload's head (`POST`, `http` indexed; the path, the
/// authority, the client's credential and the content type as literals without indexing),
/// with `more` after it.
fn h2_upload_head(path: &str, more: &[u8]) -> Vec<u8> {
    let literal = |b: &mut Vec<u8>, name_index: &[u8], value: &[u8]| {
        b.extend_from_slice(name_index);
        b.push(u8::try_from(value.len()).unwrap());
        b.extend_from_slice(value);
    };
    let mut b = vec![0x83, 0x86];
    literal(&mut b, &[0x04], path.as_bytes());
    literal(&mut b, &[0x01], b"x");
    literal(
        &mut b,
        &[0x0f, 0x08],
        format!("Bearer {CLIENT_TOKEN}").as_bytes(),
    );
    literal(&mut b, &[0x0f, 0x10], b"application/json");
    b.extend_from_slice(more);
    b
}

/// What the server sent on an HTTP/2 connection until it closed it (or 10 s passed).
#[derive(Debug, Default)]
struct H2Seen {
    /// Its RST_STREAM frames, counted by error code.
    resets: std::collections::BTreeMap<u32, usize>,
    /// Its GOAWAY's error code.
    goaway: Option<u32>,
    closed: bool,
}

/// Sends `wire` on a new connection to `addr` and reads the server's frames meanwhile.
async fn h2_attack(addr: std::net::SocketAddr, wire: Vec<u8>) -> H2Seen {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap()
        .into_split();
    // The server may close the connection before it has read everything: a failed write
    // is part of the outcome, not the test's failure.
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&wire).await;
        w
    });
    let mut seen = H2Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut head = [0u8; 9];
        let read = tokio::time::timeout_at(deadline, r.read_exact(&mut head)).await;
        let Ok(read) = read else { break };
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if read.is_err() || r.read_exact(&mut payload).await.is_err() {
            seen.closed = true;
            break;
        }
        let code = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
        match head[3] {
            RST_STREAM => *seen.resets.entry(code(0)).or_default() += 1,
            GOAWAY => seen.goaway = Some(code(4)),
            _ => {}
        }
    }
    writer.abort();
    seen
}

/// HTTP/2's known abuses (the rapid reset of CVE-2023-44487, the resets a client
/// provokes of CVE-2025-8671, the CONTINUATION flood, a header block that decodes to
/// megabytes, more streams than allowed) each end at a bounded point, on the abusing
/// connection only: a client on another connection uploads meanwhile, and no abusing
/// stream leaves a file at the upstream.
#[tokio::test]
async fn http2_resets_and_floods_end_on_their_connection_alone() {
    let h = setup(&[Tines], Tines, Opts::default()).await;
    let addr = h.casegate.addr();
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let head = h2_upload_head(
        &format!("/tines/api/v2/cases/{}/files", case_id_for(Tines)),
        &[],
    );
    let streams = |n: u32, each: &dyn Fn(u32) -> Vec<u8>| {
        let mut wire = h2_preface();
        for id in (0..n).map(|i| 1 + 2 * i) {
            wire.extend(each(id));
        }
        wire
    };
    let mut attacks: Vec<(&str, Vec<u8>)> = Vec::new();
    // A stream opened and cancelled at once, over and over.
    attacks.push((
        "rapid reset",
        streams(2000, &|id| {
            let mut f = h2_frame(HEADERS, END_HEADERS, id, &head);
            f.extend(h2_frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
            f
        }),
    ));
    // A stream the server must reset (its window overflowed by the client), over and over.
    attacks.push((
        "provoked resets",
        streams(3000, &|id| {
            let mut f = h2_frame(HEADERS, END_HEADERS, id, &head);
            f.extend(h2_frame(
                WINDOW_UPDATE,
                0,
                id,
                &0x7fff_ffffu32.to_be_bytes(),
            ));
            f
        }),
    ));
    // A head that never ends: 2 MiB of CONTINUATION frames, each fifteen 1 KiB header fields.
    let mut wire = h2_preface();
    wire.extend(h2_frame(HEADERS, 0, 1, &head));
    let mut field = vec![0x00, 3, b'x', b'-', b'a', 0x7f, 0x81, 0x07];
    field.resize(field.len() + 1024, b'v');
    for _ in 0..136 {
        wire.extend(h2_frame(CONTINUATION, 0, 1, &field.repeat(15)));
    }
    attacks.push(("CONTINUATION flood", wire));
    // 16 KiB of header block that decodes to 48 MB: a 4 000-byte field put in the
    // dynamic table, then named by its index (one byte) 12 000 times.
    let mut bomb = vec![0x40, 3, b'x', b'-', b'b', 0x7f, 0xa1, 0x1e];
    bomb.resize(bomb.len() + 4000, b'v');
    bomb.resize(bomb.len() + 12_000, 0x80 | 62);
    let block = h2_upload_head(
        &format!("/tines/api/v2/cases/{}/files", case_id_for(Tines)),
        &bomb,
    );
    let mut wire = h2_preface();
    let pieces: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let end = if i + 1 == pieces.len() {
            END_HEADERS
        } else {
            0
        };
        wire.extend(h2_frame(kind, end, 1, piece));
    }
    attacks.push(("header bomb", wire));
    for (name, wire) in attacks {
        let seen = h2_attack(addr, wire).await;
        assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{name}: {seen:?}");
        assert!(seen.closed, "{name}: {seen:?}");
        let r = small_tines_upload(&h2c, &h).await;
        assert_eq!(r.status, 200, "an upload after the {name}: {}", r.text());
    }
    // More streams at once than a connection may have (their bodies never come): those
    // past the limit are refused, and the connection stays open for them.
    let seen = h2_attack(
        addr,
        streams(casegate::server::MAX_STREAMS + 100, &|id| {
            h2_frame(HEADERS, END_HEADERS, id, &head)
        }),
    )
    .await;
    assert_eq!(seen.resets, [(REFUSED_STREAM, 100)].into(), "{seen:?}");
    assert_eq!(seen.goaway, None, "{seen:?}");
    // Only the four good uploads reached the upstream.
    assert_eq!(h.upstream.files().len(), 4);
    h.stop().await;
}

/// A client that floods casegate with requests, pings or settings and never reads their answers
/// stops being read once its answers fill the connection, as any peer that does not read
/// is: casegate holds no growing queue for it, and other clients are served meanwhile.
#[tokio::test]
async fn a_flood_whose_answers_are_not_read_stops_being_read() {
    let h = setup(&[Tines], Tines, Opts::default()).await;
    let addr = h.casegate.addr();
    let (mut pings, mut settings) = (h2_preface(), h2_preface());
    let mut pipelined = Vec::new();
    for _ in 0..1_000_000 {
        pings.extend(h2_frame(PING, 0, 0, &[0; 8]));
        settings.extend(h2_frame(SETTINGS, 0, 0, &[]));
        pipelined.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let floods = [
        ("pings", pings),
        ("settings", settings),
        ("pipelined requests", pipelined),
    ];
    for (name, wire) in floods {
        use tokio::io::AsyncWriteExt;
        let (total, mut s) = (
            wire.len(),
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        );
        // Written in pieces until one is not taken within 2 s: casegate has stopped
        // reading (without that, the whole lot goes in well within that time).
        let mut taken = 0;
        for piece in wire.chunks(256 * 1024) {
            match tokio::time::timeout(Duration::from_secs(2), s.write_all(piece)).await {
                Ok(Ok(())) => taken += piece.len(),
                Ok(Err(e)) => panic!("{name}: casegate closed the connection: {e}"),
                Err(_) => break,
            }
        }
        assert!(taken < total, "{name}: all {total} bytes were read");
        let r = small_tines_upload(&h.http, &h).await;
        assert_eq!(r.status, 200, "an upload beside the {name}: {}", r.text());
        drop(s);
    }
    h.stop().await;
}
