//! The write-ahead log: the change log's chunks in segment files, written by a log thread
//! with one write per chunk. `appendfsync always` syncs after every write (connections
//! waiting on the same sync share it: group commit); `everysec` syncs from a second thread
//! once a second; `no` leaves it to the kernel.
//!
//! A segment starts with a header naming its first LSN and the last LSN of the segment
//! before it; a sealed segment therefore knows where its valid data ends, and a segment
//! reused from an old one never lets stale chunks through (their LSNs do not follow).
//! Recovery reads every chunk after the checkpoint: a torn last chunk is the tail of a
//! crash and is dropped; a bad chunk in a sealed segment (or one followed by valid chunks)
//! is corruption, reported with its file and offset.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::change_log::{CHUNK_HEADER, ChangeLog, Cursor, ParsedChunk, TakeError, parse_chunk};
use crate::data_dir::{DataDir, DataFile};

/// When written records are made durable; Redis's `appendfsync` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// After every write, before a waiting client is answered.
    Always,
    /// At most about a second after the write.
    #[default]
    EverySec,
    /// When the kernel writes dirty pages back (and at segment ends and shutdown).
    No,
}

/// A WAL that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A sealed segment (or the middle of the last one) holds bytes that are not a chunk.
    #[error("corrupt WAL segment {file} at byte {offset}: {detail}")]
    Corrupt {
        /// The segment file.
        file: String,
        /// Where the bad bytes start.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read, written or synced.
    #[error("WAL I/O on {file}: {source}")]
    Io {
        /// The file or directory.
        file: String,
        /// The failure.
        source: io::Error,
    },
    /// A record in a valid chunk does not apply (a bug, or a file from a newer version).
    #[error("WAL record {lsn} in {file}: {detail}")]
    Record {
        /// The segment file.
        file: String,
        /// The record.
        lsn: u64,
        /// What is wrong.
        detail: String,
    },
}

fn io_err(file: &str) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        file: file.to_string(),
        source,
    }
}

const SEGMENT_MAGIC: &[u8; 8] = b"RKVWAL\0\x01";
/// `magic | version u32 | reserved u32 | first_lsn u64 | prev_last_lsn u64 | crc u32 | pad`.
pub const SEGMENT_HEADER: usize = 40;
const SEGMENT_VERSION: u32 = 1;

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The LSN of its first record.
    pub first_lsn: u64,
    /// The last LSN the segment before it holds (0: none). Where it is below
    /// `first_lsn - 1`, records were lost in between (the disk failed).
    pub prev_last_lsn: u64,
}

impl SegmentHeader {
    fn encode(&self) -> [u8; SEGMENT_HEADER] {
        let mut out = [0u8; SEGMENT_HEADER];
        out[..8].copy_from_slice(SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        out[24..32].copy_from_slice(&self.prev_last_lsn.to_le_bytes());
        let crc = crc32fast::hash(&out[..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        let header = bytes.get(..SEGMENT_HEADER)?;
        if &header[..8] != SEGMENT_MAGIC
            || u32::from_le_bytes(header[8..12].try_into().ok()?) != SEGMENT_VERSION
            || crc32fast::hash(&header[..32]) != u32::from_le_bytes(header[32..36].try_into().ok()?)
        {
            return None;
        }
        Some(SegmentHeader {
            first_lsn: u64::from_le_bytes(header[16..24].try_into().ok()?),
            prev_last_lsn: u64::from_le_bytes(header[24..32].try_into().ok()?),
        })
    }
}

/// The name of the segment whose first record is `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn is_recycled(name: &str) -> bool {
    name.starts_with("recycle-") && name.ends_with(".log")
}

/// A segment in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its file.
    pub name: String,
    /// Its header.
    pub header: SegmentHeader,
    /// The last LSN it holds (below `first_lsn` when it holds none).
    pub last_lsn: u64,
    /// Bytes of valid data, header included.
    pub bytes: u64,
}

/// What a recovery read found.
#[derive(Debug, Default)]
pub struct WalScan {
    /// Segments still needed, oldest first, with what they hold.
    pub segments: Vec<SegmentInfo>,
    /// Spare files from retired segments, to reuse.
    pub recycled: Vec<String>,
    /// The last valid LSN found (or the `from_lsn` given, when none follows it).
    pub last_lsn: u64,
    /// A torn tail: the last segment's file and the offset its valid data ends at.
    pub torn: Option<(String, u64)>,
    /// Records after this LSN were lost while the node ran (the disk failed) and the
    /// segments after the loss were moved aside: (last LSN before, first LSN after).
    pub gap: Option<(u64, u64)>,
    /// Records delivered (after `from_lsn`).
    pub records: u64,
}

/// Reads every chunk holding records after `from_lsn`, in order, passing each to `visit`
/// (which filters the records at or below `from_lsn` itself). Segments entirely at or
/// below `from_lsn` are listed as retired-to-be (not in [`WalScan::segments`]) and
/// recycled.
pub fn scan(
    dir: &dyn DataDir,
    from_lsn: u64,
    visit: &mut dyn FnMut(&str, ParsedChunk<'_>) -> Result<(), WalError>,
) -> Result<WalScan, WalError> {
    let names = dir.list().map_err(io_err("data directory"))?;
    let mut result = WalScan {
        last_lsn: from_lsn,
        ..WalScan::default()
    };
    let mut segments: Vec<(u64, String)> = Vec::new();
    for name in names {
        if let Some(first) = parse_segment_name(&name) {
            segments.push((first, name));
        } else if is_recycled(&name) {
            result.recycled.push(name);
        }
    }
    segments.sort();
    let mut headers = Vec::with_capacity(segments.len());
    for (i, (first, name)) in segments.iter().enumerate() {
        let bytes = dir.read(name).map_err(io_err(name))?;
        let header = SegmentHeader::decode(&bytes);
        // A segment whose creation never completed holds nothing: a crash while the newest
        // one was created, or a failing disk (an empty file, or a reused one whose header
        // still names its old first LSN).
        let abandoned = i + 1 == segments.len()
            || bytes.len() < SEGMENT_HEADER
            || bytes[..SEGMENT_HEADER].iter().all(|&b| b == 0)
            || header.is_some_and(|h| h.first_lsn != *first);
        match header {
            Some(header) if header.first_lsn == *first => {
                headers.push((name.clone(), header, bytes))
            }
            _ if abandoned => result.recycled.push(name.clone()),
            _ => {
                return Err(WalError::Corrupt {
                    file: name.clone(),
                    offset: 0,
                    detail: "bad segment header".into(),
                });
            }
        }
    }
    let count = headers.len();
    let mut expected = None::<u64>;
    let mut segments_kept = Vec::new();
    let mut orphaned = Vec::new();
    for i in 0..count {
        let (name, header, bytes) = &headers[i];
        if result.gap.is_some() {
            orphaned.push(name.clone());
            continue;
        }
        // A sealed segment ends where the next one says it does.
        let sealed_end = headers.get(i + 1).map(|(_, next, _)| next.prev_last_lsn);
        if sealed_end.is_some_and(|end| end <= from_lsn) {
            // Everything here is in the checkpoint already.
            result.recycled.push(name.clone());
            continue;
        }
        if let Some(expected) = expected
            && header.first_lsn != expected
        {
            return Err(WalError::Corrupt {
                file: name.clone(),
                offset: 0,
                detail: format!(
                    "segment starts at LSN {} where {expected} was due",
                    header.first_lsn
                ),
            });
        }
        let mut next = header.first_lsn;
        let mut offset = SEGMENT_HEADER;
        loop {
            if sealed_end.is_some_and(|end| next > end) {
                break;
            }
            let chunk = parse_chunk(&bytes[offset..]).filter(|c| c.first_lsn == next);
            let Some(chunk) = chunk else {
                match sealed_end {
                    Some(end) => {
                        return Err(WalError::Corrupt {
                            file: name.clone(),
                            offset: offset as u64,
                            detail: format!(
                                "no valid chunk for LSN {next} (the segment holds up to {end})"
                            ),
                        });
                    }
                    None => {
                        if let Some(found) = later_chunk(&bytes[offset..], next) {
                            return Err(WalError::Corrupt {
                                file: name.clone(),
                                offset: offset as u64,
                                detail: format!(
                                    "bad chunk for LSN {next} followed by a valid chunk at byte {}",
                                    offset + found
                                ),
                            });
                        }
                        // Zeros, or an older chunk of a reused file, end the data cleanly;
                        // anything else is the tail of a write a crash cut.
                        let stale =
                            parse_chunk(&bytes[offset..]).is_some_and(|c| c.first_lsn < next);
                        if !stale && offset < bytes.len() && bytes[offset..].iter().any(|&b| b != 0)
                        {
                            result.torn = Some((name.clone(), offset as u64));
                        }
                        break;
                    }
                }
            };
            let framed = chunk.framed_len;
            let last = chunk.last_lsn();
            if last > from_lsn {
                result.records += last - chunk.first_lsn.max(from_lsn + 1) + 1;
                visit(name, chunk)?;
            }
            next = last + 1;
            offset += framed;
        }
        let last_lsn = next - 1;
        result.last_lsn = result.last_lsn.max(last_lsn);
        segments_kept.push(SegmentInfo {
            name: name.clone(),
            header: *header,
            last_lsn,
            bytes: offset as u64,
        });
        expected = match headers.get(i + 1) {
            Some((_, next_header, _)) if next_header.first_lsn > last_lsn + 1 => {
                // The log thread dropped records it could not write.
                result.gap = Some((last_lsn, next_header.first_lsn));
                None
            }
            _ => Some(last_lsn + 1),
        };
    }
    for name in orphaned {
        let aside = format!("{name}.orphaned");
        tracing::error!(segment = %name, "WAL records after a lost stretch cannot be applied; moved aside");
        dir.rename(&name, &aside).map_err(io_err(&name))?;
    }
    result.segments = segments_kept;
    Ok(result)
}

/// Looks for a valid chunk for an LSN at or after `expected` anywhere in `bytes` (after a
/// bad one): if there is one, the bad chunk is corruption, not a torn tail.
fn later_chunk(bytes: &[u8], expected: u64) -> Option<usize> {
    (1..bytes.len().saturating_sub(CHUNK_HEADER)).find(|&at| {
        let lsn = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        // Stale chunks of a reused segment have older LSNs: they never match.
        lsn >= expected
            && lsn < expected.saturating_add(1 << 40)
            && parse_chunk(&bytes[at..]).is_some()
    })
}

/// Where durability stands, for clients that wait on it. Called by the log threads.
pub trait DurableWatch: Send + Sync {
    /// Every record up to `durable` is on disk; every record up to `failed` (if above) was
    /// dropped or may be lost: its writers must not be told it is safe.
    fn advanced(&self, durable: u64, failed: u64);
}

impl DurableWatch for () {
    fn advanced(&self, _: u64, _: u64) {}
}

/// Counters and health of the WAL.
#[derive(Debug, Default)]
pub struct WalStatus {
    /// False after a failed write or sync, true again after the next success.
    pub healthy: AtomicBool,
    /// The last LSN written to a segment.
    pub written_lsn: AtomicU64,
    /// The last LSN known to be on disk.
    pub durable_lsn: AtomicU64,
    /// The last LSN whose write or sync failed (0: none).
    pub failed_lsn: AtomicU64,
    /// Bytes written since start.
    pub bytes_written: AtomicU64,
    /// Bytes in the live segments.
    pub bytes_on_disk: AtomicU64,
    /// Live segments.
    pub segments: AtomicU64,
    /// Writes (one per chunk).
    pub writes: AtomicU64,
    /// Syncs.
    pub fsyncs: AtomicU64,
    /// Failed writes and syncs.
    pub failures: AtomicU64,
    /// Records dropped because they could not be written.
    pub dropped_records: AtomicU64,
    /// The LSN after which records were dropped and a checkpoint must cover the loss
    /// (0: none pending).
    pub gap_after: AtomicU64,
    /// Unix seconds of the last successful sync.
    pub last_fsync_unix: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl WalStatus {
    /// The last failure, until the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    fn fail(&self, what: &str, error: &io::Error) {
        self.failures.fetch_add(1, Relaxed);
        let message = format!("{what}: {error}");
        let mut last = self.last_error.lock();
        if last.is_none() {
            tracing::warn!(error = %message, "WAL write failed");
        }
        *last = Some(message);
        self.healthy.store(false, Relaxed);
    }

    fn succeed(&self) {
        if !self.healthy.swap(true, Relaxed) {
            tracing::info!("WAL writes work again");
        }
        *self.last_error.lock() = None;
    }
}

/// Tunables of the log threads.
#[derive(Debug, Clone, Copy)]
pub struct WalConfig {
    /// When to sync.
    pub policy: FsyncPolicy,
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Spare segment files kept for reuse (a reused file is already allocated, so syncing
    /// a write into it journals no size change).
    pub spare_segments: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            policy: FsyncPolicy::EverySec,
            segment_bytes: 32 << 20,
            spare_segments: 1,
        }
    }
}

/// Name of a spare segment being zero-filled.
const PREPARING: &str = "recycle-preparing.log";

struct Segments {
    live: Vec<SegmentInfo>,
    spare: Vec<String>,
}

struct Current {
    file: Arc<dyn DataFile>,
    offset: u64,
    /// Files written since the last sync (the current one, and one sealed meanwhile).
    unsynced: Vec<Arc<dyn DataFile>>,
}

struct Shared {
    dir: Arc<dyn DataDir>,
    config: WalConfig,
    status: WalStatus,
    segments: Mutex<Segments>,
    current: Mutex<Option<Current>>,
    watch: Arc<dyn DurableWatch>,
    stop: AtomicBool,
    /// A write or sync failed: the next write starts a new segment.
    broken: AtomicBool,
    wake_syncer: Condvar,
    syncer_lock: Mutex<()>,
}

/// The running WAL: the log thread and (under `everysec`) the sync thread.
pub struct Wal {
    shared: Arc<Shared>,
    log: Arc<ChangeLog>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("policy", &self.shared.config.policy)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Starts the log threads after a recovery `scan`: a new segment begins at the log's
    /// next LSN, after everything the scan found.
    pub fn start(
        dir: Arc<dyn DataDir>,
        log: Arc<ChangeLog>,
        scan: WalScan,
        config: WalConfig,
        watch: Arc<dyn DurableWatch>,
    ) -> Result<Wal, WalError> {
        let next_lsn = log.last_lsn() + 1;
        let mut cursor = log
            .subscribe(next_lsn, true)
            .expect("a new consumer at the log's head");
        let status = WalStatus::default();
        status.healthy.store(true, Relaxed);
        status.written_lsn.store(next_lsn - 1, Relaxed);
        status.durable_lsn.store(next_lsn - 1, Relaxed);
        let shared = Arc::new(Shared {
            dir,
            config,
            status,
            segments: Mutex::new(Segments {
                live: scan.segments,
                spare: scan.recycled,
            }),
            current: Mutex::new(None),
            watch,
            stop: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            wake_syncer: Condvar::new(),
            syncer_lock: Mutex::new(()),
        });
        shared.trim_spares();
        shared.open_segment(next_lsn, next_lsn - 1)?;
        shared.update_disk_figures();
        let writer = {
            let shared = shared.clone();
            let log = log.clone();
            std::thread::Builder::new()
                .name("ringkv-wal".into())
                .spawn(move || shared.run_writer(&log, &mut cursor))
                .map_err(io_err("the WAL thread"))?
        };
        let syncer = if config.policy == FsyncPolicy::EverySec {
            let shared = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("ringkv-wal-sync".into())
                    .spawn(move || shared.run_syncer())
                    .map_err(io_err("the WAL sync thread"))?,
            )
        } else {
            None
        };
        // Under always, an fdatasync into already-allocated blocks journals no size change:
        // about half the latency of one that grows the file, which every reply waits for.
        // A thread keeps a zero-filled spare ready for the next segment (in the background,
        // so a start never waits for 32 MiB of zeros).
        let preparer = if config.policy == FsyncPolicy::Always {
            let shared = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("ringkv-wal-prep".into())
                    .spawn(move || shared.run_preparer())
                    .map_err(io_err("the WAL preparer thread"))?,
            )
        } else {
            None
        };
        Ok(Wal {
            shared,
            log,
            threads: Mutex::new(
                [Some(writer), syncer, preparer]
                    .into_iter()
                    .flatten()
                    .collect(),
            ),
        })
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.shared.config.policy
    }

    /// Counters and health.
    pub fn status(&self) -> &WalStatus {
        &self.shared.status
    }

    /// Bytes of WAL holding records after `lsn` (what a checkpoint at `lsn` would let go).
    pub fn bytes_after(&self, lsn: u64) -> u64 {
        let segments = self.shared.segments.lock();
        segments
            .live
            .iter()
            .filter(|s| s.last_lsn > lsn)
            .map(|s| s.bytes)
            .sum()
    }

    /// Deletes (or keeps for reuse) every segment whose records are all at or below
    /// `lsn`: a checkpoint covers them. Never the segment being written.
    pub fn retire_through(&self, lsn: u64) -> Result<(), WalError> {
        let retired: Vec<String> = {
            let mut segments = self.shared.segments.lock();
            let keep_from = segments
                .live
                .iter()
                .position(|s| s.last_lsn > lsn)
                .unwrap_or(segments.live.len())
                .min(segments.live.len().saturating_sub(1));
            let retired: Vec<SegmentInfo> = segments.live.drain(..keep_from).collect();
            retired.into_iter().map(|s| s.name).collect()
        };
        for name in retired {
            let spare = {
                let segments = self.shared.segments.lock();
                segments.spare.len() < self.shared.config.spare_segments
            };
            if spare {
                let new_name = format!("recycle-{name}");
                self.shared
                    .dir
                    .rename(&name, &new_name)
                    .map_err(io_err(&name))?;
                self.shared.segments.lock().spare.push(new_name);
            } else {
                self.shared.dir.remove(&name).map_err(io_err(&name))?;
            }
        }
        self.shared.update_disk_figures();
        Ok(())
    }

    /// Syncs everything written so far (SAVE, a clean stop); the durable LSN.
    pub fn sync_now(&self) -> Result<u64, WalError> {
        self.shared.sync_written().map_err(io_err("WAL sync"))
    }

    /// Waits (bounded) until the log thread has written everything appended so far.
    pub fn drain(&self, timeout: Duration) -> bool {
        let target = self.log.last_lsn();
        let deadline = Instant::now() + timeout;
        while self.shared.status.written_lsn.load(Relaxed) < target
            && self.shared.status.failed_lsn.load(Relaxed) < target
        {
            if Instant::now() > deadline {
                return false;
            }
            self.log.hurry();
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Writes what is left, syncs it, stops the threads (once; later calls only sync).
    pub fn shutdown(&self) -> Result<u64, WalError> {
        self.drain(Duration::from_secs(10));
        self.shared.stop.store(true, Relaxed);
        self.log.close();
        self.shared.wake_syncer.notify_all();
        for thread in std::mem::take(&mut *self.threads.lock()) {
            let _ = thread.join();
        }
        self.sync_now()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if !self.threads.lock().is_empty() {
            let _ = self.shutdown();
        }
    }
}

impl Shared {
    fn trim_spares(&self) {
        let mut segments = self.segments.lock();
        while segments.spare.len() > self.config.spare_segments {
            let name = segments.spare.pop().expect("non-empty");
            let _ = self.dir.remove(&name);
        }
    }

    /// Zero-fills a spare segment when none is ready.
    fn prepare_spare(&self) -> Result<(), WalError> {
        if !self.segments.lock().spare.is_empty() {
            return Ok(());
        }
        let file = self.dir.open(PREPARING).map_err(io_err(PREPARING))?;
        let zeros = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < self.config.segment_bytes {
            let len = zeros
                .len()
                .min((self.config.segment_bytes - offset) as usize);
            file.write_at(offset, &zeros[..len])
                .map_err(io_err(PREPARING))?;
            offset += len as u64;
            if self.stop.load(Relaxed) {
                return Ok(());
            }
        }
        file.sync_data().map_err(io_err(PREPARING))?;
        drop(file);
        let name = format!("recycle-{}.log", unix_nanos());
        self.dir
            .rename(PREPARING, &name)
            .map_err(io_err(PREPARING))?;
        self.dir.sync().map_err(io_err("data directory"))?;
        self.segments.lock().spare.push(name);
        Ok(())
    }

    fn run_preparer(&self) {
        while !self.stop.load(Relaxed) {
            if let Err(error) = self.prepare_spare() {
                tracing::debug!(%error, "preparing a spare WAL segment failed; retrying");
            }
            let mut guard = self.syncer_lock.lock();
            if !self.stop.load(Relaxed) {
                self.wake_syncer
                    .wait_for(&mut guard, Duration::from_millis(200));
            }
        }
    }

    fn update_disk_figures(&self) {
        let segments = self.segments.lock();
        self.status
            .bytes_on_disk
            .store(segments.live.iter().map(|s| s.bytes).sum(), Relaxed);
        self.status
            .segments
            .store(segments.live.len() as u64, Relaxed);
    }

    /// Starts a segment at `first_lsn` (its header made durable), after a segment that
    /// ends at `prev_last_lsn`.
    fn open_segment(&self, first_lsn: u64, prev_last_lsn: u64) -> Result<(), WalError> {
        let name = segment_name(first_lsn);
        let spare = self.segments.lock().spare.pop();
        if let Some(spare) = spare {
            self.dir.rename(&spare, &name).map_err(io_err(&spare))?;
        }
        let file = self.dir.open(&name).map_err(io_err(&name))?;
        let header = SegmentHeader {
            first_lsn,
            prev_last_lsn,
        };
        let created = file
            .write_at(0, &header.encode())
            .and_then(|()| file.sync_data())
            .and_then(|()| self.dir.sync());
        if let Err(error) = created {
            // Not left behind as a segment that names LSNs it never held.
            drop(file);
            let _ = self.dir.remove(&name);
            return Err(WalError::Io {
                file: name,
                source: error,
            });
        }
        {
            let mut segments = self.segments.lock();
            segments.live.retain(|s| s.name != name);
            segments.live.push(SegmentInfo {
                name,
                header,
                last_lsn: first_lsn - 1,
                bytes: SEGMENT_HEADER as u64,
            });
        }
        *self.current.lock() = Some(Current {
            file,
            offset: SEGMENT_HEADER as u64,
            unsynced: Vec::new(),
        });
        self.update_disk_figures();
        Ok(())
    }

    fn run_writer(&self, log: &ChangeLog, cursor: &mut Cursor) {
        let mut last_probe = Instant::now();
        loop {
            // A waiting client (always, WAIT) wakes the thread at once; otherwise a write of
            // what gathered every few milliseconds costs few wake-ups and few syscalls.
            let wait = if self.config.policy == FsyncPolicy::Always {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(5)
            };
            let broken = self.broken.load(Relaxed);
            let chunk = match log.take(cursor, wait) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    // Idle and broken: probe the disk, so a node that refuses writes notices
                    // when it works again.
                    if broken && last_probe.elapsed() >= Duration::from_millis(500) {
                        last_probe = Instant::now();
                        self.reopen_after_failure(cursor.next_lsn());
                    }
                    continue;
                }
                Err(TakeError::Closed) => return,
                Err(TakeError::Lagged) => unreachable!("a required consumer never lags"),
            };
            if self.broken.load(Relaxed) && !self.reopen_after_failure(chunk.first_lsn()) {
                self.drop_chunk(chunk.first_lsn(), chunk.last_lsn());
                continue;
            }
            let written = self.write_chunk(chunk.frame(), chunk.last_lsn());
            let (first, last) = (chunk.first_lsn(), chunk.last_lsn());
            log.recycle(chunk);
            if let Err(error) = written {
                self.status.fail("write", &error);
                self.drop_chunk(first, last);
                self.broken.store(true, Relaxed);
                continue;
            }
            if self.config.policy == FsyncPolicy::Always {
                if let Err(error) = self.sync_written() {
                    self.sync_failed(&error);
                    continue;
                }
            }
            self.status.succeed();
        }
    }

    /// What was written since the last good sync may not be on disk: its writers must
    /// not be told otherwise, and the segment is not trusted for more.
    fn sync_failed(&self, error: &io::Error) {
        self.status.fail("fsync", error);
        let written = self.status.written_lsn.load(Relaxed);
        self.drop_chunk(self.status.durable_lsn.load(Relaxed) + 1, written);
        self.broken.store(true, Relaxed);
    }

    /// Records that `first..=last` will never be durable.
    fn drop_chunk(&self, first: u64, last: u64) {
        self.status
            .dropped_records
            .fetch_add(last + 1 - first.min(last + 1), Relaxed);
        self.status.failed_lsn.fetch_max(last, Relaxed);
        let durable = self.status.durable_lsn.load(Relaxed);
        let _ = self
            .status
            .gap_after
            .compare_exchange(0, durable.max(1), Relaxed, Relaxed);
        self.watch.advanced(durable, last);
    }

    /// After a failed write or sync: a new segment, whose header says where the good data
    /// of the previous one ends. True when it could be created (the disk works again).
    fn reopen_after_failure(&self, next_lsn: u64) -> bool {
        let durable = self.status.durable_lsn.load(Relaxed);
        match self.open_segment(next_lsn, durable) {
            Ok(()) => {
                self.status.written_lsn.store(next_lsn - 1, Relaxed);
                self.status.durable_lsn.store(next_lsn - 1, Relaxed);
                self.broken.store(false, Relaxed);
                self.status.succeed();
                true
            }
            Err(WalError::Io { source, .. }) => {
                self.status.fail("new segment", &source);
                false
            }
            Err(_) => false,
        }
    }

    fn write_chunk(&self, frame: &[u8], last_lsn: u64) -> io::Result<()> {
        let roll = {
            let current = self.current.lock();
            current
                .as_ref()
                .is_some_and(|c| c.offset >= self.config.segment_bytes)
        };
        if roll {
            // A sealed segment must be whole on disk: its successor's header vouches for it.
            self.sync_written()?;
            let written = self.status.written_lsn.load(Relaxed);
            self.open_segment(written + 1, written)
                .map_err(|e| match e {
                    WalError::Io { source, .. } => source,
                    other => io::Error::other(other.to_string()),
                })?;
        }
        let offset = {
            let mut guard = self.current.lock();
            let current = guard
                .as_mut()
                .ok_or_else(|| io::Error::other("no WAL segment"))?;
            current.file.write_at(current.offset, frame)?;
            current.offset += frame.len() as u64;
            if !current
                .unsynced
                .iter()
                .any(|f| Arc::ptr_eq(f, &current.file))
            {
                current.unsynced.push(current.file.clone());
            }
            current.offset
        };
        {
            let mut segments = self.segments.lock();
            if let Some(last) = segments.live.last_mut() {
                last.last_lsn = last_lsn;
                last.bytes = offset;
            }
        }
        self.status.written_lsn.store(last_lsn, Relaxed);
        self.status.writes.fetch_add(1, Relaxed);
        self.status
            .bytes_written
            .fetch_add(frame.len() as u64, Relaxed);
        self.status
            .bytes_on_disk
            .fetch_add(frame.len() as u64, Relaxed);
        Ok(())
    }

    /// Syncs every file written since the last sync; publishes the new durable LSN.
    fn sync_written(&self) -> io::Result<u64> {
        let _serial = self.syncer_lock.lock();
        let written = self.status.written_lsn.load(Relaxed);
        let files = match self.current.lock().as_mut() {
            Some(current) => std::mem::take(&mut current.unsynced),
            None => Vec::new(),
        };
        for file in &files {
            if let Err(error) = file.sync_data() {
                if let Some(current) = self.current.lock().as_mut() {
                    current.unsynced.extend(files.iter().cloned());
                }
                return Err(error);
            }
        }
        if !files.is_empty() {
            self.status.fsyncs.fetch_add(1, Relaxed);
            self.status.last_fsync_unix.store(unix_seconds(), Relaxed);
        }
        let previous = self.status.durable_lsn.fetch_max(written, Relaxed);
        if written > previous || !files.is_empty() {
            self.watch
                .advanced(written.max(previous), self.status.failed_lsn.load(Relaxed));
        }
        Ok(written.max(previous))
    }

    fn run_syncer(&self) {
        let mut guard = self.syncer_lock.lock();
        while !self.stop.load(Relaxed) {
            self.wake_syncer
                .wait_for(&mut guard, Duration::from_secs(1));
            if self.stop.load(Relaxed) {
                break;
            }
            parking_lot::MutexGuard::unlocked(&mut guard, || {
                if self.status.written_lsn.load(Relaxed) > self.status.durable_lsn.load(Relaxed)
                    && let Err(error) = self.sync_written()
                {
                    self.sync_failed(&error);
                }
            });
        }
    }
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
