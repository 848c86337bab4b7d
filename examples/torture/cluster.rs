//! The processes of a torture run and the faults done to them: DynamoDB Local (in a
//! network namespace of its own when the run may make one, so its answers can be
//! dropped), and three `fencelock serve` instances on one table.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The libfaketime library Debian's `faketime` package installs.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// DynamoDB Local's port inside its namespace.
const DYNAMODB_PORT: u16 = 8000;

pub struct Cluster {
    repo: PathBuf,
    work: PathBuf,
    netns: Option<Netns>,
    dynamodb: Option<Child>,
    dynamodb_addr: (String, u16),
    table: String,
    instances: Vec<Instance>,
}

pub struct Instance {
    pub port: u16,
    child: Option<Child>,
    /// The clock offset it runs with now (libfaketime), if any.
    clock_ahead: Option<String>,
}

/// A network namespace with a veth pair to the host: DynamoDB Local runs inside.
struct Netns {
    name: String,
    host_if: String,
    inside_addr: String,
}

impl Cluster {
    /// Starts DynamoDB Local (data on disk under `work`) and `instances` servers.
    pub fn start(repo: &Path, work: &Path, instances: usize, table: &str) -> Self {
        let netns = Netns::create();
        if netns.is_none() {
            eprintln!(
                "torture: no network namespace (needs root and iproute2): DynamoDB Local runs on 127.0.0.1 and its answers cannot be dropped"
            );
        }
        let dynamodb_addr = match &netns {
            Some(ns) => (ns.inside_addr.clone(), DYNAMODB_PORT),
            None => ("127.0.0.1".to_owned(), free_port()),
        };
        let mut cluster = Self {
            repo: repo.to_owned(),
            work: work.to_owned(),
            netns,
            dynamodb: None,
            dynamodb_addr,
            table: table.to_owned(),
            instances: Vec::new(),
        };
        cluster.start_dynamodb();
        for _ in 0..instances {
            cluster.instances.push(Instance {
                port: free_port(),
                child: None,
                clock_ahead: None,
            });
        }
        for index in 0..instances {
            cluster.start_instance(index);
            // The first creates the table; the others find it.
            cluster.wait_for_instance(index);
        }
        cluster
    }

    pub fn can_drop_packets(&self) -> bool {
        self.netns.is_some()
    }

    pub fn can_skew_clocks() -> bool {
        Path::new(LIBFAKETIME).exists()
    }

    pub fn instance_urls(&self) -> Vec<String> {
        self.instances
            .iter()
            .map(|i| format!("http://127.0.0.1:{}", i.port))
            .collect()
    }

    fn dynamodb_endpoint(&self) -> String {
        format!("http://{}:{}", self.dynamodb_addr.0, self.dynamodb_addr.1)
    }

    fn start_dynamodb(&mut self) {
        let script = self.repo.join("scripts/dynamodb-local.sh");
        let data = self.work.join("dynamodb");
        let log = log_file(&self.work.join("dynamodb.log"));
        let mut command = match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &ns.name]).arg(&script);
                command
            }
            None => Command::new(&script),
        };
        command
            .arg(self.dynamodb_addr.1.to_string())
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file is shared"))
            .stderr(log);
        self.dynamodb = Some(command.spawn().expect("DynamoDB Local starts"));
        let (host, port) = self.dynamodb_addr.clone();
        for _ in 0..300 {
            if std::net::TcpStream::connect((host.as_str(), port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("DynamoDB Local did not listen on {host}:{port}");
    }

    fn start_instance(&mut self, index: usize) {
        let binary = server_binary();
        let log = log_file(&self.work.join(format!("instance-{index}.log")));
        let endpoint = self.dynamodb_endpoint();
        let instance = &mut self.instances[index];
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FENCELOCK_LISTEN", format!("127.0.0.1:{}", instance.port))
            .env("FENCELOCK_TABLE", &self.table)
            .env("FENCELOCK_DYNAMODB_ENDPOINT", endpoint)
            .env("FENCELOCK_DYNAMODB_TIMEOUT", "2s")
            .env("FENCELOCK_MAX_WAIT", "5s")
            .env("FENCELOCK_REQUEST_TIMEOUT", "20s")
            .env("FENCELOCK_CLOCK_SKEW", "500ms")
            .env("FENCELOCK_SHUTDOWN_GRACE", "1s")
            .env("FENCELOCK_RECLAIM_AFTER", "off")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "torture")
            .env("AWS_SECRET_ACCESS_KEY", "torture")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file is shared"))
            .stderr(log);
        if let Some(offset) = &instance.clock_ahead {
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", offset)
                // Only the wall clock moves: timeouts and intervals keep real time.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        instance.child = Some(command.spawn().expect("fencelock starts"));
    }

    fn wait_for_instance(&mut self, index: usize) {
        let port = self.instances[index].port;
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(child) = self.instances[index].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("instance {index} ended with {status} at start; see its log");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("instance {index} did not listen on {port}");
    }

    /// `kill -9` of an instance.
    pub fn kill_instance(&mut self, index: usize) {
        if let Some(mut child) = self.instances[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed instance again on its port, with `clock_ahead` (seconds as
    /// libfaketime reads them, e.g. `+0.3`; `+300ms` would be 300 minutes) or the true
    /// time.
    pub fn restart_instance(&mut self, index: usize, clock_ahead: Option<String>) {
        self.kill_instance(index);
        self.instances[index].clock_ahead = clock_ahead;
        self.start_instance(index);
        self.wait_for_instance(index);
    }

    pub fn signal_instance(&self, index: usize, signal: &str) {
        if let Some(child) = &self.instances[index].child {
            send_signal(child.id(), signal);
        }
    }

    pub fn signal_dynamodb(&self, signal: &str) {
        if let Some(child) = &self.dynamodb {
            send_signal(child.id(), signal);
        }
    }

    /// Stops DynamoDB Local as a service stop does, and starts it on the same data.
    pub fn restart_dynamodb(&mut self) {
        if let Some(mut child) = self.dynamodb.take() {
            send_signal(child.id(), "TERM");
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.start_dynamodb();
    }

    /// Drops every packet DynamoDB Local sends, until [`Cluster::deliver_packets`]:
    /// its writes apply, and the servers see timeouts.
    pub fn drop_packets(&self) {
        if let Some(ns) = &self.netns {
            ns.nft(&["add", "table", "inet", "torture"]);
            ns.nft(&[
                "add",
                "chain",
                "inet",
                "torture",
                "out",
                "{ type filter hook output priority 0 ; }",
            ]);
            ns.nft(&[
                "add", "rule", "inet", "torture", "out", "tcp", "sport", "8000", "drop",
            ]);
        }
    }

    pub fn deliver_packets(&self) {
        if let Some(ns) = &self.netns {
            ns.nft(&["delete", "table", "inet", "torture"]);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.instances.len() {
            if let Some(child) = &self.instances[index].child {
                send_signal(child.id(), "CONT");
            }
            self.kill_instance(index);
        }
        if let Some(mut child) = self.dynamodb.take() {
            send_signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(ns) = self.netns.take() {
            ns.delete();
        }
    }
}

impl Netns {
    fn create() -> Option<Self> {
        let pid = std::process::id();
        let subnet = 20 + pid % 200;
        let ns = Self {
            name: format!("fencelock-torture-{pid}"),
            host_if: format!("flt{}h", pid % 100_000),
            inside_addr: format!("10.231.{subnet}.2"),
        };
        let inside_if = format!("flt{}n", pid % 100_000);
        let host_addr = format!("10.231.{subnet}.1/30");
        let inside_cidr = format!("{}/30", ns.inside_addr);
        let steps: [&[&str]; 8] = [
            &["netns", "add", &ns.name],
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &inside_if,
            ],
            &["link", "set", &inside_if, "netns", &ns.name],
            &["addr", "add", &host_addr, "dev", &ns.host_if],
            &["link", "set", &ns.host_if, "up"],
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                &inside_cidr,
                "dev",
                &inside_if,
            ],
            &["-n", &ns.name, "link", "set", &inside_if, "up"],
            &["-n", &ns.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let ok = Command::new("ip")
                .args(step)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                ns.delete();
                return None;
            }
        }
        Some(ns)
    }

    fn nft(&self, args: &[&str]) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("torture: nft {args:?} failed in {}", self.name);
        }
    }

    fn delete(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the log file opens")
}

/// `target/<profile>/fencelock`, beside this example's `target/<profile>/examples/`.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the torture binary knows its path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the example lives in target/<profile>/examples");
    profile_dir.join("fencelock")
}
