//! The client side: start the server process, connect the clients on a
//! tokio runtime, run one mode, report.

mod fanout;
mod rtt;

use std::net::SocketAddr;
use std::sync::Arc;

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::WebSocketStream;

use crate::args::{Args, Kind, Mode};
use crate::child::ServerProcess;
use crate::process::check_open_files;
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

/// Spawns `n` clients made by `client` (given its index, the connection
/// semaphore and where to report whether it connected), and waits until
/// each has connected or failed. Returns their handles, how many
/// connected, and the failures.
async fn connect_all<F, Fut, T>(
    n: usize,
    concurrency: usize,
    client: F,
) -> (Vec<tokio::task::JoinHandle<T>>, usize, Vec<String>)
where
    F: Fn(
        usize,
        Arc<tokio::sync::Semaphore>,
        tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    ) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(client(i, semaphore.clone(), ready_tx.clone())))
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

/// Server RSS growth per connected client, in KiB.
fn kib_per_conn(rss_kib: u64, rss_before_kib: u64, connected: usize) -> f64 {
    if connected > 0 {
        rss_kib.saturating_sub(rss_before_kib) as f64 / connected as f64
    } else {
        0.0
    }
}

/// `--server-threads` as reported: a number or `default`.
fn server_threads(args: &Args) -> String {
    args.server_threads
        .map_or_else(|| "default".to_owned(), |t| t.to_string())
}
