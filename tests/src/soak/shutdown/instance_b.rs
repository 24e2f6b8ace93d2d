//! Instance B of the Mongo row: started, loaded and stopped once per
//! cycle beside instance A.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbone_dispatch::{CarrierConfig, Frame};
use tbone_dispatch_tokio::mongo::{self, Driver, MongoOptions};
use tbone_dispatch_tokio::{Carrier, MongoChannel, Tokio};

use super::audit::Ledger;
use super::mongo_instance::{publish_mongo, received_from, Received};
use super::{wait_until, EVENT, STEP};
use crate::mongo::{fast_failing, mongo_uri, MONGO_WAIT};
use crate::soak::Row;

/// One stop cycle of instance B: a channel on the shared collection with a
/// MongoDB client of its own, both on a runtime of their own so that the
/// tasks it leaves behind (if any) can be told from A's.
pub(super) struct InstanceB {
    pub(super) cycle: usize,
    /// Its publishers' ids.
    pub(super) ids: std::ops::Range<usize>,
    pub(super) database: String,
    pub(super) options: MongoOptions,
    /// How many of B's events A must have received before B is stopped.
    pub(super) before_stop: u64,
}

impl InstanceB {
    /// Runs the cycle; returns B's publishers' ledgers, or None if it could
    /// not be set up.
    pub(super) async fn run(
        self,
        row: &mut Row,
        received: &Received,
    ) -> Option<Vec<(usize, Ledger)>> {
        let cycle = self.cycle;
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("soak-mongo-b")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: a runtime for B: {e}"));
                return None;
            }
        };
        let handle = runtime.handle().clone();
        let ledgers = self.on(row, &handle, received).await;
        // Nothing may be left on B's runtime; whatever is would be cut
        // here, so it was counted above.
        runtime.shutdown_background();
        ledgers
    }

    async fn on(
        self,
        row: &mut Row,
        handle: &tokio::runtime::Handle,
        received: &Received,
    ) -> Option<Vec<(usize, Ledger)>> {
        let cycle = self.cycle;
        let alive = || handle.metrics().num_alive_tasks();
        let driver = Driver::with_handle(handle.clone());
        let db = match driver
            .connect(&fast_failing(&mongo_uri()), &self.database)
            .await
        {
            Ok(db) => db,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: connecting B: {e}"));
                return None;
            }
        };
        // The client starts its monitors and pool as it discovers the
        // server: its own tasks are counted once it has answered and they
        // have settled.
        let ping = {
            let db = db.clone();
            driver.run(async move { db.run_command(mongodb::bson::doc! {"ping": 1}).await })
        };
        if !matches!(tokio::time::timeout(STEP, ping).await, Ok(Ok(Ok(_)))) {
            row.check(
                false,
                format!("cycle {cycle}: B's client got no answer to a ping"),
            );
            return None;
        }
        let mut client_tasks = alive();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = alive();
            if now == client_tasks {
                break;
            }
            client_tasks = now;
        }
        let runtime = Tokio::with_handle(handle.clone());
        let opened: Result<MongoChannel, _> =
            mongo::builder(&format!("soak/shutdown/mongo-b{cycle}"), &db)
                .options(self.options.clone().driver(driver.clone()))
                .open_on(runtime.clone());
        let b = match opened {
            Ok(b) => b,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: opening B: {e}"));
                return None;
            }
        };
        if let Err(e) = b.kickoff() {
            row.check(false, format!("cycle {cycle}: kickoff of B: {e}"));
            return None;
        }
        let (sink, b_frames) = futures::channel::mpsc::unbounded::<Frame>();
        let subscribed = Carrier::new(&runtime, sink, CarrierConfig::default())
            .map_err(|e| e.to_string())
            .and_then(|carrier| {
                b.subscribe(EVENT, &carrier)
                    .map(|_| carrier)
                    .map_err(|e| e.to_string())
            });
        let b_carrier = match subscribed {
            Ok(carrier) => carrier,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: subscribing on B: {e}"));
                return None;
            }
        };

        let halt = Arc::new(AtomicBool::new(false));
        let publishers: Vec<_> = self
            .ids
            .clone()
            .map(|id| tokio::spawn(publish_mongo(b.clone(), id, halt.clone())))
            .collect();
        let flowing = wait_until(MONGO_WAIT, || {
            received_from(received, &self.ids) >= self.before_stop
        })
        .await;
        row.check(
            flowing,
            format!(
                "cycle {cycle}: A received {} of B's events within {MONGO_WAIT:?}, expected {}",
                received_from(received, &self.ids),
                self.before_stop
            ),
        );

        let started = Instant::now();
        let stopped = tokio::time::timeout(MONGO_WAIT, b.stop()).await.is_ok();
        let stop_time = started.elapsed();
        row.check(
            stopped,
            format!("cycle {cycle}: B's stop() did not finish within {MONGO_WAIT:?}"),
        );
        row.check(
            b.subscription_count() == 0,
            format!(
                "cycle {cycle}: B holds {} subscriptions after stop",
                b.subscription_count()
            ),
        );
        // Every publisher on B must have been refused: the stop was mid-flow.
        let deadline = tokio::time::Instant::now() + MONGO_WAIT;
        let mut ledgers = Vec::new();
        for (id, task) in self.ids.clone().zip(publishers) {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(ledger)) => ledgers.push((id, ledger)),
                Ok(Err(e)) => row.check(
                    false,
                    format!("cycle {cycle}: a publisher on B failed: {e}"),
                ),
                Err(_) => {
                    halt.store(true, Ordering::SeqCst);
                    row.check(
                        false,
                        format!("cycle {cycle}: a publisher on B was not refused after the stop"),
                    );
                }
            }
        }
        let mut late = Ledger::default();
        if let Err(e) = b.publish(EVENT, &json!({"p": usize::MAX, "n": 0})).await {
            late.record_error(&e);
        }
        let all = || ledgers.iter().map(|(_, l)| l).chain([&late]);
        let errors: u64 = all().map(|l| l.errors.len() as u64).sum();
        let refused: u64 = all().map(|l| l.stopped).sum();
        let expected = self.ids.len() as u64 + 1;
        row.check(
            errors == expected && refused == errors,
            format!(
                "cycle {cycle}: after B stopped, {errors} of its publishes failed ({refused} with PublishError::Stopped), expected {expected}: {:?}",
                all().flat_map(|l| &l.errors).take(3).collect::<Vec<_>>()
            ),
        );
        if cycle == 0 {
            row.note(format!(
                "cycle 0: B acknowledged {} events before it stopped; B.stop() took {:.1} ms",
                ledgers.iter().map(|(_, l)| l.acked.len()).sum::<usize>(),
                stop_time.as_secs_f64() * 1e3
            ));
        }
        // The late publish is the caller's error too.
        if let Some((_, first)) = ledgers.first_mut() {
            first.errors.extend(late.errors);
        }

        drop((b, b_carrier, b_frames));
        let back = wait_until(Duration::from_secs(10), || alive() <= client_tasks).await;
        row.check(
            back,
            format!(
                "cycle {cycle}: B stopped and dropped, its runtime still runs {} tasks besides its client's {client_tasks}",
                alive().saturating_sub(client_tasks)
            ),
        );
        let client = db.client().clone();
        drop(db);
        let shut = driver.run(async move { client.shutdown().await });
        let shut = tokio::time::timeout(STEP, shut).await;
        row.check(
            matches!(shut, Ok(Ok(()))),
            format!("cycle {cycle}: B's MongoDB client did not shut down: a cursor or session was left open"),
        );
        let empty = wait_until(Duration::from_secs(10), || alive() == 0).await;
        row.check(
            empty,
            format!(
                "cycle {cycle}: after B's client shut down, its runtime still runs {} tasks",
                alive()
            ),
        );
        Some(ledgers)
    }
}
