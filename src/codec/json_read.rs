//! A JSON object's members read in place, for the one record an upstream answers an upload
//! with: keys and values are borrowed from the body, nothing is allocated, and a nested
//! object is read where it stands (no tree, no second pass).
//!
//! It is a fast path, not a JSON parser of record. A [`Reader`] takes only what it reads
//! exactly as `serde_json` would, and gives `None` for anything else: a key with an escape,
//! a control character in a string, a body that is not UTF-8, nesting deeper than
//! [`MAX_DEPTH`], anything `serde_json` refuses. A string with an escape is checked and
//! passed over ([`Val::Esc`]); a caller that wants its text declines it. Its caller then
//! reads the body the slower way (and declines, the same way, what it does not want to
//! read itself), so the two agree on everything this reader takes; the dialects' tests
//! hold them to it on generated answers.
//!
//! ```text
//! let mut r = Reader::new(body)?;
//! while let Some(key) = r.next_key()? {
//!     match key {
//!         "id" => id = r.value()?,
//!         "user" if r.object()? => while let Some(k) = r.next_key()? { ... },
//!         _ => r.skip()?,
//!     }
//! }
//! r.finish()?;
//! ```

/// The deepest nesting read (the body's object is depth 1); deeper is declined.
/// serde_json refuses nesting past 128.
pub const MAX_DEPTH: usize = 64;

/// A value, borrowed from the body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    /// A number written as a plain non-negative integer of at most 19 digits (so within
    /// `u64`, read as `serde_json` reads it).
    Int(u64),
    /// Any other number (signed, with a fraction or an exponent, or of 20 digits and
    /// more); callers that need its value decline it.
    Num,
    /// A string without escapes.
    Str(&'a str),
    /// A string with an escape (checked as serde_json checks it, not kept): callers that
    /// need its text decline it.
    Esc,
    /// An object (checked, not kept: [`Reader::object`] reads one's members).
    Obj,
    /// An array (checked, not kept).
    Arr,
}

impl<'a> Val<'a> {
    /// The value as an id is read from a tree (`upload::id_text`: a string, or a number's
    /// text): `Some(None)` for anything else; `None` (its reader declines it) for a string
    /// with an escape, or a number that is not a plain integer, whose text serde_json
    /// would write its own way.
    pub fn id_text(self) -> Option<Option<String>> {
        match self {
            Val::Int(n) => Some(Some(n.to_string())),
            Val::Num => None,
            _ => self.text(),
        }
    }

    /// The value as text when it is a string (as `Value::as_str` reads a tree):
    /// `Some(None)` for anything else; `None` (its reader declines it) for a string with
    /// an escape.
    pub fn text(self) -> Option<Option<String>> {
        self.text_ref().map(|t| t.map(str::to_owned))
    }

    /// [`Val::id_text`] checked now and written later (by `id_text` on the value kept):
    /// `Some(Some(self))` for a string or a plain integer, `Some(None)` for anything
    /// else, `None` where `id_text` declines.
    pub fn id_ref(self) -> Option<Option<Val<'a>>> {
        match self {
            Val::Str(_) | Val::Int(_) => Some(Some(self)),
            Val::Num | Val::Esc => None,
            _ => Some(None),
        }
    }

    /// [`Val::text`] borrowed from the answer.
    pub fn text_ref(self) -> Option<Option<&'a str>> {
        match self {
            Val::Str(s) => Some(Some(s)),
            Val::Esc => None,
            _ => Some(None),
        }
    }
}

/// Reads a JSON object's members in order; see the module's docs. Every method gives
/// `None` when what comes next is not what it reads, after which the reader is not to be
/// used.
pub struct Reader<'a> {
    b: &'a [u8],
    /// `b` as text: every slice taken of it starts and ends beside an ASCII byte.
    text: &'a str,
    i: usize,
    /// Objects and arrays entered and still open.
    depth: usize,
    /// Bit `d` set when the container at depth `d + 1` is an array.
    arrays: u64,
    /// Just inside a container's `{` or `[`: no `,` before what comes next.
    first: bool,
}

impl<'a> Reader<'a> {
    /// A reader of `body`, which must be a JSON object (whitespace around it).
    pub fn new(body: &'a [u8]) -> Option<Reader<'a>> {
        let text = std::str::from_utf8(body).ok()?;
        let mut r = Reader {
            b: body,
            text,
            i: 0,
            depth: 0,
            arrays: 0,
            first: true,
        };
        r.ws();
        r.open(b'{')?;
        Some(r)
    }

    /// The next member's key; `Some(None)` once the object (the body's, or the one
    /// [`Reader::object`] entered) has closed. Its value is to be read next, by
    /// [`Reader::value`], [`Reader::skip`], [`Reader::object`] or [`Reader::array`].
    pub fn next_key(&mut self) -> Option<Option<&'a str>> {
        if !self.next_in(false)? {
            return Some(None);
        }
        self.eat(b'"')?;
        // A key with an escape is declined: its reader compares keys as written.
        let key = self.string()??;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(Some(key))
    }

    /// Whether another value of the array [`Reader::array`] entered follows (to be read
    /// next, as a member's value is); `false` once the array has closed.
    pub fn next_item(&mut self) -> Option<bool> {
        self.next_in(true)
    }

    /// The value here (an object or array checked and passed over).
    pub fn value(&mut self) -> Option<Val<'a>> {
        self.any(self.depth)
    }

    /// Passes over the value here.
    pub fn skip(&mut self) -> Option<()> {
        self.value().map(drop)
    }

    /// Enters the value here when it is an object (`true`: its members follow, through
    /// [`Reader::next_key`]); `false` (nothing read) when it is something else.
    pub fn object(&mut self) -> Option<bool> {
        self.enter(b'{')
    }

    /// Enters the value here when it is an array (`true`: its values follow, through
    /// [`Reader::next_item`]); `false` (nothing read) when it is something else.
    pub fn array(&mut self) -> Option<bool> {
        self.enter(b'[')
    }

    /// Enters the value here when it is an object (`true`, as [`Reader::object`]); passes
    /// over it when it is anything else (`false`).
    pub fn object_or_skip(&mut self) -> Option<bool> {
        self.enter_or_skip(b'{')
    }

    /// Enters the value here when it is an array (`true`, as [`Reader::array`]); passes
    /// over it when it is anything else (`false`).
    pub fn array_or_skip(&mut self) -> Option<bool> {
        self.enter_or_skip(b'[')
    }

    /// Reads on to the next member named `name` of the object entered, passing over the
    /// others: `true` with its value to be read next, `false` once the object has closed.
    /// A name given twice is found twice (the last found is the one a tree keeps).
    pub fn next_named(&mut self, name: &str) -> Option<bool> {
        while let Some(key) = self.next_key()? {
            if key == name {
                return Some(true);
            }
            self.skip()?;
        }
        Some(false)
    }

    fn enter_or_skip(&mut self, open: u8) -> Option<bool> {
        if self.enter(open)? {
            return Some(true);
        }
        self.skip()?;
        Some(false)
    }

    /// Checks that nothing but whitespace follows the body's object, once it has closed.
    pub fn finish(mut self) -> Option<()> {
        self.ws();
        (self.depth == 0 && self.i == self.b.len()).then_some(())
    }

    fn enter(&mut self, open: u8) -> Option<bool> {
        if self.b.get(self.i) != Some(&open) {
            return Some(false);
        }
        self.open(open)?;
        Some(true)
    }

    fn open(&mut self, open: u8) -> Option<()> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.eat(open)?;
        let bit = 1u64 << self.depth;
        self.arrays = if open == b'[' {
            self.arrays | bit
        } else {
            self.arrays & !bit
        };
        self.depth += 1;
        self.first = true;
        Some(())
    }

    /// Past the `,` before the next member or value of the open container (an array
    /// when `array`), or past its close (`false`).
    fn next_in(&mut self, array: bool) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        if (self.arrays >> top & 1 == 1) != array {
            return None;
        }
        self.ws();
        if self.eat(if array { b']' } else { b'}' }).is_some() {
            self.depth = top;
            self.first = false;
            return Some(false);
        }
        if !self.first {
            self.eat(b',')?;
            self.ws();
        }
        self.first = false;
        Some(true)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// A string whose `"` was just read, through its closing `"`: `Some(None)` when it
    /// holds an escape (each checked as serde_json checks it).
    #[inline(always)]
    fn string(&mut self) -> Option<Option<&'a str>> {
        let start = self.i;
        // The run a JSON string holds as it is (what `json_out` writes unescaped).
        let n = super::json_out::plain_len(&self.b[start..]);
        match *self.b.get(start + n)? {
            b'"' => {
                self.i = start + n + 1;
                self.text.get(start..start + n).map(Some)
            }
            b'\\' => {
                self.i = self.escaped_rest(start + n)?;
                Some(None)
            }
            _ => None,
        }
    }

    /// Past the closing `"` of a string with an escape at `at`, each escape checked. Kept
    /// out of [`Reader::string`], which the usual answer's strings (no escape) go through.
    #[inline(never)]
    fn escaped_rest(&self, mut at: usize) -> Option<usize> {
        loop {
            match *self.b.get(at)? {
                b'"' => return Some(at + 1),
                b'\\' => at = self.escape(at + 1)?,
                _ => return None,
            }
            at += super::json_out::plain_len(&self.b[at..]);
        }
    }

    /// Past the escape whose `\\` is just before `at`, as serde_json reads it into a
    /// string: one of `"\\/bfnrt`, or `u` and four hex digits, a surrogate only as the
    /// first of a pair.
    fn escape(&self, at: usize) -> Option<usize> {
        match *self.b.get(at)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
            b'u' => match self.hex4(at + 1)? {
                0xD800..=0xDBFF => {
                    let low = self.b.get(at + 5..at + 7).filter(|u| *u == b"\\u");
                    let low = low.and_then(|_| self.hex4(at + 7))?;
                    (0xDC00..=0xDFFF).contains(&low).then_some(at + 11)
                }
                0xDC00..=0xDFFF => None,
                _ => Some(at + 5),
            },
            _ => None,
        }
    }

    /// The four hex digits at `at`.
    fn hex4(&self, at: usize) -> Option<u16> {
        let digits = self.b.get(at..at + 4)?;
        digits.iter().try_fold(0u16, |n, &d| {
            let v = (d as char).to_digit(16)?;
            Some(n << 4 | v as u16)
        })
    }

    /// Any value, inside `depth` containers.
    fn any(&mut self, depth: usize) -> Option<Val<'a>> {
        match *self.b.get(self.i)? {
            b'"' => {
                self.i += 1;
                Some(self.string()?.map_or(Val::Esc, Val::Str))
            }
            b'{' => {
                self.container(depth, b'}', true)?;
                Some(Val::Obj)
            }
            b'[' => {
                self.container(depth, b']', false)?;
                Some(Val::Arr)
            }
            b't' => self.literal(b"true", Val::Bool(true)),
            b'f' => self.literal(b"false", Val::Bool(false)),
            b'n' => self.literal(b"null", Val::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object or array here, checked and passed over.
    fn container(&mut self, depth: usize, close: u8, keyed: bool) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            if keyed {
                self.eat(b'"')?;
                self.string()?;
                self.ws();
                self.eat(b':')?;
                self.ws();
            }
            self.any(depth + 1)?;
            self.ws();
            match *self.b.get(self.i)? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8], v: Val<'a>) -> Option<Val<'a>> {
        self.b[self.i..].starts_with(word).then(|| {
            self.i += word.len();
            v
        })
    }

    /// A number, by RFC 8259's grammar (as serde_json reads it).
    fn number(&mut self) -> Option<Val<'a>> {
        let negative = self.eat(b'-').is_some();
        let int_start = self.i;
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let int_end = self.i;
        let mut plain = !negative;
        if self.eat(b'.').is_some() {
            self.some_digits()?;
            plain = false;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
            plain = false;
        }
        if !plain || int_end - int_start > 19 {
            return Some(Val::Num);
        }
        let n = self.b[int_start..int_end]
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        Some(Val::Int(n))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
pub mod gen {
    /// Ids as upstreams write them, and otherwise: strings, integers, numbers that are not
    /// plain integers (serde_json writes their text its own way), an escape, `null`, an
    /// object.
    pub const IDS: &[&str] = &[
        "\"f1\"",
        "\"f2\"",
        "7",
        "12",
        "\"9\"",
        "1.5",
        "-2",
        "null",
        "\"\"",
        "{}",
        "\"a\\\"b\"",
        "18446744073709551616",
    ];

    /// Texts of every kind a member might hold: plain, empty, non-ASCII, with an escape,
    /// and values that are not strings.
    pub const TEXTS: &[&str] = &[
        "\"notes\"",
        "\"txt\"",
        "\"a@b\"",
        "\"\"",
        "null",
        "5",
        "\"é\"",
        "\"x\\ny\"",
        "[]",
    ];

    /// A small seeded generator of JSON objects, most of them valid, some broken, for tests
    /// that hold a reader built on [`Reader`](super::Reader) to a reader of the JSON tree.
    pub struct Gen {
        state: u64,
        /// The keys members are given (quoted), at every depth.
        keys: &'static [&'static str],
    }

    impl Gen {
        pub fn new(seed: u64, keys: &'static [&'static str]) -> Gen {
            Gen {
                state: seed | 1,
                keys,
            }
        }

        /// A number below `n`.
        pub fn next(&mut self, n: usize) -> usize {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            (self.state % n as u64) as usize
        }

        pub fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
            from[self.next(from.len())]
        }

        /// Any JSON value (a scalar, an object of the keys, or an array), onto `out`.
        pub fn value(&mut self, out: &mut String, depth: usize) {
            const SCALARS: &[&str] = &[
                "\"v\"",
                "\"\"",
                "\"é ü\"",
                "\"a\\\"b\"",
                "\"a\\u0041\"",
                "\"\\u00e9 \\/\\n\"",
                "\"\\x\"",
                "\"a\tb\"",
                "0",
                "7",
                "-3",
                "-0",
                "1.5",
                "2e3",
                "1E-2",
                "18446744073709551615",
                "18446744073709551616",
                "9999999999999999999",
                "true",
                "false",
                "null",
            ];
            match self.next(if depth > 3 { 1 } else { 5 }) {
                0..=2 => out.push_str(self.pick(SCALARS)),
                3 => self.object(out, depth + 1),
                _ => {
                    out.push('[');
                    for i in 0..self.next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.value(out, depth + 1);
                    }
                    out.push(']');
                }
            }
        }

        pub fn object(&mut self, out: &mut String, depth: usize) {
            const WS: &[&str] = &["", "", " ", "\n\t", "\r\n "];
            out.push('{');
            for i in 0..self.next(self.keys.len() + 2) {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(self.pick(WS));
                out.push_str(self.pick(self.keys));
                out.push_str(self.pick(WS));
                out.push(':');
                out.push_str(self.pick(WS));
                self.value(out, depth);
            }
            out.push('}');
        }

        /// A member's value nothing reads: any JSON now and then (escapes included), else a
        /// plain one.
        pub fn other(&mut self) -> String {
            if self.next(4) > 0 {
                return self
                    .pick(&["\"x\"", "0", "true", "null", "[1,{}]", "\"a\\nb\""])
                    .into();
            }
            let mut v = String::new();
            self.value(&mut v, 3);
            v
        }

        /// An object, broken one time in three (a byte dropped, one put in, or the end cut).
        pub fn body(&mut self) -> String {
            let mut s = String::new();
            self.object(&mut s, 1);
            self.break_sometimes(s)
        }

        /// `s`, broken one time in three.
        pub fn break_sometimes(&mut self, mut s: String) -> String {
            let at = self.next(s.len() + 1);
            if !s.is_char_boundary(at) {
                return s;
            }
            match self.next(9) {
                0 if at < s.len() && s.is_char_boundary(at + 1) => {
                    s.remove(at);
                }
                1 => s.insert_str(at, self.pick(&[",", "}", "]", "\"", ":", "x", "1"])),
                2 => s.truncate(at),
                _ => {}
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn named_members_found_and_containers_entered_or_passed_over() {
        let body = br#"{"a":{"x":1,"y":2},"b":[1,2],"a":"s","c":{"a":[{"k":true}]},"d":[3,{}]}"#;
        let mut r = Reader::new(body).unwrap();
        assert_eq!(r.next_named("a"), Some(true));
        assert_eq!(r.object_or_skip(), Some(true));
        assert_eq!(r.next_named("y"), Some(true));
        assert_eq!(r.value(), Some(Val::Int(2)));
        assert_eq!(r.next_named("x"), Some(false));
        // `b` passed over; the second `a` found.
        assert_eq!(r.next_named("a"), Some(true));
        assert_eq!(r.object_or_skip(), Some(false));
        // The string was passed over: the next key follows; an object is passed over whole.
        assert_eq!(r.next_key(), Some(Some("c")));
        assert_eq!(r.array_or_skip(), Some(false));
        assert_eq!(r.next_key(), Some(Some("d")));
        assert_eq!(r.array_or_skip(), Some(true));
        assert_eq!(r.next_item(), Some(true));
        assert_eq!(r.value(), Some(Val::Int(3)));
        assert_eq!(r.next_item(), Some(true));
        assert_eq!(r.object_or_skip(), Some(true));
        assert_eq!(r.next_named("a"), Some(false));
        assert_eq!(r.next_item(), Some(false));
        assert_eq!(r.next_named("a"), Some(false));
        assert_eq!(r.finish(), Some(()));
        // A body broken inside what is passed over is declined there.
        let mut r = Reader::new(br#"{"b":[1,,2],"a":1}"#).unwrap();
        assert_eq!(r.next_named("a"), None);
        let mut r = Reader::new(br#"{"a":{"x":}}"#).unwrap();
        assert_eq!(r.next_named("a"), Some(true));
        assert_eq!(r.array_or_skip(), None);
    }

    /// What the reader reads of a value: an object's members and an array's values read by
    /// entering them, every other value as [`Val`].
    #[derive(Debug, PartialEq)]
    enum Read<'a> {
        Val(Val<'a>),
        Obj(Vec<(&'a str, Read<'a>)>),
        Arr(Vec<Read<'a>>),
    }

    fn read<'a>(r: &mut Reader<'a>) -> Option<Read<'a>> {
        if r.object()? {
            return members(r).map(Read::Obj);
        }
        if r.array()? {
            let mut items = Vec::new();
            while r.next_item()? {
                items.push(read(r)?);
            }
            return Some(Read::Arr(items));
        }
        r.value().map(Read::Val)
    }

    fn members<'a>(r: &mut Reader<'a>) -> Option<Vec<(&'a str, Read<'a>)>> {
        let mut out = Vec::new();
        while let Some(k) = r.next_key()? {
            out.push((k, read(r)?));
        }
        Some(out)
    }

    fn all(body: &str) -> Option<Vec<(&str, Read<'_>)>> {
        let mut r = Reader::new(body.as_bytes())?;
        let out = members(&mut r)?;
        r.finish()?;
        Some(out)
    }

    fn v(v: Val<'_>) -> Read<'_> {
        Read::Val(v)
    }

    #[test]
    fn reads_members_in_place() {
        let body = r#" { "a" : "x" , "b":0,"c":-1,"d":1.5,"e":18446744073709551615,
            "f":9999999999999999999,"g":true,"h":false,"i":null,"j":{"k":[1,{"l":[]}],"m":{}},"n":[] }
        "#;
        assert_eq!(
            all(body).unwrap(),
            vec![
                ("a", v(Val::Str("x"))),
                ("b", v(Val::Int(0))),
                ("c", v(Val::Num)),
                ("d", v(Val::Num)),
                ("e", v(Val::Num)),
                ("f", v(Val::Int(9_999_999_999_999_999_999))),
                ("g", v(Val::Bool(true))),
                ("h", v(Val::Bool(false))),
                ("i", v(Val::Null)),
                (
                    "j",
                    Read::Obj(vec![
                        (
                            "k",
                            Read::Arr(vec![
                                v(Val::Int(1)),
                                Read::Obj(vec![("l", Read::Arr(vec![]))])
                            ])
                        ),
                        ("m", Read::Obj(vec![]))
                    ])
                ),
                ("n", Read::Arr(vec![])),
            ]
        );
        assert_eq!(all("{}"), Some(vec![]));
        // A string with an escape is checked and passed over, wherever it stands; a key
        // with one is declined where it is to be read.
        let body = r#"{"a":"x\"y\n\u00e9\ud83d\ude00\/","b":{"c\td":["\\"]}}"#;
        let mut r = Reader::new(body.as_bytes()).unwrap();
        assert_eq!(r.next_key(), Some(Some("a")));
        assert_eq!(r.value(), Some(Val::Esc));
        assert_eq!(r.next_key(), Some(Some("b")));
        assert_eq!(r.skip(), Some(()));
        assert_eq!(r.next_key(), Some(None));
        assert_eq!(r.finish(), Some(()));
        assert_eq!(all(body), None);
        assert_eq!(all(r#"{"é":"ü"}"#), Some(vec![("é", v(Val::Str("ü")))]));
        // An object passed over by `value` is checked all the same.
        let mut r = Reader::new(br#"{"a":{"b":[1,{"c":null}]},"d":2}"#).unwrap();
        assert_eq!(r.next_key(), Some(Some("a")));
        assert_eq!(r.value(), Some(Val::Obj));
        assert_eq!(r.next_key(), Some(Some("d")));
        assert_eq!(r.value(), Some(Val::Int(2)));
        assert_eq!(r.next_key(), Some(None));
        assert_eq!(r.finish(), Some(()));
        let mut r = Reader::new(br#"{"a":{"b":1,}}"#).unwrap();
        assert_eq!(r.next_key(), Some(Some("a")));
        assert_eq!(r.value(), None);
        // A key is not an array's, nor an item an object's.
        let mut r = Reader::new(br#"{"a":[1],"b":2}"#).unwrap();
        assert_eq!(r.next_item(), None);
        let mut r = Reader::new(br#"{"a":[1],"b":2}"#).unwrap();
        assert_eq!(r.next_key(), Some(Some("a")));
        assert_eq!(r.array(), Some(true));
        assert_eq!(r.next_key(), None);
        let mut r = Reader::new(br#"{"a":[1}"#).unwrap();
        assert_eq!(r.next_key(), Some(Some("a")));
        assert_eq!(r.array(), Some(true));
        assert_eq!(r.next_item(), Some(true));
        assert_eq!(r.value(), Some(Val::Int(1)));
        assert_eq!(r.next_item(), None);
        // Not finished: the body's object has not closed.
        let mut r = Reader::new(br#"{"a":{}}"#).unwrap();
        assert_eq!(r.next_key(), Some(Some("a")));
        assert_eq!(r.object(), Some(true));
        assert_eq!(r.next_key(), Some(None));
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn declines_what_it_does_not_read_exactly() {
        for body in [
            "",
            "[]",
            r#""x""#,
            "{\"a\":\"x\ty\"}",
            r#"{"a\u0062":1}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u00e"}"#,
            r#"{"a":"\u+0e9"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ud83dx"}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            r#"{"a":"\ude00"}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a":1"#,
            r#"{"a":1} x"#,
            r#"{"a":1}}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":.5}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b":1 "c":2}}"#,
            r#"{"a":{"b":1}"#,
            r#"{"a":[}"#,
            r#"{a:1}"#,
            r#"{"a" 1}"#,
            "{\"a\":1}\u{c}",
        ] {
            assert_eq!(all(body), None, "{body:?}");
            // All but the key with an escape are refused by serde_json too.
            if !body.contains("\\u0062") {
                let object = serde_json::from_str::<serde_json::Map<String, Value>>;
                assert!(object(body).is_err(), "{body:?}");
            }
        }
        let nested = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(all(&nested(MAX_DEPTH)), None);
        assert!(all(&nested(MAX_DEPTH - 1)).is_some());
        let objects = |n: usize| format!("{}{{}}{}", "{\"a\":".repeat(n), "}".repeat(n));
        assert!(all(&objects(MAX_DEPTH - 1)).is_some());
        assert_eq!(all(&objects(MAX_DEPTH)), None);
        assert!(Reader::new(b"{\"a\":\"\xff\"}").is_none());
    }

    fn same(read: &Read<'_>, t: &Value) -> bool {
        match read {
            Read::Obj(members) => {
                let Some(t) = t.as_object() else {
                    return false;
                };
                // A key given twice is kept once by the tree, with its last value.
                let mut last = std::collections::HashMap::new();
                for (k, v) in members {
                    last.insert(*k, v);
                }
                last.len() == t.len()
                    && last
                        .iter()
                        .all(|(k, v)| t.get(*k).is_some_and(|t| same(v, t)))
            }
            Read::Arr(items) => t.as_array().is_some_and(|t| {
                t.len() == items.len() && items.iter().zip(t).all(|(v, t)| same(v, t))
            }),
            Read::Val(v) => match *v {
                Val::Null => t.is_null(),
                Val::Bool(b) => t.as_bool() == Some(b),
                Val::Int(n) => t.is_u64() && t.as_u64() == Some(n),
                Val::Num => t.is_number() && (t.as_u64().is_none() || t.to_string().len() > 19),
                Val::Str(s) => t.as_str() == Some(s),
                Val::Esc => t.is_string(),
                Val::Obj => t.is_object(),
                Val::Arr => t.is_array(),
            },
        }
    }

    /// Every body taken reads as serde_json reads it (the same keys, each with the value
    /// serde_json keeps), and nothing is taken that serde_json refuses.
    #[test]
    fn what_it_takes_serde_json_reads_the_same() {
        let mut g = super::gen::Gen::new(
            0x2545_f491_4f6c_dd1d,
            &["\"id\"", "\"name\"", "\"k\"", "\"é\"", "\"\""],
        );
        let (mut taken, mut declined) = (0, 0);
        for _ in 0..20_000 {
            let body = g.body();
            let Some(got) = all(&body) else {
                declined += 1;
                continue;
            };
            taken += 1;
            let tree: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
            assert!(same(&Read::Obj(got), &tree), "{body:?}");
        }
        assert!(
            taken > 5_000 && declined > 5_000,
            "{taken} taken, {declined} declined"
        );
    }
}
