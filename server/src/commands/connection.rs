//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET and CLIENT.

use std::sync::atomic::Ordering::Relaxed;

use ringkv_protocol::{Args, Protocol};

use crate::dispatch::route_name;
use crate::handler::{CmdError, CmdResult, Ctx, help, int_arg, int32_arg, is, lossy, on_off};
use crate::node::{ClientHandle, Node};

/// The Redis version ringkv answers as, so clients enable the features it implements.
pub const REDIS_COMPAT_VERSION: &str = "7.2.4";

/// PING [message]
pub fn ping(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.conn.subscriptions.is_some() && ctx.conn.protocol == Protocol::Resp2 {
        // In subscribed mode PING answers in the shape of a message, as in Redis.
        if args.len() > 2 {
            return Err(CmdError::WrongArity("ping"));
        }
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out
            .bulk(if args.len() == 2 { args.get(1) } else { b"" });
        return Ok(());
    }
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1)),
        _ => return Err(CmdError::WrongArity("ping")),
    }
    Ok(())
}

/// ECHO message
pub fn echo(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.out.bulk(args.get(1));
    Ok(())
}

/// Checks a username/password pair against `requirepass` (only the `default` user exists).
fn check_password(node: &Node, user: &[u8], password: &[u8]) -> CmdResult {
    let required = node.config.read().requirepass.clone();
    let user_ok = user.eq_ignore_ascii_case(b"default");
    let pass_ok = required.is_empty() || constant_time_eq(required.as_bytes(), password);
    if user_ok && pass_ok {
        Ok(())
    } else {
        Err(CmdError::Custom(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AUTH [username] password
pub fn auth(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (user, password) = match args.len() {
        2 => {
            if ctx.node.config.read().requirepass.is_empty() {
                return Err(CmdError::Custom("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into()));
            }
            (&b"default"[..], args.get(1))
        }
        3 => (args.get(1), args.get(2)),
        _ => return Err(CmdError::Syntax),
    };
    check_password(ctx.node, user, password)?;
    ctx.conn.authenticated = true;
    ctx.out.ok();
    Ok(())
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn set_name(ctx: &mut Ctx<'_, '_>, name: &[u8]) -> CmdResult {
    if !valid_name(name) {
        return Err(CmdError::Custom(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    *ctx.conn.handle.name.lock() = lossy(name);
    ctx.conn.forwarded = name == crate::cluster::PROXY_CLIENT_NAME.as_bytes();
    Ok(())
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]]
pub fn hello(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut protocol = ctx.conn.protocol;
    if args.len() >= 2 {
        let version = int_arg(args.get(1)).map_err(|_| {
            CmdError::Custom("ERR Protocol version is not an integer or out of range".into())
        })?;
        protocol = match version {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => {
                return Err(CmdError::Custom(
                    "NOPROTO unsupported protocol version".into(),
                ));
            }
        };
    }
    let mut auth = None;
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        if is(args.get(i), "AUTH") && i + 2 < args.len() {
            auth = Some((args.get(i + 1), args.get(i + 2)));
            i += 3;
        } else if is(args.get(i), "SETNAME") && i + 1 < args.len() {
            name = Some(args.get(i + 1));
            i += 2;
        } else {
            return Err(CmdError::Custom(format!(
                "ERR Syntax error in HELLO option '{}'",
                lossy(args.get(i))
            )));
        }
    }
    if let Some((user, password)) = auth {
        check_password(ctx.node, user, password)?;
        ctx.conn.authenticated = true;
    }
    if !ctx.conn.authenticated {
        return Err(CmdError::Custom("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
    }
    if let Some(name) = name {
        set_name(ctx, name)?;
    }
    ctx.conn.protocol = protocol;
    ctx.conn
        .handle
        .resp
        .store(if protocol == Protocol::Resp3 { 3 } else { 2 }, Relaxed);
    ctx.out.set_protocol(protocol);
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_COMPAT_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(if protocol == Protocol::Resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.int(ctx.conn.handle.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Ok(())
}

/// SELECT index: only database 0 exists.
pub fn select(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let db = int32_arg(args.get(1))?;
    if ctx.node.cluster.is_some() && db != 0 {
        return Err(CmdError::Custom(
            "ERR SELECT is not allowed in cluster mode".into(),
        ));
    }
    let db = ctx
        .node
        .databases
        .index(db.into())
        .ok_or_else(|| CmdError::Custom("ERR DB index is out of range".into()))?;
    set_db(ctx, db);
    ctx.out.ok();
    Ok(())
}

/// Selects logical database `db` for this connection.
fn set_db(ctx: &mut Ctx<'_, '_>, db: u8) {
    ctx.conn.db = db;
    ctx.conn.handle.db.store(db, Relaxed);
}

/// QUIT
pub fn quit(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    ctx.conn.close = true;
    ctx.out.ok();
    Ok(())
}

/// RESET
pub fn reset(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    if let Some(subscriptions) = ctx.conn.subscriptions.take() {
        subscriptions.leave(&ctx.node.pubsub);
    }
    if ctx.conn.tracking.take().is_some() {
        ctx.node.tracking.disable(ctx.conn.handle.id);
    }
    ctx.conn.caching_next = None;
    ctx.conn.take_multi();
    ctx.conn.unwatch_all(ctx.node);
    ctx.conn.protocol = Protocol::Resp2;
    ctx.conn.handle.resp.store(2, Relaxed);
    ctx.conn.authenticated = ctx.node.config.read().requirepass.is_empty();
    ctx.conn.handle.name.lock().clear();
    ctx.conn.handle.no_evict.store(false, Relaxed);
    set_db(ctx, 0);
    ctx.out.set_protocol(Protocol::Resp2);
    ctx.out.simple("RESET");
    Ok(())
}

/// CLIENT with no subcommand.
pub fn client_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("client"))
}

/// CLIENT ID
pub fn client_id(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    ctx.out.int(ctx.conn.handle.id as i64);
    Ok(())
}

/// CLIENT SETNAME name
pub fn client_setname(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    set_name(ctx, args.get(2))?;
    ctx.out.ok();
    Ok(())
}

/// CLIENT GETNAME
pub fn client_getname(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let name = ctx.conn.handle.name.lock().clone();
    ctx.out
        .bulk_or_null((!name.is_empty()).then_some(name.as_bytes()));
    Ok(())
}

/// One CLIENT LIST line in Redis's format.
pub fn client_line(node: &Node, client: &ClientHandle) -> String {
    let now_ms = node.uptime_ms();
    let idle = now_ms.saturating_sub(client.last_interaction_ms.load(Relaxed)) / 1000;
    let multi = match client.multi.load(Relaxed) {
        0 => -1,
        n => n as i64 - 1,
    };
    let (lib_name, lib_ver) = client.lib.lock().clone();
    let [sub, psub, ssub] = [0, 1, 2].map(|i| client.subscriptions[i].load(Relaxed));
    let mut flags = match (multi >= 0, sub + psub + ssub > 0) {
        (true, true) => "xP",
        (true, false) => "x",
        (false, true) => "P",
        (false, false) => "",
    }
    .to_string();
    if client.blocked.load(Relaxed) {
        flags.push('b');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub={sub} psub={psub} ssub={ssub} multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
        client.id,
        client.addr,
        client.laddr,
        client.name.lock(),
        client.created.elapsed().as_secs(),
        idle,
        flags,
        client.db.load(Relaxed),
        multi,
        route_name(client.last_command.load(Relaxed)),
        client.resp.load(Relaxed),
        lib_name,
        lib_ver,
    )
}

/// CLIENT LIST [TYPE normal] [ID id ...]
pub fn client_list(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        if is(args.get(i), "TYPE") && i + 1 < args.len() {
            let kind = args.get(i + 1);
            if !["normal", "master", "replica", "slave", "pubsub"]
                .iter()
                .any(|k| is(kind, k))
            {
                return Err(CmdError::Custom(format!(
                    "ERR Unknown client type '{}'",
                    lossy(kind)
                )));
            }
            if !is(kind, "normal") {
                ids = Some(Vec::new());
            }
            i += 2;
        } else if is(args.get(i), "ID") && i + 1 < args.len() {
            let list = ids.get_or_insert_with(Vec::new);
            for arg in args.iter().skip(i + 1) {
                match int_arg(arg) {
                    Ok(id) if id > 0 => list.push(id as u64),
                    _ => return Err(CmdError::Custom("ERR Invalid client ID".into())),
                }
            }
            i = args.len();
        } else {
            return Err(CmdError::Syntax);
        }
    }
    ctx.conn
        .handle
        .last_command
        .store(ctx.conn.last_command, Relaxed);
    let mut text = String::new();
    for client in ctx.node.clients.list() {
        if ids.as_ref().is_none_or(|ids| ids.contains(&client.id)) {
            text.push_str(&client_line(ctx.node, &client));
        }
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// CLIENT INFO
pub fn client_info(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    ctx.conn
        .handle
        .last_command
        .store(ctx.conn.last_command, Relaxed);
    let line = client_line(ctx.node, &ctx.conn.handle);
    ctx.out.verbatim(line.as_bytes());
    Ok(())
}

/// CLIENT SETINFO LIB-NAME|LIB-VER value
pub fn client_setinfo(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (attr, value) = (args.get(2), args.get(3));
    let is_name = is(attr, "LIB-NAME");
    if !is_name && !is(attr, "LIB-VER") {
        return Err(CmdError::Custom(format!(
            "ERR Unrecognized option '{}'",
            lossy(attr)
        )));
    }
    if !valid_name(value) {
        return Err(CmdError::Custom(format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            if is_name { "lib-name" } else { "lib-ver" }
        )));
    }
    let mut lib = ctx.conn.handle.lib.lock();
    if is_name {
        lib.0 = lossy(value);
    } else {
        lib.1 = lossy(value);
    }
    drop(lib);
    ctx.out.ok();
    Ok(())
}

/// CLIENT KILL addr | CLIENT KILL [ID id] [ADDR addr] [LADDR addr] [USER u] [SKIPME yes|no] [MAXAGE s]
pub fn client_kill(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let me = ctx.conn.handle.id;
    if args.len() == 3 {
        let addr = lossy(args.get(2));
        let target = ctx
            .node
            .clients
            .list()
            .into_iter()
            .find(|c| c.addr.to_string() == addr);
        let Some(target) = target else {
            return Err(CmdError::Custom("ERR No such client".into()));
        };
        kill(ctx, &target, me);
        ctx.out.ok();
        return Ok(());
    }
    if args.len() % 2 != 0 {
        return Err(CmdError::Syntax);
    }
    let (mut id, mut addr, mut laddr, mut max_age) = (None, None, None, None);
    let mut skip_me = true;
    // Only normal clients exist: any other TYPE filter matches nobody.
    let mut other_type = false;
    for pair in (2..args.len()).step_by(2) {
        let (key, value) = (args.get(pair), args.get(pair + 1));
        if is(key, "ID") {
            id =
                Some(int_arg(value).map_err(|_| {
                    CmdError::Custom("ERR client-id should be greater than 0".into())
                })? as u64);
        } else if is(key, "ADDR") {
            addr = Some(lossy(value));
        } else if is(key, "LADDR") {
            laddr = Some(lossy(value));
        } else if is(key, "USER") {
            if !is(value, "default") {
                return Err(CmdError::Custom(format!(
                    "ERR No such user '{}'",
                    lossy(value)
                )));
            }
        } else if is(key, "TYPE") {
            if !["normal", "master", "replica", "slave", "pubsub"]
                .iter()
                .any(|k| is(value, k))
            {
                return Err(CmdError::Custom(format!(
                    "ERR Unknown client type '{}'",
                    lossy(value)
                )));
            }
            other_type |= !is(value, "normal");
        } else if is(key, "SKIPME") {
            skip_me = if is(value, "yes") {
                true
            } else if is(value, "no") {
                false
            } else {
                return Err(CmdError::Syntax);
            };
        } else if is(key, "MAXAGE") {
            max_age = Some(int_arg(value)? as u64);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let mut killed = 0;
    for client in ctx.node.clients.list() {
        let matches = id.is_none_or(|id| client.id == id)
            && addr.as_ref().is_none_or(|a| client.addr.to_string() == *a)
            && laddr
                .as_ref()
                .is_none_or(|a| client.laddr.to_string() == *a)
            && max_age.is_none_or(|age| client.created.elapsed().as_secs() >= age)
            && !other_type
            && !(skip_me && client.id == me);
        if matches {
            kill(ctx, &client, me);
            killed += 1;
        }
    }
    ctx.out.int(killed);
    Ok(())
}

fn kill(ctx: &mut Ctx<'_, '_>, client: &ClientHandle, me: u64) {
    if client.id == me {
        // Killing oneself: finish this reply, then close.
        ctx.conn.close = true;
    } else {
        client.kill();
    }
}

/// CLIENT NO-EVICT on|off
pub fn client_no_evict(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let on = on_off(args.get(2))?;
    ctx.conn.handle.no_evict.store(on, Relaxed);
    ctx.out.ok();
    Ok(())
}

/// CLIENT UNBLOCK client-id [TIMEOUT|ERROR]: answers a client blocked in a blocking pop as
/// if its timeout passed, or with `-UNBLOCKED`.
pub fn client_unblock(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let id = int_arg(args.get(2))?;
    let error = match args.len() {
        3 => false,
        4 if is(args.get(3), "timeout") => false,
        4 if is(args.get(3), "error") => true,
        _ => {
            return Err(CmdError::Custom(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into(),
            ));
        }
    };
    let unblocked = ctx.node.blocking.unblock(id as u64, error);
    ctx.out.int(unblocked as i64);
    Ok(())
}

/// CLIENT HELP
pub fn client_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "CLIENT",
        &[
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are: ID, ADDR, LADDR, USER, SKIPME, MAXAGE.",
            "LIST [TYPE normal] [ID <id> [<id> ...]]",
            "    Return information about client connections.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "NO-EVICT (ON|OFF)",
            "    Protect current client connection from eviction.",
        ],
    );
    Ok(())
}
