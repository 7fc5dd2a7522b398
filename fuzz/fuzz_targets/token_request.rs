#![no_main]
//! A cargo-fuzz target; the property it checks lives in tests/props (shared with the
//! proptest suite).

#[path = "../../tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;

// Case IQ's token endpoint (served by casegate) on arbitrary request bodies, as JSON and
// as a form.
fuzz_target!(|data: &[u8]| {
    props::fuzz_target("token_request", data);
});
