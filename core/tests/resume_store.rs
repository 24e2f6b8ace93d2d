//! `Channel::resume` from a backend's store, stepped by hand with
//! `ManualRuntime` and a scripted backend: deliveries that happen while
//! the store is read, and a channel that stops meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::{
    Backend, BackendError, Carrier, CarrierConfig, Channel, ChannelBuilder, Event, EventStream,
    Frame, HistoryLimits, Position, Resumed, Stored, SubscribeError,
};

/// A backend that stores every event under the position `p<n>` and
/// delivers it; `stored_after` takes its snapshot of the store, then waits
/// for the gate when one is set (a read that finished before whatever is
/// delivered meanwhile).
#[derive(Default)]
struct Scripted {
    stream: Mutex<Option<mpsc::UnboundedSender<Event>>>,
    store: Mutex<Vec<Event>>,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Backend for Scripted {
    async fn publish(&self, event: Event) -> Result<(), BackendError> {
        let event = {
            let mut store = self.store.lock().unwrap();
            let position = Position::new(&format!("p{}", store.len() + 1)).unwrap();
            let event = event.with_position(position);
            store.push(event.clone());
            event
        };
        let stream = self.stream.lock().unwrap();
        stream
            .as_ref()
            .expect("kicked off")
            .unbounded_send(event)
            .unwrap();
        Ok(())
    }

    fn consume(&self) -> Result<EventStream, BackendError> {
        let (tx, rx) = mpsc::unbounded();
        *self.stream.lock().unwrap() = Some(tx);
        Ok(rx.boxed())
    }

    async fn stored_after(&self, after: &Position) -> Result<Option<Stored>, BackendError> {
        let snapshot: Vec<Event> = self.store.lock().unwrap().clone();
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        let Some(at) = snapshot.iter().position(|e| e.position() == Some(after)) else {
            return Ok(None);
        };
        let mut stored = Stored::after(after.clone(), true);
        for event in &snapshot[at + 1..] {
            stored.push(event.clone(), true);
        }
        Ok(Some(stored))
    }
}

type Scripts = Channel<Scripted, ManualRuntime>;

fn channel(runtime: &ManualRuntime, name: &str) -> Scripts {
    let channel = ChannelBuilder::new(format!("core-resume-store-{name}"))
        .history(HistoryLimits::default().events(2))
        .open(runtime.clone(), |_| Scripted::default())
        .unwrap();
    channel.kickoff().unwrap();
    channel
}

fn publish(runtime: &ManualRuntime, channel: &Scripts, numbers: std::ops::RangeInclusive<u64>) {
    for n in numbers {
        runtime.run(channel.publish("tick", &n)).unwrap().unwrap();
    }
    runtime.run_until_stalled();
}

fn data(runtime: &ManualRuntime, client: &mut mpsc::UnboundedReceiver<Frame>) -> Vec<u64> {
    runtime.run_until_stalled();
    let mut out = Vec::new();
    while let Ok(frame) = client.try_recv() {
        let value: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
        out.push(value["payload"]["data"].as_u64().unwrap());
    }
    out
}

/// Events 6 and 7 are delivered after the store was read (2 to 5) and
/// before the client joins, and the history (2 events) no longer reaches
/// back to 5: the seam cannot be told from that read, so the channel reads
/// again, and the client gets 2 to 7 once each, then 8 live.
#[test]
fn deliveries_while_the_store_is_read_are_neither_lost_nor_repeated() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "seam");
    publish(&runtime, &channel, 1..=5);
    let (gate, opened) = oneshot::channel();
    *channel.backend().gate.lock().unwrap() = Some(opened);
    let (sink, mut client) = mpsc::unbounded::<Frame>();
    let carrier = Carrier::new(&runtime, sink, CarrierConfig::default()).unwrap();

    let mut resuming = Box::pin(channel.resume(&["tick"], &carrier, "p1"));
    assert!(
        runtime.run_for(resuming.as_mut()).is_none(),
        "reading the store"
    );
    publish(&runtime, &channel, 6..=7);
    gate.send(()).unwrap();
    assert!(
        runtime.run_for(resuming.as_mut()).is_none(),
        "the first read cannot meet the live stream: it waits to read again"
    );
    runtime.advance(Duration::from_millis(50));
    let resumed = runtime.run_for(resuming.as_mut()).expect("read again");
    assert_eq!(resumed.unwrap(), Resumed::Replayed { events: 6 });
    publish(&runtime, &channel, 8..=8);
    assert_eq!(data(&runtime, &mut client), [2, 3, 4, 5, 6, 7, 8]);
}

/// A channel that stops while a client's missed events are read does not
/// take the client afterwards.
#[test]
fn a_channel_stopped_during_the_read_refuses_the_client() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "stopped");
    publish(&runtime, &channel, 1..=5);
    let (gate, opened) = oneshot::channel();
    *channel.backend().gate.lock().unwrap() = Some(opened);
    let (sink, _client) = mpsc::unbounded::<Frame>();
    let carrier = Carrier::new(&runtime, sink, CarrierConfig::default()).unwrap();

    let mut resuming = Box::pin(channel.resume(&["tick"], &carrier, "p1"));
    assert!(
        runtime.run_for(resuming.as_mut()).is_none(),
        "reading the store"
    );
    runtime.run(channel.stop()).expect("stopped");
    gate.send(()).unwrap();
    let resumed = runtime.run_for(resuming.as_mut()).expect("answered");
    assert!(
        matches!(resumed, Err(SubscribeError::Stopped { .. })),
        "{resumed:?}"
    );
    assert_eq!(channel.subscriber_count("tick"), 0);
}
