//! `ringkv`: the admin CLI. `ringkv bench` is a RESP load generator in the spirit of
//! redis-benchmark and memtier_benchmark.

mod bench;
mod cluster;
mod workload;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::workload::{KeyChoice, Test};

#[derive(Debug, Parser)]
#[command(
    name = "ringkv",
    version,
    about = "Administer and measure ringkv nodes."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a node (or any Redis server) and report throughput and latency.
    Bench(BenchArgs),
    /// Inspect a cluster through any member, or start a local one.
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct ClusterArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help, global = true)]
    help: Option<bool>,
    /// Any member's host.
    #[arg(short = 'h', long, default_value = "127.0.0.1", global = true)]
    host: String,
    /// Any member's client port.
    #[arg(short = 'p', long, default_value_t = 6379, global = true)]
    port: u16,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: ClusterAction,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// State, members, slots and keys per member, and the slot balance.
    Status,
    /// Members as CLUSTER NODES lists them.
    Nodes,
    /// Slot ranges and their owners.
    Slots,
    /// The slot of a key and the members that own it.
    Locate {
        /// The key.
        key: String,
    },
    /// Hand every slot a member serves to the members taking them over, then stop it.
    Drain {
        /// The member: its client address (HOST:PORT) or node id.
        node: String,
    },
    /// Wait until the slot table's owners serve every slot (after a join or a drain),
    /// showing the handoffs' progress.
    Rebalance {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Start a local cluster of N members on consecutive ports, until Ctrl-C.
    Up {
        /// How many members.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// The first member's client port; bus ports are client ports + 10000.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// More ringkv-server flags for every member (after `--`).
        #[arg(last = true)]
        server_args: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct BenchArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Server host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 6379)]
    port: u16,
    /// Parallel connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    clients: usize,
    /// Requests pipelined per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Requests per test.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    requests: u64,
    /// Run each test for this many seconds instead of -n.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of unmeasured load before each test.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Value size in bytes.
    #[arg(short = 'd', long, default_value_t = 3)]
    datasize: usize,
    /// Key space size (0 = one key).
    #[arg(short = 'r', long, default_value_t = 0)]
    keyspace: u64,
    /// Zipf exponent θ for key choice (uniform when absent).
    #[arg(long)]
    zipf: Option<f64>,
    /// Mixed GET:SET ratio such as 9:1 (replaces -t).
    #[arg(long)]
    ratio: Option<String>,
    /// Tests: ping,get,set,incr,mget,mset,hset,hget,setwait (SET then WAIT 1 0).
    #[arg(short = 't', long, default_value = "ping,set,get,incr,mset,hset")]
    tests: String,
    /// GET, and SET the value on a miss, as a read-through cache client does; reports the hit ratio.
    #[arg(long)]
    read_through: bool,
    /// Write every key of -r once, in order (with -t hset and --hash-fields: whole hashes).
    #[arg(long)]
    fill: bool,
    /// Fields per hash for --fill -t hset.
    #[arg(long, default_value_t = 0)]
    hash_fields: u64,
    /// Prefix of every key name: a hash tag such as {a} puts every key in one cluster slot.
    #[arg(long, default_value = "")]
    key_tag: String,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn parse_ratio(text: &str) -> Result<f64> {
    let Some((reads, writes)) = text.split_once(':') else {
        bail!("--ratio takes READS:WRITES, such as 9:1");
    };
    let (reads, writes): (f64, f64) = (reads.parse()?, writes.parse()?);
    if reads < 0.0 || writes < 0.0 || reads + writes == 0.0 {
        bail!("--ratio needs non-negative parts that are not both zero");
    }
    Ok(reads / (reads + writes))
}

fn bench(args: BenchArgs) -> Result<()> {
    if args.clients == 0 || args.pipeline == 0 {
        bail!("-c and -P must be at least 1");
    }
    let mut tests = Test::parse_list(&args.tests).map_err(anyhow::Error::msg)?;
    let read_share = args.ratio.as_deref().map(parse_ratio).transpose()?;
    if read_share.is_some() || args.read_through {
        tests = vec![Test::Get];
    }
    let mut keys = KeyChoice::new(args.keyspace, args.zipf).map_err(anyhow::Error::msg)?;
    let mut requests = args.requests;
    let mut warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    if args.fill {
        if args.keyspace == 0 {
            bail!("--fill needs -r KEYS");
        }
        keys = KeyChoice::Sequential(args.keyspace);
        requests = args.keyspace;
        warmup = Duration::ZERO;
    }
    let plan = bench::Plan {
        addr: format!("{}:{}", args.host, args.port),
        clients: args.clients,
        pipeline: args.pipeline,
        requests,
        duration: if args.fill {
            None
        } else {
            args.duration.map(Duration::from_secs_f64)
        },
        warmup,
        value: vec![b'x'; args.datasize],
        keys,
        hash_fields: if args.fill { args.hash_fields } else { 0 },
        key_tag: args.key_tag.clone(),
        read_through: args.read_through,
        read_share,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let outcomes = runtime.block_on(bench::run(plan, &tests))?;
    let mut stdout = std::io::stdout().lock();
    use std::io::Write;
    if args.json {
        let all: Vec<_> = outcomes.iter().map(bench::Outcome::to_json).collect();
        writeln!(stdout, "{}", serde_json::to_string_pretty(&all)?)?;
    } else {
        for outcome in &outcomes {
            writeln!(stdout, "{}", outcome.to_line())?;
        }
    }
    let failed = outcomes
        .iter()
        .any(|o| o.connection_errors > 0 && o.requests == 0);
    if failed {
        bail!("no request was answered");
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench(args),
        Command::Cluster(args) => {
            let addr = format!("{}:{}", args.host, args.port);
            match args.action {
                ClusterAction::Status => cluster::status(&addr, args.json),
                ClusterAction::Nodes => cluster::show_nodes(&addr, args.json),
                ClusterAction::Slots => cluster::show_slots(&addr, args.json),
                ClusterAction::Locate { key } => cluster::locate(&addr, &key, args.json),
                ClusterAction::Drain { node } => cluster::drain(&addr, &node, args.json),
                ClusterAction::Rebalance { timeout } => {
                    cluster::rebalance(&addr, Duration::from_secs(timeout), args.json)
                }
                ClusterAction::Up {
                    nodes,
                    base_port,
                    server_args,
                } => cluster::up(nodes, base_port, &server_args, args.json),
            }
        }
    }
}
