//! Row (c), one of two Mongo instances stops: see the module
//! documentation of `shutdown`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tbone_dispatch::CarrierConfig;
use tbone_dispatch_tokio::mongo::{self, MongoOptions};
use tbone_dispatch_tokio::{MongoChannel, Tokio};

use super::audit::{acked_total, errors_total, parse_event, Audit, Ledger};
use super::instance_b::InstanceB;
use super::{check_tasks, tasks_alive, wait_until, CARRIER_CAPACITY, EVENT, STEP};
use crate::mongo::{database, database_name, MONGO_WAIT};
use crate::new_carrier_with;
use crate::soak::{Profile, Row};

/// Publishes `{"p": id, "n": 0, 1, ..}` on a Mongo channel, each awaiting
/// its acknowledgement, until a publish fails or `halt` is set.
pub(super) async fn publish_mongo(
    channel: MongoChannel,
    id: usize,
    halt: Arc<AtomicBool>,
) -> Ledger {
    let mut ledger = Ledger::default();
    for n in 0.. {
        if halt.load(Ordering::SeqCst) {
            break;
        }
        match channel.publish(EVENT, &json!({"p": id, "n": n})).await {
            Ok(()) => ledger.acked.push((n, true)),
            Err(e) => {
                ledger.record_error(&e);
                break;
            }
        }
    }
    ledger
}

/// What instance A's subscriber received: `(publisher, n)` in arrival order.
pub(super) type Received = Arc<Mutex<Vec<(usize, u64)>>>;

pub(super) fn received_from(received: &Received, ids: &std::ops::Range<usize>) -> u64 {
    received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(p, _)| ids.contains(p))
        .count() as u64
}

/// Part (c): see the module documentation.
pub async fn mongo_instance_stop(profile: Profile) -> Row {
    let per_instance = profile.pick(4, 8);
    let cycles = profile.pick(1, 4);
    let before_stop = profile.pick(200u64, 500);
    let after_stop = Duration::from_millis(profile.pick(1000, 3000));
    let mut row = Row::new(
        "shutdown: Mongo instance stop",
        format!(
            "2 MongoChannel instances on one collection, {per_instance} publishers each; {cycles} x (a new instance B publishes and is stopped once A has {before_stop} of its events)"
        ),
        "stop one instance mid-flow",
    );
    let baseline = tasks_alive();
    let test = "soak_shutdown";
    let db_a = database::<Tokio>(test).await;
    let options = MongoOptions::default().collection("tbone_channel_soak_shutdown");
    let a: MongoChannel = match mongo::builder("soak/shutdown/mongo-a", &db_a)
        .options(options.clone())
        .open()
    {
        Ok(a) => a,
        Err(e) => {
            row.check(false, format!("opening A: {e}"));
            return row;
        }
    };
    if let Err(e) = a.kickoff() {
        row.check(false, format!("kickoff of A: {e}"));
        return row;
    }
    let (carrier, mut frames) =
        new_carrier_with::<Tokio>(CarrierConfig::default().capacity(CARRIER_CAPACITY));
    if let Err(e) = a.subscribe(EVENT, &carrier) {
        row.check(false, format!("subscribing on A: {e}"));
        return row;
    }
    let received: Received = Arc::default();
    let collector = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(frame) = frames.next().await {
                let event = parse_event(frame.as_str()).unwrap_or((usize::MAX, 0));
                received
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(event);
            }
        }
    });

    // Indexed by publisher id: A's are 0..per_instance, each B's next.
    let mut ledgers: Vec<Ledger> = std::iter::repeat_with(Ledger::default)
        .take(per_instance * (cycles + 1))
        .collect();
    let halt_a = Arc::new(AtomicBool::new(false));
    let a_publishers: Vec<_> = (0..per_instance)
        .map(|id| tokio::spawn(publish_mongo(a.clone(), id, halt_a.clone())))
        .collect();
    let mut b_errors = 0;
    for cycle in 0..cycles {
        let first = per_instance * (cycle + 1);
        let b = InstanceB {
            cycle,
            ids: first..first + per_instance,
            database: database_name::<Tokio>(test),
            options: options.clone(),
            before_stop,
        };
        match b.run(&mut row, &received).await {
            Some(cycle_ledgers) => {
                for (id, ledger) in cycle_ledgers {
                    b_errors += ledger.errors.len() as u64;
                    ledgers[id] = ledger;
                }
            }
            None => break,
        }
    }

    // A keeps running after B stopped: its own publishers go on.
    tokio::time::sleep(after_stop).await;
    halt_a.store(true, Ordering::SeqCst);
    for (id, task) in a_publishers.into_iter().enumerate() {
        match tokio::time::timeout(MONGO_WAIT, task).await {
            Ok(Ok(ledger)) => ledgers[id] = ledger,
            _ => row.check(false, "a publisher on A did not finish"),
        }
    }
    let a_errors = errors_total(&ledgers[..per_instance]);
    row.check(
        a_errors == 0,
        format!(
            "A, which kept running, returned {a_errors} publish errors: {:?}",
            ledgers[..per_instance]
                .iter()
                .flat_map(|l| &l.errors)
                .take(3)
                .collect::<Vec<_>>()
        ),
    );
    let complete = wait_until(MONGO_WAIT, || {
        let mut audit = Audit::default();
        audit.add(
            &ledgers,
            &received.lock().unwrap_or_else(PoisonError::into_inner),
        );
        audit.lost == 0
    })
    .await;
    if !complete {
        tracing::warn!("A did not receive every acknowledged event within {MONGO_WAIT:?}");
    }
    // A duplicate would come after the last original: give it time to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut audit = Audit::default();
    audit.add(
        &ledgers,
        &received.lock().unwrap_or_else(PoisonError::into_inner),
    );
    audit.report(&mut row, "instance A");
    let stats = a.backend().stats();
    row.check(
        stats.gaps == 0,
        format!("A reported {} gaps in the capped collection", stats.gaps),
    );
    row.note(format!(
        "A: {} events read from the collection, {} re-read after a reconnect and dropped, cursor reopened {} times",
        stats.received, stats.duplicates, stats.reopened
    ));
    row.published = acked_total(&ledgers);
    row.errors = a_errors + b_errors;

    let stopped = tokio::time::timeout(MONGO_WAIT, a.stop()).await.is_ok();
    row.check(stopped, "A's stop() did not finish");
    drop((a, carrier));
    row.check(
        matches!(tokio::time::timeout(STEP, collector).await, Ok(Ok(()))),
        "A's subscriber did not see the end of its carrier",
    );
    let client = db_a.client().clone();
    drop(db_a);
    let shut = tokio::time::timeout(STEP, async move { client.shutdown().await })
        .await
        .is_ok();
    row.check(
        shut,
        "A's MongoDB client did not shut down: a cursor or session was left open",
    );
    check_tasks(
        &mut row,
        baseline,
        "after A stopped and its client shut down",
    )
    .await;
    row
}
