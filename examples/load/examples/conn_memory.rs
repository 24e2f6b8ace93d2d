//! Where an idle subscribed connection's bytes go, step by step, on tokio:
//! `cargo run --release -p tbone-dispatch-load --example conn_memory [N]`.
//!
//! Serves N (default 1000) websocket connections in this process the way
//! `websocket::accept_and_serve` does, one step at a time, on a
//! current-thread runtime, and counts the heap allocations the serving
//! thread makes at each step (the clients run on another thread, whose
//! allocations are not counted): the TCP accept, `Connection::open` (the
//! carrier, its writer task, the subscription), the websocket handshake,
//! `Connection::serve` (the connection's task), and the first polls of
//! both tasks. Each step's live allocations are printed by size, per
//! connection, with the sizes of the futures and types they hold.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tbone_dispatch_load::allocs::{self, Counting, Snapshot, EXACT};
use tbone_dispatch_tokio::dispatch::socket::{Connection, Session};
use tbone_dispatch_tokio::websocket::{self, incoming, outgoing, read_error};
use tbone_dispatch_tokio::{
    Carrier, Channels, ConnectRequest, MemoryChannel, Runtime as _, SocketOptions, Tokio,
};

/// The load tool's counting allocator, counting the serving thread only.
#[global_allocator]
static ALLOCATOR: Counting = Counting::PerThread;

/// What a step left allocated, by size; every size above [`EXACT`] at
/// `EXACT + 1` (printed `>4096`, counted as 4097 B).
type Sizes = BTreeMap<usize, i64>;

/// The counters now, taken uncounted.
fn snapshot() -> Snapshot {
    allocs::uncounted(Snapshot::take)
}

/// Adds what was allocated since `before` to `step`. The snapshots are
/// made and dropped uncounted.
fn account(step: &mut Sizes, before: Snapshot) {
    allocs::uncounted(|| {
        for (size, delta) in Snapshot::take().since(&before) {
            *step.entry(size.min(EXACT + 1)).or_default() += delta;
        }
        drop(before);
    });
}

fn print_step(name: &str, step: &Sizes, n: usize) -> f64 {
    let n = n as f64;
    let bytes: f64 = step.iter().map(|(s, c)| *s as f64 * *c as f64).sum::<f64>() / n;
    let rows: Vec<String> = step
        .iter()
        .rev()
        .filter(|(_, c)| (**c as f64 / n).abs() >= 0.05)
        .map(|(s, c)| {
            let size = if *s > EXACT {
                format!(">{EXACT}")
            } else {
                s.to_string()
            };
            format!("{size} B x {:.2}", *c as f64 / n)
        })
        .collect();
    println!("{name:<34} {bytes:>6.0} B/conn   {}", rows.join(", "));
    bytes
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(1000), |a| a.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;

    // The clients, on their own thread and runtime: connect, then read
    // until told to stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let clients = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..n + 1 {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut stop = stop_rx.clone();
                tasks.push(tokio::spawn(async move {
                    let url = format!("ws://{addr}/");
                    if let Ok((mut ws, _)) = async_tungstenite::tokio::client_async(url, tcp).await
                    {
                        tokio::select! {
                            _ = stop.changed() => {}
                            _ = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                        }
                        let _ = ws.close(None).await;
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
            Ok::<(), String>(())
        })
    });

    let options = SocketOptions::new(["load"]);
    runtime.block_on(async {
        let channel = MemoryChannel::named("load")?;
        channel.kickoff()?;

        // The whole task future of the real server, for its size.
        let (tcp, _) = listener.accept().await?;
        let whole = websocket::accept_and_serve(tcp, &channel, options.clone());
        let whole_size = std::mem::size_of_val(&whole);
        drop(whole);
        let stopped_size = std::mem::size_of_val(&channel.stopped());
        let sleep_size = std::mem::size_of_val(&Tokio::default().sleep(Duration::from_secs(30)));

        let steps = ["TCP accept", "Connection::open", "websocket handshake", "Connection::serve (future, spawned)", "first polls of both tasks"];
        let mut counted: Vec<Sizes> = vec![Sizes::new(); steps.len()];
        let mut serve_size = 0;
        let mut connection_size = 0;
        allocs::count_this_thread(true);
        for _ in 0..n {
            let before = snapshot();
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            account(&mut counted[0], before);

            let before = snapshot();
            let connection =
                Connection::open(&channel, options.clone(), ConnectRequest::new("/")).await?;
            connection_size = std::mem::size_of_val(&connection);
            account(&mut counted[1], before);

            let before = snapshot();
            let socket = websocket::handshake(tcp, options.handshake_limits()).await?;
            account(&mut counted[2], before);

            let before = snapshot();
            let (sink, stream) = socket.split();
            let sink = sink.with(|item| futures::future::ready(Ok::<_, websocket::Error>(outgoing(item))));
            let stream = stream.map(|message| message.map(incoming).map_err(read_error));
            let serving = connection.serve(sink, stream);
            serve_size = std::mem::size_of_val(&serving);
            tokio::spawn(serving);
            account(&mut counted[3], before);

            let before = snapshot();
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            account(&mut counted[4], before);
        }
        allocs::count_this_thread(false);

        println!("{n} idle subscribed connections on tokio (current-thread runtime), heap allocations of the serving thread per connection:");
        let mut total = 0.0;
        for (name, step) in steps.iter().zip(&counted) {
            total += print_step(name, step, n);
        }
        println!("{:<34} {total:>6.0} B/conn (requested sizes; malloc adds 8-16 B to each)", "total");
        println!();
        println!("sizes: accept_and_serve future {whole_size} B (the connection task's future), Connection::serve future {serve_size} B,");
        println!(
            "       Session {} B, Connection<Tokio> {connection_size} B, Carrier {} B, SocketOptions {} B, Channels {} B, ConnectRequest {} B,",
            std::mem::size_of::<Session>(),
            std::mem::size_of::<Carrier>(),
            std::mem::size_of::<SocketOptions>(),
            std::mem::size_of::<Channels<Tokio>>(),
            std::mem::size_of::<ConnectRequest>(),
        );
        println!("       Tokio::sleep future {sleep_size} B, Channel::stopped future {stopped_size} B");
        let _ = stop_tx.send(true);
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    clients
        .join()
        .map_err(|_| "the clients' thread panicked")??;
    Ok(())
}
