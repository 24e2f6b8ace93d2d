//! The client side: start the server process, connect the clients on a
//! tokio runtime, run one mode, report.

mod fanout;
mod rtt;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::WebSocketStream;

use crate::allocs::Snapshot;
use crate::args::{Args, Kind, Mode};
use crate::child::ServerProcess;
use crate::process::{check_open_files, vm_rss_kib, CpuSample};
use crate::BoxError;

/// One client's websocket.
type Socket = WebSocketStream<TokioAdapter<tokio::net::TcpStream>>;

/// Runs one measurement of server `kind`: starts its process, drives the
/// mode's clients, prints the report, stops the server.
pub(crate) fn drive(kind: Kind, args: &Args) -> Result<(), BoxError> {
    check_open_files(args.clients)?;
    let (mut server, addr) = ServerProcess::start(kind, args)?;
    let result = match args.mode {
        Mode::Fanout => fanout::run(kind, args, &mut server, addr),
        Mode::Rtt => rtt::run(kind, args, &mut server, addr),
    };
    server.stop();
    result
}

/// The tokio runtime the clients run on.
fn client_runtime(args: &Args) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()
}

/// Opens one websocket to `addr` (at most `connect`'s permits at a time).
async fn connect(addr: SocketAddr, connect: &tokio::sync::Semaphore) -> Result<Socket, String> {
    let _permit = connect.acquire().await;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match async_tungstenite::tokio::client_async(format!("ws://{addr}/"), tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) => Err(format!("handshake: {e}")),
    }
}

/// What a client needs to open its websocket: where, the permits that
/// bound how many connect at a time, and where to say whether it did.
struct Dial {
    addr: SocketAddr,
    permits: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
}

impl Dial {
    /// Opens the websocket ([`connect`]) and says whether it did.
    async fn open(self) -> Option<Socket> {
        match connect(self.addr, &self.permits).await {
            Ok(ws) => {
                let _ = self.ready.send(Ok(()));
                Some(ws)
            }
            Err(e) => {
                let _ = self.ready.send(Err(e));
                None
            }
        }
    }
}

/// A run's clients: their runtime and their tasks.
struct Clients<T> {
    rt: tokio::runtime::Runtime,
    handles: Vec<tokio::task::JoinHandle<T>>,
}

impl<T> Clients<T> {
    /// Waits for every client's task to end (once they were told to stop)
    /// and shuts the client runtime down: what each task returned, or how
    /// it failed.
    fn join(self) -> Vec<Result<T, tokio::task::JoinError>> {
        let ends = self.rt.block_on(async {
            let mut ends = Vec::with_capacity(self.handles.len());
            for h in self.handles {
                ends.push(h.await);
            }
            ends
        });
        self.rt.shutdown_timeout(Duration::from_secs(1));
        ends
    }
}

/// How a run's clients connected, and the server's memory before they
/// connected and once they sat idle.
struct Connected {
    connected: usize,
    connect_secs: f64,
    rss_before: u64,
    rss_idle: u64,
    allocs_before: Option<Snapshot>,
    allocs_idle: Option<Snapshot>,
}

/// The first two phases of every mode: lets the server settle and measures
/// it; spawns `args.clients` clients made by `client`, each given the
/// [`Dial`] to `addr` it opens its websocket with, on the client runtime,
/// and waits until each has connected or failed; waits for the server to
/// subscribe them all and measures it again, idle. Returns the clients,
/// running, and how that went.
fn connect_and_settle<F, Fut, T>(
    args: &Args,
    server: &mut ServerProcess,
    addr: SocketAddr,
    client: F,
) -> Result<(Clients<T>, Connected), BoxError>
where
    F: Fn(Dial) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let n = args.clients;
    let pid = server.pid();
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = vm_rss_kib(pid).unwrap_or(0);
    let allocs_before = args.alloc_stats.then(|| server.allocs()).transpose()?;
    let rt = client_runtime(args)?;

    // Phase 1: connect everyone.
    let connect_start = Instant::now();
    let (handles, connected, failures) = rt.block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
        let (ready, mut readies) = tokio::sync::mpsc::unbounded_channel();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(client(Dial {
                    addr,
                    permits: permits.clone(),
                    ready: ready.clone(),
                }))
            })
            .collect();
        drop(ready);
        let (mut connected, mut failures) = (0usize, Vec::new());
        while let Some(r) = readies.recv().await {
            match r {
                Ok(()) => connected += 1,
                Err(e) => failures.push(e),
            }
        }
        (handles, connected, failures)
    });
    let connect_secs = connect_start.elapsed().as_secs_f64();
    report_failures(&failures, n);

    // Phase 2: let the server subscribe everyone, measure idle memory.
    std::thread::sleep(Duration::from_millis(500 + n as u64 / 10));
    let rss_idle = vm_rss_kib(pid).unwrap_or(0);
    let allocs_idle = args.alloc_stats.then(|| server.allocs()).transpose()?;
    let connection = Connected {
        connected,
        connect_secs,
        rss_before,
        rss_idle,
        allocs_before,
        allocs_idle,
    };
    Ok((Clients { rt, handles }, connection))
}

impl Connected {
    /// The report's `clients` line.
    fn print_clients(&self, args: &Args) {
        println!(
            "clients           {}/{} connected in {:.2} s ({} client worker thread(s))",
            self.connected, args.clients, self.connect_secs, args.client_threads
        );
    }

    /// Server RSS growth per connected client from before they connected
    /// to `rss_kib`, in KiB.
    fn kib_per_conn(&self, rss_kib: u64) -> f64 {
        if self.connected > 0 {
            rss_kib.saturating_sub(self.rss_before) as f64 / self.connected as f64
        } else {
            0.0
        }
    }

    /// The report's `server RSS KiB` line: before, idle, `rss_end`, then
    /// what the mode says per connection.
    fn print_rss(&self, rss_end: u64, per_conn: &str) {
        println!(
            "server RSS KiB    before {}  idle {}  end {rss_end}  => {per_conn}",
            self.rss_before, self.rss_idle
        );
    }

    /// The same as the `RESULT` line's fields.
    fn rss_fields(&self, rss_end: u64) -> String {
        format!(
            "rss_before_kib={} rss_idle_kib={} rss_end_kib={rss_end}",
            self.rss_before, self.rss_idle
        )
    }
}

/// The CPU time both processes used over a measured window.
struct CpuUse {
    client: f64,
    server: f64,
    /// The window's wall time.
    secs: f64,
}

impl CpuUse {
    /// From `cpu0`, a sample of this process and server `pid`, to now,
    /// over `secs` of wall time.
    fn since(cpu0: CpuSample, pid: u32, secs: f64) -> CpuUse {
        let (client, server) = CpuSample::take(pid).since(cpu0);
        CpuUse {
            client,
            server,
            secs,
        }
    }

    /// The report's `CPU (cores)` line.
    fn print(&self) {
        let (client, server, secs) = (self.client, self.server, self.secs);
        println!(
            "CPU (cores)       client {:.2} ({client:.2} s)  server {:.2} ({server:.2} s)  over {secs:.2} s wall",
            client / secs,
            server / secs
        );
    }

    /// The `RESULT` line's last fields: the cores both processes used, and
    /// their threads.
    fn result_fields(&self, args: &Args) -> String {
        format!(
            "client_cpu={:.2} server_cpu={:.2} client_threads={} server_threads={}",
            self.client / self.secs,
            self.server / self.secs,
            args.client_threads,
            server_threads(args)
        )
    }
}

/// Reports connection failures on stderr.
fn report_failures(failures: &[String], n: usize) {
    if let Some(first) = failures.first() {
        eprintln!(
            "tbone-load: {} of {n} clients failed to connect (first: {first})",
            failures.len()
        );
    }
}

/// The number after `field` (`"<name>":`) in `text`, without a full JSON
/// parse.
fn number_field(text: &str, field: &str) -> Option<u64> {
    let at = text.find(field)? + field.len();
    let digits = text[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// `--server-threads` as reported: a number or `default`.
fn server_threads(args: &Args) -> String {
    args.server_threads
        .map_or_else(|| "default".to_owned(), |t| t.to_string())
}
