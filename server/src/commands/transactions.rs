//! MULTI/EXEC/DISCARD/WATCH/UNWATCH. EXEC runs with the store gate held exclusively, so no
//! other connection's command interleaves with a transaction. A command that fails inside
//! EXEC does not stop the others, as in Redis.

use ringkv_protocol::{Args, Batch, RequestParser};

use crate::dispatch;
use crate::handler::{CmdError, CmdResult, Ctx};

/// MULTI
pub fn multi(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    if ctx.conn.in_multi() {
        return Err(CmdError::Custom("ERR MULTI calls can not be nested".into()));
    }
    ctx.conn.begin_multi();
    ctx.out.ok();
    Ok(())
}

/// DISCARD
pub fn discard(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    if ctx.conn.take_multi().is_none() {
        return Err(CmdError::Custom("ERR DISCARD without MULTI".into()));
    }
    ctx.conn.unwatch_all(ctx.node);
    ctx.out.ok();
    Ok(())
}

/// EXEC
pub fn exec(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let Some(((queued, count), refused)) = ctx.conn.take_multi() else {
        return Err(CmdError::Custom("ERR EXEC without MULTI".into()));
    };
    let watches_hold = ctx
        .conn
        .watches
        .iter()
        .all(|ticket| ctx.node.store.watch_unchanged(ticket, ctx.now));
    ctx.conn.unwatch_all(ctx.node);
    if refused {
        return Err(CmdError::Custom(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    if !watches_hold {
        ctx.out.null_array();
        return Ok(());
    }
    // The queue is our own RESP encoding of commands that already parsed once.
    let mut batch = Batch::new();
    let parsed = RequestParser::default().parse(&queued, &mut batch);
    debug_assert!(parsed.is_ok() && batch.len() == count);
    // Queued under an older view perhaps: a slot that moved since (a handoff fenced it
    // while the transaction was queued) discards it, as Redis Cluster answers EXEC.
    for i in 0..batch.len() {
        let args = batch.command(&queued, i);
        if let Some(route) = dispatch::route_of(&args) {
            dispatch::still_local(ctx.node, ctx.conn, route, &args)?;
        }
    }
    ctx.out.array(batch.len());
    ctx.conn.no_block = true;
    for i in 0..batch.len() {
        dispatch::run_queued(
            ctx.node,
            ctx.conn,
            ctx.out,
            batch.command(&queued, i),
            ctx.now,
        );
    }
    ctx.conn.no_block = false;
    Ok(())
}

/// WATCH key [key ...]
pub fn watch(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.conn.in_multi() {
        return Err(CmdError::Custom(
            "ERR WATCH inside MULTI is not allowed".into(),
        ));
    }
    for key in args.iter().skip(1) {
        let ticket = ctx.node.store.watch(key, ctx.now);
        ctx.conn.watches.push(ticket);
    }
    ctx.out.ok();
    Ok(())
}

/// UNWATCH
pub fn unwatch(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    ctx.conn.unwatch_all(ctx.node);
    ctx.out.ok();
    Ok(())
}
