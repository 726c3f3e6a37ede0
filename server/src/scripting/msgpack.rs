//! `cmsgpack` as Redis bundles it (lua-cmsgpack 0.4.0): integral numbers as the smallest
//! integer encoding, others as a float when a float holds them exactly and a double
//! otherwise, a table without holes in 1..n as an array, tables nested past 16 levels as
//! nil, and lua-cmsgpack's error messages.

use mlua::{Lua, Table, Value};

/// Nesting past which a table is packed as nil, as lua-cmsgpack does.
const MAX_NESTING: usize = 16;

/// `cmsgpack.pack(...)`: every argument packed, one after the other.
pub fn pack(args: &[Value]) -> Result<Vec<u8>, String> {
    if args.is_empty() {
        return Err("bad argument #0 to 'pack' (MessagePack pack needs input.)".into());
    }
    let mut out = Vec::new();
    for arg in args {
        encode(arg, &mut out, 0);
    }
    Ok(out)
}

fn encode(value: &Value, out: &mut Vec<u8>, level: usize) {
    match value {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => encode_int(*i, out),
        Value::Number(n) => encode_number(*n, out),
        Value::String(s) => encode_bytes(&s.as_bytes(), out),
        Value::Table(t) if level < MAX_NESTING => encode_table(t, out, level + 1),
        _ => out.push(0xc0),
    }
}

fn encode_number(n: f64, out: &mut Vec<u8>) {
    if n.is_finite() && n >= -(2f64.powi(63)) && n < 2f64.powi(63) && n.fract() == 0.0 {
        return encode_int(n as i64, out);
    }
    let single = n as f32;
    if f64::from(single) == n {
        out.push(0xca);
        out.extend_from_slice(&single.to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        let u = i as u64;
        match u {
            0..=0x7f => out.push(u as u8),
            0x80..=0xff => out.extend_from_slice(&[0xcc, u as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend_from_slice(&(u as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend_from_slice(&(u as u32).to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend_from_slice(&u.to_be_bytes());
            }
        }
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= -128 {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    let len = bytes.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

fn header(out: &mut Vec<u8>, len: usize, fix: u8, sixteen: u8, thirty_two: u8) {
    if len < 16 {
        out.push(fix | len as u8);
    } else if len <= 0xffff {
        out.push(sixteen);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(thirty_two);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// The length when every key is an integer 1..n without holes (an array), else `None`.
fn array_length(table: &Table) -> Option<usize> {
    let (mut count, mut max) = (0usize, 0usize);
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.ok()?;
        let index = match key {
            Value::Integer(i) if i > 0 => i as usize,
            Value::Number(n) if n > 0.0 && n.fract() == 0.0 => n as usize,
            _ => return None,
        };
        count += 1;
        max = max.max(index);
    }
    (count == max).then_some(max)
}

fn encode_table(table: &Table, out: &mut Vec<u8>, level: usize) {
    match array_length(table) {
        Some(len) => {
            header(out, len, 0x90, 0xdc, 0xdd);
            for index in 1..=len {
                let item: Value = table.raw_get(index).unwrap_or(Value::Nil);
                encode(&item, out, level);
            }
        }
        None => {
            let pairs: Vec<(Value, Value)> = table
                .pairs::<Value, Value>()
                .filter_map(Result::ok)
                .collect();
            header(out, pairs.len(), 0x80, 0xde, 0xdf);
            for (key, value) in &pairs {
                encode(key, out, level);
                encode(value, out, level);
            }
        }
    }
}

struct Decoder<'a, 'lua> {
    lua: &'lua Lua,
    data: &'a [u8],
    at: usize,
}

const MISSING: &str = "Missing bytes in input.";
const BAD: &str = "Bad data format in input.";

impl Decoder<'_, '_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let bytes = self.data.get(self.at..self.at + n).ok_or(MISSING)?;
        self.at += n;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn string(&mut self, len: usize) -> Result<Value, String> {
        let bytes = self.take(len)?.to_vec();
        Ok(Value::String(
            self.lua.create_string(&bytes).map_err(|e| e.to_string())?,
        ))
    }

    fn table(&mut self, len: usize, map: bool) -> Result<Value, String> {
        let table = self
            .lua
            .create_table_with_capacity(if map { 0 } else { len }, if map { len } else { 0 })
            .map_err(|e| e.to_string())?;
        for index in 1..=len {
            if map {
                let key = self.value()?;
                let value = self.value()?;
                if !key.is_nil() {
                    table.raw_set(key, value).map_err(|e| e.to_string())?;
                }
            } else {
                let value = self.value()?;
                table.raw_set(index, value).map_err(|e| e.to_string())?;
            }
        }
        Ok(Value::Table(table))
    }

    fn value(&mut self) -> Result<Value, String> {
        let kind = self.take(1)?[0];
        let number = |n: f64| Ok(Value::Number(n));
        match kind {
            0x00..=0x7f => number(f64::from(kind)),
            0x80..=0x8f => self.table(usize::from(kind & 0x0f), true),
            0x90..=0x9f => self.table(usize::from(kind & 0x0f), false),
            0xa0..=0xbf => self.string(usize::from(kind & 0x1f)),
            0xc0 => Ok(Value::Nil),
            0xc2 => Ok(Value::Boolean(false)),
            0xc3 => Ok(Value::Boolean(true)),
            0xc4 | 0xd9 => {
                let len = self.uint(1)? as usize;
                self.string(len)
            }
            0xc5 | 0xda => {
                let len = self.uint(2)? as usize;
                self.string(len)
            }
            0xc6 | 0xdb => {
                let len = self.uint(4)? as usize;
                self.string(len)
            }
            0xca => {
                let bits = self.uint(4)? as u32;
                number(f64::from(f32::from_bits(bits)))
            }
            0xcb => number(f64::from_bits(self.uint(8)?)),
            0xcc => number(self.uint(1)? as f64),
            0xcd => number(self.uint(2)? as f64),
            0xce => number(self.uint(4)? as f64),
            0xcf => number(self.uint(8)? as f64),
            0xd0 => number(f64::from(self.uint(1)? as u8 as i8)),
            0xd1 => number(f64::from(self.uint(2)? as u16 as i16)),
            0xd2 => number(f64::from(self.uint(4)? as u32 as i32)),
            0xd3 => number(self.uint(8)? as i64 as f64),
            0xdc => {
                let len = self.uint(2)? as usize;
                self.table(len, false)
            }
            0xdd => {
                let len = self.uint(4)? as usize;
                self.table(len, false)
            }
            0xde => {
                let len = self.uint(2)? as usize;
                self.table(len, true)
            }
            0xdf => {
                let len = self.uint(4)? as usize;
                self.table(len, true)
            }
            0xe0..=0xff => number(f64::from(kind as i8)),
            _ => Err(BAD.into()),
        }
    }
}

/// What an unpack decoded: its values and, for `unpack_one`/`unpack_limit`, where the
/// next object starts (-1 when none is left).
pub struct Unpacked {
    /// The offset to continue from.
    pub next: i64,
    /// The decoded objects, in order.
    pub values: Vec<Value>,
}

/// Decodes up to `limit` objects (0: all) of `data` from `offset`.
pub fn unpack(lua: &Lua, data: &[u8], limit: usize, offset: usize) -> Result<Unpacked, String> {
    if offset > data.len() {
        return Err(
            "bad argument #3 to 'unpack_limit' (Start offset greater than input length.)".into(),
        );
    }
    let mut decoder = Decoder {
        lua,
        data,
        at: offset,
    };
    let mut values = Vec::new();
    while decoder.at < data.len() && (limit == 0 || values.len() < limit) {
        values.push(decoder.value()?);
    }
    let next = if decoder.at >= data.len() {
        -1
    } else {
        decoder.at as i64
    };
    Ok(Unpacked { next, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(lua: &Lua, source: &str) -> Vec<u8> {
        let value: Value = lua.load(source).eval().unwrap();
        pack(&[value]).unwrap()
    }

    #[test]
    fn packs_as_lua_cmsgpack_does() {
        let lua = Lua::new();
        assert_eq!(packed(&lua, "return 1.5"), [0xca, 0x3f, 0xc0, 0, 0]);
        assert_eq!(packed(&lua, "return -33"), [0xd0, 0xdf]);
        assert_eq!(packed(&lua, "return 70000"), [0xce, 0, 1, 0x11, 0x70]);
        assert_eq!(packed(&lua, "return {}"), [0x90]);
        assert_eq!(packed(&lua, "return {a = 1}"), [0x81, 0xa1, b'a', 1]);
        assert_eq!(packed(&lua, "return 2^63"), [0xca, 0x5f, 0, 0, 0]);
        assert_eq!(packed(&lua, "return {1, 2, 'x'}"), [0x93, 1, 2, 0xa1, b'x']);
        assert_eq!(
            pack(&[]).unwrap_err(),
            "bad argument #0 to 'pack' (MessagePack pack needs input.)"
        );
    }

    #[test]
    fn unpacks_what_it_packs_and_refuses_short_or_bad_input() {
        let lua = Lua::new();
        let bytes = packed(&lua, "return {a = {1, 2}, b = 'x', c = -1.25}");
        let out = unpack(&lua, &bytes, 0, 0).unwrap();
        lua.globals().set("t", out.values[0].clone()).unwrap();
        let ok: bool = lua
            .load("return t.a[2] == 2 and t.b == 'x' and t.c == -1.25")
            .eval()
            .unwrap();
        assert!(ok);
        assert_eq!(unpack(&lua, &[0x92, 1], 0, 0).err().unwrap(), MISSING);
        assert_eq!(unpack(&lua, &[0xc1], 0, 0).err().unwrap(), BAD);
        let two = unpack(&lua, &[1, 2, 3], 2, 0).unwrap();
        assert_eq!((two.next, two.values.len()), (2, 2));
        assert_eq!(unpack(&lua, &[1, 2], 1, 1).unwrap().next, -1);
    }
}
