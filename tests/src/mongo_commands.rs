//! A MongoDB client that records the commands it sends: what an instance
//! costs the server, seen from the one client it owns (the server's own
//! counters are shared by every test running against it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use mongodb::bson::Document;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use tbone_dispatch_tokio::mongo::Driver;

/// The commands sent through one client, by name, and the ids of the
/// tailable cursors its `find`s opened.
#[derive(Clone, Debug, Default)]
pub struct CommandLog(Arc<Mutex<Log>>);

#[derive(Debug, Default)]
struct Log {
    sent: BTreeMap<String, u64>,
    /// Request ids of tailable `find`s whose reply has not come yet.
    tailable_requests: Vec<i32>,
    tailable_cursors: Vec<i64>,
    /// How many documents each tailable `find` returned with its reply.
    first_batches: Vec<usize>,
}

impl CommandLog {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, event: CommandEvent) {
        let mut log = self.log();
        match event {
            CommandEvent::Started(started) => {
                *log.sent.entry(started.command_name.clone()).or_insert(0) += 1;
                if started.command_name == "find" && is_tailable(&started.command) {
                    *log.sent.entry("find (tailable)".to_string()).or_insert(0) += 1;
                    log.tailable_requests.push(started.request_id);
                }
            }
            CommandEvent::Succeeded(succeeded) => {
                if let Some(at) = log
                    .tailable_requests
                    .iter()
                    .position(|id| *id == succeeded.request_id)
                {
                    log.tailable_requests.swap_remove(at);
                    if let Ok(cursor) = succeeded.reply.get_document("cursor") {
                        if let Ok(id) = cursor.get_i64("id") {
                            log.tailable_cursors.push(id);
                        }
                        if let Ok(batch) = cursor.get_array("firstBatch") {
                            log.first_batches.push(batch.len());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// How many commands named `name` were sent (`"find (tailable)"`
    /// counts the `find`s that opened a tailable cursor).
    pub fn sent(&self, name: &str) -> u64 {
        self.log().sent.get(name).copied().unwrap_or(0)
    }

    /// Every command sent so far, by name.
    pub fn all(&self) -> BTreeMap<String, u64> {
        self.log().sent.clone()
    }

    /// How many documents the reply to each tailable `find` carried, in
    /// the order they were answered (on MongoDB, a tailable cursor whose
    /// first batch is empty is dead at once).
    pub fn tailable_first_batches(&self) -> Vec<usize> {
        self.log().first_batches.clone()
    }

    /// The id of the tailable cursor opened last (0 if the server closed it
    /// at once), if any was.
    pub fn last_tailable_cursor(&self) -> Option<i64> {
        self.log().tailable_cursors.last().copied()
    }
}

fn is_tailable(command: &Document) -> bool {
    command.get_bool("tailable").unwrap_or(false)
}

/// Database `name` at `uri` on a new client whose commands `log` records.
pub async fn recorded_database(uri: &str, name: &str) -> (Database, CommandLog) {
    let log = CommandLog::default();
    let recorder = log.clone();
    let (uri, name) = (uri.to_string(), name.to_string());
    let db = Driver::current_or_background()
        .unwrap()
        .run(async move {
            let mut options = ClientOptions::parse(&uri).await?;
            options.command_event_handler =
                Some(EventHandler::callback(move |event| recorder.record(event)));
            Ok::<_, mongodb::error::Error>(Client::with_options(options)?.database(&name))
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot connect a recorded client: {e}"));
    (db, log)
}
