//! A slot's keys as change records, for a replica that syncs from scratch (and a learner
//! later): each key becomes records of at most about [`PIECE_BYTES`] of value, so a big
//! string or hash travels in many small frames, never one giant one. The records are the
//! change log's own, so the replica applies them with [`crate::replay::apply_record`].
//!
//! A snapshot is walked in windows of a fixed per-key hash ([`window_hash`]): every key
//! that exists for the whole walk is in exactly one window whatever is added or removed
//! meanwhile. Each window is copied under its shard lock and stamped with the log's last
//! LSN then, so the stream that carries it can place it exactly after the records it
//! reflects: applying "records up to the stamp, then the window, then later records" in
//! that order rebuilds the primary's state.

use crate::change_log::{
    MalformedRecord, Record, RecordKind, decode_record, encode_record, put_item,
};
use crate::stream::StreamId;
use crate::value::Value;

/// Seeds [`window_hash`]; any fixed value, the same on every node.
const WINDOW_SEED: u64 = 0x7269_6e67_6b76_5f77;

/// The hash snapshot windows are cut by: fixed per key and the same on every node, so a
/// replica can tell which of its own keys a window covered.
pub fn window_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, WINDOW_SEED)
}

/// Value bytes per record of a snapshot.
pub const PIECE_BYTES: usize = 64 << 10;

/// Appends the records that rebuild `key` holding `value` with `deadline` (Unix ms; 0:
/// none). A string is a Set of its first piece and Appends of the rest; a hash or a list
/// or a set is a Del, HSets of pieces of fields (RPushes of elements, SAdds of members) and
/// an Expire.
pub fn encode_entry(out: &mut Vec<u8>, slot: u16, key: &[u8], value: &Value, deadline: u64) {
    match value {
        Value::Str(bytes) => {
            let head = string_head(out, slot, key, bytes, deadline);
            for piece in bytes[head..].chunks(PIECE_BYTES) {
                encode_record(out, RecordKind::Append, 0, slot, key, piece);
            }
        }
        Value::Hash(_) | Value::List(_) | Value::Set(_) | Value::ZSet(_) | Value::Stream(_) => {
            encode_record(out, RecordKind::Del, 0, slot, key, &[]);
            let mut emit = |kind, body: &[u8]| encode_record(out, kind, 0, slot, key, body);
            match value {
                Value::Hash(hash) => {
                    let items = hash.iter().flat_map(|(f, v)| [f, v]);
                    in_pieces(RecordKind::HSet, items, &mut emit);
                }
                Value::List(list) => in_pieces(RecordKind::RPush, list.iter(), &mut emit),
                Value::Set(set) => in_pieces(RecordKind::SAdd, set.iter(), &mut emit),
                Value::ZSet(zset) => {
                    let scores: Vec<[u8; 8]> = zset.iter().map(|(s, _)| s.to_le_bytes()).collect();
                    let items = scores
                        .iter()
                        .zip(zset.iter())
                        .flat_map(|(score, (_, member))| [&score[..], member]);
                    in_pieces(RecordKind::ZAdd, items, &mut emit);
                }
                Value::Stream(stream) => {
                    let entries = stream.range(StreamId::MIN, StreamId::MAX, false);
                    stream_pieces(None, entries, &mut emit);
                    emit(RecordKind::XSetId, &stream_meta(stream));
                }
                Value::Str(_) => unreachable!("matched above"),
            }
            expire(out, slot, key, deadline);
        }
    }
}

/// The record that starts a string: a Set of its first piece (SetPersistent without a
/// deadline). Returns how many bytes it holds.
fn string_head(out: &mut Vec<u8>, slot: u16, key: &[u8], bytes: &[u8], deadline: u64) -> usize {
    let first = &bytes[..bytes.len().min(PIECE_BYTES)];
    let mut body = Vec::with_capacity(first.len() + 8);
    let kind = if deadline == 0 {
        RecordKind::SetPersistent
    } else {
        body.extend_from_slice(&deadline.to_le_bytes());
        RecordKind::Set
    };
    body.extend_from_slice(first);
    encode_record(out, kind, 0, slot, key, &body);
    first.len()
}

/// The Expire that ends an aggregate's records, when it has a deadline.
fn expire(out: &mut Vec<u8>, slot: u16, key: &[u8], deadline: u64) {
    if deadline != 0 {
        encode_record(
            out,
            RecordKind::Expire,
            0,
            slot,
            key,
            &deadline.to_le_bytes(),
        );
    }
}

/// Values above this many bytes (a string, or the elements of a hash, list, set, sorted set
/// or stream) are copied into a snapshot window a piece at a time, the shard's lock released
/// between pieces ([`encode_piece`]): copied whole, a 100 MB string held the lock for 193 ms.
pub const BIG_VALUE_BYTES: usize = 1 << 20;
/// String bytes copied per lock taken.
const STRING_BYTES_PER_COPY: usize = 4 * PIECE_BYTES;
/// Hash fields, list elements, set or sorted set members, stream entries copied per lock
/// taken.
const ELEMENTS_PER_COPY: usize = 2048;
/// Room made in a window's buffer before each piece is copied under the shard's lock: the
/// buffer holds the whole big value, and growing it there (a fresh region of twice its
/// size, filled by copying) held the lock for tens of ms once it passed 64 MB.
pub const PIECE_ROOM: usize = 2 * STRING_BYTES_PER_COPY;

/// The hint that `key` is about to hold `count` bytes, fields or members
/// ([`RecordKind::Reserve`]).
fn reserve(out: &mut Vec<u8>, slot: u16, key: &[u8], count: usize) {
    encode_record(
        out,
        RecordKind::Reserve,
        0,
        slot,
        key,
        &(count as u64).to_le_bytes(),
    );
}

/// True when a snapshot copies `value` in pieces ([`encode_piece`]): any value bigger than
/// [`BIG_VALUE_BYTES`].
pub fn copied_in_pieces(value: &Value) -> bool {
    let bytes = match value {
        Value::Str(bytes) => bytes.len(),
        Value::Hash(hash) => hash.bytes(),
        Value::List(list) => list.bytes(),
        Value::Set(set) => set.bytes(),
        Value::ZSet(zset) => zset.bytes(),
        Value::Stream(stream) => stream.bytes(),
    };
    bytes > BIG_VALUE_BYTES
}

/// Where the next piece of a big value starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceStart {
    /// The first piece.
    First,
    /// At this byte of a string, or this position of a hash, list, set or sorted set.
    At(usize),
    /// After this entry of a stream.
    After(StreamId),
}

/// Appends the records of one piece of `key`'s value, starting at `from`
/// ([`PieceStart::First`], then what the last call returned): together the pieces are what
/// [`encode_entry`] appends. Returns where the next piece starts, `None` after the last.
pub fn encode_piece(
    out: &mut Vec<u8>,
    slot: u16,
    key: &[u8],
    value: &Value,
    deadline: u64,
    from: PieceStart,
) -> Option<PieceStart> {
    if let Value::Str(bytes) = value {
        let mut at = match from {
            PieceStart::At(at) => at,
            _ => 0,
        };
        let end = bytes.len().min(at + STRING_BYTES_PER_COPY);
        if from == PieceStart::First {
            at = string_head(out, slot, key, bytes, deadline);
            reserve(out, slot, key, bytes.len());
        }
        for piece in bytes[at..end].chunks(PIECE_BYTES) {
            encode_record(out, RecordKind::Append, 0, slot, key, piece);
        }
        return (end < bytes.len()).then_some(PieceStart::At(end));
    }
    let first = from == PieceStart::First;
    if first {
        encode_record(out, RecordKind::Del, 0, slot, key, &[]);
    }
    let at = match from {
        PieceStart::At(at) => at,
        _ => 0,
    };
    let mut emit = |kind, body: &[u8]| encode_record(out, kind, 0, slot, key, body);
    // The piece's elements from position `at` on; `len` is how many there are in all (a
    // hint for the receiver).
    let (next, len) = match value {
        Value::Hash(hash) => {
            let fields = one_piece(
                (at..hash.len()).filter_map(|i| hash.get_index(i)),
                |(f, v)| f.len() + v.len(),
            );
            let end = at + fields.len();
            let items = fields.into_iter().flat_map(|(f, v)| [f, v]);
            in_pieces(RecordKind::HSet, items, &mut emit);
            (
                (end < hash.len()).then_some(PieceStart::At(end)),
                Some(hash.len()),
            )
        }
        Value::List(list) => {
            let items = if at < list.len() {
                one_piece(list.range(at, list.len() - 1), |item| item.len())
            } else {
                Vec::new()
            };
            let end = at + items.len();
            in_pieces(RecordKind::RPush, items.into_iter(), &mut emit);
            // A list grows by chunks: no hint needed.
            ((end < list.len()).then_some(PieceStart::At(end)), None)
        }
        Value::Set(set) => {
            let members = one_piece((at..set.len()).filter_map(|i| set.get_index(i)), |m| {
                m.len()
            });
            let end = at + members.len();
            in_pieces(RecordKind::SAdd, members.into_iter(), &mut emit);
            (
                (end < set.len()).then_some(PieceStart::At(end)),
                Some(set.len()),
            )
        }
        Value::ZSet(zset) => {
            let entries = one_piece(zset.range(at, zset.len(), false), |(_, m)| m.len() + 8);
            let end = at + entries.len();
            let scores: Vec<[u8; 8]> = entries.iter().map(|(s, _)| s.to_le_bytes()).collect();
            let items = scores
                .iter()
                .zip(&entries)
                .flat_map(|(score, (_, member))| [&score[..], *member]);
            in_pieces(RecordKind::ZAdd, items, &mut emit);
            (
                (end < zset.len()).then_some(PieceStart::At(end)),
                Some(zset.len()),
            )
        }
        Value::Stream(stream) => {
            let start = match from {
                PieceStart::After(id) => id.next(),
                _ => Some(StreamId::MIN),
            };
            let entries = start
                .map(|start| {
                    one_piece(stream.range(start, StreamId::MAX, false), |(_, fields)| {
                        fields.len() + 16
                    })
                })
                .unwrap_or_default();
            let last = entries.last().map(|&(id, _)| id);
            stream_pieces(None, entries.into_iter(), &mut emit);
            let more = last
                .and_then(StreamId::next)
                .is_some_and(|after| stream.range(after, StreamId::MAX, false).next().is_some());
            let next = last.filter(|_| more).map(PieceStart::After);
            if next.is_none() {
                emit(RecordKind::XSetId, &stream_meta(stream));
            }
            (next, None)
        }
        Value::Str(_) => unreachable!("returned above"),
    };
    if first && let Some(len) = len {
        // After the first elements: the value exists on the receiver now.
        reserve(out, slot, key, len);
    }
    if next.is_none() {
        expire(out, slot, key, deadline);
    }
    next
}

/// The elements one piece copies: up to [`ELEMENTS_PER_COPY`], and no more once they hold
/// [`STRING_BYTES_PER_COPY`] bytes (`size` of each), at least one.
fn one_piece<T>(items: impl Iterator<Item = T>, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut taken = Vec::new();
    let mut bytes = 0;
    for item in items.take(ELEMENTS_PER_COPY) {
        bytes += size(&item);
        taken.push(item);
        if bytes >= STRING_BYTES_PER_COPY {
            break;
        }
    }
    taken
}

/// A stream's meta as an [`RecordKind::XSetId`] body: last id, tombstone id, entries added.
fn stream_meta(stream: &crate::stream::StreamValue) -> Vec<u8> {
    let mut meta = Vec::with_capacity(40);
    meta.extend_from_slice(&stream.last_id().to_bytes());
    meta.extend_from_slice(&stream.max_deleted().to_bytes());
    meta.extend_from_slice(&stream.entries_added().to_le_bytes());
    meta
}

/// True when [`split_record`] makes more than the record itself of `record`.
pub fn is_split(record: &Record<'_>) -> bool {
    record.body.len() > 2 * PIECE_BYTES
}

/// Calls `emit(kind, body)` for records that together do what `record` does, each with
/// about [`PIECE_BYTES`] of payload at most: a small record as it is; a big string as a
/// Set and Appends, a big range as several SetRanges, a big hash change as several of its
/// kind, a big restored value as [`encode_entry`] does it.
pub fn split_record(
    record: &Record<'_>,
    mut emit: impl FnMut(RecordKind, &[u8]),
) -> Result<(), MalformedRecord> {
    if !is_split(record) {
        emit(record.kind, record.body);
        return Ok(());
    }
    match record.kind {
        RecordKind::Set | RecordKind::SetPersistent | RecordKind::Append => {
            let deadline = if record.kind == RecordKind::Append {
                0
            } else {
                record.deadline()?
            };
            let payload = if record.kind == RecordKind::Append {
                record.body
            } else {
                record.payload()
            };
            let (first, rest) = payload.split_at(PIECE_BYTES);
            if record.kind == RecordKind::Append {
                emit(RecordKind::Append, first);
            } else if deadline == 0 {
                emit(RecordKind::SetPersistent, first);
            } else {
                emit(
                    RecordKind::Set,
                    &[&deadline.to_le_bytes()[..], first].concat(),
                );
            }
            for piece in rest.chunks(PIECE_BYTES) {
                emit(RecordKind::Append, piece);
            }
        }
        RecordKind::SetRange => {
            let offset = record.deadline()?;
            for (i, piece) in record.payload().chunks(PIECE_BYTES).enumerate() {
                let at = offset + (i * PIECE_BYTES) as u64;
                emit(
                    RecordKind::SetRange,
                    &[&at.to_le_bytes()[..], piece].concat(),
                );
            }
        }
        RecordKind::LSet | RecordKind::LInsert | RecordKind::LRem => {
            // One element: as big as the element that arrived in one argument.
            emit(record.kind, record.body);
        }
        // LPush pieces in order push the same elements in the same order.
        RecordKind::HSet
        | RecordKind::HDel
        | RecordKind::LPush
        | RecordKind::RPush
        | RecordKind::SAdd
        | RecordKind::SRem
        | RecordKind::ZAdd
        | RecordKind::ZRem
        | RecordKind::XDel => {
            let items: Vec<&[u8]> = record.items().collect::<Result<_, _>>()?;
            in_pieces(record.kind, items.into_iter(), &mut emit);
        }
        RecordKind::Restore | RecordKind::RestorePersistent => {
            let value = Value::from_persisted(record.payload())
                .ok_or(MalformedRecord("a restored value does not decode"))?;
            let mut out = Vec::new();
            encode_entry(
                &mut out,
                record.slot,
                record.key,
                &value,
                record.deadline()?,
            );
            let mut rest = &out[..];
            while !rest.is_empty() {
                let (piece, used) = decode_record(rest, record.lsn)?;
                emit(piece.kind, piece.body);
                rest = &rest[used..];
            }
        }
        RecordKind::XAdd => {
            let (bound, entries) = crate::replay::stream_additions(record)?;
            let entries = entries.iter().map(|(id, fields)| (*id, &fields[..]));
            stream_pieces(bound, entries, &mut emit);
        }
        RecordKind::Del
        | RecordKind::XTrim
        | RecordKind::XSetId
        | RecordKind::Reserve
        | RecordKind::Expire
        | RecordKind::Clear
        | RecordKind::Commit
        | RecordKind::LPop
        | RecordKind::RPop => {
            emit(record.kind, record.body);
        }
    }
    Ok(())
}

/// Emits `items` as records of `kind` of about [`PIECE_BYTES`] each; an HSet's field and
/// its value (a ZAdd's score and member) stay in one record.
fn in_pieces<'a>(
    kind: RecordKind,
    items: impl Iterator<Item = &'a [u8]>,
    emit: &mut impl FnMut(RecordKind, &[u8]),
) {
    let per_group = if matches!(kind, RecordKind::HSet | RecordKind::ZAdd) {
        2
    } else {
        1
    };
    let mut body = Vec::new();
    for (i, item) in items.enumerate() {
        put_item(&mut body, item);
        if (i + 1) % per_group == 0 && body.len() >= PIECE_BYTES {
            emit(kind, &body);
            body.clear();
        }
    }
    if !body.is_empty() {
        emit(kind, &body);
    }
}

/// The windows a shard of `len` keys is walked in: consecutive ranges of the 64-bit hash
/// space of about `keys_per_window` keys each (hashes are uniform).
pub fn hash_windows(len: usize, keys_per_window: usize) -> Vec<(u64, u64)> {
    let count = len.div_ceil(keys_per_window.max(1)).max(1) as u64;
    let step = u64::MAX / count;
    (0..count)
        .map(|i| {
            let low = i * step;
            let high = if i + 1 == count {
                u64::MAX
            } else {
                (i + 1) * step - 1
            };
            (low, high)
        })
        .collect()
}

/// Emits stream entries as XAdd records of about [`PIECE_BYTES`] each; the trim `bound`
/// (which follows every append) goes with the last.
fn stream_pieces<'a>(
    bound: Option<StreamId>,
    entries: impl Iterator<Item = (StreamId, &'a [u8])>,
    emit: &mut impl FnMut(RecordKind, &[u8]),
) {
    let mut items = Vec::new();
    let finish =
        |items: &[u8], bound: Option<StreamId>, emit: &mut dyn FnMut(RecordKind, &[u8])| {
            let mut body = Vec::with_capacity(17 + items.len());
            match bound {
                Some(b) => {
                    body.push(1);
                    body.extend_from_slice(&b.to_bytes());
                }
                None => body.push(0),
            }
            body.extend_from_slice(items);
            emit(RecordKind::XAdd, &body);
        };
    for (id, fields) in entries {
        put_item(&mut items, &id.to_bytes());
        put_item(&mut items, fields);
        if items.len() >= PIECE_BYTES {
            finish(&items, None, emit);
            items.clear();
        }
    }
    if !items.is_empty() || bound.is_some() {
        finish(&items, bound, emit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change_log::Chunk;
    use crate::replay::apply_record;
    use crate::slot::key_slot;
    use crate::{HashValue, ListValue, Store};

    fn rebuild(records: &[u8]) -> Store {
        let store = Store::builder().build();
        let count = {
            let mut n = 0u32;
            let mut rest = records;
            while !rest.is_empty() {
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                rest = &rest[4 + len..];
                n += 1;
            }
            n
        };
        let chunk = Chunk::from_records(1, count, records);
        for record in chunk.records() {
            apply_record(&store, &record.unwrap(), 1).unwrap();
        }
        store
    }

    #[test]
    fn a_big_string_hash_and_list_travel_in_bounded_records_and_come_back_whole() {
        let big = vec![7u8; PIECE_BYTES * 3 + 5];
        let mut hash = HashValue::new();
        for i in 0..5_000u32 {
            hash.insert(format!("field:{i}").as_bytes(), &[b'v'; 40]);
        }
        let mut out = Vec::new();
        encode_entry(&mut out, key_slot(b"s"), b"s", &Value::Str(big.clone()), 0);
        encode_entry(
            &mut out,
            key_slot(b"h"),
            b"h",
            &Value::Hash(Box::new(hash.clone())),
            4_000_000_000_000,
        );
        let list = ListValue::from_items(
            (0..30_000u32)
                .map(|i| format!("item:{i}").into_bytes())
                .collect::<Vec<_>>()
                .iter()
                .map(Vec::as_slice),
        );
        encode_entry(
            &mut out,
            key_slot(b"l"),
            b"l",
            &Value::List(Box::new(list.clone())),
            0,
        );
        // No record carries much more than a piece of value.
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len <= PIECE_BYTES + 1024, "a record of {len} bytes");
            rest = &rest[4 + len..];
        }
        let store = rebuild(&out);
        let got = store.inspect(b"s", 1, |e| e.map(|e| e.value.clone()));
        assert_eq!(got, Some(Value::Str(big)));
        let (value, deadline) = store
            .inspect(b"h", 1, |e| e.map(|e| (e.value.clone(), e.expires_at)))
            .unwrap();
        assert_eq!(value, Value::Hash(Box::new(hash)));
        assert_eq!(deadline, Some(4_000_000_000_000));
        let got = store.inspect(b"l", 1, |e| e.map(|e| e.value.clone()));
        assert_eq!(got, Some(Value::List(Box::new(list))));
    }

    #[test]
    fn a_big_record_split_in_pieces_does_what_the_record_does() {
        let big = vec![b'x'; PIECE_BYTES * 5 + 3];
        let mut fields = Vec::new();
        for i in 0..9_000u32 {
            put_item(&mut fields, format!("f{i}").as_bytes());
            put_item(&mut fields, &[b'v'; 30]);
        }
        let mut hash = HashValue::new();
        hash.insert(b"a", &big[..100]);
        let restore = [
            &7u64.to_le_bytes()[..],
            &Value::Hash(Box::new(hash)).to_persisted(),
        ]
        .concat();
        let mut hash_restore = HashValue::new();
        for i in 0..9_000u32 {
            hash_restore.insert(format!("g{i}").as_bytes(), &[b'w'; 30]);
        }
        let big_restore = [
            &9u64.to_le_bytes()[..],
            &Value::Hash(Box::new(hash_restore)).to_persisted(),
        ]
        .concat();
        let big_list = Value::List(Box::new(ListValue::from_items(
            (0..20_000u32)
                .map(|i| format!("element:{i}").into_bytes())
                .collect::<Vec<_>>()
                .iter()
                .map(Vec::as_slice),
        )));
        let cases: Vec<(RecordKind, Vec<u8>)> = vec![
            (RecordKind::Set, [&5u64.to_le_bytes()[..], &big].concat()),
            (RecordKind::SetPersistent, big.clone()),
            (RecordKind::Append, big.clone()),
            (
                RecordKind::SetRange,
                [&10u64.to_le_bytes()[..], &big].concat(),
            ),
            (RecordKind::HSet, fields.clone()),
            (RecordKind::LPush, fields.clone()),
            (RecordKind::RPush, fields.clone()),
            (RecordKind::RestorePersistent, big_list.to_persisted()),
            (RecordKind::Restore, restore),
            (RecordKind::Restore, big_restore),
        ];
        for (kind, body) in cases {
            let key = b"k";
            let slot = key_slot(key);
            let mut whole = Vec::new();
            encode_record(&mut whole, kind, 0, slot, key, &body);
            let (record, _) = decode_record(&whole, 1).unwrap();
            let mut pieces = Vec::new();
            split_record(&record, |k, b| {
                assert!(
                    b.len() <= PIECE_BYTES + 1024,
                    "{kind:?}: a piece of {}",
                    b.len()
                );
                encode_record(&mut pieces, k, 0, slot, key, b);
            })
            .unwrap();
            let seeded = |records: &[u8]| {
                let mut start = Vec::new();
                encode_record(&mut start, RecordKind::SetPersistent, 0, slot, key, b"seed");
                rebuild(&[start, records.to_vec()].concat())
            };
            let a = seeded(&whole);
            let b = seeded(&pieces);
            let state =
                |s: &Store| s.inspect(key, 1, |e| e.map(|e| (e.value.clone(), e.expires_at)));
            assert_eq!(state(&a), state(&b), "{kind:?}");
        }
    }

    /// Every kind of big value, copied a piece at a time, travels in bounded records and
    /// comes back exactly as a whole copy brings it, deadline included; the first piece of a
    /// hash, set or sorted set is followed by the hint of its whole size, which makes room
    /// for every member on the receiver.
    #[test]
    fn every_kind_copied_in_pieces_comes_back_as_a_whole_copy_does() {
        use crate::{SetValue, StreamValue, ZSetValue};
        const DEADLINE: u64 = 4_000_000_000_000;
        const COUNT: usize = 70_000;
        let names: Vec<Vec<u8>> = (0..COUNT)
            .map(|i| format!("member:{i:08}").into_bytes())
            .collect();
        let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let mut hash = HashValue::new();
        for name in &names {
            hash.insert(name, b"0123456789");
        }
        let mut stream = StreamValue::new();
        for i in 1..=COUNT as u64 {
            let mut fields = Vec::new();
            put_item(&mut fields, b"field");
            put_item(&mut fields, format!("{i:016}").as_bytes());
            stream.append(StreamId { ms: i, seq: 0 }, fields.into_boxed_slice());
        }
        // A tombstone and a last id past the last entry: the meta travels too.
        assert!(stream.delete(StreamId { ms: 500, seq: 0 }));
        assert!(stream.delete(StreamId {
            ms: COUNT as u64,
            seq: 0
        }));
        let values = [
            Value::Str(vec![b's'; 3 * BIG_VALUE_BYTES + 7]),
            Value::Hash(Box::new(hash)),
            Value::List(Box::new(ListValue::from_items(names.iter().copied()))),
            Value::Set(Box::new(SetValue::from_members(names.iter().copied()))),
            Value::ZSet(Box::new(ZSetValue::from_entries(
                names.iter().enumerate().map(|(i, n)| ((i % 97) as f64, *n)),
            ))),
            Value::Stream(Box::new(stream)),
        ];
        let key = b"k";
        let slot = key_slot(key);
        let state = |s: &Store| s.inspect(key, 1, |e| e.map(|e| (e.value.clone(), e.expires_at)));
        for value in values {
            let kind = value.type_name();
            assert!(copied_in_pieces(&value), "{kind}");
            let mut whole = Vec::new();
            encode_entry(&mut whole, slot, key, &value, DEADLINE);
            let mut pieces = Vec::new();
            let mut from = PieceStart::First;
            let mut count = 0;
            while let Some(next) = encode_piece(&mut pieces, slot, key, &value, DEADLINE, from) {
                from = next;
                count += 1;
                assert!(count < 10_000, "{kind}: the pieces never end");
            }
            assert!(count >= 4, "{kind}: {} pieces", count + 1);
            let mut rest = &pieces[..];
            let mut reserved = None;
            while !rest.is_empty() {
                let (record, used) = decode_record(rest, 1).unwrap();
                assert!(
                    record.body.len() <= PIECE_BYTES + 1024,
                    "{kind}: a record of {} bytes",
                    record.body.len()
                );
                if record.kind == RecordKind::Reserve && reserved.is_none() {
                    let upto = pieces.len() - rest.len() + used;
                    reserved = Some((record.deadline().unwrap(), rebuild(&pieces[..upto])));
                }
                rest = &rest[used..];
            }
            let (whole, pieces) = (rebuild(&whole), rebuild(&pieces));
            assert!(
                state(&pieces) == state(&whole),
                "{kind}: pieces and whole differ"
            );
            assert!(
                state(&pieces) == Some((value.clone(), Some(DEADLINE))),
                "{kind}: not the value sent"
            );
            let Some((hinted, receiver)) = reserved else {
                assert!(
                    matches!(value, Value::List(_) | Value::Stream(_)),
                    "{kind}: no size hint"
                );
                continue;
            };
            let (len, room) = receiver
                .inspect(key, 1, |e| {
                    e.map(|e| match &e.value {
                        Value::Str(b) => (b.len(), b.capacity()),
                        Value::Hash(h) => (h.len(), h.capacity()),
                        Value::Set(m) => (m.len(), m.capacity()),
                        Value::ZSet(z) => (z.len(), z.capacity()),
                        _ => (0, 0),
                    })
                })
                .unwrap();
            assert_eq!(hinted as usize, value_len(&value), "{kind}: the hint");
            assert!(
                len < value_len(&value),
                "{kind}: the hint came after the first piece only"
            );
            assert!(
                room >= value_len(&value),
                "{kind}: room for {room} of {hinted}"
            );
        }
    }

    fn value_len(value: &Value) -> usize {
        match value {
            Value::Str(b) => b.len(),
            Value::Hash(h) => h.len(),
            Value::List(l) => l.len(),
            Value::Set(s) => s.len(),
            Value::ZSet(z) => z.len(),
            Value::Stream(s) => s.len(),
        }
    }

    #[test]
    fn windows_cover_the_hash_space_once() {
        for len in [0, 1, 255, 256, 257, 100_000] {
            let windows = hash_windows(len, 256);
            assert_eq!(windows[0].0, 0);
            assert_eq!(windows.last().unwrap().1, u64::MAX);
            for pair in windows.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0);
            }
        }
    }
}
