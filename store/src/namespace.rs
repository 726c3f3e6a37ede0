//! Logical databases (SELECT 0..15) inside one keyspace. A standalone node keeps every
//! database in the same store, each key under a *physical* name: a key of database 0 is
//! itself, a key of database `n` is `MAGIC ‖ n ‖ key`. A key of database 0 that happens to
//! start with `MAGIC` is escaped as `MAGIC ‖ 0 ‖ key`, so the mapping is one-to-one and
//! any binary key works in any database. Persistence, replication, TTL, eviction and
//! WATCH need no notion of databases at all: they see physical keys. Commands translate
//! at the edge (the server rewrites key arguments, and key names in replies go back
//! through [`split`]).
//!
//! Database 0 costs nothing: its keys are stored as typed, and telling its keys from the
//! others is a two-byte compare.

use std::borrow::Cow;

/// The first bytes of a physical key outside database 0 (or of an escaped one inside it).
pub const MAGIC: [u8; 2] = [0xFF, 0xDB];

/// The physical name of `key` in database `db`.
pub fn physical(db: u8, key: &[u8]) -> Cow<'_, [u8]> {
    if db == 0 && !key.starts_with(&MAGIC) {
        return Cow::Borrowed(key);
    }
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + key.len());
    out.extend_from_slice(&MAGIC);
    out.push(db);
    out.extend_from_slice(key);
    Cow::Owned(out)
}

/// The database and the key a physical name stands for (the inverse of [`physical`]).
pub fn split(physical: &[u8]) -> (u8, &[u8]) {
    match physical.strip_prefix(&MAGIC) {
        Some([db, key @ ..]) => (*db, key),
        _ => (0, physical),
    }
}

/// The database a physical name belongs to.
pub fn database_of(physical: &[u8]) -> u8 {
    split(physical).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn database_zero_keys_are_themselves_unless_they_look_like_another_database() {
        assert_eq!(physical(0, b"user:1"), Cow::Borrowed(&b"user:1"[..]));
        assert_eq!(physical(3, b"user:1").as_ref(), b"\xff\xdb\x03user:1");
        assert_eq!(
            physical(0, b"\xff\xdb\x03x").as_ref(),
            b"\xff\xdb\x00\xff\xdb\x03x"
        );
        assert_eq!(split(b"\xff\xdb"), (0, &b"\xff\xdb"[..]));
        assert_eq!(database_of(b"\xff\xdb\x07"), 7);
    }

    proptest! {
        #[test]
        fn the_mapping_is_one_to_one(db in any::<u8>(), key in proptest::collection::vec(any::<u8>(), 0..6)) {
            let name = physical(db, &key);
            prop_assert_eq!(split(&name), (db, &key[..]));
        }
    }
}
