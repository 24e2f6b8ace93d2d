//! A second OS process for the two-process MongoChannel test: opens the
//! channel on the given database and collection, prints `ready`, publishes
//! `child-0..N`, then prints the data of every event it receives until it
//! has `expect` of them.
//!
//! Usage: mongo_peer URI DATABASE COLLECTION PUBLISH EXPECT

use std::io::Write;

use futures::StreamExt;
use tbone_dispatch_tokio::mongo::{self, MongoOptions};
use tbone_dispatch_tokio::{Carrier, Frame, MongoChannel};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, uri, database, collection, publish, expect] = args.as_slice() else {
        return Err("usage: mongo_peer URI DATABASE COLLECTION PUBLISH EXPECT".into());
    };
    let (publish, expect): (usize, usize) = (publish.parse()?, expect.parse()?);
    let db = mongo::connect(uri, database).await?;
    let channel: MongoChannel = mongo::builder("peer", &db)
        .options(MongoOptions::default().collection(collection.as_str()))
        .open()?;
    channel.kickoff()?;
    let (socket, mut frames) = futures::channel::mpsc::unbounded::<Frame>();
    channel.subscribe("e", &Carrier::from_sink(socket)?)?;

    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    for i in 0..publish {
        channel.publish("e", &format!("child-{i}")).await?;
    }
    for _ in 0..expect {
        let frame = frames.next().await.ok_or("carrier closed")?;
        let value: serde_json::Value = serde_json::from_str(frame.as_str())?;
        writeln!(out, "{}", value["payload"]["data"])?;
        out.flush()?;
    }
    Ok(())
}
