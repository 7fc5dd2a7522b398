//! The PostgreSQL ledger, shared by replicas (SPEC 7.3): the same schema, migrations and
//! behaviour as the SQLite one, over tokio-postgres.
//!
//! **URL.** `postgres://user:password@host:port/db?sslmode=...&sslrootcert=/path/ca.pem`
//! (or `postgresql://`). The password comes from the environment through `${VAR}` in
//! routes.toml, so it must be URL-safe or percent-encoded; it is never logged
//! ([`LedgerUrl::describe`](super::LedgerUrl::describe) hides it). casegate reads
//! `sslmode`, `sslrootcert` and `pool_size` itself and hands the parameters
//! tokio-postgres knows (`connect_timeout`, `application_name`, `options`, `hostaddr`,
//! keepalives, ...) on to it; any other parameter is dropped with a warning, and
//! client certificates (`sslcert`, `sslkey`) are refused.
//!
//! **TLS** (rustls with ring; trusted roots are the webpki roots plus `sslrootcert`'s
//! certificates, or the webpki roots alone for `sslrootcert=system`):
//! - `disable`: plain TCP.
//! - `prefer` (the default, as in libpq): TLS when the server offers it, plain when it
//!   does not; the certificate is not checked, so this guards against eavesdropping only.
//! - `require` and `verify-ca`: TLS or no connection; the certificate must chain to a
//!   trusted root, its host name is not compared. Note that libpq's `require` checks
//!   nothing unless a root certificate file is present: casegate's always checks the
//!   chain, so a server with a private CA needs `sslrootcert`.
//! - `verify-full`: the chain and the host name (or IP address) are checked.
//!
//! Channel binding (SCRAM-SHA-256-PLUS) is not offered: SCRAM-SHA-256 runs without it.
//!
//! **Pool.** At most `pool_size` connections (8 by default) per casegate process, opened
//! on demand and kept while they are healthy; every statement is prepared once per
//! connection. Each operation waits at most 5 s for a free connection, opening one takes
//! at most the connect timeout (`connect_timeout`, 5 s by default), and the operation's
//! statements then have 5 s. A connection that timed out has its query cancelled and is
//! closed; one the server closed is dropped when next taken. A server at its connection
//! limit (SQLSTATE 53300) refusing a new connection while the pool has others open is
//! waited out: the operation takes the next one given back (within those 5 s).
//!
//! **Failure.** Every failure is [`LedgerError::Unavailable`] with PostgreSQL's reason.
//! While the database is down, operations fail as fast as connections are refused (or
//! within the timeouts above when packets are lost), [`Ledger`](super::Ledger)'s probe
//! turns health off, and confirmed rows wait in its retry queue; when the database is
//! back, new connections are opened and everything works again, with no restart of
//! casegate. The database must answer when the store is opened: casegate does not start
//! without its ledger.
//!
//! **Migrations.** [`MIGRATIONS`] run at open in one transaction that first takes
//! `pg_advisory_xact_lock`: replicas starting together take turns, and those after the
//! first find the schema current and change nothing. A replica waits at most 60 s for
//! the lock. A database whose schema is newer than this casegate knows is refused.
//!
//! **Concurrency.** Integer ids come from one upsert on the route's row of `sequences`
//! (`... ON CONFLICT DO UPDATE ... RETURNING`), atomic whatever the number of replicas.
//! A record is `INSERT ... ON CONFLICT DO NOTHING RETURNING`, then, when the upstream
//! file is already held, an `UPDATE` that fills the held row's NULL fields and returns
//! it: when replicas race on the same file, one insert wins and the others read the
//! winner's front id. Rows are written in (route, back id) order so two records of
//! overlapping rows lock them in the same order; a deadlock PostgreSQL reports anyway is
//! retried. The insertion-order numbers come from the `counters` row, taken in a
//! statement of their own so its lock is held for that statement only. Records from
//! concurrent requests are written together, one transaction per batch (see [`batch`]):
//! under load the counter update, the commit and the round trips are shared.

mod batch;
mod pool;
mod settings;
mod tls;

use std::sync::Arc;

use futures_util::future::{try_join_all, BoxFuture};
use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use self::pool::{describe, Conn, DbError, Pool};
use self::settings::Settings;
use self::tls::MakeTls;
use super::{CaseIds, LedgerError, Row, Store, MIGRATIONS, SCHEMA_TABLE};
use crate::secret::Secret;

/// The advisory lock migrations hold ("casegate" in ASCII).
const MIGRATION_LOCK: i64 = 0x6361_7365_6761_7465;
/// How long a replica waits for another's migration (and for its own).
const MIGRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The most ids one [`Store::allocate`] call may take.
const MAX_ALLOCATE: u64 = 1 << 20;
/// How many times a record is tried when PostgreSQL picks it as a deadlock's victim.
const RECORD_TRIES: u32 = 3;

/// The columns of a [`Row`], in [`read_row`]'s order.
macro_rules! columns {
    () => {
        "route, front_id, front_case, back_case, back_id, back_comment_id, name, \
         content_type, size, created_at, uploader, guid, md5, sha256"
    };
}

const ALLOCATE: &str = "INSERT INTO sequences (route, next_id) VALUES ($1, 1 + $2::BIGINT) \
     ON CONFLICT (route) DO UPDATE SET next_id = sequences.next_id + $2::BIGINT \
     RETURNING next_id";
const NEXT_SEQ: &str = "INSERT INTO counters (name, value) VALUES ('files.seq', $1::BIGINT) \
     ON CONFLICT (name) DO UPDATE SET value = counters.value + $1::BIGINT \
     RETURNING value";
const INSERT: &str = concat!(
    "INSERT INTO files (route, front_id, seq, front_case, back_case, back_id, \
     back_comment_id, name, content_type, size, created_at, uploader, guid, md5, sha256) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT DO NOTHING RETURNING ",
    columns!()
);
/// [`INSERT`] for many rows in one statement, one array per column.
const INSERT_MANY: &str = concat!(
    "INSERT INTO files (route, front_id, seq, front_case, back_case, back_id, \
     back_comment_id, name, content_type, size, created_at, uploader, guid, md5, sha256) \
     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], \
     $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::BIGINT[], $11::TEXT[], \
     $12::TEXT[], $13::TEXT[], $14::TEXT[], $15::TEXT[]) \
     ON CONFLICT DO NOTHING RETURNING ",
    columns!()
);
const FILL_NULLS: &str = concat!(
    "UPDATE files SET front_case = COALESCE(front_case, $3), \
     back_case = COALESCE(back_case, $4), back_comment_id = COALESCE(back_comment_id, $5), \
     name = COALESCE(name, $6), content_type = COALESCE(content_type, $7), \
     size = COALESCE(size, $8), created_at = COALESCE(created_at, $9), \
     uploader = COALESCE(uploader, $10), guid = COALESCE(guid, $11), \
     md5 = COALESCE(md5, $12), sha256 = COALESCE(sha256, $13) \
     WHERE route = $1 AND (front_id = $2 AND back_id = $2 \
     OR back_id = $2 AND back_id <> front_id) RETURNING ",
    columns!()
);
const HOLDER: &str = "SELECT back_id FROM files WHERE route = $1 AND front_id = $2";
const BY_FRONT: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM files WHERE route = $1 AND front_id = $2"
);
const BY_FRONTS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM files WHERE route = $1 AND front_id = ANY($2)"
);
// A file whose front id is its back id is found by the primary key, the others by
// `files_by_back`, which holds only them (migration 4).
const BY_BACK: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM files WHERE route = $1 AND (front_id = ANY($2) AND back_id = front_id \
     OR back_id = ANY($2) AND back_id <> front_id) ORDER BY seq"
);
const CASE_PAGE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM files WHERE route = $1 AND front_case = $2 ORDER BY seq LIMIT $3 OFFSET $4"
);
const CASE_TOTAL: &str = "SELECT COUNT(*) FROM files WHERE route = $1 AND front_case = $2";
const CASE_IDS: &str = "SELECT seq, front_id FROM files WHERE route = $1 AND front_case = $2 \
     AND seq > $3 ORDER BY seq LIMIT $4";
const READ_CHANGES: &str = "SELECT value FROM counters WHERE name = 'files.changes'";
const SET_HASHES: &str =
    "UPDATE files SET md5 = $3, sha256 = $4 WHERE route = $1 AND front_id = $2";
// The deletion and the bump of 'files.changes' (see migration 3) in one statement.
// A row named by its front id, else (with a case) by its comment id among the case's
// rows: `files_by_case` finds them, where `back_comment_id` alone would scan the route.
const REMOVE: &str = "WITH gone AS (DELETE FROM files WHERE route = $1 AND front_id = $2 \
     OR route = $1 AND front_case = $3 AND back_comment_id = $2 \
     AND NOT EXISTS (SELECT 1 FROM files WHERE route = $1 AND front_id = $2) RETURNING 1), \
     bumped AS (UPDATE counters SET value = value + 1 WHERE name = 'files.changes' \
     AND EXISTS (SELECT 1 FROM gone)) \
     SELECT COUNT(*) FROM gone";
const PING: &str = "SELECT COUNT(*) FROM casegate_schema";
// Routes in byte order, as SQLite sorts them, whatever the database's collation.
const DUMP_ALL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM files ORDER BY route COLLATE \"C\", seq"
);
const DUMP_ROUTE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM files WHERE route = $1 ORDER BY seq"
);

/// The PostgreSQL [`Store`]: a bounded pool of connections to one database.
pub struct PostgresStore {
    pool: Arc<Pool>,
    /// Records go through it, a batch per transaction.
    batcher: batch::Batcher,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL, see the module doc) and
    /// migrates it. Err: what went wrong, never the password.
    pub async fn open(url: &Secret) -> Result<PostgresStore, String> {
        PostgresStore::open_with(Settings::parse(url.expose())?).await
    }

    async fn open_with(settings: Settings) -> Result<PostgresStore, String> {
        for parameter in &settings.ignored {
            tracing::warn!(
                %parameter,
                "the ledger URL's parameter is not used by casegate; it is ignored"
            );
        }
        let tls = MakeTls::new(&settings)?;
        let pool = Pool::new(
            settings.pg,
            tls,
            settings.pool_size,
            settings.connect_timeout,
            settings.query_timeout,
        );
        let mut conn = pool.connect().await.map_err(|e| match e.error {
            LedgerError::Unavailable(reason) => reason,
        })?;
        match tokio::time::timeout(MIGRATION_TIMEOUT, migrate(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(reason),
            Err(_) => {
                return Err(format!(
                    "the schema migration did not finish within {} (another casegate \
                     holding the migration lock?)",
                    humantime::format_duration(MIGRATION_TIMEOUT)
                ))
            }
        }
        pool.give_back(conn);
        let pool = Arc::new(pool);
        let batcher = batch::Batcher::start(pool.clone());
        Ok(PostgresStore { pool, batcher })
    }

    /// Runs `op` on a pooled connection (see [`Pool::run`]).
    fn call<'a, T, F>(&'a self, op: F) -> BoxFuture<'a, Result<T, LedgerError>>
    where
        T: Send + 'a,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, DbError>> + Send + 'a,
    {
        Box::pin(self.pool.run(op))
    }
}

impl Store for PostgresStore {
    fn allocate(&self, route: &str, n: u64) -> BoxFuture<'_, Result<u64, LedgerError>> {
        let route = route.to_string();
        self.call(move |conn| Box::pin(allocate(conn, route, n)))
    }

    fn record(&self, rows: Vec<Row>) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>> {
        Box::pin(self.batcher.record(rows))
    }

    fn by_front(
        &self,
        route: &str,
        front_id: &str,
    ) -> BoxFuture<'_, Result<Option<Row>, LedgerError>> {
        if front_id.contains('\0') {
            // PostgreSQL's text cannot hold a NUL, so no row has this id (and asking would
            // be refused as an encoding error).
            return Box::pin(std::future::ready(Ok(None)));
        }
        let (route, front_id) = (route.to_string(), front_id.to_string());
        Box::pin(self.batcher.by_front(route, front_id))
    }

    fn by_back(
        &self,
        route: &str,
        back_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>> {
        let route = route.to_string();
        self.call(move |conn| {
            Box::pin(async move {
                let statement = conn.prepare(BY_BACK).await?;
                let rows = conn.client.query(&statement, &[&route, &back_ids]).await?;
                read_rows(&rows)
            })
        })
    }

    fn list_case(
        &self,
        route: &str,
        front_case: &str,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'_, Result<(Vec<Row>, u64), LedgerError>> {
        let (route, front_case) = (route.to_string(), front_case.to_string());
        self.call(move |conn| {
            Box::pin(async move {
                let total = conn.prepare(CASE_TOTAL).await?;
                let page = conn.prepare(CASE_PAGE).await?;
                let (limit, offset) = (clamp(limit), clamp(offset));
                // Both statements go out at once on the connection.
                let (total, rows) = futures_util::future::try_join(
                    conn.client.query_one(&total, &[&route, &front_case]),
                    conn.client
                        .query(&page, &[&route, &front_case, &limit, &offset]),
                )
                .await?;
                let total: i64 = total.try_get(0)?;
                Ok((read_rows(&rows)?, u64::try_from(total).unwrap_or(0)))
            })
        })
    }

    fn case_ids(
        &self,
        route: &str,
        front_case: &str,
        after: i64,
        limit: u64,
    ) -> BoxFuture<'_, Result<CaseIds, LedgerError>> {
        let (route, front_case) = (route.to_string(), front_case.to_string());
        self.call(move |conn| {
            Box::pin(async move {
                // First (see the trait): a deletion after this read is a change next time.
                let read_changes = conn.prepare(READ_CHANGES).await?;
                let changes = match conn.client.query_opt(&read_changes, &[]).await? {
                    Some(row) => row.try_get(0)?,
                    None => 0,
                };
                let ids = conn.prepare(CASE_IDS).await?;
                let found = conn
                    .client
                    .query(&ids, &[&route, &front_case, &after, &clamp(limit)])
                    .await?;
                let mut rows = Vec::with_capacity(found.len());
                for row in &found {
                    rows.push((row.try_get(0)?, row.try_get(1)?));
                }
                Ok(CaseIds { changes, rows })
            })
        })
    }

    fn set_hashes(
        &self,
        route: &str,
        front_id: &str,
        md5: &str,
        sha256: &str,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        let args = [route, front_id, md5, sha256].map(str::to_string);
        self.call(move |conn| {
            Box::pin(async move {
                let statement = conn.prepare(SET_HASHES).await?;
                conn.client
                    .execute(&statement, &[&args[0], &args[1], &args[2], &args[3]])
                    .await?;
                Ok(())
            })
        })
    }

    fn remove(
        &self,
        route: &str,
        front_id: &str,
        front_case: Option<&str>,
    ) -> BoxFuture<'_, Result<bool, LedgerError>> {
        let (route, front_id) = (route.to_string(), front_id.to_string());
        let front_case = front_case.map(str::to_string);
        self.call(move |conn| {
            Box::pin(async move {
                let statement = conn.prepare(REMOVE).await?;
                let n: i64 = conn
                    .client
                    .query_one(&statement, &[&route, &front_id, &front_case])
                    .await?
                    .try_get(0)?;
                Ok(n > 0)
            })
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        // Reads a table of the ledger (not just `SELECT 1`): the right database, migrated.
        self.call(|conn| {
            Box::pin(async move {
                let statement = conn.prepare(PING).await?;
                conn.client.query_one(&statement, &[]).await?;
                Ok(())
            })
        })
    }

    fn write_probe(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        self.call(|conn| {
            Box::pin(async move {
                let statement = conn.prepare(super::WRITE_PROBE).await?;
                conn.client.execute(&statement, &[]).await?;
                Ok(())
            })
        })
    }

    fn dump(&self, route: Option<&str>) -> BoxFuture<'_, Result<Vec<Row>, LedgerError>> {
        let route = route.map(str::to_string);
        self.call(move |conn| {
            Box::pin(async move {
                let rows = match route {
                    Some(route) => {
                        let statement = conn.prepare(DUMP_ROUTE).await?;
                        conn.client.query(&statement, &[&route]).await?
                    }
                    None => {
                        let statement = conn.prepare(DUMP_ALL).await?;
                        conn.client.query(&statement, &[]).await?
                    }
                };
                read_rows(&rows)
            })
        })
    }
}

async fn allocate(conn: &mut Conn, route: String, n: u64) -> Result<u64, DbError> {
    let n = n.max(1);
    if n > MAX_ALLOCATE {
        return Err(DbError::Refused(format!(
            "{n} ids asked at once (at most {MAX_ALLOCATE})"
        )));
    }
    let n = clamp(n);
    let statement = conn.prepare(ALLOCATE).await?;
    let next: i64 = conn
        .client
        .query_one(&statement, &[&route, &n])
        .await?
        .try_get(0)?;
    next.checked_sub(n)
        .and_then(|first| u64::try_from(first).ok())
        .filter(|first| *first >= 1)
        .ok_or_else(|| DbError::Refused(format!("route {route}'s sequence is damaged ({next})")))
}

/// The statements of a record, prepared before its transaction starts.
struct RecordStatements {
    insert: tokio_postgres::Statement,
    insert_many: tokio_postgres::Statement,
    fill: tokio_postgres::Statement,
    holder: tokio_postgres::Statement,
}

async fn record(conn: &mut Conn, rows: Vec<Row>) -> Result<Vec<Row>, DbError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let next_seq = conn.prepare(NEXT_SEQ).await?;
    let statements = RecordStatements {
        insert: conn.prepare(INSERT).await?,
        insert_many: conn.prepare(INSERT_MANY).await?,
        fill: conn.prepare(FILL_NULLS).await?,
        holder: conn.prepare(HOLDER).await?,
    };
    // Insertion-order numbers, taken in a statement of their own: the counter's row is
    // locked only while this one commits, not for the whole record. A failed record
    // leaves a gap, which orders nothing wrongly.
    let last: i64 = conn.client.query_one(&next_seq, &[&n]).await?.try_get(0)?;
    let first = last
        .checked_sub(n)
        .ok_or_else(|| DbError::Refused(format!("the files.seq counter is damaged ({last})")))?;
    // Guids are given once, so a retried transaction gives the same.
    let guids: Vec<String> = rows
        .iter()
        .map(|r| {
            r.guid
                .clone()
                .unwrap_or_else(|| super::uuid_string(uuid::Uuid::new_v4()))
        })
        .collect();
    // Rows are locked in (route, back id) order whatever the input order; among equal
    // keys the first in the input goes first, and wins.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        (&rows[a].route, &rows[a].back_id).cmp(&(&rows[b].route, &rows[b].back_id))
    });
    let mut tries = 0;
    loop {
        tries += 1;
        let tx = conn.client.transaction().await?;
        match write_rows(&tx, &statements, &rows, &guids, &order, first).await {
            Ok(held) => {
                tx.commit().await?;
                return Ok(held);
            }
            Err(DbError::Pg(e)) if tries < RECORD_TRIES && is_conflict(&e) => {
                drop(tx);
                tracing::debug!(error = %describe(&e), "a ledger record is tried again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Inserts the `pending` rows (in that order) with one statement; fills `held` for those
/// inserted and gives the others (their back id or front id is held already), in order.
#[allow(clippy::too_many_arguments)]
async fn insert_many(
    tx: &Transaction<'_>,
    statement: &tokio_postgres::Statement,
    rows: &[Row],
    guids: &[String],
    seqs: &[i64],
    sizes: &[Option<i64>],
    pending: &[usize],
    held: &mut [Option<Row>],
) -> Result<Vec<usize>, DbError> {
    let text =
        |f: fn(&Row) -> &str| -> Vec<&str> { pending.iter().map(|&i| f(&rows[i])).collect() };
    let opt = |f: fn(&Row) -> Option<&str>| -> Vec<Option<&str>> {
        pending.iter().map(|&i| f(&rows[i])).collect()
    };
    let route = text(|r| &r.route);
    let front_id = text(|r| &r.front_id);
    let seq: Vec<i64> = pending.iter().map(|&i| seqs[i]).collect();
    let front_case = opt(|r| r.front_case.as_deref());
    let back_case = opt(|r| r.back_case.as_deref());
    let back_id = text(|r| &r.back_id);
    let back_comment_id = opt(|r| r.back_comment_id.as_deref());
    let name = opt(|r| r.name.as_deref());
    let content_type = opt(|r| r.content_type.as_deref());
    let size: Vec<Option<i64>> = pending.iter().map(|&i| sizes[i]).collect();
    let created_at = opt(|r| r.created_at.as_deref());
    let uploader = opt(|r| r.uploader.as_deref());
    let guid: Vec<&str> = pending.iter().map(|&i| guids[i].as_str()).collect();
    let md5 = opt(|r| r.md5.as_deref());
    let sha256 = opt(|r| r.sha256.as_deref());
    let inserted = tx
        .query(
            statement,
            &[
                &route,
                &front_id,
                &seq,
                &front_case,
                &back_case,
                &back_id,
                &back_comment_id,
                &name,
                &content_type,
                &size,
                &created_at,
                &uploader,
                &guid,
                &md5,
                &sha256,
            ],
        )
        .await?;
    // Each row inserted is one of the pending rows: the first still unmatched with its
    // (route, front id, back id).
    let mut matched = vec![false; pending.len()];
    for answer in &inserted {
        let row = read_row(answer)?;
        let at = pending.iter().enumerate().position(|(k, &i)| {
            !matched[k]
                && rows[i].route == row.route
                && rows[i].front_id == row.front_id
                && rows[i].back_id == row.back_id
        });
        if let Some(k) = at {
            matched[k] = true;
            held[pending[k]] = Some(row);
        }
    }
    Ok(pending
        .iter()
        .zip(matched)
        .filter(|(_, m)| !m)
        .map(|(&i, _)| i)
        .collect())
}

/// A deadlock or serialization failure: the transaction may simply be run again.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Writes `rows` inside `tx`, in `order`; returns them as held, in input order.
///
/// Step 1 inserts every row with one statement (`UNNEST` of one array per column, rows in
/// `order`; a lone row with the plain `INSERT`); the later steps are pipelined, every
/// row's statement sent at once and the answers read together, so a record of hundreds
/// of rows costs a few round trips, not hundreds. Step 2 fills the NULL fields of
/// the rows already held by back id; step 3 looks for the holder of a front id that
/// conflicted. A row found in none (deleted meanwhile) goes round again.
async fn write_rows(
    tx: &Transaction<'_>,
    statements: &RecordStatements,
    rows: &[Row],
    guids: &[String],
    order: &[usize],
    first: i64,
) -> Result<Vec<Row>, DbError> {
    type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
    // A size beyond BIGINT cannot be real; it is kept as unknown.
    let sizes: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.size.and_then(|s| i64::try_from(s).ok()))
        .collect();
    let seqs: Vec<i64> = (0..rows.len())
        .map(|i| first.saturating_add(i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1)))
        .collect();
    let insert_params = |i: usize| -> [Param<'_>; 15] {
        let r = &rows[i];
        [
            &r.route,
            &r.front_id,
            &seqs[i],
            &r.front_case,
            &r.back_case,
            &r.back_id,
            &r.back_comment_id,
            &r.name,
            &r.content_type,
            &sizes[i],
            &r.created_at,
            &r.uploader,
            &guids[i],
            &r.md5,
            &r.sha256,
        ]
    };
    let fill_params = |i: usize| -> [Param<'_>; 13] {
        let r = &rows[i];
        [
            &r.route,
            &r.back_id,
            &r.front_case,
            &r.back_case,
            &r.back_comment_id,
            &r.name,
            &r.content_type,
            &sizes[i],
            &r.created_at,
            &r.uploader,
            &guids[i],
            &r.md5,
            &r.sha256,
        ]
    };
    let mut held: Vec<Option<Row>> = vec![None; rows.len()];
    // The rows neither inserted nor held yet; each step below keeps only those it could
    // not settle, so what is left after the last try is what was not recorded.
    let mut pending: Vec<usize> = order.to_vec();
    for _ in 0..3 {
        pending = if pending.len() == 1 {
            let params = insert_params(pending[0]);
            match tx.query_opt(&statements.insert, &params).await? {
                Some(answer) => {
                    held[pending[0]] = Some(read_row(&answer)?);
                    Vec::new()
                }
                None => pending,
            }
        } else {
            insert_many(
                tx,
                &statements.insert_many,
                rows,
                guids,
                &seqs,
                &sizes,
                &pending,
                &mut held,
            )
            .await?
        };
        if pending.is_empty() {
            break;
        }
        let params: Vec<[Param<'_>; 13]> = pending.iter().map(|&i| fill_params(i)).collect();
        let filled = try_join_all(params.iter().map(|p| tx.query_opt(&statements.fill, p))).await?;
        let mut not_filled = Vec::new();
        for (&i, answer) in pending.iter().zip(filled) {
            match answer {
                Some(answer) => held[i] = Some(read_row(&answer)?),
                None => not_filled.push(i),
            }
        }
        pending = not_filled;
        if pending.is_empty() {
            break;
        }
        // Not held by back id, so the conflict was the front id: another upstream file
        // holds it (a route whose id mapping changed?). The first holder keeps it.
        let params: Vec<[Param<'_>; 2]> = pending
            .iter()
            .map(|&i| -> [Param<'_>; 2] { [&rows[i].route, &rows[i].front_id] })
            .collect();
        let holders =
            try_join_all(params.iter().map(|p| tx.query_opt(&statements.holder, p))).await?;
        let mut unheld = Vec::new();
        for (&i, holder) in pending.iter().zip(holders) {
            let row = &rows[i];
            match holder {
                Some(holder) => {
                    let held_by: String = holder.try_get(0)?;
                    tracing::warn!(
                        route = %row.route,
                        front_id = %row.front_id,
                        back_id = %row.back_id,
                        %held_by,
                        "not recorded: the front id already names another upstream file"
                    );
                    held[i] = Some(row.clone());
                }
                None => unheld.push(i),
            }
        }
        // Held by neither id: the row it met was deleted between the statements; again.
        pending = unheld;
        if pending.is_empty() {
            break;
        }
    }
    for &i in &pending {
        let row = &rows[i];
        tracing::warn!(
            route = %row.route,
            front_id = %row.front_id,
            back_id = %row.back_id,
            "not recorded: the row it met was deleted again and again"
        );
    }
    Ok(held
        .into_iter()
        .zip(rows)
        .map(|(held, given)| held.unwrap_or_else(|| given.clone()))
        .collect())
}

/// Applies the migrations this database has not had, in order, in one transaction
/// holding the migration lock.
async fn migrate(conn: &mut Conn) -> Result<(), String> {
    let sql = |what: &str, e: tokio_postgres::Error| format!("{what}: {}", describe(&e));
    let tx = conn
        .client
        .transaction()
        .await
        .map_err(|e| sql("cannot start the schema migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| sql("cannot take the migration lock", e))?;
    tx.batch_execute(SCHEMA_TABLE)
        .await
        .map_err(|e| sql("cannot create casegate_schema", e))?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM casegate_schema", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| sql("cannot read the schema version", e))?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > newest {
        return Err(format!(
            "its schema is version {current}, newer than this casegate knows ({newest})"
        ));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| sql(&format!("migration {} failed", migration.name), e))?;
        tx.execute(
            "INSERT INTO casegate_schema (version, name, applied_at) \
             VALUES ($1, $2, CAST(CURRENT_TIMESTAMP AS TEXT))",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(|e| sql(&format!("cannot record migration {}", migration.name), e))?;
        tracing::info!(
            migration = migration.name,
            "the ledger's schema was migrated"
        );
    }
    tx.commit()
        .await
        .map_err(|e| sql("cannot commit the schema migration", e))
}

fn read_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<Row>, DbError> {
    Ok(rows
        .iter()
        .map(read_row)
        .collect::<Result<Vec<Row>, tokio_postgres::Error>>()?)
}

fn read_row(r: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    Ok(Row {
        route: r.try_get(0)?,
        front_id: r.try_get(1)?,
        front_case: r.try_get(2)?,
        back_case: r.try_get(3)?,
        back_id: r.try_get(4)?,
        back_comment_id: r.try_get(5)?,
        name: r.try_get(6)?,
        content_type: r.try_get(7)?,
        size: r
            .try_get::<_, Option<i64>>(8)?
            .and_then(|s| u64::try_from(s).ok()),
        created_at: r.try_get(9)?,
        uploader: r.try_get(10)?,
        guid: r.try_get(11)?,
        md5: r.try_get(12)?,
        sha256: r.try_get(13)?,
    })
}

/// A count or offset as a BIGINT (values past `i64::MAX` mean "all").
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ledger::pg_test::{or_skip, PgOptions, PgServer, PgTls};
    use crate::ledger::{IdForm, Ledger, LedgerTiming, LedgerUrl};

    fn row(front_id: &str, back_id: &str) -> Row {
        Row {
            route: "r".into(),
            front_id: front_id.into(),
            back_id: back_id.into(),
            ..Row::default()
        }
    }

    async fn open(url: &str) -> Result<PostgresStore, String> {
        PostgresStore::open(&Secret::new(url)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_transactions_and_a_refused_one_fails_alone() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let store = Arc::new(open(&pg.url(&db)).await.unwrap());
        let spawn = |range: std::ops::Range<usize>, bad: Option<usize>| {
            range
                .map(|i| {
                    let store = store.clone();
                    let mut r = row(&i.to_string(), &format!("b{i}"));
                    if Some(i) == bad {
                        // PostgreSQL refuses a NUL in text.
                        r.name = Some("bad\0name".into());
                    }
                    (i, tokio::spawn(async move { store.record(vec![r]).await }))
                })
                .collect::<Vec<_>>()
        };
        for (i, task) in spawn(0..48, None) {
            let held = task.await.unwrap().unwrap();
            assert_eq!(held[0].front_id, i.to_string());
        }
        // One transaction per record would leave 48 inserting transactions (`xmin`).
        let transactions: u64 = pg
            .psql(&db, "SELECT count(DISTINCT xmin::text) FROM files")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            transactions < 24,
            "48 records written in {transactions} transactions"
        );
        // A record PostgreSQL refuses fails alone, whatever batch it was in.
        let mut refused = Vec::new();
        for (i, task) in spawn(48..64, Some(57)) {
            match task.await.unwrap() {
                Ok(held) => assert_eq!(held[0].front_id, i.to_string()),
                Err(e) => refused.push((i, e.to_string())),
            }
        }
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, 57, "{refused:?}");
        for i in [0, 47, 48, 56, 58, 63] {
            let held = store.by_front("r", &i.to_string()).await.unwrap().unwrap();
            assert_eq!(held.back_id, format!("b{i}"));
        }
        assert!(store.by_front("r", "57").await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_each_get_their_own_row() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let store = Arc::new(open(&pg.url(&db)).await.unwrap());
        let mut rows = Vec::new();
        for i in 0..20 {
            rows.push(row(&i.to_string(), &format!("r{i}")));
            let mut other = row(&i.to_string(), &format!("s{i}"));
            other.route = "s".into();
            rows.push(other);
        }
        store.record(rows).await.unwrap();
        // Ids of both routes, ids no route holds, and one PostgreSQL cannot take as text.
        let asked: Vec<(&str, String)> = (0..25)
            .flat_map(|i| [("r", i.to_string()), ("s", i.to_string())])
            .chain([("r", "1\0".to_string()), ("t", "3".to_string())])
            .collect();
        let tasks: Vec<_> = asked
            .iter()
            .cloned()
            .map(|(route, id)| {
                let store = store.clone();
                tokio::spawn(async move { store.by_front(route, &id).await })
            })
            .collect();
        for ((route, id), task) in asked.iter().zip(tasks) {
            let found = task.await.unwrap().unwrap();
            let n: Option<u32> = id.parse().ok().filter(|n| *n < 20 && *route != "t");
            match n {
                Some(n) => {
                    let found = found.unwrap_or_else(|| panic!("{route} {id} not found"));
                    assert_eq!(found.route, *route);
                    assert_eq!(found.front_id, *id);
                    assert_eq!(found.back_id, format!("{route}{n}"));
                }
                None => assert!(found.is_none(), "{route} {id:?}: {found:?}"),
            }
        }
    }

    /// Whether the store's connections use TLS (as the server sees it).
    async fn ssl_in_use(store: &PostgresStore) -> bool {
        store
            .pool
            .run(|conn| {
                Box::pin(async move {
                    let row = conn
                        .client
                        .query_one(
                            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                            &[],
                        )
                        .await?;
                    Ok(row.try_get::<_, bool>(0)?)
                })
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_password_comes_from_the_environment_and_is_never_shown() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let written = format!(
            "postgres://casegate:${{PGPASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable",
            pg.port()
        );
        let password = pg.password().to_string();
        let env = move |name: &str| (name == "PGPASSWORD").then(|| password.clone());
        let expanded = crate::config::expand(&written, &env).unwrap();
        let url = LedgerUrl::parse(&expanded, Path::new("/")).unwrap();
        assert!(
            !url.describe().contains(pg.password()),
            "{}",
            url.describe()
        );
        let ledger = Ledger::open(&url).await.unwrap();
        ledger.record(vec![row("1", "b1")]).await.unwrap();
        assert_eq!(ledger.dump(None).await.unwrap().len(), 1);

        let wrong = format!(
            "postgres://casegate:not-{}@127.0.0.1:{}/{db}",
            pg.password(),
            pg.port()
        );
        let err = open(&wrong).await.err().unwrap();
        assert!(err.contains("password authentication failed"), "{err}");
        assert!(!err.contains(pg.password()), "{err}");
    }

    #[tokio::test]
    async fn the_schema_is_recorded_and_a_newer_one_is_refused() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let store = open(&pg.url(&db)).await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(
            pg.psql(
                &db,
                "SELECT version, name FROM casegate_schema ORDER BY version"
            )
            .unwrap(),
            "1|0001_init.sql\n2|0002_case_ids_covering.sql\n3|0003_case_changes.sql\n\
             4|0004_back_ids_mapped_only.sql\n5|0005_no_seq_index.sql"
        );
        drop(store);
        open(&pg.url(&db)).await.unwrap();
        assert_eq!(
            pg.psql(&db, "SELECT count(*) FROM casegate_schema")
                .unwrap(),
            "5",
            "applied once"
        );
        pg.psql(
            &db,
            "INSERT INTO casegate_schema VALUES (99, 'future.sql', 'now')",
        )
        .unwrap();
        let err = open(&pg.url(&db)).await.err().unwrap();
        assert!(err.contains("version 99"), "{err}");
    }

    /// A ledger of schema version 3 (its rows in the old table, whose back ids were all
    /// unique) gets versions 4 and 5 at open, every row and its order kept, and look-ups by
    /// back id find both kinds of row.
    #[tokio::test]
    async fn a_version_3_ledger_is_migrated_with_its_rows() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let mut script = format!(
            "SET ROLE {};\n{SCHEMA_TABLE};\n",
            crate::ledger::pg_test::ROLE
        );
        for m in &MIGRATIONS[..3] {
            script.push_str(m.sql);
            script.push_str(&format!(
                ";\nINSERT INTO casegate_schema VALUES ({}, '{}', 'then');\n",
                m.version, m.name
            ));
        }
        script.push_str(
            "INSERT INTO files (route, front_id, seq, front_case, back_id, name) VALUES \
             ('r', '7', 1, 'c', 'b7', 'seven.txt'), ('r', 'u', 2, 'c', 'u', 'u.txt'), \
             ('s', '1', 3, NULL, 'b7', NULL)",
        );
        pg.psql(&db, &script).unwrap();
        let store = open(&pg.url(&db)).await.unwrap();
        assert_eq!(
            pg.psql(&db, "SELECT max(version) FROM casegate_schema")
                .unwrap(),
            "5"
        );
        let dumped: Vec<(String, String, Option<String>)> = store
            .dump(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.route, r.front_id, r.name))
            .collect();
        assert_eq!(
            dumped,
            [
                ("r".into(), "7".into(), Some("seven.txt".into())),
                ("r".into(), "u".into(), Some("u.txt".into())),
                ("s".into(), "1".into(), None),
            ]
        );
        let found = store
            .by_back("r", vec!["u".into(), "b7".into()])
            .await
            .unwrap();
        assert_eq!(fronts(&found), ["7", "u"]);
        // The first record still wins for both kinds.
        let held = store
            .record(vec![row("8", "b7"), row("u", "u")])
            .await
            .unwrap();
        assert_eq!(fronts(&held), ["7", "u"]);
        assert_eq!(store.dump(Some("r")).await.unwrap().len(), 2);
    }

    fn fronts(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.front_id.as_str()).collect()
    }

    #[tokio::test]
    async fn a_database_that_does_not_answer_fails_the_open_quickly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let start = Instant::now();
        let err = open(&format!("postgres://casegate:hunter2@127.0.0.1:{port}/x"))
            .await
            .err()
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(6));
        assert!(err.contains("cannot connect"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_never_opens_more_than_its_size() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let url = format!("{}?pool_size=3&application_name=pool-bound", pg.url(&db));
        let store = Arc::new(open(&url).await.unwrap());
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let front = i.to_string();
                    store.record(vec![row(&front, &front)]).await.unwrap();
                    store.by_front("r", &front).await.unwrap().unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(store.pool.idle() <= 3, "{}", store.pool.idle());
        let open_connections = pg
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pool-bound'",
            )
            .unwrap();
        let open_connections: usize = open_connections.parse().unwrap();
        assert!((1..=3).contains(&open_connections), "{open_connections}");
    }

    #[tokio::test]
    async fn a_recorded_row_logs_nothing_and_a_front_id_taken_says_so() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        // A runtime of one thread: the store's writer logs where this test listens.
        let (logs, _guard) = crate::ledger::tests::Logs::capture();
        let db = pg.create_database().unwrap();
        let store = Arc::new(open(&pg.url(&db)).await.unwrap());
        // One row alone (its own INSERT), then eight at once (gathered in one).
        store.record(vec![row("1", "b1")]).await.unwrap();
        let tasks: Vec<_> = (2..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .record(vec![row(&i.to_string(), &format!("b{i}"))])
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // The same upstream file under another front id: the first front id is kept.
        let held = store.record(vec![row("x", "b1")]).await.unwrap();
        assert_eq!(held[0].front_id, "1");
        for i in 1..10 {
            let found = store.by_front("r", &i.to_string()).await.unwrap().unwrap();
            assert_eq!(found.back_id, format!("b{i}"));
        }
        assert!(!logs.text().contains("not recorded"), "{}", logs.text());

        // A front id another upstream file holds: not recorded, and the log says why.
        store.record(vec![row("2", "b-other")]).await.unwrap();
        let text = logs.text();
        assert!(
            text.contains("not recorded: the front id already names another upstream file"),
            "{text}"
        );
        assert_eq!(text.matches("not recorded").count(), 1, "{text}");
        let found = store.by_front("r", "2").await.unwrap().unwrap();
        assert_eq!(found.back_id, "b2");
    }

    /// How many sessions `db` has.
    fn sessions(pg: &PgServer, db: &str) -> usize {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'");
        pg.psql("postgres", &sql).unwrap().parse().unwrap()
    }

    /// Waits (at most 10 s) until `db` has `n` sessions.
    async fn wait_for_sessions(pg: &PgServer, db: &str, n: usize) {
        let start = Instant::now();
        while sessions(pg, db) != n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not {n} sessions"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_at_its_connection_limit_shares_the_connections_the_pool_has() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let url = format!("{}?application_name=at-limit", pg.url(&db));
        let store = Arc::new(open(&url).await.unwrap());
        store.record(vec![row("0", "0")]).await.unwrap();
        // The server takes one session of this database from now on: the pool's.
        pg.psql(
            "postgres",
            &format!("ALTER DATABASE {db} CONNECTION LIMIT 1"),
        )
        .unwrap();
        wait_for_sessions(&pg, &db, 1).await;
        let tasks: Vec<_> = (1..=40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let front = i.to_string();
                    store.record(vec![row(&front, &front)]).await?;
                    store.by_front("r", &front).await
                })
            })
            .collect();
        for task in tasks {
            let found = task.await.unwrap().unwrap();
            assert!(found.is_some());
        }
        assert_eq!(sessions(&pg, &db), 1);

        // With no connection of its own, the pool says why it has none.
        pg.psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
            ),
        )
        .unwrap();
        wait_for_sessions(&pg, &db, 0).await;
        let (_holder, connection) = tokio_postgres::connect(&pg.url(&db), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let start = Instant::now();
        loop {
            // The ended session is seen closed when next taken (or fails its statement).
            let asked = Instant::now();
            if let Err(err) = store.by_front("r", "1").await {
                let err = err.to_string();
                if err.contains("cannot connect") {
                    assert!(err.contains("53300"), "{err}");
                    assert!(
                        asked.elapsed() < Duration::from_secs(3),
                        "{:?}",
                        asked.elapsed()
                    );
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never refused");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_that_hangs_times_out_and_its_connection_is_replaced() {
        let Some(pg) = PgServer::for_test() else {
            return;
        };
        let db = pg.create_database().unwrap();
        let mut settings = Settings::parse(&pg.url(&db)).unwrap();
        settings.query_timeout = Duration::from_millis(500);
        let store = PostgresStore::open_with(settings).await.unwrap();
        store.allocate("r", 1).await.unwrap();

        // Another session holds a lock the allocation needs.
        let (mut locker, connection) = tokio_postgres::connect(&pg.url(&db), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let tx = locker.transaction().await.unwrap();
        tx.batch_execute("LOCK TABLE sequences IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let start = Instant::now();
        let err = store.allocate("r", 1).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("no answer within"), "{err}");
        // The timed-out statement is cancelled in the server, not left waiting.
        let waiting = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
             AND wait_event_type = 'Lock'"
        );
        let start = Instant::now();
        while pg.psql("postgres", &waiting).unwrap() != "0" {
            assert!(start.elapsed() < Duration::from_secs(10), "never cancelled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.rollback().await.unwrap();
        assert_eq!(
            store.allocate("r", 1).await.unwrap(),
            2,
            "the cancelled call took none"
        );
    }

    /// A CA, a server certificate for `localhost` only (no IP address) signed by it, and
    /// another CA that signed nothing: (CA PEM, cert PEM, key PEM, other CA PEM).
    fn pki() -> (String, String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("casegate ledger test CA");
        let (other_ca, _) = ca("some other CA");
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (
            ca_cert.pem(),
            cert.pem(),
            key.serialize_pem(),
            other_ca.pem(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_to_the_database_checks_what_each_sslmode_says() {
        let (ca, cert_pem, key_pem, other_ca) = pki();
        let options = PgOptions {
            tls: Some(PgTls { cert_pem, key_pem }),
            ..PgOptions::default()
        };
        let Some(pg) = or_skip(PgServer::start_with(options)) else {
            return;
        };
        let db = pg.create_database().unwrap();
        let files = tempfile::tempdir().unwrap();
        let (ca_file, other_file) = (files.path().join("ca.pem"), files.path().join("other.pem"));
        std::fs::write(&ca_file, ca).unwrap();
        std::fs::write(&other_file, other_ca).unwrap();
        let (ca_file, other_file) = (ca_file.display(), other_file.display());
        let (pw, port) = (pg.password(), pg.port());
        // By name (the certificate's), connecting to 127.0.0.1; or by address.
        let by_name = format!("postgres://casegate:{pw}@localhost:{port}/{db}?hostaddr=127.0.0.1");
        let by_ip = format!("postgres://casegate:{pw}@127.0.0.1:{port}/{db}?x=1");

        let store = open(&format!(
            "{by_name}&sslmode=verify-full&sslrootcert={ca_file}"
        ))
        .await
        .unwrap();
        store.record(vec![row("1", "b1")]).await.unwrap();
        assert!(ssl_in_use(&store).await, "verify-full speaks TLS");

        for (url, why) in [
            (
                format!("{by_name}&sslmode=verify-full&sslrootcert={other_file}"),
                "UnknownIssuer",
            ),
            (format!("{by_name}&sslmode=verify-full"), "UnknownIssuer"),
            (
                format!("{by_ip}&sslmode=verify-full&sslrootcert={ca_file}"),
                "not valid for name",
            ),
            (
                format!("{by_ip}&sslmode=verify-ca&sslrootcert={other_file}"),
                "UnknownIssuer",
            ),
            (format!("{by_ip}&sslmode=require"), "UnknownIssuer"),
        ] {
            let err = open(&url).await.err().unwrap();
            assert!(err.contains("TLS") && err.contains(why), "{url}: {err}");
            assert!(!err.contains(pw), "{err}");
        }

        for (url, tls) in [
            (
                format!("{by_ip}&sslmode=verify-ca&sslrootcert={ca_file}"),
                true,
            ),
            (
                format!("{by_ip}&sslmode=require&sslrootcert={ca_file}"),
                true,
            ),
            (format!("{by_ip}&sslmode=prefer"), true),
            (format!("{by_ip}&sslmode=disable"), false),
        ] {
            let store = open(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(store.dump(None).await.unwrap().len(), 1, "{url}");
            assert_eq!(ssl_in_use(&store).await, tls, "{url}");
        }
    }

    fn quick() -> LedgerTiming {
        LedgerTiming {
            probe_every: Duration::from_millis(100),
            probe_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(8),
            confirm_wait: Duration::from_secs(2),
            retry_first: Duration::from_millis(50),
            retry_max_backoff: Duration::from_millis(200),
            retry_max_age: Duration::from_secs(120),
            retry_max_rows: 2000,
        }
    }

    /// Waits (up to 15 s) for `condition`.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < Duration::from_secs(15), "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_stopped_mid_use_fails_fast_and_serves_again_when_back() {
        let Some(pg) = or_skip(PgServer::start()) else {
            return;
        };
        let db = pg.create_database().unwrap();
        let store = Arc::new(open(&pg.url(&db)).await.unwrap());
        let ledger = Ledger::with_store_and_timing(store.clone(), quick());
        // Several connections in the pool.
        let busy: Vec<_> = (0..6)
            .map(|i| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    ledger
                        .record(vec![row(&format!("{i}"), &format!("b{i}"))])
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in busy {
            task.await.unwrap();
        }

        pg.stop().unwrap();
        let start = Instant::now();
        let err = store.by_front("r", "1").await.unwrap_err();
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
        assert!(store.allocate("r", 1).await.is_err());
        assert!(store.record(vec![row("x", "bx")]).await.is_err());
        assert!(store.ping().await.is_err());
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        eventually("the ledger turns unhealthy", || !ledger.healthy()).await;
        assert!(ledger.reserve("r", IdForm::Integer).await.is_err());
        let confirmed = ledger.record_confirmed(row("late", "b-late")).await;
        assert_eq!(confirmed.front_id, "late");
        assert_eq!(ledger.pending(), 1);

        pg.start_again().unwrap();
        // The same store, not reopened: new connections replace the ones the stop closed.
        assert_eq!(
            store.by_front("r", "1").await.unwrap().unwrap().back_id,
            "b1"
        );
        eventually("the ledger is healthy again", || ledger.healthy()).await;
        eventually("the queued row is written", || ledger.pending() == 0).await;
        assert!(ledger.by_front("r", "late").await.unwrap().is_some());
        assert_eq!(ledger.reserve("r", IdForm::Integer).await.unwrap(), "1");
        assert_eq!(store.dump(None).await.unwrap().len(), 7);
    }
}
