//! The per-runtime conformance list (`conformance_suite!` in
//! `tests/src/lib.rs`) names every test of the suite: a test function
//! written in a suite module and left out of the list would never run, on
//! any runtime, and nothing else would say so.

use std::collections::BTreeSet;
use std::path::Path;

/// `(module, test)` for each `pub async fn <test><R: TestRuntime>()` in
/// the module's file: the suite's tests take no argument (helpers do).
fn written(module: &str) -> BTreeSet<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/{module}.rs"));
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("pub async fn ")?;
            let (name, signature) = rest.split_once('<')?;
            signature
                .starts_with("R: TestRuntime>()")
                .then(|| (module.to_string(), name.to_string()))
        })
        .collect()
}

/// `(module, test)` for each name in the macro's list, and the modules.
fn listed() -> (BTreeSet<(String, String)>, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let start = source
        .find("macro_rules! conformance_suite")
        .expect("the conformance_suite! macro");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("the end of the macro")];
    let (mut tests, mut modules) = (BTreeSet::new(), Vec::new());
    let mut module: Option<String> = None;
    for line in body.lines().map(str::trim) {
        if let Some(name) = line
            .strip_suffix(" {")
            .filter(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            modules.push(name.to_string());
            module = Some(name.to_string());
        } else if line == "}" {
            module = None;
        } else if let (Some(module), Some(test)) = (&module, line.strip_suffix(',')) {
            tests.insert((module.clone(), test.to_string()));
        }
    }
    (tests, modules)
}

#[test]
fn every_suite_test_is_in_the_conformance_list() {
    let (listed, modules) = listed();
    assert!(modules.len() >= 7, "the suite's modules: {modules:?}");
    let written: BTreeSet<_> = modules.iter().flat_map(|m| written(m)).collect();
    let missing: Vec<_> = written.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "written but not in conformance_suite! (they run on no runtime): {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "listed but not written as `pub async fn <name><R: TestRuntime>()`: {unknown:?}"
    );
    assert!(written.len() >= 68, "{} tests found", written.len());
}
