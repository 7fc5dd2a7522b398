//! Sans-I/O byte codecs: fed `Bytes` chunks, giving chunks or events back. No sockets, no
//! tokio, so each is unit-tested with exact byte fixtures and fuzzed on its own.
//!
//! - [`b64`]: base64 behind one pair of functions, plus a streaming encoder.
//! - [`json_out`]: JSON objects written by hand, as serde_json writes them.
//! - [`json_read`]: the members of an answer's JSON object read in place.
//! - [`json_scan`]: the streaming scanner for a Tines upload body (JSON with a base64
//!   field decoded as it streams).
//! - [`multipart`]: the outbound multipart/form-data writer.
//! - [`form`]: the inbound multipart/form-data reader.
//! - [`disposition`]: reading and writing the file name of a `Content-Disposition` header.
//! - [`hex`] and [`unhex`]: lowercase hex of a digest, and back.

pub mod b64;
pub mod disposition;
pub mod form;
pub mod json_out;
pub mod json_read;
pub mod json_scan;
pub mod multipart;

/// Lowercase hex of `bytes` (digests, signatures), built in one allocation.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Bytes pushed, not `char`s (each of which is UTF-8 encoded on its way in); every
    // digit is ASCII, so the check at the end always passes.
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The `N` bytes that `s` is the lowercase hex of, as [`hex`] writes them; None for any
/// other text (another length, a capital, a non-digit), so one byte string has exactly
/// one spelling.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(super::hex(&[]), "");
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
    }

    #[test]
    fn unhex_reads_back_what_hex_writes_and_nothing_else() {
        let all: Vec<u8> = (0..=255).collect();
        for b in all.chunks(4) {
            let b: [u8; 4] = b.try_into().unwrap();
            assert_eq!(super::unhex::<4>(&super::hex(&b)), Some(b));
        }
        for bad in [
            "",
            "000fa0ff",
            "000fa0ff5",
            "000fa0ff5c00",
            "000FA0FF5C",
            "000fa0ff5g",
            "000fa0ff 5",
            "000fa0ff\u{e9}",
        ] {
            assert_eq!(super::unhex::<5>(bad), None, "{bad:?}");
        }
        assert_eq!(super::unhex::<0>(""), Some([]));
    }
}
