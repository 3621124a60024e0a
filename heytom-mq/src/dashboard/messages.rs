//! The pages of the local message table: the overview's counts and send
//! rate, the list with filters and paging, a message's detail, and the
//! requeue and delete actions.

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::pages::{clip, layout, Nav};
use super::{AppState, Base};
use crate::outbox::{LocalMessage, MessageFilter, MessageStatus, OutboxAdmin};

/// The sent-rate chart: buckets of this length ...
const RATE_BUCKET: Duration = Duration::from_secs(10);
/// ... over this window.
const RATE_WINDOW: Duration = Duration::from_secs(600);

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
fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn age(d: chrono::TimeDelta) -> String {
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

/// The overview's part about the table: counts, oldest pending, send rate.
pub(crate) async fn outbox_overview(
    admin: &crate::outbox::OutboxAdmin,
    base: &Base,
) -> crate::Result<Markup> {
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

/// The query of the list page; empty fields (as forms send them) are unset.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    message_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
    done: Option<String>,
}

/// The status choices of the filter: (value, label, statuses).
const STATUSES: [(&str, &str, &[MessageStatus]); 5] = [
    (
        "open",
        "Pending + Failed",
        &[MessageStatus::Pending, MessageStatus::Failed],
    ),
    ("pending", "Pending", &[MessageStatus::Pending]),
    ("failed", "Failed", &[MessageStatus::Failed]),
    ("sent", "Sent", &[MessageStatus::Sent]),
    ("all", "All", &[]),
];

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `2026-05-01T12:00`, `2026-05-01T12:00:30` (as `datetime-local` inputs
/// send them, read as UTC) or RFC 3339.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn admin_of(state: &AppState) -> Option<&OutboxAdmin> {
    state.0.dashboard.outbox.as_ref()
}

fn no_outbox(base: &Base) -> Response {
    let body = html! { p.note { "This app has no local message table (outbox)." } };
    (
        StatusCode::NOT_FOUND,
        layout(base, "Messages", Nav::Messages, None, body),
    )
        .into_response()
}

fn bad_request(base: &Base, what: String) -> Response {
    let body = html! { p.flash.bad { (what) } };
    (
        StatusCode::BAD_REQUEST,
        layout(base, "Messages", Nav::Messages, None, body),
    )
        .into_response()
}

fn status_badge(s: MessageStatus) -> Markup {
    html! { span.status.(s.as_str()) { (s.as_str()) } }
}

pub(crate) async fn list(
    state: AppState,
    Extension(base): Extension<Base>,
    Query(q): Query<ListQuery>,
) -> Response {
    let Some(admin) = admin_of(&state) else {
        return no_outbox(&base);
    };
    let status = set(&q.status).unwrap_or("open");
    let Some((_, _, statuses)) = STATUSES.iter().find(|(v, _, _)| *v == status) else {
        return bad_request(&base, format!("Unknown status {status:?}."));
    };
    let mut filter = MessageFilter {
        statuses: statuses.to_vec(),
        message_type: set(&q.message_type).map(str::to_owned),
        ..MessageFilter::default()
    };
    for (field, value, slot) in [
        ("from", set(&q.from), &mut filter.created_from),
        ("to", set(&q.to), &mut filter.created_to),
    ] {
        if let Some(v) = value {
            match parse_time(v) {
                Some(t) => *slot = Some(t),
                None => {
                    return bad_request(&base, format!("Cannot read {field} = {v:?} as a time."))
                }
            }
        }
    }
    let page = match set(&q.page).map(str::parse::<u64>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return bad_request(&base, "The page is a number from 1.".to_owned()),
    };
    let size = state.0.dashboard.page_size;
    let offset = (page - 1).saturating_mul(u64::from(size));
    let (rows, types) =
        match tokio::try_join!(admin.find(&filter, offset, size), admin.message_types()) {
            Ok(r) => r,
            Err(e) => return error_page(&base, Nav::Messages, &e),
        };
    let pages = rows.total.div_ceil(u64::from(size)).max(1);
    let link = |page: u64| {
        let mut qs = format!("status={}&page={page}", encode(status));
        for (k, v) in [("type", &q.message_type), ("from", &q.from), ("to", &q.to)] {
            if let Some(v) = set(v) {
                qs.push_str(&format!("&{k}={}", encode(v)));
            }
        }
        base.at(&format!("/messages?{qs}"))
    };
    let body = html! {
        @if set(&q.done) == Some("deleted") { p.flash { "Message deleted." } }
        form.filters method="get" action=(base.at("/messages")) {
            label { "Status"
                select name="status" {
                    @for (v, label, _) in STATUSES { option value=(v) selected[v == status] { (label) } }
                }
            }
            label { "Type"
                select name="type" {
                    option value="" { "Any" }
                    @for t in &types { option value=(t) selected[set(&q.message_type) == Some(t.as_str())] { (t) } }
                }
            }
            label { "Created from (UTC)" input type="datetime-local" step="1" name="from" value=[set(&q.from)]; }
            label { "Created before (UTC)" input type="datetime-local" step="1" name="to" value=[set(&q.to)]; }
            button type="submit" { "Filter" }
        }
        table id="messages" {
            thead { tr { th { "Created" } th { "Type" } th { "Status" } th { "Retries" } th { "Destination" } th { "Error" } th {} } }
            tbody {
                @for m in &rows.messages {
                    tr data-id=(m.id.to_string()) {
                        td { a href=(base.at(&format!("/messages/{}", m.id))) { (time(m.created_at)) } }
                        td { (m.message_type) }
                        td { (status_badge(m.status)) }
                        td { (m.retry_count) }
                        td { (m.mq_type) " · " (m.topic) @if let Some(k) = &m.routing_key { " · " (k) } }
                        td.error { (clip(m.error_message.as_deref().unwrap_or(""), 160)) }
                        td {
                            @if m.status == MessageStatus::Failed {
                                form.inline method="post" action=(base.at(&format!("/messages/{}/requeue", m.id))) {
                                    button type="submit" { "Requeue" }
                                }
                            }
                        }
                    }
                }
                @if rows.messages.is_empty() { tr { td colspan="7" .note { "No messages match." } } }
            }
        }
        div.pager {
            @if page > 1 { a href=(link(page - 1)) rel="prev" { "← Newer" } }
            span { "Page " (page) " of " (pages) " · " (rows.total) " messages" }
            @if page < pages { a href=(link(page + 1)) rel="next" { "Older →" } }
        }
    };
    layout(&base, "Messages", Nav::Messages, None, body).into_response()
}

/// The headers column: a JSON object of strings, as rows; anything else as text.
fn headers_table(raw: Option<&str>) -> Markup {
    let Some(raw) = raw else {
        return html! { p.note { "No headers." } };
    };
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw) {
        Ok(map) => html! {
            table id="headers" {
                tbody {
                    @for (k, v) in &map {
                        tr { th { (k) } td { code { @match v { serde_json::Value::String(s) => (s), other => (other.to_string()) } } } }
                    }
                }
            }
        },
        Err(_) => html! { pre { (raw) } },
    }
}

/// The body, indented when it is JSON.
fn pretty_body(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_owned())
}

fn detail_page(base: &Base, m: &LocalMessage, done: Option<&str>) -> Markup {
    let flash = match done {
        Some("requeued") => Some((
            true,
            "Requeued: the row is Pending again and the relay sends it now.",
        )),
        Some("not-requeued") => Some((false, "Not requeued: the row is not Failed (any more).")),
        Some("not-deleted") => Some((
            false,
            "Not deleted: a sender holds the row right now; try again in a moment.",
        )),
        _ => None,
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".to_owned());
    let body = html! {
        @if let Some((good, text)) = flash { p.flash.bad[!good] { (text) } }
        dl.fields {
            dt { "Id" } dd { code id="message-id" { (m.id.to_string()) } }
            dt { "Type" } dd { (m.message_type) }
            dt { "Status" } dd id="status" { (status_badge(m.status)) }
            dt { "Retry count" } dd id="retry-count" { (m.retry_count) }
            dt { "Error" } dd.error id="error" { (opt(&m.error_message)) }
            dt { "Transport" } dd { (m.mq_type) }
            dt { "Topic / exchange" } dd { code { (m.topic) } }
            dt { "Routing key" } dd { (opt(&m.routing_key)) }
            dt { "Partition key" } dd { (opt(&m.partition_key)) }
            dt { "Created" } dd { (time(m.created_at)) }
            dt { "Updated" } dd { (m.updated_at.map(time).unwrap_or_else(|| "–".to_owned())) }
            dt { "Next attempt" } dd {
                @if m.next_attempt_at > DateTime::UNIX_EPOCH { (time(m.next_attempt_at)) } @else { "–" }
            }
            dt { "Leased by" } dd { (opt(&m.locked_by)) }
        }
        div.actions {
            @if m.status == MessageStatus::Failed {
                form.inline method="post" action=(base.at(&format!("/messages/{}/requeue", m.id))) {
                    button id="requeue" type="submit" { "Requeue" }
                }
            }
            form.inline method="post" action=(base.at(&format!("/messages/{}/delete", m.id))) {
                button.danger id="delete" type="submit" { "Delete" }
            }
            a href=(base.at("/messages")) { "Back to the list" }
        }
        h2 { "Headers" }
        (headers_table(m.headers.as_deref()))
        h2 { "Body" }
        pre id="body" { (pretty_body(&m.message_body)) }
    };
    // A Pending row is about to change: show it as it does.
    let refresh = (m.status == MessageStatus::Pending).then_some(2);
    layout(base, "Message", Nav::Messages, refresh, body)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DetailQuery {
    done: Option<String>,
}

pub(crate) async fn detail(
    state: AppState,
    Extension(base): Extension<Base>,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let Some(admin) = admin_of(&state) else {
        return no_outbox(&base);
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return bad_request(&base, format!("{id:?} is not a message id."));
    };
    match admin.message(id).await {
        Ok(Some(m)) => detail_page(&base, &m, set(&q.done)).into_response(),
        Ok(None) => {
            let body = html! { p.note { "No message " code { (id.to_string()) } " (deleted, or removed by retention)." } };
            (
                StatusCode::NOT_FOUND,
                layout(&base, "Message", Nav::Messages, None, body),
            )
                .into_response()
        }
        Err(e) => error_page(&base, Nav::Messages, &e),
    }
}

fn see_other(to: String) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

pub(crate) async fn requeue(
    state: AppState,
    Extension(base): Extension<Base>,
    Path(id): Path<String>,
) -> Response {
    let Some(admin) = admin_of(&state) else {
        return no_outbox(&base);
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return bad_request(&base, format!("{id:?} is not a message id."));
    };
    match admin.requeue(id).await {
        Ok(done) => {
            let outcome = if done { "requeued" } else { "not-requeued" };
            tracing::info!(%id, outcome, "dashboard: requeue");
            see_other(base.at(&format!("/messages/{id}?done={outcome}")))
        }
        Err(e) => error_page(&base, Nav::Messages, &e),
    }
}

pub(crate) async fn delete(
    state: AppState,
    Extension(base): Extension<Base>,
    Path(id): Path<String>,
) -> Response {
    let Some(admin) = admin_of(&state) else {
        return no_outbox(&base);
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return bad_request(&base, format!("{id:?} is not a message id."));
    };
    match admin.delete(id).await {
        Ok(true) => {
            tracing::info!(%id, "dashboard: deleted a message");
            see_other(base.at("/messages?done=deleted"))
        }
        Ok(false) => see_other(base.at(&format!("/messages/{id}?done=not-deleted"))),
        Err(e) => error_page(&base, Nav::Messages, &e),
    }
}
