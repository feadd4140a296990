//! Time as a value. Core never reads a clock: every entry point takes `now`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub};
pub use std::time::Duration;

/// A point on one node's monotonic clock, in microseconds since an arbitrary
/// origin. Times from different nodes are never compared with each other.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);
    pub const MAX: Time = Time(u64::MAX);

    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }

    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1_000)
    }

    pub const fn from_secs(s: u64) -> Time {
        Time(s * 1_000_000)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(micros(d)))
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(micros(d)))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Time::ZERO - Duration::from_secs(1), Time::ZERO);
        assert_eq!(Time::MAX + Duration::from_secs(1), Time::MAX);
        assert_eq!(
            Time::from_millis(1500).since(Time::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(Time::from_secs(1).since(Time::from_secs(2)), Duration::ZERO);
    }

    #[test]
    fn earliest_picks_the_smaller_present_deadline() {
        let a = Some(Time::from_secs(1));
        let b = Some(Time::from_secs(2));
        assert_eq!(earliest(a, b), a);
        assert_eq!(earliest(None, b), b);
        assert_eq!(earliest(a, None), a);
        assert_eq!(earliest(None, None), None);
    }

    #[test]
    fn display_is_seconds_with_micros() {
        assert_eq!(Time::from_micros(1_000_042).to_string(), "1.000042");
    }
}

/// Wall-clock time in microseconds since the Unix epoch. Used only where
/// nodes must agree on an instant (purchase expiry, signed URLs); timers use
/// the monotonic [`Time`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WallTime(u64);

impl WallTime {
    pub const fn from_micros(us: u64) -> WallTime {
        WallTime(us)
    }

    pub const fn from_secs(s: u64) -> WallTime {
        WallTime(s * 1_000_000)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    pub fn as_secs(self) -> u64 {
        self.0 / 1_000_000
    }

    pub fn since(self, earlier: WallTime) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for WallTime {
    type Output = WallTime;
    fn add(self, d: Duration) -> WallTime {
        WallTime(self.0.saturating_add(micros(d)))
    }
}

impl Sub<Duration> for WallTime {
    type Output = WallTime;
    fn sub(self, d: Duration) -> WallTime {
        WallTime(self.0.saturating_sub(micros(d)))
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn units_convert_exactly() {
        assert_eq!(Time::from_secs(3).as_micros(), 3_000_000);
        assert_eq!(Time::from_millis(7).as_micros(), 7_000);
        assert_eq!(Time::from_micros(9).as_micros(), 9);
        assert_eq!(Time::from_millis(2500).as_secs_f64(), 2.5);
        assert_eq!(WallTime::from_secs(4).as_micros(), 4_000_000);
        assert_eq!(WallTime::from_micros(4_999_999).as_secs(), 4);
        assert_eq!(WallTime::from_micros(5_000_000).as_secs(), 5);
        assert_eq!(WallTime::from_micros(12).as_micros(), 12);
    }

    #[test]
    fn adding_and_subtracting_durations_moves_by_them() {
        let mut t = Time::from_secs(2);
        t += Duration::from_millis(250);
        assert_eq!(t, Time::from_millis(2250));
        assert_eq!(t + Duration::from_millis(750), Time::from_secs(3));
        assert_eq!(t - Duration::from_millis(250), Time::from_secs(2));
        assert_eq!(t.since(Time::from_secs(1)), Duration::from_millis(1250));
        let w = WallTime::from_secs(10);
        assert_eq!(w + Duration::from_secs(2), WallTime::from_secs(12));
        assert_eq!(w - Duration::from_secs(2), WallTime::from_secs(8));
        assert_eq!(w.since(WallTime::from_secs(7)), Duration::from_secs(3));
        assert_eq!(WallTime::from_secs(7).since(w), Duration::ZERO);
        assert_eq!(
            WallTime::from_secs(1) - Duration::from_secs(2),
            WallTime::default()
        );
        assert_eq!(
            WallTime::from_micros(u64::MAX) + Duration::from_secs(1),
            WallTime::from_micros(u64::MAX)
        );
        assert_eq!(
            Time::ZERO + Duration::MAX,
            Time::MAX,
            "a huge duration saturates"
        );
    }
}
