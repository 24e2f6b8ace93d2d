//! `/metrics`: the library's metrics (its `metrics` feature) in
//! Prometheus' text format.

use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs Prometheus' recorder as the process's metrics recorder (once)
/// and returns its handle; `None` if the process already has another
/// recorder. Call it before opening channels: a channel takes its metric
/// handles when it is created. [`crate::Server::build`] does.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "cannot install the Prometheus recorder: /metrics answers 503");
                None
            }
        })
        .as_ref()
}

/// `GET /metrics`: every metric recorded so far, or 503 when the recorder
/// could not be installed.
pub async fn render() -> Response {
    match recorder() {
        Some(handle) => {
            // Scrapes are the upkeep's clock: it ages the histograms' windows.
            handle.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process",
        )
            .into_response(),
    }
}
