//! One ringkv node's keyspace: sharded maps, values, TTL with lazy and active expiry,
//! memory accounting and eviction under `maxmemory`, and WATCH versions. No sockets, no
//! RESP, no clock: every operation takes the current time (Unix milliseconds) as `now`.

pub mod base_image;
pub mod change_log;
pub mod change_marks;
pub mod checkpoint;
pub mod data_dir;
pub mod dump;
mod error;
mod eviction;
pub mod flight;
mod glob;
mod key_bytes;
mod key_map;
mod list;
pub mod namespace;
pub mod recovery;
mod refresh;
pub mod replay;
mod scan;
mod set;
pub mod slot;
pub mod slot_set;
pub mod slot_stream;
pub mod snapshot;
mod store;
pub mod stream;
mod sync;
pub mod tier;
mod value;
pub mod wal;
mod zset;

pub use change_marks::{CheckpointSource, DirtyEntry, ShardChanges};
pub use error::StoreError;
pub use eviction::{EvictionPolicy, LfuCounter, UnknownPolicy};
pub use glob::glob_match;
pub use list::ListValue;
pub use refresh::{AdaptiveTtl, FixedTtl, LoadOutcome, TtlPolicy, xfetch_due};
pub use scan::scan_window;
pub use set::SetValue;
pub use store::{
    DatabaseCount, EntryView, EvictionSpill, Exclusive, ExpireReport, FlushedData, KeyEvents, Slot,
    Store, StoreBuilder, StoreStats, WatchTicket, WrongType, log_string,
};
pub use stream::{StreamId, StreamValue, Trim, TrimBy};
pub use value::{HashValue, Value, alloc_size};
pub use zset::ZSetValue;
