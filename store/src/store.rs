//! The sharded keyspace. Each shard is an index map behind its own mutex; no lock is held
//! across an `.await` because nothing here is async. Keys are spread over shards by a
//! per-process seeded hash, so clients cannot aim at one shard. Memory is accounted per
//! entry in O(1); eviction samples keys into a candidate pool as Redis does.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::eviction::{Candidate, EvictionPolicy, EvictionPool, LfuCounter};
use crate::scan::scan_window;
use crate::value::{Value, alloc_size};
use crate::{StoreError, glob_match};

type KeyMap = crate::key_map::KeyMap<Entry>;

/// Bytes an entry costs besides its key and value allocations: the map bucket (hash, key
/// pointer, entry) and its 5-byte index slot with load-factor slack.
const ENTRY_OVERHEAD: usize =
    8 + std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<Entry>() + 6;

/// One key's value and metadata.
#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// Absolute deadline in Unix ms; 0 = no TTL.
    expires_at: u64,
    /// Last access, Unix ms truncated to 32 bits (idle times wrap after 49 days).
    access: u32,
    lfu: LfuCounter,
}

fn entry_cost(key_len: usize, value: &Value) -> usize {
    ENTRY_OVERHEAD + alloc_size(key_len) + value.heap_bytes()
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
    /// True once a [`ChangeSink`] is attached: changed keys are noted in `pending` and
    /// reported before the shard lock is released, so a key's changes reach the sink in
    /// the order they happened.
    recording: bool,
    pending: Vec<(Box<[u8]>, ChangeCause)>,
}

/// Why a key changed, for a [`ChangeSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeCause {
    /// A command wrote or deleted it.
    Write,
    /// Its TTL passed.
    Expire,
    /// Eviction under `maxmemory` removed it.
    Evict,
}

/// Receives every keyspace change (the persistence tier). Called with the shard locked:
/// it must not call back into the store.
pub trait ChangeSink: Send + Sync {
    /// `key` now holds `state` (value and deadline, 0 = none), or nothing. The key is
    /// handed over, so a sink that queues it need not copy it again.
    fn changed(&self, key: Box<[u8]>, state: Option<(&Value, u64)>, cause: ChangeCause);
    /// Every key was deleted (FLUSHALL).
    fn cleared(&self);
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
    fn new(seed: u64) -> Self {
        Shard {
            map: KeyMap::default(),
            volatile: 0,
            bytes: 0,
            watched: HashMap::new(),
            sweep: 0,
            rng: SmallRng::seed_from_u64(seed),
            stats: ShardStats::default(),
            recording: false,
            pending: Vec::new(),
        }
    }

    fn note(&mut self, key: &[u8], cause: ChangeCause) {
        if self.recording {
            self.pending.push((key.into(), cause));
        }
    }

    fn bump_watch(&mut self, key: &[u8]) {
        if let Some(w) = self.watched.get_mut(key) {
            w.version += 1;
        }
    }

    /// Looks a key up, deleting it first when its deadline has passed.
    fn find(&mut self, key: &[u8], now: u64) -> Option<usize> {
        let index = self.map.get_index_of(key)?;
        let expires_at = self.map[index].expires_at;
        if expires_at != 0 && expires_at <= now {
            let (key, _) = self.remove_index(index);
            self.note(&key, ChangeCause::Expire);
            self.stats.expired += 1;
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

    fn remove_index(&mut self, index: usize) -> (Box<[u8]>, Entry) {
        let (key, entry) = self.map.swap_remove_index(index).expect("index in range");
        self.bytes -= entry_cost(key.len(), &entry.value);
        if entry.expires_at != 0 {
            self.volatile -= 1;
        }
        self.bump_watch(&key);
        (key, entry)
    }

    fn insert(&mut self, key: &[u8], value: Value, expires_at: u64, now: u64) -> usize {
        self.bytes += entry_cost(key.len(), &value);
        if expires_at != 0 {
            self.volatile += 1;
        }
        self.bump_watch(key);
        let entry = Entry {
            value,
            expires_at,
            access: now as u32,
            lfu: LfuCounter::new(minutes(now)),
        };
        self.map.insert_full(key, entry)
    }

    fn set_deadline(&mut self, index: usize, expires_at: u64) {
        let entry = &mut self.map[index];
        match (entry.expires_at != 0, expires_at != 0) {
            (false, true) => self.volatile += 1,
            (true, false) => self.volatile -= 1,
            _ => {}
        }
        entry.expires_at = expires_at;
    }
}

/// Write access to one key while its shard is locked. Changes are accounted and WATCHes
/// of the key are invalidated when the slot is finished.
pub struct Slot<'a> {
    shard: &'a mut Shard,
    key: &'a [u8],
    index: Option<usize>,
    now: u64,
    modified: bool,
    /// Cost of the entry before `value_mut` handed out a mutable borrow.
    cost_before_mutation: Option<usize>,
}

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

    /// The current value, to change in place.
    pub fn value_mut(&mut self) -> Option<&mut Value> {
        let index = self.index?;
        self.modified = true;
        if self.cost_before_mutation.is_none() {
            let value = &self.shard.map[index].value;
            self.cost_before_mutation = Some(entry_cost(self.key.len(), value));
        }
        Some(&mut self.shard.map[index].value)
    }

    /// The absolute deadline (Unix ms), if the key has a TTL.
    pub fn expires_at(&self) -> Option<u64> {
        self.index
            .map(|i| self.shard.map[i].expires_at)
            .filter(|&at| at != 0)
    }

    /// Stores `value`; `expires_at` is the new deadline, `None` keeps the current one
    /// (KEEPTTL), `Some(0)` removes it.
    pub fn set(&mut self, value: Value, expires_at: Option<u64>) {
        self.settle();
        self.modified = true;
        match self.index {
            Some(index) => {
                let old_cost = entry_cost(self.key.len(), &self.shard.map[index].value);
                self.shard.bytes = self.shard.bytes - old_cost + entry_cost(self.key.len(), &value);
                self.shard.map[index].value = value;
                if let Some(at) = expires_at {
                    self.shard.set_deadline(index, at);
                }
            }
            None => {
                let at = expires_at.unwrap_or(0);
                self.index = Some(self.shard.insert(self.key, value, at, self.now));
            }
        }
    }

    /// Sets or clears the deadline of an existing key; a deadline not after `now` deletes
    /// the key, as Redis does. False when the key does not exist.
    pub fn set_expires_at(&mut self, expires_at: Option<u64>) -> bool {
        let Some(index) = self.index else {
            return false;
        };
        self.settle();
        self.modified = true;
        match expires_at {
            Some(at) if at <= self.now => {
                self.remove();
            }
            at => self.shard.set_deadline(index, at.unwrap_or(0)),
        }
        true
    }

    /// Deletes the key, returning its value.
    pub fn remove(&mut self) -> Option<Value> {
        self.settle();
        let index = self.index.take()?;
        self.modified = true;
        Some(self.shard.remove_index(index).1.value)
    }

    /// Brings the accounting up to date after an in-place mutation.
    fn settle(&mut self) {
        if let (Some(before), Some(index)) = (self.cost_before_mutation.take(), self.index) {
            let after = entry_cost(self.key.len(), &self.shard.map[index].value);
            self.shard.bytes = self.shard.bytes - before + after;
        }
    }

    fn finish(mut self) {
        self.settle();
        // An emptied hash is deleted, as Redis never keeps an empty aggregate.
        if let Some(Value::Hash(h)) = self.value()
            && h.is_empty()
        {
            self.remove();
        }
        if self.modified {
            self.shard.bump_watch(self.key);
            self.shard.note(self.key, ChangeCause::Write);
        }
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
}

impl StoreBuilder {
    /// Number of shards (rounded up to a power of two). Default 256.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1).next_power_of_two();
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
        Store {
            shards: (0..self.shards)
                .map(|i| Mutex::new(Shard::new(seed.wrapping_add(i as u64))))
                .collect(),
            mask: self.shards - 1,
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
            sink: std::sync::OnceLock::new(),
        }
    }
}

/// One node's keyspace.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
    /// Held shared by every command batch and exclusively by MULTI/EXEC and multi-key
    /// atomic commands, which therefore see no other connection's writes in between.
    gate: RwLock<()>,
    used: AtomicUsize,
    tunables: Tunables,
    pool: Mutex<EvictionPool>,
    sweep_shard: AtomicUsize,
    rng: Mutex<SmallRng>,
    sink: std::sync::OnceLock<std::sync::Arc<dyn ChangeSink>>,
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
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hash(key) as usize) & self.mask
    }

    /// Runs `f` on a locked shard and accounts the bytes it added or freed.
    fn with_shard<R>(&self, index: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut shard = self.shards[index].lock();
        let before = shard.bytes;
        let result = f(&mut shard);
        if !shard.pending.is_empty()
            && let Some(sink) = self.sink.get()
        {
            let shard = &mut *shard;
            for (key, cause) in shard.pending.drain(..) {
                let state = shard.map.get_index_of(&key).map(|i| {
                    let entry = &shard.map[i];
                    (&entry.value, entry.expires_at)
                });
                sink.changed(key, state, cause);
            }
        }
        let after = shard.bytes;
        drop(shard);
        if after >= before {
            self.used.fetch_add(after - before, Relaxed);
        } else {
            self.used.fetch_sub(before - after, Relaxed);
        }
        result
    }

    /// Attaches the sink every later change is reported to (once; false if one was
    /// attached already). Load recovered data before attaching, so it is not written back.
    pub fn set_change_sink(&self, sink: std::sync::Arc<dyn ChangeSink>) -> bool {
        if self.sink.set(sink).is_err() {
            return false;
        }
        for shard in self.shards.iter() {
            shard.lock().recording = true;
        }
        true
    }

    /// Holds off exclusive sections (EXEC, MSET, RENAME…) while a batch of commands runs.
    /// Never take it twice on one thread.
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// Runs alone: no other shared or exclusive holder runs meanwhile.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write()
    }

    /// Reads a key: counts a hit or a miss and records the access for LRU/LFU.
    pub fn read<R>(&self, key: &[u8], now: u64, f: impl FnOnce(Option<&Value>) -> R) -> R {
        self.with_shard(self.shard_of(key), |shard| match shard.find(key, now) {
            Some(index) => {
                shard.stats.hits += 1;
                shard.touch(index, now, &self.tunables);
                f(Some(&shard.map[index].value))
            }
            None => {
                shard.stats.misses += 1;
                f(None)
            }
        })
    }

    /// Looks at an entry without counting a hit or touching its access time.
    pub fn inspect<R>(
        &self,
        key: &[u8],
        now: u64,
        f: impl FnOnce(Option<EntryView<'_>>) -> R,
    ) -> R {
        let decay = self.tunables.lfu_decay_time.load(Relaxed);
        self.with_shard(self.shard_of(key), |shard| {
            let view = shard.find(key, now).map(|index| {
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
        self.with_shard(self.shard_of(key), |shard| {
            let index = shard.find(key, now);
            if let Some(index) = index {
                shard.touch(index, now, &self.tunables);
            }
            let mut slot = Slot {
                shard,
                key,
                index,
                now,
                modified: false,
                cost_before_mutation: None,
            };
            let result = f(&mut slot);
            slot.finish();
            result
        })
    }

    /// Deletes a key; true when it existed.
    pub fn remove(&self, key: &[u8], now: u64) -> bool {
        self.write(key, now, |slot| slot.remove().is_some())
    }

    /// True when the key exists; counts a hit or miss as EXISTS does in Redis.
    pub fn contains(&self, key: &[u8], now: u64) -> bool {
        self.with_shard(self.shard_of(key), |shard| {
            let found = shard.find(key, now).is_some();
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
        self.with_shard(self.shard_of(key), |shard| match shard.find(key, now) {
            Some(index) => {
                shard.touch(index, now, &self.tunables);
                true
            }
            None => false,
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

    /// Zeroes hits, misses, expired and evicted (CONFIG RESETSTAT).
    pub fn reset_stats(&self) {
        for shard in self.shards.iter() {
            shard.lock().stats = ShardStats::default();
        }
    }

    /// Every live key matching a glob pattern (KEYS).
    pub fn keys(&self, pattern: &[u8], now: u64) -> Vec<Vec<u8>> {
        let all = pattern == b"*";
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(
                shard
                    .map
                    .iter()
                    .filter(|(k, e)| {
                        (e.expires_at == 0 || e.expires_at > now)
                            && (all || glob_match(pattern, k, false))
                    })
                    .map(|(k, _)| k.to_vec()),
            );
        }
        out
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
        for _ in 0..100 {
            let shard_index = self.rng.lock().random_range(0..self.shards.len());
            let found = self.with_shard(shard_index, |shard| {
                if shard.map.is_empty() {
                    return None;
                }
                let index = shard.rng.random_range(0..shard.map.len());
                let key = shard.map.get_index(index).map(|(k, _)| k.to_vec())?;
                shard.find(&key, now).map(|_| key)
            });
            if found.is_some() {
                return found;
            }
        }
        // Mostly empty keyspace: fall back to a walk so a lone key is still found.
        (0..self.shards.len()).find_map(|i| {
            self.with_shard(i, |shard| {
                let keys: Vec<Box<[u8]>> = shard.map.keys().map(Box::from).collect();
                keys.into_iter()
                    .find(|k| shard.find(k, now).is_some())
                    .map(|k| k.to_vec())
            })
        })
    }

    /// Deletes every key (FLUSHALL/FLUSHDB); drop the result to free the memory.
    pub fn flush(&self) -> FlushedData {
        let mut maps = Vec::with_capacity(self.shards.len());
        for index in 0..self.shards.len() {
            self.with_shard(index, |shard| {
                for w in shard.watched.values_mut() {
                    w.version += 1;
                }
                maps.push(std::mem::take(&mut shard.map));
                shard.volatile = 0;
                shard.bytes = 0;
                shard.sweep = 0;
            });
        }
        self.pool.lock().clear();
        if let Some(sink) = self.sink.get() {
            sink.cleared();
        }
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
        self.with_shard(self.shard_of(key), |shard| shard.find(key, now).is_some())
    }

    /// Starts watching a key for MULTI/EXEC.
    pub fn watch(&self, key: &[u8], now: u64) -> WatchTicket {
        let shard_index = self.shard_of(key);
        self.with_shard(shard_index, |shard| {
            let deadline = shard
                .find(key, now)
                .map(|i| shard.map[i].expires_at)
                .unwrap_or(0);
            let watched = shard.watched.entry(key.into()).or_insert(Watched {
                watchers: 0,
                version: 0,
            });
            watched.watchers += 1;
            WatchTicket {
                shard: shard_index,
                key: key.into(),
                version: watched.version,
                deadline,
            }
        })
    }

    /// True when the watched key has not changed (nor expired) since [`Store::watch`].
    pub fn watch_unchanged(&self, ticket: &WatchTicket, now: u64) -> bool {
        let shard = self.shards[ticket.shard].lock();
        let unchanged = shard
            .watched
            .get(&ticket.key)
            .is_some_and(|w| w.version == ticket.version);
        unchanged && (ticket.deadline == 0 || ticket.deadline > now)
    }

    /// Stops watching.
    pub fn unwatch(&self, ticket: WatchTicket) {
        let mut shard = self.shards[ticket.shard].lock();
        if let Some(w) = shard.watched.get_mut(&ticket.key) {
            w.watchers -= 1;
            if w.watchers == 0 {
                shard.watched.remove(&ticket.key);
            }
        }
    }

    /// One pass of active expiry: sweeps at most `budget` entries across the shards that
    /// hold keys with a TTL, deleting the expired ones. Bounded work per call.
    pub fn active_expire(&self, now: u64, budget: usize) -> ExpireReport {
        let mut report = ExpireReport::default();
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
                        // swap_remove moves the last entry here: look at this index again.
                        let (key, _) = shard.remove_index(shard.sweep);
                        shard.note(&key, ChangeCause::Expire);
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
                            let (key, _) = shard.remove_index(i);
                            shard.note(&key, ChangeCause::Evict);
                            shard.stats.evicted += 1;
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
                    let (key, _) = shard.remove_index(index);
                    shard.note(&key, ChangeCause::Evict);
                    shard.stats.evicted += 1;
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

#[cfg(test)]
mod tests;
