//! A real `casegate serve` process for the tests that need signals (reload, drain, a
//! replica killed): started from a routes.toml with JSON logs, its log lines read as they
//! come; and uploads whose body is sent by hand, to keep one in flight.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::CLIENT_TOKEN;

const BIN: &str = env!("CARGO_BIN_EXE_casegate");

/// A `casegate serve` process logging JSON, and its log lines as they come.
pub struct Proc {
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<Value>,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl Proc {
    pub fn start(config: &Path) -> Proc {
        Proc::start_with(config, &[])
    }

    /// Starts `casegate serve --config config` with `envs` (which must keep JSON logs).
    pub fn start_with(config: &Path, envs: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(BIN);
        command.args(["serve", "--config", config.to_str().unwrap()]);
        Proc::spawn(command, envs)
    }

    /// Starts `casegate serve --config config` under the shell's `ulimit {limit}` (`-n
    /// 64`: at most 64 open descriptors).
    pub fn start_with_ulimit(config: &Path, limit: &str) -> Proc {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit {limit} && exec \"$0\" serve --config \"$1\""),
            BIN,
            config.to_str().unwrap(),
        ]);
        Proc::spawn(command, &[])
    }

    fn spawn(mut command: Command, envs: &[(&str, &str)]) -> Proc {
        let mut child = command
            .env("CASEGATE_LOG", "info")
            .envs(envs.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut p = Proc {
            child,
            lines,
            seen: Vec::new(),
            addr: "0.0.0.0:0".parse().unwrap(),
            admin: None,
        };
        let listening = p.wait_for(|v| v["message"] == "casegate listening");
        p.addr = listening["addr"].as_str().unwrap().parse().unwrap();
        p.admin = listening["admin"].as_str().and_then(|a| a.parse().ok());
        p
    }

    /// Reads log lines (every one must be JSON) until one matches; panics after 20 s.
    pub fn wait_for(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| want(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
                self.seen.push(v.clone());
                if want(&v) {
                    return v;
                }
            }
        }
        panic!("no such log line; seen:\n{:#?}", self.seen);
    }

    /// Every line logged so far.
    pub fn drain_lines(&mut self) -> Vec<Value> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(serde_json::from_str(&line).unwrap());
        }
        self.seen.clone()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits (at most `limit`) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("casegate did not exit within {limit:?}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Thalamus upload whose body is sent by hand: the head and `first` body bytes at once,
/// the rest when asked.
pub struct SlowUpload {
    stream: TcpStream,
    rest: Vec<u8>,
}

const BOUNDARY: &str = "slowb0undary";

impl SlowUpload {
    pub async fn start(addr: SocketAddr, prefix: &str, data: &[u8], first: usize) -> SlowUpload {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let head = format!(
            "POST {prefix}/api/v4/cases/7/files?touchpoint=t&token={CLIENT_TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..first]).await.unwrap();
        SlowUpload {
            stream,
            rest: body[first..].to_vec(),
        }
    }

    /// Sends the rest of the body and reads the answer (status line and body).
    pub async fn finish(mut self) -> std::io::Result<String> {
        self.stream.write_all(&self.rest).await?;
        let mut answer = String::new();
        self.stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }
}

/// A small Thalamus upload through `addr`; the answer's status line and body.
pub async fn small(addr: SocketAddr, prefix: &str, data: &[u8]) -> String {
    SlowUpload::start(addr, prefix, data, 0)
        .await
        .finish()
        .await
        .unwrap()
}
