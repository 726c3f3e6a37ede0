//! How long commands waited at this member for a handoff's fence (`Verdict::Hold`): the
//! write hold a client sees when its slot cuts over here, for `CLUSTER INFO`.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

/// The holds remembered for the percentile: the latest ones, so memory stays bounded.
const REMEMBERED: usize = 8192;

/// Hold durations: a count and maximum over the node's life, a p99 over the latest ones.
#[derive(Debug, Default)]
pub struct HoldStats {
    inner: Mutex<Holds>,
}

#[derive(Debug, Default)]
struct Holds {
    count: u64,
    max_us: u64,
    recent_us: VecDeque<u64>,
}

impl HoldStats {
    /// A command that was held `held` is routed now.
    pub fn note(&self, held: Duration) {
        let us = held.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut holds = self.inner.lock();
        holds.count += 1;
        holds.max_us = holds.max_us.max(us);
        if holds.recent_us.len() == REMEMBERED {
            holds.recent_us.pop_front();
        }
        holds.recent_us.push_back(us);
    }

    /// (holds, p99 of the latest ones, max), in microseconds.
    pub fn summary(&self) -> (u64, u64, u64) {
        let (count, max_us, mut recent) = {
            let holds = self.inner.lock();
            let recent: Vec<u64> = holds.recent_us.iter().copied().collect();
            (holds.count, holds.max_us, recent)
        };
        recent.sort_unstable();
        let p99 = match recent.len() {
            0 => 0,
            n => recent[(n * 99).div_ceil(100) - 1],
        };
        (count, p99, max_us)
    }

    /// The figures as `<prefix>holds`, `<prefix>hold_p99_us` and `<prefix>hold_max_us`.
    pub fn write(&self, out: &mut String, prefix: &str) {
        use std::fmt::Write;
        let (count, p99, max) = self.summary();
        let _ = write!(
            out,
            "{prefix}holds:{count}\r\n{prefix}hold_p99_us:{p99}\r\n{prefix}hold_max_us:{max}\r\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_comes_from_the_latest_holds_and_the_max_from_all() {
        let stats = HoldStats::default();
        assert_eq!(stats.summary(), (0, 0, 0));
        stats.note(Duration::from_millis(900));
        for i in 0..REMEMBERED as u64 {
            stats.note(Duration::from_micros(1 + i % 100));
        }
        let (count, p99, max) = stats.summary();
        assert_eq!(count, REMEMBERED as u64 + 1);
        // The 900 ms hold fell out of the window: 99 % of 1..=100 µs are at most 99 µs.
        assert_eq!(p99, 99);
        assert_eq!(max, 900_000);
        let mut out = String::new();
        stats.write(&mut out, "x_");
        assert!(out.contains("x_hold_p99_us:99\r\n"), "{out}");
    }
}
