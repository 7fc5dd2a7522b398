//! The spool: holds an upload's bytes until the fields after them are known, then gives
//! them back in chunks. Up to [`IN_MEMORY`] bytes it is one buffer in memory; past that it
//! is an unlinked temporary file, written a [`CHUNK`] or half of one at a time. Writes
//! that may wait for the disk (a new file's, or past what a kept file had) run on tokio's
//! blocking pool, in buffers casegate owns: the file moves into each blocking call and
//! comes back with its result, so nothing else holds it. Each such write, of half a chunk
//! ([`POOL_WRITE`]), is made while the next one gathers: one write under way at most.
//! (Handing the pool a write costs wake-ups on both sides, which at 64 KiB and one at a
//! time were most of a spooled upload's cost; overlapped, they are not.) Writes over a
//! kept file's bytes are made on the calling thread, a whole chunk at a time
//! ([`InPlace`]). Reads are tried there too, taking only what the page cache holds
//! (`RWF_NOWAIT`, [`SpoolReader::poll_chunk`]); a read that would wait for the disk goes
//! to the blocking pool. The file has no name from the start, so nothing is left in the
//! directory however the request ends. A reader's file is kept for the next spool to
//! write over ([`KEEP_FILES`]); a writer's, dropped before it finished, is closed.
//! Closing frees its blocks (about 50 ms for 1 GiB on ext4), so a spool dropped inside
//! the runtime closes its file on the blocking pool.
//!
//! Every buffer is allocated on the calling (runtime) thread: the writer gathers a whole
//! chunk in one buffer for a write made here, or half of one in each of two buffers that
//! take turns (one gathering, one being written on the pool), so it holds one chunk's
//! worth whichever way its writes go, and a spooled upload's memory does not depend on
//! whether it found a kept file (or on the file's size: a file over [`KEEP_BYTES`] is
//! never kept). The reader hands out one fresh chunk per read, so a spool holds at most
//! two chunks. Blocking-pool threads come and go; memory they allocated would sit in
//! their allocator arenas (a soak run showed glibc's resident memory creeping up on the
//! spool path while the live heap stayed flat).

use std::future::Future;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Size of the spool's writes and reads.
pub const CHUNK: usize = 256 * 1024;
/// The most bytes a spool holds in memory before it needs its file.
pub const IN_MEMORY: usize = 64 * 1024;
/// Size of a write on the blocking pool: half a chunk, as two buffers take turns there.
const POOL_WRITE: usize = CHUNK / 2;

/// Runs `f` with the file on the blocking pool and takes the file back.
async fn blocking<T: Send + 'static>(
    file: std::fs::File,
    f: impl FnOnce(&mut std::fs::File) -> io::Result<T> + Send + 'static,
) -> io::Result<(std::fs::File, T)> {
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        f(&mut file).map(|v| (file, v))
    })
    .await
    .map_err(io::Error::other)?
}

/// Closes `file` on the blocking pool when there is a runtime, so freeing a large unlinked
/// file's blocks does not stall a runtime thread; otherwise here.
fn close_off_runtime(file: std::fs::File) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(file))),
        Err(_) => drop(file),
    }
}

/// The most spool files kept for reuse, the most bytes they hold together, and how long
/// one is kept unused.
///
/// A new temporary file per spooled upload costs the kernel its page cache each time:
/// pages allocated for the writes, then freed by the close's truncation. On a virtual
/// machine that hands freed memory back to its host (free page reporting, as on this
/// project's benchmark machines), the next allocation faults the memory back in: a
/// 32 MiB spooled upload spent three times the kernel time of the same upload streamed.
/// A kept file is written over in place, in pages the page cache already has. At most
/// `KEEP_FILES` files and `KEEP_BYTES` of disk (and of page cache, which the kernel may
/// reclaim) stay in use between spooled uploads; a file that does not fit is closed, and
/// so is one unused for `KEEP_IDLE` (so an idle casegate holds no spool file).
const KEEP_FILES: usize = 4;
const KEEP_BYTES: u64 = 128 * 1024 * 1024;
const KEEP_IDLE: Duration = Duration::from_secs(30);

/// Spool files kept for reuse. Unlinked: only this process can reach them, and a reader
/// never reads past the bytes its own upload wrote.
static KEPT: Mutex<Kept> = Mutex::new(Kept {
    files: Vec::new(),
    reaper: None,
});

/// The kept files (at most [`KEEP_FILES`], [`KEEP_BYTES`] together).
struct Kept {
    files: Vec<KeptFile>,
    /// The task that closes files kept too long, while there are any.
    reaper: Option<JoinHandle<()>>,
}

struct KeptFile {
    /// The directory it lives in.
    dir: PathBuf,
    file: std::fs::File,
    /// Its size: what its largest upload wrote.
    size: u64,
    /// When it was kept.
    since: Instant,
}

impl Kept {
    /// The most recently kept file of `dir`, if there is one, with its size.
    fn take(&mut self, dir: &Path) -> Option<(std::fs::File, u64)> {
        let at = self.files.iter().rposition(|k| k.dir == dir)?;
        let kept = self.files.remove(at);
        Some((kept.file, kept.size))
    }

    /// Keeps `file` of `dir`, of `size` bytes, if there is room, made if need be by
    /// files of another directory (left by a reload that changed `spool_dir`); gives back
    /// what is to be closed.
    fn put(
        &mut self,
        dir: PathBuf,
        file: std::fs::File,
        size: u64,
        now: Instant,
    ) -> Vec<std::fs::File> {
        let mut closing = Vec::new();
        loop {
            let held: u64 = self.files.iter().map(|k| k.size).sum();
            if self.files.len() < KEEP_FILES && held.saturating_add(size) <= KEEP_BYTES {
                self.files.push(KeptFile {
                    dir,
                    file,
                    size,
                    since: now,
                });
                return closing;
            }
            match self.files.iter().position(|k| k.dir != dir) {
                Some(at) if size <= KEEP_BYTES => closing.push(self.files.remove(at).file),
                _ => {
                    closing.push(file);
                    return closing;
                }
            }
        }
    }

    /// Takes out the files kept for [`KEEP_IDLE`] or longer by `now`.
    fn expire(&mut self, now: Instant) -> Vec<std::fs::File> {
        let mut gone = Vec::new();
        let mut at = 0;
        while at < self.files.len() {
            if now.saturating_duration_since(self.files[at].since) >= KEEP_IDLE {
                gone.push(self.files.remove(at).file);
            } else {
                at += 1;
            }
        }
        gone
    }
}

fn lock(kept: &Mutex<Kept>) -> MutexGuard<'_, Kept> {
    kept.lock().unwrap_or_else(|e| e.into_inner())
}

/// A kept spool file of `dir`, rewound, with the bytes it already has, or a new unlinked
/// one there (with none).
fn spool_file_in(dir: &Path) -> io::Result<(std::fs::File, u64)> {
    let kept = lock(&KEPT).take(dir);
    match kept {
        Some((mut file, size)) => {
            file.seek(SeekFrom::Start(0))?;
            Ok((file, size))
        }
        None => Ok((tempfile::tempfile_in(dir)?, 0)),
    }
}

/// Keeps a spool file whose last upload wrote `len` bytes to it for the next spooled
/// upload (see [`Kept::put`]) when inside a runtime, where a task can close it once kept
/// too long; what is not kept is closed off the runtime.
fn keep_file(dir: PathBuf, file: std::fs::File, len: u64) {
    keep_in(&KEPT, dir, file, len)
}

fn keep_in(pool: &'static Mutex<Kept>, dir: PathBuf, file: std::fs::File, len: u64) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return drop(file);
    };
    // An earlier, larger upload may have left it longer than this one's bytes.
    let size = file.metadata().map_or(u64::MAX, |m| m.len().max(len));
    let closing = {
        let mut kept = lock(pool);
        let closing = kept.put(dir, file, size, Instant::now());
        if !kept.files.is_empty() && kept.reaper.as_ref().is_none_or(JoinHandle::is_finished) {
            kept.reaper = Some(rt.spawn(reap(pool)));
        }
        closing
    };
    closing.into_iter().for_each(close_off_runtime);
}

/// Closes kept files once unused for [`KEEP_IDLE`]; ends when none is kept.
async fn reap(pool: &'static Mutex<Kept>) {
    loop {
        tokio::time::sleep(KEEP_IDLE / 3).await;
        let (gone, more) = {
            let mut kept = lock(pool);
            let gone = kept.expire(Instant::now());
            let more = !kept.files.is_empty();
            if !more {
                kept.reaper = None;
            }
            (gone, more)
        };
        gone.into_iter().for_each(close_off_runtime);
        if !more {
            return;
        }
    }
}

/// The spool while it fills. It starts in memory: the bytes are gathered in one buffer
/// while they add up to at most [`CHUNK`], the one buffer a spooling upload holds anyway
/// (one buffer, not the pieces as they came: a client trickling its body a byte at a time
/// would otherwise make tens of thousands of them). Only a file larger than that goes to
/// disk: the temporary file is made then, and what was held is its first bytes. A
/// screenshot never touches the disk or the blocking pool. On disk, a write over a kept
/// file's bytes is a whole chunk made here ([`InPlace`]); any other is half a chunk
/// written on the blocking pool while the next half gathers (one write under way at most,
/// waited for before the next starts), so the client's bytes keep coming meanwhile.
pub struct SpoolWriter {
    dir: PathBuf,
    state: Filling,
    len: u64,
    /// [`SLOW_WRITE`], but for tests.
    slow_write: Duration,
}

/// A write under way: gives back the file and the buffer it wrote (None for bytes
/// written as they came).
type Writing = JoinHandle<io::Result<(std::fs::File, Option<Vec<u8>>)>>;

enum Filling {
    /// Everything so far, at most [`IN_MEMORY`] bytes (and as much capacity).
    Memory(Vec<u8>),
    Disk {
        file: Holder,
        /// Bytes gathered until they make the next write ([`InPlace::unit`]).
        gathered: Vec<u8>,
        here: InPlace,
    },
}

/// Which writes are made on the calling thread: those over bytes a kept file already
/// has, whose blocks are allocated and whose pages the page cache most likely still
/// holds (the file was written and read moments ago), so a write is a copy into memory
/// and no wait for the disk. Handing each chunk to the blocking pool costs two thread
/// wake-ups. A write here that takes longer than [`SLOW_WRITE`] (the page cache under
/// pressure, the kernel holding writers back while it flushes) sends the rest of the
/// spool's writes to the pool, so a stalled disk holds up a connection thread at most once
/// per spooled upload.
struct InPlace {
    /// The file's offset of the next write.
    at: u64,
    /// The bytes the file had when this spool took it (none for a new file).
    had: u64,
    /// Longer than this, and the rest goes to the pool.
    slow: Duration,
}

/// See [`InPlace`]: a 256 KiB copy into cached pages takes tens of microseconds.
const SLOW_WRITE: Duration = Duration::from_millis(1);

impl InPlace {
    /// Whether the next `len` bytes are written here.
    fn takes(&self, len: usize) -> bool {
        self.at.saturating_add(len as u64) <= self.had
    }

    /// The size of the next write: a whole chunk here, half of one on the pool.
    fn unit(&self) -> usize {
        if self.takes(CHUNK) {
            CHUNK
        } else {
            POOL_WRITE
        }
    }

    /// Writes `bytes` here; a file that fails is closed off the runtime.
    fn write(&mut self, mut file: std::fs::File, bytes: &[u8]) -> io::Result<std::fs::File> {
        let started = std::time::Instant::now();
        if let Err(e) = file.write_all(bytes) {
            close_off_runtime(file);
            return Err(e);
        }
        if started.elapsed() > self.slow {
            self.had = 0;
        }
        self.at += bytes.len() as u64;
        Ok(file)
    }

    /// Counts `len` bytes written elsewhere (on the pool).
    fn passed(&mut self, len: usize) {
        self.at += len as u64;
    }
}

/// Where the spool file is.
enum Holder {
    File(std::fs::File),
    /// With the write under way.
    Writing(Writing),
    /// Gone with a failed write.
    Lost,
}

impl SpoolWriter {
    /// A new spool; its unlinked temporary file in `dir` is made when the bytes outgrow
    /// memory.
    pub fn new(dir: &Path) -> Self {
        SpoolWriter {
            dir: dir.to_path_buf(),
            state: Filling::Memory(Vec::new()),
            len: 0,
            slow_write: SLOW_WRITE,
        }
    }

    /// Appends `data`: held in memory while the whole fits in one chunk; on disk,
    /// gathered, and each time the gathered bytes make a chunk, that chunk starts being
    /// written (a piece that is a whole chunk by itself, with nothing gathered, is
    /// written as it is).
    pub async fn write(&mut self, data: Bytes) -> io::Result<()> {
        let fits = self.len + data.len() as u64 <= IN_MEMORY as u64;
        self.len += data.len() as u64;
        if let Filling::Memory(held) = &mut self.state {
            if fits {
                let want = held.len() + data.len();
                if held.capacity() < want {
                    // Doubling, but never past one chunk.
                    held.reserve_exact((want * 2).clamp(4096, IN_MEMORY) - held.len());
                }
                held.extend_from_slice(&data);
                return Ok(());
            }
            // Outgrown: the file starts with what was held, in a buffer of its first
            // write's size.
            let mut gathered = std::mem::take(held);
            let (file, had) = spool_file_in(&self.dir)?;
            let here = InPlace {
                at: 0,
                had,
                slow: self.slow_write,
            };
            gathered.reserve_exact(here.unit().saturating_sub(gathered.len()));
            self.state = Filling::Disk {
                file: Holder::File(file),
                gathered,
                here,
            };
        }
        let Filling::Disk {
            file,
            gathered,
            here,
        } = &mut self.state
        else {
            return Err(io::Error::other("the spool is not on disk"));
        };
        let mut rest = data;
        while !rest.is_empty() {
            let unit = here.unit();
            if gathered.is_empty() && gathered.capacity() > unit {
                // The writes go to the pool from here on (past the kept file's bytes, or
                // after a slow one): two buffers of half a chunk, not a whole one and a
                // half.
                gathered.shrink_to(unit);
            }
            if gathered.is_empty() && rest.len() >= unit {
                let whole = rest.split_to(unit);
                let (mut f, _) = settle(file).await?;
                if here.takes(unit) {
                    *file = Holder::File(here.write(f, &whole)?);
                    continue;
                }
                here.passed(unit);
                *file = Holder::Writing(tokio::task::spawn_blocking(move || {
                    f.write_all(&whole)?;
                    Ok((f, None))
                }));
                continue;
            }
            let n = (unit - gathered.len()).min(rest.len());
            gathered.extend_from_slice(&rest.split_to(n));
            if gathered.len() < unit {
                break;
            }
            let (mut f, spare) = settle(file).await?;
            if here.takes(unit) {
                *file = Holder::File(here.write(f, gathered)?);
                gathered.clear();
                continue;
            }
            here.passed(unit);
            let spare = spare.unwrap_or_else(|| Vec::with_capacity(unit));
            let mut full = std::mem::replace(gathered, spare);
            *file = Holder::Writing(tokio::task::spawn_blocking(move || {
                f.write_all(&full)?;
                full.clear();
                Ok((f, Some(full)))
            }));
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Whether the bytes went to disk (more than one chunk of them).
    pub fn on_disk(&self) -> bool {
        matches!(self.state, Filling::Disk { .. })
    }

    /// Ends the writing: the bytes held, or the file with everything written and rewound
    /// for reading.
    pub async fn finish(mut self) -> io::Result<SpoolReader> {
        let len = self.len;
        let (mut file, rest, mut here) =
            match std::mem::replace(&mut self.state, Filling::Memory(Vec::new())) {
                Filling::Memory(held) => {
                    return Ok(SpoolReader {
                        from: Emptying::Memory(Some(Bytes::from(held)).filter(|b| !b.is_empty())),
                        len,
                        remaining: len,
                    });
                }
                Filling::Disk {
                    file,
                    gathered,
                    here,
                } => (file, gathered, here),
            };
        let file = settle(&mut file).await?.0;
        let file = if rest.is_empty() {
            file
        } else if here.takes(rest.len()) {
            here.write(file, &rest)?
        } else {
            blocking(file, move |f| f.write_all(&rest)).await?.0
        };
        Ok(SpoolReader {
            from: Emptying::Disk {
                file: Some(file),
                pending: None,
                nowait: true,
                dir: std::mem::take(&mut self.dir),
            },
            remaining: len,
            len,
        })
    }
}

/// The file back from the write under way (waiting for it, and with the emptied buffer
/// it wrote, if it was one of the spool's), or as it was.
async fn settle(file: &mut Holder) -> io::Result<(std::fs::File, Option<Vec<u8>>)> {
    match std::mem::replace(file, Holder::Lost) {
        Holder::File(f) => Ok((f, None)),
        Holder::Writing(w) => w.await.map_err(io::Error::other)?,
        Holder::Lost => Err(io::Error::other(
            "the spool file was lost to an earlier error",
        )),
    }
}

impl Drop for SpoolWriter {
    /// A write under way has the file and closes it on the blocking pool when it ends.
    fn drop(&mut self) {
        if let Filling::Disk {
            file: Holder::File(file),
            ..
        } = std::mem::replace(&mut self.state, Filling::Memory(Vec::new()))
        {
            close_off_runtime(file);
        }
    }
}

/// The spool while it empties: exactly the bytes written, in chunks of up to [`CHUNK`].
pub struct SpoolReader {
    from: Emptying,
    len: u64,
    remaining: u64,
}

enum Emptying {
    /// The bytes held, until handed out.
    Memory(Option<Bytes>),
    Disk {
        /// None while a read is under way (the file is with it).
        file: Option<std::fs::File>,
        /// A read on the blocking pool, of bytes the page cache did not have.
        pending: Option<JoinHandle<io::Result<(std::fs::File, Bytes)>>>,
        /// Whether the file's reads may be tried on the calling thread (`RWF_NOWAIT`);
        /// off for good once the file system says it cannot.
        nowait: bool,
        /// Where the file lives, to keep it for the next spool.
        dir: PathBuf,
    },
}

impl SpoolReader {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The next chunk; `None` after the last byte. A file shorter than what was written
    /// is an error, never a short upload.
    ///
    /// A chunk the page cache holds (a spool's file was written moments ago, so nearly
    /// always) is read here, on the calling thread, with `RWF_NOWAIT`: the kernel copies
    /// it or says it would have to wait for the disk. Only then does the read go to the
    /// blocking pool. Handing each read to the pool cost two thread wake-ups, which on a
    /// 32 MiB spooled upload (128 reads) weighed more than the reads themselves.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let (file_slot, pending, nowait) = match &mut self.from {
            Emptying::Memory(held) => {
                let next = held.take();
                if let Some(p) = &next {
                    self.remaining -= p.len() as u64;
                }
                return Poll::Ready(Ok(next));
            }
            Emptying::Disk {
                file,
                pending,
                nowait,
                ..
            } => (file, pending, nowait),
        };
        loop {
            // The file back from the pool, or from a read here, with the chunk read.
            let (file, chunk) = match pending.as_mut() {
                Some(read) => {
                    let done = match std::pin::Pin::new(read).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r.map_err(io::Error::other).and_then(|r| r),
                    };
                    *pending = None;
                    done?
                }
                None => {
                    if self.remaining == 0 {
                        return Poll::Ready(Ok(None));
                    }
                    let Some(file) = file_slot.take() else {
                        return Poll::Ready(Err(io::Error::other(
                            "the spool file was lost to an earlier error",
                        )));
                    };
                    let at = self.len - self.remaining;
                    let want = self.remaining.min(CHUNK as u64) as usize;
                    let cached = if *nowait {
                        read_cached(&file, at, want)?
                    } else {
                        Cached::Unsupported
                    };
                    match cached {
                        Cached::Read(chunk) => (file, chunk),
                        Cached::NotHeld | Cached::Unsupported => {
                            *nowait &= matches!(cached, Cached::NotHeld);
                            *pending = Some(read_chunk(file, at, want));
                            continue;
                        }
                    }
                }
            };
            self.remaining -= chunk.len() as u64;
            *file_slot = Some(file);
            return Poll::Ready(Ok(Some(chunk)));
        }
    }
}

/// What a read that must not wait found.
enum Cached {
    /// Bytes from the page cache: all that was asked for, or as many as it held.
    Read(Bytes),
    /// Not in the page cache: the read would wait for the disk.
    NotHeld,
    /// The file system cannot say (no `RWF_NOWAIT` for reads).
    Unsupported,
}

/// Reads up to `want` bytes at `at` from the page cache, never waiting for the disk.
fn read_cached(file: &std::fs::File, at: u64, want: usize) -> io::Result<Cached> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    // Zeroed: the kernel fills it, but a slice to read into must be initialised.
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        let mut slice = [io::IoSliceMut::new(&mut buf[got..])];
        match preadv2(file, &mut slice, at + got as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(shorter()),
            Ok(n) => got += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) if got > 0 => break,
            Err(Errno::AGAIN) => return Ok(Cached::NotHeld),
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) if got == 0 => {
                return Ok(Cached::Unsupported)
            }
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(got);
    Ok(Cached::Read(Bytes::from(buf)))
}

fn shorter() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the spool file is shorter than what was written to it",
    )
}

/// Reads the `want` bytes at `at` on the blocking pool.
fn read_chunk(
    file: std::fs::File,
    at: u64,
    want: usize,
) -> JoinHandle<io::Result<(std::fs::File, Bytes)>> {
    use std::os::unix::fs::FileExt;
    // Allocated here, filled there (see the module's note).
    let mut buf = vec![0u8; want];
    tokio::task::spawn_blocking(move || {
        file.read_exact_at(&mut buf, at)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => shorter(),
                _ => e,
            })?;
        Ok((file, Bytes::from(buf)))
    })
}

impl Drop for SpoolReader {
    /// The file is kept for the next spool ([`keep_file`]); a read under way has it and
    /// closes it on the blocking pool when it ends.
    fn drop(&mut self) {
        if let Emptying::Disk { file, dir, .. } = &mut self.from {
            if let Some(file) = file.take() {
                keep_file(std::mem::take(dir), file, self.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_back_exactly_what_was_written_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(dir.path());
        let data: Vec<u8> = (0..(CHUNK * 2 + 1234))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for part in data.chunks(10_000) {
            w.write(Bytes::copy_from_slice(part)).await.unwrap();
        }
        assert_eq!(w.size(), data.len() as u64);
        let mut r = w.finish().await.unwrap();
        assert_eq!(r.size(), data.len() as u64);
        let (got, sizes) = read_chunks(&mut r).await;
        assert_eq!(got, data);
        assert_eq!(sizes, vec![CHUNK, CHUNK, 1234]);
        // Nothing is left in the directory: the file never had a name.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn pieces_of_every_size_around_a_chunk_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(dir.path());
        let sizes = [
            1,
            CHUNK,
            CHUNK * 2 + 3,
            5,
            CHUNK - 6,
            0,
            CHUNK + 1,
            CHUNK,
            7,
        ];
        let total: usize = sizes.iter().sum();
        let data: Vec<u8> = (0..total).map(|i| (i * 13 % 253) as u8).collect();
        let mut at = 0;
        for n in sizes {
            w.write(Bytes::copy_from_slice(&data[at..at + n]))
                .await
                .unwrap();
            at += n;
        }
        let mut r = w.finish().await.unwrap();
        assert_eq!(r.size(), total as u64);
        let (got, chunks) = read_chunks(&mut r).await;
        assert!(chunks.iter().all(|&n| n > 0 && n <= CHUNK), "{chunks:?}");
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_file_shorter_than_what_was_written_is_an_error_not_a_short_upload() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(dir.path());
        w.write(Bytes::from(vec![7u8; CHUNK + 10])).await.unwrap();
        assert!(w.on_disk());
        let mut r = w.finish().await.unwrap();
        // As if the file had lost its last ten bytes.
        r.remaining += 10;
        r.len += 10;
        let first = std::future::poll_fn(|cx| r.poll_chunk(cx)).await.unwrap();
        assert_eq!(first.map(|c| c.len()), Some(CHUNK));
        let err = std::future::poll_fn(|cx| r.poll_chunk(cx))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// What `/proc/self/fd/N` points at for the spool's file (None without procfs).
    fn fd_target(file: &std::fs::File) -> (i32, Option<std::path::PathBuf>) {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        (fd, std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
    }

    /// Whether descriptor `fd` still points at `target` (another test may reuse the
    /// number, never for this unlinked file).
    fn still_open(fd: i32, target: &Option<std::path::PathBuf>) -> bool {
        target.is_some() && std::fs::read_link(format!("/proc/self/fd/{fd}")).ok() == *target
    }

    #[test]
    fn a_read_spool_keeps_its_file_and_a_dropped_writer_closes_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (writer, reader) = rt.block_on(async {
            let mut w = SpoolWriter::new(dir.path());
            w.write(Bytes::from(vec![1u8; CHUNK + 3])).await.unwrap();
            let r = w.finish().await.unwrap();
            let mut w = SpoolWriter::new(dir.path());
            w.write(Bytes::from(vec![2u8; CHUNK + 3])).await.unwrap();
            // The file back from its write, as between two chunks.
            if let Filling::Disk { file, .. } = &mut w.state {
                let (f, _) = settle(file).await.unwrap();
                *file = Holder::File(f);
            }
            (w, r)
        });
        let Emptying::Disk {
            file: Some(reader_file),
            ..
        } = &reader.from
        else {
            panic!("the reader is not on disk");
        };
        let Filling::Disk {
            file: Holder::File(writer_file),
            ..
        } = &writer.state
        else {
            panic!("the writer is not on disk, or its file is in a write");
        };
        let (reader_fd, reader_target) = fd_target(reader_file);
        let (writer_fd, writer_target) = fd_target(writer_file);
        assert!(still_open(reader_fd, &reader_target) || reader_target.is_none());
        // Dropped inside a runtime, the reader's file is kept, still open, for the next
        // spool in its directory.
        rt.block_on(async move { drop(reader) });
        assert!(still_open(reader_fd, &reader_target) || reader_target.is_none());
        let (taken, _) = spool_file_in(dir.path()).unwrap();
        assert_eq!(fd_target(&taken), (reader_fd, reader_target.clone()));
        // Outside one (no task could close it later), it is closed on the spot.
        let reader = rt.block_on(async {
            let mut w = SpoolWriter::new(dir.path());
            w.write(Bytes::from(vec![3u8; CHUNK + 3])).await.unwrap();
            w.finish().await.unwrap()
        });
        let Emptying::Disk {
            file: Some(file), ..
        } = &reader.from
        else {
            panic!("the reader is not on disk");
        };
        let (fd, target) = fd_target(file);
        drop(reader);
        assert!(!still_open(fd, &target));
        // A writer dropped inside the runtime (an upload that failed while spooling)
        // hands its file to the blocking pool to be closed, which has run it once the
        // runtime has shut down.
        rt.block_on(async move { drop(writer) });
        drop(rt);
        assert!(!still_open(writer_fd, &writer_target));
        drop(taken);
        assert!(!still_open(reader_fd, &reader_target));
    }

    #[tokio::test]
    async fn reads_the_page_cache_does_not_answer_go_to_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..CHUNK * 2 + 99).map(|i| (i * 5 % 239) as u8).collect();
        let mut w = SpoolWriter::new(dir.path());
        w.write(Bytes::copy_from_slice(&data)).await.unwrap();
        let mut r = w.finish().await.unwrap();
        // As on a file system without `RWF_NOWAIT` reads: every read on the pool.
        let Emptying::Disk { nowait, .. } = &mut r.from else {
            panic!("the reader is not on disk");
        };
        *nowait = false;
        let (got, sizes) = read_chunks(&mut r).await;
        assert_eq!(got, data);
        assert_eq!(sizes, vec![CHUNK, CHUNK, 99]);
        // A file shorter than what was written fails there too.
        let mut w = SpoolWriter::new(dir.path());
        w.write(Bytes::from(vec![9u8; CHUNK + 10])).await.unwrap();
        let mut r = w.finish().await.unwrap();
        if let Emptying::Disk { nowait, .. } = &mut r.from {
            *nowait = false;
        }
        r.remaining += CHUNK as u64 * 8;
        r.len += CHUNK as u64 * 8;
        let mut err = None;
        for _ in 0..16 {
            match std::future::poll_fn(|cx| r.poll_chunk(cx)).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::UnexpectedEof));
    }

    #[tokio::test]
    async fn a_kept_file_gives_back_only_what_its_new_upload_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let long: Vec<u8> = (0..CHUNK * 3).map(|i| (i * 7 % 251) as u8).collect();
        let short: Vec<u8> = (0..CHUNK + 17).map(|i| (i * 11 % 241) as u8).collect();
        let mut w = SpoolWriter::new(dir.path());
        w.write(Bytes::copy_from_slice(&long)).await.unwrap();
        let mut r = w.finish().await.unwrap();
        assert_eq!(read_all(&mut r).await, long);
        let Emptying::Disk {
            file: Some(file), ..
        } = &r.from
        else {
            panic!("the reader is not on disk");
        };
        let first = fd_target(file);
        drop(r);
        // The next spool writes over the longer file's first bytes; what it reads back
        // ends where its own bytes end.
        let mut w = SpoolWriter::new(dir.path());
        w.write(Bytes::copy_from_slice(&short)).await.unwrap();
        let mut r = w.finish().await.unwrap();
        let Emptying::Disk {
            file: Some(file), ..
        } = &r.from
        else {
            panic!("the reader is not on disk");
        };
        assert_eq!(fd_target(file), first);
        assert_eq!(r.size(), short.len() as u64);
        assert_eq!(read_all(&mut r).await, short);
    }

    /// Spools `data` in pieces of `piece` bytes into `dir` and reads it back: after each
    /// piece, whether the last write went to the blocking pool. Writes here are never
    /// slow (however slowly this machine writes) until the piece `slow_from`, when any is.
    /// Checks, after each piece, that the writer holds one chunk's worth of buffers: one
    /// of a whole chunk for writes made here, two of half a chunk for the pool's.
    async fn spooled(dir: &Path, data: &[u8], piece: usize, slow_from: Option<usize>) -> Vec<bool> {
        let mut w = SpoolWriter::new(dir);
        w.slow_write = Duration::MAX;
        let mut on_pool = Vec::new();
        for (i, p) in data.chunks(piece).enumerate() {
            if slow_from == Some(i) {
                let Filling::Disk { here, .. } = &mut w.state else {
                    panic!("the spool is not on disk");
                };
                here.slow = Duration::ZERO;
            }
            w.write(Bytes::copy_from_slice(p)).await.unwrap();
            let (pool, held, most) = match &w.state {
                Filling::Memory(held) => (false, held, IN_MEMORY),
                Filling::Disk { file, gathered, .. } => {
                    let pool = matches!(file, Holder::Writing(_));
                    (pool, gathered, if pool { POOL_WRITE } else { CHUNK })
                }
            };
            assert!(held.capacity() <= most, "{} at piece {i}", held.capacity());
            on_pool.push(pool);
        }
        let mut r = w.finish().await.unwrap();
        assert_eq!(read_all(&mut r).await, data);
        on_pool
    }

    #[tokio::test]
    async fn writes_over_a_kept_files_bytes_are_made_here_and_the_rest_on_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let data =
            |n: usize, k: usize| -> Vec<u8> { (0..n).map(|i| (i * k % 253) as u8).collect() };
        // A new file: every chunk on the pool.
        let first = spooled(dir.path(), &data(CHUNK * 3, 3), CHUNK, None).await;
        assert_eq!(first, [true; 3]);
        // Its next spool writes over its three chunks here; the fourth, past them, on the
        // pool.
        let second = spooled(dir.path(), &data(CHUNK * 4 + 10, 7), CHUNK, None).await;
        assert_eq!(second, [false, false, false, true, true]);
        // Gathered from half chunks: the same. A slow write here (the second chunk's)
        // sends the rest to the pool, half a chunk at a time.
        let third = spooled(dir.path(), &data(CHUNK * 3 + 7, 11), CHUNK / 2, Some(2)).await;
        assert_eq!(third, [false, false, false, false, true, true, true]);
        // From quarter chunks: a write here every four pieces over the kept file's four
        // chunks, past them one on the pool every two.
        let fourth = spooled(dir.path(), &data(CHUNK * 5 + 10, 13), CHUNK / 4, None).await;
        let mut want = [false; 21];
        want[17..].fill(true);
        assert_eq!(fourth, want);
    }

    #[test]
    fn files_are_kept_up_to_a_count_a_size_and_a_time_for_their_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let file = || tempfile::tempfile_in(dir.path()).unwrap();
        let t0 = Instant::now();
        let mut kept = Kept {
            files: Vec::new(),
            reaper: None,
        };
        assert!(kept.take(&a).is_none());
        // Too large: given back to be closed.
        assert_eq!(kept.put(a.clone(), file(), KEEP_BYTES + 1, t0).len(), 1);
        assert!(kept.put(a.clone(), file(), KEEP_BYTES / 2, t0).is_empty());
        // More than the bytes left: given back, unless files of another directory make room.
        assert_eq!(kept.put(a.clone(), file(), KEEP_BYTES / 2 + 1, t0).len(), 1);
        assert_eq!(kept.put(b.clone(), file(), KEEP_BYTES / 2 + 1, t0).len(), 1);
        assert!(kept.take(&a).is_none());
        assert!(kept.take(&b).is_some());
        for _ in 0..KEEP_FILES {
            assert!(kept.put(b.clone(), file(), 1, t0).is_empty());
        }
        // Full of b's: one more of b's is given back itself; one of a's makes room by
        // giving back one of b's.
        let extra = file();
        let extra_fd = fd_target(&extra);
        let back = kept.put(b.clone(), extra, 1, t0);
        assert_eq!(back.iter().map(fd_target).collect::<Vec<_>>(), [extra_fd]);
        assert_eq!(kept.put(a.clone(), file(), 1, t0).len(), 1);
        assert!(kept.take(&a).is_some());
        // Kept for KEEP_IDLE unused: taken out to be closed; a later one stays.
        let later = t0 + KEEP_IDLE / 2;
        assert!(kept.put(b.clone(), file(), 1, later).is_empty());
        assert!(kept
            .expire(t0 + KEEP_IDLE - Duration::from_millis(1))
            .is_empty());
        assert_eq!(kept.expire(t0 + KEEP_IDLE).len(), KEEP_FILES - 1);
        assert_eq!(kept.files.len(), 1);
        assert_eq!(kept.expire(later + KEEP_IDLE).len(), 1);
        assert!(kept.take(&b).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn kept_files_are_closed_once_unused_for_long_enough() {
        // A pool of its own, so that other tests' files and reapers stay out of it.
        static POOL: Mutex<Kept> = Mutex::new(Kept {
            files: Vec::new(),
            reaper: None,
        });
        let dir = tempfile::tempdir().unwrap();
        let first = tempfile::tempfile_in(dir.path()).unwrap();
        let second = tempfile::tempfile_in(dir.path()).unwrap();
        let (first_at, second_at) = (fd_target(&first), fd_target(&second));
        keep_in(&POOL, dir.path().to_path_buf(), first, 1);
        tokio::time::sleep(KEEP_IDLE / 2).await;
        keep_in(&POOL, dir.path().to_path_buf(), second, 1);
        // The reaper looks every KEEP_IDLE / 3 (the clock is paused: no real wait); the
        // close itself runs on the blocking pool.
        async fn closed(at: &(i32, Option<std::path::PathBuf>)) -> bool {
            for _ in 0..200 {
                if !still_open(at.0, &at.1) {
                    return true;
                }
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        }
        tokio::time::sleep(KEEP_IDLE / 2 + KEEP_IDLE / 3).await;
        assert!(closed(&first_at).await || first_at.1.is_none());
        assert!(still_open(second_at.0, &second_at.1) || second_at.1.is_none());
        tokio::time::sleep(KEEP_IDLE).await;
        assert!(closed(&second_at).await || second_at.1.is_none());
        // With nothing kept, the reaper has ended.
        tokio::time::sleep(KEEP_IDLE).await;
        assert!(lock(&POOL).files.is_empty());
        assert!(lock(&POOL).reaper.is_none());
    }

    #[tokio::test]
    async fn an_empty_spool_ends_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = SpoolWriter::new(dir.path());
        let mut r = w.finish().await.unwrap();
        let first = std::future::poll_fn(|cx| r.poll_chunk(cx)).await.unwrap();
        assert!(first.is_none());
    }

    async fn read_all(r: &mut SpoolReader) -> Vec<u8> {
        read_chunks(r).await.0
    }

    /// Everything `r` gives, and the size of each chunk it gave it in.
    async fn read_chunks(r: &mut SpoolReader) -> (Vec<u8>, Vec<usize>) {
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| r.poll_chunk(cx)).await.unwrap() {
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
        }
        (got, sizes)
    }

    #[tokio::test]
    async fn a_file_of_one_chunk_stays_in_memory_and_a_larger_one_goes_to_disk() {
        // A directory that does not exist: only a spool that goes to disk notices.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let data: Vec<u8> = (0..IN_MEMORY).map(|i| (i * 31 % 256) as u8).collect();
        let mut w = SpoolWriter::new(&missing);
        for part in data.chunks(1000) {
            w.write(Bytes::copy_from_slice(part)).await.unwrap();
        }
        assert!(!w.on_disk());
        let mut r = w.finish().await.unwrap();
        assert_eq!(r.size(), IN_MEMORY as u64);
        assert_eq!(read_all(&mut r).await, data);

        // A byte at a time: one buffer, never more than a chunk of it.
        let mut w = SpoolWriter::new(&missing);
        for b in &data {
            w.write(Bytes::copy_from_slice(std::slice::from_ref(b)))
                .await
                .unwrap();
            assert!(matches!(&w.state, Filling::Memory(v) if v.capacity() <= IN_MEMORY));
        }
        let mut r = w.finish().await.unwrap();
        assert_eq!(read_all(&mut r).await, data);

        // One byte more and the spool needs its file.
        let mut w = SpoolWriter::new(&missing);
        w.write(Bytes::copy_from_slice(&data)).await.unwrap();
        let err = w.write(Bytes::from_static(b"x")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        // In a directory that exists, the bytes held come first in the file.
        let mut w = SpoolWriter::new(dir.path());
        w.write(Bytes::copy_from_slice(&data[..100])).await.unwrap();
        w.write(Bytes::copy_from_slice(&data)).await.unwrap();
        assert!(w.on_disk());
        let mut r = w.finish().await.unwrap();
        let mut want = data[..100].to_vec();
        want.extend_from_slice(&data);
        assert_eq!(read_all(&mut r).await, want);
    }
}
