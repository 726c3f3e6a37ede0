//! The SCAN cursor: within a shard (or a hash), items are visited in the order of a hash
//! that stays fixed while they exist; the cursor is the next hash value to visit. Every
//! item present for a whole scan is returned at least once, whatever else is added or
//! removed meanwhile. Pure code.

/// Picks the window of a scan: of `items` (scan hash, item), those with hash ≥ `from`,
/// at least `count` of them when that many exist, ties at the boundary all included.
/// Returns the chosen items and the next position (`None` when this source is done).
pub fn scan_window<T>(
    items: impl Iterator<Item = (u64, T)>,
    from: u64,
    count: usize,
) -> (Vec<T>, Option<u64>) {
    let mut candidates: Vec<(u64, T)> = items.filter(|(h, _)| *h >= from).collect();
    let count = count.max(1);
    if candidates.len() <= count {
        return (candidates.into_iter().map(|(_, t)| t).collect(), None);
    }
    candidates.select_nth_unstable_by_key(count - 1, |(h, _)| *h);
    let boundary = candidates[count - 1].0;
    let chosen = candidates
        .into_iter()
        .filter(|(h, _)| *h <= boundary)
        .map(|(_, t)| t)
        .collect();
    (chosen, boundary.checked_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_full_scan_visits_every_item_exactly_once(hashes in proptest::collection::vec(0u64..64, 0..200), count in 1usize..20) {
            let items: Vec<(u64, usize)> = hashes.iter().copied().zip(0..).collect();
            let mut seen = vec![0; items.len()];
            let mut from = 0;
            loop {
                let (chosen, next) = scan_window(items.iter().copied(), from, count);
                for i in chosen { seen[i] += 1; }
                match next { Some(n) => from = n, None => break }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
