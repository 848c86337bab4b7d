//! The page at desk and phone width, light and dark, and the screenshots of it in
//! `docs/` (`make screenshots` writes them there; other runs to `target/screenshots`).

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use super::{Browser, Scheme};
use crate::helpers::TestApp;

/// Locks as a team might have them: held, expired, released, with a waiter.
async fn a_days_locks(app: &Arc<TestApp>) {
    let holdings = [
        (
            "billing:invoices-nightly",
            "5m",
            "cron@batch-2 pid 4242: invoices.sh --full",
            "copied 3 of 7 tables; next: orders",
        ),
        (
            "billing:ledger-close",
            "2m",
            "ledger-close on db1",
            "rollforward",
        ),
        ("reports:weekly-export", "1m", "reports-worker-7", ""),
        (
            "search:reindex",
            "10m",
            "reindexer on search-3",
            "shard 12 of 40 done",
        ),
        ("deploy", "30s", "ci pipeline 9812", ""),
        ("ops:backup-db1", "1s", "backup on db1", "rollback"),
    ];
    for (name, ttl, owner, body) in holdings {
        let acquire = json!({"nonce": "n", "ttl": ttl, "owner": owner});
        let fence = app
            .call(
                Method::POST,
                &format!("/locks/{name}"),
                Some(&acquire.to_string()),
            )
            .await
            .fence();
        if !body.is_empty() {
            app.update(name, fence, body).await;
        }
    }
    let released = app.acquire("reports:daily-summary", "n", "").await.fence();
    app.release("reports:daily-summary", released).await;
    let app = app.clone();
    tokio::spawn(async move { app.acquire("billing:ledger-close", "n2", "&wait=20s").await });
}

#[tokio::test]
async fn the_page_reads_at_desk_and_phone_width_in_light_and_dark() {
    let app = Arc::new(TestApp::spawn().await);
    a_days_locks(&app).await;
    let dir = std::env::var("FENCELOCK_SCREENSHOTS")
        .unwrap_or_else(|_| format!("{}/target/screenshots", env!("CARGO_MANIFEST_DIR")));
    std::fs::create_dir_all(&dir).unwrap();
    let mut backgrounds = Vec::new();
    for (file, width, height, scheme) in [
        ("ui-light.png", 1280, 800, Scheme::Light),
        ("ui-dark.png", 1280, 800, Scheme::Dark),
        ("ui-phone.png", 390, 844, Scheme::Light),
    ] {
        let page = Browser::open(&app.base, width, height, scheme).await;
        page.wait_until(
            "document.querySelector('tr[data-lock=\"ops:backup-db1\"]')?.dataset.state === 'expired' \
             && document.querySelector('tr[data-lock=\"billing:ledger-close\"] td[data-label=\"Waiting\"]')?.textContent === '1'",
            "every lock, the expired one expired and the waiter counted",
        )
        .await;
        assert_eq!(page.listed().await.len(), 7);
        assert_eq!(page.eval("innerWidth").await, width, "the window's width");
        assert_eq!(
            page.eval("document.documentElement.scrollWidth <= innerWidth")
                .await,
            true,
            "{file}: nothing is cut off or scrolls sideways at {width} px"
        );
        backgrounds.push(
            page.eval("getComputedStyle(document.body).backgroundColor")
                .await
                .as_str()
                .unwrap()
                .to_owned(),
        );
        std::fs::write(format!("{dir}/{file}"), page.screenshot().await).unwrap();
        page.close().await;
    }
    let brightness = |rgb: &str| -> u32 {
        rgb.trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(", ")
            .map(|c| c.parse::<u32>().unwrap())
            .sum()
    };
    assert!(
        brightness(&backgrounds[0]) > 600,
        "light: {}",
        backgrounds[0]
    );
    assert!(
        brightness(&backgrounds[1]) < 150,
        "dark: {}",
        backgrounds[1]
    );
}
