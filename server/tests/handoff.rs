//! Handoff on loopback (DESIGN.md §5.5): a member joins a loaded 3-member cluster under
//! write load; it copies the slots it will own while their primaries keep serving them,
//! then takes them, each after its previous primary's fence. Every write acknowledged
//! before, during and after the join must read back with its value (not only the ones
//! `WAIT` covered: nobody died), and the joiner must end up serving about its share. The
//! same for a graceful leave; and with a member killed in the middle of a join, every
//! write `WAIT 1` acknowledged.
//! Seeds are printed; `RINGKV_HANDOFF_SEED` replays one, `RINGKV_HANDOFF_ROUNDS` runs
//! more rounds. Every wait is bounded; every process is killed when its test ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

mod support;
use support::cluster::{Member, client, start, start_cluster, wait_agreed};
use support::load::{
    Load, Outcome, assert_kept, owners, read_back, try_read_back, wait_replicated,
};
use support::{env_count, env_seed, seeded};

/// Every member's flags (replica reads: the tests read the replicas' copies too).
const FLAGS: [&str; 4] = ["--cluster-replicas", "1", "--cluster-replica-reads", "yes"];

/// Keys loaded before the join, so the handoff moves real data.
const PRELOADED: usize = 30_000;

/// Writes `count` keys `pre:<i>` to their primaries, pipelined per owner.
fn preload(ports: &[u16], count: usize) {
    let routes = owners(ports).expect("the owners");
    let mut by_owner: HashMap<u16, redis::Pipeline> = HashMap::new();
    for i in 0..count {
        let key = format!("pre:{i}");
        let port = routes[usize::from(ringkv_cluster::key_slot(key.as_bytes()))][0];
        by_owner
            .entry(port)
            .or_default()
            .cmd("SET")
            .arg(&key)
            .arg(format!("v{i}"))
            .ignore();
    }
    for (port, pipe) in by_owner {
        let () = pipe.query(&mut client(port)).expect("the preload");
    }
}

/// `size` members, agreed and replicated, with the preloaded keys written.
fn loaded_cluster(size: usize) -> (Vec<Member>, Vec<u16>) {
    let members = start_cluster(size, &FLAGS);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    wait_agreed(&ports, size, Duration::from_secs(20));
    wait_replicated(&ports, Duration::from_secs(20));
    preload(&ports, PRELOADED);
    (members, ports)
}

/// Every write the writers saw acknowledged, WAIT or not, and the preloaded keys.
fn acknowledged(outcome: &Outcome) -> Vec<(String, String)> {
    outcome
        .waited
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .chain(outcome.unwaited.iter().cloned())
        .chain((0..PRELOADED).map(|i| (format!("pre:{i}"), format!("v{i}"))))
        .collect()
}

/// Reads `keys` back from their primaries among `ports`: the ones gone or wrong.
fn lost_writes(ports: &[u16], keys: &[(String, String)]) -> Vec<(String, Option<String>)> {
    let routes = owners(ports).expect("the owners at the end");
    let mut connections: HashMap<u16, redis::Connection> =
        ports.iter().map(|&p| (p, client(p))).collect();
    let mut lost = Vec::new();
    for (key, value) in keys {
        let port = routes[usize::from(ringkv_cluster::key_slot(key.as_bytes()))][0];
        let got = read_back(connections.get_mut(&port).unwrap(), key, value);
        if got.as_deref() != Some(value.as_str()) {
            lost.push((key.clone(), got));
        }
    }
    lost
}

/// Reads `keys` back from their slots' replica among `ports` (`READONLY`), waiting a
/// little for a lagging one: the ones whose copy there is gone, wrong or doubled. A
/// handoff leaves the old holder replicating what it handed over, resumed from the new
/// primary's stream at the fence: resumed from the wrong place, its copy would miss
/// writes or apply some twice.
fn replica_mismatches(ports: &[u16], keys: &[(String, String)]) -> Vec<(String, Option<String>)> {
    let routes = owners(ports).expect("the owners at the end");
    let mut connections: HashMap<u16, redis::Connection> = ports
        .iter()
        .map(|&p| {
            let mut con = client(p);
            let () = redis::cmd("READONLY").query(&mut con).unwrap();
            (p, con)
        })
        .collect();
    let mut pending: Vec<&(String, String)> = keys.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut wrong = Vec::new();
        pending.retain(|(key, value)| {
            let replica = routes[usize::from(ringkv_cluster::key_slot(key.as_bytes()))][1];
            // A copy being resynced sends reads to the primary: not there yet.
            let got = try_read_back(connections.get_mut(&replica).unwrap(), key, value)
                .unwrap_or_else(|error| Some(format!("-{error}")));
            let bad = got.as_deref() != Some(value.as_str());
            if bad {
                wrong.push((key.clone(), got));
            }
            bad
        });
        if wrong.is_empty() || Instant::now() > deadline {
            return wrong;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// For a failed round's log: each lost key's slot, its owners now, and which members still
/// keep it in their store (served or not: `CLUSTER GETKEYSINSLOT` reads the local copy).
fn explain_lost(ports: &[u16], lost: &[(String, Option<String>)]) {
    let routes = owners(ports).unwrap_or_default();
    for (key, _) in lost.iter().take(5) {
        let slot = ringkv_cluster::key_slot(key.as_bytes());
        let keeping: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|&port| {
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100_000)
                    .query::<Vec<String>>(&mut client(port))
                    .is_ok_and(|keys| keys.contains(key))
            })
            .collect();
        eprintln!(
            "lost {key}: slot {slot}, owners now {:?}, kept in the store of {keeping:?}",
            routes.get(usize::from(slot))
        );
    }
}

/// Per member, the keys its store still keeps in slots it does not own (a copy of a slot
/// the table moved away), by `CLUSTER COUNTKEYSINSLOT` on every such slot.
fn keys_left_over(ports: &[u16]) -> Vec<(u16, i64)> {
    let routes = owners(ports).expect("the owners");
    ports
        .iter()
        .map(|&port| {
            let mut pipe = redis::pipe();
            for (slot, owning) in routes.iter().enumerate() {
                if !owning.contains(&port) {
                    pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot);
                }
            }
            let counts: Vec<i64> = pipe.query(&mut client(port)).expect("the counts");
            (port, counts.iter().sum())
        })
        .collect()
}

/// Waits (bounded) until no member keeps keys of a slot it does not own: each dropped its
/// copies once the slots' new owners settled. Panics with what is still kept.
fn wait_leftovers_dropped(seed: u64, ports: &[u16], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let kept = keys_left_over(ports);
        if kept.iter().all(|(_, keys)| *keys == 0) {
            return;
        }
        if Instant::now() >= deadline {
            // What the owners have not settled on: copies not synced, slots still learned.
            let states: Vec<(u16, String)> = ports
                .iter()
                .map(|&port| {
                    let info = support::cluster::cluster_info(port);
                    let mut lines: Vec<String> = info
                        .iter()
                        .filter(|(k, _)| {
                            k.starts_with("cluster_slots_")
                                || k.starts_with("cluster_repl_copies")
                                || k.starts_with("cluster_handoff_slots")
                                || k.starts_with("cluster_table")
                        })
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    lines.sort();
                    (port, lines.join(" "))
                })
                .collect();
            panic!(
                "seed {seed}: members still keep keys of slots they do not own after {limit:?}: {kept:?}; their states: {states:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn join_rounds(wait_for: i64) {
    let base = env_seed("RINGKV_HANDOFF_SEED");
    for round in 0..env_count("RINGKV_HANDOFF_ROUNDS", 1) {
        let seed = base.wrapping_add(round);
        let mut next = seeded(seed);
        let (mut members, mut ports) = loaded_cluster(3);
        let load = Load::start(&ports, 4, wait_for);
        std::thread::sleep(Duration::from_millis(300 + next() % 700));
        let joined_at = Instant::now();
        members.push(start(Some(members[0].bus), &FLAGS));
        ports.push(members[3].port);
        wait_agreed(&ports, 4, Duration::from_secs(30));
        let took = joined_at.elapsed();
        wait_replicated(&ports, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(300 + next() % 300));
        let outcome = load.finish();
        // The members that gave slots away drop their copies; the keys live on at the
        // slots' owners (read back below, after the drops).
        let kept_after_join = keys_left_over(&ports);
        wait_leftovers_dropped(seed, &ports, Duration::from_secs(30));
        let keys = acknowledged(&outcome);
        let lost = lost_writes(&ports, &keys);
        let joiner_keys: i64 = redis::cmd("DBSIZE")
            .query(&mut client(members[3].port))
            .unwrap();
        let total = keys.len() as i64;
        let joiner_links = support::cluster::cluster_info(members[3].port);
        eprintln!(
            "join round WAIT {wait_for} seed={seed}: joined and serving after {took:?}; acknowledged writes {total} (WAIT-covered {}), lost {}; the joiner serves {joiner_keys} of {total} keys, its replicas' links resumed {} and synced whole {}; keys kept in slots given away, by member, right after the join: {kept_after_join:?}",
            outcome.waited.len(),
            lost.len(),
            joiner_links["cluster_repl_partial_syncs"],
            joiner_links["cluster_repl_full_syncs"],
        );
        assert_kept(seed, outcome.waited.len(), &lost, "the join");
        let unreplicated = replica_mismatches(&ports, &keys);
        assert!(
            unreplicated.is_empty(),
            "seed {seed}: {} of {} keys differ on their replica after the join, e.g. {:?}",
            unreplicated.len(),
            keys.len(),
            &unreplicated[..unreplicated.len().min(5)]
        );
        // About a quarter: the table gives it a quarter of the slots.
        assert!(
            joiner_keys > total * 15 / 100 && joiner_keys < total * 35 / 100,
            "seed {seed}: the joiner serves {joiner_keys} of {total} keys"
        );
    }
}

/// A member of four stopped with SIGTERM under write load: it hands every slot it serves
/// to the member taking it over (fenced, as on a join), then leaves. Nothing acknowledged
/// is lost, WAIT or not.
#[test]
fn a_member_leaving_gracefully_under_write_load_loses_no_acknowledged_write() {
    let base = env_seed("RINGKV_HANDOFF_SEED");
    for round in 0..env_count("RINGKV_HANDOFF_ROUNDS", 1) {
        let seed = base.wrapping_add(round);
        let mut next = seeded(seed);
        let (members, ports) = loaded_cluster(4);
        let load = Load::start(&ports, 4, 0);
        std::thread::sleep(Duration::from_millis(300 + next() % 500));
        let leaver = (next() % 4) as usize;
        let left_at = Instant::now();
        support::sigterm(&members[leaver].node);
        let survivors: Vec<u16> = (0..4).filter(|&i| i != leaver).map(|i| ports[i]).collect();
        wait_agreed(&survivors, 3, Duration::from_secs(30));
        let took = left_at.elapsed();
        wait_replicated(&survivors, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(300));
        let outcome = load.finish();
        wait_leftovers_dropped(seed, &survivors, Duration::from_secs(30));
        let keys = acknowledged(&outcome);
        let lost = lost_writes(&survivors, &keys);
        eprintln!(
            "leave round seed={seed}: member {leaver} left, the others agreed after {took:?}; acknowledged writes {}, lost {}",
            keys.len(),
            lost.len()
        );
        assert_kept(seed, outcome.waited.len(), &lost, "the leave");
    }
}

/// A member killed with SIGKILL while a 4th joins (copying, taking its slots or fencing
/// them), under `WAIT 1` writes: the handoffs it was part of end in a retry or a takeover,
/// and no write WAIT acknowledged is lost.
#[test]
fn a_member_killed_during_a_join_loses_no_write_wait_acknowledged() {
    let base = env_seed("RINGKV_HANDOFF_SEED");
    for round in 0..env_count("RINGKV_HANDOFF_ROUNDS", 1) {
        let seed = base.wrapping_add(round);
        let mut next = seeded(seed);
        let (mut members, mut ports) = loaded_cluster(3);
        let load = Load::start(&ports, 4, 1);
        std::thread::sleep(Duration::from_millis(300 + next() % 500));
        let mid_join = Duration::from_millis(next() % 400);
        let victim = (next() % 3) as usize;
        // Its seed survives: killed before the joiner reached it, it left the joiner alone
        // for good (no agreement within 30 s, 1 run in 200).
        let survivor_bus = members[(victim + 1) % 3].bus;
        members.push(start(Some(survivor_bus), &FLAGS));
        ports.push(members[3].port);
        std::thread::sleep(mid_join);
        let killed_at = Instant::now();
        members[victim].node.0.kill().expect("SIGKILL");
        let _ = members[victim].node.0.wait();
        let survivors: Vec<u16> = (0..4).filter(|&i| i != victim).map(|i| ports[i]).collect();
        wait_agreed(&survivors, 3, Duration::from_secs(30));
        let took = killed_at.elapsed();
        wait_replicated(&survivors, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(300));
        let outcome = load.finish();
        let waited: Vec<(String, String)> = outcome
            .waited
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        // Copies of slots that moved are dropped only once their new owners settled: the
        // writes WAIT acknowledged are still there after the drops.
        wait_leftovers_dropped(seed, &survivors, Duration::from_secs(30));
        let lost = lost_writes(&survivors, &waited);
        explain_lost(&survivors, &lost);
        for (key, _) in lost.iter().take(5) {
            if let Some((_, _, at)) = outcome.waited.iter().find(|(k, _, _)| k == key) {
                let (after, ms) = match at.checked_duration_since(killed_at) {
                    Some(d) => ("after", d.as_millis()),
                    None => ("before", killed_at.duration_since(*at).as_millis()),
                };
                eprintln!("lost {key}: acknowledged {ms} ms {after} the kill");
            }
        }
        eprintln!(
            "kill-during-join round seed={seed}: member {victim} killed {mid_join:?} into the join, the others agreed after {took:?}; WAIT-acknowledged writes {}, lost {}; writes WAIT did not cover {}",
            waited.len(),
            lost.len(),
            outcome.unwaited.len(),
        );
        assert_kept(seed, waited.len(), &lost, "the kill");
    }
}

#[test]
fn a_member_joining_under_write_load_loses_no_acknowledged_write_and_serves_its_share() {
    join_rounds(0);
}

#[test]
fn a_member_joining_under_wait_1_writes_loses_none_of_them() {
    join_rounds(1);
}

/// Writes 3,000 keys `<prefix>:<i>` of 1 KB to `port`; their value.
fn load_3_mb(port: u16, prefix: &str) -> String {
    let value = "v".repeat(1024);
    let mut pipe = redis::pipe();
    for i in 0..3_000 {
        pipe.cmd("SET")
            .arg(format!("{prefix}:{i}"))
            .arg(&value)
            .ignore();
    }
    let () = pipe.query(&mut client(port)).unwrap();
    value
}

/// Every 7th key [`load_3_mb`] wrote reads back whole from its primary among `ports`.
fn assert_3_mb_whole(ports: &[u16], prefix: &str, value: &str) {
    let table = owners(ports).expect("owners");
    for i in (0..3_000).step_by(7) {
        let key = format!("{prefix}:{i}");
        let owner = table[usize::from(ringkv_cluster::key_slot(key.as_bytes()))][0];
        let got: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query(&mut client(owner))
            .unwrap();
        assert_eq!(got.as_deref(), Some(value), "{key}");
    }
}

/// The transfer budget paces what a joiner copies: at `--cluster-transfer-max-rate 1mb`,
/// 3 MB take at least two seconds to reach the joiner, the member says how long it paused
/// its copies (`cluster_repl_transfer_paced_ms`), and every key arrives whole.
#[test]
fn a_transfer_budget_paces_the_copy_to_a_joiner() {
    let extra = ["--cluster-transfer-max-rate", "1mb"];
    let first = start(None, &extra);
    wait_agreed(&[first.port], 1, Duration::from_secs(20));
    let value = load_3_mb(first.port, "paced");

    let began = Instant::now();
    let second = start(Some(first.bus), &extra);
    let ports = [first.port, second.port];
    wait_agreed(&ports, 2, Duration::from_secs(20));
    wait_replicated(&ports, Duration::from_secs(60));
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "3 MB reached the joiner in {took:?} at 1 MB/s"
    );
    let paced: u64 = support::cluster::cluster_info(first.port)["cluster_repl_transfer_paced_ms"]
        .parse()
        .unwrap();
    assert!(paced >= 1_000, "the copies paused {paced} ms");
    assert_3_mb_whole(&ports, "paced", &value);
    drop(second);
}

/// Two members join a loaded member at once with `--cluster-transfer-max-copies 1`: it
/// sends one copy at a time (never two, sampled throughout), the other waiting its turn
/// (`cluster_repl_transfer_queued_ms`), and both joiners end up with every key whole.
#[test]
fn copies_beyond_the_transfer_limit_wait_their_turn() {
    let extra = [
        "--cluster-transfer-max-rate",
        "1mb",
        "--cluster-transfer-max-copies",
        "1",
    ];
    let first = start(None, &extra);
    wait_agreed(&[first.port], 1, Duration::from_secs(20));
    let value = load_3_mb(first.port, "turn");

    let second = start(Some(first.bus), &extra);
    let third = start(Some(first.bus), &extra);
    let ports = [first.port, second.port, third.port];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most_running = 0;
    loop {
        let info = support::cluster::cluster_info(first.port);
        let running: u64 = info["cluster_repl_transfers_running"].parse().unwrap();
        most_running = most_running.max(running);
        if info["cluster_known_nodes"] == "3"
            && info["cluster_members_joining"] == "0"
            && info["cluster_handoff_slots_pending_out"] == "0"
        {
            break;
        }
        assert!(Instant::now() < deadline, "the joins never ended: {info:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_agreed(&ports, 3, Duration::from_secs(30));
    wait_replicated(&ports, Duration::from_secs(60));
    assert_eq!(most_running, 1, "copies sent at once");
    let queued: u64 = support::cluster::cluster_info(first.port)["cluster_repl_transfer_queued_ms"]
        .parse()
        .unwrap();
    assert!(queued >= 200, "the second copy waited {queued} ms");
    assert_3_mb_whole(&ports, "turn", &value);
    drop((second, third));
}
