//! `tbone-dispatch-demo`: the full-duplex chat server. See `--help`.

use std::process::ExitCode;

use tbone_dispatch_demo::{shutdown_signal, Command, Server, USAGE};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Command::parse(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr: stdout carries only the `listening on` line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, port = config.port, "cannot listen on 127.0.0.1");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::build(&config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(address) => println!("listening on http://{address}"),
        Err(error) => tracing::warn!(%error, "cannot read the bound address"),
    }
    let mode = match (&config.redis, &config.mongo) {
        (Some(_), Some(_)) => "Redis events, MongoDB entries",
        (Some(_), None) => "Redis events, entries in memory",
        (None, Some(_)) => "MongoDB",
        (None, None) => "in memory",
    };
    tracing::info!(mode, channel = %config.channel, "serving");
    match server.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the server failed");
            ExitCode::FAILURE
        }
    }
}
