//! The clock, read once for each poll of a connection's task rather than at every
//! deadline and idle check in it, as nginx reads it once per turn of its event loop
//! (`ngx_time_update`) and lets every timer of that turn use the reading.
//!
//! A small upload sets and checks about a dozen such times on its connection's task: the
//! upstream's silence timeout (the body's progress at each frame, the timer), the pool's
//! idle checks, the answer's read deadline, hyper's header-read timer, the ledger's check
//! of its file. Each was a `clock_gettime` call, which the vDSO answers without a system
//! call but which costs about 35 ns on the VMs casegate is measured on (bench/README.md,
//! "Counting instead of timing"). While [`Around`](crate::workers::Around) polls a
//! connection, [`now`] reads the clock at its first call and returns that reading for the
//! rest of the poll; a poll is synchronous and short (microseconds), and the next one
//! reads the clock again, so a deadline set from it is early by at most that long.
//! Durations that casegate reports (the access log's and the upstream's times, the
//! metrics' latencies) read the clock each time ([`exact`]): a request answered within
//! one poll would otherwise show none. Such a reading is the poll's from then on, so a
//! poll that has one does not read the clock for its deadlines as well.
//!
//! Outside a connection's poll (the ledger's thread, the admin listener, tasks a request
//! spawns, tests on tokio's paused clock) [`now`] and [`tokio_now`] read the clock each
//! time, tokio's own where a paused test clock must be seen.

use std::cell::Cell;
use std::time::Instant;

#[derive(Clone, Copy)]
enum Reading {
    /// Not in a connection's poll: every call reads the clock.
    Outside,
    /// In one, the clock not read yet.
    Unread,
    /// In one, this is its reading.
    Read(Instant),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Outside) };
}

/// Now: this poll's reading of the clock on a connection's task, else the clock's.
pub fn now() -> Instant {
    READING.with(|p| match p.get() {
        Reading::Read(t) => t,
        Reading::Unread => {
            let t = Instant::now();
            p.set(Reading::Read(t));
            t
        }
        Reading::Outside => Instant::now(),
    })
}

/// The clock's reading, for a duration that is reported; in a connection's poll it is also
/// the poll's reading from here on (a later one than [`now`] had).
pub fn exact() -> Instant {
    let t = Instant::now();
    READING.with(|p| {
        if !matches!(p.get(), Reading::Outside) {
            p.set(Reading::Read(t));
        }
    });
    t
}

/// [`now`] on tokio's clock: outside a connection's poll, tokio's own reading (paused in
/// tests that pause it).
pub fn tokio_now() -> tokio::time::Instant {
    READING.with(|p| match p.get() {
        Reading::Outside => tokio::time::Instant::now(),
        _ => tokio::time::Instant::from_std(now()),
    })
}

/// Marks a connection's poll until dropped: [`now`] reads the clock once within it. Holds
/// the reading it replaced (outside, or an outer poll's), put back when it ends.
pub struct InPoll(Reading);

impl InPoll {
    pub fn enter() -> InPoll {
        InPoll(READING.with(|p| p.replace(Reading::Unread)))
    }
}

impl Drop for InPoll {
    fn drop(&mut self) {
        READING.with(|p| p.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_poll_reads_the_clock_once_and_the_next_poll_again() {
        // Outside a poll every call reads the clock.
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > a);
        let first = {
            let _poll = InPoll::enter();
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(now(), first, "a second read in the same poll");
            assert_eq!(tokio_now().into_std(), first);
            first
        };
        // The poll is over: the clock is read again, and the next poll reads it anew.
        let after = now();
        assert!(after >= first + Duration::from_millis(2));
        std::thread::sleep(Duration::from_millis(2));
        let _poll = InPoll::enter();
        let second = now();
        assert!(second >= after + Duration::from_millis(2));
        assert_eq!(now(), second);
    }

    #[test]
    fn an_exact_reading_is_the_polls_from_then_on() {
        let before = {
            let _poll = InPoll::enter();
            let before = now();
            std::thread::sleep(Duration::from_millis(2));
            let exact = exact();
            assert!(exact >= before + Duration::from_millis(2));
            assert_eq!(now(), exact);
            before
        };
        // Outside a poll it is only a reading.
        let exact = exact();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() >= exact + Duration::from_millis(2));
        assert!(exact > before);
    }

    #[test]
    fn a_poll_inside_a_poll_gives_back_the_outer_reading() {
        let _outer = InPoll::enter();
        let outer = now();
        {
            let _inner = InPoll::enter();
            std::thread::sleep(Duration::from_millis(2));
            assert!(now() > outer);
        }
        assert_eq!(now(), outer);
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_poll_tokio_now_is_tokios_paused_clock() {
        let start = tokio_now();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(tokio_now() - start, Duration::from_secs(30));
    }
}
