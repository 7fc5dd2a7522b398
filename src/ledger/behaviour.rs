//! The behaviour every [`Store`] must have, written once and run against both stores:
//! SQLite (a file in a temporary folder; and again with every command run on the caller's
//! thread, as for a lone request, so the stores racing there meet each other's write
//! locks on that path) and PostgreSQL (a fresh database on the server
//! [`PgServer::for_test`] starts). Each test gets a [`Db`] on which it may open as many
//! stores as it likes: two stores on one `Db` are two processes, or two replicas, sharing
//! one database.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::pg_test::PgServer;
use super::{CaseIds, IdForm, Ledger, LedgerUrl, Load, Row, Store};
use crate::secret::Secret;

/// One database of the store under test.
pub(crate) enum Db {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
        /// Every command on the caller's thread (a load that is always alone).
        inline: bool,
    },
    Postgres {
        _server: Arc<PgServer>,
        url: String,
    },
}

impl Db {
    /// A file that does not exist yet.
    pub(crate) fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        Db::Sqlite {
            _dir: dir,
            path,
            inline: false,
        }
    }

    /// [`Db::sqlite`], its stores running every command they can on the caller's thread.
    pub(crate) fn sqlite_inline() -> Db {
        match Db::sqlite() {
            Db::Sqlite { _dir, path, .. } => Db::Sqlite {
                _dir,
                path,
                inline: true,
            },
            other => other,
        }
    }

    /// The load its stores are told of: always alone for an inline SQLite.
    fn load(&self) -> Option<Load> {
        matches!(self, Db::Sqlite { inline: true, .. }).then(Load::default)
    }

    /// A new ledger on this database.
    pub(crate) async fn ledger(&self) -> Ledger {
        Ledger::open_with_load(&self.url(), self.load())
            .await
            .unwrap()
    }

    /// A new empty database on the shared server; None when PostgreSQL cannot be started
    /// and `CASEGATE_SKIP_POSTGRES=1` (the test then passes without running).
    pub(crate) fn postgres() -> Option<Db> {
        let server = PgServer::for_test()?;
        let url = server.database_url().unwrap();
        Some(Db::Postgres {
            _server: server,
            url,
        })
    }

    pub(crate) fn url(&self) -> LedgerUrl {
        match self {
            Db::Sqlite { path, .. } => LedgerUrl::Sqlite(path.clone()),
            Db::Postgres { url, .. } => LedgerUrl::Postgres(Secret::new(url.clone())),
        }
    }

    /// A new store on this database (opening migrates it when it is new).
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        match self {
            Db::Sqlite { path, .. } => {
                let store = super::sqlite::SqliteStore::open(path).await.unwrap();
                Arc::new(match self.load() {
                    Some(load) => store.inline_when_alone(load),
                    None => store,
                })
            }
            Db::Postgres { url, .. } => Arc::new(
                super::postgres::PostgresStore::open(&Secret::new(url.clone()))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The value of one of the database's `counters`, read beside the stores (SQLite: a
    /// connection of its own; PostgreSQL: psql).
    fn counter(&self, name: &str) -> Option<i64> {
        let sql = format!("SELECT value FROM counters WHERE name = '{name}'");
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(&sql, [], |r| r.get(0))
                .ok(),
            Db::Postgres {
                _server: server,
                url,
            } => {
                let database = url.rsplit('/').next().unwrap().split('?').next().unwrap();
                let out = server.psql(database, &sql).unwrap();
                out.trim().parse().ok()
            }
        }
    }
}

/// Each named `async fn(Db)` below becomes one test per store.
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::sqlite()).await;
                }
            )+
        }
        mod on_sqlite_inline {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::sqlite_inline()).await;
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::Db::postgres() {
                        super::$name(db).await;
                    }
                }
            )+
        }
    };
}

on_both_stores!(
    rows_survive_reopening_and_a_second_opener_sees_them,
    openers_racing_on_a_new_database_all_migrate_it,
    allocate_is_distinct_across_concurrent_callers,
    two_stores_allocating_at_once_never_hand_out_the_same_number,
    the_first_record_wins_and_later_ones_fill_nulls_only,
    a_file_named_again_and_again_is_answered_as_the_table_holds_it_now,
    files_whose_ids_pass_through_are_found_by_back_id_and_recorded_once,
    two_stores_racing_to_record_one_file_agree_on_its_front_id,
    two_stores_racing_with_large_overlapping_batches_agree,
    every_field_round_trips,
    list_case_pages_in_insertion_order_with_the_total,
    remove_set_hashes_and_dump_order,
    concurrent_records_all_commit,
    ledger_reserves_are_distinct_across_two_ledgers,
    ledger_reads_and_writes_pass_through,
    the_write_probe_counts_up_and_touches_nothing_else,
);

fn row(route: &str, front_id: &str, back_id: &str) -> Row {
    Row {
        route: route.into(),
        front_id: front_id.into(),
        back_id: back_id.into(),
        ..Row::default()
    }
}

fn fronts(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.front_id.as_str()).collect()
}

async fn rows_survive_reopening_and_a_second_opener_sees_them(db: Db) {
    let first = db.open().await;
    first.record(vec![row("r", "1", "b1")]).await.unwrap();
    // A second opener while the first is open (another process, a replica, a restart).
    let second = db.open().await;
    assert_eq!(fronts(&second.dump(None).await.unwrap()), ["1"]);
    drop(first);
    drop(second);
    let third = db.open().await;
    assert_eq!(fronts(&third.dump(None).await.unwrap()), ["1"]);
    third.ping().await.unwrap();
}

async fn the_write_probe_counts_up_and_touches_nothing_else(db: Db) {
    let store = db.open().await;
    store.record(vec![row("r", "1", "b1")]).await.unwrap();
    assert_eq!(db.counter("ledger.write_probes"), None);
    store.write_probe().await.unwrap();
    assert_eq!(db.counter("ledger.write_probes"), Some(1));
    // A second opener (another replica) counts on from there.
    let other = db.open().await;
    other.write_probe().await.unwrap();
    store.write_probe().await.unwrap();
    assert_eq!(db.counter("ledger.write_probes"), Some(3));
    assert_eq!(fronts(&store.dump(None).await.unwrap()), ["1"]);
    assert_eq!(store.allocate("r", 1).await.unwrap(), 1);
}

async fn openers_racing_on_a_new_database_all_migrate_it(db: Db) {
    let (a, b, c) = tokio::join!(db.open(), db.open(), db.open());
    a.record(vec![row("r", "1", "b1")]).await.unwrap();
    for store in [&a, &b, &c] {
        store.ping().await.unwrap();
        assert_eq!(fronts(&store.dump(None).await.unwrap()), ["1"]);
    }
    assert_eq!(b.allocate("r", 1).await.unwrap(), 1);
    assert_eq!(c.allocate("r", 1).await.unwrap(), 2);
}

async fn allocate_is_distinct_across_concurrent_callers(db: Db) {
    let store = db.open().await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.allocate("r", 3).await.unwrap() })
        })
        .collect();
    let mut firsts = Vec::new();
    for task in tasks {
        firsts.push(task.await.unwrap());
    }
    firsts.sort();
    let expected: Vec<u64> = (0..50).map(|k| 1 + 3 * k).collect();
    assert_eq!(firsts, expected);
    assert_eq!(store.allocate("a-new-route", 1).await.unwrap(), 1);
    assert_eq!(
        store.allocate("r", 0).await.unwrap(),
        151,
        "0 is taken as 1"
    );
    assert!(
        store.allocate("r", u64::MAX).await.is_err(),
        "too many at once"
    );
    assert_eq!(store.allocate("r", 1).await.unwrap(), 152);
}

/// Sorted (first, n) blocks never overlap.
fn assert_disjoint(mut blocks: Vec<(u64, u64)>) {
    blocks.sort();
    for pair in blocks.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
    }
}

async fn two_stores_allocating_at_once_never_hand_out_the_same_number(db: Db) {
    let (a, b) = tokio::join!(db.open(), db.open());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            // Every task of a new route at once: the route's first row is raced for too.
            tokio::spawn(async move { (store.allocate("r", 7).await.unwrap(), 7) })
        })
        .collect();
    let mut blocks = Vec::new();
    for task in tasks {
        blocks.push(task.await.unwrap());
    }
    assert_disjoint(blocks.clone());
    let mut firsts: Vec<u64> = blocks.iter().map(|b| b.0).collect();
    firsts.sort();
    let expected: Vec<u64> = (0..50).map(|k| 1 + 7 * k).collect();
    assert_eq!(firsts, expected, "no number is lost either");
}

async fn the_first_record_wins_and_later_ones_fill_nulls_only(db: Db) {
    let store = db.open().await;
    let first = Row {
        name: Some("a.txt".into()),
        front_case: Some("c1".into()),
        ..row("r", "1", "b")
    };
    let held = store.record(vec![first]).await.unwrap();
    let guid = held[0].guid.clone().expect("a guid is given on insert");
    uuid::Uuid::parse_str(&guid).unwrap();

    let later = Row {
        name: Some("b.txt".into()),
        size: Some(5),
        md5: Some("m".into()),
        guid: Some("other-guid".into()),
        ..row("r", "2", "b")
    };
    let held = store.record(vec![later]).await.unwrap();
    assert_eq!(held.len(), 1);
    let held = &held[0];
    assert_eq!(held.front_id, "1", "the first record's front id wins");
    assert_eq!(held.name.as_deref(), Some("a.txt"), "held fields stay");
    assert_eq!(held.size, Some(5), "NULL fields are filled");
    assert_eq!(held.md5.as_deref(), Some("m"));
    assert_eq!(held.guid.as_deref(), Some(guid.as_str()));
    assert_eq!(store.by_front("r", "2").await.unwrap(), None);
    assert_eq!(store.by_front("r", "1").await.unwrap().as_ref(), Some(held));

    // Within one call, and in input order.
    let held = store
        .record(vec![
            row("r", "3", "c"),
            row("r", "4", "c"),
            row("r", "1", "b"),
            Row {
                guid: Some("given".into()),
                ..row("s", "1", "b")
            },
        ])
        .await
        .unwrap();
    assert_eq!(fronts(&held), ["3", "3", "1", "1"]);
    assert_eq!(held[3].route, "s");
    assert_eq!(held[3].guid.as_deref(), Some("given"));

    // A front id held by another back id is not taken over.
    let clash = row("r", "1", "z");
    let held = store.record(vec![clash.clone()]).await.unwrap();
    assert_eq!(held, [clash]);
    assert!(store
        .by_back("r", vec!["z".into()])
        .await
        .unwrap()
        .is_empty());
    let mut found = store
        .by_back("r", vec!["c".into(), "b".into(), "c".into(), "nope".into()])
        .await
        .unwrap();
    found.sort_by(|x, y| x.back_id.cmp(&y.back_id));
    assert_eq!(fronts(&found), ["1", "3"]);
    assert!(store.by_back("r", Vec::new()).await.unwrap().is_empty());
    assert!(store.record(Vec::new()).await.unwrap().is_empty());
}

/// An upstream that names one file again and again (a stub answering every upload with
/// the same id) is answered with the row as the table holds it at that moment, whatever
/// changed since the file was last named: gaps filled, hashes set, the row deleted, by
/// this store or by another on the same database. (The SQLite store answers such a file
/// from the rows it found held before; this is what that must not change.)
async fn a_file_named_again_and_again_is_answered_as_the_table_holds_it_now(db: Db) {
    let store = db.open().await;
    let other = db.open().await;
    let named = |front: &str| row("r", front, "b");
    let record = |row: Row| {
        let store = store.clone();
        async move {
            let mut held = store.record(vec![row]).await.unwrap();
            assert_eq!(held.len(), 1);
            held.remove(0)
        }
    };
    assert_eq!(record(named("1")).await.front_id, "1");
    for front in ["2", "3", "4"] {
        let held = record(named(front)).await;
        assert_eq!((held.front_id.as_str(), held.size), ("1", None));
    }
    // A gap filled, then named again without it.
    let sized = Row {
        size: Some(4),
        ..named("5")
    };
    assert_eq!(record(sized).await.size, Some(4));
    assert_eq!(record(named("6")).await.size, Some(4));
    // Hashes set by this store, then by the other.
    store.set_hashes("r", "1", "m1", "s1").await.unwrap();
    assert_eq!(record(named("7")).await.md5.as_deref(), Some("m1"));
    assert_eq!(record(named("8")).await.md5.as_deref(), Some("m1"));
    other.set_hashes("r", "1", "m2", "s2").await.unwrap();
    let held = record(named("9")).await;
    assert_eq!(
        (held.front_id.as_str(), held.md5.as_deref()),
        ("1", Some("m2"))
    );
    // Deleted by this store: recorded anew, under the new front id.
    assert!(store.remove("r", "1", None).await.unwrap());
    assert_eq!(record(named("10")).await.front_id, "10");
    assert_eq!(record(named("11")).await.front_id, "10");
    assert_eq!(record(named("12")).await.front_id, "10");
    // Deleted by the other store.
    assert!(other.remove("r", "10", None).await.unwrap());
    let held = record(named("13")).await;
    assert_eq!((held.front_id.as_str(), held.size), ("13", None));
    assert_eq!(record(named("14")).await.front_id, "13");
    // Another route's file of the same back id is its own.
    assert_eq!(record(row("s", "1", "b")).await.front_id, "1");
    assert_eq!(record(row("s", "2", "b")).await.front_id, "1");
    assert_eq!(record(named("15")).await.front_id, "13");
    assert_eq!(fronts(&store.dump(Some("r")).await.unwrap()), ["13"]);
}

/// A route that passes ids through holds a file with its front id equal to its back id
/// (migration 4 keeps such rows out of `files_by_back`): found by back id, recorded once,
/// NULLs filled, beside rows whose ids are mapped.
async fn files_whose_ids_pass_through_are_found_by_back_id_and_recorded_once(db: Db) {
    let store = db.open().await;
    let id = "7f1e9c6a-2b1d-4c1e-9a7b-3c2d1e0f9a8b";
    let first = Row {
        name: Some("a.txt".into()),
        ..row("r", id, id)
    };
    let held = store.record(vec![first, row("r", "1", "m")]).await.unwrap();
    assert_eq!(fronts(&held), [id, "1"]);
    let again = Row {
        name: Some("b.txt".into()),
        size: Some(9),
        ..row("r", id, id)
    };
    let held = store
        .record(vec![again, row("r", "2", "m"), row("r", id, id)])
        .await
        .unwrap();
    assert_eq!(fronts(&held), [id, "1", id]);
    assert_eq!(held[0].name.as_deref(), Some("a.txt"), "held fields stay");
    assert_eq!(held[0].size, Some(9), "NULL fields are filled");
    assert_eq!(held[2].size, Some(9));
    let mut found = store
        .by_back("r", vec![id.into(), "m".into(), "1".into(), "nope".into()])
        .await
        .unwrap();
    found.sort_by(|x, y| x.back_id.cmp(&y.back_id));
    assert_eq!(fronts(&found), [id, "1"], "{found:?}");
    // Another route's same ids are its own.
    assert!(store
        .by_back("s", vec![id.into(), "m".into()])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.dump(Some("r")).await.unwrap().len(), 2);
}

async fn two_stores_racing_to_record_one_file_agree_on_its_front_id(db: Db) {
    let (a, b) = tokio::join!(db.open(), db.open());
    for k in 0..25 {
        let back = format!("file-{k}");
        let one = {
            let (a, back) = (a.clone(), back.clone());
            tokio::spawn(async move { a.record(vec![row("r", &format!("a{k}"), &back)]).await })
        };
        let two = {
            let (b, back) = (b.clone(), back.clone());
            tokio::spawn(async move { b.record(vec![row("r", &format!("b{k}"), &back)]).await })
        };
        let one = one.await.unwrap().unwrap();
        let two = two.await.unwrap().unwrap();
        assert_eq!(
            one[0].front_id, two[0].front_id,
            "{back}: both get the winner's"
        );
        assert_eq!(one[0].guid, two[0].guid, "{back}");
        let held = a.by_back("r", vec![back.clone()]).await.unwrap();
        assert_eq!(held.len(), 1, "{back}: one row");
        assert_eq!(held[0].front_id, one[0].front_id);
    }
    assert_eq!(b.dump(Some("r")).await.unwrap().len(), 25);
}

async fn two_stores_racing_with_large_overlapping_batches_agree(db: Db) {
    let (a, b) = tokio::join!(db.open(), db.open());
    let batch = |prefix: &str, reverse: bool| {
        let mut rows: Vec<Row> = (0..300)
            .map(|k| Row {
                front_case: Some("c".into()),
                ..row("r", &format!("{prefix}{k}"), &format!("file-{k}"))
            })
            .collect();
        if reverse {
            rows.reverse();
        }
        rows
    };
    for round in 0..3 {
        let route_rows = |rows: Vec<Row>| -> Vec<Row> {
            rows.into_iter()
                .map(|r| Row {
                    route: format!("r{round}"),
                    ..r
                })
                .collect()
        };
        let (one, two) = (route_rows(batch("a", false)), route_rows(batch("b", true)));
        let (a2, b2) = (a.clone(), b.clone());
        let one = tokio::spawn(async move { a2.record(one).await });
        let two = tokio::spawn(async move { b2.record(two).await });
        let mut one = one.await.unwrap().unwrap();
        let mut two = two.await.unwrap().unwrap();
        two.reverse();
        assert_eq!(one.len(), 300);
        for (x, y) in one.iter().zip(&two) {
            assert_eq!(x.back_id, y.back_id);
            assert_eq!(
                x.front_id, y.front_id,
                "{}: both get the winner's",
                x.back_id
            );
        }
        one.sort_by(|x, y| x.front_id.cmp(&y.front_id));
        let held = a.dump(Some(&format!("r{round}"))).await.unwrap();
        assert_eq!(held.len(), 300, "one row per file");
    }
}

async fn every_field_round_trips(db: Db) {
    let store = db.open().await;
    let full = Row {
        route: "route ü".into(),
        front_id: "ffe0c3b2-0d6f-4b8e-9a51-3c2a7d9e1f00".into(),
        front_case: Some("case 'one'".into()),
        back_case: Some("b\"case".into()),
        back_id: "42".into(),
        back_comment_id: Some("comment-1".into()),
        name: Some("résumé (final).pdf".into()),
        content_type: Some("application/pdf".into()),
        size: Some(i64::MAX as u64),
        created_at: Some("2024-05-06T07:08:09.123Z".into()),
        uploader: Some(r#"{"id":7,"name":"Ann"}"#.into()),
        guid: Some("0b5e4c2a-1111-4222-8333-944455556666".into()),
        md5: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
        sha256: Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
    };
    let held = store.record(vec![full.clone()]).await.unwrap();
    assert_eq!(held, std::slice::from_ref(&full));
    assert_eq!(
        store.by_front(&full.route, &full.front_id).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(store.dump(None).await.unwrap(), std::slice::from_ref(&full));
    // A size beyond BIGINT is kept as unknown rather than failing the record.
    let huge = Row {
        size: Some(u64::MAX),
        ..row("r", "1", "huge")
    };
    assert_eq!(store.record(vec![huge]).await.unwrap()[0].size, None);
}

async fn list_case_pages_in_insertion_order_with_the_total(db: Db) {
    let store = db.open().await;
    for i in 0..7 {
        let mut rows = vec![Row {
            front_case: Some("c1".into()),
            // Back ids in decreasing order: insertion order is not back-id order.
            ..row("r", &format!("f{i}"), &format!("b{}", 9 - i))
        }];
        rows.push(Row {
            front_case: Some("c2".into()),
            ..row("r", &format!("g{i}"), &format!("x{i}"))
        });
        rows.push(Row {
            front_case: Some("c1".into()),
            ..row("other", &format!("f{i}"), &format!("b{i}"))
        });
        store.record(rows).await.unwrap();
    }
    let (page, total) = store.list_case("r", "c1", 2, 3).await.unwrap();
    assert_eq!(fronts(&page), ["f2", "f3", "f4"]);
    assert_eq!(total, 7);
    let (page, total) = store.list_case("r", "c1", 5, u64::MAX).await.unwrap();
    assert_eq!(fronts(&page), ["f5", "f6"]);
    assert_eq!(total, 7);
    let (page, total) = store.list_case("r", "c1", 70, 10).await.unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 7);
    let (page, total) = store.list_case("r", "none", 0, 10).await.unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 0);
    // Within one call, rows are inserted in the order given.
    let batch: Vec<Row> = ["z", "a", "m"]
        .iter()
        .map(|b| Row {
            front_case: Some("c3".into()),
            ..row("r", &format!("h-{b}"), &format!("bk-{b}"))
        })
        .collect();
    store.record(batch).await.unwrap();
    let (page, _) = store.list_case("r", "c3", 0, 10).await.unwrap();
    assert_eq!(fronts(&page), ["h-z", "h-a", "h-m"]);
    // The ids alone, as a Thalamus upload answer lists them: same order, same bound.
    let ids = |read: CaseIds| read.rows.into_iter().map(|(_, id)| id).collect::<Vec<_>>();
    let c1 = store.case_ids("r", "c1", i64::MIN, 10).await.unwrap();
    assert_eq!(c1.changes, 0);
    let seqs: Vec<i64> = c1.rows.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(ids(c1), ["f0", "f1", "f2", "f3", "f4", "f5", "f6"]);
    let two = store.case_ids("r", "c1", i64::MIN, 2).await.unwrap();
    assert_eq!(ids(two), ["f0", "f1"]);
    // After a seq: only the rows inserted later.
    let after = store.case_ids("r", "c1", seqs[4], 10).await.unwrap();
    assert_eq!(ids(after), ["f5", "f6"]);
    let after = store.case_ids("r", "c1", seqs[4], 1).await.unwrap();
    assert_eq!(ids(after), ["f5"]);
    let last = store.case_ids("r", "c1", seqs[6], 10).await.unwrap();
    assert_eq!((last.changes, last.rows.len()), (0, 0));
    assert_eq!(
        ids(store.case_ids("r", "c3", i64::MIN, u64::MAX).await.unwrap()),
        ["h-z", "h-a", "h-m"]
    );
    for (route, case) in [("r", "none"), ("nowhere", "c1")] {
        let none = store.case_ids(route, case, i64::MIN, 10).await.unwrap();
        assert!(none.rows.is_empty(), "{route} {case}");
    }
    // A deletion moves the count of changes, in the same transaction; a delete that
    // finds nothing does not.
    assert!(store.remove("r", "f3", None).await.unwrap());
    let c1 = store.case_ids("r", "c1", i64::MIN, 10).await.unwrap();
    assert_eq!(c1.changes, 1);
    assert_eq!(ids(c1), ["f0", "f1", "f2", "f4", "f5", "f6"]);
    // Then: nothing deleted; a file of another route and case (the count is the ledger's).
    for ((route, front), changes) in [(("r", "f3"), 1), (("other", "f3"), 2)] {
        let deleted = store.remove(route, front, None).await.unwrap();
        assert_eq!(deleted, changes == 2, "{route} {front}");
        let read = store.case_ids("r", "c1", i64::MIN, 0).await.unwrap();
        assert_eq!(read.changes, changes, "after {route} {front}");
    }
}

async fn remove_set_hashes_and_dump_order(db: Db) {
    let store = db.open().await;
    store
        .record(vec![row("b", "1", "x"), row("a", "1", "x")])
        .await
        .unwrap();
    store.record(vec![row("b", "0", "y")]).await.unwrap();
    store.record(vec![row("a", "9", "z")]).await.unwrap();
    store.record(vec![row("B", "5", "w")]).await.unwrap();
    let all = store.dump(None).await.unwrap();
    let order: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.route.as_str(), r.front_id.as_str()))
        .collect();
    assert_eq!(
        order,
        [("B", "5"), ("a", "1"), ("a", "9"), ("b", "1"), ("b", "0")],
        "routes in byte order, then insertion order"
    );
    assert_eq!(fronts(&store.dump(Some("b")).await.unwrap()), ["1", "0"]);

    store.set_hashes("b", "0", "md5!", "sha!").await.unwrap();
    let held = store.by_front("b", "0").await.unwrap().unwrap();
    assert_eq!(
        (held.md5.as_deref(), held.sha256.as_deref()),
        (Some("md5!"), Some("sha!"))
    );
    store.set_hashes("b", "gone", "m", "s").await.unwrap();

    assert!(store.remove("b", "0", Some("c")).await.unwrap());
    assert!(!store.remove("b", "0", Some("c")).await.unwrap());
    assert_eq!(store.by_front("b", "0").await.unwrap(), None);
    assert_eq!(store.dump(None).await.unwrap().len(), 4);

    // A Kibana client names a file by its comment id, on its case.
    store
        .record(vec![Row {
            back_comment_id: Some("comment-7".into()),
            front_case: Some("case-k".into()),
            ..row("k", "file-7", "file-7")
        }])
        .await
        .unwrap();
    for case in [None, Some("case-j")] {
        assert!(
            !store.remove("k", "comment-7", case).await.unwrap(),
            "{case:?}"
        );
    }
    assert!(store.by_front("k", "file-7").await.unwrap().is_some());
    assert!(store
        .remove("k", "comment-7", Some("case-k"))
        .await
        .unwrap());
    assert_eq!(store.by_front("k", "file-7").await.unwrap(), None);
    assert!(!store.remove("other-route", "1", None).await.unwrap());
    // A front id wins over a comment id of the same text: one row goes.
    store
        .record(vec![
            Row {
                front_case: Some("c".into()),
                ..row("k", "same", "b-same")
            },
            Row {
                back_comment_id: Some("same".into()),
                front_case: Some("c".into()),
                ..row("k", "other", "b-other")
            },
        ])
        .await
        .unwrap();
    assert!(store.remove("k", "same", Some("c")).await.unwrap());
    assert_eq!(fronts(&store.dump(Some("k")).await.unwrap()), ["other"]);
}

async fn concurrent_records_all_commit(db: Db) {
    let store = db.open().await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let front = i.to_string();
                let held = store.record(vec![row("r", &front, &front)]).await.unwrap();
                assert_eq!(held[0].front_id, front);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.dump(Some("r")).await.unwrap().len(), 100);
}

async fn ledger_reserves_are_distinct_across_two_ledgers(db: Db) {
    let one = db.ledger().await;
    let two = db.ledger().await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ledger = if i % 3 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(async move { ledger.reserve("r", IdForm::Integer).await.unwrap() })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        let id: u64 = task.await.unwrap().parse().unwrap();
        assert!(ids.insert(id), "{id} handed out twice");
    }
    // A restart (a third opener) starts after every block handed out so far.
    let three = db.ledger().await;
    let next: u64 = three
        .reserve("r", IdForm::Integer)
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(ids.iter().all(|id| *id < next), "{next}");
}

async fn ledger_reads_and_writes_pass_through(db: Db) {
    let ledger = db.ledger().await;
    let front_case = |r: Row| Row {
        front_case: Some("c".into()),
        ..r
    };
    let held = ledger
        .record(vec![
            front_case(row("r", "1", "b1")),
            front_case(row("r", "2", "b2")),
        ])
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    let (page, total) = ledger.list_case("r", "c", 1, 10).await.unwrap();
    assert_eq!((page.len(), total), (1, 2));
    ledger.set_hashes("r", "1", "m", "s").await.unwrap();
    assert_eq!(
        ledger.by_back("r", vec!["b1".into()]).await.unwrap()[0]
            .md5
            .as_deref(),
        Some("m")
    );
    let described = |r: Row| Row {
        name: Some("a.txt".into()),
        content_type: Some("text/plain".into()),
        size: Some(5),
        created_at: Some("2026-12-03T08:00:00Z".into()),
        md5: Some("m3".into()),
        sha256: Some("s3".into()),
        ..r
    };
    let confirmed = ledger
        .record_confirmed(described(row("r", "3", "b3")))
        .await;
    assert!(confirmed.guid.is_some());
    assert_eq!(ledger.pending(), 0);
    // The same file confirmed again and again (an upstream naming one id), with the
    // same description or another: its row as held each time, guid and all, and nothing
    // queued.
    for (front, name, md5) in [
        ("4", "a.txt", "m3"),
        ("5", "b.txt", "other"),
        ("6", "a much longer name than the first one.txt", "m3"),
        ("7", "a.txt", "m3"),
    ] {
        let again = Row {
            name: Some(name.into()),
            md5: Some(md5.into()),
            ..described(row("r", front, "b3"))
        };
        let held = ledger.record_confirmed(again).await;
        assert_eq!(held, confirmed, "confirmed again as {front}");
    }
    assert_eq!(ledger.pending(), 0);
    assert!(ledger.remove("r", "2", None).await.unwrap());
    assert_eq!(ledger.dump(Some("r")).await.unwrap().len(), 2);
    assert_eq!(ledger.dump(Some("other")).await.unwrap().len(), 0);
    let id = ledger.reserve("r", IdForm::Integer).await.unwrap();
    assert_eq!(id, "1");
    assert_eq!(ledger.errors(), 0);
    assert!(format!("{ledger:?}").contains("healthy: true"));
}
