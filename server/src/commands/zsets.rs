//! Sorted set commands, the blocking pops included. Replies and errors follow Redis 7.0's
//! `t_zset.c`: scores are doubles in RESP3 and `%g`-like strings in RESP2, `WITHSCORES`
//! is a flat list in RESP2 and member/score pairs in RESP3, a missing key is empty.

use rand::Rng;
use ringkv_protocol::{Args, Protocol, ReplyWriter, format_score};
use ringkv_store::{SetValue, Store, Value, ZSetValue, glob_match, scan_window};

use super::blocked::{MultiPop, block_on, encode, parse_mpop, timeout_arg};
use super::keys::{member_scan_options, write_scan_reply};
use crate::blocking::{Serve, ServeOutcome, ServedEvent, WaitKind};
use crate::handler::{
    CmdError, CmdResult, Ctx, MemberEvent, change_members, float_arg, int_arg, is, is_resp3,
    positive_count, ranged, read_as, wrong_type,
};
use crate::node::unix_ms;
use crate::notify::Class;

fn custom(message: &str) -> CmdError {
    CmdError::Custom(format!("ERR {message}"))
}

/// Reads the sorted set at `key`: `f(None)` when missing, WRONGTYPE for another type.
fn read_zset<R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(Option<&ZSetValue>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, CmdError> {
    read_as(ctx, key, Value::as_zset, f)
}

/// A score argument (`getDoubleFromObjectOrReply`: no NaN).
fn score_arg(arg: &[u8]) -> Result<f64, CmdError> {
    float_arg(arg).ok_or(CmdError::NotFloat)
}

/// Writes entries as a range reply: members, or with scores a flat list (RESP2) or
/// member/score pairs (RESP3).
fn write_entries(out: &mut ReplyWriter<'_>, entries: &[(f64, &[u8])], with_scores: bool) {
    let pairs = with_scores && out.protocol() == Protocol::Resp3;
    out.array(if with_scores && !pairs {
        entries.len() * 2
    } else {
        entries.len()
    });
    for (score, member) in entries {
        if pairs {
            out.array(2);
        }
        out.bulk(member);
        if with_scores {
            out.score(*score);
        }
    }
}

// ---- ZADD, ZINCRBY, ZREM, lookups ----

#[derive(Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// What one ZADD did.
struct AddOutcome {
    added: usize,
    updated: usize,
    /// The member's score after an INCR, `None` when the INCR was skipped.
    incremented: Option<f64>,
}

/// Applies ZADD's rules for `entries` to the sorted set at `key`.
fn zadd_apply(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    flags: &AddFlags,
    entries: &[(f64, &[u8])],
) -> Result<AddOutcome, CmdError> {
    ctx.node.store.write(key, ctx.now, |slot| {
        let zset = slot.zset().map_err(wrong_type)?;
        let mut outcome = AddOutcome {
            added: 0,
            updated: 0,
            incremented: None,
        };
        if zset.is_none() && flags.xx {
            return Ok(outcome);
        }
        let mut changes: Vec<(f64, &[u8])> = Vec::with_capacity(entries.len());
        for &(score, member) in entries {
            // A member repeated in one ZADD sees its own earlier change.
            let current = changes
                .iter()
                .rev()
                .find(|(_, m)| *m == member)
                .map(|(s, _)| *s)
                .or_else(|| zset.and_then(|z| z.score(member)));
            let new_score = match (flags.incr, current) {
                (true, Some(old)) => old + score,
                _ => score,
            };
            if new_score.is_nan() {
                return Err(custom("resulting score is not a number (NaN)"));
            }
            match current {
                Some(_) if flags.nx => continue,
                None if flags.xx => continue,
                Some(old) => {
                    if (flags.gt && new_score <= old) || (flags.lt && new_score >= old) {
                        continue;
                    }
                    if new_score != old {
                        outcome.updated += 1;
                        changes.push((new_score, member));
                    }
                }
                None => {
                    outcome.added += 1;
                    changes.push((new_score, member));
                }
            }
            if flags.incr {
                outcome.incremented = Some(new_score);
            }
        }
        slot.zset_set(&changes).map_err(wrong_type)?;
        Ok(outcome)
    })
}

/// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]
pub fn zadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut flags = AddFlags::default();
    let mut at = 2;
    while at < args.len() {
        let arg = args.get(at);
        let flag = if is(arg, "nx") {
            &mut flags.nx
        } else if is(arg, "xx") {
            &mut flags.xx
        } else if is(arg, "gt") {
            &mut flags.gt
        } else if is(arg, "lt") {
            &mut flags.lt
        } else if is(arg, "ch") {
            &mut flags.ch
        } else if is(arg, "incr") {
            &mut flags.incr
        } else {
            break;
        };
        *flag = true;
        at += 1;
    }
    let rest = args.len() - at;
    if rest == 0 || rest % 2 != 0 {
        return Err(CmdError::Syntax);
    }
    if flags.nx && flags.xx {
        return Err(custom(
            "XX and NX options at the same time are not compatible",
        ));
    }
    if ((flags.gt || flags.lt) && flags.nx) || (flags.gt && flags.lt) {
        return Err(custom(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if flags.incr && rest > 2 {
        return Err(custom(
            "INCR option supports a single increment-element pair",
        ));
    }
    let entries = (at..args.len())
        .step_by(2)
        .map(|i| Ok((score_arg(args.get(i))?, args.get(i + 1))))
        .collect::<Result<Vec<_>, CmdError>>()?;
    let outcome = zadd_apply(ctx, args.get(1), &flags, &entries)?;
    if outcome.added + outcome.updated > 0 {
        ctx.notify(
            Class::ZSET,
            if flags.incr { "zincr" } else { "zadd" },
            args.get(1),
        );
    }
    if flags.incr {
        match outcome.incremented {
            Some(score) => ctx.out.score(score),
            None => ctx.out.null(),
        }
    } else if flags.ch {
        ctx.out.int((outcome.added + outcome.updated) as i64);
    } else {
        ctx.out.int(outcome.added as i64);
    }
    Ok(())
}

/// ZINCRBY key increment member
pub fn zincrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let increment = score_arg(args.get(2))?;
    let flags = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    let outcome = zadd_apply(ctx, args.get(1), &flags, &[(increment, args.get(3))])?;
    if outcome.added + outcome.updated > 0 {
        ctx.notify(Class::ZSET, "zincr", args.get(1));
    }
    match outcome.incremented {
        Some(score) => ctx.out.score(score),
        None => ctx.out.null(),
    }
    Ok(())
}

/// ZREM key member [member ...]
pub fn zrem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let event = MemberEvent {
        class: Class::ZSET,
        name: "zrem",
        removes: true,
    };
    change_members(ctx, &args, event, |slot, members| slot.zset_remove(members))
}

/// ZSCORE key member
pub fn zscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let member = args.get(2);
    read_zset(ctx, args.get(1), |z, out| {
        match z.and_then(|z| z.score(member)) {
            Some(score) => out.score(score),
            None => out.null(),
        }
    })
}

/// ZMSCORE key member [member ...]
pub fn zmscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_zset(ctx, args.get(1), |z, out| {
        out.array(args.len() - 2);
        for member in args.iter().skip(2) {
            match z.and_then(|z| z.score(member)) {
                Some(score) => out.score(score),
                None => out.null(),
            }
        }
    })
}

/// ZCARD key
pub fn zcard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_zset(ctx, args.get(1), |z, out| {
        out.int(z.map_or(0, ZSetValue::len) as i64)
    })
}

fn rank(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, rev: bool) -> CmdResult {
    let member = args.get(2);
    let with_score = match args.len() {
        3 => false,
        4 if is(args.get(3), "withscore") => true,
        _ => return Err(CmdError::Syntax),
    };
    read_zset(ctx, args.get(1), |z, out| {
        let found = z.and_then(|z| {
            let rank = z.rank(member)?;
            let rank = if rev { z.len() - 1 - rank } else { rank };
            Some((rank, z.score(member)?))
        });
        match (found, with_score) {
            (None, false) => out.null(),
            (None, true) => out.null_array(),
            (Some((rank, _)), false) => out.int(rank as i64),
            (Some((rank, score)), true) => {
                out.array(2);
                out.int(rank as i64);
                out.score(score);
            }
        }
    })
}

/// ZRANK key member [WITHSCORE]
pub fn zrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    rank(ctx, &args, false)
}

/// ZREVRANK key member [WITHSCORE]
pub fn zrevrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    rank(ctx, &args, true)
}

// ---- ranges ----

/// A score interval as `zslParseRange` reads it: `(` excludes, `-inf`/`+inf` allowed.
#[derive(Clone, Copy)]
struct ScoreRange {
    min: f64,
    max: f64,
    min_ex: bool,
    max_ex: bool,
}

fn parse_score_bound(arg: &[u8]) -> Option<(f64, bool)> {
    match arg.strip_prefix(b"(") {
        Some(rest) => float_arg(rest).map(|v| (v, true)),
        None => float_arg(arg).map(|v| (v, false)),
    }
}

impl ScoreRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<Self, CmdError> {
        let invalid = || custom("min or max is not a float");
        let (min, min_ex) = parse_score_bound(min).ok_or_else(invalid)?;
        let (max, max_ex) = parse_score_bound(max).ok_or_else(invalid)?;
        Ok(ScoreRange {
            min,
            max,
            min_ex,
            max_ex,
        })
    }

    /// The ascending ranks `start..end` of the entries inside.
    fn ranks(&self, z: &ZSetValue) -> (usize, usize) {
        if self.min > self.max || (self.min == self.max && (self.min_ex || self.max_ex)) {
            return (0, 0);
        }
        let start = z.rank_where(|s, _| s < self.min || (self.min_ex && s <= self.min));
        let end = z.rank_where(|s, _| s < self.max || (!self.max_ex && s <= self.max));
        (start, end.max(start))
    }
}

/// One end of a lex interval (`zslParseLexRangeItem`).
#[derive(Clone)]
enum LexBound {
    NegInf,
    PosInf,
    Inclusive(Vec<u8>),
    Exclusive(Vec<u8>),
}

#[derive(Clone)]
struct LexRange {
    min: LexBound,
    max: LexBound,
}

impl LexRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<Self, CmdError> {
        let item = |arg: &[u8]| match arg.split_first() {
            Some((b'+', [])) => Some(LexBound::PosInf),
            Some((b'-', [])) => Some(LexBound::NegInf),
            Some((b'[', rest)) => Some(LexBound::Inclusive(rest.to_vec())),
            Some((b'(', rest)) => Some(LexBound::Exclusive(rest.to_vec())),
            _ => None,
        };
        let invalid = || custom("min or max not valid string range item");
        Ok(LexRange {
            min: item(min).ok_or_else(invalid)?,
            max: item(max).ok_or_else(invalid)?,
        })
    }

    fn below_min(&self, member: &[u8]) -> bool {
        match &self.min {
            LexBound::NegInf => false,
            LexBound::PosInf => true,
            LexBound::Inclusive(v) => member < v.as_slice(),
            LexBound::Exclusive(v) => member <= v.as_slice(),
        }
    }

    fn within_max(&self, member: &[u8]) -> bool {
        match &self.max {
            LexBound::NegInf => false,
            LexBound::PosInf => true,
            LexBound::Inclusive(v) => member <= v.as_slice(),
            LexBound::Exclusive(v) => member < v.as_slice(),
        }
    }

    /// The ascending ranks of the members inside (all members share one score).
    fn ranks(&self, z: &ZSetValue) -> (usize, usize) {
        let start = z.rank_where(|_, m| self.below_min(m));
        let end = z.rank_where(|_, m| self.within_max(m));
        (start, end.max(start))
    }
}

/// What a range selects.
#[derive(Clone)]
enum RangeBy {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// A parsed ZRANGE-family request.
struct RangeQuery {
    by: RangeBy,
    rev: bool,
    /// LIMIT offset count (a negative count: all).
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

/// Which command spelling is being parsed: ZRANGE/ZRANGESTORE accept BYSCORE, BYLEX and
/// REV; the older commands fix them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeKind {
    Auto,
    Rank,
    Score,
    Lex,
}

/// Parses `min max [options]` starting at `at`, as `zrangeGenericCommand` does.
fn parse_range(
    args: &Args<'_>,
    at: usize,
    mut kind: RangeKind,
    mut rev: Option<bool>,
    store: bool,
) -> Result<RangeQuery, CmdError> {
    let mut with_scores = false;
    let mut limit = None;
    let mut j = at + 2;
    while j < args.len() {
        let arg = args.get(j);
        let left = args.len() - j - 1;
        if !store && is(arg, "withscores") {
            with_scores = true;
        } else if is(arg, "limit") && left >= 2 {
            limit = Some((int_arg(args.get(j + 1))?, int_arg(args.get(j + 2))?));
            j += 2;
        } else if rev.is_none() && is(arg, "rev") {
            rev = Some(true);
        } else if kind == RangeKind::Auto && is(arg, "bylex") {
            kind = RangeKind::Lex;
        } else if kind == RangeKind::Auto && is(arg, "byscore") {
            kind = RangeKind::Score;
        } else {
            return Err(CmdError::Syntax);
        }
        j += 1;
    }
    let rev = rev.unwrap_or(false);
    if kind == RangeKind::Auto {
        kind = RangeKind::Rank;
    }
    if limit.is_some() && kind == RangeKind::Rank {
        return Err(custom(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if with_scores && kind == RangeKind::Lex {
        return Err(custom(
            "syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let (mut min, mut max) = (args.get(at), args.get(at + 1));
    if rev && kind != RangeKind::Rank {
        std::mem::swap(&mut min, &mut max);
    }
    let by = match kind {
        RangeKind::Score => RangeBy::Score(ScoreRange::parse(min, max)?),
        RangeKind::Lex => RangeBy::Lex(LexRange::parse(min, max)?),
        _ => RangeBy::Rank(int_arg(min)?, int_arg(max)?),
    };
    Ok(RangeQuery {
        by,
        rev,
        limit,
        with_scores,
    })
}

/// The ascending ranks `start..end` a rank range covers (Redis's index rules; a reversed
/// range counts from the top).
fn rank_window(start: i64, stop: i64, len: usize, rev: bool) -> (usize, usize) {
    let len = len as i64;
    let mut start = if start < 0 { start + len } else { start };
    let mut stop = if stop < 0 { stop + len } else { stop };
    start = start.max(0);
    if start > stop || start >= len {
        return (0, 0);
    }
    stop = stop.min(len - 1);
    if rev {
        ((len - 1 - stop) as usize, (len - start) as usize)
    } else {
        (start as usize, stop as usize + 1)
    }
}

impl RangeQuery {
    /// The ascending ranks the query selects, LIMIT applied in its direction.
    fn ranks(&self, z: &ZSetValue) -> (usize, usize) {
        let (start, end) = match &self.by {
            RangeBy::Rank(a, b) => rank_window(*a, *b, z.len(), self.rev),
            RangeBy::Score(range) => range.ranks(z),
            RangeBy::Lex(range) => range.ranks(z),
        };
        let Some((offset, count)) = self.limit else {
            return (start, end);
        };
        if offset < 0 {
            return (0, 0);
        }
        let offset = offset as usize;
        let span = end - start;
        if offset >= span {
            return (0, 0);
        }
        let take = if count < 0 {
            span - offset
        } else {
            (count as usize).min(span - offset)
        };
        if self.rev {
            (end - offset - take, end - offset)
        } else {
            (start + offset, start + offset + take)
        }
    }

    fn entries<'z>(&self, z: &'z ZSetValue) -> Vec<(f64, &'z [u8])> {
        let (start, end) = self.ranks(z);
        z.range(start, end, self.rev).collect()
    }
}

fn range_reply(ctx: &mut Ctx<'_, '_>, key: &[u8], query: RangeQuery) -> CmdResult {
    read_zset(ctx, key, |z, out| match z {
        Some(z) => write_entries(out, &query.entries(z), query.with_scores),
        None => out.array(0),
    })
}

/// ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]
pub fn zrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_range(&args, 2, RangeKind::Auto, None, false)?;
    range_reply(ctx, args.get(1), query)
}

/// ZREVRANGE key start stop [WITHSCORES]
pub fn zrevrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_range(&args, 2, RangeKind::Rank, Some(true), false)?;
    range_reply(ctx, args.get(1), query)
}

/// ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]
pub fn zrangebyscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_range(&args, 2, RangeKind::Score, Some(false), false)?;
    range_reply(ctx, args.get(1), query)
}

/// ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]
pub fn zrevrangebyscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_range(&args, 2, RangeKind::Score, Some(true), false)?;
    range_reply(ctx, args.get(1), query)
}

/// ZRANGEBYLEX key min max [LIMIT offset count]
pub fn zrangebylex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_range(&args, 2, RangeKind::Lex, Some(false), false)?;
    range_reply(ctx, args.get(1), query)
}

/// ZREVRANGEBYLEX key max min [LIMIT offset count]
pub fn zrevrangebylex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_range(&args, 2, RangeKind::Lex, Some(true), false)?;
    range_reply(ctx, args.get(1), query)
}

/// Stores `entries` at `key` as a new sorted set (the key is deleted when empty) and
/// tells `event`, or `del` when that deleted the key.
fn store_entries(ctx: &mut Ctx<'_, '_>, key: &[u8], zset: ZSetValue, event: &str) -> usize {
    let len = zset.len();
    let existed = ctx.node.store.write(key, ctx.now, |slot| {
        let existed = slot.remove().is_some();
        if len > 0 {
            slot.set(Value::ZSet(Box::new(zset)), Some(0));
        }
        existed
    });
    if len > 0 {
        ctx.notify(Class::ZSET, event, key);
    } else if existed {
        ctx.notify(Class::GENERIC, "del", key);
    }
    len
}

/// ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]
pub fn zrangestore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_range(&args, 3, RangeKind::Auto, None, true)?;
    let result = read_zset(ctx, args.get(2), |z, _| {
        z.map(|z| ZSetValue::from_entries(query.entries(z)))
            .unwrap_or_default()
    })?;
    let len = store_entries(ctx, args.get(1), result, "zrangestore");
    ctx.out.int(len as i64);
    Ok(())
}

/// ZCOUNT key min max
pub fn zcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let range = ScoreRange::parse(args.get(2), args.get(3))?;
    read_zset(ctx, args.get(1), |z, out| {
        let (start, end) = z.map_or((0, 0), |z| range.ranks(z));
        out.int((end - start) as i64)
    })
}

/// ZLEXCOUNT key min max
pub fn zlexcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let range = LexRange::parse(args.get(2), args.get(3))?;
    read_zset(ctx, args.get(1), |z, out| {
        let (start, end) = z.map_or((0, 0), |z| range.ranks(z));
        out.int((end - start) as i64)
    })
}

fn remove_range(ctx: &mut Ctx<'_, '_>, key: &[u8], by: RangeBy, event: &str) -> CmdResult {
    let query = RangeQuery {
        by,
        rev: false,
        limit: None,
        with_scores: false,
    };
    let removed = ctx
        .node
        .store
        .write(key, ctx.now, |slot| {
            let (start, end) = match slot.zset()? {
                Some(z) => query.ranks(z),
                None => return Ok(0),
            };
            slot.zset_take(start, end, false).map(|taken| taken.len())
        })
        .map_err(wrong_type)?;
    if removed > 0 {
        ctx.notify_removed(Class::ZSET, event, key);
        ctx.events_first();
    }
    ctx.out.int(removed as i64);
    Ok(())
}

/// ZREMRANGEBYRANK key start stop
pub fn zremrangebyrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let by = RangeBy::Rank(int_arg(args.get(2))?, int_arg(args.get(3))?);
    remove_range(ctx, args.get(1), by, "zremrangebyrank")
}

/// ZREMRANGEBYSCORE key min max
pub fn zremrangebyscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let by = RangeBy::Score(ScoreRange::parse(args.get(2), args.get(3))?);
    remove_range(ctx, args.get(1), by, "zremrangebyscore")
}

/// ZREMRANGEBYLEX key min max
pub fn zremrangebylex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let by = RangeBy::Lex(LexRange::parse(args.get(2), args.get(3))?);
    remove_range(ctx, args.get(1), by, "zremrangebylex")
}

// ---- pops ----

/// MIN or MAX; true for MIN.
fn min_max_arg(arg: &[u8]) -> Result<bool, CmdError> {
    if is(arg, "min") {
        Ok(true)
    } else if is(arg, "max") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

type Entries = Vec<(f64, Vec<u8>)>;

/// Pops up to `count` entries from the bottom (`min`) or the top of the sorted set at
/// `key`; `None` when the key is missing.
fn pop_entries(
    store: &Store,
    now: u64,
    key: &[u8],
    min: bool,
    count: usize,
) -> Result<Option<Entries>, CmdError> {
    store
        .write(key, now, |slot| {
            let Some(z) = slot.zset()? else {
                return Ok(None);
            };
            let len = z.len();
            let take = count.min(len);
            let taken = if min {
                slot.zset_take(0, take, false)?
            } else {
                slot.zset_take(len - take, len, true)?
            };
            Ok(Some(taken))
        })
        .map_err(wrong_type)
}

/// Writes popped entries as pairs (`nested`) or one flat list.
fn write_popped(out: &mut ReplyWriter<'_>, entries: &Entries, nested: bool) {
    out.array(if nested {
        entries.len()
    } else {
        entries.len() * 2
    });
    for (score, member) in entries {
        if nested {
            out.array(2);
        }
        out.bulk(member);
        out.score(*score);
    }
}

fn pop(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, min: bool) -> CmdResult {
    if args.len() > 3 {
        return Err(CmdError::Syntax);
    }
    let count = if args.len() == 3 {
        Some(positive_count(args.get(2))?)
    } else {
        None
    };
    let popped = pop_entries(
        &ctx.node.store,
        ctx.now,
        args.get(1),
        min,
        count.unwrap_or(1),
    )?;
    if popped.as_ref().is_some_and(|entries| !entries.is_empty()) {
        ctx.notify_removed(Class::ZSET, pop_event(min), args.get(1));
        ctx.events_first();
    }
    // RESP3 nests pairs when a count was given; a single pop stays flat.
    let nested = is_resp3(ctx.out) && count.is_some();
    write_popped(ctx.out, &popped.unwrap_or_default(), nested);
    Ok(())
}

fn pop_event(min: bool) -> &'static str {
    if min { "zpopmin" } else { "zpopmax" }
}

/// ZPOPMIN key [count]
pub fn zpopmin(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop(ctx, &args, true)
}

/// ZPOPMAX key [count]
pub fn zpopmax(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    pop(ctx, &args, false)
}

/// A key and what was popped from it.
type KeyPopped = (Vec<u8>, Entries);

/// Pops from the first non-empty sorted set of `keys` (every key type-checked first).
fn mpop_once(
    store: &Store,
    now: u64,
    keys: &[Vec<u8>],
    min: bool,
    count: usize,
) -> Result<Option<KeyPopped>, CmdError> {
    for key in keys {
        if let Some(entries) = pop_entries(store, now, key, min, count)?
            && !entries.is_empty()
        {
            return Ok(Some((key.clone(), entries)));
        }
    }
    Ok(None)
}

fn write_key_and_entries(out: &mut ReplyWriter<'_>, key: &[u8], entries: &Entries) {
    out.array(2);
    out.bulk(key);
    write_popped(out, entries, true);
}

/// ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]
pub fn zmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let MultiPop { keys, front, count } = parse_mpop(&args, 1, min_max_arg)?;
    match mpop_once(&ctx.node.store, ctx.now, &keys, front, count)? {
        Some((key, entries)) => {
            ctx.notify_removed(Class::ZSET, pop_event(front), &key);
            ctx.events_first();
            write_key_and_entries(ctx.out, ctx.node.store.logical_key(&key), &entries)
        }
        None => ctx.out.null_array(),
    }
    Ok(())
}

fn write_key_member_score(out: &mut ReplyWriter<'_>, key: &[u8], entry: &(f64, Vec<u8>)) {
    out.array(3);
    out.bulk(key);
    out.bulk(&entry.1);
    out.score(entry.0);
}

fn blocking_pop(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, min: bool) -> CmdResult {
    let timeout = timeout_arg(args.get(args.len() - 1))?;
    let keys: Vec<Vec<u8>> = (1..args.len() - 1).map(|i| args.get(i).to_vec()).collect();
    let protocol = ctx.out.protocol();
    let attempt_keys = keys.clone();
    let attempt = move |store: &Store, now: u64| {
        Ok(
            mpop_once(store, now, &attempt_keys, min, 1)?.map(|(key, entries)| {
                encode(protocol, |out| {
                    write_key_member_score(out, store.logical_key(&key), &entries[0])
                })
            }),
        )
    };
    let store = ctx.node.store.clone();
    let flags = ctx.node.notifier.shared_flags();
    let serve: Serve = Box::new(move |key, protocol| {
        let now = unix_ms();
        let popped = pop_entries(&store, now, key, min, 1).ok()??;
        let entry = popped.into_iter().next()?;
        let event = if min { "zpopmin" } else { "zpopmax" };
        Some(ServeOutcome {
            reply: encode(protocol, |out| {
                write_key_member_score(out, store.logical_key(key), &entry)
            }),
            touched: Vec::new(),
            events: ServedEvent::popped(&store, &flags, (Class::ZSET, event), key, now),
        })
    });
    block_on(ctx, keys, timeout, true, WaitKind::Takes, attempt, serve)
}

/// BZPOPMIN key [key ...] timeout
pub fn bzpopmin(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    blocking_pop(ctx, &args, true)
}

/// BZPOPMAX key [key ...] timeout
pub fn bzpopmax(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    blocking_pop(ctx, &args, false)
}

/// BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]
pub fn bzmpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let timeout = timeout_arg(args.get(1))?;
    let MultiPop { keys, front, count } = parse_mpop(&args, 2, min_max_arg)?;
    let protocol = ctx.out.protocol();
    let attempt_keys = keys.clone();
    let attempt = move |store: &Store, now: u64| {
        Ok(
            mpop_once(store, now, &attempt_keys, front, count)?.map(|(key, entries)| {
                encode(protocol, |out| {
                    write_key_and_entries(out, store.logical_key(&key), &entries)
                })
            }),
        )
    };
    let store = ctx.node.store.clone();
    let flags = ctx.node.notifier.shared_flags();
    let serve: Serve = Box::new(move |key, protocol| {
        let now = unix_ms();
        let entries = pop_entries(&store, now, key, front, count).ok()??;
        let event = if front { "zpopmin" } else { "zpopmax" };
        (!entries.is_empty()).then(|| ServeOutcome {
            reply: encode(protocol, |out| {
                write_key_and_entries(out, store.logical_key(key), &entries)
            }),
            touched: Vec::new(),
            events: ServedEvent::popped(&store, &flags, (Class::ZSET, event), key, now),
        })
    });
    block_on(ctx, keys, timeout, true, WaitKind::Takes, attempt, serve)
}

// ---- random members and scans ----

/// The most members one ZRANDMEMBER with a negative count returns.
const MAX_RANDOM_MEMBERS: u64 = 1 << 24;

/// ZRANDMEMBER key [count [WITHSCORES]]
pub fn zrandmember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let count = match args.len() {
        2 => None,
        3 | 4 => {
            if args.len() == 4 && !is(args.get(3), "withscores") {
                return Err(CmdError::Syntax);
            }
            let n = int_arg(args.get(2))?;
            if n == i64::MIN || (n < 0 && n.unsigned_abs() > MAX_RANDOM_MEMBERS) {
                return Err(custom("value is out of range"));
            }
            Some(n)
        }
        _ => return Err(CmdError::Syntax),
    };
    let with_scores = args.len() == 4;
    read_zset(ctx, args.get(1), |z, out| {
        let mut rng = rand::rng();
        let z = z.filter(|z| !z.is_empty());
        let Some(count) = count else {
            let pick = z.and_then(|z| z.get(rng.random_range(0..z.len())));
            out.bulk_or_null(pick.map(|(_, m)| m));
            return;
        };
        let Some(z) = z else {
            out.array(0);
            return;
        };
        let ranks: Vec<usize> = if count < 0 {
            (0..count.unsigned_abs())
                .map(|_| rng.random_range(0..z.len()))
                .collect()
        } else {
            let n = (count as usize).min(z.len());
            rand::seq::index::sample(&mut rng, z.len(), n).into_vec()
        };
        let entries: Vec<(f64, &[u8])> = ranks.into_iter().filter_map(|r| z.get(r)).collect();
        write_entries(out, &entries, with_scores);
    })
}

/// ZSCAN key cursor [MATCH pattern] [COUNT count]
pub fn zscan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let options = member_scan_options(&args)?;
    let (next, items) = read_zset(ctx, args.get(1), |z, _| {
        let Some(z) = z else {
            return (0, Vec::new());
        };
        let entries = z.iter().map(|(s, m)| (SetValue::scan_hash(m), (s, m)));
        let (window, next) = scan_window(entries, options.cursor, options.count);
        let mut items = Vec::new();
        for (score, member) in window {
            if options.pattern.is_none_or(|p| glob_match(p, member, false)) {
                items.push(member.to_vec());
                items.push(format_score(score).into_bytes());
            }
        }
        (next.unwrap_or(0), items)
    })?;
    write_scan_reply(ctx, next, &items);
    Ok(())
}

// ---- ZUNION, ZINTER, ZDIFF ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn apply(self, current: f64, score: f64) -> f64 {
        let result = match self {
            Aggregate::Sum => current + score,
            Aggregate::Min => current.min(score),
            Aggregate::Max => current.max(score),
        };
        // inf + -inf: Redis keeps 0 rather than a NaN score.
        if result.is_nan() { 0.0 } else { result }
    }
}

/// A parsed ZUNION-family request.
struct CombineQuery {
    keys: Vec<Vec<u8>>,
    weights: Vec<f64>,
    aggregate: Aggregate,
    with_scores: bool,
    limit: usize,
}

/// Parses `numkeys key... [WEIGHTS w...] [AGGREGATE a] [WITHSCORES]` (or `[LIMIT n]` for
/// ZINTERCARD) from `at`, as `zunionInterDiffGenericCommand` does.
fn parse_combine(
    args: &Args<'_>,
    at: usize,
    op: Combine,
    name: &str,
    store: bool,
    cardinality: bool,
) -> Result<CombineQuery, CmdError> {
    let numkeys = int_arg(args.get(at))?;
    if numkeys < 1 {
        return Err(custom(&format!(
            "at least 1 input key is needed for '{name}' command"
        )));
    }
    if numkeys as usize > args.len() - at - 1 {
        return Err(CmdError::Syntax);
    }
    let numkeys = numkeys as usize;
    let keys: Vec<Vec<u8>> = (at + 1..at + 1 + numkeys)
        .map(|i| args.get(i).to_vec())
        .collect();
    let mut query = CombineQuery {
        keys,
        weights: vec![1.0; numkeys],
        aggregate: Aggregate::Sum,
        with_scores: false,
        limit: 0,
    };
    let mut j = at + 1 + numkeys;
    while j < args.len() {
        let arg = args.get(j);
        let left = args.len() - j - 1;
        if op != Combine::Diff && !cardinality && left >= numkeys && is(arg, "weights") {
            for (i, weight) in query.weights.iter_mut().enumerate() {
                *weight = float_arg(args.get(j + 1 + i))
                    .ok_or_else(|| custom("weight value is not a float"))?;
            }
            j += 1 + numkeys;
        } else if op != Combine::Diff && !cardinality && left >= 1 && is(arg, "aggregate") {
            let which = args.get(j + 1);
            query.aggregate = if is(which, "sum") {
                Aggregate::Sum
            } else if is(which, "min") {
                Aggregate::Min
            } else if is(which, "max") {
                Aggregate::Max
            } else {
                return Err(CmdError::Syntax);
            };
            j += 2;
        } else if !store && !cardinality && is(arg, "withscores") {
            query.with_scores = true;
            j += 1;
        } else if cardinality && left >= 1 && is(arg, "limit") {
            query.limit = ranged(args.get(j + 1), 0, "LIMIT can't be negative")? as usize;
            j += 2;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(query)
}

/// A source of a combination: a sorted set, or a plain set whose members score 1.
fn source_entries(value: Option<&Value>) -> Result<Option<Entries>, CmdError> {
    match value {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z.iter().map(|(s, m)| (s, m.to_vec())).collect())),
        Some(Value::Set(s)) => Ok(Some(s.iter().map(|m| (1.0, m.to_vec())).collect())),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The result of `op` over the query's keys, every key type-checked first.
fn combine(
    store: &Store,
    now: u64,
    query: &CombineQuery,
    op: Combine,
) -> Result<ZSetValue, CmdError> {
    let mut sources = Vec::with_capacity(query.keys.len());
    for key in &query.keys {
        sources.push(store.read(key, now, source_entries)?);
    }
    let weighted = |score: f64, weight: f64| {
        let value = score * weight;
        if value.is_nan() { 0.0 } else { value }
    };
    let mut result = ZSetValue::new();
    match op {
        Combine::Union => {
            for (source, weight) in sources.iter().zip(&query.weights) {
                for (score, member) in source.iter().flatten() {
                    let score = weighted(*score, *weight);
                    let score = match result.score(member) {
                        Some(current) => query.aggregate.apply(current, score),
                        None => score,
                    };
                    result.insert(member, score);
                }
            }
        }
        Combine::Inter => {
            if sources.iter().any(Option::is_none) {
                return Ok(result);
            }
            let sources: Vec<(ZSetValue, f64)> = sources
                .into_iter()
                .flatten()
                .zip(query.weights.iter().copied())
                .map(|(entries, w)| {
                    (
                        ZSetValue::from_entries(entries.iter().map(|(s, m)| (*s, m.as_slice()))),
                        w,
                    )
                })
                .collect();
            let smallest = (0..sources.len())
                .min_by_key(|&i| sources[i].0.len())
                .unwrap_or(0);
            'members: for (score, member) in sources[smallest].0.iter() {
                let mut total = weighted(score, sources[smallest].1);
                for (i, (other, weight)) in sources.iter().enumerate() {
                    if i == smallest {
                        continue;
                    }
                    match other.score(member) {
                        Some(s) => total = query.aggregate.apply(total, weighted(s, *weight)),
                        None => continue 'members,
                    }
                }
                result.insert(member, total);
                if query.limit > 0 && result.len() >= query.limit {
                    break;
                }
            }
        }
        Combine::Diff => {
            let Some(Some(first)) = sources.first() else {
                return Ok(result);
            };
            // One hash lookup per member: a scan of every other source per member made
            // ZDIFF quadratic.
            let others: std::collections::HashSet<&[u8]> = sources[1..]
                .iter()
                .flatten()
                .flat_map(|entries| entries.iter().map(|(_, m)| m.as_slice()))
                .collect();
            for (score, member) in first {
                if !others.contains(member.as_slice()) {
                    result.insert(member, *score);
                }
            }
        }
    }
    Ok(result)
}

fn combine_reply(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, op: Combine, name: &str) -> CmdResult {
    let query = parse_combine(args, 1, op, name, false, false)?;
    let result = combine(&ctx.node.store, ctx.now, &query, op)?;
    let entries: Vec<(f64, &[u8])> = result.iter().collect();
    write_entries(ctx.out, &entries, query.with_scores);
    Ok(())
}

fn combine_store(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, op: Combine, name: &str) -> CmdResult {
    let query = parse_combine(args, 2, op, name, true, false)?;
    let result = combine(&ctx.node.store, ctx.now, &query, op)?;
    let len = store_entries(ctx, args.get(1), result, name);
    ctx.out.int(len as i64);
    Ok(())
}

/// ZUNION numkeys key [key ...] [WEIGHTS weight ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]
pub fn zunion(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    combine_reply(ctx, &args, Combine::Union, "zunion")
}

/// ZINTER numkeys key [key ...] [WEIGHTS weight ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]
pub fn zinter(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    combine_reply(ctx, &args, Combine::Inter, "zinter")
}

/// ZDIFF numkeys key [key ...] [WITHSCORES]
pub fn zdiff(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    combine_reply(ctx, &args, Combine::Diff, "zdiff")
}

/// ZUNIONSTORE destination numkeys key [key ...] [WEIGHTS weight ...] [AGGREGATE …]
pub fn zunionstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    combine_store(ctx, &args, Combine::Union, "zunionstore")
}

/// ZINTERSTORE destination numkeys key [key ...] [WEIGHTS weight ...] [AGGREGATE …]
pub fn zinterstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    combine_store(ctx, &args, Combine::Inter, "zinterstore")
}

/// ZDIFFSTORE destination numkeys key [key ...]
pub fn zdiffstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    combine_store(ctx, &args, Combine::Diff, "zdiffstore")
}

/// ZINTERCARD numkeys key [key ...] [LIMIT limit]
pub fn zintercard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let query = parse_combine(&args, 1, Combine::Inter, "zintercard", false, true)?;
    let result = combine(&ctx.node.store, ctx.now, &query, Combine::Inter)?;
    ctx.out.int(result.len() as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_windows_follow_redis_index_rules_both_ways() {
        assert_eq!(rank_window(0, -1, 5, false), (0, 5));
        assert_eq!(rank_window(1, 2, 5, false), (1, 3));
        assert_eq!(rank_window(0, 1, 5, true), (3, 5));
        assert_eq!(rank_window(-2, -1, 5, true), (0, 2));
        assert_eq!(rank_window(3, 1, 5, false), (0, 0));
        assert_eq!(rank_window(5, 9, 5, false), (0, 0));
        assert_eq!(rank_window(-100, 100, 5, false), (0, 5));
    }

    #[test]
    fn limits_apply_in_the_direction_of_the_range() {
        let members: Vec<[u8; 1]> = (0..10u8).map(|i| [b'a' + i]).collect();
        let z =
            ZSetValue::from_entries(members.iter().enumerate().map(|(i, m)| (i as f64, &m[..])));
        let all = ScoreRange {
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
            min_ex: false,
            max_ex: false,
        };
        let query = |rev, limit| RangeQuery {
            by: RangeBy::Score(all),
            rev,
            limit,
            with_scores: false,
        };
        assert_eq!(query(false, Some((2, 3))).ranks(&z), (2, 5));
        assert_eq!(query(true, Some((2, 3))).ranks(&z), (5, 8));
        assert_eq!(query(false, Some((8, -1))).ranks(&z), (8, 10));
        assert_eq!(query(true, Some((8, 5))).ranks(&z), (0, 2));
        assert_eq!(query(false, Some((-1, 5))).ranks(&z), (0, 0));
        assert_eq!(query(false, Some((20, 5))).ranks(&z), (0, 0));
    }
}
