//! Server limits: requests at once, request time, and the shutdown grace.

use std::sync::Arc;
use std::time::Duration;

use fencelock::api::Limits;
use reqwest::{Method, StatusCode, header};

use crate::helpers::{Options, TestApp, dynamodb_local, signal, spawn_binary};

#[tokio::test]
async fn requests_past_the_concurrency_limit_are_answered_503() {
    let limits = Limits {
        max_concurrent: 2,
        request_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let app = Arc::new(
        TestApp::spawn_with(Options {
            limits,
            ..Options::default()
        })
        .await,
    );
    let holder = app.acquire("job", "holder", "&ttl=60s").await.fence();
    let waiters: Vec<_> = (0..2)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.acquire("job", &format!("w{i}"), "&wait=3s").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = app.call(Method::GET, "/healthz", None).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    assert!(
        refused.json["error"]
            .as_str()
            .unwrap()
            .contains("limit of 2 requests"),
        "{refused:?}"
    );

    app.release("job", holder).await;
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(
        app.call(Method::GET, "/healthz", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_request_past_the_time_limit_is_answered_503() {
    let limits = Limits {
        max_concurrent: 100,
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let app = TestApp::spawn_with(Options {
        limits,
        ..Options::default()
    })
    .await;
    app.acquire("job", "holder", "&ttl=60s").await;
    let reply = app.acquire("job", "waiter", "&wait=10s").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(
        reply.json["error"]
            .as_str()
            .unwrap()
            .contains("longer than the server's limit of 1s")
    );
}

/// With DynamoDB Local paused, a read hangs in flight; on SIGTERM the binary stops
/// waiting for it after the grace and exits, and the client sees its connection
/// closed instead of an answer (which would come only at the 5 s DynamoDB timeout).
#[tokio::test]
async fn shutdown_stops_waiting_for_requests_after_the_grace() {
    let (endpoint, dynamodb) = dynamodb_local::start_with_pid("dynamodb-local-shutdown.log");
    let (server, base) = spawn_binary(&endpoint, &[("FENCELOCK_SHUTDOWN_GRACE", "500ms")]).await;
    let http = reqwest::Client::new();
    let acquired = http
        .post(format!("{base}/locks/job?nonce=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(acquired.status(), StatusCode::OK);

    signal(dynamodb, "STOP");
    let in_flight = tokio::spawn(async move { http.get(format!("{base}/locks/job")).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(server.id(), "TERM");
    let exited = tokio::task::spawn_blocking(move || server.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let cut = in_flight.await.unwrap();
    signal(dynamodb, "CONT");
    assert!(exited.status.success(), "{exited:?}");
    assert!(
        cut.is_err(),
        "the request was answered instead of cut: {cut:?}"
    );
}

#[tokio::test]
async fn a_request_timeout_not_above_the_longest_wait_is_refused_at_start() {
    let limits = [
        ("FENCELOCK_MAX_WAIT", "60s"),
        ("FENCELOCK_REQUEST_TIMEOUT", "30s"),
    ];
    let (code, log) = crate::helpers::refused_start(&crate::helpers::unique_table(), &limits).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("must be longer than FENCELOCK_MAX_WAIT"),
        "{log}"
    );
}
