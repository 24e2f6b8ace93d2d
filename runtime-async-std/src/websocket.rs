//! Websocket carriers on async-std, over async-tungstenite (feature
//! `websocket`).
//!
//! ```no_run
//! use tbone_dispatch_async_std::{websocket, MemoryChannel, SocketOptions};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     async_std::task::block_on(async {
//!         let pubsub = MemoryChannel::named("pubsub")?;
//!         pubsub.kickoff()?;
//!         let listener = async_std::net::TcpListener::bind("127.0.0.1:8000").await?;
//!         loop {
//!             let (tcp, _) = listener.accept().await?;
//!             let pubsub = pubsub.clone();
//!             async_std::task::spawn(async move {
//!                 let options = SocketOptions::new(["resource_create"]);
//!                 let _ = websocket::accept_and_serve_stream(tcp, &pubsub, options).await;
//!             });
//!         }
//!     })
//! }
//! ```

use crate::AsyncStd;

tbone_dispatch::websocket_glue!(AsyncStd);
