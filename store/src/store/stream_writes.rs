//! A slot's stream operations: each changes the stream and appends the one record that
//! says what changed (the ids appended, deleted or trimmed through), never the stream.

use super::{Slot, WrongType};
use crate::change_log::{RecordKind, put_item};
use crate::stream::{StreamId, StreamValue, Trim};
use crate::value::Value;

impl Slot<'_> {
    /// The stream at this key, or WRONGTYPE; `None` when absent.
    pub fn stream(&self) -> Result<Option<&StreamValue>, WrongType> {
        self.value()
            .map(|v| v.as_stream().ok_or(WrongType))
            .transpose()
    }

    /// The index of the stream, created empty when absent.
    fn stream_index(&mut self) -> Result<usize, WrongType> {
        self.stream()?;
        Ok(match self.index {
            Some(index) => index,
            None => {
                let empty = Value::Stream(Box::default());
                let index = self
                    .shard
                    .insert(self.key, self.slot, empty, 0, self.now, 0);
                self.index = Some(index);
                self.modified = true;
                index
            }
        })
    }

    /// Runs `change` on the stream at `index` and keeps the accounting right.
    fn change_stream<R>(&mut self, index: usize, change: impl FnOnce(&mut StreamValue) -> R) -> R {
        let before = self.cost(index);
        let Value::Stream(stream) = &mut self.shard.map[index].value else {
            unreachable!("checked to be a stream");
        };
        let result = change(stream);
        self.modified = true;
        self.account(index, before);
        result
    }

    /// Appends `entries` (ids above the stream's last; one that is not is skipped), the
    /// stream created when absent, then trims as `trim` says; how many entries the trim
    /// removed.
    pub fn stream_add(
        &mut self,
        entries: Vec<(StreamId, Box<[u8]>)>,
        trim: Option<Trim>,
    ) -> Result<usize, WrongType> {
        self.stream_append(entries, |stream| trim.and_then(|t| stream.trim_bound(t)))
    }

    /// As [`Slot::stream_add`] with the trim already decided: every entry through `bound`
    /// goes (a replayed record).
    pub fn stream_add_through(
        &mut self,
        entries: Vec<(StreamId, Box<[u8]>)>,
        bound: Option<StreamId>,
    ) -> Result<usize, WrongType> {
        self.stream_append(entries, |_| bound)
    }

    fn stream_append(
        &mut self,
        entries: Vec<(StreamId, Box<[u8]>)>,
        bound: impl FnOnce(&StreamValue) -> Option<StreamId>,
    ) -> Result<usize, WrongType> {
        let index = self.stream_index()?;
        let mut items = Vec::new();
        if self.sinks.log.is_some() {
            for (id, fields) in &entries {
                put_item(&mut items, &id.to_bytes());
                put_item(&mut items, fields);
            }
        }
        let (bound, trimmed) = self.change_stream(index, |stream| {
            for (id, fields) in entries {
                stream.append(id, fields);
            }
            let bound = bound(stream);
            (bound, bound.map_or(0, |b| stream.remove_through(b)))
        });
        self.flush_pending();
        if let Some(log) = self.sinks.log {
            log.append(RecordKind::XAdd, self.slot, self.key, |out| {
                match bound {
                    Some(b) => {
                        out.push(1);
                        out.extend_from_slice(&b.to_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(&items);
            });
        }
        Ok(trimmed)
    }

    /// Trims the stream as XTRIM does; how many entries went.
    pub fn stream_trim(&mut self, trim: Trim) -> Result<usize, WrongType> {
        let Some(bound) = self.stream()?.and_then(|s| s.trim_bound(trim)) else {
            return Ok(0);
        };
        self.stream_trim_through(bound)
    }

    /// Removes every entry through `bound`; how many.
    pub fn stream_trim_through(&mut self, bound: StreamId) -> Result<usize, WrongType> {
        if self.stream()?.is_none() {
            return Ok(0);
        }
        let index = self.index.expect("the stream exists");
        let removed = self.change_stream(index, |stream| stream.remove_through(bound));
        if removed > 0 {
            self.flush_pending();
            if let Some(log) = self.sinks.log {
                log.append(RecordKind::XTrim, self.slot, self.key, |out| {
                    out.extend_from_slice(&bound.to_bytes())
                });
            }
        }
        Ok(removed)
    }

    /// Deletes these entries (XDEL); how many were there.
    pub fn stream_delete(&mut self, ids: &[StreamId]) -> Result<usize, WrongType> {
        if self.stream()?.is_none() {
            return Ok(0);
        }
        let index = self.index.expect("the stream exists");
        let deleted: Vec<StreamId> = self.change_stream(index, |stream| {
            ids.iter()
                .copied()
                .filter(|id| stream.delete(*id))
                .collect()
        });
        if !deleted.is_empty() {
            self.flush_pending();
            if let Some(log) = self.sinks.log {
                log.append(RecordKind::XDel, self.slot, self.key, |out| {
                    for id in &deleted {
                        put_item(out, &id.to_bytes());
                    }
                });
            }
        }
        Ok(deleted.len())
    }

    /// Sets the stream's last id, entries added and tombstone (XSETID); the stream is
    /// created when absent (a replayed snapshot's empty stream).
    pub fn stream_set_meta(
        &mut self,
        last_id: StreamId,
        entries_added: u64,
        max_deleted: StreamId,
    ) -> Result<(), WrongType> {
        let index = self.stream_index()?;
        self.change_stream(index, |stream| {
            stream.set_meta(last_id, entries_added, max_deleted)
        });
        self.flush_pending();
        if let Some(log) = self.sinks.log {
            log.append(RecordKind::XSetId, self.slot, self.key, |out| {
                out.extend_from_slice(&last_id.to_bytes());
                out.extend_from_slice(&max_deleted.to_bytes());
                out.extend_from_slice(&entries_added.to_le_bytes());
            });
        }
        Ok(())
    }
}
