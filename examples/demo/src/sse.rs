//! `GET /sse/`: the same events as server-sent events, through a carrier of
//! our own. This is the spec's "subclass the Carrier" path: a carrier is any
//! `Sink<Frame>`, here the sending half of a bounded queue whose other half
//! axum streams as SSE.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{future, Stream, StreamExt};
use tbone_dispatch_tokio::{Backend, Carrier, CarrierConfig, Frame, Tokio};

use crate::api::ApiError;
use crate::state::AppState;
use crate::ws::EVENTS;

/// Streams every resource event as an SSE `data:` line holding TBone's
/// frame. When the client goes away, axum drops the stream, and with it the
/// carrier's presence guard: the carrier leaves the channel then, not at
/// its next write. When the server shuts down, the stream ends after the
/// frames already queued (a graceful shutdown waits for every response to
/// end).
pub async fn events<B: Backend>(
    State(state): State<AppState<B>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (sink, frames) = futures::channel::mpsc::channel::<Frame>(16);
    let carrier =
        Carrier::new(&Tokio::default(), sink, CarrierConfig::default()).map_err(unavailable)?;
    for event in EVENTS {
        state
            .channel()
            .subscribe(event, &carrier)
            .map_err(unavailable)?;
    }
    let presence = carrier.presence_guard();
    let leave = {
        let (channel, closing) = (state.channel().clone(), state.closing());
        async move {
            closing.await;
            // With the channel's handles gone and this one dropped, the
            // carrier writes what it holds, closes its sink, and the
            // stream ends.
            channel.unsubscribe_all(&carrier);
        }
    };
    let frames = frames.map(move |frame| {
        // The stream owns the guard: dropped with it when the client goes.
        let _ = &presence;
        Some(frame)
    });
    let leave = futures::stream::once(leave).map(|()| None);
    let stream = futures::stream::select(frames, leave)
        .filter_map(future::ready)
        .map(|frame| Ok(Event::default().data(frame.as_str())));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("cannot stream events now: {error}"),
    }
}
