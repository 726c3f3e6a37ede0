//! The `ringkv-server` binary as an operator runs it: config files, flags and signals, and
//! with one I/O thread, the order in which a write's reply and its invalidations leave.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{Node, free_port, sigterm};

use std::io::{Read, Write};

fn spawn(args: &[&str]) -> Node {
    // Persistence is tested in crash.rs; here no node touches a data directory.
    let child = Command::new(env!("CARGO_BIN_EXE_ringkv-server"))
        .args(["--persistence", "no"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    Node(child)
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("node never listened on {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn request(stream: &mut TcpStream, command: &str) -> String {
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn wait_exit(node: &mut Node, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not exit in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_shuts_the_node_down_gracefully() {
    let port = free_port();
    let mut node = spawn(&["--port", &port.to_string()]);
    let mut client = connect(port);
    assert_eq!(request(&mut client, "SET k v"), "+OK\r\n");
    sigterm(&node);
    let status = wait_exit(&mut node, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    let mut log = String::new();
    node.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("ready to exit"), "{log}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_toml_config_file_is_read_and_flags_win_over_it() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("ringkv-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringkv.toml");
    std::fs::write(
        &file,
        format!("port = {port}\nmaxmemory = \"5mb\"\nmaxmemory-policy = \"allkeys-lfu\"\n"),
    )
    .unwrap();
    let _node = spawn(&["--config", file.to_str().unwrap(), "--maxmemory", "7mb"]);
    let mut client = connect(port);
    let reply = request(&mut client, "CONFIG GET maxmemory*");
    assert!(
        reply.contains("7340032"),
        "flag must win over the file: {reply}"
    );
    assert!(
        reply.contains("allkeys-lfu"),
        "file value must apply: {reply}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_config_file_stops_with_a_message_naming_it() {
    let mut node = spawn(&[
        "--config",
        "/nonexistent/ringkv.toml",
        "--port",
        &free_port().to_string(),
    ]);
    let status = wait_exit(&mut node, Duration::from_secs(10));
    assert!(!status.success());
    let mut stderr = String::new();
    BufReader::new(node.0.stderr.take().unwrap())
        .lines()
        .for_each(|l| stderr.push_str(&l.unwrap()));
    assert!(stderr.contains("/nonexistent/ringkv.toml"), "{stderr}");
}

/// Sends a RESP command built from `parts`, without reading the reply.
fn send(stream: &mut TcpStream, parts: &[&str]) {
    stream.write_all(&support::resp_command(parts)).unwrap();
}

/// Reads until the bytes read end with `end` (5 s at most).
fn read_until(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(end) {
        let n = stream
            .read(&mut chunk)
            .expect("a reply within the read timeout");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

/// With one I/O thread the node runs one connection at a time, as Redis does. A write
/// wakes the connection of the client that cached its key, but other connections were
/// ready first (one runs a 100 ms script): the writer's OK must still not leave before the
/// invalidation, or a client cache serves the old value for that long after the write
/// was acknowledged. The node is made busy so that the writer and the script's client
/// become ready together, the writer first.
#[test]
fn a_writes_invalidation_reaches_the_caching_client_before_the_writer_hears_ok() {
    let port = free_port();
    let _node = spawn(&["--port", &port.to_string(), "--io-threads", "1"]);
    let script = "local s = redis.call('TIME') repeat local n = redis.call('TIME') \
                  until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 100000 return 1";
    let mut cacher = connect(port);
    send(&mut cacher, &["HELLO", "3"]);
    read_until(&mut cacher, b"modules\r\n*0\r\n");
    let mut rounds = 0;
    for key in ["k1", "k2", "k3"] {
        send(&mut cacher, &["CLIENT", "TRACKING", "ON"]);
        read_until(&mut cacher, b"+OK\r\n");
        send(&mut cacher, &["GET", key]);
        read_until(&mut cacher, b"_\r\n");
        let (mut busy, mut writer, mut slow) = (connect(port), connect(port), connect(port));
        send(&mut busy, &["EVAL", script, "0"]);
        std::thread::sleep(Duration::from_millis(30));
        // Both arrive while the node runs the first script.
        send(&mut writer, &["SET", key, "new"]);
        std::thread::sleep(Duration::from_millis(5));
        send(&mut slow, &["EVAL", script, "0"]);
        assert_eq!(read_until(&mut writer, b"\r\n"), b"+OK\r\n");
        cacher.set_nonblocking(true).unwrap();
        let mut pushed = [0u8; 256];
        let n = cacher.read(&mut pushed).unwrap_or(0);
        cacher.set_nonblocking(false).unwrap();
        let expected = format!(">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\n{key}\r\n");
        assert_eq!(
            String::from_utf8_lossy(&pushed[..n]),
            expected,
            "the invalidation of {key} is out when the writer hears OK"
        );
        read_until(&mut busy, b":1\r\n");
        read_until(&mut slow, b":1\r\n");
        rounds += 1;
    }
    assert_eq!(rounds, 3);
}
