//! SORT and SORT_RO on a real node over loopback through the `redis` crate.

use anyhow::Result;
use redis::{AsyncCommands, Value};
use support::{client, query, start};

mod support;

fn strings(value: Value) -> Vec<Option<String>> {
    redis::from_redis_value(value).unwrap()
}

#[tokio::test]
async fn sort_orders_numbers_text_and_patterns_as_redis() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.rpush("l", &["3", "10", "1", "2.5"]).await?;
    let s = |v: &[&str]| v.iter().map(|x| Some(x.to_string())).collect::<Vec<_>>();
    assert_eq!(
        strings(query(&mut con, &["SORT", "l"]).await?),
        s(&["1", "2.5", "3", "10"])
    );
    assert_eq!(
        strings(query(&mut con, &["SORT", "l", "ALPHA"]).await?),
        s(&["1", "10", "2.5", "3"])
    );
    assert_eq!(
        strings(query(&mut con, &["SORT", "l", "DESC", "LIMIT", "1", "2"]).await?),
        s(&["3", "2.5"])
    );
    // BY and GET patterns read other keys: strings and hash fields; a missing one is nil.
    let _: () = con.sadd("users", &["1", "2", "3"]).await?;
    for (id, age, name) in [("1", "30", "ann"), ("2", "20", "bob")] {
        let _: () = con.set(format!("age_{id}"), age).await?;
        let _: () = con.hset(format!("user:{id}"), "name", name).await?;
    }
    assert_eq!(
        strings(
            query(
                &mut con,
                &[
                    "SORT",
                    "users",
                    "BY",
                    "age_*",
                    "GET",
                    "#",
                    "GET",
                    "user:*->name"
                ]
            )
            .await?
        ),
        vec![
            Some("3".into()),
            None,
            Some("2".into()),
            Some("bob".into()),
            Some("1".into()),
            Some("ann".into())
        ]
    );
    // BY a name without `*` keeps the container's order (a set's sorted, to be stable).
    assert_eq!(
        strings(query(&mut con, &["SORT", "users", "BY", "nosort"]).await?),
        s(&["1", "2", "3"])
    );
    // STORE writes a list and wakes a client blocked on it.
    let mut waiter = client(addr, false).await?;
    let blocked = tokio::spawn(async move {
        redis::cmd("BLPOP")
            .arg("sorted")
            .arg(5)
            .query_async::<Vec<String>>(&mut waiter)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        query(&mut con, &["SORT", "l", "STORE", "sorted"]).await?,
        Value::Int(4)
    );
    assert_eq!(blocked.await??, ["sorted", "1"]);
    assert_eq!(
        con.lrange::<_, Vec<String>>("sorted", 0, -1).await?,
        ["2.5", "3", "10"]
    );
    assert_eq!(
        query(&mut con, &["SORT", "missing", "STORE", "sorted"]).await?,
        Value::Int(0)
    );
    assert!(!con.exists::<_, bool>("sorted").await?);
    let _: () = con.zadd_multiple("z", &[(2, "b"), (1, "a")]).await?;
    assert_eq!(
        strings(query(&mut con, &["SORT_RO", "z", "ALPHA", "DESC"]).await?),
        s(&["b", "a"])
    );
    // Errors.
    let _: () = con.rpush("words", &["x", "y"]).await?;
    for (args, message) in [
        (
            &["SORT", "words"][..],
            "One or more scores can't be converted into double",
        ),
        (&["SORT_RO", "l", "STORE", "d"], "syntax error"),
        (
            &["SORT", "l", "LIMIT", "x", "1"],
            "value is not an integer or out of range",
        ),
        (&["SORT", "l", "SIDEWAYS"], "syntax error"),
    ] {
        let error = query(&mut con, args).await.unwrap_err().to_string();
        assert!(error.contains(message), "{args:?}: {error}");
    }
    let _: () = con.set("str", "v").await?;
    assert_eq!(
        query(&mut con, &["SORT", "str"]).await.unwrap_err().code(),
        Some("WRONGTYPE")
    );
    Ok(())
}
