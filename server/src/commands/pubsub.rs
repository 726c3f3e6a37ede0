//! SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, their UNSUBSCRIBEs, PUBLISH, SPUBLISH and PUBSUB,
//! with Redis 7.0's replies in RESP2 and RESP3. The registry and mailboxes live in
//! `crate::pubsub`.

use ringkv_protocol::Args;

use crate::handler::{CmdError, CmdResult, Ctx, help, is};
use crate::pubsub::{Kind, Subscriptions};

fn subscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>, kind: Kind) -> CmdResult {
    let handle = ctx.conn.handle.clone();
    let subscriptions = ctx
        .conn
        .subscriptions
        .get_or_insert_with(|| Box::new(Subscriptions::new(handle)));
    for i in 1..args.len() {
        let name = args.get(i);
        subscriptions.add(&ctx.node.pubsub, kind, name);
        ctx.out.push(3);
        ctx.out.bulk(kind.subscribe_word());
        ctx.out.bulk(name);
        ctx.out.int(subscriptions.count(kind) as i64);
    }
    Ok(())
}

fn unsubscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>, kind: Kind) -> CmdResult {
    let Some(subscriptions) = ctx.conn.subscriptions.as_mut() else {
        // Never subscribed: each name (or none) is answered with a count of 0.
        if args.len() == 1 {
            ctx.out.push(3);
            ctx.out.bulk(kind.unsubscribe_word());
            ctx.out.null();
            ctx.out.int(0);
        }
        for i in 1..args.len() {
            ctx.out.push(3);
            ctx.out.bulk(kind.unsubscribe_word());
            ctx.out.bulk(args.get(i));
            ctx.out.int(0);
        }
        return Ok(());
    };
    // Messages that arrived before the unsubscribe go out before its reply.
    subscriptions.mailbox.drain_to(ctx.out);
    let names: Vec<Box<[u8]>> = if args.len() == 1 {
        subscriptions.names(kind)
    } else {
        (1..args.len()).map(|i| args.get(i).into()).collect()
    };
    if names.is_empty() {
        ctx.out.push(3);
        ctx.out.bulk(kind.unsubscribe_word());
        ctx.out.null();
        ctx.out.int(subscriptions.count(kind) as i64);
    }
    for name in &names {
        subscriptions.remove(&ctx.node.pubsub, kind, name);
        ctx.out.push(3);
        ctx.out.bulk(kind.unsubscribe_word());
        ctx.out.bulk(name);
        ctx.out.int(subscriptions.count(kind) as i64);
    }
    if subscriptions.is_empty() {
        ctx.conn.subscriptions = None;
    }
    Ok(())
}

/// SUBSCRIBE channel [channel ...]
pub fn subscribe_channels(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    subscribe(ctx, args, Kind::Channel)
}

/// PSUBSCRIBE pattern [pattern ...]
pub fn subscribe_patterns(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    subscribe(ctx, args, Kind::Pattern)
}

/// SSUBSCRIBE shardchannel [shardchannel ...]
pub fn subscribe_shard_channels(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    subscribe(ctx, args, Kind::Shard)
}

/// UNSUBSCRIBE [channel ...]
pub fn unsubscribe_channels(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    unsubscribe(ctx, args, Kind::Channel)
}

/// PUNSUBSCRIBE [pattern ...]
pub fn unsubscribe_patterns(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    unsubscribe(ctx, args, Kind::Pattern)
}

/// SUNSUBSCRIBE [shardchannel ...]
pub fn unsubscribe_shard_channels(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    unsubscribe(ctx, args, Kind::Shard)
}

/// Writes a publish's count, after the publisher's own copy of the message (as Redis
/// queues it before the reply).
fn answer_published(ctx: &mut Ctx<'_, '_>, received: usize) {
    if let Some(subscriptions) = &ctx.conn.subscriptions {
        subscriptions.mailbox.drain_to(ctx.out);
    }
    ctx.out.int(received as i64);
}

/// PUBLISH channel message: the count is this member's receivers, as in Redis Cluster;
/// in a cluster the message also goes to every other member.
pub fn publish(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (channel, message) = (args.get(1), args.get(2));
    let received = ctx.node.pubsub.publish(channel, message);
    if let Some(cluster) = &ctx.node.cluster
        && !ctx.conn.forwarded
    {
        cluster.broadcast_publish(channel, message);
    }
    answer_published(ctx, received);
    Ok(())
}

/// SPUBLISH shardchannel message: routed to the channel's slot; the slot's other owners
/// get it too.
pub fn spublish(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (channel, message) = (args.get(1), args.get(2));
    let received = ctx.node.pubsub.publish_shard(channel, message);
    if let Some(cluster) = &ctx.node.cluster
        && !ctx.conn.forwarded
    {
        cluster.broadcast_shard_publish(channel, message);
    }
    answer_published(ctx, received);
    Ok(())
}

fn channels(ctx: &mut Ctx<'_, '_>, args: Args<'_>, kind: Kind) -> CmdResult {
    let pattern = (args.len() > 2).then(|| args.get(2));
    let names = ctx.node.pubsub.channels(kind, pattern);
    ctx.out.array(names.len());
    for name in &names {
        ctx.out.bulk(name);
    }
    Ok(())
}

fn numsub(ctx: &mut Ctx<'_, '_>, args: Args<'_>, kind: Kind) -> CmdResult {
    ctx.out.array((args.len() - 2) * 2);
    for i in 2..args.len() {
        ctx.out.bulk(args.get(i));
        ctx.out.int(ctx.node.pubsub.count(kind, args.get(i)) as i64);
    }
    Ok(())
}

/// PUBSUB CHANNELS [pattern]
pub fn pubsub_channels(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    channels(ctx, args, Kind::Channel)
}

/// PUBSUB SHARDCHANNELS [pattern]
pub fn pubsub_shardchannels(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    channels(ctx, args, Kind::Shard)
}

/// PUBSUB NUMSUB [channel ...]
pub fn pubsub_numsub(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    numsub(ctx, args, Kind::Channel)
}

/// PUBSUB SHARDNUMSUB [shardchannel ...]
pub fn pubsub_shardnumsub(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    numsub(ctx, args, Kind::Shard)
}

/// PUBSUB NUMPAT
pub fn pubsub_numpat(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    ctx.out.int(ctx.node.pubsub.pattern_count() as i64);
    Ok(())
}

/// PUBSUB HELP
pub fn pubsub_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "PUBSUB",
        &[
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
        ],
    );
    Ok(())
}

/// PUBSUB with no subcommand.
pub fn pubsub_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("pubsub"))
}

/// CLUSTER DELIVER MESSAGE|SMESSAGE channel message: a message another member published,
/// for this member's subscribers (passed on to nobody).
pub fn cluster_deliver(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (channel, message) = (args.get(3), args.get(4));
    let received = if is(args.get(2), "MESSAGE") {
        ctx.node.pubsub.publish(channel, message)
    } else if is(args.get(2), "SMESSAGE") {
        ctx.node.pubsub.publish_shard(channel, message)
    } else {
        return Err(CmdError::Syntax);
    };
    ctx.out.int(received as i64);
    Ok(())
}
