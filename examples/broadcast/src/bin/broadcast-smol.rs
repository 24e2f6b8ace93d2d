//! A minimal websocket broadcast server on smol: every client connected to
//! `ws://127.0.0.1:8001/` receives a `tick` event every second, in TBone's
//! frame format, and may (un)subscribe to other events with control
//! messages. Run: `cargo run -p tbone-dispatch-broadcast --bin broadcast-smol`.

use std::time::Duration;

use tbone_dispatch_broadcast::Args;
use tbone_dispatch_smol::{websocket, MemoryChannel, SocketOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse()?;
    smol::block_on(async {
        let pubsub = MemoryChannel::named("broadcast")?;
        pubsub.kickoff()?;
        let listener = smol::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        println!("listening on ws://{}/", listener.local_addr()?);
        if args.interval_ms > 0 {
            let ticker = pubsub.clone();
            smol::spawn(async move {
                for n in 0u64.. {
                    smol::Timer::after(Duration::from_millis(args.interval_ms)).await;
                    if ticker
                        .publish("tick", &serde_json::json!({ "n": n }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .detach();
        }
        loop {
            let (tcp, _) = listener.accept().await?;
            let pubsub = pubsub.clone();
            smol::spawn(async move {
                let options = SocketOptions::new(["tick"]).control_messages(true);
                let _ = websocket::accept_and_serve(tcp, &pubsub, options).await;
            })
            .detach();
        }
    })
}
