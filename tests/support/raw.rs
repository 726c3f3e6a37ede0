//! A raw RESP connection for tests that check every byte a server sends (pub/sub
//! messages, notifications).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// A raw connection that reads exactly what it expects, within a bound.
pub struct Raw {
    pub stream: TcpStream,
    pub buffer: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Result<Raw> {
        Ok(Raw {
            stream: TcpStream::connect(addr).await?,
            buffer: Vec::new(),
        })
    }

    pub async fn send(&mut self, args: &[&str]) -> Result<()> {
        self.stream.write_all(&command(args)).await?;
        Ok(())
    }

    /// Reads until `expected` arrived, and checks it is exactly what came.
    pub async fn expect(&mut self, expected: &[u8]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.buffer.len() < expected.len() {
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            let n = match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(read) => read?,
                Err(_) => bail!(
                    "waited for {:?}, got {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&self.buffer)
                ),
            };
            if n == 0 {
                bail!("closed after {:?}", String::from_utf8_lossy(&self.buffer));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        let got: Vec<u8> = self.buffer.drain(..expected.len()).collect();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
        Ok(())
    }
}
