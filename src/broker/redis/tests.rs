//! The replay rule over raw history entries (the scripts are exercised
//! against a real Redis in tests/redis_broker.rs).

use std::sync::Arc;

use super::codec::{Stamped, encode_stamped};
use super::*;

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
