//! Sans-I/O byte codecs: fed `Bytes` chunks, giving chunks or events back. No sockets, no
//! tokio, so each is unit-tested with exact byte fixtures and fuzzed on its own.
//!
//! - [`b64`]: base64 behind one pair of functions, plus a streaming encoder.
//! - [`json_out`]: JSON objects written by hand, as serde_json writes them.
//! - [`json_scan`]: the streaming scanner for a Tines upload body (JSON with a base64
//!   field decoded as it streams).
//! - [`multipart`]: the outbound multipart/form-data writer.
//! - [`form`]: the inbound multipart/form-data reader.
//! - [`disposition`]: reading and writing the file name of a `Content-Disposition` header.
//! - [`hex`]: lowercase hex of a digest.

pub mod b64;
pub mod disposition;
pub mod form;
pub mod json_out;
pub mod json_scan;
pub mod multipart;

/// Lowercase hex of `bytes` (digests, signatures), built in one allocation.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(super::hex(&[]), "");
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
    }
}
