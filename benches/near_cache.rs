//! The near-cache against a plain RESP client, same workload, same cluster: Zipf(0.99)
//! reads over a keyspace with 1 % writes from another client. Reports read throughput of
//! both, the invalidation latency (write acknowledged → the near-cache's copy gone) and
//! stale reads (a value older than a write acknowledged more than 5 ms before the read).
//!
//! Run by `scripts/bench-near-cache.sh`, which starts the cluster. Environment:
//! RINGKV_SEEDS (comma-separated member addresses), KEYS (1,000,000), SECONDS measured
//! per client (10) after WARMUP (5), READERS (64 tasks, each yielding every YIELD_EVERY
//! reads: 8), WRITE_PERCENT (1), WRITES (`zipf` like the reads, or `uniform`),
//! READ_CORE (0: the reading client's core) and SIDE_CORE (1: the writing client's and
//! the checker's, beside the cluster).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use redis::aio::MultiplexedConnection;
use ringkv::{Cache, NearCache};

/// A stale read is one older than a write acknowledged this long before it started.
const STALE_WINDOW: Duration = Duration::from_millis(5);
const VALUE_PAD: &str = "............................................";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key_name(index: usize) -> String {
    let mut name = String::with_capacity(KEY_LEN);
    write_key_name(&mut name, index);
    name
}

/// `nc:` and 7 digits.
const KEY_LEN: usize = 10;

/// Writes `index`'s key name into `name`, replacing what it held, without allocating: a
/// reader makes each key as an application would from its request, in a buffer that stays
/// in cache. (A table of a million names looked up at random cost two cache misses per
/// read, a third of a near-cache hit's time: the harness, not the client.)
fn write_key_name(name: &mut String, index: usize) {
    let mut bytes = *b"nc:0000000";
    let mut rest = index;
    for digit in bytes[3..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    name.clear();
    name.push_str(std::str::from_utf8(&bytes).expect("ASCII"));
}

fn value_of(version: u64) -> String {
    format!("{version:020}{VALUE_PAD}")
}

/// The version a value starts with (20 decimal digits; 0 for anything else).
fn version_in(value: &[u8]) -> u64 {
    let Some(digits) = value.get(..20) else {
        return 0;
    };
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
        .unwrap_or(0)
}

/// A cluster client made of plain connections: CLUSTER SLOTS, one pipelined connection
/// per member, the key's slot picks the member. What a RESP cluster client does per read.
#[derive(Clone)]
struct Plain {
    by_slot: Arc<Vec<usize>>,
    connections: Arc<Vec<MultiplexedConnection>>,
}

impl Plain {
    async fn connect(seed: SocketAddr) -> Result<Plain> {
        let mut con = connection(seed).await?;
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut con)
            .await?;
        let redis::Value::Array(ranges) = slots else {
            bail!("CLUSTER SLOTS is an array");
        };
        let mut members: Vec<SocketAddr> = Vec::new();
        let mut by_slot = vec![0usize; 16384];
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                bail!("a slot range is an array");
            };
            let (redis::Value::Int(start), redis::Value::Int(end), redis::Value::Array(primary)) =
                (&fields[0], &fields[1], &fields[2])
            else {
                bail!("a slot range is [start, end, [host, port, ...]]");
            };
            let (redis::Value::BulkString(host), redis::Value::Int(port)) =
                (&primary[0], &primary[1])
            else {
                bail!("a primary is [host, port, ...]");
            };
            let addr: SocketAddr = format!("{}:{port}", String::from_utf8_lossy(host)).parse()?;
            let index = members.iter().position(|m| *m == addr).unwrap_or_else(|| {
                members.push(addr);
                members.len() - 1
            });
            for slot in *start..=*end {
                by_slot[slot as usize] = index;
            }
        }
        let mut connections = Vec::new();
        for member in &members {
            connections.push(connection(*member).await?);
        }
        Ok(Plain {
            by_slot: Arc::new(by_slot),
            connections: Arc::new(connections),
        })
    }

    fn for_key(&self, key: &str) -> MultiplexedConnection {
        let slot = ringkv::store::slot::key_slot(key.as_bytes());
        self.connections[self.by_slot[usize::from(slot)]].clone()
    }
}

async fn connection(addr: SocketAddr) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// What every phase shares: the keys' versions and when their last write was acknowledged.
struct Truth {
    /// Key names, made once, for the writers and the invalidation checker.
    names: Vec<String>,
    /// 32 bits: the array is read on every read, and half the size stays in cache.
    versions: Vec<AtomicU32>,
    acked_ns: Vec<AtomicU64>,
    /// The TSC clock: a read's own clock reading should not be the benchmark's cost.
    clock: quanta::Clock,
    epoch: u64,
}

impl Truth {
    fn now_ns(&self) -> u64 {
        self.clock.delta_as_nanos(self.epoch, self.clock.raw())
    }
}

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    writes: AtomicU64,
    stale_beyond_window: AtomicU64,
    stale_within_window: AtomicU64,
}

enum Reader {
    Near(NearCache<String, Arc<[u8]>>),
    Plain(Plain),
}

impl Reader {
    async fn read(&self, key: &String) -> Result<Option<Arc<[u8]>>> {
        match self {
            Reader::Near(cache) => Ok(cache.get(key).await?),
            Reader::Plain(plain) => {
                let mut con = plain.for_key(key);
                let value: Option<Vec<u8>> =
                    redis::cmd("GET").arg(key).query_async(&mut con).await?;
                Ok(value.map(Arc::from))
            }
        }
    }
}

struct Phase {
    name: &'static str,
    reads_per_second: f64,
    /// The reading thread's CPU use over the measured part (1.0: its core is saturated).
    reader_busy: f64,
    /// Reads over the whole phase, warm-up included.
    total_reads: u64,
    write_percent: f64,
    stale_during_measure: u64,
    stale_beyond_window: u64,
    stale_within_window: u64,
    invalidation: Option<Histogram<u64>>,
    /// Sampled writes whose near copy was still there 10 s later.
    never_invalidated: u64,
    near_stats: Option<ringkv::NearCacheStats>,
}

/// Where the phase's tasks run: readers on the reading core, everything else (the other
/// client's writes, the invalidation checker) beside the cluster, so the reading core
/// does reads only.
struct Runtimes {
    reads: tokio::runtime::Runtime,
    /// The reading worker's `/proc/thread-self/stat`, for its CPU time.
    reader_stat: Arc<std::sync::Mutex<Option<std::path::PathBuf>>>,
    side: tokio::runtime::Runtime,
}

fn pinned_runtime(
    core: usize,
    stat: Option<Arc<std::sync::Mutex<Option<std::path::PathBuf>>>>,
) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
            if let (Some(stat), Ok(task)) = (&stat, std::fs::read_link("/proc/thread-self")) {
                *stat.lock().unwrap() = Some(std::path::Path::new("/proc").join(task).join("stat"));
            }
        })
        .enable_all()
        .build()?)
}

/// A thread's CPU time (utime + stime) in clock ticks.
fn cpu_ticks(stat: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

fn run_phase(
    runtimes: &Runtimes,
    name: &'static str,
    reader: Arc<Reader>,
    writer: Plain,
    truth: Arc<Truth>,
    samples: Arc<Vec<u32>>,
    seconds: u64,
) -> Result<Phase> {
    let readers: usize = env_or("READERS", 64);
    let write_percent: f64 = env_or("WRITE_PERCENT", 1.0);
    let writers = 32usize;
    // WRITES=uniform spreads writes over every key; by default they follow the reads' Zipf.
    let uniform_writes = std::env::var("WRITES").is_ok_and(|w| w == "uniform");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, u64)>();
    let mut tasks = Vec::new();
    for r in 0..readers {
        let (reader, truth, samples, tally, stop) = (
            reader.clone(),
            truth.clone(),
            samples.clone(),
            tally.clone(),
            stop.clone(),
        );
        tasks.push(runtimes.reads.spawn(async move {
            let mut at = r * 7919 % samples.len();
            let (mut since_yield, yield_every) = (0usize, env_or("YIELD_EVERY", 8usize));
            let mut key = String::with_capacity(KEY_LEN);
            while !stop.load(Ordering::Relaxed) {
                let index = samples[at] as usize;
                at = (at + 1) % samples.len();
                write_key_name(&mut key, index);
                let key = &key;
                let started = truth.now_ns();
                let value = reader.read(key).await?;
                let read = value.as_deref().map_or(0, version_in);
                let latest = u64::from(truth.versions[index].load(Ordering::Acquire));
                if read < latest {
                    let acked = truth.acked_ns[index].load(Ordering::Acquire);
                    if acked + (STALE_WINDOW.as_nanos() as u64) < started {
                        tally.stale_beyond_window.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.stale_within_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A hit never waits, so a reader yields on its own now and then, as a
                // request handler would between requests: the connection tasks (and the
                // readers waiting on them) get their turn. Its reads are counted then too:
                // the writers on the other core read that counter, and an atomic add per
                // read made its cache line bounce between the cores on every read.
                since_yield += 1;
                if since_yield == yield_every {
                    tally.reads.fetch_add(since_yield as u64, Ordering::Relaxed);
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
            }
            anyhow::Ok(())
        }));
    }
    for w in 0..writers {
        let (writer, truth, samples, tally, stop, acked_tx) = (
            writer.clone(),
            truth.clone(),
            samples.clone(),
            tally.clone(),
            stop.clone(),
            acked_tx.clone(),
        );
        tasks.push(runtimes.side.spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(w as u64);
            while !stop.load(Ordering::Relaxed) {
                let reads = tally.reads.load(Ordering::Relaxed) as f64;
                if tally.writes.load(Ordering::Relaxed) as f64 >= reads * write_percent / 100.0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                // Each writer owns the keys ≡ w (mod writers): one writer per key, in order.
                // It draws until it finds one of its own (without going back to the shared
                // counters above, which the readers' core writes).
                let index = loop {
                    let index = if uniform_writes {
                        rng.random_range(0..truth.versions.len())
                    } else {
                        samples[rng.random_range(0..samples.len())] as usize
                    };
                    if index % writers == w {
                        break index;
                    }
                };
                let version = truth.versions[index].load(Ordering::Acquire) + 1;
                let version64 = u64::from(version);
                let key = &truth.names[index];
                let mut con = writer.for_key(key);
                let _: () = redis::cmd("SET")
                    .arg(key)
                    .arg(value_of(version64))
                    .query_async(&mut con)
                    .await?;
                let acked = truth.now_ns();
                truth.acked_ns[index].store(acked, Ordering::Release);
                truth.versions[index].store(version, Ordering::Release);
                tally.writes.fetch_add(1, Ordering::Relaxed);
                if tally.writes.load(Ordering::Relaxed) % 8 == 0 {
                    let _ = acked_tx.send((index, version64, acked));
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(acked_tx);
    // The checker: how long after an acknowledged write the near copy was gone, for every
    // 8th write (a sample, to keep its own load off the cluster's core). An OS thread
    // polling every 50 µs: a tokio timer's millisecond would be the figure's resolution.
    let checker = {
        let (reader, truth, stop) = (reader.clone(), truth.clone(), stop.clone());
        let core = env_or("SIDE_CORE", 1usize);
        std::thread::spawn(move || -> Result<(Option<Histogram<u64>>, u64)> {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            let Reader::Near(cache) = &*reader else {
                while !stop.load(Ordering::Relaxed) {
                    while acked_rx.try_recv().is_ok() {}
                    std::thread::sleep(Duration::from_millis(1));
                }
                return Ok((None, 0));
            };
            let (mut pending, mut never): (Vec<(usize, u64, u64)>, u64) = (Vec::new(), 0);
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                while let Ok(item) = acked_rx.try_recv() {
                    pending.push(item);
                }
                let now = truth.now_ns();
                pending.retain(|&(index, version, acked)| {
                    let held = cache.cached(&truth.names[index]);
                    if held.is_none_or(|v| version_in(&v) >= version) {
                        histogram.saturating_record(now.saturating_sub(acked).max(1));
                        return false;
                    }
                    if now - acked > 10_000_000_000 {
                        never += 1;
                        return false;
                    }
                    true
                });
                if stopping && pending.is_empty() {
                    return Ok((Some(histogram), never));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    // A warm-up first (the near-cache fills, connections settle); then the counts start.
    std::thread::sleep(Duration::from_secs(env_or("WARMUP", 5)));
    let (reads_before, writes_before) = (
        tally.reads.load(Ordering::Relaxed),
        tally.writes.load(Ordering::Relaxed),
    );
    let stale_before = (
        tally.stale_beyond_window.load(Ordering::Relaxed),
        tally.stale_within_window.load(Ordering::Relaxed),
    );
    let reader_stat = runtimes.reader_stat.lock().unwrap().clone();
    let ticks_before = reader_stat.as_deref().map_or(0, cpu_ticks);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let reader_busy = reader_stat.as_deref().map_or(0, cpu_ticks) - ticks_before;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let reads = tally.reads.load(Ordering::Relaxed) - reads_before;
    for task in tasks {
        runtimes.side.block_on(task)??;
    }
    let (invalidation, never_invalidated) = checker
        .join()
        .map_err(|_| anyhow::anyhow!("the checker panicked"))??;
    Ok(Phase {
        name,
        reads_per_second: reads as f64 / elapsed,
        // Clock ticks are 1/100 s on Linux.
        reader_busy: reader_busy as f64 / 100.0 / elapsed,
        total_reads: tally.reads.load(Ordering::Relaxed),
        write_percent: 100.0 * (tally.writes.load(Ordering::Relaxed) - writes_before) as f64
            / reads.max(1) as f64,
        // Stale reads over the whole phase, warm-up included: none may hide there.
        stale_beyond_window: tally.stale_beyond_window.load(Ordering::Relaxed),
        stale_within_window: tally.stale_within_window.load(Ordering::Relaxed),
        stale_during_measure: tally.stale_beyond_window.load(Ordering::Relaxed) - stale_before.0
            + tally.stale_within_window.load(Ordering::Relaxed)
            - stale_before.1,
        invalidation,
        never_invalidated,
        near_stats: match &*reader {
            Reader::Near(cache) => Some(cache.stats()),
            Reader::Plain(_) => None,
        },
    })
}

async fn preload(plain: &Plain, keys: usize) -> Result<()> {
    let mut batches: HashMap<usize, redis::Pipeline> = HashMap::new();
    for index in 0..keys {
        let key = key_name(index);
        let member = plain.by_slot[usize::from(ringkv::store::slot::key_slot(key.as_bytes()))];
        let pipe = batches.entry(member).or_insert_with(redis::pipe);
        pipe.cmd("SET").arg(&key).arg(value_of(0)).ignore();
        if index % 2000 == 1999 {
            for (member, pipe) in batches.drain() {
                let mut con = plain.connections[member].clone();
                let _: () = pipe.query_async(&mut con).await?;
            }
        }
    }
    for (member, pipe) in batches.drain() {
        let mut con = plain.connections[member].clone();
        let _: () = pipe.query_async(&mut con).await?;
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; this is a figure run, not a criterion suite.
    let seeds: Vec<SocketAddr> = std::env::var("RINGKV_SEEDS")
        .context("RINGKV_SEEDS: the cluster's member addresses (scripts/bench-near-cache.sh)")?
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let keys: usize = env_or("KEYS", 1_000_000);
    let seconds: u64 = env_or("SECONDS", 10);
    let reader_stat = Arc::new(std::sync::Mutex::new(None));
    let runtimes = Runtimes {
        reads: pinned_runtime(env_or("READ_CORE", 0), Some(reader_stat.clone()))?,
        reader_stat,
        side: pinned_runtime(env_or("SIDE_CORE", 1), None)?,
    };
    let side = &runtimes.side;
    let plain = side.block_on(Plain::connect(seeds[0]))?;
    let load_started = Instant::now();
    side.block_on(preload(&plain, keys))?;
    eprintln!("preloaded {keys} keys in {:.1?}", load_started.elapsed());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let zipf = Zipf::new(keys as f64, 0.99)?;
    let samples: Arc<Vec<u32>> = Arc::new(
        (0..1 << 22)
            .map(|_| zipf.sample(&mut rng) as u32 - 1)
            .collect(),
    );
    let clock = quanta::Clock::new();
    let truth = Arc::new(Truth {
        names: (0..keys).map(key_name).collect(),
        versions: (0..keys).map(|_| AtomicU32::new(0)).collect(),
        acked_ns: (0..keys).map(|_| AtomicU64::new(0)).collect(),
        epoch: clock.raw(),
        clock,
    });
    // The reading clients live on the reading core's runtime (their connections' tasks too).
    // Values as `Arc<[u8]>`: a hit clones a reference count beside the bytes, not the value.
    let near: NearCache<String, Arc<[u8]>> = runtimes.reads.block_on(
        Cache::builder()
            .max_capacity(keys as u64)
            .near(seeds.iter().copied())
            .build(),
    )?;
    let plain_reader = runtimes.reads.block_on(Plain::connect(seeds[0]))?;
    let mut phases = Vec::new();
    for (name, reader) in [
        ("plain RESP client", Reader::Plain(plain_reader)),
        ("near-cache", Reader::Near(near)),
    ] {
        let phase = run_phase(
            &runtimes,
            name,
            Arc::new(reader),
            plain.clone(),
            truth.clone(),
            samples.clone(),
            seconds,
        )?;
        eprintln!("{name}: {:.0} reads/s", phase.reads_per_second);
        phases.push(phase);
    }
    report(&phases, keys, seconds);
    Ok(())
}

#[allow(clippy::print_stdout)]
fn report(phases: &[Phase], keys: usize, seconds: u64) {
    let plain = phases[0].reads_per_second;
    println!(
        "Zipf(0.99) reads over {keys} keys by {} tasks (each yields every {} reads), {seconds} s measured per client after a warm-up; writes from another client (32 tasks) at 1 % of the reads, their keys {}.\n",
        env_or("READERS", 64usize),
        env_or("YIELD_EVERY", 8usize),
        if std::env::var("WRITES").is_ok_and(|w| w == "uniform") {
            "uniform over all keys"
        } else {
            "Zipf(0.99) like the reads (hot keys are written most)"
        }
    );
    println!(
        "| client | reads/s | vs plain | reading core busy | writes, % of reads | stale reads within 5 ms | stale reads beyond 5 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for phase in phases {
        println!(
            "| {} | {:.0} | {:.1}× | {:.0} % | {:.2} % | {} | {} |",
            phase.name,
            phase.reads_per_second,
            phase.reads_per_second / plain,
            phase.reader_busy * 100.0,
            phase.write_percent,
            phase.stale_within_window,
            phase.stale_beyond_window
        );
    }
    println!(
        "\nStale reads are counted over each phase, warm-up included ({} during the measured part).",
        phases.iter().map(|p| p.stale_during_measure).sum::<u64>()
    );
    for phase in phases {
        if let Some(h) = &phase.invalidation {
            println!(
                "\nInvalidation latency, write acknowledged → near copy gone (every 8th write, {} of them; {} never gone): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms.",
                h.len(),
                phase.never_invalidated,
                h.value_at_quantile(0.5) as f64 / 1e6,
                h.value_at_quantile(0.99) as f64 / 1e6,
                h.value_at_quantile(0.999) as f64 / 1e6,
                h.max() as f64 / 1e6
            );
        }
        if let Some(stats) = &phase.near_stats {
            let l2_reads = stats.l2_hits + stats.l2_misses;
            println!(
                "\nNear-cache over the phase: {:.2} % of {} reads answered in the process, {} read from the cluster, {} invalidations, {} flushes.",
                100.0 - 100.0 * l2_reads as f64 / phase.total_reads.max(1) as f64,
                phase.total_reads,
                l2_reads,
                stats.invalidations,
                stats.flushes
            );
        }
    }
}
