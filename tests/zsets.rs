//! Sorted sets on a real node over loopback through the `redis` crate: ZADD's flags,
//! ranges by rank, score and lex, the algebra, pops and blocking pops, and the reply
//! shapes of RESP2 and RESP3.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::{AsyncCommands, Value};
use support::{client, query, start};

mod support;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[tokio::test]
async fn zadd_follows_its_flags_and_refuses_bad_input_without_changes() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    assert_eq!(
        con.zadd_multiple::<_, _, _, i64>("z", &[(1, "a"), (2, "b")])
            .await?,
        2
    );
    assert_eq!(
        query(&mut con, &["ZADD", "z", "NX", "5", "a", "3", "c"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        con.zscore::<_, _, f64>("z", "a").await?,
        1.0,
        "NX leaves a member alone"
    );
    assert_eq!(
        query(&mut con, &["ZADD", "z", "XX", "CH", "7", "a", "9", "new"]).await?,
        Value::Int(1)
    );
    assert!(!con.exists::<_, bool>("xxonly").await?);
    assert_eq!(
        query(&mut con, &["ZADD", "xxonly", "XX", "1", "a"]).await?,
        Value::Int(0)
    );
    assert!(
        !con.exists::<_, bool>("xxonly").await?,
        "XX never creates the key"
    );
    assert_eq!(
        query(&mut con, &["ZADD", "z", "GT", "CH", "5", "a", "10", "b"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        con.zscore::<_, _, f64>("z", "a").await?,
        7.0,
        "GT keeps the higher score"
    );
    assert_eq!(
        query(&mut con, &["ZADD", "z", "LT", "CH", "1", "a"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        query(&mut con, &["ZADD", "z", "INCR", "2.5", "a"]).await?,
        bulk("3.5")
    );
    assert_eq!(
        query(&mut con, &["ZADD", "z", "NX", "INCR", "1", "a"]).await?,
        Value::Nil
    );
    assert_eq!(con.zincr::<_, _, _, f64>("z", "fresh", 4).await?, 4.0);
    for (args, message) in [
        (&["ZADD", "z", "x", "a"][..], "value is not a valid float"),
        (&["ZADD", "z", "NX", "1"], "syntax error"),
        (
            &["ZADD", "z", "NX", "XX", "1", "a"],
            "XX and NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "GT", "LT", "1", "a"],
            "GT, LT, and/or NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "INCR", "1", "a", "2", "b"],
            "INCR option supports a single increment-element pair",
        ),
        (&["ZADD", "z", "nan", "a"], "value is not a valid float"),
        (&["ZINCRBY", "z", "abc", "a"], "value is not a valid float"),
        (
            &["ZRANGEBYSCORE", "z", "(x", "1"],
            "min or max is not a float",
        ),
        (
            &["ZRANGEBYLEX", "z", "a", "[b"],
            "min or max not valid string range item",
        ),
        (
            &["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"],
            "LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ),
        (
            &["ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES"],
            "WITHSCORES not supported in combination with BYLEX",
        ),
        (
            &["ZPOPMIN", "z", "-1"],
            "value is out of range, must be positive",
        ),
        (
            &["ZUNIONSTORE", "d", "0", "z"],
            "at least 1 input key is needed for 'zunionstore' command",
        ),
        (
            &["ZUNION", "2", "z", "z", "WEIGHTS", "1", "x"],
            "weight value is not a float",
        ),
        (&["ZMPOP", "1", "z", "SIDEWAYS"], "syntax error"),
        (
            &["ZINTERCARD", "1", "z", "LIMIT", "-1"],
            "LIMIT can't be negative",
        ),
    ] {
        let error = query(&mut con, args).await.unwrap_err().to_string();
        assert!(error.contains(message), "{args:?}: {error}");
    }
    // inf + -inf makes no score.
    let _: () = con.zadd("inf", "a", "+inf").await?;
    let error = query(&mut con, &["ZINCRBY", "inf", "-inf", "a"])
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("resulting score is not a number (NaN)"),
        "{error}"
    );
    assert_eq!(con.zscore::<_, _, String>("inf", "a").await?, "inf");
    let _: () = con.set("str", "x").await?;
    for args in [
        &["ZADD", "str", "1", "a"][..],
        &["ZRANGE", "str", "0", "-1"],
        &["ZUNION", "2", "z", "str"],
    ] {
        let error = query(&mut con, args).await.unwrap_err();
        assert_eq!(error.code(), Some("WRONGTYPE"), "{args:?}");
    }
    assert_eq!(con.zcard::<_, i64>("z").await?, 4, "a, b, c and fresh");
    Ok(())
}

#[tokio::test]
async fn ranges_by_rank_score_and_lex_answer_as_redis() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con
        .zadd_multiple("z", &[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")])
        .await?;
    let members = |v: Value| -> Vec<String> { redis::from_redis_value(v).unwrap() };
    assert_eq!(
        members(query(&mut con, &["ZRANGE", "z", "1", "-2"]).await?),
        ["b", "c", "d"]
    );
    assert_eq!(
        members(query(&mut con, &["ZREVRANGE", "z", "0", "1"]).await?),
        ["e", "d"]
    );
    assert_eq!(
        members(
            query(
                &mut con,
                &["ZRANGE", "z", "(1", "4", "BYSCORE", "LIMIT", "1", "2"]
            )
            .await?
        ),
        ["c", "d"]
    );
    assert_eq!(
        members(
            query(
                &mut con,
                &[
                    "ZRANGE", "z", "+inf", "(2", "BYSCORE", "REV", "LIMIT", "0", "2"
                ]
            )
            .await?
        ),
        ["e", "d"]
    );
    assert_eq!(
        members(
            query(
                &mut con,
                &["ZREVRANGEBYSCORE", "z", "3", "-inf", "WITHSCORES"]
            )
            .await?
        ),
        ["c", "3", "b", "2", "a", "1"]
    );
    assert_eq!(con.zcount::<_, _, _, i64>("z", "(1", "3").await?, 2);
    let _: () = con
        .zadd_multiple("lex", &[(0, "alpha"), (0, "beta"), (0, "gamma")])
        .await?;
    assert_eq!(
        members(query(&mut con, &["ZRANGEBYLEX", "lex", "(alpha", "+"]).await?),
        ["beta", "gamma"]
    );
    assert_eq!(
        members(query(&mut con, &["ZREVRANGEBYLEX", "lex", "[beta", "-"]).await?),
        ["beta", "alpha"]
    );
    assert_eq!(con.zlexcount::<_, _, _, i64>("lex", "[b", "[h").await?, 2);
    assert_eq!(con.zrank::<_, _, Option<i64>>("z", "c").await?, Some(2));
    assert_eq!(con.zrevrank::<_, _, Option<i64>>("z", "c").await?, Some(2));
    assert_eq!(con.zrank::<_, _, Option<i64>>("z", "nope").await?, None);
    // ZRANGESTORE and removal by range.
    assert_eq!(
        query(&mut con, &["ZRANGESTORE", "top", "z", "0", "1", "REV"]).await?,
        Value::Int(2)
    );
    assert_eq!(
        members(query(&mut con, &["ZRANGE", "top", "0", "-1"]).await?),
        ["d", "e"]
    );
    assert_eq!(
        query(&mut con, &["ZRANGESTORE", "top", "z", "10", "20"]).await?,
        Value::Int(0)
    );
    assert!(
        !con.exists::<_, bool>("top").await?,
        "an empty result deletes the destination"
    );
    assert_eq!(
        query(&mut con, &["ZREMRANGEBYSCORE", "z", "-inf", "(2"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        query(&mut con, &["ZREMRANGEBYRANK", "z", "-1", "-1"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        query(&mut con, &["ZREMRANGEBYLEX", "lex", "-", "+"]).await?,
        Value::Int(3)
    );
    assert!(!con.exists::<_, bool>("lex").await?);
    assert_eq!(
        members(query(&mut con, &["ZRANGE", "z", "0", "-1"]).await?),
        ["b", "c", "d"]
    );
    Ok(())
}

#[tokio::test]
async fn resp3_gets_doubles_and_member_score_pairs_where_redis_sends_them() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, true).await?;
    let _: () = con
        .zadd_multiple("z", &[(1.5, "a"), (2.0, "b"), (3.0, "c")])
        .await?;
    let pair = |m: &str, s: f64| Value::Array(vec![bulk(m), Value::Double(s)]);
    assert_eq!(
        query(&mut con, &["ZRANGE", "z", "0", "1", "WITHSCORES"]).await?,
        Value::Array(vec![pair("a", 1.5), pair("b", 2.0)])
    );
    assert_eq!(
        query(&mut con, &["ZSCORE", "z", "a"]).await?,
        Value::Double(1.5)
    );
    assert_eq!(
        query(&mut con, &["ZMSCORE", "z", "a", "nope"]).await?,
        Value::Array(vec![Value::Double(1.5), Value::Nil])
    );
    // A pop without a count stays flat; with a count it is pairs.
    assert_eq!(
        query(&mut con, &["ZPOPMIN", "z"]).await?,
        Value::Array(vec![bulk("a"), Value::Double(1.5)])
    );
    assert_eq!(
        query(&mut con, &["ZPOPMAX", "z", "1"]).await?,
        Value::Array(vec![pair("c", 3.0)])
    );
    assert_eq!(
        query(
            &mut con,
            &["ZMPOP", "2", "missing", "z", "MIN", "COUNT", "5"]
        )
        .await?,
        Value::Array(vec![bulk("z"), Value::Array(vec![pair("b", 2.0)])])
    );
    assert_eq!(
        query(&mut con, &["ZMPOP", "1", "z", "MIN"]).await?,
        Value::Nil
    );
    let _: () = con.zadd_multiple("u1", &[(1, "x"), (2, "y")]).await?;
    let _: () = con.sadd("plain", &["y", "w"]).await?;
    assert_eq!(
        query(
            &mut con,
            &[
                "ZUNION",
                "2",
                "u1",
                "plain",
                "WEIGHTS",
                "2",
                "10",
                "WITHSCORES"
            ]
        )
        .await?,
        Value::Array(vec![pair("x", 2.0), pair("w", 10.0), pair("y", 14.0)]),
        "a plain set is a sorted set of score 1"
    );
    // RESP2: the same pop is a flat list of bulk strings.
    let mut old = client(addr, false).await?;
    let _: () = old.zadd_multiple("z2", &[(1, "a"), (2, "b")]).await?;
    assert_eq!(
        query(&mut old, &["ZPOPMIN", "z2", "2"]).await?,
        Value::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("2")])
    );
    Ok(())
}

#[tokio::test]
async fn the_algebra_combines_with_weights_and_aggregates() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con
        .zadd_multiple("a", &[(1, "x"), (2, "y"), (3, "z")])
        .await?;
    let _: () = con
        .zadd_multiple("b", &[(10, "y"), (20, "z"), (30, "w")])
        .await?;
    let scored = |v: Value| -> Vec<(String, f64)> { redis::from_redis_value(v).unwrap() };
    assert_eq!(
        scored(
            query(
                &mut con,
                &["ZINTER", "2", "a", "b", "AGGREGATE", "MAX", "WITHSCORES"]
            )
            .await?
        ),
        [("y".to_string(), 10.0), ("z".to_string(), 20.0)]
    );
    assert_eq!(
        query(
            &mut con,
            &[
                "ZUNIONSTORE",
                "u",
                "2",
                "a",
                "b",
                "WEIGHTS",
                "1",
                "0.5",
                "AGGREGATE",
                "MIN"
            ]
        )
        .await?,
        Value::Int(4)
    );
    assert_eq!(
        scored(query(&mut con, &["ZRANGE", "u", "0", "-1", "WITHSCORES"]).await?),
        [
            ("x".into(), 1.0),
            ("y".into(), 2.0),
            ("z".into(), 3.0),
            ("w".into(), 15.0)
        ]
    );
    assert_eq!(
        scored(query(&mut con, &["ZDIFF", "2", "a", "b", "WITHSCORES"]).await?),
        [("x".to_string(), 1.0)]
    );
    assert_eq!(
        query(&mut con, &["ZINTERCARD", "2", "a", "b", "LIMIT", "1"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        query(&mut con, &["ZDIFFSTORE", "d", "2", "a", "a"]).await?,
        Value::Int(0)
    );
    assert!(!con.exists::<_, bool>("d").await?);
    Ok(())
}

#[tokio::test]
async fn bzpopmin_serves_waiters_first_come_first_served_and_times_out_with_nil() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let mut waiters = Vec::new();
    for i in 0..3 {
        let mut waiter = client(addr, false).await?;
        waiters.push(tokio::spawn(async move {
            redis::cmd("BZPOPMIN")
                .arg("q")
                .arg(5)
                .query_async::<Value>(&mut waiter)
                .await
        }));
        // Arrival order decides who is served first.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut con)
                .await?;
            let blocked = info
                .lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .context("blocked_clients")?;
            if blocked == i + 1 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "waiter {i} never blocked");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let _: () = con
        .zadd_multiple("q", &[(3, "c"), (1, "a"), (2, "b")])
        .await?;
    let mut served = Vec::new();
    for waiter in waiters {
        served.push(waiter.await??);
    }
    assert_eq!(
        served,
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, m)| Value::Array(vec![bulk("q"), bulk(m), bulk(&(i + 1).to_string())]))
            .collect::<Vec<_>>()
    );
    assert!(!con.exists::<_, bool>("q").await?);
    let started = Instant::now();
    let timed_out = query(&mut con, &["BZMPOP", "0.05", "1", "q", "MAX"]).await?;
    assert_eq!(timed_out, Value::Nil);
    assert!(started.elapsed() >= Duration::from_millis(50));
    // Inside MULTI a blocking pop answers at once.
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("BZPOPMAX")
        .arg("q")
        .arg(0)
        .query_async(&mut con)
        .await?;
    assert_eq!(replies, [Value::Nil]);
    Ok(())
}

#[tokio::test]
async fn a_big_sorted_set_keeps_ranks_scores_and_ranges_exact() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let n = 20_000;
    for chunk in (0..n).collect::<Vec<i64>>().chunks(1000) {
        let entries: Vec<(i64, String)> =
            chunk.iter().map(|i| (i * 3 % n, format!("m{i}"))).collect();
        let _: () = con.zadd_multiple("big", &entries).await?;
    }
    assert_eq!(con.zcard::<_, i64>("big").await?, n);
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("big")
        .query_async(&mut con)
        .await?;
    assert_eq!(encoding, "skiplist");
    // Scores are a permutation of 0..n: the rank of a score is the score.
    for i in [0i64, 1, 777, 19_999] {
        let member = format!("m{i}");
        let score = i * 3 % n;
        assert_eq!(
            con.zrank::<_, _, Option<i64>>("big", &member).await?,
            Some(score)
        );
        assert_eq!(con.zscore::<_, _, f64>("big", &member).await?, score as f64);
    }
    let window: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("big")
        .arg(10_000)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(5)
        .arg(3)
        .arg("WITHSCORES")
        .query_async(&mut con)
        .await?;
    assert_eq!(
        window.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [10_005.0, 10_006.0, 10_007.0]
    );
    assert_eq!(con.zrem::<_, _, i64>("big", "m1").await?, 1);
    assert_eq!(
        con.zrank::<_, _, Option<i64>>("big", "m19999").await?,
        Some((19_999 * 3 % n) - 1)
    );
    Ok(())
}
