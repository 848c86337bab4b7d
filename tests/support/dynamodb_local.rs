//! DynamoDB Local for the API tests and the benchmarks (included by both with
//! `#[path]`): started on a free port from the jar `make tools` installs, stopped
//! when the process that started it exits, however it exits.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Builder, Credentials, Region};

/// Starts an in-memory DynamoDB Local, logging to `target/{log_name}`, and returns
/// its endpoint once it listens.
pub fn start(log_name: &str) -> String {
    start_with_pid(log_name).0
}

/// As [`start`], with the process id of DynamoDB Local, to pause it with SIGSTOP.
#[allow(dead_code)] // Not every includer pauses DynamoDB Local.
pub fn start_with_pid(log_name: &str) -> (String, u32) {
    let root = env!("CARGO_MANIFEST_DIR");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = File::create(format!("{root}/target/{log_name}")).expect("a log file");
    let pid_file = format!("{root}/target/{log_name}.pid");
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
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local did not listen on {addr}; see target/{log_name}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .expect("the pid of DynamoDB Local");
    (format!("http://{addr}"), pid)
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
