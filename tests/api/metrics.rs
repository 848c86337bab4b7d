//! /metrics: parsed as a Prometheus scrape, counting exactly the requests made.

use std::sync::Arc;
use std::time::Duration;

use prom_text_format_parser::{Scrape, ValueType};
use reqwest::StatusCode;

use crate::helpers::{SKEW, TestApp};

pub async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The body is the Prometheus text format, and says so: a scraper that reads it
    // as OpenMetrics would refuse it (no `# EOF`).
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    Scrape::parse(&text).unwrap_or_else(|e| panic!("not a Prometheus scrape ({e:?}):\n{text}"))
}

/// The sum of the samples of `metric` whose labels include `labels`.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sum(scrape, metric, labels, |_| true)
}

/// The part (`_bucket`, `_sum` or `_count`) of histogram `name` whose labels include
/// `labels`, summed over its series.
pub fn histogram(scrape: &Scrape, name: &str, part: &str, labels: &[(&str, &str)]) -> f64 {
    let part = match part {
        "_bucket" => ValueType::Sample,
        "_sum" => ValueType::Sum,
        _ => ValueType::Count,
    };
    sum(scrape, name, labels, |kind| kind == part)
}

fn sum(
    scrape: &Scrape,
    metric: &str,
    labels: &[(&str, &str)],
    part: impl Fn(ValueType) -> bool,
) -> f64 {
    scrape
        .metrics
        .iter()
        .filter(|m| m.name == metric)
        .flat_map(|m| &m.samples)
        .filter(|s| part(s.value.value_type))
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|l| l.key == *k && l.value == *v))
        })
        .map(|s| s.value.value.as_f64())
        .sum()
}

pub fn dynamodb(scrape: &Scrape, operation: &str, outcome: &str) -> f64 {
    value(
        scrape,
        "fencelock_dynamodb_requests_total",
        &[("operation", operation), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn each_lock_operation_is_one_dynamodb_request_and_is_counted() {
    let app = TestApp::spawn().await;
    let before = scrape(&app).await;
    assert_eq!(
        value(&before, "fencelock_dynamodb_requests_total", &[]),
        0.0
    );

    let fence = app.acquire("job", "a", "").await.fence();
    assert_eq!(app.acquire("job", "b", "").await.code(), "lock_held");
    app.heartbeat("job", fence).await;
    app.update("job", fence, "step 1").await;
    app.status("job").await;
    app.release("job", fence).await;

    let after = scrape(&app).await;
    assert_eq!(
        value(&after, "fencelock_dynamodb_requests_total", &[]),
        6.0,
        "6 operations"
    );
    for (operation, outcome) in [
        ("acquire", "granted"),
        ("acquire", "conflict"),
        ("heartbeat", "granted"),
        ("update", "granted"),
        ("read", "granted"),
        ("release", "granted"),
    ] {
        assert_eq!(
            dynamodb(&after, operation, outcome),
            1.0,
            "{operation} {outcome}"
        );
    }
    let posts = [("route", "/locks/{name}"), ("method", "POST")];
    let ok = value(
        &after,
        "fencelock_http_requests_total",
        &[posts[0], posts[1], ("status", "200")],
    );
    let held = value(
        &after,
        "fencelock_http_requests_total",
        &[posts[0], posts[1], ("status", "409")],
    );
    assert_eq!((ok, held), (1.0, 1.0));
    for (metric, expected) in [
        ("fencelock_locks_granted_total", 1.0),
        ("fencelock_lock_conflicts_total", 1.0),
        ("fencelock_heartbeats_total", 1.0),
        ("fencelock_releases_total", 1.0),
        ("fencelock_expired_takeovers_total", 0.0),
    ] {
        assert_eq!(value(&after, metric, &[]), expected, "{metric}");
    }
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("lock=\"job\"") && !text.contains("\"job\""),
        "lock names leak into labels"
    );
}

#[tokio::test]
async fn takeovers_and_waiters_are_counted() {
    let app = Arc::new(TestApp::spawn().await);
    app.acquire("crashed", "a", "&ttl=1s").await;
    app.clock
        .advance(Duration::from_secs(1) + SKEW + Duration::from_millis(1));
    assert_eq!(app.acquire("crashed", "b", "").await.status, StatusCode::OK);
    assert_eq!(
        value(
            &scrape(&app).await,
            "fencelock_expired_takeovers_total",
            &[]
        ),
        1.0
    );

    let fence = app.acquire("job", "holder", "&ttl=60s").await.fence();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { app.acquire("job", "waiter", "&wait=15s").await })
    };
    let mut waiting = 0.0;
    for _ in 0..50 {
        waiting = value(&scrape(&app).await, "fencelock_waiters", &[]);
        if waiting == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting, 1.0);
    app.release("job", fence).await;
    assert_eq!(waiter.await.unwrap().status, StatusCode::OK);
    assert_eq!(value(&scrape(&app).await, "fencelock_waiters", &[]), 0.0);
}
