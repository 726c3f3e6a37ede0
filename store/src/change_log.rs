//! The change log, the spine of a node: every keyspace change becomes one effect record,
//! appended under the shard lock (so one key's records are in the order its changes
//! happened) and numbered by a node-wide LSN. A record is the change made deterministic and
//! small: `SET k v PXAT t`, `HSET k f v`, `DEL k`, an expiry or eviction as `DEL`; its size
//! follows the write, never the value it lands in.
//!
//! Records are appended into an open chunk; a consumer (the WAL writer now, replica and
//! learner links later) takes sealed chunks from its own position. Chunks stay in memory
//! until every consumer has passed them; a required consumer (the WAL) holds producers back
//! once too much is unconsumed, an optional one falls behind and must resync.
//!
//! No I/O here, no clock: this is a pure in-memory structure with two condition variables.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// What a record does. The numbers are the on-disk format: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// The key holds this string: `deadline u64 | bytes`.
    Set = 1,
    /// The key holds this value of any type: `deadline u64 | Value::to_persisted`.
    Restore = 2,
    /// The key is gone (a command, an expiry, an eviction).
    Del = 3,
    /// The key's deadline is now `deadline u64` (0: none).
    Expire = 4,
    /// These fields of the hash hold these values: `(len u32, field, len u32, value)*`;
    /// the hash is created when absent.
    HSet = 5,
    /// These fields are gone: `(len u32, field)*`; an emptied hash is deleted.
    HDel = 6,
    /// These bytes were appended to the string (created when absent).
    Append = 7,
    /// The string holds these bytes from `offset u64` on, zero-padded when shorter.
    SetRange = 8,
    /// Every key is gone (FLUSHALL); the key is empty.
    Clear = 9,
    /// Ends the atomic group of [`GROUPED`] records before it; the key is empty.
    Commit = 10,
    /// As Set, without a deadline (the common case: 8 bytes less per record).
    SetPersistent = 11,
    /// As Restore, without a deadline.
    RestorePersistent = 12,
    /// These elements were pushed at the list's head, one after another: `(len u32,
    /// item)*`; the list is created when absent.
    LPush = 13,
    /// These elements were pushed at the list's tail: `(len u32, item)*`.
    RPush = 14,
    /// `count u64` elements were popped from the head; an emptied list is deleted.
    LPop = 15,
    /// `count u64` elements were popped from the tail.
    RPop = 16,
    /// Element `index u64` (from the head) now holds the rest of the body.
    LSet = 17,
    /// The rest of the body was inserted so that it is element `index u64`.
    LInsert = 18,
    /// Up to `count i64` elements equal to the rest of the body were removed, as LREM
    /// does it (the same list gives the same result everywhere).
    LRem = 19,
    /// These members were added to the set: `(len u32, member)*`; the set is created when
    /// absent.
    SAdd = 20,
    /// These members are gone from the set: `(len u32, member)*`; an emptied set is
    /// deleted.
    SRem = 21,
    /// These members of the sorted set hold these scores: `(len u32 = 8, score f64 LE,
    /// len u32, member)*`; the sorted set is created when absent.
    ZAdd = 22,
    /// These members are gone from the sorted set: `(len u32, member)*`; an emptied one
    /// is deleted.
    ZRem = 23,
    /// Entries were appended to the stream (created when absent): `trim u8`, and when it
    /// is 1 an id `(16 bytes)` through which the oldest entries were then trimmed, then
    /// `(len u32 = 16, id, len u32, fields)*` with the fields as the stream encodes them.
    XAdd = 24,
    /// These entries were deleted by XDEL: `(len u32 = 16, id)*`; the tombstone id follows.
    XDel = 25,
    /// Every entry through the id of the body (16 bytes) was trimmed.
    XTrim = 26,
    /// The stream (created when absent) holds this meta: last id (16 bytes), tombstone id
    /// (16 bytes), entries added (u64 LE).
    XSetId = 27,
    /// A snapshot's hint, changing nothing but capacity: the key's value (a string, hash,
    /// set or sorted set, already created) is about to hold `count u64 LE` bytes, fields or
    /// members, so the receiver grows it once instead of doubling it under its shard lock.
    Reserve = 28,
}

impl RecordKind {
    /// The kind for its byte, if it is one.
    pub fn from_u8(byte: u8) -> Option<RecordKind> {
        use RecordKind::*;
        Some(match byte {
            1 => Set,
            2 => Restore,
            3 => Del,
            4 => Expire,
            5 => HSet,
            6 => HDel,
            7 => Append,
            8 => SetRange,
            9 => Clear,
            10 => Commit,
            11 => SetPersistent,
            12 => RestorePersistent,
            13 => LPush,
            14 => RPush,
            15 => LPop,
            16 => RPop,
            17 => LSet,
            18 => LInsert,
            19 => LRem,
            20 => SAdd,
            21 => SRem,
            22 => ZAdd,
            23 => ZRem,
            24 => XAdd,
            25 => XDel,
            26 => XTrim,
            27 => XSetId,
            28 => Reserve,
            _ => return None,
        })
    }
}

/// Record flag: part of an atomic group (MULTI/EXEC, MSET) that a [`RecordKind::Commit`]
/// record ends; a reader drops a group whose commit never arrived.
pub const GROUPED: u8 = 1;

/// Record flag, on a replication link only: another piece of this record (the same LSN)
/// follows, maybe in a later frame; the receiver applies none of them before the last.
pub const CONTINUED: u8 = 2;

/// `len u32 | kind u8 | flags u8 | slot u16 | key_len u32`, then the key and the body.
pub const RECORD_HEADER: usize = 12;

/// `len u32 | crc u32 | first_lsn u64 | count u32`: `len` counts the bytes after `crc`,
/// and the CRC (masked, LevelDB-style) covers them.
pub const CHUNK_HEADER: usize = 20;

/// The most one record may be (a 512 MB value plus its key and framing).
pub const MAX_RECORD: usize = (1 << 30) - 1;

/// One decoded record, borrowing the chunk it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its log sequence number.
    pub lsn: u64,
    /// What it does.
    pub kind: RecordKind,
    /// [`GROUPED`] or 0.
    pub flags: u8,
    /// The key's cluster slot.
    pub slot: u16,
    /// The key (empty for Clear and Commit).
    pub key: &'a [u8],
    /// The kind's payload.
    pub body: &'a [u8],
}

/// A record or chunk that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed change record: {0}")]
pub struct MalformedRecord(pub &'static str);

impl Record<'_> {
    /// The leading `deadline u64` of Set, Restore and Expire bodies.
    pub fn deadline(&self) -> Result<u64, MalformedRecord> {
        if self.persistent() {
            return Ok(0);
        }
        self.body
            .first_chunk::<8>()
            .map(|d| u64::from_le_bytes(*d))
            .ok_or(MalformedRecord("short deadline"))
    }

    /// The leading `u64` of SetRange and list records (an offset, a count or an index).
    pub fn number(&self) -> Result<u64, MalformedRecord> {
        self.deadline()
    }

    /// The body after the deadline (Set, Restore) or the offset (SetRange).
    pub fn payload(&self) -> &[u8] {
        if self.persistent() {
            return self.body;
        }
        self.body.get(8..).unwrap_or_default()
    }

    fn persistent(&self) -> bool {
        matches!(
            self.kind,
            RecordKind::SetPersistent | RecordKind::RestorePersistent
        )
    }

    /// The `(len, bytes)` items of HSet, HDel, list push and set bodies.
    pub fn items(&self) -> impl Iterator<Item = Result<&[u8], MalformedRecord>> {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                rest = &[];
                return Some(Err(MalformedRecord("short item length")));
            };
            let len = u32::from_le_bytes(*len) as usize;
            match tail.get(..len) {
                Some(item) => {
                    rest = &tail[len..];
                    Some(Ok(item))
                }
                None => {
                    rest = &[];
                    Some(Err(MalformedRecord("item past the record")))
                }
            }
        })
    }
}

/// Appends `(len u32, bytes)` to a body.
pub fn put_item(body: &mut Vec<u8>, item: &[u8]) {
    body.extend_from_slice(&(item.len() as u32).to_le_bytes());
    body.extend_from_slice(item);
}

/// LevelDB's CRC mask: the CRC of bytes that contain CRCs stays well distributed.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32fast::hash(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// A sealed, framed run of consecutive records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    first_lsn: u64,
    count: u32,
    /// The framed bytes: [`CHUNK_HEADER`] then the records.
    frame: Vec<u8>,
}

impl Chunk {
    /// Frames `records` (the concatenated records of LSNs `first_lsn..first_lsn+count`).
    pub fn from_records(first_lsn: u64, count: u32, records: &[u8]) -> Chunk {
        let mut frame = Vec::with_capacity(CHUNK_HEADER + records.len());
        frame.resize(CHUNK_HEADER, 0);
        frame.extend_from_slice(records);
        Chunk::seal(first_lsn, count, frame)
    }

    /// Fills the header of a buffer that starts with [`CHUNK_HEADER`] reserved bytes.
    fn seal(first_lsn: u64, count: u32, mut frame: Vec<u8>) -> Chunk {
        let len = (frame.len() - 8) as u32;
        frame[8..16].copy_from_slice(&first_lsn.to_le_bytes());
        frame[16..20].copy_from_slice(&count.to_le_bytes());
        let crc = masked_crc(&frame[8..]);
        frame[0..4].copy_from_slice(&len.to_le_bytes());
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        Chunk {
            first_lsn,
            count,
            frame,
        }
    }

    /// The LSN of the first record.
    pub fn first_lsn(&self) -> u64 {
        self.first_lsn
    }

    /// The LSN of the last record.
    pub fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.count) - 1
    }

    /// Number of records.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The bytes to write: header and records.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Its records in order.
    pub fn records(&self) -> Records<'_> {
        Records {
            bytes: &self.frame[CHUNK_HEADER..],
            lsn: self.first_lsn,
        }
    }
}

/// Reads one framed chunk from the front of `bytes`: `Ok(None)` when the bytes hold no
/// complete chunk with a valid CRC (a torn or zeroed tail, or garbage), else the chunk's
/// first LSN, record count, records and framed length.
pub fn parse_chunk(bytes: &[u8]) -> Option<ParsedChunk<'_>> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let (crc, rest) = rest.split_first_chunk::<4>()?;
    if len < CHUNK_HEADER - 8 || len > rest.len() {
        return None;
    }
    let body = &rest[..len];
    if masked_crc(body) != u32::from_le_bytes(*crc) {
        return None;
    }
    let first_lsn = u64::from_le_bytes(*body.first_chunk::<8>()?);
    let count = u32::from_le_bytes(*body[8..].first_chunk::<4>()?);
    if count == 0 {
        return None;
    }
    Some(ParsedChunk {
        first_lsn,
        count,
        records: Records {
            bytes: &body[12..],
            lsn: first_lsn,
        },
        framed_len: 8 + len,
    })
}

/// A chunk read back from bytes.
#[derive(Debug, Clone)]
pub struct ParsedChunk<'a> {
    /// The LSN of its first record.
    pub first_lsn: u64,
    /// Its number of records.
    pub count: u32,
    /// Its records.
    pub records: Records<'a>,
    /// Bytes it took, header included.
    pub framed_len: usize,
}

impl ParsedChunk<'_> {
    /// The LSN of its last record.
    pub fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.count) - 1
    }
}

/// An iterator over the records of a chunk.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    lsn: u64,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, MalformedRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let record = decode_record(self.bytes, self.lsn);
        match &record {
            Ok((_, used)) => {
                self.bytes = &self.bytes[*used..];
                self.lsn += 1;
            }
            Err(_) => self.bytes = &[],
        }
        Some(record.map(|(r, _)| r))
    }
}

/// Decodes the record at the front of `bytes`, giving it `lsn`; also returns its length.
pub fn decode_record(bytes: &[u8], lsn: u64) -> Result<(Record<'_>, usize), MalformedRecord> {
    let header = bytes
        .first_chunk::<RECORD_HEADER>()
        .ok_or(MalformedRecord("short record header"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = RecordKind::from_u8(header[4]).ok_or(MalformedRecord("unknown record kind"))?;
    let flags = header[5];
    let slot = u16::from_le_bytes([header[6], header[7]]);
    let key_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    let total = 4 + len;
    if len < RECORD_HEADER - 4 || total > bytes.len() || RECORD_HEADER + key_len > total {
        return Err(MalformedRecord("record length out of range"));
    }
    let key = &bytes[RECORD_HEADER..RECORD_HEADER + key_len];
    let body = &bytes[RECORD_HEADER + key_len..total];
    Ok((
        Record {
            lsn,
            kind,
            flags,
            slot,
            key,
            body,
        },
        total,
    ))
}

/// Encodes one record (for tests and for tools; the log encodes in place).
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: RecordKind,
    flags: u8,
    slot: u16,
    key: &[u8],
    body: &[u8],
) {
    let start = out.len();
    out.resize(start + RECORD_HEADER, 0);
    out.extend_from_slice(key);
    out.extend_from_slice(body);
    fill_header(out, start, kind, flags, slot, key.len());
}

fn fill_header(
    out: &mut [u8],
    start: usize,
    kind: RecordKind,
    flags: u8,
    slot: u16,
    key_len: usize,
) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4] = kind as u8;
    out[start + 5] = flags;
    out[start + 6..start + 8].copy_from_slice(&slot.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&(key_len as u32).to_le_bytes());
}

/// A consumer's handle: its position is the next LSN it wants.
#[derive(Debug)]
pub struct Cursor {
    id: usize,
    next_lsn: u64,
    /// The log's wake count this consumer has answered.
    wakes: u64,
}

impl Cursor {
    /// The next LSN this consumer will receive.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }
}

/// Why a consumer gets nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TakeError {
    /// An optional consumer fell behind what the log still holds: it must resync from a
    /// snapshot.
    #[error("the consumer fell behind the change log's backlog")]
    Lagged,
    /// The log was closed (the node is stopping).
    #[error("the change log is closed")]
    Closed,
}

#[derive(Debug)]
struct ConsumerState {
    next_lsn: u64,
    required: bool,
}

#[derive(Debug)]
struct State {
    next_lsn: u64,
    /// The open chunk: [`CHUNK_HEADER`] reserved bytes, then records.
    open: Vec<u8>,
    open_first: u64,
    open_count: u32,
    sealed: VecDeque<Arc<Chunk>>,
    /// Bytes of `sealed`, kept so the producers' limit check costs nothing per record.
    sealed_bytes: usize,
    consumers: Vec<Option<ConsumerState>>,
    /// Consumers blocked in `take`.
    waiting: usize,
    /// A consumer must get what is open at once (a client waits for fsync, or WAIT).
    urgent: bool,
    group_depth: u32,
    group_records: u32,
    closed: bool,
    /// A chunk taken out of `open` and not in `sealed` yet: its first LSN and bytes.
    sealing: Option<(u64, usize)>,
    /// Buffers of chunks every consumer dropped, reused for the open chunk.
    spare: Vec<Vec<u8>>,
    /// Bumped by [`ChangeLog::wake`]: a consumer that has not seen the latest wake returns
    /// from `take` at once, even when it was not waiting yet (no lost wake-up).
    wakes: u64,
}

/// Tunables of a [`ChangeLog`].
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes held for required consumers before producers wait.
    pub max_unconsumed: usize,
    /// Bytes of sealed chunks kept for optional consumers (the backlog).
    pub backlog: usize,
    /// Bytes of sealed chunks kept past the backlog while an optional consumer is still
    /// to read them (a replica link taking a write bigger than the backlog; Redis's
    /// replica output buffer limit); past it, the consumer lags.
    pub optional_lag: usize,
    /// An open chunk this large wakes a waiting consumer at once.
    pub wake_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_unconsumed: 64 << 20,
            backlog: 0,
            optional_lag: 256 << 20,
            wake_bytes: 256 << 10,
        }
    }
}

/// The node's change log.
#[derive(Debug)]
pub struct ChangeLog {
    state: Mutex<State>,
    /// Held while a chunk is sealed outside `state`.
    sealer: Mutex<()>,
    data: Condvar,
    space: Condvar,
    /// The last LSN handed out, readable without the lock.
    last: AtomicU64,
    limits: LogLimits,
}

/// Bytes a new open chunk reserves.
const CHUNK_CAPACITY: usize = 512 << 10;

impl ChangeLog {
    /// A log whose first record will get `next_lsn`.
    pub fn new(next_lsn: u64, limits: LogLimits) -> ChangeLog {
        let next_lsn = next_lsn.max(1);
        ChangeLog {
            sealer: Mutex::new(()),
            state: Mutex::new(State {
                next_lsn,
                open: fresh_chunk(Vec::new()),
                open_first: next_lsn,
                open_count: 0,
                sealed: VecDeque::new(),
                sealed_bytes: 0,
                consumers: Vec::new(),
                waiting: 0,
                urgent: false,
                group_depth: 0,
                group_records: 0,
                closed: false,
                sealing: None,
                spare: Vec::new(),
                wakes: 0,
            }),
            data: Condvar::new(),
            space: Condvar::new(),
            last: AtomicU64::new(next_lsn - 1),
            limits,
        }
    }

    /// The last LSN handed out (0 before the first record). A key read under its shard
    /// lock reflects every record of that key up to this LSN.
    pub fn last_lsn(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// Appends a record whose body `write_body` writes; returns its LSN. Called with the
    /// key's shard locked. Waits while required consumers are too far behind.
    pub fn append(
        &self,
        kind: RecordKind,
        slot: u16,
        key: &[u8],
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> u64 {
        let mut state = self.state.lock();
        let mut waited = 0;
        // Backpressure, bounded: a stuck consumer costs memory up to the limit and then
        // delay, never a deadlock (the WAL writer drops what it cannot write).
        while self.over_limit(&state) && waited < 100 && !state.closed {
            state.urgent = true;
            self.data.notify_all();
            self.space.wait_for(&mut state, Duration::from_millis(10));
            waited += 1;
        }
        let flags = if state.group_depth > 0 {
            state.group_records += 1;
            GROUPED
        } else {
            0
        };
        let start = state.open.len();
        state.open.resize(start + RECORD_HEADER, 0);
        state.open.extend_from_slice(key);
        write_body(&mut state.open);
        fill_header(&mut state.open, start, kind, flags, slot, key.len());
        let lsn = self.finish_append(&mut state);
        // Nobody took the open chunk in time (no consumer, or all busy): seal it here, so
        // the backlog bound applies and the open chunk never grows past its capacity.
        let full = state.open.len() >= CHUNK_CAPACITY;
        drop(state);
        if full {
            self.seal_open();
            let mut state = self.state.lock();
            self.trim(&mut state);
        }
        lsn
    }

    fn finish_append(&self, state: &mut State) -> u64 {
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        state.open_count += 1;
        self.last.store(lsn, Ordering::Release);
        if state.waiting > 0 && (state.urgent || state.open.len() >= self.limits.wake_bytes) {
            self.data.notify_all();
        }
        lsn
    }

    /// Starts an atomic group: records until the matching [`end_group`](Self::end_group)
    /// are flagged, and a Commit record ends them. The caller runs alone (the store gate is
    /// held exclusively), so nothing else lands inside the group.
    pub fn begin_group(&self) {
        let mut state = self.state.lock();
        if state.group_depth == 0 {
            state.group_records = 0;
        }
        state.group_depth += 1;
    }

    /// Ends the group; appends its Commit when it holds records.
    pub fn end_group(&self) {
        let mut state = self.state.lock();
        state.group_depth = state.group_depth.saturating_sub(1);
        if state.group_depth == 0 && state.group_records > 0 {
            state.group_records = 0;
            let start = state.open.len();
            state.open.resize(start + RECORD_HEADER, 0);
            fill_header(&mut state.open, start, RecordKind::Commit, 0, 0, 0);
            self.finish_append(&mut state);
        }
    }

    /// Registers a consumer that wants every record from `from_lsn` on. A required
    /// consumer holds producers back when it lags; an optional one is dropped instead. A
    /// position this log no longer holds, or one past the next LSN (another history, or a
    /// peer that lies), is refused as [`TakeError::Lagged`]: the consumer resyncs.
    pub fn subscribe(&self, from_lsn: u64, required: bool) -> Result<Cursor, TakeError> {
        let mut state = self.state.lock();
        if from_lsn < self.oldest(&state) || from_lsn > state.next_lsn {
            return Err(TakeError::Lagged);
        }
        let consumer = ConsumerState {
            next_lsn: from_lsn,
            required,
        };
        let id = match state.consumers.iter().position(Option::is_none) {
            Some(free) => {
                state.consumers[free] = Some(consumer);
                free
            }
            None => {
                state.consumers.push(Some(consumer));
                state.consumers.len() - 1
            }
        };
        Ok(Cursor {
            id,
            next_lsn: from_lsn,
            wakes: state.wakes,
        })
    }

    /// Removes a consumer; what only it held is freed.
    pub fn unsubscribe(&self, cursor: Cursor) {
        let mut state = self.state.lock();
        if let Some(slot) = state.consumers.get_mut(cursor.id) {
            *slot = None;
        }
        self.trim(&mut state);
        self.space.notify_all();
    }

    /// The next chunk for `cursor`, sealing the open chunk when the cursor has caught up
    /// with the sealed ones; waits up to `wait` when there is nothing.
    pub fn take(
        &self,
        cursor: &mut Cursor,
        wait: Duration,
    ) -> Result<Option<Arc<Chunk>>, TakeError> {
        let mut waited = false;
        loop {
            {
                let mut state = self.state.lock();
                if let Some(chunk) = self.next_sealed(&mut state, cursor)? {
                    return Ok(Some(chunk));
                }
                if state.open_count == 0 {
                    if state.closed && state.sealing.is_none() {
                        return Err(TakeError::Closed);
                    }
                    if cursor.wakes != state.wakes {
                        cursor.wakes = state.wakes;
                        return Ok(None);
                    }
                    if waited || wait.is_zero() {
                        return Ok(None);
                    }
                    state.waiting += 1;
                    self.data.wait_for(&mut state, wait);
                    state.waiting -= 1;
                    waited = true;
                    continue;
                }
            }
            self.seal_open();
        }
    }

    /// Hands a chunk back once it is written, so its buffer serves a later chunk (no page
    /// faults on a fresh allocation for every chunk).
    pub fn recycle(&self, chunk: Arc<Chunk>) {
        if let Ok(chunk) = Arc::try_unwrap(chunk)
            && chunk.frame.capacity() <= 4 * CHUNK_CAPACITY
        {
            let mut state = self.state.lock();
            if state.spare.len() < 4 {
                state.spare.push(chunk.frame);
            }
        }
    }

    fn next_sealed(
        &self,
        state: &mut State,
        cursor: &mut Cursor,
    ) -> Result<Option<Arc<Chunk>>, TakeError> {
        let want = cursor.next_lsn;
        let Some(consumer) = state.consumers.get(cursor.id).and_then(Option::as_ref) else {
            return Err(TakeError::Lagged);
        };
        debug_assert_eq!(consumer.next_lsn, want);
        if want < self.oldest(state) {
            state.consumers[cursor.id] = None;
            return Err(TakeError::Lagged);
        }
        let found = state.sealed.iter().find(|c| c.last_lsn() >= want).cloned();
        let Some(chunk) = found else {
            return Ok(None);
        };
        cursor.next_lsn = chunk.last_lsn() + 1;
        if let Some(Some(consumer)) = state.consumers.get_mut(cursor.id) {
            consumer.next_lsn = cursor.next_lsn;
        }
        self.trim(state);
        self.space.notify_all();
        Ok(Some(chunk))
    }

    /// The oldest LSN still held (sealed, being sealed, or open).
    fn oldest(&self, state: &State) -> u64 {
        let open = state.sealing.map_or(state.open_first, |(first, _)| first);
        state.sealed.front().map_or(open, |c| c.first_lsn())
    }

    /// Seals the open chunk. Only the swap happens under the producers' lock; the CRC is
    /// computed outside it (one sealer at a time, so chunks stay in order).
    fn seal_open(&self) {
        let _sealer = self.sealer.lock();
        let (first, count, frame) = {
            let mut state = self.state.lock();
            if state.open_count == 0 {
                return;
            }
            let spare = state.spare.pop().unwrap_or_default();
            let frame = std::mem::replace(&mut state.open, fresh_chunk(spare));
            let sealed = (state.open_first, state.open_count, frame);
            state.sealing = Some((sealed.0, sealed.2.len()));
            state.open_first = state.next_lsn;
            state.open_count = 0;
            state.urgent = false;
            sealed
        };
        let chunk = Arc::new(Chunk::seal(first, count, frame));
        let mut state = self.state.lock();
        state.sealing = None;
        state.sealed_bytes += chunk.frame.len();
        state.sealed.push_back(chunk);
    }

    /// Drops sealed chunks every consumer passed, beyond the backlog; drops optional
    /// consumers that would hold more than the backlog.
    fn trim(&self, state: &mut State) {
        let slowest_required = state
            .consumers
            .iter()
            .flatten()
            .filter(|c| c.required)
            .map(|c| c.next_lsn)
            .min();
        let slowest_optional = state
            .consumers
            .iter()
            .flatten()
            .filter(|c| !c.required)
            .map(|c| c.next_lsn)
            .min();
        while let Some(front) = state.sealed.front() {
            // Optional consumers are protected up to the backlog, and one still reading a
            // chunk up to its lag limit; past it they lag.
            let passed_required = slowest_required.is_none_or(|lsn| front.last_lsn() < lsn);
            let wanted = slowest_optional.is_some_and(|lsn| front.last_lsn() >= lsn);
            let kept = if wanted {
                self.limits.backlog.max(self.limits.optional_lag)
            } else {
                self.limits.backlog
            };
            if !(passed_required && state.sealed_bytes > kept) {
                break;
            }
            let chunk = state.sealed.pop_front().expect("front exists");
            state.sealed_bytes -= chunk.frame.len();
            if let Ok(chunk) = Arc::try_unwrap(chunk)
                && state.spare.len() < 4
                && chunk.frame.capacity() <= 4 * CHUNK_CAPACITY
            {
                state.spare.push(chunk.frame);
            }
        }
    }

    /// True when required consumers leave more than the limit unconsumed. Everything held
    /// bounds what is unconsumed, so the exact count is needed only past the limit.
    fn over_limit(&self, state: &State) -> bool {
        let held =
            state.open.len() + state.sealed_bytes + state.sealing.map_or(0, |(_, bytes)| bytes);
        held > self.limits.max_unconsumed && self.unconsumed(state) > self.limits.max_unconsumed
    }

    fn unconsumed(&self, state: &State) -> usize {
        let Some(slowest) = state
            .consumers
            .iter()
            .flatten()
            .filter(|c| c.required)
            .map(|c| c.next_lsn)
            .min()
        else {
            return 0;
        };
        let sealed: usize = state
            .sealed
            .iter()
            .filter(|c| c.last_lsn() >= slowest)
            .map(|c| c.frame.len())
            .sum();
        sealed + state.sealing.map_or(0, |(_, bytes)| bytes) + state.open.len() - CHUNK_HEADER
    }

    /// Asks consumers to take what is open now (a client waits for it to be durable).
    pub fn hurry(&self) {
        let mut state = self.state.lock();
        if state.open_count > 0 {
            state.urgent = true;
            if state.waiting > 0 {
                self.data.notify_all();
            }
        }
    }

    /// Wakes every waiting consumer now, with or without new records (a WAIT wants its
    /// replicas to acknowledge at once rather than at their next heartbeat).
    pub fn wake(&self) {
        let mut state = self.state.lock();
        state.wakes += 1;
        if state.open_count > 0 {
            state.urgent = true;
        }
        if state.waiting > 0 {
            self.data.notify_all();
        }
    }

    /// Wakes every consumer; later takes return what is left, then [`TakeError::Closed`].
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        self.data.notify_all();
        self.space.notify_all();
    }

    /// Bytes held in memory: the open chunk and the sealed ones not yet dropped.
    pub fn memory_bytes(&self) -> usize {
        let state = self.state.lock();
        state.open.capacity()
            + state
                .sealed
                .iter()
                .map(|c| c.frame.capacity())
                .sum::<usize>()
    }
}

fn fresh_chunk(mut buffer: Vec<u8>) -> Vec<u8> {
    buffer.clear();
    if buffer.capacity() < CHUNK_CAPACITY {
        buffer.reserve(CHUNK_CAPACITY);
    }
    buffer.resize(CHUNK_HEADER, 0);
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(log: &ChangeLog, key: &str, value: &str) -> u64 {
        log.append(RecordKind::Set, 7, key.as_bytes(), |body| {
            body.extend_from_slice(&0u64.to_le_bytes());
            body.extend_from_slice(value.as_bytes());
        })
    }

    #[test]
    fn records_come_back_in_order_with_their_lsns() {
        let log = ChangeLog::new(10, LogLimits::default());
        let mut cursor = log.subscribe(10, true).unwrap();
        assert_eq!(set(&log, "a", "1"), 10);
        assert_eq!(set(&log, "b", "22"), 11);
        let chunk = log.take(&mut cursor, Duration::ZERO).unwrap().unwrap();
        assert_eq!((chunk.first_lsn(), chunk.last_lsn()), (10, 11));
        let records: Vec<_> = chunk.records().map(Result::unwrap).collect();
        assert_eq!(records[0].key, b"a");
        assert_eq!(records[1].lsn, 11);
        assert_eq!(records[1].payload(), b"22");
        assert_eq!(records[1].slot, 7);
        assert_eq!(log.take(&mut cursor, Duration::ZERO).unwrap(), None);
        assert_eq!(log.last_lsn(), 11);
    }

    #[test]
    fn a_framed_chunk_parses_back_and_any_flipped_bit_is_caught() {
        let log = ChangeLog::new(1, LogLimits::default());
        let mut cursor = log.subscribe(1, true).unwrap();
        set(&log, "key", "value");
        let chunk = log.take(&mut cursor, Duration::ZERO).unwrap().unwrap();
        let frame = chunk.frame().to_vec();
        let parsed = parse_chunk(&frame).unwrap();
        assert_eq!(
            (parsed.first_lsn, parsed.count, parsed.framed_len),
            (1, 1, frame.len())
        );
        for bit in 0..frame.len() * 8 {
            let mut flipped = frame.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_chunk(&flipped).is_none(), "bit {bit} went unnoticed");
        }
        for cut in 0..frame.len() {
            assert!(
                parse_chunk(&frame[..cut]).is_none(),
                "a chunk cut at {cut} parsed"
            );
        }
    }

    #[test]
    fn groups_end_with_a_commit_and_flag_their_records() {
        let log = ChangeLog::new(1, LogLimits::default());
        let mut cursor = log.subscribe(1, true).unwrap();
        log.begin_group();
        set(&log, "a", "1");
        set(&log, "b", "2");
        log.end_group();
        log.begin_group();
        log.end_group();
        set(&log, "c", "3");
        let chunk = log.take(&mut cursor, Duration::ZERO).unwrap().unwrap();
        let kinds: Vec<_> = chunk
            .records()
            .map(|r| r.map(|r| (r.kind, r.flags)).unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec![
                (RecordKind::Set, GROUPED),
                (RecordKind::Set, GROUPED),
                (RecordKind::Commit, 0),
                (RecordKind::Set, 0)
            ],
            "an empty group writes nothing"
        );
    }

    #[test]
    fn two_consumers_each_get_everything_and_a_lagging_optional_one_is_dropped() {
        let backlog = |bytes| LogLimits {
            backlog: bytes,
            ..LogLimits::default()
        };
        let log = ChangeLog::new(1, backlog(1 << 20));
        let mut wal = log.subscribe(1, true).unwrap();
        let mut replica = log.subscribe(1, false).unwrap();
        set(&log, "a", "1");
        let first = log.take(&mut wal, Duration::ZERO).unwrap().unwrap();
        let same = log.take(&mut replica, Duration::ZERO).unwrap().unwrap();
        assert_eq!(first, same);
        set(&log, "b", "2");
        assert!(log.take(&mut wal, Duration::ZERO).unwrap().is_some());
        // Within the backlog the optional consumer still gets what the WAL passed.
        let second = log.take(&mut replica, Duration::ZERO).unwrap().unwrap();
        assert_eq!(second.first_lsn(), 2);
        assert!(
            log.subscribe(1, false).is_ok(),
            "LSN 1 is still in the backlog"
        );

        let log = ChangeLog::new(
            1,
            LogLimits {
                optional_lag: 0,
                ..backlog(0)
            },
        );
        let mut wal = log.subscribe(1, true).unwrap();
        let mut replica = log.subscribe(1, false).unwrap();
        set(&log, "a", "1");
        assert!(log.take(&mut wal, Duration::ZERO).unwrap().is_some());
        assert_eq!(
            log.take(&mut replica, Duration::ZERO),
            Err(TakeError::Lagged),
            "without a backlog or a lag allowance, what the WAL passed is gone"
        );
    }

    /// A write bigger than the backlog does not drop the link reading it: an optional
    /// consumer keeps what it has still to read up to its lag limit, and lags past it.
    #[test]
    fn an_optional_consumer_keeps_a_write_bigger_than_the_backlog_within_its_lag_limit() {
        let limits = LogLimits {
            backlog: 64 << 10,
            optional_lag: 4 << 20,
            ..LogLimits::default()
        };
        let log = ChangeLog::new(1, limits);
        let mut wal = log.subscribe(1, true).unwrap();
        let mut replica = log.subscribe(1, false).unwrap();
        set(&log, "big", &"x".repeat(1 << 20));
        set(&log, "after", "1");
        while log.take(&mut wal, Duration::ZERO).unwrap().is_some() {}
        let mut got = 0;
        while let Some(chunk) = log.take(&mut replica, Duration::ZERO).unwrap() {
            got = chunk.last_lsn();
        }
        assert_eq!(got, 2, "the replica read the big write and what followed");
        // Once it has read them, only the backlog is kept.
        set(&log, "next", "1");
        while log.take(&mut wal, Duration::ZERO).unwrap().is_some() {}
        assert!(log.take(&mut replica, Duration::ZERO).unwrap().is_some());
        assert_eq!(
            log.subscribe(1, false).err(),
            Some(TakeError::Lagged),
            "the big write is no longer held"
        );

        // Past the lag limit it lags.
        for i in 0..6 {
            set(&log, &format!("big:{i}"), &"y".repeat(1 << 20));
        }
        while log.take(&mut wal, Duration::ZERO).unwrap().is_some() {}
        assert_eq!(
            log.take(&mut replica, Duration::ZERO),
            Err(TakeError::Lagged)
        );
    }

    #[test]
    fn a_stalled_required_consumer_holds_producers_back_and_unsubscribing_frees_the_log() {
        let log = ChangeLog::new(
            1,
            LogLimits {
                max_unconsumed: 4 << 10,
                ..LogLimits::default()
            },
        );
        let cursor = log.subscribe(1, true).unwrap();
        let mut optional = log.subscribe(1, false).unwrap();
        let value = "v".repeat(1000);
        for _ in 0..5 {
            set(&log, "k", &value);
        }
        // Over the limit and nobody takes: the next append waits, but only for a bound.
        let started = std::time::Instant::now();
        set(&log, "k", &value);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // The optional consumer still reads everything; the required one going away lets
        // producers run freely again.
        assert_eq!(
            log.take(&mut optional, Duration::ZERO)
                .unwrap()
                .unwrap()
                .count(),
            6
        );
        log.unsubscribe(cursor);
        let started = std::time::Instant::now();
        set(&log, "k", &value);
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn without_consumers_the_log_holds_no_more_than_its_backlog() {
        let log = ChangeLog::new(
            1,
            LogLimits {
                backlog: 1 << 20,
                ..LogLimits::default()
            },
        );
        for i in 0..200_000 {
            set(&log, &format!("key:{i}"), "a value of some thirty bytes...");
        }
        let held = log.memory_bytes();
        assert!(held < 4 << 20, "{held} bytes held for nobody");
        // What the backlog holds can still be resumed from; older records cannot.
        assert!(log.subscribe(log.last_lsn() - 1000, false).is_ok());
        assert_eq!(log.subscribe(1, false).err(), Some(TakeError::Lagged));
    }

    #[test]
    fn a_position_past_the_next_record_is_refused() {
        let log = ChangeLog::new(1, LogLimits::default());
        set(&log, "a", "1");
        assert!(log.subscribe(log.last_lsn() + 1, false).is_ok());
        assert_eq!(
            log.subscribe(log.last_lsn() + 2, false).err(),
            Some(TakeError::Lagged)
        );
    }

    #[test]
    fn a_wake_before_the_consumer_waits_is_not_lost() {
        let log = ChangeLog::new(1, LogLimits::default());
        let mut cursor = log.subscribe(1, false).unwrap();
        log.wake();
        let started = std::time::Instant::now();
        assert_eq!(log.take(&mut cursor, Duration::from_secs(5)), Ok(None));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the wake was lost"
        );
        // Answered once: the next take waits for its own wake or its timeout.
        let started = std::time::Instant::now();
        assert_eq!(log.take(&mut cursor, Duration::from_millis(50)), Ok(None));
        assert!(started.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn a_waiting_consumer_is_woken_by_hurry() {
        let log = Arc::new(ChangeLog::new(1, LogLimits::default()));
        let mut cursor = log.subscribe(1, true).unwrap();
        let consumer = {
            let log = log.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let chunk = log.take(&mut cursor, Duration::from_secs(10)).unwrap();
                (chunk.map(|c| c.count()), started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        set(&log, "a", "1");
        log.hurry();
        let (count, elapsed) = consumer.join().unwrap();
        assert_eq!(count, Some(1));
        assert!(
            elapsed < Duration::from_secs(5),
            "woken, not timed out: {elapsed:?}"
        );
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let mut bytes = Vec::new();
        encode_record(
            &mut bytes,
            RecordKind::HSet,
            0,
            1,
            b"k",
            &[5, 0, 0, 0, b'f'],
        );
        let chunk = Chunk::from_records(1, 1, &bytes);
        let record = chunk.records().next().unwrap().unwrap();
        assert!(record.items().any(|i| i.is_err()), "an item past the end");
        for cut in 0..bytes.len() {
            let chunk = Chunk::from_records(1, 1, &bytes[..cut]);
            for record in chunk.records() {
                let _ = record.map(|r| r.items().count());
            }
        }
        let mut unknown = bytes.clone();
        unknown[4] = 200;
        let chunk = Chunk::from_records(1, 1, &unknown);
        assert!(chunk.records().next().unwrap().is_err());
    }
}
