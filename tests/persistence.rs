//! The persistence tier in a loopback node: LOADING while recovering (PING included),
//! MISCONF and disk-full paths through fault-injecting storage, restarts that keep what was
//! written, checkpoints, and store mode larger than memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::AsyncCommands;
use ringkv::store::base_image::{FaultyKv, MemoryKv};
use ringkv::store::data_dir::{FaultyDir, MemoryDir};
use ringkv_server::{Config, Node, Server, Storage};

mod support;
use support::{client, start};

/// A disk that fails on command: the WAL directory and the base image together.
struct Disk {
    dir: Arc<FaultyDir<MemoryDir>>,
    base: Arc<FaultyKv<MemoryKv>>,
}

impl Disk {
    fn new() -> Disk {
        Disk {
            dir: Arc::new(FaultyDir::new(MemoryDir::default())),
            base: Arc::new(FaultyKv::new(MemoryKv::default())),
        }
    }

    fn storage(&self) -> Storage {
        Storage {
            dir: self.dir.clone(),
            base: self.base.clone(),
        }
    }

    fn fail(&self, fail: bool) {
        self.dir.fail_writes(fail);
        self.base.fail_writes(fail);
    }
}

struct Running {
    addr: SocketAddr,
    node: Arc<Node>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// A clean stop: the tier writes and syncs what it holds.
    async fn stop(self) -> Result<()> {
        self.node.begin_shutdown();
        self.task.await??;
        // A restart in the same process must wait for the old instance's last tasks to let
        // go of it (they hold the data directory's lock); a new process never has to.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.node) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

async fn start_with(storage: Storage, extra: &[&str]) -> Result<Running> {
    let mut args = vec!["ringkv-server", "--port", "0", "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    let server = Server::bind_with_storage(Config::from_args(args)?, None, Some(storage)).await?;
    let addr = server.local_addrs()[0];
    let node = server.node();
    let task = tokio::spawn(server.run());
    wait_loaded(&node).await;
    Ok(Running { addr, node, task })
}

async fn wait_loaded(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.loading.load(Relaxed) && Instant::now() < deadline {
        if let Some(fatal) = node.fatal.lock().as_ref() {
            panic!("the node could not recover: {fatal}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn info_persistence(con: &mut redis::aio::MultiplexedConnection) -> Result<String> {
    Ok(redis::cmd("INFO")
        .arg("persistence")
        .query_async(con)
        .await?)
}

fn field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_loading_every_command_but_info_answers_loading_ping_included() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    node.loading.store(true, Relaxed);
    let error = con.get::<_, Option<String>>("k").await.unwrap_err();
    assert_eq!(error.code(), Some("LOADING"), "{error}");
    // A readiness probe (`redis-cli ping`) must not admit a node that refuses commands.
    let error = redis::cmd("PING")
        .query_async::<String>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("LOADING"), "{error}");
    assert!(
        error
            .to_string()
            .contains("Redis is loading the dataset in memory")
    );
    assert!(info_persistence(&mut con).await?.contains("\r\nloading:1"));
    node.loading.store(false, Relaxed);
    assert_eq!(con.get::<_, Option<String>>("k").await?, None);
    let pong: String = redis::cmd("PING").query_async(&mut con).await?;
    assert_eq!(pong, "PONG");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_write_through_checkpoints() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    for i in 0..200 {
        let _: () = con.set(format!("k{i}"), i).await?;
    }
    let _: () = con.hset("h", "f", "v").await?;
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    let info = info_persistence(&mut con).await?;
    assert_eq!(field(&info, "base_keys"), Some(201), "{info}");
    assert_eq!(
        field(&info, "rdb_changes_since_last_save"),
        Some(0),
        "{info}"
    );
    // After the checkpoint: the WAL tail.
    let _: () = con.set("k0", "changed").await?;
    let _: () = con.del("k1").await?;
    let _: () = con.set_ex("ttl", "v", 100).await?;
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    assert_eq!(con.get::<_, String>("k0").await?, "changed");
    assert_eq!(con.get::<_, Option<String>>("k1").await?, None);
    assert_eq!(con.get::<_, i64>("k199").await?, 199);
    assert_eq!(con.hget::<_, _, String>("h", "f").await?, "v");
    let ttl: i64 = con.ttl("ttl").await?;
    assert!((90..=100).contains(&ttl), "the deadline survives: {ttl}");
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut con).await?;
    assert_eq!(dbsize, 201);
    let info = info_persistence(&mut con).await?;
    assert_eq!(field(&info, "loaded_keys"), Some(201), "{info}");
    assert_eq!(field(&info, "loaded_wal_records"), Some(3), "{info}");
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_comes_back_whole_from_the_base_image_and_the_wal_tail() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let mut model: std::collections::VecDeque<String> = Default::default();
    for i in 0..3_000 {
        let _: () = con.rpush("queue", format!("job:{i}")).await?;
        model.push_back(format!("job:{i}"));
    }
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    // The WAL tail: every kind of list record after the checkpoint.
    let _: () = con.lpush("queue", &["h1", "h2"]).await?;
    model.push_front("h1".into());
    model.push_front("h2".into());
    let _: Vec<String> = redis::cmd("LPOP")
        .arg("queue")
        .arg(3)
        .query_async(&mut con)
        .await?;
    model.drain(..3);
    let _: Option<String> = con.rpop("queue", None).await?;
    model.pop_back();
    let _: () = con.lset("queue", 5, "set").await?;
    model[5] = "set".into();
    let _: i64 = con.linsert_before("queue", "job:10", "inserted").await?;
    let at = model.iter().position(|e| e == "job:10").unwrap();
    model.insert(at, "inserted".into());
    let _: i64 = con.lrem("queue", 1, "job:20").await?;
    model.retain(|e| e != "job:20");
    let _: () = con.ltrim("queue", 2, -3).await?;
    model.drain(..2);
    model.truncate(model.len() - 2);
    let _: Option<String> = con
        .lmove(
            "queue",
            "done",
            redis::Direction::Left,
            redis::Direction::Right,
        )
        .await?;
    let moved = model.pop_front().unwrap();
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let back: Vec<String> = con.lrange("queue", 0, -1).await?;
    assert_eq!(back, Vec::from(model));
    assert_eq!(
        con.lrange::<_, Vec<String>>("done", 0, -1).await?,
        vec![moved]
    );
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_comes_back_whole_from_the_base_image_and_the_wal_tail() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let mut model = std::collections::BTreeSet::new();
    for i in 0..3_000 {
        let _: () = con.sadd("tags", format!("tag:{i}")).await?;
        model.insert(format!("tag:{i}"));
    }
    let _: () = con.sadd("small", &["1", "2", "3"]).await?;
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    // The WAL tail: adds, removes, pops, a move and a stored union after the checkpoint.
    let _: () = con.sadd("tags", &["new1", "new2"]).await?;
    model.extend(["new1".to_string(), "new2".to_string()]);
    let _: i64 = con.srem("tags", &["tag:1", "tag:2", "absent"]).await?;
    model.remove("tag:1");
    model.remove("tag:2");
    let popped: Vec<String> = redis::cmd("SPOP")
        .arg("tags")
        .arg(5)
        .query_async(&mut con)
        .await?;
    assert_eq!(popped.len(), 5);
    for member in &popped {
        assert!(model.remove(member), "popped {member} twice or never added");
    }
    let _: bool = con.smove("small", "tags", "3").await?;
    model.insert("3".into());
    let _: i64 = con.sunionstore("union", &["small", "tags"]).await?;
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let back: std::collections::BTreeSet<String> = con.smembers("tags").await?;
    assert_eq!(back, model);
    let small: std::collections::BTreeSet<String> = con.smembers("small").await?;
    assert_eq!(small, ["1".to_string(), "2".to_string()].into());
    let union: std::collections::BTreeSet<String> = con.smembers("union").await?;
    assert_eq!(union, model.union(&small).cloned().collect());
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sorted_set_comes_back_whole_from_the_base_image_and_the_wal_tail() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let mut model: std::collections::BTreeMap<String, f64> = Default::default();
    for i in 0..3_000 {
        let (member, score) = (format!("player:{i}"), (i % 97) as f64 + 0.25);
        let _: () = con.zadd("board", &member, score).await?;
        model.insert(member, score);
    }
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    // The WAL tail: new scores, increments, removals, pops and a stored range.
    let _: () = con.zadd("board", "player:5", -1.5).await?;
    model.insert("player:5".into(), -1.5);
    let _: f64 = con.zincr("board", "player:6", 1000).await?;
    *model.get_mut("player:6").unwrap() += 1000.0;
    let _: i64 = con.zrem("board", &["player:7", "absent"]).await?;
    model.remove("player:7");
    let popped: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
        .arg("board")
        .arg(3)
        .query_async(&mut con)
        .await?;
    for (member, _) in &popped {
        assert!(model.remove(member).is_some());
    }
    let removed: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg("board")
        .arg(10)
        .arg("(11")
        .query_async(&mut con)
        .await?;
    let before = model.len();
    model.retain(|_, s| !(10.0..11.0).contains(s));
    assert_eq!(removed as usize, before - model.len());
    let _: i64 = redis::cmd("ZRANGESTORE")
        .arg("top")
        .arg("board")
        .arg(0)
        .arg(9)
        .arg("REV")
        .query_async(&mut con)
        .await?;
    let top_before: Vec<(String, f64)> = con.zrange_withscores("top", 0, -1).await?;
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let back: Vec<(String, f64)> = con.zrange_withscores("board", 0, -1).await?;
    let mut expected: Vec<(String, f64)> = model.into_iter().collect();
    expected.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    assert_eq!(back, expected);
    let top: Vec<(String, f64)> = con.zrange_withscores("top", 0, -1).await?;
    assert_eq!(top, top_before);
    assert_eq!(top.len(), 10);
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_comes_back_whole_from_the_base_image_and_the_wal_tail() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let mut pipe = redis::pipe();
    for i in 1..=2_000 {
        pipe.cmd("XADD")
            .arg("events")
            .arg(format!("{i}-0"))
            .arg("n")
            .arg(i)
            .arg("payload")
            .arg("x".repeat(i % 50))
            .ignore();
    }
    pipe.query_async::<()>(&mut con).await?;
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    // The WAL tail: appends with a trim, deletes, an exact trim and XSETID's meta.
    let _: String = redis::cmd("XADD")
        .arg("events")
        .arg("MAXLEN")
        .arg("~")
        .arg(1500)
        .arg("3000-0")
        .arg("n")
        .arg("late")
        .query_async(&mut con)
        .await?;
    let _: i64 = redis::cmd("XDEL")
        .arg("events")
        .arg("1700-0")
        .arg("1701-0")
        .query_async(&mut con)
        .await?;
    let _: i64 = redis::cmd("XTRIM")
        .arg("events")
        .arg("MINID")
        .arg("650")
        .query_async(&mut con)
        .await?;
    let _: () = redis::cmd("XSETID")
        .arg("events")
        .arg("4000-0")
        .arg("ENTRIESADDED")
        .arg(9000)
        .query_async(&mut con)
        .await?;
    // An empty stream is a key too, and keeps its meta.
    let _: String = redis::cmd("XADD")
        .arg("empty")
        .arg("5-5")
        .arg("a")
        .arg("b")
        .query_async(&mut con)
        .await?;
    let _: i64 = redis::cmd("XDEL")
        .arg("empty")
        .arg("5-5")
        .query_async(&mut con)
        .await?;
    let read = |con: &mut redis::aio::MultiplexedConnection, key: &'static str| {
        let mut con = con.clone();
        async move {
            let range: redis::Value = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(&mut con)
                .await?;
            let info: redis::Value = redis::cmd("XINFO")
                .arg("STREAM")
                .arg(key)
                .query_async(&mut con)
                .await?;
            anyhow::Ok((range, info))
        }
    };
    let before = read(&mut con, "events").await?;
    let empty_before = read(&mut con, "empty").await?;
    let len: i64 = redis::cmd("XLEN")
        .arg("events")
        .query_async(&mut con)
        .await?;
    assert_eq!(len, 2000 - 649 - 2 + 1, "the trims and deletes all ran");
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    assert_eq!(read(&mut con, "events").await?, before);
    assert_eq!(read(&mut con, "empty").await?, empty_before);
    let error = redis::cmd("XADD")
        .arg("events")
        .arg("4000-0")
        .arg("a")
        .arg("b")
        .query_async::<String>(&mut con)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("equal or smaller"),
        "XSETID's floor survives the restart: {error}"
    );
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_and_a_swapdb_survive_a_restart() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let in_db = |db: u8, args: &[&str]| {
        let mut pipe = redis::pipe();
        pipe.cmd("SELECT").arg(db).ignore();
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        pipe.add_command(command);
        pipe
    };
    for db in 0..4u8 {
        let value = format!("value of {db}");
        let _: () = in_db(db, &["SET", "k", &value])
            .query_async(&mut con)
            .await?;
    }
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    // The WAL tail: a swap, a move and a database flushed.
    let _: () = in_db(0, &["SWAPDB", "1", "2"])
        .query_async(&mut con)
        .await?;
    let _: () = in_db(3, &["MOVE", "k", "5"]).query_async(&mut con).await?;
    let _: () = in_db(0, &["SET", "\u{ff}", "escaped?"])
        .query_async(&mut con)
        .await?;
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let expected = [
        (0, Some("value of 0")),
        (1, Some("value of 2")),
        (2, Some("value of 1")),
        (3, None),
        (5, Some("value of 3")),
    ];
    for (db, value) in expected {
        let (got,): (Option<String>,) = in_db(db, &["GET", "k"]).query_async(&mut con).await?;
        assert_eq!(got.as_deref(), value, "database {db}");
    }
    let (size,): (i64,) = in_db(1, &["DBSIZE"]).query_async(&mut con).await?;
    assert_eq!(size, 1, "the swap's map is no key of any database");
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bits_written_by_setbit_bitfield_and_bitop_survive_a_restart() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let _: bool = con.setbit("bits", 100_000, true).await?;
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    let _: bool = con.setbit("bits", 3, true).await?;
    let _: Vec<i64> = redis::cmd("BITFIELD")
        .arg("bits")
        .arg("INCRBY")
        .arg("u16")
        .arg("#10")
        .arg(4242)
        .query_async(&mut con)
        .await?;
    let _: i64 = redis::cmd("BITOP")
        .arg("NOT")
        .arg("inverted")
        .arg("bits")
        .query_async(&mut con)
        .await?;
    let before: Vec<u8> = con.get("bits").await?;
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let after: Vec<u8> = con.get("bits").await?;
    assert_eq!(after, before);
    assert!(con.getbit::<_, bool>("bits", 100_000).await?);
    let field: Vec<i64> = redis::cmd("BITFIELD_RO")
        .arg("bits")
        .arg("GET")
        .arg("u16")
        .arg("#10")
        .query_async(&mut con)
        .await?;
    assert_eq!(field, [4242]);
    let inverted: Vec<u8> = con.get("inverted").await?;
    assert_eq!(inverted, before.iter().map(|b| !b).collect::<Vec<_>>());
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_refuses_writes_with_misconf_while_the_disk_fails_and_recovers() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &["--appendfsync", "always"]).await?;
    let mut con = client(node.addr, false).await?;
    let _: () = con.set("before", "1").await?;

    disk.fail(true);
    // The write that meets the failure gets no reply claiming success: its connection
    // closes. Later writes are refused up front, reads keep working.
    assert!(con.set::<_, _, ()>("during", "2").await.is_err());
    let mut con = client(node.addr, false).await?;
    let error = con.set::<_, _, ()>("during", "3").await.unwrap_err();
    assert_eq!(error.code(), Some("MISCONF"), "{error}");
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    assert_eq!(con.get::<_, String>("before").await?, "1");
    let info = info_persistence(&mut con).await?;
    assert!(info.contains("aof_last_write_status:err"), "{info}");

    disk.fail(false);
    // The log thread probes the disk while idle and lifts the refusal by itself.
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
    assert!(
        info_persistence(&mut con)
            .await?
            .contains("aof_last_write_status:ok")
    );
    // The dropped records left a gap in the WAL: a checkpoint covers it on its own, so a
    // restart keeps everything acknowledged on either side of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while field(&info_persistence(&mut con).await?, "checkpoints") == Some(0) {
        assert!(Instant::now() < deadline, "no checkpoint covered the loss");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.stop().await?;
    let node = start_with(disk.storage(), &["--appendfsync", "always"]).await?;
    let mut con = client(node.addr, false).await?;
    assert_eq!(con.get::<_, String>("before").await?, "1");
    assert_eq!(con.get::<_, String>("after").await?, "4");
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_mode_with_everysec_keeps_serving_when_the_disk_fails() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    disk.fail(true);
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while !info_persistence(&mut con)
        .await?
        .contains("aof_last_write_status:err")
    {
        assert!(Instant::now() < deadline, "the failure is never reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    disk.fail(false);
    let _: () = con.set("k-after", 1).await?;
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    assert!(
        info_persistence(&mut con)
            .await?
            .contains("aof_last_write_status:ok")
    );
    node.stop().await?;
    // Nothing the node served was lost: the checkpoint after the failure wrote it all.
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    assert_eq!(con.get::<_, i64>("k19").await?, 19);
    assert_eq!(con.get::<_, i64>("k-after").await?, 1);
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_holds_five_times_maxmemory_and_returns_every_key_after_a_restart() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let args = [
        "--dir",
        dir.path().to_str().unwrap(),
        "--mode",
        "store",
        "--maxmemory",
        "2mb",
        "--maxmemory-policy",
        "allkeys-lru",
    ];
    let start_node = || async {
        let mut all = vec!["ringkv-server", "--port", "0", "--bind", "127.0.0.1"];
        all.extend_from_slice(&args);
        let server = Server::bind(Config::from_args(all)?, None).await?;
        let addr = server.local_addrs()[0];
        let node = server.node();
        let task = tokio::spawn(server.run());
        wait_loaded(&node).await;
        anyhow::Ok(Running { addr, node, task })
    };
    let node = start_node().await?;
    let mut con = client(node.addr, false).await?;
    let value = |i: u32| format!("{i:08}{}", "v".repeat(1000));
    let keys = 10_000u32; // about 10 MB of values against 2 MB of memory
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.set(format!("key:{i}"), value(i)).ignore();
        }
        let _: () = pipe.query_async(&mut con).await?;
    }
    let used = node.node.store.used_memory() as u64;
    assert!(
        used <= 2 * 1024 * 1024 + 64 * 1024,
        "memory stayed bounded: {used}"
    );
    assert!(
        (node.node.store.len() as u32) < keys / 2,
        "most values live on disk only"
    );
    for i in 0..keys {
        let got: Option<String> = con.get(format!("key:{i}")).await?;
        assert_eq!(got.as_deref(), Some(value(i).as_str()), "key:{i}");
    }
    let info = info_persistence(&mut con).await?;
    let fault_ins = field(&info, "store_fault_ins").unwrap_or(0);
    assert!(fault_ins >= u64::from(keys) / 2, "{info}");
    // A DEL of an evicted key deletes it on disk too: it does not come back.
    let _: () = con.del("key:0").await?;
    let _: () = con.set("filler", "x").await?;
    assert_eq!(con.get::<_, Option<String>>("key:0").await?, None);
    node.stop().await?;

    let node = start_node().await?;
    let mut con = client(node.addr, false).await?;
    assert!(node.node.store.used_memory() as u64 <= 2 * 1024 * 1024 + 64 * 1024);
    for i in 1..keys {
        let got: Option<String> = con.get(format!("key:{i}")).await?;
        assert_eq!(
            got.as_deref(),
            Some(value(i).as_str()),
            "key:{i} after the restart"
        );
    }
    assert_eq!(con.get::<_, Option<String>>("key:0").await?, None);
    node.stop().await
}

/// Without persistence, INFO still counts the changes since the start as Redis does with
/// `save ""`: a write that changes a key counts, one that changes nothing does not
/// (a SETBIT to the bit's own value, a DEL of a missing key), and RESETSTAT keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_counted_without_a_tier_and_only_when_a_value_changed() -> Result<()> {
    let (addr, _node) = start(&[]).await?; // --persistence no
    let mut con = client(addr, false).await?;
    let changes = async |con: &mut redis::aio::MultiplexedConnection| -> Result<u64> {
        field(&info_persistence(con).await?, "rdb_changes_since_last_save").context("the field")
    };
    let start = changes(&mut con).await?;
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await?;
    let _: i64 = redis::cmd("SETBIT")
        .arg("bits")
        .arg(7)
        .arg(1)
        .query_async(&mut con)
        .await?;
    assert_eq!(
        changes(&mut con).await?,
        start + 2,
        "two writes that changed a key"
    );
    let _: i64 = redis::cmd("SETBIT")
        .arg("bits")
        .arg(7)
        .arg(1)
        .query_async(&mut con)
        .await?;
    let _: i64 = redis::cmd("DEL")
        .arg("missing")
        .query_async(&mut con)
        .await?;
    assert_eq!(
        changes(&mut con).await?,
        start + 2,
        "writes that changed nothing"
    );
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut con)
        .await?;
    assert_eq!(changes(&mut con).await?, start + 2, "RESETSTAT keeps them");
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

    let disk = Disk::new();
    let node = start_with(disk.storage(), &["--appendfsync", "no"]).await?;
    let mut con = client(node.addr, false).await?;
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
    assert!(started.starts_with("Background saving"), "{started}");
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    let _: () = con.set("k", "v").await?;
    let info = info_persistence(&mut con).await?;
    assert_eq!(
        field(&info, "rdb_changes_since_last_save"),
        Some(1),
        "{info}"
    );
    let before: i64 = redis::cmd("LASTSAVE").query_async(&mut con).await?;
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    let info = info_persistence(&mut con).await?;
    assert_eq!(
        field(&info, "rdb_changes_since_last_save"),
        Some(0),
        "{info}"
    );
    assert_eq!(field(&info, "base_keys"), Some(1), "{info}");
    let after: i64 = redis::cmd("LASTSAVE").query_async(&mut con).await?;
    assert!(after >= before);
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_tells_the_truth_about_memory_and_the_tier() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &["--persistence-cache-size", "8mb"]).await?;
    let mut con = client(node.addr, false).await?;
    let _: () = con.set("k", "v").await?;
    let memory: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut con)
        .await?;
    assert_eq!(
        field(&memory, "persistence_cache_size"),
        Some(8 << 20),
        "{memory}"
    );
    assert!(memory.contains("mem_allocator:"), "{memory}");
    let info = info_persistence(&mut con).await?;
    for name in [
        "aof_enabled",
        "wal_last_lsn",
        "wal_durable_lsn",
        "checkpoint_lsn",
        "base_keys",
        "wal_bytes_since_checkpoint",
    ] {
        assert!(field(&info, name).is_some(), "{name} missing: {info}");
    }
    assert_eq!(field(&info, "wal_last_lsn"), Some(1));
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("auto-aof-rewrite-min-size")
        .query_async(&mut con)
        .await?;
    assert_eq!(config, vec!["auto-aof-rewrite-min-size", "268435456"]);
    node.stop().await
}

/// A port free for TCP and UDP at once (a cluster bus: gossip on UDP, peer links on TCP).
fn free_bus_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for TCP and UDP")
}

/// SET, then WAIT 1 for up to 300 ms: how many replicas acknowledged it.
async fn set_and_wait_1(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    value: &str,
) -> Result<i64> {
    let _: () = con.set(key, value).await?;
    Ok(redis::cmd("WAIT").arg(1).arg(300).query_async(con).await?)
}

async fn replication_info(con: &mut redis::aio::MultiplexedConnection) -> Result<String> {
    Ok(redis::cmd("INFO")
        .arg("replication")
        .query_async(con)
        .await?)
}

/// A replica whose disk fails stops acknowledging what it applies (it does not keep it):
/// the primary's WAIT gets 0 and INFO says why; once the disk is back, WAIT counts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fails_stops_acknowledging_writes() -> Result<()> {
    let (bus_a, bus_b) = (free_bus_port(), free_bus_port());
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    };
    let (port_a, port_b) = (free_port(), free_port());
    let cluster = |port: u16, bus: u16| {
        vec![
            "--port".to_string(),
            port.to_string(),
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-bus-port".into(),
            bus.to_string(),
        ]
    };
    let healthy = Disk::new();
    let args_a = cluster(port_a, bus_a);
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let a = start_with(healthy.storage(), &args_a).await?;
    let failing = Disk::new();
    let mut args_b = cluster(port_b, bus_b);
    args_b.extend(["--cluster-join".into(), format!("127.0.0.1:{bus_a}")]);
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let b = start_with(failing.storage(), &args_b).await?;
    let mut on_a = client(a.addr, false).await?;
    let mut on_b = client(b.addr, false).await?;
    // B joins: it copies its slots from A, then takes them. Until both say so, a key A
    // serves now may be handed to B a moment later.
    let deadline = Instant::now() + Duration::from_secs(20);
    for con in [&mut on_a, &mut on_b] {
        loop {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(con).await?;
            let settled = ["cluster_known_nodes:2", "cluster_members_joining:0"]
                .iter()
                .chain(["cluster_slots_learning:0", "cluster_table_judged:1"].iter())
                .all(|field| info.contains(field));
            if settled {
                break;
            }
            assert!(Instant::now() < deadline, "B never joined: {info}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A key A serves (so B holds its replica), once B is synced.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut candidates = (0..).map(|i| format!("k{i}"));
    let mut key = candidates.next().unwrap();
    loop {
        let answer = on_a.set::<_, _, ()>(&key, "v").await;
        assert!(
            Instant::now() < deadline,
            "the two members never formed a cluster: {answer:?}, {}",
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async::<String>(&mut on_b)
                .await?
        );
        match answer {
            // MOVED: B's key; another one. CLUSTERDOWN: not formed yet.
            Err(error) if error.to_string().to_lowercase().contains("moved") => {
                key = candidates.next().unwrap()
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(()) => {
                let waited: i64 = redis::cmd("WAIT")
                    .arg(1)
                    .arg(200)
                    .query_async(&mut on_a)
                    .await?;
                if waited == 1 {
                    break;
                }
            }
        }
    }
    failing.fail(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waited = set_and_wait_1(&mut on_a, &key, "during").await?;
        let info = replication_info(&mut on_b).await?;
        if waited == 0 && info.contains("repl_acks_held:1") {
            assert!(info.contains("repl_acks_held_reason:"), "{info}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failing replica keeps acknowledging: WAIT {waited}, {info}"
        );
    }
    failing.fail(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waited = set_and_wait_1(&mut on_a, &key, "after").await?;
        if waited == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "acknowledgements never resumed");
    }
    drop((on_a, on_b));
    b.stop().await?;
    a.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_libraries_survive_a_restart_and_a_flushall() -> Result<()> {
    let disk = Disk::new();
    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let library = |name: &str, function: &str, reply: &str| {
        format!(
            "#!lua name={name}\nredis.register_function('{function}', function() return '{reply}' end)"
        )
    };
    for (name, function) in [("kept", "kept_f"), ("dropped", "dropped_f")] {
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(library(name, function, name))
            .query_async(&mut con)
            .await?;
    }
    let _: () = redis::cmd("SAVE").query_async(&mut con).await?;
    // The WAL tail: a library added, one deleted, one replaced, and a FLUSHALL that
    // leaves libraries alone as Redis's does.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library("late", "late_f", "late"))
        .query_async(&mut con)
        .await?;
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("dropped")
        .query_async(&mut con)
        .await?;
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library("kept", "kept_f", "replaced"))
        .query_async(&mut con)
        .await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await?;
    node.stop().await?;

    let node = start_with(disk.storage(), &[]).await?;
    let mut con = client(node.addr, false).await?;
    let fcall = |function: &str| {
        let mut command = redis::cmd("FCALL");
        command.arg(function).arg(0);
        command
    };
    let kept: String = fcall("kept_f").query_async(&mut con).await?;
    assert_eq!(kept, "replaced", "the replacement is what came back");
    let late: String = fcall("late_f").query_async(&mut con).await?;
    assert_eq!(late, "late");
    let dropped: redis::RedisResult<String> = fcall("dropped_f").query_async(&mut con).await;
    assert_eq!(
        dropped.unwrap_err().to_string(),
        "ResponseError: Function not found",
        "a deleted library stays deleted"
    );
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await?;
    assert_eq!(size, 0, "libraries are no keys of any database");
    node.stop().await
}
