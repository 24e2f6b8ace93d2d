//! tbone-dispatch's demo: a full-duplex chat in the spirit of TBone's
//! chatrooms example.
//!
//! A REST resource of chat entries (`/api/entries/`) whose every write goes
//! through the model signals: the storage sends `post_save` /
//! `post_delete`, [`publish_resource_events`] turns them into
//! `resource_create` / `resource_update` / `resource_delete` on the
//! `pubsub` channel, and each websocket on `/ws/` is a carrier subscribed
//! to those events. The socket is full-duplex: it also carries TBone's
//! requests (`{"type":"request","key":..,"method":..,"href":..}`), answered
//! by [`api_routes`] on that socket only. The page at `/` reads and writes
//! entries over it and follows the events live.
//!
//! Three modes, one code path generic over the channel's backend:
//! - embedded: [`MemoryChannel`](tbone_dispatch_tokio::MemoryChannel) and
//!   entries in memory ([`MemoryState`]);
//! - MongoDB: a [`MongoChannel`](tbone_dispatch_tokio::MongoChannel) and
//!   entries in a collection ([`MongoState`]), so every instance on the
//!   database sees every write;
//! - Redis (`--redis`): a [`RedisChannel`](tbone_dispatch_tokio::RedisChannel)
//!   carries the events of every instance on the server ([`RedisState`]),
//!   entries in memory or in MongoDB.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tbone_dispatch_demo::StartError> {
//! use tbone_dispatch_demo::{serve, MemoryState};
//!
//! let state = MemoryState::memory("pubsub")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! [`publish_resource_events`]: tbone_dispatch_tokio::model::publish_resource_events

#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod entry;
pub mod metrics;
pub mod sse;
pub mod state;
pub mod storage;
pub mod ws;

use std::future::Future;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tbone_dispatch_tokio::Backend;
use tokio::net::TcpListener;

pub use api::ApiError;
pub use config::{redact_uri, ArgsError, Command, Config, MongoConfig, USAGE};
pub use entry::{Entry, EntryPatch, ValidationError};
pub use state::{AppState, Entries, MemoryState, MongoState, RedisState, StartError};
pub use storage::{EntryRecord, MemoryStorage, MongoStorage, Storage, StorageError};

/// Largest accepted request body: an entry is at most ~8 KiB of JSON.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The page served at `/`.
pub const INDEX_HTML: &str = include_str!("../static/index.html");

impl<B: Backend> FromRef<AppState<B>> for Entries {
    fn from_ref(state: &AppState<B>) -> Entries {
        state.entries().clone()
    }
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML))
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_string())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed = ?started.elapsed(),
        "request"
    );
    response
}

/// The demo's routes over `state`: `/`, `/ws/`, `/sse/`, `/metrics` and `/api/entries/...`
/// (each also without its trailing slash). Unknown routes answer 404,
/// wrong methods 405 and bodies over [`MAX_BODY_BYTES`] 413, all as JSON.
pub fn app<B: Backend>(state: AppState<B>) -> Router {
    let api = api_routes(state.clone());
    let socket = {
        let (state, api) = (state.clone(), api.clone());
        get(move |ws| {
            let (channel, closing) = (state.channel().clone(), state.closing());
            ws::upgrade(ws, channel, api.clone(), closing)
        })
    };
    Router::new()
        .route("/", get(index))
        .route("/ws/", socket.clone())
        .route("/ws", socket)
        .route("/sse/", get(sse::events::<B>))
        .route("/sse", get(sse::events::<B>))
        .route("/metrics", get(metrics::render))
        .with_state(state)
        .merge(api)
        // After the merge: the page's and the sockets' routes answer a
        // wrong method with the same JSON 405 as the API's.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
}

/// The REST resource `/api/entries/...` alone, with its state: served over
/// HTTP by [`app`], and over each websocket by TBone's request messages.
/// Unknown routes answer 404, wrong methods 405 and bodies over
/// [`MAX_BODY_BYTES`] 413, all as JSON.
pub fn api_routes<B: Backend>(state: AppState<B>) -> Router {
    let collection = get(api::list).post(api::create);
    let item = get(api::read)
        .put(api::replace)
        .patch(api::update)
        .delete(api::delete);
    Router::new()
        .route("/api/entries/", collection.clone())
        .route("/api/entries", collection)
        .route("/api/entries/{id}/", item.clone())
        .route("/api/entries/{id}", item)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` resolves, then shuts down
/// gracefully: the events already acknowledged are delivered, websockets
/// close (after what they were sent) and SSE streams end, requests in
/// flight finish, and the channel stops ([`AppState::shut_down`]).
pub async fn serve<B, F>(
    listener: TcpListener,
    state: AppState<B>,
    shutdown: F,
) -> std::io::Result<()>
where
    B: Backend,
    F: Future<Output = ()> + Send + 'static,
{
    let signal = {
        let state = state.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down");
            // What the API acknowledged may still wait in the channel:
            // into the sockets' queues with it before they close.
            state.channel().flush().await;
            state.start_closing();
        }
    };
    let served = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(signal)
        .await;
    state.shut_down().await;
    tracing::info!("stopped");
    served
}

/// The demo in one of its modes, built from a [`Config`].
#[derive(Debug)]
pub enum Server {
    /// Embedded: in memory, one instance.
    Memory(MemoryState),
    /// MongoDB: instances on one database share entries and events.
    Mongo(MongoState),
    /// Redis: instances on one server share events (entries in memory, or
    /// in MongoDB).
    Redis(RedisState),
}

impl Server {
    /// Opens the channel and storage `config` asks for (connecting to
    /// MongoDB if needed).
    pub async fn build(config: &Config) -> Result<Server, StartError> {
        // Before the channel opens, so that it reports to `/metrics`.
        metrics::recorder();
        if let Some(url) = &config.redis {
            let state = RedisState::redis(&config.channel, url, config.mongo.as_ref()).await?;
            return Ok(Server::Redis(state));
        }
        match &config.mongo {
            None => Ok(Server::Memory(MemoryState::memory(&config.channel)?)),
            Some(mongo) => Ok(Server::Mongo(
                MongoState::mongo(&config.channel, mongo).await?,
            )),
        }
    }

    /// [`serve`]s until `shutdown` resolves.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Server::Memory(state) => serve(listener, state, shutdown).await,
            Server::Mongo(state) => serve(listener, state, shutdown).await,
            Server::Redis(state) => serve(listener, state, shutdown).await,
        }
    }
}

/// Builds the server for `config` and serves it on `listener` until Ctrl-C
/// or SIGTERM.
pub async fn run(listener: TcpListener, config: Config) -> Result<(), StartError> {
    let server = Server::build(&config).await?;
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on Ctrl-C, or SIGTERM on Unix. If a signal handler cannot be
/// installed, that signal is ignored (and logged).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
