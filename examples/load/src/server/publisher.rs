//! The fan-out publisher: events at a fixed rate, after the start signal.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::process::wall_ns;

pub(super) struct Publisher {
    pub(super) rate: f64,
    pub(super) payload: usize,
    pub(super) start: futures::channel::oneshot::Receiver<f64>,
}

impl Publisher {
    /// Waits for the start signal, then calls `publish` `rate` times per
    /// second for the requested seconds (on a fixed schedule, not drifting),
    /// then prints `DONE <count>`.
    pub(super) async fn run<S, SF, P, PF>(self, sleep: S, mut publish: P)
    where
        S: Fn(Duration) -> SF,
        SF: std::future::Future<Output = ()>,
        P: FnMut(serde_json::Value) -> PF,
        PF: std::future::Future<Output = bool>,
    {
        let Ok(seconds) = self.start.await else {
            return;
        };
        let pad = "x".repeat(self.payload);
        let period = 1.0 / self.rate;
        let begin = Instant::now();
        let mut seq = 0u64;
        loop {
            let offset = seq as f64 * period;
            if offset >= seconds {
                break;
            }
            let due = begin + Duration::from_secs_f64(offset);
            let now = Instant::now();
            if due > now {
                sleep(due - now).await;
            }
            let data = serde_json::json!({ "seq": seq, "t": wall_ns(), "pad": pad });
            if !publish(data).await {
                eprintln!("tbone-load server: publish failed");
                break;
            }
            seq += 1;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "DONE {seq}");
        let _ = out.flush();
    }
}
