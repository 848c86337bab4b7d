//! The Gorilla-compatible API under /api/v1: its README's flows, and what fencelock
//! adds (atomic acquire, expiry).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Reply, SKEW, TestApp};

async fn gorilla_acquire(app: &TestApp, resource: &str, body: Value) -> Reply {
    app.call(
        Method::POST,
        &format!("/api/v1/locks/{resource}"),
        Some(&body.to_string()),
    )
    .await
}

/// DELETE answers 204 with no body, so it is sent without `TestApp::call`.
async fn gorilla_release(app: &TestApp, resource: &str, token: &str) -> StatusCode {
    app.http
        .delete(format!("{}/api/v1/locks/{resource}/{token}", app.base))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_flows_of_the_gorilla_readme() {
    let app = TestApp::spawn().await;
    let acquired = gorilla_acquire(
        &app,
        "orders",
        json!({"owner": "worker-1", "timeout": "60", "metadata": ["list", "of", "metadata"]}),
    )
    .await;
    assert_eq!(acquired.status, StatusCode::OK, "{acquired:?}");
    let lock = &acquired.json;
    for field in [
        "id",
        "owner",
        "resource",
        "token",
        "timeout",
        "metadata",
        "createdAt",
        "updatedAt",
        "expireAt",
    ] {
        assert!(lock.get(field).is_some(), "no {field} in {lock}");
    }
    assert_eq!(
        (lock["owner"].as_str(), lock["resource"].as_str()),
        (Some("worker-1"), Some("orders"))
    );
    assert_eq!(lock["timeout"], 60);
    assert_eq!(lock["metadata"], json!(["list", "of", "metadata"]));
    let token = lock["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32);
    // The id is the fence of the glock-style API, whose status never shows the token.
    let glock_status = app.status("orders").await;
    assert_eq!(glock_status.json["fence"], lock["id"]);
    assert!(!glock_status.json.to_string().contains(&token));

    let status = app
        .call(Method::GET, &format!("/api/v1/locks/orders/{token}"), None)
        .await;
    assert_eq!(
        (status.status, &status.json["id"]),
        (StatusCode::OK, &lock["id"])
    );

    let extended = app
        .call(
            Method::PUT,
            &format!("/api/v1/locks/orders/{token}"),
            Some(r#"{"timeout": 120}"#),
        )
        .await;
    assert_eq!(extended.status, StatusCode::OK, "{extended:?}");
    assert_eq!(
        (extended.json["timeout"].as_u64(), &extended.json["token"]),
        (Some(120), &lock["token"])
    );
    assert!(extended.json["expireAt"].as_str() > lock["expireAt"].as_str());

    let shorter = app
        .call(
            Method::PUT,
            &format!("/api/v1/locks/orders/{token}"),
            Some(r#"{"timeout": 10}"#),
        )
        .await;
    assert_eq!(
        (shorter.status, shorter.code()),
        (StatusCode::CONFLICT, "lease_longer")
    );

    assert_eq!(
        gorilla_release(&app, "orders", &token).await,
        StatusCode::NO_CONTENT
    );
    // A retried release of the same holding answers the same.
    assert_eq!(
        gorilla_release(&app, "orders", &token).await,
        StatusCode::NO_CONTENT
    );
    let gone = app
        .call(Method::GET, &format!("/api/v1/locks/orders/{token}"), None)
        .await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test]
async fn another_owner_gets_409_and_the_same_owner_a_new_holding() {
    let app = TestApp::spawn().await;
    let first = gorilla_acquire(&app, "orders", json!({"owner": "alice", "timeout": 60})).await;
    let other = gorilla_acquire(&app, "orders", json!({"owner": "bob"})).await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::CONFLICT, "lock_held")
    );
    let again = gorilla_acquire(&app, "orders", json!({"owner": "alice", "timeout": 60})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.json["id"].as_u64() > first.json["id"].as_u64());
    assert_ne!(again.json["token"], first.json["token"]);
    let old_token = first.json["token"].as_str().unwrap();
    assert_eq!(
        gorilla_release(&app, "orders", old_token).await,
        StatusCode::NOT_FOUND
    );
    let status = app.status("orders").await;
    assert_eq!(
        (status.json["held"].as_bool(), &status.json["fence"]),
        (Some(true), &again.json["id"])
    );
    // Every server on the table derives the holding's nonce from one key.
    let other_server = app.another_instance().await;
    let elsewhere = gorilla_acquire(
        &other_server,
        "orders",
        json!({"owner": "alice", "timeout": 60}),
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::OK, "{elsewhere:?}");
    assert!(elsewhere.json["id"].as_u64() > again.json["id"].as_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acquires_by_different_owners_never_both_succeed() {
    let a = Arc::new(TestApp::spawn().await);
    let b = Arc::new(a.another_instance().await);
    for round in 0..5 {
        let resource = format!("race-{round}");
        let mut attempts = Vec::new();
        for owner in 0..8 {
            let app = if owner % 2 == 0 { a.clone() } else { b.clone() };
            let resource = resource.clone();
            attempts.push(tokio::spawn(async move {
                gorilla_acquire(&app, &resource, json!({"owner": format!("owner-{owner}")}))
                    .await
                    .status
            }));
        }
        let mut granted = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                StatusCode::OK => granted += 1,
                StatusCode::CONFLICT => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(
            granted, 1,
            "round {round}: {granted} owners were granted one lock"
        );
    }
}

#[tokio::test]
async fn an_abandoned_lock_expires_on_its_own() {
    let app = TestApp::spawn().await;
    let first = gorilla_acquire(&app, "orders", json!({"owner": "crashed", "timeout": 1})).await;
    let token = first.json["token"].as_str().unwrap().to_owned();
    app.clock
        .advance(Duration::from_secs(1) + SKEW + Duration::from_millis(1));
    let expired = app
        .call(Method::GET, &format!("/api/v1/locks/orders/{token}"), None)
        .await;
    assert_eq!(expired.status, StatusCode::NOT_FOUND);
    let next = gorilla_acquire(&app, "orders", json!({"owner": "next"})).await;
    assert_eq!(next.status, StatusCode::OK, "{next:?}");
    let extend = app
        .call(
            Method::PUT,
            &format!("/api/v1/locks/orders/{token}"),
            Some(r#"{"timeout": 60}"#),
        )
        .await;
    assert_eq!(extend.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_gorilla_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let cases: [(Method, &str, Option<&str>, &str); 7] = [
        (
            Method::POST,
            "/api/v1/locks/orders",
            None,
            "needs a JSON body",
        ),
        (
            Method::POST,
            "/api/v1/locks/orders",
            Some(r#"{"timeout": 30}"#),
            "needs an owner",
        ),
        (
            Method::POST,
            "/api/v1/locks/orders",
            Some(r#"{"owner": "a", "timeout": "soon"}"#),
            "timeout",
        ),
        (
            Method::POST,
            "/api/v1/locks/orders",
            Some(r#"{"owner": "a", "timeout": 0}"#),
            "outside the allowed range",
        ),
        (
            Method::POST,
            "/api/v1/locks/orders",
            Some(r#"{"owner": "a", "ttl": 5}"#),
            "unknown field",
        ),
        (
            Method::POST,
            "/api/v1/locks/bad%20name",
            Some(r#"{"owner": "a"}"#),
            "expected only letters",
        ),
        (
            Method::GET,
            "/api/v1/locks/orders/not%20a%20token",
            None,
            "token must be",
        ),
    ];
    for (method, path, body, mentions) in cases {
        let reply = app.call(method, path, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{path}: {reply:?}"
        );
        assert!(
            reply.json["error"].as_str().unwrap().contains(mentions),
            "{path}: {reply:?}"
        );
    }
    assert_eq!(app.status("orders").await.status, StatusCode::NOT_FOUND);

    let held = gorilla_acquire(&app, "orders", json!({"owner": "a", "timeout": 60})).await;
    let token = held.json["token"].as_str().unwrap();
    let no_timeout = app
        .call(
            Method::PUT,
            &format!("/api/v1/locks/orders/{token}"),
            Some("{}"),
        )
        .await;
    assert_eq!(no_timeout.status, StatusCode::BAD_REQUEST);
    let unknown = app
        .call(
            Method::GET,
            "/api/v1/locks/orders/0123456789abcdef0123456789abcdef",
            None,
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let status = app.status("orders").await;
    assert_eq!(
        (status.json["ttl"].as_str(), &status.json["fence"]),
        (Some("60s"), &held.json["id"])
    );
}
