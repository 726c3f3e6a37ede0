//! Errors of keyspace operations that a caller must answer differently.

/// A keyspace operation that could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Over `maxmemory` and nothing may be evicted.
    #[error("command not allowed when used memory > 'maxmemory'")]
    OutOfMemory,
    /// The source key of RENAME or COPY does not exist.
    #[error("no such key")]
    NoSuchKey,
}
