//! The HTTP server: the public API, the runner API, health and metrics, in one router.

pub mod api;
pub mod auth;
pub mod error;
pub mod hooks;
pub mod logs;
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

/// The API, the hooks, the runner API, health and metrics. The web UI's pages are `ui`'s
/// router, merged beside this one at start-up (`server`): neither knows the other.
pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .nest("/api/v1", api::router().merge(repos::router()))
        .nest("/hooks", hooks::router())
        .route("/api/openapi.json", get(openapi::document_json))
        .nest(gantry_runner::wire::API_PREFIX, runner::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

/// How long `/readyz` waits for the database: a load balancer asks often and must learn soon
/// that the database is gone (the pool alone would wait its whole acquire timeout).
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

async fn ready(State(engine): State<Arc<Engine>>) -> (StatusCode, &'static str) {
    let check = sqlx::query_scalar!("SELECT 1 AS one").fetch_one(&engine.store.pool);
    match tokio::time::timeout(READY_WITHIN, check).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        Ok(Err(_)) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}

/// Serves `app` (this module's [`router`], and the web UI's) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // With each connection's address: sign-in throttling counts failures per client address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await
}

/// `GET /metrics`: the Prometheus exposition of [`crate::metrics`].
async fn metrics(
    axum::extract::State(engine): axum::extract::State<Arc<Engine>>,
) -> Result<impl axum::response::IntoResponse, error::ApiError> {
    let run_counts = crate::store::runs::count_by_status(&engine.store.pool).await?;
    let stage_counts = crate::store::stages::count_by_status(&engine.store.pool).await?;
    let text = crate::metrics::render(&run_counts, &stage_counts, &engine.metrics);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    ))
}
