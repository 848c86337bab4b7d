//! The OpenAPI document: it parses, and lists every route the server answers.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};

use crate::helpers::TestApp;

/// Every route of the API, as (method, path template). A route added to the server
/// must be added here, and the document must then describe it.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/locks"),
    ("POST", "/locks/{name}"),
    ("PUT", "/locks/{name}"),
    ("GET", "/locks/{name}"),
    ("POST", "/locks/{name}/{fence}"),
    ("PUT", "/locks/{name}/{fence}"),
    ("DELETE", "/locks/{name}/{fence}"),
    ("GET", "/locks/{name}/{fence}"),
    ("POST", "/locks/{name}/{fence}/heartbeat"),
    ("PUT", "/locks/{name}/{fence}/heartbeat"),
    ("GET", "/locks/{name}/events"),
    ("GET", "/events/locks"),
    ("POST", "/lock-groups"),
    ("POST", "/lock-groups/heartbeat"),
    ("POST", "/lock-groups/release"),
    ("GET", "/semaphores"),
    ("POST", "/semaphores/{name}"),
    ("PUT", "/semaphores/{name}"),
    ("GET", "/semaphores/{name}"),
    ("DELETE", "/semaphores/{name}/{fence}"),
    ("GET", "/semaphores/{name}/{fence}"),
    ("POST", "/semaphores/{name}/{fence}/heartbeat"),
    ("PUT", "/semaphores/{name}/{fence}/heartbeat"),
    ("GET", "/semaphores/{name}/events"),
    ("POST", "/elections/{name}"),
    ("GET", "/elections/{name}"),
    ("POST", "/elections/{name}/{term}"),
    ("DELETE", "/elections/{name}/{term}"),
    ("POST", "/elections/{name}/{term}/heartbeat"),
    ("GET", "/elections/{name}/events"),
    ("GET", "/admin/locks/{name}"),
    ("POST", "/admin/locks/{name}/force-release"),
    ("POST", "/admin/locks/{name}/disable"),
    ("POST", "/admin/locks/{name}/enable"),
    ("POST", "/admin/locks/{name}/ask-release"),
    ("POST", "/admin/semaphores/{name}/{fence}/force-release"),
    ("POST", "/api/v1/locks/{resource}"),
    ("GET", "/api/v1/locks/{resource}/{token}"),
    ("PUT", "/api/v1/locks/{resource}/{token}"),
    ("DELETE", "/api/v1/locks/{resource}/{token}"),
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/ui/locks/{name}"),
    ("GET", "/ui/semaphores/{name}"),
    ("GET", "/ui/elections/{name}"),
    ("GET", "/ui/{asset}"),
];

#[tokio::test]
async fn the_document_parses_and_describes_exactly_the_routes_served() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let spec =
        oas3::from_json(response.text().await.unwrap()).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "version {}", spec.openapi);
    assert_eq!(spec.info.title, "fencelock");

    let documented: BTreeSet<(String, String)> = spec
        .operations()
        .map(|(path, method, _)| (method.to_string(), path))
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    for (path, method, operation) in spec.operations() {
        let responses = operation.responses.as_ref().expect("responses");
        assert!(
            !responses.is_empty(),
            "{method} {path} documents no responses"
        );
        if !["/openapi.json", "/healthz", "/metrics", "/"].contains(&path.as_str()) {
            assert!(
                responses
                    .keys()
                    .any(|status| status.starts_with('4') || status.starts_with('5')),
                "{method} {path} documents no error response"
            );
        }
    }
}

/// Each documented route answers with something other than "no such route".
#[tokio::test]
async fn every_documented_route_is_served() {
    let app = TestApp::spawn().await;
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{name}", "job")
            .replace("{resource}", "job")
            .replace("{fence}", "1")
            .replace("{term}", "1")
            .replace("{asset}", "app.js")
            .replace("{token}", "0123456789abcdef0123456789abcdef");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .http
            .request(method.clone(), format!("{}{concrete}", app.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        if path.ends_with("/events") || path.starts_with("/events/") {
            // An event stream does not end: its status says it is served.
            assert_eq!(status, StatusCode::OK, "{method} {concrete}");
            continue;
        }
        let body = response.text().await.unwrap();
        assert!(
            !(status == StatusCode::NOT_FOUND && body.contains("no route"))
                && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete} is not served: {status} {body}"
        );
    }
}
