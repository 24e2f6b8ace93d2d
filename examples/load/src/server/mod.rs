//! The server process (the hidden `--serve KIND` mode): binds
//! 127.0.0.1:0, prints `ADDR <addr>`, then serves until `QUIT` or the end
//! of its input. In fan-out mode it publishes when it reads
//! `START <seconds>`, then prints `DONE <count>`. With `--alloc-stats`
//! it answers `ALLOCS` with its live allocations by size.

mod bare;
mod library;
mod publisher;

use std::io::{BufRead, Write};
use std::net::SocketAddr;

use crate::args::{Args, Kind, Mode, Runtime};
use crate::BoxError;
use publisher::Publisher;

/// Where the server thread reports the address it bound (or why it could
/// not).
type AddrTx = std::sync::mpsc::Sender<Result<SocketAddr, String>>;

/// What a server kind needs to know of the command line.
struct Setup {
    mode: Mode,
    /// The fan-out publisher; `None` in rtt mode.
    publisher: Option<Publisher>,
    threads: Option<usize>,
    /// `Some(None)`: no limit; `None`: the library's default.
    socket_rate_limit: Option<Option<u32>>,
    /// The bare echo servers' read buffer, in bytes.
    bare_read_buffer: usize,
}

pub(crate) fn serve_main(kind: Kind, args: &Args) -> Result<(), BoxError> {
    if args.alloc_stats {
        crate::allocs::enable();
    }
    let (start_tx, start_rx) = futures::channel::oneshot::channel::<f64>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let setup = Setup {
        mode: args.mode,
        publisher: (args.mode == Mode::Fanout).then(|| Publisher {
            rate: args.rate,
            payload: args.payload,
            start: start_rx,
        }),
        threads: args.server_threads,
        socket_rate_limit: args.socket_rate_limit,
        bare_read_buffer: args.bare_read_buffer,
    };
    std::thread::Builder::new()
        .name(format!("{}-server", kind.name(args.mode)))
        .spawn(move || {
            let result = match (kind.bare, kind.runtime) {
                (false, runtime) => library::serve(runtime, setup, &addr_tx),
                (true, Runtime::Tokio) if setup.mode == Mode::Fanout => {
                    bare::serve_broadcast(setup, &addr_tx)
                }
                (true, runtime) => bare::serve_echo(runtime, &setup, &addr_tx),
            };
            if let Err(e) = result {
                let _ = addr_tx.send(Err(e.to_string()));
                eprintln!("tbone-load server: {e}");
                std::process::exit(1);
            }
        })?;
    let addr = addr_rx.recv()??;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ADDR {addr}")?;
        out.flush()?;
    }
    let mut start_tx = Some(start_tx);
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if let Some(secs) = line.strip_prefix("START ") {
            let secs: f64 = secs.trim().parse()?;
            if let Some(tx) = start_tx.take() {
                let _ = tx.send(secs);
            }
        } else if line.trim() == "ALLOCS" {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ALLOCS {}", crate::allocs::snapshot_line())?;
            out.flush()?;
        } else if line.trim() == "QUIT" {
            break;
        }
    }
    std::process::exit(0);
}

fn tokio_runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// The listener's connections as a stream.
macro_rules! incoming {
    ($listener:expr) => {
        Box::pin(futures::stream::unfold($listener, |listener| async move {
            let next = listener.accept().await.map(|(tcp, _)| tcp);
            Some((next, listener))
        }))
    };
}
use incoming;
