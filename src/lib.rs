//! ringkv: a sharded, Redis-compatible key-value cache.
//!
//! For Rust programs, [`Cache`] is a bounded read-through cache with stampede protection:
//! concurrent [`Cache::get_with`] calls on one key run one load, XFetch refreshes hot keys
//! early, a grace period serves stale values while one caller reloads, and
//! [`AdaptiveTtl`] lengthens the TTL of stable hot keys. The same protection is available
//! to every client language over RESP (`CACHE.GET … LEASE`, see the README).
//!
//! This facade also re-exports the keyspace ([`store`]) and the protocol layer
//! ([`protocol`]). The node binary is `ringkv-server` (crate `ringkv-server`).
//!
//! ```
//! use ringkv::store::{Store, Value};
//!
//! let store = Store::builder().build();
//! let now = 1_000;
//! store.write(b"greeting", now, |slot| slot.set(Value::Str(b"hello".to_vec()), Some(0)));
//! let value = store.read(b"greeting", now, |v| v.cloned());
//! assert_eq!(value, Some(Value::Str(b"hello".to_vec())));
//! ```

mod cache;
mod cache_tier;
mod clock;
mod error;
mod near_cache;
mod remote;

pub use cache::{Cache, CacheBuilder, CacheStats, Eviction, Persistable};
pub use clock::{Clock, MockClock, SystemClock};
pub use error::NearCacheError;
pub use near_cache::{NearCache, NearCacheBuilder, NearCacheStats};
pub use ringkv_protocol as protocol;
pub use ringkv_store as store;
pub use ringkv_store::{AdaptiveTtl, FixedTtl, LoadOutcome, TtlPolicy};
