//! The sharded keyspace. Each shard is an index map behind its own mutex; no lock is held
//! across an `.await` because nothing here is async. A shard holds a contiguous range of
//! cluster slots, so one slot's keys (a snapshot, a checkpoint of one range) live in one
//! shard; inside a shard keys are placed by a per-process seeded hash, so clients cannot
//! aim collisions at a table. Memory is accounted per entry in O(1); eviction samples keys
//! into a candidate pool as Redis does.
//!
//! With a [`ChangeLog`] attached, every change appends its effect record under the shard
//! lock, and every changed key is noted (a dirty bit in the entry, or a tombstone for a key
//! the base image holds) in the shard's current checkpoint epoch.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::change_log::{ChangeLog, RecordKind, put_item};
use crate::change_marks::{
    ChangeMarks, CheckpointSource, DIRTY, DirtyEntry, IN_BASE, STALE, ShardChanges,
};
use crate::eviction::{Candidate, EvictionPolicy, EvictionPool, LfuCounter};
use crate::key_bytes::KeyBytes;
use crate::list::ListValue;
use crate::scan::scan_window;
use crate::set::SetValue;
use crate::slot::{SLOT_COUNT, key_slot};
use crate::slot_set::SlotSet;
use crate::value::{HashValue, Value, alloc_size};
use crate::zset::ZSetValue;
use crate::{StoreError, glob_match};

type KeyMap = crate::key_map::KeyMap<Entry>;

/// Bytes an entry costs besides its key and value allocations: the map bucket (hash, key
/// inline or its pointer, entry), its slot links (8) and its 5-byte index slot with
/// load-factor slack.
const ENTRY_OVERHEAD: usize =
    8 + std::mem::size_of::<KeyBytes>() + std::mem::size_of::<Entry>() + 8 + 6;

/// One key's value and metadata.
#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// Absolute deadline in Unix ms; 0 = no TTL.
    expires_at: u64,
    /// Last access, Unix ms truncated to 32 bits (idle times wrap after 49 days).
    access: u32,
    lfu: LfuCounter,
    flags: u8,
}

// The flags byte fits in the padding the LFU counter would otherwise leave.
const _: () = assert!(std::mem::size_of::<Entry>() == 40);

fn entry_cost(key_len: usize, value: &Value) -> usize {
    ENTRY_OVERHEAD + alloc_size(KeyBytes::heap_len(key_len)) + value.heap_bytes()
}

fn minutes(now: u64) -> u16 {
    (now / 60_000) as u16
}

#[derive(Debug, Default, Clone, Copy)]
struct ShardStats {
    hits: u64,
    misses: u64,
    expired: u64,
    evicted: u64,
}

#[derive(Debug)]
struct Watched {
    watchers: u32,
    version: u64,
}

struct Shard {
    map: KeyMap,
    /// Keys with a TTL.
    volatile: usize,
    /// Accounted bytes of every entry.
    bytes: usize,
    /// Versions of keys some connection WATCHes; empty almost always.
    watched: HashMap<Box<[u8]>, Watched>,
    /// Where the active expiry sweep continues.
    sweep: usize,
    rng: SmallRng,
    stats: ShardStats,
    /// Writes that changed a key here (Redis's `dirty`; RESETSTAT leaves it).
    changes: u64,
    /// What changed since the base image took it.
    marks: ChangeMarks,
    /// A FLUSHALL (the LSN of the last) emptied the shard in this epoch: what its range of
    /// the base image holds from before it goes too. 0: none.
    cleared: [u64; 2],
    /// Reused buffer for records built across several calls (HSET of many fields).
    scratch: Vec<u8>,
    /// Keys and keys with a TTL of each logical database but 0, when keys are namespaced
    /// (see [`crate::namespace`]); empty until such a key arrives. Database 0 is the rest.
    databases: Vec<DatabaseCount>,
    namespaced: bool,
    /// Told of every modified key (client-side caching), when attached.
    events: Option<Arc<dyn KeyEvents>>,
}

/// Keys of one logical database in one shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseCount {
    /// Keys (expired ones not yet reclaimed included).
    pub keys: usize,
    /// Keys with a TTL.
    pub volatile: usize,
}

/// Told of what happens to keys inside the store: removed by itself (expiry, eviction),
/// created, modified, read while missing (keyspace notifications, client-side caching).
/// Called with the key's shard locked: it must not call back into the store, nor block.
pub trait KeyEvents: Send + Sync {
    /// `key` passed its deadline and was deleted.
    fn expired(&self, key: &[u8]);
    /// `key` was evicted for memory (cache mode).
    fn evicted(&self, key: &[u8]);
    /// Whether [`KeyEvents::created`] is wanted now (asked before every key a write
    /// creates, so it must be cheap).
    fn wants_created(&self) -> bool {
        false
    }
    /// A write created `key` (not a replayed record).
    fn created(&self, _key: &[u8]) {}
    /// Whether [`KeyEvents::touched`] is wanted now (asked before every modified key).
    fn wants_touched(&self) -> bool {
        false
    }
    /// `key` was modified: written, deleted, expired or evicted (what WATCH sees).
    fn touched(&self, _key: &[u8]) {}
    /// Whether [`KeyEvents::missed`] is wanted now (asked on every read of a missing key).
    fn wants_missed(&self) -> bool {
        false
    }
    /// A read found no `key` (Redis's `keymiss`, counted where `keyspace_misses` is).
    fn missed(&self, _key: &[u8]) {}
}

/// Where a store-mode eviction puts a value the base image does not hold yet, so its
/// memory is freed only once the value is safe. May wait briefly when it is full.
pub trait EvictionSpill: Send + Sync {
    /// Takes the evicted key's state (stamped with the log position it reflects). Called
    /// with the shard locked: it must not block.
    fn spill(&self, entry: DirtyEntry);
    /// Waits (bounded) while too much is spilled and not yet written; called before each
    /// eviction with no shard locked.
    fn wait_for_room(&self);
}

/// Tunables read on every access; atomics so CONFIG SET applies at once.
#[derive(Debug)]
struct Tunables {
    maxmemory: AtomicU64,
    policy: AtomicU8,
    samples: AtomicU32,
    lfu_log_factor: AtomicU32,
    lfu_decay_time: AtomicU32,
}

impl Shard {
    fn new(seed: u64, slots: usize, namespaced: bool) -> Self {
        Shard {
            map: KeyMap::for_slots(slots),
            volatile: 0,
            bytes: 0,
            watched: HashMap::new(),
            sweep: 0,
            rng: SmallRng::seed_from_u64(seed),
            stats: ShardStats::default(),
            changes: 0,
            marks: ChangeMarks::default(),
            cleared: [0; 2],
            scratch: Vec::new(),
            databases: Vec::new(),
            namespaced,
            events: None,
        }
    }

    /// The logical database of a key here (0 unless keys are namespaced).
    fn database_of(&self, key: &[u8]) -> u8 {
        if self.namespaced && key.starts_with(&crate::namespace::MAGIC) {
            crate::namespace::database_of(key)
        } else {
            0
        }
    }

    /// Adds to the counts of database `db` (nothing to keep for database 0).
    fn count_in_database(&mut self, db: u8, keys: isize, volatile: isize) {
        if db == 0 {
            return;
        }
        let db = usize::from(db);
        if self.databases.len() <= db {
            self.databases.resize(db + 1, DatabaseCount::default());
        }
        let count = &mut self.databases[db];
        count.keys = count.keys.wrapping_add_signed(keys);
        count.volatile = count.volatile.wrapping_add_signed(volatile);
    }

    /// Keys and volatile keys of logical database `db` here.
    fn database(&self, db: u8) -> DatabaseCount {
        if db != 0 {
            return self
                .databases
                .get(usize::from(db))
                .copied()
                .unwrap_or_default();
        }
        let others = self
            .databases
            .iter()
            .fold(DatabaseCount::default(), |sum, c| DatabaseCount {
                keys: sum.keys + c.keys,
                volatile: sum.volatile + c.volatile,
            });
        DatabaseCount {
            keys: self.map.len() - others.keys,
            volatile: self.volatile - others.volatile,
        }
    }

    /// Starts watching `key` (one more watcher); its version now.
    fn watch(&mut self, key: &[u8]) -> u64 {
        let watched = self.watched.entry(key.into()).or_insert(Watched {
            watchers: 0,
            version: 0,
        });
        watched.watchers += 1;
        watched.version
    }

    /// True while `key` (watched) is still at `version`.
    fn watched_at(&self, key: &[u8], version: u64) -> bool {
        self.watched.get(key).is_some_and(|w| w.version == version)
    }

    /// One watcher of `key` fewer.
    fn unwatch(&mut self, key: &[u8]) {
        if let Some(w) = self.watched.get_mut(key) {
            w.watchers -= 1;
            if w.watchers == 0 {
                self.watched.remove(key);
            }
        }
    }

    fn bump_watch(&mut self, key: &[u8]) {
        if let Some(w) = self.watched.get_mut(key) {
            w.version += 1;
        }
        if let Some(events) = &self.events
            && events.wants_touched()
        {
            events.touched(key);
        }
    }

    /// Notes that the entry at `index` changed in the current epoch.
    fn mark_dirty(&mut self, index: usize) {
        // A written key is current: a resync no longer sweeps it.
        self.map[index].flags &= !STALE;
        self.marks.mark(&mut self.map[index].flags);
    }

    /// Looks a key up, deleting it first when its deadline has passed.
    fn find(&mut self, key: &[u8], slot: u16, now: u64, sinks: Sinks<'_>) -> Option<usize> {
        let index = self.map.get_index_of(key)?;
        let expires_at = self.map[index].expires_at;
        if expires_at != 0 && expires_at <= now {
            self.delete_index(index, sinks, Some(slot));
            self.stats.expired += 1;
            if let Some(events) = sinks.events {
                events.expired(key);
            }
            return None;
        }
        Some(index)
    }

    fn touch(&mut self, index: usize, now: u64, tunables: &Tunables) {
        let random: f64 = self.rng.random();
        let entry = &mut self.map[index];
        entry.access = now as u32;
        entry.lfu.touch(
            minutes(now),
            tunables.lfu_decay_time.load(Relaxed),
            tunables.lfu_log_factor.load(Relaxed),
            random,
        );
    }

    /// Takes an entry out of the map (its accounting and dirty counts with it).
    fn remove_index(&mut self, index: usize) -> (KeyBytes, Entry) {
        let (key, entry) = self.map.swap_remove_index(index).expect("index in range");
        self.bytes -= entry_cost(key.len(), &entry.value);
        if entry.expires_at != 0 {
            self.volatile -= 1;
        }
        let db = self.database_of(&key);
        self.count_in_database(db, -1, -isize::from(entry.expires_at != 0));
        self.marks.forget(entry.flags);
        self.bump_watch(&key);
        (key, entry)
    }

    /// Deletes an entry for good: a Del record goes to the log (`slot` is the key's, when
    /// the caller knows it), and the base image learns it through a tombstone (store mode:
    /// at once, through the spill queue, so a fault-in never brings it back).
    fn delete_index(
        &mut self,
        index: usize,
        sinks: Sinks<'_>,
        slot: Option<u16>,
    ) -> (KeyBytes, Entry) {
        let (key, entry) = self.remove_index(index);
        if let Some(log) = sinks.log {
            let slot = slot.unwrap_or_else(|| key_slot(&key));
            log.append(RecordKind::Del, slot, &key, |_| {});
        }
        if entry.flags & IN_BASE != 0 {
            match sinks.spill {
                Some(spill) => spill.spill(DirtyEntry {
                    key: Box::from(&*key),
                    state: None,
                    stamp: sinks.stamp(),
                }),
                None => self.marks.tombstones[self.marks.epoch].push(Box::from(&*key)),
            }
        }
        (key, entry)
    }

    fn insert(
        &mut self,
        key: &[u8],
        slot: u16,
        value: Value,
        expires_at: u64,
        now: u64,
        flags: u8,
    ) -> usize {
        self.bytes += entry_cost(key.len(), &value);
        if expires_at != 0 {
            self.volatile += 1;
        }
        self.count_in_database(self.database_of(key), 1, isize::from(expires_at != 0));
        self.bump_watch(key);
        let entry = Entry {
            value,
            expires_at,
            access: now as u32,
            lfu: LfuCounter::new(minutes(now)),
            flags,
        };
        self.map.insert_full(key, slot, entry)
    }

    fn set_deadline(&mut self, index: usize, expires_at: u64) {
        let had = self.map[index].expires_at != 0;
        let change: isize = match (had, expires_at != 0) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        self.map[index].expires_at = expires_at;
        if change != 0 {
            self.volatile = self.volatile.wrapping_add_signed(change);
            let db = self.database_of(self.map.get_index(index).expect("in range").0);
            self.count_in_database(db, 0, change);
        }
    }
}

/// Where a change goes besides memory: the change log, and in store mode the spill queue.
#[derive(Clone, Copy, Default)]
struct Sinks<'a> {
    log: Option<&'a ChangeLog>,
    spill: Option<&'a dyn EvictionSpill>,
    events: Option<&'a dyn KeyEvents>,
}

impl Sinks<'_> {
    /// The log position the keyspace reflects now (under the key's shard lock).
    fn stamp(&self) -> u64 {
        self.log.map_or(0, ChangeLog::last_lsn)
    }
}

fn put_deadline(body: &mut Vec<u8>, deadline: u64) {
    body.extend_from_slice(&deadline.to_le_bytes());
}

/// Appends the record that recreates an entry's whole value.
fn log_whole_value(log: &ChangeLog, slot: u16, key: &[u8], value: &Value, deadline: u64) {
    match value {
        Value::Str(s) => log_string(log, slot, key, s, deadline),
        other => {
            let kind = if deadline == 0 {
                RecordKind::RestorePersistent
            } else {
                RecordKind::Restore
            };
            log.append(kind, slot, key, |body| {
                if deadline != 0 {
                    put_deadline(body, deadline);
                }
                body.extend_from_slice(&other.to_persisted());
            });
        }
    }
}

/// Appends the record of a whole string value; a key without a TTL needs no deadline.
pub fn log_string(log: &ChangeLog, slot: u16, key: &[u8], value: &[u8], deadline: u64) {
    let kind = if deadline == 0 {
        RecordKind::SetPersistent
    } else {
        RecordKind::Set
    };
    log.append(kind, slot, key, |body| {
        if deadline != 0 {
            put_deadline(body, deadline);
        }
        body.extend_from_slice(value);
    });
}

/// Write access to one key while its shard is locked. Every change goes through a method
/// that also appends its effect record to the change log; changes are accounted and WATCHes
/// of the key are invalidated when the slot is finished.
pub struct Slot<'a> {
    shard: &'a mut Shard,
    key: &'a [u8],
    index: Option<usize>,
    now: u64,
    /// Deadlines at or before this have passed (0 while replaying: none has).
    expiry_now: u64,
    modified: bool,
    sinks: Sinks<'a>,
    slot: u16,
    /// The record being built across calls (consecutive HSET fields, HDEL fields).
    pending: Option<RecordKind>,
}

/// A string or hash operation met a key of another type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
pub struct WrongType;

impl Slot<'_> {
    /// The key this slot is for.
    pub fn key(&self) -> &[u8] {
        self.key
    }

    /// True when the key exists (and has not expired).
    pub fn exists(&self) -> bool {
        self.index.is_some()
    }

    /// The current value.
    pub fn value(&self) -> Option<&Value> {
        self.index.map(|i| &self.shard.map[i].value)
    }

    /// The absolute deadline (Unix ms), if the key has a TTL.
    pub fn expires_at(&self) -> Option<u64> {
        self.index
            .map(|i| self.shard.map[i].expires_at)
            .filter(|&at| at != 0)
    }

    /// Accounts a value change of the entry at `index` from `before` bytes.
    fn account(&mut self, index: usize, before: usize) {
        let after = entry_cost(self.key.len(), &self.shard.map[index].value);
        self.shard.bytes = self.shard.bytes - before + after;
    }

    fn cost(&self, index: usize) -> usize {
        entry_cost(self.key.len(), &self.shard.map[index].value)
    }

    /// Ends a record built across calls.
    fn flush_pending(&mut self) {
        let Some(kind) = self.pending.take() else {
            return;
        };
        if let Some(log) = self.sinks.log {
            let body = &self.shard.scratch;
            log.append(kind, self.slot, self.key, |out| out.extend_from_slice(body));
        }
        self.shard.scratch.clear();
    }

    /// Starts (or continues) a record built across calls.
    fn pend(&mut self, kind: RecordKind) -> Option<&mut Vec<u8>> {
        self.sinks.log?;
        if self.pending != Some(kind) {
            self.flush_pending();
            self.pending = Some(kind);
        }
        Some(&mut self.shard.scratch)
    }

    /// Stores `value`; `expires_at` is the new deadline, `None` keeps the current one
    /// (KEEPTTL), `Some(0)` removes it.
    pub fn set(&mut self, value: Value, expires_at: Option<u64>) {
        self.flush_pending();
        self.modified = true;
        let index = match self.index {
            Some(index) => {
                let before = self.cost(index);
                self.shard.map[index].value = value;
                self.account(index, before);
                if let Some(at) = expires_at {
                    self.shard.set_deadline(index, at);
                }
                index
            }
            None => {
                let at = expires_at.unwrap_or(0);
                let index = self
                    .shard
                    .insert(self.key, self.slot, value, at, self.now, 0);
                self.index = Some(index);
                index
            }
        };
        if let Some(log) = self.sinks.log {
            let entry = &self.shard.map[index];
            log_whole_value(log, self.slot, self.key, &entry.value, entry.expires_at);
        }
    }

    /// Replaces a string's bytes in place (INCR and friends: no new allocation), keeping
    /// the TTL; creates the key when absent.
    pub fn replace_str(&mut self, text: &[u8]) {
        let Some(index) = self.index else {
            return self.set(Value::Str(text.to_vec()), Some(0));
        };
        self.flush_pending();
        self.modified = true;
        let before = self.cost(index);
        match &mut self.shard.map[index].value {
            Value::Str(s) => {
                s.clear();
                s.extend_from_slice(text);
            }
            other => *other = Value::Str(text.to_vec()),
        }
        self.account(index, before);
        if let Some(log) = self.sinks.log {
            let deadline = self.shard.map[index].expires_at;
            log_string(log, self.slot, self.key, text, deadline);
        }
    }

    /// Appends to the string (created when absent); its new length.
    pub fn append(&mut self, suffix: &[u8]) -> Result<usize, WrongType> {
        let Some(index) = self.index else {
            self.set(Value::Str(suffix.to_vec()), Some(0));
            return Ok(suffix.len());
        };
        let before = self.cost(index);
        let Value::Str(s) = &mut self.shard.map[index].value else {
            return Err(WrongType);
        };
        s.extend_from_slice(suffix);
        let len = s.len();
        self.flush_pending();
        self.modified = true;
        self.account(index, before);
        if let Some(log) = self.sinks.log {
            log.append(RecordKind::Append, self.slot, self.key, |body| {
                body.extend_from_slice(suffix)
            });
        }
        Ok(len)
    }

    /// Makes room for a string of `count` bytes, or a hash, set or sorted set of `count`
    /// fields or members (a snapshot's [`RecordKind::Reserve`] hint); a missing key or a
    /// list is left alone. Nothing is logged: the value does not change.
    pub fn reserve(&mut self, count: usize) {
        let Some(index) = self.index else {
            return;
        };
        // A hint past what a value may hold is ignored: a lying peer must not make this
        // node reserve memory nothing will fill.
        const MOST_BYTES: usize = 512 << 20;
        const MOST_FIELDS: usize = 1 << 24;
        let before = self.cost(index);
        match &mut self.shard.map[index].value {
            Value::Str(s) if count <= MOST_BYTES => s.reserve(count.saturating_sub(s.len())),
            Value::Hash(hash) if count <= MOST_FIELDS => hash.reserve(count),
            Value::Set(set) if count <= MOST_FIELDS => set.reserve(count),
            Value::ZSet(zset) if count <= MOST_FIELDS => zset.reserve(count),
            _ => return,
        }
        self.account(index, before);
    }

    /// Overwrites the string from `offset` on (zero-padded; created when absent); its new
    /// length.
    pub fn set_range(&mut self, offset: usize, patch: &[u8]) -> Result<usize, WrongType> {
        // A new key needs no record of its own: replaying SetRange creates it.
        let index = match self.index {
            Some(index) => index,
            None => {
                let index =
                    self.shard
                        .insert(self.key, self.slot, Value::Str(Vec::new()), 0, self.now, 0);
                self.index = Some(index);
                index
            }
        };
        let before = self.cost(index);
        let Value::Str(s) = &mut self.shard.map[index].value else {
            return Err(WrongType);
        };
        if s.len() < offset + patch.len() {
            s.resize(offset + patch.len(), 0);
        }
        s[offset..offset + patch.len()].copy_from_slice(patch);
        let len = s.len();
        self.flush_pending();
        self.modified = true;
        self.account(index, before);
        if let Some(log) = self.sinks.log {
            log.append(RecordKind::SetRange, self.slot, self.key, |body| {
                body.extend_from_slice(&(offset as u64).to_le_bytes());
                body.extend_from_slice(patch);
            });
        }
        Ok(len)
    }

    /// The hash at this key, or WRONGTYPE; `None` when absent.
    pub fn hash(&self) -> Result<Option<&HashValue>, WrongType> {
        self.value()
            .map(|v| v.as_hash().ok_or(WrongType))
            .transpose()
    }

    /// Sets a hash field (the hash is created when absent); true when the field is new.
    pub fn hash_insert(&mut self, field: &[u8], value: &[u8]) -> Result<bool, WrongType> {
        let index = match self.index {
            Some(index) => index,
            None => {
                let index = self.shard.insert(
                    self.key,
                    self.slot,
                    Value::Hash(Box::default()),
                    0,
                    self.now,
                    0,
                );
                self.index = Some(index);
                index
            }
        };
        let before = self.cost(index);
        let Value::Hash(h) = &mut self.shard.map[index].value else {
            return Err(WrongType);
        };
        let added = h.insert(field, value);
        self.modified = true;
        self.account(index, before);
        if let Some(body) = self.pend(RecordKind::HSet) {
            put_item(body, field);
            put_item(body, value);
        }
        Ok(added)
    }

    /// Removes a hash field; true when it existed. An emptied hash is deleted when the
    /// slot finishes.
    pub fn hash_remove(&mut self, field: &[u8]) -> Result<bool, WrongType> {
        let Some(index) = self.index else {
            return Ok(false);
        };
        let before = self.cost(index);
        let Value::Hash(h) = &mut self.shard.map[index].value else {
            return Err(WrongType);
        };
        if !h.remove(field) {
            return Ok(false);
        }
        self.modified = true;
        self.account(index, before);
        if let Some(body) = self.pend(RecordKind::HDel) {
            put_item(body, field);
        }
        Ok(true)
    }

    /// The list at this key, or WRONGTYPE; `None` when absent.
    pub fn list(&self) -> Result<Option<&ListValue>, WrongType> {
        self.value()
            .map(|v| v.as_list().ok_or(WrongType))
            .transpose()
    }

    /// The list to change: WRONGTYPE for another type, `None` when absent.
    fn list_index(&self) -> Result<Option<usize>, WrongType> {
        self.list()?;
        Ok(self.index)
    }

    /// Runs `change` on the list at `index` and keeps the accounting right.
    fn change_list<R>(&mut self, index: usize, change: impl FnOnce(&mut ListValue) -> R) -> R {
        let before = self.cost(index);
        let Value::List(list) = &mut self.shard.map[index].value else {
            unreachable!("checked to be a list");
        };
        let result = change(list);
        self.modified = true;
        self.account(index, before);
        result
    }

    /// Appends a list record (one without items: a count or an index, then `item`).
    fn log_list(&mut self, kind: RecordKind, number: u64, item: &[u8]) {
        self.flush_pending();
        if let Some(log) = self.sinks.log {
            log.append(kind, self.slot, self.key, |body| {
                body.extend_from_slice(&number.to_le_bytes());
                body.extend_from_slice(item);
            });
        }
    }

    /// Pushes `items` one after another at the head (`front`) or the tail, creating the
    /// list when absent; the new length.
    pub fn list_push(&mut self, front: bool, items: &[&[u8]]) -> Result<usize, WrongType> {
        let index = match self.list_index()? {
            Some(index) => index,
            None => {
                let empty = Value::List(Box::default());
                let index = self
                    .shard
                    .insert(self.key, self.slot, empty, 0, self.now, 0);
                self.index = Some(index);
                index
            }
        };
        let len = self.change_list(index, |list| {
            for item in items {
                if front {
                    list.push_front(item);
                } else {
                    list.push_back(item);
                }
            }
            list.len()
        });
        self.flush_pending();
        if let Some(log) = self.sinks.log {
            let kind = if front {
                RecordKind::LPush
            } else {
                RecordKind::RPush
            };
            log.append(kind, self.slot, self.key, |body| {
                for item in items {
                    put_item(body, item);
                }
            });
        }
        Ok(len)
    }

    /// Pops up to `count` elements from the head (`front`) or the tail, in pop order. An
    /// emptied list is deleted when the slot finishes.
    pub fn list_pop(&mut self, front: bool, count: usize) -> Result<Vec<Vec<u8>>, WrongType> {
        let Some(index) = self.list_index()? else {
            return Ok(Vec::new());
        };
        let popped = self.change_list(index, |list| {
            let take = count.min(list.len());
            (0..take)
                .filter_map(|_| {
                    if front {
                        list.pop_front()
                    } else {
                        list.pop_back()
                    }
                })
                .collect::<Vec<_>>()
        });
        if !popped.is_empty() {
            let kind = if front {
                RecordKind::LPop
            } else {
                RecordKind::RPop
            };
            self.log_list(kind, popped.len() as u64, &[]);
        }
        Ok(popped)
    }

    /// Drops `head` elements from the head and `tail` from the tail (LTRIM).
    pub fn list_trim(&mut self, head: usize, tail: usize) -> Result<(), WrongType> {
        let Some(index) = self.list_index()? else {
            return Ok(());
        };
        let (head, tail) = self.change_list(index, |list| {
            let head = head.min(list.len());
            list.drop_front(head);
            let tail = tail.min(list.len());
            list.drop_back(tail);
            (head, tail)
        });
        if head > 0 {
            self.log_list(RecordKind::LPop, head as u64, &[]);
        }
        if tail > 0 {
            self.log_list(RecordKind::RPop, tail as u64, &[]);
        }
        Ok(())
    }

    /// Replaces element `at`; false when the list is absent or shorter.
    pub fn list_set(&mut self, at: usize, item: &[u8]) -> Result<bool, WrongType> {
        let Some(index) = self.list_index()? else {
            return Ok(false);
        };
        if !self.change_list(index, |list| list.set(at, item)) {
            return Ok(false);
        }
        self.log_list(RecordKind::LSet, at as u64, item);
        Ok(true)
    }

    /// Inserts `item` as element `at` of an existing list (past the end: appended).
    pub fn list_insert(&mut self, at: usize, item: &[u8]) -> Result<bool, WrongType> {
        let Some(index) = self.list_index()? else {
            return Ok(false);
        };
        self.change_list(index, |list| list.insert(at, item));
        self.log_list(RecordKind::LInsert, at as u64, item);
        Ok(true)
    }

    /// Removes up to `count` elements equal to `item` as LREM does; how many.
    pub fn list_remove(&mut self, count: i64, item: &[u8]) -> Result<usize, WrongType> {
        let Some(index) = self.list_index()? else {
            return Ok(0);
        };
        let removed = self.change_list(index, |list| list.remove_matching(count, item));
        if removed > 0 {
            self.log_list(RecordKind::LRem, count as u64, item);
        }
        Ok(removed)
    }

    /// The set at this key, or WRONGTYPE; `None` when absent.
    pub fn set_members(&self) -> Result<Option<&SetValue>, WrongType> {
        self.value()
            .map(|v| v.as_set().ok_or(WrongType))
            .transpose()
    }

    /// Adds `members` to the set (created when absent); how many were new.
    pub fn set_add(&mut self, members: &[&[u8]]) -> Result<usize, WrongType> {
        self.set_members()?;
        let index = match self.index {
            Some(index) => index,
            None => {
                let empty = Value::Set(Box::default());
                let index = self
                    .shard
                    .insert(self.key, self.slot, empty, 0, self.now, 0);
                self.index = Some(index);
                index
            }
        };
        self.change_set(index, RecordKind::SAdd, members, |set, member| {
            set.insert(member)
        })
    }

    /// Removes `members` from the set; how many were there. An emptied set is deleted
    /// when the slot finishes.
    pub fn set_remove(&mut self, members: &[&[u8]]) -> Result<usize, WrongType> {
        if self.set_members()?.is_none() {
            return Ok(0);
        }
        let index = self.index.expect("the set exists");
        self.change_set(index, RecordKind::SRem, members, |set, member| {
            set.remove(member)
        })
    }

    /// Applies `change` to each member and logs the members it changed as one record.
    fn change_set(
        &mut self,
        index: usize,
        kind: RecordKind,
        members: &[&[u8]],
        mut change: impl FnMut(&mut SetValue, &[u8]) -> bool,
    ) -> Result<usize, WrongType> {
        let before = self.cost(index);
        let Value::Set(set) = &mut self.shard.map[index].value else {
            unreachable!("checked to be a set");
        };
        let changed: Vec<&[u8]> = members
            .iter()
            .copied()
            .filter(|member| change(set, member))
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        self.modified = true;
        self.account(index, before);
        self.flush_pending();
        if let Some(log) = self.sinks.log {
            log.append(kind, self.slot, self.key, |body| {
                for member in &changed {
                    put_item(body, member);
                }
            });
        }
        Ok(changed.len())
    }

    /// The sorted set at this key, or WRONGTYPE; `None` when absent.
    pub fn zset(&self) -> Result<Option<&ZSetValue>, WrongType> {
        self.value()
            .map(|v| v.as_zset().ok_or(WrongType))
            .transpose()
    }

    /// Runs `change` on the sorted set at `index` and keeps the accounting right.
    fn change_zset<R>(&mut self, index: usize, change: impl FnOnce(&mut ZSetValue) -> R) -> R {
        let before = self.cost(index);
        let Value::ZSet(zset) = &mut self.shard.map[index].value else {
            unreachable!("checked to be a sorted set");
        };
        let result = change(zset);
        self.modified = true;
        self.account(index, before);
        result
    }

    /// Gives `members` these scores (the sorted set is created when absent); how many
    /// members are new. No score may be NaN.
    pub fn zset_set(&mut self, entries: &[(f64, &[u8])]) -> Result<usize, WrongType> {
        self.zset()?;
        if entries.is_empty() {
            return Ok(0);
        }
        let index = match self.index {
            Some(index) => index,
            None => {
                let empty = Value::ZSet(Box::default());
                let index = self
                    .shard
                    .insert(self.key, self.slot, empty, 0, self.now, 0);
                self.index = Some(index);
                index
            }
        };
        let added = self.change_zset(index, |zset| {
            entries
                .iter()
                .filter(|(score, member)| zset.insert(member, *score))
                .count()
        });
        self.flush_pending();
        if let Some(log) = self.sinks.log {
            log.append(RecordKind::ZAdd, self.slot, self.key, |body| {
                for (score, member) in entries {
                    put_item(body, &score.to_le_bytes());
                    put_item(body, member);
                }
            });
        }
        Ok(added)
    }

    /// Removes `members` from the sorted set; how many were there. An emptied sorted set
    /// is deleted when the slot finishes.
    pub fn zset_remove(&mut self, members: &[&[u8]]) -> Result<usize, WrongType> {
        let Some(zset) = self.zset()? else {
            return Ok(0);
        };
        // Nothing to remove is no change (WATCH and the log see none).
        if !members.iter().any(|m| zset.score(m).is_some()) {
            return Ok(0);
        }
        let index = self.index.expect("the sorted set exists");
        let removed: Vec<&[u8]> = self.change_zset(index, |zset| {
            members
                .iter()
                .copied()
                .filter(|member| zset.remove(member).is_some())
                .collect()
        });
        self.flush_pending();
        if !removed.is_empty()
            && let Some(log) = self.sinks.log
        {
            log.append(RecordKind::ZRem, self.slot, self.key, |body| {
                for member in &removed {
                    put_item(body, member);
                }
            });
        }
        Ok(removed.len())
    }

    /// Removes the entries of ascending ranks `start..end` (or, `rev`, taken from the top
    /// down); returns them in that order.
    pub fn zset_take(
        &mut self,
        start: usize,
        end: usize,
        rev: bool,
    ) -> Result<Vec<(f64, Vec<u8>)>, WrongType> {
        let Some(zset) = self.zset()? else {
            return Ok(Vec::new());
        };
        let taken: Vec<(f64, Vec<u8>)> = zset
            .range(start, end, rev)
            .map(|(score, member)| (score, member.to_vec()))
            .collect();
        let members: Vec<&[u8]> = taken.iter().map(|(_, m)| m.as_slice()).collect();
        self.zset_remove(&members)?;
        Ok(taken)
    }

    /// Sets or clears the deadline of an existing key; a deadline not after `now` deletes
    /// the key, as Redis does. False when the key does not exist.
    pub fn set_expires_at(&mut self, expires_at: Option<u64>) -> bool {
        let Some(index) = self.index else {
            return false;
        };
        match expires_at {
            Some(at) if at <= self.expiry_now => {
                self.remove();
            }
            at => {
                self.flush_pending();
                self.modified = true;
                let at = at.unwrap_or(0);
                self.shard.set_deadline(index, at);
                if let Some(log) = self.sinks.log {
                    log.append(RecordKind::Expire, self.slot, self.key, |body| {
                        put_deadline(body, at)
                    });
                }
            }
        }
        true
    }

    /// Deletes the key, returning its value.
    pub fn remove(&mut self) -> Option<Value> {
        self.flush_pending();
        let index = self.index.take()?;
        self.modified = true;
        Some(
            self.shard
                .delete_index(index, self.sinks, Some(self.slot))
                .1
                .value,
        )
    }

    fn finish(mut self) -> bool {
        if self.value().is_some_and(Value::is_empty_aggregate) {
            self.remove();
        }
        let exists = self.index.is_some();
        self.flush_pending();
        if self.modified {
            self.shard.changes += 1;
            self.shard.bump_watch(self.key);
            if let Some(index) = self.index {
                self.shard.mark_dirty(index);
            }
        }
        exists
    }
}

/// A read-only look at an entry, for TTL, OBJECT and MEMORY.
#[derive(Debug)]
pub struct EntryView<'a> {
    /// The value.
    pub value: &'a Value,
    /// Absolute deadline in Unix ms, if any.
    pub expires_at: Option<u64>,
    /// Milliseconds since the last access.
    pub idle_ms: u64,
    /// The LFU counter after decay.
    pub frequency: u8,
    /// Accounted bytes of the entry.
    pub memory: usize,
}

/// Keyspace statistics, as INFO reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Reads that found their key.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Keys deleted because their TTL passed.
    pub expired: u64,
    /// Keys evicted under `maxmemory`.
    pub evicted: u64,
    /// Keys.
    pub keys: u64,
    /// Keys with a TTL.
    pub volatile: u64,
}

/// What one active expiry pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpireReport {
    /// Entries looked at.
    pub examined: usize,
    /// Entries deleted.
    pub expired: usize,
}

/// A WATCHed key's version at WATCH time.
#[derive(Debug, Clone)]
pub struct WatchTicket {
    shard: usize,
    key: Box<[u8]>,
    version: u64,
    /// The deadline the key had at WATCH time, if it was still in the future then.
    deadline: u64,
}

/// The maps a FLUSHALL took out; drop it wherever freeing is cheapest (FLUSHALL ASYNC).
pub struct FlushedData(#[allow(dead_code)] Vec<KeyMap>);

impl std::fmt::Debug for FlushedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushedData").finish_non_exhaustive()
    }
}

/// Builds a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreBuilder {
    shards: usize,
    maxmemory: u64,
    policy: EvictionPolicy,
    samples: u32,
    seed: Option<u64>,
    namespaced: bool,
}

impl StoreBuilder {
    /// Keys carry their logical database ([`crate::namespace`]): the store counts each
    /// database's keys (DBSIZE, INFO keyspace) and [`Store::logical_key`] strips it.
    pub fn namespaced(mut self, namespaced: bool) -> Self {
        self.namespaced = namespaced;
        self
    }

    /// Number of shards (rounded up to a power of two, at most one per slot). Default 256.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, usize::from(SLOT_COUNT)).next_power_of_two();
        self
    }

    /// `maxmemory` in bytes; 0 = unlimited.
    pub fn maxmemory(mut self, bytes: u64) -> Self {
        self.maxmemory = bytes;
        self
    }

    /// `maxmemory-policy`.
    pub fn policy(mut self, policy: EvictionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// `maxmemory-samples`.
    pub fn samples(mut self, samples: u32) -> Self {
        self.samples = samples.max(1);
        self
    }

    /// A fixed seed for the sampling randomness (tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The store.
    pub fn build(self) -> Store {
        let seed = self.seed.unwrap_or_else(rand::random);
        let slots_per_shard = usize::from(SLOT_COUNT) / self.shards;
        Store {
            shards: (0..self.shards)
                .map(|i| {
                    Mutex::new(Shard::new(
                        seed.wrapping_add(i as u64),
                        slots_per_shard,
                        self.namespaced,
                    ))
                })
                .collect(),
            mask: self.shards - 1,
            slot_shift: SLOT_COUNT.trailing_zeros() - self.shards.trailing_zeros(),
            hasher: foldhash::fast::RandomState::default(),
            gate: RwLock::new(()),
            used: AtomicUsize::new(0),
            tunables: Tunables {
                maxmemory: AtomicU64::new(self.maxmemory),
                policy: AtomicU8::new(self.policy.to_u8()),
                samples: AtomicU32::new(self.samples),
                lfu_log_factor: AtomicU32::new(10),
                lfu_decay_time: AtomicU32::new(1),
            },
            pool: Mutex::new(EvictionPool::default()),
            sweep_shard: AtomicUsize::new(0),
            rng: Mutex::new(SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)),
            log: std::sync::OnceLock::new(),
            spill: std::sync::OnceLock::new(),
            events: std::sync::OnceLock::new(),
            last_clear: AtomicU64::new(0),
            namespaced: self.namespaced,
        }
    }
}

/// The store gate held exclusively; dropping it ends the change log's atomic group.
pub struct Exclusive<'a> {
    _guard: RwLockWriteGuard<'a, ()>,
    log: Option<&'a ChangeLog>,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        if let Some(log) = self.log {
            log.end_group();
        }
    }
}

impl std::fmt::Debug for Exclusive<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exclusive").finish_non_exhaustive()
    }
}

/// One node's keyspace.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    /// A key's shard is its slot shifted right by this: each shard holds a slot range.
    slot_shift: u32,
    hasher: foldhash::fast::RandomState,
    /// Held shared by every command batch and exclusively by MULTI/EXEC and multi-key
    /// atomic commands, which therefore see no other connection's writes in between.
    gate: RwLock<()>,
    used: AtomicUsize,
    tunables: Tunables,
    pool: Mutex<EvictionPool>,
    sweep_shard: AtomicUsize,
    rng: Mutex<SmallRng>,
    log: std::sync::OnceLock<Arc<ChangeLog>>,
    /// Store mode: where evicted values go until the base image holds them.
    spill: std::sync::OnceLock<Arc<dyn EvictionSpill>>,
    /// Told of expired and evicted keys (keyspace notifications).
    events: std::sync::OnceLock<Arc<dyn KeyEvents>>,
    last_clear: AtomicU64,
    namespaced: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards.len())
            .field("used", &self.used_memory())
            .finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::builder().build()
    }
}

impl Store {
    /// A builder with Redis's defaults: no memory limit, `noeviction`, 5 samples.
    pub fn builder() -> StoreBuilder {
        StoreBuilder {
            shards: 256,
            maxmemory: 0,
            policy: EvictionPolicy::NoEviction,
            samples: 5,
            seed: None,
            namespaced: false,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        self.shard_of_slot(key_slot(key))
    }

    fn shard_of_slot(&self, slot: u16) -> usize {
        usize::from(slot) >> self.slot_shift
    }

    fn log(&self) -> Option<&ChangeLog> {
        self.log.get().map(|log| &**log)
    }

    fn sinks(&self) -> Sinks<'_> {
        Sinks {
            log: self.log(),
            spill: self.spill.get().map(|s| &**s),
            events: self.events.get().map(|e| &**e),
        }
    }

    /// The LSN of the last FLUSHALL: whatever the persistence tier holds with an older
    /// stamp is gone, even where a checkpoint has not dropped it yet.
    pub fn last_clear(&self) -> u64 {
        self.last_clear.load(Relaxed)
    }

    /// Recovery replayed a FLUSHALL at `lsn` but skipped what the base image holds: the
    /// next checkpoint drops the older entries there, fault-ins ignore them meanwhile.
    pub fn note_cleared(&self, lsn: u64) {
        self.last_clear.fetch_max(lsn, Relaxed);
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let epoch = shard.marks.epoch;
            shard.cleared[epoch] = shard.cleared[epoch].max(lsn);
        }
    }

    /// Runs `f` on a locked shard and accounts the bytes it added or freed.
    fn with_shard<R>(&self, index: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut shard = self.shards[index].lock();
        let before = shard.bytes;
        let result = f(&mut shard);
        let after = shard.bytes;
        drop(shard);
        if after >= before {
            self.used.fetch_add(after - before, Relaxed);
        } else {
            self.used.fetch_sub(before - after, Relaxed);
        }
        result
    }

    /// Attaches the change log every later change appends to (once; false if one was
    /// attached already). Recover before attaching, so recovered data is not logged again.
    pub fn attach_change_log(&self, log: Arc<ChangeLog>) -> bool {
        self.log.set(log).is_ok()
    }

    /// The attached change log.
    pub fn change_log(&self) -> Option<&Arc<ChangeLog>> {
        self.log.get()
    }

    /// Tells `events` of every key the store creates, modifies, expires or evicts from
    /// now on (once).
    pub fn attach_key_events(&self, events: Arc<dyn KeyEvents>) -> bool {
        if self.events.set(events.clone()).is_err() {
            return false;
        }
        for shard in self.shards.iter() {
            shard.lock().events = Some(events.clone());
        }
        true
    }

    /// Store mode: evicted values the base image does not hold yet go to `spill` instead
    /// of being deleted; eviction is then not a change and appends no record.
    /// Deletions waiting as tombstones move there too, so a fault-in cannot bring back a
    /// key recovery deleted.
    pub fn attach_eviction_spill(&self, spill: Arc<dyn EvictionSpill>) -> bool {
        if self.spill.set(spill.clone()).is_err() {
            return false;
        }
        let stamp = self.log().map_or(0, ChangeLog::last_lsn);
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for epoch in 0..2 {
                for key in std::mem::take(&mut shard.marks.tombstones[epoch]) {
                    spill.spill(DirtyEntry {
                        key,
                        state: None,
                        stamp,
                    });
                }
            }
        }
        true
    }

    /// The slots shard `index` holds.
    pub fn shard_slots(&self, index: usize) -> Range<u16> {
        let start = (index << self.slot_shift) as u16;
        start..start + (1u16 << self.slot_shift)
    }

    /// Loads a key as the persistence tier holds it (recovery, a store-mode fault-in): no
    /// record is appended. `changed` when the base image may not hold this version (it
    /// came back from the spill queue): the next checkpoint writes it. Returns false,
    /// changing nothing, when the key already exists (a newer write wins).
    pub fn load(&self, key: &[u8], value: Value, expires_at: u64, now: u64, changed: bool) -> bool {
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            if shard.map.get_index_of(key).is_some() {
                return false;
            }
            let index = shard.insert(key, slot, value, expires_at, now, IN_BASE);
            if changed {
                shard.mark_dirty(index);
            }
            true
        })
    }

    /// Notes that the base image holds a version of `key` although memory does not (a
    /// recovery skipped an expired or cleared entry): the next checkpoint deletes it there.
    pub fn note_base_tombstone(&self, key: &[u8]) {
        self.with_shard(self.shard_of(key), |shard| {
            let epoch = shard.marks.epoch;
            shard.marks.tombstones[epoch].push(key.into());
        });
    }

    /// Empties the store into `visit` (key, value, deadline), and returns the deletions it
    /// noted for the base image: an embedded cache recovers through a store this way.
    pub fn drain(&self, mut visit: impl FnMut(Box<[u8]>, Value, u64)) -> Vec<Box<[u8]>> {
        let mut tombstones = Vec::new();
        for index in 0..self.shards.len() {
            let (map, marks) = self.with_shard(index, |shard| {
                shard.volatile = 0;
                shard.bytes = 0;
                shard.sweep = 0;
                shard.databases.clear();
                let emptied = shard.map.emptied();
                (
                    std::mem::replace(&mut shard.map, emptied),
                    std::mem::take(&mut shard.marks),
                )
            });
            for (key, entry) in map.into_entries() {
                visit(key, entry.value, entry.expires_at);
            }
            tombstones.extend(marks.tombstones.into_iter().flatten());
        }
        tombstones
    }

    /// Holds off exclusive sections (EXEC, MSET, RENAME…) while a batch of commands runs.
    /// Never take it twice on one thread.
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// As [`Store::shared`], waiting at most `wait` (a script may hold the gate long).
    pub fn try_shared_for(&self, wait: std::time::Duration) -> Option<RwLockReadGuard<'_, ()>> {
        self.gate.try_read_for(wait)
    }

    /// Returns once every command batch running now has finished (and so appended its
    /// records): a handoff's fence, after which nothing routed by an older slot table is
    /// still on its way into the change log.
    pub fn barrier(&self) {
        drop(self.gate.write());
    }

    /// Runs alone: no other shared or exclusive holder runs meanwhile.
    /// The change log records what happens meanwhile as one atomic group, which a
    /// recovery applies whole or not at all.
    pub fn exclusive(&self) -> Exclusive<'_> {
        let guard = self.gate.write();
        if let Some(log) = self.log() {
            log.begin_group();
        }
        Exclusive {
            _guard: guard,
            log: self.log(),
        }
    }

    /// Reads a key: counts a hit or a miss and records the access for LRU/LFU.
    pub fn read<R>(&self, key: &[u8], now: u64, f: impl FnOnce(Option<&Value>) -> R) -> R {
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            match shard.find(key, slot, now, self.sinks()) {
                Some(index) => {
                    shard.stats.hits += 1;
                    shard.touch(index, now, &self.tunables);
                    f(Some(&shard.map[index].value))
                }
                None => {
                    shard.stats.misses += 1;
                    self.tell_missed(key);
                    f(None)
                }
            }
        })
    }

    /// Tells the key-events hook of a read of a missing key (Redis's `keymiss`) for
    /// commands that look at a key without [`Store::read`] (EXISTS, TYPE, TTL, GETSET …);
    /// one look-up, and only while the hook wants misses.
    pub fn tell_if_missing(&self, key: &[u8], now: u64) {
        if self.wants_missed() && !self.inspect(key, now, |entry| entry.is_some()) {
            self.tell_missed(key);
        }
    }

    /// Whether the key-events hook wants misses now (one atomic load).
    pub fn wants_missed(&self) -> bool {
        self.sinks()
            .events
            .is_some_and(|events| events.wants_missed())
    }

    /// Tells the hook of a miss a caller already saw (no look-up).
    pub fn tell_missed(&self, key: &[u8]) {
        if let Some(events) = self.sinks().events
            && events.wants_missed()
        {
            events.missed(key);
        }
    }

    /// Looks at an entry without counting a hit or touching its access time.
    pub fn inspect<R>(
        &self,
        key: &[u8],
        now: u64,
        f: impl FnOnce(Option<EntryView<'_>>) -> R,
    ) -> R {
        let decay = self.tunables.lfu_decay_time.load(Relaxed);
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            let view = shard.find(key, slot, now, self.sinks()).map(|index| {
                let entry = &shard.map[index];
                EntryView {
                    value: &entry.value,
                    expires_at: (entry.expires_at != 0).then_some(entry.expires_at),
                    idle_ms: (now as u32).wrapping_sub(entry.access) as u64,
                    frequency: entry.lfu.decayed(minutes(now), decay),
                    memory: entry_cost(key.len(), &entry.value),
                }
            });
            f(view)
        })
    }

    /// Changes one key through a [`Slot`].
    pub fn write<R>(&self, key: &[u8], now: u64, f: impl FnOnce(&mut Slot<'_>) -> R) -> R {
        self.write_expiring_at(key, now, now, f)
    }

    /// Changes one key as a replayed record does: nothing expires meanwhile (records are
    /// replayed long after they were made; a key's later PERSIST must still find it), and
    /// `now` stamps access times only. Sweep expired keys once the replay is done.
    pub fn replay_write<R>(&self, key: &[u8], now: u64, f: impl FnOnce(&mut Slot<'_>) -> R) -> R {
        self.write_expiring_at(key, now, 0, f)
    }

    fn write_expiring_at<R>(
        &self,
        key: &[u8],
        now: u64,
        expiry_now: u64,
        f: impl FnOnce(&mut Slot<'_>) -> R,
    ) -> R {
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            let index = shard.find(key, slot, expiry_now, self.sinks());
            if let Some(index) = index {
                shard.touch(index, now, &self.tunables);
            }
            let mut slot = Slot {
                shard,
                key,
                index,
                now,
                expiry_now,
                modified: false,
                sinks: self.sinks(),
                slot,
                pending: None,
            };
            let result = f(&mut slot);
            let sinks = slot.sinks;
            let exists = slot.finish();
            // A replay (expiry_now 0) recreates keys; it creates none.
            if index.is_none()
                && exists
                && expiry_now != 0
                && let Some(events) = sinks.events
                && events.wants_created()
            {
                events.created(key);
            }
            result
        })
    }

    /// Deletes a key; true when it existed.
    pub fn remove(&self, key: &[u8], now: u64) -> bool {
        self.write(key, now, |slot| slot.remove().is_some())
    }

    /// True when the key exists; counts a hit or miss as EXISTS does in Redis.
    pub fn contains(&self, key: &[u8], now: u64) -> bool {
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            let found = shard.find(key, slot, now, self.sinks()).is_some();
            if found {
                shard.stats.hits += 1;
            } else {
                shard.stats.misses += 1;
            }
            found
        })
    }

    /// Records an access (TOUCH); true when the key exists.
    pub fn touch(&self, key: &[u8], now: u64) -> bool {
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            match shard.find(key, slot, now, self.sinks()) {
                Some(index) => {
                    shard.touch(index, now, &self.tunables);
                    true
                }
                None => false,
            }
        })
    }

    /// Number of keys (including expired keys not yet reclaimed, as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// True when there is no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accounted bytes of all entries.
    pub fn used_memory(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// Statistics summed over shards.
    pub fn stats(&self) -> StoreStats {
        let mut total = StoreStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            total.hits += shard.stats.hits;
            total.misses += shard.stats.misses;
            total.expired += shard.stats.expired;
            total.evicted += shard.stats.evicted;
            total.keys += shard.map.len() as u64;
            total.volatile += shard.volatile as u64;
        }
        total
    }

    /// Writes that changed a key since the store was built (what INFO reports as
    /// `rdb_changes_since_last_save` on a node that does not persist).
    pub fn changes(&self) -> u64 {
        self.shards.iter().map(|shard| shard.lock().changes).sum()
    }

    /// Zeroes hits, misses, expired and evicted (CONFIG RESETSTAT).
    pub fn reset_stats(&self) {
        for shard in self.shards.iter() {
            shard.lock().stats = ShardStats::default();
        }
    }

    /// Every live key matching a glob pattern (KEYS).
    pub fn keys(&self, pattern: &[u8], now: u64) -> Vec<Vec<u8>> {
        let all = pattern == b"*";
        self.keys_where(now, |key| all || glob_match(pattern, key, false))
    }

    /// Every live key `wanted` accepts.
    pub fn keys_where(&self, now: u64, wanted: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(
                shard
                    .map
                    .iter()
                    .filter(|(k, e)| (e.expires_at == 0 || e.expires_at > now) && wanted(k))
                    .map(|(k, _)| k.to_vec()),
            );
        }
        out
    }

    /// True when keys carry their logical database ([`StoreBuilder::namespaced`]).
    pub fn is_namespaced(&self) -> bool {
        self.namespaced
    }

    /// The name a client knows a stored key by: without its database when keys are
    /// namespaced.
    pub fn logical_key<'k>(&self, physical: &'k [u8]) -> &'k [u8] {
        if self.namespaced {
            crate::namespace::split(physical).1
        } else {
            physical
        }
    }

    /// Keys and keys with a TTL of logical database `db` (expired ones not yet reclaimed
    /// included, as Redis's DBSIZE counts them): O(shards).
    pub fn database_len(&self, db: u8) -> DatabaseCount {
        self.shards
            .iter()
            .map(|shard| shard.lock().database(db))
            .fold(DatabaseCount::default(), |sum, c| DatabaseCount {
                keys: sum.keys + c.keys,
                volatile: sum.volatile + c.volatile,
            })
    }

    /// [`Store::database_len`] of every database up to the highest that holds a key,
    /// index = database, in one pass over the shards.
    pub fn database_lens(&self) -> Vec<DatabaseCount> {
        let mut total: Vec<DatabaseCount> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            let dbs = shard.databases.len().max(1);
            if total.len() < dbs {
                total.resize(dbs, DatabaseCount::default());
            }
            for (db, sum) in total.iter_mut().enumerate().take(dbs) {
                let count = shard.database(db as u8);
                sum.keys += count.keys;
                sum.volatile += count.volatile;
            }
        }
        total
    }

    /// Deletes (each deletion logged) every key `wanted` accepts, expired or not; the
    /// lock is released every few thousand keys. Returns how many (FLUSHDB of a logical
    /// database).
    pub fn remove_where(&self, wanted: impl Fn(&[u8]) -> bool) -> usize {
        let mut removed = 0;
        for index in 0..self.shards.len() {
            self.visit_shard(index, &wanted, |shard, position| {
                shard.delete_index(position, self.sinks(), None);
                removed += 1;
                position
            });
        }
        removed
    }

    /// Ends every WATCH on a key `wanted` accepts, as a write to it would (SWAPDB).
    pub fn touch_watched_where(&self, wanted: impl Fn(&[u8]) -> bool) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for (key, watched) in shard.watched.iter_mut() {
                if wanted(key) {
                    watched.version += 1;
                }
            }
        }
    }

    /// One SCAN step from `cursor`: returns the next cursor (0 when done) and the keys of
    /// the window that pass `filter`. A key present for the whole scan is always returned.
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        now: u64,
        filter: impl Fn(&[u8], &Value) -> bool,
    ) -> (u64, Vec<Vec<u8>>) {
        let shard_bits = self.shards.len().trailing_zeros();
        let position_bits = 64 - shard_bits;
        let position_mask = if position_bits == 64 {
            u64::MAX
        } else {
            (1u64 << position_bits) - 1
        };
        let mut shard_index = (cursor >> position_bits) as usize;
        let mut from = cursor & position_mask;
        let mut keys = Vec::new();
        let mut examined = 0;
        while shard_index < self.shards.len() {
            let shard = self.shards[shard_index].lock();
            let items = shard
                .map
                .iter()
                .map(|(k, e)| (self.hash(k) >> shard_bits, (k, e)));
            let (window, next) = scan_window(items, from, count.saturating_sub(examined).max(1));
            examined += window.len();
            keys.extend(
                window
                    .into_iter()
                    .filter(|(k, e)| {
                        (e.expires_at == 0 || e.expires_at > now) && filter(k, &e.value)
                    })
                    .map(|(k, _)| k.to_vec()),
            );
            drop(shard);
            match next {
                Some(position) => {
                    return (((shard_index as u64) << position_bits) | position, keys);
                }
                None => {
                    shard_index += 1;
                    from = 0;
                    if examined >= count {
                        break;
                    }
                }
            }
        }
        if shard_index >= self.shards.len() {
            (0, keys)
        } else {
            ((shard_index as u64) << position_bits, keys)
        }
    }

    /// A random live key (RANDOMKEY).
    pub fn random_key(&self, now: u64) -> Option<Vec<u8>> {
        self.random_key_where(now, |_| true)
    }

    /// A random live key that `wanted` accepts: a bounded number of draws, then a walk so
    /// a lone key among many others is still found.
    pub fn random_key_where(&self, now: u64, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        for _ in 0..100 {
            let shard_index = self.rng.lock().random_range(0..self.shards.len());
            let found = self.with_shard(shard_index, |shard| {
                if shard.map.is_empty() {
                    return None;
                }
                let index = shard.rng.random_range(0..shard.map.len());
                let key = shard.map.get_index(index).map(|(k, _)| k.to_vec())?;
                if !wanted(&key) {
                    return None;
                }
                shard
                    .find(&key, key_slot(&key), now, self.sinks())
                    .map(|_| key)
            });
            if found.is_some() {
                return found;
            }
        }
        (0..self.shards.len()).find_map(|i| {
            self.with_shard(i, |shard| {
                let keys: Vec<Box<[u8]>> = shard
                    .map
                    .keys()
                    .filter(|k| wanted(k))
                    .map(Box::from)
                    .collect();
                keys.into_iter()
                    .find(|k| shard.find(k, key_slot(k), now, self.sinks()).is_some())
                    .map(|k| k.to_vec())
            })
        })
    }

    /// Number of shards; shard `index` holds the slots [`Store::shard_slots`] names.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Keys whose slot is in `slots`, expired ones not yet reclaimed included (DBSIZE of
    /// a cluster member: the slots it serves). A shard wholly inside the set costs O(1).
    pub fn len_in(&self, slots: &SlotSet) -> usize {
        (0..self.shards.len())
            .map(|index| {
                let range = self.shard_slots(index);
                let wanted = range.clone().filter(|&slot| slots.contains(slot)).count();
                let shard = self.shards[index].lock();
                if wanted == range.len() {
                    shard.map.len()
                } else if wanted == 0 {
                    0
                } else {
                    shard
                        .map
                        .keys()
                        .filter(|k| slots.contains(key_slot(k)))
                        .count()
                }
            })
            .sum()
    }

    /// Keys in `slot`, expired ones not yet reclaimed included, as Redis counts them
    /// (CLUSTER COUNTKEYSINSLOT): O(1).
    pub fn count_in_slot(&self, slot: u16) -> usize {
        self.shards[self.shard_of_slot(slot)]
            .lock()
            .map
            .slot_len(slot)
    }

    /// Up to `count` keys of `slot`, newest first (CLUSTER GETKEYSINSLOT): O(count).
    pub fn keys_in_slot(&self, slot: u16, count: usize) -> Vec<Vec<u8>> {
        let shard = self.shards[self.shard_of_slot(slot)].lock();
        shard
            .map
            .slot_positions(slot)
            .take(count)
            .map(|position| shard.map.get_index(position).expect("listed").0.to_vec())
            .collect()
    }

    /// Keys in shard `index` (expired ones not yet reclaimed included).
    pub fn shard_len(&self, index: usize) -> usize {
        self.shards[index].lock().map.len()
    }

    /// Appends to `out`, as snapshot records ([`crate::snapshot::encode_entry`]), the live
    /// keys of shard `index` whose map hash lies in `window` (inclusive) and whose slot is
    /// in `slots`. Returns the stamp, the log's last LSN read under the same lock: the
    /// copy reflects every record up to it and none after it. Also returns the keys copied.
    ///
    /// With `in_pieces`, a big value ([`crate::snapshot::copied_in_pieces`]) is copied a
    /// piece at a time after the rest, the lock released between pieces, so writers to the
    /// shard wait for a piece, not for the whole value. The key is watched meanwhile (as
    /// `WATCH` does): if it changed, the copy no longer reflects the stamp, `out` is left
    /// as it was and `None` says to take the window again.
    pub fn snapshot_window(
        &self,
        index: usize,
        window: (u64, u64),
        slots: &SlotSet,
        now: u64,
        out: &mut Vec<u8>,
        in_pieces: bool,
    ) -> Option<(u64, usize)> {
        let started_at = out.len();
        let mut shard = self.shards[index].lock();
        let stamp = self.log().map_or(0, ChangeLog::last_lsn);
        let mut copied = 0;
        // Big values, copied after the lock is first released: key, slot, deadline.
        let mut big: Vec<(Box<[u8]>, u16, u64)> = Vec::new();
        for (key, entry) in shard.map.iter() {
            // The window hash is the same on every node, so the replica knows which of its
            // keys a window covers (see `StreamReceiver`).
            let hash = crate::snapshot::window_hash(key);
            if hash < window.0 || hash > window.1 {
                continue;
            }
            if entry.expires_at != 0 && entry.expires_at <= now {
                continue;
            }
            let slot = key_slot(key);
            if !slots.contains(slot) {
                continue;
            }
            copied += 1;
            if in_pieces && crate::snapshot::copied_in_pieces(&entry.value) {
                big.push((Box::from(key), slot, entry.expires_at));
                continue;
            }
            crate::snapshot::encode_entry(out, slot, key, &entry.value, entry.expires_at);
        }
        if big.is_empty() {
            return Some((stamp, copied));
        }
        let versions: Vec<u64> = big.iter().map(|(key, ..)| shard.watch(key)).collect();
        drop(shard);
        let mut unchanged = true;
        for ((key, slot, deadline), version) in big.iter().zip(&versions) {
            let mut from = crate::snapshot::PieceStart::First;
            while unchanged {
                out.reserve(crate::snapshot::PIECE_ROOM);
                let shard = self.shards[index].lock();
                let same = shard.watched_at(key, *version);
                let Some(at) = shard.map.get_index_of(key).filter(|_| same) else {
                    unchanged = false;
                    break;
                };
                let value = &shard.map[at].value;
                let next = crate::snapshot::encode_piece(out, *slot, key, value, *deadline, from);
                // Handed to a waiting writer: released and taken back at once, the lock
                // would mostly stay with this thread.
                parking_lot::MutexGuard::unlock_fair(shard);
                #[cfg(test)]
                tests::between_pieces();
                match next {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        let mut shard = self.shards[index].lock();
        for (key, ..) in &big {
            shard.unwatch(key);
        }
        drop(shard);
        if !unchanged {
            out.truncate(started_at);
            return None;
        }
        Some((stamp, copied))
    }

    /// Deletes every key in `slots` (a FLUSHALL reaching a replica), each deletion logged;
    /// the lock is released every few thousand keys. Returns how many.
    pub fn clear_slots(&self, slots: &SlotSet) -> usize {
        self.remove_in_slots(slots, |_| true)
    }

    /// Flags every key in `slots` stale: a resync from the slots' primary is about to
    /// replace them (see [`STALE`]). Returns how many.
    pub fn mark_stale(&self, slots: &SlotSet) -> usize {
        let mut marked = 0;
        self.visit_slots(slots, |shard, position| {
            shard.map[position].flags |= STALE;
            marked += 1;
            position + 1
        });
        marked
    }

    /// Deletes (logged) the keys in `slots` still flagged stale: a resync ended and the
    /// primary did not have them. Returns how many.
    pub fn sweep_stale(&self, slots: &SlotSet) -> usize {
        self.remove_in_slots(slots, |entry| entry.flags & STALE != 0)
    }

    /// Deletes `key` (logged) when it is still flagged stale: the resync's window that
    /// covers it has passed without it, so the primary did not have it then. True when it
    /// was deleted.
    pub fn drop_if_stale(&self, key: &[u8]) -> bool {
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            match shard.map.get_index_of(key) {
                Some(index) if shard.map[index].flags & STALE != 0 => {
                    shard.delete_index(index, self.sinks(), Some(slot));
                    true
                }
                _ => false,
            }
        })
    }

    fn remove_in_slots(&self, slots: &SlotSet, remove: impl Fn(&Entry) -> bool) -> usize {
        let mut removed = 0;
        // Big values are freed once the lock is released: a million-field hash takes tens
        // of milliseconds to free.
        let mut to_free: Vec<Entry> = Vec::new();
        self.visit_slots(slots, |shard, position| {
            if remove(&shard.map[position]) {
                let slot = key_slot(shard.map.get_index(position).expect("visited").0);
                // The last entry moves into `position`: look at it next.
                let (_, entry) = shard.delete_index(position, self.sinks(), Some(slot));
                if entry.value.heap_bytes() > crate::snapshot::BIG_VALUE_BYTES {
                    to_free.push(entry);
                }
                removed += 1;
                position
            } else {
                position + 1
            }
        });
        drop(to_free);
        removed
    }

    /// Calls `visit(shard, position)` for every key in `slots`, which returns the next
    /// position to look at; the lock is released every few thousand keys.
    fn visit_slots(&self, slots: &SlotSet, mut visit: impl FnMut(&mut Shard, usize) -> usize) {
        for index in 0..self.shards.len() {
            let range = self.shard_slots(index);
            if !slots.intersects_range(range.start, range.end - 1) {
                continue;
            }
            self.visit_shard(index, |key| slots.contains(key_slot(key)), &mut visit);
        }
    }

    /// Calls `visit(shard, position)` for every key of shard `index` that `wanted`
    /// accepts; `visit` returns the next position to look at. The lock is released every
    /// few thousand keys.
    fn visit_shard(
        &self,
        index: usize,
        wanted: impl Fn(&[u8]) -> bool,
        mut visit: impl FnMut(&mut Shard, usize) -> usize,
    ) {
        const PER_LOCK: usize = 4096;
        let mut position = 0;
        loop {
            let done = self.with_shard(index, |shard| {
                for _ in 0..PER_LOCK {
                    let Some((key, _)) = shard.map.get_index(position) else {
                        return true;
                    };
                    if wanted(key) {
                        position = visit(shard, position);
                    } else {
                        position += 1;
                    }
                }
                false
            });
            if done {
                break;
            }
        }
    }

    /// Deletes every key (FLUSHALL/FLUSHDB); drop the result to free the memory. Call
    /// under [`Store::exclusive`], so the Clear record orders before and after every other
    /// change exactly as in memory.
    pub fn flush(&self) -> FlushedData {
        let mut maps = Vec::with_capacity(self.shards.len());
        // Without a log there is no base image to clear: 0 notes nothing.
        let lsn = self
            .log()
            .map_or(0, |log| log.append(RecordKind::Clear, 0, b"", |_| {}));
        self.last_clear.fetch_max(lsn, Relaxed);
        for index in 0..self.shards.len() {
            self.with_shard(index, |shard| {
                for w in shard.watched.values_mut() {
                    w.version += 1;
                }
                let emptied = shard.map.emptied();
                maps.push(std::mem::replace(&mut shard.map, emptied));
                shard.volatile = 0;
                shard.bytes = 0;
                shard.sweep = 0;
                shard.databases.clear();
                // The base image drops this shard's range at the next checkpoint; the
                // Clear record covers anything a recovery replays before it.
                let epoch = shard.marks.epoch;
                shard.marks = ChangeMarks {
                    epoch,
                    ..ChangeMarks::default()
                };
                shard.cleared[epoch] = lsn;
            });
        }
        self.pool.lock().clear();
        FlushedData(maps)
    }

    /// Moves `from` to `to` with its TTL (RENAME; `only_if_absent` for RENAMENX). Returns
    /// false when `only_if_absent` and `to` exists. Call under [`Store::exclusive`].
    pub fn rename(
        &self,
        from: &[u8],
        to: &[u8],
        now: u64,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        if !self.contains_quietly(from, now) {
            return Err(StoreError::NoSuchKey);
        }
        if from == to {
            return Ok(!only_if_absent);
        }
        if only_if_absent && self.contains_quietly(to, now) {
            return Ok(false);
        }
        let (value, deadline) = self
            .write(from, now, |slot| {
                let deadline = slot.expires_at().unwrap_or(0);
                slot.remove().map(|value| (value, deadline))
            })
            .ok_or(StoreError::NoSuchKey)?;
        self.write(to, now, |slot| {
            slot.remove();
            slot.set(value, Some(deadline));
        });
        Ok(true)
    }

    /// Copies `from` to `to` with its TTL (COPY). Ok(false) when `to` exists and not
    /// `replace`. Call under [`Store::exclusive`].
    pub fn copy(
        &self,
        from: &[u8],
        to: &[u8],
        now: u64,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let source = self.write(from, now, |slot| {
            slot.value()
                .cloned()
                .map(|v| (v, slot.expires_at().unwrap_or(0)))
        });
        let (value, deadline) = source.ok_or(StoreError::NoSuchKey)?;
        if from == to {
            return Ok(false);
        }
        Ok(self.write(to, now, |slot| {
            if slot.exists() && !replace {
                return false;
            }
            slot.remove();
            slot.set(value, Some(deadline));
            true
        }))
    }

    fn contains_quietly(&self, key: &[u8], now: u64) -> bool {
        let slot = key_slot(key);
        self.with_shard(self.shard_of_slot(slot), |shard| {
            shard.find(key, slot, now, self.sinks()).is_some()
        })
    }

    /// Starts watching a key for MULTI/EXEC.
    pub fn watch(&self, key: &[u8], now: u64) -> WatchTicket {
        let slot = key_slot(key);
        let shard_index = self.shard_of_slot(slot);
        self.with_shard(shard_index, |shard| {
            let deadline = shard
                .find(key, slot, now, self.sinks())
                .map(|i| shard.map[i].expires_at)
                .unwrap_or(0);
            WatchTicket {
                shard: shard_index,
                key: key.into(),
                version: shard.watch(key),
                deadline,
            }
        })
    }

    /// True when the watched key has not changed (nor expired) since [`Store::watch`].
    pub fn watch_unchanged(&self, ticket: &WatchTicket, now: u64) -> bool {
        let unchanged = self.shards[ticket.shard]
            .lock()
            .watched_at(&ticket.key, ticket.version);
        unchanged && (ticket.deadline == 0 || ticket.deadline > now)
    }

    /// Stops watching.
    pub fn unwatch(&self, ticket: WatchTicket) {
        self.shards[ticket.shard].lock().unwatch(&ticket.key);
    }

    /// One pass of active expiry: sweeps at most `budget` entries across the shards that
    /// hold keys with a TTL, deleting the expired ones. Bounded work per call.
    pub fn active_expire(&self, now: u64, budget: usize) -> ExpireReport {
        let mut report = ExpireReport::default();
        // Never inside an exclusive section: its atomic group in the change log must hold
        // only its own records. The next pass catches up.
        let Some(_gate) = self.gate.try_read() else {
            return report;
        };
        let shard_count = self.shards.len();
        let per_shard = (budget / shard_count).max(16);
        for _ in 0..shard_count {
            if report.examined >= budget {
                break;
            }
            let index = self.sweep_shard.fetch_add(1, Relaxed) & self.mask;
            self.with_shard(index, |shard| {
                if shard.volatile == 0 {
                    return;
                }
                let mut examined = 0;
                while examined < per_shard && !shard.map.is_empty() {
                    if shard.sweep >= shard.map.len() {
                        shard.sweep = 0;
                    }
                    examined += 1;
                    let at = shard.map[shard.sweep].expires_at;
                    if at != 0 && at <= now {
                        let sinks = self.sinks();
                        let told = sinks.events.map(|events| {
                            (
                                events,
                                shard.map.get_index(shard.sweep).map(|(k, _)| k.to_vec()),
                            )
                        });
                        // swap_remove moves the last entry here: look at this index again.
                        shard.delete_index(shard.sweep, sinks, None);
                        if let Some((events, Some(key))) = told {
                            events.expired(&key);
                        }
                        shard.stats.expired += 1;
                        report.expired += 1;
                    } else {
                        shard.sweep += 1;
                    }
                }
                report.examined += examined;
            });
        }
        report
    }

    /// Current `maxmemory` (0 = unlimited).
    pub fn maxmemory(&self) -> u64 {
        self.tunables.maxmemory.load(Relaxed)
    }

    /// Changes `maxmemory`.
    pub fn set_maxmemory(&self, bytes: u64) {
        self.tunables.maxmemory.store(bytes, Relaxed);
    }

    /// Current eviction policy.
    pub fn policy(&self) -> EvictionPolicy {
        EvictionPolicy::from_u8(self.tunables.policy.load(Relaxed))
    }

    /// Changes the eviction policy.
    pub fn set_policy(&self, policy: EvictionPolicy) {
        self.tunables.policy.store(policy.to_u8(), Relaxed);
        self.pool.lock().clear();
    }

    /// `maxmemory-samples`.
    pub fn samples(&self) -> u32 {
        self.tunables.samples.load(Relaxed)
    }

    /// Changes `maxmemory-samples`.
    pub fn set_samples(&self, samples: u32) {
        self.tunables.samples.store(samples.clamp(1, 64), Relaxed);
    }

    /// `lfu-log-factor` and `lfu-decay-time`.
    pub fn lfu_params(&self) -> (u32, u32) {
        (
            self.tunables.lfu_log_factor.load(Relaxed),
            self.tunables.lfu_decay_time.load(Relaxed),
        )
    }

    /// Changes `lfu-log-factor` and `lfu-decay-time`.
    pub fn set_lfu_params(&self, log_factor: u32, decay_time: u32) {
        self.tunables.lfu_log_factor.store(log_factor, Relaxed);
        self.tunables.lfu_decay_time.store(decay_time, Relaxed);
    }

    /// Evicts until memory is within `maxmemory`, as Redis does before a command that may
    /// grow memory. `Err(OutOfMemory)` when over the limit and nothing can be evicted.
    pub fn ensure_memory(&self, now: u64) -> Result<(), StoreError> {
        let max = self.maxmemory();
        if max == 0 || self.used_memory() as u64 <= max {
            return Ok(());
        }
        let policy = self.policy();
        if policy == EvictionPolicy::NoEviction {
            return Err(StoreError::OutOfMemory);
        }
        let mut pool = self.pool.lock();
        while self.used_memory() as u64 > max {
            if let Some(spill) = self.spill.get() {
                spill.wait_for_room();
            }
            if !self.evict_one(&mut pool, policy, now) {
                return Err(StoreError::OutOfMemory);
            }
        }
        Ok(())
    }

    fn score(policy: EvictionPolicy, entry: &Entry, now: u64, decay: u32) -> u64 {
        match policy {
            EvictionPolicy::AllKeysLfu | EvictionPolicy::VolatileLfu => {
                // Least frequent first; among equals, the longest idle.
                ((255 - entry.lfu.decayed(minutes(now), decay) as u64) << 32)
                    | (now as u32).wrapping_sub(entry.access) as u64
            }
            EvictionPolicy::VolatileTtl => u64::MAX - entry.expires_at,
            _ => (now as u32).wrapping_sub(entry.access) as u64,
        }
    }

    /// Evicts one entry. Cache mode deletes it (a Del record); store mode keeps it on disk:
    /// a value the base image does not hold yet is spilled there first.
    fn evict_index(&self, shard: &mut Shard, index: usize) {
        shard.stats.evicted += 1;
        let sinks = self.sinks();
        let Some(spill) = sinks.spill else {
            let key = sinks
                .events
                .and_then(|_| shard.map.get_index(index).map(|(k, _)| k.to_vec()));
            shard.delete_index(index, sinks, None);
            if let (Some(events), Some(key)) = (sinks.events, key) {
                events.evicted(&key);
            }
            return;
        };
        let (key, entry) = shard.remove_index(index);
        if entry.flags & (DIRTY[0] | DIRTY[1]) != 0 || entry.flags & IN_BASE == 0 {
            spill.spill(DirtyEntry {
                key: key.into_box(),
                state: Some((entry.value.to_persisted(), entry.expires_at)),
                stamp: sinks.stamp(),
            });
        }
    }

    fn evict_one(&self, pool: &mut EvictionPool, policy: EvictionPolicy, now: u64) -> bool {
        let volatile_only = policy.volatile_only();
        let random = matches!(
            policy,
            EvictionPolicy::AllKeysRandom | EvictionPolicy::VolatileRandom
        );
        let samples = self.samples() as usize;
        let decay = self.tunables.lfu_decay_time.load(Relaxed);
        let shard_count = self.shards.len();
        let mut start = self.rng.lock().random_range(0..shard_count);
        // Several rounds of sampling; each round looks at a few shards that hold candidates.
        for _round in 0..8 {
            let mut sampled_any = false;
            for step in 0..shard_count {
                let index = (start + step) & self.mask;
                let evicted = self.with_shard(index, |shard| {
                    let population = if volatile_only {
                        shard.volatile
                    } else {
                        shard.map.len()
                    };
                    if population == 0 {
                        return None;
                    }
                    sampled_any = true;
                    let len = shard.map.len();
                    let tries = if volatile_only {
                        samples * (len / population).clamp(1, 64)
                    } else {
                        samples
                    };
                    let mut found = 0;
                    for _ in 0..tries {
                        if found == samples {
                            break;
                        }
                        let i = shard.rng.random_range(0..len);
                        let (key, entry) = shard.map.get_index(i).expect("index in range");
                        if volatile_only && entry.expires_at == 0 {
                            continue;
                        }
                        found += 1;
                        if random {
                            self.evict_index(shard, i);
                            return Some(true);
                        }
                        pool.offer(Candidate {
                            score: Self::score(policy, entry, now, decay),
                            shard: index,
                            key: key.into(),
                        });
                    }
                    Some(false)
                });
                match evicted {
                    Some(true) => return true,
                    Some(false) => break,
                    None => continue,
                }
            }
            if !sampled_any {
                return false;
            }
            // Evict the best candidate still present and not touched since it was sampled.
            while let Some(candidate) = pool.pop_best() {
                let outcome = self.with_shard(candidate.shard, |shard| {
                    let index = shard.map.get_index_of(&candidate.key)?;
                    let entry = &shard.map[index];
                    if volatile_only && entry.expires_at == 0 {
                        return None;
                    }
                    let score = Self::score(policy, entry, now, decay);
                    if score < candidate.score {
                        return Some(Err(score));
                    }
                    self.evict_index(shard, index);
                    Some(Ok(()))
                });
                match outcome {
                    Some(Ok(())) => return true,
                    Some(Err(score)) => {
                        // Touched since sampled: back in the pool at its new score.
                        pool.offer(Candidate { score, ..candidate });
                    }
                    None => continue,
                }
            }
            start = self.rng.lock().random_range(0..shard_count);
        }
        false
    }
}

/// The keyspace as a checkpoint reads it.
impl CheckpointSource for Store {
    fn shard_count(&self) -> usize {
        Store::shard_count(self)
    }

    fn shard_slots(&self, index: usize) -> Range<u16> {
        Store::shard_slots(self, index)
    }

    fn flip(&self, index: usize) -> usize {
        self.shards[index].lock().marks.flip()
    }

    /// Takes up to about `budget` bytes of the changes noted in `epoch` in shard `index`:
    /// each dirty entry's current state (copied now, stamped with the log position it
    /// reflects) and the tombstones. Returns false once nothing of `epoch` is left there.
    fn take_changes(
        &self,
        index: usize,
        epoch: usize,
        budget: usize,
        log: &ChangeLog,
        out: &mut ShardChanges,
    ) -> bool {
        let mut shard = self.shards[index].lock();
        let shard = &mut *shard;
        // Under the shard lock: every record of its keys up to here is reflected.
        let stamp = log.last_lsn();
        let cleared = std::mem::take(&mut shard.cleared[epoch]);
        out.cleared_before = out.cleared_before.max(cleared);
        let Shard { map, marks, .. } = shard;
        let more = marks.take_tombstones(epoch, budget, stamp, out, |key| {
            // Deleted then written again: the current state is what the base must hold.
            let i = map.get_index_of(key)?;
            let entry = &mut map[i];
            entry.flags |= IN_BASE;
            Some((entry.value.to_persisted(), entry.expires_at))
        });
        more || marks.take_dirty(
            epoch,
            budget,
            stamp,
            out,
            map.iter_mut()
                .map(|(key, entry)| (&mut entry.flags, (key, &entry.value, entry.expires_at))),
            |(key, value, expires_at)| (key.into(), value.to_persisted(), expires_at),
        )
    }

    /// A checkpoint failed: what it took from `epoch` but could not make durable, and what
    /// it had not taken yet, is noted in the current epoch again, so the next checkpoint
    /// writes it.
    fn abort_checkpoint(&self, epoch: usize, untaken: Vec<Box<[u8]>>) {
        let mut by_shard: Vec<Vec<Box<[u8]>>> = vec![Vec::new(); self.shards.len()];
        for key in untaken {
            by_shard[self.shard_of(&key)].push(key);
        }
        for (index, keys) in by_shard.into_iter().enumerate() {
            let mut shard = self.shards[index].lock();
            let shard = &mut *shard;
            let current = shard.marks.epoch;
            if current == epoch {
                continue;
            }
            for key in keys {
                match shard.map.get_index_of(&key) {
                    Some(i) => shard.mark_dirty(i),
                    None => shard.marks.tombstones[current].push(key),
                }
            }
            let cleared = std::mem::take(&mut shard.cleared[epoch]);
            shard.cleared[current] = shard.cleared[current].max(cleared);
            let Shard { map, marks, .. } = shard;
            marks.restore(epoch, map.values_mut().map(|e| &mut e.flags));
        }
    }

    /// Changed keys not yet taken by a checkpoint, in both epochs (for INFO).
    fn pending_changes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.marks.pending()
            })
            .sum()
    }

    /// Marks every entry changed, so the next checkpoint writes all of them (a base image
    /// rebuilt from memory, a data directory migrated from the old format).
    fn mark_all_dirty(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for i in 0..shard.map.len() {
                shard.mark_dirty(i);
            }
        }
    }

    fn used_memory(&self) -> usize {
        Store::used_memory(self)
    }
}

mod stream_writes;
#[cfg(test)]
mod tests;
