//! `soak`: ten minutes (`--minutes N`; `--quick`: one) of mixed traffic through one
//! casegate process against upstreams that fail 10 % of their uploads. A third of the
//! requests are bad: malformed bodies, wrong credentials, files over the limit, and
//! uploads the client abandons mid-body. At the end:
//!
//! - casegate still answers;
//! - its RSS (VmRSS, what `ps` and an outside harness see) grew no more than 10 % after
//!   the warm-up (the first tenth of the run). RssAnon, the pages casegate allocated, is
//!   reported beside it, per tenth and in KiB: its base is small (about 2.5 MiB), so what
//!   happens to be in flight at a sample (one 256 KiB upload and its base64 is a tenth of
//!   it) moves its percentage more than any growth would; the tenths show whether it
//!   settles or climbs;
//! - its open file descriptors return to what they were before the traffic;
//! - every upload the upstreams stored was answered as a success, and every upload
//!   answered as a success was stored: each good upload carries a unique file, and the
//!   sha256 sets of both sides must be equal.
//!
//! The upstreams run in this process (strict emulators with `flaky=10`), so what they
//! stored can be counted exactly; casegate runs as its own process, so its memory and
//! descriptors are its own.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use casegate::codec::{b64, multipart};
use casegate::dialect::DialectId::{self, Caseiq, Kibana, Thalamus, Tines};
use casegate::emulator::{self, Emulator, Fault};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::dialects::{case_id, Pairing, CLIENT_TOKEN, UPSTREAM_TOKEN};
use crate::report::{num, Table};
use crate::runner::send_once;
use crate::{Options, Res};

/// One route per front, each to a different back.
const PAIRINGS: [Pairing; 4] = [
    Pairing::new(Thalamus, Tines),
    Pairing::new(Tines, Kibana),
    Pairing::new(Caseiq, Caseiq),
    Pairing::new(Kibana, Thalamus),
];

/// The limit casegate enforces here; "too large" requests send more.
const MAX_UPLOAD: u64 = 256 * 1024;
/// Concurrent clients.
const WORKERS: u64 = 8;
/// Pause between one client's requests, so the emulators' stores stay a few hundred MB.
const PACE: Duration = Duration::from_millis(10);
/// How often casegate's RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Longest wait for descriptors to return to their baseline after the traffic stops
/// (casegate's upstream pool closes a connection idle for 60 s at its next sweep, which
/// comes every 60 s).
const FD_SETTLE: Duration = Duration::from_secs(150);

/// What kind of request the n-th one is: two thirds good, one third bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    Malformed,
    WrongCredential,
    TooLarge,
    Abandoned,
}

fn kind(n: u64) -> Kind {
    match n % 12 {
        0 => Kind::Malformed,
        3 => Kind::WrongCredential,
        6 => Kind::TooLarge,
        9 => Kind::Abandoned,
        _ => Kind::Good,
    }
}

/// What a good upload's answer says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A success: the upstream stored the file.
    Stored,
    /// The upstream's failure passed on: 502, or Thalamus' 200 with the text FAILED.
    UpstreamFailed,
    /// Anything else.
    Other,
}

fn answer(status: hyper::StatusCode, body: &[u8]) -> Answer {
    match status.as_u16() {
        _ if status.is_success() && body != b"FAILED" => Answer::Stored,
        200 | 502 => Answer::UpstreamFailed,
        _ => Answer::Other,
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    sent: [u64; 5],
    good_ok: u64,
    good_failed: u64,
    bad_refused: u64,
    /// Bad requests answered 2xx, or good ones answered something unexpected.
    wrong: Vec<String>,
    succeeded: HashSet<String>,
    by_pairing: Vec<(String, String)>,
}

impl Tally {
    fn wrong(&mut self, what: String) {
        if self.wrong.len() < 20 {
            self.wrong.push(what);
        }
    }
}

/// A request ready to send.
struct Req {
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

fn hv(name: HeaderName, value: &str) -> Res<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value)
        .map(|v| (name, v))
        .map_err(|e| format!("bad header value {value:?}: {e}"))
}

/// A unique file of `len` bytes: the request number, then pseudo-random bytes from it.
fn file(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = n.to_le_bytes().to_vec();
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len.max(8));
    out
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The upload of `data` in `pairing`'s front dialect, spoiled as `kind` says.
fn request(pairing: Pairing, kind: Kind, n: u64, data: &[u8], caseiq_token: &str) -> Res<Req> {
    let p = pairing.prefix();
    // A case of its own per upload where an answer lists the whole case: the upstream's
    // (Thalamus, Kibana backs) or casegate's own, from its ledger (a Thalamus front lists
    // every file of the case it attached, up to 10 000). One case with every upload would
    // make each answer longer than the last, which measures the test, not casegate. Case
    // IQ's case ids are UUIDs the emulator knows; its answers list nothing.
    let own = n.to_string();
    let case = match (pairing.front, pairing.back) {
        (Caseiq, _) | (_, Caseiq) => case_id(pairing.front, pairing.back),
        (Thalamus, _) | (_, Thalamus | Kibana) => own.as_str(),
        (_, Tines) => case_id(pairing.front, pairing.back),
    };
    let secret = if kind == Kind::WrongCredential {
        "not-the-token"
    } else {
        CLIENT_TOKEN
    };
    let w = multipart::Writer::with_boundary(format!("soak-{}", data.len()));
    let ct = w.content_type();
    let name = "soak.pdf";
    let form = |fields: &[(&str, &str)]| {
        let mut body =
            multipart::whole_body(&w, fields, Some(("file", name, "application/pdf", data)))
                .to_vec();
        if kind == Kind::Malformed {
            // Cut before the closing delimiter: a broken form.
            body.truncate(body.len().saturating_sub(12));
        }
        Bytes::from(body)
    };
    Ok(match pairing.front {
        Thalamus => Req {
            path: format!("{p}/api/v4/cases/{case}/files?touchpoint=soak&token={secret}"),
            headers: vec![hv(CONTENT_TYPE, &ct)?],
            body: form(&[]),
        },
        Tines => {
            let mut enc = String::new();
            b64::encode_into(data, &mut enc);
            if kind == Kind::Malformed {
                enc.push('*');
            }
            let body = serde_json::json!({"filename": name, "file_contents": enc, "value": "soak", "author_email": null});
            Req {
                path: format!("{p}/api/v2/cases/{case}/files"),
                headers: vec![
                    hv(CONTENT_TYPE, "application/json")?,
                    hv(AUTHORIZATION, &format!("Bearer {secret}"))?,
                ],
                body: Bytes::from(body.to_string()),
            }
        }
        Caseiq => {
            let bearer = if kind == Kind::WrongCredential {
                "cgt1.1.2.3"
            } else {
                caseiq_token
            };
            let fields: &[(&str, &str)] = if kind == Kind::Malformed {
                &[("description", "no caseId")]
            } else {
                &[("caseId", case), ("description", "soak")]
            };
            Req {
                path: format!("{p}/api-public/1.0/save_file"),
                headers: vec![
                    hv(CONTENT_TYPE, &ct)?,
                    hv(AUTHORIZATION, &format!("Bearer {bearer}"))?,
                ],
                body: if kind == Kind::Malformed {
                    multipart::whole_body(&w, fields, Some(("file", name, "application/pdf", data)))
                } else {
                    form(fields)
                },
            }
        }
        Kibana => {
            let mut headers = vec![
                hv(CONTENT_TYPE, &ct)?,
                hv(AUTHORIZATION, &format!("ApiKey {secret}"))?,
            ];
            if kind != Kind::Malformed {
                headers.push(hv(HeaderName::from_static("kbn-xsrf"), "true")?);
            }
            Req {
                path: format!("{p}/api/cases/{case}/files"),
                headers,
                body: multipart::whole_body(
                    &w,
                    &[("filename", "soak")],
                    Some(("file", name, "application/pdf", data)),
                ),
            }
        }
    })
}

/// Sends the head and half the body of `req`, then drops the connection.
async fn abandon(addr: SocketAddr, req: &Req) -> Res<()> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        req.path,
        req.body.len()
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
    }
    head.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let half = &req.body[..req.body.len() / 2];
    // The server may refuse early (401); the point is only that the client goes away.
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(half).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

async fn caseiq_token(addr: SocketAddr) -> Res<String> {
    let body = serde_json::json!({"grant_type": "client_credentials", "client_id": "soak", "client_secret": CLIENT_TOKEN, "ttl": 3600});
    let path = format!(
        "{}/auth/oauth2/token",
        Pairing::new(Caseiq, Caseiq).prefix()
    );
    let (status, answer) = send_once(
        addr,
        &path,
        &[hv(CONTENT_TYPE, "application/json")?],
        Bytes::from(body.to_string()),
    )
    .await?;
    let v: serde_json::Value =
        serde_json::from_slice(&answer).map_err(|e| format!("token answer ({status}): {e}"))?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no access_token in the token answer ({status})"))
}

/// One client: requests back to back until `deadline`.
async fn client(
    addr: SocketAddr,
    worker: u64,
    next: Arc<AtomicU64>,
    deadline: Instant,
    tally: Arc<Mutex<Tally>>,
    only: Option<String>,
) -> Res<()> {
    let token = caseiq_token(addr).await?;
    while Instant::now() < deadline {
        let n = next.fetch_add(1, Relaxed);
        let mut k = kind(n);
        if only
            .as_deref()
            .is_some_and(|o| !format!("{k:?}").contains(o))
        {
            k = Kind::Good;
        }
        let pairing = PAIRINGS[((n / 12 + worker) % 4) as usize];
        if only
            .as_deref()
            .is_some_and(|o| o.contains("->") && pairing.to_string() != o)
        {
            continue;
        }
        let len = match k {
            Kind::TooLarge => MAX_UPLOAD as usize + 1 + (n % 4096) as usize,
            _ => 256 + (n.wrapping_mul(2654435761) % 8192) as usize,
        };
        let data = file(n, len);
        let req = request(pairing, k, n, &data, &token)?;
        let slot = [
            Kind::Good,
            Kind::Malformed,
            Kind::WrongCredential,
            Kind::TooLarge,
            Kind::Abandoned,
        ]
        .iter()
        .position(|x| *x == k)
        .unwrap_or(0);
        tally.lock().unwrap_or_else(|e| e.into_inner()).sent[slot] += 1;
        if k == Kind::Abandoned {
            abandon(addr, &req).await?;
            tokio::time::sleep(PACE).await;
            continue;
        }
        let result = send_once(addr, &req.path, &req.headers, req.body.clone()).await;
        {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            match (k, result) {
                (Kind::Good, Ok((status, body))) if answer(status, &body) == Answer::Stored => {
                    t.good_ok += 1;
                    t.succeeded.insert(sha256_hex(&data));
                }
                (Kind::Good, Ok((status, body)))
                    if answer(status, &body) == Answer::UpstreamFailed =>
                {
                    t.good_failed += 1
                }
                (Kind::Good, Ok((status, body))) => {
                    let msg = format!(
                        "{pairing} good upload answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                    t.wrong(msg)
                }
                (_, Ok((status, _))) if status.is_client_error() => t.bad_refused += 1,
                // Thalamus reports a client's mistakes with their status and FAILED.
                (_, Ok((status, body))) => {
                    let msg = format!(
                        "{pairing} {k:?} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                    t.wrong(msg)
                }
                (_, Err(e)) => t.wrong(format!("{pairing} {k:?}: {e}")),
            }
        }
        tokio::time::sleep(PACE).await;
    }
    Ok(())
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

pub async fn run(opts: &Options, minutes: Option<f64>) -> Res<()> {
    let minutes = minutes.unwrap_or(if opts.quick { 1.0 } else { 10.0 });
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let warmup = duration / 10;
    println!("{}", crate::report::machine_facts());

    // Upstreams, in this process: strict, failing 10 % of uploads.
    let mut upstreams: Vec<(DialectId, Emulator)> = Vec::new();
    for back in [Tines, Kibana, Caseiq, Thalamus] {
        let mut cfg = emulator::Config::new(back);
        cfg.tokens = vec![UPSTREAM_TOKEN.to_string()];
        cfg.fault = Some(Fault::Flaky(10));
        let emu = Emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| format!("cannot start the {back} emulator: {e}"))?;
        upstreams.push((back, emu));
    }
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).map_err(|e| format!("cannot create {}: {e}", spool.display()))?;
    let mut routes = format!(
        "listen = \"127.0.0.1:0\"\nmax_upload_bytes = {MAX_UPLOAD}\nspool_dir = {}\n",
        crate::stack::toml_string(&spool.to_string_lossy())
    );
    for p in PAIRINGS {
        let addr = upstreams
            .iter()
            .find(|(d, _)| *d == p.back)
            .map(|(_, e)| e.addr())
            .ok_or("no upstream")?;
        crate::stack::route_toml(&mut routes, p, addr);
    }
    let config = dir.path().join("routes.toml");
    std::fs::write(&config, routes)
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    crate::stack::check_config(&opts.casegate, &config)?;
    let (mut casegate, addr) =
        crate::stack::start_casegate(&opts.casegate, &config, crate::stack::CASEGATE_LOG)?;
    let pid = casegate.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = open_fds(pid).ok_or("cannot read casegate's /proc/PID/fd")?;

    eprintln!("soak: {minutes} min of mixed traffic through casegate (pid {pid}) at {addr}");
    let started = Instant::now();
    let deadline = started + duration;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(client(
                addr,
                w,
                next.clone(),
                deadline,
                tally.clone(),
                opts.only.clone(),
            ))
        })
        .collect();
    // (when, VmRSS, RssAnon) in KiB.
    let mut samples: Vec<(Duration, u64, u64)> = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(SAMPLE_EVERY).await;
        casegate.check_alive()?;
        if let (Some(rss), Some(anon)) = (
            proc_status_kib(pid, "VmRSS:"),
            proc_status_kib(pid, "RssAnon:"),
        ) {
            samples.push((started.elapsed(), rss, anon));
        }
    }
    for c in clients {
        c.await
            .map_err(|e| format!("a client task failed: {e}"))??;
    }

    // Still answers.
    let token = caseiq_token(addr).await?;
    let probe = request(PAIRINGS[0], Kind::Good, 1, &file(u64::MAX, 1000), &token)?;
    let (probe_status, probe_body) =
        send_once(addr, &probe.path, &probe.headers, probe.body).await?;
    // Judged like the clients' uploads. casegate answers when it gives the upload's
    // answer, success or the upstream's failure.
    let probe = answer(probe_status, &probe_body);
    let probe_stored = probe == Answer::Stored;
    let probe_answered = probe != Answer::Other;

    // Descriptors back to the baseline (the pool lets idle upstream connections go).
    let settle_start = Instant::now();
    let mut fds_after = open_fds(pid).unwrap_or(usize::MAX);
    while fds_after > fds_before && settle_start.elapsed() < FD_SETTLE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        fds_after = open_fds(pid).unwrap_or(usize::MAX);
    }
    let settle = settle_start.elapsed();
    if fds_after > fds_before {
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            let targets: Vec<String> = dir
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect();
            eprintln!("casegate's open descriptors: {}", targets.join(" "));
        }
    }

    // Both sides' counts.
    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    let stored: Vec<String> = upstreams
        .iter()
        .flat_map(|(_, e)| e.files())
        .map(|f| f.sha256)
        .collect();
    let stored_set: HashSet<String> = stored.iter().cloned().collect();
    let probe_sha = sha256_hex(&file(u64::MAX, 1000));
    let mut answered = t.succeeded.clone();
    if probe_stored {
        answered.insert(probe_sha);
    }
    let stored_not_answered = stored_set.difference(&answered).count();
    for (sha, p) in &t.by_pairing {
        if !stored_set.contains(sha) {
            eprintln!("answered success, not stored: {p}");
        }
    }
    let answered_not_stored = answered.difference(&stored_set).count();

    // The largest sample in [from, to]: of VmRSS (`anon` false) or RssAnon.
    let peak = |anon: bool, from: Duration, to: Duration| {
        samples
            .iter()
            .filter(|(at, _, _)| *at >= from && *at <= to)
            .map(|(_, rss, a)| if anon { *a } else { *rss })
            .max()
    };
    let end_from = duration.saturating_sub(warmup);
    let end_to = duration + SAMPLE_EVERY;
    let mem = |anon: bool| {
        let warm = peak(anon, Duration::ZERO, warmup).unwrap_or(0);
        let end = peak(anon, end_from, end_to).unwrap_or(0);
        let growth = if warm > 0 {
            (end as f64 / warm as f64 - 1.0) * 100.0
        } else {
            f64::NAN
        };
        // The peak of each tenth of the run, in MiB: shows whether it settles or climbs.
        let tenths: Vec<String> = (0..10u32)
            .map(|i| {
                peak(anon, warmup * i, warmup * (i + 1))
                    .map(|k| format!("{:.1}", k as f64 / 1024.0))
                    .unwrap_or_else(|| "-".into())
            })
            .collect();
        (warm, end, growth, tenths.join(" "))
    };
    let (rss_warm, rss_end, rss_growth, rss_tenths) = mem(false);
    let (anon_warm, anon_end, anon_growth, anon_tenths) = mem(true);
    let rss_max = samples.iter().map(|(_, r, _)| *r).max().unwrap_or(0);

    let total: u64 = t.sent.iter().sum();
    let mut table = Table::new(&["what", "count"]);
    let rows: Vec<(&str, String)> = vec![
        ("requests sent", total.to_string()),
        ("  good uploads", t.sent[0].to_string()),
        ("  malformed", t.sent[1].to_string()),
        ("  wrong credential", t.sent[2].to_string()),
        ("  over max_upload_bytes", t.sent[3].to_string()),
        ("  abandoned mid-body", t.sent[4].to_string()),
        (
            "bad share",
            format!(
                "{:.1} %",
                (total - t.sent[0]) as f64 * 100.0 / total.max(1) as f64
            ),
        ),
        ("good answered success", t.good_ok.to_string()),
        (
            "  + the final probe answered success",
            u8::from(probe_stored).to_string(),
        ),
        (
            "good answered failure (upstream 500 -> 502)",
            t.good_failed.to_string(),
        ),
        ("bad answered 4xx", t.bad_refused.to_string()),
        ("answers of the wrong kind", t.wrong.len().to_string()),
        ("files the upstreams stored", stored.len().to_string()),
        (
            "stored but not answered success",
            stored_not_answered.to_string(),
        ),
        (
            "answered success but not stored",
            answered_not_stored.to_string(),
        ),
        (
            "VmRSS after warm-up / at the end (KiB)",
            format!("{rss_warm} / {rss_end}"),
        ),
        (
            "VmRSS growth after warm-up",
            format!("{} %", num(Some(rss_growth), 1)),
        ),
        ("VmRSS max (KiB)", rss_max.to_string()),
        ("VmRSS peak per tenth of the run (MiB)", rss_tenths),
        (
            "RssAnon after warm-up / at the end (KiB)",
            format!("{anon_warm} / {anon_end}"),
        ),
        (
            "RssAnon growth after warm-up",
            format!(
                "{} % ({} KiB)",
                num(Some(anon_growth), 1),
                anon_end as i64 - anon_warm as i64
            ),
        ),
        ("RssAnon peak per tenth of the run (MiB)", anon_tenths),
        (
            "open fds before / after",
            format!(
                "{fds_before} / {fds_after} (after {:.0} s idle)",
                settle.as_secs_f64()
            ),
        ),
        ("answers at the end", probe_status.to_string()),
    ];
    for (k, v) in rows {
        table.row(vec![k.to_string(), v]);
    }
    println!("{}", table.render(opts.markdown));
    for w in &t.wrong {
        println!("wrong: {w}");
    }
    let checks = [
        ("casegate still answers", probe_answered),
        ("RSS grew at most 10 % after warm-up", rss_growth <= 10.0),
        ("file descriptors back to baseline", fds_after <= fds_before),
        (
            "stored == answered success (both ways)",
            stored_not_answered == 0
                && answered_not_stored == 0
                && stored.len() == stored_set.len(),
        ),
        ("every answer of the right kind", t.wrong.is_empty()),
    ];
    let mut ok = true;
    for (what, pass) in checks {
        println!("{what}: {}", if pass { "yes" } else { "NO" });
        ok &= pass;
    }
    drop(casegate);
    for (_, e) in upstreams {
        e.shutdown().await;
    }
    if ok {
        Ok(())
    } else {
        Err("the soak run missed a target".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn answers_are_judged_as_thalamus_and_the_others_give_them() {
        assert_eq!(answer(StatusCode::OK, b"{\"id\":1}"), Answer::Stored);
        assert_eq!(answer(StatusCode::CREATED, b"{}"), Answer::Stored);
        assert_eq!(answer(StatusCode::OK, b"FAILED"), Answer::UpstreamFailed);
        assert_eq!(
            answer(StatusCode::BAD_GATEWAY, b"{}"),
            Answer::UpstreamFailed
        );
        assert_eq!(answer(StatusCode::BAD_REQUEST, b"FAILED"), Answer::Other);
        assert_eq!(answer(StatusCode::CREATED, b"FAILED"), Answer::Other);
    }
}
