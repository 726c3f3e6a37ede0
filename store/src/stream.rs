//! Stream values (without consumer groups). Entries are kept in nodes as Redis keeps them
//! in listpacks: a node takes appended entries until it holds 100 of them or about 4 KB
//! (Redis's `stream-node-max-entries` and `-bytes` defaults), and the nodes sit in a
//! B-tree by the id they started at. So a lookup or a range start is O(log n), an append
//! touches the last node only, and `MAXLEN ~` / `MINID ~` trim whole nodes exactly where
//! Redis would, leaving the same lengths. Deleted entries leave their node at once; a node
//! left empty goes.

use std::collections::BTreeMap;
use std::fmt;

use crate::value::alloc_size;

/// Entries a node takes before the next append starts a new one.
const NODE_MAX_ENTRIES: u32 = 100;
/// Bytes of fields a node takes before the next append starts a new one.
const NODE_MAX_BYTES: usize = 4096;
/// What one entry costs besides its fields: its id and the box's pointer and length.
const ENTRY_OVERHEAD: usize = 16 + std::mem::size_of::<Box<[u8]>>();
/// What one node costs besides its entries: its B-tree slot and its Vec header.
const NODE_OVERHEAD: usize = 16 + std::mem::size_of::<Node>() + 16;

/// A stream entry id: milliseconds, then a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// The milliseconds part.
    pub ms: u64,
    /// The sequence part.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`, below every entry.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest id there is.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// An id from its parts.
    pub const fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// The next id, `None` after [`StreamId::MAX`].
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId::new(self.ms, seq)),
            None => self.ms.checked_add(1).map(|ms| StreamId::new(ms, 0)),
        }
    }

    /// The previous id, `None` before [`StreamId::MIN`].
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId::new(self.ms, seq)),
            None => self.ms.checked_sub(1).map(|ms| StreamId::new(ms, u64::MAX)),
        }
    }

    /// Sixteen bytes: `ms` then `seq`, big-endian (so the bytes sort as the ids do).
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// The inverse of [`StreamId::to_bytes`]; `None` unless `bytes` is 16 long.
    pub fn from_bytes(bytes: &[u8]) -> Option<StreamId> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let (ms, seq) = bytes.split_at(8);
        Some(StreamId::new(
            u64::from_be_bytes(ms.try_into().ok()?),
            u64::from_be_bytes(seq.try_into().ok()?),
        ))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// How a trim chooses what goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimBy {
    /// Keep at most this many entries.
    MaxLen(u64),
    /// Keep no entry below this id.
    MinId(StreamId),
}

/// A trim as XADD and XTRIM take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// What goes.
    pub by: TrimBy,
    /// `~`: only whole nodes go.
    pub approx: bool,
    /// Most entries one trim removes (0: no limit).
    pub limit: u64,
}

/// A field list encoded as one entry stores it: `(len u32 LE, bytes)*`, fields and
/// values alternating.
pub fn encode_fields<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Box<[u8]> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
    out.into_boxed_slice()
}

/// The items of an encoded field list, fields and values alternating; stops at the first
/// malformed length.
pub fn decode_fields(mut fields: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = fields.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let item = rest.get(..len)?;
        fields = &rest[len..];
        Some(item)
    })
}

/// True when `fields` is a well-formed encoded field list of pairs.
pub fn fields_well_formed(fields: &[u8]) -> bool {
    let mut rest = fields;
    let mut count = 0usize;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return false;
        }
        rest = &tail[len..];
        count += 1;
    }
    count > 0 && count % 2 == 0
}

#[derive(Debug, Clone, Default)]
struct Node {
    entries: Vec<Entry>,
    /// Entries ever appended here (deleted ones count: Redis closes a node by them too).
    appended: u32,
    /// Field bytes ever appended here.
    field_bytes: usize,
}

impl Node {
    fn cost(&self) -> usize {
        NODE_OVERHEAD + alloc_size(self.entries.capacity() * std::mem::size_of::<Entry>())
    }
}

/// A stream: its entries and what Redis keeps beside them.
#[derive(Debug, Clone, Default)]
pub struct StreamValue {
    nodes: BTreeMap<StreamId, Node>,
    len: usize,
    last_id: StreamId,
    max_deleted: StreamId,
    entries_added: u64,
    bytes: usize,
}

impl PartialEq for StreamValue {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.last_id == other.last_id
            && self.max_deleted == other.max_deleted
            && self.entries_added == other.entries_added
            && self
                .range(StreamId::MIN, StreamId::MAX, false)
                .eq(other.range(StreamId::MIN, StreamId::MAX, false))
    }
}

impl StreamValue {
    /// An empty stream.
    pub fn new() -> StreamValue {
        StreamValue::default()
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True without entries (a stream key may exist so).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest id ever given out (XADD's floor).
    pub fn last_id(&self) -> StreamId {
        self.last_id
    }

    /// The largest id XDEL removed.
    pub fn max_deleted(&self) -> StreamId {
        self.max_deleted
    }

    /// Entries ever added.
    pub fn entries_added(&self) -> u64 {
        self.entries_added
    }

    /// Nodes now (XINFO's `radix-tree-keys`).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes of the radix tree Redis would keep the node keys in (XINFO's
    /// `radix-tree-nodes`): a compressed node for each run of bytes the keys below it
    /// share, a branching node where they part, a leaf for each key, and the head alone
    /// when there is no key. Computed, not kept: O(nodes × 16).
    pub fn radix_tree_nodes(&self) -> usize {
        let keys: Vec<[u8; 16]> = self.nodes.keys().map(|id| id.to_bytes()).collect();
        if keys.is_empty() {
            return 1;
        }
        radix_nodes(&keys, 0)
    }

    /// Estimated heap bytes, entries and nodes included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The first entry.
    pub fn first(&self) -> Option<(StreamId, &[u8])> {
        self.range(StreamId::MIN, StreamId::MAX, false).next()
    }

    /// The last entry.
    pub fn last(&self) -> Option<(StreamId, &[u8])> {
        self.range(StreamId::MIN, StreamId::MAX, true).next()
    }

    /// The id `*` gives at `now_ms`: `now_ms-0` when the clock is past the last id, its
    /// successor otherwise; `None` when the last id is the largest there is.
    pub fn next_auto_id(&self, now_ms: u64) -> Option<StreamId> {
        if now_ms > self.last_id.ms {
            Some(StreamId::new(now_ms, 0))
        } else {
            self.last_id.next()
        }
    }

    /// Appends an entry; `id` must be above [`StreamValue::last_id`] (false otherwise, and
    /// nothing changes).
    pub fn append(&mut self, id: StreamId, fields: Box<[u8]>) -> bool {
        if id <= self.last_id {
            return false;
        }
        let open = self.nodes.last_key_value().is_some_and(|(_, node)| {
            node.appended < NODE_MAX_ENTRIES && node.field_bytes + fields.len() < NODE_MAX_BYTES
        });
        if !open {
            let node = Node::default();
            self.bytes += node.cost();
            self.nodes.insert(id, node);
        }
        let mut last = self.nodes.last_entry().expect("a node was just ensured");
        let node = last.get_mut();
        let before = node.cost();
        node.appended += 1;
        node.field_bytes += fields.len();
        self.bytes += ENTRY_OVERHEAD + alloc_size(fields.len());
        node.entries.push((id, fields));
        self.bytes = self.bytes + node.cost() - before;
        self.len += 1;
        self.last_id = id;
        self.entries_added += 1;
        true
    }

    /// Entries with ids in `start..=end`, ascending or (`rev`) descending.
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (StreamId, &[u8])> + '_> {
        if start > end {
            return Box::new(std::iter::empty());
        }
        // The node holding `start` began at or below it.
        let from = self
            .nodes
            .range(..=start)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(StreamId::MIN);
        let nodes = self.nodes.range(from..=end).map(|(_, node)| node);
        let within = within(start, end);
        if rev {
            Box::new(
                nodes
                    .rev()
                    .flat_map(move |node| node.entries.iter().rev().filter_map(within)),
            )
        } else {
            Box::new(nodes.flat_map(move |node| node.entries.iter().filter_map(within)))
        }
    }

    /// Removes the entry `id` (XDEL: [`StreamValue::max_deleted`] follows); false when
    /// absent.
    pub fn delete(&mut self, id: StreamId) -> bool {
        let Some((&key, node)) = self.nodes.range_mut(..=id).next_back() else {
            return false;
        };
        let Ok(at) = node.entries.binary_search_by(|(e, _)| e.cmp(&id)) else {
            return false;
        };
        let before = node.cost();
        let (_, fields) = node.entries.remove(at);
        self.bytes -= ENTRY_OVERHEAD + alloc_size(fields.len());
        self.bytes = self.bytes + node.cost() - before;
        if node.entries.is_empty() {
            let node = self.nodes.remove(&key).expect("the node was just found");
            self.bytes -= node.cost();
        }
        self.len -= 1;
        self.max_deleted = self.max_deleted.max(id);
        true
    }

    /// The last id `trim` would remove, `None` when it removes nothing. Redis's rules: a
    /// whole node goes while what stays is long enough (MAXLEN) or its last id is below
    /// the floor (MINID), within `limit`; then, unless approximate, entries from the head
    /// of the next node.
    pub fn trim_bound(&self, trim: Trim) -> Option<StreamId> {
        let mut len = self.len as u64;
        let mut removed = 0u64;
        let mut bound = None;
        for node in self.nodes.values() {
            let entries = node.entries.len() as u64;
            if let TrimBy::MaxLen(max) = trim.by
                && len <= max
            {
                break;
            }
            if trim.limit != 0 && removed + entries > trim.limit {
                break;
            }
            let whole = match trim.by {
                TrimBy::MaxLen(max) => len - entries >= max,
                TrimBy::MinId(floor) => node.entries.last().is_some_and(|(id, _)| *id < floor),
            };
            if whole {
                len -= entries;
                removed += entries;
                bound = node.entries.last().map(|(id, _)| *id);
                continue;
            }
            if trim.approx {
                break;
            }
            for (id, _) in &node.entries {
                let stop = match trim.by {
                    TrimBy::MaxLen(max) => len <= max,
                    TrimBy::MinId(floor) => *id >= floor,
                };
                if stop {
                    break;
                }
                len -= 1;
                bound = Some(*id);
            }
            break;
        }
        bound
    }

    /// Removes every entry up to `bound` (inclusive): what a trim decided. How many.
    pub fn remove_through(&mut self, bound: StreamId) -> usize {
        let mut removed = 0;
        while let Some(mut entry) = self.nodes.first_entry() {
            let node = entry.get_mut();
            if node.entries.last().is_some_and(|(id, _)| *id <= bound) {
                let node = entry.remove();
                removed += node.entries.len();
                let field_bytes: usize = node
                    .entries
                    .iter()
                    .map(|(_, f)| ENTRY_OVERHEAD + alloc_size(f.len()))
                    .sum();
                self.bytes -= node.cost() + field_bytes;
                continue;
            }
            let cut = node.entries.partition_point(|(id, _)| *id <= bound);
            if cut > 0 {
                let before = node.cost();
                for (_, fields) in node.entries.drain(..cut) {
                    self.bytes -= ENTRY_OVERHEAD + alloc_size(fields.len());
                }
                self.bytes = self.bytes + node.cost() - before;
                removed += cut;
            }
            break;
        }
        self.len -= removed;
        removed
    }

    /// Sets what XSETID sets.
    pub fn set_meta(&mut self, last_id: StreamId, entries_added: u64, max_deleted: StreamId) {
        self.last_id = last_id;
        self.entries_added = entries_added;
        self.max_deleted = max_deleted;
    }
}

/// An entry as a node holds it.
type Entry = (StreamId, Box<[u8]>);

/// Keeps the entries with ids in `start..=end`, as `(id, fields)`.
fn within<'a>(
    start: StreamId,
    end: StreamId,
) -> impl Fn(&'a Entry) -> Option<(StreamId, &'a [u8])> + Copy {
    move |(id, fields)| (*id >= start && *id <= end).then_some((*id, &fields[..]))
}

/// Nodes of a radix tree over `keys` (sorted, distinct, 16 bytes) below a node that
/// starts at byte `depth`, where they all share the bytes before it.
fn radix_nodes(keys: &[[u8; 16]], depth: usize) -> usize {
    if depth == 16 {
        return 1;
    }
    let (first, last) = (&keys[0], &keys[keys.len() - 1]);
    let shared = (depth..16).take_while(|&i| first[i] == last[i]).count();
    if shared > 0 {
        // A compressed node for the shared run (the keys are sorted: the first and the
        // last share what all share).
        return 1 + radix_nodes(keys, depth + shared);
    }
    let mut nodes = 1;
    let mut rest = keys;
    while let Some(head) = rest.first() {
        let group = rest.partition_point(|k| k[depth] == head[depth]);
        nodes += radix_nodes(&rest[..group], depth + 1);
        rest = &rest[group..];
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: u64) -> Box<[u8]> {
        let value = n.to_string();
        encode_fields([&b"f"[..], value.as_bytes()])
    }

    fn stream_of(n: u64) -> StreamValue {
        let mut s = StreamValue::new();
        for i in 1..=n {
            assert!(s.append(StreamId::new(i, 0), fields(i)));
        }
        s
    }

    fn ids(s: &StreamValue) -> Vec<u64> {
        s.range(StreamId::MIN, StreamId::MAX, false)
            .map(|(id, _)| id.ms)
            .collect()
    }

    #[test]
    fn ids_step_and_print_as_redis_does() {
        assert_eq!(StreamId::new(1, u64::MAX).next(), Some(StreamId::new(2, 0)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId::new(2, 0).prev(), Some(StreamId::new(1, u64::MAX)));
        assert_eq!(StreamId::MIN.prev(), None);
        assert_eq!(StreamId::new(5, 7).to_string(), "5-7");
        let id = StreamId::new(12, 34);
        assert_eq!(StreamId::from_bytes(&id.to_bytes()), Some(id));
    }

    #[test]
    fn appends_only_go_up_and_auto_ids_follow_the_clock() {
        let mut s = stream_of(3);
        assert!(!s.append(StreamId::new(3, 0), fields(0)));
        assert_eq!(s.next_auto_id(10), Some(StreamId::new(10, 0)));
        assert_eq!(s.next_auto_id(2), Some(StreamId::new(3, 1)));
        assert_eq!(s.entries_added(), 3);
    }

    #[test]
    fn ranges_cross_nodes_both_ways() {
        let s = stream_of(450);
        assert_eq!(s.node_count(), 5);
        let got: Vec<u64> = s
            .range(StreamId::new(98, 0), StreamId::new(203, 0), false)
            .map(|(id, _)| id.ms)
            .collect();
        assert_eq!(got, (98..=203).collect::<Vec<_>>());
        let back: Vec<u64> = s
            .range(StreamId::new(98, 0), StreamId::new(203, 0), true)
            .map(|(id, _)| id.ms)
            .collect();
        assert_eq!(back, (98..=203).rev().collect::<Vec<_>>());
        assert_eq!(s.first().unwrap().0.ms, 1);
        assert_eq!(s.last().unwrap().0.ms, 450);
    }

    #[test]
    fn approximate_trims_take_whole_nodes_as_redis_does() {
        // Redis's own example: 1000 entries, MAXLEN ~ 555 leaves 600.
        let mut s = stream_of(1000);
        let trim = Trim {
            by: TrimBy::MaxLen(555),
            approx: true,
            limit: 10_000,
        };
        let bound = s.trim_bound(trim).unwrap();
        assert_eq!(s.remove_through(bound), 400);
        assert_eq!(s.len(), 600);
        let exact = Trim {
            approx: false,
            limit: 0,
            ..trim
        };
        let bound = s.trim_bound(exact).unwrap();
        s.remove_through(bound);
        assert_eq!(s.len(), 555);
        assert_eq!(ids(&s).first(), Some(&446));
        let floor = Trim {
            by: TrimBy::MinId(StreamId::new(900, 0)),
            approx: false,
            limit: 0,
        };
        let bound = s.trim_bound(floor).unwrap();
        s.remove_through(bound);
        assert_eq!(ids(&s).first(), Some(&900));
        assert_eq!(s.trim_bound(floor), None);
    }

    #[test]
    fn deletes_update_the_tombstone_and_free_empty_nodes() {
        let mut s = stream_of(150);
        let full = s.bytes();
        for i in 1..=100 {
            assert!(s.delete(StreamId::new(i, 0)));
        }
        assert!(!s.delete(StreamId::new(1, 0)));
        assert_eq!(s.node_count(), 1);
        assert_eq!(s.len(), 50);
        assert_eq!(s.max_deleted(), StreamId::new(100, 0));
        assert!(s.bytes() < full);
        assert_eq!(s.remove_through(StreamId::MAX), 50);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn fields_round_trip() {
        let encoded = encode_fields([&b"a"[..], b"1", b"", b"2"]);
        assert!(fields_well_formed(&encoded));
        assert_eq!(
            decode_fields(&encoded).collect::<Vec<_>>(),
            vec![&b"a"[..], b"1", b"", b"2"]
        );
        assert!(!fields_well_formed(&encoded[..encoded.len() - 1]));
        assert!(!fields_well_formed(&encode_fields([&b"a"[..]])));
    }
}
