//! Lock groups: every lock or none in one transaction, conflicts naming each holder,
//! heartbeat and release of the group, waiting without deadlock, and the single-lock
//! routes on each lock of a group.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use fencelock::api::Limits;
use fencelock::wait::Backoff;

use crate::helpers::{Options, Reply, TestApp, spawn_with_tokens};
use crate::metrics::{dynamodb, scrape, value};

async fn take_group(app: &TestApp, names: &[&str], nonce: &str, extra: &str) -> Reply {
    let body = json!({"names": names, "owner": format!("owner-{nonce}")}).to_string();
    app.call(
        Method::POST,
        &format!("/lock-groups?nonce={nonce}{extra}"),
        Some(&body),
    )
    .await
}

/// The `{"locks": [{"name", "fence"}]}` of a granted group.
fn holding(granted: &Reply) -> String {
    let locks: Vec<Value> = granted.json["locks"]
        .as_array()
        .unwrap_or_else(|| panic!("not a granted group: {granted:?}"))
        .iter()
        .map(|lock| json!({"name": lock["name"], "fence": lock["fence"]}))
        .collect();
    json!({ "locks": locks }).to_string()
}

fn fence_of(granted: &Reply, name: &str) -> u64 {
    granted.json["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|lock| lock["name"] == name)
        .and_then(|lock| lock["fence"].as_u64())
        .unwrap_or_else(|| panic!("no {name} in {granted:?}"))
}

#[tokio::test]
async fn a_group_takes_every_lock_or_none_and_names_each_holder() {
    let app = TestApp::spawn().await;
    let body = json!({"nonce": "other", "owner": "cron@b"}).to_string();
    let b = app
        .call(Method::POST, "/locks/b", Some(&body))
        .await
        .fence();
    let d = app.acquire("d", "other", "").await.fence();

    let refused = take_group(&app, &["a", "b", "c", "d"], "g1", "").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "lock_held")
    );
    assert!(refused.headers.contains_key("retry-after"), "{refused:?}");
    let held: Vec<(String, u64)> = refused.json["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["fence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(held, vec![("b".to_owned(), b), ("d".to_owned(), d)]);
    assert_eq!(refused.json["locks"][0]["owner"], "cron@b");
    let message = refused.json["error"].as_str().unwrap();
    assert!(
        message.contains("\"b\"") && message.contains("\"d\""),
        "{message}"
    );
    // Nothing was taken: the free locks of the group were not even created.
    for free in ["a", "c"] {
        assert_eq!(app.status(free).await.code(), "not_found", "{free}");
    }

    app.release("b", b).await;
    app.release("d", d).await;
    let granted = take_group(&app, &["c", "a", "b", "d"], "g1", "&ttl=45s").await;
    assert_eq!(granted.status, StatusCode::OK, "{granted:?}");
    let names: Vec<&str> = granted.json["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["c", "a", "b", "d"], "in the order asked");
    assert!(fence_of(&granted, "b") > b && fence_of(&granted, "d") > d);
    // Each lock is an ordinary lock: its own routes serve it.
    let a = fence_of(&granted, "a");
    let status = app.status("a").await;
    assert_eq!(
        (
            status.fence(),
            status.json["owner"].as_str(),
            status.json["ttl"].as_str()
        ),
        (a, Some("owner-g1"), Some("45s"))
    );
    assert_eq!(app.heartbeat("a", a).await.status, StatusCode::OK);
    assert_eq!(app.acquire("c", "other", "").await.code(), "lock_held");

    // The same nonce takes the group again, under new fences.
    let again = take_group(&app, &["a", "b", "c", "d"], "g1", "").await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert!(fence_of(&again, "a") > a);
}

#[tokio::test]
async fn a_group_heartbeat_renews_all_or_none_and_release_frees_what_it_still_holds() {
    let app = TestApp::spawn().await;
    let granted = take_group(&app, &["x", "y"], "g", "&ttl=10s").await;
    let group = holding(&granted);
    app.clock.advance(Duration::from_secs(5));
    let renewed = app
        .call(Method::POST, "/lock-groups/heartbeat?ttl=20s", Some(&group))
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{renewed:?}");
    for lock in renewed.json["locks"].as_array().unwrap() {
        assert_eq!(lock["ttl"], "20s");
        assert!(lock["expireTime"].as_str() > granted.json["locks"][0]["expireTime"].as_str());
    }

    // Y moves on to another holder: the group's heartbeat renews nothing, and says so.
    let y = fence_of(&granted, "y");
    app.release("y", y).await;
    let taken = app.acquire("y", "other", "").await.fence();
    let before = app.status("x").await.json["expireTime"].clone();
    app.clock.advance(Duration::from_secs(1));
    let refused = app
        .call(Method::POST, "/lock-groups/heartbeat", Some(&group))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "fence_mismatch")
    );
    assert_eq!(refused.json["locks"][0]["name"], "y");
    assert_eq!(refused.json["locks"][0]["fence"], taken);
    assert_eq!(
        app.status("x").await.json["expireTime"],
        before,
        "x was renewed"
    );

    // The release frees x, and leaves y to its new holder.
    let released = app
        .call(Method::POST, "/lock-groups/release", Some(&group))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{released:?}");
    assert_eq!(
        released.json["locks"],
        json!([
            {"name": "x", "released": true, "fence": fence_of(&granted, "x")},
            {"name": "y", "released": false, "fence": taken},
        ])
    );
    assert_eq!(app.status("x").await.json["held"], false);
    assert_eq!(app.status("y").await.fence(), taken);
    // A retried release answers the same.
    let again = app
        .call(Method::POST, "/lock-groups/release", Some(&group))
        .await;
    assert_eq!(again.json, released.json);
}

#[tokio::test]
async fn a_wrong_nonce_refuses_the_group_release_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let granted = take_group(&app, &["x", "y"], "g", "").await;
    let group = holding(&granted);
    let refused = app
        .call_with(
            Method::POST,
            "/lock-groups/release",
            Some(&group),
            &[("lock-nonce", "guess")],
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "not_holder")
    );
    assert_eq!(app.status("x").await.json["held"], true);
    let released = app
        .call_with(
            Method::POST,
            "/lock-groups/release",
            Some(&group),
            &[("lock-nonce", "g")],
        )
        .await;
    assert_eq!(released.json["locks"][1]["released"], true, "{released:?}");
}

#[tokio::test]
async fn bad_groups_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
    for (body, expected) in [
        (json!({"names": []}), "1 to 100"),
        (json!({"names": many}), "got 101"),
        (json!({"names": ["a", "b", "a"]}), "named twice"),
        (json!({"names": ["a", "b c"]}), "contains ' '"),
        (json!({"nonce": "n"}), "names"),
    ] {
        let reply = app
            .call(
                Method::POST,
                "/lock-groups?nonce=n",
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
        let message = reply.json["error"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let reply = app.call(Method::POST, "/lock-groups?nonce=n", None).await;
    assert!(reply.json["error"].as_str().unwrap().contains("names"));
    let reply = app
        .call(
            Method::POST,
            "/lock-groups/heartbeat",
            Some("{\"locks\": 3}"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.status("a").await.code(), "not_found");
}

#[tokio::test]
async fn a_token_needs_every_namespace_of_the_group() {
    let tokens: [(&str, &[&str], bool); 1] = [("billing-s3cret", &["billing"], false)];
    let (app, _dir) = spawn_with_tokens(&tokens, Options::default()).await;
    let bearer = [("authorization", "Bearer billing-s3cret")];
    let body = json!({"names": ["billing:a", "ops:b"]}).to_string();
    let reply = app
        .call_with(Method::POST, "/lock-groups?nonce=n", Some(&body), &bearer)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let anonymous = app
        .call(Method::POST, "/lock-groups?nonce=n", Some(&body))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let own = json!({"names": ["billing:a", "billing:b"]}).to_string();
    let reply = app
        .call_with(Method::POST, "/lock-groups?nonce=n", Some(&own), &bearer)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let status = app
        .call_with(Method::GET, "/locks/billing:a", None, &bearer)
        .await;
    assert_eq!(status.json["held"], true);
}

#[tokio::test]
async fn group_acquire_costs_a_transaction_and_a_read_and_a_refusal_only_the_transaction() {
    let app = TestApp::spawn().await;
    let granted = take_group(&app, &["a", "b", "c"], "g", "").await;
    assert_eq!(
        take_group(&app, &["c", "d"], "h", "").await.code(),
        "lock_held"
    );
    app.call(
        Method::POST,
        "/lock-groups/release",
        Some(&holding(&granted)),
    )
    .await;
    let after = scrape(&app).await;
    assert_eq!(value(&after, "fencelock_dynamodb_requests_total", &[]), 4.0);
    assert_eq!(dynamodb(&after, "group_acquire", "granted"), 1.0);
    assert_eq!(dynamodb(&after, "group_read", "granted"), 1.0);
    assert_eq!(dynamodb(&after, "group_acquire", "conflict"), 1.0);
    assert_eq!(dynamodb(&after, "group_release", "granted"), 1.0);
    let kind = [("kind", "group")];
    assert_eq!(value(&after, "fencelock_grants_total", &kind), 1.0);
    assert_eq!(value(&after, "fencelock_conflicts_total", &kind), 1.0);
}

#[tokio::test]
async fn a_waiting_group_is_granted_once_its_last_lock_is_released() {
    let app = Arc::new(TestApp::spawn().await);
    let a = app.acquire("a", "x", "").await.fence();
    let b = app.acquire("b", "y", "").await.fence();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { take_group(&app, &["b", "a"], "g", "&wait=15s").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.release("a", a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "granted while b was held");
    app.release("b", b).await;
    let granted = waiter.await.unwrap();
    assert_eq!(granted.status, StatusCode::OK, "{granted:?}");
    assert!(fence_of(&granted, "a") > a && fence_of(&granted, "b") > b);
}

/// A server whose waiters retry a held lock only after 30 s: within a test's wait,
/// only a release through this server can hand a lock to a waiting group.
async fn spawn_with_slow_retries() -> TestApp {
    TestApp::spawn_with(Options {
        limits: Limits {
            wait_backoff: Backoff::fixed(Duration::from_secs(30)),
            ..Limits::default()
        },
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_release_of_any_lock_of_a_waiting_group_wakes_it() {
    // The group queues under its first name, "a"; the release of "b" must wake it too.
    for held in ["a", "b"] {
        let app = Arc::new(spawn_with_slow_retries().await);
        let fence = app.acquire(held, "holder", "&ttl=60s").await.fence();
        let waiter = {
            let app = app.clone();
            tokio::spawn(async move { take_group(&app, &["a", "b"], "g", "&wait=8s").await })
        };
        // The group's first attempt is refused; its next would come after the wait.
        until_refused_once(&app, held).await;
        let released = app.release(held, fence).await;
        assert_eq!(released.json["released"], true, "{released:?}");
        let granted = waiter.await.unwrap();
        assert_eq!(
            granted.status,
            StatusCode::OK,
            "a group waiting for {held} was not woken by its release: {granted:?}"
        );
        assert!(fence_of(&granted, held) > fence);
    }
}

/// Returns once a waiting acquire has been refused `name` on `app`: its conflict
/// counter moved.
async fn until_refused_once(app: &TestApp, name: &str) {
    for _ in 0..100 {
        let conflicts = value(
            &scrape(app).await,
            "fencelock_conflicts_total",
            &[("kind", "group")],
        );
        if conflicts >= 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no group attempt on {name} was refused");
}

/// One holding of one lock: from the grant's answer to the sending of its release.
#[derive(Debug, Clone)]
struct Holding {
    name: String,
    fence: u64,
    granted: Instant,
    released: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_groups_in_opposite_orders_and_single_locks_never_deadlock_or_overlap() {
    const CLIENTS: usize = 8;
    const GRANTS: usize = 4;
    let a = Arc::new(TestApp::spawn().await);
    let b = Arc::new(a.another_instance().await);
    let holdings = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let server = if client % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        let holdings = holdings.clone();
        clients.push(tokio::spawn(async move {
            // Groups in both orders, and a client that takes one lock alone.
            let names: &[&str] = match client % 4 {
                0 => &["p", "q", "r"],
                1 => &["r", "q", "p"],
                2 => &["q", "r"],
                _ => &["p"],
            };
            for round in 0..GRANTS {
                let nonce = format!("c{client}-{round}");
                let granted = take_group(&server, names, &nonce, "&wait=20s").await;
                assert_eq!(granted.status, StatusCode::OK, "{granted:?}");
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let end = Instant::now();
                let released = server
                    .call(
                        Method::POST,
                        "/lock-groups/release",
                        Some(&holding(&granted)),
                    )
                    .await;
                for lock in released.json["locks"].as_array().unwrap() {
                    assert_eq!(lock["released"], true, "{released:?}");
                }
                let mut seen = holdings.lock().unwrap();
                for name in names {
                    seen.push(Holding {
                        name: (*name).to_owned(),
                        fence: fence_of(&granted, name),
                        granted: start,
                        released: end,
                    });
                }
            }
        }));
    }
    for client in clients {
        tokio::time::timeout(Duration::from_secs(90), client)
            .await
            .expect("every client got its grants: no deadlock")
            .expect("a client task");
    }
    let holdings = holdings.lock().unwrap().clone();
    for name in ["p", "q", "r"] {
        let mut of: Vec<&Holding> = holdings.iter().filter(|h| h.name == name).collect();
        of.sort_by_key(|h| h.granted);
        for pair in of.windows(2) {
            assert!(
                pair[1].fence > pair[0].fence,
                "{name}: fences out of order {pair:?}"
            );
            assert!(
                pair[1].granted >= pair[0].released,
                "{name}: two holders at once {pair:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_group_naming_a_lock_without_a_record_is_answered_not_a_500() {
    let app = TestApp::spawn().await;
    let granted = take_group(&app, &["x"], "g", "").await;
    let x = fence_of(&granted, "x");
    let group =
        json!({"locks": [{"name": "x", "fence": x}, {"name": "never", "fence": 1}]}).to_string();
    let beat = app
        .call(Method::POST, "/lock-groups/heartbeat", Some(&group))
        .await;
    assert_eq!(
        (beat.status, beat.code()),
        (StatusCode::NOT_FOUND, "not_found"),
        "{beat:?}"
    );
    assert_eq!(beat.json["locks"][0]["name"], "never");
    let released = app
        .call(Method::POST, "/lock-groups/release", Some(&group))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{released:?}");
    assert_eq!(
        released.json["locks"],
        json!([
            {"name": "x", "released": true, "fence": x},
            {"name": "never", "released": false, "fence": null},
        ])
    );
}

/// Two clients that take lock `name` in turn, each waiting for it and holding it for
/// `hold`, until `stop`; answers how many grants they had.
fn single_holders_in_turn(
    app: &Arc<TestApp>,
    name: &'static str,
    hold: Duration,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    use std::sync::atomic::Ordering;
    (0..2)
        .map(|client| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut grants = 0;
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let nonce = format!("single{client}-{round}");
                    let taken = app.acquire(name, &nonce, "&wait=2s&ttl=30s").await;
                    if taken.status != StatusCode::OK {
                        continue;
                    }
                    grants += 1;
                    tokio::time::sleep(hold).await;
                    app.release(name, taken.fence()).await;
                }
                grants
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_group_is_not_starved_by_single_holders_taking_one_of_its_locks_in_turn() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = Arc::new(TestApp::spawn().await);
    let stop = Arc::new(AtomicBool::new(false));
    // Lock b is never free for long: one single holder releases it, the other is
    // waiting and takes it at once.
    let singles = single_holders_in_turn(&app, "b", Duration::from_millis(300), &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Without a reservation of b, the group is refused each time it tries, and its
    // wait runs out.
    let granted = take_group(&app, &["a", "b"], "group", "&wait=6s").await;
    assert_eq!(granted.status, StatusCode::OK, "starved: {granted:?}");
    // While the group holds b, the single holders wait; once it lets go they go on.
    let released = app
        .call(
            Method::POST,
            "/lock-groups/release",
            Some(&holding(&granted)),
        )
        .await;
    assert_eq!(released.json["locks"][1]["released"], true, "{released:?}");
    let before = app.status("b").await.fence();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        app.status("b").await.fence() > before,
        "the single holders took b again after the group"
    );
    stop.store(true, Ordering::Relaxed);
    let mut grants = 0;
    for single in singles {
        grants += single.await.unwrap();
    }
    assert!(grants >= 4, "b was taken in turn: {grants} grants");
}

/// Waits (at most 10 s) until the status of `name` shows a reservation; answers it.
async fn until_reserved(app: &TestApp, name: &str) -> Reply {
    for _ in 0..200 {
        let status = app.status(name).await;
        if status.json.get("reservedUntil").is_some() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} was never reserved: {:?}", app.status(name).await);
}

#[tokio::test]
async fn a_waiting_group_reserves_its_locks_so_nobody_else_takes_them_before_it() {
    let app = Arc::new(TestApp::spawn().await);
    let a = app.acquire("a", "x", "").await.fence();
    app.release("a", a).await;
    let b = app.acquire("b", "y", "&ttl=1h").await.fence();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { take_group(&app, &["b", "a"], "group", "&wait=30s").await })
    };

    // a is free, but reserved: another nonce is refused, and told until when.
    let status = until_reserved(&app, "a").await;
    assert_eq!(status.json["held"], false, "{status:?}");
    let refused = app.acquire("a", "other", "").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "lock_held"),
        "{refused:?}"
    );
    assert_eq!(refused.json["reservedUntil"], status.json["reservedUntil"]);
    assert!(refused.json.get("expireTime").is_none(), "{refused:?}");
    let error = refused.json["error"].as_str().unwrap();
    assert!(
        error.contains("was released and is reserved for a waiting lock group"),
        "{error}"
    );
    assert!(refused.headers.contains_key("retry-after"), "{refused:?}");
    // b is held and reserved: its holder keeps it and renews it as ever.
    assert_eq!(app.heartbeat("b", b).await.status, StatusCode::OK);
    until_reserved(&app, "b").await;
    // Another group is refused too, and told which locks are reserved.
    let other = take_group(&app, &["a", "c"], "other", "").await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{other:?}");
    assert_eq!(other.json["locks"][0]["name"], "a");
    assert!(
        other.json["locks"][0]["reservedUntil"].is_string(),
        "{other:?}"
    );
    assert!(!waiter.is_finished());

    app.release("b", b).await;
    let granted = waiter.await.unwrap();
    assert_eq!(granted.status, StatusCode::OK, "{granted:?}");
    // The grant cleared the reservations: once the group lets go, anyone may take them.
    for name in ["a", "b"] {
        let status = app.status(name).await;
        assert!(status.json.get("reservedUntil").is_none(), "{status:?}");
    }
    app.call(
        Method::POST,
        "/lock-groups/release",
        Some(&holding(&granted)),
    )
    .await;
    assert_eq!(app.acquire("a", "other", "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_group_that_stops_waiting_clears_its_reservations() {
    let app = Arc::new(TestApp::spawn().await);
    let a = app.acquire("a", "x", "").await.fence();
    app.release("a", a).await;
    app.acquire("b", "y", "&ttl=1h").await;

    // Its wait runs out: the reservations it made once it had waited a second are
    // gone by the time it is answered.
    let refused = take_group(&app, &["a", "b"], "group", "&wait=2500ms").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(app.status("a").await.json.get("reservedUntil").is_none());
    // Each refused attempt reserved both locks; one clearing each at the end.
    let counted = scrape(&app).await;
    let reserved = dynamodb(&counted, "group_reserve", "granted");
    assert!(reserved >= 2.0 && reserved % 2.0 == 0.0, "{reserved}");
    assert_eq!(dynamodb(&counted, "group_unreserve", "granted"), 2.0);
    let taken = app.acquire("a", "other", "").await;
    assert_eq!(taken.status, StatusCode::OK, "{taken:?}");
    app.release("a", taken.fence()).await;

    // Its client goes away: the reservations go once the server notices, before
    // they would have ended on their own.
    let gone = reqwest::Client::new()
        .post(format!("{}/lock-groups?nonce=group2&wait=30s", app.base))
        .body(json!({"names": ["a", "b"]}).to_string())
        .timeout(Duration::from_secs(5))
        .send();
    let waiting = tokio::spawn(gone);
    let reserved = until_reserved(&app, "a").await;
    waiting.abort();
    let reserved_until =
        chrono::DateTime::parse_from_rfc3339(reserved.json["reservedUntil"].as_str().unwrap())
            .unwrap();
    loop {
        let status = app.status("a").await;
        if status.json.get("reservedUntil").is_none() {
            break;
        }
        let server_now = fencelock::clock::Clock::now_millis(app.clock.as_ref());
        assert!(
            server_now < reserved_until.timestamp_millis(),
            "the reservation of a group whose client left stayed until it ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reservations_go_in_name_order_stop_at_another_groups_and_end() {
    let app = TestApp::spawn().await;
    let store = app.store().await;
    let names: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| fencelock::domain::LockName::parse(name).unwrap())
        .collect();
    let nonce = |raw| fencelock::domain::Nonce::parse(raw).unwrap();
    for name in ["a", "b", "d"] {
        let fence = app.acquire(name, "x", "").await.fence();
        app.release(name, fence).await;
    }
    // c has no record: it is free, and skipped.
    assert_eq!(store.reserve_group(&names, &nonce("g1")).await.unwrap(), 3);
    assert_eq!(store.reserve_group(&names, &nonce("g1")).await.unwrap(), 3);
    assert_eq!(
        store
            .reserve_group(&names[1..], &nonce("g2"))
            .await
            .unwrap(),
        0
    );
    // Clearing by another nonce changes nothing.
    store.unreserve_group(&names, &nonce("g2")).await.unwrap();
    assert!(app.status("d").await.json["reservedUntil"].is_string());

    // g1 gave up b; g2 reserves it and stops at d, still g1's.
    store
        .unreserve_group(&names[1..2], &nonce("g1"))
        .await
        .unwrap();
    assert_eq!(
        store
            .reserve_group(&names[1..], &nonce("g2"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(app.acquire("b", "g2", "").await.status, StatusCode::OK);
    assert_eq!(
        app.acquire("d", "g2", "").await.status,
        StatusCode::CONFLICT
    );

    // Reservations end on their own.
    app.clock
        .advance(fencelock::store::RESERVATION + crate::helpers::SKEW);
    assert!(app.status("a").await.json.get("reservedUntil").is_none());
    assert_eq!(app.acquire("d", "g2", "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_reservation_never_takes_a_lock_from_its_holder_nor_lets_a_former_one_back() {
    let app = TestApp::spawn().await;
    let store = app.store().await;
    let b = fencelock::domain::LockName::parse("b").unwrap();
    let group = fencelock::domain::Nonce::parse("group").unwrap();
    let first = app.acquire("b", "x", "").await.fence();
    assert_eq!(
        store
            .reserve_group(std::slice::from_ref(&b), &group)
            .await
            .unwrap(),
        1
    );

    // The holder keeps its lock: it heartbeats, and acquiring again with its nonce
    // renews it under a new fence.
    assert_eq!(app.heartbeat("b", first).await.status, StatusCode::OK);
    let again = app.acquire("b", "x", "").await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert!(again.fence() > first);
    // Once it released the lock, its nonce is one like any other's.
    app.release("b", again.fence()).await;
    let back = app.acquire("b", "x", "").await;
    assert_eq!(
        (back.status, back.code()),
        (StatusCode::CONFLICT, "lock_held"),
        "{back:?}"
    );
    // The group that reserved it takes it.
    assert_eq!(
        take_group(&app, &["b"], "group", "").await.status,
        StatusCode::OK
    );
}
