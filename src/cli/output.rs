//! How the client commands print: the API's JSON with `--json`, sentences otherwise.
//! Results go to standard output; what went wrong, and progress, to standard error.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::client::{LockView, WatchEvent};

/// Prints `value` as JSON, or `sentence()` for people.
pub fn show<T: Serialize>(json: bool, value: &T, sentence: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("fencelock: the answer cannot be printed as JSON: {err}"),
        }
    } else {
        println!("{}", sentence());
    }
}

/// Reports a problem on standard error.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("fencelock: {message}");
}

/// `"<time> (in 25s)"` or `"<time> (3s ago)"`.
pub fn when(time: &str) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(time) else {
        return time.to_owned();
    };
    let delta = at.with_timezone(&Utc) - Utc::now();
    let seconds = delta.num_milliseconds().unsigned_abs().div_ceil(1000);
    let span = humantime::format_duration(Duration::from_secs(seconds));
    if delta.num_milliseconds() >= 0 {
        format!("{time} (in {span})")
    } else {
        format!("{time} ({span} ago)")
    }
}

/// Who holds the lock and until when, or how its last lease ended.
pub fn holding(lock: &LockView) -> String {
    let fence = lock.fence;
    match (&lock.expire_time, lock.held) {
        (Some(until), true) => {
            let who = lock
                .owner
                .as_deref()
                .unwrap_or("a holder with no owner set");
            format!("held by {who} (fence {fence}) until {}", when(until))
        }
        (Some(ended), false) => format!("free: the lease of fence {fence} ended {}", when(ended)),
        (None, _) => format!("free: fence {fence} was released"),
    }
}

/// The whole of a lock, for `status`.
pub fn lock_details(lock: &LockView) -> String {
    let mut text = format!(
        "lock \"{}\": {}\n  acquired {}, last heartbeat {}, lease {}",
        lock.name,
        holding(lock),
        lock.acquire_time,
        lock.heartbeat_time,
        lock.ttl
    );
    if let Some(metadata) = &lock.metadata {
        text.push_str(&format!("\n  metadata: {metadata}"));
    }
    if let Some(until) = &lock.reserved_until {
        text.push_str(&format!(
            "\n  reserved for a waiting lock group until {}: nobody else takes it before",
            when(until)
        ));
    }
    if let Some(disabled) = &lock.disabled {
        let reason = disabled
            .reason
            .as_deref()
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n  disabled by {} at {}{reason}: no acquire succeeds until it is enabled",
            disabled.by,
            when(&disabled.time)
        ));
    }
    if let Some(asked) = &lock.release_requested_time {
        text.push_str(&format!(
            "\n  an operator asked the holder to release it at {}",
            when(asked)
        ));
    }
    if let Some(forced) = &lock.force_released_time {
        text.push_str(&format!(
            "\n  force-released by an operator at {}",
            when(forced)
        ));
    }
    if let Some(waiters @ 1..) = lock.waiters {
        text.push_str(&format!("\n  acquires waiting on this server: {waiters}"));
    }
    text.push_str(&format!("\n  body: {:?}", lock.body));
    text
}

/// One line for an event of `watch`: when it was printed, what happened, and the
/// lock after it.
pub fn change(event: &WatchEvent) -> String {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let what = match (event.event.as_str(), event.lock()) {
        (_, _) if event.data.get("leader").is_some() => leadership(&event.data["leader"]),
        (_, _) if event.data.get("limit").is_some() => slots(&event.data),
        ("gap", _) => match event.data["missed"].as_u64() {
            Some(missed) => format!("{missed} changes were not seen one by one"),
            None => "changes were missed; the next event is the state now".to_owned(),
        },
        ("deleted", _) => "the record was deleted".to_owned(),
        ("updated", Some(lock)) => format!("{}; body {:?}", holding(&lock), lock.body),
        (_, Some(lock)) => holding(&lock),
        (_, None) => "no record: never taken, or deleted".to_owned(),
    };
    let version = event.id.map(|id| format!(" v{id}")).unwrap_or_default();
    format!("{now} {:<8}{version} {what}", event.event)
}

/// A semaphore's slots, from its view: the slot the event is about, then the count.
fn slots(view: &serde_json::Value) -> String {
    let count = |key: &str| {
        view.get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let held = view
        .get("holders")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    let slot = view
        .get("slot")
        .and_then(serde_json::Value::as_u64)
        .map(|fence| format!("slot {fence}; "))
        .unwrap_or_default();
    format!(
        "{slot}{held} of {} held, {} free",
        count("limit"),
        count("free")
    )
}

/// Who leads an election, from its view's `leader`.
fn leadership(leader: &serde_json::Value) -> String {
    match leader.as_object() {
        None => "no leader".to_owned(),
        Some(leader) => {
            let field = |key: &str| leader.get(key).and_then(|v| v.as_str()).unwrap_or("");
            let owner = leader
                .get("owner")
                .and_then(|v| v.as_str())
                .map(|owner| format!(" ({owner})"))
                .unwrap_or_default();
            format!(
                "led under term {}{owner}, value {:?}, until {}",
                leader
                    .get("term")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                field("value"),
                field("expireTime"),
            )
        }
    }
}

/// One line per lock, for `list`.
pub fn lock_table(locks: &[LockView]) -> String {
    let width = locks.iter().map(|l| l.name.len()).max().unwrap_or(0).max(4);
    let mut text = format!("{:width$}  STATE", "NAME");
    for lock in locks {
        text.push_str(&format!("\n{:width$}  {}", lock.name, holding(lock)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(held: bool, expire_time: Option<String>) -> LockView {
        LockView {
            name: "job".into(),
            fence: 7,
            version: 2,
            held,
            acquire_time: "2026-11-23T10:00:00.000Z".into(),
            heartbeat_time: "2026-11-23T10:00:00.000Z".into(),
            expire_time,
            ttl: "30s".into(),
            owner: Some("backup on db1".into()),
            metadata: None,
            body: "step 3".into(),
            reserved_until: None,
            waiters: Some(2),
            disabled: None,
            release_requested_time: None,
            force_released_time: None,
            took_over: None,
        }
    }

    #[test]
    fn times_say_how_far_they_are() {
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc3339();
        assert!(when(&later).ends_with("(in 1m 30s)"), "{}", when(&later));
        assert!(when("2000-01-01T00:00:00Z").ends_with("ago)"));
        assert_eq!(when("not a time"), "not a time");
    }

    #[test]
    fn a_holding_names_its_owner_and_fence() {
        let until = (Utc::now() + chrono::Duration::seconds(30)).to_rfc3339();
        let text = holding(&view(true, Some(until)));
        assert!(
            text.starts_with("held by backup on db1 (fence 7) until "),
            "{text}"
        );
        assert_eq!(holding(&view(false, None)), "free: fence 7 was released");
        let details = lock_details(&view(false, None));
        assert!(details.contains("body: \"step 3\""), "{details}");
        assert!(details.contains("waiting on this server: 2"), "{details}");
        assert!(!details.contains("reserved"), "{details}");
        let until = (Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
        let reserved = LockView {
            reserved_until: Some(until),
            ..view(false, None)
        };
        let details = lock_details(&reserved);
        assert!(
            details.contains("reserved for a waiting lock group until "),
            "{details}"
        );
    }
}
