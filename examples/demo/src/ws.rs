//! `GET /ws/`: a full-duplex websocket. It receives every resource event,
//! and carries TBone's requests (`{"type":"request","key":..,"method":..,
//! "href":"/api/entries/",..}`), answered through the same REST routes as
//! HTTP, to that client only.
//!
//! Each event frame carries its position (the channel's envelope is
//! `PositionedEnvelope`). A page that reconnects as `/ws/?last_position=<the
//! last position it received>` gets the changes it missed first, in order,
//! then the live ones; or `{"type":"recovery_failed",..}` when the channel
//! no longer has that position, and then it reads the list again.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use tbone_dispatch_tokio::axum_socket::{router_multiplexer, SocketUpgrade};
use tbone_dispatch_tokio::dispatch::Channel;
use tbone_dispatch_tokio::model::{RESOURCE_CREATE, RESOURCE_DELETE, RESOURCE_UPDATE};
use tbone_dispatch_tokio::{Backend, OriginPolicy, SocketOptions, Tokio};

use crate::api::ApiError;

/// The events every websocket receives.
pub const EVENTS: [&str; 3] = [RESOURCE_CREATE, RESOURCE_UPDATE, RESOURCE_DELETE];

/// How the demo serves sockets: the three resource events; TBone's
/// requests answered by `api` (the demo's own REST routes); only pages of
/// this server may connect (a page elsewhere cannot act as its visitor);
/// pings keep idle connections alive.
pub fn socket_options(api: Router) -> SocketOptions {
    SocketOptions::new(EVENTS)
        .origins(OriginPolicy::SameHost)
        .on_message(router_multiplexer(api))
}

/// Answers `/ws/`: refused (403, JSON) for a page of another origin, otherwise
/// upgraded and served with [`socket_options`] until the client leaves or
/// `closing` resolves (then it gets what it was sent and a close frame,
/// 1001). A request that is not a websocket handshake gets a JSON error.
pub async fn upgrade<B: Backend>(
    ws: Result<SocketUpgrade, WebSocketUpgradeRejection>,
    channel: Channel<B, Tokio>,
    api: Router,
    closing: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|rejection| ApiError::Rejected {
        status: rejection.status(),
        message: format!("this is a websocket endpoint: {}", rejection.body_text()),
    })?;
    tracing::info!(
        channel = channel.name(),
        path = ws.request().path(),
        "websocket requested"
    );
    let options = socket_options(api).until(closing);
    // A refusal (a foreign origin) is answered as JSON, like every other
    // error of the demo.
    ws.try_serve(&channel, options).await.map_err(|refusal| {
        tracing::info!(reason = refusal.reason(), "websocket refused");
        ApiError::Rejected {
            status: StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN),
            message: refusal.reason().to_string(),
        }
    })
}
