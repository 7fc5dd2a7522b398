//! The outbound multipart/form-data writer: the boundary is chosen up front, so the body
//! can be produced piece by piece around a streamed file part, and its exact length is
//! known whenever the file's length is.

use bytes::{BufMut, Bytes, BytesMut};

use super::disposition::push_quoted;

/// Writes the framing of a multipart/form-data body. Field names are the caller's
/// constants; values and file names are encoded so they cannot end a header.
#[derive(Debug, Clone)]
pub struct Writer {
    boundary: String,
}

impl Writer {
    /// A writer with a fresh random boundary (`casegate-` and 32 hex digits: the chance
    /// that it occurs in any file is negligible).
    pub fn new() -> Self {
        // Joined rather than through `format!` (its machinery cost about 500 instructions
        // here on every upload).
        let mut uuid = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().simple().encode_lower(&mut uuid);
        Self::with_boundary(["casegate-", id].concat())
    }

    pub fn with_boundary(boundary: impl Into<String>) -> Self {
        Writer {
            boundary: boundary.into(),
        }
    }

    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The `Content-Type` header value for the body.
    pub fn content_type(&self) -> String {
        ["multipart/form-data; boundary=", &self.boundary].concat()
    }

    /// A text field, complete with its trailing CRLF.
    pub fn text(&self, out: &mut BytesMut, name: &str, value: &str) {
        self.part_start(out, name, None, None);
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }

    /// The headers of a file part; the file's bytes follow, then [`Writer::file_end`].
    pub fn file_start(&self, out: &mut BytesMut, name: &str, filename: &str, content_type: &str) {
        self.part_start(out, name, Some(filename), Some(content_type));
    }

    /// Ends a file part.
    pub fn file_end(&self, out: &mut BytesMut) {
        out.put_slice(b"\r\n");
    }

    /// The closing delimiter.
    pub fn close(&self, out: &mut BytesMut) {
        out.put_slice(b"--");
        out.put_slice(self.boundary.as_bytes());
        out.put_slice(b"--\r\n");
    }

    fn part_start(&self, out: &mut BytesMut, name: &str, filename: Option<&str>, ct: Option<&str>) {
        out.reserve(self.part_overhead() + name.len() + filename.map_or(0, str::len));
        out.put_slice(b"--");
        out.put_slice(self.boundary.as_bytes());
        out.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
        push_quoted(out, name);
        out.put_u8(b'"');
        if let Some(f) = filename {
            out.put_slice(b"; filename=\"");
            push_quoted(out, f);
            out.put_u8(b'"');
        }
        out.put_slice(b"\r\n");
        if let Some(ct) = ct {
            out.put_slice(b"Content-Type: ");
            // Content types are validated upstream of here; CR/LF are dropped regardless
            // (a type without them, every one, is put whole: a split by two characters
            // cost about 100 instructions an upload).
            if ct.bytes().any(|b| b == b'\r' || b == b'\n') {
                for part in ct.split(['\r', '\n']) {
                    out.put_slice(part.as_bytes());
                }
            } else {
                out.put_slice(ct.as_bytes());
            }
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
    }

    /// About how many bytes a part's head takes beside its name and file name (its
    /// delimiter, `Content-Disposition` and `Content-Type`), to size buffers once.
    pub fn part_overhead(&self) -> usize {
        self.boundary.len() + 160
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// Convenience: a whole small body of text fields and one in-memory file (tests, the
/// benchmark's fixed bodies).
pub fn whole_body(
    w: &Writer,
    fields: &[(&str, &str)],
    file: Option<(&str, &str, &str, &[u8])>,
) -> Bytes {
    let mut out = BytesMut::new();
    for (n, v) in fields {
        w.text(&mut out, n, v);
    }
    if let Some((name, filename, ct, data)) = file {
        w.file_start(&mut out, name, filename, ct);
        out.put_slice(data);
        w.file_end(&mut out);
    }
    w.close(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes() {
        let w = Writer::with_boundary("XyZ");
        let body = whole_body(
            &w,
            &[("caseId", "c1"), ("bulkTags[]", "t")],
            Some(("file", "a\"b.txt", "text/plain", b"hello")),
        );
        let expected = "--XyZ\r\nContent-Disposition: form-data; name=\"caseId\"\r\n\r\nc1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"bulkTags[]\"\r\n\r\nt\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\\\"b.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--XyZ--\r\n";
        assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
    }

    #[test]
    fn a_content_type_never_carries_a_line_break() {
        let w = Writer::with_boundary("B");
        for (ct, want) in [
            ("text/plain", "text/plain"),
            ("text/plain\r\nX-Evil: 1", "text/plainX-Evil: 1"),
            ("a\rb\nc\r\n", "abc"),
            ("\n", ""),
        ] {
            let mut out = BytesMut::new();
            w.file_start(&mut out, "f", "x", ct);
            let head = std::str::from_utf8(&out).unwrap();
            let line = format!("\r\nContent-Type: {want}\r\n\r\n");
            assert!(head.ends_with(&line), "{ct:?}: {head:?}");
            assert_eq!(head.matches("\r\n").count(), 4, "{ct:?}: {head:?}");
        }
    }

    #[test]
    fn content_type_carries_boundary() {
        let w = Writer::new();
        assert!(w.content_type().ends_with(w.boundary()));
        assert!(w.boundary().starts_with("casegate-"));
    }
}
