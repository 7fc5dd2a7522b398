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
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
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
    FileEnd,
}

/// What a front dialect's reader returns: the fields its path carries, and the body's.
pub struct Inbound {
    pub meta: UploadMeta,
    pub events: EventStream,
}

/// Bounds on what a client may send.
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
}

impl Limits {
    pub fn new(max_file_bytes: u64) -> Self {
        Limits {
            max_file_bytes,
            max_field_bytes: 64 * 1024,
            max_fields_total: 1024 * 1024,
            body_idle: Duration::from_secs(60),
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
/// body error is the client's: 408 when the body stopped arriving (tower-http's body
/// timeout, set in [`crate::service`]), else 400. Trailers are ignored. Dropping it early
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
    fn end(&mut self, e: Error) -> std::task::Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        std::task::Poll::Ready(Some(Err(e)))
    }
}

impl<B> Stream for BodyReader<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
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
                    if e.is::<tower_http::timeout::TimeoutError>() {
                        return this.end(Error::client_timeout());
                    }
                    tracing::debug!(error = %e, "request body broke off");
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
    };
    steps(state)
}

/// A reader that yields one event per step: `Ok(None)` at the end; an error ends it too.
trait Steps: Send + 'static {
    fn step(&mut self) -> impl std::future::Future<Output = Result<Option<Event>, Error>> + Send;
}

/// The stream of a reader's events, ending after its end or its first error.
fn steps<S: Steps>(reader: S) -> EventStream {
    Box::pin(stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match reader.step().await {
            Ok(Some(ev)) => Some((Ok(ev), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    }))
}

/// The part being read.
enum Part {
    /// Between parts.
    None,
    /// The file: its bytes so far.
    File(u64),
    /// A text field: its name and value so far.
    Text(String, Vec<u8>),
}

struct FormState {
    body: BodyStream,
    reader: form::Reader,
    part: Part,
    seen_file: bool,
    fields_total: usize,
    spec: FormSpec,
    limits: Limits,
}

impl Steps for FormState {
    async fn step(&mut self) -> Result<Option<Event>, Error> {
        loop {
            let item = match self.reader.read() {
                Ok(Some(item)) => item,
                Ok(None) => {
                    match self.body.next().await {
                        Some(Ok(chunk)) => self.reader.push(chunk),
                        Some(Err(e)) => return Err(e),
                        None => self.reader.finish(),
                    }
                    continue;
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
                        if let Some(field) = self.text_field(&name, value)? {
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
}

impl FormState {
    /// A part begins: the file's start, or (for a text field) nothing yet.
    fn part_start(&mut self, head: form::PartHead) -> Result<Option<Event>, Error> {
        let disp = match head.disposition {
            Some(v) => disposition::parse(&v).map_err(|e| Error::bad_request(format!("{e}.")))?,
            None => {
                return Err(Error::bad_request(
                    "A multipart part has no Content-Disposition header.",
                ))
            }
        };
        let name = disp.name.unwrap_or_default();
        if self.seen_file && self.spec.file_last {
            return Err(Error::bad_request(format!(
                "The {} part must be the last part of the form.",
                self.spec.file_field
            )));
        }
        if name == self.spec.file_field {
            if self.seen_file {
                return Err(Error::bad_request(format!(
                    "The form has more than one {} part.",
                    self.spec.file_field
                )));
            }
            self.seen_file = true;
            self.part = Part::File(0);
            return Ok(Some(Event::FileStart {
                filename: disp.filename,
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
        scanner: Scanner::new(spec.file_key, scan_limits),
        queue: VecDeque::new(),
        scratch: Vec::new(),
        decoded: 0,
        max_file: limits.max_file_bytes,
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
    spec: JsonSpec,
    ended: bool,
}

impl Steps for JsonState {
    async fn step(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    self.scanner
                        .feed(&chunk, &mut self.scratch)
                        .map_err(scan_error)?;
                }
                None => {
                    self.scanner.finish(&mut self.scratch).map_err(scan_error)?;
                    self.ended = true;
                }
            }
            let events: Vec<ScanEvent> = self.scratch.drain(..).collect();
            for ev in events {
                self.translate(ev)?;
            }
        }
    }
}

impl JsonState {
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
                self.decoded = self.decoded.saturating_add(data.len() as u64);
                if self.decoded > self.max_file {
                    return Err(Error::too_large(self.max_file));
                }
                self.queue.push_back(Event::Data(data));
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
