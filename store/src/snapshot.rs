//! A slot's keys as change records, for a replica that syncs from scratch (and a learner
//! later): each key becomes records of at most about [`PIECE_BYTES`] of value, so a big
//! string or hash travels in many small frames, never one giant one. The records are the
//! change log's own, so the replica applies them with [`crate::replay::apply_record`].
//!
//! A snapshot is walked in windows of the shard map's fixed per-key hash: every key that
//! exists for the whole walk is in exactly one window whatever is added or removed
//! meanwhile. Each window is copied under its shard lock and stamped with the log's last
//! LSN then, so the stream that carries it can place it exactly after the records it
//! reflects: applying "records up to the stamp, then the window, then later records" in
//! that order rebuilds the primary's state.

use crate::change_log::{RecordKind, encode_record, put_item};
use crate::value::Value;

/// Value bytes per record of a snapshot.
pub const PIECE_BYTES: usize = 64 << 10;

/// Appends the records that rebuild `key` holding `value` with `deadline` (Unix ms; 0:
/// none). A string is a Set of its first piece and Appends of the rest; a hash is a Del,
/// HSets of pieces of fields and an Expire.
pub fn encode_entry(out: &mut Vec<u8>, slot: u16, key: &[u8], value: &Value, deadline: u64) {
    match value {
        Value::Str(bytes) => {
            let (first, rest) = bytes.split_at(bytes.len().min(PIECE_BYTES));
            let mut body = Vec::with_capacity(first.len() + 8);
            let kind = if deadline == 0 {
                RecordKind::SetPersistent
            } else {
                body.extend_from_slice(&deadline.to_le_bytes());
                RecordKind::Set
            };
            body.extend_from_slice(first);
            encode_record(out, kind, 0, slot, key, &body);
            for piece in rest.chunks(PIECE_BYTES) {
                encode_record(out, RecordKind::Append, 0, slot, key, piece);
            }
        }
        Value::Hash(hash) => {
            encode_record(out, RecordKind::Del, 0, slot, key, &[]);
            let mut body = Vec::new();
            for (field, item) in hash.iter() {
                put_item(&mut body, field);
                put_item(&mut body, item);
                if body.len() >= PIECE_BYTES {
                    encode_record(out, RecordKind::HSet, 0, slot, key, &body);
                    body.clear();
                }
            }
            if !body.is_empty() {
                encode_record(out, RecordKind::HSet, 0, slot, key, &body);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change_log::Chunk;
    use crate::replay::apply_record;
    use crate::slot::key_slot;
    use crate::{HashValue, Store};

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
    fn a_big_string_and_a_big_hash_travel_in_bounded_records_and_come_back_whole() {
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
