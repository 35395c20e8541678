//! A list read far more often than written: readers take a cheap snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub(crate) struct CowList<T> {
    items: RwLock<Arc<[T]>>,
    /// `items.len()`, read without the lock: asking whether the list is empty
    /// (every push of every socket does) writes no shared cache line, where a
    /// snapshot takes the lock and a reference count.
    len: AtomicUsize,
}

impl<T> Default for CowList<T> {
    fn default() -> Self {
        Self { items: RwLock::new(Arc::from(Vec::new())), len: AtomicUsize::new(0) }
    }
}

impl<T: Clone> CowList<T> {
    /// The list as it is now; later changes do not affect the snapshot.
    pub(crate) fn snapshot(&self) -> Arc<[T]> {
        self.items.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the list is empty now.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub(crate) fn push(&self, item: T) {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        let mut next = items.to_vec();
        next.push(item);
        self.len.store(next.len(), Ordering::Release);
        *items = next.into();
    }

    /// Keeps the items for which `keep` is true; returns how many were removed.
    pub(crate) fn retain(&self, keep: impl Fn(&T) -> bool) -> usize {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        let next: Vec<T> = items.iter().filter(|i| keep(i)).cloned().collect();
        let removed = items.len() - next.len();
        self.len.store(next.len(), Ordering::Release);
        *items = next.into();
        removed
    }
}
