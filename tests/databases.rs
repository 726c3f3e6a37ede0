//! Logical databases on a standalone node over loopback: SELECT (and a client library's
//! `redis://host/N` URL) keeps databases apart in every command that names or lists keys,
//! MOVE, COPY … DB, SWAPDB and FLUSHDB act on one database, blocked clients wake only
//! for their own database, and a cluster member refuses all but database 0.

use std::time::{Duration, Instant};

use anyhow::Result;
use redis::{AsyncCommands, Value};
use support::{query, start};

mod support;

/// A RESP2 connection to database `db`, as an application configures it in its URL.
async fn client_in(
    addr: std::net::SocketAddr,
    db: u8,
) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/{db}"))?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[tokio::test]
async fn each_database_sees_only_its_own_keys() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut zero = client_in(addr, 0).await?;
    let mut one = client_in(addr, 1).await?;
    let _: () = zero.set("shared", "in zero").await?;
    let _: () = one.set("shared", "in one").await?;
    let _: () = one.set_ex("only:one", "x", 100).await?;
    let _: () = one.rpush("queue", "job").await?;
    assert_eq!(zero.get::<_, String>("shared").await?, "in zero");
    assert_eq!(one.get::<_, String>("shared").await?, "in one");
    assert!(!zero.exists::<_, bool>("only:one").await?);
    let dbsize = |n: i64| Value::Int(n);
    assert_eq!(query(&mut zero, &["DBSIZE"]).await?, dbsize(1));
    assert_eq!(query(&mut one, &["DBSIZE"]).await?, dbsize(3));
    assert_eq!(
        sorted(one.keys("*").await?),
        ["only:one", "queue", "shared"],
        "KEYS shows a database's keys by the names its clients gave them"
    );
    assert_eq!(one.keys::<_, Vec<String>>("only*").await?, ["only:one"]);
    let mut scanned: Vec<String> = Vec::new();
    let mut iter = one.scan_match::<_, String>("*").await?;
    while let Some(key) = iter.next_item().await {
        scanned.push(key?);
    }
    drop(iter);
    assert_eq!(sorted(scanned), ["only:one", "queue", "shared"]);
    let random: String = redis::cmd("RANDOMKEY").query_async(&mut zero).await?;
    assert_eq!(random, "shared");
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut zero)
        .await?;
    assert!(info.contains("db0:keys=1,expires=0,avg_ttl=0"), "{info}");
    assert!(info.contains("db1:keys=3,expires=1,avg_ttl=0"), "{info}");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut zero)
        .await?;
    assert!(list.contains(" db=1 "), "{list}");
    // FLUSHDB empties one database; FLUSHALL every one.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut one).await?;
    assert_eq!(query(&mut one, &["DBSIZE"]).await?, dbsize(0));
    assert_eq!(zero.get::<_, String>("shared").await?, "in zero");
    let _: () = one.set("again", "1").await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut zero).await?;
    assert_eq!(query(&mut one, &["DBSIZE"]).await?, dbsize(0));
    assert_eq!(query(&mut zero, &["DBSIZE"]).await?, dbsize(0));
    for (db, message) in [
        ("16", "DB index is out of range"),
        ("-1", "DB index is out of range"),
        ("x", "value is not an integer or out of range"),
    ] {
        let error = query(&mut zero, &["SELECT", db]).await.unwrap_err();
        assert!(error.to_string().contains(message), "{db}: {error}");
    }
    Ok(())
}

#[tokio::test]
async fn move_copy_and_swapdb_carry_values_and_ttls_between_databases() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut zero = client_in(addr, 0).await?;
    let mut two = client_in(addr, 2).await?;
    let _: () = zero.set_ex("session", "s1", 500).await?;
    assert_eq!(
        query(&mut zero, &["MOVE", "session", "2"]).await?,
        Value::Int(1)
    );
    assert!(!zero.exists::<_, bool>("session").await?);
    assert_eq!(two.get::<_, String>("session").await?, "s1");
    let ttl: i64 = two.ttl("session").await?;
    assert!((490..=500).contains(&ttl), "MOVE keeps the TTL: {ttl}");
    let _: () = zero.set("session", "other").await?;
    assert_eq!(
        query(&mut two, &["MOVE", "session", "0"]).await?,
        Value::Int(0),
        "MOVE never overwrites"
    );
    let error = query(&mut two, &["MOVE", "session", "2"])
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("source and destination objects are the same")
    );
    assert_eq!(
        query(&mut two, &["COPY", "session", "backup", "DB", "0"]).await?,
        Value::Int(1)
    );
    assert_eq!(zero.get::<_, String>("backup").await?, "s1");
    assert_eq!(
        two.get::<_, String>("session").await?,
        "s1",
        "COPY leaves the source"
    );
    // SWAPDB: every client of database 0 now sees what database 2 held, and back.
    let _: () = zero.set("marker", "zero").await?;
    assert_eq!(query(&mut zero, &["SWAPDB", "0", "2"]).await?, Value::Okay);
    assert_eq!(zero.get::<_, String>("session").await?, "s1");
    assert!(!zero.exists::<_, bool>("marker").await?);
    assert_eq!(two.get::<_, String>("marker").await?, "zero");
    assert_eq!(query(&mut zero, &["DBSIZE"]).await?, Value::Int(1));
    // A WATCH on either database ends with the swap, as after a write.
    let _: () = redis::cmd("WATCH")
        .arg("session")
        .query_async(&mut zero)
        .await?;
    assert_eq!(query(&mut two, &["SWAPDB", "2", "0"]).await?, Value::Okay);
    assert_eq!(query(&mut zero, &["MULTI"]).await?, Value::Okay);
    query(&mut zero, &["SET", "session", "changed"]).await?;
    let exec = query(&mut zero, &["EXEC"]).await?;
    assert_eq!(
        exec,
        Value::Nil,
        "EXEC aborts after a SWAPDB touched the watched key"
    );
    assert_eq!(zero.get::<_, String>("marker").await?, "zero");
    let error = query(&mut zero, &["SWAPDB", "0", "x"]).await.unwrap_err();
    assert!(
        error.to_string().contains("invalid second DB index"),
        "{error}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_client_wakes_only_for_a_push_to_its_own_database() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut three = client_in(addr, 3).await?;
    let waiter = tokio::spawn(async move {
        redis::cmd("BLPOP")
            .arg("jobs")
            .arg(5)
            .query_async::<Option<(String, String)>>(&mut three)
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.blocking.waiting() < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut zero = client_in(addr, 0).await?;
    let _: () = zero.rpush("jobs", "not yours").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        node.blocking.waiting(),
        1,
        "a push to database 0 wakes nobody in 3"
    );
    let mut pusher = client_in(addr, 3).await?;
    let _: () = pusher.rpush("jobs", "yours").await?;
    assert_eq!(
        waiter.await??,
        Some(("jobs".to_string(), "yours".to_string())),
        "the reply names the key as the client does"
    );
    assert_eq!(
        zero.lrange::<_, Vec<String>>("jobs", 0, -1).await?,
        ["not yours"]
    );
    Ok(())
}

#[tokio::test]
async fn select_inside_multi_applies_to_the_commands_after_it() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client_in(addr, 0).await?;
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("k")
        .arg("zero")
        .cmd("SELECT")
        .arg(4)
        .cmd("SET")
        .arg("k")
        .arg("four")
        .query_async(&mut con)
        .await?;
    assert_eq!(
        con.get::<_, String>("k").await?,
        "four",
        "the connection stays in 4"
    );
    let mut zero = client_in(addr, 0).await?;
    assert_eq!(zero.get::<_, String>("k").await?, "zero");
    Ok(())
}

#[tokio::test]
async fn a_cluster_member_has_database_zero_only() -> Result<()> {
    // A port free for the gossip bus (UDP) and the peer links (TCP) at once (the default,
    // the client port + 10000, may not exist); an ephemeral UDP port may be taken for TCP.
    let bus = (0..100)
        .find_map(|_| {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = udp.local_addr().ok()?.port();
            std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some(port)
        })
        .expect("a port free for UDP and TCP")
        .to_string();
    let (addr, _node) = start(&["--cluster-enabled", "yes", "--cluster-bus-port", &bus]).await?;
    let mut con = client_in(addr, 0).await?;
    assert_eq!(query(&mut con, &["SELECT", "0"]).await?, Value::Okay);
    for (args, message) in [
        (
            &["SELECT", "1"][..],
            "SELECT is not allowed in cluster mode",
        ),
        (
            &["SWAPDB", "0", "1"],
            "SWAPDB is not allowed in cluster mode",
        ),
        (&["MOVE", "k", "1"], "MOVE is not allowed in cluster mode"),
    ] {
        let error = query(&mut con, args).await.unwrap_err();
        assert!(error.to_string().contains(message), "{args:?}: {error}");
    }
    Ok(())
}
