//! A headless Chromium driven over the DevTools protocol (CDP), for tests
//! that need a real browser: no driver binary, just a websocket.
//!
//! Chromium comes from Debian's `chromium` package, which `scripts/test`
//! installs (`scripts/install-browser`); `CHROMIUM` may point elsewhere.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tokio::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::StreamExt;
use serde_json::{json, Value};

/// A running headless Chromium, killed (and its profile removed) on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    devtools: WebSocketStream<ConnectStream>,
    next_id: u64,
    /// The CDP events read so far (messages without an `id`), oldest first.
    events: Vec<Value>,
}

/// One open tab.
pub struct Page {
    session: String,
}

fn chromium() -> String {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return path;
    }
    for candidate in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!(
        "Chromium was not found. scripts/test installs Debian's `chromium` package (scripts/install-browser); \
         or set CHROMIUM=/path/to/chromium"
    );
}

impl Browser {
    /// Starts Chromium headless on a DevTools port of its choosing and
    /// connects to it.
    pub async fn launch() -> Browser {
        static LAUNCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "tbone-chromium-{}-{}",
            std::process::id(),
            LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                &format!("--user-data-dir={}", profile.display()),
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Chromium: {e}"));
        // Chromium prints "DevTools listening on ws://..." on stderr.
        let stderr = child.stderr.take().expect("Chromium's stderr");
        let (found, url) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.trim().to_string());
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || url.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("waiting for Chromium");
        let Ok(url) = url else {
            // Not left running behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            panic!("Chromium's DevTools endpoint did not come up within 30 s");
        };
        let devtools = match connect_async(url.as_str()).await {
            Ok((devtools, _)) => devtools,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&profile);
                panic!("cannot connect to Chromium's DevTools: {error}");
            }
        };
        Browser {
            child,
            profile,
            devtools,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Calls a CDP method (in a page's session, or on the browser) and
    /// returns its result; fails the test on a protocol error.
    pub async fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(page) = page {
            request["sessionId"] = json!(page.session);
        }
        self.devtools
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("CDP send failed: {e}"));
        let wait = async {
            while let Some(message) = self.devtools.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let Ok(reply) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if reply.get("id").is_none() && reply.get("method").is_some() {
                    self.events.push(reply);
                    continue;
                }
                if reply["id"] == json!(id) {
                    if let Some(error) = reply.get("error") {
                        panic!("CDP {method} failed: {error}");
                    }
                    return reply["result"].clone();
                }
            }
            panic!("the DevTools connection closed during {method}");
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("CDP {method} got no answer within 30 s"))
    }

    /// Opens `url` in a new tab, recording its network traffic from the
    /// start (see [`Browser::websocket_frames`], [`Browser::http_requests`]).
    pub async fn open(&mut self, url: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let page = Page {
            session: attached["sessionId"]
                .as_str()
                .expect("a session id")
                .to_string(),
        };
        self.call(Some(&page), "Network.enable", json!({})).await;
        self.call(Some(&page), "Page.navigate", json!({"url": url}))
            .await;
        page
    }

    /// The CDP events of `page` called `method` read so far (events are
    /// read while waiting for answers: after any call, e.g. [`Browser::eval`]).
    pub fn events(&self, page: &Page, method: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|event| event["sessionId"] == json!(page.session) && event["method"] == method)
            .map(|event| event["params"].clone())
            .collect()
    }

    /// The text messages `page` sent (`sent`) or received on its websockets,
    /// as JSON (messages that are not JSON are left out), oldest first.
    pub fn websocket_frames(&self, page: &Page, sent: bool) -> Vec<Value> {
        let method = if sent {
            "Network.webSocketFrameSent"
        } else {
            "Network.webSocketFrameReceived"
        };
        self.events(page, method)
            .iter()
            .filter_map(|params| params["response"]["payloadData"].as_str())
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect()
    }

    /// The method and URL of every HTTP request `page` made, oldest first.
    pub fn http_requests(&self, page: &Page) -> Vec<(String, String)> {
        self.events(page, "Network.requestWillBeSent")
            .iter()
            .map(|params| {
                let request = &params["request"];
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (text(&request["method"]), text(&request["url"]))
            })
            .collect()
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its
    /// value as JSON.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(page),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("page script failed: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it evaluates to `true`, failing the test
    /// with `what` after `limit`.
    pub async fn wait_for(&mut self, page: &Page, expression: &str, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(page, expression).await == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "in the browser, {what} did not happen within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        use std::io::Cursor;
        // A background tab may never paint: headless Chromium would not
        // answer the capture.
        self.call(Some(page), "Page.bringToFront", json!({})).await;
        let shot = self
            .call(
                Some(page),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await;
        let data = shot["data"].as_str().unwrap_or_default();
        let mut out = Vec::new();
        // Tiny base64 decoder: the tests need no extra crate for this.
        let table = |c: u8| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        };
        let (mut acc, mut bits) = (0u32, 0);
        for value in Cursor::new(data.as_bytes())
            .get_ref()
            .iter()
            .filter_map(|c| table(*c))
        {
            acc = (acc << 6) | u32::from(value);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A TCP proxy on 127.0.0.1 in front of a server, for tests that cut a
/// page's connections as a network failure would: [`Proxy::cut`] drops
/// every connection open now (no close frame, no HTTP response) and turns
/// new ones away until [`Proxy::restore`]. Stops when dropped.
pub struct Proxy {
    /// Where the page connects.
    pub addr: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
    accepting: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    up: bool,
    connections: Vec<tokio::task::AbortHandle>,
}

impl Proxy {
    /// Forwards every connection to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Proxy {
        use std::sync::{Arc, Mutex, PoisonError};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(ProxyState {
            up: true,
            connections: Vec::new(),
        }));
        let shared = state.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if !state.up {
                    // Turned away: the page sees its connection fail.
                    continue;
                }
                let forward = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                state.connections.retain(|c| !c.is_finished());
                state.connections.push(forward.abort_handle());
            }
        });
        Proxy {
            addr,
            state,
            accepting,
        }
    }

    /// Drops every open connection, and turns new ones away.
    pub fn cut(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.up = false;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .up = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}
