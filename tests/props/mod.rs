//! Properties of every parser that reads bytes a client or an upstream sends, written once
//! and checked twice: by proptest in `cargo test` (tests/properties.rs) and by the
//! cargo-fuzz targets in fuzz/ (which include this file). Each function panics when its
//! property does not hold.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use casegate::codec::json_scan::{self, Event as ScanEvent, Scalar, Scanner};
use casegate::codec::{b64, disposition, multipart};
use casegate::dialect::{self, Answer, BackCtx, DialectId, FrontAuth, Match, Op};
use casegate::inbound::{Event, Limits};
use casegate::secret::Secret;
use casegate::upload::{Field, UploadMeta, UploadResult};
use futures_util::StreamExt;
use serde_json::Value;

/// Splits `input` into chunks whose sizes come from `sizes` (cycled; 0 means 1).
pub fn chunks<'a>(input: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .map(|&s| s as usize)
            .unwrap_or(rest.len())
            .max(1);
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

/// The file and the other top-level fields the scanner saw, or its error.
type Scanned = Result<(Vec<u8>, Vec<(String, Scalar)>), json_scan::ScanError>;

fn scan(pieces: &[&[u8]]) -> Scanned {
    let mut s = Scanner::new("file_contents", json_scan::Limits::default());
    let mut events = Vec::new();
    for p in pieces {
        s.feed(p, &mut events)?;
    }
    s.finish(&mut events)?;
    let mut file = Vec::new();
    let mut fields = Vec::new();
    for e in events {
        match e {
            ScanEvent::FileData(d) => file.extend_from_slice(&d),
            ScanEvent::Field { key, value } => fields.push((key.into_owned(), value)),
            _ => {}
        }
    }
    Ok((file, fields))
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Top-level keys in order, as written (serde_json's Value keeps only the last of a
/// duplicate, so count them with a visitor).
fn top_level_keys(input: &[u8]) -> Option<Vec<String>> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(input).ok().map(|k| k.0)
}

/// What serde_json and base64 make of a Tines body: `None` when either refuses it (or
/// it breaks a rule casegate adds: duplicate keys, depth over 32).
fn reference(input: &[u8]) -> Option<(Vec<u8>, BTreeMap<String, Value>)> {
    let v: Value = serde_json::from_slice(input).ok()?;
    let obj = v.as_object()?;
    let keys = top_level_keys(input)?;
    let mut seen = std::collections::HashSet::new();
    if !keys.iter().all(|k| seen.insert(k.clone())) || depth(&v) > 32 {
        return None;
    }
    let mut file = Vec::new();
    let mut rest = BTreeMap::new();
    for (k, val) in obj {
        match (k.as_str(), val) {
            ("file_contents", Value::String(s)) => {
                let clean: Vec<u8> = s
                    .bytes()
                    .filter(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
                    .collect();
                b64::decode_into(&clean, &mut file).ok()?;
            }
            _ => {
                rest.insert(k.clone(), val.clone());
            }
        }
    }
    Some((file, rest))
}

fn scalar_matches(s: &Scalar, v: &Value) -> bool {
    match (s, v) {
        (Scalar::Null, Value::Null) => true,
        (Scalar::Bool(a), Value::Bool(b)) => a == b,
        (Scalar::String(a), Value::String(b)) => a == b,
        // The scanner keeps a number's text; read it the way serde_json read the whole
        // (its float parsing is not always correctly rounded, so `str::parse` can differ).
        (Scalar::Number(a), Value::Number(b)) => {
            serde_json::from_str::<Value>(a).ok() == Some(Value::Number(b.clone()))
        }
        (Scalar::Composite, Value::Array(_) | Value::Object(_)) => true,
        _ => false,
    }
}

/// The streaming scanner gives the same answer however the body is chunked, and agrees
/// with serde_json + base64 whenever both accept, and refuses whenever they refuse.
pub fn json_scanner(input: &[u8], sizes: &[u8]) {
    let whole = scan(&[input]);
    let chunked = scan(&chunks(input, sizes));
    let bytewise = scan(&input.chunks(1).collect::<Vec<_>>());
    assert_eq!(whole, chunked, "chunking changed the result");
    assert_eq!(whole, bytewise, "byte-at-a-time changed the result");
    match (whole, reference(input)) {
        (Ok((file, fields)), Some((want_file, want_fields))) => {
            assert_eq!(file, want_file, "decoded file differs");
            assert_eq!(
                fields.len(),
                want_fields.len(),
                "fields differ: {fields:?} vs {want_fields:?}"
            );
            for (k, s) in &fields {
                let v = want_fields
                    .get(k)
                    .unwrap_or_else(|| panic!("extra field {k}"));
                assert!(scalar_matches(s, v), "field {k}: {s:?} vs {v}");
            }
        }
        (Err(e), Some(_)) => panic!("the scanner refused ({e}) what serde_json and base64 accept"),
        (Ok(_), None) => panic!("the scanner accepted what serde_json or base64 refuse"),
        (Err(_), None) => {}
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn parts(content_type: &str, uri: &str) -> http::request::Parts {
    let req = http::Request::post(uri)
        .header("content-type", content_type)
        .header("kbn-xsrf", "true")
        .body(())
        .expect("request");
    req.into_parts().0
}

/// Reads `body` (in `chunks`) through a front dialect's upload reader.
fn read_events(
    front: DialectId,
    content_type: &str,
    body: &[u8],
    sizes: &[u8],
    limits: &Limits,
) -> Result<(UploadMeta, Vec<u8>, usize), casegate::error::Error> {
    let d = dialect::get(front);
    let uri = match front {
        DialectId::Thalamus => "/api/v4/cases/1/files",
        DialectId::Tines => "/api/v2/cases/1/files",
        DialectId::Caseiq => "/api-public/1.0/save_file",
        DialectId::Kibana => "/api/cases/1/files",
    };
    let Match::Op(op) = d.recognize(&http::Method::POST, uri) else {
        panic!("{uri} is {front}'s upload path")
    };
    let pieces: Vec<Result<Bytes, casegate::error::Error>> = chunks(body, sizes)
        .into_iter()
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream: casegate::inbound::BodyStream = Box::pin(futures_util::stream::iter(pieces));
    let p = parts(content_type, uri);
    runtime().block_on(async move {
        let inbound = d.read_upload(&p, &op, stream, limits)?;
        let mut meta = inbound.meta;
        let mut events = inbound.events;
        let mut file = Vec::new();
        let mut files = 0;
        while let Some(ev) = events.next().await {
            match ev? {
                Event::Field(f) => meta.apply(f)?,
                Event::Absent(k) => meta.mark_seen(k),
                Event::FileStart { filename, .. } => {
                    files += 1;
                    if let Some(f) = filename {
                        meta.apply(Field::FileName(f))?;
                    }
                }
                Event::Data(d) => file.extend_from_slice(&d),
                Event::Coded(text) => {
                    // The text a back may send instead of the bytes: exactly their encoding.
                    let data = Event::coded_bytes(&text)?;
                    assert!(!data.is_empty(), "an empty coded chunk");
                    let mut encoded = String::new();
                    b64::encode_into(&data, &mut encoded);
                    assert_eq!(text, encoded.as_bytes(), "a coded chunk's text");
                    file.extend_from_slice(&data);
                }
                Event::FileEnd => {}
            }
        }
        Ok((meta, file, files))
    })
}

/// Arbitrary bytes through every front's reader: no panic, and never more file bytes out
/// than came in (nor over the limit).
pub fn inbound_garbage(body: &[u8], sizes: &[u8]) {
    let limits = Limits::new(4096);
    for front in DialectId::ALL {
        let ct = if front == DialectId::Tines {
            "application/json"
        } else {
            "multipart/form-data; boundary=B"
        };
        if let Ok((_, file, _)) = read_events(front, ct, body, sizes, &limits) {
            assert!(file.len() <= body.len());
            assert!(file.len() as u64 <= limits.max_file_bytes);
        }
    }
}

/// A form written by casegate's multipart writer reads back as the same fields and file,
/// through every multipart front, however it is chunked.
pub fn multipart_round_trip(comment: &str, tags: &[String], name: &str, file: &[u8], sizes: &[u8]) {
    let w = multipart::Writer::new();
    let limits = Limits::new(1 << 20);
    for front in [DialectId::Thalamus, DialectId::Caseiq, DialectId::Kibana] {
        let mut fields: Vec<(&str, &str)> = Vec::new();
        if front == DialectId::Caseiq {
            fields.push(("caseId", "c-1"));
            fields.push(("description", comment));
            for t in tags {
                fields.push(("bulkTags[]", t));
            }
        }
        if front == DialectId::Kibana {
            fields.push(("filename", comment));
        }
        let body =
            multipart::whole_body(&w, &fields, Some(("file", name, "application/pdf", file)));
        let got = read_events(front, &w.content_type(), &body, sizes, &limits);
        let written = header_safe(name);
        let safe = casegate::upload::sanitize_file_name(&written);
        match (got, safe) {
            (Ok((meta, data, files)), Ok(safe)) => {
                assert_eq!(files, 1);
                assert_eq!(data, file, "{front}: file bytes");
                assert_eq!(
                    meta.file_name.as_deref(),
                    Some(safe.as_str()),
                    "{front}: name"
                );
                if front == DialectId::Caseiq {
                    assert_eq!(meta.case_id.as_deref(), Some("c-1"));
                    assert_eq!(
                        meta.comment.as_deref(),
                        (!comment.is_empty()).then_some(comment)
                    );
                    assert_eq!(meta.tags, tags);
                }
                if front == DialectId::Kibana {
                    assert_eq!(
                        meta.display_name.as_deref(),
                        (!comment.is_empty()).then_some(comment)
                    );
                }
            }
            (Err(e), Ok(_)) => panic!("{front}: refused its own writer's form: {e}"),
            (Ok(_), Err(_)) => panic!("{front}: accepted an unsafe name {written:?}"),
            (Err(_), Err(_)) => {}
        }
    }
}

/// A Tines body built with serde_json reads back as the same file and fields.
pub fn tines_round_trip(value: Option<&str>, name: &str, file: &[u8], sizes: &[u8]) {
    let mut enc = String::new();
    b64::encode_into(file, &mut enc);
    let body = serde_json::to_vec(&serde_json::json!({
        "value": value, "file_contents": enc, "filename": name, "author_email": null,
    }))
    .expect("json");
    let got = read_events(
        DialectId::Tines,
        "application/json",
        &body,
        sizes,
        &Limits::new(1 << 20),
    );
    match (got, casegate::upload::sanitize_file_name(name)) {
        (Ok((meta, data, _)), Ok(safe)) => {
            assert_eq!(data, file);
            assert_eq!(meta.file_name.as_deref(), Some(safe.as_str()));
            assert_eq!(meta.comment.as_deref(), value.filter(|v| !v.is_empty()));
        }
        (Err(e), Ok(_)) => panic!("refused a valid body: {e}"),
        (Ok(_), Err(_)) => panic!("accepted an unsafe name {name:?}"),
        (Err(_), Err(_)) => {}
    }
}

/// Every back dialect's answer readers take any bytes; Thalamus' `FAILED` is never a
/// success, and a success always names the attachment.
pub fn answer_parsers(body: &[u8]) {
    let options = [("space".to_string(), "s".to_string())]
        .into_iter()
        .collect();
    let ctx = BackCtx {
        base_url: "http://u",
        options: &options,
        client_space: None,
        raw_wanted: false,
    };
    // A client of the back's own dialect gets the back's JSON kept; others do not.
    let same = BackCtx {
        raw_wanted: true,
        ..ctx
    };
    let meta = UploadMeta::default();
    for id in DialectId::ALL {
        let d = dialect::get(id);
        let stored = [&ctx, &same].map(|ctx| match d.read_stored(body, &meta, ctx) {
            Answer::Stored(r) => {
                assert!(r.attachment.id.is_some(), "{id}: stored without an id");
                Some(r.attachment.id)
            }
            Answer::StoredUnreadable(_) | Answer::Failed(_) => None,
        });
        assert_eq!(
            stored[0], stored[1],
            "{id}: read differently for its own dialect"
        );
        if let Some(m) = d.error_message(body) {
            assert!(
                m.chars().count() <= 500 && !m.chars().any(char::is_control),
                "{id}: {m:?}"
            );
        }
        let _ = d.read_comment_answer(body, &mut UploadResult::default());
        // The readers of reading back take any bytes too.
        if let Ok(listed) = d.read_list(body, &ctx) {
            assert!(
                listed.files.iter().all(|f| f.id.is_some()),
                "{id}: a listed file without an id"
            );
        }
        let _ = d.read_record(body, &ctx);
        let _ = d.read_info(body);
        let deleted = d.read_deleted(body);
        if d.failed_answer(body) {
            assert!(
                !deleted || id != DialectId::Thalamus,
                "{id}: FAILED read as deleted"
            );
        }
    }
    if String::from_utf8_lossy(body).trim() == "FAILED" {
        let d = dialect::get(DialectId::Thalamus);
        assert!(matches!(
            d.read_stored(body, &meta, &ctx),
            Answer::Failed(_)
        ));
    }
}

/// routes.toml text: loading never panics; what loads is consistent.
pub fn config_text(text: &str) {
    let env = |k: &str| (k == "SET").then(|| "value".to_string());
    if let Ok(cfg) = casegate::config::parse(text, &env, false) {
        let mut names = std::collections::HashSet::new();
        for r in &cfg.routes {
            assert!(
                names.insert(r.name.clone()),
                "duplicate route name accepted"
            );
            assert!(r.prefix.is_empty() || (r.prefix.starts_with('/') && !r.prefix.ends_with('/')));
        }
        let table = cfg.table();
        for r in &cfg.routes {
            for t in &r.client_tokens {
                // A token that also stands inside a value the table does print (a route's
                // name, an upstream's `client_id`) is printed as part of that value.
                if t.expose().len() >= 12 && text.matches(t.expose()).count() == 1 {
                    assert!(!table.contains(t.expose()), "a client token is printed");
                }
            }
        }
    }
}

/// Case IQ's token endpoint: any body gets one of its documented answers, and a token it
/// issues opens the route (and nothing else does).
pub fn token_request(body: &[u8], form: bool) {
    let d = dialect::get(DialectId::Caseiq);
    let auth = FrontAuth {
        tokens: casegate::secret::Accepted::new(&[Secret::new("the-secret")]),
        signing_key: casegate::secret::MacKey::new(&Secret::new(
            "0123456789abcdef0123456789abcdef",
        )),
        route: "r".into(),
        check: casegate::secret::CheckId::fresh(),
    };
    let ct = if form {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let stream: casegate::inbound::BodyStream = Box::pin(futures_util::stream::iter(vec![Ok(
        Bytes::copy_from_slice(body),
    )]));
    let resp = runtime().block_on(d.serve_own(
        dialect::Request::new(Op::Token),
        parts(ct, "/auth/oauth2/token"),
        stream,
        auth.clone(),
    ));
    let status = resp.status().as_u16();
    assert!(matches!(status, 200 | 400 | 401 | 501), "status {status}");
    let bytes = runtime()
        .block_on(http_body_util::BodyExt::collect(resp.into_body()))
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).expect("a JSON answer");
    let bearer = |t: &str| match http::Request::post("/")
        .header("authorization", format!("Bearer {t}"))
        .body(())
    {
        Ok(req) => d.authenticate(&req.into_parts().0, &auth).is_ok(),
        Err(_) => false,
    };
    if status == 200 {
        let token = v["access_token"].as_str().expect("access_token");
        assert!(bearer(token), "an issued token does not open the route");
        assert!(
            !bearer(&format!("{token}0")),
            "a changed token opens the route"
        );
        assert!(!token.contains("the-secret"));
    } else {
        assert!(v["error"].is_string());
    }
    let garbage = String::from_utf8_lossy(body);
    if !garbage.starts_with("cgt1.") {
        assert!(!bearer(&garbage), "garbage opened the route");
    }
}

/// A name as casegate's writer puts it in a part header: control characters cannot be
/// quoted in a header, so they are percent-encoded.
fn header_safe(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            c if c.is_ascii_control() => format!("%{:02X}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

/// Content-Disposition: any header bytes parse without panic, and every name casegate
/// writes parses back to itself (control characters percent-encoded).
pub fn disposition_header(raw: &[u8], name: &str) {
    let _ = disposition::parse(raw);
    let mut header = b"form-data; name=\"file\"; filename=\"".to_vec();
    disposition::push_quoted(&mut header, name);
    header.push(b'"');
    let d = disposition::parse(&header).expect("our own header parses");
    assert_eq!(d.name.as_deref(), Some("file"));
    assert_eq!(d.filename, Some(header_safe(name)));
}

/// What the cargo-fuzz target `name` (fuzz/fuzz_targets/NAME.rs) checks of one input, so
/// that `cargo test` replays the committed seeds (fuzz/seeds/NAME/, the regressions the
/// fuzzers found among them) exactly as the fuzzers run them.
pub fn fuzz_target(name: &str, data: &[u8]) {
    match name {
        "disposition" => disposition_header(data, &String::from_utf8_lossy(data)),
        "inbound_forms" => {
            let (sizes, body) = data.split_at(data.len().min(2));
            inbound_garbage(body, sizes);
            let mut framed =
                b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n"
                    .to_vec();
            framed.extend_from_slice(body);
            inbound_garbage(&framed, sizes);
            let text = String::from_utf8_lossy(body);
            let mut parts = text.splitn(3, '|');
            let comment = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default();
            let file = parts.next().unwrap_or_default();
            multipart_round_trip(
                comment,
                &[comment.to_string()],
                name,
                file.as_bytes(),
                sizes,
            );
            tines_round_trip(Some(comment), name, file.as_bytes(), sizes);
        }
        "json_scan" => {
            let (sizes, body) = data.split_at(data.len().min(2));
            json_scanner(body, sizes);
        }
        "routes_toml" => config_text(&String::from_utf8_lossy(data)),
        "token_request" => {
            let form = data.first().is_some_and(|b| b & 1 == 1);
            token_request(data.get(1..).unwrap_or_default(), form);
        }
        "upstream_answers" => answer_parsers(data),
        _ => panic!("no fuzz target named {name}"),
    }
}
