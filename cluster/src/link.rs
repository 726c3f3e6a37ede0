//! The peer link's wire format: one TCP connection per (primary, replica) pair on the
//! cluster bus port, opened by the replica. Frames are `len u32 | kind u8 | payload`, at
//! most [`MAX_FRAME`] bytes, so a lying peer costs at most one frame of memory.
//!
//! The handshake proves both ends hold the cluster secret without sending it: the primary
//! sends a random challenge, the replica answers with a [`Hello`] MAC'd over it (and its own
//! challenge), the primary answers with a [`Welcome`] MAC'd over the replica's challenge.
//! With no secret set, both ends MAC with the empty secret, so a node with a secret and one
//! without refuse each other. After the handshake the primary sends records, snapshot
//! windows and heartbeats; the replica sends acknowledgements.
//!
//! Blocking `std::io`: each link is served by its own thread, which keeps the change log's
//! blocking reads off the async runtime.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::ring::NodeId;

/// The largest frame either end accepts.
pub const MAX_FRAME: usize = 4 << 20;

/// Bytes of a handshake challenge.
pub const NONCE_LEN: usize = 16;

/// Version of this wire format, in every [`Hello`].
pub const LINK_VERSION: u32 = 4;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Primary → replica: `nonce`.
    Challenge = 1,
    /// Replica → primary: a postcard [`Hello`].
    Hello = 2,
    /// Primary → replica: a postcard [`Welcome`].
    Welcome = 3,
    /// Either way: a UTF-8 reason, then the link closes.
    Refused = 4,
    /// Primary → replica: log records (`ringkv_store::slot_stream`'s wire shape).
    Records = 5,
    /// Primary → replica: `stamp u64 | records` of a snapshot window.
    Snapshot = 6,
    /// Primary → replica: `stamp u64`, the slots synced from scratch are complete.
    SnapshotDone = 7,
    /// Primary → replica: `lsn u64 | ack_now u8 | table_version u64`, everything up to
    /// `lsn` was sent, and the sender's view has that slot table.
    Heartbeat = 8,
    /// Replica → primary: `lsn u64`, everything up to it is applied.
    Ack = 9,
    /// Either way: a postcard [`PositionReport`], then the link closes.
    Position = 10,
}

impl FrameKind {
    fn from_u8(byte: u8) -> Option<FrameKind> {
        use FrameKind::*;
        Some(match byte {
            1 => Challenge,
            2 => Hello,
            3 => Welcome,
            4 => Refused,
            5 => Records,
            6 => Snapshot,
            7 => SnapshotDone,
            8 => Heartbeat,
            9 => Ack,
            10 => Position,
            _ => return None,
        })
    }
}

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection failed or timed out.
    #[error("peer link I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer announced a frame larger than [`MAX_FRAME`].
    #[error("peer sent a frame of {0} bytes (limit {MAX_FRAME})")]
    TooLarge(usize),
    /// The peer sent a frame kind this version does not know.
    #[error("peer sent unknown frame kind {0}")]
    UnknownKind(u8),
    /// A frame did not decode, or came out of turn.
    #[error("peer sent a malformed frame: {0}")]
    Malformed(&'static str),
    /// The peer does not hold the cluster secret.
    #[error("peer failed the cluster secret check")]
    BadMac,
    /// The peer refused the link.
    #[error("peer refused the link: {0}")]
    Refused(String),
}

/// Writes one frame whose payload is `parts` concatenated.
pub fn write_frame(out: &mut impl Write, kind: FrameKind, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    debug_assert!(len <= MAX_FRAME, "a frame of {len} bytes");
    let mut header = [0u8; 5];
    header[..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4] = kind as u8;
    out.write_all(&header)?;
    for part in parts {
        out.write_all(part)?;
    }
    Ok(())
}

/// Reads one frame into `payload` (cleared first) and returns its kind.
pub fn read_frame(input: &mut impl Read, payload: &mut Vec<u8>) -> Result<FrameKind, LinkError> {
    let mut header = [0u8; 5];
    input.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME {
        return Err(LinkError::TooLarge(len));
    }
    if len == 0 {
        return Err(LinkError::Malformed("an empty frame"));
    }
    let kind = FrameKind::from_u8(header[4]).ok_or(LinkError::UnknownKind(header[4]))?;
    payload.clear();
    payload.resize(len - 1, 0);
    input.read_exact(payload)?;
    Ok(kind)
}

/// Where a replica stands in a primary's stream, so a reconnect resumes without a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The primary's run id the position belongs to (LSNs restart with a new run).
    pub run: u64,
    /// Everything up to this LSN is applied.
    pub applied: u64,
    /// The slots the position covers (synced and streamed), as inclusive ranges.
    pub synced: Vec<(u16, u16)>,
}

/// The replica's side of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`LINK_VERSION`].
    pub version: u32,
    /// The replica's node id.
    pub node: NodeId,
    /// The slot table version the replica's request follows.
    pub table_version: u64,
    /// The slots it replicates from this primary, as inclusive ranges.
    pub slots: Vec<(u16, u16)>,
    /// Its position from an earlier link, if any.
    pub resume: Option<Resume>,
    /// A learner: the replica is the slots' new primary and takes them from this member,
    /// which held them before the table changed.
    pub learn: bool,
    /// A merge (with `learn`): no member holds the slots whole, and the learner takes
    /// this member's copy, whatever it holds, to merge it into its own.
    pub merge: bool,
    /// Asks only where the answering member stands in this member's stream (a new
    /// primary catching up after that member died); the answer is a [`PositionReport`].
    pub ask_position: Option<NodeId>,
    /// A learner taking the tail of this member's stream (with `learn`): that member is
    /// gone, and the answering member said it got further in its stream than the learner
    /// (a takeover's catch-up). It is served the copy that stream left there, whether or
    /// not that member counts it held.
    pub tail_of: Option<NodeId>,
    /// The replica's challenge for the primary.
    pub nonce: [u8; NONCE_LEN],
    /// MAC over the primary's challenge and the fields above.
    pub mac: [u8; 32],
}

/// The primary's side of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The primary's node id.
    pub node: NodeId,
    /// The primary's run id (names its LSN space).
    pub run: u64,
    /// The stream starts after this LSN.
    pub after_lsn: u64,
    /// The slots the primary streams (those it serves of the ones asked for).
    pub slots: Vec<(u16, u16)>,
    /// Of those, the ones that sync from scratch (the replica clears them first).
    pub full: Vec<(u16, u16)>,
    /// MAC over the replica's challenge and the fields above.
    pub mac: [u8; 32],
}

/// The key both ends MAC the handshake with.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl LinkKey {
    /// The key for this cluster secret (`None`: the empty secret).
    pub fn new(secret: Option<&str>) -> LinkKey {
        LinkKey(blake3::derive_key(
            "ringkv cluster peer link v1 handshake",
            secret.unwrap_or("").as_bytes(),
        ))
    }

    fn mac(&self, nonce: &[u8; NONCE_LEN], fields: &[u8]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(nonce);
        hasher.update(fields);
        *hasher.finalize().as_bytes()
    }

    /// Encodes a handshake message answering the peer's `nonce`, its MAC filled in.
    pub fn seal<T: Handshake>(&self, mut message: T, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        *message.mac_mut() = [0; 32];
        let fields = postcard::to_allocvec(&message).expect("a handshake message encodes");
        *message.mac_mut() = self.mac(nonce, &fields);
        postcard::to_allocvec(&message).expect("a handshake message encodes")
    }

    /// Decodes a handshake message and checks its MAC against our `nonce`.
    pub fn open<T: Handshake>(
        &self,
        bytes: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<T, LinkError> {
        let mut message: T =
            postcard::from_bytes(bytes).map_err(|_| LinkError::Malformed(T::NAME))?;
        let mac = std::mem::take(message.mac_mut());
        let fields = postcard::to_allocvec(&message).expect("a handshake message encodes");
        if !constant_time_eq(&self.mac(nonce, &fields), &mac) {
            return Err(LinkError::BadMac);
        }
        *message.mac_mut() = mac;
        Ok(message)
    }
}

/// A handshake message: serialized with its MAC field zeroed, then MAC'd.
pub trait Handshake: Serialize + serde::de::DeserializeOwned {
    /// What a malformed one is called in errors.
    const NAME: &'static str;
    /// Its MAC field.
    fn mac_mut(&mut self) -> &mut [u8; 32];
}

/// Where a member stands in a (dead) primary's stream, MAC'd over the asker's challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionReport {
    /// The answering member.
    pub node: NodeId,
    /// Its position, if it pulled from that primary.
    pub position: Option<Resume>,
    /// The slots it served as primary after that primary was gone (it took them over at
    /// a table the asker may never have judged): its copy has that primary's acknowledged
    /// writes and its own since, so the asker learns them from it, whatever the positions.
    pub took_over: Vec<(u16, u16)>,
    /// MAC over the asker's challenge and the fields above.
    pub mac: [u8; 32],
}

impl Handshake for PositionReport {
    const NAME: &'static str = "a position report";
    fn mac_mut(&mut self) -> &mut [u8; 32] {
        &mut self.mac
    }
}

impl Handshake for Hello {
    const NAME: &'static str = "a Hello";
    fn mac_mut(&mut self) -> &mut [u8; 32] {
        &mut self.mac
    }
}

impl Handshake for Welcome {
    const NAME: &'static str = "a Welcome";
    fn mac_mut(&mut self) -> &mut [u8; 32] {
        &mut self.mac
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random challenge.
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    for chunk in nonce.chunks_mut(8) {
        chunk.copy_from_slice(&rand::random::<u64>().to_le_bytes()[..chunk.len()]);
    }
    nonce
}

/// Reads a `u64` at the front of a payload.
pub fn read_u64(payload: &[u8]) -> Result<(u64, &[u8]), LinkError> {
    payload
        .split_first_chunk::<8>()
        .map(|(n, rest)| (u64::from_le_bytes(*n), rest))
        .ok_or(LinkError::Malformed("a short frame"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: LINK_VERSION,
            node: NodeId([7; 20]),
            table_version: 42,
            slots: vec![(0, 100), (200, 200)],
            resume: Some(Resume {
                run: 9,
                applied: 1234,
                synced: vec![(0, 100)],
            }),
            learn: false,
            merge: false,
            ask_position: None,
            tail_of: None,
            nonce: [3; NONCE_LEN],
            mac: [0; 32],
        }
    }

    #[test]
    fn frames_round_trip_and_lies_about_length_or_kind_are_errors() {
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Ack, &[&5u64.to_le_bytes()]).unwrap();
        write_frame(&mut wire, FrameKind::Records, &[b"ab", b"cd"]).unwrap();
        let mut input = &wire[..];
        let mut payload = Vec::new();
        assert_eq!(
            read_frame(&mut input, &mut payload).unwrap(),
            FrameKind::Ack
        );
        assert_eq!(read_u64(&payload).unwrap().0, 5);
        assert_eq!(
            read_frame(&mut input, &mut payload).unwrap(),
            FrameKind::Records
        );
        assert_eq!(payload, b"abcd");
        assert!(matches!(
            read_frame(&mut input, &mut payload),
            Err(LinkError::Io(_))
        ));

        let huge = [0xff, 0xff, 0xff, 0x7f, 5];
        assert!(matches!(
            read_frame(&mut &huge[..], &mut payload),
            Err(LinkError::TooLarge(_))
        ));
        let unknown = [1, 0, 0, 0, 200];
        assert!(matches!(
            read_frame(&mut &unknown[..], &mut payload),
            Err(LinkError::UnknownKind(200))
        ));
        let torn = [9, 0, 0, 0, 9, 1, 2];
        assert!(matches!(
            read_frame(&mut &torn[..], &mut payload),
            Err(LinkError::Io(_))
        ));
        assert!(matches!(read_u64(b"abc"), Err(LinkError::Malformed(_))));
    }

    #[test]
    fn the_handshake_holds_only_with_the_same_secret_and_challenge() {
        let key = LinkKey::new(Some("s3cret"));
        let challenge = nonce();
        let sealed = key.seal(hello(), &challenge);
        let opened = key.open::<Hello>(&sealed, &challenge).unwrap();
        assert_eq!(opened.slots, hello().slots);
        assert!(matches!(
            LinkKey::new(Some("other")).open::<Hello>(&sealed, &challenge),
            Err(LinkError::BadMac)
        ));
        assert!(matches!(
            LinkKey::new(None).open::<Hello>(&sealed, &challenge),
            Err(LinkError::BadMac)
        ));
        assert!(matches!(
            key.open::<Hello>(&sealed, &nonce()),
            Err(LinkError::BadMac)
        ));
        // A field changed in flight breaks the MAC.
        let mut tampered: Hello = postcard::from_bytes(&sealed).unwrap();
        tampered.slots.push((300, 400));
        let tampered = postcard::to_allocvec(&tampered).unwrap();
        assert!(matches!(
            key.open::<Hello>(&tampered, &challenge),
            Err(LinkError::BadMac)
        ));
        assert!(matches!(
            key.open::<Hello>(b"\xff\xff", &challenge),
            Err(LinkError::Malformed(_))
        ));

        let welcome = Welcome {
            node: NodeId([1; 20]),
            run: 5,
            after_lsn: 77,
            slots: vec![(0, 100)],
            full: vec![],
            mac: [0; 32],
        };
        let sealed = key.seal(welcome.clone(), &opened.nonce);
        assert_eq!(
            key.open::<Welcome>(&sealed, &opened.nonce)
                .unwrap()
                .after_lsn,
            77
        );
        assert!(matches!(
            LinkKey::new(None).open::<Welcome>(&sealed, &opened.nonce),
            Err(LinkError::BadMac)
        ));
    }
}
