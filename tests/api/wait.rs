//! Waiting acquire: FIFO queues per name, handoff on release, expiry across servers,
//! a wait that runs out, clients that leave, and shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode, header};

use fencelock::clock::SystemClock;
use fencelock::domain::{LockName, Nonce};
use fencelock::store::{AcquireOutcome, AcquireRequest};
use fencelock::wait::Waiters;

use crate::helpers::{SKEW, TestApp};

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let app = Arc::new(TestApp::spawn().await);
    let holder = app.acquire("job", "holder", "").await.fence();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (app, order) = (app.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let reply = app
                .acquire("job", &format!("waiter-{i}"), "&wait=15s")
                .await;
            assert_eq!(reply.status, StatusCode::OK, "waiter {i}: {reply:?}");
            order.lock().unwrap().push((i, reply.fence()));
            assert_eq!(
                app.release("job", reply.fence()).await.json["released"],
                true
            );
        }));
        // Let each waiter join the queue before the next one comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.release("job", holder).await;
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let arrivals: Vec<_> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        arrivals,
        vec![0, 1, 2, 3],
        "grants out of arrival order: {order:?}"
    );
    assert!(
        order.windows(2).all(|w| w[1].1 > w[0].1),
        "fences must grow: {order:?}"
    );
    assert!(order[0].1 > holder);
}

#[tokio::test]
async fn a_local_release_hands_the_lock_to_the_waiter() {
    let app = Arc::new(TestApp::spawn().await);
    let holder = app.acquire("job", "holder", "&ttl=60s").await.fence();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { app.acquire("job", "waiter", "&wait=15s").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.release("job", holder).await.json["released"], true);
    let reply = waiter.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(reply.fence() > holder);
    // The waiter got it long before the holder's 60s lease would have ended.
    let status = app.status("job").await;
    assert_eq!(
        (status.fence(), status.json["held"].as_bool()),
        (reply.fence(), Some(true))
    );
}

#[tokio::test]
async fn a_waiter_on_another_server_gets_the_lock_once_the_lease_and_margin_are_over() {
    let a = TestApp::spawn().await;
    let b = a.another_instance().await;
    let held = a.acquire("job", "crashed-holder", "&ttl=1s").await;
    let expired_at =
        chrono::DateTime::parse_from_rfc3339(held.json["expireTime"].as_str().unwrap()).unwrap();
    let reply = b.acquire("job", "waiter", "&wait=15s").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(reply.fence() > held.fence());
    let granted_at =
        chrono::DateTime::parse_from_rfc3339(reply.json["acquireTime"].as_str().unwrap()).unwrap();
    assert!(
        granted_at > expired_at + SKEW,
        "taken at {granted_at}, before the lease end {expired_at} plus the margin"
    );
}

#[tokio::test]
async fn a_wait_that_runs_out_answers_409_with_the_holders_expiry() {
    let app = TestApp::spawn().await;
    let holder = app.acquire("job", "holder", "&ttl=60s").await;
    let reply = app.acquire("job", "waiter", "&wait=1s").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::CONFLICT, "lock_held")
    );
    assert_eq!(reply.json["expireTime"], holder.json["expireTime"]);
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    let body = app
        .call(
            Method::POST,
            "/locks/job",
            Some(r#"{"nonce": "w2", "wait": 1}"#),
        )
        .await;
    assert_eq!(body.code(), "lock_held");
    assert_eq!(app.status("job").await.fence(), holder.fence());
}

#[tokio::test]
async fn a_waiter_whose_client_left_is_not_left_holding_the_lock() {
    let app = TestApp::spawn().await;
    let holder = app.acquire("job", "holder", "&ttl=60s").await.fence();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/locks/job?nonce=impatient&wait=15s", app.base))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first: {gone:?}");
    app.release("job", holder).await;
    // Whether the server saw the client leave or granted it and released it again,
    // the lock ends up free, long before any lease of the departed client would end.
    let mut status = app.status("job").await;
    for _ in 0..50 {
        if status.json["held"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.status("job").await;
    }
    assert_eq!(status.json["held"], false, "{status:?}");
    assert_eq!(app.acquire("job", "next", "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn waiters_are_answered_503_when_the_server_shuts_down() {
    let app = Arc::new(TestApp::spawn().await);
    app.acquire("job", "holder", "&ttl=60s").await;
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { app.acquire("job", "waiter", "&wait=15s").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shut_down();
    let reply = waiter.await.unwrap();
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert!(
        reply.json["error"]
            .as_str()
            .unwrap()
            .contains("shutting down")
    );
}

/// A wait that ends before the first DynamoDB answer gets that answer, not a 503.
#[tokio::test]
async fn a_wait_that_ends_before_the_first_attempt_gets_its_answer() {
    let app = TestApp::spawn().await;
    let holder = app.acquire("job", "holder", "&ttl=60s").await.fence();
    let store = app.store_with(Arc::new(SystemClock)).await;
    let waiters: Waiters = Waiters::new(store, fencelock::wait::DEFAULT_MAX_WAITERS_PER_LOCK);
    let request = AcquireRequest {
        name: LockName::parse("job").unwrap(),
        nonce: Nonce::parse("waiter").unwrap(),
        ttl: Duration::from_secs(30),
        owner: None,
        metadata: None,
        body: None,
    };
    match waiters.acquire(request, Duration::ZERO).await {
        Ok(AcquireOutcome::Held(lock)) => assert_eq!(lock.fence, holder),
        other => panic!("expected the holder, got {other:?}"),
    }
}
