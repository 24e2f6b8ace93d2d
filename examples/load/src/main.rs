//! `tbone-load`: a websocket fan-out load tool.
//!
//! Starts a broadcast server in a child process (this same binary,
//! re-executed with the hidden `--serve <kind>` mode), connects N websocket
//! clients to it, has the server publish events at a fixed rate, and reports
//! delivery counts, delivery latency percentiles, server memory per
//! connection and the CPU time of both processes. Run with `--help`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::{Message, Utf8Bytes};
use futures::StreamExt as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const HELP: &str = "\
tbone-load: websocket fan-out load tool for tbone-dispatch

USAGE:
    tbone-load --server KIND [--clients N] [--rate R] [--payload BYTES] [--seconds S]
               [--client-threads T] [--server-threads T] [--drain S]
               [--connect-concurrency C]

OPTIONS:
    --server KIND           tokio | async-std | smol | bare   (required)
                            tokio/async-std/smol: tbone-dispatch's MemoryChannel +
                            <runtime>::websocket::serve, subscribed to event \"load\".
                            bare: a baseline broadcast server on async-tungstenite +
                            tokio without tbone-dispatch (tokio::sync::broadcast of
                            pre-encoded text frames, one task per connection).
    --clients N             websocket clients to connect before publishing (default 100)
    --rate R                events published per second (default 100)
    --payload BYTES         length of the \"pad\" string in each event (default 256)
    --seconds S             how long to publish (default 5)
    --client-threads T      tokio worker threads for the clients (default 1)
    --server-threads T      server executor threads (default: the runtime's own
                            default: tokio/bare = CPU count, async-std = CPU
                            count, smol = 1 executor thread + the accept loop's
                            block_on thread). Set via worker_threads for
                            tokio/bare, ASYNC_STD_THREAD_COUNT for async-std,
                            SMOL_THREADS for smol.
    --drain S               max seconds to wait for outstanding deliveries after
                            the last publish (default 5)
    --connect-concurrency C connections opened concurrently (default 64)
    -h, --help              this text

WHAT IT DOES:
    The server runs in a child process (this binary re-executed with the hidden
    `--serve KIND` mode) on 127.0.0.1:0, so its RSS (/proc/<pid>/status VmRSS)
    and CPU (/proc/<pid>/stat) are measured apart from the clients'. All N
    clients connect first; then the server publishes `--rate` events/s for
    `--seconds`, each event's data being
        {\"seq\": n, \"t\": <wall clock ns at publish>, \"pad\": \"xxx...\"}
    Each client records latency = (its wall clock at receipt) - t into a
    log-bucketed histogram (~3% resolution). Both processes share the
    machine's clock.

OUTPUT:
    A human-readable report, then one machine-readable line starting `RESULT `
    with key=value pairs (server, clients, rate, payload, seconds, published,
    expected, received, deliveries_per_s, p50_ms, p95_ms, p99_ms, max_ms,
    rss_before_kib, rss_idle_kib, rss_end_kib, kib_per_conn, client_cpu,
    server_cpu). client_cpu/server_cpu are CPU seconds per wall second during
    the publish+drain window (1.0 = one core busy): a client_cpu near
    --client-threads means the clients, not the server, were the bottleneck.

LIMITS:
    Each client uses one file descriptor here and one in the server process;
    if N exceeds the open-files limit (ulimit -n), raise it in the shell
    first, e.g. `ulimit -n 65536`.
";

// ---------------------------------------------------------------- arguments

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tokio,
    AsyncStd,
    Smol,
    Bare,
}

impl Kind {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "tokio" => Ok(Kind::Tokio),
            "async-std" => Ok(Kind::AsyncStd),
            "smol" => Ok(Kind::Smol),
            "bare" => Ok(Kind::Bare),
            other => Err(format!(
                "unknown server {other:?}; use tokio, async-std, smol or bare"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio",
            Kind::AsyncStd => "async-std",
            Kind::Smol => "smol",
            Kind::Bare => "bare",
        }
    }
}

struct Args {
    server: Option<Kind>,
    serve: Option<Kind>,
    clients: usize,
    rate: f64,
    payload: usize,
    seconds: f64,
    client_threads: usize,
    server_threads: Option<usize>,
    drain: f64,
    connect_concurrency: usize,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        server: None,
        serve: None,
        clients: 100,
        rate: 100.0,
        payload: 256,
        seconds: 5.0,
        client_threads: 1,
        server_threads: None,
        drain: 5.0,
        connect_concurrency: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it
            .next()
            .ok_or(format!("{flag} needs a value (see --help)"))?;
        fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{flag}: {e}"))
        }
        match flag.as_str() {
            "--server" => args.server = Some(Kind::parse(&value)?),
            "--serve" => args.serve = Some(Kind::parse(&value)?),
            "--clients" => args.clients = num(&flag, &value)?,
            "--rate" => args.rate = num(&flag, &value)?,
            "--payload" => args.payload = num(&flag, &value)?,
            "--seconds" => args.seconds = num(&flag, &value)?,
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
    args.client_threads = args.client_threads.max(1);
    args.connect_concurrency = args.connect_concurrency.max(1);
    Ok(Some(args))
}

fn main() {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("tbone-load: {e}");
            std::process::exit(2);
        }
    };
    let result = if let Some(kind) = args.serve {
        serve_main(kind, &args)
    } else if let Some(kind) = args.server {
        drive(kind, &args)
    } else {
        Err("--server KIND is required (see --help)".into())
    };
    if let Err(e) = result {
        eprintln!("tbone-load: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------ helpers

/// Wall-clock nanoseconds since the Unix epoch (shared by both processes).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// VmRSS of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in seconds (assumes CLK_TCK = 100, the
/// Linux default).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The soft open-files limit of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

// ------------------------------------------------------------- server side

/// The hidden `--serve KIND` mode: binds 127.0.0.1:0, prints `ADDR <addr>`,
/// waits for `START <seconds>` on stdin, publishes, prints `DONE <count>`,
/// and exits on `QUIT` or end of input.
fn serve_main(kind: Kind, args: &Args) -> Result<(), BoxError> {
    let (start_tx, start_rx) = futures::channel::oneshot::channel::<f64>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let (rate, payload, threads) = (args.rate, args.payload, args.server_threads);
    std::thread::Builder::new()
        .name(format!("{}-server", kind.name()))
        .spawn(move || {
            let publisher = Publisher {
                rate,
                payload,
                start: start_rx,
            };
            let result = match kind {
                Kind::Tokio => serve_tokio(publisher, &addr_tx, threads),
                Kind::AsyncStd => serve_async_std(publisher, &addr_tx),
                Kind::Smol => serve_smol(publisher, &addr_tx),
                Kind::Bare => serve_bare(publisher, &addr_tx, threads),
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
        } else if line.trim() == "QUIT" {
            break;
        }
    }
    std::process::exit(0);
}

struct Publisher {
    rate: f64,
    payload: usize,
    start: futures::channel::oneshot::Receiver<f64>,
}

impl Publisher {
    /// Waits for the start signal, then calls `publish` `rate` times per
    /// second for the requested seconds (on a fixed schedule, not drifting),
    /// then prints `DONE <count>`.
    async fn run<S, SF, P, PF>(self, sleep: S, mut publish: P)
    where
        S: Fn(Duration) -> SF,
        SF: std::future::Future<Output = ()>,
        P: FnMut(serde_json::Value) -> PF,
        PF: std::future::Future<Output = bool>,
    {
        let Ok(seconds) = self.start.await else {
            return;
        };
        let pad = "x".repeat(self.payload);
        let period = 1.0 / self.rate;
        let begin = Instant::now();
        let mut seq = 0u64;
        loop {
            let offset = seq as f64 * period;
            if offset >= seconds {
                break;
            }
            let due = begin + Duration::from_secs_f64(offset);
            let now = Instant::now();
            if due > now {
                sleep(due - now).await;
            }
            let data = serde_json::json!({ "seq": seq, "t": wall_ns(), "pad": pad });
            if !publish(data).await {
                eprintln!("tbone-load server: publish failed");
                break;
            }
            seq += 1;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "DONE {seq}");
        let _ = out.flush();
    }
}

fn tokio_runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

type AddrTx = std::sync::mpsc::Sender<Result<SocketAddr, String>>;

/// The library's server, written once for every runtime: the publisher
/// task, then one task per accepted connection, all through the core's
/// `Runtime` trait. Each runtime only binds, accepts and shakes hands.
async fn serve_library<R, T, F, Fut>(
    runtime: R,
    publisher: Publisher,
    mut connections: std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<T>> + Send>>,
    serve_one: F,
) -> Result<(), BoxError>
where
    R: tbone_dispatch_tokio::Runtime + Default,
    F: Fn(T, Memory<R>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let channel = Memory::<R>::named("load")?;
    channel.kickoff()?;
    let (publishing, timer) = (channel.clone(), runtime.clone());
    runtime.spawn(publisher.run(
        move |d| {
            let timer = timer.clone();
            async move { timer.sleep(d).await }
        },
        move |data| {
            let channel = publishing.clone();
            async move { channel.publish("load", &data).await.is_ok() }
        },
    ))?;
    while let Some(next) = connections.next().await {
        match next {
            Ok(connection) => runtime.spawn(serve_one(connection, channel.clone()))?,
            Err(e) => {
                eprintln!("tbone-load server: accept: {e}");
                runtime.sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(())
}

/// The in-memory channel on runtime `R`.
type Memory<R> = tbone_dispatch_tokio::dispatch::Channel<tbone_dispatch_tokio::MemoryBackend<R>, R>;

/// The listener's connections as a stream.
macro_rules! incoming {
    ($listener:expr) => {
        Box::pin(futures::stream::unfold($listener, |listener| async move {
            let next = listener.accept().await.map(|(tcp, _)| tcp);
            Some((next, listener))
        }))
    };
}

fn serve_tokio(
    publisher: Publisher,
    addr_tx: &AddrTx,
    threads: Option<usize>,
) -> Result<(), BoxError> {
    use tbone_dispatch_tokio::{websocket, SocketOptions, Tokio};
    tokio_runtime(threads)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(Ok(listener.local_addr()?))?;
        serve_library(
            Tokio::default(),
            publisher,
            incoming!(listener),
            |tcp: tokio::net::TcpStream, channel| async move {
                let _ = tcp.set_nodelay(true);
                let options = SocketOptions::new(["load"]);
                let _ = websocket::accept_and_serve(tcp, &channel, options).await;
            },
        )
        .await
    })
}

fn serve_async_std(publisher: Publisher, addr_tx: &AddrTx) -> Result<(), BoxError> {
    use tbone_dispatch_async_std::{websocket, AsyncStd, SocketOptions};
    async_std::task::block_on(async move {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(Ok(listener.local_addr()?))?;
        serve_library(
            AsyncStd,
            publisher,
            incoming!(listener),
            |tcp: async_std::net::TcpStream, channel| async move {
                let _ = tcp.set_nodelay(true);
                let options = SocketOptions::new(["load"]);
                let _ = websocket::accept_and_serve(tcp, &channel, options).await;
            },
        )
        .await
    })
}

fn serve_smol(publisher: Publisher, addr_tx: &AddrTx) -> Result<(), BoxError> {
    use tbone_dispatch_smol::{websocket, Smol, SocketOptions};
    smol::block_on(async move {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(Ok(listener.local_addr()?))?;
        serve_library(
            Smol,
            publisher,
            incoming!(listener),
            |tcp: smol::net::TcpStream, channel| async move {
                let _ = tcp.set_nodelay(true);
                let options = SocketOptions::new(["load"]);
                let _ = websocket::accept_and_serve(tcp, &channel, options).await;
            },
        )
        .await
    })
}

/// The baseline: async-tungstenite + tokio, no tbone-dispatch. Each event is
/// encoded once in TBone's frame format and broadcast as shared bytes.
fn serve_bare(
    publisher: Publisher,
    addr_tx: &AddrTx,
    threads: Option<usize>,
) -> Result<(), BoxError> {
    let rt = tokio_runtime(threads)?;
    rt.block_on(async move {
        let (tx, _) = tokio::sync::broadcast::channel::<Utf8Bytes>(4096);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(Ok(listener.local_addr()?))?;
        let ptx = tx.clone();
        tokio::spawn(publisher.run(tokio::time::sleep, move |data| {
            let frame = serde_json::json!({
                "type": "event",
                "payload": { "name": "load", "data": data },
            })
            .to_string();
            // No receivers is not an error for a broadcast.
            let _ = ptx.send(Utf8Bytes::from(frame));
            async { true }
        }));
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    eprintln!("tbone-load server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(bare_connection(tcp, tx.subscribe()));
        }
    })
}

async fn bare_connection(
    tcp: tokio::net::TcpStream,
    mut rx: tokio::sync::broadcast::Receiver<Utf8Bytes>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let Ok(ws) = async_tungstenite::tokio::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(text) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

// ------------------------------------------------------------- client side

/// Log-bucketed latency histogram in microseconds: exact below 64 µs, then
/// 32 buckets per power of two (~3% resolution).
struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

const SUB_BITS: u32 = 5;

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..64 + 64 * 32).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < 64 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros(); // >= 6
        let sub = (us >> (e - SUB_BITS)) & 31;
        64 + (e as usize - 6) * 32 + sub as usize
    }

    /// The upper bound (µs) of bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < 64 {
            return i as u64;
        }
        let e = (i - 64) / 32 + 6;
        let sub = ((i - 64) % 32) as u64;
        ((32 + sub + 1) << (e - SUB_BITS as usize)) - 1
    }

    fn record(&self, us: u64) {
        let i = Self::index(us).min(self.buckets.len() - 1);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Latency (ms) at quantile `q`, from bucket upper bounds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let max = self.max_us.load(Ordering::Relaxed);
                return Self::upper(i).min(max) as f64 / 1000.0;
            }
        }
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

struct Stats {
    hist: Histogram,
    received: AtomicU64,
    /// Microseconds since `epoch` of the last delivery.
    last_us: AtomicU64,
    epoch: Instant,
}

/// Extracts the `t` field of an event frame without a full JSON parse (the
/// frame's other keys are `type`, `payload`, `name`, `data`, `seq`, `pad`).
fn frame_time(text: &str) -> Option<u64> {
    let at = text.find("\"t\":")? + 4;
    let digits = text[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn client(
    addr: SocketAddr,
    stats: Arc<Stats>,
    connect: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let ws = {
        let _permit = connect.acquire().await;
        let tcp = match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => tcp,
            Err(e) => {
                let _ = ready.send(Err(format!("connect: {e}")));
                return 0;
            }
        };
        let _ = tcp.set_nodelay(true);
        match async_tungstenite::tokio::client_async(format!("ws://{addr}/"), tcp).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                let _ = ready.send(Err(format!("handshake: {e}")));
                return 0;
            }
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut ws = ws;
    let mut count = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(t) = frame_time(text.as_str()) {
                        let latency_us = wall_ns().saturating_sub(t) / 1000;
                        stats.hist.record(latency_us);
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        let since = stats.epoch.elapsed().as_micros() as u64;
                        stats.last_us.fetch_max(since, Ordering::Relaxed);
                        count += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let _ = ws.close(None).await;
    count
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(kind: Kind, args: &Args) -> Result<(Self, SocketAddr), BoxError> {
        let mut command = Command::new(std::env::current_exe()?);
        if let Some(threads) = args.server_threads {
            command
                .args(["--server-threads", &threads.to_string()])
                .env("ASYNC_STD_THREAD_COUNT", threads.to_string())
                .env("SMOL_THREADS", threads.to_string());
        }
        let mut child = command
            .args(["--serve", kind.name()])
            .args(["--rate", &args.rate.to_string()])
            .args(["--payload", &args.payload.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no child stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        let mut server = Server {
            child,
            stdin,
            stdout,
        };
        let line = server.read_line()?;
        let addr = line
            .strip_prefix("ADDR ")
            .ok_or(format!("unexpected server output {line:?}"))?
            .parse()?;
        Ok((server, addr))
    }

    fn read_line(&mut self) -> Result<String, BoxError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("server process exited".into());
        }
        Ok(line.trim().to_owned())
    }

    fn send(&mut self, line: &str) -> Result<(), BoxError> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn stop(mut self) {
        let _ = self.send("QUIT");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drive(kind: Kind, args: &Args) -> Result<(), BoxError> {
    let n = args.clients;
    if let Some(limit) = open_files_limit() {
        if (n as u64).saturating_add(64) > limit {
            return Err(format!(
                "{n} clients need about {} open files per process but `ulimit -n` is {limit}; \
                 raise it first (e.g. `ulimit -n {}`) or use fewer clients",
                n + 64,
                (n + 1024).next_power_of_two()
            )
            .into());
        }
    }

    let (mut server, addr) = Server::start(kind, args)?;
    let pid = server.child.id();
    let result = run_clients(kind, args, &mut server, addr, pid);
    server.stop();
    result
}

fn run_clients(
    kind: Kind,
    args: &Args,
    server: &mut Server,
    addr: SocketAddr,
    pid: u32,
) -> Result<(), BoxError> {
    let n = args.clients;
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = vm_rss_kib(pid).unwrap_or(0);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()?;
    let stats = Arc::new(Stats {
        hist: Histogram::new(),
        received: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Phase 1: connect everyone.
    let connect_start = Instant::now();
    let (handles, connected, failures) = rt.block_on(async {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(client(
                    addr,
                    stats.clone(),
                    semaphore.clone(),
                    ready_tx.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        drop(ready_tx);
        let (mut connected, mut failures) = (0usize, Vec::new());
        while let Some(r) = ready_rx.recv().await {
            match r {
                Ok(()) => connected += 1,
                Err(e) => failures.push(e),
            }
        }
        (handles, connected, failures)
    });
    let connect_secs = connect_start.elapsed().as_secs_f64();
    if let Some(first) = failures.first() {
        eprintln!(
            "tbone-load: {} of {n} clients failed to connect (first: {first})",
            failures.len()
        );
    }

    // Phase 2: let the server subscribe everyone, measure idle memory.
    std::thread::sleep(Duration::from_millis(500 + n as u64 / 10));
    let rss_idle = vm_rss_kib(pid).unwrap_or(0);
    let pid_s = pid.to_string();
    let client_cpu0 = cpu_seconds("self").unwrap_or(0.0);
    let server_cpu0 = cpu_seconds(&pid_s).unwrap_or(0.0);
    let received0 = stats.received.load(Ordering::Relaxed);

    // Phase 3: publish.
    let start = Instant::now();
    let start_us = stats.epoch.elapsed().as_micros() as u64;
    server.send(&format!("START {}", args.seconds))?;
    let line = server.read_line()?;
    let published: u64 = line
        .strip_prefix("DONE ")
        .ok_or(format!("unexpected server output {line:?}"))?
        .parse()?;
    let expected = published * connected as u64 + received0;

    // Phase 4: drain.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while stats.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = start.elapsed().as_secs_f64();
    let client_cpu = cpu_seconds("self").unwrap_or(0.0) - client_cpu0;
    let server_cpu = cpu_seconds(&pid_s).unwrap_or(0.0) - server_cpu0;
    let rss_end = vm_rss_kib(pid).unwrap_or(0);
    let received = stats.received.load(Ordering::Relaxed) - received0;
    let expected = expected - received0;
    let active_secs = (stats
        .last_us
        .load(Ordering::Relaxed)
        .saturating_sub(start_us) as f64
        / 1e6)
        .max(1e-6);

    let _ = stop_tx.send(true);
    let per_client: Vec<u64> = rt.block_on(async {
        let mut counts = Vec::with_capacity(handles.len());
        for h in handles {
            counts.push(h.await.unwrap_or(0));
        }
        counts
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let min_client = per_client.iter().copied().min().unwrap_or(0);
    let max_client = per_client.iter().copied().max().unwrap_or(0);

    let h = &stats.hist;
    let (p50, p95, p99) = (
        h.quantile_ms(0.50),
        h.quantile_ms(0.95),
        h.quantile_ms(0.99),
    );
    let max_ms = h.max_us.load(Ordering::Relaxed) as f64 / 1000.0;
    let deliveries_per_s = received as f64 / active_secs;
    let kib_per_conn = if connected > 0 {
        rss_idle.saturating_sub(rss_before) as f64 / connected as f64
    } else {
        0.0
    };
    let client_cores = client_cpu / wall;
    let server_cores = server_cpu / wall;

    println!(
        "server            {} (pid {pid}, ws://{addr}/)",
        kind.name()
    );
    println!(
        "clients           {connected}/{n} connected in {connect_secs:.2} s ({} client worker thread(s))",
        args.client_threads
    );
    println!(
        "published         {published} events ({} /s for {} s, pad {} B)",
        args.rate, args.seconds, args.payload
    );
    println!(
        "deliveries        {received}/{expected} ({:.3}%), per client min {min_client} max {max_client}",
        if expected > 0 {
            100.0 * received as f64 / expected as f64
        } else {
            100.0
        }
    );
    println!(
        "deliveries/s      {deliveries_per_s:.0} (over {active_secs:.2} s to the last delivery)"
    );
    println!("latency ms        p50 {p50:.3}  p95 {p95:.3}  p99 {p99:.3}  max {max_ms:.3}");
    println!(
        "server RSS KiB    before {rss_before}  idle {rss_idle}  end {rss_end}  => {kib_per_conn:.1} KiB/conn (idle-before)/N"
    );
    println!(
        "CPU (cores)       client {client_cores:.2} ({client_cpu:.2} s)  server {server_cores:.2} ({server_cpu:.2} s)  over {wall:.2} s wall"
    );
    println!(
        "RESULT server={} clients={connected} rate={} payload={} seconds={} published={published} \
         expected={expected} received={received} deliveries_per_s={deliveries_per_s:.0} \
         p50_ms={p50:.3} p95_ms={p95:.3} p99_ms={p99:.3} max_ms={max_ms:.3} \
         rss_before_kib={rss_before} rss_idle_kib={rss_idle} rss_end_kib={rss_end} \
         kib_per_conn={kib_per_conn:.1} client_cpu={client_cores:.2} server_cpu={server_cores:.2} \
         client_threads={} server_threads={}",
        kind.name(),
        args.rate,
        args.payload,
        args.seconds,
        args.client_threads,
        args.server_threads
            .map_or_else(|| "default".to_owned(), |t| t.to_string())
    );
    Ok(())
}
