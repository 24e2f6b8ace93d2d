//! Scenario 6, shutdown: stopping a channel or the demo server while events
//! flow must end every task, close every socket with a close frame, and
//! lose no acknowledged event.
//!
//! Three rows:
//! - **channel stop**: a memory channel serving real websocket clients
//!   (the tokio crate's `websocket::accept` and `Accepted::serve`) is stopped while
//!   publishers publish flat out, so that the sockets have a backlog. Each
//!   socket must get what it was sent, then close 1001 (no shutdown signal
//!   of the server's: the channel's stop alone). Publishes after the stop
//!   must fail with `PublishError::Stopped`.
//! - **demo server**: the demo (`examples/demo`) serving websocket and SSE
//!   clients while writers create entries through its REST API (flat out
//!   at the end), shut down gracefully: `serve` must return, websockets
//!   get 1001, SSE streams end.
//! - **Mongo instance stop**: two `MongoChannel` instances on one
//!   collection, publishers on both; instance B (on a runtime of its own,
//!   so that its tasks can be counted) is stopped mid-flow, its later
//!   publishes must fail with `PublishError::Stopped`, and A must still
//!   deliver every acknowledged event of both exactly once.
//!
//! In each, "acknowledged" is what the caller was told succeeded: `publish`
//! returned `Ok`, or the REST API answered 201 before the shutdown began.
//! Every acknowledged event must reach every client that was connected (in
//! publish order per publisher, once), and an event whose publish failed
//! must reach nobody. Tasks are counted with tokio's runtime metrics: once
//! everything is shut down and dropped, the runtime must hold as many tasks
//! as before.
//!
//! Files: `channel_stop` (with its websocket `server`), `demo_server`
//! (with its `http` client), `mongo_instance` (with `instance_b`);
//! shared by the three: `audit` (what was published against what
//! arrived) and `clients` (the websocket and SSE clients).

use std::time::Duration;

pub(super) use super::loopback::wait_until;
use super::Row;

mod audit;
mod channel_stop;
mod clients;
mod demo_server;
mod http;
mod instance_b;
mod mongo_instance;
mod server;

pub use channel_stop::channel_stop;
pub use demo_server::demo_server;
pub use mongo_instance::mongo_instance_stop;

/// The event the memory and Mongo rows publish.
const EVENT: &str = "e";

/// Limit on each setup step and on each part of shutting down.
const STEP: Duration = Duration::from_secs(30);

/// Queue of each socket's carrier in the channel-stop row: deep enough that
/// no client is dropped for being slow, so that every loss is shutdown's.
const CARRIER_CAPACITY: usize = 1 << 16;

/// Tasks alive on the current tokio runtime.
fn tasks_alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until the runtime is back to `baseline` tasks and records it.
async fn check_tasks(row: &mut Row, baseline: usize, what: &str) {
    let back = wait_until(Duration::from_secs(10), || tasks_alive() <= baseline).await;
    let now = tasks_alive();
    row.check(
        back,
        format!(
            "{what}: {now} tasks alive, {baseline} before: {} left running",
            now.saturating_sub(baseline)
        ),
    );
}
