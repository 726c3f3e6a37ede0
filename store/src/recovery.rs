//! Recovery: the base image and the WAL after its checkpoint, back into a store.
//!
//! 1. A first pass over the WAL tail notes which keys it touches and where its last
//!    FLUSHALL is (nothing before that survives).
//! 2. The base image loads on two threads (cache mode: all of it; store mode: until
//!    `maxmemory`, the rest faults in later). Expired keys are not loaded; the stamps of keys
//!    the tail touches are kept.
//! 3. The tail replays in LSN order; a record the base image already reflects (LSN at or
//!    below the key's stamp) is skipped; an atomic group whose Commit never arrived is
//!    dropped.
//! 4. Keys whose deadline passed while the node was down are swept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::base_image::{BaseError, BaseImage, BaseValue, Layout};
use crate::change_log::{GROUPED, Record, RecordKind};
use crate::checkpoint::Manifest;
use crate::data_dir::DataDir;
use crate::replay::apply_record;
use crate::store::Store;
use crate::value::Value;
use crate::wal::{WalError, WalScan, scan};

/// What recovery did, for the log and INFO.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Keys loaded from the base image.
    pub base_keys: u64,
    /// Base image keys not loaded because their deadline had passed.
    pub expired_while_down: u64,
    /// WAL records replayed.
    pub replayed: u64,
    /// WAL records skipped because the base image already reflects them.
    pub skipped: u64,
    /// Records of atomic groups cut off by a crash, dropped.
    pub dropped_in_groups: u64,
    /// The last LSN recovered; the log continues after it.
    pub last_lsn: u64,
    /// A torn WAL tail was cut: its segment and offset.
    pub torn: Option<(String, u64)>,
    /// Records lost while the node ran (the disk failed): last LSN before, first after.
    pub gap: Option<(u64, u64)>,
    /// Milliseconds the recovery took.
    pub millis: u64,
}

/// How far a running recovery is, as INFO's `loading_*` fields show it.
#[derive(Debug, Default)]
pub struct RecoveryProgress {
    /// Bytes to read: the base image and the WAL tail.
    pub total_bytes: AtomicU64,
    /// Bytes read so far.
    pub loaded_bytes: AtomicU64,
    /// Unix seconds when it started.
    pub started_unix: AtomicU64,
}

/// A recovery that cannot complete: serving a partial keyspace as if it were whole would
/// lose data silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The WAL is unreadable.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The base image is unreadable.
    #[error(transparent)]
    Base(#[from] BaseError),
    /// A stored value does not decode.
    #[error("the base image holds a value for key {key:?} that does not decode")]
    Value {
        /// The key (lossy text).
        key: String,
    },
}

/// One owned record of an atomic group waiting for its Commit.
struct Held {
    lsn: u64,
    kind: RecordKind,
    slot: u16,
    key: Vec<u8>,
    body: Vec<u8>,
}

/// Replays records in order, skipping what the base image holds.
struct Replayer<'a> {
    store: &'a Store,
    base: &'a BaseImage,
    layout: Layout,
    now: u64,
    /// Store mode: keys not in memory may be in the base image.
    partial: bool,
    stamps: HashMap<Box<[u8]>, u64>,
    looked_up: HashSet<Box<[u8]>>,
    /// Store mode: keys the base image holds that are not loaded yet.
    in_base: HashSet<Box<[u8]>>,
    cleared_at: u64,
    group: Vec<Held>,
    report: RecoveryReport,
}

impl Replayer<'_> {
    fn record(&mut self, file: &str, record: Record<'_>) -> Result<(), RecoveryError> {
        if record.flags & GROUPED != 0 {
            self.group.push(Held {
                lsn: record.lsn,
                kind: record.kind,
                slot: record.slot,
                key: record.key.to_vec(),
                body: record.body.to_vec(),
            });
            return Ok(());
        }
        if record.kind == RecordKind::Commit {
            for held in std::mem::take(&mut self.group) {
                let record = Record {
                    lsn: held.lsn,
                    kind: held.kind,
                    flags: 0,
                    slot: held.slot,
                    key: &held.key,
                    body: &held.body,
                };
                self.apply(file, &record)?;
            }
            return Ok(());
        }
        self.apply(file, &record)
    }

    fn apply(&mut self, file: &str, record: &Record<'_>) -> Result<(), RecoveryError> {
        if record.lsn <= self.cleared_at {
            return Ok(());
        }
        if record.kind != RecordKind::Clear {
            if self.partial && !self.looked_up.contains(record.key) {
                // Store mode: only the stamp for now; the value loads only if a record
                // the base image does not reflect must apply to it.
                self.looked_up.insert(record.key.into());
                if let Some(found) = self.base.lookup(self.layout, record.key)?
                    && found.stamp >= self.cleared_at
                {
                    self.stamps.insert(record.key.into(), found.stamp);
                    self.in_base.insert(record.key.into());
                }
            }
            if self
                .stamps
                .get(record.key)
                .is_some_and(|&s| s >= record.lsn)
            {
                self.report.skipped += 1;
                return Ok(());
            }
            if self.in_base.remove(record.key)
                && let Some(found) = self.base.lookup(self.layout, record.key)?
            {
                load(self.store, record.key, &found, self.now)?;
            }
        }
        apply_record(self.store, record, self.now).map_err(|e| WalError::Record {
            file: file.to_string(),
            lsn: record.lsn,
            detail: e.to_string(),
        })?;
        self.report.replayed += 1;
        Ok(())
    }
}

fn load(store: &Store, key: &[u8], found: &BaseValue, now: u64) -> Result<(), RecoveryError> {
    let value = Value::from_persisted(&found.value).ok_or_else(|| RecoveryError::Value {
        key: String::from_utf8_lossy(key).into_owned(),
    })?;
    store.load(key, value, found.deadline, now, false);
    Ok(())
}

/// Recovers `store` (empty, no change log attached) from the base image and the WAL in
/// `dir`. `partial` (store mode) stops loading the base image at `maxmemory`.
pub fn recover(
    dir: &dyn DataDir,
    base: &BaseImage,
    manifest: &Manifest,
    store: &Store,
    partial: bool,
    now: u64,
    progress: &RecoveryProgress,
) -> Result<(RecoveryReport, WalScan), RecoveryError> {
    let started = Instant::now();
    let from = manifest.checkpoint_lsn;
    // Pass 1: which keys the tail touches, and its last FLUSHALL.
    let mut tail_keys: HashSet<Box<[u8]>> = HashSet::new();
    let mut cleared_at = 0u64;
    let mut tail_bytes = 0u64;
    scan(dir, from, &mut |_, chunk| {
        tail_bytes += chunk.framed_len as u64;
        for record in chunk.records.flatten() {
            if record.lsn <= from {
                continue;
            }
            match record.kind {
                RecordKind::Clear => cleared_at = record.lsn,
                RecordKind::Commit => {}
                _ => {
                    if !tail_keys.contains(record.key) {
                        tail_keys.insert(record.key.into());
                    }
                }
            }
        }
        Ok(())
    })?;
    progress
        .total_bytes
        .store(manifest.base_bytes + tail_bytes, Relaxed);

    let context = Context {
        base,
        store,
        layout: manifest.layout,
        tail_keys: &tail_keys,
        cleared_at,
        partial,
        now,
        progress,
    };
    let (mut report, wal_scan) = if partial {
        // Store mode: the tail first (looking keys up in the base image as needed), then
        // the base image until maxmemory. Loading the base first would fill memory with
        // keys the tail then adds to.
        let (mut report, wal_scan) = replay_tail(dir, from, &context, HashMap::new())?;
        let (_, loaded, expired) = load_base(&context)?;
        report.base_keys += loaded;
        report.expired_while_down += expired;
        (report, wal_scan)
    } else {
        let (stamps, loaded, expired) = load_base(&context)?;
        let (mut report, wal_scan) = replay_tail(dir, from, &context, stamps)?;
        report.base_keys += loaded;
        report.expired_while_down += expired;
        (report, wal_scan)
    };
    report.last_lsn = wal_scan.last_lsn.max(from);
    report.torn = wal_scan.torn.clone();
    report.gap = wal_scan.gap;

    if cleared_at > 0 {
        // Base image entries from before the FLUSHALL were skipped, not removed.
        store.note_cleared(cleared_at);
    }
    // Pass 4: what expired while the node was down.
    while store.active_expire(now, 1 << 20).expired > 0 {}
    report.millis = started.elapsed().as_millis() as u64;
    Ok((report, wal_scan))
}

/// What the passes share.
struct Context<'a> {
    base: &'a BaseImage,
    store: &'a Store,
    layout: Layout,
    tail_keys: &'a HashSet<Box<[u8]>>,
    cleared_at: u64,
    partial: bool,
    now: u64,
    progress: &'a RecoveryProgress,
}

/// What loading (part of) the base image did: the stamps of the loaded keys the tail
/// touches, keys loaded, keys skipped as expired.
type Loaded = (HashMap<Box<[u8]>, u64>, u64, u64);

/// The base image into the store, on two threads.
fn load_base(c: &Context<'_>) -> Result<Loaded, RecoveryError> {
    let maxmemory = c.store.maxmemory();
    let buckets = c.layout.bucket_count() as u32;
    let halves = [0..buckets / 2, buckets / 2..buckets];
    let outcomes: Vec<Result<Loaded, RecoveryError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = halves
            .into_iter()
            .map(|range| {
                scope.spawn(move || {
                    let mut stamps = HashMap::new();
                    let mut loaded = 0u64;
                    let mut expired = 0u64;
                    let mut failure = None;
                    c.base.load(c.layout, range, &mut |key, found| {
                        c.progress
                            .loaded_bytes
                            .fetch_add((key.len() + found.value.len() + 24) as u64, Relaxed);
                        let touched = c.tail_keys.contains(&key);
                        if c.partial && touched {
                            // The replay already dealt with it.
                            return true;
                        }
                        if found.stamp < c.cleared_at {
                            c.store.note_base_tombstone(&key);
                            return true;
                        }
                        if found.deadline != 0 && found.deadline <= c.now && !touched {
                            c.store.note_base_tombstone(&key);
                            expired += 1;
                            return true;
                        }
                        if c.partial && maxmemory > 0 && c.store.used_memory() as u64 >= maxmemory {
                            // The rest stays in the base image; a read faults it in.
                            return false;
                        }
                        if let Err(error) = load(c.store, &key, &found, c.now) {
                            failure = Some(error);
                            return false;
                        }
                        loaded += 1;
                        if touched {
                            stamps.insert(key, found.stamp);
                        }
                        true
                    })?;
                    match failure {
                        Some(error) => Err(error),
                        None => Ok((stamps, loaded, expired)),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BaseError::Io("a loader panicked".into()).into()))
            })
            .collect()
    });
    let mut stamps = HashMap::new();
    let (mut loaded, mut expired) = (0, 0);
    for outcome in outcomes {
        let (half, l, e) = outcome?;
        stamps.extend(half);
        loaded += l;
        expired += e;
    }
    Ok((stamps, loaded, expired))
}

/// The WAL tail after `from`, in order.
fn replay_tail(
    dir: &dyn DataDir,
    from: u64,
    c: &Context<'_>,
    stamps: HashMap<Box<[u8]>, u64>,
) -> Result<(RecoveryReport, WalScan), RecoveryError> {
    let mut replayer = Replayer {
        store: c.store,
        base: c.base,
        layout: c.layout,
        now: c.now,
        partial: c.partial,
        stamps,
        looked_up: HashSet::new(),
        in_base: HashSet::new(),
        cleared_at: c.cleared_at,
        group: Vec::new(),
        report: RecoveryReport::default(),
    };
    let mut outcome = Ok(());
    let wal_scan = scan(dir, from, &mut |file, chunk| {
        c.progress
            .loaded_bytes
            .fetch_add(chunk.framed_len as u64, Relaxed);
        for record in chunk.records {
            let record = record.map_err(|e| WalError::Record {
                file: file.to_string(),
                lsn: 0,
                detail: e.to_string(),
            })?;
            if record.lsn <= from {
                continue;
            }
            if let Err(error) = replayer.record(file, record) {
                let lsn = record.lsn;
                outcome = Err(error);
                return Err(WalError::Record {
                    file: file.to_string(),
                    lsn,
                    detail: "replay failed".into(),
                });
            }
        }
        Ok(())
    });
    outcome?;
    let wal_scan = wal_scan?;
    let mut report = replayer.report;
    report.dropped_in_groups = replayer.group.len() as u64;
    Ok((report, wal_scan))
}
