//! The functions scripts call, written in Rust: the `redis` table (but `call` and `pcall`,
//! which each run sets), `cjson`, `cmsgpack`, `bit` and `struct`, and the error handler's
//! helpers. To Lua they are C functions, as Redis's are, so a script's own frame stays on
//! the stack below them and an error is reported at the script's line.

use mlua::{Lua, MultiValue, Table, Value};

use super::{args, bitop, cjson, convert, msgpack, sha1_hex, structlib};

/// Where `redis.setresp` records the protocol the run's commands reply in.
pub type SetResp = Box<dyn Fn(u8)>;

/// An error a Rust function raises in a script.
#[derive(Debug, thiserror::Error)]
pub enum Raised {
    /// Redis's error table `{err = text}`, as its C API raises one (`luaPushError`, then
    /// `luaError`): the text is the reply.
    #[error("{0}")]
    Table(String),
    /// A message raised at the script's line, as `luaL_error` raises it.
    #[error("{0}")]
    Message(String),
}

/// Raises Redis's error table with `text`.
pub fn raise_table(text: &str) -> mlua::Error {
    mlua::Error::external(Raised::Table(text.to_string()))
}

/// Raises `text` as `luaL_error` would from a C function: prefixed with where its caller
/// is, when the caller is Lua code (`luaL_where(L, 1)`).
fn raise_message(lua: &Lua, text: String) -> mlua::Error {
    let at = lua
        .inspect_stack(1, |debug| {
            let source = debug.source();
            (source.what != "C").then(|| {
                format!(
                    "{}:{}: ",
                    short_source(source.source.as_deref().unwrap_or("?")),
                    debug.current_line().map_or(-1, |l| l as i64)
                )
            })
        })
        .flatten()
        .unwrap_or_default();
    mlua::Error::external(Raised::Message(format!("{at}{text}")))
}

fn values(args: MultiValue) -> Vec<Value> {
    args.into_iter().collect()
}

fn text_value(lua: &Lua, bytes: &[u8]) -> mlua::Result<Value> {
    lua.create_string(bytes).map(Value::String)
}

/// Where the script raised an error: the first frame that is neither a C function nor
/// this sandbox's, as Lua's `source` and current line.
pub fn script_frame(lua: &Lua) -> Option<(String, i64)> {
    for level in 1..1000 {
        let frame = lua.inspect_stack(level, |debug| {
            let source = debug.source();
            let internal = source.what == "C" || source.source.as_deref() == Some("=ringkv");
            (!internal).then(|| {
                (
                    source.source.as_deref().unwrap_or("?").to_string(),
                    debug.current_line().map_or(-1, |l| l as i64),
                )
            })
        })?;
        if frame.is_some() {
            return frame;
        }
    }
    None
}

/// Lua's short name of a chunk (`luaO_chunkid`): `user_script`, `[string "…"]`.
fn short_source(source: &str) -> String {
    if let Some(name) = source
        .strip_prefix('@')
        .or_else(|| source.strip_prefix('='))
    {
        return name.to_string();
    }
    let first = source.lines().next().unwrap_or_default();
    let cut: String = first.chars().take(45).collect();
    if cut.len() < source.len() {
        format!("[string \"{cut}...\"]")
    } else {
        format!("[string \"{cut}\"]")
    }
}

/// The error handler's conversion of any raised value into Redis's error table.
fn error_table(lua: &Lua, error: Value) -> mlua::Result<Table> {
    let text = match &error {
        Value::Error(e) => match e.downcast_ref::<Raised>() {
            Some(Raised::Table(text)) => text.clone(),
            Some(Raised::Message(message)) => format!("ERR {message}"),
            None => format!("ERR {}", root_line(e)),
        },
        Value::String(s) => format!("ERR {}", s.to_string_lossy()),
        other => format!(
            "ERR {}",
            lua.coerce_string(other.clone())?
                .map_or_else(|| other.type_name().to_string(), |s| s.to_string_lossy(),)
        ),
    };
    let table = lua.create_table()?;
    table.raw_set("err", text)?;
    Ok(table)
}

/// What Redis 7's own `pcall` gives a script for an error: the text of an error table
/// (or of an error a Rust function raised), any other error as it is.
fn caught(lua: &Lua, error: Value) -> mlua::Result<Value> {
    let text = match &error {
        Value::Error(e) => match e.downcast_ref::<Raised>() {
            Some(Raised::Table(text) | Raised::Message(text)) => text.clone(),
            None => return Ok(error),
        },
        Value::Table(table) => match table.raw_get::<Value>("err")? {
            Value::String(s) => return Ok(Value::String(s)),
            _ => return Ok(error),
        },
        _ => return Ok(error),
    };
    text_value(lua, text.as_bytes())
}

/// The first line of an mlua error's root cause (what Lua itself would have said).
fn root_line(error: &mlua::Error) -> String {
    let root = error
        .chain()
        .last()
        .map(|c| c.to_string())
        .unwrap_or_default();
    root.lines().next().unwrap_or_default().to_string()
}

/// What a script's own `xpcall` handler gets for an error, as under Redis 7: the error
/// table for one `redis.call` raised (`{err = text}`), the text (with where it was
/// raised) for one a library function raised, anything else as it is.
fn handed(lua: &Lua, error: Value) -> mlua::Result<Value> {
    let Value::Error(e) = &error else {
        return Ok(error);
    };
    match e.downcast_ref::<Raised>() {
        Some(Raised::Table(text)) => {
            let table = lua.create_table()?;
            table.raw_set("err", text_value(lua, text.as_bytes())?)?;
            Ok(Value::Table(table))
        }
        Some(Raised::Message(text)) => text_value(lua, text.as_bytes()),
        None => text_value(lua, root_line(e).as_bytes()),
    }
}

/// The `redis` table (without `call` and `pcall`); `resp` is where `setresp` keeps the
/// protocol the run's commands reply in.
fn redis_table(lua: &Lua, set_resp: SetResp, version: &str) -> mlua::Result<Table> {
    let redis = lua.create_table()?;
    redis.set(
        "error_reply",
        lua.create_function(|lua, args: MultiValue| match values(args).as_slice() {
            [Value::String(message)] => {
                let text = message.as_bytes();
                let mut dashed = Vec::with_capacity(text.len() + 1);
                if text.first() != Some(&b'-') {
                    dashed.push(b'-');
                }
                dashed.extend_from_slice(&text);
                convert::error_table(lua, &dashed)
            }
            _ => convert::error_table(lua, b"ERR wrong number or type of arguments"),
        })?,
    )?;
    redis.set(
        "status_reply",
        lua.create_function(|lua, args: MultiValue| match values(args).as_slice() {
            [Value::String(message)] => {
                let table = lua.create_table()?;
                table.raw_set("ok", message.clone())?;
                Ok(Value::Table(table))
            }
            _ => convert::error_table(lua, b"ERR wrong number or type of arguments"),
        })?,
    )?;
    redis.set(
        "sha1hex",
        lua.create_function(|lua, args: MultiValue| {
            let args = values(args);
            if args.len() != 1 {
                return Err(raise_table("ERR wrong number of arguments"));
            }
            let text = lua
                .coerce_string(args[0].clone())?
                .ok_or_else(|| raise_table("ERR wrong number of arguments"))?;
            Ok(sha1_hex(&text.as_bytes()))
        })?,
    )?;
    redis.set(
        "log",
        lua.create_function(|lua, args: MultiValue| {
            let args = values(args);
            if args.len() < 2 {
                return Err(raise_table(
                    "ERR redis.log() requires two arguments or more.",
                ));
            }
            let level = match args[0] {
                Value::Integer(i) => i as f64,
                Value::Number(n) => n,
                _ => {
                    return Err(raise_table(
                        "ERR First argument must be a number (log level).",
                    ));
                }
            };
            if !(0.0..=3.0).contains(&level) {
                return Err(raise_table("ERR Invalid debug level."));
            }
            let mut parts = Vec::new();
            for arg in &args[1..] {
                if let Some(text) = lua.coerce_string(arg.clone())? {
                    parts.push(text.to_string_lossy());
                }
            }
            let message = parts.join(" ");
            match level as u8 {
                0 => tracing::debug!(target: "ringkv::script", "{message}"),
                1 | 2 => tracing::info!(target: "ringkv::script", "{message}"),
                _ => tracing::warn!(target: "ringkv::script", "{message}"),
            }
            Ok(())
        })?,
    )?;
    redis.set(
        "setresp",
        lua.create_function(move |_, args: MultiValue| {
            let args = values(args);
            if args.len() != 1 {
                return Err(raise_table("ERR redis.setresp() requires one argument."));
            }
            let version = match args[0] {
                Value::Integer(2) => 2,
                Value::Integer(3) => 3,
                Value::Number(n) if n == 2.0 || n == 3.0 => n as u8,
                _ => return Err(raise_table("ERR RESP version must be 2 or 3.")),
            };
            set_resp(version);
            Ok(())
        })?,
    )?;
    redis.set(
        "set_repl",
        lua.create_function(|_, args: MultiValue| {
            let args = values(args);
            if args.len() != 1 {
                return Err(raise_table("ERR redis.set_repl() requires one argument."));
            }
            // Every script's effects are replicated as effects: valid flags are accepted.
            match args[0] {
                Value::Integer(0..=3) => Ok(()),
                _ => Err(raise_table(
                    "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                )),
            }
        })?,
    )?;
    redis.set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    redis.set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    redis.set("debug", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    redis.set(
        "acl_check_cmd",
        lua.create_function(|lua, args: MultiValue| {
            let args = values(args);
            let Some(name) = args.first() else {
                return Err(raise_table(
                    "ERR Please specify at least one argument for this redis lib call",
                ));
            };
            let name = lua
                .coerce_string(name.clone())?
                .map(|s| s.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if crate::dispatch::route_by_name(&name).is_none() {
                return Err(raise_table(
                    "ERR Invalid command passed to redis.acl_check_cmd()",
                ));
            }
            Ok(true)
        })?,
    )?;
    for (name, value) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
    ] {
        redis.set(name, value)?;
    }
    redis.set("REDIS_VERSION", version)?;
    let number = version
        .split('.')
        .map(|p| p.parse::<i64>().unwrap_or(0))
        .fold(0, |acc, p| (acc << 8) | p);
    redis.set("REDIS_VERSION_NUM", number)?;
    Ok(redis)
}

/// A function of `args` that answers a value or raises a message.
fn checked(
    lua: &Lua,
    f: impl Fn(&Lua, &[Value]) -> Result<Value, String> + 'static,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, args: MultiValue| {
        f(lua, &values(args)).map_err(|text| raise_message(lua, text))
    })
}

/// As [`checked`] for a function with several results.
fn checked_multi(
    lua: &Lua,
    f: impl Fn(&Lua, &[Value]) -> Result<Vec<Value>, String> + 'static,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, args: MultiValue| {
        f(lua, &values(args))
            .map(MultiValue::from_vec)
            .map_err(|text| raise_message(lua, text))
    })
}

fn bytes_to_value(lua: &Lua, bytes: Result<Vec<u8>, String>) -> Result<Value, String> {
    text_value(lua, &bytes?).map_err(|e| e.to_string())
}

fn libraries(lua: &Lua, native: &Table) -> mlua::Result<()> {
    let cjson = lua.create_table()?;
    cjson.set(
        "encode",
        checked(lua, |lua, args| bytes_to_value(lua, cjson::encode(args)))?,
    )?;
    cjson.set("decode", checked(lua, cjson::decode)?)?;
    cjson.set("null", cjson::null())?;
    for name in [
        "encode_keep_buffer",
        "encode_max_depth",
        "decode_max_depth",
        "encode_number_precision",
        "encode_invalid_numbers",
        "decode_invalid_numbers",
        "encode_sparse_array",
    ] {
        cjson.set(name, lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    }
    cjson.set("_NAME", "cjson")?;
    cjson.set("_VERSION", "2.1.0")?;
    native.set("cjson", cjson)?;

    let cmsgpack = lua.create_table()?;
    cmsgpack.set(
        "pack",
        checked(lua, |lua, args| bytes_to_value(lua, msgpack::pack(args)))?,
    )?;
    for (name, with_offset) in [
        ("unpack", false),
        ("unpack_one", true),
        ("unpack_limit", true),
    ] {
        let function = checked_multi(lua, move |lua, args| {
            let data = args::bytes(args, 1, name)?;
            let (limit, offset_at) = match name {
                "unpack_one" => (1, 2),
                "unpack_limit" => (args::opt_integer(args, 2, name, 0)?.max(0) as usize, 3),
                _ => (0, 0),
            };
            let offset = if offset_at > 0 {
                args::opt_integer(args, offset_at, name, 0)?.max(0) as usize
            } else {
                0
            };
            let unpacked = msgpack::unpack(lua, &data, limit, offset)?;
            let mut out = Vec::with_capacity(unpacked.values.len() + 1);
            if with_offset {
                out.push(Value::Integer(unpacked.next));
            }
            out.extend(unpacked.values);
            Ok(out)
        })?;
        cmsgpack.set(name, function)?;
    }
    cmsgpack.set("_NAME", "cmsgpack")?;
    cmsgpack.set("_VERSION", "lua-cmsgpack 0.4.0")?;
    native.set("cmsgpack", cmsgpack)?;

    let bit = lua.create_table()?;
    for name in [
        "tobit", "tohex", "bnot", "band", "bor", "bxor", "lshift", "rshift", "arshift", "rol",
        "ror", "bswap",
    ] {
        bit.set(
            name,
            checked(lua, move |lua, args| bitop::call(lua, name, args))?,
        )?;
    }
    native.set("bit", bit)?;

    let structs = lua.create_table()?;
    structs.set(
        "pack",
        checked(lua, |lua, args| bytes_to_value(lua, structlib::pack(args)))?,
    )?;
    structs.set("unpack", checked_multi(lua, structlib::unpack)?)?;
    structs.set(
        "size",
        checked(lua, |_, args| {
            structlib::size(args).map(|n| Value::Integer(n as i64))
        })?,
    )?;
    native.set("struct", structs)?;
    Ok(())
}

/// Everything the sandbox receives as `native`.
pub fn native_functions(lua: &Lua, set_resp: SetResp, version: &str) -> mlua::Result<Table> {
    let native = lua.create_table()?;
    native.set("redis", redis_table(lua, set_resp, version)?)?;
    native.set("error_table", lua.create_function(error_table)?)?;
    native.set("caught", lua.create_function(caught)?)?;
    native.set("handed", lua.create_function(handed)?)?;
    native.set(
        "where",
        lua.create_function(|lua, ()| {
            Ok(match script_frame(lua) {
                Some((source, line)) => (Some(source), Some(line)),
                None => (None, None),
            })
        })?,
    )?;
    libraries(lua, &native)?;
    Ok(native)
}
