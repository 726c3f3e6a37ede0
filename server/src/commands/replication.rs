//! WAIT: blocks until the replicas of the slots this connection wrote to acknowledged its
//! last write, or the timeout passes; replies with how many did (Redis's semantics: the
//! caller compares the count).

use std::time::Duration;

use ringkv_protocol::Args;
use ringkv_store::slot_set::SlotSet;

use super::{CmdError, CmdResult, Parked, int_arg};
use crate::dispatch::Ctx;
use crate::node::Node;

/// A WAIT that had to block.
#[derive(Debug)]
pub struct BlockedWait {
    wanted: i64,
    lsn: u64,
    slots: SlotSet,
    /// None: no timeout (WAIT … 0 blocks until enough replicas acknowledge).
    deadline: Option<tokio::time::Instant>,
}

/// WAIT numreplicas timeout
pub fn wait(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let wanted = int_arg(args.get(1))?;
    let timeout = int_arg(args.get(2))
        .map_err(|_| CmdError::Custom("ERR timeout is not an integer or out of range".into()))?;
    if timeout < 0 {
        return Err(CmdError::Custom("ERR timeout is negative".into()));
    }
    let (lsn, slots) = ctx.conn.replicated_write();
    let now = acknowledged(ctx.node, lsn, &slots);
    if now as i64 >= wanted || ctx.conn.no_block {
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
        deadline: (timeout > 0)
            .then(|| tokio::time::Instant::now() + Duration::from_millis(timeout as u64)),
    }));
    Ok(())
}

fn acknowledged(node: &Node, lsn: u64, slots: &SlotSet) -> usize {
    node.replication
        .get()
        .map_or(0, |replication| replication.acknowledged(lsn, slots))
}

/// Waits for a parked WAIT's acknowledgements or its deadline; the count.
pub async fn finish_wait(node: &Node, blocked: BlockedWait) -> i64 {
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
