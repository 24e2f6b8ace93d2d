//! A minimal HTTP/1.1 client, for the demo's REST API.

use std::net::SocketAddr;

use futures::io::BufReader;
use futures::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tbone_dispatch_tokio::Tokio;

use crate::websocket::ClientIo;
use crate::TestRuntime;

/// A minimal HTTP/1.1 client on one keep-alive connection.
pub(super) struct Http {
    io: BufReader<ClientIo>,
}

impl Http {
    pub(super) async fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let (io, _) = <Tokio as TestRuntime>::connect_tcp(addr).await?;
        Ok(Http {
            io: BufReader::new(io),
        })
    }

    /// POSTs `body` as JSON to `path`; returns the status and the body.
    pub(super) async fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.io.get_mut().write_all(request.as_bytes()).await?;
        self.io.get_mut().flush().await?;
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        if self.io.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.io.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid("bad content-length"))?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.io.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
