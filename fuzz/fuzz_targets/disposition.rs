#![no_main]
//! A cargo-fuzz target; the property it checks lives in tests/props (shared with the
//! proptest suite).

#[path = "../../tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;

// Content-Disposition headers from clients, and the names casegate writes into them.
fuzz_target!(|data: &[u8]| {
    props::fuzz_target("disposition", data);
});
