//! The conformance suite on tokio (a multi-thread runtime per test).

use tbone_dispatch_tests::Tokio;

tbone_dispatch_tests::conformance_suite!(Tokio);
