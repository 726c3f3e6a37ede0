//! Pub/sub on one node: who listens to which channel, pattern and shard channel, and each
//! subscriber's mailbox.
//!
//! A publisher encodes a message once per protocol and appends it to every receiving
//! mailbox under that mailbox's own lock; the subscriber's connection task drains its
//! mailbox between batches (and right before the reply of a command it runs, so a client's
//! own PUBLISH reaches it first, as in Redis). A mailbox counts its bytes against Redis's
//! `client-output-buffer-limit pubsub` class: past the hard limit, or past the soft limit
//! for its seconds, the subscriber is disconnected and nothing more is queued for it, so a
//! subscriber that does not read cannot grow the node's memory without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use indexmap::IndexSet;
use parking_lot::{Mutex, RwLock};
use ringkv_protocol::{Protocol, ReplyWriter};
use ringkv_store::glob_match;

pub use crate::config::OutputLimit;
use crate::config::OutputLimits;
use crate::node::ClientHandle;

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SUBSCRIBE: a channel.
    Channel,
    /// PSUBSCRIBE: a glob pattern over channels.
    Pattern,
    /// SSUBSCRIBE: a shard channel (in a cluster, served by its slot's owners).
    Shard,
}

impl Kind {
    /// The reply's first element when subscribing.
    pub fn subscribe_word(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
            Kind::Shard => b"ssubscribe",
        }
    }

    /// The reply's first element when unsubscribing.
    pub fn unsubscribe_word(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
            Kind::Shard => b"sunsubscribe",
        }
    }
}

/// A subscriber's queue of encoded messages.
pub struct Mailbox {
    client: Arc<ClientHandle>,
    pending: Mutex<Pending>,
    /// Shard channels whose slot left this member: the connection tells its client it
    /// is unsubscribed from them (`sunsubscribe`), as Redis does.
    lost: Mutex<Vec<Box<[u8]>>>,
    /// Of the bytes ever queued, how many reached the connection's socket: a writer waits
    /// for its invalidations to get there before its own reply ([`Mailbox::written_up_to`]).
    written: AtomicU64,
    /// Of the bytes ever queued, how many were taken into the connection's output (set
    /// under the `pending` lock, read without it).
    drained: AtomicU64,
    /// Rung when `written` grows.
    flushed: tokio::sync::Notify,
    /// A writer gave up waiting for this connection's socket (its client does not read):
    /// nobody waits for it again until everything queued is written.
    stalled: AtomicBool,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Since when the queue has been over the soft limit.
    over_soft_since: Option<Instant>,
    /// Disconnected for its output limit: nothing more is queued.
    cut_off: bool,
    /// Bytes ever queued.
    queued_total: u64,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("client", &self.client.id)
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// A mailbox for the connection of `client` (made through `ClientHandle::mailbox`).
    pub fn new(client: Arc<ClientHandle>) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            client,
            pending: Mutex::default(),
            lost: Mutex::default(),
            written: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            flushed: tokio::sync::Notify::new(),
            stalled: AtomicBool::new(false),
        })
    }

    /// The client's id.
    pub fn client_id(&self) -> u64 {
        self.client.id
    }

    /// True when the client speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.client.resp.load(Relaxed) == 3
    }

    /// Queues one encoded message; false when the subscriber is cut off (now or before).
    pub fn deliver(&self, message: &[u8], limit: OutputLimit) -> bool {
        self.deliver_at(message, limit).is_some()
    }

    /// [`Self::deliver`], saying where the message ends in the mailbox's bytes (for
    /// [`Self::written_up_to`]); `None` when the subscriber is cut off.
    pub fn deliver_at(&self, message: &[u8], limit: OutputLimit) -> Option<u64> {
        let mut pending = self.pending.lock();
        if pending.cut_off {
            return None;
        }
        pending.bytes.extend_from_slice(message);
        pending.queued_total += message.len() as u64;
        let end = pending.queued_total;
        let queued = pending.bytes.len() as u64;
        let over_hard = limit.hard > 0 && queued > limit.hard;
        let over_soft = limit.soft > 0 && queued > limit.soft;
        let soft_expired = match (over_soft, pending.over_soft_since) {
            (false, _) => {
                pending.over_soft_since = None;
                false
            }
            (true, None) => {
                pending.over_soft_since = Some(Instant::now());
                limit.soft_seconds == 0
            }
            (true, Some(since)) => since.elapsed().as_secs() >= limit.soft_seconds,
        };
        if over_hard || soft_expired {
            pending.cut_off = true;
            pending.bytes = Vec::new();
            drop(pending);
            // Nothing queued here will be written: writers waiting for it go on.
            self.written.store(u64::MAX, Relaxed);
            self.flushed.notify_waiters();
            tracing::warn!(
                client = self.client.id,
                queued,
                "disconnecting a subscriber over client-output-buffer-limit pubsub"
            );
            self.client.kill();
            return None;
        }
        drop(pending);
        self.client.wake();
        Some(end)
    }

    /// Resolves once the first `end` bytes ever queued here reached the socket.
    pub async fn written_up_to(&self, end: u64) {
        loop {
            let rung = self.flushed.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            if self.written.load(Relaxed) >= end {
                return;
            }
            rung.await;
        }
    }

    /// The connection wrote its output: everything drained into it so far is out.
    pub fn wrote_output(&self) {
        // Most writes carry no pushes: nothing to publish, no lock.
        if self.written.load(Relaxed) == self.drained.load(Relaxed) && !self.stalled() {
            return;
        }
        let (drained, queued) = {
            let pending = self.pending.lock();
            if pending.cut_off {
                return;
            }
            (self.drained.load(Relaxed), pending.queued_total)
        };
        if self.written.swap(drained, Relaxed) != drained {
            self.flushed.notify_waiters();
        }
        if drained == queued {
            self.stalled.store(false, Relaxed);
        }
    }

    /// True while writers do not wait for this connection (see `stalled`).
    pub fn stalled(&self) -> bool {
        self.stalled.load(Relaxed)
    }

    /// A writer waited too long for bytes up to `end`: unless they are out now, nobody
    /// waits for this connection until it catches up.
    pub fn gave_up_at(&self, end: u64) {
        if self.written.load(Relaxed) < end {
            self.stalled.store(true, Relaxed);
        }
    }

    /// Takes what is queued (appended to `out`).
    pub fn drain_into(&self, out: &mut Vec<u8>) {
        let mut pending = self.pending.lock();
        if pending.bytes.is_empty() {
            return;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut pending.bytes);
        } else {
            out.append(&mut pending.bytes);
        }
        pending.over_soft_since = None;
        self.drained.store(pending.queued_total, Relaxed);
    }

    /// Takes what is queued into a reply being written.
    pub fn drain_to(&self, out: &mut ReplyWriter<'_>) {
        let mut pending = self.pending.lock();
        if !pending.bytes.is_empty() {
            out.raw(&pending.bytes);
            pending.bytes.clear();
            pending.over_soft_since = None;
            self.drained.store(pending.queued_total, Relaxed);
        }
    }

    /// Takes what is queued into a command's reply: the first `before` bytes at `at`
    /// (ahead of the reply), the rest after it.
    pub fn drain_around(&self, out: &mut ReplyWriter<'_>, at: usize, before: usize) {
        let mut pending = self.pending.lock();
        if pending.bytes.is_empty() {
            return;
        }
        let before = before.min(pending.bytes.len());
        out.insert_raw(at, &pending.bytes[..before]);
        out.raw(&pending.bytes[before..]);
        pending.bytes.clear();
        pending.over_soft_since = None;
        self.drained.store(pending.queued_total, Relaxed);
    }

    /// Bytes queued and not yet taken (CLIENT LIST's `omem`).
    pub fn queued(&self) -> usize {
        self.pending.lock().bytes.len()
    }
}

type Subscribers = HashMap<u64, Arc<Mailbox>>;

#[derive(Default)]
struct Registry {
    channels: HashMap<Box<[u8]>, Subscribers>,
    patterns: HashMap<Box<[u8]>, Subscribers>,
    shard_channels: HashMap<Box<[u8]>, Subscribers>,
}

impl Registry {
    fn of(&mut self, kind: Kind) -> &mut HashMap<Box<[u8]>, Subscribers> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard_channels,
        }
    }

    fn of_ref(&self, kind: Kind) -> &HashMap<Box<[u8]>, Subscribers> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard_channels,
        }
    }
}

/// The node's subscriptions.
#[derive(Default)]
pub struct PubSub {
    registry: RwLock<Registry>,
    hard: AtomicU64,
    soft: AtomicU64,
    soft_seconds: AtomicU64,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub").finish_non_exhaustive()
    }
}

/// A message encoded once per protocol, on first need.
struct Encoded<'a> {
    parts: &'a [&'a [u8]],
    resp2: Option<Vec<u8>>,
    resp3: Option<Vec<u8>>,
}

impl<'a> Encoded<'a> {
    fn new(parts: &'a [&'a [u8]]) -> Self {
        Encoded {
            parts,
            resp2: None,
            resp3: None,
        }
    }

    fn for_protocol(&mut self, resp3: bool) -> &[u8] {
        let (slot, protocol) = if resp3 {
            (&mut self.resp3, Protocol::Resp3)
        } else {
            (&mut self.resp2, Protocol::Resp2)
        };
        slot.get_or_insert_with(|| {
            let mut bytes = Vec::new();
            let mut w = ReplyWriter::new(&mut bytes, protocol);
            w.push(self.parts.len());
            for part in self.parts {
                w.bulk(part);
            }
            bytes
        })
    }
}

impl PubSub {
    /// A registry with Redis's default pub/sub output limit.
    pub fn new() -> PubSub {
        let pubsub = PubSub::default();
        pubsub.set_limit(OutputLimits::DEFAULT.pubsub);
        pubsub
    }

    /// Sets the output limit (CONFIG SET client-output-buffer-limit).
    pub fn set_limit(&self, limit: OutputLimit) {
        self.hard.store(limit.hard, Relaxed);
        self.soft.store(limit.soft, Relaxed);
        self.soft_seconds.store(limit.soft_seconds, Relaxed);
    }

    /// The pubsub class of `client-output-buffer-limit` (pushes of any kind count on it).
    pub fn limit(&self) -> OutputLimit {
        OutputLimit {
            hard: self.hard.load(Relaxed),
            soft: self.soft.load(Relaxed),
            soft_seconds: self.soft_seconds.load(Relaxed),
        }
    }

    /// Adds a subscription.
    pub fn subscribe(&self, kind: Kind, name: &[u8], mailbox: &Arc<Mailbox>) {
        self.registry
            .write()
            .of(kind)
            .entry(name.into())
            .or_default()
            .insert(mailbox.client.id, mailbox.clone());
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, kind: Kind, name: &[u8], client: u64) {
        let mut registry = self.registry.write();
        let map = registry.of(kind);
        if let Some(subscribers) = map.get_mut(name) {
            subscribers.remove(&client);
            if subscribers.is_empty() {
                map.remove(name);
            }
        }
    }

    /// PUBLISH: delivers to the channel's subscribers and to every matching pattern's;
    /// how many received it.
    pub fn publish(&self, channel: &[u8], message: &[u8]) -> usize {
        let limit = self.limit();
        let registry = self.registry.read();
        let mut received = 0;
        if let Some(subscribers) = registry.channels.get(channel) {
            let parts: [&[u8]; 3] = [b"message", channel, message];
            let mut encoded = Encoded::new(&parts);
            for mailbox in subscribers.values() {
                received +=
                    usize::from(mailbox.deliver(encoded.for_protocol(mailbox.resp3()), limit));
            }
        }
        for (pattern, subscribers) in &registry.patterns {
            if !glob_match(pattern, channel, false) {
                continue;
            }
            let parts: [&[u8]; 4] = [b"pmessage", pattern, channel, message];
            let mut encoded = Encoded::new(&parts);
            for mailbox in subscribers.values() {
                received +=
                    usize::from(mailbox.deliver(encoded.for_protocol(mailbox.resp3()), limit));
            }
        }
        received
    }

    /// SPUBLISH: delivers to the shard channel's subscribers; how many received it.
    pub fn publish_shard(&self, channel: &[u8], message: &[u8]) -> usize {
        let limit = self.limit();
        let registry = self.registry.read();
        let Some(subscribers) = registry.shard_channels.get(channel) else {
            return 0;
        };
        let parts: [&[u8]; 3] = [b"smessage", channel, message];
        let mut encoded = Encoded::new(&parts);
        subscribers
            .values()
            .filter(|mailbox| mailbox.deliver(encoded.for_protocol(mailbox.resp3()), limit))
            .count()
    }

    /// Channels (or shard channels) with subscribers that match `pattern` (PUBSUB
    /// CHANNELS, SHARDCHANNELS).
    pub fn channels(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        let registry = self.registry.read();
        registry
            .of_ref(kind)
            .keys()
            .filter(|name| pattern.is_none_or(|p| glob_match(p, name, false)))
            .map(|name| name.to_vec())
            .collect()
    }

    /// True when `client` subscribes to `name`.
    pub fn is_subscribed(&self, kind: Kind, name: &[u8], client: u64) -> bool {
        self.registry
            .read()
            .of_ref(kind)
            .get(name)
            .is_some_and(|subscribers| subscribers.contains_key(&client))
    }

    /// How many subscribe to `name` (PUBSUB NUMSUB, SHARDNUMSUB).
    pub fn count(&self, kind: Kind, name: &[u8]) -> usize {
        self.registry
            .read()
            .of_ref(kind)
            .get(name)
            .map_or(0, HashMap::len)
    }

    /// How many pattern subscriptions there are, all clients together (PUBSUB NUMPAT).
    pub fn pattern_count(&self) -> usize {
        self.registry
            .read()
            .patterns
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Ends the subscriptions to the shard channels `gone` picks (their slot left this
    /// member): each subscriber's connection is told. How many channels ended.
    pub fn drop_shard_channels(&self, gone: impl Fn(&[u8]) -> bool) -> usize {
        let mut registry = self.registry.write();
        let names: Vec<Box<[u8]>> = registry
            .shard_channels
            .keys()
            .filter(|name| gone(name))
            .cloned()
            .collect();
        for name in &names {
            if let Some(subscribers) = registry.shard_channels.remove(name) {
                for mailbox in subscribers.values() {
                    mailbox.lost.lock().push(name.clone());
                    mailbox.client.wake();
                }
            }
        }
        names.len()
    }
}

/// One connection's subscriptions, in the order it made them.
#[derive(Debug)]
pub struct Subscriptions {
    /// Where its messages wait for the connection.
    pub mailbox: Arc<Mailbox>,
    channels: IndexSet<Box<[u8]>>,
    patterns: IndexSet<Box<[u8]>>,
    shard_channels: IndexSet<Box<[u8]>>,
}

impl Subscriptions {
    /// None yet, for the connection of `client`.
    pub fn new(client: Arc<ClientHandle>) -> Subscriptions {
        Subscriptions {
            mailbox: client.mailbox(),
            channels: IndexSet::new(),
            patterns: IndexSet::new(),
            shard_channels: IndexSet::new(),
        }
    }

    fn of(&mut self, kind: Kind) -> &mut IndexSet<Box<[u8]>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard_channels,
        }
    }

    /// The count a (un)subscribe reply carries: channels and patterns together, or shard
    /// channels for the shard kind (as Redis 7.0 counts them).
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shard_channels.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// No subscription of any kind left.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty()
    }

    /// Subscribes; false when it already was.
    pub fn add(&mut self, pubsub: &PubSub, kind: Kind, name: &[u8]) -> bool {
        if !self.of(kind).insert(name.into()) {
            return false;
        }
        pubsub.subscribe(kind, name, &self.mailbox);
        self.publish_counts();
        true
    }

    /// Unsubscribes; false when it was not subscribed.
    pub fn remove(&mut self, pubsub: &PubSub, kind: Kind, name: &[u8]) -> bool {
        if !self.of(kind).shift_remove(name) {
            return false;
        }
        pubsub.unsubscribe(kind, name, self.mailbox.client.id);
        self.publish_counts();
        true
    }

    /// Tells the client of the shard channels the member stopped serving (a
    /// `sunsubscribe` each, as Redis sends), and forgets them.
    pub fn settle_lost(&mut self, out: &mut ReplyWriter<'_>) {
        let lost = std::mem::take(&mut *self.mailbox.lost.lock());
        for name in lost {
            if self.shard_channels.shift_remove(&name) {
                out.push(3);
                out.bulk(Kind::Shard.unsubscribe_word());
                out.bulk(&name);
                out.int(self.shard_channels.len() as i64);
            }
        }
        self.publish_counts();
    }

    /// Every subscription of `kind`, in the order made.
    pub fn names(&self, kind: Kind) -> Vec<Box<[u8]>> {
        match kind {
            Kind::Channel => self.channels.iter().cloned().collect(),
            Kind::Pattern => self.patterns.iter().cloned().collect(),
            Kind::Shard => self.shard_channels.iter().cloned().collect(),
        }
    }

    /// Ends every subscription (the connection closed, or RESET).
    pub fn leave(mut self, pubsub: &PubSub) {
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            for name in self.names(kind) {
                self.remove(pubsub, kind, &name);
            }
        }
    }

    /// CLIENT LIST's sub, psub and ssub.
    fn publish_counts(&self) {
        let counts = &self.mailbox.client.subscriptions;
        counts[0].store(self.channels.len(), Relaxed);
        counts[1].store(self.patterns.len(), Relaxed);
        counts[2].store(self.shard_channels.len(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Clients;

    fn client(clients: &Clients, resp: u8) -> Arc<ClientHandle> {
        let addr = "127.0.0.1:1".parse().unwrap();
        let handle = clients.register(addr, addr, 100).unwrap();
        handle.resp.store(resp, Relaxed);
        handle
    }

    #[test]
    fn publish_reaches_channels_and_patterns_in_each_subscribers_protocol() {
        let clients = Clients::default();
        let pubsub = PubSub::new();
        let (two, three) = (
            Mailbox::new(client(&clients, 2)),
            Mailbox::new(client(&clients, 3)),
        );
        pubsub.subscribe(Kind::Channel, b"news", &two);
        pubsub.subscribe(Kind::Pattern, b"n*", &three);
        pubsub.subscribe(Kind::Shard, b"news", &three);
        assert_eq!(pubsub.publish(b"news", b"hi"), 2);
        assert_eq!(pubsub.publish(b"other", b"hi"), 0);
        let mut out = Vec::new();
        two.drain_into(&mut out);
        assert_eq!(out, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
        out.clear();
        three.drain_into(&mut out);
        assert_eq!(
            out, b">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
            "a shard subscription hears SPUBLISH only"
        );
        assert_eq!(pubsub.publish_shard(b"news", b"s"), 1);
        pubsub.unsubscribe(Kind::Channel, b"news", two.client.id);
        assert_eq!(pubsub.count(Kind::Channel, b"news"), 0);
        assert!(pubsub.channels(Kind::Channel, None).is_empty());
        assert_eq!(pubsub.pattern_count(), 1);
    }

    #[test]
    fn a_subscriber_over_the_hard_limit_is_cut_off_and_its_queue_freed() {
        let clients = Clients::default();
        let pubsub = PubSub::new();
        pubsub.set_limit(OutputLimit {
            hard: 1000,
            soft: 0,
            soft_seconds: 0,
        });
        let slow = Mailbox::new(client(&clients, 2));
        pubsub.subscribe(Kind::Channel, b"c", &slow);
        let message = [b'x'; 100];
        let delivered = (0..20)
            .filter(|_| pubsub.publish(b"c", &message) == 1)
            .count();
        assert!(
            delivered < 10,
            "{delivered} messages queued past a 1000-byte limit"
        );
        assert!(slow.client.is_killed());
        assert_eq!(
            slow.queued(),
            0,
            "the queue of a cut-off subscriber is freed"
        );
    }
}
