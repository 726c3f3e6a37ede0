//! Client-side caching (`CLIENT TRACKING`): which clients may hold which keys, and the
//! invalidation messages that tell them a key changed, in Redis 7.0's forms.
//!
//! Default mode remembers the keys a tracking client read (the keys of its read-only
//! commands) in a table of key → clients, bounded by `tracking-table-max-keys` (a key
//! evicted from the table is invalidated); BCAST mode sends every change of a key under
//! the client's prefixes. The store tells of every modified key (writes, expiry,
//! eviction) through its `KeyEvents` hook; within a command the keys are collected and
//! invalidated once the command is done (a client's own invalidations follow its reply,
//! as in Redis), outside one at once. FLUSHALL and FLUSHDB send every tracking client a
//! null invalidation. A message goes to the client's own connection in RESP3, or to its
//! REDIRECT client: as a push in RESP3, as a `__redis__:invalidate` message in RESP2 when
//! that client subscribed to it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use ringkv_protocol::{Protocol, ReplyWriter};

use crate::node::{ClientHandle, Node};
use crate::pubsub::{Kind, Mailbox};

/// Redis's channel for RESP2 invalidations.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// A tracking client's settings (CLIENT TRACKING ON …).
#[derive(Debug, Clone)]
pub struct Tracker {
    pub handle: Arc<ClientHandle>,
    /// Where its messages go: another client's id, or none for its own connection.
    pub redirect: Option<u64>,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub prefixes: Vec<Box<[u8]>>,
    /// Its REDIRECT client was gone when a message was due.
    pub broken: bool,
}

#[derive(Default)]
struct State {
    /// Default mode: a key (as stored) → the clients that may hold it.
    keys: HashMap<Box<[u8]>, Vec<u64>>,
    clients: HashMap<u64, Tracker>,
}

/// The node's tracking.
#[derive(Default)]
pub struct Tracking {
    state: Mutex<State>,
    /// Some client tracks: the store's hook is asked about every modified key.
    active: Arc<AtomicBool>,
    max_keys: AtomicUsize,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking").finish_non_exhaustive()
    }
}

thread_local! {
    /// How deep this thread is in dispatch (a script's calls nest): keys modified meanwhile
    /// wait in `PENDING` until the outermost command is done.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static PENDING: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    /// Invalidations this thread's commands queued for other connections, and where each
    /// ends in its mailbox: the writer's reply waits for them ([`invalidations_out`]).
    static AWAITED: RefCell<Vec<(Arc<Mailbox>, u64)>> = const { RefCell::new(Vec::new()) };
}

/// How long a writer's reply waits for its invalidations to reach the sockets of the
/// clients that cached its keys.
const INVALIDATION_WAIT: Duration = Duration::from_millis(3);
/// Turns the waited-for connections get after [`INVALIDATION_WAIT`].
const LAST_TURNS: usize = 4;

/// The invalidations the commands just run on this thread queued for other connections.
pub fn take_awaited() -> Vec<(Arc<Mailbox>, u64)> {
    AWAITED.with(|awaited| std::mem::take(&mut *awaited.borrow_mut()))
}

/// Waits (bounded) until `awaited` invalidations reached their connections' sockets, so a
/// writer that hears OK knows every client cache holding the old value was told: Redis
/// writes both in one event-loop turn, where here the other connection's task would
/// otherwise run later, and under load a near cache served the old value for
/// milliseconds after the write was acknowledged. A connection that does not read is
/// waited for once, then not until it catches up; the wait also ends when this
/// connection has pushes of its own to write (two writers waiting for each other).
pub async fn invalidations_out(handle: &ClientHandle, awaited: Vec<(Arc<Mailbox>, u64)>) {
    if awaited.is_empty() {
        return;
    }
    let all_out = async {
        for (mailbox, end) in &awaited {
            mailbox.written_up_to(*end).await;
        }
    };
    let give_up = async {
        tokio::time::sleep(INVALIDATION_WAIT).await;
        // The thread may have been busy all along (a long script): the connections waited
        // for get a few turns of their own before they are judged not to read.
        for _ in 0..LAST_TURNS {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        biased;
        () = all_out => {}
        // Seen here, the wake is left for the connection's loop to act on.
        _ = handle.attention() => handle.wake(),
        () = give_up => {
            for (mailbox, end) in &awaited {
                mailbox.gave_up_at(*end);
            }
        }
    }
}

/// A key (as stored) and the clients that may hold it.
type Held = (Box<[u8]>, Vec<u64>);

/// One invalidation: keys (as clients name them), or none for "everything" (a flush).
enum Invalidated<'a> {
    Keys(&'a [&'a [u8]]),
    All,
}

impl Tracking {
    /// Tracking with Redis's `tracking-table-max-keys`.
    pub fn new(max_keys: usize) -> Tracking {
        let tracking = Tracking::default();
        tracking.max_keys.store(max_keys, Relaxed);
        tracking
    }

    /// Sets `tracking-table-max-keys` (0: no bound).
    pub fn set_max_keys(&self, max: usize) {
        self.max_keys.store(max, Relaxed);
    }

    /// Shared with the store's hook, which asks it before every modified key.
    pub fn active_flag(&self) -> Arc<AtomicBool> {
        self.active.clone()
    }

    /// CLIENT TRACKING ON: starts (or updates) tracking for `tracker.handle`.
    pub fn enable(&self, tracker: Tracker) {
        let mut state = self.state.lock();
        state.clients.insert(tracker.handle.id, tracker);
        self.active.store(true, Relaxed);
    }

    /// CLIENT TRACKING OFF, or the client left: forgets it (its table entries lapse).
    pub fn disable(&self, client: u64) {
        let mut state = self.state.lock();
        if state.clients.remove(&client).is_some() {
            state.keys.retain(|_, ids| {
                ids.retain(|id| *id != client);
                !ids.is_empty()
            });
        }
        if state.clients.is_empty() {
            self.active.store(false, Relaxed);
        }
    }

    /// The client's settings, if it tracks.
    pub fn tracker(&self, client: u64) -> Option<Tracker> {
        self.state.lock().clients.get(&client).cloned()
    }

    /// How many keys the table holds (INFO's `tracking_total_keys`).
    pub fn tracked_keys(&self) -> usize {
        self.state.lock().keys.len()
    }

    /// How many clients track (INFO's `tracking_clients`).
    pub fn tracking_clients(&self) -> usize {
        self.state.lock().clients.len()
    }

    /// Remembers that `client` read `keys` (stored names), evicting table entries past
    /// the bound (each one invalidated).
    pub fn remember(&self, node: &Node, client: u64, keys: impl Iterator<Item = Vec<u8>>) {
        let mut evicted = Vec::new();
        {
            let mut state = self.state.lock();
            for key in keys {
                let ids = state.keys.entry(key.into_boxed_slice()).or_default();
                if !ids.contains(&client) {
                    ids.push(client);
                }
            }
            let max = self.max_keys.load(Relaxed);
            while max > 0 && state.keys.len() > max {
                let Some(key) = state.keys.keys().next().cloned() else {
                    break;
                };
                let ids = state.keys.remove(&key).unwrap_or_default();
                evicted.push((key, ids));
            }
        }
        for (key, ids) in evicted {
            self.send_to(node, &ids, &key, 0);
        }
    }

    /// The store modified `key`: within a command it waits for the command's end, outside
    /// one it is invalidated now.
    pub fn touched(&self, node: &Node, key: &[u8]) {
        if DEPTH.with(Cell::get) > 0 {
            PENDING.with(|pending| pending.borrow_mut().push(key.into()));
        } else {
            self.invalidate(node, key, 0, None);
        }
    }

    /// Enters a command on this thread (dispatch).
    pub fn enter_command() {
        DEPTH.with(|depth| depth.set(depth.get() + 1));
    }

    /// Leaves a command: when it was the outermost, invalidates what it modified;
    /// `writer`'s own messages (RESP3, no redirect) go to `own`, after its reply.
    pub fn leave_command(&self, node: &Node, writer: u64, own: &mut ReplyWriter<'_>) {
        let depth = DEPTH.with(|depth| {
            let left = depth.get().saturating_sub(1);
            depth.set(left);
            left
        });
        if depth > 0 {
            return;
        }
        let mut keys = PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()));
        if keys.is_empty() || !self.active.load(Relaxed) {
            return;
        }
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            self.invalidate(node, key, writer, Some(own));
        }
    }

    /// Invalidates one modified key for the clients that hold it (and BCAST clients whose
    /// prefix it has). `writer` is the client whose command modified it (0: none).
    fn invalidate(&self, node: &Node, key: &[u8], writer: u64, own: Option<&mut ReplyWriter<'_>>) {
        let (holders, bcast): (Vec<u64>, Vec<u64>) = {
            let mut state = self.state.lock();
            let holders = state.keys.remove(key).unwrap_or_default();
            let logical = node.databases.logical(key).1;
            let bcast = state
                .clients
                .values()
                .filter(|t| {
                    t.bcast
                        && (t.prefixes.is_empty()
                            || t.prefixes.iter().any(|p| logical.starts_with(p)))
                })
                .map(|t| t.handle.id)
                .collect();
            (holders, bcast)
        };
        let mut own = own;
        for id in holders.into_iter().chain(bcast) {
            self.send_one(
                node,
                id,
                Invalidated::Keys(&[node.databases.logical(key).1]),
                writer,
                own.as_deref_mut(),
            );
        }
    }

    /// Invalidates `key` for `ids` (table evictions: nobody wrote it).
    fn send_to(&self, node: &Node, ids: &[u64], key: &[u8], writer: u64) {
        for &id in ids {
            self.send_one(
                node,
                id,
                Invalidated::Keys(&[node.databases.logical(key).1]),
                writer,
                None,
            );
        }
    }

    /// FLUSHALL or FLUSHDB: every tracking client is told to drop everything.
    pub fn flushed(&self, node: &Node, writer: u64, own: &mut ReplyWriter<'_>) {
        let ids: Vec<u64> = {
            let mut state = self.state.lock();
            state.keys.clear();
            state.clients.keys().copied().collect()
        };
        for id in ids {
            self.send_one(node, id, Invalidated::All, writer, Some(&mut *own));
        }
    }

    /// Keys of slots this member no longer owns: their holders are told (a client cache
    /// never serves a key another member now owns); BCAST clients are told to drop all.
    pub fn slots_left(&self, node: &Node, still_owned: impl Fn(&[u8]) -> bool) {
        let (lost, bcast): (Vec<Held>, Vec<u64>) = {
            let mut state = self.state.lock();
            let lost: Vec<Box<[u8]>> = state
                .keys
                .keys()
                .filter(|key| !still_owned(key))
                .cloned()
                .collect();
            let lost = lost
                .into_iter()
                .map(|key| {
                    let ids = state.keys.remove(&key).unwrap_or_default();
                    (key, ids)
                })
                .collect();
            let bcast = state
                .clients
                .values()
                .filter(|t| t.bcast)
                .map(|t| t.handle.id)
                .collect();
            (lost, bcast)
        };
        for (key, ids) in lost {
            self.send_to(node, &ids, &key, 0);
        }
        for id in bcast {
            self.send_one(node, id, Invalidated::All, 0, None);
        }
    }

    /// Sends one invalidation to tracking client `id` (or its REDIRECT client).
    fn send_one(
        &self,
        node: &Node,
        id: u64,
        what: Invalidated<'_>,
        writer: u64,
        own: Option<&mut ReplyWriter<'_>>,
    ) {
        let Some(tracker) = self.tracker(id) else {
            return;
        };
        if tracker.noloop && id == writer {
            return;
        }
        let limit = node.pubsub.limit();
        let target = match tracker.redirect {
            None => tracker.handle.clone(),
            Some(redirect) => match node.clients.get(redirect) {
                Some(target) => target,
                None => {
                    // Redis tells a RESP3 client each time a message finds no one.
                    if let Some(t) = self.state.lock().clients.get_mut(&id) {
                        t.broken = true;
                    }
                    if tracker.handle.resp.load(Relaxed) == 3 {
                        let mut bytes = Vec::new();
                        let mut w = ReplyWriter::new(&mut bytes, Protocol::Resp3);
                        w.push(2);
                        w.bulk(b"tracking-redir-broken");
                        w.int(redirect as i64);
                        tracker.handle.mailbox().deliver(&bytes, limit);
                    }
                    return;
                }
            },
        };
        let resp3 = target.resp.load(Relaxed) == 3;
        let mut bytes = Vec::new();
        let mut w = ReplyWriter::new(
            &mut bytes,
            if resp3 {
                Protocol::Resp3
            } else {
                Protocol::Resp2
            },
        );
        if resp3 {
            w.push(2);
            w.bulk(b"invalidate");
        } else {
            // RESP2 can only hear it as a message, on a connection subscribed to it.
            let subscribed = tracker.redirect.is_some()
                && node
                    .pubsub
                    .is_subscribed(Kind::Channel, INVALIDATE_CHANNEL, target.id);
            if !subscribed {
                return;
            }
            w.push(3);
            w.bulk(b"message");
            w.bulk(INVALIDATE_CHANNEL);
        }
        match what {
            Invalidated::Keys(keys) => {
                w.array(keys.len());
                for key in keys {
                    w.bulk(key);
                }
            }
            Invalidated::All => w.null(),
        }
        match own {
            Some(own) if target.id == writer => own.raw(&bytes),
            // A client's write waits for it to leave (expiry and eviction have nobody to
            // hold back).
            _ if writer != 0 => {
                let mailbox = target.mailbox();
                if let Some(end) = mailbox.deliver_at(&bytes, limit)
                    && !mailbox.stalled()
                {
                    AWAITED.with(|awaited| awaited.borrow_mut().push((mailbox, end)));
                }
            }
            _ => {
                target.mailbox().deliver(&bytes, limit);
            }
        }
    }
}
