//! The list at `/`: live across servers by the listing's stream, countdowns, filters
//! and pages.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::{Browser, Scheme};
use crate::helpers::TestApp;

/// The selector of the row of `lock`.
fn row(lock: &str) -> String {
    format!("document.querySelector('tr[data-lock=\"{lock}\"]')")
}

#[tokio::test]
async fn locks_taken_through_any_server_appear_and_a_release_leaves_held_only() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let alpha = app.acquire("alpha", "n1", "").await.fence();
    let page = Browser::open(&format!("{}/?held=1", app.base), 1280, 800, Scheme::Light).await;
    page.wait_until(
        &format!("{} !== null", row("alpha")),
        "the held lock is listed",
    )
    .await;
    assert_eq!(page.cell("alpha", "Fence").await, alpha.to_string());
    assert_eq!(page.cell("alpha", "State").await, "held");
    assert_eq!(
        page.eval("document.querySelector('input[name=held]').checked")
            .await,
        true,
        "the filter comes from the URL"
    );
    let beta = other.acquire("beta", "n2", "").await.fence();
    page.wait_until(
        &format!("{} !== null", row("beta")),
        "taken through the other server",
    )
    .await;
    assert_eq!(page.listed().await, ["alpha", "beta"]);
    assert_eq!(page.cell("beta", "Fence").await, beta.to_string());

    assert_eq!(other.release("alpha", alpha).await.json["released"], true);
    page.wait_until(
        &format!("{} === null", row("alpha")),
        "released through the other server",
    )
    .await;
    assert_eq!(page.listed().await, ["beta"]);
    page.close().await;
}

#[tokio::test]
async fn the_countdown_moves_and_a_lease_shows_expired_the_moment_it_ends() {
    let app = TestApp::spawn().await;
    // The lease starts once the page is open and has answered: a browser that starts
    // slowly on a busy machine must not find it already ended.
    let page = Browser::open(&app.base, 1280, 800, Scheme::Light).await;
    page.wait_until(
        "Number(document.body.dataset.refreshes ?? 0) >= 1",
        "the page's first answer",
    )
    .await;
    app.acquire("short", "n", "&ttl=6s").await;
    let countdown = format!("{}?.querySelector('.countdown')?.textContent", row("short"));
    page.wait_until(
        &format!("({countdown} ?? '').startsWith('in ')"),
        "a countdown",
    )
    .await;
    let first = page.eval(&countdown).await;
    page.wait_until(&format!("{countdown} !== {first}"), "the countdown moves")
        .await;
    let seconds = |text: Value| -> f64 {
        let text = text.as_str().unwrap().to_owned();
        text.trim_start_matches("in ")
            .trim_end_matches(" s")
            .parse()
            .unwrap_or_else(|_| panic!("a countdown in seconds: {text:?}"))
    };
    assert!(seconds(page.eval(&countdown).await) < seconds(first));
    assert_eq!(page.cell("short", "State").await, "held");

    // From here the server answers nothing: what changes is the page's own doing.
    page.eval("window.sameDocument = true").await;
    app.shut_down();
    page.wait_until(
        &format!("{}.dataset.state === 'expired'", row("short")),
        "the lease shows expired when it ends",
    )
    .await;
    assert_eq!(page.cell("short", "State").await, "expired");
    assert!(
        page.eval(&countdown)
            .await
            .as_str()
            .unwrap()
            .ends_with(" ago")
    );
    assert_eq!(page.eval("window.sameDocument").await, true, "no reload");
    page.close().await;
}

#[tokio::test]
async fn filters_and_pages_go_through_500_locks() {
    let app = Arc::new(TestApp::spawn().await);
    let mut names: Vec<String> = (0..500).map(|i| format!("page:{i:04}")).collect();
    names.extend((0..10).map(|i| format!("other:{i}")));
    for chunk in names.chunks(25) {
        let mut acquires = tokio::task::JoinSet::new();
        for name in chunk {
            let (app, name) = (app.clone(), name.clone());
            acquires.spawn(async move { (app.acquire(&name, "n", "").await.fence(), name) });
        }
        while let Some(acquired) = acquires.join_next().await {
            acquired.unwrap();
        }
    }

    let page = Browser::open(
        &format!("{}/?prefix=page:", app.base),
        1280,
        800,
        Scheme::Light,
    )
    .await;
    let mut listed = BTreeSet::new();
    let mut pages = 0;
    loop {
        pages += 1;
        page.wait_until(
            &format!("document.querySelector('.where').textContent.startsWith('page {pages} ')"),
            "the next page is shown",
        )
        .await;
        let names = page.listed().await;
        assert!(
            (1..=100).contains(&names.len()),
            "page {pages}: {} locks",
            names.len()
        );
        for name in names {
            assert!(
                name.starts_with("page:"),
                "{name} does not match the prefix"
            );
            assert!(listed.insert(name.clone()), "{name} is listed twice");
        }
        if page
            .eval("document.querySelector('button[name=next]').disabled")
            .await
            == true
        {
            break;
        }
        assert!(pages < 20, "the pages never end");
        page.click("button[name=next]").await;
    }
    assert_eq!(listed.len(), 500, "every lock of the prefix, once");
    assert!(pages >= 5, "100 locks a page at most: {pages} pages");
    page.click("button[name=previous]").await;
    page.wait_until(
        &format!(
            "document.querySelector('.where').textContent.startsWith('page {} ')",
            pages - 1
        ),
        "the previous page is shown again",
    )
    .await;

    page.type_into("input[name=prefix]", "").await;
    page.type_into("input[name=namespace]", "other").await;
    page.wait_until(
        "document.querySelectorAll('tbody tr').length === 10",
        "the namespace's 10 locks",
    )
    .await;
    assert!(
        page.listed()
            .await
            .iter()
            .all(|name| name.starts_with("other:"))
    );
    assert_eq!(page.eval("location.search").await, "?namespace=other");

    for name in ["other:0", "other:1", "other:2"] {
        let fence = app.status(name).await.fence();
        app.release(name, fence).await;
    }
    page.click("input[name=held]").await;
    page.wait_until(
        "document.querySelectorAll('tbody tr').length === 7",
        "the 7 held locks of the namespace",
    )
    .await;
    assert!(!page.listed().await.contains(&"other:0".to_owned()));

    page.type_into("input[name=namespace]", "nobody").await;
    page.wait_until(
        "document.querySelector('.notice.empty')?.textContent.includes('No lock matches')",
        "an empty state",
    )
    .await;
    page.click(".notice.empty button").await;
    page.wait_until(
        "document.querySelectorAll('tbody tr').length === 100",
        "a full page without filters",
    )
    .await;
    page.close().await;
}

#[tokio::test]
async fn the_list_follows_one_stream_and_asks_nothing_else() {
    let app = TestApp::spawn().await;
    let page = Browser::open(&app.base, 1280, 800, Scheme::Light).await;
    page.wait_until(
        "Number(document.body.dataset.refreshes ?? 0) >= 1",
        "a first answer",
    )
    .await;
    let fence = app.acquire("streamed", "n", "&ttl=30s").await.fence();
    page.wait_until(&format!("{} !== null", row("streamed")), "the new lock")
        .await;
    app.update("streamed", fence, "half done").await;
    page.wait_until(
        &format!("{}?.textContent.includes('half done')", row("streamed")),
        "its new body, by the lock's own event",
    )
    .await;
    assert_eq!(
        super::lock::requests(&app, "GET", "/locks").await,
        0,
        "nothing polled"
    );
    assert_eq!(super::lock::requests(&app, "GET", "/events/locks").await, 1);
    page.close().await;
}
