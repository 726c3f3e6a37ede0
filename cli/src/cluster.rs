//! `ringkv cluster …`: look at a running cluster through any member, or start a local one.

// A command-line tool: printing to stdout is what it is for.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};

/// One member as CLUSTER NODES describes it.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    pub addr: String,
    pub bus_port: String,
    pub flags: String,
    pub slots: usize,
    pub ranges: Vec<String>,
}

fn connect(addr: &str) -> Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))
        .with_context(|| format!("{addr} is not HOST:PORT"))?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(3))
        .with_context(|| format!("connecting to {addr}"))?;
    con.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(con)
}

fn cluster_cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> Result<T> {
    let mut cmd = redis::cmd("CLUSTER");
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.query(con)
        .with_context(|| format!("CLUSTER {}", args.join(" ")))
}

/// CLUSTER NODES, parsed.
pub fn nodes(addr: &str) -> Result<Vec<NodeLine>> {
    let text: String = cluster_cmd(&mut connect(addr)?, &["NODES"])?;
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 8 {
            bail!("unexpected CLUSTER NODES line: {line}");
        }
        let (client, bus) = fields[1].split_once('@').unwrap_or((fields[1], ""));
        let ranges: Vec<String> = fields[8..].iter().map(|s| s.to_string()).collect();
        let slots = ranges
            .iter()
            .map(|r| match r.split_once('-') {
                Some((a, b)) => {
                    b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                }
                None => 1,
            })
            .sum();
        lines.push(NodeLine {
            id: fields[0].to_string(),
            addr: client.to_string(),
            bus_port: bus.split(',').next().unwrap_or("").to_string(),
            flags: fields[2].to_string(),
            slots,
            ranges,
        });
    }
    Ok(lines)
}

fn info(addr: &str) -> Result<BTreeMap<String, String>> {
    let text: String = cluster_cmd(&mut connect(addr)?, &["INFO"])?;
    Ok(fields(&text))
}

/// One section of a member's INFO.
fn info_section(addr: &str, section: &str) -> Result<BTreeMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(section).query(&mut connect(addr)?)?;
    Ok(fields(&text))
}

fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Slot ranges with their owners' addresses, primary first (CLUSTER OWNERS: CLUSTER SLOTS
/// shows clients only the primaries).
pub fn slot_ranges(addr: &str) -> Result<Vec<(i64, i64, Vec<String>)>> {
    let ranges: Vec<redis::Value> = cluster_cmd(&mut connect(addr)?, &["OWNERS"])?;
    let mut out = Vec::new();
    for range in ranges {
        let redis::Value::Array(items) = range else {
            bail!("CLUSTER OWNERS: a range is not an array");
        };
        if items.len() < 3 {
            bail!("CLUSTER OWNERS: a range without owners");
        }
        let first: i64 = redis::from_redis_value(items[0].clone())?;
        let last: i64 = redis::from_redis_value(items[1].clone())?;
        let mut owners = Vec::new();
        for node in &items[2..] {
            let redis::Value::Array(fields) = node else {
                bail!("CLUSTER OWNERS: a node is not an array");
            };
            let ip: String = redis::from_redis_value(fields[0].clone())?;
            let port: i64 = redis::from_redis_value(fields[1].clone())?;
            owners.push(format!("{ip}:{port}"));
        }
        out.push((first, last, owners));
    }
    Ok(out)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut stdout = std::io::stdout().lock();
    let mut line = |cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(stdout, "{}", text.join("  ").trim_end())
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    // A closed pipe (`| head`) ends the listing quietly.
    let _ = std::iter::once(&header)
        .chain(rows)
        .try_for_each(|row| line(row));
}

/// One member's handoff counters (CLUSTER INFO `cluster_handoff_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Handoff {
    pending_in: u64,
    pending_out: u64,
    slots_in: u64,
    keys_in: u64,
    bytes_in: u64,
    /// Slots it no longer owns whose keys it still keeps (dropped once their new owners
    /// settle).
    slots_left_over: u64,
    /// Keys it dropped from slots it gave away.
    keys_dropped: u64,
    /// -1 when unknown.
    eta_ms: i64,
}

impl Handoff {
    fn of(info: &BTreeMap<String, String>) -> Handoff {
        let field = |name: &str| -> i64 {
            info.get(&format!("cluster_handoff_{name}"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Handoff {
            pending_in: field("slots_pending_in") as u64,
            pending_out: field("slots_pending_out") as u64,
            slots_in: field("slots_in") as u64,
            keys_in: field("keys_in") as u64,
            bytes_in: field("bytes_in") as u64,
            slots_left_over: field("slots_left_over") as u64,
            keys_dropped: field("keys_dropped") as u64,
            eta_ms: info
                .get("cluster_handoff_eta_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1),
        }
    }

    fn json(&self) -> Json {
        json!({"slots_pending_in": self.pending_in, "slots_pending_out": self.pending_out,
               "slots_in": self.slots_in, "keys_in": self.keys_in, "bytes_in": self.bytes_in,
               "slots_left_over": self.slots_left_over, "keys_dropped": self.keys_dropped,
               "eta_ms": (self.eta_ms >= 0).then_some(self.eta_ms)})
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn eta_text(ms: i64) -> String {
    if ms < 0 {
        "ETA unknown".into()
    } else {
        format!("ETA {:.1} s", ms as f64 / 1000.0)
    }
}

/// `ringkv cluster status`: state, members, their slots and keys, handoffs in progress,
/// and the balance.
pub fn status(addr: &str, as_json: bool) -> Result<()> {
    let info = info(addr)?;
    let members = nodes(addr)?;
    let mut rows = Vec::new();
    let mut listed = Vec::new();
    let mut under_replicated = 0;
    let mut moving = Handoff::default();
    for m in &members {
        let keys: Option<i64> = connect(&m.addr)
            .ok()
            .and_then(|mut c| redis::cmd("DBSIZE").query(&mut c).ok());
        // The copies this member should hold of other members' slots, and how many of
        // them a live link has synced.
        let replication = info_section(&m.addr, "replication").ok();
        let field = |name: &str| -> Option<u64> { replication.as_ref()?.get(name)?.parse().ok() };
        let (wanted, synced) = (field("repl_wanted_slots"), field("repl_synced_slots"));
        if let (Some(w), Some(s)) = (wanted, synced) {
            under_replicated += w.saturating_sub(s);
        }
        let handoff = self::info(&m.addr).ok().map(|i| Handoff::of(&i));
        if let Some(h) = handoff {
            moving.pending_in += h.pending_in;
            moving.pending_out += h.pending_out;
            moving.keys_in += h.keys_in;
            moving.bytes_in += h.bytes_in;
            moving.slots_left_over += h.slots_left_over;
            moving.eta_ms = moving.eta_ms.max(h.eta_ms);
        }
        rows.push(vec![
            short(&m.id).to_string(),
            m.addr.clone(),
            m.slots.to_string(),
            keys.map_or("unreachable".into(), |k| k.to_string()),
            match (wanted, synced) {
                (Some(w), Some(s)) => format!("{s}/{w}"),
                _ => "-".into(),
            },
            handoff.map_or("-".into(), |h| {
                format!("{}/{}", h.pending_in, h.pending_out)
            }),
            handoff.map_or("-".into(), |h| h.keys_in.to_string()),
            m.flags.clone(),
        ]);
        listed.push(
            json!({"id": m.id, "addr": m.addr, "slots": m.slots, "keys": keys,
                           "replica_slots_wanted": wanted, "replica_slots_synced": synced,
                           "handoff": handoff.map(|h| h.json()), "flags": m.flags}),
        );
    }
    let mean = 16384.0 / members.len().max(1) as f64;
    let balance = members.iter().map(|m| m.slots).max().unwrap_or(0) as f64 / mean;
    let state = info.get("cluster_state").cloned().unwrap_or_default();
    let pending = moving.pending_in.max(moving.pending_out);
    if as_json {
        println!(
            "{}",
            json!({"state": state, "members": listed, "balance": balance,
                   "epoch": info.get("cluster_current_epoch"), "table_version": info.get("cluster_table_version"),
                   "target_version": info.get("cluster_target_version"),
                   "routing": info.get("cluster_routing"), "replicas": info.get("cluster_replicas"),
                   "under_replicated_slot_copies": under_replicated,
                   "handoff_slots_pending": pending,
                   "old_copies_slots": moving.slots_left_over,
                   "handoff_eta_ms": (moving.eta_ms >= 0).then_some(moving.eta_ms)})
        );
        return Ok(());
    }
    println!(
        "state {state}, {} members, routing {}, {} replica(s) per slot, balance {balance:.3} (busiest / mean slots)",
        members.len(),
        info.get("cluster_routing").map_or("?", |s| s.as_str()),
        info.get("cluster_replicas").map_or("?", |s| s.as_str()),
    );
    if under_replicated > 0 {
        println!("{under_replicated} slot copies are not synced yet (re-replication in progress)");
    }
    if pending > 0 {
        println!(
            "handoffs in progress: {pending} slots pending, {} keys ({}) moved so far, {}",
            moving.keys_in,
            megabytes(moving.bytes_in),
            eta_text(moving.eta_ms)
        );
    }
    if moving.slots_left_over > 0 {
        println!(
            "{} slots moved away are still kept by their old holders (dropped once their new owners settle)",
            moving.slots_left_over
        );
    }
    print_table(
        &[
            "ID", "ADDRESS", "SLOTS", "KEYS", "COPIES", "PENDING", "KEYS-IN", "FLAGS",
        ],
        &rows,
    );
    Ok(())
}

/// Every member's handoff counters and whether the cluster is settled: every member
/// reachable, all agreeing on one table that is also the target, nobody joining, learning
/// or owing a slot, every replica copy synced, and no old copy of a moved slot kept.
fn survey(addr: &str) -> Result<(bool, Vec<(String, Handoff)>)> {
    let members = nodes(addr)?;
    let mut settled = true;
    let mut versions = std::collections::BTreeSet::new();
    let mut handoffs = Vec::new();
    for m in &members {
        let Ok(i) = info(&m.addr) else {
            settled = false;
            continue;
        };
        let h = Handoff::of(&i);
        // Replica copies too: a member lost right after must not take the only copy.
        let copies = info_section(&m.addr, "replication").ok();
        let copies_synced =
            copies.is_some_and(|r| r.get("repl_wanted_slots") == r.get("repl_synced_slots"));
        settled &= copies_synced
            && h.pending_in == 0
            && h.pending_out == 0
            && h.slots_left_over == 0
            && i.get("cluster_members_joining").map(String::as_str) == Some("0")
            && i.get("cluster_slots_learning").map(String::as_str) == Some("0")
            && i.get("cluster_table_judged").map(String::as_str) == Some("1")
            && i.get("cluster_table_version") == i.get("cluster_target_version")
            && i.get("cluster_known_nodes") == Some(&members.len().to_string());
        versions.insert(i.get("cluster_table_version").cloned());
        handoffs.push((m.addr.clone(), h));
    }
    Ok((settled && versions.len() == 1, handoffs))
}

/// `ringkv cluster rebalance`: waits (at most `timeout`) until the target table's owners
/// serve every slot (joins taken, drains handed over) and hold every replica copy, with a
/// progress bar.
pub fn rebalance(addr: &str, timeout: Duration, as_json: bool) -> Result<()> {
    let started = Instant::now();
    let (_, first) = survey(addr)?;
    let keys_before: u64 = first.iter().map(|(_, h)| h.keys_in).sum();
    let bytes_before: u64 = first.iter().map(|(_, h)| h.bytes_in).sum();
    let mut most_pending = 0;
    let mut shown = None;
    let final_state = loop {
        let (settled, handoffs) = survey(addr)?;
        let pending: u64 = handoffs.iter().map(|(_, h)| h.pending_in).sum();
        most_pending = most_pending.max(pending);
        let eta = handoffs.iter().map(|(_, h)| h.eta_ms).max().unwrap_or(-1);
        if !as_json && shown != Some((pending, eta / 1000)) {
            let done = most_pending - pending;
            let width = 30;
            let filled = (done as usize * width)
                .checked_div(most_pending as usize)
                .unwrap_or(width);
            print!(
                "\rrebalancing [{}{}] {done}/{most_pending} slots taken over, {}   ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                if pending == 0 {
                    "settling".into()
                } else {
                    eta_text(eta)
                }
            );
            std::io::stdout().flush()?;
            shown = Some((pending, eta / 1000));
        }
        if settled {
            break handoffs;
        }
        if started.elapsed() > timeout {
            bail!(
                "not balanced after {:?}: {pending} slots still pending; see `ringkv cluster status`",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let keys = final_state.iter().map(|(_, h)| h.keys_in).sum::<u64>() - keys_before;
    let bytes = final_state.iter().map(|(_, h)| h.bytes_in).sum::<u64>() - bytes_before;
    if as_json {
        println!(
            "{}",
            json!({"balanced": true, "slots_moved": most_pending, "keys_moved": keys,
                   "bytes_moved": bytes, "ms": took.as_millis(),
                   "members": final_state.iter().map(|(a, h)| json!({"addr": a, "handoff": h.json()})).collect::<Vec<_>>()})
        );
    } else {
        println!(
            "\nbalanced in {took:.2?}: {most_pending} slots, {keys} keys ({}) moved while this ran",
            megabytes(bytes)
        );
    }
    Ok(())
}

/// `ringkv cluster nodes`.
pub fn show_nodes(addr: &str, as_json: bool) -> Result<()> {
    let members = nodes(addr)?;
    if as_json {
        let list: Vec<Json> = members
            .iter()
            .map(|m| json!({"id": m.id, "addr": m.addr, "bus_port": m.bus_port, "flags": m.flags, "slots": m.slots, "ranges": m.ranges.len()}))
            .collect();
        println!("{}", Json::Array(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.addr.clone(),
                m.bus_port.clone(),
                m.flags.clone(),
                m.slots.to_string(),
                m.ranges.len().to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "ADDRESS", "BUS", "FLAGS", "SLOTS", "RANGES"], &rows);
    Ok(())
}

/// `ringkv cluster slots`.
pub fn show_slots(addr: &str, as_json: bool) -> Result<()> {
    let ranges = slot_ranges(addr)?;
    if as_json {
        let list: Vec<Json> = ranges
            .iter()
            .map(|(a, b, owners)| json!({"first": a, "last": b, "owners": owners}))
            .collect();
        println!("{}", Json::Array(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = ranges
        .iter()
        .map(|(a, b, owners)| {
            vec![
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                },
                owners[0].clone(),
                owners[1..].join(" "),
            ]
        })
        .collect();
    print_table(&["SLOTS", "PRIMARY", "REPLICAS"], &rows);
    Ok(())
}

/// `ringkv cluster locate KEY`.
pub fn locate(addr: &str, key: &str, as_json: bool) -> Result<()> {
    let slot: i64 = cluster_cmd(&mut connect(addr)?, &["KEYSLOT", key])?;
    let owners = slot_ranges(addr)?
        .into_iter()
        .find(|(a, b, _)| (*a..=*b).contains(&slot))
        .map(|(_, _, o)| o)
        .context("no member owns the slot")?;
    if as_json {
        println!(
            "{}",
            json!({"key": key, "slot": slot, "primary": owners[0], "replicas": &owners[1..]})
        );
    } else {
        println!(
            "key {key:?} → slot {slot} → primary {}, replicas {}",
            owners[0],
            if owners.len() > 1 {
                owners[1..].join(", ")
            } else {
                "none".into()
            }
        );
    }
    Ok(())
}

/// `ringkv cluster drain NODE`: the member NODE (its client address or node id, as
/// CLUSTER NODES lists them; looked up through `addr`) hands every slot it serves to the
/// members taking them over and leaves (it is sent SHUTDOWN, which drains first); shows
/// the slots it still serves until the others agree without it.
pub fn drain(addr: &str, node: &str, as_json: bool) -> Result<()> {
    let members = nodes(addr)?;
    let Some(leaving) = members
        .iter()
        .find(|m| m.addr == node || (node.len() >= 8 && m.id.starts_with(node)))
        .cloned()
    else {
        let known: Vec<&str> = members.iter().map(|m| m.addr.as_str()).collect();
        bail!(
            "no member {node} in this cluster (members: {})",
            known.join(", ")
        );
    };
    let Some(witness) = members.iter().find(|m| m.id != leaving.id).cloned() else {
        bail!(
            "{} is the cluster's last member: there is no member to hand its slots to",
            leaving.addr
        );
    };
    let started = Instant::now();
    let served_before = leaving.slots;
    // SHUTDOWN drains, then the member exits: the connection ends without a reply.
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut connect(&leaving.addr)?);
    let deadline = started + Duration::from_secs(120);
    let wanted = (members.len() - 1).to_string();
    let mut shown = usize::MAX;
    loop {
        let settled = info(&witness.addr).is_ok_and(|i| {
            i.get("cluster_known_nodes") == Some(&wanted)
                && i.get("cluster_members_joining").map(String::as_str) == Some("0")
                && i.get("cluster_slots_learning").map(String::as_str) == Some("0")
        });
        let still = nodes(&witness.addr)
            .ok()
            .and_then(|m| m.into_iter().find(|n| n.id == leaving.id))
            .map_or(0, |n| n.slots);
        if !as_json && still != shown {
            let done = served_before.saturating_sub(still);
            let width = 30;
            let filled = (done * width).checked_div(served_before).unwrap_or(width);
            print!(
                "\rdraining {} [{}{}] {done}/{served_before} slots handed over",
                leaving.addr,
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            std::io::stdout().flush()?;
            shown = still;
        }
        if settled && still == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} still serves {still} slots after {:?}: see `ringkv cluster status`",
                leaving.addr,
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    if as_json {
        println!(
            "{}",
            json!({"drained": leaving.addr, "id": leaving.id, "slots": served_before, "ms": took.as_millis()})
        );
    } else {
        println!(
            "\ndrained {} ({served_before} slots) in {took:.2?}; {} members left",
            leaving.addr,
            members.len() - 1
        );
    }
    Ok(())
}

fn server_binary() -> PathBuf {
    // Installed side by side (cargo build puts both in target/<profile>/).
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ringkv-server")));
    match beside {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("ringkv-server"),
    }
}

/// Kills (SIGTERM first) and reaps every child when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -TERM {} 2>/dev/null", child.id())])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.0 {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `ringkv cluster up`: N local members on consecutive ports, until Ctrl-C.
pub fn up(nodes_wanted: usize, base_port: u16, extra: &[String], as_json: bool) -> Result<()> {
    if !(1..=64).contains(&nodes_wanted) {
        bail!("--nodes must be 1 to 64");
    }
    let binary = server_binary();
    let started = Instant::now();
    let mut children = Children(Vec::new());
    let seed_bus = u32::from(base_port) + 10000;
    for i in 0..nodes_wanted {
        let port = base_port + i as u16;
        let mut command = Command::new(&binary);
        command
            .args(["--port", &port.to_string(), "--cluster-enabled", "yes"])
            .args(["--persistence", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if i > 0 {
            command.args(["--cluster-join", &format!("127.0.0.1:{seed_bus}")]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        children.0.push(child);
    }
    let addrs: Vec<String> = (0..nodes_wanted)
        .map(|i| format!("127.0.0.1:{}", base_port + i as u16))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agreed = addrs
            .iter()
            .map(|a| info(a).ok())
            .collect::<Option<Vec<_>>>()
            .is_some_and(|infos| {
                infos.iter().all(|i| {
                    i.get("cluster_state").map(String::as_str) == Some("ok")
                        && i.get("cluster_known_nodes") == Some(&nodes_wanted.to_string())
                        && i.get("cluster_members_joining").map(String::as_str) == Some("0")
                        && i.get("cluster_current_epoch") == infos[0].get("cluster_current_epoch")
                })
            });
        if agreed {
            break;
        }
        if Instant::now() > deadline {
            bail!("the {nodes_wanted} members did not agree within 30 s");
        }
        for child in &mut children.0 {
            if let Some(status) = child.try_wait()? {
                bail!("a member exited early ({status}); is port range {base_port}.. free?");
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let took = started.elapsed();
    if as_json {
        println!(
            "{}",
            json!({"members": addrs, "agreed_ms": took.as_millis()})
        );
    } else {
        println!(
            "{nodes_wanted} members agreed on one slot table {:.0} ms after start",
            took.as_secs_f64() * 1000.0
        );
        status(&addrs[0], false)?;
        println!("\ntry: redis-cli -c -p {base_port}    (Ctrl-C stops the cluster)");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            stopped = tokio::signal::ctrl_c() => stopped,
            _ = terminate.recv() => Ok(()),
        }
    })?;
    // Stops the members (SIGTERM: each leaves the cluster and exits).
    drop(children);
    Ok(())
}
