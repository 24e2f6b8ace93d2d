//! Scenario 3, receiver faults: a signal whose receivers panic (before and
//! after an await), return errors, or never finish, sent many times
//! concurrently with `send_robust_timeout`. The sender and the healthy
//! receivers must not notice; every failure must come back as a typed
//! result; and nothing may leak, which is checked by counting live
//! arguments and abandoned receiver futures.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tbone_dispatch::{Receiver, ReceiverError, Sender, Signal};
use tbone_dispatch_tokio::Tokio;

use super::{rss_kib, Profile, Row};

/// Arguments of the signal; each one alive is counted, so a receiver (or
/// the signal) keeping arguments after a send shows up as a leak.
struct Args {
    n: u64,
    _live: Live,
}

/// Counts itself in a counter while alive.
struct Live(&'static AtomicI64);

impl Live {
    fn new(counter: &'static AtomicI64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Live(counter)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

static LIVE_ARGS: AtomicI64 = AtomicI64::new(0);
static LIVE_HANGING: AtomicI64 = AtomicI64::new(0);

/// The marker of panics this scenario causes on purpose (kept out of the
/// test output by a panic hook).
const INTENTIONAL: &str = "soak: intentional receiver panic";

type Response = Result<u64, String>;

/// One send: its argument, how long it took, and every receiver's result.
type Outcome = (u64, Duration, Vec<Result<Response, ReceiverError>>);

/// The sends' results, counted against what each receiver must answer.
#[derive(Default)]
struct Tally {
    sends: u64,
    healthy: u64,
    expected_healthy: u64,
    panics: u64,
    errors: u64,
    timeouts: u64,
    wrong: u64,
    slowest: Duration,
}

impl Tally {
    fn add(&mut self, (n, took, results): Outcome) {
        self.sends += 1;
        self.slowest = self.slowest.max(took);
        let expected: [Option<Response>; 6] = [
            Some(Ok(n * 2)),
            Some(Ok(n + 1)),
            (!n.is_multiple_of(2)).then_some(Ok(n)),
            (!n.is_multiple_of(5)).then_some(Ok(n)),
            Some(Err(format!("refused {n}"))),
            None,
        ];
        self.expected_healthy +=
            expected.iter().filter(|e| matches!(e, Some(Ok(_)))).count() as u64;
        if results.len() != expected.len() {
            self.wrong += 1;
            return;
        }
        for (result, expected) in results.iter().zip(&expected) {
            match (result, expected) {
                (Ok(Ok(value)), Some(Ok(want))) if value == want => self.healthy += 1,
                (Ok(Err(message)), Some(Err(want))) if message == want => self.errors += 1,
                (Err(ReceiverError::Panicked { message, .. }), None)
                | (Err(ReceiverError::Panicked { message, .. }), Some(Ok(_)))
                    if message == INTENTIONAL =>
                {
                    self.panics += 1
                }
                (Err(ReceiverError::TimedOut { .. }), None) => self.timeouts += 1,
                _ => self.wrong += 1,
            }
        }
    }
}

pub async fn run(profile: Profile) -> Row {
    let sends = profile.pick(4_000u64, 200_000);
    let concurrency = profile.pick(64, 256);
    let timeout = Duration::from_millis(20);
    let mut row = Row::new(
        "receiver faults",
        format!("{sends} robust sends, {concurrency} at a time, 6 receivers each"),
        "per send: 1 sync panic (every 2nd), 1 async panic (every 5th), 1 error, 1 never finishes (20 ms timeout)",
    );

    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
        if message != Some(INTENTIONAL) {
            previous_hook(info);
        }
    }));

    let signal: Arc<Signal<Args, Response>> = Arc::new(Signal::new());
    signal.connect_receiver(
        Receiver::sync(|_, a: &Args| Ok(a.n * 2)).key("double"),
        Sender::of::<Row>(),
    );
    signal.connect_receiver(
        Receiver::future(|_, a: Arc<Args>| async move {
            futures::future::ready(()).await;
            Ok(a.n + 1)
        })
        .key("increment"),
        Sender::of::<Row>(),
    );
    signal.connect_receiver(
        Receiver::sync(|_, a: &Args| {
            if a.n.is_multiple_of(2) {
                panic!("{}", INTENTIONAL);
            }
            Ok(a.n)
        })
        .key("sync-panic"),
        Sender::of::<Row>(),
    );
    signal.connect_receiver(
        Receiver::future(|_, a: Arc<Args>| async move {
            tokio::task::yield_now().await;
            if a.n.is_multiple_of(5) {
                panic!("{}", INTENTIONAL);
            }
            Ok(a.n)
        })
        .key("async-panic"),
        Sender::of::<Row>(),
    );
    signal.connect_receiver(
        Receiver::sync(|_, a: &Args| Err(format!("refused {}", a.n))).key("error"),
        Sender::of::<Row>(),
    );
    signal.connect_receiver(
        Receiver::future(|_, a: Arc<Args>| {
            let live = Live::new(&LIVE_HANGING);
            async move {
                let _held = (live, a);
                futures::future::pending::<Response>().await
            }
        })
        .key("hang"),
        Sender::of::<Row>(),
    );

    let rss_before = rss_kib();
    let runtime = Tokio::default();
    let started = Instant::now();
    // Tallied as they come: keeping 200 000 results would make the memory
    // figure the test's own.
    let tally = futures::stream::iter(0..sends)
        .map(|n| {
            let send = signal.send_robust_timeout(
                &runtime,
                timeout,
                Sender::of::<Row>(),
                Args {
                    n,
                    _live: Live::new(&LIVE_ARGS),
                },
            );
            async move {
                let sent = Instant::now();
                let results = send.await;
                (n, sent.elapsed(), results)
            }
        })
        .buffer_unordered(concurrency)
        .fold(Tally::default(), |mut tally, outcome| {
            tally.add(outcome);
            futures::future::ready(tally)
        })
        .await;
    let elapsed = started.elapsed();
    let _ = std::panic::take_hook();

    let Tally {
        sends: completed,
        healthy,
        expected_healthy,
        panics,
        errors,
        timeouts,
        wrong,
        slowest,
    } = tally;
    let expected_panics = (0..sends).filter(|n| n.is_multiple_of(2)).count() as u64
        + (0..sends).filter(|n| n.is_multiple_of(5)).count() as u64;

    row.published = completed;
    row.delivered = healthy;
    row.lost = expected_healthy.saturating_sub(healthy);
    row.duplicates = 0;
    row.errors = panics + errors + timeouts;
    row.check(
        completed == sends,
        format!("{completed} of {sends} sends completed"),
    );
    row.check(
        wrong == 0,
        format!("{wrong} responses were not the receiver's result or the typed error expected"),
    );
    row.check(
        healthy == expected_healthy,
        format!("healthy receivers answered {healthy} times of {expected_healthy}"),
    );
    row.check(
        panics == expected_panics,
        format!("{panics} panics reported, {expected_panics} caused"),
    );
    row.check(
        errors == sends,
        format!("{errors} error responses of {sends}"),
    );
    row.check(
        timeouts == sends,
        format!("{timeouts} timeouts reported for the hanging receiver, of {sends}"),
    );
    // The hanging receiver costs each send its 20 ms deadline; anything far
    // beyond means one receiver's fault delayed the sender.
    row.check(
        slowest < timeout + Duration::from_secs(1),
        format!("the slowest send took {slowest:?} with a {timeout:?} receiver deadline"),
    );
    let live_args = LIVE_ARGS.load(Ordering::SeqCst);
    let live_hanging = LIVE_HANGING.load(Ordering::SeqCst);
    row.check(
        live_args == 0,
        format!("{live_args} signal arguments still alive after every send returned"),
    );
    row.check(
        live_hanging == 0,
        format!("{live_hanging} abandoned receiver futures still alive"),
    );
    let rss_after = rss_kib();
    row.note(format!(
        "{:.0} sends/s; slowest send {:.1} ms (deadline 20 ms); resident memory {} -> {} KiB; live arguments and abandoned futures afterwards: {live_args}, {live_hanging}",
        sends as f64 / elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        rss_before,
        rss_after
    ));
    row
}
