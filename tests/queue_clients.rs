//! Real software from the package registries against a ringkv node: kombu (the messaging
//! library under Celery) sends and consumes through blocking pops in a logical database;
//! redis-py's Lock, limits (under Flask-Limiter) and python-rq run their Lua scripts;
//! redis-py's PubSub, kombu's fanout and a Celery worker's results go through pub/sub;
//! redis-py hears client-side caching invalidations (REDIRECT in RESP2, pushes in RESP3).
//! `scripts/test` installs them.

use std::process::Command;

use anyhow::Result;
use support::start;

mod support;

/// Runs `tests/clients/<script>` against a fresh node; its standard output.
async fn run_client_script(script: &'static str) -> Result<String> {
    let (addr, _node) = start(&[]).await?;
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let port = addr.port().to_string();
    // The script blocks on the node, which runs on this runtime: wait off it.
    let output =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(path).arg(port).output())
            .await??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed (scripts/test installs its packages):\n{stdout}\n{stderr}"
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombu_delivers_every_message_once_in_order_through_blocking_pops() -> Result<()> {
    let stdout = run_client_script("kombu_queue.py").await?;
    assert!(stdout.contains("200 messages"), "{stdout}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_clients_fanout_and_celery_results_arrive() -> Result<()> {
    let stdout = run_client_script("pubsub_clients.py").await?;
    for line in [
        "redis-py PubSub RESP2",
        "redis-py PubSub RESP3",
        "redis-py run_in_thread: 500 messages in order",
        "kombu fanout: both listeners heard all 20 broadcasts in order",
        "celery: a worker ran 50 tasks",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_rate_limiter_and_job_queue_libraries_run_their_scripts() -> Result<()> {
    let stdout = run_client_script("script_libraries.py").await?;
    for line in [
        "redis-py Lock",
        "limits:",
        "python-rq: a burst worker completed 300 jobs",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_hears_invalidations_in_resp2_and_resp3() -> Result<()> {
    let stdout = run_client_script("tracking_clients.py").await?;
    for line in [
        "redis-py tracking RESP2: REDIRECT and BCAST invalidations arrived",
        "redis-py tracking RESP3: invalidate pushes arrived, FLUSHALL's null one too",
        "redis-py cache_config: refused below 7.4, as the README says",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    Ok(())
}
