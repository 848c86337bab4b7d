//! Liveness and readiness.

use reqwest::{Method, StatusCode, header};

use crate::helpers::{TestApp, dynamodb_local, signal};

#[tokio::test]
async fn healthz_answers_whatever_dynamodb_does() {
    for app in [TestApp::spawn().await, TestApp::spawn_unreachable().await] {
        let reply = app.call(Method::GET, "/healthz", None).await;
        assert_eq!(
            (reply.status, reply.json["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );
    }
}

#[tokio::test]
async fn readyz_says_why_it_is_not_ready() {
    let ready = TestApp::spawn()
        .await
        .call(Method::GET, "/readyz", None)
        .await;
    assert_eq!(
        (ready.status, ready.json["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let unreachable = TestApp::spawn_unreachable()
        .await
        .call(Method::GET, "/readyz", None)
        .await;
    assert_eq!(
        (unreachable.status, unreachable.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(unreachable.headers.contains_key(header::RETRY_AFTER));
    assert!(
        unreachable.json["error"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{unreachable:?}"
    );

    let tableless = TestApp::spawn_on(crate::helpers::dynamodb_endpoint()).await;
    let missing = tableless.call(Method::GET, "/readyz", None).await;
    assert_eq!(missing.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        missing.json["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{missing:?}"
    );
    tableless.create_table().await;
    assert_eq!(
        tableless.call(Method::GET, "/readyz", None).await.status,
        StatusCode::OK
    );
}

/// The harness takes a DynamoDB Local as started only when that process holds the
/// listener: a port someone else listens on (after Java lost the race for it) is not
/// enough, and a process that exited is told apart from one still starting.
#[test]
fn the_harness_tells_whose_listener_a_port_is() {
    use dynamodb_local::{Listener, listener_of};
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert_eq!(listener_of(std::process::id(), port), Listener::Ours);

    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    assert_eq!(listener_of(other.id(), port), Listener::NotYet);
    other.kill().unwrap();
    // Killed but not yet reaped: a zombie has exited too.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(listener_of(other.id(), port), Listener::Exited);
    other.wait().unwrap();
}

/// A DynamoDB Local of this test's own is paused (SIGSTOP) and resumed.
#[tokio::test]
async fn readyz_follows_dynamodb_going_away_and_coming_back() {
    let (endpoint, pid) = dynamodb_local::start_with_pid("dynamodb-local-readyz.log");
    let app = TestApp::spawn_on(&endpoint).await;
    app.create_table().await;
    assert_eq!(
        app.call(Method::GET, "/readyz", None).await.status,
        StatusCode::OK
    );

    signal(pid, "STOP");
    let stalled = app.call(Method::GET, "/readyz", None).await;
    signal(pid, "CONT");
    assert_eq!(
        (stalled.status, stalled.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );

    let mut back = app.call(Method::GET, "/readyz", None).await;
    for _ in 0..50 {
        if back.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        back = app.call(Method::GET, "/readyz", None).await;
    }
    assert_eq!(back.status, StatusCode::OK, "{back:?}");
}

#[tokio::test]
async fn the_server_refuses_to_start_on_a_table_it_cannot_use_and_says_why() {
    let wrong = crate::helpers::unique_table();
    dynamodb_local::Raw::new(crate::helpers::dynamodb_endpoint(), &wrong)
        .create_keyed("id")
        .await;
    let (code, said) = crate::helpers::refused_start(&wrong, &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("its key is id (HASH)") && said.contains("partition key `name` of type S"),
        "{said}"
    );
    let (code, said) = crate::helpers::refused_start(&crate::helpers::unique_table(), &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("it does not exist"), "{said}");
}

#[tokio::test]
async fn cleanup_by_ttl_is_refused_on_a_table_whose_ttl_is_off_or_without_a_reclaim_delay() {
    let app = crate::helpers::TestApp::spawn().await;
    let table = app.table.clone();
    let ttl = [("FENCELOCK_RECLAIM_BY", "ttl")];
    let (code, said) = crate::helpers::refused_start(&table, &ttl).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("its TTL is off") && said.contains("update-time-to-live"),
        "{said}"
    );
    let off = [
        ("FENCELOCK_RECLAIM_BY", "ttl"),
        ("FENCELOCK_RECLAIM_AFTER", "off"),
    ];
    let (code, said) = crate::helpers::refused_start(&table, &off).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("FENCELOCK_RECLAIM_AFTER is off"), "{said}");
}
