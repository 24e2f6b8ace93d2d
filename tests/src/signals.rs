//! Rules of signals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use tbone_dispatch::{Receiver, ReceiverError, ReceiverKey, Sender, Senders, Signal};

use crate::{wait, TestRuntime};

struct App;
struct OtherApp;

/// A signal declared as a `static`, with a typed argument struct and typed
/// responses.
pub async fn static_signal_has_typed_args_and_responses<R: TestRuntime>() {
    struct PostInit {
        workers: usize,
        label: &'static str,
    }
    static POST_INIT: Signal<PostInit, (String, usize)> = Signal::new();

    fn on_init(sender: Sender, args: &PostInit) -> (String, usize) {
        (
            format!("{} {}", sender.name(), args.label),
            args.workers * 2,
        )
    }

    assert_eq!(POST_INIT.receiver_count(), 0);
    let _ = POST_INIT.connect(on_init, Senders::Any);
    let _ = POST_INIT.connect_async(
        |_sender, args: Arc<PostInit>| async move { (args.label.to_uppercase(), args.workers + 1) },
        Senders::Any,
    );
    let replies: Vec<(String, usize)> = wait::<R, _>(
        "send of a static signal",
        POST_INIT.send(
            Sender::of::<App>(),
            PostInit {
                workers: 4,
                label: "init",
            },
        ),
    )
    .await;
    assert_eq!(replies.len(), 2, "one response per receiver");
    assert!(
        replies[0].0.ends_with("App init"),
        "sender and args reach the receiver: {:?}",
        replies[0]
    );
    assert_eq!(replies[0].1, 8);
    assert_eq!(replies[1], ("INIT".to_string(), 5));
}

/// A receiver connected for one sender is called only for that sender; an
/// any-sender receiver for all.
pub async fn connect_limited_to_sender_and_any_sender<R: TestRuntime>() {
    static SAVED: Signal<u32, &'static str> = Signal::new();
    static APP_CALLS: AtomicUsize = AtomicUsize::new(0);
    static ANY_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn only_app(_: Sender, _: &u32) -> &'static str {
        APP_CALLS.fetch_add(1, Ordering::SeqCst);
        "only_app"
    }
    fn any(_: Sender, _: &u32) -> &'static str {
        ANY_CALLS.fetch_add(1, Ordering::SeqCst);
        "any"
    }

    let _ = SAVED.connect(only_app, Sender::of::<App>());
    let any_connection = SAVED.connect(any, Senders::Any);
    assert!(SAVED.has_receivers_for(Sender::of::<App>()));
    assert!(SAVED.has_receivers_for(Sender::of::<OtherApp>()));

    let replies = wait::<R, _>("send from App", SAVED.send(Sender::of::<App>(), 1)).await;
    assert_eq!(replies, vec!["only_app", "any"]);
    let replies = wait::<R, _>(
        "send from OtherApp",
        SAVED.send(Sender::of::<OtherApp>(), 2),
    )
    .await;
    assert_eq!(
        replies,
        vec!["any"],
        "a receiver for App must not hear OtherApp"
    );
    assert_eq!(APP_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(ANY_CALLS.load(Ordering::SeqCst), 2);

    // With only the App receiver left, OtherApp reaches nobody.
    assert!(any_connection.disconnect());
    assert!(!SAVED.has_receivers_for(Sender::of::<OtherApp>()));
    let replies = wait::<R, _>(
        "send from OtherApp",
        SAVED.send(Sender::of::<OtherApp>(), 3),
    )
    .await;
    assert!(replies.is_empty());
    assert_eq!(APP_CALLS.load(Ordering::SeqCst), 1);
}

/// Connecting the same function item twice (same senders) is a no-op.
pub async fn same_fn_item_connects_once<R: TestRuntime>() {
    static SIG: Signal<(), u8> = Signal::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counted(_: Sender, _: &()) -> u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        1
    }

    let first = SIG.connect(counted, Senders::Any);
    let again = SIG.connect(counted, Senders::Any);
    assert!(first.is_new());
    assert!(
        !again.is_new(),
        "second connect of the same fn must be a no-op"
    );
    assert_eq!(first.key(), again.key());
    assert_eq!(SIG.receiver_count(), 1);

    let replies = wait::<R, _>("send", SIG.send(Sender::of::<App>(), ())).await;
    assert_eq!(replies, vec![1]);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "the receiver ran once");

    // The same function for a different sender is a different connection.
    let other = SIG.connect(counted, Sender::of::<App>());
    assert!(other.is_new());
    assert_eq!(SIG.receiver_count(), 2);
}

/// Closures (even capturing ones) connected under the same explicit key are
/// connected once.
pub async fn closures_with_same_key_connect_once<R: TestRuntime>() {
    static SIG: Signal<u32, u32> = Signal::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let tally = {
        let calls = calls.clone();
        move |_: Sender, n: &u32| {
            calls.fetch_add(1, Ordering::SeqCst);
            *n
        }
    };

    let first = SIG.connect_receiver(Receiver::sync(tally.clone()).key("tally"), Senders::Any);
    let again = SIG.connect_receiver(Receiver::sync(tally).key("tally"), Senders::Any);
    // A different closure under the same key is the same receiver too
    // (Django's dispatch_uid).
    let other = SIG.connect_receiver(
        Receiver::sync(|_: Sender, n: &u32| n + 100).key(String::from("tally")),
        Senders::Any,
    );
    assert!(first.is_new());
    assert!(!again.is_new());
    assert!(!other.is_new());
    assert_eq!(SIG.receiver_count(), 1);

    let replies = wait::<R, _>("send", SIG.send(Sender::of::<App>(), 7)).await;
    assert_eq!(replies, vec![7], "the first receiver under the key is kept");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Capturing closures without a key have no identity: each connect adds a
/// receiver.
pub async fn capturing_closures_without_key_are_distinct<R: TestRuntime>() {
    static SIG: Signal<(), usize> = Signal::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let tally = {
        let calls = calls.clone();
        move |_: Sender, _: &()| calls.fetch_add(1, Ordering::SeqCst)
    };

    let a = SIG.connect(tally.clone(), Senders::Any);
    let b = SIG.connect(tally, Senders::Any);
    assert!(a.is_new());
    assert!(b.is_new());
    assert_ne!(a.key(), b.key());
    assert_eq!(SIG.receiver_count(), 2);

    let replies = wait::<R, _>("send", SIG.send(Sender::of::<App>(), ())).await;
    assert_eq!(replies.len(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// `disconnect(key, senders)` removes exactly that receiver.
pub async fn disconnect_by_key<R: TestRuntime>() {
    static SIG: Signal<(), &'static str> = Signal::new();

    fn keep(_: Sender, _: &()) -> &'static str {
        "keep"
    }

    let _ = SIG.connect_receiver(
        Receiver::sync(|_: Sender, _: &()| "audit").key("audit"),
        Senders::Any,
    );
    let _ = SIG.connect(keep, Senders::Any);
    let limited = SIG.connect_receiver(
        Receiver::sync(|_: Sender, _: &()| "limited").key("limited"),
        Sender::of::<App>(),
    );
    assert_eq!(SIG.receiver_count(), 3);

    // Same key, other senders: not that receiver.
    assert!(!SIG.disconnect(&ReceiverKey::from("limited"), Senders::Any));
    assert!(SIG.disconnect(&ReceiverKey::from("audit"), Senders::Any));
    assert!(
        !SIG.disconnect(&ReceiverKey::from("audit"), Senders::Any),
        "already gone"
    );
    assert_eq!(SIG.receiver_count(), 2);
    let replies = wait::<R, _>("send", SIG.send(Sender::of::<App>(), ())).await;
    assert_eq!(replies, vec!["keep", "limited"]);

    // Through the Connection.
    assert!(limited.disconnect());
    let replies = wait::<R, _>("send", SIG.send(Sender::of::<App>(), ())).await;
    assert_eq!(replies, vec!["keep"]);
}

/// A guard disconnects its receiver when dropped; `forget` keeps it.
pub async fn guard_disconnects_on_drop<R: TestRuntime>() {
    static SIG: Signal<(), &'static str> = Signal::new();

    let guard = SIG
        .connect(|_: Sender, _: &()| "guarded", Senders::Any)
        .guard();
    let replies = wait::<R, _>("send", SIG.send(Sender::of::<App>(), ())).await;
    assert_eq!(replies, vec!["guarded"]);
    drop(guard);
    assert_eq!(SIG.receiver_count(), 0);
    let replies = wait::<R, _>("send", SIG.send(Sender::of::<App>(), ())).await;
    assert!(
        replies.is_empty(),
        "the guarded receiver must be gone: {replies:?}"
    );

    SIG.connect(|_: Sender, _: &()| "kept", Senders::Any)
        .guard()
        .forget();
    assert_eq!(SIG.receiver_count(), 1);
}

/// Responses come back in connection order, while async receivers run
/// concurrently: here each async receiver waits for the one connected after
/// it, so they complete in reverse order, and running them one after the
/// other would deadlock.
pub async fn responses_in_connection_order_async_receivers_run_concurrently<R: TestRuntime>() {
    type Gate = Arc<Mutex<Option<oneshot::Sender<()>>>>;
    type Wait = Arc<Mutex<Option<oneshot::Receiver<()>>>>;
    static SIG: Signal<u32, u32> = Signal::new();

    let finished: Arc<Mutex<Vec<u32>>> = Arc::default();
    // gate_n is opened by async receiver n+1, waited on by receiver n.
    let (open_1, wait_1) = oneshot::channel::<()>();
    let (open_2, wait_2) = oneshot::channel::<()>();
    let open_1: Gate = Arc::new(Mutex::new(Some(open_1)));
    let open_2: Gate = Arc::new(Mutex::new(Some(open_2)));
    let wait_1: Wait = Arc::new(Mutex::new(Some(wait_1)));
    let wait_2: Wait = Arc::new(Mutex::new(Some(wait_2)));

    let async_receiver =
        |id: u32, waits: Option<Wait>, opens: Option<Gate>, finished: Arc<Mutex<Vec<u32>>>| {
            move |_: Sender, n: Arc<u32>| {
                let waits = waits.as_ref().and_then(|w| w.lock().expect("lock").take());
                let opens = opens.as_ref().and_then(|o| o.lock().expect("lock").take());
                let finished = finished.clone();
                async move {
                    if let Some(waits) = waits {
                        waits.await.expect("the next receiver opens the gate");
                    }
                    finished.lock().expect("lock").push(id);
                    if let Some(opens) = opens {
                        let _ = opens.send(());
                    }
                    *n * 10 + id
                }
            }
        };

    let _ = SIG.connect(|_: Sender, n: &u32| *n * 10, Senders::Any);
    let _ = SIG.connect_async(
        async_receiver(1, Some(wait_1), None, finished.clone()),
        Senders::Any,
    );
    let _ = SIG.connect(|_: Sender, n: &u32| *n * 10 + 5, Senders::Any);
    let _ = SIG.connect_async(
        async_receiver(2, Some(wait_2), Some(open_1), finished.clone()),
        Senders::Any,
    );
    let _ = SIG.connect_async(
        async_receiver(3, None, Some(open_2), finished.clone()),
        Senders::Any,
    );

    let replies = wait::<R, _>(
        "a send whose async receivers wait on each other (sequential execution would deadlock)",
        SIG.send(Sender::of::<App>(), 4),
    )
    .await;
    assert_eq!(
        replies,
        vec![40, 41, 45, 42, 43],
        "responses in connection order"
    );
    assert_eq!(
        *finished.lock().expect("lock"),
        vec![3, 2, 1],
        "async receivers completed in reverse order"
    );
}

/// `send_robust`: a receiver that panics (sync, or inside its future) yields
/// `Err(Panicked)` and every other receiver still answers; the sender is
/// unaffected and the signal keeps working.
pub async fn send_robust_isolates_panicking_receivers<R: TestRuntime>() {
    static SIG: Signal<i32, i32> = Signal::new();

    let _ = SIG.connect(|_: Sender, n: &i32| n + 1, Senders::Any);
    let _ = SIG.connect_receiver(
        Receiver::sync(|_: Sender, _: &i32| -> i32 { panic!("expected test panic: sync boom") })
            .key("sync-boom"),
        Senders::Any,
    );
    let _ = SIG.connect_async(
        |_: Sender, n: Arc<i32>| async move { *n * 10 },
        Senders::Any,
    );
    let _ = SIG.connect_receiver(
        Receiver::future(|_: Sender, n: Arc<i32>| async move {
            if *n > 0 {
                panic!("expected test panic: async boom");
            }
            0
        })
        .key("async-boom"),
        Senders::Any,
    );
    let _ = SIG.connect(|_: Sender, n: &i32| n - 1, Senders::Any);

    let results = wait::<R, _>("send_robust", SIG.send_robust(Sender::of::<App>(), 4)).await;
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().ok(), Some(&5));
    match &results[1] {
        Err(ReceiverError::Panicked { key, message }) => {
            assert_eq!(key, &ReceiverKey::from("sync-boom"));
            assert_eq!(message, "expected test panic: sync boom");
        }
        other => panic!("sync panic should be Err(Panicked), got {other:?}"),
    }
    assert_eq!(results[2].as_ref().ok(), Some(&40));
    match &results[3] {
        Err(ReceiverError::Panicked { key, message }) => {
            assert_eq!(key, &ReceiverKey::from("async-boom"));
            assert_eq!(message, "expected test panic: async boom");
        }
        other => panic!("async panic should be Err(Panicked), got {other:?}"),
    }
    assert_eq!(results[4].as_ref().ok(), Some(&3));

    // Still connected and still working.
    assert_eq!(SIG.receiver_count(), 5);
    let results = wait::<R, _>(
        "second send_robust",
        SIG.send_robust(Sender::of::<App>(), -1),
    )
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert_eq!(results[3].as_ref().ok(), Some(&0));
}

/// `send_robust_timeout`: a receiver that never finishes is abandoned with
/// `TimedOut`; the others answer.
pub async fn send_robust_timeout_abandons_stuck_receiver<R: TestRuntime>() {
    static SIG: Signal<u32, u32> = Signal::new();
    let timeout = Duration::from_millis(50);

    let _ = SIG.connect(|_: Sender, n: &u32| n + 1, Senders::Any);
    let _ = SIG.connect_receiver(
        Receiver::future(|_: Sender, _: Arc<u32>| futures::future::pending::<u32>()).key("stuck"),
        Senders::Any,
    );
    let _ = SIG.connect_async(|_: Sender, n: Arc<u32>| async move { *n + 2 }, Senders::Any);

    let results = wait::<R, _>(
        "send_robust_timeout with a receiver that never finishes",
        SIG.send_robust_timeout(&R::default(), timeout, Sender::of::<App>(), 1),
    )
    .await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().ok(), Some(&2));
    match &results[1] {
        Err(ReceiverError::TimedOut {
            key,
            timeout: missed,
        }) => {
            assert_eq!(key, &ReceiverKey::from("stuck"));
            assert_eq!(*missed, timeout);
        }
        other => panic!("a stuck receiver should be Err(TimedOut), got {other:?}"),
    }
    assert_eq!(results[2].as_ref().ok(), Some(&3));
}

/// Fire-and-forget with the runtime crate's `spawn(SIGNAL.send(..))`: the
/// receivers run in the background.
pub async fn fire_and_forget_spawn_runs_receivers<R: TestRuntime>() {
    static SIG: Signal<u32> = Signal::new();
    let (seen, mut seen_rx) = mpsc::unbounded::<(&'static str, u32)>();

    let sync_seen = seen.clone();
    let _ = SIG.connect(
        move |_: Sender, n: &u32| {
            let _ = sync_seen.unbounded_send(("sync", *n));
        },
        Sender::of::<App>(),
    );
    let _ = SIG.connect_async(
        move |_: Sender, n: Arc<u32>| {
            let seen = seen.clone();
            async move {
                let _ = seen.unbounded_send(("async", *n));
            }
        },
        Senders::Any,
    );

    R::spawn_detached(SIG.send(Sender::of::<App>(), 9)).expect("spawn a send");
    let mut got = vec![
        wait::<R, _>("first receiver of a spawned send", seen_rx.next()).await,
        wait::<R, _>("second receiver of a spawned send", seen_rx.next()).await,
    ];
    got.sort();
    assert_eq!(got, vec![Some(("async", 9)), Some(("sync", 9))]);
}

/// A receiver may connect and disconnect receivers (of the same signal)
/// while a send is in flight: no deadlock, the send in flight keeps the
/// receivers it started with, the next send sees the change.
pub async fn connect_and_disconnect_inside_receiver_affect_only_next_send<R: TestRuntime>() {
    static SIG: Signal<(), &'static str> = Signal::new();

    fn mutate_sync(_: Sender, _: &()) -> &'static str {
        let _ = SIG.connect_receiver(
            Receiver::sync(|_: Sender, _: &()| "late").key("late"),
            Senders::Any,
        );
        SIG.disconnect(&ReceiverKey::from("victim"), Senders::Any);
        "mutate_sync"
    }

    let _ = SIG.connect(mutate_sync, Senders::Any);
    let _ = SIG.connect_receiver(
        Receiver::sync(|_: Sender, _: &()| "victim").key("victim"),
        Senders::Any,
    );
    let _ = SIG.connect_async(
        |_: Sender, _: Arc<()>| async {
            let _ = SIG.connect_receiver(
                Receiver::future(|_: Sender, _: Arc<()>| async { "late_async" }).key("late_async"),
                Senders::Any,
            );
            SIG.disconnect(&ReceiverKey::from("victim"), Senders::Any);
            "mutate_async"
        },
        Senders::Any,
    );

    // Run each send as its own task so that a deadlock fails the test
    // (timeout) instead of hanging the test thread.
    async fn send_in_task<R: TestRuntime>(what: &str) -> Vec<&'static str> {
        let (done, result) = oneshot::channel();
        R::default()
            .spawn(async move {
                let _ = done.send(SIG.send(Sender::of::<App>(), ()).await);
            })
            .expect("spawn");
        wait::<R, _>(what, result)
            .await
            .expect("the send task finished")
    }

    let first =
        send_in_task::<R>("a send whose receivers connect and disconnect (deadlock?)").await;
    assert_eq!(
        first,
        vec!["mutate_sync", "victim", "mutate_async"],
        "the send in flight keeps its receivers"
    );
    assert_eq!(SIG.receiver_count(), 4);

    let second = send_in_task::<R>("the next send").await;
    assert_eq!(
        second,
        vec!["mutate_sync", "mutate_async", "late", "late_async"]
    );
}
