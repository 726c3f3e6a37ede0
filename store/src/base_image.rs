//! The base image: the keyspace as of a checkpoint, in sled. A background checkpoint
//! writes each key changed since the last one, coalesced; the WAL covers what came after.
//!
//! sled costs a full leaf clone and a log write per insert, and tens of bytes of memory per
//! item, so keys are not sled items. A key's *position* (its slot, then 18 bits of a fixed
//! hash) puts it in one of 2^bits *buckets*; a bucket (about 2 KiB) is one sled item that
//! holds its keys, each with its value, deadline and *stamp*: the last LSN its state
//! reflects, so a replayed record the base already holds is skipped. Values above 1 KiB
//! live outside the bucket in chunks of their own (keyed by key and stamp, so a new
//! version never overwrites one a bucket still names).
//!
//! The raw store is behind [`BaseKv`], with sled, in-memory and fault-injecting versions.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::change_marks::DirtyEntry;
use crate::slot::key_slot;

/// A base image that cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BaseError {
    /// The directory could not be opened.
    #[error("cannot open the base image in {path}: {cause}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// What the backend said.
        cause: String,
    },
    /// A read, write or sync failed (disk full, I/O error, injected fault).
    #[error("base image I/O failed: {0}")]
    Io(String),
    /// Stored bytes do not decode.
    #[error("corrupt base image item {item}: {detail}")]
    Corrupt {
        /// Which item (lossy text of its key).
        item: String,
        /// What is wrong.
        detail: &'static str,
    },
}

/// An ordered byte map that survives restarts: the base image's raw store.
pub trait BaseKv: Send + Sync + std::fmt::Debug {
    /// One item.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BaseError>;
    /// Stores an item.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), BaseError>;
    /// Deletes an item.
    fn remove(&self, key: &[u8]) -> Result<(), BaseError>;
    /// Items with `from <= key < to`, in key order, until `visit` returns false.
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BaseError>;
    /// Makes every write so far durable, against a power cut too.
    fn make_durable(&self) -> Result<(), BaseError>;
    /// Bytes on disk, where known.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
    /// Deletes every item (a cache-mode node starting cold over unreadable data).
    fn clear(&self) -> Result<(), BaseError>;
    /// Lets go of cached pages after a bulk read or write; the data stays.
    fn release_memory(&self) -> Result<(), BaseError> {
        Ok(())
    }
}

/// sled 0.34 as the base image's store.
#[derive(Debug)]
pub struct SledKv {
    /// Replaced by a fresh handle to let go of sled's page cache (see `release_memory`).
    db: parking_lot::RwLock<Option<sled::Db>>,
    path: PathBuf,
    cache_bytes: u64,
}

fn io(error: impl std::fmt::Display) -> BaseError {
    BaseError::Io(error.to_string())
}

/// How long an open waits for the directory's lock: it outlives a closed instance for a
/// while (sled frees its last file handles lazily; seconds on a loaded machine), so a
/// reopen in the same process waits for it, boundedly. Another process holding it keeps
/// it, and the error says so after the wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// A reopen that gave up the only handle must get one back: it waits longer.
const REOPEN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, BaseError> {
    open_sled_within(path, cache_bytes, LOCK_WAIT)
}

fn open_sled_within(
    path: &Path,
    cache_bytes: u64,
    lock_wait: std::time::Duration,
) -> Result<sled::Db, BaseError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes.max(1 << 20))
            // Checkpoints decide when to sync, and sync for real (see make_durable).
            .flush_every_ms(None)
            // Pages above segment_size/4 become blob files; 1 MiB keeps bucket and chunk
            // pages inline while sled's write buffers stay small.
            .segment_size(1 << 20)
            .open();
        match opened {
            Err(sled::Error::Io(error))
                if error.kind() == std::io::ErrorKind::WouldBlock
                    && started.elapsed() < lock_wait =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => {
                return opened.map_err(|e| BaseError::Open {
                    path: path.to_path_buf(),
                    cause: e.to_string(),
                });
            }
        }
    }
}

impl SledKv {
    fn db(&self) -> Result<parking_lot::MappedRwLockReadGuard<'_, sled::Db>, BaseError> {
        parking_lot::RwLockReadGuard::try_map(self.db.read(), Option::as_ref)
            .map_err(|_| BaseError::Io("the base image is being reopened".into()))
    }

    /// Opens (or creates) sled in `path` with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<SledKv, BaseError> {
        Ok(SledKv {
            db: parking_lot::RwLock::new(Some(open_sled(path, cache_bytes)?)),
            path: path.to_path_buf(),
            cache_bytes,
        })
    }
}

fn sync_path(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

impl BaseKv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BaseError> {
        Ok(self.db()?.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), BaseError> {
        self.db()?.insert(key, value).map(|_| ()).map_err(io)
    }

    fn remove(&self, key: &[u8]) -> Result<(), BaseError> {
        self.db()?.remove(key).map(|_| ()).map_err(io)
    }

    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BaseError> {
        let db = self.db()?.clone();
        for item in db.range(from..to) {
            let (key, value) = item.map_err(io)?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn make_durable(&self) -> Result<(), BaseError> {
        // sled's flush ends in sync_file_range, which a power cut can still undo, and it
        // never syncs blob files: sync its files and directories ourselves.
        self.db()?.flush().map_err(io)?;
        sync_path(&self.path.join("db")).map_err(io)?;
        let blobs = self.path.join("blobs");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for entry in entries.flatten() {
                sync_path(&entry.path()).map_err(io)?;
            }
            sync_path(&blobs).map_err(io)?;
        }
        sync_path(&self.path).map_err(io)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db().ok()?.size_on_disk().ok()
    }

    fn clear(&self) -> Result<(), BaseError> {
        self.db()?.clear().map_err(io)
    }

    fn release_memory(&self) -> Result<(), BaseError> {
        // sled 0.34's LRU evicts only once 64 accesses queue up in one of its 256 shards,
        // so a recovery scan or a checkpoint leaves most pages it touched in memory. A
        // fresh handle holds none; the old one is flushed and closed first.
        let mut db = self.db.write();
        if let Some(old) = db.take() {
            old.flush().map_err(io)?;
        }
        *db = Some(open_sled_within(
            &self.path,
            self.cache_bytes,
            REOPEN_LOCK_WAIT,
        )?);
        Ok(())
    }
}

/// The base image in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl BaseKv for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BaseError> {
        Ok(self.map.lock().get(key).cloned())
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), BaseError> {
        self.map.lock().insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<(), BaseError> {
        self.map.lock().remove(key);
        Ok(())
    }
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BaseError> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = self
            .map
            .lock()
            .range(from.to_vec()..to.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in items {
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }
    fn make_durable(&self) -> Result<(), BaseError> {
        Ok(())
    }
    fn clear(&self) -> Result<(), BaseError> {
        self.map.lock().clear();
        Ok(())
    }
}

/// Wraps a store and fails its writes or syncs on command.
#[derive(Debug)]
pub struct FaultyKv<K> {
    inner: K,
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
}

impl<K: BaseKv> FaultyKv<K> {
    /// A healthy wrapper.
    pub fn new(inner: K) -> Self {
        FaultyKv {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_syncs: AtomicBool::new(false),
        }
    }
    /// Makes every write fail (`true`) or succeed again.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Relaxed);
    }
    /// Makes every sync fail (`true`) or succeed again.
    pub fn fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Relaxed);
    }
    /// The wrapped store.
    pub fn inner(&self) -> &K {
        &self.inner
    }
    fn check_write(&self) -> Result<(), BaseError> {
        if self.fail_writes.load(Relaxed) {
            return Err(BaseError::Io("No space left on device (injected)".into()));
        }
        Ok(())
    }
}

impl<K: BaseKv> BaseKv for FaultyKv<K> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BaseError> {
        self.inner.get(key)
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), BaseError> {
        self.check_write()?;
        self.inner.insert(key, value)
    }
    fn remove(&self, key: &[u8]) -> Result<(), BaseError> {
        self.check_write()?;
        self.inner.remove(key)
    }
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BaseError> {
        self.inner.range(from, to, visit)
    }
    fn make_durable(&self) -> Result<(), BaseError> {
        if self.fail_syncs.load(Relaxed) {
            return Err(BaseError::Io("fsync failed (injected)".into()));
        }
        self.inner.make_durable()
    }
    fn clear(&self) -> Result<(), BaseError> {
        self.check_write()?;
        self.inner.clear()
    }
}

/// Fixed: changing it would move every key to another bucket.
const POSITION_SEED: u64 = 0x7269_6e67_6b76_0001;

/// A key's place in the 32-bit position space: its slot, then 18 bits of a fixed hash.
pub fn position(key: &[u8]) -> u32 {
    (u32::from(key_slot(key)) << 18) | (xxh3_64_with_seed(key, POSITION_SEED) as u32 & 0x3_ffff)
}

/// The positions of the slots `slots`.
pub fn slot_positions(slots: Range<u16>) -> Range<u64> {
    (u64::from(slots.start) << 18)..(u64::from(slots.end) << 18)
}

/// Values longer than this live in chunks outside their bucket.
pub const INLINE_MAX: usize = 1024;
/// Bytes per chunk of an outside value (sled pages of 16 chunks stay inline in its log).
pub const CHUNK_BYTES: usize = 8 << 10;
/// Buckets aim at this many bytes.
pub const BUCKET_TARGET: u64 = 2 << 10;
/// Fewest and most buckets: 2^10 (a few KiB of data) to 2^26.
pub const MIN_BITS: u8 = 10;
/// See [`MIN_BITS`].
pub const MAX_BITS: u8 = 26;

/// How keys map to buckets: a generation (a new layout is written beside the old one)
/// and the number of bucket bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Prefix of this layout's bucket items.
    pub generation: u8,
    /// 2^bits buckets.
    pub bits: u8,
}

impl Layout {
    /// The bucket of a position.
    pub fn bucket(&self, position: u32) -> u32 {
        ((u64::from(position)) >> (32 - u32::from(self.bits))) as u32
    }

    /// The buckets covering positions `positions`.
    pub fn buckets(&self, positions: Range<u64>) -> Range<u32> {
        let shift = 32 - u32::from(self.bits);
        let start = (positions.start >> shift) as u32;
        let end = (positions.end.saturating_sub(1) >> shift) as u32 + 1;
        start..end.max(start)
    }

    /// The number of buckets.
    pub fn bucket_count(&self) -> u64 {
        1 << self.bits
    }

    /// The bucket item's key.
    pub fn bucket_key(&self, bucket: u32) -> [u8; 6] {
        let b = bucket.to_be_bytes();
        [self.generation, b'B', b[0], b[1], b[2], b[3]]
    }

    /// The bits that give buckets of about [`BUCKET_TARGET`] for `bytes` of data.
    pub fn bits_for(bytes: u64) -> u8 {
        let buckets = (bytes / BUCKET_TARGET).max(1).next_power_of_two();
        (buckets.trailing_zeros() as u8).clamp(MIN_BITS, MAX_BITS)
    }
}

fn chunk_prefix(key: &[u8], stamp: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + key.len() + 4);
    out.push(b'V');
    out.extend_from_slice(&position(key).to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&stamp.to_be_bytes());
    out
}

fn chunk_key(prefix: &[u8], index: u32) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Where a bucket entry's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In the bucket.
    Inline(Vec<u8>),
    /// In chunks of its own: the value's length.
    Outside(u64),
}

/// One key in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    /// The key.
    pub key: Box<[u8]>,
    /// The last LSN this state reflects.
    pub stamp: u64,
    /// Unix ms deadline, 0 for none.
    pub deadline: u64,
    /// The value (`Value::to_persisted` bytes).
    pub value: Stored,
}

const BUCKET_VERSION: u8 = 1;

/// `version u8 | count u32 | (key_len u32, key, stamp u64, deadline u64, kind u8, len u64,
/// inline bytes?)*`.
pub fn encode_bucket(entries: &[BucketEntry]) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|e| {
            29 + e.key.len()
                + match &e.value {
                    Stored::Inline(v) => v.len(),
                    Stored::Outside(_) => 0,
                }
        })
        .sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(BUCKET_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&(entry.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&entry.key);
        out.extend_from_slice(&entry.stamp.to_le_bytes());
        out.extend_from_slice(&entry.deadline.to_le_bytes());
        match &entry.value {
            Stored::Inline(value) => {
                out.push(0);
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
            }
            Stored::Outside(len) => {
                out.push(1);
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
    }
    out
}

/// The inverse of [`encode_bucket`].
pub fn decode_bucket(bytes: &[u8]) -> Result<Vec<BucketEntry>, &'static str> {
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        if rest.len() < n {
            return Err("truncated bucket");
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    if take(1)?[0] != BUCKET_VERSION {
        return Err("unknown bucket version");
    }
    let count = u32_at(take(4)?) as usize;
    let mut entries = Vec::with_capacity(count.min(bytes.len() / 29));
    for _ in 0..count {
        let key_len = u32_at(take(4)?) as usize;
        let key: Box<[u8]> = take(key_len)?.into();
        let stamp = u64_at(take(8)?);
        let deadline = u64_at(take(8)?);
        let kind = take(1)?[0];
        let len = u64_at(take(8)?);
        let value = match kind {
            0 => {
                Stored::Inline(take(usize::try_from(len).map_err(|_| "value too long")?)?.to_vec())
            }
            1 => Stored::Outside(len),
            _ => return Err("unknown value kind"),
        };
        entries.push(BucketEntry {
            key,
            stamp,
            deadline,
            value,
        });
    }
    if !rest.is_empty() {
        return Err("bytes after the last entry");
    }
    Ok(entries)
}

/// The chunks of an outside value that no bucket names any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obsolete {
    key: Box<[u8]>,
    stamp: u64,
    len: u64,
}

/// A key as the base image holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseValue {
    /// `Value::to_persisted` bytes.
    pub value: Vec<u8>,
    /// Unix ms deadline, 0 for none.
    pub deadline: u64,
    /// The last LSN it reflects.
    pub stamp: u64,
}

/// How much a batch of changes moved the base image's size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BaseDelta {
    /// Keys added minus keys removed.
    pub keys: i64,
    /// Value and key bytes added minus removed.
    pub bytes: i64,
    /// Bucket items written.
    pub buckets_written: u64,
}

impl BaseDelta {
    fn add(&mut self, other: BaseDelta) {
        self.keys += other.keys;
        self.bytes += other.bytes;
        self.buckets_written += other.buckets_written;
    }
}

fn entry_bytes(entry: &BucketEntry) -> i64 {
    let value = match &entry.value {
        Stored::Inline(v) => v.len() as u64,
        Stored::Outside(len) => *len,
    };
    (entry.key.len() as u64 + value + 24) as i64
}

fn corrupt(item: &[u8], detail: &'static str) -> BaseError {
    BaseError::Corrupt {
        item: String::from_utf8_lossy(item).into_owned(),
        detail,
    }
}

/// The bucketed base image over a raw store.
#[derive(Debug)]
pub struct BaseImage {
    kv: std::sync::Arc<dyn BaseKv>,
}

impl BaseImage {
    /// The image over `kv`.
    pub fn new(kv: std::sync::Arc<dyn BaseKv>) -> BaseImage {
        BaseImage { kv }
    }

    /// The raw store.
    pub fn kv(&self) -> &dyn BaseKv {
        &*self.kv
    }

    fn read_bucket(&self, layout: Layout, bucket: u32) -> Result<Vec<BucketEntry>, BaseError> {
        let key = layout.bucket_key(bucket);
        match self.kv.get(&key)? {
            Some(bytes) => decode_bucket(&bytes).map_err(|detail| corrupt(&key, detail)),
            None => Ok(Vec::new()),
        }
    }

    fn read_outside(&self, key: &[u8], stamp: u64, len: u64) -> Result<Vec<u8>, BaseError> {
        let prefix = chunk_prefix(key, stamp);
        let mut value = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
        let chunks = len.div_ceil(CHUNK_BYTES as u64) as u32;
        for index in 0..chunks {
            let chunk = self
                .kv
                .get(&chunk_key(&prefix, index))?
                .ok_or_else(|| corrupt(key, "a chunk of an outside value is missing"))?;
            value.extend_from_slice(&chunk);
        }
        if value.len() as u64 != len {
            return Err(corrupt(key, "an outside value has the wrong length"));
        }
        Ok(value)
    }

    fn write_outside(&self, key: &[u8], stamp: u64, value: &[u8]) -> Result<(), BaseError> {
        let prefix = chunk_prefix(key, stamp);
        for (index, chunk) in value.chunks(CHUNK_BYTES).enumerate() {
            self.kv.insert(&chunk_key(&prefix, index as u32), chunk)?;
        }
        Ok(())
    }

    fn remove_outside(&self, key: &[u8], stamp: u64, len: u64) -> Result<(), BaseError> {
        let prefix = chunk_prefix(key, stamp);
        for index in 0..len.div_ceil(CHUNK_BYTES as u64) as u32 {
            self.kv.remove(&chunk_key(&prefix, index))?;
        }
        Ok(())
    }

    fn materialize(&self, entry: BucketEntry) -> Result<BaseValue, BaseError> {
        let value = match entry.value {
            Stored::Inline(value) => value,
            Stored::Outside(len) => self.read_outside(&entry.key, entry.stamp, len)?,
        };
        Ok(BaseValue {
            value,
            deadline: entry.deadline,
            stamp: entry.stamp,
        })
    }

    /// One key (a store-mode fault-in, a recovery that did not load it).
    pub fn lookup(&self, layout: Layout, key: &[u8]) -> Result<Option<BaseValue>, BaseError> {
        let bucket = self.read_bucket(layout, layout.bucket(position(key)))?;
        match bucket.into_iter().find(|e| *e.key == *key) {
            Some(entry) => self.materialize(entry).map(Some),
            None => Ok(None),
        }
    }

    /// Every key in buckets `buckets`, in bucket order, until `visit` says stop.
    pub fn load(
        &self,
        layout: Layout,
        buckets: Range<u32>,
        visit: &mut dyn FnMut(Box<[u8]>, BaseValue) -> bool,
    ) -> Result<(), BaseError> {
        if buckets.is_empty() {
            return Ok(());
        }
        let from = layout.bucket_key(buckets.start);
        let to = if u64::from(buckets.end) >= layout.bucket_count() {
            [layout.generation, b'C', 0, 0, 0, 0]
        } else {
            layout.bucket_key(buckets.end)
        };
        let mut failure = None;
        self.kv.range(&from, &to, &mut |item, bytes| {
            let entries = match decode_bucket(bytes) {
                Ok(entries) => entries,
                Err(detail) => {
                    failure = Some(corrupt(item, detail));
                    return false;
                }
            };
            for entry in entries {
                let key = entry.key.clone();
                match self.materialize(entry) {
                    Ok(value) => {
                        if !visit(key, value) {
                            return false;
                        }
                    }
                    Err(error) => {
                        failure = Some(error);
                        return false;
                    }
                }
            }
            true
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Writes a shard's changes: each key's new state (or its absence) replaces what its
    /// bucket held, unless the bucket holds a newer stamp already. With `cleared_before`
    /// (a FLUSHALL's LSN, 0 for none), the buckets of `positions` first lose every entry
    /// stamped below it.
    pub fn apply(
        &self,
        layout: Layout,
        positions: Range<u64>,
        cleared_before: u64,
        changes: Vec<DirtyEntry>,
    ) -> Result<BaseDelta, BaseError> {
        let mut obsolete = Vec::new();
        let delta =
            self.apply_keeping(layout, positions, cleared_before, changes, &mut obsolete)?;
        self.remove_obsolete(obsolete)?;
        Ok(delta)
    }

    /// As [`apply`](Self::apply), but the chunks of replaced outside values are listed in
    /// `obsolete` instead of removed (the layout the manifest names may still name them):
    /// remove them once the manifest is written.
    pub fn apply_keeping(
        &self,
        layout: Layout,
        positions: Range<u64>,
        cleared_before: u64,
        changes: Vec<DirtyEntry>,
        obsolete: &mut Vec<Obsolete>,
    ) -> Result<BaseDelta, BaseError> {
        let mut delta = BaseDelta::default();
        if cleared_before > 0 {
            for bucket in layout.buckets(positions) {
                delta.add(self.rewrite_bucket(
                    layout,
                    bucket,
                    cleared_before,
                    Vec::new(),
                    obsolete,
                )?);
            }
        }
        let mut by_bucket: BTreeMap<u32, Vec<DirtyEntry>> = BTreeMap::new();
        for change in changes {
            by_bucket
                .entry(layout.bucket(position(&change.key)))
                .or_default()
                .push(change);
        }
        for (bucket, changes) in by_bucket {
            delta.add(self.rewrite_bucket(layout, bucket, 0, changes, obsolete)?);
        }
        Ok(delta)
    }

    /// Removes the chunks of outside values no bucket names any more.
    pub fn remove_obsolete(&self, obsolete: Vec<Obsolete>) -> Result<(), BaseError> {
        for old in obsolete {
            self.remove_outside(&old.key, old.stamp, old.len)?;
        }
        Ok(())
    }

    fn rewrite_bucket(
        &self,
        layout: Layout,
        bucket: u32,
        cleared_before: u64,
        changes: Vec<DirtyEntry>,
        obsolete: &mut Vec<Obsolete>,
    ) -> Result<BaseDelta, BaseError> {
        let mut delta = BaseDelta::default();
        let mut entries = self.read_bucket(layout, bucket)?;
        let mut replaced = Vec::new();
        if cleared_before > 0 {
            let (gone, kept): (Vec<_>, Vec<_>) =
                entries.into_iter().partition(|e| e.stamp < cleared_before);
            entries = kept;
            for entry in gone {
                delta.keys -= 1;
                delta.bytes -= entry_bytes(&entry);
                replaced.push(entry);
            }
        }
        let before = entries.len();
        for change in changes {
            let existing = entries.iter().position(|e| e.key == change.key);
            if let Some(i) = existing
                && entries[i].stamp > change.stamp
            {
                continue;
            }
            if let Some(i) = existing {
                let old = entries.swap_remove(i);
                delta.keys -= 1;
                delta.bytes -= entry_bytes(&old);
                replaced.push(old);
            }
            if let Some((value, deadline)) = change.state {
                let stored = if value.len() > INLINE_MAX {
                    self.write_outside(&change.key, change.stamp, &value)?;
                    Stored::Outside(value.len() as u64)
                } else {
                    Stored::Inline(value)
                };
                let entry = BucketEntry {
                    key: change.key,
                    stamp: change.stamp,
                    deadline,
                    value: stored,
                };
                delta.keys += 1;
                delta.bytes += entry_bytes(&entry);
                entries.push(entry);
            }
        }
        if entries.is_empty() && before == 0 && replaced.is_empty() {
            return Ok(delta);
        }
        let key = layout.bucket_key(bucket);
        if entries.is_empty() {
            self.kv.remove(&key)?;
        } else {
            self.kv.insert(&key, &encode_bucket(&entries))?;
        }
        delta.buckets_written += 1;
        // Only once no bucket names the old chunks may they go: a crash in between leaves
        // them orphaned (space, not data), never a bucket naming missing chunks.
        for old in replaced {
            if let Stored::Outside(len) = old.value
                && !entries
                    .iter()
                    .any(|e| e.key == old.key && e.stamp == old.stamp)
            {
                obsolete.push(Obsolete {
                    key: old.key,
                    stamp: old.stamp,
                    len,
                });
            }
        }
        Ok(delta)
    }

    /// Copies every bucket of `from` over `positions` into the layout `to` (a relayout:
    /// the data grew or shrank fourfold). Outside values are shared, not copied.
    pub fn relayout(
        &self,
        from: Layout,
        to: Layout,
        positions: Range<u64>,
    ) -> Result<BaseDelta, BaseError> {
        let mut by_bucket: BTreeMap<u32, Vec<BucketEntry>> = BTreeMap::new();
        for bucket in from.buckets(positions.clone()) {
            for entry in self.read_bucket(from, bucket)? {
                by_bucket
                    .entry(to.bucket(position(&entry.key)))
                    .or_default()
                    .push(entry);
            }
        }
        let mut delta = BaseDelta::default();
        for bucket in to.buckets(positions) {
            let entries = by_bucket.remove(&bucket).unwrap_or_default();
            if entries.is_empty() {
                self.kv.remove(&to.bucket_key(bucket))?;
            } else {
                self.kv
                    .insert(&to.bucket_key(bucket), &encode_bucket(&entries))?;
                delta.buckets_written += 1;
            }
        }
        Ok(delta)
    }

    /// Deletes every bucket of a layout no manifest names any more (after a relayout, or
    /// a crash in the middle of one). Outside values stay: the live layout may name them.
    pub fn drop_generation(&self, generation: u8) -> Result<(), BaseError> {
        let from = [generation, b'B'];
        let to = [generation, b'C'];
        let mut keys = Vec::new();
        self.kv.range(&from, &to, &mut |key, _| {
            keys.push(key.to_vec());
            true
        })?;
        for key in keys {
            self.kv.remove(&key)?;
        }
        Ok(())
    }

    /// The generations present, for cleaning up after a crash.
    pub fn generations(&self) -> Result<Vec<u8>, BaseError> {
        let mut found = Vec::new();
        for generation in 0..=255u8 {
            let mut any = false;
            self.kv
                .range(&[generation, b'B'], &[generation, b'C'], &mut |_, _| {
                    any = true;
                    false
                })?;
            if any {
                found.push(generation);
            }
        }
        Ok(found)
    }

    /// Makes everything written durable.
    pub fn make_durable(&self) -> Result<(), BaseError> {
        self.kv.make_durable()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const LAYOUT: Layout = Layout {
        generation: 0,
        bits: 10,
    };

    fn change(key: &str, value: Option<&[u8]>, stamp: u64) -> DirtyEntry {
        DirtyEntry {
            key: key.as_bytes().into(),
            state: value.map(|v| (v.to_vec(), 0)),
            stamp,
        }
    }

    fn everything(image: &BaseImage, layout: Layout) -> BTreeMap<Vec<u8>, BaseValue> {
        let mut all = BTreeMap::new();
        image
            .load(layout, 0..layout.bucket_count() as u32, &mut |k, v| {
                all.insert(k.to_vec(), v);
                true
            })
            .unwrap();
        all
    }

    #[test]
    fn positions_are_fixed_forever() {
        // Golden values: a change here moves every key of every data directory.
        assert_eq!(position(b"foo") >> 18, 12182);
        assert_eq!(position(b"foo"), 3_193_682_372);
        assert_eq!(position(b"{user1000}.following") >> 18, 3443);
        assert_eq!(position(b""), 15_925);
    }

    #[test]
    fn buckets_round_trip_and_garbage_is_an_error() {
        let entries = vec![
            BucketEntry {
                key: b"a".as_slice().into(),
                stamp: 9,
                deadline: 123,
                value: Stored::Inline(b"\x00value".to_vec()),
            },
            BucketEntry {
                key: b"big".as_slice().into(),
                stamp: 10,
                deadline: 0,
                value: Stored::Outside(5000),
            },
        ];
        let bytes = encode_bucket(&entries);
        assert_eq!(decode_bucket(&bytes).unwrap(), entries);
        for cut in 0..bytes.len() {
            assert!(decode_bucket(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_bucket(&[7, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn changes_replace_keys_and_an_older_stamp_never_wins() {
        let image = BaseImage::new(Arc::new(MemoryKv::default()));
        let all = 0..(1u64 << 32);
        image
            .apply(
                LAYOUT,
                all.clone(),
                0,
                vec![change("a", Some(b"1"), 5), change("b", Some(b"2"), 5)],
            )
            .unwrap();
        let delta = image
            .apply(
                LAYOUT,
                all.clone(),
                0,
                vec![change("a", Some(b"3"), 7), change("b", None, 7)],
            )
            .unwrap();
        assert_eq!(delta.keys, -1);
        image
            .apply(LAYOUT, all.clone(), 0, vec![change("a", Some(b"stale"), 6)])
            .unwrap();
        let found = image.lookup(LAYOUT, b"a").unwrap().unwrap();
        assert_eq!((found.value, found.stamp), (b"3".to_vec(), 7));
        assert_eq!(image.lookup(LAYOUT, b"b").unwrap(), None);
        assert_eq!(everything(&image, LAYOUT).len(), 1);
    }

    #[test]
    fn big_values_live_in_chunks_and_old_chunks_are_removed() {
        let kv = Arc::new(MemoryKv::default());
        let image = BaseImage::new(kv.clone());
        let all = 0..(1u64 << 32);
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        image
            .apply(LAYOUT, all.clone(), 0, vec![change("big", Some(&big), 3)])
            .unwrap();
        assert_eq!(image.lookup(LAYOUT, b"big").unwrap().unwrap().value, big);
        let items = kv.map.lock().len();
        assert_eq!(items, 1 + big.len().div_ceil(CHUNK_BYTES));
        image
            .apply(LAYOUT, all, 0, vec![change("big", Some(b"small now"), 4)])
            .unwrap();
        assert_eq!(kv.map.lock().len(), 1, "the old chunks are gone");
        assert_eq!(
            image.lookup(LAYOUT, b"big").unwrap().unwrap().value,
            b"small now"
        );
    }

    #[test]
    fn a_clear_empties_only_its_range() {
        let image = BaseImage::new(Arc::new(MemoryKv::default()));
        let all = 0..(1u64 << 32);
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let changes = keys.iter().map(|k| change(k, Some(b"v"), 1)).collect();
        image.apply(LAYOUT, all, 0, changes).unwrap();
        let lower = slot_positions(0..8192);
        image.apply(LAYOUT, lower, 2, Vec::new()).unwrap();
        let left = everything(&image, LAYOUT);
        assert!(!left.is_empty() && left.len() < 200);
        assert!(left.keys().all(|k| key_slot(k) >= 8192));
    }

    #[test]
    fn a_relayout_keeps_every_key_and_applies_changes() {
        let image = BaseImage::new(Arc::new(MemoryKv::default()));
        let all = 0..(1u64 << 32);
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let big = vec![1u8; 5000];
        let mut changes: Vec<DirtyEntry> = keys.iter().map(|k| change(k, Some(b"v"), 1)).collect();
        changes.push(change("big", Some(&big), 1));
        image.apply(LAYOUT, all.clone(), 0, changes).unwrap();
        let wider = Layout {
            generation: 1,
            bits: 14,
        };
        let mut obsolete = Vec::new();
        for part in 0..4u16 {
            let positions = slot_positions(part * 4096..(part + 1) * 4096);
            image.relayout(LAYOUT, wider, positions).unwrap();
        }
        let changes = keys.iter().take(12).map(|k| change(k, None, 2)).collect();
        image
            .apply_keeping(wider, 0..0, 0, changes, &mut obsolete)
            .unwrap();
        image.drop_generation(0).unwrap();
        image.remove_obsolete(obsolete).unwrap();
        let after = everything(&image, wider);
        assert_eq!(after.len(), 501 - 12);
        assert_eq!(after[b"big".as_slice()].value, big);
        assert_eq!(image.generations().unwrap(), vec![1]);
    }

    #[test]
    fn sled_holds_the_image_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let image = BaseImage::new(Arc::new(SledKv::open(dir.path(), 1 << 20).unwrap()));
            image
                .apply(LAYOUT, 0..(1u64 << 32), 0, vec![change("k", Some(b"v"), 1)])
                .unwrap();
            image.make_durable().unwrap();
        }
        let image = BaseImage::new(Arc::new(SledKv::open(dir.path(), 1 << 20).unwrap()));
        assert_eq!(image.lookup(LAYOUT, b"k").unwrap().unwrap().value, b"v");
    }
}
