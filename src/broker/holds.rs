//! The users a node holds: a count of each user's connections here, with the
//! broker's state for the user, created on the first connection and handed
//! back after the last. Shared by the cluster brokers (Redis, NATS).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::core::UserId;

/// Users with connections on this node, each with a broker's `V`.
pub(crate) struct Holds<V> {
    map: Mutex<HashMap<UserId, Hold<V>>>,
}

/// One held user.
pub(crate) struct Hold<V> {
    /// Connections admitted and not yet gone.
    connections: usize,
    /// The broker's state for the user.
    pub(crate) state: V,
}

impl<V> Default for Holds<V> {
    fn default() -> Self {
        Self { map: Mutex::new(HashMap::new()) }
    }
}

impl<V> Holds<V> {
    /// The map, locked. A poisoned map is still consistent: every change is
    /// one insert, remove or field update.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<UserId, Hold<V>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more connection of `user` (its state made by `make` for the
    /// first) and returns what `pick` takes from the state.
    pub(crate) fn add<R>(&self, user: &UserId, make: impl FnOnce() -> V, pick: impl FnOnce(&V) -> R) -> R {
        let mut map = self.lock();
        let hold = map.entry(UserId::clone(user)).or_insert_with(|| Hold { connections: 0, state: make() });
        hold.connections += 1;
        pick(&hold.state)
    }

    /// Counts one connection of `user` fewer; returns its state when that was
    /// the last one.
    pub(crate) fn remove(&self, user: &UserId) -> Option<V> {
        let mut map = self.lock();
        match map.get_mut(user) {
            Some(hold) if hold.connections > 1 => {
                hold.connections -= 1;
                None
            }
            Some(_) => map.remove(user).map(|hold| hold.state),
            None => None,
        }
    }
}
