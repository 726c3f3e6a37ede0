//! The command table: every command ringkv serves with its arity, flags, key positions
//! and documentation. `COMMAND`, `COMMAND INFO` and `COMMAND DOCS` answer from it, the
//! server checks arity against it, and routing reads key positions from it. Pure data.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Command flags, as Redis names them in `COMMAND` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandFlags(u32);

impl CommandFlags {
    /// May modify the keyspace.
    pub const WRITE: Self = Self(1);
    /// Only reads the keyspace.
    pub const READONLY: Self = Self(1 << 1);
    /// May grow memory use: refused with `-OOM` when over `maxmemory`.
    pub const DENYOOM: Self = Self(1 << 2);
    /// Administrative.
    pub const ADMIN: Self = Self(1 << 3);
    /// Constant or logarithmic time.
    pub const FAST: Self = Self(1 << 4);
    /// Allowed before authentication.
    pub const NO_AUTH: Self = Self(1 << 5);
    /// Allowed while the node loads its data.
    pub const LOADING: Self = Self(1 << 6);
    /// Allowed on a stale replica.
    pub const STALE: Self = Self(1 << 7);
    /// Not allowed inside MULTI.
    pub const NO_MULTI: Self = Self(1 << 8);
    /// Not allowed from scripts.
    pub const NOSCRIPT: Self = Self(1 << 9);
    /// Runs while other connections are held off (MULTI/EXEC and multi-key atomic writes).
    pub const EXCLUSIVE: Self = Self(1 << 10);
    /// Its keys are handed to a script, which names them in its own commands (EVAL): they
    /// are not renamed into the connection's logical database on the way in.
    pub const KEYS_FOR_SCRIPT: Self = Self(1 << 11);
    /// Answered even while a script is busy (SCRIPT KILL, SHUTDOWN NOSAVE).
    pub const ALLOW_BUSY: Self = Self(1 << 12);
    /// Its "keys" are shard channels: they route it to their slot's owner but name no key
    /// (never renamed into a logical database, never read from disk).
    pub const CHANNELS: Self = Self(1 << 13);
    /// A pub/sub command (Redis's `pubsub` flag).
    pub const PUBSUB: Self = Self(1 << 14);
    const NONE: Self = Self(0);

    const NAMES: [(Self, &'static str); 11] = [
        (Self::WRITE, "write"),
        (Self::READONLY, "readonly"),
        (Self::DENYOOM, "denyoom"),
        (Self::ADMIN, "admin"),
        (Self::NOSCRIPT, "noscript"),
        (Self::LOADING, "loading"),
        (Self::STALE, "stale"),
        (Self::FAST, "fast"),
        (Self::NO_AUTH, "no_auth"),
        (Self::NO_MULTI, "no_multi"),
        (Self::PUBSUB, "pubsub"),
    ];

    /// True when every flag in `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two flag sets.
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The Redis names of the flags set, for `COMMAND`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

/// Where a command's keys are: arguments `first..=last` every `step` (`last` < 0 counts
/// from the end). `first == 0` means the command takes no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPositions {
    /// Index of the first key, 0 for none.
    pub first: i32,
    /// Index of the last key; negative counts from the end (-1 = last argument).
    pub last: i32,
    /// Distance between keys.
    pub step: i32,
    /// Index of a `numkeys` argument the keys follow (LMPOP, BLMPOP), 0 for none, or
    /// [`KeyPositions::AFTER_STREAMS`]; such a command shows `0 0 0` in `COMMAND`, as Redis
    /// shows its movable keys.
    pub numkeys: i32,
}

/// The indices [`KeyPositions::of`] yields.
pub type KeyIndices =
    std::iter::Chain<std::option::IntoIter<usize>, std::iter::StepBy<std::ops::Range<usize>>>;

impl KeyPositions {
    /// `numkeys` for XREAD: the keys are the first half of the arguments after `STREAMS`.
    pub const AFTER_STREAMS: i32 = -1;

    /// Indices of the keys in `args` (a `numkeys` count is read from its argument, and
    /// bounded by what follows it; a command with both, ZUNIONSTORE, has its destination
    /// at `first` and then the counted keys).
    pub fn of(self, args: &crate::Args<'_>) -> KeyIndices {
        self.of_arguments(args.len(), |i| args.get(i))
    }

    /// As [`KeyPositions::of`], for `argc` arguments read through `arg` (COMMAND GETKEYS
    /// asks about a command inside its own arguments).
    pub fn of_arguments<'a>(self, argc: usize, arg: impl Fn(usize) -> &'a [u8]) -> KeyIndices {
        if self.numkeys == Self::AFTER_STREAMS {
            let keyword = (1..argc).find(|&i| arg(i).eq_ignore_ascii_case(b"streams"));
            let (first, count) = keyword.map_or((0, 0), |at| (at + 1, (argc - at - 1) / 2));
            return None.into_iter().chain((first..first + count).step_by(1));
        }
        if self.numkeys <= 0 {
            return None.into_iter().chain(self.indices(argc));
        }
        let at = self.numkeys as usize;
        let count = if at < argc {
            crate::parse_i64(arg(at)).unwrap_or(0).max(0) as usize
        } else {
            0
        };
        let destination =
            (self.first > 0 && (self.first as usize) < argc).then_some(self.first as usize);
        let first = at + 1;
        let last = (first + count).min(argc);
        destination
            .into_iter()
            .chain((first..last.max(first)).step_by(1))
    }

    /// Indices of the keys in a command of `argc` arguments (fixed positions only).
    pub fn indices(self, argc: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
        let argc = argc as i64;
        let first = self.first as i64;
        let last = if self.last < 0 {
            argc + self.last as i64
        } else {
            (self.last as i64).min(argc - 1)
        };
        let step = self.step.max(1) as usize;
        let range = if first == 0 || last < first {
            0..0
        } else {
            first as usize..last as usize + 1
        };
        range.step_by(step)
    }
}

/// One command (or subcommand) of the table.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name; subcommands are `container|sub`.
    pub name: &'static str,
    /// Exact argument count if positive, minimum if negative (the name counts).
    pub arity: i32,
    /// Flags.
    pub flags: CommandFlags,
    /// Key positions.
    pub keys: KeyPositions,
    /// Redis's command group (`string`, `generic`, …).
    pub group: &'static str,
    /// The Redis version that introduced it.
    pub since: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Time complexity.
    pub complexity: &'static str,
    /// Subcommands, for containers such as CONFIG.
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    /// True when `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        if self.arity >= 0 {
            argc == self.arity as usize
        } else {
            argc >= self.arity.unsigned_abs() as usize
        }
    }

    /// Redis ACL categories implied by the group and flags, for `COMMAND`.
    pub fn acl_categories(&self) -> Vec<&'static str> {
        let mut cats = Vec::new();
        if self.flags.contains(CommandFlags::WRITE) {
            cats.push("@write");
        }
        if self.flags.contains(CommandFlags::READONLY) {
            cats.push("@read");
        }
        cats.push(match self.group {
            "string" | "cache" => "@string",
            "hash" => "@hash",
            "list" => "@list",
            "set" => "@set",
            "sorted-set" => "@sortedset",
            "bitmap" => "@bitmap",
            "stream" => "@stream",
            "scripting" => "@scripting",
            "pubsub" => "@pubsub",
            "generic" => "@keyspace",
            "connection" => "@connection",
            "transactions" => "@transaction",
            _ => "@admin",
        });
        cats.push(if self.flags.contains(CommandFlags::FAST) {
            "@fast"
        } else {
            "@slow"
        });
        if self.flags.contains(CommandFlags::ADMIN) {
            cats.push("@dangerous");
        }
        cats.dedup();
        cats
    }
}

// One row of the table: positional arguments keep each row on one line.
#[allow(clippy::too_many_arguments)]
const fn cmd(
    name: &'static str,
    arity: i32,
    flags: CommandFlags,
    (first, last, step): (i32, i32, i32),
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    complexity: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys: KeyPositions {
            first,
            last,
            step,
            numkeys: 0,
        },
        group,
        since,
        summary,
        complexity,
        subcommands: &[],
    }
}

// A row whose keys follow a `numkeys` argument at `numkeys`.
#[allow(clippy::too_many_arguments)]
const fn numkeys_cmd(
    name: &'static str,
    arity: i32,
    flags: CommandFlags,
    numkeys: i32,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    complexity: &'static str,
) -> CommandSpec {
    let mut spec = cmd(name, arity, flags, NOKEY, group, since, summary, complexity);
    spec.keys.numkeys = numkeys;
    spec
}

// A row with a destination key at 1 and `numkeys` at 2 (ZUNIONSTORE and friends).
const fn numkeys_store_cmd(
    name: &'static str,
    arity: i32,
    flags: CommandFlags,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    complexity: &'static str,
) -> CommandSpec {
    let mut spec = cmd(name, arity, flags, KEY1, group, since, summary, complexity);
    spec.keys.numkeys = 2;
    spec
}

const W: CommandFlags = CommandFlags::WRITE;
const WD: CommandFlags = CommandFlags::WRITE.with(CommandFlags::DENYOOM);
const WDF: CommandFlags = WD.with(CommandFlags::FAST);
const WF: CommandFlags = CommandFlags::WRITE.with(CommandFlags::FAST);
const R: CommandFlags = CommandFlags::READONLY;
const RF: CommandFlags = CommandFlags::READONLY.with(CommandFlags::FAST);
const CONN: CommandFlags = CommandFlags::FAST
    .with(CommandFlags::LOADING)
    .with(CommandFlags::STALE)
    .with(CommandFlags::NOSCRIPT);
// Connection commands scripts may call (SELECT, TIME, ...).
const CONN_IN_SCRIPTS: CommandFlags = CommandFlags::FAST
    .with(CommandFlags::LOADING)
    .with(CommandFlags::STALE);
const ADMIN: CommandFlags = CommandFlags::ADMIN
    .with(CommandFlags::NOSCRIPT)
    .with(CommandFlags::LOADING)
    .with(CommandFlags::STALE);
const INFO: CommandFlags = CommandFlags::LOADING.with(CommandFlags::STALE);
const SUBSCRIBING: CommandFlags = CommandFlags::PUBSUB
    .with(CommandFlags::NOSCRIPT)
    .with(CommandFlags::LOADING)
    .with(CommandFlags::STALE);
const PUBLISHING: CommandFlags = CommandFlags::PUBSUB
    .with(CommandFlags::FAST)
    .with(CommandFlags::LOADING)
    .with(CommandFlags::STALE);
const PUBSUB_INFO: CommandFlags = CommandFlags::PUBSUB
    .with(CommandFlags::LOADING)
    .with(CommandFlags::STALE);
const TX: CommandFlags = CommandFlags::NOSCRIPT
    .with(CommandFlags::LOADING)
    .with(CommandFlags::STALE)
    .with(CommandFlags::FAST)
    .with(CommandFlags::NO_MULTI);
// EVAL and friends: one script runs at a time, while other connections are held off, as
// Redis runs it.
const SCRIPT: CommandFlags = CommandFlags::NOSCRIPT
    .with(CommandFlags::STALE)
    .with(CommandFlags::EXCLUSIVE)
    .with(CommandFlags::KEYS_FOR_SCRIPT);
const NOKEY: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const ALLKEYS: (i32, i32, i32) = (1, -1, 1);
const O1: &str = "O(1)";
const ON: &str = "O(N)";

/// Every command ringkv serves, in no particular order.
pub static COMMANDS: &[CommandSpec] = &[
    // connection
    cmd(
        "ping",
        -1,
        // As Redis: PING answers -LOADING while the dataset loads, so a readiness probe
        // (`redis-cli ping`) admits the node only once it serves.
        CommandFlags::FAST,
        NOKEY,
        "connection",
        "1.0.0",
        "Returns the server's liveliness response.",
        O1,
    ),
    cmd(
        "echo",
        2,
        CommandFlags::FAST
            .with(CommandFlags::LOADING)
            .with(CommandFlags::STALE),
        NOKEY,
        "connection",
        "1.0.0",
        "Returns the given string.",
        O1,
    ),
    cmd(
        "hello",
        -1,
        CONN.with(CommandFlags::NO_AUTH),
        NOKEY,
        "connection",
        "6.0.0",
        "Handshakes with the server.",
        O1,
    ),
    cmd(
        "auth",
        -2,
        CONN.with(CommandFlags::NO_AUTH),
        NOKEY,
        "connection",
        "1.0.0",
        "Authenticates the connection.",
        ON,
    ),
    cmd(
        "select",
        2,
        CONN_IN_SCRIPTS,
        NOKEY,
        "connection",
        "1.0.0",
        "Changes the selected database.",
        O1,
    ),
    cmd(
        "quit",
        -1,
        CONN.with(CommandFlags::NO_AUTH),
        NOKEY,
        "connection",
        "1.0.0",
        "Closes the connection.",
        O1,
    ),
    cmd(
        "reset",
        1,
        CONN.with(CommandFlags::NO_AUTH),
        NOKEY,
        "connection",
        "6.2.0",
        "Resets the connection.",
        O1,
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "client|tracking",
                -3,
                CONN,
                NOKEY,
                "connection",
                "6.0.0",
                "Controls server-assisted client-side caching for the connection.",
                "O(1). Some options may introduce additional complexity.",
            ),
            cmd(
                "client|caching",
                3,
                CONN,
                NOKEY,
                "connection",
                "6.0.0",
                "Instructs the server whether to track the keys in the next request.",
                O1,
            ),
            cmd(
                "client|getredir",
                2,
                CONN,
                NOKEY,
                "connection",
                "6.0.0",
                "Returns the client ID to which the connection's tracking notifications are redirected.",
                O1,
            ),
            cmd(
                "client|trackinginfo",
                2,
                CONN,
                NOKEY,
                "connection",
                "6.2.0",
                "Returns information about server-assisted client-side caching for the connection.",
                O1,
            ),
            cmd(
                "client|id",
                2,
                CONN,
                NOKEY,
                "connection",
                "5.0.0",
                "Returns the unique client ID of the connection.",
                O1,
            ),
            cmd(
                "client|setname",
                3,
                CONN,
                NOKEY,
                "connection",
                "2.6.9",
                "Sets the connection name.",
                O1,
            ),
            cmd(
                "client|getname",
                2,
                CONN,
                NOKEY,
                "connection",
                "2.6.9",
                "Returns the name of the connection.",
                O1,
            ),
            cmd(
                "client|list",
                -2,
                ADMIN,
                NOKEY,
                "connection",
                "2.4.0",
                "Lists open connections.",
                ON,
            ),
            cmd(
                "client|info",
                2,
                CONN,
                NOKEY,
                "connection",
                "6.2.0",
                "Returns information about the connection.",
                O1,
            ),
            cmd(
                "client|setinfo",
                4,
                CONN,
                NOKEY,
                "connection",
                "7.2.0",
                "Sets information specific to the client or connection.",
                O1,
            ),
            cmd(
                "client|kill",
                -3,
                ADMIN,
                NOKEY,
                "connection",
                "2.4.0",
                "Terminates open connections.",
                ON,
            ),
            cmd(
                "client|no-evict",
                3,
                ADMIN,
                NOKEY,
                "connection",
                "7.0.0",
                "Sets the client eviction mode of the connection.",
                O1,
            ),
            cmd(
                "client|unblock",
                -3,
                ADMIN,
                NOKEY,
                "connection",
                "5.0.0",
                "Unblocks a client blocked by a blocking command from a different connection.",
                "O(log N)",
            ),
            cmd(
                "client|help",
                2,
                INFO,
                NOKEY,
                "connection",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "client",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "connection",
            "2.4.0",
            "A container for client connection commands.",
            "Depends on subcommand.",
        )
    },
    // strings
    cmd(
        "get",
        2,
        RF,
        KEY1,
        "string",
        "1.0.0",
        "Returns the string value of a key.",
        O1,
    ),
    cmd(
        "set",
        -3,
        WD,
        KEY1,
        "string",
        "1.0.0",
        "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
        O1,
    ),
    cmd(
        "setnx",
        3,
        WDF,
        KEY1,
        "string",
        "1.0.0",
        "Set the string value of a key only when the key doesn't exist.",
        O1,
    ),
    cmd(
        "setex",
        4,
        WD,
        KEY1,
        "string",
        "2.0.0",
        "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
        O1,
    ),
    cmd(
        "psetex",
        4,
        WD,
        KEY1,
        "string",
        "2.6.0",
        "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.",
        O1,
    ),
    cmd(
        "mget",
        -2,
        RF,
        ALLKEYS,
        "string",
        "1.0.0",
        "Atomically returns the string values of one or more keys.",
        ON,
    ),
    cmd(
        "mset",
        -3,
        WD.with(CommandFlags::EXCLUSIVE),
        (1, -1, 2),
        "string",
        "1.0.1",
        "Atomically creates or modifies the string values of one or more keys.",
        ON,
    ),
    cmd(
        "msetnx",
        -3,
        WD.with(CommandFlags::EXCLUSIVE),
        (1, -1, 2),
        "string",
        "1.0.1",
        "Atomically modifies the string values of one or more keys only when all keys don't exist.",
        ON,
    ),
    cmd(
        "getset",
        3,
        WDF,
        KEY1,
        "string",
        "1.0.0",
        "Returns the previous string value of a key after setting it to a new value.",
        O1,
    ),
    cmd(
        "cache.get",
        -4,
        WF,
        KEY1,
        "cache",
        "0.1.0",
        "Returns a key's value and, on a miss or when a refresh is due, a lease to fill it; other clients missing meanwhile wait for the fill.",
        O1,
    ),
    cmd(
        "cache.fill",
        -4,
        WDF,
        KEY1,
        "cache",
        "0.1.0",
        "Stores the value for a leased key and wakes every client waiting for it.",
        O1,
    ),
    cmd(
        "cache.abandon",
        3,
        WF,
        KEY1,
        "cache",
        "0.1.0",
        "Gives up a lease; one waiting client receives a new one.",
        O1,
    ),
    cmd(
        "getdel",
        2,
        WF,
        KEY1,
        "string",
        "6.2.0",
        "Returns the string value of a key after deleting the key.",
        O1,
    ),
    cmd(
        "getex",
        -2,
        WF,
        KEY1,
        "string",
        "6.2.0",
        "Returns the string value of a key after setting its expiration time.",
        O1,
    ),
    cmd(
        "append",
        3,
        WDF,
        KEY1,
        "string",
        "2.0.0",
        "Appends a string to the value of a key. Creates the key if it doesn't exist.",
        O1,
    ),
    cmd(
        "strlen",
        2,
        RF,
        KEY1,
        "string",
        "2.2.0",
        "Returns the length of a string value.",
        O1,
    ),
    cmd(
        "getrange",
        4,
        R,
        KEY1,
        "string",
        "2.4.0",
        "Returns a substring of the string stored at a key.",
        ON,
    ),
    cmd(
        "substr",
        4,
        R,
        KEY1,
        "string",
        "1.0.0",
        "Returns a substring from a string value.",
        ON,
    ),
    cmd(
        "setrange",
        4,
        WD,
        KEY1,
        "string",
        "2.2.0",
        "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.",
        O1,
    ),
    cmd(
        "incr",
        2,
        WDF,
        KEY1,
        "string",
        "1.0.0",
        "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
        O1,
    ),
    cmd(
        "decr",
        2,
        WDF,
        KEY1,
        "string",
        "1.0.0",
        "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
        O1,
    ),
    cmd(
        "incrby",
        3,
        WDF,
        KEY1,
        "string",
        "1.0.0",
        "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
        O1,
    ),
    cmd(
        "decrby",
        3,
        WDF,
        KEY1,
        "string",
        "1.0.0",
        "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.",
        O1,
    ),
    cmd(
        "incrbyfloat",
        3,
        WDF,
        KEY1,
        "string",
        "2.6.0",
        "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
        O1,
    ),
    // keys
    cmd(
        "del",
        -2,
        W,
        ALLKEYS,
        "generic",
        "1.0.0",
        "Deletes one or more keys.",
        ON,
    ),
    cmd(
        "unlink",
        -2,
        WF,
        ALLKEYS,
        "generic",
        "4.0.0",
        "Asynchronously deletes one or more keys.",
        ON,
    ),
    cmd(
        "exists",
        -2,
        RF,
        ALLKEYS,
        "generic",
        "1.0.0",
        "Determines whether one or more keys exist.",
        ON,
    ),
    cmd(
        "type",
        2,
        RF,
        KEY1,
        "generic",
        "1.0.0",
        "Determines the type of value stored at a key.",
        O1,
    ),
    cmd(
        "touch",
        -2,
        RF,
        ALLKEYS,
        "generic",
        "3.2.1",
        "Returns the number of existing keys out of those specified after updating the time they were last accessed.",
        ON,
    ),
    cmd(
        "rename",
        3,
        W.with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "generic",
        "1.0.0",
        "Renames a key and overwrites the destination.",
        O1,
    ),
    cmd(
        "renamenx",
        3,
        WF.with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "generic",
        "1.0.0",
        "Renames a key only when the target key name doesn't exist.",
        O1,
    ),
    cmd(
        "copy",
        -3,
        WD.with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "generic",
        "6.2.0",
        "Copies the value of a key to a new key.",
        ON,
    ),
    cmd(
        "expire",
        -3,
        WF,
        KEY1,
        "generic",
        "1.0.0",
        "Sets the expiration time of a key in seconds.",
        O1,
    ),
    cmd(
        "pexpire",
        -3,
        WF,
        KEY1,
        "generic",
        "2.6.0",
        "Sets the expiration time of a key in milliseconds.",
        O1,
    ),
    cmd(
        "expireat",
        -3,
        WF,
        KEY1,
        "generic",
        "1.2.0",
        "Sets the expiration time of a key to a Unix timestamp.",
        O1,
    ),
    cmd(
        "pexpireat",
        -3,
        WF,
        KEY1,
        "generic",
        "2.6.0",
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        O1,
    ),
    cmd(
        "ttl",
        2,
        RF,
        KEY1,
        "generic",
        "1.0.0",
        "Returns the expiration time in seconds of a key.",
        O1,
    ),
    cmd(
        "pttl",
        2,
        RF,
        KEY1,
        "generic",
        "2.6.0",
        "Returns the expiration time in milliseconds of a key.",
        O1,
    ),
    cmd(
        "expiretime",
        2,
        RF,
        KEY1,
        "generic",
        "7.0.0",
        "Returns the expiration time of a key as a Unix timestamp.",
        O1,
    ),
    cmd(
        "pexpiretime",
        2,
        RF,
        KEY1,
        "generic",
        "7.0.0",
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        O1,
    ),
    cmd(
        "persist",
        2,
        WF,
        KEY1,
        "generic",
        "2.2.0",
        "Removes the expiration time of a key.",
        O1,
    ),
    cmd(
        "keys",
        2,
        R,
        NOKEY,
        "generic",
        "1.0.0",
        "Returns all key names that match a pattern.",
        ON,
    ),
    cmd(
        "scan",
        -2,
        R,
        NOKEY,
        "generic",
        "2.8.0",
        "Iterates over the key names in the database.",
        "O(1) for every call. O(N) for a complete iteration.",
    ),
    cmd(
        "randomkey",
        1,
        R,
        NOKEY,
        "generic",
        "1.0.0",
        "Returns a random key name from the database.",
        O1,
    ),
    cmd(
        "dbsize",
        1,
        RF,
        NOKEY,
        "server",
        "1.0.0",
        "Returns the number of keys in the database.",
        O1,
    ),
    cmd(
        "flushdb",
        -1,
        // Exclusive: the change log's Clear record must order exactly as in memory.
        W.with(CommandFlags::EXCLUSIVE),
        NOKEY,
        "server",
        "1.0.0",
        "Remove all keys from the current database.",
        ON,
    ),
    cmd(
        "move",
        3,
        WF.with(CommandFlags::EXCLUSIVE),
        KEY1,
        "generic",
        "1.0.0",
        "Moves a key to another database.",
        O1,
    ),
    cmd(
        "swapdb",
        3,
        WF.with(CommandFlags::EXCLUSIVE),
        NOKEY,
        "server",
        "4.0.0",
        "Swaps two Redis databases.",
        "O(N) where N is the count of clients watching or blocking on keys from both databases.",
    ),
    cmd(
        "flushall",
        -1,
        // Exclusive: the change log's Clear record must order exactly as in memory.
        W.with(CommandFlags::EXCLUSIVE),
        NOKEY,
        "server",
        "1.0.0",
        "Removes all keys from all databases.",
        ON,
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "object|encoding",
                3,
                R,
                (2, 2, 1),
                "generic",
                "2.2.3",
                "Returns the internal encoding of a Redis object.",
                O1,
            ),
            cmd(
                "object|freq",
                3,
                R,
                (2, 2, 1),
                "generic",
                "4.0.0",
                "Returns the logarithmic access frequency counter of a Redis object.",
                O1,
            ),
            cmd(
                "object|idletime",
                3,
                R,
                (2, 2, 1),
                "generic",
                "2.2.3",
                "Returns the time since the last access to a Redis object.",
                O1,
            ),
            cmd(
                "object|refcount",
                3,
                R,
                (2, 2, 1),
                "generic",
                "2.2.3",
                "Returns the reference count of a value of a key.",
                O1,
            ),
            cmd(
                "object|help",
                2,
                INFO,
                NOKEY,
                "generic",
                "6.2.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "object",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "generic",
            "2.2.3",
            "A container for object introspection commands.",
            "Depends on subcommand.",
        )
    },
    CommandSpec {
        subcommands: &[
            cmd(
                "memory|usage",
                -3,
                R,
                (2, 2, 1),
                "server",
                "4.0.0",
                "Estimates the memory usage of a key.",
                ON,
            ),
            cmd(
                "memory|help",
                2,
                INFO,
                NOKEY,
                "server",
                "4.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "memory",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "server",
            "4.0.0",
            "A container for memory diagnostics commands.",
            "Depends on subcommand.",
        )
    },
    // pub/sub
    cmd(
        "subscribe",
        -2,
        SUBSCRIBING,
        NOKEY,
        "pubsub",
        "2.0.0",
        "Listens for messages published to channels.",
        "O(N) where N is the number of channels to subscribe to.",
    ),
    cmd(
        "unsubscribe",
        -1,
        SUBSCRIBING,
        NOKEY,
        "pubsub",
        "2.0.0",
        "Stops listening to messages posted to channels.",
        "O(N) where N is the number of channels to unsubscribe.",
    ),
    cmd(
        "psubscribe",
        -2,
        SUBSCRIBING,
        NOKEY,
        "pubsub",
        "2.0.0",
        "Listens for messages published to channels that match one or more patterns.",
        "O(N) where N is the number of patterns to subscribe to.",
    ),
    cmd(
        "punsubscribe",
        -1,
        SUBSCRIBING,
        NOKEY,
        "pubsub",
        "2.0.0",
        "Stops listening to messages published to channels that match one or more patterns.",
        "O(N) where N is the number of patterns to unsubscribe.",
    ),
    cmd(
        "ssubscribe",
        -2,
        SUBSCRIBING.with(CommandFlags::CHANNELS),
        ALLKEYS,
        "pubsub",
        "7.0.0",
        "Listens for messages published to shard channels.",
        "O(N) where N is the number of shard channels to subscribe to.",
    ),
    cmd(
        "sunsubscribe",
        -1,
        SUBSCRIBING.with(CommandFlags::CHANNELS),
        ALLKEYS,
        "pubsub",
        "7.0.0",
        "Stops listening to messages posted to shard channels.",
        "O(N) where N is the number of shard channels to unsubscribe.",
    ),
    cmd(
        "publish",
        3,
        PUBLISHING,
        NOKEY,
        "pubsub",
        "2.0.0",
        "Posts a message to a channel.",
        "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).",
    ),
    cmd(
        "spublish",
        3,
        PUBLISHING.with(CommandFlags::CHANNELS),
        KEY1,
        "pubsub",
        "7.0.0",
        "Post a message to a shard channel",
        "O(N) where N is the number of clients subscribed to the receiving shard channel.",
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "pubsub|channels",
                -2,
                PUBSUB_INFO,
                NOKEY,
                "pubsub",
                "2.8.0",
                "Returns the active channels.",
                "O(N) where N is the number of active channels, and assuming constant time pattern matching (relatively short channels and patterns)",
            ),
            cmd(
                "pubsub|numsub",
                -2,
                PUBSUB_INFO,
                NOKEY,
                "pubsub",
                "2.8.0",
                "Returns a count of subscribers to channels.",
                "O(N) for the NUMSUB subcommand, where N is the number of requested channels",
            ),
            cmd(
                "pubsub|numpat",
                2,
                PUBSUB_INFO,
                NOKEY,
                "pubsub",
                "2.8.0",
                "Returns a count of unique pattern subscriptions.",
                O1,
            ),
            cmd(
                "pubsub|shardchannels",
                -2,
                PUBSUB_INFO,
                NOKEY,
                "pubsub",
                "7.0.0",
                "Returns the active shard channels.",
                "O(N) where N is the number of active shard channels, and assuming constant time pattern matching (relatively short shard channels).",
            ),
            cmd(
                "pubsub|shardnumsub",
                -2,
                PUBSUB_INFO,
                NOKEY,
                "pubsub",
                "7.0.0",
                "Returns the count of subscribers of shard channels.",
                "O(N) for the SHARDNUMSUB subcommand, where N is the number of requested shard channels",
            ),
            cmd(
                "pubsub|help",
                2,
                PUBSUB_INFO,
                NOKEY,
                "pubsub",
                "6.2.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "pubsub",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "pubsub",
            "2.8.0",
            "A container for Pub/Sub commands.",
            "Depends on subcommand.",
        )
    },
    // scripting
    numkeys_cmd(
        "eval",
        -3,
        SCRIPT,
        2,
        "scripting",
        "2.6.0",
        "Executes a server-side Lua script.",
        "Depends on the script that is executed.",
    ),
    numkeys_cmd(
        "evalsha",
        -3,
        SCRIPT,
        2,
        "scripting",
        "2.6.0",
        "Executes a server-side Lua script by SHA1 digest.",
        "Depends on the script that is executed.",
    ),
    numkeys_cmd(
        "eval_ro",
        -3,
        SCRIPT.with(CommandFlags::READONLY),
        2,
        "scripting",
        "7.0.0",
        "Executes a read-only server-side Lua script.",
        "Depends on the script that is executed.",
    ),
    numkeys_cmd(
        "evalsha_ro",
        -3,
        SCRIPT.with(CommandFlags::READONLY),
        2,
        "scripting",
        "7.0.0",
        "Executes a read-only server-side Lua script by SHA1 digest.",
        "Depends on the script that is executed.",
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "script|load",
                3,
                CommandFlags::NOSCRIPT.with(CommandFlags::STALE),
                NOKEY,
                "scripting",
                "2.6.0",
                "Loads a server-side Lua script to the script cache.",
                "O(N) with N being the length in bytes of the script body.",
            ),
            cmd(
                "script|exists",
                -3,
                CommandFlags::NOSCRIPT,
                NOKEY,
                "scripting",
                "2.6.0",
                "Determines whether server-side Lua scripts exist in the script cache.",
                "O(N) with N being the number of scripts to check (so checking a single script is an O(1) operation).",
            ),
            cmd(
                "script|flush",
                -2,
                CommandFlags::NOSCRIPT,
                NOKEY,
                "scripting",
                "2.6.0",
                "Removes all server-side Lua scripts from the script cache.",
                "O(N) with N being the number of scripts in cache",
            ),
            cmd(
                "script|kill",
                2,
                CommandFlags::NOSCRIPT.with(CommandFlags::ALLOW_BUSY),
                NOKEY,
                "scripting",
                "2.6.0",
                "Terminates a server-side Lua script during execution.",
                O1,
            ),
            cmd(
                "script|help",
                2,
                CommandFlags::LOADING.with(CommandFlags::STALE),
                NOKEY,
                "scripting",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "script",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "scripting",
            "2.6.0",
            "A container for Lua scripts management commands.",
            "Depends on subcommand.",
        )
    },
    numkeys_cmd(
        "fcall",
        -3,
        SCRIPT,
        2,
        "scripting",
        "7.0.0",
        "Invokes a function.",
        "Depends on the function that is executed.",
    ),
    numkeys_cmd(
        "fcall_ro",
        -3,
        SCRIPT.with(CommandFlags::READONLY),
        2,
        "scripting",
        "7.0.0",
        "Invokes a read-only function.",
        "Depends on the function that is executed.",
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "function|load",
                -3,
                WD.with(CommandFlags::NOSCRIPT),
                NOKEY,
                "scripting",
                "7.0.0",
                "Creates a library.",
                "O(1) (considering compilation time is redundant)",
            ),
            cmd(
                "function|delete",
                3,
                W.with(CommandFlags::NOSCRIPT),
                NOKEY,
                "scripting",
                "7.0.0",
                "Deletes a library and its functions.",
                O1,
            ),
            cmd(
                "function|flush",
                -2,
                W.with(CommandFlags::NOSCRIPT),
                NOKEY,
                "scripting",
                "7.0.0",
                "Deletes all libraries and functions.",
                "O(N) where N is the number of functions deleted",
            ),
            cmd(
                "function|list",
                -2,
                CommandFlags::NOSCRIPT,
                NOKEY,
                "scripting",
                "7.0.0",
                "Returns information about all libraries.",
                "O(N) where N is the number of functions",
            ),
            cmd(
                "function|dump",
                2,
                CommandFlags::NOSCRIPT,
                NOKEY,
                "scripting",
                "7.0.0",
                "Dumps all libraries into a serialized binary payload.",
                "O(N) where N is the number of functions",
            ),
            cmd(
                "function|restore",
                -3,
                WD.with(CommandFlags::NOSCRIPT),
                NOKEY,
                "scripting",
                "7.0.0",
                "Restores all libraries from a payload.",
                "O(N) where N is the number of functions on the payload",
            ),
            cmd(
                "function|stats",
                2,
                CommandFlags::NOSCRIPT.with(CommandFlags::ALLOW_BUSY),
                NOKEY,
                "scripting",
                "7.0.0",
                "Returns information about a function during execution.",
                O1,
            ),
            cmd(
                "function|kill",
                2,
                CommandFlags::NOSCRIPT.with(CommandFlags::ALLOW_BUSY),
                NOKEY,
                "scripting",
                "7.0.0",
                "Terminates a function during execution.",
                O1,
            ),
            cmd(
                "function|help",
                2,
                CommandFlags::LOADING.with(CommandFlags::STALE),
                NOKEY,
                "scripting",
                "7.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "function",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "scripting",
            "7.0.0",
            "A container for function commands.",
            "Depends on subcommand.",
        )
    },
    // streams
    cmd(
        "xadd",
        -5,
        WDF,
        KEY1,
        "stream",
        "5.0.0",
        "Appends a new message to a stream. Creates the key if it doesn't exist.",
        "O(1) when adding a new entry, O(N) when trimming where N being the number of entries evicted.",
    ),
    cmd(
        "xlen",
        2,
        RF,
        KEY1,
        "stream",
        "5.0.0",
        "Return the number of messages in a stream.",
        O1,
    ),
    cmd(
        "xrange",
        -4,
        R,
        KEY1,
        "stream",
        "5.0.0",
        "Returns the messages from a stream within a range of IDs.",
        "O(N) with N being the number of elements being returned. If N is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1).",
    ),
    cmd(
        "xrevrange",
        -4,
        R,
        KEY1,
        "stream",
        "5.0.0",
        "Returns the messages from a stream within a range of IDs in reverse order.",
        "O(N) with N being the number of elements returned. If N is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1).",
    ),
    CommandSpec {
        keys: KeyPositions {
            first: 0,
            last: 0,
            step: 0,
            numkeys: KeyPositions::AFTER_STREAMS,
        },
        ..cmd(
            "xread",
            -4,
            R,
            NOKEY,
            "stream",
            "5.0.0",
            "Returns messages from multiple streams with IDs greater than the ones requested. Blocks until a message is available otherwise.",
            "For each stream mentioned: O(N) with N being the number of elements being returned, it means that XREAD-ing with a fixed COUNT is O(1).",
        )
    },
    cmd(
        "xtrim",
        -4,
        W,
        KEY1,
        "stream",
        "5.0.0",
        "Deletes messages from the beginning of a stream.",
        "O(N), with N being the number of evicted entries. Constant times are very small however, since entries are organized in macro nodes containing multiple entries that can be released with a single deallocation.",
    ),
    cmd(
        "xdel",
        -3,
        WF,
        KEY1,
        "stream",
        "5.0.0",
        "Returns the number of messages after removing them from a stream.",
        "O(1) for each single item to delete in the stream, regardless of the stream size.",
    ),
    cmd(
        "xsetid",
        -3,
        WDF,
        KEY1,
        "stream",
        "5.0.0",
        "An internal command for replicating stream values.",
        O1,
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "xinfo|stream",
                -3,
                R,
                (2, 2, 1),
                "stream",
                "5.0.0",
                "Returns information about a stream.",
                O1,
            ),
            cmd(
                "xinfo|groups",
                3,
                R,
                (2, 2, 1),
                "stream",
                "5.0.0",
                "Returns a list of the consumer groups of a stream.",
                O1,
            ),
            cmd(
                "xinfo|consumers",
                4,
                R,
                (2, 2, 1),
                "stream",
                "5.0.0",
                "Returns a list of the consumers in a consumer group.",
                O1,
            ),
            cmd(
                "xinfo|help",
                2,
                R,
                NOKEY,
                "stream",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "xinfo",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "stream",
            "5.0.0",
            "A container for stream introspection commands.",
            "Depends on subcommand.",
        )
    },
    // hashes
    cmd(
        "hset",
        -4,
        WDF,
        KEY1,
        "hash",
        "2.0.0",
        "Creates or modifies the value of a field in a hash.",
        ON,
    ),
    cmd(
        "hsetnx",
        4,
        WDF,
        KEY1,
        "hash",
        "2.0.0",
        "Sets the value of a field in a hash only when the field doesn't exist.",
        O1,
    ),
    cmd(
        "hget",
        3,
        RF,
        KEY1,
        "hash",
        "2.0.0",
        "Returns the value of a field in a hash.",
        O1,
    ),
    cmd(
        "hmget",
        -3,
        RF,
        KEY1,
        "hash",
        "2.0.0",
        "Returns the values of all fields in a hash.",
        ON,
    ),
    cmd(
        "hmset",
        -4,
        WDF,
        KEY1,
        "hash",
        "2.0.0",
        "Sets the values of multiple fields.",
        ON,
    ),
    cmd(
        "hgetall",
        2,
        R,
        KEY1,
        "hash",
        "2.0.0",
        "Returns all fields and values in a hash.",
        ON,
    ),
    cmd(
        "hdel",
        -3,
        WF,
        KEY1,
        "hash",
        "2.0.0",
        "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.",
        ON,
    ),
    cmd(
        "hexists",
        3,
        RF,
        KEY1,
        "hash",
        "2.0.0",
        "Determines whether a field exists in a hash.",
        O1,
    ),
    cmd(
        "hlen",
        2,
        RF,
        KEY1,
        "hash",
        "2.0.0",
        "Returns the number of fields in a hash.",
        O1,
    ),
    cmd(
        "hstrlen",
        3,
        RF,
        KEY1,
        "hash",
        "3.2.0",
        "Returns the length of the value of a field.",
        O1,
    ),
    cmd(
        "hkeys",
        2,
        R,
        KEY1,
        "hash",
        "2.0.0",
        "Returns all fields in a hash.",
        ON,
    ),
    cmd(
        "hvals",
        2,
        R,
        KEY1,
        "hash",
        "2.0.0",
        "Returns all values in a hash.",
        ON,
    ),
    cmd(
        "hincrby",
        4,
        WDF,
        KEY1,
        "hash",
        "2.0.0",
        "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.",
        O1,
    ),
    cmd(
        "hincrbyfloat",
        4,
        WDF,
        KEY1,
        "hash",
        "2.6.0",
        "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.",
        O1,
    ),
    cmd(
        "hscan",
        -3,
        R,
        KEY1,
        "hash",
        "2.8.0",
        "Iterates over fields and values of a hash.",
        "O(1) for every call. O(N) for a complete iteration.",
    ),
    cmd(
        "hrandfield",
        -2,
        R,
        KEY1,
        "hash",
        "6.2.0",
        "Returns one or more random fields from a hash.",
        ON,
    ),
    // lists
    cmd(
        "lpush",
        -3,
        WDF,
        KEY1,
        "list",
        "1.0.0",
        "Prepends one or more elements to a list. Creates the key if it doesn't exist.",
        O1,
    ),
    cmd(
        "rpush",
        -3,
        WDF,
        KEY1,
        "list",
        "1.0.0",
        "Appends one or more elements to a list. Creates the key if it doesn't exist.",
        O1,
    ),
    cmd(
        "lpushx",
        -3,
        WDF,
        KEY1,
        "list",
        "2.2.0",
        "Prepends one or more elements to a list only when the list exists.",
        O1,
    ),
    cmd(
        "rpushx",
        -3,
        WDF,
        KEY1,
        "list",
        "2.2.0",
        "Appends an element to a list only when the list exists.",
        O1,
    ),
    cmd(
        "lpop",
        -2,
        WF,
        KEY1,
        "list",
        "1.0.0",
        "Returns the first elements in a list after removing it. Deletes the list if the last element was popped.",
        ON,
    ),
    cmd(
        "rpop",
        -2,
        WF,
        KEY1,
        "list",
        "1.0.0",
        "Returns and removes the last elements of a list. Deletes the list if the last element was popped.",
        ON,
    ),
    cmd(
        "llen",
        2,
        RF,
        KEY1,
        "list",
        "1.0.0",
        "Returns the length of a list.",
        O1,
    ),
    cmd(
        "lrange",
        4,
        R,
        KEY1,
        "list",
        "1.0.0",
        "Returns a range of elements from a list.",
        "O(S+N)",
    ),
    cmd(
        "lindex",
        3,
        R,
        KEY1,
        "list",
        "1.0.0",
        "Returns an element from a list by its index.",
        ON,
    ),
    cmd(
        "lset",
        4,
        WD,
        KEY1,
        "list",
        "1.0.0",
        "Sets the value of an element in a list by its index.",
        ON,
    ),
    cmd(
        "linsert",
        5,
        WD,
        KEY1,
        "list",
        "2.2.0",
        "Inserts an element before or after another element in a list.",
        ON,
    ),
    cmd(
        "lrem",
        4,
        W,
        KEY1,
        "list",
        "1.0.0",
        "Removes elements from a list. Deletes the list if the last element was removed.",
        "O(N+M)",
    ),
    cmd(
        "ltrim",
        4,
        W,
        KEY1,
        "list",
        "1.0.0",
        "Removes elements from both ends a list. Deletes the list if all elements were trimmed.",
        ON,
    ),
    cmd(
        "lpos",
        -3,
        R,
        KEY1,
        "list",
        "6.0.6",
        "Returns the index of matching elements in a list.",
        ON,
    ),
    cmd(
        "lmove",
        5,
        WD.with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "list",
        "6.2.0",
        "Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.",
        O1,
    ),
    cmd(
        "rpoplpush",
        3,
        WD.with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "list",
        "1.2.0",
        "Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.",
        O1,
    ),
    numkeys_cmd(
        "lmpop",
        -4,
        W,
        1,
        "list",
        "7.0.0",
        "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.",
        "O(N+M)",
    ),
    cmd(
        "blpop",
        -3,
        W.with(CommandFlags::NOSCRIPT),
        (1, -2, 1),
        "list",
        "2.0.0",
        "Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        ON,
    ),
    cmd(
        "brpop",
        -3,
        W.with(CommandFlags::NOSCRIPT),
        (1, -2, 1),
        "list",
        "2.0.0",
        "Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        ON,
    ),
    cmd(
        "blmove",
        6,
        WD.with(CommandFlags::NOSCRIPT)
            .with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "list",
        "6.2.0",
        "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved.",
        O1,
    ),
    cmd(
        "brpoplpush",
        4,
        WD.with(CommandFlags::NOSCRIPT)
            .with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "list",
        "2.2.0",
        "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped.",
        O1,
    ),
    numkeys_cmd(
        "blmpop",
        -5,
        W,
        2,
        "list",
        "7.0.0",
        "Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        "O(N+M)",
    ),
    // sets
    cmd(
        "sadd",
        -3,
        WDF,
        KEY1,
        "set",
        "1.0.0",
        "Adds one or more members to a set. Creates the key if it doesn't exist.",
        ON,
    ),
    cmd(
        "srem",
        -3,
        WF,
        KEY1,
        "set",
        "1.0.0",
        "Removes one or more members from a set. Deletes the set if the last member was removed.",
        ON,
    ),
    cmd(
        "smembers",
        2,
        R,
        KEY1,
        "set",
        "1.0.0",
        "Returns all members of a set.",
        ON,
    ),
    cmd(
        "sismember",
        3,
        RF,
        KEY1,
        "set",
        "1.0.0",
        "Determines whether a member belongs to a set.",
        O1,
    ),
    cmd(
        "smismember",
        -3,
        RF,
        KEY1,
        "set",
        "6.2.0",
        "Determines whether multiple members belong to a set.",
        ON,
    ),
    cmd(
        "scard",
        2,
        RF,
        KEY1,
        "set",
        "1.0.0",
        "Returns the number of members in a set.",
        O1,
    ),
    cmd(
        "spop",
        -2,
        WF,
        KEY1,
        "set",
        "1.0.0",
        "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.",
        ON,
    ),
    cmd(
        "srandmember",
        -2,
        R,
        KEY1,
        "set",
        "1.0.0",
        "Get one or multiple random members from a set",
        ON,
    ),
    cmd(
        "smove",
        4,
        WF.with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "set",
        "1.0.0",
        "Moves a member from one set to another.",
        O1,
    ),
    cmd(
        "sinter",
        -2,
        R.with(CommandFlags::EXCLUSIVE),
        ALLKEYS,
        "set",
        "1.0.0",
        "Returns the intersect of multiple sets.",
        "O(N*M)",
    ),
    cmd(
        "sunion",
        -2,
        R.with(CommandFlags::EXCLUSIVE),
        ALLKEYS,
        "set",
        "1.0.0",
        "Returns the union of multiple sets.",
        ON,
    ),
    cmd(
        "sdiff",
        -2,
        R.with(CommandFlags::EXCLUSIVE),
        ALLKEYS,
        "set",
        "1.0.0",
        "Returns the difference of multiple sets.",
        ON,
    ),
    cmd(
        "sinterstore",
        -3,
        WD.with(CommandFlags::EXCLUSIVE),
        ALLKEYS,
        "set",
        "1.0.0",
        "Stores the intersect of multiple sets in a key.",
        "O(N*M)",
    ),
    cmd(
        "sunionstore",
        -3,
        WD.with(CommandFlags::EXCLUSIVE),
        ALLKEYS,
        "set",
        "1.0.0",
        "Stores the union of multiple sets in a key.",
        ON,
    ),
    cmd(
        "sdiffstore",
        -3,
        WD.with(CommandFlags::EXCLUSIVE),
        ALLKEYS,
        "set",
        "1.0.0",
        "Stores the difference of multiple sets in a key.",
        ON,
    ),
    cmd(
        "sscan",
        -3,
        R,
        KEY1,
        "set",
        "2.8.0",
        "Iterates over members of a set.",
        "O(1) for every call. O(N) for a complete iteration.",
    ),
    numkeys_cmd(
        "sintercard",
        -3,
        R.with(CommandFlags::EXCLUSIVE),
        1,
        "set",
        "7.0.0",
        "Returns the number of members of the intersect of multiple sets.",
        "O(N*M)",
    ),
    // sorted sets
    cmd(
        "zadd",
        -4,
        WDF,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist.",
        "O(log(N))",
    ),
    cmd(
        "zincrby",
        4,
        WDF,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Increments the score of a member in a sorted set.",
        "O(log(N))",
    ),
    cmd(
        "zrem",
        -3,
        WF,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Removes one or more members from a sorted set. Deletes the sorted set if all members were removed.",
        "O(M*log(N))",
    ),
    cmd(
        "zscore",
        3,
        RF,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Returns the score of a member in a sorted set.",
        O1,
    ),
    cmd(
        "zmscore",
        -3,
        RF,
        KEY1,
        "sorted-set",
        "6.2.0",
        "Returns the score of one or more members in a sorted set.",
        ON,
    ),
    cmd(
        "zcard",
        2,
        RF,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Returns the number of members in a sorted set.",
        O1,
    ),
    cmd(
        "zcount",
        4,
        RF,
        KEY1,
        "sorted-set",
        "2.0.0",
        "Returns the count of members in a sorted set that have scores within a range.",
        "O(log(N))",
    ),
    cmd(
        "zlexcount",
        4,
        RF,
        KEY1,
        "sorted-set",
        "2.8.9",
        "Returns the number of members in a sorted set within a lexicographical range.",
        "O(log(N))",
    ),
    cmd(
        "zrank",
        -3,
        RF,
        KEY1,
        "sorted-set",
        "2.0.0",
        "Returns the index of a member in a sorted set ordered by ascending scores.",
        "O(log(N))",
    ),
    cmd(
        "zrevrank",
        -3,
        RF,
        KEY1,
        "sorted-set",
        "2.0.0",
        "Returns the index of a member in a sorted set ordered by descending scores.",
        "O(log(N))",
    ),
    cmd(
        "zrange",
        -4,
        R,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Returns members in a sorted set within a range of indexes.",
        "O(log(N)+M)",
    ),
    cmd(
        "zrangestore",
        -5,
        WD,
        (1, 2, 1),
        "sorted-set",
        "6.2.0",
        "Stores a range of members from sorted set in a key.",
        "O(log(N)+M)",
    ),
    cmd(
        "zrevrange",
        -4,
        R,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Returns members in a sorted set within a range of indexes in reverse order.",
        "O(log(N)+M)",
    ),
    cmd(
        "zrangebyscore",
        -4,
        R,
        KEY1,
        "sorted-set",
        "1.0.5",
        "Returns members in a sorted set within a range of scores.",
        "O(log(N)+M)",
    ),
    cmd(
        "zrevrangebyscore",
        -4,
        R,
        KEY1,
        "sorted-set",
        "2.2.0",
        "Returns members in a sorted set within a range of scores in reverse order.",
        "O(log(N)+M)",
    ),
    cmd(
        "zrangebylex",
        -4,
        R,
        KEY1,
        "sorted-set",
        "2.8.9",
        "Returns members in a sorted set within a lexicographical range.",
        "O(log(N)+M)",
    ),
    cmd(
        "zrevrangebylex",
        -4,
        R,
        KEY1,
        "sorted-set",
        "2.8.9",
        "Returns members in a sorted set within a lexicographical range in reverse order.",
        "O(log(N)+M)",
    ),
    cmd(
        "zremrangebyscore",
        4,
        W,
        KEY1,
        "sorted-set",
        "1.2.0",
        "Removes members in a sorted set within a range of scores. Deletes the sorted set if all members were removed.",
        "O(log(N)+M)",
    ),
    cmd(
        "zremrangebyrank",
        4,
        W,
        KEY1,
        "sorted-set",
        "2.0.0",
        "Removes members in a sorted set within a range of indexes. Deletes the sorted set if all members were removed.",
        "O(log(N)+M)",
    ),
    cmd(
        "zremrangebylex",
        4,
        W,
        KEY1,
        "sorted-set",
        "2.8.9",
        "Removes members in a sorted set within a lexicographical range. Deletes the sorted set if all members were removed.",
        "O(log(N)+M)",
    ),
    cmd(
        "zpopmin",
        -2,
        WF,
        KEY1,
        "sorted-set",
        "5.0.0",
        "Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
        "O(log(N)*M)",
    ),
    cmd(
        "zpopmax",
        -2,
        WF,
        KEY1,
        "sorted-set",
        "5.0.0",
        "Returns the highest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
        "O(log(N)*M)",
    ),
    cmd(
        "bzpopmin",
        -3,
        WF.with(CommandFlags::NOSCRIPT),
        (1, -2, 1),
        "sorted-set",
        "5.0.0",
        "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
        "O(log(N))",
    ),
    cmd(
        "bzpopmax",
        -3,
        WF.with(CommandFlags::NOSCRIPT),
        (1, -2, 1),
        "sorted-set",
        "5.0.0",
        "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise.  Deletes the sorted set if the last element was popped.",
        "O(log(N))",
    ),
    cmd(
        "zrandmember",
        -2,
        R,
        KEY1,
        "sorted-set",
        "6.2.0",
        "Returns one or more random members from a sorted set.",
        ON,
    ),
    cmd(
        "zscan",
        -3,
        R,
        KEY1,
        "sorted-set",
        "2.8.0",
        "Iterates over members and scores of a sorted set.",
        "O(1) for every call. O(N) for a complete iteration.",
    ),
    numkeys_cmd(
        "zmpop",
        -4,
        W,
        1,
        "sorted-set",
        "7.0.0",
        "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them. Deletes the sorted set if the last member was popped.",
        "O(K) + O(M*log(N))",
    ),
    numkeys_cmd(
        "bzmpop",
        -5,
        W,
        2,
        "sorted-set",
        "7.0.0",
        "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
        "O(K) + O(M*log(N))",
    ),
    numkeys_cmd(
        "zunion",
        -3,
        R.with(CommandFlags::EXCLUSIVE),
        1,
        "sorted-set",
        "6.2.0",
        "Returns the union of multiple sorted sets.",
        "O(N)+O(M*log(M))",
    ),
    numkeys_cmd(
        "zinter",
        -3,
        R.with(CommandFlags::EXCLUSIVE),
        1,
        "sorted-set",
        "6.2.0",
        "Returns the intersect of multiple sorted sets.",
        "O(N*K)+O(M*log(M))",
    ),
    numkeys_cmd(
        "zdiff",
        -3,
        R.with(CommandFlags::EXCLUSIVE),
        1,
        "sorted-set",
        "6.2.0",
        "Returns the difference between multiple sorted sets.",
        "O(L + (N-K)log(N))",
    ),
    numkeys_cmd(
        "zintercard",
        -3,
        R.with(CommandFlags::EXCLUSIVE),
        1,
        "sorted-set",
        "7.0.0",
        "Returns the number of members of the intersect of multiple sorted sets.",
        "O(N*K)",
    ),
    numkeys_store_cmd(
        "zunionstore",
        -4,
        WD.with(CommandFlags::EXCLUSIVE),
        "sorted-set",
        "2.0.0",
        "Stores the union of multiple sorted sets in a key.",
        "O(N)+O(M*log(M))",
    ),
    numkeys_store_cmd(
        "zinterstore",
        -4,
        WD.with(CommandFlags::EXCLUSIVE),
        "sorted-set",
        "2.0.0",
        "Stores the intersect of multiple sorted sets in a key.",
        "O(N*K)+O(M*log(M))",
    ),
    numkeys_store_cmd(
        "zdiffstore",
        -4,
        WD.with(CommandFlags::EXCLUSIVE),
        "sorted-set",
        "6.2.0",
        "Stores the difference of multiple sorted sets in a key.",
        "O(L + (N-K)log(N))",
    ),
    // bitmaps
    cmd(
        "setbit",
        4,
        WD,
        KEY1,
        "bitmap",
        "2.2.0",
        "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.",
        O1,
    ),
    cmd(
        "getbit",
        3,
        RF,
        KEY1,
        "bitmap",
        "2.2.0",
        "Returns a bit value by offset.",
        O1,
    ),
    cmd(
        "bitcount",
        -2,
        R,
        KEY1,
        "bitmap",
        "2.6.0",
        "Counts the number of set bits (population counting) in a string.",
        ON,
    ),
    cmd(
        "bitpos",
        -3,
        R,
        KEY1,
        "bitmap",
        "2.8.7",
        "Finds the first set (1) or clear (0) bit in a string.",
        ON,
    ),
    cmd(
        "bitop",
        -4,
        WD.with(CommandFlags::EXCLUSIVE),
        (2, -1, 1),
        "bitmap",
        "2.6.0",
        "Performs bitwise operations on multiple strings, and stores the result.",
        ON,
    ),
    cmd(
        "bitfield",
        -2,
        WD,
        KEY1,
        "bitmap",
        "3.2.0",
        "Performs arbitrary bitfield integer operations on strings.",
        "O(1) for each subcommand specified",
    ),
    cmd(
        "bitfield_ro",
        -2,
        RF,
        KEY1,
        "bitmap",
        "6.0.0",
        "Performs arbitrary read-only bitfield integer operations on strings.",
        "O(1) for each subcommand specified",
    ),
    cmd(
        "lcs",
        -3,
        R.with(CommandFlags::EXCLUSIVE),
        (1, 2, 1),
        "string",
        "7.0.0",
        "Finds the longest common substring.",
        "O(N*M) where N and M are the lengths of s1 and s2, respectively",
    ),
    cmd(
        "sort",
        -2,
        WD.with(CommandFlags::EXCLUSIVE),
        KEY1,
        "generic",
        "1.0.0",
        "Sorts the elements in a list, a set, or a sorted set, optionally storing the result.",
        "O(N+M*log(M)) where N is the number of elements in the list or set to sort, and M the number of returned elements. When the elements are not sorted, complexity is O(N).",
    ),
    cmd(
        "sort_ro",
        -2,
        R.with(CommandFlags::EXCLUSIVE),
        KEY1,
        "generic",
        "7.0.0",
        "Returns the sorted elements of a list, a set, or a sorted set.",
        "O(N+M*log(M)) where N is the number of elements in the list or set to sort, and M the number of returned elements. When the elements are not sorted, complexity is O(N).",
    ),
    cmd(
        "dump",
        2,
        R,
        KEY1,
        "generic",
        "2.6.0",
        "Returns a serialized representation of the value stored at a key.",
        O1,
    ),
    cmd(
        "restore",
        -4,
        WD,
        KEY1,
        "generic",
        "2.6.0",
        "Creates a key from the serialized representation of a value.",
        O1,
    ),
    // transactions
    cmd(
        "multi",
        1,
        TX,
        NOKEY,
        "transactions",
        "1.2.0",
        "Starts a transaction.",
        O1,
    ),
    cmd(
        "exec",
        1,
        CommandFlags::NOSCRIPT
            .with(CommandFlags::LOADING)
            .with(CommandFlags::STALE)
            .with(CommandFlags::EXCLUSIVE),
        NOKEY,
        "transactions",
        "1.2.0",
        "Executes all commands in a transaction.",
        "Depends on commands in the transaction",
    ),
    cmd(
        "discard",
        1,
        TX,
        NOKEY,
        "transactions",
        "2.0.0",
        "Discards a transaction.",
        ON,
    ),
    cmd(
        "watch",
        -2,
        TX.with(CommandFlags::READONLY),
        ALLKEYS,
        "transactions",
        "2.2.0",
        "Monitors changes to keys to determine the execution of a transaction.",
        ON,
    ),
    cmd(
        "unwatch",
        1,
        TX,
        NOKEY,
        "transactions",
        "2.2.0",
        "Forgets about watched keys of a transaction.",
        O1,
    ),
    // server
    cmd(
        "info",
        -1,
        INFO,
        NOKEY,
        "server",
        "1.0.0",
        "Returns information and statistics about the server.",
        O1,
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "config|get",
                -3,
                ADMIN,
                NOKEY,
                "server",
                "2.0.0",
                "Returns the effective values of configuration parameters.",
                ON,
            ),
            cmd(
                "config|set",
                -4,
                ADMIN,
                NOKEY,
                "server",
                "2.0.0",
                "Sets configuration parameters in-flight.",
                ON,
            ),
            cmd(
                "config|resetstat",
                2,
                ADMIN,
                NOKEY,
                "server",
                "2.0.0",
                "Resets the server's statistics.",
                O1,
            ),
            cmd(
                "config|help",
                2,
                INFO,
                NOKEY,
                "server",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "config",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "server",
            "2.0.0",
            "A container for server configuration commands.",
            "Depends on subcommand.",
        )
    },
    CommandSpec {
        subcommands: &[
            cmd(
                "cluster|slots",
                2,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the mapping of cluster slots to nodes.",
                ON,
            ),
            cmd(
                "cluster|lastlsn",
                2,
                INFO,
                NOKEY,
                "cluster",
                "0.1.0",
                "Returns this member's last change-log position (a ringkv extension a proxying member uses for WAIT).",
                O1,
            ),
            cmd(
                "cluster|deliver",
                5,
                PUBLISHING,
                NOKEY,
                "cluster",
                "0.1.0",
                "Delivers a message published on another member to this member's subscribers (a ringkv extension: PUBLISH and SPUBLISH across the cluster).",
                ON,
            ),
            cmd(
                "cluster|scripts",
                2,
                INFO,
                NOKEY,
                "cluster",
                "0.1.0",
                "Returns the body of every cached script (a ringkv extension a member that starts uses to take the cluster's scripts).",
                ON,
            ),
            cmd(
                "cluster|waitlsn",
                -6,
                CommandFlags::NOSCRIPT,
                NOKEY,
                "cluster",
                "0.1.0",
                "Blocks until the replicas of the given slots acknowledged every write up to a change-log position (a ringkv extension: WAIT through a proxying member).",
                O1,
            ),
            cmd(
                "cluster|owners",
                2,
                INFO,
                NOKEY,
                "cluster",
                "0.1.0",
                "Returns every slot's owners, primary first, then its replicas (a ringkv extension).",
                ON,
            ),
            cmd(
                "cluster|shards",
                2,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the mapping of cluster slots to shards.",
                ON,
            ),
            cmd(
                "cluster|nodes",
                2,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the cluster configuration for a node.",
                ON,
            ),
            cmd(
                "cluster|info",
                2,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns information about the state of a node.",
                O1,
            ),
            cmd(
                "cluster|keyslot",
                3,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the hash slot for a key.",
                ON,
            ),
            cmd(
                "cluster|myid",
                2,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the ID of a node.",
                O1,
            ),
            cmd(
                "cluster|countkeysinslot",
                3,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the number of keys in a hash slot.",
                ON,
            ),
            cmd(
                "cluster|getkeysinslot",
                4,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the key names in a hash slot.",
                ON,
            ),
            cmd(
                "cluster|help",
                2,
                INFO,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "cluster",
            -2,
            CommandFlags::NONE,
            NOKEY,
            "cluster",
            "3.0.0",
            "A container for Redis Cluster commands.",
            "Depends on subcommand.",
        )
    },
    cmd(
        "readonly",
        1,
        CONN_IN_SCRIPTS,
        NOKEY,
        "cluster",
        "3.0.0",
        "Enables read-only queries for a connection to a Redis Cluster replica node.",
        O1,
    ),
    cmd(
        "readwrite",
        1,
        CONN_IN_SCRIPTS,
        NOKEY,
        "cluster",
        "3.0.0",
        "Enables read-write queries for a connection to a Redis Cluster replica node.",
        O1,
    ),
    cmd(
        "asking",
        1,
        CommandFlags::FAST,
        NOKEY,
        "cluster",
        "3.0.0",
        "Signals that a cluster client is following an -ASK redirect.",
        O1,
    ),
    CommandSpec {
        subcommands: &[
            cmd(
                "command|count",
                2,
                INFO,
                NOKEY,
                "server",
                "2.8.13",
                "Returns a count of commands.",
                O1,
            ),
            cmd(
                "command|info",
                -2,
                INFO,
                NOKEY,
                "server",
                "2.8.13",
                "Returns information about one, multiple or all commands.",
                ON,
            ),
            cmd(
                "command|docs",
                -2,
                INFO,
                NOKEY,
                "server",
                "7.0.0",
                "Returns documentary information about one, multiple or all commands.",
                ON,
            ),
            cmd(
                "command|list",
                -2,
                INFO,
                NOKEY,
                "server",
                "7.0.0",
                "Returns a list of command names.",
                ON,
            ),
            cmd(
                "command|getkeys",
                -3,
                INFO,
                NOKEY,
                "server",
                "2.8.13",
                "Extracts the key names from an arbitrary command.",
                ON,
            ),
            cmd(
                "command|help",
                2,
                INFO,
                NOKEY,
                "server",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                O1,
            ),
        ],
        ..cmd(
            "command",
            -1,
            INFO,
            NOKEY,
            "server",
            "2.8.13",
            "Returns detailed information about all commands.",
            ON,
        )
    },
    cmd(
        "time",
        1,
        CONN_IN_SCRIPTS,
        NOKEY,
        "server",
        "2.6.0",
        "Returns the server time.",
        O1,
    ),
    cmd(
        "save",
        1,
        ADMIN.with(CommandFlags::NO_MULTI),
        NOKEY,
        "server",
        "1.0.0",
        "Synchronously makes every change durable in the persistence tier.",
        O1,
    ),
    cmd(
        "bgsave",
        -1,
        ADMIN.with(CommandFlags::NO_MULTI),
        NOKEY,
        "server",
        "1.0.0",
        "Asynchronously makes every change durable in the persistence tier.",
        O1,
    ),
    cmd(
        "wait",
        3,
        CommandFlags::NOSCRIPT,
        NOKEY,
        "generic",
        "3.0.0",
        "Blocks until the replicas of the slots the connection wrote to acknowledged all its earlier writes.",
        O1,
    ),
    cmd(
        "lastsave",
        1,
        CONN_IN_SCRIPTS,
        NOKEY,
        "server",
        "1.0.0",
        "Returns the Unix timestamp of the last successful save to disk.",
        O1,
    ),
    cmd(
        "shutdown",
        -1,
        ADMIN.with(CommandFlags::NO_MULTI),
        NOKEY,
        "server",
        "1.0.0",
        "Synchronously saves the database(s) to disk and shuts down the Redis server.",
        ON,
    ),
];

fn index() -> &'static HashMap<&'static [u8], &'static CommandSpec> {
    static INDEX: OnceLock<HashMap<&'static [u8], &'static CommandSpec>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map = HashMap::new();
        for spec in COMMANDS {
            map.insert(spec.name.as_bytes(), spec);
            for sub in spec.subcommands {
                map.insert(sub.name.as_bytes(), sub);
            }
        }
        map
    })
}

/// Finds a command by name, case-insensitively, without allocating.
pub fn lookup_command(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut lower = [0u8; 32];
    if name.len() > lower.len() || name.contains(&b'|') {
        return None;
    }
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    index().get(&lower[..name.len()]).copied()
}

/// Finds a subcommand of `container` (`CONFIG`, `GET` → `config|get`), case-insensitively.
pub fn lookup_subcommand(container: &CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    let mut full = [0u8; 64];
    let prefix = container.name.len();
    if prefix + 1 + sub.len() > full.len() {
        return None;
    }
    full[..prefix].copy_from_slice(container.name.as_bytes());
    full[prefix] = b'|';
    for (dst, src) in full[prefix + 1..].iter_mut().zip(sub) {
        *dst = src.to_ascii_lowercase();
    }
    index()
        .get(&full[..prefix + 1 + sub.len()])
        .copied()
        .filter(|spec| container.subcommands.iter().any(|s| std::ptr::eq(s, *spec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_finds_subcommands() {
        assert_eq!(lookup_command(b"GeT").unwrap().name, "get");
        assert!(lookup_command(b"config|get").is_none());
        let config = lookup_command(b"CONFIG").unwrap();
        assert_eq!(
            lookup_subcommand(config, b"Get").unwrap().name,
            "config|get"
        );
        assert!(lookup_subcommand(config, b"nope").is_none());
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut seen = std::collections::HashSet::new();
        for spec in COMMANDS
            .iter()
            .chain(COMMANDS.iter().flat_map(|c| c.subcommands))
        {
            assert!(seen.insert(spec.name), "duplicate {}", spec.name);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(
                spec.flags.contains(CommandFlags::WRITE)
                    || !spec.flags.contains(CommandFlags::DENYOOM),
                "{} is denyoom but not a write",
                spec.name
            );
        }
    }

    #[test]
    fn numkeys_commands_find_their_keys_and_never_past_the_arguments() {
        let keys_of = |line: &str| {
            let input = format!("{line}\r\n");
            let mut parser = crate::RequestParser::new(crate::request::Limits::default());
            let mut batch = crate::Batch::new();
            parser.parse(input.as_bytes(), &mut batch).unwrap();
            let args = batch.command(input.as_bytes(), 0);
            lookup_command(args.get(0))
                .unwrap()
                .keys
                .of(&args)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys_of("lmpop 2 a b left"), vec![2, 3]);
        assert_eq!(keys_of("blmpop 0 1 k left count 2"), vec![3]);
        assert_eq!(keys_of("lmpop 100 a left"), vec![2, 3]);
        assert_eq!(keys_of("lmpop x a left"), Vec::<usize>::new());
        assert_eq!(keys_of("blpop a b 0"), vec![1, 2]);
    }

    #[test]
    fn key_positions_match_redis() {
        let keys = |name: &[u8], argc| {
            lookup_command(name)
                .unwrap()
                .keys
                .indices(argc)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(b"get", 2), vec![1]);
        assert_eq!(keys(b"mset", 5), vec![1, 3]);
        assert_eq!(keys(b"del", 4), vec![1, 2, 3]);
        assert_eq!(keys(b"rename", 3), vec![1, 2]);
        assert_eq!(keys(b"copy", 5), vec![1, 2]);
        assert_eq!(keys(b"ping", 1), Vec::<usize>::new());
        let memory = lookup_command(b"memory").unwrap();
        assert_eq!(
            lookup_subcommand(memory, b"usage")
                .unwrap()
                .keys
                .indices(3)
                .collect::<Vec<_>>(),
            vec![2]
        );
    }
}
