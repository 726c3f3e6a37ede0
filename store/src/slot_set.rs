//! A set of cluster slots as a 16384-bit bitmap (2 KiB): what a replica link carries, what
//! a snapshot walks and what a slot clear removes. Pure code.

use crate::slot::SLOT_COUNT;

const WORDS: usize = SLOT_COUNT as usize / 64;

/// A set of slots.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet {
    words: Box<[u64; WORDS]>,
}

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet {
            words: Box::new([0; WORDS]),
        }
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet{:?}", self.ranges())
    }
}

impl SlotSet {
    /// The empty set.
    pub fn new() -> SlotSet {
        SlotSet::default()
    }

    /// The set of these inclusive ranges (slots past the last one are ignored).
    pub fn from_ranges(ranges: &[(u16, u16)]) -> SlotSet {
        let mut set = SlotSet::new();
        for &(first, last) in ranges {
            for slot in first..=last.min(SLOT_COUNT - 1) {
                set.insert(slot);
            }
        }
        set
    }

    /// Adds a slot (ignored past the last slot).
    pub fn insert(&mut self, slot: u16) {
        if slot < SLOT_COUNT {
            self.words[usize::from(slot / 64)] |= 1 << (slot % 64);
        }
    }

    /// Removes a slot.
    pub fn remove(&mut self, slot: u16) {
        if slot < SLOT_COUNT {
            self.words[usize::from(slot / 64)] &= !(1 << (slot % 64));
        }
    }

    /// True when the slot is in the set.
    pub fn contains(&self, slot: u16) -> bool {
        slot < SLOT_COUNT && self.words[usize::from(slot / 64)] & (1 << (slot % 64)) != 0
    }

    /// Number of slots in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when no slot is in the set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// True when some slot in `first..=last` is in the set.
    pub fn intersects_range(&self, first: u16, last: u16) -> bool {
        (first..=last.min(SLOT_COUNT - 1)).any(|slot| self.contains(slot))
    }

    /// Slots in both sets.
    pub fn intersection(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        for (word, theirs) in out.words.iter_mut().zip(other.words.iter()) {
            *word &= theirs;
        }
        out
    }

    /// Slots in this set or in `other`.
    pub fn union(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        for (word, theirs) in out.words.iter_mut().zip(other.words.iter()) {
            *word |= theirs;
        }
        out
    }

    /// Slots in this set and not in `other`.
    pub fn difference(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        for (word, theirs) in out.words.iter_mut().zip(other.words.iter()) {
            *word &= !theirs;
        }
        out
    }

    /// True when every slot of this set is in `other`.
    pub fn is_subset(&self, other: &SlotSet) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .all(|(mine, theirs)| mine & !theirs == 0)
    }

    /// The slots in ascending order (word by word: a sparse set costs its words, not 16384
    /// tests).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some((i * 64) as u16 + bit as u16)
            })
        })
    }

    /// The set as ascending inclusive ranges (what goes on the wire).
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for slot in self.iter() {
            match ranges.last_mut() {
                Some((_, last)) if *last + 1 == slot => *last = slot,
                _ => ranges.push((slot, slot)),
            }
        }
        ranges
    }
}

impl FromIterator<u16> for SlotSet {
    fn from_iter<I: IntoIterator<Item = u16>>(slots: I) -> SlotSet {
        let mut set = SlotSet::new();
        for slot in slots {
            set.insert(slot);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_round_trip_and_set_algebra_agrees_with_a_model(
            a in proptest::collection::btree_set(0u16..SLOT_COUNT, 0..300),
            b in proptest::collection::btree_set(0u16..SLOT_COUNT, 0..300),
        ) {
            let sa: SlotSet = a.iter().copied().collect();
            let sb: SlotSet = b.iter().copied().collect();
            prop_assert_eq!(SlotSet::from_ranges(&sa.ranges()), sa.clone());
            prop_assert_eq!(sa.len(), a.len());
            let both: Vec<u16> = sa.intersection(&sb).iter().collect();
            prop_assert_eq!(both, a.intersection(&b).copied().collect::<Vec<_>>());
            let either: Vec<u16> = sa.union(&sb).iter().collect();
            prop_assert_eq!(either, a.union(&b).copied().collect::<Vec<_>>());
            let only: Vec<u16> = sa.difference(&sb).iter().collect();
            prop_assert_eq!(only, a.difference(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.is_subset(&sb), a.is_subset(&b));
        }
    }

    #[test]
    fn slots_past_the_last_are_ignored() {
        let mut set = SlotSet::from_ranges(&[(16380, 20000)]);
        set.insert(SLOT_COUNT);
        assert_eq!(set.ranges(), vec![(16380, 16383)]);
        assert!(!set.contains(SLOT_COUNT));
    }
}
