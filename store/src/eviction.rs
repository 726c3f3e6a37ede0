//! Eviction policy: Redis's policy names, its logarithmic LFU counter, and the candidate
//! pool that makes sampled eviction approximate true LRU/LFU closely. Pure code: time and
//! randomness are arguments.

use std::fmt;
use std::str::FromStr;

/// `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Refuse writes that need memory.
    #[default]
    NoEviction,
    /// Least recently used among all keys.
    AllKeysLru,
    /// Least recently used among keys with a TTL.
    VolatileLru,
    /// Least frequently used among all keys.
    AllKeysLfu,
    /// Least frequently used among keys with a TTL.
    VolatileLfu,
    /// Random among all keys.
    AllKeysRandom,
    /// Random among keys with a TTL.
    VolatileRandom,
    /// Nearest expiry first among keys with a TTL.
    VolatileTtl,
}

impl EvictionPolicy {
    /// Every policy, in Redis's order.
    pub const ALL: [EvictionPolicy; 8] = [
        EvictionPolicy::NoEviction,
        EvictionPolicy::AllKeysLru,
        EvictionPolicy::VolatileLru,
        EvictionPolicy::AllKeysLfu,
        EvictionPolicy::VolatileLfu,
        EvictionPolicy::AllKeysRandom,
        EvictionPolicy::VolatileRandom,
        EvictionPolicy::VolatileTtl,
    ];

    /// Redis's name.
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllKeysLru => "allkeys-lru",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::AllKeysLfu => "allkeys-lfu",
            EvictionPolicy::VolatileLfu => "volatile-lfu",
            EvictionPolicy::AllKeysRandom => "allkeys-random",
            EvictionPolicy::VolatileRandom => "volatile-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }

    /// True when only keys with a TTL may be evicted.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru
                | EvictionPolicy::VolatileLfu
                | EvictionPolicy::VolatileRandom
                | EvictionPolicy::VolatileTtl
        )
    }

    /// True for the LFU policies (OBJECT FREQ is only meaningful then).
    pub fn is_lfu(self) -> bool {
        matches!(
            self,
            EvictionPolicy::AllKeysLfu | EvictionPolicy::VolatileLfu
        )
    }

    pub(crate) fn to_u8(self) -> u8 {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0) as u8
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        Self::ALL.get(v as usize).copied().unwrap_or_default()
    }
}

impl fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not one of Redis's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown maxmemory policy '{0}'")]
pub struct UnknownPolicy(pub String);

impl FromStr for EvictionPolicy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// Redis's LFU: an 8-bit logarithmic counter that halves its growth as it rises and
/// decays by one every `decay_minutes` without access.
// Packed to 3 bytes so a keyspace entry's flags byte fits beside it in 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct LfuCounter {
    /// The logarithmic counter.
    pub counter: u8,
    /// Minutes (mod 65536) of the last decrement.
    pub minutes: u16,
}

/// Redis's initial counter, so a new key is not evicted before it has a chance.
pub const LFU_INIT_VAL: u8 = 5;

impl LfuCounter {
    /// A fresh counter at `now_minutes`.
    pub fn new(now_minutes: u16) -> Self {
        LfuCounter {
            counter: LFU_INIT_VAL,
            minutes: now_minutes,
        }
    }

    /// The counter after decay, without changing it.
    pub fn decayed(self, now_minutes: u16, decay_minutes: u32) -> u8 {
        if decay_minutes == 0 {
            return self.counter;
        }
        let elapsed = now_minutes.wrapping_sub(self.minutes) as u32;
        let periods = elapsed / decay_minutes;
        self.counter.saturating_sub(periods.min(255) as u8)
    }

    /// Records one access: decay, then a probabilistic increment (`random` in [0, 1)).
    pub fn touch(&mut self, now_minutes: u16, decay_minutes: u32, log_factor: u32, random: f64) {
        let counter = self.decayed(now_minutes, decay_minutes);
        let base = counter.saturating_sub(LFU_INIT_VAL) as f64;
        let p = 1.0 / (base * log_factor as f64 + 1.0);
        self.counter = if counter < 255 && random < p {
            counter + 1
        } else {
            counter
        };
        self.minutes = now_minutes;
    }
}

/// How many candidates the pool keeps (Redis's EVPOOL_SIZE).
pub const POOL_SIZE: usize = 16;

/// One eviction candidate: a higher score is a better victim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Idle time, inverted frequency or inverted TTL: higher evicts first.
    pub score: u64,
    /// The shard the key lives in.
    pub shard: usize,
    /// The key.
    pub key: Box<[u8]>,
}

/// The best candidates seen across sampling rounds, best last.
#[derive(Debug, Default)]
pub struct EvictionPool {
    candidates: Vec<Candidate>,
}

impl EvictionPool {
    /// Offers a sampled key; kept when the pool has room or it beats the worst kept.
    pub fn offer(&mut self, candidate: Candidate) {
        if let Some(existing) = self
            .candidates
            .iter_mut()
            .find(|c| c.shard == candidate.shard && c.key == candidate.key)
        {
            existing.score = candidate.score;
        } else if self.candidates.len() < POOL_SIZE {
            self.candidates.push(candidate);
        } else if self.candidates[0].score < candidate.score {
            self.candidates[0] = candidate;
        } else {
            return;
        }
        self.candidates.sort_by_key(|c| c.score);
    }

    /// Takes the best candidate.
    pub fn pop_best(&mut self) -> Option<Candidate> {
        self.candidates.pop()
    }

    /// Forgets every candidate (after FLUSHALL or a policy change).
    pub fn clear(&mut self) {
        self.candidates.clear();
    }

    /// Number of candidates held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.candidates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_redis_name() {
        for p in EvictionPolicy::ALL {
            assert_eq!(p.name().parse::<EvictionPolicy>().unwrap(), p);
            assert_eq!(EvictionPolicy::from_u8(p.to_u8()), p);
        }
        assert!("lru".parse::<EvictionPolicy>().is_err());
    }

    #[test]
    fn lfu_counter_grows_logarithmically_and_decays() {
        let mut c = LfuCounter::new(0);
        let mut rng_state = 0u64;
        for _ in 0..100_000 {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (rng_state >> 11) as f64 / (1u64 << 53) as f64;
            c.touch(0, 1, 10, r);
        }
        // Redis's documented table: 100k hits at log factor 10 give a counter of about 142.
        assert!((120..=170).contains(&c.counter), "{}", c.counter);
        assert_eq!(c.decayed(10, 1), c.counter - 10);
        assert_eq!(LfuCounter::new(0).decayed(1000, 1), 0);
        assert_eq!(c.decayed(1000, 0), c.counter);
    }

    #[test]
    fn the_pool_keeps_the_best_candidates() {
        let mut pool = EvictionPool::default();
        for score in 0..40u64 {
            pool.offer(Candidate {
                score,
                shard: 0,
                key: score.to_string().into_bytes().into(),
            });
        }
        assert_eq!(pool.len(), POOL_SIZE);
        assert_eq!(pool.pop_best().unwrap().score, 39);
        assert_eq!(pool.pop_best().unwrap().score, 38);
    }
}
