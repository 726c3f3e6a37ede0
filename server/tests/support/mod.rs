//! Helpers shared by the tests that spawn the `ringkv-server` binary.
#![allow(dead_code)]

pub mod cluster;
pub mod load;

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

/// A port nothing listens on right now, below the kernel's ephemeral range (so no other
/// test's outgoing connection takes it between here and the node's bind, which made
/// restarts flaky), from a block of this test process's own.
pub fn free_port() -> u16 {
    free_port_where(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// [`free_port`] that also passes `usable`.
pub fn free_port_where(usable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
    const BLOCKS: u32 = 60;
    const PER_BLOCK: u16 = 200;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid = std::process::id();
    let block = 20_000 + (pid % BLOCKS) as u16 * PER_BLOCK;
    // Two processes sharing a block start at different places in it.
    let start = ((pid / BLOCKS) % u32::from(PER_BLOCK)) as u16;
    for _ in 0..PER_BLOCK {
        let step = u32::from(start) + u32::from(NEXT.fetch_add(1, Relaxed));
        let port = block + (step % u32::from(PER_BLOCK)) as u16;
        if usable(port) {
            return port;
        }
    }
    panic!(
        "no free port in this test process's block {block}..{}",
        block + PER_BLOCK
    )
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

/// A command as a RESP array of bulk strings, as a client sends it.
pub fn resp_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut frame = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        frame.extend_from_slice(arg);
        frame.extend_from_slice(b"\r\n");
    }
    frame
}

/// A xorshift generator seeded with `seed`: the random choices a printed seed replays.
pub fn seeded(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
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
