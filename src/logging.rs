//! The log: where its lines go, and how a text line is written.
//!
//! [`LineSink`] is the writer behind `tracing-subscriber`'s fmt layer. A line is appended
//! to one shared buffer under a lock and the request goes on; a thread of its own takes
//! the whole buffer at once and writes it in one `write`, at most every
//! [`GATHER`]. The thread is woken only by the line that finds the buffer empty (one
//! wake per batch, not per line), and sleeps without a timer while nothing is logged.
//! Nothing is dropped: when [`MAX_HELD`] bytes wait (the output blocked), a logging
//! thread waits for room. [`LineSinkGuard`] writes what is held when it is dropped, at
//! exit.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer thread lets lines gather after the first one of a batch.
pub const GATHER: Duration = Duration::from_millis(2);
/// The most bytes held before logging waits for the writer.
pub const MAX_HELD: usize = 4 * 1024 * 1024;
/// A buffer larger than this after its write is given back, not kept for the next.
const KEEP_CAPACITY: usize = 256 * 1024;

#[derive(Default)]
struct Held {
    buf: Vec<u8>,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    held: Mutex<Held>,
    /// The writer thread waits here for a first line or the close.
    wake: Condvar,
    /// Logging threads wait here while [`MAX_HELD`] bytes are held.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves plain bytes behind: keep going.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer side of the log: cheap to clone, one per process.
#[derive(Clone)]
pub struct LineSink {
    shared: Arc<Shared>,
}

/// Ends the writer thread when dropped, after it wrote every line held.
pub struct LineSinkGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LineSink {
    /// Starts the writer thread (named `thread_name`) over `out`.
    pub fn new<W: Write + Send + 'static>(
        out: W,
        thread_name: &str,
    ) -> io::Result<(LineSink, LineSinkGuard)> {
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || write_loop(&for_thread, out))?;
        Ok((
            LineSink {
                shared: Arc::clone(&shared),
            },
            LineSinkGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    fn append(&self, bytes: &[u8]) {
        let shared = &*self.shared;
        let mut held = shared.lock();
        while held.buf.len() >= MAX_HELD && !held.closing {
            held = shared.room.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        let first = held.buf.is_empty();
        held.buf.extend_from_slice(bytes);
        drop(held);
        if first {
            shared.wake.notify_one();
        }
    }
}

fn write_loop<W: Write>(shared: &Shared, mut out: W) {
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let mut held = shared.lock();
        while held.buf.is_empty() && !held.closing {
            held = shared.wake.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        if held.buf.is_empty() {
            // Closing, and everything written.
            break;
        }
        if !held.closing {
            // Let the lines of the next moments join this batch.
            drop(held);
            std::thread::sleep(GATHER);
            held = shared.lock();
        }
        std::mem::swap(&mut held.buf, &mut spare);
        drop(held);
        shared.room.notify_all();
        // Nowhere to report a failed write to the log; the next batch tries again.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        if spare.capacity() > KEEP_CAPACITY {
            spare = Vec::new();
        }
    }
    let _ = out.flush();
}

impl Drop for LineSinkGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One writer per event: the fmt layer writes each formatted line in one `write_all`.
pub struct LineWriter<'a> {
    sink: &'a LineSink,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { sink: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into a shared Vec, optionally held shut until released.
    #[derive(Clone, Default)]
    struct Collect {
        out: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Collect {
        fn open(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }
    }

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut open = self.gate.0.lock().unwrap();
            while !*open {
                open = self.gate.1.wait(open).unwrap();
            }
            self.out.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn write_line(sink: &LineSink, line: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        sink.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_arrives_whole_and_in_each_threads_order() {
        let out = Collect::default();
        out.open();
        let (sink, guard) = LineSink::new(out.clone(), "test-log").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        write_line(
                            &sink,
                            &format!("thread={t} line={i} {}\n", "x".repeat(i % 97)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.out.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let mut words = line.split(' ');
            let t: usize = words.next().unwrap()["thread=".len()..].parse().unwrap();
            let i: usize = words.next().unwrap()["line=".len()..].parse().unwrap();
            assert_eq!(i, next[t], "thread {t} out of order");
            assert_eq!(words.next().unwrap_or(""), "x".repeat(i % 97));
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
        // Gathered: far fewer writes than lines.
        let writes = *out.writes.lock().unwrap();
        assert!(writes < 20_000, "{writes} writes for 20 000 lines");
    }

    #[test]
    fn a_blocked_output_makes_logging_wait_and_loses_nothing() {
        let out = Collect::default();
        let (sink, guard) = LineSink::new(out.clone(), "test-log").unwrap();
        let line = format!("{}\n", "y".repeat(1023));
        let lines = MAX_HELD / line.len() * 3;
        let writer = {
            let sink = sink.clone();
            let line = line.clone();
            std::thread::spawn(move || {
                for _ in 0..lines {
                    write_line(&sink, &line);
                }
            })
        };
        // The output is shut: the logging thread must stop at MAX_HELD held.
        std::thread::sleep(Duration::from_millis(300));
        let went_on = writer.is_finished();
        let held = sink.shared.lock().buf.len();
        // Opened before any assertion: a failing test must not leave the writer blocked.
        out.open();
        assert!(!went_on, "logging went on past MAX_HELD");
        assert!(held <= MAX_HELD + line.len(), "{held} bytes held");
        writer.join().unwrap();
        drop(guard);
        assert_eq!(out.out.lock().unwrap().len(), lines * line.len());
    }

    #[test]
    fn the_guard_writes_what_is_held() {
        let out = Collect::default();
        out.open();
        let (sink, guard) = LineSink::new(out.clone(), "test-log").unwrap();
        write_line(&sink, "last words\n");
        drop(guard);
        assert_eq!(&*out.out.lock().unwrap(), b"last words\n");
    }
}
