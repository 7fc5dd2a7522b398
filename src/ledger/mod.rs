//! The ledger: casegate's id and record store (SPEC section 7.3).
//!
//! Where an upstream's id does not fit the client's dialect form, casegate gives the file a
//! front id of that form (a per-route integer or a UUID) and remembers the pair here,
//! with the file's metadata some upstreams never return (name, type, size, created at,
//! uploader, hashes). Storage sits behind the small object-safe [`Store`] trait: an
//! embedded SQLite file ([`sqlite`]) or a PostgreSQL database shared by replicas
//! ([`postgres`]), both running the same plain-SQL migrations (`migrations/`) and held to
//! the same behaviour tests. [`pg_test`] starts a throwaway PostgreSQL server for tests.
//!
//! Callers hold a [`Ledger`], which adds what every store needs and no store should
//! repeat:
//! - **Health.** Each operation's outcome, and a background ping every 2 s, say whether
//!   the store answers; an upload asks [`Ledger::check`] (no I/O) before it sends
//!   anything, so a dead ledger is a fast 503 rather than a file nobody can find again.
//!   After a write failed, only a write that goes through makes it healthy again, not a
//!   read or a ping (a full disk or a read-only database answers those).
//! - **Id blocks.** Integer front ids are taken from the store 32 at a time and handed
//!   out from memory, so most uploads cost no write before they are sent; the next block
//!   is taken when half of one is used, so that a steady stream of uploads never waits
//!   for it. The price: numbers left in the blocks when casegate stops are never used
//!   (gaps), and ids are increasing per process, not across replicas.
//! - **A retry queue.** A file the upstream has confirmed must be recorded even if the
//!   store is failing right then ([`Ledger::record_confirmed`]): the row waits in memory
//!   and is retried with backoff. The queue is bounded (by default 2000 rows, 5 minutes);
//!   what falls out of it, or is still waiting when casegate stops ([`Ledger::drain`]
//!   gives it a last chance), is logged at error level under the target
//!   `casegate::ledger::lost` as the row's JSON, one line each, for an operator to
//!   replay. Rows in the queue are seen by [`Ledger::by_front`] and [`Ledger::by_back`],
//!   not by lists or dumps, and are written before any other [`Ledger::record`], so an
//!   upload's front id wins over one a list would give the same upstream file.
//!
//! The SQLite store commits in groups: one thread owns the connection and runs every
//! command already queued in one transaction, so a burst of uploads costs one commit
//! rather than one each, at the price of a few microseconds of queueing when idle.

#[cfg(test)]
mod behaviour;
mod cases;
pub mod pg_test;
pub mod postgres;
mod render;
pub mod sqlite;
mod url;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

pub use cases::CaseFiles;
pub use render::{render_json, render_table};
pub use url::LedgerUrl;

/// The tracing target of rows the ledger could not keep (see the module doc).
pub const LOST_TARGET: &str = "casegate::ledger::lost";

/// How many integer front ids [`Ledger::reserve`] takes from the store at a time.
const BLOCK: u64 = 32;
/// The most queued rows one retry writes in one call.
const FLUSH_BATCH: usize = 500;

/// One attachment casegate attached or listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub route: String,
    pub front_id: String,
    pub front_case: Option<String>,
    pub back_case: Option<String>,
    /// The upstream's id for the file (Kibana: the file id).
    pub back_id: String,
    /// Kibana: the id of the case comment holding the file.
    pub back_comment_id: Option<String>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub size: Option<u64>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// Opaque JSON text describing who uploaded it.
    pub uploader: Option<String>,
    /// A UUID the ledger gives the row when it is first inserted if none is given (Tines
    /// `info.guid`).
    pub guid: Option<String>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
}

/// The form of a front id: what the client's dialect uses for attachment ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    Integer,
    Uuid,
}

/// Why the ledger could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The store cannot be reached or refused the operation (I/O, locked, database down).
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
}

/// The storage behind the ledger: SQLite or PostgreSQL. Object-safe, with boxed
/// futures, so `Arc<dyn Store>` works. Futures borrow only `self`: an implementation
/// copies the string arguments it needs.
pub trait Store: Send + Sync + 'static {
    /// Allocates `n` consecutive integers of `route`'s sequence (starting at 1 for a new
    /// route) atomically; returns the first. Never hands the same number out twice, also
    /// across processes sharing the database (an UPDATE ... RETURNING / upsert, never
    /// read-then-write). `n = 0` is taken as 1.
    fn allocate(&self, route: &str, n: u64) -> BoxFuture<'_, Result<u64, LedgerError>>;

    /// Inserts rows. A row whose (route, back_id) is already held keeps the held front_id
    /// (first record wins) and only fills in the held row's NULL fields from the new one;
    /// returns every row as now held, in input order. A new row is given a `guid` when it
    /// has none. A row whose (route, front_id) is held by another back_id is not written
    /// (logged at warn level) and comes back as given.
    fn record(&self, rows: Vec<Row>) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>>;

    /// What [`Store::record`] would answer for `row`, when the store can tell at once
    /// without waiting for anything (SQLite: a file it found held before, named again);
    /// else `row` comes back, to be recorded as usual.
    // Either way a `Row` moves back to the caller; boxing it would cost the allocation
    // this saves.
    #[allow(clippy::result_large_err)]
    fn held_now(&self, row: Row) -> Result<Row, Row> {
        Err(row)
    }

    /// The row of `route` with that front id.
    fn by_front(
        &self,
        route: &str,
        front_id: &str,
    ) -> BoxFuture<'_, Result<Option<Row>, LedgerError>>;

    /// Rows of `route` whose back_id is one of `back_ids` (any order).
    fn by_back(
        &self,
        route: &str,
        back_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>>;

    /// One page of a case's rows (by front_case), oldest first (insertion order), and the
    /// total number of rows of that case.
    fn list_case(
        &self,
        route: &str,
        front_case: &str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'_, Result<(Vec<Row>, u64), LedgerError>>;

    /// The front ids of a case's rows inserted after `after` (a `seq`; 0 for all), oldest
    /// first, at most `limit`: what a Thalamus upload answer lists, read without the rest
    /// of each row. With them, the ledger's count of deleted rows, read BEFORE the rows
    /// (so a deletion that races the read shows as a change next time, never as a list
    /// that still holds a deleted file).
    fn case_ids(
        &self,
        route: &str,
        front_case: &str,
        after: i64,
        limit: u64,
    ) -> BoxFuture<'_, Result<CaseIds, LedgerError>>;

    /// [`Store::case_ids`] answered now, on the caller's thread, when the store can do
    /// that without waiting (SQLite: its connection is free); else None, and the caller
    /// asks [`Store::case_ids`].
    fn case_ids_now(
        &self,
        _route: &str,
        _front_case: &str,
        _after: i64,
        _limit: u64,
    ) -> Option<Result<CaseIds, LedgerError>> {
        None
    }

    /// Whether rows become visible in `seq` order (a row never commits after one with a
    /// higher `seq`), so that reading the rows after the highest `seq` seen finds every
    /// row added since. SQLite: yes (one writer at a time, the number taken inside the
    /// writing transaction). PostgreSQL: no (replicas take numbers, then commit in any
    /// order), so its cases are read whole every time.
    fn seq_follows_commits(&self) -> bool {
        false
    }

    /// Keeps a file's hashes once computed (no error when the row is gone).
    fn set_hashes(
        &self,
        route: &str,
        front_id: &str,
        md5: &str,
        sha256: &str,
    ) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// Deletes a file's row, named by its front id; when no row has that front id and
    /// the case is given, by the comment id a Kibana client names it by
    /// (`back_comment_id`), among that case's rows (an index holds a case's rows, none the
    /// comment ids). True when there was one.
    fn remove(
        &self,
        route: &str,
        front_id: &str,
        front_case: Option<&str>,
    ) -> BoxFuture<'_, Result<bool, LedgerError>>;

    /// A cheap round trip (SELECT 1, or a read as cheap that also proves the database is
    /// the right one and readable).
    fn ping(&self) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// A write that nothing reads (a counter of its own, `ledger.write_probes`, counted
    /// up): what the probe asks, while writes fail and no row waits to be written, to
    /// learn whether they go through again. A write that changes no byte would not do:
    /// SQLite writes no page for it, so a full disk would not show.
    fn write_probe(&self) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// Every row (of one route when given), ordered by route then insertion.
    fn dump(&self, route: Option<&str>) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>>;
}

/// What [`Store::case_ids`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseIds {
    /// The ledger's count of deleted rows (`files.changes`).
    pub changes: i64,
    /// `(seq, front_id)`, oldest first.
    pub rows: Vec<(i64, String)>,
}

/// One schema migration: a plain SQL file every store runs unchanged, in version order,
/// once per database, recorded in the `casegate_schema` table.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Add a file and a line here; never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_case_ids_covering.sql",
        sql: include_str!("migrations/0002_case_ids_covering.sql"),
    },
    Migration {
        version: 3,
        name: "0003_case_changes.sql",
        sql: include_str!("migrations/0003_case_changes.sql"),
    },
    Migration {
        version: 4,
        name: "0004_back_ids_mapped_only.sql",
        sql: include_str!("migrations/0004_back_ids_mapped_only.sql"),
    },
    Migration {
        version: 5,
        name: "0005_no_seq_index.sql",
        sql: include_str!("migrations/0005_no_seq_index.sql"),
    },
];

/// [`Store::write_probe`]'s statement, the same on SQLite and PostgreSQL.
pub(crate) const WRITE_PROBE: &str = "INSERT INTO counters (name, value) \
     VALUES ('ledger.write_probes', 1) \
     ON CONFLICT (name) DO UPDATE SET value = counters.value + 1";

/// The table that records which migrations a database has had.
pub(crate) const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS casegate_schema (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

/// The clocks of a [`Ledger`]: how often it probes, how long it waits, how long and how
/// much it queues. [`Default`] holds the production values; tests shorten them.
#[derive(Debug, Clone)]
pub struct LedgerTiming {
    /// Time between two background pings (2 s).
    pub probe_every: Duration,
    /// A ping not answered within this is a failure (3 s).
    pub probe_timeout: Duration,
    /// Any other store call not answered within this is a failure (10 s). The call may
    /// still complete in the store afterwards.
    pub op_timeout: Duration,
    /// How long [`Ledger::record_confirmed`] waits for the store before queueing (2 s).
    pub confirm_wait: Duration,
    /// The first retry of queued rows waits this long, doubling after each failure
    /// (250 ms) ...
    pub retry_first: Duration,
    /// ... up to this (10 s).
    pub retry_max_backoff: Duration,
    /// A queued row still not written after this is given up (5 min).
    pub retry_max_age: Duration,
    /// At most this many rows wait; more are given up at once (2000).
    pub retry_max_rows: usize,
}

impl Default for LedgerTiming {
    fn default() -> Self {
        LedgerTiming {
            probe_every: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(3),
            op_timeout: Duration::from_secs(10),
            confirm_wait: Duration::from_secs(2),
            retry_first: Duration::from_millis(250),
            retry_max_backoff: Duration::from_secs(10),
            retry_max_age: Duration::from_secs(300),
            retry_max_rows: 2000,
        }
    }
}

/// What callers use: a store plus health tracking, integer-id blocks, and retries of
/// writes that must not be lost. Cloning is cheap (one `Arc`); every clone shares the
/// same state. Its background tasks (probe, retry) stop when the last clone is dropped.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    timing: LedgerTiming,
    healthy: AtomicBool,
    /// The last write failed: until one goes through, reads and pings that answer do not
    /// make the ledger healthy ([`Inner::note`]).
    writes_failing: AtomicBool,
    errors: AtomicU64,
    /// Rows given up (retry queue full, or too old), each logged as lost.
    lost: AtomicU64,
    /// Why the last failed operation failed: what [`Ledger::check`] reports.
    last_error: Mutex<String>,
    /// Per route, the block of integer ids being handed out.
    blocks: Mutex<HashMap<String, Arc<Ids>>>,
    /// Confirmed rows waiting to be recorded, oldest first.
    queue: Mutex<VecDeque<Queued>>,
    /// Held while queued rows are written or expired, so the front of the queue is only
    /// removed by whoever wrote it.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the retry task: rows were queued, the store answers again, or the ledger is
    /// gone.
    wake: Arc<Notify>,
    tasks_started: AtomicBool,
    /// Case listings held for Thalamus upload answers.
    listings: cases::Listings,
}

/// A route's integer ids: the block being handed out, and the one after it.
#[derive(Default)]
struct Ids {
    /// Held only to take a number or move to the next block, never across an await: an
    /// upload takes its id here and, in a steady stream, never waits. (A tokio mutex held
    /// for every id made each upload that had waited behind a block's allocation wake the
    /// next waiter in turn, often on the other worker thread, bench/RESULTS.md, the
    /// twenty-eighth round.)
    block: Mutex<Block>,
    /// Woken when a fetch of the next block ends, taken or failed.
    fetched: Notify,
}

#[derive(Default)]
struct Block {
    /// Ids reserved and given back unused ([`Ledger::give_back`]), taken again first.
    returned: Vec<u64>,
    next: u64,
    end: u64,
    /// The first id of the block after this one, once fetched.
    spare: Option<u64>,
    /// A task is fetching the next block.
    fetching: bool,
}

impl Block {
    /// The next id (None: none left, nor a next block yet), moving on to the next block
    /// when this one is used up; and whether the caller is now to fetch the next block:
    /// half of this one is used (or none is left) and nobody fetches it yet.
    fn take(&mut self) -> (Option<u64>, bool) {
        if let Some(id) = self.returned.pop() {
            return (Some(id), false);
        }
        if self.next >= self.end {
            if let Some(first) = self.spare.take() {
                self.next = first;
                self.end = first.saturating_add(BLOCK);
            }
        }
        let id = (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        });
        let fetch = !self.fetching && self.spare.is_none() && self.end - self.next <= BLOCK / 2;
        self.fetching |= fetch;
        (id, fetch)
    }
}

/// Ends a fetch of the next block however it ends (taken, failed, or its task dropped):
/// no longer fetching, and the waiters woken.
struct Fetching(Arc<Ids>);

impl Drop for Fetching {
    fn drop(&mut self) {
        lock(&self.0.block).fetching = false;
        self.0.fetched.notify_waiters();
    }
}

struct Queued {
    row: Row,
    since: Instant,
}

/// How many requests the process is serving now. The SQLite store reads it to choose
/// between group commit on its own thread (requests to group) and running a lone
/// request's command on that request's thread (nothing to group it with, so the two
/// thread hand-offs would be pure latency).
#[derive(Clone, Debug, Default)]
pub struct Load(Arc<std::sync::atomic::AtomicUsize>);

/// One request counted in a [`Load`]; dropping it uncounts it.
#[derive(Debug)]
#[must_use = "the request stops being counted when this guard drops"]
pub struct Serving(Load);

impl Load {
    /// Counts one request until the guard drops.
    pub fn enter(&self) -> Serving {
        self.0.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }

    /// Whether at most one request is being served.
    pub fn alone(&self) -> bool {
        self.0.load(Ordering::Relaxed) <= 1
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ledger {
    /// Opens (creates and migrates) the store at `url`; spawns its background tasks
    /// (needs a tokio runtime). Err: a message naming the place and the reason (never a
    /// PostgreSQL password).
    pub async fn open(url: &LedgerUrl) -> Result<Ledger, String> {
        Ledger::open_with_load(url, None).await
    }

    /// [`Ledger::open`], told how many requests the process is serving: a SQLite store
    /// then runs a lone request's command on that request's own thread (see
    /// [`sqlite::SqliteStore::inline_when_alone`]).
    pub async fn open_with_load(url: &LedgerUrl, load: Option<Load>) -> Result<Ledger, String> {
        let sqlite = |s: sqlite::SqliteStore| match &load {
            Some(load) => s.inline_when_alone(load.clone()),
            None => s,
        };
        let store: Arc<dyn Store> = match url {
            LedgerUrl::Sqlite(path) => Arc::new(sqlite(sqlite::SqliteStore::open(path).await?)),
            LedgerUrl::SqliteMemory => Arc::new(sqlite(sqlite::SqliteStore::open_memory().await?)),
            LedgerUrl::Postgres(url) => Arc::new(postgres::PostgresStore::open(url).await?),
        };
        Ok(Ledger::with_store(store))
    }

    /// Wraps any store (tests), with the production timing.
    pub fn with_store(store: Arc<dyn Store>) -> Ledger {
        Ledger::with_store_and_timing(store, LedgerTiming::default())
    }

    /// Wraps any store with other timing (tests). The background tasks start here when
    /// called inside a tokio runtime, else at the first async call.
    pub fn with_store_and_timing(store: Arc<dyn Store>, timing: LedgerTiming) -> Ledger {
        let ledger = Ledger {
            inner: Arc::new(Inner {
                store,
                timing,
                healthy: AtomicBool::new(true),
                writes_failing: AtomicBool::new(false),
                lost: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                last_error: Mutex::new(String::new()),
                blocks: Mutex::new(HashMap::new()),
                queue: Mutex::new(VecDeque::new()),
                flushing: tokio::sync::Mutex::new(()),
                wake: Arc::new(Notify::new()),
                tasks_started: AtomicBool::new(false),
                listings: cases::Listings::default(),
            }),
        };
        ledger.start_tasks();
        ledger
    }

    /// Whether the last operations / probe succeeded. A background probe pings every
    /// 2 s, so health turns false within ~5 s of the store failing and true again within
    /// ~2 s of it answering, without a restart. After a write failed, only a write
    /// brings health back (see `Inner::note`): a store that answers pings but fails
    /// writes (a full disk, a read-only database) stays unhealthy, rather than turning
    /// healthy at each ping and letting the next uploads through to fail their writes.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    /// Err(Unavailable) at once when not healthy; otherwise Ok (no I/O): what an upload
    /// checks before it sends anything.
    pub fn check(&self) -> Result<(), LedgerError> {
        if self.healthy() {
            Ok(())
        } else {
            Err(LedgerError::Unavailable(
                lock(&self.inner.last_error).clone(),
            ))
        }
    }

    /// A new front id for `route`, after [`Ledger::check`]: `Uuid` -> a version 7 UUID
    /// (a millisecond timestamp, then 74 random bits; this process's in creation order), so
    /// the ledger's `(route, front_id)` index grows at its end like a sequence instead of
    /// taking writes all over (random v4 keys made each commit touch more index pages:
    /// caseiq->tines with a new file per upload had three times the p99 of the routes
    /// without generated UUIDs, bench/RESULTS.md, the tenth round);
    /// `Integer` -> the next number of a block of 32 taken with [`Store::allocate`] and
    /// handed out from memory (gaps after a restart are fine).
    pub async fn reserve(&self, route: &str, form: IdForm) -> Result<String, LedgerError> {
        self.start_tasks();
        self.check()?;
        match form {
            IdForm::Uuid => Ok(uuid_string(uuid::Uuid::now_v7())),
            IdForm::Integer => {
                let ids = {
                    let mut blocks = lock(&self.inner.blocks);
                    match blocks.get(route) {
                        Some(ids) => ids.clone(),
                        None => {
                            let ids = Arc::new(Ids::default());
                            blocks.insert(route.to_string(), ids.clone());
                            ids
                        }
                    }
                };
                loop {
                    let (id, fetch) = lock(&ids.block).take();
                    match (id, fetch) {
                        (Some(id), false) => return Ok(id.to_string()),
                        (Some(id), true) => {
                            // Half the block is used: the next one is fetched beside the
                            // uploads, so that none waits for it.
                            let (ledger, ids) = (self.clone(), ids.clone());
                            let route = route.to_string();
                            drop(tokio::spawn(async move {
                                let _ = ledger.fetch_block(ids, &route).await;
                            }));
                            return Ok(id.to_string());
                        }
                        // None left, and nobody fetches the next block: this upload does.
                        (None, true) => self.fetch_block(ids.clone(), route).await?,
                        // None left: the next block is on its way. The wait is
                        // registered before looking again, so that a fetch ending in
                        // between is not missed (only waiting uploads touch the Notify).
                        (None, false) => {
                            let fetched = ids.fetched.notified();
                            tokio::pin!(fetched);
                            fetched.as_mut().enable();
                            if lock(&ids.block).fetching {
                                fetched.await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Gives back an integer id [`Ledger::reserve`] gave for `route` that no row took
    /// (the upload failed, or its upstream named a file the ledger holds under another
    /// front id): the next reservation takes it again. Only the caller had it, and
    /// nothing recorded it, so no client sees it twice; ids stay dense, and an upstream
    /// that names one file again and again no longer uses up a block (a write
    /// transaction) every 32 uploads. An id of a route without blocks is left alone, and
    /// so is one past the most that are kept (a gap, as after a restart).
    pub fn give_back(&self, route: &str, id: u64) {
        let Some(ids) = lock(&self.inner.blocks).get(route).cloned() else {
            return;
        };
        let mut block = lock(&ids.block);
        if block.returned.len() < BLOCK as usize && !block.returned.contains(&id) {
            block.returned.push(id);
        }
    }

    /// Takes the next block of `route`'s ids from the store, as the spare of `ids`.
    async fn fetch_block(&self, ids: Arc<Ids>, route: &str) -> Result<(), LedgerError> {
        let fetching = Fetching(ids);
        let first = self
            .inner
            .call(self.inner.store.allocate(route, BLOCK), Access::Write)
            .await?;
        lock(&fetching.0.block).spare = Some(first);
        Ok(())
    }

    /// [`Store::record`] (after writing any queued rows first, so they keep precedence);
    /// failures mark the ledger unhealthy.
    pub async fn record(&self, rows: Vec<Row>) -> Result<Vec<Row>, LedgerError> {
        self.start_tasks();
        if self.pending() > 0 {
            self.inner.flush().await?;
        }
        self.inner
            .call(self.inner.store.record(rows), Access::Write)
            .await
    }

    /// For a file the upstream has CONFIRMED: records it and returns the row as held. The
    /// row is given its `guid` here when it has none, so the answer and the eventual
    /// record agree. If the store fails or does not answer within ~2 s, or rows are
    /// already waiting, the row joins the retry queue (see the module doc) and comes back
    /// as given: the client still gets its success. A store that fails marks the ledger
    /// unhealthy; one that is only slow does not (the probe judges whether it hangs).
    pub async fn record_confirmed(&self, mut row: Row) -> Row {
        self.start_tasks();
        // Queued rows keep their precedence: while any wait, this one joins them.
        let first = self.pending() == 0;
        if first {
            // A file held already, named again: its row, with no copy of `row` kept for
            // the retry queue and no wait.
            row = match self.inner.store.held_now(row) {
                Ok(held) => return held,
                Err(row) => row,
            };
        }
        if row.guid.is_none() {
            row.guid = Some(uuid_string(uuid::Uuid::new_v4()));
        }
        if first {
            let wait = self.inner.timing.confirm_wait;
            match tokio::time::timeout(wait, self.inner.store.record(vec![row.clone()])).await {
                Ok(result) => {
                    self.inner.note(&result, Access::Write);
                    match result {
                        Ok(mut held) => return held.pop().unwrap_or(row),
                        Err(e) => tracing::warn!(
                            route = %row.route,
                            front_id = %row.front_id,
                            back_id = %row.back_id,
                            error = %e,
                            "a confirmed file could not be recorded; it will be retried"
                        ),
                    }
                }
                // Slow is not failed: health is left to the store's answers and the
                // probe. Marking the ledger unhealthy here turned a disk stall of a few
                // seconds (a checkpoint's fsync behind gigabytes of dirty pages) into
                // uploads refused 503 while the store was still writing.
                Err(_) => tracing::warn!(
                    route = %row.route,
                    front_id = %row.front_id,
                    back_id = %row.back_id,
                    waited = %humantime::format_duration(wait),
                    "the ledger is slow to record a confirmed file; it is queued and will \
                     be retried"
                ),
            }
        }
        self.inner.enqueue(row.clone());
        row
    }

    /// The row of `route` with that front id (also while it waits in the retry queue).
    pub async fn by_front(&self, route: &str, front_id: &str) -> Result<Option<Row>, LedgerError> {
        self.start_tasks();
        let held = self
            .inner
            .call(self.inner.store.by_front(route, front_id), Access::Read)
            .await?;
        Ok(held.or_else(|| {
            self.inner
                .queued(|r| r.route == route && r.front_id == front_id)
                .pop()
        }))
    }

    /// Rows of `route` whose back_id is one of `back_ids`, in any order (also those
    /// waiting in the retry queue).
    pub async fn by_back(
        &self,
        route: &str,
        back_ids: Vec<String>,
    ) -> Result<Vec<Row>, LedgerError> {
        self.start_tasks();
        let wanted: HashSet<String> = back_ids.iter().cloned().collect();
        let mut rows = self
            .inner
            .call(self.inner.store.by_back(route, back_ids), Access::Read)
            .await?;
        if self.pending() > 0 {
            let found: HashSet<String> = rows.iter().map(|r| r.back_id.clone()).collect();
            rows.extend(self.inner.queued(|r| {
                r.route == route && wanted.contains(&r.back_id) && !found.contains(&r.back_id)
            }));
        }
        Ok(rows)
    }

    /// One page of a case's rows, oldest first, and the case's total.
    pub async fn list_case(
        &self,
        route: &str,
        front_case: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Row>, u64), LedgerError> {
        self.start_tasks();
        self.inner
            .call(
                self.inner.store.list_case(route, front_case, offset, limit),
                Access::Read,
            )
            .await
    }

    /// What a Thalamus upload answer lists: the front ids of the case's first `limit`
    /// rows, oldest first, and `new` (the uploaded file) after them unless among them.
    /// Read from a listing held in memory and the rows added since where the store
    /// allows (see [`cases`]).
    pub async fn case_files(
        &self,
        route: &str,
        front_case: &str,
        limit: u64,
        new: &str,
    ) -> Result<CaseFiles, LedgerError> {
        self.start_tasks();
        let inner = &*self.inner;
        let read = |after: i64, n: u64| async move {
            match inner.store.case_ids_now(route, front_case, after, n) {
                Some(read) => {
                    inner.note(&read, Access::Read);
                    read
                }
                None => {
                    inner
                        .call(
                            inner.store.case_ids(route, front_case, after, n),
                            Access::Read,
                        )
                        .await
                }
            }
        };
        inner
            .listings
            .files(
                inner.store.seq_follows_commits(),
                read,
                route,
                front_case,
                limit,
                new,
            )
            .await
    }

    /// Keeps a file's hashes once computed.
    pub async fn set_hashes(
        &self,
        route: &str,
        front_id: &str,
        md5: &str,
        sha256: &str,
    ) -> Result<(), LedgerError> {
        self.start_tasks();
        self.inner
            .call(
                self.inner.store.set_hashes(route, front_id, md5, sha256),
                Access::Write,
            )
            .await
    }

    /// Deletes a file's row, named by its front id or (on its case) by the comment id a
    /// Kibana client names it by ([`Store::remove`]); true when there was one.
    pub async fn remove(
        &self,
        route: &str,
        front_id: &str,
        front_case: Option<&str>,
    ) -> Result<bool, LedgerError> {
        self.start_tasks();
        self.inner
            .call(
                self.inner.store.remove(route, front_id, front_case),
                Access::Write,
            )
            .await
    }

    /// Every row (of one route when given), ordered by route then insertion.
    pub async fn dump(&self, route: Option<&str>) -> Result<Vec<Row>, LedgerError> {
        self.start_tasks();
        self.inner
            .call(self.inner.store.dump(route), Access::Read)
            .await
    }

    /// For a graceful shutdown: tries to write the rows waiting in the retry queue until
    /// none is left or `within` has passed; returns how many are still waiting (those are
    /// logged as lost when the last clone of the ledger is dropped).
    pub async fn drain(&self, within: Duration) -> usize {
        self.start_tasks();
        let deadline = tokio::time::Instant::now() + within;
        let mut pause = self.inner.timing.retry_first;
        while self.pending() > 0 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if let Ok(Ok(())) = tokio::time::timeout(left, self.inner.flush()).await {
                continue;
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)).await;
            pause = (pause * 2).min(self.inner.timing.retry_max_backoff);
        }
        self.pending()
    }

    /// Rows queued for retry (for tests and metrics).
    pub fn pending(&self) -> usize {
        lock(&self.inner.queue).len()
    }

    /// Rows given up so far, while casegate runs: the retry queue full, or a row waiting
    /// longer than its bound (each logged as lost). Those still waiting at exit are logged
    /// then, not counted.
    pub fn rows_lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Counter of store errors so far, failed probes included (metrics will read it).
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Spawns the probe and retry tasks once, when a tokio runtime is at hand (the server
    /// calls it on its multi-threaded runtime, so they do not live on a connection
    /// worker that may end first).
    pub fn start_tasks(&self) {
        if self.inner.tasks_started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.tasks_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(probe(weak.clone(), self.inner.timing.probe_every));
        runtime.spawn(retry(weak, self.inner.wake.clone()));
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("healthy", &self.healthy())
            .field("pending", &self.pending())
            .field("errors", &self.errors())
            .finish()
    }
}

/// Whether a store call reads or writes: what its success says about the ledger's
/// health ([`Inner::note`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

impl Inner {
    /// A store call with the operation timeout, its outcome noted.
    async fn call<T>(
        &self,
        future: BoxFuture<'_, Result<T, LedgerError>>,
        access: Access,
    ) -> Result<T, LedgerError> {
        let result = timed(self.timing.op_timeout, future).await;
        self.note(&result, access);
        result
    }

    /// Health and the error counter follow every store call. A failure of either kind
    /// marks the ledger unhealthy; a success makes it healthy again, except a read's
    /// after a write failed: a full disk or a read-only database (a PostgreSQL standby)
    /// answers reads and pings and fails every write, so only a write that goes through
    /// says the ledger is whole again (the probe tries one each time its ping is answered
    /// while the ledger is unhealthy).
    fn note<T>(&self, result: &Result<T, LedgerError>, access: Access) {
        match result {
            Ok(_) => {
                if access == Access::Write && self.writes_failing.load(Ordering::Acquire) {
                    self.writes_failing.store(false, Ordering::Release);
                }
                if self.healthy.load(Ordering::Acquire)
                    || (access == Access::Read && self.writes_failing.load(Ordering::Acquire))
                {
                    return;
                }
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("the ledger answers again");
                }
            }
            Err(LedgerError::Unavailable(reason)) => {
                if access == Access::Write {
                    self.writes_failing.store(true, Ordering::Release);
                }
                self.errors.fetch_add(1, Ordering::Relaxed);
                reason.clone_into(&mut lock(&self.last_error));
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %reason, "the ledger is unavailable");
                }
            }
        }
    }

    /// Queues a confirmed row for retry, or gives it up when the queue is full.
    fn enqueue(&self, row: Row) {
        let mut queue = lock(&self.queue);
        if queue.len() >= self.timing.retry_max_rows {
            drop(queue);
            let reason = format!(
                "the ledger's retry queue is full ({} rows)",
                self.timing.retry_max_rows
            );
            self.lost.fetch_add(1, Ordering::Relaxed);
            lost(&row, &reason);
            return;
        }
        let was_empty = queue.is_empty();
        queue.push_back(Queued {
            row,
            since: Instant::now(),
        });
        drop(queue);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Copies of the queued rows that match.
    fn queued(&self, matches: impl Fn(&Row) -> bool) -> Vec<Row> {
        lock(&self.queue)
            .iter()
            .filter(|q| matches(&q.row))
            .map(|q| q.row.clone())
            .collect()
    }

    /// Writes the oldest queued rows (up to [`FLUSH_BATCH`]); they leave the queue only
    /// once the store took them.
    async fn flush(&self) -> Result<(), LedgerError> {
        let _flushing = self.flushing.lock().await;
        let rows: Vec<Row> = lock(&self.queue)
            .iter()
            .take(FLUSH_BATCH)
            .map(|q| q.row.clone())
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        self.call(self.store.record(rows), Access::Write).await?;
        let mut queue = lock(&self.queue);
        let n = n.min(queue.len());
        queue.drain(..n);
        let left = queue.len();
        drop(queue);
        tracing::info!(
            recorded = n,
            left,
            "the ledger took rows that waited to be recorded"
        );
        Ok(())
    }

    /// Gives up the rows that waited longer than the bound.
    async fn expire(&self, last_error: &str) {
        let _flushing = self.flushing.lock().await;
        let max_age = self.timing.retry_max_age;
        let mut expired = Vec::new();
        {
            let mut queue = lock(&self.queue);
            while queue.front().is_some_and(|q| q.since.elapsed() >= max_age) {
                if let Some(q) = queue.pop_front() {
                    expired.push(q.row);
                }
            }
        }
        if !expired.is_empty() {
            let reason = format!(
                "not recorded within {} ({last_error})",
                humantime::format_duration(max_age)
            );
            self.lost.fetch_add(expired.len() as u64, Ordering::Relaxed);
            for row in &expired {
                lost(row, &reason);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.wake.notify_one();
        let queue = std::mem::take(self.queue.get_mut().unwrap_or_else(PoisonError::into_inner));
        for q in queue {
            lost(&q.row, "casegate stopped before the ledger could take it");
        }
    }
}

/// Pings the store every `every` while the ledger lives.
async fn probe(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let result = timed(inner.timing.probe_timeout, inner.store.ping()).await;
        inner.note(&result, Access::Read);
        if result.is_ok() && !inner.healthy.load(Ordering::Acquire) {
            // Answered, yet unhealthy: a write failed, and only a write can say whether
            // they go through now. Rows waiting to be written are that write (the oldest
            // tried at once rather than after the retry's backoff; the rest follow
            // without it when they went through); else a write nothing reads.
            if lock(&inner.queue).is_empty() {
                let wrote = timed(inner.timing.probe_timeout, inner.store.write_probe()).await;
                inner.note(&wrote, Access::Write);
            } else if inner.flush().await.is_ok() {
                inner.wake.notify_one();
            }
        }
    }
}

/// Writes queued rows with backoff while the ledger lives; gives up those too old.
async fn retry(weak: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        // Sleep until rows are queued (a notification sent meanwhile is kept).
        loop {
            match weak.upgrade() {
                None => return,
                Some(inner) if !lock(&inner.queue).is_empty() => break,
                Some(_) => {}
            }
            wake.notified().await;
        }
        let Some(first) = weak.upgrade().map(|inner| inner.timing.retry_first) else {
            return;
        };
        let mut backoff = first;
        let mut last_error = String::from("no attempt yet");
        let mut attempt = 0u64;
        loop {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            inner.expire(&last_error).await;
            let waiting = lock(&inner.queue).len();
            if waiting == 0 {
                break;
            }
            attempt += 1;
            match inner.flush().await {
                Ok(()) => {
                    backoff = first;
                    attempt = 0;
                    continue;
                }
                Err(LedgerError::Unavailable(reason)) => {
                    tracing::warn!(
                        waiting,
                        attempt,
                        retry_in = %humantime::format_duration(backoff),
                        error = %reason,
                        "the ledger still cannot take the rows waiting to be recorded"
                    );
                    last_error = reason;
                }
            }
            let pause = backoff;
            backoff = (backoff * 2).min(inner.timing.retry_max_backoff);
            drop(inner);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = wake.notified() => {}
            }
        }
    }
}

/// `future`, or Unavailable when it takes longer than `limit`.
async fn timed<T>(
    limit: Duration,
    future: BoxFuture<'_, Result<T, LedgerError>>,
) -> Result<T, LedgerError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(LedgerError::Unavailable(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        ))),
    }
}

/// Logs a row the ledger gives up, as one replayable JSON line.
fn lost(row: &Row, reason: &str) {
    let json = serde_json::to_string(row).unwrap_or_default();
    tracing::error!(target: LOST_TARGET, reason, "{json}");
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A UUID in its hyphenated lower-case text, written straight into its `String`
/// (`to_string` goes through the formatting machinery: about 400 instructions, twice per
/// upload).
pub(crate) fn uuid_string(id: uuid::Uuid) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::ledger::sqlite::SqliteStore;

    #[test]
    fn uuid_string_is_the_uuids_text() {
        for id in [
            uuid::Uuid::nil(),
            uuid::Uuid::max(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::now_v7(),
        ] {
            assert_eq!(uuid_string(id), id.to_string());
        }
    }

    /// A store that fails (all calls, or writes only) or hangs on demand.
    struct Flaky {
        inner: SqliteStore,
        down: AtomicBool,
        writes_down: AtomicBool,
        /// Writes answer, but only after 300 ms.
        writes_slow: AtomicBool,
        hang: AtomicBool,
    }

    impl Flaky {
        async fn new() -> Arc<Flaky> {
            Arc::new(Flaky {
                inner: SqliteStore::open_memory().await.unwrap(),
                down: AtomicBool::new(false),
                writes_down: AtomicBool::new(false),
                writes_slow: AtomicBool::new(false),
                hang: AtomicBool::new(false),
            })
        }

        fn set(flag: &AtomicBool, on: bool) {
            flag.store(on, Ordering::SeqCst);
        }

        fn gate<'a, T: Send + 'a>(
            &'a self,
            write: bool,
            call: BoxFuture<'a, Result<T, LedgerError>>,
        ) -> BoxFuture<'a, Result<T, LedgerError>> {
            let down = self.down.load(Ordering::SeqCst)
                || (write && self.writes_down.load(Ordering::SeqCst));
            let hang = self.hang.load(Ordering::SeqCst);
            let slow = write && self.writes_slow.load(Ordering::SeqCst);
            Box::pin(async move {
                if hang {
                    futures_util::future::pending::<()>().await;
                }
                if slow {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if down {
                    return Err(LedgerError::Unavailable("test: the store is down".into()));
                }
                call.await
            })
        }
    }

    impl Store for Flaky {
        fn allocate(&self, route: &str, n: u64) -> BoxFuture<'_, Result<u64, LedgerError>> {
            self.gate(true, self.inner.allocate(route, n))
        }
        fn record(&self, rows: Vec<Row>) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>> {
            self.gate(true, self.inner.record(rows))
        }
        fn by_front(
            &self,
            route: &str,
            front_id: &str,
        ) -> BoxFuture<'_, Result<Option<Row>, LedgerError>> {
            self.gate(false, self.inner.by_front(route, front_id))
        }
        fn by_back(
            &self,
            route: &str,
            back_ids: Vec<String>,
        ) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>> {
            self.gate(false, self.inner.by_back(route, back_ids))
        }
        fn list_case(
            &self,
            route: &str,
            front_case: &str,
            offset: u64,
            limit: u64,
        ) -> BoxFuture<'_, Result<(Vec<Row>, u64), LedgerError>> {
            self.gate(
                false,
                self.inner.list_case(route, front_case, offset, limit),
            )
        }
        fn case_ids(
            &self,
            route: &str,
            front_case: &str,
            after: i64,
            limit: u64,
        ) -> BoxFuture<'_, Result<CaseIds, LedgerError>> {
            self.gate(false, self.inner.case_ids(route, front_case, after, limit))
        }
        fn seq_follows_commits(&self) -> bool {
            self.inner.seq_follows_commits()
        }
        fn set_hashes(
            &self,
            route: &str,
            front_id: &str,
            md5: &str,
            sha256: &str,
        ) -> BoxFuture<'_, Result<(), LedgerError>> {
            self.gate(true, self.inner.set_hashes(route, front_id, md5, sha256))
        }
        fn remove(
            &self,
            route: &str,
            front_id: &str,
            front_case: Option<&str>,
        ) -> BoxFuture<'_, Result<bool, LedgerError>> {
            self.gate(true, self.inner.remove(route, front_id, front_case))
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
            self.gate(false, self.inner.ping())
        }
        fn write_probe(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
            self.gate(true, self.inner.write_probe())
        }
        fn dump(&self, route: Option<&str>) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>> {
            self.gate(false, self.inner.dump(route))
        }
    }

    fn quick() -> LedgerTiming {
        LedgerTiming {
            probe_every: Duration::from_millis(20),
            probe_timeout: Duration::from_millis(100),
            op_timeout: Duration::from_millis(500),
            confirm_wait: Duration::from_millis(100),
            retry_first: Duration::from_millis(10),
            retry_max_backoff: Duration::from_millis(40),
            retry_max_age: Duration::from_secs(60),
            retry_max_rows: 2000,
        }
    }

    /// A ledger on `store` whose retry task waits a minute between tries: within a test,
    /// queued rows are written by something else or not at all.
    fn retrying_each_minute(store: &Arc<Flaky>) -> Ledger {
        Ledger::with_store_and_timing(
            store.clone(),
            LedgerTiming {
                retry_first: Duration::from_secs(60),
                retry_max_backoff: Duration::from_secs(60),
                ..quick()
            },
        )
    }

    fn row(front_id: &str, back_id: &str) -> Row {
        Row {
            route: "r".into(),
            front_id: front_id.into(),
            back_id: back_id.into(),
            front_case: Some("c".into()),
            ..Row::default()
        }
    }

    /// Waits (up to 5 s) for `condition`.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Collects what is logged on this thread while the guard lives.
    #[derive(Clone, Default)]
    pub(super) struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        pub(super) fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            (logs, tracing::subscriber::set_default(subscriber))
        }

        pub(super) fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    #[tokio::test]
    async fn integer_ids_come_from_blocks_in_order_and_uuids_are_v7_in_order() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store(store.clone());
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.push(ledger.reserve("r", IdForm::Integer).await.unwrap());
        }
        let expected: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
        assert_eq!(ids, expected);
        // Two blocks were taken: the store's next number is 65.
        assert_eq!(store.allocate("r", 1).await.unwrap(), 65);
        assert_eq!(ledger.reserve("s", IdForm::Integer).await.unwrap(), "1");

        let mut uuids = Vec::new();
        for _ in 0..200 {
            let id = ledger.reserve("r", IdForm::Uuid).await.unwrap();
            assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
            uuids.push(id);
        }
        // Each one after the last, also within one millisecond: as text too, which is how
        // the ledger's index orders them.
        assert!(uuids.windows(2).all(|w| w[0] < w[1]), "{uuids:?}");
    }

    #[tokio::test]
    async fn an_id_given_back_is_reserved_again_first_and_once() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store(store.clone());
        let take = || {
            let ledger = ledger.clone();
            async move { ledger.reserve("r", IdForm::Integer).await.unwrap() }
        };
        assert_eq!(
            (take().await, take().await, take().await),
            ("1".into(), "2".into(), "3".into())
        );
        ledger.give_back("r", 2);
        ledger.give_back("r", 2);
        // Another route's ids, and a route that never reserved, are apart.
        ledger.give_back("elsewhere", 1);
        assert_eq!(take().await, "2");
        assert_eq!(take().await, "4", "given back once, taken once");
        // At most a block's worth is kept; the rest are gaps.
        for n in 100..100 + 2 * BLOCK {
            ledger.give_back("r", n);
        }
        let again: Vec<String> =
            futures_util::future::join_all((0..BLOCK + 1).map(|_| take())).await;
        assert_eq!(again.last().map(String::as_str), Some("5"), "{again:?}");
        assert_eq!(store.allocate("r", 1).await.unwrap(), 33, "one block taken");
        assert!(lock(&ledger.inner.blocks).get("elsewhere").is_none());
    }

    #[tokio::test]
    async fn the_next_block_is_taken_while_ids_are_left_so_nobody_waits_for_it() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store(store.clone());
        for n in 1..=17 {
            assert_eq!(
                ledger.reserve("r", IdForm::Integer).await.unwrap(),
                n.to_string()
            );
        }
        // Half the first block is used (its 16th id): the second is being taken, beside
        // the uploads.
        let ids = lock(&ledger.inner.blocks).get("r").cloned().unwrap();
        eventually("the next block is taken", || {
            lock(&ids.block).spare.is_some()
        })
        .await;
        // The store is slow now (300 ms a write): ids 18-48, the rest of the first block
        // and the second up to its half-way mark (where the third's fetch is spawned),
        // come without waiting for it.
        Flaky::set(&store.writes_slow, true);
        let start = Instant::now();
        for n in 18..=48 {
            assert_eq!(
                ledger.reserve("r", IdForm::Integer).await.unwrap(),
                n.to_string()
            );
        }
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reserves_are_distinct_and_take_each_block_once() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store(store.clone());
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let ledger = ledger.clone();
                tokio::spawn(async move { ledger.reserve("r", IdForm::Integer).await.unwrap() })
            })
            .collect();
        let mut ids = HashSet::new();
        for task in tasks {
            assert!(ids.insert(task.await.unwrap()));
        }
        let expected: HashSet<String> = (1..=100).map(|n| n.to_string()).collect();
        assert_eq!(ids, expected);
        // Four blocks of 32, each taken once (the first by a task that found none, the
        // others when half the one before was used): the store's next number is 129.
        assert_eq!(store.allocate("r", 1).await.unwrap(), 129);
    }

    #[tokio::test]
    async fn record_confirmed_queues_while_the_store_fails_then_writes() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        let held = ledger.record_confirmed(row("1", "b1")).await;
        assert_eq!(held.front_id, "1");
        let guid = held.guid.clone().expect("a guid is given");
        assert_eq!(ledger.pending(), 0);

        Flaky::set(&store.down, true);
        let given = ledger.record_confirmed(row("2", "b2")).await;
        assert_eq!(given.front_id, "2");
        assert!(given.guid.is_some());
        assert_eq!(ledger.pending(), 1);
        assert!(!ledger.healthy());
        assert!(ledger.errors() >= 1);
        let err = ledger.check().unwrap_err();
        assert!(err.to_string().contains("test: the store is down"), "{err}");
        assert!(ledger.reserve("r", IdForm::Uuid).await.is_err());
        assert!(ledger.by_front("r", "2").await.is_err());
        // Rows already waiting: the next one joins them without waiting for the store.
        let start = Instant::now();
        ledger.record_confirmed(row("3", "b3")).await;
        assert!(start.elapsed() < Duration::from_millis(90));
        assert_eq!(ledger.pending(), 2);

        Flaky::set(&store.down, false);
        eventually("the queue is written", || ledger.pending() == 0).await;
        assert!(ledger.healthy());
        let written = ledger.by_front("r", "2").await.unwrap().unwrap();
        assert_eq!(
            written.guid, given.guid,
            "the guid answered is the one kept"
        );
        assert!(ledger.by_front("r", "3").await.unwrap().is_some());
        assert_eq!(
            ledger.by_front("r", "1").await.unwrap().unwrap().guid,
            Some(guid)
        );
    }

    #[tokio::test]
    async fn record_confirmed_waits_briefly_for_a_hanging_store() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        Flaky::set(&store.hang, true);
        let start = Instant::now();
        let given = ledger.record_confirmed(row("1", "b1")).await;
        assert!(start.elapsed() < Duration::from_millis(400));
        assert_eq!(given.front_id, "1");
        assert_eq!(ledger.pending(), 1);
        Flaky::set(&store.hang, false);
        eventually("the queue is written", || ledger.pending() == 0).await;
        assert_eq!(store.inner.dump(None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_slow_write_queues_the_row_but_leaves_the_ledger_healthy() {
        let (logs, _guard) = Logs::capture();
        let store = Flaky::new().await;
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        Flaky::set(&store.writes_slow, true);
        let start = Instant::now();
        let given = ledger.record_confirmed(row("1", "b1")).await;
        assert!(start.elapsed() < Duration::from_millis(250));
        assert_eq!(given.front_id, "1");
        assert_eq!(ledger.pending(), 1);
        // Pings still answer, so nothing refuses the next upload.
        assert!(ledger.healthy());
        assert!(ledger.check().is_ok());
        assert_eq!(ledger.errors(), 0);
        assert!(ledger.reserve("r", IdForm::Uuid).await.is_ok());
        // The retry writes it (slowly: within the operation timeout); one row, not two.
        eventually("the queue is written", || ledger.pending() == 0).await;
        assert!(ledger.healthy());
        Flaky::set(&store.writes_slow, false);
        let rows = store.inner.dump(None).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].guid, given.guid);
        let text = logs.text();
        assert!(
            text.contains("the ledger is slow to record a confirmed file"),
            "{text}"
        );
        assert!(!text.contains("the ledger is unavailable"), "{text}");
    }

    #[tokio::test]
    async fn health_follows_the_store_without_a_restart() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        assert!(ledger.healthy());
        assert!(ledger.check().is_ok());
        Flaky::set(&store.down, true);
        eventually("unhealthy", || !ledger.healthy()).await;
        assert!(ledger.check().is_err());
        assert!(ledger.errors() >= 1);
        Flaky::set(&store.down, false);
        eventually("healthy again", || ledger.healthy()).await;
        assert!(ledger.check().is_ok());

        // A hanging store is a failing one too.
        Flaky::set(&store.hang, true);
        eventually("unhealthy when hanging", || !ledger.healthy()).await;
        Flaky::set(&store.hang, false);
        eventually("healthy again", || ledger.healthy()).await;
    }

    #[tokio::test]
    async fn a_moved_ledger_file_turns_health_off_and_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        let ledger = Ledger::with_store_and_timing(store, quick());
        ledger.record(vec![row("1", "b1")]).await.unwrap();
        std::fs::rename(&path, dir.path().join("aside")).unwrap();
        eventually("unhealthy", || !ledger.healthy()).await;
        std::fs::rename(dir.path().join("aside"), &path).unwrap();
        eventually("healthy again", || ledger.healthy()).await;
        assert!(ledger.by_front("r", "1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_retry_queue_is_bounded_and_what_falls_out_is_logged() {
        let (logs, _guard) = Logs::capture();
        let store = Flaky::new().await;
        let timing = LedgerTiming {
            retry_max_rows: 2,
            retry_max_age: Duration::from_millis(150),
            ..quick()
        };
        let ledger = Ledger::with_store_and_timing(store.clone(), timing);
        Flaky::set(&store.down, true);
        for i in 1..=3 {
            ledger
                .record_confirmed(row(&i.to_string(), &format!("b{i}")))
                .await;
        }
        assert_eq!(ledger.pending(), 2, "the third row did not fit");
        assert_eq!(ledger.rows_lost(), 1);
        let text = logs.text();
        assert!(text.contains("casegate::ledger::lost"), "{text}");
        assert!(text.contains(r#""back_id":"b3""#), "{text}");
        assert!(text.contains("retry queue is full"), "{text}");

        eventually("the rows expire", || ledger.pending() == 0).await;
        let text = logs.text();
        let lost: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("casegate::ledger::lost"))
            .collect();
        assert_eq!(lost.len(), 3, "{text}");
        assert_eq!(ledger.rows_lost(), 3);
        assert!(text.contains("the ledger still cannot take"), "{text}");
        Flaky::set(&store.down, false);
        assert!(store.inner.dump(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn rows_still_queued_when_the_ledger_goes_are_logged() {
        let (logs, _guard) = Logs::capture();
        let store = Flaky::new().await;
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        Flaky::set(&store.down, true);
        ledger.record_confirmed(row("1", "b1")).await;
        drop(ledger);
        let text = logs.text();
        assert!(text.contains("casegate stopped before"), "{text}");
        assert!(text.contains(r#""back_id":"b1""#), "{text}");
    }

    #[tokio::test]
    async fn drain_writes_what_waits_or_says_what_is_left() {
        let store = Flaky::new().await;
        let ledger = retrying_each_minute(&store);
        Flaky::set(&store.down, true);
        ledger.record_confirmed(row("1", "b1")).await;
        ledger.record_confirmed(row("2", "b2")).await;
        assert_eq!(ledger.drain(Duration::from_millis(50)).await, 2);
        Flaky::set(&store.down, false);
        assert_eq!(ledger.drain(Duration::from_secs(5)).await, 0);
        assert_eq!(store.inner.dump(None).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn queued_rows_are_seen_and_keep_their_front_id() {
        let store = Flaky::new().await;
        let ledger = retrying_each_minute(&store);
        Flaky::set(&store.writes_down, true);
        ledger.record_confirmed(row("7", "b")).await;
        assert_eq!(ledger.pending(), 1);
        let seen = ledger.by_front("r", "7").await.unwrap().unwrap();
        assert_eq!(seen.back_id, "b");
        let seen = ledger
            .by_back("r", vec!["b".into(), "x".into()])
            .await
            .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].front_id, "7");

        // A list that meets the same upstream file records it under a new front id; the
        // confirmed upload's row is written first and wins.
        Flaky::set(&store.writes_down, false);
        let held = ledger.record(vec![row("8", "b")]).await.unwrap();
        assert_eq!(held[0].front_id, "7");
        assert_eq!(ledger.pending(), 0);
    }

    #[tokio::test]
    async fn a_store_that_answers_reads_but_fails_writes_stays_unhealthy_until_a_write_goes_through(
    ) {
        // A full disk, or a read-only database: pings and reads answer, writes fail.
        let (logs, _guard) = Logs::capture();
        let store = Flaky::new().await;
        // What writes the row below within the test is the probe.
        let ledger = retrying_each_minute(&store);
        Flaky::set(&store.writes_down, true);
        ledger.record_confirmed(row("1", "b1")).await;
        assert_eq!(ledger.pending(), 1);
        assert!(!ledger.healthy());
        // Ten probe periods, reads among them: never healthy, uploads still refused.
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            assert!(
                ledger.by_front("r", "1").await.unwrap().is_some(),
                "the waiting row is seen"
            );
            assert!(
                !ledger.healthy(),
                "a read or a ping made the ledger healthy"
            );
            assert!(ledger.reserve("r", IdForm::Uuid).await.is_err());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ledger.pending(), 1);

        // Writes go through again: the next probe writes the row and says so, once.
        Flaky::set(&store.writes_down, false);
        let start = Instant::now();
        eventually("the row is written", || ledger.pending() == 0).await;
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        eventually("healthy again", || ledger.healthy()).await;
        assert!(ledger.reserve("r", IdForm::Uuid).await.is_ok());
        assert_eq!(store.inner.dump(None).await.unwrap().len(), 1);
        let text = logs.text();
        let said = |line: &str| text.matches(&format!("casegate::ledger: {line}")).count();
        assert_eq!(said("the ledger is unavailable"), 1, "{text}");
        assert_eq!(said("the ledger answers again"), 1, "{text}");
    }

    #[tokio::test]
    async fn a_failed_write_with_no_row_waiting_is_tried_again_by_the_probe() {
        let store = Flaky::new().await;
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        Flaky::set(&store.writes_down, true);
        // A route's first integer id takes a block: a write, which fails; no row waits.
        assert!(ledger.reserve("r", IdForm::Integer).await.is_err());
        assert_eq!(ledger.pending(), 0);
        assert!(!ledger.healthy());
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            assert_eq!(ledger.by_front("r", "1").await.unwrap(), None);
            assert!(
                !ledger.healthy(),
                "a read or a ping made the ledger healthy"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Writes go through again: the probe's own write says so.
        Flaky::set(&store.writes_down, false);
        let start = Instant::now();
        eventually("healthy again", || ledger.healthy()).await;
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(ledger.reserve("r", IdForm::Integer).await.unwrap(), "1");
    }

    #[test]
    fn a_ledger_made_outside_a_runtime_starts_its_tasks_later() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime.block_on(Flaky::new());
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        runtime.block_on(async {
            assert_eq!(ledger.reserve("r", IdForm::Integer).await.unwrap(), "1");
            Flaky::set(&store.down, true);
            eventually("the probe runs", || !ledger.healthy()).await;
        });
    }
}
