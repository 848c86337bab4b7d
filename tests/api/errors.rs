//! Bad input gets a 4xx JSON error that says what was expected, and changes nothing;
//! a failing DynamoDB gets 503 with Retry-After.

use reqwest::{Method, StatusCode, header};

use crate::helpers::{MAX_BODY, Reply, TestApp};

fn assert_invalid(reply: &Reply, mentions: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert_eq!(reply.code(), "invalid_request", "{reply:?}");
    let error = reply.json["error"].as_str().unwrap();
    assert!(
        error.contains(mentions),
        "{error:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn bad_acquires_are_refused_and_create_nothing() {
    let app = TestApp::spawn().await;
    let long_name = "a".repeat(256);
    let long_nonce = "n".repeat(65);
    let cases = [
        (
            format!("/locks/{long_name}?nonce=a"),
            None,
            "1 to 255 bytes",
        ),
        (
            "/locks/job%201?nonce=a".to_owned(),
            None,
            "expected only letters",
        ),
        ("/locks/job".to_owned(), None, "needs a nonce"),
        (
            "/locks/job?nonce=".to_owned(),
            None,
            "nonce must be 1 to 64",
        ),
        (
            format!("/locks/job?nonce={long_nonce}"),
            None,
            "nonce must be 1 to 64",
        ),
        (
            "/locks/job?nonce=a&ttl=soon".to_owned(),
            None,
            "expected for example",
        ),
        (
            "/locks/job?nonce=a&ttl=500ms".to_owned(),
            None,
            "outside the allowed range",
        ),
        (
            "/locks/job?nonce=a&ttl=2h".to_owned(),
            None,
            "outside the allowed range",
        ),
        (
            "/locks/job?nonce=a&nonse=b".to_owned(),
            None,
            "unknown field",
        ),
        ("/locks/job?nonce=a&wait=later".to_owned(), None, "wait: "),
        (
            "/locks/job".to_owned(),
            Some("{\"nonce\": \"a\""),
            "not the JSON expected",
        ),
        (
            "/locks/job".to_owned(),
            Some("{\"nonce\": 7}"),
            "not the JSON expected",
        ),
        (
            "/locks/job".to_owned(),
            Some("{\"nonce\": \"a\", \"lease\": \"5s\"}"),
            "unknown field",
        ),
        (
            "/locks/job".to_owned(),
            Some("{\"nonce\": \"a\", \"ttl\": -3}"),
            "ttl",
        ),
        (
            "/locks/job".to_owned(),
            Some("{\"nonce\": \"a\", \"ttl\": [1]}"),
            "ttl",
        ),
        (
            "/locks/job".to_owned(),
            Some("{\"nonce\": \"a\", \"owner\": \"\"}"),
            "owner must be",
        ),
    ];
    for (path, body, mentions) in cases {
        let reply = app.call(Method::POST, &path, body).await;
        assert_invalid(&reply, mentions);
    }
    assert_eq!(app.status("job").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_fences_and_ttls_on_a_held_lock_change_nothing() {
    let app = TestApp::spawn().await;
    let acquired = app.acquire("job", "a", "").await;
    let fence = acquired.fence();
    assert_invalid(
        &app.call(Method::POST, "/locks/job/abc/heartbeat", None)
            .await,
        "expected the whole number",
    );
    assert_invalid(
        &app.call(Method::POST, "/locks/job/-1", Some("x")).await,
        "expected the whole number",
    );
    assert_invalid(
        &app.call(Method::DELETE, "/locks/job/1.5", None).await,
        "expected the whole number",
    );
    assert_invalid(
        &app.call(Method::GET, "/locks/job/x", None).await,
        "expected the whole number",
    );
    let bad_ttl = format!("/locks/job/{fence}/heartbeat?ttl=0s");
    assert_invalid(
        &app.call(Method::POST, &bad_ttl, None).await,
        "outside the allowed range",
    );
    let bad_update_ttl = format!("/locks/job/{fence}?ttl=x");
    assert_invalid(
        &app.call(Method::POST, &bad_update_ttl, Some("new")).await,
        "ttl",
    );
    let bad_release = format!("/locks/job/{fence}?force=true");
    assert_invalid(
        &app.call(Method::DELETE, &bad_release, None).await,
        "unknown field",
    );
    let status = app.status("job").await;
    assert_eq!(status.json["held"], true);
    assert_eq!(status.json["body"], "");
    assert_eq!(status.json["expireTime"], acquired.json["expireTime"]);
}

#[tokio::test]
async fn a_body_that_is_not_utf8_or_too_large_changes_nothing() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "a", "").await.fence();
    app.update("job", fence, "kept").await;

    let url = format!("{}/locks/job/{fence}", app.base);
    let response = app
        .http
        .post(&url)
        .body(vec![b'o', b'k', 0xff, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let json: serde_json::Value = response.json().await.unwrap();
    assert!(json["error"].as_str().unwrap().contains("UTF-8"), "{json}");

    let too_large = app.update("job", fence, &"x".repeat(MAX_BODY + 1)).await;
    assert_eq!(
        (too_large.status, too_large.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    assert!(
        too_large.json["error"]
            .as_str()
            .unwrap()
            .contains(&MAX_BODY.to_string())
    );

    let at_limit = app.update("job", fence, &"y".repeat(MAX_BODY)).await;
    assert_eq!(at_limit.status, StatusCode::OK);
    app.update("job", fence, "kept").await;
    assert_eq!(app.status("job").await.json["body"], "kept");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let app = TestApp::spawn().await;
    let missing = app.call(Method::GET, "/nowhere", None).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert!(missing.json["error"].as_str().unwrap().contains("/nowhere"));
    let wrong = app.call(Method::DELETE, "/locks/job", None).await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let wrong_beat = app.call(Method::GET, "/locks/job/1/heartbeat", None).await;
    assert_eq!(wrong_beat.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn an_unreachable_dynamodb_answers_503_with_retry_after() {
    let app = TestApp::spawn_unreachable().await;
    let replies = [
        app.acquire("job", "a", "").await,
        app.heartbeat("job", 1).await,
        app.update("job", 1, "x").await,
        app.release("job", 1).await,
        app.status("job").await,
        app.check_fence("job", 1).await,
    ];
    for reply in replies {
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            "{reply:?}"
        );
        assert_eq!(reply.headers[header::RETRY_AFTER], "1");
        assert!(reply.json["error"].as_str().unwrap().contains("\"job\""));
    }
}

#[tokio::test]
async fn an_item_fencelock_did_not_write_answers_500_naming_the_lock() {
    let app = TestApp::spawn().await;
    app.raw()
        .put_strings(&[("name", "broken"), ("fence", "not a number")])
        .await;
    let reply = app.status("broken").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
    );
    let error = reply.json["error"].as_str().unwrap();
    assert!(
        error.contains("\"broken\"") && error.contains("malformed"),
        "{error}"
    );
}
