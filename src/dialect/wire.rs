//! Shared pieces of the dialects' wire formats: headers and content types, path segments
//! and query strings (with the `percent-encoding`, `form_urlencoded` and `mime` crates),
//! the outbound multipart body, and short messages read out of upstream errors.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::BodyEncoder;
use crate::error::Error;
use crate::upload::UploadMeta;

/// `application/json` as a header pair.
pub fn json_content_type() -> (HeaderName, HeaderValue) {
    (
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )
}

/// The request's content type, parsed.
pub fn mime(parts: &Parts) -> Option<mime::Mime> {
    content_type(parts)?.parse().ok()
}

/// Whether the request's content type is `essence` (`application/json`), parameters aside.
pub fn has_type(parts: &Parts, essence: &str) -> bool {
    // The header as it mostly comes, the essence alone, needs no parser (about 600
    // instructions a request); anything else (parameters, spaces) goes through it.
    if content_type(parts).is_some_and(|ct| ct.eq_ignore_ascii_case(essence)) {
        return true;
    }
    mime(parts).is_some_and(|m| m.essence_str().eq_ignore_ascii_case(essence))
}

/// The raw content type header, for multipart boundary extraction.
pub fn content_type(parts: &Parts) -> Option<&str> {
    parts.headers.get(http::header::CONTENT_TYPE)?.to_str().ok()
}

/// Requires `multipart/form-data` with a boundary; 415 otherwise.
/// The header is parsed once (as `multer::parse_boundary` would parse it again).
pub fn multipart_boundary(parts: &Parts) -> Result<String, Error> {
    if let Some(boundary) = content_type(parts).and_then(plain_boundary) {
        return Ok(boundary.to_owned());
    }
    let Some(m) =
        mime(parts).filter(|m| m.essence_str().eq_ignore_ascii_case("multipart/form-data"))
    else {
        return Err(Error::unsupported_media_type(
            "The request must be sent as multipart/form-data.",
        ));
    };
    m.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or_else(|| Error::bad_request("The multipart/form-data boundary is missing."))
}

/// The boundary of the form every client library sends, `multipart/form-data;
/// boundary=TOKEN` (the type in any case, one `;` and any spaces before `boundary=`, the
/// token of letters, digits, `-`, `_`, `.`, `'`, `+`), read without the `mime` parser
/// (about 2 000 instructions and two allocations per upload). Anything else (other
/// parameters, quotes, spaces after the token) is None, for the parser, which reads
/// these the same.
fn plain_boundary(content_type: &str) -> Option<&str> {
    const ESSENCE: &str = "multipart/form-data";
    let head = content_type.get(..ESSENCE.len())?;
    let rest = content_type[ESSENCE.len()..].strip_prefix(';')?;
    let rest = rest.trim_start_matches(' ');
    let name = rest.get(..9)?;
    let token = &rest[9..];
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'\'' | b'+');
    (head.eq_ignore_ascii_case(ESSENCE)
        && name.eq_ignore_ascii_case("boundary=")
        && !token.is_empty()
        && token.bytes().all(plain))
    .then_some(token)
}

/// A header value, or `None` when absent or not visible ASCII.
pub fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name)?.to_str().ok()
}

/// The token after `scheme ` in the Authorization header (scheme case-insensitive).
pub fn authorization<'a>(parts: &'a Parts, scheme: &str) -> Option<&'a str> {
    let v = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let space = v.bytes().position(|b| b == b' ')?;
    let (s, rest) = (&v[..space], &v[space + 1..]);
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// A query parameter, decoded (`application/x-www-form-urlencoded` rules); the first
/// when given twice.
pub fn query_param(parts: &Parts, name: &str) -> Option<String> {
    query_value(parts, name).map(Cow::into_owned)
}

/// The first query parameter named `name`, decoded as `application/x-www-form-urlencoded`
/// (what [`form_urlencoded::parse`] gives), borrowed from the URI when it needs no
/// decoding (a value without `%` or `+`), so a credential read on every request is not
/// copied. Only a pair whose key or value holds `%` or `+` is decoded: `parse` decoded
/// every key and value it passed (about 1 300 instructions per call for a Thalamus
/// client's `touchpoint` and `token`, asked for on every request).
pub fn query_value<'a>(parts: &'a Parts, name: &str) -> Option<Cow<'a, str>> {
    // The pairs and their `=` found by `memchr` (byte offsets of ASCII separators, so
    // the slices are whole characters), a `%` or `+` by `memchr2`: a short query's
    // characters are not searched one by one.
    let encoded = |s: &str| memchr::memchr2(b'%', b'+', s.as_bytes()).is_some();
    let mut rest = parts.uri.query()?;
    loop {
        let (pair, next) = match memchr::memchr(b'&', rest.as_bytes()) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (key, value) = match memchr::memchr(b'=', pair.as_bytes()) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        if !pair.is_empty() && (encoded(key) || key == name) {
            if !encoded(key) && !encoded(value) {
                return Some(Cow::Borrowed(value));
            }
            let decoded = form_urlencoded::parse(pair.as_bytes())
                .next()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v);
            if decoded.is_some() {
                return decoded;
            }
        }
        rest = next?;
    }
}

/// A query parameter as a positive integer: `Ok(None)` when absent, 400 when it is not one.
pub fn query_number(parts: &Parts, name: &str) -> Result<Option<u64>, Error> {
    match query_param(parts, name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(Error::bad_request(format!(
                "{name} must be a positive integer."
            ))),
        },
    }
}

/// The query string without the parameters named in `drop` (credentials); every other
/// pair is kept byte for byte, as the client sent it (a passthrough changes nothing else:
/// re-encoding would turn `flag` into `flag=` and `%20` into `+`).
pub fn query_without(query: &str, drop: &[&str]) -> String {
    let dropped = |pair: &&str| {
        form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(k, _)| drop.contains(&k.as_ref()))
    };
    query
        .split('&')
        .filter(|pair| !dropped(pair))
        .collect::<Vec<_>>()
        .join("&")
}

/// A query string from pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

/// What a path segment keeps unencoded: RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one URL path segment, borrowing `s` when nothing in it needs encoding
/// (an id in a list of thousands, a case id in an upstream path). Ids are nearly always
/// unreserved already: one pass over their bytes says so (about 3 instructions a byte,
/// where the encoder's iterator took 10 to 20 for a UUID), and only the others go through
/// the encoder.
pub fn segment(s: &str) -> Cow<'_, str> {
    if s.bytes().all(unreserved) {
        return Cow::Borrowed(s);
    }
    utf8_percent_encode(s, SEGMENT).into()
}

/// Whether `b` is one of RFC 3986's unreserved characters, which [`SEGMENT`] leaves as
/// they are.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Splits a path into its segments, percent-decoded (`+` stays `+` in paths); `None` if a
/// segment does not decode to UTF-8 or holds a `/`.
/// A segment without escapes is borrowed from the path, not copied; up to eight segments
/// (every path casegate serves) are held without an allocation.
pub fn segments(path: &str) -> Option<Segments<'_>> {
    let rest = path.strip_prefix('/')?;
    let bytes = rest.as_bytes();
    // A path is short: plain loops over its bytes, where memchr's set-up for each search
    // cost more than the search (and a `char` split decodes every character).
    let mut out = Segments::new();
    let mut start = 0;
    loop {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |i| start + i);
        let segment = &rest[start..end];
        // Without a `%` a segment is itself: nothing to decode, and no `/` in it.
        out.push(if segment.as_bytes().contains(&b'%') {
            decode_segment(segment)?
        } else {
            Cow::Borrowed(segment)
        });
        if end == bytes.len() {
            return Some(out);
        }
        start = end + 1;
    }
}

/// A path's segments, as [`segments`] gives them.
pub type Segments<'a> = smallvec::SmallVec<[Cow<'a, str>; 8]>;

/// The segments as text, for matching a path against slice patterns.
pub fn segment_strs<'a>(segs: &'a [Cow<'_, str>]) -> smallvec::SmallVec<[&'a str; 8]> {
    segs.iter().map(|seg| &**seg).collect()
}

fn decode_segment(s: &str) -> Option<Cow<'_, str>> {
    let d = percent_decode_str(s).decode_utf8().ok()?;
    (!d.as_bytes().contains(&b'/')).then_some(d)
}

/// The Kibana-style `/s/{space}` prefix split off a path.
pub fn split_space(path: &str) -> (Option<String>, &str) {
    if let Some(rest) = path.strip_prefix("/s/") {
        if let Some(i) = rest.find('/') {
            if let Some(space) = decode_segment(&rest[..i]) {
                if !space.is_empty() {
                    return (Some(space.into_owned()), &rest[i..]);
                }
            }
        }
    }
    (None, path)
}

/// A multipart upload body: text fields, the file part, and fields that may only be
/// known after the file (sent after it).
pub struct MultipartBody {
    writer: crate::codec::multipart::Writer,
    head: Bytes,
    head_len: u64,
    late: LateFields,
}

/// Fields to send after the file part, from what arrived late.
pub type LateFields = Box<dyn Fn(&UploadMeta) -> Vec<(&'static str, String)> + Send>;

impl MultipartBody {
    /// `fields` go before the file part, `late` after it. Returns the encoder and
    /// the request's Content-Type header value.
    pub fn new(
        fields: &[(&str, &str)],
        file_field: &str,
        filename: &str,
        content_type: &str,
        late: LateFields,
    ) -> (Self, HeaderValue) {
        let writer = crate::codec::multipart::Writer::new();
        let size = fields
            .iter()
            .map(|(name, value)| writer.part_overhead() + name.len() + value.len())
            .sum::<usize>()
            + writer.part_overhead()
            + file_field.len()
            + filename.len()
            + content_type.len();
        let mut head = bytes::BytesMut::with_capacity(size);
        for (name, value) in fields {
            writer.text(&mut head, name, value);
        }
        writer.file_start(&mut head, file_field, filename, content_type);
        // From the `String` itself: `from_str` would copy it.
        let ct = HeaderValue::try_from(writer.content_type())
            .unwrap_or_else(|_| HeaderValue::from_static("multipart/form-data"));
        let head = head.freeze();
        let head_len = head.len() as u64;
        (
            MultipartBody {
                writer,
                head,
                head_len,
                late,
            },
            ct,
        )
    }
}

impl BodyEncoder for MultipartBody {
    fn head(&mut self) -> Bytes {
        std::mem::take(&mut self.head)
    }

    fn data(&mut self, chunk: Bytes) -> Bytes {
        chunk
    }

    fn tail(&mut self, late: &UploadMeta) -> Bytes {
        self.tail_bytes(late).freeze()
    }

    fn len(&self, file_len: u64) -> u64 {
        let tail = self.tail_bytes(&UploadMeta::default());
        self.head_len + file_len + tail.len() as u64
    }
}

impl MultipartBody {
    /// What follows the file: the end of its part, the late fields, the close delimiter.
    fn tail_bytes(&self, late: &UploadMeta) -> bytes::BytesMut {
        let fields = (self.late)(late);
        let size = fields
            .iter()
            .map(|(name, value)| self.writer.part_overhead() + name.len() + value.len())
            .sum::<usize>()
            + self.writer.part_overhead();
        let mut out = bytes::BytesMut::with_capacity(size);
        self.writer.file_end(&mut out);
        for (name, value) in fields {
            self.writer.text(&mut out, name, &value);
        }
        self.writer.close(&mut out);
        out
    }
}

/// No late fields.
pub fn no_late() -> LateFields {
    Box::new(|_| Vec::new())
}

/// A message out of an upstream answer: at most 500 characters, single line.
pub fn short_message(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    Some(one_line)
}

/// A JSON string field of an object.
pub fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(str::to_string)
}

/// `serde_json::from_slice`, with the bytes checked as UTF-8 once, whole, instead of string
/// by string (serde_json checks each string it keeps: a dozen checks for a small record).
/// Bytes that are not UTF-8 go to `from_slice` as they are: it accepts them inside the
/// strings it skips, and so, still, does this.
pub fn from_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// `T` read from a JSON object and nothing else. A derived struct also takes a JSON
/// array, member by member in order, where a reader of a tree sees no members at all: the
/// typed readers of answers (which must agree with the tree readers) refuse that instead.
pub struct Obj<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(std::marker::PhantomData)).map(Obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        http::Request::builder()
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn a_content_type_is_matched_as_the_parser_matches_it() {
        for ct in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json ; charset=utf-8",
            " application/json",
            "application/json;",
            "application/json; =x",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "text/json",
            "",
        ] {
            let mut p = parts("/");
            p.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_str(ct).unwrap(),
            );
            let parsed = ct
                .parse::<mime::Mime>()
                .is_ok_and(|m| m.essence_str().eq_ignore_ascii_case("application/json"));
            assert_eq!(has_type(&p, "application/json"), parsed, "{ct:?}");
        }
        assert!(!has_type(&parts("/"), "application/json"));
    }

    #[test]
    fn json_is_read_as_serde_json_reads_bytes() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Kept {
            id: String,
        }
        let kept = |b: &[u8]| from_json::<Kept>(b).map_err(|e| e.classify());
        assert_eq!(
            kept(b"{\"id\":\"\\u00e9t\\u00e9 \xc3\xa9\",\"n\":1}"),
            Ok(Kept {
                id: "\u{e9}t\u{e9} \u{e9}".into()
            })
        );
        // Not UTF-8 in a string it skips: read, as `from_slice` reads it.
        let skipped = b"{\"id\":\"a\",\"junk\":\"\xff\xfe\"}";
        assert_eq!(kept(skipped), Ok(Kept { id: "a".into() }));
        assert!(serde_json::from_slice::<Kept>(skipped).is_ok());
        // In a string it keeps, or anywhere in a tree: refused, as by `from_slice`.
        assert_eq!(
            kept(b"{\"id\":\"\xff\"}"),
            Err(serde_json::error::Category::Syntax)
        );
        assert!(from_json::<serde_json::Value>(skipped).is_err());
        assert_eq!(
            from_json::<serde_json::Value>(br#" [1, "x", {"y": null}] "#).ok(),
            serde_json::from_slice(br#" [1, "x", {"y": null}] "#).ok()
        );
    }

    #[test]
    fn multipart_boundaries() {
        let with = |ct: Option<&str>| {
            let mut b = http::Request::builder().uri("/");
            if let Some(ct) = ct {
                b = b.header(http::header::CONTENT_TYPE, ct);
            }
            multipart_boundary(&b.body(()).unwrap().into_parts().0).map_err(|e| e.status.as_u16())
        };
        assert_eq!(
            with(Some("multipart/form-data; boundary=abc")),
            Ok("abc".into())
        );
        assert_eq!(
            with(Some("Multipart/Form-Data; charset=utf-8; BOUNDARY=\"a b\"")),
            Ok("a b".into())
        );
        // The forms read without the parser, and ones close to them that go to it: each
        // is read as the parser reads it.
        for (ct, boundary) in [
            (
                "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
                Some("----WebKitFormBoundary7MA4YWxkTrZu0gW"),
            ),
            (
                "MULTIPART/form-data;boundary=a.b_c'd+e-1",
                Some("a.b_c'd+e-1"),
            ),
            ("multipart/form-data;   Boundary=x", Some("x")),
            (
                "multipart/form-data; boundary=abc; charset=utf-8",
                Some("abc"),
            ),
            ("multipart/form-data; boundary=\"abc\"", Some("abc")),
            ("multipart/form-data; boundary=abc ", None),
            ("multipart/form-data ; boundary=abc", None),
            ("multipart/form-data; boundary=a/b", None),
            ("multipart/form-data; boundary=", Some("")),
            ("multipart/form-data; boundaries=abc", None),
            ("multipart/form-datax; boundary=abc", None),
            ("multipart/form-data, boundary=abc", None),
        ] {
            let parsed = with(Some(ct)).ok();
            assert_eq!(parsed.as_deref(), boundary, "{ct}");
            let fast = plain_boundary(ct);
            assert!(fast.is_none() || fast == parsed.as_deref(), "{ct}");
        }
        assert!(plain_boundary("multipart/form-data; boundary=abc").is_some());
        assert!(plain_boundary("multipart/form-data; boundary=\"abc\"").is_none());
        assert_eq!(with(Some("multipart/form-data")), Err(400));
        assert_eq!(with(Some("multipart/mixed; boundary=abc")), Err(415));
        assert_eq!(with(Some("application/json")), Err(415));
        assert_eq!(with(Some("not a type")), Err(415));
        assert_eq!(with(None), Err(415));
    }

    #[test]
    fn segments_decode_and_refuse_slashes() {
        assert_eq!(
            segments("/api/a%20b/c+d/%C3%BC").unwrap().as_slice(),
            ["api", "a b", "c+d", "ü"]
        );
        assert!(segments("/a/b%2Fc").is_none());
        assert!(segments("/a/%FF").is_none());
        assert!(segments("relative").is_none());
        assert_eq!(segments("/").unwrap().as_slice(), [""]);
        assert_eq!(segments("//a//").unwrap().as_slice(), ["", "a", "", ""]);
        // Past eight segments they are still all there (held on the heap).
        let long = segments("/a/b/c/d/e/f/g/h/i/j").unwrap();
        assert_eq!(segment_strs(&long).join(""), "abcdefghij");
    }

    #[test]
    fn segments_read_as_a_char_split_and_full_decode_read_them() {
        // What the byte split and the plain-segment shortcut replaced, written out.
        fn before(path: &str) -> Option<Vec<String>> {
            let rest = path.strip_prefix('/')?;
            rest.split('/')
                .map(|s| {
                    let d = percent_decode_str(s).decode_utf8().ok()?;
                    (!d.contains('/')).then(|| d.into_owned())
                })
                .collect()
        }
        for path in [
            "/api/v2/cases/42/files",
            "/a/%2F/b",
            "/ü/é%20x/%E2%82%AC",
            "/a%/b%2",
            "/%C3",
            "/a b/c+d/?q",
            "/",
            "//",
            "/x/",
            "",
            "x/y",
            "/ /\u{0}/\u{7f}",
        ] {
            let got = segments(path).map(|v| v.into_iter().map(Cow::into_owned).collect());
            assert_eq!(got, before(path), "{path:?}");
        }
        assert!(matches!(
            decode_segment("plain"),
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn segment_encoding_round_trips() {
        for s in ["plain", "a b?c#d", "ü&+=%", ""] {
            assert_eq!(decode_segment(&segment(s)).as_deref(), Some(s));
        }
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        // The shortcut for unreserved text agrees with the encoder on every byte (and
        // borrows exactly when the encoder would leave the text as it is).
        let mut all: Vec<String> = (0..=0x7f_u8).map(|b| format!("a{}z", b as char)).collect();
        all.extend(
            ["", "ü", "0b2c1d6e-9f3a-4b5c-8d7e-6f5a4b3c2d1e", "a~b.c_d-e"].map(String::from),
        );
        for s in &all {
            let encoder: String = utf8_percent_encode(s, SEGMENT).to_string();
            assert_eq!(segment(s), encoder, "{s:?}");
            assert_eq!(
                matches!(segment(s), Cow::Borrowed(_)),
                encoder == *s,
                "{s:?}"
            );
        }
        // A segment never decodes to a path separator.
        assert_eq!(decode_segment(&segment("a/b")), None);
    }

    #[test]
    fn queries() {
        let p = parts("/x?token=a%2Bb&touchpoint=t+p&per_page=20&page=0");
        assert_eq!(query_param(&p, "token").as_deref(), Some("a+b"));
        assert_eq!(query_param(&p, "touchpoint").as_deref(), Some("t p"));
        assert_eq!(query_number(&p, "per_page").unwrap(), Some(20));
        assert!(query_number(&p, "page").is_err());
        assert_eq!(query_number(&p, "absent").unwrap(), None);
        assert_eq!(
            query_without(
                "token=x&a=1&touchpoint=y&b=%C3%BC",
                &["token", "touchpoint"]
            ),
            "a=1&b=%C3%BC"
        );
        assert_eq!(
            query_without("flag&q=a%20b+c&%74oken=x&x=%2f", &["token"]),
            "flag&q=a%20b+c&x=%2f"
        );
        assert_eq!(query_without("token=x", &["token"]), "");
    }

    /// `query_value` decodes what needs it and borrows the rest.
    #[test]
    fn query_values_are_borrowed_unless_decoded() {
        let value = |q: &str, name: &str| {
            query_value(&parts(&format!("/x?{q}")), name)
                .map(|v| (v.to_string(), matches!(v, Cow::Borrowed(_))))
        };
        let borrowed = |v: &str| Some((v.to_string(), true));
        let decoded = |v: &str| Some((v.to_string(), false));
        assert_eq!(value("touchpoint=tp&token=abc", "token"), borrowed("abc"));
        assert_eq!(value("&&token=&token=x", "token"), borrowed(""));
        assert_eq!(value("token", "token"), borrowed(""));
        assert_eq!(value("token=a%2Bb", "token"), decoded("a+b"));
        assert_eq!(value("token=t+p", "token"), decoded("t p"));
        assert_eq!(value("t%6Fken=v", "token"), borrowed("v"));
        assert_eq!(value("tokens=v", "token"), None);
        assert_eq!(query_value(&parts("/x"), "token"), None);
    }

    proptest::proptest! {
        /// The same parameter as `form_urlencoded::parse` finds first, for any query
        /// made of names, separators, escapes (also of UTF-8) and pluses.
        #[test]
        fn query_values_are_what_form_urlencoded_reads(
            query in "([at=&%+20F4]|%C3%A9){0,24}",
            name in "(a|t|ta|at|a t|\u{e9}|a\u{e9})",
        ) {
            let expected = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.into_owned());
            let p = parts(&format!("/x?{query}"));
            proptest::prop_assert_eq!(query_value(&p, &name).map(Cow::into_owned), expected);
        }
    }

    #[test]
    fn spaces() {
        assert_eq!(split_space("/s/ops/api/x"), (Some("ops".into()), "/api/x"));
        assert_eq!(split_space("/api/x"), (None, "/api/x"));
        assert_eq!(split_space("/s//api/x"), (None, "/s//api/x"));
    }
}
