//! The file name in a multipart part's `Content-Disposition` header, both ways.
//!
//! Reading accepts what real clients send: `filename="..."` with raw UTF-8 (browsers,
//! `requests`, kibana-py), backslash-escaped quotes, unquoted tokens, and the RFC 5987 /
//! RFC 6266 `filename*=UTF-8''...` form, which wins when both are present.
//! Writing puts raw UTF-8 inside a quoted-string (as browsers and `requests` do) with `"`
//! and `\` backslash-escaped, which the multipart parsers of the upstreams (Java's
//! fileupload, hapi, multer) turn back into the original name; CR and LF, which no
//! quoting can carry, are percent-encoded, so a name can never end the header early.

/// The parameters of a `Content-Disposition` value that casegate cares about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Disposition {
    /// `name`: the form field's name.
    pub name: Option<String>,
    /// `filename*` if present and decodable, else `filename`.
    pub filename: Option<String>,
}

/// Why a disposition header was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DispositionError {
    #[error("the Content-Disposition header is not valid UTF-8")]
    NotUtf8,
    #[error("the Content-Disposition filename* parameter cannot be decoded")]
    BadExtValue,
}

/// Parses a `Content-Disposition` header value. Allocates only for the values it keeps
/// (it runs for every part of every upload).
pub fn parse(raw: &[u8]) -> Result<Disposition, DispositionError> {
    match plain(raw) {
        Some((name, filename)) => Ok(Disposition {
            name: Some(text(raw, name).to_owned()),
            filename: filename.map(|f| text(raw, f).to_owned()),
        }),
        None => parse_any(raw),
    }
}

/// A part's field name, as [`parse_field`] reads it: a slice of the header's own bytes
/// (no copy) when it is written plainly. Always UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldName(bytes::Bytes);

impl FieldName {
    /// Whether the name is `name` (compared as bytes: no UTF-8 check).
    pub fn is(&self, name: &str) -> bool {
        self.0 == name.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        // UTF-8 by construction (a span `plain` checked, or a `String`): the fallback is
        // never taken.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for FieldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`parse`] of a part's header for its field name (`""` when it has none) and file
/// name: the name is not copied out of `raw` when written plainly (three allocations an
/// upload of three parts).
pub fn parse_field(raw: &bytes::Bytes) -> Result<(FieldName, Option<String>), DispositionError> {
    match plain(raw) {
        Some((name, filename)) => Ok((
            FieldName(raw.slice(name)),
            filename.map(|f| text(raw, f).to_owned()),
        )),
        None => {
            let d = parse_any(raw)?;
            Ok((FieldName(d.name.unwrap_or_default().into()), d.filename))
        }
    }
}

/// The text of a span [`plain`] found (checked UTF-8 there).
fn text(raw: &[u8], span: std::ops::Range<usize>) -> &str {
    std::str::from_utf8(&raw[span]).unwrap_or_default()
}

/// Where a value lies in a header's bytes.
type Span = std::ops::Range<usize>;

/// The form every client library writes, `form-data; name="NAME"` and after it at most
/// `; filename="FILE"`, the values without `"` or `\` inside, read in one pass (a part's
/// disposition through [`parse_any`] costs about 800 instructions, most of them in its
/// trims and key matching): the spans of the name and the file name, each UTF-8.
/// Anything else is None, for [`parse_any`], which reads these the same (the test holds
/// the two together).
fn plain(raw: &[u8]) -> Option<(Span, Option<Span>)> {
    /// The span of a quoted value starting at `at`, up to its closing quote.
    fn quoted(raw: &[u8], at: usize) -> Option<Span> {
        let s = &raw[at..];
        let end = find(s, |b| b == b'"' || b == b'\\')?;
        if s[end] != b'"' {
            return None;
        }
        std::str::from_utf8(&s[..end]).ok()?;
        Some(at..at + end)
    }
    const NAME: &[u8] = b"form-data; name=\"";
    const FILENAME: &[u8] = b"; filename=\"";
    let name = quoted(raw, raw.starts_with(NAME).then_some(NAME.len())?)?;
    let rest = &raw[name.end + 1..];
    let filename = match rest.strip_prefix(FILENAME) {
        Some(_) => {
            let file = quoted(raw, name.end + 1 + FILENAME.len())?;
            (file.end + 1 == raw.len()).then_some(Some(file))?
        }
        None if rest.is_empty() => None,
        None => return None,
    };
    Some((name, filename))
}

/// [`parse`] for any form: parameters in any order and case, tokens, escapes, spaces,
/// `filename*`.
fn parse_any(raw: &[u8]) -> Result<Disposition, DispositionError> {
    let text = std::str::from_utf8(raw).map_err(|_| DispositionError::NotUtf8)?;
    let mut out = Disposition::default();
    let mut ext_filename = None;
    // Skip the disposition type (`form-data`).
    let mut rest = match after(text, find(text.as_bytes(), |b| b == b';')) {
        Some(r) => r,
        None => return Ok(out),
    };
    loop {
        rest = trim_start(rest);
        if rest.is_empty() {
            break;
        }
        let eq = match find(rest.as_bytes(), |b| b == b'=' || b == b';') {
            Some(i) if rest.as_bytes()[i] == b'=' => i,
            Some(i) => {
                rest = &rest[i + 1..];
                continue;
            }
            None => break,
        };
        let key = Key::of(trim(&rest[..eq]));
        rest = trim_start(&rest[eq + 1..]);
        let value: Value<'_>;
        if let Some(quoted) = rest.strip_prefix('"') {
            // The closing quote is the first `"` not escaped by a backslash.
            let bytes = quoted.as_bytes();
            let mut i = 0;
            let mut escaped = false;
            let mut closed = None;
            while let Some(j) = find(&bytes[i..], |b| b == b'"' || b == b'\\') {
                i += j;
                if bytes[i] == b'"' {
                    closed = Some(i);
                    break;
                }
                escaped = true;
                i += 2;
                if i >= bytes.len() {
                    break;
                }
            }
            let inner = &quoted[..closed.unwrap_or(quoted.len())];
            value = Value::Quoted { inner, escaped };
            rest = match closed {
                Some(end) => {
                    let tail = &quoted[end + 1..];
                    after(tail, find(tail.as_bytes(), |b| b == b';')).unwrap_or("")
                }
                None => "",
            };
        } else {
            let end = find(rest.as_bytes(), |b| b == b';');
            value = Value::Token(trim(&rest[..end.unwrap_or(rest.len())]));
            rest = after(rest, end).unwrap_or("");
        }
        match key {
            Key::Name if out.name.is_none() => out.name = Some(value.text()),
            Key::Filename if out.filename.is_none() => out.filename = Some(value.text()),
            Key::ExtFilename if ext_filename.is_none() => {
                ext_filename = Some(decode_ext_value(&value.text())?);
            }
            _ => {}
        }
    }
    if ext_filename.is_some() {
        out.filename = ext_filename;
    }
    Ok(out)
}

/// The first byte of `s` that `hit` picks. A plain loop: a disposition's pieces are a few
/// bytes each, where `memchr`'s set-up costs more than the search (the loops took about
/// 90 instructions off each part).
fn find(s: &[u8], hit: impl Fn(u8) -> bool) -> Option<usize> {
    s.iter().position(|&b| hit(b))
}

/// What follows the ASCII byte at `at` in `s`, if there is one.
fn after(s: &str, at: Option<usize>) -> Option<&str> {
    at.map(|i| &s[i + 1..])
}

/// Whitespace as `char::is_whitespace` has it, among ASCII bytes.
fn is_ascii_space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | b' ')
}

/// `str::trim_start`, byte by byte over ASCII; the char-aware trim takes over at the first
/// byte that is not (Unicode's spaces beyond ASCII, such as U+00A0, are trimmed too).
fn trim_start(s: &str) -> &str {
    let skip = s.bytes().take_while(|b| is_ascii_space(*b)).count();
    let s = &s[skip..];
    match s.as_bytes().first() {
        Some(b) if !b.is_ascii() => s.trim_start(),
        _ => s,
    }
}

/// `str::trim`, as [`trim_start`] does it, at both ends.
fn trim(s: &str) -> &str {
    let s = trim_start(s);
    let keep = s.len() - s.bytes().rev().take_while(|b| is_ascii_space(*b)).count();
    let s = &s[..keep];
    match s.as_bytes().last() {
        Some(b) if !b.is_ascii() => s.trim_end(),
        _ => s,
    }
}

/// The parameters [`parse`] keeps, matched without regard to ASCII case.
enum Key {
    Name,
    Filename,
    ExtFilename,
    Other,
}

impl Key {
    fn of(key: &str) -> Key {
        if key.eq_ignore_ascii_case("name") {
            Key::Name
        } else if key.eq_ignore_ascii_case("filename") {
            Key::Filename
        } else if key.eq_ignore_ascii_case("filename*") {
            Key::ExtFilename
        } else {
            Key::Other
        }
    }
}

/// A parameter's value as it stands in the header.
enum Value<'a> {
    /// Between quotes (the closing one excluded, or to the end when it is missing);
    /// `escaped`: it holds a backslash, which keeps the character after it.
    Quoted { inner: &'a str, escaped: bool },
    /// Unquoted, trimmed.
    Token(&'a str),
}

impl Value<'_> {
    fn text(&self) -> String {
        match *self {
            Value::Token(t) => t.to_string(),
            Value::Quoted {
                inner,
                escaped: false,
            } => inner.to_string(),
            Value::Quoted {
                inner,
                escaped: true,
            } => {
                let mut v = String::with_capacity(inner.len());
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => v.extend(chars.next()),
                        c => v.push(c),
                    }
                }
                v
            }
        }
    }
}

/// Decodes an RFC 8187 `ext-value`: `charset'lang'percent-encoded`.
fn decode_ext_value(v: &str) -> Result<String, DispositionError> {
    let mut parts = v.splitn(3, '\'');
    let charset = parts.next().unwrap_or_default().to_ascii_lowercase();
    let _lang = parts.next().ok_or(DispositionError::BadExtValue)?;
    let encoded = parts.next().ok_or(DispositionError::BadExtValue)?;
    let bytes = percent_decode(encoded).ok_or(DispositionError::BadExtValue)?;
    match charset.as_str() {
        "utf-8" => String::from_utf8(bytes).map_err(|_| DispositionError::BadExtValue),
        "iso-8859-1" => Ok(bytes.iter().map(|&b| b as char).collect()),
        _ => Err(DispositionError::BadExtValue),
    }
}

/// Strict percent-decoding: every `%` must start a two-digit escape (the crate's decoder
/// keeps malformed escapes as they are).
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let valid = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| {
            b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        });
    valid.then(|| percent_encoding::percent_decode_str(s).collect())
}

/// RFC 8187 `attr-char`s stay as they are in an `ext-value`; everything else is escaped.
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A download's `Content-Disposition` (RFC 6266): `inline` or `attachment`, the name in
/// `filename` as plain ASCII (`"`, `\`, controls and non-ASCII as `_`), and, when that
/// is not the name itself, the exact name in `filename*=UTF-8''...`.
pub fn download_header(inline: bool, name: &str) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let fallback: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '_',
        })
        .collect();
    if fallback == name {
        return format!("{kind}; filename=\"{fallback}\"");
    }
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR_CHAR);
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Appends `value` as the inside of a quoted `Content-Disposition` parameter: `"` and `\`
/// backslash-escaped, control characters (CR, LF, NUL, ...) percent-encoded (`%0D`);
/// everything else verbatim (UTF-8). A header can carry none of them raw.
pub fn push_quoted(out: &mut impl bytes::BufMut, value: &str) {
    let bytes = value.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b if b < 0x20 || b == 0x7f => percent_encoding::percent_encode_byte(b).as_bytes(),
            _ => continue,
        };
        out.put_slice(&bytes[plain..i]);
        out.put_slice(escaped);
        plain = i + 1;
    }
    out.put_slice(&bytes[plain..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Disposition {
        parse(s.as_bytes()).unwrap()
    }

    /// What [`plain`] reads, as a [`Disposition`].
    fn fast(raw: &[u8]) -> Option<Disposition> {
        plain(raw).map(|(name, filename)| Disposition {
            name: Some(text(raw, name).to_owned()),
            filename: filename.map(|f| text(raw, f).to_owned()),
        })
    }

    /// [`parse_field`] reads what [`parse`] reads, the name as a slice of the header only
    /// where [`plain`] took it.
    fn field_as_parsed(raw: &[u8]) {
        let shared = bytes::Bytes::copy_from_slice(raw);
        let text = String::from_utf8_lossy(raw);
        match (parse(raw), parse_field(&shared)) {
            (Ok(d), Ok((name, filename))) => {
                assert_eq!(name.as_str(), d.name.as_deref().unwrap_or(""), "{text:?}");
                assert_eq!(filename, d.filename, "{text:?}");
                // (An empty name is no copy either way.)
                if !name.0.is_empty() {
                    let inside = shared.as_ptr_range().contains(&name.0.as_ptr());
                    assert_eq!(inside, plain(raw).is_some(), "{text:?}");
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "{text:?}"),
            (a, b) => panic!("{text:?}: {a:?} against {b:?}"),
        }
    }

    #[test]
    fn the_usual_form_is_read_as_the_general_parser_reads_it() {
        for usual in [
            r#"form-data; name="file"; filename="screenshot.png""#,
            r#"form-data; name="case_id""#,
            r#"form-data; name="file"; filename="""#,
            "form-data; name=\"file\"; filename=\"Prüfbericht ü.pdf\"",
        ] {
            let fast = fast(usual.as_bytes());
            assert!(fast.is_some(), "{usual}");
            assert_eq!(fast, parse_any(usual.as_bytes()).ok(), "{usual}");
            field_as_parsed(usual.as_bytes());
        }
        // Every text of up to four pieces from an alphabet of what a disposition may and
        // may not hold, inside and around the usual form.
        let alphabet: [&[u8]; 11] = [
            b"a",
            b"\"",
            b"\\",
            b";",
            b" ",
            b"=",
            b"\t",
            "é".as_bytes(),
            b"\xff",
            b"*",
            b"F",
        ];
        let mut pieces: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last = pieces.clone();
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|p| alphabet.iter().map(move |a| [p.as_slice(), a].concat()))
                .collect();
            pieces.extend(last.iter().cloned());
        }
        let frames: [(&[u8], &[u8]); 7] = [
            (b"form-data; name=\"", b""),
            (b"form-data; name=\"", b"\""),
            (b"form-data; name=\"x\"", b""),
            (b"form-data; name=\"x\"; filename=\"", b""),
            (b"form-data; name=\"x\"; filename=\"", b"\""),
            (b"form-data; name=\"x\"; filename=\"y\"", b""),
            (b"", b"form-data; name=\"x\""),
        ];
        let mut taken = 0;
        for (before, after) in frames {
            for piece in &pieces {
                let raw = [before, piece.as_slice(), after].concat();
                field_as_parsed(&raw);
                if let Some(fast) = fast(&raw) {
                    taken += 1;
                    let text = String::from_utf8_lossy(&raw);
                    assert_eq!(Ok(fast), parse_any(&raw), "{text:?}");
                }
            }
        }
        assert!(taken > 1000, "the usual form was read {taken} times");
    }

    #[test]
    fn plain_quoted_and_unquoted() {
        let d = p(r#"form-data; name="file"; filename="a b.txt""#);
        assert_eq!(d.name.as_deref(), Some("file"));
        assert_eq!(d.filename.as_deref(), Some("a b.txt"));
        let d = p("form-data; name=file; filename=x.pdf");
        assert_eq!(d.name.as_deref(), Some("file"));
        assert_eq!(d.filename.as_deref(), Some("x.pdf"));
    }

    #[test]
    fn raw_utf8_and_escapes_and_semicolons() {
        let d = p("form-data; name=\"file\"; filename=\"Prüfbericht ü 2026.pdf\"");
        assert_eq!(d.filename.as_deref(), Some("Prüfbericht ü 2026.pdf"));
        let d = p(r#"form-data; name="file"; filename="a\"b;c.txt""#);
        assert_eq!(d.filename.as_deref(), Some("a\"b;c.txt"));
    }

    #[test]
    fn ext_value_wins() {
        let d = p("form-data; name=\"file\"; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt");
        assert_eq!(d.filename.as_deref(), Some("€ rates.txt"));
        let d = p("form-data; filename*=iso-8859-1'en'%A3.txt; name=file");
        assert_eq!(d.filename.as_deref(), Some("£.txt"));
        assert_eq!(d.name.as_deref(), Some("file"));
        assert!(parse(b"form-data; filename*=UTF-8''%ZZ").is_err());
        assert!(parse(b"form-data; filename*=UTF-8''%FF").is_err());
    }

    #[test]
    fn odd_quoting_and_key_case() {
        // Keys in any case; the first of a repeated parameter wins.
        let d = p(r#"form-data; NAME="file"; FileName="a.txt"; filename="b.txt""#);
        assert_eq!(d.name.as_deref(), Some("file"));
        assert_eq!(d.filename.as_deref(), Some("a.txt"));
        // A backslash keeps the character after it, also one of several bytes.
        let d = p("form-data; name=\"file\"; filename=\"\\ü\\\\x\\y.txt\"");
        assert_eq!(d.filename.as_deref(), Some("ü\\xy.txt"));
        // Text after the closing quote up to the next `;` is ignored.
        let d = p(r#"form-data; filename="a.txt" junk; name="f""#);
        assert_eq!(d.filename.as_deref(), Some("a.txt"));
        assert_eq!(d.name.as_deref(), Some("f"));
        // An unclosed quote runs to the end, `;` included; a trailing backslash is dropped.
        let d = p(r#"form-data; name="f"; filename="a;b.txt"#);
        assert_eq!(d.filename.as_deref(), Some("a;b.txt"));
        let d = p(r#"form-data; name="f"; filename="a\"#);
        assert_eq!(d.filename.as_deref(), Some("a"));
        // A parameter without a value is skipped.
        let d = p(r#"form-data; flag; name="f""#);
        assert_eq!(d.name.as_deref(), Some("f"));
    }

    #[test]
    fn whitespace_is_trimmed_as_str_trims_it() {
        // ASCII whitespace in all its kinds, and Unicode's beyond it, around keys and
        // values; a space inside a key keeps it from matching.
        let d = p("form-data;\x0bname=\x0cf\r;\tfilename = x.txt \n");
        assert_eq!(d.name.as_deref(), Some("f"));
        assert_eq!(d.filename.as_deref(), Some("x.txt"));
        let d = p("form-data;\u{a0}name\u{2003}=\u{a0}\"f\"; filename=\u{3000}x y\u{a0} \u{85}");
        assert_eq!(d.name.as_deref(), Some("f"));
        assert_eq!(d.filename.as_deref(), Some("x y"));
        let d = p("form-data; na\u{a0}me=f; file name=x; filename=\u{a0}");
        assert_eq!(d.name, None);
        assert_eq!(d.filename.as_deref(), Some(""));
        // Non-ASCII that is not whitespace stays, at either end of a token.
        let d = p("form-data; name=\u{e9}t\u{e9}; filename=\u{20ac}");
        assert_eq!(d.name.as_deref(), Some("\u{e9}t\u{e9}"));
        assert_eq!(d.filename.as_deref(), Some("\u{20ac}"));
        // A backslash at the very end of an unclosed quote, and before a multi-byte char.
        let d = p("form-data; name=\"a\\\u{fc}\"; filename=\"b\\");
        assert_eq!(d.name.as_deref(), Some("a\u{fc}"));
        assert_eq!(d.filename.as_deref(), Some("b"));
    }

    #[test]
    fn name_is_not_found_inside_filename() {
        let d = p(r#"form-data; filename="x.txt""#);
        assert_eq!(d.name, None);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(
            parse(b"form-data; name=\"file\"; filename=\"\xff.txt\""),
            Err(DispositionError::NotUtf8)
        );
    }

    #[test]
    fn download_headers() {
        assert_eq!(
            download_header(false, "a.txt"),
            "attachment; filename=\"a.txt\""
        );
        assert_eq!(download_header(true, "p.png"), "inline; filename=\"p.png\"");
        let h = download_header(false, "Prüfbericht ü \"1\".pdf");
        assert_eq!(
            h,
            "attachment; filename=\"Pr_fbericht _ _1_.pdf\"; filename*=UTF-8''Pr%C3%BCfbericht%20%C3%BC%20%221%22.pdf"
        );
        assert_eq!(
            parse(h.as_bytes()).unwrap().filename.as_deref(),
            Some("Prüfbericht ü \"1\".pdf")
        );
    }

    #[test]
    fn quoting_cannot_break_out() {
        let mut out = Vec::new();
        push_quoted(&mut out, "a\"\r\nContent-Type: x\\");
        assert_eq!(out, b"a\\\"%0D%0AContent-Type: x\\\\");
        let header = [
            b"form-data; name=\"file\"; filename=\"".as_slice(),
            &out,
            b"\"",
        ]
        .concat();
        assert_eq!(
            parse(&header).unwrap().filename.as_deref(),
            Some("a\"%0D%0AContent-Type: x\\")
        );
    }
}
