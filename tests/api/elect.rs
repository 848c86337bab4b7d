//! `fencelock elect NAME -- CMD` and `fencelock watch --election`, run as the built
//! binary: CMD runs only while this process leads, and leadership fails over when the
//! leader's server is killed.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::{
    TestApp, dynamodb_endpoint, fencelock, fencelock_cli, finished, signal, spawn_binary,
    unique_table, wait_for_text,
};

/// A shell command that notes in `log` when it starts (with its term) and when it
/// gets SIGTERM, and otherwise runs until stopped.
fn lead_until_stopped(log: &Path, who: &str) -> String {
    let log = log.display();
    format!(
        "trap 'echo \"term {who}\" >> {log}; exit 0' TERM; \
         echo \"start {who} $FENCELOCK_TERM $FENCELOCK_VALUE\" >> {log}; while :; do sleep 0.1; done"
    )
}

#[tokio::test]
async fn the_leader_runs_the_command_with_its_term_and_resigns_when_it_ends() {
    let app = TestApp::spawn().await;
    let elect = fencelock_cli(
        &app.base,
        &[
            "elect",
            "scheduler",
            "--value",
            "10.0.0.7:80",
            "--",
            "sh",
            "-c",
            "echo \"$FENCELOCK_NAME $FENCELOCK_TERM $FENCELOCK_FENCE $FENCELOCK_VALUE\"; exit 4",
        ],
    )
    .await;
    assert_eq!(elect.code, Some(4), "{elect:?}");
    let seen: Vec<&str> = elect.stdout.split_whitespace().collect();
    assert_eq!(
        (seen[0], seen[3]),
        ("scheduler", "10.0.0.7:80"),
        "{elect:?}"
    );
    assert_eq!(seen[1], seen[2], "FENCELOCK_FENCE is the term");
    let leader = app.call(Method::GET, "/elections/scheduler", None).await;
    assert_eq!(
        leader.json["leader"],
        Value::Null,
        "it resigned: {}",
        leader.json
    );

    // While another candidate leads, a campaign that does not wait never starts CMD.
    let other = app
        .call(
            Method::POST,
            "/elections/scheduler",
            Some(r#"{"nonce": "other", "value": "x", "ttl": "30s"}"#),
        )
        .await;
    assert_eq!(other.status, 200);
    let refused = fencelock_cli(
        &app.base,
        &["elect", "scheduler", "--", "sh", "-c", "echo ran"],
    )
    .await;
    assert_eq!(refused.code, Some(75), "{refused:?}");
    assert!(!refused.stdout.contains("ran"), "{refused:?}");
}

#[tokio::test]
async fn watch_election_prints_each_leader_and_no_leader() {
    let app = TestApp::spawn().await;
    let mut watch = fencelock(&app.base)
        .args(["watch", "--election", "web", "--json"])
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("watch is running");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next().await["event"], "state");
    let won = app
        .call(
            Method::POST,
            "/elections/web",
            Some(r#"{"nonce": "w1", "value": "a"}"#),
        )
        .await;
    let term = won.json["leader"]["term"].as_u64().unwrap();
    let elected = next().await;
    assert_eq!(elected["event"], "elected");
    assert_eq!(elected["data"]["leader"]["term"], term);
    app.call(Method::DELETE, &format!("/elections/web/{term}"), None)
        .await;
    let resigned = next().await;
    assert_eq!(resigned["event"], "resigned");
    assert_eq!(resigned["data"]["leader"], Value::Null);
    watch.kill().await.unwrap();
}

#[tokio::test]
async fn leadership_fails_over_when_the_leaders_server_is_killed() {
    let endpoint = dynamodb_endpoint();
    let table = unique_table();
    let envs = [("FENCELOCK_TABLE", table.as_str())];
    let (mut first, first_url) = spawn_binary(endpoint, &envs).await;
    let (mut second, second_url) = spawn_binary(endpoint, &envs).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");

    let leader = fencelock(&first_url)
        .args([
            "elect",
            "jobs",
            "--value",
            "a",
            "--ttl",
            "3s",
            "--kill-grace",
            "1s",
            "--",
            "sh",
            "-c",
        ])
        .arg(lead_until_stopped(&log, "a"))
        .spawn()
        .unwrap();
    wait_for_text(&log, "start a").await;
    let standby = fencelock(&second_url)
        .args([
            "elect", "jobs", "--value", "b", "--ttl", "3s", "--wait", "60s", "--", "sh", "-c",
        ])
        .arg(lead_until_stopped(&log, "b"))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    signal(first.id(), "KILL");
    let _ = first.wait();
    wait_for_text(&log, "start b").await;
    let failover = killed.elapsed();
    println!("failover after kill -9 of the leader's server: {failover:?} (lease 3s, skew 500ms)");

    // The old leader stopped its command before the new one started it.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let position = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    assert!(
        position("term a").expect("a was stopped") < position("start b").unwrap(),
        "{text}"
    );
    let term = |who: &str| -> u64 {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("start {who}")))
            .unwrap()
            .split(' ')
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(term("b") > term("a"), "{text}");
    let leader = finished(leader).await;
    assert_eq!(leader.code, Some(76), "{leader:?}");
    assert!(
        leader
            .stderr
            .contains("lost the leadership of election \"jobs\""),
        "{leader:?}"
    );

    // The new leader is who the surviving server names.
    let now: Value = reqwest::get(format!("{second_url}/elections/jobs"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["leader"]["value"], "b");
    signal(standby.id().unwrap(), "TERM");
    let standby = finished(standby).await;
    assert_eq!(standby.code, Some(0), "{standby:?}");
    let _ = second.kill();
    let _ = second.wait();
}
