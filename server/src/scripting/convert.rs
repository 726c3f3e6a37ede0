//! Redis's conversions between replies and Lua values, both ways (`luaRedisGenericCommand`
//! and `luaReplyToRedisReply` in Redis 7.0's `script_lua.c`).

use mlua::{Lua, Table, Value};
use ringkv_protocol::{Protocol, ReplyWriter};

/// Nesting a reply may reach before it is cut with an error, as Redis cuts a table too
/// deep for its Lua stack (a table that contains itself never ends otherwise).
const MAX_DEPTH: usize = 500;

/// `%.{precision}g` as C's printf writes it (Lua's `tostring` uses 14, Redis 7.0 formats
/// numbers passed to `redis.call` with 17).
pub fn format_g(value: f64, precision: usize) -> String {
    if value.is_nan() {
        return if value.is_sign_negative() {
            "-nan"
        } else {
            "nan"
        }
        .into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let precision = precision.max(1);
    let scientific = format!("{:.*e}", precision - 1, value);
    let (mantissa, exponent) = scientific.split_once('e').expect("an exponent");
    let exponent: i32 = exponent.parse().expect("a number");
    if exponent < -4 || exponent >= precision as i32 {
        let mantissa = trim_zeros(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
        trim_zeros(&format!("{value:.decimals$}")).to_string()
    }
}

fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// A Redis error table (`{err = "CODE message"}`) for an error reply's text, as
/// `luaPushErrorBuff` builds it.
pub fn error_table(lua: &Lua, text: &[u8]) -> mlua::Result<Value> {
    let table = lua.create_table()?;
    table.raw_set("err", lua.create_string(error_reply_text(text))?)?;
    Ok(Value::Table(table))
}

/// The `err` text of Redis's error table for an error reply's text: its code (ERR when it
/// has none), a space, the message without line breaks at its ends.
pub fn error_reply_text(text: &[u8]) -> Vec<u8> {
    let text = text.strip_prefix(b"-").unwrap_or(text);
    let (code, message) = match text.iter().position(|&b| b == b' ') {
        Some(space) => (&text[..space], &text[space + 1..]),
        None => (&b"ERR"[..], text),
    };
    let trimmed = trim_line_breaks(message);
    let mut err = Vec::with_capacity(code.len() + 1 + trimmed.len());
    err.extend_from_slice(code);
    err.push(b' ');
    err.extend_from_slice(trimmed);
    err
}

/// A RESP3 double's text as a number (`inf`, `-inf`, NaN for what does not parse).
pub fn parse_double(head: &[u8]) -> f64 {
    match std::str::from_utf8(head).unwrap_or("nan") {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

fn trim_line_breaks(text: &[u8]) -> &[u8] {
    let is_break = |b: &u8| *b == b'\r' || *b == b'\n';
    let start = text.iter().position(|b| !is_break(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !is_break(b))
        .map_or(start, |i| i + 1);
    &text[start..end.max(start)]
}

/// The Lua value of one reply (the whole of `reply`, as a command wrote it).
pub fn reply_to_lua(lua: &Lua, reply: &[u8]) -> mlua::Result<Value> {
    let mut at = 0;
    let value = parse(lua, reply, &mut at)?;
    Ok(value)
}

fn line<'r>(reply: &'r [u8], at: &mut usize) -> mlua::Result<&'r [u8]> {
    let rest = &reply[*at..];
    let end = memchr_crlf(rest)
        .ok_or_else(|| mlua::Error::RuntimeError("a reply without its line end".into()))?;
    *at += end + 2;
    Ok(&rest[..end])
}

fn memchr_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

fn number(text: &[u8]) -> mlua::Result<i64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| mlua::Error::RuntimeError("a malformed reply length".into()))
}

fn single(lua: &Lua, field: &str, value: Value) -> mlua::Result<Value> {
    let table = lua.create_table()?;
    table.raw_set(field, value)?;
    Ok(Value::Table(table))
}

fn parse(lua: &Lua, reply: &[u8], at: &mut usize) -> mlua::Result<Value> {
    let kind = *reply
        .get(*at)
        .ok_or_else(|| mlua::Error::RuntimeError("an empty reply".into()))?;
    *at += 1;
    let head = line(reply, at)?;
    Ok(match kind {
        b'+' => single(lua, "ok", Value::String(lua.create_string(head)?))?,
        b'-' => error_table(lua, head)?,
        b':' => Value::Number(number(head)? as f64),
        b'$' | b'=' => {
            let len = number(head)?;
            if len < 0 {
                return Ok(Value::Boolean(false));
            }
            let len = len as usize;
            let body = &reply[*at..*at + len];
            *at += len + 2;
            if kind == b'=' {
                // A verbatim string: "fmt:" then the text.
                let (format, text) = body.split_at(body.len().min(3));
                let verbatim = lua.create_table()?;
                verbatim.raw_set("format", lua.create_string(format)?)?;
                verbatim.raw_set("string", lua.create_string(text.get(1..).unwrap_or(&[]))?)?;
                single(lua, "verbatim_string", Value::Table(verbatim))?
            } else {
                Value::String(lua.create_string(body)?)
            }
        }
        b'*' | b'~' | b'%' => {
            let len = number(head)?;
            if len < 0 {
                return Ok(Value::Boolean(false));
            }
            let table = lua.create_table_with_capacity(len as usize, 0)?;
            for i in 0..len {
                match kind {
                    b'%' => {
                        let key = parse(lua, reply, at)?;
                        let value = parse(lua, reply, at)?;
                        table.raw_set(key, value)?;
                    }
                    b'~' => {
                        let member = parse(lua, reply, at)?;
                        table.raw_set(member, true)?;
                    }
                    _ => table.raw_set(i + 1, parse(lua, reply, at)?)?,
                }
            }
            match kind {
                b'%' => single(lua, "map", Value::Table(table))?,
                b'~' => single(lua, "set", Value::Table(table))?,
                _ => Value::Table(table),
            }
        }
        b'_' => Value::Nil,
        b'#' => Value::Boolean(head == b"t"),
        b',' => single(lua, "double", Value::Number(parse_double(head)))?,
        b'(' => single(lua, "big_number", Value::String(lua.create_string(head)?))?,
        _ => {
            return Err(mlua::Error::RuntimeError(format!(
                "a reply of unknown kind {}",
                kind as char
            )));
        }
    })
}

/// A Lua number as the integer reply Redis sends for it (C's cast: truncated, and the
/// lowest integer for what has none).
fn truncate(value: f64) -> i64 {
    if value.is_finite() && value > i64::MIN as f64 && value < i64::MAX as f64 {
        value as i64
    } else {
        i64::MIN
    }
}

/// Replaces CR and LF, which would break a status or error line, with spaces.
fn one_line(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

fn string_field(table: &Table, field: &str) -> Option<mlua::LuaString> {
    match table.raw_get::<Value>(field) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Writes a script's result (or an element of it) as Redis would reply with it;
/// `script_resp` is the version the script chose with `redis.setresp`.
pub fn write_reply(out: &mut ReplyWriter<'_>, value: &Value, script_resp: u8, depth: usize) {
    if depth > MAX_DEPTH {
        out.error("ERR reached lua stack limit");
        return;
    }
    match value {
        Value::Boolean(b) if script_resp == 2 => {
            if *b {
                out.int(1)
            } else {
                out.null()
            }
        }
        Value::Boolean(b) => out.boolean(*b),
        Value::Integer(i) => out.int(*i),
        Value::Number(n) => out.int(truncate(*n)),
        Value::String(s) => out.bulk(&s.as_bytes()),
        Value::Table(table) => write_table(out, table, script_resp, depth),
        _ => out.null(),
    }
}

fn write_table(out: &mut ReplyWriter<'_>, table: &Table, script_resp: u8, depth: usize) {
    if let Some(err) = string_field(table, "err") {
        out.raw(format!("-{}\r\n", one_line(&err.as_bytes())).as_bytes());
        return;
    }
    if let Some(ok) = string_field(table, "ok") {
        out.simple(&one_line(&ok.as_bytes()));
        return;
    }
    match table.raw_get::<Value>("double") {
        // As `addReplyDouble` writes it (`%.17g`'s shortest form), as a score is written.
        Ok(Value::Number(n)) => return out.score(n),
        Ok(Value::Integer(i)) => return out.score(i as f64),
        _ => {}
    }
    if let Some(big) = string_field(table, "big_number") {
        let text = one_line(&big.as_bytes());
        match out.protocol() {
            Protocol::Resp3 => out.raw(format!("({text}\r\n").as_bytes()),
            Protocol::Resp2 => out.bulk(text.as_bytes()),
        }
        return;
    }
    if let Ok(Value::Table(verbatim)) = table.raw_get::<Value>("verbatim_string")
        && let (Some(format), Some(text)) = (
            string_field(&verbatim, "format"),
            string_field(&verbatim, "string"),
        )
    {
        let text = text.as_bytes();
        match out.protocol() {
            Protocol::Resp3 => {
                let format = format.as_bytes();
                let mut body = Vec::with_capacity(4 + text.len());
                body.extend_from_slice(&format[..format.len().min(3)]);
                body.resize(3, b' ');
                body.push(b':');
                body.extend_from_slice(&text);
                out.raw(format!("={}\r\n", body.len()).as_bytes());
                out.raw(&body);
                out.raw(b"\r\n");
            }
            Protocol::Resp2 => out.bulk(&text),
        }
        return;
    }
    if let Ok(Value::Table(map)) = table.raw_get::<Value>("map") {
        let pairs: Vec<(Value, Value)> =
            map.pairs::<Value, Value>().filter_map(Result::ok).collect();
        out.map(pairs.len());
        for (key, value) in &pairs {
            write_reply(out, key, script_resp, depth + 1);
            write_reply(out, value, script_resp, depth + 1);
        }
        return;
    }
    if let Ok(Value::Table(set)) = table.raw_get::<Value>("set") {
        let members: Vec<Value> = set
            .pairs::<Value, Value>()
            .filter_map(|pair| pair.ok().map(|(member, _)| member))
            .collect();
        out.set(members.len());
        for member in &members {
            write_reply(out, member, script_resp, depth + 1);
        }
        return;
    }
    // An array ends at its first nil.
    let mut items = Vec::new();
    for index in 1.. {
        match table.raw_get::<Value>(index) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(value) => items.push(value),
        }
    }
    out.array(items.len());
    for item in &items {
        write_reply(out, item, script_resp, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_c_does() {
        assert_eq!(format_g(1.5, 17), "1.5");
        assert_eq!(format_g(0.1, 17), "0.10000000000000001");
        assert_eq!(format_g(1e16, 17), "10000000000000000");
        assert_eq!(format_g(2f64.powi(53), 14), "9.007199254741e+15");
        assert_eq!(format_g(1e15, 14), "1e+15");
        assert_eq!(format_g(0.0001, 14), "0.0001");
        assert_eq!(format_g(0.00001, 14), "1e-05");
        assert_eq!(format_g(-3.0, 14), "-3");
        assert_eq!(format_g(1e20, 14), "1e+20");
        assert_eq!(format_g(123456.0, 14), "123456");
    }

    fn reply(value: Value, protocol: Protocol, script_resp: u8) -> String {
        let mut buf = Vec::new();
        write_reply(
            &mut ReplyWriter::new(&mut buf, protocol),
            &value,
            script_resp,
            0,
        );
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn lua_values_become_redis_replies_as_redis_converts_them() {
        let lua = Lua::new();
        let table: Table = lua
            .load("return {1, 2.9, 'x', {3}, nil, 5}")
            .eval()
            .unwrap();
        assert_eq!(
            reply(Value::Table(table), Protocol::Resp2, 2),
            "*4\r\n:1\r\n:2\r\n$1\r\nx\r\n*1\r\n:3\r\n"
        );
        assert_eq!(reply(Value::Boolean(false), Protocol::Resp2, 2), "$-1\r\n");
        assert_eq!(reply(Value::Boolean(true), Protocol::Resp3, 3), "#t\r\n");
        assert_eq!(reply(Value::Boolean(false), Protocol::Resp2, 3), ":0\r\n");
        let err: Table = lua.load("return {err='My Error\\nx'}").eval().unwrap();
        assert_eq!(
            reply(Value::Table(err), Protocol::Resp2, 2),
            "-My Error x\r\n"
        );
        let map: Table = lua.load("return {map={a=1}}").eval().unwrap();
        assert_eq!(
            reply(Value::Table(map.clone()), Protocol::Resp2, 2),
            "*2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            reply(Value::Table(map), Protocol::Resp3, 2),
            "%1\r\n$1\r\na\r\n:1\r\n"
        );
        let cycle: Table = lua.load("local t = {} t[1] = t return t").eval().unwrap();
        assert!(
            reply(Value::Table(cycle), Protocol::Resp2, 2)
                .ends_with("-ERR reached lua stack limit\r\n")
        );
        assert_eq!(
            reply(Value::Number(f64::NAN), Protocol::Resp2, 2),
            ":-9223372036854775808\r\n"
        );
    }

    #[test]
    fn replies_become_lua_values_as_redis_converts_them() {
        let lua = Lua::new();
        let value = reply_to_lua(&lua, b"*3\r\n:1\r\n$-1\r\n+OK\r\n").unwrap();
        lua.globals().set("v", value).unwrap();
        let check: bool = lua
            .load("return v[1] == 1 and v[2] == false and v[3].ok == 'OK'")
            .eval()
            .unwrap();
        assert!(check);
        let err = reply_to_lua(&lua, b"-WRONGTYPE Operation against a key\r\n").unwrap();
        lua.globals().set("e", err).unwrap();
        let text: String = lua.load("return e.err").eval().unwrap();
        assert_eq!(text, "WRONGTYPE Operation against a key");
        let map = reply_to_lua(&lua, b"%1\r\n$1\r\nk\r\n,1.5\r\n").unwrap();
        lua.globals().set("m", map).unwrap();
        let double: f64 = lua.load("return m.map.k.double").eval().unwrap();
        assert_eq!(double, 1.5);
    }
}
