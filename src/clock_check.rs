//! Whether this server's clock agrees with DynamoDB's. Safety rests on the servers'
//! clocks agreeing within the skew margin; a server cannot see the others' clocks,
//! but every DynamoDB answer carries a `Date` header from AWS's, so each server
//! compares its own with it.
//!
//! `Date` is in whole seconds, so the comparison is coarse: an answer written at
//! DynamoDB time `d` (taken as within a second of the header, either way, so that
//! rounding and truncation both fit) and seen between this server's sending at `s`
//! and receiving at `r` bounds the offset (DynamoDB's clock minus this one's) to
//! `[d - 1 s - r, d + 1 s - s]`. The clock is **suspect** while the last answer's
//! bounds lie wholly beyond the skew margin: then this server's clock is certainly
//! further from any server's that agrees with DynamoDB than the margin allows. That
//! is certain, not a guess, so the check never fires on a clock within the margin,
//! and it catches an error only past the margin plus about a second and a round trip;
//! two servers each off by less than that, in opposite directions, it cannot see.
//! While suspect, the store takes over no lease that ended unreleased (a clock ahead
//! would take over live ones), `/readyz` fails, and the sweeper waits; releases and
//! everything else go on.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::clock::Clock;
use crate::metrics::Metrics;

/// How far a `Date` header may be from the moment its answer was written, either way.
const DATE_PRECISION_MS: i64 = 1000;

/// This server's clock as compared with DynamoDB's.
#[derive(Debug)]
pub struct ClockCheck {
    clock: Arc<dyn Clock>,
    /// The largest offset tolerated: the skew margin.
    bound_ms: i64,
    suspect: AtomicBool,
    /// The last estimate of the offset, in milliseconds (DynamoDB's minus ours).
    offset_ms: Mutex<Option<i64>>,
    metrics: Arc<Metrics>,
}

impl ClockCheck {
    pub fn new(clock: Arc<dyn Clock>, clock_skew: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            clock,
            bound_ms: i64::try_from(clock_skew.as_millis()).unwrap_or(i64::MAX),
            suspect: AtomicBool::new(false),
            offset_ms: Mutex::new(None),
            metrics,
        }
    }

    /// Whether the clock is suspect now.
    pub fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Relaxed)
    }

    /// The last estimate of DynamoDB's clock minus this server's, in milliseconds.
    pub fn offset_ms(&self) -> Option<i64> {
        *self.offset_ms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sentence `/readyz` answers while the clock is suspect.
    pub fn problem(&self) -> Option<String> {
        self.is_suspect().then(|| {
            format!(
                "this server's clock differs from DynamoDB's by about {} s, more than the skew margin ({} ms) allows: takeovers of leases that ended unreleased are refused until it agrees again; fix its time synchronisation (NTP, chrony)",
                self.offset_ms().unwrap_or_default() as f64 / 1000.0,
                self.bound_ms
            )
        })
    }

    /// Notes an answer whose `Date` header says `date_ms`, to a request sent at
    /// `sent_ms` and answered at `received_ms` by this server's clock.
    pub fn sample(&self, date_ms: i64, sent_ms: i64, received_ms: i64) {
        let low = date_ms - DATE_PRECISION_MS - received_ms;
        let high = date_ms + DATE_PRECISION_MS - sent_ms;
        let estimate = date_ms + DATE_PRECISION_MS / 2 - (sent_ms + received_ms) / 2;
        *self.offset_ms.lock().unwrap_or_else(|e| e.into_inner()) = Some(estimate);
        self.metrics.clock_offset(estimate);
        let off = low > self.bound_ms || high < -self.bound_ms;
        let was = self.suspect.swap(off, Ordering::Relaxed);
        self.metrics.clock_suspect(off);
        match (was, off) {
            (false, true) => tracing::error!(
                offset_ms = estimate,
                bound_ms = self.bound_ms,
                "this server's clock disagrees with DynamoDB's by more than the skew margin: takeovers of leases that ended unreleased are refused and /readyz fails until it agrees again"
            ),
            (true, false) => tracing::warn!(
                offset_ms = estimate,
                "this server's clock agrees with DynamoDB's again: takeovers resume"
            ),
            _ => {}
        }
    }

    /// The interceptor that feeds this check every DynamoDB answer.
    pub fn interceptor(self: &Arc<Self>) -> DateInterceptor {
        DateInterceptor(self.clone())
    }
}

/// When a request was sent, by this server's clock.
#[derive(Debug, Clone, Copy)]
struct SentAt(i64);

impl Storable for SentAt {
    type Storer = StoreReplace<Self>;
}

/// Reads the `Date` header of every DynamoDB answer into a [`ClockCheck`].
#[derive(Debug)]
pub struct DateInterceptor(Arc<ClockCheck>);

impl Intercept for DateInterceptor {
    fn name(&self) -> &'static str {
        "fencelock-clock-check"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(SentAt(self.0.clock.now_millis()));
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let received = self.0.clock.now_millis();
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|raw| chrono::DateTime::parse_from_rfc2822(raw).ok());
        if let (Some(date), Some(SentAt(sent))) = (date, cfg.load::<SentAt>()) {
            self.0.sample(date.timestamp_millis(), *sent, received);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn check() -> ClockCheck {
        ClockCheck::new(
            Arc::new(SystemClock),
            Duration::from_millis(500),
            Arc::default(),
        )
    }

    #[test]
    fn a_clock_within_the_headers_precision_is_never_suspect() {
        let check = check();
        // Ours 300 ms ahead of DynamoDB's, the header truncated: never suspect.
        for truncated in [0, 300, 999] {
            let t = 1_000_000 + truncated;
            check.sample(1_000_000, t + 300 - 5, t + 300 + 5);
            assert!(!check.is_suspect(), "{truncated}");
        }
    }

    #[test]
    fn a_clock_far_off_either_way_is_suspect_until_it_agrees_again() {
        let check = check();
        check.sample(1_000_000, 1_008_000, 1_008_010);
        assert!(check.is_suspect(), "8 s ahead");
        assert!(check.problem().unwrap().contains("about -7.5"));
        check.sample(1_000_000, 1_000_100, 1_000_110);
        assert!(!check.is_suspect(), "in step again");
        check.sample(1_000_000, 997_000, 997_010);
        assert!(check.is_suspect(), "3 s behind");
        // 1.4 s ahead is within the header's second plus the margin: not certain.
        check.sample(1_000_000, 1_001_400, 1_001_410);
        assert!(!check.is_suspect());
    }
}
