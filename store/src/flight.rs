//! Singleflight: at most one load per key in flight. The first caller for a key becomes
//! the [`Leader`] and runs the load; everyone else gets a [`Follower`], a future that
//! resolves when the leader lands its result. A leader dropped without landing (its loader
//! panicked or its future was cancelled) orphans the flight: every follower resolves to
//! [`Landing::Orphaned`] and joins again, so exactly one of them leads the next attempt.
//!
//! No runtime here: followers are plain futures woken through their `Waker`, so this runs
//! under tokio, any executor, and loom (see `tests/loom_flight.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex, lock};

/// How a follower's wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing<V> {
    /// The leader landed this result.
    Landed(V),
    /// The leader gave up (dropped, panicked, cancelled, abandoned): join again.
    Orphaned,
}

#[derive(Debug)]
enum State<V> {
    InFlight {
        /// One slot per follower; a follower that is dropped clears its slot.
        waiters: Vec<Option<Waker>>,
    },
    Landed(V),
    Orphaned,
}

/// One load in flight, shared by its leader and followers; clones are handles to the same
/// flight.
#[derive(Debug)]
pub struct Flight<V> {
    state: Arc<Mutex<State<V>>>,
}

impl<V> Clone for Flight<V> {
    fn clone(&self) -> Self {
        Flight {
            state: self.state.clone(),
        }
    }
}

impl<V: Clone> Default for Flight<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> Flight<V> {
    /// A new flight, in the air.
    pub fn new() -> Self {
        Flight {
            state: Arc::new(Mutex::new(State::InFlight {
                waiters: Vec::new(),
            })),
        }
    }

    /// True when both handles name the same flight.
    pub fn same(&self, other: &Flight<V>) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// A future that resolves when this flight lands or is orphaned.
    pub fn wait(&self) -> Follower<V> {
        Follower {
            flight: self.clone(),
            slot: None,
        }
    }

    /// Lands `value`: every follower, current and future, resolves to it. Returns false
    /// (and changes nothing) when the flight already ended.
    pub fn land(&self, value: V) -> bool {
        self.end(State::Landed(value))
    }

    /// Orphans the flight: every follower resolves to [`Landing::Orphaned`]. Returns false
    /// when the flight already ended.
    pub fn orphan(&self) -> bool {
        self.end(State::Orphaned)
    }

    /// Followers currently registered (tests and statistics).
    pub fn waiting(&self) -> usize {
        match &*lock(&self.state) {
            State::InFlight { waiters } => waiters.iter().filter(|w| w.is_some()).count(),
            _ => 0,
        }
    }

    fn end(&self, end: State<V>) -> bool {
        let waiters = {
            let mut state = lock(&self.state);
            match &mut *state {
                State::InFlight { waiters } => {
                    let waiters = std::mem::take(waiters);
                    *state = end;
                    waiters
                }
                _ => return false,
            }
        };
        // Wake outside the lock: a woken task may poll at once on another thread.
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
        true
    }
}

/// Waits for a flight (see [`Flight::wait`]). Dropping it unregisters the waiter.
#[derive(Debug)]
#[must_use = "a follower does nothing unless awaited"]
pub struct Follower<V> {
    flight: Flight<V>,
    slot: Option<usize>,
}

impl<V: Clone> Future for Follower<V> {
    type Output = Landing<V>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Landing<V>> {
        let this = self.get_mut();
        let mut state = lock(&this.flight.state);
        match &mut *state {
            State::Landed(value) => Poll::Ready(Landing::Landed(value.clone())),
            State::Orphaned => Poll::Ready(Landing::Orphaned),
            State::InFlight { waiters } => {
                match this.slot {
                    Some(slot) => waiters[slot] = Some(cx.waker().clone()),
                    None => {
                        this.slot = Some(waiters.len());
                        waiters.push(Some(cx.waker().clone()));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<V> Drop for Follower<V> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            if let State::InFlight { waiters } = &mut *lock(&self.flight.state) {
                waiters[slot] = None;
            }
        }
    }
}

/// The table of flights by key.
#[derive(Debug)]
pub struct Flights<K, V> {
    table: Mutex<HashMap<K, Flight<V>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            table: Mutex::new(HashMap::new()),
        }
    }
}

/// What [`Flights::join`] made of the caller.
#[derive(Debug)]
pub enum Role<'a, K: Hash + Eq + Clone, V: Clone> {
    /// Run the load, then [`Leader::land`] its result.
    Leader(Leader<'a, K, V>),
    /// Another caller is loading: await this.
    Follower(Follower<V>),
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the flight for `key`, starting one (and leading it) when none is in the air.
    pub fn join(&self, key: &K) -> Role<'_, K, V> {
        let mut table = lock(&self.table);
        if let Some(flight) = table.get(key) {
            return Role::Follower(flight.wait());
        }
        let flight = Flight::new();
        table.insert(key.clone(), flight.clone());
        Role::Leader(Leader {
            flights: self,
            key: key.clone(),
            flight,
            landed: false,
        })
    }

    /// Flights in the air.
    pub fn len(&self) -> usize {
        lock(&self.table).len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, key: &K, flight: &Flight<V>) {
        let mut table = lock(&self.table);
        if table.get(key).is_some_and(|f| f.same(flight)) {
            table.remove(key);
        }
    }
}

/// The duty to load one key. Land the result with [`Leader::land`]; dropping the leader
/// instead orphans the flight so a follower takes over.
#[derive(Debug)]
pub struct Leader<'a, K: Hash + Eq + Clone, V: Clone> {
    flights: &'a Flights<K, V>,
    key: K,
    flight: Flight<V>,
    landed: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Leader<'_, K, V> {
    /// Lands the result: the flight leaves the table first, so a caller arriving after
    /// this returns finds whatever the leader stored before landing, not a stale flight.
    pub fn land(mut self, value: V) {
        self.landed = true;
        self.flights.remove(&self.key, &self.flight);
        self.flight.land(value);
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        if !self.landed {
            self.flights.remove(&self.key, &self.flight);
            self.flight.orphan();
        }
    }
}

#[cfg(all(test, not(ringkv_loom)))]
mod tests {
    use super::*;
    use std::task::Wake;

    struct CountWakes(std::sync::atomic::AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll_once<V: Clone>(f: &mut Follower<V>, waker: &Waker) -> Poll<Landing<V>> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn one_leader_and_every_follower_gets_its_value() {
        let flights: Flights<&str, u32> = Flights::new();
        let Role::Leader(leader) = flights.join(&"k") else {
            panic!("first caller must lead")
        };
        let counter = std::sync::Arc::new(CountWakes(0.into()));
        let waker = Waker::from(counter.clone());
        let mut followers: Vec<_> = (0..3)
            .map(|_| match flights.join(&"k") {
                Role::Follower(f) => f,
                Role::Leader(_) => panic!("second caller must follow"),
            })
            .collect();
        for f in &mut followers {
            assert!(poll_once(f, &waker).is_pending());
        }
        leader.land(7);
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 3);
        for f in &mut followers {
            assert_eq!(poll_once(f, &waker), Poll::Ready(Landing::Landed(7)));
        }
        assert!(flights.is_empty());
    }

    #[test]
    fn dropped_leader_orphans_and_next_join_leads() {
        let flights: Flights<&str, u32> = Flights::new();
        let leader = flights.join(&"k");
        let Role::Follower(mut follower) = flights.join(&"k") else {
            panic!("must follow")
        };
        drop(leader);
        let waker = Waker::noop();
        assert_eq!(
            poll_once(&mut follower, waker),
            Poll::Ready(Landing::Orphaned)
        );
        assert!(matches!(flights.join(&"k"), Role::Leader(_)));
        assert!(
            flights.is_empty(),
            "the dropped second leader cleaned up too"
        );
    }

    #[test]
    fn dropped_follower_leaves_no_waker_behind() {
        let flight: Flight<u8> = Flight::new();
        let mut follower = flight.wait();
        assert!(poll_once(&mut follower, Waker::noop()).is_pending());
        assert_eq!(flight.waiting(), 1);
        drop(follower);
        assert_eq!(flight.waiting(), 0);
        assert!(flight.land(1));
        assert!(!flight.land(2), "a landed flight stays landed");
        assert!(!flight.orphan());
    }
}
