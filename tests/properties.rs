//! The parsers' properties (tests/props), checked on generated inputs in every
//! `cargo test`; fuzz/ checks the same functions on coverage-guided inputs.

mod props;

use proptest::prelude::*;

/// Tines-like bodies: the fields in any order, base64 with optional line breaks and
/// spaces, junk fields, and sometimes a corruption.
fn tines_body() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of("[ -~üß😀]{0,20}"),
        prop_oneof![Just(0usize), Just(4), Just(76)],
        any::<bool>(),
        0usize..4,
        proptest::option::of((any::<usize>(), any::<u8>())),
    )
        .prop_map(|(file, value, wrap, pad, order, corrupt)| {
            let mut b64 = String::new();
            casegate::codec::b64::encode_into(&file, &mut b64);
            if !pad {
                b64 = b64.trim_end_matches('=').to_string();
            }
            if wrap > 0 {
                let lines: Vec<String> = b64
                    .as_bytes()
                    .chunks(wrap)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                b64 = lines.join("\\r\\n");
            }
            let mut members = [
                format!("\"file_contents\": \"{b64}\""),
                "\"filename\":\"a \\\"b\\\" \\u00fc.pdf\"".to_string(),
                format!("\"value\": {}", serde_json::to_string(&value).unwrap()),
                "\"junk\": {\"x\": [1, 2.5e3, null, {\"y\": true}]}".to_string(),
            ];
            members.rotate_left(order);
            let mut body = format!("{{ {} }}\n", members.join(",\n ")).into_bytes();
            if let Some((at, byte)) = corrupt {
                if !body.is_empty() {
                    let i = at % body.len();
                    body[i] = byte;
                }
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn json_scanner_agrees_with_serde_json_and_base64(body in tines_body(), sizes in proptest::collection::vec(any::<u8>(), 1..8)) {
        props::json_scanner(&body, &sizes);
    }

    #[test]
    fn json_scanner_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..200), sizes in proptest::collection::vec(any::<u8>(), 1..4)) {
        props::json_scanner(&body, &sizes);
    }

    #[test]
    fn inbound_readers_take_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..400), sizes in proptest::collection::vec(any::<u8>(), 1..4)) {
        let mut framed = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".to_vec();
        framed.extend_from_slice(&body);
        props::inbound_garbage(&body, &sizes);
        props::inbound_garbage(&framed, &sizes);
    }

    #[test]
    fn multipart_forms_read_back(
        comment in "[ -~äöü\\r\\n]{0,40}",
        tags in proptest::collection::vec("[a-z0-9-]{1,8}", 0..4),
        name in "[ -~äöü/\\\\\"]{0,30}",
        file in proptest::collection::vec(any::<u8>(), 0..3000),
        sizes in proptest::collection::vec(any::<u8>(), 1..6),
    ) {
        props::multipart_round_trip(&comment, &tags, &name, &file, &sizes);
    }

    #[test]
    fn tines_bodies_read_back(
        value in proptest::option::of("[ -~äöü\\n\"]{0,40}"),
        name in "[ -~äöü/\\\\\"]{0,30}",
        file in proptest::collection::vec(any::<u8>(), 0..3000),
        sizes in proptest::collection::vec(any::<u8>(), 1..6),
    ) {
        props::tines_round_trip(value.as_deref(), &name, &file, &sizes);
    }

    #[test]
    fn answer_parsers_take_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        props::answer_parsers(&body);
    }

    #[test]
    fn answer_parsers_take_any_json(body in "\\{(\"[a-z]{1,6}\":(null|[0-9]{1,3}|\"[a-z ]{0,5}\"|\\[\\]|\\{\\}),?){0,6}\\}") {
        props::answer_parsers(body.as_bytes());
    }

    #[test]
    fn config_loading_never_panics(text in "([a-z_]{1,12} = (\"[ -~]{0,12}\"|[0-9]{1,4}|true)\n|\\[\\[routes\\]\\]\n|\\[routes.upstream\\]\n){0,12}") {
        props::config_text(&text);
    }

    #[test]
    fn token_requests(body in "\\{(\"(grant_type|client_id|client_secret|ttl)\":(\"(client_credentials|the-secret|x)\"|[0-9]{1,5}|null),?){0,5}\\}", form in any::<bool>()) {
        props::token_request(body.as_bytes(), form);
    }

    #[test]
    fn token_requests_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..100), form in any::<bool>()) {
        props::token_request(&body, form);
    }

    #[test]
    fn disposition_headers(raw in proptest::collection::vec(any::<u8>(), 0..120), name in "[ -~äöü\"\\\\;=]{0,30}") {
        props::disposition_header(&raw, &name);
    }
}

#[test]
fn known_good_token_request() {
    props::token_request(br#"{"grant_type":"client_credentials","client_id":"x","client_secret":"the-secret","ttl":5}"#, false);
    props::token_request(
        b"grant_type=client_credentials&client_id=x&client_secret=the-secret",
        true,
    );
}

/// Every committed fuzz seed (fuzz/seeds/TARGET/, among them the inputs the fuzzers
/// found a fault with, named `regression-...`), run as its fuzz target runs it.
#[test]
fn the_fuzz_seeds_hold_their_targets_properties() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut run = Vec::new();
    for target in std::fs::read_dir(&seeds).unwrap() {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        for seed in std::fs::read_dir(&target).unwrap() {
            let seed = seed.unwrap().path();
            props::fuzz_target(&name, &std::fs::read(&seed).unwrap());
            run.push(format!(
                "{name}/{}",
                seed.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    // Each target has seeds, and the regressions are among what ran.
    for target in [
        "disposition",
        "inbound_forms",
        "json_scan",
        "routes_toml",
        "token_request",
        "upstream_answers",
    ] {
        assert!(
            run.iter().any(|r| r.starts_with(&format!("{target}/"))),
            "{run:?}"
        );
    }
    assert!(
        run.iter()
            .any(|r| r == "upstream_answers/regression-kibana-stray-byte-in-a-skipped-member"),
        "{run:?}"
    );
}
