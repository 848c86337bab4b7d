//! What each operation costs in DynamoDB capacity units, as DynamoDB Local reports it
//! (`fencelock_dynamodb_capacity_units_total`, source `reported`) or, for a refused
//! conditional write that DynamoDB bills without reporting, as fencelock computes it
//! from the item's size (source `computed`).

use reqwest::Method;
use serde_json::json;

use crate::helpers::TestApp;
use crate::metrics::{scrape, value};

const UNITS: &str = "fencelock_dynamodb_capacity_units_total";

/// The capacity units counted so far, of `unit`, by operation label and source.
async fn units(app: &TestApp, unit: &str, operation: &str, source: &str) -> f64 {
    value(
        &scrape(app).await,
        UNITS,
        &[("unit", unit), ("operation", operation), ("source", source)],
    )
}

/// The write and read units (every operation and source) that `action` cost.
async fn cost<F: std::future::Future>(app: &TestApp, action: F) -> (f64, f64) {
    let before = scrape(app).await;
    action.await;
    let after = scrape(app).await;
    let delta =
        |unit| value(&after, UNITS, &[("unit", unit)]) - value(&before, UNITS, &[("unit", unit)]);
    (delta("write"), delta("read"))
}

#[tokio::test]
async fn each_lock_operation_costs_one_unit_of_a_small_record() {
    let app = TestApp::spawn().await;
    let acquired = app.acquire("job", "n1", "&ttl=10s").await;
    let fence = acquired.fence();
    assert_eq!(units(&app, "write", "acquire", "reported").await, 1.0);
    assert_eq!(
        cost(&app, app.heartbeat("job", fence)).await,
        (1.0, 0.0),
        "heartbeat"
    );
    let update = app.update("job", fence, "checkpoint 7");
    assert_eq!(cost(&app, update).await, (1.0, 0.0), "update");
    assert_eq!(cost(&app, app.status("job")).await, (0.0, 1.0), "status");

    // A refused acquire is billed too, though DynamoDB's answer says nothing of it.
    assert_eq!(
        cost(&app, app.acquire("job", "n2", "")).await,
        (1.0, 0.0),
        "refused"
    );
    assert_eq!(units(&app, "write", "acquire", "computed").await, 1.0);

    assert_eq!(
        cost(&app, app.release("job", fence)).await,
        (1.0, 0.0),
        "release"
    );
}

#[tokio::test]
async fn a_heartbeat_pays_for_the_record_and_not_for_a_long_body() {
    let app = TestApp::spawn().await;
    // DynamoDB bills an update on the larger of the item before and after, so a body
    // kept in the record would make each heartbeat cost n + 1 units for n KiB. A body
    // over 512 bytes is kept in an item of its own, and the record stays under 1 KB.
    for kib in [0, 1, 16, 64] {
        let name = format!("body-{kib}");
        let fence = app.acquire(&name, "n1", "&ttl=10s").await.fence();
        if kib > 0 {
            let body = "x".repeat(kib * 1024);
            let updated = app.update(&name, fence, &body).await;
            assert!(updated.status.is_success(), "{updated:?}");
        }
        // The server that wrote the body answers with it from memory: no read.
        assert_eq!(
            cost(&app, app.heartbeat(&name, fence)).await,
            (1.0, 0.0),
            "a heartbeat with a body of {kib} KiB"
        );
        assert_eq!(
            cost(&app, app.release(&name, fence)).await,
            (1.0, 0.0),
            "a release with a body of {kib} KiB"
        );
    }
}

#[tokio::test]
async fn writing_a_long_body_and_reading_it_elsewhere_cost_what_the_cost_page_says() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "n1", "&ttl=10s").await.fence();
    let body = "x".repeat(64 * 1024);
    // One strongly consistent read of the record (1 unit), and one transaction of the
    // record's update and the body item's put: 2 write units per KB of each item,
    // 2 × (1 + 65).
    let (write, read) = cost(&app, app.update("job", fence, &body)).await;
    assert_eq!((write, read), (132.0, 1.0), "update of a 64 KiB body");
    assert_eq!(units(&app, "read", "update_read", "reported").await, 1.0);
    assert_eq!(units(&app, "write", "update_body", "reported").await, 132.0);

    // A server that has not seen the body reads its item once, strongly consistent:
    // 17 units of 4 KB for 64 KiB and the item's key and id; then it remembers it.
    let other = app.another_instance().await;
    assert_eq!(
        cost(&other, other.heartbeat("job", fence)).await,
        (1.0, 17.0),
        "a first heartbeat elsewhere"
    );
    assert_eq!(
        cost(&other, other.heartbeat("job", fence)).await,
        (1.0, 0.0),
        "the next one"
    );
}

#[tokio::test]
async fn a_semaphore_slot_and_a_group_cost_what_their_requests_bill() {
    let app = TestApp::spawn().await;
    let acquire = app.call(Method::POST, "/semaphores/pool?nonce=s1&limit=4", None);
    let (written, read) = cost(&app, acquire).await;
    assert_eq!(
        (written, read),
        (1.0, 0.0),
        "a first slot: one write, no read"
    );

    // A group of three: a transaction of three writes of small records, then one
    // strongly consistent read of the three. DynamoDB bills a transactional write
    // two units per item and KB, so 6 here; DynamoDB Local reports 2 for the whole
    // transaction, and fencelock counts what is reported (docs/cost.md says so).
    let names = json!({"names": ["g-a", "g-b", "g-c"]}).to_string();
    let before = scrape(&app).await;
    let group = app
        .call(Method::POST, "/lock-groups?nonce=g1", Some(&names))
        .await;
    assert!(group.status.is_success(), "{group:?}");
    let after = scrape(&app).await;
    let delta = |unit, op| {
        value(&after, UNITS, &[("unit", unit), ("operation", op)])
            - value(&before, UNITS, &[("unit", unit), ("operation", op)])
    };
    assert_eq!(delta("write", "group_acquire"), 2.0);
    assert_eq!(delta("read", "group_read"), 3.0);
}
