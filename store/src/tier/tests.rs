//! The whole tier over in-memory and failing backends: recovery from base image plus WAL,
//! checkpoints racing writers, store mode larger than memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::*;
use crate::base_image::{FaultyKv, MemoryKv};
use crate::data_dir::MemoryDir;
use crate::wal::FsyncPolicy;
use crate::{EvictionPolicy, Value};

const NOW: u64 = 1_700_000_000_000;

struct Node {
    tier: Tier,
    store: Arc<Store>,
}

fn config(mode: TierMode) -> TierConfig {
    TierConfig {
        mode,
        wal: WalConfig {
            policy: FsyncPolicy::EverySec,
            segment_bytes: 64 << 10,
            spare_segments: 2,
        },
        checkpoint: CheckpointConfig {
            // Only explicit checkpoints, so each test decides when they happen.
            wal_percent: 0,
            cpu_share: 1.0,
            batch_bytes: 4 << 10,
            ..CheckpointConfig::default()
        },
        ..TierConfig::default()
    }
}

fn boot(dir: &MemoryDir, kv: Arc<dyn BaseKv>, config: TierConfig, store: Store) -> Node {
    let tier = Tier::open(Arc::new(dir.clone()), kv, config).unwrap();
    tier.recover(&store, NOW).unwrap();
    let store = Arc::new(store);
    tier.start(store.clone(), Arc::new(())).unwrap();
    Node { tier, store }
}

fn store() -> Store {
    Store::builder().shards(16).build()
}

fn checkpoint(tier: &Tier) -> CheckpointResult {
    let (tx, rx) = std::sync::mpsc::channel();
    tier.request_checkpoint(Some(Box::new(move |r| tx.send(r).unwrap())));
    rx.recv_timeout(Duration::from_secs(30))
        .expect("a checkpoint finishes")
}

/// Waits until the log thread wrote everything appended so far.
fn settle(tier: &Tier) {
    let log = tier.log().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tier.wal_status().unwrap().written_lsn.load(Relaxed) < log.last_lsn()
        && Instant::now() < deadline
    {
        log.hurry();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn set(store: &Store, key: &str, value: &str, deadline: u64) {
    store.write(key.as_bytes(), NOW, |slot| {
        slot.set(Value::Str(value.as_bytes().to_vec()), Some(deadline))
    });
}

fn get(store: &Store, key: &str) -> Option<Value> {
    store.read(key.as_bytes(), NOW, |v| v.cloned())
}

fn contents(store: &Store, now: u64) -> BTreeMap<Vec<u8>, (Value, Option<u64>)> {
    store
        .keys(b"*", now)
        .into_iter()
        .map(|k| {
            let entry = store
                .inspect(&k, now, |e| e.map(|e| (e.value.clone(), e.expires_at)))
                .unwrap();
            (k, entry)
        })
        .collect()
}

#[test]
fn a_restart_recovers_the_wal_alone_then_the_base_image_with_its_tail() {
    let dir = MemoryDir::default();
    let kv: Arc<dyn BaseKv> = Arc::new(MemoryKv::default());
    let node = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    for i in 0..300 {
        set(&node.store, &format!("k{i}"), &format!("v{i}"), 0);
    }
    node.store.write(b"h", NOW, |slot| {
        slot.hash_insert(b"f", b"1").unwrap();
        slot.hash_insert(b"g", b"2").unwrap();
    });
    set(&node.store, "gone-later", "x", NOW + 10);
    node.tier.shutdown().unwrap();
    let expected = contents(&node.store, NOW);

    // Nothing checkpointed yet: the WAL holds everything.
    let node = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    assert_eq!(contents(&node.store, NOW), expected);
    assert_eq!(node.tier.recovery_report().base_keys, 0);
    checkpoint(&node.tier).unwrap();
    assert_eq!(node.tier.manifest().base_keys, 302);
    // After the checkpoint: changes in the tail, on top of the base image.
    set(&node.store, "k1", "changed", 0);
    node.store.remove(b"k2", NOW);
    node.store.write(b"h", NOW, |slot| {
        slot.hash_remove(b"f").map(|_| ()).unwrap()
    });
    node.tier.shutdown().unwrap();
    let expected = contents(&node.store, NOW);

    let node = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    assert_eq!(contents(&node.store, NOW), expected);
    let report = node.tier.recovery_report();
    assert_eq!(report.base_keys, 302);
    assert!(report.replayed >= 3, "{report:?}");
    assert_eq!(
        get(&node.store, "k1"),
        Some(Value::Str(b"changed".to_vec()))
    );
    assert_eq!(get(&node.store, "k2"), None);
    node.tier.shutdown().unwrap();

    // A key whose deadline passed while the node was down is not served.
    let later = Store::builder().shards(16).build();
    let tier = Tier::open(Arc::new(dir.clone()), kv, config(TierMode::Cache)).unwrap();
    tier.recover(&later, NOW + 1000).unwrap();
    assert!(later.read(b"gone-later", NOW + 1000, |v| v.is_none()));
    assert_eq!(tier.recovery_report().expired_while_down, 1);
}

#[test]
fn an_hset_on_a_huge_hash_logs_one_field_not_the_hash() {
    let dir = MemoryDir::default();
    let node = boot(
        &dir,
        Arc::new(MemoryKv::default()),
        config(TierMode::Cache),
        store(),
    );
    node.store.write(b"big", NOW, |slot| {
        for i in 0..100_000 {
            slot.hash_insert(format!("field:{i}").as_bytes(), b"value")
                .unwrap();
        }
    });
    let log = node.tier.log().unwrap().clone();
    let status = || node.tier.wal_status().unwrap();
    let wait_written = |lsn: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while status().written_lsn.load(Relaxed) < lsn && Instant::now() < deadline {
            log.hurry();
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_written(log.last_lsn());
    let before = status().bytes_written.load(Relaxed);
    node.store.write(b"big", NOW, |slot| {
        slot.hash_insert(b"field:7", b"new").unwrap()
    });
    wait_written(log.last_lsn());
    let record = status().bytes_written.load(Relaxed) - before;
    // The chunk frame, the record header, the key, one field and its value.
    assert!(record < 100, "one HSET wrote {record} bytes");
    node.tier.shutdown().unwrap();
}

#[test]
fn checkpoints_racing_writers_lose_nothing_and_resurrect_nothing() {
    let seed: u64 = rand::random();
    let dir = MemoryDir::default();
    let kv: Arc<dyn BaseKv> = Arc::new(MemoryKv::default());
    let node = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let store = node.store.clone();
        let stop = stop.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut ops = 0u64;
            while !stop.load(Relaxed) || ops < 20_000 {
                let key = format!("key:{}", rng.random_range(0..400));
                match rng.random_range(0..10) {
                    0..=3 => set(&store, &key, &format!("v{ops}"), 0),
                    4 => {
                        store.remove(key.as_bytes(), NOW);
                    }
                    5 | 6 => {
                        let field = format!("f{}", rng.random_range(0..5));
                        store.write(key.as_bytes(), NOW, |slot| {
                            let _ = slot.hash_insert(field.as_bytes(), b"x");
                        });
                    }
                    7 => {
                        store.write(key.as_bytes(), NOW, |slot| {
                            let _ = slot.append(b"+");
                        });
                    }
                    8 => {
                        store.write(key.as_bytes(), NOW, |slot| {
                            slot.set_expires_at(Some(NOW + 1_000_000 + ops))
                        });
                    }
                    _ => {
                        let _guard = store.exclusive();
                        set(&store, &key, "a", 0);
                        set(&store, &format!("{key}:pair"), "b", 0);
                    }
                }
                ops += 1;
                done.store(ops, Relaxed);
                if ops > 200_000 {
                    break;
                }
            }
        })
    };
    for round in 1..=5 {
        // Each checkpoint starts in the middle of the writes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Relaxed) < round * 3_000 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        if let Err(e) = checkpoint(&node.tier) {
            panic!("seed {seed}: {e}");
        }
    }
    stop.store(true, Relaxed);
    writer.join().unwrap();
    node.tier.shutdown().unwrap();
    let expected = contents(&node.store, NOW);
    let recovered = boot(&dir, kv, config(TierMode::Cache), store());
    assert_eq!(contents(&recovered.store, NOW), expected, "seed {seed}");
    assert!(
        recovered.tier.recovery_report().base_keys > 0,
        "seed {seed}: {:?} {:?}",
        recovered.tier.recovery_report(),
        recovered.tier.manifest()
    );
    recovered.tier.shutdown().unwrap();
}

#[test]
fn a_flushall_before_the_checkpoint_and_keys_after_it_recover_exactly() {
    let dir = MemoryDir::default();
    let kv: Arc<dyn BaseKv> = Arc::new(MemoryKv::default());
    let node = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    for i in 0..50 {
        set(&node.store, &format!("old{i}"), "v", 0);
    }
    checkpoint(&node.tier).unwrap();
    {
        let _gate = node.store.exclusive();
        drop(node.store.flush());
    }
    set(&node.store, "new", "v", 0);
    node.tier.shutdown().unwrap();
    let recovered = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    assert_eq!(recovered.store.len(), 1);
    assert!(get(&recovered.store, "new").is_some());
    // Once checkpointed, the base image itself has dropped the old keys.
    checkpoint(&recovered.tier).unwrap();
    assert_eq!(recovered.tier.manifest().base_keys, 1);
    recovered.tier.shutdown().unwrap();
}

#[test]
fn a_failed_checkpoint_is_retried_and_loses_nothing() {
    let dir = MemoryDir::default();
    let faulty = Arc::new(FaultyKv::new(MemoryKv::default()));
    let node = boot(&dir, faulty.clone(), config(TierMode::Cache), store());
    for i in 0..100 {
        set(&node.store, &format!("k{i}"), "v", 0);
    }
    faulty.fail_writes(true);
    assert!(checkpoint(&node.tier).is_err());
    for i in 0..10 {
        node.store.remove(format!("k{i}").as_bytes(), NOW);
    }
    faulty.fail_writes(false);
    checkpoint(&node.tier).unwrap();
    assert_eq!(node.tier.manifest().base_keys, 90);
    node.tier.shutdown().unwrap();
    let recovered = boot(&dir, faulty, config(TierMode::Cache), store());
    assert_eq!(recovered.store.len(), 90);
    recovered.tier.shutdown().unwrap();
}

#[test]
fn store_mode_five_times_larger_than_memory_returns_every_key_after_a_restart() {
    let dir = MemoryDir::default();
    let kv: Arc<dyn BaseKv> = Arc::new(MemoryKv::default());
    let limited = || {
        Store::builder()
            .shards(16)
            .maxmemory(200_000)
            .policy(EvictionPolicy::AllKeysLru)
            .build()
    };
    let node = boot(&dir, kv.clone(), config(TierMode::Store), limited());
    let value = "v".repeat(200);
    let count = 5 * 200_000 / 300;
    for i in 0..count {
        node.store.ensure_memory(NOW).unwrap();
        set(&node.store, &format!("k{i}"), &format!("{value}{i}"), 0);
    }
    assert!(node.store.len() < count, "eviction ran");
    let read = |node: &Node, i: usize| {
        let key = format!("k{i}");
        if let Some(v) = get(&node.store, &key) {
            return Some(v);
        }
        let faulted = node.tier.fault_in(key.as_bytes(), NOW).unwrap()?;
        node.store.load(
            key.as_bytes(),
            faulted.value.clone(),
            faulted.deadline,
            NOW,
            faulted.changed,
        );
        Some(faulted.value)
    };
    for i in 0..count {
        assert_eq!(
            read(&node, i),
            Some(Value::Str(format!("{value}{i}").into_bytes())),
            "k{i}"
        );
        node.store.ensure_memory(NOW).unwrap();
    }
    node.tier.shutdown().unwrap();
    let node = boot(&dir, kv, config(TierMode::Store), limited());
    // Recovery loads up to maxmemory (and the WAL tail on top); the first write evicts.
    node.store.ensure_memory(NOW).unwrap();
    assert!(node.store.used_memory() <= 200_000);
    for i in 0..count {
        assert_eq!(
            read(&node, i),
            Some(Value::Str(format!("{value}{i}").into_bytes())),
            "k{i} after restart"
        );
        node.store.ensure_memory(NOW).unwrap();
    }
    node.tier.shutdown().unwrap();
}

#[test]
fn an_atomic_group_cut_off_by_a_crash_is_dropped_whole() {
    let dir = MemoryDir::default();
    let kv: Arc<dyn BaseKv> = Arc::new(MemoryKv::default());
    let node = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    set(&node.store, "before", "1", 0);
    settle(&node.tier);
    {
        let _gate = node.store.exclusive();
        set(&node.store, "a", "1", 0);
        set(&node.store, "b", "1", 0);
    }
    node.tier.shutdown().unwrap();
    // Cut the last segment just before the Commit record's chunk ends: the group's
    // records are there, its Commit is not.
    let name = dir
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("wal-"))
        .max()
        .unwrap();
    let bytes = dir.read(&name).unwrap();
    let file = dir.open(&name).unwrap();
    file.truncate(0).unwrap();
    file.write_at(0, &bytes[..bytes.len() - 1]).unwrap();
    let recovered = boot(&dir, kv, config(TierMode::Cache), store());
    assert!(get(&recovered.store, "before").is_some());
    assert_eq!(
        (get(&recovered.store, "a"), get(&recovered.store, "b")),
        (None, None),
        "both or neither"
    );
    recovered.tier.shutdown().unwrap();
}

#[test]
fn a_growing_image_is_relaid_out_and_keeps_every_key() {
    let dir = MemoryDir::default();
    let kv: Arc<dyn BaseKv> = Arc::new(MemoryKv::default());
    let node = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    let value = "v".repeat(100);
    for i in 0..2_000 {
        set(&node.store, &format!("k{i}"), &value, 0);
    }
    checkpoint(&node.tier).unwrap();
    let small = node.tier.manifest().layout;
    // Twenty times the data: the next checkpoint writes a new layout with more buckets.
    for i in 2_000..40_000 {
        set(&node.store, &format!("k{i}"), &value, 0);
    }
    node.store.remove(b"k7", NOW);
    checkpoint(&node.tier).unwrap();
    let large = node.tier.manifest().layout;
    assert!(large.bits >= small.bits + 2, "{small:?} → {large:?}");
    assert_ne!(large.generation, small.generation);
    assert_eq!(node.tier.manifest().base_keys, 39_999);
    node.tier.shutdown().unwrap();
    let recovered = boot(&dir, kv.clone(), config(TierMode::Cache), store());
    assert_eq!(recovered.store.len(), 39_999);
    assert_eq!(recovered.tier.recovery_report().base_keys, 39_999);
    assert!(get(&recovered.store, "k7").is_none());
    assert!(get(&recovered.store, "k39999").is_some());
    let base = crate::base_image::BaseImage::new(kv);
    assert_eq!(
        base.generations().unwrap(),
        vec![large.generation],
        "the old layout is gone"
    );
    recovered.tier.shutdown().unwrap();
}
