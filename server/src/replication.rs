//! Replication between cluster members (DESIGN.md §5.2–5.4): every slot's primary streams
//! that slot's change-log records to the slot's replicas over a peer link on the cluster
//! bus port (TCP; gossip is UDP on the same number), and `WAIT` counts the replicas whose
//! acknowledgements cover a connection's writes.
//!
//! Each member is primary of some slots and replica of others. As a replica it runs one
//! puller per primary it copies from ([`replica`]); as a primary it serves one link per
//! replica that connects ([`primary`]). Links are blocking threads: the change log's reads
//! block, and a slow peer then stalls only its own thread, never the node's clients (the
//! primary's log cursor is optional: a replica too far behind is dropped and resyncs).
//!
//! Fencing: a replica applies a record only while its view names the link's peer as the
//! slot's primary; a primary counts an acknowledgement for `WAIT` only while its view
//! names the peer a replica of the slot, and drops a link whose slots it no longer serves.

mod budget;
mod handoff;
mod primary;
mod replica;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use ringkv_cluster::link::{LinkKey, Resume};
use ringkv_cluster::{ClusterView, NodeId};
use ringkv_store::Store;
use ringkv_store::change_log::{ChangeLog, LogLimits};
use ringkv_store::slot_set::SlotSet;

use crate::cluster::ClusterNode;
use crate::config::Config;

/// How often an idle primary tells its replicas how far the stream is.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// A link that hears nothing for this long is dead.
const LINK_TIMEOUT: Duration = Duration::from_secs(3);
/// A learner's source refuses with this when it holds no whole copy of the slots asked
/// for and is not about to (it judged this table and is not learning them itself).
const NO_COPY: &str = "no whole copy of these slots here";

/// How long after a table change a learner keeps asking a source that has no copy
/// before it serves its own (the view may not know every member yet).
const SETTLE: Duration = Duration::from_secs(1);

/// How often the pullers are reconciled with the view even when it did not change.
const RECONCILE: Duration = Duration::from_millis(200);

/// How long slots wait for the copies they merge in ([`Pull::Merge`]) before they are
/// served without the members that never answered.
const MERGE_LIMIT: Duration = Duration::from_secs(5);

/// What a puller takes from its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pull {
    /// The slots' stream, as their replica.
    Replica,
    /// Slots this node now serves, from a member that held a whole copy of them.
    Learn,
    /// A member's copy of slots this node now serves and no member holds whole (a whole
    /// cluster restarted): its keys missing here are added, ours are kept.
    Merge,
}

/// The change log's limits on a node: the backlog keeps a dropped replica resumable; a
/// link still reading is kept up to the replica class's hard output buffer limit (Redis's
/// `client-output-buffer-limit replica`, read at start; 0, no limit in Redis, is held to
/// 1 GiB so a stuck link never holds the node's memory without bound).
pub fn log_limits(config: &Config) -> LogLimits {
    let hard = config.client_output_buffer_limit.replica.hard as usize;
    LogLimits {
        backlog: if config.cluster_enabled {
            config.repl_backlog_size as usize
        } else {
            0
        },
        optional_lag: if hard == 0 { 1 << 30 } else { hard },
        ..LogLimits::default()
    }
}

/// Why this node must not acknowledge what it applied now (`None`: it may): a replica
/// acknowledges only what it keeps, so not while its disk fails.
pub type AckHold = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Counters for INFO and CLUSTER INFO.
#[derive(Debug, Default)]
pub struct ReplStats {
    /// Links refused because the peer failed the secret check.
    pub bad_secret: AtomicU64,
    /// Links closed because the peer sent garbage or out-of-turn frames.
    pub bad_frames: AtomicU64,
    /// Replica links that started with a snapshot of some slots.
    pub full_syncs: AtomicU64,
    /// Replica links that resumed from the backlog alone.
    pub partial_syncs: AtomicU64,
    /// Records a replica refused because its view no longer names the sender primary.
    pub fenced_records: AtomicU64,
    /// Snapshot windows sent.
    pub snapshot_windows: AtomicU64,
    /// Acknowledgements not sent because this node could not keep what it applied.
    pub acks_withheld: AtomicU64,
}

/// A replica connected to this node (the primary's side of a link).
#[derive(Debug)]
pub struct ReplicaLink {
    /// The replica.
    pub peer: NodeId,
    /// Where it connected from.
    pub addr: SocketAddr,
    /// The slots streamed to it.
    pub slots: SlotSet,
    /// Everything up to this LSN is applied there.
    pub acked: AtomicU64,
    /// The stream position at which its snapshot completed (`u64::MAX` until then).
    pub synced_at: AtomicU64,
    /// A WAIT asks for an acknowledgement now.
    pub ack_wanted: AtomicBool,
    /// Cleared when the link ends.
    pub alive: AtomicBool,
    /// The peer learns these slots as their new primary: it never counts for WAIT.
    pub learner: bool,
    /// When it last acknowledged (node uptime ms).
    pub last_ack_ms: AtomicU64,
    /// It acknowledged a fence: it serves the slots it took over from us.
    pub fence_taken: AtomicBool,
    /// With its fence acknowledgement: its run and the last LSN of its own stream before
    /// it served the slots (see `replica::acknowledge_fence`).
    pub fence_position: Mutex<Option<(u64, u64)>>,
}

impl ReplicaLink {
    /// True when it holds every write up to `lsn` of its slots.
    fn covers(&self, lsn: u64) -> bool {
        let acked = self.acked.load(Relaxed);
        !self.learner
            && self.alive.load(Relaxed)
            && acked >= lsn
            && acked >= self.synced_at.load(Relaxed)
    }
}

/// A running puller (the replica's side of a link).
struct Puller {
    primary: NodeId,
    slots: SlotSet,
    kind: Pull,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    /// Its link's socket once connected: shut when it is stopped, so a thread blocked
    /// reading ends now rather than after the peer's next frame.
    socket: replica::LinkSocket,
}

impl Puller {
    /// Asks its thread to end, at once.
    fn stop(&self) {
        self.stop.store(true, Relaxed);
        replica::shut(&self.socket);
    }

    /// Stopped, but its thread may still apply what it reads until it notices.
    fn stopping(&self) -> bool {
        self.stop.load(Relaxed) && !self.done.load(Relaxed)
    }
}

/// Which slots this node holds a whole copy of, and which it serves as primary without
/// one yet (learning them from a member that held them under the previous table).
#[derive(Default)]
struct Holdings {
    table: Option<ringkv_cluster::SlotTable>,
    /// The table before it: learning slots fall back to its other owners.
    previous: Option<ringkv_cluster::SlotTable>,
    /// The view's rejoin count this was judged at.
    rejoins: u64,
    held: SlotSet,
    learning: SlotSet,
    /// Learning slots held already, waiting only for their previous primary's fence (a
    /// subset of `learning`; their source is in `sources`).
    fencing: SlotSet,
    /// Slots this node served as primary and no longer owns: it keeps handing them to
    /// their new primary until that one has them (a learner may still ask).
    handing: SlotSet,
    /// Slots this node held a whole copy of as a replica of a primary that died, and that
    /// the table then gave to another member without one: that member learns them from
    /// here (this copy may be the only one holding writes a WAIT acknowledged).
    orphans: SlotSet,
    /// The target table judged while joining.
    target_version: u64,
    /// The newest view judged ([`ClusterView::seq`]).
    view_seq: u64,
    /// Where each learning slot comes from.
    sources: Vec<(NodeId, SlotSet)>,
    /// Slots taken over from a dead primary, not served until the other surviving owners
    /// said how far they got in its stream.
    catching_up: SlotSet,
    /// Slots served here with what this node kept, with no whole copy known anywhere
    /// (a restart found no other member to learn them from): the next table that names
    /// other owners merges their copies in before serving them again.
    provisional: SlotSet,
    /// Learning slots whose copies are merged in from these members (a subset of
    /// `learning`, not in `sources`): served once every one of them sent its copy.
    merging: Vec<(NodeId, SlotSet)>,
    /// When the merges began (they are bounded by [`MERGE_LIMIT`]).
    merge_since: Option<std::time::Instant>,
    /// When this table was judged.
    judged_at: Option<std::time::Instant>,
    /// The checks behind `catching_up` (dead primary, surviving owner) → slots: a newer
    /// table judged before they finish carries them over.
    pending_checks: Checks,
    /// (dead primary, surviving owner) → learning slots held here whose tail is learned
    /// from that owner, which got further in the dead primary's stream. This copy stays a
    /// copy: should that owner die too, the slots are held and rechecked, never learned
    /// over from a member behind it.
    tails: HashMap<(NodeId, NodeId), SlotSet>,
    /// Dead primary → the slots this node served as primary after it was gone, kept while
    /// this node is their primary and for one table after: a member whose view skipped
    /// that table and still waits for the dead one asks, and learns them from here.
    took_over: HashMap<NodeId, SlotSet>,
    /// The view ([`ClusterView::seq`]) under which no key was left in a slot this node
    /// does not own, or whose new owners had not settled (0: look again).
    leftovers_gone_at: u64,
}

/// Catch-up checks: (dead primary, live member asked) → the slots it is asked about.
type Checks = HashMap<(NodeId, NodeId), SlotSet>;

/// Replication on a cluster member.
pub struct Replication {
    me: NodeId,
    /// Names this node's history as a primary: a restarted primary's LSNs are another
    /// history, and so is a node's after the cluster declared it down (its replicas then
    /// resync instead of resuming).
    run: AtomicU64,
    /// Per slot, the first LSN whose writes count for WAIT here: set when this node starts
    /// serving the slot as primary with a whole copy. A write taken with a stale view (a
    /// paused primary waking up) lies before it, and no acknowledgement ever counts it.
    serving_since: Box<[AtomicU64]>,
    /// Per slot, the fence LSN at which this node handed the slot to its new primary and saw
    /// it acknowledged (0: not handed since it last served it): every write it took for the
    /// slot is held there, and WAIT counts them as one copy (the new primary) instead of
    /// waiting for replicas it no longer has.
    handed: Box<[AtomicU64]>,
    key: LinkKey,
    store: Arc<Store>,
    log: Arc<ChangeLog>,
    cluster: Arc<ClusterNode>,
    started: std::time::Instant,
    replicas: Mutex<Vec<Arc<ReplicaLink>>>,
    /// Bumped on every acknowledgement; WAIT waits on it.
    acks: tokio::sync::watch::Sender<u64>,
    /// Where this node stands in each primary's stream.
    positions: Mutex<HashMap<NodeId, Resume>>,
    pullers: Mutex<Vec<Puller>>,
    /// Rung when a puller's thread ends.
    puller_ended: tokio::sync::Notify,
    holdings: Mutex<Holdings>,
    /// This member kept its node id from an earlier run: what it holds may be behind.
    restarted: bool,
    /// Why acknowledgements are held back now, if they are.
    ack_hold: AckHold,
    /// Counters.
    pub stats: ReplStats,
    /// What handoffs moved here and from here.
    pub handoff: handoff::HandoffStats,
    /// What every snapshot copy from here may use.
    transfer: budget::TransferBudget,
    stopping: AtomicBool,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Replication {
    /// Starts serving replicas on `listener` and pulling from primaries. The store must
    /// have its change log attached (persistence attaches it; otherwise one is made here).
    pub fn start(
        config: &Config,
        store: Arc<Store>,
        cluster: Arc<ClusterNode>,
        listener: TcpListener,
        ack_hold: AckHold,
    ) -> Arc<Replication> {
        let log = match store.change_log() {
            Some(log) => log.clone(),
            None => {
                let log = Arc::new(ChangeLog::new(1, log_limits(config)));
                store.attach_change_log(log.clone());
                log
            }
        };
        let me = cluster.view().me;
        let restarted = cluster.restarted();
        let repl = Arc::new(Replication {
            me,
            run: AtomicU64::new(rand::random()),
            serving_since: (0..ringkv_cluster::SLOT_COUNT)
                .map(|_| AtomicU64::new(0))
                .collect(),
            handed: (0..ringkv_cluster::SLOT_COUNT)
                .map(|_| AtomicU64::new(0))
                .collect(),
            key: LinkKey::new(config.cluster_secret.as_deref().filter(|s| !s.is_empty())),
            store,
            log,
            cluster,
            started: std::time::Instant::now(),
            replicas: Mutex::new(Vec::new()),
            acks: tokio::sync::watch::channel(0).0,
            positions: Mutex::new(HashMap::new()),
            pullers: Mutex::new(Vec::new()),
            puller_ended: tokio::sync::Notify::new(),
            holdings: Mutex::new(Holdings::default()),
            restarted,
            ack_hold,
            stats: ReplStats::default(),
            handoff: handoff::HandoffStats::default(),
            transfer: budget::TransferBudget::new(
                config.cluster_transfer_max_rate,
                config.cluster_transfer_cpu_share,
                config.cluster_transfer_max_copies as usize,
            ),
            stopping: AtomicBool::new(false),
        });
        if restarted {
            // Nothing is served from the old copy before the first judgement.
            repl.cluster
                .set_not_ready((0..ringkv_cluster::SLOT_COUNT).collect());
        }
        let accepting = repl.clone();
        std::thread::Builder::new()
            .name("ringkv-repl-accept".into())
            .spawn(move || primary::accept(accepting, listener))
            .expect("spawning the replication listener");
        let managing = repl.clone();
        tokio::spawn(async move { managing.manage().await });
        repl
    }

    /// Stops every link (on shutdown).
    pub fn stop(&self) {
        self.stopping.store(true, Relaxed);
        for puller in self.pullers.lock().iter() {
            puller.stop();
        }
    }

    fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn view(&self) -> Arc<ClusterView> {
        self.cluster.view()
    }

    /// Keeps one puller per primary this node copies slots from, with exactly those slots.
    async fn manage(self: Arc<Self>) {
        let mut changes = self.cluster.subscribe();
        loop {
            if self.stopping.load(Relaxed) {
                return;
            }
            let view = self.view();
            self.reconcile(&view);
            self.announce_if_settled(&view);
            self.drop_leftovers(&view);
            tokio::select! {
                _ = changes.changed() => {}
                () = self.puller_ended.notified() => {}
                () = tokio::time::sleep(RECONCILE) => {}
            }
        }
    }

    /// On a new table: which slots this node still holds a copy of, and which it now
    /// serves as primary without one and learns first ([`ringkv_cluster::holdings`]).
    pub(super) fn update_holdings(self: &Arc<Self>, view: &ClusterView) {
        let mut own = self.holdings.lock();
        // Threads take their views at different moments: an older one judges nothing.
        if view.seq < own.view_seq {
            return;
        }
        own.view_seq = view.seq;
        if view.is_joining(&self.me) {
            self.hold_while_joining(&mut own, view);
            return;
        }
        // Declared down and back (a pause, a partition): others served our slots
        // meanwhile, so nothing here is a whole copy any more, even if the table is the
        // same as before. Our slots are learned again from those who served them.
        let amnesia = own.table.is_some() && view.rejoins != own.rejoins;
        if !amnesia && own.table.as_ref().map(|t| t.version()) == Some(view.table.version()) {
            self.drop_dead_fences(&mut own, view);
            self.end_stalled_merges(&mut own, view);
            return;
        }
        // A restarted member judges its first table only once the cluster is formed, and
        // as if it had been in it all along without a whole copy of anything: what it
        // served before, the others served while it was down, so it learns it back.
        let restart = own.table.is_none() && self.restarted;
        if restart && view.state != ringkv_cluster::ClusterState::Ok {
            return;
        }
        if restart {
            tracing::info!(
                "restarted with this node id: learning its slots back from the other owners"
            );
            own.table = Some(view.table.clone());
        }
        if amnesia {
            tracing::warn!(
                "this node was declared down: relearning its slots, its replicas resync"
            );
            own.held = SlotSet::new();
            own.fencing = SlotSet::new();
            own.handing = SlotSet::new();
            own.orphans = SlotSet::new();
            // What it handed over before the pause is not known to be held any more.
            for handed in self.handed.iter() {
                handed.store(0, Relaxed);
            }
            self.run.store(rand::random(), Relaxed);
            for puller in self.pullers.lock().iter() {
                puller.stop();
            }
        }
        // A fence owed by a member gone since is never coming: those copies are caught up
        // from the others first (the checks carry over to this table below).
        if !(amnesia || restart) {
            self.take_over_dead_fences(&mut own, view);
        }
        // A copy waiting for its fence is still a copy, and so is one learning a tail
        // (none after an amnesia or a restart: nothing here is known whole then).
        if amnesia || restart {
            own.tails.clear();
        }
        let tails_by_source = own
            .tails
            .iter()
            .fold(Vec::new(), |mut all, ((_, source), slots)| {
                ringkv_cluster::holdings::add_source(
                    &mut all,
                    *source,
                    &slots.intersection(&own.learning),
                );
                all
            });
        let copies = own
            .held
            .union(&own.fencing)
            .union(&ringkv_cluster::holdings::all_slots(&tails_by_source));
        // After a restart nothing here is known whole: slots nobody else has a copy of are
        // served with what is here, not claimed (a member alone after a restart would
        // otherwise claim every slot, and others would learn its empty ones over theirs).
        let provisional = match (restart, amnesia) {
            (true, _) => (0..ringkv_cluster::SLOT_COUNT).collect(),
            (false, true) => SlotSet::new(),
            (false, false) => own.provisional.clone(),
        };
        let plan = ringkv_cluster::holdings::plan(
            &self.me,
            own.table.as_ref(),
            &copies,
            &provisional,
            &tails_by_source,
            &view.table,
            |id| view.node(id).is_some(),
        );
        let (mut held, mut learning, mut fencing, mut sources) =
            (plan.held, plan.learning, plan.fencing, plan.sources);
        let (provisional, merging, rechecks) = (plan.provisional, plan.merging, plan.rechecks);
        // A fence a newer table interrupted is still owed by the same member.
        for (source, slots) in &own.sources {
            let owed: SlotSet = slots
                .intersection(&own.fencing)
                .intersection(&held)
                .iter()
                .filter(|&s| view.table.primary(s) == Some(&self.me))
                .collect();
            if !owed.is_empty() && view.node(source).is_some() {
                held = held.difference(&owed);
                learning = learning.union(&owed);
                fencing = fencing.union(&owed);
                ringkv_cluster::holdings::add_source(&mut sources, *source, &owed);
            }
        }
        // Slots served here as primary that the table gave away: kept for their new
        // primary's learner until this node owns them again.
        let owned: SlotSet = (0..ringkv_cluster::SLOT_COUNT)
            .filter(|&s| view.table.owners(s).any(|o| *o == self.me))
            .collect();
        // The slots whose primary under the table judged before passes `test` (none after
        // an amnesia or a restart: that table says nothing of what is here).
        let previously = |test: &dyn Fn(&NodeId) -> bool| -> SlotSet {
            match own.table.as_ref() {
                Some(previous) if !amnesia && !restart => (0..ringkv_cluster::SLOT_COUNT)
                    .filter(|&s| previous.primary(s).is_some_and(test))
                    .collect(),
                _ => SlotSet::new(),
            }
        };
        let was_primary = previously(&|p| *p == self.me);
        let handing = own
            .handing
            .union(&was_primary.intersection(&copies))
            .difference(&owned);
        let dead_primary = previously(&|p| view.node(p).is_none());
        let orphans = own
            .orphans
            .union(&dead_primary.intersection(&copies))
            .difference(&owned);
        if !merging.is_empty() {
            tracing::info!(
                slots = ringkv_cluster::holdings::all_slots(&merging).len(),
                "no member holds these slots whole: merging the other owners' copies in before serving them"
            );
        }
        // Slots served here from now on with a whole copy: their WAIT count starts here.
        let since = self.log.last_lsn() + 1;
        for slot in held.iter() {
            let was_primary = !amnesia
                && own
                    .table
                    .as_ref()
                    .is_some_and(|t| t.primary(slot) == Some(&self.me));
            if view.table.primary(slot) == Some(&self.me) && !was_primary {
                self.serve_from(slot, since);
            }
        }
        if !learning.is_empty() {
            tracing::info!(
                slots = learning.len(),
                "learning slots the table moved here before serving them"
            );
        }
        // Taken over from a primary that died: another surviving owner may have received
        // more of its stream than we did (WAIT 1 counts whichever replica acknowledged
        // first). Those slots wait until every such owner said where it stands.
        let mut checks = Checks::new();
        // Slots served here after their primary died: kept while ours, and one table more.
        let mut took_over: HashMap<NodeId, SlotSet> = HashMap::new();
        // Held slots taken over from a dead primary, by that primary.
        let mut from_dead: HashMap<NodeId, SlotSet> = HashMap::new();
        if !(amnesia || restart) {
            let primary_here: SlotSet = (0..ringkv_cluster::SLOT_COUNT)
                .filter(|&s| {
                    view.table.primary(s) == Some(&self.me)
                        || own.table.as_ref().and_then(|t| t.primary(s)) == Some(&self.me)
                })
                .collect();
            for (dead, slots) in &own.took_over {
                let still = slots.intersection(&primary_here);
                if !still.is_empty() {
                    took_over.insert(*dead, still);
                }
            }
        }
        if let (Some(previous), false) = (own.table.as_ref(), amnesia || restart) {
            for slot in held.union(&learning).iter() {
                let Some(old) = previous.primary(slot) else {
                    continue;
                };
                if view.table.primary(slot) != Some(&self.me)
                    || *old == self.me
                    || view.node(old).is_some()
                {
                    continue;
                }
                took_over.entry(*old).or_default().insert(slot);
                if held.contains(slot) {
                    from_dead.entry(*old).or_default().insert(slot);
                }
            }
        }
        for (dead, slots) in &from_dead {
            self.ask_everyone(&mut checks, view, dead, slots);
        }
        // Slots being learned from a member now gone that this table serves here from
        // nothing (no other owner of the table before had them): some live member may still
        // hold that member's copy (its replica at a table before, no owner since).
        let mut uncopied = SlotSet::new();
        if !(amnesia || restart) {
            for (source, slots) in &own.sources {
                if view.node(source).is_some() {
                    continue;
                }
                let lost: SlotSet = slots
                    .intersection(&own.learning)
                    .difference(&own.fencing)
                    .difference(&copies)
                    .intersection(&held)
                    .iter()
                    .filter(|&s| view.table.primary(s) == Some(&self.me))
                    .collect();
                if lost.is_empty() {
                    continue;
                }
                tracing::info!(from = %source, slots = lost.len(), "the member these slots were learned from is gone: asking the others for its copy");
                uncopied = uncopied.union(&lost);
                self.ask_everyone(&mut checks, view, source, &lost);
            }
        }
        // A tail whose source died: where the others stand in the dead primary's stream is
        // asked again (any live member may have replicated it), this copy served if none
        // got further.
        let mut tails = HashMap::new();
        for ((dead, source), slots) in &own.tails {
            let still = slots.intersection(&learning);
            if !still.is_empty() && view.node(source).is_some() {
                tails.insert((*dead, *source), still);
            }
            let recheck = slots.intersection(&rechecks);
            if recheck.is_empty() {
                continue;
            }
            tracing::info!(%source, slots = recheck.len(), "the owner a tail was learned from is gone: asking the others again");
            self.ask_everyone(&mut checks, view, dead, &recheck);
        }
        // Checks a newer table interrupted still apply to the slots still served here.
        if !(amnesia || restart) {
            for ((dead, other), slots) in &own.pending_checks {
                let still: SlotSet = slots
                    .iter()
                    .filter(|&slot| {
                        held.contains(slot) && view.table.primary(slot) == Some(&self.me)
                    })
                    .collect();
                if !still.is_empty() && view.node(other).is_some() {
                    let entry = checks.entry((*dead, *other)).or_default();
                    *entry = entry.union(&still);
                }
            }
        }
        let catching_up: SlotSet = checks.values().fold(SlotSet::new(), |all, s| all.union(s));
        self.cluster.set_not_ready(learning.union(&catching_up));
        self.cluster.set_handing_in(fences(&sources, &fencing));
        if !fencing.is_empty() {
            tracing::info!(
                slots = fencing.len(),
                "taking over slots from a live primary: serving them after its fence"
            );
        }
        let pending_checks = checks.clone();
        self.start_catch_up(view.table.version(), checks, uncopied);
        self.cluster.judged(&view.table);
        *own = Holdings {
            judged_at: Some(std::time::Instant::now()),
            view_seq: view.seq,
            catching_up,
            pending_checks,
            previous: own.table.take(),
            table: Some(view.table.clone()),
            rejoins: view.rejoins,
            held,
            learning,
            fencing,
            handing,
            orphans,
            target_version: view.target.version(),
            sources,
            provisional,
            merge_since: (!merging.is_empty()).then(std::time::Instant::now),
            merging,
            tails,
            took_over,
            leftovers_gone_at: 0,
        };
    }

    /// Notes a catch-up check of `slots` with every other live member: where it stands in
    /// `dead`'s stream and which of them it served since. Every member, not only the owners
    /// of some table: views skip tables, and a member that took a slot over at a table
    /// this node never judged (holding writes acknowledged since) owns it in none of ours.
    /// The reports name the slots they speak for.
    fn ask_everyone(
        &self,
        checks: &mut Checks,
        view: &ClusterView,
        dead: &NodeId,
        slots: &SlotSet,
    ) {
        for other in view.nodes.iter().map(|n| n.id) {
            if other != self.me && other != *dead {
                let entry = checks.entry((*dead, other)).or_default();
                *entry = entry.union(slots);
            }
        }
    }

    /// Starts the catch-up check for slots taken over from dead primaries, if any.
    ///
    /// `uncopied`: slots served here with no copy at all (being learned from a member that
    /// died, with no other owner of the table before), learned from any member whose
    /// position names them, whatever the LSNs.
    fn start_catch_up(self: &Arc<Self>, version: u64, checks: Checks, uncopied: SlotSet) {
        if checks.is_empty() {
            return;
        }
        let repl = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ringkv-repl-catchup".into())
            .spawn(move || repl.catch_up(version, checks, &uncopied));
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start the catch-up check");
        }
    }

    /// A member whose fence these slots wait for is gone (it left or died mid-handoff):
    /// they are taken over as from any dead primary, served once the other members said
    /// how far they got in its stream.
    fn drop_dead_fences(self: &Arc<Self>, own: &mut Holdings, view: &ClusterView) {
        let checks = self.take_over_dead_fences(own, view);
        if checks.is_empty() {
            return;
        }
        self.publish_readiness(own);
        if let Some(table) = own.table.as_ref() {
            self.start_catch_up(table.version(), checks, SlotSet::new());
        }
    }

    /// The holdings side of [`Self::drop_dead_fences`]: the slots whose fence a gone member
    /// owed become held here, waiting for a catch-up check (`pending_checks`) against
    /// every other live member, which are returned. A new table carries those checks over
    /// for the slots it still makes ours (a joiner's copy of a dead member's slots is
    /// behind what that member's replicas acknowledged: served as it was, at the next
    /// table, it swept writes `WAIT 1` had acknowledged, 1 run in 50 of the kill-during-
    /// join test). Anyone may be asked: a position names the slots it covers.
    fn take_over_dead_fences(&self, own: &mut Holdings, view: &ClusterView) -> Checks {
        let mut checks = Checks::new();
        let dead: Vec<(NodeId, SlotSet)> = fences(&own.sources, &own.fencing)
            .into_iter()
            .filter(|(id, _)| view.node(id).is_none())
            .collect();
        if dead.is_empty() {
            return checks;
        }
        let since = self.log.last_lsn() + 1;
        for (gone, slots) in &dead {
            tracing::info!(from = %gone, slots = slots.len(), "the member handing these slots over is gone: taking them over");
            own.fencing = own.fencing.difference(slots);
            own.learning = own.learning.difference(slots);
            own.held = own.held.union(slots);
            for slot in slots.iter() {
                self.serve_from(slot, since);
            }
            let took = own.took_over.entry(*gone).or_default();
            *took = took.union(slots);
            self.ask_everyone(&mut checks, view, gone, slots);
        }
        for (_, from) in own.sources.iter_mut() {
            for (_, slots) in &dead {
                *from = from.difference(slots);
            }
        }
        own.sources.retain(|(_, from)| !from.is_empty());
        for (key, slots) in &checks {
            let entry = own.pending_checks.entry(*key).or_default();
            *entry = entry.union(slots);
            own.catching_up = own.catching_up.union(slots);
        }
        checks
    }

    /// While joining: nothing is served here; the copies taken of the slots this node will
    /// own stay good while the member they came from still serves them.
    fn hold_while_joining(&self, own: &mut Holdings, view: &ClusterView) {
        let same_table = own.table.as_ref().map(|t| t.version()) == Some(view.table.version());
        if same_table && own.target_version == view.target.version() {
            return;
        }
        let will_own = will_own(view, &self.me);
        let still: SlotSet = own
            .held
            .iter()
            .filter(|&s| {
                will_own.contains(s)
                    && own
                        .table
                        .as_ref()
                        .is_some_and(|t| t.primary(s) == view.table.primary(s))
            })
            .collect();
        *own = Holdings {
            judged_at: Some(std::time::Instant::now()),
            view_seq: view.seq,
            previous: own.table.take(),
            table: Some(view.table.clone()),
            rejoins: view.rejoins,
            held: still,
            target_version: view.target.version(),
            ..Holdings::default()
        };
        self.cluster.set_not_ready(SlotSet::new());
        self.cluster.set_handing_in(Vec::new());
        self.cluster.judged(&view.table);
    }

    /// Asks each surviving owner where it stands in the dead primary's stream; slots one of
    /// them holds more of than we do are learned from it (over our copy, never clearing
    /// it). Then the slots are served. Bounded: one short link per owner.
    fn catch_up(self: &Arc<Self>, version: u64, checks: Checks, uncopied: &SlotSet) {
        let view = self.view();
        // Every member that got further than we did, furthest first; ranked above all, one
        // that served the slots after the dead one (at a table this node's view skipped).
        const SERVED_SINCE: u64 = u64::MAX;
        let mut further: Vec<(u64, NodeId, NodeId, SlotSet)> = Vec::new();
        for ((dead, other), slots) in &checks {
            let Some(addr) = view.node(other).map(|n| n.bus) else {
                continue;
            };
            let report = match replica::ask_position(self, *other, addr, *dead) {
                Ok(report) => report,
                Err(error) => {
                    tracing::info!(%other, %error, "no position from a surviving owner");
                    continue;
                }
            };
            let served = SlotSet::from_ranges(&report.took_over).intersection(slots);
            if !served.is_empty() {
                further.push((SERVED_SINCE, *dead, *other, served));
            }
            let Some(theirs) = report.position else {
                continue;
            };
            let mine = self.positions.lock().get(dead).cloned();
            let ahead = mine
                .as_ref()
                .is_none_or(|m| theirs.run == m.run && theirs.applied > m.applied);
            let slots = slots.intersection(&SlotSet::from_ranges(&theirs.synced));
            // No copy here at all: any copy of that member's stream is further than ours.
            let slots = if ahead {
                slots
            } else {
                slots.intersection(uncopied)
            };
            tracing::info!(
                %dead,
                %other,
                theirs = theirs.applied,
                mine = mine.as_ref().map_or(0, |m| m.applied),
                same_run = mine.as_ref().is_none_or(|m| m.run == theirs.run),
                slots = slots.len(),
                first = slots.iter().next(),
                "where a surviving member stands in the dead primary's stream"
            );
            if !slots.is_empty() {
                further.push((theirs.applied, *dead, *other, slots));
            }
        }
        // Each slot is learned from the first member that has it.
        further.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut taken = SlotSet::new();
        let mut ahead: Vec<(NodeId, NodeId, SlotSet)> = Vec::new();
        for (applied, dead, other, slots) in further {
            let slots = slots.difference(&taken);
            if slots.is_empty() {
                continue;
            }
            taken = taken.union(&slots);
            let served = applied == SERVED_SINCE;
            tracing::info!(%other, slots = slots.len(), served, "a surviving member served these slots after the dead primary, or got further in its stream: learning from it");
            ahead.push((dead, other, slots));
        }
        let mut own = self.holdings.lock();
        if own.table.as_ref().map(|t| t.version()) != Some(version) {
            // A newer table was judged meanwhile; it made its own plan.
            return;
        }
        for (dead, other, slots) in ahead {
            let slots = slots.difference(&own.learning);
            own.held = own.held.difference(&slots);
            own.learning = own.learning.union(&slots);
            ringkv_cluster::holdings::add_source(&mut own.sources, other, &slots);
            let tail = own.tails.entry((dead, other)).or_default();
            *tail = tail.union(&slots);
        }
        own.catching_up = SlotSet::new();
        own.pending_checks.clear();
        self.publish_readiness(&own);
        drop(own);
        self.reconcile(&view);
    }

    /// True when this node holds a whole copy of every slot in `slots`, or served them
    /// until the table gave them away (`handing`: their new primary may still learn them),
    /// or kept them for a dead primary's successor (`orphans`).
    fn holds(&self, slots: &SlotSet) -> bool {
        let own = self.holdings.lock();
        slots.is_subset(&own.held.union(&own.handing).union(&own.orphans))
    }

    /// True when `slot` waits here for `source`'s fence: records for it from `source` are
    /// still applied (it served the slot until it saw our table).
    fn fencing_from(&self, slot: u16, source: &NodeId) -> bool {
        let own = self.holdings.lock();
        own.fencing.contains(slot)
            && own
                .sources
                .iter()
                .any(|(id, slots)| id == source && slots.contains(slot))
    }

    /// True when `source` served `slot` as primary under the table before this one and
    /// this node still copies it: records from it up to its fence are history.
    fn served_before(&self, slot: u16, source: &NodeId, view: &ClusterView) -> bool {
        let owns =
            view.table.owners(slot).any(|o| *o == self.me) || view.joins_owning(slot, &self.me);
        owns && self
            .holdings
            .lock()
            .previous
            .as_ref()
            .is_some_and(|t| t.primary(slot) == Some(source))
    }

    /// `source` fenced `slots` (its heartbeat names our table, after everything it logged
    /// under the older one): the ones waiting for it are served from now on. True when
    /// some were.
    fn fenced(&self, source: &NodeId, slots: &SlotSet) -> bool {
        let done: SlotSet = {
            let own = self.holdings.lock();
            own.sources
                .iter()
                .filter(|(id, _)| id == source)
                .map(|(_, from)| from.intersection(slots).intersection(&own.fencing))
                .fold(SlotSet::new(), |all, s| all.union(&s))
        };
        if done.is_empty() {
            return false;
        }
        tracing::info!(from = %source, slots = done.len(), "handoff fenced; serving the slots");
        self.learned(&done);
        true
    }

    /// The slots of `slots` that `dead`, a member now gone (not in `view`), streamed here,
    /// their copy not replaced since (see [`Self::copy_now_from`]).
    fn replicated_from_gone(&self, dead: &NodeId, slots: &SlotSet, view: &ClusterView) -> SlotSet {
        if view.node(dead).is_some() {
            return SlotSet::new();
        }
        self.positions
            .lock()
            .get(dead)
            .map(|position| SlotSet::from_ranges(&position.synced).intersection(slots))
            .unwrap_or_default()
    }

    /// The slots this node served as primary after `dead` was gone (see `took_over`).
    fn took_over_from(&self, dead: &NodeId) -> SlotSet {
        self.holdings
            .lock()
            .took_over
            .get(dead)
            .cloned()
            .unwrap_or_default()
    }

    /// The gone member whose stream's tail this node learns `slots` from `source` for (a
    /// takeover's catch-up found `source` further in it), if any.
    fn tail_learned_from(&self, source: &NodeId, slots: &SlotSet) -> Option<NodeId> {
        let own = self.holdings.lock();
        own.tails
            .iter()
            .find(|((_, from), tail)| from == source && !tail.intersection(slots).is_empty())
            .map(|((dead, _), _)| *dead)
    }

    /// A link from `primary` now brings these slots: positions in other members' streams
    /// no longer describe the copy here (a catch-up would otherwise learn from it as if it
    /// still were that member's history).
    fn copy_now_from(&self, primary: &NodeId, slots: &SlotSet) {
        self.unname_in_positions(slots, Some(primary));
    }

    /// Positions in other members' streams (but `except`'s) stop naming `slots`.
    fn unname_in_positions(&self, slots: &SlotSet, except: Option<&NodeId>) {
        for (other, position) in self.positions.lock().iter_mut() {
            if Some(other) != except {
                position.synced = SlotSet::from_ranges(&position.synced)
                    .difference(slots)
                    .ranges();
            }
        }
    }

    /// True when this node judged the current table and holds no whole copy of some slot
    /// in `slots`, nor is learning it: it will not have one to hand out.
    fn has_no_copy_of(&self, slots: &SlotSet) -> bool {
        let own = self.holdings.lock();
        own.table.is_some()
            && slots.iter().any(|s| {
                !own.held.contains(s)
                    && !own.learning.contains(s)
                    && !own.handing.contains(s)
                    && !own.orphans.contains(s)
            })
    }

    /// A learner's `source` has no whole copy of `slots`: each goes to the next owner of
    /// the previous table, then of the current one, still alive, or, with none left, no
    /// whole copy survives: every live owner's copy is merged into ours before the slot is
    /// served, and with no live owner at all it is served with what is here.
    fn source_has_no_copy(&self, source: &NodeId, slots: &SlotSet, view: &ClusterView) {
        let mut own = self.holdings.lock();
        let mut serve_own = SlotSet::new();
        let mut merge = SlotSet::new();
        let mut merge_from: Vec<(NodeId, SlotSet)> = Vec::new();
        let mut moved: Vec<(NodeId, u16)> = Vec::new();
        for slot in slots.iter().filter(|&s| own.learning.contains(s)) {
            // A tail's source that no longer holds the slot whole: our copy is the best
            // there is (the catch-up found nobody else further).
            if own
                .tails
                .iter()
                .any(|((_, from), tail)| from == source && tail.contains(slot))
            {
                serve_own.insert(slot);
                continue;
            }
            // The former owners first, then the current ones: a view judged before every
            // member was known (a restart meeting its seed first) may not name the
            // member that holds the copy as a former owner.
            let mut candidates: Vec<NodeId> = Vec::new();
            for table in [own.previous.as_ref(), own.table.as_ref()]
                .into_iter()
                .flatten()
            {
                for owner in table.owners(slot) {
                    if *owner != self.me
                        && view.node(owner).is_some()
                        && !candidates.contains(owner)
                    {
                        candidates.push(*owner);
                    }
                }
            }
            let next = candidates
                .iter()
                .position(|c| c == source)
                .and_then(|at| candidates.get(at + 1));
            match next {
                Some(next) => moved.push((*next, slot)),
                // Just after a table change the view may not know every member yet (a
                // restart meets its seed first): ask the same source again for a while
                // before concluding that no copy survives.
                None if own.judged_at.is_some_and(|at| at.elapsed() < SETTLE) => {
                    moved.push((*source, slot))
                }
                None if candidates.is_empty() => serve_own.insert(slot),
                // No member holds it whole (a whole cluster restarted): every live owner's
                // copy is merged into ours before it is served.
                None => {
                    merge.insert(slot);
                    for candidate in &candidates {
                        ringkv_cluster::holdings::note_source(&mut merge_from, candidate, slot);
                    }
                }
            }
        }
        for (from, slots) in &merge_from {
            ringkv_cluster::holdings::add_source(&mut own.merging, *from, slots);
        }
        if !merge.is_empty() {
            own.provisional = own.provisional.union(&merge);
            own.merge_since = Some(std::time::Instant::now());
            tracing::info!(
                slots = merge.len(),
                "no member holds these slots whole: merging the other owners' copies in before serving them"
            );
        }
        for (_, from) in own.sources.iter_mut() {
            *from = from.difference(slots);
        }
        for (next, slot) in moved {
            ringkv_cluster::holdings::note_source(&mut own.sources, &next, slot);
        }
        own.sources.retain(|(_, from)| !from.is_empty());
        drop(own);
        if !serve_own.is_empty() {
            tracing::warn!(
                slots = serve_own.len(),
                "no other member holds a whole copy: serving these slots with what is here"
            );
            self.learned(&serve_own);
        }
    }

    /// True when some slot in `slots` is served here but still being learned, or still
    /// catching up from the other owners after a takeover: handing such a copy
    /// to a replica now would let it sweep the writes only it has.
    fn learning_any(&self, slots: &SlotSet) -> bool {
        let own = self.holdings.lock();
        !slots
            .intersection(&own.learning.union(&own.catching_up))
            .is_empty()
    }

    /// True once this node judged a table: before, it does not know what it holds.
    fn judged_a_table(&self) -> bool {
        self.holdings.lock().table.is_some()
    }

    /// True when `slot` is being learned here.
    fn learning(&self, slot: u16) -> bool {
        self.holdings.lock().learning.contains(slot)
    }

    /// `source` sent its copy of `slots` for a merge: those no other member's copy is
    /// awaited for any more are held and served from now on.
    fn merged(&self, source: &NodeId, slots: &SlotSet) {
        let done = {
            let mut own = self.holdings.lock();
            let mut sent = SlotSet::new();
            for (_, from) in own.merging.iter_mut().filter(|(id, _)| id == source) {
                sent = from.intersection(slots);
                *from = from.difference(slots);
            }
            own.merging.retain(|(_, from)| !from.is_empty());
            let awaited = ringkv_cluster::holdings::all_slots(&own.merging);
            sent.difference(&awaited).intersection(&own.learning)
        };
        if !done.is_empty() {
            tracing::info!(from = %source, slots = done.len(), "merged the copies of every live owner; serving the slots");
            self.learned(&done);
        }
    }

    /// Merges that waited too long, or for a member now gone, end without it: their slots
    /// are served with what was merged so far, still not claimed whole.
    fn end_stalled_merges(&self, own: &mut Holdings, view: &ClusterView) {
        let expired = own.merge_since.is_some_and(|at| at.elapsed() > MERGE_LIMIT);
        let before = ringkv_cluster::holdings::all_slots(&own.merging);
        own.merging
            .retain(|(id, _)| !expired && view.node(id).is_some());
        let awaited = ringkv_cluster::holdings::all_slots(&own.merging);
        let ended = before.difference(&awaited).intersection(&own.learning);
        if own.merging.is_empty() {
            own.merge_since = None;
        }
        if ended.is_empty() {
            return;
        }
        tracing::warn!(
            slots = ended.len(),
            "a member never sent its copy for a merge: serving these slots with what was merged"
        );
        own.learning = own.learning.difference(&ended);
        let since = self.log.last_lsn() + 1;
        for slot in ended.iter() {
            self.serve_from(slot, since);
        }
        self.publish_readiness(own);
    }

    /// These slots are learned or fenced: held and served from now on.
    fn learned(&self, slots: &SlotSet) {
        {
            let mut own = self.holdings.lock();
            own.fencing = own.fencing.difference(slots);
        }
        self.handoff.slots_in.fetch_add(slots.len() as u64, Relaxed);
        self.now_hold(slots);
    }

    /// A replica link from `primary` copied these slots whole (a snapshot or a resume):
    /// held from now on, those of them `primary` still serves in the table judged last.
    /// A link thread may get here late (after a table that gave the slots to another
    /// member was judged: its primary died meanwhile): a copy from a member that no longer
    /// serves the slot may lack writes its successor acknowledged, and is not a copy.
    fn copied_from(&self, primary: &NodeId, slots: &SlotSet) {
        // READONLY reads of them are served here again.
        self.cluster.set_replica_whole(slots, true);
        self.hold(slots, Some(primary));
    }

    /// A link copied these slots whole (a replica's snapshot or resume, a learner's copy):
    /// held from now on, and served if they were being learned.
    fn now_hold(&self, slots: &SlotSet) {
        self.hold(slots, None);
    }

    /// [`Self::now_hold`], for the slots `from` (when named) serves in the judged table,
    /// judged under the same lock.
    fn hold(&self, slots: &SlotSet, from: Option<&NodeId>) {
        let mut own = self.holdings.lock();
        let served_by_source: SlotSet;
        let slots = match (from, own.table.as_ref()) {
            (Some(source), Some(table)) => {
                served_by_source = slots
                    .iter()
                    .filter(|&s| table.primary(s) == Some(source))
                    .collect();
                &served_by_source
            }
            _ => slots,
        };
        // A slot waiting for its previous primary's fence is held only once the fence came
        // (`fenced`), whatever a link that copied it says.
        let slots = &slots.difference(&own.fencing);
        let since = self.log.last_lsn() + 1;
        for slot in slots.iter() {
            if own.learning.contains(slot) {
                // Learned: served from here on.
                self.serve_from(slot, since);
            }
            own.held.insert(slot);
            own.learning.remove(slot);
            own.provisional.remove(slot);
        }
        for (_, learned) in own.sources.iter_mut() {
            *learned = learned.difference(slots);
        }
        own.sources.retain(|(_, slots)| !slots.is_empty());
        for tail in own.tails.values_mut() {
            *tail = tail.difference(slots);
        }
        own.tails.retain(|_, slots| !slots.is_empty());
        self.publish_readiness(&own);
    }

    /// Tells the router which slots are not served yet and which a live previous primary
    /// still serves for us. Under the holdings lock: two link threads that learned slots
    /// at the same moment published their sets in the wrong order once, and the older one
    /// (slots since learned) stayed, its slots answering -TRYAGAIN until the next table.
    fn publish_readiness(&self, own: &Holdings) {
        self.cluster
            .set_not_ready(own.learning.union(&own.catching_up));
        self.cluster
            .set_handing_in(fences(&own.sources, &own.fencing));
    }

    fn reconcile(self: &Arc<Self>, view: &ClusterView) {
        self.update_holdings(view);
        let mut wanted: Vec<(NodeId, SlotSet, Pull)> = view
            .table
            .replicated_by(&self.me)
            .into_iter()
            .map(|(primary, slots)| (primary, slots, Pull::Replica))
            .collect();
        if view.is_joining(&self.me) {
            self.join(view, &mut wanted);
        }
        let (sources, fencing, merging) = {
            let own = self.holdings.lock();
            (
                own.sources.clone(),
                own.fencing.clone(),
                own.merging.clone(),
            )
        };
        wanted.extend(
            sources
                .iter()
                .map(|(source, slots)| (*source, slots.clone(), Pull::Learn)),
        );
        wanted.extend(
            merging
                .into_iter()
                .map(|(source, slots)| (source, slots, Pull::Merge)),
        );
        let mut pullers = self.pullers.lock();
        pullers.retain(|puller| {
            // A stopped link keeps its place until its thread ended (see `busy`).
            if puller.stop.load(Relaxed) {
                return !puller.done.load(Relaxed);
            }
            let exact = wanted.iter().any(|(primary, slots, kind)| {
                *primary == puller.primary && *slots == puller.slots && *kind == puller.kind
            });
            // A link that streamed these slots here before the table changed carries their
            // previous primary's fence: it lives until the fence arrives.
            let carries_fence = puller.kind == Pull::Replica
                && sources.iter().any(|(source, slots)| {
                    *source == puller.primary
                        && !slots
                            .intersection(&fencing)
                            .intersection(&puller.slots)
                            .is_empty()
                });
            let keep = !puller.done.load(Relaxed) && (exact || carries_fence);
            if !keep {
                puller.stop();
            }
            // A finished link leaves now; a stopped one once its thread ended.
            keep || !puller.done.load(Relaxed)
        });
        // While such a link lives, nothing else is pulled from that member; nor while a
        // stopped link to it still runs: its thread applies the frame it is reading, and a
        // new link resuming from the same position would apply those records a second time
        // (a list push twice).
        let busy: Vec<NodeId> = pullers
            .iter()
            .filter(|p| {
                p.stopping()
                    || p.kind == Pull::Replica
                        && !wanted.iter().any(|(id, slots, kind)| {
                            *id == p.primary && *slots == p.slots && *kind == Pull::Replica
                        })
            })
            .map(|p| p.primary)
            .collect();
        wanted.retain(|(primary, _, _)| !busy.contains(primary));
        for (primary, slots, kind) in wanted {
            if pullers
                .iter()
                .any(|p| p.primary == primary && p.kind == kind)
            {
                continue;
            }
            let Some(addr) = view.node(&primary).map(|n| n.bus) else {
                continue;
            };
            tracing::info!(%primary, slots = slots.len(), ?kind, table = format_args!("{:016x}", view.table.version()), "pulling slots");
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicBool::new(false));
            let socket = replica::LinkSocket::default();
            pullers.push(Puller {
                primary,
                slots: slots.clone(),
                kind,
                stop: stop.clone(),
                done: done.clone(),
                socket: socket.clone(),
            });
            let repl = self.clone();
            let spawned = std::thread::Builder::new()
                .name("ringkv-repl-pull".into())
                .spawn(move || {
                    replica::pull(&repl, primary, addr, slots, kind, &stop, &socket);
                    done.store(true, Relaxed);
                    // The manager may be holding a new link to this member back for it.
                    repl.puller_ended.notify_one();
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "could not start a replication puller");
            }
        }
    }

    /// A joining member copies every slot it will own from the member serving it, and
    /// announces `Serving` once it holds them all: the table then gives it its slots, each
    /// served after its previous primary's fence.
    fn join(&self, view: &ClusterView, wanted: &mut Vec<(NodeId, SlotSet, Pull)>) {
        let will_own = will_own(view, &self.me);
        let mut by_primary: Vec<(NodeId, SlotSet)> = Vec::new();
        for slot in will_own.iter() {
            if let Some(primary) = view.table.primary(slot).filter(|p| **p != self.me) {
                ringkv_cluster::holdings::note_source(&mut by_primary, primary, slot);
            }
        }
        wanted.extend(
            by_primary
                .into_iter()
                .map(|(p, slots)| (p, slots, Pull::Replica)),
        );
        let ready = view.state == ringkv_cluster::ClusterState::Ok
            && will_own.is_subset(&self.holdings.lock().held);
        if ready {
            tracing::info!(
                slots = will_own.len(),
                "joined: holding a copy of every slot this member will own; taking them"
            );
            self.cluster
                .announce_state(ringkv_cluster::membership::NodeState::Serving);
        }
    }

    /// Leaving: announces `Draining` and waits (at most `limit`) until every slot this node
    /// serves now is handed to the member the table without it names; says what was not.
    pub async fn drain(&self, limit: Duration) {
        let before = self.view();
        let mine: SlotSet = (0..ringkv_cluster::SLOT_COUNT)
            .filter(|&s| before.table.primary(s) == Some(&self.me))
            .collect();
        if mine.is_empty() {
            return;
        }
        tracing::info!(
            slots = mine.len(),
            "draining: handing every slot served here to its next owner"
        );
        self.cluster
            .announce_state(ringkv_cluster::membership::NodeState::Draining);
        let started = std::time::Instant::now();
        let mut pending = mine.clone();
        while started.elapsed() < limit {
            let view = self.view();
            let draining = view
                .node(&self.me)
                .is_some_and(|n| n.state == ringkv_cluster::membership::NodeState::Draining);
            if !draining {
                // Not announced yet (the bus was busy): ask again.
                self.cluster
                    .announce_state(ringkv_cluster::membership::NodeState::Draining);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            pending = mine
                .iter()
                .filter(|&s| {
                    // A slot with no other owner to take it stays with us to the end.
                    let next = view.target.primary(s).filter(|p| **p != self.me);
                    next.is_some() && self.handed[usize::from(s)].load(Relaxed) == 0
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if pending.is_empty() {
            tracing::info!(slots = mine.len(), took = ?started.elapsed(), "drained: every slot handed over");
        } else {
            tracing::warn!(
                handed = mine.len() - pending.len(),
                not_handed = pending.len(),
                "drain timed out: leaving with slots not handed over (their replicas take them)"
            );
        }
    }

    /// Counts a link that failed on the peer's word: a failed secret check, or garbage.
    fn count_link_error(&self, error: &ringkv_cluster::link::LinkError) {
        use ringkv_cluster::link::LinkError;
        match error {
            LinkError::BadMac => {
                self.stats.bad_secret.fetch_add(1, Relaxed);
            }
            LinkError::Malformed(_) | LinkError::TooLarge(_) | LinkError::UnknownKind(_) => {
                self.stats.bad_frames.fetch_add(1, Relaxed);
            }
            LinkError::Io(_) | LinkError::Refused(_) => {}
        }
    }

    fn ack_arrived(&self) {
        self.acks.send_modify(|n| *n += 1);
    }

    /// Asks every replica for an acknowledgement now (a WAIT is waiting).
    pub fn request_acks(&self) {
        for link in self.replicas.lock().iter() {
            link.ack_wanted.store(true, Relaxed);
        }
        // Senders waiting for records wake up, see the request and send a heartbeat.
        self.log.wake();
    }

    /// A receiver that changes on every acknowledgement.
    pub fn ack_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.acks.subscribe()
    }

    /// The last LSN this node's log handed out.
    pub fn last_lsn(&self) -> u64 {
        self.log.last_lsn()
    }

    /// How many replicas hold every write up to `lsn` in `slots`: the least over the slots
    /// of the replicas the current view names for the slot that acknowledged it. With no
    /// slot, the replicas connected and in sync.
    pub fn acknowledged(&self, lsn: u64, slots: &SlotSet) -> usize {
        let view = self.view();
        let links = self.replicas.lock();
        if slots.is_empty() {
            let mut peers: Vec<NodeId> = links
                .iter()
                .filter(|l| l.covers(0))
                .map(|l| l.peer)
                .collect();
            peers.sort();
            peers.dedup();
            return peers.len();
        }
        let mut any_handed = false;
        let count = slots
            .iter()
            .filter_map(|slot| {
                if view.table.primary(slot) != Some(&self.me) {
                    // Handed over since this node last served it, so after every write
                    // it took for it: its new primary has them.
                    if self.handed[usize::from(slot)].load(Relaxed) > 0 {
                        any_handed = true;
                        return None;
                    }
                    return Some(0);
                }
                if lsn < self.serving_since[usize::from(slot)].load(Relaxed) {
                    return Some(0);
                }
                Some(
                    links
                        .iter()
                        .filter(|l| {
                            l.slots.contains(slot)
                                && l.covers(lsn)
                                && view.table.is_replica(slot, &l.peer)
                        })
                        .count(),
                )
            })
            .min();
        count.unwrap_or(usize::from(any_handed))
    }

    /// This node serves `slot` from LSN `since` on: WAIT counts its writes from there, and
    /// an earlier handoff of it no longer speaks for the writes to come.
    fn serve_from(&self, slot: u16, since: u64) {
        self.serving_since[usize::from(slot)].store(since, Relaxed);
        self.handed[usize::from(slot)].store(0, Relaxed);
    }

    /// `peer`, now the primary of `slots`, acknowledged everything this node logged up to
    /// `lsn`, its handoff fence.
    fn handed_over(&self, slots: &SlotSet, lsn: u64) {
        let mut newly = 0;
        for slot in slots.iter() {
            newly += u64::from(self.handed[usize::from(slot)].fetch_max(lsn, Relaxed) == 0);
        }
        self.handoff.slots_out.fetch_add(newly, Relaxed);
    }

    /// The slots still to move to or from this node, by the target table.
    pub fn handoff_pending(&self) -> handoff::Pending {
        let view = self.view();
        let own = self.holdings.lock();
        let mut pending = handoff::Pending {
            slots_in: 0,
            slots_out: 0,
        };
        for slot in 0..ringkv_cluster::SLOT_COUNT {
            let Some(target) = view.target.primary(slot) else {
                continue;
            };
            let primary_now = view.table.primary(slot) == Some(&self.me);
            if *target == self.me {
                // Fencing slots are learning slots too.
                pending.slots_in += usize::from(!primary_now || own.learning.contains(slot));
            } else {
                let handing =
                    own.handing.contains(slot) && self.handed[usize::from(slot)].load(Relaxed) == 0;
                pending.slots_out += usize::from(primary_now || handing);
            }
        }
        pending
    }

    /// The handoff counters, each as `<prefix><name>:<value>`.
    pub fn handoff_info(&self, out: &mut String, prefix: &str) {
        self.handoff.write(out, prefix, self.handoff_pending());
        self.cluster.holds.write(out, prefix);
    }

    /// True when every slot in `slots` (or, with none, this node as a whole) has at least
    /// `wanted` good replicas: in sync, and acknowledged within `max_lag` (Redis's
    /// min-replicas-to-write and min-replicas-max-lag).
    pub fn enough_good_replicas(
        &self,
        wanted: usize,
        max_lag: Duration,
        mut slots: impl Iterator<Item = u16>,
    ) -> bool {
        let now = self.uptime_ms();
        let lag = max_lag.as_millis() as u64;
        let view = self.cluster.borrow_view();
        let links = self.replicas.lock();
        let good = |l: &&Arc<ReplicaLink>| {
            l.covers(0) && now.saturating_sub(l.last_ack_ms.load(Relaxed)) <= lag
        };
        let mut any = false;
        let all = slots.all(|slot| {
            any = true;
            links
                .iter()
                .filter(good)
                .filter(|l| l.slots.contains(slot) && view.table.is_replica(slot, &l.peer))
                .count()
                >= wanted
        });
        if any {
            return all;
        }
        let mut peers: Vec<NodeId> = links.iter().filter(good).map(|l| l.peer).collect();
        peers.sort();
        peers.dedup();
        peers.len() >= wanted
    }

    /// The slots the view wants this node to hold copies of, and how many of them a live
    /// link has synced: equal when this node is fully re-replicated.
    pub fn sync_progress(&self) -> (usize, usize) {
        let wanted = self.view().table.replicated_by(&self.me);
        let pullers = self.pullers.lock();
        let positions = self.positions.lock();
        let mut synced = 0;
        for (primary, slots) in &wanted {
            let live = pullers.iter().any(|p| {
                p.primary == *primary
                    && p.slots == *slots
                    && p.kind == Pull::Replica
                    && !p.done.load(Relaxed)
                    && !p.stop.load(Relaxed)
            });
            if let (true, Some(position)) = (live, positions.get(primary)) {
                synced += SlotSet::from_ranges(&position.synced)
                    .intersection(slots)
                    .len();
            }
        }
        // Slots served here but still being learned count as copies not synced yet.
        let learning = self.holdings.lock().learning.len();
        (
            wanted.iter().map(|(_, s)| s.len()).sum::<usize>() + learning,
            synced,
        )
    }

    /// Tells the cluster when this node settled under the table it judged: it serves every
    /// slot the table gives it and holds a synced copy of every slot it replicates. The
    /// members that kept copies of slots this table moved away drop them on hearing it
    /// from every new owner ([`Self::drop_leftovers`]).
    fn announce_if_settled(&self, view: &ClusterView) {
        let version = view.table.version();
        let announced = view.node(&self.me).map(|n| n.settled);
        if announced == Some(version) || view.is_joining(&self.me) {
            return;
        }
        {
            let own = self.holdings.lock();
            let judged = own.table.as_ref().map(|t| t.version()) == Some(version);
            if !judged
                || !own.learning.is_empty()
                || !own.catching_up.is_empty()
                || !own.merging.is_empty()
            {
                return;
            }
        }
        let (wanted, synced) = self.sync_progress();
        if wanted == synced {
            self.cluster.announce_settled(version);
        }
    }

    /// Deletes the keys of slots this node no longer owns (a handoff moved them away, or
    /// it was their replica), once every owner the judged table gives them said it settled
    /// under that table: from then on nothing consults this copy (a learner asks the
    /// owners of the table before its own, and a catch-up after a death asks for positions,
    /// which stop naming these slots here, and for slots taken over from the dead one,
    /// which stop naming them too: an owner still waiting for them would not have settled).
    /// Not while a link still copies one from or to here. The deletions are logged, so a
    /// restart does not bring them back; no link carries them (none covers these slots).
    fn drop_leftovers(&self, view: &ClusterView) {
        use ringkv_cluster::SLOT_COUNT;
        let version = view.table.version();
        if view.is_joining(&self.me) || view.state != ringkv_cluster::ClusterState::Ok {
            return;
        }
        {
            let own = self.holdings.lock();
            if own.table.as_ref().map(|t| t.version()) != Some(version)
                || own.leftovers_gone_at == view.seq
            {
                return;
            }
        }
        let will_own = will_own(view, &self.me);
        // Slots kept for a learner count too, keys or not: until released, a learner that
        // asks here is told this node holds them (an empty slot handed at the cluster's
        // formation stays claimed otherwise).
        let kept = {
            let own = self.holdings.lock();
            own.took_over
                .values()
                .fold(own.handing.union(&own.orphans), |all, s| all.union(s))
        };
        let not_owned =
            |s: u16| !view.table.owners(s).any(|o| *o == self.me) && !will_own.contains(s);
        let with_keys: SlotSet = (0..SLOT_COUNT)
            .filter(|&s| not_owned(s) && self.store.count_in_slot(s) > 0)
            .collect();
        let left_over = with_keys.union(&kept.iter().filter(|&s| not_owned(s)).collect());
        // One lock at a time: other paths take these in other orders.
        let pulled = self
            .pullers
            .lock()
            .iter()
            .filter(|p| !p.done.load(Relaxed))
            .fold(SlotSet::new(), |all, p| all.union(&p.slots));
        let sent = self
            .replicas
            .lock()
            .iter()
            .filter(|l| l.alive.load(Relaxed))
            .fold(SlotSet::new(), |all, l| all.union(&l.slots));
        let in_use = pulled.union(&sent);
        let settled = |id: &NodeId| view.node(id).is_some_and(|n| n.settled == version);
        let droppable: SlotSet = left_over
            .iter()
            .filter(|&s| !in_use.contains(s) && view.table.owners(s).all(settled))
            .collect();
        self.handoff
            .slots_left_over
            .store(with_keys.difference(&droppable).len() as u64, Relaxed);
        {
            let mut own = self.holdings.lock();
            if own.table.as_ref().map(|t| t.version()) != Some(version) {
                return;
            }
            // A learner asking from now on hears that this node has no copy.
            own.handing = own.handing.difference(&droppable);
            own.orphans = own.orphans.difference(&droppable);
            // Slots served here after a dead primary are kept for a member whose view
            // skipped a table and still waits for them; every owner settled, none does.
            for slots in own.took_over.values_mut() {
                *slots = slots.difference(&droppable);
            }
            own.took_over.retain(|_, slots| !slots.is_empty());
            if left_over.len() == droppable.len() {
                own.leftovers_gone_at = view.seq;
            }
        }
        if droppable.is_empty() {
            return;
        }
        // Nor does a catch-up hear that a position here names them.
        self.unname_in_positions(&droppable, None);
        self.cluster.set_replica_whole(&droppable, false);
        let cleared = droppable.intersection(&with_keys);
        if cleared.is_empty() {
            return;
        }
        let keys = self.store.clear_slots(&cleared);
        tracing::info!(
            slots = cleared.len(),
            keys,
            "dropped the keys of slots this node no longer owns: their new owners settled"
        );
        self.handoff
            .slots_dropped
            .fetch_add(cleared.len() as u64, Relaxed);
        self.handoff.keys_dropped.fetch_add(keys as u64, Relaxed);
    }

    /// CLUSTER INFO's replication and failover counters.
    pub fn cluster_info(&self, out: &mut String) {
        use std::fmt::Write;
        let (wanted, synced) = self.sync_progress();
        let links = self
            .replicas
            .lock()
            .iter()
            .filter(|l| l.alive.load(Relaxed))
            .count();
        let (learning, catching_up) = {
            let own = self.holdings.lock();
            (own.learning.len(), own.catching_up.len())
        };
        let not_ready = self.cluster.not_ready_count();
        let _ = write!(
            out,
            "cluster_repl_links:{links}\r\ncluster_repl_copies_wanted:{wanted}\r\ncluster_repl_copies_synced:{synced}\r\ncluster_slots_learning:{learning}\r\ncluster_slots_catching_up:{catching_up}\r\ncluster_slots_not_ready:{not_ready}\r\n",
        );
        self.write_counters(out, "cluster_repl_");
        self.handoff_info(out, "cluster_handoff_");
    }

    /// The link counters, each as `<prefix><name>:<value>`.
    fn write_counters(&self, out: &mut String, prefix: &str) {
        use std::fmt::Write;
        let s = &self.stats;
        for (name, counter) in [
            ("full_syncs", &s.full_syncs),
            ("partial_syncs", &s.partial_syncs),
            ("bad_secret", &s.bad_secret),
            ("bad_frames", &s.bad_frames),
            ("fenced_records", &s.fenced_records),
            ("snapshot_windows", &s.snapshot_windows),
            ("acks_withheld", &s.acks_withheld),
        ] {
            let _ = write!(out, "{prefix}{name}:{}\r\n", counter.load(Relaxed));
        }
        let paced = self.transfer.paced_ms.load(Relaxed);
        let queued = self.transfer.queued_ms.load(Relaxed);
        let running = self.transfer.copies_running();
        let _ = write!(
            out,
            "{prefix}transfer_paced_ms:{paced}\r\n{prefix}transfer_queued_ms:{queued}\r\n{prefix}transfers_running:{running}\r\n"
        );
    }

    /// INFO replication's lines.
    pub fn info(&self, out: &mut String) {
        use std::fmt::Write;
        let links = self.replicas.lock();
        let alive: Vec<&Arc<ReplicaLink>> =
            links.iter().filter(|l| l.alive.load(Relaxed)).collect();
        let offset = self.log.last_lsn();
        let _ = write!(out, "role:master\r\nconnected_slaves:{}\r\n", alive.len());
        let now = self.uptime_ms();
        for (i, link) in alive.iter().enumerate() {
            let synced = link.synced_at.load(Relaxed) <= link.acked.load(Relaxed);
            let _ = write!(
                out,
                "slave{i}:ip={},port={},state={},offset={},lag={},slots={}\r\n",
                link.addr.ip(),
                link.addr.port(),
                if synced { "online" } else { "wait_bgsave" },
                link.acked.load(Relaxed),
                now.saturating_sub(link.last_ack_ms.load(Relaxed)) / 1000,
                link.slots.len(),
            );
        }
        let (wanted, synced) = self.sync_progress();
        let all_pullers = self.pullers.lock();
        let pullers: Vec<&Puller> = all_pullers
            .iter()
            .filter(|p| !p.stop.load(Relaxed))
            .collect();
        let positions = self.positions.lock();
        let _ = write!(
            out,
            "master_replid:{:016x}\r\nmaster_repl_offset:{offset}\r\nrepl_backlog_active:1\r\nrepl_wanted_slots:{wanted}\r\nrepl_synced_slots:{synced}\r\nrepl_primaries_pulled:{}\r\n",
            self.run.load(Relaxed),
            pullers.len(),
        );
        for (i, puller) in pullers.iter().enumerate() {
            let applied = positions.get(&puller.primary).map_or(0, |r| r.applied);
            let _ = write!(
                out,
                "repl_primary{i}:id={},slots={},applied={applied}\r\n",
                puller.primary,
                puller.slots.len(),
            );
        }
        match (self.ack_hold)() {
            Some(reason) => {
                let reason: String = reason
                    .chars()
                    .filter(|c| *c != '\r' && *c != '\n')
                    .collect();
                let _ = write!(
                    out,
                    "repl_acks_held:1\r\nrepl_acks_held_reason:{reason}\r\n"
                );
            }
            None => {
                let _ = write!(out, "repl_acks_held:0\r\n");
            }
        }
        self.write_counters(out, "repl_");
    }

    /// Why this node must not acknowledge now, if it must not.
    fn acks_held(&self) -> Option<String> {
        (self.ack_hold)()
    }
}

/// The slots `me` owns in the view's target table (what a joining member copies).
fn will_own(view: &ClusterView, me: &NodeId) -> SlotSet {
    (0..ringkv_cluster::SLOT_COUNT)
        .filter(|&s| view.target.owners(s).any(|o| o == me))
        .collect()
}

/// The fencing slots by the member that still serves them until its fence.
fn fences(sources: &[(NodeId, SlotSet)], fencing: &SlotSet) -> Vec<(NodeId, SlotSet)> {
    sources
        .iter()
        .map(|(id, slots)| (*id, slots.intersection(fencing)))
        .filter(|(_, slots)| !slots.is_empty())
        .collect()
}
