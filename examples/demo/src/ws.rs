//! `GET /ws/`: a websocket that receives every resource event.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tbone_dispatch_tokio::dispatch::Channel;
use tbone_dispatch_tokio::model::{RESOURCE_CREATE, RESOURCE_DELETE, RESOURCE_UPDATE};
use tbone_dispatch_tokio::{axum_socket, Backend, SocketOptions, Tokio};

use crate::api::ApiError;
use crate::state::AppState;

/// The events every websocket receives.
pub const EVENTS: [&str; 3] = [RESOURCE_CREATE, RESOURCE_UPDATE, RESOURCE_DELETE];

/// How the demo serves sockets: the three resource events; what clients
/// send is ignored, as in TBone; pings keep idle connections alive.
pub fn socket_options() -> SocketOptions {
    SocketOptions::new(EVENTS)
}

/// Upgrades to a websocket served by [`ws_handler`] until the client
/// leaves or the server shuts down. A request that is not a websocket
/// handshake gets a JSON error.
pub async fn upgrade<B: Backend>(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState<B>>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|rejection| ApiError::Rejected {
        status: rejection.status(),
        message: format!("this is a websocket endpoint: {}", rejection.body_text()),
    })?;
    let channel = state.channel().clone();
    let closing = state.closing();
    let max = socket_options().get_max_message_size();
    Ok(ws
        .read_buffer_size(tbone_dispatch_tokio::READ_BUFFER_SIZE)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|error| tracing::info!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| ws_handler(socket, channel, closing)))
}

/// Serves one websocket with [`axum_socket::serve`]: subscribes it to
/// [`EVENTS`] on `channel`, reads until the client leaves or `closing`
/// resolves (then it sends a close frame, 1001), and closes its carrier,
/// which leaves every channel.
pub async fn ws_handler<B: Backend>(
    socket: WebSocket,
    channel: Channel<B, Tokio>,
    closing: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tracing::info!(channel = channel.name(), "websocket connected");
    let options = socket_options().until(closing);
    let reason = axum_socket::serve(socket, &channel, options).await;
    tracing::info!(%reason, "websocket closed");
}
