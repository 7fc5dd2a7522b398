//! The ledger's failures as clients and operators see them (SPEC 7.3 and 8): a ledger that
//! cannot be reached when an upload starts refuses it with 503 `ledger_unavailable` in the
//! client's dialect and nothing sent upstream; `/readyz` turns 503 within 5 s; when the
//! ledger answers again, uploads and readiness recover without a restart. A file's row
//! does not wait for the call that carries its comment.

mod common;

use std::time::{Duration, Instant};

use casegate::dialect::DialectId::{self, Kibana, Thalamus, Tines};
use casegate::emulator::Fault;
use common::process::SlowUpload;
use common::*;

/// Polls `check` every 100 ms until it is true; panics with `what` after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A folder, the SQLite ledger's file in it, and options naming it and turning the admin
/// listener on.
fn a_ledger_file_and_the_admin_listener() -> (tempfile::TempDir, std::path::PathBuf, Opts) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.sqlite3");
    let o = Opts {
        extra_top_keys: format!(
            "ledger = \"sqlite://{}\"\nadmin_listen = \"127.0.0.1:0\"\n",
            file.display()
        ),
        ..Opts::default()
    };
    (dir, file, o)
}

#[tokio::test]
async fn an_unreachable_ledger_refuses_uploads_with_nothing_sent_and_recovers() {
    let (dir, file, o) = a_ledger_file_and_the_admin_listener();
    let h = setup(&DialectId::ALL, Tines, o).await;
    let readyz = format!("http://{}/readyz", h.casegate.admin_addr().unwrap());
    let ready = |want: u16| {
        let (http, url) = (h.http.clone(), readyz.clone());
        async move { http.get(&url).send().await.unwrap().status() == want }
    };
    assert!(ready(200).await);
    for front in DialectId::ALL {
        let base = format!("{}{}", h.base(), Harness::prefix(front));
        let r = send(&h.http, front, &base, &small_upload(Tines), Cred::Good).await;
        assert_eq!(r.status, 200, "{front}: {}", r.text());
    }

    // The ledger's file goes away (a lost volume): the store fails, the probe notices.
    let away = dir.path().join("elsewhere.sqlite3");
    std::fs::rename(&file, &away).unwrap();
    within(Duration::from_secs(5), "/readyz 503", || ready(503)).await;
    let calls = h.upstream.calls().len();
    for front in DialectId::ALL {
        let base = format!("{}{}", h.base(), Harness::prefix(front));
        let r = send(&h.http, front, &base, &small_upload(Tines), Cred::Good).await;
        assert_error(front, &r, 503, "ledger_unavailable", false);
    }
    assert_eq!(h.upstream.calls().len(), calls, "nothing was sent upstream");

    // Back: readiness and uploads recover, without a restart.
    std::fs::rename(&away, &file).unwrap();
    within(Duration::from_secs(10), "/readyz 200", || ready(200)).await;
    for front in DialectId::ALL {
        let base = format!("{}{}", h.base(), Harness::prefix(front));
        let r = send(&h.http, front, &base, &small_upload(Tines), Cred::Good).await;
        assert_eq!(r.status, 200, "{front} after recovery: {}", r.text());
    }
    h.stop().await;
}

/// An upload the upstream confirms while the ledger is away: answered success, its row
/// waits in memory, and the metrics say so (an operator's alert reads
/// `casegate_ledger_rows_waiting` and `casegate_ledger_rows_lost_total`, not the log);
/// when the ledger is back, the row is written, the gauge returns to 0 and nothing was
/// lost.
#[tokio::test]
async fn a_row_waiting_for_the_ledger_is_measured_until_it_is_written() {
    let (dir, file, o) = a_ledger_file_and_the_admin_listener();
    let h = setup(&[Thalamus], Tines, o).await;
    let admin = h.casegate.admin_addr().unwrap();
    let figures = || async {
        let mut out = Vec::new();
        for name in [
            "casegate_ledger_available",
            "casegate_ledger_rows_waiting",
            "casegate_ledger_rows_lost_total",
        ] {
            out.push(metric_sum(&h.http, admin, name, &[]).await);
        }
        out
    };
    assert_eq!(figures().await, [1.0, 0.0, 0.0]);
    assert_eq!(
        metric_sum(&h.http, admin, "casegate_ledger_errors_total", &[]).await,
        0.0
    );

    // An upload starts while the ledger answers; its file goes away meanwhile.
    let data = random_bytes(256 << 10, 5);
    let upload =
        SlowUpload::start(h.casegate.addr(), &Harness::prefix(Thalamus), &data, 4096).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let away = dir.path().join("elsewhere.sqlite3");
    std::fs::rename(&file, &away).unwrap();
    within(Duration::from_secs(5), "the ledger unavailable", || async {
        figures().await[0] == 0.0
    })
    .await;
    let answer = upload.finish().await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(h.upstream.files().pop().unwrap().sha256, sha256_hex(&data));
    assert_eq!(figures().await, [0.0, 1.0, 0.0]);
    assert!(metric_sum(&h.http, admin, "casegate_ledger_errors_total", &[]).await >= 1.0);

    // Back: the row is written, nothing was lost.
    std::fs::rename(&away, &file).unwrap();
    within(Duration::from_secs(10), "the row written", || async {
        figures().await == [1.0, 0.0, 0.0]
    })
    .await;
    h.stop().await;
}

/// SPEC 7.3: a file's row is written once the upstream has confirmed the file. The second
/// call that carries its comment (a Kibana comment, a Thalamus note) does not hold the row
/// back: they go out together. With the comment call held 4 s upstream, the row is in the
/// ledger's file while the upload still waits, and the answer still says the comment was
/// stored.
#[tokio::test]
async fn a_file_is_recorded_while_its_comment_call_is_still_out() {
    const HELD: Duration = Duration::from_secs(4);
    for back in [Kibana, Thalamus] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.sqlite3");
        let o = Opts {
            extra_top_keys: format!("ledger = \"sqlite://{}\"\n", file.display()),
            fault: Some(Fault::CommentDelay(HELD)),
            ..Opts::default()
        };
        let h = setup(&[Tines], back, o).await;
        let base = format!("{}{}", h.base(), Harness::prefix(Tines));
        let up = Up {
            comment: Some("recorded before this is".into()),
            ..small_upload(back)
        };
        let started = Instant::now();
        let upload = tokio::spawn({
            let http = h.http.clone();
            async move { send(&http, Tines, &base, &up, Cred::Good).await }
        });
        // Read as an operator would, beside the running casegate (a busy file counts none).
        let rows = || {
            let file = file.clone();
            async move {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
                rusqlite::Connection::open_with_flags(&file, flags)
                    .and_then(|db| db.query_row("SELECT COUNT(*) FROM files", [], |r| r.get(0)))
                    .is_ok_and(|n: i64| n == 1)
            }
        };
        within(
            HELD - Duration::from_secs(1),
            "the row while the comment call is out",
            rows,
        )
        .await;
        assert!(
            !upload.is_finished(),
            "{back}: the upload waits for its comment call"
        );
        let r = upload.await.unwrap();
        assert!(
            started.elapsed() >= HELD,
            "{back}: answered before the comment was stored"
        );
        assert_eq!(r.status, 200, "{back}: {}", r.text());
        assert_eq!(
            r.json()["activity_type"],
            "FILE_ATTACHED_AND_COMMENTED",
            "{back}"
        );
        assert!(r.dropped().is_empty(), "{back}: {:?}", r.dropped());
        h.stop().await;
    }
}
