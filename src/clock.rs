//! Where fencelock gets the time. Every lease decision reads a [`Clock`], so tests and
//! fault drills can move one server's time without sleeping through a lease.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;

    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64 {
        self.now_micros().div_euclid(1000)
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
    }
}

/// The machine's clock shifted by an adjustable offset: a server whose clock runs
/// ahead, or a test that lets a lease run out without waiting for it.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_micros: AtomicI64,
}

impl ShiftedClock {
    /// A clock that starts in step with the machine's.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves this clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }

    /// Puts this clock back in step with the machine's.
    pub fn reset(&self) {
        self.offset_micros.store(0, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now_micros(&self) -> i64 {
        SystemClock.now_micros() + self.offset_micros.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_runs_ahead_by_what_it_was_advanced() {
        let clock = ShiftedClock::new();
        clock.advance(Duration::from_secs(3600));
        let ahead = clock.now_millis() - SystemClock.now_millis();
        // The two readings are taken a moment apart, so allow for that moment.
        assert!(
            (3_599_000..=3_600_000).contains(&ahead),
            "ahead by {ahead} ms"
        );
    }
}
