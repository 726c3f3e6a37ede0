//! Loom models of the flight table: one leader per key, followers get the landed value or
//! take over from an orphaned flight, and the table is empty at the end. Run with
//! `RUSTFLAGS="--cfg ringkv_loom" cargo test -p ringkv-store --test loom_flight --release`.
#![cfg(ringkv_loom)]

use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use loom::thread;
use ringkv_store::flight::{Flights, Landing, Role};

/// Bounded preemptions keep the exhaustive search to seconds; every bug class we model
/// (a lost wake-up, a second leader, a flight left behind) needs at most two.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// A one-key cache in front of an origin, the way `ringkv::Cache::get_with` uses flights:
/// look in the cache, else join the flight; the leader stores before it lands.
struct Model {
    cached: Mutex<Option<u32>>,
    flights: Flights<u8, Result<u32, u8>>,
    loads: AtomicUsize,
    /// Attempts that give up (leader dropped) before one succeeds.
    failing_attempts: usize,
    /// Attempts that land an error (not cached) before one succeeds.
    erroring_attempts: usize,
}

impl Model {
    fn new(failing_attempts: usize, erroring_attempts: usize) -> Arc<Self> {
        Arc::new(Model {
            cached: Mutex::new(None),
            flights: Flights::new(),
            loads: AtomicUsize::new(0),
            failing_attempts,
            erroring_attempts,
        })
    }

    fn get(&self) -> Result<u32, u8> {
        loop {
            if let Some(v) = *self.cached.lock().unwrap() {
                return Ok(v);
            }
            match self.flights.join(&1) {
                Role::Leader(leader) => {
                    // Re-check under leadership: a previous leader may have stored and
                    // landed between our cache look-up and our join.
                    if let Some(v) = *self.cached.lock().unwrap() {
                        leader.land(Ok(v));
                        return Ok(v);
                    }
                    let attempt = self.loads.fetch_add(1, SeqCst);
                    if attempt < self.failing_attempts {
                        drop(leader); // the loader panicked or was cancelled
                        continue;
                    }
                    if attempt < self.failing_attempts + self.erroring_attempts {
                        leader.land(Err(9));
                        return Err(9);
                    }
                    *self.cached.lock().unwrap() = Some(42);
                    leader.land(Ok(42));
                    return Ok(42);
                }
                Role::Follower(follower) => match block_on(follower) {
                    Landing::Landed(result) => return result,
                    Landing::Orphaned => continue,
                },
            }
        }
    }
}

fn run_callers(model: &Arc<Model>, callers: usize) -> Vec<Result<u32, u8>> {
    let handles: Vec<_> = (0..callers)
        .map(|_| {
            let model = model.clone();
            thread::spawn(move || model.get())
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn one_load_and_everyone_gets_its_value() {
    model(|| {
        let model = Model::new(0, 0);
        let results = run_callers(&model, 3);
        assert_eq!(results, vec![Ok(42); 3]);
        assert_eq!(model.loads.load(SeqCst), 1, "exactly one load");
        assert!(model.flights.is_empty(), "no flight left behind");
    });
}

#[test]
fn an_orphaned_flight_is_taken_over_by_one_caller() {
    model(|| {
        let model = Model::new(1, 0);
        let results = run_callers(&model, 2);
        assert_eq!(results, vec![Ok(42); 2]);
        assert_eq!(
            model.loads.load(SeqCst),
            2,
            "one abandoned attempt, then exactly one successful load"
        );
        assert!(model.flights.is_empty());
    });
}

#[test]
fn an_error_reaches_its_followers_and_is_not_cached() {
    model(|| {
        let model = Model::new(0, 1);
        let results = run_callers(&model, 2);
        // Whoever shared the failed flight got its error; a caller that came after it
        // landed loaded again and succeeded. Never more than one load at a time.
        let loads = model.loads.load(SeqCst);
        let errors = results.iter().filter(|r| r.is_err()).count();
        assert!(errors >= 1, "the failed load's leader sees its error");
        assert_eq!(loads, 1 + usize::from(errors < 2));
        assert!(model.cached.lock().unwrap().is_none() || errors < 2);
        assert!(model.flights.is_empty());
    });
}
