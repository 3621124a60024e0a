//! The page layout and the pages that are not about single messages:
//! overview, handlers and subscriptions, dead letters.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, TimeDelta, Utc};
use maud::{html, Markup, DOCTYPE};

use super::{AppState, Base};
use crate::event::Route;

/// The sent-rate chart: buckets of this length ...
const RATE_BUCKET: Duration = Duration::from_secs(10);
/// ... over this window.
const RATE_WINDOW: Duration = Duration::from_secs(600);

const STYLE: &str = include_str!("style.css");

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Messages,
    Handlers,
    DeadLetters,
}

/// A whole page: head, navigation, `body`. With `refresh`, the browser
/// reloads it every that many seconds.
pub(crate) fn layout(
    base: &Base,
    title: &str,
    nav: Nav,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    let link = |n: Nav, path: &str, label: &str| {
        html! { a href=(base.at(path)) class=[(n == nav).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
                title { (title) " · heytom-mq" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    span.brand { "heytom-mq" }
                    nav {
                        (link(Nav::Overview, "/", "Overview"))
                        (link(Nav::Messages, "/messages", "Messages"))
                        (link(Nav::Handlers, "/handlers", "Handlers"))
                        (link(Nav::DeadLetters, "/dead-letters", "Dead letters"))
                        a href=(base.at("/asyncapi.json")) { "AsyncAPI" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page saying what failed, with status 500.
pub(crate) fn error_page(base: &Base, nav: Nav, error: &crate::Error) -> Response {
    let body =
        html! { p.flash.bad { "The local message table could not be read: " (error.to_string()) } };
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        layout(base, "Error", nav, None, body),
    )
        .into_response()
}

/// `2026-05-01 12:00:03 UTC`.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub(crate) fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// Where a route sends its events, in words.
pub(crate) fn route_text(route: &Route, event: &str) -> String {
    match route {
        Route::Kafka(k) => format!("topic {}", k.topic),
        Route::RabbitMq(r) => format!(
            "exchange {}, routing key {}{}",
            r.exchange.unwrap_or("(the transport's)"),
            r.routing_key,
            r.queue_name
                .map(|q| format!(", queue {q}"))
                .unwrap_or_default()
        ),
        _ => format!("the default transport, as {event}"),
    }
}

pub(crate) async fn overview(State(s): AppState, Extension(base): Extension<Base>) -> Response {
    let d = &s.dashboard;
    #[cfg(feature = "_outbox")]
    let outbox = match &d.outbox {
        Some(admin) => match outbox_overview(admin, &base).await {
            Ok(m) => Some(m),
            Err(e) => return error_page(&base, Nav::Overview, &e),
        },
        None => None,
    };
    #[cfg(not(feature = "_outbox"))]
    let outbox: Option<Markup> = None;
    let dead = d.broker.as_ref().map(|b| b.dead_letters().len());
    let body = html! {
        @match outbox {
            Some(m) => (m),
            None => p.note { "This app has no local message table (outbox)." },
        }
        h2 { "Consumers" }
        div.cards {
            a.card href=(base.at("/handlers")) {
                span.label { "Handlers" } span.value { (d.handlers.len()) }
            }
            a.card href=(base.at("/handlers")) {
                span.label { "Subscriptions" } span.value { (d.subscriptions.len()) }
            }
            @if let Some(n) = dead {
                a.card.failed[n > 0] href=(base.at("/dead-letters")) {
                    span.label { "Dead letters (in-memory)" } span.value { (n) }
                }
            }
        }
    };
    layout(&base, "Overview", Nav::Overview, Some(10), body).into_response()
}

#[cfg(feature = "_outbox")]
async fn outbox_overview(admin: &crate::outbox::OutboxAdmin, base: &Base) -> crate::Result<Markup> {
    let counts = admin.status_counts().await?;
    let oldest = admin.oldest_pending().await?;
    let rate = admin.sent_rate(RATE_WINDOW, RATE_BUCKET).await?;
    let peak = rate.counts.iter().copied().max().unwrap_or(0).max(1);
    let last = rate.counts.len().saturating_sub(2);
    let total: u64 = rate.counts.iter().sum();
    let card = |label: &str, status: &str, n: u64| {
        html! {
            a.card.(status) href=(base.at(&format!("/messages?status={status}"))) id=(format!("count-{status}")) {
                span.label { (label) } span.value { (n) }
            }
        }
    };
    Ok(html! {
        p.note { "Local message table " code { (admin.table_name()) } " on " (admin.database()) "." }
        div.cards {
            (card("Pending", "pending", counts.pending))
            (card("Failed", "failed", counts.failed))
            (card("Sent", "sent", counts.sent))
            div.card {
                span.label { "Oldest pending" }
                span.value id="oldest-pending" {
                    @match oldest {
                        Some(t) => (age(Utc::now() - t)),
                        None => "–",
                    }
                }
            }
        }
        h2 { "Sent per second, last " (RATE_WINDOW.as_secs() / 60) " minutes" }
        p.note {
            (format!("{:.1}", rate.per_second(last))) " msg/s in the last full "
            (RATE_BUCKET.as_secs()) " s; " (total) " sent in the window."
        }
        div.chart role="img" aria-label="messages sent per bucket" {
            @for (i, n) in rate.counts.iter().enumerate() {
                @let start = rate.since + TimeDelta::seconds((rate.bucket.as_secs() * i as u64) as i64);
                div.bar style=(format!("height:{}%", (*n * 100 / peak).max(1)))
                    title=(format!("{}: {n} sent ({:.1}/s)", start.format("%H:%M:%S"), rate.per_second(i))) {}
            }
        }
        div.axis {
            span { (rate.since.format("%H:%M")) } span { "now" }
        }
    })
}

pub(crate) async fn handlers(State(s): AppState, Extension(base): Extension<Base>) -> Response {
    let d = &s.dashboard;
    let body = html! {
        h2 { "Handlers" }
        table {
            thead { tr { th { "Handler" } th { "Event" } th { "Transport" } th { "Route" } th { "Group" } th { "Defined in" } } }
            tbody {
                @for h in &d.handlers {
                    tr {
                        td { code { (h.name()) } }
                        td { (h.event_name()) }
                        td { (h.route().kind().as_str()) }
                        td { (route_text(h.route(), h.event_name())) }
                        td { (h.group_override().unwrap_or("(default)")) }
                        td { code { (h.function()) } }
                    }
                }
            }
        }
        h2 { "Subscriptions" }
        table {
            thead { tr { th { "Transport" } th { "Destination" } th { "Group" } th { "Events" } th { "Handlers" } } }
            tbody {
                @for sub in &d.subscriptions {
                    tr {
                        td { (sub.transport.as_str()) }
                        td { code { (sub.destination) } }
                        td { code { (sub.group) } }
                        td { (sub.events.join(", ")) }
                        td { (sub.handlers.join(", ")) }
                    }
                }
            }
        }
    };
    layout(
        &base,
        "Handlers and subscriptions",
        Nav::Handlers,
        None,
        body,
    )
    .into_response()
}

pub(crate) async fn dead_letters(State(s): AppState, Extension(base): Extension<Base>) -> Response {
    let body = match &s.dashboard.broker {
        None => html! {
            p.note { "This app has no in-memory transport. RabbitMQ and Kafka keep dead letters in the broker: \
                      the queue's dead-letter exchange, the dead-letter topic." }
        },
        Some(b) => {
            let list = b.dead_letters();
            html! {
                p.note { (list.len()) " messages dead-lettered by the in-memory transport since the app started (newest last)." }
                table {
                    thead { tr { th { "Event" } th { "Group" } th { "Handler" } th { "Attempts" } th { "Reason" } th { "Body" } } }
                    tbody {
                        @for m in &list {
                            tr {
                                td { (m.topic) }
                                td { code { (m.group) } }
                                td { (m.dead_letter.handler.as_deref().unwrap_or("–")) }
                                td { (m.dead_letter.attempts) }
                                td { (m.dead_letter.reason) }
                                td { code.body { (clip(&String::from_utf8_lossy(&m.body), 300)) } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&base, "Dead letters", Nav::DeadLetters, None, body).into_response()
}

/// At most `max` characters of `s`, with `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
