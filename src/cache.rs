//! The embedded read-through cache: a sharded, bounded map with TTL, sampled LRU/LFU
//! eviction and stampede protection. A miss runs one load per key however many callers
//! ask at once (a flight, see [`ringkv_store::flight`]); a hot key is refreshed early by
//! one caller (XFetch) or served stale within a grace period while one caller reloads; a
//! [`TtlPolicy`] such as [`AdaptiveTtl`] chooses each loaded value's TTL.
//!
//! Loaders run inline in the calling task: the caller that leads a flight awaits its own
//! loader, everyone else awaits the flight (or, for a refresh, returns the current value at
//! once). No lock is held across an `.await`.

use std::any::Any;
use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use indexmap::IndexMap;
use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_store::change_log::ChangeLog;
use ringkv_store::change_marks::WeakSource;
use ringkv_store::change_marks::{ChangeMarks, IN_BASE};
use ringkv_store::flight::{Flights, Follower, Landing, Role};
use ringkv_store::tier::{Storage, TierError};
use ringkv_store::wal::FsyncPolicy;
use ringkv_store::{AdaptiveTtl, FixedTtl, LfuCounter, LoadOutcome, TtlPolicy, xfetch_due};
use ringkv_store::{CheckpointSource, ShardChanges};

use crate::cache_tier::{self, CacheTier, Codec};
use crate::clock::{Clock, SystemClock};

/// Which entry leaves when a shard is over capacity. Expired entries always go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Least recently used (sampled, as Redis does).
    #[default]
    Lru,
    /// Least frequently used: Redis's logarithmic counter with decay.
    Lfu,
}

/// Counters since the cache was built. See [`Cache::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Reads answered from the cache with a fresh value.
    pub hits: u64,
    /// Reads that found no fresh value.
    pub misses: u64,
    /// Loader runs (each flight's leader, refreshes included).
    pub loads: u64,
    /// Loader runs that returned an error.
    pub load_failures: u64,
    /// Total time spent in loaders.
    pub load_time: Duration,
    /// Callers that waited for another caller's load instead of loading.
    pub coalesced_waits: u64,
    /// Loads started early by XFetch, before the value expired.
    pub early_refreshes: u64,
    /// Reads answered with an expired value within the grace period.
    pub stale_served: u64,
    /// Entries removed to stay within capacity.
    pub evictions: u64,
    /// Entries loaded from the persistence tier when the cache was built.
    pub recovered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    loads: AtomicU64,
    load_failures: AtomicU64,
    load_time_us: AtomicU64,
    coalesced_waits: AtomicU64,
    early_refreshes: AtomicU64,
    stale_served: AtomicU64,
    evictions: AtomicU64,
    recovered: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;
type SameValue<V> = fn(&V, &V) -> bool;
/// What a flight carries: the loaded value, or the loader's error with its type erased so
/// `try_get_with` calls with different error types can share one flight table.
pub(crate) type Flown<V> = Result<V, Arc<dyn Any + Send + Sync>>;

/// Builds a [`Cache`]; see [`Cache::builder`].
pub struct CacheBuilder<K, V> {
    max_capacity: u64,
    weigher: Option<Weigher<K, V>>,
    eviction: Eviction,
    ttl: Option<Arc<dyn TtlPolicy>>,
    same_value: Option<SameValue<V>>,
    xfetch_beta: f64,
    grace: Duration,
    shards: Option<usize>,
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
    tier: Option<TierConfig<K, V>>,
}

/// Values the embedded cache can keep in a persistence tier.
pub trait Persistable: Sized {
    /// The bytes stored.
    fn to_bytes(&self) -> Vec<u8>;
    /// The value back, or `None` when the bytes are not one.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

impl Persistable for Vec<u8> {
    fn to_bytes(&self) -> Vec<u8> {
        self.clone()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl Persistable for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// Cheap to clone (a reference count): the value type for large values read often.
impl Persistable for bytes::Bytes {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(bytes::Bytes::copy_from_slice(bytes))
    }
}

/// Cheap to clone (a reference count beside the bytes): the value type for values read
/// often.
impl Persistable for Arc<[u8]> {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Arc::from(bytes))
    }
}

/// Cheap to clone (a reference count), for text read often.
impl Persistable for Arc<str> {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().map(Arc::from)
    }
}

macro_rules! persistable_int {
    ($($t:ty),*) => {$(
        impl Persistable for $t {
            fn to_bytes(&self) -> Vec<u8> {
                self.to_be_bytes().to_vec()
            }
            fn from_bytes(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_be_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
persistable_int!(u32, u64, i32, i64, u128);

struct TierConfig<K, V> {
    storage: Storage,
    fsync: FsyncPolicy,
    codec: Codec<K, V>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<K, V> fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_capacity", &self.max_capacity)
            .field("eviction", &self.eviction)
            .field("ttl", &self.ttl)
            .field("xfetch_beta", &self.xfetch_beta)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new() -> Self {
        CacheBuilder {
            max_capacity: u64::MAX,
            weigher: None,
            eviction: Eviction::Lru,
            ttl: None,
            same_value: None,
            xfetch_beta: 0.0,
            grace: Duration::ZERO,
            shards: None,
            clock: Arc::new(SystemClock::default()),
            seed: None,
            tier: None,
        }
    }

    /// A persistence tier ([`Storage::open`] for a directory): every insert, invalidation
    /// and eviction goes to the node's change log and WAL (synced per
    /// [`fsync`](Self::fsync), once a second by default), checkpoints keep a sled base
    /// image, and [`build`](Self::build) loads what the tier holds, so a restarted program
    /// starts warm. Entries whose deadline passed meanwhile are not loaded.
    pub fn persistence(mut self, storage: Storage) -> Self
    where
        K: Persistable,
        V: Persistable,
    {
        self.tier = Some(TierConfig {
            storage,
            fsync: FsyncPolicy::EverySec,
            codec: Codec {
                key: K::to_bytes,
                value: V::to_bytes,
                decode_key: K::from_bytes,
                decode_value: V::from_bytes,
            },
        });
        self
    }

    /// The same settings without a persistence tier.
    pub(crate) fn without_persistence(mut self) -> Self {
        self.tier = None;
        self
    }

    /// When the persistence tier syncs its WAL: `Always` before
    /// [`flush_persistence`](Cache::flush_persistence) returns and after every write,
    /// `EverySec` (the default) about once a second, `No` when the kernel decides.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        if let Some(tier) = &mut self.tier {
            tier.fsync = policy;
        }
        self
    }

    /// The most the cache holds: entries, or the sum of [`weigher`](Self::weigher) weights
    /// (for example bytes) when one is set.
    pub fn max_capacity(mut self, capacity: u64) -> Self {
        self.max_capacity = capacity.max(1);
        self
    }

    /// Each entry's weight, counted against [`max_capacity`](Self::max_capacity).
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Which entry leaves when the cache is full.
    pub fn eviction(mut self, eviction: Eviction) -> Self {
        self.eviction = eviction;
        self
    }

    /// The same TTL for every entry.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.ttl = Some(Arc::new(FixedTtl(ttl.as_millis() as u64)));
        self
    }

    /// Adaptive TTL: hot keys whose reloaded value is unchanged live longer (up to
    /// `max`), keys whose value changed live shorter (down to `min`), others get `base`.
    pub fn adaptive_ttl(self, base: Duration, min: Duration, max: Duration) -> Self
    where
        V: PartialEq,
    {
        let policy = AdaptiveTtl::new(
            base.as_millis() as u64,
            min.as_millis() as u64,
            max.as_millis() as u64,
        );
        self.ttl_policy(policy)
    }

    /// Your own TTL policy; it sees whether a reloaded value changed (compared with `==`).
    pub fn ttl_policy(mut self, policy: impl TtlPolicy + 'static) -> Self
    where
        V: PartialEq,
    {
        self.ttl = Some(Arc::new(policy));
        self.same_value = Some(<V as PartialEq>::eq);
        self
    }

    /// XFetch's β: 0 disables early refresh; 1 is the paper's default; larger refreshes
    /// earlier. The loader's last duration scales how early.
    pub fn xfetch_beta(mut self, beta: f64) -> Self {
        self.xfetch_beta = beta.max(0.0);
        self
    }

    /// Stale-while-revalidate: for this long after expiry, `get_with` answers the expired
    /// value at once while one caller reloads it.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Lock shards (rounded up to a power of two); by default sized from the capacity.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1).next_power_of_two());
        self
    }

    /// The clock (a [`MockClock`](crate::MockClock) in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A fixed seed for sampling and XFetch randomness (reproducible simulations).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the cache, loading the persistence tier's entries if there is one. A tier
    /// that cannot be read is logged and the cache starts cold; use
    /// [`try_build`](Self::try_build) to get the error instead.
    pub fn build(self) -> Cache<K, V> {
        let (cache, error) = self.build_reporting();
        if let Some(error) = error {
            tracing::warn!(%error, "persistence tier unreadable; the cache starts cold");
        }
        cache
    }

    /// Builds the cache, failing when the persistence tier cannot be read.
    pub fn try_build(self) -> Result<Cache<K, V>, TierError> {
        match self.build_reporting() {
            (_, Some(error)) => Err(error),
            (cache, None) => Ok(cache),
        }
    }

    fn build_reporting(mut self) -> (Cache<K, V>, Option<TierError>) {
        let Some(config) = self.tier.take() else {
            return (self.build_in_memory(), None);
        };
        let opened = cache_tier::open(&config.storage, config.fsync, &config.codec, unix_ms());
        let cache = self.build_in_memory();
        let (tier, entries, deleted) = match opened {
            Ok(opened) => opened,
            Err(error) => return (cache, Some(error)),
        };
        let now = cache.inner.clock.now_ms();
        let unix_now = unix_ms();
        for (key, value, deadline) in entries {
            let ttl = (deadline != 0).then(|| deadline.saturating_sub(unix_now));
            cache.store_entry(key, value, now, 0, ttl, false);
            bump(&cache.inner.counters.recovered);
        }
        // What recovery deleted may still be in the base image.
        cache.inner.shards[0].lock().marks.tombstones[0].extend(deleted);
        let _ = cache.inner.codec.set(config.codec);
        let source = Arc::new(WeakSource(Arc::downgrade(&cache.inner)));
        match tier.start_source(source, Arc::new(())) {
            Ok(log) => {
                // Set once, before the cache is shared.
                let _ = cache.inner.tier.set(CacheTier { tier, log });
                (cache, None)
            }
            Err(error) => (cache, Some(error)),
        }
    }

    fn build_in_memory(self) -> Cache<K, V> {
        // Sampled eviction works per shard, so keep shards big enough to sample from.
        let by_capacity = (self.max_capacity / 64).clamp(1, 64) as usize;
        let shards = self.shards.unwrap_or(by_capacity.next_power_of_two());
        let per_shard = self.max_capacity.div_ceil(shards as u64);
        let seed = self.seed.unwrap_or_else(rand::random);
        let hasher = foldhash::fast::FixedState::with_seed(seed);
        let shards = (0..shards)
            .map(|i| {
                Mutex::new(Shard {
                    map: IndexMap::with_hasher(hasher.clone()),
                    hits: 0,
                    misses: 0,
                    marks: ChangeMarks::default(),
                    weight: 0,
                    capacity: per_shard,
                    tick: 0,
                    rng: SmallRng::seed_from_u64(seed.wrapping_add(i as u64)),
                })
            })
            .collect();
        Cache {
            inner: Arc::new(Inner {
                shards,
                hasher,
                flights: Flights::new(),
                weigher: self.weigher,
                eviction: self.eviction,
                ttl: self.ttl,
                same_value: self.same_value,
                xfetch_beta: self.xfetch_beta,
                grace_ms: self.grace.as_millis() as u64,
                clock: self.clock,
                counters: Counters::default(),
                tier: std::sync::OnceLock::new(),
                codec: std::sync::OnceLock::new(),
            }),
        }
    }
}

struct Entry<V> {
    value: V,
    /// Change marks for the persistence tier ([`ringkv_store::change_marks`]).
    flags: u8,
    /// Clock milliseconds; `u64::MAX` for no expiry.
    expires_at: u64,
    ttl_ms: Option<u64>,
    /// How long the load that produced this value took (XFetch's δ).
    load_ms: u64,
    reads: u64,
    last_access: u64,
    lfu: LfuCounter,
    weight: u32,
}

struct Shard<K, V> {
    /// Hashed with the cache's one hasher: a look-up hashes its key once, for the shard
    /// and the map.
    map: IndexMap<K, Entry<V>, foldhash::fast::FixedState>,
    /// Read counters, under the shard's lock: a hit costs no atomic operation and no
    /// cache line shared between threads.
    hits: u64,
    misses: u64,
    marks: ChangeMarks,
    weight: u64,
    capacity: u64,
    tick: u64,
    rng: SmallRng,
}

/// Samples per eviction, as Redis's default `maxmemory-samples`.
const EVICTION_SAMPLES: usize = 5;
const LFU_LOG_FACTOR: u32 = 10;
const LFU_DECAY_MINUTES: u32 = 1;

struct Inner<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: foldhash::fast::FixedState,
    flights: Flights<K, Flown<V>>,
    weigher: Option<Weigher<K, V>>,
    eviction: Eviction,
    ttl: Option<Arc<dyn TtlPolicy>>,
    same_value: Option<SameValue<V>>,
    xfetch_beta: f64,
    grace_ms: u64,
    clock: Arc<dyn Clock>,
    counters: Counters,
    tier: std::sync::OnceLock<CacheTier>,
    /// How entries become bytes for the tier (set when there is one).
    codec: std::sync::OnceLock<Codec<K, V>>,
}

/// Why a key is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `get`: fresh values only.
    Plain,
    /// `get_with`: may answer stale within grace, may ask for an early refresh.
    MayRefresh,
    /// A new flight leader checking whether the previous one just stored it (not counted).
    Recheck,
}

/// What a read found.
enum Lookup<V> {
    Fresh(V),
    /// Fresh, but XFetch says refresh now.
    RefreshDue(V),
    /// Expired, within the grace period.
    Stale(V),
    Missing,
}

/// A bounded, concurrent read-through cache. Clones share the same cache.
///
/// ```
/// use std::time::Duration;
/// use ringkv::Cache;
///
/// # tokio_test_block_on(async {
/// let cache: Cache<String, String> = Cache::builder()
///     .max_capacity(10_000)
///     .time_to_live(Duration::from_secs(60))
///     .build();
///
/// let user = cache
///     .get_with("user:42".to_string(), async { "Ada".to_string() /* query the database */ })
///     .await;
/// assert_eq!(user, "Ada");
/// assert_eq!(cache.get(&"user:42".to_string()), Some("Ada".to_string()));
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
///
/// Concurrent calls on the same key run the loader once; the others wait for it:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use ringkv::Cache;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let cache: Cache<&'static str, u64> = Cache::builder().max_capacity(100).build();
/// let origin_calls = Arc::new(AtomicUsize::new(0));
/// let mut tasks = Vec::new();
/// for _ in 0..100 {
///     let (cache, origin_calls) = (cache.clone(), origin_calls.clone());
///     tasks.push(tokio::spawn(async move {
///         cache
///             .get_with("hot", async {
///                 origin_calls.fetch_add(1, Ordering::SeqCst);
///                 tokio::time::sleep(Duration::from_millis(50)).await; // a slow query
///                 7
///             })
///             .await
///     }));
/// }
/// for task in tasks {
///     assert_eq!(task.await.unwrap(), 7);
/// }
/// assert_eq!(origin_calls.load(Ordering::SeqCst), 1);
/// assert_eq!(cache.stats().coalesced_waits, 99);
/// # });
/// ```
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.inner.shards.len())
            .field("eviction", &self.inner.eviction)
            .finish_non_exhaustive()
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts building a cache (unbounded, no TTL, LRU until told otherwise).
    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder::new()
    }

    /// A fresh value, if the cache holds one. Expired values (even within the grace period)
    /// are not returned; use [`get_with`](Self::get_with) for stale-while-revalidate.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.inner.clock.now_ms();
        match self.lookup(key, now, Read::Plain) {
            Lookup::Fresh(v) | Lookup::RefreshDue(v) => Some(v),
            Lookup::Stale(_) | Lookup::Missing => None,
        }
    }

    /// Stores a value with the cache's TTL policy.
    pub fn insert(&self, key: K, value: V) {
        let now = self.inner.clock.now_ms();
        self.store(key, value, now, 0, None);
    }

    /// Stores a value with its own TTL.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        let now = self.inner.clock.now_ms();
        self.store(key, value, now, 0, Some(ttl.as_millis() as u64));
    }

    /// Removes a key. A load in flight for it still lands its value.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut guard = self.shard(key).lock();
        let shard = &mut *guard;
        if let Some((key, entry)) = shard.map.swap_remove_entry(key) {
            shard.weight -= u64::from(entry.weight);
            self.persist_delete(&mut shard.marks, &key, entry.flags);
        }
    }

    /// Removes every entry.
    pub fn invalidate_all(&self) {
        for shard in self.inner.shards.iter() {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            for (key, entry) in shard.map.drain(..) {
                self.persist_delete(&mut shard.marks, &key, entry.flags);
            }
            shard.weight = 0;
        }
    }

    /// Removes every entry whose key `doomed` picks (the near-cache's flush of what a
    /// lost connection served).
    pub(crate) fn invalidate_where(&self, doomed: impl Fn(&K) -> bool) {
        self.remove_where(|key, _| doomed(key));
    }

    fn remove_where(&self, doomed: impl Fn(&K, &Entry<V>) -> bool) {
        for shard in self.inner.shards.iter() {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            let mut freed = 0u64;
            let marks = &mut shard.marks;
            shard.map.retain(|key, e| {
                let keep = !doomed(key, e);
                if !keep {
                    freed += u64::from(e.weight);
                    self.persist_delete(marks, key, e.flags);
                }
                keep
            });
            shard.weight -= freed;
        }
    }

    /// Entries held, including expired ones not yet reclaimed (they go first on eviction).
    pub fn entry_count(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().map.len() as u64)
            .sum()
    }

    /// Sum of entry weights (entries when no weigher is set).
    pub fn weighted_size(&self) -> u64 {
        self.inner.shards.iter().map(|s| s.lock().weight).sum()
    }

    /// Drops every expired entry past its grace period now, instead of at eviction time.
    pub fn purge_expired(&self) {
        let now = self.inner.clock.now_ms();
        let grace = self.inner.grace_ms;
        self.remove_where(|_, e| now >= e.expires_at.saturating_add(grace));
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            hits: self.inner.shards.iter().map(|s| s.lock().hits).sum(),
            misses: self.inner.shards.iter().map(|s| s.lock().misses).sum(),
            loads: c.loads.load(Relaxed),
            load_failures: c.load_failures.load(Relaxed),
            load_time: Duration::from_micros(c.load_time_us.load(Relaxed)),
            coalesced_waits: c.coalesced_waits.load(Relaxed),
            early_refreshes: c.early_refreshes.load(Relaxed),
            stale_served: c.stale_served.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            recovered: c.recovered.load(Relaxed),
        }
    }

    /// Loads in flight right now.
    pub fn loads_in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// The value for `key`, loading it with `init` on a miss. Concurrent callers for the
    /// same key share one load; if the loading caller panics or is cancelled, one waiting
    /// caller runs its own `init` instead.
    pub async fn get_with(&self, key: K, init: impl Future<Output = V>) -> V {
        let infallible = async { Ok::<V, std::convert::Infallible>(init.await) };
        match self.try_get_with(key, infallible).await {
            Ok(value) => value,
            Err(never) => match *never {},
        }
    }

    /// Like [`get_with`](Self::get_with) for a fallible loader. An error is not cached:
    /// every caller that waited on the failed load receives the same `Arc`'d error, and the
    /// next call loads again. When a refresh of a still-usable value fails (XFetch or
    /// grace), callers keep getting that value and the failure is counted.
    pub async fn try_get_with<E>(
        &self,
        key: K,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        let counters = &self.inner.counters;
        let now = self.inner.clock.now_ms();
        let (value, stale) = match self.lookup(&key, now, Read::MayRefresh) {
            Lookup::Fresh(v) => return Ok(v),
            Lookup::RefreshDue(v) => (Some(v), false),
            Lookup::Stale(v) => (Some(v), true),
            Lookup::Missing => (None, false),
        };
        if let Some(value) = value {
            // One caller refreshes; everyone else keeps the current value meanwhile.
            let Role::Leader(leader) = self.inner.flights.join(&key) else {
                if stale {
                    bump(&counters.stale_served);
                }
                return Ok(value);
            };
            if !stale {
                bump(&counters.early_refreshes);
            }
            return match self.load(&key, init).await {
                Ok(fresh) => {
                    leader.land(Ok(fresh.clone()));
                    Ok(fresh)
                }
                Err(error) => {
                    leader.land(Err(erase(error)));
                    if stale {
                        bump(&counters.stale_served);
                    }
                    Ok(value)
                }
            };
        }
        loop {
            match self.inner.flights.join(&key) {
                Role::Leader(leader) => {
                    // A previous leader may have stored and landed between our look-up
                    // and our join; its value is as fresh as ours would be.
                    if let Lookup::Fresh(v) =
                        self.lookup(&key, self.inner.clock.now_ms(), Read::Recheck)
                    {
                        leader.land(Ok(v.clone()));
                        return Ok(v);
                    }
                    // `init` moves here at most once: this branch always returns.
                    return match self.load(&key, init).await {
                        Ok(value) => {
                            leader.land(Ok(value.clone()));
                            Ok(value)
                        }
                        Err(error) => {
                            leader.land(Err(erase(error.clone())));
                            Err(error)
                        }
                    };
                }
                Role::Follower(follower) => {
                    bump(&counters.coalesced_waits);
                    if let Some(result) = follow(follower).await {
                        return result;
                    }
                }
            }
        }
    }

    /// Runs a loader, times it, and stores a success.
    async fn load<E: Send + Sync + 'static>(
        &self,
        key: &K,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, Arc<E>> {
        let counters = &self.inner.counters;
        bump(&counters.loads);
        let clock = &self.inner.clock;
        let started = clock.now_ms();
        let timer = std::time::Instant::now();
        let result = init.await;
        counters
            .load_time_us
            .fetch_add(timer.elapsed().as_micros() as u64, Relaxed);
        let now = clock.now_ms();
        match result {
            Ok(value) => {
                self.store(
                    key.clone(),
                    value.clone(),
                    now,
                    now.saturating_sub(started),
                    None,
                );
                Ok(value)
            }
            Err(error) => {
                bump(&counters.load_failures);
                Err(Arc::new(error))
            }
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<Shard<K, V>> {
        self.shard_and_hash(key).0
    }

    /// The key's shard and its hash, which is also the shard map's hash of it.
    fn shard_and_hash<Q: Hash + ?Sized>(&self, key: &Q) -> (&Mutex<Shard<K, V>>, u64) {
        let hash = self.inner.hasher.hash_one(key);
        // Bits 40.. pick the shard; the map uses the low bits and the top seven.
        let index = (hash >> 40) as usize & (self.inner.shards.len() - 1);
        (&self.inner.shards[index], hash)
    }

    fn lookup<Q>(&self, key: &Q, now: u64, read: Read) -> Lookup<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let (shard, hash) = self.shard_and_hash(key);
        let mut shard = shard.lock();
        let shard = &mut *shard;
        shard.tick += 1;
        let counted = read != Read::Recheck;
        let may_refresh = read == Read::MayRefresh;
        let found = match shard
            .map
            .raw_entry_mut_v1()
            .from_key_hashed_nocheck(hash, key)
        {
            RawEntryMut::Occupied(occupied) => Some(occupied.into_mut()),
            RawEntryMut::Vacant(_) => None,
        };
        let Some(entry) = found else {
            if counted {
                shard.misses += 1;
            }
            return Lookup::Missing;
        };
        if now >= entry.expires_at {
            if counted {
                shard.misses += 1;
            }
            if may_refresh && now < entry.expires_at.saturating_add(inner.grace_ms) {
                return Lookup::Stale(entry.value.clone());
            }
            return Lookup::Missing;
        }
        if !counted {
            return Lookup::Fresh(entry.value.clone());
        }
        shard.hits += 1;
        entry.reads += 1;
        entry.last_access = shard.tick;
        if inner.eviction == Eviction::Lfu {
            let random = shard.rng.random();
            entry
                .lfu
                .touch(minutes(now), LFU_DECAY_MINUTES, LFU_LOG_FACTOR, random);
        }
        let value = entry.value.clone();
        if may_refresh
            && entry.expires_at != u64::MAX
            && xfetch_due(
                now,
                entry.expires_at,
                entry.load_ms,
                inner.xfetch_beta,
                shard.rng.random(),
            )
        {
            return Lookup::RefreshDue(value);
        }
        Lookup::Fresh(value)
    }

    /// Stores a value: the TTL comes from `ttl_ms` or the policy, which sees the previous
    /// entry's TTL, reads and whether the value changed. Then evicts to capacity.
    fn store(&self, key: K, value: V, now: u64, load_ms: u64, ttl_ms: Option<u64>) {
        self.store_entry(key, value, now, load_ms, ttl_ms, true);
    }

    /// Flushes the persistence tier: everything stored so far is on disk when this
    /// returns, or the error that kept it off. Blocks: call it from a blocking context.
    /// `Ok` when there is no tier.
    pub fn flush_persistence(&self) -> Result<(), TierError> {
        match self.inner.tier.get() {
            Some(tier) => tier.tier.flush().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Writes everything stored so far into the base image (a checkpoint) and waits for
    /// it; the WAL before it is let go. Blocks.
    pub fn checkpoint_persistence(&self) -> Result<(), TierError> {
        let Some(tier) = self.inner.tier.get() else {
            return Ok(());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        tier.tier
            .request_checkpoint(Some(Box::new(move |result| drop(tx.send(result)))));
        rx.recv()
            .map_err(|_| TierError::State("stopped"))?
            .map_err(TierError::Manifest)
    }

    /// A key left the cache: the tier's log learns it (called with its shard locked).
    fn persist_delete(&self, marks: &mut ChangeMarks, key: &K, flags: u8) {
        marks.forget(flags);
        if let (Some(tier), Some(codec)) = (self.inner.tier.get(), self.inner.codec.get()) {
            let bytes = (codec.key)(key);
            if flags & IN_BASE != 0 {
                let epoch = marks.epoch;
                marks.tombstones[epoch].push(bytes.as_slice().into());
            }
            cache_tier::log_del(&tier.log, &bytes);
        }
    }

    fn store_entry(
        &self,
        key: K,
        value: V,
        now: u64,
        load_ms: u64,
        ttl_ms: Option<u64>,
        persist: bool,
    ) {
        let inner = &*self.inner;
        let weight = inner.weigher.as_ref().map_or(1, |w| w(&key, &value));
        let mut guard = self.shard(&key).lock();
        let shard = &mut *guard;
        shard.tick += 1;
        let previous = shard.map.get(&key);
        let ttl_ms = ttl_ms.or_else(|| {
            let policy = inner.ttl.as_ref()?;
            let outcome = previous.map_or_else(LoadOutcome::default, |p| LoadOutcome {
                previous_ttl_ms: p.ttl_ms,
                reads: p.reads,
                changed: inner.same_value.map(|same| !same(&p.value, &value)),
            });
            policy.ttl_after_load(&outcome)
        });
        let lfu = previous.map_or_else(|| LfuCounter::new(minutes(now)), |p| p.lfu);
        // A recovered entry came from the base image (and a WAL tail the base image may
        // not hold yet: the next checkpoint writes it); a replaced one keeps its place.
        let mut flags = previous.map_or(if persist { 0 } else { IN_BASE }, |p| p.flags & IN_BASE);
        if let Some(previous) = previous {
            shard.marks.forget(previous.flags);
        }
        shard.marks.mark(&mut flags);
        let entry = Entry {
            value,
            flags,
            expires_at: ttl_ms.map_or(u64::MAX, |ttl| now.saturating_add(ttl)),
            ttl_ms,
            load_ms,
            reads: 0,
            last_access: shard.tick,
            lfu,
            weight,
        };
        if let (Some(tier), Some(codec), true) = (inner.tier.get(), inner.codec.get(), persist) {
            // Appended under the shard lock, so the log holds one key's changes in order.
            let deadline = ttl_ms.map_or(0, |ttl| unix_ms().saturating_add(ttl).max(1));
            let bytes = (codec.value)(&entry.value);
            cache_tier::log_set(&tier.log, &(codec.key)(&key), &bytes, deadline);
        }
        let (mut newest, old) = shard.map.insert_full(key, entry);
        if let Some(old) = old {
            shard.weight -= u64::from(old.weight);
        }
        shard.weight += u64::from(weight);
        while shard.weight > shard.capacity && shard.map.len() > 1 {
            let victim = shard.pick_victim(now, inner.eviction, inner.grace_ms, newest);
            if let Some((evicted_key, evicted)) = shard.map.swap_remove_index(victim) {
                self.persist_delete(&mut shard.marks, &evicted_key, evicted.flags);
                // swap_remove moved the last entry into the victim's place.
                if newest == shard.map.len() {
                    newest = victim;
                }
                shard.weight -= u64::from(evicted.weight);
                if now < evicted.expires_at {
                    bump(&inner.counters.evictions);
                }
            }
        }
    }
}

impl<K, V> Shard<K, V> {
    /// Redis-style sampling: the worst of a few random entries; an expired one at once.
    /// Never `newest`, the entry being stored.
    fn pick_victim(&mut self, now: u64, eviction: Eviction, grace_ms: u64, newest: usize) -> usize {
        let candidates = self.map.len() - 1;
        let mut best: Option<(u64, usize)> = None;
        for _ in 0..EVICTION_SAMPLES.min(candidates) {
            // Sample among all but `newest`: indexes at or past it shift up by one.
            let mut index = self.rng.random_range(0..candidates);
            if index >= newest {
                index += 1;
            }
            let Some((_, entry)) = self.map.get_index(index) else {
                continue;
            };
            if now >= entry.expires_at.saturating_add(grace_ms) {
                return index;
            }
            let score = match eviction {
                Eviction::Lru => entry.last_access,
                Eviction::Lfu => {
                    let frequency = entry.lfu.decayed(minutes(now), LFU_DECAY_MINUTES);
                    (u64::from(frequency) << 48) | (entry.last_access & ((1 << 48) - 1))
                }
            };
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, index));
            }
        }
        best.map_or(usize::from(newest == 0), |(_, index)| index)
    }
}

/// Waits for another caller's load: its result, or `None` when the caller should join
/// again (the leader gave up, or its loader had another error type: load ourselves).
pub(crate) async fn follow<V: Clone, E: Send + Sync + 'static>(
    follower: Follower<Flown<V>>,
) -> Option<Result<V, Arc<E>>> {
    match follower.await {
        Landing::Landed(Ok(value)) => Some(Ok(value)),
        Landing::Landed(Err(error)) => error.downcast::<E>().ok().map(Err),
        Landing::Orphaned => None,
    }
}

/// A loader's error as its flight's followers receive it.
pub(crate) fn erase<E: Send + Sync + 'static>(error: Arc<E>) -> Arc<dyn Any + Send + Sync> {
    error
}

fn minutes(now_ms: u64) -> u16 {
    (now_ms / 60_000) as u16
}

/// The cache as its tier's checkpoints read it (through a [`WeakSource`]).
impl<K, V> CheckpointSource for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard_slots(&self, _: usize) -> std::ops::Range<u16> {
        // The cache's shards are not slot ranges, and it never clears a range.
        0..0
    }

    fn flip(&self, index: usize) -> usize {
        self.shards[index].lock().marks.flip()
    }

    fn take_changes(
        &self,
        index: usize,
        epoch: usize,
        budget: usize,
        log: &ChangeLog,
        out: &mut ShardChanges,
    ) -> bool {
        // Set before the tier's threads start, so a checkpoint never finds it missing.
        let Some(codec) = self.codec.get().copied() else {
            return false;
        };
        let mut guard = self.shards[index].lock();
        let shard = &mut *guard;
        // Under the shard lock: every record of these keys up to here is reflected.
        let stamp = log.last_lsn();
        let (now, unix_now) = (self.clock.now_ms(), unix_ms());
        let entries = shard
            .map
            .iter_mut()
            .map(|(key, entry)| (&mut entry.flags, (key, &entry.value, entry.expires_at)));
        // A tombstone precedes the entry of a key written again, so it needs no state.
        shard
            .marks
            .take_tombstones(epoch, budget, stamp, out, |_| None)
            || shard.marks.take_dirty(
                epoch,
                budget,
                stamp,
                out,
                entries,
                |(key, value, expires_at)| {
                    let deadline = if expires_at == u64::MAX {
                        0
                    } else {
                        unix_now
                            .saturating_add(expires_at.saturating_sub(now))
                            .max(1)
                    };
                    let persisted = ringkv_store::Value::Str((codec.value)(value)).to_persisted();
                    ((codec.key)(key).into(), persisted, deadline)
                },
            )
    }

    fn abort_checkpoint(&self, epoch: usize, deleted: Vec<Box<[u8]>>) {
        // Tombstones may sit in any shard: they only say "delete this from the base".
        let mut deleted = Some(deleted);
        for shard in self.shards.iter() {
            let mut guard = shard.lock();
            let Shard { map, marks, .. } = &mut *guard;
            let current = marks.epoch;
            marks.tombstones[current].extend(deleted.take().into_iter().flatten());
            marks.restore(epoch, map.values_mut().map(|e| &mut e.flags));
        }
    }

    fn mark_all_dirty(&self) {
        for shard in self.shards.iter() {
            let mut guard = shard.lock();
            let Shard { map, marks, .. } = &mut *guard;
            for entry in map.values_mut() {
                marks.mark(&mut entry.flags);
            }
        }
    }

    fn pending_changes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().marks.pending()).sum()
    }

    fn used_memory(&self) -> usize {
        self.shards.iter().map(|s| s.lock().weight as usize).sum()
    }
}

impl<K, V> Drop for Inner<K, V> {
    /// The tier's threads stop, and what the log holds is written and synced.
    fn drop(&mut self) {
        if let Some(tier) = self.tier.get()
            && let Err(error) = tier.tier.shutdown()
        {
            tracing::warn!(%error, "the cache's persistence tier did not stop cleanly");
        }
    }
}
