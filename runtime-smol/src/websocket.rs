//! Websocket carriers on smol, over async-tungstenite (feature `websocket`).
//!
//! ```no_run
//! use tbone_dispatch_smol::{websocket, MemoryChannel, SocketOptions};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         let pubsub = MemoryChannel::named("pubsub")?;
//!         pubsub.kickoff()?;
//!         let listener = smol::net::TcpListener::bind("127.0.0.1:8000").await?;
//!         loop {
//!             let (tcp, _) = listener.accept().await?;
//!             let pubsub = pubsub.clone();
//!             smol::spawn(async move {
//!                 let options = SocketOptions::new(["resource_create"]);
//!                 let _ = websocket::accept_and_serve_stream(tcp, &pubsub, options).await;
//!             })
//!             .detach();
//!         }
//!     })
//! }
//! ```

use crate::Smol;

tbone_dispatch::websocket_glue!(Smol);
