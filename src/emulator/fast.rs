//! Fast mode's downloads (benchmarks): an emulator in fast mode stores nothing, yet the
//! canned file its upload answers name can be downloaded. An upload is drained unparsed,
//! keeping only its first [`HEAD`] and last [`TAIL`] bytes (a [`Sample`]); from those,
//! [`file_len`] tells how many file bytes it carried: the bytes between the file part's
//! headers and the delimiter after them (multipart), or the decoded length of the base64
//! `file_contents` string (JSON, unbroken base64 as casegate and tapi send it); anything
//! else counts as its whole body. A download of the canned file then sends that many bytes
//! of a fixed pattern (the byte at offset `o` is `o % 251`), sliced from one static block
//! as they are sent, never held.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;

use super::wire::{self, Dropped, Resp, DOWNLOAD_CHUNK};

/// The number of the file a fast upload answer names: always 1, or with unique ids the
/// next of 1, 2, 3 ...
pub(super) fn next_number(sh: &super::server::Shared) -> u64 {
    let n = sh
        .fast_uploads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if sh.cfg.fast_unique_ids {
        n
    } else {
        1
    }
}

/// Whether a fast download of file number `n` finds the canned file: 1, or with unique ids
/// any number named so far.
pub(super) fn is_named(sh: &super::server::Shared, n: u64) -> bool {
    if sh.cfg.fast_unique_ids {
        (1..=sh.fast_uploads.load(std::sync::atomic::Ordering::Relaxed)).contains(&n)
    } else {
        n == 1
    }
}

/// The UUID form of file number `n` (`00000000-0000-4000-8000-000000000001` for 1). The
/// numbers after 1 are scattered over the last 48 bits, as a real Case IQ's random UUIDs
/// are: ids made in order would let a ledger index them as a sequence, which no real
/// upstream's UUIDs allow (a benchmark with a new file per upload would flatter casegate).
pub(super) fn uuid(n: u64) -> String {
    let scattered = (n.wrapping_sub(1).wrapping_mul(SCATTER) & LOW_48) ^ 1;
    format!("{UUID_PREFIX}{scattered:012x}")
}

/// The number of a UUID made by [`uuid`].
pub(super) fn uuid_number(id: &str) -> Option<u64> {
    let hex = id.strip_prefix(UUID_PREFIX)?;
    if hex.len() != 12 {
        return None;
    }
    let scattered = u64::from_str_radix(hex, 16).ok()?;
    Some(((scattered ^ 1).wrapping_mul(GATHER) & LOW_48).wrapping_add(1))
}

const UUID_PREFIX: &str = "00000000-0000-4000-8000-";
const LOW_48: u64 = (1 << 48) - 1;
/// An odd multiplier, so multiplying by it permutes the numbers modulo 2^48.
const SCATTER: u64 = 0x9E37_79B9_7F4A_7C15;
/// Its inverse modulo 2^64 (so modulo 2^48 too): Newton's iteration, each step doubling
/// the bits that are right.
const GATHER: u64 = {
    let mut inv = SCATTER;
    let mut i = 0;
    while i < 6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(SCATTER.wrapping_mul(inv)));
        i += 1;
    }
    inv
};

/// How much of an upload's start is kept (the parts before the file, its headers).
pub(super) const HEAD: usize = 64 << 10;
/// How much of an upload's end is kept (what follows the file).
pub(super) const TAIL: usize = 4 << 10;

/// The most parts looked through for the file's.
const MAX_PARTS: usize = 1000;

/// The pattern's period: a prime, so it does not line up with chunk sizes.
const PERIOD: usize = 251;

/// What is kept of a drained upload: its length, its first and its last bytes.
#[derive(Debug, Default)]
pub(super) struct Sample {
    /// Every byte read.
    pub total: u64,
    /// The first bytes, up to [`HEAD`].
    pub head: Vec<u8>,
    /// The last bytes, up to [`TAIL`] (they may overlap the head's).
    pub tail: Vec<u8>,
}

impl Sample {
    /// Takes in the next chunk of the body.
    pub(super) fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < HEAD {
            let n = data.len().min(HEAD - self.head.len());
            self.head.extend_from_slice(&data[..n]);
        }
        if data.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TAIL..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..excess);
        }
    }

    /// Where the tail starts in the body.
    fn tail_start(&self) -> u64 {
        self.total - self.tail.len() as u64
    }

    /// The whole body, when head and tail together hold all of it.
    fn whole(&self) -> Option<Vec<u8>> {
        let kept = (self.head.len() + self.tail.len()) as u64;
        if self.total > kept {
            return None;
        }
        let overlap = (kept - self.total) as usize;
        let mut body = self.head.clone();
        body.extend_from_slice(&self.tail[overlap..]);
        Some(body)
    }

    /// The first occurrence of `needle` at or after offset `from`, found in the head or in
    /// the tail (the bytes between them are not kept).
    fn find(&self, needle: &[u8], from: u64) -> Option<u64> {
        let search = |hay: &[u8], start: u64, from: u64| {
            let skip = usize::try_from(from.saturating_sub(start)).ok()?;
            let hay = hay.get(skip..)?;
            let at = hay.windows(needle.len()).position(|w| w == needle)?;
            Some(start + (skip + at) as u64)
        };
        if let Some(body) = self.whole() {
            return search(&body, 0, from);
        }
        search(&self.head, 0, from).or_else(|| search(&self.tail, self.tail_start(), from))
    }

    /// The byte at offset `at`, when it was kept.
    fn byte(&self, at: u64) -> Option<u8> {
        let at_head = usize::try_from(at).ok().and_then(|i| self.head.get(i));
        let in_tail = || {
            let i = usize::try_from(at.checked_sub(self.tail_start())?).ok()?;
            self.tail.get(i)
        };
        at_head.or_else(in_tail).copied()
    }

    /// The kept bytes of `start..end`, when the head holds them all.
    fn head_range(&self, start: u64, end: u64) -> Option<&[u8]> {
        let start = usize::try_from(start).ok()?;
        let end = usize::try_from(end).ok()?;
        self.head.get(start..end)
    }
}

/// How many file bytes the upload `sample` (sent with `parts`' headers) carried: see the
/// module's documentation. The whole body's length when the file cannot be found.
pub(super) fn file_len(parts: &Parts, sample: &Sample) -> u64 {
    let essence = wire::header(parts, "content-type").and_then(|v| v.parse::<mime::Mime>().ok());
    let found = match &essence {
        Some(m) if m.essence_str() == mime::MULTIPART_FORM_DATA.essence_str() => m
            .get_param(mime::BOUNDARY)
            .and_then(|b| multipart_file_len(sample, b.as_str())),
        Some(m) if m.essence_str() == mime::APPLICATION_JSON.essence_str() => {
            base64_file_len(sample)
        }
        _ => None,
    };
    found.unwrap_or(sample.total)
}

/// The length of the first part with a `filename` (its content runs from the end of its
/// headers to the next delimiter).
fn multipart_file_len(sample: &Sample, boundary: &str) -> Option<u64> {
    let delimiter = format!("--{boundary}");
    let mut at = sample.find(delimiter.as_bytes(), 0)?;
    for _ in 0..MAX_PARTS {
        let headers = at + delimiter.len() as u64;
        let headers_end = sample.find(b"\r\n\r\n", headers)?;
        let content = headers_end + 4;
        let is_file = sample
            .head_range(headers, headers_end)?
            .windows(b"filename=".len())
            .any(|w| w.eq_ignore_ascii_case(b"filename="));
        if is_file {
            let end = sample.find(format!("\r\n{delimiter}").as_bytes(), content)?;
            return Some(end - content);
        }
        at = sample.find(delimiter.as_bytes(), content)?;
    }
    None
}

/// The decoded length of the JSON string `file_contents` (base64, padded or not).
fn base64_file_len(sample: &Sample) -> Option<u64> {
    let key = sample.find(b"\"file_contents\"", 0)?;
    let mut at = key + "\"file_contents\"".len() as u64;
    let skip_space = |at: &mut u64| {
        while sample.byte(*at).is_some_and(|b| b.is_ascii_whitespace()) {
            *at += 1;
        }
    };
    skip_space(&mut at);
    (sample.byte(at)? == b':').then_some(())?;
    at += 1;
    skip_space(&mut at);
    (sample.byte(at)? == b'"').then_some(())?;
    let start = at + 1;
    let end = sample.find(b"\"", start)?;
    let len = end - start;
    let padding = (1..=2.min(len))
        .take_while(|back| sample.byte(end - back) == Some(b'='))
        .count() as u64;
    let digits = len - padding;
    Some(digits / 4 * 3 + (digits % 4).saturating_sub(1))
}

/// The pattern, long enough that a chunk may start at any offset within one period.
static PATTERN: [u8; DOWNLOAD_CHUNK + PERIOD] = pattern();

const fn pattern() -> [u8; DOWNLOAD_CHUNK + PERIOD] {
    let mut block = [0u8; DOWNLOAD_CHUNK + PERIOD];
    let mut i = 0;
    while i < block.len() {
        block[i] = (i % PERIOD) as u8;
        i += 1;
    }
    block
}

/// The byte at offset `at` of every fast download.
#[cfg(test)]
pub(super) fn pattern_byte(at: u64) -> u8 {
    (at % PERIOD as u64) as u8
}

/// A body of `len` pattern bytes, sent as static slices of at most [`DOWNLOAD_CHUNK`].
struct Generated {
    sent: u64,
    len: u64,
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Dropped;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Dropped>>> {
        let left = self.len - self.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(left).map_or(DOWNLOAD_CHUNK, |l| l.min(DOWNLOAD_CHUNK));
        let from = (self.sent % PERIOD as u64) as usize;
        self.sent += n as u64;
        let data = Bytes::from_static(&PATTERN[from..from + n]);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

/// The download of the canned file `name` of type `content_type`: 200 with `len` pattern
/// bytes, `Content-Length` set. `Range` is not honoured.
pub(super) fn download(len: u64, name: &str, content_type: &'static str) -> Resp {
    let mut resp = Response::new(Generated { sent: 0, len }.boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(disposition) = HeaderValue::from_str(&wire::content_disposition(name, false)) {
        headers.insert(CONTENT_DISPOSITION, disposition);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_numbers_and_their_uuids_map_both_ways_and_the_uuids_are_not_in_order() {
        assert_eq!(uuid(1), "00000000-0000-4000-8000-000000000001");
        let numbers = (1..2000).chain([1 << 40, (1 << 48) - 1, 1 << 48]);
        let mut ids = Vec::new();
        for n in numbers {
            let id = uuid(n);
            assert!(uuid::Uuid::try_parse(&id).is_ok(), "{id}");
            assert_eq!(uuid_number(&id), Some(n), "{id}");
            ids.push(id);
        }
        let ascending = ids[..1999].windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (700..1300).contains(&ascending),
            "{ascending} of 1998 in order"
        );
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    /// `body` as an emulator keeps it, fed in chunks of `chunk` bytes.
    fn sample(body: &[u8], chunk: usize) -> Sample {
        let mut sample = Sample::default();
        for piece in body.chunks(chunk) {
            sample.push(piece);
        }
        sample
    }

    fn parts(content_type: &str) -> Parts {
        let req = http::Request::post("/").header("content-type", content_type);
        req.body(()).expect("request").into_parts().0
    }

    fn multipart(file: &[u8], after: &str) -> Vec<u8> {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"caseId\"\r\n\r\n7\r\n\
                         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; \
                         filename=\"a.bin\"\r\nContent-Type: application/pdf\r\n\r\n"
            .to_vec();
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(after.as_bytes());
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    }

    #[test]
    fn finds_the_file_part_of_any_length() {
        let form = parts("multipart/form-data; boundary=XyZ");
        let after = "--XyZ\r\nContent-Disposition: form-data; name=\"value\"\r\n\r\nhi\r\n";
        for len in [0, 1, 100, HEAD - 10, HEAD + TAIL, 3 * HEAD + 17] {
            let file: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
            for tail in ["", after] {
                let body = multipart(&file, tail);
                for chunk in [7, 1000, 64 << 10] {
                    let kept = sample(&body, chunk);
                    assert_eq!(kept.total, body.len() as u64);
                    assert_eq!(file_len(&form, &kept), len as u64, "{len} {chunk} {tail:?}");
                }
            }
        }
    }

    #[test]
    fn decodes_the_length_of_file_contents() {
        let json = parts("application/json");
        for len in [0, 1, 2, 3, 4, 5, HEAD, HEAD + 1, HEAD + 2, 5 * HEAD] {
            let file = vec![b'q'; len];
            let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &file);
            let body = format!(
                "{{\"filename\":\"a.pdf\", \"file_contents\" : \"{encoded}\",\"value\":\"c\"}}"
            );
            for chunk in [5, 64 << 10] {
                let kept = sample(body.as_bytes(), chunk);
                assert_eq!(file_len(&json, &kept), len as u64, "{len} {chunk}");
            }
        }
        // Unpadded base64 too.
        let kept = sample(br#"{"file_contents":"aGk"}"#, 3);
        assert_eq!(file_len(&json, &kept), 2);
    }

    #[test]
    fn anything_else_counts_whole() {
        let garbage = vec![b'z'; 100_000];
        for content_type in [
            "application/json",
            "multipart/form-data; boundary=b",
            "text/plain",
        ] {
            let kept = sample(&garbage, 4096);
            assert_eq!(
                file_len(&parts(content_type), &kept),
                100_000,
                "{content_type}"
            );
        }
    }

    #[tokio::test]
    async fn downloads_are_the_pattern() {
        let len = 3 * DOWNLOAD_CHUNK as u64 + 5;
        let resp = download(len, "upload.bin", "application/octet-stream");
        assert_eq!(resp.headers()[CONTENT_LENGTH], len.to_string().as_str());
        let mut body = resp.into_body();
        let mut at = 0u64;
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame").into_data().expect("data");
            assert!(data.len() <= DOWNLOAD_CHUNK);
            for byte in data {
                assert_eq!(byte, pattern_byte(at));
                at += 1;
            }
        }
        assert_eq!(at, len);
    }
}
