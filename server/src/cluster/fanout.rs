//! Messages published on this member on their way to the others (PUBLISH to every member,
//! SPUBLISH to the other owners of the channel's slot). One ordered stream per member, so
//! a subscriber there sees one publisher's messages in the order they were published,
//! pipelined on one connection. Pub/sub promises at most once: what a dead or stalled
//! member cannot take is dropped and counted once its stream holds [`MAX_QUEUED_BYTES`],
//! never queued without bound.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::{ProxyError, Upstream, encode};

/// What one member's stream may hold before new messages for it are dropped.
const MAX_QUEUED_BYTES: usize = 64 << 20;
/// How long a member gets to take a batch (connect, write, answer).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Stream {
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    commands: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// The streams to other members, created as they are first needed.
#[derive(Default)]
pub struct Fanout {
    streams: Mutex<HashMap<SocketAddr, Arc<Stream>>>,
    /// Messages a member did not get (its stream was full, or it did not answer).
    pub dropped: Arc<AtomicU64>,
}

impl Fanout {
    /// Queues `CLUSTER DELIVER kind channel message` for the member at `addr`.
    pub fn send(&self, addr: SocketAddr, password: &str, parts: &[&[u8]]) {
        let stream = self
            .streams
            .lock()
            .entry(addr)
            .or_insert_with(|| {
                // One task per member this node ever published to, for the node's life:
                // bounded by the members it has known, idle while nothing is published.
                let stream = Arc::new(Stream::default());
                tokio::spawn(deliver(
                    addr,
                    password.to_string(),
                    stream.clone(),
                    self.dropped.clone(),
                ));
                stream
            })
            .clone();
        let command = encode(parts.iter());
        let mut queue = stream.queue.lock();
        if queue.bytes + command.len() > MAX_QUEUED_BYTES {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        queue.bytes += command.len();
        queue.commands.push_back(command);
        drop(queue);
        stream.ready.notify_one();
    }
}

async fn deliver(addr: SocketAddr, password: String, stream: Arc<Stream>, dropped: Arc<AtomicU64>) {
    let mut upstream: Option<Upstream> = None;
    loop {
        stream.ready.notified().await;
        loop {
            let (batch, count) = {
                let mut queue = stream.queue.lock();
                let count = queue.commands.len();
                let mut batch = Vec::with_capacity(queue.bytes);
                for command in queue.commands.drain(..) {
                    batch.extend_from_slice(&command);
                }
                queue.bytes = 0;
                (batch, count)
            };
            if count == 0 {
                break;
            }
            let sent = tokio::time::timeout(
                DELIVERY_TIMEOUT,
                send_batch(&mut upstream, addr, &password, &batch, count),
            )
            .await
            .unwrap_or(Err(ProxyError::Timeout));
            if let Err(error) = sent {
                upstream = None;
                dropped.fetch_add(count as u64, Relaxed);
                tracing::debug!(%addr, %error, count, "published messages did not reach a member");
            }
        }
    }
}

async fn send_batch(
    upstream: &mut Option<Upstream>,
    addr: SocketAddr,
    password: &str,
    batch: &[u8],
    count: usize,
) -> Result<(), ProxyError> {
    if upstream.is_none() {
        *upstream = Some(Upstream::connect(addr, false, password).await?);
    }
    let connection = upstream.as_mut().expect("connected above");
    connection.stream.write_all(batch).await?;
    for _ in 0..count {
        connection.read_reply(false).await?;
    }
    Ok(())
}
