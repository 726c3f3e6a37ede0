//! Adaptive TTL against fixed TTLs, simulated on a virtual clock through the real
//! `ringkv::Cache`. 100,000 keys each change at their own rate (30% never, the rest every
//! 1 s to about an hour, log-uniform); reads follow Zipf(0.99) over a random permutation of
//! the keys, so hotness and volatility are independent. The origin takes 20 ms (XFetch's
//! δ). For each policy: origin loads per second and the stale-read rate (a read that
//! returns a value the origin has since changed).
//!
//! `cargo bench --bench adaptive_ttl` prints a table and writes `target/adaptive_ttl.csv`
//! (`scripts/bench-cache.sh` turns it into docs/adaptive_ttl.png).

#![allow(clippy::print_stdout)] // A benchmark report is its output.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use ringkv::{Cache, Clock, MockClock};

const KEYS: usize = 100_000;
const READS_PER_SECOND: u64 = 1_000;
const SECONDS: u64 = 2_400;
/// Reads before this are warm-up: not counted.
const WARM_UP_SECONDS: u64 = 600;
const LOAD_MS: u64 = 20;
const SEED: u64 = 0x5eed;

/// When each key's value changes: `version(t) = ⌊(t + phase) / period⌋`.
struct Origin {
    period_ms: Vec<u64>,
    phase_ms: Vec<u64>,
}

impl Origin {
    fn new(rng: &mut SmallRng) -> Self {
        let mut period_ms = Vec::with_capacity(KEYS);
        let mut phase_ms = Vec::with_capacity(KEYS);
        for _ in 0..KEYS {
            let period = if rng.random_bool(0.3) {
                u64::MAX
            } else {
                (10f64.powf(rng.random_range(0.0..3.5)) * 1000.0) as u64
            };
            period_ms.push(period);
            phase_ms.push(rng.random_range(0..period.min(1 << 40)));
        }
        Origin {
            period_ms,
            phase_ms,
        }
    }

    fn version(&self, key: usize, now_ms: u64) -> u64 {
        (now_ms + self.phase_ms[key]) / self.period_ms[key]
    }
}

#[derive(Clone, Copy)]
enum Policy {
    Fixed(u64),
    Adaptive {
        base: u64,
        min: u64,
        max: u64,
        xfetch: bool,
    },
}

impl Policy {
    fn name(self) -> String {
        match self {
            Policy::Fixed(s) => format!("fixed {s}s"),
            Policy::Adaptive {
                base,
                min,
                max,
                xfetch,
            } => format!(
                "{} base {base}s [{min}s, {max}s]",
                if xfetch {
                    "adaptive+xfetch"
                } else {
                    "adaptive"
                }
            ),
        }
    }

    fn family(self) -> &'static str {
        match self {
            Policy::Fixed(_) => "fixed",
            Policy::Adaptive { xfetch: false, .. } => "adaptive",
            Policy::Adaptive { xfetch: true, .. } => "adaptive+xfetch",
        }
    }
}

struct Measured {
    policy: Policy,
    loads_per_second: f64,
    stale_rate: f64,
}

fn simulate(policy: Policy, origin: &Origin, order: &[usize]) -> Measured {
    let clock = Arc::new(MockClock::default());
    let secs = Duration::from_secs;
    let builder = Cache::<usize, u64>::builder()
        .clock(clock.clone())
        .seed(SEED);
    let cache = match policy {
        Policy::Fixed(ttl) => builder.time_to_live(secs(ttl)).build(),
        Policy::Adaptive {
            base,
            min,
            max,
            xfetch,
        } => builder
            .adaptive_ttl(secs(base), secs(min), secs(max))
            .xfetch_beta(if xfetch { 1.0 } else { 0.0 })
            .build(),
    };
    let zipf = Zipf::new(KEYS as f64, 0.99).expect("valid Zipf");
    let mut rng = SmallRng::seed_from_u64(SEED + 1);
    let (mut loads, mut stale, mut reads) = (0u64, 0u64, 0u64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let total = READS_PER_SECOND * SECONDS;
        for i in 0..total {
            let now = i * 1000 / READS_PER_SECOND;
            clock.set_ms(now);
            let key = order[zipf.sample(&mut rng) as usize - 1];
            let counted = now >= WARM_UP_SECONDS * 1000;
            let mut loaded = false;
            let value = cache
                .get_with(key, async {
                    loaded = true;
                    clock.advance(Duration::from_millis(LOAD_MS));
                    origin.version(key, clock.now_ms())
                })
                .await;
            if counted {
                reads += 1;
                loads += u64::from(loaded);
                stale += u64::from(value != origin.version(key, now));
            }
        }
    });
    Measured {
        policy,
        loads_per_second: loads as f64 / (SECONDS - WARM_UP_SECONDS) as f64,
        stale_rate: stale as f64 / reads as f64,
    }
}

/// Fixed-TTL origin loads at a given stale rate, interpolated along the fixed curve.
fn fixed_loads_at(fixed: &[&Measured], stale_rate: f64) -> Option<f64> {
    fixed.windows(2).find_map(|pair| {
        let (a, b) = (pair[0], pair[1]);
        let (lo, hi) = (
            a.stale_rate.min(b.stale_rate),
            a.stale_rate.max(b.stale_rate),
        );
        if !(lo..=hi).contains(&stale_rate) || hi == lo {
            return None;
        }
        let f = (stale_rate - a.stale_rate) / (b.stale_rate - a.stale_rate);
        Some(a.loads_per_second + f * (b.loads_per_second - a.loads_per_second))
    })
}

fn main() {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let origin = Origin::new(&mut rng);
    let mut order: Vec<usize> = (0..KEYS).collect();
    order.shuffle(&mut rng);

    let mut policies: Vec<Policy> = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200]
        .into_iter()
        .map(Policy::Fixed)
        .collect();
    for xfetch in [false, true] {
        for (base, min, max) in [
            (10, 1, 7200),
            (30, 1, 7200),
            (120, 1, 7200),
            (300, 1, 7200),
            (600, 1, 7200),
            (1200, 1, 7200),
        ] {
            policies.push(Policy::Adaptive {
                base,
                min,
                max,
                xfetch,
            });
        }
    }
    // Two cores: split the policies between two threads.
    let results: Vec<Measured> = std::thread::scope(|scope| {
        let (origin, order) = (&origin, &order);
        let handles: Vec<_> = policies
            .chunks(policies.len().div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&p| simulate(p, origin, order))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread"))
            .collect()
    });

    let fixed: Vec<&Measured> = results
        .iter()
        .filter(|m| matches!(m.policy, Policy::Fixed(_)))
        .collect();
    println!(
        "{KEYS} keys, Zipf(0.99), {READS_PER_SECOND} reads/s for {SECONDS} s (first {WARM_UP_SECONDS} s warm-up), origin {LOAD_MS} ms\n"
    );
    println!("| policy | origin loads/s | stale reads | loads vs fixed TTL at equal staleness |");
    println!("|---|---|---|---|");
    let mut csv = String::from("family,policy,loads_per_second,stale_rate\n");
    for m in &results {
        let versus = match m.policy {
            Policy::Fixed(_) => String::new(),
            _ => {
                fixed_loads_at(&fixed, m.stale_rate).map_or("outside the fixed curve".into(), |f| {
                    format!(
                        "{:+.1}% ({:.1} loads/s for fixed)",
                        (m.loads_per_second / f - 1.0) * 100.0,
                        f
                    )
                })
            }
        };
        println!(
            "| {} | {:.1} | {:.3}% | {versus} |",
            m.policy.name(),
            m.loads_per_second,
            m.stale_rate * 100.0
        );
        csv.push_str(&format!(
            "{},\"{}\",{:.3},{:.6}\n",
            m.policy.family(),
            m.policy.name(),
            m.loads_per_second,
            m.stale_rate
        ));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/adaptive_ttl.csv");
    if let Err(error) = std::fs::write(&path, csv) {
        eprintln!("could not write {}: {error}", path.display());
    }
}
