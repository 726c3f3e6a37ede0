//! Bit commands on strings and LCS, as Redis 7.0's `bitops.c` and `t_string.c` answer
//! them. Bits are numbered from the most significant bit of the first byte. A write
//! changes only the bytes it touches, and its record is a SetRange of those bytes.

use ringkv_protocol::{Args, parse_i64};

use crate::handler::{CmdError, CmdResult, Ctx, as_str, int_arg, is, is_resp3};
use crate::notify::Class;

fn custom(message: &str) -> CmdError {
    CmdError::Custom(format!("ERR {message}"))
}

fn max_bulk_len(ctx: &Ctx<'_, '_>) -> u64 {
    ctx.node.config.read().proto_max_bulk_len
}

/// A bit offset (`getBitOffsetFromArgument`): `#n` counts in fields of `bits` when
/// `bits > 0`; the byte it falls in must lie below `proto-max-bulk-len`.
fn bit_offset(arg: &[u8], bits: u64, limit: u64) -> Result<u64, CmdError> {
    let invalid = || custom("bit offset is not an integer or out of range");
    let (text, scale) = match arg.strip_prefix(b"#") {
        Some(rest) if bits > 0 => (rest, bits as i64),
        _ => (arg, 1),
    };
    let offset = parse_i64(text)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(invalid)?;
    if offset < 0 || (offset as u64 >> 3) >= limit {
        return Err(invalid());
    }
    Ok(offset as u64)
}

fn bit_at(bytes: &[u8], offset: u64) -> bool {
    let byte = (offset >> 3) as usize;
    bytes
        .get(byte)
        .is_some_and(|b| b & (0x80 >> (offset & 7)) != 0)
}

/// Reads the string at `key` (`None` when missing); WRONGTYPE for another type.
fn read_string<R>(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    f: impl FnOnce(Option<&[u8]>) -> R,
) -> Result<R, CmdError> {
    ctx.node.store.read(key, ctx.now, |value| match value {
        None => Ok(f(None)),
        Some(value) => as_str(value).map(|s| f(Some(s))),
    })
}

/// SETBIT key offset value
pub fn setbit(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = bit_offset(args.get(2), 0, max_bulk_len(ctx))?;
    let on = match parse_i64(args.get(3)) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(custom("bit is not an integer or out of range")),
    };
    let old = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let current = slot.value().map(as_str).transpose()?;
        let byte_at = (offset >> 3) as usize;
        let old_byte = current.and_then(|s| s.get(byte_at).copied()).unwrap_or(0);
        let mask = 0x80u8 >> (offset & 7);
        let new_byte = if on {
            old_byte | mask
        } else {
            old_byte & !mask
        };
        // An unchanged bit of an existing string is no write (no record, no dirty).
        let exists_long_enough = current.is_some_and(|s| s.len() > byte_at);
        let wrote = new_byte != old_byte || !exists_long_enough;
        if wrote {
            slot.set_range(byte_at, &[new_byte])
                .map_err(|_| CmdError::WrongType)?;
        }
        Ok::<_, CmdError>((old_byte & mask != 0, wrote))
    })?;
    let (old, wrote) = old;
    if wrote {
        ctx.notify(Class::STRING, "setbit", args.get(1));
        ctx.events_first();
    }
    ctx.out.int(old as i64);
    Ok(())
}

/// GETBIT key offset
pub fn getbit(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = bit_offset(args.get(2), 0, max_bulk_len(ctx))?;
    let bit = read_string(ctx, args.get(1), |s| s.is_some_and(|s| bit_at(s, offset)))?;
    ctx.out.int(bit as i64);
    Ok(())
}

/// An inclusive range of bits of a string of `len` bytes after Redis's rules for
/// `start end [BYTE|BIT]`; `None` when empty.
fn bit_range(start: i64, end: i64, len: usize, in_bits: bool) -> Option<(u64, u64)> {
    let total = if in_bits { len as i64 * 8 } else { len as i64 };
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let start = if start < 0 {
        (start + total).max(0)
    } else {
        start
    };
    let end = if end < 0 { (end + total).max(0) } else { end };
    let end = end.min(total - 1);
    if start > end {
        return None;
    }
    let (start, end) = (start as u64, end as u64);
    Some(if in_bits {
        (start, end)
    } else {
        (start * 8, end * 8 + 7)
    })
}

/// Ones among bits `first..=last`.
fn count_ones(bytes: &[u8], first: u64, last: u64) -> u64 {
    let (first_byte, last_byte) = ((first >> 3) as usize, (last >> 3) as usize);
    let mut count: u64 = bytes[first_byte..=last_byte]
        .iter()
        .map(|b| b.count_ones() as u64)
        .sum();
    // Take out the bits of the edge bytes outside the range.
    count -= (bytes[first_byte] & !(0xffu8 >> (first & 7))).count_ones() as u64;
    count -= (bytes[last_byte] & (0x7fu8 >> (last & 7))).count_ones() as u64;
    count
}

/// BYTE or BIT; true for BIT.
fn unit_arg(arg: &[u8]) -> Result<bool, CmdError> {
    if is(arg, "bit") {
        Ok(true)
    } else if is(arg, "byte") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

/// BITCOUNT key [start end [BYTE|BIT]]
pub fn bitcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let count = read_string(ctx, args.get(1), |s| -> Result<u64, CmdError> {
        let Some(s) = s else {
            return Ok(0);
        };
        let range = match args.len() {
            2 => (!s.is_empty()).then(|| (0, s.len() as u64 * 8 - 1)),
            4 | 5 => {
                let (start, end) = (int_arg(args.get(2))?, int_arg(args.get(3))?);
                let in_bits = args.len() == 5 && unit_arg(args.get(4))?;
                bit_range(start, end, s.len(), in_bits)
            }
            _ => return Err(CmdError::Syntax),
        };
        Ok(range.map_or(0, |(first, last)| count_ones(s, first, last)))
    })??;
    ctx.out.int(count as i64);
    Ok(())
}

/// BITPOS key bit [start [end [BYTE|BIT]]]
pub fn bitpos(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let want = match parse_i64(args.get(2)) {
        Some(0) => false,
        Some(1) => true,
        Some(_) => return Err(custom("The bit argument must be 1 or 0.")),
        None => return Err(CmdError::NotInteger),
    };
    let position = read_string(ctx, args.get(1), |s| -> Result<i64, CmdError> {
        // A missing key is an endless run of zeros.
        let Some(s) = s else {
            return Ok(if want { -1 } else { 0 });
        };
        if args.len() > 6 {
            return Err(CmdError::Syntax);
        }
        let in_bits = args.len() == 6 && unit_arg(args.get(5))?;
        let start = if args.len() >= 4 {
            int_arg(args.get(3))?
        } else {
            0
        };
        let end_given = args.len() >= 5;
        let end = if end_given { int_arg(args.get(4))? } else { -1 };
        let Some((first, last)) = bit_range(start, end, s.len(), in_bits) else {
            return Ok(-1);
        };
        if let Some(at) = find_bit(s, first, last, want) {
            return Ok(at as i64);
        }
        // No clear bit inside: without an explicit end the string continues with zeros.
        Ok(if want || end_given {
            -1
        } else {
            last as i64 + 1
        })
    })??;
    ctx.out.int(position);
    Ok(())
}

/// The first bit equal to `want` among bits `first..=last`, skipping whole bytes that
/// cannot hold it.
fn find_bit(bytes: &[u8], first: u64, last: u64, want: bool) -> Option<u64> {
    let skip = if want { 0x00 } else { 0xff };
    let mut at = first;
    while at <= last {
        if at & 7 == 0 && at + 7 <= last && bytes[(at >> 3) as usize] == skip {
            at += 8;
            continue;
        }
        if bit_at(bytes, at) == want {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// BITOP AND|OR|XOR|NOT destkey key [key ...]
pub fn bitop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
    }
    let name = args.get(1);
    let op = if is(name, "and") {
        Op::And
    } else if is(name, "or") {
        Op::Or
    } else if is(name, "xor") {
        Op::Xor
    } else if is(name, "not") {
        Op::Not
    } else {
        return Err(CmdError::Syntax);
    };
    if op == Op::Not && args.len() != 4 {
        return Err(custom("BITOP NOT must be called with a single source key."));
    }
    let mut sources = Vec::with_capacity(args.len() - 3);
    for key in args.iter().skip(3) {
        sources.push(read_string(ctx, key, |s| {
            s.map(<[u8]>::to_vec).unwrap_or_default()
        })?);
    }
    let len = sources.iter().map(Vec::len).max().unwrap_or(0);
    let byte = |source: &Vec<u8>, i: usize| source.get(i).copied().unwrap_or(0);
    let result: Vec<u8> = (0..len)
        .map(|i| {
            let first = byte(&sources[0], i);
            sources[1..].iter().fold(
                if op == Op::Not { !first } else { first },
                |acc, s| match op {
                    Op::And => acc & byte(s, i),
                    Op::Or => acc | byte(s, i),
                    Op::Xor => acc ^ byte(s, i),
                    Op::Not => acc,
                },
            )
        })
        .collect();
    let stored = !result.is_empty();
    let existed = ctx.node.store.write(args.get(2), ctx.now, |slot| {
        let existed = slot.remove().is_some();
        if stored {
            slot.set(ringkv_store::Value::Str(result), Some(0));
        }
        existed
    });
    if stored {
        ctx.notify(Class::STRING, "set", args.get(2));
    } else if existed {
        ctx.notify(Class::GENERIC, "del", args.get(2));
    }
    ctx.events_first();
    ctx.out.int(len as i64);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Get,
    Set(i64),
    IncrBy(i64),
}

#[derive(Clone, Copy)]
struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    overflow: Overflow,
}

/// `i1`..`i64` or `u1`..`u63`.
fn field_type(arg: &[u8]) -> Result<(bool, u32), CmdError> {
    let invalid = || {
        custom(
            "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
        )
    };
    let (signed, rest) = match arg.split_first() {
        Some((b'i', rest)) => (true, rest),
        Some((b'u', rest)) => (false, rest),
        _ => return Err(invalid()),
    };
    let bits = parse_i64(rest).ok_or_else(invalid)?;
    let max = if signed { 64 } else { 63 };
    if !(1..=max).contains(&bits) {
        return Err(invalid());
    }
    Ok((signed, bits as u32))
}

/// The `bits`-wide unsigned field at bit `offset` (zeros past the end).
fn read_field(bytes: &[u8], offset: u64, bits: u32) -> u64 {
    (0..bits as u64).fold(0u64, |acc, i| (acc << 1) | bit_at(bytes, offset + i) as u64)
}

/// Writes the low `bits` of `value` at bit `offset` of `bytes` (long enough).
fn write_field(bytes: &mut [u8], offset: u64, bits: u32, value: u64) {
    for i in 0..bits as u64 {
        let bit = (value >> (bits as u64 - 1 - i)) & 1 == 1;
        let at = offset + i;
        let mask = 0x80u8 >> (at & 7);
        let byte = &mut bytes[(at >> 3) as usize];
        *byte = if bit { *byte | mask } else { *byte & !mask };
    }
}

fn sign_extend(raw: u64, bits: u32) -> i64 {
    if bits == 64 {
        return raw as i64;
    }
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

/// `value + incr` in a field of `bits`: the stored value, or `None` when it overflows
/// under FAIL (`checkSignedBitfieldOverflow` / `checkUnsignedBitfieldOverflow`).
fn fit(value: i64, incr: i64, signed: bool, bits: u32, overflow: Overflow) -> Option<i64> {
    if signed {
        let max: i128 = (1i128 << (bits - 1)) - 1;
        let min: i128 = -max - 1;
        let sum = value as i128 + incr as i128;
        if (min..=max).contains(&sum) {
            return Some(sum as i64);
        }
        match overflow {
            Overflow::Fail => None,
            Overflow::Sat => Some(if sum > max { max } else { min } as i64),
            Overflow::Wrap => Some(sign_extend((value as u64).wrapping_add(incr as u64), bits)),
        }
    } else {
        let max: i128 = (1i128 << bits) - 1;
        // SET passes its value as an unsigned 64-bit number: a negative one is huge.
        let current = value as u64 as i128;
        let sum = current + incr as i128;
        if (0..=max).contains(&sum) {
            return Some(sum as i64);
        }
        match overflow {
            Overflow::Fail => None,
            Overflow::Sat => Some(if sum > max { max as i64 } else { 0 }),
            Overflow::Wrap => {
                Some(((value as u64).wrapping_add(incr as u64) & (max as u64)) as i64)
            }
        }
    }
}

fn parse_fields(args: &Args<'_>, limit: u64) -> Result<Vec<Field>, CmdError> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < args.len() {
        let sub = args.get(j);
        let left = args.len() - j - 1;
        let op_args = if is(sub, "get") && left >= 2 {
            2
        } else if (is(sub, "set") || is(sub, "incrby")) && left >= 3 {
            3
        } else if is(sub, "overflow") && left >= 1 {
            let kind = args.get(j + 1);
            overflow = if is(kind, "wrap") {
                Overflow::Wrap
            } else if is(kind, "sat") {
                Overflow::Sat
            } else if is(kind, "fail") {
                Overflow::Fail
            } else {
                return Err(custom("Invalid OVERFLOW type specified"));
            };
            j += 2;
            continue;
        } else {
            return Err(CmdError::Syntax);
        };
        let (signed, bits) = field_type(args.get(j + 1))?;
        let offset = bit_offset(args.get(j + 2), bits as u64, limit)?;
        let op = if op_args == 2 {
            FieldOp::Get
        } else {
            let value = int_arg(args.get(j + 3))?;
            if is(sub, "set") {
                FieldOp::Set(value)
            } else {
                FieldOp::IncrBy(value)
            }
        };
        fields.push(Field {
            op,
            signed,
            bits,
            offset,
            overflow,
        });
        j += 1 + op_args;
    }
    Ok(fields)
}

fn bitfield_generic(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let fields = parse_fields(args, max_bulk_len(ctx))?;
    let writes = fields.iter().any(|f| f.op != FieldOp::Get);
    let value_of = |f: &Field, bytes: &[u8]| {
        let raw = read_field(bytes, f.offset, f.bits);
        if f.signed {
            sign_extend(raw, f.bits)
        } else {
            raw as i64
        }
    };
    if !writes {
        let results = read_string(ctx, args.get(1), |s| {
            let bytes = s.unwrap_or_default();
            fields
                .iter()
                .map(|f| value_of(f, bytes))
                .collect::<Vec<_>>()
        })?;
        ctx.out.array(results.len());
        for value in results {
            ctx.out.int(value);
        }
        return Ok(());
    }
    if read_only {
        return Err(custom("BITFIELD_RO only supports the GET subcommand"));
    }
    // The string first grows to the farthest bit any write reaches, as in Redis.
    let highest = fields
        .iter()
        .filter(|f| f.op != FieldOp::Get)
        .map(|f| f.offset + f.bits as u64 - 1)
        .max()
        .unwrap_or(0);
    let needed = (highest >> 3) as usize + 1;
    let results = ctx.node.store.write(args.get(1), ctx.now, |slot| {
        let current = slot.value().map(as_str).transpose()?.unwrap_or_default();
        let mut bytes = current.to_vec();
        // Byte ranges to write back: the growth and each changed field, merged so that
        // one command's adjacent changes are one record.
        let mut touched = Vec::new();
        if bytes.len() < needed {
            touched.push((bytes.len(), needed));
            bytes.resize(needed, 0);
        }
        let mut results = Vec::with_capacity(fields.len());
        for f in &fields {
            let old = value_of(f, &bytes);
            let (stored, reply) = match f.op {
                FieldOp::Get => {
                    results.push(Some(old));
                    continue;
                }
                FieldOp::Set(v) => {
                    let stored = fit(v, 0, f.signed, f.bits, f.overflow);
                    (stored, stored.map(|_| old))
                }
                FieldOp::IncrBy(incr) => {
                    let stored = fit(old, incr, f.signed, f.bits, f.overflow);
                    (stored, stored)
                }
            };
            if let Some(stored) = stored
                && value_of(f, &bytes) != stored
            {
                write_field(&mut bytes, f.offset, f.bits, stored as u64);
                let last_bit = f.offset + f.bits as u64 - 1;
                touched.push(((f.offset >> 3) as usize, (last_bit >> 3) as usize + 1));
            }
            results.push(reply);
        }
        touched.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (from, to) in touched {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        let wrote = !merged.is_empty();
        for (from, to) in merged {
            slot.set_range(from, &bytes[from..to])
                .map_err(|_| CmdError::WrongType)?;
        }
        Ok::<_, CmdError>((results, wrote))
    })?;
    let (results, wrote) = results;
    if wrote {
        ctx.notify(Class::STRING, "setbit", args.get(1));
    }
    ctx.out.array(results.len());
    for result in results {
        match result {
            Some(value) => ctx.out.int(value),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

/// BITFIELD key [GET type offset] [SET type offset value] [INCRBY type offset increment]
/// [OVERFLOW WRAP|SAT|FAIL] ...
pub fn bitfield(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    bitfield_generic(ctx, &args, false)
}

/// BITFIELD_RO key [GET type offset] ...
pub fn bitfield_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    bitfield_generic(ctx, &args, true)
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]
pub fn lcs(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let not_strings = || custom("The specified keys must contain string values");
    let mut strings = Vec::with_capacity(2);
    for key in [args.get(1), args.get(2)] {
        let read = ctx.node.store.read(key, ctx.now, |value| match value {
            None => Some(Vec::new()),
            Some(value) => as_str(value).ok().map(<[u8]>::to_vec),
        });
        strings.push(read.ok_or_else(not_strings)?);
    }
    let (mut want_idx, mut want_len, mut with_match_len, mut min_match_len) =
        (false, false, false, 0u64);
    let mut j = 3;
    while j < args.len() {
        let opt = args.get(j);
        if is(opt, "idx") {
            want_idx = true;
        } else if is(opt, "len") {
            want_len = true;
        } else if is(opt, "withmatchlen") {
            with_match_len = true;
        } else if is(opt, "minmatchlen") && j + 1 < args.len() {
            min_match_len = int_arg(args.get(j + 1))?.max(0) as u64;
            j += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        j += 1;
    }
    if want_idx && want_len {
        return Err(custom(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    let (a, b) = (&strings[0], &strings[1]);
    // The table costs 4 bytes a cell: bounded as Redis bounds it.
    let cells = (a.len() as u64 + 1).saturating_mul(b.len() as u64 + 1);
    if cells.saturating_mul(4) > max_bulk_len(ctx) || cells >= u32::MAX as u64 {
        return Err(custom(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let width = b.len() + 1;
    let mut table = vec![0u32; (a.len() + 1) * width];
    for i in 1..=a.len() {
        for k in 1..=b.len() {
            table[i * width + k] = if a[i - 1] == b[k - 1] {
                table[(i - 1) * width + k - 1] + 1
            } else {
                table[(i - 1) * width + k].max(table[i * width + k - 1])
            };
        }
    }
    let total = table[a.len() * width + b.len()];
    if want_len {
        ctx.out.int(total as i64);
        return Ok(());
    }
    // Walk back from the end, as Redis does, collecting the string and the ranges.
    let mut result = vec![0u8; total as usize];
    let mut matches: Vec<[u64; 5]> = Vec::new();
    let unset = a.len();
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (unset, 0, 0, 0);
    let (mut i, mut k, mut idx) = (a.len(), b.len(), total as usize);
    while i > 0 && k > 0 {
        let mut emit = false;
        if a[i - 1] == b[k - 1] {
            result[idx - 1] = a[i - 1];
            if a_start == unset {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, k - 1, k - 1);
            } else if a_start == i && b_start == k {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            k -= 1;
        } else {
            if table[(i - 1) * width + k] > table[i * width + k - 1] {
                i -= 1;
            } else {
                k -= 1;
            }
            if a_start != unset {
                emit = true;
            }
        }
        if emit {
            let len = (a_end - a_start + 1) as u64;
            if min_match_len == 0 || len >= min_match_len {
                matches.push([
                    a_start as u64,
                    a_end as u64,
                    b_start as u64,
                    b_end as u64,
                    len,
                ]);
            }
            a_start = unset;
        }
    }
    if !want_idx {
        ctx.out.bulk(&result);
        return Ok(());
    }
    if is_resp3(ctx.out) {
        ctx.out.map(2);
    } else {
        ctx.out.array(4);
    }
    ctx.out.bulk(b"matches");
    ctx.out.array(matches.len());
    for [a0, a1, b0, b1, len] in matches {
        ctx.out.array(2 + with_match_len as usize);
        for (from, to) in [(a0, a1), (b0, b1)] {
            ctx.out.array(2);
            ctx.out.int(from as i64);
            ctx.out.int(to as i64);
        }
        if with_match_len {
            ctx.out.int(len as i64);
        }
    }
    ctx.out.bulk(b"len");
    ctx.out.int(total as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_and_write_across_byte_boundaries() {
        let mut bytes = vec![0u8; 3];
        write_field(&mut bytes, 5, 10, 0b10_1100_1101);
        assert_eq!(read_field(&bytes, 5, 10), 0b10_1100_1101);
        assert_eq!(bytes, [0b0000_0101, 0b1001_1010, 0]);
        assert_eq!(sign_extend(0b1111, 4), -1);
        assert_eq!(sign_extend(0b0111, 4), 7);
        assert_eq!(read_field(&bytes, 20, 8), 0, "past the end reads zeros");
    }

    #[test]
    fn overflows_wrap_saturate_or_fail_as_redis() {
        assert_eq!(fit(100, 100, true, 8, Overflow::Wrap), Some(-56));
        assert_eq!(fit(100, 100, true, 8, Overflow::Sat), Some(127));
        assert_eq!(fit(100, 100, true, 8, Overflow::Fail), None);
        assert_eq!(fit(-100, -100, true, 8, Overflow::Sat), Some(-128));
        assert_eq!(fit(250, 10, false, 8, Overflow::Wrap), Some(4));
        assert_eq!(fit(5, -10, false, 8, Overflow::Sat), Some(0));
        assert_eq!(
            fit(-1, 0, false, 8, Overflow::Sat),
            Some(255),
            "SET -1 of u8"
        );
        assert_eq!(fit(i64::MAX, 1, true, 64, Overflow::Wrap), Some(i64::MIN));
        assert_eq!(fit(3, 0, false, 2, Overflow::Fail), Some(3));
    }

    #[test]
    fn counts_and_positions_honour_bit_ranges() {
        let bytes = [0xffu8, 0x00, 0x0f];
        assert_eq!(count_ones(&bytes, 0, 23), 12);
        assert_eq!(count_ones(&bytes, 4, 19), 4);
        assert_eq!(bit_range(-1, -1, 3, false), Some((16, 23)));
        assert_eq!(bit_range(-1, -2, 3, false), None);
        assert_eq!(find_bit(&bytes, 0, 23, false), Some(8));
        assert_eq!(find_bit(&bytes, 9, 23, true), Some(20));
        assert_eq!(find_bit(&[0xff], 0, 7, false), None);
    }
}
