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

#[test]
fn lock_and_rate_limiter_libraries_run_their_scripts_on_a_cluster() {
    let members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(20));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/script_libraries_cluster.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .args(ports.iter().map(|p| p.to_string()))
        .output()
        .expect("python3 runs (scripts/test installs redis-py and limits)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "the libraries failed:\n{stdout}\n{stderr}"
    );
    for line in ["redis-py Lock on RedisCluster", "limits on a cluster"] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
}

/// redis-rs's cluster client over `ports`, retrying as an application would configure it.
fn cluster_client(ports: &[u16], response_timeout: Duration) -> ClusterClient {
    ClusterClient::builder(
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>(),
    )
    .retries(8)
    .connection_timeout(Duration::from_secs(1))
    .response_timeout(response_timeout)
    .build()
    .expect("a cluster client")
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
    let client = cluster_client(&ports, Duration::from_secs(2));
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

/// redis-rs's async cluster client (what tokio services use) writing and reading until
/// `stop`: every error is an application error. Returns (writes, errors, first errors).
fn redis_rs_until(ports: &[u16], stop: &std::sync::atomic::AtomicBool) -> (u64, u64, Vec<String>) {
    use std::sync::atomic::Ordering::Relaxed;
    let client = cluster_client(ports, Duration::from_secs(5));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut con = client
            .get_async_connection()
            .await
            .expect("an async cluster connection");
        let (mut written, mut errors, mut said) = (0u64, 0u64, Vec::new());
        let started = Instant::now();
        while !stop.load(Relaxed) && started.elapsed() < Duration::from_secs(300) {
            let key = format!("rs:{written}");
            let set = redis::cmd("SET")
                .arg(&key)
                .arg(written)
                .query_async::<()>(&mut con)
                .await;
            let got = match set {
                Ok(()) => {
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<u64>>(&mut con)
                        .await
                }
                Err(error) => Err(error),
            };
            match got {
                Ok(Some(value)) if value == written => written += 1,
                Ok(other) => panic!("{key} read back {other:?} right after its SET"),
                Err(error) => {
                    errors += 1;
                    if said.len() < 5 {
                        said.push(error.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        for i in 0..written {
            let got: Option<u64> = redis::cmd("GET")
                .arg(format!("rs:{i}"))
                .query_async(&mut con)
                .await
                .expect("GET at the end");
            assert_eq!(got, Some(i), "rs:{i} at the end");
        }
        (written, errors, said)
    })
}

/// redis-py's and redis-rs's cluster clients keep working, with no application error, while
/// a 4th member joins, one member is drained (SHUTDOWN, as `ringkv cluster drain` does it)
/// and another leaves (SIGTERM); every key either wrote reads back at the end.
#[test]
fn cluster_clients_work_through_a_join_a_drain_and_a_leave() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    const FLAGS: [&str; 2] = ["--cluster-replicas", "1"];
    let mut members = start_cluster(3, &FLAGS);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(20));
    support::load::wait_replicated(&ports, Duration::from_secs(20));

    let stop_file = std::env::temp_dir().join(format!("ringkv-clients-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop_file);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/redis_py_through_handoff.py"
    );
    let python = Command::new("python3")
        .arg(script)
        .arg(&stop_file)
        .args(ports.iter().map(|p| p.to_string()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs redis-py)");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let rust_client = {
        let (ports, stop) = (ports.clone(), stop.clone());
        std::thread::spawn(move || redis_rs_until(&ports, &stop))
    };
    std::thread::sleep(Duration::from_millis(800));

    // A join: the 4th member takes about a quarter of the slots.
    members.push(support::cluster::start(Some(members[0].bus), &FLAGS));
    let all: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&all, 4, Duration::from_secs(30));
    support::load::wait_replicated(&all, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));

    // A drain: SHUTDOWN hands every slot over, then the member exits.
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut support::cluster::client(all[1]));
    let three = [all[0], all[2], all[3]];
    wait_agreed(&three, 3, Duration::from_secs(30));
    support::load::wait_replicated(&three, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));

    // A leave: SIGTERM does the same.
    support::sigterm(&members[2].node);
    let two = [all[0], all[3]];
    wait_agreed(&two, 2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));

    std::fs::write(&stop_file, b"stop").expect("the stop file");
    stop.store(true, Relaxed);
    let output = python.wait_with_output().expect("redis-py ends");
    let _ = std::fs::remove_file(&stop_file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("redis-py through join, drain and leave: {stdout}");
    assert!(output.status.success(), "redis-py:\n{stdout}\n{stderr}");
    let (written, errors, said) = rust_client.join().expect("the redis-rs client");
    eprintln!("redis-rs through join, drain and leave: {written} writes, {errors} errors {said:?}");
    assert!(written > 100, "redis-rs wrote only {written}");
    assert_eq!(errors, 0, "redis-rs saw errors: {said:?}");
}
