//! Websocket carriers against real clients over loopback (127.0.0.1): each
//! runtime crate's `websocket::accept` and `Accepted::serve` (or
//! `websocket::handshake` and `websocket::serve`), exercised by
//! async-tungstenite clients and by a raw client that speaks bytes
//! (garbage, invalid frames, silence).
//!
//! The server side is [`TestRuntime::spawn_ws_server`]; it reports how
//! every connection ended (the [`CloseReason`] `serve` returned, or the
//! refusal, handshake error or panic that kept it from being served),
//! keyed by the client's address, so a test can tell one connection's fate
//! from another's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either};
use futures::StreamExt;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, Stream};
use serde::Serialize;
use serde_json::json;
use tbone_dispatch::{
    close_code, Authorizer, CarrierConfig, CloseReason, ConnectRequest, PublishError, Refusal,
    SocketOptions,
};
use tbone_dispatch_tokio::websocket::AcceptError;

use crate::{eventually, unique_name, wait, within, Mem, TestRuntime};

/// A client connection's byte stream, whatever the runtime.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A TCP connection opened with a runtime's own networking.
pub type ClientIo = Box<dyn Io>;

/// A websocket client (async-tungstenite) over a [`ClientIo`].
pub type Client = WebSocketStream<ClientIo>;

/// Why a connection was not served.
#[derive(Debug)]
pub enum NotServed {
    /// Refused before the upgrade: the client was answered with this HTTP
    /// status (origin policy, authorizer, malformed request...).
    Refused(Refusal),
    /// The handshake failed, timed out, or the task panicked.
    Failed(String),
}

impl From<AcceptError> for NotServed {
    fn from(error: AcceptError) -> Self {
        match error {
            AcceptError::Refused(refusal) => NotServed::Refused(refusal),
            other => NotServed::Failed(other.to_string()),
        }
    }
}

/// How one served connection ended: the reason `serve` returned, or why
/// there was none (refusal, handshake failure, panic).
pub type Outcome = Result<CloseReason, NotServed>;

/// A websocket server on 127.0.0.1 (see [`TestRuntime::spawn_ws_server`]).
/// Dropping it stops accepting; connections already served go on.
pub struct WsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    ended: mpsc::UnboundedReceiver<(SocketAddr, Outcome)>,
    seen: Vec<(SocketAddr, Outcome)>,
    _stop: oneshot::Sender<()>,
}

impl WsServer {
    /// How the connection from client address `peer` ended, waiting for it
    /// (within [`crate::WAIT`]). Fails the test if the server failed the
    /// handshake or panicked while serving it.
    pub async fn reason_for<R: TestRuntime>(
        &mut self,
        peer: SocketAddr,
        what: &str,
    ) -> CloseReason {
        let outcome = self.outcome_for::<R>(peer, what).await;
        outcome.unwrap_or_else(|e| {
            panic!(
                "[{}] the server did not serve connection {peer} ({what}): {e:?}",
                R::name()
            )
        })
    }

    /// The refusal the connection from client address `peer` got before
    /// its upgrade, waiting for it (within [`crate::WAIT`]). Fails the test
    /// if it was served, or failed otherwise.
    pub async fn refusal_for<R: TestRuntime>(&mut self, peer: SocketAddr, what: &str) -> Refusal {
        match self.outcome_for::<R>(peer, what).await {
            Err(NotServed::Refused(refusal)) => refusal,
            other => panic!(
                "[{}] connection {peer} should have been refused before the upgrade ({what}), got {other:?}",
                R::name()
            ),
        }
    }

    /// How the connection from client address `peer` ended, whatever it
    /// was, waiting for it (within [`crate::WAIT`]).
    pub async fn outcome_for<R: TestRuntime>(&mut self, peer: SocketAddr, what: &str) -> Outcome {
        wait::<R, _>(what, async {
            loop {
                if let Some(i) = self.seen.iter().position(|(p, _)| *p == peer) {
                    return self.seen.remove(i).1;
                }
                match self.ended.next().await {
                    Some(ended) => self.seen.push(ended),
                    None => panic!("[{}] the websocket accept loop ended", R::name()),
                }
            }
        })
        .await
    }

    /// The client addresses of the connections that ended so far, without
    /// waiting (their reasons stay available to [`WsServer::reason_for`]).
    pub fn ended_so_far(&mut self) -> Vec<SocketAddr> {
        while let Ok(ended) = self.ended.try_recv() {
            self.seen.push(ended);
        }
        self.seen.iter().map(|(p, _)| *p).collect()
    }
}

/// A listener on a fresh port of 127.0.0.1, non-blocking, for a runtime to
/// adopt.
pub fn bind_loopback() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let addr = listener.local_addr().expect("listener address");
    (listener, addr)
}

/// The accept loop shared by every runtime: takes connections from
/// `incoming` until the returned [`WsServer`] is dropped and serves each in
/// its own task with `serve` (handshake + the runtime crate's `serve`),
/// reporting how it ended.
pub fn start_server<R, I, C, H, F>(addr: SocketAddr, incoming: I, serve: H) -> WsServer
where
    R: TestRuntime,
    I: Stream<Item = io::Result<(C, SocketAddr)>> + Send + 'static,
    C: Send + 'static,
    H: Fn(C) -> F + Send + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let (report, ended) = mpsc::unbounded();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let runtime = R::default();
    let accept_loop = {
        let runtime = runtime.clone();
        async move {
            let mut incoming = Box::pin(incoming);
            loop {
                match future::select(incoming.next(), &mut stopped).await {
                    Either::Left((Some(Ok((connection, peer))), _)) => {
                        let report = report.clone();
                        let served = AssertUnwindSafe(serve(connection)).catch_unwind();
                        let task = async move {
                            let outcome = served.await.unwrap_or_else(|_| {
                                Err(NotServed::Failed("serving the socket panicked".to_string()))
                            });
                            let _ = report.unbounded_send((peer, outcome));
                        };
                        if let Err(e) = runtime.spawn(task) {
                            tracing::error!(%e, "cannot spawn a connection task");
                        }
                    }
                    Either::Left((Some(Err(e)), _)) => tracing::warn!(%e, "accept failed"),
                    Either::Left((None, _)) | Either::Right(_) => break,
                }
            }
        }
    };
    runtime
        .spawn(accept_loop)
        .expect("spawning the accept loop");
    WsServer {
        addr,
        ended,
        seen: Vec::new(),
        _stop: stop,
    }
}

/// A websocket client connected to `addr` (async-tungstenite over the
/// runtime's TCP), with the client's own address (the server's `peer`).
pub async fn connect<R: TestRuntime>(addr: SocketAddr) -> (Client, SocketAddr) {
    connect_with::<R>(addr, &[]).await
}

/// [`connect`] with `headers` added to the upgrade request (a cookie, an
/// `Origin`...). Fails the test if the handshake fails.
pub async fn connect_with<R: TestRuntime>(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> (Client, SocketAddr) {
    let (client, local) = try_connect::<R>(addr, headers).await;
    match client {
        Ok(client) => (client, local),
        Err(e) => panic!("[{}] websocket handshake with {addr}: {e}", R::name()),
    }
}

/// A websocket handshake with `headers` added to the upgrade request, its
/// result as the client sees it (a refusal is `Error::Http` with the
/// server's response), and the client's own address.
pub async fn try_connect<R: TestRuntime>(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> (Result<Client, WsError>, SocketAddr) {
    let (io, local) = wait::<R, _>("a TCP connection", R::connect_tcp(addr))
        .await
        .unwrap_or_else(|e| panic!("[{}] connecting to {addr}: {e}", R::name()));
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("a websocket URL");
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        let value = HeaderValue::from_str(value).expect("a header value");
        request.headers_mut().append(name, value);
    }
    let client = wait::<R, _>(
        "the websocket handshake",
        async_tungstenite::client_async(request, io),
    )
    .await
    .map(|(client, _)| client);
    (client, local)
}

/// Asserts that a client with `headers` is refused before the upgrade:
/// its handshake fails with the server's HTTP response, whose status is
/// returned (with the client's address).
pub async fn refused_status<R: TestRuntime>(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> (u16, SocketAddr) {
    let (client, local) = try_connect::<R>(addr, headers).await;
    match client {
        Err(WsError::Http(response)) => (response.status().as_u16(), local),
        Err(other) => panic!(
            "[{}] the handshake with {headers:?} should fail with an HTTP status, got the error {other}",
            R::name()
        ),
        Ok(_) => panic!(
            "[{}] the handshake with {headers:?} should have been refused, it was upgraded",
            R::name()
        ),
    }
}

/// The next message a client receives, pings included, within
/// [`crate::WAIT`]. Fails the test on an error or the end of the
/// connection.
pub async fn next_message<R: TestRuntime>(client: &mut Client, what: &str) -> Message {
    match wait::<R, _>(what, client.next()).await {
        Some(Ok(message)) => message,
        Some(Err(e)) => panic!(
            "[{}] websocket error while waiting for {what}: {e}",
            R::name()
        ),
        None => panic!(
            "[{}] the connection ended while waiting for {what}",
            R::name()
        ),
    }
}

/// The next text message (pings and pongs skipped), within
/// [`crate::WAIT`].
pub async fn next_text<R: TestRuntime>(client: &mut Client, what: &str) -> String {
    wait::<R, _>(what, async {
        loop {
            match next_message::<R>(client, what).await {
                Message::Text(text) => return text.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!(
                    "[{}] expected a text message for {what}, got {other:?}",
                    R::name()
                ),
            }
        }
    })
    .await
}

/// Waits for the close frame the server sends, asserts its code, then for
/// the end of the connection. Returns the close reason text.
pub async fn expect_close<R: TestRuntime>(client: &mut Client, code: u16, what: &str) -> String {
    let frame: Option<CloseFrame> = wait::<R, _>(what, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!(
                    "[{}] expected a close frame with code {code} ({what}), got {other:?}",
                    R::name()
                ),
                Some(Err(e)) => panic!(
                    "[{}] expected a close frame with code {code} ({what}), got the error {e}",
                    R::name()
                ),
                None => panic!(
                    "[{}] expected a close frame with code {code} ({what}), the connection ended without one",
                    R::name()
                ),
            }
        }
    })
    .await;
    let frame =
        frame.unwrap_or_else(|| panic!("[{}] close frame without a code ({what})", R::name()));
    assert_eq!(
        u16::from(frame.code),
        code,
        "[{}] close code ({what}); reason: {}",
        R::name(),
        frame.reason
    );
    expect_end::<R>(client, what).await;
    frame.reason.as_str().to_owned()
}

/// Waits until the connection ends (the stream yields an error or nothing),
/// discarding control messages; fails on any data message.
pub async fn expect_end<R: TestRuntime>(client: &mut Client, what: &str) {
    wait::<R, _>(&format!("the end of the connection ({what})"), async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    panic!("[{}] data after the close frame ({what})", R::name())
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
}

/// A TCP connection to `addr` on which the websocket handshake was done by
/// hand, for sending raw bytes. Returns it with the client's address.
pub async fn raw_connect<R: TestRuntime>(addr: SocketAddr) -> (ClientIo, SocketAddr) {
    let (mut io, local) = wait::<R, _>("a TCP connection", R::connect_tcp(addr))
        .await
        .unwrap_or_else(|e| panic!("[{}] connecting to {addr}: {e}", R::name()));
    // RFC 6455's sample nonce, and the accept key it must produce.
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let response = wait::<R, _>("the raw handshake", async {
        io.write_all(request.as_bytes())
            .await
            .expect("writing the upgrade request");
        io.flush().await.expect("flushing the upgrade request");
        // Byte by byte, so nothing after the response is consumed.
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            let n = io
                .read(&mut byte)
                .await
                .expect("reading the upgrade response");
            assert_eq!(n, 1, "connection closed during the handshake");
            response.push(byte[0]);
        }
        String::from_utf8_lossy(&response).into_owned()
    })
    .await;
    assert!(
        response.starts_with("HTTP/1.1 101"),
        "upgrade refused: {response}"
    );
    assert!(
        response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "wrong Sec-WebSocket-Accept: {response}"
    );
    (io, local)
}

/// One client frame (masked, FIN set) with `opcode` and `payload`, as bytes.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Writes `bytes` on a raw connection and flushes, within [`crate::WAIT`].
pub async fn write_raw<R: TestRuntime>(io: &mut ClientIo, bytes: &[u8]) {
    wait::<R, _>("writing raw bytes", async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    .unwrap_or_else(|e| panic!("[{}] writing raw bytes: {e}", R::name()));
}

/// Opcodes of the frames a raw client reads.
pub mod opcode {
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
}

/// The next server frame on a raw connection: `(opcode, payload)`, or None
/// at the end of the connection (EOF, reset, truncated frame).
pub async fn read_frame(io: &mut ClientIo) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await.ok()?;
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            io.read_exact(&mut n).await.ok()?;
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            io.read_exact(&mut n).await.ok()?;
            usize::try_from(u64::from_be_bytes(n)).ok()?
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0f, payload))
}

/// Every frame a raw connection receives until it ends, within
/// [`crate::WAIT`].
pub async fn read_to_end<R: TestRuntime>(io: &mut ClientIo, what: &str) -> Vec<(u8, Vec<u8>)> {
    wait::<R, _>(what, async {
        let mut frames = Vec::new();
        while let Some(frame) = read_frame(io).await {
            frames.push(frame);
        }
        frames
    })
    .await
}

/// Asserts that a raw connection receives a close frame with `code` (after
/// nothing but pings) and then ends. Returns the pings counted.
pub async fn expect_raw_close<R: TestRuntime>(io: &mut ClientIo, code: u16, what: &str) -> usize {
    let frames = read_to_end::<R>(io, what).await;
    let kinds: Vec<u8> = frames.iter().map(|(op, _)| *op).collect();
    let Some(((last, payload), before)) = frames.split_last() else {
        panic!(
            "[{}] the connection ended without a close frame ({what})",
            R::name()
        );
    };
    assert_eq!(
        *last,
        opcode::CLOSE,
        "[{}] last frame should be a close frame ({what}); opcodes {kinds:?}",
        R::name()
    );
    assert!(
        before.iter().all(|(op, _)| *op == opcode::PING),
        "[{}] only pings may precede the close frame ({what}); opcodes {kinds:?}",
        R::name()
    );
    assert!(
        payload.len() >= 2,
        "[{}] close frame without a code ({what})",
        R::name()
    );
    let got = u16::from_be_bytes([payload[0], payload[1]]);
    assert_eq!(
        got,
        code,
        "[{}] close code ({what}); reason {:?}",
        R::name(),
        String::from_utf8_lossy(&payload[2..])
    );
    before.len()
}

/// TBone's frame for event `name` with JSON text `data`.
pub fn tbone_frame(name: &str, data: &str) -> String {
    format!(r#"{{"type":"event","payload":{{"name":"{name}","data":{data}}}}}"#)
}

/// A running memory channel named for this runtime and `test`.
pub fn open_running<R: TestRuntime>(test: &str) -> Mem<R> {
    let channel = Mem::<R>::named(&unique_name::<R>(test)).expect("open");
    channel.kickoff().expect("kickoff");
    channel
}

/// Publishes `data` as `event` (within [`crate::WAIT`]), failing the test
/// on an error.
pub async fn publish<R: TestRuntime>(channel: &Mem<R>, event: &str, data: &serde_json::Value) {
    wait::<R, _>(&format!("publishing {event}"), channel.publish(event, data))
        .await
        .unwrap_or_else(|e| panic!("[{}] publishing {event}: {e}", R::name()));
}

/// Asserts that `reason` is `CloseReason::Rejected` with `code`.
pub fn assert_rejected(reason: &CloseReason, code: u16, what: &str) {
    match reason {
        CloseReason::Rejected(got, _) if *got == code => {}
        other => panic!("{what}: expected CloseReason::Rejected({code}, _), got {other:?}"),
    }
}

/// Three real clients each receive exactly TBone's frame, as a text
/// message; events they are not subscribed to are not sent.
pub async fn clients_receive_exact_text_frames<R: TestRuntime>() {
    let channel = open_running::<R>("ws-exact");
    let server = R::spawn_ws_server(channel.clone(), SocketOptions::new(["e"]));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect::<R>(server.addr).await.0);
    }
    eventually::<R>("three sockets subscribed to e", || {
        channel.subscriber_count("e") == 3
    })
    .await;

    publish(
        &channel,
        "e",
        &json!({"id": 1, "text": "h\u{e9}llo \"quoted\""}),
    )
    .await;
    publish(&channel, "other", &json!(0)).await;
    publish(&channel, "e", &json!(null)).await;

    let first = tbone_frame("e", r#"{"id":1,"text":"héllo \"quoted\""}"#);
    let second = tbone_frame("e", "null");
    for (i, client) in clients.iter_mut().enumerate() {
        for expected in [&first, &second] {
            let message = next_message::<R>(client, &format!("client {i}'s frame")).await;
            assert_eq!(message, Message::text(expected.as_str()), "client {i}");
        }
    }
    assert_eq!(channel.stats().carriers_dropped, 0);
}

/// A client that closes (cleanly, or by dropping its TCP connection)
/// leaves every event of the channel; the others keep receiving.
pub async fn closing_a_client_removes_its_carrier<R: TestRuntime>() {
    let channel = open_running::<R>("ws-close");
    let mut server = R::spawn_ws_server(channel.clone(), SocketOptions::new(["a", "b"]));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect::<R>(server.addr).await);
    }
    eventually::<R>("three sockets subscribed to a and b", || {
        channel.subscription_count() == 6 && channel.carrier_count() == 3
    })
    .await;

    // A clean close: the server answers it and ends the connection.
    let (mut leaving, leaving_peer) = clients.remove(0);
    wait::<R, _>("sending a close frame", leaving.close(None))
        .await
        .expect("close");
    let reason = server
        .reason_for::<R>(leaving_peer, "the closed connection")
        .await;
    assert_eq!(reason, CloseReason::PeerClosed);
    eventually::<R>("the closed client to leave a and b", || {
        channel.subscription_count() == 4 && channel.carrier_count() == 2
    })
    .await;
    let echoed = wait::<R, _>("the server's answer to the close", leaving.next()).await;
    assert!(
        matches!(echoed, Some(Ok(Message::Close(_)))),
        "the server should answer a close frame with one, got {echoed:?}"
    );
    assert!(
        wait::<R, _>("the end", leaving.next()).await.is_none(),
        "the connection should end cleanly after the closing handshake"
    );

    publish(&channel, "a", &json!(1)).await;
    publish(&channel, "b", &json!(2)).await;
    for (i, (client, _)) in clients.iter_mut().enumerate() {
        assert_eq!(
            next_text::<R>(client, "a").await,
            tbone_frame("a", "1"),
            "client {i}"
        );
        assert_eq!(
            next_text::<R>(client, "b").await,
            tbone_frame("b", "2"),
            "client {i}"
        );
    }

    // An abrupt close: the TCP connection is dropped without a close frame.
    let (gone, gone_peer) = clients.remove(0);
    drop(gone);
    let reason = server
        .reason_for::<R>(gone_peer, "the dropped connection")
        .await;
    assert!(
        !matches!(reason, CloseReason::Overflow | CloseReason::Closed),
        "dropped connection ended with {reason:?}"
    );
    eventually::<R>("the dropped client to leave a and b", || {
        channel.subscription_count() == 2 && channel.carrier_count() == 1
    })
    .await;
    publish(&channel, "b", &json!(3)).await;
    let (last, _) = &mut clients[0];
    assert_eq!(next_text::<R>(last, "b").await, tbone_frame("b", "3"));
    assert_eq!(channel.stats().carriers_dropped, 0);
}

#[derive(Serialize)]
struct Big<'a> {
    seq: usize,
    pad: &'a str,
}

fn big_frame(seq: usize, pad: &str) -> String {
    tbone_frame("big", &format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#))
}

/// A client that never reads fills the kernel's buffers, then its carrier's
/// small queue, and is dropped; meanwhile publishing never waits and a
/// reading client receives every event, in order, promptly.
pub async fn slow_client_is_dropped_without_slowing_others<R: TestRuntime>() {
    const MAX_EVENTS: usize = 400;
    const EXTRA: usize = 5;
    let channel = open_running::<R>("ws-slow");
    let options = SocketOptions::new(["big"]).carrier(
        CarrierConfig::default()
            .capacity(8)
            .close_timeout(Duration::from_millis(200)),
    );
    let mut server = R::spawn_ws_server(channel.clone(), options);
    let (mut slow, slow_peer) = connect::<R>(server.addr).await;
    let (mut fast, fast_peer) = connect::<R>(server.addr).await;
    eventually::<R>("both sockets subscribed", || {
        channel.subscriber_count("big") == 2
    })
    .await;

    let pad = "x".repeat(256 * 1024);
    let mut published = 0;
    let mut extra = 0;
    // Lock-step with the reading client, until the slow one is dropped and
    // a few events more.
    while extra < EXTRA {
        assert!(
            published < MAX_EVENTS,
            "[{}] the slow client was not dropped after {MAX_EVENTS} events of 256 KiB",
            R::name()
        );
        let data = Big {
            seq: published,
            pad: &pad,
        };
        within::<R, _>(
            Duration::from_secs(1),
            &format!("publish #{published} to return"),
            channel.publish("big", &data),
        )
        .await
        .expect("publish");
        let text = within::<R, _>(
            Duration::from_secs(2),
            &format!("the reading client to receive #{published}"),
            next_text::<R>(&mut fast, "a big frame"),
        )
        .await;
        assert!(
            text == big_frame(published, &pad),
            "the reading client's frame #{published} differs: {:?}...",
            &text[..text.len().min(80)]
        );
        published += 1;
        if channel.stats().carriers_dropped > 0 {
            extra += 1;
        }
    }
    assert_eq!(
        channel.stats().carriers_dropped,
        1,
        "only the slow client is dropped"
    );
    assert_eq!(channel.subscriber_count("big"), 1);
    assert_eq!(
        server
            .reason_for::<R>(slow_peer, "the slow connection")
            .await,
        CloseReason::Overflow
    );
    assert!(!server.ended_so_far().contains(&fast_peer));

    // What the slow client finally reads is a prefix of the events, in
    // order, then the end of the connection.
    let received = wait::<R, _>("the slow client to read to the end", async {
        let mut received = 0;
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(text))) => {
                    assert!(
                        text.as_str() == big_frame(received, &pad),
                        "the slow client's frame #{received} is out of order"
                    );
                    received += 1;
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        assert_eq!(u16::from(frame.code), close_code::POLICY);
                    }
                }
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(_)) | None => return received,
            }
        }
    })
    .await;
    assert!(
        received < published,
        "the slow client received {received} of {published} events although dropped"
    );
}

/// A message over `max_message_size` closes that connection with 1009; a
/// message under the limit does not; another client is unaffected.
pub async fn oversized_message_closes_only_that_connection<R: TestRuntime>() {
    let channel = open_running::<R>("ws-oversized");
    let options = SocketOptions::new(["e"]).max_message_size(1024);
    let mut server = R::spawn_ws_server(channel.clone(), options);
    let (mut victim, victim_peer) = connect::<R>(server.addr).await;
    let (mut bystander, bystander_peer) = connect::<R>(server.addr).await;
    eventually::<R>("both sockets subscribed", || {
        channel.subscriber_count("e") == 2
    })
    .await;

    // Under the limit: read and ignored (control messages are off).
    wait::<R, _>(
        "sending 1000 bytes",
        bystander.send(Message::text("y".repeat(1000))),
    )
    .await
    .expect("send");
    wait::<R, _>(
        "sending 64 KiB",
        victim.send(Message::text("y".repeat(64 * 1024))),
    )
    .await
    .expect("send");
    let reason = server
        .reason_for::<R>(victim_peer, "the oversized message")
        .await;
    assert_rejected(&reason, close_code::TOO_BIG, "oversized message");
    expect_close::<R>(&mut victim, close_code::TOO_BIG, "the oversized message").await;
    eventually::<R>("the oversized client to leave", || {
        channel.subscriber_count("e") == 1
    })
    .await;

    publish(&channel, "e", &json!(1)).await;
    assert_eq!(
        next_text::<R>(&mut bystander, "e").await,
        tbone_frame("e", "1")
    );
    assert!(!server.ended_so_far().contains(&bystander_peer));
}

/// Garbage bytes and an unmasked frame close their connection with 1002, a
/// text frame that is not UTF-8 with 1007 (RFC 6455 7.4.1), without
/// disturbing another client or the server.
pub async fn invalid_frames_close_only_that_connection<R: TestRuntime>() {
    let channel = open_running::<R>("ws-invalid");
    let mut server = R::spawn_ws_server(channel.clone(), SocketOptions::new(["e"]));
    let (mut bystander, bystander_peer) = connect::<R>(server.addr).await;
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "garbage bytes",
            b"\xff\xfe\xfd\xfc this is not a websocket frame \x00\x01".to_vec(),
            close_code::PROTOCOL,
        ),
        (
            "a non-UTF-8 text frame",
            masked_frame(opcode::TEXT, b"\xc3\x28 not utf-8 \xff"),
            close_code::INVALID_PAYLOAD,
        ),
        // FIN + text, length 2, no mask bit: clients must mask.
        (
            "an unmasked frame",
            b"\x81\x02hi".to_vec(),
            close_code::PROTOCOL,
        ),
    ];
    for (round, (what, bytes, code)) in cases.into_iter().enumerate() {
        let (mut raw, raw_peer) = raw_connect::<R>(server.addr).await;
        eventually::<R>("the raw socket to be subscribed", || {
            channel.subscriber_count("e") == 2
        })
        .await;
        write_raw::<R>(&mut raw, &bytes).await;
        let reason = server.reason_for::<R>(raw_peer, what).await;
        assert_rejected(&reason, code, what);
        expect_raw_close::<R>(&mut raw, code, what).await;
        eventually::<R>("the failed socket to leave", || {
            channel.subscriber_count("e") == 1
        })
        .await;

        publish(&channel, "e", &json!(round)).await;
        assert_eq!(
            next_text::<R>(&mut bystander, what).await,
            tbone_frame("e", &round.to_string()),
            "after {what}"
        );
    }
    assert!(!server.ended_so_far().contains(&bystander_peer));
}

/// Without a message handler, a binary message is refused: close code
/// 1003 (with one, it reaches the handler: see [`crate::duplex`]).
pub async fn binary_message_closes_with_1003<R: TestRuntime>() {
    let channel = open_running::<R>("ws-binary");
    let mut server = R::spawn_ws_server(channel.clone(), SocketOptions::new(["e"]));
    let (mut client, peer) = connect::<R>(server.addr).await;
    eventually::<R>("the socket subscribed", || {
        channel.subscriber_count("e") == 1
    })
    .await;
    wait::<R, _>(
        "sending binary",
        client.send(Message::binary(vec![1u8, 2, 3])),
    )
    .await
    .expect("send");
    expect_close::<R>(&mut client, close_code::UNSUPPORTED, "a binary message").await;
    let reason = server.reason_for::<R>(peer, "the binary message").await;
    assert_rejected(&reason, close_code::UNSUPPORTED, "binary message");
    eventually::<R>("the socket to leave", || channel.subscription_count() == 0).await;
}

/// With control messages on, the client subscribes and unsubscribes.
pub async fn control_messages_subscribe_and_unsubscribe<R: TestRuntime>() {
    let channel = open_running::<R>("ws-control");
    let options = SocketOptions::new(["y"]).control_messages(true);
    let _server = R::spawn_ws_server(channel.clone(), options);
    let (mut client, _) = connect::<R>(_server.addr).await;
    eventually::<R>("the socket subscribed to y", || {
        channel.subscriber_count("y") == 1
    })
    .await;
    assert_eq!(channel.subscriber_count("x"), 0);

    let subscribe = Message::text(r#"{"action":"subscribe","event":"x"}"#);
    wait::<R, _>("sending subscribe", client.send(subscribe))
        .await
        .expect("send");
    eventually::<R>("the socket subscribed to x", || {
        channel.subscriber_count("x") == 1
    })
    .await;
    publish(&channel, "x", &json!({"n": 1})).await;
    assert_eq!(
        next_text::<R>(&mut client, "x").await,
        tbone_frame("x", r#"{"n":1}"#)
    );

    let unsubscribe = Message::text(r#"{"action":"unsubscribe","event":"x"}"#);
    wait::<R, _>("sending unsubscribe", client.send(unsubscribe))
        .await
        .expect("send");
    eventually::<R>("the socket unsubscribed from x", || {
        channel.subscriber_count("x") == 0
    })
    .await;
    publish(&channel, "x", &json!(2)).await;
    publish(&channel, "y", &json!(3)).await;
    // Delivery is in publish order: had x been delivered, it would be first.
    assert_eq!(
        next_text::<R>(&mut client, "y after x").await,
        tbone_frame("y", "3")
    );
    assert_eq!(channel.subscriber_count("y"), 1);
}

/// A malformed control message (not JSON, or an unknown action) closes the
/// connection with 1008.
pub async fn malformed_control_message_closes_with_1008<R: TestRuntime>() {
    let channel = open_running::<R>("ws-malformed");
    let options = SocketOptions::new(["y"]).control_messages(true);
    let mut server = R::spawn_ws_server(channel.clone(), options);
    for text in ["{not json", r#"{"action":"dance","event":"x"}"#] {
        let (mut client, peer) = connect::<R>(server.addr).await;
        eventually::<R>("the socket subscribed", || {
            channel.subscriber_count("y") == 1
        })
        .await;
        wait::<R, _>(
            "sending a malformed message",
            client.send(Message::text(text)),
        )
        .await
        .expect("send");
        expect_close::<R>(&mut client, close_code::POLICY, text).await;
        let reason = server.reason_for::<R>(peer, text).await;
        assert_rejected(&reason, close_code::POLICY, text);
        eventually::<R>("the socket to leave", || channel.subscription_count() == 0).await;
    }
}

/// An authorizer that lets every client connect and refuses one event.
struct RefuseEvent(&'static str);

impl Authorizer for RefuseEvent {
    type Client = ();

    async fn connect(&self, _request: &ConnectRequest) -> Result<(), Refusal> {
        Ok(())
    }

    async fn allow(&self, _client: &(), _channel: &str, event: &str) -> bool {
        event != self.0
    }
}

/// Events the authorization hook refuses are not subscribed, at connect
/// time or by control message; the latter gets an error frame.
pub async fn unauthorized_subscription_gets_error_frame<R: TestRuntime>() {
    let channel = open_running::<R>("ws-authorize");
    let options = SocketOptions::new(["y", "secret"])
        .control_messages(true)
        .authorize(RefuseEvent("secret"));
    let _server = R::spawn_ws_server(channel.clone(), options);
    let (mut client, _) = connect::<R>(_server.addr).await;
    eventually::<R>("the socket subscribed to y", || {
        channel.subscriber_count("y") == 1
    })
    .await;
    assert_eq!(
        channel.subscriber_count("secret"),
        0,
        "refused at connect time"
    );

    let subscribe = Message::text(r#"{"action":"subscribe","event":"secret"}"#);
    wait::<R, _>("sending subscribe", client.send(subscribe))
        .await
        .expect("send");
    assert_eq!(
        next_text::<R>(&mut client, "the error frame").await,
        r#"{"type":"error","payload":{"message":"not allowed to subscribe to `secret`"}}"#
    );
    assert_eq!(channel.subscriber_count("secret"), 0);
    publish(&channel, "secret", &json!(1)).await;
    publish(&channel, "y", &json!(2)).await;
    assert_eq!(
        next_text::<R>(&mut client, "y after secret").await,
        tbone_frame("y", "2")
    );
}

/// With control messages off (the default, as in TBone) and no message
/// handler, text from the client is ignored: no subscription, no close.
pub async fn text_is_ignored_without_control_messages<R: TestRuntime>() {
    let channel = open_running::<R>("ws-no-control");
    let mut server = R::spawn_ws_server(channel.clone(), SocketOptions::new(["y"]));
    let (mut client, peer) = connect::<R>(server.addr).await;
    eventually::<R>("the socket subscribed", || {
        channel.subscriber_count("y") == 1
    })
    .await;
    for text in [r#"{"action":"subscribe","event":"x"}"#, "{not json"] {
        wait::<R, _>("sending text", client.send(Message::text(text)))
            .await
            .expect("send");
    }
    publish(&channel, "x", &json!(1)).await;
    publish(&channel, "y", &json!(2)).await;
    assert_eq!(
        next_text::<R>(&mut client, "y").await,
        tbone_frame("y", "2")
    );
    assert_eq!(channel.subscriber_count("x"), 0);
    assert!(!server.ended_so_far().contains(&peer));
}

/// The server pings every `ping_interval`; a client that answers (as
/// tungstenite does while reading) stays connected past two intervals.
/// Each tick checks that the client spoke since the previous one, so the
/// third ping proves two checks passed. (150 ms: the pong has one interval
/// to arrive, which must hold on a loaded machine too.)
pub async fn pings_arrive_and_answered_pings_keep_the_socket<R: TestRuntime>() {
    const PINGS: usize = 3;
    let channel = open_running::<R>("ws-ping");
    let options = SocketOptions::new(["e"]).ping_interval(Duration::from_millis(150));
    let mut server = R::spawn_ws_server(channel.clone(), options);
    let (mut client, peer) = connect::<R>(server.addr).await;
    eventually::<R>("the socket subscribed", || {
        channel.subscriber_count("e") == 1
    })
    .await;
    for i in 0..PINGS {
        let message = within::<R, _>(
            Duration::from_secs(1),
            &format!("ping #{i}"),
            next_message::<R>(&mut client, "a ping"),
        )
        .await;
        assert!(
            matches!(message, Message::Ping(_)),
            "expected ping #{i}, got {message:?}"
        );
    }
    // PINGS intervals passed: a silent client would have been dropped.
    assert_eq!(channel.subscriber_count("e"), 1);
    assert!(!server.ended_so_far().contains(&peer));
    publish(&channel, "e", &json!(1)).await;
    assert_eq!(
        next_text::<R>(&mut client, "e").await,
        tbone_frame("e", "1")
    );
}

/// A client that holds its connection but never reads nor answers pings is
/// closed as unresponsive after two intervals (1001), and leaves.
pub async fn silent_client_is_closed_as_unresponsive<R: TestRuntime>() {
    let channel = open_running::<R>("ws-silent");
    let options = SocketOptions::new(["e"]).ping_interval(Duration::from_millis(100));
    let mut server = R::spawn_ws_server(channel.clone(), options);
    let (mut raw, peer) = raw_connect::<R>(server.addr).await;
    let reason = server
        .reason_for::<R>(peer, "the silent connection to be dropped")
        .await;
    assert_eq!(
        reason,
        CloseReason::Rejected(close_code::GOING_AWAY, "no answer to pings".into())
    );
    eventually::<R>("the silent socket to leave", || {
        channel.subscription_count() == 0
    })
    .await;
    let pings =
        expect_raw_close::<R>(&mut raw, close_code::GOING_AWAY, "the unresponsive client").await;
    assert!(pings >= 1, "the server closed before pinging");
}

/// Stopping the channel clears its subscriptions, and each socket served
/// on it gets what was published before the stop, then a close frame with
/// 1001. A socket that comes afterwards is refused: before its upgrade
/// with HTTP 503 (`accept` subscribes it before the handshake response),
/// or, already upgraded (`handshake` + `serve`), with a close frame 1001.
pub async fn channel_stop_with_connected_sockets<R: TestRuntime>() {
    let channel = open_running::<R>("ws-stop");
    let mut server = R::spawn_ws_server(channel.clone(), SocketOptions::new(["e"]));
    let mut upgraded = R::spawn_upgraded_ws_server(channel.clone(), SocketOptions::new(["e"]));
    let (mut first, first_peer) = connect::<R>(server.addr).await;
    let (mut second, second_peer) = connect::<R>(upgraded.addr).await;
    eventually::<R>("both sockets subscribed", || {
        channel.subscriber_count("e") == 2
    })
    .await;
    publish(&channel, "e", &json!(1)).await;
    for client in [&mut first, &mut second] {
        assert_eq!(next_text::<R>(client, "e").await, tbone_frame("e", "1"));
    }

    publish(&channel, "e", &json!(2)).await;
    wait::<R, _>("the channel to stop", channel.stop()).await;
    assert!(channel.is_stopped());
    assert_eq!(channel.subscription_count(), 0);
    assert!(matches!(
        channel.publish("e", &json!(3)).await,
        Err(PublishError::Stopped { .. })
    ));

    // Each socket gets what was published before the stop, then 1001.
    let stopped = format!("the channel `{}` stopped", channel.name());
    for (client, server, peer) in [
        (&mut first, &mut server, first_peer),
        (&mut second, &mut upgraded, second_peer),
    ] {
        assert_eq!(next_text::<R>(client, "e").await, tbone_frame("e", "2"));
        expect_close::<R>(
            client,
            close_code::GOING_AWAY,
            "a socket of a stopped channel",
        )
        .await;
        let reason = server
            .reason_for::<R>(peer, "a socket of the stopped channel")
            .await;
        assert_eq!(
            reason,
            CloseReason::Rejected(close_code::GOING_AWAY, stopped.clone())
        );
    }
    // A new socket cannot subscribe to a stopped channel: refused before
    // the upgrade...
    let (status, late_peer) = refused_status::<R>(server.addr, &[]).await;
    assert_eq!(status, 503, "a socket on a stopped channel");
    let refusal = server.refusal_for::<R>(late_peer, "the late socket").await;
    assert_eq!(refusal.status(), 503);
    assert!(
        refusal.reason().contains("is stopped"),
        "refusal {refusal:?}"
    );
    // ...or, already upgraded, closed with 1001.
    let (mut late, late_peer) = connect::<R>(upgraded.addr).await;
    expect_close::<R>(
        &mut late,
        close_code::GOING_AWAY,
        "an upgraded socket on a stopped channel",
    )
    .await;
    let reason = upgraded
        .reason_for::<R>(late_peer, "the late upgraded socket")
        .await;
    assert_rejected(&reason, close_code::GOING_AWAY, "late socket");
}

/// A close reason longer than a control frame can hold (125 bytes, 2 of
/// them the code) must be cut, at a character boundary, so that the client
/// still gets the close code rather than a protocol error. Here the reason
/// is the refusal of an already upgraded socket (`handshake` + `serve`) on
/// a stopped channel whose name is long.
pub async fn long_close_reason_is_cut_to_fit_the_close_frame<R: TestRuntime>() {
    let name = format!(
        "{}/{}",
        unique_name::<R>("ws-long-reason"),
        "\u{e9}".repeat(60)
    );
    let channel = Mem::<R>::named(&name).expect("open");
    channel.kickoff().expect("kickoff");
    let mut server = R::spawn_upgraded_ws_server(channel.clone(), SocketOptions::new(["e"]));
    wait::<R, _>("the channel to stop", channel.stop()).await;
    let (mut late, peer) = connect::<R>(server.addr).await;
    let reason = expect_close::<R>(&mut late, close_code::GOING_AWAY, "a long close reason").await;
    assert!(
        reason.len() <= 123,
        "close reason of {} bytes",
        reason.len()
    );
    assert!(reason.starts_with("channel `"), "close reason {reason:?}");
    let served = server.reason_for::<R>(peer, "the refused socket").await;
    assert_rejected(&served, close_code::GOING_AWAY, "refused socket");
}
