//! The errors of the near-cache and its connections to the cluster.

use std::net::SocketAddr;

/// Why a near-cache operation on the cluster failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NearCacheError {
    /// A member could not be reached or its connection broke.
    #[error("connection to {addr}: {reason}")]
    Connection {
        /// The member's address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// A member answered the handshake (`HELLO 3`, `CLIENT TRACKING ON`) with an error.
    #[error("{addr} refused the near-cache handshake: {reply}")]
    Handshake {
        /// The member's address.
        addr: SocketAddr,
        /// Its error reply.
        reply: String,
    },
    /// A member sent bytes that are not RESP3.
    #[error("{addr} sent a malformed reply: {reason}")]
    Protocol {
        /// The member's address.
        addr: SocketAddr,
        /// The decoder's complaint.
        reason: String,
    },
    /// No reply within the request timeout.
    #[error("{addr} did not answer within {millis} ms")]
    Timeout {
        /// The member's address.
        addr: SocketAddr,
        /// The timeout.
        millis: u64,
    },
    /// The server answered with an error (`WRONGTYPE …`, `OOM …`).
    #[error("server error: {0}")]
    Server(String),
    /// `-MOVED`/`-TRYAGAIN` kept coming after every retry.
    #[error("slot {slot} kept moving: {last}")]
    Redirects {
        /// The key's slot.
        slot: u16,
        /// The last redirection received.
        last: String,
    },
    /// A reply of a shape the command never has.
    #[error("unexpected reply to {command}: {reply}")]
    UnexpectedReply {
        /// The command sent.
        command: &'static str,
        /// The reply, for the log.
        reply: String,
    },
    /// Another process held the key's lease (it was loading) for longer than the lease.
    #[error("another process held the lease for over {millis} ms")]
    LeaseWait {
        /// The lease time.
        millis: u64,
    },
    /// No seed address was given, or none resolved.
    #[error("no seed address to reach the cluster")]
    NoSeeds,
}
