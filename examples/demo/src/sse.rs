//! `GET /sse/`: the same events as server-sent events, through the
//! library's SSE carrier (`tbone_dispatch_tokio::axum_sse`). Each event
//! carries its position as its `id:`, so a browser's `EventSource` that
//! reconnects sends it back as `Last-Event-ID` and receives the entries it
//! missed, then the live ones (or `event: recovery_failed`, when they are
//! no longer in the channel's history). Keep-alive comments every 15 s; the
//! carrier leaves the channel as soon as its client goes away.

use axum::extract::State;
use axum::http::StatusCode;
use tbone_dispatch_tokio::axum_sse::{SseRequest, SseResponse};
use tbone_dispatch_tokio::sse::{SseError, SseOptions};
use tbone_dispatch_tokio::Backend;

use crate::api::ApiError;
use crate::state::AppState;
use crate::ws::EVENTS;

/// Streams every resource event as a server-sent event holding TBone's
/// frame. When the server shuts down, the stream ends after the frames
/// already queued (a graceful shutdown waits for every response to end).
pub async fn events<B: Backend>(
    sse: SseRequest,
    State(state): State<AppState<B>>,
) -> Result<SseResponse, ApiError> {
    let response = sse
        .stream(state.channel(), &EVENTS, SseOptions::default())
        .await
        .map_err(unavailable)?;
    Ok(response.end_on(state.closing()))
}

fn unavailable(error: SseError) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("cannot stream events now: {error}"),
    }
}
