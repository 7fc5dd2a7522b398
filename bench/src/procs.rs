//! Child processes (the emulators and casegate): started with their stderr drained by a
//! thread that keeps the last lines for error messages and picks the address out of the
//! start-up log line; killed and reaped when their guard is dropped, on every path out,
//! errors and panics included.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Res;

/// How many of a child's last log lines are kept for error messages.
const KEPT_LINES: usize = 40;

/// How long a child may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running child process; dropping it kills and reaps it.
pub struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// Starts `cmd` (stdin and stdout closed, stderr drained, `NO_COLOR=1`) and waits for
    /// the first log line containing `marker`; returns the child and the value of that
    /// line's `key=VALUE` field.
    pub fn start(name: &str, mut cmd: Command, marker: &str, key: &str) -> Res<(Proc, String)> {
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LINES)));
        let (found_tx, found_rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            let (marker, key) = (marker.to_owned(), key.to_owned());
            std::thread::spawn(move || {
                let mut found_tx = Some(found_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&line);
                    if line.contains(&marker) {
                        if let (Some(value), Some(tx)) = (field(&line, &key), found_tx.take()) {
                            // The receiver may have given up waiting; nothing to do then.
                            let _ = tx.send(value.to_owned());
                        }
                    }
                    let mut kept = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if kept.len() == KEPT_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
        let proc = Proc {
            name: name.to_owned(),
            child,
            log,
        };
        match found_rx.recv_timeout(START_TIMEOUT) {
            Ok(value) => Ok((proc, value)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "{name} did not log {marker:?} with {key}= within {START_TIMEOUT:?}{}",
                proc.recent_log()
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "{name} exited before logging {marker:?}{}",
                proc.recent_log()
            )),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has exited (with its last log lines).
    pub fn check_alive(&mut self) -> Res<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}){}",
                self.name,
                self.recent_log()
            )),
            Err(e) => Err(format!("cannot check on {}: {e}", self.name)),
        }
    }

    /// The last lines the process logged, as a message suffix (empty if none).
    pub fn recent_log(&self) -> String {
        let kept = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = kept.iter().map(String::as_str).collect();
        format!("; its last log lines:\n  {}", lines.join("\n  "))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Already gone is fine; the point is that it is gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI escape sequences (colours) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // CSI: ESC [ parameters, ended by a byte in '@'..='~'. Anything else: drop ESC.
        if chars.clone().next() == Some('[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The value of `key=VALUE` in a tracing log line (up to the next space).
/// The value of `key=VALUE` in a text line, or of `"key":"VALUE"` in a JSON one (casegate
/// run with `CASEGATE_LOG_FORMAT=json`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("{key}=");
    let at = line
        .match_indices(&pattern)
        .map(|(at, _)| at)
        .find(|&at| at == 0 || line.as_bytes()[at - 1] == b' ');
    let Some(at) = at else {
        let quoted = format!("\"{key}\":\"");
        let at = line.find(&quoted)?;
        return line[at + quoted.len()..].split('"').next();
    };
    let value = &line[at + pattern.len()..];
    let value = value.split_whitespace().next()?;
    Some(value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_in_coloured_lines() {
        let line = "\u{1b}[2m2026-11-23T09:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    \u{1b}[2mcasegate::emulator\u{1b}[0m: emulator listening \
                    \u{1b}[3mdialect\u{1b}[0m\u{1b}[2m=\u{1b}[0mtines \
                    \u{1b}[3murl\u{1b}[0m\u{1b}[2m=\u{1b}[0mhttp://127.0.0.1:40123";
        let plain = strip_ansi(line);
        assert_eq!(field(&plain, "url"), Some("http://127.0.0.1:40123"));
        assert_eq!(
            field("casegate listening addr=127.0.0.1:5 routes=4", "addr"),
            Some("127.0.0.1:5")
        );
        assert_eq!(field("x myaddr=1", "addr"), None);
        assert_eq!(
            field(
                r#"{"timestamp":"2026-12-02T23:00:00Z","level":"INFO","message":"casegate listening","addr":"127.0.0.1:5","target":"casegate::server"}"#,
                "addr"
            ),
            Some("127.0.0.1:5")
        );
        assert_eq!(field(r#"{"myaddr":"1"}"#, "addr"), None);
    }
}
