//! Listing locks across pages, with filters.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;

/// Every page of `query`, following the cursors.
async fn all_pages(app: &TestApp, query: &str) -> (Vec<Value>, usize) {
    let mut locks = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/locks?{query}&cursor={c}"),
            None => format!("/locks?{query}"),
        };
        let page = app.call(Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        pages += 1;
        locks.extend(page.json["locks"].as_array().unwrap().iter().cloned());
        match page.json["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (locks, pages),
        }
        assert!(pages < 50, "the cursors never end");
    }
}

fn names(locks: &[Value]) -> Vec<String> {
    locks
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn listing_pages_through_every_lock_once() {
    let app = TestApp::spawn().await;
    let mut expected = BTreeSet::new();
    for i in 0..7 {
        let name = format!("batch:job-{i}");
        app.acquire(&name, "secret-nonce", "").await;
        expected.insert(name);
    }
    app.acquire("other", "secret-nonce", "").await;
    let (locks, pages) = all_pages(&app, "prefix=batch:&limit=3").await;
    let listed = names(&locks);
    assert_eq!(listed.len(), 7, "each lock once: {listed:?}");
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(
        pages >= 3,
        "7 locks at 3 a page take at least 3 pages, took {pages}"
    );
    assert!(
        locks
            .iter()
            .all(|l| l["fence"].is_u64() && l["held"] == true)
    );
    let text = serde_json::to_string(&locks).unwrap();
    assert!(!text.contains("secret-nonce") && !text.contains("token"));

    let (everything, _) = all_pages(&app, "limit=1000").await;
    assert_eq!(everything.len(), 8);
}

#[tokio::test]
async fn held_lists_only_live_leases() {
    let app = TestApp::spawn().await;
    let released = app.acquire("a", "n", "").await.fence();
    app.release("a", released).await;
    app.acquire("b", "n", "").await;
    let (held, _) = all_pages(&app, "held=true").await;
    assert_eq!(names(&held), vec!["b"]);
    let (all, _) = all_pages(&app, "held=false").await;
    assert_eq!(all.len(), 2);
}

#[tokio::test]
async fn namespace_lists_one_namespace_and_default_holds_names_without_one() {
    let app = TestApp::spawn().await;
    for name in [
        "billing:a",
        "billing:b",
        "billing-old:c",
        "plain",
        "default:d",
        "ops:e",
    ] {
        app.acquire(name, "n", "").await;
    }
    let listed = |query: &'static str| {
        let app = &app;
        async move {
            let (locks, _) = all_pages(app, query).await;
            let mut names = names(&locks);
            names.sort();
            names
        }
    };
    assert_eq!(
        listed("namespace=billing").await,
        ["billing:a", "billing:b"]
    );
    assert_eq!(listed("namespace=default").await, ["default:d", "plain"]);
    assert_eq!(
        listed("namespace=billing&prefix=billing:b").await,
        ["billing:b"]
    );
    assert!(listed("namespace=nobody").await.is_empty());
    assert_eq!(listed("namespace=").await.len(), 6, "empty is no filter");
}

#[tokio::test]
async fn status_and_list_count_the_acquires_waiting_on_the_server_that_answers() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let other = app.another_instance().await;
    app.acquire("busy", "holder", "").await;
    app.acquire("idle", "holder", "").await;
    let mut waiting = Vec::new();
    for i in 0..2 {
        let app = app.clone();
        waiting.push(tokio::spawn(async move {
            app.acquire("busy", &format!("waiter-{i}"), "&wait=15s")
                .await
        }));
    }
    // The waiters are counted once the server holds them.
    let mut counted = 0;
    for _ in 0..200 {
        counted = app.status("busy").await.json["waiters"].as_u64().unwrap();
        if counted == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(counted, 2);
    assert_eq!(
        other.status("busy").await.json["waiters"],
        0,
        "another server holds none"
    );
    assert_eq!(app.status("idle").await.json["waiters"], 0);
    let (locks, _) = all_pages(&app, "limit=10").await;
    let count = |name: &str| locks.iter().find(|l| l["name"] == name).unwrap()["waiters"].clone();
    assert_eq!((count("busy"), count("idle")), (2.into(), 0.into()));
    // An acquire's answer is about the holding, not the server: no count.
    let acquired = app.acquire("third", "n", "").await;
    assert!(acquired.json.get("waiters").is_none(), "{acquired:?}");
    for waiter in waiting {
        waiter.abort();
    }
}

#[tokio::test]
async fn bad_listing_parameters_answer_400() {
    let app = TestApp::spawn().await;
    for (query, mentions) in [
        ("limit=0", "limit must be 1 to 1000"),
        ("limit=1001", "limit must be 1 to 1000"),
        ("limit=many", "limit"),
        ("held=maybe", "held"),
        ("cursor=%21%21", "cursor"),
        ("prefix=a%20b", "prefix"),
        ("namespace=a:b", "namespace"),
        ("sort=name", "unknown field"),
    ] {
        let reply = app
            .call(Method::GET, &format!("/locks?{query}"), None)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{query}"
        );
        assert!(
            reply.json["error"].as_str().unwrap().contains(mentions),
            "{query}: {reply:?}"
        );
    }
}
