//! The soak-and-fault suite: the system as a whole under load and faults,
//! reported as figures.
//!
//! Each scenario is an async function that drives real servers, clients,
//! channels and (for the Mongo scenarios) a private MongoDB server, and
//! returns a [`Row`]: what it published, what arrived, what was lost or
//! repeated, what errors reached the caller, and the process's peak memory.
//! The `soak` test target (`tests/tests/soak.rs`) runs them one after
//! another, prints the table, and fails if any row holds a failed check.
//!
//! Two profiles, chosen with the `TBONE_SOAK` environment variable:
//! `short` (the default, what `scripts/test` and CI run) and `long`
//! (`scripts/soak`, whose table is kept in RELIABILITY.md). The checks are
//! the same in both; only the load differs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::{TestRuntime, Tokio};

pub mod churn;
pub mod flood;
pub mod fuzz;
pub mod heap;
pub mod loopback;
pub mod mongo_faults;
pub mod proxy;
pub mod receivers;
pub mod redis_faults;
pub mod resume;
pub mod server_faults;
pub mod shutdown;
pub mod stalled;

/// A scenario: its name, and a function that runs it to completion on a
/// runtime of its own and returns its row.
pub type Scenario = (&'static str, fn(Profile) -> Row);

/// Every scenario, in the order the report lists them.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        ("receiver faults", |p| Tokio::block_on(receivers::run(p))),
        ("churn", |p| Tokio::block_on(churn::run(p))),
        ("churn: injected leak", |p| {
            Tokio::block_on(churn::injected_leak_is_caught(p))
        }),
        ("stalled consumers", |p| Tokio::block_on(stalled::run(p))),
        ("clients flooding requests", |p| {
            Tokio::block_on(flood::run(p))
        }),
        ("resume after reconnects", |p| {
            Tokio::block_on(resume::run(p))
        }),
        ("mongo faults", |p| Tokio::block_on(mongo_faults::run(p))),
        ("redis faults", |p| Tokio::block_on(redis_faults::run(p))),
        ("shutdown: channel stop", |p| {
            Tokio::block_on(shutdown::channel_stop(p))
        }),
        ("shutdown: demo server", |p| {
            Tokio::block_on(shutdown::demo_server(p))
        }),
        ("shutdown: Mongo instance stop", |p| {
            Tokio::block_on(shutdown::mongo_instance_stop(p))
        }),
        ("bad input, fuzzed", fuzz::run),
    ]
}

/// How much load the scenarios apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Minutes in all: what CI runs on every change.
    Short,
    /// The full figures of the reliability issue: run by hand with
    /// `scripts/soak`.
    Long,
}

impl Profile {
    /// The profile named by `TBONE_SOAK` (`short` when unset).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("TBONE_SOAK").as_deref() {
            Err(_) | Ok("") | Ok("short") => Ok(Profile::Short),
            Ok("long") => Ok(Profile::Long),
            Ok(other) => Err(format!(
                "TBONE_SOAK={other:?}: expected \"short\" or \"long\""
            )),
        }
    }

    /// `short` in the short profile, `long` in the long one.
    pub fn pick<T>(self, short: T, long: T) -> T {
        match self {
            Profile::Short => short,
            Profile::Long => long,
        }
    }

    /// The profile's name, as `TBONE_SOAK` spells it.
    pub fn name(self) -> &'static str {
        self.pick("short", "long")
    }
}

/// One line of the report: a scenario's load, faults and outcome. The
/// counters mean, for every scenario: `published` events accepted by the
/// library (acknowledged), `delivered` deliveries that reached a consumer
/// (one per event and subscribed client), `lost` expected deliveries that
/// never arrived, `duplicates` deliveries seen more than once, `errors`
/// errors the library returned to the caller (expected ones included:
/// publishing during an outage must fail loudly).
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: String,
    pub load: String,
    pub faults: String,
    pub published: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub errors: u64,
    /// Peak resident memory of this process during the scenario (KiB).
    pub peak_memory_kib: u64,
    /// Other figures the scenario measured ("p99 1.05x of baseline").
    pub notes: Vec<String>,
    /// Checks that failed; the suite fails if any row has one.
    pub failures: Vec<String>,
    /// How long the scenario ran.
    pub elapsed: Duration,
}

impl Row {
    /// A row for `scenario`, with its load and faults described.
    pub fn new(scenario: &str, load: impl Into<String>, faults: impl Into<String>) -> Self {
        Row {
            scenario: scenario.to_string(),
            load: load.into(),
            faults: faults.into(),
            ..Row::default()
        }
    }

    /// Records a check: when `ok` is false, `what` is a failure of the
    /// scenario (reported with the table, and failing the suite).
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            let what = what.into();
            tracing::error!(scenario = %self.scenario, "check failed: {what}");
            self.failures.push(what);
        }
    }

    /// Records a figure worth reporting beside the counters.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// Resident memory of this process now (KiB), from `/proc/self/status`.
pub fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// Peak resident memory since the last [`reset_peak_memory`] (KiB).
pub fn peak_rss_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

/// Starts a new peak-memory window (Linux: writing 5 to
/// `/proc/self/clear_refs` resets the high-water mark), so each scenario
/// reports its own peak.
pub fn reset_peak_memory() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        tracing::warn!(%e, "cannot reset the peak memory mark; peaks are since process start");
    }
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// A percentile (0.0..=1.0) of `samples`, which it sorts. Zero when empty.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Wall time since `start`, for the row.
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}

/// The report as a Markdown table, then the notes and failures of each row.
pub fn render(rows: &[Row], profile: Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Soak-and-fault suite, {} profile\n", profile.name());
    let _ = writeln!(
        out,
        "| scenario | load | faults injected | published | delivered | lost | duplicates | errors to caller | peak memory | time | result |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} MiB | {:.1} s | {} |",
            row.scenario,
            row.load,
            row.faults,
            row.published,
            row.delivered,
            row.lost,
            row.duplicates,
            row.errors,
            row.peak_memory_kib as f64 / 1024.0,
            row.elapsed.as_secs_f64(),
            if row.failures.is_empty() {
                "pass"
            } else {
                "FAIL"
            },
        );
    }
    for row in rows {
        if row.notes.is_empty() && row.failures.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:", row.scenario);
        for note in &row.notes {
            let _ = writeln!(out, "- {note}");
        }
        for failure in &row.failures {
            let _ = writeln!(out, "- FAILED: {failure}");
        }
    }
    out
}
