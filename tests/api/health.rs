//! Lock health: how long locks are held, how long acquires wait, how much of the lease
//! is left at each heartbeat, takeovers by namespace, and the acquire's answer that
//! says it took over from a holder whose lease ran out.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{SKEW, TestApp};
use crate::metrics::{histogram, scrape, value};

#[tokio::test]
async fn an_acquire_that_takes_over_an_expired_lease_says_so_and_is_counted_by_namespace() {
    let app = TestApp::spawn().await;
    let body = r#"{"nonce": "crashed", "ttl": "10s", "owner": "nightly on db1"}"#;
    let take = || app.call(reqwest::Method::POST, "/locks/billing:nightly", Some(body));
    let old = app
        .call(reqwest::Method::POST, "/locks/billing:nightly", Some(body))
        .await;
    let old_fence = old.fence();
    app.update("billing:nightly", old_fence, "copied 3 of 7")
        .await;

    // A fresh lock and a re-acquire by the holder's own nonce take nothing over.
    assert!(old.json.get("tookOver").is_none(), "{}", old.json);
    let again = take().await;
    assert!(again.json.get("tookOver").is_none(), "{}", again.json);

    app.clock
        .advance(Duration::from_secs(10) + SKEW + Duration::from_millis(10));
    let next = app.acquire("billing:nightly", "next", "").await;
    assert_eq!(next.status, StatusCode::OK);
    let took_over = &next.json["tookOver"];
    assert_eq!(
        took_over["fence"].as_u64(),
        Some(again.fence()),
        "{}",
        next.json
    );
    assert_eq!(took_over["owner"], "nightly on db1");
    assert_eq!(took_over["expireTime"], again.json["expireTime"]);
    assert_eq!(
        next.json["body"], "copied 3 of 7",
        "the predecessor's progress"
    );
    // Only the acquire's answer says it.
    assert!(
        app.status("billing:nightly")
            .await
            .json
            .get("tookOver")
            .is_none()
    );

    // After a release there is nothing to take over.
    app.release("billing:nightly", next.fence()).await;
    assert!(
        app.acquire("billing:nightly", "third", "")
            .await
            .json
            .get("tookOver")
            .is_none()
    );

    let metrics = scrape(&app).await;
    let by_namespace = "fencelock_expired_takeovers_by_namespace_total";
    assert_eq!(
        value(&metrics, by_namespace, &[("namespace", "billing")]),
        1.0
    );
    assert_eq!(
        value(&metrics, "fencelock_expired_takeovers_total", &[]),
        1.0
    );
}

#[tokio::test]
async fn hold_time_is_observed_at_release_and_at_the_end_of_a_lease_taken_over() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "&ttl=1m").await.fence();
    app.clock.advance(Duration::from_secs(30));
    app.release("job", fence).await;
    let metrics = scrape(&app).await;
    let count = |le: &str| {
        histogram(
            &metrics,
            "fencelock_hold_seconds",
            "_bucket",
            &[("kind", "lock"), ("le", le)],
        )
    };
    // 30 s falls in the bucket above 25.6 s and up to 102.4 s.
    assert_eq!((count("25.6"), count("102.4")), (0.0, 1.0));
    let sum = histogram(
        &metrics,
        "fencelock_hold_seconds",
        "_sum",
        &[("kind", "lock")],
    );
    assert!((30.0..31.0).contains(&sum), "{sum}");

    // A lease taken over counts from its grant to its end: its whole ttl.
    app.acquire("other", "b", "&ttl=5s").await;
    app.clock
        .advance(Duration::from_secs(5) + SKEW + Duration::from_millis(10));
    app.acquire("other", "c", "").await;
    let metrics = scrape(&app).await;
    let count = histogram(
        &metrics,
        "fencelock_hold_seconds",
        "_count",
        &[("kind", "lock")],
    );
    let sum = histogram(
        &metrics,
        "fencelock_hold_seconds",
        "_sum",
        &[("kind", "lock")],
    );
    assert_eq!(count, 2.0);
    assert!((35.0..36.0).contains(&sum), "{sum}");
}

#[tokio::test]
async fn the_lease_left_at_each_heartbeat_warns_of_a_holder_that_renews_late() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "&ttl=10s").await.fence();
    // On time: a third of the lease gone, two thirds left.
    app.clock.advance(Duration::from_millis(3_300));
    app.heartbeat("job", fence).await;
    // Late: 8.5 s of 10 gone, 15 % left.
    app.clock.advance(Duration::from_millis(8_500));
    assert_eq!(app.heartbeat("job", fence).await.status, StatusCode::OK);
    let metrics = scrape(&app).await;
    let at_most = |le: &str| {
        histogram(
            &metrics,
            "fencelock_heartbeat_lease_left_ratio",
            "_bucket",
            &[("kind", "lock"), ("le", le)],
        )
    };
    assert_eq!((at_most("0.1"), at_most("0.2")), (0.0, 1.0), "the late one");
    assert_eq!(
        (at_most("0.5"), at_most("0.8")),
        (1.0, 2.0),
        "and the one on time"
    );
}

#[tokio::test]
async fn acquires_are_timed_by_outcome() {
    let app = TestApp::spawn().await;
    app.acquire("job", "a", "&ttl=1m").await;
    assert_eq!(
        app.acquire("job", "b", "").await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.acquire("job", "c", "&wait=200ms").await.status,
        StatusCode::CONFLICT
    );
    let metrics = scrape(&app).await;
    let count = |outcome: &str| {
        histogram(
            &metrics,
            "fencelock_acquire_wait_seconds",
            "_count",
            &[("kind", "lock"), ("outcome", outcome)],
        )
    };
    assert_eq!((count("granted"), count("held")), (1.0, 2.0));
    // The waiting one waited its 200 ms: it is not in the buckets below that.
    let quick = histogram(
        &metrics,
        "fencelock_acquire_wait_seconds",
        "_bucket",
        &[("kind", "lock"), ("outcome", "held"), ("le", "0.128")],
    );
    assert_eq!(quick, 1.0, "only the try-lock answered within 128 ms");
}

#[tokio::test]
async fn run_says_when_it_took_over_and_hands_the_predecessors_fence_to_its_command() {
    let app = TestApp::spawn().await;
    let old = app.acquire("job", "crashed", "&ttl=1s").await.fence();
    app.clock
        .advance(Duration::from_secs(1) + SKEW + Duration::from_millis(10));
    let run = crate::helpers::fencelock_cli(
        &app.base,
        &[
            "run",
            "job",
            "--",
            "sh",
            "-c",
            "echo \"$FENCELOCK_TOOK_OVER\"",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.trim(), old.to_string());
    assert!(
        run.stderr
            .contains(&format!("took \"job\" over from fence {old}")),
        "{run:?}"
    );
    // A lock released before is taken over from nobody.
    let again = crate::helpers::fencelock_cli(
        &app.base,
        &[
            "run",
            "job",
            "--",
            "sh",
            "-c",
            "echo \"[$FENCELOCK_TOOK_OVER]\"",
        ],
    )
    .await;
    assert_eq!(again.stdout.trim(), "[]", "{again:?}");
}
