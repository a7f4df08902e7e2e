//! The HTTP server: the public API, the runner API, health and metrics, in one router.

pub mod api;
pub mod auth;
pub mod error;
pub mod hooks;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod repos;
pub mod runner;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Engine;

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .nest("/api/v1", api::router().merge(repos::router()))
        .nest("/hooks", hooks::router())
        .route("/api/openapi.json", get(openapi::document_json))
        .nest(gantry_runner::wire::API_PREFIX, runner::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::metrics))
        .merge(crate::ui::router())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(engine)
}

async fn ready(State(engine): State<Arc<Engine>>) -> (StatusCode, &'static str) {
    match sqlx::query_scalar!("SELECT 1 AS one")
        .fetch_one(&engine.store.pool)
        .await
    {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
