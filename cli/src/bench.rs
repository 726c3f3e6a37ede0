//! `ringkv bench`: many pipelined connections driven from a few tokio threads, latency
//! in hdrhistogram, every connection and reply error counted and shown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use ringkv_protocol::scan_reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::workload::{KeyChoice, Test, encode};

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `host:port`.
    pub addr: String,
    /// Connections.
    pub clients: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Requests per test (ignored with a duration).
    pub requests: u64,
    /// Run each test this long instead.
    pub duration: Option<Duration>,
    /// Unmeasured load before each test.
    pub warmup: Duration,
    /// Value bytes.
    pub value: Vec<u8>,
    /// How keys are chosen.
    pub keys: KeyChoice,
    /// Fields per hash when filling hashes.
    pub hash_fields: u64,
    /// Prefix of every key name (a hash tag keeps a cluster test on one slot).
    pub key_tag: String,
    /// GET then SET on a miss, counting hits.
    pub read_through: bool,
    /// Share of GETs in a mixed GET/SET run (`--ratio 9:1` = 0.9), if mixed.
    pub read_share: Option<f64>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one test measured.
#[derive(Debug)]
pub struct Outcome {
    /// Test name.
    pub test: String,
    /// Requests answered.
    pub requests: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Error replies.
    pub reply_errors: u64,
    /// Connections that failed to open or broke.
    pub connection_errors: u64,
    /// First error text seen, to show the user.
    pub first_error: Option<String>,
    /// Read-through hits and misses.
    pub hits: u64,
    /// Read-through misses (each followed by a SET).
    pub misses: u64,
}

impl Outcome {
    /// Requests per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// The outcome as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let q = |p: f64| self.latency.value_at_quantile(p) as f64 / 1000.0;
        serde_json::json!({
            "test": self.test,
            "requests": self.requests,
            "seconds": self.seconds,
            "ops_per_sec": self.ops_per_sec(),
            "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p999_ms": q(0.999),
            "max_ms": self.latency.max() as f64 / 1000.0,
            "reply_errors": self.reply_errors,
            "connection_errors": self.connection_errors,
            "first_error": self.first_error,
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": if self.hits + self.misses > 0 { Some(self.hits as f64 / (self.hits + self.misses) as f64) } else { None },
        })
    }

    /// A line for people.
    pub fn to_line(&self) -> String {
        let q = |p: f64| self.latency.value_at_quantile(p) as f64 / 1000.0;
        let mut line = format!(
            "{:<6} {:>12.0} ops/s  p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  errors {}",
            self.test.to_uppercase(),
            self.ops_per_sec(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            self.latency.max() as f64 / 1000.0,
            self.reply_errors + self.connection_errors,
        );
        if self.hits + self.misses > 0 {
            line.push_str(&format!(
                "  hit ratio {:.4}",
                self.hits as f64 / (self.hits + self.misses) as f64
            ));
        }
        if let Some(e) = &self.first_error {
            line.push_str(&format!("  (first error: {e})"));
        }
        line
    }
}

struct Shared {
    /// Requests not yet claimed (count mode).
    remaining: AtomicU64,
    /// Requests claimed so far (sequence numbers for fills).
    issued: AtomicU64,
    deadline: Option<Instant>,
    stop: AtomicBool,
}

impl Shared {
    fn claim(&self, want: u64) -> u64 {
        if self.stop.load(Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
        if self.deadline.is_some() {
            return want;
        }
        let mut left = self.remaining.load(Relaxed);
        loop {
            let take = left.min(want);
            if take == 0 {
                return 0;
            }
            match self
                .remaining
                .compare_exchange_weak(left, left - take, Relaxed, Relaxed)
            {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }
}

#[derive(Default)]
struct ClientTally {
    requests: u64,
    reply_errors: u64,
    connection_errors: u64,
    first_error: Option<String>,
    hits: u64,
    misses: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn run_client(
    plan: Arc<Plan>,
    test: Test,
    shared: Arc<Shared>,
    seed: u64,
    progress: indicatif::ProgressBar,
) -> (ClientTally, Histogram<u64>) {
    let mut tally = ClientTally::default();
    let mut latency = histogram();
    let mut stream = match TcpStream::connect(&plan.addr).await {
        Ok(s) => s,
        Err(e) => {
            tally.connection_errors += 1;
            tally.first_error = Some(format!("connect {}: {e}", plan.addr));
            return (tally, latency);
        }
    };
    let _ = stream.set_nodelay(true);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(64 * plan.pipeline);
    let mut input: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Read-through: keys that missed, filled in the next round trip.
    let mut to_fill: Vec<u64> = Vec::new();
    let mut sent_tests: Vec<(Test, u64)> = Vec::with_capacity(plan.pipeline);
    loop {
        out.clear();
        sent_tests.clear();
        for key in to_fill.drain(..) {
            encode(Test::Set, key, &plan.value, 0, &plan.key_tag, &mut out);
            sent_tests.push((Test::Set, key));
        }
        let claimed = shared.claim(plan.pipeline as u64);
        if claimed == 0 && sent_tests.is_empty() {
            break;
        }
        for _ in 0..claimed {
            let sequence = shared.issued.fetch_add(1, Relaxed);
            let key = plan.keys.pick(&mut rng, sequence);
            let this = match plan.read_share {
                Some(share) if rand::Rng::random::<f64>(&mut rng) >= share => Test::Set,
                Some(_) => Test::Get,
                None => test,
            };
            encode(
                this,
                key,
                &plan.value,
                plan.hash_fields,
                &plan.key_tag,
                &mut out,
            );
            // One entry per reply expected.
            for _ in 0..this.replies() {
                sent_tests.push((this, key));
            }
        }
        let started = Instant::now();
        if let Err(e) = stream.write_all(&out).await {
            tally.connection_errors += 1;
            tally
                .first_error
                .get_or_insert_with(|| format!("write: {e}"));
            break;
        }
        let mut answered = 0;
        let mut broken = false;
        while answered < sent_tests.len() {
            match scan_reply(&input) {
                Ok(Some(reply)) => {
                    let (sent, key) = sent_tests[answered];
                    if reply.is_error {
                        tally.reply_errors += 1;
                        tally.first_error.get_or_insert_with(|| {
                            String::from_utf8_lossy(&input[1..reply.len - 2]).into_owned()
                        });
                    } else if plan.read_through && sent == Test::Get {
                        if &input[..reply.len] == b"$-1\r\n" || &input[..reply.len] == b"_\r\n" {
                            tally.misses += 1;
                            to_fill.push(key);
                        } else {
                            tally.hits += 1;
                        }
                    }
                    input.drain(..reply.len);
                    answered += 1;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tally.connection_errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("bad reply: {e}"));
                    broken = true;
                    break;
                }
            }
            input.reserve(64 * 1024);
            match stream.read_buf(&mut input).await {
                Ok(0) | Err(_) => {
                    tally.connection_errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| "connection closed by server".into());
                    broken = true;
                    break;
                }
                Ok(_) => {}
            }
        }
        if broken {
            break;
        }
        let micros = started.elapsed().as_micros().max(1) as u64;
        let measured = sent_tests
            .iter()
            .filter(|(t, _)| plan.read_share.is_some() || !plan.read_through || *t == Test::Get)
            .count() as u64
            / test.replies() as u64;
        let _ = latency.record_n(micros.min(60_000_000), measured);
        tally.requests += measured;
        progress.inc(measured);
    }
    (tally, latency)
}

async fn phase(
    plan: &Arc<Plan>,
    test: Test,
    requests: u64,
    duration: Option<Duration>,
    progress: indicatif::ProgressBar,
) -> Result<Outcome> {
    let shared = Arc::new(Shared {
        remaining: AtomicU64::new(requests),
        issued: AtomicU64::new(0),
        deadline: duration.map(|d| Instant::now() + d),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..plan.clients {
        let seed = 0x5eed_0000 + client as u64 * 7919 + test as u64;
        tasks.spawn(run_client(
            plan.clone(),
            test,
            shared.clone(),
            seed,
            progress.clone(),
        ));
    }
    let mut outcome = Outcome {
        test: match (plan.read_share, plan.read_through) {
            (Some(share), _) => {
                format!("get/set {:.0}:{:.0}", share * 100.0, (1.0 - share) * 100.0)
            }
            (None, true) => "get+fill".to_string(),
            _ => test.name().to_string(),
        },
        requests: 0,
        seconds: 0.0,
        latency: histogram(),
        reply_errors: 0,
        connection_errors: 0,
        first_error: None,
        hits: 0,
        misses: 0,
    };
    while let Some(joined) = tasks.join_next().await {
        let (tally, latency) = joined.context("a benchmark client panicked")?;
        outcome.requests += tally.requests;
        outcome.reply_errors += tally.reply_errors;
        outcome.connection_errors += tally.connection_errors;
        outcome.hits += tally.hits;
        outcome.misses += tally.misses;
        if outcome.first_error.is_none() {
            outcome.first_error = tally.first_error;
        }
        outcome
            .latency
            .add(latency)
            .context("merging latency histograms")?;
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    Ok(outcome)
}

/// Runs each test: warm-up, then the measured phase.
pub async fn run(plan: Plan, tests: &[Test]) -> Result<Vec<Outcome>> {
    let plan = Arc::new(plan);
    let mut outcomes = Vec::new();
    for &test in tests {
        if !plan.warmup.is_zero() {
            phase(
                &plan,
                test,
                u64::MAX,
                Some(plan.warmup),
                indicatif::ProgressBar::hidden(),
            )
            .await?;
        }
        let bar = if plan.progress {
            let bar = match plan.duration {
                Some(_) => indicatif::ProgressBar::new_spinner(),
                None => indicatif::ProgressBar::new(plan.requests),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:>6} {bar:30} {pos}/{len} {per_sec} {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(test.name().to_uppercase());
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        outcomes.push(phase(&plan, test, plan.requests, plan.duration, bar).await?);
    }
    Ok(outcomes)
}
