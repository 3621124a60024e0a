//! The service's events. Billing's travel on RabbitMQ, analytics' on Kafka;
//! with neither configured, all of them travel in-process.

use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

/// An order was placed (`POST /orders`): written in the same transaction as
/// the order row. Billing invoices it.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "orders.order-created.v1")]
#[rabbitmq(
    routing_key = "orders.created",
    exchange = "order-service",
    exchange_type = "topic",
    queue_name = "order-service.billing.order-created"
)]
pub struct OrderCreated {
    pub order_id: String,
    pub customer: String,
    pub amount_cents: i64,
}

/// Billing invoiced an order. Analytics counts it.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "billing.order-invoiced.v1")]
#[kafka(
    topic = "order-service.invoices",
    partition_key = customer,
    auto_offset_reset = "earliest",
    session_timeout_ms = 6000
)]
pub struct OrderInvoiced {
    pub order_id: String,
    pub invoice_id: String,
    pub customer: String,
    pub amount_cents: i64,
}

/// An order was cancelled (`POST /orders/{id}/cancel`), in the same
/// transaction as its new status. Billing voids its invoice.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "orders.order-cancelled.v1")]
#[rabbitmq(
    routing_key = "orders.cancelled",
    exchange = "order-service",
    exchange_type = "topic",
    queue_name = "order-service.billing.order-cancelled"
)]
pub struct OrderCancelled {
    pub order_id: String,
}

/// Due a while after an order was placed (scheduled with `publish_after` in
/// the order's transaction): reminds the customer to pay if the order is
/// still open.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "billing.payment-reminder.v1")]
#[rabbitmq(
    routing_key = "billing.payment-reminder",
    exchange = "order-service",
    exchange_type = "topic",
    queue_name = "order-service.billing.payment-reminder"
)]
pub struct PaymentReminder {
    pub order_id: String,
}
