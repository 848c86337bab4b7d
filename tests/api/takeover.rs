//! Expiry and takeover across two servers on one table, with the clock-skew margin.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{SKEW, TestApp};

#[tokio::test]
async fn an_expired_lease_is_taken_over_only_after_the_skew_margin() {
    let a = TestApp::spawn().await;
    let b = a.another_instance().await;
    let old = a.acquire("job", "holder-a", "&ttl=2s").await.fence();

    // B's clock says the lease ended, but by less than the margin: still held.
    b.clock.advance(Duration::from_secs(2) + SKEW / 2);
    let early = b.acquire("job", "holder-b", "").await;
    assert_eq!(
        (early.status, early.code()),
        (StatusCode::CONFLICT, "lock_held")
    );

    // Past the margin, B takes it with a greater fence.
    b.clock.advance(SKEW);
    let taken = b.acquire("job", "holder-b", "").await;
    assert_eq!(taken.status, StatusCode::OK, "{taken:?}");
    assert!(taken.fence() > old);

    // The old holder, even on its own server whose clock says its lease is live,
    // can no longer heartbeat, write its body or release.
    assert_eq!(a.heartbeat("job", old).await.code(), "fence_mismatch");
    assert_eq!(
        a.update("job", old, "stale write").await.code(),
        "fence_mismatch"
    );
    assert_eq!(a.release("job", old).await.json["released"], false);
    let status = a.status("job").await;
    assert_eq!(
        (status.fence(), status.json["body"].as_str()),
        (taken.fence(), Some(""))
    );
}

#[tokio::test]
async fn a_live_lease_cannot_be_taken_through_another_server() {
    let a = TestApp::spawn().await;
    let b = a.another_instance().await;
    let fence = a.acquire("job", "holder-a", "").await.fence();
    let reply = b.acquire("job", "holder-b", "").await;
    assert_eq!(reply.code(), "lock_held");
    // The holder may use any server.
    assert_eq!(b.heartbeat("job", fence).await.status, StatusCode::OK);
    assert_eq!(b.release("job", fence).await.json["released"], true);
    assert_eq!(
        a.acquire("job", "holder-b", "").await.status,
        StatusCode::OK
    );
}
