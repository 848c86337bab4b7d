//! A lock's page for an operator: the break-glass actions are shown only to a token
//! with the admin right, and each one is taken only once the operator confirms it.

use reqwest::{Method, StatusCode};

use super::{Browser, Scheme};
use crate::helpers::{Options, TestApp, spawn_with_token_file};

const OPERATOR: &str = "operator-s3cret";
const VIEWER: &str = "viewer-s3cret";

/// A server whose operator token has the admin right on `billing`, and whose viewer
/// token may only look; `billing:nightly` is held under a ten-minute lease.
async fn held() -> (TestApp, tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let entry = |token: &str, more: &str| {
        format!(
            "[[tokens]]\nsha256 = \"{}\"\nnamespaces = [\"billing\"]\nlist = true\n{more}\n",
            fencelock::auth::digest_hex(token)
        )
    };
    let text = entry(OPERATOR, "admin = true") + &entry(VIEWER, "");
    std::fs::write(dir.path().join("tokens.toml"), text).unwrap();
    let (app, dir) = spawn_with_token_file(dir, Options::default()).await;
    let path = "/locks/billing:nightly?nonce=n&ttl=10m";
    let fence = app.call_as(VIEWER, Method::POST, path, None).await.fence();
    (app, dir, fence)
}

async fn open_as(app: &TestApp, token: &str) -> Browser {
    let page = Browser::open(
        &format!("{}/ui/locks/billing:nightly", app.base),
        1280,
        800,
        Scheme::Light,
    )
    .await;
    page.wait_until(
        "document.querySelector('form.token') !== null",
        "the token form",
    )
    .await;
    page.type_into("form.token input[name=token]", token).await;
    page.click("form.token button[type=submit]").await;
    page.wait_until("document.querySelector('dl.details') !== null", "the lock")
        .await;
    page
}

#[tokio::test]
async fn a_viewer_without_the_right_is_shown_no_action() {
    let (app, _dir, _) = held().await;
    let page = open_as(&app, VIEWER).await;
    page.wait_until(
        "document.querySelector('section.actions').dataset.right === 'refused'",
        "the server's answer about the right",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('section.actions').hidden")
            .await,
        true
    );
    let refused = app
        .call_as(VIEWER, Method::GET, "/admin/locks/billing:nightly", None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    page.close().await;
}

#[tokio::test]
async fn an_operator_force_releases_a_lock_only_once_it_is_confirmed() {
    let (app, _dir, fence) = held().await;
    let page = open_as(&app, OPERATOR).await;
    page.wait_until(
        "document.querySelector('section.actions')?.hidden === false && document.querySelector('button[data-action=\"force-release\"]') !== null",
        "the operator's actions",
    )
    .await;
    // Enable applies only to a disabled lock.
    assert_eq!(
        page.eval("document.querySelector('button[data-action=\"enable\"]') === null")
            .await,
        true
    );

    page.click("button[data-action=\"force-release\"]").await;
    page.wait_until(
        "document.querySelector('[data-confirm=\"force-release\"]') !== null",
        "the confirmation",
    )
    .await;
    let says = page
        .eval("document.querySelector('[data-confirm=\"force-release\"]').textContent")
        .await;
    assert!(
        says.as_str().unwrap().contains(&format!("fence {fence}")),
        "{says}"
    );
    // Asked, not yet done.
    let status = app
        .call_as(VIEWER, Method::GET, "/locks/billing:nightly", None)
        .await;
    assert_eq!(
        (status.json["held"].as_bool(), status.fence()),
        (Some(true), fence)
    );

    page.type_into(
        "[data-confirm=\"force-release\"] input[name=reason]",
        "stuck since 03:10",
    )
    .await;
    page.click("button[data-yes=\"force-release\"]").await;
    page.wait_until(
        "document.querySelector('section.actions .notice')?.textContent.includes('Force-release: done')",
        "the action's answer",
    )
    .await;
    // The lock's stream shows what the operator did.
    page.wait_until(
        "Array.from(document.querySelectorAll('dt')).some(dt => dt.textContent === 'Force-released')",
        "the forced release on the page",
    )
    .await;
    let status = app
        .call_as(VIEWER, Method::GET, "/locks/billing:nightly", None)
        .await;
    assert_eq!(status.json["held"], false);
    assert!(status.json["forceReleasedTime"].is_string());

    // Disable, confirmed; then Enable is the button offered.
    page.click("button[data-action=\"disable\"]").await;
    page.click("button[data-yes=\"disable\"]").await;
    page.wait_until(
        "document.querySelector('button[data-action=\"enable\"]') !== null",
        "the lock shown disabled",
    )
    .await;
    let refused = app
        .call_as(VIEWER, Method::POST, "/locks/billing:nightly?nonce=m", None)
        .await;
    assert_eq!(refused.code(), "lock_disabled");
    page.close().await;
}
