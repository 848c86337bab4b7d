//! Connections as a raw TCP client sees them: every error answer is fencelock's JSON,
//! hyper's own refusals included, and a connection that never finishes its headers,
//! or sits idle, is closed while a slow but honest waiting acquire is served.

use std::time::Duration;

use fencelock::api::Limits;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Options, TestApp};

/// The header read and idle timeouts of the servers that test them.
const SHORT: Duration = Duration::from_millis(800);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("the server accepts")
}

/// Sends `request` as it is and reads until the server closes the connection.
async fn exchange(app: &TestApp, request: &[u8]) -> String {
    let mut stream = connect(app).await;
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection after a refusal")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and the JSON body of a raw answer.
fn parse(answer: &str) -> (u16, Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{status} answer is not JSON ({e}): {answer:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, json)
}

#[tokio::test]
async fn refusals_made_before_fencelock_sees_the_request_are_json_too() {
    let app = TestApp::spawn().await;

    // More header fields than the server parses, though few bytes in all.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let (status, json) = parse(&exchange(&app, many.as_bytes()).await);
    assert_eq!(
        (status, json["code"].as_str()),
        (431, Some("headers_too_large"))
    );
    assert!(json["error"].as_str().unwrap().contains("header"), "{json}");

    // A URI far past every limit.
    let long = format!(
        "GET /locks/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, json) = parse(&exchange(&app, long.as_bytes()).await);
    assert_eq!((status, json["code"].as_str()), (414, Some("uri_too_long")));

    // Not HTTP at all.
    let (status, json) = parse(&exchange(&app, b"HELLO there\r\n\r\n").await);
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        json["error"].as_str().unwrap().contains("HTTP/1.1"),
        "{json}"
    );

    // The server goes on answering.
    assert_eq!(app.status("never").await.status, StatusCode::NOT_FOUND);
}

/// A server with these header and idle timeouts.
async fn spawn_with_timeouts(header_timeout: Duration, idle_timeout: Duration) -> TestApp {
    TestApp::spawn_with(Options {
        limits: Limits {
            header_timeout,
            idle_timeout,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await
}

/// Whether the server closed `stream` (rather than kept it) within 20 s.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// Sends one whole request on `stream` and reads its answer's status line.
async fn one_request(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    // Idle connections are kept for a minute: only the header timeout can close these.
    let app = spawn_with_timeouts(SHORT, Duration::from_secs(60)).await;
    let mut first = connect(&app).await;
    first.write_all(b"POST /locks/slow?non").await.unwrap();
    let mut later = connect(&app).await;
    one_request(&mut later).await;
    later
        .write_all(b"POST /locks/slow?nonce=n HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut first).await,
        "a first request line never finished kept its connection"
    );
    assert!(
        closed_by_server(&mut later).await,
        "a second request's headers never finished kept their connection"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_with_timeouts(Duration::from_secs(60), SHORT).await;
    let mut stream = connect(&app).await;
    one_request(&mut stream).await;
    assert!(
        closed_by_server(&mut stream).await,
        "an idle connection was kept"
    );
}

#[tokio::test]
async fn a_waiting_acquire_longer_than_the_header_timeout_is_answered() {
    let app = spawn_with_timeouts(SHORT, SHORT).await;
    app.acquire("busy", "holder", "&ttl=60s").await;
    // Waits 3 s, several header timeouts, on a connection whose headers were read.
    let answer = exchange(
        &app,
        b"POST /locks/busy?nonce=waiter&wait=3s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (status, json) = parse(&answer);
    assert_eq!((status, json["code"].as_str()), (409, Some("lock_held")));
}
