//! DUMP and RESTORE on a real node over loopback: every type comes back whole, and a
//! damaged payload or a bad option is refused with Redis's words and changes nothing.

use anyhow::Result;
use redis::{AsyncCommands, Value};
use support::{client, start};

mod support;

async fn dump(con: &mut redis::aio::MultiplexedConnection, key: &str) -> Result<Vec<u8>> {
    Ok(redis::cmd("DUMP").arg(key).query_async(con).await?)
}

#[tokio::test]
async fn dump_and_restore_carry_every_type_and_its_ttl() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.set("s", "text").await?;
    let _: () = con.hset_multiple("h", &[("f", "1"), ("g", "2")]).await?;
    let _: () = con.rpush("l", &["a", "b", "c"]).await?;
    let _: () = con.sadd("set", &["x", "y"]).await?;
    let _: () = con.zadd_multiple("z", &[(1.5, "m"), (-2.0, "n")]).await?;
    for key in ["s", "h", "l", "set", "z"] {
        let payload = dump(&mut con, key).await?;
        let copy = format!("{key}:copy");
        let _: () = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .query_async(&mut con)
            .await?;
        assert_eq!(dump(&mut con, &copy).await?, payload, "{key}");
        assert_eq!(
            con.key_type::<_, String>(&copy).await?,
            con.key_type::<_, String>(key).await?
        );
    }
    assert_eq!(con.zscore::<_, _, f64>("z:copy", "m").await?, 1.5);
    assert_eq!(
        con.lrange::<_, Vec<String>>("l:copy", 0, -1).await?,
        ["a", "b", "c"]
    );
    let missing: Value = redis::cmd("DUMP")
        .arg("missing")
        .query_async(&mut con)
        .await?;
    assert_eq!(missing, Value::Nil);
    // A TTL, relative or absolute; one already passed restores nothing.
    let payload = dump(&mut con, "s").await?;
    let _: () = redis::cmd("RESTORE")
        .arg("t")
        .arg(50_000)
        .arg(&payload)
        .query_async(&mut con)
        .await?;
    let pttl: i64 = con.pttl("t").await?;
    assert!((49_000..=50_000).contains(&pttl), "{pttl}");
    let _: () = redis::cmd("RESTORE")
        .arg("past")
        .arg(1_000)
        .arg(&payload)
        .arg("ABSTTL")
        .query_async(&mut con)
        .await?;
    assert!(!con.exists::<_, bool>("past").await?);
    Ok(())
}

#[tokio::test]
async fn restore_refuses_busy_keys_bad_options_and_damaged_payloads() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.rpush("l", &["a", "b"]).await?;
    let payload = dump(&mut con, "l").await?;
    let restore = |key: &str, payload: &[u8], extra: &[&str]| {
        let mut command = redis::cmd("RESTORE");
        command.arg(key).arg(0).arg(payload);
        for arg in extra {
            command.arg(*arg);
        }
        command
    };
    let error = restore("l", &payload, &[])
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("BUSYKEY"), "{error}");
    let _: () = restore("l", &payload, &["REPLACE"])
        .query_async(&mut con)
        .await?;
    let mut truncated = payload.clone();
    truncated.pop();
    let mut tampered = payload.clone();
    tampered[1] ^= 1;
    for bad in [&truncated[..], &tampered, b"junk"] {
        let error = restore("new", bad, &[])
            .query_async::<()>(&mut con)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("DUMP payload version or checksum are wrong"),
            "{error}"
        );
    }
    assert!(!con.exists::<_, bool>("new").await?);
    for (extra, message) in [
        (
            &["IDLETIME", "-1"][..],
            "Invalid IDLETIME value, must be >= 0",
        ),
        (
            &["FREQ", "256"],
            "Invalid FREQ value, must be >= 0 and <= 255",
        ),
        (&["FREQ", "1", "IDLETIME", "1"], "syntax error"),
        (&["SOMETHING"], "syntax error"),
    ] {
        let error = restore("new", &payload, extra)
            .query_async::<()>(&mut con)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(message), "{extra:?}: {error}");
    }
    let error = redis::cmd("RESTORE")
        .arg("new")
        .arg(-1)
        .arg(&payload)
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("Invalid TTL value, must be >= 0"),
        "{error}"
    );
    Ok(())
}
