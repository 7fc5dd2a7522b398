//! casegate's SQLite VFS: a VFS over SQLite's default one (`unix`) that writes a commit's
//! WAL frames with one `pwrite`, where SQLite makes two per frame (the frame's 24-byte
//! header, then its page). A crate of its own because it is casegate's only `unsafe`
//! code (SQLite's C interface): casegate itself stays `#![forbid(unsafe_code)]`.
//!
//! With a new file per upload, the ledger's commits write about 2.5 frames per upload,
//! five `pwrite`s, and each is a system call into the file system (ext4's write path, the
//! inode's lock, a page-cache look-up per page touched): a third of the ledger thread's
//! time (casegate's bench/RESULTS.md, the seventeenth round). Here a WAL file's writes that follow
//! one another are gathered in memory and written together, as soon as the frame that
//! ends a transaction (its header carries the database size: SQLite's commit mark) is
//! complete. Nothing else changes: the same bytes reach the same offsets, in the same
//! order with respect to everything SQLite does next, so SQLite's crash recovery sees
//! what it would have seen.
//!
//! What must hold, and how it does:
//! - **A commit's frames are in the file before any other connection can see the
//!   commit.** SQLite publishes a commit by writing the WAL index's header, after the
//!   commit frame: that frame's write flushes the gathered bytes (and fails the commit
//!   if they cannot be written, as SQLite's own write would). As a backstop, the main
//!   database file's `xShmBarrier`, which SQLite calls between the two copies of the
//!   index header it writes, flushes whatever its WAL still holds (the frame headers
//!   SQLite rewrites after a transaction that overwrote its own frames, a write with no
//!   commit mark after it).
//! - **This connection reads what it wrote.** Every other operation on the WAL file
//!   (read, size, sync, truncate, file control, close) flushes first.
//! - **Memory stays bounded.** A transaction larger than [`GATHER_AT_MOST`] (a migration
//!   rebuilding a table) is written every [`GATHER_AT_MOST`] bytes, and a buffer larger
//!   than [`KEEP_CAPACITY`] is given back once written.
//!
//! Before it registers, it wraps SQLite's page cache (the `pcache` module): a
//! transaction's end no longer walks the whole cache after a B-tree split out of order.
//!
//! It also reads the WAL index header for casegate ([`wal_index_header`]): whether any
//! connection committed since it last looked, without a statement or a lock.
//!
//! Only the main database file and its WAL are wrapped; every other file (temporary
//! files, the rollback journal of a file that cannot use WAL) is the `unix` VFS's own.
//!
//! Safety: SQLite gives [`open`] `szOsFile` bytes for each file (the wrapper's head, then
//! the parent's file), calls a file's methods only between a successful `xOpen` and its
//! `xClose`, and one at a time (a connection is used by one thread at a time, and each
//! connection has files of its own). A WAL file and its database file are the same
//! connection's: SQLite opens the WAL after the database file and closes it before.
#![deny(rust_2018_idioms)]
#![warn(clippy::all)]

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

mod pcache;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub const NAME: &CStr = c"casegate-wal";

/// A frame header's size (SQLite's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;
/// SQLite's smallest page.
const MIN_PAGE: usize = 512;
/// The most bytes a WAL file gathers before it writes them.
const GATHER_AT_MOST: usize = 1 << 20;
/// The buffer kept between commits: a commit of a few rows is tens of KiB; what a large
/// transaction grew is given back.
const KEEP_CAPACITY: usize = 256 << 10;
/// The most bytes written by one call of the parent's `xWrite`: the `unix` VFS writes
/// at most 128 KiB - 1 per call (it masks the length), and reports a longer write as a
/// full disk.
const PIECE: usize = 120 << 10;

/// Registers the VFS (once per process) and gives its name; Err when SQLite has no
/// default VFS to wrap (then the caller opens files with SQLite's own).
pub fn register() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // The page cache is wrapped first: looking the parent up initialises SQLite,
            // after which its page cache can no longer be set.
            if let Err(e) = pcache::install() {
                tracing::debug!(reason = %e, "SQLite's page cache is not wrapped");
            }
            // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are thread-safe (SQLite is
            // built thread-safe). The parent is never unregistered, so the pointer stays
            // valid; the new VFS is leaked, so SQLite may keep its pointer forever.
            unsafe {
                let parent = ffi::sqlite3_vfs_find(ptr::null());
                if parent.is_null() {
                    return Err("SQLite has no default VFS".to_string());
                }
                let head = HEAD as c_int;
                let vfs = Box::into_raw(Box::new(ffi::sqlite3_vfs {
                    szOsFile: head + (*parent).szOsFile,
                    pNext: ptr::null_mut(),
                    zName: NAME.as_ptr(),
                    xOpen: Some(open),
                    ..*parent
                }));
                PARENT.get_or_init(|| Parent(parent));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("cannot register SQLite's VFS {NAME:?}: error {rc}")),
                }
            }
        })
        .clone()
        .map(|()| NAME)
}

/// The VFS wrapped.
struct Parent(*mut ffi::sqlite3_vfs);
// SAFETY: the pointer is to SQLite's static `unix` VFS, which SQLite itself uses from
// every thread.
unsafe impl Send for Parent {}
unsafe impl Sync for Parent {}
static PARENT: OnceLock<Parent> = OnceLock::new();

/// Where the parent's file starts in a wrapped one: after SQLite's file object (its
/// methods ours) and what each kind keeps.
const HEAD: usize = {
    let (db, wal) = (
        std::mem::size_of::<DbFile>(),
        std::mem::size_of::<WalFile>(),
    );
    let most = if db > wal { db } else { wal };
    // The parent's file holds pointers and 64-bit integers.
    most.next_multiple_of(16)
};

/// A main database file.
#[repr(C)]
struct DbFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Its WAL file, while SQLite holds it open (SQLite opens it after the database file
    /// and closes it before).
    wal: *mut WalFile,
    /// The first region of its shared memory (the WAL index, its header first), while
    /// mapped; else null.
    shm0: *const u32,
}

/// A WAL file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// The database file it belongs to, when that is wrapped too (else null).
    db: *mut DbFile,
    gathered: *mut Gathered,
}

/// A WAL file's bytes written by SQLite and not yet by the parent.
#[derive(Default)]
struct Gathered {
    /// Where `bytes` go in the file.
    start: i64,
    bytes: Vec<u8>,
    /// After a frame header: whether it marks a commit (its page comes next).
    header: Option<bool>,
    /// A backstop flush failed: SQLite may have published frames not written, so every
    /// later operation on the file fails.
    broken: bool,
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Parent(parent)) = PARENT.get() else {
        return ffi::SQLITE_ERROR;
    };
    let parent = *parent;
    let Some(parent_open) = (*parent).xOpen else {
        return ffi::SQLITE_ERROR;
    };
    let main_db = flags & ffi::SQLITE_OPEN_MAIN_DB != 0;
    let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
    if name.is_null() || !(main_db || wal) {
        // Not wrapped: the parent's file fills the start of the space (it is smaller).
        return parent_open(parent, name, file, flags, out_flags);
    }
    let inner = file.cast::<u8>().add(HEAD).cast::<ffi::sqlite3_file>();
    let rc = parent_open(parent, name, inner, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        if !(*inner).pMethods.is_null() {
            if let Some(close) = (*(*inner).pMethods).xClose {
                close(inner);
            }
        }
        (*file).pMethods = ptr::null();
        return rc;
    }
    let inner_methods = &*(*inner).pMethods;
    if main_db {
        let methods = if inner_methods.iVersion >= 3 && inner_methods.xShmMap.is_some() {
            &DB_METHODS
        } else {
            &DB_METHODS_NO_SHM
        };
        ptr::write(
            file.cast::<DbFile>(),
            DbFile {
                base: ffi::sqlite3_file { pMethods: methods },
                inner,
                wal: ptr::null_mut(),
                shm0: ptr::null(),
            },
        );
        return ffi::SQLITE_OK;
    }
    let me = file.cast::<WalFile>();
    let db = ffi::sqlite3_database_file_object(name);
    let db = if !db.is_null() && ptr::eq((*db).pMethods, &DB_METHODS) {
        db.cast::<DbFile>()
    } else {
        ptr::null_mut()
    };
    ptr::write(
        me,
        WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            inner,
            db,
            gathered: Box::into_raw(Box::default()),
        },
    );
    if !db.is_null() {
        (*db).wal = me;
    }
    ffi::SQLITE_OK
}

/// The parent's file under a wrapped one (both kinds keep it second).
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    (*file.cast::<DbFile>()).inner
}

/// The parent's method `$m` of a wrapped file, called with `$args`; `$missing` when the
/// parent has none.
macro_rules! forward {
    ($file:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {{
        let inner = inner($file);
        match (*(*inner).pMethods).$m {
            Some(f) => f(inner $(, $arg)*),
            None => $missing,
        }
    }};
}

// The database file's methods: the parent's, and a flush of its WAL at the barrier.

unsafe extern "C" fn db_close(file: *mut ffi::sqlite3_file) -> c_int {
    let db = file.cast::<DbFile>();
    if !(*db).wal.is_null() {
        (*(*db).wal).db = ptr::null_mut();
    }
    forward!(file, xClose, ffi::SQLITE_OK)
}

unsafe extern "C" fn db_shm_barrier(file: *mut ffi::sqlite3_file) {
    let wal = (*file.cast::<DbFile>()).wal;
    if !wal.is_null() {
        let gathered = &mut *(*wal).gathered;
        if !gathered.bytes.is_empty() && flush((*wal).inner, gathered) != ffi::SQLITE_OK {
            gathered.broken = true;
            tracing::error!(
                "the ledger's WAL file could not be written after SQLite's commit; every \
                 later ledger operation fails until casegate restarts"
            );
        }
    }
    forward!(file, xShmBarrier, ())
}

unsafe extern "C" fn db_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let rc = forward!(file, xShmMap, ffi::SQLITE_IOERR, page, size, extend, out);
    if page == 0 {
        let mapped = rc == ffi::SQLITE_OK && !out.is_null() && !(*out).is_null();
        let enough = usize::try_from(size).is_ok_and(|s| s >= 2 * WAL_INDEX_HEADER * 4);
        (*file.cast::<DbFile>()).shm0 = if mapped && enough {
            (*out).cast::<u32>().cast_const()
        } else {
            ptr::null()
        };
    }
    rc
}

unsafe extern "C" fn db_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    (*file.cast::<DbFile>()).shm0 = ptr::null();
    forward!(file, xShmUnmap, ffi::SQLITE_OK, delete)
}

/// The WAL index header's size in 32-bit words (SQLite's `WalIndexHdr`, 48 bytes: its
/// change counter, the last valid frame, the database size in pages, the frame checksum,
/// the salts, its own checksum). The index holds two copies, one after the other.
pub const WAL_INDEX_HEADER: usize = 12;

/// The WAL index header of `conn`'s main database, read from the shared memory where
/// every connection to the file (in this process or another) publishes its commits: a
/// commit appends frames and rewrites the header (the last frame and the frame checksum
/// change; a WAL started again has new salts), so while the header reads the same, no
/// connection committed. Read without a lock or a transaction (SQLite's readers read it
/// so too): about a hundred instructions, where `PRAGMA data_version` runs a statement
/// in a read transaction, whose lock on the WAL index costs two `fcntl` calls.
///
/// `None` when it cannot be read here: `conn` did not open its file through this VFS,
/// its shared memory is not mapped yet (no transaction yet), or a writer is between its
/// two copies (they differ); the caller then asks SQLite.
pub fn wal_index_header(conn: &rusqlite::Connection) -> Option<[u32; WAL_INDEX_HEADER]> {
    // SAFETY: the handle is `conn`'s, open while `conn` is borrowed, and used only by
    // this thread meanwhile (a `Connection` is not `Sync`). SQLite answers
    // `SQLITE_FCNTL_FILE_POINTER` itself with its main database file: when that file's
    // methods are ours, it is a `DbFile`. `shm0`, when not null, is the start of region 0
    // as the parent mapped it (at least two headers long, checked at the map), valid
    // until `xShmUnmap` (which clears it); both run on this connection's thread too. The
    // header is read as atomic 32-bit words (the region is page-aligned): other
    // connections, in other threads and processes, write it while we read.
    unsafe {
        let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
        let rc = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast::<c_void>(),
        );
        if rc != ffi::SQLITE_OK || file.is_null() || !ptr::eq((*file).pMethods, &DB_METHODS) {
            return None;
        }
        let shm = (*file.cast::<DbFile>()).shm0;
        if shm.is_null() {
            return None;
        }
        let word = |i: usize| AtomicU32::from_ptr(shm.add(i).cast_mut()).load(Ordering::Acquire);
        let first: [u32; WAL_INDEX_HEADER] = std::array::from_fn(word);
        let second: [u32; WAL_INDEX_HEADER] = std::array::from_fn(|i| word(WAL_INDEX_HEADER + i));
        (first == second).then_some(first)
    }
}

// The WAL file's methods: writes gathered, everything else after a flush.

unsafe fn wal_gathered<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Gathered {
    &mut *(*file.cast::<WalFile>()).gathered
}

/// Writes what `gathered` holds through `inner`; forgets it either way.
unsafe fn flush(inner: *mut ffi::sqlite3_file, gathered: &mut Gathered) -> c_int {
    gathered.header = None;
    if gathered.broken {
        return ffi::SQLITE_IOERR_WRITE;
    }
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = (*(*inner).pMethods).xWrite else {
        gathered.bytes.clear();
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut offset = gathered.start;
    for piece in gathered.bytes.chunks(PIECE) {
        #[cfg(test)]
        tests::PARENT_WRITES.with(|n| n.set(n.get() + 1));
        // A piece is smaller than PIECE, which fits a c_int.
        rc = write(
            inner,
            piece.as_ptr().cast::<c_void>(),
            piece.len() as c_int,
            offset,
        );
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += piece.len() as i64;
    }
    gathered.bytes.clear();
    if gathered.bytes.capacity() > KEEP_CAPACITY {
        gathered.bytes.shrink_to(KEEP_CAPACITY);
    }
    rc
}

unsafe fn flush_wal(file: *mut ffi::sqlite3_file) -> c_int {
    flush(inner(file), wal_gathered(file))
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let gathered = wal_gathered(file);
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if gathered.broken {
        return ffi::SQLITE_IOERR_WRITE;
    }
    let end = gathered.start + gathered.bytes.len() as i64;
    if !gathered.bytes.is_empty() && offset != end {
        let rc = flush(inner(file), gathered);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if gathered.bytes.is_empty() {
        gathered.start = offset;
    }
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
    match gathered.header {
        None if len == FRAME_HEADER => {
            gathered.bytes.extend_from_slice(bytes);
            // Bytes 4-7: the database's size in pages after a commit, 0 in other frames.
            gathered.header = Some(bytes[4..8] != [0, 0, 0, 0]);
            ffi::SQLITE_OK
        }
        Some(commit) if len >= MIN_PAGE => {
            gathered.bytes.extend_from_slice(bytes);
            gathered.header = None;
            if commit || gathered.bytes.len() >= GATHER_AT_MOST {
                flush(inner(file), gathered)
            } else {
                ffi::SQLITE_OK
            }
        }
        // Anything else (the WAL's own header, a page rewritten in place): written now,
        // with what comes before it.
        _ => {
            gathered.bytes.extend_from_slice(bytes);
            flush(inner(file), gathered)
        }
    }
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush_wal(file);
    let wal = file.cast::<WalFile>();
    if !(*wal).db.is_null() {
        (*(*wal).db).wal = ptr::null_mut();
    }
    drop(Box::from_raw((*wal).gathered));
    (*wal).gathered = ptr::null_mut();
    let closed = forward!(file, xClose, ffi::SQLITE_OK);
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

/// A WAL method that flushes first, then is the parent's.
macro_rules! after_flush {
    ($name:ident, $m:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let rc = flush_wal(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            forward!(file, $m, ffi::SQLITE_IOERR $(, $arg)*)
        }
    };
}
after_flush!(wal_read, xRead, (data: *mut c_void, amount: c_int, offset: ffi::sqlite3_int64));
after_flush!(wal_truncate, xTruncate, (size: ffi::sqlite3_int64));
after_flush!(wal_sync, xSync, (flags: c_int));
after_flush!(wal_file_size, xFileSize, (size: *mut ffi::sqlite3_int64));
after_flush!(wal_file_control, xFileControl, (op: c_int, arg: *mut c_void));

/// A method that is the parent's, unchanged.
macro_rules! plain {
    ($name:ident, $m:ident, $ret:ty, $missing:expr, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            forward!(file, $m, $missing $(, $arg)*)
        }
    };
}
plain!(read, xRead, c_int, ffi::SQLITE_IOERR, (data: *mut c_void, amount: c_int, offset: ffi::sqlite3_int64));
plain!(write, xWrite, c_int, ffi::SQLITE_IOERR, (data: *const c_void, amount: c_int, offset: ffi::sqlite3_int64));
plain!(truncate, xTruncate, c_int, ffi::SQLITE_IOERR, (size: ffi::sqlite3_int64));
plain!(sync, xSync, c_int, ffi::SQLITE_IOERR, (flags: c_int));
plain!(file_size, xFileSize, c_int, ffi::SQLITE_IOERR, (size: *mut ffi::sqlite3_int64));
plain!(lock, xLock, c_int, ffi::SQLITE_IOERR, (level: c_int));
plain!(unlock, xUnlock, c_int, ffi::SQLITE_IOERR, (level: c_int));
plain!(check_reserved_lock, xCheckReservedLock, c_int, ffi::SQLITE_IOERR, (out: *mut c_int));
plain!(file_control, xFileControl, c_int, ffi::SQLITE_NOTFOUND, (op: c_int, arg: *mut c_void));
plain!(sector_size, xSectorSize, c_int, 4096, ());
plain!(device_characteristics, xDeviceCharacteristics, c_int, 0, ());
plain!(shm_lock, xShmLock, c_int, ffi::SQLITE_IOERR, (offset: c_int, n: c_int, flags: c_int));
plain!(fetch, xFetch, c_int, ffi::SQLITE_OK, (offset: ffi::sqlite3_int64, amount: c_int, out: *mut *mut c_void));
plain!(unfetch, xUnfetch, c_int, ffi::SQLITE_OK, (offset: ffi::sqlite3_int64, page: *mut c_void));

static DB_METHODS: ffi::sqlite3_io_methods = db_methods(true);
/// For a parent file without shared memory (no WAL then, as with the parent).
static DB_METHODS_NO_SHM: ffi::sqlite3_io_methods = db_methods(false);

const fn db_methods(shm: bool) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: if shm { 3 } else { 1 },
        xClose: Some(db_close),
        xRead: Some(read),
        xWrite: Some(write),
        xTruncate: Some(truncate),
        xSync: Some(sync),
        xFileSize: Some(file_size),
        xLock: Some(lock),
        xUnlock: Some(unlock),
        xCheckReservedLock: Some(check_reserved_lock),
        xFileControl: Some(file_control),
        xSectorSize: Some(sector_size),
        xDeviceCharacteristics: Some(device_characteristics),
        xShmMap: if shm { Some(db_shm_map) } else { None },
        xShmLock: if shm { Some(shm_lock) } else { None },
        xShmBarrier: if shm { Some(db_shm_barrier) } else { None },
        xShmUnmap: if shm { Some(db_shm_unmap) } else { None },
        xFetch: if shm { Some(fetch) } else { None },
        xUnfetch: if shm { Some(unfetch) } else { None },
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;

    use rusqlite::{params, Connection, OpenFlags};

    thread_local! {
        /// Writes of gathered WAL bytes made on this thread.
        pub(super) static PARENT_WRITES: Cell<u64> = const { Cell::new(0) };
    }

    fn writes() -> u64 {
        PARENT_WRITES.with(Cell::get)
    }

    fn open(path: &Path) -> Connection {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn =
            Connection::open_with_flags_and_vfs(path, flags, super::register().unwrap()).unwrap();
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .unwrap();
        conn
    }

    /// A row's body: 700 bytes that differ from row to row (`round` changes them all).
    fn body(n: i64, round: u8) -> Vec<u8> {
        (0..700)
            .map(|i| (n as u8).wrapping_mul(31) ^ (i as u8) ^ round)
            .collect()
    }

    /// Every row, read by a connection through SQLite's own VFS.
    fn rows_seen_by_sqlite(path: &Path) -> Vec<(i64, Vec<u8>)> {
        let conn = Connection::open(path).unwrap();
        let mut rows = conn.prepare("SELECT n, body FROM t ORDER BY n").unwrap();
        let rows = rows
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    }

    /// The WAL index header reads the same while nobody commits, and differently after
    /// any commit: this connection's, another's through this VFS, another's through
    /// SQLite's own (as another process would), after a checkpoint started the WAL again.
    /// A connection not through this VFS, or an in-memory one, has none to read.
    #[test]
    fn the_wal_index_header_changes_with_every_commit_and_only_then() {
        use super::wal_index_header;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("header.sqlite3");
        let conn = open(&path);
        let other = Connection::open_with_flags_and_vfs(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE,
            super::register().unwrap(),
        )
        .unwrap();
        let plain = Connection::open(&path).unwrap();
        assert_eq!(wal_index_header(&plain), None, "not through the VFS");
        let memory =
            Connection::open_in_memory_with_flags_and_vfs(OpenFlags::default(), super::NAME)
                .unwrap();
        assert_eq!(wal_index_header(&memory), None, "in memory");
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        let mut n = 0;
        let mut insert = |c: &Connection| {
            n += 1;
            c.execute(
                "INSERT INTO t (n, body) VALUES (?1, ?2)",
                params![n, body(n, 0)],
            )
            .unwrap();
        };
        let mut last = wal_index_header(&conn).expect("mapped after the table's creation");
        let same = |c: &Connection, last: &[u32; super::WAL_INDEX_HEADER]| {
            // Reads and statements that write nothing leave it as it is.
            assert_eq!(count(c), count(&plain));
            c.execute("DELETE FROM t WHERE n < 0", []).unwrap();
            assert_eq!(wal_index_header(c).as_ref(), Some(last));
        };
        same(&conn, &last);
        for (round, by) in [&conn, &other, &plain, &conn].into_iter().enumerate() {
            insert(by);
            count(&other);
            let now = wal_index_header(&conn).unwrap();
            assert_ne!(now, last, "round {round}: a commit not seen");
            assert_eq!(wal_index_header(&other), Some(now), "round {round}");
            same(&conn, &now);
            last = now;
        }
        // A checkpoint alone publishes no commit; the next commit starts the WAL again.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        insert(&plain);
        count(&conn);
        let now = wal_index_header(&conn).unwrap();
        assert_ne!(now, last);
        // Its last frame (the fifth word) went back: the WAL was started again.
        assert!(now[4] < last[4], "{last:?} {now:?}");
    }

    /// A transaction that dirties many pages is written with one write, and another
    /// connection, through SQLite's own VFS, reads all of it as soon as it commits.
    #[test]
    fn a_commit_is_one_write_that_other_connections_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.sqlite3");
        let conn = open(&path);
        for round in 0..3_u8 {
            let before = writes();
            let tx = conn.unchecked_transaction().unwrap();
            for n in 0..40 {
                tx.execute(
                    "INSERT OR REPLACE INTO t (n, body) VALUES (?1, ?2)",
                    params![n, body(n, round)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            // 40 rows of 700 bytes: at least seven pages, fourteen writes without
            // gathering.
            assert_eq!(writes() - before, 1, "round {round}");
            let seen = rows_seen_by_sqlite(&path);
            assert_eq!(seen.len(), 40);
            assert!(
                seen.iter().all(|(n, b)| *b == body(*n, round)),
                "round {round}"
            );
        }
    }

    /// A transaction larger than SQLite's page cache writes frames before it commits and
    /// then overwrites some of them; at the commit SQLite rewrites those frames' headers
    /// (their checksums), after the commit frame. All of it is on disk when the commit
    /// returns: a copy of the files taken then, recovered from its WAL by SQLite's own
    /// VFS, holds the transaction.
    #[test]
    fn a_large_transaction_is_whole_on_disk_when_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large.sqlite3");
        let conn = open(&path);
        conn.pragma_update(None, "cache_size", 8).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for n in 0..4000 {
            tx.execute(
                "INSERT INTO t (n, body) VALUES (?1, ?2)",
                params![n, body(n, 0)],
            )
            .unwrap();
        }
        // Read back, from the WAL, pages this transaction wrote there (some only just).
        let total: i64 = tx
            .query_row("SELECT sum(length(body)) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(total, 4000 * 700);
        // Pages written out already (the cache holds 8), dirtied again.
        for n in (0..4000).step_by(7) {
            tx.execute(
                "UPDATE t SET body = ?2 WHERE n = ?1",
                params![n, body(n, 1)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let copy = dir.path().join("copy.sqlite3");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(
            dir.path().join("large.sqlite3-wal"),
            dir.path().join("copy.sqlite3-wal"),
        )
        .unwrap();
        let seen = rows_seen_by_sqlite(&copy);
        assert_eq!(seen.len(), 4000);
        for (n, b) in &seen {
            let round = u8::from(n % 7 == 0);
            assert_eq!(*b, body(*n, round), "row {n}");
        }
        drop(conn);
    }
}
