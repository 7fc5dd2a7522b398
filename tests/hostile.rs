//! Hostile clients: file names built to break headers, JSON or paths; oversized and
//! over-numerous headers; request smuggling; a slowloris connection. None of it may crash
//! casegate, reach an upstream raw, or slow down other clients.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use casegate::dialect::DialectId;
use common::*;

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
    let r = send(
        &h.http,
        Tines,
        &format!("{}/tines", h.base()),
        &small_upload(Tines),
        Cred::Good,
    )
    .await;
    assert_eq!(r.status, 200);
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
        let r = send(
            &h.http,
            Tines,
            &format!("{}/tines", h.base()),
            &small_upload(Tines),
            Cred::Good,
        )
        .await;
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
