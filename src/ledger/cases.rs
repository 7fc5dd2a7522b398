//! Case listings held in memory: what a Thalamus upload answer lists (every file of the
//! case, SPEC 7.1), kept per route and case so that an upload reads from the store only
//! the files added since the last answer, not the whole case again.
//!
//! A listing is the front ids of the case's files in insertion order (`seq`), the oldest
//! [`limit`](Listings::files) of them, with the highest `seq` it holds and the ledger's
//! count of deleted rows (`files.changes`) when it was read. Each upload asks the store
//! for the case's rows after that `seq` and for the count again:
//! - the count unchanged: the new rows are appended (rows only ever join a case at the
//!   end, where the store says rows become visible in `seq` order, which is what
//!   [`seq_follows_commits`](super::Store::seq_follows_commits) promises; a row's case
//!   never changes once written);
//! - the count moved (a file was deleted, by this process or another sharing the ledger):
//!   the case is read whole again into a new listing.
//!
//! Where the store cannot promise that order (PostgreSQL, whose replicas take numbers and
//! commit in any order), every answer reads its case whole, as before, and nothing is
//! kept. Answers hold a listing and a length: a listing only grows, and a reread makes
//! a new one, so what an answer holds never changes under it. The memory is bounded: at
//! most [`MAX_IDS`] ids in [`MAX_CASES`] cases, the least recently used dropped first.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{CaseIds, LedgerError};

/// The most ids held across every listing. With each written for answers (about 70
/// bytes for a Thalamus entry) and its place by hash (16), about 12 MiB at most.
pub const MAX_IDS: usize = 100_000;
/// The most cases held.
pub const MAX_CASES: usize = 4096;

/// The files a Thalamus upload answer lists: a prefix of a listing, and the new file
/// when the listing does not hold it (its row could not be written yet, or the case holds
/// more than the limit).
#[derive(Clone, Default)]
pub struct CaseFiles {
    listing: Option<Arc<Listing>>,
    len: usize,
    extra: Option<String>,
}

impl fmt::Debug for CaseFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaseFiles")
            .field("listed", &self.len)
            .field("extra", &self.extra)
            .finish()
    }
}

impl CaseFiles {
    /// These ids, in this order (no listing behind them).
    #[cfg(test)]
    pub fn of(ids: Vec<String>) -> CaseFiles {
        let len = ids.len();
        CaseFiles {
            listing: Some(Arc::new(Listing::new(i64::MIN, i64::MIN, ids, true))),
            len,
            extra: None,
        }
    }

    /// These ids, in this order, and `new` after them unless among them.
    #[cfg(test)]
    pub fn of_and(ids: Vec<String>, new: &str) -> CaseFiles {
        let len = ids.len();
        CaseFiles::snapshot(
            Arc::new(Listing::new(i64::MIN, i64::MIN, ids, true)),
            len,
            new,
        )
    }

    /// The new file alone (the ledger could not list the case).
    pub fn only(id: String) -> CaseFiles {
        CaseFiles {
            listing: None,
            len: 0,
            extra: Some(id),
        }
    }

    /// Runs `f` with the listed ids, oldest first, and the new file's id when it comes
    /// after them.
    #[cfg(test)]
    fn with<R>(&self, f: impl FnOnce(&[String], Option<&str>) -> R) -> R {
        let extra = self.extra.as_deref();
        match &self.listing {
            Some(listing) => {
                let state = listing.lock();
                let ids = state.ids.get(..self.len).unwrap_or(&state.ids);
                f(ids, extra)
            }
            None => f(&[], extra),
        }
    }

    /// Runs `f` with the listed files written by `write` (each entry whole, with whatever
    /// separator `write` puts after it), oldest first. The writing is kept with the
    /// listing for the next answer, as long as they ask with the same `key` (what else the
    /// entries depend on, such as where their links point): each file is written once, not
    /// once per answer, and an answer can send the kept pieces as they are rather than copy
    /// them ([`Listed::shared`]; a case of 10 000 files is some 700 KB of entries). The
    /// new file, when it comes after them, is [`CaseFiles::extra`].
    pub fn with_written<R>(
        &self,
        key: &str,
        write: impl Fn(&str, &mut Vec<u8>),
        f: impl FnOnce(Listed<'_>) -> R,
    ) -> R {
        let Some(listing) = &self.listing else {
            return f(Listed {
                pieces: &[],
                end: 0,
            });
        };
        let mut state = listing.lock();
        let state = &mut *state;
        let written = &mut state.written;
        if written.key != key {
            *written = Written {
                key: key.to_string(),
                ..Written::default()
            };
        }
        let unwritten = state
            .ids
            .get(written.ends.len()..self.len)
            .unwrap_or_default();
        if !unwritten.is_empty() {
            let base = written.len();
            let mut piece = Vec::with_capacity(unwritten.len() * 64);
            for id in unwritten {
                write(id, &mut piece);
                written.ends.push(base + piece.len());
            }
            written.add(piece);
        }
        let end = match self.len.checked_sub(1) {
            Some(last) => written.ends.get(last).copied().unwrap_or(0),
            None => 0,
        };
        f(Listed {
            pieces: &written.pieces,
            end,
        })
    }

    /// The new file's id, when the answer lists it after the listed ones.
    pub fn extra(&self) -> Option<&str> {
        self.extra.as_deref()
    }

    /// How many files the answer lists.
    pub fn count(&self) -> usize {
        self.len + usize::from(self.extra.is_some())
    }

    /// A snapshot of `listing`'s first `len` ids, with `new` after them unless among
    /// them (looked up, not searched for: a full listing never holds a new file, and an
    /// answer to a case of 10 000 files compared the new id with each of them).
    fn snapshot(listing: Arc<Listing>, len: usize, new: &str) -> CaseFiles {
        let listed = listing.lock().position(new).is_some_and(|at| at < len);
        CaseFiles {
            listing: Some(listing),
            len,
            extra: (!listed).then(|| new.to_string()),
        }
    }
}

/// An answer's listed entries: the first `end` bytes of a listing's written pieces.
pub struct Listed<'a> {
    pieces: &'a [Bytes],
    end: usize,
}

impl Listed<'_> {
    /// How many bytes the entries take.
    pub fn len(&self) -> usize {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// The entries, as slices of the pieces that hold them.
    fn slices(&self) -> impl Iterator<Item = (&Bytes, usize)> {
        let mut at = 0;
        self.pieces.iter().map_while(move |piece| {
            let take = self.end.checked_sub(at)?.min(piece.len());
            at += piece.len();
            (take > 0).then_some((piece, take))
        })
    }

    /// The entries copied to the end of `out`.
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        for (piece, take) in self.slices() {
            out.extend_from_slice(&piece[..take]);
        }
    }

    /// The entries as the pieces that hold them (the last one cut), shared, not copied.
    pub fn shared(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.slices().map(|(piece, take)| {
            if take == piece.len() {
                piece.clone()
            } else {
                piece.slice(..take)
            }
        })
    }
}

/// One case's listing.
struct Listing {
    state: Mutex<ListingState>,
    /// When it was last used, on [`Listings`]' clock.
    used: AtomicU64,
}

struct ListingState {
    /// `files.changes` when the case was read whole.
    changes: i64,
    /// The highest `seq` of the rows read.
    last_seq: i64,
    /// Front ids, oldest first; only ever appended to ([`ListingState::push`]).
    ids: Vec<String>,
    /// Where each id is in `ids`, by its hash (the first id of each hash; an id whose hash
    /// another holds already is found by searching, [`ListingState::position`]), for a
    /// listing kept for later answers. One read for a single answer (a store without
    /// ordered commits) is searched instead: building the index would cost more than the
    /// one search.
    at: Option<HashMap<u64, u32, foldhash::fast::RandomState>>,
    /// The first of them written for answers ([`CaseFiles::written`]).
    written: Written,
}

impl ListingState {
    fn push(&mut self, id: String) {
        if let (Some(index), Ok(at)) = (&mut self.at, u32::try_from(self.ids.len())) {
            index.entry(index.hasher().hash_one(&id)).or_insert(at);
        }
        self.ids.push(id);
    }

    /// Where `id` is in `ids`.
    fn position(&self, id: &str) -> Option<usize> {
        let Some(index) = &self.at else {
            // Newest last: a new file's row, if read, is near the end.
            return self.ids.iter().rposition(|held| held == id);
        };
        let at = *index.get(&index.hasher().hash_one(id))?;
        let at = usize::try_from(at).ok()?;
        if self.ids.get(at).is_some_and(|held| held == id) {
            return Some(at);
        }
        // Another id of the same hash holds the slot.
        self.ids.iter().position(|held| held == id)
    }
}

/// Entries written for answers, oldest first, in pieces the answers share. A new batch of
/// entries is a new piece, merged with the one before it while that one is at most
/// [`Written::MERGE`] times its size: pieces shrink geometrically from the first, so a
/// listing of 10 000 entries is in at most eight, and each entry is copied a few times
/// over the listing's life instead of once per answer.
#[derive(Default)]
struct Written {
    key: String,
    pieces: Vec<Bytes>,
    /// Where each id's entry ends, counted from the start of the first piece.
    ends: Vec<usize>,
}

impl Written {
    const MERGE: usize = 4;

    /// The bytes written.
    fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    fn add(&mut self, piece: Vec<u8>) {
        // No empty pieces: an answer's entries end at the first piece they do not reach.
        if piece.is_empty() {
            return;
        }
        let mut last = piece;
        while let Some(before) = self.pieces.last() {
            if before.len() > Written::MERGE * last.len() {
                break;
            }
            let mut merged = Vec::with_capacity(before.len() + last.len());
            merged.extend_from_slice(before);
            merged.extend_from_slice(&last);
            self.pieces.pop();
            last = merged;
        }
        self.pieces.push(Bytes::from(last));
    }
}

impl Listing {
    /// A listing of these ids; `kept` for later answers (indexed: [`ListingState::at`]).
    fn new(changes: i64, last_seq: i64, ids: Vec<String>, kept: bool) -> Listing {
        let mut state = ListingState {
            changes,
            last_seq,
            ids: Vec::new(),
            at: None,
            written: Written::default(),
        };
        if kept {
            state.ids.reserve(ids.len());
            state.at = Some(HashMap::with_capacity_and_hasher(
                ids.len(),
                Default::default(),
            ));
            for id in ids {
                state.push(id);
            }
        } else {
            state.ids = ids;
        }
        Listing {
            state: Mutex::new(state),
            used: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ListingState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The listings of one ledger (see the module doc).
pub struct Listings {
    /// The most cases and ids held ([`MAX_CASES`], [`MAX_IDS`]).
    bounds: (usize, usize),
    held: Mutex<Held>,
    /// Ids held, about: appends count here without the lock, also to a listing dropped
    /// meanwhile; [`Listings::keep`] counts exactly before it drops any.
    ids: AtomicUsize,
    clock: AtomicU64,
}

#[derive(Default)]
struct Held {
    /// By route, then case.
    cases: HashMap<String, HashMap<String, Arc<Listing>>>,
    /// How many cases `cases` holds.
    count: usize,
}

impl Default for Listings {
    fn default() -> Self {
        Listings::bounded(MAX_CASES, MAX_IDS)
    }
}

impl Listings {
    fn bounded(cases: usize, ids: usize) -> Listings {
        Listings {
            bounds: (cases, ids),
            held: Mutex::default(),
            ids: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The files of `route`'s case `front_case` an upload answer lists: the oldest
    /// `limit`, and `new` (the uploaded file's front id) after them unless among them.
    /// `read` runs the store's [`case_ids`](super::Store::case_ids) (through the ledger's
    /// health tracking); `ordered` is its
    /// [`seq_follows_commits`](super::Store::seq_follows_commits): without it nothing is
    /// kept.
    pub async fn files<F, Fut>(
        &self,
        ordered: bool,
        read: F,
        route: &str,
        front_case: &str,
        limit: u64,
        new: &str,
    ) -> Result<CaseFiles, LedgerError>
    where
        F: Fn(i64, u64) -> Fut,
        Fut: std::future::Future<Output = Result<CaseIds, LedgerError>>,
    {
        let limit_len = usize::try_from(limit).unwrap_or(usize::MAX);
        if !ordered {
            let read = read(i64::MIN, limit).await?;
            let listing = Arc::new(whole(read, false));
            let len = listing.lock().ids.len();
            return Ok(CaseFiles::snapshot(listing, len, new));
        }
        let held = self
            .held()
            .cases
            .get(route)
            .and_then(|cases| cases.get(front_case))
            .cloned();
        if let Some(listing) = held {
            let (changes, last_seq, len) = {
                let state = listing.lock();
                (state.changes, state.last_seq, state.ids.len())
            };
            let room = limit_len.saturating_sub(len) as u64;
            let read = read(last_seq, room).await?;
            if read.changes == changes {
                let (len, added) = {
                    let mut state = listing.lock();
                    let before = state.ids.len();
                    // Another answer may have appended some of these meanwhile.
                    for (seq, id) in read.rows {
                        if seq > state.last_seq && state.ids.len() < limit_len {
                            state.last_seq = seq;
                            state.push(id);
                        }
                    }
                    (state.ids.len(), state.ids.len() - before)
                };
                self.ids.fetch_add(added, Ordering::Relaxed);
                listing.used.store(self.tick(), Ordering::Relaxed);
                return Ok(CaseFiles::snapshot(listing, len, new));
            }
        }
        let read = read(i64::MIN, limit).await?;
        let listing = Arc::new(whole(read, true));
        listing.used.store(self.tick(), Ordering::Relaxed);
        let len = listing.lock().ids.len();
        self.keep(route, front_case, listing.clone());
        Ok(CaseFiles::snapshot(listing, len, new))
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Holds `listing` for the case, then, while more cases or ids than its bounds are
    /// held, drops the least recently used listings, down to three quarters of each.
    fn keep(&self, route: &str, front_case: &str, listing: Arc<Listing>) {
        let len = listing.lock().ids.len();
        let mut held = self.held();
        let replaced = held
            .cases
            .entry(route.to_string())
            .or_default()
            .insert(front_case.to_string(), listing);
        match replaced {
            Some(old) => {
                let old_len = old.lock().ids.len();
                if len >= old_len {
                    self.ids.fetch_add(len - old_len, Ordering::Relaxed);
                } else {
                    self.ids.fetch_sub(
                        (old_len - len).min(self.ids.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                }
            }
            None => {
                held.count += 1;
                self.ids.fetch_add(len, Ordering::Relaxed);
            }
        }
        let (max_cases, max_ids) = self.bounds;
        if held.count <= max_cases && self.ids.load(Ordering::Relaxed) <= max_ids {
            return;
        }
        let mut by_age: Vec<(u64, String, String, usize)> = held
            .cases
            .iter()
            .flat_map(|(route, of_route)| {
                of_route.iter().map(move |(case, l)| {
                    (
                        l.used.load(Ordering::Relaxed),
                        route.clone(),
                        case.clone(),
                        l.lock().ids.len(),
                    )
                })
            })
            .collect();
        let mut count = by_age.len();
        let mut ids: usize = by_age.iter().map(|(.., len)| len).sum();
        by_age.sort_unstable_by_key(|(used, ..)| *used);
        for (_, route, case, len) in by_age {
            if count <= max_cases * 3 / 4 && ids <= max_ids * 3 / 4 {
                break;
            }
            if let Some(of_route) = held.cases.get_mut(&route) {
                of_route.remove(&case);
                if of_route.is_empty() {
                    held.cases.remove(&route);
                }
            }
            count -= 1;
            ids -= len;
        }
        held.count = count;
        self.ids.store(ids, Ordering::Relaxed);
    }

    /// How many cases and ids are held, counted.
    #[cfg(test)]
    fn counted(&self) -> (usize, usize) {
        let held = self.held();
        held.cases
            .values()
            .flat_map(HashMap::values)
            .fold((0, 0), |(n, ids), l| (n + 1, ids + l.lock().ids.len()))
    }
}

/// A listing of a case read whole.
fn whole(read: CaseIds, kept: bool) -> Listing {
    let last_seq = read.rows.last().map_or(i64::MIN, |(seq, _)| *seq);
    let ids = read.rows.into_iter().map(|(_, id)| id).collect();
    Listing::new(read.changes, last_seq, ids, kept)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::ledger::sqlite::{two_processes, SqliteStore};
    use crate::ledger::{Row, Store};

    fn row(front: &str, case: &str) -> Row {
        Row {
            route: "r".into(),
            front_id: front.into(),
            front_case: Some(case.into()),
            back_id: format!("b-{front}"),
            ..Row::default()
        }
    }

    async fn add(store: &SqliteStore, case: &str, fronts: &[&str]) {
        let rows = fronts.iter().map(|f| row(f, case)).collect();
        store.record(rows).await.unwrap();
    }

    /// Lists `case` through `listings`, counting the rows the store read.
    async fn list(
        listings: &Listings,
        store: &SqliteStore,
        read_rows: &AtomicUsize,
        case: &str,
        limit: u64,
        new: &str,
    ) -> Vec<String> {
        list_as(listings, store, true, read_rows, case, limit, new).await
    }

    /// [`list`], the store's commits in `seq` order or not.
    async fn list_as(
        listings: &Listings,
        store: &SqliteStore,
        ordered: bool,
        read_rows: &AtomicUsize,
        case: &str,
        limit: u64,
        new: &str,
    ) -> Vec<String> {
        let read = |after: i64, n: u64| async move {
            let got = store.case_ids("r", case, after, n).await;
            if let Ok(got) = &got {
                read_rows.fetch_add(got.rows.len(), Ordering::Relaxed);
            }
            got
        };
        let files = listings
            .files(ordered, read, "r", case, limit, new)
            .await
            .unwrap();
        let listed = files.with(|ids, extra| {
            let mut all = ids.to_vec();
            all.extend(extra.map(str::to_string));
            all
        });
        assert_eq!(listed.len(), files.count());
        listed
    }

    #[tokio::test]
    async fn a_listing_reads_only_the_rows_added_since() {
        let store = SqliteStore::open_memory().await.unwrap();
        let (listings, read) = (Listings::default(), AtomicUsize::new(0));
        add(&store, "c", &["1", "2", "3"]).await;
        add(&store, "other", &["9"]).await;
        assert_eq!(
            list(&listings, &store, &read, "c", 100, "3").await,
            ["1", "2", "3"]
        );
        assert_eq!(read.swap(0, Ordering::Relaxed), 3);
        add(&store, "c", &["4"]).await;
        add(&store, "c", &["5", "6"]).await;
        let all = ["1", "2", "3", "4", "5", "6"];
        assert_eq!(list(&listings, &store, &read, "c", 100, "6").await, all);
        assert_eq!(
            read.swap(0, Ordering::Relaxed),
            3,
            "the three new rows alone"
        );
        assert_eq!(list(&listings, &store, &read, "c", 100, "6").await, all);
        assert_eq!(read.swap(0, Ordering::Relaxed), 0);
        // A file whose row is not written (yet) comes after the listed ones.
        assert_eq!(
            list(&listings, &store, &read, "c", 100, "7").await,
            ["1", "2", "3", "4", "5", "6", "7"]
        );
        assert_eq!(listings.counted(), (1, 6));
    }

    /// A listing that grows a file at a time keeps its entries in a few pieces (each
    /// answer sends them as they are), and every answer, also one taken before the
    /// listing grew, has exactly the entries of its own files.
    #[test]
    fn a_growing_listing_is_written_in_a_few_pieces() {
        let listing = Arc::new(Listing::new(0, 0, Vec::new(), true));
        let write =
            |id: &str, out: &mut Vec<u8>| out.extend_from_slice(format!("<{id}>").as_bytes());
        let expected = |n: usize| (0..n).map(|i| format!("<{i}>")).collect::<String>();
        let answer = |len: usize| CaseFiles {
            listing: Some(listing.clone()),
            len,
            extra: None,
        };
        let mut early = Vec::new();
        for n in 1..=3000usize {
            listing.lock().push((n - 1).to_string());
            let files = answer(n);
            let pieces: Vec<Bytes> = files.with_written("k", write, |l| l.shared().collect());
            assert!(pieces.len() <= 8, "{} pieces for {n} files", pieces.len());
            assert_eq!(String::from_utf8(pieces.concat()).unwrap(), expected(n));
            if n % 700 == 0 {
                early.push((n, files));
            }
        }
        for (n, files) in early {
            let listed = files.with_written("k", write, |l| l.shared().collect::<Vec<_>>());
            assert_eq!(String::from_utf8(listed.concat()).unwrap(), expected(n));
        }
        // A first answer for a whole listing writes it as one piece.
        let whole = Arc::new(Listing::new(
            0,
            0,
            (0..500).map(|i| i.to_string()).collect(),
            true,
        ));
        let files = CaseFiles {
            listing: Some(whole),
            len: 500,
            extra: None,
        };
        assert_eq!(files.with_written("k", write, |l| l.shared().count()), 1);
    }

    /// An id is found by its hash; one whose hash another id holds is found by searching,
    /// and one not held is not found either way.
    #[test]
    fn ids_are_found_also_when_their_hashes_meet() {
        let ids = ["a", "b", "c"].map(String::from).to_vec();
        // A listing read for one answer is searched; a kept one is indexed.
        for kept in [false, true] {
            let listing = Listing::new(0, 0, ids.clone(), kept);
            let state = listing.lock();
            assert_eq!(state.at.is_some(), kept);
            assert_eq!(
                ["a", "b", "c", "d"].map(|id| state.position(id)),
                [Some(0), Some(1), Some(2), None]
            );
        }
        let listing = Listing::new(0, 0, ids, true);
        let mut state = listing.lock();
        let index = state.at.as_mut().unwrap();
        // As if "b" and "d" had the hash of "a": its slot holds "a".
        let hash = |id: &str| index.hasher().hash_one(id);
        let (a, b, d) = (hash("a"), hash("b"), hash("d"));
        index.remove(&b);
        index.insert(b, 0);
        index.insert(d, 0);
        assert_eq!(index.get(&a), Some(&0));
        assert_eq!(state.position("b"), Some(1));
        assert_eq!(state.position("d"), None);
        // A new file among the listed is not listed again; one after them is.
        drop(state);
        assert_eq!(
            CaseFiles::of_and(vec!["x".into(), "y".into()], "x").extra(),
            None
        );
        assert_eq!(CaseFiles::of_and(vec!["x".into()], "y").extra(), Some("y"));
    }

    /// What answers write of a listing is kept and extended, and written again when they
    /// ask with another key; each answer sees only its own prefix of it.
    #[tokio::test]
    async fn written_entries_are_kept_per_key() {
        let store = SqliteStore::open_memory().await.unwrap();
        let listings = Listings::default();
        let writes = AtomicUsize::new(0);
        let write = |key: &'static str| {
            let writes = &writes;
            move |id: &str, out: &mut Vec<u8>| {
                writes.fetch_add(1, Ordering::Relaxed);
                out.extend_from_slice(format!("{key}{id},").as_bytes());
            }
        };
        let files = |new: &'static str| {
            let store = &store;
            let listings = &listings;
            async move {
                let read = |after: i64, n: u64| store.case_ids("r", "c", after, n);
                listings
                    .files(true, read, "r", "c", 100, new)
                    .await
                    .unwrap()
            }
        };
        let text = |files: &CaseFiles, key: &'static str| {
            let listed = files.with_written(key, write(key), |listed| {
                let mut copied = Vec::new();
                listed.copy_to(&mut copied);
                assert_eq!(listed.shared().collect::<Vec<_>>().concat(), copied);
                copied
            });
            (
                String::from_utf8(listed).unwrap(),
                files.extra().map(str::to_string),
            )
        };
        add(&store, "c", &["1", "2"]).await;
        let first = files("2").await;
        assert_eq!(text(&first, "a"), ("a1,a2,".into(), None));
        add(&store, "c", &["3"]).await;
        let second = files("3").await;
        assert_eq!(text(&second, "a"), ("a1,a2,a3,".into(), None));
        assert_eq!(writes.swap(0, Ordering::Relaxed), 3, "1 and 2 written once");
        // The earlier answer still lists what it listed.
        assert_eq!(text(&first, "a"), ("a1,a2,".into(), None));
        assert_eq!(writes.swap(0, Ordering::Relaxed), 0);
        assert_eq!(text(&second, "b"), ("b1,b2,b3,".into(), None));
        assert_eq!(writes.swap(0, Ordering::Relaxed), 3);
        let unwritten = files("9").await;
        assert_eq!(
            text(&unwritten, "b"),
            ("b1,b2,b3,".into(), Some("9".into()))
        );
        assert_eq!(
            text(&CaseFiles::only("7".into()), "b"),
            (String::new(), Some("7".into()))
        );
    }

    #[tokio::test]
    async fn a_listing_holds_the_oldest_files_up_to_the_limit() {
        let store = SqliteStore::open_memory().await.unwrap();
        let (listings, read) = (Listings::default(), AtomicUsize::new(0));
        add(&store, "c", &["1", "2"]).await;
        assert_eq!(
            list(&listings, &store, &read, "c", 3, "2").await,
            ["1", "2"]
        );
        add(&store, "c", &["3", "4"]).await;
        assert_eq!(
            list(&listings, &store, &read, "c", 3, "4").await,
            ["1", "2", "3", "4"]
        );
        add(&store, "c", &["5"]).await;
        assert_eq!(
            list(&listings, &store, &read, "c", 3, "5").await,
            ["1", "2", "3", "5"]
        );
        assert_eq!(
            list(&listings, &store, &read, "c", 3, "2").await,
            ["1", "2", "3"]
        );
        assert_eq!(
            read.load(Ordering::Relaxed),
            3,
            "nothing read once the listing is full"
        );
    }

    /// Another process sharing the ledger file deletes a file: the next answer reads
    /// the case whole again and no longer lists it.
    #[tokio::test]
    async fn a_deletion_by_another_process_is_seen() {
        let (_dir, ours, theirs) = two_processes().await;
        let (listings, read) = (Listings::default(), AtomicUsize::new(0));
        add(&ours, "c", &["1", "2", "3"]).await;
        assert_eq!(
            list(&listings, &ours, &read, "c", 100, "3").await,
            ["1", "2", "3"]
        );
        assert!(theirs.remove("r", "2", None).await.unwrap());
        add(&theirs, "c", &["4"]).await;
        assert_eq!(
            list(&listings, &ours, &read, "c", 100, "4").await,
            ["1", "3", "4"]
        );
        // And one of its files added meanwhile is listed too.
        add(&theirs, "c", &["5"]).await;
        assert_eq!(
            list(&listings, &ours, &read, "c", 100, "5").await,
            ["1", "3", "4", "5"]
        );
    }

    /// A store whose rows may become visible out of `seq` order (PostgreSQL) is read
    /// whole every time and nothing is kept.
    #[tokio::test]
    async fn a_store_without_ordered_commits_is_read_whole() {
        let store = SqliteStore::open_memory().await.unwrap();
        let (listings, read) = (Listings::default(), AtomicUsize::new(0));
        add(&store, "c", &["1", "2"]).await;
        let list = |new| list_as(&listings, &store, false, &read, "c", 100, new);
        assert_eq!(list("2").await, ["1", "2"]);
        add(&store, "c", &["3"]).await;
        assert_eq!(list("3").await, ["1", "2", "3"]);
        assert_eq!(read.load(Ordering::Relaxed), 5);
        assert_eq!(listings.counted(), (0, 0));
    }

    #[tokio::test]
    async fn the_least_recently_used_listings_go_first() {
        let store = SqliteStore::open_memory().await.unwrap();
        let (listings, read) = (Listings::bounded(8, 20), AtomicUsize::new(0));
        for case in 0..8 {
            add(
                &store,
                &format!("c{case}"),
                &[&format!("{case}a"), &format!("{case}b")],
            )
            .await;
        }
        for case in 0..8 {
            list(&listings, &store, &read, &format!("c{case}"), 100, "x").await;
        }
        assert_eq!(listings.counted(), (8, 16));
        // c0 is used again: it is the newest now.
        list(&listings, &store, &read, "c0", 100, "x").await;
        add(&store, "c8", &["8a", "8b", "8c", "8d", "8e"]).await;
        list(&listings, &store, &read, "c8", 100, "x").await;
        // 9 cases and 21 ids are over both bounds: the oldest go until at most 6 cases
        // and 15 ids are left.
        let (cases, ids) = listings.counted();
        assert!(cases <= 6 && ids <= 15, "{cases} cases, {ids} ids");
        let held = listings.held();
        let held: Vec<&String> = held.cases["r"].keys().collect();
        assert!(
            held.iter().any(|c| *c == "c0") && held.iter().any(|c| *c == "c8"),
            "{held:?}"
        );
        assert!(!held.iter().any(|c| *c == "c1"), "{held:?}");
    }
}
