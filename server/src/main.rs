//! `ringkv-server`: flags and config file, logging, signals, then the node.

use anyhow::Context;
use ringkv_server::{Config, Server};
use tracing_subscriber::{EnvFilter, reload};

// jemalloc's small size classes (16, 32, 48, 64, 80…) fit keys and values far tighter than
// glibc's 32-byte minimum chunk. Its background thread returns freed pages to the OS even
// while the node is idle (Redis enables the same, `jemalloc-bg-thread yes`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    ringkv_server::set_allocator_name("jemalloc-5.3.0");
    let config = Config::load()?;
    let filter = EnvFilter::try_new(config.log_filter())
        .with_context(|| format!("invalid loglevel {:?}", config.loglevel))?;
    let (filter, reload_handle) = reload::Layer::new(filter);
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .init();
    let log_reload: ringkv_server::LogReload = Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        reload_handle.reload(filter).map_err(|e| e.to_string())
    });

    // Default: one I/O thread per core this process may run on (taskset narrows it).
    let threads = match config.io_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One I/O thread runs on a current-thread runtime: no work-stealing bookkeeping.
    let mut runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config, Some(log_reload)).await?;
        tracing::info!(addrs = ?server.local_addrs(), version = env!("CARGO_PKG_VERSION"), "ringkv node starting");
        let node = server.node();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("received a shutdown signal, shutting down");
            node.begin_shutdown();
        });
        server.run().await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
