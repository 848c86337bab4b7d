//! Leader election under `/elections`: campaign, proclaim, heartbeat, leader,
//! observe and resign, on one server and across two.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Options, Reply, TestApp, spawn_with_tokens};
use crate::watch::{Stream, quick_options};

fn name() -> String {
    format!("election-{}", fastrand::u64(..))
}

async fn campaign(app: &TestApp, name: &str, nonce: &str, value: &str, extra: Value) -> Reply {
    let mut body = json!({ "nonce": nonce, "value": value });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    app.call(
        Method::POST,
        &format!("/elections/{name}"),
        Some(&body.to_string()),
    )
    .await
}

/// The term in an answer's `Fence` header.
fn fence_header(reply: &Reply) -> u64 {
    reply.headers["fence"].to_str().unwrap().parse().unwrap()
}

fn term(reply: &Reply) -> u64 {
    reply.json["leader"]["term"]
        .as_u64()
        .unwrap_or_else(|| panic!("a leader with a term: {}", reply.json))
}

async fn leader(app: &TestApp, name: &str) -> Value {
    let reply = app
        .call(Method::GET, &format!("/elections/{name}"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    reply.json
}

#[tokio::test]
async fn a_candidate_leads_under_a_term_and_everyone_sees_its_value() {
    let app = TestApp::spawn().await;
    let name = name();
    let nobody = leader(&app, &name).await;
    assert_eq!(
        nobody["leader"],
        Value::Null,
        "nobody leads an election never held"
    );
    assert_eq!(nobody["version"], 0);

    let won = campaign(
        &app,
        &name,
        "cand-a",
        "10.0.0.1:8080",
        json!({"ttl": "30s"}),
    )
    .await;
    assert_eq!(won.status, 200, "{}", won.json);
    let term = term(&won);
    assert_eq!(
        fence_header(&won),
        term,
        "the Fence header carries the term"
    );
    assert_eq!(won.json["leader"]["value"], "10.0.0.1:8080");
    let now = leader(&app, &name).await;
    assert_eq!(now["leader"]["term"], term);
    assert_eq!(now["leader"]["value"], "10.0.0.1:8080");
    assert!(now["leader"].get("nonce").is_none(), "never the nonce");
    // An election is not a lock of the same name.
    assert_eq!(app.status(&name).await.status, 404);
    let lock = app.acquire(&name, "someone-else", "").await;
    assert_eq!(lock.status, 200, "the lock of the same name is free");
}

#[tokio::test]
async fn a_led_election_refuses_a_campaign_that_does_not_wait() {
    let app = TestApp::spawn().await;
    let name = name();
    let won = campaign(&app, &name, "cand-a", "a", json!({"ttl": "30s"})).await;
    let refused = campaign(&app, &name, "cand-b", "b", json!({})).await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.code(), "election_led");
    assert_eq!(refused.json["fence"], term(&won));
    assert!(refused.headers.contains_key("retry-after"));
    let error = refused.json["error"].as_str().unwrap();
    assert!(error.contains(&format!("election \"{name}\"")), "{error}");
    assert_eq!(
        leader(&app, &name).await["leader"]["value"],
        "a",
        "nothing changed"
    );
}

#[tokio::test]
async fn resign_hands_leadership_to_the_waiting_candidate_at_once() {
    let app = Arc::new(TestApp::spawn().await);
    let name = name();
    let first = campaign(&app, &name, "cand-a", "a", json!({"ttl": "30s"})).await;
    let first_term = term(&first);
    let waiting = {
        let (app, name) = (app.clone(), name.clone());
        tokio::spawn(
            async move { campaign(&app, &name, "cand-b", "b", json!({"wait": "20s"})).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second candidate leads while the first does"
    );
    let resigned = app
        .call(
            Method::DELETE,
            &format!("/elections/{name}/{first_term}"),
            None,
        )
        .await;
    assert_eq!(resigned.json["released"], true);
    let second = waiting.await.unwrap();
    assert_eq!(second.status, 200, "{}", second.json);
    assert!(term(&second) > first_term, "terms only grow");
    assert_eq!(second.json["leader"]["value"], "b");
    // The old term resigning again changes nothing and says it no longer leads.
    let again = app
        .call(
            Method::DELETE,
            &format!("/elections/{name}/{first_term}"),
            None,
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["released"], false);
    assert_eq!(leader(&app, &name).await["leader"]["term"], term(&second));
}

#[tokio::test]
async fn resign_is_idempotent() {
    let app = TestApp::spawn().await;
    let name = name();
    let term = term(&campaign(&app, &name, "cand-a", "a", json!({})).await);
    for _ in 0..2 {
        let resigned = app
            .call(Method::DELETE, &format!("/elections/{name}/{term}"), None)
            .await;
        assert_eq!(resigned.status, 200);
        assert_eq!(resigned.json["released"], true);
    }
    assert_eq!(leader(&app, &name).await["leader"], Value::Null);
}

#[tokio::test]
async fn proclaim_and_heartbeat_act_by_term_and_refuse_an_old_one() {
    let app = TestApp::spawn().await;
    let name = name();
    let old = term(&campaign(&app, &name, "cand-a", "a", json!({})).await);
    // The same candidate campaigning again is granted again, under a new term.
    let again = campaign(&app, &name, "cand-a", "a2", json!({})).await;
    assert_eq!(again.status, 200);
    let current = term(&again);
    assert!(current > old);

    let proclaimed = app
        .call(
            Method::POST,
            &format!("/elections/{name}/{current}"),
            Some("10.0.0.9:80"),
        )
        .await;
    assert_eq!(proclaimed.status, 200, "{}", proclaimed.json);
    assert_eq!(proclaimed.json["leader"]["value"], "10.0.0.9:80");
    let renewed = app
        .call(
            Method::POST,
            &format!("/elections/{name}/{current}/heartbeat?ttl=40s"),
            None,
        )
        .await;
    assert_eq!(renewed.status, 200);
    assert_eq!(renewed.json["leader"]["ttl"], "40s");

    for path in [
        format!("/elections/{name}/{old}"),
        format!("/elections/{name}/{old}/heartbeat"),
    ] {
        let refused = app.call(Method::POST, &path, Some("stale")).await;
        assert_eq!(refused.status, 409, "{path}");
        assert_eq!(refused.code(), "not_leader");
        assert_eq!(
            fence_header(&refused),
            current,
            "the Fence header names the current term"
        );
        let error = refused.json["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("its current term is {current}")),
            "{error}"
        );
    }
    assert_eq!(leader(&app, &name).await["leader"]["value"], "10.0.0.9:80");

    // With the leader's nonce as proof, a wrong one is refused.
    let wrong = app
        .call_with(
            Method::POST,
            &format!("/elections/{name}/{current}"),
            Some("hijack"),
            &[("lock-nonce", "not-the-leader")],
        )
        .await;
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.code(), "not_holder");
    let right = app
        .call_with(
            Method::POST,
            &format!("/elections/{name}/{current}"),
            Some("with proof"),
            &[("lock-nonce", "cand-a")],
        )
        .await;
    assert_eq!(right.status, 200);
}

#[tokio::test]
async fn a_leader_whose_lease_runs_out_leads_no_more() {
    let app = TestApp::spawn().await;
    let name = name();
    let first = term(&campaign(&app, &name, "cand-a", "a", json!({"ttl": "1s"})).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(leader(&app, &name).await["leader"], Value::Null);
    let late = app
        .call(
            Method::POST,
            &format!("/elections/{name}/{first}/heartbeat"),
            None,
        )
        .await;
    assert_eq!(late.code(), "not_leader");
    assert!(
        late.json["error"]
            .as_str()
            .unwrap()
            .contains("lease ran out")
    );
    // Once the skew margin has passed, the next candidate leads, under a greater term.
    let next = campaign(&app, &name, "cand-b", "b", json!({"wait": "10s"})).await;
    assert_eq!(next.status, 200, "{}", next.json);
    assert!(term(&next) > first);
}

#[tokio::test]
async fn observers_see_each_leader_and_no_leader() {
    let app = TestApp::spawn_with(quick_options()).await;
    let name = name();
    let mut stream = Stream::open_at(&app, &format!("/elections/{name}/events"), None).await;
    let state = stream.next().await;
    assert_eq!(state.event, "state");
    assert_eq!(state.data["leader"], Value::Null);

    let term = term(&campaign(&app, &name, "cand-a", "a", json!({"ttl": "30s"})).await);
    let elected = stream.next().await;
    assert_eq!(elected.event, "elected");
    assert_eq!(elected.data["leader"]["term"], term);
    assert_eq!(elected.id, elected.data["version"].as_u64());
    app.call(
        Method::POST,
        &format!("/elections/{name}/{term}"),
        Some("moved"),
    )
    .await;
    let proclaimed = stream.next().await;
    assert_eq!(proclaimed.event, "proclaimed");
    assert_eq!(proclaimed.data["leader"]["value"], "moved");
    app.call(Method::DELETE, &format!("/elections/{name}/{term}"), None)
        .await;
    let resigned = stream.next().await;
    assert_eq!(resigned.event, "resigned");
    assert_eq!(resigned.data["leader"], Value::Null);

    // A leader that stops renewing is reported gone though nothing is written.
    let short = campaign(&app, &name, "cand-b", "b", json!({"ttl": "1s"})).await;
    assert_eq!(stream.next().await.event, "elected");
    let expired = stream.next().await;
    assert_eq!(expired.event, "expired");
    assert_eq!(expired.data["leader"], Value::Null);
    assert!(expired.id.unwrap() > short.json["version"].as_u64().unwrap());
}

#[tokio::test]
async fn a_leader_elected_through_another_server_reaches_observers_and_long_polls() {
    let a = Arc::new(TestApp::spawn_with(quick_options()).await);
    let b = a.another_instance().await;
    let name = name();
    let mut stream = Stream::open_at(&a, &format!("/elections/{name}/events"), None).await;
    assert_eq!(stream.next().await.event, "state");
    let poll = {
        let a = a.clone();
        let path = format!("/elections/{name}?after=0&wait=15s");
        tokio::spawn(async move { a.call(Method::GET, &path, None).await })
    };
    let won = campaign(&b, &name, "cand-b", "via b", json!({"ttl": "30s"})).await;
    let elected = stream.next().await;
    assert_eq!(elected.event, "elected");
    assert_eq!(elected.data["leader"]["term"], term(&won));
    let polled = poll.await.unwrap();
    assert_eq!(polled.json["leader"]["value"], "via b");
    // A candidate waiting on A leads as soon as B's leader resigns.
    let waiting = {
        let (a, name) = (a.clone(), name.clone());
        tokio::spawn(
            async move { campaign(&a, &name, "cand-a", "via a", json!({"wait": "15s"})).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.call(
        Method::DELETE,
        &format!("/elections/{name}/{}", term(&won)),
        None,
    )
    .await;
    let next = waiting.await.unwrap();
    assert_eq!(next.status, 200, "{}", next.json);
    assert!(term(&next) > term(&won));
}

#[tokio::test]
async fn elections_keep_to_the_token_namespaces() {
    let tokens: [(&str, &[&str], bool); 1] = [("team-a-token", &["team-a"], false)];
    let (app, _dir) = spawn_with_tokens(&tokens, Options::default()).await;
    let body = json!({"nonce": "n1", "value": "v"}).to_string();
    let anonymous = app
        .call(Method::POST, "/elections/team-a:leader", Some(&body))
        .await;
    assert_eq!(anonymous.status, 401);
    let own = app
        .call_as(
            "team-a-token",
            Method::POST,
            "/elections/team-a:leader",
            Some(&body),
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.json);
    for (method, path) in [
        (Method::POST, "/elections/team-b:leader"),
        (Method::GET, "/elections/team-b:leader"),
        (Method::GET, "/elections/team-b:leader/events"),
    ] {
        let refused = app.call_as("team-a-token", method, path, Some(&body)).await;
        assert_eq!(refused.status, 403, "{path}");
    }
}

#[tokio::test]
async fn bad_election_requests_say_what_was_expected_and_change_nothing() {
    let app = TestApp::spawn().await;
    let name = name();
    let bad_term = app
        .call(
            Method::POST,
            &format!("/elections/{name}/abc/heartbeat"),
            None,
        )
        .await;
    assert_eq!(bad_term.status, 400);
    assert!(
        bad_term.json["error"]
            .as_str()
            .unwrap()
            .contains("term \"abc\" is not a term")
    );
    let unknown = app
        .call(
            Method::POST,
            &format!("/elections/{name}"),
            Some(r#"{"nonce": "n", "limit": 3}"#),
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json["error"]
            .as_str()
            .unwrap()
            .contains("unknown field")
    );
    let no_nonce = app
        .call(
            Method::POST,
            &format!("/elections/{name}"),
            Some(r#"{"value": "v"}"#),
        )
        .await;
    assert_eq!(no_nonce.status, 400);
    let bad_name = app.call(Method::GET, "/elections/no%20spaces", None).await;
    assert_eq!(bad_name.status, 400);
    assert_eq!(
        leader(&app, &name).await["version"],
        0,
        "nothing was written"
    );
}
