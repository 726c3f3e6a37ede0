//! Key → slot, exactly as Redis Cluster computes it, so every cluster client library
//! agrees with the server about where a key lives. It lives in the store because the
//! store shards its keyspace by slot range and stamps every change record with its slot.

/// The number of hash slots.
pub const SLOT_COUNT: u16 = 16384;

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster uses.
pub fn crc16(data: &[u8]) -> u16 {
    static TABLE: [u16; 256] = build_table();
    data.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ TABLE[usize::from(((crc >> 8) as u8) ^ byte)]
    })
}

const fn build_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// The part of a key that is hashed: the text inside the first `{…}` when it is not
/// empty, otherwise the whole key (Redis's hash tag rule).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot of a key.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOT_COUNT - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        // The standard check value of CRC-16/XMODEM, also quoted in Redis's cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values printed by `redis-cli CLUSTER KEYSLOT` against Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b"{user1000}.following"), 3443);
        assert_eq!(key_slot(b"key:000000000000"), 13053);
        assert_eq!(key_slot(b"a"), 15495);
        assert_eq!(key_slot(b"abc"), 7638);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{}x"), 10595);
    }

    #[test]
    fn hash_tags_follow_the_first_non_empty_braces() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // The first `{` and the first `}` after it decide; an empty tag hashes the key.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"no}tag{"), b"no}tag{");
    }
}
