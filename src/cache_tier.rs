//! The embedded cache's persistence tier: the node's own change log, WAL and sled base
//! image ([`ringkv_store::tier::Tier`]). Every insert and removal appends a record under
//! the cache's shard lock; the log thread writes it with the chosen fsync policy, and
//! checkpoints write the entries changed since the last one into the base image. A build
//! recovers through a scratch [`Store`]: base image plus WAL tail, then into the cache.

use std::sync::Arc;

use ringkv_store::change_log::{ChangeLog, RecordKind};
use ringkv_store::checkpoint::CheckpointConfig;
use ringkv_store::slot::key_slot;
use ringkv_store::tier::{Storage, Tier, TierConfig, TierError, TierMode};
use ringkv_store::wal::{FsyncPolicy, WalConfig};
use ringkv_store::{Store, Value};

/// How the cache turns keys and values into bytes and back.
pub(crate) struct Codec<K, V> {
    pub key: fn(&K) -> Vec<u8>,
    pub value: fn(&V) -> Vec<u8>,
    pub decode_key: fn(&[u8]) -> Option<K>,
    pub decode_value: fn(&[u8]) -> Option<V>,
}

impl<K, V> Clone for Codec<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Codec<K, V> {}

/// The running tier of one cache.
pub(crate) struct CacheTier {
    pub tier: Tier,
    pub log: Arc<ChangeLog>,
}

/// A recovered entry: key, value, Unix ms deadline (0: none).
pub(crate) type Recovered<K, V> = (K, V, u64);

/// An opened tier, the entries it held, and the deletions the base image still has to
/// learn.
pub(crate) type Opened<K, V> = (Tier, Vec<Recovered<K, V>>, Vec<Box<[u8]>>);

/// Opens the tier and reads back what it holds (blocking), before the cache exists.
pub(crate) fn open<K, V>(
    storage: &Storage,
    fsync: FsyncPolicy,
    codec: &Codec<K, V>,
    now_unix: u64,
) -> Result<Opened<K, V>, TierError> {
    let config = TierConfig {
        mode: TierMode::Cache,
        wal: WalConfig {
            policy: fsync,
            ..WalConfig::default()
        },
        checkpoint: CheckpointConfig {
            // An embedded cache is small next to a node: checkpoint at 64 MiB of log.
            wal_min_bytes: 64 << 20,
            ..CheckpointConfig::default()
        },
        ..TierConfig::default()
    };
    let tier = Tier::open(storage.dir.clone(), storage.base.clone(), config)?;
    let scratch = Store::builder().shards(16).build();
    tier.recover(&scratch, now_unix)?;
    let mut entries = Vec::new();
    let deleted = scratch.drain(|key, value, deadline| {
        if let Value::Str(bytes) = value
            && let (Some(k), Some(v)) = ((codec.decode_key)(&key), (codec.decode_value)(&bytes))
        {
            entries.push((k, v, deadline));
        }
    });
    Ok((tier, entries, deleted))
}

/// Appends the record of an insert: `deadline` in Unix ms (0: none).
pub(crate) fn log_set(log: &ChangeLog, key: &[u8], value: &[u8], deadline: u64) {
    ringkv_store::log_string(log, key_slot(key), key, value, deadline);
}

/// Appends the record of a removal.
pub(crate) fn log_del(log: &ChangeLog, key: &[u8]) {
    log.append(RecordKind::Del, key_slot(key), key, |_| {});
}
