//! Where the embedded cache reads the time: the system clock normally, a [`MockClock`] in
//! tests and simulations so TTLs can be exercised without sleeping.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A millisecond clock. It should not go backwards by much; expiry compares its readings.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since an arbitrary, fixed origin.
    fn now_ms(&self) -> u64;
}

/// Monotonic time since the clock was created, read from the CPU's time-stamp counter
/// where it is reliable (quanta falls back to the OS clock where it is not): every cache
/// lookup reads it.
#[derive(Debug, Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin: u64,
}

impl Default for SystemClock {
    fn default() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        SystemClock { clock, origin }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw()) / 1_000_000
    }
}

/// A clock that moves only when told to.
///
/// ```
/// use std::time::Duration;
/// use ringkv::{Clock, MockClock};
///
/// let clock = MockClock::default();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 2_000);
/// ```
#[derive(Debug, Default)]
pub struct MockClock {
    now_ms: AtomicU64,
}

impl MockClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now_ms.fetch_add(by.as_millis() as u64, Relaxed);
    }

    /// Sets the clock.
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Relaxed);
    }
}

impl Clock for MockClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Relaxed)
    }
}
