//! The parent's side of the server process: start it (this binary, in the
//! hidden `--serve` mode), talk to it over its stdin/stdout, stop it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::allocs::Snapshot;
use crate::args::{Args, Kind};
use crate::BoxError;

pub(crate) struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    /// Starts the server of `kind` and waits for its address.
    pub(crate) fn start(kind: Kind, args: &Args) -> Result<(Self, SocketAddr), BoxError> {
        let mut command = Command::new(std::env::current_exe()?);
        if let Some(threads) = args.server_threads {
            command
                .args(["--server-threads", &threads.to_string()])
                .env("ASYNC_STD_THREAD_COUNT", threads.to_string())
                .env("SMOL_THREADS", threads.to_string());
        }
        if let Some(limit) = args.socket_rate_limit {
            let limit = limit.map_or_else(|| "none".to_owned(), |n| n.to_string());
            command.args(["--socket-rate-limit", &limit]);
        }
        if args.alloc_stats {
            command.arg("--alloc-stats");
        }
        let mut child = command
            .args(["--mode", args.mode.name()])
            .args(["--serve", kind.name(args.mode)])
            .args(["--rate", &args.rate.to_string()])
            .args(["--payload", &args.payload.to_string()])
            .args(["--bare-read-buffer", &args.bare_read_buffer.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no child stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        let mut server = ServerProcess {
            child,
            stdin,
            stdout,
        };
        let line = server.read_line()?;
        let addr = line
            .strip_prefix("ADDR ")
            .ok_or(format!("unexpected server output {line:?}"))?
            .parse()?;
        Ok((server, addr))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn read_line(&mut self) -> Result<String, BoxError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("server process exited".into());
        }
        Ok(line.trim().to_owned())
    }

    pub(crate) fn send(&mut self, line: &str) -> Result<(), BoxError> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// The server's live allocations now (with `--alloc-stats`).
    pub(crate) fn allocs(&mut self) -> Result<Snapshot, BoxError> {
        self.send("ALLOCS")?;
        let line = self.read_line()?;
        line.strip_prefix("ALLOCS ")
            .and_then(Snapshot::parse)
            .ok_or_else(|| format!("unexpected server output {line:?}").into())
    }

    /// Asks the server to quit; kills it after 3 s.
    pub(crate) fn stop(mut self) {
        let _ = self.send("QUIT");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
