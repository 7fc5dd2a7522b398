//! All 16 pairings: every front dialect's client uploads through casegate to every back
//! dialect's emulator, with files of 0 bytes, 1 byte, 1 MiB of random bytes, and a
//! non-ASCII name. What the upstream stored is checked byte for byte (sha256), with its
//! name, type and the mapped fields; the answer is checked field by field against the
//! front dialect's documented shape, and `Casegate-Dropped` names exactly the fields the
//! back cannot carry.

mod common;

use casegate::dialect::DialectId;
use casegate::emulator::StoredFile;
use common::*;
use serde_json::Value;

fn files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("empty.txt".into(), vec![]),
        ("one.txt".into(), b"x".to_vec()),
        ("random.zip".into(), random_bytes(1024 * 1024, 7)),
        ("Prüfbericht ü 2026.pdf".into(), random_bytes(10_000, 11)),
    ]
}

fn guess(name: &str) -> String {
    casegate::upload::guess_type(name).into_owned()
}

/// The upload a front's client sends, with every field its dialect has.
fn upload_for(front: DialectId, back: DialectId, name: &str, data: &[u8]) -> Up {
    let mut up = Up {
        case_id: case_id_for(back).into(),
        file_name: name.into(),
        data: data.to_vec(),
        ..Default::default()
    };
    match front {
        Tines => {
            up.comment = Some("Attached by the pairing test: ü & \"quotes\"".into());
            up.author_email = Some("analyst@example.org".into());
            up.block_id = Some(42);
        }
        Caseiq => {
            up.comment = Some("Attached by the pairing test: ü & \"quotes\"".into());
            up.locale = Some("de_DE".into());
            up.tags = vec!["t-1".into(), "t-2".into()];
            up.content_type = Some(guess(name));
        }
        Kibana => {
            // kibana-py sends the name with its extension in the `filename` field.
            up.display_name = Some(name.into());
            up.content_type = Some(guess(name));
        }
        Thalamus => up.content_type = Some(guess(name)),
    }
    up
}

/// The fields a front sends that `back` cannot store, in the client's names.
fn expected_dropped(front: DialectId, back: DialectId) -> Vec<String> {
    let mut d: Vec<&str> = match (front, back) {
        (Tines, Tines) => vec![],
        (Tines, _) => vec!["author_email", "team_case_block_id"],
        (Caseiq, Caseiq) => vec![],
        (Caseiq, _) => vec!["bulkTags[]", "templateLocale"],
        _ => vec![],
    };
    d.sort();
    d.into_iter().map(String::from).collect()
}

fn check_stored(
    front: DialectId,
    back: DialectId,
    up: &Up,
    stored: &StoredFile,
    h: &Harness,
    comments_before: usize,
) {
    let ctx = format!("{front}->{back} {:?}", up.file_name);
    assert_eq!(stored.sha256, sha256_hex(&up.data), "{ctx}: bytes");
    assert_eq!(stored.size, up.data.len() as u64, "{ctx}: size");
    assert_eq!(stored.case_id, up.case_id, "{ctx}: case");
    assert_eq!(stored.name, up.file_name, "{ctx}: name");
    assert_eq!(stored.content_type, guess(&up.file_name), "{ctx}: type");
    let f = fields(stored);
    let comment = up.comment.clone();
    match back {
        Tines => {
            assert_eq!(
                f.get("value").cloned(),
                comment.map(|c| vec![c]),
                "{ctx}: value"
            );
            if front == Tines {
                assert_eq!(f["author_email"], ["analyst@example.org"], "{ctx}");
                assert_eq!(f["team_case_block_id"], ["42"], "{ctx}");
            } else {
                assert!(
                    !f.contains_key("author_email") && !f.contains_key("team_case_block_id"),
                    "{ctx}: {f:?}"
                );
            }
        }
        Caseiq => {
            assert_eq!(f["caseId"], std::slice::from_ref(&up.case_id), "{ctx}");
            assert_eq!(
                f.get("description").cloned(),
                comment.map(|c| vec![c]),
                "{ctx}: description"
            );
            if front == Caseiq {
                assert_eq!(f["bulkTags[]"], ["t-1", "t-2"], "{ctx}: tags");
                assert_eq!(f["templateLocale"], ["de_DE"], "{ctx}: locale");
            } else {
                assert!(
                    !f.contains_key("bulkTags[]") && !f.contains_key("templateLocale"),
                    "{ctx}: {f:?}"
                );
            }
        }
        Kibana => {
            let stem = casegate::upload::split_ext(&up.file_name).0.to_string();
            assert_eq!(f["filename"], [stem], "{ctx}: display name");
            assert_eq!(stored.part_filename, up.file_name, "{ctx}: part filename");
            check_comment(&ctx, h, comments_before, comment);
        }
        Thalamus => {
            check_comment(&ctx, h, comments_before, comment);
        }
    }
}

/// The second call stored exactly the upload's comment, or nothing.
fn check_comment(ctx: &str, h: &Harness, before: usize, comment: Option<String>) {
    let all: Vec<String> = h.upstream.comments().into_iter().map(|c| c.text).collect();
    match comment {
        Some(c) => {
            assert_eq!(all.len(), before + 1, "{ctx}: {all:?}");
            assert_eq!(all.last(), Some(&c), "{ctx}: comment");
        }
        None => assert_eq!(all.len(), before, "{ctx}: {all:?}"),
    }
}

/// Whether the back's ids fit the front's form, so the front id is the back id (SPEC 7.3).
fn ids_fit(front: DialectId, back: DialectId) -> bool {
    let integer = |d| matches!(d, Thalamus | Tines);
    front == back || front == Kibana || (integer(front) && integer(back))
}

/// The front id the ledger holds for a stored file, checked against SPEC 7.3's forms.
async fn front_id(h: &Harness, front: DialectId, stored: &StoredFile) -> String {
    let route = format!("{front}-to-{}", h.back);
    let rows = h
        .casegate
        .gateway()
        .ledger()
        .by_back(&route, vec![stored.id.clone()])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{route}: one ledger row for {}", stored.id);
    let id = rows[0].front_id.clone();
    if ids_fit(front, h.back) {
        assert_eq!(id, stored.id, "{route}: the front id is the back's");
    } else {
        assert_ne!(id, stored.id, "{route}: a front id of the front's own form");
    }
    match front {
        Thalamus | Tines => assert!(id.parse::<u64>().is_ok(), "{route}: {id} is an integer"),
        Caseiq => assert!(
            uuid::Uuid::try_parse(&id).is_ok(),
            "{route}: {id} is a UUID"
        ),
        Kibana => {}
    }
    id
}

fn check_answer(
    front: DialectId,
    back: DialectId,
    up: &Up,
    stored: &StoredFile,
    front_id: &str,
    r: &Reply,
) {
    let ctx = format!("{front}->{back} {:?}: {}", up.file_name, r.text());
    assert_eq!(r.status, 200, "{ctx}");
    assert_eq!(r.dropped(), expected_dropped(front, back), "{ctx}: dropped");
    assert!(r.header("casegate-error").is_none(), "{ctx}");
    let id_json = casegate::upload::id_json(front_id);
    match front {
        Thalamus => {
            let v = r.json();
            assert_eq!(keys(&v), sorted(&["attachments", "context"]), "{ctx}");
            let p = &v["context"]["simpleProfile"];
            assert_eq!(
                keys(p),
                sorted(&["email", "firstname", "lastname"]),
                "{ctx}"
            );
            assert!(
                p.as_object().unwrap().values().all(Value::is_string),
                "{ctx}"
            );
            assert_eq!(keys(&v["attachments"]), sorted(&["attachements"]), "{ctx}");
            let list = v["attachments"]["attachements"].as_array().unwrap();
            for a in list {
                assert_eq!(keys(a), sorted(&["id", "url"]), "{ctx}");
                assert!(a["url"].as_str().is_some_and(|u| !u.is_empty()), "{ctx}");
            }
            assert!(
                list.iter().any(|a| a["id"] == id_json),
                "{ctx}: new attachment listed"
            );
            if back == Thalamus {
                assert_eq!(p["firstname"], "Thea", "{ctx}");
            }
        }
        Tines => {
            let v = r.json();
            let mut want = vec![
                "activity_type",
                "case_id",
                "created_at",
                "file",
                "id",
                "user",
                "value",
            ];
            if back == Tines {
                want.push("block_id");
            }
            assert_eq!(keys(&v), sorted(&want), "{ctx}");
            assert_eq!(
                v["case_id"],
                casegate::upload::id_json(&up.case_id),
                "{ctx}"
            );
            assert_eq!(v["id"], id_json, "{ctx}");
            assert_eq!(v["activity_type"], "FILE_ATTACHED_AND_COMMENTED", "{ctx}");
            assert_eq!(v["value"].as_str(), up.comment.as_deref(), "{ctx}");
            assert!(
                v["created_at"].as_str().is_some_and(|s| s.ends_with('Z')),
                "{ctx}"
            );
            assert_eq!(keys(&v["file"]), sorted(&["filename", "url"]), "{ctx}");
            assert_eq!(v["file"]["filename"], up.file_name, "{ctx}");
            assert!(
                v["file"]["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("http")),
                "{ctx}"
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
            assert!(v["user"]["is_service_account"].is_boolean(), "{ctx}");
            if back == Tines {
                assert_eq!(v["block_id"], "42", "{ctx}");
                assert_eq!(v["user"]["user_id"], 1, "{ctx}");
            } else {
                assert!(
                    v["user"]["user_id"].is_null(),
                    "{ctx}: unknown user id is null"
                );
            }
        }
        Caseiq => {
            let v = r.json();
            assert_eq!(
                keys(&v),
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
            assert_eq!(v["id"], front_id, "{ctx}: id is a string");
            assert_eq!(v["name"], up.file_name, "{ctx}");
            assert_eq!(
                v["nameWithoutExtension"],
                casegate::upload::split_ext(&up.file_name).0,
                "{ctx}"
            );
            assert_eq!(v["encoding"], "7bit", "{ctx}");
            assert_eq!(v["mimeType"], guess(&up.file_name), "{ctx}");
            assert_eq!(v["objectId"], up.case_id, "{ctx}");
            assert_eq!(v["sizeBytes"], up.data.len() as u64, "{ctx}");
            assert!(
                v["createdDate"].as_str().is_some_and(|s| s.ends_with('Z')),
                "{ctx}"
            );
        }
        Kibana => {
            let v = r.json();
            let sample: Value =
                serde_json::from_str(include_str!("fixtures/kibana-case-sample.json")).unwrap();
            for k in keys(&sample) {
                assert!(v.get(&k).is_some(), "{ctx}: case lacks {k}");
            }
            assert_eq!(v["id"], up.case_id, "{ctx}");
            let comments = v["comments"].as_array().unwrap();
            let file = comments
                .iter()
                .find(|c| c["externalReferenceId"] == stored.id)
                .unwrap_or_else(|| panic!("{ctx}: no .files comment for {}", stored.id));
            assert_eq!(file["type"], "externalReference", "{ctx}");
            assert_eq!(file["externalReferenceAttachmentTypeId"], ".files", "{ctx}");
            assert_eq!(
                file["externalReferenceStorage"],
                serde_json::json!({"type": "savedObject", "soType": "file"}),
                "{ctx}"
            );
            let meta = &file["externalReferenceMetadata"]["files"][0];
            let (stem, ext) = casegate::upload::split_ext(&up.file_name);
            assert_eq!(meta["name"], stem, "{ctx}");
            assert_eq!(meta["extension"], ext.unwrap_or(""), "{ctx}");
            assert_eq!(meta["mimeType"], guess(&up.file_name), "{ctx}");
            assert!(meta["created"].is_string(), "{ctx}");
            if back != Kibana {
                assert_eq!(
                    comments.len(),
                    1,
                    "{ctx}: synthesised case holds the one file"
                );
            }
        }
    }
}

async fn pairings_to(back: DialectId) {
    let h = setup(&DialectId::ALL, back, Opts::default()).await;
    for front in DialectId::ALL {
        for (name, data) in files() {
            let before = h.upstream.files().len();
            let comments_before = h.upstream.comments().len();
            let up = upload_for(front, back, &name, &data);
            let base = format!("{}{}", h.base(), Harness::prefix(front));
            let r = send(&h.http, front, &base, &up, Cred::Good).await;
            let stored = h.upstream.files();
            assert_eq!(
                stored.len(),
                before + 1,
                "{front}->{back} {name}: {}",
                r.text()
            );
            let newest = stored.last().unwrap();
            check_stored(front, back, &up, newest, &h, comments_before);
            let front_id = front_id(&h, front, newest).await;
            check_answer(front, back, &up, newest, &front_id, &r);
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn every_front_to_thalamus() {
    pairings_to(Thalamus).await;
}

#[tokio::test]
async fn every_front_to_tines() {
    pairings_to(Tines).await;
}

#[tokio::test]
async fn every_front_to_caseiq() {
    pairings_to(Caseiq).await;
}

#[tokio::test]
async fn every_front_to_kibana() {
    pairings_to(Kibana).await;
}
