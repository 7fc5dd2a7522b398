#![no_main]
//! A cargo-fuzz target; the property it checks lives in tests/props (shared with the
//! proptest suite).

#[path = "../../tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;

// The Tines body scanner: chunking-invariant, and in agreement with serde_json + base64.
// The first byte picks the chunk sizes.
fuzz_target!(|data: &[u8]| {
    props::fuzz_target("json_scan", data);
});
