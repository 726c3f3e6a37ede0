//! String commands: GET, SET and its options, counters, ranges and multi-key forms.

use ringkv_protocol::{Args, format_double, parse_i64};
use ringkv_store::Value;

use crate::handler::{CmdError, CmdResult, Ctx, as_str, float_arg, int_arg, is, wrong_type};
use crate::notify::Class;

/// How a command sets a key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Leave it as it is (KEEPTTL, or GETEX without options).
    Keep,
    /// Remove it.
    Persist,
    /// Absolute Unix milliseconds.
    At(u64),
}

impl Deadline {
    /// The `expires_at` argument of `Slot::set` (`None` keeps the current deadline).
    pub fn for_set(self) -> Option<u64> {
        match self {
            Deadline::Keep => None,
            Deadline::Persist => Some(0),
            Deadline::At(at) => Some(at),
        }
    }
}

/// Parses `EX|PX|EXAT|PXAT <n>` into an absolute deadline, with Redis's checks.
pub fn parse_deadline(
    unit: &[u8],
    amount: &[u8],
    now: u64,
    command: &'static str,
) -> Result<Deadline, CmdError> {
    let n = int_arg(amount)?;
    if n <= 0 {
        return Err(CmdError::InvalidExpire(command));
    }
    let invalid = CmdError::InvalidExpire(command);
    let at = if is(unit, "EX") {
        n.checked_mul(1000)
            .and_then(|ms| ms.checked_add(now as i64))
            .ok_or(invalid)?
    } else if is(unit, "PX") {
        n.checked_add(now as i64).ok_or(invalid)?
    } else if is(unit, "EXAT") {
        n.checked_mul(1000).ok_or(invalid)?
    } else {
        n
    };
    Ok(Deadline::At(at as u64))
}

fn is_deadline_unit(arg: &[u8]) -> bool {
    is(arg, "EX") || is(arg, "PX") || is(arg, "EXAT") || is(arg, "PXAT")
}

fn max_len(ctx: &Ctx<'_, '_>) -> u64 {
    ctx.node.config.read().proto_max_bulk_len
}

/// GET key
pub fn get(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let out = &mut *ctx.out;
    ctx.node.store.read(args.get(1), ctx.now, |value| {
        match value {
            None => out.null(),
            Some(value) => out.bulk(as_str(value)?),
        }
        Ok(())
    })
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
pub fn set(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    let mut deadline = None;
    let mut i = 3;
    while i < args.len() {
        let arg = args.get(i);
        if is(arg, "NX") && !xx {
            nx = true;
        } else if is(arg, "XX") && !nx {
            xx = true;
        } else if is(arg, "GET") {
            get = true;
        } else if is(arg, "KEEPTTL") && deadline.is_none() {
            keep_ttl = true;
        } else if is_deadline_unit(arg) && !keep_ttl && deadline.is_none() && i + 1 < args.len() {
            deadline = Some(parse_deadline(arg, args.get(i + 1), ctx.now, "set")?);
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    let deadline = match deadline {
        Some(d) => d,
        None if keep_ttl => Deadline::Keep,
        None => Deadline::Persist,
    };
    let value = args.get(2);
    let (applied, old) = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let old = match (get, slot.value()) {
            (true, Some(v)) => Some(as_str(v)?.to_vec()),
            _ => None,
        };
        if (nx && slot.exists()) || (xx && !slot.exists()) {
            return Ok((false, old));
        }
        slot.set(Value::Str(value.to_vec()), deadline.for_set());
        Ok((true, old))
    })?;
    if applied {
        ctx.notify(Class::STRING, "set", args.get(1));
        if let Deadline::At(_) = deadline {
            ctx.notify(Class::GENERIC, "expire", args.get(1));
        }
        ctx.events_first();
    }
    if get {
        ctx.out.bulk_or_null(old.as_deref());
    } else if applied {
        ctx.out.ok();
    } else {
        ctx.out.null();
    }
    Ok(())
}

/// SETNX key value
pub fn setnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let value = args.get(2);
    let created = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        if slot.exists() {
            return false;
        }
        slot.set(Value::Str(value.to_vec()), Some(0));
        true
    });
    if created {
        ctx.notify(Class::STRING, "set", args.get(1));
        ctx.events_first();
    }
    ctx.out.int(created as i64);
    Ok(())
}

fn set_with_ttl(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    unit: &str,
    command: &'static str,
) -> CmdResult {
    let Deadline::At(at) = parse_deadline(unit.as_bytes(), args.get(2), ctx.now, command)? else {
        unreachable!("EX and PX always give a deadline");
    };
    let value = args.get(3);
    ctx.node.store.write(args.get(1), ctx.now, |slot| {
        slot.set(Value::Str(value.to_vec()), Some(at));
    });
    ctx.notify(Class::STRING, "set", args.get(1));
    ctx.notify(Class::GENERIC, "expire", args.get(1));
    ctx.events_first();
    ctx.out.ok();
    Ok(())
}

/// SETEX key seconds value
pub fn setex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    set_with_ttl(ctx, args, "EX", "setex")
}

/// PSETEX key milliseconds value
pub fn psetex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    set_with_ttl(ctx, args, "PX", "psetex")
}

/// MGET key [key ...]: a wrong-type key reads as nil.
pub fn mget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.out.array(args.len() - 1);
    for key in args.iter().skip(1) {
        let out = &mut *ctx.out;
        ctx.node.store.read(key, ctx.now, |value| match value {
            Some(Value::Str(s)) => out.bulk(s),
            _ => out.null(),
        });
    }
    Ok(())
}

fn pairs_ok(args: &Args<'_>, name: &'static str) -> CmdResult {
    if (args.len() - 1) % 2 != 0 {
        return Err(CmdError::WrongArity(name));
    }
    Ok(())
}

fn write_pairs(ctx: &mut Ctx<'_, '_>, args: &Args<'_>) {
    for pair in (1..args.len()).step_by(2) {
        let value = args.get(pair + 1);
        ctx.node.store.write(args.get(pair), ctx.now, |slot| {
            slot.set(Value::Str(value.to_vec()), Some(0));
        });
        ctx.notify(Class::STRING, "set", args.get(pair));
    }
    ctx.events_first();
}

/// MSET key value [key value ...] (atomic: runs with the gate held exclusively).
pub fn mset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pairs_ok(&args, "mset")?;
    write_pairs(ctx, &args);
    ctx.out.ok();
    Ok(())
}

/// MSETNX key value [key value ...]: all or nothing.
pub fn msetnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pairs_ok(&args, "msetnx")?;
    let store = &ctx.node.store;
    let any_exists = (1..args.len())
        .step_by(2)
        .any(|i| store.write(args.get(i), ctx.now, |slot| slot.exists()));
    if !any_exists {
        write_pairs(ctx, &args);
    }
    ctx.out.int(!any_exists as i64);
    Ok(())
}

/// GETSET key value
pub fn getset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let value = args.get(2);
    ctx.node.store.tell_if_missing(args.get(1), ctx.now);
    let old = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let old = slot.value().map(as_str).transpose()?.map(<[u8]>::to_vec);
        slot.set(Value::Str(value.to_vec()), Some(0));
        Ok(old)
    })?;
    ctx.notify(Class::STRING, "set", args.get(1));
    ctx.out.bulk_or_null(old.as_deref());
    Ok(())
}

/// GETDEL key
pub fn getdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.node.store.tell_if_missing(args.get(1), ctx.now);
    let old = ctx
        .node
        .store
        .write(args.get(1), ctx.now, |slot| match slot.value() {
            None => Ok(None),
            Some(Value::Str(_)) => match slot.remove() {
                Some(Value::Str(s)) => Ok(Some(s)),
                _ => Ok(None),
            },
            Some(_) => Err(CmdError::WrongType),
        })?;
    if old.is_some() {
        ctx.notify(Class::GENERIC, "del", args.get(1));
    }
    ctx.out.bulk_or_null(old.as_deref());
    Ok(())
}

/// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]
pub fn getex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let deadline = match args.len() {
        2 => Deadline::Keep,
        3 if is(args.get(2), "PERSIST") => Deadline::Persist,
        4 if is_deadline_unit(args.get(2)) => {
            parse_deadline(args.get(2), args.get(3), ctx.now, "getex")?
        }
        _ => return Err(CmdError::Syntax),
    };
    let now = ctx.now;
    ctx.node.store.tell_if_missing(args.get(1), now);
    let value = ctx.node.store.write(args.get(1), now, |slot| {
        let Some(value) = slot.value() else {
            return Ok(None);
        };
        let value = as_str(value)?.to_vec();
        match deadline {
            Deadline::Keep => {}
            Deadline::Persist => {
                slot.set_expires_at(None);
            }
            Deadline::At(at) => {
                slot.set_expires_at(Some(at));
            }
        }
        Ok(Some(value))
    })?;
    if value.is_some() {
        match deadline {
            Deadline::Keep => {}
            Deadline::Persist => ctx.notify(Class::GENERIC, "persist", args.get(1)),
            Deadline::At(_) => ctx.notify(Class::GENERIC, "expire", args.get(1)),
        }
    }
    ctx.out.bulk_or_null(value.as_deref());
    Ok(())
}

/// APPEND key value
pub fn append(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let limit = max_len(ctx);
    let suffix = args.get(2);
    let len = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        if let Some(v) = slot.value()
            && (as_str(v)?.len() + suffix.len()) as u64 > limit
        {
            return Err(CmdError::StringTooLong);
        }
        slot.append(suffix).map_err(wrong_type)
    })?;
    ctx.notify(Class::STRING, "append", args.get(1));
    ctx.events_first();
    ctx.out.int(len as i64);
    Ok(())
}

/// STRLEN key
pub fn strlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let len = ctx.node.store.read(args.get(1), ctx.now, |v| {
        v.map(as_str).transpose().map(|s| s.map_or(0, <[u8]>::len))
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

/// The byte range GETRANGE returns for `start..=end` over a string of `len` bytes.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return None;
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    (start <= end).then_some((start as usize, end as usize))
}

/// GETRANGE key start end
pub fn getrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let start = int_arg(args.get(2))?;
    let end = int_arg(args.get(3))?;
    let out = &mut *ctx.out;
    ctx.node.store.read(args.get(1), ctx.now, |value| {
        let s = value.map(as_str).transpose()?.unwrap_or(b"");
        match clamp_range(start, end, s.len()) {
            Some((from, to)) => out.bulk(&s[from..=to]),
            None => out.bulk(b""),
        }
        Ok(())
    })
}

/// SETRANGE key offset value
pub fn setrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = int_arg(args.get(2))?;
    if offset < 0 {
        return Err(CmdError::Custom("ERR offset is out of range".into()));
    }
    let offset = offset as u64;
    let patch = args.get(3);
    let limit = max_len(ctx);
    let len = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let current = slot.value().map(as_str).transpose()?.map(<[u8]>::len);
        if patch.is_empty() {
            return Ok(current.unwrap_or(0));
        }
        if offset + patch.len() as u64 > limit {
            return Err(CmdError::StringTooLong);
        }
        slot.set_range(offset as usize, patch).map_err(wrong_type)
    })?;
    if !patch.is_empty() {
        ctx.notify(Class::STRING, "setrange", args.get(1));
        ctx.events_first();
    }
    ctx.out.int(len as i64);
    Ok(())
}

fn incr_by(ctx: &mut Ctx<'_, '_>, key: &[u8], delta: i64) -> CmdResult {
    let value = ctx.node.store.write(key, ctx.now, |slot| {
        let current = match slot.value() {
            None => 0,
            Some(v) => parse_i64(as_str(v)?).ok_or(CmdError::NotInteger)?,
        };
        let next = current.checked_add(delta).ok_or(CmdError::Overflow)?;
        let mut text = itoa::Buffer::new();
        slot.replace_str(text.format(next).as_bytes());
        Ok(next)
    })?;
    ctx.notify(Class::STRING, "incrby", key);
    ctx.events_first();
    ctx.out.int(value);
    Ok(())
}

/// INCR key
pub fn incr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), 1)
}

/// DECR key
pub fn decr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), -1)
}

/// INCRBY key increment
pub fn incrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let delta = int_arg(args.get(2))?;
    incr_by(ctx, args.get(1), delta)
}

/// DECRBY key decrement
pub fn decrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let delta = int_arg(args.get(2))?;
    let negated = delta
        .checked_neg()
        .ok_or_else(|| CmdError::Custom("ERR decrement would overflow".into()))?;
    incr_by(ctx, args.get(1), negated)
}

/// INCRBYFLOAT key increment
pub fn incrbyfloat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let delta = float_arg(args.get(2)).ok_or(CmdError::NotFloat)?;
    let text = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let current = match slot.value() {
            None => 0.0,
            Some(v) => float_arg(as_str(v)?).ok_or(CmdError::NotFloat)?,
        };
        let next = current + delta;
        if !next.is_finite() {
            return Err(CmdError::NanOrInfinity);
        }
        let text = format_double(next);
        slot.set(Value::Str(text.clone().into_bytes()), None);
        Ok(text)
    })?;
    ctx.notify(Class::STRING, "incrbyfloat", args.get(1));
    ctx.events_first();
    ctx.out.bulk(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_clamps_like_redis() {
        // "This is a string" examples from the Redis documentation.
        let len = "This is a string".len();
        assert_eq!(clamp_range(0, 3, len), Some((0, 3)));
        assert_eq!(clamp_range(-3, -1, len), Some((13, 15)));
        assert_eq!(clamp_range(0, -1, len), Some((0, 15)));
        assert_eq!(clamp_range(10, 100, len), Some((10, 15)));
        assert_eq!(clamp_range(5, 3, len), None);
        assert_eq!(clamp_range(-1, -5, len), None);
        assert_eq!(clamp_range(0, 0, 0), None);
    }

    #[test]
    fn deadlines_refuse_non_positive_and_overflowing_times() {
        assert_eq!(
            parse_deadline(b"EX", b"10", 1_000, "set"),
            Ok(Deadline::At(11_000))
        );
        assert_eq!(
            parse_deadline(b"pxat", b"5", 1_000, "set"),
            Ok(Deadline::At(5))
        );
        assert_eq!(
            parse_deadline(b"EX", b"0", 1_000, "set"),
            Err(CmdError::InvalidExpire("set"))
        );
        assert_eq!(
            parse_deadline(b"EX", b"-1", 1_000, "set"),
            Err(CmdError::InvalidExpire("set"))
        );
        assert_eq!(
            parse_deadline(b"EX", b"9223372036854775807", 1_000, "set"),
            Err(CmdError::InvalidExpire("set"))
        );
        assert_eq!(
            parse_deadline(b"EX", b"ten", 1_000, "set"),
            Err(CmdError::NotInteger)
        );
    }
}
