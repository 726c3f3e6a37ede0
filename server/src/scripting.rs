//! Lua scripting (EVAL, EVALSHA, SCRIPT): one Lua 5.1 state per node, sandboxed as Redis
//! 7.0 sandboxes its own (`scripting/sandbox.lua`), with Redis's `redis` API and the
//! `cjson`, `cmsgpack`, `bit` and `struct` libraries written in Rust.
//!
//! A script runs under the store's exclusive gate, so nothing interleaves its writes; each
//! `redis.call` goes through the same dispatch as a client's command (and so reaches the
//! change log, the WAL and replicas as that command's effects, never as the script).

mod api;
mod args;
mod bitop;
mod cjson;
pub mod convert;
mod msgpack;
mod structlib;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use parking_lot::Mutex;
use ringkv_protocol::{OwnedArgs, Protocol, ReplyWriter};
use sha1::{Digest, Sha1};

use crate::connection::ConnState;
use crate::handler::{CmdError, CmdResult, Ctx};
use crate::node::Node;

/// The reported Redis version scripts see (`redis.REDIS_VERSION`).
const VERSION: &str = crate::commands::REDIS_COMPAT_VERSION;

/// What a script may do, from the command that ran it and its shebang flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptFlags {
    /// EVAL_RO, `no-writes`: write commands are refused.
    pub no_writes: bool,
    /// `allow-oom`: write commands run even over `maxmemory`.
    pub allow_oom: bool,
}

/// A compiled script and what it came from.
struct Cached {
    function: Function,
    flags: ScriptFlags,
    body_len: usize,
}

/// The Lua state and its script cache.
struct Engine {
    lua: Lua,
    /// The real globals (KEYS and ARGV are set here); scripts see a read-only proxy.
    backing: Table,
    /// The real `redis` table, where each run sets `call` and `pcall`.
    redis: Table,
    /// The protocol `redis.setresp` chose for the run's commands.
    resp: Arc<AtomicU8>,
    run: Function,
    scripts: HashMap<String, Cached>,
    bytes: usize,
}

/// Instructions between two looks at a running script (Redis's count hook uses the same).
const HOOK_EVERY: u32 = 100_000;

/// What a running script shares with the rest of the node: when it started, whether it
/// ran past the busy threshold, whether it wrote, and a kill request.
#[derive(Debug, Default)]
struct Control {
    started: Mutex<Option<Instant>>,
    threshold_ms: AtomicU64,
    busy: AtomicBool,
    wrote: AtomicBool,
    kill: AtomicBool,
}

/// The node's scripting engine.
pub struct Scripting {
    engine: Mutex<Engine>,
    control: Arc<Control>,
    /// True while a script runs.
    running: AtomicBool,
}

impl std::fmt::Debug for Scripting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripting").finish_non_exhaustive()
    }
}

/// The lowercase hex SHA-1 of `body` (scripts are cached and called by it).
pub fn sha1_hex(body: &[u8]) -> String {
    let digest = Sha1::digest(body);
    let mut hex = String::with_capacity(40);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Reads a script's `#!lua flags=…` line, as Redis 7.0 does for EVAL.
fn shebang_flags(body: &[u8]) -> Result<ScriptFlags, CmdError> {
    let mut flags = ScriptFlags::default();
    if !body.starts_with(b"#!") {
        return Ok(flags);
    }
    let line_end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[..line_end]).into_owned();
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or_default();
    if engine != "#!lua" {
        return Err(CmdError::Custom(format!(
            "ERR Unexpected engine in script shebang: {engine}"
        )));
    }
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(CmdError::Custom(format!(
                "ERR Unknown lua shebang option: {part}"
            )));
        };
        for flag in list.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "no-writes" => flags.no_writes = true,
                "allow-oom" => flags.allow_oom = true,
                "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                other => {
                    return Err(CmdError::Custom(format!(
                        "ERR Unexpected flag in script shebang: {other}"
                    )));
                }
            }
        }
    }
    Ok(flags)
}

impl Engine {
    fn new(memory_limit: usize, control: Arc<Control>) -> mlua::Result<Engine> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        let hidden = lua.create_table()?;
        let resp = Arc::new(AtomicU8::new(2));
        let native = api::native_functions(&lua, resp.clone(), VERSION)?;
        let redis: Table = native.get("redis")?;
        let backing = lua.globals();
        let proxy: Table = lua
            .load(include_str!("scripting/sandbox.lua"))
            .set_name("=ringkv")
            .call((hidden.clone(), native))?;
        // Every chunk compiled from now on (scripts, and what they `loadstring`) sees the
        // read-only globals.
        lua.set_globals(proxy)?;
        let run: Function = hidden.raw_get("run")?;
        if memory_limit > 0 {
            lua.set_memory_limit(memory_limit)?;
        }
        // Every so many instructions: past the threshold the node answers other clients
        // -BUSY, and a SCRIPT KILL ends the script (again at each look, so a pcall that
        // catches it cannot keep the script alive).
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| {
                if control.kill.load(Relaxed) {
                    return Err(api::raise_table(
                        "ERR Script killed by user with SCRIPT KILL...",
                    ));
                }
                if !control.busy.load(Relaxed)
                    && let Some(started) = *control.started.lock()
                    && started.elapsed()
                        >= Duration::from_millis(control.threshold_ms.load(Relaxed))
                {
                    control.busy.store(true, Relaxed);
                    // This worker is stuck in the script while the other may sleep with
                    // nobody polling the sockets. Two spawned tasks wake it (the second
                    // pushes the first out of this worker's own slot, where it could not
                    // be stolen); it then polls the sockets, so other clients get -BUSY
                    // and SCRIPT KILL is heard.
                    if let Ok(handle) = tokio::runtime::Handle::try_current()
                        && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                    {
                        handle.spawn(async {});
                        handle.spawn(async {});
                    }
                    tracing::warn!(
                        ms = started.elapsed().as_millis() as u64,
                        "a script runs past busy-reply-threshold: other clients get -BUSY until it ends or SCRIPT KILL stops it"
                    );
                }
                Ok(VmState::Continue)
            },
        )?;
        Ok(Engine {
            lua,
            backing,
            redis,
            resp,
            run,
            scripts: HashMap::new(),
            bytes: 0,
        })
    }

    /// Compiles `body` into the cache (a cached one is kept); its SHA-1.
    fn load(&mut self, body: &[u8]) -> Result<String, CmdError> {
        let sha = sha1_hex(body);
        if self.scripts.contains_key(&sha) {
            return Ok(sha);
        }
        let flags = shebang_flags(body)?;
        // The shebang line stays in the chunk as a comment, so line numbers hold.
        let source: Vec<u8> = if body.starts_with(b"#!") {
            let mut s = b"--".to_vec();
            s.extend_from_slice(body);
            s
        } else {
            body.to_vec()
        };
        let function = self
            .lua
            .load(source)
            .set_name("@user_script")
            .into_function()
            .map_err(|error| {
                let text = match &error {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                CmdError::Custom(format!(
                    "ERR Error compiling script (new function): {}",
                    text.lines().next().unwrap_or_default()
                ))
            })?;
        self.bytes += body.len();
        self.scripts.insert(
            sha.clone(),
            Cached {
                function,
                flags,
                body_len: body.len(),
            },
        );
        Ok(sha)
    }
}

/// A script invocation: which script, its keys and arguments, how it was called.
pub struct Invocation<'a> {
    /// The script's SHA-1 (lowercase hex).
    pub sha: &'a str,
    /// KEYS.
    pub keys: Vec<&'a [u8]>,
    /// ARGV.
    pub argv: Vec<&'a [u8]>,
    /// EVAL_RO / EVALSHA_RO.
    pub read_only: bool,
}

impl Scripting {
    /// A fresh engine; `memory_limit` bounds the Lua state (0: unbounded), a script that
    /// runs longer than `busy_threshold` makes the node answer -BUSY.
    pub fn new(memory_limit: usize, busy_threshold: Duration) -> Scripting {
        let control = Arc::new(Control::default());
        control
            .threshold_ms
            .store(busy_threshold.as_millis() as u64, Relaxed);
        Scripting {
            engine: Mutex::new(
                Engine::new(memory_limit, control.clone()).expect("the Lua state starts"),
            ),
            control,
            running: AtomicBool::new(false),
        }
    }

    /// CONFIG SET busy-reply-threshold.
    pub fn set_busy_threshold(&self, threshold: Duration) {
        self.control
            .threshold_ms
            .store(threshold.as_millis() as u64, Relaxed);
    }

    /// True while a script runs past the busy threshold: other clients get -BUSY.
    pub fn busy(&self) -> bool {
        self.control.busy.load(Relaxed)
    }

    /// The running script executed a write: SCRIPT KILL can no longer stop it.
    pub fn note_write(&self) {
        self.control.wrote.store(true, Relaxed);
    }

    /// SCRIPT KILL from another client while a script is busy.
    pub fn kill(&self) -> Result<(), CmdError> {
        if !self.busy() {
            return Err(CmdError::Custom(
                "NOTBUSY No scripts in execution right now.".into(),
            ));
        }
        if self.control.wrote.load(Relaxed) {
            return Err(CmdError::Custom("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.".into()));
        }
        self.control.kill.store(true, Relaxed);
        Ok(())
    }

    /// SCRIPT LOAD (and EVAL's implicit one): compiles and caches, answers the SHA-1.
    pub fn load(&self, body: &[u8]) -> Result<String, CmdError> {
        self.engine.lock().load(body)
    }

    /// SCRIPT EXISTS for one SHA-1.
    pub fn exists(&self, sha: &str) -> bool {
        self.engine
            .lock()
            .scripts
            .contains_key(&sha.to_ascii_lowercase())
    }

    /// SCRIPT FLUSH: forgets every script.
    pub fn flush(&self) {
        let mut engine = self.engine.lock();
        engine.scripts.clear();
        engine.bytes = 0;
        let _ = engine.lua.gc_collect();
    }

    /// Cached scripts and their source bytes (INFO's `number_of_cached_scripts`,
    /// `used_memory_scripts`), and the Lua state's memory (`used_memory_lua`).
    pub fn stats(&self) -> (usize, usize, usize) {
        let engine = self.engine.lock();
        (engine.scripts.len(), engine.bytes, engine.lua.used_memory())
    }

    /// True while a script runs.
    pub fn running(&self) -> bool {
        self.running.load(Relaxed)
    }

    /// Runs a cached script (EVAL loads it first); `NOSCRIPT` when it is not cached.
    pub fn run(&self, ctx: &mut Ctx<'_, '_>, invocation: Invocation<'_>) -> CmdResult {
        let mut engine = self.engine.lock();
        let Some(cached) = engine.scripts.get(invocation.sha) else {
            return Err(CmdError::Custom(
                "NOSCRIPT No matching script. Please use EVAL.".into(),
            ));
        };
        let (function, mut flags) = (cached.function.clone(), cached.flags);
        let _ = cached.body_len;
        flags.no_writes |= invocation.read_only;
        let control = &self.control;
        control.wrote.store(false, Relaxed);
        control.kill.store(false, Relaxed);
        *control.started.lock() = Some(Instant::now());
        self.running.store(true, Relaxed);
        let outcome = run_script(&mut engine, ctx, function, flags, &invocation);
        self.running.store(false, Relaxed);
        *control.started.lock() = None;
        control.busy.store(false, Relaxed);
        control.kill.store(false, Relaxed);
        outcome
    }
}

fn lua_error(error: mlua::Error) -> CmdError {
    CmdError::Custom(format!("ERR {error}"))
}

fn string_table(lua: &Lua, items: &[&[u8]]) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.iter().enumerate() {
        table.raw_set(i + 1, lua.create_string(item)?)?;
    }
    Ok(table)
}

fn run_script(
    engine: &mut Engine,
    ctx: &mut Ctx<'_, '_>,
    function: Function,
    flags: ScriptFlags,
    invocation: &Invocation<'_>,
) -> CmdResult {
    let lua = &engine.lua;
    engine
        .backing
        .raw_set(
            "KEYS",
            string_table(lua, &invocation.keys).map_err(lua_error)?,
        )
        .map_err(lua_error)?;
    engine
        .backing
        .raw_set(
            "ARGV",
            string_table(lua, &invocation.argv).map_err(lua_error)?,
        )
        .map_err(lua_error)?;
    engine.resp.store(2, Relaxed);
    let (node, now) = (ctx.node, ctx.now);
    // A script's SELECT is its own; its blocking commands answer at once.
    let (db, no_block) = (ctx.conn.db, ctx.conn.no_block);
    ctx.conn.no_block = true;
    ctx.conn.script_allows_oom = flags.allow_oom;
    ctx.conn.in_script = true;
    let conn = RefCell::new(&mut *ctx.conn);
    let resp = engine.resp.clone();
    let command = |lua: &Lua, args: MultiValue| {
        let resp3 = resp.load(Relaxed) == 3;
        let mut conn = conn.borrow_mut();
        call_command(lua, node, &mut conn, now, resp3, flags, args)
    };
    let result: mlua::Result<(bool, Value)> = lua.scope(|scope| {
        let call = scope.create_function(|lua, args: MultiValue| {
            let reply = command(lua, args)?;
            match error_text(&reply) {
                Some(text) => Err(api::raise_table(&text)),
                None => Ok(reply),
            }
        })?;
        let pcall = scope.create_function(|lua, args: MultiValue| command(lua, args))?;
        engine.redis.raw_set("call", call)?;
        engine.redis.raw_set("pcall", pcall)?;
        let result = engine.run.call::<(bool, Value)>(function);
        engine.redis.raw_set("call", Value::Nil)?;
        engine.redis.raw_set("pcall", Value::Nil)?;
        result
    });
    ctx.conn.db = db;
    ctx.conn.no_block = no_block;
    ctx.conn.script_allows_oom = false;
    ctx.conn.in_script = false;
    let script_resp = engine.resp.load(Relaxed);
    let _ = engine.backing.raw_set("KEYS", Value::Nil);
    let _ = engine.backing.raw_set("ARGV", Value::Nil);
    match result {
        Ok((true, value)) => {
            convert::write_reply(ctx.out, &value, script_resp, 0);
            Ok(())
        }
        Ok((false, error)) => Err(script_error(&error, invocation.sha)),
        Err(error) => Err(CmdError::Custom(format!(
            "ERR Error running script {}, {}",
            invocation.sha,
            error.to_string().lines().next().unwrap_or_default()
        ))),
    }
}

/// The text of an error reply converted to Lua (`{err = text}`), if `reply` is one.
fn error_text(reply: &Value) -> Option<String> {
    let Value::Table(table) = reply else {
        return None;
    };
    match table.raw_get::<Value>("err") {
        Ok(Value::String(s)) => Some(s.to_string_lossy()),
        _ => None,
    }
}

/// The reply for an error a script raised: its message, and where it was raised.
fn script_error(error: &Value, sha: &str) -> CmdError {
    let Value::Table(table) = error else {
        return CmdError::Custom(format!("ERR Error running script {sha}, execution failure"));
    };
    let message = match table.raw_get::<Value>("err") {
        Ok(Value::String(s)) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
        _ => "ERR execution failure".into(),
    };
    let source = match table.raw_get::<Value>("source") {
        Ok(Value::String(s)) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
        _ => None,
    };
    let line = match table.raw_get::<Value>("line") {
        Ok(Value::Integer(i)) => Some(i),
        Ok(Value::Number(n)) => Some(n as i64),
        _ => None,
    };
    let text = match (source, line) {
        (Some(source), Some(line)) => format!("{message} script: {sha}, on {source}:{line}."),
        _ => message,
    };
    CmdError::Custom(text.replace(['\r', '\n'], " "))
}

/// One `redis.call`/`redis.pcall`: the command's reply as a Lua value (an error reply as
/// Redis's error table, which `redis.call` raises).
fn call_command(
    lua: &Lua,
    node: &Node,
    conn: &mut ConnState,
    now: u64,
    resp3: bool,
    flags: ScriptFlags,
    args: MultiValue,
) -> mlua::Result<Value> {
    if args.is_empty() {
        return convert::error_table(
            lua,
            b"ERR Please specify at least one argument for this redis lib call",
        );
    }
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(args.len());
    for arg in args.iter() {
        owned.push(match arg {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(i) => i.to_string().into_bytes(),
            Value::Number(n) => convert::format_g(*n, 17).into_bytes(),
            _ => {
                return convert::error_table(
                    lua,
                    b"ERR Lua redis lib command arguments must be strings or integers",
                );
            }
        });
    }
    let args = OwnedArgs::new(owned.iter().map(Vec::as_slice));
    let protocol = if resp3 {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    };
    let mut reply = Vec::new();
    let result = {
        let mut out = ReplyWriter::new(&mut reply, protocol);
        crate::dispatch::run_from_script(node, conn, &mut out, args.args(), now, flags)
    };
    if let Err(error) = result {
        return convert::error_table(lua, error.to_string().as_bytes());
    }
    convert::reply_to_lua(lua, &reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_and_shebangs_read_as_redis_reads_them() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            shebang_flags(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap(),
            ScriptFlags {
                no_writes: true,
                allow_oom: true
            }
        );
        assert_eq!(
            shebang_flags(b"#!python\n").unwrap_err().to_string(),
            "ERR Unexpected engine in script shebang: #!python"
        );
        assert_eq!(
            shebang_flags(b"#!lua flags=bogus\n")
                .unwrap_err()
                .to_string(),
            "ERR Unexpected flag in script shebang: bogus"
        );
        assert_eq!(
            shebang_flags(b"#!lua name=x\n").unwrap_err().to_string(),
            "ERR Unknown lua shebang option: name=x"
        );
    }
}
