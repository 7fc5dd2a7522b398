//! Connection workers: one single-threaded tokio runtime per core, each serving the
//! connections handed to it from accept to close, as nginx's workers and Pingora's
//! thread-per-core mode do.
//!
//! The accept loop stays on the process's multi-threaded runtime (with the admin
//! listener, the ledger's tasks, the pools' reapers and reloads). Each connection it
//! accepts goes to the worker serving the fewest connections, and stays there: its
//! requests, their upstream connections (the pool keeps each worker's idle connections
//! apart, see [`current`]) and whatever they spawn run on that one thread. A request
//! therefore never wakes a second runtime thread: on tokio's work-stealing runtime, a
//! lone request woke an idle sibling about once, which cost more CPU than the request's
//! own handling at one connection (bench/RESULTS.md). The ledger thread (SQLite) stays
//! a thread of its own.
//!
//! A busy worker's connections are not moved to an idle one; the accept loop balances new
//! connections by count only. The workers stop when [`Workers`] is dropped, which the
//! accept loop does once its connections have ended.
//!
//! Unlike nginx and Pingora (STYLE.md), the workers share one listener and its accept
//! loop rather than each accepting on its own (`SO_REUSEPORT`): the hand-off costs a hop
//! per connection, not per request, and draining, reloads and TLS changes stay in the one
//! place they were. Their upstream pools are shared, with idle connections kept per
//! worker.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The most blocking threads of all the workers together, and of the process's
/// multi-threaded runtime (its reloads, admin and ledger work): spool reads and writes,
/// resolving upstream host names. Each spool call is one 256 KiB read or write, so a few
/// threads keep the disk busy; more calls wait their turn. tokio's default (512) let the
/// pool grow to over a hundred idle threads under eight spooled uploads (a finished call's
/// thread is not idle yet when the next call arrives), and their stacks and allocator
/// arenas are resident memory.
pub const BLOCKING_THREADS: usize = 16;

thread_local! {
    /// The worker this thread is (1, 2, ...), or 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker the calling thread is (1, 2, ...), 0 when it is not one (the
/// multi-threaded runtime, a blocking thread, a test's runtime).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

struct Worker {
    handle: Handle,
    /// Connections being served.
    connections: Arc<AtomicUsize>,
    /// Dropped: the worker's runtime ends (its tasks are dropped) and its thread exits.
    _stop: oneshot::Sender<()>,
}

/// The connection workers.
pub struct Workers {
    workers: Vec<Worker>,
}

/// How many workers by default: one per core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    /// Starts `n` workers (at least one), each a thread running a current-thread runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        let blocking = (BLOCKING_THREADS / n).max(2);
        let mut workers = Vec::with_capacity(n);
        for i in 1..=n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(blocking)
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("casegate-worker-{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(i));
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                    // The runtime is dropped here, on its own thread: its tasks are
                    // dropped, its blocking threads finish what they run.
                })?;
            workers.push(Worker {
                handle,
                connections: Arc::new(AtomicUsize::new(0)),
                _stop: stop,
            });
        }
        Ok(Workers { workers })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The worker serving the fewest connections (the first of those tied), its handle,
    /// and `connection` wrapped to count itself there while it lives.
    pub fn assign<F>(&self, connection: F) -> (Handle, impl Future<Output = F::Output>)
    where
        F: Future,
    {
        let w = self
            .workers
            .iter()
            .min_by_key(|w| w.connections.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("Workers::start makes at least one"));
        w.connections.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(w.connections.clone());
        let fut = async move {
            let _counted = counted;
            connection.await
        };
        (w.handle.clone(), fut)
    }

    /// Connections being served, per worker.
    pub fn connections(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.connections.load(Ordering::Relaxed))
            .collect()
    }
}

/// One connection counted on its worker until dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker_and_run_there() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        assert_eq!(current(), 0);
        // Two long connections land on different workers; a third goes to the first
        // again once the first has ended.
        let (release_a, a_done) = oneshot::channel::<()>();
        let (h, fut) = workers.assign(async move {
            let _ = a_done.await;
            current()
        });
        let a = h.spawn(fut);
        let (release_b, b_done) = oneshot::channel::<()>();
        let (h, fut) = workers.assign(async move {
            let _ = b_done.await;
            current()
        });
        let b = h.spawn(fut);
        assert_eq!(workers.connections(), vec![1, 1]);
        release_a.send(()).unwrap();
        let on_a = a.await.unwrap();
        let mut expected = vec![1, 1];
        expected[on_a - 1] = 0;
        assert_eq!(workers.connections(), expected);
        let (h, fut) = workers.assign(async { current() });
        let c = h.spawn(fut).await.unwrap();
        assert_eq!(c, on_a);
        release_b.send(()).unwrap();
        let on_b = b.await.unwrap();
        assert_ne!(on_a, on_b);
        assert!((1..=2).contains(&on_a) && (1..=2).contains(&on_b));
        assert_eq!(workers.connections(), vec![0, 0]);
        // A blocking call made from a worker runs off it.
        let (h, fut) =
            workers.assign(async { tokio::task::spawn_blocking(current).await.unwrap() });
        assert_eq!(h.spawn(fut).await.unwrap(), 0);
    }

    #[test]
    fn dropped_workers_stop_their_threads() {
        let workers = Workers::start(1).unwrap();
        let (h, fut) = workers.assign(std::future::pending::<()>());
        let task = h.spawn(fut);
        let counted = workers.workers[0].connections.clone();
        drop(workers);
        // The worker's runtime ended: its pending connection was dropped (and uncounted).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (counted.load(Ordering::Relaxed) != 0 || !task.is_finished())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(counted.load(Ordering::Relaxed), 0);
        assert!(task.is_finished());
    }
}
