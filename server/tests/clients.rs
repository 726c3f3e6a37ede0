//! Real cluster client libraries against a ringkv cluster on loopback: redis-py's
//! `RedisCluster` (installed by `scripts/test`) and redis-rs's `ClusterClient` see every
//! member as a primary, find every key with a cluster-wide scan, and keep writing through a
//! member's SIGKILL.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

mod support;
use support::cluster::{start_cluster, wait_agreed};

#[test]
fn redis_py_cluster_scans_every_key_and_writes_through_a_failover() {
    let members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(20));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/redis_py_cluster.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(members[2].node.0.id().to_string())
        .args(ports.iter().map(|p| p.to_string()))
        .output()
        .expect("python3 runs (scripts/test installs redis-py)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "redis-py failed:\n{stdout}\n{stderr}"
    );
}

/// Every key of one member, by SCAN routed to it through the cluster connection.
fn scan_member(con: &mut redis::cluster::ClusterConnection, port: u16) -> Vec<String> {
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: "127.0.0.1".into(),
        port,
    });
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    for _ in 0..10_000 {
        let reply = con
            .route_command(
                redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(500),
                route.clone(),
            )
            .expect("SCAN on a primary");
        let (next, mut batch): (u64, Vec<String>) =
            redis::from_redis_value(reply).expect("a SCAN reply");
        keys.append(&mut batch);
        cursor = next;
        if cursor == 0 {
            return keys;
        }
    }
    panic!("SCAN on {port} did not finish in 10,000 calls")
}

#[test]
fn redis_rs_cluster_client_scans_every_key_and_writes_through_a_failover() {
    let mut members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(20));
    let client = ClusterClient::builder(
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>(),
    )
    .retries(8)
    .connection_timeout(Duration::from_secs(1))
    .response_timeout(Duration::from_secs(2))
    .build()
    .expect("a cluster client");
    let mut con = client.get_connection().expect("a cluster connection");
    for i in 0..3_000 {
        let () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query(&mut con)
            .expect("SET through the cluster client");
    }
    // Each member is the primary of exactly the slots it serves: scanning the primaries
    // CLUSTER SLOTS names finds every key once.
    let primaries: HashSet<u16> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query::<Vec<Vec<redis::Value>>>(&mut con)
        .expect("CLUSTER SLOTS")
        .into_iter()
        .map(|range| {
            // [start, end, [ip, port, id, ...], replicas...]
            let primary: Vec<redis::Value> =
                redis::from_redis_value(range[2].clone()).expect("a primary");
            redis::from_redis_value::<u16>(primary[1].clone()).expect("a port")
        })
        .collect();
    assert_eq!(
        primaries.len(),
        3,
        "every member is a primary: {primaries:?}"
    );
    let mut scanned = Vec::new();
    for &port in &primaries {
        scanned.extend(scan_member(&mut con, port));
    }
    let unique: HashSet<&String> = scanned.iter().collect();
    assert_eq!(
        scanned.len(),
        3_000,
        "the primaries' scans find each key once"
    );
    assert_eq!(unique.len(), 3_000);
    // redis-rs sends DBSIZE to every primary and sums the replies.
    let total: u64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(total, 3_000);

    // The failover, through the async cluster client (what tokio services use): it
    // rebuilds its slot map when a node stops answering. (The sync `ClusterConnection`
    // only does so on MOVED, which a dead node never sends, against Redis Cluster too:
    // an application using it reconnects.)
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut async_con = runtime
        .block_on(client.get_async_connection())
        .expect("an async cluster connection");
    drop(members.remove(2)); // SIGKILL and reap
    let killed = Instant::now();
    let (written, failures) = runtime.block_on(async {
        let (mut written, mut failures) = (0, 0);
        while written < 1_000 && killed.elapsed() < Duration::from_secs(20) {
            let set = redis::cmd("SET")
                .arg(format!("after:{written}"))
                .arg(written)
                .query_async::<()>(&mut async_con)
                .await;
            match set {
                Ok(()) => written += 1,
                Err(error) => {
                    if failures < 3 {
                        eprintln!("redis-rs after the kill: {error}");
                    }
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        (written, failures)
    });
    eprintln!(
        "redis-rs: {written} writes after the kill in {:?}, {failures} failed attempts",
        killed.elapsed()
    );
    assert_eq!(
        written, 1_000,
        "the same connection writes again after a failover"
    );
    drop(con);
    let mut con = client.get_connection().expect("a new sync connection");
    for i in (0..1_000).step_by(37) {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("after:{i}"))
            .query(&mut con)
            .expect("GET after the failover");
        assert_eq!(got, Some(i.to_string()));
    }
    // Every earlier key survives: each slot had a replica.
    let kept: u64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(
        kept,
        3_000 + 1_000,
        "nothing written before the kill was lost"
    );
}
