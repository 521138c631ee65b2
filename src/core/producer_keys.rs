//! Producer API keys, checked in constant time.

/// Producer API keys, checked in constant time: each presented key is hashed
/// and compared with every configured key's hash, so neither the length nor
/// the content of a key leaks through timing. How a key travels (an
/// `authorization: Bearer` header or gRPC metadata) is the adapters' concern.
#[derive(Clone, Default)]
pub struct ProducerKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ProducerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProducerKeys({} configured)", self.digests.len())
    }
}

impl ProducerKeys {
    /// The keys given; an empty list means producers need no key.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(keys: I) -> Self {
        Self { digests: keys.into_iter().map(|k| digest(k.as_ref())).collect() }
    }

    /// True when at least one key is configured.
    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Checks a presented key (`None`: the caller presented none). Always
    /// true when no key is configured.
    pub fn check(&self, key: Option<&str>) -> bool {
        if !self.required() {
            return true;
        }
        let Some(key) = key else { return false };
        let presented = digest(key);
        let mut ok = subtle::Choice::from(0);
        for d in &self.digests {
            ok |= subtle::ConstantTimeEq::ct_eq(&presented[..], &d[..]);
        }
        ok.into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let keys = ProducerKeys::new(["k1", "k2"]);
        assert!(keys.check(Some("k1")) && keys.check(Some("k2")));
        assert!(!keys.check(Some("k3")) && !keys.check(Some("k1 ")) && !keys.check(None));
        assert!(ProducerKeys::new(Vec::<String>::new()).check(None), "no key configured: open");
    }
}
