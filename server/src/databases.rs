//! Logical databases of a standalone node: SELECT, MOVE, SWAPDB, FLUSHDB per database.
//! Every database lives in the one store under physical key names
//! ([`ringkv_store::namespace`]), so persistence, TTL, eviction and WATCH cover them
//! unchanged. A command's key arguments are renamed into the connection's database just
//! before its handler runs, and key names in replies go back through
//! [`ringkv_store::Store::logical_key`].
//!
//! SWAPDB swaps which physical namespace two databases name: O(1) whatever they hold, as in
//! Redis. The map is itself a key of the store (in a namespace no database names), so the
//! WAL and the base image carry a swap across restarts like any write.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};

use ringkv_protocol::{Args, CommandFlags, CommandSpec, OwnedArgs};
use ringkv_store::namespace::{self, MAGIC};
use ringkv_store::{Store, Value};

/// The namespace that holds the map, which no database names (`databases` ≤ 255).
const RESERVED: u8 = 255;

/// The map's key: `MAGIC ‖ 255 ‖ name`.
fn map_key() -> Vec<u8> {
    namespace::physical(RESERVED, b"ringkv:databases").into_owned()
}

/// The logical databases and the physical namespace each one names.
#[derive(Debug)]
pub struct Databases {
    /// False on a cluster member: one database, keys stored as typed.
    enabled: bool,
    /// Logical database → physical namespace.
    physical: Box<[AtomicU8]>,
    /// True while some database names another namespace than its own number.
    swapped: AtomicBool,
}

impl Databases {
    /// `count` databases; `enabled` only on a standalone node.
    pub fn new(count: u16, enabled: bool) -> Databases {
        let count = if enabled { count.clamp(1, 255) } else { 1 };
        Databases {
            enabled,
            physical: (0..count).map(|db| AtomicU8::new(db as u8)).collect(),
            swapped: AtomicBool::new(false),
        }
    }

    /// True when this node has more than database 0's namespace to keep apart.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How many databases there are.
    pub fn count(&self) -> usize {
        self.physical.len()
    }

    /// The logical database `arg` names, if it is a valid index here.
    pub fn index(&self, db: i64) -> Option<u8> {
        (0..self.count() as i64).contains(&db).then_some(db as u8)
    }

    /// The physical namespace of logical database `db`.
    pub fn physical(&self, db: u8) -> u8 {
        if !self.swapped.load(Relaxed) {
            return db;
        }
        self.physical[usize::from(db)].load(Relaxed)
    }

    /// The logical database and key the stored key `physical` stands for.
    pub fn logical<'k>(&self, physical: &'k [u8]) -> (u8, &'k [u8]) {
        if !self.enabled {
            return (0, physical);
        }
        let (namespace, key) = namespace::split(physical);
        let db = (0..self.count())
            .map(|db| db as u8)
            .find(|&db| self.physical(db) == namespace)
            .unwrap_or(namespace);
        (db, key)
    }

    /// The stored name of `key` in logical database `db`.
    pub fn key<'k>(&self, db: u8, key: &'k [u8]) -> Cow<'k, [u8]> {
        if !self.enabled {
            return Cow::Borrowed(key);
        }
        namespace::physical(self.physical(db), key)
    }

    /// True when the stored key `physical` belongs to logical database `db`.
    pub fn holds(&self, db: u8, physical: &[u8]) -> bool {
        !self.enabled || namespace::database_of(physical) == self.physical(db)
    }

    /// `args` with its key arguments renamed into logical database `db`; `None` when every
    /// key is stored as typed (database 0 unswapped, no key that needs escaping).
    pub fn rename_keys(&self, db: u8, spec: &CommandSpec, args: &Args<'_>) -> Option<OwnedArgs> {
        if !self.enabled
            || spec.flags.contains(CommandFlags::KEYS_FOR_SCRIPT)
            || spec.flags.contains(CommandFlags::CHANNELS)
        {
            return None;
        }
        let physical = self.physical(db);
        // The common case, database 0 unswapped, is checked without allocating.
        if physical == 0 && !spec.keys.of(args).any(|i| args.get(i).starts_with(&MAGIC)) {
            return None;
        }
        let positions: Vec<usize> = spec.keys.of(args).collect();
        if positions.is_empty() {
            return None;
        }
        Some(rebuilt(args, &positions, physical))
    }

    /// Swaps two logical databases (SWAPDB), and records the map in the store so a restart
    /// keeps it. Call under the store's exclusive gate. WATCHes on either database end, as
    /// after a write to them.
    pub fn swap(&self, store: &Store, a: u8, b: u8, now: u64) {
        let (pa, pb) = (self.physical(a), self.physical(b));
        self.physical[usize::from(a)].store(pb, Relaxed);
        self.physical[usize::from(b)].store(pa, Relaxed);
        let map: Vec<u8> = self.physical.iter().map(|p| p.load(Relaxed)).collect();
        let identity = map.iter().enumerate().all(|(i, &p)| usize::from(p) == i);
        self.swapped.store(!identity, Relaxed);
        store.write(&map_key(), now, |slot| {
            if identity {
                slot.remove();
            } else {
                slot.set(Value::Str(map), None);
            }
        });
        store.touch_watched_where(|key| {
            let of = namespace::database_of(key);
            of == pa || of == pb
        });
    }

    /// Back to every database naming its own namespace (FLUSHALL emptied them all, and the
    /// map's key with them).
    pub fn reset(&self) {
        for (db, physical) in self.physical.iter().enumerate() {
            physical.store(db as u8, Relaxed);
        }
        self.swapped.store(false, Relaxed);
    }

    /// Reads the map a SWAPDB left in the store (after recovery). A map for another
    /// number of databases is kept where it still names a permutation of ours.
    pub fn load(&self, store: &Store, now: u64) {
        if !self.enabled {
            return;
        }
        let map = store.read(&map_key(), now, |value| match value {
            Some(Value::Str(map)) => Some(map.clone()),
            _ => None,
        });
        let Some(map) = map else {
            return;
        };
        let count = self.count();
        let mut seen = vec![false; 256];
        let valid = map.len() == count
            && map
                .iter()
                .all(|&p| p != RESERVED && !std::mem::replace(&mut seen[usize::from(p)], true));
        if !valid {
            tracing::warn!(
                databases = count,
                stored = map.len(),
                "the stored SWAPDB map does not fit this node's databases; ignoring it"
            );
            return;
        }
        for (db, &p) in map.iter().enumerate() {
            self.physical[db].store(p, Relaxed);
        }
        self.swapped.store(true, Relaxed);
    }
}

/// `args` with the arguments at `positions` renamed into namespace `physical`.
fn rebuilt(args: &Args<'_>, positions: &[usize], physical: u8) -> OwnedArgs {
    let renamed: Vec<Cow<'_, [u8]>> = (0..args.len())
        .map(|i| {
            if positions.contains(&i) {
                namespace::physical(physical, args.get(i))
            } else {
                Cow::Borrowed(args.get(i))
            }
        })
        .collect();
    OwnedArgs::new(renamed.iter().map(|a| a.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_renamed_only_where_they_must_be() {
        let dbs = Databases::new(16, true);
        let spec = ringkv_protocol::COMMANDS
            .iter()
            .find(|c| c.name == "mset")
            .expect("mset");
        let owned = OwnedArgs::new([&b"MSET"[..], b"a", b"1", b"b", b"2"]);
        let args = owned.args();
        assert!(dbs.rename_keys(0, spec, &args).is_none());
        let renamed = dbs.rename_keys(3, spec, &args).expect("renamed");
        let renamed: Vec<&[u8]> = renamed.args().iter().collect();
        assert_eq!(
            renamed,
            [&b"MSET"[..], b"\xff\xdb\x03a", b"1", b"\xff\xdb\x03b", b"2"]
        );
        let odd = OwnedArgs::new([&b"MSET"[..], b"\xff\xdbx", b"1"]);
        assert!(dbs.rename_keys(0, spec, &odd.args()).is_some());
        let store = Store::builder().namespaced(true).build();
        dbs.swap(&store, 0, 3, 0);
        assert_eq!(dbs.physical(0), 3);
        assert!(dbs.rename_keys(0, spec, &args).is_some());
        let reloaded = Databases::new(16, true);
        reloaded.load(&store, 0);
        assert_eq!((reloaded.physical(0), reloaded.physical(3)), (3, 0));
        dbs.swap(&store, 3, 0, 0);
        let identity = Databases::new(16, true);
        identity.load(&store, 0);
        assert_eq!(identity.physical(0), 0, "a swap undone leaves no map");
        assert!(
            Databases::new(16, false)
                .rename_keys(3, spec, &args)
                .is_none()
        );
    }
}
