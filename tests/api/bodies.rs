//! A body longer than 512 bytes kept in an item of its own (`body/{name}`), so that a
//! heartbeat writes only the small record: where it is kept, that every answer still
//! carries it, that nobody but the holder changes it, and that nothing deletes it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use fencelock::store::{INLINE_BODY, Sweep};

use crate::helpers::{Options, TestApp};
use crate::metrics::{dynamodb, scrape};

fn long(fill: &str, bytes: usize) -> String {
    fill.repeat(bytes.div_ceil(fill.len()))[..bytes].to_owned()
}

#[tokio::test]
async fn a_long_body_lives_in_its_own_item_and_a_short_one_comes_back_into_the_record() {
    let app = TestApp::spawn().await;
    let raw = app.raw();
    let fence = app.acquire("job", "n1", "").await.fence();

    let at_the_limit = long("a", INLINE_BODY);
    assert_eq!(app.update("job", fence, &at_the_limit).await.status, 200);
    assert_eq!(raw.get_string("job", "body").await, Some(at_the_limit));
    assert!(!raw.exists("body/job").await);

    let over = long("step 3; ", INLINE_BODY + 1);
    let updated = app.update("job", fence, &over).await;
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.json["body"], over.as_str());
    assert_eq!(raw.get_string("job", "body").await, None);
    let id = raw
        .get_string("job", "body_id")
        .await
        .expect("the record names the body's item");
    assert_eq!(
        raw.get_string("body/job", "body").await.as_deref(),
        Some(over.as_str())
    );
    assert_eq!(
        raw.get_string("body/job", "body_id").await,
        Some(id.clone())
    );
    assert_eq!(app.status("job").await.json["body"], over.as_str());

    // Another long body is another item's text, under a new id.
    let other = long("step 4; ", 4096);
    app.update("job", fence, &other).await;
    let next = raw.get_string("job", "body_id").await.unwrap();
    assert_ne!(next, id);
    assert_eq!(
        raw.get_string("body/job", "body").await.as_deref(),
        Some(other.as_str())
    );

    // Short again: back in the record, and the body's item is gone with it.
    let short = app.update("job", fence, "step 5").await;
    assert_eq!(short.status, 200, "{short:?}");
    assert_eq!(
        raw.get_string("job", "body").await.as_deref(),
        Some("step 5")
    );
    assert_eq!(raw.get_string("job", "body_id").await, None);
    assert!(!raw.exists("body/job").await);

    app.update("job", fence, &over).await;
    assert_eq!(app.update("job", fence, "").await.status, 200);
    assert_eq!(raw.get_string("job", "body").await.as_deref(), Some(""));
    assert!(!raw.exists("body/job").await);
    assert_eq!(app.status("job").await.json["body"], "");
}

#[tokio::test]
async fn every_server_answers_with_the_body_wherever_it_is_kept() {
    let app = TestApp::spawn().await;
    let body = long("rollforward to 42; ", 20 * 1024);
    let fence = app.acquire("job", "n1", "").await.fence();
    app.update("job", fence, &body).await;

    // A server that never saw the body reads it from its item.
    let other = app.another_instance().await;
    assert_eq!(other.status("job").await.json["body"], body.as_str());
    let beat = other.heartbeat("job", fence).await;
    assert_eq!(beat.status, 200, "{beat:?}");
    assert_eq!(beat.json["body"], body.as_str());
    assert_eq!(app.release("job", fence).await.json["released"], true);

    // The next holder gets it from acquire, on a third server.
    let third = app.another_instance().await;
    let next = third.acquire("job", "n2", "").await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.json["body"], body.as_str());

    // A listing on a fourth reads the bodies it lacks in one request, and lists no
    // body's item as a lock.
    for name in ["job-2", "job-3"] {
        let fence = app.acquire(name, "n1", "").await.fence();
        app.update(name, fence, &long(name, 1024)).await;
    }
    let fourth = app.another_instance().await;
    let listed = fourth.call(Method::GET, "/locks", None).await;
    let locks = listed.json["locks"].as_array().unwrap().clone();
    assert_eq!(
        crate::helpers::sorted_names(&listed.json["locks"]),
        ["job", "job-2", "job-3"]
    );
    for lock in &locks {
        let name = lock["name"].as_str().unwrap();
        let expected = if name == "job" {
            body.clone()
        } else {
            long(name, 1024)
        };
        assert_eq!(lock["body"], expected.as_str(), "{name}");
    }
    let reads = dynamodb(&scrape(&fourth).await, "body_read", "granted");
    assert_eq!(reads, 1.0, "one batch read for three bodies");
}

#[tokio::test]
async fn a_holder_that_lost_the_lock_changes_neither_the_record_nor_the_body() {
    let app = TestApp::spawn().await;
    let raw = app.raw();
    let kept = long("mine; ", 2048);
    let old = app.acquire("job", "n1", "&ttl=1s").await.fence();
    app.update("job", old, &kept).await;
    let id = raw.get_string("job", "body_id").await.unwrap();

    // Its lease ran out (and the skew margin after it): a long body and a short one
    // are both refused.
    app.clock.advance(Duration::from_secs(10));
    for body in [long("late; ", 4096), "late".to_owned()] {
        let late = app.update("job", old, &body).await;
        assert_eq!(late.status, StatusCode::CONFLICT, "{late:?}");
        assert_eq!(late.code(), "lease_expired");
    }
    // Another holder took it: refused by fence.
    let new = app.acquire("job", "n2", "").await;
    assert_eq!(new.status, 200, "{new:?}");
    assert_eq!(new.json["body"], kept.as_str());
    let stale = app.update("job", old, &long("stale; ", 4096)).await;
    assert_eq!(stale.code(), "fence_mismatch", "{stale:?}");

    assert_eq!(raw.get_string("job", "body_id").await, Some(id));
    assert_eq!(raw.get_string("body/job", "body").await, Some(kept.clone()));
    assert_eq!(app.status("job").await.json["body"], kept.as_str());
}

#[tokio::test]
async fn updates_and_heartbeats_of_one_holder_at_once_all_land() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "n1", "").await.fence();
    let mut calls = Vec::new();
    for i in 0..8 {
        let app = &app;
        calls.push(async move {
            let body = long(&format!("update {i}; "), 1024 + i);
            let (updated, beat) =
                tokio::join!(app.update("job", fence, &body), app.heartbeat("job", fence));
            (body, updated, beat)
        });
    }
    let answers = futures_util::future::join_all(calls).await;
    let mut bodies = Vec::new();
    for (body, updated, beat) in answers {
        assert_eq!(updated.status, 200, "{updated:?}");
        assert_eq!(updated.json["body"], body.as_str());
        assert_eq!(beat.status, 200, "{beat:?}");
        bodies.push(body);
    }
    // The body is one of those written, whole, in the record's item and the body's.
    let now = app.status("job").await.json["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(bodies.contains(&now));
    assert_eq!(app.raw().get_string("body/job", "body").await, Some(now));
}

#[tokio::test]
async fn the_sweeper_never_deletes_a_record_whose_body_is_kept_out() {
    let app = TestApp::spawn().await;
    let body = long("keep me; ", 1024);
    let kept = app.acquire("kept", "n", "").await.fence();
    app.update("kept", kept, &body).await;
    app.release("kept", kept).await;
    // The control: an empty record released at the same time goes.
    let empty = app.acquire("empty", "n", "").await.fence();
    app.release("empty", empty).await;

    app.clock.advance(Duration::from_secs(60));
    let swept = app
        .store()
        .await
        .reclaim_stale(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        swept,
        Sweep {
            found: 1,
            deleted: 1
        }
    );
    assert_eq!(app.status("empty").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.status("kept").await.json["body"], body.as_str());
    assert!(app.raw().exists("body/kept").await);
}

#[tokio::test]
async fn with_cleanup_by_ttl_a_kept_body_holds_its_record_for_ever() {
    let app = TestApp::spawn_with(Options {
        purge_after: Some(Duration::from_secs(60)),
        ..Options::default()
    })
    .await;
    let fence = app.acquire("job", "n", "").await.fence();
    app.update("job", fence, &long("x", 2048)).await;
    let raw = app.raw();
    let forever = 1_000_000_000_000;
    assert_eq!(raw.get_number("job", "hold_body").await, Some(forever));
    assert!(raw.get_number("job", "purge_at").await.unwrap() >= forever);
    // The body's item has no TTL time of its own.
    assert_eq!(raw.get_number("body/job", "purge_at").await, None);
    // Emptied, the record may go in time again.
    app.update("job", fence, "").await;
    assert_eq!(raw.get_number("job", "hold_body").await, None);
    assert!(raw.get_number("job", "purge_at").await.unwrap() < forever);
}

#[tokio::test]
async fn a_watcher_and_a_group_see_the_kept_body() {
    let app = TestApp::spawn().await;
    let body = long("seen; ", 3000);
    let fence = app.acquire("a", "n1", "").await.fence();
    let version = app.status("a").await.json["version"].as_u64().unwrap();
    let watched = {
        let app = &app;
        async move {
            app.call(
                Method::GET,
                &format!("/locks/a?after={version}&wait=20s"),
                None,
            )
            .await
        }
    };
    let (seen, _) = tokio::join!(watched, app.update("a", fence, &body));
    assert_eq!(seen.json["body"], body.as_str(), "{seen:?}");

    // A release leaves the body as it was for those who watch.
    let version = seen.json["version"].as_u64().unwrap();
    let path = format!("/locks/a?after={version}&wait=20s");
    let watched = app.call(Method::GET, &path, None);
    let (released, _) = tokio::join!(watched, app.release("a", fence));
    assert_eq!(released.json["held"], false, "{released:?}");
    assert_eq!(released.json["body"], body.as_str());

    let group = app
        .call(
            Method::POST,
            "/lock-groups?nonce=g1",
            Some(&json!({"names": ["a", "b"]}).to_string()),
        )
        .await;
    assert_eq!(group.status, 200, "{group:?}");
    let locks = group.json["locks"].as_array().unwrap();
    assert_eq!(locks[0]["body"], body.as_str());
    assert_eq!(locks[1]["body"], "");
}

#[tokio::test]
async fn an_election_value_proclaimed_long_is_kept_apart_and_a_campaign_puts_it_back() {
    let app = TestApp::spawn().await;
    let raw = app.raw();
    let campaign = |nonce: &'static str, value: &'static str| {
        let body = json!({ "nonce": nonce, "value": value }).to_string();
        let app = &app;
        async move {
            app.call(Method::POST, "/elections/leader", Some(&body))
                .await
        }
    };
    let elected = campaign("cand-a", "10.0.0.1:80").await;
    assert_eq!(elected.status, 200, "{elected:?}");
    let term = elected.json["leader"]["term"].as_u64().unwrap();

    let value = long("10.0.0.2:80,", 2048);
    let proclaimed = app
        .call(
            Method::POST,
            &format!("/elections/leader/{term}"),
            Some(&value),
        )
        .await;
    assert_eq!(proclaimed.status, 200, "{proclaimed:?}");
    assert_eq!(proclaimed.json["leader"]["value"], value.as_str());
    assert!(raw.get_string("election/leader", "body_id").await.is_some());
    assert!(raw.exists("body/election/leader").await);
    let other = app.another_instance().await;
    let seen = other.call(Method::GET, "/elections/leader", None).await;
    assert_eq!(seen.json["leader"]["value"], value.as_str());

    // A campaign's value goes into the record, and the record no longer names the
    // body's item.
    let again = campaign("cand-a", "10.0.0.3:80").await;
    assert_eq!(again.json["leader"]["value"], "10.0.0.3:80", "{again:?}");
    assert_eq!(raw.get_string("election/leader", "body_id").await, None);
    let seen = other.call(Method::GET, "/elections/leader", None).await;
    assert_eq!(seen.json["leader"]["value"], "10.0.0.3:80");
}

#[tokio::test]
async fn on_a_table_without_transactions_every_body_is_written_into_its_record() {
    use fencelock::domain::{Holder, LockName};
    use fencelock::store::TableKind;

    let app = TestApp::spawn().await;
    let raw = app.raw();
    let fence = app.acquire("job", "n1", "").await.fence();
    app.update("job", fence, &long("before; ", 2048)).await;
    assert!(raw.get_string("job", "body_id").await.is_some());

    // The same table, as a server that finds it a strongly consistent global table.
    let store = app
        .store()
        .await
        .on_table(TableKind::StronglyConsistentGlobal);
    let name = LockName::parse("job").unwrap();
    let holder = Holder::Fence(fence);
    let body = long("after; ", 2048);
    let updated = store
        .update_body(&name, &holder, &body, None)
        .await
        .unwrap();
    assert_eq!(updated.unwrap().body, body);
    assert_eq!(raw.get_string("job", "body").await, Some(body.clone()));
    // The record no longer names the body's item, which is read no more.
    assert_eq!(raw.get_string("job", "body_id").await, None);
    assert_eq!(app.status("job").await.json["body"], body.as_str());
    let beat = store.heartbeat(&name, &holder, None).await.unwrap();
    assert_eq!(beat.unwrap().body, body);
}
