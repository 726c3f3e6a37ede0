//! Checkpoints: a background thread writes every key changed since the last checkpoint
//! into the base image (once per key, however often it changed), makes the base image
//! durable, records the checkpoint LSN in the manifest, and lets the WAL segments before
//! it go. It runs when the WAL since the last checkpoint outgrows the base image (Redis's
//! `auto-aof-rewrite-percentage` and `-min-size`), when asked (SAVE, BGSAVE), and after the
//! disk lost WAL records; it is paced to a share of one core.
//!
//! Also here: the manifest, and the store-mode spill queue (evicted values on their way to
//! the base image).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::base_image::{BaseDelta, BaseError, BaseImage, Layout, Obsolete, slot_positions};
use crate::change_log::ChangeLog;
use crate::change_marks::{CheckpointSource, DirtyEntry, ShardChanges};
use crate::data_dir::DataDir;
use crate::store::EvictionSpill;
use crate::wal::Wal;

/// The manifest: where the base image and the WAL meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// Every change up to this LSN is in the base image.
    pub checkpoint_lsn: u64,
    /// The base image's bucket layout.
    pub layout: Layout,
    /// Keys in the base image.
    pub base_keys: u64,
    /// Bytes of keys and values in the base image.
    pub base_bytes: u64,
    /// Checkpoints completed, ever.
    pub checkpoints: u64,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            checkpoint_lsn: 0,
            layout: Layout {
                generation: 0,
                bits: crate::base_image::MIN_BITS,
            },
            base_keys: 0,
            base_bytes: 0,
            checkpoints: 0,
        }
    }
}

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_HEADER: &str = "ringkv-manifest 1";

impl Manifest {
    fn body(&self) -> String {
        format!(
            "{MANIFEST_HEADER}\ncheckpoint_lsn {}\ngeneration {}\nbucket_bits {}\nbase_keys {}\nbase_bytes {}\ncheckpoints {}\n",
            self.checkpoint_lsn,
            self.layout.generation,
            self.layout.bits,
            self.base_keys,
            self.base_bytes,
            self.checkpoints
        )
    }

    /// The file's bytes: the fields as text, then their CRC.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.body();
        format!("{body}crc {}\n", crc32fast::hash(body.as_bytes())).into_bytes()
    }

    /// The inverse of [`encode`](Self::encode); the reason when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_string())?;
        let (body, crc_line) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or("no CRC line")?;
        let body = format!("{body}\n");
        let crc: u32 = crc_line
            .strip_prefix("crc ")
            .and_then(|c| c.parse().ok())
            .ok_or("bad CRC line")?;
        if crc32fast::hash(body.as_bytes()) != crc {
            return Err("CRC mismatch".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(MANIFEST_HEADER) {
            return Err("unknown manifest version".into());
        }
        let mut fields = HashMap::new();
        for line in lines {
            let (name, value) = line.split_once(' ').ok_or("bad line")?;
            let value: u64 = value.parse().map_err(|_| format!("bad value for {name}"))?;
            fields.insert(name.to_string(), value);
        }
        let field = |name: &str| fields.get(name).copied().ok_or(format!("no {name}"));
        Ok(Manifest {
            checkpoint_lsn: field("checkpoint_lsn")?,
            layout: Layout {
                generation: u8::try_from(field("generation")?).map_err(|_| "bad generation")?,
                bits: u8::try_from(field("bucket_bits")?).map_err(|_| "bad bucket_bits")?,
            },
            base_keys: field("base_keys")?,
            base_bytes: field("base_bytes")?,
            checkpoints: field("checkpoints")?,
        })
    }

    /// Reads the manifest; `Ok(None)` when there is none yet.
    pub fn read(dir: &dyn DataDir) -> Result<Option<Manifest>, String> {
        match dir.read(MANIFEST) {
            Ok(bytes) => Manifest::decode(&bytes)
                .map(Some)
                .map_err(|e| format!("{MANIFEST} is unreadable: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{MANIFEST}: {e}")),
        }
    }

    /// Replaces the manifest atomically.
    pub fn write(&self, dir: &dyn DataDir) -> std::io::Result<()> {
        dir.write_atomically(MANIFEST, &self.encode())
    }
}

/// Store mode's evicted values that the base image does not hold yet. A fault-in takes a
/// key back out, so a value is never both in memory and queued.
#[derive(Debug, Default)]
pub struct SpillQueue {
    state: Mutex<SpillState>,
    room: Condvar,
    limit: usize,
}

#[derive(Debug, Default)]
struct SpillState {
    queued: HashMap<Box<[u8]>, DirtyEntry>,
    /// Taken by the checkpoint thread, not yet written: still visible to fault-ins.
    writing: HashMap<Box<[u8]>, DirtyEntry>,
    bytes: usize,
}

impl SpillQueue {
    /// A queue that holds writers back past `limit` bytes.
    pub fn new(limit: usize) -> SpillQueue {
        SpillQueue {
            limit,
            ..SpillQueue::default()
        }
    }

    /// Takes `key` back for a fault-in, if it is queued. A queued deletion stays queued
    /// (the base image must still learn it) and is returned as such.
    pub fn take(&self, key: &[u8]) -> Option<DirtyEntry> {
        let mut state = self.state.lock();
        match state.queued.get(key) {
            Some(entry) if entry.state.is_none() => return Some(entry.clone()),
            Some(_) => {
                let entry = state.queued.remove(key).expect("just found");
                state.bytes -= entry_size(&entry);
                self.room.notify_all();
                return Some(entry);
            }
            None => {}
        }
        state.writing.get(key).cloned()
    }

    fn take_batch(&self) -> Vec<DirtyEntry> {
        let mut state = self.state.lock();
        let batch: Vec<DirtyEntry> = state.queued.drain().map(|(_, e)| e).collect();
        state.writing = batch.iter().map(|e| (e.key.clone(), e.clone())).collect();
        batch
    }

    fn written(&self) {
        let mut state = self.state.lock();
        let freed: usize = state.writing.values().map(entry_size).sum();
        state.writing.clear();
        state.bytes = state.bytes.saturating_sub(freed);
        self.room.notify_all();
    }

    fn restore(&self, batch: Vec<DirtyEntry>) {
        let mut state = self.state.lock();
        state.writing.clear();
        for entry in batch {
            state.queued.entry(entry.key.clone()).or_insert(entry);
        }
    }

    /// Bytes queued or being written.
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

fn entry_size(entry: &DirtyEntry) -> usize {
    entry.key.len() + entry.state.as_ref().map_or(0, |(v, _)| v.len()) + 64
}

impl EvictionSpill for SpillQueue {
    fn spill(&self, entry: DirtyEntry) {
        let mut state = self.state.lock();
        state.bytes += entry_size(&entry);
        if let Some(old) = state.queued.insert(entry.key.clone(), entry) {
            state.bytes -= entry_size(&old);
        }
    }

    fn wait_for_room(&self) {
        let mut state = self.state.lock();
        let deadline = Instant::now() + Duration::from_secs(1);
        // Bounded: past the deadline eviction proceeds and memory runs over for a moment
        // rather than the node stalling.
        while state.bytes > self.limit && Instant::now() < deadline {
            self.room.wait_until(&mut state, deadline);
        }
    }
}

/// When checkpoints run and how hard.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointConfig {
    /// Checkpoint once the WAL since the last one is this percent of the base image
    /// (`auto-aof-rewrite-percentage`; 0 disables size triggers).
    pub wal_percent: u64,
    /// ...and at least this many bytes (`auto-aof-rewrite-min-size`).
    pub wal_min_bytes: u64,
    /// Share of one core a checkpoint may use while the WAL is within bounds.
    pub cpu_share: f64,
    /// Changes taken from a shard at a time.
    pub batch_bytes: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            wal_percent: 100,
            wal_min_bytes: 256 << 20,
            cpu_share: 0.25,
            batch_bytes: 1 << 20,
        }
    }
}

/// Counters and state of checkpoints, for INFO.
#[derive(Debug, Default)]
pub struct CheckpointStatus {
    /// A checkpoint is running.
    pub running: AtomicBool,
    /// Shards done in the running checkpoint, and of how many.
    pub shards_done: AtomicU64,
    /// See `shards_done`.
    pub shards_total: AtomicU64,
    /// Checkpoints completed by this process.
    pub completed: AtomicU64,
    /// Checkpoints that failed.
    pub failed: AtomicU64,
    /// Unix seconds of the last completed checkpoint (LASTSAVE).
    pub last_unix: AtomicU64,
    /// Milliseconds the last checkpoint took.
    pub last_ms: AtomicU64,
    /// Keys written by the last checkpoint.
    pub last_keys: AtomicU64,
    /// Buckets written by the last checkpoint.
    pub last_buckets: AtomicU64,
    /// Keys written in total.
    pub keys_written: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl CheckpointStatus {
    /// The last failure, until the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// What a waiter for a checkpoint learns.
pub type CheckpointResult = Result<(), String>;

/// The shared state the checkpoint thread works on.
pub struct Checkpoints {
    pub(crate) store: Arc<dyn CheckpointSource>,
    log: Arc<ChangeLog>,
    pub(crate) base: Arc<BaseImage>,
    pub(crate) dir: Arc<dyn DataDir>,
    pub(crate) manifest: Mutex<Manifest>,
    /// The live layout; fault-ins read under it, a relayout switches it.
    pub(crate) layout: RwLock<Layout>,
    pub(crate) spill: Option<Arc<SpillQueue>>,
    pub(crate) config: CheckpointConfig,
    pub(crate) status: CheckpointStatus,
    requests: Mutex<Requests>,
    wake: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct Requests {
    /// A checkpoint was asked for; these wait for the next one to finish.
    asked: bool,
    waiters: Vec<Box<dyn FnOnce(CheckpointResult) + Send>>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("manifest", &*self.manifest.lock())
            .finish_non_exhaustive()
    }
}

impl Checkpoints {
    pub(crate) fn new(
        store: Arc<dyn CheckpointSource>,
        log: Arc<ChangeLog>,
        base: Arc<BaseImage>,
        dir: Arc<dyn DataDir>,
        manifest: Manifest,
        spill: Option<Arc<SpillQueue>>,
        config: CheckpointConfig,
    ) -> Checkpoints {
        Checkpoints {
            store,
            log,
            base,
            dir,
            layout: RwLock::new(manifest.layout),
            manifest: Mutex::new(manifest),
            spill,
            config,
            status: CheckpointStatus::default(),
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// The manifest as of the last checkpoint.
    pub fn manifest(&self) -> Manifest {
        *self.manifest.lock()
    }

    /// Counters.
    pub fn status(&self) -> &CheckpointStatus {
        &self.status
    }

    /// Asks for a checkpoint soon; `done` (if any) runs when one that started after this
    /// call has finished.
    pub fn request(&self, done: Option<Box<dyn FnOnce(CheckpointResult) + Send>>) {
        let mut requests = self.requests.lock();
        requests.asked = true;
        requests.waiters.extend(done);
        self.wake.notify_all();
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Relaxed);
        let _requests = self.requests.lock();
        self.wake.notify_all();
    }

    /// The thread's loop: wait for a reason, checkpoint, repeat.
    pub(crate) fn run(&self, wal: &Wal) {
        let mut last = Instant::now();
        let mut backoff = Duration::ZERO;
        while !self.stop.load(Relaxed) {
            let waiters = {
                let mut requests = self.requests.lock();
                if !requests.asked {
                    self.wake
                        .wait_for(&mut requests, Duration::from_millis(100));
                }
                if self.stop.load(Relaxed) {
                    break;
                }
                let asked = std::mem::take(&mut requests.asked);
                if !asked && !self.due(wal, last.elapsed()) {
                    drop(requests);
                    let mut obsolete = Vec::new();
                    let drained = self
                        .drain_spill(&mut obsolete)
                        .and_then(|()| self.base.remove_obsolete(obsolete));
                    if let Err(error) = drained {
                        tracing::warn!(%error, "writing evicted values to the base image failed; retrying");
                    }
                    continue;
                }
                if backoff > Duration::ZERO && !asked && last.elapsed() < backoff {
                    continue;
                }
                std::mem::take(&mut requests.waiters)
            };
            let result = self.checkpoint(wal);
            last = Instant::now();
            backoff = match &result {
                Ok(()) => Duration::ZERO,
                Err(_) => (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30)),
            };
            for waiter in waiters {
                waiter(result.clone());
            }
        }
        let waiters = std::mem::take(&mut self.requests.lock().waiters);
        for waiter in waiters {
            waiter(Err("the node is stopping".into()));
        }
    }

    /// True when a checkpoint should start on its own.
    fn due(&self, wal: &Wal, since_last: Duration) -> bool {
        let manifest = self.manifest();
        let status = wal.status();
        let gap = status.gap_after.load(Relaxed);
        if gap != 0 && status.healthy.load(Relaxed) {
            // Records were dropped: until a checkpoint covers them, a restart loses more.
            return true;
        }
        if self.config.wal_percent > 0 {
            let wal_bytes = wal.bytes_after(manifest.checkpoint_lsn);
            let threshold = (manifest.base_bytes.saturating_mul(self.config.wal_percent) / 100)
                .max(self.config.wal_min_bytes);
            if wal_bytes >= threshold {
                return true;
            }
        }
        // Deletions wait in memory as tombstones; do not let them pile up for long.
        since_last > Duration::from_secs(3600) && self.store.pending_changes() > 0
    }

    /// Writes the spill queue into the live layout; chunks it replaces go to `obsolete`.
    fn drain_spill(&self, obsolete: &mut Vec<Obsolete>) -> Result<(), BaseError> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let batch = spill.take_batch();
        if batch.is_empty() {
            return Ok(());
        }
        let layout = *self.layout.read();
        let written = self
            .base
            .apply_keeping(layout, 0..0, 0, batch.clone(), obsolete);
        match written {
            Ok(delta) => {
                self.count(delta);
                spill.written();
                Ok(())
            }
            Err(error) => {
                spill.restore(batch);
                Err(error)
            }
        }
    }

    fn count(&self, delta: BaseDelta) {
        let mut manifest = self.manifest.lock();
        manifest.base_keys = manifest.base_keys.saturating_add_signed(delta.keys);
        manifest.base_bytes = manifest.base_bytes.saturating_add_signed(delta.bytes);
    }

    /// One checkpoint.
    pub(crate) fn checkpoint(&self, wal: &Wal) -> CheckpointResult {
        let started = Instant::now();
        self.status.running.store(true, Relaxed);
        // Read before flipping: a change with an LSN up to here was noted (under its shard
        // lock) before that shard flips, so draining the old epoch covers it.
        let lsn = self.log.last_lsn();
        let mut epoch = 0;
        for shard in 0..self.store.shard_count() {
            epoch = self.store.flip(shard);
        }
        let mut deleted = Vec::new();
        let result = self.write_checkpoint(wal, epoch, lsn, &mut deleted);
        self.status.running.store(false, Relaxed);
        match &result {
            Ok(keys) => {
                self.status.completed.fetch_add(1, Relaxed);
                self.status.last_unix.store(unix_seconds(), Relaxed);
                self.status
                    .last_ms
                    .store(started.elapsed().as_millis() as u64, Relaxed);
                self.status.last_keys.store(*keys, Relaxed);
                self.status.keys_written.fetch_add(*keys, Relaxed);
                *self.status.last_error.lock() = None;
                tracing::debug!(
                    lsn,
                    keys,
                    ms = started.elapsed().as_millis() as u64,
                    "checkpoint done"
                );
            }
            Err(error) => {
                self.status.failed.fetch_add(1, Relaxed);
                tracing::warn!(%error, "checkpoint failed; it will be retried");
                *self.status.last_error.lock() = Some(error.clone());
                // What it took may not be durable: the next checkpoint writes everything,
                // and the deletions it took again.
                self.store.abort_checkpoint(epoch, deleted);
                self.store.mark_all_dirty();
            }
        }
        result.map(|_| ())
    }

    fn write_checkpoint(
        &self,
        wal: &Wal,
        epoch: usize,
        lsn: u64,
        deleted: &mut Vec<Box<[u8]>>,
    ) -> Result<u64, String> {
        let manifest = self.manifest();
        let current = manifest.layout;
        // Size the layout for what the image will hold after this checkpoint: at the first
        // one the base image is empty but memory (about 1.5× its data) is not.
        let expected = manifest
            .base_bytes
            .max(self.store.used_memory() as u64 * 2 / 3);
        let wanted = Layout::bits_for(expected);
        // Relayout only on a fourfold change, so a size hovering at a boundary does not
        // rewrite the image every time.
        let relayout = (wanted as i32 - current.bits as i32).abs() >= 2;
        let target = if relayout {
            Layout {
                generation: current.generation.wrapping_add(1),
                bits: wanted,
            }
        } else {
            current
        };
        let shards = self.store.shard_count();
        self.status.shards_total.store(shards as u64, Relaxed);
        self.status.shards_done.store(0, Relaxed);
        let mut keys = 0u64;
        let mut buckets = 0u64;
        let mut obsolete = Vec::new();
        let base_error = |e: BaseError| e.to_string();
        self.drain_spill(&mut obsolete).map_err(base_error)?;
        if relayout {
            // Copy the old layout into the new one in bounded parts; the changes then land
            // on top. The old layout stays whole until the manifest names the new one.
            for part in 0..256u64 {
                let positions = (part << 24)..((part + 1) << 24);
                let work = Instant::now();
                let delta = self
                    .base
                    .relayout(current, target, positions)
                    .map_err(base_error)?;
                buckets += delta.buckets_written;
                self.pace(wal, work.elapsed(), manifest.checkpoint_lsn);
            }
        }
        for shard in 0..shards {
            let positions = slot_positions(self.store.shard_slots(shard));
            loop {
                let mut changes = ShardChanges::default();
                let more = self.store.take_changes(
                    shard,
                    epoch,
                    self.config.batch_bytes,
                    &self.log,
                    &mut changes,
                );
                let work = Instant::now();
                keys += changes.entries.len() as u64;
                deleted.extend(
                    changes
                        .entries
                        .iter()
                        .filter(|e| e.state.is_none())
                        .map(|e| e.key.clone()),
                );
                if changes.cleared_before > 0 || !changes.entries.is_empty() {
                    let delta = self
                        .base
                        .apply_keeping(
                            target,
                            positions.clone(),
                            changes.cleared_before,
                            changes.entries,
                            &mut obsolete,
                        )
                        .map_err(base_error)?;
                    buckets += delta.buckets_written;
                    self.count(delta);
                }
                self.pace(wal, work.elapsed(), manifest.checkpoint_lsn);
                if !more {
                    break;
                }
            }
            self.status.shards_done.store(shard as u64 + 1, Relaxed);
        }
        if relayout {
            // Every shard is in the new layout: fault-ins and spills go there from now on.
            *self.layout.write() = target;
        }
        self.drain_spill(&mut obsolete).map_err(base_error)?;
        self.base.make_durable().map_err(base_error)?;
        let next = {
            let mut manifest = self.manifest.lock();
            manifest.checkpoint_lsn = lsn;
            manifest.layout = target;
            manifest.checkpoints += 1;
            *manifest
        };
        next.write(&*self.dir)
            .map_err(|e| format!("writing the manifest: {e}"))?;
        if relayout {
            self.base
                .drop_generation(current.generation)
                .map_err(base_error)?;
        }
        self.base.remove_obsolete(obsolete).map_err(base_error)?;
        // A checkpoint touched many pages sled would otherwise keep. Fault-ins wait for
        // the reopen under the layout lock.
        {
            let _layout = self.layout.write();
            self.base.kv().release_memory().map_err(base_error)?;
        }
        wal.retire_through(lsn).map_err(|e| e.to_string())?;
        let gap = wal.status().gap_after.load(Relaxed);
        if gap != 0 && gap <= lsn {
            let _ = wal
                .status()
                .gap_after
                .compare_exchange(gap, 0, Relaxed, Relaxed);
        }
        self.status.last_buckets.store(buckets, Relaxed);
        Ok(keys)
    }

    /// Sleeps so the checkpoint uses about its CPU share; not while the WAL runs far past
    /// its trigger (then catching up matters more than smoothness).
    fn pace(&self, wal: &Wal, worked: Duration, checkpoint_lsn: u64) {
        if self.config.cpu_share >= 1.0 || self.stop.load(Relaxed) {
            return;
        }
        let behind = wal.bytes_after(checkpoint_lsn) > self.config.wal_min_bytes.saturating_mul(4);
        if behind {
            return;
        }
        let share = self.config.cpu_share.max(0.01);
        let pause = worked
            .mul_f64((1.0 - share) / share)
            .min(Duration::from_millis(200));
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_dir::MemoryDir;

    #[test]
    fn the_manifest_round_trips_and_refuses_damage() {
        let manifest = Manifest {
            checkpoint_lsn: 12345,
            layout: Layout {
                generation: 3,
                bits: 16,
            },
            base_keys: 1_000_000,
            base_bytes: 90_000_000,
            checkpoints: 7,
        };
        let bytes = manifest.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(manifest));
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(Manifest::decode(&damaged).is_err());
        let dir = MemoryDir::default();
        assert_eq!(Manifest::read(&dir), Ok(None));
        manifest.write(&dir).unwrap();
        assert_eq!(Manifest::read(&dir), Ok(Some(manifest)));
    }

    #[test]
    fn a_fault_in_takes_a_spilled_key_back_and_eviction_waits_only_when_full() {
        let queue = SpillQueue::new(1000);
        queue.spill(DirtyEntry {
            key: b"k".as_slice().into(),
            state: Some((b"v".to_vec(), 0)),
            stamp: 1,
        });
        assert!(queue.bytes() > 0);
        let started = Instant::now();
        queue.wait_for_room();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(queue.take(b"k").unwrap().stamp, 1);
        assert_eq!(queue.take(b"k"), None);
        assert_eq!(queue.bytes(), 0);
    }
}
