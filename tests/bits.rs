//! Bit commands and LCS on a real node over loopback through the `redis` crate.

use anyhow::Result;
use redis::{AsyncCommands, Value};
use support::{client, query, start};

mod support;

#[tokio::test]
async fn setbit_getbit_bitcount_and_bitpos_work_on_the_same_bits_as_redis() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    assert!(!con.setbit::<_, bool>("b", 7, true).await?);
    assert!(
        con.setbit::<_, bool>("b", 7, true).await?,
        "SETBIT answers the old bit"
    );
    let _: bool = con.setbit("b", 18, true).await?;
    assert_eq!(con.get::<_, Vec<u8>>("b").await?, [0x01, 0x00, 0x20]);
    assert!(con.getbit::<_, bool>("b", 18).await?);
    assert!(!con.getbit::<_, bool>("b", 1_000_000).await?);
    assert_eq!(con.bitcount::<_, i64>("b").await?, 2);
    assert_eq!(
        query(&mut con, &["BITCOUNT", "b", "1", "-1"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        query(&mut con, &["BITCOUNT", "b", "0", "7", "BIT"]).await?,
        Value::Int(1)
    );
    assert_eq!(
        query(&mut con, &["BITCOUNT", "b", "8", "17", "BIT"]).await?,
        Value::Int(0)
    );
    assert_eq!(query(&mut con, &["BITPOS", "b", "1"]).await?, Value::Int(7));
    assert_eq!(
        query(&mut con, &["BITPOS", "b", "1", "1"]).await?,
        Value::Int(18)
    );
    assert_eq!(query(&mut con, &["BITPOS", "b", "0"]).await?, Value::Int(0));
    let _: () = con.set("ones", vec![0xffu8; 2]).await?;
    // Without an end the string continues with zeros; with one, there is no clear bit.
    assert_eq!(
        query(&mut con, &["BITPOS", "ones", "0"]).await?,
        Value::Int(16)
    );
    assert_eq!(
        query(&mut con, &["BITPOS", "ones", "0", "0", "-1"]).await?,
        Value::Int(-1)
    );
    assert_eq!(
        query(&mut con, &["BITPOS", "missing", "1"]).await?,
        Value::Int(-1)
    );
    for (args, message) in [
        (
            &["SETBIT", "b", "-1", "1"][..],
            "bit offset is not an integer or out of range",
        ),
        (
            &["SETBIT", "b", "4294967296000", "1"],
            "bit offset is not an integer or out of range",
        ),
        (
            &["SETBIT", "b", "1", "2"],
            "bit is not an integer or out of range",
        ),
        (&["BITPOS", "b", "2"], "The bit argument must be 1 or 0."),
        (&["BITCOUNT", "b", "0"], "syntax error"),
        (&["BITCOUNT", "b", "0", "1", "WORD"], "syntax error"),
    ] {
        let error = query(&mut con, args).await.unwrap_err().to_string();
        assert!(error.contains(message), "{args:?}: {error}");
    }
    let _: () = con.lpush("list", "x").await?;
    let error = query(&mut con, &["SETBIT", "list", "0", "1"])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("WRONGTYPE"));
    assert_eq!(
        con.get::<_, Vec<u8>>("b").await?,
        [0x01, 0x00, 0x20],
        "nothing changed"
    );
    Ok(())
}

#[tokio::test]
async fn bitop_combines_strings_zero_padded_and_an_empty_result_deletes_the_target() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.set("a", vec![0b1100_1100u8, 0xff]).await?;
    let _: () = con.set("b", vec![0b1010_1010u8]).await?;
    assert_eq!(
        query(&mut con, &["BITOP", "AND", "d", "a", "b"]).await?,
        Value::Int(2)
    );
    assert_eq!(con.get::<_, Vec<u8>>("d").await?, [0b1000_1000, 0x00]);
    let _: i64 = redis::cmd("BITOP")
        .arg("XOR")
        .arg("d")
        .arg("a")
        .arg("b")
        .query_async(&mut con)
        .await?;
    assert_eq!(con.get::<_, Vec<u8>>("d").await?, [0b0110_0110, 0xff]);
    let _: i64 = redis::cmd("BITOP")
        .arg("NOT")
        .arg("d")
        .arg("b")
        .query_async(&mut con)
        .await?;
    assert_eq!(con.get::<_, Vec<u8>>("d").await?, [0b0101_0101]);
    assert_eq!(
        query(&mut con, &["BITOP", "OR", "d", "nothing"]).await?,
        Value::Int(0)
    );
    assert!(!con.exists::<_, bool>("d").await?);
    let error = query(&mut con, &["BITOP", "NOT", "d", "a", "b"])
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("BITOP NOT must be called with a single source key.")
    );
    let error = query(&mut con, &["BITOP", "NAND", "d", "a"])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("syntax error"));
    Ok(())
}

#[tokio::test]
async fn bitfield_reads_writes_and_overflows_as_redis() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    // Sidekiq's heartbeat shape: a counter in an unsigned field.
    let replies = query(
        &mut con,
        &[
            "BITFIELD", "f", "INCRBY", "u8", "#1", "250", "GET", "u8", "8",
        ],
    )
    .await?;
    assert_eq!(
        replies,
        Value::Array(vec![Value::Int(250), Value::Int(250)])
    );
    let wrap = query(&mut con, &["BITFIELD", "f", "INCRBY", "u8", "8", "10"]).await?;
    assert_eq!(wrap, Value::Array(vec![Value::Int(4)]));
    let sat = query(
        &mut con,
        &[
            "BITFIELD", "f", "OVERFLOW", "SAT", "INCRBY", "u8", "8", "300",
        ],
    )
    .await?;
    assert_eq!(sat, Value::Array(vec![Value::Int(255)]));
    let fail = query(
        &mut con,
        &[
            "BITFIELD", "f", "OVERFLOW", "FAIL", "INCRBY", "u8", "8", "1",
        ],
    )
    .await?;
    assert_eq!(fail, Value::Array(vec![Value::Nil]));
    let set = query(
        &mut con,
        &[
            "BITFIELD", "f", "SET", "i5", "100", "-3", "GET", "i5", "100",
        ],
    )
    .await?;
    assert_eq!(set, Value::Array(vec![Value::Int(0), Value::Int(-3)]));
    assert_eq!(
        con.strlen::<_, i64>("f").await?,
        14,
        "grown to the farthest written bit"
    );
    let read_only = query(&mut con, &["BITFIELD_RO", "f", "GET", "u8", "8"]).await?;
    assert_eq!(read_only, Value::Array(vec![Value::Int(255)]));
    assert_eq!(
        query(&mut con, &["BITFIELD", "missing", "GET", "i64", "0"]).await?,
        Value::Array(vec![Value::Int(0)])
    );
    assert!(
        !con.exists::<_, bool>("missing").await?,
        "a read creates nothing"
    );
    for (args, message) in [
        (
            &["BITFIELD", "f", "GET", "u64", "0"][..],
            "Invalid bitfield type",
        ),
        (
            &["BITFIELD", "f", "GET", "x8", "0"],
            "Invalid bitfield type",
        ),
        (
            &["BITFIELD", "f", "OVERFLOW", "MAYBE"],
            "Invalid OVERFLOW type specified",
        ),
        (
            &["BITFIELD", "f", "SET", "u8", "-1", "1"],
            "bit offset is not an integer or out of range",
        ),
        (
            &["BITFIELD", "f", "SET", "u8", "0", "x"],
            "value is not an integer or out of range",
        ),
        (&["BITFIELD", "f", "FROB", "u8", "0"], "syntax error"),
        (
            &["BITFIELD_RO", "f", "SET", "u8", "0", "1"],
            "BITFIELD_RO only supports the GET subcommand",
        ),
    ] {
        let error = query(&mut con, args).await.unwrap_err().to_string();
        assert!(error.contains(message), "{args:?}: {error}");
    }
    Ok(())
}

#[tokio::test]
async fn lcs_answers_the_string_its_length_and_its_matches_in_both_protocols() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut con = client(addr, false).await?;
    let _: () = con.set("a", "ohmytext").await?;
    let _: () = con.set("b", "mynewtext").await?;
    assert_eq!(
        query(&mut con, &["LCS", "a", "b"]).await?,
        Value::BulkString(b"mytext".to_vec())
    );
    assert_eq!(
        query(&mut con, &["LCS", "a", "b", "LEN"]).await?,
        Value::Int(6)
    );
    let range = |a: i64, b: i64| Value::Array(vec![Value::Int(a), Value::Int(b)]);
    let expected_matches = Value::Array(vec![
        Value::Array(vec![range(4, 7), range(5, 8), Value::Int(4)]),
        Value::Array(vec![range(2, 3), range(0, 1), Value::Int(2)]),
    ]);
    let idx = query(&mut con, &["LCS", "a", "b", "IDX", "WITHMATCHLEN"]).await?;
    assert_eq!(
        idx,
        Value::Array(vec![
            Value::BulkString(b"matches".to_vec()),
            expected_matches.clone(),
            Value::BulkString(b"len".to_vec()),
            Value::Int(6),
        ])
    );
    let filtered = query(&mut con, &["LCS", "a", "b", "IDX", "MINMATCHLEN", "4"]).await?;
    let Value::Array(parts) = filtered else {
        panic!("{filtered:?}")
    };
    assert_eq!(
        parts[1],
        Value::Array(vec![Value::Array(vec![range(4, 7), range(5, 8)])])
    );
    let mut resp3 = client(addr, true).await?;
    let map = query(&mut resp3, &["LCS", "a", "b", "IDX", "WITHMATCHLEN"]).await?;
    assert_eq!(
        map,
        Value::Map(vec![
            (Value::BulkString(b"matches".to_vec()), expected_matches),
            (Value::BulkString(b"len".to_vec()), Value::Int(6)),
        ])
    );
    let _: () = con.rpush("l", "x").await?;
    let error = query(&mut con, &["LCS", "a", "l"]).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("The specified keys must contain string values")
    );
    let error = query(&mut con, &["LCS", "a", "b", "LEN", "IDX"])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("please just use IDX"));
    Ok(())
}
