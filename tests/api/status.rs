//! Status and fence checks: what anyone may read about a lock.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn status_shows_the_lock_but_never_its_nonce() {
    let app = TestApp::spawn().await;
    let nonce = "s3cr3t-n0nce-4f1a";
    let acquired = app.acquire("job", nonce, "&ttl=45s").await;
    let status = app.status("job").await;
    assert_eq!(status.status, StatusCode::OK);
    for field in [
        "name",
        "fence",
        "held",
        "acquireTime",
        "heartbeatTime",
        "expireTime",
        "ttl",
        "owner",
        "metadata",
        "body",
    ] {
        assert!(
            status.json.get(field).is_some(),
            "status lacks {field}: {}",
            status.json
        );
    }
    assert_eq!(status.json["fence"], acquired.json["fence"]);
    assert_eq!(status.json["ttl"], "45s");
    assert!(!status.json.to_string().contains(nonce));
    assert!(!acquired.json.to_string().contains(nonce));
}

#[tokio::test]
async fn status_of_an_expired_lease_says_not_held() {
    let app = TestApp::spawn().await;
    app.acquire("job", "a", "&ttl=1s").await;
    app.clock.advance(Duration::from_millis(1001));
    let status = app.status("job").await;
    assert_eq!(
        (status.status, status.json["held"].clone()),
        (StatusCode::OK, json!(false))
    );
    assert!(status.json["expireTime"].is_string());
}

#[tokio::test]
async fn status_of_an_unknown_lock_is_404() {
    let app = TestApp::spawn().await;
    let reply = app.status("never-taken").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert!(
        reply.json["error"]
            .as_str()
            .unwrap()
            .contains("never-taken")
    );
}

/// A downstream service asks whether a fence it was handed still holds the lock.
#[tokio::test]
async fn fence_check_answers_200_only_while_the_fence_holds_a_live_lease() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "&ttl=10s").await.fence();
    let live = app.check_fence("job", fence).await;
    assert_eq!((live.status, live.fence()), (StatusCode::OK, fence));
    let stale = app.check_fence("job", fence - 1).await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::CONFLICT, "fence_mismatch")
    );
    app.clock.advance(Duration::from_millis(10_001));
    let expired = app.check_fence("job", fence).await;
    assert_eq!(
        (expired.status, expired.code()),
        (StatusCode::CONFLICT, "lease_expired")
    );
    let missing = app.check_fence("ghost", 1).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}
