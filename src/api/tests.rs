//! The router in process, on a store whose DynamoDB is nowhere: every answer given
//! before DynamoDB is asked (the gate, the extractors, every 4xx of a malformed
//! request) is fencelock's JSON, and asks DynamoDB nothing. These need no Java and
//! run with `cargo test --lib`; what touches the store is tested in `tests/api`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::{AppState, MAX_HEADER_BYTES, MAX_JSON_DEPTH, MAX_URI_BYTES, Security, router};
use crate::auth::{Auth, write_token_file};
use crate::clock::SystemClock;
use crate::domain::TtlBounds;
use crate::store::DynamoStore;

/// A server's state on a store that can reach no DynamoDB, with `security`.
fn state(security: Security) -> AppState {
    let store = DynamoStore::unreachable("fencelock-offline", Arc::new(SystemClock));
    let ttl = TtlBounds::new(
        Duration::from_secs(30),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )
    .unwrap();
    AppState::new(store, ttl, Duration::from_secs(20), 1024).with_security(security)
}

/// The status and JSON body of `request`, with the DynamoDB requests it made.
async fn answer(state: &AppState, request: Request<Body>) -> (StatusCode, Value, String) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status} answer is not JSON ({e}): {bytes:?}"));
    (status, json, dynamodb_requests(state))
}

/// The DynamoDB request counts of the server's metrics, as Prometheus text.
fn dynamodb_requests(state: &AppState) -> String {
    state
        .store
        .metrics()
        .render()
        .lines()
        .filter(|line| line.starts_with("fencelock_dynamodb_requests_total{"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn request(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn malformed_requests_are_refused_with_json_before_dynamodb_is_asked() {
    let open = state(Security::default());
    let deep = format!(
        "{{\"nonce\": \"n\", \"metadata\": {}1{}}}",
        "[".repeat(MAX_JSON_DEPTH + 1),
        "]".repeat(MAX_JSON_DEPTH + 1)
    );
    let long_uri = format!("/locks/job?nonce={}", "n".repeat(MAX_URI_BYTES));
    let cases: Vec<(Request<Body>, StatusCode, &str, &str)> = vec![
        (
            request("POST", "/locks/bad%20name?nonce=n", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "lock name",
        ),
        (
            request("POST", "/locks/job", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "nonce",
        ),
        (
            request("POST", "/locks/job?nonce=has%20space", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "nonce",
        ),
        (
            request("POST", "/locks/job?nonce=n&ttl=soon", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "ttl",
        ),
        (
            request("POST", "/locks/job?nonce=n&ttl=0", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "ttl",
        ),
        (
            request("POST", "/locks/job?nonce=n&colour=red", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "colour",
        ),
        (
            request("POST", "/locks/job/01/heartbeat", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "fence",
        ),
        (
            request("DELETE", "/locks/job/-1", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "fence",
        ),
        (
            request("POST", "/locks/job", &deep),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "deep",
        ),
        (
            request("POST", "/locks/job", "{\"nonce\":"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "JSON",
        ),
        (
            request("POST", "/locks/job/1", &"b".repeat(2048)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "1024",
        ),
        (
            request("POST", "/semaphores/pool?nonce=n&limit=0", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit",
        ),
        (
            request("POST", "/lock-groups?nonce=n", "{\"names\": []}"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "1 to 100 locks",
        ),
        (
            request("POST", "/api/v1/locks/orders", "{\"timeout\": 30}"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "owner",
        ),
        (
            request("GET", "/locks?limit=0", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit",
        ),
        (
            request("GET", "/locks?cursor=bm9wZQ", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "cursor",
        ),
        (
            request("GET", &long_uri, ""),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "limit",
        ),
        (
            request("GET", "/no/such/route", ""),
            StatusCode::NOT_FOUND,
            "not_found",
            "no route",
        ),
        (
            request("DELETE", "/locks/job", ""),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE",
        ),
    ];
    for (request, status, code, mentions) in cases {
        let said = format!("{} {}", request.method(), request.uri());
        let (got, json, asked) = answer(&open, request).await;
        assert_eq!(
            (got, json["code"].as_str()),
            (status, Some(code)),
            "{said}: {json}"
        );
        let error = json["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(mentions),
            "{said}: {error:?} does not mention {mentions:?}"
        );
        assert_eq!(asked, "", "{said} asked DynamoDB");
    }
    let mut big = request("POST", "/locks/job?nonce=n", "");
    big.headers_mut()
        .insert("x-padding", "p".repeat(MAX_HEADER_BYTES).parse().unwrap());
    let (status, json, asked) = answer(&open, big).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Some("headers_too_large")
        )
    );
    assert_eq!(asked, "");
}

#[tokio::test]
async fn the_gate_refuses_a_missing_unknown_or_narrow_token_before_dynamodb_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_token_file(
        dir.path(),
        "billing-s3cret",
        "\"billing\"",
        "list = false\n",
    );
    let guarded = state(Security {
        auth: Some(Arc::new(Auth::load(&path).unwrap())),
        require_nonce: true,
        ..Security::default()
    });
    let as_token = |method: &str, uri: &str, token: Option<&str>| {
        let mut request = request(method, uri, "");
        if let Some(token) = token {
            let bearer = format!("Bearer {token}").parse().unwrap();
            request.headers_mut().insert("authorization", bearer);
        }
        request
    };
    let billing = Some("billing-s3cret");
    let cases = [
        (
            "POST",
            "/locks/billing:run?nonce=n",
            None,
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/locks/billing:run?nonce=n",
            Some("guess"),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/api/v1/locks/billing:run",
            None,
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/locks/payroll:run?nonce=n",
            billing,
            403,
            "forbidden",
        ),
        ("GET", "/locks", billing, 403, "forbidden"),
        ("DELETE", "/locks/billing:run/7", billing, 403, "not_holder"),
    ];
    for (method, uri, token, status, code) in cases {
        let request = as_token(method, uri, token);
        let status = StatusCode::from_u16(status).unwrap();
        let said = format!("{} {}", request.method(), request.uri());
        let (got, json, asked) = answer(&guarded, request).await;
        assert_eq!(
            (got, json["code"].as_str()),
            (status, Some(code)),
            "{said}: {json}"
        );
        assert_eq!(asked, "", "{said} asked DynamoDB");
    }
    // The health route needs no token and asks nothing.
    let (status, json, asked) = answer(&guarded, request("GET", "/healthz", "")).await;
    assert_eq!(
        (status, json["status"].as_str(), asked.as_str()),
        (StatusCode::OK, Some("ok"), "")
    );
}

#[tokio::test]
async fn a_request_that_reaches_the_store_is_answered_503_with_retry_after_when_dynamodb_is_nowhere()
 {
    // The negative control of the two tests above: this one does ask DynamoDB.
    let open = state(Security::default());
    let response = router(open.clone())
        .oneshot(request("POST", "/locks/job?nonce=n", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_ne!(dynamodb_requests(&open), "", "the acquire asked DynamoDB");
}

#[tokio::test]
async fn lock_groups_are_refused_where_the_table_has_no_transactions() {
    let store = DynamoStore::unreachable("fencelock-mrsc", Arc::new(SystemClock))
        .on_table(crate::store::TableKind::StronglyConsistentGlobal);
    let ttl = TtlBounds::new(
        Duration::from_secs(30),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )
    .unwrap();
    let strong = AppState::new(store, ttl, Duration::from_secs(20), 1024);
    let locks = r#"{"locks": [{"name": "a", "fence": 1}]}"#;
    for (uri, body) in [
        ("/lock-groups?nonce=g", r#"{"names": ["a", "b"]}"#),
        ("/lock-groups/heartbeat", locks),
        ("/lock-groups/release", locks),
    ] {
        let (status, json, asked) = answer(&strong, request("POST", uri, body)).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{uri}: {json}");
        assert_eq!(json["code"], "unsupported", "{uri}");
        let error = json["error"].as_str().unwrap();
        assert!(error.contains("multi-Region strong consistency"), "{error}");
        assert!(error.contains("fencelock-mrsc"), "{error}");
        assert_eq!(asked, "", "{uri} asked DynamoDB");
    }
    // A lock alone is served (here: asked of a DynamoDB that is nowhere).
    let (status, _, asked) = answer(&strong, request("POST", "/locks/a?nonce=n", "")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(asked, "");
}
