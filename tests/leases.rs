//! Stampede protection over RESP: CACHE.GET leases with concurrent clients on loopback.

use std::time::{Duration, Instant};

use anyhow::Result;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use tokio::task::JoinSet;

mod support;
use support::{start, waiting_client as client};

type GetReply = (Option<String>, Option<String>);

async fn cache_get(
    con: &mut MultiplexedConnection,
    key: &str,
    lease_ms: u64,
    wait_ms: u64,
) -> Result<GetReply> {
    Ok(redis::cmd("CACHE.GET")
        .arg(key)
        .arg("LEASE")
        .arg(lease_ms)
        .arg("WAIT")
        .arg(wait_ms)
        .query_async(con)
        .await?)
}

async fn fill(
    con: &mut MultiplexedConnection,
    key: &str,
    token: &str,
    value: &str,
    ttl: &[&str],
) -> redis::RedisResult<String> {
    redis::cmd("CACHE.FILL")
        .arg(key)
        .arg(token)
        .arg(value)
        .arg(ttl)
        .query_async(con)
        .await
}

/// `n` separate connections: a waiting CACHE.GET holds up its own connection's pipeline.
async fn clients(addr: std::net::SocketAddr, n: usize) -> Result<Vec<MultiplexedConnection>> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(client(addr).await?);
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_gets_the_lease_and_every_other_client_gets_its_fill() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut filler = client(addr).await?;
    let (value, token) = cache_get(&mut filler, "hot", 5_000, 0).await?;
    assert_eq!(value, None);
    let token = token.expect("the first miss gets a lease");

    let mut waiters = JoinSet::new();
    for mut con in clients(addr, 50).await? {
        waiters.spawn(async move { cache_get(&mut con, "hot", 5_000, 3_000).await });
    }
    // Every waiter is parked on the server, none was handed a lease.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        waiters.try_join_next().is_none(),
        "a waiter returned before the fill"
    );
    assert_eq!(
        fill(&mut filler, "hot", &token, "v1", &["EX", "60"]).await?,
        "OK"
    );
    let mut served = 0;
    while let Some(reply) = waiters.join_next().await {
        assert_eq!(reply??, (Some("v1".to_string()), None));
        served += 1;
    }
    assert_eq!(served, 50);
    // Plain GET and TTL see the filled key; a later CACHE.GET is a plain hit.
    assert_eq!(filler.get::<_, String>("hot").await?, "v1");
    let ttl: i64 = filler.ttl("hot").await?;
    assert!((59..=60).contains(&ttl), "{ttl}");
    assert_eq!(
        cache_get(&mut filler, "hot", 5_000, 0).await?,
        (Some("v1".into()), None)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tokens_and_fills_after_a_write_change_nothing() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr).await?;
    let (_, token) = cache_get(&mut con, "k", 5_000, 0).await?;
    let token = token.unwrap();
    let error = fill(&mut con, "k", "12345", "bogus", &[])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("STALELEASE"), "{error}");
    let error = fill(&mut con, "k", "not-a-token", "bogus", &[])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("STALELEASE"));
    assert!(!con.exists::<_, bool>("k").await?);

    // Someone writes the key while the lease is out: the fill would overwrite newer data.
    let _: () = con.set("k", "newer").await?;
    let error = fill(&mut con, "k", &token, "older", &[]).await.unwrap_err();
    assert!(
        error.to_string().contains("modified since the lease"),
        "{error}"
    );
    assert_eq!(con.get::<_, String>("k").await?, "newer");
    // The same token cannot be used twice.
    let _: () = con.del("k").await?;
    let (_, token) = cache_get(&mut con, "k", 5_000, 0).await?;
    let token = token.unwrap();
    assert_eq!(
        fill(&mut con, "k", &token, "v", &["PX", "60000"]).await?,
        "OK"
    );
    assert!(fill(&mut con, "k", &token, "again", &[]).await.is_err());
    assert_eq!(con.get::<_, String>("k").await?, "v");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lease_goes_to_exactly_one_waiter() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut holder = client(addr).await?;
    let (_, token) = cache_get(&mut holder, "k", 10_000, 0).await?;
    let mut waiters = JoinSet::new();
    for mut con in clients(addr, 5).await? {
        waiters.spawn(async move {
            let first = cache_get(&mut con, "k", 10_000, 5_000).await?;
            Ok::<_, anyhow::Error>((first, con))
        });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let abandoned: String = redis::cmd("CACHE.ABANDON")
        .arg("k")
        .arg(token.unwrap())
        .query_async(&mut holder)
        .await?;
    assert_eq!(abandoned, "OK");
    // Exactly one waiter comes back with a new lease; the others keep waiting for it.
    let ((value, new_token), mut new_holder) = waiters.join_next().await.unwrap()??;
    assert_eq!(value, None);
    let new_token = new_token.expect("the first waiter to wake leads");
    assert_eq!(node.leases.held(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        waiters.try_join_next().is_none(),
        "nobody else got a lease or a value before the fill"
    );
    fill(&mut new_holder, "k", &new_token, "loaded", &[]).await?;
    while let Some(reply) = waiters.join_next().await {
        assert_eq!(reply??.0, (Some("loaded".to_string()), None));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_holder_vanished_expires_and_wait_is_bounded() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut crashed = client(addr).await?;
    let (_, token) = cache_get(&mut crashed, "k", 300, 0).await?;
    assert!(token.is_some());
    drop(crashed);
    let mut con = client(addr).await?;
    // WAIT shorter than the lease: nothing, after about WAIT.
    let started = Instant::now();
    assert_eq!(cache_get(&mut con, "k", 300, 100).await?, (None, None));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(90) && waited < Duration::from_millis(290),
        "{waited:?}"
    );
    // WAIT longer than the lease: a new lease once the old one runs out.
    let (value, token) = cache_get(&mut con, "k", 300, 2_000).await?;
    assert_eq!(value, None);
    assert!(token.is_some(), "the expired lease passed to a waiter");
    assert!(started.elapsed() >= Duration::from_millis(290));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_grace_one_client_gets_a_refresh_lease_and_others_the_current_value() -> Result<()> {
    let (addr, _node) = start(&["--cache-grace-ms", "10000", "--cache-xfetch-beta", "0"]).await?;
    let mut a = client(addr).await?;
    let mut b = client(addr).await?;
    let (_, token) = cache_get(&mut a, "k", 5_000, 0).await?;
    fill(&mut a, "k", &token.unwrap(), "v1", &["PX", "100"]).await?;
    assert_eq!(
        cache_get(&mut a, "k", 5_000, 0).await?,
        (Some("v1".into()), None),
        "fresh: no lease"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Stale but within grace: one refresh lease, everyone else reads v1 meanwhile.
    let (value, refresh) = cache_get(&mut a, "k", 5_000, 0).await?;
    assert_eq!(value.as_deref(), Some("v1"));
    let refresh = refresh.expect("a refresh lease");
    assert_eq!(
        cache_get(&mut b, "k", 5_000, 0).await?,
        (Some("v1".into()), None)
    );
    assert_eq!(
        b.get::<_, String>("k").await?,
        "v1",
        "plain GET keeps working"
    );
    fill(&mut a, "k", &refresh, "v2", &["EX", "60"]).await?;
    assert_eq!(
        cache_get(&mut b, "k", 5_000, 0).await?,
        (Some("v2".into()), None)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfetch_hands_out_one_early_refresh_lease_before_expiry() -> Result<()> {
    // β = 1000 with a 200 ms load: refreshes are due from well before the 2 s expiry.
    let (addr, _node) = start(&["--cache-xfetch-beta", "1000"]).await?;
    let mut con = client(addr).await?;
    let (_, token) = cache_get(&mut con, "k", 5_000, 0).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    fill(&mut con, "k", &token.unwrap(), "v1", &["PX", "2000"]).await?;
    let mut tokens = 0;
    for _ in 0..20 {
        let (value, token) = cache_get(&mut con, "k", 5_000, 0).await?;
        assert_eq!(
            value.as_deref(),
            Some("v1"),
            "everyone keeps reading the current value"
        );
        tokens += usize::from(token.is_some());
    }
    assert_eq!(
        tokens, 1,
        "exactly one early refresh lease while it is held"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_fills_lengthen_stable_hot_keys_and_shorten_changed_ones() -> Result<()> {
    let (addr, _node) = start(&[
        "--cache-adaptive-base-ms",
        "10000",
        "--cache-adaptive-min-ms",
        "1000",
        "--cache-adaptive-max-ms",
        "40000",
        "--cache-xfetch-beta",
        "0",
    ])
    .await?;
    let mut con = client(addr).await?;
    let refill = async |con: &mut MultiplexedConnection, value: &str| -> Result<i64> {
        let _: () = con.del("k").await?;
        let (_, token) = cache_get(con, "k", 5_000, 0).await?;
        let reply: String = redis::cmd("CACHE.FILL")
            .arg("k")
            .arg(token.unwrap())
            .arg(value)
            .arg("ADAPTIVE")
            .query_async(con)
            .await?;
        assert_eq!(reply, "OK");
        for _ in 0..3 {
            cache_get(con, "k", 5_000, 0).await?; // hot
        }
        Ok(con.pttl("k").await?)
    };
    let near = |pttl: i64, expected: i64| (expected - 500..=expected).contains(&pttl);
    let first = refill(&mut con, "same").await?;
    assert!(near(first, 10_000), "{first}");
    // ×1.5 while unchanged and hot, capped at max; ×0.25 once the value changes.
    for expected in [15_000, 22_500, 33_750, 40_000] {
        let pttl = refill(&mut con, "same").await?;
        assert!(
            near(pttl, expected),
            "expected about {expected}, got {pttl}"
        );
    }
    let changed = refill(&mut con, "different").await?;
    assert!(near(changed, 10_000), "changed: ×0.25, got {changed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_reject_bad_input_clearly() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr).await?;
    let err = |r: redis::RedisResult<Value>| r.unwrap_err().to_string();
    assert!(
        err(redis::cmd("CACHE.GET").arg("k").query_async(&mut con).await)
            .contains("wrong number of arguments")
    );
    assert!(
        err(redis::cmd("CACHE.GET")
            .arg("k")
            .arg("WAIT")
            .arg(5)
            .query_async(&mut con)
            .await)
        .contains("needs LEASE")
    );
    assert!(
        err(redis::cmd("CACHE.GET")
            .arg("k")
            .arg("LEASE")
            .arg(0)
            .query_async(&mut con)
            .await)
        .contains("invalid expire time")
    );
    assert!(
        err(redis::cmd("CACHE.GET")
            .arg("k")
            .arg("LEASE")
            .arg("x")
            .query_async(&mut con)
            .await)
        .contains("not an integer")
    );
    assert!(
        err(redis::cmd("CACHE.GET")
            .arg("k")
            .arg("LEASE")
            .arg(5)
            .arg("BOGUS")
            .arg(1)
            .query_async(&mut con)
            .await)
        .contains("syntax error")
    );
    assert!(
        err(redis::cmd("CACHE.FILL")
            .arg("k")
            .arg("1")
            .arg("v")
            .arg("EX")
            .query_async(&mut con)
            .await)
        .contains("syntax error")
    );
    let _: () = con.hset("h", "f", "v").await?;
    assert!(
        err(redis::cmd("CACHE.GET")
            .arg("h")
            .arg("LEASE")
            .arg(5)
            .query_async(&mut con)
            .await)
        .contains("wrong kind of value")
    );
    // Inside MULTI a CACHE.GET never blocks the transaction: a held lease reads as [nil, nil].
    let (_, token) = cache_get(&mut con, "k", 5_000, 0).await?;
    assert!(token.is_some());
    let (reply,): (GetReply,) = redis::pipe()
        .atomic()
        .cmd("CACHE.GET")
        .arg("k")
        .arg("LEASE")
        .arg(5_000)
        .arg("WAIT")
        .arg(5_000)
        .query_async(&mut con)
        .await?;
    assert_eq!(reply, (None, None));
    assert_eq!(con.ping::<String>().await?, "PONG");
    Ok(())
}
