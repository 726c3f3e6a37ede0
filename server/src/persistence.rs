//! The node's persistence tier: every keyspace change is written behind through the
//! store's [`ChangeSink`] into a [`PersistWriter`] (group commit on its own thread; sled
//! never runs on the async runtime), a restarted node recovers its keys and deadlines
//! before it serves, and in store mode evicted values stay on disk and fault back in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use anyhow::Context;
use ringkv_store::persist::{
    Change, FsyncPolicy, Persist, PersistError, PersistWriter, SledPersist, Stored,
};
use ringkv_store::{ChangeCause, ChangeSink, Store, Value};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::node::unix_ms;

/// Changes queued for the writer before senders wait.
const QUEUE: usize = 64 * 1024;

/// The tier of one node.
pub struct Persistence {
    backend: Arc<dyn Persist>,
    writer: PersistWriter,
    store_mode: bool,
    /// The data directory (for INFO and messages).
    pub dir: PathBuf,
    /// Values read back from disk after eviction (store mode).
    pub fault_ins: AtomicU64,
    /// Keys loaded at start.
    pub recovered: AtomicU64,
    /// Records dropped at start because they expired while the node was down.
    pub expired_while_down: AtomicU64,
    /// Milliseconds the recovery took.
    pub recovery_ms: AtomicU64,
    /// A SAVE/BGSAVE is running.
    pub saving: AtomicBool,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("dir", &self.dir)
            .field("store_mode", &self.store_mode)
            .finish_non_exhaustive()
    }
}

/// Opens the configured data directory (blocking). In cache mode with
/// `--on-corrupt-data discard`, a directory that cannot be opened is moved aside and the
/// node starts cold.
pub fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn Persist>> {
    let dir = &config.dir;
    match SledPersist::open(dir) {
        Ok(sled) => Ok(Arc::new(sled)),
        Err(error) if config.on_corrupt_data == "discard" && config.mode == "cache" => {
            let aside = aside_path(dir);
            tracing::warn!(%error, aside = %aside.display(), "moving the unreadable data directory aside and starting cold");
            std::fs::rename(dir, &aside).with_context(|| {
                format!("{error}; moving it aside to {} failed too", aside.display())
            })?;
            Ok(Arc::new(SledPersist::open(dir)?))
        }
        Err(error) => Err(error).context(
            "the persistence tier cannot start (fix the directory, choose another with --dir, \
             or in cache mode start cold with --on-corrupt-data discard)",
        ),
    }
}

fn aside_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{}", unix_ms()));
    dir.with_file_name(name)
}

impl Persistence {
    /// The tier over `backend`; its writer starts at once.
    pub fn new(backend: Arc<dyn Persist>, config: &Config) -> Self {
        Persistence {
            writer: PersistWriter::spawn(backend.clone(), config.appendfsync, QUEUE),
            backend,
            store_mode: config.mode == "store",
            dir: config.dir.clone(),
            fault_ins: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            expired_while_down: AtomicU64::new(0),
            recovery_ms: AtomicU64::new(0),
            saving: AtomicBool::new(false),
        }
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.writer.policy()
    }

    /// True in store mode.
    pub fn store_mode(&self) -> bool {
        self.store_mode
    }

    /// The writer's counters and health.
    pub fn status(&self) -> &ringkv_store::persist::WriterStatus {
        self.writer.status()
    }

    /// Bytes the backend holds on disk.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.backend.size_on_disk()
    }

    /// Changes applied but not yet made durable by a completed flush.
    pub fn changes_since_save(&self) -> u64 {
        self.status().unflushed.load(Relaxed)
    }

    /// Writes are refused (MISCONF) while the disk fails and a write must be durable:
    /// `appendfsync always`, or store mode where the disk is the only copy after eviction.
    pub fn refuses_writes(&self) -> bool {
        let durable_required = self.store_mode || self.policy() == FsyncPolicy::Always;
        durable_required && !self.status().healthy.load(Relaxed)
    }

    /// Loads every live record into `store` (blocking; before the sink is attached, so
    /// nothing is written back). In store mode, loading stops at `maxmemory`: the rest
    /// faults in on first use.
    pub fn recover(&self, store: &Store) -> Result<(), PersistError> {
        let started = Instant::now();
        let now = unix_ms();
        let maxmemory = store.maxmemory();
        let mut expired = Vec::new();
        let mut loaded = 0u64;
        let mut corrupt = None;
        self.backend.scan(&mut |key, stored| {
            if stored.expired(now) {
                expired.push(key.to_vec());
                return;
            }
            if self.store_mode && maxmemory > 0 && store.used_memory() as u64 >= maxmemory {
                return;
            }
            match Value::from_persisted(&stored.value) {
                Some(value) => {
                    store.write(key, now, |slot| slot.set(value, Some(stored.expires_at)));
                    loaded += 1;
                }
                None => {
                    corrupt.get_or_insert_with(|| String::from_utf8_lossy(key).into_owned());
                }
            }
        })?;
        if let Some(key) = corrupt {
            return Err(PersistError::Corrupt {
                key,
                cause: "value does not decode",
            });
        }
        self.expired_while_down.store(expired.len() as u64, Relaxed);
        for key in expired {
            self.writer.send(Change::Delete(key), None)?;
        }
        self.recovered.store(loaded, Relaxed);
        self.recovery_ms
            .store(started.elapsed().as_millis() as u64, Relaxed);
        Ok(())
    }

    /// Resolves once every change sent so far is durable (`appendfsync always`, SAVE).
    pub fn durable(&self) -> oneshot::Receiver<Result<(), PersistError>> {
        let (tx, rx) = oneshot::channel();
        // A stopped writer drops `tx`: the receiver then reports the failure.
        let _ = self.writer.flush(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx
    }

    /// Reads keys back from disk after eviction (store mode; blocking). Waits for the
    /// writer to apply everything queued first, so a value evicted right after its write
    /// is read as written.
    pub fn fault_in(&self, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Value, u64)>, PersistError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.writer.barrier(Box::new(move |result| {
            let _ = tx.send(result);
        }))?;
        rx.recv().map_err(|_| PersistError::WriterStopped)??;
        let now = unix_ms();
        let mut found = Vec::new();
        for key in keys {
            if let Some(stored) = self.backend.get(key)? {
                if stored.expired(now) {
                    continue;
                }
                if let Some(value) = Value::from_persisted(&stored.value) {
                    found.push((key.clone(), value, stored.expires_at));
                }
            }
        }
        Ok(found)
    }
}

impl ChangeSink for Persistence {
    fn changed(&self, key: Box<[u8]>, state: Option<(&Value, u64)>, cause: ChangeCause) {
        // Store mode keeps an evicted value on disk: memory was only its cache.
        if self.store_mode && cause == ChangeCause::Evict {
            return;
        }
        let change = match state {
            Some((value, expires_at)) => Change::Put(
                key.into_vec(),
                Stored {
                    value: value.to_persisted(),
                    expires_at,
                },
            ),
            None => Change::Delete(key.into_vec()),
        };
        // Blocks while the queue is full: backpressure instead of unbounded memory.
        if let Err(error) = self.writer.send(change, None) {
            tracing::warn!(%error, "persistence writer unavailable");
        }
    }

    fn cleared(&self) {
        let _ = self.writer.send(Change::Clear, None);
    }
}
