//! Rate limits for log lines a peer or client can provoke: a flood of bad
//! requests must not become a flood of log lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `per_second` events allowed per second; the rest are counted
/// and reported with the next one allowed.
pub struct Throttle {
    per_second: u32,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    allowed: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(per_second: u32) -> Throttle {
        Throttle {
            per_second,
            state: Mutex::new(Window {
                start: None,
                allowed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this event may be logged, `n` being how many were
    /// suppressed since the last one that was; `None` to stay quiet.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1));
        if fresh {
            w.start = Some(now);
            w.allowed = 0;
        }
        if w.allowed >= self.per_second {
            w.suppressed += 1;
            return None;
        }
        w.allowed += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_the_count_reported_later() {
        let t = Throttle::new(3);
        let t0 = Instant::now();
        let burst: Vec<_> = (0..10).map(|_| t.allow(t0)).collect();
        assert_eq!(burst[..3], [Some(0), Some(0), Some(0)]);
        assert!(burst[3..].iter().all(Option::is_none));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(t.allow(later), Some(7), "the seven suppressed are reported");
        assert_eq!(t.allow(later), Some(0));
    }
}
