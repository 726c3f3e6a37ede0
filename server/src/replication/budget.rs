//! The budget every snapshot copy from this member shares (a replica's resync, a
//! learner's or a joiner's copy): a byte rate and a share of a core, so a transfer never
//! takes the node's network or CPU from its clients, and a number of copies sent at once.
//! The live stream is never paced: WAIT and failover depend on it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The longest one pause: a link still sends its heartbeats while paced.
const MOST_PAUSE: Duration = Duration::from_secs(10);

/// A member's transfer budget.
#[derive(Debug)]
pub struct TransferBudget {
    /// Bytes per second all copies share; 0: no limit.
    bytes_per_sec: u64,
    /// Share of one core a copy may use; 1: no limit.
    cpu_share: f64,
    /// When the bytes already granted are paid for.
    paid_until: Mutex<Option<Instant>>,
    /// Milliseconds copies were paused, for INFO.
    pub paced_ms: AtomicU64,
    /// How many copies may be sent at once.
    max_copies: usize,
    /// How many are being sent now.
    copies: AtomicUsize,
    /// Milliseconds copies waited for their turn, for INFO.
    pub queued_ms: AtomicU64,
}

/// A copy's turn: held while it is sent, given back when dropped.
#[derive(Debug)]
pub struct CopyTurn<'a> {
    copies: &'a AtomicUsize,
}

impl Drop for CopyTurn<'_> {
    fn drop(&mut self) {
        self.copies.fetch_sub(1, Relaxed);
    }
}

impl TransferBudget {
    /// A budget of `bytes_per_sec` (0: none), `cpu_share` of a core (1: none) and
    /// `max_copies` sent at once (at least 1).
    pub fn new(bytes_per_sec: u64, cpu_share: f64, max_copies: usize) -> TransferBudget {
        TransferBudget {
            bytes_per_sec,
            cpu_share: cpu_share.clamp(0.01, 1.0),
            paid_until: Mutex::new(None),
            paced_ms: AtomicU64::new(0),
            max_copies: max_copies.max(1),
            copies: AtomicUsize::new(0),
            queued_ms: AtomicU64::new(0),
        }
    }

    /// A turn to send a copy, if fewer than the limit are being sent; `None`: wait
    /// (the caller sleeps a slice, its heartbeats going on, and asks again).
    pub fn try_copy(&self) -> Option<CopyTurn<'_>> {
        self.copies
            .fetch_update(Relaxed, Relaxed, |running| {
                (running < self.max_copies).then_some(running + 1)
            })
            .ok()
            .map(|_| CopyTurn {
                copies: &self.copies,
            })
    }

    /// How many copies are being sent now.
    pub fn copies_running(&self) -> usize {
        self.copies.load(Relaxed)
    }

    /// How long a copy pauses after sending `bytes` it took `worked` to make, at `now`:
    /// long enough that its work is its share of a core, and that every copy's bytes so
    /// far fit the rate.
    pub fn pause(&self, bytes: usize, worked: Duration, now: Instant) -> Duration {
        let mut pause = if self.cpu_share < 1.0 {
            worked.mul_f64((1.0 - self.cpu_share) / self.cpu_share)
        } else {
            Duration::ZERO
        };
        if self.bytes_per_sec > 0 && bytes > 0 {
            let mut paid_until = self.paid_until.lock();
            let start = paid_until.map_or(now, |at| at.max(now));
            let end = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
            *paid_until = Some(end);
            pause = pause.max(end.saturating_duration_since(now));
        }
        let pause = pause.min(MOST_PAUSE);
        self.paced_ms.fetch_add(pause.as_millis() as u64, Relaxed);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_limits_nothing_pauses() {
        let budget = TransferBudget::new(0, 1.0, 1);
        let now = Instant::now();
        assert_eq!(
            budget.pause(1 << 30, Duration::from_secs(1), now),
            Duration::ZERO
        );
    }

    #[test]
    fn a_cpu_share_pauses_in_proportion_to_the_work() {
        let budget = TransferBudget::new(0, 0.25, 1);
        let pause = budget.pause(0, Duration::from_millis(10), Instant::now());
        assert_eq!(pause, Duration::from_millis(30), "10 ms of work in 40 ms");
    }

    #[test]
    fn every_copy_shares_one_rate() {
        let budget = TransferBudget::new(1 << 20, 1.0, 1);
        let now = Instant::now();
        // Two links send 1 MiB each at once: the second waits for the first's second.
        assert_eq!(
            budget.pause(1 << 20, Duration::ZERO, now),
            Duration::from_secs(1)
        );
        assert_eq!(
            budget.pause(1 << 20, Duration::ZERO, now),
            Duration::from_secs(2)
        );
        // Once the time is past, the rate starts over (no debt, no credit).
        let later = now + Duration::from_secs(5);
        assert_eq!(
            budget.pause(512 << 10, Duration::ZERO, later),
            Duration::from_millis(500)
        );
        assert_eq!(budget.paced_ms.load(Relaxed), 3_500);
    }

    #[test]
    fn copies_beyond_the_limit_wait_for_a_turn_given_back() {
        let budget = TransferBudget::new(0, 1.0, 2);
        let first = budget.try_copy().expect("a turn");
        let second = budget.try_copy().expect("a second turn");
        assert!(budget.try_copy().is_none(), "two at most");
        assert_eq!(budget.copies_running(), 2);
        drop(first);
        let third = budget.try_copy().expect("the turn given back");
        assert!(budget.try_copy().is_none());
        drop((second, third));
        assert_eq!(budget.copies_running(), 0);
    }

    #[test]
    fn a_pause_is_bounded() {
        let budget = TransferBudget::new(1, 0.01, 1);
        let pause = budget.pause(1 << 30, Duration::from_secs(60), Instant::now());
        assert_eq!(pause, MOST_PAUSE);
    }
}
