//! The library's servers, on tokio, async-std and smol: a MemoryChannel
//! and `<runtime>::websocket::accept_and_serve` per connection; in rtt mode
//! the socket's messages go to a `Multiplexer` over one trivial route.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;
use tbone_dispatch_tokio::dispatch::multiplexer::{Multiplexer, Request, Response, Routes};
use tbone_dispatch_tokio::dispatch::{Limits, SocketHandle, SocketOptions};

use super::publisher::Publisher;
use super::{incoming, tokio_runtime, AddrTx, Setup};
use crate::args::{Mode, Runtime};
use crate::BoxError;

/// The in-memory channel on runtime `R`.
type Memory<R> = tbone_dispatch_tokio::dispatch::Channel<tbone_dispatch_tokio::MemoryBackend, R>;

/// The only route of the rtt server: `GET /load/` answers a fixed small
/// JSON payload.
struct LoadRoutes {
    payload: Value,
}

impl Routes for LoadRoutes {
    async fn route(&self, request: Request, _socket: SocketHandle) -> Response {
        match (request.method(), request.path()) {
            ("GET", "/load/") => Response::ok(self.payload.clone()),
            _ => Response::not_found(),
        }
    }
}

/// The rtt mode's options, made once (the multiplexer and its routes are
/// shared by every connection).
static RTT_OPTIONS: OnceLock<SocketOptions> = OnceLock::new();

/// Makes the options of `setup`'s mode.
fn configure(setup: &Setup) {
    if setup.mode == Mode::Fanout {
        return;
    }
    let routes = LoadRoutes {
        payload: serde_json::json!({ "ok": true, "n": 1 }),
    };
    let options = SocketOptions::new(["load"]).on_message(Multiplexer::new(routes));
    let options = match setup.socket_rate_limit {
        None => options,
        Some(limit) => options.limits(Limits::default().max_messages_per_second(limit)),
    };
    let _ = RTT_OPTIONS.set(options);
}

/// The options of one connection: subscribed to `load`; in rtt mode, with
/// the multiplexer (and the rate limit asked for). Called inside each
/// connection's task, so that the task's future does not keep a copy of
/// the options (captured values stay in an `async` block's state for its
/// whole life: 208 bytes per connection).
fn connection_options() -> SocketOptions {
    RTT_OPTIONS
        .get()
        .cloned()
        .unwrap_or_else(|| SocketOptions::new(["load"]))
}

pub(super) fn serve(runtime: Runtime, setup: Setup, addr_tx: &AddrTx) -> Result<(), BoxError> {
    configure(&setup);
    match runtime {
        Runtime::Tokio => serve_tokio(setup, addr_tx),
        Runtime::AsyncStd => serve_async_std(setup, addr_tx),
        Runtime::Smol => serve_smol(setup, addr_tx),
    }
}

/// The library's server, written once for every runtime: the publisher
/// task (fan-out), then one task per accepted connection, all through the
/// core's `Runtime` trait. Each runtime only binds, accepts and shakes
/// hands.
async fn serve_library<R, T, F, Fut>(
    runtime: R,
    publisher: Option<Publisher>,
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
    if let Some(publisher) = publisher {
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
    }
    while let Some(next) = connections.next().await {
        match next {
            Ok(connection) => {
                runtime.spawn(serve_one(connection, channel.clone()))?;
            }
            Err(e) => {
                eprintln!("tbone-load server: accept: {e}");
                runtime.sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(())
}

fn serve_tokio(mut setup: Setup, addr_tx: &AddrTx) -> Result<(), BoxError> {
    use tbone_dispatch_tokio::{websocket, Tokio};
    tokio_runtime(setup.threads)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(Ok(listener.local_addr()?))?;
        serve_library(
            Tokio::default(),
            setup.publisher.take(),
            incoming!(listener),
            |tcp: tokio::net::TcpStream, channel| async move {
                let _ = tcp.set_nodelay(true);
                let options = connection_options();
                let _ = websocket::accept_and_serve(tcp, &channel, options).await;
            },
        )
        .await
    })
}

fn serve_async_std(mut setup: Setup, addr_tx: &AddrTx) -> Result<(), BoxError> {
    use tbone_dispatch_async_std::{websocket, AsyncStd};
    async_std::task::block_on(async move {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(Ok(listener.local_addr()?))?;
        serve_library(
            AsyncStd,
            setup.publisher.take(),
            incoming!(listener),
            |tcp: async_std::net::TcpStream, channel| async move {
                let _ = tcp.set_nodelay(true);
                let options = connection_options();
                let _ = websocket::accept_and_serve(tcp, &channel, options).await;
            },
        )
        .await
    })
}

fn serve_smol(mut setup: Setup, addr_tx: &AddrTx) -> Result<(), BoxError> {
    use tbone_dispatch_smol::{websocket, Smol};
    smol::block_on(async move {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(Ok(listener.local_addr()?))?;
        serve_library(
            Smol,
            setup.publisher.take(),
            incoming!(listener),
            |tcp: smol::net::TcpStream, channel| async move {
                let _ = tcp.set_nodelay(true);
                let options = connection_options();
                let _ = websocket::accept_and_serve(tcp, &channel, options).await;
            },
        )
        .await
    })
}
