//! Fences never go backwards, across re-acquires, deleted records and reclaiming;
//! every response about a lock carries its fence in a `Fence` header.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Options, Reply, TestApp};

fn fence_header(reply: &Reply) -> Option<u64> {
    reply
        .headers
        .get("fence")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

#[tokio::test]
async fn thousands_of_acquisitions_have_strictly_increasing_fences() {
    let app = Arc::new(TestApp::spawn().await);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut fences = Vec::new();
                for _ in 0..250 {
                    // One nonce for all: each call re-acquires with a new fence.
                    let reply = app.acquire("hot", "shared", "").await;
                    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
                    fences.push(reply.fence());
                }
                fences
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for task in tasks {
        let fences = task.await.unwrap();
        assert!(
            fences.windows(2).all(|w| w[1] > w[0]),
            "a client saw its fences go back"
        );
        all.extend(fences);
    }
    assert_eq!(all.len(), 2000, "two acquisitions got the same fence");
}

#[tokio::test]
async fn a_record_deleted_behind_fencelocks_back_continues_above_its_fences() {
    let app = TestApp::spawn().await;
    let mut last = 0;
    for i in 0..5 {
        last = app.acquire("job", &format!("n{i}"), "").await.fence();
        app.release("job", last).await;
    }
    app.raw().delete("job").await;
    assert_eq!(app.status("job").await.status, StatusCode::NOT_FOUND);
    let reborn = app.acquire("job", "again", "").await;
    assert_eq!(reborn.status, StatusCode::OK);
    assert!(
        reborn.fence() > last,
        "{} is not above {last}",
        reborn.fence()
    );
}

#[tokio::test]
async fn a_reclaimed_name_continues_above_its_old_fences() {
    let app = TestApp::spawn_with(Options {
        reclaim_after: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .await;
    let mut last = 0;
    for i in 0..3 {
        last = app.acquire("job", &format!("n{i}"), "").await.fence();
        app.release("job", last).await;
    }
    app.clock.advance(Duration::from_secs(10));
    crate::reclaim::until_gone(&app, "job").await;
    let reborn = app.acquire("job", "again", "").await;
    assert!(
        reborn.fence() > last,
        "{} is not above {last}",
        reborn.fence()
    );
}

#[tokio::test]
async fn every_answer_about_a_lock_carries_its_fence() {
    let app = TestApp::spawn().await;
    let acquired = app.acquire("job", "a", "").await;
    let fence = acquired.fence();
    assert_eq!(fence_header(&acquired), Some(fence));
    assert_eq!(fence_header(&app.status("job").await), Some(fence));
    assert_eq!(
        fence_header(&app.heartbeat("job", fence).await),
        Some(fence)
    );
    assert_eq!(
        fence_header(&app.update("job", fence, "x").await),
        Some(fence)
    );
    assert_eq!(
        fence_header(&app.check_fence("job", fence).await),
        Some(fence)
    );
    // Conflicts carry the current fence, which tells a stale holder it lost the lock.
    assert_eq!(
        fence_header(&app.acquire("job", "b", "").await),
        Some(fence)
    );
    let stale = app.check_fence("job", fence - 1).await;
    assert_eq!(
        (stale.code(), fence_header(&stale)),
        ("fence_mismatch", Some(fence))
    );
    assert_eq!(fence_header(&app.release("job", fence).await), Some(fence));
    let released = app.heartbeat("job", fence).await;
    assert_eq!(
        (released.code(), fence_header(&released)),
        ("lease_expired", Some(fence))
    );
    // No lock, no fence.
    assert_eq!(fence_header(&app.status("ghost").await), None);

    let gorilla = app
        .call(
            Method::POST,
            "/api/v1/locks/orders",
            Some(&json!({"owner": "w"}).to_string()),
        )
        .await;
    assert_eq!(fence_header(&gorilla), gorilla.json["id"].as_u64());
}
