//! Stored values and their memory cost. Sizes are kept incrementally so accounting is
//! O(1) per write, whatever the value's size.

use indexmap::IndexMap;

use crate::list::ListValue;
use crate::set::SetValue;
use crate::stream::{StreamId, StreamValue, fields_well_formed};
use crate::zset::ZSetValue;

/// A value in the keyspace.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A binary-safe string.
    Str(Vec<u8>),
    /// A hash of fields to values.
    Hash(Box<HashValue>),
    /// A list of elements.
    List(Box<ListValue>),
    /// A set of members.
    Set(Box<SetValue>),
    /// A sorted set of members with scores.
    ZSet(Box<ZSetValue>),
    /// A stream of entries.
    Stream(Box<StreamValue>),
}

const TAG_STR: u8 = 0;
const TAG_HASH: u8 = 1;
const TAG_LIST: u8 = 2;
const TAG_SET: u8 = 3;
const TAG_ZSET: u8 = 4;
const TAG_STREAM: u8 = 5;

impl Value {
    /// The persistence tier's encoding: a tag, then the string, or the hash's fields and
    /// values each prefixed by a u32 LE length.
    pub fn to_persisted(&self) -> Vec<u8> {
        match self {
            Value::Str(s) => {
                let mut out = Vec::with_capacity(1 + s.len());
                out.push(TAG_STR);
                out.extend_from_slice(s);
                out
            }
            Value::Hash(h) => {
                let mut out = Vec::with_capacity(1 + h.bytes() + 8 * h.len());
                out.push(TAG_HASH);
                put_items(&mut out, h.iter().flat_map(|(field, value)| [field, value]));
                out
            }
            Value::List(l) => {
                let mut out = Vec::with_capacity(1 + l.bytes() + 4 * l.len());
                out.push(TAG_LIST);
                put_items(&mut out, l.iter());
                out
            }
            Value::Set(set) => {
                let mut out = Vec::with_capacity(1 + set.bytes() + 4 * set.len());
                out.push(TAG_SET);
                put_items(&mut out, set.iter());
                out
            }
            Value::ZSet(zset) => {
                let mut out = Vec::with_capacity(1 + zset.bytes() + 12 * zset.len());
                out.push(TAG_ZSET);
                for (score, member) in zset.iter() {
                    put_items(&mut out, [&score.to_le_bytes()[..], member].into_iter());
                }
                out
            }
            Value::Stream(stream) => {
                // The meta first (last id, tombstone, entries added), then (id, fields)
                // items.
                let mut out = Vec::with_capacity(1 + 40 + stream.bytes());
                out.push(TAG_STREAM);
                out.extend_from_slice(&stream.last_id().to_bytes());
                out.extend_from_slice(&stream.max_deleted().to_bytes());
                out.extend_from_slice(&stream.entries_added().to_le_bytes());
                for (id, fields) in stream.range(StreamId::MIN, StreamId::MAX, false) {
                    put_items(&mut out, [&id.to_bytes()[..], fields].into_iter());
                }
                out
            }
        }
    }

    /// The inverse of [`Value::to_persisted`]; `None` for bytes that are not one.
    pub fn from_persisted(bytes: &[u8]) -> Option<Value> {
        let (&tag, mut rest) = bytes.split_first()?;
        let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let part = tail.get(..len)?.to_vec();
            *rest = &tail[len..];
            Some(part)
        };
        match tag {
            TAG_STR => Some(Value::Str(rest.to_vec())),
            TAG_HASH => {
                let mut hash = HashValue::new();
                while !rest.is_empty() {
                    let field = take(&mut rest)?;
                    let value = take(&mut rest)?;
                    hash.insert(&field, &value);
                }
                (!hash.is_empty()).then(|| Value::Hash(Box::new(hash)))
            }
            TAG_LIST => {
                let mut list = ListValue::new();
                while !rest.is_empty() {
                    list.push_back(&take(&mut rest)?);
                }
                (!list.is_empty()).then(|| Value::List(Box::new(list)))
            }
            TAG_SET => {
                let mut set = SetValue::new();
                while !rest.is_empty() {
                    set.insert(&take(&mut rest)?);
                }
                (!set.is_empty()).then(|| Value::Set(Box::new(set)))
            }
            TAG_ZSET => {
                let mut zset = ZSetValue::new();
                while !rest.is_empty() {
                    let score = f64::from_le_bytes(take(&mut rest)?.try_into().ok()?);
                    let member = take(&mut rest)?;
                    if score.is_nan() {
                        return None;
                    }
                    zset.insert(&member, score);
                }
                (!zset.is_empty()).then(|| Value::ZSet(Box::new(zset)))
            }
            TAG_STREAM => {
                let (last_id, tail) = rest.split_at_checked(16)?;
                let (max_deleted, tail) = tail.split_at_checked(16)?;
                let (added, tail) = tail.split_first_chunk::<8>()?;
                rest = tail;
                let mut stream = StreamValue::new();
                while !rest.is_empty() {
                    let id = StreamId::from_bytes(&take(&mut rest)?)?;
                    let fields = take(&mut rest)?;
                    if !fields_well_formed(&fields) || !stream.append(id, fields.into()) {
                        return None;
                    }
                }
                let last_id = StreamId::from_bytes(last_id)?;
                if last_id < stream.last_id() {
                    return None;
                }
                stream.set_meta(
                    last_id,
                    u64::from_le_bytes(*added),
                    StreamId::from_bytes(max_deleted)?,
                );
                Some(Value::Stream(Box::new(stream)))
            }
            _ => None,
        }
    }

    /// The hash, if this is one.
    pub fn as_hash(&self) -> Option<&HashValue> {
        match self {
            Value::Hash(h) => Some(h),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&ListValue> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The set, if this is one.
    pub fn as_set(&self) -> Option<&SetValue> {
        match self {
            Value::Set(s) => Some(s),
            _ => None,
        }
    }

    /// The sorted set, if this is one.
    pub fn as_zset(&self) -> Option<&ZSetValue> {
        match self {
            Value::ZSet(z) => Some(z),
            _ => None,
        }
    }

    /// The stream, if this is one.
    pub fn as_stream(&self) -> Option<&StreamValue> {
        match self {
            Value::Stream(s) => Some(s),
            _ => None,
        }
    }

    /// True for an aggregate without elements: Redis never keeps one, so neither does the
    /// store (a stream is the exception: it stays, empty, as in Redis).
    pub fn is_empty_aggregate(&self) -> bool {
        match self {
            Value::Str(_) | Value::Stream(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::List(l) => l.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }

    /// Redis's name for the type, as `TYPE` answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    /// Redis's encoding name, as `OBJECT ENCODING` answers.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) if s.len() <= 20 && is_canonical_int(s) => "int",
            Value::Str(s) if s.len() <= 44 => "embstr",
            Value::Str(_) => "raw",
            Value::Hash(h) if h.is_compact() => "listpack",
            Value::Hash(_) => "hashtable",
            Value::List(l) if l.is_compact() => "listpack",
            Value::List(_) => "quicklist",
            Value::Set(s) => s.encoding(),
            Value::ZSet(z) if z.is_compact() => "listpack",
            Value::ZSet(_) => "skiplist",
            Value::Stream(_) => "stream",
        }
    }

    /// Estimated heap bytes held by the value (allocator rounding included).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::Str(s) => alloc_size(s.capacity()),
            Value::Hash(h) => alloc_size(std::mem::size_of::<HashValue>()) + h.bytes(),
            Value::List(l) => alloc_size(std::mem::size_of::<ListValue>()) + l.bytes(),
            Value::Set(s) => alloc_size(std::mem::size_of::<SetValue>()) + s.bytes(),
            Value::ZSet(z) => alloc_size(std::mem::size_of::<ZSetValue>()) + z.bytes(),
            Value::Stream(s) => alloc_size(std::mem::size_of::<StreamValue>()) + s.bytes(),
        }
    }
}

/// Appends each item as `len u32 LE | bytes`.
fn put_items<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>) {
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
}

/// True when `s` is an integer in canonical form (no `+`, no leading zeros, no `-0`, fits
/// an i64): exactly what Redis stores with the `int` encoding.
pub(crate) fn is_canonical_int(s: &[u8]) -> bool {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|n| n.to_string().as_bytes() == s)
}

/// The bytes an allocation of `n` bytes really takes under jemalloc (the node's allocator):
/// 8, then 16-byte steps to 128, then four size classes per doubling.
pub fn alloc_size(n: usize) -> usize {
    match n {
        0 => 0,
        1..=8 => 8,
        9..=128 => (n + 15) & !15,
        _ => {
            let spacing = n.next_power_of_two() / 8;
            n.div_ceil(spacing) * spacing
        }
    }
}

/// Bytes one hash field costs in the table form besides its name and value allocations.
const FIELD_OVERHEAD: usize = 8 + 2 * std::mem::size_of::<Box<[u8]>>() + 10;

/// Small hashes stay compact (Redis's `hash-max-listpack-entries` / `-value` defaults).
const COMPACT_MAX_FIELDS: usize = 128;
const COMPACT_MAX_ITEM: usize = 64;

type FieldMap = IndexMap<Box<[u8]>, Box<[u8]>, foldhash::fast::RandomState>;

/// A hash value, compact while small, with its memory cost kept up to date. A newtype
/// over a private enum: 32 bytes, and its invariants stay inside this module.
#[derive(Debug, Clone)]
pub struct HashValue(Repr);

#[derive(Debug, Clone)]
enum Repr {
    /// `[len][field][len][value]…` with one-byte lengths, in insertion order: one
    /// allocation for the whole hash, scanned linearly (at most 128 fields of 64 bytes).
    Compact { data: Vec<u8>, count: u32 },
    /// An index map (O(1) random access for HRANDFIELD) and its accounted bytes.
    Table { map: Box<FieldMap>, bytes: usize },
}

impl Default for HashValue {
    fn default() -> Self {
        HashValue(Repr::Compact {
            data: Vec::new(),
            count: 0,
        })
    }
}

impl PartialEq for HashValue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

/// Walks a compact buffer: (field, value, start offset, end offset).
fn compact_entries(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], usize, usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let start = pos;
        let flen = data[pos] as usize;
        let field = &data[pos + 1..pos + 1 + flen];
        pos += 1 + flen;
        let vlen = data[pos] as usize;
        let value = &data[pos + 1..pos + 1 + vlen];
        pos += 1 + vlen;
        Some((field, value, start, pos))
    })
}

fn scan_hasher() -> &'static foldhash::fast::FixedState {
    static HASHER: std::sync::OnceLock<foldhash::fast::FixedState> = std::sync::OnceLock::new();
    HASHER.get_or_init(|| foldhash::fast::FixedState::with_seed(rand::random()))
}

impl HashValue {
    /// An empty hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Compact { count, .. } => *count as usize,
            Repr::Table { map, .. } => map.len(),
        }
    }

    /// Accounted heap bytes of the fields (the boxed value itself excluded).
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Repr::Compact { data, .. } => alloc_size(data.capacity()),
            Repr::Table { bytes, .. } => *bytes,
        }
    }

    /// True when the hash has no field (such a hash is never stored).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while the compact (listpack-like) form is used.
    pub fn is_compact(&self) -> bool {
        matches!(self.0, Repr::Compact { .. })
    }

    /// The value of a field.
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match &self.0 {
            Repr::Compact { data, .. } => compact_entries(data)
                .find(|(f, ..)| *f == field)
                .map(|(_, v, ..)| v),
            Repr::Table { map, .. } => map.get(field).map(|v| &**v),
        }
    }

    /// Sets a field; true when the field is new.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        if let Repr::Compact { data, count } = &mut self.0 {
            let existing = compact_entries(data)
                .find(|(f, ..)| *f == field)
                .map(|(.., s, e)| (s, e));
            let fits = field.len() <= COMPACT_MAX_ITEM && value.len() <= COMPACT_MAX_ITEM;
            let room = existing.is_some() || (*count as usize) < COMPACT_MAX_FIELDS;
            if fits && room {
                let mut entry = Vec::with_capacity(2 + field.len() + value.len());
                entry.push(field.len() as u8);
                entry.extend_from_slice(field);
                entry.push(value.len() as u8);
                entry.extend_from_slice(value);
                let is_new = match existing {
                    Some((start, end)) => {
                        data.splice(start..end, entry);
                        false
                    }
                    None => {
                        data.reserve_exact(entry.len());
                        data.extend_from_slice(&entry);
                        *count += 1;
                        true
                    }
                };
                return is_new;
            }
            self.convert_to_table();
        }
        let Repr::Table { map, bytes } = &mut self.0 else {
            unreachable!("converted above");
        };
        match map.get_mut(field) {
            Some(old) => {
                *bytes = *bytes - alloc_size(old.len()) + alloc_size(value.len());
                *old = value.into();
                false
            }
            None => {
                *bytes += FIELD_OVERHEAD + alloc_size(field.len()) + alloc_size(value.len());
                map.insert(field.into(), value.into());
                true
            }
        }
    }

    /// How many fields it holds without growing its table (what a Reserve hint made room
    /// for).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        match &self.0 {
            Repr::Compact { count, .. } => *count as usize,
            Repr::Table { map, .. } => map.capacity(),
        }
    }

    /// Makes room for `fields` fields in all (a snapshot's [`RecordKind::Reserve`] hint),
    /// so inserting them never grows the table.
    ///
    /// [`RecordKind::Reserve`]: crate::change_log::RecordKind::Reserve
    pub fn reserve(&mut self, fields: usize) {
        if fields <= self.len() {
            return;
        }
        if matches!(self.0, Repr::Compact { .. }) {
            if fields <= COMPACT_MAX_FIELDS {
                return;
            }
            self.convert_to_table();
        }
        if let Repr::Table { map, .. } = &mut self.0 {
            map.reserve(fields - map.len());
        }
    }

    fn convert_to_table(&mut self) {
        let mut map = FieldMap::default();
        let mut bytes = alloc_size(std::mem::size_of::<FieldMap>());
        for (field, value) in self.iter() {
            bytes += FIELD_OVERHEAD + alloc_size(field.len()) + alloc_size(value.len());
            map.insert(field.into(), value.into());
        }
        self.0 = Repr::Table {
            map: Box::new(map),
            bytes,
        };
    }

    /// Removes a field; true when it existed.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match &mut self.0 {
            Repr::Compact { data, count } => {
                let Some((start, end)) = compact_entries(data)
                    .find(|(f, ..)| *f == field)
                    .map(|(.., s, e)| (s, e))
                else {
                    return false;
                };
                data.drain(start..end);
                *count -= 1;
                if *count == 0 {
                    *data = Vec::new();
                }
                true
            }
            Repr::Table { map, bytes } => match map.swap_remove(field) {
                Some(old) => {
                    *bytes -= FIELD_OVERHEAD + alloc_size(field.len()) + alloc_size(old.len());
                    if map.is_empty() {
                        *bytes = 0;
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Fields and values in storage order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match &self.0 {
            Repr::Compact { data, .. } => Box::new(compact_entries(data).map(|(f, v, ..)| (f, v))),
            Repr::Table { map, .. } => Box::new(map.iter().map(|(k, v)| (&**k, &**v))),
        }
    }

    /// The field/value pair at a storage index (for random sampling).
    pub fn get_index(&self, index: usize) -> Option<(&[u8], &[u8])> {
        match &self.0 {
            Repr::Compact { data, .. } => compact_entries(data).nth(index).map(|(f, v, ..)| (f, v)),
            Repr::Table { map, .. } => map.get_index(index).map(|(k, v)| (&**k, &**v)),
        }
    }

    /// A hash of `field` that stays fixed for the process's lifetime, whatever the form
    /// (orders HSCAN, so a conversion mid-scan cannot reorder fields).
    pub fn scan_hash(&self, field: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        scan_hasher().hash_one(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_hashes_stay_compact_and_grow_into_tables_without_losing_fields() {
        let mut h = HashValue::new();
        for i in 0..COMPACT_MAX_FIELDS {
            assert!(h.insert(format!("f{i}").as_bytes(), b"v"));
        }
        assert!(h.is_compact());
        assert!(!h.insert(b"f3", b"changed"));
        assert_eq!(h.get(b"f3"), Some(&b"changed"[..]));
        assert!(h.insert(b"one-more", b"v"));
        assert!(!h.is_compact());
        assert_eq!(h.len(), COMPACT_MAX_FIELDS + 1);
        assert_eq!(h.get(b"f3"), Some(&b"changed"[..]));
        let mut long = HashValue::new();
        long.insert(b"f", &[1u8; 65]);
        assert!(!long.is_compact());
        assert!(long.remove(b"f"));
        assert_eq!(long.bytes(), 0);
    }

    #[test]
    fn hash_accounting_returns_to_zero_when_emptied() {
        let mut h = HashValue::new();
        h.insert(b"a", b"1");
        h.insert(b"b", &[7u8; 100]);
        h.insert(b"a", &[1u8; 50]);
        assert!(h.bytes() > 0);
        assert!(h.remove(b"a"));
        assert!(h.remove(b"b"));
        assert!(!h.remove(b"b"));
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn allocation_sizes_follow_jemalloc_classes() {
        let classes: Vec<usize> = [1, 8, 9, 16, 17, 64, 65, 128, 129, 160, 161, 4000]
            .map(alloc_size)
            .to_vec();
        assert_eq!(
            classes,
            vec![8, 8, 16, 16, 32, 64, 80, 128, 160, 160, 192, 4096]
        );
    }

    #[test]
    fn encodings_follow_redis_thresholds() {
        assert_eq!(Value::Str(b"12345".to_vec()).encoding(), "int");
        assert_eq!(Value::Str(b"012".to_vec()).encoding(), "embstr");
        assert_eq!(Value::Str(b"-42".to_vec()).encoding(), "int");
        for not_canonical in [&b"-0"[..], b"+1", b"1 ", b"99999999999999999999"] {
            assert_eq!(Value::Str(not_canonical.to_vec()).encoding(), "embstr");
        }
        assert_eq!(Value::Str(vec![b'x'; 44]).encoding(), "embstr");
        assert_eq!(Value::Str(vec![b'x'; 45]).encoding(), "raw");
        let mut h = HashValue::new();
        h.insert(b"f", b"v");
        assert_eq!(Value::Hash(Box::new(h.clone())).encoding(), "listpack");
        h.insert(b"g", &[0u8; 65]);
        assert_eq!(Value::Hash(Box::new(h)).encoding(), "hashtable");
    }
}

#[cfg(test)]
mod persisted_tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_persisted_encoding() {
        let mut hash = HashValue::new();
        hash.insert(b"f1", b"v1");
        hash.insert(b"", b"empty field");
        for value in [
            Value::Str(Vec::new()),
            Value::Str(b"\x00bin".to_vec()),
            Value::Hash(Box::new(hash)),
            Value::List(Box::new(ListValue::from_items([
                &b"a"[..],
                b"",
                &[0u8; 300],
            ]))),
            Value::Set(Box::new(SetValue::from_members([
                &b"7"[..],
                b"",
                &[1u8; 100],
            ]))),
        ] {
            assert_eq!(Value::from_persisted(&value.to_persisted()), Some(value));
        }
        assert_eq!(Value::from_persisted(b""), None);
        assert_eq!(
            Value::from_persisted(&[1, 9, 0, 0, 0, b'x']),
            None,
            "truncated"
        );
        assert_eq!(Value::from_persisted(&[7]), None, "unknown tag");
    }
}
