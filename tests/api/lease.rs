//! Heartbeat and body updates: extending a lease, keeping the recovery value.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::helpers::{SKEW, TestApp};

#[tokio::test]
async fn heartbeat_extends_the_lease_by_its_ttl() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "&ttl=10s").await.fence();
    app.clock.advance(Duration::from_secs(8));
    let beat = app.heartbeat("job", fence).await;
    assert_eq!(beat.status, StatusCode::OK, "{beat:?}");
    assert_eq!(beat.fence(), fence);
    assert_eq!(beat.json["ttl"], "10s");
    // Past the first lease's end, the heartbeat keeps it held.
    app.clock.advance(Duration::from_secs(8));
    assert_eq!(app.check_fence("job", fence).await.status, StatusCode::OK);
    app.clock.advance(Duration::from_secs(3));
    assert_eq!(app.check_fence("job", fence).await.code(), "lease_expired");
}

#[tokio::test]
async fn heartbeat_with_a_ttl_changes_the_lease_length() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "&ttl=2s").await.fence();
    let beat = app
        .call(
            Method::PUT,
            &format!("/locks/job/{fence}/heartbeat?ttl=90s"),
            None,
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{beat:?}");
    assert_eq!(beat.json["ttl"], "90s");
    // Later heartbeats keep the new length.
    assert_eq!(app.heartbeat("job", fence).await.json["ttl"], "90s");
}

#[tokio::test]
async fn a_retried_heartbeat_and_update_have_the_effect_of_one() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "").await.fence();
    for _ in 0..2 {
        assert_eq!(app.heartbeat("job", fence).await.status, StatusCode::OK);
        let update = app.update("job", fence, "step-3").await;
        assert_eq!(update.status, StatusCode::OK);
        assert_eq!(update.json["body"], "step-3");
    }
    let status = app.status("job").await;
    assert_eq!(
        (status.fence(), status.json["body"].as_str()),
        (fence, Some("step-3"))
    );
}

#[tokio::test]
async fn heartbeat_by_a_stale_fence_is_refused() {
    let app = TestApp::spawn().await;
    let old = app.acquire("job", "a", "").await.fence();
    let new = app.acquire("job", "a", "").await.fence();
    let reply = app.heartbeat("job", old).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "fence_mismatch");
    let error = reply.json["error"].as_str().unwrap();
    let expected = format!(
        "fence {old} does not hold lock \"job\": its current fence is {new}; acquire the lock again for a new fence"
    );
    assert_eq!(error, expected);
    let unknown = app.update("job", new + 1, "x").await;
    assert_eq!(unknown.code(), "fence_mismatch");
    assert_eq!(app.status("job").await.json["body"], "");
}

#[tokio::test]
async fn heartbeat_after_the_lease_ran_out_is_refused() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "&ttl=1s").await.fence();
    app.clock.advance(Duration::from_millis(1001));
    let reply = app.heartbeat("job", fence).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "lease_expired");
    let update = app.update("job", fence, "late").await;
    assert_eq!(update.code(), "lease_expired");
    let status = app.status("job").await;
    assert_eq!(status.json["held"], false);
    assert_eq!(status.json["body"], "");
}

#[tokio::test]
async fn heartbeat_and_update_of_a_missing_lock_answer_404() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.heartbeat("ghost", 1).await.status,
        StatusCode::NOT_FOUND
    );
    let update = app.update("ghost", 1, "x").await;
    assert_eq!(
        (update.status, update.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(app.status("ghost").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn update_sets_the_body_and_extends_the_lease() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "&ttl=10s").await.fence();
    app.clock.advance(Duration::from_secs(8));
    let reply = app.update("job", fence, "rollback").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json["body"], "rollback");
    app.clock.advance(Duration::from_secs(8));
    assert_eq!(app.check_fence("job", fence).await.status, StatusCode::OK);
}

/// glock's README: a two-phase commit across two databases, with the body saying
/// where a crashed job must pick up.
#[tokio::test]
async fn the_two_phase_commit_flow_of_the_glock_readme() {
    let app = TestApp::spawn().await;
    let lock = app.acquire("job.123", "worker-1", "").await;
    assert_eq!(lock.json["body"], "", "an empty body: no unfinished work");
    let fence = lock.fence();
    for step in ["rollback", "rollforward", ""] {
        let reply = app.update("job.123", fence, step).await;
        assert_eq!(
            (reply.status, reply.json["body"].as_str()),
            (StatusCode::OK, Some(step))
        );
    }
    assert_eq!(app.release("job.123", fence).await.json["released"], true);
}

#[tokio::test]
async fn a_crashed_holders_body_is_read_by_the_next_holder() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job.123", "worker-1", "&ttl=1s").await.fence();
    app.update("job.123", fence, "rollforward").await;
    // worker-1 dies without releasing; its lease runs out.
    app.clock
        .advance(Duration::from_secs(1) + SKEW + Duration::from_millis(1));
    let next = app.acquire("job.123", "worker-2", "").await;
    assert_eq!(next.status, StatusCode::OK, "{next:?}");
    assert!(next.fence() > fence);
    assert_eq!(next.json["body"], "rollforward");
}

#[tokio::test]
async fn the_body_survives_release_and_reacquire() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "").await.fence();
    app.update("job", fence, "checkpoint 17 ✓").await;
    app.release("job", fence).await;
    let status = app.status("job").await;
    assert_eq!(
        (status.json["held"].as_bool(), status.json["body"].as_str()),
        (Some(false), Some("checkpoint 17 ✓"))
    );
    let next = app.acquire("job", "b", "").await;
    assert_eq!(next.json["body"], "checkpoint 17 ✓");
}
