//! Deterministic simulation of N membership cores on a virtual clock, with seeded packet
//! loss, delay and partitions. The cores are the same code a node runs; only the
//! network and the clock are simulated, so a run is a pure function of its seed.
//!
//! A failure prints its seed; replay it with `RINGKV_SIM_SEED=<seed> cargo test -p
//! ringkv-cluster --test simulation`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use foca::Timer;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ringkv_cluster::NodeId;
use ringkv_cluster::membership::{
    ClusterState, Core, Identity, NodeState, Output, Settings, Timing,
};
use ringkv_cluster::ring::RingConfig;

enum Event {
    Packet { to: SocketAddr, bytes: Vec<u8> },
    Timer { node: usize, timer: Timer<Identity> },
    RetryJoin(usize),
    RefreshInfo(usize),
}

struct Sim {
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Event>,
    nodes: Vec<Option<Core>>,
    by_bus: HashMap<SocketAddr, usize>,
    rng: StdRng,
    loss: f64,
    max_delay_ms: u64,
    /// Nodes on the far side of a partition; packets across it are dropped.
    cut: Option<BTreeSet<usize>>,
    timing: Timing,
    secret: Option<String>,
    /// Per node, until when it runs nothing (a blocked runtime): its packets and timers
    /// wait, none is lost.
    stalled_until: HashMap<usize, Duration>,
}

fn bus(index: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 1, 1 + index as u8], 17000))
}

fn node_id(seed: u64, index: usize) -> NodeId {
    let mut id = [0u8; 20];
    let word = (seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
    id[..8].copy_from_slice(&word);
    id[19] = index as u8;
    NodeId(id)
}

impl Sim {
    fn new(seed: u64, loss: f64, max_delay_ms: u64) -> Sim {
        Sim {
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: Vec::new(),
            by_bus: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            loss,
            max_delay_ms,
            cut: None,
            timing: Timing::default(),
            secret: Some("sim-secret".into()),
            stalled_until: HashMap::new(),
        }
    }

    fn push(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + after, self.seq)));
        self.events.insert(self.seq, event);
    }

    /// Adds a node that joins through `seeds` (bus addresses of other nodes).
    fn add(&mut self, seed: u64, seeds: &[usize]) -> usize {
        let index = self.nodes.len();
        let settings = Settings {
            identity: Identity {
                id: node_id(seed, index),
                bus: bus(index),
                bump: 1 + self.now.as_millis() as u64,
            },
            client: SocketAddr::from(([127, 0, 1, 1 + index as u8], 7000)),
            weight: 1,
            seeds: seeds.iter().map(|&s| bus(s)).collect(),
            secret: self.secret.clone(),
            rng_seed: seed.wrapping_add(index as u64),
            timing: self.timing,
            initial_state: NodeState::Serving,
            ring: RingConfig {
                vnodes: 64,
                replicas: 1,
            },
        };
        let mut core = Core::new(settings);
        let mut out = Output::default();
        core.start(&mut out);
        self.nodes.push(Some(core));
        self.by_bus.insert(bus(index), index);
        self.route(index, out);
        let jitter = Duration::from_millis(self.rng.random_range(0..100));
        self.push(self.timing.join_retry + jitter, Event::RetryJoin(index));
        self.push(self.timing.info_refresh + jitter, Event::RefreshInfo(index));
        index
    }

    fn route(&mut self, from: usize, out: Output) {
        for (after, timer) in out.timers {
            self.push(after, Event::Timer { node: from, timer });
        }
        for (to, bytes) in out.sends {
            let Some(&target) = self.by_bus.get(&to) else {
                continue;
            };
            if self.rng.random_bool(self.loss) || self.across_cut(from, target) {
                continue;
            }
            let delay = Duration::from_millis(self.rng.random_range(1..=self.max_delay_ms));
            self.push(delay, Event::Packet { to, bytes });
        }
    }

    fn across_cut(&self, a: usize, b: usize) -> bool {
        self.cut
            .as_ref()
            .is_some_and(|cut| cut.contains(&a) != cut.contains(&b))
    }

    /// Kills a node without a word (SIGKILL): its timers and packets vanish.
    fn kill(&mut self, index: usize) {
        self.nodes[index] = None;
    }

    /// Leaves gracefully, then stops.
    fn leave(&mut self, index: usize) {
        let mut out = Output::default();
        if let Some(core) = self.nodes[index].as_mut() {
            core.set_state(NodeState::Draining, &mut out);
            core.leave(&mut out);
        }
        self.route(index, out);
        self.nodes[index] = None;
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.queue.pop() else {
            return false;
        };
        self.now = at;
        let Some(event) = self.events.remove(&seq) else {
            return true;
        };
        let (node, again) = match &event {
            Event::Packet { to, .. } => (self.by_bus[to], None),
            Event::Timer { node, .. } => (*node, None),
            Event::RetryJoin(node) => (
                *node,
                Some((self.timing.join_retry, Event::RetryJoin(*node))),
            ),
            Event::RefreshInfo(node) => (
                *node,
                Some((self.timing.info_refresh, Event::RefreshInfo(*node))),
            ),
        };
        if let Some(&until) = self.stalled_until.get(&node)
            && until > self.now
        {
            // Runs when the node runs again.
            let wait = until - self.now;
            self.push(wait, event);
            return true;
        }
        let Some(core) = self.nodes[node].as_mut() else {
            return true;
        };
        let mut out = Output::default();
        match event {
            Event::Packet { bytes, .. } => core.handle_packet(&bytes, &mut out),
            Event::Timer { timer, .. } => core.handle_timer(timer, &mut out),
            Event::RetryJoin(_) => core.retry_join(&mut out),
            Event::RefreshInfo(_) => core.refresh_info(&mut out),
        }
        self.route(node, out);
        if let Some((period, duty)) = again {
            self.push(period, duty);
        }
        true
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// True when every node in `group` sees exactly `group`, is routable, and all
    /// build the same table.
    fn agree(&self, group: &[usize]) -> bool {
        let expected: BTreeSet<NodeId> = group
            .iter()
            .map(|&i| self.nodes[i].as_ref().expect("live").identity().id)
            .collect();
        let mut version = None;
        for &i in group {
            let view = self.nodes[i].as_ref().expect("live").view();
            let seen: BTreeSet<NodeId> = view.nodes.iter().map(|n| n.id).collect();
            if seen != expected || view.state != ClusterState::Ok {
                return false;
            }
            if *version.get_or_insert(view.table.version()) != view.table.version() {
                return false;
            }
        }
        true
    }

    /// Runs until `group` agrees or `limit` of virtual time passes; the time it took.
    fn run_until_agreed(&mut self, group: &[usize], limit: Duration) -> Option<Duration> {
        let start = self.now;
        let deadline = self.now + limit;
        // Check every 50 ms of virtual time: a view build per event would dominate.
        let mut next_check = self.now;
        while self.now < deadline {
            if self.now >= next_check {
                if self.agree(group) {
                    return Some(self.now - start);
                }
                next_check = self.now + Duration::from_millis(50);
            }
            if !self.step() {
                break;
            }
        }
        self.agree(group).then(|| self.now - start)
    }

    fn run_for(&mut self, span: Duration) {
        let deadline = self.now + span;
        while self.now < deadline && self.step() {}
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("RINGKV_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("RINGKV_SIM_SEED is a u64")],
        Err(_) => vec![1, 2, 3, 0xC0FFEE, 20261122],
    }
}

fn check(seed: u64, what: &str, took: Option<Duration>, limit: Duration) {
    eprintln!("seed {seed}: {what} agreed after {took:?}");
    assert!(
        took.is_some(),
        "{what} did not converge within {limit:?} (replay: RINGKV_SIM_SEED={seed} cargo test -p ringkv-cluster --test simulation)"
    );
}

#[test]
fn views_converge_after_joins_kills_and_leaves() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 0.05, 20);
        let first = sim.add(seed, &[]);
        for _ in 1..8 {
            sim.add(seed, &[first]);
        }
        let limit = Duration::from_secs(15);
        let group = sim.live();
        check(
            seed,
            "8 joining nodes",
            sim.run_until_agreed(&group, limit),
            limit,
        );

        // Churn: two die without a word, one leaves gracefully, two join through
        // whichever live node the seed picks.
        let victims = [2usize, 5];
        for &victim in &victims {
            sim.kill(victim);
        }
        sim.leave(7);
        for _ in 0..2 {
            let live = sim.live();
            let through = live[sim.rng.random_range(0..live.len())];
            sim.add(seed, &[through]);
        }
        let limit = Duration::from_secs(30);
        let group = sim.live();
        assert_eq!(group.len(), 7);
        check(seed, "churn", sim.run_until_agreed(&group, limit), limit);
        let view = sim.nodes[group[0]].as_ref().unwrap().view();
        for gone in [2usize, 5, 7] {
            assert!(
                view.node(&node_id(seed, gone)).is_none(),
                "seed {seed}: node {gone} is still in the view"
            );
        }
    }
}

#[test]
fn a_partition_heals() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 0.02, 15);
        let first = sim.add(seed, &[]);
        for _ in 1..6 {
            sim.add(seed, &[first]);
        }
        let limit = Duration::from_secs(15);
        let all = sim.live();
        check(seed, "6 nodes", sim.run_until_agreed(&all, limit), limit);

        // Cut {3,4,5} off; each side settles on its own half.
        sim.cut = Some([3usize, 4, 5].into_iter().collect());
        let limit = Duration::from_secs(20);
        check(
            seed,
            "the majority side",
            sim.run_until_agreed(&[0, 1, 2], limit),
            limit,
        );
        check(
            seed,
            "the minority side",
            sim.run_until_agreed(&[3, 4, 5], limit),
            limit,
        );
        sim.run_for(Duration::from_secs(2));

        // Heal: everyone finds everyone again.
        sim.cut = None;
        let limit = Duration::from_secs(40);
        check(
            seed,
            "the healed cluster",
            sim.run_until_agreed(&all, limit),
            limit,
        );
    }
}

/// A member whose runtime stalls for 400 ms (its probe answered late, so it is suspected)
/// refutes the suspicion once it runs again and is never declared down: foca 2.0 sends
/// TurnUndead when the suspicion's timer fires even after the refutation, and the member
/// then rejoined under a new identity and relearned its slots from copies that were behind.
#[test]
fn a_member_that_stalls_briefly_refutes_its_suspicion_and_is_not_declared_down() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 0.0, 2);
        let first = sim.add(seed, &[]);
        let second = sim.add(seed, &[first]);
        let limit = Duration::from_secs(10);
        check(
            seed,
            "2 nodes",
            sim.run_until_agreed(&[first, second], limit),
            limit,
        );
        sim.run_for(Duration::from_secs(1));
        for _ in 0..5 {
            let before = sim.nodes[second].as_ref().expect("live").identity().bump;
            sim.stalled_until
                .insert(second, sim.now + Duration::from_millis(400));
            sim.run_for(Duration::from_secs(3));
            let after = sim.nodes[second].as_ref().expect("live").identity().bump;
            assert_eq!(
                before, after,
                "seed {seed}: the stalled member was declared down and rejoined"
            );
            let limit = Duration::from_secs(1);
            check(
                seed,
                "after a stall",
                sim.run_until_agreed(&[first, second], limit),
                limit,
            );
        }
    }
}

#[test]
fn a_wrong_secret_never_joins_and_is_counted() {
    let seed = seeds()[0];
    let mut sim = Sim::new(seed, 0.0, 5);
    let first = sim.add(seed, &[]);
    sim.add(seed, &[first]);
    sim.secret = Some("not-the-secret".into());
    let intruder = sim.add(seed, &[first]);
    sim.run_for(Duration::from_secs(5));
    assert!(sim.agree(&[0, 1]), "the two real members agree");
    let view = sim.nodes[first].as_ref().unwrap().view();
    assert!(view.node(&node_id(seed, intruder)).is_none());
    assert!(sim.nodes[first].as_ref().unwrap().stats().bad_mac > 0);
    let intruder_view = sim.nodes[intruder].as_ref().unwrap().view();
    assert_eq!(intruder_view.nodes.len(), 1);
    assert_eq!(intruder_view.state, ClusterState::Forming);
}
