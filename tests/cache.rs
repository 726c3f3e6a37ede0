//! The embedded cache: stampede protection (one load, shared errors, hand-over after a
//! panic or cancellation), TTL on a mock clock, XFetch early refresh, grace, adaptive TTL
//! and bounded capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use ringkv::{Cache, Eviction, MockClock};
use tokio::sync::Notify;

fn mock_clock() -> Arc<MockClock> {
    Arc::new(MockClock::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_run_one_load() {
    let cache: Cache<String, u64> = Cache::builder().max_capacity(1_000).build();
    let origin_calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let (cache, calls) = (cache.clone(), origin_calls.clone());
            tokio::spawn(async move {
                cache
                    .get_with("hot".to_string(), async move {
                        calls.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 42);
    }
    assert_eq!(origin_calls.load(SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.loads, 1);
    // Callers that arrived after the value landed hit instead of waiting.
    assert_eq!(stats.coalesced_waits + stats.hits, 999);
    assert!(stats.load_time >= Duration::from_millis(50));
    assert_eq!(cache.loads_in_flight(), 0);
}

#[derive(Debug, PartialEq)]
struct OriginDown(u32);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_is_shared_by_its_waiters_and_not_cached() {
    let cache: Cache<u32, String> = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .try_get_with(7, async move {
                        calls.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<String, _>(OriginDown(503))
                    })
                    .await
            })
        })
        .collect();
    let mut errors = Vec::new();
    for task in tasks {
        errors.push(task.await.unwrap().unwrap_err());
    }
    assert_eq!(calls.load(SeqCst), 1, "one load for all twenty callers");
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
    assert_eq!(*errors[0], OriginDown(503));
    assert_eq!(cache.stats().load_failures, 1);
    // Not cached: the next call loads again, and succeeds.
    let value = cache
        .try_get_with(7, async { Ok::<_, OriginDown>("back".to_string()) })
        .await;
    assert_eq!(value.unwrap(), "back");
    assert_eq!(cache.stats().loads, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loader_hands_the_load_to_one_waiter() {
    let cache: Cache<&'static str, u32> = Cache::builder().build();
    let started = Arc::new(Notify::new());
    let leader = {
        let (cache, started) = (cache.clone(), started.clone());
        tokio::spawn(async move {
            cache
                .get_with("k", async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    panic!("origin client bug");
                })
                .await
        })
    };
    started.notified().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_with("k", async move {
                        calls.fetch_add(1, SeqCst);
                        5
                    })
                    .await
            })
        })
        .collect();
    assert!(leader.await.unwrap_err().is_panic());
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), 5);
    }
    assert_eq!(calls.load(SeqCst), 1, "exactly one waiter took over");
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_loader_hands_the_load_to_one_waiter() {
    let cache: Cache<&'static str, u32> = Cache::builder().build();
    let slow = cache.get_with("k", async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        1
    });
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cache.get_with("k", async { 2 }).await
        })
    };
    // The leader is cancelled by its caller's timeout while the waiter waits on it.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), slow)
            .await
            .is_err()
    );
    assert_eq!(waiter.await.unwrap(), 2);
    assert_eq!(cache.get("k"), Some(2));
    assert_eq!(cache.stats().coalesced_waits, 1);
}

#[tokio::test]
async fn values_expire_on_the_clock_and_reload() {
    let clock = mock_clock();
    let cache: Cache<u8, u32> = Cache::builder()
        .time_to_live(Duration::from_secs(10))
        .clock(clock.clone())
        .build();
    assert_eq!(cache.get_with(1, async { 1 }).await, 1);
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(cache.get(&1), Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get(&1), None, "expired at exactly its TTL");
    assert_eq!(cache.get_with(1, async { 2 }).await, 2);
    cache.insert_with_ttl(3, 30, Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get(&3), None, "its own TTL, not the default");
    cache.invalidate(&1);
    assert_eq!(cache.get(&1), None);
}

#[tokio::test]
async fn xfetch_refreshes_a_hot_key_before_it_expires() {
    let clock = mock_clock();
    let cache: Cache<u8, u32> = Cache::builder()
        .time_to_live(Duration::from_secs(10))
        .xfetch_beta(1.0)
        .clock(clock.clone())
        .seed(7)
        .build();
    let version = Arc::new(AtomicUsize::new(0));
    // The origin takes 200 ms of (mock) time, so XFetch's δ is 200 ms.
    let load = || {
        let (clock, version) = (clock.clone(), version.clone());
        async move {
            clock.advance(Duration::from_millis(200));
            version.fetch_add(1, SeqCst) as u32 + 1
        }
    };
    assert_eq!(cache.get_with(0, load()).await, 1);
    let expires_at = 200 + 10_000;
    // Read every 10 ms up to the expiry: one read must refresh before the value expires,
    // and no read ever misses.
    let mut refreshed_at = None;
    while clock_ms(&clock) < expires_at {
        let value = cache.get_with(0, load()).await;
        if value == 2 && refreshed_at.is_none() {
            refreshed_at = Some(clock_ms(&clock));
        }
        clock.advance(Duration::from_millis(10));
    }
    let refreshed_at = refreshed_at.expect("an early refresh happened");
    assert!(refreshed_at <= expires_at, "refreshed at {refreshed_at}");
    assert!(
        refreshed_at > expires_at - 3_000,
        "not absurdly early: {refreshed_at}"
    );
    let stats = cache.stats();
    assert_eq!(stats.early_refreshes, 1);
    assert_eq!(stats.misses, 1, "only the very first read missed");
}

fn clock_ms(clock: &MockClock) -> u64 {
    use ringkv::Clock;
    clock.now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_grace_readers_get_the_stale_value_while_one_reloads() {
    let clock = mock_clock();
    let cache: Cache<u8, u32> = Cache::builder()
        .time_to_live(Duration::from_secs(1))
        .grace_period(Duration::from_secs(5))
        .clock(clock.clone())
        .build();
    cache.insert(1, 10);
    clock.advance(Duration::from_secs(2));
    let release = Arc::new(Notify::new());
    let refresher = {
        let (cache, release) = (cache.clone(), release.clone());
        tokio::spawn(async move {
            cache
                .get_with(1, async move {
                    release.notified().await;
                    11
                })
                .await
        })
    };
    while cache.loads_in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    // While the refresh runs, everyone else gets the stale value at once.
    for _ in 0..5 {
        assert_eq!(
            cache
                .get_with(1, async { unreachable!("no second load") })
                .await,
            10
        );
    }
    release.notify_one();
    assert_eq!(refresher.await.unwrap(), 11);
    assert_eq!(cache.get(&1), Some(11));
    // The five readers got the stale value; the refreshing caller got the fresh one.
    assert_eq!(cache.stats().stale_served, 5);
    // Past the grace period the value is gone.
    clock.advance(Duration::from_secs(7));
    assert_eq!(cache.get_with(1, async { 12 }).await, 12);
}

#[tokio::test]
async fn adaptive_ttl_lengthens_for_stable_hot_keys_and_shortens_for_changing_ones() {
    let clock = mock_clock();
    let cache: Cache<&'static str, u32> = Cache::builder()
        .adaptive_ttl(
            Duration::from_secs(10),
            Duration::from_secs(1),
            Duration::from_secs(80),
        )
        .clock(clock.clone())
        .build();
    // How long does a freshly loaded value live? Read it twice (hot), then step to expiry.
    async fn lifetime(
        cache: &Cache<&'static str, u32>,
        clock: &MockClock,
        key: &'static str,
        value: u32,
    ) -> u64 {
        cache.get_with(key, async move { value }).await;
        let start = clock_ms(clock);
        cache.get(&key);
        cache.get(&key);
        while cache.get(&key).is_some() {
            clock.advance(Duration::from_millis(500));
        }
        clock_ms(clock) - start
    }
    // ×1.5 while stable and hot, ×0.25 on a change, within [1 s, 80 s]; measured in
    // 500 ms steps.
    let mut lifetimes = Vec::new();
    for value in [1, 1, 1, 1, 1, 1, 1, 2, 3] {
        lifetimes.push(lifetime(&cache, &clock, "stable", value).await);
    }
    assert_eq!(
        lifetimes,
        [
            10_000, 15_000, 22_500, 34_000, 51_000, 76_000, 80_000, 20_000, 5_000
        ]
    );
}

#[test]
fn capacity_bounds_entries_and_lfu_keeps_the_hot_ones() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(1_000)
        .eviction(Eviction::Lfu)
        .seed(1)
        .build();
    let hot: Vec<u32> = (0..100).collect();
    for &key in &hot {
        cache.insert(key, key);
    }
    for round in 0..20_000u32 {
        for &key in &hot {
            if round < 20 {
                cache.get(&key);
            }
        }
        cache.insert(1_000_000 + round, round);
    }
    assert!(cache.entry_count() <= 1_000 + 16, "{}", cache.entry_count());
    let survivors = hot.iter().filter(|k| cache.get(k).is_some()).count();
    assert!(survivors >= 90, "only {survivors} of 100 hot keys survived");
    assert!(cache.stats().evictions >= 19_000);
}

#[test]
fn a_weigher_bounds_bytes() {
    let cache: Cache<u32, Vec<u8>> = Cache::builder()
        .max_capacity(64 * 1024)
        .weigher(|_, v: &Vec<u8>| v.len() as u32)
        .build();
    for key in 0..1_000 {
        cache.insert(key, vec![0u8; 1024]);
    }
    let bytes = cache.weighted_size();
    assert!(bytes <= 64 * 1024 + 16 * 1024, "{bytes}");
    assert!(bytes >= 48 * 1024, "evicts only what it must: {bytes}");
}

#[tokio::test]
async fn a_persistence_tier_restarts_the_cache_warm_without_expired_entries() {
    use ringkv::store::tier::Storage;
    let dir = tempfile::tempdir().unwrap();
    let open = || Storage::open(dir.path(), 1 << 20).unwrap();
    {
        let cache: Cache<String, String> = Cache::builder()
            .max_capacity(100)
            .persistence(open())
            .try_build()
            .unwrap();
        for i in 0..150 {
            cache.insert_with_ttl(format!("k{i}"), format!("v{i}"), Duration::from_secs(600));
            if i == 120 {
                // Half from the base image, half from the WAL tail after it.
                cache.checkpoint_persistence().unwrap();
            }
        }
        cache.insert_with_ttl("short".into(), "gone".into(), Duration::from_millis(50));
        cache.insert("forever".into(), "here".into());
        cache.invalidate("k149");
        cache.flush_persistence().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let clock = mock_clock();
    let cache: Cache<String, String> = Cache::builder()
        .max_capacity(100)
        .persistence(open())
        .clock(clock.clone())
        .try_build()
        .unwrap();
    // Evicted entries were deleted from the tier too, so what comes back is what the
    // cache held: at most its capacity, never the expired or invalidated ones.
    let recovered = cache.stats().recovered;
    assert!((90..=100).contains(&recovered), "{recovered}");
    assert_eq!(cache.get("forever"), Some("here".to_string()));
    assert_eq!(cache.get("short"), None);
    assert_eq!(cache.get("k149"), None);
    let served = (0..149)
        .filter_map(|i| cache.get(&format!("k{i}")).map(|v| (i, v)))
        .inspect(|(i, v)| assert_eq!(v, &format!("v{i}")))
        .count();
    assert_eq!(
        served as u64 + 1,
        cache.entry_count(),
        "every recovered entry is served"
    );
    // A recovered entry keeps its remaining TTL (600 s less the restart), not forever;
    // an entry stored without one keeps none.
    let survivor = (0..149)
        .map(|i| format!("k{i}"))
        .find(|k| cache.get(k).is_some())
        .expect("some entry was recovered");
    clock.advance(Duration::from_secs(590));
    assert!(cache.get(&survivor).is_some(), "still within its TTL");
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        cache.get(&survivor),
        None,
        "expired at its original deadline"
    );
    assert_eq!(cache.get("forever"), Some("here".to_string()));
    // A second restart after a checkpoint of the recovered cache gives the same.
    cache.checkpoint_persistence().unwrap();
    drop(cache);
    let again: Cache<String, String> = Cache::builder()
        .max_capacity(100)
        .persistence(open())
        .try_build()
        .unwrap();
    assert_eq!(again.get("forever"), Some("here".to_string()));
    assert_eq!(again.get("k149"), None);
}

#[test]
fn the_fsync_policy_is_the_callers_and_always_syncs_every_write() {
    use ringkv::store::tier::Storage;
    use ringkv::store::wal::FsyncPolicy;
    let storage = Storage::memory();
    let cache: Cache<u64, u64> = Cache::builder()
        .persistence(storage.clone())
        .fsync(FsyncPolicy::Always)
        .build();
    for i in 0..100 {
        cache.insert(i, i * 2);
    }
    cache.flush_persistence().unwrap();
    drop(cache);
    let cache: Cache<u64, u64> = Cache::builder().persistence(storage).build();
    assert_eq!(cache.stats().recovered, 100);
    assert_eq!(cache.get(&7), Some(14));
}

#[test]
fn a_failing_tier_never_fails_the_cache() {
    use ringkv::store::base_image::{FaultyKv, MemoryKv};
    use ringkv::store::data_dir::{FaultyDir, MemoryDir};
    use ringkv::store::tier::Storage;
    let dir = Arc::new(FaultyDir::new(MemoryDir::default()));
    let storage = Storage {
        dir: dir.clone(),
        base: Arc::new(FaultyKv::new(MemoryKv::default())),
    };
    let cache: Cache<String, String> = Cache::builder().persistence(storage).build();
    dir.fail_writes(true);
    cache.insert("a".into(), "1".into());
    assert!(
        cache.flush_persistence().is_err(),
        "the failure is reported"
    );
    assert_eq!(
        cache.get("a"),
        Some("1".to_string()),
        "and memory still serves"
    );
    dir.fail_writes(false);
    cache.insert("b".into(), "2".into());
    assert!(cache.flush_persistence().is_ok());
}
