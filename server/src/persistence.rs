//! The node's persistence tier: the store's change log goes to the WAL (the log threads
//! never run on the async runtime), checkpoints keep the sled base image, a restarted node
//! recovers base image and WAL before it serves, and in store mode evicted values stay on
//! disk and fault back in. Clients waiting for durability (`appendfsync always`) await the
//! durable LSN, woken by the log threads exactly when it covers their writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::Context;
use parking_lot::RwLock;
use ringkv_store::Store;
use ringkv_store::checkpoint::CheckpointConfig;
use ringkv_store::recovery::RecoveryReport;
pub use ringkv_store::tier::Storage;
use ringkv_store::tier::{Tier, TierConfig, TierError, TierMode};
use ringkv_store::wal::{DurableWatch, FsyncPolicy, WalConfig};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::node::unix_ms;

/// Clients waiting for their writes to be durable, woken exactly when their LSN is
/// covered (one wake-up per waiter, not one per sync per waiter).
#[derive(Default)]
struct DurableSignal {
    state: parking_lot::Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    durable: u64,
    failed: u64,
    /// By the LSN each waits for.
    waiting: std::collections::BTreeMap<u64, Vec<oneshot::Sender<bool>>>,
}

impl DurableWatch for DurableSignal {
    fn advanced(&self, durable: u64, failed: u64) {
        let (ready, failed) = {
            let mut state = self.state.lock();
            state.durable = state.durable.max(durable);
            state.failed = state.failed.max(failed);
            let covered = state.durable.max(state.failed);
            let later = state.waiting.split_off(&(covered + 1));
            (std::mem::replace(&mut state.waiting, later), state.failed)
        };
        for (lsn, senders) in ready {
            for sender in senders {
                let _ = sender.send(lsn > failed);
            }
        }
    }
}

impl DurableSignal {
    fn reset(&self, lsn: u64) {
        let mut state = self.state.lock();
        state.durable = lsn;
        state.failed = 0;
    }

    /// `Ok(outcome)` when already decided, else a receiver of the outcome.
    fn wait(&self, lsn: u64) -> Result<bool, oneshot::Receiver<bool>> {
        // LSNs start at 1: a write that appended nothing to a log that holds nothing has
        // nothing to wait for (it is not one the disk failed, as `failed >= 0` would say).
        if lsn == 0 {
            return Ok(true);
        }
        let mut state = self.state.lock();
        if state.failed >= lsn {
            return Ok(false);
        }
        if state.durable >= lsn {
            return Ok(true);
        }
        let (tx, rx) = oneshot::channel();
        state.waiting.entry(lsn).or_default().push(tx);
        Err(rx)
    }
}

/// The tier of one node.
pub struct Persistence {
    tier: RwLock<Arc<Tier>>,
    storage: Storage,
    config: TierConfig,
    /// The data directory (for INFO and messages).
    pub dir: PathBuf,
    /// Values read back from disk after eviction (store mode).
    pub fault_ins: AtomicU64,
    /// sled's page cache, as configured.
    pub cache_bytes: u64,
    durable: Arc<DurableSignal>,
    discard_corrupt: bool,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("dir", &self.dir)
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

fn tier_config(config: &Config) -> TierConfig {
    TierConfig {
        mode: if config.mode == "store" {
            TierMode::Store
        } else {
            TierMode::Cache
        },
        wal: WalConfig {
            policy: config.appendfsync,
            ..WalConfig::default()
        },
        checkpoint: CheckpointConfig {
            wal_percent: config.auto_aof_rewrite_percentage,
            wal_min_bytes: config.auto_aof_rewrite_min_size,
            ..CheckpointConfig::default()
        },
        log_limits: crate::replication::log_limits(config),
        ..TierConfig::default()
    }
}

/// Real directories for the configured data directory (blocking). In cache mode with
/// `--on-corrupt-data discard`, a directory that cannot be opened is moved aside and the
/// node starts cold.
pub fn open_storage(config: &Config) -> anyhow::Result<Storage> {
    let dir = &config.dir;
    refuse_old_format(dir)?;
    match open_dirs(config) {
        Ok(storage) => Ok(storage),
        Err(error) if config.on_corrupt_data == "discard" && config.mode == "cache" => {
            let aside = aside_path(dir);
            tracing::warn!(error = %format!("{error:#}"), aside = %aside.display(), "moving the unusable data directory aside and starting cold");
            std::fs::rename(dir, &aside).with_context(|| {
                format!(
                    "{error:#}; moving it aside to {} failed too",
                    aside.display()
                )
            })?;
            open_dirs(config)
        }
        Err(error) => Err(error.context(
            "the persistence tier cannot start (fix the directory, choose another with --dir, \
             or in cache mode start cold with --on-corrupt-data discard)",
        )),
    }
}

fn open_dirs(config: &Config) -> anyhow::Result<Storage> {
    let dir = &config.dir;
    Storage::open(dir, config.persistence_cache_size)
        .with_context(|| format!("cannot open the data directory {}", dir.display()))
}

/// A directory written by ringkv before the WAL (sled's files at its top, no manifest) is
/// not read as empty: that would lose its keys silently.
fn refuse_old_format(dir: &Path) -> anyhow::Result<()> {
    let old = dir.join("conf").is_file() && dir.join("db").is_file();
    if old && !dir.join(ringkv_store::checkpoint::MANIFEST).exists() {
        anyhow::bail!(
            "{} holds data in ringkv's earlier format (sled files without a WAL). Start the \
             earlier release on it and copy the keys over (redis-cli --scan | MIGRATE), or \
             move the directory aside to start empty",
            dir.display()
        );
    }
    Ok(())
}

fn aside_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{}", unix_ms()));
    dir.with_file_name(name)
}

impl Persistence {
    /// The tier over `storage` (blocking: reads the manifest).
    pub fn open(storage: Storage, config: &Config) -> anyhow::Result<Persistence> {
        let tier_config = tier_config(config);
        let discard_corrupt = config.on_corrupt_data == "discard" && config.mode == "cache";
        let tier = match Tier::open(storage.dir.clone(), storage.base.clone(), tier_config) {
            Ok(tier) => tier,
            Err(error) if discard_corrupt && is_corruption(&error) => {
                discard_aside(&storage, &config.dir, tier_config, &error)?
            }
            Err(error) => {
                return Err(anyhow::Error::from(error).context(format!(
                    "the persistence tier in {} cannot start (fix the directory, choose another \
                     with --dir, or in cache mode start cold with --on-corrupt-data discard)",
                    config.dir.display()
                )));
            }
        };
        Ok(Persistence {
            tier: RwLock::new(Arc::new(tier)),
            storage,
            config: tier_config,
            dir: config.dir.clone(),
            fault_ins: AtomicU64::new(0),
            cache_bytes: config.persistence_cache_size,
            durable: Arc::new(DurableSignal::default()),
            discard_corrupt,
        })
    }

    /// The running tier.
    pub fn tier(&self) -> Arc<Tier> {
        self.tier.read().clone()
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.config.wal.policy
    }

    /// True in store mode.
    pub fn store_mode(&self) -> bool {
        self.config.mode == TierMode::Store
    }

    /// False while the disk fails.
    pub fn healthy(&self) -> bool {
        self.tier()
            .wal_status()
            .is_none_or(|s| s.healthy.load(Relaxed))
    }

    /// The last failure, for MISCONF and INFO.
    pub fn last_error(&self) -> Option<String> {
        let tier = self.tier();
        tier.wal_status()
            .and_then(|s| s.last_error())
            .or_else(|| tier.checkpoints().and_then(|c| c.status().last_error()))
    }

    /// Writes are refused (MISCONF) while the disk fails and a write must be durable:
    /// `appendfsync always`, or store mode where the disk is the only copy after eviction.
    pub fn refuses_writes(&self) -> bool {
        let durable_required = self.store_mode() || self.policy() == FsyncPolicy::Always;
        durable_required && !self.healthy()
    }

    /// Loads the base image and the WAL into `store` (blocking). In cache mode with
    /// `--on-corrupt-data discard`, unreadable data is moved aside and the node starts cold.
    pub fn recover(&self, store: &Store) -> Result<RecoveryReport, anyhow::Error> {
        let tier = self.tier();
        match tier.recover(store, unix_ms()) {
            Ok(report) => Ok(report),
            Err(error) if self.discard_corrupt && is_corruption(&error) => {
                drop(store.flush());
                let fresh = discard_aside(&self.storage, &self.dir, self.config, &error)?;
                let report = fresh.recover(store, unix_ms())?;
                *self.tier.write() = Arc::new(fresh);
                Ok(report)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Attaches the change log to `store` and starts the log and checkpoint threads.
    pub fn start(&self, store: Arc<Store>) -> Result<(), TierError> {
        let tier = self.tier();
        let last = tier.recovery_report().last_lsn;
        self.durable.reset(last);
        tier.start(store, self.durable.clone())
    }

    /// Resolves true once every change up to `lsn` is on disk, false when writing it failed
    /// (its writers must not be told it is safe).
    pub async fn wait_durable(&self, lsn: u64) -> bool {
        let rx = match self.durable.wait(lsn) {
            Ok(outcome) => return outcome,
            Err(rx) => rx,
        };
        if let Some(log) = self.tier().log() {
            log.hurry();
        }
        // A dropped sender means the tier stopped: the write is not known to be safe.
        rx.await.unwrap_or(false)
    }

    /// The last LSN appended to the change log.
    pub fn last_lsn(&self) -> u64 {
        self.tier().log().map_or(0, |log| log.last_lsn())
    }

    /// Resolves once a checkpoint has written everything so far into the base image and
    /// the WAL is synced (SAVE); BGSAVE drops the receiver.
    pub fn save(&self) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let tier = self.tier();
        if let Err(error) = tier.sync_now() {
            let _ = tx.send(Err(error.to_string()));
            return rx;
        }
        tier.request_checkpoint(Some(Box::new(move |result| {
            let _ = tx.send(result);
        })));
        rx
    }

    /// Store mode: reads keys back from disk after eviction (blocking).
    pub fn fault_in(&self, store: &Store, keys: &[Vec<u8>]) -> Result<(), TierError> {
        let tier = self.tier();
        let now = unix_ms();
        for key in keys {
            if let Some(found) = tier.fault_in(key, now)? {
                // Only where nothing was written meanwhile: a newer value wins.
                if store.load(key, found.value, found.deadline, now, found.changed) {
                    self.fault_ins.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Writes and syncs what the log holds and stops the threads (a clean stop).
    pub fn shutdown(&self) -> Result<(), TierError> {
        self.tier().shutdown()
    }
}

/// `--on-corrupt-data discard`: moves the WAL and manifest into `<dir>.corrupt-<ms>` (kept
/// for inspection), empties the base image (open, so it cannot move) and opens a fresh tier.
fn discard_aside(
    storage: &Storage,
    dir: &Path,
    config: TierConfig,
    error: &TierError,
) -> anyhow::Result<Tier> {
    let aside = aside_path(dir);
    tracing::warn!(%error, aside = %aside.display(), "moving the unreadable data aside and starting cold");
    let files = storage.dir.list().context("listing the data directory")?;
    std::fs::create_dir_all(&aside).with_context(|| format!("creating {}", aside.display()))?;
    for name in files {
        std::fs::rename(dir.join(&name), aside.join(&name))
            .with_context(|| format!("moving {name} aside"))?;
    }
    storage.base.clear()?;
    Ok(Tier::open(
        storage.dir.clone(),
        storage.base.clone(),
        config,
    )?)
}

fn is_corruption(error: &TierError) -> bool {
    use ringkv_store::recovery::RecoveryError;
    use ringkv_store::wal::WalError;
    matches!(
        error,
        TierError::Manifest(_)
            | TierError::Base(ringkv_store::base_image::BaseError::Corrupt { .. })
            | TierError::Wal(WalError::Corrupt { .. } | WalError::Record { .. })
            | TierError::Recovery(
                RecoveryError::Wal(WalError::Corrupt { .. } | WalError::Record { .. })
                    | RecoveryError::Value { .. }
                    | RecoveryError::Base(ringkv_store::base_image::BaseError::Corrupt { .. })
            )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_appended_is_durable_and_a_failed_write_is_not() {
        let signal = DurableSignal::default();
        assert_eq!(signal.wait(0).ok(), Some(true), "nothing to wait for");
        let mut pending = signal.wait(3).expect_err("LSN 3 is not synced yet");
        signal.advanced(2, 0);
        assert!(
            pending.try_recv().is_err(),
            "LSN 3 still waits after a sync to 2"
        );
        signal.advanced(3, 0);
        assert_eq!(pending.try_recv().ok(), Some(true));
        signal.advanced(3, 5);
        assert_eq!(
            signal.wait(4).ok(),
            Some(false),
            "LSN 4 was lost by the disk"
        );
        assert_eq!(signal.wait(0).ok(), Some(true));
    }
}
