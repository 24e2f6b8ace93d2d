//! Scenario 5, bad input, fuzzed: property tests over everything that comes
//! from outside the process, driven by proptest's `TestRunner` so that the
//! cases can be counted and reported.
//!
//! Four kinds of input, each with its own oracle:
//! - [`socket`]: scripts of client messages fed to the core's
//!   `serve_socket` over in-memory halves on a `ManualRuntime` (cheap, so
//!   many cases), checked step by step against a model of the protocol:
//!   close reason, every frame the client receives, the subscription table;
//! - [`wire`]: raw bytes and framed messages written over real TCP to the
//!   tokio runtime crate's websocket server, next to a well-behaved client
//!   that must receive every event;
//! - [`publish`]: event names and data given to `publish` (huge, deep,
//!   bytes, non-string keys, NaN), accepted exactly when they are JSON;
//! - [`documents`]: BSON documents written by others into a MongoChannel's
//!   capped collection while it tails it.
//!
//! Panics anywhere in the process while the scenario runs (server tasks
//! included, whose panics an executor would swallow) are caught by a panic
//! hook and fail the row. A hang is a failed case: every wait is bounded.
//! Each part runs with its own seed derived from one printed seed, so a
//! failure can be replayed with `TBONE_FUZZ_SEED=<seed>`, alone if need be
//! with `TBONE_FUZZ_PARTS=sockets|tcp|publish|documents` (comma-separated).

use std::fmt::Debug;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseResult, TestError, TestRunner};

use super::{Profile, Row};

pub mod documents;
pub mod publish;
pub mod socket;
pub mod wire;

/// Runs the scenario: the four parts in turn, each adding its figures and
/// checks to one row.
pub fn run(profile: Profile) -> Row {
    let seed = seed();
    let mut row = Row::new(
        "bad input, fuzzed",
        "-",
        "fuzzed client messages and bytes, hostile capped-collection documents, invalid publish data",
    );
    row.note(format!(
        "seed {seed} (replay: TBONE_FUZZ_SEED={seed}); proptest cases, shrinking on failure"
    ));
    let panics = PanicWatch::install();
    let mut loads = Vec::new();

    let parts = selected_parts(&mut row);
    if parts.contains(&"sockets") {
        let part = Instant::now();
        loads.push(socket::run(profile, seed, &mut row));
        tracing::info!(elapsed = ?part.elapsed(), "fuzz: core sockets done");
    }
    if parts.iter().any(|p| *p != "sockets") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => {
                type Part = fn(Profile, u64, &tokio::runtime::Runtime, &mut Row) -> String;
                let runs: [(&str, Part); 3] = [
                    ("tcp", wire::run),
                    ("publish", publish::run),
                    ("documents", documents::run),
                ];
                for (name, run) in runs {
                    if parts.contains(&name) {
                        let part = Instant::now();
                        loads.push(run(profile, seed, &runtime, &mut row));
                        tracing::info!(elapsed = ?part.elapsed(), "fuzz: {name} done");
                    }
                }
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            }
            Err(e) => row.check(false, format!("cannot build a tokio runtime: {e}")),
        }
    }

    let seen = panics.uninstall();
    row.check(
        seen.is_empty(),
        format!(
            "{} panic(s) in the process while fuzzing; first: {}",
            seen.len(),
            seen.first().map(String::as_str).unwrap_or("")
        ),
    );
    row.load = loads.join(", ");
    row
}

/// The parts to run: all, or those `TBONE_FUZZ_PARTS` names
/// (comma-separated), to replay one part's failure quickly; a part left
/// out is said so in the row.
fn selected_parts(row: &mut Row) -> Vec<&'static str> {
    const ALL: [&str; 4] = ["sockets", "tcp", "publish", "documents"];
    let Ok(wanted) = std::env::var("TBONE_FUZZ_PARTS") else {
        return ALL.to_vec();
    };
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let unknown: Vec<&&str> = wanted.iter().filter(|w| !ALL.contains(w)).collect();
    row.check(
        unknown.is_empty(),
        format!("TBONE_FUZZ_PARTS names unknown parts {unknown:?}; the parts are {ALL:?}"),
    );
    let parts: Vec<&'static str> = ALL.into_iter().filter(|p| wanted.contains(p)).collect();
    row.note(format!("only the parts {parts:?} ran (TBONE_FUZZ_PARTS)"));
    parts
}

/// The scenario's seed: `TBONE_FUZZ_SEED`, or a fresh random one.
fn seed() -> u64 {
    match std::env::var("TBONE_FUZZ_SEED")
        .ok()
        .map(|s| s.parse::<u64>())
    {
        Some(Ok(seed)) => seed,
        Some(Err(e)) => {
            tracing::error!(%e, "TBONE_FUZZ_SEED is not a number; using a random seed");
            RandomState::new().hash_one(Instant::now())
        }
        None => RandomState::new().hash_one(Instant::now()),
    }
}

/// A runner for one part: `cases` cases from a seed of its own (the
/// scenario's seed mixed with `part`), no failure files, and a bounded
/// shrink (cases over sockets and Mongo are slow to replay).
pub(crate) fn runner(seed: u64, part: u64, cases: u32, max_shrink_iters: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        source_file: None,
        max_shrink_iters,
        max_shrink_time: 120_000,
        rng_seed: RngSeed::Fixed(seed ^ part.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        ..Config::default()
    };
    TestRunner::new(config)
}

/// Runs `test` over `strategy` and turns a failure (after shrinking) into a
/// failed check of `row` naming `part` and the smallest failing input.
pub(crate) fn run_cases<S>(
    runner: &mut TestRunner,
    strategy: &S,
    part: &str,
    row: &mut Row,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S: Strategy,
    S::Value: Debug,
{
    match runner.run(strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => row.check(
            false,
            format!(
                "{part}: {reason}; smallest failing input: {}",
                shorten(&format!("{input:?}"), 600)
            ),
        ),
        Err(TestError::Abort(reason)) => row.check(false, format!("{part}: aborted: {reason}")),
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), for
/// reports.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// Fails the current case with `what` unless `ok`.
pub(crate) fn ensure(ok: bool, what: impl FnOnce() -> String) -> TestCaseResult {
    if ok {
        Ok(())
    } else {
        Err(proptest::test_runner::TestCaseError::fail(what()))
    }
}

type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync + 'static>;

/// Records every panic of the process while installed (any thread: the
/// server's connection tasks too), then hands it to the previous hook.
struct PanicWatch {
    seen: Arc<Mutex<Vec<String>>>,
    previous: Arc<Hook>,
}

impl PanicWatch {
    fn install() -> Self {
        let previous: Arc<Hook> = Arc::new(std::panic::take_hook());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (hook_seen, hook_previous) = (seen.clone(), previous.clone());
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            hook_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("thread {:?}: {info}", thread.name().unwrap_or("?")));
            hook_previous(info);
        }));
        PanicWatch { seen, previous }
    }

    /// Puts the previous hook back; returns the panics seen.
    fn uninstall(self) -> Vec<String> {
        let previous = self.previous;
        std::panic::set_hook(Box::new(move |info| previous(info)));
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.clone()
    }
}
