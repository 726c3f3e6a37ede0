//! Command handlers, one file per Redis command group. A handler checks its arguments,
//! calls the store, and describes its reply through the [`ReplyWriter`]; it never touches
//! the socket. Errors are returned before anything is written, in Redis's exact wording.

mod cache;
mod cluster;
mod connection;
mod hashes;
mod keys;
mod replication;
mod server;
mod strings;
mod transactions;

use ringkv_protocol::{Args, parse_i64};
use ringkv_store::Value;

use crate::dispatch::Ctx;

pub use cache::{BlockedGet, finish_blocked, write_get_reply};
pub use replication::{BlockedWait, RemoteWrite, finish_wait};
pub use server::Parked;
pub use server::write_info;

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

/// Text of an argument for messages.
pub fn lossy(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

/// Writes Redis's HELP reply: the container's title line then the lines.
pub fn help(ctx: &mut Ctx<'_, '_>, container: &str, lines: &[&str]) {
    ctx.out.array(lines.len() + 1);
    ctx.out.simple(&format!(
        "{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ));
    for line in lines {
        ctx.out.simple(line);
    }
}

/// The handler a command table name maps to.
pub fn handler(name: &str) -> Option<Handler> {
    use connection as c;
    use hashes as h;
    use keys as k;
    use server as s;
    use strings as st;
    use transactions as t;
    Some(match name {
        "ping" => c::ping,
        "echo" => c::echo,
        "hello" => c::hello,
        "auth" => c::auth,
        "select" => c::select,
        "quit" => c::quit,
        "reset" => c::reset,
        "client" => c::client_help_or_arity,
        "client|id" => c::client_id,
        "client|setname" => c::client_setname,
        "client|getname" => c::client_getname,
        "client|list" => c::client_list,
        "client|info" => c::client_info,
        "client|setinfo" => c::client_setinfo,
        "client|kill" => c::client_kill,
        "client|no-evict" => c::client_no_evict,
        "client|help" => c::client_help,
        "cluster" => cluster::container,
        "cluster|keyslot" => cluster::keyslot,
        "cluster|myid" => cluster::myid,
        "cluster|info" => cluster::info,
        "cluster|nodes" => cluster::nodes,
        "cluster|slots" => cluster::slots,
        "cluster|owners" => cluster::owners,
        "cluster|lastlsn" => replication::lastlsn,
        "cluster|waitlsn" => replication::waitlsn,
        "cluster|shards" => cluster::shards,
        "cluster|countkeysinslot" => cluster::countkeysinslot,
        "cluster|getkeysinslot" => cluster::getkeysinslot,
        "cluster|help" => cluster::help,
        "readonly" => cluster::readonly,
        "readwrite" => cluster::readwrite,
        "asking" => cluster::asking,
        "cache.get" => cache::get,
        "cache.fill" => cache::fill,
        "cache.abandon" => cache::abandon,
        "get" => st::get,
        "set" => st::set,
        "setnx" => st::setnx,
        "setex" => st::setex,
        "psetex" => st::psetex,
        "mget" => st::mget,
        "mset" => st::mset,
        "msetnx" => st::msetnx,
        "getset" => st::getset,
        "getdel" => st::getdel,
        "getex" => st::getex,
        "append" => st::append,
        "strlen" => st::strlen,
        "getrange" => st::getrange,
        "setrange" => st::setrange,
        "incr" => st::incr,
        "decr" => st::decr,
        "incrby" => st::incrby,
        "decrby" => st::decrby,
        "incrbyfloat" => st::incrbyfloat,
        "del" | "unlink" => k::del,
        "exists" => k::exists,
        "type" => k::type_of,
        "touch" => k::touch,
        "rename" => k::rename,
        "renamenx" => k::renamenx,
        "copy" => k::copy,
        "expire" => k::expire,
        "pexpire" => k::pexpire,
        "expireat" => k::expireat,
        "pexpireat" => k::pexpireat,
        "ttl" => k::ttl,
        "pttl" => k::pttl,
        "expiretime" => k::expiretime,
        "pexpiretime" => k::pexpiretime,
        "persist" => k::persist,
        "keys" => k::keys,
        "scan" => k::scan,
        "randomkey" => k::randomkey,
        "dbsize" => k::dbsize,
        "flushdb" | "flushall" => k::flushall,
        "object" => k::object_help_or_arity,
        "object|encoding" => k::object_encoding,
        "object|freq" => k::object_freq,
        "object|idletime" => k::object_idletime,
        "object|refcount" => k::object_refcount,
        "object|help" => k::object_help,
        "memory" => k::memory_help_or_arity,
        "memory|usage" => k::memory_usage,
        "memory|help" => k::memory_help,
        "hset" => h::hset,
        "hmset" => h::hmset,
        "hsetnx" => h::hsetnx,
        "hget" => h::hget,
        "hmget" => h::hmget,
        "hgetall" => h::hgetall,
        "hdel" => h::hdel,
        "hexists" => h::hexists,
        "hlen" => h::hlen,
        "hstrlen" => h::hstrlen,
        "hkeys" => h::hkeys,
        "hvals" => h::hvals,
        "hincrby" => h::hincrby,
        "hincrbyfloat" => h::hincrbyfloat,
        "hscan" => h::hscan,
        "hrandfield" => h::hrandfield,
        "multi" => t::multi,
        "exec" => t::exec,
        "discard" => t::discard,
        "watch" => t::watch,
        "unwatch" => t::unwatch,
        "info" => s::info,
        "config" => s::config_help_or_arity,
        "config|get" => s::config_get,
        "config|set" => s::config_set,
        "config|resetstat" => s::config_resetstat,
        "config|help" => s::config_help,
        "command" => s::command,
        "command|count" => s::command_count,
        "command|info" => s::command_info,
        "command|docs" => s::command_docs,
        "command|list" => s::command_list,
        "command|getkeys" => s::command_getkeys,
        "command|help" => s::command_help,
        "time" => s::time,
        "lastsave" => s::lastsave,
        "wait" => replication::wait,
        "save" => s::save,
        "bgsave" => s::bgsave,
        "shutdown" => s::shutdown,
        _ => return None,
    })
}

/// Stands in for a table entry without a handler; a test keeps the table complete.
pub fn unimplemented(_: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    Err(CmdError::Custom(format!(
        "ERR command '{}' is not implemented",
        lossy(args.get(0))
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_in_the_table_has_a_handler() {
        let specs = ringkv_protocol::COMMANDS
            .iter()
            .chain(ringkv_protocol::COMMANDS.iter().flat_map(|c| c.subcommands));
        for spec in specs {
            assert!(handler(spec.name).is_some(), "{} has no handler", spec.name);
        }
    }

    #[test]
    fn floats_parse_like_redis() {
        assert_eq!(float_arg(b"1.5"), Some(1.5));
        assert_eq!(float_arg(b"5.0e3"), Some(5000.0));
        assert_eq!(float_arg(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(float_arg(b" 1"), None);
        assert_eq!(float_arg(b"nan"), None);
        assert_eq!(float_arg(b"abc"), None);
        assert_eq!(float_arg(b""), None);
    }
}
