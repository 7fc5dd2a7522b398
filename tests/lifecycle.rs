//! The production edge over a real `casegate serve` process (SPEC section 8): JSON logs
//! with the request id on every line of a request and never a secret; SIGHUP reloads the
//! routes while an upload in flight finishes on the old ones (and a broken file changes
//! nothing); SIGTERM drains: readiness off at once, the upload in flight completes, new
//! connections are refused after the delay, and a request still running past the drain
//! timeout is cut with nothing stored short; a confirmed file whose row still waits for
//! the ledger gets a last try at shutdown, then a replayable `lost` line; a second SIGTERM
//! or Ctrl-C cuts each of the drain's waits short (for balancers, for requests in flight,
//! for the ledger) with nothing stored short and no row unlogged; descriptors running out
//! make new connections wait, warned about once a second; and a run with nothing wrong
//! (every pairing's round trip, SQLite ledger) logs no warning, and its last line says
//! it stopped.

mod common;

use std::time::{Duration, Instant};

use casegate::emulator::{self, Emulator};
use common::process::{small, Proc, SlowUpload};
use common::*;
use serde_json::Value;
use tokio::net::TcpStream;

async fn tines_emulator() -> Emulator {
    let mut ec = emulator::Config::new(Tines);
    ec.tokens = vec![UPSTREAM_TOKEN.to_string()];
    Emulator::start(ec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A routes.toml in `dir`: JSON logs, the top-level `settings` (lines), and route "r" to
/// the Tines upstream at `url`.
fn json_config(dir: &std::path::Path, settings: &str, url: &str) -> std::path::PathBuf {
    let cfg = dir.join("routes.toml");
    let top = "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n";
    std::fs::write(&cfg, format!("{top}{settings}{}", route("r", url))).unwrap();
    cfg
}

/// A `casegate serve` process with JSON logs and the top-level `settings`, routing "r" to
/// a Tines emulator of its own; the emulator, the folder of its routes.toml, the process.
async fn serving(settings: &str) -> (Emulator, tempfile::TempDir, Proc) {
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&json_config(dir.path(), settings, &emu.url()));
    (emu, dir, p)
}

/// What a client of an upload the drain cut read: anything but a success.
fn assert_cut(answer: &std::io::Result<String>) {
    assert!(
        answer
            .as_ref()
            .map_or(true, |a| !a.starts_with("HTTP/1.1 200")),
        "the cut upload was answered success: {answer:?}"
    );
}

/// The log lines saying the drain limit cut connections.
fn drain_limit_lines(p: &mut Proc) -> Vec<Value> {
    p.drain_lines()
        .into_iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("drain limit"))
        })
        .collect()
}

/// A Thalamus-front route `name` at `/{name}` to the Tines upstream at `url`.
fn route(name: &str, url: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\nfront = \"thalamus\"\nprefix = \"/{name}\"\nclient_tokens = [\"{CLIENT_TOKEN}\"]\n[routes.upstream]\ndialect = \"tines\"\nurl = \"{url}\"\n[routes.upstream.auth]\n{}\n",
        upstream_auth(Tines)
    )
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_never_a_secret() {
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = json_config(dir.path(), "", &emu.url());
    let mut p = Proc::start(&cfg);
    let answer = small(p.addr, "/r", b"hello").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let access = p.wait_for(|v| v["target"] == "casegate::access");
    let id = access["request_id"].as_str().unwrap().to_string();
    assert!(answer
        .to_ascii_lowercase()
        .contains(&format!("casegate-request-id: {id}")));
    for (k, want) in [
        ("route", Value::from("r")),
        ("front", "thalamus".into()),
        ("back", "tines".into()),
        ("operation", "upload".into()),
        ("status", 200.into()),
        ("code", "-".into()),
        ("file_bytes", 5.into()),
        ("upstream_status", 200.into()),
        ("path", "/r/api/v4/cases/7/files".into()),
    ] {
        assert_eq!(access[k], want, "{k}: {access}");
    }
    assert!(access["ms"].as_f64().is_some() && access["upstream_ms"].as_f64().is_some());
    // The upload's own log line (the dropped-fields note does not apply; the emulator's
    // start does not belong to a request): every line inside the request names its id.
    let lines = p.drain_lines();
    for v in &lines {
        if let Some(span) = v.get("span") {
            assert_eq!(span["request_id"], id.as_str(), "{v}");
        }
    }
    let all = lines.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(CLIENT_TOKEN), "a client token in the log");
    assert!(
        !all.contains(UPSTREAM_TOKEN),
        "an upstream token in the log"
    );
    assert!(!all.contains("touchpoint="), "a query string in the log");
}

#[tokio::test]
async fn sighup_reloads_routes_while_an_upload_in_flight_finishes_on_the_old_ones() {
    let (old, new) = (tines_emulator().await, tines_emulator().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("routes.toml");
    let top = "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nadmin_listen = \"127.0.0.1:0\"\nmax_upload_bytes = 134217728\n";
    // A Case IQ front route that stays the same: its generated token key must survive.
    let caseiq = format!(
        "\n[[routes]]\nname = \"ciq\"\nfront = \"caseiq\"\nprefix = \"/ciq\"\nclient_tokens = [\"{CLIENT_TOKEN}\"]\n[routes.upstream]\ndialect = \"tines\"\nurl = \"{}\"\n[routes.upstream.auth]\n{}\n",
        new.url(),
        upstream_auth(Tines)
    );
    std::fs::write(&cfg, format!("{top}{caseiq}{}", route("r", &old.url()))).unwrap();
    let mut p = Proc::start(&cfg);
    let http = client();
    let token = caseiq_token(&http, &format!("http://{}/ciq", p.addr), CLIENT_TOKEN).await;

    // 64 MiB in flight on the old route...
    let data = random_bytes(64 << 20, 99);
    let upload = SlowUpload::start(p.addr, "/r", &data, 32 << 20).await;
    // ...while the route moves to another upstream.
    std::fs::write(&cfg, format!("{top}{caseiq}{}", route("r", &new.url()))).unwrap();
    p.signal("HUP");
    p.wait_for(|v| v["message"] == "routes reloaded");
    let answer = small(p.addr, "/r", b"after the reload").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(new.files().len(), 1, "the next request takes the new route");
    assert_eq!(new.files()[0].data.as_ref(), b"after the reload");
    let answer = upload.finish().await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stored = old.files();
    assert_eq!(
        stored.len(),
        1,
        "the upload in flight finished on the old route"
    );
    assert_eq!(stored[0].sha256, sha256_hex(&data));

    // The unchanged route kept its generated token key: the old token still opens it.
    let r = reply(
        http.get(format!(
            "http://{}/ciq/api-public/1.0/attachments?objectId=x",
            p.addr
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_ne!(r.status, 401, "{}", r.text());

    // A broken file changes nothing.
    std::fs::write(
        &cfg,
        format!("{top}{}\nbogus_key = 1\n", route("r", &old.url())),
    )
    .unwrap();
    p.signal("HUP");
    p.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("the old routes keep serving"))
    });
    let answer = small(p.addr, "/r", b"still new").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(new.files().len(), 2);
    assert_eq!(old.files().len(), 1);
    let metrics = reply(
        http.get(format!("http://{}/metrics", p.admin.unwrap()))
            .send()
            .await
            .unwrap(),
    )
    .await
    .text();
    assert!(
        metrics.contains("casegate_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("casegate_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_drains_then_cuts_what_is_left() {
    let (emu, _dir, mut p) =
        serving("admin_listen = \"127.0.0.1:0\"\ndrain_delay_secs = 1\ndrain_timeout_secs = 2\n")
            .await;
    let http = client();
    let readyz = format!("http://{}/readyz", p.admin.unwrap());
    assert_eq!(http.get(&readyz).send().await.unwrap().status(), 200);

    let finishing = random_bytes(2 << 20, 5);
    let stalling = random_bytes(3 << 20, 6);
    let a = SlowUpload::start(p.addr, "/r", &finishing, 1 << 20).await;
    let b = SlowUpload::start(p.addr, "/r", &stalling, 1 << 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("TERM");
    // Readiness is off at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = http.get(&readyz).send().await.map(|r| r.status().as_u16());
        if status.as_ref().ok() == Some(&503) {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The upload in flight completes and is stored.
    let answer = a.finish().await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(emu
        .files()
        .iter()
        .any(|f| f.sha256 == sha256_hex(&finishing)));
    // After the delay, new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(p.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting after the drain delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stalled upload outlives the drain timeout: it is cut, and casegate exits 0,
    // having said so once, with the count over all its workers.
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    let cuts = drain_limit_lines(&mut p);
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert_eq!(cuts[0]["cut"], 1, "{}", cuts[0]);
    assert_eq!(cuts[0]["level"], "WARN", "{}", cuts[0]);
    let cut = b.finish().await;
    assert_cut(&cut);
    assert!(
        !emu.files()
            .iter()
            .any(|f| f.sha256 == sha256_hex(&stalling) || f.size == stalling.len() as u64),
        "nothing of the cut upload is stored: {:?} {cut:?}",
        emu.files()
            .iter()
            .map(|f| (f.size, f.sha256.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(emu.files().len(), 1);
    // Both are in the access log: the finished one 200, the cut one 503, cut by the
    // drain (not 499: its client did not give up), its answer not complete.
    p.wait_for(|v| v["message"] == "casegate stopped");
    let mut uploads: Vec<(u64, bool)> = p
        .drain_lines()
        .iter()
        .filter(|v| v["target"] == "casegate::access" && v["operation"] == "upload")
        .map(|v| {
            (
                v["status"].as_u64().unwrap(),
                v["complete"].as_bool().unwrap(),
            )
        })
        .collect();
    uploads.sort_unstable();
    assert_eq!(uploads, [(200, true), (503, false)]);
}

#[tokio::test]
async fn sigterm_closes_an_idle_kept_connection_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    // A drain limit far past the test's wait: a connection the drain did not close would
    // hold casegate until it, then be cut.
    let cfg = json_config(
        dir.path(),
        "drain_delay_secs = 0\ndrain_timeout_secs = 60\n",
        &emu.url(),
    );
    let mut p = Proc::start(&cfg);
    // One request answered on a kept connection, which then waits for the next.
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    idle.write_all(b"GET /r/nothing HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read whole (its head, then as many body bytes as it announces), so that nothing of
    // it is left to be taken for more after the drain.
    let mut got = Vec::new();
    let answer = loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(length) = framed_answer_len(&got) else {
            continue;
        };
        if got.len() >= length {
            assert_eq!(got.len(), length, "{text}");
            break text;
        }
    };
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("TERM");
    // casegate closes it (end of stream, nothing more sent), well within the limit.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the idle connection was not closed: {read:?} {rest:?}"
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    let cut = drain_limit_lines(&mut p);
    assert!(cut.is_empty(), "{cut:?}");
}

/// The body of a GET of `url`.
async fn text_of(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The day `days` after 1970-01-01 at 00:00 UTC, in RFC 3339.
fn day_text(days: u64) -> String {
    let (y, m, d) = casegate::upload::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
}

#[tokio::test]
async fn the_served_certificates_expiry_is_logged_checked_and_measured() {
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // Three certificates: ending in three days, in 400 days, and yesterday.
    let mut pkis = Vec::new();
    for (i, until) in [today + 3, today + 400, today - 1].into_iter().enumerate() {
        let sub = dir.path().join(format!("pki{i}"));
        std::fs::create_dir(&sub).unwrap();
        let (_, cert, key) = pki_until(&sub, Some(until));
        pkis.push((cert, key));
    }
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let use_pki = |i: usize| {
        std::fs::copy(&pkis[i].0, &cert).unwrap();
        std::fs::copy(&pkis[i].1, &key).unwrap();
    };
    use_pki(0);
    let cfg = json_config(
        dir.path(),
        "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nadmin_listen = \"127.0.0.1:0\"\n",
        &emu.url(),
    );
    // `casegate check` names the certificate's end too.
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_casegate"))
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = check();
    assert!(
        printed.contains(&format!(
            "(https, h2) certificate until {}",
            day_text(today + 3)
        )),
        "{printed}"
    );
    let mut p = Proc::start(&cfg);
    let metrics = format!("http://{}/metrics", p.admin.unwrap());
    let expiry = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("casegate_tls_cert_expiry_timestamp_seconds "))
            .map(str::to_owned)
    };
    // At start: a warning, two whole days left, and the series.
    let soon = p.wait_for(|v| {
        v["message"] == "the TLS certificate expires soon; replace the file and send SIGHUP"
    });
    assert_eq!(soon["level"], "WARN", "{soon}");
    assert_eq!(soon["days_left"], 2, "{soon}");
    assert_eq!(soon["not_after"], day_text(today + 3), "{soon}");
    assert_eq!(soon["cert"], cert.display().to_string(), "{soon}");
    let scraped = text_of(&metrics).await;
    assert_eq!(
        expiry(&scraped),
        Some(((today + 3) * 86_400).to_string()),
        "{scraped}"
    );

    // A renewed certificate, reloaded: a plain line, and the series follows.
    use_pki(1);
    p.signal("HUP");
    let fine = p.wait_for(|v| v["message"] == "TLS certificate");
    assert_eq!(fine["level"], "INFO", "{fine}");
    assert_eq!(fine["days_left"], 399, "{fine}");
    p.wait_for(|v| v["message"] == "routes reloaded");
    let scraped = text_of(&metrics).await;
    assert_eq!(expiry(&scraped), Some(((today + 400) * 86_400).to_string()));

    // An expired one is still served (a client told to may go on), and said loudly.
    use_pki(2);
    let printed = check();
    assert!(
        printed.contains(&format!(
            "(https, h2) certificate EXPIRED {}",
            day_text(today - 1)
        )),
        "{printed}"
    );
    p.signal("HUP");
    let expired = p.wait_for(|v| {
        v["message"]
            == "the TLS certificate has expired: clients refuse it; replace the file and send SIGHUP"
    });
    assert_eq!(expired["level"], "WARN", "{expired}");
    assert_eq!(expired["not_after"], day_text(today - 1), "{expired}");
    p.wait_for(|v| v["message"] == "routes reloaded");
    let scraped = text_of(&metrics).await;
    assert_eq!(expiry(&scraped), Some(((today - 1) * 86_400).to_string()));
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (first_dir, second_dir) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::create_dir(&first_dir).unwrap();
    std::fs::create_dir(&second_dir).unwrap();
    let (ca1, cert1, key1) = pki(&first_dir);
    let (ca2, cert2, key2) = pki(&second_dir);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let cfg = json_config(
        dir.path(),
        "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
        &emu.url(),
    );
    let mut p = Proc::start(&cfg);
    let trusting = |ca: &[u8]| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
            .pool_max_idle_per_host(1)
            .build()
            .unwrap()
    };
    let old_client = trusting(&ca1);
    let url = format!(
        "https://127.0.0.1:{}/r/api/v4/cases/files/1?touchpoint=t&token={CLIENT_TOKEN}",
        p.addr.port()
    );
    let first = old_client.get(&url).send().await.unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    first.bytes().await.unwrap();

    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    p.signal("HUP");
    p.wait_for(|v| v["message"] == "routes reloaded");
    // The open connection goes on (HTTP/2: the same connection carries the next stream).
    let again = old_client.get(&url).send().await.unwrap();
    assert!(again.status().as_u16() < 500, "{again:?}");
    // New connections get the new certificate.
    assert!(
        trusting(&ca1).get(&url).send().await.is_err(),
        "the old certificate is still served"
    );
    let new = trusting(&ca2).get(&url).send().await.unwrap();
    assert!(new.status().as_u16() < 500, "{new:?}");
}

/// casegate with a confirmed file whose row waits for the ledger: the upload starts while
/// the ledger answers, which then goes away (a lost volume) before the upstream confirms
/// the file. The emulator, the folder, the process and the file's bytes.
async fn a_row_waiting_for_the_ledger(seed: u64) -> (Emulator, tempfile::TempDir, Proc, Vec<u8>) {
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite3");
    let cfg = dir.path().join("routes.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nledger = \"sqlite://{}\"\ndrain_timeout_secs = 1\n{}",
            ledger.display(),
            route("r", &emu.url())
        ),
    )
    .unwrap();
    let mut p = Proc::start(&cfg);
    let data = random_bytes(300_000, seed);
    let upload = SlowUpload::start(p.addr, "/r", &data, 1000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::rename(&ledger, dir.path().join("elsewhere.sqlite3")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answer = upload.finish().await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stored = emu.files();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sha256, sha256_hex(&data));
    p.wait_for(|v| v["message"] == "a confirmed file could not be recorded; it will be retried");
    (emu, dir, p, data)
}

/// After casegate exited: the one `lost` line, which is the row, for an operator to
/// replay, naming the file the upstream stored.
fn the_lost_row(p: &mut Proc, emu: &Emulator, data: &[u8]) {
    let lines = p.drain_lines();
    let lost: Vec<&Value> = lines
        .iter()
        .filter(|v| v["target"] == "casegate::ledger::lost")
        .collect();
    assert_eq!(lost.len(), 1, "{lines:#?}");
    let row: Value = serde_json::from_str(lost[0]["message"].as_str().unwrap()).unwrap();
    assert_eq!(row["route"], "r");
    assert_eq!(row["back_id"], emu.files()[0].id.to_string());
    assert_eq!(row["size"], data.len());
}

#[tokio::test]
async fn sigterm_gives_rows_waiting_for_the_ledger_a_last_try_then_logs_them_lost() {
    let (emu, _dir, mut p, data) = a_row_waiting_for_the_ledger(7).await;

    p.signal("TERM");
    let last_try =
        p.wait_for(|v| v["message"] == "draining: writing the rows that wait for the ledger");
    assert_eq!(last_try["rows"], 1, "{last_try}");
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0));
    the_lost_row(&mut p, &emu, &data);
}

/// The log line a second SIGTERM or Ctrl-C gives, naming the signal.
fn second_signal_line(p: &mut Proc) -> Value {
    let lines = p.drain_lines();
    let second: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            v["message"] == "a second signal: stopping now; requests still in flight are cut"
        })
        .collect();
    assert_eq!(second.len(), 1, "{lines:#?}");
    assert_eq!(second[0]["level"], "WARN", "{}", second[0]);
    second[0].clone()
}

#[tokio::test]
async fn a_second_signal_cuts_the_drain_short_and_nothing_is_stored_short() {
    // Limits far past the test's waits: only the second signal can end the drain in time.
    let (emu, _dir, mut p) =
        serving("admin_listen = \"127.0.0.1:0\"\ndrain_delay_secs = 1\ndrain_timeout_secs = 120\n")
            .await;
    let stalling = random_bytes(3 << 20, 8);
    let stalled = SlowUpload::start(p.addr, "/r", &stalling, 1 << 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("TERM");
    let first = p.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shutting down: draining"))
    });
    assert_eq!(first["signal"], "SIGTERM", "{first}");
    // Past the delay, the drain waits for the stalled upload ...
    let waiting = p.wait_for(|v| {
        v["message"] == "draining: no new connections; waiting for requests in flight"
    });
    assert_eq!(waiting["secs"], 120, "{waiting}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let healthz = format!("http://{}/healthz", p.admin.unwrap());
    let alive = client().get(&healthz).send().await.unwrap();
    assert_eq!(alive.status(), 200, "it left before the second signal");
    // ... until Ctrl-C: then the upload is cut at once and casegate exits 0.
    let sent = Instant::now();
    p.signal("INT");
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert_eq!(second_signal_line(&mut p)["signal"], "SIGINT");
    let lines = p.drain_lines();
    let cuts: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("drain cut short by a second signal"))
        })
        .collect();
    assert_eq!(cuts.len(), 1, "{lines:#?}");
    assert!(drain_limit_lines(&mut p).is_empty());
    assert_eq!(cuts[0]["cut"], 1, "{}", cuts[0]);
    let cut = stalled.finish().await;
    assert_cut(&cut);
    assert!(
        emu.files().is_empty(),
        "nothing of the cut upload is stored"
    );
}

#[tokio::test]
async fn a_second_signal_ends_the_wait_for_balancers() {
    let (emu, _dir, mut p) = serving(
        "admin_listen = \"127.0.0.1:0\"\ndrain_delay_secs = 120\ndrain_timeout_secs = 120\n",
    )
    .await;
    p.signal("INT");
    p.wait_for(|v| {
        v["message"] == "draining: /readyz is 503; still serving while balancers notice"
    });
    // Still serving while balancers notice ...
    let answer = small(p.addr, "/r", b"during the delay").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ... until a second signal, a SIGHUP in between changing nothing.
    p.signal("HUP");
    p.wait_for(|v| v["message"] == "SIGHUP while draining: not reloading");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    assert_eq!(second_signal_line(&mut p)["signal"], "SIGTERM");
    assert!(drain_limit_lines(&mut p).is_empty());
    assert_eq!(emu.files().len(), 1);
}

#[tokio::test]
async fn a_second_signal_logs_the_rows_waiting_for_the_ledger_as_lost_at_once() {
    let (emu, _dir, mut p, data) = a_row_waiting_for_the_ledger(9).await;
    p.signal("TERM");
    p.wait_for(|v| v["message"] == "draining: writing the rows that wait for the ledger");
    // The last try would go on for 10 s; the second signal ends it, the row logged.
    let sent = Instant::now();
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert_eq!(second_signal_line(&mut p)["signal"], "SIGTERM");
    the_lost_row(&mut p, &emu, &data);
}

/// `casegate serve --config cfg` with `CASEGATE_LOG=filter` and its log in whatever format
/// the file names, read line by line as it comes; killed when dropped.
struct Logged {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    filter: String,
}

impl Logged {
    fn start(cfg: &std::path::Path, filter: &str) -> Logged {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_casegate"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .env("CASEGATE_LOG", filter)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Logged {
            child,
            lines,
            filter: filter.to_string(),
        }
    }

    /// The next line holding `want`; panics after 20 s.
    fn next_line(&self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if line.contains(want) {
                    return line;
                }
            }
        }
        panic!("no log line with {want:?} (CASEGATE_LOG={})", self.filter);
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default text log, as an operator greps it: one access line per request, in the
/// documented order, with no query string and `upstream_ms=0.0` when no upstream call
/// was made.
#[tokio::test]
async fn text_access_lines_read_as_documented() {
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("routes.toml");
    std::fs::write(
        &cfg,
        format!("listen = \"127.0.0.1:0\"\n{}", route("r", &emu.url())),
    )
    .unwrap();
    let log = Logged::start(&cfg, "info");
    let next_line = |want: &str| log.next_line(want);
    let listening = next_line("casegate listening");
    let addr = listening
        .split(' ')
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap()
        .to_string();
    let client = reqwest::Client::new();
    let upload = |token: &'static str| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("hello.txt"),
        );
        client
            .post(format!(
                "http://{addr}/r/api/v4/cases/7/files?touchpoint=t&token={token}"
            ))
            .multipart(form)
            .send()
    };
    assert_eq!(upload(CLIENT_TOKEN).await.unwrap().status(), 200);
    assert_eq!(upload("wrong-token").await.unwrap().status(), 401);
    let ok = next_line("casegate::access");
    let refused = next_line("casegate::access");
    drop(log);
    // `2026-12-02T22:15:47.263580Z  INFO casegate::access: request_id=...`
    let fields = |line: &str| -> Vec<(String, String)> {
        let shape: String = line
            .chars()
            .take(28)
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99.999999Z ", "{line}");
        let rest = line[28..]
            .strip_prefix(" INFO casegate::access: ")
            .unwrap_or_else(|| panic!("{line}"));
        rest.split(' ')
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{kv} in {line}"));
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let names = |f: &[(String, String)]| f.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let (ok, refused) = (fields(&ok), fields(&refused));
    assert_eq!(
        names(&ok),
        [
            "request_id",
            "method",
            "path",
            "route",
            "front",
            "back",
            "operation",
            "status",
            "code",
            "file_bytes",
            "spooled",
            "dropped",
            "upstream_status",
            "upstream_ms",
            "ms",
            "complete"
        ]
    );
    assert_eq!(names(&refused), names(&ok));
    let value = |f: &[(String, String)], k: &str| {
        f.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    for (k, want) in [
        ("method", "POST"),
        ("path", "/r/api/v4/cases/7/files"),
        ("route", "\"r\""),
        ("front", "\"thalamus\""),
        ("back", "\"tines\""),
        ("operation", "\"upload\""),
        ("status", "200"),
        ("code", "\"-\""),
        ("file_bytes", "5"),
        ("spooled", "false"),
        ("dropped", ""),
        ("upstream_status", "200"),
        ("complete", "true"),
    ] {
        assert_eq!(value(&ok, k), want, "{k}");
    }
    assert!(value(&ok, "upstream_ms").parse::<f64>().unwrap() >= 0.0);
    for (k, want) in [
        ("status", "401"),
        ("code", "\"unauthorized\""),
        ("file_bytes", "0"),
        ("upstream_status", "0"),
        ("upstream_ms", "0.0"),
    ] {
        assert_eq!(value(&refused, k), want, "{k}");
    }
    let id = value(&ok, "request_id");
    assert!(
        id.len() == 36 && id != value(&refused, "request_id"),
        "{id}"
    );
}

/// A line logged while a request is served names the request, in both formats, whether
/// requests get a `tracing` span (a filter naming spans) or are named from their context
/// (the default); the access line, logged when the answer is done, names none.
#[tokio::test]
async fn lines_inside_a_request_name_it_with_or_without_spans() {
    let path = DeadRoute::PATH;
    for (format, filter) in [
        ("text", "info"),
        ("text", "info,[request]=info"),
        ("json", "info"),
        ("json", "info,[request]=info"),
    ] {
        let dead = DeadRoute::start(format, filter);
        dead.upload("t-123").await;
        let log = dead.log;
        let next_line = |want: &str| log.next_line(want);
        let failed = next_line("casegate::forward");
        let access = next_line("casegate::access");
        drop(log);
        match format {
            "json" => {
                let want = format!(
                    r#","span":{{"method":"POST","path":"{path}","request_id":"t-123","name":"request"}}}}"#
                );
                assert!(failed.ends_with(&want), "{filter}: {failed}");
                let v: Value = serde_json::from_str(&failed).unwrap();
                assert_eq!(v["level"], "WARN", "{failed}");
                assert_eq!(v["target"], "casegate::forward", "{failed}");
                let v: Value = serde_json::from_str(&access).unwrap();
                assert_eq!(v["request_id"], "t-123", "{access}");
                assert!(v.get("span").is_none(), "{filter}: {access}");
            }
            _ => {
                let want = format!(
                    " WARN request{{request_id=t-123 method=POST path={path}}}: casegate::forward: upstream request failed route=dead "
                );
                assert_eq!(
                    failed.get(28..28 + want.len()),
                    Some(&*want),
                    "{filter}: {failed}"
                );
                assert_eq!(failed.matches("request{").count(), 1, "{failed}");
                assert!(
                    access[28..].starts_with(" INFO casegate::access: request_id=t-123 "),
                    "{filter}: {access}"
                );
            }
        }
        assert!(!failed.contains(CLIENT_TOKEN) && !access.contains(CLIENT_TOKEN));
    }
}

/// A casegate whose one route, `/dead`, leads to an upstream that refuses connections:
/// every upload logs "upstream request failed" inside the request (and Thalamus answers
/// its `FAILED` with a 200). It logs in `format` with `CASEGATE_LOG=filter`, which must let
/// `casegate::server`'s start-up line through.
struct DeadRoute {
    log: Logged,
    addr: String,
    _dead: tokio::net::TcpSocket,
    _dir: tempfile::TempDir,
}

impl DeadRoute {
    const PATH: &'static str = "/dead/api/v4/cases/7/files";

    fn start(format: &str, filter: &str) -> DeadRoute {
        // Bound and never listening: a connection is refused, and no other process can
        // take the port while the test runs (a port bound and let go could be, and
        // answered: this test once saw `upstream_rejected`).
        let dead = tokio::net::TcpSocket::new_v4().unwrap();
        dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("routes.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:0\"\nlog_format = \"{format}\"\n{}",
                route("dead", &dead_url)
            ),
        )
        .unwrap();
        let log = Logged::start(&cfg, filter);
        let listening = log.next_line("casegate listening");
        let addr = match format {
            "json" => serde_json::from_str::<Value>(&listening).unwrap()["addr"]
                .as_str()
                .unwrap()
                .to_string(),
            _ => listening
                .split(' ')
                .find_map(|w| w.strip_prefix("addr="))
                .unwrap()
                .to_string(),
        };
        DeadRoute {
            log,
            addr,
            _dead: dead,
            _dir: dir,
        }
    }

    /// An upload with `X-Request-Id: id`, answered as a failure to reach the upstream,
    /// with the id in `Casegate-Request-Id` (with request spans or without).
    async fn upload(&self, id: &str) {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("hello.txt"),
        );
        let answer = reqwest::Client::new()
            .post(format!(
                "http://{}{}?touchpoint=t&token={CLIENT_TOKEN}",
                self.addr,
                Self::PATH
            ))
            .header("x-request-id", id)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.headers()["casegate-error"], "upstream_unreachable");
        assert_eq!(answer.headers()["casegate-request-id"], id);
    }
}

/// The access line, written without `tracing`'s dispatch, follows the filter as its event
/// did: on where `casegate::access` is let through at `INFO` though the rest is at `WARN`,
/// off where it is turned off though the rest is at `INFO`.
#[tokio::test]
async fn the_access_line_follows_the_filter() {
    for format in ["text", "json"] {
        for (filter, on) in [
            ("warn,casegate::server=info,casegate::access=info", true),
            ("info,casegate::access=off", false),
        ] {
            let dead = DeadRoute::start(format, filter);
            dead.upload("first-upload").await;
            dead.upload("second-upload").await;
            // Lines arrive in order: the first upload's access line, if any, comes before
            // the second upload's own warning.
            let mut lines = Vec::new();
            loop {
                let line = dead.log.next_line("");
                let last = line.contains("second-upload") && line.contains("casegate::forward");
                lines.push(line);
                if last {
                    break;
                }
            }
            let access: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains("casegate::access"))
                .collect();
            assert_eq!(
                access.len(),
                usize::from(on),
                "{format}, {filter}: {lines:#?}"
            );
            if on {
                assert!(access[0].contains("first-upload"), "{}", access[0]);
            }
            let warned = lines
                .iter()
                .filter(|l| l.contains("upstream request failed"))
                .count();
            assert!(warned >= 2, "{format}, {filter}: {lines:#?}");
            // Each says why, as the system said it (hyper-util keeps that in its error's
            // source, not in its text).
            let why = lines
                .iter()
                .filter(|l| l.contains("casegate::upstream") && l.contains("Connection refused"))
                .count();
            assert!(why >= 2, "{format}, {filter}: {lines:#?}");
        }
    }
}

/// A casegate process under the shell's `ulimit {limit}`, with route "r" to a Tines
/// emulator and its ledger in memory.
async fn under_ulimit(limit: &str) -> (Emulator, tempfile::TempDir, Proc) {
    let emu = tines_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = json_config(dir.path(), "ledger = \"sqlite::memory:\"\n", &emu.url());
    let p = Proc::start_with_ulimit(&cfg, limit);
    (emu, dir, p)
}

/// Descriptors running out (the process allowed 64): casegate keeps serving, a new
/// connection waits in the listen queue rather than being refused, the failure is warned
/// about at most once a second a worker with how many tries it stands for (not on each
/// try, every 50 ms), and once connections close the waiting upload is served.
#[tokio::test]
async fn descriptors_running_out_make_connections_wait_and_are_warned_once_a_second() {
    let (emu, _dir, mut p) = under_ulimit("-n 64").await;
    // Told at start that 64 is fewer than max_in_flight's 1 024 requests need.
    let told = p.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the process may open fewer files"))
    });
    assert_eq!(
        (told["open_files"].as_u64(), told["max_in_flight"].as_u64()),
        (Some(64), Some(1024)),
        "{told}"
    );
    let answer = small(p.addr, "/r", b"before").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Connections that never send a byte, more than the descriptors left.
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let waiting = tokio::spawn(small(p.addr, "/r", b"waited"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !waiting.is_finished(),
        "an upload served with no descriptor left"
    );
    let exhausted_for = started.elapsed();
    drop(held);
    let answer = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiting upload was served once descriptors came back")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(emu.files().len(), 2);
    let warnings: Vec<Value> = p
        .drain_lines()
        .into_iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("accept failed"))
        })
        .collect();
    assert!(!warnings.is_empty(), "no warning of the failed accepts");
    for w in &warnings {
        assert_eq!(w["listener"], "public", "{w}");
        assert!(
            w["error"]
                .as_str()
                .is_some_and(|e| e.contains("Too many open files")),
            "{w}"
        );
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = workers * (exhausted_for.as_secs() as usize + 2);
    assert!(
        warnings.len() <= most,
        "{} warnings in {exhausted_for:?} (at most {most}): {warnings:#?}",
        warnings.len()
    );
    // The later warnings stand for the tries in between.
    assert!(
        warnings.iter().any(|w| w["failures"].as_u64() > Some(1)),
        "{warnings:#?}"
    );
}

/// Started with a soft open-files limit under its hard one (most shells and systemd give
/// 1 024), casegate raises it to the hard one and says so, and its start-up line names the
/// limit in force.
#[tokio::test]
async fn the_open_files_limit_is_raised_to_its_hard_limit_at_start() {
    let (_emu, _dir, mut p) = under_ulimit("-S -n 128").await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.child.id())).unwrap();
    let files: Vec<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [soft, hard] = files[..] else {
        panic!("{limits}")
    };
    assert_eq!(soft, hard, "{limits}");
    assert!(hard > 128, "{limits}");
    let raised = p.wait_for(|v| v["message"] == "open-files limit raised to its hard limit");
    assert_eq!(
        (raised["from"].as_u64(), raised["to"].as_u64()),
        (Some(128), Some(hard)),
        "{raised}"
    );
    let listening = p.wait_for(|v| v["message"] == "casegate listening");
    assert_eq!(listening["open_files"], hard.to_string(), "{listening}");
    let answer = small(p.addr, "/r", b"hello").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Every pairing's upload, downloads, list, record and delete through one `casegate serve`
/// on a SQLite ledger of its own: nothing went wrong, so nothing is logged above `INFO`
/// (a warning in a clean run is either a false alarm or a fault no other check saw).
#[tokio::test]
async fn a_clean_run_through_every_pairing_logs_no_warning() {
    let emulators = every_back().await;
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "log_format = \"json\"\nledger = \"sqlite://{}\"",
        dir.path().join("ledger.sqlite3").display()
    );
    let toml = pairings_toml(&emulators, &top, |_, _| String::new());
    let config = dir.path().join("routes.toml");
    std::fs::write(&config, toml).unwrap();
    let mut p = Proc::start(&config);
    let base = format!("http://{}", p.addr);
    every_pairing_round_trip(&client(), &emulators, |front, back| {
        format!("{base}/{front}-{back}")
    })
    .await;
    let lines = p.drain_lines();
    let accesses = lines
        .iter()
        .filter(|v| v["target"] == "casegate::access")
        .count();
    assert!(accesses >= 16 * 3, "{accesses} access lines");
    let warnings: Vec<_> = lines
        .iter()
        .filter(|v| v["level"] != "INFO" && v["level"] != "DEBUG")
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    // Stopped, it says so last (no admin listener: no drain delay).
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    // Read to that line (the pipe's reader may lag the exit), then nothing after it.
    p.wait_for(|v| v["message"] == "casegate stopped");
    let lines = p.drain_lines();
    let last = lines.last().unwrap();
    assert_eq!(last["message"], "casegate stopped", "{last}");
    assert_eq!(last["level"], "INFO", "{last}");
}
