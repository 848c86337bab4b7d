//! A lock's own page at `/ui/locks/{name}`.

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

    let seen = page.refreshes().await;
    app.release("billing:report", fence).await;
    let granted = waiter.await.unwrap();
    page.two_more_refreshes(seen).await;
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
    let seen = page.refreshes().await;
    let fence = app
        .another_instance()
        .await
        .acquire("billing:later", "n", "")
        .await
        .fence();
    page.two_more_refreshes(seen).await;
    assert_eq!(detail(&page, "Fence").await, fence.to_string());
    assert_eq!(detail(&page, "State").await, "held");
    assert_eq!(detail(&page, "Namespace").await, "billing");
    page.close().await;
}
