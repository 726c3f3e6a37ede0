//! CLIENT TRACKING, CLIENT CACHING, CLIENT GETREDIR and CLIENT TRACKINGINFO, with Redis
//! 7.0's checks, errors and replies. The table and the messages live in `crate::tracking`.

use ringkv_protocol::Args;

use crate::connection::TrackingMode;
use crate::handler::{CmdError, CmdResult, Ctx, int_arg, is, lossy, on_off};
use crate::tracking::Tracker;

fn err(message: &str) -> CmdError {
    CmdError::Custom(format!("ERR {message}"))
}

/// True when one prefix starts with the other (a key would match both).
fn overlap(a: &[u8], b: &[u8]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX prefix ...] [BCAST] [OPTIN] [OPTOUT]
/// [NOLOOP]
pub fn client_tracking(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let on = on_off(args.get(2))?;
    let (mut redirect, mut bcast, mut optin, mut optout, mut noloop) =
        (None, false, false, false, false);
    let mut prefixes: Vec<Box<[u8]>> = Vec::new();
    let mut i = 3;
    while i < args.len() {
        let arg = args.get(i);
        let more = i + 1 < args.len();
        if is(arg, "redirect") && more {
            if redirect.is_some() {
                return Err(err("A client can only redirect to a single other client"));
            }
            let id = int_arg(args.get(i + 1))?;
            if id != ctx.conn.handle.id as i64
                && (id <= 0 || ctx.node.clients.get(id as u64).is_none())
            {
                return Err(err("The client ID you want redirect to does not exist"));
            }
            redirect = Some(id as u64);
            i += 1;
        } else if is(arg, "bcast") {
            bcast = true;
        } else if is(arg, "optin") {
            optin = true;
        } else if is(arg, "optout") {
            optout = true;
        } else if is(arg, "noloop") {
            noloop = true;
        } else if is(arg, "prefix") && more {
            prefixes.push(args.get(i + 1).into());
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    let node = ctx.node;
    let id = ctx.conn.handle.id;
    if !on {
        if ctx.conn.tracking.take().is_some() {
            node.tracking.disable(id);
        }
        ctx.out.ok();
        return Ok(());
    }
    if !prefixes.is_empty() && !bcast {
        return Err(err("PREFIX option requires BCAST mode to be enabled"));
    }
    let current = ctx.conn.tracking;
    if let Some(mode) = current
        && (mode == TrackingMode::Bcast) != bcast
    {
        return Err(err(
            "You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    if bcast && (optin || optout) {
        return Err(err("OPTIN and OPTOUT are not compatible with BCAST"));
    }
    if optin && optout {
        return Err(err("You can't specify both OPTIN mode and OPTOUT mode"));
    }
    if (optin && current == Some(TrackingMode::OptOut))
        || (optout && current == Some(TrackingMode::OptIn))
    {
        return Err(err(
            "You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    let existing = node
        .tracking
        .tracker(id)
        .map(|t| t.prefixes)
        .unwrap_or_default();
    for (n, prefix) in prefixes.iter().enumerate() {
        if let Some(other) = existing.iter().find(|p| overlap(p, prefix)) {
            return Err(err(&format!(
                "Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                lossy(prefix),
                lossy(other)
            )));
        }
        if let Some(other) = prefixes[n + 1..].iter().find(|p| overlap(p, prefix)) {
            return Err(err(&format!(
                "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                lossy(prefix),
                lossy(other)
            )));
        }
    }
    let mut all_prefixes = existing;
    all_prefixes.extend(prefixes);
    let mode = if bcast {
        TrackingMode::Bcast
    } else if optin {
        TrackingMode::OptIn
    } else if optout {
        TrackingMode::OptOut
    } else {
        TrackingMode::Default
    };
    node.tracking.enable(Tracker {
        handle: ctx.conn.handle.clone(),
        // Redirecting to itself is its own connection.
        redirect: redirect.filter(|r| *r != id),
        bcast,
        optin,
        optout,
        noloop,
        prefixes: all_prefixes,
        broken: false,
    });
    ctx.conn.tracking = Some(mode);
    ctx.out.ok();
    Ok(())
}

/// CLIENT CACHING YES|NO: whether the next command's reads are remembered (OPTIN/OPTOUT).
pub fn client_caching(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mode = ctx.conn.tracking;
    if !matches!(mode, Some(TrackingMode::OptIn | TrackingMode::OptOut)) {
        return Err(err(
            "CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ));
    }
    if is(args.get(2), "yes") {
        if mode != Some(TrackingMode::OptIn) {
            return Err(err(
                "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ));
        }
        ctx.conn.caching_next = Some(true);
    } else if is(args.get(2), "no") {
        if mode != Some(TrackingMode::OptOut) {
            return Err(err(
                "CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ));
        }
        ctx.conn.caching_next = Some(false);
    } else {
        return Err(CmdError::Syntax);
    }
    ctx.out.ok();
    Ok(())
}

/// CLIENT GETREDIR: -1 when not tracking, 0 without a redirect.
pub fn client_getredir(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let redirect = match ctx.node.tracking.tracker(ctx.conn.handle.id) {
        None => -1,
        Some(tracker) => tracker.redirect.map_or(0, |r| r as i64),
    };
    ctx.out.int(redirect);
    Ok(())
}

/// CLIENT TRACKINGINFO
pub fn client_trackinginfo(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let tracker = ctx.node.tracking.tracker(ctx.conn.handle.id);
    let mut flags: Vec<&str> = Vec::new();
    match &tracker {
        None => flags.push("off"),
        Some(t) => {
            flags.push("on");
            for (set, name) in [
                (t.bcast, "bcast"),
                (t.optin, "optin"),
                (t.optout, "optout"),
                (ctx.conn.caching_next == Some(true), "caching-yes"),
                (ctx.conn.caching_next == Some(false), "caching-no"),
                (t.noloop, "noloop"),
                (t.broken, "broken_redirect"),
            ] {
                if set {
                    flags.push(name);
                }
            }
        }
    }
    ctx.out.map(3);
    ctx.out.bulk(b"flags");
    ctx.out.set(flags.len());
    for flag in flags {
        ctx.out.bulk(flag.as_bytes());
    }
    ctx.out.bulk(b"redirect");
    ctx.out.int(match &tracker {
        None => -1,
        Some(t) => t.redirect.map_or(0, |r| r as i64),
    });
    ctx.out.bulk(b"prefixes");
    let mut prefixes = tracker.map(|t| t.prefixes).unwrap_or_default();
    prefixes.sort();
    ctx.out.array(prefixes.len());
    for prefix in &prefixes {
        ctx.out.bulk(prefix);
    }
    Ok(())
}
