//! Keyspace notifications on a real node over loopback: what Spring Session subscribes to
//! (`__keyevent@*__:expired` and `del`) arrives for a key that expires untouched, in the
//! key's logical database; evicted keys are told; nothing is published until
//! `notify-keyspace-events` asks for it. Every byte is checked against what redis-server
//! 7.0.15 sends.

use std::time::Duration;

use anyhow::Result;
use redis::Value;
use support::raw::Raw;
use support::{client, query, start};

mod support;

fn pmessage(pattern: &str, channel: &str, message: &str) -> String {
    format!(
        "*4\r\n$8\r\npmessage\r\n${}\r\n{pattern}\r\n${}\r\n{channel}\r\n${}\r\n{message}\r\n",
        pattern.len(),
        channel.len(),
        message.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_deleted_keys_are_told_in_their_database() -> Result<()> {
    let (addr, _node) = start(&["--hz", "50"]).await?;
    let mut con = client(addr, false).await?;
    // As Spring Session configures it at start-up.
    assert_eq!(
        query(
            &mut con,
            &["CONFIG", "SET", "notify-keyspace-events", "Egx"]
        )
        .await?,
        Value::Okay
    );
    assert_eq!(
        query(&mut con, &["CONFIG", "GET", "notify-keyspace-events"]).await?,
        Value::Array(vec![
            Value::BulkString(b"notify-keyspace-events".to_vec()),
            Value::BulkString(b"gxE".to_vec()),
        ])
    );
    let mut events = Raw::connect(addr).await?;
    events.send(&["PSUBSCRIBE", "__keyevent@*__:*"]).await?;
    events
        .expect(b"*3\r\n$10\r\npsubscribe\r\n$16\r\n__keyevent@*__:*\r\n:1\r\n")
        .await?;

    let mut pipe = redis::pipe();
    pipe.cmd("SELECT").arg(3).ignore();
    pipe.cmd("SET")
        .arg("session:1")
        .arg("x")
        .arg("PX")
        .arg(30)
        .ignore();
    pipe.cmd("SET").arg("session:2").arg("y").ignore();
    pipe.cmd("DEL").arg("session:2").arg("never").ignore();
    let () = pipe.query_async(&mut con).await?;
    // SET … PX tells of the deadline it gave (a `g` event).
    events
        .expect(pmessage("__keyevent@*__:*", "__keyevent@3__:expire", "session:1").as_bytes())
        .await?;
    events
        .expect(pmessage("__keyevent@*__:*", "__keyevent@3__:del", "session:2").as_bytes())
        .await?;
    // Nobody reads session:1 again: the active expiry finds it and tells.
    events
        .expect(pmessage("__keyevent@*__:*", "__keyevent@3__:expired", "session:1").as_bytes())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_keys_are_told() -> Result<()> {
    let (addr, _node) = start(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]).await?;
    let mut con = client(addr, false).await?;
    query(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "Ee"]).await?;
    let mut events = Raw::connect(addr).await?;
    events
        .send(&["SUBSCRIBE", "__keyevent@0__:evicted"])
        .await?;
    events
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:evicted\r\n:1\r\n")
        .await?;
    let value = "v".repeat(10_000);
    for i in 0..1000 {
        query(&mut con, &["SET", &format!("k{i}"), &value]).await?;
    }
    // The first keys written are the least recently used.
    events
        .expect(b"*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:evicted\r\n")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_until_notifications_are_enabled() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let mut events = Raw::connect(addr).await?;
    events.send(&["PSUBSCRIBE", "__key*"]).await?;
    events
        .expect(b"*3\r\n$10\r\npsubscribe\r\n$6\r\n__key*\r\n:1\r\n")
        .await?;
    query(&mut con, &["SET", "quiet", "1"]).await?;
    query(&mut con, &["DEL", "quiet"]).await?;
    assert_eq!(
        query(
            &mut con,
            &["CONFIG", "SET", "notify-keyspace-events", "bogus"]
        )
        .await
        .unwrap_err()
        .to_string(),
        "ResponseError: CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'."
    );
    query(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "K$"]).await?;
    query(&mut con, &["SET", "loud", "1"]).await?;
    // The first thing that arrives is the event of the write made after enabling.
    events
        .expect(pmessage("__key*", "__keyspace@0__:loud", "set").as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_missing_keys_are_told_as_keymiss_and_writes_are_not() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    query(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "Em"]).await?;
    let mut events = Raw::connect(addr).await?;
    events
        .send(&["SUBSCRIBE", "__keyevent@0__:keymiss"])
        .await?;
    events
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:keymiss\r\n:1\r\n")
        .await?;
    query(&mut con, &["SET", "present", "1"]).await?;
    // A write's look-up (INCR, LMOVE's source) is no keymiss; reads, EXISTS and TTL are,
    // once per key even where ringkv looks twice (SUNION checks types first).
    for command in [
        &["INCR", "counter"][..],
        &["LMOVE", "nolist", "other", "LEFT", "LEFT"],
        &["GET", "present"],
        &["GET", "absent1"],
        &["EXISTS", "present", "absent2"],
        &["TTL", "absent3"],
        &["SUNION", "absent4"],
    ] {
        query(&mut con, command).await?;
    }
    let told = |key: &str| {
        format!(
            "*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:keymiss\r\n${}\r\n{key}\r\n",
            key.len()
        )
    };
    let wanted: String = ["absent1", "absent2", "absent3", "absent4"]
        .iter()
        .map(|k| told(k))
        .collect();
    events.expect(wanted.as_bytes()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_pop_served_by_a_later_push_is_told_as_redis_tells_it() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    query(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "Elg"],
    )
    .await?;
    let mut events = Raw::connect(addr).await?;
    events.send(&["PSUBSCRIBE", "__keyevent@0__:*"]).await?;
    events
        .expect(b"*3\r\n$10\r\npsubscribe\r\n$16\r\n__keyevent@0__:*\r\n:1\r\n")
        .await?;
    let mut blocked = support::waiting_client(addr).await?;
    let waiter = tokio::spawn(async move {
        query(
            &mut blocked,
            &["BLMOVE", "jobs", "taken", "LEFT", "RIGHT", "5"],
        )
        .await
    });
    // Bounded wait until the client is blocked.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let Value::BulkString(info) = query(&mut con, &["INFO", "clients"]).await? else {
            anyhow::bail!("INFO is a bulk string");
        };
        if String::from_utf8_lossy(&info).contains("blocked_clients:1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client never blocked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    query(&mut con, &["LPUSH", "jobs", "j1"]).await?;
    assert_eq!(waiter.await??, Value::BulkString(b"j1".to_vec()));
    // The push, then the serving's push to the destination, pop and deletion (Redis 7.0).
    let wanted: String = [
        ("lpush", "jobs"),
        ("rpush", "taken"),
        ("lpop", "jobs"),
        ("del", "jobs"),
    ]
    .iter()
    .map(|(event, key)| {
        let channel = format!("__keyevent@0__:{event}");
        format!(
            "*4\r\n$8\r\npmessage\r\n$16\r\n__keyevent@0__:*\r\n${}\r\n{channel}\r\n${}\r\n{key}\r\n",
            channel.len(),
            key.len()
        )
    })
    .collect();
    events.expect(wanted.as_bytes()).await?;
    // Telling of the deletion looks the key up as a write does: no miss is counted.
    let Value::BulkString(stats) = query(&mut con, &["INFO", "stats"]).await? else {
        anyhow::bail!("INFO is a bulk string");
    };
    let stats = String::from_utf8_lossy(&stats);
    assert!(
        stats.contains("keyspace_hits:0\r\n") && stats.contains("keyspace_misses:0\r\n"),
        "{stats}"
    );
    Ok(())
}
