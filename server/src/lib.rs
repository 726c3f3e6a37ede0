//! The ringkv node: listeners, the connection loop, command dispatch, INFO and CONFIG.
//! [`Server::bind`] then [`Server::run`]; the binary adds flags, logging and signals.

mod blocking;
mod cluster;
mod commands;
mod config;
mod connection;
mod databases;
mod dispatch;
mod handler;
mod leases;
mod node;
mod node_id;
mod notify;
mod persistence;
mod pubsub;
mod replication;
mod reply_batching;
mod scripting;
mod tracking;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use persistence::Persistence;
pub use persistence::Storage;
use tokio::net::TcpListener;

pub use commands::write_info;
pub use config::{Config, ConfigError, parse_memory};
pub use handler::CmdError;
pub use node::{LogReload, Node, set_allocator_name, unix_ms};

/// How long shutdown waits for connections to finish their current batch.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A node bound to its listeners, not yet serving.
pub struct Server {
    node: Arc<Node>,
    listeners: Vec<TcpListener>,
}

impl Server {
    /// Binds every `--bind` address on `--port` (port 0 picks a free port, the same for
    /// every address).
    pub async fn bind(config: Config, log_reload: Option<LogReload>) -> anyhow::Result<Server> {
        let storage = if config.persistence {
            let for_open = config.clone();
            let opened = tokio::task::spawn_blocking(move || persistence::open_storage(&for_open));
            Some(opened.await.context("opening the data directory")??)
        } else {
            None
        };
        Server::bind_with_storage(config, log_reload, storage).await
    }

    /// Binds with this persistence storage (or none), whatever `--persistence` says;
    /// tests pass in-memory and fault-injecting ones.
    pub async fn bind_with_storage(
        config: Config,
        log_reload: Option<LogReload>,
        storage: Option<Storage>,
    ) -> anyhow::Result<Server> {
        let mut port = config.port;
        let mut listeners = Vec::new();
        for host in config.bind.split_whitespace() {
            // Redis marks optional addresses with a leading '-'.
            let (optional, host) = match host.strip_prefix('-') {
                Some(h) => (true, h),
                None => (false, host),
            };
            let addr = format!(
                "{}:{port}",
                if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                }
            );
            match TcpListener::bind(&addr).await {
                Ok(listener) => {
                    port = listener.local_addr()?.port();
                    listeners.push(listener);
                }
                Err(e) if optional => {
                    tracing::warn!(%addr, error = %e, "skipping optional bind address")
                }
                Err(e) => return Err(e).with_context(|| format!("listening on {addr}")),
            }
        }
        anyhow::ensure!(
            !listeners.is_empty(),
            "no address to listen on (bind = {:?})",
            config.bind
        );
        // The node id lives next to the data it names.
        let id_dir = storage.as_ref().map(|storage| storage.dir.clone());
        let persistence = match storage {
            Some(storage) => {
                let for_open = config.clone();
                let opened =
                    tokio::task::spawn_blocking(move || Persistence::open(storage, &for_open));
                Some(Arc::new(
                    opened.await.context("opening the persistence tier")??,
                ))
            }
            None => None,
        };
        let cluster = if config.cluster_enabled {
            Some(Arc::new(
                cluster::ClusterNode::start(&config, port, id_dir.as_deref()).await?,
            ))
        } else {
            None
        };
        let loading = persistence.is_some();
        let mut node = Node::new(config, log_reload, persistence);
        node.cluster = cluster;
        // From the first accepted connection until recovery ends, commands get -LOADING.
        node.loading.store(loading, Relaxed);
        let node = Arc::new(node);
        node.scripting.attach(Arc::downgrade(&node));
        node.store.attach_key_events(Arc::new(node::StoreKeyEvents {
            node: Arc::downgrade(&node),
            flags: node.notifier.shared_flags(),
            tracking: node.tracking.active_flag(),
        }));
        node.port.store(port as u64, Relaxed);
        Ok(Server { node, listeners })
    }

    /// The addresses being listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The shared node state.
    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Serves until SHUTDOWN or [`Node::begin_shutdown`], then drains connections.
    pub async fn run(self) -> anyhow::Result<()> {
        let node = self.node;
        if let Some(persistence) = node.persistence.clone() {
            // Clients may connect meanwhile; commands answer -LOADING until this is done.
            let loader = node.clone();
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                if recover(&loader, &persistence) {
                    // Replication reads the change log the tier attached.
                    let _guard = runtime.enter();
                    start_replication(&loader);
                    // Only now: a restarted member's slots must be marked not ready (to be
                    // learned back) before a command can reach them. Opened between the
                    // two, it served a few reads from its older copy.
                    loader.loading.store(false, Relaxed);
                }
            });
        } else {
            start_replication(&node);
        }
        let cron = tokio::spawn(run_cron(node.clone()));
        if let Some(cluster) = &node.cluster {
            tokio::spawn(scripting::shared::keep_in_step(Arc::downgrade(&node)));
            tokio::spawn(follow_slot_moves(
                Arc::downgrade(&node),
                cluster.subscribe(),
            ));
        }
        let mut accepts = tokio::task::JoinSet::new();
        for listener in self.listeners {
            let node = node.clone();
            accepts.spawn(async move {
                let mut shutdown = node.shutdown.subscribe();
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = shutdown.wait_for(|down| *down) => return,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            tokio::spawn(connection::serve(node.clone(), stream, peer));
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        tracing::info!(addrs = ?node.port.load(Relaxed), "ready to accept connections");
        while accepts.join_next().await.is_some() {}
        cron.abort();
        if let Some(replication) = node.replication.get() {
            // Hand every slot served here to the member taking it over before leaving.
            let limit = Duration::from_secs(node.config.read().cluster_drain_timeout);
            if !limit.is_zero() {
                replication.drain(limit).await;
            }
            replication.stop();
        }
        if let Some(cluster) = &node.cluster {
            // Clients blocked on keys now served elsewhere follow them there.
            cluster.redirect_blocked(&node.blocking);
            // Members learn at once that we are gone instead of suspecting us for seconds.
            cluster.leave().await;
        }
        // Connections see the shutdown flag and close after their current batch.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !node.clients.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(persistence) = node.persistence.clone() {
            // A clean stop loses nothing, whatever the fsync policy.
            let stopped = tokio::task::spawn_blocking(move || persistence.shutdown()).await;
            match stopped {
                Ok(Ok(())) => tracing::info!("persistence tier flushed"),
                Ok(Err(error)) => tracing::error!(%error, "final flush failed"),
                Err(_) => tracing::error!("persistence tier gone before the final flush"),
            }
        }
        if let Some(fatal) = node.fatal.lock().take() {
            anyhow::bail!(fatal);
        }
        tracing::info!("ringkv is now ready to exit, bye bye...");
        Ok(())
    }
}

/// In cluster mode, starts replication (once the change log is attached).
fn start_replication(node: &Arc<Node>) {
    let Some(cluster) = &node.cluster else {
        return;
    };
    let Some(listener) = cluster.take_link_listener() else {
        return;
    };
    let config = node.config.read().clone();
    // A replica acknowledges only what it keeps: not while its disk is failing.
    let keeps: replication::AckHold = match node.persistence.clone() {
        Some(persistence) => Box::new(move || {
            (!persistence.healthy()).then(|| {
                persistence
                    .last_error()
                    .unwrap_or_else(|| "the persistence tier is failing".into())
            })
        }),
        None => Box::new(|| None),
    };
    let replication = replication::Replication::start(
        &config,
        node.store.clone(),
        cluster.clone(),
        listener,
        keeps,
    );
    let _ = node.replication.set(replication);
}

/// Loads the persistence tier and attaches it to the store (the caller then opens for
/// commands); false when that failed (the node is stopping).
fn recover(node: &Node, persistence: &Arc<Persistence>) -> bool {
    tracing::info!(dir = %persistence.dir.display(), "loading data from the persistence tier");
    let started = persistence.recover(&node.store).and_then(|report| {
        persistence.start(node.store.clone())?;
        Ok(report)
    });
    match started {
        Ok(report) => tracing::info!(
            base_keys = report.base_keys,
            wal_records = report.replayed,
            expired_while_down = report.expired_while_down,
            ms = report.millis,
            "data loaded"
        ),
        Err(error) => {
            // Serving a partial keyspace as if it were whole would lose data silently.
            tracing::error!(error = %format!("{error:#}"), dir = %persistence.dir.display(), "recovery failed; shutting down");
            *node.fatal.lock() = Some(format!(
                "recovering {} failed: {error:#}",
                persistence.dir.display()
            ));
            node.begin_shutdown();
            return false;
        }
    }
    node.databases.load(&node.store, unix_ms());
    node.scripting.restore_functions(&node.store, unix_ms());
    true
}

/// As soon as this member learns a new slot table, what depended on its slots ends:
/// shard channels' subscriptions of slots it no longer holds, and tracked keys of slots it
/// no longer serves as primary (their reads and writes go to another member now, so a
/// client cache must not keep them). Ends with the node.
async fn follow_slot_moves(
    node: std::sync::Weak<Node>,
    mut views: tokio::sync::watch::Receiver<Arc<ringkv_cluster::ClusterView>>,
) {
    let mut version = None;
    loop {
        let current = views.borrow_and_update().table.version();
        if version != Some(current) {
            version = Some(current);
            let Some(node) = node.upgrade() else {
                return;
            };
            let Some(cluster) = &node.cluster else {
                return;
            };
            let owned = cluster.owned_slots();
            node.pubsub
                .drop_shard_channels(|name| !owned.contains(ringkv_cluster::key_slot(name)));
            let served = cluster.served_slots();
            node.tracking
                .slots_left(&node, |key| served.contains(ringkv_cluster::key_slot(key)));
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

/// Background work `hz` times a second: active expiry with bounded work per tick, expired
/// cache leases, and the instantaneous ops/s sample.
async fn run_cron(node: Arc<Node>) {
    let mut last_commands = node.stats.commands_processed.load(Relaxed);
    let mut last_sample = Instant::now();
    loop {
        let hz = node.config.read().hz.clamp(1, 500);
        tokio::time::sleep(Duration::from_millis(1000 / hz as u64)).await;
        let started = Instant::now();
        // Up to a quarter of a tick is spent expiring; more passes while many keys expire.
        let budget = Duration::from_millis(250 / hz as u64);
        loop {
            let report = node.store.active_expire(unix_ms(), 4096);
            let busy = report.examined > 0 && report.expired * 10 > report.examined;
            if !busy || started.elapsed() > budget {
                break;
            }
        }
        node.leases.sweep(&node.store, unix_ms(), 4096);
        if let Some(cluster) = &node.cluster {
            cluster.redirect_blocked(&node.blocking);
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            let commands = node.stats.commands_processed.load(Relaxed);
            let elapsed = last_sample.elapsed().as_secs_f64();
            node.stats.instantaneous_ops.store(
                ((commands - last_commands) as f64 / elapsed) as u64,
                Relaxed,
            );
            last_commands = commands;
            last_sample = Instant::now();
        }
    }
}
