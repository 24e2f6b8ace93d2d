//! Server-sent events on axum (feature `axum`): the core's
//! [`SseStream`] as a response.
//!
//! [`SseRequest`] is the extractor (the request's `Last-Event-ID`),
//! [`SseRequest::respond`] the whole handler: the events the client missed
//! since that id, then the live ones, as a `text/event-stream` response
//! with keep-alive comments; the carrier leaves the channel as soon as
//! axum drops the response (its client went away).
//!
//! ```no_run
//! use axum::extract::State;
//! use axum::response::Response;
//! use axum::routing::get;
//! use axum::Router;
//! use tbone_dispatch_tokio::axum_sse::SseRequest;
//! use tbone_dispatch_tokio::sse::SseOptions;
//! use tbone_dispatch_tokio::MemoryChannel;
//!
//! async fn events(sse: SseRequest, State(pubsub): State<MemoryChannel>) -> Response {
//!     sse.respond(&pubsub, &["resource_create", "resource_update"], SseOptions::default()).await
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pubsub = MemoryChannel::named("pubsub")?;
//!     pubsub.kickoff()?;
//!     let app = Router::new().route("/sse/", get(events)).with_state(pubsub);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! In the browser, `new EventSource("/sse/")` is the whole client: it
//! reconnects by itself and sends the last id it received as
//! `Last-Event-ID`.

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tbone_dispatch::sse::{self, SseError, SseOptions, SseStream};
use tbone_dispatch::{Backend, Carrier, Channel};

use crate::Tokio;

/// The extractor of an SSE request: the `Last-Event-ID` header a
/// reconnecting `EventSource` sends. Never rejects.
#[derive(Clone, Debug, Default)]
pub struct SseRequest {
    last_event_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for SseRequest {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let last_event_id = parts
            .headers
            .get(sse::LAST_EVENT_ID)
            .and_then(|value| sse::last_event_id(value.as_bytes()))
            .map(str::to_owned);
        Ok(SseRequest { last_event_id })
    }
}

impl SseRequest {
    /// The request's `Last-Event-ID`, if it carried a non-blank one.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The response streaming `events` of `channel` (from the request's
    /// `Last-Event-ID`, if any), or why it cannot be streamed.
    pub async fn stream<B: Backend>(
        &self,
        channel: &Channel<B, Tokio>,
        events: &[&str],
        options: SseOptions,
    ) -> Result<SseResponse, SseError> {
        sse::stream(channel, events, self.last_event_id(), options)
            .await
            .map(SseResponse::new)
    }

    /// [`SseRequest::stream`], with a failure answered as
    /// `503 Service Unavailable` (`500` for invalid options) and logged.
    pub async fn respond<B: Backend>(
        &self,
        channel: &Channel<B, Tokio>,
        events: &[&str],
        options: SseOptions,
    ) -> Response {
        match self.stream(channel, events, options).await {
            Ok(response) => response.into_response(),
            Err(error) => {
                tracing::warn!(%error, channel = channel.name(), "cannot stream server-sent events");
                let status = match error {
                    SseError::ZeroKeepAlive => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                (status, error.to_string()).into_response()
            }
        }
    }
}

/// An SSE response: `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache`, and the stream as the body. Build one from a
/// [`SseStream`] joined to several channels, or with
/// [`SseRequest::stream`].
///
/// ```no_run
/// use axum::response::IntoResponse;
/// use tbone_dispatch_tokio::axum_sse::{SseRequest, SseResponse};
/// use tbone_dispatch_tokio::sse::{SseOptions, SseStream};
/// use tbone_dispatch_tokio::{MemoryChannel, Tokio};
///
/// async fn two_channels(sse: SseRequest) -> axum::response::Response {
///     let (news, chat) = (MemoryChannel::named("news").unwrap(), MemoryChannel::named("chat").unwrap());
///     let body = SseStream::new(&Tokio::default(), SseOptions::default()).unwrap();
///     // A Last-Event-ID belongs to one channel's stream: resume that one.
///     body.join(&news, &["story"], sse.last_event_id()).await.unwrap();
///     body.join(&chat, &["message"], None).await.unwrap();
///     SseResponse::new(body).into_response()
/// }
/// ```
#[derive(Debug)]
pub struct SseResponse {
    body: SseStream<Tokio>,
}

impl SseResponse {
    /// The response sending `body`.
    pub fn new(body: SseStream<Tokio>) -> Self {
        SseResponse { body }
    }

    /// The body's carrier.
    pub fn carrier(&self) -> &Carrier<Tokio> {
        self.body.carrier()
    }

    /// Ends the body after the frames it holds once `signal` completes
    /// (see [`SseStream::end_on`]): give it the server's shutdown signal,
    /// so that a graceful shutdown, which waits for every response to end,
    /// is not held by an event stream.
    pub fn end_on<F>(self, signal: F) -> Self
    where
        F: Future + Send + 'static,
    {
        SseResponse {
            body: self.body.end_on(signal),
        }
    }
}

impl IntoResponse for SseResponse {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from_stream(self.body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(sse::CONTENT_TYPE),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}
