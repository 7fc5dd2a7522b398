//! The command line as users run it: `casegate check` on good and bad configs, `serve`
//! refusing an invalid one, environment overrides, and an access log that never shows a
//! secret (a Thalamus token may ride in the query string).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_casegate");

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_prints_the_shipped_route_table_without_secrets() {
    let out = Command::new(BIN)
        .args(["check", concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "thalamus-to-tines",
        "tines-to-thalamus",
        "caseiq-to-kibana",
        "kibana-to-caseiq",
    ] {
        assert!(stdout.contains(name), "{stdout}");
    }
    assert!(!stdout.contains("demo-"), "a secret was printed:\n{stdout}");
    assert!(stdout.contains("***"));
}

#[test]
fn check_names_route_and_key_of_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        r#"
[[routes]]
name = "soar"
front = "tines"
[routes.upstream]
dialect = "kibna"
url = "embedded"

[[routes]]
name = "ops"
front = "thalamus"
[routes.upstream]
dialect = "tines"
space = "x"
[routes.upstream.auth]
token = "${CASEGATE_TEST_UNSET_SECRET}"
"#,
    );
    let out = Command::new(BIN)
        .args(["check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "route \"soar\": upstream.dialect: unknown dialect \"kibna\"",
        "route \"ops\": upstream.url: missing",
        "route \"ops\": upstream.space: unknown key `space` for a tines upstream",
        "route \"ops\": upstream.auth.token: environment variable CASEGATE_TEST_UNSET_SECRET is not set",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // serve refuses the same file.
    let out = Command::new(BIN)
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// serve's last word goes through its log: a start that fails (here its port is taken)
/// ends with one `ERROR` line in the configured format, JSON like every line before it,
/// naming the cause; exit 1. With the log's filter off, the cause is printed plainly.
#[test]
fn a_start_that_fails_says_why_in_the_logs_format() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = write(
        dir.path(),
        "routes.toml",
        &format!(
            "listen = \"{addr}\"\nlog_format = \"json\"\n\n[[routes]]\nname = \"t\"\nfront = \"tines\"\nclient_tokens = [\"c\"]\n[routes.upstream]\ndialect = \"tines\"\nurl = \"embedded\"\n"
        ),
    );
    let serve = |filter: &str| {
        Command::new(BIN)
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .env("CASEGATE_LOG", filter)
            .output()
            .unwrap()
    };
    let out = serve("info");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{err}");
    assert_eq!(last["message"], "casegate could not start", "{err}");
    let cause = last["error"].as_str().unwrap();
    assert!(
        cause.starts_with(&format!("cannot listen on {addr}: ")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "embedded emulator started"),
        "{err}"
    );

    let out = serve("off");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("cannot listen on {addr}: ")),
        "{err}"
    );
    drop(taken);
}

/// `cmd` started at the `info` level without colours, its log (stderr) sent line by line.
fn spawn_logged(cmd: &mut Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .env("CASEGATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Starts `casegate serve` and returns it with the address it logged.
fn serve(
    config: &std::path::Path,
    envs: &[(&str, &str)],
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    let (mut child, rx) = spawn_logged(
        Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .envs(envs.iter().copied()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(i) = line.find("addr=") {
                let addr = line[i + 5..].split_whitespace().next().unwrap().to_string();
                return (child, addr, rx);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("casegate did not log its address");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn access_log_never_shows_a_query_token_and_env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "routes.toml",
        r#"
listen = "127.0.0.1:1"
[[routes]]
name = "ops"
front = "thalamus"
client_tokens = ["${CASEGATE_TEST_CLIENT_TOKEN}"]
[routes.upstream]
dialect = "tines"
url = "embedded"
[routes.upstream.auth]
token = "upstream-key-material"
"#,
    );
    let secret = "query-secret-5c1e";
    let (mut child, addr, rx) = serve(
        &cfg,
        &[
            ("CASEGATE_LISTEN", "127.0.0.1:0"),
            ("CASEGATE_TEST_CLIENT_TOKEN", secret),
            ("CASEGATE_SOMETHING_ELSE", "is not a key"),
        ],
    );
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhi\r\n--{boundary}--\r\n"
    );
    let send = |token: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "POST /api/v4/cases/7/files?touchpoint=t&token={token} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    let ok = send(secret);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let refused = send("wrong-token-77");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let log: Vec<String> = rx.try_iter().map(|l| strip_ansi(&l)).collect();
    let log = log.join("\n");
    assert!(
        log.contains("/api/v4/cases/7/files"),
        "no access log line:\n{log}"
    );
    for s in [secret, "wrong-token-77", "upstream-key-material", "token="] {
        assert!(!log.contains(s), "{s:?} appears in the log:\n{log}");
    }
}

#[test]
fn emulate_serves_a_strict_stand_alone_emulator() {
    // Port 0: the emulator picks a free port and logs its URL (a port picked here and
    // passed on could be taken by another test's connection meanwhile).
    let mut child = Command::new(BIN)
        .args([
            "emulate",
            "tines",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "emu-key",
        ])
        .env("CASEGATE_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(strip_ansi(&line));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let listen = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the emulator logs the URL it listens on");
        if let Some(at) = line.find("url=http://") {
            let rest = &line[at + "url=http://".len()..];
            let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
            break rest[..end].trim_end_matches('/').to_string();
        }
    };
    let post = |auth: &str, body: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen)
            .unwrap_or_else(|e| panic!("emulator not listening on {listen}: {e}"));
        write!(
            s,
            "POST /api/v2/cases/5/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    let ok = post("emu-key", r#"{"filename":"a.txt","file_contents":"aGk="}"#);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"activity_type\":\"FILE_ATTACHED\""), "{ok}");
    let bad = post("emu-key", r#"{"filename":"a.txt","file_contents":"a*k="}"#);
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let unauth = post("other", r#"{"filename":"a.txt","file_contents":"aGk="}"#);
    assert!(unauth.starts_with("HTTP/1.1 401"), "{unauth}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `casegate ledger` prints what a running casegate recorded, after it stopped: as a
/// table, as JSON, and for one route.
#[test]
fn ledger_command_prints_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "routes.toml",
        r#"
listen = "127.0.0.1:0"
ledger = "sqlite://state/ledger.sqlite3"
[[routes]]
name = "ops"
front = "thalamus"
[routes.upstream]
dialect = "caseiq"
url = "embedded"
[routes.upstream.auth]
client_id = "casegate"
client_secret = "s"
"#,
    );
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let (mut child, addr, _rx) = serve(&cfg, &[]);
    let case = "3f2b7c8e-1d4a-4e5f-9a6b-7c8d9e0f1a2b";
    for name in ["one.txt", "two.txt"] {
        let boundary = "b0undary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\nhi\r\n--{boundary}--\r\n"
        );
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "POST /api/v4/cases/{case}/files?touchpoint=t&token=x HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let _ = child.kill();
    let _ = child.wait();

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("ledger")
            .args(["--config", cfg.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for (line, (id, name)) in lines[1..].iter().zip([("1", "one.txt"), ("2", "two.txt")]) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], "ops", "{table}");
        assert_eq!(cells[1], id, "{table}");
        assert!(uuid::Uuid::try_parse(cells[2]).is_ok(), "{table}");
        assert!(line.contains(case) && line.contains(name), "{table}");
    }
    let json: serde_json::Value = serde_json::from_str(&run(&["--json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(rows[0]["route"], "ops");
    assert_eq!(rows[0]["front_id"], "1");
    assert_eq!(rows[0]["front_case"], case);
    assert_eq!(rows[1]["name"], "two.txt");
    assert_eq!(rows[1]["size"], 2);
    let other: serde_json::Value =
        serde_json::from_str(&run(&["--json", "--route", "other"])).unwrap();
    assert_eq!(other, serde_json::json!([]));
}

/// Under every limit on open files from too few to enough, `casegate serve` either
/// refuses to start (a non-zero exit, an error naming what it could not do, no address
/// logged) or starts whole: a casegate that logged its address never then logs that a
/// worker could not take its part of the listening socket (which would leave it up and
/// accepting on fewer workers, or on none).
#[test]
fn serve_starts_whole_or_not_at_all_under_a_low_limit_on_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "routes.toml",
        r#"
listen = "127.0.0.1:0"
ledger = "sqlite::memory:"
workers = 4
[[routes]]
name = "ops"
front = "thalamus"
client_tokens = ["t"]
[routes.upstream]
dialect = "tines"
url = "embedded"
[routes.upstream.auth]
token = "k"
"#,
    );
    let (mut refused, mut started, mut sharing_refused) = (0, 0, 0);
    for limit in 8..=48 {
        let (mut child, rx) = spawn_logged(Command::new("sh").args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" serve --config \"$1\""),
            BIN,
            cfg.to_str().unwrap(),
        ]));
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let logged_addr = loop {
            assert!(
                Instant::now() < deadline,
                "limit {limit}: neither started nor refused:\n{}",
                log.join("\n")
            );
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let line = strip_ansi(&line);
                    let addr = line.contains("casegate listening");
                    log.push(line);
                    if addr {
                        break true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        };
        if logged_addr {
            // Whatever a worker logs about its part comes right after the start.
            std::thread::sleep(Duration::from_millis(300));
            let _ = child.kill();
            let _ = child.wait();
            log.extend(rx.try_iter().map(|l| strip_ansi(&l)));
            let log = log.join("\n");
            assert!(
                !log.contains("ERROR") && !log.contains("cannot"),
                "limit {limit}: started, then failed:\n{log}"
            );
            started += 1;
        } else {
            let status = child.wait().unwrap();
            let log = log.join("\n");
            assert!(
                !status.success() && log.contains("cannot"),
                "limit {limit}: ended without a start or an error ({status}):\n{log}"
            );
            refused += 1;
            sharing_refused += usize::from(log.contains(
                "cannot listen on 127.0.0.1:0: a connection worker cannot share the listening socket",
            ));
        }
    }
    // The scan crossed the line, and through the step this test is about.
    assert!(
        refused > 0 && started > 0 && sharing_refused > 0,
        "refused {refused}, started {started}, of which for the listening socket {sharing_refused}"
    );
}
