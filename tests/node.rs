//! A real node on loopback, driven by a real client library (the `redis` crate, RESP2 and
//! RESP3), by raw bytes, and by redis-cli and redis-benchmark.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::AsyncCommands;
use ringkv_server::{Config, Node, Server};
use support::{client, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

/// Sends raw bytes and collects what comes back until `until` appears, the peer closes,
/// or two seconds pass.
async fn raw(stream: &mut TcpStream, bytes: &[u8], until: &[u8]) -> Result<(Vec<u8>, bool)> {
    stream.write_all(bytes).await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !contains(&got, until) {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) => return Ok((got, true)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return Ok((got, true)),
            Err(_) => {}
        }
    }
    Ok((got, false))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn redis_rs_round_trips_strings_hashes_and_ttls() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.set("greeting", "hello").await?;
    assert_eq!(con.get::<_, String>("greeting").await?, "hello");
    assert_eq!(con.incr::<_, _, i64>("counter", 5).await?, 5);
    assert_eq!(con.decr::<_, _, i64>("counter", 7).await?, -2);
    let _: () = con.mset(&[("a", "1"), ("b", "2")]).await?;
    let values: Vec<Option<String>> = con.mget(&["a", "missing", "b"]).await?;
    assert_eq!(values, vec![Some("1".into()), None, Some("2".into())]);
    let added: i64 = con
        .hset_multiple("user:1", &[("name", "ada"), ("lang", "rust")])
        .await
        .map(|()| 2)?;
    assert_eq!(added, 2);
    let all: std::collections::HashMap<String, String> = con.hgetall("user:1").await?;
    assert_eq!(all.get("name").map(String::as_str), Some("ada"));
    assert_eq!(con.hincr::<_, _, _, i64>("user:1", "visits", 3).await?, 3);
    let _: () = con.set_ex("session", "x", 100).await?;
    let ttl: i64 = con.ttl("session").await?;
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(con.ttl::<_, i64>("greeting").await?, -1);
    assert_eq!(con.ttl::<_, i64>("nope").await?, -2);
    // A binary value with every byte survives.
    let binary: Vec<u8> = (0..=255u8).collect();
    let _: () = con.set("bin", &binary).await?;
    assert_eq!(con.get::<_, Vec<u8>>("bin").await?, binary);
    // redis-rs atomic pipelines use MULTI/EXEC.
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .incr("p", 1)
        .incr("p", 1)
        .query_async(&mut con)
        .await?;
    assert_eq!((x, y), (1, 2));
    Ok(())
}

#[tokio::test]
async fn resp3_clients_get_maps_doubles_and_nulls() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, true).await?;
    let _: () = con.hset("h", "f", "v").await?;
    let reply: redis::Value = redis::cmd("HGETALL").arg("h").query_async(&mut con).await?;
    assert!(
        matches!(reply, redis::Value::Map(ref m) if m.len() == 1),
        "{reply:?}"
    );
    let missing: redis::Value = redis::cmd("GET")
        .arg("nothing")
        .query_async(&mut con)
        .await?;
    assert_eq!(missing, redis::Value::Nil);
    let float: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("10.5")
        .query_async(&mut con)
        .await?;
    assert_eq!(float, "10.5");
    let mut raw_con = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut raw_con, b"HELLO 3\r\n", b"modules").await?;
    assert!(
        reply.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(contains(&reply, b"$5\r\nproto\r\n:3\r\n"));
    let (reply, _) = raw(&mut raw_con, b"GET nothing\r\n", b"\r\n").await?;
    assert_eq!(reply, b"_\r\n");
    Ok(())
}

#[tokio::test]
async fn errors_use_redis_wording_and_keep_the_connection_open() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut s = TcpStream::connect(addr).await?;
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"FOO bar baz\r\n",
            b"-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n",
        ),
        (
            b"GET\r\n",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            b"CONFIG NOPE\r\n",
            b"-ERR unknown subcommand 'NOPE'. Try CONFIG HELP.\r\n",
        ),
        (b"HSET h f v\r\n", b":1\r\n"),
        (
            b"GET h\r\n",
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (b"SET n 9223372036854775807\r\n", b"+OK\r\n"),
        (
            b"INCR n\r\n",
            b"-ERR increment or decrement would overflow\r\n",
        ),
        (
            b"INCRBY n x\r\n",
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (
            b"SET k v EX 0\r\n",
            b"-ERR invalid expire time in 'set' command\r\n",
        ),
        (b"SET k v NX XX\r\n", b"-ERR syntax error\r\n"),
        (
            b"INCRBYFLOAT n abc\r\n",
            b"-ERR value is not a valid float\r\n",
        ),
        (b"SELECT 16\r\n", b"-ERR DB index is out of range\r\n"),
        (b"RENAME nope x\r\n", b"-ERR no such key\r\n"),
        (b"EXEC\r\n", b"-ERR EXEC without MULTI\r\n"),
    ];
    for (request, expected) in cases {
        let (reply, closed) = raw(&mut s, request, b"\r\n").await?;
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(expected),
            "for {}",
            String::from_utf8_lossy(request)
        );
        assert!(!closed);
    }
    // Nothing those errors touched changed.
    let (reply, _) = raw(&mut s, b"GET n\r\n", b"807\r\n").await?;
    assert_eq!(reply, b"$19\r\n9223372036854775807\r\n");
    Ok(())
}

#[tokio::test]
async fn malformed_frames_close_only_the_offending_connection() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut good = TcpStream::connect(addr).await?;
    raw(&mut good, b"SET keep me\r\n", b"+OK\r\n").await?;
    let attacks: &[(&[u8], &str)] = &[
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*2\r\n$3\r\nSET\r\n$600000000\r\n", "invalid bulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"SET \"unterminated\r\n", "unbalanced quotes in request"),
    ];
    for (bytes, message) in attacks {
        let mut bad = TcpStream::connect(addr).await?;
        let (reply, _) = raw(&mut bad, bytes, b"\r\n").await?;
        let expected = format!("-ERR Protocol error: {message}\r\n");
        assert_eq!(String::from_utf8_lossy(&reply), expected);
        assert!(
            is_closed(&mut bad).await,
            "connection left open after {message}"
        );
    }
    // 10,000 nested array headers: refused, no recursion, no crash.
    let mut nested = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut nested, &b"*1\r\n".repeat(10_000), b"\r\n").await?;
    assert!(reply.starts_with(b"-ERR Protocol error"));
    // An endless inline line is cut off at the inline limit.
    let mut long = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut long, &vec![b'a'; 100 * 1024], b"\r\n").await?;
    assert_eq!(reply, b"-ERR Protocol error: too big inline request\r\n");
    // Everyone else is still served and nothing was lost.
    let (reply, closed) = raw(&mut good, b"GET keep\r\n", b"me\r\n").await?;
    assert_eq!(reply, b"$2\r\nme\r\n");
    assert!(!closed);
    Ok(())
}

#[tokio::test]
async fn a_huge_declared_length_allocates_nothing() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let rss_before = rss_bytes(&node);
    // 500 MB declared (within proto-max-bulk-len), 10 bytes sent: the connection waits.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$500000000\r\n0123456789")
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = rss_bytes(&node).saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "RSS grew by {grown} bytes for a declared 500 MB value"
    );
    let mut other = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut other, b"PING\r\n", b"\r\n").await?;
    assert_eq!(reply, b"+PONG\r\n");
    Ok(())
}

fn rss_bytes(node: &Node) -> u64 {
    let info = ringkv_server::write_info(node, &["memory".to_string()]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory_rss:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_large_value_arriving_in_pieces_is_stored_whole() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let value: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    request.extend_from_slice(&value);
    request.extend_from_slice(b"\r\n");
    let mut s = TcpStream::connect(addr).await?;
    for piece in request.chunks(700_001) {
        s.write_all(piece).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (reply, _) = raw(&mut s, b"", b"+OK\r\n").await?;
    assert_eq!(reply, b"+OK\r\n");
    let mut con = client(addr, false).await?;
    assert_eq!(con.get::<_, Vec<u8>>("big").await?, value);
    Ok(())
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut s = TcpStream::connect(addr).await?;
    let request = b"*2\r\n$4\r\nINCR\r\n$1\r\nc\r\nPING\r\n".repeat(1000);
    let (reply, _) = raw(&mut s, &request, b":1000\r\n+PONG\r\n").await?;
    let expected: Vec<u8> = (1..=1000)
        .flat_map(|i| format!(":{i}\r\n+PONG\r\n").into_bytes())
        .collect();
    assert_eq!(reply, expected);
    Ok(())
}

#[tokio::test]
async fn multi_exec_is_atomic_and_watch_detects_changes() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut a = TcpStream::connect(addr).await?;
    let mut b = TcpStream::connect(addr).await?;
    // An error inside EXEC does not stop the other commands.
    raw(&mut a, b"SET s text\r\n", b"\r\n").await?;
    let (reply, _) = raw(&mut a, b"MULTI\r\nINCR s\r\nSET t 1\r\nEXEC\r\n", b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR value is not an integer or out of range\r\n+OK\r\n").await?;
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR value is not an integer or out of range\r\n+OK\r\n"
    );
    // A command refused at queue time aborts the transaction.
    let (reply, _) = raw(
        &mut a,
        b"MULTI\r\nNOSUCH\r\nSET t 2\r\nEXEC\r\n",
        b"EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await?;
    assert!(contains(&reply, b"-EXECABORT"));
    let (reply, _) = raw(&mut a, b"GET t\r\n", b"\r\n1\r\n").await?;
    assert_eq!(reply, b"$1\r\n1\r\n");
    // WATCH: a write by another client makes EXEC return a null array.
    raw(&mut a, b"WATCH w\r\n", b"+OK\r\n").await?;
    raw(&mut b, b"SET w changed\r\n", b"+OK\r\n").await?;
    let (reply, _) = raw(&mut a, b"MULTI\r\nSET w mine\r\nEXEC\r\n", b"*-1\r\n").await?;
    assert_eq!(reply, b"+OK\r\n+QUEUED\r\n*-1\r\n");
    let (reply, _) = raw(&mut b, b"GET w\r\n", b"changed\r\n").await?;
    assert_eq!(reply, b"$7\r\nchanged\r\n");
    // Unchanged watched keys let EXEC through.
    raw(&mut a, b"WATCH w\r\n", b"+OK\r\n").await?;
    let (reply, _) = raw(&mut a, b"MULTI\r\nSET w mine\r\nEXEC\r\n", b"*1\r\n+OK\r\n").await?;
    assert_eq!(reply, b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    Ok(())
}

#[tokio::test]
async fn concurrent_increments_are_never_lost() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut con = client(addr, false).await?;
            for _ in 0..500 {
                let _: i64 = con.incr("shared", 1).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut con = client(addr, false).await?;
    assert_eq!(con.get::<_, i64>("shared").await?, 4000);
    Ok(())
}

#[tokio::test]
async fn noeviction_refuses_writes_over_maxmemory_but_serves_reads() -> Result<()> {
    let (addr, _node) = start(&["--maxmemory", "1mb"]).await?;
    let mut con = client(addr, false).await?;
    let value = vec![b'x'; 10_000];
    let mut refused = None;
    for i in 0..1000 {
        if let Err(e) = con.set::<_, _, ()>(format!("k{i}"), &value).await {
            refused = Some((i, e));
            break;
        }
    }
    let (count, error) = refused.context("writes were never refused")?;
    assert!(count > 50, "refused after only {count} writes");
    assert_eq!(error.code(), Some("OOM"), "{error}");
    assert_eq!(
        error.detail(),
        Some("command not allowed when used memory > 'maxmemory'.")
    );
    assert_eq!(con.get::<_, Vec<u8>>("k0").await?, value);
    let _: i64 = con.del("k0").await?;
    Ok(())
}

#[tokio::test]
async fn allkeys_lru_keeps_memory_under_the_limit_and_keeps_hot_keys() -> Result<()> {
    let (addr, node) = start(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]).await?;
    let mut con = client(addr, false).await?;
    let value = vec![b'v'; 1000];
    let _: () = con.set("hot", &value).await?;
    for i in 0..10_000 {
        let _: () = con.set(format!("cold:{i}"), &value).await?;
        if i % 50 == 0 {
            let _: Vec<u8> = con.get("hot").await?;
        }
    }
    assert!(
        node.store.used_memory() as u64 <= 2 * 1024 * 1024 + 4096,
        "used {}",
        node.store.used_memory()
    );
    assert!(node.store.stats().evicted > 5000);
    assert_eq!(con.get::<_, Vec<u8>>("hot").await?, value);
    Ok(())
}

#[tokio::test]
async fn expired_keys_are_never_served_and_are_reclaimed_without_access() -> Result<()> {
    let (addr, node) = start(&["--hz", "50"]).await?;
    let mut con = client(addr, false).await?;
    for i in 0..2000 {
        let _: () = redis::cmd("SET")
            .arg(format!("t{i}"))
            .arg("v")
            .arg("PX")
            .arg(100)
            .query_async(&mut con)
            .await?;
    }
    let _: () = con.set("forever", "v").await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(con.get::<_, Option<String>>("t7").await?, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.store.len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.store.len(), 1, "active expiry left keys behind");
    assert!(node.store.stats().expired >= 1999);
    assert_eq!(con.get::<_, String>("forever").await?, "v");
    Ok(())
}

#[tokio::test]
async fn requirepass_demands_auth_before_anything_else() -> Result<()> {
    let (addr, _node) = start(&["--requirepass", "s3cret"]).await?;
    let mut s = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut s, b"GET k\r\n", b"\r\n").await?;
    assert_eq!(reply, b"-NOAUTH Authentication required.\r\n");
    let (reply, _) = raw(&mut s, b"AUTH wrong\r\n", b"\r\n").await?;
    assert_eq!(
        reply,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let (reply, _) = raw(&mut s, b"AUTH s3cret\r\nSET k v\r\n", b"+OK\r\n+OK\r\n").await?;
    assert_eq!(reply, b"+OK\r\n+OK\r\n");
    let client = redis::Client::open(format!("redis://:s3cret@{addr}/"))?;
    let mut con = client.get_multiplexed_async_connection().await?;
    assert_eq!(con.get::<_, String>("k").await?, "v");
    Ok(())
}

#[tokio::test]
async fn scan_returns_every_key_present_for_the_whole_scan() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    for i in 0..3000 {
        let _: () = con.set(format!("stay:{i}"), i).await?;
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        // Churn while scanning: new keys and deletions must not hide the stable ones.
        let _: () = con.set(format!("churn:{calls}"), 1).await?;
        let _: i64 = con.del(format!("churn:{}", calls / 2)).await?;
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("stay:*")
            .arg("COUNT")
            .arg(50)
            .query_async(&mut con)
            .await?;
        seen.extend(keys);
        calls += 1;
        cursor = next;
        if cursor == 0 || calls > 10_000 {
            break;
        }
    }
    assert_eq!(cursor, 0, "scan never finished");
    assert_eq!(seen.len(), 3000);
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_stalls_only_itself() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.set("big", vec![b'b'; 1 << 20]).await?;
    // Ask for 2 GB of replies and never read them.
    let mut greedy = TcpStream::connect(addr).await?;
    let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(2000);
    let _ = tokio::time::timeout(Duration::from_secs(1), greedy.write_all(&request)).await;
    let started = Instant::now();
    for _ in 0..100 {
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "other clients were held up"
    );
    // A dead peer: the node, blocked writing replies to it, notices and forgets it.
    drop(greedy);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.clients.len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        node.clients.len(),
        1,
        "the dead client was never cleaned up"
    );
    let _: String = redis::cmd("PING").query_async(&mut con).await?;
    Ok(())
}

#[tokio::test]
async fn maxclients_refuses_connections_beyond_the_limit() -> Result<()> {
    let (addr, _node) = start(&["--maxclients", "2"]).await?;
    let mut a = TcpStream::connect(addr).await?;
    let mut b = TcpStream::connect(addr).await?;
    raw(&mut a, b"PING\r\n", b"\r\n").await?;
    raw(&mut b, b"PING\r\n", b"\r\n").await?;
    let mut c = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut c, b"PING\r\n", b"\r\n").await?;
    assert_eq!(reply, b"-ERR max number of clients reached\r\n");
    Ok(())
}

#[tokio::test]
async fn command_describes_key_positions_for_cluster_clients() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let count: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query_async(&mut con)
        .await?;
    let all: Vec<redis::Value> = redis::cmd("COMMAND").query_async(&mut con).await?;
    assert_eq!(all.len() as i64, count);
    let info: Vec<Vec<redis::Value>> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .arg("mset")
        .query_async(&mut con)
        .await?;
    let positions = |entry: &Vec<redis::Value>| -> Vec<i64> {
        entry[3..6]
            .iter()
            .map(|v| redis::from_redis_value_ref(v).unwrap())
            .collect()
    };
    assert_eq!(positions(&info[0]), vec![1, 1, 1]);
    assert_eq!(positions(&info[1]), vec![1, -1, 2]);
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query_async(&mut con)
        .await?;
    assert_eq!(keys, vec!["a", "b"]);
    // A destination and then keys counted by numkeys.
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("ZUNIONSTORE")
        .arg("dst")
        .arg("2")
        .arg("z1")
        .arg("z2")
        .arg("WEIGHTS")
        .arg("1")
        .arg("2")
        .query_async(&mut con)
        .await?;
    assert_eq!(keys, vec!["dst", "z1", "z2"]);
    // COMMAND DOCS carries the argument tree redis-cli builds its hints from.
    let docs: redis::Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("set")
        .query_async(&mut con)
        .await?;
    let text = format!("{docs:?}");
    for expected in ["summary", "arguments", "KEEPTTL", "optional", "oneof"] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    Ok(())
}

#[tokio::test]
async fn config_set_changes_limits_at_runtime_and_echoes_redis_knobs() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("hash-max-listpack-entries")
        .arg("512")
        .query_async(&mut con)
        .await?;
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("hash-max-listpack-entries")
        .query_async(&mut con)
        .await?;
    assert_eq!(got, vec!["hash-max-listpack-entries", "512"]);
    let bad: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("lots")
        .query_async(&mut con)
        .await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("argument must be a memory value")
    );
    let unknown: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("no-such-knob")
        .arg("1")
        .query_async(&mut con)
        .await;
    assert!(unknown.is_err());
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg("1000")
        .query_async(&mut con)
        .await?;
    let mut s = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut s, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n", b"\r\n").await?;
    assert_eq!(reply, b"-ERR Protocol error: invalid bulk length\r\n");
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_the_node() -> Result<()> {
    let config = Config::from_args(["ringkv-server", "--port", "0", "--persistence", "no"])?;
    let server = Server::bind(config, None).await?;
    let addr = server.local_addrs()[0];
    let running = tokio::spawn(server.run());
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"SHUTDOWN NOSAVE\r\n").await?;
    // Like Redis, no reply: the connection just closes.
    assert!(is_closed(&mut s).await);
    tokio::time::timeout(Duration::from_secs(5), running).await???;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after SHUTDOWN"
    );
    Ok(())
}

fn tool(name: &str) -> Command {
    assert!(
        Command::new(name).arg("--version").output().is_ok(),
        "{name} is not installed: `apt-get install redis-tools` (the CI script does)"
    );
    Command::new(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_works_against_a_node() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let port = addr.port().to_string();
    let cli = move |args: &[&str]| -> Result<String> {
        let out = tool("redis-cli").args(["-p", &port]).args(args).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let results = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        Ok(vec![
            cli(&["PING"])?,
            cli(&["SET", "name", "ringkv"])?,
            cli(&["GET", "name"])?,
            cli(&["HSET", "h", "a", "1"])?,
            cli(&["-3", "HGETALL", "h"])?,
            cli(&["DBSIZE"])?,
            cli(&["INFO", "server"])?,
        ])
    })
    .await??;
    assert_eq!(&results[..6], &["PONG", "OK", "ringkv", "1", "a 1", "2"]);
    assert!(results[6].contains("redis_version:") && results[6].contains("ringkv_version:"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_runs_with_no_error() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let port = addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        tool("redis-benchmark")
            .args([
                "-p",
                &port,
                "-t",
                "ping,set,get,incr,mset,hset",
                "-n",
                "20000",
                "-q",
            ])
            .output()
    })
    .await??;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for test in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "HSET",
        "MSET (10 keys)",
    ] {
        let finished = text.split(['\r', '\n']).any(|line| {
            line.trim_start().starts_with(&format!("{test}: "))
                && line.contains("requests per second")
        });
        assert!(finished, "{test} did not finish:\n{text}");
    }
    assert!(!text.to_ascii_lowercase().contains("error"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_client_past_the_query_buffer_limit_is_disconnected() -> Result<()> {
    let (addr, _node) = start(&["--client-query-buffer-limit", "1mb"]).await?;
    let mut greedy = TcpStream::connect(addr).await?;
    // A 4 MB value is within proto-max-bulk-len but not within the query buffer limit.
    greedy
        .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4000000\r\n")
        .await?;
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..40 {
        if greedy.write_all(&chunk).await.is_err() {
            break;
        }
    }
    assert!(
        is_closed(&mut greedy).await,
        "query buffer limit not enforced"
    );
    let mut con = client(addr, false).await?;
    assert!(
        !con.exists::<_, bool>("k").await?,
        "a refused value must not be stored"
    );
    Ok(())
}

#[tokio::test]
async fn idle_clients_are_closed_after_timeout() -> Result<()> {
    let (addr, _node) = start(&["--timeout", "1"]).await?;
    let mut idle = TcpStream::connect(addr).await?;
    raw(&mut idle, b"PING\r\n", b"+PONG\r\n").await?;
    let started = Instant::now();
    assert!(is_closed(&mut idle).await);
    assert!(started.elapsed() >= Duration::from_millis(800));
    Ok(())
}

#[tokio::test]
async fn client_commands_name_list_and_kill_connections() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut victim = TcpStream::connect(addr).await?;
    let (reply, _) = raw(
        &mut victim,
        b"CLIENT SETNAME victim\r\nCLIENT ID\r\n",
        b"\r\n:",
    )
    .await?;
    assert!(reply.starts_with(b"+OK\r\n:"));
    let id: String = String::from_utf8_lossy(&reply[6..]).trim().to_string();
    let mut admin = TcpStream::connect(addr).await?;
    let (reply, _) = raw(&mut admin, b"CLIENT SETNAME \"bad name\"\r\n", b"\r\n").await?;
    assert!(reply.starts_with(b"-ERR Client names cannot contain spaces"));
    let (list, _) = raw(&mut admin, b"CLIENT LIST\r\n", b"\n\r\n").await?;
    let list = String::from_utf8_lossy(&list);
    assert!(
        list.contains(&format!("id={id} ")) && list.contains("name=victim"),
        "{list}"
    );
    assert!(list.contains("cmd=client|list"), "{list}");
    let (reply, _) = raw(
        &mut admin,
        format!("CLIENT KILL ID {id}\r\n").as_bytes(),
        b"\r\n",
    )
    .await?;
    assert_eq!(reply, b":1\r\n");
    assert!(is_closed(&mut victim).await);
    let (reply, _) = raw(&mut admin, b"CLIENT KILL 1.2.3.4:5\r\n", b"\r\n").await?;
    assert_eq!(reply, b"-ERR No such client\r\n");
    Ok(())
}

#[tokio::test]
async fn reset_returns_a_connection_to_its_initial_state() -> Result<()> {
    let (addr, _node) = start(&["--requirepass", "pw"]).await?;
    let mut s = TcpStream::connect(addr).await?;
    let (reply, _) = raw(
        &mut s,
        b"HELLO 3 AUTH default pw SETNAME me\r\n",
        b"modules",
    )
    .await?;
    assert!(reply.starts_with(b"%7\r\n"));
    raw(&mut s, b"MULTI\r\n", b"+OK\r\n").await?;
    let (reply, _) = raw(&mut s, b"RESET\r\n", b"+RESET\r\n").await?;
    assert_eq!(reply, b"+RESET\r\n");
    // Back to RESP2, out of MULTI, and no longer authenticated.
    let (reply, _) = raw(&mut s, b"GET k\r\n", b"\r\n").await?;
    assert_eq!(reply, b"-NOAUTH Authentication required.\r\n");
    let (reply, _) = raw(&mut s, b"AUTH pw\r\nGET k\r\n", b"$-1\r\n").await?;
    assert_eq!(reply, b"+OK\r\n$-1\r\n");
    Ok(())
}

/// Command semantics, one step at a time, with the exact reply Redis 7 gives.
#[tokio::test]
async fn commands_reply_exactly_as_redis_does() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut s = TcpStream::connect(addr).await?;
    let steps: &[(&str, &str)] = &[
        // strings
        ("SET k hello", "+OK\r\n"),
        ("SET k world NX", "$-1\r\n"),
        ("SET k world XX GET", "$5\r\nhello\r\n"),
        ("SET fresh v XX", "$-1\r\n"),
        ("APPEND k !!", ":7\r\n"),
        ("GETRANGE k 0 -3", "$5\r\nworld\r\n"),
        ("GETRANGE k -100 100", "$7\r\nworld!!\r\n"),
        ("SETRANGE k 10 xy", ":12\r\n"),
        ("GET k", "$12\r\nworld!!\0\0\0xy\r\n"),
        ("SETRANGE k -1 x", "-ERR offset is out of range\r\n"),
        ("STRLEN k", ":12\r\n"),
        ("STRLEN nothing", ":0\r\n"),
        ("SETNX k other", ":0\r\n"),
        ("GETSET k new", "$12\r\nworld!!\0\0\0xy\r\n"),
        ("GETDEL k", "$3\r\nnew\r\n"),
        ("GETDEL k", "$-1\r\n"),
        ("MSET a 1 b 2", "+OK\r\n"),
        ("MSETNX b 9 c 3", ":0\r\n"),
        ("MGET a b c", "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n"),
        (
            "MSET a",
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        ("INCRBYFLOAT a 0.5", "$3\r\n1.5\r\n"),
        (
            "DECRBY b -9223372036854775808",
            "-ERR decrement would overflow\r\n",
        ),
        (
            "INCRBYFLOAT a inf",
            "-ERR increment would produce NaN or Infinity\r\n",
        ),
        // keys and TTLs
        ("EXISTS a a nothing b", ":3\r\n"),
        ("TOUCH a nothing", ":1\r\n"),
        ("UNLINK a nothing", ":1\r\n"),
        ("SET t v", "+OK\r\n"),
        ("EXPIRE t 100 XX", ":0\r\n"),
        ("EXPIRE t 100 NX", ":1\r\n"),
        ("EXPIRE t 50 GT", ":0\r\n"),
        ("EXPIRE t 50 LT", ":1\r\n"),
        ("TTL t", ":50\r\n"),
        (
            "EXPIRE t 10 NX XX",
            "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
        ),
        ("PERSIST t", ":1\r\n"),
        ("PERSIST t", ":0\r\n"),
        ("TTL t", ":-1\r\n"),
        ("PEXPIREAT t 1", ":1\r\n"),
        ("EXISTS t", ":0\r\n"),
        ("SET g v", "+OK\r\n"),
        ("GETEX g PX 5000", "$1\r\nv\r\n"),
        ("GETEX g PERSIST", "$1\r\nv\r\n"),
        ("PTTL g", ":-1\r\n"),
        (
            "GETEX g EX 0",
            "-ERR invalid expire time in 'getex' command\r\n",
        ),
        ("EXPIRETIME nothing", ":-2\r\n"),
        ("RENAME g h", "+OK\r\n"),
        ("SET x 1", "+OK\r\n"),
        ("RENAMENX h x", ":0\r\n"),
        ("COPY h x", ":0\r\n"),
        ("COPY h x REPLACE", ":1\r\n"),
        ("GET x", "$1\r\nv\r\n"),
        ("TYPE x", "+string\r\n"),
        ("TYPE nothing", "+none\r\n"),
        ("OBJECT ENCODING x", "$6\r\nembstr\r\n"),
        (
            "OBJECT FREQ x",
            "-ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.\r\n",
        ),
        ("OBJECT ENCODING nothing", "$-1\r\n"),
        // hashes
        ("HSET h2 a 1 b 2", ":2\r\n"),
        ("HSET h2 a 10 c 3", ":1\r\n"),
        ("HSETNX h2 a 5", ":0\r\n"),
        ("HMGET h2 a nope c", "*3\r\n$2\r\n10\r\n$-1\r\n$1\r\n3\r\n"),
        ("HINCRBY h2 a 5", ":15\r\n"),
        ("HINCRBYFLOAT h2 c 0.25", "$4\r\n3.25\r\n"),
        ("HINCRBY h2 c 1", "-ERR hash value is not an integer\r\n"),
        ("HSTRLEN h2 c", ":4\r\n"),
        ("HEXISTS h2 b", ":1\r\n"),
        ("HDEL h2 a b c nope", ":3\r\n"),
        ("EXISTS h2", ":0\r\n"),
        ("HSET h3 only 1", ":1\r\n"),
        ("HRANDFIELD h3", "$4\r\nonly\r\n"),
        ("HRANDFIELD h3 -2", "*2\r\n$4\r\nonly\r\n$4\r\nonly\r\n"),
        (
            "HRANDFIELD h3 5 WITHVALUES",
            "*2\r\n$4\r\nonly\r\n$1\r\n1\r\n",
        ),
        ("HRANDFIELD nothing 3", "*0\r\n"),
        (
            "HSCAN h3 0",
            "*2\r\n$1\r\n0\r\n*2\r\n$4\r\nonly\r\n$1\r\n1\r\n",
        ),
        (
            "HSCAN h3 0 NOVALUES",
            "*2\r\n$1\r\n0\r\n*1\r\n$4\r\nonly\r\n",
        ),
        (
            "HGET x f",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (
            "HSET h3 odd",
            "-ERR wrong number of arguments for 'hset' command\r\n",
        ),
        // server
        ("FLUSHALL ASYNC", "+OK\r\n"),
        ("DBSIZE", ":0\r\n"),
        ("RANDOMKEY", "$-1\r\n"),
        ("SCAN 0 COUNT 0", "-ERR syntax error\r\n"),
        ("SCAN abc", "-ERR invalid cursor\r\n"),
        ("ECHO \"a\\x00b\"", "$3\r\na\0b\r\n"),
        (
            "COMMAND NOPE",
            "-ERR unknown subcommand 'NOPE'. Try COMMAND HELP.\r\n",
        ),
        (
            "COMMAND COUNT extra",
            "-ERR wrong number of arguments for 'command|count' command\r\n",
        ),
        ("PING hi", "$2\r\nhi\r\n"),
        (
            "PING a b",
            "-ERR wrong number of arguments for 'ping' command\r\n",
        ),
    ];
    for (command, expected) in steps {
        let request = format!("{command}\r\n");
        let (reply, closed) = raw(&mut s, request.as_bytes(), expected.as_bytes()).await?;
        assert_eq!(
            String::from_utf8_lossy(&reply),
            *expected,
            "after {command}"
        );
        assert!(!closed, "closed after {command}");
    }
    Ok(())
}
