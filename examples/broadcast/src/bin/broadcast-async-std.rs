//! A minimal websocket broadcast server on async-std (deprecated upstream, still supported): every client connected to
//! `ws://127.0.0.1:8001/` receives a `tick` event every second, in TBone's
//! frame format, and may (un)subscribe to other events with control
//! messages. Run: `cargo run -p tbone-dispatch-broadcast --bin broadcast-async-std`.

use std::time::Duration;

use tbone_dispatch_async_std::{websocket, MemoryChannel, SocketOptions};
use tbone_dispatch_broadcast::Args;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse()?;
    async_std::task::block_on(async {
        let pubsub = MemoryChannel::named("broadcast")?;
        pubsub.kickoff()?;
        let listener = async_std::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        println!("listening on ws://{}/", listener.local_addr()?);
        if args.interval_ms > 0 {
            let ticker = pubsub.clone();
            async_std::task::spawn(async move {
                for n in 0u64.. {
                    async_std::task::sleep(Duration::from_millis(args.interval_ms)).await;
                    if ticker
                        .publish("tick", &serde_json::json!({ "n": n }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        loop {
            let (tcp, _) = listener.accept().await?;
            let pubsub = pubsub.clone();
            async_std::task::spawn(async move {
                let options = SocketOptions::new(["tick"]).control_messages(true);
                let _ = websocket::accept_and_serve(tcp, &pubsub, options).await;
            });
        }
    })
}
