//! Sorted set values. A small one is one packed buffer in (score, member) order, as
//! Redis's listpack (up to 128 members of at most 64 bytes). A big one is a member → score
//! hash table beside an order-statistics sequence: sorted chunks of at most 256 entries
//! with a Fenwick tree over the chunk lengths, so finding a member's rank, the entry at a
//! rank or the first entry at a score is O(log n) and an insert moves at most one chunk.
//! Entries compare by score, then by member bytes (Redis's order; no NaN is ever stored).

use std::cmp::Ordering;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::set::member_hasher;
use crate::value::alloc_size;

/// Most members of a packed sorted set (Redis's `zset-max-listpack-entries`).
const PACKED_MAX_MEMBERS: usize = 128;
/// Longest member of a packed sorted set (Redis's `zset-max-listpack-value`).
const PACKED_MAX_MEMBER: usize = 64;
/// Every chunk of the ordered sequence is allocated for this many entries and splits in
/// two when full, so a chunk never reallocates and its cost is known without a walk.
const CHUNK_MAX: usize = 256;
/// A chunk this small merges into its neighbour when they fit in one.
const CHUNK_MIN: usize = 64;

/// Redis's order of two entries.
fn order(a_score: f64, a_member: &[u8], b_score: f64, b_member: &[u8]) -> Ordering {
    a_score
        .partial_cmp(&b_score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a_member.cmp(b_member))
}

/// One entry of the ordered sequence.
#[derive(Debug, Clone)]
struct Entry {
    score: f64,
    member: Box<[u8]>,
}

impl Entry {
    fn cmp_to(&self, score: f64, member: &[u8]) -> Ordering {
        order(self.score, &self.member, score, member)
    }
}

/// A sorted set with its memory cost kept up to date.
#[derive(Debug, Clone)]
pub struct ZSetValue(Repr);

#[derive(Debug, Clone)]
enum Repr {
    /// `[score f64 LE][len u8][member]…` in order.
    Packed {
        data: Vec<u8>,
        count: u32,
    },
    Big(Box<BigZSet>),
}

#[derive(Debug, Clone, Default)]
struct BigZSet {
    scores: HashTable<(Box<[u8]>, f64)>,
    order: Ordered,
    /// The members' own allocations (each member is held twice: by the table and by the
    /// sequence).
    member_bytes: usize,
}

/// Walks a packed buffer: (score, member, start, end).
fn packed_entries(data: &[u8]) -> impl Iterator<Item = (f64, &[u8], usize, usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let start = pos;
        let score = f64::from_le_bytes(data[pos..pos + 8].try_into().expect("8 bytes"));
        let len = data[pos + 8] as usize;
        pos += 9 + len;
        Some((score, &data[start + 9..pos], start, pos))
    })
}

fn hash_of(member: &[u8]) -> u64 {
    member_hasher().hash_one(member)
}

impl Default for ZSetValue {
    fn default() -> Self {
        ZSetValue(Repr::Packed {
            data: Vec::new(),
            count: 0,
        })
    }
}

impl PartialEq for ZSetValue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((a, m), (b, n))| a.to_bits() == b.to_bits() && m == n)
    }
}

impl ZSetValue {
    /// An empty sorted set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sorted set of `(score, member)` pairs (a repeated member keeps its last score).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (f64, &'a [u8])>) -> Self {
        let mut zset = ZSetValue::new();
        for (score, member) in entries {
            zset.insert(member, score);
        }
        zset
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Packed { count, .. } => *count as usize,
            Repr::Big(big) => big.order.len,
        }
    }

    /// True without members (such a value is never stored).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while the packed (listpack-like) form is used.
    pub fn is_compact(&self) -> bool {
        matches!(self.0, Repr::Packed { .. })
    }

    /// Accounted heap bytes (the boxed value itself excluded).
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Repr::Packed { data, .. } => alloc_size(data.capacity()),
            Repr::Big(big) => {
                // hashbrown keeps 1/8 of its buckets free; a bucket is a member and a score
                // plus a control byte.
                let buckets = big.scores.capacity() * 8 / 7;
                alloc_size(std::mem::size_of::<BigZSet>())
                    + alloc_size(buckets * (std::mem::size_of::<(Box<[u8]>, f64)>() + 1))
                    + big.order.bytes()
                    + big.member_bytes
            }
        }
    }

    /// The score of `member`.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        match &self.0 {
            Repr::Packed { data, .. } => packed_entries(data)
                .find(|(_, m, ..)| *m == member)
                .map(|(s, ..)| s),
            Repr::Big(big) => big
                .scores
                .find(hash_of(member), |(m, _)| **m == *member)
                .map(|(_, s)| *s),
        }
    }

    /// Sets `member`'s score; true when the member is new.
    pub fn insert(&mut self, member: &[u8], score: f64) -> bool {
        debug_assert!(!score.is_nan());
        if let Repr::Packed { data, count } = &mut self.0 {
            let existing = packed_entries(data)
                .find(|(_, m, ..)| *m == member)
                .map(|(_, _, s, e)| (s, e));
            let is_new = existing.is_none();
            let fits = member.len() <= PACKED_MAX_MEMBER
                && (!is_new || (*count as usize) < PACKED_MAX_MEMBERS);
            if fits {
                // Redis's listpack keeps a zero score as "0": a -0 reads back as 0 there
                // (and only there: its skiplist keeps the sign).
                let score = if score == 0.0 { 0.0 } else { score };
                if let Some((start, end)) = existing {
                    data.drain(start..end);
                }
                let at = packed_entries(data)
                    .find(|(s, m, ..)| order(*s, m, score, member) == Ordering::Greater)
                    .map_or(data.len(), |(_, _, start, _)| start);
                let mut entry = Vec::with_capacity(9 + member.len());
                entry.extend_from_slice(&score.to_le_bytes());
                entry.push(member.len() as u8);
                entry.extend_from_slice(member);
                data.reserve_exact(entry.len());
                data.splice(at..at, entry);
                if is_new {
                    *count += 1;
                }
                return is_new;
            }
            self.convert_to_big();
        }
        let Repr::Big(big) = &mut self.0 else {
            unreachable!("converted above");
        };
        big.insert(member, score)
    }

    /// How many members it holds without growing its member table (what a Reserve hint made
    /// room for).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        match &self.0 {
            Repr::Packed { count, .. } => *count as usize,
            Repr::Big(big) => big.scores.capacity(),
        }
    }

    /// Makes room for `members` in all (a snapshot's hint, [`crate::change_log::RecordKind::Reserve`]):
    /// the member table grows once instead of rehashing under the shard lock as members
    /// arrive.
    pub fn reserve(&mut self, members: usize) {
        if members <= self.len() {
            return;
        }
        if let Repr::Packed { .. } = &self.0 {
            if members <= PACKED_MAX_MEMBERS {
                return;
            }
            self.convert_to_big();
        }
        if let Repr::Big(big) = &mut self.0 {
            let more = members - big.scores.len();
            big.scores.reserve(more, |(member, _)| hash_of(member));
        }
    }

    fn convert_to_big(&mut self) {
        let mut big = BigZSet::default();
        for (score, member) in self.iter() {
            big.insert(member, score);
        }
        self.0 = Repr::Big(Box::new(big));
    }

    /// Removes `member`; its score when it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let removed = match &mut self.0 {
            Repr::Packed { data, count } => {
                let (score, start, end) = packed_entries(data)
                    .find(|(_, m, ..)| *m == member)
                    .map(|(s, _, start, end)| (s, start, end))?;
                data.drain(start..end);
                *count -= 1;
                Some(score)
            }
            Repr::Big(big) => big.remove(member),
        };
        if self.is_empty() {
            *self = ZSetValue::new();
        }
        removed
    }

    /// The 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        match &self.0 {
            Repr::Packed { data, .. } => packed_entries(data).position(|(_, m, ..)| m == member),
            Repr::Big(big) => {
                let score = big.score(member)?;
                Some(
                    big.order
                        .lower_bound(|e| e.cmp_to(score, member) == Ordering::Less),
                )
            }
        }
    }

    /// The entry at ascending rank `rank`.
    pub fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        match &self.0 {
            Repr::Packed { data, .. } => packed_entries(data).nth(rank).map(|(s, m, ..)| (s, m)),
            Repr::Big(big) => big.order.get(rank).map(|e| (e.score, &*e.member)),
        }
    }

    /// The number of entries before the first for which `before` is false; `before` must be
    /// true for a prefix of the order (e.g. "score < min"). O(log n) in the big form.
    pub fn rank_where(&self, before: impl Fn(f64, &[u8]) -> bool) -> usize {
        match &self.0 {
            Repr::Packed { data, .. } => packed_entries(data)
                .take_while(|(s, m, ..)| before(*s, m))
                .count(),
            Repr::Big(big) => big.order.lower_bound(|e| before(e.score, &e.member)),
        }
    }

    /// Entries of ranks `start..end` in ascending order, or descending from `end - 1`
    /// down to `start` when `rev`.
    pub fn range(
        &self,
        start: usize,
        end: usize,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (f64, &[u8])> + '_> {
        let end = end.min(self.len());
        let start = start.min(end);
        match &self.0 {
            Repr::Packed { data, .. } => {
                let window = packed_entries(data)
                    .skip(start)
                    .take(end - start)
                    .map(|(s, m, ..)| (s, m));
                if rev {
                    Box::new(window.collect::<Vec<_>>().into_iter().rev())
                } else {
                    Box::new(window)
                }
            }
            Repr::Big(big) => {
                let entries = big.order.range(start, end, rev);
                Box::new(entries.map(|e| (e.score, &*e.member)))
            }
        }
    }

    /// Every entry in ascending order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (f64, &[u8])> + '_> {
        self.range(0, self.len(), false)
    }
}

impl BigZSet {
    fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores
            .find(hash_of(member), |(m, _)| **m == *member)
            .map(|(_, s)| *s)
    }

    fn insert(&mut self, member: &[u8], score: f64) -> bool {
        let hash = hash_of(member);
        if let Some((_, old)) = self.scores.find_mut(hash, |(m, _)| **m == *member) {
            let previous = *old;
            *old = score;
            if previous.to_bits() != score.to_bits() {
                self.order.rescore(previous, member, score);
            }
            return false;
        }
        self.scores
            .insert_unique(hash, (member.into(), score), |(m, _)| hash_of(m));
        self.order.insert(Entry {
            score,
            member: member.into(),
        });
        self.member_bytes += 2 * alloc_size(member.len());
        true
    }

    fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let entry = self
            .scores
            .find_entry(hash_of(member), |(m, _)| **m == *member)
            .ok()?;
        let ((_, score), _) = entry.remove();
        self.order.remove(score, member);
        self.member_bytes -= 2 * alloc_size(member.len());
        Some(score)
    }
}

/// Sorted chunks with a Fenwick tree of their lengths.
#[derive(Debug, Default)]
struct Ordered {
    chunks: Vec<Vec<Entry>>,
    /// 1-based Fenwick tree over `chunks[i].len()`.
    tree: Vec<u32>,
    len: usize,
}

/// A clone keeps every chunk's full capacity (what the accounting assumes).
impl Clone for Ordered {
    fn clone(&self) -> Self {
        let chunks = self
            .chunks
            .iter()
            .map(|c| {
                let mut copy = Self::new_chunk();
                copy.extend(c.iter().cloned());
                copy
            })
            .collect();
        Ordered {
            chunks,
            tree: self.tree.clone(),
            len: self.len,
        }
    }
}

impl Ordered {
    fn bytes(&self) -> usize {
        // O(1): accounting runs on every write, and every chunk has the same capacity.
        self.chunks.len() * alloc_size(CHUNK_MAX * std::mem::size_of::<Entry>())
            + alloc_size(self.chunks.capacity() * std::mem::size_of::<Vec<Entry>>())
            + alloc_size(self.tree.capacity() * 4)
    }

    fn new_chunk() -> Vec<Entry> {
        Vec::with_capacity(CHUNK_MAX)
    }

    /// Recomputes the tree after chunks were split, merged or dropped: O(chunks).
    fn rebuild(&mut self) {
        let n = self.chunks.len();
        self.tree.clear();
        self.tree.resize(n + 1, 0);
        for i in 1..=n {
            self.tree[i] += self.chunks[i - 1].len() as u32;
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                self.tree[parent] += self.tree[i];
            }
        }
    }

    fn adjust(&mut self, chunk: usize, grow: bool) {
        let mut i = chunk + 1;
        while i < self.tree.len() {
            if grow {
                self.tree[i] += 1;
            } else {
                self.tree[i] -= 1;
            }
            i += i & i.wrapping_neg();
        }
    }

    /// Entries in `chunks[..chunk]`.
    fn before_chunk(&self, chunk: usize) -> usize {
        let mut sum = 0;
        let mut i = chunk;
        while i > 0 {
            sum += self.tree[i] as usize;
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// The chunk holding rank `rank` (< len) and the rank's offset in it.
    fn find(&self, rank: usize) -> (usize, usize) {
        let n = self.chunks.len();
        let mut position = 0;
        let mut remaining = rank;
        let mut step = n.next_power_of_two();
        while step > 0 {
            let next = position + step;
            if next <= n && (self.tree[next] as usize) <= remaining {
                position = next;
                remaining -= self.tree[next] as usize;
            }
            step /= 2;
        }
        (position, remaining)
    }

    fn get(&self, rank: usize) -> Option<&Entry> {
        if rank >= self.len {
            return None;
        }
        let (chunk, offset) = self.find(rank);
        self.chunks[chunk].get(offset)
    }

    /// The rank of the first entry for which `before` is false.
    fn lower_bound(&self, before: impl Fn(&Entry) -> bool) -> usize {
        let (chunk, offset) = self.locate(before);
        if chunk == self.chunks.len() {
            return self.len;
        }
        self.before_chunk(chunk) + offset
    }

    /// The chunk (`chunks.len()` past the last entry) and offset of the first entry for
    /// which `before` is false; no rank is summed.
    fn locate(&self, before: impl Fn(&Entry) -> bool) -> (usize, usize) {
        let chunk = self
            .chunks
            .partition_point(|c| c.last().is_some_and(&before));
        let offset = self
            .chunks
            .get(chunk)
            .map_or(0, |c| c.partition_point(&before));
        (chunk, offset)
    }

    /// Where `(score, member)` is or would go.
    fn position(&self, score: f64, member: &[u8]) -> (usize, usize) {
        self.locate(|e| e.cmp_to(score, member).is_lt())
    }

    fn insert(&mut self, entry: Entry) {
        if self.chunks.is_empty() {
            let mut first = Self::new_chunk();
            first.push(entry);
            self.chunks.push(first);
            self.len = 1;
            self.rebuild();
            return;
        }
        let (mut chunk, mut at) = self.position(entry.score, &entry.member);
        if chunk == self.chunks.len() {
            chunk -= 1;
            at = self.chunks[chunk].len();
        }
        self.len += 1;
        if self.chunks[chunk].len() < CHUNK_MAX {
            self.chunks[chunk].insert(at, entry);
            self.adjust(chunk, true);
            return;
        }
        // Full. At either end the entry goes to the neighbour, or to a chunk of its own,
        // so that ascending or descending inserts leave full chunks behind (a half split
        // would leave every chunk half empty); inside, the upper half moves out.
        let room = |c: Option<&Vec<Entry>>| c.is_some_and(|c| c.len() < CHUNK_MAX);
        if at == CHUNK_MAX && room(self.chunks.get(chunk + 1)) {
            self.chunks[chunk + 1].insert(0, entry);
            self.adjust(chunk + 1, true);
            return;
        }
        if at == 0 && chunk > 0 && room(self.chunks.get(chunk - 1)) {
            self.chunks[chunk - 1].push(entry);
            self.adjust(chunk - 1, true);
            return;
        }
        if at == CHUNK_MAX || at == 0 {
            let mut own = Self::new_chunk();
            own.push(entry);
            self.chunks
                .insert(if at == 0 { chunk } else { chunk + 1 }, own);
        } else {
            let mut tail = Self::new_chunk();
            tail.extend(self.chunks[chunk].drain(CHUNK_MAX / 2..));
            self.chunks.insert(chunk + 1, tail);
            if at > CHUNK_MAX / 2 {
                chunk += 1;
                at -= CHUNK_MAX / 2;
            }
            self.chunks[chunk].insert(at, entry);
        }
        self.rebuild();
    }

    /// Moves `member` from score `old` to `new`. When its place stays in the same chunk,
    /// the entries between are rotated and nothing else changes (an increment usually
    /// moves a member a little); otherwise it is taken out and put back, its allocation
    /// kept.
    fn rescore(&mut self, old: f64, member: &[u8], new: f64) {
        let (chunk, at) = self.position(old, member);
        let below = chunk.checked_sub(1).is_none_or(|previous| {
            self.chunks[previous]
                .last()
                .is_some_and(|e| e.cmp_to(new, member).is_lt())
        });
        let above = self
            .chunks
            .get(chunk + 1)
            .is_none_or(|next| next.first().is_some_and(|e| e.cmp_to(new, member).is_gt()));
        if below && above {
            let entries = &mut self.chunks[chunk];
            debug_assert!(entries[at].cmp_to(old, member).is_eq());
            entries[at].score = new;
            if new > old {
                let to =
                    at + 1 + entries[at + 1..].partition_point(|e| e.cmp_to(new, member).is_lt());
                entries[at..to].rotate_left(1);
            } else {
                let to = entries[..at].partition_point(|e| e.cmp_to(new, member).is_lt());
                entries[to..=at].rotate_right(1);
            }
            return;
        }
        let mut entry = self.remove_at(chunk, at);
        entry.score = new;
        self.insert(entry);
    }

    fn remove(&mut self, score: f64, member: &[u8]) -> Option<Entry> {
        let (chunk, offset) = self.position(score, member);
        if self
            .chunks
            .get(chunk)
            .and_then(|c| c.get(offset))
            .is_none_or(|e| e.cmp_to(score, member) != Ordering::Equal)
        {
            return None;
        }
        Some(self.remove_at(chunk, offset))
    }

    fn remove_at(&mut self, chunk: usize, offset: usize) -> Entry {
        let entry = self.chunks[chunk].remove(offset);
        self.len -= 1;
        let small = self.chunks[chunk].len() < CHUNK_MIN;
        let merges_next = small
            && chunk + 1 < self.chunks.len()
            && self.chunks[chunk].len() + self.chunks[chunk + 1].len() <= CHUNK_MAX;
        if self.chunks[chunk].is_empty() {
            self.chunks.remove(chunk);
            self.rebuild();
        } else if merges_next {
            let next = self.chunks.remove(chunk + 1);
            self.chunks[chunk].extend(next);
            self.rebuild();
        } else {
            self.adjust(chunk, false);
        }
        if self.len == 0 {
            *self = Ordered::default();
        }
        entry
    }

    /// Entries of ranks `start..end`, ascending or (`rev`) descending.
    fn range(&self, start: usize, end: usize, rev: bool) -> Box<dyn Iterator<Item = &Entry> + '_> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        let count = end - start;
        if rev {
            let (chunk, offset) = self.find(end - 1);
            let first = self.chunks[chunk][..=offset].iter().rev();
            let rest = self.chunks[..chunk]
                .iter()
                .rev()
                .flat_map(|c| c.iter().rev());
            Box::new(first.chain(rest).take(count))
        } else {
            let (chunk, offset) = self.find(start);
            let first = self.chunks[chunk][offset..].iter();
            let rest = self.chunks[chunk + 1..].iter().flatten();
            Box::new(first.chain(rest).take(count))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The model: member → score, ordered by (score, member) when listed.
    fn model_order(model: &BTreeMap<Vec<u8>, f64>) -> Vec<(f64, Vec<u8>)> {
        let mut entries: Vec<(f64, Vec<u8>)> = model.iter().map(|(m, s)| (*s, m.clone())).collect();
        entries.sort_by(|a, b| order(a.0, &a.1, b.0, &b.1));
        entries
    }

    #[test]
    fn small_sorted_sets_stay_packed_and_grow_into_the_big_form_in_order() {
        let mut z = ZSetValue::new();
        for i in 0..PACKED_MAX_MEMBERS {
            assert!(z.insert(format!("m{i:03}").as_bytes(), (i % 7) as f64));
        }
        assert!(z.is_compact());
        assert!(!z.insert(b"m005", -1.0));
        assert_eq!(z.get(0), Some((-1.0, &b"m005"[..])));
        assert!(z.insert(b"one-more", 3.5));
        assert!(!z.is_compact());
        assert_eq!(z.len(), PACKED_MAX_MEMBERS + 1);
        assert_eq!(z.get(0), Some((-1.0, &b"m005"[..])));
        assert_eq!(z.score(b"one-more"), Some(3.5));
        let scores: Vec<f64> = z.iter().map(|(s, _)| s).collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]));
        let mut long = ZSetValue::new();
        long.insert(&[b'x'; 65], 1.0);
        assert!(!long.is_compact());
        assert_eq!(long.remove(&[b'x'; 65]), Some(1.0));
        assert!(long.is_empty());
        assert_eq!(long.bytes(), 0);
    }

    #[test]
    fn a_big_sorted_set_finds_ranks_and_scores_in_logarithmic_steps() {
        let mut z = ZSetValue::new();
        let n = 100_000;
        for i in 0..n {
            z.insert(format!("member:{i}").as_bytes(), (i / 2) as f64);
        }
        assert_eq!(z.len(), n);
        // Ties order by member bytes: "member:10" < "member:11".
        assert_eq!(z.rank(b"member:10"), Some(10));
        assert_eq!(z.rank(b"member:11"), Some(11));
        assert_eq!(z.get(99_999).map(|(s, _)| s), Some(49_999.0));
        assert_eq!(z.rank_where(|s, _| s < 1000.0), 2000);
        let top: Vec<&[u8]> = z.range(n - 3, n, true).map(|(_, m)| m).collect();
        assert_eq!(
            top,
            [&b"member:99999"[..], b"member:99998", b"member:99997"]
        );
        for i in (0..n).step_by(2) {
            assert!(z.remove(format!("member:{i}").as_bytes()).is_some());
        }
        assert_eq!(z.len(), n / 2);
        assert_eq!(z.get(0), Some((0.0, &b"member:1"[..])));
        assert_eq!(z.rank(b"member:99999"), Some(n / 2 - 1));
    }

    #[test]
    fn ascending_and_descending_inserts_leave_full_chunks_in_order() {
        for descending in [false, true] {
            let mut z = ZSetValue::new();
            let n = 20_000;
            for i in 0..n {
                let i = if descending { n - 1 - i } else { i };
                z.insert(format!("m{i:05}").as_bytes(), i as f64);
            }
            let Repr::Big(big) = &z.0 else {
                panic!("a big sorted set")
            };
            let per_entry = big.order.bytes() as f64 / n as f64;
            assert!(
                per_entry < 26.0,
                "{per_entry} bytes an entry: chunks half empty"
            );
            for i in (0..n).step_by(997) {
                assert_eq!(z.rank(format!("m{i:05}").as_bytes()), Some(i));
            }
            let scores: Vec<f64> = z.iter().map(|(s, _)| s).collect();
            assert!(scores.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn accounting_is_the_same_for_a_clone_and_returns_to_zero() {
        let mut z = ZSetValue::new();
        for i in 0..5_000 {
            z.insert(format!("m{i}").as_bytes(), (i % 13) as f64);
        }
        let copy = z.clone();
        assert_eq!(copy.bytes(), z.bytes());
        assert_eq!(copy, z);
        for i in 0..5_000 {
            z.remove(format!("m{i}").as_bytes());
        }
        assert_eq!(z.bytes(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, i8),
        Remove(u16),
    }

    fn member(n: u16) -> Vec<u8> {
        if n % 5 == 0 {
            format!("{n:0>70}").into_bytes()
        } else {
            format!("m{n}").into_bytes()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_sorted_set_behaves_as_its_model(ops in proptest::collection::vec(
            prop_oneof![
                3 => (0u16..2000, any::<i8>()).prop_map(|(m, s)| Op::Insert(m, s)),
                1 => (0u16..2000).prop_map(Op::Remove),
            ],
            1..1500,
        )) {
            let mut z = ZSetValue::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(m, s) => {
                        let score = s as f64 / 4.0;
                        prop_assert_eq!(z.insert(&member(m), score), model.insert(member(m), score).is_none());
                    }
                    Op::Remove(m) => prop_assert_eq!(z.remove(&member(m)), model.remove(&member(m))),
                }
                prop_assert_eq!(z.len(), model.len());
            }
            let expected = model_order(&model);
            let got: Vec<(f64, Vec<u8>)> = z.iter().map(|(s, m)| (s, m.to_vec())).collect();
            prop_assert_eq!(&got, &expected);
            let reversed: Vec<(f64, Vec<u8>)> = z.range(0, z.len(), true).map(|(s, m)| (s, m.to_vec())).collect();
            prop_assert_eq!(reversed, expected.iter().rev().cloned().collect::<Vec<_>>());
            for (rank, (score, member)) in expected.iter().enumerate() {
                prop_assert_eq!(z.rank(member), Some(rank));
                prop_assert_eq!(z.score(member), Some(*score));
                prop_assert_eq!(z.get(rank).map(|(s, m)| (s, m.to_vec())), Some((*score, member.clone())));
            }
            let below_zero = expected.iter().filter(|(s, _)| *s < 0.0).count();
            prop_assert_eq!(z.rank_where(|s, _| s < 0.0), below_zero);
            if expected.len() > 10 {
                let window: Vec<Vec<u8>> = z.range(3, 9, false).map(|(_, m)| m.to_vec()).collect();
                let want: Vec<Vec<u8>> = expected[3..9].iter().map(|(_, m)| m.clone()).collect();
                prop_assert_eq!(window, want);
            }
        }
    }
}
