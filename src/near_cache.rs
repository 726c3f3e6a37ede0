//! The near-cache: a [`Cache`] in this process (L1) in front of a ringkv cluster, or any
//! Redis-compatible server with client-side caching (L2), kept coherent by the server's
//! invalidation pushes instead of short TTLs.
//!
//! A read that misses L1 reads L2 on the key's owner with `GET` over that member's one
//! pipelined RESP3 connection, whose `CLIENT TRACKING` makes the member tell of any later
//! change. A key missing from L2 is leased cluster-wide with `CACHE.GET … LEASE`: one
//! process runs the loader and fills it (`CACHE.FILL`), the others poll for the fill; a
//! server without leases gets a plain `SET`. Values enter L1 only from a tracked read, and
//! only if no invalidation of the key arrived after that read (see [`Coherence`]); a
//! broken connection or a null invalidation drops what that member served. When the
//! cluster cannot be reached, the loader answers and nothing is cached (fail open).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use redis_protocol::resp3::types::BytesFrame;
use ringkv_store::flight::{Flights, Landing, Role};
use ringkv_store::slot::key_slot;

use crate::Cache;
use crate::cache::{CacheBuilder, CacheStats, Flown, Persistable, bump, erase, follow};
use crate::error::NearCacheError;
use crate::remote::{Link, PushSink, Remote, SlotBits, Timeouts, error_text};

/// Invalidations remembered for reads still in flight; a read older than the oldest one
/// remembered is not cached.
const RECENT_INVALIDATIONS: usize = 16 << 10;
/// The longest pause between polls for another process's fill.
const MAX_FILL_POLL: Duration = Duration::from_millis(20);

/// Counters since the near-cache was built. See [`NearCache::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NearCacheStats {
    /// Reads answered from this process's cache (its own count of hits).
    pub l1_hits: u64,
    /// Reads answered by the cluster (then kept in L1).
    pub l2_hits: u64,
    /// Reads the cluster had no value for.
    pub l2_misses: u64,
    /// Loader runs in this process.
    pub loads: u64,
    /// Loader runs that returned an error.
    pub load_failures: u64,
    /// Callers that waited for this process's load or cluster read of the same key.
    pub coalesced_waits: u64,
    /// Polls while another process held the key's lease and loaded it.
    pub lease_waits: u64,
    /// Keys the cluster said changed (each dropped from L1 if held).
    pub invalidations: u64,
    /// Times everything a member served was dropped: its connection broke, or it sent a
    /// null invalidation (FLUSHALL, FLUSHDB).
    pub flushes: u64,
    /// Loads answered while the cluster could not be reached (not cached).
    pub fail_open: u64,
    /// The L1 cache's own counters.
    pub l1: CacheStats,
}

#[derive(Debug, Default)]
struct Counters {
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    loads: AtomicU64,
    load_failures: AtomicU64,
    coalesced_waits: AtomicU64,
    lease_waits: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    fail_open: AtomicU64,
}

/// Builds a [`NearCache`]; see [`CacheBuilder::near`].
pub struct NearCacheBuilder<K, V> {
    l1: CacheBuilder<K, V>,
    seeds: Vec<SocketAddr>,
    lease: Duration,
    l2_ttl: Option<Duration>,
    timeouts: Timeouts,
}

impl<K, V> fmt::Debug for NearCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NearCacheBuilder")
            .field("l1", &self.l1)
            .field("seeds", &self.seeds)
            .field("lease", &self.lease)
            .field("l2_ttl", &self.l2_ttl)
            .finish_non_exhaustive()
    }
}

impl<K, V> NearCacheBuilder<K, V>
where
    K: Persistable + Hash + Eq + Clone + Send + Sync + 'static,
    V: Persistable + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(l1: CacheBuilder<K, V>, seeds: Vec<SocketAddr>) -> Self {
        NearCacheBuilder {
            l1,
            seeds,
            lease: Duration::from_secs(10),
            l2_ttl: None,
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(5),
            },
        }
    }

    /// How long one process may take to load a missing key before another may (the
    /// `CACHE.GET … LEASE` time; 10 s by default). Others wait for the fill meanwhile.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// The TTL of values this cache writes into the cluster (none by default). L1 keeps
    /// the builder's own TTL policy; an L2 expiry reaches L1 as an invalidation.
    pub fn l2_time_to_live(mut self, ttl: Duration) -> Self {
        self.l2_ttl = Some(ttl.max(Duration::from_millis(1)));
        self
    }

    /// How long a connection attempt may take (2 s by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// How long a member may take to answer (5 s by default).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.request = timeout;
        self
    }

    /// Connects to the cluster (on the current tokio runtime) and learns its slots.
    pub async fn build(self) -> Result<NearCache<K, V>, NearCacheError> {
        let l1 = self.l1.build();
        let coherence = Arc::new(Coherence {
            l1: l1.clone(),
            seq: AtomicU64::new(0),
            recent: Mutex::new(Recent::default()),
            flushed_at: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let remote = Remote::connect(self.seeds, coherence.clone(), self.timeouts).await?;
        Ok(NearCache {
            inner: Arc::new(Inner {
                l1,
                remote,
                coherence,
                flights: Flights::new(),
                reads: Flights::new(),
                lease_ms: self.lease.as_millis() as u64,
                l2_ttl_ms: self.l2_ttl.map(|ttl| ttl.as_millis() as u64),
                leases: AtomicBool::new(true),
            }),
        })
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Persistable + Hash + Eq + Clone + Send + Sync + 'static,
    V: Persistable + Clone + Send + Sync + 'static,
{
    /// Puts this cache in front of a ringkv cluster (or a Redis-compatible server with
    /// `CLIENT TRACKING`) reached through `seeds`: see [`NearCache`]. Capacity, eviction
    /// and TTL settings apply to the in-process tier; a persistence tier does not (a
    /// value restored from disk was never tracked, so nobody would tell of its changes).
    pub fn near(self, seeds: impl IntoIterator<Item = SocketAddr>) -> NearCacheBuilder<K, V> {
        NearCacheBuilder::new(self.without_persistence(), seeds.into_iter().collect())
    }
}

/// An in-process cache in front of a ringkv cluster, kept coherent by the cluster. Clones
/// share the same cache and connections.
///
/// ```no_run
/// use std::time::Duration;
/// use ringkv::Cache;
///
/// # async fn load_user_from_db(id: u64) -> String { String::new() }
/// # async fn example() -> Result<(), ringkv::NearCacheError> {
/// let users = Cache::<String, String>::builder()
///     .max_capacity(100_000)
///     .near(["127.0.0.1:6379".parse().unwrap()])
///     .l2_time_to_live(Duration::from_secs(3600))
///     .build()
///     .await?;
/// // L1 hit, else the cluster's copy, else one loader in the whole cluster runs.
/// let name = users
///     .get_with("user:42".to_string(), async { load_user_from_db(42).await })
///     .await;
/// users.insert("user:42".to_string(), "Ada".to_string()).await?; // every other L1 drops it
/// println!("{:?}", users.stats());
/// # Ok(()) }
/// ```
pub struct NearCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for NearCache<K, V> {
    fn clone(&self) -> Self {
        NearCache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> fmt::Debug for NearCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NearCache")
            .field("lease_ms", &self.inner.lease_ms)
            .finish_non_exhaustive()
    }
}

struct Inner<K, V> {
    l1: Cache<K, V>,
    remote: Remote,
    coherence: Arc<Coherence<K, V>>,
    flights: Flights<K, Flown<V>>,
    /// Reads of the cluster in flight (`get`).
    reads: Flights<K, Result<Option<V>, NearCacheError>>,
    lease_ms: u64,
    l2_ttl_ms: Option<u64>,
    /// Whether the servers answer `CACHE.GET` (false after an unknown-command error).
    leases: AtomicBool,
}

/// What a leader learned from the cluster before loading.
enum Step<V> {
    /// The cluster's value (already in L1).
    Found(V),
    /// Missing: load, then write it (through the lease when there is one).
    Load(Option<Bytes>),
    /// The cluster failed: load, and keep the value out of both tiers.
    FailOpen(NearCacheError),
}

fn command(parts: &[&[u8]]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
}

impl<K, V> NearCache<K, V>
where
    K: Persistable + Hash + Eq + Clone + Send + Sync + 'static,
    V: Persistable + Clone + Send + Sync + 'static,
{
    /// The value of `key`: from L1, else from the cluster (then kept in L1). `None` when
    /// the cluster has none; this does not load.
    /// Concurrent misses on one key in this process share one read of the cluster (a hot
    /// key just invalidated is read once, not by every caller).
    pub async fn get(&self, key: &K) -> Result<Option<V>, NearCacheError> {
        if let Some(value) = self.cached(key) {
            return Ok(Some(value));
        }
        loop {
            match self.inner.reads.join(key) {
                Role::Leader(leader) => {
                    if let Some(value) = self.inner.l1.get(key) {
                        leader.land(Ok(Some(value.clone())));
                        return Ok(Some(value));
                    }
                    let bytes = Bytes::from(key.to_bytes());
                    let read = self.read_l2(key, &bytes).await;
                    leader.land(read.clone());
                    return read;
                }
                Role::Follower(follower) => {
                    bump(&self.inner.coherence.counters.coalesced_waits);
                    if let Landing::Landed(read) = follower.await {
                        return read;
                    }
                }
            }
        }
    }

    /// The value in this process's cache only, without asking the cluster.
    pub fn cached(&self, key: &K) -> Option<V> {
        self.inner.l1.get(key)
    }

    /// The value for `key`, loading it with `init` when neither tier has it. Concurrent
    /// calls in this process share one load, and across the cluster one process loads
    /// while the others wait for its fill. If the cluster cannot be reached, `init`
    /// answers (and nothing is cached).
    pub async fn get_with(&self, key: K, init: impl Future<Output = V>) -> V {
        let infallible = async { Ok::<V, std::convert::Infallible>(init.await) };
        match self.try_get_with(key, infallible).await {
            Ok(value) => value,
            Err(never) => match *never {},
        }
    }

    /// Like [`get_with`](Self::get_with) for a fallible loader: an error is not cached,
    /// every caller in this process that waited on it receives the same `Arc`'d error,
    /// and the lease is given back so another process may load.
    pub async fn try_get_with<E>(
        &self,
        key: K,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        if let Some(value) = self.cached(&key) {
            return Ok(value);
        }
        loop {
            match self.inner.flights.join(&key) {
                Role::Leader(leader) => {
                    // A previous leader may have stored and landed since our look-up.
                    if let Some(value) = self.inner.l1.get(&key) {
                        leader.land(Ok(value.clone()));
                        return Ok(value);
                    }
                    let result = self.fetch(&key, init).await;
                    leader.land(result.clone().map_err(erase));
                    return result;
                }
                Role::Follower(follower) => {
                    bump(&self.inner.coherence.counters.coalesced_waits);
                    if let Some(result) = follow(follower).await {
                        return result;
                    }
                }
            }
        }
    }

    /// Writes `value` to the cluster (with the L2 TTL); every near-cache holding the key,
    /// this one included, drops its copy, and this one keeps the new value.
    pub async fn insert(&self, key: K, value: V) -> Result<(), NearCacheError> {
        let bytes = Bytes::from(key.to_bytes());
        let write = self.set_command(&bytes, None, &value.to_bytes());
        let get = command(&[b"GET", &bytes]);
        let (link, replies) = self
            .inner
            .remote
            .call(key_slot(&bytes), &[write, get])
            .await?;
        if let Some(error) = error_text(&replies[0].frame) {
            return Err(NearCacheError::Server(error));
        }
        self.keep_read(&key, &bytes, &replies[1], &link);
        Ok(())
    }

    /// Deletes `key` from the cluster; every near-cache holding it drops its copy.
    pub async fn invalidate(&self, key: &K) -> Result<(), NearCacheError> {
        let bytes = Bytes::from(key.to_bytes());
        let (_, replies) = self
            .inner
            .remote
            .call(key_slot(&bytes), &[command(&[b"DEL", &bytes])])
            .await?;
        self.inner.l1.invalidate(key);
        match error_text(&replies[0].frame) {
            Some(error) => Err(NearCacheError::Server(error)),
            None => Ok(()),
        }
    }

    /// Entries in this process's cache.
    pub fn entry_count(&self) -> u64 {
        self.inner.l1.entry_count()
    }

    /// Counters since the near-cache was built.
    pub fn stats(&self) -> NearCacheStats {
        let c = &self.inner.coherence.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NearCacheStats {
            l1_hits: self.inner.l1.stats().hits,
            l2_hits: load(&c.l2_hits),
            l2_misses: load(&c.l2_misses),
            loads: load(&c.loads),
            load_failures: load(&c.load_failures),
            coalesced_waits: load(&c.coalesced_waits),
            lease_waits: load(&c.lease_waits),
            invalidations: load(&c.invalidations),
            flushes: load(&c.flushes),
            fail_open: load(&c.fail_open),
            l1: self.inner.l1.stats(),
        }
    }

    /// `GET` on the key's owner: its value, kept in L1 when the read is still current.
    async fn read_l2(&self, key: &K, bytes: &Bytes) -> Result<Option<V>, NearCacheError> {
        let (link, replies) = self
            .inner
            .remote
            .call(key_slot(bytes), &[command(&[b"GET", bytes])])
            .await?;
        if let Some(error) = error_text(&replies[0].frame) {
            return Err(NearCacheError::Server(error));
        }
        let value = self.keep_read(key, bytes, &replies[0], &link);
        let counters = &self.inner.coherence.counters;
        bump(if value.is_some() {
            &counters.l2_hits
        } else {
            &counters.l2_misses
        });
        Ok(value)
    }

    /// A leader's miss: the cluster's value, or a load (leased when the cluster leases).
    async fn fetch<E>(&self, key: &K, init: impl Future<Output = Result<V, E>>) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        let bytes = Bytes::from(key.to_bytes());
        let step = self.before_load(key, &bytes).await;
        let counters = &self.inner.coherence.counters;
        let token = match step {
            Step::Found(value) => return Ok(value),
            Step::Load(token) => token,
            Step::FailOpen(error) => {
                bump(&counters.fail_open);
                tracing::debug!(%error, "the cluster failed; loading without caching");
                bump(&counters.loads);
                return init
                    .await
                    .inspect_err(|_| bump(&counters.load_failures))
                    .map_err(Arc::new);
            }
        };
        bump(&counters.loads);
        let slot = key_slot(&bytes);
        match init.await {
            Ok(value) => {
                let write = self.set_command(&bytes, token.as_ref(), &value.to_bytes());
                let get = command(&[b"GET", &bytes]);
                // The write first, then a read that tracks the key again (our own write
                // invalidated the lease read's tracking).
                match self.inner.remote.call(slot, &[write, get]).await {
                    Ok((link, replies)) => {
                        self.keep_read(key, &bytes, &replies[1], &link);
                    }
                    Err(error) => tracing::debug!(%error, "filling the cluster failed"),
                }
                Ok(value)
            }
            Err(error) => {
                bump(&counters.load_failures);
                if let Some(token) = token {
                    let abandon = command(&[b"CACHE.ABANDON", &bytes, &token]);
                    if let Err(error) = self.inner.remote.call(slot, &[abandon]).await {
                        tracing::debug!(%error, "abandoning a lease failed; it runs out instead");
                    }
                }
                Err(Arc::new(error))
            }
        }
    }

    /// Reads the cluster until it has the value, this process holds the lease, or the
    /// cluster fails. Bounded by the lease time plus the request timeout.
    async fn before_load(&self, key: &K, bytes: &Bytes) -> Step<V> {
        let inner = &*self.inner;
        let counters = &inner.coherence.counters;
        let slot = key_slot(bytes);
        let deadline =
            Instant::now() + Duration::from_millis(inner.lease_ms) + inner.remote.request_timeout();
        let mut pause = Duration::from_millis(1);
        let lease_ms = inner.lease_ms.to_string();
        loop {
            if Instant::now() >= deadline {
                return Step::FailOpen(NearCacheError::LeaseWait {
                    millis: inner.lease_ms,
                });
            }
            match self.read_l2(key, bytes).await {
                Ok(Some(value)) => return Step::Found(value),
                Ok(None) => {}
                Err(error) => return Step::FailOpen(error),
            }
            if !inner.leases.load(Ordering::Relaxed) {
                return Step::Load(None);
            }
            // WAIT is left out on purpose: a parked CACHE.GET would hold up every other
            // caller's reply on this shared connection. Waiting is polling here instead.
            let lease = command(&[b"CACHE.GET", bytes, b"LEASE", lease_ms.as_bytes()]);
            let reply = match inner.remote.call(slot, &[lease]).await {
                Ok((_, mut replies)) => replies.remove(0).frame,
                Err(error) => return Step::FailOpen(error),
            };
            match reply {
                BytesFrame::Array { data, .. } if data.len() == 2 => match &data[1] {
                    BytesFrame::BlobString { data: token, .. } => {
                        return Step::Load(Some(token.clone()));
                    }
                    // The value landed between our GET and CACHE.GET: read it tracked.
                    _ if !matches!(data[0], BytesFrame::Null) => continue,
                    // Another process holds the lease and is loading.
                    _ => {
                        bump(&counters.lease_waits);
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_FILL_POLL);
                    }
                },
                other => match error_text(&other) {
                    Some(error) if error.starts_with("ERR unknown command") => {
                        inner.leases.store(false, Ordering::Relaxed);
                        return Step::Load(None);
                    }
                    Some(error) => return Step::FailOpen(NearCacheError::Server(error)),
                    None => {
                        return Step::FailOpen(NearCacheError::UnexpectedReply {
                            command: "CACHE.GET",
                            reply: format!("{other:?}"),
                        });
                    }
                },
            }
        }
    }

    /// `CACHE.FILL key token value [PX ttl]` with a lease, `SET key value [PX ttl]` without.
    fn set_command(&self, key: &Bytes, token: Option<&Bytes>, value: &[u8]) -> Vec<Bytes> {
        let mut parts: Vec<Bytes> = match token {
            Some(token) => vec![
                Bytes::from_static(b"CACHE.FILL"),
                key.clone(),
                token.clone(),
                Bytes::copy_from_slice(value),
            ],
            None => vec![
                Bytes::from_static(b"SET"),
                key.clone(),
                Bytes::copy_from_slice(value),
            ],
        };
        if let Some(ttl) = self.inner.l2_ttl_ms {
            parts.push(Bytes::from_static(b"PX"));
            parts.push(Bytes::from(ttl.to_string()));
        }
        parts
    }

    /// A tracked `GET` reply: its value, kept in L1 unless the key was invalidated after
    /// the reply arrived (or the link broke). The check follows the insert, so an
    /// invalidation racing with it either is seen here or removes the entry itself.
    fn keep_read(
        &self,
        key: &K,
        bytes: &Bytes,
        reply: &crate::remote::Reply,
        link: &Link,
    ) -> Option<V> {
        let BytesFrame::BlobString { data, .. } = &reply.frame else {
            return None;
        };
        let value = V::from_bytes(data)?;
        if !link.is_alive() {
            return Some(value);
        }
        let inner = &*self.inner;
        inner.l1.insert(key.clone(), value.clone());
        link.covered().set(key_slot(bytes));
        if inner.coherence.invalidated_since(bytes, reply.stamp) {
            inner.l1.invalidate(key);
        }
        Some(value)
    }
}

/// Invalidations in arrival order: (key hash, sequence number).
#[derive(Default)]
struct Recent {
    entries: VecDeque<(u64, u64)>,
    /// The sequence number of the newest entry let go.
    forgotten: u64,
}

/// Orders invalidations against reads: every invalidation (and flush) takes the next
/// sequence number; a reply is stamped with the number current when it arrived; a read
/// stamped `s` may be cached unless an invalidation of its key, or a flush, numbered
/// above `s` exists.
pub(crate) struct Coherence<K, V> {
    l1: Cache<K, V>,
    seq: AtomicU64,
    recent: Mutex<Recent>,
    flushed_at: AtomicU64,
    counters: Counters,
}

fn key_hash(bytes: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x9e37_79b9).hash_one(bytes)
}

impl<K, V> Coherence<K, V>
where
    K: Persistable + Hash + Eq + Clone + Send + Sync + 'static,
    V: Persistable + Clone + Send + Sync + 'static,
{
    fn invalidated_since(&self, key: &[u8], stamp: u64) -> bool {
        if self.flushed_at.load(Ordering::SeqCst) > stamp {
            return true;
        }
        let hash = key_hash(key);
        let recent = self.recent.lock();
        recent.forgotten > stamp
            || recent
                .entries
                .iter()
                .rev()
                .take_while(|(_, seq)| *seq > stamp)
                .any(|(h, _)| *h == hash)
    }

    fn flush(&self, covered: &SlotBits) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.flushed_at.fetch_max(seq, Ordering::SeqCst);
        bump(&self.counters.flushes);
        self.l1
            .invalidate_where(|key| covered.contains(key_slot(&key.to_bytes())));
    }
}

impl<K, V> PushSink for Coherence<K, V>
where
    K: Persistable + Hash + Eq + Clone + Send + Sync + 'static,
    V: Persistable + Clone + Send + Sync + 'static,
{
    fn stamp(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    fn invalidated(&self, keys: Option<Vec<Bytes>>, covered: &SlotBits) {
        let Some(keys) = keys else {
            self.flush(covered);
            return;
        };
        for key in keys {
            {
                // Numbered under the lock, so the ring stays in order.
                let mut recent = self.recent.lock();
                let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
                recent.entries.push_back((key_hash(&key), seq));
                if recent.entries.len() > RECENT_INVALIDATIONS
                    && let Some((_, seq)) = recent.entries.pop_front()
                {
                    recent.forgotten = seq;
                }
            }
            bump(&self.counters.invalidations);
            if let Some(key) = K::from_bytes(&key) {
                self.l1.invalidate(&key);
            }
        }
    }

    fn lost(&self, covered: &SlotBits) {
        self.flush(covered);
    }
}
