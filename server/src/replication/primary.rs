//! The primary's side of a peer link: the handshake, then the slot stream (snapshot
//! windows of new slots placed at their stamps, log records, heartbeats) on this thread and
//! the replica's acknowledgements on a second one.

use std::io::{BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ringkv_cluster::link::{
    FrameKind, LINK_VERSION, LinkError, MAX_FRAME, PositionReport, Welcome, nonce, read_frame,
    read_u64, write_frame,
};
use ringkv_store::slot_set::SlotSet;
use ringkv_store::slot_stream::{Piece, StreamSender, Window, WindowPart};

use super::{HEARTBEAT, LINK_TIMEOUT, NO_COPY, ReplicaLink, Replication};
use crate::node::unix_ms;

/// Bytes of records per frame.
const RECORDS_PER_FRAME: usize = 256 << 10;
/// How long a link paused by the transfer budget sleeps between looks at its heartbeats.
const PACED_SLICE: Duration = Duration::from_millis(20);

/// Accepts replicas until the node stops; each link gets its own thread.
pub(super) fn accept(repl: Arc<Replication>, listener: TcpListener) {
    for stream in listener.incoming() {
        if repl.stopping.load(Relaxed) {
            return;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let repl = repl.clone();
        let spawned = std::thread::Builder::new()
            .name("ringkv-repl-send".into())
            .spawn(move || {
                let peer = stream.peer_addr().ok();
                if let Err(error) = serve(&repl, stream) {
                    repl.count_link_error(&error);
                    tracing::info!(?peer, %error, "replica link ended");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not serve a replica link");
        }
    }
}

fn refuse(stream: &mut TcpStream, reason: &str) {
    let _ = write_frame(stream, FrameKind::Refused, &[reason.as_bytes()]);
}

fn serve(repl: &Arc<Replication>, mut stream: TcpStream) -> Result<(), LinkError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(LINK_TIMEOUT))?;
    stream.set_write_timeout(Some(LINK_TIMEOUT))?;
    let challenge = nonce();
    write_frame(&mut stream, FrameKind::Challenge, &[&challenge])?;
    let mut payload = Vec::new();
    if read_frame(&mut stream, &mut payload)? != FrameKind::Hello {
        return Err(LinkError::Malformed("expected a Hello"));
    }
    let hello = match repl
        .key
        .open::<ringkv_cluster::link::Hello>(&payload, &challenge)
    {
        Ok(hello) => hello,
        Err(error) => {
            refuse(&mut stream, "the cluster secret does not match");
            return Err(error);
        }
    };
    if hello.version != LINK_VERSION {
        refuse(&mut stream, "unsupported peer link version");
        return Err(LinkError::Refused(format!("version {}", hello.version)));
    }
    if let Some(of) = hello.ask_position {
        // A new primary catching up: where this member stands in `of`'s stream.
        let report = PositionReport {
            node: repl.me,
            position: repl.positions.lock().get(&of).cloned(),
            took_over: repl.took_over_from(&of).ranges(),
            mac: [0; 32],
        };
        let sealed = repl.key.seal(report, &hello.nonce);
        write_frame(&mut stream, FrameKind::Position, &[&sealed])?;
        return Ok(());
    }
    // Stream exactly what was asked, or nothing: views differ only for a moment, and the
    // replica retries with the view it has then.
    let view = repl.view();
    // Judge the request by the holdings of this very table: the manager may not have
    // caught up with the view yet, and a replica accepted for a slot still to be learned
    // would clear the only copy.
    repl.update_holdings(&view);
    let slots = SlotSet::from_ranges(&hello.slots);
    let served = if hello.learn {
        // The slots' new primary takes them from us, who held them.
        let theirs = slots
            .iter()
            .all(|s| view.table.primary(s) == Some(&hello.node));
        if hello.merge {
            // No member holds them whole: it merges in whatever we have.
            theirs
        } else {
            // Learning the tail of a gone member's stream: the slots that stream brought
            // here are served from that copy, counted held or not (the table since may
            // have named a primary it never came from).
            let from_gone = hello
                .tail_of
                .map(|dead| repl.replicated_from_gone(&dead, &slots, &view))
                .unwrap_or_default();
            let rest = slots.difference(&from_gone);
            if theirs && !repl.holds(&rest) && repl.has_no_copy_of(&rest) {
                // Not a passing state: the learner tries the next former owner, or
                // merges every owner's copy when none holds one whole.
                refuse(&mut stream, NO_COPY);
                return Err(LinkError::Refused(NO_COPY.into()));
            }
            theirs && repl.holds(&rest)
        }
    } else {
        // A slot still being learned here is not ours to hand out yet, nor is anything
        // before the first table is judged (a restarted member's copy is older than what
        // the others served while it was down: streamed as ours, it would replace theirs).
        repl.judged_a_table()
            && !repl.learning_any(&slots)
            && slots.iter().all(|s| {
                view.table.primary(s) == Some(&repl.me)
                    && (view.table.is_replica(s, &hello.node) || view.joins_owning(s, &hello.node))
            })
    };
    if slots.is_empty() || !served {
        refuse(&mut stream, "this member's slot table differs; retry");
        return Err(LinkError::Refused("the slot tables differ".into()));
    }
    // A learner resumes only the slots it copied from us already (it says which); a
    // merge takes our whole copy.
    let resume = if hello.merge { &None } else { &hello.resume };
    let (sender, full) = start_stream(repl, resume, &slots)?;
    let welcome = Welcome {
        node: repl.me,
        run: repl.run.load(Relaxed),
        after_lsn: sender.through(),
        slots: slots.ranges(),
        full: full.ranges(),
        mac: [0; 32],
    };
    let sealed = repl.key.seal(welcome, &hello.nonce);
    write_frame(&mut stream, FrameKind::Welcome, &[&sealed])?;
    if full.is_empty() {
        repl.stats.partial_syncs.fetch_add(1, Relaxed);
    } else {
        repl.stats.full_syncs.fetch_add(1, Relaxed);
    }
    let link = Arc::new(ReplicaLink {
        peer: hello.node,
        addr: stream.peer_addr()?,
        slots,
        acked: sender.through().into(),
        synced_at: (if full.is_empty() { 0 } else { u64::MAX }).into(),
        ack_wanted: false.into(),
        alive: true.into(),
        learner: hello.learn,
        last_ack_ms: repl.uptime_ms().into(),
        fence_taken: false.into(),
        fence_position: parking_lot::Mutex::new(None),
    });
    repl.replicas.lock().push(link.clone());
    tracing::info!(replica = %link.peer, slots = link.slots.len(), full = full.len(), "replica link up");
    let reader = {
        let repl = repl.clone();
        let link = link.clone();
        let input = stream.try_clone()?;
        std::thread::Builder::new()
            .name("ringkv-repl-acks".into())
            .spawn(move || read_acks(&repl, &link, input))?
    };
    let result = stream_to(repl, &link, sender, stream.try_clone()?);
    link.alive.store(false, Relaxed);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    repl.replicas.lock().retain(|l| !Arc::ptr_eq(l, &link));
    repl.ack_arrived();
    result
}

/// Resumes from the replica's position when this run's backlog still holds it; the
/// slots it does not hold yet are walked from the store.
fn start_stream(
    repl: &Replication,
    resume: &Option<ringkv_cluster::link::Resume>,
    slots: &SlotSet,
) -> Result<(StreamSender, SlotSet), LinkError> {
    if let Some(resume) = resume.as_ref().filter(|r| r.run == repl.run.load(Relaxed)) {
        let synced = SlotSet::from_ranges(&resume.synced).intersection(slots);
        let full = slots.difference(&synced);
        if let Ok(sender) = StreamSender::start(
            repl.log.clone(),
            resume.applied + 1,
            slots.clone(),
            full.clone(),
            &repl.store,
        ) {
            return Ok((sender, full));
        }
    }
    let sender = StreamSender::start(
        repl.log.clone(),
        repl.log.last_lsn() + 1,
        slots.clone(),
        slots.clone(),
        &repl.store,
    )
    .map_err(|e| LinkError::Io(std::io::Error::other(e)))?;
    Ok((sender, slots.clone()))
}

fn stream_to(
    repl: &Replication,
    link: &ReplicaLink,
    mut sender: StreamSender,
    stream: TcpStream,
) -> Result<(), LinkError> {
    let mut out = BufWriter::with_capacity(256 << 10, stream);
    let mut last_beat = Instant::now();
    let mut table_version = repl.view().table.version();
    // The table version the heartbeats name: a new one only once everything routed by
    // older tables is streamed (the fence a handoff waits for). A new link fences too:
    // commands routed by the table before may still be running.
    let mut announced = 0;
    repl.store.barrier();
    let mut fence = Some((table_version, repl.log.last_lsn()));
    // Until when the transfer budget pauses this link's snapshot.
    let mut paced_until: Option<Instant> = None;
    // This copy's turn among the copies sent at once, held while it is syncing.
    let mut turn = None;
    // Set when a table changed what the slots are to this peer: the link ends at the fence.
    let mut ends_at_fence = false;
    // The peer takes these slots over (it learns them, or presyncs them joining): what
    // the link carries counts as handed off.
    let handoff = link.learner || {
        let view = repl.view();
        link.slots.iter().all(|s| view.joins_owning(s, &link.peer))
    };
    let count_out = |keys: usize, bytes: usize| {
        if handoff {
            repl.handoff.keys_out.fetch_add(keys as u64, Relaxed);
            repl.handoff.bytes_out.fetch_add(bytes as u64, Relaxed);
        }
    };
    while link.alive.load(Relaxed) && !repl.stopping.load(Relaxed) {
        let view = repl.cluster.borrow_view();
        if view.table.version() != table_version {
            // Still the same link only while every slot is still ours and theirs (for a
            // learner: theirs). Otherwise it goes on up to our fence, then ends: the peer
            // applies what we logged under the older table, and asks again.
            let still = link.slots.iter().all(|s| {
                if link.learner {
                    view.table.primary(s) == Some(&link.peer)
                } else {
                    view.table.primary(s) == Some(&repl.me)
                        && (view.table.is_replica(s, &link.peer)
                            || view.joins_owning(s, &link.peer))
                }
            });
            ends_at_fence |= !still;
            table_version = view.table.version();
            drop(view);
            // Commands routed by the older table may still be running; once they are done
            // their records are all in the log, up to its last LSN now.
            repl.store.barrier();
            fence = Some((table_version, repl.log.last_lsn()));
            continue;
        }
        drop(view);
        if sender.syncing() && turn.is_none() {
            turn = repl.transfer.try_copy();
        }
        let piece = if paced_until.is_some_and(|until| Instant::now() < until) {
            // Paused by the transfer budget: heartbeats go on, a slice at a time.
            let left = paced_until.map_or(Duration::ZERO, |u| u - Instant::now());
            std::thread::sleep(left.min(PACED_SLICE));
            None
        } else if sender.syncing() && turn.is_none() {
            // As many copies as the budget allows are being sent: this one waits its turn,
            // its heartbeats going on.
            std::thread::sleep(PACED_SLICE);
            repl.transfer
                .queued_ms
                .fetch_add(PACED_SLICE.as_millis() as u64, Relaxed);
            None
        } else {
            let syncing = sender.syncing();
            let began = Instant::now();
            let piece = sender
                .poll(
                    &repl.store,
                    unix_ms(),
                    RECORDS_PER_FRAME,
                    Duration::from_millis(2),
                )
                .map_err(|e| LinkError::Io(std::io::Error::other(e)))?;
            if syncing {
                let bytes = match &piece {
                    Some(Piece::Records(bytes)) => bytes.len(),
                    Some(Piece::Snapshot { records, .. }) => records.len(),
                    _ => 0,
                };
                let now = Instant::now();
                let pause = repl.transfer.pause(bytes, now - began, now);
                paced_until = (!pause.is_zero()).then(|| now + pause);
            }
            piece
        };
        match piece {
            Some(Piece::Records(bytes)) => {
                count_out(0, bytes.len());
                write_frame(&mut out, FrameKind::Records, &[&bytes])?
            }
            Some(Piece::Snapshot {
                stamp,
                window,
                records,
                keys,
            }) => {
                repl.stats.snapshot_windows.fetch_add(1, Relaxed);
                count_out(keys, records.len());
                write_snapshot(&mut out, stamp, window, &records)?;
            }
            Some(Piece::SnapshotDone { stamp }) => {
                write_frame(&mut out, FrameKind::SnapshotDone, &[&stamp.to_le_bytes()])?;
                link.synced_at.store(stamp, Relaxed);
            }
            None => {}
        }
        if !sender.syncing() {
            turn = None;
        }
        let ack_now = link.ack_wanted.swap(false, Relaxed);
        // A learner takes its slots at the fence, so it hears it only once it has them all.
        let fenced = fence
            .filter(|(_, lsn)| sender.through() >= *lsn && !(link.learner && sender.syncing()));
        if let Some((version, _)) = fenced {
            announced = version;
            fence = None;
        }
        let mut sent: Result<(), LinkError> = Ok(());
        let beat = [
            sender.through().to_le_bytes().as_slice(),
            &[u8::from(ack_now || fenced.is_some())],
            &announced.to_le_bytes(),
        ]
        .concat();
        if ack_now || fenced.is_some() || last_beat.elapsed() >= HEARTBEAT {
            sent = write_frame(&mut out, FrameKind::Heartbeat, &[&beat]).map_err(LinkError::from);
            last_beat = Instant::now();
        }
        if sent.is_ok() && (!sender.syncing() || ack_now || fenced.is_some()) {
            // Caught up (or asked): nothing waits in the buffer.
            sent = out.flush().map_err(LinkError::from);
        }
        if let (Some((_, lsn)), true) = (fenced, ends_at_fence || link.learner) {
            // Its peer takes the slots now: once it acknowledged everything up to the
            // fence (even if the link broke meanwhile) they are handed over, and this side
            // ends the link (the peer waits for that, so no acknowledgement is lost to a
            // reset).
            hand_over(
                repl,
                link,
                lsn,
                sent.is_ok().then_some((&mut out, &beat[..])),
            );
            if sent.is_ok() {
                let _ = write_frame(&mut out, FrameKind::Refused, &[b"the slot table changed"]);
                let _ = out.flush();
            }
            return sent;
        }
        sent?;
    }
    out.flush()?;
    Ok(())
}

/// The link ends at a fence: the slots its peer now serves are handed over once it said
/// it took the fence (an acknowledgement so flagged; bounded wait), so WAIT counts the
/// writes made here before it as held by their new primary, and a drain may leave. The
/// fence heartbeat (`repeat`: the link and the beat) is repeated meanwhile: a peer that had not judged the new
/// table yet when the first came takes the fence at the next one.
fn hand_over(
    repl: &Replication,
    link: &ReplicaLink,
    lsn: u64,
    mut repeat: Option<(&mut BufWriter<TcpStream>, &[u8])>,
) {
    const REPEAT: Duration = Duration::from_millis(10);
    let deadline = Instant::now() + Duration::from_secs(1);
    let taken = || link.fence_taken.load(Relaxed) && link.acked.load(Relaxed) >= lsn;
    let mut last_beat = Instant::now();
    while !taken() && link.alive.load(Relaxed) && Instant::now() < deadline {
        if let Some((out, beat)) = repeat.as_mut().filter(|_| last_beat.elapsed() >= REPEAT) {
            let resent =
                write_frame(&mut **out, FrameKind::Heartbeat, &[beat]).and_then(|()| out.flush());
            if resent.is_err() {
                // Broken: the acknowledgement may still have come.
                repeat = None;
            }
            last_beat = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if !taken() {
        return;
    }
    let view = repl.view();
    let theirs: SlotSet = link
        .slots
        .iter()
        .filter(|&s| view.table.primary(s) == Some(&link.peer))
        .collect();
    // 0 means "not handed": a fence at the very start of the log still counts.
    repl.handed_over(&theirs, lsn.max(1));
    // The slots this node replicates from their new primary now: its copy is that
    // primary's stream up to where it stood at the fence, so the replica link resumes from
    // there instead of copying them whole again (only with no position in its stream yet:
    // one position speaks for one point in it).
    let replicated: SlotSet = theirs
        .iter()
        .filter(|&s| view.table.is_replica(s, &repl.me))
        .collect();
    if let (Some((run, own_lsn)), false) = (*link.fence_position.lock(), replicated.is_empty()) {
        repl.positions
            .lock()
            .entry(link.peer)
            .or_insert_with(|| ringkv_cluster::link::Resume {
                run,
                applied: own_lsn,
                synced: replicated.ranges(),
            });
    }
}

/// A window's records in frames under the limit, cut at record boundaries, each a
/// [`WindowPart`] (an empty window is one frame).
fn write_snapshot(
    out: &mut impl Write,
    stamp: u64,
    window: Window,
    mut records: &[u8],
) -> Result<(), LinkError> {
    let limit = MAX_FRAME / 2;
    loop {
        let mut cut = 0;
        while cut < records.len() {
            let len =
                u32::from_le_bytes(records[cut..cut + 4].try_into().expect("4 bytes")) as usize + 4;
            if cut > 0 && cut + len > limit {
                break;
            }
            cut += len;
        }
        if cut > MAX_FRAME - 16 {
            return Err(LinkError::TooLarge(cut));
        }
        let part = WindowPart {
            stamp,
            window,
            last: cut == records.len(),
            records: &records[..cut],
        };
        write_frame(out, FrameKind::Snapshot, &[&part.header(), part.records])?;
        records = &records[cut..];
        if records.is_empty() {
            return Ok(());
        }
    }
}

fn read_acks(repl: &Replication, link: &ReplicaLink, mut input: TcpStream) {
    if let Err(error) = take_acks(repl, link, &mut input) {
        // Garbage, or an acknowledgement of what was never sent: the link ends.
        repl.count_link_error(&error);
        if link.alive.load(Relaxed) {
            tracing::info!(replica = %link.peer, %error, "replica link dropped");
            let bus = repl.view().node(&link.peer).map(|node| node.bus);
            if let (LinkError::Io(_), Some(bus)) = (&error, bus) {
                // A dead replica's socket closes when it dies.
                repl.cluster.check_peer_gone(link.peer, bus);
            }
        }
    }
    link.alive.store(false, Relaxed);
    repl.ack_arrived();
}

fn take_acks(
    repl: &Replication,
    link: &ReplicaLink,
    input: &mut TcpStream,
) -> Result<(), LinkError> {
    let mut payload = Vec::new();
    while link.alive.load(Relaxed) {
        if read_frame(input, &mut payload)? != FrameKind::Ack {
            return Err(LinkError::Malformed(
                "a replica sends only acknowledgements",
            ));
        }
        let (lsn, rest) = read_u64(&payload)?;
        if rest.first() == Some(&1) {
            // It took our fence: what it serves now came from us, complete.
            if let Ok((run, rest)) = read_u64(&rest[1..])
                && let Ok((own_lsn, _)) = read_u64(rest)
            {
                *link.fence_position.lock() = Some((run, own_lsn));
            }
            link.fence_taken.store(true, Relaxed);
        }
        // Nothing past the log's last record was ever sent: a WAIT must not count it.
        if lsn > repl.log.last_lsn() {
            return Err(LinkError::Malformed(
                "an acknowledgement of records never sent",
            ));
        }
        link.acked.fetch_max(lsn, Relaxed);
        link.last_ack_ms.store(repl.uptime_ms(), Relaxed);
        repl.ack_arrived();
    }
    Ok(())
}
