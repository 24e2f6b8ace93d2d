//! The soak-and-fault suite (see `tbone_dispatch_tests::soak`): runs every
//! scenario in turn, prints the report table, writes it to
//! `target/tmp/soak-<profile>.md`, and fails if any check failed.
//!
//! Short profile: `cargo test -p tbone-dispatch-tests --test soak` (part of
//! `scripts/test`). Long profile: `scripts/soak`. Arguments that do not
//! start with `-` select scenarios by name (`... --test soak -- churn`).

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Instant;

use tbone_dispatch_load::allocs;
use tbone_dispatch_tests::soak::{self, Profile, Row};

/// Counts live heap bytes, for the churn row's leak check
/// (`tbone_dispatch_tests::soak::heap`).
#[global_allocator]
static ALLOCATOR: allocs::Counting = allocs::Counting::Process;

fn main() -> ExitCode {
    allocs::enable();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();

    let profile = match Profile::from_env() {
        Ok(profile) => profile,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in soak::scenarios() {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let selected: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();

    let mut rows = Vec::new();
    for (name, run) in soak::scenarios() {
        if !selected.is_empty() && !selected.iter().any(|s| name.contains(s.as_str())) {
            continue;
        }
        println!("soak [{}] {name} ...", profile.name());
        soak::reset_peak_memory();
        let start = Instant::now();
        let mut row =
            std::panic::catch_unwind(AssertUnwindSafe(|| run(profile))).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                let mut row = Row::new(name, "-", "-");
                row.check(false, format!("the scenario panicked: {message}"));
                row
            });
        row.elapsed = start.elapsed();
        row.peak_memory_kib = soak::peak_rss_kib();
        println!(
            "soak [{}] {name}: {} in {:.1} s",
            profile.name(),
            if row.failures.is_empty() {
                "pass"
            } else {
                "FAIL"
            },
            row.elapsed.as_secs_f64()
        );
        rows.push(row);
    }

    let report = soak::render(&rows, profile);
    println!("\n{report}");
    let path = format!("{}/soak-{}.md", env!("CARGO_TARGET_TMPDIR"), profile.name());
    match std::fs::write(&path, &report) {
        Ok(()) => println!("report written to {path}"),
        Err(e) => eprintln!("warning: cannot write the report to {path}: {e}"),
    }
    if rows.iter().any(|row| !row.failures.is_empty()) {
        eprintln!("soak: some checks failed (see the table above)");
        return ExitCode::FAILURE;
    }
    if rows.is_empty() {
        println!("soak: no scenario matched {selected:?}");
    }
    ExitCode::SUCCESS
}
