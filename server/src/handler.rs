//! What every command handler shares: its context, its error type and the argument
//! helpers. It sits below dispatch and the command files, so imports point one way:
//! dispatch → command files → this module.

use ringkv_protocol::{Args, Protocol, ReplyWriter, parse_i64};
use ringkv_store::Value;

use crate::connection::ConnState;
use crate::node::Node;

/// Everything a handler may use.
pub struct Ctx<'a, 'b> {
    /// The node.
    pub node: &'a Node,
    /// This connection.
    pub conn: &'a mut ConnState,
    /// Where the reply goes.
    pub out: &'a mut ReplyWriter<'b>,
    /// Unix milliseconds, fixed for the batch.
    pub now: u64,
}

impl Ctx<'_, '_> {
    /// True when the stored key `physical` belongs to this connection's database.
    pub fn in_db(&self, physical: &[u8]) -> bool {
        self.node.databases.holds(self.conn.db, physical)
    }

    /// Publishes keyspace event `event` of `class` on the stored key `physical` (nothing
    /// unless `notify-keyspace-events` enables the class).
    pub fn notify(&mut self, class: crate::notify::Class, event: &str, physical: &[u8]) {
        if let Some(subscriptions) = &self.conn.subscriptions
            && self.conn.own_events_mark.is_none()
        {
            self.conn.own_events_mark = Some(subscriptions.mailbox.queued());
        }
        if self.node.notifier.wants(class) {
            let (db, key) = self.node.databases.logical(physical);
            self.node
                .notifier
                .emit(&self.node.pubsub, class, event, db, key);
        }
    }

    /// Puts the events this command caused for this very connection before its reply,
    /// for the commands whose Redis implementation notifies before it answers (the others'
    /// follow the reply: dispatch takes them after the handler).
    pub fn events_first(&mut self) {
        if let Some(subscriptions) = &self.conn.subscriptions
            && !self.conn.in_script
        {
            subscriptions.mailbox.drain_to(self.out);
            self.conn.own_events_mark = Some(0);
        }
    }

    /// After a command took elements out of `physical`: `event`, then `del` when that left
    /// the key empty (and so deleted), as Redis notifies.
    pub fn notify_removed(&mut self, class: crate::notify::Class, event: &str, physical: &[u8]) {
        use crate::notify::Class;
        let notifier = &self.node.notifier;
        if notifier.wants(class) || notifier.wants(Class::GENERIC) {
            self.notify(class, event, physical);
            if !self.node.store.contains(physical, self.now) {
                self.notify(Class::GENERIC, "del", physical);
            }
        }
    }

    /// The name a client knows the stored key `physical` by.
    pub fn client_key<'k>(&self, physical: &'k [u8]) -> &'k [u8] {
        self.node.store.logical_key(physical)
    }
}

/// A command's outcome: `Err` becomes an error reply.
pub type CmdResult = Result<(), CmdError>;

/// A command handler.
pub type Handler = fn(&mut Ctx<'_, '_>, Args<'_>) -> CmdResult;

/// An error reply. `Display` is the exact text Redis sends (without the leading `-`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmdError {
    /// `ERR unknown command …`.
    #[error("ERR unknown command {0}")]
    UnknownCommand(String),
    /// `ERR unknown subcommand …`.
    #[error("ERR unknown subcommand '{sub}'. Try {container} HELP.")]
    UnknownSubcommand {
        /// What was typed.
        sub: String,
        /// The container, upper-case.
        container: String,
    },
    /// Wrong argument count.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// Not authenticated.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// Type mismatch.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// An integer argument or value that is not one.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// A float argument or value that is not one.
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// A hash field that is not an integer.
    #[error("ERR hash value is not an integer")]
    HashNotInteger,
    /// A hash field that is not a float.
    #[error("ERR hash value is not a float")]
    HashNotFloat,
    /// Integer overflow.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// NaN or infinity.
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// Bad option combination.
    #[error("ERR syntax error")]
    Syntax,
    /// A TTL that is not positive or overflows.
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    /// RENAME of a missing key.
    #[error("ERR no such key")]
    NoSuchKey,
    /// A string over `proto-max-bulk-len`.
    #[error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")]
    StringTooLong,
    /// Over `maxmemory` with nothing to evict.
    #[error("OOM command not allowed when used memory > 'maxmemory'.")]
    OutOfMemory,
    /// The persistence tier is loading.
    #[error("LOADING Redis is loading the dataset in memory")]
    Loading,
    /// The persistence tier fails and writes must be durable.
    #[error(
        "MISCONF Errors writing to the persistence tier ({0}). Commands that may modify the data set are disabled, because this node requires durable writes (appendfsync always or store mode). Check the disk and the node's log."
    )]
    Misconf(String),
    /// Any other message, already in Redis's words.
    #[error("{0}")]
    Custom(String),
}

/// Parses an integer argument as Redis does.
pub fn int_arg(arg: &[u8]) -> Result<i64, CmdError> {
    parse_i64(arg).ok_or(CmdError::NotInteger)
}

/// An `int` argument as `getIntFromObjectOrReply` parses it.
pub fn int32_arg(arg: &[u8]) -> Result<i32, CmdError> {
    let n = int_arg(arg)?;
    i32::try_from(n).map_err(|_| {
        CmdError::Custom(
            "ERR value is out of range, value must between -2147483648 and 2147483647".into(),
        )
    })
}

/// A positive count as `getPositiveLongFromObjectOrReply` parses it.
pub fn positive_count(arg: &[u8]) -> Result<usize, CmdError> {
    let n = int_arg(arg)?;
    if n < 0 {
        return Err(CmdError::Custom(
            "ERR value is out of range, must be positive".into(),
        ));
    }
    Ok(n as usize)
}

/// A range-checked integer option, as `getRangeLongFromObjectOrReply`.
/// Like Redis there, a value that is no integer gets the option's own message too.
pub fn ranged(arg: &[u8], min: i64, message: &str) -> Result<i64, CmdError> {
    match parse_i64(arg) {
        Some(n) if n >= min => Ok(n),
        _ => Err(CmdError::Custom(format!("ERR {message}"))),
    }
}

/// Parses a float as Redis's `string2ld`: no spaces, no NaN.
pub fn float_arg(arg: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.is_empty()
        || text.starts_with(|c: char| c.is_whitespace())
        || text.ends_with(|c: char| c.is_whitespace())
    {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let value: f64 = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ if lower.contains("inf") || lower.contains("nan") => return None,
        _ => text.parse().ok()?,
    };
    (!value.is_nan()).then_some(value)
}

/// The store's wrong-type error as a reply.
pub fn wrong_type(_: ringkv_store::WrongType) -> CmdError {
    CmdError::WrongType
}

/// The string value of an existing key, or WRONGTYPE.
pub fn as_str(value: &Value) -> Result<&[u8], CmdError> {
    match value {
        Value::Str(s) => Ok(s),
        _ => Err(CmdError::WrongType),
    }
}

/// True when `arg` equals `word` ignoring ASCII case.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// `on` or `off` (CLIENT TRACKING, CLIENT NO-EVICT); a syntax error otherwise.
pub fn on_off(arg: &[u8]) -> Result<bool, CmdError> {
    if is(arg, "on") {
        Ok(true)
    } else if is(arg, "off") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

/// Text of an argument for messages.
pub fn lossy(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

/// Writes Redis's HELP reply (`addReplyHelp`): the container's title line, the lines, then
/// HELP's own two.
pub fn help(ctx: &mut Ctx<'_, '_>, container: &str, lines: &[&str]) {
    const HELP: [&str; 2] = ["HELP", "    Prints this help."];
    ctx.out.array(lines.len() + 3);
    ctx.out.simple(&format!(
        "{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ));
    for line in lines.iter().chain(&HELP) {
        ctx.out.simple(line);
    }
}

/// Reads the value at `key` as one type (`as_type`, e.g. [`Value::as_list`]): `f(None)`
/// when missing, WRONGTYPE when it holds another type.
pub fn read_as<T: ?Sized, R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    as_type: impl for<'v> FnOnce(&'v Value) -> Option<&'v T>,
    f: impl FnOnce(Option<&T>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, CmdError> {
    let out = &mut *ctx.out;
    ctx.node.store.read(key, ctx.now, |value| match value {
        None => Ok(f(None, out)),
        Some(value) => as_type(value)
            .map(|typed| f(Some(typed), out))
            .ok_or(CmdError::WrongType),
    })
}

/// What a member change tells when it changed something: its class and event, and
/// whether it removes (then `del` follows when the key was emptied).
pub struct MemberEvent {
    pub class: crate::notify::Class,
    pub name: &'static str,
    pub removes: bool,
}

/// Applies `change` to the members in `args[2..]` of the key `args[1]` and replies with
/// how many changed (SADD, SREM, ZREM).
pub fn change_members(
    ctx: &mut Ctx<'_, '_>,
    args: &Args<'_>,
    event: MemberEvent,
    change: impl FnOnce(&mut ringkv_store::Slot<'_>, &[&[u8]]) -> Result<usize, ringkv_store::WrongType>,
) -> Result<(), CmdError> {
    let members: Vec<&[u8]> = args.iter().skip(2).collect();
    let changed = ctx
        .node
        .store
        .write(args.get(1), ctx.now, |slot| change(slot, &members))
        .map_err(wrong_type)?;
    if changed > 0 {
        if event.removes {
            ctx.notify_removed(event.class, event.name, args.get(1));
        } else {
            ctx.notify(event.class, event.name, args.get(1));
        }
        ctx.events_first();
    }
    ctx.out.int(changed as i64);
    Ok(())
}

/// True when the reply protocol is RESP3.
pub fn is_resp3(out: &ReplyWriter<'_>) -> bool {
    out.protocol() == Protocol::Resp3
}
