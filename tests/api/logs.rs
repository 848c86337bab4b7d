//! Request ids and structured logs, from the real binary.

use reqwest::Method;

use crate::helpers::{TestApp, dynamodb_endpoint, spawn_binary, stopped_json_log, token_file};

#[tokio::test]
async fn a_request_id_is_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let given = app
        .http
        .get(format!("{}/locks/job", app.base))
        .header("x-request-id", "from-the-client-7")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "from-the-client-7");
    let made = app.call(Method::GET, "/healthz", None).await;
    let id = made.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

#[tokio::test]
async fn json_log_lines_parse_and_name_request_lock_fence_and_status() {
    let (server, base) = spawn_binary(
        dynamodb_endpoint(),
        &[
            ("FENCELOCK_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("FENCELOCK_REQUEST_LOG", "all"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let acquired = http
        .post(format!("{base}/locks/job?nonce=a"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    let fence: u64 = acquired.headers()["fence"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let (lines, stderr) = stopped_json_log(server).await;
    let request = lines
        .iter()
        .find(|line| line["span"]["request_id"] == "req-42" && line.get("status").is_some())
        .unwrap_or_else(|| panic!("no line for request req-42 in {stderr}"));
    assert_eq!(request["status"], 200);
    assert_eq!(request["span"]["method"], "POST");
    assert_eq!(request["span"]["route"], "/locks/{name}");
    assert_eq!(request["span"]["lock"], "job");
    assert_eq!(request["span"]["fence"], fence);
    assert!(request.get("latency").is_some(), "{request}");
    // The start-up line: a URL to open, and durations as they are written.
    let serving = lines
        .iter()
        .find(|line| line["message"] == "fencelock is serving")
        .unwrap_or_else(|| panic!("no start-up line in {stderr}"));
    assert_eq!(serving["url"], format!("{base}/"), "{serving}");
    assert_eq!(serving["reclaim_after"], "7d", "{serving}");
    assert_eq!(serving["lock_delay"], "0s", "{serving}");
    assert_eq!(serving["clock_skew"], "500ms", "{serving}");
}

#[tokio::test]
async fn by_default_only_failed_requests_are_logged_each_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    token_file(&file, &[("billing-token", &["billing"], false)]);
    let (server, base) = spawn_binary(
        dynamodb_endpoint(),
        &[
            ("FENCELOCK_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("FENCELOCK_AUTH_FILE", file.to_str().unwrap()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let send = |path: &str, token: Option<&str>, id: &str| {
        let mut request = http
            .post(format!("{base}{path}"))
            .header("x-request-id", id);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let granted = send(
        "/locks/billing:run?nonce=a",
        Some("billing-token"),
        "granted",
    )
    .await
    .unwrap();
    assert_eq!(granted.status(), 200);
    let held = send("/locks/billing:run?nonce=b", Some("billing-token"), "held")
        .await
        .unwrap();
    assert_eq!(held.status(), 409);
    let anonymous = send("/locks/billing:run?nonce=c", None, "anonymous")
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let elsewhere = send(
        "/locks/payroll:run?nonce=d",
        Some("billing-token"),
        "elsewhere",
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.status(), 403);

    let (lines, stderr) = stopped_json_log(server).await;
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|line| line["request_id"] == id || line["span"]["request_id"] == id)
    };
    // A grant and a lock held are answers, not failures: no line.
    assert!(line_of("granted").is_none(), "{stderr}");
    assert!(line_of("held").is_none(), "{stderr}");
    let refused = line_of("anonymous").unwrap_or_else(|| panic!("no line for a 401 in {stderr}"));
    assert_eq!(refused["message"], "request failed");
    assert_eq!(refused["level"], "INFO");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["method"], "POST");
    assert_eq!(refused["route"], "/locks/{name}");
    assert!(refused["latency_us"].is_u64(), "{refused}");
    let forbidden = line_of("elsewhere").unwrap_or_else(|| panic!("no line for a 403 in {stderr}"));
    assert_eq!(forbidden["status"], 403);
    assert_eq!(forbidden["lock"], "payroll:run");
    assert_eq!(
        forbidden["token"],
        fencelock::auth::digest_hex("billing-token")[..8]
    );
    // The start-up line says which requests are logged.
    let serving = lines
        .iter()
        .find(|line| line["message"] == "fencelock is serving")
        .unwrap_or_else(|| panic!("no start-up line in {stderr}"));
    assert_eq!(serving["request_log"], "failed", "{serving}");
}
