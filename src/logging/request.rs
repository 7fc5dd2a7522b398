//! A request's part in the log, without `tracing`'s span registry.
//!
//! Every line logged while a request is served names it, as a `request` span with its id,
//! method and path would: `request{request_id=... method=POST path=/...}:` in the text
//! format, `"span":{"method":...,"path":...,"request_id":...,"name":"request"}` in the
//! JSON one. A span cost every request about 4 500 instructions (created in the registry
//! with its fields formatted, entered and left through the filter and the registry on
//! every poll, closed), while a request already runs in its task-local context
//! ([`crate::context`]): [`FastText`](super::FastText) and [`FastJson`](super::FastJson)
//! read it from there and write the same bytes. The coloured terminal format is
//! `tracing-subscriber`'s own, and a filter that names spans (`[request]`) needs them to
//! exist: with either, [`request_spans`] is on and tower-http's trace layer makes the
//! span as before.
//!
//! The access line ([`AccessLine`]) is written directly into the log's [`LineSink`] when
//! the format is casegate's own ([`write_access_directly`]): the same bytes as the
//! `casegate::access` event through `tracing`, without its dispatch and a visitor call
//! per field. It goes through `tracing` otherwise (the coloured format; a process that
//! set up its own subscriber, as tests do), and either way only when the filter lets
//! `casegate::access` at `INFO` through.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use tracing::Level;
use tracing_subscriber::fmt::format::Writer;

use super::{write_debug_f64, write_debug_str, write_json_f64, write_time, LineSink};
use crate::codec::json_out::{write_json_str, JsonEscape};
use crate::context::{self, RequestCtx};

/// Whether requests get a `tracing` span (see the module's documentation).
static SPANS: AtomicBool = AtomicBool::new(false);

/// Makes requests get a `tracing` span (on) or be named from their context (off, the
/// default). Set once, before serving.
pub fn set_request_spans(on: bool) {
    SPANS.store(on, Ordering::Relaxed);
}

/// Whether requests get a `tracing` span.
pub fn request_spans() -> bool {
    SPANS.load(Ordering::Relaxed)
}

/// The log's format, for lines written directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

struct Direct {
    sink: LineSink,
    format: LineFormat,
}

static DIRECT: OnceLock<Direct> = OnceLock::new();

/// From now on the access line is written straight into `sink`, in `format` (the bytes
/// [`FastText`](super::FastText) or [`FastJson`](super::FastJson) write for the event).
/// Once per process; a second call is ignored.
pub fn write_access_directly(sink: LineSink, format: LineFormat) {
    let _ = DIRECT.set(Direct { sink, format });
}

/// A request's access line: the `casegate::access` event's fields, in its order.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The path alone, never the query.
    pub path: &'a str,
    pub route: &'a str,
    pub front: &'a str,
    pub back: &'a str,
    pub operation: &'a str,
    pub status: u16,
    pub code: &'a str,
    pub file_bytes: u64,
    pub spooled: bool,
    pub dropped: &'a [&'a str],
    pub upstream_status: u64,
    pub upstream_ms: f64,
    pub ms: f64,
    pub complete: bool,
}

/// `Casegate-Dropped`'s names joined by commas, as the event's `dropped` shows them.
struct Joined<'a>(&'a [&'a str]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

thread_local! {
    /// The line being written, kept between lines.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line buffer larger than this is given back after its line.
const KEEP_LINE: usize = 4096;

impl AccessLine<'_> {
    /// Logs the line: written directly when [`write_access_directly`] was called, as a
    /// `tracing` event otherwise.
    pub fn log(&self) {
        match DIRECT.get() {
            Some(direct) => {
                if tracing::enabled!(target: "casegate::access", Level::INFO) {
                    self.write_to(direct);
                }
            }
            None => self.event(),
        }
    }

    /// The line as a `tracing` event.
    fn event(&self) {
        tracing::info!(
            target: "casegate::access",
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            route = self.route,
            front = self.front,
            back = self.back,
            operation = self.operation,
            status = self.status,
            code = self.code,
            file_bytes = self.file_bytes,
            spooled = self.spooled,
            dropped = %Joined(self.dropped),
            upstream_status = self.upstream_status,
            upstream_ms = self.upstream_ms,
            ms = self.ms,
            complete = self.complete,
        );
    }

    fn write_to(&self, direct: &Direct) {
        let write = |line: &mut String| {
            line.clear();
            let now = SystemTime::now();
            let written = match direct.format {
                // Into the `String` itself: through tracing's `Writer` each piece took a
                // dynamic call (about 30 instructions each, 25 pieces a line).
                LineFormat::Text => self.text(line, now),
                LineFormat::Json => self.json(line, now),
            };
            if written.is_ok() {
                direct.sink.append(line.as_bytes());
            }
        };
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                write(&mut line);
                if line.capacity() > KEEP_LINE {
                    *line = String::new();
                }
            }
            // Only if logging re-entered itself: a buffer of its own.
            Err(_) => write(&mut String::new()),
        });
    }

    /// The text format's line ([`FastText`](super::FastText) over
    /// [`FastFields`](super::FastFields)): `%` fields bare, strings quoted.
    fn text(&self, w: &mut String, now: SystemTime) -> fmt::Result {
        write_time(w, now)?;
        w.write_str("  INFO casegate::access: request_id=")?;
        w.write_str(self.request_id)?;
        w.write_str(" method=")?;
        w.write_str(self.method)?;
        w.write_str(" path=")?;
        w.write_str(self.path)?;
        for (name, value) in [
            (" route=", self.route),
            (" front=", self.front),
            (" back=", self.back),
            (" operation=", self.operation),
        ] {
            w.write_str(name)?;
            write_debug_str(w, value)?;
        }
        w.write_str(" status=")?;
        w.write_str(itoa::Buffer::new().format(self.status))?;
        w.write_str(" code=")?;
        write_debug_str(w, self.code)?;
        w.write_str(" file_bytes=")?;
        w.write_str(itoa::Buffer::new().format(self.file_bytes))?;
        w.write_str(" spooled=")?;
        w.write_str(bool_str(self.spooled))?;
        write!(w, " dropped={}", Joined(self.dropped))?;
        w.write_str(" upstream_status=")?;
        w.write_str(itoa::Buffer::new().format(self.upstream_status))?;
        w.write_str(" upstream_ms=")?;
        write_debug_f64(w, self.upstream_ms)?;
        w.write_str(" ms=")?;
        write_debug_f64(w, self.ms)?;
        w.write_str(" complete=")?;
        w.write_str(bool_str(self.complete))?;
        w.write_char('\n')
    }

    /// The JSON format's line ([`FastJson`](super::FastJson)): the fields flattened
    /// between the level and the target, no span (the event is logged when the answer's
    /// body is done, outside the request's scope).
    fn json(&self, w: &mut String, now: SystemTime) -> fmt::Result {
        w.write_str("{\"timestamp\":\"")?;
        write_time(w, now)?;
        w.write_str("\",\"level\":\"INFO\"")?;
        for (name, value) in [
            (",\"request_id\":", self.request_id),
            (",\"method\":", self.method),
            (",\"path\":", self.path),
            (",\"route\":", self.route),
            (",\"front\":", self.front),
            (",\"back\":", self.back),
            (",\"operation\":", self.operation),
        ] {
            w.write_str(name)?;
            write_json_str(w, value)?;
        }
        w.write_str(",\"status\":")?;
        w.write_str(itoa::Buffer::new().format(self.status))?;
        w.write_str(",\"code\":")?;
        write_json_str(w, self.code)?;
        w.write_str(",\"file_bytes\":")?;
        w.write_str(itoa::Buffer::new().format(self.file_bytes))?;
        w.write_str(",\"spooled\":")?;
        w.write_str(bool_str(self.spooled))?;
        w.write_str(",\"dropped\":\"")?;
        write!(JsonEscape(&mut *w), "{}", Joined(self.dropped))?;
        w.write_str("\",\"upstream_status\":")?;
        w.write_str(itoa::Buffer::new().format(self.upstream_status))?;
        w.write_str(",\"upstream_ms\":")?;
        write_json_f64(w, self.upstream_ms)?;
        w.write_str(",\"ms\":")?;
        write_json_f64(w, self.ms)?;
        w.write_str(",\"complete\":")?;
        w.write_str(bool_str(self.complete))?;
        w.write_str(",\"target\":\"casegate::access\"}\n")
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// The text format's `request{request_id=... method=... path=...}:` for the current
/// request, when requests are named from their context and code runs inside one. True
/// when it was written.
pub(super) fn write_text_scope(w: &mut Writer<'_>) -> Result<bool, fmt::Error> {
    if request_spans() {
        return Ok(false);
    }
    context::with_current(|ctx: &RequestCtx| {
        w.write_str("request{request_id=")?;
        w.write_str(&ctx.id)?;
        w.write_str(" method=")?;
        w.write_str(ctx.method.as_str())?;
        w.write_str(" path=")?;
        w.write_str(ctx.uri.path())?;
        w.write_str("}:")
    })
    .transpose()
    .map(|written| written.is_some())
}

/// The JSON format's `,"span":{...}` for the current request, as
/// [`write_text_scope`] (the span's fields in byte order, as `JsonFields` keeps them).
pub(super) fn write_json_scope(w: &mut Writer<'_>) -> fmt::Result {
    if request_spans() {
        return Ok(());
    }
    context::with_current(|ctx: &RequestCtx| {
        w.write_str(",\"span\":{\"method\":")?;
        write_json_str(w, ctx.method.as_str())?;
        w.write_str(",\"path\":")?;
        write_json_str(w, ctx.uri.path())?;
        w.write_str(",\"request_id\":")?;
        write_json_str(w, &ctx.id)?;
        w.write_str(",\"name\":\"request\"}")
    })
    .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use http::{Method, Uri};
    use tracing::Level;

    use super::*;

    /// Lines written by a subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    struct LinesWriter(Arc<Mutex<Vec<u8>>>);

    impl io::Write for LinesWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = LinesWriter;
        fn make_writer(&'a self) -> LinesWriter {
            LinesWriter(Arc::clone(&self.0))
        }
    }

    impl Lines {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    /// tracing-subscriber's own text format (colour off), casegate's, its JSON format as
    /// casegate sets it, casegate's; each writing into its lines.
    fn subscribers() -> [(Lines, tracing::Dispatch); 4] {
        let lines: [Lines; 4] = Default::default();
        let dispatch = [
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(lines[0].clone())
                    .with_ansi(false)
                    .with_max_level(Level::TRACE)
                    .finish(),
            ),
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(lines[1].clone())
                    .with_ansi(false)
                    .with_max_level(Level::TRACE)
                    .fmt_fields(crate::logging::FastFields)
                    .event_format(crate::logging::FastText)
                    .finish(),
            ),
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(lines[2].clone())
                    .with_max_level(Level::TRACE)
                    .finish(),
            ),
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .fmt_fields(crate::logging::FastJsonFields)
                    .event_format(crate::logging::FastJson)
                    .with_writer(lines[3].clone())
                    .with_max_level(Level::TRACE)
                    .finish(),
            ),
        ];
        let [a, b, c, d] = lines;
        let [w, x, y, z] = dispatch;
        [(a, w), (b, x), (c, y), (d, z)]
    }

    /// Each line's timestamp (checked for its shape) masked.
    fn masked(text: &str) -> Vec<String> {
        text.lines()
            .map(|line| {
                let ts = match line.strip_prefix("{\"timestamp\":\"") {
                    Some(rest) => &rest[..27],
                    None => &line[..27],
                };
                let shape: String = ts
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '9' } else { c })
                    .collect();
                assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{line}");
                line.replacen(ts, "<time>", 1)
            })
            .collect()
    }

    const AWKWARD: [&str; 6] = [
        "",
        "plain",
        "with \"quotes\" and \\ backslash",
        "tab\tnewline\nreturn\r \u{1b}[31m \u{7f} \u{85}",
        "unicode é 日本 \u{200b}",
        "{braces}=x,y",
    ];

    fn access_lines() -> Vec<AccessLine<'static>> {
        let mut lines = Vec::new();
        for (i, s) in AWKWARD.into_iter().enumerate() {
            let dropped: &'static [&'static str] = match i % 3 {
                0 => &[],
                1 => &["touchpoint"],
                _ => &["description", "comment", "tags"],
            };
            let ms = [0.0, 0.1, 12.5, 99_999.9, 1e21, 0.30000000000000004][i];
            lines.push(AccessLine {
                request_id: ["0b1c", "a\"b\\c{d}", "t-123"][i % 3],
                method: ["POST", "GET", "DELETE", "M-SEARCH"][i % 4],
                path: ["/r/api/v4/cases/7/files", "/a\"b/{c}/%20", "/"][i % 3],
                route: s,
                front: "thalamus",
                back: s,
                operation: "upload",
                status: [200, 401, 502, 65535][i % 4],
                code: ["-", "upstream_unreachable", s][i % 3],
                file_bytes: [0, 5, u64::MAX][i % 3],
                spooled: i % 2 == 0,
                dropped,
                upstream_status: [0, 200, 503][i % 3],
                upstream_ms: ms,
                ms: 12.5 + i as f64,
                complete: i % 2 == 1,
            });
        }
        lines
    }

    /// The access line written directly is the event's line in tracing-subscriber's own
    /// formats and in casegate's, byte for byte (the timestamp masked).
    #[test]
    fn the_access_line_written_directly_is_the_events_line() {
        let [text, fast_text, json, fast_json] = subscribers();
        for (lines, dispatch) in [&text, &fast_text, &json, &fast_json] {
            tracing::dispatcher::with_default(dispatch, || {
                for line in access_lines() {
                    line.event();
                }
            });
            let newlines = lines
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            // A raw newline in a `%` field continues the text line on one of its own.
            assert!(newlines >= AWKWARD.len(), "{newlines}");
        }
        let direct = |format: LineFormat| {
            let mut out = String::new();
            for line in access_lines() {
                match format {
                    LineFormat::Text => line.text(&mut out, SystemTime::now()).unwrap(),
                    LineFormat::Json => line.json(&mut out, SystemTime::now()).unwrap(),
                }
            }
            out
        };
        let text_direct = masked(&direct(LineFormat::Text));
        assert_eq!(masked(&text.0.take()), text_direct);
        assert_eq!(masked(&fast_text.0.take()), text_direct);
        let json_direct = masked(&direct(LineFormat::Json));
        assert_eq!(masked(&json.0.take()), json_direct);
        assert_eq!(masked(&fast_json.0.take()), json_direct);
        assert_eq!(text_direct.len(), AWKWARD.len());
        assert!(
            text_direct[2].contains(" dropped=description,comment,tags upstream_status=503 "),
            "{}",
            text_direct[2]
        );
        assert!(
            json_direct[1].contains(r#","dropped":"touchpoint","upstream_status":200,"#),
            "{}",
            json_direct[1]
        );
    }

    /// What code logs inside a request, named from its context, is what the same code
    /// logs inside a `request` span with the request's fields, in tracing-subscriber's own
    /// formats; spans of its own nest inside it; outside a request nothing is added.
    #[test]
    fn lines_in_a_request_read_as_in_its_span() {
        let log = || {
            tracing::warn!(
                route = "r",
                code = "upstream_unreachable",
                "upstream request failed"
            );
            tracing::info!(target: "casegate::ledger", n = 3u64, "x");
            let inner = tracing::debug_span!("inner", r#type = "x", n = 3u64);
            inner.in_scope(|| tracing::error!(error = "e \"q\"", "in an inner span"));
        };
        let requests = [
            ("0b1c", Method::POST, "/r/api/v4/cases/7/files?token=secret"),
            ("a\"b\\c{d}", Method::GET, "/a\"b/{c}/%20"),
            ("t-1", Method::from_bytes(b"M-SEARCH").unwrap(), "/"),
        ];
        let [text, fast_text, json, fast_json] = subscribers();
        assert!(
            !request_spans(),
            "requests are named from their context by default"
        );
        for (id, method, uri) in &requests {
            let uri: Uri = uri.parse().unwrap();
            // The reference: a real span, as tower-http's trace layer makes it.
            for (_, dispatch) in [&text, &json] {
                tracing::dispatcher::with_default(dispatch, || {
                    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %uri.path());
                    span.in_scope(log);
                    log();
                });
            }
            // casegate's formatters, the request in its context and no span.
            for (_, dispatch) in [&fast_text, &fast_json] {
                tracing::dispatcher::with_default(dispatch, || {
                    let ctx = RequestCtx::new((*id).into(), method.clone(), uri.clone());
                    context::sync_scope(ctx, log);
                    log();
                });
            }
        }
        let (text, fast_text) = (masked(&text.0.take()), masked(&fast_text.0.take()));
        let (json, fast_json) = (masked(&json.0.take()), masked(&fast_json.0.take()));
        assert_eq!(text.len(), 18);
        assert_eq!(text, fast_text);
        assert_eq!(json, fast_json);
        assert!(
            fast_text[0].starts_with(
                "<time>  WARN request{request_id=0b1c method=POST path=/r/api/v4/cases/7/files}: casegate::logging::request::tests: upstream request failed"
            ),
            "{}",
            fast_text[0]
        );
        assert!(
            fast_text[2].contains(" ERROR request{request_id=0b1c method=POST path=/r/api/v4/cases/7/files}:inner{type=\"x\" n=3}: "),
            "{}",
            fast_text[2]
        );
        assert!(!fast_text[3].contains("request{"), "{}", fast_text[3]);
        assert!(
            fast_json[6].ends_with(
                r#","span":{"method":"GET","path":"/a\"b/{c}/%20","request_id":"a\"b\\c{d}","name":"request"}}"#
            ),
            "{}",
            fast_json[6]
        );
        assert!(!fast_json.concat().contains("secret"));
    }
}
