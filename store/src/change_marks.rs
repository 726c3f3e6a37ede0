//! Which keys of a shard changed since the base image last took them: a dirty bit per
//! entry for each of two alternating checkpoint epochs, and tombstones for deleted keys the
//! base image may hold. A checkpoint flips the shard to the other epoch and drains the old
//! one, so writes meanwhile are noted for the next checkpoint and the drain terminates.
//! Shared by the node's keyspace and the embedded cache, which a checkpoint reads through
//! [`CheckpointSource`]. No I/O.

use std::ops::Range;
use std::sync::Weak;

use crate::change_log::ChangeLog;

/// Entry flags: changed in epoch 0 or 1.
pub const DIRTY: [u8; 2] = [1, 2];
/// Entry flag: the base image holds some version of this key, so deleting it must reach
/// the base image as a tombstone.
pub const IN_BASE: u8 = 4;

/// Entry flag: the key is from an earlier history of its slot, kept while a resync from
/// the slot's primary replaces it (a copy is never cleared before its replacement is
/// whole). Any write clears it; a key still flagged when the resync ends is deleted.
pub const STALE: u8 = 8;

/// A shard's change bookkeeping (the flags live in its entries).
#[derive(Debug, Default)]
pub struct ChangeMarks {
    /// The epoch changes are noted in now.
    pub epoch: usize,
    /// Entries flagged dirty in each epoch.
    pub dirty_count: [usize; 2],
    /// Keys deleted in each epoch that the base image may hold.
    pub tombstones: [Vec<Box<[u8]>>; 2],
}

impl ChangeMarks {
    /// Notes that the entry with `flags` changed.
    pub fn mark(&mut self, flags: &mut u8) {
        let bit = DIRTY[self.epoch];
        if *flags & bit == 0 {
            *flags |= bit;
            self.dirty_count[self.epoch] += 1;
        }
    }

    /// The entry with `flags` left the map (its dirty counts go with it).
    pub fn forget(&mut self, flags: u8) {
        for (count, bit) in self.dirty_count.iter_mut().zip(DIRTY) {
            if flags & bit != 0 {
                *count -= 1;
            }
        }
    }

    /// The entry with `flags` left the map for good: forgotten, and tombstoned when the
    /// base image may hold it.
    pub fn delete(&mut self, key: &[u8], flags: u8) {
        self.forget(flags);
        if flags & IN_BASE != 0 {
            self.tombstones[self.epoch].push(key.into());
        }
    }

    /// Starts a checkpoint: later changes go to the other epoch. The epoch to drain.
    pub fn flip(&mut self) -> usize {
        let drained = self.epoch;
        self.epoch = 1 - self.epoch;
        drained
    }

    /// Takes the entry's mark of `epoch` if it has one (the base image is about to hold it).
    pub fn take(&mut self, flags: &mut u8, epoch: usize) -> bool {
        let bit = DIRTY[epoch];
        if *flags & bit == 0 {
            return false;
        }
        *flags = (*flags & !bit) | IN_BASE;
        self.dirty_count[epoch] -= 1;
        true
    }

    /// A failed checkpoint: what `epoch` still marks moves to the current epoch. `flags`
    /// yields each entry's flags.
    pub fn restore<'a>(&mut self, epoch: usize, flags: impl Iterator<Item = &'a mut u8>) {
        if self.epoch == epoch {
            return;
        }
        let leftover = std::mem::take(&mut self.tombstones[epoch]);
        let current = self.epoch;
        self.tombstones[current].extend(leftover);
        if self.dirty_count[epoch] > 0 {
            for flag in flags {
                if *flag & DIRTY[epoch] != 0 {
                    *flag &= !DIRTY[epoch];
                    self.dirty_count[epoch] -= 1;
                    self.mark(flag);
                }
            }
        }
    }

    /// Takes `epoch`'s tombstones into `out`, each with `state_now` of its key (`None`
    /// unless it was written again since). True when `budget` ran out first.
    pub fn take_tombstones(
        &mut self,
        epoch: usize,
        budget: usize,
        stamp: u64,
        out: &mut ShardChanges,
        mut state_now: impl FnMut(&[u8]) -> Option<(Vec<u8>, u64)>,
    ) -> bool {
        while let Some(key) = self.tombstones[epoch].pop() {
            let state = state_now(&key);
            out.bytes += key.len() + state.as_ref().map_or(0, |(v, _)| v.len());
            out.entries.push(DirtyEntry { key, state, stamp });
            if out.bytes >= budget {
                return true;
            }
        }
        false
    }

    /// Takes `epoch`'s marked entries into `out` in one pass over `entries` (each entry's
    /// flags, and what `encode` turns into key, persisted value and deadline). True when
    /// `budget` ran out with some left.
    pub fn take_dirty<'a, E>(
        &mut self,
        epoch: usize,
        budget: usize,
        stamp: u64,
        out: &mut ShardChanges,
        entries: impl Iterator<Item = (&'a mut u8, E)>,
        encode: impl Fn(E) -> (Box<[u8]>, Vec<u8>, u64),
    ) -> bool {
        for (flags, entry) in entries {
            if self.dirty_count[epoch] == 0 {
                break;
            }
            if self.take(flags, epoch) {
                let (key, value, deadline) = encode(entry);
                out.bytes += key.len() + value.len();
                out.entries.push(DirtyEntry {
                    key,
                    state: Some((value, deadline)),
                    stamp,
                });
                if out.bytes >= budget {
                    return self.dirty_count[epoch] > 0;
                }
            }
        }
        false
    }

    /// Changes noted and not taken, both epochs.
    pub fn pending(&self) -> usize {
        self.dirty_count.iter().sum::<usize>() + self.tombstones.iter().map(Vec::len).sum::<usize>()
    }
}

/// A changed key as a checkpoint (or a spill) writes it: its state now, or its absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyEntry {
    /// The key.
    pub key: Box<[u8]>,
    /// `Value::to_persisted` bytes and the deadline (0 = none), or `None`: deleted.
    pub state: Option<(Vec<u8>, u64)>,
    /// The last LSN the state reflects: a replayed record at or below it is skipped.
    pub stamp: u64,
}

/// What one take of a shard's changes collected.
#[derive(Debug, Default)]
pub struct ShardChanges {
    /// A FLUSHALL emptied the shard: drop what its range of the base image holds with a
    /// stamp below this LSN first. 0: none.
    pub cleared_before: u64,
    /// Changed keys: a key's tombstone before its entry (deleted, then written again, it
    /// ends with the entry).
    pub entries: Vec<DirtyEntry>,
    /// Bytes of keys and values collected.
    pub bytes: usize,
}

/// What a checkpoint reads changes from: the node's keyspace, or the embedded cache. Each
/// keeps [`ChangeMarks`] per shard; the checkpoint reads the log position, flips every
/// shard, then drains the old epoch shard by shard.
pub trait CheckpointSource: Send + Sync {
    /// Number of shards.
    fn shard_count(&self) -> usize;
    /// The slots shard `index` holds, when shards are slot ranges (a FLUSHALL clears one
    /// range of the base image); `0..0` otherwise.
    fn shard_slots(&self, index: usize) -> Range<u16>;
    /// Flips shard `index` to the other epoch; the epoch to drain.
    fn flip(&self, index: usize) -> usize;
    /// Takes up to about `budget` bytes of shard `index`'s changes in `epoch`, each stamped
    /// with `log`'s position read under the shard lock; false once none is left.
    fn take_changes(
        &self,
        index: usize,
        epoch: usize,
        budget: usize,
        log: &ChangeLog,
        out: &mut ShardChanges,
    ) -> bool;
    /// A checkpoint failed: `deleted` keys and what `epoch` still marks are noted again.
    fn abort_checkpoint(&self, epoch: usize, deleted: Vec<Box<[u8]>>);
    /// Notes every key as changed (the next checkpoint writes all of them).
    fn mark_all_dirty(&self);
    /// Changes not yet taken.
    fn pending_changes(&self) -> usize;
    /// Bytes held in memory (sizes the first layout).
    fn used_memory(&self) -> usize;
}

/// A source held weakly, so a checkpoint thread does not keep its keeper alive (the
/// embedded cache stops its tier when dropped). Gone, it has nothing to give.
pub struct WeakSource<T>(pub Weak<T>);

impl<T: CheckpointSource> CheckpointSource for WeakSource<T> {
    fn shard_count(&self) -> usize {
        self.0.upgrade().map_or(0, |s| s.shard_count())
    }
    fn shard_slots(&self, index: usize) -> Range<u16> {
        self.0.upgrade().map_or(0..0, |s| s.shard_slots(index))
    }
    fn flip(&self, index: usize) -> usize {
        self.0.upgrade().map_or(0, |s| s.flip(index))
    }
    fn take_changes(
        &self,
        index: usize,
        epoch: usize,
        budget: usize,
        log: &ChangeLog,
        out: &mut ShardChanges,
    ) -> bool {
        self.0
            .upgrade()
            .is_some_and(|s| s.take_changes(index, epoch, budget, log, out))
    }
    fn abort_checkpoint(&self, epoch: usize, deleted: Vec<Box<[u8]>>) {
        if let Some(s) = self.0.upgrade() {
            s.abort_checkpoint(epoch, deleted);
        }
    }
    fn mark_all_dirty(&self) {
        if let Some(s) = self.0.upgrade() {
            s.mark_all_dirty();
        }
    }
    fn pending_changes(&self) -> usize {
        self.0.upgrade().map_or(0, |s| s.pending_changes())
    }
    fn used_memory(&self) -> usize {
        self.0.upgrade().map_or(0, |s| s.used_memory())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_separates_what_a_checkpoint_drains_from_what_comes_after() {
        let mut marks = ChangeMarks::default();
        let (mut a, mut b) = (0u8, IN_BASE);
        marks.mark(&mut a);
        marks.mark(&mut a);
        assert_eq!(
            marks.dirty_count,
            [1, 0],
            "marked once however often it changed"
        );
        let drained = marks.flip();
        marks.mark(&mut b);
        assert!(marks.take(&mut a, drained));
        assert!(!marks.take(&mut b, drained), "b changed after the flip");
        assert_eq!(a, IN_BASE);
        marks.delete(b"b", b);
        assert_eq!(marks.tombstones[1], vec![b"b".as_slice().into()]);
        assert_eq!(marks.pending(), 1);
    }

    #[test]
    fn a_failed_checkpoint_puts_its_marks_back() {
        let mut marks = ChangeMarks::default();
        let mut flags = [0u8, 0, IN_BASE];
        for f in &mut flags[..2] {
            marks.mark(f);
        }
        marks.delete(b"gone", IN_BASE);
        let drained = marks.flip();
        assert!(marks.take(&mut flags[0], drained));
        marks.restore(drained, flags.iter_mut());
        assert_eq!(marks.dirty_count, [0, 1]);
        assert_eq!(marks.tombstones[1].len(), 1);
        assert_ne!(flags[1] & DIRTY[1], 0);
    }

    #[test]
    fn takes_in_budgeted_rounds_tombstones_first_each_change_once() {
        let mut marks = ChangeMarks::default();
        let keys: Vec<Box<[u8]>> = (0..10)
            .map(|i| format!("key{i}").into_bytes().into())
            .collect();
        let mut flags = vec![0u8; keys.len()];
        for f in &mut flags[..7] {
            marks.mark(f);
        }
        marks.delete(b"gone1", IN_BASE);
        marks.delete(b"gone2", IN_BASE);
        marks.delete(b"never-stored", 0);
        let drained = marks.flip();
        marks.mark(&mut flags[9]);
        let mut rounds = Vec::new();
        loop {
            let mut out = ShardChanges::default();
            // About two entries a round.
            let more = marks.take_tombstones(drained, 10, 5, &mut out, |_| None)
                || marks.take_dirty(
                    drained,
                    10,
                    5,
                    &mut out,
                    flags.iter_mut().zip(&keys),
                    |key| (key.clone(), b"v".to_vec(), 0),
                );
            rounds.push(out.entries);
            if !more {
                break;
            }
            assert!(rounds.len() < 20, "draining terminates");
        }
        let taken: Vec<(String, bool)> = rounds
            .iter()
            .flatten()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.key).into_owned(),
                    e.state.is_some(),
                )
            })
            .collect();
        assert!(rounds.iter().all(|r| r.len() <= 2), "{rounds:?}");
        assert!(rounds.iter().flatten().all(|e| e.stamp == 5));
        let expected: Vec<(String, bool)> = [("gone2", false), ("gone1", false)]
            .into_iter()
            .map(|(k, s)| (k.to_string(), s))
            .chain((0..7).map(|i| (format!("key{i}"), true)))
            .collect();
        assert_eq!(taken, expected);
        assert_eq!(marks.dirty_count, [0, 1], "key9 changed after the flip");
        assert_eq!(flags[9] & IN_BASE, 0);
        assert!(flags[..7].iter().all(|f| *f == IN_BASE));
    }
}
