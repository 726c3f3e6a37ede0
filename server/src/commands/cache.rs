//! CACHE.GET, CACHE.FILL and CACHE.ABANDON: leases over RESP (see `leases.rs`). A
//! CACHE.GET that must wait for another client's fill does not block the node: the
//! handler parks a [`BlockedGet`] on the connection, which awaits it after writing the
//! replies before it, then carries on with the rest of the pipeline.

use std::time::Duration;

use bytes::Bytes;
use ringkv_protocol::Args;
use ringkv_store::AdaptiveTtl;
use ringkv_store::flight::{Follower, Landing};

use crate::handler::{CmdError, CmdResult, Ctx, int_arg, is};
use crate::leases::{FillTtl, GetStep, LeaseError};
use crate::node::{Node, unix_ms};

/// A CACHE.GET waiting for another client's fill.
#[derive(Debug)]
pub struct BlockedGet {
    key: Vec<u8>,
    lease_ms: u64,
    wait_until: u64,
    lease_expires_at: u64,
    follower: Follower<Bytes>,
}

// A plain function, not `From`: a second `From` for CmdError breaks `?` inference in
// closures elsewhere.
fn lease_error(error: LeaseError) -> CmdError {
    match error {
        LeaseError::WrongType => CmdError::WrongType,
        other => CmdError::Custom(other.to_string()),
    }
}

fn positive_ms(arg: &[u8], command: &'static str) -> Result<u64, CmdError> {
    let ms = int_arg(arg)?;
    if ms <= 0 {
        return Err(CmdError::InvalidExpire(command));
    }
    Ok(ms as u64)
}

/// CACHE.GET key LEASE ms [WAIT ms]
pub fn get(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let (mut lease_ms, mut wait_ms) = (None, 0u64);
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(CmdError::Syntax);
        }
        let value = args.get(i + 1);
        if is(args.get(i), "LEASE") {
            lease_ms = Some(positive_ms(value, "cache.get")?);
        } else if is(args.get(i), "WAIT") {
            wait_ms = u64::try_from(int_arg(value)?).map_err(|_| CmdError::Syntax)?;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 2;
    }
    let lease_ms = lease_ms.ok_or(CmdError::Custom(
        "ERR CACHE.GET needs LEASE <milliseconds>: how long a client may take to fill".into(),
    ))?;
    let beta = ctx.node.config.read().cache_xfetch_beta;
    let step = ctx
        .node
        .leases
        .get(&ctx.node.store, key, ctx.now, lease_ms, beta)
        .map_err(lease_error)?;
    match step {
        GetStep::Reply { value, token } => write_get_reply(ctx.out, value.as_deref(), token),
        // Inside EXEC nothing may block: answer as if WAIT ran out.
        GetStep::Wait { .. } if wait_ms == 0 || ctx.conn.no_block => {
            write_get_reply(ctx.out, None, None)
        }
        GetStep::Wait {
            follower,
            lease_expires_at,
        } => {
            ctx.conn.parked = Some(super::Parked::CacheGet(BlockedGet {
                key: key.to_vec(),
                lease_ms,
                wait_until: ctx.now.saturating_add(wait_ms),
                lease_expires_at,
                follower,
            }));
        }
    }
    Ok(())
}

/// `[value, token]`, either of them null.
pub fn write_get_reply(
    out: &mut ringkv_protocol::ReplyWriter<'_>,
    value: Option<&[u8]>,
    token: Option<u64>,
) {
    out.array(2);
    out.bulk_or_null(value);
    match token {
        Some(token) => out.bulk(itoa::Buffer::new().format(token).as_bytes()),
        None => out.null(),
    }
}

/// Waits for a parked CACHE.GET: the fill's value, a lease of its own once the holder
/// abandons or its lease runs out, or `[nil, nil]` when WAIT runs out first.
pub async fn finish_blocked(
    node: &Node,
    mut blocked: BlockedGet,
) -> Result<(Option<Bytes>, Option<u64>), CmdError> {
    loop {
        let until = blocked.wait_until.min(blocked.lease_expires_at);
        let now = unix_ms();
        let landing = if until > now {
            tokio::time::timeout(Duration::from_millis(until - now), &mut blocked.follower)
                .await
                .ok()
        } else {
            // The wall clock may lag the timer by a millisecond; do not spin.
            tokio::time::sleep(Duration::from_millis(1)).await;
            None
        };
        if let Some(Landing::Landed(value)) = landing {
            return Ok((Some(value), None));
        }
        let now = unix_ms();
        if landing.is_none() && now >= blocked.wait_until {
            return Ok((None, None));
        }
        // Abandoned, or the holder's lease ran out: try again (one waiter gets the lease).
        let beta = node.config.read().cache_xfetch_beta;
        match node
            .leases
            .get(&node.store, &blocked.key, now, blocked.lease_ms, beta)
            .map_err(lease_error)?
        {
            GetStep::Reply { value, token } => return Ok((value, token)),
            GetStep::Wait {
                follower,
                lease_expires_at,
            } => {
                blocked.follower = follower;
                blocked.lease_expires_at = lease_expires_at;
            }
        }
    }
}

/// CACHE.FILL key token value [EX seconds | PX milliseconds | ADAPTIVE]
pub fn fill(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (key, token, value) = (args.get(1), args.get(2), args.get(3));
    let ttl = match args.len() {
        4 => FillTtl::Persist,
        5 if is(args.get(4), "ADAPTIVE") => FillTtl::Adaptive,
        6 if is(args.get(4), "EX") => {
            let seconds = positive_ms(args.get(5), "cache.fill")?;
            FillTtl::Millis(
                seconds
                    .checked_mul(1000)
                    .ok_or(CmdError::InvalidExpire("cache.fill"))?,
            )
        }
        6 if is(args.get(4), "PX") => FillTtl::Millis(positive_ms(args.get(5), "cache.fill")?),
        _ => return Err(CmdError::Syntax),
    };
    let token = parse_token(token)?;
    let (policy, grace_ms) = {
        let config = ctx.node.config.read();
        (
            AdaptiveTtl::new(
                config.cache_adaptive_base_ms,
                config.cache_adaptive_min_ms,
                config.cache_adaptive_max_ms,
            ),
            config.cache_grace_ms,
        )
    };
    ctx.node
        .leases
        .fill(
            &ctx.node.store,
            key,
            token,
            Bytes::copy_from_slice(value),
            ttl,
            &policy,
            grace_ms,
            ctx.now,
        )
        .map_err(lease_error)?;
    ctx.out.ok();
    Ok(())
}

/// CACHE.ABANDON key token
pub fn abandon(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let token = parse_token(args.get(2))?;
    ctx.node
        .leases
        .abandon(&ctx.node.store, args.get(1), token, ctx.now)
        .map_err(lease_error)?;
    ctx.out.ok();
    Ok(())
}

/// A token we never issued is simply not current.
fn parse_token(arg: &[u8]) -> Result<u64, CmdError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| lease_error(LeaseError::Stale))
}
