//! The stampede: 1,000 concurrent clients miss one hot key at once and the origin takes
//! 50 ms. Counts origin calls and client latency with ringkv's protection and without it,
//! embedded (`Cache::get_with` against get-then-insert) and over RESP (`CACHE.GET … LEASE
//! … WAIT` + `CACHE.FILL` against `GET` + `SET`, 1,000 connections to a loopback node).
//!
//! `cargo bench --bench stampede` (needs `ulimit -n` ≥ 2,100 for the RESP half).

#![allow(clippy::print_stdout)] // A benchmark report is its output.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use ringkv::Cache;
use ringkv_server::{Config, Server};
use tokio::sync::Barrier;

const CLIENTS: usize = 1_000;
const ORIGIN_LATENCY: Duration = Duration::from_millis(50);

/// The database behind the cache: counts its queries.
#[derive(Default)]
struct Origin {
    calls: AtomicU64,
}

impl Origin {
    async fn query(&self) -> String {
        self.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(ORIGIN_LATENCY).await;
        "row:42".to_string()
    }
}

struct Outcome {
    origin_calls: u64,
    latency: Histogram<u64>,
}

fn row(name: &str, outcome: &Outcome) {
    let ms = |q: f64| outcome.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        outcome.origin_calls,
        ms(0.5),
        ms(0.99),
        outcome.latency.max() as f64 / 1000.0
    );
}

/// Runs `CLIENTS` tasks released together by a barrier; each returns its latency in µs.
async fn stampede<F, Fut>(make: F) -> Result<Histogram<u64>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let (barrier, work) = (barrier.clone(), make(i));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            work.await?;
            Ok::<_, anyhow::Error>(started.elapsed().as_micros() as u64)
        }));
    }
    let mut latency = Histogram::new(3)?;
    for task in tasks {
        latency.record(task.await??)?;
    }
    Ok(latency)
}

async fn embedded(protected: bool) -> Result<Outcome> {
    let cache: Cache<&'static str, String> = Cache::builder().max_capacity(1_000).build();
    let origin = Arc::new(Origin::default());
    let latency = stampede(|_| {
        let (cache, origin) = (cache.clone(), origin.clone());
        async move {
            let value = if protected {
                cache.get_with("user:42", origin.query()).await
            } else {
                match cache.get("user:42") {
                    Some(v) => v,
                    None => {
                        let v = origin.query().await;
                        cache.insert("user:42", v.clone());
                        v
                    }
                }
            };
            anyhow::ensure!(value == "row:42");
            Ok(())
        }
    })
    .await?;
    Ok(Outcome {
        origin_calls: origin.calls.load(SeqCst),
        latency,
    })
}

async fn over_resp(addr: SocketAddr, key: &str, protected: bool) -> Result<Outcome> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut connections = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting (raise `ulimit -n` above 2,100)")?;
        connections.push(Some(con));
    }
    let connections = Arc::new(std::sync::Mutex::new(connections));
    let origin = Arc::new(Origin::default());
    let key = key.to_string();
    let latency = stampede(|i| {
        let (origin, key) = (origin.clone(), key.clone());
        let con = connections.lock().unwrap()[i].take();
        async move {
            let mut con: MultiplexedConnection = con.context("one connection per client")?;
            let value = if protected {
                let (value, token): (Option<String>, Option<String>) = redis::cmd("CACHE.GET")
                    .arg(&key)
                    .arg("LEASE")
                    .arg(2_000)
                    .arg("WAIT")
                    .arg(2_000)
                    .query_async(&mut con)
                    .await?;
                match (value, token) {
                    (Some(v), _) => v,
                    (None, Some(token)) => {
                        let v = origin.query().await;
                        let _: () = redis::cmd("CACHE.FILL")
                            .arg(&key)
                            .arg(token)
                            .arg(&v)
                            .arg("EX")
                            .arg(60)
                            .query_async(&mut con)
                            .await?;
                        v
                    }
                    (None, None) => origin.query().await, // WAIT ran out
                }
            } else {
                match con.get::<_, Option<String>>(&key).await? {
                    Some(v) => v,
                    None => {
                        let v = origin.query().await;
                        let _: () = con.set_ex(&key, &v, 60).await?;
                        v
                    }
                }
            };
            anyhow::ensure!(value == "row:42");
            Ok(())
        }
    })
    .await?;
    Ok(Outcome {
        origin_calls: origin.calls.load(SeqCst),
        latency,
    })
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "{CLIENTS} clients miss one key at once; origin latency {} ms\n",
            ORIGIN_LATENCY.as_millis()
        );
        println!("| case | origin calls | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|");
        row("embedded, get + insert", &embedded(false).await?);
        row("embedded, Cache::get_with", &embedded(true).await?);
        let config = Config::from_args(["ringkv-server", "--port", "0", "--persistence", "no"])?;
        let server = Server::bind(config, None).await?;
        let addr = server.local_addrs()[0];
        tokio::spawn(server.run());
        row("RESP, GET + SET", &over_resp(addr, "plain", false).await?);
        row(
            "RESP, CACHE.GET LEASE WAIT + CACHE.FILL",
            &over_resp(addr, "leased", true).await?,
        );
        Ok(())
    })
}
