//! `cjson` as Redis bundles it (lua-cjson 2.1.0 with its defaults): numbers with 14
//! significant digits, `/` escaped, an empty table encoded as `{}`, excessively sparse
//! arrays and nesting past 1,000 refused, `cjson.null` for JSON's null, and lua-cjson's
//! error messages.

use mlua::{LightUserData, Lua, Table, Value};

use super::convert::format_g;

/// Tables nested deeper than this are refused, both ways.
const MAX_DEPTH: usize = 1000;

/// `cjson.null`: a light userdata holding NULL, as lua-cjson's.
pub fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn is_null(value: &Value) -> bool {
    matches!(value, Value::LightUserData(p) if p.0.is_null())
}

/// `cjson.encode(value)`: the JSON text, or lua-cjson's message.
pub fn encode(args: &[Value]) -> Result<Vec<u8>, String> {
    if args.len() != 1 {
        return Err("bad argument #1 to 'encode' (expected 1 argument)".into());
    }
    let mut out = Vec::new();
    encode_value(&args[0], &mut out, 0)?;
    Ok(out)
}

fn encode_value(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    match value {
        Value::Nil => out.extend_from_slice(b"null"),
        v if is_null(v) => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => encode_number(*i as f64, out)?,
        Value::Number(n) => encode_number(*n, out)?,
        Value::String(s) => encode_string(&s.as_bytes(), out),
        Value::Table(t) => encode_table(t, out, depth + 1)?,
        other => {
            return Err(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            ));
        }
    }
    Ok(())
}

fn encode_number(n: f64, out: &mut Vec<u8>) -> Result<(), String> {
    if !n.is_finite() {
        return Err("Cannot serialise number: must not be NaN or Inf".into());
    }
    out.extend_from_slice(format_g(n, 14).as_bytes());
    Ok(())
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// lua-cjson's `lua_array_length`: the array's length, or `None` when a key is not a
/// positive integer; an array that is too sparse is refused.
fn array_length(table: &Table) -> Result<Option<usize>, String> {
    let (mut max, mut items) = (0usize, 0usize);
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.map_err(|e| e.to_string())?;
        let index = match key {
            Value::Integer(i) if i >= 1 => i as usize,
            Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => n as usize,
            _ => return Ok(None),
        };
        max = max.max(index);
        items += 1;
    }
    if max > items * 2 && max > 10 {
        return Err("Cannot serialise table: excessively sparse array".into());
    }
    Ok(Some(max))
}

fn encode_table(table: &Table, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("Cannot serialise, excessive nesting ({depth})"));
    }
    match array_length(table)? {
        Some(len) if len > 0 => {
            out.push(b'[');
            for index in 1..=len {
                if index > 1 {
                    out.push(b',');
                }
                let item: Value = table.raw_get(index).map_err(|e| e.to_string())?;
                encode_value(&item, out, depth)?;
            }
            out.push(b']');
        }
        _ => {
            out.push(b'{');
            let mut first = true;
            for pair in table.pairs::<Value, Value>() {
                let (key, value) = pair.map_err(|e| e.to_string())?;
                if !first {
                    out.push(b',');
                }
                first = false;
                match &key {
                    Value::String(s) => encode_string(&s.as_bytes(), out),
                    Value::Integer(i) => encode_string(i.to_string().as_bytes(), out),
                    Value::Number(n) => encode_string(format_g(*n, 14).as_bytes(), out),
                    other => {
                        return Err(format!(
                            "Cannot serialise {}: table key must be a number or string",
                            other.type_name()
                        ));
                    }
                }
                out.push(b':');
                encode_value(&value, out, depth)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Number(f64),
    Boolean(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

impl Token {
    fn name(&self) -> &'static str {
        match self {
            Token::ObjBegin => "T_OBJ_BEGIN",
            Token::ObjEnd => "T_OBJ_END",
            Token::ArrBegin => "T_ARR_BEGIN",
            Token::ArrEnd => "T_ARR_END",
            Token::Str(_) => "T_STRING",
            Token::Number(_) => "T_NUMBER",
            Token::Boolean(_) => "T_BOOLEAN",
            Token::Null => "T_NULL",
            Token::Colon => "T_COLON",
            Token::Comma => "T_COMMA",
            Token::End => "T_END",
            Token::Error(message) => message,
        }
    }
}

struct Decoder<'a, 'lua> {
    lua: &'lua Lua,
    text: &'a [u8],
    at: usize,
    depth: usize,
}

impl Decoder<'_, '_> {
    /// The next token and the index (from 0) where it starts.
    fn next(&mut self) -> (Token, usize) {
        while self
            .text
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
        let start = self.at;
        let Some(&b) = self.text.get(self.at) else {
            return (Token::End, start);
        };
        let token = match b {
            b'"' => match self.string() {
                Ok(token) => token,
                // A string's error is reported where it was found, as lua-cjson does.
                Err((message, at)) => return (Token::Error(message), at),
            },
            b'{' => self.single(Token::ObjBegin),
            b'}' => self.single(Token::ObjEnd),
            b'[' => self.single(Token::ArrBegin),
            b']' => self.single(Token::ArrEnd),
            b':' => self.single(Token::Colon),
            b',' => self.single(Token::Comma),
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.word(),
        };
        (token, start)
    }

    fn single(&mut self, token: Token) -> Token {
        self.at += 1;
        token
    }

    fn word(&mut self) -> Token {
        for (word, token) in [
            (&b"true"[..], Token::Boolean(true)),
            (b"false", Token::Boolean(false)),
            (b"null", Token::Null),
            (b"nan", Token::Number(f64::NAN)),
            (b"inf", Token::Number(f64::INFINITY)),
        ] {
            if self.text[self.at..].starts_with(word) {
                self.at += word.len();
                return token;
            }
        }
        Token::Error("invalid token")
    }

    fn number(&mut self) -> Token {
        let rest = &self.text[self.at..];
        let len = rest
            .iter()
            .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .unwrap_or(rest.len());
        let text = std::str::from_utf8(&rest[..len]).unwrap_or("");
        match text.parse::<f64>() {
            Ok(n) => {
                self.at += len;
                Token::Number(n)
            }
            _ => Token::Error("invalid number"),
        }
    }

    fn string(&mut self) -> Result<Token, (&'static str, usize)> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.text.get(self.at) else {
                return Err(("unexpected end of string", self.at));
            };
            match b {
                b'"' => {
                    self.at += 1;
                    return Ok(Token::Str(out));
                }
                b'\\' => {
                    let backslash = self.at;
                    let Some(&escape) = self.text.get(self.at + 1) else {
                        return Err(("unexpected end of string", self.at + 1));
                    };
                    self.at += 2;
                    match escape {
                        b'"' | b'\\' | b'/' => out.push(escape),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => match self.unicode() {
                            Some(c) => {
                                let mut buf = [0; 4];
                                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                            None => return Err(("invalid unicode escape code", backslash)),
                        },
                        _ => return Err(("invalid escape code", backslash)),
                    }
                }
                _ => {
                    self.at += 1;
                    out.push(b);
                }
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + 4)?;
        let value = u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
        self.at += 4;
        Some(value)
    }

    fn unicode(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xd800..0xdc00).contains(&first) {
            // A surrogate pair: "\uD83D\uDE00".
            if self.text.get(self.at..self.at + 2)? != b"\\u" {
                return None;
            }
            self.at += 2;
            let second = self.hex4()?;
            if !(0xdc00..0xe000).contains(&second) {
                return None;
            }
            return char::from_u32(0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00));
        }
        char::from_u32(first)
    }

    fn expected(&self, what: &str, found: &Token, at: usize) -> String {
        format!(
            "Expected {what} but found {} at character {}",
            found.name(),
            at + 1
        )
    }

    fn value(&mut self, token: Token, at: usize) -> Result<Value, String> {
        let lua = self.lua;
        let err = |e: mlua::Error| e.to_string();
        match token {
            Token::Str(s) => Ok(Value::String(lua.create_string(&s).map_err(err)?)),
            Token::Number(n) => Ok(Value::Number(n)),
            Token::Boolean(b) => Ok(Value::Boolean(b)),
            Token::Null => Ok(null()),
            Token::ObjBegin => self.object(at),
            Token::ArrBegin => self.array(at),
            other => Err(self.expected("value", &other, at)),
        }
    }

    fn descend(&mut self, at: usize) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "Found too many nested data structures ({}) at character {}",
                self.depth,
                at + 1
            ));
        }
        Ok(())
    }

    fn object(&mut self, at: usize) -> Result<Value, String> {
        self.descend(at)?;
        let table = self.lua.create_table().map_err(|e| e.to_string())?;
        let (mut token, mut token_at) = self.next();
        if token == Token::ObjEnd {
            self.depth -= 1;
            return Ok(Value::Table(table));
        }
        loop {
            let Token::Str(key) = token else {
                return Err(self.expected("object key string", &token, token_at));
            };
            let (colon, colon_at) = self.next();
            if colon != Token::Colon {
                return Err(self.expected("colon", &colon, colon_at));
            }
            let (value_token, value_at) = self.next();
            let value = self.value(value_token, value_at)?;
            let key = self.lua.create_string(&key).map_err(|e| e.to_string())?;
            table.raw_set(key, value).map_err(|e| e.to_string())?;
            let (after, after_at) = self.next();
            match after {
                Token::ObjEnd => break,
                Token::Comma => (token, token_at) = self.next(),
                other => return Err(self.expected("comma or object end", &other, after_at)),
            }
        }
        self.depth -= 1;
        Ok(Value::Table(table))
    }

    fn array(&mut self, at: usize) -> Result<Value, String> {
        self.descend(at)?;
        let table = self.lua.create_table().map_err(|e| e.to_string())?;
        let (mut token, mut token_at) = self.next();
        if token == Token::ArrEnd {
            self.depth -= 1;
            return Ok(Value::Table(table));
        }
        let mut index = 1;
        loop {
            let value = self.value(token, token_at)?;
            table.raw_set(index, value).map_err(|e| e.to_string())?;
            index += 1;
            let (after, after_at) = self.next();
            match after {
                Token::ArrEnd => break,
                Token::Comma => (token, token_at) = self.next(),
                other => return Err(self.expected("comma or array end", &other, after_at)),
            }
        }
        self.depth -= 1;
        Ok(Value::Table(table))
    }
}

/// `cjson.decode(text)`: the Lua value, or lua-cjson's message.
pub fn decode(lua: &Lua, args: &[Value]) -> Result<Value, String> {
    let text = match args {
        [Value::String(s)] => s.as_bytes().to_vec(),
        [Value::Integer(i)] => i.to_string().into_bytes(),
        [Value::Number(n)] => format_g(*n, 14).into_bytes(),
        [] | [_, _, ..] => return Err("bad argument #1 to 'decode' (expected 1 argument)".into()),
        [other] => {
            return Err(format!(
                "bad argument #1 to 'decode' (string expected, got {})",
                other.type_name()
            ));
        }
    };
    let mut decoder = Decoder {
        lua,
        text: &text,
        at: 0,
        depth: 0,
    };
    let (token, at) = decoder.next();
    let value = decoder.value(token, at)?;
    let (end, end_at) = decoder.next();
    if end != Token::End {
        return Err(decoder.expected("the end", &end, end_at));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(lua: &Lua, source: &str) -> String {
        let value: Value = lua.load(source).eval().unwrap();
        String::from_utf8(encode(&[value]).unwrap()).unwrap()
    }

    #[test]
    fn encodes_as_lua_cjson_does() {
        let lua = Lua::new();
        assert_eq!(
            round_trip(&lua, "return {1, 2, {a = 1}}"),
            r#"[1,2,{"a":1}]"#
        );
        assert_eq!(round_trip(&lua, "return {}"), "{}");
        assert_eq!(round_trip(&lua, "return 'x\"y/\\n'"), r#""x\"y\/\n""#);
        assert_eq!(round_trip(&lua, "return 1e20"), "1e+20");
        assert_eq!(round_trip(&lua, "return 0.1"), "0.1");
        let sparse: Value = lua.load("return {[1] = 1, [20] = 2}").eval().unwrap();
        assert_eq!(
            encode(&[sparse]).unwrap_err(),
            "Cannot serialise table: excessively sparse array"
        );
        let nan: Value = lua.load("return 0/0").eval().unwrap();
        assert!(encode(&[nan]).is_err());
    }

    #[test]
    fn decodes_as_lua_cjson_does_and_says_where_it_stopped() {
        let lua = Lua::new();
        let text = lua
            .create_string(r#"[1,2.5,"x\u00e9",null,{"a":[]}]"#)
            .unwrap();
        let value = decode(&lua, &[Value::String(text)]).unwrap();
        lua.globals().set("v", value).unwrap();
        let ok: bool = lua
            .load("return v[1] == 1 and v[2] == 2.5 and v[3] == 'x\\195\\169' and #v[5].a == 0")
            .eval()
            .unwrap();
        assert!(ok);
        let bad = |text: &str| {
            decode(&lua, &[Value::String(lua.create_string(text).unwrap())]).unwrap_err()
        };
        assert_eq!(
            bad("x"),
            "Expected value but found invalid token at character 1"
        );
        assert_eq!(
            bad("[1 2]"),
            "Expected comma or array end but found T_NUMBER at character 4"
        );
        assert_eq!(
            bad("{1:2}"),
            "Expected object key string but found T_NUMBER at character 2"
        );
        assert_eq!(
            bad("1 2"),
            "Expected the end but found T_NUMBER at character 3"
        );
        assert_eq!(
            bad("\"abc"),
            "Expected value but found unexpected end of string at character 5"
        );
        assert_eq!(
            bad("\"\\x\""),
            "Expected value but found invalid escape code at character 2"
        );
        assert!(bad(&"[".repeat(1001)).starts_with("Found too many nested data structures (1001)"));
    }
}
