//! The store against a naive model, and eviction and expiry invariants.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::change_log::{ChangeLog, LogLimits};
use crate::stream::encode_fields;
use crate::{
    EvictionPolicy, HashValue, ListValue, SetValue, Store, StreamId, StreamValue, Trim, TrimBy,
    Value, ZSetValue,
};

fn s(v: &[u8]) -> Value {
    Value::Str(v.to_vec())
}

#[derive(Debug, Clone)]
enum Op {
    Set {
        key: u8,
        len: usize,
        ttl: Option<u64>,
    },
    Append {
        key: u8,
        len: usize,
    },
    HashSet {
        key: u8,
        field: u8,
    },
    HashDel {
        key: u8,
        field: u8,
    },
    ListPush {
        key: u8,
        front: bool,
        count: u8,
    },
    ListPop {
        key: u8,
        front: bool,
        count: u8,
    },
    /// LSET (0), LINSERT (1), LREM (2) or LTRIM (3) with two small numbers.
    ListEdit {
        key: u8,
        kind: u8,
        a: i8,
        b: i8,
    },
    /// SADD (`add`) or SREM of members numbered from `first` on.
    SetChange {
        key: u8,
        add: bool,
        first: u8,
        count: u8,
    },
    /// ZADD of members numbered from `first` with `score` (`add`), or ZREM of them, or
    /// (`pop`) ZPOPMIN of `count`.
    ZSetChange {
        key: u8,
        add: bool,
        pop: bool,
        first: u8,
        count: u8,
        score: i8,
    },
    /// XADD of one entry (`kind` 0), XADD with a MAXLEN `n % 4` trim, exact or not (1),
    /// XDEL of the first entry (2) or XSETID past the last id (3).
    StreamChange {
        key: u8,
        kind: u8,
        n: u8,
    },
    Get {
        key: u8,
    },
    Del {
        key: u8,
    },
    Expire {
        key: u8,
        ttl: u64,
    },
    Persist {
        key: u8,
    },
    Advance {
        ms: u64,
    },
    Sweep,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u8..12;
    prop_oneof![
        (key.clone(), 0usize..300, proptest::option::of(1u64..200))
            .prop_map(|(key, len, ttl)| Op::Set { key, len, ttl }),
        (key.clone(), 0usize..100).prop_map(|(key, len)| Op::Append { key, len }),
        (key.clone(), 0u8..4).prop_map(|(key, field)| Op::HashSet { key, field }),
        (key.clone(), 0u8..4).prop_map(|(key, field)| Op::HashDel { key, field }),
        (key.clone(), any::<bool>(), 1u8..5).prop_map(|(key, front, count)| Op::ListPush {
            key,
            front,
            count
        }),
        (key.clone(), any::<bool>(), 0u8..4).prop_map(|(key, front, count)| Op::ListPop {
            key,
            front,
            count
        }),
        (key.clone(), 0u8..4, -4i8..5, -4i8..5).prop_map(|(key, kind, a, b)| Op::ListEdit {
            key,
            kind,
            a,
            b
        }),
        (key.clone(), any::<bool>(), 0u8..6, 1u8..4).prop_map(|(key, add, first, count)| {
            Op::SetChange {
                key,
                add,
                first,
                count,
            }
        }),
        (key.clone(), 0u8..3, 0u8..6, 1u8..4, -3i8..4).prop_map(
            |(key, kind, first, count, score)| Op::ZSetChange {
                key,
                add: kind == 0,
                pop: kind == 2,
                first,
                count,
                score,
            }
        ),
        (key.clone(), 0u8..4, any::<u8>()).prop_map(|(key, kind, n)| Op::StreamChange {
            key,
            kind,
            n
        }),
        key.clone().prop_map(|key| Op::Get { key }),
        key.clone().prop_map(|key| Op::Del { key }),
        (key.clone(), 1u64..200).prop_map(|(key, ttl)| Op::Expire { key, ttl }),
        key.prop_map(|key| Op::Persist { key }),
        (0u64..150).prop_map(|ms| Op::Advance { ms }),
        Just(Op::Sweep),
    ]
}

/// The model: key → (value, deadline or 0).
type Model = BTreeMap<Vec<u8>, (Value, u64)>;

fn live(model: &Model, key: &[u8], now: u64) -> Option<Value> {
    model
        .get(key)
        .filter(|(_, at)| *at == 0 || *at > now)
        .map(|(v, _)| v.clone())
}

/// The model's list at `key` (empty when absent); `Err` when it holds another type.
fn model_list(model: &Model, key: u8, now: u64) -> Result<Vec<Vec<u8>>, ()> {
    match live(model, &[key], now) {
        None => Ok(Vec::new()),
        Some(Value::List(l)) => Ok(l.iter().map(<[u8]>::to_vec).collect()),
        Some(_) => Err(()),
    }
}

/// Stores `list` in the model, keeping the deadline; an empty list is no key, as in Redis.
fn put_list(model: &mut Model, key: u8, list: Vec<Vec<u8>>, now: u64) {
    if list.is_empty() {
        model.remove(&vec![key]);
        return;
    }
    let deadline = model.get(&vec![key]).map_or(0, |(_, at)| *at);
    let deadline = if deadline != 0 && deadline <= now {
        0
    } else {
        deadline
    };
    let value = Value::List(Box::new(ListValue::from_items(
        list.iter().map(Vec::as_slice),
    )));
    model.insert(vec![key], (value, deadline));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_store_behaves_like_a_map_with_deadlines(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        let store = Store::builder().shards(4).seed(7).build();
        let log = std::sync::Arc::new(ChangeLog::new(1, LogLimits::default()));
        let mut cursor = log.subscribe(1, true).unwrap();
        store.attach_change_log(log.clone());
        let mut model = Model::new();
        let mut now = 1_000_000u64;
        for op in ops {
            match op {
                Op::Set { key, len, ttl } => {
                    let value = s(&vec![key; len]);
                    let at = ttl.map_or(0, |t| now + t);
                    store.write(&[key], now, |slot| slot.set(value.clone(), Some(at)));
                    model.insert(vec![key], (value, at));
                }
                Op::Append { key, len } => {
                    let suffix = vec![b'+'; len];
                    let applied = store.write(&[key], now, |slot| slot.append(&suffix).is_ok());
                    match live(&model, &[key], now) {
                        None => {
                            model.insert(vec![key], (s(&suffix), 0));
                            prop_assert!(applied);
                        }
                        Some(Value::Str(_)) => {
                            if let Some((Value::Str(v), _)) = model.get_mut(&vec![key]) {
                                v.extend_from_slice(&suffix);
                            }
                            prop_assert!(applied);
                        }
                        Some(_) => prop_assert!(!applied),
                    }
                }
                Op::HashSet { key, field } => {
                    let ok = store.write(&[key], now, |slot| slot.hash_insert(&[field], b"x").is_ok());
                    match live(&model, &[key], now) {
                        None => {
                            let mut h = HashValue::new();
                            h.insert(&[field], b"x");
                            model.insert(vec![key], (Value::Hash(Box::new(h)), 0));
                            prop_assert!(ok);
                        }
                        Some(Value::Hash(_)) => {
                            if let Some((Value::Hash(h), _)) = model.get_mut(&vec![key]) { h.insert(&[field], b"x"); }
                            prop_assert!(ok);
                        }
                        Some(_) => prop_assert!(!ok),
                    }
                }
                Op::HashDel { key, field } => {
                    store.write(&[key], now, |slot| slot.hash_remove(&[field]).ok());
                    if let Some(Value::Hash(_)) = live(&model, &[key], now) {
                        let (Value::Hash(h), _) = model.get_mut(&vec![key]).unwrap() else { unreachable!() };
                        h.remove(&[field]);
                        // Redis never keeps an empty hash; neither may the store.
                        if h.is_empty() { model.remove(&vec![key]); }
                    }
                }
                Op::ListPush { key, front, count } => {
                    let items: Vec<Vec<u8>> = (0..count).map(|i| vec![b'a' + (i + key) % 3]).collect();
                    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
                    let ok = store.write(&[key], now, |slot| slot.list_push(front, &refs).is_ok());
                    match model_list(&model, key, now) {
                        Ok(mut list) => {
                            prop_assert!(ok);
                            for item in items {
                                if front { list.insert(0, item) } else { list.push(item) }
                            }
                            put_list(&mut model, key, list, now);
                        }
                        Err(()) => prop_assert!(!ok),
                    }
                }
                Op::ListPop { key, front, count } => {
                    let popped = store.write(&[key], now, |slot| slot.list_pop(front, count as usize).ok());
                    if let Ok(mut list) = model_list(&model, key, now) {
                        let take = (count as usize).min(list.len());
                        let expect: Vec<Vec<u8>> = if front {
                            list.drain(..take).collect()
                        } else {
                            let rest = list.split_off(list.len() - take);
                            rest.into_iter().rev().collect()
                        };
                        prop_assert_eq!(popped, Some(expect));
                        put_list(&mut model, key, list, now);
                    }
                }
                Op::ListEdit { key, kind, a, b } => {
                    let item = vec![b'a' + b.unsigned_abs() % 3];
                    let Ok(mut list) = model_list(&model, key, now) else { continue };
                    let len = list.len();
                    let at = (a.unsigned_abs() as usize).min(len);
                    store.write(&[key], now, |slot| match kind {
                        0 => { let _ = slot.list_set(at, &item); }
                        1 => { let _ = slot.list_insert(at, &item); }
                        2 => { let _ = slot.list_remove(a as i64, &item); }
                        _ => { let _ = slot.list_trim(at, b.unsigned_abs() as usize); }
                    });
                    match kind {
                        0 => if at < len { list[at] = item },
                        1 => if len > 0 { list.insert(at, item) },
                        2 => {
                            let limit = if a == 0 { usize::MAX } else { a.unsigned_abs() as usize };
                            let mut hits: Vec<usize> = (0..len).filter(|&i| list[i] == item).collect();
                            if a < 0 { hits.reverse(); }
                            hits.truncate(limit);
                            hits.sort_unstable();
                            for i in hits.into_iter().rev() { list.remove(i); }
                        }
                        _ => {
                            list.drain(..at);
                            let keep = list.len().saturating_sub(b.unsigned_abs() as usize);
                            list.truncate(keep);
                        }
                    }
                    put_list(&mut model, key, list, now);
                }
                Op::SetChange { key, add, first, count } => {
                    let members: Vec<Vec<u8>> = (first..first + count).map(|i| i.to_string().into_bytes()).collect();
                    let refs: Vec<&[u8]> = members.iter().map(Vec::as_slice).collect();
                    let changed = store.write(&[key], now, |slot| {
                        if add { slot.set_add(&refs) } else { slot.set_remove(&refs) }
                    });
                    let current = live(&model, &[key], now);
                    match current {
                        Some(Value::Set(mut set)) => {
                            let expect = refs.iter().filter(|m| if add { set.insert(m) } else { set.remove(m) }).count();
                            prop_assert_eq!(changed, Ok(expect));
                            if set.is_empty() {
                                model.remove(&vec![key]);
                            } else {
                                model.get_mut(&vec![key]).unwrap().0 = Value::Set(set);
                            }
                        }
                        None => {
                            prop_assert_eq!(changed, Ok(if add { refs.len() } else { 0 }));
                            if add {
                                model.insert(vec![key], (Value::Set(Box::new(SetValue::from_members(refs))), 0));
                            }
                        }
                        Some(_) => prop_assert!(changed.is_err()),
                    }
                }
                Op::ZSetChange { key, add, pop, first, count, score } => {
                    let members: Vec<Vec<u8>> = (first..first + count).map(|i| vec![b'm', i]).collect();
                    let refs: Vec<&[u8]> = members.iter().map(Vec::as_slice).collect();
                    let score = score as f64 / 2.0;
                    let entries: Vec<(f64, &[u8])> = refs.iter().map(|m| (score, *m)).collect();
                    let outcome = store.write(&[key], now, |slot| {
                        if pop {
                            slot.zset_take(0, count as usize, false).map(|taken| taken.len())
                        } else if add {
                            slot.zset_set(&entries)
                        } else {
                            slot.zset_remove(&refs)
                        }
                    });
                    let mut zset = match live(&model, &[key], now) {
                        Some(Value::ZSet(z)) => *z,
                        None => ZSetValue::new(),
                        Some(_) => {
                            prop_assert!(outcome.is_err());
                            continue;
                        }
                    };
                    let expect = if pop {
                        let take: Vec<Vec<u8>> = zset.range(0, count as usize, false).map(|(_, m)| m.to_vec()).collect();
                        for m in &take { zset.remove(m); }
                        take.len()
                    } else if add {
                        entries.iter().filter(|(s, m)| zset.insert(m, *s)).count()
                    } else {
                        refs.iter().filter(|m| zset.remove(m).is_some()).count()
                    };
                    prop_assert_eq!(outcome, Ok(expect));
                    if zset.is_empty() {
                        model.remove(&vec![key]);
                    } else {
                        let deadline = match model.get(&vec![key]) {
                            Some((Value::ZSet(_), at)) if *at == 0 || *at > now => *at,
                            _ => 0,
                        };
                        model.insert(vec![key], (Value::ZSet(Box::new(zset)), deadline));
                    }
                }
                Op::StreamChange { key, kind, n } => {
                    let (mut stream, deadline) = match model.get(&vec![key]) {
                        _ if live(&model, &[key], now).is_none() => (StreamValue::new(), 0),
                        Some((Value::Stream(st), at)) => ((**st).clone(), *at),
                        Some(_) => {
                            let outcome = store.write(&[key], now, |slot| slot.stream_add(Vec::new(), None));
                            prop_assert!(outcome.is_err());
                            continue;
                        }
                        None => unreachable!("live"),
                    };
                    let last = stream.last_id();
                    let outcome = match kind {
                        0 | 1 => {
                            let id = StreamId::new(last.ms + 1, 0);
                            let fields = encode_fields([&b"f"[..], &[n]]);
                            let trim = (kind == 1).then_some(Trim {
                                by: TrimBy::MaxLen(u64::from(n % 4)),
                                approx: n % 2 == 0,
                                limit: 0,
                            });
                            stream.append(id, fields.clone());
                            let expect = trim
                                .and_then(|t| stream.trim_bound(t))
                                .map_or(0, |b| stream.remove_through(b));
                            let got = store.write(&[key], now, |slot| slot.stream_add(vec![(id, fields)], trim));
                            prop_assert_eq!(got, Ok(expect));
                            true
                        }
                        2 => {
                            let first = stream.first().map_or(StreamId::new(1, 0), |(id, _)| id);
                            let expect = usize::from(stream.delete(first));
                            let got = store.write(&[key], now, |slot| slot.stream_delete(&[first]));
                            prop_assert_eq!(got, Ok(expect));
                            expect == 1
                        }
                        _ => {
                            let (id, added) = (StreamId::new(last.ms + 5, 0), stream.entries_added() + 1);
                            stream.set_meta(id, added, last);
                            let got = store.write(&[key], now, |slot| slot.stream_set_meta(id, added, last));
                            prop_assert_eq!(got, Ok(()));
                            true
                        }
                    };
                    if outcome {
                        model.insert(vec![key], (Value::Stream(Box::new(stream)), deadline));
                    }
                }
                Op::Get { key } => {
                    let got = store.read(&[key], now, |v| v.cloned());
                    prop_assert_eq!(got, live(&model, &[key], now));
                }
                Op::Del { key } => {
                    let removed = store.remove(&[key], now);
                    prop_assert_eq!(removed, live(&model, &[key], now).is_some());
                    model.remove(&vec![key]);
                }
                Op::Expire { key, ttl } => {
                    let set = store.write(&[key], now, |slot| slot.set_expires_at(Some(now + ttl)));
                    prop_assert_eq!(set, live(&model, &[key], now).is_some());
                    if set { model.get_mut(&vec![key]).unwrap().1 = now + ttl; }
                }
                Op::Persist { key } => {
                    store.write(&[key], now, |slot| slot.set_expires_at(None));
                    if live(&model, &[key], now).is_some() { model.get_mut(&vec![key]).unwrap().1 = 0; }
                }
                Op::Advance { ms } => now += ms,
                Op::Sweep => { store.active_expire(now, 1000); }
            }
            // Expired entries may linger until touched, never more than the model holds.
            prop_assert!(store.len() <= model.len());
        }
        // The change log is the whole truth: replaying it into an empty store yields the
        // same live keys, values and deadlines.
        let replayed = Store::builder().shards(4).seed(8).build();
        while let Some(chunk) = log.take(&mut cursor, std::time::Duration::ZERO).unwrap() {
            for record in chunk.records() {
                crate::replay::apply_record(&replayed, &record.unwrap(), now).unwrap();
            }
        }
        // Each slot's key list holds exactly that slot's keys, lingering expired ones too.
        let slots: std::collections::BTreeSet<u16> = (0u8..12).map(|k| crate::slot::key_slot(&[k])).collect();
        let mut listed_total = 0;
        for &slot in &slots {
            let listed = store.keys_in_slot(slot, 100);
            prop_assert_eq!(listed.len(), store.count_in_slot(slot));
            prop_assert!(listed.iter().all(|k| crate::slot::key_slot(k) == slot));
            listed_total += listed.len();
        }
        prop_assert_eq!(listed_total, store.len());
        for key in 0u8..12 {
            let expected = live(&model, &[key], now);
            prop_assert_eq!(replayed.read(&[key], now, |v| v.cloned()), expected.clone());
            let deadline = |store: &Store| store.inspect(&[key], now, |e| e.and_then(|e| e.expires_at));
            prop_assert_eq!(deadline(&replayed), deadline(&store));
            prop_assert_eq!(store.read(&[key], now, |v| v.cloned()), expected);
            store.remove(&[key], now);
        }
        store.active_expire(now + 1_000_000, 10_000);
        // Accounting returns exactly to zero once every key is gone.
        prop_assert_eq!(store.len(), 0);
        prop_assert!(slots.iter().all(|&slot| store.count_in_slot(slot) == 0));
        prop_assert_eq!(store.used_memory(), 0);
    }
}

fn fill(store: &Store, count: usize, now: u64, ttl: impl Fn(usize) -> u64) {
    for i in 0..count {
        let key = format!("key:{i}");
        store.write(key.as_bytes(), now, |slot| {
            slot.set(s(&[7u8; 100]), Some(ttl(i)))
        });
    }
}

#[test]
fn eviction_brings_memory_under_the_limit() {
    for policy in EvictionPolicy::ALL
        .into_iter()
        .filter(|p| *p != EvictionPolicy::NoEviction)
    {
        let store = Store::builder().seed(1).policy(policy).build();
        fill(&store, 2000, 1_000, |i| 10_000 + i as u64);
        let limit = store.used_memory() as u64 / 2;
        store.set_maxmemory(limit);
        assert!(store.ensure_memory(2_000).is_ok(), "{policy}");
        assert!(store.used_memory() as u64 <= limit, "{policy}");
        assert!(store.stats().evicted >= 900, "{policy}");
    }
}

#[test]
fn volatile_policies_never_evict_keys_without_a_ttl() {
    let store = Store::builder()
        .seed(2)
        .policy(EvictionPolicy::VolatileLru)
        .build();
    // Even keys persist, odd keys have a TTL.
    fill(
        &store,
        1000,
        1_000,
        |i| if i % 2 == 0 { 0 } else { 1_000_000 },
    );
    store.set_maxmemory(store.used_memory() as u64 * 3 / 4);
    assert!(store.ensure_memory(2_000).is_ok());
    for i in (0..1000).step_by(2) {
        assert!(
            store.contains(format!("key:{i}").as_bytes(), 2_000),
            "persistent key:{i} was evicted"
        );
    }
    // With only persistent keys left and memory still short, writes must be refused.
    store.set_maxmemory(1);
    assert_eq!(
        store.ensure_memory(2_000),
        Err(crate::StoreError::OutOfMemory)
    );
}

#[test]
fn lru_eviction_spares_recently_used_keys() {
    let store = Store::builder()
        .seed(3)
        .policy(EvictionPolicy::AllKeysLru)
        .build();
    fill(&store, 2000, 1_000, |_| 0);
    // The first 200 keys are read later than the rest were written.
    for i in 0..200 {
        store.read(format!("key:{i}").as_bytes(), 50_000, |_| ());
    }
    store.set_maxmemory(store.used_memory() as u64 / 2);
    assert!(store.ensure_memory(60_000).is_ok());
    let survivors = (0..200)
        .filter(|i| store.contains(format!("key:{i}").as_bytes(), 60_000))
        .count();
    assert!(
        survivors >= 190,
        "only {survivors} of 200 hot keys survived"
    );
}

#[test]
fn volatile_ttl_evicts_the_nearest_deadlines_first() {
    let store = Store::builder()
        .seed(4)
        .policy(EvictionPolicy::VolatileTtl)
        .build();
    fill(&store, 1000, 1_000, |i| 100_000 + i as u64 * 1000);
    store.set_maxmemory(store.used_memory() as u64 / 2);
    assert!(store.ensure_memory(2_000).is_ok());
    let late_survivors = (900..1000)
        .filter(|i| store.contains(format!("key:{i}").as_bytes(), 2_000))
        .count();
    assert!(late_survivors >= 95, "{late_survivors}");
}

#[test]
fn noeviction_refuses_instead_of_deleting() {
    let store = Store::builder().build();
    fill(&store, 100, 1_000, |_| 0);
    store.set_maxmemory(100);
    assert_eq!(
        store.ensure_memory(1_000),
        Err(crate::StoreError::OutOfMemory)
    );
    assert_eq!(store.len(), 100);
}

#[test]
fn watch_sees_writes_expiry_and_flush() {
    let store = Store::builder().build();
    store.write(b"k", 1_000, |slot| slot.set(s(b"v"), Some(5_000)));
    let ticket = store.watch(b"k", 1_000);
    assert!(store.watch_unchanged(&ticket, 2_000));
    assert!(
        !store.watch_unchanged(&ticket, 6_000),
        "expiry must count as a change"
    );
    let other = store.watch(b"other", 1_000);
    store.read(b"other", 1_000, |_| ());
    assert!(
        store.watch_unchanged(&other, 1_000),
        "a read is not a change"
    );
    store.flush();
    assert!(
        !store.watch_unchanged(&other, 1_000),
        "FLUSHALL touches every watched key"
    );
    store.unwatch(ticket);
    store.unwatch(other);
}

#[test]
fn active_expiry_work_per_call_is_bounded() {
    let store = Store::builder().shards(16).build();
    fill(&store, 10_000, 1_000, |_| 2_000);
    let report = store.active_expire(3_000, 1_000);
    assert!(report.examined <= 1_000 + 16 * 16, "{report:?}");
    assert!(report.expired > 0);
    let mut passes = 0;
    while !store.is_empty() && passes < 100 {
        store.active_expire(3_000, 1_000);
        passes += 1;
    }
    assert!(store.is_empty());
    assert_eq!(store.used_memory(), 0);
}

#[test]
fn scan_sees_every_stable_key_despite_churn() {
    let store = Store::builder().shards(8).build();
    fill(&store, 500, 1_000, |_| 0);
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0;
    let mut step = 0;
    loop {
        let churn = format!("churn:{step}");
        store.write(churn.as_bytes(), 1_000, |slot| slot.set(s(b"x"), Some(0)));
        store.remove(format!("churn:{}", step / 2).as_bytes(), 1_000);
        let (next, keys) = store.scan(cursor, 7, 1_000, |_, _| true);
        seen.extend(keys.into_iter().filter(|k| k.starts_with(b"key:")));
        step += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(step < 10_000);
    }
    assert_eq!(seen.len(), 500);
}

#[test]
fn every_slot_counts_and_lists_exactly_its_keys() {
    for shards in [1, 16, 256, 16384] {
        let store = Store::builder().shards(shards).build();
        let mut expected = vec![0usize; 16384];
        for i in 0..20_000u32 {
            let key = format!("key:{i:012}");
            expected[usize::from(crate::slot::key_slot(key.as_bytes()))] += 1;
            store.write(key.as_bytes(), 1, |slot| slot.set(s(b"v"), Some(0)));
        }
        // Deletions move other keys (swap-remove): the lists must follow.
        for i in (0..20_000u32).step_by(3) {
            let key = format!("key:{i:012}");
            expected[usize::from(crate::slot::key_slot(key.as_bytes()))] -= 1;
            assert!(store.remove(key.as_bytes(), 1));
        }
        for slot in 0..16384u16 {
            let want = expected[usize::from(slot)];
            assert_eq!(
                store.count_in_slot(slot),
                want,
                "slot {slot} of {shards} shards"
            );
            let listed = store.keys_in_slot(slot, usize::MAX);
            assert_eq!(listed.len(), want, "slot {slot} of {shards} shards");
            assert!(listed.iter().all(|k| crate::slot::key_slot(k) == slot));
        }
    }
}

#[test]
fn namespaced_keys_are_counted_per_database_through_every_change() {
    use crate::namespace::{database_of, physical};
    let store = Store::builder().shards(4).namespaced(true).build();
    let now = 1_000_000;
    let count = |db| {
        let c = store.database_len(db);
        (c.keys, c.volatile)
    };
    for db in 0u8..3 {
        for i in 0..10 {
            let key = physical(db, format!("k{i}").as_bytes()).into_owned();
            let ttl = (db == 2 && i % 2 == 0).then_some(now + 100);
            store.write(&key, now, |slot| slot.set(Value::Str(b"v".to_vec()), ttl));
        }
    }
    // A database-0 key that looks like another database's is escaped and stays in 0.
    let odd = physical(0, b"\xff\xdb\x01k0").into_owned();
    store.write(&odd, now, |slot| slot.set(Value::Str(b"v".to_vec()), None));
    assert_eq!(count(0), (11, 0));
    assert_eq!(count(1), (10, 0));
    assert_eq!(count(2), (10, 5));
    let key = physical(1, b"k3").into_owned();
    store.write(&key, now, |slot| slot.set_expires_at(Some(now + 50)));
    assert_eq!(count(1), (10, 1));
    store.write(&key, now, |slot| slot.set_expires_at(None));
    assert_eq!(count(1), (10, 0));
    assert_eq!(store.remove_where(|k| database_of(k) == 1), 10);
    assert_eq!(count(1), (0, 0));
    assert_eq!(count(0), (11, 0), "the escaped key is not database 1's");
    store.active_expire(now + 1_000, 1_000);
    assert_eq!(count(2), (5, 0));
    assert_eq!(store.logical_key(&physical(2, b"k1")), b"k1");
    drop(store.flush());
    assert_eq!((count(0), count(2)), ((0, 0), (0, 0)));
}

thread_local! {
    /// Runs between two pieces of a big value's snapshot copy, the shard unlocked.
    static BETWEEN_PIECES: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Called by [`Store::snapshot_window`] between the pieces of a big value.
pub(super) fn between_pieces() {
    BETWEEN_PIECES.with(|hook| {
        if let Some(hook) = hook.borrow_mut().as_mut() {
            hook();
        }
    });
}

/// Applies snapshot records to `store`.
fn apply_snapshot_records(store: &Store, mut records: &[u8]) {
    while !records.is_empty() {
        let (record, used) = crate::change_log::decode_record(records, 0).unwrap();
        records = &records[used..];
        crate::replay::apply_record(store, &record, 1_000).unwrap();
    }
}

/// A big value is copied into a snapshot window a piece at a time, its shard unlocked in
/// between: a write to it meanwhile means the copy no longer reflects the window's stamp,
/// so the window is refused (nothing appended) and taken again; whole, it never is.
#[test]
fn a_big_value_written_between_its_snapshot_pieces_makes_the_window_taken_again() {
    use crate::slot_set::SlotSet;
    use crate::snapshot::BIG_VALUE_BYTES;
    let store = std::sync::Arc::new(Store::builder().shards(1).build());
    let log = std::sync::Arc::new(ChangeLog::new(1, LogLimits::default()));
    store.attach_change_log(log.clone());
    store.write(b"big", 1_000, |w| {
        w.set(s(&vec![b'x'; 3 * BIG_VALUE_BYTES]), Some(0))
    });
    store.write(b"small", 1_000, |w| w.set(s(b"v"), Some(0)));
    let slots: SlotSet = (0..16384u16).collect();
    let every_hash = (0, u64::MAX);

    let writer = store.clone();
    BETWEEN_PIECES.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move || {
            writer.write(b"big", 1_000, |w| {
                let _ = w.append(b"!");
            });
        }))
    });
    let mut out = Vec::new();
    assert_eq!(
        store.snapshot_window(0, every_hash, &slots, 1_000, &mut out, true),
        None
    );
    assert!(out.is_empty(), "a refused window appends nothing");
    // Copied whole under the lock, the window is taken whatever writers do.
    let (stamp, keys) = store
        .snapshot_window(0, every_hash, &slots, 1_000, &mut out, false)
        .expect("a whole copy is never refused");
    assert_eq!((stamp, keys), (log.last_lsn(), 2));
    let whole = std::mem::take(&mut out);
    BETWEEN_PIECES.with(|hook| *hook.borrow_mut() = None);

    // Unwritten meanwhile, the pieces rebuild the value as it was at the stamp.
    let (stamp, keys) = store
        .snapshot_window(0, every_hash, &slots, 1_000, &mut out, true)
        .expect("nobody wrote");
    assert_eq!((stamp, keys), (log.last_lsn(), 2));
    for records in [&out, &whole] {
        let copy = Store::builder().shards(1).build();
        apply_snapshot_records(&copy, records);
        let big = copy.read(b"big", 1_000, |v| v.cloned());
        let expected = store.read(b"big", 1_000, |v| v.cloned());
        assert!(big == expected, "the big value differs");
        assert_eq!(copy.read(b"small", 1_000, |v| v.cloned()), Some(s(b"v")));
    }
    // Watching it left nothing behind.
    assert_eq!(store.shards[0].lock().watched.len(), 0);

    // The pieces start with the value's first bytes and a hint of its whole size: the
    // receiver makes room once instead of doubling it under its lock as appends arrive.
    let receiver = Store::builder().shards(1).build();
    let mut records = &out[..];
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let (record, used) = crate::change_log::decode_record(records, 0).unwrap();
        records = &records[used..];
        if record.key == b"big" {
            kinds.push(record.kind);
            crate::replay::apply_record(&receiver, &record, 1_000).unwrap();
        }
    }
    assert_eq!(
        kinds,
        [
            crate::change_log::RecordKind::SetPersistent,
            crate::change_log::RecordKind::Reserve
        ]
    );
    let capacity = receiver.read(b"big", 1_000, |v| match v {
        Some(Value::Str(bytes)) => bytes.capacity(),
        _ => 0,
    });
    assert!(capacity > 3 * BIG_VALUE_BYTES, "room for {capacity} bytes");
}

/// A Reserve record from a peer is a hint, never a way to break the node: a short one or
/// one past any value is refused as malformed, one past what a value may hold is ignored,
/// and one for a key that is not there creates nothing.
#[test]
fn a_reserve_hint_that_is_short_absurd_or_for_a_missing_key_changes_nothing() {
    use crate::change_log::{RecordKind, decode_record, encode_record};
    let apply = |store: &Store, key: &[u8], body: &[u8]| {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, RecordKind::Reserve, 0, 0, key, body);
        let (record, _) = decode_record(&bytes, 1).unwrap();
        crate::replay::apply_record(store, &record, 1_000)
    };
    let store = Store::builder().shards(1).build();
    assert!(apply(&store, b"k", &[1, 2, 3]).is_err(), "a short body");
    assert!(
        apply(&store, b"k", &u64::MAX.to_le_bytes()).is_err(),
        "a size past any record"
    );
    apply(&store, b"k", &4096u64.to_le_bytes()).unwrap();
    assert_eq!(
        store.read(b"k", 1_000, |v| v.cloned()),
        None,
        "nothing created"
    );
    store.write(b"k", 1_000, |w| w.set(s(b"v"), Some(0)));
    apply(&store, b"k", &(1u64 << 30).to_le_bytes()).unwrap();
    let capacity = store.read(b"k", 1_000, |v| match v {
        Some(Value::Str(bytes)) => bytes.capacity(),
        _ => 0,
    });
    assert!(capacity < 1 << 20, "a 1 GiB hint was taken: {capacity}");
    apply(&store, b"k", &4096u64.to_le_bytes()).unwrap();
    assert_eq!(store.read(b"k", 1_000, |v| v.cloned()), Some(s(b"v")));
    let capacity = store.read(b"k", 1_000, |v| match v {
        Some(Value::Str(bytes)) => bytes.capacity(),
        _ => 0,
    });
    assert!(capacity >= 4096, "a plausible hint makes room: {capacity}");
}
