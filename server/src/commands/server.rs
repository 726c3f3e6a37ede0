//! Server commands: INFO, CONFIG, COMMAND, TIME, LASTSAVE, SHUTDOWN.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use ringkv_protocol::{
    ArgDoc, Args, COMMANDS, CommandSpec, ReplyWriter, lookup_command, lookup_subcommand,
    parse_syntax, syntax,
};
use ringkv_store::{EvictionPolicy, glob_match};

use super::connection::REDIS_COMPAT_VERSION;
use crate::config::{Config, fsync_name, parse_memory};
use crate::handler::{CmdError, CmdResult, Ctx, help, is, lossy};
use crate::node::{Node, unix_ms};

/// ringkv's own version, shown in INFO next to the Redis version it speaks.
pub const RINGKV_VERSION: &str = env!("CARGO_PKG_VERSION");

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

/// Resident memory and CPU seconds (user, system) of this process, from /proc.
fn process_usage() -> (u64, f64, f64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096);
    let (user, system) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which ends with ')'.
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
        })
        .unwrap_or((0.0, 0.0));
    (rss, user, system)
}

const DEFAULT_SECTIONS: [&str; 9] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "keyspace",
];

/// Writes the INFO text for `sections` (empty = default).
pub fn write_info(node: &Node, sections: &[String]) -> String {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections
                .iter()
                .any(|s| s == name || s == "all" || s == "everything" || s == "default")
    };
    let config = node.config.read().clone();
    let stats = node.store.stats();
    let (rss, cpu_user, cpu_sys) = process_usage();
    let used = node.store.used_memory() as u64;
    let mut text = String::new();
    let mut section = |name: &str, body: String| {
        if wanted(&name.to_ascii_lowercase()) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let _ = write!(text, "# {name}\r\n{body}");
        }
    };
    let uptime = node.started.elapsed().as_secs();
    section(
        "Server",
        format!(
            "redis_version:{REDIS_COMPAT_VERSION}\r\nringkv_version:{RINGKV_VERSION}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:{}\r\nconfigured_hz:{}\r\nexecutable:{}\r\nconfig_file:{}\r\n",
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            node.run_id,
            node.port.load(Relaxed),
            unix_ms() * 1000,
            uptime / 86400,
            config.hz,
            config.hz,
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            config
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
    );
    section(
        "Clients",
        format!(
            "connected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nblocked_clients:{}\r\ntracking_clients:{}\r\nclients_in_timeout_table:{}\r\n",
            node.clients.len(),
            config.maxclients,
            node.blocking.waiting(),
            node.tracking.tracking_clients(),
            node.blocking.waiting(),
        ),
    );
    // The script cache as Redis 7.0 reports it; the Lua memory is this thread's state's
    // (each runtime thread has its own).
    let (cached_scripts, script_bytes, lua_memory) = node.scripting.stats();
    section(
        "Memory",
        format!(
            "used_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_dataset:{used}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_allocator:{}\r\nmem_aof_buffer:{}\r\npersistence_cache_size:{}\r\nused_memory_lua:{lua_memory}\r\nused_memory_vm_eval:{lua_memory}\r\nused_memory_scripts_eval:{script_bytes}\r\nnumber_of_cached_scripts:{cached_scripts}\r\n",
            human_bytes(used),
            human_bytes(rss),
            config.maxmemory,
            human_bytes(config.maxmemory),
            node.store.policy(),
            if used > 0 {
                rss as f64 / used as f64
            } else {
                0.0
            },
            crate::node::allocator_name(),
            node.store.change_log().map_or(0, |log| log.memory_bytes()),
            node.persistence.as_ref().map_or(0, |p| p.cache_bytes),
        ),
    );
    section("Persistence", persistence_info(node));
    let s = &node.stats;
    section(
        "Stats",
        format!(
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ntotal_error_replies:{}\r\ntotal_protocol_errors:{}\r\ntracking_total_keys:{}\r\n",
            s.connections_received.load(Relaxed),
            s.commands_processed.load(Relaxed),
            s.instantaneous_ops.load(Relaxed),
            s.net_input_bytes.load(Relaxed),
            s.net_output_bytes.load(Relaxed),
            s.rejected_connections.load(Relaxed),
            stats.expired,
            stats.evicted,
            stats.hits,
            stats.misses,
            s.error_replies.load(Relaxed),
            s.protocol_errors.load(Relaxed),
            node.tracking.tracked_keys(),
        ),
    );
    section("Replication", {
        let mut body = String::new();
        match node.replication.get() {
            Some(replication) => replication.info(&mut body),
            None => {
                body = format!(
                    "role:master\r\nconnected_slaves:0\r\nmaster_replid:{}\r\nmaster_repl_offset:0\r\n",
                    node.run_id
                )
            }
        }
        body
    });
    section(
        "CPU",
        format!("used_cpu_sys:{cpu_sys:.6}\r\nused_cpu_user:{cpu_user:.6}\r\n"),
    );
    let mut cluster = format!("cluster_enabled:{}\r\n", u8::from(node.cluster.is_some()));
    if let Some(replication) = node.replication.get() {
        replication.handoff_info(&mut cluster, "cluster_handoff_");
    }
    section("Cluster", cluster);
    let mut keyspace = String::new();
    if wanted("keyspace") {
        let counts = if node.databases.enabled() {
            node.store.database_lens()
        } else {
            vec![ringkv_store::DatabaseCount {
                keys: stats.keys as usize,
                volatile: stats.volatile as usize,
            }]
        };
        for db in 0..node.databases.count() {
            let physical = usize::from(node.databases.physical(db as u8));
            let count = counts.get(physical).copied().unwrap_or_default();
            if count.keys > 0 {
                let _ = write!(
                    keyspace,
                    "db{db}:keys={},expires={},avg_ttl=0\r\n",
                    count.keys, count.volatile
                );
            }
        }
    }
    section("Keyspace", keyspace);
    text
}

/// INFO [section ...]
pub fn info(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let sections: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| lossy(a).to_ascii_lowercase())
        .collect();
    let unknown_only = !sections.is_empty()
        && sections.iter().all(|s| {
            !DEFAULT_SECTIONS.contains(&s.as_str())
                && !["all", "everything", "default"].contains(&s.as_str())
        });
    let text = if unknown_only {
        String::new()
    } else {
        write_info(ctx.node, &sections)
    };
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// Changes one option on a copy of the configuration; `Err` is the reason it was refused.
type SetOption = fn(&mut Config, &str) -> Result<(), String>;

/// A configuration option: how to read it and how to change it.
struct ConfigOption {
    name: &'static str,
    get: fn(&Config) -> String,
    /// Changes the copy; `None` for options fixed at start.
    set: Option<SetOption>,
}

fn set_number<T: std::str::FromStr>(slot: &mut T, text: &str) -> Result<(), String> {
    *slot = text
        .parse()
        .map_err(|_| "argument couldn't be parsed into an integer".to_string())?;
    Ok(())
}

fn set_memory(slot: &mut u64, text: &str) -> Result<(), String> {
    *slot = parse_memory(text).map_err(|e| e.to_string())?;
    Ok(())
}

const OPTIONS: &[ConfigOption] = &[
    ConfigOption {
        name: "port",
        get: |c| c.port.to_string(),
        set: None,
    },
    ConfigOption {
        name: "bind",
        get: |c| c.bind.clone(),
        set: None,
    },
    ConfigOption {
        name: "io-threads",
        get: |c| c.io_threads.to_string(),
        set: None,
    },
    ConfigOption {
        name: "shards",
        get: |c| c.shards.to_string(),
        set: None,
    },
    ConfigOption {
        name: "lua-memory-limit",
        get: |c| c.lua_memory_limit.to_string(),
        set: None,
    },
    ConfigOption {
        name: "tracking-table-max-keys",
        get: |c| c.tracking_table_max_keys.to_string(),
        set: Some(|c, v| set_number(&mut c.tracking_table_max_keys, v)),
    },
    ConfigOption {
        name: "notify-keyspace-events",
        get: |c| crate::notify::flags_text(c.notify_keyspace_events),
        set: Some(|c, v| {
            c.notify_keyspace_events = crate::notify::parse_flags(v)?;
            Ok(())
        }),
    },
    ConfigOption {
        name: "client-output-buffer-limit",
        get: |c| c.client_output_buffer_limit.to_string(),
        set: Some(|c, v| {
            c.client_output_buffer_limit = c.client_output_buffer_limit.with(v)?;
            Ok(())
        }),
    },
    ConfigOption {
        name: "busy-reply-threshold",
        get: |c| c.busy_reply_threshold.to_string(),
        set: Some(|c, v| set_number(&mut c.busy_reply_threshold, v)),
    },
    ConfigOption {
        name: "lua-time-limit",
        get: |c| c.busy_reply_threshold.to_string(),
        set: Some(|c, v| set_number(&mut c.busy_reply_threshold, v)),
    },
    ConfigOption {
        name: "databases",
        get: |c| {
            if c.cluster_enabled {
                "1".into()
            } else {
                c.databases.to_string()
            }
        },
        set: None,
    },
    ConfigOption {
        name: "maxmemory",
        get: |c| c.maxmemory.to_string(),
        set: Some(|c, v| set_memory(&mut c.maxmemory, v)),
    },
    ConfigOption {
        name: "min-replicas-to-write",
        get: |c| c.min_replicas_to_write.to_string(),
        set: Some(|c, v| set_number(&mut c.min_replicas_to_write, v)),
    },
    ConfigOption {
        name: "min-replicas-max-lag",
        get: |c| c.min_replicas_max_lag.to_string(),
        set: Some(|c, v| set_number(&mut c.min_replicas_max_lag, v)),
    },
    ConfigOption {
        name: "maxmemory-policy",
        get: |c| c.maxmemory_policy.to_string(),
        set: Some(|c, v| {
            c.maxmemory_policy = v.parse::<EvictionPolicy>().map_err(|_| {
                format!(
                    "argument(s) must be one of the following: {}",
                    EvictionPolicy::ALL.map(|p| p.name()).join(", ")
                )
            })?;
            Ok(())
        }),
    },
    ConfigOption {
        name: "maxmemory-samples",
        get: |c| c.maxmemory_samples.to_string(),
        set: Some(|c, v| {
            set_number(&mut c.maxmemory_samples, v)?;
            if !(1..=64).contains(&c.maxmemory_samples) {
                return Err("argument must be between 1 and 64 inclusive".into());
            }
            Ok(())
        }),
    },
    ConfigOption {
        name: "lfu-log-factor",
        get: |c| c.lfu_log_factor.to_string(),
        set: Some(|c, v| set_number(&mut c.lfu_log_factor, v)),
    },
    ConfigOption {
        name: "lfu-decay-time",
        get: |c| c.lfu_decay_time.to_string(),
        set: Some(|c, v| set_number(&mut c.lfu_decay_time, v)),
    },
    ConfigOption {
        name: "requirepass",
        get: |c| c.requirepass.clone(),
        set: Some(|c, v| {
            c.requirepass = v.to_string();
            Ok(())
        }),
    },
    ConfigOption {
        name: "maxclients",
        get: |c| c.maxclients.to_string(),
        set: Some(|c, v| set_number(&mut c.maxclients, v)),
    },
    ConfigOption {
        name: "timeout",
        get: |c| c.timeout.to_string(),
        set: Some(|c, v| set_number(&mut c.timeout, v)),
    },
    ConfigOption {
        name: "loglevel",
        get: |c| c.loglevel.clone(),
        set: Some(|c, v| {
            if !["debug", "verbose", "notice", "warning", "nothing"].contains(&v) {
                return Err("argument(s) must be one of the following: debug, verbose, notice, warning, nothing".into());
            }
            c.loglevel = v.to_string();
            Ok(())
        }),
    },
    ConfigOption {
        name: "proto-max-bulk-len",
        get: |c| c.proto_max_bulk_len.to_string(),
        set: Some(|c, v| set_memory(&mut c.proto_max_bulk_len, v)),
    },
    ConfigOption {
        name: "proto-max-multibulk-len",
        get: |c| c.proto_max_multibulk_len.to_string(),
        set: Some(|c, v| set_number(&mut c.proto_max_multibulk_len, v)),
    },
    ConfigOption {
        name: "proto-inline-max-size",
        get: |c| c.proto_inline_max_size.to_string(),
        set: Some(|c, v| set_memory(&mut c.proto_inline_max_size, v)),
    },
    ConfigOption {
        name: "client-query-buffer-limit",
        get: |c| c.client_query_buffer_limit.to_string(),
        set: Some(|c, v| set_memory(&mut c.client_query_buffer_limit, v)),
    },
    ConfigOption {
        name: "hz",
        get: |c| c.hz.to_string(),
        set: Some(|c, v| {
            set_number(&mut c.hz, v)?;
            c.hz = c.hz.clamp(1, 500);
            Ok(())
        }),
    },
    ConfigOption {
        name: "appendfsync",
        get: |c| fsync_name(c.appendfsync).to_string(),
        set: None,
    },
    ConfigOption {
        name: "appendonly",
        get: |c| if c.persistence { "yes" } else { "no" }.to_string(),
        set: None,
    },
    ConfigOption {
        name: "persistence",
        get: |c| if c.persistence { "yes" } else { "no" }.to_string(),
        set: None,
    },
    ConfigOption {
        name: "dir",
        get: |c| c.dir.display().to_string(),
        set: None,
    },
    ConfigOption {
        name: "mode",
        get: |c| c.mode.clone(),
        set: None,
    },
    ConfigOption {
        name: "persistence-cache-size",
        get: |c| c.persistence_cache_size.to_string(),
        set: None,
    },
    ConfigOption {
        name: "auto-aof-rewrite-percentage",
        get: |c| c.auto_aof_rewrite_percentage.to_string(),
        set: None,
    },
    ConfigOption {
        name: "auto-aof-rewrite-min-size",
        get: |c| c.auto_aof_rewrite_min_size.to_string(),
        set: None,
    },
    ConfigOption {
        name: "cache-xfetch-beta",
        get: |c| c.cache_xfetch_beta.to_string(),
        set: Some(|c, v| {
            let beta: f64 = v
                .parse()
                .map_err(|_| "argument must be a number".to_string())?;
            if !beta.is_finite() || beta < 0.0 {
                return Err("argument must be a finite number >= 0".into());
            }
            c.cache_xfetch_beta = beta;
            Ok(())
        }),
    },
    ConfigOption {
        name: "cache-grace-ms",
        get: |c| c.cache_grace_ms.to_string(),
        set: Some(|c, v| set_number(&mut c.cache_grace_ms, v)),
    },
    ConfigOption {
        name: "cache-adaptive-base-ms",
        get: |c| c.cache_adaptive_base_ms.to_string(),
        set: Some(|c, v| set_number(&mut c.cache_adaptive_base_ms, v)),
    },
    ConfigOption {
        name: "cache-adaptive-min-ms",
        get: |c| c.cache_adaptive_min_ms.to_string(),
        set: Some(|c, v| set_number(&mut c.cache_adaptive_min_ms, v)),
    },
    ConfigOption {
        name: "cache-adaptive-max-ms",
        get: |c| c.cache_adaptive_max_ms.to_string(),
        set: Some(|c, v| set_number(&mut c.cache_adaptive_max_ms, v)),
    },
];

/// SWAPDB index1 index2: O(1), each database names the other's keys from now on.
pub fn swapdb(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.node.cluster.is_some() {
        return Err(CmdError::Custom(
            "ERR SWAPDB is not allowed in cluster mode".into(),
        ));
    }
    let index = |arg: &[u8], which: &str| {
        ringkv_protocol::parse_i64(arg)
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or_else(|| CmdError::Custom(format!("ERR invalid {which} DB index")))
    };
    let (a, b) = (index(args.get(1), "first")?, index(args.get(2), "second")?);
    let databases = &ctx.node.databases;
    let (Some(a), Some(b)) = (databases.index(a), databases.index(b)) else {
        return Err(CmdError::Custom("ERR DB index is out of range".into()));
    };
    databases.swap(&ctx.node.store, a, b, ctx.now);
    ctx.out.ok();
    Ok(())
}

/// CONFIG with no subcommand.
pub fn config_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("config"))
}

/// CONFIG GET pattern [pattern ...]
pub fn config_get(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let config = ctx.node.config.read().clone();
    let passthrough = ctx.node.passthrough.lock().clone();
    let mut found: Vec<(String, String)> = Vec::new();
    let mut push = |name: &str, value: String| {
        if !found.iter().any(|(n, _)| n == name)
            && args
                .iter()
                .skip(2)
                .any(|p| glob_match(p, name.as_bytes(), true))
        {
            found.push((name.to_string(), value));
        }
    };
    for option in OPTIONS {
        push(option.name, (option.get)(&config));
    }
    let mut names: Vec<_> = passthrough.into_iter().collect();
    names.sort();
    for (name, value) in names {
        push(&name, value);
    }
    ctx.out.map(found.len());
    for (name, value) in &found {
        ctx.out.bulk(name.as_bytes());
        ctx.out.bulk(value.as_bytes());
    }
    Ok(())
}

/// CONFIG SET parameter value [parameter value ...]: all or nothing, as Redis 7.
pub fn config_set(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() % 2 != 0 {
        return Err(CmdError::WrongArity("config|set"));
    }
    let mut updated = ctx.node.config.read().clone();
    let mut passthrough = Vec::new();
    for pair in (2..args.len()).step_by(2) {
        let name = lossy(args.get(pair)).to_ascii_lowercase();
        let value = lossy(args.get(pair + 1));
        let failed = |reason: &str| {
            CmdError::Custom(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}"
            ))
        };
        if let Some(option) = OPTIONS.iter().find(|o| o.name == name) {
            let set = option
                .set
                .ok_or_else(|| failed("can't set immutable config"))?;
            set(&mut updated, &value).map_err(|reason| failed(&reason))?;
        } else if ctx.node.passthrough.lock().contains_key(&name) {
            passthrough.push((name, value));
        } else {
            return Err(CmdError::Custom(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            )));
        }
    }
    let loglevel_changed = updated.loglevel != ctx.node.config.read().loglevel;
    let store = &ctx.node.store;
    store.set_maxmemory(updated.maxmemory);
    if store.policy() != updated.maxmemory_policy {
        store.set_policy(updated.maxmemory_policy);
    }
    store.set_samples(updated.maxmemory_samples);
    store.set_lfu_params(updated.lfu_log_factor, updated.lfu_decay_time);
    ctx.node
        .scripting
        .set_busy_threshold(std::time::Duration::from_millis(
            updated.busy_reply_threshold,
        ));
    if loglevel_changed && let Some(reload) = &ctx.node.log_reload {
        let _ = reload(&updated.log_filter());
    }
    ctx.node
        .pubsub
        .set_limit(updated.client_output_buffer_limit.pubsub);
    ctx.node.notifier.set_flags(updated.notify_keyspace_events);
    ctx.node
        .tracking
        .set_max_keys(updated.tracking_table_max_keys);
    *ctx.node.config.write() = updated;
    ctx.node.passthrough.lock().extend(passthrough);
    ctx.out.ok();
    Ok(())
}

/// CONFIG RESETSTAT
pub fn config_resetstat(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let stats = &ctx.node.stats;
    for counter in [
        &stats.connections_received,
        &stats.rejected_connections,
        &stats.commands_processed,
        &stats.net_input_bytes,
        &stats.net_output_bytes,
        &stats.protocol_errors,
        &stats.error_replies,
    ] {
        counter.store(0, Relaxed);
    }
    ctx.node.store.reset_stats();
    ctx.out.ok();
    Ok(())
}

/// CONFIG HELP
pub fn config_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
        ],
    );
    Ok(())
}

fn write_command_info(out: &mut ReplyWriter<'_>, spec: &CommandSpec) {
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.int(spec.arity as i64);
    let flags: Vec<&str> = spec.flags.names().collect();
    out.set(flags.len());
    for flag in flags {
        out.simple(flag);
    }
    out.int(spec.keys.first as i64);
    out.int(spec.keys.last as i64);
    out.int(spec.keys.step as i64);
    let categories = spec.acl_categories();
    out.set(categories.len());
    for category in categories {
        out.simple(category);
    }
    out.array(0);
    if spec.keys.first == 0 {
        out.array(0);
    } else {
        out.array(1);
        out.map(3);
        out.bulk(b"flags");
        let access: &[&str] = if spec.flags.contains(ringkv_protocol::CommandFlags::WRITE) {
            &["RW", "UPDATE"]
        } else {
            &["RO", "ACCESS"]
        };
        out.set(access.len());
        for flag in access {
            out.simple(flag);
        }
        out.bulk(b"begin_search");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"index");
        out.bulk(b"spec");
        out.map(1);
        out.bulk(b"index");
        out.int(spec.keys.first as i64);
        out.bulk(b"find_keys");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"range");
        out.bulk(b"spec");
        out.map(3);
        out.bulk(b"lastkey");
        let last = if spec.keys.last < 0 {
            spec.keys.last
        } else {
            spec.keys.last - spec.keys.first
        };
        out.int(last as i64);
        out.bulk(b"keystep");
        out.int(spec.keys.step as i64);
        out.bulk(b"limit");
        out.int(0);
    }
    out.array(spec.subcommands.len());
    for sub in spec.subcommands {
        write_command_info(out, sub);
    }
}

fn write_arg_doc(out: &mut ReplyWriter<'_>, arg: &ArgDoc) {
    let flags: Vec<&str> = [(arg.optional, "optional"), (arg.multiple, "multiple")]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
    let fields = 2
        + arg.token.is_some() as usize
        + (arg.kind == "key") as usize
        + !flags.is_empty() as usize
        + !arg.children.is_empty() as usize;
    out.map(fields);
    out.bulk(b"name");
    out.bulk(arg.name.as_bytes());
    out.bulk(b"type");
    out.bulk(arg.kind.as_bytes());
    if arg.kind == "key" {
        out.bulk(b"key_spec_index");
        out.int(0);
    }
    if let Some(token) = &arg.token {
        out.bulk(b"token");
        out.bulk(token.as_bytes());
    }
    if !flags.is_empty() {
        out.bulk(b"flags");
        out.set(flags.len());
        for flag in flags {
            out.simple(flag);
        }
    }
    if !arg.children.is_empty() {
        out.bulk(b"arguments");
        out.array(arg.children.len());
        for child in &arg.children {
            write_arg_doc(out, child);
        }
    }
}

fn write_command_docs(out: &mut ReplyWriter<'_>, spec: &CommandSpec) {
    out.bulk(spec.name.as_bytes());
    let arguments = parse_syntax(syntax(spec.name));
    let fields = 4 + !spec.subcommands.is_empty() as usize + !arguments.is_empty() as usize;
    out.map(fields);
    out.bulk(b"summary");
    out.bulk(spec.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(spec.since.as_bytes());
    out.bulk(b"group");
    out.bulk(spec.group.as_bytes());
    out.bulk(b"complexity");
    out.bulk(spec.complexity.as_bytes());
    if !arguments.is_empty() {
        out.bulk(b"arguments");
        out.array(arguments.len());
        for arg in &arguments {
            write_arg_doc(out, arg);
        }
    }
    if !spec.subcommands.is_empty() {
        out.bulk(b"subcommands");
        out.map(spec.subcommands.len());
        for sub in spec.subcommands {
            write_command_docs(out, sub);
        }
    }
}

/// Finds `name` or `container|sub`.
fn find_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    match name.iter().position(|&c| c == b'|') {
        Some(bar) => lookup_subcommand(lookup_command(&name[..bar])?, &name[bar + 1..]),
        None => lookup_command(name),
    }
}

/// COMMAND (with arguments, the dispatcher routes to a subcommand or refuses it)
pub fn command(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    ctx.out.array(COMMANDS.len());
    for spec in COMMANDS {
        write_command_info(ctx.out, spec);
    }
    Ok(())
}

/// COMMAND COUNT
pub fn command_count(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    ctx.out.int(COMMANDS.len() as i64);
    Ok(())
}

/// COMMAND INFO [name ...]
pub fn command_info(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() == 2 {
        ctx.out.array(COMMANDS.len());
        for spec in COMMANDS {
            write_command_info(ctx.out, spec);
        }
        return Ok(());
    }
    ctx.out.array(args.len() - 2);
    for name in args.iter().skip(2) {
        match find_spec(name) {
            Some(spec) => write_command_info(ctx.out, spec),
            None => ctx.out.null_array(),
        }
    }
    Ok(())
}

/// COMMAND DOCS [name ...]
pub fn command_docs(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() == 2 {
        ctx.out.map(COMMANDS.len());
        for spec in COMMANDS {
            write_command_docs(ctx.out, spec);
        }
        return Ok(());
    }
    let found: Vec<&CommandSpec> = args.iter().skip(2).filter_map(find_spec).collect();
    ctx.out.map(found.len());
    for spec in found {
        write_command_docs(ctx.out, spec);
    }
    Ok(())
}

/// COMMAND LIST [FILTERBY PATTERN p | ACLCAT c | MODULE m]
pub fn command_list(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let filter: Box<dyn Fn(&CommandSpec) -> bool> = match args.len() {
        2 => Box::new(|_| true),
        5 if is(args.get(2), "FILTERBY") => {
            let value = args.get(4).to_vec();
            if is(args.get(3), "PATTERN") {
                Box::new(move |s| glob_match(&value, s.name.as_bytes(), true))
            } else if is(args.get(3), "ACLCAT") {
                let wanted = format!("@{}", lossy(&value).to_ascii_lowercase());
                Box::new(move |s| s.acl_categories().contains(&wanted.as_str()))
            } else if is(args.get(3), "MODULE") {
                Box::new(|_| false)
            } else {
                return Err(CmdError::Syntax);
            }
        }
        _ => return Err(CmdError::Syntax),
    };
    let names: Vec<&str> = COMMANDS
        .iter()
        .filter(|s| filter(s))
        .map(|s| s.name)
        .collect();
    ctx.out.array(names.len());
    for name in names {
        ctx.out.bulk(name.as_bytes());
    }
    Ok(())
}

/// COMMAND GETKEYS command [arg ...]
pub fn command_getkeys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let Some(mut spec) = lookup_command(args.get(2)) else {
        return Err(CmdError::Custom("ERR Invalid command specified".into()));
    };
    let argc = args.len() - 2;
    if !spec.subcommands.is_empty() && argc >= 2 {
        spec = lookup_subcommand(spec, args.get(3))
            .ok_or_else(|| CmdError::Custom("ERR Invalid command specified".into()))?;
    }
    if !spec.arity_ok(argc) {
        return Err(CmdError::Custom(
            "ERR Invalid number of arguments specified for command".into(),
        ));
    }
    let keys: Vec<usize> = spec.keys.of_arguments(argc, |i| args.get(i + 2)).collect();
    if keys.is_empty() {
        return Err(CmdError::Custom(
            "ERR The command has no key arguments".into(),
        ));
    }
    ctx.out.array(keys.len());
    for index in keys {
        ctx.out.bulk(args.get(index + 2));
    }
    Ok(())
}

/// COMMAND HELP
pub fn command_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all commands.",
            "COUNT",
            "    Return the total number of commands in this server.",
            "LIST",
            "    Return a list of all commands in this server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full command.",
        ],
    );
    Ok(())
}

/// TIME
pub fn time(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    ctx.out.array(2);
    ctx.out.bulk_int((micros / 1_000_000) as i64);
    ctx.out.bulk_int((micros % 1_000_000) as i64);
    Ok(())
}

/// LASTSAVE: when the last checkpoint completed (the start time until one has).
pub fn lastsave(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let last = ctx.node.persistence.as_ref().map_or(0, |p| {
        p.tier()
            .checkpoints()
            .map_or(0, |c| c.status().last_unix.load(Relaxed))
    });
    ctx.out.int(last.max(ctx.node.started_unix) as i64);
    Ok(())
}

/// A command waiting for something off the store gate; the connection awaits it.
#[derive(Debug)]
pub enum Parked {
    /// CACHE.GET waiting for another client's fill.
    CacheGet(super::BlockedGet),
    /// SAVE waiting for its checkpoint.
    Save(tokio::sync::oneshot::Receiver<Result<(), String>>),
    /// A command (or its pieces) proxied to the nodes that own its keys.
    Forward(crate::cluster::Forward),
    /// A script or library change, answered once the other members took it (or did not
    /// answer in time).
    Shared {
        sent: tokio::task::JoinHandle<usize>,
        answer: Vec<u8>,
    },
    /// WAIT until replicas acknowledge.
    Wait(super::BlockedWait),
    /// A blocking pop (BLPOP, BLMOVE, …) waiting for an element.
    BlockedPop(super::BlockedPop),
    /// A command for a slot in a handoff's last moment (its new primary here waits for the
    /// previous one's fence): it runs again once the slot is served here.
    Hold,
}

fn tier<'a>(
    ctx: &Ctx<'a, '_>,
) -> Result<&'a std::sync::Arc<crate::persistence::Persistence>, CmdError> {
    ctx.node.persistence.as_ref().ok_or_else(|| {
        CmdError::Custom("ERR persistence is disabled on this node (--persistence no)".into())
    })
}

/// SAVE: replies once a checkpoint has written everything so far into the base image (and
/// the WAL is synced).
pub fn save(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let done = tier(ctx)?.save();
    ctx.conn.parked = Some(Parked::Save(done));
    Ok(())
}

/// BGSAVE [SCHEDULE]: starts a checkpoint and replies at once.
pub fn bgsave(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let schedule = args.len() == 2 && is(args.get(1), "SCHEDULE");
    if args.len() > 2 || (args.len() == 2 && !schedule) {
        return Err(CmdError::Syntax);
    }
    let persistence = tier(ctx)?;
    let running = persistence
        .tier()
        .checkpoints()
        .is_some_and(|c| c.status().running.load(Relaxed));
    drop(persistence.save());
    ctx.out.simple(if running {
        "Background saving scheduled"
    } else {
        "Background saving started"
    });
    Ok(())
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]
pub fn shutdown(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut save, mut nosave) = (false, false);
    for arg in args.iter().skip(1) {
        if is(arg, "ABORT") {
            return Err(CmdError::Custom("ERR No shutdown in progress.".into()));
        } else if is(arg, "SAVE") {
            save = true;
        } else if is(arg, "NOSAVE") {
            nosave = true;
        } else if !is(arg, "NOW") && !is(arg, "FORCE") {
            return Err(CmdError::Syntax);
        }
    }
    if save && nosave {
        return Err(CmdError::Syntax);
    }
    tracing::info!(
        client = ctx.conn.handle.id,
        "SHUTDOWN requested by a client"
    );
    ctx.node.begin_shutdown();
    // Like Redis: no reply; the connection closes.
    ctx.conn.close = true;
    Ok(())
}

/// INFO persistence: Redis's field names where they fit, then ringkv's own.
fn persistence_info(node: &Node) -> String {
    use std::fmt::Write;
    let loading = node.loading.load(Relaxed);
    let Some(p) = &node.persistence else {
        // Nothing is ever saved: every change since the start counts, as Redis counts
        // them with `save ""`.
        return format!(
            "loading:{}\r\nasync_loading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\naof_last_write_status:ok\r\npersistence:no\r\n",
            u8::from(loading),
            node.store.changes(),
            node.started_unix
        );
    };
    let tier = p.tier();
    let ok = |healthy: bool| if healthy { "ok" } else { "err" };
    let mut out = format!("loading:{}\r\nasync_loading:0\r\n", u8::from(loading));
    let progress = tier.recovery_progress();
    if loading {
        let total = progress.total_bytes.load(Relaxed);
        let loaded = progress.loaded_bytes.load(Relaxed).min(total);
        let started = progress.started_unix.load(Relaxed);
        let elapsed = (crate::node::unix_ms() / 1000)
            .saturating_sub(started)
            .max(1);
        let perc = if total > 0 {
            loaded as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let eta = ((total - loaded) * elapsed)
            .checked_div(loaded)
            .unwrap_or(1);
        let _ = write!(
            out,
            "loading_start_time:{started}\r\nloading_total_bytes:{total}\r\nloading_rdb_used_mem:{}\r\nloading_loaded_bytes:{loaded}\r\nloading_loaded_perc:{perc:.2}\r\nloading_eta_seconds:{eta}\r\n",
            node.store.used_memory()
        );
    }
    let manifest = tier.manifest();
    let checkpoints = tier.checkpoints();
    let (running, completed, failed, last_unix, last_ms, last_keys, done, total, cp_error) =
        checkpoints.map_or((false, 0, 0, 0, 0, 0, 0, 0, None), |c| {
            let s = c.status();
            (
                s.running.load(Relaxed),
                s.completed.load(Relaxed),
                s.failed.load(Relaxed),
                s.last_unix.load(Relaxed),
                s.last_ms.load(Relaxed),
                s.last_keys.load(Relaxed),
                s.shards_done.load(Relaxed),
                s.shards_total.load(Relaxed),
                s.last_error(),
            )
        });
    let wal = tier.wal_status();
    let read = |f: fn(&ringkv_store::wal::WalStatus) -> &std::sync::atomic::AtomicU64| {
        wal.map_or(0, |w| f(w).load(Relaxed))
    };
    let healthy = p.healthy();
    let last_lsn = p.last_lsn();
    let report = tier.recovery_report();
    let last_save = last_unix.max(node.started_unix);
    let _ = write!(
        out,
        "rdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{last_save}\r\nrdb_last_bgsave_status:{}\r\nrdb_last_bgsave_time_sec:{}\r\nrdb_saves:{completed}\r\n\
         aof_enabled:1\r\naof_rewrite_in_progress:{}\r\naof_rewrites:{completed}\r\naof_last_rewrite_time_sec:{}\r\naof_last_bgrewrite_status:{}\r\naof_last_write_status:{}\r\naof_current_size:{}\r\naof_base_size:{}\r\naof_buffer_length:{}\r\n",
        last_lsn.saturating_sub(manifest.checkpoint_lsn),
        u8::from(running),
        ok(cp_error.is_none()),
        if completed > 0 {
            (last_ms / 1000) as i64
        } else {
            -1
        },
        u8::from(running),
        if completed > 0 {
            (last_ms / 1000) as i64
        } else {
            -1
        },
        ok(cp_error.is_none()),
        ok(healthy),
        read(|w| &w.bytes_on_disk),
        tier.base_disk_bytes().unwrap_or(0),
        node.store.change_log().map_or(0, |log| log.memory_bytes()),
    );
    let _ = write!(
        out,
        "persistence:yes\r\npersistence_mode:{}\r\npersistence_dir:{}\r\nappendfsync:{}\r\npersistence_last_error:{}\r\n\
         wal_last_lsn:{last_lsn}\r\nwal_written_lsn:{}\r\nwal_durable_lsn:{}\r\nwal_segments:{}\r\nwal_bytes:{}\r\nwal_bytes_since_checkpoint:{}\r\nwal_writes:{}\r\nwal_fsyncs:{}\r\nwal_failures:{}\r\nwal_dropped_records:{}\r\n\
         checkpoint_lsn:{}\r\ncheckpoints:{}\r\ncheckpoints_failed:{failed}\r\ncheckpoint_in_progress:{}\r\ncheckpoint_progress_perc:{:.2}\r\ncheckpoint_last_ms:{last_ms}\r\ncheckpoint_last_keys:{last_keys}\r\ncheckpoint_pending_keys:{}\r\n\
         base_keys:{}\r\nbase_bytes:{}\r\nbase_bucket_bits:{}\r\nbase_disk_bytes:{}\r\n\
         loaded_keys:{}\r\nloaded_wal_records:{}\r\nloaded_expired_while_down:{}\r\nloading_time_ms:{}\r\nstore_fault_ins:{}\r\n",
        if p.store_mode() { "store" } else { "cache" },
        p.dir.display(),
        fsync_name(p.policy()),
        p.last_error()
            .unwrap_or_default()
            .replace(['\r', '\n'], " "),
        read(|w| &w.written_lsn),
        read(|w| &w.durable_lsn),
        read(|w| &w.segments),
        read(|w| &w.bytes_on_disk),
        tier.wal_bytes_since_checkpoint(),
        read(|w| &w.writes),
        read(|w| &w.fsyncs),
        read(|w| &w.failures),
        read(|w| &w.dropped_records),
        manifest.checkpoint_lsn,
        manifest.checkpoints,
        u8::from(running),
        if total > 0 {
            done as f64 * 100.0 / total as f64
        } else {
            0.0
        },
        ringkv_store::CheckpointSource::pending_changes(&*node.store),
        manifest.base_keys,
        manifest.base_bytes,
        manifest.layout.bits,
        tier.base_disk_bytes().unwrap_or(0),
        report.base_keys,
        report.replayed,
        report.expired_while_down,
        report.millis,
        p.fault_ins.load(Relaxed),
    );
    out
}
