//! SQLite's own page cache, with its truncations that drop nothing skipped.
//!
//! At the end of every write transaction SQLite's pager truncates its page cache to the
//! database's size (`pager_end_transaction` -> `sqlite3PcacheTruncate`), which the
//! default cache (`pcache1`) does only when it has seen a page number past that size
//! (its `iMaxKey`). A B-tree insert that splits pages out of order swaps two pages'
//! numbers through the lock page's number (`balance_nonroot`: page 262 145 at 4 KiB
//! pages), and that raises `iMaxKey` to it for good: the next truncation drops nothing
//! but walks the whole hash table, every slot and every page held, and only then lowers
//! `iMaxKey` again. An index under random keys (a Case IQ upstream's UUIDs) splits out of
//! order every few commits, so each such commit walked the cache (about 500 pages at the
//! default size, their headers scattered in memory): about 1 % of casegate's CPU with a
//! new file per upload, and more the larger the cache (bench/RESULTS.md, the
//! fifty-second round).
//!
//! The wrapper here keeps, per cache, an upper bound of the page numbers it holds (the
//! lock page's number apart while a page passes through it) and passes a truncation on
//! only when that bound says some page may be dropped. Everything else is `pcache1`'s,
//! unchanged: the same pages, the same memory, the same eviction.
//!
//! Safety: SQLite calls the methods of one cache from one thread at a time (a cache
//! belongs to one pager, which its connection's mutex guards), so a wrapper's bounds need
//! no lock; the default methods are copied once, before SQLite is initialised, and never
//! change after.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// SQLite's `PENDING_BYTE`: the lock page is the one holding this offset.
const PENDING_BYTE: u64 = 0x4000_0000;

/// The default methods, kept once the wrapper is installed.
struct DefaultMethods(ffi::sqlite3_pcache_methods2);
// SAFETY: function pointers and SQLite's own argument, used from any thread as SQLite
// itself does.
unsafe impl Send for DefaultMethods {}
unsafe impl Sync for DefaultMethods {}
static DEFAULT: OnceLock<DefaultMethods> = OnceLock::new();

/// Installs the wrapper around SQLite's default page cache. Must come before SQLite is
/// initialised (before any connection is opened or any VFS looked up); Err when it
/// cannot (SQLite was initialised already, or refused): then SQLite's cache is used
/// as it is, which changes nothing but the cost.
pub(crate) fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // SAFETY: sqlite3_config is called with the argument types each option takes
            // (a pointer to a methods struct); SQLite copies the struct it is given.
            unsafe {
                let mut default: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
                let rc = ffi::sqlite3_config(
                    ffi::SQLITE_CONFIG_GETPCACHE2,
                    &mut default as *mut ffi::sqlite3_pcache_methods2,
                );
                if rc != ffi::SQLITE_OK {
                    return Err(not_now(rc));
                }
                if default.xCreate.is_none()
                    || default.xFetch.is_none()
                    || default.xTruncate.is_none()
                    || default.xDestroy.is_none()
                {
                    return Err("SQLite's page cache lacks a method".to_string());
                }
                let default = &DEFAULT.get_or_init(|| DefaultMethods(default)).0;
                let wrapper = ffi::sqlite3_pcache_methods2 {
                    iVersion: default.iVersion,
                    pArg: std::ptr::null_mut(),
                    xInit: Some(init),
                    xShutdown: Some(shutdown),
                    xCreate: Some(create),
                    xCachesize: Some(cachesize),
                    xPagecount: Some(pagecount),
                    xFetch: Some(fetch),
                    xUnpin: Some(unpin),
                    xRekey: Some(rekey),
                    xTruncate: Some(truncate),
                    xDestroy: Some(destroy),
                    xShrink: Some(shrink),
                };
                match ffi::sqlite3_config(
                    ffi::SQLITE_CONFIG_PCACHE2,
                    &wrapper as *const ffi::sqlite3_pcache_methods2,
                ) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(not_now(rc)),
                }
            }
        })
        .clone()
}

/// Why the page cache could not be set: SQLite takes no configuration once initialised.
fn not_now(rc: c_int) -> String {
    format!("SQLite refused (error {rc}: initialised already?); its page cache stays as it is")
}

/// One cache: the default one's, and what bounds its page numbers.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// At least every page number held, the lock page's apart.
    most: c_uint,
    /// Pages moved to the lock page's number and not yet away from it.
    at_lock: c_uint,
    /// The lock page's number at this cache's page size.
    lock: c_uint,
}

fn default() -> &'static ffi::sqlite3_pcache_methods2 {
    // Only SQLite calls the methods below, and only after `install` set this.
    match DEFAULT.get() {
        Some(d) => &d.0,
        None => unreachable!("the page cache wrapper runs only once installed"),
    }
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    let d = default();
    match d.xInit {
        Some(f) => f(d.pArg),
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    let d = default();
    if let Some(f) = d.xShutdown {
        f(d.pArg);
    }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(f) = default().xCreate else {
        return std::ptr::null_mut();
    };
    let inner = f(page_size, extra, purgeable);
    if inner.is_null() {
        return inner;
    }
    let lock = u64::try_from(page_size)
        .ok()
        .filter(|s| *s > 0)
        .and_then(|s| c_uint::try_from(PENDING_BYTE / s + 1).ok())
        .unwrap_or(c_uint::MAX);
    Box::into_raw(Box::new(Cache {
        inner,
        most: 0,
        at_lock: 0,
        lock,
    }))
    .cast()
}

/// The wrapper SQLite was given for `p`.
///
/// # Safety
/// `p` came from [`create`] and was not destroyed; no other reference to it is live.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    &mut *p.cast::<Cache>()
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = default().xCachesize {
        f(cache(p).inner, n);
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    match default().xPagecount {
        Some(f) => f(cache(p).inner),
        None => 0,
    }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let c = cache(p);
    let Some(f) = default().xFetch else {
        return std::ptr::null_mut();
    };
    let page = f(c.inner, key, create);
    if !page.is_null() {
        // A page found was counted when it came; one made now is counted here, the lock
        // page's number too (SQLite refuses to read it, but the page stays held).
        c.most = c.most.max(key);
    }
    page
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    if let Some(f) = default().xUnpin {
        f(cache(p).inner, page, discard);
    }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let c = cache(p);
    if let Some(f) = default().xRekey {
        f(c.inner, page, old, new);
    }
    if old == c.lock {
        c.at_lock = c.at_lock.saturating_sub(1);
    }
    if new == c.lock {
        #[cfg(test)]
        tests::LOCK_MOVES.with(|m| m.set(m.get() + 1));
        c.at_lock += 1;
    } else {
        c.most = c.most.max(new);
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = cache(p);
    // Pages numbered `limit` or more are dropped: there may be some only if the bound
    // reaches it, or a page waits at the lock page's number at or past it.
    let lock_page = c.at_lock > 0 && c.lock >= limit;
    let passed = c.most >= limit || lock_page;
    #[cfg(test)]
    tests::TRUNCATIONS.with(|t| {
        let (on, skipped) = t.get();
        t.set(if passed {
            (on + 1, skipped)
        } else {
            (on, skipped + 1)
        });
    });
    if !passed {
        return;
    }
    if let Some(f) = default().xTruncate {
        f(c.inner, limit);
    }
    c.most = c.most.min(limit.saturating_sub(1));
    if c.lock >= limit {
        c.at_lock = 0;
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let c = Box::from_raw(p.cast::<Cache>());
    if let Some(f) = default().xDestroy {
        f(c.inner);
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = default().xShrink {
        f(cache(p).inner);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rusqlite::{params, Connection, OpenFlags};

    thread_local! {
        /// Truncations made on this thread: passed on to SQLite's cache, and skipped.
        pub(super) static TRUNCATIONS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
        /// Pages moved to the lock page's number on this thread (B-tree splits out of order).
        pub(super) static LOCK_MOVES: Cell<u64> = const { Cell::new(0) };
    }

    /// A random-looking key for row `n` of round `round`: rows go into the index out of
    /// order, so its pages split out of order, as under a Case IQ upstream's UUIDs.
    fn key(n: u64, round: u64) -> Vec<u8> {
        let mut x = (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.rotate_left(17);
        (0..4)
            .flat_map(|_| {
                x ^= x >> 29;
                x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                x.to_le_bytes()
            })
            .collect()
    }

    /// Transactions that grow an index under random keys, a third of them rolled back
    /// (whole, or to a savepoint), on a cache small enough to evict: the rows committed
    /// are exactly those read back, by this connection and by one through SQLite's own
    /// VFS and cache, and the file passes SQLite's integrity check. Most transactions'
    /// truncations were skipped (nothing past the file's end was held), and the rollbacks'
    /// were passed on (the pages the rolled-back transaction added must go).
    #[test]
    fn truncations_that_drop_nothing_are_skipped_and_rollbacks_still_drop_pages() {
        let vfs = crate::register().unwrap();
        assert_eq!(super::install(), Ok(()), "installed before SQLite started");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite3");
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(&path, flags, vfs).unwrap();
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "cache_size", 40).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k BLOB NOT NULL, round INTEGER NOT NULL, pad TEXT NOT NULL);
             CREATE UNIQUE INDEX t_k ON t (k);",
        )
        .unwrap();
        TRUNCATIONS.with(|t| t.set((0, 0)));
        LOCK_MOVES.with(|m| m.set(0));
        let mut committed: Vec<Vec<u8>> = Vec::new();
        for round in 0..60u64 {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            let mut added = Vec::new();
            for n in 0..120 {
                let k = key(n, round);
                conn.execute(
                    "INSERT INTO t (k, round, pad) VALUES (?1, ?2, ?3)",
                    params![k, round as i64, "x".repeat(40 + (n as usize % 50))],
                )
                .unwrap();
                added.push(k);
                if round % 3 == 1 && n == 59 {
                    conn.execute_batch("SAVEPOINT half").unwrap();
                }
            }
            match round % 3 {
                0 => {
                    conn.execute_batch("ROLLBACK").unwrap();
                }
                1 => {
                    conn.execute_batch("ROLLBACK TO half; RELEASE half; COMMIT")
                        .unwrap();
                    committed.extend(added.into_iter().take(60));
                }
                _ => {
                    conn.execute_batch("COMMIT").unwrap();
                    committed.extend(added);
                }
            }
        }
        committed.sort();
        let read = |c: &Connection| -> Vec<Vec<u8>> {
            let mut s = c.prepare("SELECT k FROM t ORDER BY k").unwrap();
            let rows = s.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<Vec<_>, _>>().unwrap()
        };
        assert_eq!(read(&conn), committed);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let (passed, skipped) = TRUNCATIONS.with(Cell::get);
        let moves = LOCK_MOVES.with(Cell::get);
        // Every committed transaction's end: the pages split out of order passed through
        // the lock page's number, which SQLite's cache would have walked itself for.
        assert!(moves >= 20, "pages moved through the lock page: {moves}");
        assert!(
            skipped >= 20,
            "truncations skipped: {skipped} (passed {passed})"
        );
        assert!(passed >= 20, "rollbacks' truncations passed on: {passed}");
        drop(conn);
        let plain = Connection::open(&path).unwrap();
        assert_eq!(read(&plain), committed, "through SQLite's own VFS");
    }
}
