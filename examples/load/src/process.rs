//! Measuring processes through /proc: memory, CPU time, the clock both
//! processes share, the open-files limit.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds since the Unix epoch (shared by both processes).
pub(crate) fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// VmRSS of a process, in KiB.
pub(crate) fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in seconds (assumes CLK_TCK = 100, the
/// Linux default).
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The soft open-files limit of this process.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// Fails if `clients` connections would not fit this process's open-files
/// limit.
pub(crate) fn check_open_files(clients: usize) -> Result<(), String> {
    if let Some(limit) = open_files_limit() {
        if (clients as u64).saturating_add(64) > limit {
            return Err(format!(
                "{clients} clients need about {} open files per process but `ulimit -n` is {limit}; \
                 raise it first (e.g. `ulimit -n {}`) or use fewer clients",
                clients + 64,
                (clients + 1024).next_power_of_two()
            ));
        }
    }
    Ok(())
}

/// CPU seconds of this process and of the server, sampled together.
#[derive(Clone, Copy)]
pub(crate) struct CpuSample {
    client: f64,
    server: f64,
}

impl CpuSample {
    pub(crate) fn take(server_pid: u32) -> Self {
        CpuSample {
            client: cpu_seconds("self").unwrap_or(0.0),
            server: cpu_seconds(&server_pid.to_string()).unwrap_or(0.0),
        }
    }

    /// (client, server) CPU seconds since `earlier`.
    pub(crate) fn since(self, earlier: CpuSample) -> (f64, f64) {
        (self.client - earlier.client, self.server - earlier.server)
    }
}
