//! The clock check: a server whose clock is certainly further from DynamoDB's than
//! the skew margin fails /readyz and takes over no lease that ended unreleased, and
//! goes on releasing and granting free locks; a server in step is never suspect.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::helpers::{Options, TestApp};
use crate::metrics::{scrape, value};

async fn checked() -> TestApp {
    TestApp::spawn_with(Options {
        clock_check: true,
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_server_in_step_with_dynamodb_is_never_suspect() {
    let app = checked().await;
    for i in 0..20 {
        app.acquire(&format!("job-{i}"), "n", "").await;
    }
    assert_eq!(
        app.call(Method::GET, "/readyz", None).await.status,
        StatusCode::OK
    );
    let metrics = scrape(&app).await;
    assert_eq!(value(&metrics, "fencelock_clock_suspect", &[]), 0.0);
    let offset = value(&metrics, "fencelock_clock_offset_seconds", &[]);
    assert!(
        offset.abs() <= 1.0,
        "DynamoDB Local shares this machine's clock: {offset}"
    );
}

#[tokio::test]
async fn a_server_whose_clock_runs_ahead_refuses_takeovers_until_it_agrees_again() {
    let app = checked().await;
    let live = app.acquire("job", "holder", "&ttl=5s").await.fence();
    let released = app.acquire("free", "holder", "").await.fence();
    app.release("free", released).await;

    // Ten seconds ahead: by this clock the holder's lease ended long ago. The next
    // answer of DynamoDB shows the clock is off.
    app.clock.advance(Duration::from_secs(10));
    let ready = app.call(Method::GET, "/readyz", None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.json
    );
    assert!(
        ready.json["error"]
            .as_str()
            .unwrap()
            .contains("clock differs from DynamoDB's"),
        "{:?}",
        ready.json
    );

    let refused = app.acquire("job", "taker", "").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "lock_held"),
        "{:?}",
        refused.json
    );
    // Everything else goes on: the holder renews and releases, free locks are taken.
    assert_eq!(
        app.acquire("free", "other", "").await.status,
        StatusCode::OK
    );
    let metrics = scrape(&app).await;
    assert_eq!(value(&metrics, "fencelock_clock_suspect", &[]), 1.0);
    assert_eq!(
        value(&metrics, "fencelock_takeovers_refused_total", &[]),
        1.0
    );
    let offset = value(&metrics, "fencelock_clock_offset_seconds", &[]);
    assert!((-11.0..=-9.0).contains(&offset), "{offset}");

    // Back in step: the next answer clears it.
    app.clock.reset();
    assert_eq!(
        app.call(Method::GET, "/readyz", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        value(&scrape(&app).await, "fencelock_clock_suspect", &[]),
        0.0
    );
    assert_eq!(
        app.heartbeat("job", live).await.status,
        StatusCode::OK,
        "the holder kept it"
    );
}

#[tokio::test]
async fn a_suspect_server_takes_over_no_lapsed_semaphore_slot() {
    let app = checked().await;
    let path = "/semaphores/pool?limit=1&ttl=5s&nonce=";
    let held = app.call(Method::POST, &format!("{path}a"), None).await;
    assert_eq!(held.status, StatusCode::OK);
    app.clock.advance(Duration::from_secs(10));
    app.call(Method::GET, "/readyz", None).await;
    let refused = app.call(Method::POST, &format!("{path}b"), None).await;
    assert_eq!(refused.code(), "semaphore_full", "{:?}", refused.json);
    app.clock.reset();
}
