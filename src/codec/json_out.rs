//! JSON written by hand, byte for byte as serde_json writes it (compactly), where a
//! derived `Serialize` costs most: the one record each upload is answered with, and the
//! JSON log's lines. serde_json calls one method per key and per value, and escapes each
//! byte by a table; here a record's keys are written as the literals they are and a
//! string's plain runs are copied whole. Tests hold every writer to serde_json's bytes.

use std::fmt::{self, Write as _};

/// A JSON object being written into a `String`: [`Object::new`] writes its `{`, each call
/// a member, [`Object::end`] its `}`. Keys are `'static` names that need no escaping.
pub struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn new(out: &'a mut String) -> Object<'a> {
        out.push('{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(!key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    /// A string member.
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        push_json_str(self.out, value);
        self
    }

    /// A string member, `null` when there is none.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// An unsigned number member.
    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.raw(key, itoa::Buffer::new().format(value))
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// A member whose JSON text is `json`, written as it is.
    pub fn raw(&mut self, key: &'static str, json: &str) -> &mut Self {
        self.key(key);
        self.out.push_str(json);
        self
    }

    /// A member holding a JSON tree (for what is rare, or kept as the upstream gave it).
    pub fn value(&mut self, key: &'static str, value: &serde_json::Value) -> &mut Self {
        self.key(key);
        // A `Value`'s `Display` is its compact JSON; writing into a `String` cannot fail.
        let _ = write!(self.out, "{value}");
        self
    }

    /// An object member, written by `members`.
    pub fn object(
        &mut self,
        key: &'static str,
        members: impl FnOnce(&mut Object<'_>),
    ) -> &mut Self {
        self.key(key);
        let mut inner = Object::new(self.out);
        members(&mut inner);
        inner.end();
        self
    }

    /// Members written as they are, `"key":value` pairs with commas between them (a run of
    /// members whose values never change, written at once).
    pub fn members(&mut self, json: &'static str) -> &mut Self {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(json);
        self
    }

    /// An array member: each of `items` written onto the buffer by `each`, commas between.
    pub fn items<T>(
        &mut self,
        key: &'static str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut String, T),
    ) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            each(self.out, item);
        }
        self.out.push(']');
        self
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push('}');
    }
}

/// A JSON object written by `members` into a new `String`.
pub fn json_object(members: impl FnOnce(&mut Object<'_>)) -> String {
    let mut out = String::with_capacity(128);
    let mut o = Object::new(&mut out);
    members(&mut o);
    o.end();
    out
}

/// `s` as a JSON string, escaped as serde_json escapes it, onto a `String`.
pub fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    // Writing into a `String` cannot fail.
    let _ = write_json_str(out, s);
}

/// `s` as a JSON string, escaped as serde_json escapes.
pub fn write_json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscape(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string, as serde_json does:
/// `"` and `\\` and the control characters, with the short forms where JSON has them.
pub struct JsonEscape<'a, W: fmt::Write + ?Sized>(pub &'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for JsonEscape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        loop {
            let i = start + plain_len(&bytes[start..]);
            // Every byte escaped is ASCII, so these are character boundaries.
            self.0.write_str(&s[start..i])?;
            let Some(&b) = bytes.get(i) else {
                return Ok(());
            };
            let short = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                _ => "",
            };
            if short.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let u = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ];
                self.0
                    .write_str(std::str::from_utf8(&u).map_err(|_| fmt::Error)?)?;
            } else {
                self.0.write_str(short)?;
            }
            start = i + 1;
        }
    }
}

/// How many bytes `bytes` starts with that a JSON string holds as they are (all but `"`,
/// `\` and the control characters below 0x20), eight at a time: in each word, a byte
/// below 0x20, or equal to `"` or `\` after an exclusive or, sets its top bit in
/// `(w - 0x01..) & !w & 0x80..`, the lowest such byte exactly (a borrow can only mark the
/// bytes above it).
pub fn plain_len(bytes: &[u8]) -> usize {
    run_len(bytes, false)
}

/// [`plain_len`] for printable ASCII only: it also stops at a byte past 0x7F (the JSON
/// scanner checks those as UTF-8 one by one).
pub fn ascii_plain_len(bytes: &[u8]) -> usize {
    run_len(bytes, true)
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const TOPS: u64 = ONES * 0x80;

/// The run [`plain_len`] measures; with `ascii`, a byte with its top bit set ends it too.
fn run_len(bytes: &[u8], ascii: bool) -> usize {
    let high = if ascii { TOPS } else { 0 };
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & TOPS;
    let mut words = bytes.chunks_exact(8);
    let mut done = 0;
    for chunk in &mut words {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits = below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | (w & high);
        if hits != 0 {
            // The lowest marked byte is the first in memory (little-endian order).
            return done + (hits.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + words
        .remainder()
        .iter()
        .take_while(|&&b| b >= 0x20 && b != b'"' && b != b'\\' && !(ascii && b >= 0x80))
        .count()
}

/// Strings to test a writer with: empty, plain, every kind of escape, non-ASCII.
#[cfg(test)]
pub const AWKWARD: &[&str] = &[
    "",
    "plain.txt",
    "quote \" and backslash \\ and slash /",
    "\n\r\t\u{8}\u{c}\u{0}\u{1}\u{1f}\u{7f}",
    "Pr\u{fc}fbericht \u{20ac} \u{1f600} \u{2028}",
    "</script>&<>'",
    "\\\"\\",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in AWKWARD {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
        // Every byte value a string can start with, alone.
        for c in (0..=0x7f_u8).map(char::from).chain(['\u{80}', '\u{ffff}']) {
            let mut out = String::new();
            push_json_str(&mut out, c.encode_utf8(&mut [0; 4]));
            assert_eq!(out, serde_json::to_string(&c).unwrap(), "{c:?}");
        }
    }

    #[test]
    fn plain_runs_end_at_the_first_byte_to_escape() {
        // Every byte value at every position of a word and past it, after plain bytes
        // (among them 0x80 and up, which set the top bits the scan reads) and before
        // bytes to escape (which a borrow could mark).
        for b in 0..=255_u8 {
            let plain = b >= 0x20 && b != b'"' && b != b'\\';
            for at in 0..20 {
                let mut bytes: Vec<u8> = (0..at).map(|i| [b'a', 0xc3, 0xff, 0x21][i % 4]).collect();
                bytes.push(b);
                bytes.extend_from_slice(b"\x00\"\\\x1f");
                let want = if plain { at + 1 } else { at };
                assert_eq!(plain_len(&bytes), want, "byte {b:#x} at {at}");
            }
        }
        assert_eq!(plain_len(b""), 0);
        assert_eq!(plain_len(&[0x7f; 17]), 17);
        // The ASCII run: the same, and a byte past 0x7F ends it too.
        for b in 0..=255_u8 {
            let plain = (0x20..0x80).contains(&b) && b != b'"' && b != b'\\';
            for at in 0..20 {
                let mut bytes: Vec<u8> = (0..at).map(|i| [b'a', 0x7f, b' ', b'~'][i % 4]).collect();
                bytes.push(b);
                bytes.extend_from_slice(b"\xff\x00\"\\");
                let want = if plain { at + 1 } else { at };
                assert_eq!(ascii_plain_len(&bytes), want, "byte {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn an_object_is_written_as_serde_json_writes_its_value() {
        for (i, s) in AWKWARD.iter().enumerate() {
            let mut out = String::new();
            let mut o = Object::new(&mut out);
            o.str("a", s)
                .opt_str("b", None)
                .opt_str("c", Some(s))
                .u64("d", u64::MAX >> i)
                .bool("e", i % 2 == 0)
                .object("f", |o| {
                    o.str("g", s);
                })
                .object("h", |_| {})
                .value("i", &serde_json::json!({"j": [s, 1, null]}))
                .raw("k", "17");
            o.end();
            let want = serde_json::json!({
                "a": s, "b": null, "c": s, "d": u64::MAX >> i, "e": i % 2 == 0,
                "f": {"g": s}, "h": {}, "i": {"j": [s, 1, null]}, "k": 17,
            });
            // serde_json's maps keep their keys sorted: these are written in that order.
            assert_eq!(out, want.to_string(), "{s:?}");
        }
    }
}
