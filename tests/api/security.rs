//! Tokens and namespaces, holder proof, per-token and per-lock limits, and size limits.

use std::sync::Arc;
use std::time::Duration;

use fencelock::api::{Limits, Security};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    Options, Reply, TestApp, dynamodb_endpoint, fencelock_cli, signal, sorted_names, spawn_binary,
    spawn_with_tokens, token_file,
};

const BILLING: &str = "billing-s3cret";
const OPS: &str = "ops-s3cret";
const NIGHTLY: &str = "nightly-s3cret";

/// A server with three tokens: billing (namespace `billing`), ops (all, may list),
/// nightly (`default`, may list).
async fn guarded(security: Security) -> (TestApp, tempfile::TempDir) {
    guarded_with(security, Limits::default()).await
}

/// As [`guarded`], with `limits`.
async fn guarded_with(security: Security, limits: Limits) -> (TestApp, tempfile::TempDir) {
    let tokens: [(&str, &[&str], bool); 3] = [
        (BILLING, &["billing"], false),
        (OPS, &["*"], true),
        (NIGHTLY, &["default"], true),
    ];
    let options = Options {
        security,
        limits,
        ..Options::default()
    };
    spawn_with_tokens(&tokens, options).await
}

async fn as_token(app: &TestApp, token: &str, method: Method, path: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    app.call_with(method, path, None, &[("authorization", &bearer)])
        .await
}

#[tokio::test]
async fn a_lock_request_without_a_listed_token_is_refused_with_401() {
    let (app, _dir) = guarded(Security::default()).await;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("no token", &[]),
        ("unknown token", &[("authorization", "Bearer guess")]),
        ("another scheme", &[("authorization", "Basic YmlsbGluZw==")]),
        ("empty token", &[("authorization", "Bearer ")]),
    ];
    for (case, headers) in cases {
        for (method, path) in [
            (Method::POST, "/locks/billing:run?nonce=n1"),
            (Method::GET, "/locks"),
            (Method::POST, "/api/v1/locks/billing:run"),
        ] {
            let reply = app.call_with(method, path, None, headers).await;
            assert_eq!(
                (reply.status, reply.code()),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
                "{case}: {path}"
            );
            assert_eq!(
                reply.headers["www-authenticate"], "Bearer realm=\"fencelock\"",
                "{case}"
            );
        }
    }
    assert_eq!(
        as_token(&app, OPS, Method::GET, "/locks/billing:run")
            .await
            .code(),
        "not_found",
        "nothing was acquired"
    );
    // The service's own routes stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_token_acts_only_in_its_namespaces() {
    let (app, _dir) = guarded(Security::default()).await;
    let granted = as_token(
        &app,
        BILLING,
        Method::POST,
        "/locks/billing:invoices?nonce=n1",
    )
    .await;
    assert_eq!(granted.status, StatusCode::OK, "{granted:?}");
    let fence = granted.fence();

    // Another team's locks, by every route, are refused and left alone.
    let theirs = as_token(&app, OPS, Method::POST, "/locks/payroll:run?nonce=ops").await;
    let their_fence = theirs.fence();
    let gorilla = app
        .call_with(
            Method::POST,
            "/api/v1/locks/payroll:gorilla",
            Some(r#"{"owner": "ops", "timeout": 30}"#),
            &[("authorization", &format!("Bearer {OPS}"))],
        )
        .await;
    let token = gorilla.json["token"].as_str().unwrap().to_owned();
    let routes = [
        (Method::POST, "/locks/payroll:run?nonce=billing".to_owned()),
        (Method::PUT, "/locks/payroll:run?nonce=billing".to_owned()),
        (Method::GET, "/locks/payroll:run".to_owned()),
        (Method::GET, format!("/locks/payroll:run/{their_fence}")),
        (Method::POST, format!("/locks/payroll:run/{their_fence}")),
        (Method::PUT, format!("/locks/payroll:run/{their_fence}")),
        (Method::DELETE, format!("/locks/payroll:run/{their_fence}")),
        (
            Method::POST,
            format!("/locks/payroll:run/{their_fence}/heartbeat"),
        ),
        (
            Method::PUT,
            format!("/locks/payroll:run/{their_fence}/heartbeat"),
        ),
        (Method::POST, "/api/v1/locks/payroll:gorilla".to_owned()),
        (
            Method::GET,
            format!("/api/v1/locks/payroll:gorilla/{token}"),
        ),
        (
            Method::PUT,
            format!("/api/v1/locks/payroll:gorilla/{token}"),
        ),
        (
            Method::DELETE,
            format!("/api/v1/locks/payroll:gorilla/{token}"),
        ),
        // A name without ':' is in the namespace `default`.
        (Method::POST, "/locks/nightly?nonce=billing".to_owned()),
    ];
    for (method, path) in routes {
        let reply = as_token(&app, BILLING, method.clone(), &path).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}: {reply:?}"
        );
    }
    let status = as_token(&app, OPS, Method::GET, "/locks/payroll:run").await;
    assert_eq!(
        (status.fence(), status.json["held"].as_bool()),
        (their_fence, Some(true))
    );
    let gorilla = as_token(
        &app,
        OPS,
        Method::GET,
        &format!("/api/v1/locks/payroll:gorilla/{token}"),
    )
    .await;
    assert_eq!(gorilla.status, StatusCode::OK);
    assert_eq!(
        as_token(&app, OPS, Method::GET, "/locks/nightly")
            .await
            .code(),
        "not_found"
    );

    // Its own lock it holds as usual.
    let beat = as_token(
        &app,
        BILLING,
        Method::POST,
        &format!("/locks/billing:invoices/{fence}/heartbeat"),
    )
    .await;
    assert_eq!(beat.status, StatusCode::OK);
}

#[tokio::test]
async fn listing_needs_the_right_and_shows_only_the_tokens_namespaces() {
    let (app, _dir) = guarded(Security::default()).await;
    as_token(&app, BILLING, Method::POST, "/locks/billing:a?nonce=n").await;
    as_token(&app, NIGHTLY, Method::POST, "/locks/nightly?nonce=n").await;
    as_token(&app, OPS, Method::POST, "/locks/payroll:b?nonce=n").await;

    let refused = as_token(&app, BILLING, Method::GET, "/locks").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let names = |reply: &Reply| sorted_names(&reply.json["locks"]);
    let nightly = as_token(&app, NIGHTLY, Method::GET, "/locks").await;
    assert_eq!(names(&nightly), ["nightly"]);
    let ops = as_token(&app, OPS, Method::GET, "/locks").await;
    assert_eq!(names(&ops), ["billing:a", "nightly", "payroll:b"]);
    let own = as_token(&app, NIGHTLY, Method::GET, "/locks?namespace=default").await;
    assert_eq!(names(&own), ["nightly"]);
    let other = as_token(&app, NIGHTLY, Method::GET, "/locks?namespace=payroll").await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{other:?}"
    );
    assert!(other.json["error"].as_str().unwrap().contains("payroll"));
}

#[tokio::test]
async fn the_metrics_token_guards_metrics_only() {
    let app = TestApp::spawn_with(Options {
        security: Security {
            metrics_token: Some("scrape-s3cret".into()),
            ..Security::default()
        },
        ..Options::default()
    })
    .await;
    let get = |token: Option<&'static str>| {
        let mut request = app.http.get(format!("{}/metrics", app.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(Some("guess")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(Some("scrape-s3cret")).await.unwrap().status(),
        StatusCode::OK
    );
    // Without a token file the lock routes stay open.
    assert_eq!(app.acquire("job", "n1", "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn sighup_reads_the_token_file_again_without_dropping_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    token_file(&path, &[("first-s3cret", &["*"], true)]);
    let endpoint = dynamodb_endpoint();
    let (mut server, base) =
        spawn_binary(endpoint, &[("FENCELOCK_AUTH_FILE", path.to_str().unwrap())]).await;
    let http = reqwest::Client::new();
    let call =
        |token: &str, path: &str| http.post(format!("{base}{path}")).bearer_auth(token).send();
    assert_eq!(
        call("first-s3cret", "/locks/job?nonce=a")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call("second-s3cret", "/locks/job?nonce=a")
            .await
            .unwrap()
            .status(),
        401
    );

    // A waiting acquire in flight across the reload is answered as usual.
    let waiting = call("first-s3cret", "/locks/job?nonce=b&wait=3s");
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(300)).await;
    token_file(
        &path,
        &[
            ("first-s3cret", &["*"], true),
            ("second-s3cret", &["*"], true),
        ],
    );
    signal(server.id(), "HUP");
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.status(), 409, "the lock stayed held");

    let mut second = 0;
    for _ in 0..100 {
        second = call("second-s3cret", "/locks/other?nonce=a")
            .await
            .unwrap()
            .status()
            .as_u16();
        if second == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(second, 200, "the new token is in force after SIGHUP");

    // A file that does not read keeps the tokens in force.
    std::fs::write(&path, "tokens = [ broken").unwrap();
    signal(server.id(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call("second-s3cret", "/locks/third?nonce=a")
            .await
            .unwrap()
            .status(),
        200
    );

    // Taking a token out of the file takes it out of force.
    token_file(&path, &[("second-s3cret", &["*"], true)]);
    signal(server.id(), "HUP");
    let mut first = 0;
    for _ in 0..100 {
        first = call("first-s3cret", "/locks/fourth?nonce=a")
            .await
            .unwrap()
            .status()
            .as_u16();
        if first == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first, 401);
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test]
async fn the_command_line_sends_its_token() {
    let (app, _dir) = guarded(Security::default()).await;
    let refused = fencelock_cli(&app.base, &["acquire", "billing:job"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("bearer token"), "{refused:?}");
    let acquired = fencelock_cli(&app.base, &["acquire", "billing:job", "--token", BILLING]).await;
    assert_eq!(acquired.code, Some(0), "{acquired:?}");
    let forbidden = fencelock_cli(&app.base, &["acquire", "payroll:job", "--token", BILLING]).await;
    assert_eq!(forbidden.code, Some(1), "{forbidden:?}");
    assert!(
        forbidden
            .stderr
            .contains("may not use namespace \"payroll\""),
        "{forbidden:?}"
    );
}

/// A server that asks for the holder's nonce, and a lock held with nonce `n1`.
async fn proof_required() -> (TestApp, u64) {
    let app = TestApp::spawn_with(Options::requiring_nonce()).await;
    let fence = app.acquire("job", "n1", "").await.fence();
    app.call_with(
        Method::POST,
        &format!("/locks/job/{fence}"),
        Some("saved"),
        &[("lock-nonce", "n1")],
    )
    .await;
    (app, fence)
}

#[tokio::test]
async fn knowing_the_fence_is_not_enough_when_the_nonce_is_required() {
    let (app, fence) = proof_required().await;
    let heartbeat = format!("/locks/job/{fence}/heartbeat");
    let update = format!("/locks/job/{fence}");
    for (method, path, body) in [
        (Method::POST, heartbeat.as_str(), None),
        (Method::POST, update.as_str(), Some("overwritten")),
        (Method::DELETE, update.as_str(), None),
    ] {
        for headers in [&[][..], &[("lock-nonce", "guess")][..]] {
            let reply = app.call_with(method.clone(), path, body, headers).await;
            assert_eq!(
                (reply.status, reply.code()),
                (StatusCode::FORBIDDEN, "not_holder"),
                "{method} {path} {headers:?}"
            );
        }
        let query = format!("{path}?nonce=guess");
        let reply = app.call_with(method.clone(), &query, body, &[]).await;
        assert_eq!(reply.code(), "not_holder", "{method} {query}");
    }
    // Nothing changed.
    let status = app.status("job").await;
    assert_eq!(
        (
            status.fence(),
            status.json["held"].as_bool(),
            status.json["body"].as_str()
        ),
        (fence, Some(true), Some("saved"))
    );

    // The holder, with its nonce by header or query, goes on.
    let beat = app
        .call_with(Method::POST, &heartbeat, None, &[("lock-nonce", "n1")])
        .await;
    assert_eq!(beat.status, StatusCode::OK);
    let saved = app
        .call_with(
            Method::POST,
            &format!("{update}?nonce=n1"),
            Some("step 2"),
            &[],
        )
        .await;
    assert_eq!(saved.json["body"], "step 2");
    let both = app
        .call_with(
            Method::POST,
            &format!("{update}?nonce=n1"),
            Some("x"),
            &[("lock-nonce", "n2")],
        )
        .await;
    assert_eq!(both.code(), "invalid_request", "two different nonces");
    let released = app
        .call_with(Method::DELETE, &update, None, &[("lock-nonce", "n1")])
        .await;
    assert_eq!(released.json["released"], true);
}

#[tokio::test]
async fn a_wrong_nonce_is_refused_even_when_none_is_required() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "n1", "").await.fence();
    let reply = app
        .call_with(
            Method::DELETE,
            &format!("/locks/job/{fence}"),
            None,
            &[("lock-nonce", "guess")],
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "not_holder")
    );
    assert_eq!(app.status("job").await.json["held"], true);
    // Without one, the fence alone still does.
    assert_eq!(app.release("job", fence).await.json["released"], true);
}

#[tokio::test]
async fn run_proves_its_holding_and_so_does_its_command() {
    let (app, _) = proof_required().await;
    let script = format!(
        "{} update \"$FENCELOCK_NAME\" \"$FENCELOCK_FENCE\" 'from the command'",
        env!("CARGO_BIN_EXE_fencelock")
    );
    let run = fencelock_cli(
        &app.base,
        &["run", "task", "--ttl", "3s", "--", "sh", "-c", &script],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let status = app.status("task").await;
    assert_eq!(status.json["body"], "from the command");
    assert_eq!(
        status.json["expireTime"],
        serde_json::Value::Null,
        "released"
    );

    // By hand: the fence alone is refused, with the nonce it is not.
    let acquired = fencelock_cli(
        &app.base,
        &["acquire", "manual", "--nonce", "mine", "--json"],
    )
    .await;
    let fence = acquired.json()["fence"].to_string();
    let refused = fencelock_cli(&app.base, &["release", "manual", &fence]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("needs the holder's nonce"),
        "{refused:?}"
    );
    let released =
        fencelock_cli(&app.base, &["release", "manual", &fence, "--nonce", "mine"]).await;
    assert_eq!(released.code, Some(0), "{released:?}");
}

#[tokio::test]
async fn oversized_uris_headers_and_deep_metadata_are_refused() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(fencelock::api::MAX_URI_BYTES);
    let uri = app
        .call(Method::GET, &format!("/locks?prefix={long}"), None)
        .await;
    assert_eq!(
        (uri.status, uri.code()),
        (StatusCode::URI_TOO_LONG, "uri_too_long")
    );

    let big = "b".repeat(fencelock::api::MAX_HEADER_BYTES);
    let headers = app
        .call_with(
            Method::POST,
            "/locks/job?nonce=n1",
            None,
            &[("x-padding", &big)],
        )
        .await;
    assert_eq!(
        (headers.status, headers.code()),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large"
        )
    );

    let mut metadata = json!("leaf");
    for _ in 0..=fencelock::api::MAX_JSON_DEPTH {
        metadata = json!([metadata]);
    }
    let body = json!({"nonce": "n1", "metadata": metadata}).to_string();
    let deep = app.call(Method::POST, "/locks/job", Some(&body)).await;
    assert_eq!(deep.code(), "invalid_request");
    assert!(
        deep.json["error"]
            .as_str()
            .unwrap()
            .contains("nested deeper")
    );
    assert_eq!(
        app.status("job").await.code(),
        "not_found",
        "nothing was acquired"
    );
}

#[tokio::test]
async fn waiters_past_the_limits_are_answered_429() {
    let (app, _dir) = guarded_with(
        Security {
            max_waiters_per_token: 2,
            ..Security::default()
        },
        Limits {
            max_waiters_per_lock: 2,
            ..Limits::default()
        },
    )
    .await;
    let app = Arc::new(app);
    as_token(&app, OPS, Method::POST, "/locks/job?nonce=holder").await;
    as_token(&app, OPS, Method::POST, "/locks/other?nonce=holder").await;

    // Two waiters of two tokens fill the lock's queue; a third waiter is refused.
    let wait = |token: &'static str, name: &'static str, nonce: &'static str| {
        let app = app.clone();
        tokio::spawn(async move {
            as_token(
                &app,
                token,
                Method::POST,
                &format!("/locks/{name}?nonce={nonce}&wait=4s"),
            )
            .await
        })
    };
    let first = wait(OPS, "job", "w1");
    let second = wait(NIGHTLY, "job", "w2");
    waiters_reach(&app, 2).await;
    let third = as_token(&app, NIGHTLY, Method::POST, "/locks/job?nonce=w3&wait=4s").await;
    assert_eq!(
        (third.status, third.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
    assert!(
        third.json["error"]
            .as_str()
            .unwrap()
            .contains("lock \"job\" already has 2 waiters"),
        "{third:?}"
    );
    assert!(third.headers.contains_key("retry-after"));

    // The nightly token waits for `job` and now for `other`: its limit of 2; a third
    // waiter of it is refused, whatever the lock.
    let fourth = wait(NIGHTLY, "other", "w4");
    waiters_reach(&app, 3).await;
    let refused = as_token(&app, NIGHTLY, Method::POST, "/locks/third?nonce=w5&wait=4s").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.json["error"]
            .as_str()
            .unwrap()
            .contains("this token already has 2"),
        "{refused:?}"
    );
    for waiter in [first, second, fourth] {
        assert_eq!(waiter.await.unwrap().code(), "lock_held");
    }
}

/// Waits until `app` counts `count` waiting acquires.
async fn waiters_reach(app: &TestApp, count: usize) {
    let line = format!("fencelock_waiters {count}");
    for _ in 0..100 {
        let metrics = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap();
        if metrics.text().await.unwrap().lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never counted {count} waiters");
}

#[tokio::test]
async fn a_token_past_its_rate_is_answered_429_and_others_are_not() {
    let (app, _dir) = guarded(Security {
        token_rate: std::num::NonZeroU32::new(1),
        ..Security::default()
    })
    .await;
    let mut limited = None;
    for _ in 0..10 {
        let reply = as_token(&app, BILLING, Method::GET, "/locks/billing:x").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("a token sending 10 requests at once passes its rate of 1/s");
    assert_eq!(limited.code(), "too_many_requests");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    // Another token has a rate of its own.
    let other = as_token(&app, OPS, Method::GET, "/locks/billing:x").await;
    assert_eq!(other.code(), "not_found");
}
