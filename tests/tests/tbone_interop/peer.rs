//! The Python TBone process (`tests/tbone/peer.py`) as the test drives it:
//! commands as JSON lines on its stdin, its reports as JSON lines from its
//! stdout, every wait bounded, and the process killed if the test ends
//! without [`TbonePeer::quit`].

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use serde_json::{json, Value};
use tbone_dispatch_tests::mongo::{mongo_uri, MONGO_WAIT};

/// How long the peer may live at most: it exits by itself after that, so a
/// test process killed hard does not leave it running.
const PEER_LIFETIME: Duration = Duration::from_secs(120);

/// The interpreter of the venv `scripts/tbone-peer` installs; fails the
/// test when it is not given.
fn python() -> String {
    match std::env::var("TBONE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "TBONE_PYTHON is not set, so the TBone interop test has no Python TBone to run. \
             Run `scripts/test`, which installs it, or `export TBONE_PYTHON=$(scripts/tbone-peer python)`."
        ),
    }
}

/// A running Python TBone on one database and channel.
pub struct TbonePeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl TbonePeer {
    /// Starts TBone's MongoChannel `name` on `database` (of `MONGODB_URI`).
    pub fn start(database: &str, name: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tbone/peer.py");
        let python = python();
        let mut child = Command::new(&python)
            .args([
                script,
                &mongo_uri(),
                database,
                name,
                &PEER_LIFETIME.as_secs().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the TBone peer with {python} {script}: {e}"));

        let (line_tx, lines) = mpsc::unbounded();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.unbounded_send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, collected) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        TbonePeer {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    /// What the peer said on stderr, for failure messages.
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The peer's next report, within [`MONGO_WAIT`].
    async fn next(&mut self, what: &str) -> Value {
        match tokio::time::timeout(MONGO_WAIT, self.lines.next()).await {
            Ok(Some(line)) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the TBone peer wrote a line that is not JSON ({e}): {line}")),
            Ok(None) => {
                // Its stderr may still be draining.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the TBone peer exited ({:?}) while the test waited for {what}; its stderr:\n{}",
                    self.child.try_wait(),
                    self.stderr()
                )
            }
            Err(_) => panic!(
                "the TBone peer said nothing for {MONGO_WAIT:?} while the test waited for {what}; its stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Waits until TBone is tailing the collection; returns how the
    /// collection came to be (see `peer.py`).
    pub async fn ready(&mut self) -> String {
        let report = self.next("TBone to start tailing").await;
        match report["ready"]["collection"].as_str() {
            Some(how) => how.to_string(),
            None => panic!("expected the TBone peer's ready report, got {report}"),
        }
    }

    /// The next `n` texts TBone's websocket carrier sent.
    pub async fn frames(&mut self, n: usize) -> Vec<String> {
        let mut frames = Vec::with_capacity(n);
        while frames.len() < n {
            let what = format!("frame {} of {n} from TBone's carrier", frames.len() + 1);
            let report = self.next(&what).await;
            match report["frame"].as_str() {
                Some(text) => frames.push(text.to_string()),
                None => panic!("expected a frame from the TBone peer, got {report}"),
            }
        }
        frames
    }

    fn send(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("the peer's stdin is open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "cannot write to the TBone peer ({e}); its stderr:\n{}",
                    self.stderr()
                )
            });
    }

    /// Has TBone publish `data` (JSON text) as event `key`.
    pub fn publish(&mut self, key: &str, data: &str) {
        let data: Value = serde_json::from_str(data).unwrap();
        self.send(json!({"publish": key, "data": data}));
    }

    /// Has TBone publish `{"at": <a Python datetime>}` as event `key`.
    pub fn publish_datetime(&mut self, key: &str, iso: &str) {
        self.send(json!({"publish": key, "datetime": iso}));
    }

    /// Asks the peer to exit and checks that it did, successfully.
    pub async fn quit(mut self) {
        self.send(json!({"quit": true}));
        self.stdin = None;
        let deadline = Instant::now() + MONGO_WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the TBone peer did not exit within {MONGO_WAIT:?} of being asked to; its stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            status.success(),
            "the TBone peer failed ({status}); its stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for TbonePeer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
