//! The ledger's failures as clients and operators see them (SPEC 7.3 and 8): a ledger that
//! cannot be reached when an upload starts refuses it with 503 `ledger_unavailable` in the
//! client's dialect and nothing sent upstream; `/readyz` turns 503 within 5 s; when the
//! ledger answers again, uploads and readiness recover without a restart.

mod common;

use std::time::{Duration, Instant};

use casegate::dialect::DialectId;
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

#[tokio::test]
async fn an_unreachable_ledger_refuses_uploads_with_nothing_sent_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.sqlite3");
    let o = Opts {
        extra_top_keys: format!(
            "ledger = \"sqlite://{}\"\nadmin_listen = \"127.0.0.1:0\"\n",
            file.display()
        ),
        ..Opts::default()
    };
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
