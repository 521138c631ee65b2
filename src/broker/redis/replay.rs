//! The resume rule over a user's raw history, as the hub's own replay has
//! it (src/core/history.rs): what a client that saw `since` gets, and
//! whether that is everything it missed.

use std::sync::Arc;

use super::codec;
use super::codec::Stamped;
use crate::core::Since;

/// A user's position and the pushes a resume replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The user's latest seq (0 before any push).
    pub seq: u64,
    /// The epoch of the user's stream.
    pub epoch: Arc<str>,
    /// Kept pushes with a seq above `since`, oldest first, without those
    /// whose own ttl has passed.
    pub messages: Vec<Stamped>,
    /// False when the replay may miss pushes: another epoch, history that no
    /// longer reaches back to `since + 1`, or `since` beyond the latest seq.
    pub complete: bool,
}

/// The page for `since` out of the raw history `entries` (oldest first),
/// given the user's `seq` and `epoch` and Redis's clock: entries accepted
/// before `kept_from` count as evicted, entries past their own expiry are
/// left out without making the page incomplete.
pub(crate) fn replay(
    since: &Since,
    seq: u64,
    epoch: Arc<str>,
    entries: &[Vec<u8>],
    now_ms: u64,
    kept_from: u64,
) -> HistoryPage {
    let same_epoch = since.seq == 0 || since.epoch.as_deref().is_none_or(|e| e == &*epoch);
    let mut floor = seq;
    let mut intact = true;
    let mut messages = Vec::new();
    for entry in entries {
        let m = match codec::decode_stamped(entry) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "redis broker skipped a malformed history entry");
                intact = false;
                continue;
            }
        };
        if m.ts_ms < kept_from {
            continue;
        }
        floor = floor.min(m.seq.saturating_sub(1));
        if m.seq > since.seq && m.expires_at_ms.is_none_or(|t| now_ms < t) {
            messages.push(m);
        }
    }
    let complete = same_epoch && intact && since.seq >= floor && since.seq <= seq;
    if !same_epoch || since.seq > seq {
        messages.clear();
    }
    HistoryPage { seq, epoch, messages, complete }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::codec::encode_stamped;
    use super::*;
    use crate::core::Payload;

    fn entry(seq: u64, ts_ms: u64, expires_at_ms: Option<u64>) -> Vec<u8> {
        encode_stamped(&Stamped {
            event: Arc::from("e"),
            seq,
            ts_ms,
            payload: Payload::text("x"),
            expires_at_ms,
            epoch: Arc::from("ep"),
        })
        .unwrap()
    }

    fn seqs(page: &HistoryPage) -> Vec<u64> {
        page.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn replays_after_since_and_knows_when_it_reaches_back() {
        let entries: Vec<_> = (3..=5).map(|s| entry(s, 1000, None)).collect();
        let page = replay(&Since::seq(2), 5, Arc::from("ep"), &entries, 2000, 0);
        assert_eq!((seqs(&page), page.complete), (vec![3, 4, 5], true));
        let page = replay(&Since::seq(1), 5, Arc::from("ep"), &entries, 2000, 0);
        assert_eq!((seqs(&page), page.complete), (vec![3, 4, 5], false));
        let page = replay(&Since::seq(5), 5, Arc::from("ep"), &entries, 2000, 0);
        assert_eq!((seqs(&page), page.complete), (vec![], true));
        let page = replay(&Since::seq(6), 5, Arc::from("ep"), &entries, 2000, 0);
        assert_eq!((seqs(&page), page.complete), (vec![], false));
    }

    #[test]
    fn another_epoch_replays_nothing() {
        let entries: Vec<_> = (1..=2).map(|s| entry(s, 1000, None)).collect();
        let old = Since { seq: 1, epoch: Some("old".into()) };
        let page = replay(&old, 2, Arc::from("ep"), &entries, 2000, 0);
        assert_eq!((seqs(&page), page.complete), (vec![], false));
        let zero = Since { seq: 0, epoch: Some("old".into()) };
        let page = replay(&zero, 2, Arc::from("ep"), &entries, 2000, 0);
        assert_eq!((seqs(&page), page.complete), (vec![1, 2], true));
    }

    #[test]
    fn expired_messages_are_left_out_and_old_ones_count_as_evicted() {
        let entries = vec![entry(1, 100, None), entry(2, 1000, Some(1500)), entry(3, 1000, None)];
        // Entry 1 is older than the history ttl: gone, so a resume from 0 misses it.
        let page = replay(&Since::seq(0), 3, Arc::from("ep"), &entries, 2000, 500);
        assert_eq!((seqs(&page), page.complete), (vec![3], false));
        // Entry 2's own ttl passed: left out, still complete.
        let page = replay(&Since::seq(1), 3, Arc::from("ep"), &entries, 2000, 500);
        assert_eq!((seqs(&page), page.complete), (vec![3], true));
    }

    #[test]
    fn a_malformed_entry_makes_the_page_incomplete() {
        let entries = vec![vec![9, 9], entry(2, 1000, None)];
        let page = replay(&Since::seq(1), 2, Arc::from("ep"), &entries, 2000, 0);
        assert_eq!((seqs(&page), page.complete), (vec![2], false));
    }
}
