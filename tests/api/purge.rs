//! Cleanup by DynamoDB's TTL (`FENCELOCK_RECLAIM_BY=ttl`): what each write says of
//! when its record may go (`purge_at`), the marks that keep a record with a body or a
//! disabled name, and DynamoDB Local's TTL deleting what may go. The servers here
//! purge 1 s after a write, where a real one waits the reclaim delay and the
//! longest lease on top.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fencelock::domain::LockName;
use fencelock::store::Marked;

use crate::helpers::{Options, TestApp};

const PURGE_AFTER: Duration = Duration::from_secs(1);
/// What the marks hold a record to: a time DynamoDB's TTL never reaches.
const FOREVER: i64 = 1_000_000_000_000;

fn purging() -> Options {
    Options {
        purge_after: Some(PURGE_AFTER),
        ..Options::default()
    }
}

/// A server leaving cleanup to TTL, on a table whose TTL is on.
async fn ttl_server() -> TestApp {
    let app = TestApp::spawn_with(purging()).await;
    app.store().await.check_ttl(true).await.unwrap();
    app
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Whether DynamoDB Local deleted `name` within `within` (it does so within seconds
/// of `purge_at`; AWS within days).
async fn deleted_within(app: &TestApp, name: &str, within: Duration) -> bool {
    let raw = app.raw();
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if !raw.exists(name).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test]
async fn a_released_record_without_a_body_is_deleted_by_ttl_and_its_name_starts_above_its_fences() {
    let app = ttl_server().await;
    let fence = app.acquire("job", "n1", "&ttl=5s").await.fence();
    assert!(app.release("job", fence).await.status.is_success());
    let purge_at = app.raw().get_number("job", "purge_at").await.unwrap();
    let now = now_secs();
    assert!(
        (now..=now + 3).contains(&purge_at),
        "purge_at {purge_at}, now {now}"
    );
    assert!(deleted_within(&app, "job", Duration::from_secs(20)).await);
    let again = app.acquire("job", "n2", "").await.fence();
    assert!(again > fence, "{again} after {fence}");
}

#[tokio::test]
async fn a_record_with_a_body_is_kept_whatever_its_age_and_let_go_once_the_body_is_empty() {
    let app = ttl_server().await;
    let raw = app.raw();
    let fence = app.acquire("kept", "n1", "&ttl=5s").await.fence();
    assert!(
        app.update("kept", fence, "step 7")
            .await
            .status
            .is_success()
    );
    assert_eq!(raw.get_number("kept", "hold_body").await, Some(FOREVER));
    // A release does not know the body; the mark keeps the record all the same.
    app.release("kept", fence).await;
    assert!(raw.get_number("kept", "purge_at").await.unwrap() >= FOREVER);
    assert!(!deleted_within(&app, "kept", Duration::from_secs(4)).await);

    let acquired = app.acquire("kept", "n2", "&ttl=5s").await;
    assert_eq!(acquired.json["body"], "step 7", "the body survived");
    let fence = acquired.fence();
    assert!(app.update("kept", fence, "").await.status.is_success());
    assert_eq!(raw.get_number("kept", "hold_body").await, None);
    app.release("kept", fence).await;
    assert!(deleted_within(&app, "kept", Duration::from_secs(20)).await);
}

#[tokio::test]
async fn a_disabled_name_is_kept_until_it_is_enabled() {
    let app = ttl_server().await;
    let store = app.store().await.with_purge_after(PURGE_AFTER);
    let name = LockName::parse("off").unwrap();
    assert!(matches!(
        store.disable(&name, "ops", None).await.unwrap(),
        Marked::Changed(_)
    ));
    assert_eq!(
        app.raw().get_number("off", "hold_disabled").await,
        Some(FOREVER)
    );
    assert!(!deleted_within(&app, "off", Duration::from_secs(4)).await);
    assert!(matches!(
        store.enable(&name).await.unwrap(),
        Marked::Changed(_)
    ));
    assert_eq!(app.raw().get_number("off", "hold_disabled").await, None);
    assert!(deleted_within(&app, "off", Duration::from_secs(20)).await);
}

#[tokio::test]
async fn a_body_written_before_ttl_cleanup_gets_its_mark_at_the_next_write() {
    // Written by a server that reclaims by scans: no marks, no purge_at.
    let scan = TestApp::spawn().await;
    scan.store().await.check_ttl(true).await.unwrap();
    let raw = scan.raw();
    let fence = scan.acquire("legacy", "n1", "&ttl=10s").await.fence();
    assert!(
        scan.update("legacy", fence, "state")
            .await
            .status
            .is_success()
    );
    assert_eq!(raw.get_number("legacy", "hold_body").await, None);

    // A server that leaves cleanup to TTL renews it: the body's mark is written.
    let ttl = scan.another_instance_with(purging()).await;
    assert!(ttl.heartbeat("legacy", fence).await.status.is_success());
    assert_eq!(raw.get_number("legacy", "hold_body").await, Some(FOREVER));
    assert!(raw.get_number("legacy", "purge_at").await.unwrap() >= FOREVER);
    ttl.release("legacy", fence).await;
    assert!(!deleted_within(&ttl, "legacy", Duration::from_secs(4)).await);

    // Back on a server reclaiming by scans, a write takes purge_at away.
    let fence = scan.acquire("legacy", "n2", "").await.fence();
    assert_eq!(raw.get_number("legacy", "purge_at").await, None);
    scan.release("legacy", fence).await;
    assert!(!deleted_within(&scan, "legacy", Duration::from_secs(3)).await);
}
