//! Group commit for the PostgreSQL ledger: records from concurrent requests are written
//! together, a batch per transaction; and lookups by front id (every download, get and
//! delete) from concurrent requests are asked together, one statement per route.
//!
//! Every [`Store::record`](super::super::Store::record) call queues its rows and awaits
//! its answer. One writer task takes the first record waiting, then (once fewer than
//! [`IN_FLIGHT`] batches are being written) everything else that waits, up to
//! [`MAX_ROWS`] rows, and writes it as one record on a pooled connection: one insertion
//! counter update, one transaction, one commit for the lot instead of one each. An idle
//! ledger writes a lone record at once; under load, records queue while the batches ahead
//! commit, so batches grow with the load and the per-record cost (round trips, commits,
//! the hot counter row's lock) falls.
//!
//! Inside a batch, rows keep their arrival order, so "the first record of an upstream
//! file wins" holds between requests as it does within one record. A batch that fails is
//! written again one record at a time, so one record PostgreSQL refuses fails only its own
//! request. A request that stops waiting (its client went away) does not stop the batch:
//! the writes are the writer's tasks, not the request's.
//!
//! Lookups go the same way ([`LOOKUPS_IN_FLIGHT`] batches at once): a batch asks
//! `front_id = ANY(...)` once per route and answers each lookup from the rows found; a
//! batch PostgreSQL refuses (a front id it cannot take as text) is asked again one lookup
//! at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::{try_join_all, BoxFuture};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::pool::{Conn, DbError, Pool};
use super::{read_row, read_rows, record, BY_FRONT, BY_FRONTS};
use crate::ledger::{LedgerError, Row};

/// Batches written at once. One: while a batch commits, the next gathers everything that
/// arrives (`casegate-bench ledger`, 4 KiB uploads at c=32 with PostgreSQL on the same two
/// cores: 40 -> 26 us of PostgreSQL's CPU per upload going from 2 to 1).
const IN_FLIGHT: usize = 1;
/// The most rows in one batch.
const MAX_ROWS: usize = 256;
/// Lookup batches asked at once (as with writes, one gathers the most: 19 -> 7 us of
/// PostgreSQL's CPU per download going from 3 to 1, in the same benchmark).
const LOOKUPS_IN_FLIGHT: usize = 1;
/// The most lookups in one batch.
const MAX_LOOKUPS: usize = 256;

/// One record waiting to be written.
struct Waiting {
    rows: Vec<Row>,
    answer: oneshot::Sender<Result<Vec<Row>, LedgerError>>,
}

/// One lookup by front id waiting to be asked.
struct Lookup {
    route: String,
    front_id: String,
    answer: oneshot::Sender<Result<Option<Row>, LedgerError>>,
}

/// The queues in front of the writer and the lookup tasks.
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Waiting>,
    lookups: mpsc::UnboundedSender<Lookup>,
}

impl Batcher {
    /// Starts the writer and lookup tasks on the current runtime; they end when the
    /// batcher is dropped and every batch already taken is done.
    pub(super) fn start(pool: Arc<Pool>) -> Batcher {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(writer(pool.clone(), waiting));
        let (lookups, asked) = mpsc::unbounded_channel();
        tokio::spawn(looker(pool, asked));
        Batcher { queue, lookups }
    }

    /// The row of `route` with that front id (asked with whatever other lookups wait).
    pub(super) async fn by_front(
        &self,
        route: String,
        front_id: String,
    ) -> Result<Option<Row>, LedgerError> {
        let (answer, answered) = oneshot::channel();
        self.lookups
            .send(Lookup {
                route,
                front_id,
                answer,
            })
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }

    /// Writes `rows` (with whatever other records wait) and gives them as held.
    pub(super) async fn record(&self, rows: Vec<Row>) -> Result<Vec<Row>, LedgerError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting { rows, answer })
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }
}

fn closed() -> LedgerError {
    LedgerError::Unavailable("PostgreSQL: the ledger's writer has stopped".to_string())
}

/// The next batch from `queue`: its first item, then (once one of `slots` is free, which
/// the batch holds) whatever queued meanwhile, up to `max` by `weight`. `None` when the
/// queue is closed and empty.
async fn next_batch<T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    slots: &Arc<Semaphore>,
    max: usize,
    weight: impl Fn(&T) -> usize,
) -> Option<(Vec<T>, OwnedSemaphorePermit)> {
    let first = queue.recv().await?;
    let slot = slots.clone().acquire_owned().await.ok()?;
    let mut total = weight(&first);
    let mut batch = vec![first];
    while total < max {
        match queue.try_recv() {
            Ok(next) => {
                total += weight(&next);
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    Some((batch, slot))
}

async fn writer(pool: Arc<Pool>, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some((batch, slot)) =
        next_batch(&mut waiting, &slots, MAX_ROWS, |w| w.rows.len()).await
    {
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
            drop(slot);
        });
    }
}

async fn looker(pool: Arc<Pool>, mut asked: mpsc::UnboundedReceiver<Lookup>) {
    let slots = Arc::new(Semaphore::new(LOOKUPS_IN_FLIGHT));
    while let Some((batch, slot)) = next_batch(&mut asked, &slots, MAX_LOOKUPS, |_| 1).await {
        let pool = pool.clone();
        tokio::spawn(async move {
            look_up(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Runs `op` on a pooled connection; the flag says whether PostgreSQL answered it with an
/// error (so one of the batch's items may be at fault) rather than not answering.
async fn run_flagged<T, F>(pool: &Pool, op: F) -> (Result<T, LedgerError>, bool)
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, DbError>> + Send + 'static,
{
    let refused = Arc::new(AtomicBool::new(false));
    let flag = refused.clone();
    let result = pool
        .run(move |conn| {
            Box::pin(async move {
                let result = op(conn).await;
                if result.as_ref().is_err_and(DbError::keeps_connection) {
                    flag.store(true, Ordering::Relaxed);
                }
                result
            })
        })
        .await;
    (result, refused.load(Ordering::Relaxed))
}

/// One lookup on its own.
async fn look_up_one(pool: &Pool, one: Lookup) {
    let Lookup {
        route,
        front_id,
        answer,
    } = one;
    let result = pool
        .run(move |conn| {
            Box::pin(async move {
                let statement = conn.prepare(BY_FRONT).await?;
                let row = conn
                    .client
                    .query_opt(&statement, &[&route, &front_id])
                    .await?;
                Ok(row.as_ref().map(read_row).transpose()?)
            })
        })
        .await;
    let _ = answer.send(result);
}

/// Asks `batch` with one statement per route; if PostgreSQL refuses, each on its own.
async fn look_up(pool: &Pool, batch: Vec<Lookup>) {
    if batch.len() == 1 {
        for one in batch {
            look_up_one(pool, one).await;
        }
        return;
    }
    let mut routes: Vec<(String, Vec<String>)> = Vec::new();
    for one in &batch {
        match routes.iter_mut().find(|(route, _)| *route == one.route) {
            Some((_, ids)) => ids.push(one.front_id.clone()),
            None => routes.push((one.route.clone(), vec![one.front_id.clone()])),
        }
    }
    let (outcome, refused) = run_flagged(pool, move |conn| {
        Box::pin(async move {
            let statement = conn.prepare(BY_FRONTS).await?;
            let client = &conn.client;
            type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
            let params: Vec<[Param<'_>; 2]> = routes
                .iter()
                .map(|(route, ids)| [route as Param<'_>, ids as Param<'_>])
                .collect();
            // Pipelined: every route's statement goes out before the first answer is read.
            let answers = try_join_all(params.iter().map(|p| client.query(&statement, p))).await?;
            let mut found = Vec::new();
            for rows in &answers {
                found.extend(read_rows(rows)?);
            }
            Ok(found)
        })
    })
    .await;
    match outcome {
        Ok(found) => {
            let mut by_key: HashMap<(&str, &str), &Row> = HashMap::with_capacity(found.len());
            for row in &found {
                by_key.insert((&row.route, &row.front_id), row);
            }
            for one in batch {
                let row = by_key
                    .get(&(one.route.as_str(), one.front_id.as_str()))
                    .map(|r| (*r).clone());
                let _ = one.answer.send(Ok(row));
            }
        }
        Err(e) if !refused => {
            for one in batch {
                let _ = one.answer.send(Err(e.clone()));
            }
        }
        Err(e) => {
            tracing::debug!(lookups = batch.len(), error = %e, "a ledger lookup batch was refused; asking one by one");
            futures_util::future::join_all(batch.into_iter().map(|one| look_up_one(pool, one)))
                .await;
        }
    }
}

/// Writes `batch` as one record; if that fails, each of its records on its own.
async fn write(pool: &Pool, batch: Vec<Waiting>) {
    if batch.len() == 1 {
        for one in batch {
            let result = pool.run(|conn| Box::pin(record(conn, one.rows))).await;
            let _ = one.answer.send(result);
        }
        return;
    }
    let all: Vec<Row> = batch.iter().flat_map(|w| w.rows.iter().cloned()).collect();
    let total = all.len();
    let (outcome, refused) = run_flagged(pool, |conn| Box::pin(record(conn, all))).await;
    match outcome {
        Ok(held) if held.len() == total => {
            let mut held = held.into_iter();
            for one in batch {
                let mine: Vec<Row> = held.by_ref().take(one.rows.len()).collect();
                let _ = one.answer.send(Ok(mine));
            }
        }
        Err(e) if !refused => {
            // The database did not answer: each record would fail the same way.
            for one in batch {
                let _ = one.answer.send(Err(e.clone()));
            }
        }
        outcome => {
            if let Err(e) = &outcome {
                tracing::debug!(records = batch.len(), error = %e, "a ledger batch was refused; writing its records one by one");
            }
            let each = batch.into_iter().map(|one| async move {
                let result = pool.run(|conn| Box::pin(record(conn, one.rows))).await;
                let _ = one.answer.send(result);
            });
            futures_util::future::join_all(each).await;
        }
    }
}
