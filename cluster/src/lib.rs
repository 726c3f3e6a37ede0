//! ringkv's cluster core: which members own a slot ([`ring`]; the key → slot rule lives in
//! the store, [`ringkv_store::slot`], and is re-exported here), and who the members are ([`membership`], SWIM gossip through foca).
//!
//! The ring and the table are pure functions; membership is a pure core
//! ([`membership::Core`]) driven either by a tokio task over UDP or by the deterministic
//! simulation in the tests.

pub mod bus;
pub mod holdings;
pub mod link;
pub mod membership;
pub mod ring;

pub use bus::Bus;
pub use membership::{ClusterState, ClusterView, NodeState, NodeView};
pub use ring::{NodeId, RingConfig, RingMember, SlotMove, SlotTable, diff};
pub use ringkv_store::slot::{SLOT_COUNT, hash_tag, key_slot};
