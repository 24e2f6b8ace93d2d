//! Counting live heap allocations by size: the server's (`tbone-load
//! --alloc-stats`: where an idle connection's bytes go) and one thread's
//! (the `conn_memory` example). The counting allocator wraps the system's
//! and counts only once enabled (one relaxed load, or one thread-local
//! read, per allocation otherwise).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Sizes counted one by one; larger ones by power of two.
pub const EXACT: usize = 4096;
const LOG_BUCKETS: usize = 64;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: [AtomicI64; EXACT + 1 + LOG_BUCKETS] =
    [const { AtomicI64::new(0) }; EXACT + 1 + LOG_BUCKETS];
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, counting live allocations by size when enabled.
pub enum Counting {
    /// Counts every thread's allocations once [`enable`] is called.
    Process,
    /// Counts the allocations of the threads that turned it on with
    /// [`count_this_thread`].
    PerThread,
}

impl Counting {
    fn count(&self, size: usize, delta: i64) {
        let enabled = match self {
            Counting::Process => ENABLED.load(Ordering::Relaxed),
            Counting::PerThread => THIS_THREAD.try_with(Cell::get).unwrap_or(false),
        };
        if enabled {
            if let Some(live) = LIVE.get(slot(size)) {
                live.fetch_add(delta, Ordering::Relaxed);
            }
            LIVE_BYTES.fetch_add(delta * size as i64, Ordering::Relaxed);
        }
    }
}

fn slot(size: usize) -> usize {
    if size <= EXACT {
        size
    } else {
        EXACT + 1 + (usize::BITS - (size - 1).leading_zeros()) as usize
    }
}

/// The size a slot stands for (the upper bound, above [`EXACT`]).
fn slot_size(slot: usize) -> usize {
    if slot <= EXACT {
        slot
    } else {
        1usize << (slot - EXACT - 1).min(63)
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are
// plain atomics and a const thread-local, and never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size(), 1);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size(), 1);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.count(layout.size(), -1);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count(layout.size(), -1);
        self.count(new_size, 1);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts counting every thread's allocations (in the server process),
/// with [`Counting::Process`].
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The bytes of the live allocations counted so far (allocated minus
/// freed since counting began).
pub fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// The number of live allocations counted so far (allocated minus freed
/// since counting began).
pub fn live_allocations() -> i64 {
    LIVE.iter().map(|live| live.load(Ordering::Relaxed)).sum()
}

/// Starts (`true`) or stops counting this thread's allocations, with
/// [`Counting::PerThread`]; returns whether it was counted.
pub fn count_this_thread(on: bool) -> bool {
    THIS_THREAD.with(|counted| counted.replace(on))
}

/// Runs `f` with this thread's allocations uncounted (the counting's own
/// bookkeeping), then counts them again if they were.
pub fn uncounted<T>(f: impl FnOnce() -> T) -> T {
    let was = count_this_thread(false);
    let output = f();
    count_this_thread(was);
    output
}

/// The counters as one line: `<live bytes> <size>:<count> ...`.
pub fn snapshot_line() -> String {
    let mut line = LIVE_BYTES.load(Ordering::Relaxed).to_string();
    for (i, live) in LIVE.iter().enumerate() {
        let n = live.load(Ordering::Relaxed);
        if n != 0 {
            line.push_str(&format!(" {}:{n}", slot_size(i)));
        }
    }
    line
}

/// The live allocations at one time: taken, or a parsed [`snapshot_line`].
pub struct Snapshot {
    bytes: i64,
    by_size: BTreeMap<usize, i64>,
}

impl Snapshot {
    /// The counters now (this thread's allocations for it are counted as
    /// any others: see [`uncounted`]).
    pub fn take() -> Snapshot {
        let by_size = LIVE
            .iter()
            .enumerate()
            .map(|(i, live)| (slot_size(i), live.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n != 0)
            .collect();
        Snapshot {
            bytes: LIVE_BYTES.load(Ordering::Relaxed),
            by_size,
        }
    }

    /// Reads a [`snapshot_line`].
    pub fn parse(line: &str) -> Option<Snapshot> {
        let mut fields = line.split_whitespace();
        let bytes = fields.next()?.parse().ok()?;
        let mut by_size = BTreeMap::new();
        for field in fields {
            let (size, n) = field.split_once(':')?;
            by_size.insert(size.parse().ok()?, n.parse().ok()?);
        }
        Some(Snapshot { bytes, by_size })
    }

    /// How many more allocations of each size are live in `self` than in
    /// `before` (sizes whose count changed).
    pub fn since(&self, before: &Snapshot) -> Vec<(usize, i64)> {
        let mut changes: Vec<(usize, i64)> = self
            .by_size
            .iter()
            .map(|(size, count)| {
                (
                    *size,
                    count - before.by_size.get(size).copied().unwrap_or(0),
                )
            })
            .filter(|(_, delta)| *delta != 0)
            .collect();
        for (size, count) in &before.by_size {
            if !self.by_size.contains_key(size) {
                changes.push((*size, -count));
            }
        }
        changes
    }

    /// Prints what was allocated between `before` and `self`, per
    /// connection: the allocation sizes that account for most bytes.
    pub fn report_since(&self, before: &Snapshot, connections: usize, label: &str) {
        let n = connections.max(1) as f64;
        let mut rows = self.since(before);
        rows.sort_by_key(|(size, delta)| std::cmp::Reverse(*size as i64 * delta));
        let requested = (self.bytes - before.bytes) as f64 / n;
        // glibc: 8 bytes of header, 16-byte granules, 32 bytes at least.
        let with_overhead: f64 = rows
            .iter()
            .map(|(size, delta)| ((size + 8).div_ceil(16) * 16).max(32) as f64 * *delta as f64)
            .sum::<f64>()
            / n;
        println!(
            "heap {label:<12} {requested:.0} B/conn requested, ~{with_overhead:.0} B/conn with malloc's overhead; by size (allocations per connection):"
        );
        let mut shown = 0;
        for (size, delta) in rows {
            let per_conn = delta as f64 / n;
            if per_conn.abs() < 0.05 || shown == 16 {
                continue;
            }
            shown += 1;
            println!(
                "    {size:>6} B x {per_conn:>6.2} = {:>7.0} B/conn",
                size as f64 * per_conn
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_snapshots() {
        assert_eq!(slot_size(slot(100)), 100);
        assert!(slot_size(slot(5000)) >= 5000);
        assert_eq!(slot_size(slot(8192)), 8192);
        let before = Snapshot::parse("100 16:1").unwrap();
        let after = Snapshot::parse("1700 16:3 512:2 64:3").unwrap();
        assert_eq!(after.bytes - before.bytes, 1600);
        after.report_since(&before, 2, "test");
    }
}
