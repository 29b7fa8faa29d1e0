//! The per-key state of the keyed limits: a map from each key to its cell, and each service
//! instance's shortcut to the cell of the last key it saw.
//!
//! A connection's requests all come from one peer, and a server keeps one service instance per
//! connection, so the instance finds its key's cell without hashing the key or locking the map:
//! a keyed limit then costs an atomic operation or two per call. The map is the authority: a
//! cell leaves it only by being *retired* (a state no call can change any more), atomically with
//! its removal, so an instance still holding it sees that and looks its key up again. Two live
//! cells never count calls for one key.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// What a cell must tell: whether it has been retired.
pub(super) trait Cell: Default {
    /// Whether the cell has left the map, so that its key must be looked up again.
    fn is_retired(&self) -> bool;
}

/// The cells by key. Keys come from the network, so the map hashes them with SipHash (resists
/// chosen collisions).
pub(super) struct Cells<K, C> {
    map: DashMap<K, Arc<C>>,
    /// `map.len()`, without visiting every shard.
    len: AtomicUsize,
}

impl<K: Eq + Hash + Clone, C: Cell> Cells<K, C> {
    pub(super) fn new() -> Self {
        Self {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
        }
    }

    /// `key`'s cell, if it has one.
    pub(super) fn find(&self, key: &K) -> Option<Arc<C>> {
        self.map.get(key).map(|cell| cell.clone())
    }

    /// `key`'s cell, made if it has none.
    pub(super) fn lookup(&self, key: &K) -> Arc<C> {
        if let Some(cell) = self.find(key) {
            return cell;
        }
        self.map
            .entry(key.clone())
            .or_insert_with(|| {
                self.len.fetch_add(1, Ordering::Relaxed);
                Arc::default()
            })
            .clone()
    }

    /// Removes `key`'s cell if it is `cell` and `retire` retires it; both happen under the map's
    /// lock, so no lookup hands the cell out in between.
    pub(super) fn remove_if(&self, key: &K, cell: &Arc<C>, retire: impl FnOnce(&C) -> bool) {
        let removed = self
            .map
            .remove_if(key, |_, c| Arc::ptr_eq(c, cell) && retire(c));
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes every cell that `retire` retires.
    pub(super) fn retire_where(&self, mut retire: impl FnMut(&C) -> bool) {
        self.map.retain(|_, c| {
            let retired = retire(c);
            if retired {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            !retired
        });
    }

    pub(super) fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    /// The number of keys with a cell.
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// A key and its cell.
pub(super) struct Handle<K, C> {
    pub(super) key: K,
    pub(super) cell: Arc<C>,
}

impl<K: Clone, C> Clone for Handle<K, C> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            cell: self.cell.clone(),
        }
    }
}

impl<K: PartialEq, C> PartialEq for Handle<K, C> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<K: Eq, C> Eq for Handle<K, C> {}

impl<K: Hash, C> Hash for Handle<K, C> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// A service instance's shortcut: the last key it saw, with its cell.
pub(super) struct Last<K, C>(Option<Handle<K, C>>);

impl<K, C> Default for Last<K, C> {
    fn default() -> Self {
        Self(None)
    }
}

impl<K: Clone, C> Clone for Last<K, C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: Eq + Hash + Clone, C: Cell> Last<K, C> {
    /// `key` with its live cell: the one kept from the last call when the key is the same and
    /// the cell not retired, else the one `lookup` gives (which is then kept), if any.
    pub(super) fn get(
        &mut self,
        key: K,
        lookup: impl FnOnce(&K) -> Option<Arc<C>>,
    ) -> Option<&Handle<K, C>> {
        let hit = self
            .0
            .as_ref()
            .is_some_and(|h| h.key == key && !h.cell.is_retired());
        if !hit {
            let cell = lookup(&key)?;
            self.0 = Some(Handle { key, cell });
        }
        self.0.as_ref()
    }
}
