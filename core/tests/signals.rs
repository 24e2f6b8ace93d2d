//! Signal rules, tested with no runtime at all: `futures::executor` only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::executor::block_on;
use tbone_dispatch::{Receiver, ReceiverError, ReceiverKey, Sender, Senders, Signal};

struct Entry;
struct User;

#[derive(Debug)]
struct Saved {
    id: u32,
}

#[test]
fn receivers_are_limited_to_their_sender_type() {
    let signal: Signal<Saved, String> = Signal::new();
    signal.connect(
        |_, s: &Saved| format!("entry {}", s.id),
        Sender::of::<Entry>(),
    );
    signal.connect(|_, s: &Saved| format!("any {}", s.id), Senders::Any);

    assert_eq!(
        block_on(signal.send(Sender::of::<Entry>(), Saved { id: 1 })),
        vec!["entry 1", "any 1"]
    );
    assert_eq!(
        block_on(signal.send(Sender::of::<User>(), Saved { id: 2 })),
        vec!["any 2"]
    );
    assert!(signal.has_receivers_for(Sender::of::<User>()));
}

fn on_save(_: Sender, _: &Saved) -> u32 {
    1
}

#[test]
fn connecting_the_same_receiver_twice_is_a_no_op() {
    let signal: Signal<Saved, u32> = Signal::new();
    assert!(signal.connect(on_save, Sender::of::<Entry>()).is_new());
    assert!(!signal.connect(on_save, Sender::of::<Entry>()).is_new());
    // The same function for another sender is another connection.
    assert!(signal.connect(on_save, Sender::of::<User>()).is_new());
    assert_eq!(signal.receiver_count(), 2);
    assert_eq!(
        block_on(signal.send(Sender::of::<Entry>(), Saved { id: 0 })),
        vec![1]
    );

    // Capturing closures need a key to be recognised...
    let offset = 10;
    let add = move |_: Sender, s: &Saved| s.id + offset;
    signal.connect(add, Senders::Any);
    signal.connect(add, Senders::Any);
    assert_eq!(signal.receiver_count(), 4);
    // ...and with one they are.
    signal.connect_receiver(Receiver::sync(add).key("add"), Senders::Any);
    signal.connect_receiver(Receiver::sync(add).key("add"), Senders::Any);
    assert_eq!(signal.receiver_count(), 5);
    assert!(signal.disconnect(&ReceiverKey::from("add"), Senders::Any));
    assert!(!signal.disconnect(&ReceiverKey::from("add"), Senders::Any));
    assert_eq!(signal.receiver_count(), 4);
}

#[test]
fn guards_disconnect_on_drop_and_connections_do_not() {
    let signal: Signal<Saved> = Signal::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let guard = signal
        .connect(
            move |_, _: &Saved| {
                counted.fetch_add(1, Ordering::SeqCst);
            },
            Senders::Any,
        )
        .guard();
    let _kept = signal.connect(|_, _: &Saved| (), Senders::Any);
    block_on(signal.send(Sender::of::<Entry>(), Saved { id: 1 }));
    drop(guard);
    block_on(signal.send(Sender::of::<Entry>(), Saved { id: 2 }));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(signal.receiver_count(), 1);
}

#[test]
fn async_receivers_run_concurrently_and_reply_in_connection_order() {
    let signal: Signal<Saved, &'static str> = Signal::new();
    // The first receiver waits for the second: run one after the other,
    // this send would never finish.
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    signal.connect_async(
        move |_, _| {
            let rx = rx.lock().unwrap().take();
            async move {
                if let Some(rx) = rx {
                    rx.await.unwrap();
                }
                "first"
            }
        },
        Senders::Any,
    );
    signal.connect(|_, _: &Saved| "sync", Senders::Any);
    let tx = Arc::new(Mutex::new(Some(tx)));
    signal.connect_async(
        move |_, _| {
            let tx = tx.lock().unwrap().take();
            async move {
                if let Some(tx) = tx {
                    tx.send(()).unwrap();
                }
                "third"
            }
        },
        Senders::Any,
    );
    let replies = block_on(signal.send(Sender::of::<Entry>(), Saved { id: 1 }));
    assert_eq!(replies, vec!["first", "sync", "third"]);
}

#[test]
fn robust_send_isolates_panics_and_plain_send_propagates_them() {
    let signal: Signal<Saved, u32> = Signal::new();
    signal.connect(|_, s: &Saved| s.id, Senders::Any);
    signal.connect(
        |_, _: &Saved| -> u32 { panic!("sync receiver failed") },
        Senders::Any,
    );
    signal.connect_async(
        |_, _| async move {
            panic!("async receiver failed");
        },
        Senders::Any,
    );
    signal.connect_async(|_, s| async move { s.id * 2 }, Senders::Any);

    let results = block_on(signal.send_robust(Sender::of::<Entry>(), Saved { id: 21 }));
    assert_eq!(results.len(), 4);
    assert_eq!(*results[0].as_ref().unwrap(), 21);
    assert!(
        matches!(&results[1], Err(ReceiverError::Panicked { message, .. }) if message == "sync receiver failed")
    );
    assert!(
        matches!(&results[2], Err(ReceiverError::Panicked { message, .. }) if message == "async receiver failed")
    );
    assert_eq!(*results[3].as_ref().unwrap(), 42);

    let plain =
        std::panic::catch_unwind(|| block_on(signal.send(Sender::of::<Entry>(), Saved { id: 1 })));
    assert!(plain.is_err());
}

static RELOADED: Signal<Saved, usize> = Signal::new();

#[test]
fn connecting_during_a_send_affects_only_later_sends() {
    fn reconnects(_: Sender, _: &Saved) -> usize {
        // Connect another receiver and disconnect ourselves mid-send.
        RELOADED.connect(|_, _: &Saved| 2, Senders::Any);
        RELOADED.disconnect(&key_of_reconnects(), Senders::Any);
        1
    }
    fn key_of_reconnects() -> ReceiverKey {
        RELOADED.connect(reconnects, Senders::Any).key().clone()
    }
    let key = key_of_reconnects();
    RELOADED.connect(|_, _: &Saved| 3, Senders::Any);
    let first = block_on(RELOADED.send(Sender::of::<Entry>(), Saved { id: 0 }));
    assert_eq!(first, vec![1, 3]);
    let second = block_on(RELOADED.send(Sender::of::<Entry>(), Saved { id: 0 }));
    assert!(
        !second.contains(&1),
        "the receiver disconnected itself: {second:?}"
    );
    assert!(second.contains(&2));
    assert!(!RELOADED.disconnect(&key, Senders::Any));
}

#[test]
fn a_send_with_no_receivers_returns_nothing() {
    let signal: Signal<Saved, u8> = Signal::new();
    assert!(block_on(signal.send(Sender::of::<Entry>(), Saved { id: 0 })).is_empty());
    assert!(block_on(signal.send_robust(Sender::of::<Entry>(), Saved { id: 0 })).is_empty());
}
