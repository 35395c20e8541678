//! A list read far more often than written: readers take a cheap snapshot.

use std::sync::{Arc, RwLock};

pub(crate) struct CowList<T> {
    items: RwLock<Arc<[T]>>,
}

impl<T> Default for CowList<T> {
    fn default() -> Self {
        Self { items: RwLock::new(Arc::from(Vec::new())) }
    }
}

impl<T: Clone> CowList<T> {
    /// The list as it is now; later changes do not affect the snapshot.
    pub(crate) fn snapshot(&self) -> Arc<[T]> {
        self.items.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn push(&self, item: T) {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        let mut next = items.to_vec();
        next.push(item);
        *items = next.into();
    }

    /// Keeps the items for which `keep` is true; returns how many were removed.
    pub(crate) fn retain(&self, keep: impl Fn(&T) -> bool) -> usize {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        let next: Vec<T> = items.iter().filter(|i| keep(i)).cloned().collect();
        let removed = items.len() - next.len();
        *items = next.into();
        removed
    }
}
