//! Clusters of `ringkv-server` processes on loopback: forming, routing every key where
//! CLUSTER KEYSLOT and CLUSTER SLOTS say, following MOVED, proxying, losing a node,
//! gaining one, and refusing gossip signed with the wrong secret. Every wait is bounded;
//! every process is killed when its test ends.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use redis::Commands;

mod support;
use support::cluster::{client, cluster_info, signal, start, start_cluster, wait_agreed};
use support::{free_port, sigterm};

/// Slot → owners' client ports (primary first), from CLUSTER OWNERS.
fn slot_owners(port: u16) -> Vec<Vec<u16>> {
    slot_ranges(port, "OWNERS")
}

/// Slot → client ports listed for it by CLUSTER `subcommand` (SLOTS or OWNERS).
fn slot_ranges(port: u16, subcommand: &str) -> Vec<Vec<u16>> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg(subcommand)
        .query(&mut client(port))
        .expect("CLUSTER SLOTS or OWNERS");
    let mut owners = vec![Vec::new(); 16384];
    for range in ranges {
        let redis::Value::Array(items) = range else {
            panic!("a range is an array")
        };
        let first: i64 = redis::from_redis_value(items[0].clone()).unwrap();
        let last: i64 = redis::from_redis_value(items[1].clone()).unwrap();
        let ports: Vec<u16> = items[2..]
            .iter()
            .map(|node| {
                let redis::Value::Array(fields) = node else {
                    panic!("a node is an array")
                };
                let ip: String = redis::from_redis_value(fields[0].clone()).unwrap();
                assert_eq!(ip, "127.0.0.1", "announced address");
                let port: i64 = redis::from_redis_value(fields[1].clone()).unwrap();
                port as u16
            })
            .collect();
        for slot in first..=last {
            assert!(owners[slot as usize].is_empty(), "slot {slot} listed twice");
            owners[slot as usize] = ports.clone();
        }
    }
    assert!(
        owners.iter().all(|o| !o.is_empty()),
        "every slot has owners"
    );
    owners
}

#[test]
fn three_nodes_agree_and_every_key_lives_where_keyslot_and_slots_say() {
    let members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    let took = wait_agreed(&ports, 3, Duration::from_secs(15));
    eprintln!("3 nodes agreed {took:?} after the last one listened");

    // One table everywhere: same CLUSTER SLOTS on every node, two owners per slot.
    let owners = slot_owners(ports[0]);
    for &port in &ports[1..] {
        assert_eq!(slot_owners(port), owners, "node {port} has another table");
    }
    assert!(owners.iter().all(|o| o.len() == 2 && o[0] != o[1]));
    // CLUSTER SLOTS shows clients one master per slot, the primary: a member listed as
    // a replica anywhere would be skipped by cluster-wide SCAN and DBSIZE.
    let primaries: Vec<Vec<u16>> = owners.iter().map(|o| vec![o[0]]).collect();
    assert_eq!(slot_ranges(ports[1], "SLOTS"), primaries);

    // CLUSTER NODES: Redis's line format, one `myself`.
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut client(ports[1]))
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines.iter().filter(|l| l.contains("myself,master")).count(),
        1
    );
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[0].len(), 40, "node id: {line}");
        let (addr, cport) = fields[1].split_once('@').expect("ip:port@cport");
        let member = members
            .iter()
            .find(|m| addr == format!("127.0.0.1:{}", m.port))
            .expect("a member's address");
        assert_eq!(cport, member.bus.to_string());
        assert_eq!(fields[3], "-");
        assert_eq!(fields[7], "connected");
        assert!(fields.len() > 8, "a member owns slots: {line}");
    }
    let myid: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut client(ports[1]))
        .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&myid) && l.contains("myself"))
    );

    // The redis crate's cluster client writes and reads 10,000 keys.
    let cluster = redis::cluster::ClusterClient::new(
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut con = cluster.get_connection().expect("cluster connection");
    for i in 0..10_000 {
        let _: () = con.set(format!("key:{i}"), i).unwrap();
    }
    for i in (0..10_000).step_by(7) {
        let v: i64 = con.get(format!("key:{i}")).unwrap();
        assert_eq!(v, i);
    }

    // Each key is on the primary that CLUSTER KEYSLOT + CLUSTER SLOTS name, and only there.
    let mut direct: BTreeMap<u16, redis::Connection> =
        ports.iter().map(|&p| (p, client(p))).collect();
    let mut keyslot_con = client(ports[2]);
    for i in (0..10_000).step_by(13) {
        let key = format!("key:{i}");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query(&mut keyslot_con)
            .unwrap();
        let primary = owners[slot as usize][0];
        let v: i64 = direct.get_mut(&primary).unwrap().get(&key).unwrap();
        assert_eq!(v, i, "{key} (slot {slot}) on its primary {primary}");
        // The slot's own index counts and lists exactly the slot's keys.
        let mut expected: Vec<String> = (0..10_000)
            .map(|i| format!("key:{i}"))
            .filter(|k| i64::from(ringkv_slot(k)) == slot)
            .collect();
        expected.sort();
        let count: i64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query(direct.get_mut(&primary).unwrap())
            .unwrap();
        assert_eq!(count as usize, expected.len(), "slot {slot}");
        let mut listed: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1000)
            .query(direct.get_mut(&primary).unwrap())
            .unwrap();
        listed.sort();
        assert_eq!(listed, expected, "slot {slot}");
    }
    let total: i64 = ports
        .iter()
        .map(|&p| redis::cmd("DBSIZE").query::<i64>(&mut client(p)).unwrap())
        .sum();
    assert_eq!(total, 10_000, "every key stored exactly once");

    // A plain client asking the wrong node is redirected, Redis-style.
    let foreign = (0..10_000)
        .map(|i| format!("key:{i}"))
        .find(|k| {
            // Owned elsewhere, with a replica copy here.
            let slot_owners = &owners[ringkv_slot(k) as usize];
            slot_owners[0] != ports[0] && slot_owners.contains(&ports[0])
        })
        .unwrap();
    let mut plain = client(ports[0]);
    // READONLY does nothing on a member by default, as on a Redis primary (redis-rs's
    // async client sends it on every connection): replica copies are never read.
    let () = redis::cmd("READONLY").query(&mut plain).unwrap();
    let err = plain.get::<_, i64>(&foreign).unwrap_err();
    let owner = owners[ringkv_slot(&foreign) as usize][0];
    assert_eq!(err.code(), Some("MOVED"));
    let text = err.to_string();
    assert!(
        text.ends_with(&format!(" {} 127.0.0.1:{owner}", ringkv_slot(&foreign))),
        "{text}"
    );
    let err = redis::cmd("MSET")
        .arg("{a}1")
        .arg(1)
        .arg("{b}1")
        .arg(2)
        .query::<()>(&mut client(ports[0]))
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"));

    // redis-cli -c follows MOVED; redis-benchmark --cluster runs without an error.
    let out = Command::new("redis-cli")
        .args([
            "-c",
            "-p",
            &ports[0].to_string(),
            "SET",
            &foreign,
            "from-cli",
        ])
        .output()
        .expect("redis-cli runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let v: String = direct.get_mut(&owner).unwrap().get(&foreign).unwrap();
    assert_eq!(v, "from-cli");
    let out = Command::new("redis-benchmark")
        .args(["--cluster", "-p", &ports[1].to_string()])
        .args(["-t", "set,get", "-n", "3000", "-r", "10000", "-q"])
        .output()
        .expect("redis-benchmark runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "redis-benchmark --cluster failed: {all}"
    );
    assert!(!all.to_lowercase().contains("error"), "{all}");
    assert!(all.contains("GET:") && all.contains("SET:"), "{all}");

    // INFO says cluster mode.
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query(&mut client(ports[0]))
        .unwrap();
    assert!(info.contains("cluster_enabled:1"));
}

fn ringkv_slot(key: &str) -> u16 {
    ringkv_cluster::key_slot(key.as_bytes())
}

#[test]
fn proxy_routing_serves_a_plain_client_on_any_node() {
    let members = start_cluster(3, &["--cluster-routing", "proxy"]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let owners = slot_owners(ports[0]);

    let mut con = client(ports[0]);
    let keys: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let _: () = con.set(key, i).unwrap();
    }
    // Each key landed on its primary, whichever node the client used.
    for (i, key) in keys.iter().enumerate().step_by(11) {
        let primary = owners[ringkv_slot(key) as usize][0];
        let v: i64 = client(primary).get(key).unwrap();
        assert_eq!(v, i as i64);
    }
    // Multi-key commands across slots and nodes are split and gathered, in order.
    let mut other = client(ports[2]);
    let values: Vec<Option<i64>> = redis::cmd("MGET")
        .arg(&keys[..50])
        .arg("user:missing")
        .query(&mut other)
        .unwrap();
    let mut expected: Vec<Option<i64>> = (0..50).map(Some).collect();
    expected.push(None);
    assert_eq!(values, expected);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&keys[..40])
        .arg("nope")
        .query(&mut other)
        .unwrap();
    assert_eq!(exists, 40);
    let _: () = redis::cmd("MSET")
        .arg("a:1")
        .arg("x")
        .arg("b:2")
        .arg("y")
        .arg("c:3")
        .arg("z")
        .query(&mut other)
        .unwrap();
    let abc: Vec<String> = redis::cmd("MGET")
        .arg(&["a:1", "b:2", "c:3"])
        .query(&mut con)
        .unwrap();
    assert_eq!(abc, ["x", "y", "z"]);
    let deleted: i64 = redis::cmd("DEL")
        .arg(&keys[..100])
        .query(&mut other)
        .unwrap();
    assert_eq!(deleted, 100);
    let touched: i64 = redis::cmd("TOUCH")
        .arg(&keys[..120])
        .query(&mut con)
        .unwrap();
    assert_eq!(touched, 20);
    // A command that cannot be split still refuses keys on two nodes.
    let (a, b) = find_keys_on_two_nodes(&owners);
    let err = redis::cmd("RENAME")
        .arg(&a)
        .arg(&b)
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"));

    // redis-benchmark without --cluster, against one node, sees no error.
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &ports[1].to_string(),
            "-t",
            "set,get,mset",
            "-n",
            "2000",
            "-r",
            "5000",
            "-q",
        ])
        .output()
        .expect("redis-benchmark runs");
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !all.to_lowercase().contains("error"),
        "{all}"
    );
}

fn find_keys_on_two_nodes(owners: &[Vec<u16>]) -> (String, String) {
    let first = "k:0".to_string();
    let owner = owners[ringkv_slot(&first) as usize][0];
    let second = (1..)
        .map(|i| format!("k:{i}"))
        .find(|k| owners[ringkv_slot(k) as usize][0] != owner)
        .unwrap();
    (first, second)
}

#[test]
fn a_killed_node_leaves_the_view_and_its_slots_go_to_their_next_owners() {
    let mut members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let before = slot_owners(ports[0]);
    let victim = members.pop().unwrap();
    let killed_at = Instant::now();
    drop(victim); // SIGKILL
    let took = wait_agreed(&ports[..2], 2, Duration::from_secs(15));
    eprintln!(
        "SIGKILL to a table without the node: {:?}",
        killed_at.elapsed().min(took + Duration::from_millis(25))
    );
    let after = slot_owners(ports[0]);
    assert_eq!(slot_owners(ports[1]), after);
    assert!(after.iter().all(|o| !o.contains(&ports[2])));
    let mut kept = 0;
    let mut to_replica = 0;
    let mut orphaned = 0;
    for slot in 0..16384 {
        if before[slot][0] == ports[2] {
            orphaned += 1;
            if after[slot][0] == before[slot][1] {
                to_replica += 1;
            }
        } else if after[slot][0] == before[slot][0] {
            kept += 1;
        }
    }
    // The survivors keep (almost) all of their own slots, and a dead primary's slot
    // goes to the member that was its replica.
    assert!(
        kept as f64 > 0.97 * (16384 - orphaned) as f64,
        "kept {kept}"
    );
    assert!(
        to_replica as f64 > 0.9 * orphaned as f64,
        "{to_replica} of {orphaned}"
    );
}

#[test]
fn a_new_node_joins_and_takes_about_a_quarter_of_the_slots() {
    let mut members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    // Join through a member other than the first: any seed works.
    let newcomer = start(Some(members[1].bus), &[]);
    let new_port = newcomer.port;
    members.push(newcomer);
    let all: Vec<u16> = members.iter().map(|m| m.port).collect();
    let took = wait_agreed(&all, 4, Duration::from_secs(15));
    eprintln!("a 4th node was in every table {took:?} after it listened");
    let owners = slot_owners(new_port);
    let taken = owners.iter().filter(|o| o[0] == new_port).count();
    assert!(
        (3400..=4300).contains(&taken),
        "the newcomer owns {taken} slots, about 4096 expected"
    );
    // A clean stop leaves at once: the others drop it without waiting for suspicion.
    sigterm(&members[3].node);
    let took = wait_agreed(&all[..3], 3, Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(2),
        "graceful leave took {took:?}"
    );
}

#[test]
fn gossip_with_a_wrong_secret_is_rejected() {
    let good = start_cluster(2, &["--cluster-secret", "right-secret"]);
    let ports: Vec<u16> = good.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 2, Duration::from_secs(15));
    let intruder = start(Some(good[0].bus), &["--cluster-secret", "wrong-secret"]);
    std::thread::sleep(Duration::from_secs(2));
    for &port in &ports {
        let info = cluster_info(port);
        assert_eq!(
            info["cluster_known_nodes"], "2",
            "the intruder got in: {info:?}"
        );
    }
    let seed_info = cluster_info(ports[0]);
    let bad: u64 = seed_info["cluster_bus_packets_bad_mac"].parse().unwrap();
    assert!(bad > 0, "rejected packets are counted: {seed_info:?}");
    let info = cluster_info(intruder.port);
    assert_eq!(info["cluster_state"], "fail");
    assert_eq!(info["cluster_known_nodes"], "1");
    // Not joined: commands with keys are refused rather than served from a lone view.
    let err = client(intruder.port).set::<_, _, ()>("k", "v").unwrap_err();
    assert_eq!(err.code(), Some("CLUSTERDOWN"));
}

#[test]
fn bad_cluster_flags_stop_the_node_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv-server"))
        .args(["--persistence", "no", "--cluster-enabled", "yes"])
        .args(["--bind", "0.0.0.0", "--port", &free_port().to_string()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cluster-announce-ip"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv-server"))
        .args(["--persistence", "no", "--port", &free_port().to_string()])
        .args(["--cluster-enabled", "yes", "--cluster-join", "no-port-here"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:BUSPORT"));
}

#[test]
fn proxying_to_an_owner_that_stopped_answering_answers_an_error_and_the_connection_lives_on() {
    let members = start_cluster(3, &["--cluster-routing", "proxy"]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let owners = slot_owners(ports[0]);
    let doomed = (0..)
        .map(|i| format!("k:{i}"))
        .find(|k| owners[ringkv_slot(k) as usize][0] == ports[2])
        .unwrap();
    let mut con = client(ports[0]);
    let _: () = con.set(&doomed, "v").unwrap();
    // The owner stops answering (SIGSTOP: a killed one is out of the table within
    // milliseconds, its socket closing gives it away). The proxied GET waits for it
    // until the proxy timeout, then answers an error.
    signal(&members[2], "STOP");
    let err = con.get::<_, String>(&doomed).unwrap_err();
    assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{}", ports[2])),
        "{err}"
    );
    // Same connection, a key this node owns: served.
    let mine = (0..)
        .map(|i| format!("m:{i}"))
        .find(|k| owners[ringkv_slot(k) as usize][0] == ports[0])
        .unwrap();
    let _: () = con.set(&mine, "here").unwrap();
    let v: String = con.get(&mine).unwrap();
    assert_eq!(v, "here");
}

#[test]
fn garbage_on_the_bus_is_counted_and_changes_nothing() {
    let members = start_cluster(2, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 2, Duration::from_secs(15));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk: [&[u8]; 4] = [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0xA7, 1, 0xff, 0xff, 0xff],
        &[0xA7],
    ];
    for packet in junk {
        socket
            .send_to(packet, ("127.0.0.1", members[0].bus))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let info = cluster_info(ports[0]);
    let malformed: u64 = info["cluster_bus_packets_malformed"].parse().unwrap();
    assert!(malformed >= 3, "{info:?}");
    assert_eq!(info["cluster_known_nodes"], "2");
    assert_eq!(info["cluster_state"], "ok");
}

#[test]
fn scripts_and_libraries_reach_every_member_and_one_that_joins_later() {
    let mut members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let incr = "return redis.call('INCR', KEYS[1])";
    let library = "#!lua name=counters\nredis.register_function('bump', function(keys) return redis.call('INCRBY', keys[1], 10) end)";
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(incr)
        .query(&mut client(ports[0]))
        .unwrap();
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library)
        .query(&mut client(ports[0]))
        .unwrap();
    assert_eq!(name, "counters");
    // A client that sends FUNCTION LOAD to every primary itself (redis-py's cluster
    // client does) finds the library there already: the same code is no clash.
    let again: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library)
        .query(&mut client(ports[1]))
        .unwrap();
    assert_eq!(again, "counters");
    let clash: redis::RedisResult<String> = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=counters\nredis.register_function('bump', function() return 0 end)")
        .query(&mut client(ports[2]));
    assert!(
        clash.unwrap_err().to_string().contains("already exists"),
        "other code under the same name is still refused"
    );

    // A script or function flagged no-cluster is refused on a member, as Redis refuses it.
    let no_cluster: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("#!lua flags=no-cluster\nreturn 1")
        .arg(0)
        .query(&mut client(ports[0]));
    let refused = no_cluster.unwrap_err();
    assert_eq!(
        (refused.code(), refused.detail()),
        (
            Some("ERR"),
            Some("Can not run script on cluster, 'no-cluster' flag is set.")
        ),
        "{refused}"
    );

    // The reply waited for the others: every member runs them at once, on its own slots.
    let owners = slot_owners(ports[0]);
    for &port in &ports {
        let key = (0..)
            .map(|i| format!("counter:{i}"))
            .find(|k| owners[ringkv_slot(k) as usize][0] == port)
            .unwrap();
        let mut con = client(port);
        let counted: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(&key)
            .query(&mut con)
            .unwrap();
        assert_eq!(counted, 1, "EVALSHA on the member on {port}");
        let bumped: i64 = redis::cmd("FCALL")
            .arg("bump")
            .arg(1)
            .arg(&key)
            .query(&mut con)
            .unwrap();
        assert_eq!(bumped, 11, "FCALL on the member on {port}");
        // Keys of two slots, and an undeclared key another member serves, are refused.
        let other = (0..)
            .map(|i| format!("other:{i}"))
            .find(|k| owners[ringkv_slot(k) as usize][0] != port)
            .unwrap();
        let cross: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg("return 1")
            .arg(2)
            .arg(&key)
            .arg(&other)
            .query(&mut con);
        assert!(
            cross.as_ref().is_err_and(|e| e.code() == Some("CROSSSLOT")),
            "two slots: {cross:?}"
        );
        let undeclared: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg("return redis.call('INCR', ARGV[1])")
            .arg(1)
            .arg(&key)
            .arg(&other)
            .query(&mut con);
        assert!(
            undeclared
                .unwrap_err()
                .to_string()
                .contains("Script attempted to access a non local key in a cluster node"),
            "an undeclared key of another member"
        );
    }

    // A member that joins later takes the cluster's scripts and libraries.
    let newcomer = start(Some(members[0].bus), &[]);
    let new_port = newcomer.port;
    members.push(newcomer);
    let all: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&all, 4, Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut con = client(new_port);
    loop {
        let exists: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(&mut con)
            .unwrap();
        let libraries: Vec<redis::Value> =
            redis::cmd("FUNCTION").arg("LIST").query(&mut con).unwrap();
        if exists == [1] && libraries.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the newcomer has the script: {exists:?}, libraries: {libraries:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SCRIPT FLUSH on one member empties every member's cache.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut client(new_port))
        .unwrap();
    for &port in &all {
        let exists: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(&mut client(port))
            .unwrap();
        assert_eq!(exists, [0], "the member on {port} after SCRIPT FLUSH");
    }
    // FUNCTION DELETE stays on the member it is sent to, as in Redis Cluster (a cluster
    // client sends it to every primary): the others do not take the deletion from it.
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("counters")
        .query(&mut client(new_port))
        .unwrap();
    // Several rounds of the members' comparison (every 500 ms) and of gossip.
    std::thread::sleep(Duration::from_secs(3));
    for &port in &all {
        let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .query(&mut client(port))
            .unwrap();
        let wanted = usize::from(port != new_port);
        assert_eq!(
            libraries.len(),
            wanted,
            "libraries on {port} after one member's DELETE"
        );
    }
}

#[test]
fn a_member_out_of_the_view_while_scripts_changed_takes_them_when_it_is_back() {
    let members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let old = "return 'before'";
    let old_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(old)
        .query(&mut client(ports[0]))
        .unwrap();
    // Member 2 stops answering until the others take it out of their view: what they
    // change meanwhile is not sent to it.
    signal(&members[2], "STOP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster_info(ports[0])["cluster_known_nodes"] != "2" {
        assert!(Instant::now() < deadline, "member 2 is still in the view");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut client(ports[0]))
        .unwrap();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('INCR', KEYS[1])")
        .query(&mut client(ports[1]))
        .unwrap();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=lib\nredis.register_function('ten', function() return 10 end)")
        .query(&mut client(ports[0]))
        .unwrap();
    signal(&members[2], "CONT");
    wait_agreed(&ports, 3, Duration::from_secs(20));
    // Back in the view, it takes the set the others hold: the new script and library, and
    // not the script flushed while it was away.
    let mut con = client(ports[2]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let exists: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .arg(&old_sha)
            .query(&mut con)
            .unwrap();
        let ten: redis::RedisResult<i64> = redis::cmd("FCALL").arg("ten").arg(0).query(&mut con);
        if exists == [1, 0] && ten.as_ref().is_ok_and(|&t| t == 10) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 2 after it came back: scripts {exists:?}, FCALL {ten:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw subscriber: sends a command, then reads until `expected` arrived (bounded).
struct Subscriber {
    stream: std::net::TcpStream,
    seen: Vec<u8>,
}

impl Subscriber {
    fn connect(port: u16) -> Subscriber {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Subscriber {
            stream,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, args: &[&str]) {
        use std::io::Write;
        self.stream.write_all(&support::resp_command(args)).unwrap();
    }

    fn expect(&mut self, expected: &str) {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&self.seen).contains(expected) {
            assert!(
                Instant::now() < deadline,
                "waited for {expected:?}, saw {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            let mut chunk = [0u8; 4096];
            if let Ok(n) = self.stream.read(&mut chunk) {
                assert!(n > 0, "closed");
                self.seen.extend_from_slice(&chunk[..n]);
            }
        }
        self.seen.clear();
    }

    /// Reads until every one of `wanted` was seen, in any order, within 10 s.
    fn expect_all(&mut self, wanted: &[String], what: &str) {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = String::from_utf8_lossy(&self.seen).into_owned();
            if wanted.iter().all(|w| seen.contains(w.as_str())) {
                return;
            }
            assert!(Instant::now() < deadline, "not every {what}: {seen:?}");
            let mut chunk = [0u8; 65536];
            if let Ok(n) = self.stream.read(&mut chunk) {
                self.seen.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

fn message(kind: &str, channel: &str, text: &str) -> String {
    format!(
        "*3\r\n${}\r\n{kind}\r\n${}\r\n{channel}\r\n${}\r\n{text}\r\n",
        kind.len(),
        channel.len(),
        text.len()
    )
}

#[test]
fn publish_reaches_subscribers_on_every_member_and_spublish_the_slots_owners() {
    let members = start_cluster(
        3,
        &["--cluster-replicas", "1", "--cluster-routing", "redirect"],
    );
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let mut subscribers: Vec<Subscriber> = ports
        .iter()
        .map(|&port| {
            let mut subscriber = Subscriber::connect(port);
            subscriber.send(&["SUBSCRIBE", "news"]);
            subscriber.expect("subscribe\r\n$4\r\nnews\r\n:1\r\n");
            subscriber
        })
        .collect();
    // Published on each member in turn: every member's subscriber hears it, in order.
    for (i, &port) in ports.iter().enumerate() {
        let text = format!("from-{i}");
        let local: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg(&text)
            .query(&mut client(port))
            .unwrap();
        assert_eq!(
            local, 1,
            "PUBLISH counts this member's receivers, as Redis Cluster"
        );
        for subscriber in &mut subscribers {
            subscriber.expect(&message("message", "news", &text));
        }
    }

    // A shard channel lives on its slot's owners: the replica's subscriber hears what was
    // published on the primary, and a member that does not own the slot redirects.
    let owners = slot_owners(ports[0]);
    let channel = "orders";
    let slot_owner_ports = &owners[ringkv_slot(channel) as usize];
    let (primary, replica) = (slot_owner_ports[0], slot_owner_ports[1]);
    let outsider = *ports
        .iter()
        .find(|p| !slot_owner_ports.contains(p))
        .unwrap();
    let mut on_replica = Subscriber::connect(replica);
    on_replica.send(&["SSUBSCRIBE", channel]);
    on_replica.expect("ssubscribe\r\n$6\r\norders\r\n:1\r\n");
    let moved: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg("x")
        .query(&mut client(outsider));
    assert_eq!(moved.unwrap_err().code(), Some("MOVED"));
    let local: i64 = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg("paid")
        .query(&mut client(primary))
        .unwrap();
    assert_eq!(local, 0, "nobody subscribed on the primary itself");
    on_replica.expect(&message("smessage", channel, "paid"));
}

#[test]
fn shard_channel_subscribers_are_unsubscribed_when_their_slot_moves_away() {
    let mut members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let owners = slot_owners(ports[0]);
    let home = ports[0];
    let channels: Vec<String> = (0..1500)
        .map(|i| format!("orders:{i}"))
        .filter(|c| owners[ringkv_slot(c) as usize].contains(&home))
        .collect();
    let mut subscriber = Subscriber::connect(home);
    for channel in &channels {
        subscriber.send(&["SSUBSCRIBE", channel]);
    }
    let last = channels.last().unwrap();
    subscriber.expect(&format!(
        "ssubscribe\r\n${}\r\n{last}\r\n:{}\r\n",
        last.len(),
        channels.len()
    ));

    // A 4th member takes about a quarter of the slots, some of them from `home`.
    let newcomer = start(Some(members[0].bus), &[]);
    members.push(newcomer);
    let all: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&all, 4, Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(20);
    let moved: Vec<&String> = loop {
        let owners = slot_owners(home);
        let moved: Vec<&String> = channels
            .iter()
            .filter(|c| !owners[ringkv_slot(c) as usize].contains(&home))
            .collect();
        if !moved.is_empty() || Instant::now() > deadline {
            break moved;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!moved.is_empty(), "no channel's slot left {home}");
    // Every moved channel is told once, in whatever order the member finds them.
    let wanted: Vec<String> = moved
        .iter()
        .map(|c| format!("sunsubscribe\r\n${}\r\n{c}\r\n", c.len()))
        .collect();
    subscriber.expect_all(&wanted, "moved channel was told");
    let left: i64 = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(moved[0].as_str())
        .query::<Vec<redis::Value>>(&mut client(home))
        .map(|reply| redis::from_redis_value(reply[1].clone()).unwrap())
        .unwrap();
    assert_eq!(
        left, 0,
        "{home} no longer counts a subscriber of a channel it gave up"
    );
}

#[test]
fn a_tracking_client_is_told_of_the_keys_whose_slot_moved_away() {
    let mut members = start_cluster(3, &[]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(15));
    let home = ports[0];
    let owners = slot_owners(home);
    let keys: Vec<String> = (0..1500)
        .map(|i| format!("cached:{i}"))
        .filter(|k| owners[ringkv_slot(k) as usize][0] == home)
        .collect();
    let mut cache = Subscriber::connect(home);
    cache.send(&["HELLO", "3"]);
    cache.send(&["CLIENT", "TRACKING", "ON"]);
    cache.expect("+OK\r\n");
    for key in &keys {
        cache.send(&["GET", key]);
    }
    cache.send(&["PING"]);
    cache.expect("+PONG\r\n");

    let newcomer = start(Some(members[0].bus), &[]);
    members.push(newcomer);
    let all: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&all, 4, Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(20);
    let moved: Vec<&String> = loop {
        let owners = slot_owners(home);
        let moved: Vec<&String> = keys
            .iter()
            .filter(|k| owners[ringkv_slot(k) as usize][0] != home)
            .collect();
        if !moved.is_empty() || Instant::now() > deadline {
            break moved;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!moved.is_empty(), "no key's slot left {home}");
    // Each moved key's cached copy is invalidated, whatever the order.
    let wanted: Vec<String> = moved
        .iter()
        .map(|k| format!("invalidate\r\n*1\r\n${}\r\n{k}\r\n", k.len()))
        .collect();
    cache.expect_all(&wanted, "moved key was invalidated");
}
