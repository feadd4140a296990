//! A node's local clock in the simulation: offset (skew) and rate error
//! (drift) against the simulator's global time.

use stretchfs_core::{Time, WallTime};

/// Wall-clock time at global zero: 2027-01-15, an arbitrary fixed instant.
pub const EPOCH_US: u64 = 1_800_000_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimClock {
    /// Local time at global zero, in microseconds (non-negative so local
    /// time never goes below zero).
    pub offset_us: u64,
    /// Parts per million the local clock runs fast (positive) or slow.
    pub drift_ppm: i64,
    /// How far this node's wall clock is off true time (NTP-level skew).
    pub wall_skew_us: i64,
}

const MILLION: i64 = 1_000_000;

impl SimClock {
    pub const EXACT: SimClock = SimClock {
        offset_us: 0,
        drift_ppm: 0,
        wall_skew_us: 0,
    };

    /// This node's wall clock at global time `global`.
    pub fn wall(&self, global: Time) -> WallTime {
        let g = global.as_micros() as i64;
        let w = EPOCH_US as i64 + g + g * self.drift_ppm / MILLION + self.wall_skew_us;
        WallTime::from_micros(w.max(0) as u64)
    }

    /// 64-bit math is exact here: a run lasts far less than the ~290 years
    /// after which `global * drift_ppm` would overflow.
    pub fn local(&self, global: Time) -> Time {
        let g = global.as_micros() as i64;
        let l = self.offset_us as i64 + g + g * self.drift_ppm / MILLION;
        Time::from_micros(l.max(0) as u64)
    }

    /// The earliest global time at which the local clock reads `local`.
    pub fn global_at(&self, local: Time) -> Time {
        let l = local.as_micros() as i64 - self.offset_us as i64;
        if l <= 0 {
            return Time::ZERO;
        }
        let rate = MILLION + self.drift_ppm;
        let mut g = (l * MILLION + rate - 1) / rate;
        // Integer rounding in `local` can leave us a microsecond short.
        while self.local(Time::from_micros(g as u64)) < local {
            g += 1;
        }
        while g > 0 && self.local(Time::from_micros(g as u64 - 1)) >= local {
            g -= 1;
        }
        Time::from_micros(g as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_at_inverts_local_exactly() {
        for clock in [
            SimClock::EXACT,
            SimClock {
                offset_us: 5_000_000,
                drift_ppm: 1000,
                wall_skew_us: 0,
            },
            SimClock {
                offset_us: 17,
                drift_ppm: -999,
                wall_skew_us: 0,
            },
        ] {
            for g in [0u64, 1, 999, 1_000_001, 77_777_777, 3_600_000_000] {
                let l = clock.local(Time::from_micros(g));
                let back = clock.global_at(l);
                assert!(back.as_micros() <= g, "{clock:?} {g}");
                assert_eq!(clock.local(back), l, "{clock:?} {g}");
            }
        }
    }

    #[test]
    fn drift_changes_the_rate() {
        let fast = SimClock {
            offset_us: 0,
            drift_ppm: 1000,
            wall_skew_us: -250_000,
        };
        let w = fast.wall(Time::from_secs(1000)).as_micros() as i64;
        assert_eq!(w - EPOCH_US as i64, 1_001_000_000 - 250_000);
        assert_eq!(fast.local(Time::from_secs(1000)), Time::from_secs(1001));
    }
}
