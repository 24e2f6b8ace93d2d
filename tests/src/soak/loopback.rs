//! A websocket server and clients on loopback for the load scenarios: the
//! tokio runtime crate's `websocket::accept` and `Accepted::serve` behind an accept
//! loop that only counts how connections ended, so the scenario's own
//! bookkeeping stays constant however many connections come and go.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::WebSocketStream;
use tbone_dispatch::{CloseReason, SocketOptions};
use tbone_dispatch_tokio::websocket::accept;
use tbone_dispatch_tokio::MemoryChannel;

/// Limit on each step of a client (connect, handshake, a read).
pub const STEP: Duration = Duration::from_secs(5);

/// A websocket client over tokio TCP.
pub type Client = WebSocketStream<TokioAdapter<tokio::net::TcpStream>>;

/// How served connections ended, counted.
#[derive(Default, Debug)]
pub struct Served {
    pub accepted: AtomicU64,
    pub ended: AtomicU64,
    /// The client closed (close frame) or went away.
    pub peer_closed: AtomicU64,
    /// Dropped by the overflow policy.
    pub overflow: AtomicU64,
    /// Any other reason (sink errors when the TCP connection drops, ...).
    pub other_reason: AtomicU64,
    pub handshake_failed: AtomicU64,
}

impl Served {
    /// Connections accepted and not yet ended.
    pub fn open(&self) -> u64 {
        self.accepted
            .load(Ordering::SeqCst)
            .saturating_sub(self.ended.load(Ordering::SeqCst))
    }
}

/// A running server; dropping it stops accepting.
pub struct Server {
    pub addr: SocketAddr,
    pub served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `channel` with `options` on a fresh port of 127.0.0.1. With
/// `send_buffer`, the listening socket's SO_SNDBUF (inherited by accepted
/// sockets) is fixed, as a memory-conscious deployment would: otherwise
/// Linux lets a loopback socket buffer megabytes before the library's
/// queue sees any back-pressure.
pub fn start(
    channel: MemoryChannel,
    options: SocketOptions,
    send_buffer: Option<u32>,
) -> io::Result<Server> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    let served = Arc::new(Served::default());
    let task = tokio::spawn({
        let served = served.clone();
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                served.accepted.fetch_add(1, Ordering::SeqCst);
                let (channel, served, options) = (channel.clone(), served.clone(), options.clone());
                tokio::spawn(async move {
                    let counter = match accept(tcp, &channel, options).await {
                        Ok(accepted) => match accepted.serve().await {
                            CloseReason::PeerClosed | CloseReason::Closed => &served.peer_closed,
                            CloseReason::Overflow => &served.overflow,
                            other => {
                                tracing::debug!(?other, "connection ended");
                                &served.other_reason
                            }
                        },
                        Err(_) => &served.handshake_failed,
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    served.ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
    });
    Ok(Server { addr, served, task })
}

/// A websocket client numbered `n`, from a source address spread over
/// 127.0.0.0/8 so that 100 000 short connections do not run out of
/// ephemeral ports while earlier ones sit in TIME_WAIT. With
/// `receive_buffer`, the client's SO_RCVBUF is fixed (a client on a poor
/// link).
pub async fn connect(
    server: SocketAddr,
    n: u64,
    receive_buffer: Option<u32>,
) -> Result<Client, String> {
    let source = Ipv4Addr::new(127, 0, (1 + (n / 250) % 250) as u8, (1 + n % 250) as u8);
    let step = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        if let Some(bytes) = receive_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        }
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| format!("binding {source}: {e}"))?;
        let tcp = socket
            .connect(server)
            .await
            .map_err(|e| format!("connecting from {source}: {e}"))?;
        // tungstenite's default 128 KiB read buffer per client would make
        // the test's own clients dominate the process's memory figures.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (client, _) = async_tungstenite::client_async_with_config(
            format!("ws://{server}/ws"),
            TokioAdapter::new(tcp),
            Some(config),
        )
        .await
        .map_err(|e| format!("handshake: {e}"))?;
        Ok(client)
    };
    tokio::time::timeout(STEP, step)
        .await
        .map_err(|_| "connect and handshake took over 5 s".to_string())?
}

/// Polls `condition` every 5 ms for up to `limit`; whether it came true.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}
