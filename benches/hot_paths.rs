//! Micro-benchmarks of the hot paths: request parsing, reply encoding, and store
//! get/set/expire on one and two threads. `cargo bench --bench hot_paths`; prints the
//! median of several runs per case (ns/op and Mops/s). Figures depend on the machine:
//! state it with the numbers.

#![allow(clippy::print_stdout)] // A benchmark report is its output.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use ringkv::protocol::{Batch, Protocol, ReplyWriter, RequestParser};
use ringkv::store::{Store, Value};

const RUNS: usize = 7;

/// Median nanoseconds per operation of `f`, which performs `ops` operations.
fn measure(ops: u64, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[RUNS / 2]
}

fn report(name: &str, ns: f64) {
    println!("| {name} | {ns:.1} | {:.2} |", 1000.0 / ns);
}

fn parsing() {
    let mut pipeline = Vec::new();
    for i in 0..1000 {
        let key = format!("key:{i:012}");
        pipeline.extend_from_slice(
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
        );
    }
    let mut parser = RequestParser::default();
    let mut batch = Batch::new();
    let ns = measure(1000 * 200, || {
        for _ in 0..200 {
            batch.clear();
            let parsed = parser
                .parse(black_box(&pipeline), &mut batch)
                .expect("valid");
            black_box(parsed);
        }
    });
    report("parse GET (pipelined, per command)", ns);

    let mut sets = Vec::new();
    let value = "x".repeat(64);
    for i in 0..1000 {
        sets.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n$16\r\nkey:{i:012}\r\n$64\r\n{value}\r\n").as_bytes(),
        );
    }
    let ns = measure(1000 * 200, || {
        for _ in 0..200 {
            batch.clear();
            black_box(parser.parse(black_box(&sets), &mut batch).expect("valid"));
        }
    });
    report("parse SET 64-byte value (per command)", ns);
}

fn encoding() {
    let value = vec![b'x'; 64];
    let mut out = Vec::with_capacity(1 << 20);
    for (name, protocol) in [("RESP2", Protocol::Resp2), ("RESP3", Protocol::Resp3)] {
        let ns = measure(1000 * 200, || {
            for _ in 0..200 {
                out.clear();
                let mut w = ReplyWriter::new(&mut out, protocol);
                for i in 0..1000 {
                    if i % 10 == 0 {
                        w.null();
                    } else {
                        w.bulk(black_box(&value));
                    }
                }
            }
            black_box(&out);
        });
        report(&format!("encode 64-byte bulk / null, {name}"), ns);
    }
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect()
}

fn store_ops() {
    // BENCH_KEYS=1000 keeps everything in cache, to separate code cost from cache misses.
    let count = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let keys = Arc::new(keys(count));
    let value = vec![b'v'; 64];
    let now = 1_000_000;
    for threads in [1usize, 2] {
        let store = Arc::new(Store::builder().build());
        for key in keys.iter() {
            store.write(key, now, |slot| {
                slot.set(Value::Str(value.clone()), Some(0))
            });
        }
        let per_thread = 1_000_000u64;
        let run = |op: &'static str| {
            let store = store.clone();
            let keys = keys.clone();
            let value = value.clone();
            measure(per_thread * threads as u64, move || {
                std::thread::scope(|scope| {
                    for t in 0..threads {
                        let (store, keys, value) = (&store, &keys, &value);
                        scope.spawn(move || {
                            let mut i = t * 7919;
                            for _ in 0..per_thread {
                                i = (i + 104_729) % keys.len();
                                let key = &keys[i];
                                match op {
                                    "get" => {
                                        black_box(store.read(key, now, |v| {
                                            v.map(|v| matches!(v, Value::Str(_)))
                                        }));
                                    }
                                    "set" => store.write(key, now, |slot| {
                                        slot.set(Value::Str(value.clone()), Some(0))
                                    }),
                                    _ => {
                                        black_box(store.write(key, now, |slot| {
                                            slot.set_expires_at(Some(now + 60_000))
                                        }));
                                    }
                                }
                            }
                        });
                    }
                });
            }) * threads as f64
        };
        for op in ["get", "set", "expire"] {
            // Wall time per op across threads, so with 2 threads a lower figure is scaling.
            let ns = run(op) / threads as f64;
            report(
                &format!(
                    "store {op}, {threads} thread{}",
                    if threads > 1 { "s" } else { "" }
                ),
                ns,
            );
        }
    }
}

/// SET with the change log attached and a consumer draining it (as the WAL thread does,
/// minus the write): the cost persistence adds on the request path.
fn logged_sets() {
    use ringkv::store::change_log::{ChangeLog, LogLimits};
    let keys = keys(100_000);
    let value = vec![b'v'; 64];
    let now = 1_000_000;
    for logged in [false, true] {
        let store = Store::builder().build();
        let log = Arc::new(ChangeLog::new(1, LogLimits::default()));
        let mut cursor = log.subscribe(1, true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drain = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(Some(chunk)) =
                        log.take(&mut cursor, std::time::Duration::from_millis(5))
                    {
                        log.recycle(chunk);
                    }
                }
            })
        };
        if logged {
            store.attach_change_log(log.clone());
        }
        let mut i = 0;
        let ns = measure(2_000_000, || {
            for _ in 0..2_000_000 {
                i = (i + 104_729) % keys.len();
                store.write(&keys[i], now, |slot| {
                    slot.set(Value::Str(value.clone()), Some(0))
                });
            }
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        log.close();
        let _ = drain.join();
        report(
            if logged {
                "store set, change log attached"
            } else {
                "store set, no change log"
            },
            ns,
        );
    }
}

fn main() {
    println!("| case | ns/op | Mops/s |");
    println!("|---|---|---|");
    parsing();
    encoding();
    store_ops();
    logged_sets();
}
