//! The spool: holds an upload's bytes until the fields after them are known, then gives
//! them back in chunks. Up to [`IN_MEMORY`] bytes it is one buffer in memory; past that it
//! is an unlinked temporary file. The file's reads and writes run on tokio's blocking
//! pool a [`CHUNK`] at a time, in buffers casegate owns: the file moves into each blocking
//! call and comes back with its result, so nothing else holds it. Each chunk is written
//! while the next one gathers, and read while the one before goes out: one write and one
//! read under way at most. (Handing the pool a chunk costs wake-ups on both sides, which
//! at 64 KiB chunks and one at a time were most of a spooled upload's cost: 256 KiB
//! chunks, overlapped, carry a 32 MiB spooled upload half again as fast.) The file has no
//! name from the start, so it is gone when dropped, however the request ends. Closing it
//! frees its blocks (about 50 ms for 1 GiB on ext4), so a spool dropped inside the
//! runtime closes its file on the blocking pool too.
//!
//! Every buffer is allocated on the calling (runtime) thread: the writer's two chunk
//! buffers take turns (one gathering, one being written), the reader hands out one fresh
//! chunk per read (two alive at most: the one going out and the one read ahead), so a
//! spool holds at most two chunks. Blocking-pool threads come and go; memory they
//! allocated would sit in their allocator arenas (a soak run showed glibc's resident
//! memory creeping up on the spool path while the live heap stayed flat).

use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::task::JoinHandle;

/// Size of the spool's writes and reads.
pub const CHUNK: usize = 256 * 1024;
/// The most bytes a spool holds in memory before it needs its file.
pub const IN_MEMORY: usize = 64 * 1024;

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

/// The spool while it fills. It starts in memory: the bytes are gathered in one buffer
/// while they add up to at most [`CHUNK`], the one buffer a spooling upload holds anyway
/// (one buffer, not the pieces as they came: a client trickling its body a byte at a time
/// would otherwise make tens of thousands of them). Only a file larger than that goes to
/// disk: the temporary file is made then, and what was held is its first bytes. A
/// screenshot never touches the disk or the blocking pool. On disk, each whole chunk is
/// written on the blocking pool while the next one gathers (one write under way at most,
/// waited for before the next starts), so the client's bytes keep coming meanwhile.
pub struct SpoolWriter {
    dir: PathBuf,
    state: Filling,
    len: u64,
}

/// A write under way: gives back the file and the buffer it wrote (None for bytes
/// written as they came).
type Writing = JoinHandle<io::Result<(std::fs::File, Option<Vec<u8>>)>>;

enum Filling {
    /// Everything so far, at most [`IN_MEMORY`] bytes (and as much capacity).
    Memory(Vec<u8>),
    Disk {
        file: Holder,
        /// Bytes gathered until they make a whole [`CHUNK`].
        gathered: Vec<u8>,
    },
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
            // Outgrown: the file starts with what was held, in a whole chunk's buffer.
            let mut gathered = std::mem::take(held);
            gathered.reserve_exact(CHUNK - gathered.len());
            let file = tempfile::tempfile_in(&self.dir)?;
            self.state = Filling::Disk {
                file: Holder::File(file),
                gathered,
            };
        }
        let Filling::Disk { file, gathered } = &mut self.state else {
            return Err(io::Error::other("the spool is not on disk"));
        };
        let mut rest = data;
        while !rest.is_empty() {
            if gathered.is_empty() && rest.len() >= CHUNK {
                let whole = rest.split_to(CHUNK);
                let (mut f, _) = settle(file).await?;
                *file = Holder::Writing(tokio::task::spawn_blocking(move || {
                    f.write_all(&whole)?;
                    Ok((f, None))
                }));
                continue;
            }
            let n = (CHUNK - gathered.len()).min(rest.len());
            gathered.extend_from_slice(&rest.split_to(n));
            if gathered.len() < CHUNK {
                break;
            }
            let (mut f, spare) = settle(file).await?;
            let spare = spare.unwrap_or_else(|| Vec::with_capacity(CHUNK));
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
        let (file, rest) = match &mut self.state {
            Filling::Memory(held) => {
                let held = std::mem::take(held);
                return Ok(SpoolReader {
                    from: Emptying::Memory(Some(Bytes::from(held)).filter(|b| !b.is_empty())),
                    len,
                    remaining: len,
                });
            }
            Filling::Disk { file, gathered } => (settle(file).await?.0, std::mem::take(gathered)),
        };
        let (file, _) = blocking(file, move |f| {
            f.write_all(&rest)?;
            f.seek(SeekFrom::Start(0))
        })
        .await?;
        Ok(SpoolReader {
            from: Emptying::Disk {
                file: Some(file),
                pending: None,
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
        pending: Option<JoinHandle<io::Result<(std::fs::File, Bytes)>>>,
    },
}

impl SpoolReader {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The next chunk; `None` after the last byte. A file shorter than what was written
    /// is an error, never a short upload.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let (file_slot, pending) = match &mut self.from {
            Emptying::Memory(held) => {
                let next = held.take();
                if let Some(p) = &next {
                    self.remaining -= p.len() as u64;
                }
                return Poll::Ready(Ok(next));
            }
            Emptying::Disk { file, pending } => (file, pending),
        };
        loop {
            if let Some(read) = pending.as_mut() {
                let done = match std::pin::Pin::new(read).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r.map_err(io::Error::other).and_then(|r| r),
                };
                *pending = None;
                let (file, chunk) = done?;
                self.remaining -= chunk.len() as u64;
                // Read ahead: the next chunk is read while this one goes out.
                if self.remaining > 0 {
                    *pending = Some(read_chunk(file, self.remaining));
                } else {
                    *file_slot = Some(file);
                }
                return Poll::Ready(Ok(Some(chunk)));
            }
            if self.remaining == 0 {
                return Poll::Ready(Ok(None));
            }
            let Some(file) = file_slot.take() else {
                return Poll::Ready(Err(io::Error::other(
                    "the spool file was lost to an earlier error",
                )));
            };
            *pending = Some(read_chunk(file, self.remaining));
        }
    }
}

/// Reads the next chunk (at most [`CHUNK`] of the `remaining` bytes) on the blocking pool.
fn read_chunk(
    mut file: std::fs::File,
    remaining: u64,
) -> JoinHandle<io::Result<(std::fs::File, Bytes)>> {
    let want = remaining.min(CHUNK as u64) as usize;
    // Allocated here, filled there (see the module's note).
    let mut buf = Vec::with_capacity(want);
    tokio::task::spawn_blocking(move || {
        (&mut file).take(want as u64).read_to_end(&mut buf)?;
        if buf.len() < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spool file is shorter than what was written to it",
            ));
        }
        Ok((file, Bytes::from(buf)))
    })
}

impl Drop for SpoolReader {
    /// A read under way has the file and closes it on the blocking pool when it ends.
    fn drop(&mut self) {
        if let Emptying::Disk { file, .. } = &mut self.from {
            if let Some(file) = file.take() {
                close_off_runtime(file);
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
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| r.poll_chunk(cx)).await.unwrap() {
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
        }
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
        let mut got = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| r.poll_chunk(cx)).await.unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
        }
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
    fn spools_dropped_inside_or_outside_a_runtime_close_their_files() {
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
        // Outside the runtime: closed on the spot.
        drop(reader);
        assert!(!still_open(reader_fd, &reader_target));
        // Inside it: handed to the blocking pool, which has run it once the runtime has
        // shut down.
        rt.block_on(async move { drop(writer) });
        drop(rt);
        assert!(!still_open(writer_fd, &writer_target));
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
        let mut got = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| r.poll_chunk(cx)).await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        got
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
