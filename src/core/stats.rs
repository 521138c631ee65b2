//! The hub's counters and gauges: plain atomics, read without locking.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters. Gauges go up and down; counters only up.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub connections: AtomicU64,
    pub users: AtomicU64,
    pub subscriptions: AtomicU64,
    pub pushes: AtomicU64,
    pub deliveries: AtomicU64,
    pub drops: AtomicU64,
    pub broadcasts: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Joined connections now.
    pub connections: u64,
    /// Users with at least one joined connection now.
    pub users: u64,
    /// (connection, event) subscriptions now.
    pub subscriptions: u64,
    /// Pushes accepted since start.
    pub pushes: u64,
    /// Deliveries queued to connections since start.
    pub deliveries: u64,
    /// Deliveries dropped since start.
    pub drops: u64,
    /// Broadcasts accepted since start.
    pub broadcasts: u64,
}

impl Stats {
    pub(crate) fn joined(&self, events: usize, first_of_user: bool) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.subscriptions.fetch_add(events as u64, Ordering::Relaxed);
        if first_of_user {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn left(&self, events: usize, last_of_user: bool) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.subscriptions.fetch_sub(events as u64, Ordering::Relaxed);
        if last_of_user {
            self.users.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: get(&self.connections),
            users: get(&self.users),
            subscriptions: get(&self.subscriptions),
            pushes: get(&self.pushes),
            deliveries: get(&self.deliveries),
            drops: get(&self.drops),
            broadcasts: get(&self.broadcasts),
        }
    }
}
