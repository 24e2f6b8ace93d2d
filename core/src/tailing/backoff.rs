//! Delays between reconnection attempts of a tailing consumer or writer.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Exponential delays with jitter, so that many instances reconnecting
/// after a server restart do not arrive together.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch::tailing::Backoff;
///
/// let mut backoff = Backoff::new((Duration::from_millis(100), Duration::from_secs(1)));
/// let first = backoff.delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// let second = backoff.delay();
/// assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
/// backoff.reset();
/// assert!(backoff.delay() <= Duration::from_millis(100));
/// ```
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    /// Delays from `min`, doubling up to `max`.
    pub fn new((min, max): (Duration, Duration)) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// Starts again from the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// A delay between half and all of the current step; doubles the step.
    pub fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        self.draws += 1;
        let fraction = (self.random.hash_one(self.draws) % 1000) as u32;
        step / 2 + (step / 2) * fraction / 1000
    }
}
