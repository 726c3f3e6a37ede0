//! What the blocking commands of every type share (BLPOP, BZPOPMIN, ...): the timeout
//! argument, the multi-key pop syntax, and parking a connection on the blocking registry
//! until a write serves it or the timeout passes.

use std::time::{Duration, Instant};

use ringkv_protocol::{Args, Protocol, ReplyWriter};
use ringkv_store::Store;

use super::Parked;
use crate::blocking::{Registration, Serve, WaitKind};
use crate::handler::{CmdError, CmdResult, Ctx, float_arg, is, ranged};

/// The parsed tail of LMPOP/BLMPOP/ZMPOP/BZMPOP: keys, side (`side` reads LEFT|RIGHT or
/// MIN|MAX) and count.
pub struct MultiPop {
    /// The keys, in the order they are tried.
    pub keys: Vec<Vec<u8>>,
    /// LEFT or MIN.
    pub front: bool,
    /// COUNT, 1 when absent.
    pub count: usize,
}

pub fn parse_mpop(
    args: &Args<'_>,
    numkeys_at: usize,
    side: fn(&[u8]) -> Result<bool, CmdError>,
) -> Result<MultiPop, CmdError> {
    let numkeys = ranged(args.get(numkeys_at), 1, "numkeys should be greater than 0")?;
    let side_at = numkeys_at as i64 + numkeys + 1;
    if side_at >= args.len() as i64 {
        return Err(CmdError::Syntax);
    }
    let side_at = side_at as usize;
    let front = side(args.get(side_at))?;
    let mut count = None;
    let mut i = side_at + 1;
    while i < args.len() {
        if count.is_none() && is(args.get(i), "count") && i + 1 < args.len() {
            count = Some(ranged(args.get(i + 1), 1, "count should be greater than 0")? as usize);
            i += 2;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let keys = (numkeys_at + 1..side_at)
        .map(|i| args.get(i).to_vec())
        .collect();
    Ok(MultiPop {
        keys,
        front,
        count: count.unwrap_or(1),
    })
}

/// A blocking timeout in seconds (fractions allowed), as `getTimeoutFromObjectOrReply`:
/// `None` for 0 (wait forever).
pub fn timeout_arg(arg: &[u8]) -> Result<Option<Duration>, CmdError> {
    let invalid = || CmdError::Custom("ERR timeout is not a float or out of range".into());
    let seconds = float_arg(arg).ok_or_else(invalid)?;
    if !seconds.is_finite() {
        return Err(invalid());
    }
    if seconds < 0.0 {
        return Err(CmdError::Custom("ERR timeout is negative".into()));
    }
    if seconds > (i64::MAX / 1000) as f64 {
        return Err(invalid());
    }
    let millis = (seconds * 1000.0).ceil() as u64;
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

/// A blocked pop parked on its connection: the registration and the deadline.
#[derive(Debug)]
pub struct BlockedPop {
    registration: Registration,
    deadline: Option<Instant>,
}

/// Waits for a parked blocking pop: its reply, or the timeout's.
pub async fn finish_blocked_pop(mut blocked: BlockedPop) -> Vec<u8> {
    let deadline = blocked.deadline;
    let reply = match deadline {
        None => (&mut blocked.registration.reply).await.ok(),
        Some(at) => {
            tokio::select! {
                reply = &mut blocked.registration.reply => reply.ok(),
                _ = tokio::time::sleep_until(at.into()) => None,
            }
        }
    };
    match reply {
        Some(reply) => reply,
        None => blocked.registration.cancel(),
    }
}

/// Tries `attempt` now; inside EXEC answers what it found (a null when nothing, as the
/// timeout would); otherwise parks the connection on `keys` until `serve` answers it or
/// the timeout passes. `kind` says what the command does with the key it is served from.
pub fn block_on(
    ctx: &mut Ctx<'_, '_>,
    keys: Vec<Vec<u8>>,
    timeout: Option<Duration>,
    array_reply: bool,
    kind: WaitKind,
    attempt: impl Fn(&Store, u64) -> Result<Option<Vec<u8>>, CmdError>,
    serve: Serve,
) -> CmdResult {
    let store = &ctx.node.store;
    if let Some(reply) = attempt(store, ctx.now)? {
        ctx.out.raw(&reply);
        return Ok(());
    }
    let protocol = ctx.out.protocol();
    let timed_out = encode(protocol, |out| {
        if array_reply {
            out.null_array()
        } else {
            out.null()
        }
    });
    if ctx.conn.no_block {
        ctx.out.raw(&timed_out);
        return Ok(());
    }
    let registered = ctx.node.blocking.try_or_register(
        ctx.conn.handle.id,
        keys,
        protocol,
        timed_out,
        || attempt(store, ctx.now).transpose(),
        serve,
        kind,
    );
    match registered {
        Ok(reply) => ctx.out.raw(&reply?),
        Err(registration) => {
            ctx.conn.parked = Some(Parked::BlockedPop(BlockedPop {
                registration,
                deadline: timeout.map(|t| Instant::now() + t),
            }));
        }
    }
    Ok(())
}

pub fn encode(protocol: Protocol, write: impl FnOnce(&mut ReplyWriter<'_>)) -> Vec<u8> {
    let mut reply = Vec::new();
    write(&mut ReplyWriter::new(&mut reply, protocol));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_redis_does() {
        assert_eq!(timeout_arg(b"0").unwrap(), None);
        assert_eq!(
            timeout_arg(b"0.1").unwrap(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            timeout_arg(b"-1").unwrap_err().to_string(),
            "ERR timeout is negative"
        );
        assert_eq!(
            timeout_arg(b"abc").unwrap_err().to_string(),
            "ERR timeout is not a float or out of range"
        );
        assert!(timeout_arg(b"inf").is_err());
    }
}
