//! Lua scripting on a real node over loopback: EVAL/EVALSHA/SCRIPT, replies converted
//! both ways in RESP2 and RESP3, errors in Redis 7.0's words, the sandbox, atomicity
//! under concurrent clients, scripts inside MULTI, logical databases, and blocked clients
//! woken by a script's write. Expected replies are what redis-server 7.0.15 answers.

use std::time::{Duration, Instant};

use anyhow::Result;
use redis::{AsyncCommands, Value};
use support::{client, query, start, waiting_client};

mod support;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn error_text(result: redis::RedisResult<Value>) -> String {
    result.unwrap_err().to_string()
}

#[tokio::test]
async fn scripts_convert_replies_both_ways_as_redis_does() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let eval = |body: &'static str| ["EVAL", body, "0"];
    query(&mut con, &["HSET", "h", "a", "1"]).await?;
    assert_eq!(
        query(&mut con, &eval("return {1, 2.9, 'x', {3}, nil, 5}")).await?,
        Value::Array(vec![
            Value::Int(1),
            Value::Int(2),
            bulk("x"),
            Value::Array(vec![Value::Int(3)])
        ]),
        "numbers are truncated and an array ends at its first nil"
    );
    assert_eq!(query(&mut con, &eval("return true")).await?, Value::Int(1));
    assert_eq!(query(&mut con, &eval("return false")).await?, Value::Nil);
    assert_eq!(
        query(&mut con, &eval("return redis.status_reply('FINE')")).await?,
        Value::SimpleString("FINE".into())
    );
    assert_eq!(
        query(&mut con, &eval("return redis.call('hgetall', 'h')")).await?,
        Value::Array(vec![bulk("a"), bulk("1")])
    );
    assert_eq!(
        query(
            &mut con,
            &eval("return {redis.call('get', 'none') == false}")
        )
        .await?,
        Value::Array(vec![Value::Int(1)]),
        "a nil reply is false in Lua"
    );
    assert_eq!(
        query(
            &mut con,
            &eval("redis.setresp(3) return redis.call('hgetall', 'h')['map']['a']")
        )
        .await?,
        bulk("1"),
        "setresp(3) gives maps as {{map = ...}}"
    );
    assert_eq!(
        query(
            &mut con,
            &[
                "EVAL",
                "return {KEYS[1], ARGV[1], #KEYS, #ARGV}",
                "1",
                "k",
                "a",
                "b"
            ]
        )
        .await?,
        Value::Array(vec![bulk("k"), bulk("a"), Value::Int(1), Value::Int(2)])
    );
    let json = query(
        &mut con,
        &eval("return cjson.encode({a = {1, 2}, b = 'x/'})"),
    )
    .await?;
    assert!(
        json == bulk(r#"{"a":[1,2],"b":"x\/"}"#) || json == bulk(r#"{"b":"x\/","a":[1,2]}"#),
        "{json:?}"
    );
    assert_eq!(
        query(
            &mut con,
            &eval("local t = cmsgpack.unpack(cmsgpack.pack({1, 'two', {x = 3}})) return {t[1], t[2], t[3].x}")
        )
        .await?,
        Value::Array(vec![Value::Int(1), bulk("two"), Value::Int(3)])
    );
    assert_eq!(
        query(
            &mut con,
            &eval("return {bit.band(0xff, 0x0f), bit.tohex(255, -2)}")
        )
        .await?,
        Value::Array(vec![Value::Int(15), bulk("FF")])
    );
    let mut resp3 = client(addr, true).await?;
    assert_eq!(
        query(&mut resp3, &eval("return {map = {a = 1}}")).await?,
        Value::Map(vec![(bulk("a"), Value::Int(1))])
    );
    assert_eq!(
        query(&mut resp3, &eval("return {double = 1.5}")).await?,
        Value::Double(1.5)
    );
    assert_eq!(
        query(&mut resp3, &eval("redis.setresp(3) return false")).await?,
        Value::Boolean(false)
    );
    Ok(())
}

#[tokio::test]
async fn errors_and_the_sandbox_answer_in_redis_words() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    for (body, expected) in [
        (
            "return x",
            "user_script:1: Script attempted to access nonexistent global variable 'x' script: 03c387736bb5cc009ff35151572cee04677aa374, on @user_script:1.",
        ),
        (
            "x = 1",
            "user_script:1: Attempt to modify a readonly table script: 34bce5f775de97f557a34088509c8bfe1ea17e52, on @user_script:1.",
        ),
        (
            "return redis.call('nope')",
            "Unknown Redis command called from script script: f01f0776df71cc5b400c2268135aa7f30dce2e53, on @user_script:1.",
        ),
        (
            "return redis.call('blpop','l',0)",
            "This Redis command is not allowed from script script: 121bfe1768bf66b7a31f0b044f99b2ef97079112, on @user_script:1.",
        ),
        (
            "return cjson.decode('x')",
            "user_script:1: Expected value but found invalid token at character 1 script: 5f58dd5cefb3eb0313af3534f36be4b83e79ae80, on @user_script:1.",
        ),
        (
            "return os.clock()",
            "user_script:1: Script attempted to access nonexistent global variable 'os'",
        ),
        (
            "syntax error here",
            "Error compiling script (new function): user_script:1: '=' expected near 'error'",
        ),
    ] {
        let error = error_text(query(&mut con, &["EVAL", body, "0"]).await);
        assert!(error.contains(expected), "{body}: {error}");
    }
    let error = error_text(query(&mut con, &["EVAL", "return redis.pcall('get')", "0"]).await);
    assert!(
        error.contains("Wrong number of args calling Redis command from script")
            && !error.contains("script:"),
        "pcall returns the error table, which is the reply as it is: {error}"
    );
    assert_eq!(
        query(
            &mut con,
            &[
                "EVAL",
                "local ok, e = pcall(redis.call, 'incr', 'no-such') return {tostring(ok)}",
                "0"
            ]
        )
        .await?,
        Value::Array(vec![bulk("true")])
    );
    query(&mut con, &["SET", "s", "x"]).await?;
    assert_eq!(
        query(
            &mut con,
            &[
                "EVAL",
                "local ok, e = pcall(redis.call, 'incr', 's') return e",
                "0"
            ]
        )
        .await?,
        bulk("ERR value is not an integer or out of range"),
        "Redis 7's pcall catches an error table as its text"
    );
    let noscript = query(&mut con, &["EVALSHA", &"f".repeat(40), "0"])
        .await
        .unwrap_err();
    assert_eq!(noscript.code(), Some("NOSCRIPT"));
    // As Redis: a SHA of another length is no script's before numkeys is read; a 40-byte
    // one that is no hex matches nothing, after it.
    for (sha, numkeys, code) in [
        ("abc", "-1", "NOSCRIPT"),
        ("abc", "x", "NOSCRIPT"),
        (&*"g".repeat(40), "0", "NOSCRIPT"),
        (&*"é".repeat(20), "0", "NOSCRIPT"),
        (&*"g".repeat(40), "-1", "ERR"),
    ] {
        let error = query(&mut con, &["EVALSHA", sha, numkeys])
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(code), "EVALSHA {sha} {numkeys}: {error}");
    }
    assert!(
        noscript
            .to_string()
            .contains("No matching script. Please use EVAL.")
    );
    for (numkeys, message) in [
        ("-1", "Number of keys can't be negative"),
        ("5", "Number of keys can't be greater than number of args"),
        ("x", "value is not an integer or out of range"),
    ] {
        let error = error_text(query(&mut con, &["EVAL", "return 1", numkeys]).await);
        assert!(error.contains(message), "{numkeys}: {error}");
    }
    let read_only = error_text(
        query(
            &mut con,
            &["EVAL_RO", "return redis.call('set', 'a', 1)", "0"],
        )
        .await,
    );
    assert!(read_only.contains("Write commands are not allowed from read-only scripts."));
    Ok(())
}

#[tokio::test]
async fn the_script_cache_loads_finds_and_flushes() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return ARGV[1] .. '!'")
        .query_async(&mut con)
        .await?;
    assert!(
        sha.len() == 40
            && sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{sha}"
    );
    assert_eq!(
        query(&mut con, &["EVALSHA", &sha.to_uppercase(), "0", "hi"]).await?,
        bulk("hi!"),
        "a SHA-1 is matched in any case"
    );
    assert_eq!(
        query(&mut con, &["SCRIPT", "EXISTS", &sha, &"0".repeat(40)]).await?,
        Value::Array(vec![Value::Int(1), Value::Int(0)])
    );
    assert_eq!(query(&mut con, &["SCRIPT", "FLUSH"]).await?, Value::Okay);
    let error = query(&mut con, &["EVALSHA", &sha, "0", "hi"])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("NOSCRIPT"), "{error}");
    let error = error_text(query(&mut con, &["SCRIPT", "KILL"]).await);
    assert!(
        error.contains("No scripts in execution right now."),
        "{error}"
    );
    Ok(())
}

const SETTER_LIBRARY: &str = "#!lua name=lib
redis.register_function('setter', function(keys, args) return redis.call('set', keys[1], args[1]) end)
redis.register_function{function_name='getter', callback=function(keys) return redis.call('get', keys[1]) end, flags={'no-writes'}, description='reads'}";

#[tokio::test]
async fn function_libraries_load_call_list_dump_and_restore() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    assert_eq!(
        query(&mut con, &["FUNCTION", "LOAD", SETTER_LIBRARY]).await?,
        bulk("lib"),
        "LOAD answers the library's name"
    );
    assert_eq!(
        query(&mut con, &["FCALL", "setter", "1", "k", "v"]).await?,
        Value::Okay
    );
    assert_eq!(
        query(&mut con, &["FCALL_RO", "getter", "1", "k"]).await?,
        bulk("v")
    );
    assert_eq!(
        error_text(query(&mut con, &["FCALL_RO", "setter", "1", "k", "w"]).await),
        "ResponseError: Can not execute a script with write flag using *_ro command."
    );
    assert_eq!(
        error_text(query(&mut con, &["FUNCTION", "LOAD", SETTER_LIBRARY]).await),
        "ResponseError: Library 'lib' already exists"
    );
    let clash = "#!lua name=other\nredis.register_function('setter', function() end)";
    assert_eq!(
        error_text(query(&mut con, &["FUNCTION", "LOAD", clash]).await),
        "ResponseError: Function setter already exists",
        "function names are unique across libraries"
    );
    let listed = query(&mut con, &["FUNCTION", "LIST", "LIBRARYNAME", "li*"]).await?;
    let getter = Value::Array(vec![
        bulk("name"),
        bulk("getter"),
        bulk("description"),
        bulk("reads"),
        bulk("flags"),
        Value::Array(vec![Value::SimpleString("no-writes".into())]),
    ]);
    let Value::Array(libraries) = &listed else {
        panic!("{listed:?}")
    };
    assert_eq!(libraries.len(), 1, "{listed:?}");
    let Value::Array(fields) = &libraries[0] else {
        panic!("{listed:?}")
    };
    assert_eq!(
        fields[..4],
        [
            bulk("library_name"),
            bulk("lib"),
            bulk("engine"),
            bulk("LUA")
        ]
    );
    let Value::Array(functions) = &fields[5] else {
        panic!("{listed:?}")
    };
    assert!(functions.contains(&getter), "{listed:?}");

    let Value::BulkString(payload) = query(&mut con, &["FUNCTION", "DUMP"]).await? else {
        panic!("DUMP answers a bulk")
    };
    let restore = |policy: &'static str| {
        let mut command = redis::cmd("FUNCTION");
        command.arg("RESTORE").arg(payload.clone()).arg(policy);
        command
    };
    let error: redis::RedisResult<Value> = restore("APPEND").query_async(&mut con).await;
    assert_eq!(
        error_text(error),
        "ResponseError: Library lib already exists"
    );
    assert_eq!(query(&mut con, &["FUNCTION", "FLUSH"]).await?, Value::Okay);
    assert_eq!(
        error_text(query(&mut con, &["FCALL", "setter", "1", "k", "w"]).await),
        "ResponseError: Function not found"
    );
    let restored: Value = restore("APPEND").query_async(&mut con).await?;
    assert_eq!(restored, Value::Okay);
    assert_eq!(
        query(&mut con, &["FCALL", "getter", "1", "k"]).await?,
        bulk("v"),
        "the restored library answers as the dumped one did"
    );
    let mut corrupt = payload.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let error: redis::RedisResult<Value> = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(corrupt)
        .query_async(&mut con)
        .await;
    assert_eq!(
        error_text(error),
        "ResponseError: DUMP payload version or checksum are wrong"
    );
    assert_eq!(
        query(&mut con, &["FUNCTION", "DELETE", "lib"]).await?,
        Value::Okay
    );
    assert_eq!(
        error_text(query(&mut con, &["FUNCTION", "DELETE", "lib"]).await),
        "ResponseError: Library not found"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_runs_alone_however_many_clients_run_it() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    // Read, then write: without atomicity concurrent runs would lose increments.
    let body = "local v = tonumber(redis.call('get', KEYS[1]) or '0') redis.call('set', KEYS[1], v + 1) return v + 1";
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut con = client(addr, false).await?;
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                query(&mut con, &["EVAL", body, "1", "counter"]).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut con = client(addr, false).await?;
    assert_eq!(con.get::<_, i64>("counter").await?, 1000);
    Ok(())
}

#[tokio::test]
async fn scripts_run_inside_multi_and_in_the_connections_database() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let (first, second): (i64, String) = redis::pipe()
        .atomic()
        .cmd("EVAL")
        .arg("return redis.call('incrby', KEYS[1], ARGV[1])")
        .arg(1)
        .arg("n")
        .arg(5)
        .cmd("EVAL")
        .arg("return redis.call('get', KEYS[1])")
        .arg(1)
        .arg("n")
        .query_async(&mut con)
        .await?;
    assert_eq!((first, second.as_str()), (5, "5"));
    query(&mut con, &["SELECT", "3"]).await?;
    query(
        &mut con,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], 'three') redis.call('select', 0) return 1",
            "1",
            "where",
        ],
    )
    .await?;
    assert_eq!(
        query(&mut con, &["GET", "where"]).await?,
        bulk("three"),
        "KEYS name the caller's database, and a script's SELECT is its own"
    );
    query(&mut con, &["SELECT", "0"]).await?;
    assert_eq!(query(&mut con, &["EXISTS", "where"]).await?, Value::Int(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_a_script_wakes_a_blocked_client() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut waiter = waiting_client(addr).await?;
    let blocked = tokio::spawn(async move {
        redis::cmd("BLPOP")
            .arg("jobs")
            .arg(5)
            .query_async::<Option<(String, String)>>(&mut waiter)
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.blocking.waiting() < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut con = client(addr, false).await?;
    query(
        &mut con,
        &[
            "EVAL",
            "return redis.call('rpush', KEYS[1], 'job-1')",
            "1",
            "jobs",
        ],
    )
    .await?;
    assert_eq!(blocked.await??, Some(("jobs".into(), "job-1".into())));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_script_makes_others_busy_until_script_kill_stops_it() -> Result<()> {
    let (addr, _node) = start(&["--busy-reply-threshold", "100"]).await?;
    let mut runner = waiting_client(addr).await?;
    let endless = tokio::spawn(async move {
        query(
            &mut runner,
            &["EVAL", "local i = 0 while true do i = i + 1 end", "0"],
        )
        .await
    });
    let mut con = waiting_client(addr).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        match query(&mut con, &["GET", "k"]).await {
            Err(error) if error.code() == Some("BUSY") => break error,
            other => {
                assert!(Instant::now() < deadline, "never busy: {other:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(
        busy.to_string()
            .contains("You can only call SCRIPT KILL or SHUTDOWN NOSAVE.")
    );
    assert_eq!(query(&mut con, &["SCRIPT", "KILL"]).await?, Value::Okay);
    let killed = endless.await?.unwrap_err().to_string();
    assert!(
        killed.contains("Script killed by user with SCRIPT KILL..."),
        "{killed}"
    );
    assert_eq!(
        query(&mut con, &["PING"]).await?,
        Value::SimpleString("PONG".into())
    );

    // A script that wrote cannot be killed: its writes must not be half done.
    let mut runner = waiting_client(addr).await?;
    let writer = tokio::spawn(async move {
        query(
            &mut runner,
            &[
                "EVAL",
                // Runs half a second by the server's clock, long past the threshold.
                "redis.call('set', 'w', '1') \
                 local function now() local t = redis.call('time') return t[1] * 1e6 + t[2] end \
                 local start = now() while now() - start < 500000 do end return 'done'",
                "0",
            ],
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match query(&mut con, &["SCRIPT", "KILL"]).await {
            Err(error) if error.code() == Some("UNKILLABLE") => break,
            other => {
                assert!(Instant::now() < deadline, "never unkillable: {other:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert_eq!(writer.await??, bulk("done"));
    assert_eq!(query(&mut con, &["GET", "w"]).await?, bulk("1"));
    Ok(())
}

#[tokio::test]
async fn a_script_that_grows_without_bound_fails_and_the_node_keeps_serving() -> Result<()> {
    let (addr, _node) = start(&["--lua-memory-limit", "16mb"]).await?;
    let mut con = client(addr, false).await?;
    for body in [
        "local t = {} for i = 1, 1e8 do t[i] = i end return #t",
        "local s = 'x' for i = 1, 40 do s = s .. s end return #s",
    ] {
        let error = error_text(query(&mut con, &["EVAL", body, "0"]).await);
        assert!(error.contains("not enough memory"), "{body}: {error}");
    }
    let error = error_text(
        query(
            &mut con,
            &[
                "EVAL",
                "local function f(n) return f(n + 1) + 1 end return f(1)",
                "0",
            ],
        )
        .await,
    );
    assert!(error.contains("stack overflow"), "{error}");
    assert_eq!(
        query(&mut con, &["EVAL", "return 'still here'", "0"]).await?,
        bulk("still here")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_cache_holds_tens_of_thousands_of_scripts() -> Result<()> {
    // Regression: each compiled script held a slot of mlua's reference stack, which Lua
    // 5.1 caps near 8,000: the 8,000th SCRIPT LOAD failed with "out of Lua stack".
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    // More than twice the cap: however the loads spread over the runtime's threads (each has
    // its own Lua state), one state holds more than 8,000.
    let count = 20_000;
    let mut shas: Vec<String> = Vec::new();
    for batch in (0..count).step_by(1_000) {
        let mut pipe = redis::pipe();
        for n in batch..batch + 1_000 {
            pipe.cmd("SCRIPT")
                .arg("LOAD")
                .arg(format!("return {n} + #KEYS"));
        }
        let loaded: Vec<String> = pipe.query_async(&mut con).await?;
        shas.extend(loaded);
    }
    assert_eq!(shas.len(), count);
    for n in [0, 7_999, 8_000, count - 1] {
        let value: i64 = redis::cmd("EVALSHA")
            .arg(&shas[n])
            .arg(1)
            .arg("k")
            .query_async(&mut con)
            .await?;
        assert_eq!(value, n as i64 + 1, "script {n}");
    }
    Ok(())
}
