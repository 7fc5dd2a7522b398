//! Coarse timers for long deadlines on the connection workers, checked by each worker's
//! heartbeat ([`crate::workers`]) once a second, as nginx checks its timers once per event
//! loop turn rather than keeping one kernel timer each.
//!
//! Every request sets two timers that almost never fire: hyper's header-read timeout (30 s,
//! set when the connection waits for the next request's head and dropped when the head is
//! in) and the upstream's silence timeout (the route's `timeout_secs`). On tokio's timer
//! wheel each costs an entry, its insertion when first polled and its removal when
//! dropped: about 1 100 instructions an upload of the 71 000 a small same-dialect upload
//! takes, against about 500 for the coarse ones (bench/RESULTS.md, the thirty-sixth
//! round). A coarse timer is an entry in a list the worker keeps (a vector with a free
//! list): set when first polled, taken out when dropped, and woken by the first
//! heartbeat at or after its deadline. So it fires at most one
//! [`HEARTBEAT`](workers::HEARTBEAT) late, and never early: each heartbeat reads the
//! clock.
//!
//! Only deadlines of [`COARSE_MIN`] or more use it, and only on a worker: elsewhere (the
//! admin listener, a test's runtime with its paused clock) and for shorter waits, the
//! timer is tokio's.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::workers;

/// The shortest wait a coarse timer serves: a heartbeat late is then at most a fifth more.
pub const COARSE_MIN: Duration = Duration::from_secs(5);

/// A list emptied with room for more timers than this is given back (a burst of
/// connections leaves it at its peak otherwise).
const SHRINK_ABOVE: usize = 1024;

/// A worker's coarse timers.
#[derive(Default)]
struct Deadlines {
    slots: Vec<Slot>,
    /// Indexes of free slots.
    free: Vec<u32>,
    /// Names each timer set, so a slot used again is not mistaken for the one it held.
    next_id: u64,
    /// When the last heartbeat ran (None before the first).
    beat: Option<Instant>,
}

enum Slot {
    Free,
    Set { id: u64, at: Instant, waker: Waker },
}

thread_local! {
    static DEADLINES: RefCell<Deadlines> = RefCell::new(Deadlines::default());
}

impl Deadlines {
    fn insert(&mut self, at: Instant, waker: Waker) -> (u32, u64) {
        self.next_id += 1;
        let id = self.next_id;
        let slot = Slot::Set { id, at, waker };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        (index, id)
    }

    /// The slot `key` set, if it is still set (not fired, not removed).
    fn get(&mut self, (index, id): (u32, u64)) -> Option<&mut Waker> {
        match self.slots.get_mut(index as usize) {
            Some(Slot::Set {
                id: held, waker, ..
            }) if *held == id => Some(waker),
            _ => None,
        }
    }

    fn remove(&mut self, key: (u32, u64)) {
        if self.get(key).is_some() {
            self.slots[key.0 as usize] = Slot::Free;
            self.free.push(key.0);
        }
    }

    /// Takes out the timers due at `now`, for their tasks to be woken.
    fn due(&mut self, now: Instant, wake: &mut Vec<Waker>) {
        self.beat = Some(now);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if matches!(slot, Slot::Set { at, .. } if *at <= now) {
                if let Slot::Set { waker, .. } = std::mem::replace(slot, Slot::Free) {
                    wake.push(waker);
                }
                self.free.push(i as u32);
            }
        }
        // Emptied after a burst: the list gives back what the burst made it hold.
        if self.free.len() == self.slots.len() && self.slots.capacity() > SHRINK_ABOVE {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// Called by a worker's heartbeat: wakes the timers that are due.
pub(crate) fn beat() {
    let mut wake = Vec::new();
    let now = Instant::now();
    DEADLINES.with(|d| d.borrow_mut().due(now, &mut wake));
    // Woken outside the borrow: a waker may run code that sets or drops a timer.
    for w in wake {
        w.wake();
    }
}

/// A coarse timer (the module's doc). Created on a worker, polled and dropped there.
#[derive(Debug)]
pub struct CoarseSleep {
    at: Instant,
    /// The worker whose list holds it.
    worker: usize,
    /// Its slot there once polled.
    key: Option<(u32, u64)>,
    done: bool,
    /// Used only if it is polled on another thread than its worker's (casegate does not
    /// move a connection between threads).
    elsewhere: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CoarseSleep {
    /// A coarse timer to `at`, if the calling thread is a worker.
    pub fn until(at: Instant) -> Option<CoarseSleep> {
        let worker = workers::current();
        (worker != 0).then_some(CoarseSleep {
            at,
            worker,
            key: None,
            done: false,
            elsewhere: None,
        })
    }

    fn unset(&mut self) {
        if let Some(key) = self.key.take() {
            if workers::current() == self.worker {
                // During the thread's exit the list may be gone already.
                let _ = DEADLINES.try_with(|d| d.borrow_mut().remove(key));
            }
            // On another thread the slot stays until its heartbeat: one spurious wake-up.
        }
    }

    /// Sets the timer again, to `at`.
    pub fn reset(&mut self, at: Instant) {
        self.unset();
        self.at = at;
        self.done = false;
        self.elsewhere = None;
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(());
        }
        if workers::current() != this.worker {
            let at = tokio::time::Instant::from_std(this.at);
            let sleep = this
                .elsewhere
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            std::task::ready!(sleep.as_mut().poll(cx));
            this.done = true;
            return Poll::Ready(());
        }
        let ready = DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            match this.key {
                Some(key) => match d.get(key) {
                    Some(waker) => {
                        if !waker.will_wake(cx.waker()) {
                            waker.clone_from(cx.waker());
                        }
                        false
                    }
                    // Taken out by a heartbeat: due.
                    None => true,
                },
                // Due before the last heartbeat read the clock: no need to wait for the
                // next one. (Later than that, the next heartbeat finds it.)
                None if d.beat.is_some_and(|beat| this.at <= beat) => true,
                None => {
                    this.key = Some(d.insert(this.at, cx.waker().clone()));
                    false
                }
            }
        });
        if ready {
            this.key = None;
            this.done = true;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        self.unset();
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

/// hyper's timer for the public listener's HTTP/1 connections: coarse on a worker (its
/// only timer there is the 30 s header-read timeout), tokio's elsewhere.
#[derive(Clone, Debug, Default)]
pub struct WorkerTimer;

impl hyper::rt::Timer for WorkerTimer {
    fn now(&self) -> Instant {
        crate::clock::now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(crate::clock::now() + duration)
    }

    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        match CoarseSleep::until(at) {
            Some(c) => Box::pin(c),
            None => hyper_util::rt::TokioTimer::new().sleep_until(at),
        }
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, at: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut c) => c.as_mut().get_mut().reset(at),
            None => *sleep = self.sleep_until(at),
        }
    }
}

pin_project_lite::pin_project! {
    /// A timer for a wait of any length: coarse when it is long and the thread a worker,
    /// tokio's otherwise.
    #[project = TimerProj]
    #[derive(Debug)]
    pub enum Timer {
        Coarse { sleep: CoarseSleep },
        Tokio { #[pin] sleep: tokio::time::Sleep },
    }
}

impl Timer {
    /// A timer that fires `wait` from now.
    pub fn after(wait: Duration) -> Timer {
        if wait >= COARSE_MIN {
            if let Some(sleep) = CoarseSleep::until(crate::clock::now() + wait) {
                return Timer::Coarse { sleep };
            }
        }
        Timer::Tokio {
            sleep: tokio::time::sleep_until(crate::clock::tokio_now() + wait),
        }
    }

    /// Sets the timer again, to `wait` from now (a coarse one stays coarse).
    pub fn reset(self: Pin<&mut Self>, wait: Duration) {
        match self.project() {
            TimerProj::Coarse { sleep } => sleep.reset(crate::clock::now() + wait),
            TimerProj::Tokio { sleep } => sleep.reset(crate::clock::tokio_now() + wait),
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            TimerProj::Coarse { sleep } => Pin::new(sleep).poll(cx),
            TimerProj::Tokio { sleep } => sleep.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::Workers;

    /// How late a coarse timer may fire: one heartbeat (the tests add the time the
    /// worker takes to run the heartbeat's task once it is due).
    const COARSE_SLACK: Duration = crate::workers::HEARTBEAT;

    fn on_worker<T: Send + 'static>(
        workers: &Workers,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (h, fut) = workers.assign(fut);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(h.spawn(fut)).unwrap()
    }

    fn set() -> usize {
        DEADLINES.with(|d| d.borrow().len())
    }

    #[test]
    fn a_coarse_timer_fires_after_its_deadline_within_a_heartbeat() {
        let workers = Workers::start(1).unwrap();
        let (late, kind, left) = on_worker(&workers, async {
            let start = Instant::now();
            let sleep = CoarseSleep::until(start + Duration::from_millis(1500)).unwrap();
            sleep.await;
            let late = start.elapsed();
            let kind = matches!(Timer::after(COARSE_MIN), Timer::Coarse { .. })
                && matches!(Timer::after(Duration::from_secs(1)), Timer::Tokio { .. });
            (late, kind, set())
        });
        assert!(late >= Duration::from_millis(1500), "fired early: {late:?}");
        assert!(
            late <= Duration::from_millis(1500) + COARSE_SLACK + Duration::from_millis(400),
            "fired late: {late:?}"
        );
        assert!(
            kind,
            "long waits on a worker are coarse, short ones tokio's"
        );
        assert_eq!(left, 0, "a fired timer leaves the list");
        // Off a worker, tokio's.
        assert!(CoarseSleep::until(Instant::now()).is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(matches!(Timer::after(COARSE_MIN), Timer::Tokio { .. }));
        });
    }

    #[test]
    fn dropped_and_reset_timers_leave_the_list() {
        let workers = Workers::start(1).unwrap();
        let (after_polls, after_drops, reset_fired) = on_worker(&workers, async {
            let far = Instant::now() + Duration::from_secs(3600);
            let mut timers: Vec<_> = (0..100)
                .map(|_| Box::pin(CoarseSleep::until(far).unwrap()))
                .collect();
            for t in &mut timers {
                let pending =
                    std::future::poll_fn(|cx| Poll::Ready(t.as_mut().poll(cx).is_pending()));
                assert!(pending.await);
            }
            let after_polls = set();
            // Every other one dropped, the rest reset to a deadline already passed.
            let mut kept: Vec<_> = timers.into_iter().step_by(2).collect();
            let after_drops = set();
            for t in &mut kept {
                t.as_mut().get_mut().reset(Instant::now());
            }
            let mut fired = 0;
            for t in kept {
                t.await;
                fired += 1;
            }
            (after_polls, after_drops, fired)
        });
        assert_eq!(after_polls, 100);
        assert_eq!(after_drops, 50);
        assert_eq!(reset_fired, 50);
    }

    /// hyper's header-read timeout, with [`WorkerTimer`] on a worker: a connection whose
    /// second request's head stops half-way is closed at the timeout, within a heartbeat.
    #[test]
    fn hypers_header_read_timeout_still_closes_a_stalled_head() {
        use std::io::{Read, Write};
        let workers = Workers::start(1).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut answer = [0u8; 1024];
            let n = s.read(&mut answer).unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
            let answered = Instant::now();
            s.write_all(b"GET / HTTP/1.1\r\nHost:").unwrap();
            // Closed by the server: read ends.
            let n = s.read(&mut answer).unwrap_or(0);
            (answered.elapsed(), n)
        });
        let served_with_error = on_worker(&workers, async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (s, _) = listener.accept().await.unwrap();
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(WorkerTimer)
                .header_read_timeout(Duration::from_millis(1500));
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            });
            let served = b
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            (served.is_err(), set())
        });
        let (waited, n) = client.join().unwrap();
        assert_eq!(
            served_with_error,
            (true, 0),
            "a header-read timeout, no timer left"
        );
        assert_eq!(n, 0, "closed without an answer");
        assert!(
            waited >= Duration::from_millis(1400),
            "closed early: {waited:?}"
        );
        assert!(
            waited <= Duration::from_millis(1500) + COARSE_SLACK + Duration::from_millis(500),
            "closed late: {waited:?}"
        );
    }

    #[test]
    fn a_slot_used_again_is_not_taken_for_the_timer_it_held() {
        let mut d = Deadlines::default();
        let waker = std::task::Waker::noop().clone();
        let now = Instant::now();
        let a = d.insert(now, waker.clone());
        let mut wake = Vec::new();
        d.due(now, &mut wake);
        assert_eq!(wake.len(), 1);
        let b = d.insert(now + Duration::from_secs(60), waker);
        assert_eq!(a.0, b.0, "the free slot is used again");
        assert!(
            d.get(a).is_none(),
            "the fired timer does not see the new one"
        );
        d.remove(a);
        assert!(
            d.get(b).is_some(),
            "removing the fired one leaves the new one"
        );
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_list_emptied_after_a_burst_gives_its_room_back() {
        let mut d = Deadlines::default();
        let waker = std::task::Waker::noop().clone();
        let now = Instant::now();
        let keys: Vec<_> = (0..5000).map(|_| d.insert(now, waker.clone())).collect();
        let mut wake = Vec::new();
        d.due(now, &mut wake);
        assert_eq!(wake.len(), 5000);
        assert_eq!(d.slots.capacity(), 0, "given back once empty");
        // A timer of the burst dropped afterwards finds nothing to remove.
        d.remove(keys[4999]);
        let a = d.insert(now, waker.clone());
        assert_eq!(a.0, 0);
        // A list still holding a timer keeps its room.
        for _ in 0..5000 {
            d.insert(now, waker.clone());
        }
        let later = d.insert(now + Duration::from_secs(60), waker);
        d.due(now, &mut wake);
        assert!(d.slots.capacity() >= 5000);
        assert!(d.get(later).is_some());
        assert_eq!(d.len(), 1);
    }
}
