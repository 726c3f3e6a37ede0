//! The DUMP payload: a value's persisted encoding, then a format version (u16 LE) and a
//! CRC-32 (u32 LE) of everything before it. RESTORE accepts only a payload whose version
//! it knows and whose checksum matches, so a truncated, foreign or tampered payload is
//! refused rather than half-read.

use crate::value::Value;

/// The payload format this node writes and reads.
pub const DUMP_VERSION: u16 = 1;

/// A payload RESTORE refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ERR DUMP payload version or checksum are wrong")]
pub struct BadPayload;

/// The payload of `value`.
pub fn dump(value: &Value) -> Vec<u8> {
    let mut out = value.to_persisted();
    out.extend_from_slice(&DUMP_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The value in `payload`.
pub fn undump(payload: &[u8]) -> Result<Value, BadPayload> {
    let (rest, crc) = payload.split_last_chunk::<4>().ok_or(BadPayload)?;
    if crc32fast::hash(rest) != u32::from_le_bytes(*crc) {
        return Err(BadPayload);
    }
    let (body, version) = rest.split_last_chunk::<2>().ok_or(BadPayload)?;
    if u16::from_le_bytes(*version) != DUMP_VERSION {
        return Err(BadPayload);
    }
    Value::from_persisted(body).ok_or(BadPayload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::encode_fields;
    use crate::{ListValue, StreamId, StreamValue, ZSetValue};

    fn stream() -> StreamValue {
        let mut stream = StreamValue::new();
        stream.append(StreamId::new(5, 1), encode_fields([&b"f"[..], b"v"]));
        stream.append(StreamId::new(7, 0), encode_fields([&b"g"[..], b""]));
        stream.delete(StreamId::new(5, 1));
        stream.set_meta(StreamId::new(9, 9), 12, StreamId::new(5, 1));
        stream
    }

    #[test]
    fn payloads_round_trip_and_any_damage_is_refused() {
        let values = [
            Value::Str(b"hello".to_vec()),
            Value::List(Box::new(ListValue::from_items([&b"a"[..], b"b"]))),
            Value::ZSet(Box::new(ZSetValue::from_entries([(1.5, &b"m"[..])]))),
            Value::Stream(Box::new(stream())),
            Value::Stream(Box::default()),
        ];
        for value in values {
            let payload = dump(&value);
            assert_eq!(undump(&payload), Ok(value));
            assert_eq!(
                undump(&payload[..payload.len() - 1]),
                Err(BadPayload),
                "truncated"
            );
            for at in 0..payload.len() {
                let mut tampered = payload.clone();
                tampered[at] ^= 0x40;
                assert_eq!(undump(&tampered), Err(BadPayload), "byte {at} flipped");
            }
        }
        // Another version with a valid checksum is refused too.
        let mut other = Value::Str(b"x".to_vec()).to_persisted();
        other.extend_from_slice(&2u16.to_le_bytes());
        let crc = crc32fast::hash(&other);
        other.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(undump(&other), Err(BadPayload));
        assert_eq!(undump(b""), Err(BadPayload));
    }
}
