//! The near-cache against real nodes over loopback: a value read once is served from the
//! process; a write through any other client, an expiry, a FLUSHALL or a broken
//! connection takes it out; one process in the cluster loads a missing key while the
//! others wait for its fill; a cluster that cannot be reached leaves the loader to answer;
//! a plain redis-server (no leases) works through SET.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use redis::Value;
use ringkv::{Cache, NearCache, NearCacheError};
use support::{client, query, start};

mod support;

async fn near(addr: SocketAddr) -> Result<NearCache<String, String>> {
    Ok(Cache::builder()
        .max_capacity(10_000)
        .near([addr])
        .lease(Duration::from_secs(5))
        .build()
        .await?)
}

/// Waits (bounded) until the near-cache no longer holds `key`.
async fn until_dropped(cache: &NearCache<String, String>, key: &str) -> Duration {
    let started = Instant::now();
    while cache.cached(&key.to_string()).is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{key} was never invalidated"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_client_takes_the_value_out_of_every_near_cache() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let cache = near(addr).await?;
    let loaded = cache
        .get_with("user:1".into(), async { "Ada".to_string() })
        .await;
    assert_eq!(loaded, "Ada");
    assert_eq!(
        cache.cached(&"user:1".into()).as_deref(),
        Some("Ada"),
        "the loaded value is kept in the process"
    );
    let mut other = client(addr, false).await?;
    assert_eq!(
        query(&mut other, &["GET", "user:1"]).await?,
        Value::BulkString(b"Ada".to_vec()),
        "the loader's value was filled into the cluster"
    );
    // Hits stay in the process: the node sees no more reads.
    for _ in 0..100 {
        assert_eq!(cache.get(&"user:1".into()).await?.as_deref(), Some("Ada"));
    }
    query(&mut other, &["SET", "user:1", "Grace"]).await?;
    until_dropped(&cache, "user:1").await;
    assert_eq!(
        cache.get(&"user:1".into()).await?.as_deref(),
        Some("Grace"),
        "the next read fetches the new value"
    );
    // Expiry on the node is told too.
    query(&mut other, &["PEXPIRE", "user:1", "30"]).await?;
    until_dropped(&cache, "user:1").await;
    cache.get(&"user:1".into()).await?;
    tokio::time::sleep(Duration::from_millis(60)).await;
    until_dropped(&cache, "user:1").await;
    assert_eq!(cache.get(&"user:1".into()).await?, None);
    let stats = cache.stats();
    assert_eq!(stats.loads, 1);
    assert!(stats.l1_hits >= 100, "{stats:?}");
    assert!(stats.invalidations >= 3, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_near_cache_reach_the_others() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let (first, second) = (near(addr).await?, near(addr).await?);
    first.insert("k".into(), "1".into()).await?;
    assert_eq!(first.cached(&"k".into()).as_deref(), Some("1"));
    assert_eq!(second.get(&"k".into()).await?.as_deref(), Some("1"));
    assert_eq!(second.cached(&"k".into()).as_deref(), Some("1"));
    first.insert("k".into(), "2".into()).await?;
    until_dropped(&second, "k").await;
    assert_eq!(second.get(&"k".into()).await?.as_deref(), Some("2"));
    second.invalidate(&"k".into()).await?;
    until_dropped(&first, "k").await;
    assert_eq!(first.get(&"k".into()).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_loads_a_missing_key_while_the_others_wait_for_its_fill() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let caches = [near(addr).await?, near(addr).await?, near(addr).await?];
    let origin_calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for cache in &caches {
        for _ in 0..20 {
            let (cache, origin_calls) = (cache.clone(), origin_calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_with("report".into(), async {
                        origin_calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        "slow query result".to_string()
                    })
                    .await
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await?, "slow query result");
    }
    assert_eq!(
        origin_calls.load(Ordering::SeqCst),
        1,
        "60 callers in 3 processes ran one load"
    );
    let waits: u64 = caches.iter().map(|c| c.stats().lease_waits).sum();
    assert!(waits > 0, "the other processes waited for the fill");
    for cache in &caches {
        assert_eq!(
            cache.cached(&"report".into()).as_deref(),
            Some("slow query result")
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_gives_the_lease_back_and_is_not_cached() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let (first, second) = (near(addr).await?, near(addr).await?);
    let failed = first
        .try_get_with("k".into(), async { Err::<String, _>("database down") })
        .await;
    assert_eq!(failed.unwrap_err().as_ref(), &"database down");
    // Abandoned, so the next process gets the lease at once instead of waiting 5 s.
    let started = Instant::now();
    let value = second.get_with("k".into(), async { "v".to_string() }).await;
    assert_eq!(value, "v");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(first.stats().load_failures, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_and_a_broken_connection_drop_what_the_member_served() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let cache = near(addr).await?;
    for i in 0..50 {
        cache
            .get_with(format!("k{i}"), async move { format!("v{i}") })
            .await;
    }
    assert_eq!(cache.entry_count(), 50);
    let mut admin = client(addr, false).await?;
    query(&mut admin, &["FLUSHALL"]).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.entry_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "FLUSHALL did not empty the near-cache"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for i in 0..50 {
        cache
            .get_with(format!("k{i}"), async move { format!("w{i}") })
            .await;
    }
    assert_eq!(cache.entry_count(), 50);
    let flushes = cache.stats().flushes;
    // Every other connection dies: nobody would tell this cache of changes any more.
    query(
        &mut admin,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.entry_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "a lost link left its values cached"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(cache.stats().flushes > flushes);
    query(&mut admin, &["SET", "k1", "changed while disconnected"]).await?;
    assert_eq!(
        cache.get(&"k1".into()).await?.as_deref(),
        Some("changed while disconnected"),
        "the cache reconnects and reads the current value"
    );
    Ok(())
}

/// A server that answers the handshake (HELLO 3, CLIENT TRACKING ON) and CLUSTER SLOTS as a
/// standalone node, then answers the next command with `then` (nothing: it closes) and
/// accepts nobody else.
async fn fake_server(then: &'static [u8]) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        drop(listener);
        let mut seen = Vec::new();
        let mut chunk = [0u8; 1024];
        // Commands answered so far: the handshake's two, CLUSTER SLOTS, then the next one.
        let mut answered = 0;
        while answered < 4 {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.extend_from_slice(&chunk[..n]);
            let has = |seen: &[u8], word: &[u8]| seen.windows(word.len()).any(|w| w == word);
            if answered == 0 && has(&seen, b"TRACKING") {
                answered = 2;
                let _ = stream.write_all(b"%1\r\n+server\r\n+fake\r\n+OK\r\n").await;
                seen.clear();
            }
            if answered == 2 && has(&seen, b"SLOTS") {
                answered = 3;
                let _ = stream
                    .write_all(b"-ERR This instance has cluster support disabled\r\n")
                    .await;
                seen.clear();
                if then.is_empty() {
                    return;
                }
            } else if answered == 3 && !seen.is_empty() {
                answered = 4;
                let _ = stream.write_all(then).await;
            }
        }
        // Hold the connection open: only the reply's content may close it.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_out_of_reach_leaves_the_loader_to_answer() -> Result<()> {
    let addr = fake_server(b"").await?;
    let cache: NearCache<String, String> = Cache::builder()
        .near([addr])
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_millis(300))
        .build()
        .await?;
    let started = Instant::now();
    let value = cache
        .get_with("k".into(), async { "from the database".to_string() })
        .await;
    assert_eq!(value, "from the database");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failing open is bounded"
    );
    assert_eq!(cache.entry_count(), 0, "an untracked value is not cached");
    let stats = cache.stats();
    assert_eq!((stats.fail_open, stats.loads), (1, 1));
    assert!(matches!(
        cache.get(&"k".into()).await,
        Err(NearCacheError::Connection { .. } | NearCacheError::Timeout { .. })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_resp3_is_a_clear_error() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if let Ok((mut stream, _)) = listener.accept().await {
            let mut chunk = [0u8; 1024];
            let _ = stream.read(&mut chunk).await;
            let _ = stream
                .write_all(b"-ERR unknown command 'HELLO'\r\n-ERR unknown command 'CLIENT'\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let built = Cache::<String, String>::builder()
        .near([addr])
        .build()
        .await;
    match built {
        Err(NearCacheError::Handshake { reply, .. }) => {
            assert!(reply.contains("unknown command"), "{reply}")
        }
        other => panic!("expected a handshake error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_redis_server_without_leases_is_filled_with_set() -> Result<()> {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-server is not installed (scripts/test installs it); skipped");
        return Ok(());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(std::mem::replace(
        &mut server,
        std::process::Command::new("true").spawn()?,
    ));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cache = near(addr).await?;
    let value = cache
        .get_with("k".into(), async { "loaded".to_string() })
        .await;
    assert_eq!(value, "loaded");
    assert_eq!(cache.cached(&"k".into()).as_deref(), Some("loaded"));
    let mut other = client(addr, false).await?;
    assert_eq!(
        query(&mut other, &["GET", "k"]).await?,
        Value::BulkString(b"loaded".to_vec())
    );
    query(&mut other, &["SET", "k", "new"]).await?;
    until_dropped(&cache, "k").await;
    assert_eq!(cache.get(&"k".into()).await?.as_deref(), Some("new"));
    Ok(())
}

/// A cluster member in this process: its client address and its gossip port.
async fn member(join: Option<u16>) -> Result<(SocketAddr, u16, Arc<ringkv_server::Node>)> {
    let bus = support::free_udp_port();
    let bus_text = bus.to_string();
    let seed = join.map(|port| format!("127.0.0.1:{port}"));
    let mut args = vec!["--cluster-enabled", "yes", "--cluster-bus-port", &bus_text];
    if let Some(seed) = &seed {
        args.extend(["--cluster-join", seed]);
    }
    let (addr, node) = start(&args).await?;
    Ok((addr, bus, node))
}

/// Waits (bounded) until every member reports the same settled table of `count` members.
async fn wait_agreed(addrs: &[SocketAddr], count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut infos = Vec::new();
        for &addr in addrs {
            let mut con = client(addr, false).await?;
            let Value::BulkString(text) = query(&mut con, &["CLUSTER", "INFO"]).await? else {
                anyhow::bail!("CLUSTER INFO is a bulk string");
            };
            infos.push(String::from_utf8(text)?);
        }
        let field = |info: &str, name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
        };
        let settled = infos.iter().all(|i| {
            field(i, "cluster_state").as_deref() == Some("ok")
                && field(i, "cluster_known_nodes") == Some(count.to_string())
                && field(i, "cluster_members_joining").as_deref() == Some("0")
                && field(i, "cluster_slots_learning").is_none_or(|n| n == "0")
                && field(i, "cluster_table_judged").as_deref() == Some("1")
        }) && infos.iter().all(|i| {
            field(i, "cluster_current_epoch") == field(&infos[0], "cluster_current_epoch")
        });
        if settled {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "no agreement on {count} members");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SET through whichever member owns the key (following -MOVED), as a cluster client does.
async fn cluster_set(any: SocketAddr, key: &str, value: &str) -> Result<()> {
    let mut addr = any;
    for _ in 0..5 {
        let mut con = client(addr, false).await?;
        match query(&mut con, &["SET", key, value]).await {
            Ok(_) => return Ok(()),
            Err(error) if error.redirect_node().is_some() => {
                let (host, _) = error.redirect_node().expect("MOVED names a member");
                addr = host.parse()?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    anyhow::bail!("{key} kept moving")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_each_member_tells_of_its_keys_and_moved_slots_are_followed() -> Result<()> {
    let first = member(None).await?;
    let mut members = vec![first.clone()];
    for _ in 0..2 {
        members.push(member(Some(first.1)).await?);
    }
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.0).collect();
    wait_agreed(&addrs, 3).await?;
    let cache = near(addrs[0]).await?;
    let keys: Vec<String> = (0..300).map(|i| format!("item:{i}")).collect();
    for key in &keys {
        let loaded = cache
            .get_with(key.clone(), async { format!("{key}=1") })
            .await;
        assert_eq!(loaded, format!("{key}=1"));
    }
    assert_eq!(cache.entry_count(), 300, "keys on every member are cached");
    for key in &keys {
        cluster_set(addrs[2], key, &format!("{key}=2")).await?;
    }
    for key in &keys {
        until_dropped(&cache, key).await;
        assert_eq!(cache.get(key).await?, Some(format!("{key}=2")));
    }

    // A fourth member takes slots from the others: the cache follows them there.
    let newcomer = member(Some(first.1)).await?;
    let mut addrs = addrs;
    addrs.push(newcomer.0);
    members.push(newcomer);
    wait_agreed(&addrs, 4).await?;
    let mut newcomer_client = client(addrs[3], false).await?;
    let Value::Int(handed) = query(&mut newcomer_client, &["DBSIZE"]).await? else {
        anyhow::bail!("DBSIZE is an integer");
    };
    assert!(handed > 0, "the newcomer took some of the keys");
    for key in &keys {
        assert_eq!(
            cache.get(key).await?,
            Some(format!("{key}=2")),
            "{key} after its slot may have moved"
        );
    }
    for key in &keys {
        cluster_set(addrs[3], key, &format!("{key}=3")).await?;
    }
    for key in &keys {
        until_dropped(&cache, key).await;
        assert_eq!(cache.get(key).await?, Some(format!("{key}=3")));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_answers_garbage_is_cut_off_and_the_loader_answers() -> Result<()> {
    // A lying peer: a RESP3 type byte that does not exist. The link must close at once
    // (not wait for the request timeout) and the read fail open.
    for garbage in [&b"?what\r\n"[..], b"$-7\r\n"] {
        let addr = fake_server(garbage).await?;
        let cache: NearCache<String, String> = Cache::builder()
            .near([addr])
            .request_timeout(Duration::from_secs(5))
            .build()
            .await?;
        let started = Instant::now();
        let value = cache
            .get_with("k".into(), async { "from the database".to_string() })
            .await;
        assert_eq!(value, "from the database");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a malformed reply waited for the timeout"
        );
        let stats = cache.stats();
        assert_eq!((stats.fail_open, stats.l1.hits), (1, 0));
        assert_eq!(cache.entry_count(), 0);
        assert!(stats.flushes >= 1, "the broken link flushed what it served");
    }
    Ok(())
}
