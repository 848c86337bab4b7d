//! The operators' break-glass actions under `/admin`: force-release of a lock and of
//! a semaphore's slot, disable and enable, ask-release; the admin right, refused to
//! every other token and to anonymous callers on an open server; the audit line and
//! the metric.

use std::sync::Arc;
use std::time::Duration;

use fencelock::api::Security;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Options, Reply, TestApp, dynamodb_endpoint, fencelock, fencelock_cli, finished, spawn_binary,
    spawn_with_token_file, stopped_json_log, wait_for_text,
};
use crate::metrics::{scrape, value};

/// An open server that allows the break-glass actions to every caller.
async fn open_admin() -> TestApp {
    TestApp::spawn_with(Options {
        security: Security {
            allow_admin_without_auth: true,
            ..Security::default()
        },
        ..Options::default()
    })
    .await
}

async fn act(app: &TestApp, action: &str, name: &str, reason: Option<&str>) -> Reply {
    let body = reason.map(|reason| json!({ "reason": reason }).to_string());
    app.call(
        Method::POST,
        &format!("/admin/locks/{name}/{action}"),
        body.as_deref(),
    )
    .await
}

#[tokio::test]
async fn force_release_ends_the_lease_at_once_keeps_the_body_and_the_next_fence_is_above() {
    let app = open_admin().await;
    let old = app.acquire("nightly", "stuck", "&ttl=10m").await.fence();
    app.update("nightly", old, "step 3 of 5").await;

    let done = act(&app, "force-release", "nightly", Some("INC-4411")).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.json);
    assert_eq!(done.json["action"], "force-release");
    assert_eq!(done.json["changed"], true);
    let lock = &done.json["lock"];
    assert_eq!(
        (lock["fence"].as_u64(), &lock["held"]),
        (Some(old), &json!(false))
    );
    assert!(lock["forceReleasedTime"].is_string(), "{lock}");

    // The holder learns it at its next heartbeat, as after a release.
    let late = app.heartbeat("nightly", old).await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "lease_expired")
    );

    // Nothing more to do the second time.
    let again = act(&app, "force-release", "nightly", None).await;
    assert_eq!(again.json["changed"], false);

    let next = app.acquire("nightly", "next", "").await;
    assert_eq!(next.status, StatusCode::OK);
    assert!(next.fence() > old, "{} after {old}", next.fence());
    assert_eq!(next.json["body"], "step 3 of 5");
    assert!(
        next.json.get("forceReleasedTime").is_none(),
        "{}",
        next.json
    );

    let missing = act(&app, "force-release", "never-taken", None).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    let metrics = scrape(&app).await;
    let count = |changed| {
        value(
            &metrics,
            "fencelock_admin_actions_total",
            &[("action", "force_release"), ("changed", changed)],
        )
    };
    assert_eq!((count("true"), count("false")), (1.0, 2.0));
}

#[tokio::test]
async fn a_waiting_acquire_gets_a_force_released_lock() {
    let app = Arc::new(open_admin().await);
    let old = app.acquire("stuck", "holder", "&ttl=10m").await.fence();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { app.acquire("stuck", "waiter", "&wait=60s").await })
    };
    // The waiter is queued before the lock is released (its lease has 10 minutes).
    for _ in 0..100 {
        if app.status("stuck").await.json["waiters"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.status("stuck").await.json["waiters"], 1);
    act(&app, "force-release", "stuck", None).await;
    let granted = waiter.await.unwrap();
    assert_eq!(granted.status, StatusCode::OK, "{:?}", granted.json);
    assert!(granted.fence() > old);
}

#[tokio::test]
async fn a_disabled_name_refuses_every_acquire_until_it_is_enabled() {
    let app = open_admin().await;
    let fence = app.acquire("deploy", "holder", "&ttl=1m").await.fence();

    let done = act(&app, "disable", "deploy", Some("migration in progress")).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.json);
    let disabled = &done.json["lock"]["disabled"];
    assert_eq!(
        (&disabled["by"], &disabled["reason"]),
        (&json!("open"), &json!("migration in progress"))
    );
    assert!(disabled["time"].is_string());

    // The holder keeps its lease.
    assert_eq!(app.heartbeat("deploy", fence).await.status, StatusCode::OK);
    // Nobody acquires: not another holder, not the holder again, not a waiter (who
    // is answered at once, not when its wait runs out), not a group.
    for (nonce, extra) in [("other", ""), ("holder", ""), ("waiter", "&wait=30s")] {
        let refused = app.acquire("deploy", nonce, extra).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::CONFLICT, "lock_disabled"),
            "{nonce}"
        );
        let error = refused.json["error"].as_str().unwrap();
        assert!(
            error.contains("disabled")
                && error.contains("migration in progress")
                && error.contains("fencelock enable deploy"),
            "{error}"
        );
    }
    let group = app
        .call(
            Method::POST,
            "/lock-groups?nonce=g&wait=30s",
            Some(r#"{"names": ["a-free-one", "deploy"]}"#),
        )
        .await;
    assert_eq!(
        (group.status, group.code()),
        (StatusCode::CONFLICT, "lock_disabled"),
        "{:?}",
        group.json
    );
    assert_eq!(
        app.status("a-free-one").await.status,
        StatusCode::NOT_FOUND,
        "the group took nothing"
    );

    assert_eq!(
        act(&app, "disable", "deploy", None).await.json["changed"],
        false
    );
    let enabled = act(&app, "enable", "deploy", None).await;
    assert_eq!(enabled.json["changed"], true);
    assert!(
        enabled.json["lock"].get("disabled").is_none(),
        "{}",
        enabled.json
    );
    assert_eq!(
        act(&app, "enable", "deploy", None).await.json["changed"],
        false
    );
    app.release("deploy", fence).await;
    let next = app.acquire("deploy", "other", "").await;
    assert_eq!(next.status, StatusCode::OK);
    assert!(next.fence() > fence);
}

#[tokio::test]
async fn a_name_never_taken_can_be_disabled_and_its_fences_still_grow() {
    let app = open_admin().await;
    assert_eq!(
        act(&app, "enable", "fresh", None).await.status,
        StatusCode::NOT_FOUND
    );
    let done = act(&app, "disable", "fresh", None).await;
    assert_eq!(done.json["changed"], true);
    let floor = done.json["lock"]["fence"].as_u64().unwrap();
    assert_eq!(done.json["lock"]["held"], false);
    assert!(done.json["lock"]["disabled"].get("reason").is_none());

    let status = app.status("fresh").await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json["disabled"]["by"], "open");
    assert_eq!(app.acquire("fresh", "n", "").await.code(), "lock_disabled");
    // Listed as any record is.
    let listed = app.call(Method::GET, "/locks", None).await;
    assert!(
        listed.json["locks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|lock| lock["name"] == "fresh" && lock["disabled"].is_object()),
        "{}",
        listed.json
    );

    act(&app, "enable", "fresh", None).await;
    let granted = app.acquire("fresh", "n", "").await;
    assert_eq!(granted.status, StatusCode::OK);
    assert!(granted.fence() > floor);
}

#[tokio::test]
async fn ask_release_is_seen_on_the_holders_next_heartbeat_until_the_next_acquire() {
    let app = open_admin().await;
    let free = act(&app, "ask-release", "report", None).await;
    assert_eq!(free.status, StatusCode::NOT_FOUND);
    let fence = app.acquire("report", "holder", "&ttl=1m").await.fence();
    let before = app.heartbeat("report", fence).await;
    assert!(before.json.get("releaseRequestedTime").is_none());

    let asked = act(&app, "ask-release", "report", Some("deploy window")).await;
    assert_eq!(asked.json["changed"], true);
    let beat = app.heartbeat("report", fence).await;
    assert_eq!(beat.status, StatusCode::OK, "the holder still holds it");
    assert!(
        beat.json["releaseRequestedTime"].is_string(),
        "{}",
        beat.json
    );

    app.release("report", fence).await;
    // Nothing to ask of a lock nobody holds.
    assert_eq!(
        act(&app, "ask-release", "report", None).await.json["changed"],
        false
    );
    let next = app.acquire("report", "next", "").await;
    assert!(
        next.json.get("releaseRequestedTime").is_none(),
        "{}",
        next.json
    );
}

#[tokio::test]
async fn force_release_of_a_semaphore_slot_frees_it_for_the_next_holder() {
    let app = Arc::new(open_admin().await);
    let slot = |nonce: &'static str| {
        let app = app.clone();
        async move {
            app.call(
                Method::POST,
                &format!("/semaphores/pool?limit=1&nonce={nonce}&ttl=10m"),
                None,
            )
            .await
        }
    };
    let held = slot("stuck").await.fence();
    assert_eq!(slot("next").await.code(), "semaphore_full");

    let path = format!("/admin/semaphores/pool/{held}/force-release");
    let done = app.call(Method::POST, &path, None).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.json);
    assert_eq!(
        (&done.json["changed"], &done.json["semaphore"]["free"]),
        (&json!(true), &json!(1))
    );
    let late = app
        .call(
            Method::POST,
            &format!("/semaphores/pool/{held}/heartbeat"),
            None,
        )
        .await;
    assert_eq!(late.code(), "lease_expired");
    let next = slot("next").await;
    assert_eq!(next.status, StatusCode::OK);
    assert!(next.fence() > held);
    assert_eq!(
        app.call(Method::POST, &path, None).await.json["changed"],
        false
    );
    let missing = app
        .call(Method::POST, "/admin/semaphores/none/1/force-release", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_reason_that_is_too_long_or_spans_lines_is_refused_and_changes_nothing() {
    let app = open_admin().await;
    let fence = app.acquire("job", "n", "&ttl=1m").await.fence();
    let long = "x".repeat(256);
    for reason in [long.as_str(), "one\ntwo"] {
        let refused = act(&app, "force-release", "job", Some(reason)).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
    }
    let unknown = app
        .call(
            Method::POST,
            "/admin/locks/job/disable",
            Some(r#"{"why": "x"}"#),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let status = app.status("job").await;
    assert_eq!(
        (status.json["held"].as_bool(), status.fence()),
        (Some(true), fence)
    );
    assert!(status.json.get("disabled").is_none());
}

/// Every admin route, on lock `name` (and semaphore `name`'s slot 1).
fn admin_routes(name: &str) -> Vec<(Method, String)> {
    let mut routes = vec![(Method::GET, format!("/admin/locks/{name}"))];
    for action in ["force-release", "disable", "enable", "ask-release"] {
        routes.push((Method::POST, format!("/admin/locks/{name}/{action}")));
    }
    routes.push((
        Method::POST,
        format!("/admin/semaphores/{name}/1/force-release"),
    ));
    routes
}

/// The token file of the rights matrix: one admin of `billing`, one admin of all,
/// and tokens without the right (one that may list every namespace).
fn rights_file() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let entry = |token: &str, namespaces: &str, more: &str| {
        format!(
            "[[tokens]]\nsha256 = \"{}\"\nnamespaces = {namespaces}\n{more}\n",
            fencelock::auth::digest_hex(token)
        )
    };
    let text = [
        entry("billing-admin", r#"["billing"]"#, "admin = true"),
        entry("root", r#"["*"]"#, "admin = true\nlist = true"),
        entry("billing", r#"["billing"]"#, ""),
        entry("ops", r#"["*"]"#, "list = true\nadmin = false"),
    ]
    .concat();
    std::fs::write(dir.path().join("tokens.toml"), text).unwrap();
    dir
}

#[tokio::test]
async fn every_admin_route_is_refused_to_every_token_without_the_right_and_changes_nothing() {
    let (app, _dir) = spawn_with_token_file(rights_file(), Options::default()).await;
    let holder = app
        .call_as(
            "billing",
            Method::POST,
            "/locks/billing:run?nonce=n&ttl=1m",
            None,
        )
        .await;
    let fence = holder.fence();

    for (method, path) in admin_routes("billing:run") {
        let anonymous = app.call(method.clone(), &path, None).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        for token in ["billing", "ops"] {
            let refused = app.call_as(token, method.clone(), &path, None).await;
            assert_eq!(
                (refused.status, refused.code()),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{token} {path}"
            );
            assert!(
                refused.json["error"]
                    .as_str()
                    .unwrap()
                    .contains("admin = true"),
                "{}",
                refused.json
            );
        }
    }
    // The admin of billing is an admin of billing only.
    for (method, path) in admin_routes("payroll:run") {
        let refused = app.call_as("billing-admin", method, &path, None).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
    }
    let status = app
        .call_as("billing", Method::GET, "/locks/billing:run", None)
        .await;
    assert_eq!(
        (status.json["held"].as_bool(), status.fence()),
        (Some(true), fence)
    );
    assert!(
        status.json.get("disabled").is_none() && status.json.get("releaseRequestedTime").is_none()
    );

    // And the admins may.
    let rights = app
        .call_as(
            "billing-admin",
            Method::GET,
            "/admin/locks/billing:run",
            None,
        )
        .await;
    assert_eq!(rights.status, StatusCode::OK);
    assert_eq!(
        rights.json["actions"],
        json!(["force-release", "disable", "enable", "ask-release"])
    );
    let asked = app
        .call_as(
            "billing-admin",
            Method::POST,
            "/admin/locks/billing:run/ask-release",
            None,
        )
        .await;
    assert_eq!(asked.json["changed"], true);
    let forced = app
        .call_as(
            "root",
            Method::POST,
            "/admin/locks/billing:run/force-release",
            None,
        )
        .await;
    assert_eq!(forced.json["changed"], true);
}

#[tokio::test]
async fn an_open_server_refuses_every_admin_route_unless_told_to_allow_them() {
    let app = TestApp::spawn().await;
    let fence = app.acquire("job", "n", "&ttl=1m").await.fence();
    for (method, path) in admin_routes("job") {
        let refused = app.call(method, &path, None).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
        assert!(
            refused.json["error"]
                .as_str()
                .unwrap()
                .contains("FENCELOCK_ALLOW_ADMIN_WITHOUT_AUTH=true"),
            "{}",
            refused.json
        );
    }
    let status = app.status("job").await;
    assert_eq!(
        (status.json["held"].as_bool(), status.fence()),
        (Some(true), fence)
    );
    assert!(
        status.json.get("disabled").is_none() && status.json.get("releaseRequestedTime").is_none()
    );
}

#[tokio::test]
async fn each_action_writes_one_audit_line_at_warn_naming_the_token_lock_fence_and_action() {
    let dir = rights_file();
    let file = dir.path().join("tokens.toml");
    let (server, base) = spawn_binary(
        dynamodb_endpoint(),
        &[
            ("FENCELOCK_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("FENCELOCK_AUTH_FILE", file.to_str().unwrap()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let send = |token: &'static str, path: String, body: Option<&'static str>| {
        let mut request = http.post(format!("{base}{path}")).bearer_auth(token);
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send()
    };
    let acquired = send("billing", "/locks/billing:run?nonce=n&ttl=1m".into(), None)
        .await
        .unwrap();
    let fence: u64 = acquired.headers()["fence"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let done = send(
        "root",
        "/admin/locks/billing:run/force-release".into(),
        Some(r#"{"reason": "INC-7"}"#),
    )
    .await
    .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    send(
        "billing-admin",
        "/admin/locks/billing:run/disable".into(),
        None,
    )
    .await
    .unwrap();

    let (lines, stderr) = stopped_json_log(server).await;
    let audits: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "break-glass action")
        .collect();
    assert_eq!(audits.len(), 2, "{stderr}");
    let label = |token: &str| fencelock::auth::digest_hex(token)[..8].to_owned();
    let forced = &audits[0];
    assert_eq!(forced["level"], "WARN");
    let fields = forced;
    assert_eq!(
        (
            &fields["action"],
            &fields["by"],
            &fields["lock"],
            fields["fence"].as_u64(),
            &fields["changed"],
            &fields["reason"]
        ),
        (
            &json!("force-release"),
            &json!(label("root")),
            &json!("billing:run"),
            Some(fence),
            &json!(true),
            &json!("INC-7")
        )
    );
    assert_eq!(audits[1]["action"], "disable");
    assert_eq!(audits[1]["by"], label("billing-admin"));
}

#[tokio::test]
async fn the_cli_takes_each_action_and_says_what_changed() {
    let app = open_admin().await;
    let fence = app.acquire("a", "n", "&ttl=1m").await.fence();
    app.acquire("b", "n", "&ttl=1m").await;

    let asked = fencelock_cli(&app.base, &["ask-release", "a"]).await;
    assert_eq!(asked.code, Some(0), "{asked:?}");
    assert!(
        asked
            .stdout
            .contains(&format!("asked the holder of \"a\" (fence {fence})")),
        "{asked:?}"
    );

    // Several names at once: a group's locks.
    let forced = fencelock_cli(&app.base, &["force-release", "a", "b", "--reason", "INC-9"]).await;
    assert_eq!(forced.code, Some(0), "{forced:?}");
    assert!(
        forced.stdout.contains(&format!(
            "force-released \"a\": the lease of fence {fence} is over"
        )),
        "{forced:?}"
    );
    assert!(forced.stdout.contains("force-released \"b\""), "{forced:?}");
    assert_eq!(app.status("b").await.json["held"], false);

    let disabled = fencelock_cli(
        &app.base,
        &["disable", "a", "--reason", "restore", "--json"],
    )
    .await;
    assert_eq!(disabled.json()["lock"]["disabled"]["reason"], "restore");
    let status = fencelock_cli(&app.base, &["status", "a"]).await;
    assert!(
        status.stdout.contains("disabled by open at")
            && status.stdout.contains(": restore: no acquire succeeds"),
        "{status:?}"
    );
    let refused = fencelock_cli(&app.base, &["acquire", "a"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("fencelock enable a"), "{refused:?}");
    let enabled = fencelock_cli(&app.base, &["enable", "a"]).await;
    assert!(
        enabled
            .stdout
            .contains("enabled \"a\": it may be acquired again"),
        "{enabled:?}"
    );
    let again = fencelock_cli(&app.base, &["enable", "a"]).await;
    assert_eq!(again.code, Some(0));
    assert!(
        again.stdout.contains("was not disabled; nothing changed"),
        "{again:?}"
    );

    let slot = app
        .call(
            Method::POST,
            "/semaphores/pool?limit=2&nonce=s&ttl=1m",
            None,
        )
        .await
        .fence();
    let slot_arg = slot.to_string();
    let freed = fencelock_cli(&app.base, &["force-release", "pool", "--slot", &slot_arg]).await;
    assert!(
        freed
            .stdout
            .contains(&format!("force-released slot {slot} of semaphore \"pool\""))
            && freed.stdout.contains("2 of 2 slots are free"),
        "{freed:?}"
    );
}

#[tokio::test]
async fn the_cli_is_refused_without_the_right_and_says_why() {
    let (app, _dir) = spawn_with_token_file(rights_file(), Options::default()).await;
    let mut command = fencelock(&app.base);
    command
        .env("FENCELOCK_TOKEN", "billing")
        .args(["disable", "billing:run"]);
    let refused = finished(command.spawn().unwrap()).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("no admin right"), "{refused:?}");
}

#[tokio::test]
async fn run_stops_the_command_and_releases_when_an_operator_asks() {
    let app = open_admin().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "trap 'echo TERM >> {log}; exit 0' TERM; echo started >> {log}; while :; do sleep 0.1; done",
        log = log.display()
    );
    let run = fencelock(&app.base)
        .args(["run", "job", "--ttl", "3s", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_for_text(&log, "started").await;
    let fence = app.status("job").await.fence();
    act(&app, "ask-release", "job", Some("maintenance")).await;
    let run = finished(run).await;
    assert_eq!(run.code, Some(76), "{run:?}");
    assert!(
        run.stderr
            .contains("an operator asked for lock \"job\" to be released"),
        "{run:?}"
    );
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("TERM"),
        "CMD was stopped gracefully"
    );
    // Released by run itself: the fence is the same, and the lease ended by release.
    let status = app.status("job").await;
    assert_eq!(
        (status.fence(), &status.json["expireTime"]),
        (fence, &Value::Null)
    );
    assert!(status.json.get("forceReleasedTime").is_none());
}
