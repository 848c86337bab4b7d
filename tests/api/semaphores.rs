//! Counting semaphores: at most `limit` holders, fences per semaphore, idempotent
//! re-acquire, takeover after the skew margin, waiting, listing, and the DynamoDB
//! requests each operation costs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Options, Reply, SKEW, TestApp, spawn_with_tokens};

async fn take(app: &TestApp, name: &str, nonce: &str, extra: &str) -> Reply {
    app.call(
        Method::POST,
        &format!("/semaphores/{name}?nonce={nonce}{extra}"),
        None,
    )
    .await
}

async fn heartbeat(app: &TestApp, name: &str, fence: u64, headers: &[(&str, &str)]) -> Reply {
    app.call_with(
        Method::POST,
        &format!("/semaphores/{name}/{fence}/heartbeat"),
        None,
        headers,
    )
    .await
}

async fn give_back(app: &TestApp, name: &str, fence: u64) -> Reply {
    app.call(Method::DELETE, &format!("/semaphores/{name}/{fence}"), None)
        .await
}

async fn status(app: &TestApp, name: &str) -> Reply {
    app.call(Method::GET, &format!("/semaphores/{name}"), None)
        .await
}

fn holder_fences(status: &Reply) -> Vec<u64> {
    status.json["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders in {status:?}"))
        .iter()
        .map(|h| h["fence"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn at_most_limit_holders_and_a_release_frees_a_slot() {
    let app = TestApp::spawn().await;
    let a = take(&app, "pool", "a", "&limit=2").await;
    let b = take(&app, "pool", "b", "&limit=2").await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "{b:?}"
    );
    assert!(b.fence() > a.fence());
    assert_eq!(b.json["limit"], 2);
    assert_eq!(b.json["holders"], 2);
    assert_eq!(b.headers["fence"], b.fence().to_string().as_str());

    let full = take(&app, "pool", "c", "&limit=2").await;
    assert_eq!(
        (full.status, full.code()),
        (StatusCode::CONFLICT, "semaphore_full")
    );
    let retry_after: u64 = full.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after >= 30,
        "the first lease ends in 30 s: {retry_after}"
    );
    assert!(
        full.json["error"].as_str().unwrap().contains("all 2"),
        "{full:?}"
    );

    let released = give_back(&app, "pool", a.fence()).await;
    assert_eq!(released.json["released"], true);
    // A retried release answers the same.
    assert_eq!(
        give_back(&app, "pool", a.fence()).await.json["released"],
        true
    );
    let c = take(&app, "pool", "c", "&limit=2").await;
    assert_eq!(c.status, StatusCode::OK, "{c:?}");
    assert!(c.fence() > b.fence());
    // The released slot was cleared by that acquire: its release now answers false.
    assert_eq!(
        give_back(&app, "pool", a.fence()).await.json["released"],
        false
    );

    let seen = status(&app, "pool").await;
    assert_eq!(holder_fences(&seen), vec![b.fence(), c.fence()]);
    assert_eq!(
        (seen.json["limit"].as_u64(), seen.json["free"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(!seen.json.to_string().contains("nonce"), "{seen:?}");
}

#[tokio::test]
async fn the_same_nonce_gets_a_new_fence_for_its_slot_not_a_second_slot() {
    let app = TestApp::spawn().await;
    let first = take(&app, "pool", "a", "&limit=2").await.fence();
    let again = take(&app, "pool", "a", "&limit=2").await.fence();
    assert!(again > first);
    assert_eq!(holder_fences(&status(&app, "pool").await), vec![again]);
    assert_eq!(
        heartbeat(&app, "pool", first, &[]).await.code(),
        "fence_mismatch"
    );
    // The other slot is still free.
    assert_eq!(
        take(&app, "pool", "b", "&limit=2").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn another_limit_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = take(&app, "pool", "a", "&limit=2").await.fence();
    let other = take(&app, "pool", "b", "&limit=3").await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::CONFLICT, "limit_mismatch")
    );
    let message = other.json["error"].as_str().unwrap();
    assert!(message.contains("limit of 2, not 3"), "{message}");
    let seen = status(&app, "pool").await;
    assert_eq!(
        (holder_fences(&seen), seen.json["limit"].as_u64()),
        (vec![a], Some(2))
    );
}

#[tokio::test]
async fn an_ended_lease_is_taken_over_only_after_the_skew_margin() {
    let a = TestApp::spawn().await;
    let b = a.another_instance().await;
    let old = take(&a, "pool", "a", "&limit=1&ttl=2s").await.fence();

    b.clock.advance(Duration::from_secs(2) + SKEW / 2);
    assert_eq!(
        take(&b, "pool", "b", "&limit=1").await.code(),
        "semaphore_full"
    );
    b.clock.advance(SKEW);
    let taken = take(&b, "pool", "b", "&limit=1").await;
    assert_eq!(taken.status, StatusCode::OK, "{taken:?}");
    assert!(taken.fence() > old);

    // The old holder, on its own server whose clock says its lease is live, can no
    // longer heartbeat or release.
    assert_eq!(
        heartbeat(&a, "pool", old, &[]).await.code(),
        "fence_mismatch"
    );
    assert_eq!(give_back(&a, "pool", old).await.json["released"], false);
    assert_eq!(
        holder_fences(&status(&a, "pool").await),
        vec![taken.fence()]
    );
}

#[tokio::test]
async fn an_acquire_planned_on_an_old_copy_never_clears_a_slot_renewed_since() {
    let a = TestApp::spawn().await;
    let b = a.another_instance().await;
    let held = take(&a, "pool", "a", "&limit=1&ttl=2s").await.fence();
    // The holder renews through the other server, for longer: server a's copy of the
    // record still has the first lease end.
    b.clock.advance(Duration::from_secs(1));
    let renewed = b
        .call(
            Method::POST,
            &format!("/semaphores/pool/{held}/heartbeat?ttl=30s"),
            None,
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{renewed:?}");
    // By server a's copy the slot lapsed long ago; by the record it is live.
    a.clock.advance(Duration::from_secs(10));
    let other = take(&a, "pool", "b", "&limit=1").await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::CONFLICT, "semaphore_full"),
        "{other:?}"
    );
    assert_eq!(holder_fences(&status(&b, "pool").await), vec![held]);
    let beat = heartbeat(&b, "pool", held, &[]).await;
    assert_eq!(beat.status, StatusCode::OK, "{beat:?}");
}

#[tokio::test]
async fn heartbeat_extends_one_slot_and_needs_the_holders_nonce_when_sent() {
    let app = TestApp::spawn().await;
    let a = take(&app, "pool", "a", "&limit=2&ttl=5s").await;
    let b = take(&app, "pool", "b", "&limit=2&ttl=5s").await.fence();
    app.clock.advance(Duration::from_secs(3));
    let beat = heartbeat(&app, "pool", a.fence(), &[("lock-nonce", "a")]).await;
    assert_eq!(beat.status, StatusCode::OK, "{beat:?}");
    assert!(beat.json["expireTime"].as_str() > a.json["expireTime"].as_str());

    let wrong = heartbeat(&app, "pool", b, &[("lock-nonce", "a")]).await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::FORBIDDEN, "not_holder")
    );
    let wrong = app
        .call_with(
            Method::DELETE,
            &format!("/semaphores/pool/{b}"),
            None,
            &[("lock-nonce", "a")],
        )
        .await;
    assert_eq!(wrong.code(), "not_holder");

    // Six seconds after the acquire: b's lease has ended, a's (renewed at 3 s) has not.
    app.clock.advance(Duration::from_secs(3));
    assert_eq!(
        heartbeat(&app, "pool", b, &[]).await.code(),
        "lease_expired"
    );
    assert_eq!(holder_fences(&status(&app, "pool").await), vec![a.fence()]);
    give_back(&app, "pool", a.fence()).await;
    let after = heartbeat(&app, "pool", a.fence(), &[]).await;
    assert_eq!(after.code(), "lease_expired");
    assert!(
        after.json["error"]
            .as_str()
            .unwrap()
            .contains("was released")
    );
    assert_eq!(heartbeat(&app, "nothing", 1, &[]).await.code(), "not_found");
}

#[tokio::test]
async fn a_semaphore_and_a_lock_of_one_name_are_different_records_and_listed_apart() {
    let app = TestApp::spawn().await;
    let lock = app.acquire("shared", "n", "").await.fence();
    let slot = take(&app, "shared", "n", "&limit=1").await;
    assert_eq!(slot.status, StatusCode::OK, "{slot:?}");
    take(&app, "other", "n", "&limit=3").await;
    assert_eq!(app.heartbeat("shared", lock).await.status, StatusCode::OK);
    assert_eq!(app.status("shared").await.fence(), lock);

    let locks = app.call(Method::GET, "/locks", None).await;
    let names: Vec<_> = locks.json["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("shared")]);

    let mut names = Vec::new();
    let mut cursor = String::new();
    // One per page, so that pages end on lock and semaphore keys alike.
    for _ in 0..10 {
        let page = app
            .call(Method::GET, &format!("/semaphores?limit=1{cursor}"), None)
            .await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        for semaphore in page.json["semaphores"].as_array().unwrap() {
            names.push(semaphore["name"].as_str().unwrap().to_owned());
        }
        match page.json["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    names.sort();
    assert_eq!(names, vec!["other", "shared"]);
    let held = app.call(Method::GET, "/semaphores?prefix=oth", None).await;
    assert_eq!(held.json["semaphores"][0]["name"], "other");
    assert!(held.json["semaphores"][0]["holders"][0]["fence"].is_u64());
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    for (path, body, expected) in [
        ("/semaphores/pool?nonce=a", None, "needs its limit"),
        ("/semaphores/pool?nonce=a&limit=0", None, "1 to 100"),
        ("/semaphores/pool?nonce=a&limit=101", None, "1 to 100"),
        ("/semaphores/pool?limit=2", None, "needs a nonce"),
        (
            "/semaphores/pool?nonce=a&limit=2",
            Some(r#"{"limit": 3}"#),
            "both the query and the body",
        ),
        (
            "/semaphores/pool",
            Some(r#"{"nonce": "a", "limit": 1000}"#),
            "1 to 100",
        ),
    ] {
        let reply = app.call(Method::POST, path, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{path}"
        );
        let message = reply.json["error"].as_str().unwrap();
        assert!(message.contains(expected), "{path}: {message}");
    }
    let metadata = json!({"nonce": "a", "limit": 2, "metadata": "x".repeat(3000)}).to_string();
    let reply = app
        .call(Method::POST, "/semaphores/pool", Some(&metadata))
        .await;
    assert!(
        reply.json["error"].as_str().unwrap().contains("2048"),
        "{reply:?}"
    );
    assert_eq!(status(&app, "pool").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_waiting_acquire_gets_the_slot_a_holder_releases() {
    let app = Arc::new(TestApp::spawn().await);
    let first = take(&app, "pool", "a", "&limit=1").await.fence();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { take(&app, "pool", "b", "&limit=1&wait=15s").await })
    };
    // Released once the waiter is queued.
    for _ in 0..100 {
        if status(&app, "pool").await.json["waiters"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    give_back(&app, "pool", first).await;
    let granted = waiter.await.unwrap();
    assert_eq!(granted.status, StatusCode::OK, "{granted:?}");
    assert!(granted.fence() > first);

    let timed_out = take(&app, "pool", "c", "&limit=1&wait=200ms").await;
    assert_eq!(timed_out.code(), "semaphore_full");
}

#[tokio::test]
async fn a_token_acts_on_semaphores_only_in_its_namespaces() {
    let tokens: [(&str, &[&str], bool); 1] = [("billing-s3cret", &["billing"], false)];
    let (app, _dir) = spawn_with_tokens(&tokens, Options::default()).await;
    let anonymous = take(&app, "billing:pool", "a", "&limit=2").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let bearer = [("authorization", "Bearer billing-s3cret")];
    let path = "/semaphores/billing:pool?nonce=a&limit=2";
    let own = app.call_with(Method::POST, path, None, &bearer).await;
    assert_eq!(own.status, StatusCode::OK, "{own:?}");
    let path = "/semaphores/ops:pool?nonce=a&limit=2";
    let other = app.call_with(Method::POST, path, None, &bearer).await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let list = app
        .call_with(Method::GET, "/semaphores", None, &bearer)
        .await;
    assert_eq!(list.code(), "forbidden");
}

#[tokio::test]
async fn the_reclaimer_leaves_semaphores_alone() {
    let app = TestApp::spawn_with(Options {
        reclaim_after: Some(Duration::from_secs(1)),
        ..Options::default()
    })
    .await;
    let fence = take(&app, "pool", "a", "&limit=2&ttl=1s").await.fence();
    give_back(&app, "pool", fence).await;
    app.acquire("lock", "n", "&ttl=1s").await;
    app.clock.advance(Duration::from_secs(10));
    crate::reclaim::until_gone(&app, "lock").await;
    let seen = status(&app, "pool").await;
    assert_eq!(
        (seen.status, seen.json["fence"].as_u64()),
        (StatusCode::OK, Some(fence))
    );
    assert!(take(&app, "pool", "b", "&limit=2").await.fence() > fence);
}

/// One holding of a slot: from the acquire's answer to the moment the release was sent.
#[derive(Debug, Clone, Copy)]
struct Holding {
    fence: u64,
    granted: Instant,
    released: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contending_clients_on_two_servers_never_exceed_the_limit() {
    const LIMIT: usize = 3;
    const CLIENTS: usize = 10;
    const GRANTS: usize = 4;
    let a = Arc::new(TestApp::spawn().await);
    let b = Arc::new(a.another_instance().await);
    let holdings = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let server = if client % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        let holdings = holdings.clone();
        clients.push(tokio::spawn(async move {
            let nonce = format!("client-{client}");
            let mut granted = 0;
            while granted < GRANTS && Instant::now() < deadline {
                let reply = take(&server, "hot", &nonce, &format!("&limit={LIMIT}")).await;
                if reply.status != StatusCode::OK {
                    // Full, or DynamoDB Local too slow for a moment under the whole
                    // suite's load (503, retry): the same nonce never gets two slots.
                    assert!(
                        ["semaphore_full", "unavailable"].contains(&reply.code()),
                        "{reply:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(5)).await;
                let end = Instant::now();
                let released = give_back(&server, "hot", reply.fence()).await;
                assert_eq!(released.json["released"], true, "{released:?}");
                holdings.lock().unwrap().push(Holding {
                    fence: reply.fence(),
                    granted: start,
                    released: end,
                });
                granted += 1;
            }
        }));
    }
    for client in clients {
        client.await.expect("a client task");
    }
    let holdings = holdings.lock().unwrap().clone();
    assert_eq!(
        holdings.len(),
        CLIENTS * GRANTS,
        "every client got its grants"
    );
    let mut fences: Vec<_> = holdings.iter().map(|h| h.fence).collect();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(
        fences.len(),
        holdings.len(),
        "every grant has a fence of its own"
    );
    for holding in &holdings {
        let at_once = holdings
            .iter()
            .filter(|other| other.granted <= holding.granted && other.released > holding.granted)
            .count();
        assert!(
            at_once <= LIMIT,
            "{at_once} holders at once around {holding:?}"
        );
    }
}

#[tokio::test]
async fn a_free_slot_costs_one_dynamodb_request_and_a_full_semaphore_a_read() {
    use crate::metrics::{dynamodb, scrape, value};
    let app = TestApp::spawn().await;
    let requests = |scrape| value(scrape, "fencelock_dynamodb_requests_total", &[]);
    let fence = take(&app, "pool", "a", "&limit=1").await.fence();
    let after_grant = scrape(&app).await;
    // A semaphore made anew: one write, no read.
    assert_eq!(requests(&after_grant), 1.0);
    assert_eq!(dynamodb(&after_grant, "semaphore_acquire", "granted"), 1.0);

    // Full as this server saw it: read before saying so (never refused on a copy).
    assert_eq!(
        take(&app, "pool", "b", "&limit=1").await.code(),
        "semaphore_full"
    );
    heartbeat(&app, "pool", fence, &[]).await;
    give_back(&app, "pool", fence).await;
    let after = scrape(&app).await;
    assert_eq!(requests(&after), 4.0);
    for (operation, count) in [
        ("semaphore_read", 1.0),
        ("semaphore_acquire", 1.0),
        ("semaphore_heartbeat", 1.0),
        ("semaphore_release", 1.0),
    ] {
        assert_eq!(dynamodb(&after, operation, "granted"), count, "{operation}");
    }
    let kind = [("kind", "semaphore")];
    assert_eq!(value(&after, "fencelock_grants_total", &kind), 1.0);
    assert_eq!(value(&after, "fencelock_conflicts_total", &kind), 1.0);

    // The next cycle on this server: one write each for acquire and release.
    let again = take(&app, "pool", "c", "&limit=1").await.fence();
    give_back(&app, "pool", again).await;
    assert_eq!(requests(&scrape(&app).await), 6.0);

    // A server that has not seen the semaphore guesses a new record: refused, it
    // decides again on the record the refusal hands back, without a read.
    let other = app.another_instance().await;
    let fence = take(&other, "pool", "d", "&limit=1").await.fence();
    let seen = scrape(&other).await;
    assert_eq!(dynamodb(&seen, "semaphore_acquire", "conflict"), 1.0);
    assert_eq!(dynamodb(&seen, "semaphore_acquire", "granted"), 1.0);
    assert_eq!(dynamodb(&seen, "semaphore_read", "granted"), 0.0);
    assert!(fence > again);
}
