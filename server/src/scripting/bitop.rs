//! `bit` (LuaBitOp 1.0.2, as Redis bundles it): 32-bit operations on Lua numbers, which
//! are first brought into 32 bits by rounding to the nearest integer (ties to even) and
//! wrapping, and come back as signed 32-bit values.

use mlua::{Lua, Value};

use super::args::number;

/// LuaBitOp's `barg`: the number's low 32 bits after rounding.
fn to_bits(n: f64) -> u32 {
    // Adding 2^52 + 2^51 moves the integer part into the mantissa's low bits with the
    // FPU's rounding, as LuaBitOp does; the low 32 bits of the mantissa are the result.
    let shifted = n + 6_755_399_441_055_744.0;
    shifted.to_bits() as u32
}

fn arg(args: &[Value], index: usize, function: &str) -> Result<u32, String> {
    number(args, index, function).map(to_bits)
}

fn result(bits: u32) -> Value {
    Value::Number(f64::from(bits as i32))
}

/// Runs `bit.<name>` on `args`.
pub fn call(lua: &Lua, name: &str, args: &[Value]) -> Result<Value, String> {
    let value = match name {
        "tobit" => result(arg(args, 1, name)?),
        "bnot" => result(!arg(args, 1, name)?),
        "bswap" => result(arg(args, 1, name)?.swap_bytes()),
        "band" | "bor" | "bxor" => {
            let mut acc = arg(args, 1, name)?;
            for index in 2..=args.len() {
                let next = arg(args, index, name)?;
                acc = match name {
                    "band" => acc & next,
                    "bor" => acc | next,
                    _ => acc ^ next,
                };
            }
            result(acc)
        }
        "lshift" | "rshift" | "arshift" | "rol" | "ror" => {
            let x = arg(args, 1, name)?;
            let n = arg(args, 2, name)? & 31;
            result(match name {
                "lshift" => x << n,
                "rshift" => x >> n,
                "arshift" => ((x as i32) >> n) as u32,
                "rol" => x.rotate_left(n),
                _ => x.rotate_right(n),
            })
        }
        "tohex" => {
            let x = arg(args, 1, name)?;
            let n = match args.get(1) {
                None | Some(Value::Nil) => 8,
                Some(_) => arg(args, 2, name)? as i32,
            };
            let digits = n.unsigned_abs().min(8) as usize;
            let full = if n < 0 {
                format!("{x:08X}")
            } else {
                format!("{x:08x}")
            };
            let text = lua
                .create_string(&full[8 - digits..])
                .map_err(|e| e.to_string())?;
            Value::String(text)
        }
        _ => return Err(format!("no bit function '{name}'")),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(lua: &Lua, name: &str, args: &[f64]) -> Value {
        let args: Vec<Value> = args.iter().map(|&n| Value::Number(n)).collect();
        call(lua, name, &args).unwrap()
    }

    #[test]
    fn thirty_two_bit_operations_as_luabitop() {
        let lua = Lua::new();
        let n = |v: Value| match v {
            Value::Number(n) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(n(bit(&lua, "tobit", &[2f64.powi(31)])), -2147483648.0);
        assert_eq!(n(bit(&lua, "tobit", &[2.5])), 2.0, "ties go to even");
        assert_eq!(n(bit(&lua, "tobit", &[1.5])), 2.0);
        assert_eq!(n(bit(&lua, "rshift", &[-1.0, 28.0])), 15.0);
        assert_eq!(n(bit(&lua, "arshift", &[-256.0, 4.0])), -16.0);
        assert_eq!(
            n(bit(&lua, "rol", &[f64::from(0x12345678), 8.0])),
            878082066.0
        );
        assert_eq!(
            n(bit(&lua, "bswap", &[f64::from(0x12345678)])),
            2018915346.0
        );
        assert_eq!(n(bit(&lua, "lshift", &[1.0, 32.0])), 1.0);
        assert_eq!(n(bit(&lua, "bor", &[1.0, 2.0, 4.0])), 7.0);
        let hex = |args: &[f64]| match bit(&lua, "tohex", args) {
            Value::String(s) => s.to_str().unwrap().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(hex(&[-1.0, 4.0]), "ffff");
        assert_eq!(hex(&[255.0, -2.0]), "FF");
        assert_eq!(hex(&[1.0, 20.0]), "00000001");
        assert_eq!(
            call(&lua, "band", &[]).unwrap_err(),
            "bad argument #1 to 'band' (number expected, got no value)"
        );
    }
}
