//! The HTTP API:
//!
//! - `POST /orders` `{"customer": "ada", "amount_cents": 1999}`: writes the
//!   order, its `OrderCreated` and its `PaymentReminder` (due later) in one
//!   transaction; `201` with the order.
//! - `GET /orders/{id}`: the order, its status as the handlers moved it
//!   (`created` → `invoiced`, or `cancelled`), its invoice and reminders.
//! - `POST /orders/{id}/cancel`: cancels an open order (`409` if it is
//!   cancelled already), with `OrderCancelled` in the same transaction.
//! - `GET /customers/{customer}/stats`: what analytics counted.
//! - `GET /health`: `200` once the service is up.
//!
//! Errors are `{"error": "..."}` with `400`, `404`, `409`, or `500`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use heytom_mq::Producer;
use serde::Deserialize;
use serde_json::json;

use crate::store::{Cancelled, Db};

/// What the endpoints share.
#[derive(Clone)]
pub struct Api {
    pub db: Db,
    pub producer: Producer,
    /// How long after an order its payment reminder is due.
    pub reminder_after: Duration,
}

/// The routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route("/customers/{customer}/stats", get(customer_stats))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .with_state(api)
}

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
pub struct NewOrder {
    pub customer: String,
    pub amount_cents: i64,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "request failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn create_order(
    State(api): State<Api>,
    body: Result<Json<NewOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let customer = new.customer.trim().to_owned();
    if customer.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "customer must not be empty".into(),
        ));
    }
    if new.amount_cents <= 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("amount_cents must be positive, found {}", new.amount_cents),
        ));
    }
    let order = api
        .db
        .create_order(
            &api.producer,
            customer,
            new.amount_cents,
            api.reminder_after,
        )
        .await
        .map_err(internal)?;
    Ok((StatusCode::CREATED, Json(order)))
}

async fn order(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match api.db.order(&id).await.map_err(internal)? {
        Some(order) => Ok(Json(order)),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no order {id}"))),
    }
}

async fn cancel_order(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match api
        .db
        .cancel_order(&api.producer, &id)
        .await
        .map_err(internal)?
    {
        Cancelled::Now(order) => Ok(Json(order)),
        Cancelled::Already => Err(ApiError(
            StatusCode::CONFLICT,
            format!("order {id} is cancelled already"),
        )),
        Cancelled::NotFound => Err(ApiError(StatusCode::NOT_FOUND, format!("no order {id}"))),
    }
}

async fn customer_stats(
    State(api): State<Api>,
    Path(customer): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match api.db.customer_stats(&customer).await.map_err(internal)? {
        Some(stats) => Ok(Json(stats)),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no invoiced order for {customer}"),
        )),
    }
}
