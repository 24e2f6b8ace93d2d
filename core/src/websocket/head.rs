//! The upgrade request, read before tungstenite sees it: so that the
//! application's authorization can await, and a refused client gets an
//! HTTP status instead of a websocket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::socket::{ConnectRequest, Refusal};

/// Longest request head accepted, in bytes.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

const MAX_HEADERS: usize = 64;

/// Why the request head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    Io(io::Error),
    /// Answered with this status (malformed, too large, not an upgrade).
    Answered(Refusal),
}

/// The bytes of the request head, as read (and anything the client sent
/// after it), and what they say.
pub(crate) struct Head {
    pub(crate) bytes: Vec<u8>,
    pub(crate) request: ParsedHead,
}

/// Reads the request head from `stream` and parses it. Answers (and
/// returns) 400 for a request that is not a websocket upgrade, 431 for one
/// over [`MAX_HEAD`].
pub(crate) async fn read<S>(stream: &mut S) -> Result<Head, HeadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (request, length) = loop {
        let read = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if read == 0 {
            return Err(HeadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client left before sending its request",
            )));
        }
        bytes.extend_from_slice(chunk.get(..read).unwrap_or_default());
        match parse(&bytes) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if bytes.len() < MAX_HEAD => continue,
            Ok(None) => {
                let refusal = Refusal::new(431, "the request head is too large");
                return Err(answer(stream, refusal).await);
            }
            Err(refusal) => return Err(answer(stream, refusal).await),
        }
    };
    if let Err(refusal) = check_upgrade(&request, bytes.len() - length) {
        return Err(answer(stream, refusal).await);
    }
    Ok(Head { bytes, request })
}

/// What tungstenite would refuse without an answer, answered: the client
/// gets a status saying what is wrong, and nothing is authorized or
/// subscribed for a request that cannot be upgraded.
fn check_upgrade(request: &ParsedHead, after: usize) -> Result<(), Refusal> {
    let ParsedHead { request, method } = request;
    if method != "GET" {
        return Err(Refusal::new(400, "a websocket upgrade is a GET request"));
    }
    let is = |name: &str, value: &str| {
        request
            .header_value(name)
            .is_some_and(|v| v.split(',').any(|v| v.trim().eq_ignore_ascii_case(value)))
    };
    if !is("upgrade", "websocket") {
        return Err(Refusal::new(
            400,
            "this is a websocket endpoint: send an upgrade request",
        ));
    }
    if request
        .header_value("sec-websocket-key")
        .is_none_or(|key| key.trim().is_empty())
    {
        return Err(Refusal::new(
            400,
            "the upgrade request has no Sec-WebSocket-Key",
        ));
    }
    if !is("sec-websocket-version", "13") {
        return Err(Refusal::new(
            426,
            "this server speaks websocket version 13 (Sec-WebSocket-Version: 13)",
        ));
    }
    if after > 0 {
        return Err(Refusal::new(
            400,
            "data after the upgrade request, before the handshake's answer",
        ));
    }
    Ok(())
}

async fn answer<S: AsyncWrite + Unpin>(stream: &mut S, refusal: Refusal) -> HeadError {
    refuse(stream, &refusal).await;
    HeadError::Answered(refusal)
}

/// A parsed request head: the request and its method.
#[derive(Debug)]
pub(crate) struct ParsedHead {
    pub(crate) request: ConnectRequest,
    method: String,
}

/// The request in `bytes` and the head's length, once it is complete.
fn parse(bytes: &[u8]) -> Result<Option<(ParsedHead, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(length)) => {
            let mut request = ConnectRequest::new(parsed.path.unwrap_or("/"));
            for header in parsed.headers.iter() {
                request.push_header(header.name, &String::from_utf8_lossy(header.value));
            }
            let method = parsed.method.unwrap_or_default().to_string();
            Ok(Some((ParsedHead { request, method }, length)))
        }
        Err(httparse::Error::TooManyHeaders) => {
            Err(Refusal::new(431, "the request has too many headers"))
        }
        Err(error) => Err(Refusal::new(400, format!("malformed request: {error}"))),
    }
}

/// Answers the request with `refusal`'s status instead of upgrading, and
/// closes the stream. Errors are ignored: the client may be gone already.
pub(crate) async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, refusal: &Refusal) {
    let body = refusal.reason();
    // 426 says which version to speak (RFC 6455, 4.4).
    let version = if refusal.status() == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} {phrase}\r\nConnection: close\r\n{version}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {length}\r\n\r\n{body}",
        status = refusal.status(),
        phrase = phrase(refusal.status()),
        length = body.len(),
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.close().await;
}

fn phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Refused",
    }
}

/// A stream that first yields bytes already read from it: tungstenite then
/// reads the request head again, as if nobody had.
#[derive(Debug)]
pub struct Rewind<S> {
    /// Read before; emptied (and freed) once replayed.
    prefix: Box<[u8]>,
    position: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind {
            prefix: prefix.into_boxed_slice(),
            position: 0,
            inner,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.position..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.len());
            if let (Some(to), Some(from)) = (buf.get_mut(..n), rest.get(..n)) {
                to.copy_from_slice(from);
            }
            this.position += n;
            if this.position >= this.prefix.len() {
                this.prefix = Box::default();
                this.position = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_heads_only() {
        let head = b"GET /ws/?a=1 HTTP/1.1\r\nHost: x\r\nCookie: s=1\r\nUpgrade: websocket\r\n\r\n";
        assert!(parse(&head[..20]).unwrap().is_none());
        let (parsed, length) = parse(head).unwrap().unwrap();
        assert_eq!(length, head.len());
        assert_eq!(parsed.method, "GET");
        let request = &parsed.request;
        assert_eq!(request.path(), "/ws/");
        assert_eq!(request.query(), Some("a=1"));
        assert_eq!(request.cookie("s"), Some("1"));
        assert_eq!(parse(b"\x00\x01garbage\r\n\r\n").unwrap_err().status(), 400);
    }

    #[test]
    fn refuses_what_cannot_be_upgraded_with_a_status() {
        let check = |text: &str, after: usize| {
            let (parsed, _) = parse(text.as_bytes()).unwrap().unwrap();
            check_upgrade(&parsed, after).map_err(|refusal| refusal.status())
        };
        let good = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(check(good, 0), Ok(()));
        assert_eq!(check(good, 3), Err(400), "bytes after the head");
        assert_eq!(check(&good.replace("GET", "POST"), 0), Err(400));
        assert_eq!(check(&good.replace("13", "8"), 0), Err(426));
        assert_eq!(
            check(&good.replace("Sec-WebSocket-Key", "X-Key"), 0),
            Err(400)
        );
        assert_eq!(check(&good.replace("websocket", "h2c"), 0), Err(400));
    }

    #[test]
    fn rewind_replays_then_reads_on() {
        futures::executor::block_on(async {
            let mut stream = Rewind::new(b"abc".to_vec(), &b"def"[..]);
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, b"abcdef");
        });
    }
}
