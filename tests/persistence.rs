//! The persistence tier in a loopback node: LOADING while recovering, MISCONF and
//! disk-full paths through the fault-injecting backend, store mode larger than memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Result;
use redis::AsyncCommands;
use ringkv::store::persist::{FaultyPersist, MemoryPersist, Persist, SledPersist};
use ringkv_server::{Config, Node, Server};

mod support;
use support::{client, start};

async fn start_with(backend: Arc<dyn Persist>, extra: &[&str]) -> Result<(SocketAddr, Arc<Node>)> {
    let mut args = vec!["ringkv-server", "--port", "0", "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    let server = Server::bind_with_backend(Config::from_args(args)?, None, Some(backend)).await?;
    let addr = server.local_addrs()[0];
    let node = server.node();
    tokio::spawn(server.run());
    wait_loaded(&node).await;
    Ok((addr, node))
}

async fn wait_loaded(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.loading.load(Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn info_persistence(con: &mut redis::aio::MultiplexedConnection) -> Result<String> {
    Ok(redis::cmd("INFO")
        .arg("persistence")
        .query_async(con)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_loading_commands_answer_loading_and_info_still_works() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    node.loading.store(true, Relaxed);
    let error = con.get::<_, Option<String>>("k").await.unwrap_err();
    assert_eq!(error.code(), Some("LOADING"), "{error}");
    assert!(info_persistence(&mut con).await?.contains("\r\nloading:1"));
    node.loading.store(false, Relaxed);
    assert_eq!(con.get::<_, Option<String>>("k").await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_refuses_writes_with_misconf_while_the_disk_fails_and_recovers() -> Result<()> {
    let faulty = Arc::new(FaultyPersist::new(MemoryPersist::default()));
    let (addr, _node) = start_with(faulty.clone(), &["--appendfsync", "always"]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.set("before", "1").await?;
    assert_eq!(faulty.inner().get(b"before")?.unwrap().value[1..], *b"1");

    faulty.fail_writes(true);
    // The write that meets the failure gets no reply claiming success: its connection
    // closes. Later writes are refused up front, reads keep working.
    assert!(con.set::<_, _, ()>("during", "2").await.is_err());
    let mut con = client(addr, false).await?;
    let error = con.set::<_, _, ()>("during", "3").await.unwrap_err();
    assert_eq!(error.code(), Some("MISCONF"), "{error}");
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    assert_eq!(con.get::<_, String>("before").await?, "1");
    let info = info_persistence(&mut con).await?;
    assert!(info.contains("aof_last_write_status:err"), "{info}");

    faulty.fail_writes(false);
    // The writer probes the disk while idle and lifts the refusal by itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match con.set::<_, _, ()>("after", "4").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline && e.code() == Some("MISCONF") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(faulty.inner().get(b"after")?.is_some());
    assert!(
        info_persistence(&mut con)
            .await?
            .contains("aof_last_write_status:ok")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_mode_with_everysec_keeps_serving_when_the_disk_fails() -> Result<()> {
    let faulty = Arc::new(FaultyPersist::new(MemoryPersist::default()));
    let (addr, _node) = start_with(faulty.clone(), &[]).await?;
    let mut con = client(addr, false).await?;
    faulty.fail_writes(true);
    for i in 0..20 {
        let _: () = con.set(format!("k{i}"), i).await?;
    }
    assert_eq!(con.get::<_, i64>("k19").await?, 19, "memory still serves");
    let error = redis::cmd("SAVE")
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("No space left"),
        "SAVE reports it: {error}"
    );
    assert!(
        info_persistence(&mut con)
            .await?
            .contains("aof_last_write_status:err")
    );
    faulty.fail_writes(false);
    let _: () = con.set("k-after", 1).await?;
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    assert!(
        info_persistence(&mut con)
            .await?
            .contains("aof_last_write_status:ok")
    );
    assert!(faulty.inner().get(b"k-after")?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_holds_five_times_maxmemory_and_returns_every_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sled: Arc<dyn Persist> = Arc::new(SledPersist::open(dir.path())?);
    let (addr, node) = start_with(
        sled,
        &[
            "--mode",
            "store",
            "--maxmemory",
            "2mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
    )
    .await?;
    let mut con = client(addr, false).await?;
    let value = |i: u32| format!("{i:08}{}", "v".repeat(1000));
    let keys = 10_000u32; // about 10 MB of values against 2 MB of memory
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.set(format!("key:{i}"), value(i)).ignore();
        }
        let _: () = pipe.query_async(&mut con).await?;
    }
    let used = node.store.used_memory() as u64;
    assert!(
        used <= 2 * 1024 * 1024 + 64 * 1024,
        "memory stayed bounded: {used}"
    );
    assert!(
        (node.store.len() as u32) < keys / 2,
        "most values live on disk only"
    );
    for i in 0..keys {
        let got: Option<String> = con.get(format!("key:{i}")).await?;
        assert_eq!(got.as_deref(), Some(value(i).as_str()), "key:{i}");
    }
    let info = info_persistence(&mut con).await?;
    let fault_ins: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("store_fault_ins:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(fault_ins >= u64::from(keys) / 2, "{info}");
    // A DEL of an evicted key deletes it on disk too: it does not come back.
    let _: () = con.del("key:0").await?;
    let _: () = con.set("filler", "x").await?;
    assert_eq!(con.get::<_, Option<String>>("key:0").await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_commands_explain_themselves_without_a_tier_and_on_bad_arguments() -> Result<()> {
    let (addr, _node) = start(&[]).await?; // --persistence no
    let mut con = client(addr, false).await?;
    for command in ["SAVE", "BGSAVE"] {
        let error = redis::cmd(command)
            .query_async::<()>(&mut con)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("persistence is disabled"),
            "{command}: {error}"
        );
    }
    let lastsave: i64 = redis::cmd("LASTSAVE").query_async(&mut con).await?;
    assert!(
        lastsave > 1_600_000_000,
        "the start time without a tier: {lastsave}"
    );

    // `appendfsync no` flushes rarely, so applied changes wait for SAVE.
    let (addr, _node) =
        start_with(Arc::new(MemoryPersist::default()), &["--appendfsync", "no"]).await?;
    let mut con = client(addr, false).await?;
    let error = redis::cmd("BGSAVE")
        .arg("NOW")
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("syntax error"), "{error}");
    let started: String = redis::cmd("BGSAVE")
        .arg("SCHEDULE")
        .query_async(&mut con)
        .await?;
    assert_eq!(started, "Background saving started");
    let _: () = con.set("k", "v").await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !info_persistence(&mut con)
        .await?
        .contains("rdb_changes_since_last_save:1")
    {
        assert!(Instant::now() < deadline, "the change was never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    let info = info_persistence(&mut con).await?;
    assert!(info.contains("rdb_changes_since_last_save:0"), "{info}");
    Ok(())
}
