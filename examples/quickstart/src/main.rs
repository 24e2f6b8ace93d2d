//! The quickstart: a model write sends a signal, a receiver publishes a
//! channel event, and a carrier delivers TBone's frame to a "browser".
//!
//! Run it with `cargo run -p tbone-dispatch-quickstart`.

use std::error::Error;

use futures::StreamExt;
use serde::Serialize;
use tbone_dispatch_tokio::{spawn, Carrier, Frame, MemoryChannel, Sender, Signal};

/// The sender: the model class whose instances were saved.
struct Entry;

/// The signal's arguments (TBone's `**kwargs`).
#[derive(Clone, Serialize)]
struct PostSave {
    id: u32,
    text: String,
    created: bool,
}

/// Declared once, usable from anywhere.
static POST_SAVE: Signal<PostSave> = Signal::new();

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The channel is a process-wide singleton: any component can open it.
    let pubsub = MemoryChannel::named("pubsub")?;
    pubsub.kickoff()?;

    // A receiver that turns saves into REST-like channel events.
    POST_SAVE.connect_async(
        |_sender, saved| async move {
            let event = if saved.created {
                "resource_create"
            } else {
                "resource_update"
            };
            if let Ok(pubsub) = MemoryChannel::named("pubsub") {
                if let Err(error) = pubsub.publish(event, &*saved).await {
                    eprintln!("publish failed: {error}");
                }
            }
        },
        Sender::of::<Entry>(),
    );

    // A websocket stand-in: any Sink<Frame> becomes a carrier.
    let (socket, mut browser) = futures::channel::mpsc::unbounded::<Frame>();
    let carrier = Carrier::from_sink(socket)?;
    pubsub.subscribe("resource_create", &carrier)?;
    pubsub.subscribe("resource_update", &carrier)?;

    // Awaited send...
    POST_SAVE
        .send(
            Sender::of::<Entry>(),
            PostSave {
                id: 1,
                text: "hello".into(),
                created: true,
            },
        )
        .await;
    // ...and fire-and-forget, TBone's `ensure_future(signal.send(...))`.
    spawn(POST_SAVE.send(
        Sender::of::<Entry>(),
        PostSave {
            id: 1,
            text: "hello, world".into(),
            created: false,
        },
    ))?;

    for _ in 0..2 {
        match browser.next().await {
            Some(frame) => println!("browser received: {frame}"),
            None => return Err("the carrier closed early".into()),
        }
    }
    let stats = pubsub.stats();
    println!(
        "channel `pubsub`: {} published, {} encoded, {} frames queued",
        stats.published, stats.encoded, stats.queued
    );
    pubsub.stop().await;
    Ok(())
}
