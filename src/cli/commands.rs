//! The one-request client commands (`acquire`, `heartbeat`, `update`, `release`,
//! `status`, `list`), `watch`, and [`take`], the waiting acquire that `run` shares.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use tokio::time::Instant;

use super::output::{change, holding, lock_details, lock_table, show, warn, when};
use super::{
    AcquireArgs, ClientArgs, EXIT_FAILED, EXIT_LOST, FenceArgs, HeartbeatArgs, ListArgs, NameArgs,
    PrintArgs, UpdateArgs, WatchArgs, exit_code, holder,
};
use crate::client::{Acquire, Client, ClientError, Kind, ListRequest, LockView, Released};
use crate::domain::{Fence, LockName};

/// How long to wait before asking again after the server could not answer.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);

pub async fn acquire(args: AcquireArgs) -> u8 {
    let AcquireArgs {
        name,
        nonce,
        ttl,
        wait,
        owner,
        client: options,
        print: PrintArgs { json },
    } = args;
    let request = Acquire {
        nonce: nonce.unwrap_or_else(holder::fresh_nonce),
        ttl,
        owner,
        ..Acquire::default()
    };
    with_client(&options, &name, async |client| {
        let (lock, _) = take(client, &name, request, wait.unwrap_or_default()).await?;
        show(json, &lock, || {
            format!(
                "acquired \"{name}\": fence {}, lease {} until {}",
                lock.fence,
                lock.ttl,
                until(&lock)
            )
        });
        Ok(0)
    })
    .await
}

pub async fn heartbeat(args: HeartbeatArgs) -> u8 {
    let HeartbeatArgs { lock, ttl } = args;
    let (holding, json) = (lock.holding(), lock.print.json);
    let (name, fence) = (holding.name, holding.fence);
    with_client(&lock.client, name, async |client| {
        let lock = client.heartbeat(&holding, ttl).await?;
        show(json, &lock, || {
            format!("extended \"{name}\" (fence {fence}) until {}", until(&lock))
        });
        Ok(0)
    })
    .await
}

pub async fn update(args: UpdateArgs) -> u8 {
    let UpdateArgs { lock, value, ttl } = args;
    let (holding, json) = (lock.holding(), lock.print.json);
    let (name, fence) = (holding.name, holding.fence);
    let body = match value.filter(|value| value != "-") {
        Some(value) => value,
        None => {
            let mut body = String::new();
            if let Err(err) = std::io::stdin().read_to_string(&mut body) {
                warn(format_args!(
                    "cannot read the new body of \"{name}\" from standard input: {err}; expected UTF-8 text"
                ));
                return EXIT_FAILED;
            }
            body
        }
    };
    with_client(&lock.client, name, async |client| {
        let bytes = body.len();
        let lock = client.update(&holding, body, ttl).await?;
        show(json, &lock, || {
            format!(
                "updated \"{name}\" (fence {fence}): body of {bytes} bytes, lease until {}",
                until(&lock)
            )
        });
        Ok(0)
    })
    .await
}

pub async fn release(args: FenceArgs) -> u8 {
    let (holding, json) = (args.holding(), args.print.json);
    let (name, fence) = (holding.name, holding.fence);
    with_client(&args.client, name, async |client| {
        let release = client.release(&holding).await?;
        let answer = Released {
            released: release.released,
        };
        if release.released {
            show(json, &answer, || {
                format!("released \"{name}\" (fence {fence})")
            });
            return Ok(0);
        }
        if json {
            show(true, &answer, String::new);
        }
        warn(match release.current_fence {
            Some(current) => format!(
                "fence {fence} no longer holds \"{name}\": its current fence is {current}; nothing was released"
            ),
            None => format!("lock \"{name}\" has no record; nothing was released"),
        });
        Ok(EXIT_LOST)
    })
    .await
}

pub async fn status(args: NameArgs) -> u8 {
    let NameArgs {
        name,
        client: options,
        print: PrintArgs { json },
    } = args;
    with_client(&options, &name, async |client| {
        let lock = client.status(&name).await?;
        show(json, &lock, || lock_details(&lock));
        Ok(0)
    })
    .await
}

/// `watch`: the lock's event stream, a line per event (a JSON object per line with
/// `--json`), reconnecting as a browser's `EventSource` does, from the last event
/// seen, after a second; until interrupted, or until the server refuses the watch.
pub async fn watch(args: WatchArgs) -> u8 {
    let WatchArgs {
        name:
            NameArgs {
                name,
                client: options,
                print: PrintArgs { json },
            },
        election,
        semaphore,
    } = args;
    let kind = match (election, semaphore) {
        (true, _) => Kind::Election,
        (_, true) => Kind::Semaphore,
        _ => Kind::Lock,
    };
    with_client(&options, &name, async |client| {
        let mut last = None;
        loop {
            match client.events_of(kind, &name, last).await {
                Ok(mut events) => loop {
                    match events.next().await {
                        Ok(Some(event)) => {
                            last = event.id.or(last);
                            if json {
                                println!("{}", serde_json::to_string(&event).unwrap_or_default());
                            } else {
                                println!("{}", change(&event));
                            }
                        }
                        Ok(None) => break,
                        Err(err) => {
                            warn(format_args!("{err}; reconnecting"));
                            break;
                        }
                    }
                },
                Err(err) if err.is_transient() => warn(format_args!("{err}; retrying")),
                Err(err) => return Err(err),
            }
            tokio::time::sleep(RETRY_UNAVAILABLE).await;
        }
    })
    .await
}

pub async fn list(args: ListArgs) -> u8 {
    let ListArgs {
        prefix,
        namespace,
        held,
        limit,
        client: options,
        print: PrintArgs { json },
    } = args;
    let Ok(client) = options.client().inspect_err(|err| warn(err)) else {
        return EXIT_FAILED;
    };
    let mut locks: Vec<LockView> = Vec::new();
    let mut request = ListRequest {
        prefix,
        namespace,
        held,
        ..ListRequest::default()
    };
    loop {
        request.limit = limit.map(|limit| limit - locks.len());
        match client.list(&request).await {
            Ok(page) => {
                locks.extend(page.locks);
                request.cursor = page.next_cursor;
            }
            Err(err) => {
                warn(&err);
                return exit_code(&err);
            }
        }
        if request.cursor.is_none() || limit.is_some_and(|limit| locks.len() >= limit) {
            break;
        }
    }
    show(json, &locks, || lock_table(&locks));
    0
}

/// Acquires `name`, waiting up to `wait` if it is held: in slices as long as the server
/// allows, and through moments when the server cannot be reached. Waiting on a
/// terminal, says who holds the lock, and again each time the holder changes.
/// Answers the lock and when its grant arrived.
pub(super) async fn take(
    client: &Client,
    name: &LockName,
    request: Acquire,
    wait: Duration,
) -> Result<(LockView, Instant), ClientError> {
    let kind = request.kind();
    let what = format!("{} \"{name}\"", kind.noun());
    let lock = (kind == Kind::Lock).then_some(name);
    take_with(client, &what, lock, request, wait, async |request| {
        client.acquire(name, request).await
    })
    .await
}

/// As [`take`], for `what` (`lock "x"`, `locks "a", "b"`, …) acquired by `attempt`;
/// on a terminal, says who holds `lock` when it is one lock, else what the server said.
/// Answers what was taken and when the request that took it was *sent*, which is
/// never later than the server's start of the lease.
pub(super) async fn take_with<T>(
    client: &Client,
    what: &str,
    lock: Option<&LockName>,
    mut request: Acquire,
    wait: Duration,
    attempt: impl AsyncFn(&Acquire) -> Result<T, ClientError>,
) -> Result<(T, Instant), ClientError> {
    let deadline = Instant::now() + wait;
    let progress = !wait.is_zero() && std::io::stderr().is_terminal();
    // On a terminal the first try does not wait, to say at once who holds the lock.
    let mut tried = !progress;
    let mut shown: Option<Fence> = None;
    let mut shown_once = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // At most a third of the lease per request, so that the lease, counted from
        // the sending of the request that got it, is known within a third of it.
        let piece = request.ttl.map_or(remaining, |ttl| remaining.min(ttl / 3));
        request.wait = (tried && !piece.is_zero()).then_some(piece);
        tried = true;
        let sent = Instant::now();
        match attempt(&request).await {
            Ok(taken) => return Ok((taken, sent)),
            Err(err) if remaining.is_zero() => return Err(err),
            Err(ClientError::Held {
                fence, ref message, ..
            }) => {
                if progress && (shown != fence || !shown_once) {
                    shown = fence;
                    shown_once = true;
                    let holder = match lock {
                        Some(name) => describe_holder(client, name).await,
                        None => message.clone(),
                    };
                    warn(format_args!(
                        "waiting up to {} for {what}: {holder}",
                        humantime::format_duration(whole_seconds(remaining)),
                    ));
                }
            }
            Err(err) if err.is_transient() => {
                warn(format_args!("{err}; trying again"));
                tokio::time::sleep(RETRY_UNAVAILABLE.min(remaining)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Runs `command` with a client for `options`, and reports what went wrong on standard
/// error: for a held lock, who holds it. Answers the exit status.
pub(super) async fn with_client(
    options: &ClientArgs,
    name: &LockName,
    command: impl AsyncFnOnce(&Client) -> Result<u8, ClientError>,
) -> u8 {
    let client = match options.client() {
        Ok(client) => client,
        Err(err) => {
            warn(&err);
            return EXIT_FAILED;
        }
    };
    match command(&client).await {
        Ok(code) => code,
        Err(err) => report(&client, Some(name), &err).await,
    }
}

/// Reports `err` on standard error; for a held `lock` (when it is one lock), who
/// holds it. Answers the exit status.
pub(super) async fn report(client: &Client, lock: Option<&LockName>, err: &ClientError) -> u8 {
    match (err, lock) {
        (ClientError::Held { .. }, Some(name)) => {
            let holder = describe_holder(client, name).await;
            warn(format_args!("lock \"{name}\" is {holder}"));
        }
        (other, _) => warn(other),
    }
    exit_code(err)
}

/// Who holds `name` now, as far as a status request can tell.
async fn describe_holder(client: &Client, name: &LockName) -> String {
    match client.status(name).await {
        Ok(lock) => holding(&lock),
        Err(err) => format!("held by another holder (who, is unknown: {err})"),
    }
}

fn until(lock: &LockView) -> String {
    lock.expire_time.as_deref().map(when).unwrap_or_default()
}

fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_millis().div_ceil(1000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn held() -> ClientError {
        ClientError::Held {
            message: "held".into(),
            fence: Some(7),
            expire_time: None,
        }
    }

    fn request(ttl: Option<Duration>) -> Acquire {
        Acquire {
            nonce: "n".into(),
            ttl,
            ..Acquire::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_is_timed_from_the_sending_of_the_request_that_got_it() {
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let started = Instant::now();
        let (_, sent) = take_with(
            &client,
            "lock",
            None,
            request(None),
            Duration::ZERO,
            async |_| {
                // The answer takes 5 s to come back.
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(
            sent, started,
            "the lease was counted from the answer's arrival"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_sent_in_pieces_of_at_most_a_third_of_the_lease() {
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let waits = Mutex::new(Vec::new());
        let wait = Duration::from_secs(10);
        let ttl = Some(Duration::from_secs(3));
        let taken = take_with(&client, "lock", None, request(ttl), wait, async |request| {
            let asked = request.wait.unwrap_or_default();
            waits.lock().unwrap().push(asked);
            // The server waits what it was asked, and the lock stays held.
            tokio::time::sleep(asked).await;
            Err::<(), _>(held())
        })
        .await;
        assert!(matches!(taken, Err(ClientError::Held { .. })));
        let waits = waits.into_inner().unwrap();
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(1)),
            "{waits:?}"
        );
        let total: Duration = waits.iter().sum();
        assert!(total >= wait, "waited {total:?} of {wait:?}");
    }
}
