//! A lock's own page at `/ui/locks/{name}`, an election's at `/ui/elections/{name}`
//! and a semaphore's at `/ui/semaphores/{name}`.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use super::{Browser, Scheme};
use crate::helpers::TestApp;

/// The text of the value of `term` on a lock's page.
async fn detail(page: &Browser, term: &str) -> String {
    let text = page
        .eval(&format!(
            "Array.from(document.querySelectorAll('dt')).find(dt => dt.textContent === '{term}')?.nextElementSibling.textContent"
        ))
        .await;
    text.as_str()
        .unwrap_or_else(|| panic!("no {term} on the page"))
        .to_owned()
}

#[tokio::test]
async fn a_locks_page_shows_all_of_it_at_a_url_to_share_and_follows_it() {
    let app = Arc::new(TestApp::spawn().await);
    let acquire = json!({"nonce": "n1", "ttl": "2m", "owner": "backup on db1",
        "metadata": {"run": 42, "tables": ["orders", "invoices"]}});
    let fence = app
        .call(
            Method::POST,
            "/locks/billing:report",
            Some(&acquire.to_string()),
        )
        .await
        .fence();
    let body = "copied 3 of 7 tables; ".repeat(10);
    app.update("billing:report", fence, &body).await;
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { app.acquire("billing:report", "n2", "&wait=15s").await })
    };

    let page = Browser::open(&app.base, 1280, 800, Scheme::Light).await;
    page.wait_until(
        "document.querySelector('tr[data-lock=\"billing:report\"] td[data-label=\"Waiting\"]')?.textContent === '1'",
        "the list counts the waiting acquire",
    )
    .await;
    let preview: String = body.chars().take(80).collect();
    assert_eq!(
        page.cell("billing:report", "Body").await,
        format!("{preview}…")
    );
    page.click("a[href=\"/ui/locks/billing:report\"]").await;
    page.wait_until(
        "document.querySelector('pre.body') !== null",
        "the lock's page",
    )
    .await;
    assert_eq!(
        page.eval("location.pathname").await,
        "/ui/locks/billing:report"
    );
    assert_eq!(
        page.eval("document.querySelector('pre.body').textContent")
            .await,
        body.as_str()
    );
    assert_eq!(detail(&page, "Owner").await, "backup on db1");
    assert_eq!(detail(&page, "Fence").await, fence.to_string());
    assert_eq!(detail(&page, "Namespace").await, "billing");
    assert_eq!(detail(&page, "Lease length").await, "120s");
    assert_eq!(detail(&page, "Acquires waiting on this server").await, "1");
    let metadata: Value = serde_json::from_str(&detail(&page, "Metadata").await).unwrap();
    assert_eq!(metadata, acquire["metadata"]);
    let acquired = app.status("billing:report").await.json["acquireTime"].clone();
    assert_eq!(
        page.eval("document.querySelector('dd time').getAttribute('title')")
            .await,
        format!("{} (UTC)", acquired.as_str().unwrap()),
        "UTC on hover"
    );

    // The page follows the lock's stream: it asks nothing more of the server.
    let status_reads = requests(&app, "GET", "/locks/{name}").await;
    let streams = requests(&app, "GET", "/locks/{name}/events").await;
    assert_eq!(streams, 1, "one stream, the page's");
    let seen = page.refreshes().await;
    app.release("billing:report", fence).await;
    let granted = waiter.await.unwrap();
    page.two_more_refreshes(seen).await;
    page.wait_until(
        &format!(
            "document.querySelector('dl[data-lock] code')?.textContent === '{}'",
            granted.fence()
        ),
        "the waiter's grant",
    )
    .await;
    assert_eq!(
        requests(&app, "GET", "/locks/{name}").await,
        status_reads,
        "no status read: the changes came by the stream"
    );
    assert_eq!(
        detail(&page, "Fence").await,
        granted.fence().to_string(),
        "the waiter's now"
    );
    assert_eq!(detail(&page, "Acquires waiting on this server").await, "0");

    // The same URL, opened anew, shows the same lock.
    let shared = Browser::open(
        &format!("{}/ui/locks/billing:report", app.base),
        390,
        844,
        Scheme::Dark,
    )
    .await;
    shared
        .wait_until(
            "document.querySelector('pre.body') !== null",
            "the shared page",
        )
        .await;
    assert_eq!(detail(&shared, "Fence").await, granted.fence().to_string());
    shared.close().await;
    page.close().await;
}

#[tokio::test]
async fn a_page_for_a_lock_without_a_record_says_so_and_shows_it_once_taken() {
    let app = TestApp::spawn().await;
    let page = Browser::open(
        &format!("{}/ui/locks/billing:later", app.base),
        1280,
        800,
        Scheme::Light,
    )
    .await;
    page.wait_until(
        "document.querySelector('.notice.empty')?.textContent.includes('has no record')",
        "a page that says the lock has no record",
    )
    .await;
    let fence = app
        .another_instance()
        .await
        .acquire("billing:later", "n", "")
        .await
        .fence();
    // Written through another server: this one's stream reads it within its interval.
    page.wait_until(
        &format!("document.querySelector('dl[data-lock] code')?.textContent === '{fence}'"),
        "the lock, once taken through another server",
    )
    .await;
    assert_eq!(detail(&page, "Fence").await, fence.to_string());
    assert_eq!(detail(&page, "State").await, "held");
    assert_eq!(detail(&page, "Namespace").await, "billing");
    page.close().await;
}

/// How many `method route` requests `app` has answered, from its metrics.
pub(super) async fn requests(app: &TestApp, method: &str, route: &str) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = format!("method=\"{method}\",route=\"{route}\"");
    text.lines()
        .filter(|line| {
            line.starts_with("fencelock_http_requests_total{")
                || line.starts_with("http_requests_total{")
        })
        .filter(|line| line.contains(&labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn an_elections_page_follows_its_leaders_by_the_stream() {
    let app = TestApp::spawn().await;
    let page = Browser::open(
        &format!("{}/ui/elections/ops:scheduler", app.base),
        1280,
        800,
        Scheme::Light,
    )
    .await;
    page.wait_until(
        "document.querySelector('.notice.empty')?.textContent.includes('Nobody leads')",
        "a page that says nobody leads",
    )
    .await;
    let campaign = json!({"nonce": "c1", "value": "10.0.0.7:8080", "owner": "web-3", "ttl": "1m"});
    let won = app
        .call(
            Method::POST,
            "/elections/ops:scheduler",
            Some(&campaign.to_string()),
        )
        .await;
    let term = won.json["leader"]["term"].as_u64().unwrap();
    page.wait_until(
        &format!("document.querySelector('dl[data-election] code')?.textContent === '{term}'"),
        "the leader's term",
    )
    .await;
    assert_eq!(detail(&page, "Leader").await, "web-3");
    assert_eq!(detail(&page, "Value").await, "10.0.0.7:8080");
    assert_eq!(detail(&page, "Namespace").await, "ops");
    assert_eq!(detail(&page, "Lease length").await, "60s");
    app.call(
        Method::POST,
        &format!("/elections/ops:scheduler/{term}"),
        Some("10.0.0.8:8080"),
    )
    .await;
    page.wait_until(
        "document.querySelector('dl[data-election]')?.textContent.includes('10.0.0.8:8080')",
        "the proclaimed value",
    )
    .await;
    app.call(
        Method::DELETE,
        &format!("/elections/ops:scheduler/{term}"),
        None,
    )
    .await;
    page.wait_until(
        "document.querySelector('.notice.empty')?.textContent.includes('Nobody leads')",
        "nobody leads once the leader resigned",
    )
    .await;
    assert_eq!(
        requests(&app, "GET", "/elections/{name}").await,
        0,
        "nothing polled"
    );
    assert_eq!(requests(&app, "GET", "/elections/{name}/events").await, 1);
    page.close().await;
}

#[tokio::test]
async fn a_semaphores_page_shows_its_limit_and_each_holder() {
    let app = TestApp::spawn().await;
    let mut fences = Vec::new();
    for (nonce, owner) in [("s1", "encoder-1"), ("s2", "encoder-2")] {
        let slot = json!({"nonce": nonce, "limit": 3, "owner": owner, "ttl": "1m"});
        let reply = app
            .call(
                Method::POST,
                "/semaphores/media:encode",
                Some(&slot.to_string()),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.json);
        fences.push(reply.fence());
    }
    let page = Browser::open(
        &format!("{}/ui/semaphores/media:encode", app.base),
        1280,
        800,
        Scheme::Light,
    )
    .await;
    page.wait_until(
        "document.querySelectorAll('tr[data-fence]').length === 2",
        "both holders",
    )
    .await;
    assert_eq!(detail(&page, "Limit").await, "3");
    assert_eq!(detail(&page, "Free").await, "1");
    for fence in &fences {
        let owner = page
            .eval(&format!(
                "document.querySelector('tr[data-fence=\"{fence}\"] td[data-label=\"Owner\"]').textContent"
            ))
            .await;
        assert!(owner.as_str().unwrap().starts_with("encoder-"), "{owner}");
    }
    app.call(
        Method::DELETE,
        &format!("/semaphores/media:encode/{}", fences[0]),
        None,
    )
    .await;
    page.wait_until(
        "document.querySelectorAll('tr[data-fence]').length === 1",
        "one holder once the other released",
    )
    .await;
    assert_eq!(detail(&page, "Free").await, "2");
    assert_eq!(
        requests(&app, "GET", "/semaphores/{name}").await,
        0,
        "nothing polled: the semaphore's stream told it"
    );
    assert_eq!(requests(&app, "GET", "/semaphores/{name}/events").await, 1);
    page.close().await;
}

#[tokio::test]
async fn a_locks_page_shows_how_long_it_is_held_and_whether_it_is_renewed_in_time() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("renewing", "n", "&ttl=6s").await.fence();
    let page = Browser::open(
        &format!("{}/ui/locks/renewing", app.base),
        1280,
        800,
        Scheme::Light,
    )
    .await;
    let renewal = "document.querySelector('[data-renewal]')?.dataset.renewal";
    page.wait_until(&format!("{renewal} === 'on-time'"), "renewed in time")
        .await;
    assert!(detail(&page, "Held for").await.ends_with(" s"));
    // No heartbeat: past two thirds of the lease it is late, and the page says so
    // without a word from the server.
    page.wait_until(&format!("{renewal} === 'late'"), "renewed late")
        .await;
    assert!(
        detail(&page, "Renewal")
            .await
            .starts_with("late: not renewed for")
    );
    // A heartbeat puts it back in time.
    assert_eq!(
        app.heartbeat("renewing", fence).await.status,
        reqwest::StatusCode::OK
    );
    page.wait_until(&format!("{renewal} === 'on-time'"), "renewed again")
        .await;
    page.close().await;
}
