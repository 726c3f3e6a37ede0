//! Streams on a real node over loopback through the `redis` crate: XADD's ids and trims,
//! ranges, XDEL, XSETID and XINFO, XREAD with and without BLOCK, and the reply shapes of
//! RESP2 and RESP3.

use std::time::{Duration, Instant};

use anyhow::Result;
use redis::Value;
use support::{client, query, start, waiting_client};

mod support;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

/// An entry as the reply carries it: `[id, [field, value, ...]]`.
fn entry(id: &str, fields: &[&str]) -> Value {
    Value::Array(vec![
        bulk(id),
        Value::Array(fields.iter().map(|f| bulk(f)).collect()),
    ])
}

fn error_text(result: redis::RedisResult<Value>) -> String {
    result.unwrap_err().to_string()
}

#[tokio::test]
async fn xadd_gives_rising_ids_and_refuses_bad_ones_without_changes() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    assert_eq!(
        query(&mut con, &["XADD", "s", "5-1", "a", "1"]).await?,
        bulk("5-1")
    );
    assert_eq!(
        query(&mut con, &["XADD", "s", "5-*", "b", "2"]).await?,
        bulk("5-2"),
        "ms-* takes the next sequence of the same millisecond"
    );
    assert_eq!(
        query(&mut con, &["XADD", "s", "7", "c", "3"]).await?,
        bulk("7-0")
    );
    let auto = query(&mut con, &["XADD", "s", "*", "d", "4"]).await?;
    let Value::BulkString(auto) = auto else {
        panic!("an id, got {auto:?}")
    };
    let auto = String::from_utf8(auto)?;
    let ms: u64 = auto.split('-').next().unwrap().parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    assert!(ms.abs_diff(now) < 10_000, "* follows the clock: {auto}");
    for (args, message) in [
        (
            &["XADD", "s", "5-3", "a", "1"][..],
            "The ID specified in XADD is equal or smaller than the target stream top item",
        ),
        (
            &["XADD", "s", "0-0", "a", "1"],
            "The ID specified in XADD must be greater than 0-0",
        ),
        (
            &["XADD", "s", "1-x", "a", "1"],
            "Invalid stream ID specified as stream command argument",
        ),
        (
            &["XADD", "s", "*", "a"],
            "wrong number of arguments for 'xadd' command",
        ),
        (
            &["XADD", "s", "MAXLEN", "-1", "*", "a", "1"],
            "The MAXLEN argument must be >= 0.",
        ),
        (
            &["XADD", "s", "MAXLEN", "5", "LIMIT", "10", "*", "a", "1"],
            "syntax error, LIMIT cannot be used without the special ~ option",
        ),
        (
            &["XADD", "s", "MAXLEN", "1", "MINID", "1", "*", "a", "1"],
            "syntax error, MAXLEN and MINID options at the same time are not compatible",
        ),
    ] {
        let error = error_text(query(&mut con, args).await);
        assert!(error.contains(message), "{args:?}: {error}");
    }
    assert_eq!(query(&mut con, &["XLEN", "s"]).await?, Value::Int(4));
    assert_eq!(
        query(&mut con, &["XADD", "absent", "NOMKSTREAM", "*", "a", "1"]).await?,
        Value::Nil
    );
    assert_eq!(query(&mut con, &["EXISTS", "absent"]).await?, Value::Int(0));
    query(&mut con, &["SET", "str", "x"]).await?;
    let error = error_text(query(&mut con, &["XADD", "str", "*", "a", "1"]).await);
    assert!(error.contains("WRONGTYPE"), "{error}");
    assert_eq!(
        query(&mut con, &["TYPE", "s"]).await?,
        Value::SimpleString("stream".into())
    );
    Ok(())
}

#[tokio::test]
async fn ranges_count_and_exclusive_bounds_read_what_redis_reads() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    for i in 1..=5 {
        query(
            &mut con,
            &["XADD", "s", &format!("{i}-0"), "n", &i.to_string()],
        )
        .await?;
    }
    let ids = |reply: Value| -> Vec<String> {
        let Value::Array(entries) = reply else {
            panic!("an array, got {reply:?}")
        };
        entries
            .into_iter()
            .map(|e| match e {
                Value::Array(mut parts) => match parts.remove(0) {
                    Value::BulkString(id) => String::from_utf8(id).unwrap(),
                    other => panic!("an id, got {other:?}"),
                },
                other => panic!("an entry, got {other:?}"),
            })
            .collect()
    };
    assert_eq!(
        query(&mut con, &["XRANGE", "s", "2", "4"]).await?,
        Value::Array(vec![
            entry("2-0", &["n", "2"]),
            entry("3-0", &["n", "3"]),
            entry("4-0", &["n", "4"]),
        ])
    );
    assert_eq!(
        ids(query(&mut con, &["XRANGE", "s", "(2-0", "+", "COUNT", "2"]).await?),
        ["3-0", "4-0"]
    );
    assert_eq!(
        ids(query(&mut con, &["XREVRANGE", "s", "(5-0", "-", "COUNT", "2"]).await?),
        ["4-0", "3-0"]
    );
    assert_eq!(
        query(&mut con, &["XRANGE", "s", "-", "+", "COUNT", "0"]).await?,
        Value::Nil
    );
    assert_eq!(
        query(&mut con, &["XRANGE", "absent", "-", "+"]).await?,
        Value::Array(vec![])
    );
    let error = error_text(query(&mut con, &["XRANGE", "s", "(-", "+"]).await);
    assert!(error.contains("Invalid stream ID"), "{error}");
    assert_eq!(
        query(&mut con, &["XDEL", "s", "2-0", "9-0"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        ids(query(&mut con, &["XRANGE", "s", "-", "+"]).await?),
        ["1-0", "3-0", "4-0", "5-0"]
    );
    Ok(())
}

#[tokio::test]
async fn trims_leave_the_lengths_redis_leaves() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let mut pipe = redis::pipe();
    for i in 1..=1000 {
        pipe.cmd("XADD")
            .arg("s")
            .arg(format!("{i}-0"))
            .arg("f")
            .arg(i)
            .ignore();
    }
    pipe.query_async::<()>(&mut con).await?;
    // Redis's own documented example: ~ removes whole nodes of 100 entries only.
    assert_eq!(
        query(&mut con, &["XTRIM", "s", "MAXLEN", "~", "555"]).await?,
        Value::Int(400)
    );
    assert_eq!(query(&mut con, &["XLEN", "s"]).await?, Value::Int(600));
    assert_eq!(
        query(&mut con, &["XTRIM", "s", "MAXLEN", "=", "555"]).await?,
        Value::Int(45)
    );
    assert_eq!(
        query(&mut con, &["XTRIM", "s", "MINID", "900"]).await?,
        Value::Int(454)
    );
    let added = query(&mut con, &["XADD", "s", "MAXLEN", "3", "*", "f", "x"]).await?;
    assert!(matches!(added, Value::BulkString(_)), "{added:?}");
    assert_eq!(query(&mut con, &["XLEN", "s"]).await?, Value::Int(3));
    let error = error_text(query(&mut con, &["XTRIM", "s", "LIMIT", "5"]).await);
    assert!(
        error.contains("syntax error, LIMIT cannot be used without specifying a trimming strategy"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn xsetid_and_xinfo_show_the_stream_as_redis_does() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    query(&mut con, &["XADD", "s", "1-1", "a", "1"]).await?;
    query(&mut con, &["XADD", "s", "2-1", "b", "2"]).await?;
    query(&mut con, &["XDEL", "s", "1-1"]).await?;
    let error = error_text(query(&mut con, &["XSETID", "s", "1-0"]).await);
    assert!(
        error.contains("smaller than the target stream top item"),
        "{error}"
    );
    assert_eq!(
        query(
            &mut con,
            &[
                "XSETID",
                "s",
                "9-9",
                "ENTRIESADDED",
                "7",
                "MAXDELETEDID",
                "1-1"
            ]
        )
        .await?,
        Value::Okay
    );
    let info = query(&mut con, &["XINFO", "STREAM", "s"]).await?;
    let Value::Array(fields) = info else {
        panic!("a flat map in RESP2, got {info:?}")
    };
    let expected = [
        ("length", Value::Int(1)),
        ("radix-tree-keys", Value::Int(1)),
        ("radix-tree-nodes", Value::Int(2)),
        ("last-generated-id", bulk("9-9")),
        ("max-deleted-entry-id", bulk("1-1")),
        ("entries-added", Value::Int(7)),
        ("recorded-first-entry-id", bulk("2-1")),
        ("groups", Value::Int(0)),
        ("first-entry", entry("2-1", &["b", "2"])),
        ("last-entry", entry("2-1", &["b", "2"])),
    ];
    assert_eq!(fields.len(), expected.len() * 2);
    for (pair, (name, value)) in fields.chunks(2).zip(expected) {
        assert_eq!(pair[0], bulk(name));
        assert_eq!(pair[1], value, "{name}");
    }
    let error = error_text(query(&mut con, &["XADD", "s", "9-9", "a", "1"]).await);
    assert!(
        error.contains("equal or smaller"),
        "XSETID raised the floor: {error}"
    );
    let error = error_text(query(&mut con, &["XINFO", "STREAM", "absent"]).await);
    assert!(error.contains("no such key"), "{error}");
    let error = error_text(query(&mut con, &["XINFO", "CONSUMERS", "s", "g"]).await);
    assert!(
        error.contains("No such consumer group 'g' for key name 's'"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn xread_answers_a_map_in_resp3_and_pairs_in_resp2() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    query(&mut con, &["XADD", "a", "1-0", "f", "1"]).await?;
    query(&mut con, &["XADD", "a", "2-0", "f", "2"]).await?;
    query(&mut con, &["XADD", "b", "1-0", "g", "1"]).await?;
    assert_eq!(
        query(
            &mut con,
            &["XREAD", "COUNT", "1", "STREAMS", "a", "b", "0", "0"]
        )
        .await?,
        Value::Array(vec![
            Value::Array(vec![
                bulk("a"),
                Value::Array(vec![entry("1-0", &["f", "1"])])
            ]),
            Value::Array(vec![
                bulk("b"),
                Value::Array(vec![entry("1-0", &["g", "1"])])
            ]),
        ])
    );
    assert_eq!(
        query(&mut con, &["XREAD", "STREAMS", "a", "b", "1-0", "$"]).await?,
        Value::Array(vec![Value::Array(vec![
            bulk("a"),
            Value::Array(vec![entry("2-0", &["f", "2"])])
        ])]),
        "$ means only what comes after the call"
    );
    assert_eq!(
        query(&mut con, &["XREAD", "STREAMS", "a", "absent", "$", "0"]).await?,
        Value::Nil
    );
    let error = error_text(query(&mut con, &["XREAD", "STREAMS", "a", "b", "0"]).await);
    assert!(
        error.contains("Unbalanced XREAD list of streams"),
        "{error}"
    );
    let mut resp3 = client(addr, true).await?;
    assert_eq!(
        query(&mut resp3, &["XREAD", "STREAMS", "b", "0"]).await?,
        Value::Map(vec![(
            bulk("b"),
            Value::Array(vec![entry("1-0", &["g", "1"])])
        )])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_readers_all_get_the_new_entry_and_time_out_with_nil() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut writer = client(addr, false).await?;
    query(&mut writer, &["XADD", "s", "1-0", "old", "x"]).await?;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut con = waiting_client(addr).await?;
        readers.push(tokio::spawn(async move {
            query(
                &mut con,
                &["XREAD", "BLOCK", "5000", "STREAMS", "other", "s", "0", "$"],
            )
            .await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.blocking.waiting() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(node.blocking.waiting(), 3, "every reader is blocked");
    query(&mut writer, &["XADD", "s", "2-0", "new", "y"]).await?;
    let expected = Value::Array(vec![Value::Array(vec![
        bulk("s"),
        Value::Array(vec![entry("2-0", &["new", "y"])]),
    ])]);
    for reader in readers {
        // A read takes nothing: every blocked reader gets the entry, not only the first.
        assert_eq!(reader.await??, expected);
    }
    let started = Instant::now();
    let mut con = waiting_client(addr).await?;
    assert_eq!(
        query(&mut con, &["XREAD", "BLOCK", "100", "STREAMS", "s", "$"]).await?,
        Value::Nil
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    // Inside MULTI a BLOCK cannot wait: it answers at once, as its timeout would.
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XREAD")
        .arg("BLOCK")
        .arg(0)
        .arg("STREAMS")
        .arg("s")
        .arg("$");
    let (in_multi,): (Value,) = pipe.query_async(&mut con).await?;
    assert_eq!(in_multi, Value::Nil);
    Ok(())
}
