//! Replicas (issue 11): two `casegate serve` processes sharing one PostgreSQL ledger and
//! one Case IQ `token_key`, behind HAProxy (`deploy/haproxy/haproxy.cfg`, round-robin,
//! health-checked on `/readyz`), in front of emulators of every back. Uploads go through
//! the balancer in every pairing and are read back through it, landing on either replica;
//! 200 concurrent uploads get distinct, stable ids; a Case IQ token from one replica
//! opens the other; PostgreSQL stopped mid-run takes both out of rotation and refuses new
//! uploads with nothing sent, while a confirmed upload is still answered success and
//! recorded when the database is back; a replica killed mid-upload stores nothing short,
//! and the other serves on.
//!
//! Needs PostgreSQL (the distribution's package) and HAProxy: ignored by default, run by
//! `.ci/run` (`cargo test --test replicas -- --ignored`).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casegate::dialect::DialectId;
use casegate::emulator::Emulator;
use casegate::ledger::pg_test::PgServer;
use common::process::{Proc, SlowUpload};
use common::*;

/// The signing key both replicas share for their Case IQ fronts.
const TOKEN_KEY: &str = "replicas-share-this-signing-key-0123";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy with the README's config, in front of the replicas at `ports` (public, admin);
/// its own port and the process. The port is picked here and freed before HAProxy binds
/// it, so another test's connection may take it meanwhile: HAProxy then exits, and it is
/// started again on another port (at most five times).
fn start_haproxy(dir: &std::path::Path, ports: &[(u16, u16)]) -> (Child, u16) {
    for _ in 0..5 {
        let lb_port = free_port();
        let cfg = include_str!("../deploy/haproxy/haproxy.cfg")
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{lb_port}"))
            .replace(
                "127.0.0.1:8081 check port 9191",
                &format!("127.0.0.1:{} check port {}", ports[0].0, ports[0].1),
            )
            .replace(
                "127.0.0.1:8082 check port 9192",
                &format!("127.0.0.1:{} check port {}", ports[1].0, ports[1].1),
            );
        let haproxy_cfg = dir.join("haproxy.cfg");
        std::fs::write(&haproxy_cfg, cfg).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let mut haproxy = Command::new(haproxy_bin())
            .args(["-f", haproxy_cfg.to_str().unwrap(), "-db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("these tests need HAProxy (apt-get install haproxy): {e}"));
        // Listening, or exited (its port taken): whichever comes first, within 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = haproxy.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", lb_port)).is_ok() {
                return (haproxy, lb_port);
            }
            if Instant::now() > deadline {
                let _ = haproxy.kill();
                let _ = haproxy.wait();
                panic!("HAProxy neither listened on {lb_port} nor exited within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
    panic!("HAProxy exited five times (a port taken each time, or a refused config); its last words:\n{log}");
}

/// The whole set-up; dropped in order: HAProxy, the replicas, the emulators, the folder.
struct Stack {
    haproxy: Child,
    replicas: Vec<Proc>,
    emulators: Vec<Emulator>,
    lb: SocketAddr,
    config: PathBuf,
    pg: Arc<PgServer>,
    /// The stack's database on `pg`.
    database: String,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}

fn postgres() -> Arc<PgServer> {
    PgServer::shared()
        .unwrap_or_else(|e| panic!("these tests need PostgreSQL (apt-get install postgresql): {e}"))
}

impl Stack {
    /// A stack on the PostgreSQL server the tests share.
    async fn start() -> Stack {
        Stack::start_on(postgres()).await
    }

    /// A stack on `pg` (a server of its own, for a test that stops it).
    async fn start_on(pg: Arc<PgServer>) -> Stack {
        let database = pg.create_database().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let emulators = every_back().await;
        let top = format!(
            "log_format = \"json\"\nledger = \"postgres://{}:${{PGPASSWORD}}@127.0.0.1:{}/{database}\"\ndrain_delay_secs = 0",
            casegate::ledger::pg_test::ROLE,
            pg.port()
        );
        let toml = pairings_toml(&emulators, &top, |front, _| {
            if front == Caseiq {
                format!("token_key = \"{TOKEN_KEY}\"\n")
            } else {
                String::new()
            }
        });
        let config = dir.path().join("routes.toml");
        std::fs::write(&config, toml).unwrap();
        let mut replicas = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..2 {
            // Port 0 for both listeners: each replica logs the ports it got.
            let replica = Proc::start_with(
                &config,
                &[
                    ("PGPASSWORD", pg.password()),
                    ("CASEGATE_LISTEN", "127.0.0.1:0"),
                    ("CASEGATE_ADMIN_LISTEN", "127.0.0.1:0"),
                ],
            );
            let admin = replica.admin.expect("the replica logs its admin address");
            ports.push((replica.addr.port(), admin.port()));
            replicas.push(replica);
        }
        let (haproxy, lb_port) = start_haproxy(dir.path(), &ports);
        let mut stack = Stack {
            haproxy,
            replicas,
            emulators,
            lb: format!("127.0.0.1:{lb_port}").parse().unwrap(),
            config,
            pg,
            database,
            _dir: dir,
        };
        stack.wait_balanced().await;
        stack
    }

    fn emulator(&self, back: DialectId) -> &Emulator {
        &self.emulators[DialectId::ALL.iter().position(|d| *d == back).unwrap()]
    }

    /// `http://{balancer}/{front}-{back}`.
    fn base(&self, front: DialectId, back: DialectId) -> String {
        format!("http://{}/{front}-{back}", self.lb)
    }

    /// `http://{replica i}/{front}-{back}`, bypassing the balancer.
    fn direct(&self, i: usize, front: DialectId, back: DialectId) -> String {
        format!("http://{}/{front}-{back}", self.replicas[i].addr)
    }

    /// Waits (at most 20 s) until the balancer passes requests to both replicas.
    async fn wait_balanced(&mut self) {
        if let Ok(Some(status)) = self.haproxy.try_wait() {
            panic!("HAProxy exited: {status}");
        }
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = 0;
            for _ in 0..4 {
                let r = http
                    .get(format!("{}/api/v2/cases/1/files", self.base(Tines, Tines)))
                    .bearer_auth(CLIENT_TOKEN)
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 200) {
                    ok += 1;
                }
            }
            let served = self.served().await;
            if ok == 4 && served.iter().all(|n| *n > 0.0) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the balancer did not pass to both replicas: {ok}/4 through it, served {served:?}, readiness {:?}",
                    self.readiness().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Requests each replica has answered so far (its `casegate_requests_total`).
    async fn served(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for p in &self.replicas {
            let text = match client()
                .get(format!("http://{}/metrics", p.admin.unwrap()))
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            out.push(
                text.lines()
                    .filter(|l| l.starts_with("casegate_requests_total{"))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum(),
            );
        }
        out
    }

    /// Nothing went wrong, so neither replica has logged a warning or an error.
    fn assert_no_warnings(&mut self) {
        for replica in &mut self.replicas {
            let warnings: Vec<_> = replica
                .drain_lines()
                .into_iter()
                .filter(|v| v["level"] != "INFO" && v["level"] != "DEBUG")
                .collect();
            assert!(warnings.is_empty(), "{warnings:#?}");
        }
    }

    /// Each replica's `/readyz` status (0 when it does not answer).
    async fn readiness(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for p in &self.replicas {
            let status = client()
                .get(format!("http://{}/readyz", p.admin.unwrap()))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            out.push(status);
        }
        out
    }
}

fn haproxy_bin() -> String {
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("haproxy")
        .to_string()
}

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

/// Whether the balancer's answers came from both replicas between `before` and now.
async fn both_served(stack: &Stack, before: &[f64]) -> bool {
    let now = stack.served().await;
    now.iter().zip(before).all(|(n, b)| n > b)
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy (run by .ci/run)"]
async fn every_pairing_reads_back_through_the_balancer_on_either_replica() {
    let mut stack = Stack::start().await;
    let http = client();
    let before = stack.served().await;
    every_pairing_round_trip(&http, &stack.emulators, |front, back| {
        stack.base(front, back)
    })
    .await;
    assert!(
        both_served(&stack, &before).await,
        "both replicas served: {:?}",
        stack.served().await
    );
    stack.assert_no_warnings();
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy (run by .ci/run)"]
async fn two_hundred_concurrent_uploads_get_distinct_stable_ids() {
    let mut stack = Stack::start().await;
    // Tines clients over Case IQ: casegate gives the integer ids (SPEC 7.3).
    let (front, back) = (Tines, Caseiq);
    let base = stack.base(front, back);
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let c = FrontClient::new(&http, front, &base, Cred::Good).await;
            let mut got = Vec::new();
            for n in 0..25u64 {
                let mut up = small_upload(back);
                up.data = random_bytes(2000, worker * 100 + n + 1);
                let r = c.upload(&up).await;
                assert_eq!(r.status, 200, "{}", r.text());
                let id = r.json()["id"].as_u64().unwrap();
                got.push((id, sha256_hex(&up.data)));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut ids: Vec<u64> = all.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "200 distinct ids");
    // Stable: every id downloads its own bytes, whichever replica answers.
    let http = client();
    let c = FrontClient::new(&http, front, &base, Cred::Good).await;
    let case = case_id_for(back);
    for (id, sha) in &all {
        let d = c.download(case, &id.to_string()).await;
        assert_eq!(d.status, 200, "{id}");
        assert_eq!(&sha256_hex(&d.body), sha, "{id}");
    }
    let listed = c.list(case, "per_page=500").await.json();
    let mut listed_ids: Vec<u64> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect();
    listed_ids.sort_unstable();
    assert_eq!(listed_ids, ids, "the list shows the same ids");
    stack.assert_no_warnings();
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy (run by .ci/run)"]
async fn a_caseiq_token_from_one_replica_opens_the_other() {
    let stack = Stack::start().await;
    let http = client();
    let token = caseiq_token(&http, &stack.direct(0, Caseiq, Tines), CLIENT_TOKEN).await;
    let r = reply(
        http.get(format!(
            "{}/api-public/1.0/attachments?objectId=1",
            stack.direct(1, Caseiq, Tines)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy (run by .ci/run)"]
async fn postgres_stopped_mid_run_then_back() {
    // A server of its own: the other tests share one that must keep running.
    let pg = PgServer::start().unwrap_or_else(|e| {
        panic!("these tests need PostgreSQL (apt-get install postgresql): {e}")
    });
    let stack = Stack::start_on(Arc::new(pg)).await;
    let http = client();
    // Thalamus clients over Tines: the ledger lists the case for them.
    let (front, back) = (Thalamus, Tines);
    // An upload starts while the ledger answers...
    let data = random_bytes(1 << 20, 77);
    let upload = SlowUpload::start(
        stack.replicas[0].addr,
        &format!("/{front}-{back}"),
        &data,
        4096,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and PostgreSQL stops.
    stack.pg.stop().unwrap();
    within(Duration::from_secs(6), "both /readyz 503", || async {
        stack.readiness().await == [503, 503]
    })
    .await;
    // The balancer takes both out (after its health checks notice): its own 503.
    within(Duration::from_secs(5), "the balancer's 503", || async {
        http.get(format!("{}/api/v2/cases/1/files", stack.base(Tines, Tines)))
            .bearer_auth(CLIENT_TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    // A new upload, straight to a replica, is refused with nothing sent.
    let calls = stack.emulator(back).calls().len();
    for i in 0..2 {
        let r = send(
            &http,
            Tines,
            &stack.direct(i, Tines, back),
            &small_upload(back),
            Cred::Good,
        )
        .await;
        assert_error(Tines, &r, 503, "ledger_unavailable", false);
    }
    assert_eq!(stack.emulator(back).calls().len(), calls, "nothing sent");
    // The upload that started before is confirmed upstream and answered success.
    let answer = upload.finish().await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stored = stack.emulator(back).files().pop().unwrap();
    assert_eq!(stored.sha256, sha256_hex(&data));
    // PostgreSQL back: readiness recovers without a restart, and the confirmed upload's
    // row is written (its id downloads through the balancer, from either replica).
    stack.pg.start_again().unwrap();
    within(Duration::from_secs(10), "both /readyz 200", || async {
        stack.readiness().await == [200, 200]
    })
    .await;
    let c = FrontClient::new(&http, front, &stack.base(front, back), Cred::Good).await;
    within(
        Duration::from_secs(20),
        "the queued row written",
        || async {
            let d = c.download(case_id_for(back), &stored.id).await;
            d.status == 200 && sha256_hex(&d.body) == stored.sha256
        },
    )
    .await;
    let r = send(
        &http,
        Tines,
        &stack.base(Tines, back),
        &small_upload(back),
        Cred::Good,
    )
    .await;
    assert_eq!(r.status, 200, "uploads recover: {}", r.text());
    // What the shared ledger holds, as `casegate ledger` prints it.
    let out = Command::new(env!("CARGO_BIN_EXE_casegate"))
        .args([
            "ledger",
            "--config",
            stack.config.to_str().unwrap(),
            "--json",
        ])
        .args(["--route", &format!("{front}-to-{back}")])
        .env("PGPASSWORD", stack.pg.password())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["back_id"] == stored.id.as_str()),
        "{rows}"
    );
}

/// The shared ledger turns read-only (a failover onto a standby, a database an operator
/// set read-only): pings and reads answer, writes fail. A replica whose write failed stays
/// unready, and refuses uploads with nothing sent, until a write goes through again: its
/// first block of ids (no row waiting: it used to turn ready at the next ping and stay
/// so), then an upload's row (confirmed upstream, answered success, written once the
/// ledger takes writes again; its id downloads).
#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy (run by .ci/run)"]
async fn a_read_only_ledger_keeps_a_replica_unready_until_a_write_goes_through() {
    let mut stack = Stack::start().await;
    let http = client();
    // Integer ids in front of UUIDs: each upload takes an id from a block of the ledger's,
    // and its row is a mapping only the ledger holds.
    let (front, back) = (Tines, Caseiq);
    let replica = stack.direct(0, front, back);
    let admin = stack.replicas[0].admin.unwrap();
    let ready = || async move {
        client()
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    };
    let read_only = |on: &str| {
        let db = &stack.database;
        let sql = [
            format!("ALTER DATABASE {db} SET default_transaction_read_only = {on}"),
            // Sessions take the setting when they start: end the ones casegate holds.
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            ),
        ];
        for sql in sql {
            stack.pg.psql("postgres", &sql).unwrap();
        }
    };
    // Unready, and kept so through three probe periods whose pings answer; uploads
    // refused meanwhile, nothing sent.
    let held_unready = |what: &'static str| {
        let (http, replica) = (http.clone(), replica.clone());
        let emulator = stack.emulator(back);
        async move {
            within(Duration::from_secs(5), "/readyz 503", || async {
                ready().await == 503
            })
            .await;
            let calls = emulator.calls().len();
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until {
                assert_eq!(ready().await, 503, "{what}: a ping made the replica ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let r = send(&http, front, &replica, &small_upload(back), Cred::Good).await;
            assert_error(front, &r, 503, "ledger_unavailable", false);
            assert_eq!(emulator.calls().len(), calls, "{what}: nothing sent");
        }
    };

    // No row waits: the first upload's block of ids cannot be taken. An upload may come
    // first that finds the ledger unavailable because a ping met a session just ended,
    // and is refused before it tries to write; the next ping makes it available again, so
    // an upload is sent until one leaves the replica unready past a probe period.
    read_only("on");
    let mut tries = 0;
    loop {
        let calls = stack.emulator(back).calls().len();
        let r = send(&http, front, &replica, &small_upload(back), Cred::Good).await;
        assert_error(front, &r, 503, "ledger_unavailable", false);
        assert_eq!(stack.emulator(back).calls().len(), calls, "nothing sent");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        if ready().await == 503 {
            break;
        }
        tries += 1;
        assert!(
            tries < 4,
            "ready again after each refused upload: a ping made the replica ready"
        );
    }
    held_unready("a block not taken").await;
    // Writes go through again: the probe's own write finds it.
    read_only("off");
    within(Duration::from_secs(10), "/readyz 200", || async {
        ready().await == 200
    })
    .await;
    let r = send(&http, front, &replica, &small_upload(back), Cred::Good).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A row waits: the upload that meets a read-only session is confirmed upstream and
    // answered success (one before it may meet a session just ended: refused, nothing
    // sent); its row cannot be written.
    read_only("on");
    let deadline = Instant::now() + Duration::from_secs(15);
    let (waiting, stored) = loop {
        assert!(
            Instant::now() < deadline,
            "no upload met the read-only ledger"
        );
        let calls = stack.emulator(back).calls().len();
        let r = send(&http, front, &replica, &small_upload(back), Cred::Good).await;
        if r.status == 200 {
            let stored = stack.emulator(back).files().pop().unwrap();
            break (answer_file_id(front, &r, &stored.id), stored);
        }
        assert_error(front, &r, 503, "ledger_unavailable", false);
        assert_eq!(stack.emulator(back).calls().len(), calls, "nothing sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    held_unready("a row waiting").await;
    read_only("off");
    within(Duration::from_secs(10), "/readyz 200", || async {
        ready().await == 200
    })
    .await;
    let c = FrontClient::new(&http, front, &stack.base(front, back), Cred::Good).await;
    let d = c.download(case_id_for(back), &waiting).await;
    assert_eq!(d.status, 200, "the waiting row's id: {}", d.text());
    assert_eq!(sha256_hex(&d.body), stored.sha256);
    stack.replicas[0]
        .wait_for(|v| v["message"] == "the ledger took rows that waited to be recorded");
    let lost: Vec<_> = stack.replicas[0]
        .drain_lines()
        .into_iter()
        .filter(|v| v["target"] == "casegate::ledger::lost")
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy (run by .ci/run)"]
async fn a_replica_killed_mid_upload_stores_nothing_and_the_other_serves_on() {
    let mut stack = Stack::start().await;
    let http = client();
    let (front, back) = (Thalamus, Tines);
    let data = random_bytes(4 << 20, 99);
    let upload = SlowUpload::start(
        stack.replicas[0].addr,
        &format!("/{front}-{back}"),
        &data,
        1 << 20,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.replicas[0].signal("KILL");
    let _ = stack.replicas[0].child.wait();
    let answer = upload.finish().await;
    assert!(
        answer
            .as_ref()
            .map_or(true, |a| !a.starts_with("HTTP/1.1 200")),
        "the client sees an error: {answer:?}"
    );
    assert!(
        !stack
            .emulator(back)
            .files()
            .iter()
            .any(|f| f.size == data.len() as u64 || f.sha256 == sha256_hex(&data)),
        "nothing partial stored as whole"
    );
    // The other replica serves on, through the balancer.
    for n in 0..10 {
        let r = send(
            &http,
            Tines,
            &stack.base(Tines, back),
            &small_upload(back),
            Cred::Good,
        )
        .await;
        assert_eq!(r.status, 200, "upload {n} after the kill: {}", r.text());
    }
}
