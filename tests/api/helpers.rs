//! The harness: one DynamoDB Local for the whole test binary, and `TestApp`, a real
//! fencelock server on a free port with a table of its own and a clock the test moves.

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fencelock::api::{AppState, Limits, Security};
use fencelock::clock::Clock;
use fencelock::clock::ShiftedClock;
use fencelock::domain::TtlBounds;
use fencelock::reclaim::spawn_sweeper;
use fencelock::store::DynamoStore;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;

#[path = "../support/dynamodb_local.rs"]
pub mod dynamodb_local;

/// The clock-skew margin every test server runs with.
/// It is wide so that real time passing during a test cannot decide its outcome.
pub const SKEW: Duration = Duration::from_secs(2);
/// The longest wait every test server allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The body limit every test server runs with.
pub const MAX_BODY: usize = 64 * 1024;

/// The endpoint of the DynamoDB Local this test binary uses, started on first use.
pub fn dynamodb_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        std::env::var("FENCELOCK_TEST_DYNAMODB_ENDPOINT")
            .unwrap_or_else(|_| dynamodb_local::start("dynamodb-local-test.log"))
    })
}

pub fn unique_table() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "fencelock-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running fencelock server.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// This server's clock: advance it to let leases run out.
    pub clock: Arc<ShiftedClock>,
    pub table: String,
    /// The DynamoDB this server's store reaches.
    pub endpoint: String,
    options: Options,
    shutdown: Arc<Notify>,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Reply {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }

    /// The fence of a lock view.
    pub fn fence(&self) -> u64 {
        self.json["fence"]
            .as_u64()
            .unwrap_or_else(|| panic!("no fence in {self:?}"))
    }
}

/// Server options beyond the fixed ones above.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub lock_delay: Duration,
    /// Run the sweeper with this reclaim delay.
    pub reclaim_after: Option<Duration>,
    pub limits: Limits,
    pub security: Security,
    /// Compare the server's clock with DynamoDB Local's (off: tests move the clock).
    pub clock_check: bool,
    /// Leave stale records to DynamoDB's TTL, this long after each write.
    pub purge_after: Option<Duration>,
}

impl Options {
    /// The options of a server that requires the holder's nonce as proof.
    pub fn requiring_nonce() -> Self {
        Self {
            security: Security {
                require_nonce: true,
                ..Security::default()
            },
            ..Self::default()
        }
    }
}

impl TestApp {
    /// A server on a fresh table.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// A server on a fresh table, with `options`.
    pub async fn spawn_with(options: Options) -> Self {
        let app = Self::serve(dynamodb_endpoint(), unique_table(), options).await;
        app.create_table().await;
        app
    }

    /// A store on this server's table, deciding by this server's clock: for calling
    /// the store directly.
    pub async fn store(&self) -> DynamoStore {
        self.store_with(self.clock.clone()).await
    }

    /// A store on this server's table, deciding by `clock`.
    pub async fn store_with(&self, clock: Arc<dyn Clock>) -> DynamoStore {
        dynamodb_local::store(&self.endpoint, &self.table, clock, SKEW).await
    }

    /// Requests to this server's table that go around fencelock.
    pub fn raw(&self) -> dynamodb_local::Raw {
        dynamodb_local::Raw::new(&self.endpoint, &self.table)
    }

    /// A second server on the same table and with the same options, with a clock of
    /// its own.
    pub async fn another_instance(&self) -> Self {
        Self::serve(&self.endpoint, self.table.clone(), self.options.clone()).await
    }

    /// Another server on this server's table, with `options`.
    pub async fn another_instance_with(&self, options: Options) -> Self {
        Self::serve(&self.endpoint, self.table.clone(), options).await
    }

    /// A server on `endpoint`, whose table does not exist (yet).
    pub async fn spawn_on(endpoint: &str) -> Self {
        Self::spawn_on_with(endpoint, Options::default()).await
    }

    /// As [`TestApp::spawn_on`], with `options`.
    pub async fn spawn_on_with(endpoint: &str, options: Options) -> Self {
        Self::serve(endpoint, unique_table(), options).await
    }

    /// Creates this server's table, as `FENCELOCK_CREATE_TABLE` does at start-up.
    pub async fn create_table(&self) {
        self.store()
            .await
            .ensure_table()
            .await
            .expect("the table is created");
    }

    /// A server whose DynamoDB endpoint answers nothing.
    pub async fn spawn_unreachable() -> Self {
        let closed = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Self::serve(
            &format!("http://{closed}"),
            unique_table(),
            Options::default(),
        )
        .await
    }

    async fn serve(endpoint: &str, table: String, options: Options) -> Self {
        let clock = Arc::new(ShiftedClock::new());
        let store = if options.clock_check {
            dynamodb_local::checked_store(endpoint, &table, clock.clone(), SKEW).await
        } else {
            dynamodb_local::store(endpoint, &table, clock.clone(), SKEW).await
        };
        let store = store.with_lock_delay(options.lock_delay);
        let store = match options.purge_after {
            Some(after) => store.with_purge_after(after),
            None => store,
        };
        let ttl = TtlBounds::new(
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
        .unwrap();
        let state = AppState::new(store, ttl, MAX_WAIT, MAX_BODY)
            .with_limits(options.limits)
            .with_security(options.security.clone());
        if let Some(after) = options.reclaim_after {
            // On the state's store, as the server runs it, so that its deletes reach
            // the watches at once; ends with the test's runtime.
            spawn_sweeper(state.store.clone(), after);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Arc::new(Notify::new());
        let signal = shutdown.clone();
        tokio::spawn(fencelock::server::run(
            listener,
            state,
            async move { signal.notified().await },
            Duration::from_secs(10),
        ));
        Self {
            options,
            shutdown,
            base,
            http: reqwest::Client::new(),
            clock,
            table,
            endpoint: endpoint.to_owned(),
        }
    }

    /// Starts this server's graceful shutdown, as SIGTERM does.
    pub fn shut_down(&self) {
        self.shutdown.notify_one();
    }

    /// Sends `method path` with an optional raw body.
    pub async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Reply {
        self.call_with(method, path, body, &[]).await
    }

    /// Sends `method path` with an optional raw body and `headers`.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status} answer is not JSON ({e}): {text:?}"));
        Reply {
            status,
            headers,
            json,
        }
    }

    /// Sends `method path` with an optional raw body, as the bearer of `token`.
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Reply {
        let bearer = format!("Bearer {token}");
        self.call_with(method, path, body, &[("authorization", &bearer)])
            .await
    }

    /// `POST /locks/{name}?nonce={nonce}` plus `extra` query parameters.
    pub async fn acquire(&self, name: &str, nonce: &str, extra: &str) -> Reply {
        self.call(
            Method::POST,
            &format!("/locks/{name}?nonce={nonce}{extra}"),
            None,
        )
        .await
    }

    pub async fn heartbeat(&self, name: &str, fence: u64) -> Reply {
        self.call(
            Method::POST,
            &format!("/locks/{name}/{fence}/heartbeat"),
            None,
        )
        .await
    }

    pub async fn update(&self, name: &str, fence: u64, body: &str) -> Reply {
        self.call(Method::POST, &format!("/locks/{name}/{fence}"), Some(body))
            .await
    }

    pub async fn release(&self, name: &str, fence: u64) -> Reply {
        self.call(Method::DELETE, &format!("/locks/{name}/{fence}"), None)
            .await
    }

    pub async fn status(&self, name: &str) -> Reply {
        self.call(Method::GET, &format!("/locks/{name}"), None)
            .await
    }

    pub async fn check_fence(&self, name: &str, fence: u64) -> Reply {
        self.call(Method::GET, &format!("/locks/{name}/{fence}"), None)
            .await
    }
}

/// The real `fencelock serve` binary on a free port, on a table of its own at
/// `endpoint`, with `envs` on top of what it needs; answers once it serves, with its
/// base URL (`https://localhost:…` when `envs` give it a certificate).
pub async fn spawn_binary(endpoint: &str, envs: &[(&str, &str)]) -> (std::process::Child, String) {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fencelock"));
    command
        .arg("serve")
        .env_clear()
        .env("FENCELOCK_LISTEN", format!("127.0.0.1:{port}"))
        .env("FENCELOCK_DYNAMODB_ENDPOINT", endpoint)
        .env("FENCELOCK_TABLE", unique_table())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stderr(std::process::Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the fencelock binary starts");
    let tls = envs.iter().any(|(key, _)| *key == "FENCELOCK_TLS_CERT");
    let base = if tls {
        format!("https://localhost:{port}")
    } else {
        format!("http://127.0.0.1:{port}")
    };
    // It serves once it listens: the table is made before the port is bound.
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the fencelock binary did not serve on {base}");
}

/// Stops a server started by [`spawn_binary`] with `FENCELOCK_LOG_FORMAT=json` (SIGTERM)
/// and answers its log lines, each parsed as JSON (a line that is not fails the test),
/// and the log as written.
pub async fn stopped_json_log(server: std::process::Child) -> (Vec<Value>, String) {
    signal(server.id(), "TERM");
    let output = tokio::task::spawn_blocking(move || server.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    (lines, stderr)
}

/// Sends `signal` (e.g. `TERM`, `STOP`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The sorted names of a JSON array of lock views.
pub fn sorted_names(locks: &Value) -> Vec<String> {
    let mut names: Vec<String> = locks
        .as_array()
        .unwrap_or_else(|| panic!("not a list of locks: {locks}"))
        .iter()
        .map(|lock| lock["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// A client of `app` from fencelock's own client library.
pub fn client(app: &TestApp) -> fencelock::client::Client {
    fencelock::client::Client::new(&app.base).expect("the test server's URL is valid")
}

/// The `fencelock` binary as a client of `base`, with nothing of the test's own
/// environment but `PATH`; killed if the test drops it.
pub fn fencelock(base: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fencelock"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FENCELOCK_URL", base)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What a finished `fencelock` command printed, and its exit status.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Standard output as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Waits for `child` to end; a child that runs past a minute fails the test.
pub async fn finished(child: tokio::process::Child) -> Finished {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the fencelock command ends within a minute")
        .expect("its output is read");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `fencelock ARGS` against `base` to its end.
pub async fn fencelock_cli(base: &str, args: &[&str]) -> Finished {
    finished(
        fencelock(base)
            .args(args)
            .spawn()
            .expect("fencelock starts"),
    )
    .await
}

/// Waits until `path` holds `text`; a minute without it fails the test.
pub async fn wait_for_text(path: &std::path::Path, text: &str) {
    for _ in 0..600 {
        if std::fs::read_to_string(path).is_ok_and(|found| found.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never held {text:?}", path.display());
}

/// A token file listing `tokens` as (token, namespaces, may list).
pub fn token_file(path: &std::path::Path, tokens: &[(&str, &[&str], bool)]) {
    let mut text = String::new();
    for (token, namespaces, list) in tokens {
        text.push_str(&format!(
            "[[tokens]]\nsha256 = \"{}\"\nnamespaces = {namespaces:?}\nlist = {list}\n\n",
            fencelock::auth::digest_hex(token)
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// A server with a token file of `tokens` (see [`token_file`]) in force, and `options`
/// otherwise; the file lives as long as the directory returned.
pub async fn spawn_with_tokens(
    tokens: &[(&str, &[&str], bool)],
    options: Options,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    token_file(&path, tokens);
    spawn_with_token_file(dir, options).await
}

/// A server with the token file `tokens.toml` of `dir` in force, and `options`
/// otherwise; the file lives as long as the directory returned.
pub async fn spawn_with_token_file(
    dir: tempfile::TempDir,
    options: Options,
) -> (TestApp, tempfile::TempDir) {
    let path = dir.path().join("tokens.toml");
    let security = fencelock::api::Security {
        auth: Some(Arc::new(fencelock::auth::Auth::load(&path).unwrap())),
        ..options.security.clone()
    };
    let app = TestApp::spawn_with(Options {
        security,
        ..options
    })
    .await;
    (app, dir)
}

/// `fencelock serve` on `table`, not allowed to create it: what it says as it exits.
pub async fn refused_start(table: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fencelock"));
    command
        .arg("serve")
        .env_clear()
        .env("FENCELOCK_LISTEN", "127.0.0.1:0")
        .env("FENCELOCK_DYNAMODB_ENDPOINT", dynamodb_endpoint())
        .env("FENCELOCK_TABLE", table)
        .env("FENCELOCK_CREATE_TABLE", "false")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .envs(extra.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the server stops at once")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
