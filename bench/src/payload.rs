//! What the benchmark uploads: a file of any size made of one fixed pseudo-random 1 MiB
//! block repeated, raw or base64-encoded, between a dialect's framing (a prefix and a
//! suffix).
//!
//! A [`Payload`] describes a body without holding it. [`Payload::chunks`] produces the body
//! on the fly as chunks of at most 64 KiB, zero-copy slices of two shared blocks: the raw
//! 1 MiB block and its base64 text (the encoding of three copies of it, 4 MiB, which
//! repeats exactly because 3 MiB is a whole number of 3-byte groups). So a 1 GiB upload,
//! base64 or not, costs the benchmark neither memory nor encoding time, and does not
//! compete with casegate for the CPU. [`Payload::gather`] collects a body once into one
//! `Bytes`, for files small enough to keep (cloned per request, never rebuilt).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use casegate::codec::b64;
use http_body::{Body, Frame, SizeHint};

/// The largest chunk a generated body yields.
pub const CHUNK: usize = 64 << 10;

/// The raw block's length; the file repeats it.
const BLOCK: usize = 1 << 20;

/// The two shared blocks every generated body slices.
struct Blocks {
    /// 1 MiB of pseudo-random bytes (fixed seed: every run uploads the same file).
    raw: Bytes,
    /// The base64 text of `raw` three times over (4 MiB).
    base64: Bytes,
}

fn blocks() -> &'static Blocks {
    static BLOCKS: OnceLock<Blocks> = OnceLock::new();
    BLOCKS.get_or_init(|| {
        // xorshift64: fast, fixed, and incompressible enough for a file body.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut raw = Vec::with_capacity(BLOCK);
        while raw.len() < BLOCK {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            raw.extend_from_slice(&state.to_le_bytes());
        }
        let mut text = String::with_capacity(4 * BLOCK);
        b64::encode_into(&raw.repeat(3), &mut text);
        Blocks {
            raw: Bytes::from(raw),
            base64: Bytes::from(text),
        }
    })
}

/// How the file appears in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is (a multipart file part).
    Raw,
    /// Padded standard base64 (a Tines `file_contents` string).
    Base64,
}

/// A body: `prefix`, the file (`file_len` bytes, encoded as `encoding`), `suffix`.
#[derive(Debug, Clone)]
pub struct Payload {
    prefix: Bytes,
    file_len: u64,
    encoding: Encoding,
    suffix: Bytes,
}

impl Payload {
    pub fn new(prefix: Bytes, file_len: u64, encoding: Encoding, suffix: Bytes) -> Self {
        Self {
            prefix,
            file_len,
            encoding,
            suffix,
        }
    }

    /// The file's length (what payload throughput counts).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The whole body's length (the `Content-Length`).
    pub fn wire_len(&self) -> u64 {
        let file = match self.encoding {
            Encoding::Raw => self.file_len,
            Encoding::Base64 => b64::encoded_len(self.file_len),
        };
        self.prefix.len() as u64 + file + self.suffix.len() as u64
    }

    /// The body as chunks of at most [`CHUNK`] bytes, produced as they are asked for.
    pub fn chunks(&self) -> Chunks {
        let blocks = blocks();
        let (block, periodic, tail) = match self.encoding {
            Encoding::Raw => (blocks.raw.clone(), self.file_len, Bytes::new()),
            Encoding::Base64 => {
                // Whole 3-byte groups come from the periodic text; the last 1 or 2 bytes
                // are encoded here, with their padding.
                let groups = self.file_len / 3;
                let rest: Vec<u8> = (groups * 3..self.file_len)
                    .map(|i| blocks.raw[(i % BLOCK as u64) as usize])
                    .collect();
                let mut tail = String::new();
                b64::encode_into(&rest, &mut tail);
                (blocks.base64.clone(), groups * 4, Bytes::from(tail))
            }
        };
        let mut after = BytesMut::with_capacity(tail.len() + self.suffix.len());
        after.extend_from_slice(&tail);
        after.extend_from_slice(&self.suffix);
        Chunks {
            before: Some(self.prefix.clone()),
            block,
            offset: 0,
            remaining: periodic,
            after: Some(after.freeze()),
        }
    }

    /// The whole body in one buffer (build once, clone per request).
    pub fn gather(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.wire_len() as usize);
        for chunk in self.chunks() {
            out.extend_from_slice(&chunk);
        }
        out.freeze()
    }
}

/// The chunks of one [`Payload`]: the prefix, slices of a shared block, then the encoded
/// tail and the suffix. Never yields an empty chunk.
pub struct Chunks {
    before: Option<Bytes>,
    block: Bytes,
    offset: usize,
    remaining: u64,
    after: Option<Bytes>,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if let Some(before) = self.before.take().filter(|b| !b.is_empty()) {
            return Some(before);
        }
        if self.remaining > 0 {
            let n = CHUNK
                .min(self.block.len() - self.offset)
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let chunk = self.block.slice(self.offset..self.offset + n);
            self.offset = (self.offset + n) % self.block.len();
            self.remaining -= n as u64;
            return Some(chunk);
        }
        self.after.take().filter(|b| !b.is_empty())
    }
}

/// A request body for the load generator: one prepared buffer, or a payload's chunks
/// generated as hyper asks for them. Its exact length is always known.
pub enum ReqBody {
    Whole(Option<Bytes>),
    Generated { chunks: Chunks, remaining: u64 },
}

impl ReqBody {
    pub fn whole(bytes: Bytes) -> Self {
        ReqBody::Whole(Some(bytes))
    }

    pub fn generated(payload: &Payload) -> Self {
        ReqBody::Generated {
            chunks: payload.chunks(),
            remaining: payload.wire_len(),
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.get_mut() {
            ReqBody::Whole(bytes) => bytes.take(),
            ReqBody::Generated { chunks, remaining } => chunks.next().inspect(|chunk| {
                *remaining = remaining.saturating_sub(chunk.len() as u64);
            }),
        };
        Poll::Ready(next.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Whole(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            ReqBody::Generated { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ReqBody::Generated { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's first `len` bytes, in one piece.
    fn file_bytes(len: usize) -> Vec<u8> {
        blocks().raw.iter().copied().cycle().take(len).collect()
    }

    fn payload(len: u64, encoding: Encoding) -> Payload {
        Payload::new(
            Bytes::from_static(b"<"),
            len,
            encoding,
            Bytes::from_static(b">"),
        )
    }

    #[test]
    fn generated_bodies_match_the_file() {
        for len in [
            0,
            1,
            2,
            3,
            4,
            65535,
            65536,
            65537,
            (3 << 20) + 2,
            (5 << 20) + 1,
        ] {
            let file = file_bytes(len);
            let raw = payload(len as u64, Encoding::Raw);
            let body = raw.gather();
            assert_eq!(body.len() as u64, raw.wire_len());
            assert_eq!(&body[1..body.len() - 1], &file[..], "raw {len}");

            let encoded = payload(len as u64, Encoding::Base64);
            let body = encoded.gather();
            assert_eq!(body.len() as u64, encoded.wire_len());
            let mut text = String::new();
            b64::encode_into(&file, &mut text);
            assert_eq!(&body[1..body.len() - 1], text.as_bytes(), "base64 {len}");
            assert!(encoded.chunks().all(|c| !c.is_empty() && c.len() <= CHUNK));
        }
    }
}
