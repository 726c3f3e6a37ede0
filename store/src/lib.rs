//! One ringkv node's keyspace: sharded maps, values, TTL with lazy and active expiry,
//! memory accounting and eviction under `maxmemory`, and WATCH versions. No sockets, no
//! RESP, no clock: every operation takes the current time (Unix milliseconds) as `now`.

mod error;
mod eviction;
pub mod flight;
mod glob;
mod key_map;
pub mod persist;
mod refresh;
mod scan;
mod store;
mod sync;
mod value;

pub use error::StoreError;
pub use eviction::{EvictionPolicy, LfuCounter, UnknownPolicy};
pub use glob::glob_match;
pub use refresh::{AdaptiveTtl, FixedTtl, LoadOutcome, TtlPolicy, xfetch_due};
pub use scan::scan_window;
pub use store::{
    ChangeCause, ChangeSink, EntryView, ExpireReport, FlushedData, Slot, Store, StoreBuilder,
    StoreStats, WatchTicket,
};
pub use value::{HashValue, Value, alloc_size};
