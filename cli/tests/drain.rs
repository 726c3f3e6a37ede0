//! `ringkv cluster drain`, `rebalance` and `status` against a local cluster (`ringkv
//! cluster up`): a drained member hands its slots over and leaves with every key still
//! readable; an unknown member and the last member are refused with a reason; a joined
//! member takes its share through `rebalance`, and `status` shows what moved. Every wait is bounded; the cluster is
//! stopped when the test ends.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills the `cluster up` supervisor (and so its members) when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A base port whose 4 client ports and their bus ports (+10000) are free now, all below
/// the kernel's ephemeral range (32768 on): a bus port there could be taken meanwhile by
/// any outgoing connection, the cluster's own links included.
fn free_base() -> u16 {
    let pid = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 10000 + (pid.wrapping_mul(7).wrapping_add(attempt * 17)) % 2700;
        let free = (0..4).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", base + i + 10000)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + i + 10000)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free ports for a local cluster")
}

fn ringkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("ringkv runs")
}

/// Runs `cmd` through any member, following MOVED.
fn query_following_moved<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> T {
    let mut port = port;
    for _ in 0..5 {
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        match cmd.query::<T>(&mut con) {
            Ok(reply) => return reply,
            Err(e) if e.code() == Some("MOVED") => {
                let addr = e
                    .redirect_node()
                    .expect("a MOVED names a node")
                    .0
                    .to_string();
                port = addr.rsplit(':').next().unwrap().parse().unwrap();
            }
            Err(e) => panic!("{cmd:?}: {e}"),
        }
    }
    panic!("{cmd:?}: too many redirects")
}

fn set(port: u16, key: &str, value: &str) {
    let () = query_following_moved(port, redis::cmd("SET").arg(key).arg(value));
}

fn get(port: u16, key: &str) -> Option<String> {
    query_following_moved(port, redis::cmd("GET").arg(key))
}

/// Waits until every member knows all of them, none joins or learns, and each judged the
/// table.
fn wait_settled(ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let members = format!("cluster_known_nodes:{}", ports.len());
    loop {
        let settled = ports.iter().all(|&port| {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection())
                .and_then(|mut con| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut con))
                .is_ok_and(|info| {
                    [
                        members.as_str(),
                        "cluster_members_joining:0",
                        "cluster_slots_learning:0",
                        "cluster_table_judged:1",
                    ]
                    .iter()
                    .all(|field| info.contains(field))
                })
        });
        if settled {
            return;
        }
        assert!(Instant::now() < deadline, "the local cluster never settled");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_drained_member_hands_its_keys_over_and_leaves_and_bad_drains_say_why() {
    let _alone = one_cluster_at_a_time();
    let base = free_base();
    let _up = start_cluster(base);
    let port = base.to_string();
    for i in 0..300 {
        set(base, &format!("key:{i}"), &format!("v{i}"));
    }

    let unknown = ringkv(&["cluster", "-p", &port, "drain", "127.0.0.1:1"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no member 127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    for victim in [base + 2, base + 1] {
        let drained = ringkv(&[
            "cluster",
            "-p",
            &port,
            "drain",
            &format!("127.0.0.1:{victim}"),
            "--json",
        ]);
        assert!(
            drained.status.success(),
            "{}",
            String::from_utf8_lossy(&drained.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&drained.stdout).unwrap();
        assert_eq!(report["drained"], format!("127.0.0.1:{victim}"));
        assert!(report["slots"].as_u64().unwrap() > 3000, "{report}");
        for i in 0..300 {
            assert_eq!(
                get(base, &format!("key:{i}")),
                Some(format!("v{i}")),
                "key:{i} after draining {victim}"
            );
        }
    }

    let last = ringkv(&[
        "cluster",
        "-p",
        &port,
        "drain",
        &format!("127.0.0.1:{base}"),
    ]);
    assert!(!last.status.success());
    assert!(
        String::from_utf8_lossy(&last.stderr).contains("last member"),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
}

/// Held by each test for its whole run: the tests of one process run in parallel threads
/// and would pick the same ports for their clusters.
fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kills a member started by the test when dropped.
struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_cluster(base: u16) -> Up {
    let up = Up(Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "cluster",
            "up",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
        ])
        .args(["--", "--persistence", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cluster up starts"));
    wait_settled(&[base, base + 1, base + 2]);
    up
}

#[test]
fn a_joined_member_takes_its_share_through_rebalance_and_status_shows_what_moved() {
    let _alone = one_cluster_at_a_time();
    let base = free_base();
    let _up = start_cluster(base);
    for i in 0..2000 {
        set(base, &format!("key:{i}"), &format!("v{i}"));
    }
    // `cluster up` puts ringkv-server beside ringkv; so does cargo.
    let server = std::path::Path::new(env!("CARGO_BIN_EXE_ringkv")).with_file_name("ringkv-server");
    let joiner = base + 3;
    // The joiner's log, to say why if it never joins.
    let joiner_log = tempfile::NamedTempFile::new().expect("a temporary file");
    let _member = Member(
        Command::new(server)
            .args(["--port", &joiner.to_string(), "--cluster-enabled", "yes"])
            .args(["--persistence", "no"])
            .args(["--cluster-join", &format!("127.0.0.1:{}", base + 10000)])
            .stdout(Stdio::null())
            .stderr(joiner_log.reopen().expect("the joiner's log reopens"))
            .spawn()
            .expect("the 4th member starts"),
    );
    // `rebalance` speaks of the members the cluster knows: wait until it knows the 4th.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !redis::Client::open(format!("redis://127.0.0.1:{base}/"))
        .and_then(|c| c.get_connection())
        .and_then(|mut con| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut con))
        .is_ok_and(|info| info.contains("cluster_known_nodes:4"))
    {
        assert!(
            Instant::now() < deadline,
            "the 4th member never became known; its log:\n{}",
            std::fs::read_to_string(joiner_log.path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let port = base.to_string();
    let rebalanced = ringkv(&[
        "cluster",
        "-p",
        &port,
        "rebalance",
        "--timeout",
        "60",
        "--json",
    ]);
    assert!(
        rebalanced.status.success(),
        "{}",
        String::from_utf8_lossy(&rebalanced.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&rebalanced.stdout).unwrap();
    assert_eq!(report["balanced"], true, "{report}");

    let status = ringkv(&["cluster", "-p", &port, "status", "--json"]);
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 4, "{status}");
    assert_eq!(status["handoff_slots_pending"], 0, "{status}");
    // Rebalanced means the members that gave slots away dropped their copies too.
    assert_eq!(status["old_copies_slots"], 0, "{status}");
    let dropped: u64 = members
        .iter()
        .map(|m| m["handoff"]["keys_dropped"].as_u64().unwrap())
        .sum();
    assert!(dropped >= 250, "{status}");
    let new = members
        .iter()
        .find(|m| m["addr"] == format!("127.0.0.1:{joiner}"))
        .expect("the joiner is a member");
    // About a quarter of the slots, and of the keys, whose copies it counted coming in.
    let slots = new["slots"].as_u64().unwrap();
    assert!((3000..5500).contains(&slots), "{new}");
    let keys = new["keys"].as_u64().unwrap();
    assert!((250..800).contains(&keys), "{new}");
    assert!(new["handoff"]["keys_in"].as_u64().unwrap() >= keys, "{new}");
    assert!(new["handoff"]["bytes_in"].as_u64().unwrap() > 0, "{new}");
    for i in 0..2000 {
        assert_eq!(
            get(joiner, &format!("key:{i}")),
            Some(format!("v{i}")),
            "key:{i} after the join"
        );
    }
}
