//! The Python mix: clients of the Python package (`clients/python`) driven by
//! `python_mix.py`, through the same three servers and under the same faults. Their
//! operations join the history, and their downstream writes are decided by the same
//! store as the Rust clients' (asked over the child's stdin and stdout), so that one
//! checker judges both.
//!
//! It needs the virtual environment `make python-test` makes (`target/python-venv`,
//! with the package installed); without it the run says so and goes on without the mix.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::workload::{Op, Shared, downstream};

/// The names of the mix's locks.
pub fn lock_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("torture:py-{i}")).collect()
}

/// The Python that has the package, or why there is none.
pub fn python(repo: &Path) -> Result<PathBuf, String> {
    let python = repo.join("target/python-venv/bin/python");
    let imports = std::process::Command::new(&python)
        .args(["-c", "import fencelock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if imports {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import the fencelock package: run `make python-test` first",
            python.display()
        ))
    }
}

/// A downstream write the mix asks for.
#[derive(Debug, Deserialize)]
struct WriteAsked {
    write: String,
    fence: u64,
    id: u64,
    client: usize,
    ttl_ms: u64,
}

/// The running mix.
pub struct PythonMix {
    child: Child,
    reader: JoinHandle<usize>,
}

/// The monotonic clock's reading at `shared.started`, in microseconds, as Python's
/// `time.monotonic_ns()` counts it.
fn epoch_micros(shared: &Shared) -> u64 {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("the monotonic clock");
    let raw = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    raw - shared.micros(tokio::time::Instant::now())
}

/// What the mix runs with.
pub struct Launch<'a> {
    pub python: &'a Path,
    pub repo: &'a Path,
    /// Where its log goes.
    pub work: &'a Path,
    pub urls: &'a [String],
    pub clients: usize,
    pub seconds: u64,
    pub seed: u64,
}

/// Starts the mix, recording into `shared`.
pub fn start(launch: Launch<'_>, shared: Arc<Shared>) -> Result<PythonMix, String> {
    let Launch {
        python,
        repo,
        work,
        urls,
        clients,
        seconds,
        seed,
    } = launch;
    let log = std::fs::File::create(work.join("python-mix.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(python)
        .arg(repo.join("examples/torture/python_mix.py"))
        .arg("--urls")
        .arg(urls.join(","))
        .arg("--names")
        .arg(lock_names(4).join(","))
        .arg("--clients")
        .arg(clients.to_string())
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--epoch-us")
        .arg(epoch_micros(&shared).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the Python mix: {e}"))?;
    let mut verdicts = child.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let reader = tokio::spawn(async move {
        let mut operations = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(asked) = serde_json::from_str::<WriteAsked>(&line) {
                let accepted = downstream(
                    &shared,
                    asked.client,
                    &asked.write,
                    asked.fence,
                    asked.ttl_ms,
                    "downstream",
                )
                .await;
                let verdict = if accepted { "accepted" } else { "rejected" };
                let _ = verdicts
                    .write_all(format!("{} {verdict}\n", asked.id).as_bytes())
                    .await;
            } else if let Ok(op) = serde_json::from_str::<Op>(&line) {
                operations += 1;
                shared.record(op);
            } else {
                eprintln!("torture: the Python mix wrote a line that is no operation: {line}");
            }
        }
        operations
    });
    Ok(PythonMix { child, reader })
}

impl PythonMix {
    /// Waits for the mix to end on its own (it stops at its deadline, releasing what
    /// it holds), killing it if it overruns by `grace`; answers its operations.
    pub async fn finish(mut self, grace: Duration) -> Result<usize, String> {
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.map_err(|e| e.to_string())?,
            Err(_) => {
                let _ = self.child.kill().await;
                return Err("the Python mix did not stop in time; killed".into());
            }
        };
        let operations = self.reader.await.unwrap_or(0);
        if status.success() {
            Ok(operations)
        } else {
            Err(format!(
                "the Python mix exited with {status}; see python-mix.log"
            ))
        }
    }
}
