//! Whether a backend's tailing task is still running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Raises a flag while it lives: a tailing task holds it, so the flag
/// drops when the task ends, is aborted, or is dropped with its runtime.
/// A backend reports the flag in its stats, which is how a stop can be seen
/// to have waited for the task.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use tbone_dispatch::tailing::Alive;
///
/// let tailing = Arc::new(AtomicBool::new(false));
/// let alive = Alive::raise(&tailing);
/// assert!(tailing.load(Ordering::Acquire));
/// drop(alive);
/// assert!(!tailing.load(Ordering::Acquire));
/// ```
#[derive(Debug)]
pub struct Alive(Arc<AtomicBool>);

impl Alive {
    /// Sets `flag` until the returned guard is dropped.
    pub fn raise(flag: &Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Release);
        Alive(flag.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
