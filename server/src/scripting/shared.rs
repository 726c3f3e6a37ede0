//! Scripts and function libraries are the cluster's, not a member's. A change a client
//! makes on one member reaches the others as it is made (`answer_shared` in
//! `commands/scripting.rs`). Each member counts those shared changes it applied and gossips the
//! count (`NodeInfo::scripts_version`); a member that counts fewer than another (it
//! started, new or restarted, or it missed changes while paused or cut off) takes that
//! member's whole set in place of its own. So EVALSHA and FCALL work on whichever member
//! serves a slot, after a failover or a handoff alike.

use std::sync::Weak;
use std::time::Duration;

use crate::node::Node;

/// How often a member compares its count with the others'.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Keeps this member's scripts and libraries in step with the cluster's, for as long as
/// the node lives.
pub async fn keep_in_step(node: Weak<Node>) {
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let Some(node) = node.upgrade() else { return };
        let Some(cluster) = node.cluster.clone() else {
            return;
        };
        let mine = node.scripting.changes();
        let (announced, ahead) = {
            let view = cluster.view();
            let announced = view
                .nodes
                .iter()
                .find(|n| n.myself)
                .map(|n| n.scripts_version);
            let ahead = view
                .nodes
                .iter()
                .filter(|n| !n.myself && n.scripts_version > mine)
                .max_by_key(|n| n.scripts_version)
                .map(|n| (n.client, n.scripts_version));
            (announced, ahead)
        };
        if announced != Some(mine) {
            cluster.announce_scripts_version(mine);
        }
        let Some((peer, version)) = ahead else {
            continue;
        };
        let Some(scripts) = cluster.ask_member(peer, &[b"CLUSTER", b"SCRIPTS"]).await else {
            continue;
        };
        let Some(libraries) = cluster.ask_member(peer, &[b"FUNCTION", b"DUMP"]).await else {
            continue;
        };
        let Some(payload) = libraries.first() else {
            continue;
        };
        match node.scripting.adopt(&scripts, payload, version) {
            Ok(()) => {
                tracing::info!(
                    %peer,
                    scripts = scripts.len(),
                    version,
                    "took the cluster's scripts and function libraries from a member that saw more changes"
                );
                cluster.announce_scripts_version(node.scripting.changes());
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "another member's function libraries did not load here");
            }
        }
    }
}
