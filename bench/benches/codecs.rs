//! Micro-benchmarks of casegate's codecs on a 32 MiB file, fed as 64 KiB chunks the way
//! an upload arrives: base64 (streaming encode, decode), the Tines JSON scanner (with and
//! without MIME line breaks in the base64), the outbound multipart writer, and multer
//! parsing a multipart body. Throughput counts file bytes, so the numbers compare with the
//! load benchmark's payload MB/s. Also what a read of the clock costs (`clock`). Run with
//! `cargo bench -p casegate-bench`.

use std::sync::LazyLock;

use bytes::Bytes;
use casegate::codec::b64;
use casegate::codec::json_scan::{Event, Limits, Scanner};
use casegate::codec::multipart::{whole_body, Writer};
use divan::counter::BytesCount;
use divan::{black_box, Bencher};

const FILE_LEN: usize = 32 << 20;
const CHUNK: usize = 64 << 10;
/// MIME base64 line length.
const LINE: usize = 76;
const CASE_ID: &str = "9c235210-6834-11ea-a78c-6ffb38a34414";

fn main() {
    // Build the inputs before timing anything.
    LazyLock::force(&BASE64);
    // 20 samples of one 32 MiB pass each, unless the command line says otherwise.
    divan::Divan::default()
        .sample_count(20)
        .config_with_args()
        .main();
}

/// The file: 32 MiB of pseudo-random bytes (xorshift64, fixed seed).
static FILE: LazyLock<Bytes> = LazyLock::new(|| {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut file = Vec::with_capacity(FILE_LEN);
    while file.len() < FILE_LEN {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(file)
});

/// The file's padded base64 text.
static BASE64: LazyLock<String> = LazyLock::new(|| {
    let mut text = String::new();
    b64::encode_into(&FILE, &mut text);
    text
});

fn file_bytes() -> BytesCount {
    BytesCount::new(FILE_LEN)
}

#[divan::bench]
fn base64_encode_streaming(bencher: Bencher<'_, '_>) {
    bencher.counter(file_bytes()).bench(|| {
        let mut encoder = b64::Encoder::new();
        let mut out = 0;
        for chunk in FILE.chunks(CHUNK) {
            out += black_box(encoder.push(chunk)).len();
        }
        out + encoder.finish().len()
    });
}

/// Decodes the benchmark's base64 in 64 KiB chunks (a whole number of 4-character
/// groups) with `decode`.
fn bench_decode<E: std::fmt::Display>(
    bencher: Bencher<'_, '_>,
    decode: impl Fn(&[u8], &mut Vec<u8>) -> Result<(), E>,
) {
    let mut out = Vec::with_capacity(CHUNK);
    bencher.counter(file_bytes()).bench_local(|| {
        let mut decoded = 0;
        for chunk in BASE64.as_bytes().chunks(CHUNK) {
            out.clear();
            if let Err(e) = decode(chunk, &mut out) {
                panic!("the benchmark's own base64 does not decode: {e}");
            }
            decoded += black_box(&out).len();
        }
        decoded
    });
}

#[divan::bench]
fn base64_decode(bencher: Bencher<'_, '_>) {
    bench_decode(bencher, b64::decode_into);
}

/// The `base64` crate alone, as casegate's codec used it before `base64-simd`: the
/// before/after baseline, measured in the same run.
const PLAIN: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[divan::bench]
fn base64_encode_plain_crate(bencher: Bencher<'_, '_>) {
    use base64::Engine as _;
    let mut out = String::with_capacity(CHUNK / 3 * 4 + 4);
    bencher.counter(file_bytes()).bench_local(|| {
        let mut encoded = 0;
        // 64 KiB chunks rounded to whole 3-byte groups, as the streaming encoder sends them.
        for chunk in FILE.chunks(CHUNK / 3 * 3) {
            out.clear();
            PLAIN.encode_string(chunk, &mut out);
            encoded += black_box(&out).len();
        }
        encoded
    });
}

#[divan::bench]
fn base64_decode_plain_crate(bencher: Bencher<'_, '_>) {
    use base64::Engine as _;
    bench_decode(bencher, |chunk, out| PLAIN.decode_vec(chunk, out));
}

/// How the base64 in a Tines body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lines {
    /// One unbroken string.
    Unbroken,
    /// MIME lines of 76 characters, each followed by the JSON escapes `\r\n`.
    Mime,
}

impl std::fmt::Display for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lines::Unbroken => "unbroken",
            Lines::Mime => "crlf_every_76",
        })
    }
}

/// A Tines upload body around the file.
fn tines_body(lines: Lines) -> Bytes {
    let mut body = br#"{"filename":"bench.pdf","file_contents":""#.to_vec();
    if lines == Lines::Mime {
        for line in BASE64.as_bytes().chunks(LINE) {
            body.extend_from_slice(line);
            body.extend_from_slice(br"\r\n");
        }
    } else {
        body.extend_from_slice(BASE64.as_bytes());
    }
    body.extend_from_slice(br#"","value":"bench comment"}"#);
    Bytes::from(body)
}

#[divan::bench(args = [Lines::Unbroken, Lines::Mime])]
fn json_scan(bencher: Bencher<'_, '_>, lines: Lines) {
    let body = tines_body(lines);
    let scan = |body: &Bytes| {
        let mut scanner = Scanner::new("file_contents", Limits::default());
        let mut events = Vec::new();
        let mut decoded = 0;
        let mut count = |events: &mut Vec<Event>| {
            for event in events.drain(..) {
                if let Event::FileData(data) = event {
                    decoded += data.len();
                }
            }
        };
        let refused = |e| panic!("the benchmark's own Tines body was refused: {e}");
        for chunk in body.chunks(CHUNK) {
            scanner.feed(chunk, &mut events).unwrap_or_else(refused);
            count(&mut events);
        }
        scanner.finish(&mut events).unwrap_or_else(refused);
        count(&mut events);
        decoded
    };
    assert_eq!(scan(&body), FILE_LEN, "the scanner lost file bytes");
    bencher
        .counter(file_bytes())
        .bench(|| scan(black_box(&body)));
}

/// A Case IQ body: `caseId`, `description`, then the file.
fn multipart_body(writer: &Writer) -> Bytes {
    whole_body(
        writer,
        &[("caseId", CASE_ID), ("description", "bench comment")],
        Some(("file", "bench.pdf", "application/pdf", &FILE)),
    )
}

#[divan::bench]
fn multipart_write(bencher: Bencher<'_, '_>) {
    let writer = Writer::new();
    bencher
        .counter(file_bytes())
        .bench(|| multipart_body(black_box(&writer)).len());
}

fn multer_refused<T>(e: multer::Error) -> T {
    panic!("multer refused the benchmark's own body: {e}")
}

#[divan::bench]
fn multer_parse(bencher: Bencher<'_, '_>) {
    let writer = Writer::new();
    let body = multipart_body(&writer);
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("cannot start a tokio runtime: {e}"),
    };
    let parse = |body: &Bytes| {
        let chunks = (0..body.len()).step_by(CHUNK).map(|at| {
            Ok::<_, std::convert::Infallible>(body.slice(at..body.len().min(at + CHUNK)))
        });
        let mut form =
            multer::Multipart::new(futures_util::stream::iter(chunks), writer.boundary());
        runtime.block_on(async {
            let mut file = 0;
            while let Some(mut field) = form.next_field().await.unwrap_or_else(multer_refused) {
                let is_file = field.name() == Some("file");
                while let Some(chunk) = field.chunk().await.unwrap_or_else(multer_refused) {
                    if is_file {
                        file += chunk.len();
                    }
                }
            }
            file
        })
    };
    assert_eq!(parse(&body), FILE_LEN, "multer lost file bytes");
    bencher
        .counter(file_bytes())
        .bench_local(|| parse(black_box(&body)));
}

/// What a read of the clock costs, beside a read of the connection poll's clock
/// (`casegate::clock`): the figure behind `bench/instructions`' clock reads per upload.
mod clock {
    use std::time::{Instant, SystemTime};

    #[divan::bench]
    fn instant_now() -> Instant {
        Instant::now()
    }

    #[divan::bench]
    fn system_time_now() -> SystemTime {
        SystemTime::now()
    }

    /// A read within a poll that has read the clock already.
    #[divan::bench]
    fn poll_clock_now(bencher: divan::Bencher) {
        let _poll = casegate::clock::InPoll::enter();
        casegate::clock::now();
        bencher.bench_local(casegate::clock::now);
    }
}
