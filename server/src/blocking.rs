//! Clients blocked on keys (BLPOP and friends). A blocked client holds no lock: its
//! connection parks on a channel. A write that may have filled a key serves the key's
//! waiters itself, first come first served, once its command (or its EXEC) is done, so a
//! push inside MULTI wakes nobody before the commit, as in Redis.
//!
//! Registering and serving both run under the registry's lock, and a blocking command
//! tries its keys once more under it before registering; a push lands before that try (and
//! is taken) or after the registration (and serves the waiter): no wake-up is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use parking_lot::Mutex;
use ringkv_protocol::Protocol;
use tokio::sync::oneshot;

/// What a waiter does once one of its keys holds elements: its reply, or `None` when the
/// key cannot serve it (empty, or of another type).
pub type Serve = Box<dyn Fn(&[u8], Protocol) -> Option<ServeOutcome> + Send + Sync>;

/// A served waiter's reply and the keys its serving wrote to (BLMOVE's destination), whose
/// own waiters may now be served.
pub struct ServeOutcome {
    /// The encoded reply.
    pub reply: Vec<u8>,
    /// Keys the serving pushed to.
    pub touched: Vec<Vec<u8>>,
    /// The keyspace events the serving caused, in Redis's order.
    pub events: Vec<ServedEvent>,
}

/// A keyspace event of a serving (its pop, the key's deletion, BLMOVE's push), published by
/// whoever served once the registry's lock is let go.
pub struct ServedEvent {
    /// Its notification class.
    pub class: crate::notify::Class,
    /// The event's name.
    pub name: &'static str,
    /// The stored key.
    pub key: Vec<u8>,
}

impl ServedEvent {
    /// `name` on `key` when the notification flags want its class (nothing, and no
    /// allocation, while notifications are off, as they are by default).
    pub fn wanted(
        flags: &AtomicU32,
        class: crate::notify::Class,
        name: &'static str,
        key: &[u8],
    ) -> Option<ServedEvent> {
        crate::notify::wants(flags.load(Ordering::Relaxed), class).then(|| ServedEvent {
            class,
            name,
            key: key.to_vec(),
        })
    }

    /// A pop from `key`, then `del` when the pop emptied it (looked up only when wanted).
    pub fn popped(
        store: &ringkv_store::Store,
        flags: &AtomicU32,
        (class, name): (crate::notify::Class, &'static str),
        key: &[u8],
        now: u64,
    ) -> Vec<ServedEvent> {
        let generic = crate::notify::Class::GENERIC;
        let mut events: Vec<ServedEvent> = ServedEvent::wanted(flags, class, name, key)
            .into_iter()
            .collect();
        if let Some(del) = ServedEvent::wanted(flags, generic, "del", key)
            // A write's look-up: no hit or miss counted (Redis's served pop counts none).
            && !store.inspect(key, now, |entry| entry.is_some())
        {
            events.push(del);
        }
        events
    }
}

/// What a blocked command does with the key it is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// Pops (BLPOP, BZPOPMIN, …).
    Takes,
    /// Reads without taking (XREAD): when it cannot be served, the waiters after it on the
    /// key still may be.
    ReadsOnly,
    /// Pops and pushes elsewhere (BLMOVE, BRPOPLPUSH): two changes that must reach the
    /// change log as one group, so it is served with the store to itself.
    Moves,
}

/// One blocked client.
pub struct Waiter {
    /// The client (CLIENT UNBLOCK).
    pub client: u64,
    keys: Vec<Vec<u8>>,
    protocol: Protocol,
    serve: Serve,
    kind: WaitKind,
    /// The reply when the timeout passes (a null of the command's shape).
    timed_out: Vec<u8>,
    /// Taken by whoever answers the waiter: a serving write, CLIENT UNBLOCK or its timeout.
    reply: Mutex<Option<oneshot::Sender<Vec<u8>>>>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The registry of blocked clients, per key in arrival order.
#[derive(Default)]
pub struct Blocking {
    waiting: AtomicUsize,
    keys: Mutex<HashMap<Vec<u8>, VecDeque<Arc<Waiter>>>>,
}

impl std::fmt::Debug for Blocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocking")
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// A registered waiter: the channel its reply arrives on. Dropping it unregisters.
#[derive(Debug)]
pub struct Registration {
    blocking: Arc<Blocking>,
    waiter: Arc<Waiter>,
    /// The reply, once answered.
    pub reply: oneshot::Receiver<Vec<u8>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.blocking.unregister(&self.waiter);
    }
}

impl Registration {
    /// Gives up waiting (the timeout passed): the timeout's reply, or the answer that
    /// raced it.
    pub fn cancel(&mut self) -> Vec<u8> {
        self.blocking.unregister(&self.waiter);
        self.reply
            .try_recv()
            .unwrap_or_else(|_| self.waiter.timed_out.clone())
    }
}

impl Blocking {
    /// Clients blocked now (INFO's `blocked_clients`).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Runs `attempt` under the registry's lock; when it answers `None`, registers a
    /// waiter on `keys` that `serve` answers later.
    #[allow(clippy::too_many_arguments)]
    pub fn try_or_register<T>(
        self: &Arc<Self>,
        client: u64,
        keys: Vec<Vec<u8>>,
        protocol: Protocol,
        timed_out: Vec<u8>,
        attempt: impl FnOnce() -> Option<T>,
        serve: Serve,
        kind: WaitKind,
    ) -> Result<T, Registration> {
        let mut map = self.keys.lock();
        if let Some(done) = attempt() {
            return Ok(done);
        }
        let (sender, receiver) = oneshot::channel();
        let waiter = Arc::new(Waiter {
            client,
            keys,
            protocol,
            serve,
            kind,
            timed_out,
            reply: Mutex::new(Some(sender)),
        });
        for key in &waiter.keys {
            let queue = map.entry(key.clone()).or_default();
            // A key named twice (BLPOP k k 0) waits once.
            if !queue.back().is_some_and(|w| Arc::ptr_eq(w, &waiter)) {
                queue.push_back(waiter.clone());
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Err(Registration {
            blocking: self.clone(),
            waiter,
            reply: receiver,
        })
    }

    fn unregister(&self, waiter: &Arc<Waiter>) {
        let mut map = self.keys.lock();
        remove_waiter(&mut map, waiter, &self.waiting);
        waiter.reply.lock().take();
    }

    /// True when a waiter on one of `keys` moves what it is served ([`WaitKind::Moves`]):
    /// then serving needs the store to itself.
    pub fn moves_on(&self, keys: &[Vec<u8>]) -> bool {
        let map = self.keys.lock();
        keys.iter().any(|key| {
            map.get(key)
                .is_some_and(|queue| queue.iter().any(|w| w.kind == WaitKind::Moves))
        })
    }

    /// Serves the waiters of `ready` (keys a command wrote to) while their keys hold
    /// elements, first come first served; keys the serving itself fills are served next.
    /// The keyspace events of the servings, in order, for the caller to publish.
    pub fn serve(&self, ready: impl IntoIterator<Item = Vec<u8>>) -> Vec<ServedEvent> {
        let mut events = Vec::new();
        let mut pending: VecDeque<Vec<u8>> = ready.into_iter().collect();
        let mut map = self.keys.lock();
        // Bounded by the waiters: each turn of the inner loop removes one or passes one
        // over, and only a served one adds a key (its BLMOVE destination) to `pending`.
        while let Some(key) = pending.pop_front() {
            let mut passed = 0;
            while let Some(waiter) = map.get(&key).and_then(|q| q.get(passed)).cloned() {
                let mut reply_slot = waiter.reply.lock();
                if reply_slot.as_ref().is_none_or(|s| s.is_closed()) {
                    drop(reply_slot);
                    remove_waiter(&mut map, &waiter, &self.waiting);
                    continue;
                }
                let Some(outcome) = (waiter.serve)(&key, waiter.protocol) else {
                    if waiter.kind == WaitKind::ReadsOnly {
                        passed += 1;
                        continue;
                    }
                    break;
                };
                if let Some(sender) = reply_slot.take() {
                    let _ = sender.send(outcome.reply);
                }
                drop(reply_slot);
                remove_waiter(&mut map, &waiter, &self.waiting);
                pending.extend(outcome.touched);
                events.extend(outcome.events);
            }
        }
        events
    }

    /// Answers every client blocked on a key `reply_for` has a reply for (a key whose slot
    /// moved to another member: `-MOVED`), with that reply. How many were answered.
    pub fn answer_where(&self, reply_for: impl Fn(&[u8]) -> Option<Vec<u8>>) -> usize {
        let mut map = self.keys.lock();
        let answered: Vec<(Arc<Waiter>, Vec<u8>)> = map
            .iter()
            .filter_map(|(key, queue)| reply_for(key).map(|reply| (queue, reply)))
            .flat_map(|(queue, reply)| queue.iter().map(move |w| (w.clone(), reply.clone())))
            .collect();
        let mut count = 0;
        for (waiter, reply) in answered {
            if let Some(sender) = waiter.reply.lock().take() {
                count += usize::from(sender.send(reply).is_ok());
            }
            remove_waiter(&mut map, &waiter, &self.waiting);
        }
        count
    }

    /// Answers the blocked client `client` as its timeout would, or with `-UNBLOCKED`
    /// (CLIENT UNBLOCK); false when it is not blocked.
    pub fn unblock(&self, client: u64, error: bool) -> bool {
        let map = self.keys.lock();
        let Some(waiter) = map
            .values()
            .flat_map(|q| q.iter())
            .find(|w| w.client == client)
            .cloned()
        else {
            return false;
        };
        drop(map);
        let Some(sender) = waiter.reply.lock().take() else {
            return false;
        };
        let reply = if error {
            b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n".to_vec()
        } else {
            waiter.timed_out.clone()
        };
        sender.send(reply).is_ok()
    }
}

/// Takes a served or abandoned waiter out of every queue it is in.
fn remove_waiter(
    map: &mut HashMap<Vec<u8>, VecDeque<Arc<Waiter>>>,
    waiter: &Arc<Waiter>,
    waiting: &AtomicUsize,
) {
    let mut found = false;
    for key in &waiter.keys {
        if let Some(queue) = map.get_mut(key) {
            let before = queue.len();
            queue.retain(|w| !Arc::ptr_eq(w, waiter));
            found |= queue.len() != before;
            if queue.is_empty() {
                map.remove(key);
            }
        }
    }
    if found {
        waiting.fetch_sub(1, Ordering::Relaxed);
    }
}
