//! Who is in the cluster: SWIM gossip through foca, as a pure core.
//!
//! [`Core`] owns one foca instance and knows nothing of sockets or clocks: it takes
//! packets and timer events and returns packets to send and timers to schedule. The
//! tokio task in [`crate::bus`] drives it over UDP; the simulation in the tests drives
//! it on a virtual clock. Both run exactly this code.
//!
//! A member's foca identity is lean (node id, bus address, incarnation bump) because it
//! travels in every packet. Its client address, weight and state travel as a versioned
//! custom broadcast ([`NodeInfo`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use foca::{Config, Foca, Notification, PostcardCodec, Runtime, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::ring::{NodeId, RingConfig, RingMember, SlotTable};

/// First byte of every bus packet; anything else is not ours.
const PACKET_MAGIC: u8 = 0xA7;
/// Bus protocol version, the second byte.
const PACKET_VERSION: u8 = 1;
/// Bytes of the BLAKE3 MAC appended to each packet when a cluster secret is set.
pub const MAC_LEN: usize = 16;

/// A member as foca sees it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The node id (stable for the life of the process).
    pub id: NodeId,
    /// Where its gossip goes.
    pub bus: SocketAddr,
    /// Grows on each rejoin after being declared down, and starts at the process start
    /// time, so a restarted node wins over its previous self at the same address.
    pub bump: u64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}@{}#{}", self.id, self.bus, self.bump)
    }
}

impl foca::Identity for Identity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Identity {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.bus
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// A member's lifecycle state, as it announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Gossiping, not yet owning slots.
    Joining,
    /// Owns slots.
    Serving,
    /// Leaving: hands its slots on.
    Draining,
}

/// What a member says about itself, disseminated as a foca custom broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Whose info this is.
    pub id: NodeId,
    /// Grows with every change; a higher version replaces a lower one.
    pub version: u64,
    /// Where clients reach it (what MOVED and CLUSTER SLOTS name).
    pub client: SocketAddr,
    /// Its ring weight.
    pub weight: u16,
    /// Its state.
    pub state: NodeState,
    /// The version of the last table under which it served every slot the table gives it
    /// and held a synced copy of every slot it replicates (0: none yet). A member that
    /// kept a copy of a slot the table moved away deletes it once the slot's new primary
    /// says this of the same table.
    pub settled: u64,
    /// How many times its scripts and function libraries changed, counted as members
    /// count them (a member that missed changes, paused or cut off, counts fewer and
    /// takes the whole set from a member that counts more).
    pub scripts_version: u64,
}

/// The key foca keeps per broadcast: one live version per node.
#[derive(Debug, Clone, Copy)]
pub struct InfoKey {
    id: NodeId,
    version: u64,
}

impl foca::Invalidates for InfoKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.id == other.id && self.version > other.version
    }
}

/// A broadcast that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("bad node info broadcast: {0}")]
pub struct BadInfo(#[from] postcard::Error);

/// The newest [`NodeInfo`] heard from each node.
#[derive(Default)]
struct Infos {
    by_id: HashMap<NodeId, NodeInfo>,
    changed: bool,
}

/// foca's broadcast handler. foca owns it and offers no way back to it, so the infos
/// it collects live behind a shared handle the core reads.
#[derive(Default)]
pub struct InfoBook {
    infos: Arc<Mutex<Infos>>,
}

fn lock(infos: &Mutex<Infos>) -> std::sync::MutexGuard<'_, Infos> {
    infos.lock().unwrap_or_else(PoisonError::into_inner)
}

impl foca::BroadcastHandler<Identity> for InfoBook {
    type Key = InfoKey;
    type Error = BadInfo;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&Identity>,
    ) -> Result<Option<InfoKey>, BadInfo> {
        let info: NodeInfo = postcard::from_bytes(data)?;
        let mut infos = lock(&self.infos);
        let newer = infos
            .by_id
            .get(&info.id)
            .is_none_or(|known| known.version < info.version);
        if !newer {
            return Ok(None);
        }
        let key = InfoKey {
            id: info.id,
            version: info.version,
        };
        // A periodic refresh repeats the same details under a new version: still worth
        // passing on, but the view (and its slot table) need not be rebuilt for it.
        let same_details = infos.by_id.get(&info.id).is_some_and(|known| {
            (
                known.client,
                known.weight,
                known.state,
                known.settled,
                known.scripts_version,
            ) == (
                info.client,
                info.weight,
                info.state,
                info.settled,
                info.scripts_version,
            )
        });
        infos.by_id.insert(info.id, info);
        infos.changed |= !same_details;
        Ok(Some(key))
    }
}

/// Gossip timing. The defaults detect a dead member in about 1 s on a LAN: a probe every
/// 300 ms, 150 ms for its ack before indirect probes, 600 ms to refute a suspicion. Failover
/// waits for this, so it is tuned for it; a member starved for longer than that is taken
/// for dead (and rejoins as soon as it answers).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often each member probes another.
    pub probe_period: Duration,
    /// How long a direct probe may take before indirect probes go out.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspect_to_down: Duration,
    /// How often updates are pushed to a few members besides probes.
    pub gossip_period: Duration,
    /// How often a member that has not joined yet announces itself to its seeds.
    pub join_retry: Duration,
    /// How often a member re-announces its own info (a backstop for lost broadcasts).
    pub info_refresh: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down: Duration::from_millis(600),
            gossip_period: Duration::from_millis(150),
            join_retry: Duration::from_millis(500),
            info_refresh: Duration::from_secs(5),
        }
    }
}

impl Timing {
    fn foca_config(&self) -> Config {
        let mut config = Config::new_lan(NonZeroU32::new(64).expect("non-zero"));
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self.suspect_to_down;
        if let Some(gossip) = config.periodic_gossip.as_mut() {
            gossip.frequency = self.gossip_period;
        }
        // Heal partitions sooner than foca's LAN default of 65 s.
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(3),
            num_members: NonZeroUsize::new(2).expect("non-zero"),
        });
        // Forget dead identities after a while so memory stays bounded by live nodes.
        config.remove_down_after = Some(Duration::from_secs(120));
        config
    }
}

/// How a [`Core`] starts.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Our identity.
    pub identity: Identity,
    /// Our client address (what we announce; never a wildcard).
    pub client: SocketAddr,
    /// Our ring weight.
    pub weight: u16,
    /// Bus addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// The cluster secret, if gossip is authenticated.
    pub secret: Option<String>,
    /// Seed of foca's RNG (fixed in the simulation, random in a node).
    pub rng_seed: u64,
    /// Timing.
    pub timing: Timing,
    /// Ring config for the tables built from the view.
    pub ring: RingConfig,
    /// The state announced first: `Joining` for a member that joins a running cluster
    /// (it takes no slot until it holds copies of what it will own), `Serving` otherwise.
    pub initial_state: NodeState,
}

/// Counters for the bus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Packets accepted into foca.
    pub received: u64,
    /// Packets sent.
    pub sent: u64,
    /// Packets dropped because their MAC was missing or wrong.
    pub bad_mac: u64,
    /// Packets dropped because they were not ringkv gossip or did not decode.
    pub malformed: u64,
}

/// What one step of the core asks its driver to do.
#[derive(Default)]
pub struct Output {
    /// Packets to send: (bus address, sealed bytes).
    pub sends: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to deliver after a delay, in the order given.
    pub timers: Vec<(Duration, Timer<Identity>)>,
    /// True when the view may have changed.
    pub changed: bool,
    notifications: Vec<foca::OwnedNotification<Identity>>,
}

struct StepRuntime<'a> {
    out: &'a mut Output,
    mac_key: Option<&'a [u8; 32]>,
    sent: &'a mut u64,
}

impl Runtime<Identity> for StepRuntime<'_> {
    fn notify(&mut self, notification: Notification<'_, Identity>) {
        self.out.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: Identity, data: &[u8]) {
        *self.sent += 1;
        self.out.sends.push((to.bus, seal(self.mac_key, data)));
    }

    fn submit_after(&mut self, event: Timer<Identity>, after: Duration) {
        self.out.timers.push((after, event));
    }
}

fn mac_key(secret: &str) -> [u8; 32] {
    blake3::derive_key("ringkv cluster bus v1 packet mac", secret.as_bytes())
}

fn mac(key: &[u8; 32], payload: &[u8]) -> [u8; MAC_LEN] {
    let full = blake3::keyed_hash(key, payload);
    let mut tag = [0u8; MAC_LEN];
    tag.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
    tag
}

/// Frames a foca payload: magic, version, the payload, and the MAC when keyed.
fn seal(key: Option<&[u8; 32]>, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(payload.len() + 2 + MAC_LEN);
    packet.push(PACKET_MAGIC);
    packet.push(PACKET_VERSION);
    packet.extend_from_slice(payload);
    if let Some(key) = key {
        let tag = mac(key, &packet);
        packet.extend_from_slice(&tag);
    }
    packet
}

/// Why a packet was dropped.
enum Rejected {
    Malformed,
    BadMac,
}

/// The foca payload of a packet, if its frame and MAC are right.
fn open<'p>(key: Option<&[u8; 32]>, packet: &'p [u8]) -> Result<&'p [u8], Rejected> {
    if packet.len() < 2 || packet[0] != PACKET_MAGIC || packet[1] != PACKET_VERSION {
        return Err(Rejected::Malformed);
    }
    let Some(key) = key else {
        return Ok(&packet[2..]);
    };
    if packet.len() < 2 + MAC_LEN {
        return Err(Rejected::BadMac);
    }
    let (body, tag) = packet.split_at(packet.len() - MAC_LEN);
    // Constant-time comparison: blake3's Hash equality is, a slice compare is not.
    let expected = mac(key, body);
    if !constant_time_eq(&expected, tag) {
        return Err(Rejected::BadMac);
    }
    Ok(&body[2..])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One member as the view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Node id.
    pub id: NodeId,
    /// Client address.
    pub client: SocketAddr,
    /// Bus address.
    pub bus: SocketAddr,
    /// Ring weight.
    pub weight: u16,
    /// Announced state.
    pub state: NodeState,
    /// The table version it announced settled under ([`NodeInfo::settled`]).
    pub settled: u64,
    /// Its count of script and library changes ([`NodeInfo::scripts_version`]).
    pub scripts_version: u64,
    /// True for the node that holds this view.
    pub myself: bool,
}

/// Whether the view is complete enough to route by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Every live member is known: the table routes.
    Ok,
    /// Still joining, or a live member's info has not arrived yet.
    Forming,
}

/// A snapshot of the membership and the slot tables built from it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node's id.
    pub me: NodeId,
    /// Live members with known info, sorted by id (this node included).
    pub nodes: Vec<NodeView>,
    /// The slot table over the members that serve: who owns each slot now.
    pub table: SlotTable,
    /// The table the cluster moves to once every joining member holds its copies: over
    /// the serving and the joining members. Equal to `table` when nobody joins.
    pub target: SlotTable,
    /// Routable or not.
    pub state: ClusterState,
    /// How many times the cluster declared this node down and it rejoined under a renewed
    /// identity (after a pause or a partition): its copies may then be behind what others
    /// served meanwhile, even when the table looks the same as before.
    pub rejoins: u64,
    /// Grows with every view the bus publishes: a reader holding two views knows which is
    /// newer (threads that took theirs at different moments must not undo a newer one).
    pub seq: u64,
}

impl ClusterView {
    /// A member by id.
    pub fn node(&self, id: &NodeId) -> Option<&NodeView> {
        self.nodes
            .binary_search_by(|n| n.id.cmp(id))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The client address of the primary of `slot`.
    pub fn primary_addr(&self, slot: u16) -> Option<SocketAddr> {
        self.table
            .primary(slot)
            .and_then(|id| self.node(id))
            .map(|n| n.client)
    }

    /// True when `id` joins (announced `Joining` and is not in the table yet).
    pub fn is_joining(&self, id: &NodeId) -> bool {
        self.node(id).is_some_and(|n| n.state == NodeState::Joining)
            && self.table.members().binary_search(id).is_err()
    }

    /// True when `id` joins and will own `slot`: it copies the slot from its primary
    /// before it takes any slot.
    pub fn joins_owning(&self, slot: u16, id: &NodeId) -> bool {
        self.is_joining(id) && self.target.owners(slot).any(|o| o == id)
    }

    /// How many members are joining.
    pub fn joining(&self) -> usize {
        self.nodes.iter().filter(|n| self.is_joining(&n.id)).count()
    }

    /// Builds the view from members and their infos; pure, so the simulation and the
    /// nodes agree exactly when they know the same things. The table is over the serving
    /// members (over everyone when nobody serves yet: a cluster being founded).
    pub fn build(me: NodeId, nodes: Vec<NodeView>, ring: RingConfig, forming: bool) -> Self {
        let mut nodes = nodes;
        nodes.sort_by_key(|n| n.id);
        nodes.dedup_by_key(|n| n.id);
        let members = |keep: &dyn Fn(NodeState) -> bool| -> Vec<RingMember> {
            nodes
                .iter()
                .filter(|n| keep(n.state))
                .map(|n| RingMember {
                    id: n.id,
                    weight: n.weight,
                })
                .collect()
        };
        let target = members(&|state| state != NodeState::Draining);
        let mut serving = members(&|state| state == NodeState::Serving);
        if serving.is_empty() {
            serving = target.clone();
        }
        let target = SlotTable::build(&target, ring);
        let table = SlotTable::build(&serving, ring);
        ClusterView {
            me,
            table,
            target,
            nodes,
            state: if forming {
                ClusterState::Forming
            } else {
                ClusterState::Ok
            },
            rejoins: 0,
            seq: 0,
        }
    }
}

type Swim = Foca<Identity, PostcardCodec, StdRng, InfoBook>;

/// The membership core: foca plus our framing, our info and the view.
pub struct Core {
    foca: Swim,
    infos: Arc<Mutex<Infos>>,
    info: NodeInfo,
    mac_key: Option<[u8; 32]>,
    seeds: Vec<SocketAddr>,
    joined: bool,
    left: bool,
    ring: RingConfig,
    stats: BusStats,
    info_buf: Vec<u8>,
    rejoins: u64,
}

impl Core {
    /// A core that has not talked to anyone yet. Call [`Core::start`] next.
    pub fn new(settings: Settings) -> Self {
        let info = NodeInfo {
            id: settings.identity.id,
            version: settings.identity.bump,
            client: settings.client,
            weight: settings.weight,
            state: settings.initial_state,
            settled: 0,
            scripts_version: 0,
        };
        let book = InfoBook::default();
        let infos = book.infos.clone();
        let seeds: Vec<SocketAddr> = settings
            .seeds
            .iter()
            .copied()
            // Never announce to ourselves: a node may list every member as a seed.
            .filter(|s| *s != settings.identity.bus)
            .collect();
        let foca = Foca::with_custom_broadcast(
            settings.identity,
            settings.timing.foca_config(),
            StdRng::seed_from_u64(settings.rng_seed),
            PostcardCodec,
            book,
        );
        Core {
            foca,
            infos,
            info,
            mac_key: settings.secret.as_deref().map(mac_key),
            seeds,
            joined: false,
            left: false,
            ring: settings.ring,
            stats: BusStats::default(),
            info_buf: Vec::new(),
            rejoins: 0,
        }
    }

    /// Publishes our info and announces to the seeds. A node without seeds is a cluster
    /// of one until someone joins it.
    pub fn start(&mut self, out: &mut Output) {
        self.publish_info(out);
        self.announce_to_seeds(out);
        out.changed = true;
    }

    /// Our identity.
    pub fn identity(&self) -> &Identity {
        self.foca.identity()
    }

    /// Bus counters.
    pub fn stats(&self) -> BusStats {
        self.stats
    }

    /// True once another member has acknowledged us (or we have no seeds).
    pub fn joined(&self) -> bool {
        self.joined || self.seeds.is_empty()
    }

    /// Feeds one received packet.
    pub fn handle_packet(&mut self, packet: &[u8], out: &mut Output) {
        if self.left {
            return;
        }
        let payload = match open(self.mac_key.as_ref(), packet) {
            Ok(payload) => payload,
            Err(Rejected::BadMac) => {
                self.stats.bad_mac += 1;
                return;
            }
            Err(Rejected::Malformed) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let result = self.step(out, |foca, runtime| foca.handle_data(payload, runtime));
        match result {
            Ok(()) => self.stats.received += 1,
            Err(error) => {
                self.stats.malformed += 1;
                tracing::debug!(%error, "gossip packet rejected");
            }
        }
        self.after_step(out);
    }

    /// Delivers a timer foca asked for.
    pub fn handle_timer(&mut self, timer: Timer<Identity>, out: &mut Output) {
        if self.left || self.is_stale_suspicion(&timer) {
            return;
        }
        let result = self.step(out, |foca, runtime| foca.handle_timer(timer, runtime));
        if let Err(error) = result {
            tracing::debug!(%error, "gossip timer failed");
        }
        self.after_step(out);
    }

    /// True for a suspicion's timer whose member refuted it meanwhile (a higher
    /// incarnation), rejoined under another identity, or is down already. foca 2.0 checks
    /// the incarnation before declaring the member down, but sends the member `TurnUndead`
    /// either way: told it is down, a member that had only stalled for a few hundred ms
    /// rejoined under a new identity and relearned its slots from copies that were behind,
    /// losing writes it had acknowledged.
    fn is_stale_suspicion(&self, timer: &Timer<Identity>) -> bool {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
        else {
            return false;
        };
        !self.foca.iter_membership_state().any(|member| {
            member.id() == member_id
                && member.incarnation() == *incarnation
                && member.state() == foca::State::Suspect
        })
    }

    /// Periodic duty: announce to seeds until joined.
    pub fn retry_join(&mut self, out: &mut Output) {
        if !self.left && !self.joined() {
            self.announce_to_seeds(out);
        }
    }

    /// Periodic duty: re-announce our info under a new version, so a member that missed
    /// it (a lost packet, a healed partition) learns it.
    pub fn refresh_info(&mut self, out: &mut Output) {
        if !self.left {
            self.publish_info(out);
        }
    }

    /// Changes our announced state (for example to draining before a leave).
    pub fn set_state(&mut self, state: NodeState, out: &mut Output) {
        self.info.state = state;
        self.publish_info(out);
        out.changed = true;
    }

    /// Announces that this member settled under the table of version `version` (see
    /// [`NodeInfo::settled`]).
    pub fn set_settled(&mut self, version: u64, out: &mut Output) {
        self.set_counter(|info| &mut info.settled, version, out);
    }

    /// Announces this member's count of script and library changes (see
    /// [`NodeInfo::scripts_version`]).
    pub fn set_scripts_version(&mut self, version: u64, out: &mut Output) {
        self.set_counter(|info| &mut info.scripts_version, version, out);
    }

    /// Sets one of our info's counters and publishes the info, when the value is new.
    fn set_counter(&mut self, field: fn(&mut NodeInfo) -> &mut u64, value: u64, out: &mut Output) {
        let counter = field(&mut self.info);
        if *counter == value {
            return;
        }
        *counter = value;
        self.publish_info(out);
        out.changed = true;
    }

    /// Leaves gracefully: tells a few members we are gone, then goes quiet.
    pub fn leave(&mut self, out: &mut Output) {
        if self.left {
            return;
        }
        let result = self.step(out, |foca, runtime| foca.leave_cluster(runtime));
        if let Err(error) = result {
            tracing::debug!(%error, "leaving the cluster failed");
        }
        self.left = true;
        out.changed = true;
    }

    /// Declares `id` down at once: a peer link saw its process gone (nothing listens on its
    /// bus port any more), which SWIM's probes would only conclude a second later. foca
    /// spreads the verdict like its own; a member wrongly declared down renews its
    /// identity and rejoins, as after any false suspicion. Returns whether it was live.
    pub fn declare_gone(&mut self, id: &NodeId, out: &mut Output) -> bool {
        if self.left || *id == self.info.id {
            return false;
        }
        let Some(identity) = self
            .foca
            .iter_members()
            .map(|member| member.id())
            .find(|identity| identity.id == *id)
            .cloned()
        else {
            return false;
        };
        tracing::info!(member = ?identity, "peer link found the member gone; declaring it down");
        let down = std::iter::once(foca::Member::down(identity));
        let result = self.step(out, |foca, runtime| foca.apply_many(down, true, runtime));
        if let Err(error) = result {
            tracing::debug!(%error, "declaring a member down failed");
        }
        self.after_step(out);
        out.changed = true;
        true
    }

    /// The current view: live members whose info we know, and the table over them.
    pub fn view(&self) -> ClusterView {
        let infos = lock(&self.infos);
        let mut nodes = vec![NodeView {
            id: self.info.id,
            client: self.info.client,
            bus: self.identity().bus,
            weight: self.info.weight,
            state: self.info.state,
            settled: self.info.settled,
            scripts_version: self.info.scripts_version,
            myself: true,
        }];
        let mut unknown = 0;
        for member in self.foca.iter_members() {
            let id = member.id();
            match infos.by_id.get(&id.id) {
                Some(info) => nodes.push(NodeView {
                    id: id.id,
                    client: info.client,
                    bus: id.bus,
                    weight: info.weight,
                    state: info.state,
                    settled: info.settled,
                    scripts_version: info.scripts_version,
                    myself: false,
                }),
                None => unknown += 1,
            }
        }
        let forming = !self.joined() || unknown > 0;
        let mut view = ClusterView::build(self.info.id, nodes, self.ring, forming);
        view.rejoins = self.rejoins;
        view
    }

    fn announce_to_seeds(&mut self, out: &mut Output) {
        for seed in self.seeds.clone() {
            // foca accepts an announce addressed to any identity at its bus address.
            let target = Identity {
                id: NodeId([0; 20]),
                bus: seed,
                bump: 0,
            };
            if let Err(error) = self.step(out, |foca, runtime| foca.announce(target, runtime)) {
                tracing::debug!(%error, %seed, "announce failed");
            }
        }
    }

    fn publish_info(&mut self, out: &mut Output) {
        self.info.version += 1;
        self.info_buf = match postcard::to_allocvec(&self.info) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "encoding our node info failed");
                return;
            }
        };
        if let Err(error) = self.foca.add_broadcast(&self.info_buf) {
            tracing::warn!(%error, "queueing our node info failed");
        }
        // Push it now rather than waiting for the next probe to carry it.
        if let Err(error) = self.step(out, |foca, runtime| foca.broadcast(runtime)) {
            tracing::debug!(%error, "broadcasting our node info failed");
        }
    }

    fn after_step(&mut self, out: &mut Output) {
        let mut someone_new = false;
        for notification in std::mem::take(&mut out.notifications) {
            use foca::OwnedNotification as N;
            match notification {
                N::MemberUp(member) => {
                    tracing::info!(member = ?member, "member up");
                    someone_new = true;
                    out.changed = true;
                }
                N::MemberDown(member) => {
                    tracing::info!(member = ?member, "member down");
                    out.changed = true;
                }
                N::Rename(old, new) => {
                    tracing::info!(old = ?old, new = ?new, "member renamed");
                    out.changed = true;
                }
                N::Active => {
                    self.joined = true;
                    out.changed = true;
                }
                N::Rejoin(id) => {
                    tracing::warn!(identity = ?id, "rejoined after being declared down");
                    self.rejoins += 1;
                    someone_new = true;
                    out.changed = true;
                }
                N::Idle => {
                    tracing::info!("no live members left");
                    out.changed = true;
                }
                N::Defunct => {
                    tracing::warn!("declared down and cannot renew");
                    out.changed = true;
                }
            }
        }
        if someone_new {
            // A newcomer has not heard our info: say it again under a new version.
            self.publish_info(out);
        }
        if std::mem::take(&mut lock(&self.infos).changed) {
            out.changed = true;
        }
    }

    /// Runs one foca call with a runtime that seals its packets and counts them.
    fn step<R>(
        &mut self,
        out: &mut Output,
        call: impl FnOnce(&mut Swim, &mut StepRuntime<'_>) -> R,
    ) -> R {
        let mut runtime = StepRuntime {
            out,
            mac_key: self.mac_key.as_ref(),
            sent: &mut self.stats.sent,
        };
        call(&mut self.foca, &mut runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_packets_open_only_with_the_same_secret() {
        let key = mac_key("s3cret");
        let other = mac_key("other");
        let packet = seal(Some(&key), b"payload");
        assert_eq!(open(Some(&key), &packet).ok(), Some(&b"payload"[..]));
        assert!(matches!(open(Some(&other), &packet), Err(Rejected::BadMac)));
        // An unkeyed packet to a keyed node is rejected, not trusted.
        let plain = seal(None, b"payload");
        assert!(matches!(open(Some(&key), &plain), Err(Rejected::BadMac)));
        // A flipped bit anywhere fails the MAC.
        let mut tampered = packet.clone();
        tampered[3] ^= 1;
        assert!(matches!(open(Some(&key), &tampered), Err(Rejected::BadMac)));
        assert!(matches!(
            open(None, b"GET / HTTP/1.1"),
            Err(Rejected::Malformed)
        ));
        assert!(matches!(open(None, b""), Err(Rejected::Malformed)));
    }
}
