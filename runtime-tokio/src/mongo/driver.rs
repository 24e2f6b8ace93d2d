//! Where the MongoDB driver's futures run: the `mongodb` crate needs a tokio
//! reactor, whatever runtime the application uses.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use mongodb::{Client, Database};
use tokio::runtime::Handle;

use super::MongoError;

/// Runs driver futures on tokio: the current runtime when there is one,
/// otherwise a small runtime on a thread this crate owns (how async-std and
/// smol applications use MongoDB).
#[derive(Clone, Debug)]
pub struct Driver {
    handle: Handle,
}

impl Driver {
    /// The current tokio runtime if called inside one, else the shared
    /// background runtime (started on first use).
    pub fn current_or_background() -> Result<Self, MongoError> {
        match Handle::try_current() {
            Ok(handle) => Ok(Driver { handle }),
            Err(_) => Self::background(),
        }
    }

    /// The shared background runtime: one worker thread named
    /// `tbone-mongo`, started on first use and kept for the life of the
    /// process.
    pub fn background() -> Result<Self, MongoError> {
        static BACKGROUND: OnceLock<Result<Handle, Arc<std::io::Error>>> = OnceLock::new();
        let handle = BACKGROUND.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("tbone-mongo")
                .enable_all()
                .build()
                .map(|runtime| {
                    let handle = runtime.handle().clone();
                    // Leaked on purpose: dropping a runtime while clients
                    // still hold connections on it panics in the driver.
                    std::mem::forget(runtime);
                    handle
                })
                .map_err(Arc::new)
        });
        match handle {
            Ok(handle) => Ok(Driver {
                handle: handle.clone(),
            }),
            Err(error) => Err(MongoError::Runtime {
                context: "cannot start the background tokio runtime that runs the MongoDB driver",
                source: Box::new(error.clone()),
            }),
        }
    }

    /// Runs on the runtime behind `handle`.
    pub fn with_handle(handle: Handle) -> Self {
        Driver { handle }
    }

    /// The tokio handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the driver's runtime and awaits it from any
    /// executor.
    pub async fn run<F, T>(&self, future: F) -> Result<T, MongoError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(future)
            .await
            .map_err(|e| MongoError::Runtime {
                context: "a driver task failed",
                source: Box::new(e),
            })
    }

    /// Connects to `uri` and returns database `name`, with the client's
    /// background tasks on this driver's runtime.
    pub async fn connect(&self, uri: &str, name: &str) -> Result<Database, MongoError> {
        let uri = uri.to_string();
        let name = name.to_string();
        self.run(async move {
            let client = Client::with_uri_str(&uri)
                .await
                .map_err(|source| MongoError::Driver {
                    context: format!(
                        "cannot connect to {uri}; check the URI and that the server is running"
                    ),
                    source,
                })?;
            Ok(client.database(&name))
        })
        .await?
    }
}

/// Connects to the MongoDB server at `uri` and returns database `name`,
/// from any runtime (see [`Driver::current_or_background`]).
pub async fn connect(uri: &str, name: &str) -> Result<Database, MongoError> {
    Driver::current_or_background()?.connect(uri, name).await
}
