//! The `ringkv-server` binary as an operator runs it: config files, flags and signals.

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
