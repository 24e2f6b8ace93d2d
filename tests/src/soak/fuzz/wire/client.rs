//! One fuzzed connection driven from the client's side, and what it
//! read back.

use std::net::SocketAddr;

use futures::{AsyncReadExt, AsyncWriteExt};
use tbone_dispatch_tokio::Tokio;

use super::frames::{frame, upgrade_request, Finish, WireConn, WireFrame, CLOSE, FIN};
use crate::websocket::ClientIo;
use crate::TestRuntime;

/// How a raw client's reading ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadEnd {
    Eof,
    Reset,
}

/// Reads everything the server sends until the connection ends.
async fn read_all(reader: &mut futures::io::ReadHalf<ClientIo>) -> (Vec<u8>, ReadEnd) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => return (bytes, ReadEnd::Eof),
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(_) => return (bytes, ReadEnd::Reset),
        }
    }
}

/// Frames a client received: `(opcode, payload)`s.
pub(super) type Frames = Vec<(u8, Vec<u8>)>;

/// The server frames in `bytes`: `(opcode, payload)`s, and whether the
/// bytes end mid-frame.
pub(super) fn parse_frames(mut bytes: &[u8]) -> Result<(Frames, bool), String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let Some(&[first, second]) = bytes.get(..2) else {
            return Ok((frames, true));
        };
        if second & 0x80 != 0 {
            return Err("a masked frame from the server".into());
        }
        let (len, header): (usize, usize) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(n) => (u16::from_be_bytes([n[0], n[1]]) as usize, 4),
                None => return Ok((frames, true)),
            },
            127 => match bytes.get(2..10) {
                Some(n) => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(n);
                    (
                        usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX),
                        10,
                    )
                }
                None => return Ok((frames, true)),
            },
            n => (n as usize, 2),
        };
        let Some(payload) = bytes.get(header..header.saturating_add(len)) else {
            return Ok((frames, true));
        };
        frames.push((first & 0x0f, payload.to_vec()));
        bytes = &bytes[header + len..];
    }
    Ok((frames, false))
}

/// What one fuzzed client saw.
pub(super) struct Seen {
    pub(super) peer: SocketAddr,
    pub(super) handshake: bool,
    /// What the server sent after the handshake (for a client that did
    /// its own, everything).
    pub(super) received: Vec<u8>,
    pub(super) end: ReadEnd,
    pub(super) bytes_sent: usize,
}

/// Reads the upgrade response byte by byte (nothing after it is taken).
async fn read_response(reader: &mut futures::io::ReadHalf<ClientIo>) -> Result<String, String> {
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        match reader.read(&mut byte).await {
            Ok(1) => response.push(byte[0]),
            Ok(_) => return Err("the connection ended during the handshake".into()),
            Err(e) => return Err(format!("reading the upgrade response: {e}")),
        }
        if response.len() > 4096 {
            return Err("an upgrade response over 4 KiB".into());
        }
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Connects, writes what `conn` says, finishes, and reads until the end.
pub(super) async fn drive(addr: SocketAddr, conn: &WireConn) -> Result<Seen, String> {
    let (io, peer) = Tokio::connect_tcp(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut reader, mut writer) = io.split();
    let (bytes, finish, handshake) = match conn {
        WireConn::PreHandshake { bytes, finish } => (bytes.clone(), *finish, false),
        WireConn::Raw { bytes, finish } => (bytes.clone(), *finish, true),
        WireConn::Frames { frames, finish } => (
            frames.iter().flat_map(WireFrame::bytes).collect(),
            *finish,
            true,
        ),
    };
    let bytes_sent = bytes.len();
    if handshake {
        let request = upgrade_request(addr);
        writer
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing the upgrade request: {e}"))?;
        let response = read_response(&mut reader).await?;
        if !response.starts_with("HTTP/1.1 101") {
            return Err(format!("upgrade refused: {response}"));
        }
    }
    let write = async move {
        // The server may close before reading everything: a failed write
        // is the server's right.
        let _ = writer.write_all(&bytes).await;
        let _ = writer.flush().await;
        match finish {
            Finish::CloseFrame => {
                let _ = writer
                    .write_all(&frame(FIN | CLOSE, true, &1000u16.to_be_bytes()))
                    .await;
                let _ = writer.flush().await;
            }
            Finish::Shutdown => {
                let _ = writer.close().await;
            }
            Finish::Silent => {}
        }
        // Keeps the write half (and so the connection) open until reading
        // ends.
        writer
    };
    let ((received, end), _writer) = futures::join!(read_all(&mut reader), write);
    Ok(Seen {
        peer,
        handshake,
        received,
        end,
        bytes_sent,
    })
}

/// The close code of the first close frame the client received, if any.
pub(super) fn first_close(frames: &[(u8, Vec<u8>)]) -> Option<Option<u16>> {
    frames
        .iter()
        .find(|(op, _)| *op == CLOSE)
        .map(|(_, payload)| {
            (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
        })
}
