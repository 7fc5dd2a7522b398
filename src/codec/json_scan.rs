//! Streaming scanner for the body of a Tines "attach file to case" request: a JSON object
//! whose file field (`file_contents`) holds the whole file as one base64 string, so the
//! body may be gigabytes long. The scanner is sans-I/O: it is fed the body in chunks of
//! any size, checks that the body is strict JSON (RFC 8259, as `serde_json` reads it),
//! decodes the file field's base64 as it streams past, and reports the other top-level
//! fields whole. What it holds is bounded by [`Limits`] plus the bytes decoded from the
//! current chunk, never by the size of the file.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

use bytes::Bytes;

use super::{b64, json_out};

/// Bounds on what the scanner holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting allowed (the top-level object is depth 1). Default 32.
    pub max_depth: usize,
    /// Longest key or scalar value (string after unescaping, number text) of a non-file
    /// field, in bytes. Default 64 KiB.
    pub max_field_bytes: usize,
    /// Total bytes of all non-file keys and values together. Default 1 MiB.
    pub max_fields_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_field_bytes: 64 * 1024,
            max_fields_total: 1024 * 1024,
        }
    }
}

/// A top-level value other than the file, fully read.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as its JSON text.
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An object or array (validated, skipped, not kept).
    Composite,
}

/// What the scanner reports, in body order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A top-level field other than the file field (or the file key with a non-string
    /// value), fully read.
    Field {
        /// The unescaped key: borrowed when it is one of the keys the scanner was told of
        /// ([`Scanner::with_known_keys`]), so an upload's usual keys cost no allocation.
        key: Cow<'static, str>,
        /// Its value.
        value: Scalar,
    },
    /// The file key's string value starts.
    FileStart,
    /// Decoded file bytes (never empty).
    FileData(Bytes),
    /// File text checked but not decoded (never empty), a slice of the chunk given to
    /// [`Scanner::feed_bytes`]: whole groups of the standard alphabet, no padding,
    /// whitespace or escapes, so exactly the padded standard encoding of the bytes it
    /// stands for ([`b64::decode_whole`] gives them, [`b64::whole_decoded_len`] their
    /// number). A back that sends the file as base64 passes it on as it came; the bytes
    /// are decoded only where they are needed.
    FileCoded(Bytes),
    /// The file string ended; `decoded_len` = total decoded bytes.
    FileEnd {
        /// Sum of the lengths of all [`Event::FileData`] and of the bytes of all
        /// [`Event::FileCoded`] of this file.
        decoded_len: u64,
    },
    /// The top-level object closed (only whitespace may follow).
    End,
}

/// Why a body was refused. Offsets count bytes from the start of the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The body breaks the JSON grammar at `offset`.
    #[error("the body is not valid JSON at byte {offset}: {what}")]
    Syntax { offset: u64, what: &'static str },
    /// The first non-whitespace byte is not `{`.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// A top-level key appears twice.
    #[error("the key {0:?} appears twice")]
    DuplicateKey(String),
    /// Nesting beyond [`Limits::max_depth`].
    #[error("the JSON nests deeper than {0} levels")]
    TooDeep(usize),
    /// A key or value beyond [`Limits::max_field_bytes`] (an over-long key is given by
    /// its first 64 characters).
    #[error("the field {0:?} is too large")]
    FieldTooLarge(String),
    /// The non-file keys and values add up to more than [`Limits::max_fields_total`].
    #[error("the fields other than the file are too large in total")]
    FieldsTooLarge,
    /// The file string holds something other than base64 and whitespace; `offset` is the
    /// byte where that became certain (the closing quote for a bad final group).
    #[error("{key} is not valid base64 (at byte {offset} of the body)")]
    BadBase64 { key: String, offset: u64 },
    /// The input ended inside the JSON object.
    #[error("the body ended before the JSON did")]
    Truncated,
    /// Something other than whitespace follows the top-level object.
    #[error("the body has data after the JSON object at byte {offset}")]
    TrailingData { offset: u64 },
}

/// Characters of an over-long key quoted in [`ScanError::FieldTooLarge`].
const KEY_QUOTE_CHARS: usize = 64;

/// The characters of a file string's block that [`FileLexer::whole_run`] tries whole: a
/// multiple of 4. Small in tests, so the tests' strings cross many blocks' edges (but
/// longer than a MIME line, as in use).
const RUN_BLOCK: usize = if cfg!(test) { 128 } else { 16 * 1024 };

/// The base64 alphabet without `=`: the bytes the file string's fast path decodes in bulk.
static ALPHABET: [bool; 256] = alphabet_table();

const fn alphabet_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i != b'=' as usize && b64::is_alphabet(i as u8);
        i += 1;
    }
    table
}

fn is_alphabet(b: u8) -> bool {
    ALPHABET[usize::from(b)]
}

/// [`is_alphabet`] by comparisons instead of a table: the compiler can run these on a
/// whole block of bytes at once, which it cannot do with table lookups. Byte by byte the
/// table is faster (the codec bench's line-broken case halves with comparisons there),
/// so both stay.
#[inline(always)]
fn is_alphabet_by_ranges(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter | digit | (b == b'+') | (b == b'/')
}

/// Length of the leading run of alphabet bytes in `s`.
fn alphabet_run(s: &[u8]) -> usize {
    const LANES: usize = 32;
    let mut blocks = s.chunks_exact(LANES);
    let mut run = 0;
    for block in &mut blocks {
        let mut all = true;
        for &b in block {
            all &= is_alphabet_by_ranges(b);
        }
        if !all {
            return run + block.iter().take_while(|&&b| is_alphabet(b)).count();
        }
        run += LANES;
    }
    run + blocks
        .remainder()
        .iter()
        .take_while(|&&b| is_alphabet(b))
        .count()
}

/// How many bytes at the start of `s` the file string skips as one piece of whitespace
/// (a space, or a whole `\n`, `\r` or `\t` escape); 0 for anything else.
fn skippable(s: &[u8]) -> usize {
    match s {
        [b'\\', b'n' | b'r' | b't', ..] => 2,
        [b' ', ..] => 1,
        _ => 0,
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn hex_digit(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a') + 10),
        b'A'..=b'F' => Some(u16::from(b - b'A') + 10),
        _ => None,
    }
}

/// The first [`KEY_QUOTE_CHARS`] characters of the valid UTF-8 prefix of `bytes`.
fn quote_key(bytes: &[u8]) -> String {
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    valid.chars().take(KEY_QUOTE_CHARS).collect()
}

/// What one byte of a JSON string amounts to.
enum Lexed {
    /// Part of an escape: nothing yet.
    Nothing,
    /// A byte of the string as written (ASCII or part of a UTF-8 sequence).
    Byte(u8),
    /// A character from an escape.
    Char(char),
    /// The closing quote.
    End,
}

/// Where a [`StrLexer`] is inside an escape.
#[derive(Debug, Clone, Copy)]
enum Escape {
    None,
    /// After `\`.
    Backslash,
    /// Inside `\uXXXX`: `digits` read so far; `high` is a preceding high surrogate.
    Hex {
        digits: u8,
        value: u16,
        high: Option<u16>,
    },
    /// After a high surrogate, expecting the `\` of its low half.
    LowBackslash(u16),
    /// After a high surrogate and `\`, expecting `u`.
    LowU(u16),
}

/// The bytes of a JSON string after its opening quote: escapes, control characters and
/// UTF-8 well-formedness, one byte at a time.
#[derive(Debug, Clone, Copy)]
struct StrLexer {
    escape: Escape,
    /// Continuation bytes still due in the current UTF-8 sequence, and the range the
    /// next one must be in (narrower after some lead bytes, to refuse overlong forms and
    /// surrogates).
    utf8_due: u8,
    utf8_lo: u8,
    utf8_hi: u8,
}

impl StrLexer {
    fn new() -> Self {
        Self {
            escape: Escape::None,
            utf8_due: 0,
            utf8_lo: 0x80,
            utf8_hi: 0xBF,
        }
    }

    /// Between characters: no escape or UTF-8 sequence under way.
    fn is_plain(&self) -> bool {
        matches!(self.escape, Escape::None) && self.utf8_due == 0
    }

    fn step(&mut self, b: u8) -> Result<Lexed, &'static str> {
        match self.escape {
            Escape::None if self.utf8_due > 0 => {
                if b < self.utf8_lo || b > self.utf8_hi {
                    return Err("invalid UTF-8 in a string");
                }
                self.utf8_due -= 1;
                self.utf8_lo = 0x80;
                self.utf8_hi = 0xBF;
                Ok(Lexed::Byte(b))
            }
            Escape::None => {
                let (due, lo, hi) = match b {
                    b'"' => return Ok(Lexed::End),
                    b'\\' => {
                        self.escape = Escape::Backslash;
                        return Ok(Lexed::Nothing);
                    }
                    0x00..=0x1F => return Err("control character in a string"),
                    0x20..=0x7F => return Ok(Lexed::Byte(b)),
                    0xC2..=0xDF => (1, 0x80, 0xBF),
                    0xE0 => (2, 0xA0, 0xBF),
                    0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
                    0xED => (2, 0x80, 0x9F),
                    0xF0 => (3, 0x90, 0xBF),
                    0xF1..=0xF3 => (3, 0x80, 0xBF),
                    0xF4 => (3, 0x80, 0x8F),
                    _ => return Err("invalid UTF-8 in a string"),
                };
                self.utf8_due = due;
                self.utf8_lo = lo;
                self.utf8_hi = hi;
                Ok(Lexed::Byte(b))
            }
            Escape::Backslash => {
                self.escape = Escape::None;
                let c = match b {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        self.escape = Escape::Hex {
                            digits: 0,
                            value: 0,
                            high: None,
                        };
                        return Ok(Lexed::Nothing);
                    }
                    _ => return Err("invalid escape in a string"),
                };
                Ok(Lexed::Char(c))
            }
            Escape::Hex {
                digits,
                value,
                high,
            } => {
                let value = value << 4 | hex_digit(b).ok_or("invalid \\u escape")?;
                if digits < 3 {
                    self.escape = Escape::Hex {
                        digits: digits + 1,
                        value,
                        high,
                    };
                    return Ok(Lexed::Nothing);
                }
                self.escape = Escape::None;
                let code = match (high, value) {
                    (None, 0xD800..=0xDBFF) => {
                        self.escape = Escape::LowBackslash(value);
                        return Ok(Lexed::Nothing);
                    }
                    (None, 0xDC00..=0xDFFF) => return Err("lone surrogate in \\u escape"),
                    (None, _) => u32::from(value),
                    (Some(high), 0xDC00..=0xDFFF) => {
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(value) - 0xDC00)
                    }
                    (Some(_), _) => return Err("lone surrogate in \\u escape"),
                };
                char::from_u32(code)
                    .map(Lexed::Char)
                    .ok_or("invalid \\u escape")
            }
            Escape::LowBackslash(high) if b == b'\\' => {
                self.escape = Escape::LowU(high);
                Ok(Lexed::Nothing)
            }
            Escape::LowU(high) if b == b'u' => {
                self.escape = Escape::Hex {
                    digits: 0,
                    value: 0,
                    high: Some(high),
                };
                Ok(Lexed::Nothing)
            }
            Escape::LowBackslash(_) | Escape::LowU(_) => Err("lone surrogate in \\u escape"),
        }
    }
}

/// Where a [`NumLexer`] is in the number grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumLexer {
    /// After `-`.
    Minus,
    /// After an integer part `0`.
    Zero,
    /// Inside an integer part not starting with `0`.
    Int,
    /// After `.`.
    Dot,
    /// Inside the fraction digits.
    Frac,
    /// After `e` or `E`.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    /// Inside the exponent digits.
    ExpDigits,
}

impl NumLexer {
    fn start(b: u8) -> Self {
        match b {
            b'-' => Self::Minus,
            b'0' => Self::Zero,
            _ => Self::Int,
        }
    }

    /// `Ok(Some)` if `b` continues the number, `Ok(None)` if it ends a complete one.
    fn step(self, b: u8) -> Result<Option<Self>, &'static str> {
        let next = match (self, b) {
            (Self::Minus, b'0') => Self::Zero,
            (Self::Minus, b'1'..=b'9') => Self::Int,
            (Self::Zero, b'0'..=b'9') => return Err("leading zero in a number"),
            (Self::Int, b'0'..=b'9') => Self::Int,
            (Self::Zero | Self::Int, b'.') => Self::Dot,
            (Self::Dot | Self::Frac, b'0'..=b'9') => Self::Frac,
            (Self::Zero | Self::Int | Self::Frac, b'e' | b'E') => Self::Exp,
            (Self::Exp, b'+' | b'-') => Self::ExpSign,
            (Self::Exp | Self::ExpSign | Self::ExpDigits, b'0'..=b'9') => Self::ExpDigits,
            (Self::Zero | Self::Int | Self::Frac | Self::ExpDigits, _) => return Ok(None),
            _ => return Err("invalid number"),
        };
        Ok(Some(next))
    }
}

/// Where a [`FileLexer`] is inside an escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileEscape {
    None,
    /// After `\`.
    Backslash,
    /// Inside `\uXXXX`.
    Hex {
        digits: u8,
        value: u16,
    },
}

/// Why the file string was refused, before the offset and key are attached.
enum FileFault {
    Syntax(&'static str),
    Base64,
}

/// A run of whole groups that [`FileLexer::whole_run`] took in one call, checked and
/// kept as text.
struct WholeRun {
    /// Where the run lies in the input [`FileLexer::bulk`] was given.
    text: Range<usize>,
}

/// A run of the current chunk's file text, handed out as an [`Event::FileCoded`] at its
/// place among the pending bytes.
struct CodedRun {
    /// Where the text lies in the chunk.
    text: Range<usize>,
    /// How many pending bytes come before it.
    at: usize,
}

/// The file string after its opening quote: whitespace skipped, base64 decoded in whole
/// 4-character groups.
#[derive(Debug, Clone, Copy)]
struct FileLexer {
    /// Characters of the incomplete group (at most 3 held between bytes).
    group: [u8; 4],
    grouped: u8,
    /// `=` seen so far; after the first, only `=` and whitespace may follow.
    padding: u8,
    escape: FileEscape,
    decoded: u64,
    /// The fast path found a byte the decoder refused: the rest of the string takes the
    /// byte-exact path.
    exact: bool,
    /// A block the fast path tried whole held an escape: the string's runs are short
    /// (lines), so its blocks are not tried again.
    lines: bool,
}

impl FileLexer {
    fn new() -> Self {
        Self {
            group: [0; 4],
            grouped: 0,
            padding: 0,
            escape: FileEscape::None,
            decoded: 0,
            exact: false,
            lines: false,
        }
    }

    /// Whether the next byte may start the bulk path.
    fn is_plain(&self) -> bool {
        self.escape == FileEscape::None && self.padding == 0
    }

    fn decode(&mut self, chars: &[u8], pending: &mut Vec<u8>) -> Result<(), FileFault> {
        let before = pending.len();
        if b64::decode_into(chars, pending).is_err() {
            pending.truncate(before);
            return Err(FileFault::Base64);
        }
        let added = pending.len().saturating_sub(before) as u64;
        self.decoded = self.decoded.saturating_add(added);
        Ok(())
    }

    /// Takes the leading alphabet bytes of `input` (plain state only), and more after any
    /// spaces or `\n`, `\r`, `\t` escapes between them: tops up the incomplete group,
    /// decodes whole groups in one call, keeps the rest. Returns how many bytes were taken.
    /// With `keep`, a run the fast path takes whole ([`FileLexer::whole_run`]) is checked
    /// rather than decoded, and put in `run`: where it lies in `input`.
    fn bulk(
        &mut self,
        input: &[u8],
        pending: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        run: &mut Option<WholeRun>,
        keep: bool,
    ) -> Result<usize, FileFault> {
        let mut taken = 0;
        while self.grouped > 0 {
            match input.get(taken) {
                Some(&b) if is_alphabet(b) => {
                    self.push(b, pending)?;
                    taken += 1;
                }
                _ => return Ok(taken),
            }
        }
        let start = taken;
        if let Some(whole) = self.whole_run(&input[start..], pending, keep) {
            if keep {
                *run = Some(WholeRun {
                    text: start..start + whole,
                });
            }
            return Ok(start + whole);
        }
        let mut end = start + alphabet_run(&input[start..]);
        let mut skip = skippable(&input[end..]);
        if skip == 0 {
            // One run: decoded where it lies.
            self.take_run(&input[start..end], pending)?;
            return Ok(end);
        }
        // Runs split by what `step` would skip (MIME-style `\r\n` every 76 characters):
        // gathered, so they decode in one call rather than one call per line.
        scratch.clear();
        scratch.extend_from_slice(&input[start..end]);
        while skip > 0 {
            end += skip;
            let run = alphabet_run(&input[end..]);
            scratch.extend_from_slice(&input[end..end + run]);
            end += run;
            skip = skippable(&input[end..]);
        }
        self.take_run(scratch, pending)?;
        Ok(end)
    }

    /// The fast path of [`FileLexer::bulk`], with its group empty. First, whole blocks of
    /// [`RUN_BLOCK`] characters are decoded (checked, with `keep`) one call each, for as
    /// long as the decoder takes them: a block it takes is alphabet bytes only, so no
    /// quote, escape or `=` lies in it, and most of a long string is read once. Then, when
    /// the string's next stop (a quote, `=` or the chunk's end) comes before any escape,
    /// the whole groups before it are decoded in one call. Returns how many bytes it took,
    /// or None to leave `input` to the byte-exact path: a short run, an escape first
    /// (lines are gathered there), or a byte the decoder refused (a space, or bad base64,
    /// whose exact offset that path finds); after a refusal the string stays on the exact
    /// path, so a string of spaced groups is not decoded twice, and after a block that
    /// held an escape, blocks are not tried again in that string. With `keep`, runs are
    /// only checked (their text goes out as [`Event::FileCoded`]), and counted.
    fn whole_run(&mut self, input: &[u8], pending: &mut Vec<u8>, keep: bool) -> Option<usize> {
        /// Below this the exact path costs as little.
        const MIN_RUN: usize = 256;
        if self.exact || input.len() < MIN_RUN {
            return None;
        }
        let mut at = 0;
        let mut refused = false;
        if !keep && !self.lines && input.len() >= RUN_BLOCK {
            // Room for all the blocks and the rest at once, as one decode would take: a
            // block at a time, `pending` would grow by doubling and hand on up to twice
            // the memory its bytes need.
            pending.reserve(b64::whole_decoded_len(input.len()));
        }
        while !self.lines && input.len() - at >= RUN_BLOCK {
            if !self.take_whole(&input[at..at + RUN_BLOCK], pending, keep) {
                refused = true;
                break;
            }
            at += RUN_BLOCK;
        }
        let taken = (at > 0).then_some(at);
        let rest = &input[at..];
        let stop = memchr::memchr3(b'"', b'\\', b'=', rest).unwrap_or(rest.len());
        if rest.get(stop) == Some(&b'\\') {
            self.lines |= refused;
            return taken;
        }
        let whole = stop - stop % 4;
        // Past a block, any whole groups left are worth the one call.
        if whole == 0 || (whole < MIN_RUN && taken.is_none()) {
            return taken;
        }
        if !self.take_whole(&rest[..whole], pending, keep) {
            self.exact = true;
            return taken;
        }
        Some(at + whole)
    }

    /// Decodes (with `keep`, checks) `text`, whole groups, and counts what it decodes to;
    /// false, with nothing taken, unless it is alphabet bytes only.
    fn take_whole(&mut self, text: &[u8], pending: &mut Vec<u8>, keep: bool) -> bool {
        let took = if keep {
            b64::is_whole_groups(text)
        } else {
            b64::decode_whole_into(text, pending)
        };
        if took {
            let added = b64::whole_decoded_len(text.len()) as u64;
            self.decoded = self.decoded.saturating_add(added);
        }
        took
    }

    /// Decodes the whole groups of `chars` (alphabet bytes only) in one call and holds the
    /// rest as the incomplete group.
    fn take_run(&mut self, chars: &[u8], pending: &mut Vec<u8>) -> Result<(), FileFault> {
        let whole = chars.len() - chars.len() % 4;
        if whole > 0 {
            self.decode(&chars[..whole], pending)?;
        }
        for &b in &chars[whole..] {
            self.push(b, pending)?;
        }
        Ok(())
    }

    fn push(&mut self, b: u8, pending: &mut Vec<u8>) -> Result<(), FileFault> {
        if !is_alphabet(b) || self.padding > 0 {
            return Err(FileFault::Base64);
        }
        let slot = usize::from(self.grouped);
        if let Some(cell) = self.group.get_mut(slot) {
            *cell = b;
        }
        self.grouped += 1;
        if self.grouped == 4 {
            self.grouped = 0;
            let group = self.group;
            self.decode(&group, pending)?;
        }
        Ok(())
    }

    fn pad(&mut self) -> Result<(), FileFault> {
        if self.grouped < 2 || self.grouped + self.padding >= 4 {
            return Err(FileFault::Base64);
        }
        self.padding += 1;
        Ok(())
    }

    fn close(&mut self, pending: &mut Vec<u8>) -> Result<(), FileFault> {
        let grouped = usize::from(self.grouped);
        self.grouped = 0;
        match grouped {
            0 => Ok(()),
            1 => Err(FileFault::Base64),
            _ => {
                let group = self.group;
                self.decode(&group[..grouped.min(4)], pending)
            }
        }
    }

    /// One byte the bulk path did not take. `Ok(true)` at the closing quote.
    fn step(&mut self, b: u8, pending: &mut Vec<u8>) -> Result<bool, FileFault> {
        match self.escape {
            FileEscape::None => match b {
                b'"' => {
                    self.close(pending)?;
                    return Ok(true);
                }
                b'\\' => self.escape = FileEscape::Backslash,
                b' ' => {}
                b'=' => self.pad()?,
                0x00..=0x1F => return Err(FileFault::Syntax("control character in a string")),
                _ => self.push(b, pending)?,
            },
            FileEscape::Backslash => {
                self.escape = FileEscape::None;
                match b {
                    b'n' | b'r' | b't' => {}
                    b'/' => self.push(b'/', pending)?,
                    b'u' => {
                        self.escape = FileEscape::Hex {
                            digits: 0,
                            value: 0,
                        }
                    }
                    b'"' | b'\\' | b'b' | b'f' => return Err(FileFault::Base64),
                    _ => return Err(FileFault::Syntax("invalid escape in a string")),
                }
            }
            FileEscape::Hex { digits, value } => {
                let digit = hex_digit(b).ok_or(FileFault::Syntax("invalid \\u escape"))?;
                let value = value << 4 | digit;
                if digits < 3 {
                    self.escape = FileEscape::Hex {
                        digits: digits + 1,
                        value,
                    };
                    return Ok(false);
                }
                self.escape = FileEscape::None;
                match u8::try_from(value) {
                    Ok(b'\t' | b'\n' | b'\r' | b' ') => {}
                    Ok(b'=') => self.pad()?,
                    Ok(c) => self.push(c, pending)?,
                    Err(_) => return Err(FileFault::Base64),
                }
            }
        }
        Ok(false)
    }
}

/// An open object or array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// The scanner's position in the body's grammar.
#[derive(Debug, Clone)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// Expecting a key; `}` is also allowed when `first` (right after `{`).
    Key { first: bool },
    /// Inside a key.
    KeyStr(StrLexer),
    /// After a key, expecting `:`.
    Colon,
    /// Expecting a value; `]` is also allowed when `first` (right after `[`).
    Value { first: bool },
    /// Inside a string value (other than the file).
    ValueStr(StrLexer),
    /// Inside a number.
    Number(NumLexer),
    /// Inside `true`, `false` or `null`, `matched` bytes of `word` in.
    Literal { word: &'static [u8], matched: usize },
    /// Inside the file string.
    File(FileLexer),
    /// After a value, expecting `,` or the closing bracket.
    AfterValue,
    /// After the top-level `}`: only whitespace may follow.
    Done,
    /// Refused; every later call repeats the error.
    Failed(ScanError),
}

/// The streaming scanner. Feed it the body with [`Scanner::feed`] in chunks of any size
/// (the events and the error do not depend on where the chunks split), then call
/// [`Scanner::finish`]. Events come in body order: one [`Event::Field`] per top-level
/// field, [`Event::FileStart`], [`Event::FileData`]… and [`Event::FileEnd`] for the file
/// field, and [`Event::End`] when the object closes. Fed with [`Scanner::feed_bytes`],
/// the file's plain runs come as [`Event::FileCoded`] among the [`Event::FileData`].
pub struct Scanner {
    file_key: &'static str,
    /// The keys the reader expects ([`Scanner::with_known_keys`]; at most 64), and which
    /// of them the object has had.
    known: &'static [&'static str],
    known_seen: u64,
    limits: Limits,
    state: State,
    /// Open containers; the top-level object is the first.
    stack: Vec<Container>,
    /// Text of the key, string or number being read (top-level keys and values, and
    /// numbers at any depth).
    text: Vec<u8>,
    /// The current top-level key, and whether it is the file key.
    key: Cow<'static, str>,
    at_file_key: bool,
    seen_keys: SeenKeys,
    /// Bytes of completed non-file keys and values.
    fields_total: usize,
    /// File bytes decoded from the current chunk, not yet emitted.
    pending: Vec<u8>,
    /// The file's base64 gathered from across line breaks, at most one chunk's worth.
    scratch: Vec<u8>,
    /// The chunk being fed, while [`Scanner::feed_bytes`] feeds it.
    source: Option<Bytes>,
    /// The runs of `source` checked but not decoded, whose text goes out among the pending
    /// bytes.
    coded: Vec<CodedRun>,
    offset: u64,
}

/// The top-level keys an object has had, to refuse a repeated one.
///
/// An upload's object has a handful (Tines: `filename`, `file_contents`, a few nulls), so
/// the first [`SeenKeys::LINEAR`] sit end to end in one buffer and are compared in turn:
/// no allocation and no hash per key (a `HashSet<String>` cost a copy of each key and
/// a SipHash of it, about 450 instructions a key). Past that a hostile object could have
/// thousands, so they move into a set, where each lookup stays constant.
#[derive(Debug, Default)]
struct SeenKeys {
    /// The first keys' bytes, end to end.
    bytes: Vec<u8>,
    /// Where each of them ends in `bytes`.
    ends: Vec<usize>,
    /// Every key, once there are more than [`SeenKeys::LINEAR`].
    set: Option<HashSet<Box<[u8]>>>,
}

impl SeenKeys {
    const LINEAR: usize = 16;

    fn contains(&self, key: &[u8]) -> bool {
        if let Some(set) = &self.set {
            return set.contains(key);
        }
        let mut start = 0;
        self.ends.iter().any(|&end| {
            let seen = &self.bytes[start..end];
            start = end;
            seen == key
        })
    }

    /// Adds `key`, which [`SeenKeys::contains`] said is not there.
    fn insert(&mut self, key: &[u8]) {
        if let Some(set) = &mut self.set {
            set.insert(key.into());
            return;
        }
        if self.ends.len() < Self::LINEAR {
            self.bytes.extend_from_slice(key);
            self.ends.push(self.bytes.len());
            return;
        }
        let mut set: HashSet<Box<[u8]>> = HashSet::with_capacity(2 * Self::LINEAR);
        let mut start = 0;
        for &end in &self.ends {
            set.insert(self.bytes[start..end].into());
            start = end;
        }
        set.insert(key.into());
        self.set = Some(set);
        self.bytes = Vec::new();
        self.ends = Vec::new();
    }
}

impl Scanner {
    /// `file_key`: the top-level key whose string value is base64 file content (Tines:
    /// "file_contents").
    pub fn new(file_key: &'static str, limits: Limits) -> Self {
        Self {
            file_key,
            known: &[],
            known_seen: 0,
            limits,
            state: State::Start,
            // Sized for a usual body, so they do not grow as its first strings are read.
            stack: Vec::with_capacity(4),
            text: Vec::with_capacity(64),
            key: Cow::Borrowed(""),
            at_file_key: false,
            seen_keys: SeenKeys::default(),
            fields_total: 0,
            pending: Vec::new(),
            scratch: Vec::new(),
            source: None,
            coded: Vec::new(),
            offset: 0,
        }
    }

    /// Tells the scanner the top-level keys its reader expects (at most 64; any past
    /// those are read as any other key): each of them comes in [`Event::Field`] as its
    /// `'static` name, not copied. The events and errors are the same either way.
    pub fn with_known_keys(mut self, keys: &'static [&'static str]) -> Self {
        self.known = &keys[..keys.len().min(64)];
        self
    }

    /// Feeds the next chunk; appends events to `out`. After an error the scanner stays
    /// failed (every later call returns the same error); the events up to the error,
    /// including the file bytes decoded before it, are still appended.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ScanError> {
        self.feed_slice(chunk, out)
    }

    /// As [`Scanner::feed`], and the file's text where it is plain base64 in whole groups
    /// goes out, checked but not decoded, as [`Event::FileCoded`], sliced from `chunk` (no
    /// copy). The events and the error are otherwise the same: joined, the bytes of the
    /// file events are the same file.
    pub fn feed_bytes(&mut self, chunk: &Bytes, out: &mut Vec<Event>) -> Result<(), ScanError> {
        self.source = Some(chunk.clone());
        let fed = self.feed_slice(chunk, out);
        self.source = None;
        fed
    }

    fn feed_slice(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ScanError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let mut used = 0;
        let result = self.feed_from(chunk, &mut used, out);
        self.offset = self.offset.saturating_add(used as u64);
        self.flush_file_data(out);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// The input ended. Errors with [`ScanError::Truncated`] if the object is not
    /// complete.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), ScanError> {
        self.flush_file_data(out);
        match &self.state {
            State::Done => Ok(()),
            State::Failed(e) => Err(e.clone()),
            _ => {
                self.state = State::Failed(ScanError::Truncated);
                Err(ScanError::Truncated)
            }
        }
    }

    /// Body bytes consumed so far (up to, not including, the byte that failed).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn feed_from(
        &mut self,
        chunk: &[u8],
        used: &mut usize,
        out: &mut Vec<Event>,
    ) -> Result<(), ScanError> {
        while *used < chunk.len() {
            let keep = self.source.is_some();
            if let State::File(lexer) = &mut self.state {
                if lexer.is_plain() {
                    let start = *used;
                    let mut run = None;
                    let bulk = lexer.bulk(
                        &chunk[start..],
                        &mut self.pending,
                        &mut self.scratch,
                        &mut run,
                        keep,
                    );
                    match bulk {
                        Ok(taken) => *used += taken,
                        Err(fault) => return Err(self.file_fault(fault, self.pos(start))),
                    }
                    if let Some(run) = run {
                        self.coded.push(CodedRun {
                            text: start + run.text.start..start + run.text.end,
                            at: self.pending.len(),
                        });
                    }
                    if *used == chunk.len() {
                        break;
                    }
                }
            }
            if let Some(run) = self.string_run(&chunk[*used..]) {
                *used += run;
                continue;
            }
            let pos = self.pos(*used);
            self.step(chunk[*used], pos, out)?;
            *used += 1;
        }
        Ok(())
    }

    /// Inside a key or a string value, between characters: takes the printable ASCII
    /// bytes `input` starts with (no `"`, `\`, control character or byte past 0x7F) in
    /// one piece, as [`Scanner::step`] would take them one by one, when there are at least
    /// two and the text stays within the limits with all of them. Otherwise `None`, and
    /// `step` takes the next byte (and finds the limit at the byte that crosses it).
    fn string_run(&mut self, input: &[u8]) -> Option<usize> {
        let key = match &self.state {
            State::KeyStr(lexer) if lexer.is_plain() => true,
            State::ValueStr(lexer) if lexer.is_plain() => false,
            _ => return None,
        };
        let run = json_out::ascii_plain_len(input);
        if run < 2 {
            return None;
        }
        // Nested strings are read, not kept, as `step` does.
        if self.is_top_level() {
            let len = self.text.len().saturating_add(run);
            let fits = if key {
                self.key_fits(len)
            } else {
                self.value_limit(len).is_ok()
            };
            if !fits {
                return None;
            }
            self.text.extend_from_slice(&input[..run]);
        }
        Some(run)
    }

    fn pos(&self, index: usize) -> u64 {
        self.offset.saturating_add(index as u64)
    }

    /// Hands out the pending bytes: as one [`Event::FileData`], or, with runs of the chunk
    /// to go among them, an [`Event::FileCoded`] for each run at its place and
    /// [`Event::FileData`] around them (slices of one buffer, no copy).
    fn flush_file_data(&mut self, out: &mut Vec<Event>) {
        let source = self.source.as_ref().filter(|_| !self.coded.is_empty());
        let Some(source) = source else {
            self.coded.clear();
            if !self.pending.is_empty() {
                out.push(Event::FileData(Bytes::from(std::mem::take(
                    &mut self.pending,
                ))));
            }
            return;
        };
        let data = Bytes::from(std::mem::take(&mut self.pending));
        let mut at = 0;
        for run in self.coded.drain(..) {
            if run.at > at {
                out.push(Event::FileData(data.slice(at..run.at)));
                at = run.at;
            }
            out.push(Event::FileCoded(source.slice(run.text)));
        }
        if at < data.len() {
            out.push(Event::FileData(data.slice(at..)));
        }
    }

    fn file_fault(&self, fault: FileFault, offset: u64) -> ScanError {
        match fault {
            FileFault::Syntax(what) => ScanError::Syntax { offset, what },
            FileFault::Base64 => ScanError::BadBase64 {
                key: self.file_key.to_owned(),
                offset,
            },
        }
    }

    fn is_top_level(&self) -> bool {
        self.stack.len() == 1
    }

    fn step(&mut self, b: u8, pos: u64, out: &mut Vec<Event>) -> Result<(), ScanError> {
        let syntax = |what| ScanError::Syntax { offset: pos, what };
        match self.state {
            State::Start => match b {
                _ if is_whitespace(b) => {}
                b'{' => self.open(Container::Object)?,
                _ => return Err(ScanError::NotAnObject),
            },
            State::Key { first } => match b {
                _ if is_whitespace(b) => {}
                b'"' => {
                    self.text.clear();
                    self.state = State::KeyStr(StrLexer::new());
                }
                b'}' if first => self.close(Container::Object, pos, out)?,
                _ => return Err(syntax("expected a key")),
            },
            State::KeyStr(mut lexer) => match lexer.step(b).map_err(syntax)? {
                Lexed::End => self.key_done(pos)?,
                lexed => {
                    self.state = State::KeyStr(lexer);
                    if self.is_top_level() {
                        self.push_key(lexed)?;
                    }
                }
            },
            State::Colon => match b {
                _ if is_whitespace(b) => {}
                b':' => self.state = State::Value { first: false },
                _ => return Err(syntax("expected ':'")),
            },
            State::Value { first } => match b {
                _ if is_whitespace(b) => {}
                b']' if first => self.close(Container::Array, pos, out)?,
                _ => self.start_value(b, pos, out)?,
            },
            State::ValueStr(mut lexer) => match lexer.step(b).map_err(syntax)? {
                Lexed::End => {
                    if self.is_top_level() {
                        let text = self.take_text();
                        self.fields_total = self.fields_total.saturating_add(text.len());
                        let value = String::from_utf8(text)
                            .map_err(|_| syntax("invalid UTF-8 in a string"))?;
                        self.emit_field(Scalar::String(value), out);
                    }
                    self.state = State::AfterValue;
                }
                lexed => {
                    self.state = State::ValueStr(lexer);
                    if self.is_top_level() {
                        self.push_value(lexed)?;
                    }
                }
            },
            State::Number(lexer) => match lexer.step(b).map_err(syntax)? {
                Some(next) => {
                    self.state = State::Number(next);
                    self.push_number(b)?;
                }
                None => {
                    self.number_done(pos, out)?;
                    return self.step(b, pos, out);
                }
            },
            State::Literal { word, matched } => {
                if word.get(matched) != Some(&b) {
                    return Err(syntax("invalid literal"));
                }
                let matched = matched + 1;
                if matched < word.len() {
                    self.state = State::Literal { word, matched };
                } else {
                    if self.is_top_level() {
                        let value = match word {
                            b"true" => Scalar::Bool(true),
                            b"false" => Scalar::Bool(false),
                            _ => Scalar::Null,
                        };
                        self.emit_field(value, out);
                    }
                    self.state = State::AfterValue;
                }
            }
            State::File(ref mut lexer) => match lexer.step(b, &mut self.pending) {
                Ok(false) => {}
                Ok(true) => {
                    let decoded_len = lexer.decoded;
                    self.flush_file_data(out);
                    out.push(Event::FileEnd { decoded_len });
                    self.state = State::AfterValue;
                }
                Err(fault) => return Err(self.file_fault(fault, pos)),
            },
            State::AfterValue => match (b, self.stack.last()) {
                _ if is_whitespace(b) => {}
                (b',', Some(Container::Object)) => self.state = State::Key { first: false },
                (b',', _) => self.state = State::Value { first: false },
                (b'}', _) => self.close(Container::Object, pos, out)?,
                (b']', _) => self.close(Container::Array, pos, out)?,
                _ => return Err(syntax("expected ',' or a closing bracket")),
            },
            State::Done => {
                if !is_whitespace(b) {
                    return Err(ScanError::TrailingData { offset: pos });
                }
            }
            State::Failed(ref e) => return Err(e.clone()),
        }
        Ok(())
    }

    fn start_value(&mut self, b: u8, pos: u64, out: &mut Vec<Event>) -> Result<(), ScanError> {
        self.state = match b {
            b'"' if self.at_file_key && self.is_top_level() => {
                out.push(Event::FileStart);
                State::File(FileLexer::new())
            }
            b'"' => {
                self.text.clear();
                State::ValueStr(StrLexer::new())
            }
            b'{' => return self.open(Container::Object),
            b'[' => return self.open(Container::Array),
            b'-' | b'0'..=b'9' => {
                self.text.clear();
                self.push_number(b)?;
                State::Number(NumLexer::start(b))
            }
            b't' => State::Literal {
                word: b"true",
                matched: 1,
            },
            b'f' => State::Literal {
                word: b"false",
                matched: 1,
            },
            b'n' => State::Literal {
                word: b"null",
                matched: 1,
            },
            _ => {
                return Err(ScanError::Syntax {
                    offset: pos,
                    what: "expected a value",
                })
            }
        };
        Ok(())
    }

    fn open(&mut self, container: Container) -> Result<(), ScanError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(ScanError::TooDeep(self.limits.max_depth));
        }
        self.stack.push(container);
        self.state = match container {
            Container::Object => State::Key { first: true },
            Container::Array => State::Value { first: true },
        };
        Ok(())
    }

    fn close(
        &mut self,
        container: Container,
        pos: u64,
        out: &mut Vec<Event>,
    ) -> Result<(), ScanError> {
        if self.stack.last() != Some(&container) {
            return Err(ScanError::Syntax {
                offset: pos,
                what: "mismatched closing bracket",
            });
        }
        self.stack.pop();
        if self.stack.is_empty() {
            out.push(Event::End);
            self.state = State::Done;
        } else {
            if self.is_top_level() {
                self.emit_field(Scalar::Composite, out);
            }
            self.state = State::AfterValue;
        }
        Ok(())
    }

    fn emit_field(&mut self, value: Scalar, out: &mut Vec<Event>) {
        out.push(Event::Field {
            key: std::mem::replace(&mut self.key, Cow::Borrowed("")),
            value,
        });
    }

    fn push_key(&mut self, lexed: Lexed) -> Result<(), ScanError> {
        let mut buf = [0; 4];
        let bytes = lexed_bytes(&lexed, &mut buf);
        if !self.key_fits(self.text.len().saturating_add(bytes.len())) {
            self.text.extend_from_slice(bytes);
            return Err(ScanError::FieldTooLarge(quote_key(&self.text)));
        }
        self.text.extend_from_slice(bytes);
        Ok(())
    }

    fn key_done(&mut self, pos: u64) -> Result<(), ScanError> {
        self.state = State::Colon;
        if !self.is_top_level() {
            return Ok(());
        }
        // A key the reader expects is its `'static` name and a bit; any other is copied out
        // and kept among the seen keys' bytes. Either way a key given twice is refused.
        let known = self
            .known
            .iter()
            .position(|k| k.as_bytes() == self.text.as_slice());
        let key =
            match known {
                Some(i) => {
                    self.text.clear();
                    Cow::Borrowed(self.known[i])
                }
                None => Cow::Owned(String::from_utf8(self.take_text()).map_err(|_| {
                    ScanError::Syntax {
                        offset: pos,
                        what: "invalid UTF-8 in a string",
                    }
                })?),
            };
        let is_file = key == self.file_key;
        if !is_file && key.len() > self.limits.max_field_bytes {
            return Err(ScanError::FieldTooLarge(quote_key(key.as_bytes())));
        }
        let seen = match known {
            Some(i) => self.known_seen & (1 << i) != 0,
            None => self.seen_keys.contains(key.as_bytes()),
        };
        if seen {
            return Err(ScanError::DuplicateKey(key.into_owned()));
        }
        if !is_file {
            self.fields_total = self.fields_total.saturating_add(key.len());
            if self.fields_total > self.limits.max_fields_total {
                return Err(ScanError::FieldsTooLarge);
            }
        }
        match known {
            Some(i) => self.known_seen |= 1 << i,
            None => self.seen_keys.insert(key.as_bytes()),
        }
        self.key = key;
        self.at_file_key = is_file;
        Ok(())
    }

    /// The key or value gathered so far, copied out at its size; the buffer stays (and
    /// keeps its room) for the next one, which then grows it no more.
    fn take_text(&mut self) -> Vec<u8> {
        let text = self.text.clone();
        self.text.clear();
        text
    }

    /// Appends to a top-level value, within both limits.
    fn push_value(&mut self, lexed: Lexed) -> Result<(), ScanError> {
        let mut buf = [0; 4];
        let bytes = lexed_bytes(&lexed, &mut buf);
        self.value_limit(self.text.len().saturating_add(bytes.len()))?;
        self.text.extend_from_slice(bytes);
        Ok(())
    }

    /// Whether a top-level key of `len` bytes is within the limit (the file's key always
    /// is, whatever its length).
    fn key_fits(&self, len: usize) -> bool {
        len <= self.limits.max_field_bytes.max(self.file_key.len())
    }

    /// The limit a top-level string value of `len` bytes breaks, the field's first.
    fn value_limit(&self, len: usize) -> Result<(), ScanError> {
        if len > self.limits.max_field_bytes {
            return Err(ScanError::FieldTooLarge(self.key.to_string()));
        }
        if self.fields_total.saturating_add(len) > self.limits.max_fields_total {
            return Err(ScanError::FieldsTooLarge);
        }
        Ok(())
    }

    /// Appends to a number: within both limits at the top level, within the field limit
    /// when nested (its text is kept only to check its range).
    fn push_number(&mut self, b: u8) -> Result<(), ScanError> {
        if self.is_top_level() {
            return self.push_value(Lexed::Byte(b));
        }
        if self.text.len() >= self.limits.max_field_bytes {
            return Err(ScanError::FieldTooLarge(self.key.to_string()));
        }
        self.text.push(b);
        Ok(())
    }

    /// Ends a number at `pos` (the byte after it). Refuses what `serde_json` refuses: a
    /// number too large for an `f64`.
    fn number_done(&mut self, pos: u64, out: &mut Vec<Event>) -> Result<(), ScanError> {
        let in_range = std::str::from_utf8(&self.text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(f64::is_finite);
        if !in_range {
            return Err(ScanError::Syntax {
                offset: pos,
                what: "number out of range",
            });
        }
        if !self.is_top_level() {
            self.text.clear();
        } else {
            let text = self.take_text();
            self.fields_total = self.fields_total.saturating_add(text.len());
            let number = String::from_utf8(text).unwrap_or_default();
            self.emit_field(Scalar::Number(number), out);
        }
        self.state = State::AfterValue;
        Ok(())
    }
}

fn lexed_bytes<'a>(lexed: &Lexed, buf: &'a mut [u8; 4]) -> &'a [u8] {
    match *lexed {
        Lexed::Byte(b) => {
            buf[0] = b;
            &buf[..1]
        }
        Lexed::Char(c) => c.encode_utf8(buf).as_bytes(),
        Lexed::Nothing | Lexed::End => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_KEY: &str = "file_contents";

    type Outcome = (Vec<Event>, Result<(), ScanError>);

    /// Runs the scanner over `chunks`, then checks that the error (if any) sticks; and
    /// again fed as `Bytes`, which must give the same, once each [`Event::FileCoded`]'s
    /// text is checked to be whole groups of the standard alphabet (so the padded encoding
    /// of its bytes) and taken as [`Event::FileData`] of those bytes.
    fn run_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, limits: Limits) -> Outcome {
        let chunks: Vec<&[u8]> = chunks.into_iter().collect();
        let plain = run_fed(&chunks, limits, false);
        // Told the keys it reads, the scanner gives the same (a known key borrowed).
        let mut told = Scanner::new(FILE_KEY, limits).with_known_keys(&KNOWN);
        assert_eq!(fed(&mut told, &chunks, false), plain, "with known keys");
        let (coded, result) = run_fed(&chunks, limits, true);
        let coded = coded
            .into_iter()
            .map(|event| match event {
                Event::FileCoded(text) => Event::FileData(coded_bytes(&text)),
                other => other,
            })
            .collect();
        assert_eq!((merge(coded), result), plain, "fed as Bytes");
        plain
    }

    /// The events of `chunks` (not merged when `as_bytes`, which feeds them as `Bytes`).
    fn run_fed(chunks: &[&[u8]], limits: Limits, as_bytes: bool) -> Outcome {
        fed(&mut Scanner::new(FILE_KEY, limits), chunks, as_bytes)
    }

    /// Keys the tests' bodies use, some of them told to the scanner as known (the file
    /// key and the over-long keys of the limit tests among them).
    const KNOWN: [&str; 9] = [
        "a",
        "x",
        FILE_KEY,
        "filename",
        "ab",
        "n",
        "value",
        "abcdefgh",
        "abcdefghi",
    ];

    /// [`run_fed`] with `scanner`.
    fn fed(scanner: &mut Scanner, chunks: &[&[u8]], as_bytes: bool) -> Outcome {
        let mut events = Vec::new();
        let mut result = Ok(());
        for chunk in chunks {
            result = if as_bytes {
                scanner.feed_bytes(&Bytes::copy_from_slice(chunk), &mut events)
            } else {
                scanner.feed(chunk, &mut events)
            };
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = scanner.finish(&mut events);
        }
        if let Err(e) = &result {
            let before = events.len();
            assert_eq!(scanner.feed(b"}", &mut events).as_ref(), Err(e));
            assert_eq!(scanner.finish(&mut events).as_ref(), Err(e));
            assert_eq!(events.len(), before);
        }
        if as_bytes {
            return (events, result);
        }
        (merge(events), result)
    }

    /// The bytes an [`Event::FileCoded`]'s text stands for, once it is checked to be their
    /// padded encoding (never empty).
    fn coded_bytes(text: &Bytes) -> Bytes {
        let data = b64::decode_whole(text).expect("FileCoded's text decodes");
        assert!(!data.is_empty(), "empty FileCoded");
        assert_eq!(text, encode(&data).as_bytes(), "FileCoded's text");
        assert_eq!(data.len(), b64::whole_decoded_len(text.len()));
        data
    }

    /// The bytes of `events`' [`Event::FileCoded`], and of all their file events.
    fn coded_share(events: &[Event]) -> (usize, usize) {
        events.iter().fold((0, 0), |(coded, all), e| match e {
            Event::FileCoded(text) => {
                let n = coded_bytes(text).len();
                (coded + n, all + n)
            }
            Event::FileData(data) => (coded, all + data.len()),
            _ => (coded, all),
        })
    }

    #[test]
    fn plain_base64_goes_out_with_its_text_and_the_rest_decoded() {
        let file: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let text = encode(&file);
        let body = format!(r#"{{"filename":"a.bin","file_contents":"{text}","value":null}}"#);
        let fed = |chunks: &[&[u8]]| {
            let mut scanner = Scanner::new(FILE_KEY, Limits::default());
            let mut events = Vec::new();
            for chunk in chunks {
                scanner
                    .feed_bytes(&Bytes::copy_from_slice(chunk), &mut events)
                    .unwrap();
            }
            scanner.finish(&mut events).unwrap();
            assert_eq!(decoded_file(&events), file);
            coded_share(&events)
        };
        // Whole: every group but the last (4096 = 3 x 1365 + 1, padded) goes out as sent.
        assert_eq!(fed(&[body.as_bytes()]), (4095, 4096));
        // Split in the file (its text starts at byte 37): a group across the split is
        // decoded, the runs on either side (256 characters or more) go out as sent.
        let split = |at: usize| {
            let (a, b) = body.split_at(at);
            fed(&[a.as_bytes(), b.as_bytes()])
        };
        assert_eq!(split(37 + 1964), (4095, 4096));
        assert_eq!(split(37 + 1966), (4092, 4096));
        // A run shorter than 256 characters is decoded.
        assert_eq!(split(37 + 5300), (3975, 4096));
        // Lines broken as MIME does (`\r\n` escapes): decoded, nothing goes out as sent.
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        let broken = format!(r#"{{"file_contents":"{}"}}"#, lines.join("\\r\\n"));
        assert_eq!(fed(&[broken.as_bytes()]), (0, 4096));
        // Fed as a slice, nothing goes out as sent.
        let mut scanner = Scanner::new(FILE_KEY, Limits::default());
        let mut events = Vec::new();
        scanner.feed(body.as_bytes(), &mut events).unwrap();
        scanner.finish(&mut events).unwrap();
        assert_eq!(coded_share(&events), (0, 4096));
    }

    #[test]
    fn the_alphabet_by_ranges_is_the_table_for_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(is_alphabet_by_ranges(b), is_alphabet(b), "byte {b:#04x}");
        }
    }

    #[test]
    fn alphabet_runs_end_at_the_first_other_byte_wherever_it_is() {
        let plain = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw";
        assert_eq!(alphabet_run(plain), plain.len());
        for at in 0..plain.len() {
            for stop in [b'=', b'"', b'\\', b'\n', b' ', b'-', 0x80] {
                let mut s = plain.to_vec();
                s[at] = stop;
                assert_eq!(alphabet_run(&s), at, "{:?} at {at}", stop as char);
            }
        }
    }

    fn merge(events: Vec<Event>) -> Vec<Event> {
        let mut merged: Vec<Event> = Vec::with_capacity(events.len());
        for event in events {
            if let Event::FileData(data) = &event {
                assert!(!data.is_empty(), "empty FileData");
                if let Some(Event::FileData(prev)) = merged.last_mut() {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(data);
                    *prev = Bytes::from(joined);
                    continue;
                }
            }
            merged.push(event);
        }
        merged
    }

    /// Feeds `input` whole, split at every single boundary, and one byte at a time, and
    /// checks that all agree.
    fn scan_with(input: &[u8], limits: Limits) -> Outcome {
        let whole = run_chunks([input], limits);
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(run_chunks([a, b], limits), whole, "split at {split}");
        }
        assert_eq!(
            run_chunks(input.chunks(1), limits),
            whole,
            "one byte at a time"
        );
        whole
    }

    fn scan(input: &[u8]) -> Outcome {
        scan_with(input, Limits::default())
    }

    fn field(key: &str, value: Scalar) -> Event {
        Event::Field {
            key: key.to_owned().into(),
            value,
        }
    }

    fn string(s: &str) -> Scalar {
        Scalar::String(s.to_owned())
    }

    fn number(s: &str) -> Scalar {
        Scalar::Number(s.to_owned())
    }

    fn data(bytes: &[u8]) -> Event {
        Event::FileData(Bytes::copy_from_slice(bytes))
    }

    fn file_events(bytes: &[u8]) -> Vec<Event> {
        let mut events = vec![Event::FileStart];
        if !bytes.is_empty() {
            events.push(data(bytes));
        }
        events.push(Event::FileEnd {
            decoded_len: bytes.len() as u64,
        });
        events
    }

    fn decoded_file(events: &[Event]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::FileData(d) => Some(d.to_vec()),
                Event::FileCoded(text) => Some(coded_bytes(text).to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn encode(bytes: &[u8]) -> String {
        let mut s = String::new();
        b64::encode_into(bytes, &mut s);
        s
    }

    fn with_file(file_json: &str) -> Vec<u8> {
        format!(r#"{{"filename":"f","file_contents":{file_json}}}"#).into_bytes()
    }

    fn expect_file(file_json: &str, bytes: &[u8]) {
        let (events, result) = scan(&with_file(file_json));
        assert_eq!(result, Ok(()), "{file_json}");
        let mut expected = vec![field("filename", string("f"))];
        expected.extend(file_events(bytes));
        expected.push(Event::End);
        assert_eq!(events, expected, "{file_json}");
    }

    fn expect_bad_base64(file_json: &str, at: usize) {
        let body = with_file(file_json);
        let start = body.len() - file_json.len() - 1;
        let (_, result) = scan(&body);
        assert_eq!(
            result,
            Err(ScanError::BadBase64 {
                key: FILE_KEY.into(),
                offset: (start + at) as u64
            }),
            "{file_json}"
        );
    }

    fn expect_syntax(input: &[u8]) -> u64 {
        match scan(input).1 {
            Err(ScanError::Syntax { offset, .. }) => offset,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn tapi_style_body() {
        let body = br#"{"filename":"hello.txt","file_contents":"aGVsbG8=","value":null,"author_email":null,"team_case_block_id":null}"#;
        let (events, result) = scan(body);
        assert_eq!(result, Ok(()));
        let mut expected = vec![field("filename", string("hello.txt"))];
        expected.extend(file_events(b"hello"));
        expected.extend([
            field("value", Scalar::Null),
            field("author_email", Scalar::Null),
            field("team_case_block_id", Scalar::Null),
            Event::End,
        ]);
        assert_eq!(events, expected);
    }

    #[test]
    fn file_field_first_and_last() {
        let body = br#" {"file_contents":"aGk=","value":"comment","author_email":"a@b.c","team_case_block_id":42}"#;
        let (events, result) = scan(body);
        assert_eq!(result, Ok(()));
        let mut expected = file_events(b"hi");
        expected.extend([
            field("value", string("comment")),
            field("author_email", string("a@b.c")),
            field("team_case_block_id", number("42")),
            Event::End,
        ]);
        assert_eq!(events, expected);

        let body = b"{\"value\":true, \"filename\" : \"a.pdf\" ,\n\"file_contents\":\"aGk=\"}";
        let (events, result) = scan(body);
        assert_eq!(result, Ok(()));
        let mut expected = vec![
            field("value", Scalar::Bool(true)),
            field("filename", string("a.pdf")),
        ];
        expected.extend(file_events(b"hi"));
        expected.push(Event::End);
        assert_eq!(events, expected);
    }

    #[test]
    fn no_file_field() {
        let (events, result) = scan(b"{}");
        assert_eq!(result, Ok(()));
        assert_eq!(events, vec![Event::End]);
    }

    #[test]
    fn empty_and_tiny_files() {
        expect_file(r#""""#, b"");
        expect_file(r#""   ""#, b"");
        expect_file(r#""AA==""#, &[0]);
        expect_file(r#""AA""#, &[0]);
        expect_file(r#""/w==""#, &[0xFF]);
        expect_file(r#""AAA=""#, &[0, 0]);
        expect_file(r#""AAAA""#, &[0, 0, 0]);
    }

    #[test]
    fn padded_and_unpadded() {
        for n in 0..10 {
            let bytes: Vec<u8> = (0..n).map(|i: u8| i.wrapping_mul(37) ^ 5).collect();
            let padded = encode(&bytes);
            expect_file(&format!("\"{padded}\""), &bytes);
            let unpadded = padded.trim_end_matches('=');
            expect_file(&format!("\"{unpadded}\""), &bytes);
            if padded.ends_with("==") {
                let one = &padded[..padded.len() - 1];
                expect_file(&format!("\"{one}\""), &bytes);
            }
        }
    }

    #[test]
    fn non_zero_trailing_bits_are_accepted() {
        expect_file(r#""aGl=""#, b"hi");
        expect_file(r#""aB==""#, b"h");
    }

    #[test]
    fn escaped_characters_in_strings() {
        let body = br#"{"file\u005fname":"a\/b \u00fc \ud83d\ude00 \"q\" \\ \b\f\n\r\t","file_contents":""}"#;
        let (events, result) = scan(body);
        assert_eq!(result, Ok(()));
        let mut expected = vec![field(
            "file_name",
            string("a/b \u{fc} \u{1F600} \"q\" \\ \u{8}\u{c}\n\r\t"),
        )];
        expected.extend(file_events(b""));
        expected.push(Event::End);
        assert_eq!(events, expected);

        let (events, result) = scan("{\"k\u{e9}y\":\"\u{1F600}\u{7f}\"}".as_bytes());
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![field("k\u{e9}y", string("\u{1F600}\u{7f}")), Event::End]
        );
    }

    #[test]
    fn escaped_file_key_is_the_file_key() {
        let (events, result) = scan(br#"{"file\u005fcontents":"aGk="}"#);
        assert_eq!(result, Ok(()));
        let mut expected = file_events(b"hi");
        expected.push(Event::End);
        assert_eq!(events, expected);
    }

    #[test]
    fn known_keys_come_borrowed_and_are_refused_twice_however_spelt() {
        let told = || Scanner::new(FILE_KEY, Limits::default()).with_known_keys(&KNOWN);
        let (events, result) = fed(&mut told(), &[br#"{"a":"1","zz":"2","x":null}"#], false);
        assert_eq!(result, Ok(()));
        let keys: Vec<(&str, bool)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Field { key, .. } => Some((key.as_ref(), matches!(key, Cow::Borrowed(_)))),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [("a", true), ("zz", false), ("x", true)]);
        // A known key given again, plainly or escaped, and an unknown one given again.
        for body in [
            &br#"{"a":"1","a":"2"}"#[..],
            br#"{"a":"1","\u0061":"2"}"#,
            br#"{"zz":"1","z\u007a":"2"}"#,
        ] {
            let (_, result) = fed(&mut told(), &[body], false);
            let key = if body.starts_with(br#"{"a""#) {
                "a"
            } else {
                "zz"
            };
            assert_eq!(result, Err(ScanError::DuplicateKey(key.into())), "{body:?}");
        }
        // Past 64 known keys, the rest are read as any other key.
        static MANY: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
            (0..70)
                .map(|i| &*Box::leak(format!("k{i}").into_boxed_str()))
                .collect()
        });
        let mut scanner = Scanner::new(FILE_KEY, Limits::default()).with_known_keys(&MANY);
        let (events, result) = fed(&mut scanner, &[br#"{"k63":1,"k64":2,"k64":3}"#], false);
        assert_eq!(result, Err(ScanError::DuplicateKey("k64".into())));
        assert!(matches!(
            &events[0],
            Event::Field {
                key: Cow::Borrowed("k63"),
                ..
            }
        ));
        assert!(matches!(&events[1], Event::Field { key: Cow::Owned(k), .. } if k == "k64"));
    }

    #[test]
    fn mime_lines_as_crlf_escapes() {
        let bytes: Vec<u8> = (0..500u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let encoded = encode(&bytes);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        expect_file(&format!("\"{}\"", lines.join("\\r\\n")), &bytes);
        expect_file(&format!("\"{}\\r\\n\"", lines.join("\\r\\n")), &bytes);
        expect_file(&format!("\"{}\"", lines.join("\\n")), &bytes);
    }

    /// Strings long enough for the fast path (whole groups decoded before each byte is
    /// looked at) agree with the byte-exact path, which one-byte chunks always take: the
    /// same file, and a refusal at the same offset, wherever a space, escape, padding or
    /// bad byte sits in a long run.
    #[test]
    fn long_runs_decode_and_refuse_as_byte_by_byte() {
        let bytes: Vec<u8> = (0..900u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let encoded = encode(&bytes);
        assert!(encoded.len() > 1000 && !encoded.contains('='));
        expect_file(&format!("\"{encoded}\""), &bytes);
        for at in [0, 1, 255, 256, 257, 600, encoded.len() - 1] {
            let (head, tail) = encoded.split_at(at);
            expect_file(&format!("\"{head} {tail}\""), &bytes);
            expect_file(&format!("\"{head}\\n{tail}\""), &bytes);
            expect_file(&format!("\"{head}\\u0041{}\"", &tail[1..]), &{
                let mut text = encoded.clone().into_bytes();
                text[at] = b'A';
                let mut file = Vec::new();
                b64::decode_into(&text, &mut file).unwrap();
                file
            });
            expect_bad_base64(&format!("\"{head}-{}\"", &tail[1..]), at + 1);
            // `==` where a group has 0 or 1 characters is refused at once; after 2 it
            // pads the group and the next character is refused; after 3, the second `=`.
            let refused = match at % 4 {
                0 | 1 => at + 1,
                2 => at + 3,
                _ => at + 2,
            };
            expect_bad_base64(&format!("\"{head}=={tail}\""), refused);
        }
        let short = &bytes[..bytes.len() - 1];
        let padded = encode(short);
        assert!(padded.ends_with('='));
        expect_file(&format!("\"{padded}\""), short);
        expect_bad_base64(&format!("\"{padded}QUJD\""), padded.len() + 1);
    }

    #[test]
    fn whitespace_in_base64() {
        expect_file(r#"" a G V s b G 8 = ""#, b"hello");
        expect_file(r#""aGV\tsbG8\n=\r""#, b"hello");
        expect_file(r#""aGV\u000asbG8\u000D\u0009=\u0020""#, b"hello");
        expect_file(r#""aGk= \n ""#, b"hi");
        expect_file(r#""aG= =""#, b"h");
    }

    #[test]
    fn escaped_alphabet_in_base64() {
        expect_file(r#""\/w==""#, &[0xFF]);
        expect_file(r#""\u002fw\u003D=""#, &[0xFF]);
        expect_file(r#""\u0061Gk=""#, b"hi");
        expect_file(r#""a\u0047\u006B\u003d""#, b"hi");
    }

    #[test]
    fn misplaced_padding_is_refused() {
        expect_bad_base64(r#""aGk=aGk=""#, 5);
        expect_bad_base64(r#""aGk= aGk=""#, 6);
        expect_bad_base64(r#""aGk==""#, 5);
        expect_bad_base64(r#""aG===""#, 5);
        expect_bad_base64(r#""=""#, 1);
        expect_bad_base64(r#""a=""#, 2);
        expect_bad_base64(r#""aGkx=""#, 5);
        expect_bad_base64(r#""aGk=\/""#, 6);
        expect_bad_base64(r#""aGk=\u0041""#, 10);
    }

    #[test]
    fn dangling_character_is_refused() {
        expect_bad_base64(r#""a""#, 2);
        expect_bad_base64(r#""aGk=a""#, 5);
        expect_bad_base64(r#""aGkxa""#, 6);
        expect_bad_base64(r#""aGkxa \n""#, 9);
    }

    #[test]
    fn bad_characters_are_refused() {
        expect_bad_base64(r#""aG*k""#, 3);
        expect_bad_base64(r#""aGk-""#, 4);
        expect_bad_base64(r#""aGk_""#, 4);
        expect_bad_base64(r#""aGk\"""#, 5);
        expect_bad_base64(r#""aGk\\""#, 5);
        expect_bad_base64(r#""aGk\b""#, 5);
        expect_bad_base64(r#""aGk\f""#, 5);
        expect_bad_base64(r#""aGk\u000b""#, 9);
        expect_bad_base64(r#""aGk\u00e9""#, 9);
        expect_bad_base64(r#""aGk\ud83d\ude00""#, 9);
        expect_bad_base64("\"aGk\u{e9}\"", 4);
        expect_bad_base64("\"aGk\u{7f}\"", 4);
        assert_eq!(expect_syntax(&with_file("\"aGk\\x\"")), 37);
        assert_eq!(expect_syntax(&with_file("\"aGk\\u00g0\"")), 40);
        assert_eq!(expect_syntax(&with_file("\"aG\nk=\"")), 35);
        assert_eq!(expect_syntax(&with_file("\"aG\tk=\"")), 35);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let (events, result) = scan(br#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(result, Err(ScanError::DuplicateKey("a".into())));
        assert_eq!(
            events,
            vec![field("a", number("1")), field("b", number("2"))]
        );
        let (_, result) = scan(br#"{"a":1,"\u0061":{}}"#);
        assert_eq!(result, Err(ScanError::DuplicateKey("a".into())));
        let (events, result) = scan(br#"{"file_contents":"aGk=","file_contents":"aGk="}"#);
        assert_eq!(result, Err(ScanError::DuplicateKey(FILE_KEY.into())));
        assert_eq!(events, file_events(b"hi"));
        let (_, result) = scan(br#"{"file_contents":null,"file_contents":"aGk="}"#);
        assert_eq!(result, Err(ScanError::DuplicateKey(FILE_KEY.into())));
    }

    /// The keys are kept end to end up to [`SeenKeys::LINEAR`], then in a set: a repeat is
    /// found on either side of the switch, and keys that only share bytes are not repeats.
    #[test]
    fn duplicate_keys_are_refused_however_many_came_before() {
        for n in [
            1,
            2,
            SeenKeys::LINEAR - 1,
            SeenKeys::LINEAR,
            SeenKeys::LINEAR + 1,
            40,
        ] {
            let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            let fields: Vec<Event> = keys.iter().map(|k| field(k, number("1"))).collect();
            let object = |extra: Option<&str>| {
                let mut members: Vec<String> = keys.iter().map(|k| format!("\"{k}\":1")).collect();
                members.extend(extra.map(|k| format!("\"{k}\":2")));
                format!("{{{}}}", members.join(","))
            };
            let (events, result) = scan(object(None).as_bytes());
            assert_eq!(result, Ok(()), "{n} keys");
            assert_eq!(events[..n], fields[..], "{n} keys");
            for repeated in [0, n / 2, n - 1] {
                let (events, result) = scan(object(Some(&keys[repeated])).as_bytes());
                assert_eq!(
                    result,
                    Err(ScanError::DuplicateKey(keys[repeated].clone())),
                    "{n} keys, k{repeated} again"
                );
                assert_eq!(events, fields, "{n} keys, k{repeated} again");
            }
            let (_, result) = scan(object(Some("k")).as_bytes());
            assert_eq!(result, Ok(()), "{n} keys, then k");
        }
        let (_, result) = scan(br#"{"ab":1,"c":2,"abc":3,"a":4,"bc":5,"":6}"#);
        assert_eq!(result, Ok(()));
        let (_, result) = scan(br#"{"ab":1,"c":2,"":3,"abc":4,"":5}"#);
        assert_eq!(result, Err(ScanError::DuplicateKey(String::new())));
    }

    #[test]
    fn nested_keys_may_repeat() {
        let (events, result) = scan(br#"{"a":{"a":1,"a":2},"b":[{"a":1},{"a":2}]}"#);
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![
                field("a", Scalar::Composite),
                field("b", Scalar::Composite),
                Event::End
            ]
        );
    }

    #[test]
    fn nested_junk_is_skipped() {
        let body = br#"{"x":{"a":[1,{"b":null}]},"file_contents":"aGk=","y":[],"z":{},"w":[true,false,-1.5e3,"s\u00e9",[[]],{"file_contents":"not base64!"}]}"#;
        let (events, result) = scan(body);
        assert_eq!(result, Ok(()));
        let mut expected = vec![field("x", Scalar::Composite)];
        expected.extend(file_events(b"hi"));
        expected.extend([
            field("y", Scalar::Composite),
            field("z", Scalar::Composite),
            field("w", Scalar::Composite),
            Event::End,
        ]);
        assert_eq!(events, expected);
    }

    #[test]
    fn nested_syntax_errors_are_refused() {
        for body in [
            &br#"{"x":[1,]}"#[..],
            br#"{"x":[,1]}"#,
            br#"{"x":{"a":1,}}"#,
            br#"{"x":{"a"}}"#,
            br#"{"x":{"a":1]}"#,
            br#"{"x":[1}}"#,
            br#"{"x":{1:2}}"#,
            br#"{"x":[1 2]}"#,
            br#"{"x":[tru]}"#,
            br#"{"x":[nul]}"#,
            br#"{"x":[01]}"#,
            br#"{"x":["\x"]}"#,
            b"{\"x\":[\"\x01\"]}",
            br#"{"x":["\ud800"]}"#,
            br#"{"x":[1e999]}"#,
        ] {
            expect_syntax(body);
        }
    }

    #[test]
    fn depth_bomb_is_refused_early() {
        let limits = Limits::default();
        let mut scanner = Scanner::new(FILE_KEY, limits);
        let mut events = Vec::new();
        assert_eq!(scanner.feed(br#"{"a":"#, &mut events), Ok(()));
        for i in 1..=limits.max_depth + 2 {
            let result = scanner.feed(b"[", &mut events);
            if i < limits.max_depth {
                assert_eq!(result, Ok(()), "bracket {i}");
            } else {
                assert_eq!(result, Err(ScanError::TooDeep(limits.max_depth)), "{i}");
            }
        }
        assert!(scanner.stack.capacity() <= limits.max_depth);
        assert!(events.is_empty());

        let mut bomb = br#"{"a":"#.to_vec();
        bomb.extend(std::iter::repeat_n(b'[', limits.max_depth + 2));
        assert_eq!(scan(&bomb).1, Err(ScanError::TooDeep(limits.max_depth)));
        let mut ok = br#"{"a":"#.to_vec();
        ok.extend(std::iter::repeat_n(b'[', limits.max_depth - 1));
        ok.extend(std::iter::repeat_n(b']', limits.max_depth - 1));
        ok.push(b'}');
        assert_eq!(scan(&ok).1, Ok(()));

        let tight = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        assert_eq!(
            scan_with(br#"{"a":[{}]}"#, tight).1,
            Err(ScanError::TooDeep(2))
        );
        assert_eq!(scan_with(br#"{"a":[],"b":{}}"#, tight).1, Ok(()));
    }

    #[test]
    fn truncated_input_never_succeeds() {
        let body = br#"{"filename":"a\u00fc.txt","file_contents":"aGVs\r\nbG8=","x":[1,{"y":-2.5e+3}],"t":true,"f":false,"n":null}"#;
        assert_eq!(scan(body).1, Ok(()));
        for len in 0..body.len() {
            let result = run_chunks([&body[..len]], Limits::default()).1;
            assert!(
                matches!(result, Err(ScanError::Truncated | ScanError::Syntax { .. })),
                "prefix {len}: {result:?}"
            );
            assert_eq!(
                run_chunks(body[..len].chunks(1), Limits::default()).1,
                result
            );
        }
        assert_eq!(scan(b"").1, Err(ScanError::Truncated));
        assert_eq!(scan(b"  \n").1, Err(ScanError::Truncated));
    }

    #[test]
    fn trailing_data_is_refused() {
        assert_eq!(scan(b"{} x").1, Err(ScanError::TrailingData { offset: 3 }));
        assert_eq!(scan(b"{}{}").1, Err(ScanError::TrailingData { offset: 2 }));
        let (events, result) = scan(b"{}\x00");
        assert_eq!(result, Err(ScanError::TrailingData { offset: 2 }));
        assert_eq!(events, vec![Event::End]);
    }

    #[test]
    fn surrounding_whitespace_is_fine() {
        let (events, result) = scan(b" \t\r\n{ \"a\" : 1 } \t\r\n ");
        assert_eq!(result, Ok(()));
        assert_eq!(events, vec![field("a", number("1")), Event::End]);
    }

    #[test]
    fn not_an_object() {
        for body in [
            &b"[]"[..],
            b"\"x\"",
            b"  1",
            b"null",
            b"\xef\xbb\xbf{}",
            b"x",
        ] {
            assert_eq!(scan(body).1, Err(ScanError::NotAnObject));
        }
    }

    #[test]
    fn file_key_with_other_values() {
        for (json, value) in [
            ("null", Scalar::Null),
            ("17", number("17")),
            ("false", Scalar::Bool(false)),
            ("{\"a\":\"b\"}", Scalar::Composite),
            ("[\"aGk=\"]", Scalar::Composite),
        ] {
            let (events, result) = scan(&with_file(json));
            assert_eq!(result, Ok(()), "{json}");
            assert_eq!(
                events,
                vec![
                    field("filename", string("f")),
                    field(FILE_KEY, value),
                    Event::End
                ]
            );
        }
    }

    #[test]
    fn numbers() {
        for text in [
            "0",
            "-0",
            "1",
            "-1",
            "10",
            "0.5",
            "-0.5",
            "1e5",
            "1E5",
            "1e+5",
            "1e-5",
            "0e0",
            "1.25E-10",
            "123456789012345678901234567890",
            "1e-400",
            "1.7976931348623157e308",
        ] {
            let (events, result) = scan(format!("{{\"n\":{text}}}").as_bytes());
            assert_eq!(result, Ok(()), "{text}");
            assert_eq!(events, vec![field("n", number(text)), Event::End]);
        }
        for text in [
            "01", "-01", "00", "+1", "1.", ".5", "-", "1e", "1e+", "--1", "1.e5", "0x10", "1e400",
            "-1e400", "Infinity", "NaN", "1.5.5", "1ee5",
        ] {
            expect_syntax(format!("{{\"n\":{text}}}").as_bytes());
        }
    }

    #[test]
    fn literals() {
        let (events, result) = scan(br#"{"a":true,"b":false,"c":null}"#);
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![
                field("a", Scalar::Bool(true)),
                field("b", Scalar::Bool(false)),
                field("c", Scalar::Null),
                Event::End
            ]
        );
        for body in [
            &br#"{"a":tru}"#[..],
            br#"{"a":True}"#,
            br#"{"a":nulll}"#,
            br#"{"a":falsey}"#,
        ] {
            expect_syntax(body);
        }
    }

    #[test]
    fn grammar_errors() {
        for body in [
            &br#"{"a" 1}"#[..],
            br#"{"a":}"#,
            br#"{"a":1,}"#,
            br#"{,}"#,
            br#"{"a":1 "b":2}"#,
            br#"{'a':1}"#,
            br#"{a:1}"#,
            br#"{"a":1]"#,
            br#"{"a":'x'}"#,
        ] {
            expect_syntax(body);
        }
        assert_eq!(expect_syntax(br#"{"a":1,,"b":2}"#), 7);
    }

    #[test]
    fn raw_control_characters_are_refused() {
        assert_eq!(expect_syntax(b"{\"a\":\"x\ny\"}"), 7);
        assert_eq!(expect_syntax(b"{\"a\x00\":1}"), 3);
        assert_eq!(expect_syntax(b"{\"a\":\"\x1f\"}"), 6);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        for body in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":\"\xc3\"}",
            b"{\"a\":\"\xc0\xaf\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            b"{\"a\":\"\xf4\x90\x80\x80\"}",
            b"{\"a\":\"\xe2\x82\"}",
            b"{\"\x80\":1}",
            b"{\"x\":[\"\xe0\x80\x80\"]}",
        ] {
            expect_syntax(body);
        }
    }

    #[test]
    fn lone_surrogates_are_refused() {
        for body in [
            &br#"{"a":"\ud83d"}"#[..],
            br#"{"a":"\ud83dx"}"#,
            br#"{"a":"\ud83d\n"}"#,
            br#"{"a":"\ud83d\ud83d"}"#,
            br#"{"a":"\ude00"}"#,
            br#"{"\udbff":1}"#,
        ] {
            expect_syntax(body);
        }
        let (events, result) = scan(br#"{"a":"\uDBFF\uDFFF"}"#);
        assert_eq!(result, Ok(()));
        assert_eq!(events, vec![field("a", string("\u{10FFFF}")), Event::End]);
    }

    #[test]
    fn over_long_fields_are_refused() {
        let limits = Limits {
            max_field_bytes: 8,
            ..Limits::default()
        };
        assert_eq!(scan_with(br#"{"a":"12345678"}"#, limits).1, Ok(()));
        assert_eq!(
            scan_with(br#"{"a":"123456789"}"#, limits).1,
            Err(ScanError::FieldTooLarge("a".into()))
        );
        assert_eq!(
            scan_with(br#"{"a":"\u00fc\u00fc\u00fc\u00fc\u00fc"}"#, limits).1,
            Err(ScanError::FieldTooLarge("a".into()))
        );
        assert_eq!(
            scan_with(br#"{"a":123456789}"#, limits).1,
            Err(ScanError::FieldTooLarge("a".into()))
        );
        assert_eq!(
            scan_with(br#"{"a":[1,123456789]}"#, limits).1,
            Err(ScanError::FieldTooLarge("a".into()))
        );
        assert_eq!(
            scan_with(br#"{"abcdefghi":1}"#, limits).1,
            Err(ScanError::FieldTooLarge("abcdefghi".into()))
        );
        assert_eq!(
            scan_with(br#"{"file_contents":"aGVsbG8gd29ybGQ="}"#, limits).1,
            Ok(())
        );

        let long_key = "k".repeat(100_000);
        let body = format!("{{\"{long_key}\":1}}");
        let (_, result) = run_chunks([body.as_bytes()], Limits::default());
        assert_eq!(result, Err(ScanError::FieldTooLarge("k".repeat(64))));
        let long_value = "v".repeat(100_000);
        let body = format!("{{\"key\":\"{long_value}\"}}");
        let (_, result) = run_chunks([body.as_bytes()], Limits::default());
        assert_eq!(result, Err(ScanError::FieldTooLarge("key".into())));
    }

    #[test]
    fn fields_too_large_in_total() {
        let limits = Limits {
            max_field_bytes: 8,
            max_fields_total: 16,
            ..Limits::default()
        };
        assert_eq!(
            scan_with(
                br#"{"ab":"123456","cd":"123456","file_contents":"aGk="}"#,
                limits
            )
            .1,
            Ok(())
        );
        let (events, result) = scan_with(
            br#"{"ab":"123456","cd":"1234567","file_contents":"aGk="}"#,
            limits,
        );
        assert_eq!(result, Err(ScanError::FieldsTooLarge));
        assert_eq!(events, vec![field("ab", string("123456"))]);
        assert_eq!(
            scan_with(br#"{"ab":"123456","cd":"123456","e":1}"#, limits).1,
            Err(ScanError::FieldsTooLarge)
        );
        assert_eq!(
            scan_with(br#"{"abcdefgh":"12345678","x":true}"#, limits).1,
            Err(ScanError::FieldsTooLarge)
        );
    }

    #[test]
    fn plain_runs_in_strings_read_as_byte_by_byte() {
        // Printable ASCII in keys and strings is taken in runs; `scan_with` compares each
        // body with one byte at a time, where no run is longer than a byte.
        let limits = Limits {
            max_field_bytes: 8,
            max_fields_total: 12,
            ..Limits::default()
        };
        // Runs ended by escapes, non-ASCII, a control character, and the quote.
        let (events, result) = scan(
            "{\"ab cd\":\"x\\ty~\u{7f} \u{fc}z\\u0041\\\\ \u{20ac}!\",\"n\":\"nested? {\\\"no\\\"}\"}"
                .as_bytes(),
        );
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![
                field("ab cd", string("x\ty~\u{7f} \u{fc}zA\\ \u{20ac}!")),
                field("n", string("nested? {\"no\"}")),
                Event::End
            ]
        );
        assert!(
            scan(b"{\"a\":\"b\x01c\"}").1.is_err(),
            "a control character"
        );
        // The total crossed inside a run, the field limit not: `FieldsTooLarge`, at the
        // byte that crosses it.
        let (events, result) = scan_with(br#"{"abcd":"123456","x":"12345"}"#, limits);
        assert_eq!(result, Err(ScanError::FieldsTooLarge));
        assert_eq!(events, vec![field("abcd", string("123456"))]);
        // Both crossed by one run: the field limit is checked first, as byte by byte.
        assert_eq!(
            scan_with(br#"{"a":"123456789012"}"#, limits).1,
            Err(ScanError::FieldTooLarge("a".into()))
        );
        // A key up to the limit, and past it.
        assert_eq!(scan_with(br#"{"abcdefgh":1}"#, limits).1, Ok(()));
        assert_eq!(
            scan_with(br#"{"abcdefghi":1}"#, limits).1,
            Err(ScanError::FieldTooLarge("abcdefghi".into()))
        );
        // Nested strings are read but not kept: no limit applies to them.
        let nested = format!(
            r#"{{"a":{{"b":"{}"}},"c":["{}"]}}"#,
            "x".repeat(40),
            "y".repeat(40)
        );
        let (events, result) = scan_with(nested.as_bytes(), limits);
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![
                field("a", Scalar::Composite),
                field("c", Scalar::Composite),
                Event::End
            ]
        );
    }

    #[test]
    fn errors_report_offsets() {
        let (events, result) = scan(br#"{"file_contents":"aGVsbG8gd29y*bGQ="}"#);
        assert_eq!(
            result,
            Err(ScanError::BadBase64 {
                key: FILE_KEY.into(),
                offset: 30
            })
        );
        assert_eq!(events, vec![Event::FileStart, data(b"hello wor")]);
        let mut scanner = Scanner::new(FILE_KEY, Limits::default());
        let mut events = Vec::new();
        assert!(scanner.feed(b"{\"a\":1x}", &mut events).is_err());
        assert_eq!(scanner.offset(), 6);
    }

    #[test]
    fn offset_counts_consumed_bytes() {
        let mut scanner = Scanner::new(FILE_KEY, Limits::default());
        let mut events = Vec::new();
        scanner
            .feed(b"{\"file_contents\":\"aG", &mut events)
            .unwrap();
        assert_eq!(scanner.offset(), 20);
        scanner.feed(b"k=\"} ", &mut events).unwrap();
        assert_eq!(scanner.offset(), 25);
        scanner.finish(&mut events).unwrap();
        let mut expected = file_events(b"hi");
        expected.push(Event::End);
        assert_eq!(events, expected);
    }

    /// xorshift64*: a seeded generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn random_chunks<'a>(rng: &mut Rng, input: &'a [u8], max: usize) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = (rng.below(max) + 1).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    #[test]
    fn three_megabyte_round_trip() {
        let mut rng = Rng(0x5EED_0001);
        let file = rng.bytes(3 * 1024 * 1024 + 1);
        let body = format!(
            r#"{{"filename":"big.bin","file_contents":"{}","value":"x"}}"#,
            encode(&file)
        );
        for max_chunk in [1 << 16, 1000, 7] {
            let chunks = random_chunks(&mut rng, body.as_bytes(), max_chunk);
            let mut scanner = Scanner::new(FILE_KEY, Limits::default());
            let mut events = Vec::new();
            let mut biggest = 0;
            for chunk in chunks {
                let before = events.len();
                scanner.feed(chunk, &mut events).unwrap();
                for event in &events[before..] {
                    if let Event::FileData(d) = event {
                        assert!(d.len() <= chunk.len() / 4 * 3 + 3);
                        biggest = biggest.max(d.len());
                    }
                }
            }
            scanner.finish(&mut events).unwrap();
            assert!(biggest <= max_chunk);
            assert_eq!(decoded_file(&events), file);
            assert!(events.contains(&Event::FileEnd {
                decoded_len: file.len() as u64
            }));
            assert_eq!(events.last(), Some(&Event::End));
        }
    }

    /// Renders `s` as a JSON string literal, escaping at random.
    fn render_string(rng: &mut Rng, s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                '/' if rng.chance(50) => out.push_str("\\/"),
                c if rng.chance(10) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn random_text(rng: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "a",
            "b",
            "Z",
            "0",
            " ",
            "/",
            "\"",
            "\\",
            "\n",
            "\t",
            "\u{1}",
            "\u{fc}",
            "\u{20ac}",
            "\u{1F600}",
            "\u{7f}",
            "x.pdf",
        ];
        let n = rng.below(8);
        (0..n).map(|_| rng.pick(PIECES)).collect()
    }

    fn ws(rng: &mut Rng) -> &'static str {
        rng.pick(&["", "", "", " ", "\n", "\t", "\r\n", "  "])
    }

    fn random_value(rng: &mut Rng, depth: usize) -> String {
        const NUMBERS: &[&str] = &[
            "0",
            "-0",
            "42",
            "-17",
            "3.25",
            "1e5",
            "2E-3",
            "-0.5e+10",
            "12345678901234567890",
            "1.5",
        ];
        match rng.below(if depth < 3 { 8 } else { 6 }) {
            0 => "null".into(),
            1 => "true".into(),
            2 => "false".into(),
            3 => rng.pick(NUMBERS).into(),
            4 | 5 => {
                let text = random_text(rng);
                render_string(rng, &text)
            }
            6 => {
                let items: Vec<String> = (0..rng.below(4))
                    .map(|_| format!("{}{}{}", ws(rng), random_value(rng, depth + 1), ws(rng)))
                    .collect();
                format!("[{}{}]", items.join(","), ws(rng))
            }
            _ => {
                let items: Vec<String> = (0..rng.below(4))
                    .map(|i| {
                        let key = render_string(rng, &format!("k{i}"));
                        format!(
                            "{}{key}{}:{}{}",
                            ws(rng),
                            ws(rng),
                            ws(rng),
                            random_value(rng, depth + 1)
                        )
                    })
                    .collect();
                format!("{{{}{}}}", items.join(","), ws(rng))
            }
        }
    }

    /// Renders base64 text as the body of a JSON string, with random whitespace and
    /// escapes.
    fn render_base64(rng: &mut Rng, encoded: &str) -> String {
        const SPACES: &[&str] = &[
            " ", "\\n", "\\r\\n", "\\t", "\\r", "\\u000a", "\\u000D", "\\u0009", "\\u0020",
        ];
        let mime = rng.chance(30);
        let noise = rng.below(20);
        let mut out = String::new();
        for (i, c) in encoded.chars().enumerate() {
            if mime && i > 0 && i % 76 == 0 {
                out.push_str("\\r\\n");
            }
            if rng.chance(noise) {
                out.push_str(rng.pick(SPACES));
            }
            match c {
                '/' if rng.chance(50) => out.push_str("\\/"),
                c if rng.chance(noise / 2) => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        if rng.chance(noise) {
            out.push_str(rng.pick(SPACES));
        }
        out
    }

    struct Generated {
        body: Vec<u8>,
        file: Option<Vec<u8>>,
    }

    fn random_body(rng: &mut Rng) -> Generated {
        const KEYS: &[&str] = &[
            "filename",
            "value",
            "author_email",
            "team_case_block_id",
            "x",
            "\u{fc}ml/aut",
            "q\"uote",
            "",
        ];
        let mut members = Vec::new();
        for key in KEYS {
            if rng.chance(50) {
                let value = random_value(rng, 1);
                members.push(format!(
                    "{}{}{}:{}{value}{}",
                    ws(rng),
                    render_string(rng, key),
                    ws(rng),
                    ws(rng),
                    ws(rng)
                ));
            }
        }
        let file = rng.chance(90).then(|| {
            let len = if rng.chance(5) {
                rng.below(5000)
            } else {
                rng.below(200)
            };
            rng.bytes(len)
        });
        if let Some(file) = &file {
            let mut encoded = encode(file);
            if rng.chance(30) {
                encoded = encoded.trim_end_matches('=').to_owned();
            }
            let at = rng.below(members.len() + 1);
            let key = render_string(rng, FILE_KEY);
            let text = render_base64(rng, &encoded);
            members.insert(
                at,
                format!(
                    "{}{key}{}:{}\"{text}\"{}",
                    ws(rng),
                    ws(rng),
                    ws(rng),
                    ws(rng)
                ),
            );
        }
        let body = format!("{}{{{}{}}}{}", ws(rng), members.join(","), ws(rng), ws(rng));
        Generated {
            body: body.into_bytes(),
            file,
        }
    }

    fn scalar_matches(scalar: &Scalar, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (scalar, value) {
            (Scalar::Null, Value::Null) => true,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Number(text), Value::Number(_)) => {
                serde_json::from_str::<Value>(text).ok().as_ref() == Some(value)
            }
            (Scalar::String(a), Value::String(b)) => a == b,
            (Scalar::Composite, Value::Array(_) | Value::Object(_)) => true,
            _ => false,
        }
    }

    /// The top-level keys in body order, duplicates kept (`serde_json::Value` keeps only
    /// the last).
    struct KeyList(Vec<String>);

    impl<'de> serde::Deserialize<'de> for KeyList {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = KeyList;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<KeyList, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(KeyList(keys))
                }
            }
            d.deserialize_map(Visitor)
        }
    }

    fn decode_reference(text: &str) -> Option<Vec<u8>> {
        let clean: Vec<u8> = text
            .bytes()
            .filter(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
            .collect();
        let mut out = Vec::new();
        b64::decode_into(&clean, &mut out).ok()?;
        Some(out)
    }

    /// Checks the scanner against `serde_json` plus whitespace-stripping base64 decoding.
    fn check_against_reference(body: &[u8], outcome: &Outcome) {
        let (events, result) = outcome;
        let context = || String::from_utf8_lossy(body).into_owned();
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            assert!(
                result.is_err(),
                "serde_json refuses, scanner accepts: {}",
                context()
            );
            return;
        };
        let Some(object) = value.as_object() else {
            assert_eq!(result, &Err(ScanError::NotAnObject), "{}", context());
            return;
        };
        let keys = serde_json::from_slice::<KeyList>(body).unwrap().0;
        let unique: HashSet<&String> = keys.iter().collect();
        if unique.len() != keys.len() {
            assert!(result.is_err(), "duplicate keys accepted: {}", context());
            return;
        }
        let file_text = object.get(FILE_KEY).and_then(|v| v.as_str());
        let expected_file = match file_text {
            Some(text) => match decode_reference(text) {
                Some(bytes) => Some(bytes),
                None => {
                    assert!(
                        matches!(
                            result,
                            Err(ScanError::BadBase64 { .. } | ScanError::Syntax { .. })
                        ),
                        "bad base64 accepted: {}: {result:?}",
                        context()
                    );
                    return;
                }
            },
            None => None,
        };
        assert_eq!(result, &Ok(()), "{}", context());
        let mut seen = HashSet::new();
        for event in events {
            if let Event::Field { key, value } = event {
                let reference = object
                    .get(key.as_ref())
                    .unwrap_or_else(|| panic!("{key:?}: {}", context()));
                assert!(
                    scalar_matches(value, reference),
                    "{key:?}: {value:?} vs {reference:?}"
                );
                assert!(seen.insert(key.clone()));
            }
        }
        assert_eq!(seen.len() + usize::from(file_text.is_some()), object.len());
        match expected_file {
            Some(bytes) => {
                assert_eq!(decoded_file(events), bytes, "{}", context());
                assert!(events.contains(&Event::FileEnd {
                    decoded_len: bytes.len() as u64
                }));
            }
            None => assert!(!events.contains(&Event::FileStart)),
        }
        assert_eq!(events.last(), Some(&Event::End));
    }

    #[test]
    fn random_bodies_decode_under_any_chunking() {
        let mut rng = Rng(0x5EED_0002);
        for _ in 0..3000 {
            let generated = random_body(&mut rng);
            let body = &generated.body;
            let whole = run_chunks([&body[..]], Limits::default());
            assert_eq!(whole.1, Ok(()), "{}", String::from_utf8_lossy(body));
            for max in [1, 3, 64] {
                let chunks = random_chunks(&mut rng, body, max);
                assert_eq!(run_chunks(chunks, Limits::default()), whole);
            }
            match &generated.file {
                Some(file) => assert_eq!(&decoded_file(&whole.0), file),
                None => assert!(!whole.0.contains(&Event::FileStart)),
            }
            check_against_reference(body, &whole);
        }
    }

    fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
        const BYTES: &[u8] = b"\"\\{}[],:= 0-1e.+uaAZ/\x00\x1f\x7f\x80\xc3\xbf\xff\n\ttfn";
        for _ in 0..=rng.below(3) {
            let at = rng.below(body.len() + 1);
            let byte = if rng.chance(80) {
                rng.pick(BYTES)
            } else {
                rng.next() as u8
            };
            match rng.below(4) {
                0 if at < body.len() => body[at] = byte,
                1 if at < body.len() => {
                    body.remove(at);
                }
                2 => body.insert(at, byte),
                _ => {
                    let end = (at + rng.below(8)).min(body.len());
                    let copy = body[at..end].to_vec();
                    let to = rng.below(body.len() + 1);
                    body.splice(to..to, copy);
                }
            }
        }
    }

    #[test]
    fn mutated_bodies_agree_with_serde_json() {
        let mut rng = Rng(0x5EED_0003);
        for _ in 0..6000 {
            let mut body = random_body(&mut rng).body;
            mutate(&mut rng, &mut body);
            let whole = run_chunks([&body[..]], Limits::default());
            let chunks = random_chunks(&mut rng, &body, 5);
            assert_eq!(run_chunks(chunks, Limits::default()), whole);
            check_against_reference(&body, &whole);
        }
    }

    /// `cargo test --release -- --ignored --nocapture throughput`
    #[test]
    #[ignore]
    fn throughput() {
        let mut rng = Rng(0x5EED_0004);
        let file = rng.bytes(192 << 20);
        let body = format!(
            r#"{{"filename":"big.bin","file_contents":"{}"}}"#,
            encode(&file)
        );
        for chunk_size in [16 << 10, 64 << 10, 1 << 20] {
            let start = std::time::Instant::now();
            let mut scanner = Scanner::new(FILE_KEY, Limits::default());
            let mut events = Vec::new();
            let mut decoded = 0u64;
            for chunk in body.as_bytes().chunks(chunk_size) {
                scanner.feed(chunk, &mut events).unwrap();
                for event in events.drain(..) {
                    if let Event::FileData(d) = event {
                        decoded += d.len() as u64;
                    }
                }
            }
            scanner.finish(&mut events).unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(decoded, file.len() as u64);
            println!(
                "{} KiB chunks: {:.2} GB/s of base64 input ({} MB in {:.3} s)",
                chunk_size >> 10,
                body.len() as f64 / secs / 1e9,
                body.len() / 1_000_000,
                secs
            );
        }
    }
}
