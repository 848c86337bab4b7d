//! The `fencelock` client commands, run as the built binary against a real server.

use std::process::Stdio;
use std::time::Duration;

use fencelock::client::Acquire;
use fencelock::domain::LockName;
use tokio::io::AsyncWriteExt;

use crate::helpers::{SKEW, TestApp, client, fencelock, fencelock_cli, finished, sorted_names};

const HELD: Option<i32> = Some(75);
const LOST: Option<i32> = Some(76);
const UNAVAILABLE: Option<i32> = Some(69);

fn name(raw: &str) -> LockName {
    LockName::parse(raw).unwrap()
}

#[tokio::test]
async fn a_lock_goes_through_its_life_from_the_command_line() {
    let app = TestApp::spawn().await;

    let acquired = fencelock_cli(&app.base, &["acquire", "job", "--ttl", "20s", "--json"]).await;
    assert_eq!(acquired.code, Some(0), "{acquired:?}");
    let fence = acquired.json()["fence"].as_u64().unwrap();
    let fence_arg = fence.to_string();
    assert_eq!(app.status("job").await.fence(), fence);

    let beat = fencelock_cli(
        &app.base,
        &["heartbeat", "job", &fence_arg, "--ttl", "45s", "--json"],
    )
    .await;
    assert_eq!(
        (beat.code, beat.json()["ttl"].as_str()),
        (Some(0), Some("45s"))
    );

    // The new body comes from standard input with `-`.
    let mut update = fencelock(&app.base)
        .args(["update", "job", &fence_arg, "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = update.stdin.take().unwrap();
    stdin.write_all(b"copied 40 of 90 tables").await.unwrap();
    drop(stdin);
    let updated = finished(update).await;
    assert_eq!(updated.code, Some(0), "{updated:?}");
    assert!(updated.stdout.starts_with("updated \"job\""), "{updated:?}");

    let status = fencelock_cli(&app.base, &["status", "job", "--json"]).await;
    assert_eq!(status.json()["body"], "copied 40 of 90 tables");
    assert_eq!(status.json()["held"], true);
    let human = fencelock_cli(&app.base, &["status", "job"]).await;
    assert!(
        human.stdout.contains(&format!("(fence {fence}) until")),
        "{human:?}"
    );

    let released = fencelock_cli(&app.base, &["release", "job", &fence_arg]).await;
    assert_eq!(released.code, Some(0), "{released:?}");
    assert_eq!(
        released.stdout.trim(),
        format!("released \"job\" (fence {fence})")
    );
    assert_eq!(app.status("job").await.json["held"], false);
}

#[tokio::test]
async fn acquiring_a_held_lock_exits_with_the_held_status_and_names_the_holder() {
    let app = TestApp::spawn().await;
    let holder = client(&app)
        .acquire(
            &name("nightly"),
            &Acquire {
                nonce: "backup-1".into(),
                owner: Some("backup on db1".into()),
                ..Acquire::default()
            },
        )
        .await
        .unwrap();

    let refused = fencelock_cli(&app.base, &["acquire", "nightly"]).await;
    assert_eq!(refused.code, HELD, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(&format!("held by backup on db1 (fence {})", holder.fence)),
        "{refused:?}"
    );
    assert_eq!(refused.stdout, "");

    // Waiting does not help while the lease lasts.
    let waited = fencelock_cli(&app.base, &["acquire", "nightly", "--wait", "1s"]).await;
    assert_eq!(waited.code, HELD, "{waited:?}");
    assert_eq!(app.status("nightly").await.fence(), holder.fence);
}

#[tokio::test]
async fn a_fence_that_lost_its_lock_exits_with_the_lost_status() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let acquired = fencelock_cli(&app.base, &["acquire", "job", "--ttl", "2s", "--json"]).await;
    let old = acquired.json()["fence"].as_u64().unwrap().to_string();
    other.clock.advance(Duration::from_secs(3) + SKEW);
    let new = other.acquire("job", "thief", "").await.fence();

    let beat = fencelock_cli(&app.base, &["heartbeat", "job", &old]).await;
    assert_eq!(beat.code, LOST, "{beat:?}");
    let update = fencelock_cli(&app.base, &["update", "job", &old, "stale"]).await;
    assert_eq!(update.code, LOST, "{update:?}");
    let release = fencelock_cli(&app.base, &["release", "job", &old]).await;
    assert_eq!(release.code, LOST, "{release:?}");
    assert!(
        release
            .stderr
            .contains(&format!("its current fence is {new}")),
        "{release:?}"
    );
    let status = app.status("job").await;
    assert_eq!(
        (status.fence(), status.json["body"].as_str()),
        (new, Some(""))
    );
}

#[tokio::test]
async fn an_unreachable_server_exits_with_the_unavailable_status() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let base = format!("http://{closed}");
    for args in [
        &["status", "job"][..],
        &["acquire", "job"],
        &["run", "job", "--", "true"],
    ] {
        let failed = fencelock_cli(&base, args).await;
        assert_eq!(failed.code, UNAVAILABLE, "{args:?}: {failed:?}");
        assert!(failed.stderr.contains("cannot reach"), "{failed:?}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let app = TestApp::spawn().await;

    let bad_name = fencelock_cli(&app.base, &["acquire", "no spaces"]).await;
    assert_eq!(bad_name.code, Some(2), "{bad_name:?}");
    assert!(
        bad_name.stderr.contains("expected only letters"),
        "{bad_name:?}"
    );

    let bad_ttl = fencelock_cli(&app.base, &["acquire", "job", "--ttl", "soon"]).await;
    assert_eq!(bad_ttl.code, Some(2), "{bad_ttl:?}");

    let bad_url = fencelock_cli(&app.base, &["status", "job", "--server", "localhost"]).await;
    assert_eq!(bad_url.code, Some(1), "{bad_url:?}");
    assert!(
        bad_url.stderr.contains("expected for example"),
        "{bad_url:?}"
    );

    // What the server refuses comes back as its sentence, with status 1.
    let long_ttl = fencelock_cli(&app.base, &["acquire", "job", "--ttl", "2h"]).await;
    assert_eq!(long_ttl.code, Some(1), "{long_ttl:?}");
    assert!(
        long_ttl.stderr.contains("outside the allowed range"),
        "{long_ttl:?}"
    );

    let missing = fencelock_cli(&app.base, &["status", "job"]).await;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stderr.contains("does not exist"), "{missing:?}");
    assert_eq!(app.status("job").await.code(), "not_found");
}

#[tokio::test]
async fn list_gathers_pages_up_to_the_limit() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        app.acquire(&format!("batch-{n}"), "n1", "").await;
    }
    app.acquire("other", "n1", "").await;
    app.acquire("ops:other", "n1", "").await;

    let all = fencelock_cli(&app.base, &["list", "--prefix", "batch-", "--json"]).await;
    assert_eq!(
        sorted_names(&all.json()),
        ["batch-0", "batch-1", "batch-2", "batch-3", "batch-4"]
    );

    let some = fencelock_cli(&app.base, &["list", "--limit", "3", "--json"]).await;
    assert_eq!(some.json().as_array().unwrap().len(), 3, "{some:?}");

    let ops = fencelock_cli(&app.base, &["list", "--namespace", "ops", "--json"]).await;
    assert_eq!(sorted_names(&ops.json()), ["ops:other"]);

    let table = fencelock_cli(&app.base, &["list", "--held"]).await;
    assert_eq!(table.stdout.lines().count(), 1 + 7, "{table:?}");
    assert!(table.stdout.starts_with("NAME"), "{table:?}");
}

#[tokio::test]
async fn help_documents_the_exit_statuses() {
    let help = fencelock_cli("http://127.0.0.1:1", &["--help"]).await;
    assert_eq!(help.code, Some(0));
    for line in [
        "75   the lock is held",
        "76   the lock was lost",
        "69   the server",
    ] {
        assert!(help.stdout.contains(line), "{line:?} in {}", help.stdout);
    }
}
