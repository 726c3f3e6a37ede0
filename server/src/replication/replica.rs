//! The replica's side of a peer link: connect to the primary, prove the secret, ask for
//! the slots this node copies from it (resuming where it stood), then apply what arrives
//! and acknowledge. Records the view no longer lets this primary send are refused, and
//! the link closes without acknowledging them.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ringkv_cluster::NodeId;
use ringkv_cluster::link::{
    FrameKind, Hello, LINK_VERSION, LinkError, NONCE_LEN, PositionReport, Resume, nonce,
    read_frame, read_u64, write_frame,
};
use ringkv_store::slot_set::SlotSet;
use ringkv_store::slot_stream::{StreamReceiver, WindowPart};

use super::{LINK_TIMEOUT, Pull, Replication};
use crate::node::unix_ms;

/// An acknowledgement goes at least this often while records arrive.
const ACK_EVERY: Duration = Duration::from_millis(10);
/// An idle link still acknowledges this often.
const IDLE_ACK: Duration = Duration::from_secs(1);
/// Wait before reconnecting after a failed link.
const RETRY: Duration = Duration::from_millis(100);

/// A puller's socket, shared with the manager that may stop it.
pub(super) type LinkSocket = Arc<parking_lot::Mutex<Option<TcpStream>>>;

/// Ends a link's reads now: a thread blocked reading its socket wakes to an end of file.
pub(super) fn shut(socket: &LinkSocket) {
    if let Some(stream) = socket.lock().as_ref() {
        let _ = stream.shutdown(std::net::Shutdown::Read);
    }
}

/// Pulls `slots` from `primary` until `stop` (the view changed), the node stops or the
/// link fails. A learner ([`Pull::Learn`]) pulls slots this node now serves from the
/// member that held them, and ends once it has them all and that member's view has the
/// same table (it takes no more writes for them); a merge ([`Pull::Merge`]) ends once the
/// member's copy is merged in.
pub(super) fn pull(
    repl: &Arc<Replication>,
    primary: NodeId,
    addr: SocketAddr,
    slots: SlotSet,
    kind: Pull,
    stop: &AtomicBool,
    socket: &LinkSocket,
) {
    if let Err(error) = link(repl, primary, addr, &slots, kind, stop, socket) {
        repl.count_link_error(&error);
        tracing::info!(%primary, %error, "link to primary ended");
        if let LinkError::Refused(reason) = &error
            && kind == Pull::Learn
            && reason == super::NO_COPY
        {
            repl.source_has_no_copy(&primary, &slots, &repl.view());
        }
        if matches!(error, LinkError::Io(_)) && !stop.load(Relaxed) {
            // A dead primary is found here first: its socket closes when it dies.
            repl.cluster.check_peer_gone(primary, addr);
        }
        // The manager starts a new puller, from what the view says then.
        std::thread::sleep(RETRY);
    }
}

/// What a Hello says of a third member's stream.
#[derive(Clone, Copy)]
enum About {
    Nothing,
    /// Asks only where the peer stands in this member's stream.
    PositionIn(NodeId),
    /// Learns the tail of this gone member's stream (see `Hello::tail_of`).
    TailOf(NodeId),
}

/// Connects to `addr`, answers its challenge and sends a Hello with these fields; returns
/// the stream and our own challenge (the reply is MAC'd over it). A puller's socket is
/// registered as soon as it connects (`socket`), so stopping it wakes the handshake too.
fn say_hello(
    repl: &Replication,
    addr: SocketAddr,
    slots: &SlotSet,
    resume: Option<Resume>,
    kind: Pull,
    about: About,
    socket: Option<&LinkSocket>,
) -> Result<(TcpStream, [u8; NONCE_LEN]), LinkError> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    if let Some(socket) = socket {
        *socket.lock() = Some(stream.try_clone()?);
    }
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(LINK_TIMEOUT))?;
    stream.set_write_timeout(Some(LINK_TIMEOUT))?;
    let mut payload = Vec::new();
    if read_frame(&mut stream, &mut payload)? != FrameKind::Challenge {
        return Err(LinkError::Malformed("expected a challenge"));
    }
    let challenge: [u8; NONCE_LEN] = payload
        .as_slice()
        .try_into()
        .map_err(|_| LinkError::Malformed("a challenge"))?;
    let mine = nonce();
    let hello = Hello {
        version: LINK_VERSION,
        node: repl.me,
        table_version: repl.view().table.version(),
        slots: slots.ranges(),
        resume,
        learn: kind != Pull::Replica,
        merge: kind == Pull::Merge,
        ask_position: match about {
            About::PositionIn(of) => Some(of),
            _ => None,
        },
        tail_of: match about {
            About::TailOf(dead) => Some(dead),
            _ => None,
        },
        nonce: mine,
        mac: [0; 32],
    };
    write_frame(
        &mut stream,
        FrameKind::Hello,
        &[&repl.key.seal(hello, &challenge)],
    )?;
    Ok((stream, mine))
}

/// Where `peer` (at `addr`) stands in `of`'s stream, and the slots it served after `of`
/// was gone: a new primary asks the other surviving members before serving slots `of`
/// served.
pub(super) fn ask_position(
    repl: &Replication,
    peer: NodeId,
    addr: SocketAddr,
    of: NodeId,
) -> Result<PositionReport, LinkError> {
    let (mut stream, mine) = say_hello(
        repl,
        addr,
        &SlotSet::new(),
        None,
        Pull::Replica,
        About::PositionIn(of),
        None,
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut payload = Vec::new();
    match read_frame(&mut stream, &mut payload)? {
        FrameKind::Position => {
            let report = repl.key.open::<PositionReport>(&payload, &mine)?;
            if report.node != peer {
                return Err(LinkError::Refused(
                    "another node answers at that address".into(),
                ));
            }
            Ok(report)
        }
        FrameKind::Refused => Err(LinkError::Refused(
            String::from_utf8_lossy(&payload).into_owned(),
        )),
        _ => Err(LinkError::Malformed("expected a position report")),
    }
}

/// The fence arrived: acknowledges it at once (the old holder hands the slots over on
/// seeing it), then waits for that side to end the link (bounded) rather than closing
/// first: closing with its frames unread would reset the connection, and the reset could
/// destroy the acknowledgement before it was read.
///
/// `mine` is where this node's own stream stood before it served the slots (its run and
/// last LSN): everything of theirs in it up to there came from the old holder, so the old
/// holder, should it replicate them from here now, resumes from that position instead of
/// taking them whole again.
fn acknowledge_fence(
    stream: &mut TcpStream,
    applied: u64,
    mine: (u64, u64),
) -> Result<(), LinkError> {
    // Flagged: this acknowledgement says the fence was taken. (Sent even while this node's
    // disk fails: the slots are served here now either way, and the old holder must not
    // wait for an acknowledgement that cannot come.)
    write_frame(
        stream,
        FrameKind::Ack,
        &[
            &applied.to_le_bytes(),
            &[1],
            &mine.0.to_le_bytes(),
            &mine.1.to_le_bytes(),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(1);
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut discarded = Vec::new();
    while Instant::now() < deadline {
        match read_frame(stream, &mut discarded) {
            Ok(FrameKind::Refused) | Err(_) => break,
            // What follows the fence is resent to the next link, from our position.
            Ok(_) => {}
        }
    }
    Ok(())
}

fn link(
    repl: &Replication,
    primary: NodeId,
    addr: SocketAddr,
    slots: &SlotSet,
    kind: Pull,
    stop: &AtomicBool,
    socket: &LinkSocket,
) -> Result<(), LinkError> {
    let learn = kind != Pull::Replica;
    let merge = kind == Pull::Merge;
    // A learner keeps no position: the slots are ours to serve. It resumes only the slots
    // it holds a copy of already and waits for their fence (copied while joining, or as a
    // replica of that member); every other slot starts from scratch.
    let resume = if merge {
        // A merge takes the member's whole copy.
        None
    } else if learn {
        let fencing: SlotSet = slots
            .iter()
            .filter(|&s| repl.fencing_from(s, &primary))
            .collect();
        repl.positions
            .lock()
            .get(&primary)
            .cloned()
            .and_then(|mut resume| {
                let copied = SlotSet::from_ranges(&resume.synced).intersection(&fencing);
                resume.synced = copied.ranges();
                (!copied.is_empty()).then_some(resume)
            })
    } else {
        repl.positions.lock().get(&primary).cloned()
    };
    // Learning a dead member's tail from a member that got further in its stream.
    let about = match kind {
        Pull::Learn => repl
            .tail_learned_from(&primary, slots)
            .map_or(About::Nothing, About::TailOf),
        _ => About::Nothing,
    };
    let (mut stream, mine) = say_hello(repl, addr, slots, resume, kind, about, Some(socket))?;
    if stop.load(Relaxed) {
        // Stopped while connecting: the shutdown may have missed this socket.
        return Ok(());
    }
    let mut payload = Vec::new();
    let welcome = match read_frame(&mut stream, &mut payload)? {
        FrameKind::Welcome => repl
            .key
            .open::<ringkv_cluster::link::Welcome>(&payload, &mine)?,
        FrameKind::Refused => {
            return Err(LinkError::Refused(
                String::from_utf8_lossy(&payload).into_owned(),
            ));
        }
        _ => return Err(LinkError::Malformed("expected a Welcome")),
    };
    if welcome.node != primary {
        return Err(LinkError::Refused(
            "another node answers at that address".into(),
        ));
    }
    let streamed = SlotSet::from_ranges(&welcome.slots);
    if streamed != *slots {
        return Err(LinkError::Malformed("slots that were not asked for"));
    }
    let full = SlotSet::from_ranges(&welcome.full);
    if !merge {
        repl.copy_now_from(&primary, &streamed);
    }
    let mut synced = streamed.difference(&full);
    if !learn {
        // READONLY reads of the slots resynced from scratch go to the primary until the
        // copy is whole again.
        repl.cluster.set_replica_whole(&full, false);
    }
    if !learn && !synced.is_empty() {
        // Resumed: the copy is the primary's history up to where we stood, and the
        // stream goes on from there.
        repl.copied_from(&primary, &synced);
    }
    let mut receiver = StreamReceiver::new(streamed.clone(), welcome.after_lsn);
    // This node takes these slots over (it learns them, or presyncs them joining): what
    // the link carries counts as handed off.
    let handoff = learn || {
        let view = repl.view();
        streamed.iter().all(|s| {
            view.target.owners(s).any(|o| *o == repl.me)
                && !view.table.owners(s).any(|o| *o == repl.me)
        })
    };
    let mut keys_counted = 0;
    let mut count_in = |receiver: &StreamReceiver, bytes: usize| {
        if handoff {
            let keys = receiver.snapshot_keys();
            repl.handoff.keys_in.fetch_add(keys - keys_counted, Relaxed);
            repl.handoff.bytes_in.fetch_add(bytes as u64, Relaxed);
            keys_counted = keys;
        }
    };
    if merge {
        if full != streamed {
            return Err(LinkError::Malformed("a merge that is not a whole copy"));
        }
        receiver.start_merge(&full);
        tracing::info!(from = %primary, slots = full.len(), "merging a member's copy in");
    } else if !full.is_empty() {
        // What this node holds of those slots stays until the resync replaces it: it may
        // be the last copy of writes a WAIT acknowledged (the holder it came from is gone).
        let stale = receiver.start_sync(&repl.store, &full);
        tracing::info!(%primary, slots = full.len(), stale, "resyncing slots from scratch");
    }
    let remember = |receiver: &StreamReceiver, synced: &SlotSet| {
        if learn {
            return;
        }
        repl.positions.lock().insert(
            primary,
            Resume {
                run: welcome.run,
                applied: receiver.applied(),
                synced: synced.ranges(),
            },
        );
    };
    remember(&receiver, &synced);
    let mut acked = 0;
    let mut last_ack = Instant::now();
    while !stop.load(Relaxed) && !repl.stopping.load(Relaxed) {
        let kind = read_frame(&mut stream, &mut payload)?;
        let mut ack_now = false;
        let view = repl.view();
        // Fencing: only while the view lets this primary send the slot here.
        let accept = |slot: u16| {
            if learn {
                view.table.primary(slot) == Some(&repl.me) && repl.learning(slot)
            } else {
                view.table.primary(slot) == Some(&primary)
                    && (view.table.is_replica(slot, &repl.me) || view.joins_owning(slot, &repl.me))
                    // It served the slot until it saw our table: what it sends up to its
                    // fence is history (the fence itself comes here too).
                    || repl.fencing_from(slot, &primary)
                    || repl.served_before(slot, &primary, &view)
            }
        };
        match kind {
            FrameKind::Records => {
                let refused = receiver
                    .apply_records(&repl.store, &payload, unix_ms(), accept)
                    .map_err(|e| LinkError::Malformed(e.0))?;
                count_in(&receiver, payload.len());
                if !learn && let Some(position) = repl.positions.lock().get_mut(&primary) {
                    // How far we got, should this primary die: a surviving owner that took
                    // over compares it with the others' before serving.
                    position.applied = receiver.applied();
                }
                if refused > 0 {
                    // Fenced: this primary no longer serves some of these slots for us.
                    repl.stats.fenced_records.fetch_add(refused as u64, Relaxed);
                    return Err(LinkError::Refused("fenced by a newer slot table".into()));
                }
            }
            FrameKind::Snapshot => {
                let part = WindowPart::decode(&payload).map_err(|e| LinkError::Malformed(e.0))?;
                let refused = receiver
                    .apply_snapshot(&repl.store, part, unix_ms(), accept)
                    .map_err(|e| LinkError::Malformed(e.0))?;
                count_in(&receiver, payload.len());
                if refused > 0 {
                    repl.stats.fenced_records.fetch_add(refused as u64, Relaxed);
                    return Err(LinkError::Refused("fenced by a newer slot table".into()));
                }
            }
            FrameKind::SnapshotDone => {
                let (stamp, _) = read_u64(&payload)?;
                let swept = receiver.snapshot_done(&repl.store, stamp);
                if merge {
                    repl.merged(&primary, &streamed);
                    return Ok(());
                }
                tracing::info!(%primary, swept, "resync complete; keys the primary did not have are gone");
                synced = streamed.clone();
                if !learn {
                    repl.copied_from(&primary, &streamed);
                }
                ack_now = true;
            }
            FrameKind::Heartbeat => {
                let (lsn, rest) = read_u64(&payload)?;
                receiver.heartbeat(lsn);
                ack_now = rest.first() == Some(&1);
                let their_table = rest
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes);
                let fenced = their_table == Some(repl.view().table.version());
                // Taken before the slots are served here: nothing of ours for them is
                // logged before it.
                let mine = (repl.run.load(Relaxed), repl.log.last_lsn());
                // The slots it served until our table are all here: ours to serve.
                if !learn && fenced && repl.fenced(&primary, &synced) {
                    acknowledge_fence(&mut stream, receiver.applied(), mine)?;
                    return Ok(());
                }
                // Learned: every slot copied, and the old holder has our table, so it
                // takes no more writes for them; what it sent up to here is applied.
                if learn && synced == streamed && fenced {
                    repl.learned(&streamed);
                    tracing::info!(from = %primary, slots = streamed.len(), "learned slots; serving them");
                    acknowledge_fence(&mut stream, receiver.applied(), mine)?;
                    return Ok(());
                }
            }
            FrameKind::Refused => {
                return Err(LinkError::Refused(
                    String::from_utf8_lossy(&payload).into_owned(),
                ));
            }
            _ => return Err(LinkError::Malformed("an unexpected frame from a primary")),
        }
        let applied = receiver.applied();
        let since = last_ack.elapsed();
        // Promptly while records arrive, at once when asked, and once a second regardless
        // (the primary shows the lag).
        let due = ack_now || applied > acked && since >= ACK_EVERY || since >= IDLE_ACK;
        if due && let Some(reason) = repl.acks_held() {
            // Applied in memory but not kept: the primary's WAIT must not count it.
            if repl.stats.acks_withheld.fetch_add(1, Relaxed) == 0 {
                tracing::warn!(%reason, "not acknowledging replicated writes while they cannot be kept");
            }
            // The last position kept keeps the link alive and shows the primary the lag.
            write_frame(&mut stream, FrameKind::Ack, &[&acked.to_le_bytes()])?;
            last_ack = Instant::now();
        } else if due {
            write_frame(&mut stream, FrameKind::Ack, &[&applied.to_le_bytes()])?;
            acked = applied;
            last_ack = Instant::now();
            remember(&receiver, &synced);
        }
    }
    remember(&receiver, &synced);
    Ok(())
}
