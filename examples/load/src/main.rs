//! `tbone-load`: a websocket load tool for tbone-dispatch.
//!
//! Starts a server in a child process (this same binary, re-executed with
//! the hidden `--serve <kind>` mode), connects N websocket clients to it,
//! and measures one of two things: fan-out (the server publishes events at
//! a fixed rate; delivery counts and latency percentiles) or round trips
//! (each client sends TBone requests in a closed loop; round-trip
//! percentiles and round trips/s). Both report server memory per
//! connection and the CPU time of both processes. Run with `--help`.
//!
//! Modules: `args` (command line and help), `server` (the child process:
//! the library's servers and the bare baselines), `child` (the parent's
//! handle on that process), `client` (connecting, the two modes, the
//! reports), `histogram` (latency percentiles), `process` (RSS, CPU and
//! limits from /proc); from the library, shared with the `conn_memory`
//! example, `allocs` (the server's live allocations by size, with
//! `--alloc-stats`).

mod args;
mod child;
mod client;
mod histogram;
mod process;
mod server;

use tbone_dispatch_load::allocs;

#[global_allocator]
static ALLOCATOR: allocs::Counting = allocs::Counting::Process;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args = match args::parse_args() {
        Ok(args::Parsed::Run(args)) => args,
        Ok(args::Parsed::Help) => {
            print!("{}", args::help());
            return;
        }
        Err(e) => {
            eprintln!("tbone-load: {e}");
            std::process::exit(2);
        }
    };
    let result = if let Some(kind) = args.serve {
        server::serve_main(kind, &args)
    } else if let Some(kind) = args.server {
        client::drive(kind, &args)
    } else {
        Err("--server KIND is required (see --help)".into())
    };
    if let Err(e) = result {
        eprintln!("tbone-load: {e}");
        std::process::exit(1);
    }
}
