//! List values: a deque of packed chunks, as Redis's quicklist of listpacks. Each chunk is
//! one allocation of up to [`CHUNK_BYTES`] holding `varint length | bytes` entries, so a
//! small element costs its bytes plus one or two, and pushes and pops at either end touch
//! one chunk. Sizes are kept incrementally: accounting is O(1) per change.

use std::collections::VecDeque;

use crate::value::alloc_size;

/// A chunk is closed to new entries at this size (Redis's `list-max-listpack-size -2`).
pub const CHUNK_BYTES: usize = 8 << 10;

#[derive(Debug, Clone, Default)]
struct Chunk {
    data: Vec<u8>,
    count: usize,
    /// Where each entry starts, built by the first removal at the back: entries can only be
    /// walked forwards, so without it every RPOP would walk the chunk. Only the tail chunk
    /// keeps one (a new tail drops the old one's), and any change but one at the back
    /// drops it.
    starts: Option<Vec<u32>>,
}

/// Writes the entry of `item` to `out`.
fn encode_entry(out: &mut Vec<u8>, item: &[u8]) {
    let mut len = item.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(item);
}

fn entry_len(item: &[u8]) -> usize {
    let mut header = 1;
    let mut len = item.len() >> 7;
    while len > 0 {
        header += 1;
        len >>= 7;
    }
    header + item.len()
}

/// Decodes the entry at `pos`: the item and the position after it.
fn decode_entry(data: &[u8], pos: usize) -> (&[u8], usize) {
    let mut len = 0usize;
    let mut shift = 0;
    let mut at = pos;
    loop {
        let byte = data[at];
        at += 1;
        len |= ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (&data[at..at + len], at + len)
}

impl Chunk {
    fn entries(&self) -> impl Iterator<Item = (&[u8], usize, usize)> {
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= self.data.len() {
                return None;
            }
            let start = pos;
            let (item, end) = decode_entry(&self.data, pos);
            pos = end;
            Some((item, start, end))
        })
    }

    fn cost(&self) -> usize {
        alloc_size(self.data.capacity())
            + self
                .starts
                .as_ref()
                .map_or(0, |starts| alloc_size(starts.capacity() * 4))
    }

    /// Appends the entry of `item`.
    fn append(&mut self, item: &[u8]) {
        if let Some(starts) = &mut self.starts {
            starts.push(self.data.len() as u32);
        }
        self.data.reserve_exact(entry_len(item));
        encode_entry(&mut self.data, item);
        self.count += 1;
    }

    /// Where the `n`-th entry from the back starts (1 is the last).
    fn start_from_back(&mut self, n: usize) -> usize {
        let (data, count) = (&self.data, self.count);
        let starts = self.starts.get_or_insert_with(|| {
            let mut starts = Vec::with_capacity(count);
            let mut pos = 0;
            while pos < data.len() {
                starts.push(pos as u32);
                pos = decode_entry(data, pos).1;
            }
            starts
        });
        starts[count - n] as usize
    }

    /// Removes the last `n` entries (fewer than `count`).
    fn truncate_back(&mut self, n: usize) {
        let cut = self.start_from_back(n);
        self.count -= n;
        if let Some(starts) = &mut self.starts {
            starts.truncate(self.count);
        }
        self.data.truncate(cut);
    }

    /// Replaces bytes `start..end` (whole entries) with `replacement`, `added` more entries.
    fn replace(&mut self, start: usize, end: usize, replacement: &[u8], added: isize) {
        self.starts = None;
        let grow = replacement.len().saturating_sub(end - start);
        self.data.reserve_exact(grow);
        self.data.splice(start..end, replacement.iter().copied());
        self.count = self.count.checked_add_signed(added).expect("entries left");
    }

    /// The byte range of the entry at `index` within this chunk.
    fn span(&self, index: usize) -> (usize, usize) {
        let (_, start, end) = self.entries().nth(index).expect("index within the chunk");
        (start, end)
    }
}

/// A list value with its memory cost kept up to date.
#[derive(Debug, Clone, Default)]
pub struct ListValue {
    chunks: VecDeque<Chunk>,
    len: usize,
    /// Accounted bytes of the chunks' allocations.
    bytes: usize,
}

impl PartialEq for ListValue {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl ListValue {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list holding `items` in order.
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut list = Self::new();
        for item in items {
            list.push_back(item);
        }
        list
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True without elements (such a list is never stored).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Accounted heap bytes (the boxed value itself excluded).
    pub fn bytes(&self) -> usize {
        self.bytes + alloc_size(self.chunks.capacity() * std::mem::size_of::<Chunk>())
    }

    /// True while the list fits one chunk (what Redis 7.2 calls `listpack`).
    pub fn is_compact(&self) -> bool {
        self.chunks.len() <= 1
    }

    /// Runs `change` on chunk `at` and keeps the accounting right.
    fn change<R>(&mut self, at: usize, change: impl FnOnce(&mut Chunk) -> R) -> R {
        let chunk = &mut self.chunks[at];
        let before = chunk.cost();
        let result = change(chunk);
        let after = self.chunks[at].cost();
        self.bytes = self.bytes - before + after;
        result
    }

    fn drop_chunk(&mut self, at: usize) {
        if let Some(chunk) = self.chunks.remove(at) {
            self.bytes -= chunk.cost();
        }
    }

    /// The end chunk (head or tail) with room for `need` more bytes, opened when the
    /// current one is full (an element bigger than a chunk gets one of its own).
    fn end_chunk_with_room(&mut self, front: bool, need: usize) -> usize {
        let end = if front {
            self.chunks.front()
        } else {
            self.chunks.back()
        };
        if end.is_none_or(|c| c.data.len() + need > CHUNK_BYTES) {
            if front {
                self.chunks.push_front(Chunk::default());
            } else {
                if let Some(old_tail) = self.chunks.len().checked_sub(1) {
                    self.change(old_tail, |chunk| chunk.starts = None);
                }
                self.chunks.push_back(Chunk::default());
            }
        }
        if front { 0 } else { self.chunks.len() - 1 }
    }

    /// Adds `item` at the head.
    pub fn push_front(&mut self, item: &[u8]) {
        let need = entry_len(item);
        let first = self.end_chunk_with_room(true, need);
        let mut entry = Vec::with_capacity(need);
        encode_entry(&mut entry, item);
        self.change(first, |chunk| chunk.replace(0, 0, &entry, 1));
        self.len += 1;
    }

    /// Adds `item` at the tail.
    pub fn push_back(&mut self, item: &[u8]) {
        let need = entry_len(item);
        let last = self.end_chunk_with_room(false, need);
        self.change(last, |chunk| chunk.append(item));
        self.len += 1;
    }

    /// Removes and returns the head.
    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        self.chunks.front()?;
        let item = self.change(0, |chunk| {
            let (item, end) = decode_entry(&chunk.data, 0);
            let item = item.to_vec();
            chunk.replace(0, end, &[], -1);
            shrink(chunk);
            item
        });
        self.len -= 1;
        if self.chunks[0].count == 0 {
            self.drop_chunk(0);
        }
        Some(item)
    }

    /// Removes and returns the tail.
    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        let last = self.chunks.len().checked_sub(1)?;
        let item = self.change(last, |chunk| {
            let start = chunk.start_from_back(1);
            let item = decode_entry(&chunk.data, start).0.to_vec();
            chunk.truncate_back(1);
            shrink(chunk);
            item
        });
        self.len -= 1;
        if self.chunks[last].count == 0 {
            self.drop_chunk(last);
        }
        Some(item)
    }

    /// Removes `count` elements from the head (whole chunks at once).
    pub fn drop_front(&mut self, mut count: usize) {
        while count > 0 && !self.chunks.is_empty() {
            let first = self.chunks[0].count;
            if first <= count {
                self.drop_chunk(0);
                self.len -= first;
                count -= first;
            } else {
                self.change(0, |chunk| {
                    let (start, _) = chunk.span(count);
                    chunk.replace(0, start, &[], -(count as isize));
                    shrink(chunk);
                });
                self.len -= count;
                count = 0;
            }
        }
    }

    /// Removes `count` elements from the tail (whole chunks at once).
    pub fn drop_back(&mut self, mut count: usize) {
        while count > 0 && !self.chunks.is_empty() {
            let last = self.chunks.len() - 1;
            let tail = self.chunks[last].count;
            if tail <= count {
                self.drop_chunk(last);
                self.len -= tail;
                count -= tail;
            } else {
                self.change(last, |chunk| {
                    chunk.truncate_back(count);
                    shrink(chunk);
                });
                self.len -= count;
                count = 0;
            }
        }
    }

    /// The chunk holding element `index` and the index within it, walking from the
    /// nearer end.
    fn locate(&self, index: usize) -> Option<(usize, usize)> {
        if index >= self.len {
            return None;
        }
        if index < self.len / 2 {
            let mut rest = index;
            for (at, chunk) in self.chunks.iter().enumerate() {
                if rest < chunk.count {
                    return Some((at, rest));
                }
                rest -= chunk.count;
            }
        } else {
            let mut from_end = self.len - 1 - index;
            for (at, chunk) in self.chunks.iter().enumerate().rev() {
                if from_end < chunk.count {
                    return Some((at, chunk.count - 1 - from_end));
                }
                from_end -= chunk.count;
            }
        }
        None
    }

    /// The element at `index` (from the head).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let (at, within) = self.locate(index)?;
        self.chunks[at].entries().nth(within).map(|(item, ..)| item)
    }

    /// Replaces the element at `index`; false when out of range.
    pub fn set(&mut self, index: usize, item: &[u8]) -> bool {
        let Some((at, within)) = self.locate(index) else {
            return false;
        };
        let mut entry = Vec::with_capacity(entry_len(item));
        encode_entry(&mut entry, item);
        self.change(at, |chunk| {
            let (start, end) = chunk.span(within);
            chunk.replace(start, end, &entry, 0);
        });
        self.split_if_big(at);
        true
    }

    /// Inserts `item` so that it becomes element `index` (`index == len` appends).
    pub fn insert(&mut self, index: usize, item: &[u8]) {
        if index == 0 {
            return self.push_front(item);
        }
        if index >= self.len {
            return self.push_back(item);
        }
        let (at, within) = self.locate(index).expect("index within the list");
        let mut entry = Vec::with_capacity(entry_len(item));
        encode_entry(&mut entry, item);
        self.change(at, |chunk| {
            let (start, _) = chunk.span(within);
            chunk.replace(start, start, &entry, 1);
        });
        self.len += 1;
        self.split_if_big(at);
    }

    /// Splits chunk `at` in two once an insert or a set made it twice the chunk size.
    fn split_if_big(&mut self, at: usize) {
        let chunk = &self.chunks[at];
        if chunk.data.len() <= 2 * CHUNK_BYTES || chunk.count < 2 {
            return;
        }
        let keep = chunk.count / 2;
        let (cut, _) = chunk.span(keep);
        let tail = Chunk {
            data: chunk.data[cut..].to_vec(),
            count: chunk.count - keep,
            starts: None,
        };
        self.change(at, |chunk| {
            chunk.truncate_back(chunk.count - keep);
            chunk.starts = None;
            chunk.data.shrink_to_fit();
        });
        self.bytes += tail.cost();
        self.chunks.insert(at + 1, tail);
    }

    /// Removes up to `count` elements equal to `item` (all when 0; from the tail when
    /// negative), as LREM; how many it removed.
    pub fn remove_matching(&mut self, count: i64, item: &[u8]) -> usize {
        let limit = if count == 0 {
            usize::MAX
        } else {
            count.unsigned_abs() as usize
        };
        let mut matches: Vec<usize> = Vec::new();
        if count >= 0 {
            for (i, element) in self.iter().enumerate() {
                if matches.len() == limit {
                    break;
                }
                if element == item {
                    matches.push(i);
                }
            }
        } else {
            for (i, element) in self.iter_rev().enumerate() {
                if matches.len() == limit {
                    break;
                }
                if element == item {
                    matches.push(self.len - 1 - i);
                }
            }
            matches.reverse();
        }
        if matches.is_empty() {
            return 0;
        }
        let removed = matches.len();
        let mut next = matches.into_iter().peekable();
        let kept = ListValue::from_items(self.iter().enumerate().filter_map(|(i, element)| {
            if next.peek() == Some(&i) {
                next.next();
                None
            } else {
                Some(element)
            }
        }));
        *self = kept;
        removed
    }

    /// Elements from the head.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.entries().map(|(item, ..)| item))
    }

    /// Elements from the tail.
    pub fn iter_rev(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.chunks.iter().rev().flat_map(|chunk| {
            let items: Vec<&[u8]> = chunk.entries().map(|(item, ..)| item).collect();
            items.into_iter().rev()
        })
    }

    /// Elements `start..=stop` from the head (both within the list).
    pub fn range(&self, start: usize, stop: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let (first_chunk, within) = self.locate(start).unwrap_or((self.chunks.len(), 0));
        let take = (stop + 1).saturating_sub(start);
        self.chunks
            .iter()
            .skip(first_chunk)
            .flat_map(|chunk| chunk.entries().map(|(item, ..)| item))
            .skip(within)
            .take(take)
    }
}

/// Gives memory back once a chunk has shrunk to a quarter of its allocation.
fn shrink(chunk: &mut Chunk) {
    if chunk.data.capacity() > 64 && chunk.data.len() < chunk.data.capacity() / 4 {
        chunk.data.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The list against a `VecDeque` model under random operations; the accounting is
    /// checked against a recount after every step.
    #[test]
    fn random_operations_match_a_simple_model() {
        for seed in 0..8u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut list = ListValue::new();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            for _ in 0..4000 {
                let size = if rng.random_bool(0.05) {
                    rng.random_range(100..20_000)
                } else {
                    rng.random_range(0..12)
                };
                let item: Vec<u8> = (0..size).map(|_| rng.random_range(b'a'..b'e')).collect();
                match rng.random_range(0..11) {
                    0 | 1 => {
                        list.push_front(&item);
                        model.push_front(item);
                    }
                    2 | 3 => {
                        list.push_back(&item);
                        model.push_back(item);
                    }
                    4 => assert_eq!(list.pop_front(), model.pop_front()),
                    5 => assert_eq!(list.pop_back(), model.pop_back()),
                    6 if !model.is_empty() => {
                        let i = rng.random_range(0..model.len());
                        assert!(list.set(i, &item));
                        model[i] = item;
                    }
                    7 => {
                        let i = rng.random_range(0..=model.len());
                        list.insert(i, &item);
                        model.insert(i, item);
                    }
                    8 => {
                        let short = &item[..item.len().min(1)];
                        let count = rng.random_range(-2..3i64);
                        let removed = list.remove_matching(count, short);
                        let mut expect = 0;
                        let limit = if count == 0 {
                            usize::MAX
                        } else {
                            count.unsigned_abs() as usize
                        };
                        if count >= 0 {
                            let mut i = 0;
                            while i < model.len() {
                                if expect < limit && model[i] == short {
                                    model.remove(i);
                                    expect += 1;
                                } else {
                                    i += 1;
                                }
                            }
                        } else {
                            let mut i = model.len();
                            while i > 0 {
                                i -= 1;
                                if expect < limit && model[i] == short {
                                    model.remove(i);
                                    expect += 1;
                                }
                            }
                        }
                        assert_eq!(removed, expect);
                    }
                    9 => {
                        let n = rng.random_range(0..30);
                        list.drop_front(n);
                        model.drain(..n.min(model.len()));
                    }
                    _ => {
                        let n = rng.random_range(0..30);
                        list.drop_back(n);
                        let keep = model.len().saturating_sub(n);
                        model.truncate(keep);
                    }
                }
                assert_eq!(list.len(), model.len());
                if !model.is_empty() {
                    let i = rng.random_range(0..model.len());
                    assert_eq!(list.get(i), Some(&model[i][..]));
                    let j = rng.random_range(i..model.len());
                    assert!(list.range(i, j).eq(model.range(i..=j).map(|v| &v[..])));
                }
                let recount: usize = list.chunks.iter().map(Chunk::cost).sum();
                assert_eq!(list.bytes, recount);
                for (at, chunk) in list.chunks.iter().enumerate() {
                    if let Some(starts) = &chunk.starts {
                        assert_eq!(at, list.chunks.len() - 1, "only the tail keeps its starts");
                        let walked: Vec<u32> =
                            chunk.entries().map(|(_, start, _)| start as u32).collect();
                        assert_eq!(starts, &walked);
                    }
                }
                assert!(list.chunks.iter().all(|c| c.count > 0));
            }
            assert!(list.iter().eq(model.iter().map(|v| &v[..])));
            assert!(list.iter_rev().eq(model.iter().rev().map(|v| &v[..])));
        }
    }

    #[test]
    fn small_elements_cost_about_their_bytes() {
        let mut list = ListValue::new();
        for i in 0..100_000u32 {
            list.push_back(format!("{i:08}").as_bytes());
        }
        // 8 bytes of element and 1 of length each, plus the chunk table.
        assert!(list.bytes() < 100_000 * 10, "{} bytes", list.bytes());
        assert!(!list.is_compact());
        let mut one = ListValue::new();
        one.push_back(b"x");
        assert!(one.is_compact());
    }
}
