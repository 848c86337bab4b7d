//! Release: idempotent, and only by the current fence.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::helpers::{SKEW, TestApp};

#[tokio::test]
async fn release_frees_the_lock_at_once() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "").await.fence();
    let reply = app.release("job", fence).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json, serde_json::json!({"released": true}));
    let status = app.status("job").await;
    assert_eq!(status.json["held"], false);
    assert_eq!(status.json["expireTime"], serde_json::Value::Null);
    // No skew margin to wait out after a release.
    let next = app.acquire("job", "b", "").await;
    assert_eq!(next.status, StatusCode::OK, "{next:?}");
    assert!(next.fence() > fence);
}

#[tokio::test]
async fn a_retried_release_answers_the_same() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "").await.fence();
    assert_eq!(app.release("job", fence).await.json["released"], true);
    assert_eq!(app.release("job", fence).await.json["released"], true);
}

#[tokio::test]
async fn a_stale_fence_releases_nothing() {
    let app = TestApp::spawn().await;
    let old = app.acquire("job", "a", "&ttl=1s").await.fence();
    app.clock
        .advance(Duration::from_secs(1) + SKEW + Duration::from_millis(1));
    let new = app.acquire("job", "b", "").await.fence();
    let reply = app.release("job", old).await;
    assert_eq!(
        (reply.status, reply.json["released"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let status = app.status("job").await;
    assert_eq!(
        (status.fence(), status.json["held"].as_bool()),
        (new, Some(true))
    );
}

#[tokio::test]
async fn releasing_a_missing_lock_or_an_unissued_fence_changes_nothing() {
    let app = TestApp::spawn().await;
    assert_eq!(app.release("ghost", 5).await.json["released"], false);
    assert_eq!(app.status("ghost").await.status, StatusCode::NOT_FOUND);
    let fence = app.acquire("job", "a", "").await.fence();
    assert_eq!(app.release("job", fence + 1).await.json["released"], false);
    assert_eq!(app.status("job").await.json["held"], true);
}

#[tokio::test]
async fn a_released_fence_can_no_longer_heartbeat() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "").await.fence();
    app.release("job", fence).await;
    let reply = app.heartbeat("job", fence).await;
    assert_eq!(reply.code(), "lease_expired");
    assert!(reply.json["error"].as_str().unwrap().contains("released"));
    let check = app
        .call(Method::GET, &format!("/locks/job/{fence}"), None)
        .await;
    assert_eq!(check.status, StatusCode::CONFLICT);
}
