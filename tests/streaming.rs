//! Streaming guarantees (SPEC section 5): a slow upstream slows the client instead of
//! filling casegate's memory; a client that disconnects mid-upload leaves no file
//! upstream and no temp file behind; a chunked body that crosses the limit mid-stream is
//! cut, the upstream request aborted, and the client told 413 in its dialect.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
