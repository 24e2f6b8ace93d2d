//! What the two broadcast servers share: their command line.

/// `--port N` (default 8001) and `--interval-ms N` (default 1000; 0 = no
/// ticker, events come only from elsewhere).
pub struct Args {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Milliseconds between `tick` events.
    pub interval_ms: u64,
}

impl Args {
    /// Parses the process arguments, or explains what is wrong.
    pub fn parse() -> Result<Self, String> {
        let mut args = Args {
            port: 8001,
            interval_ms: 1000,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--port" => args.port = value.parse().map_err(|e| format!("--port: {e}"))?,
                "--interval-ms" => {
                    args.interval_ms = value.parse().map_err(|e| format!("--interval-ms: {e}"))?
                }
                other => {
                    return Err(format!(
                        "unknown argument {other}; use --port N --interval-ms N"
                    ))
                }
            }
        }
        Ok(args)
    }
}
