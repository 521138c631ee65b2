//! Idempotency keys: a push whose key a user already saw within the window is
//! acknowledged with the first push's seq and not delivered again (docs/api.md, "PushService").

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most keys remembered per user; past it the oldest is forgotten.
const MAX_KEYS_PER_USER: usize = 4096;

/// One user's recent idempotency keys with the seq each was given.
#[derive(Debug, Default)]
pub(crate) struct RecentKeys {
    seqs: HashMap<Arc<str>, u64>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl RecentKeys {
    /// The seq given to `key`, if it was seen within the window.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        self.seqs.get(key).copied()
    }

    /// Remembers `key` as given `seq`.
    pub(crate) fn insert(&mut self, key: String, seq: u64, now: Instant) {
        if self.order.len() >= MAX_KEYS_PER_USER {
            self.pop_oldest();
        }
        let key: Arc<str> = Arc::from(key);
        self.seqs.insert(Arc::clone(&key), seq);
        self.order.push_back((now, key));
    }

    fn pop_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.seqs.remove(&key);
        }
    }

    /// Forgets keys older than `window`. Returns true when none is left.
    pub(crate) fn expire(&mut self, window: Duration, now: Instant) -> bool {
        while self.order.front().is_some_and(|(at, _)| now.duration_since(*at) > window) {
            self.pop_oldest();
        }
        self.order.is_empty()
    }
}
