//! Applies change records to a store: the inverse of what [`Slot`](crate::Slot) appends.
//! Recovery replays the WAL with it (and replicas will apply a primary's stream with it).
//! It is lenient where a record meets a key of another type than the one it was made on:
//! that happens only when a fuzzy base image already holds a later state of the key, and a
//! later whole-key record then sets it right.

use crate::change_log::{MalformedRecord, Record, RecordKind};
use crate::store::Store;
use crate::stream::{StreamId, fields_well_formed};
use crate::value::Value;

/// Applies one record; `now` stamps access times only: nothing expires during a replay
/// (sweep afterwards), since a record may be followed by one that lifts its deadline.
/// Clear empties the store, Commit does nothing (grouping is the reader's).
pub fn apply_record(store: &Store, record: &Record<'_>, now: u64) -> Result<(), MalformedRecord> {
    let key = record.key;
    match record.kind {
        RecordKind::Set | RecordKind::SetPersistent => {
            let deadline = record.deadline()?;
            let value = record.payload().to_vec();
            store.replay_write(key, now, |slot| slot.set(Value::Str(value), Some(deadline)));
        }
        RecordKind::Restore | RecordKind::RestorePersistent => {
            let deadline = record.deadline()?;
            let value = Value::from_persisted(record.payload())
                .ok_or(MalformedRecord("a restored value does not decode"))?;
            store.replay_write(key, now, |slot| slot.set(value, Some(deadline)));
        }
        RecordKind::Del => {
            store.replay_write(key, now, |slot| slot.remove());
        }
        RecordKind::Expire => {
            let deadline = record.deadline()?;
            store.replay_write(key, now, |slot| {
                slot.set_expires_at((deadline != 0).then_some(deadline))
            });
        }
        RecordKind::HSet => {
            let items: Vec<&[u8]> = record.items().collect::<Result<_, _>>()?;
            if items.len() % 2 != 0 {
                return Err(MalformedRecord("a field without a value"));
            }
            store.replay_write(key, now, |slot| {
                if slot.hash().is_err() {
                    slot.remove();
                }
                for pair in items.chunks_exact(2) {
                    let _ = slot.hash_insert(pair[0], pair[1]);
                }
            });
        }
        RecordKind::HDel => {
            let fields: Vec<&[u8]> = record.items().collect::<Result<_, _>>()?;
            store.replay_write(key, now, |slot| {
                for field in fields {
                    let _ = slot.hash_remove(field);
                }
            });
        }
        RecordKind::Append => {
            store.replay_write(key, now, |slot| {
                if slot.append(record.body).is_err() {
                    slot.remove();
                    let _ = slot.append(record.body);
                }
            });
        }
        RecordKind::Reserve => {
            let count = record.deadline()?;
            // A hint from a peer: never more than a record could ever fill.
            if count > crate::change_log::MAX_RECORD as u64 * 2 {
                return Err(MalformedRecord("a reservation past any value"));
            }
            store.replay_write(key, now, |slot| slot.reserve(count as usize));
        }
        RecordKind::SetRange => {
            let offset = record.deadline()? as usize;
            let patch = record.payload();
            if offset.saturating_add(patch.len()) > crate::change_log::MAX_RECORD * 2 {
                return Err(MalformedRecord("a range past any string"));
            }
            store.replay_write(key, now, |slot| {
                if slot.set_range(offset, patch).is_err() {
                    slot.remove();
                    let _ = slot.set_range(offset, patch);
                }
            });
        }
        RecordKind::LPush | RecordKind::RPush => {
            let items: Vec<&[u8]> = record.items().collect::<Result<_, _>>()?;
            store.replay_write(key, now, |slot| {
                if slot.list().is_err() {
                    slot.remove();
                }
                let _ = slot.list_push(record.kind == RecordKind::LPush, &items);
            });
        }
        RecordKind::LPop | RecordKind::RPop => {
            let count = record.number()? as usize;
            store.replay_write(key, now, |slot| {
                let _ = slot.list_trim(
                    if record.kind == RecordKind::LPop {
                        count
                    } else {
                        0
                    },
                    if record.kind == RecordKind::RPop {
                        count
                    } else {
                        0
                    },
                );
            });
        }
        RecordKind::LSet => {
            let at = record.number()? as usize;
            store.replay_write(key, now, |slot| slot.list_set(at, record.payload()).ok());
        }
        RecordKind::LInsert => {
            let at = record.number()? as usize;
            store.replay_write(key, now, |slot| slot.list_insert(at, record.payload()).ok());
        }
        RecordKind::LRem => {
            let count = record.number()? as i64;
            store.replay_write(key, now, |slot| {
                slot.list_remove(count, record.payload()).ok()
            });
        }
        RecordKind::SAdd | RecordKind::SRem => {
            let members: Vec<&[u8]> = record.items().collect::<Result<_, _>>()?;
            store.replay_write(key, now, |slot| {
                if record.kind == RecordKind::SRem {
                    let _ = slot.set_remove(&members);
                    return;
                }
                if slot.set_members().is_err() {
                    slot.remove();
                }
                let _ = slot.set_add(&members);
            });
        }
        RecordKind::ZAdd => {
            let items: Vec<&[u8]> = record.items().collect::<Result<_, _>>()?;
            if items.len() % 2 != 0 {
                return Err(MalformedRecord("a member without a score"));
            }
            let mut entries = Vec::with_capacity(items.len() / 2);
            for pair in items.chunks_exact(2) {
                let score = <[u8; 8]>::try_from(pair[0])
                    .map(f64::from_le_bytes)
                    .ok()
                    .filter(|s| !s.is_nan())
                    .ok_or(MalformedRecord("a score that is not one"))?;
                entries.push((score, pair[1]));
            }
            store.replay_write(key, now, |slot| {
                if slot.zset().is_err() {
                    slot.remove();
                }
                let _ = slot.zset_set(&entries);
            });
        }
        RecordKind::ZRem => {
            let members: Vec<&[u8]> = record.items().collect::<Result<_, _>>()?;
            store.replay_write(key, now, |slot| {
                let _ = slot.zset_remove(&members);
            });
        }
        RecordKind::XAdd => {
            let (bound, entries) = stream_additions(record)?;
            store.replay_write(key, now, |slot| {
                if slot.stream().is_err() {
                    slot.remove();
                }
                let _ = slot.stream_add_through(entries, bound);
            });
        }
        RecordKind::XDel => {
            let ids = record
                .items()
                .map(|item| item.and_then(stream_id))
                .collect::<Result<Vec<_>, _>>()?;
            store.replay_write(key, now, |slot| {
                let _ = slot.stream_delete(&ids);
            });
        }
        RecordKind::XTrim => {
            let bound = stream_id(record.body)?;
            store.replay_write(key, now, |slot| {
                let _ = slot.stream_trim_through(bound);
            });
        }
        RecordKind::XSetId => {
            if record.body.len() != 40 {
                return Err(MalformedRecord("a stream meta of another size"));
            }
            let last_id = stream_id(&record.body[..16])?;
            let max_deleted = stream_id(&record.body[16..32])?;
            let added = u64::from_le_bytes(record.body[32..].try_into().expect("8 bytes"));
            store.replay_write(key, now, |slot| {
                if slot.stream().is_err() {
                    slot.remove();
                }
                let _ = slot.stream_set_meta(last_id, added, max_deleted);
            });
        }
        RecordKind::Clear => {
            drop(store.flush());
        }
        RecordKind::Commit => {}
    }
    Ok(())
}

fn stream_id(bytes: &[u8]) -> Result<StreamId, MalformedRecord> {
    StreamId::from_bytes(bytes).ok_or(MalformedRecord("a stream id that is not 16 bytes"))
}

/// An XAdd record's trim bound and entries.
#[allow(clippy::type_complexity)]
pub(crate) fn stream_additions(
    record: &Record<'_>,
) -> Result<(Option<StreamId>, Vec<(StreamId, Box<[u8]>)>), MalformedRecord> {
    let (&flag, rest) = record
        .body
        .split_first()
        .ok_or(MalformedRecord("an XAdd without its trim flag"))?;
    let (bound, rest) = match flag {
        0 => (None, rest),
        1 if rest.len() >= 16 => (Some(stream_id(&rest[..16])?), &rest[16..]),
        _ => return Err(MalformedRecord("an XAdd trim flag that is not one")),
    };
    let tail = Record {
        body: rest,
        ..*record
    };
    let items = tail.items().collect::<Result<Vec<_>, _>>()?;
    if items.len() % 2 != 0 {
        return Err(MalformedRecord("a stream entry without fields"));
    }
    let mut entries = Vec::with_capacity(items.len() / 2);
    for pair in items.chunks_exact(2) {
        if !fields_well_formed(pair[1]) {
            return Err(MalformedRecord("stream entry fields that do not decode"));
        }
        entries.push((stream_id(pair[0])?, Box::from(pair[1])));
    }
    Ok((bound, entries))
}
