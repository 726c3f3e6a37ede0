//! What handoffs moved and what is still to move, for `CLUSTER INFO`, `INFO cluster` and
//! `ringkv cluster status|rebalance`: slots taken over and handed over, the keys and bytes
//! their copies carried, the slots still pending and an estimate of when they are done.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use parking_lot::Mutex;

/// Handoff counters over the node's life, and the current wave's start.
#[derive(Debug, Default)]
pub struct HandoffStats {
    /// Slots this node took over (learned, or fenced from their previous primary).
    pub slots_in: AtomicU64,
    /// Slots this node handed to their new primary (it acknowledged the fence).
    pub slots_out: AtomicU64,
    /// Keys copied here by snapshots of slots this node is taking over.
    pub keys_in: AtomicU64,
    /// Bytes of snapshot and log frames received for slots this node is taking over.
    pub bytes_in: AtomicU64,
    /// Keys this node copied to members taking its slots over.
    pub keys_out: AtomicU64,
    /// Bytes of snapshot and log frames sent to members taking its slots over.
    pub bytes_out: AtomicU64,
    /// Slots whose keys this node dropped: the table moved them away and their new
    /// owners all said they settled under it.
    pub slots_dropped: AtomicU64,
    /// Keys dropped with them.
    pub keys_dropped: AtomicU64,
    /// Slots this node does not own that still hold keys here, as the last pass found
    /// them (their new owners have not all settled yet).
    pub slots_left_over: AtomicU64,
    /// When slots started pending, and the slots moved by then: the rate behind the ETA.
    wave: Mutex<Option<(Instant, u64)>>,
}

/// One moment's handoff state of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Slots the target table gives this node that it does not serve yet.
    pub slots_in: usize,
    /// Slots this node serves (or served) that the target table gives another member and
    /// that member has not taken yet.
    pub slots_out: usize,
}

impl HandoffStats {
    fn moved(&self) -> u64 {
        self.slots_in.load(Relaxed) + self.slots_out.load(Relaxed)
    }

    /// Milliseconds until `pending` is done at the rate slots moved since they started
    /// pending; `None` while nothing pends or nothing moved yet to judge by.
    fn eta_ms(&self, pending: Pending) -> Option<u64> {
        let left = (pending.slots_in + pending.slots_out) as u64;
        let mut wave = self.wave.lock();
        if left == 0 {
            *wave = None;
            return None;
        }
        let (started, moved_then) = *wave.get_or_insert_with(|| (Instant::now(), self.moved()));
        let moved = self.moved().saturating_sub(moved_then);
        (moved > 0).then(|| {
            let elapsed = started.elapsed().as_millis() as u64;
            elapsed.saturating_mul(left) / moved
        })
    }

    /// The counters as `<prefix><name>:<value>` lines (`eta_ms` is -1 when unknown).
    pub fn write(&self, out: &mut String, prefix: &str, pending: Pending) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "{prefix}slots_pending_in:{}\r\n{prefix}slots_pending_out:{}\r\n",
            pending.slots_in, pending.slots_out
        );
        for (name, counter) in [
            ("slots_in", &self.slots_in),
            ("slots_out", &self.slots_out),
            ("keys_in", &self.keys_in),
            ("bytes_in", &self.bytes_in),
            ("keys_out", &self.keys_out),
            ("bytes_out", &self.bytes_out),
            ("slots_dropped", &self.slots_dropped),
            ("keys_dropped", &self.keys_dropped),
            ("slots_left_over", &self.slots_left_over),
        ] {
            let _ = write!(out, "{prefix}{name}:{}\r\n", counter.load(Relaxed));
        }
        let eta = self.eta_ms(pending).map_or(-1, |ms| ms as i64);
        let _ = write!(out, "{prefix}eta_ms:{eta}\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_follows_the_rate_slots_moved_at_since_they_started_pending() {
        let stats = HandoffStats::default();
        let none = Pending {
            slots_in: 0,
            slots_out: 0,
        };
        assert_eq!(stats.eta_ms(none), None);
        let ten = Pending {
            slots_in: 10,
            slots_out: 0,
        };
        // Nothing moved yet: no rate to judge by.
        assert_eq!(stats.eta_ms(ten), None);
        std::thread::sleep(std::time::Duration::from_millis(50));
        stats.slots_in.fetch_add(10, Relaxed);
        // 10 slots in ≥50 ms, 10 left: about as long again.
        let eta = stats.eta_ms(ten).unwrap();
        assert!((50..5_000).contains(&eta), "{eta}");
        // Done: the wave ends, and the next one starts its own clock.
        assert_eq!(stats.eta_ms(none), None);
        assert_eq!(stats.eta_ms(ten), None);
    }
}
