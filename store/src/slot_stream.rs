//! The stream a primary sends a replica for a set of slots, and its application on the
//! replica: log records of those slots in LSN order, with snapshot windows of the slots
//! the replica syncs from scratch placed exactly at their stamps (see [`crate::snapshot`]).
//! No I/O: the server's peer link ships the [`Piece`]s.
//!
//! Wire shapes (inside the link's frames): records are `through u64` then
//! `(lsn u64, record)*`, where `through` says every record up to it was considered (so an
//! idle or filtered stream still advances the replica); a snapshot window is its
//! [`Window`] bounds and its records without LSNs.
//!
//! A resync never clears the replica's copy first (it may be the only one left of writes a
//! `WAIT` acknowledged): its keys in the synced slots are flagged stale, each window
//! replaces the keys it covers, a tail record for a key whose window passed without it
//! drops the stale key first, and the keys still stale at the end are deleted. Until then
//! the copy holds everything it held plus what the new primary sent.

use std::sync::Arc;
use std::time::Duration;

use crate::change_log::{
    CONTINUED, ChangeLog, Chunk, Cursor, GROUPED, MalformedRecord, Record, RecordKind, TakeError,
    decode_record, encode_record,
};
use crate::replay::apply_record;
use crate::slot_set::SlotSet;
use crate::snapshot::{hash_windows, is_split, split_record, window_hash};
use crate::store::Store;

/// Keys per snapshot window (each is copied under its shard lock).
const KEYS_PER_WINDOW: usize = 256;
/// Most windows per shard: each window scans the whole shard for its keys, so a shard
/// holding one huge slot (a hash tag over a million keys) is walked in at most this many
/// scans rather than one per 256 keys (which was quadratic: minutes for 1,000,000 keys).
const MAX_WINDOWS_PER_SHARD: usize = 32;

/// How many times a window with a big value written to meanwhile is taken again in
/// pieces before it is copied whole under the shard lock (the writes won the race).
const PIECE_COPY_TRIES: usize = 3;

/// What to send next.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Log records (wire shape above).
    Records(Vec<u8>),
    /// A snapshot window and its stamp (an empty one too: it tells the replica the
    /// window passed).
    Snapshot {
        /// The log position the window reflects.
        stamp: u64,
        /// The keys it covers.
        window: Window,
        /// Its records.
        records: Vec<u8>,
        /// How many keys they hold.
        keys: usize,
    },
    /// Every slot synced from scratch is complete once the records up to `stamp` apply.
    SnapshotDone {
        /// The stream position at which the snapshot completed.
        stamp: u64,
    },
}

/// The keys a snapshot window covers: those of the sender's shard slot range (inclusive)
/// whose [`window_hash`] is in `hashes` (inclusive). A shard's windows go in hash order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First and last slot of the sender's shard.
    pub slots: (u16, u16),
    /// Lowest and highest window hash.
    pub hashes: (u64, u64),
}

/// Bytes of a [`Window`] on the wire.
pub const WINDOW_BYTES: usize = 20;

impl Window {
    /// Its wire form.
    pub fn encode(&self) -> [u8; WINDOW_BYTES] {
        let mut out = [0; WINDOW_BYTES];
        out[0..2].copy_from_slice(&self.slots.0.to_le_bytes());
        out[2..4].copy_from_slice(&self.slots.1.to_le_bytes());
        out[4..12].copy_from_slice(&self.hashes.0.to_le_bytes());
        out[12..20].copy_from_slice(&self.hashes.1.to_le_bytes());
        out
    }

    /// Reads one off the front of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<(Window, &[u8]), MalformedRecord> {
        let (head, rest) = bytes
            .split_first_chunk::<WINDOW_BYTES>()
            .ok_or(MalformedRecord("short window bounds"))?;
        let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
        let window = Window {
            slots: (u16_at(0), u16_at(2)),
            hashes: (u64_at(4), u64_at(12)),
        };
        if window.slots.0 > window.slots.1 || window.hashes.0 > window.hashes.1 {
            return Err(MalformedRecord("window bounds out of order"));
        }
        Ok((window, rest))
    }
}

/// One frame's worth of a snapshot window: `stamp u64 | window | last u8 | records`.
#[derive(Debug, Clone, Copy)]
pub struct WindowPart<'a> {
    /// The log position the window reflects.
    pub stamp: u64,
    /// The keys the window covers.
    pub window: Window,
    /// The window's final part.
    pub last: bool,
    /// Records (no LSNs), cut at record boundaries.
    pub records: &'a [u8],
}

impl<'a> WindowPart<'a> {
    /// Its header; the records follow it on the wire.
    pub fn header(&self) -> [u8; 8 + WINDOW_BYTES + 1] {
        let mut out = [0; 8 + WINDOW_BYTES + 1];
        out[..8].copy_from_slice(&self.stamp.to_le_bytes());
        out[8..8 + WINDOW_BYTES].copy_from_slice(&self.window.encode());
        out[8 + WINDOW_BYTES] = u8::from(self.last);
        out
    }

    /// Reads one from a frame's payload.
    pub fn decode(payload: &'a [u8]) -> Result<WindowPart<'a>, MalformedRecord> {
        let (stamp, rest) = payload
            .split_first_chunk::<8>()
            .ok_or(MalformedRecord("short window stamp"))?;
        let (window, rest) = Window::decode(rest)?;
        let (&last, records) = rest
            .split_first()
            .ok_or(MalformedRecord("a window part without its flag"))?;
        Ok(WindowPart {
            stamp: u64::from_le_bytes(*stamp),
            window,
            last: last != 0,
            records,
        })
    }
}

/// A shard being walked: its index, its hash windows, the next window.
type ShardWalk = (usize, Vec<(u64, u64)>, usize);

struct Walk {
    slots: SlotSet,
    /// Shards still to walk.
    shards: Vec<usize>,
    /// The shard being walked, its windows and the next one.
    current: Option<ShardWalk>,
}

/// The primary's side: a log cursor, the slots, and a snapshot walk when some slots sync
/// from scratch.
pub struct StreamSender {
    log: Arc<ChangeLog>,
    /// Always present until drop (which hands it back to the log).
    cursor: Option<Cursor>,
    slots: SlotSet,
    /// A chunk taken from the log and how many of its records were considered.
    pending: Option<(Arc<Chunk>, usize)>,
    /// The last LSN considered.
    through: u64,
    /// Grouped records were sent since the last Commit.
    in_group: bool,
    /// The pieces of a big record not sent yet: frames stay under their limit.
    split: Option<SplitRecord>,
    walk: Option<Walk>,
    /// A window copied and waiting for the stream to reach its stamp.
    window: Option<(u64, Window, Vec<u8>, usize)>,
}

impl StreamSender {
    /// Streams `slots` from `from_lsn` on; `full` (a subset) are walked from the store
    /// first. Fails when the log no longer holds `from_lsn` (the consumer is optional: a
    /// slow replica is dropped, never holds writers back).
    pub fn start(
        log: Arc<ChangeLog>,
        from_lsn: u64,
        slots: SlotSet,
        full: SlotSet,
        store: &Store,
    ) -> Result<StreamSender, TakeError> {
        let cursor = log.subscribe(from_lsn, false)?;
        let walk = (!full.is_empty()).then(|| Walk {
            shards: (0..store.shard_count())
                .rev()
                .filter(|&i| {
                    let range = store.shard_slots(i);
                    full.intersects_range(range.start, range.end - 1)
                })
                .collect(),
            slots: full,
            current: None,
        });
        Ok(StreamSender {
            log,
            cursor: Some(cursor),
            slots,
            pending: None,
            split: None,
            through: from_lsn.saturating_sub(1),
            in_group: false,
            walk,
            window: None,
        })
    }

    /// The last LSN considered: every record of the slots up to it has been handed out.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// True while slots are still being walked.
    pub fn syncing(&self) -> bool {
        self.walk.is_some() || self.window.is_some()
    }

    /// The next piece, up to about `budget` bytes of records; waits up to `wait` for new
    /// records when there is nothing else. `None`: nothing to send now.
    pub fn poll(
        &mut self,
        store: &Store,
        now: u64,
        budget: usize,
        wait: Duration,
    ) -> Result<Option<Piece>, TakeError> {
        loop {
            if let Some((stamp, ..)) = &self.window {
                let stamp = *stamp;
                if self.through < stamp {
                    let records = self.tail(stamp, budget, Duration::ZERO)?;
                    if let Some(records) = records {
                        return Ok(Some(Piece::Records(records)));
                    }
                    continue;
                }
                let (stamp, window, records, keys) = self.window.take().expect("checked above");
                return Ok(Some(Piece::Snapshot {
                    stamp,
                    window,
                    records,
                    keys,
                }));
            }
            let Some(walk) = &mut self.walk else {
                return Ok(self.tail(u64::MAX, budget, wait)?.map(Piece::Records));
            };
            let Some((shard, windows, next)) = &mut walk.current else {
                let Some(shard) = walk.shards.pop() else {
                    self.walk = None;
                    return Ok(Some(Piece::SnapshotDone {
                        stamp: self.through,
                    }));
                };
                let len = store.shard_len(shard);
                let per_window = KEYS_PER_WINDOW.max(len.div_ceil(MAX_WINDOWS_PER_SHARD));
                let windows = hash_windows(len, per_window);
                walk.current = Some((shard, windows, 0));
                continue;
            };
            let (shard, hashes) = (*shard, windows[*next]);
            *next += 1;
            if *next == windows.len() {
                walk.current = None;
            }
            let mut records = Vec::new();
            // A big value written to while it was copied in pieces: the window is taken
            // again, at last whole (bounded).
            let mut tries = 0;
            let (stamp, keys) = loop {
                let in_pieces = tries < PIECE_COPY_TRIES;
                match store.snapshot_window(
                    shard,
                    hashes,
                    &walk.slots,
                    now,
                    &mut records,
                    in_pieces,
                ) {
                    Some(done) => break done,
                    None => tries += 1,
                }
            };
            let range = store.shard_slots(shard);
            let window = Window {
                slots: (range.start, range.end - 1),
                hashes,
            };
            self.window = Some((stamp, window, records, keys));
        }
    }

    /// Records of the slots with LSN ≤ `limit`, at most about `budget` bytes; `None` when
    /// there were none to consider.
    fn tail(
        &mut self,
        limit: u64,
        budget: usize,
        wait: Duration,
    ) -> Result<Option<Vec<u8>>, TakeError> {
        let mut out = Vec::new();
        out.extend_from_slice(&0u64.to_le_bytes());
        let start = self.through;
        while out.len() < budget && self.through < limit {
            if let Some(split) = &mut self.split {
                if !split.send(&mut out, budget) {
                    break;
                }
                self.through = split.lsn;
                self.split = None;
                continue;
            }
            let Some((chunk, used)) = &mut self.pending else {
                let wait = if self.through == start {
                    wait
                } else {
                    Duration::ZERO
                };
                let cursor = self.cursor.as_mut().expect("the cursor lives until drop");
                match self.log.take(cursor, wait)? {
                    Some(chunk) => {
                        self.pending = Some((chunk, 0));
                        continue;
                    }
                    None => {
                        self.through = self.through.max(cursor.next_lsn() - 1);
                        break;
                    }
                }
            };
            let mut exhausted = true;
            for record in chunk.records().skip(*used) {
                let record = record.map_err(|_| TakeError::Closed)?;
                if record.lsn <= self.through {
                    // The first chunk a cursor takes may start before its position.
                    *used += 1;
                    continue;
                }
                if record.lsn > limit || out.len() >= budget {
                    exhausted = false;
                    break;
                }
                *used += 1;
                self.through = record.lsn;
                if !keep(&record, &self.slots, &mut self.in_group) {
                    continue;
                }
                if !is_split(&record) {
                    out.extend_from_slice(&record.lsn.to_le_bytes());
                    let (kind, flags, slot) = (record.kind, record.flags, record.slot);
                    encode_record(&mut out, kind, flags, slot, record.key, record.body);
                    continue;
                }
                // A big record goes as several of the same LSN, each about a piece, over
                // as many frames as they need; the position stays before it until the last.
                self.split = Some(SplitRecord::new(&record).map_err(|_| TakeError::Closed)?);
                self.through = record.lsn - 1;
                exhausted = false;
                break;
            }
            if exhausted {
                let (chunk, _) = self.pending.take().expect("a pending chunk");
                self.log.recycle(chunk);
            }
        }
        // Pieces of a split record may go while the position stays before it.
        if self.through == start && out.len() == 8 {
            return Ok(None);
        }
        out[..8].copy_from_slice(&self.through.to_le_bytes());
        Ok(Some(out))
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        if let Some(cursor) = self.cursor.take() {
            self.log.unsubscribe(cursor);
        }
    }
}

/// Whether a record goes to a replica of `slots`: its slot's records, a Clear (the
/// replica clears these slots), and the Commit of a group it got records of.
/// A big record's pieces ([`split_record`]), each `lsn u64 | record`, all but the last
/// flagged [`CONTINUED`], and how many bytes of them were sent.
#[derive(Debug)]
struct SplitRecord {
    lsn: u64,
    pieces: Vec<u8>,
    sent: usize,
}

impl SplitRecord {
    fn new(record: &Record<'_>) -> Result<SplitRecord, MalformedRecord> {
        let mut pieces = Vec::with_capacity(record.body.len() + 4096);
        let mut last = 0;
        split_record(record, |kind, body| {
            last = pieces.len();
            pieces.extend_from_slice(&record.lsn.to_le_bytes());
            let flags = record.flags | CONTINUED;
            encode_record(&mut pieces, kind, flags, record.slot, record.key, body);
        })?;
        // The flags byte of the last piece: after its LSN, length and kind.
        pieces[last + 8 + 5] &= !CONTINUED;
        Ok(SplitRecord {
            lsn: record.lsn,
            pieces,
            sent: 0,
        })
    }

    /// Moves whole pieces to `out` while it is under `budget` (at least one); true once
    /// the last is out.
    fn send(&mut self, out: &mut Vec<u8>, budget: usize) -> bool {
        while self.sent < self.pieces.len() {
            let at = self.sent + 8;
            let len = u32::from_le_bytes(self.pieces[at..at + 4].try_into().expect("4 bytes"));
            let end = at + 4 + len as usize;
            out.extend_from_slice(&self.pieces[self.sent..end]);
            self.sent = end;
            if out.len() >= budget {
                break;
            }
        }
        self.sent == self.pieces.len()
    }
}

fn keep(record: &Record<'_>, slots: &SlotSet, in_group: &mut bool) -> bool {
    match record.kind {
        RecordKind::Clear => true,
        RecordKind::Commit => std::mem::take(in_group),
        _ if slots.contains(record.slot) => {
            if record.flags & GROUPED != 0 {
                *in_group = true;
            }
            true
        }
        _ => false,
    }
}

/// The replica's side: applies pieces in order, holds a group until its Commit, and
/// knows how far it has applied.
#[derive(Debug)]
pub struct StreamReceiver {
    slots: SlotSet,
    /// Grouped records waiting for their Commit: (first LSN, `(lsn, record)*`).
    group: Option<(u64, Vec<u8>)>,
    /// The pieces of a split record waiting for its last ([`CONTINUED`]): (LSN,
    /// `(lsn, record)*`).
    split: Option<(u64, Vec<u8>)>,
    applied: u64,
    /// Slots being resynced: their keys not rewritten yet are flagged stale.
    syncing: SlotSet,
    /// How far the resync's windows went: first slot of a sender shard → (its last slot,
    /// the highest window hash passed).
    passed: std::collections::BTreeMap<u16, (u16, u64)>,
    /// Keys applied from snapshot windows, over the receiver's life.
    snapshot_keys: u64,
    /// A merge ([`Self::start_merge`]): the snapshot only fills in keys missing here.
    merge: bool,
    /// In a merge, the key whose pieces are being filled in (a big value comes split).
    filling: Option<Vec<u8>>,
}

/// Most bytes a group may hold before its Commit (far above any command's records).
const MAX_GROUP_BYTES: usize = 1 << 30;

impl StreamReceiver {
    /// A receiver of `slots` that has applied everything up to `applied`.
    pub fn new(slots: SlotSet, applied: u64) -> StreamReceiver {
        StreamReceiver {
            slots,
            group: None,
            split: None,
            applied,
            syncing: SlotSet::new(),
            passed: std::collections::BTreeMap::new(),
            snapshot_keys: 0,
            merge: false,
            filling: None,
        }
    }

    /// The sender's copy of `full` is merged into ours rather than replacing it: no copy
    /// survived whole (a whole cluster restarted), so each holder's keys count. The
    /// snapshot adds the keys missing here and keeps the ones we have (ours came from
    /// the same history, and a restarted primary's are the newest); nothing is swept, and
    /// the sender's log records are not applied (it does not serve these slots, and its
    /// own resyncs and expiries say nothing of ours).
    pub fn start_merge(&mut self, full: &SlotSet) {
        self.syncing = full.intersection(&self.slots);
        self.passed.clear();
        self.merge = true;
    }

    /// The sender resyncs `full` (a subset of the slots): their keys here are flagged
    /// stale, to be replaced window by window and swept at [`Self::snapshot_done`]. Returns
    /// how many keys were flagged.
    pub fn start_sync(&mut self, store: &Store, full: &SlotSet) -> usize {
        self.syncing = full.intersection(&self.slots);
        self.passed.clear();
        store.mark_stale(&self.syncing)
    }

    /// The sender's snapshot completed at `stamp`: the keys the resync never rewrote were
    /// not on the primary and are deleted. Returns how many.
    pub fn snapshot_done(&mut self, store: &Store, stamp: u64) -> usize {
        self.heartbeat(stamp);
        self.finish_sync(store)
    }

    fn finish_sync(&mut self, store: &Store) -> usize {
        let swept = if self.merge {
            0
        } else {
            store.sweep_stale(&self.syncing)
        };
        self.syncing = SlotSet::new();
        self.passed.clear();
        swept
    }

    /// True when the resync's window covering `key` (in `slot`) has been applied.
    fn window_passed(&self, slot: u16, key: &[u8]) -> bool {
        match self.passed.range(..=slot).next_back() {
            Some((_, &(last, through))) if slot <= last => window_hash(key) <= through,
            _ => false,
        }
    }

    /// The slots it receives.
    pub fn slots(&self) -> &SlotSet {
        &self.slots
    }

    /// Everything up to this LSN is applied (a pending group holds it back).
    pub fn applied(&self) -> u64 {
        match &self.group {
            Some((first, _)) => self.applied.min(first - 1),
            None => self.applied,
        }
    }

    /// Applies a records piece. `accept(slot)` says whether the sender serves the slot
    /// (fencing); the first record it refuses stops the piece unapplied, and the count of
    /// refused records (then at least 1) is returned.
    pub fn apply_records(
        &mut self,
        store: &Store,
        bytes: &[u8],
        now: u64,
        accept: impl Fn(u16) -> bool,
    ) -> Result<usize, MalformedRecord> {
        let (through, mut rest) = bytes
            .split_first_chunk::<8>()
            .ok_or(MalformedRecord("short records piece"))?;
        let through = u64::from_le_bytes(*through);
        let floor = self.applied;
        while !rest.is_empty() {
            let (lsn, tail) = rest
                .split_first_chunk::<8>()
                .ok_or(MalformedRecord("short record LSN"))?;
            let lsn = u64::from_le_bytes(*lsn);
            let (record, used) = decode_record(tail, lsn)?;
            let raw = &rest[..8 + used];
            rest = &tail[used..];
            // A piece of a split record may be one past the frame's position: the position
            // moves to it with its last piece.
            let continued = record.flags & CONTINUED != 0 && lsn == through + 1;
            if lsn > through && !continued {
                return Err(MalformedRecord("a record past its piece"));
            }
            if lsn <= floor && self.group.is_none() {
                // Applied already (a resend): applying it again could double an APPEND.
                // (The pieces of one split record share an LSN and come in one frame.)
                continue;
            }
            if record.kind == RecordKind::Commit {
                if let Some((_, group)) = self.group.take() {
                    let refused = self.apply_all(store, &group, now, &accept)?;
                    if refused > 0 {
                        // Applied stays just before it: a later link resumes exactly here.
                        return Ok(refused);
                    }
                }
                self.applied = lsn;
                continue;
            }
            if record.flags & GROUPED != 0 {
                let group = self.group.get_or_insert_with(|| (lsn, Vec::new()));
                if group.1.len() + raw.len() > MAX_GROUP_BYTES {
                    return Err(MalformedRecord("a group without its commit"));
                }
                group.1.extend_from_slice(raw);
                continue;
            }
            if record.flags & CONTINUED != 0 {
                let split = self.split.get_or_insert_with(|| (lsn, Vec::new()));
                if split.0 != lsn || split.1.len() + raw.len() > MAX_GROUP_BYTES {
                    return Err(MalformedRecord("a split record without its last piece"));
                }
                split.1.extend_from_slice(raw);
                continue;
            }
            if let Some((first, pieces)) = self.split.take() {
                if first != lsn {
                    return Err(MalformedRecord("a split record without its last piece"));
                }
                // Applied a piece at a time (a lock taken per piece, never for the whole
                // value), all of them together: a link that drops before the last piece
                // arrived resends the record whole, and none of it was applied.
                let refused = self.apply_all(store, &pieces, now, &accept)?;
                if refused > 0 {
                    return Ok(refused);
                }
            }
            let refused = self.apply_one(store, &record, now, &accept)?;
            if refused > 0 {
                return Ok(refused);
            }
            self.applied = lsn;
        }
        if let Some((lsn, _)) = &self.split
            && through >= *lsn
        {
            return Err(MalformedRecord("a split record without its last piece"));
        }
        self.applied = self.applied.max(through);
        Ok(0)
    }

    /// Applies part of a snapshot window. `accept(slot)` is the fencing rule of [`Self::apply_records`]: a refused
    /// record stops the window and is counted.
    pub fn apply_snapshot(
        &mut self,
        store: &Store,
        part: WindowPart<'_>,
        now: u64,
        accept: impl Fn(u16) -> bool,
    ) -> Result<usize, MalformedRecord> {
        let WindowPart {
            stamp,
            window,
            last,
            mut records,
        } = part;
        while !records.is_empty() {
            let (record, used) = decode_record(records, 0)?;
            records = &records[used..];
            if !self.syncing.contains(record.slot)
                || record.slot < window.slots.0
                || record.slot > window.slots.1
            {
                return Err(MalformedRecord(
                    "a snapshot record outside the slots being synced",
                ));
            }
            if !accept(record.slot) {
                return Ok(1);
            }
            if self.merge && self.filling.as_deref() != Some(record.key) {
                if store.contains(record.key, now) {
                    continue;
                }
                self.filling = Some(record.key.to_vec());
            }
            apply_record(store, &record, now)?;
            self.snapshot_keys += 1;
        }
        if last {
            let through = self
                .passed
                .entry(window.slots.0)
                .or_insert((window.slots.1, window.hashes.1));
            *through = (window.slots.1, through.1.max(window.hashes.1));
        }
        self.applied = self.applied.max(stamp);
        Ok(0)
    }

    /// Keys applied from snapshot windows so far.
    pub fn snapshot_keys(&self) -> u64 {
        self.snapshot_keys
    }

    /// The sender says everything up to `lsn` was sent (an idle stream's heartbeat).
    pub fn heartbeat(&mut self, lsn: u64) {
        self.applied = self.applied.max(lsn);
    }

    fn apply_all(
        &self,
        store: &Store,
        mut bytes: &[u8],
        now: u64,
        accept: &impl Fn(u16) -> bool,
    ) -> Result<usize, MalformedRecord> {
        let mut refused = 0;
        while !bytes.is_empty() {
            let (lsn, tail) = bytes
                .split_first_chunk::<8>()
                .ok_or(MalformedRecord("short record LSN"))?;
            let (record, used) = decode_record(tail, u64::from_le_bytes(*lsn))?;
            bytes = &tail[used..];
            refused += self.apply_one(store, &record, now, accept)?;
        }
        Ok(refused)
    }

    fn apply_one(
        &self,
        store: &Store,
        record: &Record<'_>,
        now: u64,
        accept: &impl Fn(u16) -> bool,
    ) -> Result<usize, MalformedRecord> {
        match record.kind {
            // A merge takes the sender's snapshot, not its changes (see `start_merge`).
            _ if self.merge => Ok(0),
            RecordKind::Clear => {
                store.clear_slots(&self.slots);
                Ok(0)
            }
            RecordKind::Commit => Ok(0),
            _ if !self.slots.contains(record.slot) => {
                Err(MalformedRecord("a record outside the link's slots"))
            }
            _ if !accept(record.slot) => Ok(1),
            _ => {
                if self.syncing.contains(record.slot) && self.window_passed(record.slot, record.key)
                {
                    // Its window passed without it: the primary did not have it then, so
                    // what is here is from the old history and goes before this applies.
                    store.drop_if_stale(record.key);
                }
                apply_record(store, record, now).map(|()| 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change_log::LogLimits;
    use crate::slot::key_slot;
    use crate::value::Value;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const NOW: u64 = 1_000_000;

    fn key(i: u32) -> Vec<u8> {
        format!("key:{i}").into_bytes()
    }

    fn random_write(store: &Store, rng: &mut SmallRng, keys: u32) {
        let k = key(rng.random_range(0..keys));
        match rng.random_range(0..16) {
            0 => store.write(&k, NOW, |s| {
                let ttl = rng.random_bool(0.3).then_some(NOW + 100_000);
                s.set(
                    Value::Str(vec![b'a'; rng.random_range(1..200)]),
                    ttl.or(Some(0)),
                )
            }),
            1 => store.write(&k, NOW, |s| {
                if s.append(b"+suffix").is_err() {
                    s.remove();
                }
            }),
            2 => store.write(&k, NOW, |s| {
                if s.hash_insert(format!("f{}", rng.random_range(0..20)).as_bytes(), b"v")
                    .is_err()
                {
                    s.remove();
                }
            }),
            3 => store.write(&k, NOW, |s| {
                let _ = s.hash_remove(format!("f{}", rng.random_range(0..20)).as_bytes());
            }),
            4 => store.write(&k, NOW, |s| {
                s.remove();
            }),
            // Lists: pushes at either end, pops, and the edits by position and value.
            6 => store.write(&k, NOW, |s| {
                let items = [&b"x"[..], b"yy", b"z"];
                if s.list_push(rng.random_bool(0.5), &items[..rng.random_range(1..4)])
                    .is_err()
                {
                    s.remove();
                }
            }),
            7 => store.write(&k, NOW, |s| {
                let _ = s.list_pop(rng.random_bool(0.5), rng.random_range(1..3));
            }),
            8 => store.write(&k, NOW, |s| {
                let at = rng.random_range(0..4);
                let _ = match rng.random_range(0..4) {
                    0 => s.list_set(at, b"set").map(|_| ()),
                    1 => s.list_insert(at, b"ins").map(|_| ()),
                    2 => s.list_remove(rng.random_range(-1..2), b"yy").map(|_| ()),
                    _ => s.list_trim(at % 2, at / 2),
                };
            }),
            // Sets: members added and removed (an emptied set is deleted).
            9 => store.write(&k, NOW, |s| {
                let members = [&b"1"[..], b"m", b"22"];
                if s.set_add(&members[..rng.random_range(1..4)]).is_err() {
                    s.remove();
                }
            }),
            10 => store.write(&k, NOW, |s| {
                let _ = s.set_remove(&[[&b"1"[..], b"m", b"22"][rng.random_range(0..3)]]);
            }),
            // Sorted sets: scores set, members removed, the lowest popped.
            11 => store.write(&k, NOW, |s| {
                let score = rng.random_range(-2..3) as f64;
                if s.zset_set(
                    &[(score, &b"z1"[..]), (score + 0.5, b"z2")][..rng.random_range(1..3)],
                )
                .is_err()
                {
                    s.remove();
                }
            }),
            12 => store.write(&k, NOW, |s| {
                let _ = if rng.random_bool(0.5) {
                    s.zset_remove(&[b"z2"]).map(|_| ())
                } else {
                    s.zset_take(0, 1, false).map(|_| ())
                };
            }),
            // Streams: appends (some trimmed), deletes and XSETID.
            13 => store.write(&k, NOW, |s| {
                let Ok(stream) = s.stream() else {
                    s.remove();
                    return;
                };
                let id = stream.map_or(crate::StreamId::new(1, 0), |st| {
                    st.last_id().next().expect("far from the top")
                });
                let fields = crate::stream::encode_fields([&b"f"[..], b"v"]);
                let trim = rng.random_bool(0.3).then_some(crate::Trim {
                    by: crate::TrimBy::MaxLen(rng.random_range(0..4)),
                    approx: false,
                    limit: 0,
                });
                let _ = s.stream_add(vec![(id, fields)], trim);
            }),
            14 => store.write(&k, NOW, |s| {
                let Ok(Some(stream)) = s.stream() else {
                    return;
                };
                let (last, added) = (stream.last_id(), stream.entries_added());
                let first = stream.first().map(|(id, _)| id);
                let _ = match (rng.random_bool(0.5), first) {
                    (true, Some(id)) => s.stream_delete(&[id]).map(|_| ()),
                    _ => s.stream_set_meta(crate::StreamId::new(last.ms + 1, 0), added + 1, last),
                };
            }),
            _ => store.write(&k, NOW, |s| {
                s.set_expires_at(rng.random_bool(0.5).then_some(NOW + 50_000));
            }),
        }
    }

    fn state(store: &Store, slots: &SlotSet) -> Vec<(Vec<u8>, Value, Option<u64>)> {
        let mut keys: Vec<Vec<u8>> = store
            .keys(b"*", NOW)
            .into_iter()
            .filter(|k| slots.contains(key_slot(k)))
            .collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|k| {
                store
                    .inspect(&k, NOW, |e| e.map(|e| (e.value.clone(), e.expires_at)))
                    .map(|(v, at)| (k, v, at))
            })
            .collect()
    }

    /// A primary with a change log and `writes` random writes over `keys` keys.
    fn primary_with_log(seed: u64, writes: usize, keys: u32) -> (Arc<Store>, Arc<ChangeLog>) {
        let primary = Arc::new(Store::builder().shards(4).seed(seed).build());
        let log = Arc::new(ChangeLog::new(
            1,
            LogLimits {
                backlog: 256 << 20,
                ..LogLimits::default()
            },
        ));
        primary.attach_change_log(log.clone());
        let mut rng = SmallRng::seed_from_u64(seed);
        for _ in 0..writes {
            random_write(&primary, &mut rng, keys);
        }
        (primary, log)
    }

    /// Streams `slots` from the primary to `replica` from scratch while `write` runs on
    /// another thread, delivering at most `pieces` pieces (`usize::MAX`: to the end).
    /// Returns the receiver and whether the snapshot completed.
    /// [`stream_into`]'s modes: replace the replica's copy, or merge into it.
    const RESYNC: bool = false;
    const MERGE: bool = true;

    /// Streams `slots` from `primary` into `replica` for at most `pieces` pieces while
    /// `write` runs at the primary: a resync, or a merge (`merge`).
    fn stream_into(
        primary: &Arc<Store>,
        log: &Arc<ChangeLog>,
        replica: &Store,
        slots: &SlotSet,
        pieces: usize,
        write: impl FnOnce(&Store) + Send + 'static,
        merge: bool,
    ) -> (StreamReceiver, bool) {
        let writer = {
            let primary = primary.clone();
            std::thread::spawn(move || write(&primary))
        };
        let mut sender = StreamSender::start(
            log.clone(),
            log.last_lsn() + 1,
            slots.clone(),
            slots.clone(),
            primary,
        )
        .unwrap();
        let mut receiver = StreamReceiver::new(slots.clone(), sender.through());
        if merge {
            receiver.start_merge(slots);
        } else {
            receiver.start_sync(replica, slots);
        }
        let mut done = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        for _ in 0..pieces {
            assert!(std::time::Instant::now() < deadline, "never caught up");
            match sender
                .poll(primary, NOW, 64 << 10, Duration::from_millis(1))
                .unwrap()
            {
                Some(Piece::Records(bytes)) => {
                    assert_eq!(
                        receiver.apply_records(replica, &bytes, NOW, |_| true),
                        Ok(0)
                    );
                }
                Some(Piece::Snapshot {
                    stamp,
                    window,
                    records,
                    ..
                }) => {
                    let part = WindowPart {
                        stamp,
                        window,
                        last: true,
                        records: &records,
                    };
                    let refused = receiver
                        .apply_snapshot(replica, part, NOW, |_| true)
                        .unwrap();
                    assert_eq!(refused, 0);
                }
                Some(Piece::SnapshotDone { stamp }) => {
                    receiver.snapshot_done(replica, stamp);
                    done = true;
                }
                None => {}
            }
            if writer.is_finished() && !sender.syncing() && sender.through() == log.last_lsn() {
                break;
            }
        }
        writer.join().unwrap();
        (receiver, done)
    }

    fn streamed_slots() -> SlotSet {
        (0..16384u16).filter(|s| s % 3 != 0).collect()
    }

    /// The heart of replication: a snapshot walked while writers keep changing the keys,
    /// interleaved with the log at each window's stamp, rebuilds exactly the primary's
    /// state of the streamed slots, and nothing of the others.
    #[test]
    fn a_snapshot_under_concurrent_writes_plus_the_tail_rebuilds_the_primary() {
        for seed in 0..6u64 {
            let (primary, log) = primary_with_log(seed, 5_000, 3_000);
            let slots = streamed_slots();
            let replica = Store::builder().shards(2).build();
            let (receiver, done) = stream_into(
                &primary,
                &log,
                &replica,
                &slots,
                usize::MAX,
                move |p| {
                    let mut rng = SmallRng::seed_from_u64(seed + 100);
                    for _ in 0..20_000 {
                        random_write(p, &mut rng, 3_000);
                    }
                },
                RESYNC,
            );
            assert!(done, "seed {seed}: the snapshot never completed");
            assert_eq!(receiver.applied(), log.last_lsn());
            assert_eq!(
                state(&replica, &slots),
                state(&primary, &slots),
                "seed {seed}"
            );
            let others = SlotSet::from_ranges(&[(0, 16383)]).difference(&slots);
            assert!(
                state(&replica, &others).is_empty(),
                "seed {seed}: foreign slots arrived"
            );
        }
    }

    /// Big values of every kind are copied a piece at a time with the shard unlocked in
    /// between; writers keep changing them meanwhile (appending to the string, setting the
    /// hash's fields, pushing to and popping from the list, adding set and sorted-set
    /// members, adding stream entries; a piece copy that sees its key changed takes the
    /// window again). The replica still ends with exactly the primary's state, big values
    /// included.
    #[test]
    fn big_values_copied_in_pieces_under_writes_rebuild_the_primary() {
        use crate::snapshot::{BIG_VALUE_BYTES, copied_in_pieces};
        use crate::stream::StreamId;
        const KINDS: usize = 6;
        let slots = streamed_slots();
        // Named apart from the random writes' keys, which would replace them with small ones.
        let big_keys: Vec<Vec<u8>> = (0..400u32)
            .map(|i| format!("big:{i}").into_bytes())
            .filter(|k| slots.contains(key_slot(k)))
            .take(KINDS)
            .collect();
        let stream_entry = |n: u64| {
            let mut fields = Vec::new();
            crate::change_log::put_item(&mut fields, b"field");
            crate::change_log::put_item(&mut fields, format!("{n:024}").as_bytes());
            (StreamId { ms: n, seq: 0 }, fields.into_boxed_slice())
        };
        for seed in 0..3u64 {
            let (primary, log) = primary_with_log(seed, 2_000, 3_000);
            for (i, k) in big_keys.iter().enumerate() {
                primary.write(k, NOW, |s| {
                    s.remove();
                    let names: Vec<Vec<u8>> = (0..80_000u32)
                        .map(|n| format!("member:{n:08}").into_bytes())
                        .collect();
                    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
                    match i % KINDS {
                        0 => s.set(Value::Str(vec![b'b'; 3 * BIG_VALUE_BYTES]), Some(0)),
                        1 => {
                            for name in &names {
                                let _ = s.hash_insert(name, b"0123456789abcdef");
                            }
                        }
                        2 => {
                            let _ = s.list_push(false, &names);
                        }
                        3 => {
                            let _ = s.set_add(&names);
                        }
                        4 => {
                            let entries: Vec<(f64, &[u8])> = names
                                .iter()
                                .enumerate()
                                .map(|(n, name)| ((n % 977) as f64, *name))
                                .collect();
                            let _ = s.zset_set(&entries);
                        }
                        _ => {
                            let _ = s.stream_add((1..=80_000).map(stream_entry).collect(), None);
                        }
                    }
                });
            }
            let big_now = big_keys
                .iter()
                .filter(|k| primary.read(k, NOW, |v| v.is_some_and(copied_in_pieces)))
                .count();
            assert_eq!(big_now, big_keys.len(), "every big key is copied in pieces");
            let replica = Store::builder().shards(2).build();
            let writing = big_keys.clone();
            let (receiver, done) = stream_into(
                &primary,
                &log,
                &replica,
                &slots,
                usize::MAX,
                move |p| {
                    let mut rng = SmallRng::seed_from_u64(seed + 200);
                    // Long enough to overlap the whole snapshot.
                    let until = std::time::Instant::now() + Duration::from_millis(400);
                    let mut n = 0u64;
                    while std::time::Instant::now() < until {
                        n += 1;
                        random_write(p, &mut rng, 3_000);
                        // Seldom enough that some copies of a big value finish unchanged,
                        // often enough that others see it change between pieces.
                        if n % 1024 != 0 {
                            continue;
                        }
                        let which = (n / 1024) as usize % writing.len();
                        let new = format!("new:{n}").into_bytes();
                        p.write(&writing[which], NOW, |s| match which % KINDS {
                            0 => {
                                let _ = s.append(b"+tail");
                            }
                            1 => {
                                let _ = s.hash_insert(&new, b"v");
                            }
                            2 => {
                                let _ = s.list_push(n % 2 == 0, &[&new]);
                                if n % 3 == 0 {
                                    let _ = s.list_pop(n % 2 == 1, 1);
                                }
                            }
                            3 => {
                                let _ = s.set_add(&[&new]);
                            }
                            4 => {
                                let _ = s.zset_set(&[((n % 1013) as f64, &new)]);
                            }
                            _ => {
                                let _ = s.stream_add(vec![stream_entry(80_000 + n)], None);
                            }
                        });
                    }
                },
                RESYNC,
            );
            assert!(done, "seed {seed}: the snapshot never completed");
            assert_eq!(receiver.applied(), log.last_lsn());
            assert!(
                state(&replica, &slots) == state(&primary, &slots),
                "seed {seed}: the replica differs from the primary"
            );
        }
    }

    /// A write bigger than a frame (a 3 MB APPEND, a 100,000-field HSET, a 200,000-element
    /// RPUSH) travels as pieces over many frames, each about the budget; none of a record's
    /// pieces is applied before its last arrives, and a link that drops between two of
    /// them resumes before the record and applies it exactly once (no doubled append).
    #[test]
    fn a_record_bigger_than_a_frame_crosses_frames_and_is_applied_once() {
        use crate::snapshot::PIECE_BYTES;
        const BUDGET: usize = 64 << 10;
        let slots = streamed_slots();
        let (primary, log) = primary_with_log(5, 0, 1);
        let in_slots = |name: &str| {
            (0..)
                .map(|i| format!("{name}:{i}").into_bytes())
                .find(|k| slots.contains(key_slot(k)))
                .unwrap()
        };
        let (string, hash, list) = (in_slots("s"), in_slots("h"), in_slots("l"));
        primary.write(&string, NOW, |s| {
            s.set(Value::Str(b"start".to_vec()), Some(0))
        });
        let frames = |from: u64| {
            let mut sender =
                StreamSender::start(log.clone(), from, slots.clone(), SlotSet::new(), &primary)
                    .unwrap();
            let mut frames = Vec::new();
            while sender.through() < log.last_lsn() {
                if let Some(Piece::Records(bytes)) =
                    sender.poll(&primary, NOW, BUDGET, Duration::ZERO).unwrap()
                {
                    frames.push(bytes);
                }
                assert!(frames.len() < 10_000, "the stream never ends");
            }
            frames
        };
        let before_append = log.last_lsn();
        primary.write(&string, NOW, |s| s.append(&vec![b'a'; 3 << 20]).unwrap());
        let append_lsn = log.last_lsn();
        primary.write(&hash, NOW, |s| {
            // One write: one HSet record of every field.
            for f in 0..100_000u32 {
                s.hash_insert(format!("field:{f:08}").as_bytes(), b"v")
                    .unwrap();
            }
        });
        primary.write(&list, NOW, |s| {
            let items: Vec<Vec<u8>> = (0..200_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
            let items: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            s.list_push(false, &items).unwrap();
        });
        let all = frames(before_append + 1);
        assert!(all.len() > 40, "{} frames", all.len());
        for frame in &all {
            assert!(
                frame.len() <= BUDGET + PIECE_BYTES + 1024,
                "a frame of {}",
                frame.len()
            );
        }
        // The link drops inside the APPEND's pieces: nothing of it was applied.
        let replica = Store::builder().shards(4).build();
        replica.write(&string, NOW, |s| {
            s.set(Value::Str(b"start".to_vec()), Some(0))
        });
        let mut first = StreamReceiver::new(slots.clone(), before_append);
        for frame in &all[..10] {
            assert_eq!(first.apply_records(&replica, frame, NOW, |_| true), Ok(0));
        }
        assert_eq!(first.applied(), append_lsn - 1);
        assert_eq!(
            replica.read(&string, NOW, |v| v.cloned()),
            Some(Value::Str(b"start".to_vec()))
        );
        // A new link resumes where the first stopped and brings the rest once.
        let mut second = StreamReceiver::new(slots.clone(), first.applied());
        for frame in frames(first.applied() + 1) {
            assert_eq!(second.apply_records(&replica, &frame, NOW, |_| true), Ok(0));
        }
        assert_eq!(second.applied(), log.last_lsn());
        assert!(
            state(&replica, &slots) == state(&primary, &slots),
            "the replica differs from the primary"
        );
    }

    /// A peer that sends the pieces of a split record wrongly (a piece of another record
    /// before the last one, or a frame whose position passes a record still in pieces) is
    /// refused as malformed, and nothing of the record is applied.
    #[test]
    fn a_split_record_without_its_last_piece_is_refused_and_applies_nothing() {
        let slots = streamed_slots();
        let k = (0..)
            .map(key)
            .find(|k| slots.contains(key_slot(k)))
            .unwrap();
        let piece = |lsn: u64, flags: u8, body: &[u8]| {
            let mut bytes = lsn.to_le_bytes().to_vec();
            encode_record(
                &mut bytes,
                RecordKind::Append,
                flags,
                key_slot(&k),
                &k,
                body,
            );
            bytes
        };
        let frame = |through: u64, pieces: &[Vec<u8>]| {
            [through.to_le_bytes().to_vec(), pieces.concat()].concat()
        };
        let cases = [
            // The next record comes before the split one's last piece.
            frame(6, &[piece(5, CONTINUED, b"a"), piece(6, 0, b"b")]),
            // The frame says it carried record 5 whole; its last piece never came.
            frame(5, &[piece(5, CONTINUED, b"a")]),
        ];
        for bytes in cases {
            let replica = Store::builder().shards(2).build();
            let mut receiver = StreamReceiver::new(slots.clone(), 4);
            assert!(
                receiver
                    .apply_records(&replica, &bytes, NOW, |_| true)
                    .is_err()
            );
            assert_eq!(receiver.applied(), 4);
            assert_eq!(replica.read(&k, NOW, |v| v.cloned()), None);
        }
        // Across two frames, with the position before it until its last piece: applied once.
        let replica = Store::builder().shards(2).build();
        let mut receiver = StreamReceiver::new(slots.clone(), 4);
        let first = frame(4, &[piece(5, CONTINUED, b"a")]);
        assert_eq!(
            receiver.apply_records(&replica, &first, NOW, |_| true),
            Ok(0)
        );
        assert_eq!(replica.read(&k, NOW, |v| v.cloned()), None);
        let last = frame(5, &[piece(5, 0, b"b")]);
        assert_eq!(
            receiver.apply_records(&replica, &last, NOW, |_| true),
            Ok(0)
        );
        assert_eq!(receiver.applied(), 5);
        assert_eq!(
            replica.read(&k, NOW, |v| v.cloned()),
            Some(Value::Str(b"ab".to_vec()))
        );
    }

    /// A replica holding another history of the slots (keys the primary deleted, values
    /// and hash fields it changed) ends the resync with exactly the primary's state: the
    /// stale keys are replaced or swept, never mixed in, and other slots are untouched.
    #[test]
    fn a_resync_over_a_stale_copy_ends_with_exactly_the_primary_state() {
        for seed in 0..6u64 {
            let (primary, log) = primary_with_log(seed, 5_000, 3_000);
            let slots = streamed_slots();
            let replica = Store::builder().shards(8).build();
            let mut rng = SmallRng::seed_from_u64(seed + 7);
            for _ in 0..5_000 {
                random_write(&replica, &mut rng, 4_000);
            }
            let others = SlotSet::from_ranges(&[(0, 16383)]).difference(&slots);
            let untouched = state(&replica, &others);
            let (_, done) = stream_into(
                &primary,
                &log,
                &replica,
                &slots,
                usize::MAX,
                move |p| {
                    let mut rng = SmallRng::seed_from_u64(seed + 200);
                    for _ in 0..20_000 {
                        random_write(p, &mut rng, 3_000);
                    }
                },
                RESYNC,
            );
            assert!(done, "seed {seed}: the snapshot never completed");
            assert_eq!(
                state(&replica, &slots),
                state(&primary, &slots),
                "seed {seed}"
            );
            assert_eq!(state(&replica, &others), untouched, "seed {seed}");
        }
    }

    /// A merge (a whole cluster restarted, no copy known whole) adds the sender's keys
    /// missing here, big values whole, keeps every key held here with its own value
    /// (split big ones included), sweeps nothing, and applies none of the sender's
    /// changes made meanwhile (its deletions say nothing of our copy).
    #[test]
    fn a_merge_fills_in_the_missing_keys_and_keeps_every_key_held_here() {
        for seed in 0..4u64 {
            let (primary, log) = primary_with_log(seed, 4_000, 3_000);
            let slots = streamed_slots();
            let big_theirs = vec![b't'; 300 << 10];
            let big_both = vec![b'b'; 300 << 10];
            let in_slots = |name: &str| {
                (0..)
                    .map(|i| format!("{name}:{i}").into_bytes())
                    .find(|k| slots.contains(key_slot(k)))
                    .unwrap()
            };
            let (theirs_key, both_key) = (in_slots("big-theirs"), in_slots("big-both"));
            primary.write(&theirs_key, NOW, |s| {
                s.set(Value::Str(big_theirs.clone()), Some(0))
            });
            primary.write(&both_key, NOW, |s| {
                s.set(Value::Str(big_both.clone()), Some(0))
            });
            let replica = Store::builder().shards(2).build();
            let mut rng = SmallRng::seed_from_u64(seed + 11);
            for _ in 0..3_000 {
                random_write(&replica, &mut rng, 4_000);
            }
            replica.write(&both_key, NOW, |s| {
                s.set(Value::Str(b"ours".to_vec()), Some(0))
            });
            let ours = state(&replica, &slots);
            let theirs = state(&primary, &slots);
            let (_, done) = stream_into(
                &primary,
                &log,
                &replica,
                &slots,
                usize::MAX,
                |p| {
                    for i in 0..3_000 {
                        p.write(&key(i), NOW, |s| s.remove());
                    }
                },
                MERGE,
            );
            assert!(done, "seed {seed}: the merge never completed");
            let merged: std::collections::HashMap<Vec<u8>, (Value, Option<u64>)> =
                state(&replica, &slots)
                    .into_iter()
                    .map(|(k, v, at)| (k, (v, at)))
                    .collect();
            for (key, value, at) in &ours {
                assert_eq!(merged.get(key), Some(&(value.clone(), *at)), "seed {seed}");
            }
            let ours_keys: std::collections::HashSet<&Vec<u8>> =
                ours.iter().map(|(k, _, _)| k).collect();
            // What the sender held throughout (its deletions raced the windows) is in.
            let kept_there = state(&primary, &slots);
            let mut filled = 0;
            for entry @ (key, value, at) in &theirs {
                if !ours_keys.contains(key) && kept_there.contains(entry) {
                    assert_eq!(merged.get(key), Some(&(value.clone(), *at)), "seed {seed}");
                    filled += 1;
                }
            }
            assert!(filled > 0, "seed {seed}: no key to fill in");
            let theirs_keys: std::collections::HashSet<&Vec<u8>> =
                theirs.iter().map(|(k, _, _)| k).collect();
            assert!(
                merged
                    .keys()
                    .all(|k| ours_keys.contains(k) || theirs_keys.contains(k)),
                "seed {seed}: nothing but the union"
            );
            assert_eq!(merged[&theirs_key].0, Value::Str(big_theirs.clone()));
            assert_eq!(merged[&both_key].0, Value::Str(b"ours".to_vec()));
        }
    }

    /// A replica in sync with a dead primary resyncs from the new one, which holds the
    /// same keys; the new primary dies at any point of the resync (the stream cut after a
    /// random number of pieces): the replica still has every key they held in common, with
    /// its value. (Clearing first and copying again would lose them.)
    #[test]
    fn a_resync_cut_anywhere_keeps_every_key_the_replica_shared_with_the_primary() {
        for seed in 0..8u64 {
            let (primary, log) = primary_with_log(seed, 6_000, 3_000);
            let slots = streamed_slots();
            let replica = Store::builder().shards(2).build();
            let (_, done) =
                stream_into(&primary, &log, &replica, &slots, usize::MAX, |_| {}, RESYNC);
            assert!(done);
            let shared = state(&replica, &slots);
            assert!(!shared.is_empty());
            let cut = 1 + (seed as usize * 7) % 40;
            // New keys keep arriving at the primary meanwhile, never the shared ones.
            let (_, done) = stream_into(
                &primary,
                &log,
                &replica,
                &slots,
                cut,
                move |p| {
                    for i in 0..2_000 {
                        p.write(format!("new:{i}").as_bytes(), NOW, |s| {
                            s.set(Value::Str(b"n".to_vec()), Some(0))
                        });
                    }
                },
                RESYNC,
            );
            let now: std::collections::HashMap<Vec<u8>, (Value, Option<u64>)> =
                state(&replica, &slots)
                    .into_iter()
                    .map(|(k, v, at)| (k, (v, at)))
                    .collect();
            for (key, value, at) in &shared {
                assert_eq!(
                    now.get(key),
                    Some(&(value.clone(), *at)),
                    "seed {seed}, cut after {cut} pieces (done {done}): {:?} lost",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }

    /// The stream starts exactly at its position (a log chunk that began earlier is cut:
    /// resending older records would undo newer ones and double APPENDs), and a big
    /// value's pieces, which share one LSN, all apply.
    #[test]
    fn a_stream_starts_at_its_position_and_keeps_big_values_whole() {
        let (primary, log) = primary_with_log(3, 0, 10);
        let slots = streamed_slots();
        let key = (0..)
            .map(key)
            .find(|k| slots.contains(key_slot(k)))
            .unwrap();
        primary.write(&key, NOW, |s| s.set(Value::Str(b"old".to_vec()), Some(0)));
        let from = log.last_lsn() + 1;
        let big = vec![b'x'; 200 << 10];
        primary.write(&key, NOW, |s| s.set(Value::Str(big.clone()), Some(0)));
        primary.write(&key, NOW, |s| s.append(b"!").map(|_| ()).unwrap());
        let mut sender =
            StreamSender::start(log.clone(), from, slots.clone(), SlotSet::new(), &primary)
                .unwrap();
        let replica = Store::builder().build();
        let mut receiver = StreamReceiver::new(slots.clone(), from - 1);
        let Some(Piece::Records(bytes)) = sender
            .poll(&primary, NOW, 1 << 20, Duration::from_millis(10))
            .unwrap()
        else {
            panic!("no records");
        };
        let first_lsn = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        assert_eq!(
            first_lsn, from,
            "a record from before the stream's start was sent"
        );
        assert_eq!(
            receiver.apply_records(&replica, &bytes, NOW, |_| true),
            Ok(0)
        );
        let mut want = big;
        want.push(b'!');
        assert_eq!(
            state(&replica, &slots),
            vec![(key.clone(), Value::Str(want), None)],
            "the big value arrives whole"
        );
    }

    #[test]
    fn a_record_outside_the_link_or_past_its_piece_is_refused_and_fencing_stops_before_it() {
        let store = Store::builder().build();
        let slots = SlotSet::from_ranges(&[(key_slot(b"mine"), key_slot(b"mine"))]);
        let mut receiver = StreamReceiver::new(slots, 0);
        let piece = |lsn: u64, through: u64, key: &[u8]| {
            let mut out = through.to_le_bytes().to_vec();
            out.extend_from_slice(&lsn.to_le_bytes());
            encode_record(
                &mut out,
                RecordKind::SetPersistent,
                0,
                key_slot(key),
                key,
                b"v",
            );
            out
        };
        assert!(
            receiver
                .apply_records(&store, &piece(1, 1, b"other"), NOW, |_| true)
                .is_err()
        );
        assert!(
            receiver
                .apply_records(&store, &piece(5, 4, b"mine"), NOW, |_| true)
                .is_err()
        );
        assert_eq!(
            receiver.apply_records(&store, &piece(2, 3, b"mine"), NOW, |_| false),
            Ok(1)
        );
        assert!(store.is_empty());
        // The refused record stops the piece where it is: a later link resumes there,
        // so the record is not skipped for good (a handoff's fence link relies on it).
        assert_eq!(receiver.applied(), 0);
        assert!(
            receiver
                .apply_records(&store, b"short", NOW, |_| true)
                .is_err()
        );
    }
}
