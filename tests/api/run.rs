//! `fencelock run NAME -- CMD`, run as the built binary against a real server: the
//! command runs only while the lock is held, and stops when it is lost.

use std::path::Path;
use std::time::Duration;

use fencelock::domain::LockName;

use crate::helpers::{
    SKEW, TestApp, client, fencelock, fencelock_cli, finished, signal, wait_for_text,
};

const HELD: Option<i32> = Some(75);
const LOST: Option<i32> = Some(76);

/// A shell command that notes in `file` when it starts and when it gets SIGTERM
/// (then exits with `on_term`), and otherwise runs until stopped.
fn until_stopped(file: &Path, on_term: &str) -> String {
    let file = file.display();
    format!(
        "trap 'echo TERM >> {file}; exit {on_term}' TERM; echo \"started $$\" >> {file}; while :; do sleep 0.1; done"
    )
}

#[tokio::test]
async fn the_command_gets_the_lock_in_its_environment_and_run_exits_as_it_did() {
    let app = TestApp::spawn().await;
    let before = app.acquire("job", "earlier", "").await.fence();
    app.update("job", before, "checkpoint 7").await;
    app.release("job", before).await;

    let run = fencelock_cli(
        &app.base,
        &[
            "run",
            "job",
            "--",
            "sh",
            "-c",
            "echo \"$FENCELOCK_NAME $FENCELOCK_FENCE $FENCELOCK_BODY $FENCELOCK_URL\"; exit 3",
        ],
    )
    .await;
    assert_eq!(run.code, Some(3), "{run:?}");
    let seen: Vec<&str> = run.stdout.split_whitespace().collect();
    let fence: u64 = seen[1].parse().unwrap();
    assert!(fence > before, "{run:?}");
    assert_eq!(
        (seen[0], seen[2], seen[3], seen[4]),
        ("job", "checkpoint", "7", format!("{}/", app.base).as_str())
    );
    // Released once the command ended.
    let status = app.status("job").await;
    assert_eq!(status.fence(), fence);
    assert_eq!(status.json["expireTime"], serde_json::Value::Null);
}

#[tokio::test]
async fn two_runs_of_one_name_never_overlap() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let runs: Vec<_> = (0..3)
        .map(|n| {
            let script = format!(
                "echo \"start {n} $FENCELOCK_FENCE\" >> {log}; sleep 0.3; echo \"end {n}\" >> {log}",
                log = log.display()
            );
            fencelock(&app.base)
                .args(["run", "job", "--wait", "30s", "--", "sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let run = finished(run).await;
        assert_eq!(run.code, Some(0), "{run:?}");
    }

    // Each start is followed by the end of the same run, each run with a greater fence.
    let log = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = log.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 6, "{log}");
    let mut fences = Vec::new();
    let mut runs = Vec::new();
    for pair in lines.chunks(2) {
        assert_eq!((pair[0][0], pair[1][0]), ("start", "end"), "{log}");
        assert_eq!(pair[0][1], pair[1][1], "{log}");
        runs.push(pair[0][1]);
        fences.push(pair[0][2].parse::<u64>().unwrap());
    }
    runs.sort();
    assert_eq!(runs, ["0", "1", "2"]);
    assert!(fences.is_sorted() && fences[0] < fences[2], "{fences:?}");
}

#[tokio::test]
async fn a_stolen_lock_stops_the_command_and_run_exits_lost() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    let run = fencelock(&app.base)
        .args(["run", "job", "--ttl", "3s", "--", "sh", "-c"])
        .arg(until_stopped(&notes, "0"))
        .spawn()
        .unwrap();
    wait_for_text(&notes, "started").await;

    // On the other server the lease has run out: it hands the lock to a new holder.
    other
        .clock
        .advance(Duration::from_secs(3) + SKEW + Duration::from_secs(1));
    let thief = other.acquire("job", "thief", "").await.fence();

    let run = finished(run).await;
    assert_eq!(run.code, LOST, "{run:?}");
    assert!(run.stderr.contains("lost lock \"job\""), "{run:?}");
    assert!(std::fs::read_to_string(&notes).unwrap().contains("TERM"));
    // The new holder keeps the lock: `run` released nothing of it.
    let status = app.status("job").await;
    assert_eq!(
        (status.fence(), status.json["held"].as_bool()),
        (thief, Some(true))
    );
}

#[tokio::test]
async fn a_command_that_ignores_sigterm_is_killed_after_the_grace() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    let script = format!(
        "trap '' TERM; echo \"started $$\" >> {}; while :; do sleep 0.1; done",
        notes.display()
    );
    let run = fencelock(&app.base)
        .args(["run", "job", "--ttl", "3s", "--kill-grace", "1s", "--"])
        .args(["sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_for_text(&notes, "started").await;
    let pid = std::fs::read_to_string(&notes).unwrap();
    let pid = pid.split_whitespace().nth(1).unwrap().to_owned();

    other
        .clock
        .advance(Duration::from_secs(3) + SKEW + Duration::from_secs(1));
    other.acquire("job", "thief", "").await;

    let run = finished(run).await;
    assert_eq!(run.code, LOST, "{run:?}");
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!alive.success(), "the command {pid} still runs");
}

#[tokio::test]
async fn sigterm_to_run_stops_the_command_and_releases_the_lock() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    let run = fencelock(&app.base)
        .args(["run", "job", "--", "sh", "-c"])
        .arg(until_stopped(&notes, "5"))
        .spawn()
        .unwrap();
    wait_for_text(&notes, "started").await;
    assert_eq!(app.status("job").await.json["held"], true);

    signal(run.id().unwrap(), "TERM");
    let run = finished(run).await;
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(std::fs::read_to_string(&notes).unwrap().contains("TERM"));
    let status = app.status("job").await;
    assert_eq!(status.json["expireTime"], serde_json::Value::Null);
    // Free at once for the next holder.
    assert_eq!(app.acquire("job", "next", "").await.status, 200);
}

#[tokio::test]
async fn run_on_a_held_lock_never_starts_the_command() {
    let app = TestApp::spawn().await;
    let holder = app.acquire("job", "holder", "").await.fence();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let touch = format!("touch {}", ran.display());

    for wait in [&[][..], &["--wait", "1s"]] {
        let run = fencelock(&app.base)
            .arg("run")
            .arg("job")
            .args(wait)
            .args(["--", "sh", "-c", &touch])
            .spawn()
            .unwrap();
        let run = finished(run).await;
        assert_eq!(run.code, HELD, "{run:?}");
        assert!(run.stderr.contains(&format!("(fence {holder})")), "{run:?}");
    }
    assert!(!ran.exists());
    assert_eq!(app.status("job").await.fence(), holder);
}

#[tokio::test]
async fn a_command_that_cannot_start_leaves_the_lock_free() {
    let app = TestApp::spawn().await;
    let run = fencelock_cli(&app.base, &["run", "job", "--", "/nonexistent/backup.sh"]).await;
    assert_eq!(run.code, Some(127), "{run:?}");
    assert!(run.stderr.contains("cannot start"), "{run:?}");
    let lock = client(&app)
        .status(&LockName::parse("job").unwrap())
        .await
        .unwrap();
    assert!(!lock.held, "{lock:?}");
    assert!(lock.owner.unwrap().contains("/nonexistent/backup.sh"));
}

#[tokio::test]
async fn with_a_limit_at_most_that_many_commands_run_at_once() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let runs: Vec<_> = (0..5)
        .map(|n| {
            let script = format!(
                "echo \"start {n} $FENCELOCK_FENCE $FENCELOCK_LIMIT\" >> {log}; sleep 0.4; echo \"end {n}\" >> {log}",
                log = log.display()
            );
            fencelock(&app.base)
                .args(["run", "--limit", "2", "pool", "--wait", "30s", "--"])
                .args(["sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let run = finished(run).await;
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    let log = std::fs::read_to_string(&log).unwrap();
    let (mut running, mut most, mut fences) = (0, 0, Vec::new());
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "start" => {
                running += 1;
                most = most.max(running);
                fences.push(words[2].parse::<u64>().unwrap());
                assert_eq!(words[3], "2", "FENCELOCK_LIMIT: {log}");
            }
            _ => running -= 1,
        }
    }
    assert!(most <= 2, "{most} commands at once:\n{log}");
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 5, "a fence for each run:\n{log}");
    // Every slot was released: the lock of the same name was never touched.
    let status = app
        .call(reqwest::Method::GET, "/semaphores/pool", None)
        .await;
    assert_eq!(status.json["holders"], serde_json::json!([]), "{status:?}");
    assert_eq!(app.status("pool").await.code(), "not_found");
}

#[tokio::test]
async fn with_a_limit_a_full_semaphore_keeps_the_command_from_starting() {
    let app = TestApp::spawn().await;
    for holder in ["a", "b"] {
        let path = format!("/semaphores/pool?nonce={holder}&limit=2");
        app.call(reqwest::Method::POST, &path, None).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let run = fencelock_cli(
        &app.base,
        &["run", "--limit", "2", "pool", "--", "sh", "-c", &script],
    )
    .await;
    assert_eq!(run.code, HELD, "{run:?}");
    assert!(run.stderr.contains("all 2 of its slots held"), "{run:?}");
    assert!(!marker.exists(), "the command ran");

    let other = fencelock_cli(&app.base, &["run", "--limit", "3", "pool", "--", "true"]).await;
    assert_eq!(other.code, Some(1), "{other:?}");
    assert!(other.stderr.contains("limit of 2, not 3"), "{other:?}");
}

#[tokio::test]
async fn several_names_are_taken_together_or_not_at_all() {
    let app = TestApp::spawn().await;
    let b = app.acquire("b", "other", "").await.fence();
    let script = "echo \"$FENCELOCK_NAME|$FENCELOCK_FENCE\"";
    let refused = fencelock_cli(&app.base, &["run", "a", "b", "--", "sh", "-c", script]).await;
    assert_eq!(refused.code, HELD, "{refused:?}");
    assert!(refused.stderr.contains("\"b\""), "{refused:?}");
    assert_eq!(app.status("a").await.code(), "not_found", "a was taken");

    app.release("b", b).await;
    let run = fencelock_cli(&app.base, &["run", "a", "b", "--", "sh", "-c", script]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let (names, fences) = run.stdout.trim().split_once('|').unwrap();
    assert_eq!(names, "a b");
    let fences: Vec<u64> = fences.split(' ').map(|f| f.parse().unwrap()).collect();
    for (name, fence) in ["a", "b"].iter().zip(&fences) {
        let status = app.status(name).await;
        assert_eq!(
            (status.fence(), &status.json["held"]),
            (*fence, &serde_json::json!(false))
        );
    }
    assert!(fences[1] > b);

    let both = fencelock_cli(&app.base, &["run", "--limit", "2", "a", "b", "--", "true"]).await;
    assert_eq!(both.code, Some(1), "{both:?}");
    assert!(both.stderr.contains("--limit takes one NAME"), "{both:?}");
}
