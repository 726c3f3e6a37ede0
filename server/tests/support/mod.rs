//! Helpers shared by the tests that spawn the `ringkv-server` binary.
#![allow(dead_code)]

pub mod cluster;

use std::net::TcpListener;
use std::process::{Child, Command};

/// A spawned node, killed (SIGKILL) and reaped when dropped.
pub struct Node(pub Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends SIGTERM through the shell's builtin `kill` (no procps on a fresh machine).
pub fn sigterm(node: &Node) {
    let pid = node.0.id();
    let sent = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("sh runs");
    assert!(sent.success(), "kill -TERM {pid} failed");
}

/// A seed from the environment variable `var` (to replay a printed one), else the clock.
pub fn env_seed(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos() as u64
        })
}

/// A count from the environment variable `var` (more rounds of a fault test), else
/// `default`.
pub fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
