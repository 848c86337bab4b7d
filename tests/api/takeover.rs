//! Expiry and takeover across two servers on one table, with the clock-skew margin.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{Options, SKEW, TestApp};

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

#[tokio::test]
async fn lock_delay_holds_an_unreleased_lease_past_its_end() {
    let delay = Duration::from_secs(10);
    let a = TestApp::spawn_with(Options {
        lock_delay: delay,
        ..Options::default()
    })
    .await;
    let crashed = a.acquire("job", "crashed", "&ttl=1s").await.fence();
    a.clock
        .advance(Duration::from_secs(1) + SKEW + Duration::from_millis(1));
    let early = a.acquire("job", "next", "").await;
    assert_eq!(
        (early.status, early.code()),
        (StatusCode::CONFLICT, "lock_held")
    );
    let retry_after: u64 = early.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=10).contains(&retry_after),
        "Retry-After {retry_after} ignores the delay"
    );
    a.clock.advance(delay);
    let taken = a.acquire("job", "next", "").await;
    assert_eq!(taken.status, StatusCode::OK, "{taken:?}");
    assert!(taken.fence() > crashed);
}

#[tokio::test]
async fn lock_delay_does_not_hold_a_released_lock() {
    let a = TestApp::spawn_with(Options {
        lock_delay: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let fence = a.acquire("job", "done", "").await.fence();
    a.release("job", fence).await;
    assert_eq!(a.acquire("job", "next", "").await.status, StatusCode::OK);
    // The holder itself may take its lock back during the delay.
    let own = a.acquire("own", "me", "&ttl=1s").await.fence();
    a.clock.advance(Duration::from_secs(5));
    let again = a.acquire("own", "me", "").await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.fence() > own);
}
