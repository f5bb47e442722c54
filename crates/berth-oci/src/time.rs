//! Unix times: the current one, and its UTC calendar forms (RFC 3339 timestamps and
//! dates) as OCI annotations, tokens, the audit log and the dashboard show them.
//!
//! Calendar arithmetic is `jiff`'s (built without its time zone database: only UTC is
//! needed). [`now`] is the one place the workspace reads the wall clock in seconds, so a
//! clock before 1970 means the same thing everywhere; reading the clock is no I/O.

use jiff::Timestamp;

/// Seconds since 1970-01-01 UTC now; `0` if the system clock is set before 1970.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The timestamp of unix seconds, clamped to `jiff`'s range (the years -9999 to 9999,
/// less a day at each end).
fn timestamp(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `YYYY-MM-DD` (UTC) of unix seconds.
pub fn date(secs: i64) -> String {
    timestamp(secs).strftime("%Y-%m-%d").to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC) of unix seconds.
pub fn rfc3339(secs: i64) -> String {
    timestamp(secs).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(-86400), "1969-12-31");
    }

    #[test]
    fn out_of_range_times_are_clamped() {
        // jiff's range leaves a day at each end for time zone offsets.
        assert_eq!(rfc3339(i64::MAX), "9999-12-30T22:00:00Z");
        assert_eq!(date(i64::MIN), "-9999-01-02");
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(now() > 1_700_000_000);
    }
}
