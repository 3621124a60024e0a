//! `/health/live` and `/health/ready` as an axum [`Router`](axum::Router).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;

use super::HealthCheck;
use crate::app::RunningApp;

/// The liveness path: 200 while the process answers.
pub const LIVE_PATH: &str = "/health/live";

/// The readiness path: 200 with the [`Health`](super::Health) as JSON when
/// the app is ready, 503 with the same JSON (its `problems` say why) when not.
pub const READY_PATH: &str = "/health/ready";

/// An axum router serving [`LIVE_PATH`] and [`READY_PATH`] for a running
/// app; merge it into your service's router (feature `axum`).
///
/// ```no_run
/// # async fn demo(running: heytom_mq::RunningApp) -> std::io::Result<()> {
/// let app = axum::Router::new().merge(heytom_mq::health::router(&running));
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub fn router(running: &RunningApp) -> axum::Router {
    let check = running.health_check();
    axum::Router::new()
        .route(LIVE_PATH, get(live))
        .route(READY_PATH, get(ready))
        .with_state(check)
}

async fn live() -> Response {
    Json(serde_json::json!({ "live": true })).into_response()
}

async fn ready(axum::extract::State(check): axum::extract::State<HealthCheck>) -> Response {
    let health = check.health();
    let status = if health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}
