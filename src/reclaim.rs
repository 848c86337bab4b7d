//! The sweeper: every server sweeps the table for stale records on a jittered
//! interval (a quarter of the reclaim delay, between 1 s and 1 h). Several servers
//! sweeping at once is harmless, as each deletion is conditional; see
//! [`DynamoStore::reclaim_stale`].

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::store::DynamoStore;

/// How often to sweep for a reclaim delay of `reclaim_after`, before jitter.
pub fn sweep_interval(reclaim_after: Duration) -> Duration {
    (reclaim_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Sweeps the table of `store` until the task is aborted.
pub fn spawn_sweeper(store: DynamoStore, reclaim_after: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = sweep_interval(reclaim_after);
        loop {
            // Scaled by a random factor in [0.5, 1), so servers started together do
            // not sweep in step.
            tokio::time::sleep(interval.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
            match store.reclaim_stale(reclaim_after).await {
                Ok(sweep) if sweep.found > 0 => {
                    tracing::info!(
                        found = sweep.found,
                        deleted = sweep.deleted,
                        "swept stale locks"
                    );
                }
                Ok(_) => {}
                // The next sweep tries again; the error was logged where it happened.
                Err(_) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_quarter_of_the_delay_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(sweep_interval(s(2)), s(1));
        assert_eq!(sweep_interval(s(40)), s(10));
        assert_eq!(sweep_interval(s(7 * 86_400)), s(3600));
        assert_eq!(sweep_interval(Duration::ZERO), s(1));
    }
}
