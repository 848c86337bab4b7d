//! Mutual exclusion under contention: many clients, two servers, one table.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::TestApp;

const CLIENTS: usize = 12;
const GRANTS_PER_CLIENT: usize = 4;

/// One holding: from the acquire's answer to the moment the release was sent.
#[derive(Debug, Clone, Copy)]
struct Holding {
    fence: u64,
    granted: Instant,
    released: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contending_clients_on_two_servers_never_hold_the_lock_together() {
    let a = Arc::new(TestApp::spawn().await);
    let b = Arc::new(a.another_instance().await);
    let holdings = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(60);

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let server = if client % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        let holdings = holdings.clone();
        clients.push(tokio::spawn(async move {
            let nonce = format!("client-{client}");
            let mut granted = 0;
            while granted < GRANTS_PER_CLIENT && Instant::now() < deadline {
                let reply = server.acquire("hot", &nonce, "&ttl=30s").await;
                if reply.status != StatusCode::OK {
                    assert_eq!(reply.code(), "lock_held", "{reply:?}");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let start = Instant::now();
                let fence = reply.fence();
                tokio::time::sleep(Duration::from_millis(3)).await;
                let end = Instant::now();
                let released = server.release("hot", fence).await;
                assert_eq!(released.json["released"], true, "{released:?}");
                holdings.lock().unwrap().push(Holding {
                    fence,
                    granted: start,
                    released: end,
                });
                granted += 1;
            }
        }));
    }
    for client in clients {
        client.await.expect("a client task");
    }

    let mut holdings = holdings.lock().unwrap().clone();
    assert_eq!(
        holdings.len(),
        CLIENTS * GRANTS_PER_CLIENT,
        "every client got its grants"
    );
    holdings.sort_by_key(|h| h.granted);
    for pair in holdings.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        assert!(
            later.fence > earlier.fence,
            "fences must grow in grant order: {earlier:?} then {later:?}"
        );
        assert!(
            later.granted >= earlier.released,
            "two holders at once: {earlier:?} overlaps {later:?}"
        );
    }
}
