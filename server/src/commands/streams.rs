//! Stream commands without consumer groups: XADD XLEN XRANGE XREVRANGE XREAD XTRIM XDEL
//! XSETID and XINFO. Replies and errors follow Redis 7.0's `t_stream.c` word for word.

use std::time::Duration;

use ringkv_protocol::{Args, Protocol, ReplyWriter};
use ringkv_store::stream::{decode_fields, encode_fields};
use ringkv_store::{Store, StreamId, StreamValue, Trim, TrimBy, Value};

use super::blocked::{block_on, encode};
use crate::blocking::{Serve, ServeOutcome, WaitKind};
use crate::handler::{CmdError, CmdResult, Ctx, help, int_arg, is, lossy, read_as, wrong_type};
use crate::node::unix_ms;
use crate::notify::Class;

fn custom(message: &str) -> CmdError {
    CmdError::Custom(format!("ERR {message}"))
}

fn invalid_id() -> CmdError {
    custom("Invalid stream ID specified as stream command argument")
}

/// Most field bytes one entry may hold (Redis's `STREAM_LISTPACK_MAX_SIZE`).
const MAX_ENTRY_BYTES: usize = 1 << 30;

/// Entries an approximate trim removes at most when LIMIT is not given (Redis: 100 ×
/// `stream-node-max-entries`).
const DEFAULT_APPROX_LIMIT: u64 = 100 * 100;

/// An unsigned number as Redis's `string2ull` reads it.
fn parse_u64(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let text = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A parsed id and whether its sequence was given (`ms-*` leaves it to XADD).
struct ParsedId {
    id: StreamId,
    seq_given: bool,
}

/// `streamGenericParseIDOrReply`: `ms[-seq]`, `-` and `+` unless `strict`, `ms-*` only
/// when `allow_auto_seq`.
fn parse_id(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    allow_auto_seq: bool,
) -> Result<ParsedId, CmdError> {
    if arg.len() > 127 {
        return Err(invalid_id());
    }
    let exact = |id| {
        Ok(ParsedId {
            id,
            seq_given: true,
        })
    };
    match arg {
        b"-" | b"+" if strict => return Err(invalid_id()),
        b"-" => return exact(StreamId::MIN),
        b"+" => return exact(StreamId::MAX),
        _ => {}
    }
    let (ms, seq) = match arg.iter().position(|&b| b == b'-') {
        Some(dash) => (&arg[..dash], Some(&arg[dash + 1..])),
        None => (arg, None),
    };
    let ms = parse_u64(ms).ok_or_else(invalid_id)?;
    match seq {
        Some(b"*") if allow_auto_seq => Ok(ParsedId {
            id: StreamId::new(ms, 0),
            seq_given: false,
        }),
        Some(seq) => exact(StreamId::new(ms, parse_u64(seq).ok_or_else(invalid_id)?)),
        None => exact(StreamId::new(ms, missing_seq)),
    }
}

/// A strict id (no `-`, `+` or `*`).
fn strict_id(arg: &[u8]) -> Result<StreamId, CmdError> {
    Ok(parse_id(arg, 0, true, false)?.id)
}

/// A range bound (`streamParseIntervalIDOrReply`): an id, `-`, `+`, or `(id` exclusive.
fn interval_id(arg: &[u8], missing_seq: u64) -> Result<(StreamId, bool), CmdError> {
    if arg.len() > 1 && arg[0] == b'(' {
        Ok((parse_id(&arg[1..], missing_seq, true, false)?.id, true))
    } else {
        Ok((parse_id(arg, missing_seq, false, false)?.id, false))
    }
}

/// XADD's and XTRIM's options.
#[derive(Default)]
struct AddOrTrim {
    trim: Option<Trim>,
    no_mkstream: bool,
    /// XADD's id: `None` for `*`.
    id: Option<ParsedId>,
    /// Where XADD's fields start.
    fields_at: usize,
}

/// `streamParseAddOrTrimArgsOrReply`.
fn parse_add_or_trim(args: &Args<'_>, xadd: bool) -> Result<AddOrTrim, CmdError> {
    let mut parsed = AddOrTrim::default();
    let mut by: Option<TrimBy> = None;
    let mut approx = false;
    let mut limit: Option<u64> = None;
    let argc = args.len();
    let mut i = 2;
    while i < argc {
        let more = argc - 1 - i;
        let opt = args.get(i);
        if xadd && opt == b"*" {
            break;
        } else if (is(opt, "maxlen") || is(opt, "minid")) && more > 0 {
            if by.is_some() {
                return Err(custom(
                    "syntax error, MAXLEN and MINID options at the same time are not compatible",
                ));
            }
            approx = false;
            let next = args.get(i + 1);
            if more >= 2 && (next == b"~" || next == b"=") {
                approx = next == b"~";
                i += 1;
            }
            let threshold = args.get(i + 1);
            by = Some(if is(opt, "maxlen") {
                let max = int_arg(threshold)?;
                if max < 0 {
                    return Err(custom("The MAXLEN argument must be >= 0."));
                }
                TrimBy::MaxLen(max as u64)
            } else {
                TrimBy::MinId(strict_id(threshold)?)
            });
            i += 1;
        } else if is(opt, "limit") && more > 0 {
            let n = int_arg(args.get(i + 1))?;
            if n < 0 {
                return Err(custom("The LIMIT argument must be >= 0."));
            }
            limit = Some(n as u64);
            i += 1;
        } else if xadd && is(opt, "nomkstream") {
            parsed.no_mkstream = true;
        } else if xadd {
            parsed.id = Some(parse_id(opt, 0, true, true)?);
            break;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    if limit.is_some_and(|n| n > 0) && by.is_none() {
        return Err(custom(
            "syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && by.is_none() {
        return Err(custom(
            "syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if limit.is_some() && !approx {
        return Err(custom(
            "syntax error, LIMIT cannot be used without the special ~ option",
        ));
    }
    let limit = match limit {
        Some(n) => n,
        None if approx => DEFAULT_APPROX_LIMIT,
        None => 0,
    };
    parsed.trim = by.map(|by| Trim { by, approx, limit });
    parsed.fields_at = i + 1;
    Ok(parsed)
}

/// Writes one entry: `[id, [field, value, ...]]`.
fn write_entry(out: &mut ReplyWriter<'_>, id: StreamId, fields: &[u8]) {
    out.array(2);
    out.bulk(id.to_string().as_bytes());
    out.array(decode_fields(fields).count());
    for item in decode_fields(fields) {
        out.bulk(item);
    }
}

/// Writes the entries of `stream` in `start..=end` (`count` 0: all) as an array.
fn write_range(
    out: &mut ReplyWriter<'_>,
    stream: &StreamValue,
    start: StreamId,
    end: StreamId,
    rev: bool,
    count: usize,
) {
    let limit = if count == 0 { usize::MAX } else { count };
    let entries: Vec<_> = stream.range(start, end, rev).take(limit).collect();
    out.array(entries.len());
    for (id, fields) in entries {
        write_entry(out, id, fields);
    }
}

fn read_stream<R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(Option<&StreamValue>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, CmdError> {
    read_as(ctx, key, Value::as_stream, f)
}

/// XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value
/// [field value ...]
pub fn xadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let parsed = parse_add_or_trim(&args, true)?;
    let field_count = args.len().saturating_sub(parsed.fields_at);
    if parsed.fields_at > args.len() || field_count < 2 || field_count % 2 == 1 {
        return Err(CmdError::WrongArity("xadd"));
    }
    if let Some(ParsedId {
        id: StreamId::MIN,
        seq_given: true,
    }) = parsed.id
    {
        return Err(custom("The ID specified in XADD must be greater than 0-0"));
    }
    let items: Vec<&[u8]> = (parsed.fields_at..args.len())
        .map(|i| args.get(i))
        .collect();
    if items.iter().map(|i| i.len()).sum::<usize>() > MAX_ENTRY_BYTES {
        return Err(custom("Elements are too large to be stored"));
    }
    let now = ctx.now;
    let added = ctx.node.store.write(args.get(1), now, |slot| {
        let stream = slot.stream().map_err(wrong_type)?;
        if stream.is_none() && parsed.no_mkstream {
            return Ok(None);
        }
        let last = stream.map_or(StreamId::MIN, StreamValue::last_id);
        if last == StreamId::MAX {
            return Err(custom(
                "The stream has exhausted the last possible ID, unable to add more items",
            ));
        }
        let too_small = || {
            custom("The ID specified in XADD is equal or smaller than the target stream top item")
        };
        let id = match &parsed.id {
            None => stream.map_or(StreamId::new(now, 0), |s| {
                s.next_auto_id(now).expect("below the last possible id")
            }),
            Some(ParsedId {
                id,
                seq_given: false,
            }) if id.ms == last.ms => last
                .next()
                .filter(|n| n.ms == last.ms)
                .ok_or_else(too_small)?,
            Some(parsed) => parsed.id,
        };
        if id <= last {
            return Err(too_small());
        }
        let trimmed = slot
            .stream_add(vec![(id, encode_fields(items))], parsed.trim)
            .map_err(wrong_type)?;
        Ok(Some((id, trimmed)))
    })?;
    if let Some((_, trimmed)) = added {
        ctx.notify(Class::STREAM, "xadd", args.get(1));
        if trimmed > 0 {
            ctx.notify(Class::STREAM, "xtrim", args.get(1));
        }
    }
    match added.map(|(id, _)| id) {
        Some(id) => ctx.out.bulk(id.to_string().as_bytes()),
        None => ctx.out.null(),
    }
    Ok(())
}

/// XLEN key
pub fn xlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    read_stream(ctx, args.get(1), |stream, out| {
        out.int(stream.map_or(0, StreamValue::len) as i64)
    })
}

fn range(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, rev: bool) -> CmdResult {
    let (start_arg, end_arg) = if rev {
        (args.get(3), args.get(2))
    } else {
        (args.get(2), args.get(3))
    };
    let (mut start, start_ex) = interval_id(start_arg, 0)?;
    if start_ex {
        start = start
            .next()
            .ok_or_else(|| custom("invalid start ID for the interval"))?;
    }
    let (mut end, end_ex) = interval_id(end_arg, u64::MAX)?;
    if end_ex {
        end = end
            .prev()
            .ok_or_else(|| custom("invalid end ID for the interval"))?;
    }
    let mut count: Option<i64> = None;
    let mut i = 4;
    while i < args.len() {
        if is(args.get(i), "count") && i + 1 < args.len() {
            count = Some(int_arg(args.get(i + 1))?.max(0));
            i += 2;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    read_stream(ctx, args.get(1), |stream, out| match (stream, count) {
        (None, _) => out.array(0),
        (Some(_), Some(0)) => out.null_array(),
        (Some(stream), count) => {
            write_range(out, stream, start, end, rev, count.unwrap_or(0) as usize)
        }
    })
}

/// XRANGE key start end [COUNT count]
pub fn xrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range(ctx, &args, false)
}

/// XREVRANGE key end start [COUNT count]
pub fn xrevrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    range(ctx, &args, true)
}

/// XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count]
pub fn xtrim(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let parsed = parse_add_or_trim(&args, false)?;
    let trim = parsed.trim.expect("XTRIM's parse demands a strategy");
    let removed = ctx
        .node
        .store
        .write(args.get(1), ctx.now, |slot| slot.stream_trim(trim))
        .map_err(wrong_type)?;
    if removed > 0 {
        ctx.notify(Class::STREAM, "xtrim", args.get(1));
    }
    ctx.out.int(removed as i64);
    Ok(())
}

/// XDEL key id [id ...]
pub fn xdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let deleted = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        // As Redis: a missing key answers 0 before any id is looked at.
        if slot.stream().map_err(wrong_type)?.is_none() {
            return Ok(0);
        }
        let ids = (2..args.len())
            .map(|i| strict_id(args.get(i)))
            .collect::<Result<Vec<_>, _>>()?;
        slot.stream_delete(&ids).map_err(wrong_type)
    })?;
    if deleted > 0 {
        ctx.notify(Class::STREAM, "xdel", args.get(1));
        ctx.events_first();
    }
    ctx.out.int(deleted as i64);
    Ok(())
}

/// XSETID key last-id [ENTRIESADDED entries-added] [MAXDELETEDID max-deleted-id]
pub fn xsetid(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let id = strict_id(args.get(2))?;
    let mut entries_added: Option<u64> = None;
    let mut max_deleted = StreamId::MIN;
    let mut i = 3;
    while i < args.len() {
        let more = args.len() - 1 - i;
        if is(args.get(i), "entriesadded") && more > 0 {
            let n = int_arg(args.get(i + 1))?;
            if n < 0 {
                return Err(custom("entries_added must be positive"));
            }
            entries_added = Some(n as u64);
        } else if is(args.get(i), "maxdeletedid") && more > 0 {
            max_deleted = strict_id(args.get(i + 1))?;
            if id < max_deleted {
                return Err(custom(
                    "The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                ));
            }
        } else {
            return Err(CmdError::Syntax);
        }
        i += 2;
    }
    ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let stream = slot
            .stream()
            .map_err(wrong_type)?
            .ok_or(CmdError::NoSuchKey)?;
        if let Some((top, _)) = stream.last() {
            if id < top {
                return Err(custom(
                    "The ID specified in XSETID is smaller than the target stream top item",
                ));
            }
            if entries_added.is_some_and(|n| (stream.len() as u64) > n) {
                return Err(custom(
                    "The entries_added specified in XSETID is smaller than the target stream length",
                ));
            }
        }
        let added = entries_added.unwrap_or(stream.entries_added());
        let max_deleted = if max_deleted == StreamId::MIN {
            stream.max_deleted()
        } else {
            max_deleted
        };
        slot.stream_set_meta(id, added, max_deleted)
            .map_err(wrong_type)
    })?;
    ctx.notify(Class::STREAM, "xsetid", args.get(1));
    ctx.out.ok();
    Ok(())
}

/// XREAD's parsed arguments.
struct ReadArgs {
    count: usize,
    /// `None` without BLOCK; `Some(None)` to wait forever.
    block: Option<Option<Duration>>,
    /// Each stream and the id its entries must be above.
    streams: Vec<(Vec<u8>, StreamId)>,
}

/// A BLOCK timeout in milliseconds (`getTimeoutFromObjectOrReply` with milliseconds).
fn block_ms(arg: &[u8]) -> Result<Option<Duration>, CmdError> {
    let ms = int_arg(arg).map_err(|_| custom("timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err(custom("timeout is negative"));
    }
    Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
}

fn parse_xread(ctx: &mut Ctx<'_, '_>, args: &Args<'_>) -> Result<ReadArgs, CmdError> {
    let mut count = 0usize;
    let mut block = None;
    let mut streams_at = None;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = args.get(i);
        if is(opt, "block") && more > 0 {
            if ctx.conn.in_script {
                return Err(custom(
                    "xread command is not allowed with BLOCK option from scripts",
                ));
            }
            block = Some(block_ms(args.get(i + 1))?);
            i += 1;
        } else if is(opt, "count") && more > 0 {
            count = int_arg(args.get(i + 1))?.max(0) as usize;
            i += 1;
        } else if is(opt, "streams") && more > 0 {
            if more % 2 != 0 {
                return Err(custom(
                    "Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
                ));
            }
            streams_at = Some(i + 1);
            break;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    let first = streams_at.ok_or(CmdError::Syntax)?;
    let n = (args.len() - first) / 2;
    let mut streams = Vec::with_capacity(n);
    for k in 0..n {
        let key = args.get(first + k);
        let id_arg = args.get(first + n + k);
        let last = read_stream(ctx, key, |stream, _| stream.map(StreamValue::last_id))?;
        let id = if id_arg == b"$" {
            last.unwrap_or(StreamId::MIN)
        } else if id_arg == b">" {
            return Err(custom(
                "The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.",
            ));
        } else {
            strict_id(id_arg)?
        };
        streams.push((key.to_vec(), id));
    }
    Ok(ReadArgs {
        count,
        block,
        streams,
    })
}

/// Writes one stream's part of an XREAD reply: `[key, entries]` (a map entry in RESP3).
fn write_read_part(
    out: &mut ReplyWriter<'_>,
    key: &[u8],
    stream: &StreamValue,
    after: StreamId,
    count: usize,
) {
    if out.protocol() == Protocol::Resp2 {
        out.array(2);
    }
    out.bulk(key);
    let start = after.next().unwrap_or(StreamId::MAX);
    write_range(out, stream, start, StreamId::MAX, false, count);
}

/// True when `stream` holds an entry above `after`.
fn has_entries_after(stream: &StreamValue, after: StreamId) -> bool {
    stream.last().is_some_and(|(top, _)| top > after)
}

/// What XREAD can answer now: the reply, or `None` when no stream has newer entries.
fn read_now(
    store: &Store,
    now: u64,
    protocol: Protocol,
    streams: &[(Vec<u8>, StreamId)],
    count: usize,
) -> Option<Vec<u8>> {
    let mut ready = 0;
    let mut body = Vec::new();
    let mut out = ReplyWriter::new(&mut body, protocol);
    for (key, after) in streams {
        store.read(key, now, |value| {
            if let Some(stream) = value.and_then(Value::as_stream)
                && has_entries_after(stream, *after)
            {
                write_read_part(&mut out, store.logical_key(key), stream, *after, count);
                ready += 1;
            }
        });
    }
    if ready == 0 {
        return None;
    }
    Some(encode(protocol, |out| {
        if protocol == Protocol::Resp2 {
            out.array(ready);
        } else {
            out.map(ready);
        }
        out.raw(&body);
    }))
}

/// XREAD [COUNT count] [BLOCK milliseconds] STREAMS key [key ...] id [id ...]
pub fn xread(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let ReadArgs {
        count,
        block,
        streams,
    } = parse_xread(ctx, &args)?;
    let protocol = ctx.out.protocol();
    let Some(timeout) = block else {
        match read_now(&ctx.node.store, ctx.now, protocol, &streams, count) {
            Some(reply) => ctx.out.raw(&reply),
            None => ctx.out.null_array(),
        }
        return Ok(());
    };
    let keys: Vec<Vec<u8>> = streams.iter().map(|(k, _)| k.clone()).collect();
    let attempt_streams = streams.clone();
    let attempt =
        move |store: &Store, now: u64| Ok(read_now(store, now, protocol, &attempt_streams, count));
    let store = ctx.node.store.clone();
    let serve: Serve = Box::new(move |key, protocol| {
        let (_, after) = streams.iter().find(|(k, _)| k == key)?;
        let reply = store.read(key, unix_ms(), |value| {
            let stream = value.and_then(Value::as_stream)?;
            has_entries_after(stream, *after).then(|| {
                encode(protocol, |out| {
                    if protocol == Protocol::Resp2 {
                        out.array(1);
                    } else {
                        out.map(1);
                    }
                    write_read_part(out, store.logical_key(key), stream, *after, count);
                })
            })
        })?;
        Some(ServeOutcome {
            reply,
            touched: Vec::new(),
            // A read: it changes nothing.
            events: Vec::new(),
        })
    });
    block_on(
        ctx,
        keys,
        timeout,
        true,
        WaitKind::ReadsOnly,
        attempt,
        serve,
    )
}

/// XINFO with no subcommand.
pub fn xinfo_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("xinfo"))
}

/// XINFO HELP
pub fn xinfo_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "XINFO",
        &[
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
        ],
    );
    Ok(())
}

fn subcommand_syntax(sub: &[u8]) -> CmdError {
    CmdError::Custom(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try XINFO HELP.",
        lossy(sub)
    ))
}

/// Reads the stream XINFO is about: `ERR no such key` when missing.
fn xinfo_stream_of<R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(&StreamValue, &mut ReplyWriter<'_>) -> R,
) -> Result<R, CmdError> {
    read_stream(ctx, key, |stream, out| stream.map(|s| f(s, out)))?.ok_or(CmdError::NoSuchKey)
}

/// XINFO STREAM key [FULL [COUNT count]]
pub fn xinfo_stream(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut full = None;
    if args.len() > 3 {
        if !is(args.get(3), "full") {
            return Err(subcommand_syntax(args.get(1)));
        }
        let mut count = 10;
        if args.len() == 6 && is(args.get(4), "count") {
            count = int_arg(args.get(5))?.max(0) as usize;
        } else if args.len() > 4 {
            return Err(subcommand_syntax(args.get(1)));
        }
        full = Some(count);
    }
    xinfo_stream_of(ctx, args.get(2), |stream, out| {
        out.map(if full.is_some() { 9 } else { 10 });
        out.bulk(b"length");
        out.int(stream.len() as i64);
        out.bulk(b"radix-tree-keys");
        out.int(stream.node_count() as i64);
        out.bulk(b"radix-tree-nodes");
        out.int(stream.radix_tree_nodes() as i64);
        out.bulk(b"last-generated-id");
        out.bulk(stream.last_id().to_string().as_bytes());
        out.bulk(b"max-deleted-entry-id");
        out.bulk(stream.max_deleted().to_string().as_bytes());
        out.bulk(b"entries-added");
        out.int(stream.entries_added() as i64);
        out.bulk(b"recorded-first-entry-id");
        let first = stream.first().map_or(StreamId::MIN, |(id, _)| id);
        out.bulk(first.to_string().as_bytes());
        match full {
            None => {
                out.bulk(b"groups");
                out.int(0);
                for (name, entry) in [
                    ("first-entry", stream.first()),
                    ("last-entry", stream.last()),
                ] {
                    out.bulk(name.as_bytes());
                    match entry {
                        Some((id, fields)) => write_entry(out, id, fields),
                        None => out.null(),
                    }
                }
            }
            Some(count) => {
                out.bulk(b"entries");
                write_range(out, stream, StreamId::MIN, StreamId::MAX, false, count);
                out.bulk(b"groups");
                out.array(0);
            }
        }
    })
}

/// XINFO GROUPS key: no stream has consumer groups here.
pub fn xinfo_groups(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    xinfo_stream_of(ctx, args.get(2), |_, out| out.array(0))
}

/// XINFO CONSUMERS key group: no group exists.
pub fn xinfo_consumers(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    xinfo_stream_of(ctx, args.get(2), |_, _| ())?;
    Err(CmdError::Custom(format!(
        "NOGROUP No such consumer group '{}' for key name '{}'",
        lossy(args.get(3)),
        lossy(args.get(2))
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_redis_does() {
        let id = |arg: &[u8]| parse_id(arg, 0, false, true).map(|p| (p.id, p.seq_given));
        assert_eq!(id(b"5").unwrap(), (StreamId::new(5, 0), true));
        assert_eq!(id(b"5-3").unwrap(), (StreamId::new(5, 3), true));
        assert_eq!(id(b"5-*").unwrap(), (StreamId::new(5, 0), false));
        assert_eq!(id(b"-").unwrap().0, StreamId::MIN);
        assert_eq!(id(b"+").unwrap().0, StreamId::MAX);
        assert_eq!(
            id(b"18446744073709551615-18446744073709551615").unwrap().0,
            StreamId::MAX
        );
        for bad in [
            &b"x"[..],
            b"5-",
            b"-5",
            b"5-x",
            b"18446744073709551616",
            b"",
        ] {
            assert_eq!(
                id(bad).unwrap_err().to_string(),
                "ERR Invalid stream ID specified as stream command argument"
            );
        }
        assert!(strict_id(b"-").is_err());
        assert!(strict_id(b"5-*").is_err());
        assert_eq!(interval_id(b"(5", 0).unwrap(), (StreamId::new(5, 0), true));
        assert_eq!(
            interval_id(b"5", u64::MAX).unwrap(),
            (StreamId::new(5, u64::MAX), false)
        );
        assert!(interval_id(b"(-", 0).is_err());
    }
}
