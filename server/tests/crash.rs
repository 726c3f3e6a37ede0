//! Crash tests of the persistence tier, in the style of sled's: a node serves writers, is
//! killed with SIGKILL at a random moment, restarts on the same directory, and what it
//! recovered is checked against what was acknowledged. A failing run prints its seed;
//! `RINGKV_CRASH_SEED=<seed>` replays it and `RINGKV_CRASH_ROUNDS=<n>` runs more rounds.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

mod support;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Node, env_count, env_seed, free_port, sigterm};

fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_ringkv-server"))
        .args(["--port", &port.to_string(), "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        // Kept so a node that fails to start says why in the test's failure.
        .stderr(std::fs::File::create(node_log(port)).expect("a node log file"))
        .spawn()
        .expect("the server binary starts");
    Node(child)
}

/// Where the node on `port` writes its log.
fn node_log(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ringkv-crash-test-node-{port}.log"))
}

/// The last lines of the node's log on `port`, for a failure message.
fn log_tail(port: u16) -> String {
    let text = std::fs::read_to_string(node_log(port)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A blocking RESP client that reads whole replies (simple, error, integer, bulk, arrays).
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        // Generous: on a loaded machine several nodes open their data directories at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    return Client {
                        reader: BufReader::new(stream.try_clone().unwrap()),
                        writer: stream,
                    };
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("node never listened: {e}; its log:\n{}", log_tail(port))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sends a command; `None` when the connection broke (the node died).
    fn call(&mut self, args: &[&[u8]]) -> Option<String> {
        self.writer.write_all(&support::resp_command(args)).ok()?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> Option<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        match line.as_bytes().first()? {
            b'$' => {
                let len: i64 = line[1..].parse().ok()?;
                if len < 0 {
                    return Some("(nil)".into());
                }
                let mut buf = vec![0u8; len as usize + 2];
                std::io::Read::read_exact(&mut self.reader, &mut buf).ok()?;
                buf.truncate(len as usize);
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            b'*' => {
                let n: i64 = line[1..].parse().ok()?;
                let mut parts = Vec::new();
                for _ in 0..n.max(0) {
                    parts.push(self.read_reply()?);
                }
                Some(parts.join("\n"))
            }
            _ => Some(line),
        }
    }

    fn get(&mut self, key: &str) -> String {
        self.call(&[b"GET", key.as_bytes()]).expect("GET answered")
    }

    /// Waits until the node has loaded its data.
    fn wait_loaded(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = self.writer.peer_addr().map_or(0, |a| a.port());
        let mut last = None;
        while Instant::now() < deadline {
            match self.call(&[b"INFO", b"persistence"]) {
                Some(info) if info.contains("\r\nloading:0") => return,
                Some(info) => last = Some(info),
                // A reply that timed out leaves the stream out of step: a new connection.
                None => *self = Client::connect(port),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the node never finished loading; last INFO: {last:?}; its log:\n{}",
            log_tail(port)
        );
    }
}

fn value(writer: usize, i: u64) -> String {
    // Long enough that a torn write would show; unique per (writer, i).
    format!("w{writer}:{i}:{}", "x".repeat(100 + (i % 50) as usize))
}

/// Acknowledged writes per writer: (sequence number, time of the reply).
type Acks = Vec<Vec<(u64, Instant)>>;

/// Starts `writers` threads that SET w<t>:<i> for i = 0, 1, … until the node dies.
fn write_until_killed(port: u16, writers: usize, stop: Arc<AtomicBool>) -> Arc<Mutex<Acks>> {
    let acks = Arc::new(Mutex::new(vec![Vec::new(); writers]));
    for t in 0..writers {
        let (acks, stop) = (acks.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut client = Client::connect(port);
            for i in 0.. {
                if stop.load(SeqCst) {
                    return;
                }
                let key = format!("w{t}:{i}");
                match client.call(&[b"SET", key.as_bytes(), value(t, i).as_bytes()]) {
                    Some(reply) if reply == "+OK" => {
                        acks.lock().unwrap()[t].push((i, Instant::now()));
                    }
                    _ => return,
                }
            }
        });
    }
    acks
}

/// A small deterministic generator (the crash moment comes from the seed).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One crash round; returns per writer (acknowledged, recovered, lost acknowledged, acks
/// in the last 1.5 s before the kill).
fn crash_round(fsync: &str, seed: u64) -> Vec<(u64, u64, u64, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Spread neighbouring seeds apart (round seeds are consecutive), never zero.
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let writers = 4;
    let mut node = spawn(dir.path(), port, &["--appendfsync", fsync]);
    Client::connect(port).wait_loaded();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = write_until_killed(port, writers, stop.clone());
    let run_ms = 300 + next(&mut rng) % 1200;
    std::thread::sleep(Duration::from_millis(run_ms));
    node.0.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let killed_at = Instant::now();
    let _ = node.0.wait();
    stop.store(true, SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    let acks = acks.lock().unwrap().clone();

    // A fresh port: the old one may have gone to another test's outgoing connection
    // while this node was down (the data directory is what the restart is about).
    let port = free_port();
    let _node = spawn(dir.path(), port, &["--appendfsync", fsync]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    let mut report = Vec::new();
    for (t, acked) in acks.iter().enumerate() {
        let acked_count = acked.len() as u64;
        let recent = acked
            .iter()
            .filter(|(_, at)| killed_at.duration_since(*at) < Duration::from_millis(1500))
            .count() as u64;
        // Writes reach the disk in order: what survived is a prefix 0..n, every value
        // whole and the one that was written, and nothing past the last write sent.
        let mut recovered = 0u64;
        loop {
            let got = client.get(&format!("w{t}:{recovered}"));
            if got == "(nil)" {
                break;
            }
            assert_eq!(
                got,
                value(t, recovered),
                "seed {seed}: torn or foreign value"
            );
            recovered += 1;
        }
        for gap in 1..=3 {
            assert_eq!(
                client.get(&format!("w{t}:{}", recovered + gap)),
                "(nil)",
                "seed {seed}: recovered writes are not a prefix"
            );
        }
        assert!(
            recovered <= acked_count + 1,
            "seed {seed}: a write from the future ({recovered} recovered, {acked_count} acknowledged)"
        );
        report.push((
            acked_count,
            recovered,
            acked_count.saturating_sub(recovered),
            recent,
        ));
    }
    let total = |pick: fn(&(u64, u64, u64, u64)) -> u64| report.iter().map(pick).sum::<u64>();
    // The figures of every round, so a long run (RINGKV_CRASH_ROUNDS) reports what it checked.
    eprintln!(
        "crash round appendfsync={fsync} seed={seed} killed after {run_ms} ms: acknowledged {}, recovered {}, acknowledged and lost {}",
        total(|r| r.0),
        total(|r| r.1),
        total(|r| r.2)
    );
    report
}

#[test]
fn appendfsync_always_loses_no_acknowledged_write_under_sigkill() {
    let base = env_seed("RINGKV_CRASH_SEED");
    for round in 0..env_count("RINGKV_CRASH_ROUNDS", 4) {
        let seed = base.wrapping_add(round);
        for (t, (acked, recovered, lost, _)) in crash_round("always", seed).into_iter().enumerate()
        {
            assert!(
                acked > 0,
                "seed {seed}: writer {t} never got an acknowledgement"
            );
            assert_eq!(
                lost, 0,
                "seed {seed}: writer {t} lost acknowledged writes ({recovered} of {acked} recovered)"
            );
        }
    }
}

#[test]
fn appendfsync_everysec_loses_at_most_about_a_second() {
    let base = env_seed("RINGKV_CRASH_SEED");
    for round in 0..env_count("RINGKV_CRASH_ROUNDS", 2) {
        let seed = base.wrapping_add(1000 + round);
        for (t, (acked, _, lost, recent)) in crash_round("everysec", seed).into_iter().enumerate() {
            assert!(
                acked > 0,
                "seed {seed}: writer {t} never got an acknowledgement"
            );
            assert!(
                lost <= recent,
                "seed {seed}: writer {t} lost {lost} acknowledged writes, more than the {recent} of its last 1.5 s"
            );
        }
    }
}

#[test]
fn keys_that_expired_while_the_node_was_down_do_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let mut node = spawn(dir.path(), port, &[]);
        let mut client = Client::connect(port);
        client.wait_loaded();
        assert_eq!(
            client
                .call(&[b"SET", b"short", b"v", b"PX", b"300"])
                .unwrap(),
            "+OK"
        );
        assert_eq!(
            client
                .call(&[b"SET", b"long", b"v", b"EX", b"600"])
                .unwrap(),
            "+OK"
        );
        assert_eq!(client.call(&[b"HSET", b"h", b"f", b"v"]).unwrap(), ":1");
        assert_eq!(client.call(&[b"SAVE"]).unwrap(), "+OK");
        node.0.kill().unwrap();
        let _ = node.0.wait();
    }
    std::thread::sleep(Duration::from_millis(400));
    let port = free_port(); // the old one may have been taken meanwhile
    let _node = spawn(dir.path(), port, &[]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    assert_eq!(client.get("short"), "(nil)");
    assert_eq!(client.get("long"), "v");
    let ttl: i64 = client.call(&[b"TTL", b"long"]).unwrap()[1..]
        .parse()
        .unwrap();
    assert!(
        (590..=600).contains(&ttl),
        "the absolute deadline survived: {ttl}"
    );
    assert_eq!(client.call(&[b"HGET", b"h", b"f"]).unwrap(), "v");
    let info = client.call(&[b"INFO", b"persistence"]).unwrap();
    assert!(info.contains("loaded_expired_while_down:1"), "{info}");
}

#[test]
fn an_unusable_data_directory_stops_the_node_with_its_path_or_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("data-is-a-file");
    std::fs::write(&bogus, b"not a database").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv-server"))
        .args(["--port", &free_port().to_string(), "--dir"])
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("data-is-a-file"),
        "names the path: {stderr}"
    );

    // In cache mode the operator may choose to start cold instead.
    let port = free_port();
    let _node = spawn(&bogus, port, &["--on-corrupt-data", "discard"]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    assert_eq!(client.call(&[b"SET", b"k", b"v"]).unwrap(), "+OK");
    let moved_aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(moved_aside, "the unreadable directory was kept, renamed");
}

#[test]
fn a_clean_stop_flushes_everything_even_with_appendfsync_no() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = spawn(dir.path(), port, &["--appendfsync", "no"]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    for i in 0..100 {
        let key = format!("k{i}");
        assert_eq!(client.call(&[b"SET", key.as_bytes(), b"v"]).unwrap(), "+OK");
    }
    sigterm(&node);
    let status = node.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let port = free_port(); // the old one may have been taken meanwhile
    let _node = spawn(dir.path(), port, &[]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    assert_eq!(client.call(&[b"DBSIZE"]).unwrap(), ":100");
}

/// Runs the node on `dir` expecting it to refuse to start; its stderr.
fn refused_start(dir: &Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv-server"))
        .args(["--port", &free_port().to_string(), "--dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes keys through a node on `dir` and stops it cleanly.
fn fill_and_stop(dir: &Path, keys: usize) {
    let port = free_port();
    let mut node = spawn(dir, port, &[]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    for i in 0..keys {
        let key = format!("k{i}");
        assert_eq!(
            client
                .call(&[b"SET", key.as_bytes(), value(0, i as u64).as_bytes()])
                .unwrap(),
            "+OK"
        );
    }
    sigterm(&node);
    assert!(node.0.wait().unwrap().success());
}

/// The WAL segment holding the most bytes.
fn largest_segment(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn a_flipped_bit_in_the_wal_stops_the_node_naming_the_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    fill_and_stop(dir.path(), 500);
    let segment = largest_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    // In the middle of the records, with valid chunks after it: corruption, not a tear.
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let stderr = refused_start(dir.path(), &[]);
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains(&name) && stderr.contains("at byte"),
        "{stderr}"
    );

    // In cache mode the operator may start cold instead; the bad segment is kept aside.
    starts_cold_keeping_aside(dir.path(), &name);
}

/// With `--on-corrupt-data discard` the node starts empty and writable, and the damaged
/// `file` is moved into `<dir>.corrupt-<ms>`, not deleted.
fn starts_cold_keeping_aside(dir: &Path, file: &str) {
    let port = free_port();
    let _node = spawn(dir, port, &["--on-corrupt-data", "discard"]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    assert_eq!(client.call(&[b"DBSIZE"]).unwrap(), ":0");
    assert_eq!(client.call(&[b"SET", b"k", b"v"]).unwrap(), "+OK");
    let prefix = format!("{}.corrupt-", dir.file_name().unwrap().to_string_lossy());
    let aside: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the unreadable data was moved aside, not deleted"
    );
    assert!(
        aside[0].join(file).exists(),
        "{file} is in {}",
        aside[0].display()
    );
    std::fs::remove_dir_all(&aside[0]).unwrap();
}

#[test]
fn a_torn_wal_tail_recovers_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    fill_and_stop(dir.path(), 300);
    let segment = largest_segment(dir.path());
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() - 7]).unwrap();
    let port = free_port();
    let _node = spawn(dir.path(), port, &[]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    let dbsize: usize = client.call(&[b"DBSIZE"]).unwrap()[1..].parse().unwrap();
    assert!(dbsize < 300, "the torn chunk is dropped: {dbsize}");
    // What survived is a prefix, every value whole.
    for i in 0..dbsize {
        assert_eq!(client.get(&format!("k{i}")), value(0, i as u64));
    }
    assert_eq!(client.get(&format!("k{dbsize}")), "(nil)");
}

#[test]
fn a_damaged_manifest_stops_the_node_naming_it_or_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    fill_and_stop(dir.path(), 10);
    let port = free_port();
    let mut node = spawn(dir.path(), port, &[]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    assert_eq!(client.call(&[b"SAVE"]).unwrap(), "+OK");
    sigterm(&node);
    assert!(node.0.wait().unwrap().success());
    let manifest = dir.path().join("MANIFEST");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&manifest, &bytes).unwrap();
    let stderr = refused_start(dir.path(), &[]);
    assert!(stderr.contains("MANIFEST"), "{stderr}");
    starts_cold_keeping_aside(dir.path(), "MANIFEST");
}

#[test]
fn a_data_directory_of_the_old_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The earlier release kept sled's own files at the top of the directory.
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"k", b"\x01\0\0\0\0\0\0\0\0\0v".as_slice())
            .unwrap();
        db.flush().unwrap();
    }
    let stderr = refused_start(dir.path(), &[]);
    assert!(stderr.contains("earlier format"), "{stderr}");
    assert!(stderr.contains("move the directory aside"), "{stderr}");
    // Nothing was touched: the old files are all still there.
    assert!(dir.path().join("conf").exists() && !dir.path().join("MANIFEST").exists());
}

/// A script's writes are one atomic group in the log: a script that finished keeps all of
/// them after a restart, and one that wrote and then ran on until SHUTDOWN NOSAVE ended the
/// process leaves none, whether or not its first write had reached the disk.
#[test]
fn a_scripts_writes_come_back_all_or_none_after_the_process_ends_mid_script() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = spawn(
        dir.path(),
        port,
        &["--appendfsync", "always", "--busy-reply-threshold", "200"],
    );
    let mut client = Client::connect(port);
    client.wait_loaded();
    let finished = b"redis.call('set', 'a', '1') redis.call('set', 'b', '2') return 1";
    assert_eq!(client.call(&[b"EVAL", finished, b"0"]).unwrap(), ":1");
    let mut looping = Client::connect(port);
    let endless = b"redis.call('set', 'c', '3') while true do end";
    let frame = [
        &b"*3\r\n$4\r\nEVAL\r\n"[..],
        format!("${}\r\n", endless.len()).as_bytes(),
        endless,
        b"\r\n$1\r\n0\r\n",
    ]
    .concat();
    looping.writer.write_all(&frame).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client.call(&[b"PING"]).unwrap();
        if reply.starts_with("-BUSY") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never said BUSY: {reply}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        client.call(&[b"SET", b"x", b"y"]).unwrap(),
        "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
    );
    assert!(
        client.call(&[b"SHUTDOWN", b"NOSAVE"]).is_none(),
        "SHUTDOWN NOSAVE ends the process at once"
    );
    assert!(node.0.wait().unwrap().success());
    let port = free_port();
    let _node = spawn(dir.path(), port, &[]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    assert_eq!((client.get("a"), client.get("b")), ("1".into(), "2".into()));
    assert_eq!(
        client.get("c"),
        "(nil)",
        "the unfinished script's write is not recovered"
    );
}

/// A BLMOVE served by another client's push takes the element from one list and puts it in
/// another: two records, which must be one group in the WAL, so that recovery (and a
/// replica) applies both or neither. A crash between two loose records would lose the job.
#[test]
fn a_blmove_served_by_a_push_is_one_group_in_the_wal() {
    use ringkv_store::change_log::{GROUPED, RecordKind};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = spawn(dir.path(), port, &["--appendfsync", "always"]);
    let mut pusher = Client::connect(port);
    pusher.wait_loaded();
    let mut mover = Client::connect(port);
    mover
        .writer
        .write_all(b"*6\r\n$6\r\nBLMOVE\r\n$4\r\njobs\r\n$5\r\ntaken\r\n$5\r\nRIGHT\r\n$4\r\nLEFT\r\n$2\r\n10\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients = pusher.call(&[b"INFO", b"clients"]).unwrap();
        if clients.contains("\r\nblocked_clients:1") {
            break;
        }
        assert!(Instant::now() < deadline, "BLMOVE never blocked: {clients}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pusher.call(&[b"LPUSH", b"jobs", b"job-1"]).unwrap(), ":1");
    assert_eq!(mover.read_reply().unwrap(), "job-1");
    // Under `always` this reply waits for a sync, which covers every earlier record.
    assert_eq!(pusher.call(&[b"SET", b"after", b"1"]).unwrap(), "+OK");
    node.0.kill().unwrap();
    node.0.wait().unwrap();

    let wal = ringkv_store::data_dir::DiskDir::open(dir.path()).unwrap();
    let mut records: Vec<(RecordKind, u8, Vec<u8>)> = Vec::new();
    ringkv_store::wal::scan(&wal, 0, &mut |_, chunk| {
        for record in chunk.records {
            let record = record.expect("records decode");
            records.push((record.kind, record.flags, record.key.to_vec()));
        }
        Ok(())
    })
    .unwrap();
    let pop = records
        .iter()
        .position(|(kind, _, key)| *kind == RecordKind::RPop && key == b"jobs")
        .unwrap_or_else(|| panic!("no pop of jobs in the WAL: {records:?}"));
    let push = records
        .iter()
        .position(|(kind, _, key)| *kind == RecordKind::LPush && key == b"taken")
        .unwrap_or_else(|| panic!("no push to taken in the WAL: {records:?}"));
    let commit = records[pop..]
        .iter()
        .position(|(kind, ..)| *kind == RecordKind::Commit)
        .map(|at| pop + at)
        .unwrap_or_else(|| panic!("no commit after the pop: {records:?}"));
    assert!(
        pop < push && push < commit,
        "pop, push, commit in order: {records:?}"
    );
    assert!(
        records[pop..commit]
            .iter()
            .all(|(_, flags, _)| flags & GROUPED != 0),
        "the pop and the push are in one group: {records:?}"
    );
}

/// Under `always`, a write that appends nothing to a log that holds nothing yet (DEL of a
/// missing key, the first command of a fresh node) answers and keeps its connection: it
/// once waited for LSN 0 and was told the disk had failed.
#[test]
fn a_write_that_changes_nothing_on_a_fresh_node_under_always_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = spawn(dir.path(), port, &["--appendfsync", "always"]);
    let mut client = Client::connect(port);
    client.wait_loaded();
    assert_eq!(client.call(&[b"DEL", b"missing"]).as_deref(), Some(":0"));
    assert_eq!(client.call(&[b"PING"]).as_deref(), Some("+PONG"));
}
