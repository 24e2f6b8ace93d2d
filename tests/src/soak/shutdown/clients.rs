//! The scenarios' clients: websocket clients that record what they
//! receive until their connection ends, and the demo's SSE client.

use std::net::SocketAddr;

use async_tungstenite::tokio::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::io::BufReader;
use futures::{AsyncBufReadExt, AsyncWriteExt, StreamExt};
use tbone_dispatch_tokio::Tokio;
use tokio::task::JoinHandle;

use super::audit::parse_entry;
use super::STEP;
use crate::soak::Row;
use crate::TestRuntime;

pub(super) type Client = WebSocketStream<ConnectStream>;

async fn connect(url: &str) -> Result<Client, String> {
    match tokio::time::timeout(STEP, connect_async(url)).await {
        Ok(Ok((client, _))) => Ok(client),
        Ok(Err(e)) => Err(format!("connecting to {url}: {e}")),
        Err(_) => Err(format!("connecting to {url}: no handshake within {STEP:?}")),
    }
}

pub(super) async fn connect_all(url: &str, clients: usize) -> Result<Vec<Client>, String> {
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(connect(url).await?);
    }
    Ok(connected)
}

/// What one websocket client saw until its connection ended.
#[derive(Debug, Default)]
pub(super) struct ClientLog {
    pub(super) events: Vec<(usize, u64)>,
    /// The close frame's code, if one came.
    close: Option<u16>,
    /// Data received after the close frame.
    after_close: u64,
    /// A read error before the close frame.
    pub(super) error: Option<String>,
}

/// Reads a client until its connection ends, answering the close handshake.
pub(super) async fn read_client(
    mut client: Client,
    parse: fn(&str) -> Option<(usize, u64)>,
) -> ClientLog {
    let mut log = ClientLog::default();
    while let Some(message) = client.next().await {
        match message {
            Ok(Message::Text(text)) => {
                if log.close.is_some() {
                    log.after_close += 1;
                }
                // Foreign frames are counted by the audit.
                log.events
                    .push(parse(text.as_str()).unwrap_or((usize::MAX, 0)));
            }
            Ok(Message::Close(frame)) => {
                log.close = Some(frame.map_or(0, |f| u16::from(f.code)));
            }
            Ok(_) => {}
            Err(e) => {
                if log.close.is_none() {
                    log.error = Some(e.to_string());
                }
                break;
            }
        }
    }
    log
}

/// Joins the readers and checks that each got a close frame with `code`
/// and then the end of its connection; returns their logs.
pub(super) async fn join_readers(
    row: &mut Row,
    readers: Vec<JoinHandle<ClientLog>>,
    code: u16,
) -> Vec<ClientLog> {
    let (mut logs, mut unfinished, mut wrong_code, mut no_close) = (Vec::new(), 0, 0, 0);
    let mut examples = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    for reader in readers {
        match tokio::time::timeout_at(deadline, reader).await {
            Ok(Ok(log)) => {
                match log.close {
                    Some(c) if c == code => {}
                    Some(c) => {
                        wrong_code += 1;
                        examples.push(format!("close code {c}"));
                    }
                    None => {
                        no_close += 1;
                        examples.push(format!("no close frame ({:?})", log.error));
                    }
                }
                if log.after_close > 0 {
                    examples.push(format!("{} events after the close frame", log.after_close));
                }
                logs.push(log);
            }
            Ok(Err(e)) => {
                unfinished += 1;
                examples.push(format!("reader failed: {e}"));
            }
            Err(_) => unfinished += 1,
        }
    }
    examples.truncate(5);
    row.check(
        unfinished == 0,
        format!("{unfinished} client connections did not end within {STEP:?} of the shutdown"),
    );
    row.check(
        wrong_code == 0 && no_close == 0 && logs.iter().all(|l| l.after_close == 0),
        format!(
            "expected every client to get a close frame with {code}: {wrong_code} got another code, {no_close} none; e.g. {examples:?}"
        ),
    );
    logs
}

/// An SSE client of the demo (`GET /sse/`): reads `data:` lines until the
/// stream ends. Its log has no close frame (SSE has none).
pub(super) async fn read_sse(addr: SocketAddr) -> Result<JoinHandle<ClientLog>, String> {
    let (mut io, _) = <Tokio as TestRuntime>::connect_tcp(addr)
        .await
        .map_err(|e| format!("SSE client: {e}"))?;
    io.write_all(b"GET /sse/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .map_err(|e| format!("SSE request: {e}"))?;
    let mut io = BufReader::new(io);
    let mut status = String::new();
    match tokio::time::timeout(STEP, io.read_line(&mut status)).await {
        Ok(Ok(_)) if status.starts_with("HTTP/1.1 200") => {}
        other => return Err(format!("SSE response: {other:?} {status:?}")),
    }
    Ok(tokio::spawn(async move {
        let mut log = ClientLog::default();
        let mut line = String::new();
        loop {
            line.clear();
            match io.read_line(&mut line).await {
                Ok(0) => break,
                Ok(_) => {
                    if let Some(data) = line.trim_end().strip_prefix("data: ") {
                        log.events
                            .push(parse_entry(data).unwrap_or((usize::MAX, 0)));
                    }
                }
                Err(e) => {
                    log.error = Some(e.to_string());
                    break;
                }
            }
        }
        log
    }))
}
