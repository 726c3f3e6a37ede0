//! State shared by every connection of a node: the store, the live configuration, the
//! client registry and server statistics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use atomic_waker::AtomicWaker;
use parking_lot::{Mutex, RwLock};
use ringkv_store::Store;
use tokio::sync::watch;

use crate::config::{Config, PASSTHROUGH_OPTIONS};
use crate::leases::Leases;
use crate::persistence::Persistence;

/// The current time in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Server-wide counters for INFO stats.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections refused at `maxclients`.
    pub rejected_connections: AtomicU64,
    /// Commands run.
    pub commands_processed: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Protocol errors (connections closed for malformed input).
    pub protocol_errors: AtomicU64,
    /// Error replies sent.
    pub error_replies: AtomicU64,
    /// Operations per second over the last sampling window.
    pub instantaneous_ops: AtomicU64,
}

/// One connected client, as CLIENT LIST and CLIENT KILL see it.
#[derive(Debug)]
pub struct ClientHandle {
    /// CLIENT ID.
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// Local address.
    pub laddr: SocketAddr,
    /// When it connected.
    pub created: Instant,
    /// CLIENT SETNAME.
    pub name: Mutex<String>,
    /// CLIENT SETINFO lib-name and lib-ver.
    pub lib: Mutex<(String, String)>,
    /// Milliseconds since node start of its last command.
    pub last_interaction_ms: AtomicU64,
    /// Index of its last command in the dispatch table.
    pub last_command: AtomicUsize,
    /// 2 or 3.
    pub resp: AtomicU8,
    /// In MULTI (queued count + 1), or 0.
    pub multi: AtomicU64,
    /// CLIENT NO-EVICT.
    pub no_evict: AtomicBool,
    /// Parked in a blocking command (CLIENT LIST's `b` flag).
    pub blocked: AtomicBool,
    /// The logical database selected (CLIENT LIST).
    pub db: AtomicU8,
    /// Its channels, patterns and shard channels (CLIENT LIST's sub, psub, ssub).
    pub subscriptions: [AtomicUsize; 3],
    /// Its mailbox of pushes (pub/sub messages, invalidations), made on first need; the
    /// flag spares every command a lock while it has none.
    mailbox: Mutex<Option<Arc<crate::pubsub::Mailbox>>>,
    has_mailbox: AtomicBool,
    /// The connection's task, waiting for its socket and for these flags. One waker with
    /// flags, not a `Notify` per reason: a `Notify` takes a lock to register and another to
    /// drop its waiter, on every request.
    attention: AtomicWaker,
    /// Something was queued in its mailbox.
    woken: AtomicBool,
    killed: AtomicBool,
    shutting_down: AtomicBool,
}

/// Why a connection is called away from its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Pushes wait in its mailbox.
    Woken,
    /// CLIENT KILL, or its output limit.
    Killed,
    /// The node is shutting down.
    Shutdown,
}

impl Attention {
    /// Why the connection closed, for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Attention::Woken => "woken",
            Attention::Killed => "killed",
            Attention::Shutdown => "shutdown",
        }
    }
}

impl ClientHandle {
    /// Its mailbox, made now if it has none (its connection picks it up when woken).
    pub fn mailbox(self: &Arc<Self>) -> Arc<crate::pubsub::Mailbox> {
        let mut slot = self.mailbox.lock();
        let mailbox = slot.get_or_insert_with(|| crate::pubsub::Mailbox::new(self.clone()));
        self.has_mailbox.store(true, Relaxed);
        mailbox.clone()
    }

    /// Its mailbox, if it has one.
    pub fn existing_mailbox(&self) -> Option<Arc<crate::pubsub::Mailbox>> {
        if !self.has_mailbox.load(Relaxed) {
            return None;
        }
        self.mailbox.lock().clone()
    }

    /// Drops its mailbox when its connection ends (the mailbox refers back to it).
    pub fn drop_mailbox(&self) {
        self.has_mailbox.store(false, Relaxed);
        self.mailbox.lock().take();
    }

    /// Wakes its connection: something was queued for it.
    pub fn wake(&self) {
        self.woken.store(true, Release);
        self.attention.wake();
    }

    /// Asks the connection to close.
    pub fn kill(&self) {
        self.killed.store(true, Release);
        self.attention.wake();
    }

    fn shut_down(&self) {
        self.shutting_down.store(true, Release);
        self.attention.wake();
    }

    /// True once killed.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Relaxed)
    }

    /// Killed or shutting down, once either is so. Only the client's own connection task
    /// may wait on this or on [`Self::attention`] (the handle keeps one waker).
    fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<Attention> {
        // Registered before the flags are read, so a change after the read still wakes.
        self.attention.register(cx.waker());
        if self.killed.load(Acquire) {
            Poll::Ready(Attention::Killed)
        } else if self.shutting_down.load(Acquire) {
            Poll::Ready(Attention::Shutdown)
        } else {
            Poll::Pending
        }
    }

    /// Resolves when the connection must close.
    pub fn closing(&self) -> impl Future<Output = Attention> + '_ {
        std::future::poll_fn(|cx| self.poll_closing(cx))
    }

    /// Resolves when the connection must close or has pushes to write (each wake once).
    pub fn attention(&self) -> impl Future<Output = Attention> + '_ {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(closing) = self.poll_closing(cx) {
                Poll::Ready(closing)
            } else if self.woken.swap(false, AcqRel) {
                Poll::Ready(Attention::Woken)
            } else {
                Poll::Pending
            }
        })
    }
}

/// Every live client.
#[derive(Debug, Default)]
pub struct Clients {
    map: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    /// Set under the map's lock, so a client registered later starts shutting down.
    shutting_down: AtomicBool,
    next_id: AtomicU64,
}

impl Clients {
    /// Registers a client unless `max` are already connected.
    pub fn register(
        &self,
        addr: SocketAddr,
        laddr: SocketAddr,
        max: usize,
    ) -> Option<Arc<ClientHandle>> {
        let mut map = self.map.lock();
        if map.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let handle = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            created: Instant::now(),
            name: Mutex::new(String::new()),
            lib: Mutex::new((String::new(), String::new())),
            last_interaction_ms: AtomicU64::new(0),
            last_command: AtomicUsize::new(usize::MAX),
            resp: AtomicU8::new(2),
            multi: AtomicU64::new(0),
            no_evict: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            db: AtomicU8::new(0),
            subscriptions: Default::default(),
            mailbox: Mutex::new(None),
            has_mailbox: AtomicBool::new(false),
            attention: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            shutting_down: AtomicBool::new(self.shutting_down.load(Relaxed)),
        });
        map.insert(id, handle.clone());
        Some(handle)
    }

    /// Calls every connection, present and to come, to close.
    fn shut_down_all(&self) {
        let map = self.map.lock();
        self.shutting_down.store(true, Relaxed);
        for client in map.values() {
            client.shut_down();
        }
    }

    /// Forgets a client that disconnected.
    pub fn unregister(&self, id: u64) {
        self.map.lock().remove(&id);
    }

    /// The client with this id, if connected.
    pub fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.map.lock().get(&id).cloned()
    }

    /// A snapshot, ordered by id.
    pub fn list(&self) -> Vec<Arc<ClientHandle>> {
        let mut all: Vec<_> = self.map.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Connected clients.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// True when none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies a new log filter (installed by the binary, which owns the subscriber).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static ALLOCATOR: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Names the process's allocator for INFO (the binary links jemalloc; a program that
/// embeds the node keeps its own).
pub fn set_allocator_name(name: &'static str) {
    let _ = ALLOCATOR.set(name);
}

/// The allocator INFO reports (`mem_allocator`).
pub fn allocator_name() -> &'static str {
    ALLOCATOR.get().copied().unwrap_or("libc")
}

/// A node's shared state.
pub struct Node {
    /// The keyspace (shared with the persistence tier's checkpoint thread).
    pub store: Arc<Store>,
    /// CACHE.GET leases and fill history.
    pub leases: Leases,
    /// The persistence tier, when `--persistence yes`.
    pub persistence: Option<Arc<Persistence>>,
    /// True while the persistence tier is being loaded: commands answer -LOADING.
    pub loading: AtomicBool,
    /// Why the node stopped on its own (recovery failed); the process exits with it.
    pub fatal: Mutex<Option<String>>,
    /// Live configuration (CONFIG SET changes it).
    pub config: RwLock<Config>,
    /// Values of Redis options accepted for compatibility only.
    pub passthrough: Mutex<HashMap<String, String>>,
    /// Connected clients.
    pub clients: Clients,
    /// Counters.
    pub stats: ServerStats,
    /// When the node started.
    pub started: Instant,
    /// Unix seconds at start (LASTSAVE until persistence exists).
    pub started_unix: u64,
    /// Random run id, as INFO shows it.
    pub run_id: String,
    /// The port actually listened on.
    pub port: AtomicU64,
    /// Flips to true when the node shuts down.
    pub shutdown: watch::Sender<bool>,
    /// Applies `loglevel` changes.
    pub log_reload: Option<LogReload>,
    /// Membership and routing, with `--cluster-enabled yes`.
    pub cluster: Option<Arc<crate::cluster::ClusterNode>>,
    /// Replication between members, once the change log is attached (cluster mode).
    pub replication: std::sync::OnceLock<Arc<crate::replication::Replication>>,
    /// Clients blocked on keys (BLPOP and friends).
    pub blocking: Arc<crate::blocking::Blocking>,
    /// The logical databases (SELECT) and where each one's keys live.
    pub databases: crate::databases::Databases,
    /// The Lua engine and its script cache.
    pub scripting: crate::scripting::Scripting,
    /// Pub/sub subscriptions.
    pub pubsub: crate::pubsub::PubSub,
    /// Keyspace notifications.
    pub notifier: crate::notify::Notifier,
    /// Client-side caching (CLIENT TRACKING).
    pub tracking: crate::tracking::Tracking,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node for `config`.
    pub fn new(
        config: Config,
        log_reload: Option<LogReload>,
        persistence: Option<Arc<Persistence>>,
    ) -> Node {
        let store = Store::builder()
            .shards(config.shards)
            .maxmemory(config.maxmemory)
            .policy(config.maxmemory_policy)
            .samples(config.maxmemory_samples)
            .namespaced(!config.cluster_enabled)
            .build();
        store.set_lfu_params(config.lfu_log_factor, config.lfu_decay_time);
        let store = Arc::new(store);
        let run_id = (0..40)
            .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap_or('0'))
            .collect();
        let databases = crate::databases::Databases::new(config.databases, !config.cluster_enabled);
        Node {
            store,
            databases,
            scripting: crate::scripting::Scripting::new(
                config.lua_memory_limit.min(usize::MAX as u64) as usize,
                std::time::Duration::from_millis(config.busy_reply_threshold),
            ),
            tracking: crate::tracking::Tracking::new(config.tracking_table_max_keys),
            notifier: {
                let notifier = crate::notify::Notifier::default();
                notifier.set_flags(config.notify_keyspace_events);
                notifier
            },
            pubsub: {
                let pubsub = crate::pubsub::PubSub::new();
                pubsub.set_limit(config.client_output_buffer_limit.pubsub);
                pubsub
            },
            persistence,
            loading: AtomicBool::new(false),
            fatal: Mutex::new(None),
            leases: Leases::default(),
            port: AtomicU64::new(config.port as u64),
            config: RwLock::new(config),
            passthrough: Mutex::new(
                PASSTHROUGH_OPTIONS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            clients: Clients::default(),
            stats: ServerStats::default(),
            started: Instant::now(),
            started_unix: unix_ms() / 1000,
            run_id,
            shutdown: watch::channel(false).0,
            log_reload,
            cluster: None,
            replication: std::sync::OnceLock::new(),
            blocking: Arc::default(),
        }
    }

    /// Starts a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.clients.shut_down_all();
    }

    /// Milliseconds since start.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Keyspace notifications of the keys the store expires and evicts by itself.
pub struct StoreKeyEvents {
    pub node: std::sync::Weak<Node>,
    /// The notifier's flags, read without reaching the node (every new key asks).
    pub flags: Arc<std::sync::atomic::AtomicU32>,
    /// Some client tracks keys (every modified key asks).
    pub tracking: Arc<AtomicBool>,
}

impl ringkv_store::KeyEvents for StoreKeyEvents {
    fn expired(&self, key: &[u8]) {
        self.tell(crate::notify::Class::EXPIRED, "expired", key);
    }

    fn evicted(&self, key: &[u8]) {
        self.tell(crate::notify::Class::EVICTED, "evicted", key);
    }

    fn wants_created(&self) -> bool {
        crate::notify::wants(self.flags.load(Relaxed), crate::notify::Class::NEW)
    }

    fn created(&self, key: &[u8]) {
        self.tell(crate::notify::Class::NEW, "new", key);
    }

    fn wants_missed(&self) -> bool {
        crate::notify::wants(self.flags.load(Relaxed), crate::notify::Class::KEY_MISS)
    }

    fn missed(&self, key: &[u8]) {
        self.tell(crate::notify::Class::KEY_MISS, "keymiss", key);
    }

    fn wants_touched(&self) -> bool {
        self.tracking.load(Relaxed)
    }

    fn touched(&self, key: &[u8]) {
        if let Some(node) = self.node.upgrade() {
            node.tracking.touched(&node, key);
        }
    }
}

impl StoreKeyEvents {
    fn tell(&self, class: crate::notify::Class, event: &str, physical: &[u8]) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        if node.notifier.wants(class) {
            let (db, key) = node.databases.logical(physical);
            node.notifier.emit(&node.pubsub, class, event, db, key);
        }
    }
}
