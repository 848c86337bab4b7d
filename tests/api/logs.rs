//! Request ids and structured logs, from the real binary.

use reqwest::Method;

use crate::helpers::{TestApp, dynamodb_endpoint, spawn_binary, stopped_json_log};

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
        &[("FENCELOCK_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
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
