//! The channel-stop row's websocket server, as an application writes one
//! with the tokio crate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::oneshot;
use tbone_dispatch::{close_code, CloseReason, SocketOptions};
use tbone_dispatch_tokio::websocket::accept;
use tbone_dispatch_tokio::MemoryChannel;
use tokio::task::JoinHandle;

use super::STEP;
use crate::soak::Row;

/// How `serve` ended one connection, or why it could not run.
type Outcome = Result<CloseReason, String>;

/// A websocket server over a channel, as an application writes one with the
/// tokio crate: an accept loop, and a task per connection running
/// `websocket::accept` and `Accepted::serve`. Keeps each connection's task so that
/// its end (and `serve`'s close reason) can be checked.
pub(super) struct Server {
    pub(super) url: String,
    /// The channel's name, which the close reason of its sockets names.
    channel: String,
    accept_loop: JoinHandle<()>,
    stop_accepting: oneshot::Sender<()>,
    connections: Arc<Mutex<Vec<JoinHandle<Outcome>>>>,
}

impl Server {
    pub(super) async fn start(
        channel: MemoryChannel,
        options: SocketOptions,
    ) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let connections = Arc::new(Mutex::new(Vec::new()));
        let name = channel.name().to_string();
        let (stop_accepting, mut stopped) = oneshot::channel::<()>();
        let accept_loop = tokio::spawn({
            let connections = connections.clone();
            async move {
                loop {
                    let tcp = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => tcp,
                            Err(e) => {
                                tracing::warn!(%e, "accept failed");
                                continue;
                            }
                        },
                        _ = &mut stopped => break,
                    };
                    let (channel, options) = (channel.clone(), options.clone());
                    let task = tokio::spawn(async move {
                        let accepted = accept(tcp, &channel, options)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(accepted.serve().await)
                    });
                    connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(task);
                }
            }
        });
        Ok(Server {
            url: format!("ws://{addr}/ws"),
            channel: name,
            accept_loop,
            stop_accepting,
            connections,
        })
    }

    /// Stops accepting, then waits for every connection's task and checks
    /// that `serve` ended each because the channel stopped.
    pub(super) async fn finish(self, row: &mut Row) {
        let _ = self.stop_accepting.send(());
        let accept_ended = tokio::time::timeout(STEP, self.accept_loop).await;
        row.check(
            matches!(accept_ended, Ok(Ok(()))),
            "the accept loop did not end",
        );
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let expected = CloseReason::Rejected(
            close_code::GOING_AWAY,
            format!("the channel `{}` stopped", self.channel),
        );
        let (mut unfinished, mut other) = (0, Vec::new());
        let deadline = tokio::time::Instant::now() + STEP;
        for task in connections {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(reason))) if reason == expected => {}
                Ok(Ok(outcome)) => other.push(format!("{outcome:?}")),
                Ok(Err(e)) => other.push(format!("the task failed: {e}")),
                Err(_) => unfinished += 1,
            }
        }
        row.check(
            unfinished == 0,
            format!("{unfinished} serve tasks still running {STEP:?} after the shutdown"),
        );
        let count = other.len();
        other.truncate(3);
        row.check(
            count == 0,
            format!(
                "{count} connections ended otherwise than by the channel's stop (1001): {other:?}"
            ),
        );
    }
}
