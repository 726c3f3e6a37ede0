//! From a parsed command to its reply: name lookup, arity, authentication, MULTI
//! queueing, the `maxmemory` check and the store gate. Handlers live in `commands/`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::RwLockReadGuard;
use ringkv_protocol::{
    Args, COMMANDS, CommandFlags, CommandSpec, Protocol, ReplyWriter, lookup_subcommand,
};
use ringkv_store::Store;
use ringkv_store::slot::key_slot;

use crate::cluster::Verdict;
use crate::commands::{self, Parked};
use crate::connection::ConnState;
use crate::handler::{CmdError, Ctx, Handler};
use crate::node::Node;

/// One command the dispatcher knows: its table entry and its handler.
pub struct Route {
    /// The command table entry.
    pub spec: &'static CommandSpec,
    /// The handler.
    pub handler: Handler,
    /// Position in [`routes`] (recorded as a client's last command).
    pub index: usize,
}

struct Routes {
    by_name: HashMap<&'static [u8], usize, foldhash::fast::RandomState>,
    all: Vec<Route>,
}

fn routes() -> &'static Routes {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut all = Vec::new();
        let mut by_name = HashMap::default();
        let specs = COMMANDS
            .iter()
            .chain(COMMANDS.iter().flat_map(|c| c.subcommands));
        for spec in specs {
            let handler = commands::handler(spec.name).unwrap_or(commands::unimplemented);
            by_name.insert(spec.name.as_bytes(), all.len());
            all.push(Route {
                spec,
                handler,
                index: all.len(),
            });
        }
        Routes { by_name, all }
    })
}

/// The route of a command by exact table name (`get`, `config|get`).
pub fn route_by_name(name: &str) -> Option<&'static Route> {
    let routes = routes();
    routes.by_name.get(name.as_bytes()).map(|&i| &routes.all[i])
}

/// The name of the route at `index`, for CLIENT LIST's `cmd=`.
pub fn route_name(index: usize) -> &'static str {
    routes().all.get(index).map_or("NULL", |r| r.spec.name)
}

fn lookup(name: &[u8]) -> Option<&'static Route> {
    let mut lower = [0u8; 32];
    if name.len() > lower.len() {
        return None;
    }
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    let routes = routes();
    routes
        .by_name
        .get(&lower[..name.len()])
        .map(|&i| &routes.all[i])
}

/// The store gate as one batch holds it: shared normally, exclusive while an EXEC or a
/// multi-key atomic command runs.
pub struct Gate<'a> {
    store: &'a Store,
    shared: Option<RwLockReadGuard<'a, ()>>,
    exclusive: Option<ringkv_store::Exclusive<'a>>,
}

impl<'a> Gate<'a> {
    /// Takes the gate shared; `None` while a script runs past the busy threshold (it holds
    /// the gate, and this batch is answered -BUSY instead of waiting for it).
    pub fn acquire(node: &'a Node) -> Option<Self> {
        let store = &node.store;
        loop {
            if let Some(shared) = store.try_shared_for(std::time::Duration::from_millis(2)) {
                return Some(Gate {
                    store,
                    shared: Some(shared),
                    exclusive: None,
                });
            }
            if node.scripting.busy() {
                return None;
            }
        }
    }

    /// Runs `f` with the gate held exclusively. The gate stays exclusive for the rest of
    /// the batch: a pipeline of scripts or transactions then takes it once, not once per
    /// command (each switch may park this thread behind another connection's batch).
    fn run_exclusive<R>(&mut self, f: impl FnOnce() -> R) -> R {
        if self.exclusive.is_none() {
            self.shared = None;
            self.exclusive = Some(self.store.exclusive());
        }
        f()
    }
}

/// The route of a command (its subcommand's for containers), if it has one.
pub fn route_of(args: &Args<'_>) -> Option<&'static Route> {
    resolve(args).ok()
}

/// Resolves the command, and its subcommand for containers; `Err` is the reply.
fn resolve(args: &Args<'_>) -> Result<&'static Route, CmdError> {
    let name = args.get(0);
    let Some(route) = lookup(name) else {
        return Err(CmdError::UnknownCommand(describe_unknown(args)));
    };
    let spec = route.spec;
    if spec.subcommands.is_empty() || args.len() < 2 {
        if !spec.arity_ok(args.len()) {
            return Err(CmdError::WrongArity(spec.name));
        }
        return Ok(route);
    }
    let Some(sub) = lookup_subcommand(spec, args.get(1)) else {
        return Err(CmdError::UnknownSubcommand {
            sub: String::from_utf8_lossy(args.get(1)).into_owned(),
            container: spec.name.to_ascii_uppercase(),
        });
    };
    if !sub.arity_ok(args.len()) {
        return Err(CmdError::WrongArity(sub.name));
    }
    route_by_name(sub.name).ok_or(CmdError::WrongArity(sub.name))
}

/// Redis's "unknown command" text: the name and up to 128 bytes of arguments.
fn describe_unknown(args: &Args<'_>) -> String {
    let mut described = String::new();
    for arg in args.iter().skip(1) {
        if described.len() >= 128 {
            break;
        }
        let text = String::from_utf8_lossy(arg);
        let room = 128 - described.len();
        let cut: String = text.chars().take(room).collect();
        described.push('\'');
        described.push_str(&cut);
        described.push_str("' ");
    }
    let name: String = String::from_utf8_lossy(args.get(0))
        .chars()
        .take(128)
        .collect();
    format!("'{name}', with args beginning with: {described}")
}

fn is_transaction_control(name: &str) -> bool {
    matches!(
        name,
        "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
    )
}

/// Runs one command from a connection's batch and writes its reply.
pub fn execute(
    node: &Node,
    conn: &mut ConnState,
    gate: &mut Gate<'_>,
    out: &mut ReplyWriter<'_>,
    args: Args<'_>,
    now: u64,
) {
    conn.commands += 1;
    let route = match resolve(&args) {
        Ok(route) => route,
        Err(error) => {
            conn.flag_transaction_error();
            return write_error(node, out, &error);
        }
    };
    let flags = route.spec.flags;
    conn.last_command = route.index;
    if !conn.authenticated && !flags.contains(CommandFlags::NO_AUTH) {
        conn.flag_transaction_error();
        return write_error(node, out, &CmdError::NoAuth);
    }
    if !flags.contains(CommandFlags::LOADING) && node.loading.load(Relaxed) {
        conn.flag_transaction_error();
        return write_error(node, out, &CmdError::Loading);
    }
    if conn.subscriptions.is_some()
        && conn.protocol == Protocol::Resp2
        && !allowed_while_subscribed(route.spec.name)
    {
        conn.flag_transaction_error();
        return write_error(
            node,
            out,
            &CmdError::Custom(format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                route.spec.name
            )),
        );
    }
    if let Some(cluster) = &node.cluster {
        let verdict = cluster.route(conn, route.spec, &args);
        if !matches!(verdict, Verdict::Hold)
            && let Some(since) = conn.held_since.take()
        {
            cluster.holds.note(since.elapsed());
        }
        match verdict {
            Verdict::Local => {}
            Verdict::Refuse(error) => {
                conn.flag_transaction_error();
                return write_error(node, out, &error);
            }
            Verdict::Forward(forward) => {
                conn.parked = Some(Parked::Forward(forward));
                return;
            }
            Verdict::Hold => {
                conn.held_since.get_or_insert_with(std::time::Instant::now);
                conn.parked = Some(Parked::Hold);
                return;
            }
        }
    }
    if conn.in_multi() && !is_transaction_control(route.spec.name) {
        if flags.contains(CommandFlags::NO_MULTI) {
            conn.flag_transaction_error();
            return write_error(
                node,
                out,
                &CmdError::Custom("ERR Command not allowed inside a transaction".into()),
            );
        }
        if flags.contains(CommandFlags::DENYOOM) && node.store.ensure_memory(now).is_err() {
            conn.flag_transaction_error();
            return write_error(node, out, &CmdError::OutOfMemory);
        }
        conn.queue(&args);
        out.simple("QUEUED");
        return;
    }
    let exclusive = flags.contains(CommandFlags::EXCLUSIVE);
    let result = if exclusive {
        // Routed under the shared gate, which is let go before the exclusive one is taken:
        // a handoff fence may pass in between, so the route is checked again.
        gate.run_exclusive(|| {
            still_local(node, conn, route, &args)?;
            run(node, conn, out, route, args, now)
        })
    } else {
        run(node, conn, out, route, args, now)
    };
    if let Err(error) = result {
        write_error(node, out, &error);
    }
    if !conn.ready_keys.is_empty() {
        let ready = std::mem::take(&mut conn.ready_keys);
        // A served BLMOVE pops and pushes: alone, the two are one group in the change log,
        // which recovery and replicas apply whole (a crash between them would lose the
        // element).
        let served = if node.blocking.moves_on(&ready) {
            gate.run_exclusive(|| node.blocking.serve(ready))
        } else {
            node.blocking.serve(ready)
        };
        for event in served {
            let (db, key) = node.databases.logical(&event.key);
            node.notifier
                .emit(&node.pubsub, event.class, event.name, db, key);
        }
    }
}

/// Runs a resolved command: the memory check, then the handler. EXEC calls this for each
/// queued command while it holds the gate exclusively.
pub fn run(
    node: &Node,
    conn: &mut ConnState,
    out: &mut ReplyWriter<'_>,
    route: &Route,
    args: Args<'_>,
    now: u64,
) -> Result<(), CmdError> {
    // Keys of another logical database than 0 (or that would look like one) are stored
    // under their physical names.
    let renamed = node.databases.rename_keys(conn.db, route.spec, &args);
    let args = renamed.as_ref().map_or(args, |owned| owned.args());
    let write = route.spec.flags.contains(CommandFlags::WRITE);
    let replicated = write.then(|| node.replication.get()).flatten();
    let slots = || route.spec.keys.of(&args).map(|i| key_slot(args.get(i)));
    if write {
        if let Some(persistence) = &node.persistence
            && persistence.refuses_writes()
        {
            let cause = persistence
                .last_error()
                .unwrap_or_else(|| "unknown error".to_string());
            return Err(CmdError::Misconf(cause));
        }
        conn.wrote = true;
    }
    if let Some(replication) = replicated {
        let (wanted, max_lag) = {
            let config = node.config.read();
            (config.min_replicas_to_write, config.min_replicas_max_lag)
        };
        if wanted > 0
            && !replication.enough_good_replicas(
                wanted as usize,
                std::time::Duration::from_secs(max_lag),
                slots(),
            )
        {
            return Err(CmdError::Custom(
                "NOREPLICAS Not enough good replicas to write.".into(),
            ));
        }
    }
    if route.spec.flags.contains(CommandFlags::DENYOOM) && !conn.script_allows_oom {
        node.store
            .ensure_memory(now)
            .map_err(|_| CmdError::OutOfMemory)?;
    }
    let mut ctx = Ctx {
        node,
        conn,
        out,
        now,
    };
    let reply_start = ctx.out.len();
    crate::tracking::Tracking::enter_command();
    let result = (route.handler)(&mut ctx, args);
    // Keys the command modified are invalidated for the clients that may cache them; the
    // writer's own messages follow its reply.
    node.tracking
        .leave_command(node, ctx.conn.handle.id, ctx.out);
    remember_reads(&mut ctx, route, &args, result.is_ok());
    // Keyspace events a command caused for this very connection: a key it created (told
    // by the store as it happened) goes ahead of its reply, its own events after it, as
    // Redis 7.0 sends them (commands that notify first took theirs already). A script's
    // calls reply into the script, so nothing is taken then.
    let mark = ctx.conn.own_events_mark.take();
    if let Some(subscriptions) = &ctx.conn.subscriptions
        && !ctx.conn.in_script
    {
        let before = mark.unwrap_or(usize::MAX);
        subscriptions
            .mailbox
            .drain_around(ctx.out, reply_start, before);
    }
    if write && node.blocking.waiting() > 0 {
        let keys = route.spec.keys.of(&args).map(|i| args.get(i).to_vec());
        ctx.conn.ready_keys.extend(keys);
    }
    if let Some(replication) = replicated {
        ctx.conn
            .note_replicated_write(replication.last_lsn(), slots());
    }
    result
}

/// A tracking client's read: its keys are remembered, so a change to them reaches it
/// (OPTIN: only after CLIENT CACHING YES; OPTOUT: not after CLIENT CACHING NO). The
/// CACHING answer lasts one command.
fn remember_reads(ctx: &mut Ctx<'_, '_>, route: &Route, args: &Args<'_>, succeeded: bool) {
    let Some(mode) = ctx.conn.tracking else {
        return;
    };
    if ctx.conn.in_script {
        return;
    }
    // As Redis: CLIENT commands (CACHING itself, TRACKINGINFO …) leave the answer for the
    // next command.
    let caching = if route.spec.name.starts_with("client|") {
        ctx.conn.caching_next
    } else {
        ctx.conn.caching_next.take()
    };
    let wanted = match mode {
        crate::connection::TrackingMode::Bcast => false,
        crate::connection::TrackingMode::Default => true,
        crate::connection::TrackingMode::OptIn => caching == Some(true),
        crate::connection::TrackingMode::OptOut => caching != Some(false),
    };
    if wanted && succeeded && route.spec.flags.contains(CommandFlags::READONLY) {
        let keys = route.spec.keys.of(args).map(|i| args.get(i).to_vec());
        ctx.node
            .tracking
            .remember(ctx.node, ctx.conn.handle.id, keys);
    }
}

/// Answers a command while a script is busy, as Redis does: SCRIPT KILL asks it to stop,
/// SHUTDOWN NOSAVE ends the process at once (the script's writes never commit), anything
/// else is -BUSY.
pub fn answer_busy(node: &Node, out: &mut ReplyWriter<'_>, args: Args<'_>) {
    let route = resolve(&args).ok();
    let result = match route.map(|r| r.spec.name) {
        Some("script|kill" | "function|kill") => node.scripting.kill(),
        Some("shutdown") if args.len() == 2 && args.get(1).eq_ignore_ascii_case(b"nosave") => {
            tracing::warn!("SHUTDOWN NOSAVE while a script is busy: exiting now");
            std::process::exit(0);
        }
        _ => Err(CmdError::Custom(
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
                .into(),
        )),
    };
    match result {
        Ok(()) => out.ok(),
        Err(error) => write_error(node, out, &error),
    }
}

/// Runs a command a script called (`redis.call`): Redis's script checks, then [`run`].
pub fn run_from_script(
    node: &Node,
    conn: &mut ConnState,
    out: &mut ReplyWriter<'_>,
    args: Args<'_>,
    now: u64,
    flags: crate::scripting::ScriptFlags,
) -> Result<(), CmdError> {
    let route = resolve(&args).map_err(|error| match error {
        CmdError::WrongArity(_) => {
            CmdError::Custom("ERR Wrong number of args calling Redis command from script".into())
        }
        _ => CmdError::Custom("ERR Unknown Redis command called from script".into()),
    })?;
    let spec_flags = route.spec.flags;
    if spec_flags.contains(CommandFlags::NOSCRIPT) {
        return Err(CmdError::Custom(
            "ERR This Redis command is not allowed from script".into(),
        ));
    }
    if flags.no_writes && spec_flags.contains(CommandFlags::WRITE) {
        return Err(CmdError::Custom(
            "ERR Write commands are not allowed from read-only scripts.".into(),
        ));
    }
    if spec_flags.contains(CommandFlags::WRITE) {
        node.scripting.note_write();
    }
    if let Some(cluster) = &node.cluster
        && !matches!(cluster.route(conn, route.spec, &args), Verdict::Local)
    {
        return Err(CmdError::Custom(
            "ERR Script attempted to access a non local key in a cluster node".into(),
        ));
    }
    conn.last_command = route.index;
    run(node, conn, out, route, args, now)
}

/// Runs a command queued by MULTI (already resolved once; resolved again because its
/// arguments now live in the transaction's own buffer).
pub fn run_queued(
    node: &Node,
    conn: &mut ConnState,
    out: &mut ReplyWriter<'_>,
    args: Args<'_>,
    now: u64,
) {
    let result = resolve(&args).and_then(|route| run(node, conn, out, route, args, now));
    if let Err(error) = result {
        write_error(node, out, &error);
    }
}

/// `Ok` when the command still runs here by the current view (called under the exclusive
/// gate, so no handoff fence passes until it is done); otherwise the error to answer:
/// the redirect, or `-TRYAGAIN` where it would wait or be proxied.
pub fn still_local(
    node: &Node,
    conn: &ConnState,
    route: &Route,
    args: &Args<'_>,
) -> Result<(), CmdError> {
    let Some(cluster) = &node.cluster else {
        return Ok(());
    };
    match cluster.route(conn, route.spec, args) {
        Verdict::Local => Ok(()),
        Verdict::Refuse(error) => Err(error),
        Verdict::Hold | Verdict::Forward(_) => Err(CmdError::Custom(
            "TRYAGAIN The slot table changed while the command waited; retry".into(),
        )),
    }
}

/// RESP2's subscribed mode admits only these, as Redis does (RESP3 has no such mode).
fn allowed_while_subscribed(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "punsubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

/// The keys a command names (for faulting evicted values back in, in store mode).
pub fn command_keys<'a>(args: &Args<'a>) -> Vec<&'a [u8]> {
    match resolve(args) {
        Ok(route) if !route.spec.flags.contains(CommandFlags::CHANNELS) => {
            route.spec.keys.of(args).map(|i| args.get(i)).collect()
        }
        _ => Vec::new(),
    }
}

/// Writes an error reply and counts it.
pub fn write_error(node: &Node, out: &mut ReplyWriter<'_>, error: &CmdError) {
    node.stats.error_replies.fetch_add(1, Relaxed);
    out.error(&error.to_string());
}
