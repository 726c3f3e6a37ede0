//! Server-side leases: stampede protection for every client language (`CACHE.GET`,
//! `CACHE.FILL`, `CACHE.ABANDON`). The first client to miss a key gets a token and the
//! duty to fill it; other clients wait on the server for the fill (a [`Flight`]) instead
//! of all querying the origin. A filled key remembers how long its load took and when it
//! goes stale, so a hit can hand out a refresh lease early (XFetch) or within the grace
//! period, and an `ADAPTIVE` fill can choose its TTL from the key's history.
//!
//! A lease holds a WATCH ticket on its key: a fill after someone else wrote or deleted the
//! key is refused, as Facebook's leases refuse a set after a delete. Lock order is always
//! lease shard, then store shard; the store never calls back here.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_store::flight::{Flight, Follower};
use ringkv_store::{LoadOutcome, Store, TtlPolicy, Value, WatchTicket, xfetch_due};

const SHARDS: usize = 64;

struct Lease {
    token: u64,
    granted_at: u64,
    expires_at: u64,
    flight: Flight<Bytes>,
    ticket: WatchTicket,
}

/// What the last fill of a key left behind.
#[derive(Debug, Clone, Copy)]
struct FillRecord {
    /// The deadline the store holds for the key (soft expiry plus grace); a different one
    /// means the key was rewritten since and this record no longer describes it.
    store_deadline: Option<u64>,
    /// When the value goes stale (`u64::MAX`: never).
    soft_expires_at: u64,
    load_ms: u64,
    ttl_ms: Option<u64>,
    reads: u64,
    digest: u64,
}

#[derive(Default)]
struct Shard {
    leases: HashMap<Box<[u8]>, Lease>,
    fills: HashMap<Box<[u8]>, FillRecord>,
}

/// What `CACHE.GET` found.
pub enum GetStep {
    /// Reply `[value, token]` now.
    Reply {
        /// The value, if the key holds one.
        value: Option<Bytes>,
        /// A lease token: the caller must fill (or abandon) the key.
        token: Option<u64>,
    },
    /// Another client holds the lease: wait for its fill until the lease expires.
    Wait {
        /// Resolves when the holder fills or abandons.
        follower: Follower<Bytes>,
        /// When the holder's lease runs out.
        lease_expires_at: u64,
    },
}

/// How `CACHE.FILL` chooses the TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillTtl {
    /// No expiry.
    Persist,
    /// This many milliseconds.
    Millis(u64),
    /// The server's adaptive policy.
    Adaptive,
}

/// Why a fill or abandon was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The token is not the key's current lease.
    #[error(
        "STALELEASE the lease token is not current (it expired, was filled, or was abandoned); nothing was stored"
    )]
    Stale,
    /// The key was written by someone else while the lease was out.
    #[error("STALELEASE the key was modified since the lease was granted; nothing was stored")]
    Modified,
    /// The key holds a hash.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
}

/// The node's lease table and fill history.
pub struct Leases {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::FixedState,
    next_token: AtomicU64,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::FixedState::with_seed(rand::random()),
            // Random high bits: a token from before a restart does not match a new lease.
            next_token: AtomicU64::new((rand::random::<u64>() >> 2) & !0xfff),
        }
    }
}

impl Leases {
    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// Leases currently held.
    pub fn held(&self) -> usize {
        self.shards.iter().map(|s| s.lock().leases.len()).sum()
    }

    /// `CACHE.GET`: a hit (maybe with a refresh lease), a new lease, or a wait.
    pub fn get(
        &self,
        store: &Store,
        key: &[u8],
        now: u64,
        lease_ms: u64,
        xfetch_beta: f64,
    ) -> Result<GetStep, LeaseError> {
        let mut shard = self.shard(key).lock();
        let found = store.inspect(key, now, |entry| {
            entry.map(|e| match e.value {
                Value::Str(s) => Ok((Bytes::copy_from_slice(s), e.expires_at)),
                _ => Err(LeaseError::WrongType),
            })
        });
        if let Some(found) = found {
            let (value, deadline) = found?;
            let refresh_due = match shard.fills.get_mut(key) {
                Some(fill) if fill.store_deadline == deadline => {
                    fill.reads += 1;
                    now >= fill.soft_expires_at
                        || (fill.soft_expires_at != u64::MAX
                            && xfetch_due(
                                now,
                                fill.soft_expires_at,
                                fill.load_ms,
                                xfetch_beta,
                                rand::random(),
                            ))
                }
                _ => false,
            };
            let live_lease = shard.leases.get(key).is_some_and(|l| l.expires_at > now);
            let token = (refresh_due && !live_lease)
                .then(|| self.grant(&mut shard, store, key, now, lease_ms));
            return Ok(GetStep::Reply {
                value: Some(value),
                token,
            });
        }
        if let Some(lease) = shard.leases.get(key).filter(|l| l.expires_at > now) {
            return Ok(GetStep::Wait {
                follower: lease.flight.wait(),
                lease_expires_at: lease.expires_at,
            });
        }
        let token = self.grant(&mut shard, store, key, now, lease_ms);
        Ok(GetStep::Reply {
            value: None,
            token: Some(token),
        })
    }

    /// Grants a lease, replacing an expired one (whose waiters then try again).
    fn grant(&self, shard: &mut Shard, store: &Store, key: &[u8], now: u64, lease_ms: u64) -> u64 {
        let token = self.next_token.fetch_add(1, Relaxed);
        let lease = Lease {
            token,
            granted_at: now,
            expires_at: now.saturating_add(lease_ms.max(1)),
            flight: Flight::new(),
            ticket: store.watch(key, now),
        };
        if let Some(old) = shard.leases.insert(key.into(), lease) {
            end(store, old);
        }
        token
    }

    /// `CACHE.FILL`: stores the value if `token` is the key's live lease and nobody else
    /// wrote the key meanwhile, then wakes every waiter with it.
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &self,
        store: &Store,
        key: &[u8],
        token: u64,
        value: Bytes,
        ttl: FillTtl,
        adaptive: &dyn TtlPolicy,
        grace_ms: u64,
        now: u64,
    ) -> Result<(), LeaseError> {
        let mut shard = self.shard(key).lock();
        let lease = take_live(&mut shard, key, token, now)?;
        if !store.watch_unchanged(&lease.ticket, now) {
            end(store, lease);
            return Err(LeaseError::Modified);
        }
        let digest = xxhash_rust::xxh3::xxh3_64(&value);
        let previous = shard.fills.remove(key);
        let ttl_ms = match ttl {
            FillTtl::Persist => None,
            FillTtl::Millis(ms) => Some(ms),
            FillTtl::Adaptive => {
                adaptive.ttl_after_load(&previous.map_or_else(LoadOutcome::default, |p| {
                    LoadOutcome {
                        previous_ttl_ms: p.ttl_ms,
                        reads: p.reads,
                        changed: Some(p.digest != digest),
                    }
                }))
            }
        };
        let soft_expires_at = ttl_ms.map_or(u64::MAX, |ttl| now.saturating_add(ttl));
        let store_deadline = ttl_ms.map(|_| soft_expires_at.saturating_add(grace_ms));
        store.write(key, now, |slot| {
            slot.set(
                Value::Str(value.to_vec()),
                Some(store_deadline.unwrap_or(0)),
            );
        });
        shard.fills.insert(
            key.into(),
            FillRecord {
                store_deadline,
                soft_expires_at,
                load_ms: now.saturating_sub(lease.granted_at),
                ttl_ms,
                reads: 0,
                digest,
            },
        );
        store.unwatch(lease.ticket);
        lease.flight.land(value);
        Ok(())
    }

    /// `CACHE.ABANDON`: gives the lease up; a waiting client receives a new one.
    pub fn abandon(
        &self,
        store: &Store,
        key: &[u8],
        token: u64,
        now: u64,
    ) -> Result<(), LeaseError> {
        let mut shard = self.shard(key).lock();
        let lease = take_live(&mut shard, key, token, now)?;
        end(store, lease);
        Ok(())
    }

    /// Drops expired leases (their waiters try again) and the fill records of keys that
    /// are gone and whose history is older than one TTL. Bounded by `budget` entries.
    pub fn sweep(&self, store: &Store, now: u64, budget: usize) {
        let mut seen = 0;
        for shard in self.shards.iter() {
            if seen >= budget {
                break;
            }
            let mut shard = shard.lock();
            seen += shard.leases.len() + shard.fills.len();
            let expired: Vec<Box<[u8]>> = shard
                .leases
                .iter()
                .filter(|(_, l)| l.expires_at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Some(lease) = shard.leases.remove(&key) {
                    end(store, lease);
                }
            }
            shard.fills.retain(|key, fill| {
                let history_until = fill
                    .soft_expires_at
                    .saturating_add(fill.ttl_ms.unwrap_or(0));
                now < history_until || store.contains(key, now)
            });
        }
    }
}

fn take_live(shard: &mut Shard, key: &[u8], token: u64, now: u64) -> Result<Lease, LeaseError> {
    let live = shard
        .leases
        .get(key)
        .is_some_and(|lease| lease.token == token && lease.expires_at > now);
    if !live {
        return Err(LeaseError::Stale);
    }
    shard.leases.remove(key).ok_or(LeaseError::Stale)
}

/// Ends a lease without a fill: its waiters wake and try again.
fn end(store: &Store, lease: Lease) {
    store.unwatch(lease.ticket);
    lease.flight.orphan();
}
