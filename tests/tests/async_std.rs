//! The conformance suite on async-std.

use tbone_dispatch_tests::AsyncStd;

tbone_dispatch_tests::conformance_suite!(AsyncStd);
