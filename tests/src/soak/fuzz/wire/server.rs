//! The server under test, reporting how it ended each connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use tbone_dispatch::{CloseReason, SocketOptions};
use tbone_dispatch_tokio::{websocket, MemoryChannel};

/// How the server ended one connection.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    Served(CloseReason),
    Handshake(String),
    Panicked,
}

/// A websocket server on 127.0.0.1 for the fuzzed clients: the runtime
/// crate's `accept` and `serve`, one task per connection, reporting how
/// each one ended (a failed handshake included, which the suite's
/// `WsServer` treats as a test failure).
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    reports: futures::lock::Mutex<mpsc::UnboundedReceiver<(SocketAddr, Outcome)>>,
    seen: RefCell<HashMap<SocketAddr, Outcome>>,
    pub(super) accept_loop: tokio::task::JoinHandle<()>,
}

impl Server {
    pub(super) async fn start(
        channel: &MemoryChannel,
        options: SocketOptions,
    ) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (report, reports) = mpsc::unbounded();
        let channel = channel.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(%e, "accept failed");
                        continue;
                    }
                };
                let (channel, options, report) = (channel.clone(), options.clone(), report.clone());
                tokio::spawn(async move {
                    let serve = async {
                        match websocket::accept(tcp, &channel, options).await {
                            Ok(accepted) => Outcome::Served(accepted.serve().await),
                            Err(e) => Outcome::Handshake(e.to_string()),
                        }
                    };
                    let outcome = AssertUnwindSafe(serve)
                        .catch_unwind()
                        .await
                        .unwrap_or(Outcome::Panicked);
                    let _ = report.unbounded_send((peer, outcome));
                });
            }
        });
        Ok(Server {
            addr,
            reports: futures::lock::Mutex::new(reports),
            seen: RefCell::new(HashMap::new()),
            accept_loop,
        })
    }

    /// How the connection from `peer` ended, waiting up to `limit`.
    pub(super) async fn outcome(&self, peer: SocketAddr, limit: Duration) -> Option<Outcome> {
        let wait = async {
            loop {
                if let Some(outcome) = self.seen.borrow_mut().remove(&peer) {
                    return Some(outcome);
                }
                let next = self.reports.lock().await.next().await;
                let (from, outcome) = next?;
                self.seen.borrow_mut().insert(from, outcome);
            }
        };
        tokio::time::timeout(limit, wait).await.ok().flatten()
    }
}
