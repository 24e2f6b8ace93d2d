//! The command line: `--help`, the server kinds, the modes, and parsing.

const HELP: &str = "\
tbone-load: websocket load tool for tbone-dispatch

USAGE:
    tbone-load --server KIND [--mode fanout|rtt] [--clients N] [--seconds S]
               [--rate R] [--payload BYTES] [--drain S]                (fanout)
               [--warmup S] [--socket-rate-limit N|none] [--bare-read-buffer B] (rtt)
               [--client-threads T] [--server-threads T] [--connect-concurrency C]
               [--alloc-stats]

MODES:
    fanout (default)        the server publishes events at a fixed rate to every
                            client; measures delivery latency and deliveries/s.
    rtt                     each client sends TBone request messages in a closed
                            loop (one in flight per client); measures the round
                            trip of each and round trips/s.

OPTIONS:
    --server KIND           tokio | async-std | smol | bare | bare-tokio |
                            bare-async-std | bare-smol   (required)
                            tokio/async-std/smol: tbone-dispatch's MemoryChannel +
                            <runtime>::websocket::accept_and_serve, subscribed to
                            event \"load\"; in rtt mode with a Multiplexer over
                            one route (GET /load/) answering a fixed small JSON
                            payload.
                            bare (fanout): a baseline broadcast server on
                            async-tungstenite + tokio without tbone-dispatch
                            (tokio::sync::broadcast of pre-encoded text frames,
                            one task per connection).
                            bare-<runtime> (rtt): a baseline echo server on
                            async-tungstenite and that runtime without
                            tbone-dispatch (accept, handshake, send every text
                            message back); `bare` means bare-tokio in rtt mode.
    --mode M                fanout | rtt (default fanout)
    --clients N             websocket clients to connect first (default 100)
    --seconds S             how long to publish (fanout) or to measure round
                            trips (rtt) (default 5)
    --rate R                fanout: events published per second (default 100)
    --payload BYTES         fanout: length of the \"pad\" string in each event
                            (default 256)
    --drain S               fanout: max seconds to wait for outstanding
                            deliveries after the last publish (default 5)
    --warmup S              rtt: seconds of round trips before measuring
                            (default 1)
    --socket-rate-limit L   rtt, library servers: the per-connection limit on
                            client messages per second (`Limits::
                            max_messages_per_second`), a number or `none`
                            (default: the library's default, 1000)
    --bare-read-buffer B    rtt, bare servers: tungstenite's read buffer, in bytes
                            (default 256, what the library configures;
                            tungstenite's own default is 131072, and it zeroes
                            that much before every read)
    --client-threads T      tokio worker threads for the clients (default 1)
    --server-threads T      server executor threads (default: the runtime's own
                            default: tokio = CPU count, async-std = CPU
                            count, smol = 1 executor thread + the accept loop's
                            block_on thread). Set via worker_threads for
                            tokio, ASYNC_STD_THREAD_COUNT for async-std,
                            SMOL_THREADS for smol.
    --connect-concurrency C connections opened concurrently (default 64)
    --alloc-stats           count the server's live heap allocations by size and
                            print, per connection, what the idle connections
                            (and in rtt mode, the load) added: where the
                            KiB/conn go
    -h, --help              this text

WHAT IT DOES:
    The server runs in a child process (this binary re-executed with the hidden
    `--serve KIND` mode) on 127.0.0.1:0, so its RSS (/proc/<pid>/status VmRSS)
    and CPU (/proc/<pid>/stat) are measured apart from the clients'. All N
    clients connect first.
    fanout: then the server publishes `--rate` events/s for `--seconds`, each
    event's data being
        {\"seq\": n, \"t\": <wall clock ns at publish>, \"pad\": \"xxx...\"}
    Each client records latency = (its wall clock at receipt) - t into a
    log-bucketed histogram (~3% resolution). Both processes share the
    machine's clock.
    rtt: then every client sends
        {\"type\":\"request\",\"key\":<n>,\"method\":\"GET\",\"href\":\"/load/\"}
    waits for the answer (a response with that key, or the echo of the
    request), and sends the next; after `--warmup` seconds, each round trip
    is recorded into the same kind of histogram for `--seconds`.

OUTPUT:
    A human-readable report, then one machine-readable line starting `RESULT `
    with key=value pairs.
    fanout: server, clients, rate, payload, seconds, published, expected,
    received, deliveries_per_s, p50_ms, p95_ms, p99_ms, max_ms,
    rss_before_kib, rss_idle_kib, rss_end_kib, kib_per_conn, client_cpu,
    server_cpu, client_threads, server_threads.
    rtt: mode=rtt, server, clients, seconds, round_trips, msgs_per_s, p50_ms,
    p95_ms, p99_ms, max_ms, min_client, max_client, errors, rss_before_kib,
    rss_idle_kib, rss_end_kib, kib_per_conn, kib_per_conn_end, client_cpu,
    server_cpu, client_threads, server_threads.
    client_cpu/server_cpu are CPU seconds per wall second during the measured
    window (1.0 = one core busy): a client_cpu near --client-threads means
    the clients, not the server, were the bottleneck.

LIMITS:
    Each client uses one file descriptor here and one in the server process;
    if N exceeds the open-files limit (ulimit -n), raise it in the shell
    first, e.g. `ulimit -n 65536`.
";

/// The executor a server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Runtime {
    Tokio,
    AsyncStd,
    Smol,
}

impl Runtime {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::AsyncStd => "async-std",
            Runtime::Smol => "smol",
        }
    }
}

/// A server kind: the library, or the bare async-tungstenite baseline, on
/// one runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kind {
    pub(crate) runtime: Runtime,
    pub(crate) bare: bool,
}

impl Kind {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let (bare, runtime) = match s {
            "bare" => (true, "tokio"),
            other => match other.strip_prefix("bare-") {
                Some(runtime) => (true, runtime),
                None => (false, other),
            },
        };
        let runtime = match runtime {
            "tokio" => Runtime::Tokio,
            "async-std" => Runtime::AsyncStd,
            "smol" => Runtime::Smol,
            _ => {
                return Err(format!(
                    "unknown server {s:?}; use tokio, async-std, smol, bare, bare-tokio, \
                     bare-async-std or bare-smol"
                ))
            }
        };
        Ok(Kind { runtime, bare })
    }

    /// The name this kind is reported under in `mode`: the fan-out
    /// baseline is `bare`, the echo baselines `bare-<runtime>`.
    pub(crate) fn name(self, mode: Mode) -> &'static str {
        match (self.bare, mode, self.runtime) {
            (false, _, runtime) => runtime.name(),
            (true, Mode::Fanout, _) => "bare",
            (true, Mode::Rtt, Runtime::Tokio) => "bare-tokio",
            (true, Mode::Rtt, Runtime::AsyncStd) => "bare-async-std",
            (true, Mode::Rtt, Runtime::Smol) => "bare-smol",
        }
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Events published by the server to every client.
    Fanout,
    /// Request -> response round trips, one in flight per client.
    Rtt,
}

impl Mode {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "fanout" => Ok(Mode::Fanout),
            "rtt" => Ok(Mode::Rtt),
            other => Err(format!("unknown mode {other:?}; use fanout or rtt")),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Rtt => "rtt",
        }
    }
}

pub(crate) struct Args {
    pub(crate) mode: Mode,
    pub(crate) server: Option<Kind>,
    pub(crate) serve: Option<Kind>,
    pub(crate) clients: usize,
    pub(crate) rate: f64,
    pub(crate) payload: usize,
    pub(crate) seconds: f64,
    pub(crate) warmup: f64,
    /// `Some(None)`: no limit; `None`: the library's default.
    pub(crate) socket_rate_limit: Option<Option<u32>>,
    pub(crate) bare_read_buffer: usize,
    pub(crate) client_threads: usize,
    pub(crate) server_threads: Option<usize>,
    pub(crate) drain: f64,
    pub(crate) connect_concurrency: usize,
    pub(crate) alloc_stats: bool,
}

/// What the command line asks for.
pub(crate) enum Parsed {
    Run(Args),
    Help,
}

pub(crate) fn help() -> &'static str {
    HELP
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{flag}: {e}"))
}

pub(crate) fn parse_args() -> Result<Parsed, String> {
    parse(std::env::args().skip(1))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut args = Args {
        mode: Mode::Fanout,
        server: None,
        serve: None,
        clients: 100,
        rate: 100.0,
        payload: 256,
        seconds: 5.0,
        warmup: 1.0,
        socket_rate_limit: None,
        bare_read_buffer: 256,
        client_threads: 1,
        server_threads: None,
        drain: 5.0,
        connect_concurrency: 64,
        alloc_stats: false,
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Parsed::Help);
        }
        if flag == "--alloc-stats" {
            args.alloc_stats = true;
            continue;
        }
        let value = it
            .next()
            .ok_or(format!("{flag} needs a value (see --help)"))?;
        match flag.as_str() {
            "--mode" => args.mode = Mode::parse(&value)?,
            "--server" => args.server = Some(Kind::parse(&value)?),
            "--serve" => args.serve = Some(Kind::parse(&value)?),
            "--clients" => args.clients = num(&flag, &value)?,
            "--rate" => args.rate = num(&flag, &value)?,
            "--payload" => args.payload = num(&flag, &value)?,
            "--seconds" => args.seconds = num(&flag, &value)?,
            "--warmup" => args.warmup = num(&flag, &value)?,
            "--socket-rate-limit" => {
                args.socket_rate_limit = Some(match value.as_str() {
                    "none" => None,
                    n => Some(num(&flag, n)?),
                })
            }
            "--bare-read-buffer" => args.bare_read_buffer = num(&flag, &value)?,
            "--client-threads" => args.client_threads = num(&flag, &value)?,
            "--server-threads" => args.server_threads = Some(num::<usize>(&flag, &value)?.max(1)),
            "--drain" => args.drain = num(&flag, &value)?,
            "--connect-concurrency" => args.connect_concurrency = num(&flag, &value)?,
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err("--rate must be > 0".into());
    }
    if !(args.seconds >= 0.0 && args.seconds.is_finite()) {
        return Err("--seconds must be >= 0".into());
    }
    if !(args.drain >= 0.0 && args.drain.is_finite()) {
        return Err("--drain must be >= 0".into());
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        return Err("--warmup must be >= 0".into());
    }
    for kind in [args.server, args.serve].into_iter().flatten() {
        if args.mode == Mode::Fanout && kind.bare && kind.runtime != Runtime::Tokio {
            return Err(
                "the fan-out baseline runs on tokio only: use --server bare (or --mode rtt)".into(),
            );
        }
    }
    args.client_threads = args.client_threads.max(1);
    args.connect_concurrency = args.connect_concurrency.max(1);
    Ok(Parsed::Run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Args, String> {
        match parse(line.split_whitespace().map(String::from))? {
            Parsed::Run(args) => Ok(args),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn kinds_and_modes() {
        let args = run("--server bare --clients 7").unwrap();
        assert_eq!(args.mode, Mode::Fanout);
        let kind = args.server.unwrap();
        assert_eq!(kind.name(Mode::Fanout), "bare");
        assert_eq!(kind.name(Mode::Rtt), "bare-tokio");
        let args =
            run("--mode rtt --server bare-smol --alloc-stats --socket-rate-limit none").unwrap();
        assert!(args.alloc_stats);
        assert_eq!(args.server.unwrap().name(Mode::Rtt), "bare-smol");
        assert_eq!(args.socket_rate_limit, Some(None));
        assert!(run("--server bare-smol").is_err());
        assert!(run("--server nope").is_err());
        assert_eq!(
            run("--mode rtt --server async-std").unwrap().server,
            Some(Kind {
                runtime: Runtime::AsyncStd,
                bare: false
            })
        );
    }
}
