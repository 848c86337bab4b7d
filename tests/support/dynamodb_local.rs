//! DynamoDB Local for the API tests and the benchmarks (included by both with
//! `#[path]`): started on a free port from the jar `make tools` installs, stopped
//! when the process that started it exits, however it exits.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Builder, Credentials, Region};

/// Starts an in-memory DynamoDB Local, logging to `target/{log_name}`, and returns
/// its endpoint once it listens.
pub fn start(log_name: &str) -> String {
    start_with_pid(log_name).0
}

/// As [`start`], with the process id of DynamoDB Local, to pause it with SIGSTOP.
///
/// The port is free when it is chosen but not reserved, so something else may bind
/// it before Java does; DynamoDB Local then exits. It counts as started only once
/// its own process holds the listening socket, and is started again on another port
/// when it exits first (a connect alone could reach another process's listener).
#[allow(dead_code)] // Not every includer pauses DynamoDB Local.
pub fn start_with_pid(log_name: &str) -> (String, u32) {
    let root = env!("CARGO_MANIFEST_DIR");
    for _attempt in 0..5 {
        let port = free_port();
        let log = File::create(format!("{root}/target/{log_name}")).expect("a log file");
        let pid_file = format!("{root}/target/{log_name}.pid");
        let _ = std::fs::remove_file(&pid_file);
        // The shell stops DynamoDB Local when its stdin closes: when this process exits.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{root}/scripts/dynamodb-local.sh {port} & pid=$!; echo $pid > {pid_file}; \
                 cat >/dev/null; kill $pid"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("DynamoDB Local starts (are Java and `make tools` installed?)");
        // Keep the stdin pipe open for the life of the process.
        std::mem::forget(child);
        if let Some(pid) = wait_until_listening(&pid_file, port, log_name) {
            return (format!("http://127.0.0.1:{port}"), pid);
        }
    }
    panic!("DynamoDB Local exited before listening, five times; see target/{log_name}");
}

/// A port free now that no other DynamoDB Local of this process has been given.
fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if GIVEN.lock().expect("ports").insert(port) {
            return port;
        }
    }
}

/// Waits until the process in `pid_file` listens on `port` (its pid), or exits
/// (`None`).
fn wait_until_listening(pid_file: &str, port: u16, log_name: &str) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local did not listen on port {port}; see target/{log_name}"
        );
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            match listener_of(pid, port) {
                Listener::Ours => return Some(pid),
                Listener::Exited => return None,
                Listener::NotYet => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who holds a listening socket on a port, as far as one process is concerned.
#[derive(Debug, PartialEq)]
pub enum Listener {
    Ours,
    NotYet,
    Exited,
}

/// Whether process `pid` holds a socket listening on TCP `port`, read from /proc.
/// Where there is no /proc, a successful connect has to do.
pub fn listener_of(pid: u32, port: u16) -> Listener {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"].map(std::fs::read_to_string);
    if tables.iter().all(Result::is_err) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        return match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => Listener::Ours,
            Err(_) => Listener::NotYet,
        };
    }
    // The state follows the command name in parentheses; Z is a zombie.
    match stat {
        Ok(stat)
            if !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) => {}
        _ => return Listener::Exited,
    }
    let inodes: Vec<String> = tables
        .iter()
        .flatten()
        .flat_map(|table| table.lines().skip(1))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let inode = fields.get(9)?;
            let listening = fields.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(local_port, 16).ok() == Some(port))
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let holds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| {
            inodes
                .iter()
                .any(|inode| target.as_os_str() == inode.as_str())
        });
    if holds {
        Listener::Ours
    } else {
        Listener::NotYet
    }
}

/// A DynamoDB client configuration for `endpoint`, with the fixed credentials
/// DynamoDB Local accepts; add to it before building.
pub fn config(endpoint: &str) -> Builder {
    aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "fencelock-tests",
        ))
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
}

/// A DynamoDB client for `endpoint`.
pub fn client(endpoint: &str) -> Client {
    Client::from_conf(config(endpoint).build())
}
