//! `ringkv cluster drain` against a local cluster (`ringkv cluster up`): a drained member
//! hands its slots over and leaves with every key still readable; an unknown member and
//! the last member are refused with a reason. Every wait is bounded; the cluster is
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

/// A base port whose 3 client ports and their bus ports (+10000) are free now.
fn free_base() -> u16 {
    let pid = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20000 + (pid.wrapping_mul(7).wrapping_add(attempt * 17)) % 9000;
        let free = (0..3).all(|i| {
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
    let base = free_base();
    let _up = Up(Command::new(env!("CARGO_BIN_EXE_ringkv"))
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
    let port = base.to_string();
    wait_settled(&[base, base + 1, base + 2]);
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
