//! The processes of a torture run and the faults done to them: DynamoDB Local (in a
//! network namespace of its own when the run may make one, so its answers can be
//! dropped), and three `fencelock serve` instances on one table.
//!
//! Each fault answers whether it was applied, by its effect: the process is stopped,
//! gone, listening again, the drop rule is in the namespace's ruleset, libfaketime is
//! in the instance's memory. A fault that was not applied says why, and the run does
//! not count it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
    /// DynamoDB Local's data folder: it outlives the process, as a restart needs.
    data: PathBuf,
    table: String,
    instances: Vec<Instance>,
}

/// What one instance's clock check did over a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClockReport {
    pub instance: usize,
    /// Times its log says it found its clock suspect.
    pub suspect_episodes: usize,
    /// Takeovers it refused while suspect, since it last started (its metrics at the
    /// end; none when it did not answer).
    pub takeovers_refused: Option<u64>,
}

pub struct Instance {
    pub port: u16,
    child: Option<Child>,
    /// The clock offset it runs with now (libfaketime), if any.
    clock_ahead: Option<String>,
    /// Whether it runs without the clock check (`--break skew-unchecked`).
    unchecked_clock: bool,
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
            data: data_folder(work),
            table: table.to_owned(),
            instances: Vec::new(),
        };
        cluster.start_dynamodb();
        for _ in 0..instances {
            cluster.instances.push(Instance {
                port: free_port(),
                child: None,
                clock_ahead: None,
                unchecked_clock: false,
            });
        }
        for index in 0..instances {
            cluster.start_instance(index);
            // The first creates the table; the others find it.
            cluster.wait_for_instance(index);
        }
        cluster
    }

    /// Whether DynamoDB Local's answers can be dropped here, and if not, why.
    pub fn can_drop_packets(&self) -> Result<(), String> {
        let ns = self.netns.as_ref().ok_or(
            "no network namespace for DynamoDB Local (making one needs root and iproute2)",
        )?;
        ns.nft(&["list", "ruleset"])
            .map(drop)
            .map_err(|why| format!("{why} (Debian: apt-get install nftables)"))
    }

    /// Whether an instance's clock can be set ahead here, and if not, why.
    pub fn can_skew_clocks() -> Result<(), String> {
        if Path::new(LIBFAKETIME).exists() {
            Ok(())
        } else {
            Err(format!(
                "libfaketime is not installed (Debian: apt-get install faketime; looked for {LIBFAKETIME})"
            ))
        }
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
        if let Err(why) = self.try_start_dynamodb() {
            panic!("{why}");
        }
    }

    fn try_start_dynamodb(&mut self) -> Result<(), String> {
        let script = self.repo.join("scripts/dynamodb-local.sh");
        let data = self.data.clone();
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
        let child = command
            .spawn()
            .map_err(|e| format!("DynamoDB Local did not start: {e}"))?;
        self.dynamodb = Some(child);
        let (host, port) = self.dynamodb_addr.clone();
        for _ in 0..300 {
            if std::net::TcpStream::connect((host.as_str(), port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("DynamoDB Local did not listen on {host}:{port}"))
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
            // The fast mix's short leases; a deployment keeps the 1 s default.
            .env("FENCELOCK_MIN_TTL", "200ms")
            .env("FENCELOCK_SHUTDOWN_GRACE", "1s")
            .env("FENCELOCK_RECLAIM_AFTER", "off")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "torture")
            .env("AWS_SECRET_ACCESS_KEY", "torture")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file is shared"))
            .stderr(log);
        if instance.unchecked_clock {
            command.env("FENCELOCK_CLOCK_CHECK", "false");
        }
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
        if let Err(why) = self.try_wait_for_instance(index) {
            panic!("{why}");
        }
    }

    fn try_wait_for_instance(&mut self, index: usize) -> Result<(), String> {
        let port = self.instances[index].port;
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.instances[index].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "instance {index} ended with {status} at start; see its log"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("instance {index} did not listen on {port}"))
    }

    /// `kill -9` of a running instance; applied once it has been reaped.
    pub fn kill_instance(&mut self, index: usize) -> Result<(), String> {
        let mut child = self.instances[index]
            .child
            .take()
            .ok_or(format!("instance {index} is not running"))?;
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("instance {index} had already ended ({status})"));
        }
        child
            .kill()
            .map_err(|e| format!("kill of instance {index}: {e}"))?;
        child
            .wait()
            .map_err(|e| format!("instance {index} was not reaped: {e}"))?;
        if self.instances[index].clock_ahead.is_some() {
            // What libfaketime leaves behind when its process is killed.
            let pid = child.id();
            let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
            let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
        }
        Ok(())
    }

    /// Starts an instance again on its port (killing it first if it runs), with
    /// `clock_ahead` (seconds as libfaketime reads them, e.g. `+0.3`; `+300ms` would be
    /// 300 minutes) or the true time. With a clock ahead, applied only when libfaketime
    /// is in the new process's memory.
    /// Runs instance `index` without the clock check from its next start on.
    pub fn uncheck_clock(&mut self, index: usize) {
        self.instances[index].unchecked_clock = true;
    }

    /// What the clock check of each instance did over the run: how often its log says
    /// it found the clock suspect, and how many takeovers its metrics say it refused.
    pub async fn clock_reports(&self) -> Vec<ClockReport> {
        let mut reports = Vec::new();
        for (index, instance) in self.instances.iter().enumerate() {
            let log = std::fs::read_to_string(self.work.join(format!("instance-{index}.log")))
                .unwrap_or_default();
            let suspect_episodes = log
                .lines()
                .filter(|line| line.contains("clock disagrees with DynamoDB's"))
                .count();
            let metrics = async {
                let url = format!("http://127.0.0.1:{}/metrics", instance.port);
                reqwest::get(url).await.ok()?.text().await.ok()
            };
            let metrics = tokio::time::timeout(Duration::from_secs(5), metrics)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            let takeovers_refused = metrics
                .lines()
                .find_map(|line| line.strip_prefix("fencelock_takeovers_refused_total "))
                .and_then(|value| value.trim().parse().ok());
            reports.push(ClockReport {
                instance: index,
                suspect_episodes,
                takeovers_refused,
            });
        }
        reports
    }

    pub fn restart_instance(
        &mut self,
        index: usize,
        clock_ahead: Option<String>,
    ) -> Result<(), String> {
        let _ = self.kill_instance(index);
        let ahead = clock_ahead.is_some();
        self.instances[index].clock_ahead = clock_ahead;
        // An instance that cannot reach DynamoDB at start (paused, restarting, or
        // slow while its JVM warms up) exits; started again as a service manager would.
        let mut attempts = 0;
        loop {
            self.start_instance(index);
            match self.try_wait_for_instance(index) {
                Ok(()) => break,
                Err(why) if attempts < 10 => {
                    attempts += 1;
                    eprintln!("torture: {why}; starting it again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(why) => return Err(why),
            }
        }
        let pid = self.instances[index]
            .child
            .as_ref()
            .map(Child::id)
            .ok_or(format!("instance {index} did not start"))?;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        match (ahead, maps.contains("libfaketime")) {
            (true, false) => Err(format!(
                "instance {index} started without libfaketime in its memory"
            )),
            (false, true) => Err(format!("instance {index} still runs with libfaketime")),
            _ => Ok(()),
        }
    }

    /// SIGSTOP or SIGCONT to an instance; applied when its state shows it.
    pub fn signal_instance(&self, index: usize, signal: Signal) -> Result<(), String> {
        let child = self.instances[index]
            .child
            .as_ref()
            .ok_or(format!("instance {index} is not running"))?;
        signal_and_observe(child.id(), signal).map_err(|why| format!("instance {index}: {why}"))
    }

    /// SIGSTOP or SIGCONT to DynamoDB Local; applied when its state shows it.
    pub fn signal_dynamodb(&self, signal: Signal) -> Result<(), String> {
        let child = self
            .dynamodb
            .as_ref()
            .ok_or("DynamoDB Local is not running")?;
        signal_and_observe(child.id(), signal).map_err(|why| format!("DynamoDB Local: {why}"))
    }

    /// Stops DynamoDB Local as a service stop does, and starts it on the same data;
    /// applied when the old process has ended and the new one listens.
    pub fn restart_dynamodb(&mut self) -> Result<(), String> {
        let mut child = self
            .dynamodb
            .take()
            .ok_or("DynamoDB Local is not running")?;
        send_signal(child.id(), Signal::SIGTERM)?;
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| format!("DynamoDB Local was not reaped: {e}"))?;
        self.try_start_dynamodb()
    }

    /// Drops every packet DynamoDB Local sends, until [`Cluster::deliver_packets`]:
    /// its writes apply, and the servers see timeouts. Applied when the rule is in the
    /// namespace's ruleset.
    pub fn drop_packets(&self) -> Result<(), String> {
        let ns = self.netns.as_ref().ok_or("no network namespace")?;
        ns.nft(&["add", "table", "inet", "torture"])?;
        ns.nft(&[
            "add",
            "chain",
            "inet",
            "torture",
            "out",
            "{ type filter hook output priority 0 ; }",
        ])?;
        ns.nft(&[
            "add", "rule", "inet", "torture", "out", "tcp", "sport", "8000", "drop",
        ])?;
        let chain = ns.nft(&["list", "chain", "inet", "torture", "out"])?;
        if chain.contains("tcp sport 8000 drop") {
            Ok(())
        } else {
            Err(format!("the drop rule is not in the ruleset: {chain}"))
        }
    }

    /// Removes the drop rule; done when the table is gone from the ruleset.
    pub fn deliver_packets(&self) -> Result<(), String> {
        let ns = self.netns.as_ref().ok_or("no network namespace")?;
        ns.nft(&["delete", "table", "inet", "torture"])?;
        match ns.nft(&["list", "tables"])? {
            tables if tables.contains("torture") => Err("the drop table is still there".into()),
            _ => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.instances.len() {
            if let Some(child) = &self.instances[index].child {
                let _ = send_signal(child.id(), Signal::SIGCONT);
            }
            let _ = self.kill_instance(index);
        }
        if let Some(mut child) = self.dynamodb.take() {
            let _ = send_signal(child.id(), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(ns) = self.netns.take() {
            ns.delete();
        }
        if !self.data.starts_with(&self.work) {
            let _ = std::fs::remove_dir_all(&self.data);
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

    /// Runs `nft ARGS` in the namespace; answers its output, or why it failed.
    fn nft(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ip netns exec did not run: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "nft {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
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

fn send_signal(pid: u32, signal: Signal) -> Result<(), String> {
    kill(Pid::from_raw(pid as i32), signal).map_err(|e| format!("{signal} to {pid}: {e}"))
}

/// The state letter of a process in `/proc/PID/stat` (`T` when stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Sends SIGSTOP or SIGCONT and waits up to 2 s to see the process stopped or
/// running again.
fn signal_and_observe(pid: u32, signal: Signal) -> Result<(), String> {
    send_signal(pid, signal)?;
    let want_stopped = signal == Signal::SIGSTOP;
    for _ in 0..200 {
        match process_state(pid) {
            None => return Err(format!("process {pid} is gone")),
            Some(state) if (state == 'T') == want_stopped => return Ok(()),
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Err(format!(
        "process {pid} was not seen {} after {signal}",
        if want_stopped { "stopped" } else { "running" }
    ))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// DynamoDB Local's data folder: in memory-backed `/dev/shm` where there is one, so
/// each write is not an fsync to disk (the run makes 1.7 times the grants), under
/// `work` otherwise. Either outlives DynamoDB Local's restarts, which is what the
/// restart fault needs.
fn data_folder(work: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(format!("fencelock-torture-{}", std::process::id()))
    } else {
        work.join("dynamodb")
    }
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
