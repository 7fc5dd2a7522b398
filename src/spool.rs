//! The spool: an unlinked temporary file that holds an upload's bytes until the fields
//! after them are known, then gives them back in chunks. Reads and writes run on tokio's
//! blocking pool one chunk at a time, in buffers casegate owns: the file moves into each
//! blocking call and comes back with its result, so nothing else holds it. The file has
//! no name from the start, so it is gone when dropped, however the request ends.

use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

/// Size of the reads from a spool file.
pub const CHUNK: usize = 64 * 1024;

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

/// The spool while it fills.
pub struct SpoolWriter {
    /// None only after a failed write (the file went with the failed call).
    file: Option<std::fs::File>,
    /// Small pieces gathered until a write is worth a trip to the blocking pool.
    gathered: BytesMut,
    len: u64,
}

impl SpoolWriter {
    /// A new, already unlinked, temporary file in `dir`.
    pub fn create(dir: &Path) -> io::Result<Self> {
        Ok(SpoolWriter {
            file: Some(tempfile::tempfile_in(dir)?),
            gathered: BytesMut::new(),
            len: 0,
        })
    }

    fn take(&mut self) -> io::Result<std::fs::File> {
        self.file
            .take()
            .ok_or_else(|| io::Error::other("the spool file was lost to an earlier error"))
    }

    /// Appends `data`: written at once when it is a whole chunk, else gathered until the
    /// gathered bytes make one.
    pub async fn write(&mut self, data: Bytes) -> io::Result<()> {
        self.len += data.len() as u64;
        let out = if self.gathered.is_empty() && data.len() >= CHUNK {
            data
        } else {
            self.gathered.extend_from_slice(&data);
            if self.gathered.len() < CHUNK {
                return Ok(());
            }
            self.gathered.split().freeze()
        };
        let (file, ()) = blocking(self.take()?, move |f| f.write_all(&out)).await?;
        self.file = Some(file);
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Writes what is gathered and rewinds the file for reading.
    pub async fn finish(mut self) -> io::Result<SpoolReader> {
        let rest = self.gathered.split().freeze();
        let (file, _) = blocking(self.take()?, move |f| {
            f.write_all(&rest)?;
            f.seek(SeekFrom::Start(0))
        })
        .await?;
        Ok(SpoolReader {
            file: Some(file),
            remaining: self.len,
            len: self.len,
            pending: None,
        })
    }
}

/// The spool while it empties: exactly the bytes written, in chunks of up to [`CHUNK`].
pub struct SpoolReader {
    /// None while a read is under way (the file is with it).
    file: Option<std::fs::File>,
    len: u64,
    remaining: u64,
    pending: Option<JoinHandle<io::Result<(std::fs::File, Bytes)>>>,
}

impl SpoolReader {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The next chunk; `None` after the last byte. A file shorter than what was written
    /// is an error, never a short upload.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            if let Some(read) = self.pending.as_mut() {
                let done = match std::pin::Pin::new(read).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r.map_err(io::Error::other).and_then(|r| r),
                };
                self.pending = None;
                let (file, chunk) = done?;
                self.file = Some(file);
                self.remaining -= chunk.len() as u64;
                return Poll::Ready(Ok(Some(chunk)));
            }
            if self.remaining == 0 {
                return Poll::Ready(Ok(None));
            }
            let Some(mut file) = self.file.take() else {
                return Poll::Ready(Err(io::Error::other(
                    "the spool file was lost to an earlier error",
                )));
            };
            let want = self.remaining.min(CHUNK as u64) as usize;
            self.pending = Some(tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(want);
                file.read_exact(&mut buf)?;
                Ok((file, buf.freeze()))
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_back_exactly_what_was_written_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path()).unwrap();
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
    async fn an_empty_spool_ends_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = SpoolWriter::create(dir.path()).unwrap();
        let mut r = w.finish().await.unwrap();
        let first = std::future::poll_fn(|cx| r.poll_chunk(cx)).await.unwrap();
        assert!(first.is_none());
    }
}
