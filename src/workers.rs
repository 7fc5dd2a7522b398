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

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

/// The most blocking threads of all the workers together, and of the process's
/// multi-threaded runtime (its reloads, admin and ledger work): spool reads and writes,
/// resolving upstream host names. Each spool call is one 256 KiB read or write, so a few
/// threads keep the disk busy; more calls wait their turn. tokio's default (512) let the
/// pool grow to over a hundred idle threads under eight spooled uploads (a finished call's
/// thread is not idle yet when the next call arrives), and their stacks and allocator
/// arenas are resident memory.
pub const BLOCKING_THREADS: usize = 16;

/// How far ahead each worker always has a timer set: see [`heartbeat`].
pub const HEARTBEAT: Duration = Duration::from_secs(1);

thread_local! {
    /// The worker this thread is (1, 2, ...), or 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
    /// The worker's runtime, on a worker's thread.
    static POST: RefCell<Option<Post>> = const { RefCell::new(None) };
}

/// A worker's runtime, for another thread to run work there ([`Post::run`]).
#[derive(Clone)]
pub struct Post(Arc<Handle>);

/// The calling worker's [`Post`]; None on any other thread.
pub fn post() -> Option<Post> {
    POST.with(|p| p.borrow().clone())
}

impl Post {
    /// Runs `f` on the worker's thread, as one task; dropped unrun if the worker has
    /// stopped. A thread that completes several of a worker's requests at once (the
    /// ledger's, after a group commit) completes them through here in one go: completed
    /// one by one from its own thread, each waiting task was scheduled from outside its
    /// runtime, and tokio writes the runtime's eventfd for each such task (one system call
    /// per request on that thread, and a wake-up of the worker each time it had gone back
    /// to sleep in between). From the worker's own thread, they are woken in its queue.
    pub fn run(&self, f: impl FnOnce() + Send + 'static) {
        drop(self.0.spawn(async move { f() }));
    }

    /// Whether both are the same worker's.
    pub fn is(&self, other: &Post) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The worker the calling thread is (1, 2, ...), 0 when it is not one (the
/// multi-threaded runtime, a blocking thread, a test's runtime).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

struct Worker {
    /// Its runtime's handle.
    post: Post,
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
            let post = Post(Arc::new(rt.handle().clone()));
            let own = post.clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("casegate-worker-{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(i));
                    POST.with(|p| *p.borrow_mut() = Some(own));
                    rt.block_on(async {
                        let beat = tokio::spawn(heartbeat());
                        let _ = stopped.await;
                        beat.abort();
                    });
                    // The runtime is dropped here, on its own thread: its tasks are
                    // dropped, its blocking threads finish what they run.
                })?;
            workers.push(Worker {
                post,
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
        (Handle::clone(&w.post.0), fut)
    }

    /// Each worker's post, in order (worker 1 first).
    #[cfg(test)]
    pub fn posts(&self) -> Vec<Post> {
        self.workers.iter().map(|w| w.post.clone()).collect()
    }

    /// Connections being served, per worker.
    pub fn connections(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.connections.load(Ordering::Relaxed))
            .collect()
    }
}

/// Keeps a timer at most [`HEARTBEAT`] ahead on the worker's runtime, so that no timer a
/// request sets falls before the wake-up the runtime planned when it last went to sleep.
///
/// tokio's timer driver wakes its own thread (a write to the runtime's eventfd, then one
/// more turn of `epoll_wait`) whenever a timer is set earlier than that planned wake-up,
/// even when the thread setting it is the runtime's own and awake. A request sets several
/// timers of a second or more (the request body's idle timeout when the body waits, and
/// until the twenty-ninth round one for each of its frames; the upstream's silence
/// timeout; the ledger's waits), and between two sleeps
/// the planned wake-up is the earliest timer there was when the worker last slept, often
/// none at all: about one wasted write per request (bench/RESULTS.md, the twenty-eighth
/// round). With this timer always set, the planned wake-up is never more than a second
/// away, and timers of a second or more never come before it. The cost: each worker
/// wakes once a second when idle. Each beat also fires the worker's coarse timers that
/// are due ([`crate::coarse`]).
async fn heartbeat() {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        crate::coarse::beat();
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

    /// The write system calls the calling thread has made (`syscw` of
    /// /proc/thread-self/io).
    fn writes_of_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io")
            .expect("/proc/thread-self/io (Linux, with task I/O accounting)");
        io.lines()
            .find_map(|l| l.strip_prefix("syscw:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a syscw line")
    }

    #[test]
    fn timers_a_request_sets_do_not_wake_its_own_worker() {
        let workers = Workers::start(1).unwrap();
        let (h, fut) = workers.assign(async {
            // The worker sleeps once, with its heartbeat set.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = writes_of_this_thread();
            for _ in 0..200 {
                // Set a timer of a few seconds, as a request's timeouts are, and drop it
                // before the worker next looks for events (a body's frame came in time).
                {
                    let timer = tokio::time::sleep(Duration::from_secs(5));
                    tokio::pin!(timer);
                    let first = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(timer.as_mut().poll(cx).is_pending())
                    });
                    assert!(first.await);
                }
                tokio::task::yield_now().await;
            }
            writes_of_this_thread() - before
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let writes = rt.block_on(h.spawn(fut)).unwrap();
        // Without the heartbeat: one write to the worker's own eventfd per timer.
        assert!(writes < 10, "{writes} writes for 200 timers");
    }

    #[test]
    fn work_posted_to_a_worker_runs_on_its_thread() {
        let workers = Workers::start(2).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(post().is_none());
        // On a worker's thread, post() is that worker's.
        let (h, fut) = workers.assign(async { (current(), post()) });
        let (worker, own) = rt.block_on(h.spawn(fut)).unwrap();
        let posts = workers.posts();
        assert!(own.expect("a worker has a post").is(&posts[worker - 1]));
        assert!(!posts[0].is(&posts[1]));
        // Posted from this thread (no worker), each runs on its own worker.
        for (i, p) in posts.iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            p.run(move || tx.send(current()).unwrap());
            let ran_on = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the posted work ran");
            assert_eq!(ran_on, i + 1);
        }
        // A stopped worker's post drops the work unrun.
        let stale = posts[0].clone();
        drop(posts);
        drop(workers);
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let tx = tx.clone();
            stale.run(move || tx.send(current()).unwrap());
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(_) if std::time::Instant::now() < deadline => continue,
                Ok(_) => panic!("the stopped worker still runs posted work"),
                Err(_) => break,
            }
        }
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
