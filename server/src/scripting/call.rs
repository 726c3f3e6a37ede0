//! `redis.call` and `redis.pcall`: a command's arguments read where they lie on the Lua
//! stack, and its reply pushed onto the stack straight from the RESP bytes the command
//! wrote (`luaRedisGenericCommand` and `redisProtocolToLuaType` in Redis 7.0).
//!
//! A script of ten commands spent a fifth of its CPU in mlua's general conversions (a
//! `MultiValue` of references for the arguments, a `Value` tree for the reply, then that
//! tree pushed); these two types take mlua's stack-level hooks instead. Replies of the
//! rarer RESP3 kinds (maps, sets, verbatim strings) go through the general conversion.
//!
//! The one module of the server with `unsafe` code: these hooks hand it the raw stack.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::c_int;
use std::rc::Rc;

use mlua::ffi;
use mlua::state::RawLua;
use mlua::{FromLuaMulti, IntoLuaMulti, Lua, MultiValue, Value};
use ringkv_protocol::{OwnedArgs, Protocol, ReplyWriter};

use super::{RunState, convert};

/// Nesting a reply may reach on the fast path (Redis's replies nest a few levels).
const MAX_DEPTH: usize = 64;

/// A command's arguments, where they lie on the stack of the calling C function (mlua
/// reads a callback's arguments only through `from_stack_args`).
pub struct CallArgs {
    state: *mut ffi::lua_State,
    first: c_int,
    count: c_int,
}

/// An argument that is neither a string nor a number.
struct NotAnArgument;

impl FromLuaMulti for CallArgs {
    fn from_lua_multi(_: MultiValue, _: &Lua) -> mlua::Result<Self> {
        Err(mlua::Error::RuntimeError(
            "redis.call's arguments are read on the Lua stack only".into(),
        ))
    }

    // mlua's hook for a callback's arguments: they stay on the stack while it runs (the
    // top `nargs` values: mlua may have put its own value below them).
    unsafe fn from_stack_args(
        nargs: c_int,
        _: usize,
        _: Option<&str>,
        lua: &RawLua,
    ) -> mlua::Result<Self> {
        let state = lua.state();
        // SAFETY: `state` is the running callback's own stack.
        let top = unsafe { ffi::lua_gettop(state) };
        Ok(CallArgs {
            state,
            first: top - nargs + 1,
            count: nargs,
        })
    }
}

impl CallArgs {
    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Copies the arguments into `owned`: strings as they are, numbers as Redis formats
    /// them (integers in full, others as `%.17g`).
    fn copy_into(&self, owned: &mut OwnedArgs) -> Result<(), NotAnArgument> {
        let mut digits = itoa::Buffer::new();
        for index in self.first..self.first + self.count {
            // SAFETY: the arguments are on the running callback's stack (see
            // `from_stack_args`), and a string's bytes live while it is there.
            unsafe {
                match ffi::lua_type(self.state, index) {
                    ffi::LUA_TSTRING => {
                        let mut len = 0usize;
                        let data = ffi::lua_tolstring(self.state, index, &mut len);
                        owned.push(std::slice::from_raw_parts(data.cast::<u8>(), len));
                    }
                    ffi::LUA_TNUMBER => {
                        let n = ffi::lua_tonumber(self.state, index);
                        match whole(n) {
                            Some(i) => owned.push(digits.format(i).as_bytes()),
                            None => owned.push(convert::format_g(n, 17).as_bytes()),
                        }
                    }
                    _ => return Err(NotAnArgument),
                }
            }
        }
        Ok(())
    }
}

/// `n` as an integer when it is one exactly (mlua's reading of a Lua 5.1 number).
fn whole(n: f64) -> Option<i64> {
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&n) {
        return None;
    }
    let i = n as i64;
    ((i as f64).to_bits() == n.to_bits()).then_some(i)
}

/// A command's reply, on its way to the script.
pub struct CallReply {
    what: Replied,
    /// To lift the memory limit while the reply is pushed (as for any value a command
    /// returns: bounded by the command's own reply) and for the general conversion.
    lua: Lua,
    /// Where the reply buffer goes back once pushed, reused by the next call.
    home: Rc<RefCell<RunState>>,
}

enum Replied {
    /// One RESP reply as the command wrote it.
    Resp(Vec<u8>),
    /// An error before or instead of a reply: Redis's error table with this text.
    Error(Vec<u8>),
}

impl CallReply {
    /// The text of the error table the script gets, when the reply is an error.
    pub fn error_text(&self) -> Option<String> {
        let line = match &self.what {
            Replied::Error(text) => text.as_slice(),
            Replied::Resp(bytes) if bytes.first() == Some(&b'-') => {
                let end = memchr::memmem::find(bytes, b"\r\n").unwrap_or(bytes.len());
                &bytes[..end]
            }
            Replied::Resp(_) => return None,
        };
        Some(String::from_utf8_lossy(&convert::error_reply_text(line)).into_owned())
    }

    /// The reply as a Lua value, by the general conversion.
    fn to_value(&self) -> mlua::Result<Value> {
        match &self.what {
            Replied::Resp(bytes) => convert::reply_to_lua(&self.lua, bytes),
            Replied::Error(text) => convert::error_table(&self.lua, text),
        }
    }
}

impl IntoLuaMulti for CallReply {
    fn into_lua_multi(self, lua: &Lua) -> mlua::Result<MultiValue> {
        let value = self.to_value()?;
        value.into_lua_multi(lua)
    }

    // mlua's hook for a callback's results: the reply is pushed as it is parsed.
    unsafe fn push_into_stack_multi(self, lua: &RawLua) -> mlua::Result<c_int> {
        let state = lua.state();
        let limit = self.lua.set_memory_limit(0).unwrap_or(0);
        // SAFETY: pushes onto the running callback's stack; with the memory limit lifted,
        // none of them raises a Lua error (which would unwind past this frame).
        let pushed = unsafe {
            let base = ffi::lua_gettop(state);
            let fast = match &self.what {
                Replied::Resp(bytes) => {
                    let mut at = 0;
                    push_reply(state, bytes, &mut at, 0)
                }
                Replied::Error(text) => {
                    push_error_table(state, text);
                    Some(())
                }
            };
            match fast {
                Some(()) => Ok(()),
                None => {
                    ffi::lua_settop(state, base);
                    self.to_value().and_then(|value| {
                        if ffi::lua_checkstack(state, 2) == 0 {
                            return Err(mlua::Error::StackError);
                        }
                        lua.push_value(&value)
                    })
                }
            }
        };
        if limit > 0 {
            let _ = self.lua.set_memory_limit(limit);
        }
        if let Replied::Resp(mut bytes) = self.what
            && let Ok(mut run) = self.home.try_borrow_mut()
        {
            bytes.clear();
            run.reply = bytes;
        }
        pushed.map(|()| 1)
    }
}

/// One `redis.call`/`redis.pcall`: runs the command and keeps its reply (an error as the
/// text of Redis's error table).
pub fn call_command(lua: &Lua, home: &Rc<RefCell<RunState>>, args: CallArgs) -> CallReply {
    let reply = |what| CallReply {
        what,
        lua: lua.clone(),
        home: home.clone(),
    };
    if args.is_empty() {
        return reply(Replied::Error(
            b"ERR Please specify at least one argument for this redis lib call".to_vec(),
        ));
    }
    let mut run = home.borrow_mut();
    let RunState {
        node,
        conn,
        now,
        flags,
        resp,
        args: owned,
        reply: buffer,
    } = &mut *run;
    let (Some(node), Some(conn)) = (node.as_deref(), conn.as_mut()) else {
        return reply(Replied::Error(b"ERR no script is running".to_vec()));
    };
    owned.clear();
    if args.copy_into(owned).is_err() {
        return reply(Replied::Error(
            b"ERR Lua redis lib command arguments must be strings or integers".to_vec(),
        ));
    }
    let protocol = if *resp == 3 {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    };
    let mut bytes = std::mem::take(buffer);
    bytes.clear();
    let result = {
        let mut out = ReplyWriter::new(&mut bytes, protocol);
        crate::dispatch::run_from_script(node, conn, &mut out, owned.args(), *now, *flags)
    };
    drop(run);
    match result {
        Err(error) => reply(Replied::Error(error.to_string().into_bytes())),
        Ok(()) => reply(Replied::Resp(bytes)),
    }
}

/// Pushes `{ [field] = <string> }`.
unsafe fn push_single_string(state: *mut ffi::lua_State, field: &[u8], text: &[u8]) {
    unsafe {
        ffi::lua_createtable(state, 0, 1);
        ffi::lua_pushlstring(state, field.as_ptr().cast(), field.len());
        ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
        ffi::lua_rawset(state, -3);
    }
}

/// Pushes Redis's error table for an error reply's line.
unsafe fn push_error_table(state: *mut ffi::lua_State, line: &[u8]) {
    unsafe { push_single_string(state, b"err", &convert::error_reply_text(line)) }
}

/// Pushes one reply from `bytes` at `at` as Redis converts it; `None` (with whatever it
/// pushed left for the caller to drop) for a reply the general conversion handles.
unsafe fn push_reply(
    state: *mut ffi::lua_State,
    bytes: &[u8],
    at: &mut usize,
    depth: usize,
) -> Option<()> {
    let kind = *bytes.get(*at)?;
    let rest = bytes.get(*at + 1..)?;
    let end = memchr::memmem::find(rest, b"\r\n")?;
    let head = &rest[..end];
    *at += 1 + end + 2;
    // SAFETY (every block below): pushes onto the running callback's stack, which has
    // room for the few values one level holds (checked for each nested level).
    match kind {
        b'+' => unsafe { push_single_string(state, b"ok", head) },
        b'-' => unsafe { push_error_table(state, head) },
        b':' => unsafe { ffi::lua_pushnumber(state, parse_i64(head)? as f64) },
        b'$' => {
            let len = parse_i64(head)?;
            if len < 0 {
                unsafe { ffi::lua_pushboolean(state, 0) };
            } else {
                let len = usize::try_from(len).ok()?;
                let body = bytes.get(*at..*at + len)?;
                *at += len + 2;
                unsafe { ffi::lua_pushlstring(state, body.as_ptr().cast(), body.len()) };
            }
        }
        b'*' => {
            let len = parse_i64(head)?;
            if len < 0 {
                unsafe { ffi::lua_pushboolean(state, 0) };
                return Some(());
            }
            if depth >= MAX_DEPTH || unsafe { ffi::lua_checkstack(state, 4) } == 0 {
                return None;
            }
            let len = c_int::try_from(len).ok()?;
            unsafe { ffi::lua_createtable(state, len, 0) };
            for i in 1..=len {
                unsafe {
                    push_reply(state, bytes, at, depth + 1)?;
                    ffi::lua_rawseti(state, -2, i.into());
                }
            }
        }
        b'_' => unsafe { ffi::lua_pushnil(state) },
        b'#' => unsafe { ffi::lua_pushboolean(state, c_int::from(head == b"t")) },
        b'(' => unsafe { push_single_string(state, b"big_number", head) },
        b',' => unsafe {
            ffi::lua_createtable(state, 0, 1);
            ffi::lua_pushlstring(state, b"double".as_ptr().cast(), 6);
            ffi::lua_pushnumber(state, convert::parse_double(head));
            ffi::lua_rawset(state, -3);
        },
        _ => return None,
    }
    Some(())
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}
