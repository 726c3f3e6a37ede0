//! Lists and their blocking pops on a real node over loopback, through the `redis` crate
//! and raw connections for the blocked clients (whose connections the tests close).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::AsyncCommands;
use support::{client, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

/// A blocked client: a raw connection that sent a blocking command.
struct Blocked(TcpStream);

impl Blocked {
    async fn send(addr: std::net::SocketAddr, command: &[&str]) -> Result<Blocked> {
        let mut stream = TcpStream::connect(addr).await?;
        let mut frame = format!("*{}\r\n", command.len());
        for arg in command {
            frame.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(frame.as_bytes()).await?;
        Ok(Blocked(stream))
    }

    /// The reply, raw, once it ends with CRLF (these replies arrive in one write).
    async fn reply(&mut self, within: Duration) -> Result<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(within, self.0.read(&mut buf))
            .await
            .context("no reply in time")??;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

async fn blocked_clients(con: &mut redis::aio::MultiplexedConnection) -> Result<u64> {
    let info: String = redis::cmd("INFO").arg("clients").query_async(con).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no blocked_clients in INFO")
}

async fn wait_blocked(con: &mut redis::aio::MultiplexedConnection, count: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while blocked_clients(con).await? != count {
        anyhow::ensure!(Instant::now() < deadline, "never {count} blocked clients");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

#[tokio::test]
async fn list_commands_answer_as_redis_in_resp2_and_resp3() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    assert_eq!(con.rpush::<_, _, i64>("l", &["a", "b", "c"]).await?, 3);
    assert_eq!(con.lpush::<_, _, i64>("l", "z").await?, 4);
    assert_eq!(
        con.lrange::<_, Vec<String>>("l", 0, -1).await?,
        ["z", "a", "b", "c"]
    );
    assert_eq!(
        con.lrange::<_, Vec<String>>("l", -2, 100).await?,
        ["b", "c"]
    );
    assert_eq!(
        con.lindex::<_, Option<String>>("l", -1).await?.as_deref(),
        Some("c")
    );
    assert_eq!(con.lindex::<_, Option<String>>("l", 9).await?, None);
    assert_eq!(con.rpush_exists::<_, _, i64>("missing", "x").await?, 0);
    assert!(!con.exists::<_, bool>("missing").await?);
    let pos: Vec<i64> = redis::cmd("LPOS")
        .arg("l")
        .arg("b")
        .arg("COUNT")
        .arg(0)
        .query_async(&mut con)
        .await?;
    assert_eq!(pos, [2]);
    // Errors in Redis's words, and nothing changed by them.
    let _: () = con.set("s", "x").await?;
    let error = con.lpush::<_, _, i64>("s", "x").await.unwrap_err();
    assert_eq!(error.code(), Some("WRONGTYPE"));
    let error = con.lset::<_, _, ()>("nokey", 0, "x").await.unwrap_err();
    assert!(error.to_string().contains("no such key"), "{error}");
    let error = con.lset::<_, _, ()>("l", 10, "x").await.unwrap_err();
    assert!(error.to_string().contains("index out of range"), "{error}");
    let error = redis::cmd("LPOP")
        .arg("l")
        .arg(-1)
        .query_async::<redis::Value>(&mut con)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("must be positive"), "{error}");
    let error = redis::cmd("BLPOP")
        .arg("l")
        .arg("-1")
        .query_async::<redis::Value>(&mut con)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("timeout is negative"), "{error}");
    for (command, message) in [
        (
            &["LMPOP", "0", "l", "LEFT"][..],
            "numkeys should be greater than 0",
        ),
        (
            &["LMPOP", "1", "l", "LEFT", "COUNT", "0"],
            "count should be greater than 0",
        ),
        (&["LMPOP", "2", "l", "x"], "syntax error"),
        (&["LPOS", "l", "a", "RANK", "0"], "RANK can't be zero"),
        (
            &["LPOS", "l", "a", "MAXLEN", "-1"],
            "MAXLEN can't be negative",
        ),
        (&["LINSERT", "l", "AROUND", "a", "b"], "syntax error"),
        (&["LMOVE", "l", "l2", "UP", "LEFT"], "syntax error"),
        (
            &["CLIENT", "UNBLOCK", "1", "MAYBE"],
            "reason should be TIMEOUT or ERROR",
        ),
    ] {
        let error = redis::cmd(command[0])
            .arg(&command[1..])
            .query_async::<redis::Value>(&mut con)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(message), "{command:?}: {error}");
    }
    assert_eq!(con.llen::<_, i64>("l").await?, 4);
    // Popping the last element deletes the key.
    let all: Vec<String> = redis::cmd("RPOP")
        .arg("l")
        .arg(10)
        .query_async(&mut con)
        .await?;
    assert_eq!(all, ["c", "b", "a", "z"]);
    assert!(!con.exists::<_, bool>("l").await?);
    assert_eq!(
        redis::cmd("TYPE")
            .arg("s")
            .query_async::<String>(&mut con)
            .await?,
        "string"
    );

    // RESP3: a missing key's LPOP with a count and a timed-out BLPOP are nulls.
    let mut con3 = client(addr, true).await?;
    let missing: redis::Value = redis::cmd("LPOP")
        .arg("none")
        .arg(2)
        .query_async(&mut con3)
        .await?;
    assert_eq!(missing, redis::Value::Nil);
    let timed_out: redis::Value = redis::cmd("BLPOP")
        .arg("none")
        .arg("0.01")
        .query_async(&mut con3)
        .await?;
    assert_eq!(timed_out, redis::Value::Nil);
    let _: () = con3.rpush("r3", "x").await?;
    assert_eq!(
        redis::cmd("TYPE")
            .arg("r3")
            .query_async::<String>(&mut con3)
            .await?,
        "list"
    );
    let mpop: redis::Value = redis::cmd("LMPOP")
        .arg(2)
        .arg("none")
        .arg("r3")
        .arg("LEFT")
        .query_async(&mut con3)
        .await?;
    assert_eq!(
        mpop,
        redis::Value::Array(vec![
            redis::Value::BulkString(b"r3".to_vec()),
            redis::Value::Array(vec![redis::Value::BulkString(b"x".to_vec())]),
        ])
    );
    Ok(())
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let mut waiters = Vec::new();
    for i in 0..20u64 {
        waiters.push(Blocked::send(addr, &["BLPOP", "other", "jobs", "5"]).await?);
        wait_blocked(&mut con, i + 1).await?;
    }
    let jobs: Vec<String> = (0..20).map(|i| format!("job{i}")).collect();
    let _: () = con.rpush("jobs", &jobs).await?;
    for (i, waiter) in waiters.iter_mut().enumerate() {
        let reply = waiter.reply(Duration::from_secs(2)).await?;
        let want = format!("*2\r\n$4\r\njobs\r\n${}\r\njob{i}\r\n", jobs[i].len());
        assert_eq!(reply, want, "waiter {i}");
    }
    wait_blocked(&mut con, 0).await?;
    assert!(!con.exists::<_, bool>("jobs").await?);
    Ok(())
}

#[tokio::test]
async fn a_timeout_answers_null_and_a_gone_client_is_never_served() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let started = Instant::now();
    let mut short = Blocked::send(addr, &["BRPOP", "q", "0.2"]).await?;
    assert_eq!(short.reply(Duration::from_secs(2)).await?, "*-1\r\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    wait_blocked(&mut con, 0).await?;

    // A client blocked forever that disconnects leaves the next element in the list.
    let gone = Blocked::send(addr, &["BLPOP", "q", "0"]).await?;
    wait_blocked(&mut con, 1).await?;
    drop(gone);
    wait_blocked(&mut con, 0).await?;
    let _: () = con.rpush("q", "precious").await?;
    assert_eq!(
        con.lrange::<_, Vec<String>>("q", 0, -1).await?,
        ["precious"]
    );
    Ok(())
}

#[tokio::test]
async fn a_push_in_multi_wakes_waiters_at_exec_and_blmove_chains_along() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let mut mover =
        Blocked::send(addr, &["BLMOVE", "{t}in", "{t}out", "LEFT", "RIGHT", "0"]).await?;
    wait_blocked(&mut con, 1).await?;
    let mut reader = Blocked::send(addr, &["BLPOP", "{t}out", "0"]).await?;
    wait_blocked(&mut con, 2).await?;
    // Pushed and popped inside one transaction: nothing is left for the waiters.
    let (_, popped): (i64, String) = redis::pipe()
        .atomic()
        .rpush("{t}in", "gone")
        .lpop("{t}in", None)
        .query_async(&mut con)
        .await?;
    assert_eq!(popped, "gone");
    assert_eq!(blocked_clients(&mut con).await?, 2);
    // One element: BLMOVE takes it to `{t}out`, where the BLPOP waiter takes it.
    let _: () = con.rpush("{t}in", "job").await?;
    assert_eq!(mover.reply(Duration::from_secs(2)).await?, "$3\r\njob\r\n");
    assert_eq!(
        reader.reply(Duration::from_secs(2)).await?,
        "*2\r\n$6\r\n{t}out\r\n$3\r\njob\r\n"
    );
    assert!(!con.exists::<_, bool>("{t}out").await?);
    // A waiter whose destination turned into a string gets WRONGTYPE when served, and
    // the element stays where it was, as in Redis.
    let mut mover =
        Blocked::send(addr, &["BLMOVE", "{t}in", "{t}dst", "LEFT", "LEFT", "0"]).await?;
    wait_blocked(&mut con, 1).await?;
    let _: () = con.set("{t}dst", "string").await?;
    let _: () = con.rpush("{t}in", "kept").await?;
    let reply = mover.reply(Duration::from_secs(2)).await?;
    assert!(reply.starts_with("-WRONGTYPE"), "{reply}");
    assert_eq!(
        con.lrange::<_, Vec<String>>("{t}in", 0, -1).await?,
        ["kept"]
    );
    wait_blocked(&mut con, 0).await?;
    // A blocking pop inside MULTI answers at once.
    let (nothing,): (Option<Vec<String>>,) = redis::pipe()
        .atomic()
        .blpop("{t}none", 0.0)
        .query_async(&mut con)
        .await?;
    assert_eq!(nothing, None);
    Ok(())
}

#[tokio::test]
async fn client_unblock_answers_a_blocked_client() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let mut blocked = Blocked::send(addr, &["CLIENT", "ID"]).await?;
    let id: u64 = blocked
        .reply(Duration::from_secs(1))
        .await?
        .trim_start_matches(':')
        .trim()
        .parse()?;
    blocked
        .0
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n")
        .await?;
    wait_blocked(&mut con, 1).await?;
    // CLIENT LIST shows it as Redis does: blocked, in BLPOP.
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut con)
        .await?;
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .context("the blocked client is listed")?;
    assert!(
        line.contains(" flags=b ") && line.contains(" cmd=blpop "),
        "{line}"
    );
    let unblocked: i64 = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .arg("ERROR")
        .query_async(&mut con)
        .await?;
    assert_eq!(unblocked, 1);
    assert_eq!(
        blocked.reply(Duration::from_secs(1)).await?,
        "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
    let again: i64 = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .query_async(&mut con)
        .await?;
    assert_eq!(again, 0);
    Ok(())
}
