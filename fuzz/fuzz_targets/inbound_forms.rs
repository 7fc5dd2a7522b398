#![no_main]
//! A cargo-fuzz target; the property it checks lives in tests/props (shared with the
//! proptest suite).

#[path = "../../tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;

// Every front dialect's upload reader on arbitrary bodies (raw, and after a valid part
// header); and casegate's own multipart forms read back exactly.
fuzz_target!(|data: &[u8]| {
    props::fuzz_target("inbound_forms", data);
});
