//! The measurement behind `DEFAULT_VNODES`: for N equal members, the slot balance
//! (busiest member's primary slots / mean) and how many primaries move when one member
//! joins, and how many of those moves do not involve the joining member.
//!
//! `cargo run --release -p ringkv-cluster --example balance -- 64,256,1024 5`
#![allow(clippy::print_stdout)]
use ringkv_cluster::{NodeId, RingConfig, RingMember, SLOT_COUNT, SlotTable};

fn member(seed: u64) -> RingMember {
    let mut id = [0u8; 20];
    for (i, chunk) in id.chunks_mut(8).enumerate() {
        let word = (seed.wrapping_add(i as u64 + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    RingMember {
        id: NodeId(id),
        weight: 1,
    }
}

fn main() {
    let vnodes_list: Vec<u32> = std::env::args()
        .nth(1)
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![ringkv_cluster::ring::DEFAULT_VNODES]);
    let trials: u64 = std::env::args()
        .nth(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or(5);
    for vnodes in vnodes_list {
        let config = RingConfig {
            vnodes,
            replicas: 1,
        };
        println!("vnodes {vnodes}");
        for n in [3usize, 4, 5, 8, 10, 16, 32, 48, 64] {
            let (mut worst, mut moved, mut stray) = (0.0f64, 0usize, 0usize);
            for trial in 0..trials {
                let mut members: Vec<RingMember> =
                    (0..n).map(|i| member(trial * 1000 + i as u64)).collect();
                let before = SlotTable::build(&members, config);
                worst = worst.max(before.balance());
                let joining = member(trial * 1000 + 999);
                members.push(joining);
                let after = SlotTable::build(&members, config);
                for slot in 0..SLOT_COUNT {
                    let (old, new) = (before.primary(slot), after.primary(slot));
                    if old != new {
                        moved += 1;
                        if new != Some(&joining.id) {
                            stray += 1;
                        }
                    }
                }
            }
            let total = f64::from(SLOT_COUNT) * trials as f64;
            println!(
                "  N={n:2}: balance {worst:.3}; join moves {:.2}% of primaries (ideal {:.2}%), {:.2}% not to the new member",
                100.0 * moved as f64 / total,
                100.0 / (n + 1) as f64,
                100.0 * stray as f64 / total
            );
        }
    }
}
