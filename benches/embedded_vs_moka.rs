//! The embedded cache against moka on the same get-heavy workload: `get_with` on keys drawn
//! from Zipf(0.99) over 1,000,000 keys, a cache of 100,000 entries, a loader that answers
//! at once (so the figure is the cache's own cost), two threads on two cores. Reports
//! throughput and hit ratio (1 − loads / gets) for ringkv LRU, ringkv LFU and moka
//! (TinyLFU), best of three runs each.
//!
//! `cargo bench --bench embedded_vs_moka`

#![allow(clippy::print_stdout)] // A benchmark report is its output.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use ringkv::{Cache, Eviction};

const KEYS: u64 = 1_000_000;
const CAPACITY: u64 = 100_000;
const GETS_PER_THREAD: usize = 2_000_000;
const THREADS: usize = 2;
const RUNS: usize = 3;

/// The same request stream for every cache: one pre-drawn key list per thread.
fn streams() -> Vec<Arc<Vec<u64>>> {
    let zipf = Zipf::new(KEYS as f64, 0.99).expect("valid Zipf");
    (0..THREADS)
        .map(|t| {
            let mut rng = SmallRng::seed_from_u64(t as u64 + 1);
            Arc::new(
                (0..GETS_PER_THREAD)
                    .map(|_| zipf.sample(&mut rng) as u64)
                    .collect(),
            )
        })
        .collect()
}

/// Runs every stream on its own worker thread; returns (gets/s, hit ratio).
fn run<C, F>(streams: &[Arc<Vec<u64>>], make: impl Fn() -> C, get_with: F) -> (f64, f64)
where
    C: Clone + Send + 'static,
    F: Fn(C, u64, Arc<AtomicU64>) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>>
        + Send
        + Sync
        + Copy
        + 'static,
{
    let mut best = (0.0f64, 0.0);
    for _ in 0..RUNS {
        let cache = make();
        let loads = Arc::new(AtomicU64::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .build()
            .expect("runtime");
        let started = Instant::now();
        runtime.block_on(async {
            let tasks: Vec<_> = streams
                .iter()
                .map(|stream| {
                    let (cache, loads, stream) = (cache.clone(), loads.clone(), stream.clone());
                    tokio::spawn(async move {
                        let mut sum = 0u64;
                        for &key in stream.iter() {
                            sum =
                                sum.wrapping_add(get_with(cache.clone(), key, loads.clone()).await);
                        }
                        sum
                    })
                })
                .collect();
            for task in tasks {
                std::hint::black_box(task.await.expect("worker"));
            }
        });
        let gets = (THREADS * GETS_PER_THREAD) as f64;
        let throughput = gets / started.elapsed().as_secs_f64();
        let hit_ratio = 1.0 - loads.load(Relaxed) as f64 / gets;
        if throughput > best.0 {
            best = (throughput, hit_ratio);
        }
    }
    best
}

fn ringkv(eviction: Eviction) -> impl Fn() -> Cache<u64, u64> {
    move || {
        Cache::builder()
            .max_capacity(CAPACITY)
            .eviction(eviction)
            .build()
    }
}

fn main() {
    let streams = streams();
    println!(
        "get_with, Zipf(0.99) over {KEYS} keys, capacity {CAPACITY}, {THREADS} threads × {GETS_PER_THREAD} gets, best of {RUNS}\n"
    );
    println!("| cache | Mgets/s | hit ratio |");
    println!("|---|---|---|");
    for (name, eviction) in [
        ("ringkv::Cache (LRU)", Eviction::Lru),
        ("ringkv::Cache (LFU)", Eviction::Lfu),
    ] {
        let (throughput, hits) = run(&streams, ringkv(eviction), |cache, key, loads| {
            Box::pin(async move {
                cache
                    .get_with(key, async {
                        loads.fetch_add(1, Relaxed);
                        key * 2
                    })
                    .await
            })
        });
        println!("| {name} | {:.2} | {:.4} |", throughput / 1e6, hits);
    }
    let (throughput, hits) = run(
        &streams,
        || moka::future::Cache::<u64, u64>::new(CAPACITY),
        |cache, key, loads| {
            Box::pin(async move {
                cache
                    .get_with(key, async {
                        loads.fetch_add(1, Relaxed);
                        key * 2
                    })
                    .await
            })
        },
    );
    println!(
        "| moka::future::Cache (TinyLFU) | {:.2} | {:.4} |",
        throughput / 1e6,
        hits
    );
}
