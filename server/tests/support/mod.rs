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
/// restarts flaky), from a block of ports this test process holds alone.
pub fn free_port() -> u16 {
    free_port_where(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// [`free_port`] that also passes `usable`.
pub fn free_port_where(usable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = port_block();
    for _ in 0..PORTS_PER_BLOCK {
        // The block's first port is its claim.
        let step = 1 + NEXT.fetch_add(1, Relaxed) % (PORTS_PER_BLOCK - 1);
        let port = block + step;
        if usable(port) {
            return port;
        }
    }
    panic!(
        "no free port in this test process's block {block}..{}",
        block + PORTS_PER_BLOCK
    )
}

const PORT_BLOCKS: u16 = 60;
const PORTS_PER_BLOCK: u16 = 200;

/// The first port of a block no other test process uses while this one lives: each block
/// is claimed by listening on its first port (kept until the process exits; nodes get the
/// others). Two concurrent test processes once shared a block (picked by pid), and a
/// member of one cluster, started on a port the other's killed member had used, was taken
/// into the other cluster by its gossip: six members, writes applied twice.
fn port_block() -> u16 {
    use std::sync::OnceLock;
    static BLOCK: OnceLock<(u16, Option<TcpListener>)> = OnceLock::new();
    let (first_port, _claim) = BLOCK.get_or_init(|| {
        let start = (std::process::id() % u32::from(PORT_BLOCKS)) as u16;
        for i in 0..PORT_BLOCKS {
            let port = 20_000 + (start + i) % PORT_BLOCKS * PORTS_PER_BLOCK;
            if let Ok(claim) = TcpListener::bind(("127.0.0.1", port)) {
                return (port, Some(claim));
            }
        }
        // Every block taken: share one, as before the claims.
        (20_000 + start * PORTS_PER_BLOCK, None)
    });
    *first_port
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
