//! `ringkv bench` against a real node: requests answered, errors counted, fills and
//! read-through hit ratios that match what the node saw.

use std::process::Command;

use ringkv_server::{Config, Server};

fn start() -> (
    u16,
    std::thread::JoinHandle<()>,
    std::sync::Arc<ringkv_server::Node>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let config =
                Config::from_args(["ringkv-server", "--port", "0", "--persistence", "no"]).unwrap();
            let server = Server::bind(config, None).await.unwrap();
            tx.send((server.local_addrs()[0].port(), server.node()))
                .unwrap();
            server.run().await.unwrap();
        });
    });
    let (port, node) = rx.recv().unwrap();
    (port, handle, node)
}

fn bench(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["bench", "-p", &port.to_string(), "--json", "--warmup", "0"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_runs_every_test_and_counts_every_request() {
    let (port, server, node) = start();
    let results = bench(
        port,
        &[
            "-t",
            "ping,get,set,incr,mget,mset,hset,hget",
            "-n",
            "2000",
            "-c",
            "8",
            "-P",
            "4",
            "-r",
            "100",
        ],
    );
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 8);
    for r in results {
        assert_eq!(r["requests"], 2000, "{r}");
        assert_eq!(r["reply_errors"], 0, "{r}");
        assert!(r["p99_ms"].as_f64().unwrap() > 0.0);
    }
    // Fill writes each key exactly once.
    node.store.flush();
    let fill = bench(
        port,
        &[
            "--fill", "-t", "set", "-r", "5000", "-c", "4", "-P", "16", "-d", "64",
        ],
    );
    assert_eq!(fill[0]["requests"], 5000);
    assert_eq!(node.store.len(), 5000);
    // Read-through: every miss is filled, so a second pass over a small key space hits.
    node.store.flush();
    let first = bench(
        port,
        &["--read-through", "-r", "50", "-n", "2000", "-c", "2"],
    );
    assert!(first[0]["misses"].as_u64().unwrap() >= 50);
    let second = bench(
        port,
        &["--read-through", "-r", "50", "-n", "2000", "-c", "2"],
    );
    assert_eq!(second[0]["hit_ratio"], 1.0);
    node.begin_shutdown();
    server.join().unwrap();
}

#[test]
fn bench_reports_errors_instead_of_hiding_them() {
    let (port, server, node) = start();
    // HGET against a string key is a WRONGTYPE error on every request.
    node.store
        .write(b"myhash", 1, |slot| slot.set(ringkv_store_value(), Some(0)));
    let results = bench(port, &["-t", "hget", "-n", "100", "-c", "2"]);
    assert_eq!(results[0]["reply_errors"], 100);
    assert!(
        results[0]["first_error"]
            .as_str()
            .unwrap()
            .starts_with("WRONGTYPE")
    );
    node.begin_shutdown();
    server.join().unwrap();
    // Nobody listening: a clear failure, not silence.
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "bench",
            "-p",
            &port.to_string(),
            "-n",
            "10",
            "--warmup",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn ringkv_store_value() -> ringkv::store::Value {
    ringkv::store::Value::Str(b"not a hash".to_vec())
}
