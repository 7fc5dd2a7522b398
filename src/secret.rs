//! A string that must never be printed: tokens, API keys, passwords, signing keys.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A secret value. `Debug` and `Display` print `***`; the value is reachable only through
/// [`Secret::expose`], so every place that uses it is easy to find.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only to compare it or to put it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// An HMAC-SHA256 key, keyed once: each MAC starts from a copy of the state after the
/// key's inner and outer blocks instead of hashing them again (two of the five SHA-256
/// blocks a short message's MAC takes). `Debug` prints `***`.
#[derive(Clone)]
pub struct MacKey(Option<hmac::Hmac<sha2::Sha256>>);

impl MacKey {
    pub fn new(key: &Secret) -> Self {
        use hmac::Mac;
        MacKey(hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes()).ok())
    }

    /// A MAC under this key, to be fed the message. None when HMAC refused the key (it
    /// takes keys of any length, so never in practice): a caller then signs nothing and
    /// verifies nothing.
    pub fn mac(&self) -> Option<hmac::Hmac<sha2::Sha256>> {
        self.0.clone()
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The credentials a route accepts, kept as their SHA-256 digests: a presented one is
/// hashed once and its digest compared with each, every one of them, in constant time, so
/// neither the content nor the length of an accepted value, nor which one matched, leaks
/// through timing. The accepted values are hashed once, at start-up: a check runs SHA-256
/// once, where it ran it twice per accepted token, and compares four words per token,
/// where a byte-by-byte compare took about 1 700 instructions. `Debug` prints how many
/// there are.
#[derive(Clone)]
pub struct Accepted(Vec<[u64; 4]>);

impl Accepted {
    pub fn new(tokens: &[Secret]) -> Self {
        Accepted(
            tokens
                .iter()
                .map(|t| digest(t.expose().as_bytes()))
                .collect(),
        )
    }

    /// No credentials: an open route.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `presented` is one of the accepted credentials.
    pub fn matches(&self, presented: &str) -> bool {
        let presented = digest(presented.as_bytes());
        let mut found = subtle::Choice::from(0);
        for accepted in &self.0 {
            found |= same(&presented, accepted);
        }
        found.into()
    }
}

/// Whether two digests are equal, every word compared whatever the others hold.
fn same(a: &[u64; 4], b: &[u64; 4]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a[..].ct_eq(&b[..])
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} token(s) ***", self.0.len())
    }
}

/// The SHA-256 digest of `value`, as four words.
fn digest(value: &[u8]) -> [u64; 4] {
    use sha2::{Digest, Sha256};
    let bytes = Sha256::digest(value);
    let mut words = [0u64; 4];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        *word = u64::from_ne_bytes(eight);
    }
    words
}

/// Which check a signed token passed: one per route's
/// [`FrontAuth`](crate::dialect::FrontAuth) as built (its clones share it), so that a
/// token verified for one route, or under a key a reload has since replaced, is never
/// taken as verified for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckId(u64);

impl CheckId {
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        CheckId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The signed tokens a thread holds as verified (see [`verified`]).
const VERIFIED_HELD: usize = 4;
/// The longest token held as verified; a longer one is verified each time.
const VERIFIED_LONGEST: usize = 512;

struct Held {
    check: CheckId,
    expires: u64,
    token: Box<[u8]>,
}

thread_local! {
    /// The tokens this thread verified lately, and the slot the next one takes.
    static VERIFIED: RefCell<(usize, [Option<Held>; VERIFIED_HELD])> =
        const { RefCell::new((0, [None, None, None, None])) };
}

/// Whether `token` holds for `check` at `now` (seconds): true when its signature holds and
/// it expires after `now`. `verify` checks the signature and gives the token's expiry
/// (None: it does not hold). A client sends the same access token with every request, so
/// a token that holds is kept, per thread, with its expiry, and checked again only by
/// comparing it whole with the one kept, in constant time (as Envoy's `jwt_authn` keeps
/// the tokens it verified): a Case IQ front's signature check (an HMAC over the token's
/// parts, with the parsing around it) was about 1 % of casegate's CPU per upload. At most
/// [`VERIFIED_HELD`] tokens per thread, the oldest given up first; a token that does not
/// hold is never kept.
pub fn verified(
    check: CheckId,
    token: &str,
    now: u64,
    verify: impl FnOnce() -> Option<u64>,
) -> bool {
    let token = token.as_bytes();
    let held = VERIFIED.with_borrow(|(_, slots)| {
        let mut expires = None;
        for slot in slots.iter().flatten() {
            if slot.check == check && same_bytes(&slot.token, token) {
                expires = Some(slot.expires);
            }
        }
        expires
    });
    if let Some(expires) = held {
        return expires > now;
    }
    let Some(expires) = verify() else {
        return false;
    };
    if expires > now && token.len() <= VERIFIED_LONGEST {
        VERIFIED.with_borrow_mut(|(next, slots)| {
            slots[*next] = Some(Held {
                check,
                expires,
                token: token.into(),
            });
            *next = (*next + 1) % VERIFIED_HELD;
        });
    }
    expires > now
}

/// Whether two byte strings are equal, every byte compared whatever the others hold (only
/// their lengths are compared first). Eight bytes at a time: `subtle`'s comparison of
/// slices takes a byte at a time, each through an optimisation barrier, on every request.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut diff = 0u64;
    for (x, y) in wa.remainder().iter().zip(wb.remainder()) {
        diff |= u64::from(x ^ y);
    }
    for (x, y) in wa.zip(wb) {
        let (mut ex, mut ey) = ([0u8; 8], [0u8; 8]);
        ex.copy_from_slice(x);
        ey.copy_from_slice(y);
        diff |= u64::from_ne_bytes(ex) ^ u64::from_ne_bytes(ey);
    }
    diff.ct_eq(&0).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// `verified`, counting the calls of its `verify`.
    fn check(id: CheckId, token: &str, now: u64, answer: Option<u64>, calls: &Cell<u32>) -> bool {
        verified(id, token, now, || {
            calls.set(calls.get() + 1);
            answer
        })
    }

    /// A check and a token verified for it at 1000, expiring at 1060: held from then on.
    fn held(calls: &Cell<u32>) -> (CheckId, &'static str) {
        let (id, token) = (
            CheckId::fresh(),
            "cgt1.1060.n0nce.0123456789abcdef0123456789abcdef",
        );
        assert!(check(id, token, 1000, Some(1060), calls));
        (id, token)
    }

    #[test]
    fn a_verified_token_is_checked_again_by_comparing_it_until_it_expires() {
        let calls = Cell::new(0);
        let (id, token) = held(&calls);
        assert!(
            check(id, token, 1059, None, &calls),
            "held: not verified again"
        );
        assert_eq!(calls.get(), 1);
        assert!(!check(id, token, 1060, Some(1060), &calls), "expired");
        assert!(!check(id, token, 2000, Some(1060), &calls), "expired");
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn another_check_or_another_token_is_verified_itself() {
        let calls = Cell::new(0);
        let (id, token) = held(&calls);
        assert!(
            !check(CheckId::fresh(), token, 1000, None, &calls),
            "another route"
        );
        let last = token.len() - 1;
        for other in [
            format!("{}0", &token[..last]),
            format!("x{}", &token[1..]),
            token[..last].to_string(),
            format!("{token}f"),
            String::new(),
        ] {
            assert_ne!(other, token);
            assert!(!check(id, &other, 1000, None, &calls), "{other}");
        }
        assert_eq!(calls.get(), 7);
        assert!(check(id, token, 1000, None, &calls), "still held");
        assert_eq!(calls.get(), 7);
    }

    #[test]
    fn only_tokens_that_hold_are_kept_and_only_the_last_four() {
        let (id, calls) = (CheckId::fresh(), Cell::new(0));
        assert!(!check(id, "bad", 1000, None, &calls));
        assert!(!check(id, "bad", 1000, None, &calls));
        assert!(
            !check(id, "old", 1000, Some(999), &calls),
            "expired when verified"
        );
        assert!(!check(id, "old", 1000, Some(999), &calls));
        assert_eq!(calls.get(), 4);
        let long = "t".repeat(VERIFIED_LONGEST + 1);
        assert!(check(id, &long, 1000, Some(1060), &calls));
        assert!(
            check(id, &long, 1000, Some(1060), &calls),
            "too long to keep"
        );
        assert_eq!(calls.get(), 6);
        let tokens: Vec<String> = (0..=VERIFIED_HELD).map(|n| format!("token-{n}")).collect();
        for t in &tokens {
            assert!(check(id, t, 1000, Some(1060), &calls));
        }
        assert_eq!(calls.get(), 6 + 5);
        for t in &tokens[1..] {
            assert!(check(id, t, 1000, None, &calls), "{t} held");
        }
        assert_eq!(calls.get(), 11);
        assert!(
            check(id, &tokens[0], 1000, Some(1060), &calls),
            "the oldest given up"
        );
        assert_eq!(calls.get(), 12);
    }

    #[test]
    fn bytes_are_the_same_only_when_equal() {
        let a: Vec<u8> = (0u8..40).collect();
        for len in 0..a.len() {
            assert!(same_bytes(&a[..len], &a[..len]));
            assert!(!same_bytes(&a[..len], &a[..len + 1]));
            for at in 0..len {
                let mut b = a[..len].to_vec();
                b[at] ^= 0x80;
                assert!(!same_bytes(&a[..len], &b), "{len} {at}");
            }
        }
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{:?}", MacKey::new(&s)), "***");
    }

    #[test]
    fn a_mac_key_macs_as_hmac_keyed_each_time() {
        use hmac::Mac;
        for key in ["", "k3y", &"long key ".repeat(20)] {
            let kept = MacKey::new(&Secret::new(key));
            for msg in ["", "cgt1.route.1.n", &"m".repeat(200)] {
                let mut fresh = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
                fresh.update(msg.as_bytes());
                let mut mac = kept.mac().unwrap();
                mac.update(msg.as_bytes());
                assert_eq!(mac.finalize().into_bytes(), fresh.finalize().into_bytes());
            }
        }
    }

    #[test]
    fn a_presented_token_matches_only_an_accepted_one() {
        let long = "x".repeat(200);
        let accepted = Accepted::new(&[Secret::new("a"), Secret::new("bb"), Secret::new(&long)]);
        for good in ["a", "bb", long.as_str()] {
            assert!(accepted.matches(good), "{good}");
        }
        // A prefix, an extension, a change in the last byte, another case, nothing.
        let near = [&long[..199], "b", "bbb", "bc", "A", "", " bb"];
        for bad in near.iter().copied().chain([format!("{long}x").as_str()]) {
            assert!(!accepted.matches(bad), "{bad}");
        }
        assert!(!Accepted::new(&[]).matches(""));
        assert!(Accepted::new(&[Secret::new("")]).matches(""));
        assert_eq!(format!("{accepted:?}"), "3 token(s) ***");
    }

    #[test]
    fn digests_that_differ_in_any_bit_of_any_word_are_not_the_same() {
        let a = digest(b"token");
        assert!(bool::from(same(&a, &a)));
        for word in 0..4 {
            for bit in [0, 31, 63] {
                let mut b = a;
                b[word] ^= 1 << bit;
                assert!(!bool::from(same(&a, &b)), "word {word} bit {bit}");
            }
        }
    }
}
