//! The persistence tier of a store, put together: the change log appended under the shard
//! locks, the WAL it feeds, the sled base image that checkpoints keep, recovery, and
//! store mode's fault-ins. The node (and the embedded cache) hold one of these.
//!
//! Order of use: [`Tier::open`], [`Tier::recover`] into an empty store, [`Tier::start`]
//! (attaches the log and starts the threads), then [`Tier::shutdown`] on a clean stop.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::base_image::{BaseError, BaseImage, BaseKv};
use crate::change_log::{ChangeLog, LogLimits};
use crate::change_marks::CheckpointSource;
use crate::checkpoint::{CheckpointConfig, CheckpointResult, Checkpoints, Manifest, SpillQueue};
use crate::data_dir::DataDir;
use crate::recovery::{RecoveryError, RecoveryProgress, RecoveryReport, recover};
use crate::store::Store;
use crate::value::Value;
use crate::wal::{DurableWatch, Wal, WalConfig, WalError, WalScan, WalStatus};

/// Where a tier keeps its files: the WAL and manifest, and the base image's store.
#[derive(Clone)]
pub struct Storage {
    /// WAL segments and the manifest.
    pub dir: Arc<dyn DataDir>,
    /// The base image's raw store.
    pub base: Arc<dyn BaseKv>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// A directory on disk: WAL segments and the manifest in it, sled in `base/` with a
    /// page cache of `cache_bytes`.
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Storage, TierError> {
        let dir = crate::data_dir::DiskDir::open(path).map_err(|source| {
            TierError::Wal(WalError::Io {
                file: path.display().to_string(),
                source,
            })
        })?;
        let base = crate::base_image::SledKv::open(&path.join("base"), cache_bytes)?;
        Ok(Storage {
            dir: Arc::new(dir),
            base: Arc::new(base),
        })
    }

    /// Everything in memory (tests).
    pub fn memory() -> Storage {
        Storage {
            dir: Arc::new(crate::data_dir::MemoryDir::default()),
            base: Arc::new(crate::base_image::MemoryKv::default()),
        }
    }
}

/// What eviction means for the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TierMode {
    /// Memory is the data set; eviction deletes.
    #[default]
    Cache,
    /// Disk is the data set and memory its cache: eviction drops a value from memory
    /// only, and a read faults it back in.
    Store,
}

/// Tunables of a tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct TierConfig {
    /// The log threads.
    pub wal: WalConfig,
    /// Checkpoints.
    pub checkpoint: CheckpointConfig,
    /// Cache or store mode.
    pub mode: TierMode,
    /// The change log's memory bounds.
    pub log_limits: LogLimits,
    /// Store mode: bytes of evicted values waiting for the base image before eviction
    /// waits (0: 64 MiB).
    pub spill_limit: usize,
}

/// A tier that cannot open, recover or start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// The manifest is unreadable.
    #[error("{0}")]
    Manifest(String),
    /// The WAL is unreadable or cannot be written.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The base image is unreadable.
    #[error(transparent)]
    Base(#[from] BaseError),
    /// Recovery failed.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// The tier was used out of order.
    #[error("the persistence tier is {0}")]
    State(&'static str),
}

struct Running {
    /// The node's keyspace (absent for an embedded cache).
    store: Option<Arc<Store>>,
    log: Arc<ChangeLog>,
    wal: Arc<Wal>,
    checkpoints: Arc<Checkpoints>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A store's persistence tier.
pub struct Tier {
    dir: Arc<dyn DataDir>,
    base: Arc<BaseImage>,
    config: TierConfig,
    manifest: Manifest,
    progress: RecoveryProgress,
    recovered: Mutex<Option<(RecoveryReport, WalScan)>>,
    report: Mutex<RecoveryReport>,
    running: OnceLock<Running>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("dir", &self.dir)
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

impl Tier {
    /// Opens a tier over a directory (WAL and manifest) and a base image store. Base image
    /// layouts no manifest names (a crash during a relayout) are dropped.
    pub fn open(
        dir: Arc<dyn DataDir>,
        kv: Arc<dyn BaseKv>,
        config: TierConfig,
    ) -> Result<Tier, TierError> {
        let manifest = Manifest::read(&*dir)
            .map_err(TierError::Manifest)?
            .unwrap_or_default();
        let base = Arc::new(BaseImage::new(kv));
        for generation in base.generations()? {
            if generation != manifest.layout.generation {
                tracing::info!(generation, "dropping an unfinished base image layout");
                base.drop_generation(generation)?;
            }
        }
        Ok(Tier {
            dir,
            base,
            config,
            manifest,
            progress: RecoveryProgress::default(),
            recovered: Mutex::new(None),
            report: Mutex::new(RecoveryReport::default()),
            running: OnceLock::new(),
        })
    }

    /// Loads the base image and replays the WAL into `store`, which must be empty and have
    /// no change log attached (blocking).
    pub fn recover(&self, store: &Store, now: u64) -> Result<RecoveryReport, TierError> {
        self.progress.started_unix.store(now / 1000, Relaxed);
        let partial = self.config.mode == TierMode::Store;
        let (report, scan) = recover(
            &*self.dir,
            &self.base,
            &self.manifest,
            store,
            partial,
            now,
            &self.progress,
        )?;
        if let Some((last, next)) = report.gap {
            tracing::error!(
                last,
                next,
                "the WAL lost records while the node last ran (its disk failed); recovered up to the loss"
            );
        }
        if let Some((file, offset)) = &report.torn {
            tracing::warn!(%file, offset, "cut a torn WAL tail (a crash mid-write): unacknowledged writes at most");
        }
        // The scan leaves sled holding the pages it read; the first checkpoint releases
        // them. (Reopening sled here, on the start path, waited on its own lock for
        // seconds on a loaded machine: sled frees its old file handles lazily.)
        *self.report.lock() = report.clone();
        *self.recovered.lock() = Some((report.clone(), scan));
        Ok(report)
    }

    /// Attaches the change log to `store` and starts the log and checkpoint threads.
    pub fn start(&self, store: Arc<Store>, watch: Arc<dyn DurableWatch>) -> Result<(), TierError> {
        let spill = (self.config.mode == TierMode::Store).then(|| {
            let limit = match self.config.spill_limit {
                0 => 64 << 20,
                n => n,
            };
            Arc::new(SpillQueue::new(limit))
        });
        let log = self.start_threads(store.clone(), Some(store.clone()), spill.clone(), watch)?;
        if !store.attach_change_log(log) {
            return Err(TierError::State(
                "attached to a store that already has a log",
            ));
        }
        if let Some(spill) = &spill {
            store.attach_eviction_spill(spill.clone());
            // The tail may have brought back more than maxmemory: spill it now that the
            // spill queue is attached and drained.
            let _ = store.ensure_memory(self.progress.started_unix.load(Relaxed) * 1000);
        }
        Ok(())
    }

    /// Starts the log and checkpoint threads for another keeper of keys (the embedded
    /// cache), which appends its own records to the returned log.
    pub fn start_source(
        &self,
        source: Arc<dyn CheckpointSource>,
        watch: Arc<dyn DurableWatch>,
    ) -> Result<Arc<ChangeLog>, TierError> {
        self.start_threads(source, None, None, watch)
    }

    fn start_threads(
        &self,
        source: Arc<dyn CheckpointSource>,
        store: Option<Arc<Store>>,
        spill: Option<Arc<SpillQueue>>,
        watch: Arc<dyn DurableWatch>,
    ) -> Result<Arc<ChangeLog>, TierError> {
        let (report, scan) = self
            .recovered
            .lock()
            .take()
            .ok_or(TierError::State("not recovered"))?;
        let log = Arc::new(ChangeLog::new(report.last_lsn + 1, self.config.log_limits));
        let wal = Arc::new(Wal::start(
            self.dir.clone(),
            log.clone(),
            scan,
            self.config.wal,
            watch,
        )?);
        let checkpoints = Arc::new(Checkpoints::new(
            source,
            log.clone(),
            self.base.clone(),
            self.dir.clone(),
            self.manifest,
            spill,
            self.config.checkpoint,
        ));
        let thread = {
            let checkpoints = checkpoints.clone();
            let wal = wal.clone();
            std::thread::Builder::new()
                .name("ringkv-checkpoint".into())
                .spawn(move || checkpoints.run(&wal))
                .map_err(|e| {
                    TierError::Wal(WalError::Io {
                        file: "the checkpoint thread".into(),
                        source: e,
                    })
                })?
        };
        let running = Running {
            store,
            log: log.clone(),
            wal,
            checkpoints,
            thread: Mutex::new(Some(thread)),
        };
        self.running
            .set(running)
            .map_err(|_| TierError::State("started twice"))?;
        Ok(log)
    }

    fn running(&self) -> Option<&Running> {
        self.running.get()
    }

    /// What the last recovery did.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.report.lock().clone()
    }

    /// How far a running recovery is.
    pub fn recovery_progress(&self) -> &RecoveryProgress {
        &self.progress
    }

    /// The change log (once started).
    pub fn log(&self) -> Option<&Arc<ChangeLog>> {
        self.running().map(|r| &r.log)
    }

    /// The WAL's counters (once started).
    pub fn wal_status(&self) -> Option<&WalStatus> {
        self.running().map(|r| r.wal.status())
    }

    /// WAL bytes after the last checkpoint.
    pub fn wal_bytes_since_checkpoint(&self) -> u64 {
        self.running().map_or(0, |r| {
            r.wal.bytes_after(r.checkpoints.manifest().checkpoint_lsn)
        })
    }

    /// The checkpoints (once started).
    pub fn checkpoints(&self) -> Option<&Checkpoints> {
        self.running().map(|r| &*r.checkpoints)
    }

    /// The manifest as of the last checkpoint.
    pub fn manifest(&self) -> Manifest {
        self.running()
            .map_or(self.manifest, |r| r.checkpoints.manifest())
    }

    /// Bytes the base image holds on disk, where known.
    pub fn base_disk_bytes(&self) -> Option<u64> {
        self.base.kv().size_on_disk()
    }

    /// Asks for a checkpoint; `done` runs once one that started after this call ends.
    pub fn request_checkpoint(&self, done: Option<Box<dyn FnOnce(CheckpointResult) + Send>>) {
        match self.running() {
            Some(running) => running.checkpoints.request(done),
            None => {
                if let Some(done) = done {
                    done(Err("the persistence tier is not running".into()));
                }
            }
        }
    }

    /// Waits (bounded) until the log thread has written everything appended so far, then
    /// syncs it; the error when some of it could not be written.
    pub fn flush(&self) -> Result<u64, TierError> {
        let running = self.running().ok_or(TierError::State("not running"))?;
        let target = running.log.last_lsn();
        running.wal.drain(std::time::Duration::from_secs(10));
        let status = running.wal.status();
        if status.failed_lsn.load(Relaxed) >= target && target > 0 {
            return Err(TierError::Wal(WalError::Io {
                file: "the WAL".into(),
                source: std::io::Error::other(
                    status
                        .last_error()
                        .unwrap_or_else(|| "a write failed".into()),
                ),
            }));
        }
        Ok(running.wal.sync_now()?)
    }

    /// Syncs the WAL now; the durable LSN.
    pub fn sync_now(&self) -> Result<u64, TierError> {
        let running = self.running().ok_or(TierError::State("not running"))?;
        Ok(running.wal.sync_now()?)
    }

    /// Store mode: reads an evicted key back (the spill queue first, then the base
    /// image), or `None`. Blocking.
    pub fn fault_in(&self, key: &[u8], now: u64) -> Result<Option<FaultedIn>, TierError> {
        let Some(running) = self.running() else {
            return Ok(None);
        };
        let checkpoints = &running.checkpoints;
        // Anything stamped before the last FLUSHALL is gone, wherever it still sits.
        let cleared = running.store.as_ref().map_or(0, |s| s.last_clear());
        if let Some(spill) = &checkpoints.spill
            && let Some(entry) = spill.take(key)
        {
            let gone = entry.stamp < cleared
                || entry
                    .state
                    .as_ref()
                    .is_none_or(|&(_, deadline)| deadline != 0 && deadline <= now);
            if gone {
                if entry.state.is_some() {
                    // The base image must still learn this state, or an older one resurfaces.
                    crate::store::EvictionSpill::spill(&**spill, entry);
                }
                return Ok(None);
            }
            return Ok(entry
                .state
                .and_then(|(value, deadline)| faulted(value, deadline, now, true)));
        }
        let layout = checkpoints.layout.read();
        let found = self
            .base
            .lookup(*layout, key)?
            .filter(|f| f.stamp >= cleared);
        Ok(found.and_then(|found| faulted(found.value, found.deadline, now, false)))
    }

    /// Writes what the log holds, syncs it, finishes or stops the checkpoint thread.
    pub fn shutdown(&self) -> Result<(), TierError> {
        let Some(running) = self.running() else {
            return Ok(());
        };
        running.checkpoints.stop();
        if let Some(thread) = running.thread.lock().take() {
            // The embedded cache may be dropped on the checkpoint thread itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        running.wal.shutdown()?;
        Ok(())
    }
}

/// A value read back by [`Tier::fault_in`].
#[derive(Debug, Clone, PartialEq)]
pub struct FaultedIn {
    /// The value.
    pub value: Value,
    /// Unix ms deadline, 0 for none.
    pub deadline: u64,
    /// It came from the spill queue: the base image may not hold it yet.
    pub changed: bool,
}

fn faulted(bytes: Vec<u8>, deadline: u64, now: u64, changed: bool) -> Option<FaultedIn> {
    if deadline != 0 && deadline <= now {
        return None;
    }
    Value::from_persisted(&bytes).map(|value| FaultedIn {
        value,
        deadline,
        changed,
    })
}

#[cfg(test)]
mod tests;
