//! The persistence tier behind the in-memory keyspace: our own narrow [`Persist`] trait
//! (apply a batch of puts and deletes, get, scan for recovery, flush to disk) with sled,
//! in-memory and fault-injecting implementations, and the [`PersistWriter`], a thread fed
//! by a bounded channel that applies changes in groups so callers never wait on the disk
//! (or on sled) unless they ask to. Records carry absolute deadlines (Unix ms): sled keeps
//! no TTL, so recovery drops what expired while the process was down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A persistence failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The data directory could not be opened.
    #[error("cannot open data directory {path}: {cause}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// What the backend said.
        cause: String,
    },
    /// A write, read or flush failed (disk full, I/O error, injected fault).
    #[error("persistence I/O failed: {0}")]
    Io(String),
    /// A stored record does not decode.
    #[error("corrupt record for key {key:?}: {cause}")]
    Corrupt {
        /// The key (lossy text).
        key: String,
        /// What is wrong.
        cause: &'static str,
    },
    /// The writer thread is gone.
    #[error("the persistence writer has stopped")]
    WriterStopped,
}

/// One stored value: the encoded value and its absolute deadline (Unix ms, 0 = none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value, encoded by the owner of the tier.
    pub value: Vec<u8>,
    /// Unix milliseconds after which the value is not served; 0 for no expiry.
    pub expires_at: u64,
}

const RECORD_VERSION: u8 = 1;

impl Stored {
    /// `[version][expires_at: u64 LE][value]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.value.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// The inverse of [`Stored::encode`].
    pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Stored, PersistError> {
        let corrupt = |cause| PersistError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            cause,
        };
        let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty record"))?;
        if version != RECORD_VERSION {
            return Err(corrupt("unknown record version"));
        }
        let (deadline, value) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("truncated header"))?;
        Ok(Stored {
            value: value.to_vec(),
            expires_at: u64::from_le_bytes(*deadline),
        })
    }

    /// True when the deadline has passed at `now` (Unix ms).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }
}

/// One change to apply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store (or replace) a key.
    Put(Vec<u8>, Stored),
    /// Remove a key.
    Delete(Vec<u8>),
    /// Remove every key (FLUSHALL).
    Clear,
}

/// A durable key-value backend. Implementations must apply a batch atomically or not at
/// all, and in order.
pub trait Persist: Send + Sync + std::fmt::Debug {
    /// Applies puts and deletes, in order.
    fn apply(&self, batch: &[Change]) -> Result<(), PersistError>;
    /// One key.
    fn get(&self, key: &[u8]) -> Result<Option<Stored>, PersistError>;
    /// Every key, for recovery; stops at the first error.
    fn scan(&self, visit: &mut dyn FnMut(&[u8], Stored)) -> Result<(), PersistError>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), PersistError>;
    /// Bytes on disk, where the backend knows.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}

/// sled 0.34 behind [`Persist`].
#[derive(Debug, Clone)]
pub struct SledPersist {
    db: sled::Db,
}

fn io(error: sled::Error) -> PersistError {
    PersistError::Io(error.to_string())
}

impl SledPersist {
    /// Opens (or creates) the database in `path`.
    pub fn open(path: &Path) -> Result<Self, PersistError> {
        let db = sled::Config::new()
            .path(path)
            // Our writer decides when to fsync; sled's own timer would only add syncs.
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| PersistError::Open {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?;
        Ok(SledPersist { db })
    }
}

impl Persist for SledPersist {
    fn apply(&self, batch: &[Change]) -> Result<(), PersistError> {
        // A Clear splits the batch: what comes before it is moot, what comes after applies.
        let start = batch
            .iter()
            .rposition(|c| *c == Change::Clear)
            .map_or(0, |i| i + 1);
        if start > 0 {
            self.db.clear().map_err(io)?;
        }
        let mut sled_batch = sled::Batch::default();
        for change in &batch[start..] {
            match change {
                Change::Put(key, stored) => sled_batch.insert(key.as_slice(), stored.encode()),
                Change::Delete(key) => sled_batch.remove(key.as_slice()),
                Change::Clear => {}
            }
        }
        self.db.apply_batch(sled_batch).map_err(io)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Stored>, PersistError> {
        match self.db.get(key).map_err(io)? {
            Some(bytes) => Stored::decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], Stored)) -> Result<(), PersistError> {
        for item in self.db.iter() {
            let (key, bytes) = item.map_err(io)?;
            visit(&key, Stored::decode(&key, &bytes)?);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), PersistError> {
        self.db.flush().map(|_| ()).map_err(io)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}

/// An in-memory backend (tests, and a tier that only needs to survive within a process).
#[derive(Debug, Default)]
pub struct MemoryPersist {
    map: Mutex<BTreeMap<Vec<u8>, Stored>>,
}

impl Persist for MemoryPersist {
    fn apply(&self, batch: &[Change]) -> Result<(), PersistError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for change in batch {
            match change {
                Change::Put(key, stored) => {
                    map.insert(key.clone(), stored.clone());
                }
                Change::Delete(key) => {
                    map.remove(key);
                }
                Change::Clear => map.clear(),
            }
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Stored>, PersistError> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], Stored)) -> Result<(), PersistError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (key, stored) in map {
            visit(&key, stored);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), PersistError> {
        Ok(())
    }
}

/// Wraps a backend and fails its writes or flushes on command, as a full or broken disk
/// would.
#[derive(Debug)]
pub struct FaultyPersist<P> {
    inner: P,
    fail_writes: AtomicBool,
    fail_flushes: AtomicBool,
}

impl<P: Persist> FaultyPersist<P> {
    /// A healthy wrapper around `inner`.
    pub fn new(inner: P) -> Self {
        FaultyPersist {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_flushes: AtomicBool::new(false),
        }
    }

    /// Makes every write fail (`true`) or succeed again (`false`).
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Relaxed);
    }

    /// Makes every flush fail (`true`) or succeed again (`false`).
    pub fn fail_flushes(&self, fail: bool) {
        self.fail_flushes.store(fail, Relaxed);
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: Persist> Persist for FaultyPersist<P> {
    fn apply(&self, batch: &[Change]) -> Result<(), PersistError> {
        if self.fail_writes.load(Relaxed) {
            return Err(PersistError::Io(
                "No space left on device (injected)".into(),
            ));
        }
        self.inner.apply(batch)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Stored>, PersistError> {
        self.inner.get(key)
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], Stored)) -> Result<(), PersistError> {
        self.inner.scan(visit)
    }

    fn flush(&self) -> Result<(), PersistError> {
        if self.fail_flushes.load(Relaxed) {
            return Err(PersistError::Io("fsync failed (injected)".into()));
        }
        self.inner.flush()
    }
}

pub use crate::wal::FsyncPolicy;

/// Called once a change is applied (and, under [`FsyncPolicy::Always`], durable).
pub type Ack = Box<dyn FnOnce(Result<(), PersistError>) + Send>;

enum Input {
    Change(Change, Option<Ack>),
    /// Apply and flush everything queued before this, then acknowledge.
    Flush(Ack),
    /// Apply everything queued before this (no fsync), then acknowledge: after it, a read
    /// of the backend sees every change sent before.
    Barrier(Ack),
}

/// What the writer has done, for INFO and for refusing writes while the disk fails.
#[derive(Debug, Default)]
pub struct WriterStatus {
    /// False after a failed write or flush, true again after the next success.
    pub healthy: AtomicBool,
    /// Changes applied.
    pub applied: AtomicU64,
    /// Groups applied (one backend call each).
    pub groups: AtomicU64,
    /// Flushes done.
    pub flushes: AtomicU64,
    /// Failed writes or flushes.
    pub failures: AtomicU64,
    /// Unix seconds of the last successful flush.
    pub last_flush_unix: AtomicU64,
    /// Changes accepted but not yet applied.
    pub pending: AtomicU64,
    /// Changes applied but not yet made durable by a flush.
    pub unflushed: AtomicU64,
    last_error: Mutex<Option<PersistError>>,
}

impl WriterStatus {
    /// The last failure, until the next success.
    pub fn last_error(&self) -> Option<PersistError> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, result: &Result<(), PersistError>) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                self.healthy.store(true, Relaxed);
                *last = None;
            }
            Err(error) => {
                self.healthy.store(false, Relaxed);
                self.failures.fetch_add(1, Relaxed);
                if last.is_none() {
                    tracing::warn!(%error, "persistence write failed; serving from memory");
                }
                *last = Some(error.clone());
            }
        }
    }
}

/// A key no client can have written (RESP keys may hold any byte, but the writer deletes
/// this one only): deleting it is a real write that proves the disk works.
const PROBE_KEY: &[u8] = b"\0ringkv\0disk-probe";

/// How often `appendfsync no` still flushes.
const NO_FSYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Most changes applied in one backend call.
const GROUP: usize = 4096;

/// The writer thread: changes go in through a bounded channel (a full channel makes the
/// sender wait: backpressure, not unbounded memory) and come out in groups.
#[derive(Debug)]
pub struct PersistWriter {
    tx: Option<SyncSender<Input>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<WriterStatus>,
    policy: FsyncPolicy,
}

impl PersistWriter {
    /// Starts the writer thread over `backend`.
    pub fn spawn(backend: Arc<dyn Persist>, policy: FsyncPolicy, capacity: usize) -> Self {
        let (tx, rx) = sync_channel(capacity.max(1));
        let status = Arc::new(WriterStatus {
            healthy: AtomicBool::new(true),
            ..WriterStatus::default()
        });
        let thread_status = status.clone();
        let thread = std::thread::Builder::new()
            .name("ringkv-persist".into())
            .spawn(move || run(backend, policy, rx, thread_status))
            .ok();
        PersistWriter {
            tx: Some(tx),
            thread,
            status,
            policy,
        }
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Counters and health.
    pub fn status(&self) -> &Arc<WriterStatus> {
        &self.status
    }

    /// Queues a change, waiting while the queue is full.
    pub fn send(&self, change: Change, ack: Option<Ack>) -> Result<(), PersistError> {
        self.status.pending.fetch_add(1, Relaxed);
        let sent = self
            .tx
            .as_ref()
            .ok_or(PersistError::WriterStopped)?
            .send(Input::Change(change, ack));
        sent.map_err(|_| PersistError::WriterStopped)
    }

    /// Applies and flushes everything queued so far; `ack` runs when it is durable.
    pub fn flush(&self, ack: Ack) -> Result<(), PersistError> {
        let tx = self.tx.as_ref().ok_or(PersistError::WriterStopped)?;
        tx.send(Input::Flush(ack))
            .map_err(|_| PersistError::WriterStopped)
    }

    /// Applies everything queued so far (without forcing it to disk); `ack` runs then.
    pub fn barrier(&self, ack: Ack) -> Result<(), PersistError> {
        let tx = self.tx.as_ref().ok_or(PersistError::WriterStopped)?;
        tx.send(Input::Barrier(ack))
            .map_err(|_| PersistError::WriterStopped)
    }

    /// Flushes everything and waits for it (blocking: not on an async runtime).
    pub fn flush_blocking(&self) -> Result<(), PersistError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.flush(Box::new(move |result| {
            let _ = tx.send(result);
        }))?;
        rx.recv().map_err(|_| PersistError::WriterStopped)?
    }
}

impl Drop for PersistWriter {
    /// Closes the channel; the thread applies and flushes what is queued, then exits.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    backend: Arc<dyn Persist>,
    policy: FsyncPolicy,
    rx: Receiver<Input>,
    status: Arc<WriterStatus>,
) {
    let mut last_flush = Instant::now();
    let mut dirty = false;
    // A write that failed since the last flush: that flush must not report success.
    let mut failed_write: Option<PersistError> = None;
    let mut group: Vec<Change> = Vec::with_capacity(GROUP);
    let mut acks: Vec<Ack> = Vec::new();
    let mut flush_acks: Vec<Ack> = Vec::new();
    loop {
        // Wake at least once a second so `everysec` flushes an idle tail.
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let idle = first.is_none();
        let mut next = first;
        while let Some(input) = next {
            match input {
                Input::Change(change, ack) => {
                    group.push(change);
                    acks.extend(ack);
                }
                Input::Flush(ack) => flush_acks.push(ack),
                Input::Barrier(ack) => acks.push(ack),
            }
            next = if group.len() < GROUP {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let mut result = Ok(());
        let mut attempted = false;
        // Whether this round proved that writes work: a flush alone does not.
        let mut wrote = false;
        if !group.is_empty() {
            attempted = true;
            wrote = true;
            result = backend.apply(&group);
            status.pending.fetch_sub(group.len() as u64, Relaxed);
            match &result {
                Ok(()) => {
                    status.applied.fetch_add(group.len() as u64, Relaxed);
                    status.unflushed.fetch_add(group.len() as u64, Relaxed);
                    status.groups.fetch_add(1, Relaxed);
                    dirty = true;
                }
                Err(error) => failed_write = Some(error.clone()),
            }
            group.clear();
        }
        // A failed disk is probed while idle, so a node that refuses writes (and so writes
        // nothing) still notices when the disk works again.
        if !attempted && idle && !status.healthy.load(Relaxed) {
            attempted = true;
            wrote = true;
            result = backend
                .apply(&[Change::Delete(PROBE_KEY.to_vec())])
                .and_then(|()| backend.flush());
        }
        let flush_due = match policy {
            FsyncPolicy::Always => dirty,
            FsyncPolicy::EverySec => dirty && last_flush.elapsed() >= Duration::from_secs(1),
            // sled keeps unflushed writes in its own buffers, not the OS's: without a flush
            // they would wait for the next one indefinitely. Flush about as often as the
            // kernel writes back dirty pages.
            FsyncPolicy::No => dirty && last_flush.elapsed() >= NO_FSYNC_INTERVAL,
        } || !flush_acks.is_empty();
        if result.is_ok() && flush_due {
            attempted = true;
            result = backend.flush();
            if result.is_ok() {
                dirty = false;
                status.unflushed.store(0, Relaxed);
                last_flush = Instant::now();
                status.flushes.fetch_add(1, Relaxed);
                status.last_flush_unix.store(unix_seconds(), Relaxed);
            }
        }
        if attempted && (wrote || result.is_err()) {
            status.record(&result);
        }
        for ack in acks.drain(..) {
            ack(result.clone());
        }
        if !flush_acks.is_empty() {
            let flushed = match failed_write.take() {
                Some(error) => Err(error),
                None => result.clone(),
            };
            for ack in flush_acks.drain(..) {
                ack(flushed.clone());
            }
        }
    }
    let result = if dirty { backend.flush() } else { Ok(()) };
    status.record(&result);
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, expires_at: u64) -> Change {
        Change::Put(
            key.as_bytes().to_vec(),
            Stored {
                value: value.as_bytes().to_vec(),
                expires_at,
            },
        )
    }

    fn collect(p: &dyn Persist) -> Vec<(Vec<u8>, Stored)> {
        let mut all = Vec::new();
        p.scan(&mut |k, s| all.push((k.to_vec(), s))).unwrap();
        all
    }

    #[test]
    fn records_round_trip_and_garbage_is_reported_not_panicked_on() {
        let stored = Stored {
            value: b"v".to_vec(),
            expires_at: 1234,
        };
        assert_eq!(Stored::decode(b"k", &stored.encode()), Ok(stored));
        assert!(matches!(
            Stored::decode(b"k", b""),
            Err(PersistError::Corrupt { .. })
        ));
        assert!(matches!(
            Stored::decode(b"k", &[1, 2, 3]),
            Err(PersistError::Corrupt { .. })
        ));
        assert!(matches!(
            Stored::decode(b"k", &[9; 20]),
            Err(PersistError::Corrupt { .. })
        ));
    }

    #[test]
    fn sled_applies_batches_in_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sled = SledPersist::open(dir.path()).unwrap();
            sled.apply(&[
                put("a", "1", 0),
                put("b", "2", 99),
                put("a", "3", 0),
                Change::Delete(b"b".to_vec()),
            ])
            .unwrap();
            sled.flush().unwrap();
        }
        let sled = SledPersist::open(dir.path()).unwrap();
        assert_eq!(sled.get(b"a").unwrap().unwrap().value, b"3");
        assert_eq!(sled.get(b"b").unwrap(), None);
        assert_eq!(collect(&sled).len(), 1);
    }

    #[test]
    fn a_directory_that_cannot_be_opened_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let error = SledPersist::open(&file).unwrap_err();
        assert!(error.to_string().contains("not-a-dir"), "{error}");
    }

    #[test]
    fn the_writer_groups_changes_and_acknowledges_after_flush() {
        let memory = Arc::new(MemoryPersist::default());
        let writer = PersistWriter::spawn(memory.clone(), FsyncPolicy::Always, 1024);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            writer
                .send(
                    put(&format!("k{i}"), "v", 0),
                    Some(Box::new(move |r| tx.send(r).unwrap())),
                )
                .unwrap();
        }
        for _ in 0..100 {
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
        }
        assert_eq!(collect(memory.as_ref()).len(), 100);
        let status = writer.status().clone();
        assert_eq!(status.applied.load(Relaxed), 100);
        assert!(status.groups.load(Relaxed) <= 100);
        assert!(status.flushes.load(Relaxed) >= 1);
        assert_eq!(status.pending.load(Relaxed), 0);
    }

    #[test]
    fn a_failing_disk_is_reported_and_recovery_is_automatic() {
        let faulty = Arc::new(FaultyPersist::new(MemoryPersist::default()));
        let writer = PersistWriter::spawn(faulty.clone(), FsyncPolicy::EverySec, 16);
        faulty.fail_writes(true);
        writer.send(put("a", "1", 0), None).unwrap();
        assert!(writer.flush_blocking().is_err());
        assert!(!writer.status().healthy.load(Relaxed));
        assert!(writer.status().last_error().is_some());
        faulty.fail_writes(false);
        writer.send(put("b", "2", 0), None).unwrap();
        assert_eq!(writer.flush_blocking(), Ok(()));
        assert!(writer.status().healthy.load(Relaxed));
        assert_eq!(faulty.inner().get(b"b").unwrap().unwrap().value, b"2");
    }
}
