//! List cursors are sealed: a token limited to some namespaces learns no name of
//! another from any answer, in any encoding, and a cursor can be neither read,
//! altered, made up nor used by another caller or listing; every server on the table
//! opens the cursors of the others.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use fencelock::domain::ServerKey;
use fencelock::store::SERVER_KEY_RECORD;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Options, TestApp, spawn_with_tokens};

const BILLING: &str = "billing-s3cret";
const OPS: &str = "ops-s3cret";

/// Whether `text` holds `secret` as it is, or in hex, or in base64 (standard or
/// URL-safe, at any alignment) inside any run of base64 characters.
fn reveals(text: &str, secret: &str) -> bool {
    if text.contains(secret) || text.contains(&hex::encode(secret)) {
        return true;
    }
    let runs = text.split(|c: char| !(c.is_ascii_alphanumeric() || "-_+/".contains(c)));
    runs.filter(|run| run.len() >= 4).any(|run| {
        (0..4).any(|skip| {
            let tail = &run[skip.min(run.len())..];
            // The longest prefix base64 can decode: no lone last character.
            let usable = &tail[..tail.len() - usize::from(tail.len() % 4 == 1)];
            [
                URL_SAFE_NO_PAD.decode(usable),
                STANDARD_NO_PAD.decode(usable),
            ]
            .into_iter()
            .flatten()
            .any(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()))
        })
    })
}

#[test]
fn the_leak_detector_finds_a_name_in_each_encoding() {
    let secret = "payroll";
    for leak in [
        "payroll:x1".to_owned(),
        hex::encode("payroll:x1"),
        URL_SAFE_NO_PAD.encode("payroll:x1"),
        STANDARD_NO_PAD.encode("a/payroll:x1"),
        format!(
            "{{\"nextCursor\":\"{}\"}}",
            URL_SAFE_NO_PAD.encode("xpayroll:x2")
        ),
    ] {
        assert!(reveals(&leak, secret), "{leak}");
    }
    assert!(!reveals(&URL_SAFE_NO_PAD.encode("billing:x1"), secret));
}

#[tokio::test]
async fn a_namespace_limited_token_learns_no_name_of_another_namespace() {
    let tokens: [(&str, &[&str], bool); 2] = [(BILLING, &["billing"], true), (OPS, &["*"], true)];
    let (app, _dir) = spawn_with_tokens(&tokens, Options::default()).await;
    for name in [
        "payroll:x1",
        "payroll:x2",
        "payroll:x3",
        "billing:b1",
        "billing:b2",
    ] {
        let path = format!("/locks/{name}?nonce=n");
        let lock = app.call_as(OPS, Method::POST, &path, None).await;
        assert_eq!(lock.status, StatusCode::OK, "{lock:?}");
        let path = format!("/semaphores/{name}-pool?nonce=n&limit=2");
        let slot = app.call_as(OPS, Method::POST, &path, None).await;
        assert_eq!(slot.status, StatusCode::OK, "{slot:?}");
    }
    for listing in ["/locks", "/semaphores"] {
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        for page in 0.. {
            assert!(page < 60, "{listing}: the cursors never end");
            let path = match &cursor {
                Some(c) => format!("{listing}?limit=1&cursor={c}"),
                None => format!("{listing}?limit=1"),
            };
            let reply = app.call_as(BILLING, Method::GET, &path, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
            let text = reply.json.to_string();
            assert!(
                !reveals(&text, "payroll"),
                "{path} revealed a payroll name: {text}"
            );
            assert!(
                !reveals(&text, "secret/"),
                "{path} revealed the key's record: {text}"
            );
            seen.push(text);
            match reply.json["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        // The billing records were all listed, and only they.
        let all = seen.join("");
        for name in ["billing:b1", "billing:b2"] {
            assert!(all.contains(name), "{listing} never listed {name}: {all}");
        }
    }
}

#[tokio::test]
async fn a_cursor_opens_only_for_its_listing_and_caller_and_on_every_server() {
    let tokens: [(&str, &[&str], bool); 2] = [(BILLING, &["billing"], true), (OPS, &["*"], true)];
    let (app, _dir) = spawn_with_tokens(&tokens, Options::default()).await;
    for i in 0..3 {
        let path = format!("/locks/billing:b{i}?nonce=n");
        app.call_as(OPS, Method::POST, &path, None).await;
        let path = format!("/semaphores/billing:s{i}?nonce=n&limit=1");
        app.call_as(OPS, Method::POST, &path, None).await;
    }
    let first = app
        .call_as(BILLING, Method::GET, "/locks?limit=1", None)
        .await;
    let cursor = first.json["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let semaphores = app
        .call_as(BILLING, Method::GET, "/semaphores?limit=1", None)
        .await;
    let semaphore_cursor = semaphores.json["nextCursor"].as_str().unwrap().to_owned();

    // Another server on the table continues the listing.
    let other = app.another_instance().await;
    let next = other
        .call_as(
            BILLING,
            Method::GET,
            &format!("/locks?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(next.status, StatusCode::OK, "{next:?}");
    assert_ne!(next.json["locks"], first.json["locks"]);

    let mut altered = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
    altered[10] ^= 1;
    let altered = URL_SAFE_NO_PAD.encode(altered);
    let made_up = URL_SAFE_NO_PAD.encode("billing:b2");
    let another_key = ServerKey::generate().seal("cursor:locks:", b"billing:b2");
    for (token, path) in [
        (OPS, format!("/locks?limit=1&cursor={cursor}")),
        (BILLING, format!("/semaphores?limit=1&cursor={cursor}")),
        (BILLING, format!("/locks?limit=1&cursor={semaphore_cursor}")),
        (BILLING, format!("/locks?limit=1&cursor={altered}")),
        (BILLING, format!("/locks?limit=1&cursor={made_up}")),
        (BILLING, format!("/locks?limit=1&cursor={another_key}")),
    ] {
        let refused = app.call_as(token, Method::GET, &path, None).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{path}: {refused:?}"
        );
        assert!(
            refused.json["error"]
                .as_str()
                .unwrap()
                .contains("start again"),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn servers_racing_to_make_the_key_agree_on_one_and_no_listing_shows_it() {
    let app = TestApp::spawn().await;
    // Four servers' stores, each reading the key for the first time at once.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(app.store().await);
    }
    let racing: Vec<_> = stores
        .into_iter()
        .map(|store| tokio::spawn(async move { store.server_key().await }))
        .collect();
    let mut keys = Vec::new();
    for race in racing {
        keys.push(race.await.unwrap().expect("a key"));
    }
    assert!(keys.iter().all(|key| *key == keys[0]));
    assert_eq!(app.store().await.server_key().await.unwrap(), keys[0]);
    app.acquire("job", "n", "").await;
    let locks = app.call(Method::GET, "/locks", None).await;
    assert_eq!(
        locks.json["locks"].as_array().unwrap().len(),
        1,
        "{locks:?}"
    );
    let semaphores = app.call(Method::GET, "/semaphores", None).await;
    assert_eq!(semaphores.json["semaphores"], json!([]));
    assert!(!locks.json.to_string().contains(SERVER_KEY_RECORD));
}
