//! CLUSTER subcommands, READONLY, READWRITE and ASKING, in Redis Cluster's formats, all
//! answered from the node's current view (members and slot table).

use std::net::SocketAddr;
use std::sync::Arc;

use ringkv_cluster::{ClusterState, ClusterView, NodeId, NodeView, SLOT_COUNT, key_slot};
use ringkv_protocol::{Args, parse_i64};

use crate::cluster::ClusterNode;
use crate::handler::{CmdError, CmdResult, Ctx};

fn cluster<'a>(ctx: &Ctx<'a, '_>) -> Result<&'a Arc<ClusterNode>, CmdError> {
    ctx.node
        .cluster
        .as_ref()
        .ok_or_else(|| CmdError::Custom("ERR This instance has cluster support disabled".into()))
}

fn view(ctx: &Ctx<'_, '_>) -> Result<Arc<ClusterView>, CmdError> {
    Ok(cluster(ctx)?.view())
}

/// The epoch every member that sees the same members reports: the table version, cut to
/// fit Redis's signed 64-bit epoch.
pub fn epoch(view: &ClusterView) -> u64 {
    view.table.version() >> 1
}

/// Runs of consecutive slots with the same primary: (first, last, primary).
pub fn primary_ranges(view: &ClusterView) -> Vec<(u16, u16, NodeId)> {
    let mut ranges: Vec<(u16, u16, NodeId)> = Vec::new();
    for (first, last, owners) in view.table.ranges() {
        let primary = owners[0];
        match ranges.last_mut() {
            Some(run) if run.2 == primary && run.1 + 1 == first => run.1 = last,
            _ => ranges.push((first, last, primary)),
        }
    }
    ranges
}

fn slot_arg(arg: &[u8]) -> Result<u16, CmdError> {
    parse_i64(arg)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n < SLOT_COUNT)
        .ok_or_else(|| CmdError::Custom("ERR Invalid slot".into()))
}

/// CLUSTER KEYSLOT key
pub fn keyslot(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.out.int(i64::from(key_slot(args.get(2))));
    Ok(())
}

/// CLUSTER MYID
pub fn myid(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let view = view(ctx)?;
    ctx.out.bulk(view.me.to_string().as_bytes());
    Ok(())
}

/// CLUSTER INFO
pub fn info(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let cluster = cluster(ctx)?;
    let view = cluster.view();
    let stats = cluster.bus_stats();
    let ok = view.state == ClusterState::Ok;
    let assigned = if view.table.members().is_empty() {
        0
    } else {
        SLOT_COUNT
    };
    let size = view
        .table
        .primary_counts()
        .iter()
        .filter(|&&c| c > 0)
        .count();
    let my_epoch = view
        .table
        .members()
        .iter()
        .position(|id| *id == view.me)
        .map_or(0, |i| i + 1);
    let text = format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{}\r\ncluster_size:{size}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{my_epoch}\r\ncluster_stats_messages_sent:{}\r\ncluster_stats_messages_received:{}\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\ncluster_table_version:{:016x}\r\ncluster_routing:{}\r\ncluster_replicas:{}\r\ncluster_bus_packets_bad_mac:{}\r\ncluster_bus_packets_malformed:{}\r\ncluster_slot_balance:{:.3}\r\ncluster_members_joining:{}\r\ncluster_target_version:{:016x}\r\ncluster_table_judged:{}\r\n",
        if ok { "ok" } else { "fail" },
        if ok { assigned } else { 0 },
        if ok { 0 } else { assigned },
        view.nodes.len(),
        epoch(&view),
        stats.sent,
        stats.received,
        view.table.version(),
        match cluster.routing {
            crate::cluster::Routing::Redirect => "redirect",
            crate::cluster::Routing::Proxy => "proxy",
        },
        view.table.config().replicas,
        stats.bad_mac,
        stats.malformed,
        view.table.balance(),
        view.joining(),
        view.target.version(),
        u8::from(cluster.table_judged()),
    );
    let mut text = text;
    if let Some(replication) = ctx.node.replication.get() {
        replication.cluster_info(&mut text);
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

fn addr_text(node: &NodeView) -> String {
    format!(
        "{}:{}@{}",
        node.client.ip(),
        node.client.port(),
        node.bus.port()
    )
}

/// CLUSTER NODES: one line per member, Redis's format. Every member is a primary for
/// its own slots (and a replica for others'), so all show as `master`.
pub fn nodes(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let view = view(ctx)?;
    let ranges = primary_ranges(&view);
    let now = crate::node::unix_ms();
    let mut text = String::new();
    for (index, node) in view.nodes.iter().enumerate() {
        let flags = if node.myself {
            "myself,master"
        } else {
            "master"
        };
        text.push_str(&format!(
            "{} {} {flags} - 0 {now} {} connected",
            node.id,
            addr_text(node),
            index + 1
        ));
        for (first, last, _) in ranges.iter().filter(|r| r.2 == node.id) {
            if first == last {
                text.push_str(&format!(" {first}"));
            } else {
                text.push_str(&format!(" {first}-{last}"));
            }
        }
        text.push('\n');
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

fn write_node_entry(ctx: &mut Ctx<'_, '_>, addr: SocketAddr, id: &NodeId) {
    ctx.out.array(4);
    ctx.out.bulk(addr.ip().to_string().as_bytes());
    ctx.out.int(i64::from(addr.port()));
    ctx.out.bulk(id.to_string().as_bytes());
    ctx.out.map(0);
}

/// CLUSTER SLOTS: each run of slots with the same primary, and that primary only. Every
/// member is a master to clients (DESIGN.md §5.6): a cluster client that saw a member
/// listed as a replica of any range would treat it as a replica everywhere and skip its
/// slots in cluster-wide commands. CLUSTER OWNERS shows the replicas.
pub fn slots(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let view = view(ctx)?;
    let ranges = primary_ranges(&view);
    ctx.out.array(ranges.len());
    for (first, last, primary) in ranges {
        let node = view.node(&primary).map(|n| (n.client, n.id));
        ctx.out.array(2 + usize::from(node.is_some()));
        ctx.out.int(i64::from(first));
        ctx.out.int(i64::from(last));
        if let Some((addr, id)) = node {
            write_node_entry(ctx, addr, &id);
        }
    }
    Ok(())
}

/// CLUSTER OWNERS (a ringkv extension): each run of slots with the same owners, primary
/// first, then the members that hold a replica, in CLUSTER SLOTS's shape.
pub fn owners(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let view = view(ctx)?;
    let ranges = view.table.ranges();
    ctx.out.array(ranges.len());
    for (first, last, owners) in ranges {
        let known: Vec<(SocketAddr, NodeId)> = owners
            .iter()
            .filter_map(|id| view.node(id).map(|n| (n.client, n.id)))
            .collect();
        ctx.out.array(2 + known.len());
        ctx.out.int(i64::from(first));
        ctx.out.int(i64::from(last));
        for (addr, id) in &known {
            write_node_entry(ctx, *addr, id);
        }
    }
    Ok(())
}

/// CLUSTER SHARDS: one shard per member, holding the slots it is primary for, with the
/// member as its only node (replicas are internal, as in CLUSTER SLOTS).
pub fn shards(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let view = view(ctx)?;
    let primaries = primary_ranges(&view);
    let owners_of_shards: Vec<&NodeView> = view
        .nodes
        .iter()
        .filter(|n| primaries.iter().any(|r| r.2 == n.id))
        .collect();
    ctx.out.array(owners_of_shards.len());
    for primary in owners_of_shards {
        let mine: Vec<(u16, u16)> = primaries
            .iter()
            .filter(|r| r.2 == primary.id)
            .map(|r| (r.0, r.1))
            .collect();
        ctx.out.map(2);
        ctx.out.bulk(b"slots");
        ctx.out.array(mine.len() * 2);
        for (first, last) in mine {
            ctx.out.int(i64::from(first));
            ctx.out.int(i64::from(last));
        }
        ctx.out.bulk(b"nodes");
        let members: Vec<(&NodeView, &str)> = vec![(primary, "master")];
        ctx.out.array(members.len());
        for (node, role) in members {
            ctx.out.map(7);
            ctx.out.bulk(b"id");
            ctx.out.bulk(node.id.to_string().as_bytes());
            ctx.out.bulk(b"port");
            ctx.out.int(i64::from(node.client.port()));
            ctx.out.bulk(b"ip");
            ctx.out.bulk(node.client.ip().to_string().as_bytes());
            ctx.out.bulk(b"endpoint");
            ctx.out.bulk(node.client.ip().to_string().as_bytes());
            ctx.out.bulk(b"role");
            ctx.out.bulk(role.as_bytes());
            ctx.out.bulk(b"replication-offset");
            ctx.out.int(0);
            ctx.out.bulk(b"health");
            ctx.out.bulk(b"online");
        }
    }
    Ok(())
}

/// CLUSTER COUNTKEYSINSLOT slot (from the slot's key list: O(1)).
pub fn countkeysinslot(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let slot = slot_arg(args.get(2))?;
    ctx.out.int(ctx.node.store.count_in_slot(slot) as i64);
    Ok(())
}

/// CLUSTER GETKEYSINSLOT slot count (from the slot's key list: O(count)).
pub fn getkeysinslot(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let slot = slot_arg(args.get(2))?;
    let count = parse_i64(args.get(3))
        .filter(|&n| n >= 0)
        .ok_or_else(|| CmdError::Custom("ERR Invalid number of keys".into()))?;
    let keys = ctx.node.store.keys_in_slot(slot, count as usize);
    ctx.out.array(keys.len());
    for key in &keys {
        ctx.out.bulk(key);
    }
    Ok(())
}

/// CLUSTER HELP
pub fn help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let lines = [
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "COUNTKEYSINSLOT <slot>",
        "    Return the number of keys in <slot>.",
        "GETKEYSINSLOT <slot> <count>",
        "    Return key names stored by current node in a slot.",
        "INFO",
        "    Return information about the cluster.",
        "KEYSLOT <key>",
        "    Return the hash slot for <key>.",
        "MYID",
        "    Return the node id.",
        "NODES",
        "    Return cluster configuration seen by node.",
        "OWNERS",
        "    Return every slot range's owners: its primary, then its replicas (ringkv).",
        "SHARDS",
        "    Return information about slot range mappings and the nodes associated with them.",
        "SLOTS",
        "    Return information about slots range mappings.",
        "HELP",
        "    Print this help.",
    ];
    ctx.out.array(lines.len());
    for line in lines {
        ctx.out.simple(line);
    }
    Ok(())
}

/// READONLY: this connection's reads of slots this member holds a replica of are served
/// from the copy (which may lag the primary, and is incomplete while the slot's first
/// sync runs), as a Redis replica serves a READONLY connection.
pub fn readonly(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.conn.readonly = true;
    ctx.out.ok();
    Ok(())
}

/// READWRITE: back to redirecting every command to the slot's primary.
pub fn readwrite(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.conn.readonly = false;
    ctx.out.ok();
    Ok(())
}

/// ASKING: accepted; no slot is ever migrating, so no -ASK is ever sent.
pub fn asking(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.out.ok();
    Ok(())
}

/// CLUSTER without a subcommand.
pub fn container(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("cluster"))
}
