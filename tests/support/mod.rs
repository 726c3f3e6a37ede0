//! Helpers shared by the loopback test binaries (each uses a subset).
#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use ringkv_server::{Config, Node, Server};

/// A node on 127.0.0.1 with a free port, serving until the test's runtime ends.
pub async fn start(extra: &[&str]) -> Result<(SocketAddr, Arc<Node>)> {
    let mut args = vec![
        "ringkv-server",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--persistence",
        "no",
    ];
    args.extend_from_slice(extra);
    let config = Config::from_args(args)?;
    let server = Server::bind(config, None).await?;
    let addr = server.local_addrs()[0];
    let node = server.node();
    tokio::spawn(server.run());
    Ok((addr, node))
}

pub async fn client(addr: SocketAddr, resp3: bool) -> Result<redis::aio::MultiplexedConnection> {
    let url = format!(
        "redis://{addr}/{}",
        if resp3 { "?protocol=resp3" } else { "" }
    );
    let client = redis::Client::open(url)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// A RESP2 connection without the client library's 500 ms response timeout, for commands
/// that legitimately wait on the server (CACHE.GET … WAIT).
pub async fn waiting_client(addr: SocketAddr) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Sends `args` as one command and returns the raw reply.
pub async fn query(
    con: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async(con).await
}

/// A loopback port free for UDP (gossip) and TCP (peer links) at once.
pub fn free_udp_port() -> u16 {
    for _ in 0..100 {
        let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = socket.local_addr().map(|a| a.port()) else {
            continue;
        };
        drop(socket);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for UDP and TCP in 100 tries")
}
