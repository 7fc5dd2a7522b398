//! Connection workers: one single-threaded tokio runtime per core, each accepting and
//! serving its connections from accept to close, as nginx's workers and Pingora's
//! thread-per-core mode do.
//!
//! Each worker runs an accept loop of its own on the one listening socket (a duplicate of
//! its descriptor registered with the worker's reactor), made by [`Workers::accept_on_each`]
//! and given the worker's [`Seat`]. A connection stays on the worker that accepted it:
//! its requests, their upstream connections (the pool keeps each worker's idle
//! connections apart, see [`current`]) and whatever they spawn run on that one thread. A
//! request therefore never wakes a second runtime thread: on tokio's work-stealing
//! runtime, a lone request woke an idle sibling about once, which cost more CPU than the
//! request's own handling at one connection (bench/RESULTS.md). Nor does a connection:
//! until the forty-second round one accept loop on the multi-threaded runtime handed each
//! connection to a worker, which cost three registrations with a reactor, a wake-up of
//! the worker and two of the accept loop's thread per connection.
//!
//! Whichever worker's accept comes first takes a connection; a worker serving more than
//! the least busy one (by more than an eighth of its own count) hands what it accepts to
//! that one instead ([`Seat::place`]), through the worker's inbox, so a burst of
//! connections that one worker happens to take is still spread evenly. A busy worker's
//! connections are not moved once served. The process's other work (the admin
//! listener, the ledger's tasks, the pools' reapers and reloads) stays on the
//! multi-threaded runtime; the ledger thread (SQLite) is a thread of its own. The
//! workers stop when [`Workers`] is dropped, which the server does once their accept
//! loops have drained their connections.
//!
//! Unlike nginx with `reuseport` and Pingora (STYLE.md), the workers share one listening
//! socket rather than each binding its own with `SO_REUSEPORT`: a second process of the
//! same user could join such a group and take a share of the connections without an
//! error, and the kernel's hash would spread connections without regard to load. A new
//! connection on a shared socket wakes every worker asleep on it (tokio cannot ask for
//! `EPOLLEXCLUSIVE`, which nginx uses), and all but one find nothing to accept: so only
//! the first [`ACCEPTING`] workers accept, and with more workers than that the others
//! take their connections as handed ones.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// The most blocking threads of all the workers together, and of the process's
/// multi-threaded runtime (its reloads, admin and ledger work): spool reads and writes,
/// resolving upstream host names. Each spool call is one 256 KiB read or write, so a few
/// threads keep the disk busy; more calls wait their turn. tokio's default (512) let the
/// pool grow to over a hundred idle threads under eight spooled uploads (a finished call's
/// thread is not idle yet when the next call arrives), and their stacks and allocator
/// arenas are resident memory.
pub const BLOCKING_THREADS: usize = 16;

/// The most workers that accept on the listening socket (the first ones): each new
/// connection wakes every one of them that sleeps, so their number bounds the wasted
/// wake-ups a connection at low load.
pub const ACCEPTING: usize = 4;

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

    /// Runs `accept(seat, inbox)` on every worker, as a task of its runtime, and returns
    /// their handles: `seat` is the worker's place among the others ([`Seat`]), `inbox`
    /// the connections other workers hand to it.
    pub fn accept_on_each<A, F>(&self, mut accept: A) -> Vec<JoinHandle<F::Output>>
    where
        A: FnMut(Seat, mpsc::UnboundedReceiver<Handed>) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = self
            .workers
            .iter()
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let inboxes: Arc<[mpsc::UnboundedSender<Handed>]> = inboxes.into();
        let counts: Arc<[Arc<AtomicUsize>]> =
            self.workers.iter().map(|w| w.connections.clone()).collect();
        self.workers
            .iter()
            .zip(receivers)
            .enumerate()
            .map(|(me, (w, inbox))| {
                let seat = Seat {
                    me,
                    counts: counts.clone(),
                    inboxes: inboxes.clone(),
                };
                w.post.0.spawn(accept(seat, inbox))
            })
            .collect()
    }

    /// The worker serving the fewest connections (the first of those tied), its handle,
    /// and `connection` wrapped to count itself there while it lives.
    #[cfg(test)]
    pub fn assign<F>(&self, connection: F) -> (Handle, impl Future<Output = F::Output>)
    where
        F: Future,
    {
        let w = self
            .workers
            .iter()
            .min_by_key(|w| w.connections.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("Workers::start makes at least one"));
        let fut = Counted::on(&w.connections).around(connection);
        (Handle::clone(&w.post.0), fut)
    }

    /// Each worker's post, in order (worker 1 first).
    #[cfg(test)]
    pub fn posts(&self) -> Vec<Post> {
        self.workers.iter().map(|w| w.post.clone()).collect()
    }

    /// Connections being served, per worker.
    #[cfg(test)]
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

/// A worker's place among the workers, for its accept loop: which worker serves what it
/// accepts, and the count of the connections it serves.
pub struct Seat {
    /// This worker's index (its number less one).
    me: usize,
    /// Connections being served, per worker.
    counts: Arc<[Arc<AtomicUsize>]>,
    /// Each worker's inbox of handed connections.
    inboxes: Arc<[mpsc::UnboundedSender<Handed>]>,
}

impl Seat {
    /// The worker that is to serve a connection this one has just accepted: None for this
    /// one, unless it serves more connections than the least busy worker by more than an
    /// eighth of its own count (then that worker's index). The slack keeps a steady load
    /// from handing a connection over whenever the counts differ by one; below eight
    /// connections a worker, the counts stay within one of each other.
    pub fn place(&self) -> Option<usize> {
        let mine = self.counts[self.me].load(Ordering::Relaxed);
        let (least, fewest) = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, n)| n)?;
        (mine > fewest + mine / 8).then_some(least)
    }

    /// Whether this worker accepts on the listening socket (one of the first
    /// [`ACCEPTING`]); the others serve only connections handed to them.
    pub fn accepts(&self) -> bool {
        self.me < ACCEPTING
    }

    /// `connection` counted on this worker while it lives.
    pub fn count_here<F: Future>(&self, connection: F) -> impl Future<Output = F::Output> {
        Counted::on(&self.counts[self.me]).around(connection)
    }

    /// Hands `stream` to worker `to` (counted there at once); gives it back when that
    /// worker no longer takes connections (it is draining).
    pub fn hand(&self, to: usize, stream: std::net::TcpStream) -> Result<(), std::net::TcpStream> {
        let counted = Counted::on(&self.counts[to]);
        self.inboxes[to]
            .send(Handed { stream, counted })
            .map_err(|e| e.0.stream)
    }
}

/// A connection another worker accepted and handed to this one, already counted here.
pub struct Handed {
    stream: std::net::TcpStream,
    counted: Counted,
}

impl Handed {
    /// The connection's socket, and its count on this worker (to keep while it is served).
    pub fn into_parts(self) -> (std::net::TcpStream, Counted) {
        (self.stream, self.counted)
    }
}

/// One connection counted on its worker until dropped.
pub struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn on(count: &Arc<AtomicUsize>) -> Counted {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count.clone())
    }

    /// `connection`, keeping the count while it lives.
    pub fn around<F: Future>(self, connection: F) -> Around<F> {
        Around {
            connection,
            _counted: self,
            relay: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's future with its count ([`Counted::around`]): a struct rather than an
    /// `async fn`, which keeps the future it is given and the one it awaits in two places
    /// (a connection's task was 1 912 bytes instead of 1 048, copied as tokio spawns it).
    /// Each of its polls is a connection's poll for [`crate::clock`]: one reading of the
    /// clock serves that poll's deadlines.
    pub struct Around<F> {
        #[pin]
        connection: F,
        _counted: Counted,
        // The connection's waker, made at its first poll ([`Relay`]).
        relay: Option<(Arc<Relay>, Waker)>,
    }
}

impl<F: Future> Future for Around<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // One reading of the clock for the poll's deadlines (see `crate::clock`).
        let _poll = crate::clock::InPoll::enter();
        let this = self.project();
        let (relay, waker) = this.relay.get_or_insert_with(|| {
            let relay = Arc::new(Relay {
                task: AtomicWaker::new(),
            });
            let waker = Waker::from(relay.clone());
            (relay, waker)
        });
        relay.task.register(cx.waker());
        let _polling = Polling::enter(relay);
        this.connection.poll(&mut Context::from_waker(waker))
    }
}

/// A connection's waker: what hyper and everything under it are given instead of the
/// task's own, passing each wake on to the task, except one kind. hyper's HTTP/1 request
/// body (hyper 1.12 and 1.13, `body/chan.rs`) wakes the connection's dispatcher every
/// time the body's reader takes a chunk, also after the dispatcher delivered the whole
/// body and dropped its end of the channel; read inside the connection's own task, as
/// casegate reads an upload, that wake made the task poll the whole connection once more
/// per upload to find nothing to do (bench/RESULTS.md, the fifty-sixth and fifty-seventh
/// rounds). A wake made inside a request body's poll ([`holding_wakes`]), on the
/// connection's own thread while the connection is being polled, is held back instead,
/// and the body's reader passes it on to the connection's task ([`Held::pass`]) unless
/// the body has then ended. It is passed to the connection's task, never through the
/// context the body was polled with: a body read with a waker that is not the
/// connection's (a look with no waker, as a dropped body's drain makes) would lose it,
/// and with it the dispatcher's wake to read the rest of the body.
pub struct Relay {
    task: AtomicWaker,
}

thread_local! {
    /// The relay of the connection being polled on this thread (its address; 0: none).
    static POLLING: Cell<usize> = const { Cell::new(0) };
    /// Inside [`holding_wakes`].
    static HOLDING: Cell<bool> = const { Cell::new(false) };
    /// The relay whose wake was held back in the current [`holding_wakes`].
    static HELD: Cell<Option<Arc<Relay>>> = const { Cell::new(None) };
}

/// The connection being polled on this thread, for a poll's length.
struct Polling(usize);

impl Polling {
    fn enter(relay: &Arc<Relay>) -> Polling {
        Polling(POLLING.replace(Arc::as_ptr(relay) as usize))
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLLING.set(self.0);
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if HOLDING.get() && POLLING.get() == Arc::as_ptr(self) as usize {
            HELD.set(Some(self.clone()));
            return;
        }
        self.task.wake();
    }
}

/// A wake of a connection held back by [`holding_wakes`].
#[must_use = "a held wake is passed on or dropped on purpose"]
pub struct Held(Arc<Relay>);

impl Held {
    /// Passes the wake on to the connection's task.
    pub fn pass(self) {
        self.0.task.wake();
    }
}

/// The window of one [`holding_wakes`], closed also if its poll panics.
struct Holding {
    before: bool,
    outer: Option<Arc<Relay>>,
}

impl Drop for Holding {
    fn drop(&mut self) {
        HOLDING.set(self.before);
        // A wake held in this window and not taken (a panic) is passed on.
        if let Some(relay) = HELD.replace(self.outer.take()) {
            relay.task.wake();
        }
    }
}

/// Runs `poll`, a request body's poll, holding back the wakes it makes of the connection
/// being polled on this thread ([`Relay`]): its result, and the wake held back if one was
/// (the caller passes it on unless the body ended).
pub fn holding_wakes<T>(poll: impl FnOnce() -> T) -> (T, Option<Held>) {
    let window = Holding {
        before: HOLDING.replace(true),
        outer: HELD.take(),
    };
    let out = poll();
    let held = HELD.take().map(Held);
    drop(window);
    (out, held)
}

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
    fn a_worker_serving_more_than_the_least_busy_hands_connections_to_it() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let loops = workers.accept_on_each(|seat, inbox| {
            tx.send((seat, inbox)).unwrap();
            async {}
        });
        assert_eq!(loops.len(), 2);
        let mut seats: Vec<_> = rx.try_iter().collect();
        let (b, mut inbox_b) = seats.pop().unwrap();
        let (a, _inbox_a) = seats.pop().unwrap();
        let counts = |a: &Seat| {
            a.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        // Both idle, or tied: each keeps what it accepts.
        assert_eq!((a.place(), b.place()), (None, None));
        let first = a.count_here(async {});
        assert_eq!(counts(&a), vec![1, 0]);
        assert_eq!((a.place(), b.place()), (Some(1), None));
        let second = b.count_here(async {});
        assert_eq!((a.place(), b.place()), (None, None));
        drop((first, second));
        assert_eq!(counts(&a), vec![0, 0]);
        // Busier, a worker keeps its connections while within an eighth of its count of
        // the least busy.
        let on_a: Vec<_> = (0..16).map(|_| a.count_here(async {})).collect();
        let mut on_b: Vec<_> = (0..14).map(|_| b.count_here(async {})).collect();
        assert_eq!((a.place(), b.place()), (None, None));
        drop(on_b.pop());
        assert_eq!(counts(&a), vec![16, 13]);
        assert_eq!((a.place(), b.place()), (Some(1), None));
        drop(on_a);
        // A handed connection is counted on the worker it goes to while its count is held.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let (port, peer) = (accepted.local_addr().unwrap(), client.local_addr().unwrap());
        a.hand(1, accepted).unwrap();
        assert_eq!(counts(&a)[1], 13 + 1);
        let (stream, counted) = inbox_b.try_recv().unwrap().into_parts();
        assert_eq!(
            (stream.local_addr().unwrap(), stream.peer_addr().unwrap()),
            (port, peer)
        );
        drop(counted);
        assert_eq!(counts(&a)[1], 13);
        // A worker that no longer takes connections gives the socket back, uncounted.
        drop(inbox_b);
        let back = a.hand(1, stream).unwrap_err();
        assert_eq!(back.peer_addr().unwrap(), peer);
        assert_eq!(counts(&a), vec![0, 13]);
        drop(on_b);
        assert_eq!(counts(&b), vec![0, 0]);
    }

    #[test]
    fn only_the_first_workers_accept() {
        let workers = Workers::start(ACCEPTING + 2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let loops = workers.accept_on_each(|seat, _| {
            tx.send(seat.accepts()).unwrap();
            async {}
        });
        assert_eq!(loops.len(), ACCEPTING + 2);
        let accepts: Vec<bool> = rx.try_iter().collect();
        let mut expected = vec![true; ACCEPTING];
        expected.extend([false, false]);
        assert_eq!(accepts, expected);
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

    /// A task's waker that counts its wakes.
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> Counted {
        Counted::on(&Arc::new(AtomicUsize::new(0)))
    }

    /// Sets `step` to `n` and polls `conn` once (it stays pending): the task's wakes so far.
    fn poll_at<F: Future>(
        conn: &mut Pin<Box<Around<F>>>,
        cx: &mut Context<'_>,
        step: &AtomicUsize,
        n: usize,
        wakes: &Wakes,
    ) -> usize {
        step.store(n, Ordering::SeqCst);
        assert!(conn.as_mut().poll(cx).is_pending());
        wakes.0.load(Ordering::SeqCst)
    }

    /// A held wake passed on reaches the connection's task whatever context the body was
    /// polled with: a body looked at with no waker (a dropped body's drain) passes the
    /// dispatcher's wake on all the same. A wake held in a window that panics is passed on
    /// as the window closes, and the thread holds nothing after it.
    #[test]
    fn a_held_wake_passed_on_reaches_the_connections_task() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let task = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&task);
        let step = Arc::new(AtomicUsize::new(0));
        let s = step.clone();
        let mut conn = Box::pin(counted().around(std::future::poll_fn(move |cx| {
            let connection = cx.waker().clone();
            match s.load(Ordering::SeqCst) {
                // Held, then passed on with no context at hand (a drain's look polls with
                // a waker that is not the connection's): the task is woken.
                0 => holding_wakes(|| connection.wake_by_ref())
                    .1
                    .expect("held")
                    .pass(),
                // Held and dropped (the body ended): the task is not woken.
                1 => drop(holding_wakes(|| connection.wake_by_ref()).1.expect("held")),
                // A window whose poll panics passes its held wake on as it closes.
                2 => {
                    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        holding_wakes(|| {
                            connection.wake_by_ref();
                            panic!("a body's poll panics");
                        })
                    }));
                    assert!(caught.is_err());
                }
                // After it the thread holds nothing: a wake made in the poll passes.
                3 => connection.wake_by_ref(),
                _ => {}
            }
            Poll::<()>::Pending
        })));
        assert_eq!(poll_at(&mut conn, &mut cx, &step, 0, &wakes), 1);
        assert_eq!(poll_at(&mut conn, &mut cx, &step, 1, &wakes), 1);
        assert_eq!(poll_at(&mut conn, &mut cx, &step, 2, &wakes), 2);
        assert_eq!(poll_at(&mut conn, &mut cx, &step, 3, &wakes), 3);
    }

    #[test]
    fn a_wake_made_in_a_body_poll_of_the_connection_being_polled_is_held_back() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let task = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&task);
        let woken = || wakes.0.load(Ordering::SeqCst);
        let step = Arc::new(AtomicUsize::new(0));
        let kept: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        // Another connection's waker, registered with a task of its own.
        let other_wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let mut other = Box::pin(counted().around(std::future::pending::<()>()));
        let other_task = Waker::from(other_wakes.clone());
        let _ = other.as_mut().poll(&mut Context::from_waker(&other_task));
        let other_waker = std::sync::Mutex::new(None::<Waker>);
        let mut other2 = Box::pin(counted().around(std::future::poll_fn(|cx| {
            *other_waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        })));
        let _ = other2.as_mut().poll(&mut Context::from_waker(&other_task));
        let other_waker = other_waker.lock().unwrap().clone().unwrap();
        let (s, k) = (step.clone(), kept.clone());
        let mut conn = Box::pin(counted().around(std::future::poll_fn(move |cx| {
            *k.lock().unwrap() = Some(cx.waker().clone());
            match s.load(Ordering::SeqCst) {
                // Made inside a body's poll: held back, and said so.
                0 => assert!(holding_wakes(|| cx.waker().wake_by_ref()).1.is_some()),
                // Outside one: passed on.
                1 => cx.waker().wake_by_ref(),
                // Another connection's, inside a body's poll: not held, passed on.
                2 => assert!(holding_wakes(|| other_waker.wake_by_ref()).1.is_none()),
                _ => {}
            }
            Poll::<()>::Pending
        })));
        assert_eq!(poll_at(&mut conn, &mut cx, &step, 0, &wakes), 0);
        assert_eq!(poll_at(&mut conn, &mut cx, &step, 1, &wakes), 1);
        assert_eq!(poll_at(&mut conn, &mut cx, &step, 2, &wakes), 1);
        assert_eq!(other_wakes.0.load(Ordering::SeqCst), 1);
        // Between polls (the reactor, another thread) every wake passes, in a body's
        // poll or not.
        let kept = kept.lock().unwrap().clone().unwrap();
        assert!(holding_wakes(|| kept.wake_by_ref()).1.is_none());
        assert_eq!(woken(), 2);
        let on_thread =
            std::thread::spawn(move || holding_wakes(|| kept.wake_by_ref()).1.is_some());
        assert!(conn.as_mut().poll(&mut cx).is_pending());
        assert!(!on_thread.join().unwrap());
        assert_eq!(woken(), 3);
    }

    /// Counts the polls of the future it wraps.
    struct PollCount<F> {
        inner: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future> Future for PollCount<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.inner.as_mut().poll(cx)
        }
    }

    /// A connection served by hyper inside [`Around`] whose service reads each request's
    /// body through casegate's body wrapper, inside the connection's task, and answers
    /// its length; its polls counted.
    async fn counted_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        tokio::spawn(async move {
            let (io, _) = listener.accept().await.unwrap();
            let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
                use crate::service::WrapBody;
                let layer = crate::service::BodyIdleLayer {
                    limit: Duration::from_secs(10),
                };
                let body = layer.wrap(req.into_body());
                async move {
                    let len = body.collect().await.map_or(0, |b| b.to_bytes().len());
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(len.to_string())),
                    ))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
            let _ = counted()
                .around(PollCount {
                    inner: Box::pin(conn),
                    polls: p,
                })
                .await;
        });
        (addr, polls)
    }

    /// Sends `head` and `body` (in `pieces` writes, `pause` apart) and reads the answer's
    /// body (the length the server read).
    async fn exchange(
        io: &mut tokio::net::TcpStream,
        head: &str,
        body: &[u8],
        pieces: usize,
        pause: Duration,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        io.write_all(head.as_bytes()).await.unwrap();
        let size = body.len().div_ceil(pieces.max(1)).max(1);
        for (i, piece) in body.chunks(size).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            io.write_all(piece).await.unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf))
                .await
                .expect("the answer came")
                .unwrap();
            assert!(n > 0, "the server closed the connection");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if got.len() >= end + 4 + len {
                    return text[end + 4..end + 4 + len].to_owned();
                }
            }
        }
    }

    #[tokio::test]
    async fn an_upload_read_in_its_connection_costs_the_connection_one_poll() {
        let (addr, polls) = counted_server().await;
        let mut io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = vec![7u8; 4096];
        let head = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        // The first exchange's polls include the connection's start.
        assert_eq!(
            exchange(&mut io, &head, &body, 1, Duration::ZERO).await,
            "4096"
        );
        let before = polls.load(Ordering::SeqCst);
        for _ in 0..20 {
            let request = [head.as_bytes(), &body].concat();
            assert_eq!(
                exchange(&mut io, "", &request, 1, Duration::ZERO).await,
                "4096"
            );
        }
        // One poll when each request arrives (whole, head and body in one write); hyper's
        // wake after the body was taken made it two.
        let per_request = (polls.load(Ordering::SeqCst) - before) as f64 / 20.0;
        assert!(per_request < 1.5, "{per_request} polls a request");
    }

    #[tokio::test]
    async fn bodies_in_pieces_large_or_chunked_are_read_to_their_end() {
        let (addr, _) = counted_server().await;
        let mut io = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Large and sent whole: hyper delivers it a buffer at a time, each taken chunk's
        // wake moving the next (held back and passed on while the body goes on).
        let large = vec![1u8; 3 << 20];
        let head = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            large.len()
        );
        assert_eq!(
            exchange(&mut io, &head, &large, 1, Duration::ZERO).await,
            (3 << 20).to_string()
        );
        // In pieces with pauses between.
        let body = vec![2u8; 100_000];
        let head = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        assert_eq!(
            exchange(&mut io, &head, &body, 5, Duration::from_millis(20)).await,
            "100000"
        );
        // Chunked, in pieces.
        let mut chunked = Vec::new();
        for _ in 0..50 {
            chunked.extend_from_slice(b"1000\r\n");
            chunked.extend_from_slice(&[3u8; 0x1000]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(
            exchange(&mut io, head, &chunked, 7, Duration::from_millis(5)).await,
            (50 * 0x1000).to_string()
        );
    }
}
