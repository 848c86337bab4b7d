//! The web page over plain HTTP: what it is served with, and what it is not. What it
//! does in a browser is in `browser/`.

use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};

use crate::helpers::TestApp;

#[tokio::test]
async fn the_page_and_its_files_come_with_a_policy_that_forbids_inline_scripts_and_other_origins() {
    let app = TestApp::spawn().await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/ui/locks/billing:nightly", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/list.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        assert_eq!(header(CONTENT_TYPE), content_type, "{path}");
        let policy = header(CONTENT_SECURITY_POLICY);
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert_eq!(header(X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        assert_eq!(header(REFERRER_POLICY), "no-referrer", "{path}");
        assert!(!response.text().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_bad_lock_name_or_unknown_file_of_the_page_is_answered_in_json() {
    let app = TestApp::spawn().await;
    for (path, status, code) in [
        (
            "/ui/locks/has%20space",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        ("/ui/nothing.js", StatusCode::NOT_FOUND, "not_found"),
        ("/ui/", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let reply = app.call(reqwest::Method::GET, path, None).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{path}: {reply:?}"
        );
    }
}
