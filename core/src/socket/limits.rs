//! What one client may ask of the server: subscriptions, messages in
//! flight, messages per second.

use std::time::Instant;

/// The limits of one served socket: what a single client may cost the
/// server. Going over the subscription or rate limit closes the connection
/// with 1008 (policy) and a reason naming the limit; the in-flight limit is
/// enforced by not reading (the client's messages wait in TCP buffers until
/// the application has answered earlier ones), so it never closes anything.
///
/// ```
/// use tbone_dispatch::{Limits, SocketOptions};
///
/// let limits = Limits::default()
///     .max_subscriptions(32)
///     .max_in_flight(4)
///     .max_messages_per_second(Some(50));
/// let options = SocketOptions::new(["resource_create"]).limits(limits);
/// assert_eq!(options.socket_limits().in_flight(), 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    subscriptions: usize,
    in_flight: usize,
    per_second: Option<u32>,
}

impl Default for Limits {
    /// 256 subscriptions made by the client, 16 application messages in
    /// flight, 1 000 messages per second.
    fn default() -> Self {
        Limits {
            subscriptions: 256,
            in_flight: 16,
            per_second: Some(1_000),
        }
    }
}

impl Limits {
    /// Most subscriptions the client may hold through control messages
    /// (default 256). The events the server subscribes the socket to when
    /// it connects do not count.
    pub fn max_subscriptions(mut self, subscriptions: usize) -> Self {
        self.subscriptions = subscriptions;
        self
    }

    /// Most messages handed to the application's handler and not yet
    /// answered (default 16, at least 1). While that many are in flight the
    /// socket is not read.
    pub fn max_in_flight(mut self, messages: usize) -> Self {
        self.in_flight = messages.max(1);
        self
    }

    /// How many messages (of any kind, pings and pongs included) the client
    /// may send per second (default 1 000; `None` for no limit), as a token
    /// bucket: a burst of that many at once, and that many per second on
    /// average after it, so over any T seconds at most `n + n·T`.
    pub fn max_messages_per_second(mut self, messages: Option<u32>) -> Self {
        self.per_second = messages;
        self
    }

    /// The subscription limit.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// The in-flight limit.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The rate limit, if any.
    pub fn messages_per_second(&self) -> Option<u32> {
        self.per_second
    }
}

/// A token bucket of `limit` tokens, refilled at `limit` per second: a
/// client may send a burst of `limit` messages, and `limit` per second on
/// average (so at most `limit` + `limit`·T over any T seconds). Sixteen
/// bytes, whatever the limit.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Tokens left; `None` until the first message (a full bucket).
    tokens: Option<f64>,
    last: Instant,
}

impl RateLimiter {
    pub(crate) fn new(now: Instant) -> Self {
        RateLimiter {
            tokens: None,
            last: now,
        }
    }

    /// Counts one message at `now`; false if it is one too many for `limit`.
    pub(crate) fn admit(&mut self, now: Instant, limit: Option<u32>) -> bool {
        let Some(limit) = limit else {
            return true;
        };
        let rate = f64::from(limit);
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * rate;
        self.last = self.last.max(now);
        let tokens = (self.tokens.unwrap_or(rate) + refill).min(rate);
        if tokens < 1.0 {
            self.tokens = Some(tokens);
            return false;
        }
        self.tokens = Some(tokens - 1.0);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_of_the_limit_then_the_limit_per_second() {
        let start = Instant::now();
        let mut bucket = RateLimiter::new(start);
        assert!((0..3).all(|_| bucket.admit(start, Some(3))));
        assert!(!bucket.admit(start, Some(3)), "the burst is spent");
        let third = start + Duration::from_millis(334);
        assert!(
            bucket.admit(third, Some(3)),
            "a token every third of a second"
        );
        assert!(!bucket.admit(third, Some(3)));
        assert!(bucket.admit(third, None), "no limit");
        let mut never = RateLimiter::new(start);
        assert!(!never.admit(start, Some(0)));
    }
}
