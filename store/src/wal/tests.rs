//! The log thread and recovery reads against in-memory, real and failing directories.

use std::sync::Arc;

use rand::{Rng, SeedableRng};

use super::*;
use crate::change_log::{LogLimits, RecordKind};
use crate::data_dir::{DiskDir, FaultyDir, MemoryDir};

fn append(log: &ChangeLog, i: u64) -> u64 {
    let key = format!("key:{i}");
    log.append(RecordKind::Set, 1, key.as_bytes(), |body| {
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(format!("value:{i}").as_bytes());
    })
}

/// The (LSN, key) of each record a scan delivered.
type Seen = Vec<(u64, Vec<u8>)>;

/// Every record a scan from `from` delivers.
fn read_back(dir: &dyn DataDir, from: u64) -> Result<(Seen, WalScan), WalError> {
    let mut seen = Vec::new();
    let scan = scan(dir, from, &mut |_, chunk| {
        for record in chunk.records {
            let record = record.unwrap();
            if record.lsn > from {
                seen.push((record.lsn, record.key.to_vec()));
            }
        }
        Ok(())
    })?;
    Ok((seen, scan))
}

fn start(dir: Arc<dyn DataDir>, config: WalConfig) -> (Arc<ChangeLog>, Wal) {
    let scan = scan(&*dir, 0, &mut |_, _| Ok(())).unwrap();
    let log = Arc::new(ChangeLog::new(scan.last_lsn + 1, LogLimits::default()));
    let wal = Wal::start(dir, log.clone(), scan, config, Arc::new(())).unwrap();
    (log, wal)
}

fn small_segments(policy: FsyncPolicy) -> WalConfig {
    WalConfig {
        policy,
        segment_bytes: 4096,
        spare_segments: 2,
    }
}

#[test]
fn records_come_back_in_order_across_segments_and_restarts() {
    let dir: Arc<dyn DataDir> = Arc::new(MemoryDir::default());
    let (log, wal) = start(dir.clone(), small_segments(FsyncPolicy::EverySec));
    for i in 1..=500 {
        assert_eq!(append(&log, i), i);
        if i % 7 == 0 {
            assert!(wal.drain(Duration::from_secs(5)));
        }
    }
    assert_eq!(wal.shutdown().unwrap(), 500);
    let (seen, scan) = read_back(&*dir, 0).unwrap();
    assert_eq!(seen.len(), 500);
    assert!(seen.iter().enumerate().all(|(i, (lsn, key))| {
        *lsn == i as u64 + 1 && *key == format!("key:{lsn}").into_bytes()
    }));
    assert!(
        scan.segments.len() > 3,
        "4 KiB segments roll: {}",
        scan.segments.len()
    );
    assert_eq!((scan.last_lsn, scan.torn, scan.gap), (500, None, None));

    // A restart continues after what is there.
    let (log, wal) = start(dir.clone(), small_segments(FsyncPolicy::EverySec));
    assert_eq!(append(&log, 501), 501);
    wal.shutdown().unwrap();
    let (seen, _) = read_back(&*dir, 480).unwrap();
    assert_eq!(seen.first().map(|s| s.0), Some(481));
    assert_eq!(seen.last().map(|s| s.0), Some(501));
}

#[test]
fn retired_segments_are_reused_and_their_stale_chunks_never_replay() {
    let dir: Arc<dyn DataDir> = Arc::new(MemoryDir::default());
    let (log, wal) = start(dir.clone(), small_segments(FsyncPolicy::No));
    for i in 1..=400 {
        append(&log, i);
        if i % 10 == 0 {
            wal.drain(Duration::from_secs(5));
        }
    }
    wal.drain(Duration::from_secs(5));
    let before = wal.status().segments.load(Relaxed);
    wal.retire_through(300).unwrap();
    let after = wal.status().segments.load(Relaxed);
    assert!(after < before, "{before} → {after}");
    let names = dir.list().unwrap();
    assert!(names.iter().any(|n| n.starts_with("recycle-")), "{names:?}");
    // New segments reuse the spare files, whose old chunks must not come back.
    for i in 401..=700 {
        append(&log, i);
        if i % 10 == 0 {
            wal.drain(Duration::from_secs(5));
        }
    }
    wal.shutdown().unwrap();
    let (seen, scan) = read_back(&*dir, 300).unwrap();
    let lsns: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(lsns, (301..=700).collect::<Vec<_>>());
    assert_eq!(scan.gap, None);
}

/// Writes `count` chunks of a few records each; returns the directory.
fn wal_with_chunks(count: u64) -> MemoryDir {
    let dir = MemoryDir::default();
    let (log, wal) = start(Arc::new(dir.clone()), WalConfig::default());
    for i in 1..=count * 3 {
        append(&log, i);
        if i % 3 == 0 {
            wal.drain(Duration::from_secs(5));
        }
    }
    wal.shutdown().unwrap();
    dir
}

fn only_segment(dir: &MemoryDir) -> String {
    let names: Vec<String> = dir
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("wal-"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

#[test]
fn a_torn_tail_recovers_every_complete_chunk_before_it() {
    let dir = wal_with_chunks(20);
    let name = only_segment(&dir);
    let whole = dir.read(&name).unwrap();
    // Where each chunk ends, and the last LSN it holds.
    let mut ends = Vec::new();
    let mut offset = SEGMENT_HEADER;
    while let Some(chunk) = parse_chunk(&whole[offset..]) {
        offset += chunk.framed_len;
        ends.push((offset, chunk.last_lsn()));
    }
    assert_eq!(ends.last().map(|e| e.1), Some(60));
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    for _ in 0..200 {
        let cut = rng.random_range(SEGMENT_HEADER..whole.len());
        let torn = MemoryDir::default();
        torn.open(&name)
            .unwrap()
            .write_at(0, &whole[..cut])
            .unwrap();
        let (seen, scan) =
            read_back(&torn, 0).unwrap_or_else(|e| panic!("seed {seed}, cut {cut}: {e}"));
        // Exactly the chunks that end at or before the cut survive, in order.
        let (complete, last) = ends
            .iter()
            .rev()
            .find(|(end, _)| *end <= cut)
            .copied()
            .unwrap_or((SEGMENT_HEADER, 0));
        assert_eq!(scan.last_lsn, last, "seed {seed}, cut {cut}");
        assert_eq!(seen.len() as u64, last);
        assert!(seen.iter().enumerate().all(|(i, s)| s.0 == i as u64 + 1));
        assert_eq!(scan.segments[0].bytes as usize, complete);
        assert_eq!(
            scan.torn.is_some(),
            complete < cut,
            "seed {seed}, cut {cut}"
        );
    }
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_stops_recovery_with_its_file_and_offset() {
    let dir = MemoryDir::default();
    let (log, wal) = start(Arc::new(dir.clone()), small_segments(FsyncPolicy::EverySec));
    for i in 1..=300 {
        append(&log, i);
        if i % 5 == 0 {
            wal.drain(Duration::from_secs(5));
        }
    }
    wal.shutdown().unwrap();
    let first = dir
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("wal-"))
        .unwrap();
    let mut bytes = dir.read(&first).unwrap();
    let at = SEGMENT_HEADER + 100;
    bytes[at] ^= 0x10;
    dir.open(&first).unwrap().write_at(0, &bytes).unwrap();
    match read_back(&dir, 0) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, first);
            assert!(
                offset as usize <= at && at < offset as usize + 200,
                "{offset}"
            );
        }
        other => panic!("corruption went unnoticed: {other:?}"),
    }
}

#[test]
fn a_flipped_bit_mid_way_through_the_last_segment_is_corruption_not_a_torn_tail() {
    let dir = wal_with_chunks(20);
    let name = only_segment(&dir);
    let mut bytes = dir.read(&name).unwrap();
    bytes[SEGMENT_HEADER + 30] ^= 1;
    dir.open(&name).unwrap().write_at(0, &bytes).unwrap();
    assert!(matches!(read_back(&dir, 0), Err(WalError::Corrupt { .. })));
}

#[test]
fn a_failing_disk_drops_what_it_cannot_write_and_recovery_stops_at_the_loss() {
    let faulty = Arc::new(FaultyDir::new(MemoryDir::default()));
    let (log, wal) = start(faulty.clone(), WalConfig::default());
    for i in 1..=10 {
        append(&log, i);
    }
    assert!(wal.drain(Duration::from_secs(5)));
    wal.sync_now().unwrap();
    faulty.fail_writes(true);
    for i in 11..=20 {
        append(&log, i);
    }
    assert!(wal.drain(Duration::from_secs(5)));
    assert!(!wal.status().healthy.load(Relaxed));
    assert!(wal.status().last_error().unwrap().contains("No space left"));
    assert_eq!(wal.status().failed_lsn.load(Relaxed), 20);
    assert_eq!(wal.status().gap_after.load(Relaxed), 10);
    faulty.fail_writes(false);
    for i in 21..=30 {
        append(&log, i);
    }
    assert!(wal.drain(Duration::from_secs(5)));
    assert!(
        wal.status().healthy.load(Relaxed),
        "the next write probes and succeeds"
    );
    wal.shutdown().unwrap();
    let (seen, scan) = read_back(faulty.inner(), 0).unwrap();
    assert_eq!(
        seen.last().map(|s| s.0),
        Some(10),
        "nothing after the loss applies"
    );
    assert_eq!(scan.gap, Some((10, 21)));
    assert!(
        faulty
            .inner()
            .list()
            .unwrap()
            .iter()
            .any(|n| n.ends_with(".orphaned"))
    );
    // Once a checkpoint covers the loss, recovery starts after it and sees no gap.
    let (seen, scan) = read_back(faulty.inner(), 20).unwrap();
    assert_eq!(scan.gap, None);
    assert!(seen.is_empty(), "the orphaned segment was moved aside");
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, u64)>>);

impl DurableWatch for Recorder {
    fn advanced(&self, durable: u64, failed: u64) {
        self.0.lock().push((durable, failed));
    }
}

/// A WAL over `dir` whose durability reports land in the returned recorder.
fn start_recorded(
    dir: Arc<dyn DataDir>,
    policy: FsyncPolicy,
) -> (Arc<ChangeLog>, Wal, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let scan = scan(&*dir, 0, &mut |_, _| Ok(())).unwrap();
    let log = Arc::new(ChangeLog::new(scan.last_lsn + 1, LogLimits::default()));
    let config = WalConfig {
        policy,
        ..WalConfig::default()
    };
    let wal = Wal::start(dir, log.clone(), scan, config, recorder.clone()).unwrap();
    (log, wal, recorder)
}

/// Polls `holds` for up to `within`; its last answer.
fn eventually(within: Duration, holds: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !holds() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    holds()
}

#[test]
fn always_reports_each_write_durable_and_a_failed_sync_as_failed() {
    let faulty = Arc::new(FaultyDir::new(MemoryDir::default()));
    let (log, wal, recorder) = start_recorded(faulty.clone(), FsyncPolicy::Always);
    append(&log, 1);
    log.hurry();
    assert!(eventually(Duration::from_secs(5), || {
        wal.status().durable_lsn.load(Relaxed) >= 1
    }));
    assert_eq!(wal.status().durable_lsn.load(Relaxed), 1);
    assert!(recorder.0.lock().contains(&(1, 0)));
    faulty.fail_syncs(true);
    append(&log, 2);
    log.hurry();
    assert!(eventually(Duration::from_secs(5), || {
        wal.status().failed_lsn.load(Relaxed) >= 2
    }));
    assert_eq!(wal.status().failed_lsn.load(Relaxed), 2);
    assert!(recorder.0.lock().iter().any(|&(_, failed)| failed == 2));
    faulty.fail_syncs(false);
    drop(wal);
}

#[test]
fn everysec_reports_a_failed_background_sync_and_recovery_stops_before_it() {
    let faulty = Arc::new(FaultyDir::new(MemoryDir::default()));
    let (log, wal, recorder) = start_recorded(faulty.clone(), FsyncPolicy::EverySec);
    for i in 1..=10 {
        append(&log, i);
    }
    assert!(wal.drain(Duration::from_secs(5)));
    assert_eq!(wal.sync_now().unwrap(), 10);

    // Written but not yet synced when the disk starts failing: the once-a-second sync
    // fails, so 11..=20 are reported lost, not durable.
    faulty.fail_syncs(true);
    for i in 11..=20 {
        append(&log, i);
    }
    assert!(wal.drain(Duration::from_secs(5)));
    assert!(eventually(Duration::from_secs(5), || {
        wal.status().failed_lsn.load(Relaxed) >= 20
    }));
    assert_eq!(wal.status().durable_lsn.load(Relaxed), 10);
    assert!(!wal.status().healthy.load(Relaxed));
    assert!(wal.status().last_error().unwrap().contains("fsync"));
    assert_eq!(wal.status().gap_after.load(Relaxed), 10);
    assert!(
        recorder.0.lock().iter().all(|&(durable, _)| durable <= 10),
        "nothing past the failed sync was reported durable"
    );
    assert!(recorder.0.lock().contains(&(10, 20)));

    // The disk recovers: the next record opens a segment that vouches only for 1..=10.
    faulty.fail_syncs(false);
    for i in 21..=30 {
        append(&log, i);
    }
    assert!(wal.drain(Duration::from_secs(5)));
    assert!(eventually(Duration::from_secs(5), || wal
        .status()
        .healthy
        .load(Relaxed)));
    assert_eq!(wal.sync_now().unwrap(), 30);
    wal.shutdown().unwrap();
    let lsns = |seen: Seen| seen.into_iter().map(|s| s.0).collect::<Vec<_>>();
    // A checkpoint that covered the loss: recovery replays what followed it.
    let (seen, scan) = read_back(faulty.inner(), 20).unwrap();
    assert_eq!(scan.gap, None);
    assert_eq!(lsns(seen), (21..=30).collect::<Vec<_>>());
    // None did: the unsynced records are not replayed as if they were safe, nor anything
    // after them.
    let (seen, scan) = read_back(faulty.inner(), 0).unwrap();
    assert_eq!(lsns(seen), (1..=10).collect::<Vec<_>>());
    assert_eq!(scan.gap, Some((10, 21)));
}

#[test]
fn a_real_directory_survives_reopening() {
    let temp = tempfile::tempdir().unwrap();
    let dir: Arc<dyn DataDir> = Arc::new(DiskDir::open(temp.path()).unwrap());
    let (log, wal) = start(dir.clone(), WalConfig::default());
    for i in 1..=1000 {
        append(&log, i);
    }
    wal.shutdown().unwrap();
    let reopened = DiskDir::open(temp.path()).unwrap();
    let (seen, _) = read_back(&reopened, 0).unwrap();
    assert_eq!(seen.len(), 1000);
}
