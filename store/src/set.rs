//! Set values. A small set is one packed buffer, as Redis's intset and listpack: members
//! that are all integers stay in numeric order (up to 512, `set-max-intset-entries`),
//! others in insertion order (up to 128 of at most 64 bytes, `set-max-listpack-*`). A big
//! set is a dense `Vec` of members indexed by a `hashbrown` table of `u32` positions: O(1)
//! membership, O(1) random access for SPOP and SRANDMEMBER, and about 16 + 5 bytes a
//! member besides the member's own allocation (Redis's dict costs 24 + 8 + its sds).

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::value::{alloc_size, is_canonical_int};

/// Most members of a packed set of integers (Redis's `set-max-intset-entries`).
const PACKED_MAX_INTS: usize = 512;
/// Most members of a packed set of other members (Redis 7.2's `set-max-listpack-entries`).
const PACKED_MAX_MEMBERS: usize = 128;
/// Longest member a packed set holds (Redis 7.2's `set-max-listpack-value`).
const PACKED_MAX_MEMBER: usize = 64;

/// A set of byte strings with its memory cost kept up to date. A newtype over a private
/// enum, so its invariants stay inside this module.
#[derive(Debug, Clone)]
pub struct SetValue(Repr);

#[derive(Debug, Clone)]
enum Repr {
    /// `[len u8][member]…`; `ints`: every member is a canonical integer and they are in
    /// ascending numeric order.
    Packed {
        data: Vec<u8>,
        count: u32,
        ints: bool,
    },
    Table(Box<MemberTable>),
}

#[derive(Debug, Clone, Default)]
struct MemberTable {
    index: HashTable<u32>,
    members: Vec<Box<[u8]>>,
    /// The members' own allocations.
    member_bytes: usize,
}

/// The hasher of every set table and of SSCAN's order: fixed for the process, so the order
/// survives a conversion between forms.
pub(crate) fn member_hasher() -> &'static foldhash::fast::FixedState {
    static HASHER: std::sync::OnceLock<foldhash::fast::FixedState> = std::sync::OnceLock::new();
    HASHER.get_or_init(|| foldhash::fast::FixedState::with_seed(rand::random()))
}

fn hash_of(member: &[u8]) -> u64 {
    member_hasher().hash_one(member)
}

/// Walks a packed buffer: (member, start offset, end offset).
fn packed_entries(data: &[u8]) -> impl Iterator<Item = (&[u8], usize, usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let start = pos;
        let len = data[pos] as usize;
        pos += 1 + len;
        Some((&data[start + 1..pos], start, pos))
    })
}

fn as_int(member: &[u8]) -> Option<i64> {
    if member.len() > 20 || !is_canonical_int(member) {
        return None;
    }
    std::str::from_utf8(member).ok()?.parse().ok()
}

impl Default for SetValue {
    fn default() -> Self {
        SetValue(Repr::Packed {
            data: Vec::new(),
            count: 0,
            ints: true,
        })
    }
}

impl PartialEq for SetValue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|m| other.contains(m))
    }
}

impl MemberTable {
    fn find(&self, member: &[u8]) -> Option<usize> {
        let members = &self.members;
        self.index
            .find(hash_of(member), |&i| *members[i as usize] == *member)
            .map(|&i| i as usize)
    }

    fn insert(&mut self, member: &[u8]) -> bool {
        let hash = hash_of(member);
        let members = &self.members;
        if self
            .index
            .find(hash, |&i| *members[i as usize] == *member)
            .is_some()
        {
            return false;
        }
        let position = self.members.len() as u32;
        self.members.push(member.into());
        self.member_bytes += alloc_size(member.len());
        let members = &self.members;
        self.index
            .insert_unique(hash, position, |&i| hash_of(&members[i as usize]));
        true
    }

    /// Removes the member at `position`, moving the last one into its place.
    fn remove_at(&mut self, position: usize) -> Box<[u8]> {
        let hash = hash_of(&self.members[position]);
        let entry = self
            .index
            .find_entry(hash, |&i| i as usize == position)
            .expect("every member is indexed");
        entry.remove();
        let last = self.members.len() - 1;
        if position != last {
            let moved_hash = hash_of(&self.members[last]);
            let slot = self
                .index
                .find_mut(moved_hash, |&i| i as usize == last)
                .expect("every member is indexed");
            *slot = position as u32;
        }
        let removed = self.members.swap_remove(position);
        self.member_bytes -= alloc_size(removed.len());
        removed
    }

    fn bytes(&self) -> usize {
        // hashbrown keeps 1/8 of its buckets free; each bucket is a u32 and a control byte.
        let buckets = self.index.capacity() * 8 / 7;
        alloc_size(std::mem::size_of::<MemberTable>())
            + alloc_size(buckets * 5)
            + alloc_size(self.members.capacity() * std::mem::size_of::<Box<[u8]>>())
            + self.member_bytes
    }
}

impl SetValue {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of `members` (duplicates count once).
    pub fn from_members<'a>(members: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut set = SetValue::new();
        for member in members {
            set.insert(member);
        }
        set
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Packed { count, .. } => *count as usize,
            Repr::Table(t) => t.members.len(),
        }
    }

    /// True without members (such a set is never stored).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accounted heap bytes (the boxed value itself excluded).
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Repr::Packed { data, .. } => alloc_size(data.capacity()),
            Repr::Table(t) => t.bytes(),
        }
    }

    /// Redis's encoding name for the current form.
    pub fn encoding(&self) -> &'static str {
        match &self.0 {
            Repr::Packed { ints: true, .. } => "intset",
            Repr::Packed { .. } => "listpack",
            Repr::Table(_) => "hashtable",
        }
    }

    /// True when `member` is in the set.
    pub fn contains(&self, member: &[u8]) -> bool {
        match &self.0 {
            Repr::Packed { data, .. } => packed_entries(data).any(|(m, ..)| m == member),
            Repr::Table(t) => t.find(member).is_some(),
        }
    }

    /// Adds `member`; true when it is new.
    pub fn insert(&mut self, member: &[u8]) -> bool {
        if let Repr::Packed { data, count, ints } = &mut self.0 {
            if packed_entries(data).any(|(m, ..)| m == member) {
                return false;
            }
            let number = as_int(member);
            let stays_ints = *ints && number.is_some();
            let fits = if stays_ints {
                (*count as usize) < PACKED_MAX_INTS
            } else {
                // Packed members are all short: integers are at most 20 bytes.
                (*count as usize) < PACKED_MAX_MEMBERS && member.len() <= PACKED_MAX_MEMBER
            };
            if fits {
                // In numeric order while every member is an integer, else appended.
                let at = match number.filter(|_| stays_ints) {
                    Some(n) => packed_entries(data)
                        .find(|(m, ..)| as_int(m).is_some_and(|x| x > n))
                        .map_or(data.len(), |(.., start, _)| start),
                    None => data.len(),
                };
                let mut entry = Vec::with_capacity(1 + member.len());
                entry.push(member.len() as u8);
                entry.extend_from_slice(member);
                data.reserve_exact(entry.len());
                data.splice(at..at, entry);
                *count += 1;
                *ints = stays_ints;
                return true;
            }
            self.convert_to_table();
        }
        let Repr::Table(table) = &mut self.0 else {
            unreachable!("converted above");
        };
        table.insert(member)
    }

    /// How many members it holds without growing its table (what a Reserve hint made room
    /// for).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        match &self.0 {
            Repr::Packed { count, .. } => *count as usize,
            Repr::Table(table) => table.index.capacity().min(table.members.capacity()),
        }
    }

    /// Makes room for `members` in all (a snapshot's hint, [`crate::change_log::RecordKind::Reserve`]):
    /// the table grows once instead of rehashing under the shard lock as members arrive.
    pub fn reserve(&mut self, members: usize) {
        if members <= self.len() {
            return;
        }
        if let Repr::Packed { ints, .. } = &self.0 {
            let most = if *ints {
                PACKED_MAX_INTS
            } else {
                PACKED_MAX_MEMBERS
            };
            if members <= most {
                return;
            }
            self.convert_to_table();
        }
        if let Repr::Table(table) = &mut self.0 {
            let more = members - table.members.len();
            table.members.reserve_exact(more);
            let stored = &table.members;
            table.index.reserve(more, |&i| hash_of(&stored[i as usize]));
        }
    }

    fn convert_to_table(&mut self) {
        let mut table = MemberTable::default();
        table.members.reserve_exact(self.len() + 1);
        for member in self.iter() {
            table.insert(member);
        }
        self.0 = Repr::Table(Box::new(table));
    }

    /// Removes `member`; true when it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match &mut self.0 {
            Repr::Packed { data, count, .. } => {
                let Some((start, end)) = packed_entries(data)
                    .find(|(m, ..)| *m == member)
                    .map(|(_, s, e)| (s, e))
                else {
                    return false;
                };
                data.drain(start..end);
                *count -= 1;
                if *count == 0 {
                    *self = SetValue::new();
                }
                true
            }
            Repr::Table(t) => match t.find(member) {
                Some(position) => {
                    t.remove_at(position);
                    if t.members.is_empty() {
                        *self = SetValue::new();
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Removes and returns the member at storage position `position`.
    pub fn remove_index(&mut self, position: usize) -> Option<Vec<u8>> {
        let member = self.get_index(position)?.to_vec();
        self.remove(&member);
        Some(member)
    }

    /// Members in storage order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
        match &self.0 {
            Repr::Packed { data, .. } => Box::new(packed_entries(data).map(|(m, ..)| m)),
            Repr::Table(t) => Box::new(t.members.iter().map(|m| &**m)),
        }
    }

    /// The member at a storage position (for random sampling): O(1) in a table, a walk
    /// of at most 512 members in a packed set.
    pub fn get_index(&self, position: usize) -> Option<&[u8]> {
        match &self.0 {
            Repr::Packed { data, .. } => packed_entries(data).nth(position).map(|(m, ..)| m),
            Repr::Table(t) => t.members.get(position).map(|m| &**m),
        }
    }

    /// A hash of `member` fixed for the process's lifetime, whatever the form (orders
    /// SSCAN, so a conversion mid-scan cannot reorder members).
    pub fn scan_hash(member: &[u8]) -> u64 {
        hash_of(member)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn integer_sets_stay_packed_in_numeric_order_until_512() {
        let mut set = SetValue::new();
        for n in [5i64, -3, 100, 0, 42] {
            assert!(set.insert(n.to_string().as_bytes()));
        }
        assert_eq!(set.encoding(), "intset");
        let order: Vec<&[u8]> = set.iter().collect();
        assert_eq!(order, [&b"-3"[..], b"0", b"5", b"42", b"100"]);
        for n in 0..PACKED_MAX_INTS as i64 - 1 {
            set.insert(n.to_string().as_bytes());
        }
        assert_eq!(set.encoding(), "intset");
        assert_eq!(set.len(), PACKED_MAX_INTS);
        set.insert(b"100000");
        assert_eq!(set.encoding(), "hashtable");
        assert!(set.contains(b"-3") && set.contains(b"100000"));
    }

    #[test]
    fn a_non_integer_member_turns_a_small_intset_into_a_listpack_and_a_long_one_into_a_table() {
        let mut set = SetValue::from_members([&b"1"[..], b"2"]);
        set.insert(b"a");
        assert_eq!(set.encoding(), "listpack");
        set.insert(b"01");
        assert_eq!(set.encoding(), "listpack", "01 is not canonical but fits");
        set.insert(&[b'x'; 65]);
        assert_eq!(set.encoding(), "hashtable");
        assert_eq!(set.len(), 5);
        let mut big_ints = SetValue::new();
        for n in 0..200 {
            big_ints.insert(n.to_string().as_bytes());
        }
        big_ints.insert(b"word");
        assert_eq!(big_ints.encoding(), "hashtable");
        assert_eq!(big_ints.len(), 201);
    }

    #[test]
    fn accounting_returns_to_an_empty_set_when_emptied() {
        let mut set = SetValue::new();
        for i in 0..1000 {
            set.insert(format!("member:{i}").as_bytes());
        }
        assert!(set.bytes() > 1000 * 16);
        for i in 0..1000 {
            assert!(set.remove(format!("member:{i}").as_bytes()));
        }
        assert!(set.is_empty());
        assert_eq!(set.bytes(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        RemoveIndex(usize),
    }

    fn member(n: u16) -> Vec<u8> {
        // A third integers (the packed integer form), the rest words, some long.
        match n % 3 {
            0 => n.to_string().into_bytes(),
            1 => format!("m{n}").into_bytes(),
            _ => format!("{n:0>70}").into_bytes(),
        }
    }

    proptest! {
        #[test]
        fn a_set_behaves_as_a_btreeset(ops in proptest::collection::vec(
            prop_oneof![
                (0u16..700).prop_map(Op::Insert),
                (0u16..700).prop_map(Op::Remove),
                (0usize..800).prop_map(Op::RemoveIndex),
            ],
            1..400,
        ), ints_only in any::<bool>()) {
            let mut set = SetValue::new();
            let mut model = BTreeSet::new();
            for op in ops {
                let pick = |n: u16| if ints_only { n.to_string().into_bytes() } else { member(n) };
                match op {
                    Op::Insert(n) => prop_assert_eq!(set.insert(&pick(n)), model.insert(pick(n))),
                    Op::Remove(n) => prop_assert_eq!(set.remove(&pick(n)), model.remove(&pick(n))),
                    Op::RemoveIndex(i) => {
                        let removed = set.remove_index(i);
                        prop_assert_eq!(removed.is_some(), i < model.len());
                        if let Some(m) = removed {
                            prop_assert!(model.remove(&m));
                        }
                    }
                }
                prop_assert_eq!(set.len(), model.len());
            }
            let members: BTreeSet<Vec<u8>> = set.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(&members, &model);
            for m in &model {
                prop_assert!(set.contains(m));
            }
            for i in 0..set.len() {
                prop_assert!(model.contains(set.get_index(i).unwrap()));
            }
        }
    }
}
