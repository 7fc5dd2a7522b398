//! A bounded pool of PostgreSQL connections, written here rather than taken from a crate:
//! what the ledger needs is small (a semaphore of N permits, a stack of idle connections,
//! one prepared-statement cache per connection) and its failure rules are the ledger's
//! own: every wait is bounded, a connection whose call did not finish cleanly is closed
//! rather than reused, and a connection the server closed is dropped when next taken.
//! A server at its connection limit (`max_connections`, or a role's or database's
//! `CONNECTION LIMIT`) is not the ledger down: while the pool has connections open, an
//! operation the server refused a new one waits for one of them instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::tls::MakeTls;
use crate::ledger::LedgerError;

/// The pool of one [`super::PostgresStore`].
pub(super) struct Pool {
    config: tokio_postgres::Config,
    tls: MakeTls,
    size: usize,
    permits: Semaphore,
    idle: Mutex<Vec<Conn>>,
    connect_timeout: Duration,
    query_timeout: Duration,
    census: Arc<Census>,
    /// The runtime the pool was made on (the server's multi-threaded one): connections
    /// are opened and driven there, not on the connection worker that first needed one,
    /// which may end first (see [`crate::workers`]).
    runtime: Option<tokio::runtime::Handle>,
}

/// One connection and the statements prepared on it.
pub(super) struct Conn {
    pub client: Client,
    statements: HashMap<&'static str, Statement>,
    _counted: Counted,
}

/// What a pool's connections tell it: how many are open (idle or in use), and a signal
/// each time one is given back or closed.
#[derive(Default)]
struct Census {
    open: AtomicUsize,
    changed: Notify,
}

/// One open connection in its pool's [`Census`], for as long as it lives.
struct Counted(Arc<Census>);

impl Counted {
    fn new(census: &Arc<Census>) -> Counted {
        census.open.fetch_add(1, Ordering::Relaxed);
        Counted(census.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_waiters();
    }
}

/// Why no new connection was opened.
pub(super) struct ConnectError {
    pub error: LedgerError,
    /// The server refused it for its connection limit (SQLSTATE 53300).
    pub at_limit: bool,
}

impl Conn {
    /// `sql` prepared on this connection (once; then from its cache).
    pub(super) async fn prepare(
        &mut self,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// Why one operation failed on its connection.
#[derive(Debug)]
pub(super) enum DbError {
    Pg(tokio_postgres::Error),
    /// casegate refused what the database holds or was asked (a damaged sequence).
    Refused(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Pg(e)
    }
}

impl DbError {
    /// Whether the connection is still fit for the next operation: only after an error
    /// the server reported (the session is intact) or casegate's own refusal. "Cached
    /// plan must not change result type" (a schema changed under the statements this
    /// connection prepared) closes it, so a new one prepares them afresh.
    pub(super) fn keeps_connection(&self) -> bool {
        match self {
            DbError::Pg(e) => e
                .as_db_error()
                .is_some_and(|db| *db.code() != SqlState::FEATURE_NOT_SUPPORTED),
            DbError::Refused(_) => true,
        }
    }
}

impl From<DbError> for LedgerError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Pg(e) => LedgerError::Unavailable(describe(&e)),
            DbError::Refused(reason) => LedgerError::Unavailable(reason),
        }
    }
}

/// A tokio-postgres error with its cause (its `Display` alone says only "db error" or
/// "error connecting to server").
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "PostgreSQL: {} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        );
    }
    format!("PostgreSQL: {}", crate::error::Chain(e))
}

fn unavailable(reason: String) -> LedgerError {
    LedgerError::Unavailable(reason)
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

impl Pool {
    pub(super) fn new(
        config: tokio_postgres::Config,
        tls: MakeTls,
        size: usize,
        connect_timeout: Duration,
        query_timeout: Duration,
    ) -> Pool {
        Pool {
            config,
            tls,
            size,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::with_capacity(size)),
            connect_timeout,
            query_timeout,
            census: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// A new connection (outside the pool's count: for the migration at open, or for a
    /// permit holder), within the connect timeout. Its I/O runs on a spawned task that
    /// ends when the connection closes.
    pub(super) async fn connect(&self) -> Result<Conn, ConnectError> {
        let (config, tls, timeout) = (self.config.clone(), self.tls.clone(), self.connect_timeout);
        let census = self.census.clone();
        let elsewhere = self.runtime.as_ref().filter(|rt| {
            tokio::runtime::Handle::try_current().map_or(true, |now| now.id() != rt.id())
        });
        match elsewhere {
            Some(rt) => rt
                .spawn(async move { connect(&config, tls, timeout, &census).await })
                .await
                .map_err(|_| ConnectError {
                    error: unavailable("PostgreSQL: the connecting task ended".to_string()),
                    at_limit: false,
                })?,
            None => connect(&config, tls, timeout, &census).await,
        }
    }

    /// Puts a connection that is still open back among the idle ones.
    pub(super) fn give_back(&self, conn: Conn) {
        if !conn.client.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < self.size {
                idle.push(conn);
            }
        }
        self.census.changed.notify_waiters();
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if !conn.client.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// Waits (at most the query timeout) for a connection another operation gives back,
    /// after the server refused a new one for its connection limit (`refused`, returned
    /// when the pool has no connection open or none comes back in time).
    async fn wait_for_idle(&self, refused: LedgerError) -> Result<Conn, LedgerError> {
        let deadline = tokio::time::Instant::now() + self.query_timeout;
        loop {
            let changed = self.census.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(conn) = self.take_idle() {
                return Ok(conn);
            }
            if self.census.open.load(Ordering::Relaxed) == 0 {
                return Err(refused);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(unavailable(format!(
                    "PostgreSQL: at its connection limit, and none of the pool's {} \
                     connections came back within {}",
                    self.census.open.load(Ordering::Relaxed),
                    human(self.query_timeout)
                )));
            }
        }
    }

    /// Runs `op` on a connection of the pool: waits at most the query timeout for one of
    /// the N permits, opens a connection when none is idle (connect timeout; a server at
    /// its connection limit means waiting for one of the pool's, see
    /// [`Pool::wait_for_idle`]), then gives `op` the query timeout. A connection comes
    /// back to the pool only when `op` finished and the session is intact; one that timed
    /// out has its query cancelled and is closed. If the caller stops waiting, the
    /// connection is closed too.
    pub(super) async fn run<T, F>(&self, op: F) -> Result<T, LedgerError>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, DbError>>,
    {
        let _permit = tokio::time::timeout(self.query_timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                unavailable(format!(
                    "PostgreSQL: all {} connections of the pool stayed busy for {}",
                    self.size,
                    human(self.query_timeout)
                ))
            })?
            .map_err(|_| unavailable("PostgreSQL: the pool is closed".to_string()))?;
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => match self.connect().await {
                Ok(conn) => conn,
                Err(ConnectError {
                    error,
                    at_limit: true,
                }) => self.wait_for_idle(error).await?,
                Err(ConnectError { error, .. }) => return Err(error),
            },
        };
        match tokio::time::timeout(self.query_timeout, op(&mut conn)).await {
            Ok(Ok(value)) => {
                self.give_back(conn);
                Ok(value)
            }
            Ok(Err(e)) => {
                if e.keeps_connection() {
                    self.give_back(conn);
                }
                Err(e.into())
            }
            Err(_) => {
                let token = conn.client.cancel_token();
                let tls = self.tls.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), token.cancel_query(tls)).await;
                });
                Err(unavailable(format!(
                    "PostgreSQL: no answer within {}",
                    human(self.query_timeout)
                )))
            }
        }
    }

    /// How many connections are idle (tests).
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Opens a connection within `connect_timeout`; its I/O runs on a task spawned on the
/// calling runtime.
async fn connect(
    config: &tokio_postgres::Config,
    tls: MakeTls,
    connect_timeout: Duration,
    census: &Arc<Census>,
) -> Result<Conn, ConnectError> {
    let (client, connection) = tokio::time::timeout(connect_timeout, config.connect(tls))
        .await
        .map_err(|_| ConnectError {
            error: unavailable(format!(
                "PostgreSQL: no connection within {}",
                human(connect_timeout)
            )),
            at_limit: false,
        })?
        .map_err(|e| ConnectError {
            at_limit: e
                .as_db_error()
                .is_some_and(|db| *db.code() == SqlState::TOO_MANY_CONNECTIONS),
            error: unavailable(format!("cannot connect: {}", describe(&e))),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "a ledger connection to PostgreSQL closed");
        }
    });
    Ok(Conn {
        client,
        statements: HashMap::new(),
        _counted: Counted::new(census),
    })
}
