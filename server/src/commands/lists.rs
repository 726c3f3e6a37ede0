//! List commands, the blocking pops included. Replies and errors follow Redis 7.0's
//! `t_list.c` word for word.

use std::time::Duration;

use ringkv_protocol::{Args, ReplyWriter};
use ringkv_store::{ListValue, Store, Value};

use super::blocked::{MultiPop, block_on, encode, parse_mpop, timeout_arg};
use crate::blocking::{Serve, ServeOutcome, ServedEvent, WaitKind};
use crate::handler::{
    CmdError, CmdResult, Ctx, int_arg, is, positive_count, ranged, read_as, wrong_type,
};
use crate::node::unix_ms;
use crate::notify::Class;

/// Reads the list at `key`: `f(None)` when missing, WRONGTYPE for another type.
fn read_list<R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(Option<&ListValue>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, CmdError> {
    read_as(ctx, key, Value::as_list, f)
}

/// `start..=stop` of a list of `len` after Redis's index rules, or `None` when empty.
fn clamp_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 { stop + len } else { stop };
    if start > stop || start >= len {
        return None;
    }
    Some((start as usize, stop.min(len - 1) as usize))
}

/// An index from the head for a Redis index (negative counts from the tail).
fn resolve_index(index: i64, len: usize) -> Option<usize> {
    let at = if index < 0 { index + len as i64 } else { index };
    (0..len as i64).contains(&at).then_some(at as usize)
}

/// LEFT or RIGHT; true for LEFT.
fn side_arg(arg: &[u8]) -> Result<bool, CmdError> {
    if is(arg, "left") {
        Ok(true)
    } else if is(arg, "right") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

fn push(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, front: bool, only_existing: bool) -> CmdResult {
    let items: Vec<&[u8]> = args.iter().skip(2).collect();
    let len = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        if only_existing && slot.list().map_err(wrong_type)?.is_none() {
            return Ok(0);
        }
        slot.list_push(front, &items).map_err(wrong_type)
    })?;
    if len > 0 {
        ctx.notify(
            Class::LIST,
            if front { "lpush" } else { "rpush" },
            args.get(1),
        );
    }
    ctx.out.int(len as i64);
    Ok(())
}

/// LPUSH key element [element ...]
pub fn lpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push(ctx, &args, true, false)
}

/// RPUSH key element [element ...]
pub fn rpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push(ctx, &args, false, false)
}

/// LPUSHX key element [element ...]
pub fn lpushx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push(ctx, &args, true, true)
}

/// RPUSHX key element [element ...]
pub fn rpushx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    push(ctx, &args, false, true)
}

fn pop(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, front: bool) -> CmdResult {
    if args.len() > 3 {
        return Err(CmdError::WrongArity(if front { "lpop" } else { "rpop" }));
    }
    let count = if args.len() == 3 {
        Some(positive_count(args.get(2))?)
    } else {
        None
    };
    let popped = ctx
        .node
        .store
        .write(args.get(1), ctx.now, |slot| {
            if slot.list()?.is_none() {
                return Ok(None);
            }
            slot.list_pop(front, count.unwrap_or(1)).map(Some)
        })
        .map_err(wrong_type)?;
    if popped.as_ref().is_some_and(|items| !items.is_empty()) {
        ctx.notify_removed(Class::LIST, pop_event(front), args.get(1));
    }
    match (popped, count) {
        (None, Some(_)) => ctx.out.null_array(),
        (None, None) => ctx.out.null(),
        (Some(items), None) => ctx.out.bulk_or_null(items.first().map(Vec::as_slice)),
        (Some(items), Some(_)) => {
            ctx.out.array(items.len());
            for item in &items {
                ctx.out.bulk(item);
            }
        }
    }
    Ok(())
}

/// LPOP key [count]
pub fn lpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop(ctx, &args, true)
}

/// RPOP key [count]
pub fn rpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop(ctx, &args, false)
}

/// LLEN key
pub fn llen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let len = read_list(ctx, args.get(1), |l, _| l.map_or(0, ListValue::len))?;
    ctx.out.int(len as i64);
    Ok(())
}

/// LRANGE key start stop
pub fn lrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (start, stop) = (int_arg(args.get(2))?, int_arg(args.get(3))?);
    read_list(ctx, args.get(1), |list, out| {
        let range = list.and_then(|l| Some((l, clamp_range(start, stop, l.len())?)));
        match range {
            None => out.array(0),
            Some((list, (first, last))) => {
                out.array(last - first + 1);
                for item in list.range(first, last) {
                    out.bulk(item);
                }
            }
        }
    })
}

/// LINDEX key index
pub fn lindex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let index = int_arg(args.get(2))?;
    read_list(ctx, args.get(1), |list, out| {
        let item = list.and_then(|l| l.get(resolve_index(index, l.len())?));
        out.bulk_or_null(item);
    })
}

/// LSET key index element
pub fn lset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let index = int_arg(args.get(2))?;
    let item = args.get(3);
    ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let Some(list) = slot.list().map_err(wrong_type)? else {
            return Err(CmdError::NoSuchKey);
        };
        let Some(at) = resolve_index(index, list.len()) else {
            return Err(CmdError::Custom("ERR index out of range".into()));
        };
        slot.list_set(at, item).map_err(wrong_type)?;
        Ok(())
    })?;
    ctx.notify(Class::LIST, "lset", args.get(1));
    ctx.out.ok();
    Ok(())
}

/// LINSERT key BEFORE|AFTER pivot element
pub fn linsert(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let after = if is(args.get(2), "after") {
        true
    } else if is(args.get(2), "before") {
        false
    } else {
        return Err(CmdError::Syntax);
    };
    let (pivot, item) = (args.get(3), args.get(4));
    let len = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let Some(list) = slot.list().map_err(wrong_type)? else {
            return Ok(0);
        };
        let Some(found) = list.iter().position(|e| e == pivot) else {
            return Ok(-1);
        };
        let at = found + usize::from(after);
        slot.list_insert(at, item).map_err(wrong_type)?;
        Ok(slot.list().ok().flatten().map_or(0, |l| l.len() as i64))
    })?;
    if len > 0 {
        ctx.notify(Class::LIST, "linsert", args.get(1));
        ctx.events_first();
    }
    ctx.out.int(len);
    Ok(())
}

/// LREM key count element
pub fn lrem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let count = int_arg(args.get(2))?;
    let removed = ctx
        .node
        .store
        .write(args.get(1), ctx.now, |slot| {
            slot.list_remove(count, args.get(3))
        })
        .map_err(wrong_type)?;
    if removed > 0 {
        ctx.notify_removed(Class::LIST, "lrem", args.get(1));
        ctx.events_first();
    }
    ctx.out.int(removed as i64);
    Ok(())
}

/// LTRIM key start stop
pub fn ltrim(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (start, stop) = (int_arg(args.get(2))?, int_arg(args.get(3))?);
    let existed = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let Some(list) = slot.list().map_err(wrong_type)? else {
            return Ok(false);
        };
        let len = list.len();
        let (head, tail) = match clamp_range(start, stop, len) {
            None => (len, 0),
            Some((first, last)) => (first, len - 1 - last),
        };
        slot.list_trim(head, tail).map_err(wrong_type)?;
        Ok::<_, CmdError>(true)
    })?;
    if existed {
        ctx.notify_removed(Class::LIST, "ltrim", args.get(1));
        ctx.events_first();
    }
    ctx.out.ok();
    Ok(())
}

/// LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]
pub fn lpos(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let element = args.get(2);
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < args.len() {
        let more = i + 1 < args.len();
        let option = args.get(i);
        if is(option, "rank") && more {
            rank = int_arg(args.get(i + 1))?;
            if rank == i64::MIN {
                return Err(CmdError::Custom("ERR value is out of range".into()));
            }
            if rank == 0 {
                return Err(CmdError::Custom(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list".into(),
                ));
            }
        } else if is(option, "count") && more {
            count = Some(ranged(args.get(i + 1), 0, "COUNT can't be negative")? as usize);
        } else if is(option, "maxlen") && more {
            maxlen = ranged(args.get(i + 1), 0, "MAXLEN can't be negative")? as usize;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 2;
    }
    read_list(ctx, args.get(1), |list, out| {
        let Some(list) = list else {
            return match count {
                Some(_) => out.array(0),
                None => out.null(),
            };
        };
        let len = list.len();
        let skip = rank.unsigned_abs() as usize - 1;
        let want = match count {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => 1,
        };
        let limit = if maxlen == 0 { len } else { maxlen.min(len) };
        let scanned: Box<dyn Iterator<Item = &[u8]>> = if rank > 0 {
            Box::new(list.iter())
        } else {
            Box::new(list.iter_rev())
        };
        let found: Vec<usize> = scanned
            .take(limit)
            .enumerate()
            .filter(|(_, e)| *e == element)
            .map(|(i, _)| if rank > 0 { i } else { len - 1 - i })
            .skip(skip)
            .take(want)
            .collect();
        match count {
            None => match found.first() {
                Some(&at) => out.int(at as i64),
                None => out.null(),
            },
            Some(_) => {
                out.array(found.len());
                for at in found {
                    out.int(at as i64);
                }
            }
        }
    })
}

/// Moves one element from `source` to `destination` under the shard locks; `None` when
/// the source is empty. WRONGTYPE when either key holds another type.
fn move_one(
    store: &Store,
    now: u64,
    source: &[u8],
    destination: &[u8],
    from_front: bool,
    to_front: bool,
) -> Result<Option<Vec<u8>>, CmdError> {
    // Redis's order of checks: a missing source answers nil whatever the destination.
    // Write look-ups in Redis: no hit or miss counted, no keymiss.
    let is_list = |key: &[u8]| {
        store.inspect(key, now, |entry| match entry {
            None => Ok(false),
            Some(entry) => entry
                .value
                .as_list()
                .map(|_| true)
                .ok_or(CmdError::WrongType),
        })
    };
    if !is_list(source)? {
        return Ok(None);
    }
    is_list(destination)?;
    let popped = store
        .write(source, now, |slot| slot.list_pop(from_front, 1))
        .map_err(wrong_type)?;
    let Some(item) = popped.into_iter().next() else {
        return Ok(None);
    };
    store
        .write(destination, now, |slot| slot.list_push(to_front, &[&item]))
        .map_err(wrong_type)?;
    Ok(Some(item))
}

fn pop_event(front: bool) -> &'static str {
    if front { "lpop" } else { "rpop" }
}

/// LMOVE and RPOPLPUSH: the element moved, with the source's and destination's events.
fn move_and_answer(
    ctx: &mut Ctx<'_, '_>,
    args: &Args<'_>,
    from_front: bool,
    to_front: bool,
) -> CmdResult {
    let (source, destination) = (args.get(1), args.get(2));
    let moved = move_one(
        &ctx.node.store,
        ctx.now,
        source,
        destination,
        from_front,
        to_front,
    )?;
    // Redis tells of the push before its reply and of the pop after it.
    if moved.is_some() {
        let push = if to_front { "lpush" } else { "rpush" };
        ctx.notify(Class::LIST, push, destination);
        ctx.events_first();
    }
    ctx.out.bulk_or_null(moved.as_deref());
    if moved.is_some() {
        ctx.notify_removed(Class::LIST, pop_event(from_front), source);
    }
    Ok(())
}

/// LMOVE source destination LEFT|RIGHT LEFT|RIGHT
pub fn lmove(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (from_front, to_front) = (side_arg(args.get(3))?, side_arg(args.get(4))?);
    move_and_answer(ctx, &args, from_front, to_front)
}

/// RPOPLPUSH source destination
pub fn rpoplpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    move_and_answer(ctx, &args, false, true)
}

/// A key and the elements popped from it.
type Popped = (Vec<u8>, Vec<Vec<u8>>);

/// Pops from the first non-empty list of `keys`: the key and the elements.
fn mpop_once(
    store: &Store,
    now: u64,
    keys: &[Vec<u8>],
    front: bool,
    count: usize,
) -> Result<Option<Popped>, CmdError> {
    for key in keys {
        let popped = store
            .write(key, now, |slot| slot.list_pop(front, count))
            .map_err(wrong_type)?;
        if !popped.is_empty() {
            return Ok(Some((key.clone(), popped)));
        }
    }
    Ok(None)
}

fn write_key_and_items(out: &mut ReplyWriter<'_>, key: &[u8], items: &[Vec<u8>]) {
    out.array(2);
    out.bulk(key);
    out.array(items.len());
    for item in items {
        out.bulk(item);
    }
}

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]
pub fn lmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let parsed = parse_mpop(&args, 1, side_arg)?;
    match mpop_once(
        &ctx.node.store,
        ctx.now,
        &parsed.keys,
        parsed.front,
        parsed.count,
    )? {
        Some((key, items)) => {
            ctx.notify_removed(Class::LIST, pop_event(parsed.front), &key);
            write_key_and_items(ctx.out, ctx.node.store.logical_key(&key), &items)
        }
        None => ctx.out.null_array(),
    }
    Ok(())
}

fn blocking_pop(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, front: bool) -> CmdResult {
    let timeout = timeout_arg(args.get(args.len() - 1))?;
    let keys: Vec<Vec<u8>> = (1..args.len() - 1).map(|i| args.get(i).to_vec()).collect();
    let protocol = ctx.out.protocol();
    let attempt_keys = keys.clone();
    let attempt = move |store: &Store, now: u64| {
        Ok(
            mpop_once(store, now, &attempt_keys, front, 1)?.map(|(key, items)| {
                encode(protocol, |out| {
                    out.array(2);
                    out.bulk(store.logical_key(&key));
                    out.bulk(&items[0]);
                })
            }),
        )
    };
    let store = ctx.node.store.clone();
    let flags = ctx.node.notifier.shared_flags();
    let serve: Serve = Box::new(move |key, protocol| {
        let now = unix_ms();
        let popped = store.write(key, now, |slot| slot.list_pop(front, 1)).ok()?;
        let item = popped.into_iter().next()?;
        Some(ServeOutcome {
            reply: encode(protocol, |out| {
                out.array(2);
                out.bulk(store.logical_key(key));
                out.bulk(&item);
            }),
            touched: Vec::new(),
            events: ServedEvent::popped(&store, &flags, (Class::LIST, pop_event(front)), key, now),
        })
    });
    block_on(ctx, keys, timeout, true, WaitKind::Takes, attempt, serve)
}

/// BLPOP key [key ...] timeout
pub fn blpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    blocking_pop(ctx, &args, true)
}

/// BRPOP key [key ...] timeout
pub fn brpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    blocking_pop(ctx, &args, false)
}

fn blocking_move(
    ctx: &mut Ctx<'_, '_>,
    source: &[u8],
    destination: &[u8],
    from_front: bool,
    to_front: bool,
    timeout: Option<Duration>,
) -> CmdResult {
    let protocol = ctx.out.protocol();
    let (src, dst) = (source.to_vec(), destination.to_vec());
    let attempt = move |store: &Store, now: u64| {
        Ok(move_one(store, now, &src, &dst, from_front, to_front)?
            .map(|item| encode(protocol, |out| out.bulk(&item))))
    };
    let store = ctx.node.store.clone();
    let dst = destination.to_vec();
    let flags = ctx.node.notifier.shared_flags();
    let serve: Serve = Box::new(move |key, protocol| {
        let now = unix_ms();
        let is_list = |e: Option<ringkv_store::EntryView<'_>>| {
            e.is_some_and(|e| matches!(e.value, Value::List(_)))
        };
        if !store.inspect(key, now, is_list) {
            return None;
        }
        // The source holds elements: a destination of another type answers the waiter
        // with WRONGTYPE and leaves the element where it is, as Redis does.
        match move_one(&store, now, key, &dst, from_front, to_front) {
            Ok(None) => None,
            Ok(Some(item)) => {
                // Redis tells of the push to the destination, then of the pop.
                let push = if to_front { "lpush" } else { "rpush" };
                let mut events: Vec<ServedEvent> =
                    ServedEvent::wanted(&flags, Class::LIST, push, &dst)
                        .into_iter()
                        .collect();
                events.extend(ServedEvent::popped(
                    &store,
                    &flags,
                    (Class::LIST, pop_event(from_front)),
                    key,
                    now,
                ));
                Some(ServeOutcome {
                    reply: encode(protocol, |out| out.bulk(&item)),
                    touched: vec![dst.clone()],
                    events,
                })
            }
            Err(error) => Some(ServeOutcome {
                reply: encode(protocol, |out| out.error(&error.to_string())),
                touched: Vec::new(),
                events: Vec::new(),
            }),
        }
    });
    let keys = vec![source.to_vec()];
    block_on(ctx, keys, timeout, false, WaitKind::Moves, attempt, serve)
}

/// BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout
pub fn blmove(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (from_front, to_front) = (side_arg(args.get(3))?, side_arg(args.get(4))?);
    let timeout = timeout_arg(args.get(5))?;
    blocking_move(ctx, args.get(1), args.get(2), from_front, to_front, timeout)
}

/// BRPOPLPUSH source destination timeout
pub fn brpoplpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let timeout = timeout_arg(args.get(3))?;
    blocking_move(ctx, args.get(1), args.get(2), false, true, timeout)
}

/// BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]
pub fn blmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let timeout = timeout_arg(args.get(1))?;
    let MultiPop { keys, front, count } = parse_mpop(&args, 2, side_arg)?;
    let protocol = ctx.out.protocol();
    let attempt_keys = keys.clone();
    let attempt = move |store: &Store, now: u64| {
        Ok(
            mpop_once(store, now, &attempt_keys, front, count)?.map(|(key, items)| {
                encode(protocol, |out| {
                    write_key_and_items(out, store.logical_key(&key), &items)
                })
            }),
        )
    };
    let store = ctx.node.store.clone();
    let flags = ctx.node.notifier.shared_flags();
    let serve: Serve = Box::new(move |key, protocol| {
        let now = unix_ms();
        let items = store
            .write(key, now, |slot| slot.list_pop(front, count))
            .ok()?;
        (!items.is_empty()).then(|| ServeOutcome {
            reply: encode(protocol, |out| {
                write_key_and_items(out, store.logical_key(key), &items)
            }),
            touched: Vec::new(),
            events: ServedEvent::popped(&store, &flags, (Class::LIST, pop_event(front)), key, now),
        })
    });
    block_on(ctx, keys, timeout, true, WaitKind::Takes, attempt, serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_redis_index_rules() {
        assert_eq!(clamp_range(0, -1, 5), Some((0, 4)));
        assert_eq!(clamp_range(-100, 100, 5), Some((0, 4)));
        assert_eq!(clamp_range(3, 1, 5), None);
        assert_eq!(clamp_range(5, 10, 5), None);
        assert_eq!(clamp_range(-2, -1, 5), Some((3, 4)));
        assert_eq!(clamp_range(0, 0, 0), None);
        assert_eq!(resolve_index(-1, 3), Some(2));
        assert_eq!(resolve_index(3, 3), None);
        assert_eq!(resolve_index(-4, 3), None);
    }
}
