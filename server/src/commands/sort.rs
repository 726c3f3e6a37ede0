//! SORT and SORT_RO over lists, sets and sorted sets, as Redis 7.0's `sort.c` answers
//! them: numeric or ALPHA order, BY and GET patterns (`*` replaced by the element,
//! `key->field` reading a hash field) on a standalone node, LIMIT, DESC and STORE.

use std::cmp::Ordering;

use ringkv_protocol::Args;
use ringkv_store::slot::key_slot;
use ringkv_store::{ListValue, Store, Value};

use crate::databases::Databases;
use crate::handler::{CmdError, CmdResult, Ctx, float_arg, int_arg, is};

fn custom(message: &str) -> CmdError {
    CmdError::Custom(format!("ERR {message}"))
}

/// A parsed SORT request.
struct SortQuery<'a> {
    by: Option<&'a [u8]>,
    /// BY without a `*`: keep the container's order.
    dont_sort: bool,
    gets: Vec<&'a [u8]>,
    limit: Option<(i64, i64)>,
    desc: bool,
    alpha: bool,
    store: Option<&'a [u8]>,
}

fn parse<'a>(args: &Args<'a>, read_only: bool, cluster: bool) -> Result<SortQuery<'a>, CmdError> {
    let mut query = SortQuery {
        by: None,
        dont_sort: false,
        gets: Vec::new(),
        limit: None,
        desc: false,
        alpha: false,
        store: None,
    };
    let mut j = 2;
    while j < args.len() {
        let arg = args.get(j);
        let left = args.len() - j - 1;
        if is(arg, "asc") {
            query.desc = false;
        } else if is(arg, "desc") {
            query.desc = true;
        } else if is(arg, "alpha") {
            query.alpha = true;
        } else if is(arg, "limit") && left >= 2 {
            query.limit = Some((int_arg(args.get(j + 1))?, int_arg(args.get(j + 2))?));
            j += 2;
        } else if !read_only && is(arg, "store") && left >= 1 {
            query.store = Some(args.get(j + 1));
            j += 1;
        } else if is(arg, "by") && left >= 1 {
            let pattern = args.get(j + 1);
            if !pattern.contains(&b'*') {
                query.dont_sort = true;
            } else if cluster {
                return Err(custom("BY option of SORT denied in Cluster mode."));
            }
            query.by = Some(pattern);
            j += 1;
        } else if is(arg, "get") && left >= 1 {
            if cluster {
                return Err(custom("GET option of SORT denied in Cluster mode."));
            }
            query.gets.push(args.get(j + 1));
            j += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        j += 1;
    }
    Ok(query)
}

/// The value a BY or GET `pattern` names for `element`: `#` is the element itself, the
/// first `*` is replaced by it, and `key->field` reads a hash field. `None` when absent.
fn lookup(
    store: &Store,
    now: u64,
    (databases, db): (&Databases, u8),
    pattern: &[u8],
    element: &[u8],
) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(element.to_vec());
    }
    let star = pattern.iter().position(|&b| b == b'*')?;
    // "->" after the `*` splits off a hash field.
    let arrow = pattern[star + 1..]
        .windows(2)
        .position(|w| w == b"->")
        .map(|at| at + star + 1)
        .filter(|&at| at + 2 < pattern.len());
    let key_pattern = arrow.map_or(pattern, |at| &pattern[..at]);
    let mut key = Vec::with_capacity(key_pattern.len() + element.len());
    key.extend_from_slice(&key_pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(&key_pattern[star + 1..]);
    store.read(&databases.key(db, &key), now, |value| {
        match (value?, arrow) {
            (Value::Str(s), None) => Some(s.clone()),
            (Value::Hash(h), Some(at)) => h.get(&pattern[at + 2..]).map(<[u8]>::to_vec),
            _ => None,
        }
    })
}

/// The elements of the value at `key` in its own order; WRONGTYPE for a string or hash.
fn elements(
    store: &Store,
    now: u64,
    key: &[u8],
    dont_sort: bool,
) -> Result<Vec<Vec<u8>>, CmdError> {
    store.read(key, now, |value| match value {
        None => Ok(Vec::new()),
        Some(Value::List(l)) => Ok(l.iter().map(<[u8]>::to_vec).collect()),
        // A set has no order of its own: sorted anyway when nosort is asked, so that
        // the reply is deterministic (Redis does so for STORE and scripts).
        Some(Value::Set(s)) => {
            let mut members: Vec<Vec<u8>> = s.iter().map(<[u8]>::to_vec).collect();
            if dont_sort {
                members.sort();
            }
            Ok(members)
        }
        Some(Value::ZSet(z)) => Ok(z.iter().map(|(_, m)| m.to_vec()).collect()),
        Some(_) => Err(CmdError::WrongType),
    })
}

enum SortKey {
    Number(f64),
    Text(Option<Vec<u8>>),
}

fn sort_generic(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let cluster = ctx.node.cluster.is_some();
    let query = parse(args, read_only, cluster)?;
    let key = args.get(1);
    if let Some(destination) = query.store
        && cluster
        && key_slot(destination) != key_slot(key)
    {
        return Err(CmdError::Custom(
            "CROSSSLOT Keys in request don't hash to the same slot".into(),
        ));
    }
    let store = &ctx.node.store;
    let now = ctx.now;
    // Keys built from patterns, and the destination, live in the connection's database.
    let in_db = (&ctx.node.databases, ctx.conn.db);
    let items = elements(store, now, key, query.dont_sort)?;
    let mut order: Vec<usize> = (0..items.len()).collect();
    if !query.dont_sort {
        let mut keys = Vec::with_capacity(items.len());
        for item in &items {
            let by = match query.by {
                Some(pattern) => lookup(store, now, in_db, pattern, item),
                None => Some(item.clone()),
            };
            keys.push(if query.alpha {
                SortKey::Text(by)
            } else {
                let score = match by {
                    None => 0.0,
                    Some(text) => float_arg(&text).ok_or_else(|| {
                        custom("One or more scores can't be converted into double")
                    })?,
                };
                SortKey::Number(score)
            });
        }
        order.sort_by(|&a, &b| {
            let cmp = match (&keys[a], &keys[b]) {
                (SortKey::Number(x), SortKey::Number(y)) => x
                    .partial_cmp(y)
                    .unwrap_or(Ordering::Equal)
                    // Equal scores order by the elements, so the result is deterministic.
                    .then_with(|| items[a].cmp(&items[b])),
                (SortKey::Text(x), SortKey::Text(y)) => x.cmp(y),
                _ => Ordering::Equal,
            };
            if query.desc { cmp.reverse() } else { cmp }
        });
    } else if query.desc {
        order.reverse();
    }
    let (start, count) = query.limit.unwrap_or((0, -1));
    let start = (start.max(0) as usize).min(order.len());
    let end = if count < 0 {
        order.len()
    } else {
        start.saturating_add(count as usize).min(order.len())
    };
    let chosen = &order[start..end];
    // Each chosen element yields one value per GET, or itself without GET.
    let mut values: Vec<Option<Vec<u8>>> = Vec::new();
    for &i in chosen {
        if query.gets.is_empty() {
            values.push(Some(items[i].clone()));
        }
        for pattern in &query.gets {
            values.push(lookup(store, now, in_db, pattern, &items[i]));
        }
    }
    match query.store {
        Some(destination) => {
            let destination = &*in_db.0.key(in_db.1, destination);
            let len = values.len();
            let list =
                ListValue::from_items(values.iter().map(|v| v.as_deref().unwrap_or_default()));
            let existed = store.write(destination, now, |slot| {
                let existed = slot.remove().is_some();
                if len > 0 {
                    slot.set(Value::List(Box::new(list)), Some(0));
                }
                existed
            });
            if len > 0 {
                ctx.notify(crate::notify::Class::LIST, "sortstore", destination);
            } else if existed {
                ctx.notify(crate::notify::Class::GENERIC, "del", destination);
            }
            ctx.events_first();
            // Clients blocked on the destination (BLPOP) may now be served.
            if ctx.node.blocking.waiting() > 0 {
                ctx.conn.ready_keys.push(destination.to_vec());
            }
            ctx.out.int(len as i64);
        }
        None => {
            ctx.out.array(values.len());
            for value in &values {
                ctx.out.bulk_or_null(value.as_deref());
            }
        }
    }
    Ok(())
}

/// SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
/// [STORE destination]
pub fn sort(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    sort_generic(ctx, &args, false)
}

/// SORT_RO key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
pub fn sort_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    sort_generic(ctx, &args, true)
}
