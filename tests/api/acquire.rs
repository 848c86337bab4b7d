//! Acquire: fences, nonces, owners and conflicts.

use reqwest::{Method, StatusCode, header};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn acquire_grants_a_lease_with_glock_fields() {
    let app = TestApp::spawn().await;
    let reply = app.acquire("job1", "abc", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let view = &reply.json;
    assert_eq!(view["name"], "job1");
    assert_eq!(view["held"], true);
    assert_eq!(view["body"], "");
    assert_eq!(view["ttl"], "30s");
    assert!(reply.fence() > 0);
    let acquired =
        chrono::DateTime::parse_from_rfc3339(view["acquireTime"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(view["expireTime"].as_str().unwrap()).unwrap();
    assert_eq!((expires - acquired).num_milliseconds(), 30_000);
    assert!(view["acquireTime"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn put_acquires_like_post() {
    let app = TestApp::spawn().await;
    let reply = app
        .call(Method::PUT, "/locks/job?nonce=a&ttl=5s", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json["ttl"], "5s");
}

#[tokio::test]
async fn the_first_fence_of_a_name_is_above_the_time_in_microseconds() {
    let app = TestApp::spawn().await;
    let before = chrono::Utc::now().timestamp_micros() as u64;
    let fence = app.acquire("fresh", "a", "").await.fence();
    assert!(fence > before, "fence {fence} should exceed {before}");
}

#[tokio::test]
async fn a_held_lock_answers_409_with_the_holders_expiry_and_retry_after() {
    let app = TestApp::spawn().await;
    let first = app.acquire("job", "a", "&ttl=10s").await;
    let second = app.acquire("job", "b", "").await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.code(), "lock_held");
    assert_eq!(second.json["expireTime"], first.json["expireTime"]);
    assert_eq!(second.json["fence"], first.json["fence"]);
    let error = second.json["error"].as_str().unwrap();
    assert!(
        error.starts_with("lock \"job\" is held by another holder until "),
        "{error}"
    );
    let retry_after: u64 = second.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The lease has up to 10s to run, plus the 2s skew margin.
    assert!((1..=12).contains(&retry_after), "Retry-After {retry_after}");
    // The holder is untouched.
    let status = app.status("job").await;
    assert_eq!(status.fence(), first.fence());
    assert_eq!(status.json["held"], true);
}

#[tokio::test]
async fn the_same_nonce_reacquires_a_held_lock_with_a_greater_fence() {
    let app = TestApp::spawn().await;
    let first = app.acquire("job", "a", "").await.fence();
    // A retried acquire is a re-acquire: the holder is the same, the fence grows.
    let second = app.acquire("job", "a", "").await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(second.fence() > first);
    // The old fence no longer holds the lock.
    assert_eq!(app.heartbeat("job", first).await.code(), "fence_mismatch");
    assert_eq!(
        app.heartbeat("job", second.fence()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn acquire_takes_a_json_body_with_owner_and_metadata() {
    let app = TestApp::spawn().await;
    let body = json!({"nonce": "n1", "ttl": 20, "owner": "cron@host-7", "metadata": ["nightly", {"run": 42}]});
    let reply = app
        .call(
            Method::POST,
            "/locks/billing:nightly",
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json["ttl"], "20s");
    assert_eq!(reply.json["owner"], "cron@host-7");
    assert_eq!(reply.json["metadata"], json!(["nightly", {"run": 42}]));
    let status = app.status("billing:nightly").await;
    assert_eq!(status.json["owner"], "cron@host-7");
    assert_eq!(status.json["metadata"], json!(["nightly", {"run": 42}]));
}

#[tokio::test]
async fn query_and_body_may_share_a_parameter_only_with_one_value() {
    let app = TestApp::spawn().await;
    let same = app
        .call(
            Method::POST,
            "/locks/job?nonce=a",
            Some(r#"{"nonce": "a", "ttl": "5s"}"#),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{same:?}");
    assert_eq!(same.json["ttl"], "5s");
    let differing = app
        .call(
            Method::POST,
            "/locks/other?nonce=a",
            Some(r#"{"nonce": "b"}"#),
        )
        .await;
    assert_eq!(differing.status, StatusCode::BAD_REQUEST);
    assert!(differing.json["error"].as_str().unwrap().contains("nonce"));
    assert_eq!(app.status("other").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_new_holder_does_not_inherit_owner_or_metadata() {
    let app = TestApp::spawn().await;
    let first = app
        .call(
            Method::POST,
            "/locks/job",
            Some(r#"{"nonce": "a", "owner": "alice", "metadata": {"k": 1}}"#),
        )
        .await;
    app.release("job", first.fence()).await;
    let second = app.acquire("job", "b", "").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json["owner"], serde_json::Value::Null);
    assert_eq!(second.json["metadata"], serde_json::Value::Null);
}

#[tokio::test]
async fn names_in_different_namespaces_are_different_locks() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.acquire("billing:nightly", "a", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.acquire("search:nightly", "b", "").await.status,
        StatusCode::OK
    );
    assert_eq!(app.acquire("nightly", "c", "").await.status, StatusCode::OK);
}
