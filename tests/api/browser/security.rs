//! What the page must never do: run a value as code, show a secret, or show a
//! namespace the viewer's token may not list; and how it asks for a token.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use super::{Browser, Scheme};
use crate::helpers::{Options, TestApp, spawn_with_tokens};

const VIEWER: &str = "viewer-s3cret";
const WRITER: &str = "writer-s3cret";
const ADMIN: &str = "admin-s3cret";

#[tokio::test]
async fn values_of_a_lock_are_shown_as_text_and_run_nothing() {
    let app = TestApp::spawn().await;
    let owner = "<script>window.pwned = 'owner'</script>";
    let body = "<img src=x onerror=\"window.pwned = 'body'\">";
    let metadata = json!({"note": "</pre><img src=x onerror=\"window.pwned = 'metadata'\">"});
    let acquire = json!({"nonce": "nonce-never-shown", "owner": owner, "metadata": metadata});
    let fence = app
        .call(Method::POST, "/locks/xss", Some(&acquire.to_string()))
        .await
        .fence();
    app.update("xss", fence, body).await;

    let page = Browser::open(&app.base, 1280, 800, Scheme::Light).await;
    page.wait_until(
        "document.querySelector('tr[data-lock=\"xss\"]') !== null",
        "the lock",
    )
    .await;
    assert_eq!(page.cell("xss", "Owner").await, owner);
    assert_eq!(page.cell("xss", "Body").await, body);
    for url in ["/", "/ui/locks/xss"] {
        page.goto(&format!("{}{url}", app.base)).await;
        // The list and a lock's page are sent their state once, then each change.
        page.wait_until(
            "Number(document.body.dataset.refreshes ?? 0) >= 1",
            "the page's first answer",
        )
        .await;
        assert_eq!(
            page.eval("document.querySelectorAll('main img, main script, main iframe').length")
                .await,
            0,
            "{url}: a value became markup"
        );
        assert_eq!(page.eval("typeof window.pwned").await, "undefined", "{url}");
        let text = page.eval("document.body.innerText").await;
        assert!(
            !text.as_str().unwrap().contains("nonce-never-shown"),
            "{url}"
        );
    }
    assert_eq!(
        page.eval("document.querySelector('pre.body').textContent")
            .await,
        body
    );
    assert!(
        page.eval("document.querySelector('pre.metadata').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("</pre><img src=x onerror=")
    );
    page.close().await;
}

/// A server with a viewer (namespace `billing`, may list), a writer (`billing`, may not
/// list) and an admin; `billing:a` and `secret:b` are held.
async fn guarded() -> (Arc<TestApp>, tempfile::TempDir) {
    let tokens: [(&str, &[&str], bool); 3] = [
        (VIEWER, &["billing"], true),
        (WRITER, &["billing"], false),
        (ADMIN, &["*"], true),
    ];
    let (app, dir) = spawn_with_tokens(&tokens, Options::default()).await;
    let bearer = format!("Bearer {ADMIN}");
    for name in ["billing:a", "secret:b"] {
        let path = format!("/locks/{name}?nonce=n");
        app.call_with(Method::POST, &path, None, &[("authorization", &bearer)])
            .await;
    }
    (Arc::new(app), dir)
}

async fn enter_token(page: &Browser, token: &str) {
    page.type_into("form.token input[name=token]", token).await;
    page.click("form.token button[type=submit]").await;
}

async fn notice_says(page: &Browser, text: &str) {
    page.wait_until(
        &format!("document.querySelector('.notice')?.textContent.includes('{text}')"),
        text,
    )
    .await;
}

/// While the page waits for a token it asks the server nothing more (a refusal is not
/// asked again until a token is given), and a token half typed stays as typed.
#[tokio::test]
async fn a_token_being_typed_survives_the_page_waiting_for_it() {
    let (app, _dir) = guarded().await;
    let page = Browser::open(&app.base, 1280, 800, Scheme::Light).await;
    notice_says(&page, "This server asks for a token").await;
    page.type_into("form.token input[name=token]", "half-typ")
        .await;
    let seen = page.refreshes().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(page.refreshes().await, seen, "nothing asked meanwhile");
    assert_eq!(
        page.eval("document.querySelector('form.token input[name=token]').value")
            .await,
        "half-typ"
    );
    // And the form still works: a wrong token is answered as one.
    page.click("form.token button[type=submit]").await;
    notice_says(&page, "does not accept this token").await;
}

#[tokio::test]
async fn the_page_asks_for_a_token_keeps_it_in_the_tab_and_lists_only_what_it_may() {
    let (app, _dir) = guarded().await;
    let page = Browser::open(&app.base, 1280, 800, Scheme::Light).await;
    notice_says(&page, "This server asks for a token").await;
    enter_token(&page, "not-a-token").await;
    notice_says(&page, "does not accept this token").await;

    enter_token(&page, VIEWER).await;
    page.wait_until(
        "document.querySelectorAll('tbody tr').length > 0",
        "the list",
    )
    .await;
    assert_eq!(page.listed().await, ["billing:a"]);
    let text = page.eval("document.body.innerText").await;
    assert!(!text.as_str().unwrap().contains("secret:b"), "{text}");
    assert_eq!(
        page.eval("sessionStorage.getItem('fencelock.token')").await,
        VIEWER
    );
    assert_eq!(
        page.eval("localStorage.length").await,
        0,
        "not kept beyond the tab"
    );
    assert_eq!(page.eval("document.cookie").await, "", "never a cookie");
    assert!(
        !page
            .eval("location.href")
            .await
            .as_str()
            .unwrap()
            .contains(VIEWER)
    );

    page.type_into("input[name=namespace]", "secret").await;
    notice_says(&page, "may not use namespace").await;
    assert_eq!(
        page.eval("document.querySelectorAll('tbody tr').length")
            .await,
        0
    );
    page.goto(&format!("{}/ui/locks/secret:b", app.base)).await;
    notice_says(&page, "may not use namespace").await;
    page.goto(&format!("{}/ui/locks/billing:a", app.base)).await;
    page.wait_until(
        "document.querySelector('dl.details') !== null",
        "a lock it may see",
    )
    .await;

    page.click("#forget-token").await;
    notice_says(&page, "This server asks for a token").await;
    assert_eq!(page.eval("sessionStorage.length").await, 0);
    page.goto(&app.base).await;
    enter_token(&page, WRITER).await;
    notice_says(&page, "may not list locks").await;
    page.close().await;
}
