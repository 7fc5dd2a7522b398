#![no_main]
//! A cargo-fuzz target; the property it checks lives in tests/props (shared with the
//! proptest suite).

#[path = "../../tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;

// Every back dialect's answer readers on arbitrary upstream bodies.
fuzz_target!(|data: &[u8]| {
    props::fuzz_target("upstream_answers", data);
});
