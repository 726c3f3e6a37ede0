//! Node configuration: clap flags with Redis's names, an optional TOML file, and the
//! CONFIG GET/SET registry. Defaults make `ringkv-server` with no arguments a working
//! single node on 127.0.0.1:6379.

use std::path::PathBuf;

use clap::Parser;
use ringkv_store::EvictionPolicy;
use ringkv_store::wal::FsyncPolicy;

/// A config value that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A memory size such as `100mb` that does not parse.
    #[error("argument must be a memory value")]
    BadMemory,
    /// A value outside what the option accepts.
    #[error("{0}")]
    Invalid(String),
    /// An option ringkv does not know.
    #[error("Unknown option or number of arguments for CONFIG SET - '{0}'")]
    Unknown(String),
}

/// Parses a Redis memory size: `1024`, `100kb`, `100mb`, `1gb`, `1k` (1000), `1m`, `1g`.
pub fn parse_memory(text: &str) -> Result<u64, ConfigError> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let number: u64 = digits.parse().map_err(|_| ConfigError::BadMemory)?;
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return Err(ConfigError::BadMemory),
    };
    number.checked_mul(multiplier).ok_or(ConfigError::BadMemory)
}

fn cpu_share_arg(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.01..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "'{text}' is not a share of a core between 0.01 and 1"
        )),
    }
}

fn memory_arg(text: &str) -> Result<u64, String> {
    parse_memory(text).map_err(|e| e.to_string())
}

/// One class of `client-output-buffer-limit`: a hard limit, a soft limit and how many
/// seconds the soft one may be exceeded (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_seconds: u64,
}

/// `client-output-buffer-limit` for Redis's three classes of client. ringkv enforces the
/// pubsub class (a subscriber's queued messages) and the replica class's hard limit, read
/// at start (what the change log keeps for a replica link still reading); normal is kept
/// so CONFIG GET and SET answer as Redis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    pub normal: OutputLimit,
    pub replica: OutputLimit,
    pub pubsub: OutputLimit,
}

impl OutputLimits {
    /// Redis's defaults.
    pub const DEFAULT: OutputLimits = OutputLimits {
        normal: OutputLimit {
            hard: 0,
            soft: 0,
            soft_seconds: 0,
        },
        replica: OutputLimit {
            hard: 256 << 20,
            soft: 64 << 20,
            soft_seconds: 60,
        },
        pubsub: OutputLimit {
            hard: 32 << 20,
            soft: 8 << 20,
            soft_seconds: 60,
        },
    };

    /// These limits with the classes `text` names (`class hard soft seconds ...`)
    /// changed, or Redis's reason for refusing it.
    pub fn with(&self, text: &str) -> Result<OutputLimits, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() || words.len() % 4 != 0 {
            return Err("Wrong number of arguments in buffer limit configuration.".into());
        }
        let mut limits = *self;
        for class in words.chunks(4) {
            let slot = match class[0].to_ascii_lowercase().as_str() {
                "normal" => &mut limits.normal,
                "replica" | "slave" => &mut limits.replica,
                "pubsub" => &mut limits.pubsub,
                _ => {
                    return Err(
                        "Invalid client class specified in buffer limit configuration.".into(),
                    );
                }
            };
            let bad = || {
                "Error in hard, soft or soft_seconds setting in buffer limit configuration."
                    .to_string()
            };
            *slot = OutputLimit {
                hard: parse_memory(class[1]).map_err(|_| bad())?,
                soft: parse_memory(class[2]).map_err(|_| bad())?,
                soft_seconds: class[3].parse().map_err(|_| bad())?,
            };
        }
        Ok(limits)
    }
}

impl std::fmt::Display for OutputLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let classes = [
            ("normal", self.normal),
            ("slave", self.replica),
            ("pubsub", self.pubsub),
        ];
        for (i, (name, limit)) in classes.iter().enumerate() {
            let space = if i > 0 { " " } else { "" };
            write!(
                f,
                "{space}{name} {} {} {}",
                limit.hard, limit.soft, limit.soft_seconds
            )?;
        }
        Ok(())
    }
}

fn output_limits_arg(text: &str) -> Result<OutputLimits, String> {
    OutputLimits::DEFAULT.with(text)
}

fn yes_no(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("argument must be 'yes' or 'no'".into()),
    }
}

/// Redis's `appendfsync` names.
pub fn fsync_arg(text: &str) -> Result<FsyncPolicy, String> {
    match text.to_ascii_lowercase().as_str() {
        "always" => Ok(FsyncPolicy::Always),
        "everysec" => Ok(FsyncPolicy::EverySec),
        "no" => Ok(FsyncPolicy::No),
        _ => Err("argument must be one of the following: always, everysec, no".into()),
    }
}

/// The name of an fsync policy, as CONFIG GET answers.
pub fn fsync_name(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "always",
        FsyncPolicy::EverySec => "everysec",
        FsyncPolicy::No => "no",
    }
}

fn policy_arg(text: &str) -> Result<EvictionPolicy, String> {
    text.parse()
        .map_err(|e: ringkv_store::UnknownPolicy| e.to_string())
}

/// The node's configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringkv-server",
    version,
    about = "A ringkv node: a Redis-compatible cache that speaks RESP2 and RESP3.",
    // A flag given twice takes its last value: config-file values come first, flags after.
    args_override_self = true
)]
pub struct Config {
    /// TOML file with any of these options (flags given on the command line win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// TCP port (0 picks a free one).
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// Addresses to listen on, space-separated.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Memory limit for data (`100mb`, `1gb`); 0 = none.
    #[arg(long, default_value = "0", value_parser = memory_arg)]
    pub maxmemory: u64,
    /// What to evict when over maxmemory.
    #[arg(long = "maxmemory-policy", default_value = "noeviction", value_parser = policy_arg)]
    pub maxmemory_policy: EvictionPolicy,
    /// Keys sampled per eviction round.
    #[arg(long = "maxmemory-samples", default_value_t = 5)]
    pub maxmemory_samples: u32,
    /// Password every client must AUTH with; empty = none.
    #[arg(long, default_value = "")]
    pub requirepass: String,
    /// Most simultaneous clients.
    #[arg(long, default_value_t = 10000)]
    pub maxclients: usize,
    /// Close a client idle this many seconds; 0 = never.
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// debug, verbose, notice or warning (Redis's names) or a tracing filter.
    #[arg(long, default_value = "notice")]
    pub loglevel: String,
    /// Largest bulk argument accepted.
    #[arg(long = "proto-max-bulk-len", default_value = "512mb", value_parser = memory_arg)]
    pub proto_max_bulk_len: u64,
    /// Most arguments one command may carry.
    #[arg(long = "proto-max-multibulk-len", default_value_t = i32::MAX as u64)]
    pub proto_max_multibulk_len: u64,
    /// Longest inline command (and `*`/`$` header line).
    #[arg(long = "proto-inline-max-size", default_value = "64kb", value_parser = memory_arg)]
    pub proto_inline_max_size: u64,
    /// Largest query buffer one client may accumulate before it is disconnected.
    #[arg(long = "client-query-buffer-limit", default_value = "1gb", value_parser = memory_arg)]
    pub client_query_buffer_limit: u64,
    /// LFU counter growth: higher means slower growth.
    #[arg(long = "lfu-log-factor", default_value_t = 10)]
    pub lfu_log_factor: u32,
    /// Minutes for the LFU counter to decay by one.
    #[arg(long = "lfu-decay-time", default_value_t = 1)]
    pub lfu_decay_time: u32,
    /// Active expiry runs this many times a second.
    #[arg(long, default_value_t = 10)]
    pub hz: u32,
    /// Keyspace shards (a power of two).
    #[arg(long, default_value_t = 256)]
    pub shards: usize,
    /// Bytes each Lua state may hold (`512mb`): a script that builds more fails with
    /// "not enough memory" and the node keeps serving; 0 = no limit (a little faster).
    #[arg(long = "lua-memory-limit", default_value = "512mb", value_parser = memory_arg)]
    pub lua_memory_limit: u64,
    /// Milliseconds a script runs before other clients are answered `-BUSY` and it may be
    /// stopped with SCRIPT KILL (Redis's `busy-reply-threshold`, alias `lua-time-limit`).
    #[arg(
        long = "busy-reply-threshold",
        alias = "lua-time-limit",
        default_value_t = 5000
    )]
    pub busy_reply_threshold: u64,
    /// Redis's `client-output-buffer-limit` (`pubsub 32mb 8mb 60`): a subscriber whose
    /// unread messages pass the hard limit, or the soft one for its seconds, is disconnected.
    #[arg(
        long = "client-output-buffer-limit",
        default_value = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        value_parser = output_limits_arg
    )]
    pub client_output_buffer_limit: OutputLimits,
    /// Redis's `notify-keyspace-events` (`KEA`, `Ex`, …; empty: none): which keyspace
    /// events are published on `__keyspace@<db>__:<key>` and `__keyevent@<db>__:<event>`.
    #[arg(
        long = "notify-keyspace-events",
        default_value = "",
        value_parser = crate::notify::parse_flags
    )]
    pub notify_keyspace_events: u32,
    /// Keys the client-side caching table remembers at most (Redis's
    /// `tracking-table-max-keys`; 0: no bound): past it, a key is forgotten and its
    /// holders are told to drop it.
    #[arg(long = "tracking-table-max-keys", default_value_t = 1_000_000)]
    pub tracking_table_max_keys: usize,
    /// Logical databases a standalone node offers (SELECT 0 to this minus one; at most
    /// 255). A cluster member has database 0 only, as in Redis Cluster.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=255))]
    pub databases: u16,
    /// Worker threads; 0 = one per core.
    #[arg(long = "io-threads", default_value_t = 0)]
    pub io_threads: usize,
    /// Persist every change (a WAL, with sled as the base image) and recover it on start:
    /// yes or no.
    #[arg(long, default_value = "yes", value_parser = yes_no, action = clap::ArgAction::Set)]
    pub persistence: bool,
    /// Data directory of the persistence tier.
    #[arg(long, default_value = "./ringkv-data")]
    pub dir: PathBuf,
    /// When changes reach the disk: always (before the reply), everysec, or no.
    #[arg(long, default_value = "everysec", value_parser = fsync_arg)]
    pub appendfsync: FsyncPolicy,
    /// Memory for sled's page cache under the base image (counted in INFO memory).
    #[arg(long = "persistence-cache-size", default_value = "16mb", value_parser = memory_arg)]
    pub persistence_cache_size: u64,
    /// Checkpoint once the WAL since the last checkpoint is this percent of the base
    /// image (Redis's AOF rewrite trigger; 0 disables it).
    #[arg(long = "auto-aof-rewrite-percentage", default_value_t = 100)]
    pub auto_aof_rewrite_percentage: u64,
    /// ...and at least this large.
    #[arg(long = "auto-aof-rewrite-min-size", default_value = "256mb", value_parser = memory_arg)]
    pub auto_aof_rewrite_min_size: u64,
    /// cache (eviction deletes from memory and disk) or store (eviction keeps the value on
    /// disk; a read faults it back in, so nothing acknowledged is lost to eviction).
    #[arg(long, default_value = "cache", value_parser = ["cache", "store"])]
    pub mode: String,
    /// A data directory that cannot be opened: fail (stop with the cause), or, in cache
    /// mode, discard (move it aside and start cold).
    #[arg(long = "on-corrupt-data", default_value = "fail", value_parser = ["fail", "discard"])]
    pub on_corrupt_data: String,
    /// XFetch β for CACHE.GET: 0 disables early refresh leases; larger refreshes earlier.
    #[arg(long = "cache-xfetch-beta", default_value_t = 1.0)]
    pub cache_xfetch_beta: f64,
    /// Milliseconds a CACHE.FILLed key with a TTL stays readable after it goes stale, while
    /// one client holds a refresh lease.
    #[arg(long = "cache-grace-ms", default_value_t = 0)]
    pub cache_grace_ms: u64,
    /// CACHE.FILL … ADAPTIVE: TTL of a first fill and of rarely read keys.
    #[arg(long = "cache-adaptive-base-ms", default_value_t = 60_000)]
    pub cache_adaptive_base_ms: u64,
    /// CACHE.FILL … ADAPTIVE: shortest TTL.
    #[arg(long = "cache-adaptive-min-ms", default_value_t = 1_000)]
    pub cache_adaptive_min_ms: u64,
    /// CACHE.FILL … ADAPTIVE: longest TTL.
    #[arg(long = "cache-adaptive-max-ms", default_value_t = 3_600_000)]
    pub cache_adaptive_max_ms: u64,
    /// Run as a cluster member: yes or no.
    #[arg(long = "cluster-enabled", default_value = "no", value_parser = yes_no, action = clap::ArgAction::Set)]
    pub cluster_enabled: bool,
    /// UDP port of the gossip bus; 0 = the client port + 10000.
    #[arg(long = "cluster-bus-port", default_value_t = 0)]
    pub cluster_bus_port: u16,
    /// A member's bus address (HOST:BUSPORT) to join through; repeatable.
    #[arg(long = "cluster-join", value_name = "HOST:BUSPORT")]
    pub cluster_join: Vec<String>,
    /// Replicas per slot besides its primary.
    #[arg(long = "cluster-replicas", default_value_t = 1)]
    pub cluster_replicas: u8,
    /// Ring tokens per unit of weight.
    #[arg(long = "cluster-vnodes", default_value_t = ringkv_cluster::ring::DEFAULT_VNODES)]
    pub cluster_vnodes: u32,
    /// This node's ring weight (a node of weight 2 owns about twice the slots).
    #[arg(long = "cluster-weight", default_value_t = 1)]
    pub cluster_weight: u16,
    /// Shared secret: every gossip packet carries a MAC made with it.
    #[arg(
        long = "cluster-secret",
        env = "RINGKV_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    /// The IP this node tells clients and members; default: the first --bind address,
    /// which must then not be a wildcard.
    #[arg(long = "cluster-announce-ip")]
    pub cluster_announce_ip: Option<String>,
    /// A command for a slot owned elsewhere: redirect (answer -MOVED, as Redis Cluster
    /// does) or proxy (forward it to the owner and relay the reply).
    #[arg(long = "cluster-routing", default_value = "redirect", value_parser = ["redirect", "proxy"])]
    pub cluster_routing: String,
    /// Let READONLY connections read, on a member, the slots it holds a replica of (from a
    /// copy that may lag its primary). Off by default: members are listed to clients as
    /// primaries, and on a Redis primary READONLY does nothing, so some cluster clients
    /// (redis-rs's async client) send it on every connection; with this on, their reads
    /// that chase a -MOVED to a member holding a replica would be answered from the copy.
    #[arg(long = "cluster-replica-reads", default_value = "no", value_parser = yes_no, action = clap::ArgAction::Set)]
    pub cluster_replica_reads: bool,
    /// How long a leaving member (SIGTERM, SHUTDOWN) waits, at most, for the members
    /// taking over its slots to hold them before it leaves; 0 leaves at once.
    #[arg(
        long = "cluster-drain-timeout",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub cluster_drain_timeout: u64,
    /// Bytes per second every snapshot copy from this member shares (a replica's resync,
    /// a learner's or a joiner's copy; the live stream is never held back); 0: no limit.
    #[arg(long = "cluster-transfer-max-rate", value_name = "BYTES", default_value = "0", value_parser = memory_arg)]
    pub cluster_transfer_max_rate: u64,
    /// Share of one core this member's snapshot copies may use together, 0.01 to 1 (1: no
    /// limit).
    #[arg(long = "cluster-transfer-cpu-share", value_name = "SHARE", default_value = "1", value_parser = cpu_share_arg)]
    pub cluster_transfer_cpu_share: f64,
    /// How many snapshot copies this member sends at once (a replica's resync, a
    /// learner's or a joiner's copy); the others wait their turn, their links kept alive.
    #[arg(long = "cluster-transfer-max-copies", value_name = "COUNT", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cluster_transfer_max_copies: u32,
    /// Bytes of recent changes kept so a replica whose link dropped resumes without a
    /// snapshot (Redis's repl-backlog-size).
    #[arg(long = "repl-backlog-size", default_value = "16mb", value_parser = memory_arg)]
    pub repl_backlog_size: u64,
    /// Refuse writes to a slot with fewer than this many good replicas (Redis's
    /// min-replicas-to-write; 0 = never refuse).
    #[arg(long = "min-replicas-to-write", default_value_t = 0)]
    pub min_replicas_to_write: u32,
    /// A replica is good while its last acknowledgement is at most this many seconds old.
    #[arg(long = "min-replicas-max-lag", default_value_t = 10)]
    pub min_replicas_max_lag: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["ringkv-server"])
    }
}

impl Config {
    /// Flags over the TOML file (`--config`) over defaults; exits on `--help`.
    pub fn load() -> anyhow::Result<Config> {
        use anyhow::Context;
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let flags = Config::parse_from(&args);
        let Some(path) = flags.config else {
            return Ok(flags);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Config::from_toml_and_args(&text, args)
            .with_context(|| format!("in config file {}", path.display()))
    }

    /// A configuration from a TOML text whose keys are the long flag names
    /// (`maxmemory = "100mb"`), overridden by command-line style `args`. File values go
    /// through the same parsers as flags.
    pub fn from_toml_and_args<I, T>(toml_text: &str, args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let table: toml::Table = toml_text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        let mut args = args.into_iter().map(Into::into);
        let mut argv: Vec<std::ffi::OsString> =
            vec![args.next().unwrap_or_else(|| "ringkv-server".into())];
        for (key, value) in table {
            if key == "config" {
                return Err(ConfigError::Invalid(
                    "a config file cannot name another one".into(),
                ));
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => if b { "yes" } else { "no" }.to_string(),
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "{key}: unsupported value {other}"
                    )));
                }
            };
            argv.push(format!("--{key}").into());
            argv.push(text.into());
        }
        argv.extend(args);
        Config::try_parse_from(argv).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// A configuration from command-line style arguments (the first is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
    }

    /// Parser limits derived from this configuration.
    pub fn limits(&self) -> ringkv_protocol::Limits {
        ringkv_protocol::Limits {
            max_bulk_len: self.proto_max_bulk_len.min(usize::MAX as u64) as usize,
            max_multibulk_len: self.proto_max_multibulk_len.min(usize::MAX as u64) as usize,
            max_inline_len: self.proto_inline_max_size.min(usize::MAX as u64) as usize,
        }
    }

    /// The tracing filter for `loglevel`.
    pub fn log_filter(&self) -> String {
        match self.loglevel.as_str() {
            "debug" => "debug".into(),
            "verbose" => "info".into(),
            "notice" => "info".into(),
            "warning" => "warn".into(),
            "nothing" => "off".into(),
            other => other.into(),
        }
    }
}

/// Redis options ringkv accepts and echoes without acting on them, with Redis's defaults,
/// so tools that tune them keep working.
pub const PASSTHROUGH_OPTIONS: &[(&str, &str)] = &[
    ("activerehashing", "yes"),
    ("dbfilename", "dump.rdb"),
    ("hash-max-listpack-entries", "128"),
    ("hash-max-listpack-value", "64"),
    ("hash-max-ziplist-entries", "128"),
    ("hash-max-ziplist-value", "64"),
    ("latency-tracking", "yes"),
    ("lazyfree-lazy-eviction", "no"),
    ("lazyfree-lazy-expire", "no"),
    ("lazyfree-lazy-server-del", "no"),
    ("lazyfree-lazy-user-del", "no"),
    ("lazyfree-lazy-user-flush", "no"),
    ("list-compress-depth", "0"),
    ("list-max-listpack-size", "-2"),
    ("list-max-ziplist-size", "-2"),
    ("maxmemory-eviction-tenacity", "10"),
    ("protected-mode", "no"),
    ("repl-diskless-sync", "yes"),
    ("save", ""),
    ("set-max-intset-entries", "512"),
    ("set-max-listpack-entries", "128"),
    ("slowlog-log-slower-than", "10000"),
    ("slowlog-max-len", "128"),
    ("stop-writes-on-bgsave-error", "yes"),
    ("tcp-backlog", "511"),
    ("tcp-keepalive", "300"),
    ("zset-max-listpack-entries", "128"),
    ("zset-max-listpack-value", "64"),
    ("zset-max-ziplist-entries", "128"),
    ("zset-max-ziplist-value", "64"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_with_redis_units() {
        assert_eq!(parse_memory("100mb").unwrap(), 100 * 1024 * 1024);
        assert_eq!(parse_memory("1gb").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1k").unwrap(), 1000);
        assert_eq!(parse_memory("42").unwrap(), 42);
        assert_eq!(parse_memory("1GB").unwrap(), 1 << 30);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("99999999999999999999gb").is_err());
    }

    #[test]
    fn a_node_with_no_arguments_is_a_local_cache() {
        let config = Config::default();
        assert_eq!(config.port, 6379);
        assert_eq!(config.bind, "127.0.0.1");
        assert_eq!(config.maxmemory, 0);
        assert_eq!(config.proto_max_bulk_len, 512 * 1024 * 1024);
    }

    #[test]
    fn the_toml_file_uses_redis_option_names_and_flags_win() {
        let text = "port = 7000\nmaxmemory = \"100mb\"\nmaxmemory-policy = \"allkeys-lru\"\n";
        let config = Config::from_toml_and_args(text, ["ringkv-server"]).unwrap();
        assert_eq!(config.port, 7000);
        assert_eq!(config.maxmemory, 100 * 1024 * 1024);
        assert_eq!(config.maxmemory_policy, EvictionPolicy::AllKeysLru);
        let config = Config::from_toml_and_args(text, ["ringkv-server", "--port", "7001"]).unwrap();
        assert_eq!((config.port, config.maxmemory), (7001, 100 * 1024 * 1024));
        assert!(Config::from_toml_and_args("bogus = 1", ["ringkv-server"]).is_err());
        assert!(Config::from_toml_and_args("maxmemory = \"lots\"", ["ringkv-server"]).is_err());
    }
}
