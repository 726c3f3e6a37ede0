//! When to reload a cached value: XFetch probabilistic early refresh and TTL policies
//! (fixed, adaptive, or the user's own). Pure arithmetic on milliseconds; no clock here.

/// XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh early when
/// `now − δ·β·ln(r) ≥ expiry`, with `δ` the last load's duration and `r` uniform in
/// (0, 1]. The chance grows as expiry nears and with slower loads, so on a hot key one
/// caller reloads shortly before expiry while the others keep reading the current value.
/// `unit_random` is uniform in [0, 1).
pub fn xfetch_due(
    now_ms: u64,
    expires_at_ms: u64,
    load_ms: u64,
    beta: f64,
    unit_random: f64,
) -> bool {
    if now_ms >= expires_at_ms {
        return true;
    }
    if beta <= 0.0 || load_ms == 0 {
        return false;
    }
    let r = 1.0 - unit_random.clamp(0.0, 1.0 - f64::EPSILON); // (0, 1]
    let early_ms = -(load_ms as f64) * beta * r.ln();
    now_ms as f64 + early_ms >= expires_at_ms as f64
}

/// What a TTL policy knows when a value has just been loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOutcome {
    /// The TTL the previous value had, if the key was loaded before.
    pub previous_ttl_ms: Option<u64>,
    /// Reads the previous value served.
    pub reads: u64,
    /// Whether the new value differs from the previous one (`None` on a first load).
    pub changed: Option<bool>,
}

/// Chooses the TTL of a freshly loaded value; the shape of moka's `Expiry`. Return
/// `None` for no expiry.
pub trait TtlPolicy: Send + Sync + std::fmt::Debug {
    /// The TTL for a value just loaded.
    fn ttl_after_load(&self, outcome: &LoadOutcome) -> Option<u64>;
}

/// The same TTL for every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedTtl(pub u64);

impl TtlPolicy for FixedTtl {
    fn ttl_after_load(&self, _: &LoadOutcome) -> Option<u64> {
        Some(self.0)
    }
}

/// Lengthens the TTL of keys that are read often and come back unchanged, shortens it
/// for keys whose value changed, and leaves rarely read keys at the base TTL; always
/// within `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveTtl {
    /// TTL of a first load and of keys read fewer than `hot_reads` times.
    pub base_ms: u64,
    /// Lower bound.
    pub min_ms: u64,
    /// Upper bound.
    pub max_ms: u64,
    /// Factor applied to an unchanged hot key's TTL (> 1).
    pub grow: f64,
    /// Factor applied to a changed key's TTL (< 1).
    pub shrink: f64,
    /// Reads of the previous value that make a key hot.
    pub hot_reads: u64,
}

impl AdaptiveTtl {
    /// A policy with the given bounds: ×1.5 for a stable hot key, ×0.25 for a changed one,
    /// hot from 2 reads. Growing gently and shrinking hard was the best trade-off in the
    /// simulation (`cargo bench --bench adaptive_ttl`): a wrong long TTL costs stale reads
    /// on every hit, a wrong short one only an extra load.
    pub fn new(base_ms: u64, min_ms: u64, max_ms: u64) -> Self {
        let min_ms = min_ms.max(1);
        let max_ms = max_ms.max(min_ms);
        AdaptiveTtl {
            base_ms: base_ms.clamp(min_ms, max_ms),
            min_ms,
            max_ms,
            grow: 1.5,
            shrink: 0.25,
            hot_reads: 2,
        }
    }

    fn bounded(&self, ttl: f64) -> u64 {
        (ttl.round() as u64).clamp(self.min_ms, self.max_ms)
    }
}

impl TtlPolicy for AdaptiveTtl {
    fn ttl_after_load(&self, outcome: &LoadOutcome) -> Option<u64> {
        let previous = outcome.previous_ttl_ms.unwrap_or(self.base_ms) as f64;
        Some(match outcome.changed {
            None => self.base_ms,
            Some(true) => self.bounded(previous * self.shrink),
            Some(false) if outcome.reads >= self.hot_reads => self.bounded(previous * self.grow),
            // A rarely read key gains nothing from a long TTL: back to the base.
            Some(false) => self.base_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfetch_never_refreshes_far_from_expiry_and_always_at_it() {
        // 10 ms loads, β = 1: an early refresh 1 s ahead needs r < e^-100.
        assert!(!xfetch_due(0, 1_000, 10, 1.0, 0.999));
        assert!(xfetch_due(1_000, 1_000, 10, 1.0, 0.0));
        assert!(
            !xfetch_due(999, 1_000, 0, 1.0, 0.999_999),
            "no history, no early refresh"
        );
        assert!(
            xfetch_due(999, 1_000, 10, 1.0, 0.5),
            "1 ms ahead, r=0.5: 6.9 ms early"
        );
    }

    #[test]
    fn xfetch_probability_rises_as_expiry_nears() {
        let share = |ahead: u64| {
            (0..1000)
                .filter(|i| xfetch_due(10_000 - ahead, 10_000, 100, 1.0, *i as f64 / 1000.0))
                .count()
        };
        // P(refresh) = e^(-ahead/(δβ)): 1 ms ahead ≈ 99%, 100 ms ≈ 37%, 500 ms ≈ 0.7%.
        assert!(share(1) > 980);
        assert!((330..410).contains(&share(100)), "{}", share(100));
        assert!(share(500) < 15);
    }

    #[test]
    fn adaptive_ttl_grows_for_stable_hot_keys_and_shrinks_for_changing_ones() {
        let policy = AdaptiveTtl::new(10_000, 1_000, 80_000);
        let first = LoadOutcome::default();
        assert_eq!(policy.ttl_after_load(&first), Some(10_000));
        let stable_hot = |ttl| LoadOutcome {
            previous_ttl_ms: Some(ttl),
            reads: 5,
            changed: Some(false),
        };
        assert_eq!(policy.ttl_after_load(&stable_hot(10_000)), Some(15_000));
        assert_eq!(
            policy.ttl_after_load(&stable_hot(60_000)),
            Some(80_000),
            "capped at max"
        );
        let changed = |ttl| LoadOutcome {
            previous_ttl_ms: Some(ttl),
            reads: 5,
            changed: Some(true),
        };
        assert_eq!(policy.ttl_after_load(&changed(10_000)), Some(2_500));
        assert_eq!(
            policy.ttl_after_load(&changed(3_000)),
            Some(1_000),
            "floored at min"
        );
        let cold = LoadOutcome {
            previous_ttl_ms: Some(40_000),
            reads: 1,
            changed: Some(false),
        };
        assert_eq!(
            policy.ttl_after_load(&cold),
            Some(10_000),
            "cold keys keep the base"
        );
    }
}
