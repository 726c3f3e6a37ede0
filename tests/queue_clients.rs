//! Real queue software from the package registries against a ringkv node: kombu (the
//! messaging library under Celery) sends and consumes through blocking pops in a logical
//! database. `scripts/test` installs it.

use std::process::Command;

use anyhow::Result;
use support::start;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombu_delivers_every_message_once_in_order_through_blocking_pops() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/kombu_queue.py");
    let port = addr.port().to_string();
    // The script blocks on the node, which runs on this runtime: wait off it.
    let output =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(port).output())
            .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kombu failed (scripts/test installs kombu):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("200 messages"), "{stdout}");
    Ok(())
}
