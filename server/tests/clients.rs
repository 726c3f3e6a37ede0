//! Real cluster client libraries against a ringkv cluster on loopback: redis-py's
//! `RedisCluster` (installed by `scripts/test`) sees every member as a primary, finds every
//! key with a cluster-wide `scan_iter`, and keeps writing through a member's SIGKILL.

use std::process::Command;
use std::time::Duration;

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
