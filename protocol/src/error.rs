//! Errors of the request parser. Each one closes the offending connection only; its
//! `Display` is the text after `-ERR Protocol error: ` exactly as Redis words it.

/// A request that cannot be parsed. The connection that sent it is answered and closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A `*` header whose count is not a number or is out of range.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$` header whose length is not a number, negative or above `proto-max-bulk-len`.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// Something other than `$` where a bulk string must start.
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A `*` header line longer than the inline limit without a line end.
    #[error("too big mbulk count string")]
    MultibulkHeaderTooBig,
    /// A `$` header line longer than the inline limit without a line end.
    #[error("too big bulk count string")]
    BulkHeaderTooBig,
    /// An inline command longer than the inline limit.
    #[error("too big inline request")]
    InlineTooBig,
    /// An inline command with an unterminated quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk payload not followed by CRLF.
    #[error("expected CRLF after bulk payload")]
    MissingCrlf,
}
