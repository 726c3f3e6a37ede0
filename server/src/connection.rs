//! One task per connection: read into a buffer, parse every complete command, execute
//! them under the store gate, encode all replies, one write. Replies are flushed in chunks
//! when a batch produces a lot, so a client that stops reading holds at most one chunk and
//! stalls only itself. A protocol error answers `-ERR Protocol error: …` and closes this
//! connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ringkv_protocol::{Args, Batch, Protocol, ReplyWriter, RequestParser};
use ringkv_store::WatchTicket;
use ringkv_store::wal::FsyncPolicy;

use crate::persistence::Persistence;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::commands::{self, Parked};
use crate::dispatch::{self, Gate};
use crate::node::{Attention, ClientHandle, Node, unix_ms};

/// Replies are written out once a batch has produced this much.
const REPLY_CHUNK: usize = 256 * 1024;
/// Read buffer size to start with.
const READ_CHUNK: usize = 16 * 1024;

/// Per-connection state that commands read and change.
#[derive(Debug)]
pub struct ConnState {
    /// The registry entry (CLIENT LIST/KILL).
    pub handle: Arc<ClientHandle>,
    /// RESP2 or RESP3.
    pub protocol: Protocol,
    /// The logical database SELECT chose.
    pub db: u8,
    /// True once AUTH succeeded or when no password is set.
    pub authenticated: bool,
    /// Queued MULTI commands, re-encoded as RESP, and how many.
    multi: Option<(Vec<u8>, usize)>,
    /// A queued command was refused: EXEC must abort.
    multi_error: bool,
    /// WATCHed keys.
    pub watches: Vec<WatchTicket>,
    /// Close after the replies are written (QUIT, SHUTDOWN).
    pub close: bool,
    /// Commands run (flushed into the node's counter per batch).
    pub commands: u64,
    /// Last command's route index.
    pub last_command: usize,
    /// A command parked until something off the store gate happens (a CACHE.GET waiting
    /// for a fill, a SAVE waiting for the disk).
    pub parked: Option<Parked>,
    /// A write command ran in this batch (`appendfsync always` waits before replying).
    pub wrote: bool,
    /// Set while EXEC runs: commands must answer at once, never park.
    pub no_block: bool,
    /// Set while a script flagged `allow-oom` runs: its writes skip the memory check.
    pub script_allows_oom: bool,
    /// Set while a script runs on this connection's behalf.
    pub in_script: bool,
    /// A proxying node's connection: never proxied again, so a stale view cannot
    /// bounce a command between nodes.
    pub forwarded: bool,
    /// READONLY: reads of slots this member holds a replica of are served here.
    pub readonly: bool,
    /// Its pub/sub subscriptions, while it has any.
    pub subscriptions: Option<Box<crate::pubsub::Subscriptions>>,
    /// CLIENT TRACKING's mode, while on.
    pub tracking: Option<TrackingMode>,
    /// CLIENT CACHING's answer, for the next command only.
    pub caching_next: Option<bool>,
    /// How much of its mailbox the running command's own first event found queued: what
    /// was queued before (a `new` key event) goes ahead of the reply, the command's own
    /// events after it, unless the command put them first (`Ctx::events_first`).
    pub own_events_mark: Option<usize>,
    /// Since when the current command waits for its slot's handoff fence.
    pub held_since: Option<std::time::Instant>,
    /// Keys this connection's command wrote while clients were blocked: their waiters are
    /// served once the command (or its EXEC) is done.
    pub ready_keys: Vec<Vec<u8>>,
    /// The change log's last LSN after this connection's last write (WAIT covers it).
    repl_lsn: u64,
    /// The slots this connection wrote to (WAIT counts their replicas); boxed on the
    /// first replicated write only.
    repl_slots: Option<Box<ringkv_store::slot_set::SlotSet>>,
    /// Writes this connection made through this member on others (proxy routing), one
    /// entry per owner: WAIT covers them too.
    remote_writes: Vec<crate::commands::RemoteWrite>,
}

impl ConnState {
    /// A new connection's state.
    pub fn new(handle: Arc<ClientHandle>, needs_auth: bool) -> Self {
        ConnState {
            handle,
            protocol: Protocol::Resp2,
            db: 0,
            authenticated: !needs_auth,
            multi: None,
            multi_error: false,
            watches: Vec::new(),
            close: false,
            commands: 0,
            last_command: usize::MAX,
            parked: None,
            wrote: false,
            no_block: false,
            script_allows_oom: false,
            in_script: false,
            forwarded: false,
            readonly: false,
            subscriptions: None,
            tracking: None,
            caching_next: None,
            own_events_mark: None,
            held_since: None,
            ready_keys: Vec::new(),
            repl_lsn: 0,
            repl_slots: None,
            remote_writes: Vec::new(),
        }
    }

    /// Notes a write that replication carries: up to `lsn`, in these slots.
    pub fn note_replicated_write(&mut self, lsn: u64, slots: impl Iterator<Item = u16>) {
        self.repl_lsn = self.repl_lsn.max(lsn);
        let set = self.repl_slots.get_or_insert_with(Default::default);
        for slot in slots {
            set.insert(slot);
        }
    }

    /// Notes writes forwarded to other members (merged per owner).
    pub fn note_remote_writes(&mut self, writes: Vec<crate::commands::RemoteWrite>) {
        for write in writes {
            match self.remote_writes.iter_mut().find(|w| w.addr == write.addr) {
                Some(known) => {
                    known.lsn = known.lsn.max(write.lsn);
                    known.slots = known.slots.union(&write.slots);
                }
                None => self.remote_writes.push(write),
            }
        }
    }

    /// The writes made through this member on others.
    pub fn remote_writes(&self) -> &[crate::commands::RemoteWrite] {
        &self.remote_writes
    }

    /// What WAIT covers: the LSN of the last write and the slots written.
    pub fn replicated_write(&self) -> (u64, ringkv_store::slot_set::SlotSet) {
        (
            self.repl_lsn,
            self.repl_slots.as_deref().cloned().unwrap_or_default(),
        )
    }

    /// True between MULTI and EXEC/DISCARD.
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Enters MULTI.
    pub fn begin_multi(&mut self) {
        self.multi = Some((Vec::new(), 0));
        self.multi_error = false;
        self.handle.multi.store(1, Relaxed);
    }

    /// Leaves MULTI, returning the queued commands (as RESP) and whether one was refused.
    pub fn take_multi(&mut self) -> Option<((Vec<u8>, usize), bool)> {
        self.handle.multi.store(0, Relaxed);
        let queued = self.multi.take()?;
        Some((queued, std::mem::replace(&mut self.multi_error, false)))
    }

    /// Marks the open transaction as failed (a queued command was refused).
    pub fn flag_transaction_error(&mut self) {
        if self.multi.is_some() {
            self.multi_error = true;
        }
    }

    /// Queues a command for EXEC.
    pub fn queue(&mut self, args: &Args<'_>) {
        if let Some((buf, count)) = &mut self.multi {
            let mut w = ReplyWriter::new(buf, Protocol::Resp2);
            w.array(args.len());
            for arg in args.iter() {
                w.bulk(arg);
            }
            *count += 1;
            self.handle.multi.store(*count as u64 + 1, Relaxed);
        }
    }

    /// Drops every WATCH.
    pub fn unwatch_all(&mut self, node: &Node) {
        for ticket in self.watches.drain(..) {
            node.store.unwatch(ticket);
        }
    }
}

/// Which keys a tracking connection hears of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingMode {
    /// The keys it read.
    Default,
    /// Every key under its prefixes.
    Bcast,
    /// The keys it read right after CLIENT CACHING YES.
    OptIn,
    /// The keys it read, but right after CLIENT CACHING NO.
    OptOut,
}

/// How many times a woken subscriber lets publishers run before it writes (see `run`).
const SUBSCRIBER_YIELDS: usize = 8;

/// Serves one client until it leaves, misbehaves, is killed or the node shuts down.
pub async fn serve(node: Arc<Node>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let maxclients = node.config.read().maxclients;
    let Some(handle) = node.clients.register(peer, local, maxclients) else {
        node.stats.rejected_connections.fetch_add(1, Relaxed);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    };
    node.stats.connections_received.fetch_add(1, Relaxed);
    tracing::debug!(client = handle.id, %peer, "client connected");
    let needs_auth = !node.config.read().requirepass.is_empty();
    let mut conn = ConnState::new(handle.clone(), needs_auth);
    let reason = run(&node, &mut stream, &mut conn).await;
    conn.unwatch_all(&node);
    if let Some(subscriptions) = conn.subscriptions.take() {
        subscriptions.leave(&node.pubsub);
    }
    if conn.tracking.is_some() {
        node.tracking.disable(handle.id);
    }
    handle.drop_mailbox();
    node.clients.unregister(handle.id);
    tracing::debug!(client = handle.id, %peer, reason, "client disconnected");
}

async fn run(node: &Node, stream: &mut TcpStream, conn: &mut ConnState) -> &'static str {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut parser = RequestParser::new(node.config.read().limits());
    // When this connection last ran commands (unix ms).
    let mut last_active_ms = 0u64;
    let mut batch = Batch::new();
    let handle = conn.handle.clone();
    loop {
        let (idle_timeout, query_limit, limits) = {
            let config = node.config.read();
            (
                config.timeout,
                config.client_query_buffer_limit,
                config.limits(),
            )
        };
        parser.set_limits(limits);
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        // A subscriber waits for messages as well as for commands, without idle timeout
        // (as in Redis).
        let idle_timeout = if conn.subscriptions.is_some() {
            0
        } else {
            idle_timeout
        };
        let read = async {
            if idle_timeout == 0 {
                Some(stream.read_buf(&mut input).await)
            } else {
                tokio::time::timeout(
                    Duration::from_secs(idle_timeout),
                    stream.read_buf(&mut input),
                )
                .await
                .ok()
            }
        };
        let read = tokio::select! {
            read = read => Some(read),
            attention = handle.attention() => match attention {
                Attention::Woken => None,
                closing => return closing.reason(),
            },
        };
        let Some(read) = read else {
            // Let the publishers that are ready run first, while they keep adding: their
            // messages then leave in one write, as Redis writes each subscriber once per
            // event-loop turn.
            let mailbox = handle.existing_mailbox();
            if let Some(mailbox) = &mailbox {
                for _ in 0..SUBSCRIBER_YIELDS {
                    let queued = mailbox.queued();
                    tokio::task::yield_now().await;
                    if mailbox.queued() == queued {
                        break;
                    }
                }
            }
            if let Some(mailbox) = &mailbox {
                mailbox.drain_into(&mut output);
            }
            if let Some(subscriptions) = conn.subscriptions.as_mut() {
                subscriptions.settle_lost(&mut ReplyWriter::new(&mut output, conn.protocol));
                if subscriptions.is_empty() {
                    conn.subscriptions = None;
                }
            }
            if write_out(node, &handle, stream, &mut output).await.is_err() {
                return "write error";
            }
            continue;
        };
        match read {
            None => return "idle timeout",
            Some(Ok(0)) => return "closed by peer",
            Some(Ok(n)) => {
                node.stats.net_input_bytes.fetch_add(n as u64, Relaxed);
            }
            Some(Err(_)) => return "read error",
        }
        let parsed = parser.parse(&input, &mut batch);
        if let Some(persistence) = node.persistence.as_ref().filter(|p| p.store_mode()) {
            fault_in(node, persistence, &input, &batch).await;
        }
        let mut next = 0;
        while next < batch.len() {
            let now = unix_ms();
            {
                let mut out = ReplyWriter::new(&mut output, conn.protocol);
                match Gate::acquire(node) {
                    Some(mut gate) => {
                        while next < batch.len() && out.len() < REPLY_CHUNK && !conn.close {
                            let args = batch.command(&input, next);
                            next += 1;
                            dispatch::execute(node, conn, &mut gate, &mut out, args, now);
                            if conn.parked.is_some() {
                                break;
                            }
                        }
                    }
                    None => {
                        // A script holds the gate past the busy threshold.
                        while next < batch.len() && out.len() < REPLY_CHUNK {
                            dispatch::answer_busy(node, &mut out, batch.command(&input, next));
                            next += 1;
                        }
                    }
                }
            }
            let invalidations = crate::tracking::take_awaited();
            // Before the durable wait: under `always` the other ready connections append
            // their records first, and one sync covers them all (Redis's one fsync per
            // event-loop turn), instead of a sync for each connection's few.
            if crate::reply_batching::should_wait_for_others(&mut last_active_ms, now) {
                tokio::task::yield_now().await;
            }
            if !durable(node, conn).await {
                // The writes are not on disk: no reply must claim they are.
                return "persistence failed";
            }
            crate::tracking::invalidations_out(&handle, invalidations).await;
            if write_out(node, &handle, stream, &mut output).await.is_err() {
                return "write error";
            }
            if matches!(conn.parked, Some(Parked::Hold)) {
                conn.parked = None;
                // Its slot is in a handoff's last moment: run it again shortly (the gate
                // is released meanwhile; the route bounds the wait).
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                    closing = handle.closing() => return closing.reason(),
                }
                next -= 1;
                conn.commands -= 1;
            }
            if let Some(parked) = conn.parked.take() {
                // A client blocked on a key may wait forever: one that leaves must not be
                // served an element it would never read.
                let watch_peer = matches!(parked, Parked::BlockedPop(_));
                // CLIENT LIST shows it blocked, in this command, while it waits.
                handle.last_command.store(conn.last_command, Relaxed);
                handle.blocked.store(watch_peer, Relaxed);
                // The gate is released: a parked command holds no lock while it waits.
                let finish = finish_parked(node, parked, conn.protocol);
                tokio::pin!(finish);
                let (finished, remote_writes) = loop {
                    tokio::select! {
                        finished = &mut finish => break finished,
                        _ = peer_closed(stream), if watch_peer => return "closed by peer",
                        attention = handle.attention() => match attention {
                            // Pushes (invalidations, RESP3 messages) reach a blocked
                            // client while it waits, as in Redis.
                            Attention::Woken => {
                                if let Some(mailbox) = handle.existing_mailbox() {
                                    mailbox.drain_into(&mut output);
                                }
                                if write_out(node, &handle, stream, &mut output).await.is_err() {
                                    return "write error";
                                }
                            }
                            closing => return closing.reason(),
                        },
                    }
                };
                handle.blocked.store(false, Relaxed);
                conn.note_remote_writes(remote_writes);
                output.extend_from_slice(&finished);
                // A served pop wrote for this client: under `always` its reply waits for
                // the sync, as the pusher's does (Redis writes it after the fsync too).
                conn.wrote |= watch_peer;
                if !durable(node, conn).await {
                    return "persistence failed";
                }
                if write_out(node, &handle, stream, &mut output).await.is_err() {
                    return "write error";
                }
            }
            if conn.close {
                return "quit";
            }
        }
        node.stats
            .commands_processed
            .fetch_add(std::mem::take(&mut conn.commands), Relaxed);
        handle.last_interaction_ms.store(node.uptime_ms(), Relaxed);
        handle.last_command.store(conn.last_command, Relaxed);
        batch.clear();
        match parsed {
            Ok(parsed) => {
                input.advance(parsed.consumed);
                if parsed.need > 0 {
                    // Reserve what a half-arrived value still needs, but never trust a
                    // declared length for more than a bounded step.
                    input.reserve(parsed.need.min(16 << 20));
                }
            }
            Err(error) => {
                node.stats.protocol_errors.fetch_add(1, Relaxed);
                ReplyWriter::new(&mut output, conn.protocol)
                    .error(&format!("ERR Protocol error: {error}"));
                let _ = write_out(node, &handle, stream, &mut output).await;
                return "protocol error";
            }
        }
        if input.len() as u64 > query_limit {
            tracing::warn!(
                client = handle.id,
                "closing client that reached max query buffer length"
            );
            return "query buffer limit";
        }
    }
}

/// Resolves when the peer closed its end; pends forever once it sent more (pipelined
/// commands wait in the socket until the parked one is answered).
async fn peer_closed(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

async fn write_out(
    node: &Node,
    handle: &ClientHandle,
    stream: &mut TcpStream,
    output: &mut Vec<u8>,
) -> std::io::Result<()> {
    if output.is_empty() {
        return Ok(());
    }
    // A client that stopped reading must not hold its connection open past a CLIENT KILL
    // or its output limit.
    tokio::select! {
        written = stream.write_all(output) => written?,
        closing = handle.closing() => return Err(std::io::Error::other(closing.reason())),
    }
    node.stats
        .net_output_bytes
        .fetch_add(output.len() as u64, Relaxed);
    output.clear();
    if let Some(mailbox) = handle.existing_mailbox() {
        mailbox.wrote_output();
    }
    // Do not keep a huge buffer alive after one large reply.
    if output.capacity() > 4 * REPLY_CHUNK {
        output.shrink_to(READ_CHUNK);
    }
    Ok(())
}

/// Under `appendfsync always`, waits until this batch's writes are durable (one sync
/// covers every connection waiting meanwhile). False when writing them failed.
async fn durable(node: &Node, conn: &mut ConnState) -> bool {
    if !std::mem::take(&mut conn.wrote) {
        return true;
    }
    let Some(persistence) = node
        .persistence
        .as_ref()
        .filter(|p| p.policy() == FsyncPolicy::Always)
    else {
        return true;
    };
    // Every record this batch appended has an LSN at or below the log's last one now.
    persistence.wait_durable(persistence.last_lsn()).await
}

/// Finishes a parked command and returns its encoded reply.
/// Finishes a parked command: its encoded reply, and the writes it made on other members.
async fn finish_parked(
    node: &Node,
    parked: Parked,
    protocol: Protocol,
) -> (Vec<u8>, Vec<crate::commands::RemoteWrite>) {
    if let Parked::Forward(forward) = parked {
        return match &node.cluster {
            Some(cluster) => cluster.finish(forward, protocol).await,
            None => (Vec::new(), Vec::new()),
        };
    }
    (
        finish_parked_reply(node, parked, protocol).await,
        Vec::new(),
    )
}

async fn finish_parked_reply(node: &Node, parked: Parked, protocol: Protocol) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut out = ReplyWriter::new(&mut reply, protocol);
    match parked {
        Parked::CacheGet(blocked) => match commands::finish_blocked(node, blocked).await {
            Ok((value, token)) => commands::write_get_reply(&mut out, value.as_deref(), token),
            Err(error) => dispatch::write_error(node, &mut out, &error),
        },
        Parked::Wait(blocked) => out.int(commands::finish_wait(node, blocked).await),
        Parked::BlockedPop(blocked) => return commands::finish_blocked_pop(blocked).await,
        // Answered by `finish_parked`, with the writes it made elsewhere; run again by the
        // connection.
        Parked::Forward(_) | Parked::Hold => return reply,
        Parked::Shared { sent, answer } => {
            // Members that missed it take it when they next join (scripting::shared).
            let _ = sent.await;
            return answer;
        }
        Parked::Save(durable) => match durable.await {
            Ok(Ok(())) => out.ok(),
            Ok(Err(error)) => dispatch::write_error(
                node,
                &mut out,
                &crate::handler::CmdError::Custom(format!("ERR {error}")),
            ),
            Err(_) => dispatch::write_error(
                node,
                &mut out,
                &crate::handler::CmdError::Custom("ERR the persistence writer stopped".into()),
            ),
        },
    }
    reply
}

/// Store mode: reads the batch's keys that eviction took out of memory back from disk
/// before the batch runs (off the runtime), so every command sees every stored key.
async fn fault_in(node: &Node, persistence: &Arc<Persistence>, input: &[u8], batch: &Batch) {
    let now = unix_ms();
    let mut missing = Vec::new();
    for i in 0..batch.len() {
        for key in dispatch::command_keys(&batch.command(input, i)) {
            if !node.store.inspect(key, now, |entry| entry.is_some()) {
                missing.push(key.to_vec());
            }
        }
    }
    if missing.is_empty() {
        return;
    }
    let tier = persistence.clone();
    let store = node.store.clone();
    let found = tokio::task::spawn_blocking(move || tier.fault_in(&store, &missing)).await;
    if let Ok(Err(error)) = found {
        tracing::warn!(%error, "reading evicted values back failed");
    }
}
