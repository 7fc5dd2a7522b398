//! Reading back (SPEC 7), through real sockets: every front's client lists, gets, asks
//! `info` of, downloads and deletes the files it attached, over every back (16
//! pairings), in its own dialect, with ids of its own form (7.3), links that lead back
//! through casegate (7.4), and every failure in its own error form (section 4). Paging,
//! ranges, ids across a restart, case maps, passthrough and Kibana's own rules too.
//!
//! Expectations come from what the client uploaded and what the upstream stored
//! (`Emulator::files`), from the ledger's rows where the SPEC says the ids live there,
//! and from the SPEC's own rules; never from casegate's answers alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use casegate::dialect::DialectId;
use casegate::emulator::{Fault, StoredFile};
use common::*;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

fn guess(name: &str) -> String {
    casegate::upload::guess_type(name).into_owned()
}

fn stem(name: &str) -> &str {
    casegate::upload::split_ext(name).0
}

/// The files every pairing reads back: empty, one byte, 1 MiB of random bytes, a name
/// outside ASCII, and an image (Tines shows images inline).
fn files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("empty.txt".into(), vec![]),
        ("one.txt".into(), b"x".to_vec()),
        ("random.zip".into(), random_bytes(1024 * 1024, 21)),
        ("Prüfbericht ü 2026.pdf".into(), random_bytes(10_000, 22)),
        ("photo.png".into(), random_bytes(3_000, 23)),
    ]
}

/// The keys of a Kibana `.files` comment (as Kibana, and its emulator, render one).
const FILES_COMMENT_KEYS: &[&str] = &[
    "created_at",
    "created_by",
    "externalReferenceAttachmentTypeId",
    "externalReferenceId",
    "externalReferenceMetadata",
    "externalReferenceStorage",
    "id",
    "owner",
    "pushed_at",
    "pushed_by",
    "type",
    "updated_at",
    "updated_by",
    "version",
];

/// A file attached through one front, and what is known of it.
#[derive(Clone, Debug)]
struct Attached {
    name: String,
    data: Vec<u8>,
    /// What the upstream stored.
    stored: StoredFile,
    /// The front id (Kibana: the file id).
    id: String,
    /// Kibana: the comment id (the front id again when the back has one id per file);
    /// other fronts: the front id.
    comment: String,
    /// The upload's answer.
    answer: Value,
}

/// Whether the back's ids fit the front's form, so the front id is the back's (7.3).
fn ids_fit(front: DialectId, back: DialectId) -> bool {
    let integer = |d| matches!(d, Thalamus | Tines);
    front == back || front == Kibana || (integer(front) && integer(back))
}

fn upload_of(front: DialectId, case: &str, name: &str, data: &[u8]) -> Up {
    Up {
        case_id: case.into(),
        file_name: name.into(),
        data: data.to_vec(),
        content_type: (front != Tines).then(|| guess(name)),
        ..Default::default()
    }
}

/// Uploads through `c`; checks the upstream stored the bytes and the ledger gave the file
/// a front id of the front's form (7.3).
async fn attach(h: &Harness, c: &FrontClient, case: &str, name: &str, data: &[u8]) -> Attached {
    let ctx = format!("{}->{} {name:?}", c.front, h.back);
    let before = h.upstream.files().len();
    let r = c.upload(&upload_of(c.front, case, name, data)).await;
    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
    assert!(r.header("casegate-error").is_none(), "{ctx}: {}", r.text());
    let files = h.upstream.files();
    assert_eq!(files.len(), before + 1, "{ctx}");
    let stored = files.last().unwrap().clone();
    assert_eq!(stored.sha256, sha256_hex(data), "{ctx}: bytes");
    let row = h.ledger_row(c.front, &stored).await;
    let id = row.front_id.clone();
    if ids_fit(c.front, h.back) {
        assert_eq!(id, stored.id, "{ctx}: the front id is the back's");
    } else {
        assert_ne!(id, stored.id, "{ctx}: a front id of the front's own form");
    }
    match c.front {
        Thalamus | Tines => assert!(id.parse::<u64>().is_ok(), "{ctx}: {id} is an integer"),
        Caseiq => assert!(uuid::Uuid::try_parse(&id).is_ok(), "{ctx}: {id} is a UUID"),
        Kibana => {}
    }
    let answer = r.json();
    let comment = match (c.front, h.back) {
        (Kibana, Kibana) => {
            let kept = row.back_comment_id.clone().expect("the comment id is kept");
            let c = file_comment_in(&answer, &id).unwrap_or_else(|| panic!("{ctx}: {answer}"));
            assert_eq!(c["id"], kept, "{ctx}: the answer's comment is the ledger's");
            kept
        }
        _ => id.clone(),
    };
    Attached {
        name: name.into(),
        data: data.to_vec(),
        stored,
        id,
        comment,
        answer,
    }
}

/// The `.files` comment of a Kibana case for file `id`.
fn file_comment_in(case: &Value, id: &str) -> Option<Value> {
    case["comments"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "externalReference" && c["externalReferenceId"] == id)
        .cloned()
}

/// The upstream file a front id of `front`'s route names: the ledger's pair, else the
/// back's own id (routes whose ids fit).
async fn stored_by_front_id(h: &Harness, front: DialectId, id: &str) -> StoredFile {
    let row = h
        .casegate
        .gateway()
        .ledger()
        .by_front(&h.route(front), id)
        .await
        .unwrap();
    let back_id = row.map_or_else(|| id.to_string(), |r| r.back_id);
    h.upstream
        .files()
        .into_iter()
        .find(|f| f.id == back_id)
        .unwrap_or_else(|| panic!("{front}->{}: no upstream file for {id}", h.back))
}

/// The front id `front`'s route shows for an upstream file: the ledger's where it holds
/// one, else the back's own id (routes whose ids fit).
async fn front_id_of(h: &Harness, front: DialectId, stored: &StoredFile) -> String {
    let rows = h
        .casegate
        .gateway()
        .ledger()
        .by_back(&h.route(front), vec![stored.id.clone()])
        .await
        .unwrap();
    match rows.as_slice() {
        [row] => row.front_id.clone(),
        [] => stored.id.clone(),
        _ => panic!("{front}->{}: two rows for {}", h.back, stored.id),
    }
}

/// `base` + the route's prefix + `/`: where every link must point (7.4).
fn link_base(h: &Harness, front: DialectId) -> String {
    format!("{}{}/", h.base(), Harness::prefix(front))
}

/// Follows a link of an answer with the client's credentials: it points back through
/// casegate and gives the file `id` names byte for byte.
async fn follow(h: &Harness, c: &FrontClient, url: &str, id: &str) {
    let ctx = format!("{}->{} link {url}", c.front, h.back);
    assert!(
        url.starts_with(&link_base(h, c.front)),
        "{ctx}: not through casegate"
    );
    assert!(!url.contains(&h.upstream.url()), "{ctx}: the upstream");
    let want = stored_by_front_id(h, c.front, id).await;
    let r = c.follow(url).await;
    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
    assert_eq!(sha256_hex(&r.body), want.sha256, "{ctx}: bytes");
}

/// The id of a JSON answer as text (a number's digits, a string as it is).
fn id_text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("not an id: {other}"),
    }
}

/// A Tines or Thalamus id: a JSON number equal to `id`.
fn assert_number_id(ctx: &str, v: &Value, id: &str) {
    assert!(v.is_u64(), "{ctx}: id {v} is a JSON number");
    assert_eq!(v.as_u64().unwrap().to_string(), id, "{ctx}: id");
}

/// A Tines case id: a JSON number when it is all digits, else the string (SPEC 1).
fn assert_case_id(ctx: &str, v: &Value, case: &str) {
    if !case.is_empty() && case.bytes().all(|b| b.is_ascii_digit()) {
        assert_number_id(ctx, v, case);
    } else {
        assert_eq!(v, case, "{ctx}: case id");
    }
}

/// A file's record as the front renders it (upload answer, get, list entry), checked
/// against what was uploaded and stored.
fn check_record(h: &Harness, front: DialectId, case: &str, a: &Attached, v: &Value) {
    let ctx = format!("{front}->{} {:?}: {v}", h.back, a.name);
    match front {
        Tines => {
            assert_eq!(
                keys(v),
                sorted(&[
                    "activity_type",
                    "case_id",
                    "created_at",
                    "file",
                    "id",
                    "user",
                    "value"
                ]),
                "{ctx}"
            );
            assert_number_id(&ctx, &v["id"], &a.id);
            assert_case_id(&ctx, &v["case_id"], case);
            assert_eq!(v["activity_type"], "FILE_ATTACHED", "{ctx}");
            assert!(v["value"].is_null(), "{ctx}");
            assert!(
                v["created_at"].as_str().is_some_and(|s| s.ends_with('Z')),
                "{ctx}"
            );
            assert_eq!(keys(&v["file"]), sorted(&["filename", "url"]), "{ctx}");
            assert_eq!(v["file"]["filename"], a.name, "{ctx}");
            assert_eq!(
                v["file"]["url"],
                format!(
                    "{}api/v2/cases/{case}/files/{}/download",
                    link_base(h, front),
                    a.id
                ),
                "{ctx}: the front's own download path"
            );
            assert_eq!(
                keys(&v["user"]),
                sorted(&[
                    "avatar_url",
                    "email",
                    "first_name",
                    "is_service_account",
                    "last_name",
                    "user_id"
                ]),
                "{ctx}"
            );
        }
        Caseiq => {
            assert_eq!(
                keys(v),
                sorted(&[
                    "createdDate",
                    "encoding",
                    "id",
                    "mimeType",
                    "name",
                    "nameWithoutExtension",
                    "objectId",
                    "sizeBytes"
                ]),
                "{ctx}"
            );
            assert_eq!(v["id"], a.id.as_str(), "{ctx}: id is a string");
            assert_eq!(v["name"], a.name, "{ctx}");
            assert_eq!(v["nameWithoutExtension"], stem(&a.name), "{ctx}");
            assert_eq!(v["encoding"], "7bit", "{ctx}");
            assert_eq!(v["mimeType"], a.stored.content_type, "{ctx}");
            assert_eq!(v["objectId"], case, "{ctx}");
            assert_eq!(v["sizeBytes"], a.data.len() as u64, "{ctx}");
            assert!(
                v["createdDate"].as_str().is_some_and(|s| s.ends_with('Z')),
                "{ctx}"
            );
        }
        Kibana => check_files_comment(&ctx, v, a),
        Thalamus => panic!("thalamus has no records"),
    }
}

/// A Kibana `.files` comment for `a`.
fn check_files_comment(ctx: &str, v: &Value, a: &Attached) {
    assert_eq!(keys(v), sorted(FILES_COMMENT_KEYS), "{ctx}");
    assert_eq!(v["id"], a.comment, "{ctx}: comment id");
    assert_eq!(v["type"], "externalReference", "{ctx}");
    assert_eq!(v["externalReferenceAttachmentTypeId"], ".files", "{ctx}");
    assert_eq!(v["externalReferenceId"], a.id, "{ctx}: file id");
    assert_eq!(
        v["externalReferenceStorage"],
        json!({"type": "savedObject", "soType": "file"}),
        "{ctx}"
    );
    let files = v["externalReferenceMetadata"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{ctx}");
    let (stem, ext) = casegate::upload::split_ext(&a.name);
    assert_eq!(files[0]["name"], stem, "{ctx}");
    assert_eq!(files[0]["extension"], ext.unwrap_or(""), "{ctx}");
    assert_eq!(files[0]["mimeType"], a.stored.content_type, "{ctx}");
    assert!(files[0]["created"].is_string(), "{ctx}");
}

/// The parameters of a `Content-Disposition` value (names lower-cased), and its type.
fn disposition(v: &str) -> (String, BTreeMap<String, String>) {
    let mut parts = v.split(';').map(str::trim);
    let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
    let params = parts
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("{v}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (kind, params)
}

/// A download's `Content-Disposition`: `inline` only for images on a Tines front, the
/// name exact (RFC 6266 `filename*` for one outside ASCII, with an ASCII fallback).
fn check_disposition(ctx: &str, front: DialectId, value: &str, name: &str, content_type: &str) {
    let (kind, params) = disposition(value);
    let inline = front == Tines && content_type.starts_with("image/");
    assert_eq!(
        kind,
        if inline { "inline" } else { "attachment" },
        "{ctx}: {value}"
    );
    let plain = params
        .get("filename")
        .unwrap_or_else(|| panic!("{ctx}: {value}"));
    assert!(plain.is_ascii(), "{ctx}: {value}");
    if name.is_ascii() {
        assert_eq!(plain, &format!("\"{name}\""), "{ctx}: {value}");
    } else {
        let ext = params
            .get("filename*")
            .unwrap_or_else(|| panic!("{ctx}: no filename* in {value}"));
        let encoded = ext
            .strip_prefix("UTF-8''")
            .unwrap_or_else(|| panic!("{ctx}: {value}"));
        let decoded = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, name, "{ctx}: {value}");
    }
}

/// A download of `a`: its bytes, type, length and disposition.
fn check_download(h: &Harness, front: DialectId, a: &Attached, r: &Reply) {
    let ctx = format!("{front}->{} download {:?}", h.back, a.name);
    if a.data.is_empty() && front == Kibana && h.back == Kibana {
        // Kibana answers an empty file with 204; only its own clients get that.
        assert_eq!(r.status, 204, "{ctx}: {}", r.text());
        assert!(r.body.is_empty(), "{ctx}");
        return;
    }
    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
    assert!(r.header("casegate-error").is_none(), "{ctx}");
    assert_eq!(sha256_hex(&r.body), a.stored.sha256, "{ctx}: bytes");
    assert_eq!(
        r.header("content-length"),
        Some(a.data.len().to_string()),
        "{ctx}"
    );
    let ct = r.header("content-type").expect("a content type");
    let essence = ct.split(';').next().unwrap().trim().to_string();
    assert_eq!(essence, a.stored.content_type, "{ctx}");
    let cd = r
        .header("content-disposition")
        .unwrap_or_else(|| panic!("{ctx}: no Content-Disposition"));
    check_disposition(&ctx, front, &cd, &a.name, &essence);
}

/// A 404 in the front's form: `not_found` where casegate knew, `upstream_rejected` where
/// the upstream said so (SPEC 4 carries an upstream 404 over); a Thalamus client gets
/// 404 `FAILED` for an unknown id (7.1).
fn assert_gone(ctx: &str, front: DialectId, r: &Reply) {
    let code = r.header("casegate-error").unwrap_or_default();
    assert!(
        code == "not_found" || code == "upstream_rejected",
        "{ctx}: {} {code} {}",
        r.status,
        r.text()
    );
    assert_error(front, r, 404, &code, false);
}

/// A file id no route knows, in `front`'s form.
fn unknown_id(front: DialectId) -> String {
    match front {
        Thalamus | Tines => "987654321".into(),
        Caseiq => uuid::Uuid::new_v4().to_string(),
        Kibana => "no-such-file".into(),
    }
}

// ---- 1. every pairing ----

/// The ids `front`'s route lists for the case: from a back that lists a case (Tines,
/// Kibana), every file it holds there; from one that cannot (Thalamus, Case IQ), the
/// files casegate attached there through this route (7.2).
async fn expected_listing(
    h: &Harness,
    front: DialectId,
    case: &str,
    mine: &[Attached],
) -> BTreeSet<String> {
    if matches!(h.back, Tines | Kibana) {
        let mut ids = BTreeSet::new();
        for f in h.upstream.files().iter().filter(|f| f.case_id == case) {
            ids.insert(front_id_of(h, front, f).await);
        }
        ids
    } else {
        mine.iter().map(|a| a.id.clone()).collect()
    }
}

/// The list, checked: exactly the expected files, each entry its record; returns the
/// entries by front id.
async fn check_list(
    h: &Harness,
    c: &FrontClient,
    case: &str,
    mine: &[Attached],
) -> BTreeMap<String, Value> {
    let front = c.front;
    let query = if front == Tines { "per_page=500" } else { "" };
    let r = c.list(case, query).await;
    let ctx = format!("{front}->{} list: {}", h.back, r.text());
    assert_eq!(r.status, 200, "{ctx}");
    let v = r.json();
    let entries: Vec<(String, Value)> = match front {
        Tines => {
            assert_eq!(keys(&v), sorted(&["case_id", "files", "meta"]), "{ctx}");
            assert_case_id(&ctx, &v["case_id"], case);
            v["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    assert!(f["id"].is_u64(), "{ctx}");
                    (id_text(&f["id"]), f.clone())
                })
                .collect()
        }
        Caseiq => {
            assert_eq!(keys(&v), sorted(&["count", "records"]), "{ctx}");
            let records = v["records"].as_array().unwrap();
            assert_eq!(v["count"], records.len(), "{ctx}: count of this page");
            records
                .iter()
                .map(|f| {
                    assert!(f["id"].is_string(), "{ctx}");
                    (id_text(&f["id"]), f.clone())
                })
                .collect()
        }
        Kibana => {
            let sample: Value =
                serde_json::from_str(include_str!("fixtures/kibana-case-sample.json")).unwrap();
            for k in keys(&sample) {
                assert!(v.get(&k).is_some(), "{ctx}: case lacks {k}");
            }
            assert_eq!(v["id"], case, "{ctx}");
            v["comments"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["externalReferenceAttachmentTypeId"] == ".files")
                .map(|f| (id_text(&f["externalReferenceId"]), f.clone()))
                .collect()
        }
        Thalamus => panic!("thalamus has no list"),
    };
    let listed: BTreeSet<String> = entries.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(listed.len(), entries.len(), "{ctx}: an id listed twice");
    assert_eq!(
        listed,
        expected_listing(h, front, case, mine).await,
        "{ctx}"
    );
    let by_id: BTreeMap<String, Value> = entries.into_iter().collect();
    for a in mine {
        check_record(h, front, case, a, &by_id[&a.id]);
    }
    // Every link in the list leads to its file.
    if front == Tines {
        for (id, f) in &by_id {
            follow(h, c, f["file"]["url"].as_str().unwrap(), id).await;
        }
        for key in ["current_page", "previous_page", "next_page"] {
            if let Some(url) = v["meta"][key].as_str() {
                assert!(url.starts_with(&link_base(h, front)), "{ctx}: {key}");
                let again = c.follow(url).await;
                assert_eq!(again.status, 200, "{ctx}: {key} {}", again.text());
            }
        }
    }
    by_id
}

/// The links of an upload's answer lead to their files; Thalamus's answer lists every
/// file of the case the ledger knows (`mine`, the new one included).
async fn check_upload_links(h: &Harness, c: &FrontClient, a: &Attached, mine: &[Attached]) {
    let ctx = format!("{}->{} upload {:?}: {}", c.front, h.back, a.name, a.answer);
    match c.front {
        Thalamus => {
            let list = a.answer["attachments"]["attachements"].as_array().unwrap();
            let ids: BTreeSet<String> = list.iter().map(|e| id_text(&e["id"])).collect();
            let want: BTreeSet<String> = mine.iter().map(|m| m.id.clone()).collect();
            assert_eq!(ids, want, "{ctx}: every file of the case");
            for e in list {
                let id = id_text(&e["id"]);
                assert_number_id(&ctx, &e["id"], &id);
                let url = e["url"].as_str().unwrap();
                assert_eq!(
                    url,
                    format!("{}api/v4/cases/files/{id}", link_base(h, c.front)),
                    "{ctx}"
                );
                follow(h, c, url, &id).await;
            }
        }
        Tines => {
            check_record(h, Tines, &a.stored.case_id, a, &a.answer);
            follow(h, c, a.answer["file"]["url"].as_str().unwrap(), &a.id).await;
        }
        Caseiq | Kibana => {}
    }
}

/// Deletes `a` where both sides can: the front's answer, the file gone upstream, and then
/// a 404 for it in the front's form (Thalamus: 404 `FAILED`, and `false` for a delete).
/// A Case IQ back or front has no delete: 405, nothing sent.
async fn check_delete(h: &Harness, c: &FrontClient, case: &str, a: &Attached) {
    let front = c.front;
    let ctx = format!("{front}->{} delete {:?}", h.back, a.name);
    let calls = h.upstream.calls().len();
    h.ledger_row(front, &a.stored).await;
    let r = c.delete(case, &a.comment).await;
    if front == Caseiq || h.back == Caseiq {
        assert_error(front, &r, 405, "method_not_allowed", false);
        assert_eq!(h.upstream.calls().len(), calls, "{ctx}: nothing sent");
        assert!(
            h.upstream.files().iter().any(|f| f.id == a.stored.id),
            "{ctx}: still there"
        );
        return;
    }
    match front {
        Thalamus => {
            assert_eq!(r.status, 200, "{ctx}: {}", r.text());
            assert_eq!(r.json(), json!(true), "{ctx}");
        }
        _ => {
            assert_eq!(r.status, 204, "{ctx}: {}", r.text());
            assert!(r.body.is_empty(), "{ctx}");
        }
    }
    assert!(
        !h.upstream.files().iter().any(|f| f.id == a.stored.id),
        "{ctx}: gone from the upstream"
    );
    assert_eq!(
        h.ledger_rows(front, &a.stored).await,
        [],
        "{ctx}: gone from the ledger"
    );
    let r = c.download(case, &a.id).await;
    assert_gone(&format!("{ctx}: download after"), front, &r);
    if front != Thalamus {
        let r = c.get(case, &a.comment).await;
        assert_gone(&format!("{ctx}: get after"), front, &r);
    }
    let r = c.delete(case, &a.comment).await;
    match front {
        Thalamus => {
            assert_eq!(r.status, 200, "{ctx}: again: {}", r.text());
            assert_eq!(r.json(), json!(false), "{ctx}: again");
        }
        _ => assert_gone(&format!("{ctx}: again"), front, &r),
    }
}

async fn read_back_from(back: DialectId) {
    let h = setup(&DialectId::ALL, back, Opts::default()).await;
    let case = case_id_for(back);
    for front in DialectId::ALL {
        let c = h.client(front).await;
        let mut mine: Vec<Attached> = Vec::new();
        for (name, data) in files() {
            let a = attach(&h, &c, case, &name, &data).await;
            mine.push(a.clone());
            check_upload_links(&h, &c, &a, &mine).await;
        }
        let listed = if front == Thalamus {
            BTreeMap::new()
        } else {
            check_list(&h, &c, case, &mine).await
        };
        for a in &mine {
            let ctx = format!("{front}->{back} {:?}", a.name);
            if front != Thalamus {
                let r = c.get(case, &a.comment).await;
                assert_eq!(r.status, 200, "{ctx}: get: {}", r.text());
                let v = r.json();
                check_record(&h, front, case, a, &v);
                assert_eq!(v, listed[&a.id], "{ctx}: get and list agree");
                let upload_record = match front {
                    Kibana => file_comment_in(&a.answer, &a.id).unwrap(),
                    _ => a.answer.clone(),
                };
                assert_eq!(v, upload_record, "{ctx}: get and upload agree");
            }
            if front == Tines {
                let r = c.info(case, &a.id).await;
                assert_eq!(r.status, 200, "{ctx}: info: {}", r.text());
                let v = r.json();
                assert_eq!(
                    keys(&v),
                    sorted(&[
                        "content_type",
                        "filename",
                        "guid",
                        "md5",
                        "sha256",
                        "sizeinbytes"
                    ]),
                    "{ctx}: {v}"
                );
                assert_eq!(v["filename"], a.name, "{ctx}");
                assert_eq!(v["content_type"], a.stored.content_type, "{ctx}");
                assert_eq!(v["md5"], a.stored.md5, "{ctx}");
                assert_eq!(v["sha256"], a.stored.sha256, "{ctx}");
                assert_eq!(v["sizeinbytes"], a.data.len() as u64, "{ctx}");
                let guid = v["guid"].as_str().unwrap_or_default();
                assert!(uuid::Uuid::try_parse(guid).is_ok(), "{ctx}: {v}");
                let again = c.info(case, &a.id).await.json();
                assert_eq!(again, v, "{ctx}: info is stable");
            }
            let r = c.download(case, &a.id).await;
            check_download(&h, front, a, &r);
        }
        for a in mine
            .iter()
            .filter(|a| a.name == "empty.txt" || a.name == "photo.png")
        {
            check_delete(&h, &c, case, a).await;
        }
        // An id nobody gave out is 404 in the front's form.
        let unknown = unknown_id(front);
        let r = c.download(case, &unknown).await;
        assert_gone(&format!("{front}->{back} unknown download"), front, &r);
        if front != Thalamus {
            let r = c.get(case, &unknown).await;
            assert_gone(&format!("{front}->{back} unknown get"), front, &r);
        }
        if front == Thalamus && back != Caseiq {
            let r = c.delete(case, &unknown).await;
            assert_eq!(
                r.status,
                200,
                "thalamus->{back} unknown delete: {}",
                r.text()
            );
            assert_eq!(r.json(), json!(false), "thalamus->{back} unknown delete");
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn every_front_reads_back_from_thalamus() {
    read_back_from(Thalamus).await;
}

#[tokio::test]
async fn every_front_reads_back_from_tines() {
    read_back_from(Tines).await;
}

#[tokio::test]
async fn every_front_reads_back_from_caseiq() {
    read_back_from(Caseiq).await;
}

#[tokio::test]
async fn every_front_reads_back_from_kibana() {
    read_back_from(Kibana).await;
}

// ---- 2. paging ----

/// A case of `back` that no other test in a harness uses.
fn fresh_case(back: DialectId) -> String {
    match back {
        Thalamus | Tines => "777".into(),
        Caseiq => uuid::Uuid::new_v4().to_string(),
        Kibana => "case-paged".into(),
    }
}

/// A Tines page link: the front's list path under casegate, asking page `n` of `per_page`.
fn check_page_link(ctx: &str, h: &Harness, case: &str, link: &Value, n: u64, per_page: u64) {
    let url = link
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: link {link}"));
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    assert_eq!(
        path,
        format!("{}api/v2/cases/{case}/files", link_base(h, Tines)),
        "{ctx}"
    );
    let q: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(q.get("page"), Some(&n.to_string()), "{ctx}: {url}");
    assert_eq!(
        q.get("per_page"),
        Some(&per_page.to_string()),
        "{ctx}: {url}"
    );
}

async fn tines_pages_over(back: DialectId) {
    let h = setup(&[Tines, Caseiq], back, Opts::default()).await;
    let case = fresh_case(back);
    let c = h.client(Tines).await;
    let mut all = BTreeSet::new();
    for i in 0..5u8 {
        let a = attach(&h, &c, &case, &format!("page-{i}.txt"), &[b'a' + i; 7]).await;
        all.insert(a.id);
    }
    let (count, per_page) = (all.len() as u64, 2u64);
    let pages = count.div_ceil(per_page);
    let mut seen = BTreeSet::new();
    for n in 1..=pages {
        let r = c
            .list(&case, &format!("per_page={per_page}&page={n}"))
            .await;
        let ctx = format!("tines->{back} page {n}: {}", r.text());
        assert_eq!(r.status, 200, "{ctx}");
        let v = r.json();
        let files = v["files"].as_array().unwrap();
        let want_len = per_page.min(count - (n - 1) * per_page);
        assert_eq!(files.len() as u64, want_len, "{ctx}");
        for f in files {
            assert!(seen.insert(id_text(&f["id"])), "{ctx}: listed on two pages");
        }
        let m = &v["meta"];
        assert_eq!(
            keys(m),
            sorted(&[
                "count",
                "current_page",
                "next_page",
                "next_page_number",
                "pages",
                "per_page",
                "previous_page"
            ]),
            "{ctx}"
        );
        assert_eq!(m["per_page"], per_page, "{ctx}");
        assert_eq!(m["pages"], pages, "{ctx}");
        assert_eq!(m["count"], count, "{ctx}");
        check_page_link(&ctx, &h, &case, &m["current_page"], n, per_page);
        if n > 1 {
            check_page_link(&ctx, &h, &case, &m["previous_page"], n - 1, per_page);
        } else {
            assert!(m["previous_page"].is_null(), "{ctx}");
        }
        if n < pages {
            check_page_link(&ctx, &h, &case, &m["next_page"], n + 1, per_page);
            assert_eq!(m["next_page_number"], n + 1, "{ctx}");
            // Following the link gives the next page.
            let next = c.follow(m["next_page"].as_str().unwrap()).await;
            let direct = c
                .list(&case, &format!("per_page={per_page}&page={}", n + 1))
                .await;
            assert_eq!(next.status, 200, "{ctx}");
            assert_eq!(next.json(), direct.json(), "{ctx}: the next link");
        } else {
            assert!(m["next_page"].is_null(), "{ctx}");
            assert!(m["next_page_number"].is_null(), "{ctx}");
        }
    }
    assert_eq!(seen, all, "tines->{back}: the pages hold every file once");

    // per_page above 500 is read as 500; without it, 20.
    for (query, want) in [("per_page=600", 500u64), ("", 20)] {
        let r = c.list(&case, query).await;
        let ctx = format!("tines->{back} {query:?}: {}", r.text());
        assert_eq!(r.status, 200, "{ctx}");
        let v = r.json();
        assert_eq!(v["meta"]["per_page"], want, "{ctx}");
        assert_eq!(v["meta"]["pages"], 1, "{ctx}");
        assert_eq!(v["files"].as_array().unwrap().len() as u64, count, "{ctx}");
        assert!(v["meta"]["next_page"].is_null(), "{ctx}");
    }

    // Case IQ's `limit`, over the same back: `count` is the records of this page.
    let q = h.client(Caseiq).await;
    let mut mine = Vec::new();
    for i in 0..3u8 {
        mine.push(attach(&h, &q, &case, &format!("limit-{i}.txt"), &[b'k' + i; 5]).await);
    }
    // (A file first seen in a list gets its front id then: list once before asking.)
    assert_eq!(q.list(&case, "").await.status, 200);
    let everything = expected_listing(&h, Caseiq, &case, &mine).await;
    for (limit, want) in [(Some(2u64), 2usize), (Some(1), 1), (None, everything.len())] {
        let query = limit.map(|l| format!("limit={l}")).unwrap_or_default();
        let r = q.list(&case, &query).await;
        let ctx = format!("caseiq->{back} {query:?}: {}", r.text());
        assert_eq!(r.status, 200, "{ctx}");
        let v = r.json();
        let records = v["records"].as_array().unwrap();
        assert_eq!(records.len(), want, "{ctx}");
        assert_eq!(v["count"], want, "{ctx}");
        let ids: BTreeSet<String> = records.iter().map(|r| id_text(&r["id"])).collect();
        assert_eq!(ids.len(), want, "{ctx}");
        assert!(ids.is_subset(&everything), "{ctx}");
    }
    h.stop().await;
}

/// Over a Tines back (it pages itself), a Kibana one (its case lists every file: casegate
/// slices), and Case IQ and Thalamus ones (the ledger pages).
#[tokio::test]
async fn tines_and_caseiq_pages_over_a_paging_back() {
    tines_pages_over(Tines).await;
}

#[tokio::test]
async fn tines_and_caseiq_pages_over_a_whole_case() {
    tines_pages_over(Kibana).await;
}

#[tokio::test]
async fn tines_and_caseiq_pages_over_the_ledger() {
    tines_pages_over(Caseiq).await;
    tines_pages_over(Thalamus).await;
}

/// Kibana's `comments/_find`: the back's own page (user comments only, `perPage` capped at
/// 100) over a Kibana back; an empty page over any other.
#[tokio::test]
async fn kibana_find_pages_user_comments() {
    let h = setup(&[Kibana], Kibana, Opts::default()).await;
    let case = fresh_case(Kibana);
    let c = h.client(Kibana).await;
    attach(&h, &c, &case, "in-the-case.txt", b"file, not a comment").await;
    for i in 0..3 {
        let r = h
            .upstream_request(Method::POST, &format!("/api/cases/{case}/comments"))
            .header("kbn-xsrf", "true")
            .json(&json!({"type": "user", "comment": format!("comment {i}"), "owner": "cases"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for (query, page, per_page, len) in [
        ("page=2&perPage=2", 2u64, 2u64, 1usize),
        ("", 1, 20, 3),
        ("perPage=150", 1, 100, 3),
    ] {
        let path = format!("/api/cases/{case}/comments/_find?{query}");
        let r = c.call(Method::GET, &path).await;
        let ctx = format!("kibana->kibana {query:?}: {}", r.text());
        assert_eq!(r.status, 200, "{ctx}");
        let v = r.json();
        assert_eq!(
            keys(&v),
            sorted(&["comments", "page", "per_page", "total"]),
            "{ctx}"
        );
        assert_eq!(v["page"], page, "{ctx}");
        assert_eq!(v["per_page"], per_page, "{ctx}");
        assert_eq!(v["total"], 3, "{ctx}: user comments only");
        let comments = v["comments"].as_array().unwrap();
        assert_eq!(comments.len(), len, "{ctx}");
        assert!(comments.iter().all(|c| c["type"] == "user"), "{ctx}");
        // The back's own page, unchanged.
        let direct: Value = h
            .upstream_request(
                Method::GET,
                &format!("/api/cases/{case}/comments/_find?page={page}&perPage={per_page}"),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, direct, "{ctx}");
    }
    h.stop().await;

    let h = setup(&[Kibana], Tines, Opts::default()).await;
    let c = h.client(Kibana).await;
    let case = case_id_for(Tines);
    attach(&h, &c, case, "a.txt", b"a").await;
    for (query, page, per_page) in [("page=2&perPage=5", 2u64, 5u64), ("", 1, 20)] {
        let path = format!("/api/cases/{case}/comments/_find?{query}");
        let r = c.call(Method::GET, &path).await;
        let ctx = format!("kibana->tines {query:?}: {}", r.text());
        assert_eq!(r.status, 200, "{ctx}");
        assert_eq!(
            r.json(),
            json!({"comments": [], "page": page, "per_page": per_page, "total": 0}),
            "{ctx}"
        );
    }
    h.stop().await;
}

// ---- 3. ranges ----

/// `Range` passes to the back: a back that honours it (Tines, Kibana) gives 206 and those
/// bytes; one that ignores it (Thalamus, Case IQ) the whole file with 200.
#[tokio::test]
async fn ranges_pass_where_the_back_honours_them() {
    for back in DialectId::ALL {
        let h = setup(&DialectId::ALL, back, Opts::default()).await;
        let case = case_id_for(back);
        for front in DialectId::ALL {
            let c = h.client(front).await;
            let data = random_bytes(1000, 31);
            let a = attach(&h, &c, case, "ranged.txt", &data).await;
            let r = reply(
                c.download_request(case, &a.id)
                    .header("range", "bytes=10-19")
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let ctx = format!("{front}->{back} range: {:?}", r.headers);
            if matches!(back, Tines | Kibana) {
                assert_eq!(r.status, 206, "{ctx}");
                assert_eq!(r.body, &data[10..20], "{ctx}");
                assert_eq!(
                    r.header("content-range").as_deref(),
                    Some("bytes 10-19/1000"),
                    "{ctx}"
                );
                assert_eq!(r.header("content-length").as_deref(), Some("10"), "{ctx}");
            } else {
                assert_eq!(r.status, 200, "{ctx}");
                assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "{ctx}");
                assert!(r.header("content-range").is_none(), "{ctx}");
                assert_eq!(r.header("content-length").as_deref(), Some("1000"), "{ctx}");
            }
        }
        h.stop().await;
    }
}

// ---- 4. ids across a restart ----

/// A SQLite ledger in `dir`, for routes whose front ids must outlive casegate.
fn sqlite_ledger(dir: &std::path::Path) -> Opts {
    Opts {
        extra_top_keys: format!("ledger = \"sqlite://{}/l.sqlite3\"\n", dir.display()),
        ..Opts::default()
    }
}

/// Mapped front ids (Tines and Thalamus over Case IQ) are kept in the ledger: after a
/// restart the same ids list, get and download the same files, and new ones never reuse
/// them.
#[tokio::test]
async fn front_ids_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let o = sqlite_ledger(dir.path());
    let fronts = [Tines, Thalamus];
    let h = setup(&fronts, Caseiq, o.clone()).await;
    let case = case_id_for(Caseiq);
    let (t, th) = (h.client(Tines).await, h.client(Thalamus).await);
    let before = vec![
        attach(&h, &t, case, "first.pdf", &random_bytes(5000, 41)).await,
        attach(&h, &t, case, "second.txt", b"second").await,
    ];
    let old_thalamus = attach(&h, &th, case, "third.bin", &random_bytes(700, 42)).await;
    let listed_before = check_list(&h, &t, case, &before).await;

    let h = h.restart(&fronts, &o).await;
    let (t, th) = (h.client(Tines).await, h.client(Thalamus).await);
    let listed_after = check_list(&h, &t, case, &before).await;
    // The same ids list the same files (links name the new casegate's address).
    let without_links = |m: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        m.iter()
            .map(|(id, v)| {
                let mut v = v.clone();
                v["file"]["url"] = Value::Null;
                (id.clone(), v)
            })
            .collect()
    };
    assert_eq!(without_links(&listed_after), without_links(&listed_before));
    for a in &before {
        let r = t.get(case, &a.id).await;
        assert_eq!(r.status, 200, "{}", r.text());
        check_record(&h, Tines, case, a, &r.json());
        check_download(&h, Tines, a, &t.download(case, &a.id).await);
    }
    check_download(
        &h,
        Thalamus,
        &old_thalamus,
        &th.download(case, &old_thalamus.id).await,
    );
    let new = attach(&h, &t, case, "after.txt", b"after the restart").await;
    assert!(
        before.iter().all(|a| a.id != new.id),
        "a new id after the restart: {}",
        new.id
    );
    let new_thalamus = attach(&h, &th, case, "fourth.txt", b"fourth").await;
    assert_ne!(new_thalamus.id, old_thalamus.id);
    check_upload_links(
        &h,
        &th,
        &new_thalamus,
        &[old_thalamus, new_thalamus.clone()],
    )
    .await;
    h.stop().await;
}

/// An integer front id reserved for an upload that failed was never shown to anyone: the
/// next upload gets it, so failed uploads leave no gaps in a route's ids.
#[tokio::test]
async fn a_failed_uploads_reserved_id_goes_to_the_next_upload() {
    let h = setup(&[Tines], Caseiq, Opts::default()).await;
    let case = case_id_for(Caseiq);
    let t = h.client(Tines).await;
    let first = attach(&h, &t, case, "first.txt", b"first").await;
    let first_id: u64 = first.id.parse().unwrap();
    for fault in [Fault::Status(500), Fault::ResetBeforeAnswer] {
        h.upstream.set_fault(Some(fault.clone()));
        let r = t.upload(&upload_of(Tines, case, "lost.txt", b"lost")).await;
        assert!(r.status >= 500, "{fault:?}: {} {}", r.status, r.text());
        h.upstream.set_fault(None);
    }
    let second = attach(&h, &t, case, "second.txt", b"second").await;
    assert_eq!(
        second.id,
        (first_id + 1).to_string(),
        "the failed uploads' ids came back"
    );
    let third = attach(&h, &t, case, "third.txt", b"third").await;
    assert_eq!(third.id, (first_id + 2).to_string());
    h.stop().await;
}

/// A file casegate first sees in a list (attached straight to the upstream) gets its
/// front id then, keeps it on every list, and after a restart.
#[tokio::test]
async fn a_listed_files_id_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let o = sqlite_ledger(dir.path());
    let h = setup(&[Caseiq], Tines, o.clone()).await;
    let case = case_id_for(Tines);
    let data = random_bytes(4321, 43);
    let r = h
        .upstream_request(Method::POST, &format!("/api/v2/cases/{case}/files"))
        .json(&tines_body(&Up {
            file_name: "direct.txt".into(),
            data: data.clone(),
            ..Default::default()
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored = h.upstream.files().pop().unwrap();
    let list_ids = |v: Value| -> Vec<String> {
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| id_text(&r["id"]))
            .collect()
    };
    let q = h.client(Caseiq).await;
    let first = list_ids(q.list(case, "").await.json());
    assert_eq!(first.len(), 1, "{first:?}");
    let id = first[0].clone();
    assert!(uuid::Uuid::try_parse(&id).is_ok(), "{id}");
    assert_eq!(
        front_id_of(&h, Caseiq, &stored).await,
        id,
        "kept in the ledger"
    );
    assert_eq!(
        list_ids(q.list(case, "").await.json()),
        first,
        "same id again"
    );

    let h = h.restart(&[Caseiq], &o).await;
    let q = h.client(Caseiq).await;
    assert_eq!(
        list_ids(q.list(case, "").await.json()),
        first,
        "after a restart"
    );
    let r = q.get(case, &id).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    let r = q.download(case, &id).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    h.stop().await;
}

// ---- 5. case maps ----

const MAPPED_FRONT_CASE: &str = "42";

async fn case_map_routes(o: Opts) {
    let fronts = [Tines, Thalamus];
    let h = setup(&fronts, Caseiq, o).await;
    let back_case = case_id_for(Caseiq);
    let case = MAPPED_FRONT_CASE;
    let t = h.client(Tines).await;
    let a = attach(&h, &t, case, "mapped.txt", b"mapped case").await;
    assert_eq!(a.stored.case_id, back_case, "stored under the back's case");
    check_record(&h, Tines, case, &a, &a.answer);
    let listed = check_list(&h, &t, case, std::slice::from_ref(&a)).await;
    assert_eq!(listed.len(), 1);
    let r = t.get(case, &a.id).await;
    assert_eq!(r.status, 200, "{}", r.text());
    check_record(&h, Tines, case, &a, &r.json());
    check_download(&h, Tines, &a, &t.download(case, &a.id).await);
    let th = h.client(Thalamus).await;
    let b = attach(&h, &th, case, "mapped-too.txt", b"thalamus").await;
    assert_eq!(b.stored.case_id, back_case);
    check_download(&h, Thalamus, &b, &th.download(case, &b.id).await);

    // An unmapped case is 404 in the front's form, nothing sent.
    let other = "43";
    let calls = h.upstream.calls().len();
    let up = upload_of(Tines, other, "x.txt", b"x");
    assert_error(Tines, &t.upload(&up).await, 404, "not_found", false);
    assert_error(Tines, &t.list(other, "").await, 404, "not_found", false);
    assert_error(Tines, &t.get(other, &a.id).await, 404, "not_found", false);
    assert_error(Tines, &t.info(other, &a.id).await, 404, "not_found", false);
    assert_error(
        Tines,
        &t.download(other, &a.id).await,
        404,
        "not_found",
        false,
    );
    let up = upload_of(Thalamus, other, "x.txt", b"x");
    assert_error(Thalamus, &th.upload(&up).await, 404, "not_found", false);
    assert_eq!(h.upstream.calls().len(), calls, "nothing sent");
    assert_eq!(h.upstream.files().len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn case_map_inline() {
    case_map_routes(Opts {
        extra_route_tables: format!(
            "[routes.cases]\n\"{MAPPED_FRONT_CASE}\" = \"{}\"\n",
            case_id_for(Caseiq)
        ),
        ..Opts::default()
    })
    .await;
}

#[tokio::test]
async fn case_map_from_a_csv_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cases.csv");
    std::fs::write(
        &csv,
        format!("front,back\n{MAPPED_FRONT_CASE},{}\n", case_id_for(Caseiq)),
    )
    .unwrap();
    case_map_routes(Opts {
        extra_route_keys: format!("cases_file = {:?}\n", csv.display().to_string()),
        ..Opts::default()
    })
    .await;
}

// ---- 6. passthrough ----

fn passthrough() -> Opts {
    Opts {
        extra_route_keys: "passthrough = true\n".into(),
        ..Opts::default()
    }
}

/// Kibana over Kibana with `passthrough`: a comment POST (none of casegate's operations)
/// reaches the upstream with the route's credential and its answer comes back unchanged;
/// the client's credential is checked first; without `passthrough` the path is 404.
#[tokio::test]
async fn kibana_passthrough_forwards_other_requests_unchanged() {
    let h = setup(&[Kibana], Kibana, passthrough()).await;
    let case = fresh_case(Kibana);
    let c = h.client(Kibana).await;
    attach(&h, &c, &case, "first.txt", b"makes the case").await;
    let path = format!("/api/cases/{case}/comments");
    let body = json!({"type": "user", "comment": "through casegate", "owner": "cases"});
    let calls = h.upstream.calls().len();
    let r = reply(
        c.request(Method::POST, &format!("{}{path}", c.base))
            .header("kbn-xsrf", "true")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("casegate-error").is_none());
    let sent = h.upstream.calls();
    assert_eq!(sent.len(), calls + 1, "one call upstream");
    let call = sent.last().unwrap();
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", path.as_str())
    );
    assert!(call.header("kbn-xsrf").is_some(), "{call:?}");
    // The emulator only accepts casegate's upstream key, which the client never had.
    assert!(call.header("authorization").is_some(), "{call:?}");
    let stored = h.upstream.comments();
    assert_eq!(
        stored.last().map(|c| c.text.as_str()),
        Some("through casegate")
    );
    // Unchanged: the case as the upstream now holds it.
    let direct: Value = h
        .upstream_request(Method::GET, &format!("/api/cases/{case}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.json(), direct);

    // Kibana's own words pass too (the upstream answers them), the query as it was sent.
    let query = "search=a%20b+c&tags=x&tags=y&sortOrder=desc&flag&odd=%7E%2f";
    let calls = h.upstream.calls().len();
    let r = c
        .call(Method::GET, &format!("/api/cases/_find?{query}"))
        .await;
    let direct = h
        .upstream_request(Method::GET, "/api/cases/_find")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, direct.status().as_u16(), "{}", r.text());
    let call = &h.upstream.calls()[calls];
    assert_eq!(call.path, "/api/cases/_find");
    assert_eq!(call.query, query, "the query unchanged");

    // The client's credential first: a wrong one is 401, nothing sent.
    let wrong = FrontClient::new(&h.http, Kibana, &c.base, Cred::Wrong).await;
    let calls = h.upstream.calls().len();
    let r = reply(
        wrong
            .request(Method::POST, &format!("{}{path}", c.base))
            .header("kbn-xsrf", "true")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Kibana, &r, 401, "unauthorized", false);
    assert_eq!(h.upstream.calls().len(), calls, "nothing sent");
    h.stop().await;

    // Without passthrough: 404 in Kibana's form, nothing sent.
    let h = setup(&[Kibana], Kibana, Opts::default()).await;
    let c = h.client(Kibana).await;
    attach(&h, &c, &case, "first.txt", b"makes the case").await;
    let calls = h.upstream.calls().len();
    let r = reply(
        c.request(Method::POST, &format!("{}{path}", c.base))
            .header("kbn-xsrf", "true")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Kibana, &r, 404, "not_found", false);
    assert_eq!(h.upstream.calls().len(), calls, "nothing sent");
    h.stop().await;
}

/// Thalamus over Thalamus with `passthrough`: its list (`GET .../files`, not one of
/// casegate's operations) passes with the client's `token` query parameter dropped and
/// the upstream's credential in headers; notes pass too. Without `passthrough` the list is
/// a wrong method on the upload path (405) and notes are 404.
#[tokio::test]
async fn thalamus_passthrough_swaps_the_credential() {
    let h = setup(&[Thalamus], Thalamus, passthrough()).await;
    let case = case_id_for(Thalamus);
    let c = h.client(Thalamus).await;
    attach(&h, &c, case, "listed.txt", b"listed").await;
    let list = format!("/api/v4/cases/{case}/files");
    let calls = h.upstream.calls().len();
    let r = c
        .call(Method::GET, &format!("{list}?keep=me&q=a%20b"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = h.upstream.calls();
    assert_eq!(sent.len(), calls + 1);
    let call = sent.last().unwrap();
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("GET", list.as_str())
    );
    let query: BTreeMap<String, String> = form_urlencoded::parse(call.query.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        query,
        BTreeMap::from([
            ("keep".to_string(), "me".to_string()),
            ("q".to_string(), "a b".to_string())
        ]),
        "the client's touchpoint and token are not forwarded: {call:?}"
    );
    assert_eq!(call.query, "keep=me&q=a%20b", "the rest as it was sent");
    assert_eq!(
        call.header("thalamus-touchpoint"),
        Some("casegate"),
        "{call:?}"
    );
    assert!(call.header("thalamus-token").is_some(), "{call:?}");
    let direct: Value = h
        .upstream_request(Method::GET, &list)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.json(), direct, "unchanged");

    let notes = format!("{}/api/v4/cases/{case}/notes", c.base);
    let r = reply(
        c.request(Method::POST, &notes)
            .json(&json!({"description": "a note"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.upstream.comments().last().map(|c| c.text.as_str()),
        Some("a note")
    );

    let wrong = FrontClient::new(&h.http, Thalamus, &c.base, Cred::Wrong).await;
    let calls = h.upstream.calls().len();
    let r = wrong.call(Method::GET, &list).await;
    assert_error(Thalamus, &r, 401, "unauthorized", false);
    assert_eq!(h.upstream.calls().len(), calls, "nothing sent");
    h.stop().await;

    let h = setup(&[Thalamus], Thalamus, Opts::default()).await;
    let c = h.client(Thalamus).await;
    let calls = h.upstream.calls().len();
    let r = c.call(Method::GET, &list).await;
    assert_error(Thalamus, &r, 405, "method_not_allowed", false);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let notes = format!("{}/api/v4/cases/{case}/notes", c.base);
    let r = reply(
        c.request(Method::POST, &notes)
            .json(&json!({"description": "a note"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(Thalamus, &r, 404, "not_found", false);
    assert_eq!(h.upstream.calls().len(), calls, "nothing sent");
    h.stop().await;
}

// ---- 7. read failures ----

/// Whether a download's body came out broken: the read failed, or it is shorter than
/// its declared length. A complete-looking body with other bytes is never acceptable.
async fn assert_broken(ctx: &str, front: DialectId, resp: reqwest::Response, data: &[u8]) {
    let status = resp.status().as_u16();
    if status != 200 {
        // Told before the head went out: an upstream failure in the front's form.
        let r = reply(resp).await;
        let code = r.header("casegate-error").unwrap_or_default();
        let want = match code.as_str() {
            "upstream_timeout" => 504,
            "upstream_failed" | "upstream_unreachable" => 502,
            _ => panic!("{ctx}: {status} {code} {}", r.text()),
        };
        assert_error(front, &r, want, &code, true);
        return;
    }
    let declared = resp.content_length();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.bytes())
        .await
        .unwrap_or_else(|_| panic!("{ctx}: the body read hung"));
    match body {
        Err(_) => {}
        Ok(b) => {
            assert!(
                declared.is_some_and(|n| (b.len() as u64) < n) && b.len() < data.len(),
                "{ctx}: a complete-looking body ({} bytes, declared {declared:?})",
                b.len()
            );
        }
    }
}

async fn read_failures_over(back: DialectId) {
    let h = setup(
        &DialectId::ALL,
        back,
        Opts {
            timeout_secs: 1,
            ..Opts::default()
        },
    )
    .await;
    let case = case_id_for(back);
    let mut attached = Vec::new();
    for front in DialectId::ALL {
        let c = h.client(front).await;
        let data = random_bytes(300_000, 51);
        let a = attach(&h, &c, case, "big.zip", &data).await;
        attached.push((c, a));
    }
    // What reaches the upstream for a get or a list (the others answer from the ledger).
    let asks_record = back != Thalamus;
    let asks_list = matches!(back, Tines | Kibana);
    let reads = |c: &FrontClient, a: &Attached| {
        let mut v = vec![("download", c.download_path(case, &a.id))];
        if c.front != Thalamus && asks_record {
            v.push(("get", c.get_path(case, &a.comment)));
        }
        if c.front != Thalamus && asks_list {
            v.push(("list", c.list_path(case, "")));
        }
        v
    };

    // Unknown ids, and a wrong credential (nothing sent).
    for (c, a) in &attached {
        let unknown = unknown_id(c.front);
        let ctx = format!("{}->{back}", c.front);
        assert_gone(&ctx, c.front, &c.download(case, &unknown).await);
        if c.front != Thalamus {
            assert_gone(&ctx, c.front, &c.get(case, &unknown).await);
        }
        let wrong = FrontClient::new(&h.http, c.front, &c.base, Cred::Wrong).await;
        let calls = h.upstream.calls().len();
        for (op, path) in reads(c, a) {
            let r = wrong.call(Method::GET, &path).await;
            assert_error(c.front, &r, 401, "unauthorized", false);
            let _ = op;
        }
        assert_eq!(h.upstream.calls().len(), calls, "{ctx}: nothing sent");
    }

    // (Requests under one fault go at once: each waits out the upstream timeout.)
    for (fault, status, code) in [
        (Fault::Status(500), 502, "upstream_failed"),
        (
            Fault::Delay(Duration::from_secs(3)),
            504,
            "upstream_timeout",
        ),
    ] {
        h.upstream.set_fault(Some(fault.clone()));
        let all = attached.iter().flat_map(|(c, a)| {
            reads(c, a).into_iter().map(move |(op, path)| async move {
                let r = c.call(Method::GET, &path).await;
                (c.front, op, r)
            })
        });
        for (front, op, r) in join_all(all).await {
            let ctx = format!("{front}->{back} {op} under {fault}: {}", r.text());
            assert_eq!(r.header("casegate-error").as_deref(), Some(code), "{ctx}");
            assert_error(front, &r, status, code, true);
        }
    }

    // A download that breaks off, or whose body never comes: the client's read fails.
    for fault in [Fault::ResetMidBody, Fault::HeadersThenHang] {
        h.upstream.set_fault(Some(fault.clone()));
        let fault = &fault;
        join_all(attached.iter().map(|(c, a)| async move {
            let ctx = format!("{}->{back} download under {fault}", c.front);
            let resp = c.download_request(case, &a.id).send().await.unwrap();
            assert_broken(&ctx, c.front, resp, &a.data).await;
        }))
        .await;
    }
    h.upstream.set_fault(None);
    for (c, a) in &attached {
        check_download(&h, c.front, a, &c.download(case, &a.id).await);
    }

    // The upstream gone: 502 upstream_unreachable (a Thalamus client: 200 FAILED).
    let Harness {
        casegate, upstream, ..
    } = h;
    upstream.shutdown().await;
    for (c, a) in &attached {
        for (op, path) in reads(c, a) {
            let r = c.call(Method::GET, &path).await;
            let ctx = format!("{}->{back} {op}, upstream down", c.front);
            assert_eq!(
                r.header("casegate-error").as_deref(),
                Some("upstream_unreachable"),
                "{ctx}: {}",
                r.text()
            );
            assert_error(c.front, &r, 502, "upstream_unreachable", true);
        }
    }
    casegate.shutdown().await;
}

#[tokio::test]
async fn read_failures_over_thalamus() {
    read_failures_over(Thalamus).await;
}

#[tokio::test]
async fn read_failures_over_tines() {
    read_failures_over(Tines).await;
}

#[tokio::test]
async fn read_failures_over_caseiq() {
    read_failures_over(Caseiq).await;
}

#[tokio::test]
async fn read_failures_over_kibana() {
    read_failures_over(Kibana).await;
}

// ---- 8. Thalamus's FAILED ----

/// A download Thalamus answers 200 `FAILED` is a failure (502 `upstream_failed`; a
/// Thalamus client 200 `FAILED`), but a file whose bytes are `FAILED` downloads, and a
/// 6-byte file of other bytes is never passed off as `FAILED`.
#[tokio::test]
async fn thalamus_failed_downloads() {
    let h = setup(&DialectId::ALL, Thalamus, Opts::default()).await;
    let case = case_id_for(Thalamus);
    let mut attached = Vec::new();
    for front in DialectId::ALL {
        let c = h.client(front).await;
        let failed = attach(&h, &c, case, "failed.txt", b"FAILED").await;
        let six = attach(&h, &c, case, "six.txt", b"ABCDEF").await;
        let other = attach(&h, &c, case, "other.txt", b"not the word").await;
        check_download(&h, front, &failed, &c.download(case, &failed.id).await);
        attached.push((c, six, other));
    }
    h.upstream.set_fault(Some(Fault::Failed));
    for (c, six, other) in &attached {
        for a in [other, six] {
            let r = c.download(case, &a.id).await;
            let ctx = format!(
                "{}->thalamus {:?} under failed: {}",
                c.front,
                a.name,
                r.text()
            );
            assert_eq!(
                r.header("casegate-error").as_deref(),
                Some("upstream_failed"),
                "{ctx}"
            );
            assert_error(c.front, &r, 502, "upstream_failed", true);
        }
    }
    h.stop().await;
}

// ---- 9. Kibana's own rules ----

/// `kbn-xsrf` on deletes, not on reads; Kibana's own words are not case ids on a
/// translating route.
#[tokio::test]
async fn kibana_xsrf_and_words() {
    let h = setup(&[Kibana], Tines, Opts::default()).await;
    let case = case_id_for(Tines);
    let c = h.client(Kibana).await;
    let a = attach(&h, &c, case, "kept.txt", b"kept").await;
    let calls = h.upstream.calls().len();
    let r = c
        .call(Method::DELETE, &c.delete_path(case, &a.comment))
        .await;
    let m = assert_error(Kibana, &r, 400, "bad_request", false);
    assert_eq!(
        m.as_deref(),
        Some("Request must contain a kbn-xsrf header.")
    );
    assert_eq!(h.upstream.calls().len(), calls, "nothing sent");
    assert!(h.upstream.files().iter().any(|f| f.id == a.stored.id));
    // GETs need no kbn-xsrf (FrontClient sends none on them).
    assert_eq!(c.list(case, "").await.status, 200);
    assert_eq!(c.get(case, &a.comment).await.status, 200);
    check_download(&h, Kibana, &a, &c.download(case, &a.id).await);
    for word in [
        "_find",
        "tags",
        "reporters",
        "configure",
        "status",
        "alerts",
        "_x",
    ] {
        let calls = h.upstream.calls().len();
        let r = c.call(Method::GET, &format!("/api/cases/{word}")).await;
        assert_error(Kibana, &r, 404, "not_found", false);
        assert_eq!(h.upstream.calls().len(), calls, "{word}: nothing sent");
    }
    h.stop().await;
}

/// A Kibana client in a space over a Kibana back: every operation stays in the space.
#[tokio::test]
async fn kibana_space_reads_back() {
    let h = setup(&[Kibana], Kibana, Opts::default()).await;
    let case = "case-in-ops";
    let base = format!("{}{}/s/ops", h.base(), Harness::prefix(Kibana));
    let c = h.client(Kibana).await.under(&base);
    let a = attach(&h, &c, case, "spaced.pdf", &random_bytes(2000, 61)).await;
    assert_eq!(a.stored.space.as_deref(), Some("ops"));
    let listed = check_list(&h, &c, case, std::slice::from_ref(&a)).await;
    let r = c.get(case, &a.comment).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), listed[&a.id]);
    check_download(&h, Kibana, &a, &c.download(case, &a.id).await);
    let r = c.delete(case, &a.comment).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(h.upstream.files().is_empty());
    let calls = h.upstream.calls();
    assert!(
        calls.iter().all(|c| c.path.starts_with("/s/ops/")),
        "{calls:?}"
    );
    // Outside the space the case is not there.
    let outside = h.client(Kibana).await;
    let r = outside.list(case, "").await;
    assert_gone("kibana outside the space", Kibana, &r);
    h.stop().await;
}

// ---- files of other cases ----

/// A file is read only under its own case: under another case id its get, info and
/// download are 404, whether casegate attached it through the route or it reached the
/// upstream another way (another route of the same upstream).
#[tokio::test]
async fn files_of_other_cases_are_not_found() {
    for back in DialectId::ALL {
        let h = setup(&DialectId::ALL, back, Opts::default()).await;
        let case = case_id_for(back);
        let other = match back {
            Thalamus | Tines => "4343".to_string(),
            Caseiq => uuid::Uuid::new_v4().to_string(),
            Kibana => "case-other".to_string(),
        };
        // Every front's own file, and one attached through the Case IQ route.
        let q = h.client(Caseiq).await;
        let foreign = attach(&h, &q, case, "foreign.txt", b"foreign").await;
        for front in [Tines, Kibana] {
            let c = h.client(front).await;
            let own = attach(&h, &c, case, "own.txt", b"own").await;
            let foreign_id = front_id_of(&h, front, &foreign.stored).await;
            let mut named = vec![(own.id.clone(), own.comment.clone())];
            if ids_fit(front, back) {
                // Its id on this route is the back's: a client could name it.
                let comment = if back == Kibana {
                    h.ledger_row(Caseiq, &foreign.stored)
                        .await
                        .back_comment_id
                        .unwrap()
                } else {
                    foreign_id.clone()
                };
                named.push((foreign_id, comment));
            }
            for (id, comment) in named {
                let ctx = format!("{front}->{back} {id} under case {other}");
                let r = c.get(&other, &comment).await;
                assert_gone(&format!("{ctx}: get: {}", r.text()), front, &r);
                if front == Tines {
                    let r = c.info(&other, &id).await;
                    assert_gone(&format!("{ctx}: info: {}", r.text()), front, &r);
                    let r = c.download(&other, &id).await;
                    assert_gone(&format!("{ctx}: download"), front, &r);
                }
            }
        }
        h.stop().await;
    }
}

/// A Case IQ client lists files casegate never attached through its route (over a Tines
/// or Kibana back, which list a case themselves without sizes): each record's `sizeBytes`
/// is the file's size, asked of the back once and then kept in the ledger.
#[tokio::test]
async fn caseiq_lists_sizes_of_files_it_did_not_attach() {
    for back in [Tines, Kibana] {
        let h = setup(&[back, Caseiq], back, Opts::default()).await;
        let case = case_id_for(back);
        let other = h.client(back).await;
        let a = attach(&h, &other, case, "seven.txt", b"7 bytes").await;
        let b = attach(&h, &other, case, "empty.txt", b"").await;
        let q = h.client(Caseiq).await;
        let r = q.list(case, "").await;
        assert_eq!(r.status, 200, "{back}: {}", r.text());
        let v = r.json();
        for (stored, size) in [(&a.stored, 7), (&b.stored, 0)] {
            let id = front_id_of(&h, Caseiq, stored).await;
            let record = v["records"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == id.as_str())
                .cloned()
                .unwrap_or_else(|| panic!("{back}: {v}"));
            assert_eq!(record["sizeBytes"], size, "{back}: {record}");
        }
        // Kept: the next list asks the back for its list alone.
        let calls = h.upstream.calls().len();
        let again = q.list(case, "").await.json();
        assert_eq!(again, v, "{back}");
        assert_eq!(
            h.upstream.calls().len(),
            calls + 1,
            "{back}: {:?}",
            h.upstream.calls()
        );
        let id = front_id_of(&h, Caseiq, &a.stored).await;
        let r = q.get(case, &id).await;
        assert_eq!(r.json()["sizeBytes"], 7, "{back}: {}", r.text());
        h.stop().await;
    }
}

// ---- links at public_url, hashes kept, and smaller rules ----

/// Links are at `public_url` (the route's over the top-level one), under the route's
/// prefix, and lead to the file once that base is casegate's.
#[tokio::test]
async fn links_are_at_public_url() {
    for (top, route, want) in [
        (
            Some("https://gw.example.org/edge/"),
            None,
            "https://gw.example.org/edge",
        ),
        (
            Some("https://gw.example.org"),
            Some("https://soar.example.org:8443"),
            "https://soar.example.org:8443",
        ),
    ] {
        let o = Opts {
            extra_top_keys: top
                .map(|u| format!("public_url = {u:?}\n"))
                .unwrap_or_default(),
            extra_route_keys: route
                .map(|u| format!("public_url = {u:?}\n"))
                .unwrap_or_default(),
            ..Opts::default()
        };
        let h = setup(&[Tines, Thalamus], Tines, o).await;
        let case = case_id_for(Tines);
        for front in [Tines, Thalamus] {
            let c = h.client(front).await;
            attach(&h, &c, case, "first.txt", b"first").await;
            let a = attach(&h, &c, case, "linked.txt", b"linked").await;
            let mut links = Vec::new();
            match front {
                Tines => {
                    links.push(a.answer["file"]["url"].as_str().unwrap().to_string());
                    let v = c.list(case, "per_page=1").await.json();
                    for f in v["files"].as_array().unwrap() {
                        links.push(f["file"]["url"].as_str().unwrap().to_string());
                    }
                    for key in ["current_page", "next_page"] {
                        links.push(v["meta"][key].as_str().unwrap().to_string());
                    }
                }
                _ => {
                    for e in a.answer["attachments"]["attachements"].as_array().unwrap() {
                        links.push(e["url"].as_str().unwrap().to_string());
                    }
                }
            }
            let public = format!("{want}{}/", Harness::prefix(front));
            for link in links {
                let rest = link
                    .strip_prefix(&public)
                    .unwrap_or_else(|| panic!("{front}: {link} is not under {public}"));
                let local = format!("{}{}/{rest}", h.base(), Harness::prefix(front));
                let r = c.follow(&local).await;
                assert_eq!(r.status, 200, "{front}: {local}: {}", r.text());
            }
            let local = format!(
                "{}{}/{}",
                h.base(),
                Harness::prefix(front),
                match front {
                    Tines => format!("api/v2/cases/{case}/files/{}/download", a.id),
                    _ => format!("api/v4/cases/files/{}", a.id),
                }
            );
            assert_eq!(sha256_hex(&c.follow(&local).await.body), a.stored.sha256);
        }
        h.stop().await;
    }
}

/// Tines `info` over a back without one: the hashes are computed once by reading the
/// file from the upstream, then kept (no second download).
#[tokio::test]
async fn info_hashes_are_computed_once() {
    for back in [Thalamus, Caseiq, Kibana] {
        let h = setup(&[Tines], back, Opts::default()).await;
        let case = case_id_for(back);
        let c = h.client(Tines).await;
        let a = attach(&h, &c, case, "hashed.zip", &random_bytes(200_000, 71)).await;
        let downloads = |h: &Harness| {
            h.upstream
                .calls()
                .iter()
                .filter(|call| {
                    call.method == "GET"
                        && (call.path.ends_with("/attachment")
                            || call.path.ends_with("/blob")
                            || call.path.starts_with("/api/v4/cases/files/"))
                })
                .count()
        };
        let before = downloads(&h);
        let first = c.info(case, &a.id).await;
        assert_eq!(first.status, 200, "tines->{back}: {}", first.text());
        assert_eq!(first.json()["sha256"], a.stored.sha256, "tines->{back}");
        assert_eq!(first.json()["md5"], a.stored.md5, "tines->{back}");
        assert_eq!(downloads(&h), before + 1, "tines->{back}: read once");
        let second = c.info(case, &a.id).await;
        assert_eq!(second.json(), first.json(), "tines->{back}");
        assert_eq!(downloads(&h), before + 1, "tines->{back}: then kept");
        h.stop().await;
    }
}

/// After a delete, Thalamus's next upload answer no longer lists the file; the list is
/// the ledger's (no upstream call besides the upload).
#[tokio::test]
async fn thalamus_lists_what_is_left_after_a_delete() {
    for back in [Thalamus, Tines, Kibana] {
        let h = setup(&[Thalamus], back, Opts::default()).await;
        let case = case_id_for(back);
        let c = h.client(Thalamus).await;
        let a = attach(&h, &c, case, "a.txt", b"a").await;
        let b = attach(&h, &c, case, "b.txt", b"b").await;
        let r = c.delete(case, &a.id).await;
        assert_eq!(r.json(), json!(true), "thalamus->{back}: {}", r.text());
        let calls = h.upstream.calls().len();
        let n = attach(&h, &c, case, "c.txt", b"c").await;
        let sent = h.upstream.calls();
        let sent: Vec<&str> = sent[calls..].iter().map(|c| c.method.as_str()).collect();
        assert_eq!(sent, ["POST"], "thalamus->{back}: the list is the ledger's");
        check_upload_links(&h, &c, &n, &[b, n.clone()]).await;
        h.stop().await;
    }
}

/// A range beyond the file, through a back that honours ranges: the upstream's 416 in
/// the front's form.
#[tokio::test]
async fn unsatisfiable_ranges_are_416() {
    for back in [Tines, Kibana] {
        let h = setup(&DialectId::ALL, back, Opts::default()).await;
        let case = case_id_for(back);
        for front in DialectId::ALL {
            let c = h.client(front).await;
            let a = attach(&h, &c, case, "short.txt", &random_bytes(100, 81)).await;
            let r = reply(
                c.download_request(case, &a.id)
                    .header("range", "bytes=500-600")
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_error(front, &r, 416, "upstream_rejected", true);
        }
        h.stop().await;
    }
}

/// Kibana's blob route with the file name after it; Case IQ's list without a case is a
/// 400 in its form.
#[tokio::test]
async fn kibana_named_blob_and_caseiq_list_without_case() {
    let h = setup(&[Kibana, Caseiq], Tines, Opts::default()).await;
    let case = case_id_for(Tines);
    let c = h.client(Kibana).await;
    let a = attach(&h, &c, case, "named.pdf", &random_bytes(999, 91)).await;
    let path = format!("{}/named.pdf", c.download_path(case, &a.id));
    check_download(&h, Kibana, &a, &c.call(Method::GET, &path).await);
    let q = h.client(Caseiq).await;
    let calls = h.upstream.calls().len();
    let r = q.call(Method::GET, "/api-public/1.0/attachments").await;
    assert_error(Caseiq, &r, 400, "bad_request", false);
    assert_eq!(h.upstream.calls().len(), calls);
    h.stop().await;
}

/// Files casegate first sees in lists, listed by many requests at once on a route that
/// maps ids: every answer gives each file the one id the ledger holds (7.3: the first
/// record wins).
#[tokio::test]
async fn concurrent_lists_agree_on_new_ids() {
    let h = setup(&[Caseiq], Tines, Opts::default()).await;
    let case = case_id_for(Tines);
    for i in 0..6u8 {
        let r = h
            .upstream_request(Method::POST, &format!("/api/v2/cases/{case}/files"))
            .json(&tines_body(&Up {
                file_name: format!("direct-{i}.txt"),
                data: vec![b'0' + i; 10],
                ..Default::default()
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let q = h.client(Caseiq).await;
    let lists = join_all((0..8).map(|_| q.list(case, ""))).await;
    let mut seen: Option<BTreeSet<String>> = None;
    for r in lists {
        assert_eq!(r.status, 200, "{}", r.text());
        let ids: BTreeSet<String> = r.json()["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| id_text(&r["id"]))
            .collect();
        assert_eq!(ids.len(), 6);
        match &seen {
            None => seen = Some(ids),
            Some(first) => assert_eq!(&ids, first, "every list gives the same ids"),
        }
    }
    let mut held = BTreeSet::new();
    for f in h.upstream.files() {
        held.insert(h.ledger_row(Caseiq, &f).await.front_id);
    }
    assert_eq!(Some(held), seen, "the ledger's ids");
    h.stop().await;
}

/// A Thalamus answer lists the case's files from the ledger: at most
/// `CASE_FILES_MAX` of them (the oldest) and always the new one, so that neither the
/// answer nor what casegate reads for it grows without bound with the case.
#[tokio::test]
async fn thalamus_lists_at_most_the_cap_and_always_the_new_file() {
    let back = Tines;
    let h = setup(&[Thalamus], back, Opts::default()).await;
    let case = case_id_for(back);
    let max = casegate::upload::CASE_FILES_MAX;
    let first = 1_000_000u64;
    let rows: Vec<casegate::ledger::Row> = (0..max + 5)
        .map(|i| casegate::ledger::Row {
            route: h.route(Thalamus),
            front_id: (first + i).to_string(),
            back_id: format!("elsewhere-{i}"),
            front_case: Some(case.to_string()),
            ..Default::default()
        })
        .collect();
    h.casegate.gateway().ledger().record(rows).await.unwrap();
    let c = h.client(Thalamus).await;
    let n = attach(&h, &c, case, "new.txt", b"new").await;
    let list = n.answer["attachments"]["attachements"].as_array().unwrap();
    assert_eq!(
        list.len() as u64,
        max + 1,
        "the oldest {max}, then the new one"
    );
    let ids: Vec<String> = list.iter().map(|e| id_text(&e["id"])).collect();
    let oldest: Vec<String> = (first..first + max).map(|i| i.to_string()).collect();
    assert_eq!(ids[..max as usize], oldest[..]);
    assert_eq!(ids[max as usize], n.id);
    let base = link_base(&h, Thalamus);
    for (e, id) in list.iter().zip(&ids) {
        assert_eq!(e["url"], format!("{base}api/v4/cases/files/{id}"));
    }
    follow(&h, &c, list[max as usize]["url"].as_str().unwrap(), &n.id).await;
    h.stop().await;
}
