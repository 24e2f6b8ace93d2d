//! A TCP forwarder on 127.0.0.1 that can cut every connection passing
//! through it: the Mongo fault scenario puts it between one MongoDB client
//! and the server, to drop that client's TCP streams while the server keeps
//! running (what a flaky network, a NAT timeout or a load balancer restart
//! does to a long-lived connection).
//!
//! Each accepted connection gets its own task that connects upstream and
//! copies both ways; [`Proxy::cut`] aborts those tasks, which drops both
//! streams: the client sees its connection closed, the server sees its peer
//! gone. The listener stays open, so the client can reconnect at once.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// A running forwarder from a fresh loopback port to `upstream`; stops (and
/// drops every connection) when dropped. Needs a tokio runtime.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    /// The forwarding task of every connection accepted since the last cut
    /// (finished ones are pruned on the next accept).
    live: Mutex<Vec<AbortHandle>>,
    accepted: AtomicU64,
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<AbortHandle>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to
    /// `upstream`. A connection whose upstream cannot be reached (the server
    /// is down) is closed at once, as a refused connection would be.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(error) => {
                        // Out of file descriptors and the like: keep serving.
                        tracing::warn!(%error, "proxy: accept failed");
                        continue;
                    }
                };
                accepting.accepted.fetch_add(1, Ordering::Relaxed);
                let task = tokio::spawn(forward(client, upstream));
                let mut live = accepting.live();
                live.retain(|task| !task.is_finished());
                live.push(task.abort_handle());
            }
        });
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (reconnections included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Drops both streams of every open connection; returns how many were
    /// open.
    pub fn cut(&self) -> usize {
        let cut: Vec<AbortHandle> = self.shared.live().drain(..).collect();
        let open = cut.iter().filter(|task| !task.is_finished()).count();
        for task in cut {
            task.abort();
        }
        tracing::info!(open, "proxy: cut every connection");
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.shared.live().drain(..) {
            task.abort();
        }
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(error) => {
            tracing::debug!(%error, "proxy: upstream unreachable; closing the client's connection");
            return;
        }
    };
    // The driver sends small requests and waits for each answer: Nagle's
    // delay would only slow the scenario down.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // `copy_bidirectional` needs tokio's `io-util`, which the mongodb
    // driver enables in this build.
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(%error, "proxy: connection ended with an error");
    }
}
