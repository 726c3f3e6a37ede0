//! Keyspace commands: deletion, existence, TTLs, renames, iteration and introspection.

use ringkv_protocol::Args;
use ringkv_store::slot::key_slot;
use ringkv_store::{StoreError, glob_match};

use crate::handler::{CmdError, CmdResult, Ctx, help, int_arg, int32_arg, is, lossy};
use crate::notify::Class;

/// Replies with how many of the keys (arguments 1..) `op` reports true for.
fn count_keys(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    op: fn(&ringkv_store::Store, &[u8], u64) -> bool,
) -> CmdResult {
    let store = &ctx.node.store;
    let count = args
        .iter()
        .skip(1)
        .filter(|key| {
            let found = op(store, key, ctx.now);
            if !found {
                store.tell_missed(key);
            }
            found
        })
        .count();
    ctx.out.int(count as i64);
    Ok(())
}

/// DEL / UNLINK key [key ...]
pub fn del(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut deleted = 0;
    for key in args.iter().skip(1) {
        if ctx.node.store.remove(key, ctx.now) {
            deleted += 1;
            ctx.notify(Class::GENERIC, "del", key);
        }
    }
    ctx.events_first();
    ctx.out.int(deleted);
    Ok(())
}

/// EXISTS key [key ...]: a key named twice counts twice.
pub fn exists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    count_keys(ctx, args, ringkv_store::Store::contains)
}

/// TOUCH key [key ...]
pub fn touch(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    count_keys(ctx, args, ringkv_store::Store::touch)
}

/// TYPE key
pub fn type_of(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let name = ctx.node.store.inspect(args.get(1), ctx.now, |e| {
        e.map_or("none", |e| e.value.type_name())
    });
    if name == "none" {
        ctx.node.store.tell_missed(args.get(1));
    }
    ctx.out.simple(name);
    Ok(())
}

fn rename_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, only_if_absent: bool) -> CmdResult {
    let renamed = ctx
        .node
        .store
        .rename(args.get(1), args.get(2), ctx.now, only_if_absent);
    if renamed == Ok(true) && args.get(1) != args.get(2) {
        ctx.notify(Class::GENERIC, "rename_from", args.get(1));
        ctx.notify(Class::GENERIC, "rename_to", args.get(2));
        ctx.events_first();
    }
    match renamed {
        Ok(done) if only_if_absent => ctx.out.int(done as i64),
        Ok(_) => ctx.out.ok(),
        Err(StoreError::NoSuchKey) => return Err(CmdError::NoSuchKey),
        Err(_) => return Err(CmdError::OutOfMemory),
    }
    Ok(())
}

/// RENAME key newkey
pub fn rename(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    rename_generic(ctx, args, false)
}

/// RENAMENX key newkey
pub fn renamenx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    rename_generic(ctx, args, true)
}

/// COPY source destination [DB 0] [REPLACE]
pub fn copy(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut replace = false;
    let mut target = None;
    let mut i = 3;
    while i < args.len() {
        if is(args.get(i), "REPLACE") {
            replace = true;
        } else if is(args.get(i), "DB") && i + 1 < args.len() {
            target = Some(db_index(ctx, args.get(i + 1))?);
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    let target = target.unwrap_or(ctx.conn.db);
    if ctx.node.cluster.is_some() && target != 0 {
        return Err(CmdError::Custom(
            "ERR Copying to another database is not allowed in cluster mode".into(),
        ));
    }
    // The destination was named in this connection's database; DB moves it.
    let destination = ctx.node.databases.key(target, ctx.client_key(args.get(2)));
    if destination.as_ref() == args.get(1) {
        return Err(CmdError::Custom(
            "ERR source and destination objects are the same".into(),
        ));
    }
    // A missing source copies nothing: 0, as in Redis.
    ctx.node.store.tell_if_missing(args.get(1), ctx.now);
    let copied = ctx
        .node
        .store
        .copy(args.get(1), &destination, ctx.now, replace)
        .unwrap_or_default();
    if copied {
        ctx.notify(Class::GENERIC, "copy_to", &destination);
        ctx.events_first();
    }
    if copied && ctx.node.blocking.waiting() > 0 {
        ctx.conn.ready_keys.push(destination.into_owned());
    }
    ctx.out.int(copied as i64);
    Ok(())
}

/// MOVE key db
pub fn move_key(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.node.cluster.is_some() {
        return Err(CmdError::Custom(
            "ERR MOVE is not allowed in cluster mode".into(),
        ));
    }
    let target = db_index(ctx, args.get(2))?;
    if target == ctx.conn.db {
        return Err(CmdError::Custom(
            "ERR source and destination objects are the same".into(),
        ));
    }
    let destination = ctx.node.databases.key(target, ctx.client_key(args.get(1)));
    // A missing source or a destination that exists moves nothing: 0.
    let moved = ctx
        .node
        .store
        .rename(args.get(1), &destination, ctx.now, true)
        .unwrap_or(false);
    if moved {
        ctx.notify(Class::GENERIC, "move_from", args.get(1));
        ctx.notify(Class::GENERIC, "move_to", &destination);
    }
    if moved && ctx.node.blocking.waiting() > 0 {
        ctx.conn.ready_keys.push(destination.into_owned());
    }
    ctx.out.int(i64::from(moved));
    Ok(())
}

/// A database index argument (`getIntFromObjectOrReply`, then `selectDb`'s range): in a
/// cluster the indexes Redis Cluster accepts before refusing another database than 0.
pub fn db_index(ctx: &Ctx<'_, '_>, arg: &[u8]) -> Result<u8, CmdError> {
    let db = i64::from(int32_arg(arg)?);
    let count = ctx.node.config.read().databases;
    let index = if ctx.node.cluster.is_some() {
        (0..i64::from(count)).contains(&db).then_some(db as u8)
    } else {
        ctx.node.databases.index(db)
    };
    index.ok_or_else(|| CmdError::Custom("ERR DB index is out of range".into()))
}

/// EXPIRE-family condition flags.
#[derive(Debug, Default, Clone, Copy)]
struct ExpireFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn parse_expire_flags(args: &Args<'_>) -> Result<ExpireFlags, CmdError> {
    let mut flags = ExpireFlags::default();
    for arg in args.iter().skip(3) {
        match () {
            _ if is(arg, "NX") => flags.nx = true,
            _ if is(arg, "XX") => flags.xx = true,
            _ if is(arg, "GT") => flags.gt = true,
            _ if is(arg, "LT") => flags.lt = true,
            _ => {
                return Err(CmdError::Custom(format!(
                    "ERR Unsupported option {}",
                    lossy(arg)
                )));
            }
        }
    }
    if flags.nx && (flags.xx || flags.gt || flags.lt) {
        return Err(CmdError::Custom(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if flags.gt && flags.lt {
        return Err(CmdError::Custom(
            "ERR GT and LT options at the same time are not compatible".into(),
        ));
    }
    Ok(flags)
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: `unit_ms` scales the amount, `relative` adds now.
fn expire_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    unit_ms: i64,
    relative: bool,
    command: &'static str,
) -> CmdResult {
    let amount = int_arg(args.get(2))?;
    let flags = parse_expire_flags(&args)?;
    let invalid = CmdError::InvalidExpire(command);
    let mut at = amount.checked_mul(unit_ms).ok_or(invalid.clone())?;
    if relative {
        at = at.checked_add(ctx.now as i64).ok_or(invalid)?;
    }
    let now = ctx.now;
    let changed = ctx.node.store.write(args.get(1), now, |slot| {
        if !slot.exists() {
            return false;
        }
        // A key without a TTL counts as an infinite TTL for GT and LT.
        let current = slot.expires_at();
        let allowed = match current {
            None => !flags.xx && !flags.gt,
            Some(cur) => {
                !flags.nx && (!flags.gt || at > cur as i64) && (!flags.lt || at < cur as i64)
            }
        };
        if !allowed {
            return false;
        }
        if at <= now as i64 {
            // A deadline already past deletes the key, as Redis does (a `del` event).
            slot.remove();
            return true;
        }
        slot.set_expires_at(Some(at as u64))
    });
    if changed {
        let event = if at <= now as i64 { "del" } else { "expire" };
        ctx.notify(Class::GENERIC, event, args.get(1));
        // Redis tells of a deletion before its reply, of a new deadline after it.
        if at <= now as i64 {
            ctx.events_first();
        }
    }
    ctx.out.int(changed as i64);
    Ok(())
}

/// EXPIRE key seconds [NX|XX|GT|LT]
pub fn expire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, true, "expire")
}

/// PEXPIRE key milliseconds [NX|XX|GT|LT]
pub fn pexpire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, true, "pexpire")
}

/// EXPIREAT key unix-seconds [NX|XX|GT|LT]
pub fn expireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, false, "expireat")
}

/// PEXPIREAT key unix-ms [NX|XX|GT|LT]
pub fn pexpireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, false, "pexpireat")
}

/// -2 for a missing key, -1 without TTL, else `f(deadline)`.
fn ttl_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    f: impl FnOnce(u64, u64) -> i64,
) -> CmdResult {
    let now = ctx.now;
    let reply = ctx.node.store.inspect(args.get(1), now, |e| match e {
        None => -2,
        Some(e) => e.expires_at.map_or(-1, |at| f(at, now)),
    });
    if reply == -2 {
        ctx.node.store.tell_missed(args.get(1));
    }
    ctx.out.int(reply);
    Ok(())
}

/// TTL key (rounded to the nearest second, as Redis does)
pub fn ttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| {
        ((at.saturating_sub(now) + 500) / 1000) as i64
    })
}

/// PTTL key
pub fn pttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| at.saturating_sub(now) as i64)
}

/// EXPIRETIME key
pub fn expiretime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| (at / 1000) as i64)
}

/// PEXPIRETIME key
pub fn pexpiretime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| at as i64)
}

/// PERSIST key
pub fn persist(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let removed = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        slot.expires_at().is_some() && slot.set_expires_at(None)
    });
    if removed {
        ctx.notify(Class::GENERIC, "persist", args.get(1));
    }
    ctx.out.int(removed as i64);
    Ok(())
}

/// KEYS pattern
pub fn keys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let pattern = args.get(1);
    let all = pattern == b"*";
    let served = served(ctx);
    let keys = ctx.node.store.keys_where(ctx.now, |key| {
        ctx.in_db(key)
            && served.as_ref().is_none_or(|s| s.contains(key_slot(key)))
            && (all || glob_match(pattern, ctx.client_key(key), false))
    });
    ctx.out.array(keys.len());
    for key in &keys {
        ctx.out.bulk(ctx.node.store.logical_key(key));
    }
    Ok(())
}

/// SCAN/HSCAN options.
pub struct ScanOptions<'a> {
    /// The cursor.
    pub cursor: u64,
    /// MATCH pattern.
    pub pattern: Option<&'a [u8]>,
    /// COUNT.
    pub count: usize,
    /// TYPE (SCAN only).
    pub type_name: Option<&'a [u8]>,
    /// NOVALUES (HSCAN only).
    pub no_values: bool,
}

/// Parses `cursor [MATCH p] [COUNT n] [TYPE t] [NOVALUES]` starting at `at`.
fn scan_options<'a>(
    args: &Args<'a>,
    at: usize,
    allow_type: bool,
) -> Result<ScanOptions<'a>, CmdError> {
    let cursor = std::str::from_utf8(args.get(at))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| CmdError::Custom("ERR invalid cursor".into()))?;
    let mut options = ScanOptions {
        cursor,
        pattern: None,
        count: 10,
        type_name: None,
        no_values: false,
    };
    let mut i = at + 1;
    while i < args.len() {
        let arg = args.get(i);
        let value = (i + 1 < args.len()).then(|| args.get(i + 1));
        match value {
            Some(v) if is(arg, "MATCH") => options.pattern = Some(v),
            Some(v) if is(arg, "COUNT") => {
                let count = int_arg(v)?;
                if count < 1 {
                    return Err(CmdError::Syntax);
                }
                options.count = count.min(1 << 20) as usize;
            }
            Some(v) if allow_type && is(arg, "TYPE") => options.type_name = Some(v),
            _ if !allow_type && is(arg, "NOVALUES") => {
                options.no_values = true;
                i += 1;
                continue;
            }
            _ => return Err(CmdError::Syntax),
        }
        i += 2;
    }
    Ok(options)
}

/// Parses HSCAN's options (the cursor is argument 2).
pub fn hscan_options<'a>(args: &Args<'a>) -> Result<ScanOptions<'a>, CmdError> {
    scan_options(args, 2, false)
}

/// Parses SSCAN's and ZSCAN's options: HSCAN's without NOVALUES.
pub fn member_scan_options<'a>(args: &Args<'a>) -> Result<ScanOptions<'a>, CmdError> {
    let options = scan_options(args, 2, false)?;
    if options.no_values {
        return Err(CmdError::Syntax);
    }
    Ok(options)
}

/// Writes a scan reply: `[cursor, [items…]]`.
pub fn write_scan_reply(ctx: &mut Ctx<'_, '_>, cursor: u64, items: &[Vec<u8>]) {
    ctx.out.array(2);
    ctx.out.bulk(itoa::Buffer::new().format(cursor).as_bytes());
    ctx.out.array(items.len());
    for item in items {
        ctx.out.bulk(item);
    }
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
pub fn scan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let options = scan_options(&args, 1, true)?;
    let served = served(ctx);
    let (next, mut keys) =
        ctx.node
            .store
            .scan(options.cursor, options.count, ctx.now, |key, value| {
                ctx.in_db(key)
                    && served.as_ref().is_none_or(|s| s.contains(key_slot(key)))
                    && options
                        .pattern
                        .is_none_or(|p| glob_match(p, ctx.client_key(key), false))
                    && options
                        .type_name
                        .is_none_or(|t| t.eq_ignore_ascii_case(value.type_name().as_bytes()))
            });
    for key in &mut keys {
        let logical = ctx.client_key(key).len();
        key.drain(..key.len() - logical);
    }
    write_scan_reply(ctx, next, &keys);
    Ok(())
}

/// RANDOMKEY
pub fn randomkey(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let key = match served(ctx) {
        // A bounded number of draws: copies of other members' slots are not ours to show.
        Some(served) => (0..64)
            .filter_map(|_| ctx.node.store.random_key(ctx.now))
            .find(|key| served.contains(key_slot(key))),
        None => ctx
            .node
            .store
            .random_key_where(ctx.now, |key| ctx.in_db(key)),
    };
    ctx.out
        .bulk_or_null(key.as_deref().map(|k| ctx.node.store.logical_key(k)));
    Ok(())
}

/// DBSIZE
pub fn dbsize(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let len = match served(ctx) {
        Some(served) => ctx.node.store.len_in(&served),
        None if ctx.node.databases.enabled() => {
            let physical = ctx.node.databases.physical(ctx.conn.db);
            ctx.node.store.database_len(physical).keys
        }
        None => ctx.node.store.len(),
    };
    ctx.out.int(len as i64);
    Ok(())
}

fn flush_mode(args: &Args<'_>) -> Result<bool, CmdError> {
    match args.len() {
        1 => Ok(false),
        2 if is(args.get(1), "ASYNC") => Ok(true),
        2 if is(args.get(1), "SYNC") => Ok(false),
        _ => Err(CmdError::Syntax),
    }
}

/// Empties the whole keyspace (every database); ASYNC frees the memory off the request
/// path.
fn flush_everything(ctx: &mut Ctx<'_, '_>, asynchronous: bool) {
    let flushed = ctx.node.store.flush();
    // Every database is empty: which namespace each names no longer matters.
    ctx.node.databases.reset();
    // Functions are not data: FLUSHALL keeps them, and so must the store.
    ctx.node
        .scripting
        .persist_functions(&ctx.node.store, ctx.now);
    if asynchronous {
        // Freeing millions of entries takes a while; do it off the request path.
        std::thread::spawn(move || drop(flushed));
    } else {
        drop(flushed);
    }
}

/// FLUSHALL [ASYNC|SYNC]
pub fn flushall(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let asynchronous = flush_mode(&args)?;
    if let Some(served) = served(ctx) {
        // A member's copies of other members' slots follow their primaries, not us.
        ctx.node.store.clear_slots(&served);
    } else {
        flush_everything(ctx, asynchronous);
    }
    ctx.out.ok();
    tell_trackers_flushed(ctx);
    Ok(())
}

/// Every client that caches keys is told to drop them all (after the writer's reply).
fn tell_trackers_flushed(ctx: &mut Ctx<'_, '_>) {
    let writer = ctx.conn.handle.id;
    ctx.node.tracking.flushed(ctx.node, writer, ctx.out);
}

/// FLUSHDB [ASYNC|SYNC]: the connection's database; all of them on a node with one.
pub fn flushdb(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let asynchronous = flush_mode(&args)?;
    let databases = &ctx.node.databases;
    if !databases.enabled() {
        return flushall(ctx, args);
    }
    let physical = databases.physical(ctx.conn.db);
    let store = &ctx.node.store;
    if store.database_len(physical).keys == store.len() {
        // Nothing else is stored: one Clear record instead of a deletion per key.
        flush_everything(ctx, asynchronous);
    } else {
        store.remove_where(|key| ringkv_store::namespace::database_of(key) == physical);
    }
    ctx.out.ok();
    tell_trackers_flushed(ctx);
    Ok(())
}

fn object_lookup(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(&ringkv_store::EntryView<'_>, &mut ringkv_protocol::ReplyWriter<'_>),
) {
    let out = &mut *ctx.out;
    ctx.node.store.inspect(key, ctx.now, |e| match e {
        Some(e) => f(&e, out),
        None => out.null(),
    });
}

/// OBJECT with no subcommand.
pub fn object_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("object"))
}

/// OBJECT ENCODING key
pub fn object_encoding(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    object_lookup(ctx, args.get(2), |e, out| {
        out.bulk(e.value.encoding().as_bytes())
    });
    Ok(())
}

/// OBJECT FREQ key (LFU policies only, as in Redis)
pub fn object_freq(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if !ctx.node.store.policy().is_lfu() {
        return Err(CmdError::Custom("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.".into()));
    }
    object_lookup(ctx, args.get(2), |e, out| out.int(e.frequency as i64));
    Ok(())
}

/// OBJECT IDLETIME key (not under LFU policies, as in Redis)
pub fn object_idletime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.node.store.policy().is_lfu() {
        return Err(CmdError::Custom("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.".into()));
    }
    object_lookup(ctx, args.get(2), |e, out| {
        out.int((e.idle_ms / 1000) as i64)
    });
    Ok(())
}

/// OBJECT REFCOUNT key (values are never shared: always 1)
pub fn object_refcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    object_lookup(ctx, args.get(2), |_, out| out.int(1));
    Ok(())
}

/// OBJECT HELP
pub fn object_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "OBJECT",
        &[
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified <key>.",
        ],
    );
    Ok(())
}

/// MEMORY with no subcommand.
pub fn memory_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("memory"))
}

/// MEMORY USAGE key [SAMPLES count]
pub fn memory_usage(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        3 => {}
        5 if is(args.get(3), "SAMPLES") => {
            int_arg(args.get(4))?;
        }
        _ => return Err(CmdError::Syntax),
    }
    object_lookup(ctx, args.get(2), |e, out| out.int(e.memory as i64));
    Ok(())
}

/// MEMORY HELP
pub fn memory_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "MEMORY",
        &[
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value.",
        ],
    );
    Ok(())
}

/// In cluster mode, the slots this member serves (keyspace-wide commands cover those).
fn served(ctx: &Ctx<'_, '_>) -> Option<std::sync::Arc<ringkv_store::slot_set::SlotSet>> {
    ctx.node
        .cluster
        .as_ref()
        .map(|cluster| cluster.served_slots())
}
