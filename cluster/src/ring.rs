//! The consistent-hash ring and the slot table it yields.
//!
//! Each member contributes `vnodes × weight` tokens, token *i* = xxh3-64 of (node id, i)
//! at a fixed seed. Slot *s* sits at the fixed point `(s + ½) · 2⁶⁴ / 16384`; its owners
//! are the first R distinct members clockwise from there. The table is a pure function
//! of the member set, so every node that sees the same members computes the same table
//! without a coordinator.
//!
//! Tokens alone cannot balance 16384 slots to within 5 % over 64 members: however many
//! tokens, a member's count keeps a noise of about √(16384/N) slots (±6 % at N = 64, so
//! the busiest of 64 sits near 1.16 × the mean). So the primary is chosen with
//! consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018):
//! walking clockwise, a member already holding ⌊1.05 × its share⌋ primary slots is
//! skipped. Slots are assigned in slot order, which keeps the table pure.

use std::fmt;
use std::str::FromStr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use ringkv_store::slot::SLOT_COUNT;
use ringkv_store::slot_set::SlotSet;

/// The seed of every ring hash. Changing it (or the hash) reshuffles a running cluster,
/// which the golden vectors in the tests forbid.
pub const RING_SEED: u64 = 0x7269_6e67_6b76_0001;

/// How far above its weighted share of slots a member may go (bounded loads).
pub const LOAD_SLACK: f64 = 0.05;

/// Tokens per unit of weight unless configured. Bounded loads guarantee the balance at
/// any count; the tokens decide how little moves. At 1024, a join moves within 0.1 % of
/// the ideal 1/(N+1) of the primaries, and under 0.2 % of slots move between other
/// members (`cargo run --release -p ringkv-cluster --example balance`).
pub const DEFAULT_VNODES: u32 = 1024;

/// A cluster member's identity: 20 random bytes, shown as 40 hex digits like a Redis
/// node id.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> Self {
        let mut bytes = [0u8; 20];
        for chunk in bytes.chunks_mut(8) {
            let word = rand::random::<u64>().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        NodeId(bytes)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 digits, as people abbreviate Redis node ids.
        write!(f, "{}", &self.to_string()[..8])
    }
}

/// A node id that is not 40 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("a node id is 40 hex digits")]
pub struct BadNodeId;

impl FromStr for NodeId {
    type Err = BadNodeId;

    fn from_str(text: &str) -> Result<Self, BadNodeId> {
        let text = text.trim();
        if text.len() != 40 || !text.is_ascii() {
            return Err(BadNodeId);
        }
        let mut bytes = [0u8; 20];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| BadNodeId)?;
        }
        Ok(NodeId(bytes))
    }
}

/// One member as the ring sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingMember {
    /// Its id.
    pub id: NodeId,
    /// Relative capacity: a member of weight 2 gets twice the tokens. 0 owns nothing.
    pub weight: u16,
}

/// How the table is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Tokens per unit of weight.
    pub vnodes: u32,
    /// Replicas per slot besides the primary (R = replicas + 1).
    pub replicas: u8,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            vnodes: DEFAULT_VNODES,
            replicas: 1,
        }
    }
}

/// The hash of token `index` of member `id`.
pub fn token(id: &NodeId, index: u32) -> u64 {
    let mut input = [0u8; 24];
    input[..20].copy_from_slice(&id.0);
    input[20..].copy_from_slice(&index.to_le_bytes());
    xxh3_64_with_seed(&input, RING_SEED)
}

/// Where slot `slot` sits on the ring: the middle of its 1/16384 arc.
pub fn slot_point(slot: u16) -> u64 {
    (u64::from(slot) << 50) | (1 << 49)
}

/// Owners of every slot: a pure function of the member set and the ring config.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotTable {
    /// Members with weight > 0, sorted by id.
    members: Vec<NodeId>,
    /// Owners per slot, `width` entries each: indices into `members`, primary first.
    owners: Vec<u16>,
    width: usize,
    version: u64,
    config: RingConfig,
}

impl fmt::Debug for SlotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotTable")
            .field("version", &format_args!("{:016x}", self.version))
            .field("members", &self.members)
            .field("owners_per_slot", &self.width)
            .finish()
    }
}

impl SlotTable {
    /// Builds the table. The order of `members` does not matter; a repeated id counts once.
    pub fn build(members: &[RingMember], config: RingConfig) -> SlotTable {
        let mut sorted: Vec<RingMember> =
            members.iter().filter(|m| m.weight > 0).copied().collect();
        sorted.sort_by_key(|m| m.id);
        sorted.dedup_by_key(|m| m.id);
        let ids: Vec<NodeId> = sorted.iter().map(|m| m.id).collect();
        let version = table_version(&sorted, config);
        let width = (usize::from(config.replicas) + 1).min(ids.len());
        if ids.is_empty() {
            return SlotTable {
                members: ids,
                owners: Vec::new(),
                width: 0,
                version,
                config,
            };
        }
        let mut tokens: Vec<(u64, u16)> = Vec::new();
        for (index, member) in sorted.iter().enumerate() {
            let count = config.vnodes.saturating_mul(u32::from(member.weight));
            tokens.extend((0..count).map(|i| (token(&member.id, i), index as u16)));
        }
        // Ties between tokens (astronomically rare) break by member order: still pure.
        tokens.sort_unstable();
        let capacities = capacities(&sorted);
        let mut load = vec![0usize; ids.len()];
        let mut owners = Vec::with_capacity(usize::from(SLOT_COUNT) * width);
        let mut at = 0usize;
        for slot in 0..SLOT_COUNT {
            let point = slot_point(slot);
            // Slot points only grow, so the first token at or after each one only moves on.
            while at < tokens.len() && tokens[at].0 < point {
                at += 1;
            }
            // Bounded loads: the primary is the first member clockwise still under its
            // capacity. The capacities sum to at least the slot count, so one is found.
            let mut step = 0;
            let primary = loop {
                let member = tokens[(at + step) % tokens.len()].1;
                if load[usize::from(member)] < capacities[usize::from(member)] {
                    break member;
                }
                step += 1;
            };
            load[usize::from(primary)] += 1;
            // Replicas: the next distinct members clockwise after the primary, so a lost
            // primary's slot tends to go to the member that already holds its copy.
            let start = owners.len();
            owners.push(primary);
            while owners.len() - start < width {
                step += 1;
                let member = tokens[(at + step) % tokens.len()].1;
                if !owners[start..].contains(&member) {
                    owners.push(member);
                }
            }
        }
        SlotTable {
            members: ids,
            owners,
            width,
            version,
            config,
        }
    }

    /// The members that own slots, sorted by id.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The config this table was built with.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// A hash of the member set and config: equal tables have equal versions.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The owners of `slot`, primary first; empty when the table has no members.
    pub fn owners(&self, slot: u16) -> impl ExactSizeIterator<Item = &NodeId> + '_ {
        let start = usize::from(slot) * self.width;
        self.owners[start..start + self.width]
            .iter()
            .map(|&i| &self.members[usize::from(i)])
    }

    /// The primary of `slot`.
    pub fn primary(&self, slot: u16) -> Option<&NodeId> {
        self.owners(slot).next()
    }

    /// True when `node` owns `slot` as a replica (an owner other than the primary).
    pub fn is_replica(&self, slot: u16, node: &NodeId) -> bool {
        self.owners(slot).skip(1).any(|owner| owner == node)
    }

    /// The slots `replica` holds a copy of, grouped by their primary, primaries in id
    /// order: what a member streams from each other member.
    pub fn replicated_by(&self, replica: &NodeId) -> Vec<(NodeId, SlotSet)> {
        let mut by_primary: Vec<(NodeId, SlotSet)> = Vec::new();
        for slot in 0..SLOT_COUNT {
            if !self.is_replica(slot, replica) {
                continue;
            }
            let primary = *self
                .primary(slot)
                .expect("a slot with a replica has a primary");
            match by_primary.iter_mut().find(|(id, _)| *id == primary) {
                Some((_, slots)) => slots.insert(slot),
                None => by_primary.push((primary, std::iter::once(slot).collect())),
            }
        }
        by_primary.sort_by_key(|(id, _)| *id);
        by_primary
    }

    /// How many slots each member is primary for, in `members()` order.
    pub fn primary_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.members.len()];
        if self.width > 0 {
            for slot in 0..usize::from(SLOT_COUNT) {
                counts[usize::from(self.owners[slot * self.width])] += 1;
            }
        }
        counts
    }

    /// Busiest member's primary slot count over the mean (1.0 is perfect balance).
    pub fn balance(&self) -> f64 {
        let counts = self.primary_counts();
        if counts.is_empty() {
            return 0.0;
        }
        let mean = f64::from(SLOT_COUNT) / counts.len() as f64;
        *counts.iter().max().unwrap_or(&0) as f64 / mean
    }

    /// Maximal runs of consecutive slots with the same owners, in slot order:
    /// `(first, last, owners)`. This is CLUSTER SLOTS's shape.
    pub fn ranges(&self) -> Vec<(u16, u16, Vec<NodeId>)> {
        let mut ranges: Vec<(u16, u16, Vec<NodeId>)> = Vec::new();
        if self.width == 0 {
            return ranges;
        }
        for slot in 0..SLOT_COUNT {
            let start = usize::from(slot) * self.width;
            let same = ranges.last().is_some_and(|(_, last, _)| {
                let prev = usize::from(*last) * self.width;
                self.owners[prev..prev + self.width] == self.owners[start..start + self.width]
            });
            if same {
                if let Some(last) = ranges.last_mut() {
                    last.1 = slot;
                }
            } else {
                ranges.push((slot, slot, self.owners(slot).copied().collect()));
            }
        }
        ranges
    }
}

/// The most primary slots each member may take: ⌊(1 + ε) × its weighted share⌋ with
/// ε = 0.05, never below its exact share rounded up (so the capacities always cover
/// every slot).
fn capacities(sorted: &[RingMember]) -> Vec<usize> {
    let total_weight: f64 = sorted.iter().map(|m| f64::from(m.weight)).sum();
    sorted
        .iter()
        .map(|m| {
            let share = f64::from(SLOT_COUNT) * f64::from(m.weight) / total_weight;
            ((share * (1.0 + LOAD_SLACK)).floor() as usize).max(share.ceil() as usize)
        })
        .collect()
}

fn table_version(sorted: &[RingMember], config: RingConfig) -> u64 {
    let mut input = Vec::with_capacity(sorted.len() * 22 + 5);
    input.extend_from_slice(&config.vnodes.to_le_bytes());
    input.push(config.replicas);
    for member in sorted {
        input.extend_from_slice(&member.id.0);
        input.extend_from_slice(&member.weight.to_le_bytes());
    }
    xxh3_64_with_seed(&input, RING_SEED)
}

/// What changed for one slot between two tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMove {
    /// The slot.
    pub slot: u16,
    /// Its owners before, primary first.
    pub from: Vec<NodeId>,
    /// Its owners after, primary first.
    pub to: Vec<NodeId>,
}

/// The slots whose owner lists differ between `old` and `new` (this drives handoff).
pub fn diff(old: &SlotTable, new: &SlotTable) -> Vec<SlotMove> {
    (0..SLOT_COUNT)
        .filter_map(|slot| {
            let from: Vec<NodeId> = old.owners(slot).copied().collect();
            let to: Vec<NodeId> = new.owners(slot).copied().collect();
            (from != to).then_some(SlotMove { slot, from, to })
        })
        .collect()
}
