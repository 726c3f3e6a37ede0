//! Each command's argument syntax in Redis's usage notation, and the argument tree
//! `COMMAND DOCS` reports (which redis-cli turns into its typing hints). Notation:
//! `UPPER` is a literal token, `lower` an argument, `[...]` optional, `(...)` a group,
//! `a|b` alternatives, a trailing `...` repeats. Pure data and a small parser.

/// One documented argument, as in Redis's `COMMAND DOCS` `arguments` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDoc {
    /// Argument name.
    pub name: String,
    /// `key`, `string`, `integer`, `double`, `pattern`, `pure-token`, `oneof` or `block`.
    pub kind: &'static str,
    /// The literal token that introduces it, if any.
    pub token: Option<String>,
    /// May be left out.
    pub optional: bool,
    /// May repeat.
    pub multiple: bool,
    /// Children of `oneof` and `block`.
    pub children: Vec<ArgDoc>,
}

/// The usage line of a command (without its name), empty when it takes no argument.
pub fn syntax(name: &str) -> &'static str {
    match name {
        "ping" => "[message]",
        "cache.get" => "key LEASE milliseconds [WAIT milliseconds]",
        "cache.fill" => "key token value [EX seconds|PX milliseconds|ADAPTIVE]",
        "cache.abandon" => "key token",
        "cluster|keyslot" => "key",
        "cluster|countkeysinslot" => "slot",
        "cluster|getkeysinslot" => "slot count",
        "cluster|waitlsn" => "lsn numreplicas timeout slot [slot ...]",
        "cluster|deliver" => "MESSAGE|SMESSAGE channel message",
        "bgsave" => "[SCHEDULE]",
        "wait" => "numreplicas timeout",
        "echo" => "message",
        "hello" => "[protover [AUTH username password] [SETNAME clientname]]",
        "auth" => "[username] password",
        "select" => "index",
        "client|setname" => "connection-name",
        "client|list" => "[TYPE NORMAL|MASTER|REPLICA|PUBSUB] [ID client-id...]",
        "client|setinfo" => "LIB-NAME libname|LIB-VER libver",
        "client|kill" => {
            "[ID client-id] [ADDR ip:port] [LADDR ip:port] [SKIPME YES|NO] [MAXAGE maxage]"
        }
        "client|no-evict" => "ON|OFF",
        "client|tracking" => {
            "ON|OFF [REDIRECT client-id] [PREFIX prefix...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP]"
        }
        "client|caching" => "YES|NO",
        "get" | "getdel" | "strlen" | "incr" | "decr" | "type" | "ttl" | "pttl" | "expiretime"
        | "pexpiretime" | "persist" | "hgetall" | "hlen" | "hkeys" | "hvals" => "key",
        "set" => {
            "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]"
        }
        "setnx" | "getset" | "append" => "key value",
        "setex" => "key seconds value",
        "psetex" => "key milliseconds value",
        "mget" | "del" | "unlink" | "exists" | "touch" | "watch" => "key...",
        "mset" | "msetnx" => "(key value)...",
        "getex" => {
            "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]"
        }
        "getrange" => "key start end",
        "substr" => "key start end",
        "setrange" => "key offset value",
        "incrby" => "key increment",
        "decrby" => "key decrement",
        "incrbyfloat" => "key increment",
        "rename" | "renamenx" => "key newkey",
        "copy" => "source destination [DB destination-db] [REPLACE]",
        "expire" | "pexpire" | "expireat" | "pexpireat" => match name {
            "expire" => "key seconds [NX|XX|GT|LT]",
            "pexpire" => "key milliseconds [NX|XX|GT|LT]",
            "expireat" => "key unix-time-seconds [NX|XX|GT|LT]",
            _ => "key unix-time-milliseconds [NX|XX|GT|LT]",
        },
        "keys" => "pattern",
        "scan" => "cursor [MATCH pattern] [COUNT count] [TYPE type]",
        "flushdb" | "flushall" => "[ASYNC|SYNC]",
        "object|encoding" | "object|freq" | "object|idletime" | "object|refcount" => "key",
        "memory|usage" => "key [SAMPLES count]",
        "hset" | "hmset" => "key (field value)...",
        "hsetnx" => "key field value",
        "hget" | "hexists" | "hstrlen" => "key field",
        "hmget" | "hdel" => "key field...",
        "hincrby" | "hincrbyfloat" => "key field increment",
        "hscan" => "key cursor [MATCH pattern] [COUNT count] [NOVALUES]",
        "hrandfield" => "key [count [WITHVALUES]]",
        "lpush" | "rpush" | "lpushx" | "rpushx" => "key element...",
        "lpop" | "rpop" => "key [count]",
        "llen" => "key",
        "lrange" | "ltrim" => "key start stop",
        "lindex" => "key index",
        "lset" => "key index element",
        "linsert" => "key BEFORE|AFTER pivot element",
        "lrem" => "key count element",
        "lpos" => "key element [RANK rank] [COUNT num-matches] [MAXLEN len]",
        "lmove" => "source destination LEFT|RIGHT LEFT|RIGHT",
        "rpoplpush" => "source destination",
        "lmpop" => "numkeys key... LEFT|RIGHT [COUNT count]",
        "blpop" | "brpop" => "key... timeout",
        "blmove" => "source destination LEFT|RIGHT LEFT|RIGHT timeout",
        "brpoplpush" => "source destination timeout",
        "blmpop" => "timeout numkeys key... LEFT|RIGHT [COUNT count]",
        "sadd" | "srem" | "smismember" => "key member...",
        "smembers" | "scard" => "key",
        "sismember" => "key member",
        "spop" | "srandmember" => "key [count]",
        "smove" => "source destination member",
        "sinter" | "sunion" | "sdiff" => "key...",
        "sinterstore" | "sunionstore" | "sdiffstore" => "destination key...",
        "sintercard" => "numkeys key... [LIMIT limit]",
        "sscan" => "key cursor [MATCH pattern] [COUNT count]",
        "zadd" => "key [NX|XX] [GT|LT] [CH] [INCR] (score member)...",
        "zincrby" => "key increment member",
        "zrem" | "zmscore" => "key member...",
        "zscore" => "key member",
        "zcard" => "key",
        "zcount" | "zlexcount" | "zremrangebyscore" | "zremrangebylex" => "key min max",
        "zrank" | "zrevrank" => "key member [WITHSCORE]",
        "zrange" => "key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]",
        "zrangestore" => "dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]",
        "zrevrange" => "key start stop [WITHSCORES]",
        "zrangebyscore" => "key min max [WITHSCORES] [LIMIT offset count]",
        "zrevrangebyscore" => "key max min [WITHSCORES] [LIMIT offset count]",
        "zrangebylex" => "key min max [LIMIT offset count]",
        "zrevrangebylex" => "key max min [LIMIT offset count]",
        "zremrangebyrank" => "key start stop",
        "zpopmin" | "zpopmax" => "key [count]",
        "zmpop" => "numkeys key... MIN|MAX [COUNT count]",
        "bzpopmin" | "bzpopmax" => "key... timeout",
        "bzmpop" => "timeout numkeys key... MIN|MAX [COUNT count]",
        "zrandmember" => "key [count [WITHSCORES]]",
        "zscan" => "key cursor [MATCH pattern] [COUNT count]",
        "zunion" | "zinter" => {
            "numkeys key... [WEIGHTS weight...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]"
        }
        "zdiff" => "numkeys key... [WITHSCORES]",
        "zunionstore" | "zinterstore" => {
            "destination numkeys key... [WEIGHTS weight...] [AGGREGATE SUM|MIN|MAX]"
        }
        "zdiffstore" => "destination numkeys key...",
        "zintercard" => "numkeys key... [LIMIT limit]",
        "setbit" => "key offset value",
        "getbit" => "key offset",
        "bitcount" => "key [start end [BYTE|BIT]]",
        "bitpos" => "key bit [start [end [BYTE|BIT]]]",
        "bitop" => "AND|OR|XOR|NOT destkey key...",
        "bitfield" => {
            "key [GET encoding offset|SET encoding offset value|INCRBY encoding offset increment|OVERFLOW WRAP|SAT|FAIL]..."
        }
        "bitfield_ro" => "key [GET encoding offset]...",
        "lcs" => "key1 key2 [LEN] [IDX] [MINMATCHLEN min-match-len] [WITHMATCHLEN]",
        "sort" => {
            "key [BY pattern] [LIMIT offset count] [GET pattern...] [ASC|DESC] [ALPHA] [STORE destination]"
        }
        "sort_ro" => "key [BY pattern] [LIMIT offset count] [GET pattern...] [ASC|DESC] [ALPHA]",
        "xadd" => {
            "key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id (field value)..."
        }
        "xlen" => "key",
        "xrange" => "key start end [COUNT count]",
        "xrevrange" => "key end start [COUNT count]",
        "xread" => "[COUNT count] [BLOCK milliseconds] STREAMS key... id...",
        "xtrim" => "key MAXLEN|MINID [=|~] threshold [LIMIT count]",
        "xdel" => "key id...",
        "xsetid" => "key last-id [ENTRIESADDED entries-added] [MAXDELETEDID max-deleted-id]",
        "xinfo|stream" => "key [FULL [COUNT count]]",
        "xinfo|groups" => "key",
        "xinfo|consumers" => "key group",
        "eval" | "eval_ro" => "script numkeys [key...] [arg...]",
        "evalsha" | "evalsha_ro" => "sha1 numkeys [key...] [arg...]",
        "script|load" => "script",
        "fcall" | "fcall_ro" => "function numkeys [key...] [arg...]",
        "function|load" => "[REPLACE] function-code",
        "function|delete" => "library-name",
        "function|flush" => "[ASYNC|SYNC]",
        "function|list" => "[LIBRARYNAME library-name-pattern] [WITHCODE]",
        "function|restore" => "serialized-value [FLUSH|APPEND|REPLACE]",
        "script|exists" => "sha1...",
        "script|flush" => "[ASYNC|SYNC]",
        "subscribe" | "psubscribe" => "channel...",
        "ssubscribe" => "shardchannel...",
        "unsubscribe" | "punsubscribe" => "[channel...]",
        "sunsubscribe" => "[shardchannel...]",
        "publish" => "channel message",
        "spublish" => "shardchannel message",
        "pubsub|channels" | "pubsub|shardchannels" => "[pattern]",
        "pubsub|numsub" => "[channel...]",
        "pubsub|shardnumsub" => "[shardchannel...]",
        "move" => "key db",
        "swapdb" => "index1 index2",
        "dump" => "key",
        "restore" => {
            "key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]"
        }
        "client|unblock" => "client-id [TIMEOUT|ERROR]",
        "info" => "[section...]",
        "config|get" => "parameter...",
        "config|set" => "(parameter value)...",
        "command|info" | "command|docs" => "[command-name...]",
        "command|list" => "[FILTERBY MODULE module-name|ACLCAT category|PATTERN pattern]",
        "command|getkeys" => "command [arg...]",
        "shutdown" => "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]",
        _ => "",
    }
}

fn kind_of(name: &str) -> &'static str {
    match name {
        "key" | "newkey" | "source" | "destination" => "key",
        "pattern" => "pattern",
        "seconds"
        | "milliseconds"
        | "unix-time-seconds"
        | "unix-time-milliseconds"
        | "start"
        | "end"
        | "offset"
        | "count"
        | "cursor"
        | "index"
        | "index1"
        | "index2"
        | "db"
        | "protover"
        | "client-id"
        | "maxage"
        | "destination-db"
        | "stop"
        | "rank"
        | "num-matches"
        | "len"
        | "numkeys"
        | "decrement" => "integer",
        "timeout" => "double",
        "increment" => "integer",
        _ => "string",
    }
}

fn is_token(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_uppercase()) && !word.chars().any(|c| c.is_ascii_lowercase())
}

/// Splits the notation into words and the brackets, parentheses and bars between them.
fn lex(text: &str) -> Vec<String> {
    let spaced = text
        .replace('[', " [ ")
        .replace(']', " ] ")
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('|', " | ")
        .replace("...", " ... ");
    spaced.split_whitespace().map(str::to_string).collect()
}

/// Parses a usage line into Redis's argument tree.
pub fn parse_syntax(text: &str) -> Vec<ArgDoc> {
    let words = lex(text);
    let mut pos = 0;
    parse_sequence(&words, &mut pos)
}

/// A sequence up to a closing bracket or the end; alternatives (`|`) become a oneof.
fn parse_sequence(words: &[String], pos: &mut usize) -> Vec<ArgDoc> {
    let mut alternatives: Vec<Vec<ArgDoc>> = vec![Vec::new()];
    while *pos < words.len() {
        let word = words[*pos].as_str();
        match word {
            "]" | ")" => break,
            "|" => {
                *pos += 1;
                alternatives.push(Vec::new());
                continue;
            }
            "..." => {
                if let Some(last) = alternatives.last_mut().and_then(|a| a.last_mut()) {
                    last.multiple = true;
                }
                *pos += 1;
                continue;
            }
            "[" | "(" => {
                *pos += 1;
                let inner = parse_sequence(words, pos);
                *pos += 1; // the closing bracket
                let mut arg = group(inner);
                arg.optional |= word == "[";
                alternatives.last_mut().expect("one alternative").push(arg);
                continue;
            }
            _ => {}
        }
        *pos += 1;
        let current = alternatives.last_mut().expect("one alternative");
        if is_token(word) {
            // A token followed by an argument introduces it: `EX seconds`.
            let next = words.get(*pos).map(String::as_str).unwrap_or("");
            if !next.is_empty()
                && !is_token(next)
                && !["[", "]", "(", ")", "|", "..."].contains(&next)
            {
                *pos += 1;
                current.push(leaf(next, Some(word)));
            } else {
                current.push(ArgDoc {
                    name: word.to_ascii_lowercase(),
                    kind: "pure-token",
                    token: Some(word.to_string()),
                    optional: false,
                    multiple: false,
                    children: Vec::new(),
                });
            }
        } else {
            current.push(leaf(word, None));
        }
    }
    if alternatives.len() == 1 {
        return alternatives.pop().unwrap_or_default();
    }
    let children: Vec<ArgDoc> = alternatives.into_iter().map(group).collect();
    vec![ArgDoc {
        name: children
            .first()
            .map_or_else(String::new, |c| c.name.clone()),
        kind: "oneof",
        token: None,
        optional: false,
        multiple: false,
        children,
    }]
}

fn leaf(name: &str, token: Option<&str>) -> ArgDoc {
    ArgDoc {
        name: name.to_string(),
        kind: kind_of(name),
        token: token.map(str::to_string),
        optional: false,
        multiple: false,
        children: Vec::new(),
    }
}

/// One argument standing for a parsed group: itself when alone, else a block.
fn group(mut items: Vec<ArgDoc>) -> ArgDoc {
    if items.len() == 1 {
        return items.pop().expect("one item");
    }
    ArgDoc {
        name: items
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join("-"),
        kind: "block",
        token: None,
        optional: false,
        multiple: false,
        children: items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::COMMANDS;

    #[test]
    fn set_documents_its_options_like_redis() {
        let args = parse_syntax(syntax("set"));
        let names: Vec<_> = args
            .iter()
            .map(|a| (a.name.as_str(), a.kind, a.optional))
            .collect();
        assert_eq!(
            names,
            vec![
                ("key", "key", false),
                ("value", "string", false),
                ("nx", "oneof", true),
                ("get", "pure-token", true),
                ("seconds", "oneof", true),
            ]
        );
        let expiry = &args[4].children;
        assert_eq!(expiry[0].token.as_deref(), Some("EX"));
        assert_eq!(expiry[0].kind, "integer");
        assert_eq!(expiry[4].kind, "pure-token");
    }

    #[test]
    fn repeated_groups_are_multiple_blocks() {
        let args = parse_syntax(syntax("hset"));
        assert_eq!(args.len(), 2);
        assert_eq!(args[1].kind, "block");
        assert!(args[1].multiple);
        assert_eq!(args[1].children.len(), 2);
        assert!(parse_syntax(syntax("del"))[0].multiple);
    }

    #[test]
    fn every_command_with_arguments_documents_them() {
        let specs = COMMANDS
            .iter()
            .chain(COMMANDS.iter().flat_map(|c| c.subcommands));
        for spec in specs {
            // Arity 1 (or -1 with nothing to say) takes no arguments; containers document subcommands.
            let takes_args = spec.arity.unsigned_abs() > 1 && spec.subcommands.is_empty();
            let exempt = [
                "client|id",
                "client|getredir",
                "client|trackinginfo",
                "client|getname",
                "client|info",
                "client|help",
                "object|help",
                "memory|help",
                "config|help",
                "config|resetstat",
                "command|count",
                "command|help",
                "cluster|slots",
                "cluster|owners",
                "cluster|lastlsn",
                "cluster|scripts",
                "cluster|shards",
                "cluster|nodes",
                "cluster|info",
                "cluster|myid",
                "cluster|help",
                "xinfo|help",
                "script|kill",
                "script|help",
                "function|dump",
                "function|stats",
                "function|kill",
                "function|help",
                "pubsub|numpat",
                "pubsub|help",
            ];
            if takes_args && !exempt.contains(&spec.name) {
                assert!(
                    !syntax(spec.name).is_empty(),
                    "{} has no documented syntax",
                    spec.name
                );
            }
        }
    }
}
