//! Set commands. Replies and errors follow Redis 7.0's `t_set.c`: member lists are RESP3
//! sets (SRANDMEMBER's an array), a missing key is an empty set, and every key of a
//! multi-key command is type-checked before anything is read or written.

use rand::Rng;
use ringkv_protocol::{Args, ReplyWriter};
use ringkv_store::{SetValue, Store, Value, glob_match, scan_window};

use super::keys::{member_scan_options, write_scan_reply};
use crate::handler::{
    CmdError, CmdResult, Ctx, MemberEvent, change_members, int_arg, positive_count, ranged,
    read_as, wrong_type,
};
use crate::notify::Class;

/// Reads the set at `key`: `f(None)` when missing, WRONGTYPE for another type.
fn read_set<R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(Option<&SetValue>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, CmdError> {
    read_as(ctx, key, Value::as_set, f)
}

/// Writes members as a set reply (an array in RESP2).
fn write_members<'a>(
    out: &mut ReplyWriter<'_>,
    len: usize,
    members: impl Iterator<Item = &'a [u8]>,
) {
    out.set(len);
    for member in members {
        out.bulk(member);
    }
}

/// SADD key member [member ...]
pub fn sadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let event = MemberEvent {
        class: Class::SET,
        name: "sadd",
        removes: false,
    };
    change_members(ctx, &args, event, |slot, members| slot.set_add(members))
}

/// SREM key member [member ...]
pub fn srem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let event = MemberEvent {
        class: Class::SET,
        name: "srem",
        removes: true,
    };
    change_members(ctx, &args, event, |slot, members| slot.set_remove(members))
}

/// SMEMBERS key
pub fn smembers(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_set(ctx, args.get(1), |set, out| match set {
        Some(set) => write_members(out, set.len(), set.iter()),
        None => out.set(0),
    })
}

/// SISMEMBER key member
pub fn sismember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let member = args.get(2);
    read_set(ctx, args.get(1), |set, out| {
        out.int(set.is_some_and(|s| s.contains(member)) as i64)
    })
}

/// SMISMEMBER key member [member ...]
pub fn smismember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_set(ctx, args.get(1), |set, out| {
        out.array(args.len() - 2);
        for member in args.iter().skip(2) {
            out.int(set.is_some_and(|s| s.contains(member)) as i64);
        }
    })
}

/// SCARD key
pub fn scard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_set(ctx, args.get(1), |set, out| {
        out.int(set.map_or(0, SetValue::len) as i64)
    })
}

/// SPOP key [count]
pub fn spop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(CmdError::Syntax);
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
            let Some(set) = slot.set_members()? else {
                return Ok(None);
            };
            let mut rng = rand::rng();
            let take = count.unwrap_or(1).min(set.len());
            // Distinct positions; members are copied out before any is removed, since a
            // removal moves another member into the freed position.
            let members: Vec<Vec<u8>> = rand::seq::index::sample(&mut rng, set.len(), take)
                .into_iter()
                .filter_map(|i| set.get_index(i).map(<[u8]>::to_vec))
                .collect();
            let refs: Vec<&[u8]> = members.iter().map(Vec::as_slice).collect();
            slot.set_remove(&refs)?;
            Ok(Some(members))
        })
        .map_err(wrong_type)?;
    let popped_any = popped.as_ref().is_some_and(|members| !members.is_empty());
    if popped_any {
        // Redis tells of the pop before its reply, of the emptied key after it.
        ctx.notify(Class::SET, "spop", args.get(1));
        ctx.events_first();
    }
    match (popped, count) {
        (None, None) => ctx.out.null(),
        (None, Some(_)) => ctx.out.set(0),
        (Some(members), None) => ctx.out.bulk_or_null(members.first().map(Vec::as_slice)),
        (Some(members), Some(_)) => {
            write_members(ctx.out, members.len(), members.iter().map(Vec::as_slice))
        }
    }
    if popped_any && !ctx.node.store.contains(args.get(1), ctx.now) {
        ctx.notify(Class::GENERIC, "del", args.get(1));
    }
    Ok(())
}

/// The most members one SRANDMEMBER with a negative count returns.
const MAX_RANDOM_MEMBERS: u64 = 1 << 24;

/// SRANDMEMBER key [count]
pub fn srandmember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(CmdError::Syntax);
    }
    let count = if args.len() == 3 {
        let n = int_arg(args.get(2))?;
        // -LONG_MIN has no positive counterpart; a huge negative count would build an
        // unbounded reply.
        if n == i64::MIN || (n < 0 && n.unsigned_abs() > MAX_RANDOM_MEMBERS) {
            return Err(CmdError::Custom("ERR value is out of range".into()));
        }
        Some(n)
    } else {
        None
    };
    read_set(ctx, args.get(1), |set, out| {
        let mut rng = rand::rng();
        let set = set.filter(|s| !s.is_empty());
        let Some(count) = count else {
            let pick = set.and_then(|s| s.get_index(rng.random_range(0..s.len())));
            out.bulk_or_null(pick);
            return;
        };
        let Some(set) = set else {
            out.array(0);
            return;
        };
        if count < 0 {
            let n = count.unsigned_abs() as usize;
            out.array(n);
            for _ in 0..n {
                out.bulk(
                    set.get_index(rng.random_range(0..set.len()))
                        .unwrap_or_default(),
                );
            }
            return;
        }
        let n = (count as usize).min(set.len());
        let picks = rand::seq::index::sample(&mut rng, set.len(), n);
        out.array(n);
        for i in picks {
            out.bulk(set.get_index(i).unwrap_or_default());
        }
    })
}

/// SMOVE source destination member
pub fn smove(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (source, destination, member) = (args.get(1), args.get(2), args.get(3));
    let store = &ctx.node.store;
    // A write look-up in Redis: no hit or miss counted, no keymiss.
    let source_has = store.inspect(source, ctx.now, |entry| match entry {
        None => Ok(None),
        Some(entry) => entry
            .value
            .as_set()
            .map(|s| Some(s.contains(member)))
            .ok_or(CmdError::WrongType),
    })?;
    // Redis's order of checks: a missing source answers 0 whatever the destination holds.
    if source_has.is_some() {
        check_sets(store, ctx.now, &[destination])?;
    }
    let moved = match source_has {
        None | Some(false) => false,
        // A move onto the same set changes nothing and answers whether it is a member.
        Some(true) if source == destination => true,
        Some(true) => {
            store
                .write(source, ctx.now, |slot| slot.set_remove(&[member]))
                .map_err(wrong_type)?;
            store
                .write(destination, ctx.now, |slot| slot.set_add(&[member]))
                .map_err(wrong_type)?;
            ctx.notify_removed(Class::SET, "srem", source);
            ctx.notify(Class::SET, "sadd", destination);
            ctx.events_first();
            true
        }
    };
    ctx.out.int(moved as i64);
    Ok(())
}

/// WRONGTYPE when any of `keys` holds something other than a set.
fn check_sets(store: &Store, now: u64, keys: &[&[u8]]) -> Result<(), CmdError> {
    for key in keys {
        store.read(key, now, |v| match v {
            Some(v) if v.as_set().is_none() => Err(CmdError::WrongType),
            _ => Ok(()),
        })?;
    }
    Ok(())
}

/// What a set algebra command computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Inter,
    Union,
    Diff,
}

/// The members of `op` over `keys` (a missing key is an empty set), with the types of all
/// of them checked first. An intersection stops at `limit` members (0: no limit).
fn combine(
    store: &Store,
    now: u64,
    keys: &[&[u8]],
    op: SetOp,
    limit: usize,
) -> Result<Vec<Vec<u8>>, CmdError> {
    // check_sets reads each key once, as Redis looks each up once; the passes below only
    // look again (no second hit or miss counted, no second keymiss).
    check_sets(store, now, keys)?;
    let set_of = |key: &[u8], f: &mut dyn FnMut(Option<&SetValue>)| {
        store.inspect(key, now, |entry| f(entry.and_then(|e| e.value.as_set())))
    };
    let len_of = |key: &[u8]| {
        let mut len = None;
        set_of(key, &mut |set| len = set.map(SetValue::len));
        len
    };
    match op {
        SetOp::Inter => {
            let mut sizes = Vec::with_capacity(keys.len());
            for key in keys {
                match len_of(key) {
                    Some(len) => sizes.push((len, *key)),
                    None => return Ok(Vec::new()),
                }
            }
            // Walk the smallest set; test its members against the others.
            sizes.sort_by_key(|(len, _)| *len);
            let mut candidates: Vec<Vec<u8>> = Vec::new();
            set_of(sizes[0].1, &mut |set| {
                candidates = set
                    .map(|s| s.iter().map(<[u8]>::to_vec).collect())
                    .unwrap_or_default();
            });
            for (_, key) in &sizes[1..] {
                if *key == sizes[0].1 {
                    continue;
                }
                set_of(key, &mut |set| {
                    candidates.retain(|m| set.is_some_and(|s| s.contains(m)));
                });
            }
            if limit > 0 {
                candidates.truncate(limit);
            }
            Ok(candidates)
        }
        SetOp::Union | SetOp::Diff => {
            let mut result = SetValue::new();
            for (i, key) in keys.iter().enumerate() {
                set_of(key, &mut |set| {
                    let Some(set) = set else {
                        return;
                    };
                    for member in set.iter() {
                        if op == SetOp::Union || i == 0 {
                            result.insert(member);
                        } else {
                            result.remove(member);
                        }
                    }
                });
                if op == SetOp::Diff && result.is_empty() {
                    break;
                }
            }
            Ok(result.iter().map(<[u8]>::to_vec).collect())
        }
    }
}

fn reply_combined(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, op: SetOp) -> CmdResult {
    let keys: Vec<&[u8]> = args.iter().skip(1).collect();
    let members = combine(&ctx.node.store, ctx.now, &keys, op, 0)?;
    write_members(ctx.out, members.len(), members.iter().map(Vec::as_slice));
    Ok(())
}

/// Stores the result of `op` over `args[2..]` at `args[1]` (deleted when empty).
fn store_combined(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, op: SetOp) -> CmdResult {
    let keys: Vec<&[u8]> = args.iter().skip(2).collect();
    let store = &ctx.node.store;
    let members = combine(store, ctx.now, &keys, op, 0)?;
    let result = SetValue::from_members(members.iter().map(Vec::as_slice));
    let len = result.len();
    let existed = store.write(args.get(1), ctx.now, |slot| {
        let existed = slot.remove().is_some();
        if len > 0 {
            slot.set(Value::Set(Box::new(result)), Some(0));
        }
        existed
    });
    if len > 0 {
        let event = match op {
            SetOp::Inter => "sinterstore",
            SetOp::Union => "sunionstore",
            SetOp::Diff => "sdiffstore",
        };
        ctx.notify(Class::SET, event, args.get(1));
    } else if existed {
        ctx.notify(Class::GENERIC, "del", args.get(1));
    }
    ctx.out.int(len as i64);
    Ok(())
}

/// SINTER key [key ...]
pub fn sinter(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    reply_combined(ctx, &args, SetOp::Inter)
}

/// SUNION key [key ...]
pub fn sunion(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    reply_combined(ctx, &args, SetOp::Union)
}

/// SDIFF key [key ...]
pub fn sdiff(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    reply_combined(ctx, &args, SetOp::Diff)
}

/// SINTERSTORE destination key [key ...]
pub fn sinterstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_combined(ctx, &args, SetOp::Inter)
}

/// SUNIONSTORE destination key [key ...]
pub fn sunionstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_combined(ctx, &args, SetOp::Union)
}

/// SDIFFSTORE destination key [key ...]
pub fn sdiffstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    store_combined(ctx, &args, SetOp::Diff)
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit]
pub fn sintercard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let numkeys = ranged(args.get(1), 1, "numkeys should be greater than 0")? as usize;
    if numkeys > args.len() - 2 {
        return Err(CmdError::Custom(
            "ERR Number of keys can't be greater than number of args".into(),
        ));
    }
    let mut limit = 0;
    let mut i = 2 + numkeys;
    while i < args.len() {
        if crate::handler::is(args.get(i), "LIMIT") && i + 1 < args.len() {
            limit = ranged(args.get(i + 1), 0, "LIMIT can't be negative")? as usize;
            i += 2;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let keys: Vec<&[u8]> = (2..2 + numkeys).map(|i| args.get(i)).collect();
    let members = combine(&ctx.node.store, ctx.now, &keys, SetOp::Inter, limit)?;
    ctx.out.int(members.len() as i64);
    Ok(())
}

/// SSCAN key cursor [MATCH pattern] [COUNT count]
pub fn sscan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let options = member_scan_options(&args)?;
    let (next, members) = read_set(ctx, args.get(1), |set, _| {
        let Some(set) = set else {
            return (0, Vec::new());
        };
        let members = set.iter().map(|m| (SetValue::scan_hash(m), m));
        let (window, next) = scan_window(members, options.cursor, options.count);
        let matching = window
            .into_iter()
            .filter(|m| options.pattern.is_none_or(|p| glob_match(p, m, false)))
            .map(<[u8]>::to_vec)
            .collect();
        (next.unwrap_or(0), matching)
    })?;
    write_scan_reply(ctx, next, &members);
    Ok(())
}
