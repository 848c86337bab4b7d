//! Watching a lock: the version every write advances, the long-poll of
//! `GET /locks/{name}?after=…&wait=…` and the event stream of
//! `GET /locks/{name}/events`, on one server and across two.

use std::sync::Arc;
use std::time::Duration;

use fencelock::api::Limits;
use fencelock::watch::WatchSettings;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::{Options, TestApp};

fn name() -> String {
    format!("watch-{}", fastrand::u64(..))
}

/// A server whose watches read every 100 ms, so that cross-server tests are quick.
async fn quick() -> TestApp {
    TestApp::spawn_with(quick_options()).await
}

pub(crate) fn quick_options() -> Options {
    Options {
        limits: Limits {
            watch: WatchSettings {
                interval: Duration::from_millis(100),
                linger: Duration::from_secs(10),
                list_interval: Duration::from_millis(300),
            },
            ..Limits::default()
        },
        ..Options::default()
    }
}

fn version(reply: &Value) -> u64 {
    reply["version"].as_u64().expect("a version")
}

#[tokio::test]
async fn every_write_advances_the_version_by_two() {
    let app = TestApp::spawn().await;
    let name = name();
    let acquired = app.acquire(&name, "a", "&ttl=30s").await;
    let v = version(&acquired.json);
    assert_eq!(v % 2, 0, "a live lease's version is even");
    let fence = acquired.fence();
    assert_eq!(version(&app.heartbeat(&name, fence).await.json), v + 2);
    assert_eq!(version(&app.update(&name, fence, "step").await.json), v + 4);
    app.release(&name, fence).await;
    assert_eq!(version(&app.status(&name).await.json), v + 6);
    let again = app.acquire(&name, "b", "").await;
    assert_eq!(version(&again.json), v + 8);
}

#[tokio::test]
async fn a_long_poll_answers_at_the_next_change() {
    let app = TestApp::spawn().await;
    let name = name();
    let acquired = app.acquire(&name, "a", "&ttl=30s").await;
    let v = version(&acquired.json);
    let poll = {
        let (http, url) = (
            app.http.clone(),
            format!("{}/locks/{name}?after={v}&wait=20s", app.base),
        );
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long-poll answered before any change"
    );
    app.update(&name, acquired.fence(), "new body").await;
    let changed = poll.await.unwrap();
    assert_eq!(version(&changed), v + 2);
    assert_eq!(changed["body"], "new body");
}

#[tokio::test]
async fn a_long_poll_that_runs_out_answers_the_lock_as_it_is() {
    let app = TestApp::spawn().await;
    let name = name();
    let v = version(&app.acquire(&name, "a", "&ttl=30s").await.json);
    let reply = app
        .call(
            Method::GET,
            &format!("/locks/{name}?after={v}&wait=300ms"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(version(&reply.json), v, "nothing changed");
    assert_eq!(reply.json["held"], true);
    // A version other than the lock's answers at once.
    let other = app
        .call(
            Method::GET,
            &format!("/locks/{name}?after={}&wait=20s", v + 100),
            None,
        )
        .await;
    assert_eq!(version(&other.json), v);
}

#[tokio::test]
async fn a_lease_that_runs_out_is_a_change_though_nothing_is_written() {
    let app = quick().await;
    let name = name();
    let v = version(&app.acquire(&name, "a", "&ttl=1s").await.json);
    let reply = app
        .call(
            Method::GET,
            &format!("/locks/{name}?after={v}&wait=20s"),
            None,
        )
        .await;
    assert_eq!(version(&reply.json), v + 1, "odd: the lease ran out");
    assert_eq!(reply.json["held"], false);
    // It stays so until the next write.
    let status = app.status(&name).await;
    assert_eq!(version(&status.json), v + 1);
    let taken = app.acquire(&name, "b", "").await;
    assert_eq!(version(&taken.json), v + 2);
}

#[tokio::test]
async fn a_long_poll_of_a_lock_without_a_record_waits_for_its_first_write() {
    let app = TestApp::spawn().await;
    let name = name();
    let poll = {
        let (http, url) = (
            app.http.clone(),
            format!("{}/locks/{name}?after=0&wait=20s", app.base),
        );
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished());
    app.acquire(&name, "a", "").await;
    let answer = poll.await.unwrap();
    assert_eq!(answer.status(), 200);
    let missing = app
        .call(
            Method::GET,
            &format!("/locks/{}?after=0&wait=200ms", self::name()),
            None,
        )
        .await;
    assert_eq!(missing.status, 404, "still no record when the wait ran out");
}

#[tokio::test]
async fn bad_watch_parameters_are_refused_saying_what_was_expected() {
    let app = TestApp::spawn().await;
    for (path, says) in [
        ("/locks/job?after=soon&wait=1s", "not a version"),
        ("/locks/job?wait=1s", "without after"),
        ("/locks/job?after=3&wait=forever", "wait"),
    ] {
        let reply = app.call(Method::GET, path, None).await;
        assert_eq!(reply.status, 400, "{path}");
        let message = reply.json["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{path}: {message}");
    }
    let reply = app
        .call_with(
            Method::GET,
            "/locks/job/events",
            None,
            &[("last-event-id", "later")],
        )
        .await;
    assert_eq!(reply.status, 400);
}

/// An open event stream, read event by event.
pub(crate) struct Stream {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Sse {
    pub event: String,
    pub id: Option<u64>,
    pub data: Value,
}

impl Stream {
    async fn open(app: &TestApp, name: &str, last: Option<u64>) -> Self {
        Self::open_at(app, &format!("/locks/{name}/events"), last).await
    }

    /// The stream at `path` (such as `/elections/{name}/events`).
    pub(crate) async fn open_at(app: &TestApp, path: &str, last: Option<u64>) -> Self {
        let mut request = app.http.get(format!("{}{path}", app.base));
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), within 20 s.
    pub(crate) async fn next(&mut self) -> Sse {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    if let Some(event) = parse(&block) {
                        return event;
                    }
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream is open");
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("an event within 20 s")
    }
}

fn parse(block: &str) -> Option<Sse> {
    let (mut event, mut id, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            event = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim());
        }
    }
    Some(Sse {
        event: event?,
        id,
        data: serde_json::from_str(&data).ok()?,
    })
}

#[tokio::test]
async fn the_stream_tells_each_change_with_its_version_as_id() {
    let app = TestApp::spawn().await;
    let name = name();
    let mut stream = Stream::open(&app, &name, None).await;
    let first = stream.next().await;
    assert_eq!(
        (first.event.as_str(), first.id),
        ("state", Some(0)),
        "no record yet"
    );
    let acquired = app.acquire(&name, "a", "&ttl=30s").await;
    let fence = acquired.fence();
    let v = version(&acquired.json);
    let event = stream.next().await;
    assert_eq!((event.event.as_str(), event.id), ("acquired", Some(v)));
    assert_eq!(event.data["fence"], fence);
    assert!(event.data.get("nonce").is_none() && event.data.get("token").is_none());
    app.heartbeat(&name, fence).await;
    let event = stream.next().await;
    assert_eq!((event.event.as_str(), event.id), ("renewed", Some(v + 2)));
    app.update(&name, fence, "half done").await;
    let event = stream.next().await;
    assert_eq!((event.event.as_str(), event.id), ("updated", Some(v + 4)));
    assert_eq!(event.data["body"], "half done");
    app.release(&name, fence).await;
    let event = stream.next().await;
    assert_eq!((event.event.as_str(), event.id), ("released", Some(v + 6)));
    assert_eq!(event.data["held"], false);
}

#[tokio::test]
async fn the_stream_reports_an_expiry_that_nothing_wrote() {
    let app = quick().await;
    let name = name();
    let acquired = app.acquire(&name, "a", "&ttl=1s").await;
    let mut stream = Stream::open(&app, &name, None).await;
    let state = stream.next().await;
    assert_eq!(state.event, "state");
    let expired = stream.next().await;
    assert_eq!(expired.event, "expired");
    assert_eq!(expired.id, Some(version(&acquired.json) + 1));
    assert_eq!(expired.data["held"], false);
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_what_it_missed_or_a_gap() {
    let app = TestApp::spawn().await;
    let name = name();
    let acquired = app.acquire(&name, "a", "&ttl=30s").await;
    let fence = acquired.fence();
    let v = version(&acquired.json);
    let mut stream = Stream::open(&app, &name, None).await;
    assert_eq!(stream.next().await.id, Some(v));
    // Changes in a burst, one by one, while the stream is closed.
    drop(stream);
    for step in 0..5 {
        app.update(&name, fence, &format!("step {step}")).await;
        // Each write is seen by the watch before the next.
        let seen = v + 2 * (step + 1);
        let polled = app
            .call(
                Method::GET,
                &format!("/locks/{name}?after={}&wait=5s", seen - 2),
                None,
            )
            .await;
        assert_eq!(version(&polled.json), seen);
    }
    let mut again = Stream::open(&app, &name, Some(v + 4)).await;
    let replayed: Vec<(String, Option<u64>)> = {
        let mut events = Vec::new();
        for _ in 0..3 {
            let event = again.next().await;
            events.push((event.event, event.id));
        }
        events
    };
    assert_eq!(
        replayed,
        [6, 8, 10].map(|d| ("updated".to_owned(), Some(v + d))),
        "the events after the last one seen, and nothing before"
    );
    // From a version this server never kept: a gap, then the state.
    let mut lost = Stream::open(&app, &name, Some(1)).await;
    let gap = lost.next().await;
    assert_eq!((gap.event.as_str(), gap.id), ("gap", None));
    let state = lost.next().await;
    assert_eq!((state.event.as_str(), state.id), ("state", Some(v + 10)));
}

#[tokio::test]
async fn a_burst_through_this_server_is_told_write_by_write_across_a_reconnect() {
    let app = Arc::new(TestApp::spawn().await);
    let name = name();
    let acquired = app.acquire(&name, "a", "&ttl=30s").await;
    let (fence, v) = (acquired.fence(), version(&acquired.json));
    let mut stream = Stream::open(&app, &name, None).await;
    assert_eq!(stream.next().await.id, Some(v));
    // 20 updates one after another, none waiting for the watch to see the last.
    let writer = {
        let (app, name) = (app.clone(), name.clone());
        tokio::spawn(async move {
            for step in 0..20 {
                app.update(&name, fence, &format!("step {step}")).await;
            }
        })
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = stream.next().await;
        seen.push((event.event, event.id, event.data["body"].clone()));
    }
    // The connection drops in the middle of the burst; the reconnect names the last.
    drop(stream);
    let last = seen.last().unwrap().1;
    let mut again = Stream::open(&app, &name, last).await;
    while seen.len() < 20 {
        let event = again.next().await;
        seen.push((event.event, event.id, event.data["body"].clone()));
    }
    writer.await.unwrap();
    let expected: Vec<(String, Option<u64>, Value)> = (0..20u64)
        .map(|step| {
            let body = Value::String(format!("step {step}"));
            ("updated".to_owned(), Some(v + 2 * (step + 1)), body)
        })
        .collect();
    assert_eq!(seen, expected, "each write, once, in order, and no gap");
}

#[tokio::test]
async fn a_change_through_another_server_reaches_a_watcher() {
    let first = quick().await;
    let second = first.another_instance().await;
    let name = name();
    let mut stream = Stream::open(&first, &name, None).await;
    assert_eq!(stream.next().await.event, "state");
    let sent = Instant::now();
    let acquired = second.acquire(&name, "elsewhere", "&ttl=30s").await;
    let event = stream.next().await;
    eprintln!(
        "a change through another server reached the watcher after {:?} (reads every 100 ms)",
        sent.elapsed()
    );
    assert_eq!(event.event, "acquired");
    assert_eq!(event.data["fence"], acquired.fence());
}

/// DynamoDB reads by the watches of `app`, from its metrics.
async fn reads(app: &TestApp) -> u64 {
    let scrape = crate::metrics::scrape(app).await;
    crate::metrics::value(
        &scrape,
        "fencelock_dynamodb_requests_total",
        &[("operation", "read")],
    ) as u64
}

#[tokio::test]
async fn a_hundred_watchers_of_a_name_cost_dynamodb_what_one_does() {
    let app = quick().await;
    let name = name();
    app.acquire(&name, "a", "&ttl=60s").await;
    let mut counts = Vec::new();
    for watchers in [1, 100] {
        let mut streams = Vec::new();
        for _ in 0..watchers {
            let mut stream = Stream::open(&app, &name, None).await;
            stream.next().await;
            streams.push(stream);
        }
        let before = reads(&app).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        counts.push(reads(&app).await - before);
        drop(streams);
    }
    eprintln!(
        "DynamoDB reads in 2 s with 1 watcher: {}, with 100: {}",
        counts[0], counts[1]
    );
    assert!(counts[0] >= 5, "the watch reads every 100 ms: {counts:?}");
    assert!(
        counts[1] <= counts[0] * 3 / 2 + 2,
        "reads grew with the watchers: {counts:?}"
    );
}

#[tokio::test]
async fn shutting_down_ends_the_streams() {
    let app = TestApp::spawn().await;
    let name = name();
    let mut stream = Stream::open(&app, &name, None).await;
    stream.next().await;
    app.shut_down();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.response.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream stayed open through the shutdown");
}

#[tokio::test]
async fn fencelock_watch_prints_a_line_per_change_and_reconnects_from_the_last() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = TestApp::spawn().await;
    let name = name();
    let acquired = app.acquire(&name, "a", "&ttl=30s").await;
    let v = version(&acquired.json);
    let mut child = crate::helpers::fencelock(&app.base)
        .args(["watch", &name])
        .spawn()
        .expect("fencelock starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("a line")
    };
    let state = next().await;
    assert!(state.contains(&format!("state    v{v} held by")), "{state}");
    app.update(&name, acquired.fence(), "half").await;
    let updated = next().await;
    assert!(
        updated.contains(&format!("updated  v{} ", v + 2)),
        "{updated}"
    );
    assert!(updated.ends_with("body \"half\""), "{updated}");
    app.release(&name, acquired.fence()).await;
    let released = next().await;
    assert!(
        released.contains(&format!("released v{} free", v + 4)),
        "{released}"
    );

    // JSON, a line each, in the API's shapes.
    let mut child = crate::helpers::fencelock(&app.base)
        .args(["watch", &name, "--json"])
        .spawn()
        .expect("fencelock starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "state");
    assert_eq!(event["id"], v + 4);
    assert_eq!(event["data"]["held"], false);
}

#[tokio::test]
async fn a_followed_listing_sends_its_page_then_each_change_on_it() {
    let app = TestApp::spawn_with(quick_options()).await;
    let other = app.another_instance().await;
    let prefix = format!("follow-{}-", fastrand::u32(..));
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let fence_a = app.acquire(&a, "na", "&ttl=30s").await.fence();
    app.acquire(&b, "nb", "&ttl=30s").await;
    let mut stream = Stream::open_at(&app, &format!("/events/locks?prefix={prefix}"), None).await;
    let first = stream.next().await;
    assert_eq!(first.event, "snapshot");
    let mut names: Vec<&str> = first.data["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lock| lock["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [a.as_str(), b.as_str()]);
    assert!(first.data["locks"][0].get("nonce").is_none());

    // A change of a lock on the page: that lock's event.
    app.update(&a, fence_a, "half").await;
    let updated = stream.next().await;
    assert_eq!(updated.event, "updated");
    assert_eq!(
        (updated.data["name"].as_str(), updated.data["body"].as_str()),
        (Some(a.as_str()), Some("half"))
    );
    // Through another server too, within the listing's read interval.
    other.release(&a, fence_a).await;
    let released = stream.next().await;
    assert_eq!(
        (released.event.as_str(), released.data["name"].as_str()),
        ("released", Some(a.as_str()))
    );
    // A lock that joins the page: the page again.
    let c = format!("{prefix}c");
    other.acquire(&c, "nc", "").await;
    let page = stream.next().await;
    assert_eq!(page.event, "snapshot");
    assert_eq!(page.data["locks"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_followed_listing_keeps_to_the_tokens_rights() {
    let tokens: [(&str, &[&str], bool); 2] = [
        ("lister", &["team-a"], true),
        ("no-list", &["team-a"], false),
    ];
    let (app, _dir) = crate::helpers::spawn_with_tokens(&tokens, Options::default()).await;
    let anonymous = app.call(Method::GET, "/events/locks", None).await;
    assert_eq!(anonymous.status, 401);
    let refused = app
        .call_as("no-list", Method::GET, "/events/locks", None)
        .await;
    assert_eq!(refused.status, 403);
    let other_namespace = app
        .call_as(
            "lister",
            Method::GET,
            "/events/locks?namespace=team-b",
            None,
        )
        .await;
    assert_eq!(other_namespace.status, 403);
    let bad = app
        .call_as("lister", Method::GET, "/events/locks?limit=0", None)
        .await;
    assert_eq!(bad.status, 400);
}

async fn take_slot(app: &TestApp, name: &str, nonce: &str, ttl: &str) -> u64 {
    let body = serde_json::json!({"nonce": nonce, "limit": 3, "ttl": ttl}).to_string();
    let reply = app
        .call(Method::POST, &format!("/semaphores/{name}"), Some(&body))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    reply.fence()
}

#[tokio::test]
async fn a_semaphores_stream_tells_each_slot_taken_renewed_released_and_lapsed() {
    let app = TestApp::spawn_with(quick_options()).await;
    let other = app.another_instance().await;
    let name = name();
    let path = format!("/semaphores/{name}/events");
    let mut stream = Stream::open_at(&app, &path, None).await;
    let first = stream.next().await;
    assert_eq!(
        (first.event.as_str(), first.id),
        ("state", Some(0)),
        "no record yet"
    );

    let a = take_slot(&app, &name, "a", "30s").await;
    let acquired = stream.next().await;
    assert_eq!(
        (acquired.event.as_str(), acquired.data["slot"].as_u64()),
        ("acquired", Some(a))
    );
    assert_eq!(acquired.data["limit"], 3);
    assert_eq!(acquired.data["holders"].as_array().unwrap().len(), 1);
    // Through another server too.
    let b = take_slot(&other, &name, "b", "1s").await;
    let second = stream.next().await;
    assert_eq!(
        (second.event.as_str(), second.data["slot"].as_u64()),
        ("acquired", Some(b))
    );
    assert!(second.id > acquired.id);
    app.call(
        Method::POST,
        &format!("/semaphores/{name}/{a}/heartbeat"),
        None,
    )
    .await;
    let renewed = stream.next().await;
    assert_eq!(
        (renewed.event.as_str(), renewed.data["slot"].as_u64()),
        ("renewed", Some(a))
    );
    // b's lease of 1 s runs out with nothing written.
    let expired = stream.next().await;
    assert_eq!(
        (expired.event.as_str(), expired.data["slot"].as_u64()),
        ("expired", Some(b))
    );
    assert_eq!(expired.data["holders"].as_array().unwrap().len(), 1);
    assert!(expired.id > renewed.id);
    app.call(Method::DELETE, &format!("/semaphores/{name}/{a}"), None)
        .await;
    let released = stream.next().await;
    assert_eq!(
        (released.event.as_str(), released.data["slot"].as_u64()),
        ("released", Some(a))
    );
    assert!(released.data["holders"].as_array().unwrap().is_empty());

    // A reconnect from the last id is told only what follows; from another, a gap.
    drop(stream);
    let mut again = Stream::open_at(&app, &path, released.id).await;
    let c = take_slot(&app, &name, "c", "30s").await;
    let next = again.next().await;
    assert_eq!(
        (next.event.as_str(), next.data["slot"].as_u64()),
        ("acquired", Some(c))
    );
    let mut lost = Stream::open_at(&app, &path, acquired.id).await;
    assert_eq!(lost.next().await.event, "gap");
    assert_eq!(lost.next().await.event, "state");
}

#[tokio::test]
async fn fencelock_watch_semaphore_prints_each_slot_change() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = TestApp::spawn().await;
    let name = name();
    let mut child = crate::helpers::fencelock(&app.base)
        .args(["watch", "--semaphore", &name])
        .spawn()
        .expect("fencelock starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("a line")
    };
    let state = next().await;
    assert!(state.contains("state    v0 no record"), "{state}");
    let fence = take_slot(&app, &name, "a", "30s").await;
    let acquired = next().await;
    assert!(
        acquired.contains("acquired")
            && acquired.ends_with(&format!("slot {fence}; 1 of 3 held, 2 free")),
        "{acquired}"
    );
    app.call(Method::DELETE, &format!("/semaphores/{name}/{fence}"), None)
        .await;
    let released = next().await;
    assert!(
        released.ends_with(&format!("slot {fence}; 0 of 3 held, 3 free")),
        "{released}"
    );
    child.kill().await.unwrap();
}
