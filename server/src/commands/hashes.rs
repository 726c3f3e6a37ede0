//! Hash commands.

use rand::Rng;
use ringkv_protocol::{Args, format_double, parse_i64};
use ringkv_store::{HashValue, Slot, Value, WrongType, glob_match, scan_window};

use super::keys::{hscan_options, write_scan_reply};
use crate::handler::{
    CmdError, CmdResult, Ctx, float_arg, int_arg, is, is_resp3, read_as, wrong_type,
};
use crate::notify::Class;

/// WRONGTYPE unless the key holds a hash or nothing; true when it exists.
fn hash_or_none(slot: &Slot<'_>) -> Result<bool, CmdError> {
    slot.hash().map(|h| h.is_some()).map_err(wrong_type)
}

/// Reads the hash at `key`: `f(None)` when missing, WRONGTYPE when a string.
fn read_hash<R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(Option<&HashValue>, &mut ringkv_protocol::ReplyWriter<'_>) -> R,
) -> Result<R, CmdError> {
    read_as(ctx, key, Value::as_hash, f)
}

fn set_fields(
    ctx: &mut Ctx<'_, '_>,
    args: &Args<'_>,
    name: &'static str,
) -> Result<usize, CmdError> {
    if args.len() % 2 != 0 {
        return Err(CmdError::WrongArity(name));
    }
    let added = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        hash_or_none(slot)?;
        let mut added = 0;
        for i in (2..args.len()).step_by(2) {
            added += usize::from(
                slot.hash_insert(args.get(i), args.get(i + 1))
                    .map_err(wrong_type)?,
            );
        }
        Ok::<_, CmdError>(added)
    })?;
    ctx.notify(Class::HASH, "hset", args.get(1));
    Ok(added)
}

/// HSET key field value [field value ...]
pub fn hset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let added = set_fields(ctx, &args, "hset")?;
    ctx.out.int(added as i64);
    Ok(())
}

/// HMSET key field value [field value ...]
pub fn hmset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    set_fields(ctx, &args, "hmset")?;
    ctx.out.ok();
    Ok(())
}

/// HSETNX key field value
pub fn hsetnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (field, value) = (args.get(2), args.get(3));
    let set = ctx
        .node
        .store
        .write(args.get(1), ctx.now, |slot| {
            if slot.hash()?.is_some_and(|h| h.get(field).is_some()) {
                return Ok(false);
            }
            slot.hash_insert(field, value)
        })
        .map_err(wrong_type)?;
    if set {
        ctx.notify(Class::HASH, "hset", args.get(1));
    }
    ctx.out.int(set as i64);
    Ok(())
}

/// HGET key field
pub fn hget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let field = args.get(2);
    read_hash(ctx, args.get(1), |h, out| {
        out.bulk_or_null(h.and_then(|h| h.get(field)))
    })
}

/// HMGET key field [field ...]
pub fn hmget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.array(args.len() - 2);
        for field in args.iter().skip(2) {
            out.bulk_or_null(h.and_then(|h| h.get(field)));
        }
    })
}

/// HGETALL key
pub fn hgetall(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.map(h.map_or(0, HashValue::len));
        for (field, value) in h.into_iter().flat_map(HashValue::iter) {
            out.bulk(field);
            out.bulk(value);
        }
    })
}

/// HDEL key field [field ...]
pub fn hdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let removed = ctx
        .node
        .store
        .write(args.get(1), ctx.now, |slot| {
            let mut removed = 0;
            for field in args.iter().skip(2) {
                removed += usize::from(slot.hash_remove(field)?);
            }
            Ok::<_, WrongType>(removed)
        })
        .map_err(wrong_type)?;
    if removed > 0 {
        ctx.notify_removed(Class::HASH, "hdel", args.get(1));
        ctx.events_first();
    }
    ctx.out.int(removed as i64);
    Ok(())
}

/// HEXISTS key field
pub fn hexists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let field = args.get(2);
    read_hash(ctx, args.get(1), |h, out| {
        out.int(h.is_some_and(|h| h.get(field).is_some()) as i64)
    })
}

/// HLEN key
pub fn hlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.int(h.map_or(0, HashValue::len) as i64)
    })
}

/// HSTRLEN key field
pub fn hstrlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let field = args.get(2);
    read_hash(ctx, args.get(1), |h, out| {
        out.int(h.and_then(|h| h.get(field)).map_or(0, <[u8]>::len) as i64)
    })
}

/// HKEYS key
pub fn hkeys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.array(h.map_or(0, HashValue::len));
        for (field, _) in h.into_iter().flat_map(HashValue::iter) {
            out.bulk(field);
        }
    })
}

/// HVALS key
pub fn hvals(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.array(h.map_or(0, HashValue::len));
        for (_, value) in h.into_iter().flat_map(HashValue::iter) {
            out.bulk(value);
        }
    })
}

/// HINCRBY key field increment
pub fn hincrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let delta = int_arg(args.get(3))?;
    let field = args.get(2);
    let value = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let current = match slot.hash().map_err(wrong_type)?.and_then(|h| h.get(field)) {
            None => 0,
            Some(v) => parse_i64(v).ok_or(CmdError::HashNotInteger)?,
        };
        let next = current.checked_add(delta).ok_or(CmdError::Overflow)?;
        slot.hash_insert(field, itoa::Buffer::new().format(next).as_bytes())
            .map_err(wrong_type)?;
        Ok::<_, CmdError>(next)
    })?;
    ctx.notify(Class::HASH, "hincrby", args.get(1));
    ctx.out.int(value);
    Ok(())
}

/// HINCRBYFLOAT key field increment
pub fn hincrbyfloat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let delta = float_arg(args.get(3)).ok_or(CmdError::NotFloat)?;
    // Redis refuses an infinite increment before looking at the field.
    if !delta.is_finite() {
        return Err(CmdError::Custom("ERR value is NaN or Infinity".into()));
    }
    let field = args.get(2);
    let text = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let current = match slot.hash().map_err(wrong_type)?.and_then(|h| h.get(field)) {
            None => 0.0,
            Some(v) => float_arg(v).ok_or(CmdError::HashNotFloat)?,
        };
        let next = current + delta;
        if !next.is_finite() {
            return Err(CmdError::NanOrInfinity);
        }
        let text = format_double(next);
        slot.hash_insert(field, text.as_bytes())
            .map_err(wrong_type)?;
        Ok(text)
    })?;
    ctx.notify(Class::HASH, "hincrbyfloat", args.get(1));
    ctx.out.bulk(text.as_bytes());
    Ok(())
}

/// HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]
pub fn hscan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let options = hscan_options(&args)?;
    let (next, items) = read_hash(ctx, args.get(1), |h, _| {
        let Some(h) = h else {
            return (0, Vec::new());
        };
        let fields = h.iter().map(|(f, v)| (h.scan_hash(f), (f, v)));
        let (window, next) = scan_window(fields, options.cursor, options.count);
        let mut items = Vec::new();
        for (field, value) in window {
            if options.pattern.is_none_or(|p| glob_match(p, field, false)) {
                items.push(field.to_vec());
                if !options.no_values {
                    items.push(value.to_vec());
                }
            }
        }
        // Position 0 means "start", so a scan that continues at hash 0 cannot happen:
        // next is always past a returned item's hash.
        (next.unwrap_or(0), items)
    })?;
    write_scan_reply(ctx, next, &items);
    Ok(())
}

/// The most fields one HRANDFIELD with a negative count returns.
const MAX_RANDOM_FIELDS: u64 = 1 << 24;

/// HRANDFIELD key [count [WITHVALUES]]
pub fn hrandfield(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let count = match args.len() {
        2 => None,
        3 => Some(int_arg(args.get(2))?),
        4 if is(args.get(3), "WITHVALUES") => Some(int_arg(args.get(2))?),
        _ => return Err(CmdError::Syntax),
    };
    let with_values = args.len() == 4;
    // A negative count repeats fields: bound it so one command cannot build an unbounded reply.
    if let Some(c) = count
        && c < 0
        && c.unsigned_abs() > MAX_RANDOM_FIELDS
    {
        return Err(CmdError::Custom("ERR value is out of range".into()));
    }
    let resp3 = is_resp3(ctx.out);
    read_hash(ctx, args.get(1), |h, out| {
        let mut rng = rand::rng();
        let Some(count) = count else {
            let pick = h
                .filter(|h| !h.is_empty())
                .and_then(|h| h.get_index(rng.random_range(0..h.len())));
            out.bulk_or_null(pick.map(|(f, _)| f));
            return;
        };
        let Some(h) = h.filter(|h| !h.is_empty()) else {
            out.array(0);
            return;
        };
        let indices: Vec<usize> = if count >= 0 {
            let n = (count as usize).min(h.len());
            rand::seq::index::sample(&mut rng, h.len(), n).into_vec()
        } else {
            (0..count.unsigned_abs())
                .map(|_| rng.random_range(0..h.len()))
                .collect()
        };
        let per_item = if with_values && !resp3 { 2 } else { 1 };
        out.array(indices.len() * per_item);
        for i in indices {
            let (field, value) = h.get_index(i).expect("index below len");
            if with_values {
                if resp3 {
                    out.array(2);
                }
                out.bulk(field);
                out.bulk(value);
            } else {
                out.bulk(field);
            }
        }
    })
}
