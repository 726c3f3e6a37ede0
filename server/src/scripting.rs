//! Lua scripting (EVAL, EVALSHA, SCRIPT): Lua 5.1 states sandboxed as Redis
//! 7.0 sandboxes its own (`scripting/sandbox.lua`), with Redis's `redis` API and the
//! `cjson`, `cmsgpack`, `bit` and `struct` libraries written in Rust.
//!
//! A script runs under the store's exclusive gate, so nothing interleaves its writes; each
//! `redis.call` goes through the same dispatch as a client's command (and so reaches the
//! change log, the WAL and replicas as that command's effects, never as the script).

mod api;
mod args;
mod bitop;
mod call;
mod cjson;
pub mod convert;
mod functions;
mod msgpack;
pub mod shared;
mod structlib;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use mlua::{
    Function, HookTriggers, Lua, LuaOptions, MultiValue, RegistryKey, StdLib, Table, Value, VmState,
};
use parking_lot::{Mutex, RwLock};
use ringkv_protocol::{Args, OwnedArgs};
use sha1::{Digest, Sha1};

use crate::connection::ConnState;
use crate::handler::{CmdError, CmdResult, Ctx};
use crate::node::Node;
use ringkv_store::Store;

/// The maps looked up on every script call, keyed by SHA-1s and function names: a seeded
/// fast hash (SipHash was a visible part of a short script's cost).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The reported Redis version scripts see (`redis.REDIS_VERSION`).
const VERSION: &str = crate::commands::REDIS_COMPAT_VERSION;

/// What a script may do, from the command that ran it and its shebang flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptFlags {
    /// EVAL_RO, `no-writes`: write commands are refused.
    pub no_writes: bool,
    /// `allow-oom`: write commands run even over `maxmemory`.
    pub allow_oom: bool,
    /// `no-cluster`: refused on a cluster member.
    pub no_cluster: bool,
}

impl ScriptFlags {
    /// Redis's refusal of a `no-cluster` script or function on a cluster member.
    fn check_cluster(&self, node: &Node) -> Result<(), CmdError> {
        if self.no_cluster && node.cluster.is_some() {
            return Err(CmdError::Custom(
                "ERR Can not run script on cluster, 'no-cluster' flag is set.".into(),
            ));
        }
        Ok(())
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
                "no-cluster" => flags.no_cluster = true,
                "allow-stale" | "allow-cross-slot-keys" => {}
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

/// A script invocation: which script, its keys and arguments, how it was called.
pub struct Invocation<'a> {
    /// The script's SHA-1 (lowercase hex), or the function's name: errors name it.
    pub sha: &'a str,
    /// The command's arguments: KEYS from 3, then ARGV.
    args: &'a Args<'a>,
    numkeys: usize,
    /// EVAL_RO / EVALSHA_RO.
    pub read_only: bool,
}

impl<'a> Invocation<'a> {
    /// The invocation of `sha` by a command whose arguments after `numkeys` (at 2) are
    /// `numkeys` keys, then the script's arguments.
    pub fn new(sha: &'a str, args: &'a Args<'a>, numkeys: usize, read_only: bool) -> Self {
        Invocation {
            sha,
            args,
            numkeys,
            read_only,
        }
    }

    fn keys(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        (3..3 + self.numkeys).map(|i| self.args.get(i))
    }

    fn argv(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        (3 + self.numkeys..self.args.len()).map(|i| self.args.get(i))
    }
}

/// Redis's reply to EVALSHA of a script it does not hold (clients branch on `NOSCRIPT`).
pub fn no_script() -> CmdError {
    CmdError::Custom("NOSCRIPT No matching script. Please use EVAL.".into())
}

/// Script arguments passed on the Lua stack at most; more go in tables built from Rust.
const STACK_ARGS: usize = 1000;

/// Instructions between two looks at a running script (Redis's count hook uses the same).
const HOOK_EVERY: u32 = 100_000;

/// What a running script shares with the rest of the node: when it started, whether it
/// ran past the busy threshold, whether it wrote, and a kill request. Scripts run one at a
/// time (under the store's exclusive gate), whichever thread runs them.
#[derive(Debug, Default)]
struct Control {
    /// Unix milliseconds when the running script started; 0 while none runs. The batch's
    /// time, not a clock read: the threshold is seconds, a batch's age is milliseconds.
    started_ms: AtomicU64,
    threshold_ms: AtomicU64,
    busy: AtomicBool,
    wrote: AtomicBool,
    kill: AtomicBool,
}

/// A script's source as SCRIPT LOAD or EVAL gave it.
struct Source {
    body: Box<[u8]>,
    flags: ScriptFlags,
}

/// The node's scripting: the scripts loaded, and what every thread's Lua state shares.
///
/// Each runtime thread compiles and runs scripts in a Lua state of its own (a Lua state is
/// not shared between threads; one per thread needs no lock on every Lua call), all built
/// from the same sources. SCRIPT FLUSH moves a generation on, and each state drops what it
/// compiled before.
pub struct Scripting {
    id: u64,
    sources: RwLock<FastMap<String, Arc<Source>>>,
    source_bytes: AtomicUsize,
    generation: AtomicU64,
    control: Arc<Control>,
    memory_limit: usize,
    node: OnceLock<Weak<Node>>,
    libraries: RwLock<functions::Libraries>,
    /// The libraries whose code the store holds, so a change touches only those keys.
    stored_libraries: Mutex<HashSet<String>>,
    /// How many of the changes every member applies were applied here (gossiped: see
    /// `shared::keep_in_step`).
    changes: AtomicU64,
}

impl std::fmt::Debug for Scripting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripting")
            .field("scripts", &self.sources.read().len())
            .finish_non_exhaustive()
    }
}

/// What the running script's `redis.call` works with: the caller's connection (moved in
/// for the run), the node, the batch's time and the script's flags.
struct RunState {
    node: Option<Arc<Node>>,
    conn: Option<ConnState>,
    now: u64,
    flags: ScriptFlags,
    /// The protocol `redis.setresp` chose for the run's commands.
    resp: u8,
    /// A command's arguments and its reply, reused from call to call.
    args: OwnedArgs,
    reply: Vec<u8>,
}

/// One thread's Lua state for one node.
struct Engine {
    lua: Lua,
    /// The real globals (KEYS and ARGV are set here); scripts see a read-only proxy.
    backing: Table,
    run: Function,
    /// Compiled scripts by SHA-1, in the Lua registry: a `Function` handle held in Rust
    /// takes a slot of mlua's reference stack, which Lua 5.1 caps near 8,000, so holding
    /// one per cached script made the 8,000th SCRIPT LOAD fail.
    compiled: FastMap<String, (RegistryKey, ScriptFlags)>,
    generation: u64,
    state: Rc<RefCell<RunState>>,
    /// FCALL's runner, the environment libraries load in, and their loader.
    run_function: Function,
    library_env: Table,
    load_library: Function,
    /// What `redis.register_function` collects while a library loads.
    collector: functions::Collector,
    /// The registered functions of every library, loaded in this state at
    /// `functions_generation` (in the registry, as `compiled`).
    functions: FastMap<String, RegistryKey>,
    functions_generation: u64,
}

thread_local! {
    /// This thread's Lua states, by [`Scripting`] (a process may run several nodes).
    static ENGINES: RefCell<Vec<(u64, Engine)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lua_error(error: mlua::Error) -> CmdError {
    CmdError::Custom(format!("ERR {error}"))
}

fn compile_error(error: mlua::Error) -> CmdError {
    let text = match &error {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    CmdError::Custom(format!(
        "ERR Error compiling script (new function): {}",
        text.lines().next().unwrap_or_default()
    ))
}

fn string_table<'a>(
    lua: &Lua,
    items: impl ExactSizeIterator<Item = &'a [u8]>,
) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.enumerate() {
        table.raw_set(i + 1, lua.create_string(item)?)?;
    }
    Ok(table)
}

impl Engine {
    fn new(memory_limit: usize, control: Arc<Control>) -> mlua::Result<Engine> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        let state = Rc::new(RefCell::new(RunState {
            node: None,
            conn: None,
            now: 0,
            flags: ScriptFlags::default(),
            resp: 2,
            args: OwnedArgs::default(),
            reply: Vec::new(),
        }));
        let hidden = lua.create_table()?;
        let setresp_state = state.clone();
        let native = api::native_functions(
            &lua,
            Box::new(move |version| setresp_state.borrow_mut().resp = version),
            VERSION,
        )?;
        let redis: Table = native.get("redis")?;
        let collector: functions::Collector = Rc::new(RefCell::new(None));
        native.set(
            "register_function",
            functions::register_function(&lua, collector.clone())?,
        )?;
        for raise in [true, false] {
            let state = state.clone();
            let function = lua.create_function(move |lua, args: call::CallArgs| {
                let reply = call::call_command(lua, &state, args);
                match reply.error_text() {
                    Some(text) if raise => Err(api::raise_table(&text)),
                    _ => Ok(reply),
                }
            })?;
            redis.raw_set(if raise { "call" } else { "pcall" }, function)?;
        }
        let backing = lua.globals();
        let proxy: Table = lua
            .load(include_str!("scripting/sandbox.lua"))
            .set_name("=ringkv")
            .call((hidden.clone(), native))?;
        // Every chunk compiled from now on (scripts, and what they `loadstring`) sees the
        // read-only globals.
        lua.set_globals(proxy)?;
        let run: Function = hidden.raw_get("run")?;
        let run_function: Function = hidden.raw_get("run_function")?;
        let library_env: Table = hidden.raw_get("library_env")?;
        let load_library: Function = hidden.raw_get("load_library")?;
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
                let started = control.started_ms.load(Relaxed);
                let ran_ms = || crate::node::unix_ms().saturating_sub(started);
                if !control.busy.load(Relaxed)
                    && started != 0
                    && ran_ms() >= control.threshold_ms.load(Relaxed)
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
                        ms = ran_ms(),
                        "a script runs past busy-reply-threshold: other clients get -BUSY until it ends or SCRIPT KILL stops it"
                    );
                }
                Ok(VmState::Continue)
            },
        )?;
        Ok(Engine {
            lua,
            backing,
            run,
            compiled: FastMap::default(),
            generation: 0,
            state,
            run_function,
            library_env,
            load_library,
            collector,
            functions: FastMap::default(),
            functions_generation: u64::MAX,
        })
    }

    /// Runs a library's code to learn the functions it registers.
    fn load_library(&self, code: &[u8]) -> Result<Vec<functions::Registered>, CmdError> {
        // The metadata line stays in the chunk as a comment, so line numbers hold.
        let chunk = self
            .lua
            .load([&b"--"[..], code].concat())
            .set_name("@user_function")
            .set_environment(self.library_env.clone())
            .into_function()
            .map_err(|error| {
                let text = match &error {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                CmdError::Custom(format!(
                    "ERR Error compiling function: {}",
                    text.lines().next().unwrap_or_default()
                ))
            })?;
        *self.collector.borrow_mut() = Some(Vec::new());
        let outcome = self.load_library.call::<(bool, Value)>(chunk);
        let registered = self.collector.borrow_mut().take().unwrap_or_default();
        let failure = match outcome {
            Ok((true, _)) => None,
            Ok((false, error)) => {
                Some(error_text(&error).unwrap_or_else(|| "ERR unknown error".into()))
            }
            Err(error) => Some(format!("ERR {error}")),
        };
        if let Some(text) = failure {
            return Err(CmdError::Custom(format!(
                "ERR Error registering functions: {text}"
            )));
        }
        if registered.is_empty() {
            return Err(CmdError::Custom("ERR No functions registered".into()));
        }
        Ok(registered)
    }

    fn compile(&self, body: &[u8]) -> Result<Function, CmdError> {
        // The shebang line stays in the chunk as a comment, so line numbers hold.
        let source: Vec<u8> = if body.starts_with(b"#!") {
            [&b"--"[..], body].concat()
        } else {
            body.to_vec()
        };
        self.lua
            .load(source)
            .set_name("@user_script")
            .into_function()
            .map_err(compile_error)
    }
}

impl Scripting {
    /// Scripting for one node; `memory_limit` bounds each Lua state (0: unbounded), a
    /// script that runs longer than `busy_threshold` makes the node answer -BUSY.
    pub fn new(memory_limit: usize, busy_threshold: Duration) -> Scripting {
        let control = Arc::new(Control::default());
        control
            .threshold_ms
            .store(busy_threshold.as_millis() as u64, Relaxed);
        Scripting {
            id: NEXT_ID.fetch_add(1, Relaxed),
            sources: RwLock::new(FastMap::default()),
            source_bytes: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            control,
            memory_limit,
            node: OnceLock::new(),
            libraries: RwLock::new(functions::Libraries::default()),
            stored_libraries: Mutex::default(),
            changes: AtomicU64::new(0),
        }
    }

    /// Tells scripting which node its scripts' commands run on (once it is shared).
    pub fn attach(&self, node: Weak<Node>) {
        let _ = self.node.set(node);
    }

    /// Runs `f` with this thread's Lua state for this node, made current first.
    fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        ENGINES.with(|engines| {
            let mut engines = engines.borrow_mut();
            let at = match engines.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    let engine = Engine::new(self.memory_limit, self.control.clone())
                        .expect("a Lua state starts");
                    engines.push((self.id, engine));
                    engines.len() - 1
                }
            };
            let engine = &mut engines[at].1;
            let generation = self.generation.load(Relaxed);
            if engine.generation != generation {
                engine.compiled.clear();
                engine.lua.expire_registry_values();
                engine.generation = generation;
            }
            f(engine)
        })
    }

    /// SCRIPT LOAD (and EVAL's implicit one): compiles and caches, answers the SHA-1.
    pub fn load(&self, body: &[u8]) -> Result<String, CmdError> {
        let sha = sha1_hex(body);
        if self.sources.read().contains_key(&sha) {
            return Ok(sha);
        }
        let flags = shebang_flags(body)?;
        let function = self.with_engine(|engine| engine.compile(body))?;
        self.with_engine(|engine| {
            let key = engine
                .lua
                .create_registry_value(function)
                .map_err(lua_error)?;
            engine.compiled.insert(sha.clone(), (key, flags));
            Ok::<_, CmdError>(())
        })?;
        let mut sources = self.sources.write();
        if !sources.contains_key(&sha) {
            self.source_bytes.fetch_add(body.len(), Relaxed);
            sources.insert(
                sha.clone(),
                Arc::new(Source {
                    body: body.into(),
                    flags,
                }),
            );
        }
        Ok(sha)
    }

    /// Every cached script's body (CLUSTER SCRIPTS).
    pub fn bodies(&self) -> Vec<Box<[u8]>> {
        let sources = self.sources.read();
        sources.values().map(|source| source.body.clone()).collect()
    }

    /// SCRIPT EXISTS for one SHA-1.
    pub fn exists(&self, sha: &str) -> bool {
        self.sources.read().contains_key(&sha.to_ascii_lowercase())
    }

    /// SCRIPT FLUSH: forgets every script, on every thread.
    pub fn flush(&self) {
        self.sources.write().clear();
        self.source_bytes.store(0, Relaxed);
        self.generation.fetch_add(1, Relaxed);
        self.with_engine(|engine| {
            engine.compiled.clear();
            engine.lua.expire_registry_values();
            let _ = engine.lua.gc_collect();
        });
    }

    /// Cached scripts and their source bytes (INFO's `number_of_cached_scripts`,
    /// `used_memory_scripts`), and this thread's Lua memory (`used_memory_lua`).
    pub fn stats(&self) -> (usize, usize, usize) {
        // Not through `with_engine`: a script may ask for INFO while its state is in use.
        let lua_memory = ENGINES
            .try_with(|engines| {
                engines.try_borrow().ok().and_then(|e| {
                    let (_, engine) = e.iter().find(|(id, _)| *id == self.id)?;
                    Some(engine.lua.used_memory())
                })
            })
            .ok()
            .flatten()
            .unwrap_or(0);
        (
            self.sources.read().len(),
            self.source_bytes.load(Relaxed),
            lua_memory,
        )
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

    /// Runs a loaded script (EVAL loads it first); `NOSCRIPT` when it is not loaded.
    pub fn run(&self, ctx: &mut Ctx<'_, '_>, invocation: Invocation<'_>) -> CmdResult {
        let node = self.node.get().and_then(Weak::upgrade).ok_or_else(|| {
            CmdError::Custom("ERR scripting is not ready on this node yet".into())
        })?;
        self.with_engine(|engine| {
            // A state holds what it compiled until SCRIPT FLUSH moves the generation on
            // (checked by `with_engine`), so a hit needs no look at the shared sources.
            let (function, mut flags) = match engine.compiled.get(invocation.sha) {
                Some((key, flags)) => {
                    let function: Function = engine.lua.registry_value(key).map_err(lua_error)?;
                    (function, *flags)
                }
                None => {
                    let source = self
                        .sources
                        .read()
                        .get(invocation.sha)
                        .cloned()
                        .ok_or_else(no_script)?;
                    let function = engine.compile(&source.body)?;
                    let key = engine
                        .lua
                        .create_registry_value(function.clone())
                        .map_err(lua_error)?;
                    let entry = (key, source.flags);
                    engine.compiled.insert(invocation.sha.to_string(), entry);
                    (function, source.flags)
                }
            };
            flags.check_cluster(&node)?;
            flags.no_writes |= invocation.read_only;
            let runner = engine.run.clone();
            self.watched(ctx.now, || {
                run_script(engine, node, ctx, (runner, function), flags, &invocation)
            })
        })
    }

    /// Runs a script or function under the busy/kill watch.
    fn watched(&self, now: u64, run: impl FnOnce() -> CmdResult) -> CmdResult {
        let control = &self.control;
        control.wrote.store(false, Relaxed);
        control.kill.store(false, Relaxed);
        control.started_ms.store(now.max(1), Relaxed);
        let outcome = run();
        control.started_ms.store(0, Relaxed);
        control.busy.store(false, Relaxed);
        control.kill.store(false, Relaxed);
        outcome
    }

    /// FUNCTION LOAD: runs the library's code to learn its functions, then adds it
    /// (`replace`: in place of the library of that name). Its name.
    pub fn function_load(&self, code: &[u8], replace: bool) -> Result<String, CmdError> {
        let name = functions::library_name(code)?;
        let registered = self.with_engine(|engine| engine.load_library(code))?;
        let library = functions::Library {
            name: name.clone(),
            code: code.into(),
            functions: registered.into_iter().map(|r| r.info).collect(),
        };
        let mut libraries = self.libraries.write();
        libraries.check(&library, replace)?;
        libraries.insert(library);
        Ok(name)
    }

    /// The name of the library whose code is exactly `code`, if one is loaded.
    pub fn library_holding(&self, code: &[u8]) -> Option<String> {
        let name = functions::library_name(code).ok()?;
        let libraries = self.libraries.read();
        (*libraries.get(&name)?.code == *code).then_some(name)
    }

    /// FUNCTION DELETE: false when there is no such library.
    pub fn function_delete(&self, name: &str) -> bool {
        self.libraries.write().remove(name)
    }

    /// FUNCTION FLUSH.
    pub fn function_flush(&self) {
        self.libraries.write().clear();
    }

    /// Counts one of the changes every member applies (SCRIPT LOAD and FLUSH, FUNCTION
    /// LOAD and FLUSH, from a client or passed on by a member).
    pub fn note_shared_change(&self) {
        self.changes.fetch_add(1, Relaxed);
    }

    /// How many of the changes every member applies this member applied.
    pub fn changes(&self) -> u64 {
        self.changes.load(Relaxed)
    }

    /// Takes another member's scripts and libraries in place of these (it counted
    /// `version` changes, more than this member saw): `bodies` as CLUSTER SCRIPTS gives
    /// them, `libraries` as FUNCTION DUMP does. Nothing changes when the payload is bad.
    pub fn adopt(&self, bodies: &[Vec<u8>], libraries: &[u8], version: u64) -> CmdResult {
        self.function_restore(libraries, RestorePolicy::Flush)?;
        self.flush();
        let refused = bodies
            .iter()
            .filter(|body| self.load(body).is_err())
            .count();
        if refused > 0 {
            tracing::warn!(refused, "scripts another member holds did not compile here");
        }
        self.changes.store(version, Relaxed);
        Ok(())
    }

    /// Reads the libraries (FUNCTION LIST, STATS, DUMP).
    pub fn with_libraries<R>(&self, f: impl FnOnce(&functions::Libraries) -> R) -> R {
        f(&self.libraries.read())
    }

    /// FUNCTION DUMP's payload.
    pub fn function_dump(&self) -> Vec<u8> {
        functions::dump(&self.libraries.read())
    }

    /// FUNCTION RESTORE with `policy` (FLUSH, APPEND or REPLACE): all or nothing.
    pub fn function_restore(&self, payload: &[u8], policy: RestorePolicy) -> CmdResult {
        let codes = functions::undump(payload)?;
        let mut loaded = Vec::with_capacity(codes.len());
        for code in codes {
            let name = functions::library_name(&code)?;
            let registered = self.with_engine(|engine| engine.load_library(&code))?;
            loaded.push(functions::Library {
                name,
                code: code.into(),
                functions: registered.into_iter().map(|r| r.info).collect(),
            });
        }
        let mut libraries = self.libraries.write();
        if policy == RestorePolicy::Append {
            for library in &loaded {
                if libraries.get(&library.name).is_some() {
                    return Err(CmdError::Custom(format!(
                        "ERR Library {} already exists",
                        library.name
                    )));
                }
            }
        }
        let mut staged = functions::Libraries::default();
        if policy != RestorePolicy::Flush {
            for library in libraries.all() {
                staged.insert((**library).clone());
            }
        }
        for library in loaded {
            staged.check(&library, true)?;
            staged.insert(library);
        }
        libraries.clear();
        for library in staged.all() {
            libraries.insert((**library).clone());
        }
        Ok(())
    }

    /// FCALL / FCALL_RO.
    pub fn fcall(&self, ctx: &mut Ctx<'_, '_>, invocation: Invocation<'_>) -> CmdResult {
        let not_found = || CmdError::Custom("ERR Function not found".into());
        let (mut flags, generation) = {
            let libraries = self.libraries.read();
            let (_, info) = libraries.function(invocation.sha).ok_or_else(not_found)?;
            (info.flags, libraries.generation)
        };
        if invocation.read_only && !flags.no_writes {
            return Err(CmdError::Custom(
                "ERR Can not execute a script with write flag using *_ro command.".into(),
            ));
        }
        flags.no_writes |= invocation.read_only;
        let node = self.node.get().and_then(Weak::upgrade).ok_or_else(|| {
            CmdError::Custom("ERR scripting is not ready on this node yet".into())
        })?;
        flags.check_cluster(&node)?;
        self.with_engine(|engine| {
            if engine.functions_generation != generation {
                // Another thread changed the libraries: load them all in this state.
                let codes: Vec<Box<[u8]>> =
                    self.with_libraries(|l| l.all().map(|lib| lib.code.clone()).collect());
                engine.functions.clear();
                engine.lua.expire_registry_values();
                for code in codes {
                    for registered in engine.load_library(&code)? {
                        let key = engine
                            .lua
                            .create_registry_value(registered.callback)
                            .map_err(lua_error)?;
                        engine.functions.insert(registered.info.name, key);
                    }
                }
                engine.functions_generation = generation;
            }
            let key = engine.functions.get(invocation.sha).ok_or_else(not_found)?;
            let callback: Function = engine.lua.registry_value(key).map_err(lua_error)?;
            let runner = engine.run_function.clone();
            self.watched(ctx.now, || {
                run_script(engine, node, ctx, (runner, callback), flags, &invocation)
            })
        })
    }

    /// Writes the libraries into the store (a standalone node's, where the WAL and the
    /// base image keep them across restarts), replacing what was there.
    pub fn persist_functions(&self, store: &Store, now: u64) {
        if !store.is_namespaced() {
            return;
        }
        // The store's keys for libraries, written whole each time: there are few
        // libraries, and a key scan would make a FUNCTION LOAD cost the dataset's size.
        let mut stored = self.stored_libraries.lock();
        let libraries = self.libraries.read();
        let current: HashSet<String> = libraries.all().map(|l| l.name.clone()).collect();
        for gone in stored.difference(&current) {
            store.remove(&function_key(gone.as_bytes()), now);
        }
        for library in libraries.all() {
            let code = library.code.to_vec();
            store.write(&function_key(library.name.as_bytes()), now, |slot| {
                slot.set(ringkv_store::Value::Str(code), None)
            });
        }
        *stored = current;
    }

    /// Loads the libraries a standalone node kept in its store (after recovery).
    pub fn restore_functions(&self, store: &Store, now: u64) {
        if !store.is_namespaced() {
            return;
        }
        let prefix = function_key(b"");
        for key in store.keys_where(now, |k| k.starts_with(&prefix)) {
            let code = store.read(&key, now, |value| match value {
                Some(ringkv_store::Value::Str(code)) => Some(code.clone()),
                _ => None,
            });
            let Some(code) = code else { continue };
            if let Err(error) = self.function_load(&code, true) {
                tracing::warn!(%error, "a stored function library did not load; it is left out");
            }
        }
        let stored = self
            .libraries
            .read()
            .all()
            .map(|l| l.name.clone())
            .collect();
        *self.stored_libraries.lock() = stored;
    }
}

/// FUNCTION RESTORE's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePolicy {
    /// Every library goes first.
    Flush,
    /// Fails when a library of the payload exists (the default).
    Append,
    /// A library of the payload takes the place of the one of its name.
    Replace,
}

/// Where a standalone node keeps library `name`: namespace 255, which no database names.
fn function_key(name: &[u8]) -> Vec<u8> {
    ringkv_store::namespace::physical(255, &[&b"ringkv:function:"[..], name].concat()).into_owned()
}

fn run_script(
    engine: &mut Engine,
    node: Arc<Node>,
    ctx: &mut Ctx<'_, '_>,
    (runner, function): (Function, Function),
    flags: ScriptFlags,
    invocation: &Invocation<'_>,
) -> CmdResult {
    let lua = &engine.lua;
    // Few arguments travel on the Lua stack and the runner builds KEYS and ARGV; many
    // (which the stack may not hold) are put in tables from here.
    let count = invocation.args.len() - 3;
    let mut call_args = MultiValue::with_capacity(count.min(STACK_ARGS) + 2);
    call_args.push_back(Value::Function(function));
    unlimited(lua, || {
        if count <= STACK_ARGS {
            call_args.push_back(Value::Integer(invocation.numkeys as i64));
            for item in invocation.keys().chain(invocation.argv()) {
                call_args.push_back(Value::String(lua.create_string(item)?));
            }
        } else {
            call_args.push_back(Value::Integer(-1));
            let keys = string_table(lua, invocation.keys())?;
            let argv = string_table(lua, invocation.argv())?;
            engine.backing.raw_set("KEYS", keys)?;
            engine.backing.raw_set("ARGV", argv)?;
        }
        Ok(())
    })
    .map_err(lua_error)?;
    // The caller's connection moves into the run for its `redis.call`s: a script's SELECT
    // is its own, its blocking commands answer at once.
    let placeholder = ConnState::new(ctx.conn.handle.clone(), false);
    let mut conn = std::mem::replace(&mut *ctx.conn, placeholder);
    let (db, no_block) = (conn.db, conn.no_block);
    conn.no_block = true;
    conn.script_allows_oom = flags.allow_oom;
    conn.in_script = true;
    {
        let mut state = engine.state.borrow_mut();
        state.node = Some(node);
        state.conn = Some(conn);
        state.now = ctx.now;
        state.flags = flags;
        state.resp = 2;
    }
    let result = runner.call::<(bool, Value)>(call_args);
    let (mut conn, script_resp) = {
        let mut state = engine.state.borrow_mut();
        state.node = None;
        (
            state.conn.take().expect("the connection comes back"),
            state.resp,
        )
    };
    conn.db = db;
    conn.no_block = no_block;
    conn.script_allows_oom = false;
    conn.in_script = false;
    *ctx.conn = conn;
    // KEYS and ARGV stay until the next run replaces them, as in Redis: clearing them
    // here cost two protected table writes per call.
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
        // What the handler never saw (a memory error): Redis says what it was, if a text.
        let text = match error {
            Value::String(s) => s.to_string_lossy(),
            Value::Error(e) => e.to_string().lines().next().unwrap_or_default().to_string(),
            _ => "execution failure".to_string(),
        };
        let text: String = text.chars().take(100).collect();
        return CmdError::Custom(format!("ERR Error running script {sha}, {text}"));
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

/// Runs `f` with the Lua state's memory limit lifted. While a limit is set, mlua wraps
/// every value it creates from Rust in a protected call, which cost a short script a
/// third of its time; what `f` creates is bounded by a run's own arguments, and the
/// script's next allocation meets the limit again.
fn unlimited<R>(lua: &Lua, f: impl FnOnce() -> R) -> R {
    let limit = lua.set_memory_limit(0).unwrap_or(0);
    let result = f();
    if limit > 0 {
        let _ = lua.set_memory_limit(limit);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopting_takes_the_other_members_set_and_count_or_nothing() {
        let here = Scripting::new(0, Duration::from_secs(5));
        let library = b"#!lua name=lib\nredis.register_function('f', function() return 1 end)";
        here.load(b"return 1").unwrap();
        here.function_load(library, false).unwrap();
        here.note_shared_change();
        here.note_shared_change();
        assert_eq!(here.changes(), 2);

        // A member that saw more: one script, no library.
        let there = Scripting::new(0, Duration::from_secs(5));
        there.load(b"return 2").unwrap();
        let bodies: Vec<Vec<u8>> = there.bodies().into_iter().map(Vec::from).collect();
        here.adopt(&bodies, &there.function_dump(), 7).unwrap();
        assert_eq!(here.changes(), 7);
        assert!(here.exists(&sha1_hex(b"return 2")));
        assert!(!here.exists(&sha1_hex(b"return 1")));
        assert!(here.with_libraries(|l| l.get("lib").is_none()));
        // A payload that does not read changes nothing.
        assert!(here.adopt(&[], b"garbage", 9).is_err());
        assert_eq!(here.changes(), 7);
        assert!(here.exists(&sha1_hex(b"return 2")));
    }

    #[test]
    fn shas_and_shebangs_read_as_redis_reads_them() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            shebang_flags(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap(),
            ScriptFlags {
                no_writes: true,
                allow_oom: true,
                no_cluster: false,
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
