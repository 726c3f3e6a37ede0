//! The synchronisation primitives the flight table uses: std's normally, loom's under
//! `--cfg ringkv_loom` so the model checker can explore every interleaving.

#[cfg(ringkv_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(ringkv_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks, ignoring poisoning: no code holding these locks can panic, and a flight must keep
/// working after a loader panicked elsewhere.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
