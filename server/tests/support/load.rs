//! Write load on a cluster: writers of unique keys that note what each acknowledged, and
//! the waits around them. Every wait is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::info;

/// Waits until every member holds a synced copy of every slot it replicates.
pub fn wait_replicated(ports: &[u16], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let progress: Vec<(String, String)> = ports
            .iter()
            .map(|&p| {
                // A member still loading its data has no replication section yet.
                let i = info(p, "replication");
                let field = |name: &str| i.get(name).cloned().unwrap_or_default();
                (field("repl_wanted_slots"), field("repl_synced_slots"))
            })
            .collect();
        if progress
            .iter()
            .all(|(wanted, synced)| wanted == synced && !wanted.is_empty() && wanted != "0")
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not re-replicated within {limit:?}: (wanted, synced) per member {progress:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Slot → owners' client ports (primary first), from CLUSTER OWNERS of the first member
/// that answers with every slot covered.
pub fn owners(ports: &[u16]) -> Option<Vec<Vec<u16>>> {
    for &port in ports {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
            continue;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
            continue;
        };
        let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
        let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER")
            .arg("OWNERS")
            .query::<redis::Value>(&mut con)
        else {
            continue;
        };
        let mut owners = vec![Vec::new(); 16384];
        for range in ranges {
            let redis::Value::Array(items) = range else {
                continue;
            };
            let first: i64 = redis::from_redis_value(items[0].clone()).ok()?;
            let last: i64 = redis::from_redis_value(items[1].clone()).ok()?;
            let ports: Vec<u16> = items[2..]
                .iter()
                .filter_map(|node| match node {
                    redis::Value::Array(fields) => {
                        redis::from_redis_value::<i64>(fields[1].clone()).ok()
                    }
                    _ => None,
                })
                .map(|p| p as u16)
                .collect();
            for slot in first..=last {
                owners[slot as usize] = ports.clone();
            }
        }
        if owners.iter().all(|o| !o.is_empty()) {
            return Some(owners);
        }
    }
    None
}

#[derive(Default)]
pub struct Outcome {
    /// Keys whose SET was acknowledged and whose WAIT 1 returned at least 1, and when.
    pub waited: Vec<(String, String, Instant)>,
    /// Keys whose SET was acknowledged but WAIT returned 0.
    pub unwaited: Vec<(String, String)>,
}

/// True for the keys writers push list elements to (see [`writer`]).
pub fn is_list_key(key: &str) -> bool {
    key.contains(":list")
}

/// What `key` holds of the write of `value`, read on `con`: for a string key its value; for
/// a list key `value` when the element is there exactly once, otherwise what is there
/// (`None` for missing, a count for duplicates).
pub fn read_back(con: &mut redis::Connection, key: &str, value: &str) -> Option<String> {
    try_read_back(con, key, value).unwrap()
}

/// [`read_back`], with the server's error (a `-MOVED`, say) returned.
pub fn try_read_back(
    con: &mut redis::Connection,
    key: &str,
    value: &str,
) -> redis::RedisResult<Option<String>> {
    if !is_list_key(key) {
        return redis::cmd("GET").arg(key).query(con);
    }
    let found: Vec<i64> = redis::cmd("LPOS")
        .arg(key)
        .arg(value)
        .arg("COUNT")
        .arg(0)
        .query(con)?;
    Ok(match found.len() {
        0 => None,
        1 => Some(value.to_string()),
        n => Some(format!("{value} {n} times")),
    })
}

/// A writer: unique keys, each `SET` then `WAIT <wait_for> 500` pipelined to the slot's
/// primary; every 4th write pushes a unique element onto a list instead (`RPUSH`, a list
/// key per 100 writes), so lists go through the same faults.
pub fn writer(
    id: usize,
    ports: Vec<u16>,
    wait_for: i64,
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<Outcome>>,
) {
    let mut table = None;
    let mut connections: HashMap<u16, redis::Connection> = HashMap::new();
    let mut seq = 0u64;
    while !stop.load(SeqCst) {
        let Some(owner) = table.as_ref() else {
            table = owners(&ports);
            if table.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        let list = seq % 4 == 3;
        let key = if list {
            format!("w{id}:list{}", seq / 100)
        } else {
            format!("w{id}:{seq}")
        };
        let value = format!("value-{id}-{seq}");
        let port = owner[usize::from(ringkv_cluster::key_slot(key.as_bytes()))][0];
        let con = match connections.entry(port) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let connected = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)));
                match connected {
                    Ok(con) => {
                        let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
                        e.insert(con)
                    }
                    Err(_) => {
                        table = None;
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
        };
        let replies: redis::RedisResult<(redis::Value, i64)> = redis::pipe()
            .cmd(if list { "RPUSH" } else { "SET" })
            .arg(&key)
            .arg(&value)
            .cmd("WAIT")
            .arg(wait_for)
            .arg(500)
            .query(con);
        seq += 1;
        match replies {
            Ok((redis::Value::Okay | redis::Value::Int(_), replicas)) => {
                let mut outcome = outcome.lock().unwrap();
                if replicas >= wait_for {
                    outcome.waited.push((key, value, Instant::now()));
                } else {
                    outcome.unwaited.push((key, value));
                }
            }
            _ => {
                // MOVED, CLUSTERDOWN, a dead member: learn the table again.
                connections.remove(&port);
                table = None;
            }
        }
    }
}

/// `count` writers (see [`writer`]) running against `ports` until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<Outcome>>,
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts the writers; each waits for `wait_for` replicas after every write.
    pub fn start(ports: &[u16], count: usize, wait_for: i64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let writers = (0..count)
            .map(|id| {
                let (ports, stop, outcome) = (ports.to_vec(), stop.clone(), outcome.clone());
                std::thread::spawn(move || writer(id, ports, wait_for, stop, outcome))
            })
            .collect();
        Load {
            stop,
            outcome,
            writers,
        }
    }

    /// Stops the writers and returns what they saw acknowledged.
    pub fn finish(self) -> Outcome {
        self.stop.store(true, SeqCst);
        for writer in self.writers {
            writer.join().unwrap();
        }
        std::mem::take(&mut *self.outcome.lock().unwrap())
    }
}

/// A round's verdict: it acknowledged enough writes to mean anything (`waited`, the ones
/// its writers counted), and none of them is gone or wrong `after` its faults.
pub fn assert_kept(seed: u64, waited: usize, lost: &[(String, Option<String>)], after: &str) {
    assert!(
        waited > 100,
        "seed {seed}: too few acknowledged writes to mean anything ({waited})"
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: {} acknowledged writes are gone or wrong after {after}, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
