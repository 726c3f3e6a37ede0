//! Sets on a real node over loopback through the `redis` crate: replies in RESP2 and
//! RESP3, Redis's errors, random members, the algebra and SSCAN.

use std::collections::BTreeSet;

use anyhow::Result;
use redis::{AsyncCommands, Value};
use support::{client, start};

mod support;

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn error_of(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    match command.query_async::<Value>(con).await {
        Ok(value) => panic!("{args:?} answered {value:?}"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn set_commands_answer_as_redis_and_refuse_bad_input_without_changes() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    assert_eq!(con.sadd::<_, _, i64>("s", &["a", "b", "c", "a"]).await?, 3);
    assert_eq!(con.sadd::<_, _, i64>("s", &["c", "d"]).await?, 1);
    assert_eq!(con.scard::<_, i64>("s").await?, 4);
    assert!(con.sismember::<_, _, bool>("s", "a").await?);
    assert!(!con.sismember::<_, _, bool>("missing", "a").await?);
    let flags: Vec<i64> = redis::cmd("SMISMEMBER")
        .arg("s")
        .arg("a")
        .arg("zz")
        .arg("d")
        .query_async(&mut con)
        .await?;
    assert_eq!(flags, [1, 0, 1]);
    assert_eq!(con.srem::<_, _, i64>("s", &["a", "zz"]).await?, 1);
    assert_eq!(
        con.smembers::<_, BTreeSet<String>>("s").await?,
        strings(&["b", "c", "d"])
    );
    // Removing the last member deletes the key, as in Redis.
    let _: () = con.sadd("one", "x").await?;
    assert_eq!(con.srem::<_, _, i64>("one", "x").await?, 1);
    assert!(!con.exists::<_, bool>("one").await?);
    // Encodings: small integer sets are intsets, small others listpacks, big ones tables.
    let _: () = con.sadd("ints", &["3", "1", "2"]).await?;
    let encoding = |key: &'static str| redis::cmd("OBJECT").arg("ENCODING").arg(key).clone();
    assert_eq!(
        encoding("ints").query_async::<String>(&mut con).await?,
        "intset"
    );
    assert_eq!(
        con.smembers::<_, Vec<String>>("ints").await?,
        ["1", "2", "3"],
        "an intset lists its members in numeric order"
    );
    assert_eq!(
        encoding("s").query_async::<String>(&mut con).await?,
        "listpack"
    );
    let many: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let _: () = con.sadd("big", &many).await?;
    assert_eq!(
        encoding("big").query_async::<String>(&mut con).await?,
        "hashtable"
    );
    assert_eq!(con.key_type::<_, String>("big").await?, "set");

    let _: () = con.set("str", "x").await?;
    for args in [
        &["SADD", "str", "a"][..],
        &["SMEMBERS", "str"],
        &["SINTER", "s", "str"],
        &["SUNIONSTORE", "dst", "s", "str"],
        &["SMOVE", "s", "str", "b"],
    ] {
        assert!(
            error_of(&mut con, args).await.contains("WRONGTYPE"),
            "{args:?}"
        );
    }
    assert!(
        !con.exists::<_, bool>("dst").await?,
        "a refused store writes nothing"
    );
    assert!(
        con.sismember::<_, _, bool>("s", "b").await?,
        "a refused move moves nothing"
    );
    for (args, message) in [
        (
            &["SPOP", "s", "-1"][..],
            "value is out of range, must be positive",
        ),
        (&["SPOP", "s", "1", "2"], "syntax error"),
        (
            &["SRANDMEMBER", "s", "-9223372036854775808"],
            "value is out of range",
        ),
        (
            &["SRANDMEMBER", "s", "x"],
            "value is not an integer or out of range",
        ),
        (
            &["SINTERCARD", "0", "s"],
            "numkeys should be greater than 0",
        ),
        (
            &["SINTERCARD", "3", "s"],
            "Number of keys can't be greater than number of args",
        ),
        (
            &["SINTERCARD", "1", "s", "LIMIT", "-1"],
            "LIMIT can't be negative",
        ),
        (&["SSCAN", "s", "x"], "invalid cursor"),
        (
            &["SMISMEMBER", "s"],
            "wrong number of arguments for 'smismember' command",
        ),
    ] {
        let error = error_of(&mut con, args).await;
        assert!(error.contains(message), "{args:?}: {error}");
    }
    assert_eq!(con.scard::<_, i64>("s").await?, 3);
    Ok(())
}

#[tokio::test]
async fn members_are_sets_in_resp3_and_random_members_follow_the_count_rules() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, true).await?;
    let _: () = con.sadd("s", &["a", "b", "c"]).await?;
    let members: Value = con.smembers("s").await?;
    let Value::Set(items) = members else {
        panic!("SMEMBERS in RESP3 is a set, got {members:?}")
    };
    assert_eq!(items.len(), 3);
    assert_eq!(
        con.smembers::<_, Value>("missing").await?,
        Value::Set(vec![])
    );
    let union: Value = con.sunion(&["s", "missing"]).await?;
    assert!(
        matches!(union, Value::Set(ref m) if m.len() == 3),
        "{union:?}"
    );
    // SRANDMEMBER answers an array; a negative count may repeat members.
    let random: Value = redis::cmd("SRANDMEMBER")
        .arg("s")
        .arg(-10)
        .query_async(&mut con)
        .await?;
    let Value::Array(picks) = random else {
        panic!("SRANDMEMBER with a count is an array, got {random:?}")
    };
    assert_eq!(picks.len(), 10);
    let distinct: BTreeSet<String> = redis::cmd("SRANDMEMBER")
        .arg("s")
        .arg(10)
        .query_async(&mut con)
        .await?;
    assert_eq!(distinct, strings(&["a", "b", "c"]));
    let one: Option<String> = con.srandmember("missing").await?;
    assert_eq!(one, None);
    // SPOP with a count answers a set and removes exactly what it answered.
    let popped: Value = redis::cmd("SPOP")
        .arg("s")
        .arg(2)
        .query_async(&mut con)
        .await?;
    let Value::Set(popped) = popped else {
        panic!("SPOP with a count is a set, got {popped:?}")
    };
    assert_eq!(popped.len(), 2);
    assert_eq!(con.scard::<_, i64>("s").await?, 1);
    let zero: Value = redis::cmd("SPOP")
        .arg("missing")
        .arg(0)
        .query_async(&mut con)
        .await?;
    assert_eq!(zero, Value::Set(vec![]));
    let last: Option<String> = con.spop("s").await?;
    assert!(last.is_some());
    assert!(!con.exists::<_, bool>("s").await?);
    Ok(())
}

#[tokio::test]
async fn set_algebra_and_moves_give_redis_results_and_empty_results_delete_the_destination()
-> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.sadd("a", &["1", "2", "3", "x"]).await?;
    let _: () = con.sadd("b", &["2", "3", "4"]).await?;
    let _: () = con.sadd("c", &["3", "x", "4"]).await?;
    let inter: BTreeSet<String> = con.sinter(&["a", "b", "c"]).await?;
    assert_eq!(inter, strings(&["3"]));
    let union: BTreeSet<String> = con.sunion(&["a", "b"]).await?;
    assert_eq!(union, strings(&["1", "2", "3", "4", "x"]));
    let diff: BTreeSet<String> = con.sdiff(&["a", "b", "missing"]).await?;
    assert_eq!(diff, strings(&["1", "x"]));
    let card: i64 = redis::cmd("SINTERCARD")
        .arg(2)
        .arg("a")
        .arg("b")
        .arg("LIMIT")
        .arg(1)
        .query_async(&mut con)
        .await?;
    assert_eq!(card, 1);
    assert!(
        con.sinter::<_, BTreeSet<String>>(&["a", "missing"])
            .await?
            .is_empty()
    );
    // A store replaces the destination whatever it held, TTL included.
    let _: () = con.set_ex("dst", "old", 100).await?;
    assert_eq!(con.sdiffstore::<_, _, i64>("dst", &["a", "b"]).await?, 2);
    assert_eq!(con.ttl::<_, i64>("dst").await?, -1);
    assert_eq!(
        con.smembers::<_, BTreeSet<String>>("dst").await?,
        strings(&["1", "x"])
    );
    // A source may be the destination.
    assert_eq!(con.sinterstore::<_, _, i64>("a", &["a", "b"]).await?, 2);
    assert_eq!(
        con.smembers::<_, BTreeSet<String>>("a").await?,
        strings(&["2", "3"])
    );
    assert_eq!(
        con.sinterstore::<_, _, i64>("dst", &["a", "missing"])
            .await?,
        0
    );
    assert!(!con.exists::<_, bool>("dst").await?);
    // SMOVE: 1 when moved, 0 when the source lacks the member; an emptied source goes.
    assert!(con.smove::<_, _, _, bool>("a", "b", "2").await?);
    assert!(!con.smove::<_, _, _, bool>("a", "b", "nope").await?);
    assert!(con.smove::<_, _, _, bool>("a", "new", "3").await?);
    assert!(!con.exists::<_, bool>("a").await?);
    assert_eq!(
        con.smembers::<_, BTreeSet<String>>("new").await?,
        strings(&["3"])
    );
    assert!(con.smove::<_, _, _, bool>("new", "new", "3").await?);
    // A missing source answers 0 even when the destination holds another type.
    let _: () = con.set("str", "v").await?;
    assert!(!con.smove::<_, _, _, bool>("missing", "str", "3").await?);
    Ok(())
}

#[tokio::test]
async fn sscan_visits_every_member_while_the_set_changes_and_grows_past_its_packed_form()
-> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let initial: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let _: () = con.sadd("s", &initial).await?;
    let mut seen = BTreeSet::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (next, members): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg("s")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query_async(&mut con)
            .await?;
        seen.extend(members);
        calls += 1;
        // Converts the intset into a table mid-scan; the order must not change.
        if calls == 3 {
            let words: Vec<String> = (0..600).map(|i| format!("w{i}")).collect();
            let _: () = con.sadd("s", &words).await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(calls < 1_000, "the scan does not end");
    }
    for member in &initial {
        assert!(
            seen.contains(member),
            "{member} was present for the whole scan and missed"
        );
    }
    let matched: (u64, Vec<String>) = redis::cmd("SSCAN")
        .arg("s")
        .arg(0)
        .arg("MATCH")
        .arg("9*")
        .arg("COUNT")
        .arg(10_000)
        .query_async(&mut con)
        .await?;
    assert_eq!(matched.0, 0);
    assert_eq!(matched.1.len(), 11, "9 and 90..99: {:?}", matched.1);
    Ok(())
}

#[tokio::test]
async fn a_watched_set_changed_by_another_client_aborts_the_transaction() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let mut other = client(addr, false).await?;
    let _: () = con.sadd("s", "a").await?;
    let _: () = redis::cmd("WATCH").arg("s").query_async(&mut con).await?;
    let _: () = other.sadd("s", "b").await?;
    let result: Option<Vec<i64>> = redis::pipe()
        .atomic()
        .sadd("s", "c")
        .query_async(&mut con)
        .await?;
    assert_eq!(
        result, None,
        "EXEC after a watched set changed runs nothing"
    );
    assert!(!con.sismember::<_, _, bool>("s", "c").await?);
    // An SADD that adds nothing does not count as a change.
    let _: () = redis::cmd("WATCH").arg("s").query_async(&mut con).await?;
    let _: i64 = other.sadd("s", "b").await?;
    let result: Option<Vec<i64>> = redis::pipe()
        .atomic()
        .sadd("s", "c")
        .query_async(&mut con)
        .await?;
    assert_eq!(result, Some(vec![1]));
    Ok(())
}
