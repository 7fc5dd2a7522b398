//! A string that must never be printed: tokens, API keys, passwords, signing keys.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
