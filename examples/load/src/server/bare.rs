//! The baselines, without tbone-dispatch: a broadcast server on
//! async-tungstenite + tokio (fan-out), and an echo server on
//! async-tungstenite and each runtime (rtt).

use std::time::Duration;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Message, Utf8Bytes};
use async_tungstenite::WebSocketStream;
use futures::{AsyncRead, AsyncWrite, StreamExt as _};

use super::{tokio_runtime, AddrTx, Setup};
use crate::args::Runtime;
use crate::BoxError;

/// The fan-out baseline: async-tungstenite + tokio. Each event is encoded
/// once in TBone's frame format and broadcast as shared bytes.
pub(super) fn serve_broadcast(setup: Setup, addr_tx: &AddrTx) -> Result<(), BoxError> {
    let publisher = setup
        .publisher
        .ok_or("the fan-out baseline needs a publisher")?;
    let rt = tokio_runtime(setup.threads)?;
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
            tokio::spawn(broadcast_connection(tcp, tx.subscribe()));
        }
    })
}

async fn broadcast_connection(
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

/// The rtt baseline on `runtime`: accept, handshake, send every text
/// message back; one task per connection on the runtime's own executor.
/// The websocket is configured as the library configures its own: the
/// same read buffer (`--bare-read-buffer`, 256 bytes) and 64 KiB message
/// limit.
pub(super) fn serve_echo(
    runtime: Runtime,
    setup: &Setup,
    addr_tx: &AddrTx,
) -> Result<(), BoxError> {
    let config = WebSocketConfig::default()
        .read_buffer_size(setup.bare_read_buffer)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    match runtime {
        Runtime::Tokio => tokio_runtime(setup.threads)?.block_on(echo_tokio(addr_tx, config)),
        Runtime::AsyncStd => async_std::task::block_on(echo_async_std(addr_tx, config)),
        Runtime::Smol => smol::block_on(echo_smol(addr_tx, config)),
    }
}

async fn echo_tokio(addr_tx: &AddrTx, config: WebSocketConfig) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    addr_tx.send(Ok(listener.local_addr()?))?;
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    if let Ok(ws) =
                        async_tungstenite::tokio::accept_async_with_config(tcp, Some(config)).await
                    {
                        echo(ws).await;
                    }
                });
            }
            Err(e) => {
                eprintln!("tbone-load server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo_async_std(addr_tx: &AddrTx, config: WebSocketConfig) -> Result<(), BoxError> {
    let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await?;
    addr_tx.send(Ok(listener.local_addr()?))?;
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                async_std::task::spawn(async move {
                    if let Ok(ws) =
                        async_tungstenite::accept_async_with_config(tcp, Some(config)).await
                    {
                        echo(ws).await;
                    }
                });
            }
            Err(e) => {
                eprintln!("tbone-load server: accept: {e}");
                async_std::task::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo_smol(addr_tx: &AddrTx, config: WebSocketConfig) -> Result<(), BoxError> {
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    addr_tx.send(Ok(listener.local_addr()?))?;
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                smol::spawn(async move {
                    if let Ok(ws) =
                        async_tungstenite::accept_async_with_config(tcp, Some(config)).await
                    {
                        echo(ws).await;
                    }
                })
                .detach();
            }
            Err(e) => {
                eprintln!("tbone-load server: accept: {e}");
                smol::Timer::after(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Sends every text message back, until the client leaves.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => {
                if ws.send(Message::Text(text)).await.is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
