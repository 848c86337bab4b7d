//! A PostgreSQL of its own for the fencing tests and the torture run (included by
//! both with `#[path]`): Debian's `postgresql` package, `initdb` and `postgres` on
//! 127.0.0.1 and a free port, run as the `postgres` user when this process is root
//! (PostgreSQL refuses to run as root), stopped when the process that started it
//! exits, however it exits. And the SQL of docs/fencing.md, read from the page, so
//! that what is tested and what the page says cannot drift apart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The page's SQL blocks, in order: the fence table and `fencelock_advance` first,
/// then the fence column.
pub fn recipe_sql() -> Vec<String> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fencing.md"))
        .expect("docs/fencing.md");
    page.split("```sql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

/// PostgreSQL's server binaries: the newest under /usr/lib/postgresql, or why there
/// are none.
pub fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(|| {
        "PostgreSQL is not installed (Debian: apt-get install postgresql)".to_owned()
    })
}

/// A running server; stopped when this is dropped, or when the process exits.
pub struct Postgres {
    pub port: u16,
    /// Its data directory, log and socket.
    #[allow(dead_code)] // The torture run names it; the tests do not.
    pub dir: PathBuf,
    _server: Child,
}

impl Postgres {
    /// Starts a server with a new cluster under `preferred` (a folder under target/),
    /// or under the temporary directory when the `postgres` user cannot write
    /// there (a checkout in a home directory of mode 0700 is out of its reach).
    pub fn start(preferred: &Path) -> Result<Postgres, String> {
        let bin = bin_dir()?;
        let dir = data_dir(preferred)?;
        let data = dir.join("data");
        let made = as_owner(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("initdb does not run: {e}"))?;
        if !made.success() {
            return Err(format!("initdb failed in {}", data.display()));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let log_path = dir.join("postgres.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        // As DynamoDB Local is run: the server stops when this process's end closes
        // the shell's stdin. fsync off: the data is thrown away with the run.
        let server = as_owner(Path::new("/bin/sh"))
            .arg("-c")
            .arg(format!(
                "{} -D {} -h 127.0.0.1 -p {port} -k {} -F & pid=$!; cat >/dev/null; kill $pid",
                bin.join("postgres").display(),
                data.display(),
                dir.display()
            ))
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres does not start: {e}"))?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "PostgreSQL did not listen within 30 s; see {}",
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Postgres {
            port,
            dir,
            _server: server,
        })
    }

    /// A libpq connection string for database `db` of this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} connect_timeout=10",
            self.port
        )
    }
}

/// A command run as the `postgres` user when this process is root.
fn as_owner(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A new, empty folder the server's user owns: `preferred` when that user can reach
/// it, else one in the system's temporary directory.
fn data_dir(preferred: &Path) -> Result<PathBuf, String> {
    let root = nix::unistd::geteuid().is_root();
    let leaf = preferred
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".to_owned());
    let candidates = [
        preferred.to_owned(),
        std::env::temp_dir().join(format!("fencelock-{leaf}-{}", std::process::id())),
    ];
    for dir in candidates {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The server is given absolute paths: it changes into its data directory.
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if !root {
            return Ok(dir);
        }
        let owner = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or("no postgres user (Debian's package creates it)")?;
        nix::unistd::chown(&dir, Some(owner.uid), Some(owner.gid)).map_err(|e| e.to_string())?;
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if reachable {
            return Ok(dir);
        }
        eprintln!(
            "{} is out of the postgres user's reach; trying elsewhere",
            dir.display()
        );
    }
    Err("no data directory the postgres user can write".to_owned())
}
