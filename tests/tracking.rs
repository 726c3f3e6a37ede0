//! Client-side caching on a real node over loopback: a RESP3 client that reads a key hears
//! when another client changes it, when it expires, and when the table must forget it;
//! BCAST prefixes; RESP2 clients through REDIRECT to a connection subscribed to
//! `__redis__:invalidate`. Every byte is checked against what redis-server 7.0.15 sends.

use anyhow::Result;
use redis::Value;
use support::raw::Raw;
use support::{client, query, start, waiting_client};

mod support;

fn invalidate(key: &str) -> String {
    format!(
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n",
        key.len()
    )
}

/// A RESP3 connection with tracking on (its HELLO reply read).
async fn tracking_client(addr: std::net::SocketAddr, options: &[&str]) -> Result<Raw> {
    let mut raw = Raw::connect(addr).await?;
    raw.send(&["HELLO", "3"]).await?;
    raw.send(&[&["CLIENT", "TRACKING", "ON"][..], options].concat())
        .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !raw.buffer.ends_with(b"+OK\r\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "no OK to CLIENT TRACKING"
        );
        let mut chunk = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut raw.stream, &mut chunk).await?;
        raw.buffer.extend_from_slice(&chunk[..n]);
    }
    raw.buffer.clear();
    Ok(raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_hears_of_writes_and_expiry_of_the_keys_it_read() -> Result<()> {
    let (addr, _node) = start(&["--hz", "50"]).await?;
    let mut reader = tracking_client(addr, &[]).await?;
    reader.send(&["MGET", "a", "b"]).await?;
    reader.expect(b"*2\r\n_\r\n_\r\n").await?;
    let mut writer = client(addr, false).await?;
    query(&mut writer, &["SET", "a", "1"]).await?;
    reader.expect(invalidate("a").as_bytes()).await?;
    // Told once: until it reads the key again, another change says nothing.
    query(&mut writer, &["SET", "a", "2"]).await?;
    query(&mut writer, &["SET", "b", "1", "PX", "50"]).await?;
    reader.expect(invalidate("b").as_bytes()).await?;
    reader.send(&["GET", "b"]).await?;
    reader.expect(b"$1\r\n1\r\n").await?;
    // Nobody touches b again: its expiry is told.
    reader.expect(invalidate("b").as_bytes()).await?;
    // Its own write is told after the reply, as Redis does.
    reader.send(&["GET", "a"]).await?;
    reader.expect(b"$1\r\n2\r\n").await?;
    reader.send(&["SET", "a", "3"]).await?;
    reader
        .expect(format!("+OK\r\n{}", invalidate("a")).as_bytes())
        .await?;
    // FLUSHALL tells every tracking client to drop everything.
    query(&mut writer, &["FLUSHALL"]).await?;
    reader.expect(b">2\r\n$10\r\ninvalidate\r\n_\r\n").await?;
    Ok(())
}

/// Redis writes a blocked client's pushes while it waits (7.0.15 sends the invalidation
/// before the BLPOP's reply), and a writer's reply waits for its invalidations: a client
/// blocked with tracking on must not hold writers back or hear of a change late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_client_hears_of_a_write_while_it_waits() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut reader = tracking_client(addr, &[]).await?;
    reader.send(&["GET", "k"]).await?;
    reader.expect(b"_\r\n").await?;
    reader.send(&["BLPOP", "jobs", "0"]).await?;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut writer = client(addr, false).await?;
    query(&mut writer, &["SET", "k", "v"]).await?;
    // Before anything unblocks it.
    reader.expect(invalidate("k").as_bytes()).await?;
    query(&mut writer, &["RPUSH", "jobs", "x"]).await?;
    reader.expect(b"*2\r\n$4\r\njobs\r\n$1\r\nx\r\n").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcast_tells_every_change_under_the_prefixes_and_noloop_spares_the_writer() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut watcher =
        tracking_client(addr, &["BCAST", "PREFIX", "user:", "PREFIX", "sess:"]).await?;
    let mut writer = client(addr, false).await?;
    query(&mut writer, &["SET", "other", "x"]).await?;
    query(&mut writer, &["MSET", "user:1", "a", "sess:9", "b"]).await?;
    watcher.expect(invalidate("sess:9").as_bytes()).await?;
    watcher.expect(invalidate("user:1").as_bytes()).await?;
    let mut quiet = tracking_client(addr, &["BCAST", "NOLOOP"]).await?;
    quiet.send(&["SET", "user:2", "x"]).await?;
    // Its own write is not told back to it; the other watcher hears it.
    quiet.expect(b"+OK\r\n").await?;
    watcher.expect(invalidate("user:2").as_bytes()).await?;
    query(&mut writer, &["SET", "user:3", "y"]).await?;
    quiet.expect(invalidate("user:3").as_bytes()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_forgets_past_its_bound_and_tells_the_holders() -> Result<()> {
    let (addr, _node) = start(&["--tracking-table-max-keys", "10"]).await?;
    let mut reader = tracking_client(addr, &[]).await?;
    for i in 0..30 {
        reader.send(&["GET", &format!("k{i}")]).await?;
    }
    // 20 keys were forgotten to keep 10: each forgotten key was told (between the
    // replies to the 30 reads).
    let (mut told, mut replies) = (0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while (told < 20 || replies < 30) && std::time::Instant::now() < deadline {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(&mut reader.stream, &mut chunk),
        )
        .await
        .unwrap_or(Ok(0))?;
        reader.buffer.extend_from_slice(&chunk[..n]);
        let seen = String::from_utf8_lossy(&reader.buffer);
        told = seen.matches("invalidate").count();
        replies = seen.matches("_\r\n").count();
    }
    assert!(told >= 20, "{told} invalidations for 20 forgotten keys");
    assert_eq!(replies, 30, "every read answered");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp2_client_hears_through_its_redirect_connection() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut listener = Raw::connect(addr).await?;
    listener.send(&["CLIENT", "ID"]).await?;
    let mut id = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !listener.buffer.ends_with(b"\r\n") {
        assert!(std::time::Instant::now() < deadline);
        let mut chunk = [0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut listener.stream, &mut chunk).await?;
        listener.buffer.extend_from_slice(&chunk[..n]);
    }
    id.push_str(String::from_utf8_lossy(&listener.buffer[1..listener.buffer.len() - 2]).as_ref());
    listener.buffer.clear();
    listener
        .send(&["SUBSCRIBE", "__redis__:invalidate"])
        .await?;
    listener
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n")
        .await?;
    let mut cache = client(addr, false).await?;
    assert_eq!(
        query(&mut cache, &["CLIENT", "TRACKING", "ON", "REDIRECT", &id]).await?,
        Value::Okay
    );
    assert_eq!(
        query(&mut cache, &["CLIENT", "GETREDIR"]).await?,
        Value::Int(id.parse()?)
    );
    query(&mut cache, &["GET", "r"]).await?;
    let mut writer = client(addr, false).await?;
    query(&mut writer, &["SET", "r", "1"]).await?;
    listener
        .expect(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nr\r\n")
        .await?;
    Ok(())
}

/// One INFO field, as text.
async fn info_field(con: &mut redis::aio::MultiplexedConnection, name: &str) -> Result<String> {
    let Value::BulkString(text) = query(con, &["INFO", "everything"]).await? else {
        anyhow::bail!("INFO is a bulk string");
    };
    String::from_utf8(text)?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("INFO has no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_counts_the_tracking_clients_and_the_keys_they_hold() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut admin = client(addr, false).await?;
    assert_eq!(info_field(&mut admin, "tracking_clients").await?, "0");
    let mut reader = tracking_client(addr, &[]).await?;
    reader.send(&["MGET", "a", "b", "c"]).await?;
    reader.expect(b"*3\r\n_\r\n_\r\n_\r\n").await?;
    assert_eq!(info_field(&mut admin, "tracking_clients").await?, "1");
    assert_eq!(info_field(&mut admin, "tracking_total_keys").await?, "3");
    query(&mut admin, &["SET", "a", "1"]).await?;
    reader.expect(invalidate("a").as_bytes()).await?;
    assert_eq!(info_field(&mut admin, "tracking_total_keys").await?, "2");
    Ok(())
}

/// A caching client that stops reading cannot hold writers back: the writer's reply waits
/// for the invalidation at most a few milliseconds, then goes (and that connection is not
/// waited for again until it catches up). The invalidation still reaches the client once
/// it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caching_client_that_does_not_read_does_not_hold_writers_back() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    // No response timeout: sending 64 MB on a loaded machine takes longer than the client
    // library's 500 ms; the SETs below are timed by the test itself.
    let mut writer = waiting_client(addr).await?;
    // Far more than the socket buffers take: its reply stalls the connection's writes.
    let big = "x".repeat(64 << 20);
    query(&mut writer, &["SET", "big", &big]).await?;
    let mut reader = tracking_client(addr, &[]).await?;
    for key in ["a", "b", "c"] {
        reader.send(&["GET", key]).await?;
        reader.expect(b"_\r\n").await?;
    }
    reader.send(&["GET", "big"]).await?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for key in ["a", "b", "c"] {
        let started = std::time::Instant::now();
        query(&mut writer, &["SET", key, "1"]).await?;
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "SET {key} waited {:?} for a client that does not read",
            started.elapsed()
        );
    }
    // Reading again, it gets the big value and then each invalidation, in order.
    let header = format!("${}\r\n", big.len());
    let reply_len = header.len() + big.len() + 2;
    let mut read = 0;
    let mut chunk = vec![0u8; 1 << 20];
    while read < reply_len {
        let want = chunk.len().min(reply_len - read);
        let n = tokio::io::AsyncReadExt::read(&mut reader.stream, &mut chunk[..want]).await?;
        assert!(n > 0, "the connection closed");
        read += n;
    }
    for key in ["a", "b", "c"] {
        reader.expect(invalidate(key).as_bytes()).await?;
    }
    Ok(())
}
