//! One RESP3 connection to one member, shared by every caller. A writer task pipelines
//! requests (many callers' commands leave in one write); a reader task hands replies to
//! their callers in order and invalidation pushes to the [`PushSink`]. Each reply carries
//! the sink's stamp at its arrival, so a caller can tell whether an invalidation of its
//! key arrived after its read: the two travel on this one ordered stream.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use redis_protocol::resp3::decode::complete::decode_bytes_mut;
use redis_protocol::resp3::types::BytesFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::error::NearCacheError;

/// A reply larger than this is a lying or broken member: the link closes.
const MAX_BUFFERED_REPLY: usize = 512 << 20;
/// Bytes gathered into one write before it leaves.
const WRITE_BATCH: usize = 64 << 10;
/// Requests queued towards one member before callers wait for room.
const QUEUE_DEPTH: usize = 4096;

/// The slots whose keys a link's member served into the near-cache: what a lost link or a
/// flush must drop.
pub(crate) struct SlotBits([AtomicU64; 256]);

impl SlotBits {
    fn new() -> Self {
        SlotBits(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Marks a slot.
    pub fn set(&self, slot: u16) {
        let bit = 1u64 << (slot % 64);
        let word = &self.0[usize::from(slot / 64) % 256];
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// Whether a slot is marked.
    pub fn contains(&self, slot: u16) -> bool {
        self.0[usize::from(slot / 64) % 256].load(Ordering::SeqCst) & (1u64 << (slot % 64)) != 0
    }
}

/// Where a link's pushes go, and the clock its replies are stamped with.
pub(crate) trait PushSink: Send + Sync + 'static {
    /// The stamp a reply arriving now carries.
    fn stamp(&self) -> u64;
    /// An `invalidate` push: these keys changed, or (`None`) everything this link's
    /// member served is gone (FLUSHALL, FLUSHDB).
    fn invalidated(&self, keys: Option<Vec<Bytes>>, covered: &SlotBits);
    /// The link broke: nothing will tell of changes to what it served any more.
    fn lost(&self, covered: &SlotBits);
}

/// A reply and the stamp it arrived with.
pub(crate) struct Reply {
    pub frame: BytesFrame,
    pub stamp: u64,
}

struct Request {
    bytes: Vec<u8>,
    replies: Vec<oneshot::Sender<Reply>>,
}

/// Reply slots of requests written, oldest first; `None` once the link is down.
type Pending = Arc<Mutex<Option<VecDeque<oneshot::Sender<Reply>>>>>;

/// A connection to one member, with tracking on.
pub(crate) struct Link {
    pub addr: SocketAddr,
    requests: mpsc::Sender<Request>,
    alive: Arc<AtomicBool>,
    covered: Arc<SlotBits>,
}

impl Link {
    /// Connects, says `HELLO 3` and `CLIENT TRACKING ON`, and starts the link's tasks.
    pub async fn connect(
        addr: SocketAddr,
        sink: Arc<dyn PushSink>,
        timeout: Duration,
    ) -> Result<Link, NearCacheError> {
        let connection_error = |reason: String| NearCacheError::Connection { addr, reason };
        let timed_out = |_| NearCacheError::Timeout {
            addr,
            millis: timeout.as_millis() as u64,
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(timed_out)?
            .map_err(|e| connection_error(e.to_string()))?;
        stream.set_nodelay(true).ok();
        let (mut read_half, mut write_half) = stream.into_split();
        let mut handshake = Vec::new();
        encode_command(&mut handshake, &[b"HELLO", b"3"]);
        encode_command(&mut handshake, &[b"CLIENT", b"TRACKING", b"ON"]);
        let mut buffer = BytesMut::with_capacity(16 << 10);
        let replies = tokio::time::timeout(timeout, async {
            write_half.write_all(&handshake).await?;
            let mut replies = Vec::new();
            while replies.len() < 2 {
                while let Some((frame, _, _)) = decode_bytes_mut(&mut buffer)
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                {
                    replies.push(frame);
                }
                if replies.len() < 2 && read_half.read_buf(&mut buffer).await? == 0 {
                    return Err(std::io::Error::other("closed during the handshake"));
                }
            }
            Ok(replies)
        })
        .await
        .map_err(timed_out)?
        .map_err(|e| connection_error(e.to_string()))?;
        if let Some(error) = replies.iter().find_map(error_text) {
            return Err(NearCacheError::Handshake { addr, reply: error });
        }
        let alive = Arc::new(AtomicBool::new(true));
        let covered = Arc::new(SlotBits::new());
        let pending: Pending = Arc::new(Mutex::new(Some(VecDeque::new())));
        let (requests, inbox) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_loop(write_half, inbox, pending.clone()));
        tokio::spawn(read_loop(
            ReadSide {
                addr,
                half: read_half,
                buffer,
                pending,
                alive: alive.clone(),
                covered: covered.clone(),
            },
            sink,
        ));
        Ok(Link {
            addr,
            requests,
            alive,
            covered,
        })
    }

    /// Whether the connection still stands.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// The slots this link served into the near-cache.
    pub fn covered(&self) -> &SlotBits {
        &self.covered
    }

    /// Sends commands back to back and returns their replies in order.
    pub async fn call(
        &self,
        commands: &[Vec<Bytes>],
        timeout: Duration,
    ) -> Result<Vec<Reply>, NearCacheError> {
        let addr = self.addr;
        let lost = || NearCacheError::Connection {
            addr,
            reason: "the connection closed".into(),
        };
        let mut bytes = Vec::new();
        let mut replies = Vec::with_capacity(commands.len());
        let mut receivers = Vec::with_capacity(commands.len());
        for command in commands {
            let args: Vec<&[u8]> = command.iter().map(|a| a.as_ref()).collect();
            encode_command(&mut bytes, &args);
            let (tx, rx) = oneshot::channel();
            replies.push(tx);
            receivers.push(rx);
        }
        let waited = tokio::time::timeout(timeout, async {
            self.requests
                .send(Request { bytes, replies })
                .await
                .map_err(|_| lost())?;
            let mut out = Vec::with_capacity(receivers.len());
            for rx in receivers {
                out.push(rx.await.map_err(|_| lost())?);
            }
            Ok(out)
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(NearCacheError::Timeout {
                addr,
                millis: timeout.as_millis() as u64,
            }),
        }
    }
}

/// The text of an error reply.
pub(crate) fn error_text(frame: &BytesFrame) -> Option<String> {
    match frame {
        BytesFrame::SimpleError { data, .. } => Some(data.to_string()),
        BytesFrame::BlobError { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
        _ => None,
    }
}

fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

async fn write_loop(
    mut half: OwnedWriteHalf,
    mut inbox: mpsc::Receiver<Request>,
    pending: Pending,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = inbox.recv().await {
        // One pass of the scheduler first: callers made ready by the same wake-up queue
        // their requests too, and one write carries them all (a loopback send costs
        // microseconds of the sender's CPU).
        tokio::task::yield_now().await;
        batch.clear();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            // The reply slots queue before the bytes leave, so the reader always finds
            // them; on a dead link they are dropped and their callers told at once.
            if let Some(queue) = pending.lock().as_mut() {
                batch.extend_from_slice(&request.bytes);
                queue.extend(request.replies);
            }
            if batch.len() < WRITE_BATCH {
                next = inbox.try_recv().ok();
            }
        }
        if !batch.is_empty() && half.write_all(&batch).await.is_err() {
            break;
        }
    }
}

struct ReadSide {
    addr: SocketAddr,
    half: OwnedReadHalf,
    buffer: BytesMut,
    pending: Pending,
    alive: Arc<AtomicBool>,
    covered: Arc<SlotBits>,
}

async fn read_loop(mut side: ReadSide, sink: Arc<dyn PushSink>) {
    'link: loop {
        loop {
            match decode_bytes_mut(&mut side.buffer) {
                Ok(Some((frame, _, _))) => {
                    if !deliver(&side, sink.as_ref(), frame) {
                        break 'link;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(addr = %side.addr, %error, "malformed reply; closing the near-cache link");
                    break 'link;
                }
            }
        }
        if side.buffer.len() > MAX_BUFFERED_REPLY {
            tracing::warn!(addr = %side.addr, "a reply over 512 MiB; closing the near-cache link");
            break;
        }
        match side.half.read_buf(&mut side.buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    side.alive.store(false, Ordering::SeqCst);
    // What the member served goes first: a caller told its reply will never come must
    // not find the cache still holding that member's values.
    sink.lost(&side.covered);
    // Callers still waiting learn at once that their replies will never come.
    side.pending.lock().take();
}

/// Hands one frame to its caller or the sink; false when the member broke the protocol.
fn deliver(side: &ReadSide, sink: &dyn PushSink, frame: BytesFrame) -> bool {
    if let BytesFrame::Push { data, .. } = &frame {
        if let [kind, keys] = data.as_slice()
            && is_bulk(kind, b"invalidate")
        {
            match keys {
                BytesFrame::Array { data, .. } => {
                    let keys = data
                        .iter()
                        .filter_map(|k| match k {
                            BytesFrame::BlobString { data, .. } => Some(data.clone()),
                            _ => None,
                        })
                        .collect();
                    sink.invalidated(Some(keys), &side.covered);
                }
                _ => sink.invalidated(None, &side.covered),
            }
        }
        // Other pushes (pub/sub messages) are not the near-cache's.
        return true;
    }
    let stamp = sink.stamp();
    let caller = side.pending.lock().as_mut().and_then(|q| q.pop_front());
    match caller {
        Some(caller) => {
            // A caller that gave up (timeout) dropped its receiver; nothing to do.
            let _ = caller.send(Reply { frame, stamp });
            true
        }
        None => {
            tracing::warn!(addr = %side.addr, "a reply nobody asked for; closing the near-cache link");
            false
        }
    }
}

fn is_bulk(frame: &BytesFrame, text: &[u8]) -> bool {
    match frame {
        BytesFrame::BlobString { data, .. } | BytesFrame::SimpleString { data, .. } => {
            data.eq_ignore_ascii_case(text)
        }
        _ => false,
    }
}
