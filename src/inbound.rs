//! Reading a client's upload as a stream of canonical events.
//!
//! A front dialect turns its request body into an [`EventStream`]: the fields it finds
//! ([`Event::Field`]), then the file ([`Event::FileStart`], [`Event::Data`]...,
//! [`Event::FileEnd`]), then any fields that came after it. Two readers do the work for
//! all dialects: [`multipart`] (over casegate's multipart reader, [`crate::codec::form`])
//! and [`json`] (over the streaming scanner in [`crate::codec::json_scan`]). Both enforce
//! the limits: decoded file bytes against `max_upload_bytes`, raw body bytes, field sizes,
//! and a body idle timeout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use http_body::Body as HttpBody;

use crate::codec::json_scan::{self, Event as ScanEvent, Scalar, ScanError, Scanner};
use crate::codec::{b64, disposition, form};
use crate::error::{BoxError, Error};
use crate::upload::{Field, Kind, UploadMeta};

/// A request body as a stream of chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// An upload as a stream of events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>;

/// One step of reading an upload.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Field(Field),
    /// A field given as `null`: settled, and absent.
    Absent(Kind),
    /// The file starts; multipart parts carry their own name and type.
    FileStart {
        filename: Option<String>,
        content_type: Option<String>,
    },
    /// Decoded file bytes.
    Data(Bytes),
    /// File bytes as the base64 the client sent them, checked but not decoded: whole
    /// groups of the standard alphabet, so the padded standard encoding of the bytes (a
    /// JSON front's plain runs, see [`json_scan::Event::FileCoded`]). A back that sends
    /// base64 passes it on; [`Event::coded_bytes`] decodes it where the bytes are needed.
    Coded(Bytes),
    FileEnd,
}

impl Event {
    /// The bytes a [`Event::Coded`]'s text stands for. It was checked when read, so this
    /// fails only if that check was wrong: an internal error, never a client's.
    pub fn coded_bytes(text: &[u8]) -> Result<Bytes, Error> {
        crate::codec::b64::decode_whole(text)
            .map_err(|_| Error::internal("casegate could not decode base64 it had checked."))
    }
}

/// What a front dialect's reader returns: the fields its path carries, and the body's.
pub struct Inbound {
    pub meta: UploadMeta,
    pub events: EventStream,
}

/// Bounds on what a client may send, and whether a JSON body's plain base64 is handed out
/// as the client sent it ([`Limits::keep_base64`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file, in decoded bytes (`max_upload_bytes`).
    pub max_file_bytes: u64,
    /// Largest value of any other field.
    pub max_field_bytes: usize,
    /// All other fields together.
    pub max_fields_total: usize,
    /// Longest wait for the next chunk of a request body.
    pub body_idle: Duration,
    /// Whether a JSON body's reader hands out the client's plain base64 as it came,
    /// checked but not decoded ([`Event::Coded`]), for a back that sends base64 too
    /// ([`crate::dialect::Dialect::sends_base64`]). Off, it gives [`Event::Data`] only.
    pub keep_base64: bool,
}

impl Limits {
    pub fn new(max_file_bytes: u64) -> Self {
        Limits {
            max_file_bytes,
            max_field_bytes: 64 * 1024,
            max_fields_total: 1024 * 1024,
            body_idle: Duration::from_secs(60),
            keep_base64: false,
        }
    }

    /// Largest multipart body that carries a file of the maximum size: the file, the
    /// other fields, and room for part headers.
    pub fn multipart_body(&self) -> u64 {
        self.max_file_bytes
            .saturating_add(self.max_fields_total as u64)
            .saturating_add(64 * 1024)
    }

    /// Largest JSON body that carries a base64 file of the maximum size: 4/3 of it, plus
    /// MIME line breaks (a 4-byte `\r\n` escape per 76 characters), plus the other fields.
    pub fn base64_json_body(&self) -> u64 {
        let enc = b64::encoded_len(self.max_file_bytes);
        enc.saturating_add(enc / 76 * 4)
            .saturating_add(self.max_fields_total as u64)
            .saturating_add(4096)
    }
}

/// Wraps an HTTP body as a stream of chunks: at most `max_raw` bytes (more is 413), and a
/// body error is the client's: 408 when the body stopped arriving
/// ([`crate::service::BodyIdle`]), else 400. Trailers are ignored. Dropping it early
/// drops the body, which [`crate::service::DrainOnDrop`] then drains a little so the
/// client reads the answer.
pub fn body_stream<B>(body: B, max_raw: u64) -> BodyStream
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(BodyReader {
        body: Some(body),
        seen: 0,
        max_raw,
        done: false,
        burst: 0,
    })
}

/// The most a body yields in one go without returning `Pending`: a consumer that reads
/// until nothing is ready would otherwise buffer whatever a fast client has sent, and
/// memory per upload would grow with the client's speed.
const BURST_BYTES: usize = 64 * 1024;

struct BodyReader<B: HttpBody<Data = Bytes> + Send + Unpin + 'static> {
    body: Option<B>,
    seen: u64,
    max_raw: u64,
    done: bool,
    /// Bytes yielded since the last `Pending`.
    burst: usize,
}

impl<B> BodyReader<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
{
    fn end(&mut self, e: Error) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl<B> Stream for BodyReader<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.burst >= BURST_BYTES {
            this.burst = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            let Some(body) = this.body.as_mut().filter(|_| !this.done) else {
                return Poll::Ready(None);
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    this.burst = 0;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.body = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.body = None;
                    let e: BoxError = e.into();
                    if e.is::<crate::service::BodyIdle>() {
                        return this.end(Error::client_timeout());
                    }
                    let chain = crate::error::Chain(e.as_ref());
                    tracing::debug!(error = %chain, "request body broke off");
                    if client_gone(e.as_ref()) {
                        return this.end(Error::client_closed());
                    }
                    return this.end(Error::bad_request("The request body broke off."));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.seen > this.max_raw {
                        return this.end(Error::too_large_body());
                    }
                    this.burst += data.len();
                    return Poll::Ready(Some(Ok(data)));
                }
            }
        }
    }
}

/// Whether a request body's error means its client went away: the connection ended
/// before the body did (closed, reset) or the client reset its HTTP/2 stream or the
/// connection. A body the client framed wrongly (a bad chunk size line) is not: the
/// client is still there to be told.
fn client_gone(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let ended = |io: &std::io::Error| {
        matches!(
            io.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
        )
    };
    let mut cause = Some(e);
    // Bounded: a chain is a few errors deep.
    for _ in 0..16 {
        let Some(c) = cause else { break };
        if c.downcast_ref::<std::io::Error>().is_some_and(ended) {
            return true;
        }
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            // h2 keeps its connection's I/O error to itself (not as its source).
            if h2.get_io().is_some_and(ended)
                || h2.is_remote() && (h2.is_reset() || h2.is_go_away())
            {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// How a dialect reads a multipart form.
#[derive(Clone, Copy)]
pub struct FormSpec {
    /// The part that holds the file.
    pub file_field: &'static str,
    /// Refuse any part after the file (Case IQ).
    pub file_last: bool,
    /// Maps a text part to a canonical field; `Ok(None)` ignores it.
    pub map: fn(name: &str, value: String) -> Result<Option<Field>, Error>,
}

/// Reads a multipart/form-data body with `boundary`.
pub fn multipart(
    body: BodyStream,
    boundary: String,
    spec: FormSpec,
    limits: &Limits,
) -> EventStream {
    let state = FormState {
        body,
        reader: form::Reader::new(&boundary),
        part: Part::None,
        seen_file: false,
        fields_total: 0,
        spec,
        limits: *limits,
        wants_body: false,
    };
    steps(state)
}

/// A reader that yields one event per step: `Ok(None)` at the end; an error ends it too.
/// A step is polled in place (the reader's state stays where it is between polls), so a
/// step that waits for the body resumes from its own fields, not from a future holding a
/// copy of the reader.
trait Steps: Send + Unpin + 'static {
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>>;
}

/// The stream of a reader's events, ending after its end or its first error.
fn steps<S: Steps>(reader: S) -> EventStream {
    Box::pin(StepStream {
        reader: Some(reader),
    })
}

struct StepStream<S> {
    /// None once the reader has ended or failed.
    reader: Option<S>,
}

impl<S: Steps> Stream for StepStream<S> {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(reader.poll_step(cx)) {
            Ok(Some(ev)) => Poll::Ready(Some(Ok(ev))),
            Ok(None) => {
                this.reader = None;
                Poll::Ready(None)
            }
            Err(e) => {
                this.reader = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// The part being read.
enum Part {
    /// Between parts.
    None,
    /// The file: its bytes so far.
    File(u64),
    /// A text field: its name and value so far.
    Text(disposition::FieldName, Vec<u8>),
}

struct FormState {
    body: BodyStream,
    reader: form::Reader,
    part: Part,
    seen_file: bool,
    fields_total: usize,
    spec: FormSpec,
    limits: Limits,
    /// The reader needs more of the body before its next item.
    wants_body: bool,
}

impl Steps for FormState {
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>> {
        Poll::Ready(loop {
            if self.wants_body {
                match ready!(self.body.poll_next_unpin(cx)) {
                    Some(Ok(chunk)) => self.reader.push(chunk),
                    Some(Err(e)) => break Err(e),
                    None => self.reader.finish(),
                }
                self.wants_body = false;
            }
            match self.next_event() {
                Ok(Some(ev)) => break Ok(Some(ev)),
                Ok(None) if self.wants_body => continue,
                done => break done,
            }
        })
    }
}

impl FormState {
    /// The next event from what the reader holds: `Ok(None)` with `wants_body` set when
    /// it needs more of the body first, `Ok(None)` alone at the form's end.
    fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            let item = match self.reader.read() {
                Ok(Some(item)) => item,
                Ok(None) => {
                    self.wants_body = true;
                    return Ok(None);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "malformed multipart body");
                    return Err(Error::bad_request(
                        "The multipart/form-data body is malformed.",
                    ));
                }
            };
            match item {
                form::Item::Part(head) => {
                    if let Some(ev) = self.part_start(head)? {
                        return Ok(Some(ev));
                    }
                }
                form::Item::Data(data) => match &mut self.part {
                    Part::File(size) => {
                        *size = size.saturating_add(data.len() as u64);
                        if *size > self.limits.max_file_bytes {
                            return Err(Error::too_large(self.limits.max_file_bytes));
                        }
                        return Ok(Some(Event::Data(data)));
                    }
                    Part::Text(name, value) => {
                        if value.len() + data.len() > self.limits.max_field_bytes {
                            return Err(Error::bad_request(format!(
                                "The form field {name} is too large."
                            )));
                        }
                        value.extend_from_slice(&data);
                    }
                    Part::None => {
                        return Err(Error::internal("The form's parts are out of order."))
                    }
                },
                form::Item::PartEnd => match std::mem::replace(&mut self.part, Part::None) {
                    Part::File(_) => return Ok(Some(Event::FileEnd)),
                    Part::Text(name, value) => {
                        if let Some(field) = self.text_field(name.as_str(), value)? {
                            return Ok(Some(Event::Field(field)));
                        }
                    }
                    Part::None => {
                        return Err(Error::internal("The form's parts are out of order."))
                    }
                },
                form::Item::End => return Ok(None),
            }
        }
    }

    /// A part begins: the file's start, or (for a text field) nothing yet.
    fn part_start(&mut self, head: form::PartHead) -> Result<Option<Event>, Error> {
        let (name, filename) = match head.disposition {
            Some(v) => {
                disposition::parse_field(&v).map_err(|e| Error::bad_request(format!("{e}.")))?
            }
            None => {
                return Err(Error::bad_request(
                    "A multipart part has no Content-Disposition header.",
                ))
            }
        };
        if self.seen_file && self.spec.file_last {
            return Err(Error::bad_request(format!(
                "The {} part must be the last part of the form.",
                self.spec.file_field
            )));
        }
        if name.is(self.spec.file_field) {
            if self.seen_file {
                return Err(Error::bad_request(format!(
                    "The form has more than one {} part.",
                    self.spec.file_field
                )));
            }
            self.seen_file = true;
            self.part = Part::File(0);
            return Ok(Some(Event::FileStart {
                filename,
                content_type: head.content_type,
            }));
        }
        self.part = Part::Text(name, Vec::new());
        Ok(None)
    }

    /// A text field's whole value: the canonical field it maps to, if any.
    fn text_field(&mut self, name: &str, value: Vec<u8>) -> Result<Option<Field>, Error> {
        self.fields_total = self.fields_total.saturating_add(value.len() + name.len());
        if self.fields_total > self.limits.max_fields_total {
            return Err(Error::bad_request("The form's fields are too large."));
        }
        let value = String::from_utf8(value).map_err(|_| {
            Error::bad_request(format!("The form field {name} is not valid UTF-8."))
        })?;
        (self.spec.map)(name, value)
    }
}

/// How a dialect reads a JSON body with a base64 file field.
#[derive(Clone, Copy)]
pub struct JsonSpec {
    pub file_key: &'static str,
    /// The top-level keys `map` reads (see [`Scanner::with_known_keys`]).
    pub keys: &'static [&'static str],
    /// Maps a top-level field to a canonical one.
    pub map: fn(key: &str, value: Scalar) -> Result<Mapped, Error>,
}

/// A top-level JSON field, as the dialect reads it.
pub enum Mapped {
    Field(Field),
    /// `null`: the field is settled and absent.
    Absent(Kind),
    /// Not a field casegate knows; skipped.
    Ignore,
}

/// Reads a JSON body, decoding the file field's base64 as it streams.
pub fn json(body: BodyStream, spec: JsonSpec, limits: &Limits) -> EventStream {
    let scan_limits = json_scan::Limits {
        max_field_bytes: limits.max_field_bytes,
        max_fields_total: limits.max_fields_total,
        ..Default::default()
    };
    let state = JsonState {
        body,
        scanner: Scanner::new(spec.file_key, scan_limits).with_known_keys(spec.keys),
        // A usual body's events at once (its fields, the file's start, data and end).
        queue: VecDeque::with_capacity(8),
        scratch: Vec::with_capacity(8),
        decoded: 0,
        max_file: limits.max_file_bytes,
        keep_base64: limits.keep_base64,
        spec,
        ended: false,
    };
    steps(state)
}

struct JsonState {
    body: BodyStream,
    scanner: Scanner,
    queue: VecDeque<Event>,
    scratch: Vec<ScanEvent>,
    decoded: u64,
    max_file: u64,
    /// Feed the scanner `Bytes`, so that it hands out the client's base64 too.
    keep_base64: bool,
    spec: JsonSpec,
    ended: bool,
}

impl Steps for JsonState {
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Poll::Ready(Ok(Some(ev)));
            }
            if self.ended {
                return Poll::Ready(Ok(None));
            }
            let fed = match ready!(self.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) if self.keep_base64 => {
                    self.scanner.feed_bytes(&chunk, &mut self.scratch)
                }
                Some(Ok(chunk)) => self.scanner.feed(&chunk, &mut self.scratch),
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => {
                    self.ended = true;
                    self.scanner.finish(&mut self.scratch)
                }
            };
            if let Err(e) = fed
                .map_err(scan_error)
                .and_then(|()| self.translate_scanned())
            {
                return Poll::Ready(Err(e));
            }
        }
    }
}

impl JsonState {
    /// Translates the scanner's events, keeping its buffer for the next chunk.
    fn translate_scanned(&mut self) -> Result<(), Error> {
        let mut scanned = std::mem::take(&mut self.scratch);
        let translated = scanned.drain(..).try_for_each(|ev| self.translate(ev));
        self.scratch = scanned;
        translated
    }

    /// Counts the file's bytes: more than the largest file allowed is 413.
    fn count(&mut self, len: usize) -> Result<(), Error> {
        self.decoded = self.decoded.saturating_add(len as u64);
        if self.decoded > self.max_file {
            return Err(Error::too_large(self.max_file));
        }
        Ok(())
    }

    fn translate(&mut self, ev: ScanEvent) -> Result<(), Error> {
        match ev {
            ScanEvent::Field { key, value } => match (self.spec.map)(&key, value)? {
                Mapped::Field(f) => self.queue.push_back(Event::Field(f)),
                Mapped::Absent(k) => self.queue.push_back(Event::Absent(k)),
                Mapped::Ignore => {}
            },
            ScanEvent::FileStart => self.queue.push_back(Event::FileStart {
                filename: None,
                content_type: None,
            }),
            ScanEvent::FileData(data) => {
                self.count(data.len())?;
                self.queue.push_back(Event::Data(data));
            }
            ScanEvent::FileCoded(text) => {
                self.count(crate::codec::b64::whole_decoded_len(text.len()))?;
                self.queue.push_back(Event::Coded(text));
            }
            ScanEvent::FileEnd { .. } => self.queue.push_back(Event::FileEnd),
            ScanEvent::End => {}
        }
        Ok(())
    }
}

fn scan_error(e: ScanError) -> Error {
    let mut msg = e.to_string();
    if let Some(first) = msg.get(..1) {
        msg = first.to_uppercase() + &msg[1..];
    }
    msg.push('.');
    Error::bad_request(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `chunks` that answers `Pending` (waking itself) before each chunk, as
    /// a socket does between packets.
    fn trickled(chunks: Vec<Bytes>) -> BodyStream {
        let mut chunks = VecDeque::from(chunks);
        let mut pending = true;
        Box::pin(futures_util::stream::poll_fn(move |cx| {
            pending = !pending;
            if !pending {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(chunks.pop_front().map(Ok))
        }))
    }

    /// The events of `body` split into chunks of `size` bytes (all of it when 0), the
    /// data events joined into the file's bytes: (the other events, the file).
    async fn read_split(
        body: &[u8],
        size: usize,
        read: &impl Fn(BodyStream) -> EventStream,
    ) -> (Vec<String>, Vec<u8>) {
        let chunks = body
            .chunks(if size == 0 { body.len() } else { size })
            .map(Bytes::copy_from_slice)
            .collect();
        let (mut events, mut file) = (Vec::new(), Vec::new());
        let mut stream = read(trickled(chunks));
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Data(d)) => file.extend_from_slice(&d),
                Ok(Event::Coded(text)) => {
                    file.extend_from_slice(&Event::coded_bytes(&text).unwrap())
                }
                other => events.push(format!("{other:?}")),
            }
        }
        (events, file)
    }

    /// Whole, and then in chunks of 1 to 9 bytes with a `Pending` before each, `body`
    /// gives the same events and file; returns them.
    async fn same_however_split(
        body: &[u8],
        read: impl Fn(BodyStream) -> EventStream,
    ) -> (Vec<String>, Vec<u8>) {
        let whole = read_split(body, 0, &read).await;
        for size in 1..10 {
            assert_eq!(
                read_split(body, size, &read).await,
                whole,
                "chunks of {size}"
            );
        }
        whole
    }

    #[tokio::test]
    async fn a_form_read_across_pending_polls_gives_the_same_events() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"caseId\"\r\n\r\n42\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
            Content-Type: text/plain\r\n\r\nhello, world\r\n--XyZ--\r\n";
        let spec = FormSpec {
            file_field: "file",
            file_last: true,
            map: |name, value| Ok((name == "caseId").then_some(Field::CaseId(value))),
        };
        let limits = Limits::new(1 << 20);
        same_however_split(body, |b| multipart(b, "XyZ".into(), spec, &limits)).await;
        let events: Vec<_> = multipart(
            trickled(vec![Bytes::from_static(body)]),
            "XyZ".into(),
            spec,
            &limits,
        )
        .collect()
        .await;
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(matches!(&events[0], Ok(Event::Field(Field::CaseId(c))) if c == "42"));
        assert!(matches!(&events[3], Ok(Event::FileEnd)));
    }

    #[tokio::test]
    async fn a_json_body_read_across_pending_polls_gives_the_same_events() {
        let body = br#"{"caseId": "42", "file": "aGVsbG8sIHdvcmxk", "extra": [1, 2]}"#;
        let spec = JsonSpec {
            file_key: "file",
            keys: &["caseId", "file"],
            map: |key, value| {
                Ok(match (key, value) {
                    ("caseId", Scalar::String(s)) => Mapped::Field(Field::CaseId(s)),
                    _ => Mapped::Ignore,
                })
            },
        };
        let limits = Limits::new(1 << 20);
        same_however_split(body, |b| json(b, spec, &limits)).await;
        let events: Vec<_> = json(trickled(vec![Bytes::from_static(body)]), spec, &limits)
            .collect()
            .await;
        let data: Vec<u8> = events
            .iter()
            .filter_map(|ev| match ev {
                Ok(Event::Data(d)) => Some(d.to_vec()),
                Ok(Event::Coded(text)) => Some(Event::coded_bytes(text).unwrap().to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(data, b"hello, world");
        assert!(
            matches!(events.last(), Some(Ok(Event::FileEnd))),
            "{events:?}"
        );
    }
}
