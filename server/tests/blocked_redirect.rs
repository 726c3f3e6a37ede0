//! Clients blocked on keys (BLPOP) in a cluster whose slots move: a join gives some of
//! their slots to a new member, and those clients are redirected there with `-MOVED`.
//! A file of its own, so its cluster does not share the machine with the handoff tests'.

use std::time::{Duration, Instant};

mod support;
use support::cluster::{client, start, start_cluster, wait_agreed};
use support::load::{owners, wait_replicated};

/// Every member's flags.
const FLAGS: [&str; 2] = ["--cluster-replicas", "1"];

/// Clients blocked on keys whose slots a joining member takes over are redirected there
/// with `-MOVED`, as Redis Cluster redirects blocked clients; the others stay blocked
/// where they are and are served by the next push.
#[test]
fn clients_blocked_on_a_slot_that_moves_are_redirected_to_its_new_primary() {
    let mut members = start_cluster(3, &FLAGS);
    let mut ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, 3, Duration::from_secs(20));
    wait_replicated(&ports, Duration::from_secs(20));
    let before = owners(&ports).expect("the owners");
    let keys: Vec<String> = (0..60).map(|i| format!("queue:{i}")).collect();
    let primary_of = |routes: &Vec<Vec<u16>>, key: &str| {
        routes[usize::from(ringkv_cluster::key_slot(key.as_bytes()))][0]
    };
    let (sender, replies) = std::sync::mpsc::channel();
    for key in &keys {
        let (key, port, sender) = (key.clone(), primary_of(&before, key), sender.clone());
        std::thread::spawn(move || {
            let mut con = client(port);
            con.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
            let reply = redis::cmd("BLPOP")
                .arg(&key)
                .arg(30)
                .query::<Option<(String, String)>>(&mut con);
            let _ = sender.send((key, reply));
        });
    }
    let blocked = || -> i64 {
        ports
            .iter()
            .map(|&p| {
                support::cluster::info(p, "clients")["blocked_clients"]
                    .parse::<i64>()
                    .unwrap()
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while blocked() < keys.len() as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(blocked(), keys.len() as i64, "every client is blocked");
    members.push(start(Some(members[0].bus), &FLAGS));
    let joiner = members[3].port;
    ports.push(joiner);
    wait_agreed(&ports, 4, Duration::from_secs(30));
    wait_replicated(&ports, Duration::from_secs(30));
    let after = owners(&ports).expect("the owners");
    let moved: Vec<&String> = keys
        .iter()
        .filter(|k| primary_of(&after, k) != primary_of(&before, k))
        .collect();
    assert!(
        moved.iter().any(|k| primary_of(&after, k) == joiner),
        "the joiner takes some of the keys' slots"
    );
    // Every client on a slot that moved is redirected. A slot the join's intermediate
    // tables moved and moved back may redirect its client too; nothing is answered
    // otherwise while blocked.
    let mut answered = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !moved.iter().all(|k| answered.contains(*k)) {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (key, reply) = replies
            .recv_timeout(wait)
            .expect("a blocked client on a moved slot is answered within seconds");
        let error = reply.expect_err("a redirect, not an element");
        assert_eq!(error.code(), Some("MOVED"), "{key}: {error}");
        if primary_of(&after, &key) == joiner {
            assert!(
                error.to_string().contains(&format!(":{joiner}")),
                "{key}: {error}"
            );
        }
        answered.insert(key);
    }
    while let Ok((key, reply)) = replies.try_recv() {
        let error = reply.expect_err("a redirect, not an element");
        assert_eq!(error.code(), Some("MOVED"), "{key}: {error}");
        answered.insert(key);
    }
    let still_blocked: Vec<&String> = keys.iter().filter(|k| !answered.contains(*k)).collect();
    for key in &still_blocked {
        let () = redis::cmd("RPUSH")
            .arg(key)
            .arg("job")
            .query(&mut client(primary_of(&after, key)))
            .expect("a push where the key is served");
    }
    for _ in 0..still_blocked.len() {
        let (key, reply) = replies
            .recv_timeout(Duration::from_secs(5))
            .expect("a client still blocked is served by the push");
        assert_eq!(reply.expect("served"), Some((key, "job".to_string())));
    }
}
