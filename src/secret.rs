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

/// Constant-time equality of two byte strings of possibly different lengths: both are
/// hashed first, so neither the content nor the length of the expected value leaks
/// through timing.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    ha.ct_eq(&hb).into()
}

/// True when `presented` equals one of `accepted`, checking every candidate so the time
/// taken does not say which one matched.
pub fn ct_any(presented: &str, accepted: &[Secret]) -> bool {
    let mut found = false;
    for candidate in accepted {
        found |= ct_eq(presented.as_bytes(), candidate.expose().as_bytes());
    }
    found
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
    fn constant_time_compare() {
        let accepted = [Secret::new("a"), Secret::new("bb")];
        assert!(ct_any("bb", &accepted));
        assert!(!ct_any("b", &accepted));
        assert!(!ct_any("", &accepted));
    }
}
