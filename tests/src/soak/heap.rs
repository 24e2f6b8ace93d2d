//! The live heap, and the churn row's leak check.
//!
//! Resident memory is the wrong figure for a leak over a run of seconds:
//! the allocator's and the runtime's pools grow to their high-water mark
//! and stay there, by megabytes that have nothing to do with the number of
//! cycles (the churn row grew +11..13% of a 10 MiB base this way when run
//! alone). A leak is heap that grows with the work done. So the check
//! counts the live heap (the soak harness's global allocator is the load
//! tool's counting allocator) at two late points of a run, each time at
//! rest, and divides the growth by the cycles run between them.
//!
//! Two figures, because buffers move the bytes without leaking: a growable
//! buffer that reaches a new high-water mark is reallocated at twice its
//! size (the steady clients' socket buffers do this now and then, 10-20 KiB
//! at a time in all), while a leak leaves allocations behind. So live
//! allocations must not grow at all, to within [`LEAK_BOUND_ALLOCATIONS`]
//! per cycle, and live bytes by no more than [`LEAK_BOUND_BYTES_PER_CYCLE`]
//! beyond [`BUFFER_GROWTH_SLACK`].

use tbone_dispatch_load::allocs;

/// The most live allocations a churn cycle may leave behind, on average
/// between the run's two late points: one per hundred cycles. A clean run
/// leaves none; a leak of anything, however small, leaves one per cycle.
pub const LEAK_BOUND_ALLOCATIONS: f64 = 0.01;

/// The most live bytes a churn cycle may leave behind, on average between
/// the run's two late points, beyond [`BUFFER_GROWTH_SLACK`].
pub const LEAK_BOUND_BYTES_PER_CYCLE: f64 = 2.0;

/// Bytes that buffers reaching a new high-water mark may add between the
/// two points, whatever the number of cycles (at most 22 KiB seen).
pub const BUFFER_GROWTH_SLACK: i64 = 64 * 1024;

/// The live heap at one time: bytes and allocations allocated and not yet
/// freed since counting began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveHeap {
    /// Bytes of the live allocations.
    pub bytes: i64,
    /// Live allocations.
    pub allocations: i64,
}

/// The live heap now, or why it cannot be known: the soak harness
/// (`tests/tests/soak.rs`) must install
/// `tbone_dispatch_load::allocs::Counting::Process` as its global
/// allocator and enable it.
pub fn live_heap() -> Result<LiveHeap, String> {
    const PROBE: usize = 1 << 20;
    let before = allocs::live_bytes();
    let probe = std::hint::black_box(vec![1u8; PROBE]);
    let during = allocs::live_bytes();
    drop(probe);
    if during - before < PROBE as i64 / 2 {
        return Err(
            "live heap bytes are not being counted: the soak harness must install \
             tbone_dispatch_load::allocs::Counting::Process as its #[global_allocator] and \
             call allocs::enable()"
                .to_string(),
        );
    }
    Ok(LiveHeap {
        bytes: allocs::live_bytes(),
        allocations: allocs::live_allocations(),
    })
}

/// How the live heap changed between two points of a run, over the cycles
/// run between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapGrowth {
    /// The live heap at the first point.
    pub from: LiveHeap,
    /// The live heap at the second point.
    pub to: LiveHeap,
    /// Cycles run between the two points.
    pub cycles: u64,
}

impl HeapGrowth {
    /// Bytes gained per cycle (negative when the heap shrank).
    pub fn bytes_per_cycle(&self) -> f64 {
        (self.to.bytes - self.from.bytes) as f64 / self.cycles.max(1) as f64
    }

    /// Live allocations gained per cycle.
    pub fn allocations_per_cycle(&self) -> f64 {
        (self.to.allocations - self.from.allocations) as f64 / self.cycles.max(1) as f64
    }

    /// Whether the heap grew as a leak makes it grow: more allocations
    /// than [`LEAK_BOUND_ALLOCATIONS`] per cycle, or more bytes than
    /// [`LEAK_BOUND_BYTES_PER_CYCLE`] beyond [`BUFFER_GROWTH_SLACK`].
    pub fn leaks(&self) -> bool {
        let bytes_over_slack = self.to.bytes - self.from.bytes - BUFFER_GROWTH_SLACK;
        self.allocations_per_cycle() > LEAK_BOUND_ALLOCATIONS
            || bytes_over_slack as f64 / self.cycles.max(1) as f64 > LEAK_BOUND_BYTES_PER_CYCLE
    }

    /// The figures, for the report.
    pub fn describe(&self) -> String {
        format!(
            "live heap {} -> {} allocations ({:+.3}/cycle, bound {LEAK_BOUND_ALLOCATIONS}), {} -> {} KiB ({:+.2} B/cycle, bound {LEAK_BOUND_BYTES_PER_CYCLE} beyond {} KiB) over {} cycles",
            self.from.allocations,
            self.to.allocations,
            self.allocations_per_cycle(),
            self.from.bytes / 1024,
            self.to.bytes / 1024,
            self.bytes_per_cycle(),
            BUFFER_GROWTH_SLACK / 1024,
            self.cycles,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn growth(bytes: i64, allocations: i64, cycles: u64) -> HeapGrowth {
        let from = LiveHeap {
            bytes: 200_000,
            allocations: 2_000,
        };
        let to = LiveHeap {
            bytes: from.bytes + bytes,
            allocations: from.allocations + allocations,
        };
        HeapGrowth { from, to, cycles }
    }

    #[test]
    fn buffers_doubling_are_not_a_leak() {
        let buffers = growth(22 * 1024, 0, 2_500);
        assert!(!buffers.leaks(), "{}", buffers.describe());
    }

    #[test]
    fn a_small_allocation_left_per_cycle_is_a_leak() {
        let boxes = growth(8 * 2_500, 2_500, 2_500);
        assert!(boxes.leaks(), "{}", boxes.describe());
    }

    #[test]
    fn a_few_bytes_per_cycle_in_one_growing_buffer_is_a_leak_over_a_long_run() {
        let log = growth(4 * 50_000, 0, 50_000);
        assert!(log.leaks(), "{}", log.describe());
    }
}
