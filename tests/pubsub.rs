//! Pub/sub on a real node over loopback: subscribers on raw sockets (so every byte of a
//! message is checked, in RESP2 and RESP3), publishers through the `redis` crate, RESP2's
//! subscribed mode, order, cleanup when a subscriber leaves, and the output limit that
//! disconnects a subscriber that does not read. Expected bytes are what redis-server
//! 7.0.15 sends.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use redis::Value;
use support::raw::Raw;
use support::{client, query, start};
use tokio::io::AsyncReadExt;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_channel_and_pattern_subscribers_in_their_own_protocol() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut resp2 = Raw::connect(addr).await?;
    resp2.send(&["SUBSCRIBE", "news", "sport"]).await?;
    resp2
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n")
        .await?;
    let mut resp3 = Raw::connect(addr).await?;
    resp3.send(&["HELLO", "3"]).await?;
    resp3.send(&["PSUBSCRIBE", "n*"]).await?;
    // HELLO's map first: read up to the psubscribe push.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !resp3
        .buffer
        .ends_with(b">3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:1\r\n")
    {
        assert!(Instant::now() < deadline, "no psubscribe reply");
        let mut chunk = [0u8; 4096];
        let n = resp3.stream.read(&mut chunk).await?;
        resp3.buffer.extend_from_slice(&chunk[..n]);
    }
    resp3.buffer.clear();

    let mut publisher = client(addr, false).await?;
    assert_eq!(
        query(&mut publisher, &["PUBLISH", "news", "hello"]).await?,
        Value::Int(2),
        "the channel's subscriber and the pattern's"
    );
    resp2
        .expect(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
        .await?;
    resp3
        .expect(b">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
        .await?;
    assert_eq!(
        query(&mut publisher, &["PUBLISH", "weather", "rain"]).await?,
        Value::Int(0)
    );
    assert_eq!(
        query(&mut publisher, &["PUBSUB", "NUMSUB", "news", "weather"]).await?,
        Value::Array(vec![
            Value::BulkString(b"news".to_vec()),
            Value::Int(1),
            Value::BulkString(b"weather".to_vec()),
            Value::Int(0),
        ])
    );
    assert_eq!(
        query(&mut publisher, &["PUBSUB", "NUMPAT"]).await?,
        Value::Int(1)
    );

    // RESP3 keeps the connection usable for commands; RESP2 refuses them.
    resp3.send(&["SET", "k", "v"]).await?;
    resp3.expect(b"+OK\r\n").await?;
    resp2.send(&["GET", "k"]).await?;
    resp2
        .expect(b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n")
        .await?;
    resp2.send(&["PING"]).await?;
    resp2.expect(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").await?;

    // A subscriber that leaves is forgotten.
    drop(resp2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while query(&mut publisher, &["PUBSUB", "NUMSUB", "news"]).await?
        != Value::Array(vec![Value::BulkString(b"news".to_vec()), Value::Int(0)])
    {
        assert!(
            Instant::now() < deadline,
            "a closed subscriber still counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publishers_messages_arrive_in_the_order_published() -> Result<()> {
    let (addr, _node) = start(&[]).await?;
    let mut subscriber = Raw::connect(addr).await?;
    subscriber.send(&["SUBSCRIBE", "seq"]).await?;
    subscriber
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$3\r\nseq\r\n:1\r\n")
        .await?;
    let mut publisher = client(addr, false).await?;
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("PUBLISH").arg("seq").arg(i).ignore();
    }
    let () = pipe.query_async(&mut publisher).await?;
    for i in 0..2000 {
        let text = i.to_string();
        let expected = format!(
            "*3\r\n$7\r\nmessage\r\n$3\r\nseq\r\n${}\r\n{text}\r\n",
            text.len()
        );
        subscriber.expect(expected.as_bytes()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_disconnected_at_the_output_limit() -> Result<()> {
    let (addr, node) = start(&[]).await?;
    let mut admin = client(addr, false).await?;
    assert_eq!(
        query(
            &mut admin,
            &[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 4mb 1mb 60"
            ]
        )
        .await?,
        Value::Okay
    );
    let mut stalled = Raw::connect(addr).await?;
    stalled.send(&["SUBSCRIBE", "firehose"]).await?;
    stalled
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$8\r\nfirehose\r\n:1\r\n")
        .await?;
    // It never reads again: 400 MB published at it.
    let message = "x".repeat(100_000);
    let mut received = Vec::new();
    for _ in 0..4000 {
        match query(&mut admin, &["PUBLISH", "firehose", &message]).await? {
            Value::Int(n) => received.push(n),
            other => bail!("PUBLISH answered {other:?}"),
        }
        if received.last() == Some(&0) {
            break;
        }
    }
    let delivered = received.iter().filter(|&&n| n == 1).count();
    assert_eq!(
        received.last(),
        Some(&0),
        "the subscriber was still taking messages after {delivered}"
    );
    // What the kernel's socket buffers hold, plus the 4 MB limit: never the 400 MB.
    assert!(
        delivered < 300,
        "{delivered} messages of 100 kB were queued for a subscriber that does not read"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.clients.len() > 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled subscriber is still connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        query(&mut admin, &["PUBSUB", "NUMSUB", "firehose"]).await?,
        Value::Array(vec![Value::BulkString(b"firehose".to_vec()), Value::Int(0)])
    );
    Ok(())
}
