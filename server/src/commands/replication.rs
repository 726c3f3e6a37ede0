//! WAIT: blocks until the replicas of the slots this connection wrote to acknowledged its
//! last write, or the timeout passes; replies with how many did (Redis's semantics: the
//! caller compares the count).

use std::time::Duration;

use ringkv_protocol::Args;
use ringkv_store::slot_set::SlotSet;

use super::Parked;
use crate::handler::{CmdError, CmdResult, Ctx, int_arg};
use crate::node::Node;

/// A WAIT that had to block.
#[derive(Debug)]
pub struct BlockedWait {
    wanted: i64,
    lsn: u64,
    slots: SlotSet,
    /// Writes this connection made through this proxying member on others: each owner's
    /// address, its log position after the write, the slots written.
    remote: Vec<RemoteWrite>,
    /// The WAIT's timeout in ms (0: none), for the owners' part.
    timeout_ms: u64,
    /// None: no timeout (WAIT … 0 blocks until enough replicas acknowledge).
    deadline: Option<tokio::time::Instant>,
}

/// A write made through a proxying member: where it ran, that member's log position after
/// it, and the slots it wrote.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    /// The owner's client address.
    pub addr: std::net::SocketAddr,
    /// Its last LSN after the write.
    pub lsn: u64,
    /// The slots written there.
    pub slots: SlotSet,
}

fn timeout_arg(arg: &[u8]) -> Result<u64, CmdError> {
    let timeout = int_arg(arg)
        .map_err(|_| CmdError::Custom("ERR timeout is not an integer or out of range".into()))?;
    if timeout < 0 {
        return Err(CmdError::Custom("ERR timeout is negative".into()));
    }
    Ok(timeout as u64)
}

/// WAIT numreplicas timeout
pub fn wait(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let wanted = int_arg(args.get(1))?;
    let timeout = timeout_arg(args.get(2))?;
    let (lsn, slots) = ctx.conn.replicated_write();
    let remote = ctx.conn.remote_writes().to_vec();
    park_wait(ctx, wanted, timeout, lsn, slots, remote)
}

/// CLUSTER LASTLSN: this member's last change-log position (a proxying member notes it
/// after each write it forwards here, for its client's WAIT).
pub fn lastlsn(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let lsn = ctx.node.replication.get().map_or(0, |r| r.last_lsn());
    ctx.out.int(lsn as i64);
    Ok(())
}

/// CLUSTER WAITLSN lsn numreplicas timeout slot [slot ...]: WAIT for writes a proxying
/// member made here on its client's behalf.
pub fn waitlsn(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let lsn = u64::try_from(int_arg(args.get(2))?)
        .map_err(|_| CmdError::Custom("ERR lsn is negative".into()))?;
    let wanted = int_arg(args.get(3))?;
    let timeout = timeout_arg(args.get(4))?;
    let mut slots = SlotSet::new();
    for i in 5..args.len() {
        match u16::try_from(int_arg(args.get(i))?) {
            Ok(slot) if slot < ringkv_cluster::SLOT_COUNT => slots.insert(slot),
            _ => return Err(CmdError::Custom("ERR Invalid or out of range slot".into())),
        }
    }
    park_wait(ctx, wanted, timeout, lsn, slots, Vec::new())
}

fn park_wait(
    ctx: &mut Ctx<'_, '_>,
    wanted: i64,
    timeout: u64,
    lsn: u64,
    slots: SlotSet,
    remote: Vec<RemoteWrite>,
) -> CmdResult {
    let now = acknowledged(ctx.node, lsn, &slots);
    if (now as i64 >= wanted && remote.is_empty()) || ctx.conn.no_block {
        // Inside MULTI, WAIT answers at once, as in Redis.
        ctx.out.int(now as i64);
        return Ok(());
    }
    if let Some(replication) = ctx.node.replication.get() {
        replication.request_acks();
    }
    ctx.conn.parked = Some(Parked::Wait(BlockedWait {
        wanted,
        lsn,
        slots,
        remote,
        timeout_ms: timeout,
        deadline: (timeout > 0)
            .then(|| tokio::time::Instant::now() + Duration::from_millis(timeout)),
    }));
    Ok(())
}

fn acknowledged(node: &Node, lsn: u64, slots: &SlotSet) -> usize {
    node.replication
        .get()
        .map_or(0, |replication| replication.acknowledged(lsn, slots))
}

/// Waits for a parked WAIT's acknowledgements or its deadline; the count: the least of
/// this member's and each owner's that the connection wrote to through it.
pub async fn finish_wait(node: &Node, mut blocked: BlockedWait) -> i64 {
    let remote = std::mem::take(&mut blocked.remote);
    if remote.is_empty() {
        return finish_local_wait(node, blocked).await;
    }
    let (wanted, timeout_ms) = (blocked.wanted, blocked.timeout_ms);
    let local = async {
        if blocked.lsn == 0 && blocked.slots.is_empty() {
            // Every write went elsewhere: only the owners count.
            i64::MAX
        } else {
            finish_local_wait(node, blocked).await
        }
    };
    let owners = async {
        let Some(cluster) = node.cluster.clone() else {
            return 0;
        };
        let mut calls = tokio::task::JoinSet::new();
        for write in remote {
            let cluster = cluster.clone();
            calls.spawn(async move {
                cluster
                    .wait_remote(write.addr, write.lsn, wanted, timeout_ms, &write.slots)
                    .await
            });
        }
        let mut least = i64::MAX;
        while let Some(count) = calls.join_next().await {
            least = least.min(count.unwrap_or(0));
        }
        least
    };
    let (local, owners) = tokio::join!(local, owners);
    local.min(owners).max(0)
}

async fn finish_local_wait(node: &Node, blocked: BlockedWait) -> i64 {
    let mut changes = node.replication.get().map(|r| r.ack_changes());
    loop {
        let count = acknowledged(node, blocked.lsn, &blocked.slots) as i64;
        if count >= blocked.wanted {
            return count;
        }
        let changed = async {
            match changes.as_mut() {
                Some(changes) => {
                    // Ask again now and then: a replica may have missed the first request.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
                    if let Some(replication) = node.replication.get() {
                        replication.request_acks();
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        match blocked.deadline {
            Some(deadline) => {
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(deadline) => {
                        return acknowledged(node, blocked.lsn, &blocked.slots) as i64;
                    }
                }
            }
            None => changed.await,
        }
    }
}
