//! The production edge (SPEC section 8), in process: TLS and HTTP/2 (on TLS by ALPN, and
//! h2c) carrying every pairing's upload and download byte for byte; the admin listener's
//! probes and metrics adding up after traffic; request ids kept or made, answered, and
//! sent upstream on every call a request makes.

mod common;

use std::collections::BTreeMap;

use casegate::dialect::DialectId;
use casegate::emulator::Emulator;
use common::*;

/// Emulators of every back dialect and a casegate with a route per pairing
/// (`{front}-to-{back}` at `/{front}-{back}`), `top` keys first.
async fn all_pairings(top: &str) -> (casegate::server::Running, Vec<Emulator>) {
    let emulators = every_back().await;
    let toml = pairings_toml(&emulators, top, |_, _| String::new());
    (start_casegate(&toml).await, emulators)
}

/// A front's download of a file it attached, with its credentials.
async fn download(
    http: &reqwest::Client,
    front: DialectId,
    base: &str,
    case: &str,
    id: &str,
) -> reqwest::Response {
    let req = match front {
        Thalamus => http.get(format!(
            "{base}/api/v4/cases/files/{id}?touchpoint=t&token={CLIENT_TOKEN}"
        )),
        Tines => http
            .get(format!("{base}/api/v2/cases/{case}/files/{id}/download"))
            .bearer_auth(CLIENT_TOKEN),
        Caseiq => {
            let token = caseiq_token(http, base, CLIENT_TOKEN).await;
            http.get(format!("{base}/api-public/1.0/attachment/{id}/attachment"))
                .bearer_auth(token)
        }
        Kibana => http
            .get(format!("{base}/api/files/files/casesFilesCases/{id}/blob"))
            .header("authorization", format!("ApiKey {CLIENT_TOKEN}")),
    };
    req.send().await.unwrap()
}

/// Every pairing uploads and downloads through `http`, whose answers must come in
/// `version`.
async fn every_pairing_over(
    http: &reqwest::Client,
    scheme: &str,
    cg: &casegate::server::Running,
    emulators: &[Emulator],
    version: reqwest::Version,
) {
    for (back, emu) in DialectId::ALL.into_iter().zip(emulators) {
        for front in DialectId::ALL {
            let ctx = format!("{front}->{back} over {version:?}");
            let base = format!("{scheme}://127.0.0.1:{}/{front}-{back}", cg.addr().port());
            let data = random_bytes(300_000, front as u64 * 7 + back as u64);
            let up = Up {
                case_id: case_id_for(back).into(),
                file_name: "report.pdf".into(),
                content_type: Some("application/pdf".into()),
                data: data.clone(),
                ..Default::default()
            };
            let r = send(http, front, &base, &up, Cred::Good).await;
            assert_eq!(r.status, 200, "{ctx}: {}", r.text());
            let stored = emu.files().pop().unwrap();
            assert_eq!(stored.sha256, sha256_hex(&data), "{ctx}: upload bytes");
            let id = answer_file_id(front, &r, &stored.id);
            let resp = download(http, front, &base, &up.case_id, &id).await;
            assert_eq!(resp.version(), version, "{ctx}");
            assert_eq!(resp.status(), 200, "{ctx}");
            assert_eq!(
                resp.headers()["content-length"].to_str().unwrap(),
                data.len().to_string(),
                "{ctx}"
            );
            let body = resp.bytes().await.unwrap();
            assert_eq!(
                sha256_hex(&body),
                sha256_hex(&data),
                "{ctx}: download bytes"
            );
        }
    }
}

#[tokio::test]
async fn tls_with_h2_and_http11_by_alpn_carries_every_pairing() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let top = format!("tls_cert = {:?}\ntls_key = {:?}", cert, key);
    let (cg, emulators) = all_pairings(&top).await;
    let ca = reqwest::Certificate::from_pem(&ca).unwrap();
    // ALPN offers h2 first: an HTTP/2 client.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    every_pairing_over(&h2, "https", &cg, &emulators, reqwest::Version::HTTP_2).await;
    // An HTTP/1.1-only client gets HTTP/1.1.
    let h1 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .unwrap();
    every_pairing_over(&h1, "https", &cg, &emulators, reqwest::Version::HTTP_11).await;
    // Plain HTTP on the TLS listener (`http://` for `https://`) is told so, in the
    // client's dialect, and its connection closed; nothing reaches an upstream.
    let stored: usize = emulators.iter().map(|e| e.files().len()).sum();
    let plain = client();
    for front in DialectId::ALL {
        let base = format!("http://{}/{front}-tines", cg.addr());
        let r = send(&plain, front, &base, &small_upload(Tines), Cred::Missing).await;
        let message = assert_error(front, &r, 400, "bad_request", false);
        if let Some(m) = message {
            assert_eq!(m, casegate::server::PLAIN_ON_TLS, "{front}");
        }
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{front}");
    }
    // HTTP/2 with prior knowledge too (no `Connection` field there).
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let base = format!("http://{}/tines-tines", cg.addr());
    let r = send(&h2c, Tines, &base, &small_upload(Tines), Cred::Missing).await;
    let message = assert_error(Tines, &r, 400, "bad_request", false);
    assert_eq!(message.as_deref(), Some(casegate::server::PLAIN_ON_TLS));
    let r = reply(
        plain
            .get(format!("http://{}/nowhere", cg.addr()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (400, casegate::server::PLAIN_ON_TLS.to_string())
    );
    assert_eq!(r.header("casegate-error").as_deref(), Some("bad_request"));
    assert_eq!(
        emulators.iter().map(|e| e.files().len()).sum::<usize>(),
        stored
    );
    cg.shutdown().await;
}

#[tokio::test]
async fn h2c_with_prior_knowledge_carries_every_pairing() {
    let (cg, emulators) = all_pairings("").await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    every_pairing_over(&h2c, "http", &cg, &emulators, reqwest::Version::HTTP_2).await;
    cg.shutdown().await;
}

/// One Prometheus sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        // Label values here hold no `,` or `"`.
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            map.insert(k.to_string(), v.trim_matches('"').to_string());
        }
        out.push((name.to_string(), map, value.parse().unwrap()));
    }
    out
}

/// The value of the one sample of `name` whose labels include `want`, or 0.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert!(matching.len() <= 1, "{name} {want:?}: {matching:?}");
    matching.first().copied().unwrap_or(0.0)
}

#[tokio::test]
async fn admin_probes_and_metrics_account_for_every_request() {
    let (cg, emulators) = all_pairings("admin_listen = \"127.0.0.1:0\"").await;
    let admin = format!("http://{}", cg.admin_addr().unwrap());
    let http = client();
    let get = |url: String| {
        let http = http.clone();
        async move { reply(http.get(url).send().await.unwrap()).await }
    };
    assert_eq!(get(format!("{admin}/healthz")).await.status, 200);
    assert_eq!(get(format!("{admin}/readyz")).await.status, 200);
    // /metrics is never on the public listener.
    let r = get(format!("http://{}/metrics", cg.addr())).await;
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("casegate_requests_total"));

    // One upload per pairing, and one refused request per front.
    let mut sizes = BTreeMap::new();
    for (back, emu) in DialectId::ALL.into_iter().zip(&emulators) {
        for front in DialectId::ALL {
            let base = format!("http://{}/{front}-{back}", cg.addr());
            let up = small_upload(back);
            let r = send(&http, front, &base, &up, Cred::Good).await;
            assert_eq!(r.status, 200, "{front}->{back}: {}", r.text());
            assert_eq!(emu.files().pop().unwrap().size, up.data.len() as u64);
            sizes.insert(format!("{front}-to-{back}"), up.data.len());
            let r = send(&http, front, &base, &up, Cred::Wrong).await;
            assert_eq!(r.header("casegate-error").as_deref(), Some("unauthorized"));
        }
    }
    let text = get(format!("{admin}/metrics")).await.text();
    let samples = parse_metrics(&text);
    for back in DialectId::ALL {
        for front in DialectId::ALL {
            let route = format!("{front}-to-{back}");
            let (f, b) = (front.name(), back.name());
            let ok = [
                ("route", route.as_str()),
                ("front", f),
                ("back", b),
                ("operation", "upload"),
                ("status", "200"),
                ("code", "-"),
            ];
            assert_eq!(
                value(&samples, "casegate_requests_total", &ok),
                1.0,
                "{route}\n{text}"
            );
            let refused = [
                ("route", route.as_str()),
                ("operation", "upload"),
                ("status", "401"),
                ("code", "unauthorized"),
            ];
            assert_eq!(
                value(&samples, "casegate_requests_total", &refused),
                1.0,
                "{route}\n{text}"
            );
            assert_eq!(
                value(
                    &samples,
                    "casegate_file_bytes_total",
                    &[("route", route.as_str()), ("direction", "upload")]
                ),
                sizes[&route] as f64,
                "{route}"
            );
            assert_eq!(
                value(
                    &samples,
                    "casegate_request_duration_seconds_count",
                    &[("route", route.as_str()), ("operation", "upload")]
                ),
                2.0,
                "{route}"
            );
            assert!(
                value(
                    &samples,
                    "casegate_upstream_duration_seconds_count",
                    &[("route", route.as_str()), ("back", b)]
                ) >= 1.0,
                "{route}"
            );
            assert_eq!(
                value(&samples, "casegate_in_flight", &[("route", route.as_str())]),
                0.0,
                "{route}"
            );
        }
    }
    // Every request is counted exactly once: the sum over all series is what was sent (16
    // uploads, 16 refusals, the 4 token requests of the Case IQ fronts' good uploads, and
    // the 404 of /metrics on the public listener).
    let total: f64 = samples
        .iter()
        .filter(|(n, _, _)| n == "casegate_requests_total")
        .map(|(_, _, v)| v)
        .sum();
    let tokens = value(
        &samples,
        "casegate_requests_total",
        &[("route", "caseiq-to-tines"), ("operation", "token")],
    );
    assert_eq!(
        tokens, 1.0,
        "one token request per Case IQ route's good upload"
    );
    assert_eq!(total, 16.0 + 16.0 + 4.0 + 1.0, "{text}");
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "casegate_ledger_errors_total",
        "casegate_ledger_available",
        "casegate_ledger_rows_waiting",
        "casegate_ledger_rows_lost_total",
        "casegate_log_lines_lost_total",
    ] {
        assert!(
            samples.iter().any(|(n, _, _)| n == family),
            "{family} missing"
        );
    }
    // Draining turns readiness off, liveness stays.
    cg.gateway().start_draining();
    assert_eq!(get(format!("{admin}/readyz")).await.status, 503);
    assert_eq!(get(format!("{admin}/healthz")).await.status, 200);
    cg.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_answered_and_sent_upstream_on_every_call() {
    // Tines clients to Kibana (the comment is a second call) and to Case IQ (a token fetch).
    for back in [Kibana, Caseiq] {
        let h = setup(&[Tines], back, Opts::default()).await;
        let base = format!("{}{}", h.base(), Harness::prefix(Tines));
        let mut up = small_upload(back);
        up.comment = Some("with a comment".into());
        let id = "client-chosen-id-42";
        let r = reply(
            h.http
                .post(format!("{base}/api/v2/cases/{}/files", up.case_id))
                .bearer_auth(CLIENT_TOKEN)
                .header("x-request-id", id)
                .json(&tines_body(&up))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("casegate-request-id").as_deref(), Some(id));
        let calls = h.upstream.calls();
        let ours: Vec<_> = calls
            .iter()
            .filter(|c| c.header("x-request-id") == Some(id))
            .collect();
        // The upload and its second call (Kibana's comment; Case IQ's token fetch).
        assert_eq!(ours.len(), 2, "{back}: {calls:?}");
        assert_eq!(calls.len(), ours.len(), "every call carries it: {calls:?}");
        if back == Caseiq {
            assert!(
                ours.iter().any(|c| c.path == "/auth/oauth2/token"),
                "{calls:?}"
            );
        } else {
            assert!(
                ours.iter().any(|c| c.path.ends_with("/comments")),
                "{calls:?}"
            );
        }
        // A read carries it too; a request without one gets a UUID, sent upstream.
        let r = reply(
            h.http
                .get(format!("{base}/api/v2/cases/{}/files", up.case_id))
                .bearer_auth(CLIENT_TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let made = r.header("casegate-request-id").unwrap();
        assert!(uuid::Uuid::try_parse(&made).is_ok(), "{made}");
        if back == Kibana {
            let last = h.upstream.calls().pop().unwrap();
            assert_eq!(last.header("x-request-id"), Some(made.as_str()), "{last:?}");
        }
        // An id that is not sane (too long, or not visible ASCII) is replaced.
        let long = "x".repeat(129);
        let r = reply(
            h.http
                .get(format!("{base}/api/v2/cases/{}/files", up.case_id))
                .bearer_auth(CLIENT_TOKEN)
                .header("x-request-id", &long)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let made = r.header("casegate-request-id").unwrap();
        assert!(uuid::Uuid::try_parse(&made).is_ok(), "{made}");
        h.stop().await;
    }
}

/// A connection's first bytes arriving apart (a byte, or the start of the HTTP/2 preface,
/// then the rest a moment later) are served as the protocol the whole says: casegate looks
/// at what came first without reading it, and leaves it to hyper-util's `auto` builder to
/// read on when it cannot tell yet.
#[tokio::test]
async fn first_bytes_arriving_apart_are_served_as_what_they_make() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cg, _emulators) = all_pairings("").await;
    let (addr, pause) = (cg.addr(), std::time::Duration::from_millis(150));
    // Writes `parts` on a new connection, `pause` apart.
    let connect = |parts: Vec<&'static [u8]>| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            s.write_all(part).await.unwrap();
        }
        s
    };
    let request: &'static [u8] =
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let mut answers = Vec::new();
    // HTTP/1.1, its "P" alone first (also how the HTTP/2 preface starts), then in one piece.
    for parts in [vec![&request[..1], &request[1..]], vec![request]] {
        let mut answer = Vec::new();
        connect(parts).await.read_to_end(&mut answer).await.unwrap();
        answers.push(
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(answers[0].starts_with("HTTP/1.1 404 "), "{answers:?}");
    assert_eq!(answers[0], answers[1]);
    // HTTP/2 with prior knowledge, the preface in two parts, then an empty SETTINGS frame:
    // the server's first frame is its own SETTINGS (type 4 on stream 0).
    let preface: &'static [u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let settings: &'static [u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let mut s = connect(vec![&preface[..10], &preface[10..]]).await;
    s.write_all(settings).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("no frame from the server")
        .unwrap();
    assert_eq!(head[3], 4, "the server's first frame: {head:?}");
    assert_eq!(&head[5..9], &[0, 0, 0, 0], "on stream 0: {head:?}");
    drop(s);
    cg.shutdown().await;
}

/// The literal fields of an HPACK header block, as (representation: `'n'` never indexed,
/// `'w'` without indexing, `'i'` with incremental indexing; the value's bytes as sent,
/// Huffman-coded or not). RFC 7541 section 6.
fn hpack_literals(block: &[u8]) -> Vec<(char, Vec<u8>)> {
    // An integer with an `n`-bit prefix at `block[*at]`, its continuation bytes after.
    fn int(block: &[u8], at: &mut usize, n: u32) -> usize {
        let max = (1usize << n) - 1;
        let mut v = usize::from(block[*at]) & max;
        *at += 1;
        if v == max {
            let mut shift = 0;
            loop {
                let b = block[*at];
                *at += 1;
                v += usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        v
    }
    // A string literal: (Huffman-coded?, its bytes).
    fn string<'a>(block: &'a [u8], at: &mut usize) -> (bool, &'a [u8]) {
        let huffman = block[*at] & 0x80 != 0;
        let len = int(block, at, 7);
        let bytes = &block[*at..*at + len];
        *at += len;
        (huffman, bytes)
    }
    let (mut at, mut out) = (0, Vec::new());
    while at < block.len() {
        let b = block[at];
        let (kind, prefix) = match b {
            _ if b & 0x80 != 0 => {
                int(block, &mut at, 7);
                continue;
            }
            _ if b & 0xc0 == 0x40 => ('i', 6),
            _ if b & 0xe0 == 0x20 => {
                int(block, &mut at, 5);
                continue;
            }
            _ if b & 0x10 != 0 => ('n', 4),
            _ => ('w', 4),
        };
        if int(block, &mut at, prefix) == 0 {
            string(block, &mut at);
        }
        out.push((kind, string(block, &mut at).1.to_vec()));
    }
    out
}

/// An HTTP/2 answer's request id, new in every answer, is a literal never indexed: left
/// out of the HPACK tables on both ends, where as an indexed literal it would evict a
/// field each answer and cost the encoder its table insert (bench/RESULTS.md, the
/// fifty-ninth round).
#[tokio::test]
async fn an_http2_answers_request_id_is_kept_out_of_the_header_tables() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cg, _emulators) = all_pairings("").await;
    let mut s = tokio::net::TcpStream::connect(cg.addr()).await.unwrap();
    // An id of eight `a`s: the answer's encoder Huffman-codes every string, and `a`'s code
    // is the five bits 00011 (RFC 7541 appendix B), so the id is sent as these five bytes.
    let id = b"aaaaaaaa";
    let coded: &[u8] = &[
        0b0001_1000,
        0b1100_0110,
        0b0011_0001,
        0b1000_1100,
        0b0110_0011,
    ];
    // GET /nowhere (`:method GET`, `:scheme http` indexed; `:path`, `:authority` and
    // `x-request-id` literals without indexing), on stream 1, ending it.
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/nowhere");
    block.extend_from_slice(&[0x01, 1, b'x', 0x00, 12]);
    block.extend_from_slice(b"x-request-id");
    block.push(8);
    block.extend_from_slice(id);
    let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    wire.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    wire.extend_from_slice(&[len[1], len[2], len[3], 1, 0x05, 0, 0, 0, 1]);
    wire.extend_from_slice(&block);
    s.write_all(&wire).await.unwrap();
    // Frames until the answer's HEADERS on stream 1.
    let block = loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut head))
            .await
            .expect("no answer from the server")
            .unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        if head[3] == 1 && head[5..9] == [0, 0, 0, 1] {
            let (flags, mut from, mut to) = (head[4], 0, len);
            if flags & 0x08 != 0 {
                from += 1;
                to -= usize::from(payload[0]);
            }
            if flags & 0x20 != 0 {
                from += 5;
            }
            assert_ne!(flags & 0x04, 0, "the answer's head in one frame: {head:?}");
            break payload[from..to].to_vec();
        }
    };
    let literals = hpack_literals(&block);
    let ours: Vec<char> = literals
        .iter()
        .filter(|(_, value)| value == coded)
        .map(|(kind, _)| *kind)
        .collect();
    assert_eq!(ours, ['n'], "the answer's literals: {literals:?}");
    drop(s);
    cg.shutdown().await;
}

/// With more workers than accept on the listening socket, the others serve the
/// connections the accepting ones hand them: every connection of a crowd held open at
/// once is answered.
#[tokio::test]
async fn connections_handed_between_workers_are_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let workers = casegate::workers::ACCEPTING + 2;
    let (cg, _emulators) = all_pairings(&format!("workers = {workers}\n")).await;
    // All open at once (each waits in casegate for its first bytes), so the accepting
    // workers, each busier than the two that do not accept, hand some of them over.
    let mut crowd = Vec::new();
    for _ in 0..4 * workers {
        crowd.push(tokio::net::TcpStream::connect(cg.addr()).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let request: &[u8] =
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let answers = futures_util::future::join_all(crowd.into_iter().map(|mut s| async move {
        s.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.read_to_end(&mut answer),
        )
        .await
        .expect("an answer")
        .unwrap();
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }))
    .await;
    assert_eq!(answers.len(), 4 * workers);
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 404 "), "{answers:?}");
    }
    cg.shutdown().await;
}
