//! Scripts and function libraries are the cluster's, not a member's. A change a client
//! makes on one member reaches the others as it is made (`answer_shared` in
//! `commands/scripting.rs`); a member that starts, new or restarted, takes what another
//! member holds, so EVALSHA and FCALL work on it once it serves slots, after a failover
//! or a handoff alike.

use std::sync::Weak;
use std::time::Duration;

use crate::node::Node;
use crate::scripting::RestorePolicy;

/// How often, and how many times, a starting member looks for another member to ask: a
/// minute, enough for the gossip of a member that joins a running cluster.
const LOOK_EVERY: Duration = Duration::from_millis(500);
const LOOKS: u32 = 120;

/// Takes the scripts and libraries another member holds, once one is in the view.
pub async fn take_from_members(node: Weak<Node>) {
    for _ in 0..LOOKS {
        tokio::time::sleep(LOOK_EVERY).await;
        let Some(node) = node.upgrade() else { return };
        let Some(cluster) = node.cluster.clone() else {
            return;
        };
        if cluster.view().nodes.len() < 2 {
            continue;
        }
        let Some(scripts) = cluster.ask_members(&[b"CLUSTER", b"SCRIPTS"]).await else {
            continue;
        };
        let Some(libraries) = cluster.ask_members(&[b"FUNCTION", b"DUMP"]).await else {
            continue;
        };
        let mut refused = 0usize;
        for body in &scripts {
            refused += usize::from(node.scripting.load(body).is_err());
        }
        if let Some(payload) = libraries.first()
            && let Err(error) = node
                .scripting
                .function_restore(payload, RestorePolicy::Replace)
        {
            tracing::warn!(%error, "the cluster's function libraries did not load here");
        }
        tracing::info!(
            scripts = scripts.len(),
            refused,
            "took the cluster's scripts and function libraries"
        );
        return;
    }
}
