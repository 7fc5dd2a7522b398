//! The log: where its lines go, and how a text line is written.
//!
//! [`FastText`] and [`FastFields`] write the text format's lines (colour off) exactly as
//! `tracing-subscriber`'s default `Full` format and `DefaultFields` do, byte for byte,
//! without its per-piece styling and formatting machinery: the timestamp's date and time
//! kept per second, names and plain strings copied, integers written directly. What is
//! rare (a `message`, an error, a raw identifier) goes to `tracing-subscriber`'s own
//! visitor. Colour on a terminal uses the default format itself. [`FastJson`] and
//! [`FastJsonFields`] do the same for the JSON format: the default's bytes, without
//! building a map of JSON values for each span nor parsing it back for every line.
//! Tests compare each with the default it stands for.
//!
//! Inside a request both name it from its context, as its `request` span would, without a
//! span; the access line is written directly ([`request`]'s documentation).
//!
//! [`LineSink`] is the writer behind `tracing-subscriber`'s fmt layer. A line is appended
//! to one shared buffer under a lock and the request goes on; a thread of its own takes
//! the whole buffer at once and writes it in one `write`, at most every
//! [`GATHER`]. The thread is woken only by the line that finds the buffer empty (one
//! wake per batch, not per line), and sleeps without a timer while nothing is logged.
//! Nothing is dropped while the output takes writes: when [`MAX_HELD`] bytes wait (the
//! output blocked), a logging thread waits for room. A write the output refuses (stderr
//! redirected to a full disk, a pipe whose reader is gone) loses its batch, with nowhere
//! to say so but [`lines_lost`] (`casegate_log_lines_lost_total`). [`LineSinkGuard`]
//! writes what is held when it is dropped, at exit.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod request;

pub use request::{
    request_spans, set_request_spans, write_access_directly, AccessLine, LineFormat,
};

use crate::codec::json_out::{write_json_str, JsonEscape};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How long the writer thread lets lines gather after the first one of a batch.
pub const GATHER: Duration = Duration::from_millis(2);
/// The most bytes held before logging waits for the writer.
pub const MAX_HELD: usize = 4 * 1024 * 1024;
/// A buffer larger than this after its write is given back, not kept for the next.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Log lines whose write the output refused, in this process (every [`LineSink`]'s).
static LINES_LOST: AtomicU64 = AtomicU64::new(0);

/// Log lines lost so far: written into a batch whose write the output refused.
pub fn lines_lost() -> u64 {
    LINES_LOST.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Held {
    buf: Vec<u8>,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    held: Mutex<Held>,
    /// The writer thread waits here for a first line or the close.
    wake: Condvar,
    /// Logging threads wait here while [`MAX_HELD`] bytes are held.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves plain bytes behind: keep going.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer side of the log: cheap to clone, one per process.
#[derive(Clone)]
pub struct LineSink {
    shared: Arc<Shared>,
}

/// Ends the writer thread when dropped, after it wrote every line held.
pub struct LineSinkGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LineSink {
    /// Starts the writer thread (named `thread_name`) over `out`.
    pub fn new<W: Write + Send + 'static>(
        out: W,
        thread_name: &str,
    ) -> io::Result<(LineSink, LineSinkGuard)> {
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || write_loop(&for_thread, out))?;
        Ok((
            LineSink {
                shared: Arc::clone(&shared),
            },
            LineSinkGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    fn append(&self, bytes: &[u8]) {
        let shared = &*self.shared;
        let mut held = shared.lock();
        while held.buf.len() >= MAX_HELD {
            if held.closing {
                // The writer is gone or going: nothing more can be written, and the
                // buffer must not grow without end.
                return;
            }
            held = shared.room.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        let first = held.buf.is_empty();
        held.buf.extend_from_slice(bytes);
        drop(held);
        if first {
            shared.wake.notify_one();
        }
    }
}

fn write_loop<W: Write>(shared: &Shared, mut out: W) {
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let mut held = shared.lock();
        while held.buf.is_empty() && !held.closing {
            held = shared.wake.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        if held.buf.is_empty() {
            // Closing, and everything written.
            break;
        }
        if !held.closing {
            // Let the lines of the next moments join this batch.
            drop(held);
            std::thread::sleep(GATHER);
            held = shared.lock();
        }
        std::mem::swap(&mut held.buf, &mut spare);
        drop(held);
        shared.room.notify_all();
        // Nowhere to report a failed write to the log but a counter; the next batch tries
        // again. (Part of the batch may have gone out: it is counted whole.)
        if out.write_all(&spare).and_then(|()| out.flush()).is_err() {
            let lines = memchr::memchr_iter(b'\n', &spare).count() as u64;
            LINES_LOST.fetch_add(lines, Ordering::Relaxed);
        }
        spare.clear();
        if spare.capacity() > KEEP_CAPACITY {
            spare = Vec::new();
        }
    }
    let _ = out.flush();
}

impl Drop for LineSinkGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One writer per event: the fmt layer writes each formatted line in one `write_all`.
pub struct LineWriter<'a> {
    sink: &'a LineSink,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { sink: self }
    }
}

/// The text format's event line: `tracing-subscriber`'s `Full` format with colour off
/// and its default settings (timestamp, level, the spans from the root with their fields,
/// target, the event's fields), written directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastText;

impl<S, N> FormatEvent<S, N> for FastText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            Level::ERROR => "ERROR ",
        })?;
        // The request the line belongs to, outermost, as its span was.
        let mut seen = request::write_text_scope(&mut writer)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        writer.write_char('{')?;
                        writer.write_str(fields)?;
                        writer.write_char('}')?;
                    }
                }
                writer.write_char(':')?;
            }
        }
        if seen {
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

thread_local! {
    /// The last second written, and its `YYYY-MM-DDTHH:MM:SS.` text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `tracing-subscriber`'s `SystemTime` timer's text, and the space after it:
/// `2026-12-02T22:15:47.263580Z `.
fn write_timestamp(w: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    write_time(w, now)?;
    w.write_char(' ')
}

/// `tracing-subscriber`'s `SystemTime` timer's text: `2026-12-02T22:15:47.263580Z`.
fn write_time(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let Ok(since) = now.duration_since(UNIX_EPOCH) else {
        // A clock before 1970: rare enough for the timer itself.
        use tracing_subscriber::fmt::time::FormatTime;
        if tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(w))
            .is_err()
        {
            w.write_str("<unknown time>")?;
        }
        return Ok(());
    };
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            cell.1.clear();
            date_time(&mut cell.1, secs)?;
            cell.0 = secs;
        }
        w.write_str(&cell.1)
    })?;
    let mut micros = [b'0'; 6];
    let mut n = since.subsec_micros();
    for d in micros.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Six ASCII digits.
    w.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)?;
    w.write_char('Z')
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` after 1970 (UTC), as `tracing-subscriber` writes it
/// (a year past 9999 gets a `+`).
fn date_time(out: &mut String, secs: u64) -> fmt::Result {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    if year > 9999 {
        write!(out, "+{year}")?;
    } else {
        write!(out, "{year:04}")?;
    }
    write!(
        out,
        "-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The text format's fields: `tracing-subscriber`'s `DefaultFields` (`name=value`, a
/// space between, strings quoted as `{:?}` quotes them), written directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastFields;

impl<'a> MakeVisitor<Writer<'a>> for FastFields {
    type Visitor = FastVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        FastVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// [`FastFields`]' visitor.
pub struct FastVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl FastVisitor<'_> {
    /// True when `field` is one `DefaultVisitor` treats specially.
    fn special(field: &Field) -> bool {
        let name = field.name();
        name == "message" || name.starts_with("r#")
    }

    /// `DefaultVisitor`'s handling of one field, for the rare cases.
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        self.is_empty = false;
    }

    /// The separator and `name=`.
    fn name(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    /// One field: `special` (`DefaultVisitor`'s handling) for a `message` or a raw
    /// identifier, else `name=` and `value`.
    fn field(
        &mut self,
        field: &Field,
        special: impl FnOnce(&mut DefaultVisitor<'_>),
        value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
    ) {
        if self.result.is_err() {
            return;
        }
        if Self::special(field) {
            self.delegate(special);
        } else {
            self.result = self.name(field).and_then(|()| value(&mut self.writer));
        }
    }
}

/// `{:?}` of a string: quoted as is when it holds only printable ASCII other than `"`
/// and `\\`, else by `Debug` itself.
fn write_debug_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        w.write_char('"')?;
        w.write_str(s)?;
        w.write_char('"')
    } else {
        write!(w, "{s:?}")
    }
}

/// `{:?}` of an `f64`. A whole number of tenths below 10^14 (the access log's
/// milliseconds are rounded to tenths) is written directly: its shortest decimal form is
/// those tenths (at most 15 significant digits name one `f64` each), which `Debug`
/// prints with at least one decimal. Anything else by `Debug` itself.
fn write_debug_f64(w: &mut impl fmt::Write, value: f64) -> fmt::Result {
    if value.is_sign_positive() && value < 1e14 {
        let tenths = (value * 10.0).round();
        if tenths / 10.0 == value {
            // Below 10^15, so exact as an integer.
            let tenths = tenths as u64;
            w.write_str(itoa::Buffer::new().format(tenths / 10))?;
            w.write_char('.')?;
            return w.write_char(char::from(b'0' + (tenths % 10) as u8));
        }
    }
    write!(w, "{value:?}")
}

impl Visit for FastVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(
            field,
            |v| v.record_str(field, value),
            |w| write_debug_str(w, value),
        );
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(
            field,
            |v| v.record_u64(field, value),
            |w| w.write_str(itoa::Buffer::new().format(value)),
        );
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(
            field,
            |v| v.record_i64(field, value),
            |w| w.write_str(itoa::Buffer::new().format(value)),
        );
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(
            field,
            |v| v.record_bool(field, value),
            |w| w.write_str(if value { "true" } else { "false" }),
        );
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(
            field,
            |v| v.record_f64(field, value),
            |w| write_debug_f64(w, value),
        );
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.delegate(|v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(
            field,
            |v| v.record_debug(field, value),
            |w| write!(w, "{value:?}"),
        );
    }
}

impl VisitOutput<fmt::Result> for FastVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for FastVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// The JSON format's event line: `tracing-subscriber`'s `json()` format as casegate sets
/// it (the event's fields flattened, the current span with its fields, no span list),
/// written directly: the same keys in the same order, the same escapes. The span's
/// fields are `JsonFields`' text (or [`FastJsonFields`]', the same), which the default
/// format parses and writes again unchanged; here they are copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastJson;

impl<S, N> FormatEvent<S, N> for FastJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_time(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonEventVisitor {
            writer: writer.by_ref(),
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            let ext = span.extensions();
            // The fields' formatter always leaves an object; anything else is not a line.
            let fields = ext
                .get::<FormattedFields<N>>()
                .map(|f| f.fields.as_str())
                .filter(|f| f.starts_with('{') && f.ends_with('}'))
                .ok_or(fmt::Error)?;
            writer.write_str(",\"span\":")?;
            writer.write_str(&fields[..fields.len() - 1])?;
            if fields.len() > 2 {
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_json_str(&mut writer, span.metadata().name())?;
            writer.write_char('}')?;
        } else {
            // The request the line belongs to, as its span was.
            request::write_json_scope(&mut writer)?;
        }
        writer.write_str("}\n")
    }
}

/// The JSON format's span fields: `tracing-subscriber`'s `JsonFields` text (an object,
/// keys in byte order, the last value of a key recorded twice), written without building
/// a map of JSON values for every span.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastJsonFields;

impl<'a> FormatFields<'a> for FastJsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'a>,
        fields: R,
    ) -> fmt::Result {
        let mut v = JsonFieldsVisitor::default();
        fields.record(&mut v);
        v.write(&mut writer)
    }

    fn add_fields(
        &self,
        current: &'a mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Rare (a span's field recorded after it began): the fields so far read back.
        let mut v = JsonFieldsVisitor::default();
        if !current.fields.is_empty() {
            let old: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&current.fields).map_err(|_| fmt::Error)?;
            for (key, value) in old {
                v.put(Cow::Owned(key), |t| write!(t, "{value}"));
            }
        }
        fields.record(&mut v);
        let mut text = String::new();
        v.write(&mut text)?;
        current.fields = text;
        Ok(())
    }
}

/// [`FastJsonFields`]' visitor: each value's JSON text, then sorted by key.
#[derive(Default)]
struct JsonFieldsVisitor {
    entries: Vec<(Cow<'static, str>, std::ops::Range<usize>)>,
    text: String,
}

impl JsonFieldsVisitor {
    fn put(&mut self, key: Cow<'static, str>, value: impl FnOnce(&mut String) -> fmt::Result) {
        let start = self.text.len();
        if value(&mut self.text).is_ok() {
            self.entries.push((key, start..self.text.len()));
        } else {
            self.text.truncate(start);
        }
    }

    fn write(mut self, w: &mut impl fmt::Write) -> fmt::Result {
        // Stable: of a key recorded twice, the later entry comes last and is kept.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        w.write_char('{')?;
        let mut first = true;
        for (i, (key, range)) in self.entries.iter().enumerate() {
            if self.entries.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            if !first {
                w.write_char(',')?;
            }
            first = false;
            write_json_str(w, key)?;
            w.write_char(':')?;
            w.write_str(&self.text[range.clone()])?;
        }
        w.write_char('}')
    }
}

impl Visit for JsonFieldsVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name().into(), |t| write_json_f64(t, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name().into(), |t| {
            t.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name().into(), |t| {
            t.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name().into(), |t| {
            t.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name().into(), |t| write_json_str(t, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put(field.name().into(), |t| {
            t.write_char('[')?;
            for (i, b) in value.iter().enumerate() {
                if i > 0 {
                    t.write_char(',')?;
                }
                t.write_str(itoa::Buffer::new().format(*b))?;
            }
            t.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        let key = name.strip_prefix("r#").unwrap_or(name);
        self.put(key.into(), |t| write_json_debug(t, value));
    }
}

/// The flattened event fields of [`FastJson`]: `,"name":value` each, as
/// `tracing-serde`'s map visitor writes them.
struct JsonEventVisitor<'a> {
    writer: Writer<'a>,
    result: fmt::Result,
}

impl JsonEventVisitor<'_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_char(',')?;
        write_json_str(&mut self.writer, field.name())?;
        self.writer.write_char(':')
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(&mut self.writer));
        }
    }
}

impl Visit for JsonEventVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_json_str(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| write_json_debug(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| write_json_f64(w, value));
    }
}

/// `{:?}` of `value` as a JSON string.
fn write_json_debug(w: &mut impl fmt::Write, value: &dyn fmt::Debug) -> fmt::Result {
    w.write_char('"')?;
    write!(JsonEscape(&mut *w), "{value:?}")?;
    w.write_char('"')
}

/// serde_json's own text for a float (`null` when it is not finite).
fn write_json_f64(w: &mut impl fmt::Write, value: f64) -> fmt::Result {
    match serde_json::Number::from_f64(value) {
        Some(n) => write!(w, "{n}"),
        None => w.write_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into a shared Vec, optionally held shut until released.
    #[derive(Clone, Default)]
    struct Collect {
        out: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Collect {
        fn open(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }
    }

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut open = self.gate.0.lock().unwrap();
            while !*open {
                open = self.gate.1.wait(open).unwrap();
            }
            self.out.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The tenths written directly read as `Debug` reads them, and every other value is
    /// `Debug`'s own.
    #[test]
    fn an_f64_is_written_as_debug_writes_it() {
        let check = |v: f64| {
            let mut fast = String::new();
            write_debug_f64(&mut fast, v).unwrap();
            assert_eq!(fast, format!("{v:?}"), "{v:e}");
        };
        for n in 0..200_000_u64 {
            check(n as f64 / 10.0);
            check((n as f64 * 0.1 * 10.0).round() / 10.0);
        }
        // Tenths near the bound, with 15 and 16 significant digits.
        let mut n: u64 = 999_999_999_999_990;
        while n < 1_000_000_000_000_010 {
            check(n as f64 / 10.0);
            n += 1;
        }
        for v in [
            0.05,
            0.25,
            1.0 / 3.0,
            1e-5,
            1e-7,
            123.456,
            1e14,
            1e15,
            1e16,
            1e21,
            -0.0,
            -1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
        ] {
            check(v);
        }
    }

    fn write_line(sink: &LineSink, line: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        sink.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_arrives_whole_and_in_each_threads_order() {
        let out = Collect::default();
        out.open();
        let (sink, guard) = LineSink::new(out.clone(), "test-log").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        write_line(
                            &sink,
                            &format!("thread={t} line={i} {}\n", "x".repeat(i % 97)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.out.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let mut words = line.split(' ');
            let t: usize = words.next().unwrap()["thread=".len()..].parse().unwrap();
            let i: usize = words.next().unwrap()["line=".len()..].parse().unwrap();
            assert_eq!(i, next[t], "thread {t} out of order");
            assert_eq!(words.next().unwrap_or(""), "x".repeat(i % 97));
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
        // Gathered: far fewer writes than lines.
        let writes = *out.writes.lock().unwrap();
        assert!(writes < 20_000, "{writes} writes for 20 000 lines");
    }

    #[test]
    fn a_blocked_output_makes_logging_wait_and_loses_nothing() {
        let out = Collect::default();
        let (sink, guard) = LineSink::new(out.clone(), "test-log").unwrap();
        let line = format!("{}\n", "y".repeat(1023));
        let lines = MAX_HELD / line.len() * 3;
        let writer = {
            let sink = sink.clone();
            let line = line.clone();
            std::thread::spawn(move || {
                for _ in 0..lines {
                    write_line(&sink, &line);
                }
            })
        };
        // The output is shut: the logging thread must stop at MAX_HELD held.
        std::thread::sleep(Duration::from_millis(300));
        let went_on = writer.is_finished();
        let held = sink.shared.lock().buf.len();
        // Opened before any assertion: a failing test must not leave the writer blocked.
        out.open();
        assert!(!went_on, "logging went on past MAX_HELD");
        assert!(held <= MAX_HELD + line.len(), "{held} bytes held");
        writer.join().unwrap();
        drop(guard);
        assert_eq!(out.out.lock().unwrap().len(), lines * line.len());
    }

    /// An output that refuses every write (a full disk).
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_an_output_refuses_are_counted_and_logging_goes_on() {
        let before = lines_lost();
        let (sink, guard) = LineSink::new(Full, "test-log").unwrap();
        // More than MAX_HELD: logging must not wait on an output that only fails.
        let line = format!("{}\n", "f".repeat(1023));
        let lines = MAX_HELD / line.len() * 2;
        for _ in 0..lines {
            write_line(&sink, &line);
        }
        drop(guard);
        // No other test's output fails: every line this one logged is counted, once.
        assert_eq!(lines_lost() - before, lines as u64);
    }

    #[test]
    fn lines_after_the_close_do_not_pile_up() {
        let out = Collect::default();
        out.open();
        let (sink, guard) = LineSink::new(out.clone(), "test-log").unwrap();
        drop(guard);
        let line = format!("{}\n", "z".repeat(1023));
        for _ in 0..(MAX_HELD / line.len()) * 2 {
            write_line(&sink, &line);
        }
        assert!(sink.shared.lock().buf.len() <= MAX_HELD + line.len());
    }

    #[test]
    fn the_guard_writes_what_is_held() {
        let out = Collect::default();
        out.open();
        let (sink, guard) = LineSink::new(out.clone(), "test-log").unwrap();
        write_line(&sink, "last words\n");
        drop(guard);
        assert_eq!(&*out.out.lock().unwrap(), b"last words\n");
    }

    /// Lines written by a subscriber, for comparing formats.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = LinesWriter;
        fn make_writer(&'a self) -> LinesWriter {
            LinesWriter(Arc::clone(&self.0))
        }
    }

    struct LinesWriter(Arc<Mutex<Vec<u8>>>);

    impl Write for LinesWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot reach the \"upstream\"")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Every kind of field and span casegate logs, and the awkward values.
    fn log_everything() {
        let strings = [
            "",
            "plain",
            "with \"quotes\" and \\ backslash",
            "tab\tnewline\nreturn\r",
            "escape \u{1b}[31m red",
            "del \u{7f} c1 \u{85}",
            "unicode é ü 日本 \u{200b} zero-width",
            "it's",
            "say \"hi\"",
            "back\\slash",
        ];
        let err = Outer(std::io::Error::other("connection refused"));
        let route = "caseiq-to-tines";
        tracing::info!(target: "casegate::server", route, front = "caseiq", "route");
        let span = tracing::info_span!("request", request_id = %"0b1c", method = %"POST", path = %"/r/api/v4/cases/7/files");
        let _entered = span.enter();
        for s in strings {
            tracing::info!(target: "casegate::access", request_id = %"0b1c", path = %s, route = s, status = 200u16, code = "-", file_bytes = 5u64, negative = -42i64, zero = 0i64, min = i64::MIN, max = u64::MAX, spooled = false, complete = true, upstream_ms = 0.0f64, ms = 12.5f64, neg = -0.0f64, big = 1e21f64);
            tracing::warn!(value = ?s, "a message with {s}");
            tracing::error!(message = s);
        }
        let inner = tracing::debug_span!("inner", r#type = "x", n = 3u64);
        let _inner = inner.enter();
        tracing::warn!(
            error = &err as &(dyn std::error::Error + 'static),
            r#type = "t",
            "failed"
        );
        tracing::trace!(target: "casegate::ledger", dur = ?Duration::from_micros(1500), "");
        tracing::info!(list = ?vec!["a", "b"]);
    }

    #[test]
    fn the_fast_text_format_writes_what_the_default_writes() {
        let default = Lines::default();
        let fast = Lines::default();
        let default_sub = tracing_subscriber::fmt()
            .with_writer(default.clone())
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .finish();
        let fast_sub = tracing_subscriber::fmt()
            .with_writer(fast.clone())
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .fmt_fields(FastFields)
            .event_format(FastText)
            .finish();
        tracing::subscriber::with_default(default_sub, log_everything);
        tracing::subscriber::with_default(fast_sub, log_everything);
        let (default, fast) = (default.take(), fast.take());
        // Timestamps differ: each line's is checked for its shape and then masked. (A
        // value with a raw newline, through `%`, continues on a line of its own.)
        let mask = |text: &str| -> (String, usize) {
            let mut stamped = 0;
            let masked = text
                .split_inclusive('\n')
                .map(|line| {
                    let shape: String = line
                        .chars()
                        .take(28)
                        .map(|c| if c.is_ascii_digit() { '9' } else { c })
                        .collect();
                    if shape == "9999-99-99T99:99:99.999999Z " {
                        stamped += 1;
                        format!("<time> {}", &line[28..])
                    } else {
                        line.to_string()
                    }
                })
                .collect();
            (masked, stamped)
        };
        let (d, d_stamped) = mask(&default);
        let (f, f_stamped) = mask(&fast);
        assert_eq!(d, f);
        assert_eq!(d_stamped, f_stamped);
        assert!(d_stamped > 20, "{d}");
        assert!(
            fast.contains("route=\"with \\\"quotes\\\" and \\\\ backslash\""),
            "{fast}"
        );
    }

    #[test]
    fn timestamps_are_the_default_timers_own() {
        // The default timer formats the clock's now: take ours between two of its.
        for _ in 0..50 {
            let mut before = String::new();
            use tracing_subscriber::fmt::time::FormatTime;
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut before))
                .unwrap();
            let mut ours = String::new();
            write_timestamp(&mut Writer::new(&mut ours), SystemTime::now()).unwrap();
            let mut after = String::new();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut after))
                .unwrap();
            assert_eq!(ours.len(), before.len() + 1, "{ours:?} {before:?}");
            let ours = ours.trim_end();
            assert!(
                before.as_str() <= ours && ours <= after.as_str(),
                "{before} {ours} {after}"
            );
        }
        let at = |secs: u64, micros: u32| {
            let mut s = String::new();
            write_timestamp(
                &mut Writer::new(&mut s),
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)),
            )
            .unwrap();
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z ");
        assert_eq!(at(11016 * 86_400 + 3661, 7), "2000-02-29T01:01:01.000007Z ");
        assert_eq!(
            at(10956 * 86_400 + 86_399, 999_999),
            "1999-12-31T23:59:59.999999Z "
        );
        assert_eq!(at(19782 * 86_400, 1), "2024-02-29T00:00:00.000001Z ");
        assert_eq!(
            at(20789 * 86_400 + 79_347, 263_580),
            "2026-12-02T22:02:27.263580Z "
        );
        assert_eq!(at(47541 * 86_400, 0), "2100-03-01T00:00:00.000000Z ");
        assert_eq!(at(2_932_897 * 86_400, 0), "+10000-01-01T00:00:00.000000Z ");
        // Back and forth across a second: the kept date is not reused for another.
        assert_eq!(at(59, 5), "1970-01-01T00:00:59.000005Z ");
        assert_eq!(at(60, 5), "1970-01-01T00:01:00.000005Z ");
        assert_eq!(at(59, 6), "1970-01-01T00:00:59.000006Z ");
    }

    #[test]
    fn the_fast_json_format_writes_what_the_default_writes() {
        let default = Lines::default();
        let fast = Lines::default();
        let default_sub = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(default.clone())
            .with_max_level(Level::TRACE)
            .finish();
        let fast_sub = tracing_subscriber::fmt()
            .fmt_fields(FastJsonFields)
            .event_format(FastJson)
            .with_writer(fast.clone())
            .with_max_level(Level::TRACE)
            .finish();
        let everything = || {
            log_everything();
            // Outside any span; a span without fields; one whose fields were recorded late.
            tracing::info!(n = 1u64, "no span");
            let bare = tracing::info_span!("bare");
            bare.in_scope(|| tracing::info!(x = "in a bare span"));
            let late = tracing::info_span!(
                "late",
                z = -2i64,
                a = 1u64,
                b = tracing::field::Empty,
                r#kind = ?"debug",
                r#type = "str",
                f = 0.5f64,
                bytes = tracing::field::Empty,
                e = tracing::field::Empty,
            );
            late.record("b", "later \"quoted\"");
            late.record("a", 2u64);
            late.record("bytes", &b"\x00\xff"[..]);
            late.record("e", 1.0e300f64 * 1.0e300);
            late.in_scope(|| {
                tracing::warn!(f = 1.5f64, nan = f64::NAN, inf = f64::INFINITY, "late")
            });
            // An explicit parent that is not the current span.
            let parent = tracing::info_span!("parent", p = true);
            tracing::info!(parent: &parent, c = "\u{1}\u{8}\u{c}\u{1f}\u{7f}", "child of parent");
        };
        tracing::subscriber::with_default(default_sub, everything);
        tracing::subscriber::with_default(fast_sub, everything);
        let mask = |text: &str| -> Vec<String> {
            text.lines()
                .map(|line| {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let ts = v["timestamp"].as_str().unwrap().to_string();
                    let shape: String = ts
                        .chars()
                        .map(|c| if c.is_ascii_digit() { '9' } else { c })
                        .collect();
                    assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{line}");
                    line.replacen(&ts, "<time>", 1)
                })
                .collect()
        };
        let (d, f) = (mask(&default.take()), mask(&fast.take()));
        assert!(d.len() > 25, "{d:?}");
        assert_eq!(d.len(), f.len());
        for (d, f) in d.iter().zip(&f) {
            assert_eq!(d, f);
        }
        assert!(
            f.iter()
                .any(|l| l.contains(r#""span":{"a":2,"b":"later \"quoted\"","#)),
            "{f:?}"
        );
        assert!(
            f.iter().any(|l| l.contains(r#""span":{"name":"bare"}"#)),
            "{f:?}"
        );
    }
}
