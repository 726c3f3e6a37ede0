//! A stored key's bytes: short keys (most keys: `user:1234`, `session:…`) live inline in
//! the map's bucket, so a look-up compares them without another cache miss and they cost
//! no allocation of their own; longer ones are boxed.

/// Keys up to this many bytes are kept inline.
pub const INLINE_MAX: usize = 22;

/// The bytes of one key.
#[derive(Clone)]
pub enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE_MAX] },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<KeyBytes>() == 24);

impl KeyBytes {
    /// The key's heap allocation in bytes (0 inline), for memory accounting.
    pub fn heap_len(key_len: usize) -> usize {
        if key_len <= INLINE_MAX { 0 } else { key_len }
    }

    /// The bytes boxed (an allocation for an inline key).
    pub fn into_box(self) -> Box<[u8]> {
        match self {
            KeyBytes::Inline { .. } => Box::from(&*self),
            KeyBytes::Heap(boxed) => boxed,
        }
    }
}

impl From<&[u8]> for KeyBytes {
    fn from(key: &[u8]) -> Self {
        if key.len() <= INLINE_MAX {
            let mut bytes = [0; INLINE_MAX];
            bytes[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Heap(key.into())
        }
    }
}

impl std::ops::Deref for KeyBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..*len as usize],
            KeyBytes::Heap(boxed) => boxed,
        }
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_every_length_read_back_and_only_long_ones_are_boxed() {
        for len in [0, 1, 10, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1, 100] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let stored = KeyBytes::from(&key[..]);
            assert_eq!(&*stored, &key[..]);
            assert_eq!(matches!(stored, KeyBytes::Heap(_)), len > INLINE_MAX);
            assert_eq!(&*stored.clone().into_box(), &key[..]);
        }
    }
}
