//! Nothing a reader can see lets anyone act as a holder: every string that status,
//! listings and conflicts show about a lock, a Gorilla lock, a semaphore slot and a
//! lock group is tried as a nonce, an owner and a token, through every route that
//! takes one, by another token on a server that requires the holder's nonce.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Options, Reply, TestApp, spawn_with_tokens};

const HOLDER: &str = "holder-s3cret";
const READER: &str = "reader-s3cret";

/// `text`, and every piece of it a client might try (the parts of a sentence).
fn add(text: &str, found: &mut BTreeSet<String>) {
    found.insert(text.to_owned());
    for piece in text.split(|c: char| c.is_whitespace() || "\"(),;".contains(c)) {
        if !piece.is_empty() {
            found.insert(piece.to_owned());
        }
    }
}

/// Every string in `value`, keys and numbers included, and their pieces.
fn strings(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => add(text, found),
        Value::Number(number) => add(&number.to_string(), found),
        Value::Array(items) => items.iter().for_each(|item| strings(item, found)),
        Value::Object(fields) => {
            for (key, item) in fields {
                add(key, found);
                strings(item, found);
            }
        }
        _ => {}
    }
}

/// Whether `reply` let the caller act: a grant, a renewal or a release.
fn acted(reply: &Reply) -> bool {
    reply.status.is_success() && reply.json.get("released") != Some(&json!(false))
}

#[tokio::test]
async fn no_string_a_reader_sees_lets_it_act_as_a_holder() {
    let tokens: [(&str, &[&str], bool); 2] = [(HOLDER, &["app"], true), (READER, &["app"], true)];
    let (app, _dir) = spawn_with_tokens(&tokens, Options::requiring_nonce()).await;
    let holder = |method, path: String, body: Option<String>| {
        let app = &app;
        async move { app.call_as(HOLDER, method, &path, body.as_deref()).await }
    };

    // One holding of each kind, each with an owner that readers see.
    let lock = holder(
        Method::POST,
        "/locks/app:glock".into(),
        Some(json!({"nonce": "holder-nonce-1", "ttl": "60s", "owner": "svc-a"}).to_string()),
    )
    .await;
    assert_eq!(lock.status, StatusCode::OK, "{lock:?}");
    let gorilla = holder(
        Method::POST,
        "/api/v1/locks/app:gorilla".into(),
        Some(json!({"owner": "gorilla-owner-3b9f1c", "timeout": 60}).to_string()),
    )
    .await;
    assert_eq!(gorilla.status, StatusCode::OK, "{gorilla:?}");
    let slot = holder(
        Method::POST,
        "/semaphores/app:sem?limit=1".into(),
        Some(json!({"nonce": "holder-nonce-2", "ttl": "60s", "owner": "svc-b"}).to_string()),
    )
    .await;
    assert_eq!(slot.status, StatusCode::OK, "{slot:?}");
    let group = holder(
        Method::POST,
        "/lock-groups?nonce=holder-nonce-3&ttl=60s".into(),
        Some(json!({"names": ["app:g1", "app:g2"], "owner": "svc-c"}).to_string()),
    )
    .await;
    assert_eq!(group.status, StatusCode::OK, "{group:?}");
    let fences = [
        ("app:glock", lock.fence()),
        ("app:gorilla", gorilla.json["id"].as_u64().unwrap()),
        ("app:g1", group.json["locks"][0]["fence"].as_u64().unwrap()),
        ("app:g2", group.json["locks"][1]["fence"].as_u64().unwrap()),
    ];
    let slot_fence = slot.fence();

    // Everything a reader can see.
    let reader = |method, path: String, body: Option<String>| {
        let app = &app;
        async move { app.call_as(READER, method, &path, body.as_deref()).await }
    };
    let mut seen = BTreeSet::new();
    for path in [
        "/locks",
        "/locks?limit=1",
        "/locks/app:glock",
        "/locks/app:gorilla",
        "/locks/app:g1",
        "/semaphores",
        "/semaphores/app:sem",
    ] {
        let reply = reader(Method::GET, path.into(), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        strings(&reply.json, &mut seen);
    }
    for path in [
        "/locks/app:glock?nonce=peek",
        "/locks/app:gorilla?nonce=peek",
        "/semaphores/app:sem?limit=1&nonce=peek",
    ] {
        let refused = reader(Method::POST, path.into(), None).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
        strings(&refused.json, &mut seen);
    }
    let refused = reader(
        Method::POST,
        "/lock-groups?nonce=peek".into(),
        Some(json!({"names": ["app:glock", "app:gorilla", "app:g1", "app:g2"]}).to_string()),
    )
    .await;
    strings(&refused.json, &mut seen);
    assert!(
        seen.contains("gorilla-owner-3b9f1c") && seen.contains("svc-a"),
        "{seen:?}"
    );

    // Each seen string as every secret a route takes.
    let tried: Vec<&String> = seen
        .iter()
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic()))
        .collect();
    for secret in tried {
        let q = urlencode(secret);
        for (name, fence) in fences {
            for (method, path) in [
                (Method::POST, format!("/locks/{name}?nonce={q}")),
                (
                    Method::POST,
                    format!("/locks/{name}/{fence}/heartbeat?nonce={q}"),
                ),
                (Method::DELETE, format!("/locks/{name}/{fence}?nonce={q}")),
                (Method::GET, format!("/api/v1/locks/{name}/{q}")),
                (Method::DELETE, format!("/api/v1/locks/{name}/{q}")),
            ] {
                let reply = reader(method.clone(), path.clone(), None).await;
                assert!(!acted(&reply), "{method} {path} as a reader: {reply:?}");
            }
            let owner = json!({"owner": secret, "timeout": 60}).to_string();
            let reply = reader(Method::POST, format!("/api/v1/locks/{name}"), Some(owner)).await;
            assert!(
                !acted(&reply),
                "Gorilla acquire of {name} as owner {secret:?}: {reply:?}"
            );
        }
        for (method, path) in [
            (
                Method::POST,
                format!("/semaphores/app:sem?limit=1&nonce={q}"),
            ),
            (
                Method::POST,
                format!("/semaphores/app:sem/{slot_fence}/heartbeat?nonce={q}"),
            ),
            (
                Method::DELETE,
                format!("/semaphores/app:sem/{slot_fence}?nonce={q}"),
            ),
        ] {
            let reply = reader(method.clone(), path.clone(), None).await;
            assert!(!acted(&reply), "{method} {path} as a reader: {reply:?}");
        }
        let names = json!({"names": ["app:g1", "app:g2"]}).to_string();
        let reply = reader(Method::POST, format!("/lock-groups?nonce={q}"), Some(names)).await;
        assert!(
            !acted(&reply),
            "group acquire with nonce {secret:?}: {reply:?}"
        );
    }

    // Every holding is as it was, and its holder can still act on it: the tries above
    // could have succeeded with the right secret.
    for (name, fence) in fences {
        let status = reader(Method::GET, format!("/locks/{name}"), None).await;
        assert_eq!(
            (status.json["fence"].as_u64(), status.json["held"].as_bool()),
            (Some(fence), Some(true)),
            "{status:?}"
        );
    }
    let token = gorilla.json["token"].as_str().unwrap();
    let own = holder(
        Method::GET,
        format!("/api/v1/locks/app:gorilla/{token}"),
        None,
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{own:?}");
    let again = holder(
        Method::POST,
        "/api/v1/locks/app:gorilla".into(),
        Some(json!({"owner": "gorilla-owner-3b9f1c", "timeout": 60}).to_string()),
    )
    .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the owner re-acquires through its own token: {again:?}"
    );
    let path = format!(
        "/locks/app:glock/{}/heartbeat?nonce=holder-nonce-1",
        fences[0].1
    );
    let renewed = holder(Method::POST, path, None).await;
    assert_eq!(renewed.status, StatusCode::OK, "{renewed:?}");
}

#[tokio::test]
async fn on_an_open_server_that_requires_the_nonce_an_owner_is_no_way_in() {
    let app = TestApp::spawn_with(Options::requiring_nonce()).await;
    let body = json!({"owner": "gorilla-owner-3b9f1c", "timeout": 60}).to_string();
    let first = app
        .call(Method::POST, "/api/v1/locks/gleak:x", Some(&body))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let owner = app.status("gleak:x").await.json["owner"].clone();
    assert_eq!(owner, "gorilla-owner-3b9f1c");
    let fence = first.json["id"].as_u64().unwrap();
    let as_nonce = app.acquire("gleak:x", "gorilla-owner-3b9f1c", "").await;
    assert_eq!(as_nonce.status, StatusCode::CONFLICT, "{as_nonce:?}");
    let release = app
        .call(
            Method::DELETE,
            &format!("/locks/gleak:x/{fence}?nonce=gorilla-owner-3b9f1c"),
            None,
        )
        .await;
    assert_eq!(release.status, StatusCode::FORBIDDEN, "{release:?}");
    let again = app
        .call(Method::POST, "/api/v1/locks/gleak:x", Some(&body))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    assert_eq!(app.status("gleak:x").await.fence(), fence);
}

/// `raw` as a query parameter value or a path segment.
fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
