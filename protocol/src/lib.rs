//! The Redis protocol as ringkv speaks it: the request parser (our own, see
//! `docs/DESIGN.md` §2), reply encoding for RESP2 and RESP3, and the command table.
//! Pure code: no sockets, no knowledge of slots or the store.

mod command_syntax;
mod command_table;
mod error;
mod reply;
mod reply_scan;
mod request;

pub use command_syntax::{ArgDoc, parse_syntax, syntax};
pub use command_table::{
    COMMANDS, CommandFlags, CommandSpec, KeyPositions, lookup_command, lookup_subcommand,
};
pub use error::ProtocolError;
pub use reply::{Protocol, ReplyWriter, format_double, format_score};
pub use reply_scan::{ScannedReply, scan_reply};
pub use request::{Args, Batch, Limits, OwnedArgs, Parsed, RequestParser, parse_i64};
