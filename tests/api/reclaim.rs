//! Reclaiming stale records: released or expired, with an empty body, and only those.

use std::time::Duration;

use reqwest::StatusCode;

use fencelock::store::Sweep;

use crate::helpers::{Options, SKEW, TestApp};

/// Waits (at most 40 s) for the sweeper to delete `name`.
pub async fn until_gone(app: &TestApp, name: &str) {
    for _ in 0..400 {
        if app.status(name).await.status == StatusCode::NOT_FOUND {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} was not reclaimed within 40 s: {:?}",
        app.status(name).await
    );
}

#[tokio::test]
async fn only_stale_records_with_empty_bodies_are_reclaimed() {
    let app = TestApp::spawn_with(Options {
        reclaim_after: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .await;
    let released = app.acquire("released-empty", "n", "").await.fence();
    app.release("released-empty", released).await;
    app.acquire("expired-empty", "n", "&ttl=1s").await;
    let kept = app.acquire("released-with-body", "n", "").await.fence();
    app.update("released-with-body", kept, "rollforward").await;
    app.release("released-with-body", kept).await;
    let crashed = app
        .acquire("expired-with-body", "n", "&ttl=1s")
        .await
        .fence();
    app.update("expired-with-body", crashed, "rollback").await;
    app.acquire("held", "n", "&ttl=1h").await;

    // Ten seconds on: past the reclaim delay, the skew margin and every short lease.
    app.clock.advance(Duration::from_secs(10));
    until_gone(&app, "released-empty").await;
    until_gone(&app, "expired-empty").await;

    for (name, body) in [
        ("released-with-body", "rollforward"),
        ("expired-with-body", "rollback"),
        ("held", ""),
    ] {
        let status = app.status(name).await;
        assert_eq!(status.status, StatusCode::OK, "{name} was reclaimed");
        assert_eq!(status.json["body"], body);
    }
}

/// One sweep, called directly, deletes exactly what is stale by the delay it is given.
#[tokio::test]
async fn a_sweep_reclaims_nothing_before_the_delay_and_everything_stale_after() {
    let app = TestApp::spawn().await;
    let store = app.store().await;
    let day = Duration::from_secs(86_400);
    let fence = app.acquire("released", "n", "").await.fence();
    app.release("released", fence).await;
    app.acquire("expired", "n", "&ttl=1s").await;

    app.clock.advance(day / 2);
    assert_eq!(
        store.reclaim_stale(day).await.unwrap(),
        Sweep {
            found: 0,
            deleted: 0
        }
    );
    assert_eq!(app.status("released").await.status, StatusCode::OK);

    // A record acquired again is no longer stale, whatever its past.
    app.acquire("released", "again", "&ttl=1h").await;
    app.clock.advance(day);
    assert_eq!(
        store.reclaim_stale(day).await.unwrap(),
        Sweep {
            found: 1,
            deleted: 1
        }
    );
    assert_eq!(app.status("expired").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.status("released").await.status, StatusCode::OK);
}

/// A record that a waiting lock group has reserved is kept while the reservation is
/// live, stale as it may be: deleting it would drop the reservation.
#[tokio::test]
async fn a_reserved_record_is_kept_until_its_reservation_ends() {
    let app = TestApp::spawn().await;
    let store = app.store().await;
    let fence = app.acquire("reserved", "n", "").await.fence();
    app.release("reserved", fence).await;
    let name = fencelock::domain::LockName::parse("reserved").unwrap();
    let group = fencelock::domain::Nonce::parse("group").unwrap();
    assert_eq!(
        store
            .reserve_group(std::slice::from_ref(&name), &group)
            .await
            .unwrap(),
        1
    );

    let nothing = Sweep {
        found: 0,
        deleted: 0,
    };
    assert_eq!(store.reclaim_stale(Duration::ZERO).await.unwrap(), nothing);
    app.clock.advance(fencelock::store::RESERVATION + SKEW);
    assert_eq!(
        store.reclaim_stale(Duration::ZERO).await.unwrap(),
        Sweep {
            found: 1,
            deleted: 1
        }
    );
}

/// A disabled name's record is kept however long ago its last lease ended: deleting
/// it would enable the name.
#[tokio::test]
async fn a_disabled_record_is_kept() {
    let app = TestApp::spawn().await;
    let store = app.store().await;
    let name = fencelock::domain::LockName::parse("off").unwrap();
    let fence = app.acquire("off", "n", "").await.fence();
    app.release("off", fence).await;
    store.disable(&name, "test", None).await.unwrap();
    app.clock.advance(Duration::from_secs(3600));
    let nothing = Sweep {
        found: 0,
        deleted: 0,
    };
    assert_eq!(store.reclaim_stale(Duration::ZERO).await.unwrap(), nothing);
    store.enable(&name).await.unwrap();
    assert_eq!(
        store.reclaim_stale(Duration::ZERO).await.unwrap(),
        Sweep {
            found: 1,
            deleted: 1
        }
    );
}
