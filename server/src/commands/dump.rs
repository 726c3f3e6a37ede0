//! DUMP and RESTORE with ringkv's own payload format (`ringkv_store::dump`: the value's
//! encoding, a version and a CRC-32), and Redis 7.0's options and errors for RESTORE.

use ringkv_protocol::Args;
use ringkv_store::dump::{dump as dump_value, undump};

use crate::handler::{CmdError, CmdResult, Ctx, int_arg, is};

fn custom(message: &str) -> CmdError {
    CmdError::Custom(format!("ERR {message}"))
}

/// DUMP key
pub fn dump(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let payload = ctx
        .node
        .store
        .read(args.get(1), ctx.now, |value| value.map(dump_value));
    ctx.out.bulk_or_null(payload.as_deref());
    Ok(())
}

/// RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]
pub fn restore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut replace, mut absolute) = (false, false);
    let (mut idle, mut freq) = (None, None);
    let mut j = 4;
    while j < args.len() {
        let arg = args.get(j);
        let more = j + 1 < args.len();
        if is(arg, "replace") {
            replace = true;
        } else if is(arg, "absttl") {
            absolute = true;
        } else if is(arg, "idletime") && more && freq.is_none() {
            let seconds = int_arg(args.get(j + 1))?;
            if seconds < 0 {
                return Err(custom("Invalid IDLETIME value, must be >= 0"));
            }
            idle = Some(seconds);
            j += 1;
        } else if is(arg, "freq") && more && idle.is_none() {
            let value = int_arg(args.get(j + 1))?;
            if !(0..=255).contains(&value) {
                return Err(custom("Invalid FREQ value, must be >= 0 and <= 255"));
            }
            freq = Some(value);
            j += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        j += 1;
    }
    let ttl = int_arg(args.get(2))?;
    if ttl < 0 {
        return Err(custom("Invalid TTL value, must be >= 0"));
    }
    let key = args.get(1);
    let now = ctx.now;
    let exists = ctx.node.store.read(key, now, |v| v.is_some());
    if exists && !replace {
        return Err(CmdError::Custom(
            "BUSYKEY Target key name already exists.".into(),
        ));
    }
    let value = undump(args.get(3)).map_err(|e| CmdError::Custom(e.to_string()))?;
    let deadline = match (ttl, absolute) {
        (0, _) => 0,
        (at, true) => at as u64,
        (ms, false) => now.saturating_add(ms as u64),
    };
    ctx.node.store.write(key, now, |slot| {
        slot.remove();
        // A deadline already passed restores nothing, as in Redis (the key is deleted).
        if deadline == 0 || deadline > now {
            slot.set(value, Some(deadline));
        }
    });
    // IDLETIME and FREQ are checked as Redis checks them; the node keeps its own access
    // statistics for the new key.
    let _ = (idle, freq);
    ctx.notify(crate::notify::Class::GENERIC, "restore", key);
    ctx.out.ok();
    Ok(())
}
