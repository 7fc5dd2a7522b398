//! casegate's own HTTP/1.1 client connection, for upstreams reached over plain TCP
//! (`http://`; a TLS upstream keeps hyper's, [`super`]). The request's head and body are
//! written and the answer's head and body read by the task that sends it, straight on
//! the socket: no dispatcher, request channel or callback between the request and its
//! connection (bench/RESULTS.md, "The twenty-second round", has what that saves).
//!
//! What it speaks (RFC 9112), as hyper's client did:
//! - the request goes out in origin form with the headers it was given, less any
//!   `Content-Length` or `Transfer-Encoding`: the body's own size hint frames it, with a
//!   `Content-Length` when it is exact, else chunked (`GET`, `HEAD` and `CONNECT` with a
//!   body of unknown length send none, as hyper does); a body longer or shorter than its
//!   hint said is an error, and the upstream never sees its end;
//! - the answer's head is at most `max_head` bytes and 100 headers; `1xx` heads other
//!   than `101` are skipped; the body is framed by `Transfer-Encoding: chunked`, else by
//!   `Content-Length` (every value the same), else by the connection's close; none
//!   after `HEAD`, `204` and `304`;
//! - a connection is used again only when both messages ended cleanly, the answer was
//!   HTTP/1.1 without `Connection: close`, and nothing came after it.
//!
//! The answer may come before the request's body is all sent (an upstream refusing an
//! upload early): the rest keeps going out while the answer is read, and a connection
//! whose request was not all sent is closed, not reused.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, SizeHint};
use smallvec::SmallVec;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::error::{Body, BoxError};

/// The most headers an answer may have (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Encoded request bytes held before the body is asked for more: what bounds a
/// connection's memory when the upstream reads slower than the client sends.
const FLUSH_AT: usize = 64 * 1024;
/// Body data up to this size is copied beside its framing, into one buffer; larger data
/// goes out as it came, beside it (`writev`), never copied. A 4 KiB file's bytes copied
/// into the head's buffer were about 3 % of casegate's CPU time per small upload
/// (bench/RESULTS.md, the twenty-sixth round); the kernel copies them either way.
const COPY_MAX: usize = 1024;
/// The most pieces one `writev` takes: all that [`FLUSH_AT`] can hold when every piece of
/// data is just over [`COPY_MAX`], each with the framing before it, and the buffer after
/// them. Fewer would take several writes where the copy took one.
const MAX_SLICES: usize = 2 * (FLUSH_AT / COPY_MAX + 1) + 1;
/// The pieces of a write when few wait (a small upload: its head, its file, its end).
const FEW_SLICES: usize = 8;
/// The longest chunk-size line (with its extensions) of a chunked answer.
const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes of trailers after a chunked answer's last chunk (they are dropped).
const MAX_TRAILERS: usize = 16 * 1024;
/// The first read's size; reads that fill their room double it, up to `max_head`.
const FIRST_READ: usize = 8 * 1024;

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the request's body failed: {0}")]
    Body(BoxError),
    #[error("the request's body is {0} than its declared length")]
    Length(&'static str),
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Protocol(&'static str),
    #[error("the upstream closed the connection before the end of its answer")]
    Closed,
}

/// How the request's body is framed.
enum OutFraming {
    Chunked,
    /// The bytes still to come.
    Length(u64),
}

/// A piece of the encoded request waiting to be written, in order.
enum Piece {
    /// The next this many bytes of the copied ones (`buf`).
    Copied(usize),
    /// Body data as it came.
    Data(Bytes),
}

/// A request on its way out: encoded bytes not yet written and the body still to read.
/// It belongs to no connection until one takes it, so a request that never left can be
/// handed to another.
pub struct Outgoing {
    /// None once the body ended (and its end is encoded).
    body: Option<Body>,
    framing: OutFraming,
    /// What waits to be written, in order, from `pieces[front]`; then the rest of `buf`.
    /// A small upload's (its head, its file's data) fit inline: no allocation.
    pieces: SmallVec<[Piece; 4]>,
    front: usize,
    /// Bytes of the data pieces.
    queued: usize,
    /// Bytes of `buf` its pieces name.
    marked: usize,
    /// The copied bytes: the head, framing, small data.
    buf: BytesMut,
    /// Bytes written so far.
    written: u64,
    head_request: bool,
    /// The answer's headers are wanted (else only its status and body: the head's
    /// framing is read, its headers are not copied into a map).
    answer_headers: bool,
}

impl Outgoing {
    /// Encodes `req`'s head (its target `path` in origin form) and takes its body.
    pub fn new(req: Request<Body>, path: &str) -> Outgoing {
        let (parts, body) = req.into_parts();
        Outgoing::from_head(&parts.method, path, parts.headers.iter(), body)
    }

    /// Encodes a head of `method`, the target `path` (origin form) and `headers` in their
    /// order, for `body`: what [`Outgoing::new`] encodes of a request, without a header
    /// map built first (the upload's own calls know their headers as a list).
    pub fn from_head<'h>(
        method: &Method,
        path: &str,
        headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
        body: Body,
    ) -> Outgoing {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.put_slice(method.as_str().as_bytes());
        buf.put_u8(b' ');
        buf.put_slice(if path.is_empty() { "/" } else { path }.as_bytes());
        buf.put_slice(b" HTTP/1.1\r\n");
        // The body says how it is framed: a caller's own framing headers are not sent.
        let (framing, line): (OutFraming, Option<&[u8]>) = if body.is_end_stream() {
            (OutFraming::Length(0), None)
        } else if let Some(n) = body.size_hint().exact() {
            (OutFraming::Length(n), Some(b"content-length: "))
        } else if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
            (OutFraming::Length(0), None)
        } else {
            (
                OutFraming::Chunked,
                Some(b"transfer-encoding: chunked\r\n".as_slice()),
            )
        };
        for (name, value) in headers {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
                continue;
            }
            buf.put_slice(name.as_str().as_bytes());
            buf.put_slice(b": ");
            buf.put_slice(value.as_bytes());
            buf.put_slice(b"\r\n");
        }
        match (&framing, line) {
            (OutFraming::Length(n), Some(line)) => {
                buf.put_slice(line);
                buf.put_slice(itoa::Buffer::new().format(*n).as_bytes());
                buf.put_slice(b"\r\n");
            }
            (_, Some(line)) => buf.put_slice(line),
            _ => {}
        }
        buf.put_slice(b"\r\n");
        Outgoing {
            body: Some(body),
            framing,
            pieces: SmallVec::new(),
            front: 0,
            queued: 0,
            marked: 0,
            buf,
            written: 0,
            head_request: method == Method::HEAD,
            answer_headers: true,
        }
    }

    /// The answer's headers are not wanted: its head comes back with none (its status,
    /// and a body framed as its headers say).
    pub fn without_answer_headers(mut self) -> Outgoing {
        self.answer_headers = false;
        self
    }

    /// Encoded bytes not yet written.
    fn pending(&self) -> usize {
        self.queued + self.buf.len()
    }

    fn push_data(&mut self, data: Bytes) -> Result<(), RawError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            OutFraming::Chunked => {
                put_hex(&mut self.buf, data.len());
                self.buf.put_slice(b"\r\n");
            }
            OutFraming::Length(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(RawError::Length("longer"))?;
            }
        }
        if data.len() <= COPY_MAX {
            self.buf.put_slice(&data);
        } else {
            let copied = self.buf.len() - self.marked;
            if copied > 0 {
                self.marked += copied;
                self.pieces.push(Piece::Copied(copied));
            }
            self.queued += data.len();
            self.pieces.push(Piece::Data(data));
        }
        if let OutFraming::Chunked = self.framing {
            self.buf.put_slice(b"\r\n");
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), RawError> {
        self.body = None;
        match self.framing {
            OutFraming::Chunked => self.buf.put_slice(b"0\r\n\r\n"),
            OutFraming::Length(0) => {}
            OutFraming::Length(_) => return Err(RawError::Length("shorter")),
        }
        Ok(())
    }

    /// Writes and encodes until the body ended and everything is written (`Ready(Ok)`),
    /// or the body or the socket has to wait.
    fn poll_send(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), RawError>> {
        loop {
            while self.pending() < FLUSH_AT {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.push_data(data)?;
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(RawError::Body(e))),
                    Poll::Ready(None) => self.finish()?,
                    Poll::Pending => break,
                }
            }
            if self.pending() == 0 {
                return match self.body {
                    None => Poll::Ready(Ok(())),
                    Some(_) => Poll::Pending,
                };
            }
            ready!(self.poll_write(io, cx))?;
        }
    }

    /// Writes until nothing encoded is left.
    fn poll_write(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending() > 0 {
            let n = if self.front == self.pieces.len() {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.buf))?
            } else if self.pieces.len() - self.front < FEW_SLICES {
                ready!(self.poll_gathered::<FEW_SLICES>(io, cx))?
            } else {
                ready!(self.poll_gathered::<MAX_SLICES>(io, cx))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n as u64;
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// One `writev` of what waits, in at most `N` pieces (the slices are set up on the
    /// stack each time: a small upload's three do not pay for [`MAX_SLICES`]).
    fn poll_gathered<const N: usize>(
        &self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); N];
        let k = self.gather(&mut slices);
        Pin::new(io).poll_write_vectored(cx, &slices[..k])
    }

    /// The encoded bytes in order, as many pieces as `slices` holds: how many it got.
    fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut k = 0;
        let mut at = 0;
        for (slice, piece) in slices.iter_mut().zip(&self.pieces[self.front..]) {
            *slice = IoSlice::new(match piece {
                Piece::Copied(n) => {
                    at += n;
                    &self.buf[at - n..at]
                }
                Piece::Data(data) => data,
            });
            k += 1;
        }
        if k == self.pieces.len() - self.front && k < slices.len() && at < self.buf.len() {
            slices[k] = IoSlice::new(&self.buf[at..]);
            k += 1;
        }
        k
    }

    /// `n` bytes were written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(piece) = self.pieces.get_mut(self.front) else {
                self.buf.advance(n.min(self.buf.len()));
                break;
            };
            let (left, took) = match piece {
                Piece::Copied(len) => {
                    let k = n.min(*len);
                    self.buf.advance(k);
                    self.marked -= k;
                    *len -= k;
                    (*len, k)
                }
                Piece::Data(data) => {
                    let k = n.min(data.len());
                    data.advance(k);
                    self.queued -= k;
                    (data.len(), k)
                }
            };
            n -= took;
            if left == 0 {
                // Written: the data's buffer goes back now, not when the request ends.
                *piece = Piece::Copied(0);
                self.front += 1;
            }
        }
        if self.front == self.pieces.len() {
            self.pieces.clear();
            self.front = 0;
        }
        if self.buf.is_empty() {
            self.buf.clear();
        }
    }
}

/// Writes `n` in hexadecimal (a chunk's size).
fn put_hex(buf: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789ABCDEF"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
}

/// An answer head's fields where the parser found them: each name's and value's span in
/// the head's bytes. Framing is read from here, so an answer whose headers are not wanted
/// is not copied into a map.
struct Fields<'a> {
    head: &'a [u8],
    spans: &'a [(u32, u32, u32, u32)],
}

impl Fields<'_> {
    /// The values of the fields named `name` (lowercase; names compared without case), in
    /// order. A name is a literal, not a `HeaderName`, whose `as_str` each comparison
    /// would call again (a match on the standard names).
    fn values(&self, name: &'static str) -> impl Iterator<Item = &[u8]> {
        self.spans
            .iter()
            .filter(move |&&(a, b, _, _)| {
                self.head[a as usize..b as usize].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|&(_, _, c, d)| &self.head[c as usize..d as usize])
    }

    fn has(&self, name: &'static str) -> bool {
        self.values(name).next().is_some()
    }

    /// Whether any value of `name` holds `token` in its comma-separated list.
    fn has_token(&self, name: &'static str, token: &str) -> bool {
        self.values(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// Every `Content-Length` value (comma-separated lists too), when they agree: Ok(None)
    /// when there is none, Err when one is not a number or two differ.
    fn content_length(&self) -> Result<Option<u64>, ()> {
        let mut found = None;
        for value in self.values("content-length") {
            for item in value.split(|&b| b == b',') {
                let item = item.trim_ascii();
                if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                    return Err(());
                }
                let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                if found.is_some_and(|f| f != n) {
                    return Err(());
                }
                found = Some(n);
            }
        }
        Ok(found)
    }
}

/// How the answer's body is framed, and how far it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFraming {
    /// No answer read yet.
    Head,
    /// The bytes still to come.
    Length(u64),
    /// Until the connection closes.
    Close,
    ChunkSize,
    /// The bytes of the current chunk still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: the trailers' bytes so far.
    Trailers(usize),
    /// Read to its end.
    Done,
}

/// One plain-TCP connection to an upstream.
pub struct RawConn {
    io: TcpStream,
    /// Read but not yet used.
    rbuf: BytesMut,
    next_read: usize,
    max_head: usize,
    /// The request still going out, if any.
    out: Option<Outgoing>,
    /// Why writing the request failed after some of it went out (the answer may still
    /// come: an upstream may refuse and close before reading it all).
    write_error: Option<io::Error>,
    reading: InFraming,
    /// The answer allows the connection to be used again, and nothing failed.
    reusable: bool,
    /// The request was a `HEAD` (its answer has no body).
    head_request: bool,
    /// The request wants its answer's headers ([`Outgoing::without_answer_headers`]).
    answer_headers: bool,
}

impl RawConn {
    pub fn new(io: TcpStream, max_head: usize) -> RawConn {
        RawConn {
            io,
            rbuf: BytesMut::new(),
            next_read: FIRST_READ,
            max_head,
            out: None,
            write_error: None,
            reading: InFraming::Done,
            reusable: true,
            head_request: false,
            answer_headers: true,
        }
    }

    /// An idle connection the upstream has not closed (nor written to): looked at without
    /// a system call unless the socket became readable since it was last read.
    pub fn alive(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Takes a request to send.
    pub fn start(&mut self, out: Outgoing) {
        self.reading = InFraming::Head;
        self.write_error = None;
        self.head_request = out.head_request;
        self.answer_headers = out.answer_headers;
        self.out = Some(out);
    }

    /// The request back, when none of it was written (to go out on another connection).
    pub fn take_unsent(&mut self) -> Option<Outgoing> {
        if self.rbuf.is_empty() && self.out.as_ref().is_some_and(|o| o.written == 0) {
            self.out.take()
        } else {
            None
        }
    }

    /// Sends what it can of the request. Fails when the body failed, or the socket did
    /// before any of the request went out; a write failing later only stops the writing
    /// (the answer is still read).
    fn drive(&mut self, cx: &mut Context<'_>) -> Result<(), RawError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        match out.poll_send(&mut self.io, cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => {
                self.out = None;
                Ok(())
            }
            Poll::Ready(Err(RawError::Io(e))) if out.written > 0 => {
                self.reusable = false;
                self.out = None;
                self.write_error = Some(e);
                Ok(())
            }
            Poll::Ready(Err(e)) => {
                self.reusable = false;
                Err(e)
            }
        }
    }

    /// Sends what it can of the rest of the request while the answer's body is read: a
    /// failure only stops the writing.
    pub fn drive_quietly(&mut self, cx: &mut Context<'_>) {
        if self.drive(cx).is_err() {
            self.out = None;
        }
    }

    /// Sends the request and reads the answer's head.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<()>, RawError>> {
        self.drive(cx)?;
        loop {
            if !self.rbuf.is_empty() {
                if let Some(head) = self.parse_head()? {
                    return Poll::Ready(Ok(head));
                }
                if self.rbuf.len() >= self.max_head {
                    return Poll::Ready(Err(RawError::Protocol("its head is too large")));
                }
            }
            if ready!(self.poll_read(cx))? == 0 {
                self.reusable = false;
                return Poll::Ready(Err(self
                    .write_error
                    .take()
                    .map_or(RawError::Closed, RawError::Io)));
            }
        }
    }

    /// Reads into `rbuf`: the bytes read, 0 at the end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.next_read / 2 {
            self.rbuf.reserve(self.next_read);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        if n == room {
            self.next_read = (self.next_read * 2).min(self.max_head.max(FIRST_READ));
        }
        Poll::Ready(Ok(n))
    }

    /// The answer's head, once `rbuf` holds all of it; 1xx heads are skipped.
    fn parse_head(&mut self) -> Result<Option<Response<()>>, RawError> {
        loop {
            let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let config = httparse::ParserConfig::default();
            let len = match config.parse_response_with_uninit_headers(
                &mut parsed,
                &self.rbuf,
                &mut headers,
            ) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(RawError::Protocol("it has too many headers"))
                }
                Err(_) => return Err(RawError::Protocol("its head cannot be parsed")),
            };
            if len > self.max_head {
                return Err(RawError::Protocol("its head is too large"));
            }
            let code = parsed.code.unwrap_or(0);
            let version = match parsed.version {
                Some(1) => Version::HTTP_11,
                _ => Version::HTTP_10,
            };
            // Where each name and value lies, to take the values from the head's bytes.
            let start = self.rbuf.as_ptr() as usize;
            let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
            let count = parsed.headers.len();
            for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
                let name = h.name.as_ptr() as usize - start;
                let value = h.value.as_ptr() as usize - start;
                *span = (
                    name as u32,
                    (name + h.name.len()) as u32,
                    value as u32,
                    (value + h.value.len()) as u32,
                );
            }
            let head = self.rbuf.split_to(len).freeze();
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(RawError::Protocol("it switches protocols"));
                }
                continue;
            }
            let status = StatusCode::from_u16(code)
                .map_err(|_| RawError::Protocol("its status is not a status"))?;
            let fields = Fields {
                head: &head,
                spans: &spans[..count],
            };
            self.reusable &=
                version == Version::HTTP_11 && !fields.has_token("connection", "close");
            self.reading = self.framing(status, &fields)?;
            let mut resp = Response::new(());
            *resp.status_mut() = status;
            *resp.version_mut() = version;
            if self.answer_headers {
                let mut map = HeaderMap::with_capacity(count);
                for &(a, b, c, d) in fields.spans {
                    let name = HeaderName::from_bytes(&head[a as usize..b as usize])
                        .map_err(|_| RawError::Protocol("a header's name is invalid"))?;
                    let value = HeaderValue::from_maybe_shared(head.slice(c as usize..d as usize))
                        .map_err(|_| RawError::Protocol("a header's value is invalid"))?;
                    map.append(name, value);
                }
                *resp.headers_mut() = map;
            }
            return Ok(Some(resp));
        }
    }

    /// How the answer's body is framed (RFC 9112 section 6.3).
    fn framing(&mut self, status: StatusCode, headers: &Fields<'_>) -> Result<InFraming, RawError> {
        if self.head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(InFraming::Done);
        }
        if headers.has("transfer-encoding") {
            // A length beside a coding may have fooled something on the way: not reused.
            if headers.has("content-length") {
                self.reusable = false;
            }
            let chunked = headers
                .values("transfer-encoding")
                .last()
                .and_then(|v| v.rsplit(|&b| b == b',').next())
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if chunked {
                return Ok(InFraming::ChunkSize);
            }
            self.reusable = false;
            return Ok(InFraming::Close);
        }
        match headers.content_length() {
            Ok(Some(0)) => Ok(InFraming::Done),
            Ok(Some(n)) => Ok(InFraming::Length(n)),
            Ok(None) => {
                self.reusable = false;
                Ok(InFraming::Close)
            }
            Err(()) => Err(RawError::Protocol("its Content-Length is invalid")),
        }
    }

    /// The request is all sent.
    pub fn idle_now(&self) -> bool {
        self.out.is_none()
    }

    /// The answer's body has no more to give.
    pub fn body_ended(&self) -> bool {
        self.reading == InFraming::Done
    }

    /// The answer's body's size, as far as it is known.
    pub fn size_hint(&self) -> SizeHint {
        match self.reading {
            InFraming::Length(n) => SizeHint::with_exact(n),
            InFraming::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// Read to its end, with nothing after it, its request all sent, and the answer
    /// allowing it: ready for another request.
    pub fn reusable(&self) -> bool {
        self.reusable
            && self.reading == InFraming::Done
            && self.out.is_none()
            && self.rbuf.is_empty()
    }

    /// The answer's body's next bytes; None at its end.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RawError>>> {
        loop {
            match self.reading {
                InFraming::Head | InFraming::Done => {
                    return Poll::Ready(None);
                }
                InFraming::Length(0) => {
                    self.reading = InFraming::Done;
                    return Poll::Ready(None);
                }
                InFraming::Length(left) => {
                    if self.rbuf.is_empty() && ready!(self.read_more(cx))? == 0 {
                        return Poll::Ready(Some(Err(self.fail(RawError::Closed))));
                    }
                    let take = (self.rbuf.len() as u64).min(left);
                    self.reading = InFraming::Length(left - take);
                    return Poll::Ready(Some(Ok(self.rbuf.split_to(take as usize).freeze())));
                }
                InFraming::Close => {
                    if self.rbuf.is_empty() && ready!(self.read_more(cx))? == 0 {
                        self.reusable = false;
                        self.reading = InFraming::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(self.rbuf.split().freeze())));
                }
                InFraming::ChunkSize => {
                    let Some(end) = memchr::memchr(b'\n', &self.rbuf) else {
                        if self.rbuf.len() > MAX_CHUNK_LINE {
                            return Poll::Ready(Some(Err(
                                self.fail(RawError::Protocol("a chunk's size line is too long"))
                            )));
                        }
                        if ready!(self.read_more(cx))? == 0 {
                            return Poll::Ready(Some(Err(self.fail(RawError::Closed))));
                        }
                        continue;
                    };
                    let Some(size) = chunk_size(&self.rbuf[..end]) else {
                        return Poll::Ready(Some(Err(
                            self.fail(RawError::Protocol("a chunk's size is invalid"))
                        )));
                    };
                    self.rbuf.advance(end + 1);
                    self.reading = match size {
                        0 => InFraming::Trailers(0),
                        n => InFraming::ChunkData(n),
                    };
                }
                InFraming::ChunkData(left) => {
                    if self.rbuf.is_empty() && ready!(self.read_more(cx))? == 0 {
                        return Poll::Ready(Some(Err(self.fail(RawError::Closed))));
                    }
                    let take = (self.rbuf.len() as u64).min(left);
                    self.reading = match left - take {
                        0 => InFraming::ChunkEnd,
                        n => InFraming::ChunkData(n),
                    };
                    return Poll::Ready(Some(Ok(self.rbuf.split_to(take as usize).freeze())));
                }
                InFraming::ChunkEnd => {
                    if self.rbuf.len() < 2 {
                        if ready!(self.read_more(cx))? == 0 {
                            return Poll::Ready(Some(Err(self.fail(RawError::Closed))));
                        }
                        continue;
                    }
                    if &self.rbuf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(
                            self.fail(RawError::Protocol("a chunk does not end with CRLF"))
                        )));
                    }
                    self.rbuf.advance(2);
                    self.reading = InFraming::ChunkSize;
                }
                InFraming::Trailers(seen) => {
                    let Some(end) = memchr::memchr(b'\n', &self.rbuf) else {
                        if seen + self.rbuf.len() > MAX_TRAILERS {
                            return Poll::Ready(Some(Err(
                                self.fail(RawError::Protocol("its trailers are too large"))
                            )));
                        }
                        if ready!(self.read_more(cx))? == 0 {
                            return Poll::Ready(Some(Err(self.fail(RawError::Closed))));
                        }
                        continue;
                    };
                    let blank = self.rbuf[..end] == *b"\r" || end == 0;
                    self.rbuf.advance(end + 1);
                    if blank {
                        self.reading = InFraming::Done;
                        return Poll::Ready(None);
                    }
                    if seen + end + 1 > MAX_TRAILERS {
                        return Poll::Ready(Some(Err(
                            self.fail(RawError::Protocol("its trailers are too large"))
                        )));
                    }
                    self.reading = InFraming::Trailers(seen + end + 1);
                }
            }
        }
    }

    /// Reads more of the body: 0 at the end; an error ends the connection's use.
    fn read_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, RawError>> {
        match ready!(self.poll_read(cx)) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(self.fail(RawError::Io(e)))),
        }
    }

    /// The connection is not to be used again after `e`.
    fn fail(&mut self, e: RawError) -> RawError {
        self.reusable = false;
        self.reading = InFraming::Done;
        e
    }
}

/// A chunk-size line's size (RFC 9112 section 7.1): hexadecimal digits, then optional
/// whitespace and extensions (ignored), ended by CRLF (the `\n` is not in `line`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    if rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return None;
    }
    let mut n = 0u64;
    for &d in &line[..digits] {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n = (n << 4) | u64::from(v);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// What `out` would write, piece by piece, as one `writev` gathers it: where each
    /// piece lies, and its bytes.
    fn gathered(out: &Outgoing) -> Vec<(*const u8, Vec<u8>)> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let k = out.gather(&mut slices);
        slices[..k]
            .iter()
            .map(|s| (s.as_ptr(), s.to_vec()))
            .collect()
    }

    /// A request whose body `pieces` are pushed as the body gives them.
    fn encoded(pieces: &[Bytes], chunked: bool) -> Outgoing {
        let total: usize = pieces.iter().map(Bytes::len).sum();
        let body = if chunked {
            http_body_util::StreamBody::new(futures_util::stream::empty::<
                Result<http_body::Frame<Bytes>, BoxError>,
            >())
            .boxed_unsync()
        } else {
            crate::error::full(Bytes::from(vec![0u8; total]))
        };
        let req = Request::post("http://upstream/p").body(body).unwrap();
        let mut out = Outgoing::new(req, "/p");
        for p in pieces {
            out.push_data(p.clone()).unwrap();
        }
        out.finish().unwrap();
        out
    }

    /// The body as it should go out after the head.
    fn framed(pieces: &[Bytes], chunked: bool) -> Vec<u8> {
        let mut want = Vec::new();
        for p in pieces {
            if chunked {
                want.extend_from_slice(format!("{:X}\r\n", p.len()).as_bytes());
            }
            want.extend_from_slice(p);
            if chunked {
                want.extend_from_slice(b"\r\n");
            }
        }
        if chunked {
            want.extend_from_slice(b"0\r\n\r\n");
        }
        want
    }

    /// What follows the head on `wire`.
    fn after_head(wire: &[u8]) -> &[u8] {
        &wire[wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..]
    }

    #[test]
    fn data_over_the_copy_limit_goes_out_as_it_came_and_the_rest_is_copied_beside_it() {
        // A small upload's 4 KiB file is over the limit: its bytes are not copied.
        let small = Bytes::from(vec![b's'; COPY_MAX]);
        let large = Bytes::from(vec![b'L'; 4096]);
        for chunked in [false, true] {
            let pieces = [small.clone(), large.clone(), small.clone()];
            let out = encoded(&pieces, chunked);
            let got = gathered(&out);
            // The head with the first (copied) piece, the large piece itself, the rest.
            assert_eq!(got.len(), 3, "chunked: {chunked}");
            assert_eq!(got[1].0, large.as_ptr(), "not copied");
            let wire: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone()).collect();
            assert!(
                after_head(&wire) == framed(&pieces, chunked),
                "chunked: {chunked}"
            );
            assert_eq!(wire.len(), out.pending());
        }
    }

    /// Writes at most `n` bytes of what `out` holds, as a socket taking them would.
    fn write_some(out: &mut Outgoing, wire: &mut Vec<u8>, n: usize) {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let k = out.gather(&mut slices);
        let mut left = n;
        for slice in &slices[..k] {
            let take = left.min(slice.len());
            wire.extend_from_slice(&slice[..take]);
            left -= take;
        }
        out.advance(n - left);
    }

    #[test]
    fn writes_cut_anywhere_put_the_request_on_the_wire_byte_for_byte() {
        let pieces: Vec<Bytes> = [3, COPY_MAX + 1, 1, 5000, COPY_MAX, 2 * COPY_MAX, 7, 9000]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![b'a' + i as u8; n]))
            .collect();
        for chunked in [false, true] {
            let want = framed(&pieces, chunked);
            // Each write takes a different length, from 1 byte to more than is left, and
            // the body gives its next piece between writes, as it does on a socket.
            for step in [1, 2, 7, 100, COPY_MAX + 3, 5001, 1 << 20] {
                let mut out = encoded(&[], chunked);
                if chunked {
                    // `encoded` ended the body: start again from the head alone.
                    out.buf.truncate(out.buf.len() - b"0\r\n\r\n".len());
                }
                out.framing = if chunked {
                    OutFraming::Chunked
                } else {
                    OutFraming::Length(want.len() as u64)
                };
                let mut wire = Vec::new();
                for (turn, p) in pieces.iter().enumerate() {
                    out.push_data(p.clone()).unwrap();
                    write_some(&mut out, &mut wire, step + turn % 3);
                }
                out.finish().unwrap();
                while out.pending() > 0 {
                    write_some(&mut out, &mut wire, step);
                }
                assert!(after_head(&wire) == want, "chunked: {chunked}, step {step}");
                assert!(gathered(&out).is_empty());
            }
        }
    }

    #[test]
    fn all_a_flush_holds_goes_out_in_one_write() {
        // The most pieces the body loop lets wait: data just over the copy limit until
        // FLUSH_AT is reached, each with its chunk line copied before it.
        let piece = Bytes::from(vec![b'x'; COPY_MAX + 1]);
        let n = FLUSH_AT.div_ceil(COPY_MAX + 1);
        let pieces = vec![piece; n];
        let out = encoded(&pieces, true);
        let got = gathered(&out);
        assert_eq!(
            got.iter().map(|(_, b)| b.len()).sum::<usize>(),
            out.pending()
        );
        assert!(got.len() > FEW_SLICES, "{} pieces", got.len());
    }
}
