//! Argument checks of Lua's C API (`luaL_checknumber`, `luaL_checklstring`,
//! `luaL_argerror`) for the libraries written in Rust, with Lua's wording.

use mlua::Value;

use super::convert::format_g;

/// Lua's name of a value's type; a missing argument is "no value".
pub fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_) | Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(Value::LightUserData(_)) | Some(Value::UserData(_)) => "userdata",
        Some(_) => "userdata",
    }
}

/// `luaL_argerror`'s message.
pub fn arg_error(index: usize, function: &str, message: &str) -> String {
    format!("bad argument #{index} to '{function}' ({message})")
}

fn type_error(args: &[Value], index: usize, function: &str, expected: &str) -> String {
    arg_error(
        index,
        function,
        &format!(
            "{expected} expected, got {}",
            type_name(args.get(index - 1))
        ),
    )
}

/// A string as Lua reads a number from it (`lua_str2number`: decimal or hexadecimal,
/// surrounding spaces allowed).
fn parse_number(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok().map(|n| n as f64);
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    text.parse().ok()
}

/// `luaL_checknumber(L, index)` (1-based).
pub fn number(args: &[Value], index: usize, function: &str) -> Result<f64, String> {
    match args.get(index - 1) {
        Some(Value::Integer(i)) => Ok(*i as f64),
        Some(Value::Number(n)) => Ok(*n),
        Some(Value::String(s)) => {
            parse_number(&s.as_bytes()).ok_or_else(|| type_error(args, index, function, "number"))
        }
        _ => Err(type_error(args, index, function, "number")),
    }
}

/// `luaL_optinteger(L, index, default)`.
pub fn opt_integer(
    args: &[Value],
    index: usize,
    function: &str,
    default: i64,
) -> Result<i64, String> {
    match args.get(index - 1) {
        None | Some(Value::Nil) => Ok(default),
        _ => number(args, index, function).map(|n| n as i64),
    }
}

/// `luaL_checklstring(L, index)`: a string, or a number in Lua's text.
pub fn bytes(args: &[Value], index: usize, function: &str) -> Result<Vec<u8>, String> {
    match args.get(index - 1) {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(Value::Integer(i)) => Ok(i.to_string().into_bytes()),
        Some(Value::Number(n)) => Ok(format_g(*n, 14).into_bytes()),
        _ => Err(type_error(args, index, function, "string")),
    }
}
