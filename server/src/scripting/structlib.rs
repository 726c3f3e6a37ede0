//! `struct` (Roberto Ierusalimschy's struct library, as Redis bundles it): `pack`,
//! `unpack` and `size` with formats of `> < ! x b B h H l L T i I c s f d`, sizes and
//! alignment of a 64-bit Linux build, and the library's error messages.

use mlua::{Lua, Value};

use super::args::{arg_error, bytes, number, opt_integer};

/// The widest integer an `i`/`I` option may ask for.
const MAX_INT_SIZE: usize = 32;
/// The default `!` alignment (that of a double).
const MAX_ALIGN: usize = 8;

struct Format<'a> {
    text: &'a [u8],
    at: usize,
    little: bool,
    align: usize,
    function: &'static str,
}

impl<'a> Format<'a> {
    fn new(text: &'a [u8], function: &'static str) -> Self {
        Format {
            text,
            at: 0,
            little: true,
            align: 1,
            function,
        }
    }

    fn next(&mut self) -> Option<u8> {
        let option = *self.text.get(self.at)?;
        self.at += 1;
        Some(option)
    }

    /// The number right after an option, or `default`.
    fn number(&mut self, default: usize) -> Result<usize, String> {
        if !self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            return Ok(default);
        }
        let mut n: usize = 0;
        while let Some(&d) = self.text.get(self.at).filter(|d| d.is_ascii_digit()) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(d - b'0')))
                .filter(|&n| n <= i32::MAX as usize)
                .ok_or("integral size overflow")?;
            self.at += 1;
        }
        Ok(n)
    }

    /// `optsize`: the option's size (0 for the ones without one).
    fn size(&mut self, option: u8) -> Result<usize, String> {
        Ok(match option {
            b'b' | b'B' | b'x' => 1,
            b'h' | b'H' => 2,
            b'l' | b'L' | b'T' | b'd' => 8,
            b'f' => 4,
            b'c' => self.number(1)?,
            b'i' | b'I' => {
                let size = self.number(4)?;
                if size > MAX_INT_SIZE {
                    return Err(format!(
                        "integral size {size} is larger than limit of {MAX_INT_SIZE}"
                    ));
                }
                size
            }
            _ => 0,
        })
    }

    /// `gettoalign`: padding before an item of `size` at offset `len`.
    fn padding(&self, len: usize, option: u8, size: usize) -> usize {
        if size == 0 || option == b'c' {
            return 0;
        }
        let size = size.min(self.align);
        (size - (len & (size - 1))) & (size - 1)
    }

    /// `controloptions`: endianness, alignment, spaces; anything else is refused.
    fn control(&mut self, option: u8) -> Result<(), String> {
        match option {
            b' ' => {}
            b'>' => self.little = false,
            b'<' => self.little = true,
            b'!' => {
                let align = self.number(MAX_ALIGN)?;
                if !align.is_power_of_two() {
                    return Err(format!("alignment {align} is not a power of 2"));
                }
                self.align = align;
            }
            other => {
                return Err(arg_error(
                    1,
                    self.function,
                    &format!("invalid format option '{}'", other as char),
                ));
            }
        }
        Ok(())
    }
}

fn put_integer(out: &mut Vec<u8>, n: f64, little: bool, size: usize) {
    let mut value = if n < 0.0 { n as i64 as u64 } else { n as u64 };
    let mut bytes = vec![0u8; size];
    for i in 0..size {
        let at = if little { i } else { size - 1 - i };
        bytes[at] = (value & 0xff) as u8;
        value >>= 8;
    }
    out.extend_from_slice(&bytes);
}

fn get_integer(bytes: &[u8], little: bool, signed: bool) -> f64 {
    let mut value: u64 = 0;
    let size = bytes.len();
    for i in 0..size {
        let at = if little { size - 1 - i } else { i };
        value = (value << 8) | u64::from(bytes[at]);
    }
    if !signed {
        return value as f64;
    }
    let shift = (size * 8).clamp(1, 64) - 1;
    let mask = u64::MAX << shift;
    if value & mask != 0 {
        value |= mask;
    }
    value as i64 as f64
}

/// `struct.pack(format, ...)`.
pub fn pack(args: &[Value]) -> Result<Vec<u8>, String> {
    let text = bytes(args, 1, "pack")?;
    let mut format = Format::new(&text, "pack");
    let mut out = Vec::new();
    let mut arg = 2;
    while let Some(option) = format.next() {
        let mut size = format.size(option)?;
        let pad = format.padding(out.len(), option, size);
        out.resize(out.len() + pad, 0);
        match option {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = number(args, arg, "pack")?;
                arg += 1;
                put_integer(&mut out, n, format.little, size);
            }
            b'x' => out.push(0),
            b'f' => {
                let f = number(args, arg, "pack")? as f32;
                arg += 1;
                let raw = if format.little {
                    f.to_le_bytes()
                } else {
                    f.to_be_bytes()
                };
                out.extend_from_slice(&raw);
            }
            b'd' => {
                let d = number(args, arg, "pack")?;
                arg += 1;
                let raw = if format.little {
                    d.to_le_bytes()
                } else {
                    d.to_be_bytes()
                };
                out.extend_from_slice(&raw);
            }
            b'c' | b's' => {
                let s = bytes(args, arg, "pack")?;
                arg += 1;
                if size == 0 {
                    size = s.len();
                }
                if s.len() < size {
                    return Err(arg_error(arg, "pack", "string too short"));
                }
                out.extend_from_slice(&s[..size]);
                if option == b's' {
                    out.push(0);
                }
            }
            other => format.control(other)?,
        }
    }
    Ok(out)
}

/// `struct.unpack(format, data [, init])`: the values, then the next position.
pub fn unpack(lua: &Lua, args: &[Value]) -> Result<Vec<Value>, String> {
    let text = bytes(args, 1, "unpack")?;
    let data = bytes(args, 2, "unpack")?;
    let init = opt_integer(args, 3, "unpack", 1)?;
    let mut pos = usize::try_from(init - 1)
        .ok()
        .filter(|&p| p <= data.len())
        .ok_or_else(|| arg_error(3, "unpack", "offset must be 1 or greater"))?;
    let mut format = Format::new(&text, "unpack");
    let mut values: Vec<Value> = Vec::new();
    let string = |b: &[u8]| {
        lua.create_string(b)
            .map(Value::String)
            .map_err(|e| e.to_string())
    };
    while let Some(option) = format.next() {
        let mut size = format.size(option)?;
        pos += format.padding(pos, option, size);
        if pos + size > data.len() {
            return Err(arg_error(2, "unpack", "data string too short"));
        }
        match option {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let signed = option.is_ascii_lowercase();
                values.push(Value::Number(get_integer(
                    &data[pos..pos + size],
                    format.little,
                    signed,
                )));
            }
            b'x' => {}
            b'f' => {
                let raw: [u8; 4] = data[pos..pos + 4].try_into().expect("4 bytes");
                let f = if format.little {
                    f32::from_le_bytes(raw)
                } else {
                    f32::from_be_bytes(raw)
                };
                values.push(Value::Number(f64::from(f)));
            }
            b'd' => {
                let raw: [u8; 8] = data[pos..pos + 8].try_into().expect("8 bytes");
                let d = if format.little {
                    f64::from_le_bytes(raw)
                } else {
                    f64::from_be_bytes(raw)
                };
                values.push(Value::Number(d));
            }
            b'c' => {
                if size == 0 {
                    // `c0` takes its length from the value just read.
                    size = match values.pop() {
                        Some(Value::Number(n)) => n as usize,
                        Some(Value::Integer(i)) => i as usize,
                        _ => return Err("format 'c0' needs a previous size".into()),
                    };
                    if pos + size > data.len() {
                        return Err(arg_error(2, "unpack", "data string too short"));
                    }
                }
                values.push(string(&data[pos..pos + size])?);
            }
            b's' => {
                let end = data[pos..]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or("unfinished string in data")?;
                size = end + 1;
                values.push(string(&data[pos..pos + end])?);
            }
            other => format.control(other)?,
        }
        pos += size;
    }
    values.push(Value::Number((pos + 1) as f64));
    Ok(values)
}

/// `struct.size(format)`.
pub fn size(args: &[Value]) -> Result<usize, String> {
    let text = bytes(args, 1, "size")?;
    let mut format = Format::new(&text, "size");
    let mut pos = 0;
    while let Some(option) = format.next() {
        let size = format.size(option)?;
        pos += format.padding(pos, option, size);
        if option == b's' {
            return Err(arg_error(1, "size", "option 's' has no fixed size"));
        }
        if option == b'c' && size == 0 {
            return Err(arg_error(1, "size", "option 'c0' has no fixed size"));
        }
        if !option.is_ascii_alphanumeric() {
            format.control(option)?;
        }
        pos += size;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(lua: &Lua, source: &str) -> Vec<Value> {
        let values: mlua::MultiValue = lua.load(source).eval().unwrap();
        values.into_iter().collect()
    }

    #[test]
    fn packs_unpacks_and_sizes_as_the_struct_library() {
        let lua = Lua::new();
        let packed = pack(&args(
            &lua,
            "return '>I2 <h b B c3 s d f i', 258, -2, -1, 255, 'abcd', 'zz', 1.5, 2.5, 7",
        ))
        .unwrap();
        let expected: Vec<u8> = [
            &[0x01, 0x02, 0xfe, 0xff, 0xff, 0xff][..],
            b"abc",
            b"zz\0",
            &1.5f64.to_le_bytes(),
            &2.5f32.to_le_bytes(),
            &7i32.to_le_bytes(),
        ]
        .concat();
        assert_eq!(packed, expected);
        assert_eq!(size(&args(&lua, "return '>I2 <h !4 i d'")).unwrap(), 16);
        assert_eq!(
            pack(&args(&lua, "return '!8 b d', 1, 2")).unwrap().len(),
            16,
            "the double is aligned to 8"
        );
        let data = lua.create_string([3, b'a', b'b', b'c']).unwrap();
        let values = unpack(
            &lua,
            &[
                Value::String(lua.create_string("b c0").unwrap()),
                Value::String(data),
            ],
        )
        .unwrap();
        assert_eq!(values.len(), 2);
        assert!(matches!(&values[0], Value::String(s) if s.as_bytes().as_ref() == b"abc"));
        assert_eq!(
            pack(&args(&lua, "return 'q'")).unwrap_err(),
            "bad argument #1 to 'pack' (invalid format option 'q')"
        );
        assert_eq!(
            size(&args(&lua, "return 's'")).unwrap_err(),
            "bad argument #1 to 'size' (option 's' has no fixed size)"
        );
    }
}
