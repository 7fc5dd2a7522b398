//! The ledger: casegate's id and record store (SPEC section 7.3).
//!
//! Where an upstream's id does not fit the client's dialect form, casegate gives the file a
//! front id of that form (a per-route integer or a UUID) and remembers the pair here,
//! with the file's metadata some upstreams never return (name, type, size, created at,
//! uploader, hashes). Storage sits behind the small object-safe [`Store`] trait: an
//! embedded SQLite file now ([`sqlite`]), PostgreSQL shared by replicas later, both
//! running the same plain-SQL migrations (`migrations/`).

mod render;
pub mod sqlite;
mod url;

use futures_util::future::BoxFuture;

pub use render::{render_json, render_table};
pub use url::LedgerUrl;

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

/// The storage behind the ledger: SQLite now, PostgreSQL later. Object-safe, with boxed
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

    /// Keeps a file's hashes once computed (no error when the row is gone).
    fn set_hashes(
        &self,
        route: &str,
        front_id: &str,
        md5: &str,
        sha256: &str,
    ) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// Deletes a row; true when there was one.
    fn remove(&self, route: &str, front_id: &str) -> BoxFuture<'_, Result<bool, LedgerError>>;

    /// A cheap round trip (SELECT 1, or a read as cheap that also proves the database is
    /// the right one and readable).
    fn ping(&self) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// Every row (of one route when given), ordered by route then insertion.
    fn dump(&self, route: Option<&str>) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>>;
}

/// One schema migration: a plain SQL file every store runs unchanged, in version order,
/// once per database, recorded in the `casegate_schema` table.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Add a file and a line here; never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_init.sql",
    sql: include_str!("migrations/0001_init.sql"),
}];

/// The table that records which migrations a database has had.
pub(crate) const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS casegate_schema (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";
