//! Upstream faults (issue: hostile input and upstream faults): whatever an upstream does,
//! every client is told the truth in its own dialect: success only when the upstream
//! stored the file, the SPEC section 4 failure otherwise, and no upstream connection left
//! hanging afterwards.

mod common;

use std::time::Duration;

use casegate::dialect::DialectId;
use casegate::emulator::Fault;
use common::*;
use serde_json::Value;

/// What a client must be told.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A success (the upstream stored the file and said so, however badly).
    Stored,
    /// A failure with this status and code; nothing stored.
    Failed(u16, &'static str),
}

fn cases(back: DialectId) -> Vec<(Fault, Expect)> {
    let mut v = vec![
        (
            Fault::ResetBeforeAnswer,
            Expect::Failed(502, "upstream_unreachable"),
        ),
        (
            Fault::ResetMidBody,
            Expect::Failed(502, "upstream_unreachable"),
        ),
        (Fault::HtmlError, Expect::Failed(502, "upstream_failed")),
        (Fault::HeadersThenHang, Expect::Stored),
        (Fault::Html, Expect::Stored),
        (Fault::TruncatedJson, Expect::Stored),
        (Fault::EmptyBody, Expect::Stored),
        (Fault::Trickle, Expect::Stored),
        (Fault::HugeBody, Expect::Stored),
    ];
    if back == Thalamus {
        v.push((Fault::Failed, Expect::Failed(502, "upstream_failed")));
    }
    v
}

/// A success in `front`'s shape, built from what casegate knew.
fn assert_success_shape(front: DialectId, r: &Reply, up: &Up) {
    assert_eq!(r.status, 200, "{front}: {}", r.text());
    assert!(r.header("casegate-error").is_none());
    let v: Value = r.json();
    match front {
        Thalamus => assert!(v["attachments"]["attachements"].is_array(), "{v}"),
        Tines => {
            assert_eq!(v["file"]["filename"], up.file_name, "{v}");
            assert!(v.get("id").is_some() && v.get("user").is_some(), "{v}");
        }
        Caseiq => {
            assert_eq!(v["sizeBytes"], up.data.len() as u64, "{v}");
            assert_eq!(v["name"], up.file_name, "{v}");
            assert!(v["id"].is_string(), "{v}");
        }
        Kibana => assert_eq!(
            v["comments"][0]["externalReferenceMetadata"]["files"][0]["name"], "notes",
            "{v}"
        ),
    }
}

async fn faults_of(back: DialectId) {
    let h = setup(
        &DialectId::ALL,
        back,
        Opts {
            timeout_secs: 1,
            ..Opts::default()
        },
    )
    .await;
    for (fault, expect) in cases(back) {
        h.upstream.set_fault(Some(fault.clone()));
        for front in DialectId::ALL {
            let mut up = small_upload(back);
            up.data = random_bytes(200_000, 9);
            let before = h.upstream.files().len();
            let base = format!("{}{}", h.base(), Harness::prefix(front));
            let r = send(&h.http, front, &base, &up, Cred::Good).await;
            let stored = h.upstream.files();
            match expect {
                Expect::Stored => {
                    assert_eq!(
                        stored.len(),
                        before + 1,
                        "{front}->{back} {fault}: {}",
                        r.text()
                    );
                    assert_eq!(stored.last().unwrap().sha256, sha256_hex(&up.data));
                    assert_success_shape(front, &r, &up);
                }
                Expect::Failed(status, code) => {
                    assert_eq!(
                        stored.len(),
                        before,
                        "{front}->{back} {fault}: stored, yet failed"
                    );
                    assert_error(front, &r, status, code, true);
                }
            }
        }
    }
    // Every upstream connection casegate opened was closed or returned to its pool: at
    // most one idle per route (four fronts) and connection worker.
    h.upstream.set_fault(None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.upstream.open_connections() <= 4 * casegate::workers::default_count() as u64,
        "{back}: {} connections left open",
        h.upstream.open_connections()
    );
    h.stop().await;
}

#[tokio::test]
async fn thalamus_upstream_faults() {
    faults_of(Thalamus).await;
}

#[tokio::test]
async fn tines_upstream_faults() {
    faults_of(Tines).await;
}

#[tokio::test]
async fn caseiq_upstream_faults() {
    faults_of(Caseiq).await;
}

#[tokio::test]
async fn kibana_upstream_faults() {
    faults_of(Kibana).await;
}
