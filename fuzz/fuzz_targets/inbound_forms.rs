#![no_main]
//! A cargo-fuzz target; the property it checks lives in tests/props (shared with the
//! proptest suite).

#[path = "../../tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;

// Every front dialect's upload reader on arbitrary bodies (raw, and after a valid part
// header); and casegate's own multipart forms read back exactly.
fuzz_target!(|data: &[u8]| {
    let (sizes, body) = data.split_at(data.len().min(2));
    props::inbound_garbage(body, sizes);
    let mut framed = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".to_vec();
    framed.extend_from_slice(body);
    props::inbound_garbage(&framed, sizes);
    let text = String::from_utf8_lossy(body);
    let mut parts = text.splitn(3, '|');
    let comment = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let file = parts.next().unwrap_or_default();
    props::multipart_round_trip(comment, &[comment.to_string()], name, file.as_bytes(), sizes);
    props::tines_round_trip(Some(comment), name, file.as_bytes(), sizes);
});
