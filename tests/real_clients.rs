//! The real Python clients casegate's users run, unmodified: `tapi` (Tines) and
//! `kibana-py` (Kibana), against a real casegate in front of every back dialect.
//!
//! Needs the packages: `.ci/run` installs them into a virtualenv and runs these tests
//! with `CASEGATE_PYTHON` pointing at it (`cargo test --test real_clients -- --ignored`).

mod common;

use casegate::dialect::DialectId;
use common::*;
use serde_json::Value;

fn python() -> String {
    std::env::var("CASEGATE_PYTHON").unwrap_or_else(|_| {
        panic!("set CASEGATE_PYTHON to a python with tapi and kibana-py installed (see .ci/run)")
    })
}

fn drive(
    client: &str,
    base: &str,
    case: &str,
    data: &[u8],
    name: &str,
    mime: &str,
    comment: Option<&str>,
) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, data).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/drive.py");
    let mut cmd = std::process::Command::new(python());
    cmd.args([
        script,
        client,
        base,
        CLIENT_TOKEN,
        case,
        file.to_str().unwrap(),
        name,
        mime,
    ]);
    if let Some(c) = comment {
        cmd.arg(c);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{client}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn real_clients_to(back: DialectId) {
    let h = setup(&[Tines, Kibana], back, Opts::default()).await;
    let case = case_id_for(back);
    let data = random_bytes(200_000, 17);

    // tapi: JSON with nulls for every absent field, keys in its own order.
    let base = format!("{}{}", h.base(), Harness::prefix(Tines));
    let r = tokio::task::spawn_blocking({
        let (base, data) = (base.clone(), data.clone());
        move || {
            drive(
                "tapi",
                &base,
                case,
                &data,
                "Prüfbericht ü 2026.pdf",
                "application/pdf",
                Some("via tapi"),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(r["status"], 200, "tapi->{back}: {r}");
    let body = &r["body"];
    assert_eq!(
        body["activity_type"], "FILE_ATTACHED_AND_COMMENTED",
        "tapi->{back}: {r}"
    );
    assert_eq!(body["value"], "via tapi");
    assert_eq!(body["file"]["filename"], "Prüfbericht ü 2026.pdf");
    let f = h.upstream.files().pop().unwrap();
    assert_eq!(f.sha256, sha256_hex(&data), "tapi->{back}");
    assert_eq!(f.name, "Prüfbericht ü 2026.pdf");
    assert_eq!(body["id"], casegate::upload::id_json(&f.id));
    assert!(
        !r["headers"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.eq_ignore_ascii_case("casegate-dropped")),
        "tapi->{back}: nulls are not dropped fields: {r}"
    );

    // kibana-py: multipart with the `filename` field (with extension) before the file.
    let base = format!("{}{}", h.base(), Harness::prefix(Kibana));
    let r = tokio::task::spawn_blocking({
        let (base, data) = (base.clone(), data.clone());
        move || {
            drive(
                "kibana-py",
                &base,
                case,
                &data,
                "notes.txt",
                "text/plain",
                None,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(r["status"], 200, "kibana-py->{back}: {r}");
    let f = h.upstream.files().pop().unwrap();
    assert_eq!(f.sha256, sha256_hex(&data), "kibana-py->{back}");
    assert_eq!(f.name, "notes.txt");
    let comments = r["body"]["comments"].as_array().unwrap();
    assert!(
        comments.iter().any(|c| c["externalReferenceId"] == f.id),
        "kibana-py->{back}: {r}"
    );
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs CASEGATE_PYTHON with tapi and kibana-py (run by .ci/run)"]
async fn real_clients_to_thalamus() {
    real_clients_to(Thalamus).await;
}

#[tokio::test]
#[ignore = "needs CASEGATE_PYTHON with tapi and kibana-py (run by .ci/run)"]
async fn real_clients_to_tines() {
    real_clients_to(Tines).await;
}

#[tokio::test]
#[ignore = "needs CASEGATE_PYTHON with tapi and kibana-py (run by .ci/run)"]
async fn real_clients_to_caseiq() {
    real_clients_to(Caseiq).await;
}

#[tokio::test]
#[ignore = "needs CASEGATE_PYTHON with tapi and kibana-py (run by .ci/run)"]
async fn real_clients_to_kibana() {
    real_clients_to(Kibana).await;
}
