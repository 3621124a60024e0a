//! The page layout and the pages that are not about single messages:
//! overview, handlers and subscriptions, dead letters.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup, DOCTYPE};

use super::{AppState, Base};
use crate::event::Route;

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
        Some(admin) => match super::messages::outbox_overview(admin, &base).await {
            Ok(m) => Some(m),
            Err(e) => return super::messages::error_page(&base, Nav::Overview, &e),
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
