//! Stored values and their memory cost. Sizes are kept incrementally so accounting is
//! O(1) per write, whatever the value's size.

use indexmap::IndexMap;

/// A value in the keyspace.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A binary-safe string.
    Str(Vec<u8>),
    /// A hash of fields to values.
    Hash(Box<HashValue>),
}

impl Value {
    /// Redis's name for the type, as `TYPE` answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
        }
    }

    /// Redis's encoding name, as `OBJECT ENCODING` answers.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) if s.len() <= 20 && ringkv_int(s) => "int",
            Value::Str(s) if s.len() <= 44 => "embstr",
            Value::Str(_) => "raw",
            Value::Hash(h) if h.len() <= 128 && h.max_item_len <= 64 => "listpack",
            Value::Hash(_) => "hashtable",
        }
    }

    /// Estimated heap bytes held by the value (allocator rounding included).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::Str(s) => alloc_size(s.capacity()),
            Value::Hash(h) => alloc_size(std::mem::size_of::<HashValue>()) + h.bytes,
        }
    }
}

fn ringkv_int(s: &[u8]) -> bool {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits[0] != b'0')
        && !(neg && digits == b"0")
        && std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some()
}

/// The bytes an allocation of `n` bytes really takes (glibc malloc: 16-byte chunks with an
/// 8-byte header, 32 bytes at least).
pub fn alloc_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// Bytes one hash field costs besides its name and value allocations.
const FIELD_OVERHEAD: usize = 8 + 2 * std::mem::size_of::<Box<[u8]>>() + 10;

/// A hash value: fields in an index map (O(1) random access for HRANDFIELD) with its
/// memory cost kept up to date.
#[derive(Debug, Clone, Default)]
pub struct HashValue {
    fields: IndexMap<Box<[u8]>, Box<[u8]>, foldhash::fast::RandomState>,
    bytes: usize,
    max_item_len: usize,
}

impl PartialEq for HashValue {
    fn eq(&self, other: &Self) -> bool {
        self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .all(|(k, v)| other.fields.get(k) == Some(v))
    }
}

impl HashValue {
    /// An empty hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the hash has no field (such a hash is never stored).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The value of a field.
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.fields.get(field).map(|v| &**v)
    }

    /// Sets a field; true when the field is new.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        self.max_item_len = self.max_item_len.max(field.len()).max(value.len());
        match self.fields.get_mut(field) {
            Some(old) => {
                self.bytes = self.bytes - alloc_size(old.len()) + alloc_size(value.len());
                *old = value.into();
                false
            }
            None => {
                self.bytes += FIELD_OVERHEAD + alloc_size(field.len()) + alloc_size(value.len());
                self.fields.insert(field.into(), value.into());
                true
            }
        }
    }

    /// Removes a field; true when it existed.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self.fields.swap_remove(field) {
            Some(old) => {
                self.bytes -= FIELD_OVERHEAD + alloc_size(field.len()) + alloc_size(old.len());
                true
            }
            None => false,
        }
    }

    /// Fields and values in storage order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The field/value pair at a storage index (for random sampling).
    pub fn get_index(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.fields.get_index(index).map(|(k, v)| (&**k, &**v))
    }

    /// A hash of `field` that stays fixed for this hash's lifetime (orders HSCAN).
    pub fn scan_hash(&self, field: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.fields.hasher().hash_one(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_accounting_returns_to_zero_when_emptied() {
        let mut h = HashValue::new();
        h.insert(b"a", b"1");
        h.insert(b"b", &[7u8; 100]);
        h.insert(b"a", &[1u8; 50]);
        assert!(h.bytes > 0);
        assert!(h.remove(b"a"));
        assert!(h.remove(b"b"));
        assert!(!h.remove(b"b"));
        assert_eq!(h.bytes, 0);
    }

    #[test]
    fn encodings_follow_redis_thresholds() {
        assert_eq!(Value::Str(b"12345".to_vec()).encoding(), "int");
        assert_eq!(Value::Str(b"012".to_vec()).encoding(), "embstr");
        assert_eq!(Value::Str(vec![b'x'; 44]).encoding(), "embstr");
        assert_eq!(Value::Str(vec![b'x'; 45]).encoding(), "raw");
        let mut h = HashValue::new();
        h.insert(b"f", b"v");
        assert_eq!(Value::Hash(Box::new(h.clone())).encoding(), "listpack");
        h.insert(b"g", &[0u8; 65]);
        assert_eq!(Value::Hash(Box::new(h)).encoding(), "hashtable");
    }
}
