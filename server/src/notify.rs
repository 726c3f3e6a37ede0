//! Keyspace notifications (`notify-keyspace-events`): a change to a key is published on
//! `__keyspace@<db>__:<key>` (the event as the message) and `__keyevent@<db>__:<event>`
//! (the key as the message), on the member that holds the key, as Redis does. Handlers
//! name their events (`Ctx::notify`); expiry and eviction come from the store. With no
//! class enabled (the default) a notification costs one atomic load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::pubsub::PubSub;

/// One class of events, as a bit of the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class(u32);

impl Class {
    /// `K`: publish on `__keyspace@…`.
    pub const KEYSPACE: Class = Class(1);
    /// `E`: publish on `__keyevent@…`.
    pub const KEYEVENT: Class = Class(1 << 1);
    /// `g`: DEL, EXPIRE, RENAME, …
    pub const GENERIC: Class = Class(1 << 2);
    /// `$`: string commands.
    pub const STRING: Class = Class(1 << 3);
    /// `l`: list commands.
    pub const LIST: Class = Class(1 << 4);
    /// `s`: set commands.
    pub const SET: Class = Class(1 << 5);
    /// `h`: hash commands.
    pub const HASH: Class = Class(1 << 6);
    /// `z`: sorted-set commands.
    pub const ZSET: Class = Class(1 << 7);
    /// `x`: a key expired.
    pub const EXPIRED: Class = Class(1 << 8);
    /// `e`: a key was evicted.
    pub const EVICTED: Class = Class(1 << 9);
    /// `t`: stream commands.
    pub const STREAM: Class = Class(1 << 10);
    /// `m`: a key was read and missing.
    pub const KEY_MISS: Class = Class(1 << 11);
    /// `d`: module events (none here; kept so the flags read back as Redis's).
    pub const MODULE: Class = Class(1 << 12);
    /// `n`: a key was created.
    pub const NEW: Class = Class(1 << 13);
}

/// `A`: every class but `m` and `n`.
const ALL: u32 = Class::GENERIC.0
    | Class::STRING.0
    | Class::LIST.0
    | Class::SET.0
    | Class::HASH.0
    | Class::ZSET.0
    | Class::EXPIRED.0
    | Class::EVICTED.0
    | Class::STREAM.0
    | Class::MODULE.0;

/// The characters of the classes that `A` covers, in the order Redis prints them.
const CLASS_CHARS: [(char, Class); 11] = [
    ('g', Class::GENERIC),
    ('$', Class::STRING),
    ('l', Class::LIST),
    ('s', Class::SET),
    ('h', Class::HASH),
    ('z', Class::ZSET),
    ('x', Class::EXPIRED),
    ('e', Class::EVICTED),
    ('t', Class::STREAM),
    ('d', Class::MODULE),
    ('n', Class::NEW),
];

/// Parses Redis's flag characters; Redis's reason when one is unknown.
pub fn parse_flags(text: &str) -> Result<u32, String> {
    let mut flags = 0;
    for c in text.chars() {
        flags |= match c {
            'A' => ALL,
            'K' => Class::KEYSPACE.0,
            'E' => Class::KEYEVENT.0,
            'm' => Class::KEY_MISS.0,
            other => match CLASS_CHARS.iter().find(|(ch, _)| *ch == other) {
                Some((_, class)) => class.0,
                None => {
                    return Err("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".to_string());
                }
            },
        };
    }
    Ok(flags)
}

/// The flags as Redis prints them (CONFIG GET).
pub fn flags_text(flags: u32) -> String {
    let mut text = String::new();
    if flags & ALL == ALL {
        text.push('A');
    } else {
        for (c, class) in CLASS_CHARS {
            if flags & class.0 != 0 {
                text.push(c);
            }
        }
    }
    for (c, class) in [
        ('K', Class::KEYSPACE),
        ('E', Class::KEYEVENT),
        ('m', Class::KEY_MISS),
    ] {
        if flags & class.0 != 0 {
            text.push(c);
        }
    }
    text
}

/// True when `flags` publish events of `class`.
pub fn wants(flags: u32, class: Class) -> bool {
    flags & class.0 != 0 && flags & (Class::KEYSPACE.0 | Class::KEYEVENT.0) != 0
}

/// The node's notification settings.
#[derive(Debug, Default)]
pub struct Notifier {
    flags: Arc<AtomicU32>,
}

impl Notifier {
    /// Sets the flags (CONFIG SET notify-keyspace-events).
    pub fn set_flags(&self, flags: u32) {
        self.flags.store(flags, Relaxed);
    }

    /// True when events of `class` are published.
    pub fn wants(&self, class: Class) -> bool {
        wants(self.flags.load(Relaxed), class)
    }

    /// The flags, shared (the store's hook reads them without reaching the node).
    pub fn shared_flags(&self) -> Arc<AtomicU32> {
        self.flags.clone()
    }

    /// Publishes `event` on `key` of database `db`, if its class is enabled.
    pub fn emit(&self, pubsub: &PubSub, class: Class, event: &str, db: u8, key: &[u8]) {
        let flags = self.flags.load(Relaxed);
        if flags & class.0 == 0 {
            return;
        }
        if flags & Class::KEYSPACE.0 != 0 {
            let mut channel = format!("__keyspace@{db}__:").into_bytes();
            channel.extend_from_slice(key);
            pubsub.publish(&channel, event.as_bytes());
        }
        if flags & Class::KEYEVENT.0 != 0 {
            let channel = format!("__keyevent@{db}__:{event}");
            pubsub.publish(channel.as_bytes(), key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_back_as_redis_prints_them() {
        for (given, shown) in [
            ("KEA", "AKE"),
            ("gxE", "gxE"),
            ("Elg", "glE"),
            ("KA", "AK"),
            ("mE", "Em"),
            ("AKEnm", "AKEm"),
            ("nK", "nK"),
            ("", ""),
        ] {
            assert_eq!(flags_text(parse_flags(given).unwrap()), shown, "{given}");
        }
        assert_eq!(
            parse_flags("Kq").unwrap_err(),
            "Invalid event class character. Use 'Ag$lshzxeKEtmdn'."
        );
    }

    #[test]
    fn nothing_is_wanted_without_k_or_e() {
        let notifier = Notifier::default();
        notifier.set_flags(parse_flags("g").unwrap());
        assert!(!notifier.wants(Class::GENERIC));
        notifier.set_flags(parse_flags("gE").unwrap());
        assert!(notifier.wants(Class::GENERIC));
        assert!(!notifier.wants(Class::STRING));
    }
}
