//! Command handlers, one file per Redis command group. A handler checks its arguments,
//! calls the store, and describes its reply through the [`ReplyWriter`]; it never touches
//! the socket. Errors are returned before anything is written, in Redis's exact wording.

mod bits;
mod blocked;
mod cache;
mod cluster;
mod connection;
mod dump;
mod hashes;
mod keys;
mod lists;
mod pubsub;
mod replication;
mod scripting;
mod server;
mod sets;
mod sort;
mod streams;
mod strings;
mod tracking;
mod transactions;
mod zsets;

use ringkv_protocol::Args;

use crate::handler::{CmdError, CmdResult, Ctx, Handler, lossy};

pub use blocked::{BlockedPop, finish_blocked_pop};
pub use cache::{BlockedGet, finish_blocked, write_get_reply};
pub use connection::REDIS_COMPAT_VERSION;
pub use replication::{BlockedWait, RemoteWrite, finish_wait};
pub use server::Parked;
pub use server::write_info;

/// The handler a command table name maps to.
pub fn handler(name: &str) -> Option<Handler> {
    use bits as b;
    use connection as c;
    use hashes as h;
    use keys as k;
    use lists as l;
    use server as s;
    use sets as se;
    use strings as st;
    use transactions as t;
    use zsets as z;
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
        "client|tracking" => tracking::client_tracking,
        "client|caching" => tracking::client_caching,
        "client|getredir" => tracking::client_getredir,
        "client|trackinginfo" => tracking::client_trackinginfo,
        "client|setname" => c::client_setname,
        "client|getname" => c::client_getname,
        "client|list" => c::client_list,
        "client|info" => c::client_info,
        "client|setinfo" => c::client_setinfo,
        "client|kill" => c::client_kill,
        "client|no-evict" => c::client_no_evict,
        "client|unblock" => c::client_unblock,
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
        "cluster|scripts" => scripting::cluster_scripts,
        "cluster|deliver" => pubsub::cluster_deliver,
        "subscribe" => pubsub::subscribe_channels,
        "psubscribe" => pubsub::subscribe_patterns,
        "ssubscribe" => pubsub::subscribe_shard_channels,
        "unsubscribe" => pubsub::unsubscribe_channels,
        "punsubscribe" => pubsub::unsubscribe_patterns,
        "sunsubscribe" => pubsub::unsubscribe_shard_channels,
        "publish" => pubsub::publish,
        "spublish" => pubsub::spublish,
        "pubsub" => pubsub::pubsub_help_or_arity,
        "pubsub|channels" => pubsub::pubsub_channels,
        "pubsub|shardchannels" => pubsub::pubsub_shardchannels,
        "pubsub|numsub" => pubsub::pubsub_numsub,
        "pubsub|shardnumsub" => pubsub::pubsub_shardnumsub,
        "pubsub|numpat" => pubsub::pubsub_numpat,
        "pubsub|help" => pubsub::pubsub_help,
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
        // Redis's deprecated name for GETRANGE, still answered.
        "substr" => st::getrange,
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
        "flushdb" => k::flushdb,
        "flushall" => k::flushall,
        "move" => k::move_key,
        "swapdb" => s::swapdb,
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
        "lpush" => l::lpush,
        "rpush" => l::rpush,
        "lpushx" => l::lpushx,
        "rpushx" => l::rpushx,
        "lpop" => l::lpop,
        "rpop" => l::rpop,
        "llen" => l::llen,
        "lrange" => l::lrange,
        "lindex" => l::lindex,
        "lset" => l::lset,
        "linsert" => l::linsert,
        "lrem" => l::lrem,
        "ltrim" => l::ltrim,
        "lpos" => l::lpos,
        "lmove" => l::lmove,
        "rpoplpush" => l::rpoplpush,
        "lmpop" => l::lmpop,
        "blpop" => l::blpop,
        "brpop" => l::brpop,
        "blmove" => l::blmove,
        "brpoplpush" => l::brpoplpush,
        "blmpop" => l::blmpop,
        "sadd" => se::sadd,
        "srem" => se::srem,
        "smembers" => se::smembers,
        "sismember" => se::sismember,
        "smismember" => se::smismember,
        "scard" => se::scard,
        "spop" => se::spop,
        "srandmember" => se::srandmember,
        "smove" => se::smove,
        "sinter" => se::sinter,
        "sunion" => se::sunion,
        "sdiff" => se::sdiff,
        "sinterstore" => se::sinterstore,
        "sunionstore" => se::sunionstore,
        "sdiffstore" => se::sdiffstore,
        "sintercard" => se::sintercard,
        "sscan" => se::sscan,
        "zadd" => z::zadd,
        "zincrby" => z::zincrby,
        "zrem" => z::zrem,
        "zscore" => z::zscore,
        "zmscore" => z::zmscore,
        "zcard" => z::zcard,
        "zcount" => z::zcount,
        "zlexcount" => z::zlexcount,
        "zrank" => z::zrank,
        "zrevrank" => z::zrevrank,
        "zrange" => z::zrange,
        "zrangestore" => z::zrangestore,
        "zrevrange" => z::zrevrange,
        "zrangebyscore" => z::zrangebyscore,
        "zrevrangebyscore" => z::zrevrangebyscore,
        "zrangebylex" => z::zrangebylex,
        "zrevrangebylex" => z::zrevrangebylex,
        "zremrangebyscore" => z::zremrangebyscore,
        "zremrangebyrank" => z::zremrangebyrank,
        "zremrangebylex" => z::zremrangebylex,
        "zpopmin" => z::zpopmin,
        "zpopmax" => z::zpopmax,
        "zmpop" => z::zmpop,
        "bzpopmin" => z::bzpopmin,
        "bzpopmax" => z::bzpopmax,
        "bzmpop" => z::bzmpop,
        "zrandmember" => z::zrandmember,
        "zscan" => z::zscan,
        "zunion" => z::zunion,
        "zinter" => z::zinter,
        "zdiff" => z::zdiff,
        "zintercard" => z::zintercard,
        "zunionstore" => z::zunionstore,
        "zinterstore" => z::zinterstore,
        "zdiffstore" => z::zdiffstore,
        "setbit" => b::setbit,
        "getbit" => b::getbit,
        "bitcount" => b::bitcount,
        "bitpos" => b::bitpos,
        "bitop" => b::bitop,
        "bitfield" => b::bitfield,
        "bitfield_ro" => b::bitfield_ro,
        "lcs" => b::lcs,
        "sort" => sort::sort,
        "sort_ro" => sort::sort_ro,
        "xadd" => streams::xadd,
        "xlen" => streams::xlen,
        "xrange" => streams::xrange,
        "xrevrange" => streams::xrevrange,
        "xread" => streams::xread,
        "xtrim" => streams::xtrim,
        "xdel" => streams::xdel,
        "xsetid" => streams::xsetid,
        "xinfo" => streams::xinfo_help_or_arity,
        "xinfo|stream" => streams::xinfo_stream,
        "xinfo|groups" => streams::xinfo_groups,
        "xinfo|consumers" => streams::xinfo_consumers,
        "xinfo|help" => streams::xinfo_help,
        "eval" => scripting::eval,
        "evalsha" => scripting::evalsha,
        "eval_ro" => scripting::eval_ro,
        "evalsha_ro" => scripting::evalsha_ro,
        "script" => scripting::script_help_or_arity,
        "script|load" => scripting::script_load,
        "script|exists" => scripting::script_exists,
        "script|flush" => scripting::script_flush,
        "script|kill" => scripting::script_kill,
        "script|help" => scripting::script_help,
        "fcall" => scripting::fcall,
        "fcall_ro" => scripting::fcall_ro,
        "function" => scripting::function_help_or_arity,
        "function|load" => scripting::function_load,
        "function|delete" => scripting::function_delete,
        "function|flush" => scripting::function_flush,
        "function|list" => scripting::function_list,
        "function|dump" => scripting::function_dump,
        "function|restore" => scripting::function_restore,
        "function|stats" => scripting::function_stats,
        "function|kill" => scripting::function_kill,
        "function|help" => scripting::function_help,
        "dump" => dump::dump,
        "restore" => dump::restore,
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
    use crate::handler::float_arg;

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
