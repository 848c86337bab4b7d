//! Durations as people write them (`30s`, `1500ms`, `2m`, or whole seconds), and the
//! bounds a lease length must stay within.

use std::time::Duration;

use super::InvalidInput;

/// Parses `30s`, `1500ms`, `2m`, `1h 30m` (anything `humantime` reads) or a whole
/// number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, InvalidInput> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(raw).map_err(|err| {
        InvalidInput::new(format!(
            "{raw:?} is not a duration ({err}); expected for example \"30s\", \"1500ms\", \"2m\" or a whole number of seconds"
        ))
    })
}

/// Formats a duration so that [`parse_duration`] reads it back exactly: whole seconds
/// as `30s`, anything else in milliseconds as `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// `duration` as people write it, in the largest unit that divides it: `7d`, `2h`,
/// `90s`, `1500ms`, `0s`. (`parse_duration` reads every one of them but `d`, which
/// the configuration's durations take.)
pub fn human_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The lease lengths a request may ask for, and the one it gets when it asks for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlBounds {
    pub default: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl TtlBounds {
    /// Checks that the bounds are ordered: `min <= default <= max`, and `min` is at
    /// least a millisecond (leases are stored in milliseconds).
    pub fn new(default: Duration, min: Duration, max: Duration) -> Result<Self, InvalidInput> {
        if min < Duration::from_millis(1) || !(min <= default && default <= max) {
            return Err(InvalidInput::new(format!(
                "lease bounds must satisfy 1ms <= min ({}) <= default ({}) <= max ({})",
                format_duration(min),
                format_duration(default),
                format_duration(max)
            )));
        }
        Ok(Self { default, min, max })
    }

    /// The lease length for a request: the one asked for, if within bounds, else the default.
    pub fn resolve(&self, requested: Option<Duration>) -> Result<Duration, InvalidInput> {
        let Some(ttl) = requested else {
            return Ok(self.default);
        };
        if ttl < self.min || ttl > self.max {
            return Err(InvalidInput::new(format!(
                "ttl {} is outside the allowed range {} to {}",
                format_duration(ttl),
                format_duration(self.min),
                format_duration(self.max)
            )));
        }
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_in_their_largest_whole_unit() {
        let cases = [
            (7 * 86_400_000, "7d"),
            (7_200_000, "2h"),
            (90_000, "90s"),
            (120_000, "2m"),
            (1500, "1500ms"),
            (0, "0s"),
        ];
        for (ms, text) in cases {
            assert_eq!(human_duration(Duration::from_millis(ms)), text);
        }
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_what_is_not_a_duration_and_says_what_was_expected() {
        for raw in ["", "soon", "-5", "1.5", "30 parsecs"] {
            let err = parse_duration(raw).unwrap_err();
            assert!(err.0.contains("expected"), "{raw:?}: {err}");
        }
    }

    #[test]
    fn formatting_reads_back_exactly() {
        for d in [
            Duration::from_secs(30),
            Duration::from_millis(1500),
            Duration::from_millis(1),
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    fn bounds() -> TtlBounds {
        TtlBounds::new(
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn resolve_uses_the_default_and_keeps_values_within_bounds() {
        let b = bounds();
        assert_eq!(b.resolve(None).unwrap(), Duration::from_secs(30));
        assert_eq!(
            b.resolve(Some(Duration::from_secs(1))).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.resolve(Some(Duration::from_secs(3600))).unwrap(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn resolve_rejects_values_outside_the_bounds() {
        let b = bounds();
        let err = b.resolve(Some(Duration::from_millis(999))).unwrap_err();
        assert!(
            err.0
                .contains("999ms is outside the allowed range 1s to 3600s"),
            "{err}"
        );
        assert!(b.resolve(Some(Duration::from_secs(3601))).is_err());
    }

    #[test]
    fn bounds_must_be_ordered() {
        let s = Duration::from_secs;
        assert!(TtlBounds::new(s(30), s(60), s(3600)).is_err());
        assert!(TtlBounds::new(s(30), s(1), s(10)).is_err());
        assert!(TtlBounds::new(s(30), Duration::ZERO, s(60)).is_err());
    }
}
