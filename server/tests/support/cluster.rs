//! Clusters of `ringkv-server` processes on loopback: start members, connect, wait for
//! agreement. Every wait is bounded.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Node, free_port};

/// A member: its process and ports.
pub struct Member {
    pub node: Node,
    pub port: u16,
    pub bus: u16,
}

/// A port free for UDP (gossip) and TCP (peer links) at once.
pub fn free_udp_port() -> u16 {
    super::free_port_where(|port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// Starts a member that joins through `seed` (a bus port), if any.
pub fn start(seed: Option<u16>, extra: &[&str]) -> Member {
    let (port, bus) = (free_port(), free_udp_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringkv-server"));
    command
        .args(["--persistence", "no", "--cluster-enabled", "yes"])
        .args(["--port", &port.to_string()])
        .args(["--cluster-bus-port", &bus.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // RINGKV_TEST_LOGS=<dir> keeps each member's log there, named by its port.
    if let Some(dir) = std::env::var_os("RINGKV_TEST_LOGS") {
        let path = std::path::Path::new(&dir).join(format!("member-{port}.log"));
        let file = std::fs::File::create(&path).expect("a member log file");
        command.stderr(file.try_clone().expect("a second handle"));
        command.stdout(file).env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    }
    if let Some(seed) = seed {
        command.args(["--cluster-join", &format!("127.0.0.1:{seed}")]);
    }
    let node = Node(command.spawn().expect("the server binary starts"));
    let member = Member { node, port, bus };
    wait_listening(member.port);
    member
}

pub fn start_cluster(n: usize, extra: &[&str]) -> Vec<Member> {
    let first = start(None, extra);
    let seed = first.bus;
    let mut members = vec![first];
    for _ in 1..n {
        members.push(start(Some(seed), extra));
    }
    members
}

pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "node on {port} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn client(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let con = client.get_connection().expect("connects");
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

pub fn cluster_info(port: u16) -> HashMap<String, String> {
    fields(
        &redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut client(port))
            .expect("CLUSTER INFO"),
    )
}

/// One INFO section as fields.
pub fn info(port: u16, section: &str) -> HashMap<String, String> {
    fields(
        &redis::cmd("INFO")
            .arg(section)
            .query::<String>(&mut client(port))
            .expect("INFO"),
    )
}

fn fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Waits until every port reports state ok, `members` known nodes, none of them joining
/// or learning slots (each judged the table, holds copies of what it owns and serves
/// it), and one epoch.
pub fn wait_agreed(ports: &[u16], members: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let infos: Vec<HashMap<String, String>> = ports.iter().map(|&p| cluster_info(p)).collect();
        let agreed = infos.iter().all(|i| {
            i["cluster_state"] == "ok"
                && i["cluster_known_nodes"] == members.to_string()
                && i["cluster_members_joining"] == "0"
                && i.get("cluster_slots_learning").is_none_or(|n| n == "0")
                && i["cluster_table_judged"] == "1"
        }) && infos
            .iter()
            .all(|i| i["cluster_current_epoch"] == infos[0]["cluster_current_epoch"]);
        if agreed {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no agreement on {members} members within {limit:?}: {infos:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sends signal `name` (`STOP`, `CONT`, …) to a member; after STOP, waits until every one
/// of its threads is stopped (on a loaded machine a thread may take a moment to reach the
/// stop, and may serve a request meanwhile).
pub fn signal(member: &Member, name: &str) {
    let pid = member.node.0.id();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
    if name == "STOP" {
        // Every thread is stopped before the test goes on (on a loaded machine a thread
        // may take a moment to reach the stop).
        let deadline = Instant::now() + Duration::from_secs(2);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "{pid} did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    })
}
