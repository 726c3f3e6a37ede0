//! A node in cluster mode: the gossip bus, where each command goes, and the proxy.
//!
//! The view (members and slot table) comes from [`ringkv_cluster::Bus`] on a watch
//! channel; this module reads it and never touches foca. A command whose keys live
//! elsewhere is answered with `-MOVED` (redirect routing, what Redis Cluster clients
//! expect) or forwarded to the owner over a pooled connection (proxy routing, for
//! clients that know nothing of clusters).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use ringkv_cluster::membership::{Identity, Settings, Timing};
use ringkv_cluster::{Bus, ClusterState, ClusterView, NodeId, RingConfig, key_slot};
use ringkv_protocol::{Args, CommandFlags, CommandSpec, Protocol, ReplyWriter};
use ringkv_store::slot_set::SlotSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

mod fanout;
pub mod holds;

use crate::commands::RemoteWrite;
use crate::config::Config;
use crate::connection::ConnState;
use crate::handler::CmdError;

/// The client name a proxying node gives its upstream connections. A connection with
/// this name is never proxied again (it gets -MOVED), so a stale view cannot bounce a
/// command between nodes.
pub const PROXY_CLIENT_NAME: &str = "ringkv-proxy";

/// How long a proxied command may take end to end before the client gets an error.
const PROXY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle upstream connections kept per (node, protocol).
const POOL_IDLE_PER_TARGET: usize = 32;

/// Where a command for a foreign slot goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Answer `-MOVED <slot> <ip>:<port>`.
    Redirect,
    /// Forward to the owner and relay the reply.
    Proxy,
}

/// Cluster state of a node.
pub struct ClusterNode {
    bus: Bus,
    /// Redirect or proxy.
    pub routing: Routing,
    /// READONLY connections read the slots a member replicates (`--cluster-replica-reads`).
    replica_reads: bool,
    /// The client address we announce.
    pub announce: SocketAddr,
    pool: ProxyPool,
    /// Published messages on their way to other members.
    fanout: fanout::Fanout,
    password: String,
    link_listener: Mutex<Option<std::net::TcpListener>>,
    served: Mutex<(u64, Option<Arc<SlotSet>>)>,
    /// Slots this member serves but is still learning from their previous holder; empty
    /// almost always, so the flag keeps the check off the command path.
    not_ready: Mutex<SlotSet>,
    any_not_ready: std::sync::atomic::AtomicBool,
    /// Not-ready slots whose previous primary still serves them until it fences them (a
    /// handoff's last moment): commands for them go there, not to `-TRYAGAIN`.
    handing_in: Mutex<Vec<(NodeId, SlotSet)>>,
    /// The node id came from the data directory: this is a restart of a member.
    restarted: bool,
    /// The last table replication judged (which slots it holds, which it must learn):
    /// until the current one is judged, a slot it newly makes ours is not served yet.
    judged_version: std::sync::atomic::AtomicU64,
    judged: Mutex<Option<ringkv_cluster::SlotTable>>,
    /// How long commands waited here for handoff fences.
    pub holds: holds::HoldStats,
    /// One bit per slot: this member's replica copy of it is whole (a snapshot or a resume
    /// from its primary completed, and no resync has begun since). READONLY reads of a
    /// replicated slot are served here only then: a resync replaces the copy key by key,
    /// and a read in the middle would see part old, part new, or half a big value.
    replica_whole: Box<[std::sync::atomic::AtomicU64]>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("announce", &self.announce)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

/// The IP to announce: `--cluster-announce-ip`, else the first `--bind` address. Never a
/// wildcard or an empty host: other members and clients would connect to themselves.
fn announce_ip(config: &Config) -> anyhow::Result<IpAddr> {
    let text = match config.cluster_announce_ip.as_deref() {
        Some(ip) => ip.trim().to_string(),
        None => config
            .bind
            .split_whitespace()
            .map(|h| h.trim_start_matches('-'))
            .next()
            .unwrap_or("")
            .to_string(),
    };
    anyhow::ensure!(
        !text.is_empty(),
        "cluster mode needs an address to announce: set --cluster-announce-ip"
    );
    let ip: IpAddr = text
        .parse()
        .with_context(|| format!("--cluster-announce-ip {text:?} is not an IP address"))?;
    anyhow::ensure!(
        !ip.is_unspecified(),
        "{ip} is a wildcard address; set --cluster-announce-ip to an address other nodes can reach"
    );
    Ok(ip)
}

fn resolve(seed: &str) -> anyhow::Result<SocketAddr> {
    seed.to_socket_addrs()
        .with_context(|| format!("--cluster-join {seed:?} is not HOST:BUSPORT"))?
        .next()
        .with_context(|| format!("--cluster-join {seed:?} resolves to no address"))
}

impl ClusterNode {
    /// Binds the bus (UDP) and starts gossip. `port` is the client port actually bound.
    /// `id_dir`: the data directory, where the node id is kept across restarts.
    pub async fn start(
        config: &Config,
        port: u16,
        id_dir: Option<&dyn ringkv_store::data_dir::DataDir>,
    ) -> anyhow::Result<ClusterNode> {
        let ip = announce_ip(config)?;
        // Bad flags are reported before anything is bound (a port in use would hide them).
        let seeds = config
            .cluster_join
            .iter()
            .map(|s| resolve(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bus_port = match config.cluster_bus_port {
            0 => port
                .checked_add(10000)
                .context("the client port + 10000 is not a port; set --cluster-bus-port")?,
            p => p,
        };
        let bind_ip: IpAddr = if config.bind.split_whitespace().count() == 1
            && let Ok(bind) = config.bind.trim().trim_start_matches('-').parse::<IpAddr>()
        {
            bind
        } else {
            ip
        };
        let socket = UdpSocket::bind((bind_ip, bus_port))
            .await
            .with_context(|| format!("binding the cluster bus on {bind_ip}:{bus_port}"))?;
        // Peer links (replication) use TCP on the same port number.
        let link_listener = std::net::TcpListener::bind((bind_ip, bus_port))
            .with_context(|| format!("binding the peer-link port on {bind_ip}:{bus_port} (TCP)"))?;
        anyhow::ensure!(
            config.cluster_weight > 0,
            "--cluster-weight must be at least 1"
        );
        anyhow::ensure!(
            config.cluster_vnodes > 0,
            "--cluster-vnodes must be at least 1"
        );
        let announce = SocketAddr::new(ip, port);
        let (id, restarted) = match id_dir {
            Some(dir) => crate::node_id::load_or_create(dir)?,
            None => (NodeId::random(), false),
        };
        let identity = Identity {
            id,
            bus: SocketAddr::new(ip, bus_port),
            bump: crate::node::unix_ms(),
        };
        tracing::info!(id = %identity.id, %announce, bus = %identity.bus, ?seeds, "starting cluster membership");
        let settings = Settings {
            identity,
            client: announce,
            weight: config.cluster_weight,
            seeds,
            secret: config.cluster_secret.clone().filter(|s| !s.is_empty()),
            rng_seed: rand::random(),
            timing: Timing::default(),
            ring: RingConfig {
                vnodes: config.cluster_vnodes,
                replicas: config.cluster_replicas,
            },
            // A fresh member joining a running cluster copies what it will own first; a
            // founding or restarting member serves from the start.
            initial_state: if !config.cluster_join.is_empty() && !restarted {
                ringkv_cluster::membership::NodeState::Joining
            } else {
                ringkv_cluster::membership::NodeState::Serving
            },
        };
        let bus = Bus::start(settings, socket)?;
        Ok(ClusterNode {
            bus,
            routing: if config.cluster_routing == "proxy" {
                Routing::Proxy
            } else {
                Routing::Redirect
            },
            replica_reads: config.cluster_replica_reads,
            announce,
            pool: ProxyPool::default(),
            fanout: fanout::Fanout::default(),
            password: config.requirepass.clone(),
            link_listener: Mutex::new(Some(link_listener)),
            served: Mutex::new((0, None)),
            not_ready: Mutex::new(SlotSet::new()),
            any_not_ready: std::sync::atomic::AtomicBool::new(false),
            handing_in: Mutex::new(Vec::new()),
            restarted,
            judged_version: std::sync::atomic::AtomicU64::new(0),
            judged: Mutex::new(None),
            holds: holds::HoldStats::default(),
            replica_whole: (0..ringkv_cluster::SLOT_COUNT.div_ceil(64))
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        })
    }

    /// True when this member kept its node id from an earlier run: its data may be behind
    /// what the others served while it was down.
    pub fn restarted(&self) -> bool {
        self.restarted
    }

    /// The current view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.bus.view()
    }

    /// A receiver that sees every new view.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ClusterView>> {
        self.bus.subscribe()
    }

    /// The current view, borrowed (hold it briefly).
    pub fn borrow_view(&self) -> tokio::sync::watch::Ref<'_, Arc<ClusterView>> {
        self.bus.borrow_view()
    }

    /// The slots this member serves as their primary in the current view (cached per
    /// table): what DBSIZE, KEYS, SCAN, RANDOMKEY and FLUSHALL cover in cluster mode,
    /// since each member presents itself as the master of exactly those slots.
    pub fn served_slots(&self) -> Arc<SlotSet> {
        let view = self.bus.borrow_view();
        let mut cached = self.served.lock();
        if cached.0 != view.table.version() || cached.1.is_none() {
            let served: SlotSet = (0..ringkv_cluster::SLOT_COUNT)
                .filter(|&slot| view.table.primary(slot) == Some(&view.me))
                .collect();
            *cached = (view.table.version(), Some(Arc::new(served)));
        }
        cached.1.clone().expect("just filled")
    }

    /// The slot table's version (it changes whenever an owner does).
    pub fn table_version(&self) -> u64 {
        self.bus.borrow_view().table.version()
    }

    /// The slots this member owns, as primary or replica (shard channels live there).
    pub fn owned_slots(&self) -> SlotSet {
        let view = self.bus.borrow_view();
        (0..ringkv_cluster::SLOT_COUNT)
            .filter(|&slot| view.table.owners(slot).any(|id| *id == view.me))
            .collect()
    }

    /// The slots served here that are not ready: commands for them answer -TRYAGAIN.
    pub fn set_not_ready(&self, slots: SlotSet) {
        let any = !slots.is_empty();
        *self.not_ready.lock() = slots;
        self.any_not_ready
            .store(any, std::sync::atomic::Ordering::Release);
    }

    /// Not-ready slots still served by their previous primary, by that member: commands
    /// for them are sent there until it hands them over.
    pub fn set_handing_in(&self, from: Vec<(NodeId, SlotSet)>) {
        *self.handing_in.lock() = from;
    }

    /// The member that still serves `slot` for us until its handoff ends, if any.
    fn handing_in_from(&self, slot: u16) -> Option<NodeId> {
        self.handing_in
            .lock()
            .iter()
            .find(|(_, slots)| slots.contains(slot))
            .map(|(id, _)| *id)
    }

    /// Announces a new state: `Serving` once a joining member holds copies of every slot
    /// it will own, `Draining` when it leaves.
    pub fn announce_state(&self, state: ringkv_cluster::membership::NodeState) {
        self.bus.announce(state);
    }

    /// Announces this member's count of script and library changes (gossiped, so a
    /// member that missed some takes the whole set from one that counts more).
    pub fn announce_scripts_version(&self, version: u64) {
        self.bus.announce_scripts_version(version);
    }

    /// Announces that this member settled under the table of `version` (it serves every
    /// slot the table gives it, and its replica copies are synced).
    pub fn announce_settled(&self, version: u64) {
        self.bus.announce_settled(version);
    }

    /// Replication judged `table`: slots it makes ours are served once not-ready says so.
    pub fn judged(&self, table: &ringkv_cluster::SlotTable) {
        *self.judged.lock() = Some(table.clone());
        self.judged_version
            .store(table.version(), std::sync::atomic::Ordering::Release);
    }

    /// True when replication judged the current table (which slots it holds, which it
    /// learns): until then CLUSTER INFO's learning count speaks of the table before.
    pub fn table_judged(&self) -> bool {
        self.judged_version
            .load(std::sync::atomic::Ordering::Acquire)
            == self.bus.borrow_view().table.version()
    }

    /// True when `slot` became ours in a table replication has not judged yet: whether
    /// it is held or must be learned is not known.
    fn unjudged(&self, slot: u16, view: &ClusterView) -> bool {
        if self
            .judged_version
            .load(std::sync::atomic::Ordering::Acquire)
            == view.table.version()
        {
            return false;
        }
        match self.judged.lock().as_ref() {
            Some(judged) => judged.primary(slot) != Some(&view.me),
            // Before the first judgement every served slot waits (a restart's does too).
            None => false,
        }
    }

    /// How many slots answer `-TRYAGAIN` here (being learned or caught up).
    pub fn not_ready_count(&self) -> usize {
        self.not_ready.lock().len()
    }

    /// Notes whether this member's replica copies of `slots` are whole
    /// ([`Self::replica_whole`]'s bits).
    pub fn set_replica_whole(&self, slots: &SlotSet, whole: bool) {
        use std::sync::atomic::Ordering::Release;
        for slot in slots.iter() {
            let (word, bit) = (usize::from(slot) / 64, 1u64 << (slot % 64));
            if whole {
                self.replica_whole[word].fetch_or(bit, Release);
            } else {
                self.replica_whole[word].fetch_and(!bit, Release);
            }
        }
    }

    fn replica_copy_whole(&self, slot: u16) -> bool {
        let word =
            self.replica_whole[usize::from(slot) / 64].load(std::sync::atomic::Ordering::Acquire);
        word & (1 << (slot % 64)) != 0
    }

    fn ready(&self, slot: u16) -> bool {
        !self
            .any_not_ready
            .load(std::sync::atomic::Ordering::Acquire)
            || !self.not_ready.lock().contains(slot)
    }

    /// The peer-link listener (TCP on the bus port), once: replication takes it.
    pub fn take_link_listener(&self) -> Option<std::net::TcpListener> {
        self.link_listener.lock().take()
    }

    /// Bus counters.
    pub fn bus_stats(&self) -> ringkv_cluster::membership::BusStats {
        self.bus.stats()
    }

    /// A peer link to `peer` at `bus` failed: if nothing listens there any more, its
    /// process is gone and the bus declares it down at once. Blocks up to `PROBE_GONE`
    /// (call it from a link thread, never from the runtime).
    pub fn check_peer_gone(&self, peer: NodeId, bus: SocketAddr) -> bool {
        const PROBE_GONE: Duration = Duration::from_millis(200);
        let refused = matches!(
            std::net::TcpStream::connect_timeout(&bus, PROBE_GONE),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if refused {
            self.bus.report_gone(peer);
        }
        refused
    }

    /// Answers `-MOVED` to every client blocked on a key whose slot another member serves
    /// now (a handoff or a failover moved it), as Redis Cluster redirects blocked clients.
    pub fn redirect_blocked(&self, blocking: &crate::blocking::Blocking) -> usize {
        if blocking.waiting() == 0 {
            return 0;
        }
        let view = self.view();
        blocking.answer_where(|key| {
            let slot = key_slot(key);
            let owner = view.table.primary(slot).filter(|id| **id != view.me)?;
            let owner = view.node(owner)?;
            Some(format!("-{}\r\n", moved(slot, owner.client)).into_bytes())
        })
    }

    /// Leaves the cluster gracefully (on shutdown).
    pub async fn leave(&self) {
        self.bus.leave(Duration::from_millis(500)).await;
    }

    /// `Local` when every slot in `slots` (all primaried here) is served here now; `Hold`
    /// while one is in a handoff's last moment (its previous primary fences it for us
    /// within milliseconds: the command waits here rather than be sent back there, which
    /// would send it here again), up to [`HOLD_LIMIT`]; `-TRYAGAIN` while one is still
    /// being learned.
    fn wait_for(
        &self,
        conn: &ConnState,
        view: &ClusterView,
        slots: impl IntoIterator<Item = u16>,
    ) -> Verdict {
        let held_too_long = conn.held_since.is_some_and(|t| t.elapsed() >= HOLD_LIMIT);
        for slot in slots {
            // Judged first: replication publishes the not-ready slots before it marks the
            // table judged, so a judged table's not-ready set is the current one (the other
            // way round, a slot still to be learned could pass as ready under the set of
            // the table before and be read here empty).
            if !self.unjudged(slot, view) && self.ready(slot) {
                continue;
            }
            return match self.handing_in_from(slot) {
                Some(_) if !held_too_long && !conn.no_block => Verdict::Hold,
                _ => Verdict::Refuse(CmdError::Custom(format!(
                    "TRYAGAIN Slot {slot} is being synced to this member, its new primary"
                ))),
            };
        }
        Verdict::Local
    }

    /// Decides where a command runs. `Local` runs it here.
    pub fn route(&self, conn: &ConnState, spec: &CommandSpec, args: &Args<'_>) -> Verdict {
        let mut keys = spec.keys.of(args).peekable();
        let Some(&first) = keys.peek() else {
            return Verdict::Local;
        };
        let view = self.bus.borrow_view();
        if view.state != ClusterState::Ok {
            return Verdict::Refuse(CmdError::Custom("CLUSTERDOWN The cluster is down".into()));
        }
        let slot = key_slot(args.get(first));
        let same_slot = keys.all(|i| key_slot(args.get(i)) == slot);
        let may_proxy = self.routing == Routing::Proxy && !conn.forwarded && !conn.in_multi();
        if same_slot {
            // Shard channels are served by every owner of their slot, as in Redis 7.
            let replica_read = view.table.is_replica(slot, &view.me)
                && (spec.flags.contains(CommandFlags::CHANNELS)
                    || (self.replica_reads
                        && conn.readonly
                        && spec.flags.contains(CommandFlags::READONLY)
                        && self.replica_copy_whole(slot)));
            let elsewhere = |id: &NodeId| match view.node(id) {
                Some(owner) if may_proxy => Verdict::Forward(Forward::relay(
                    owner.client,
                    args,
                    std::iter::once(slot).collect(),
                    spec.flags.contains(CommandFlags::WRITE),
                )),
                Some(owner) => Verdict::Refuse(moved(slot, owner.client)),
                None => Verdict::Refuse(CmdError::Custom("CLUSTERDOWN The cluster is down".into())),
            };
            return match view.table.primary(slot) {
                Some(id) if *id == view.me => self.wait_for(conn, &view, [slot]),
                Some(_) if replica_read => Verdict::Local,
                Some(id) => elsewhere(id),
                None => {
                    Verdict::Refuse(CmdError::Custom("CLUSTERDOWN Hash slot not served".into()))
                }
            };
        }
        let cross =
            CmdError::Custom("CROSSSLOT Keys in request don't hash to the same slot".into());
        // A proxying node sends one piece per owner: many slots, all ours.
        if conn.forwarded {
            let all_mine = spec
                .keys
                .of(args)
                .all(|i| view.table.primary(key_slot(args.get(i))) == Some(&view.me));
            return if all_mine {
                self.wait_for(
                    conn,
                    &view,
                    spec.keys.of(args).map(|i| key_slot(args.get(i))),
                )
            } else {
                Verdict::Refuse(cross)
            };
        }
        if !may_proxy {
            return Verdict::Refuse(cross);
        }
        // Proxy routing: group the keys by owner.
        let mut owners: Vec<SocketAddr> = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in spec.keys.of(args) {
            let Some(addr) = view.primary_addr(key_slot(args.get(i))) else {
                return Verdict::Refuse(CmdError::Custom(
                    "CLUSTERDOWN Hash slot not served".into(),
                ));
            };
            match owners.iter().position(|a| *a == addr) {
                Some(g) => groups[g].push(i),
                None => {
                    owners.push(addr);
                    groups.push(vec![i]);
                }
            }
        }
        if owners.len() == 1 {
            // Many slots, one owner: it runs the command whole (and atomically).
            return if owners[0] == self.announce {
                self.wait_for(
                    conn,
                    &view,
                    spec.keys.of(args).map(|i| key_slot(args.get(i))),
                )
            } else {
                Verdict::Forward(Forward::relay(
                    owners[0],
                    args,
                    spec.keys.of(args).map(|i| key_slot(args.get(i))).collect(),
                    spec.flags.contains(CommandFlags::WRITE),
                ))
            };
        }
        let write = spec.flags.contains(CommandFlags::WRITE);
        match Forward::split(spec.name, args, owners, groups, write) {
            Some(forward) => Verdict::Forward(forward),
            None => Verdict::Refuse(cross),
        }
    }

    /// Runs a forwarded command: the reply for the client, and for a write, where it ran
    /// and each owner's log position after it (the client's WAIT covers them).
    pub async fn finish(
        self: &Arc<Self>,
        mut forward: Forward,
        protocol: Protocol,
    ) -> (Vec<u8>, Vec<RemoteWrite>) {
        let resp3 = protocol == Protocol::Resp3;
        let write = forward.write;
        let replies: Vec<Option<Result<Upstreamed, ProxyError>>> = if let [part] =
            forward.parts.as_slice()
        {
            // The common case, one owner: no task to spawn.
            vec![Some(
                self.call(part.addr, resp3, &part.command, write).await,
            )]
        } else {
            // A split command: its pieces go out in parallel.
            let mut calls = tokio::task::JoinSet::new();
            for (index, part) in forward.parts.iter_mut().enumerate() {
                let me = self.clone();
                let (addr, command) = (part.addr, std::mem::take(&mut part.command));
                calls.spawn(async move { (index, me.call(addr, resp3, &command, write).await) });
            }
            let mut replies: Vec<_> = (0..forward.parts.len()).map(|_| None).collect();
            while let Some(joined) = calls.join_next().await {
                if let Ok((index, reply)) = joined {
                    replies[index] = Some(reply);
                }
            }
            replies
        };
        let mut out = Vec::new();
        let mut w = ReplyWriter::new(&mut out, protocol);
        let mut done = Vec::with_capacity(replies.len());
        let mut writes = Vec::new();
        for (part, reply) in forward.parts.iter().zip(replies) {
            match reply.unwrap_or(Err(ProxyError::Timeout)) {
                Ok(reply) => {
                    if let (Some(lsn), false) = (reply.lsn, matches!(reply.reply, Reply::Error(_)))
                    {
                        writes.push(RemoteWrite {
                            addr: part.addr,
                            lsn,
                            slots: part.slots.clone(),
                        });
                    }
                    done.push(reply);
                }
                Err(error) => {
                    w.error(&format!(
                        "CLUSTERDOWN proxying to {} failed: {error}",
                        part.addr
                    ));
                    return (out, writes);
                }
            }
        }
        gather(&mut w, &forward, done);
        (out, writes)
    }

    /// WAIT's part on an owner this connection wrote to through us: how many replicas of
    /// `slots` there acknowledged everything up to `lsn`, waiting up to `timeout_ms` (0:
    /// without end). 0 when the owner cannot be asked.
    pub async fn wait_remote(
        &self,
        addr: SocketAddr,
        lsn: u64,
        wanted: i64,
        timeout_ms: u64,
        slots: &SlotSet,
    ) -> i64 {
        let mut args: Vec<Vec<u8>> = ["CLUSTER", "WAITLSN"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        for n in [lsn.to_string(), wanted.to_string(), timeout_ms.to_string()] {
            args.push(n.into_bytes());
        }
        args.extend(slots.iter().map(|s| s.to_string().into_bytes()));
        let command = encode(args.iter());
        let call = self.pool.call(addr, false, &self.password, &command, false);
        let reply = if timeout_ms == 0 {
            call.await
        } else {
            // The owner answers at its timeout; this bounds a dead or stuck one.
            tokio::time::timeout(Duration::from_millis(timeout_ms) + PROXY_TIMEOUT, call)
                .await
                .unwrap_or(Err(ProxyError::Timeout))
        };
        match reply {
            Ok(Upstreamed {
                reply: Reply::Int(n),
                ..
            }) => n,
            _ => 0,
        }
    }
}

/// How long a member waits for each other member to take a shared script or library: a
/// stopped one must not hold the client's SCRIPT LOAD for the proxy's full timeout.
const SHARE_TIMEOUT: Duration = Duration::from_secs(1);

impl ClusterNode {
    /// Every other member's client address in the current view.
    fn other_members(&self) -> Vec<SocketAddr> {
        let view = self.bus.borrow_view();
        view.nodes
            .iter()
            .filter(|n| n.id != view.me)
            .map(|n| n.client)
            .collect()
    }

    /// Sends `args` to every other member, as a proxying member (so they apply it and do
    /// not pass it on), in parallel; how many did not take it within [`SHARE_TIMEOUT`].
    pub async fn tell_members(self: &Arc<Self>, args: &[Vec<u8>]) -> usize {
        let command: Arc<[u8]> = encode(args.iter()).into();
        let mut calls = tokio::task::JoinSet::new();
        for addr in self.other_members() {
            let (me, command) = (self.clone(), command.clone());
            calls.spawn(async move {
                let call = me.pool.call(addr, false, &me.password, &command, false);
                match tokio::time::timeout(SHARE_TIMEOUT, call).await {
                    Ok(Ok(Upstreamed {
                        reply: Reply::Error(error),
                        ..
                    })) => {
                        tracing::warn!(%addr, %error, "a member refused a shared script change");
                        false
                    }
                    Ok(Ok(_)) => true,
                    Ok(Err(error)) => {
                        tracing::warn!(%addr, %error, "a member did not take a shared script change");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(%addr, "a member did not take a shared script change in time");
                        false
                    }
                }
            });
        }
        let mut missed = 0;
        while let Some(taken) = calls.join_next().await {
            missed += usize::from(!taken.unwrap_or(false));
        }
        missed
    }

    /// Sends a message published here to every other member (PUBLISH reaches subscribers
    /// cluster-wide, as in Redis Cluster), without waiting for them.
    pub fn broadcast_publish(&self, channel: &[u8], message: &[u8]) {
        for addr in self.other_members() {
            self.fanout.send(
                addr,
                &self.password,
                &[b"CLUSTER", b"DELIVER", b"MESSAGE", channel, message],
            );
        }
    }

    /// Sends a shard message published here to the other owners of its channel's slot.
    pub fn broadcast_shard_publish(&self, channel: &[u8], message: &[u8]) {
        let targets: Vec<SocketAddr> = {
            let view = self.bus.borrow_view();
            view.table
                .owners(key_slot(channel))
                .filter(|id| **id != view.me)
                .filter_map(|id| view.node(id).map(|n| n.client))
                .collect()
        };
        for addr in targets {
            self.fanout.send(
                addr,
                &self.password,
                &[b"CLUSTER", b"DELIVER", b"SMESSAGE", channel, message],
            );
        }
    }

    /// Published messages another member did not get (CLUSTER INFO).
    pub fn fanout_dropped(&self) -> u64 {
        self.fanout
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the member at `addr` (its client address): the bulks it answers `args` with
    /// (one, or an array of them), None for any other answer or none in time.
    pub async fn ask_member(&self, addr: SocketAddr, args: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
        let command = encode(args.iter());
        let reply = tokio::time::timeout(
            SHARE_TIMEOUT,
            self.pool.call(addr, false, &self.password, &command, false),
        )
        .await
        .unwrap_or(Err(ProxyError::Timeout));
        match reply.map(|r| r.reply) {
            Ok(Reply::Bulk(bulk)) => Some(vec![bulk]),
            Ok(Reply::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(bulk) => Some(bulk),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

impl ClusterNode {
    async fn call(
        &self,
        addr: SocketAddr,
        resp3: bool,
        command: &[u8],
        want_lsn: bool,
    ) -> Result<Upstreamed, ProxyError> {
        // An owner in the last moment of a handoff answers TRYAGAIN to a proxy (which
        // cannot follow a redirect back to the member still serving it): ask again
        // shortly, for a bounded time.
        const HANDOFF_RETRY: Duration = Duration::from_millis(2);
        const HANDOFF_RETRIES: usize = 500;
        let mut tries = 0;
        loop {
            let result = tokio::time::timeout(
                PROXY_TIMEOUT,
                self.pool
                    .call(addr, resp3, &self.password, command, want_lsn),
            )
            .await
            .unwrap_or(Err(ProxyError::Timeout));
            let again = matches!(&result, Ok(Upstreamed { reply: Reply::Error(e), .. }) if e.starts_with("TRYAGAIN"));
            if !again || tries >= HANDOFF_RETRIES {
                return result;
            }
            tries += 1;
            tokio::time::sleep(HANDOFF_RETRY).await;
        }
    }
}

fn moved(slot: u16, addr: SocketAddr) -> CmdError {
    CmdError::Custom(format!("MOVED {slot} {addr}"))
}

/// Where a command runs.
pub enum Verdict {
    /// Here.
    Local,
    /// Answer this error instead (MOVED, CROSSSLOT, CLUSTERDOWN).
    Refuse(CmdError),
    /// Forward to other nodes (proxy routing).
    Forward(Forward),
    /// Run it again in a moment: its slot is in a handoff's last moment (see
    /// [`HOLD_LIMIT`]).
    Hold,
}

/// How long a command waits for its slot's handoff fence before it answers `-TRYAGAIN`:
/// a fence takes milliseconds; this bounds a source that stalls or dies (the surviving
/// owners then take the slot over).
pub const HOLD_LIMIT: Duration = Duration::from_secs(2);

/// A command (or its pieces) on its way to other nodes.
#[derive(Debug)]
pub struct Forward {
    parts: Vec<Part>,
    /// A write: each owner's log position after it is noted for the client's WAIT.
    write: bool,
    gather: Gather,
    /// For MGET: how many keys in all.
    total: usize,
}

#[derive(Debug)]
struct Part {
    addr: SocketAddr,
    /// The RESP-encoded command.
    command: Vec<u8>,
    /// The argument index of each key this part carries (MGET puts values back there).
    keys: Vec<usize>,
    /// The slots of its keys.
    slots: SlotSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gather {
    /// One part: its reply goes to the client as it came.
    Relay,
    /// MGET: values back in key order.
    Values,
    /// DEL, EXISTS, UNLINK, TOUCH: the sum of the counts.
    Sum,
    /// MSET: OK when every part said OK.
    AllOk,
}

fn encode(args: impl ExactSizeIterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
    let mut command = Vec::new();
    let mut w = ReplyWriter::new(&mut command, Protocol::Resp2);
    w.array(args.len());
    for arg in args {
        w.bulk(arg.as_ref());
    }
    command
}

impl Forward {
    fn relay(addr: SocketAddr, args: &Args<'_>, slots: SlotSet, write: bool) -> Forward {
        Forward {
            write,
            parts: vec![Part {
                addr,
                command: encode(args.iter()),
                keys: Vec::new(),
                slots,
            }],
            gather: Gather::Relay,
            total: 0,
        }
    }

    /// Splits a multi-key command per owner; None for commands that cannot be split.
    fn split(
        name: &str,
        args: &Args<'_>,
        owners: Vec<SocketAddr>,
        groups: Vec<Vec<usize>>,
        write: bool,
    ) -> Option<Forward> {
        let (gather, with_value) = match name {
            "mget" => (Gather::Values, false),
            "del" | "exists" | "unlink" | "touch" => (Gather::Sum, false),
            "mset" => (Gather::AllOk, true),
            _ => return None,
        };
        let parts = owners
            .into_iter()
            .zip(groups)
            .map(|(addr, keys)| {
                let mut pieces: Vec<&[u8]> = vec![args.get(0)];
                for &k in &keys {
                    pieces.push(args.get(k));
                    if with_value {
                        pieces.push(args.get(k + 1));
                    }
                }
                Part {
                    addr,
                    command: encode(pieces.into_iter()),
                    slots: keys.iter().map(|&k| key_slot(args.get(k))).collect(),
                    keys,
                }
            })
            .collect();
        Some(Forward {
            write,
            parts,
            gather,
            total: args.len() - 1,
        })
    }
}

/// A reply read from an upstream node: its raw bytes and what they decode to.
struct Upstreamed {
    raw: Vec<u8>,
    reply: Reply,
    /// The owner's log position after a forwarded write (asked right behind it).
    lsn: Option<u64>,
}

/// The parts of a reply the gatherers need.
#[derive(Debug)]
enum Reply {
    Bulk(Vec<u8>),
    Null,
    Int(i64),
    Error(String),
    Simple(String),
    Array(Vec<Reply>),
    Other,
}

fn from_resp2(frame: redis_protocol::resp2::types::OwnedFrame) -> Reply {
    use redis_protocol::resp2::types::OwnedFrame as F;
    match frame {
        F::BulkString(b) => Reply::Bulk(b),
        F::Null => Reply::Null,
        F::Integer(i) => Reply::Int(i),
        F::Error(e) => Reply::Error(e),
        F::SimpleString(s) => Reply::Simple(String::from_utf8_lossy(&s).into_owned()),
        F::Array(items) => Reply::Array(items.into_iter().map(from_resp2).collect()),
    }
}

fn from_resp3(frame: redis_protocol::resp3::types::OwnedFrame) -> Reply {
    use redis_protocol::resp3::types::OwnedFrame as F;
    match frame {
        F::BlobString { data, .. } => Reply::Bulk(data),
        F::Null => Reply::Null,
        F::Number { data, .. } => Reply::Int(data),
        F::SimpleError { data, .. } => Reply::Error(data),
        F::BlobError { data, .. } => Reply::Error(String::from_utf8_lossy(&data).into_owned()),
        F::SimpleString { data, .. } => Reply::Simple(String::from_utf8_lossy(&data).into_owned()),
        F::Array { data, .. } => Reply::Array(data.into_iter().map(from_resp3).collect()),
        _ => Reply::Other,
    }
}

fn gather(w: &mut ReplyWriter<'_>, forward: &Forward, replies: Vec<Upstreamed>) {
    // Any part that failed fails the whole reply with its error.
    if forward.gather != Gather::Relay
        && let Some(Reply::Error(error)) = replies
            .iter()
            .map(|r| &r.reply)
            .find(|r| matches!(r, Reply::Error(_)))
    {
        w.error(error);
        return;
    }
    match forward.gather {
        Gather::Relay => {
            for reply in &replies {
                w.raw(&reply.raw);
            }
        }
        Gather::Sum => {
            let sum = replies
                .iter()
                .map(|r| match r.reply {
                    Reply::Int(n) => n,
                    _ => 0,
                })
                .sum();
            w.int(sum);
        }
        Gather::AllOk => {
            if replies
                .iter()
                .all(|r| matches!(&r.reply, Reply::Simple(s) if s == "OK"))
            {
                w.ok();
            } else {
                w.error("ERR a node answered MSET with something other than OK");
            }
        }
        Gather::Values => {
            let mut values: Vec<Option<&[u8]>> = vec![None; forward.total];
            for (part, reply) in forward.parts.iter().zip(&replies) {
                let Reply::Array(items) = &reply.reply else {
                    w.error("ERR a node answered MGET with something other than an array");
                    return;
                };
                for (&key, item) in part.keys.iter().zip(items) {
                    values[key - 1] = match item {
                        Reply::Bulk(b) => Some(b.as_slice()),
                        _ => None,
                    };
                }
            }
            w.array(values.len());
            for value in values {
                w.bulk_or_null(value);
            }
        }
    }
}

/// Why a proxied command failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The upstream sent something that is not RESP.
    #[error("bad reply: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("no answer within {}s", PROXY_TIMEOUT.as_secs())]
    Timeout,
}

struct Upstream {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Idle connections to other nodes, per (address, RESP3).
#[derive(Default)]
struct ProxyPool {
    idle: Mutex<HashMap<(SocketAddr, bool), Vec<Upstream>>>,
}

impl ProxyPool {
    async fn call(
        &self,
        addr: SocketAddr,
        resp3: bool,
        password: &str,
        command: &[u8],
        want_lsn: bool,
    ) -> Result<Upstreamed, ProxyError> {
        let pooled = self.idle.lock().get_mut(&(addr, resp3)).and_then(Vec::pop);
        let mut upstream = match pooled {
            Some(upstream) => upstream,
            None => Upstream::connect(addr, resp3, password).await?,
        };
        if want_lsn {
            // In the same write: the owner's position right after this write.
            let mut both = command.to_vec();
            both.extend_from_slice(b"*2\r\n$7\r\nCLUSTER\r\n$7\r\nLASTLSN\r\n");
            upstream.stream.write_all(&both).await?;
        } else {
            upstream.stream.write_all(command).await?;
        }
        let mut reply = upstream.read_reply(resp3).await?;
        if want_lsn {
            if let Reply::Int(lsn) = upstream.read_reply(resp3).await?.reply {
                reply.lsn = u64::try_from(lsn).ok();
            }
        }
        let mut idle = self.idle.lock();
        let list = idle.entry((addr, resp3)).or_default();
        if list.len() < POOL_IDLE_PER_TARGET {
            list.push(upstream);
        }
        Ok(reply)
    }
}

impl Upstream {
    async fn connect(
        addr: SocketAddr,
        resp3: bool,
        password: &str,
    ) -> Result<Upstream, ProxyError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut upstream = Upstream {
            stream,
            buf: Vec::with_capacity(4096),
        };
        let mut hello: Vec<&[u8]> = vec![b"HELLO", if resp3 { b"3" } else { b"2" }];
        if !password.is_empty() {
            hello.extend([&b"AUTH"[..], b"default", password.as_bytes()]);
        }
        hello.extend([&b"SETNAME"[..], PROXY_CLIENT_NAME.as_bytes()]);
        upstream
            .stream
            .write_all(&encode(hello.into_iter()))
            .await?;
        let greeting = upstream.read_reply(resp3).await?;
        if let Reply::Error(error) = greeting.reply {
            return Err(ProxyError::Protocol(format!("handshake refused: {error}")));
        }
        Ok(upstream)
    }

    async fn read_reply(&mut self, resp3: bool) -> Result<Upstreamed, ProxyError> {
        loop {
            let decoded = if resp3 {
                redis_protocol::resp3::decode::complete::decode(&self.buf)
                    .map(|d| d.map(|(frame, len)| (from_resp3(frame), len)))
            } else {
                redis_protocol::resp2::decode::decode(&self.buf)
                    .map(|d| d.map(|(frame, len)| (from_resp2(frame), len)))
            };
            match decoded {
                Ok(Some((reply, len))) => {
                    let raw: Vec<u8> = self.buf.drain(..len).collect();
                    return Ok(Upstreamed {
                        raw,
                        reply,
                        lsn: None,
                    });
                }
                Ok(None) => {
                    let n = self.stream.read_buf(&mut self.buf).await?;
                    if n == 0 {
                        return Err(ProxyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(error) => return Err(ProxyError::Protocol(error.to_string())),
            }
        }
    }
}
