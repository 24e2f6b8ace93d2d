//! The conformance suite on smol.

use tbone_dispatch_tests::Smol;

tbone_dispatch_tests::conformance_suite!(Smol);
