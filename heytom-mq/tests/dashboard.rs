//! The dashboard's routes against real PostgreSQL, MariaDB and SQLite
//! tables, through `tower::ServiceExt::oneshot` on the router mounted under
//! `/dashboard`: the overview, the list with its filters and pages, a
//! message's detail (escaped), requeue (Failed → Pending → Sent by the
//! relay), delete, the cross-origin and method refusals, authentication,
//! handlers, subscriptions and dead letters.
#![cfg(feature = "dashboard")]

mod dashboard_support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine;
use chrono::{TimeDelta, Utc};
use dashboard_support::*;
use heytom_mq::dashboard::Dashboard;
use heytom_mq::{MessageFilter, MessageStatus, Outbox};
use http_body_util::BodyExt;
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8080";

struct Reply {
    status: StatusCode,
    location: Option<String>,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(router: &Router, req: Request<Body>) -> Reply {
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let location = headers
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        location,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8 page"),
    }
}

async fn get(router: &Router, uri: &str) -> Reply {
    let req = Request::get(uri)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    send(router, req).await
}

/// A POST as a browser on the dashboard's own page sends it.
async fn post(router: &Router, uri: &str) -> Reply {
    let req = Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap();
    send(router, req).await
}

/// Rows of the message table on a list page.
fn rows(body: &str) -> usize {
    body.matches("<tr data-id=\"").count()
}

fn mounted(dashboard: Dashboard) -> Router {
    Router::new().nest("/dashboard", dashboard.page_size(2).router())
}

async fn suite(outbox: Option<Outbox>) {
    let Some(outbox) = outbox else { return };
    let (running, outbox, delivered) = start_app(outbox).await;
    let seeded = seed(&outbox).await;
    let admin = running.outbox_admin().expect("outbox admin");
    let app = mounted(Dashboard::new(&running));

    // Overview: counts by status, links under the mount prefix.
    let r = get(&app, "/dashboard").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body
            .contains("href=\"/dashboard/messages?status=failed\""),
        "{}",
        r.body
    );
    assert!(r.body.contains("id=\"count-failed\""));
    let failed_card = r.body.split("id=\"count-failed\"").nth(1).unwrap();
    assert!(
        failed_card.contains("<span class=\"value\">4</span>"),
        "{failed_card}"
    );
    let pending_card = r.body.split("id=\"count-pending\"").nth(1).unwrap();
    assert!(pending_card.contains("<span class=\"value\">1</span>"));
    assert!(r.body.contains("id=\"oldest-pending\">5m"), "{}", r.body);
    assert!(r.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(r
        .body
        .contains("<a href=\"/dashboard\" class=\"active\">Overview</a>"));

    // The list: Pending + Failed by default, newest first, two per page.
    let total = |b: &str| b.contains("Page 1 of 3 · 5 messages");
    let r = get(&app, "/dashboard/messages").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(total(&r.body), "{}", r.body);
    assert_eq!(rows(&r.body), 2);
    let first = r.body.find(&seeded.later.to_string()).unwrap();
    let second = r.body.find(&seeded.script.to_string()).unwrap();
    assert!(first < second, "newest first");
    assert!(r
        .body
        .contains("href=\"/dashboard/messages?status=open&amp;page=2\""));
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = get(
            &app,
            &format!("/dashboard/messages?status=open&page={page}"),
        )
        .await;
        for id in seeded.failed.iter().chain([&seeded.script, &seeded.later]) {
            if r.body.contains(&format!("data-id=\"{id}\"")) {
                seen.push(*id);
            }
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every open row on exactly one of the pages");

    // Filters: status, type, time.
    let count = |r: &Reply| {
        r.body
            .split(" messages</span>")
            .next()
            .unwrap()
            .rsplit("· ")
            .next()
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(
        count(&get(&app, "/dashboard/messages?status=failed").await),
        4
    );
    assert_eq!(
        count(&get(&app, "/dashboard/messages?status=pending").await),
        1
    );
    assert_eq!(
        count(&get(&app, "/dashboard/messages?status=sent").await),
        2
    );
    assert_eq!(count(&get(&app, "/dashboard/messages?status=all").await), 7);
    let r = get(&app, "/dashboard/messages?status=all&type=DashboardOld").await;
    assert_eq!(count(&r), 2);
    assert!(r.body.contains(&seeded.old[0].to_string()));
    assert_eq!(
        count(&get(&app, "/dashboard/messages?status=all&type=DashboardNote").await),
        4
    );
    let day_ago = (Utc::now() - TimeDelta::days(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    assert_eq!(
        count(
            &get(
                &app,
                &format!("/dashboard/messages?status=all&to={day_ago}")
            )
            .await
        ),
        2
    );
    assert_eq!(
        count(
            &get(
                &app,
                &format!("/dashboard/messages?status=all&from={day_ago}")
            )
            .await
        ),
        5
    );
    let quarter = (Utc::now() - TimeDelta::minutes(15)).to_rfc3339();
    let r = get(
        &app,
        &format!(
            "/dashboard/messages?status=failed&from={}",
            quarter.replace('+', "%2B")
        ),
    )
    .await;
    assert_eq!(count(&r), 1, "only the script row is newer than 15 minutes");
    assert_eq!(
        get(&app, "/dashboard/messages?status=bogus").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/dashboard/messages?from=yesterday").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/dashboard/messages?page=0").await.status,
        StatusCode::BAD_REQUEST
    );

    // Detail: headers, body, error, retry count; user data escaped.
    let r = get(&app, &format!("/dashboard/messages/{}", seeded.failed[0])).await;
    assert_eq!(r.status, StatusCode::OK);
    for part in [
        "corr-42",
        "acme",
        "failed note 0",
        "broker refused note 0",
        "id=\"retry-count\">3<",
        "id=\"requeue\"",
    ] {
        assert!(r.body.contains(part), "{part} in {}", r.body);
    }
    let r = get(&app, &format!("/dashboard/messages/{}", seeded.script)).await;
    assert!(
        r.body.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{}",
        r.body
    );
    assert!(r.body.contains("&lt;b&gt;bold&lt;/b&gt; error"));
    assert!(!r.body.contains("<script"), "a raw script tag in the page");
    assert!(!r.body.contains("<b>"));
    assert_eq!(
        get(
            &app,
            &format!("/dashboard/messages/{}", uuid::Uuid::now_v7())
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/dashboard/messages/not-an-id").await.status,
        StatusCode::BAD_REQUEST
    );

    // Changes are POST only, and refused from another origin.
    let target = seeded.failed[2];
    let r = get(&app, &format!("/dashboard/messages/{target}/requeue")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let req = Request::post(format!("/dashboard/messages/{target}/requeue"))
            .header(header::HOST, HOST)
            .header(name, value)
            .body(Body::empty())
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {value}");
        let req = Request::post(format!("/dashboard/messages/{target}/delete"))
            .header(header::HOST, HOST)
            .header(name, value)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, req).await.status, StatusCode::FORBIDDEN);
    }
    let row = admin.message(target).await.unwrap().expect("still there");
    assert_eq!(
        (row.status, row.retry_count),
        (MessageStatus::Failed, 3),
        "refused changes changed nothing"
    );

    // Requeue: Failed → Pending, then the relay sends it → Sent, delivered.
    let r = post(&app, &format!("/dashboard/messages/{target}/requeue")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/dashboard/messages/{target}?done=requeued").as_str())
    );
    wait_status(&admin, target, MessageStatus::Sent).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !delivered
        .lock()
        .unwrap()
        .contains(&"failed note 2".to_owned())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the requeued note was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get(&app, &format!("/dashboard/messages/{target}?done=requeued")).await;
    assert!(r.body.contains("class=\"status Sent\""), "{}", r.body);
    assert!(
        !r.body.contains("id=\"requeue\""),
        "no requeue button on a Sent row"
    );
    // Requeue again: the row is no longer Failed.
    let r = post(&app, &format!("/dashboard/messages/{target}/requeue")).await;
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/dashboard/messages/{target}?done=not-requeued").as_str())
    );
    // The send shows in the rate of the overview.
    let rate = admin
        .sent_rate(Duration::from_secs(600), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(rate.counts.iter().sum::<u64>(), 1, "{rate:?}");
    assert_eq!(rate.counts.len(), 60);
    let r = get(&app, "/dashboard").await;
    assert!(r.body.contains("1 sent in the window"), "{}", r.body);
    // The same table, read without the app.
    let counts = outbox.admin().unwrap().status_counts().await.unwrap();
    assert_eq!(counts, admin.status_counts().await.unwrap());
    assert_eq!((counts.pending, counts.failed, counts.sent), (1, 3, 3));

    // Delete.
    let victim = seeded.failed[1];
    let r = post(&app, &format!("/dashboard/messages/{victim}/delete")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location.as_deref(),
        Some("/dashboard/messages?done=deleted")
    );
    assert!(admin.message(victim).await.unwrap().is_none(), "deleted");
    assert_eq!(
        admin
            .find(&MessageFilter::status(MessageStatus::Failed), 0, 100)
            .await
            .unwrap()
            .total,
        2
    );
    let r = post(&app, &format!("/dashboard/messages/{victim}/delete")).await;
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/dashboard/messages/{victim}?done=not-deleted").as_str())
    );

    // Handlers, subscriptions, dead letters (the rejecting handler's).
    let r = get(&app, "/dashboard/handlers").await;
    for part in [
        "record_note",
        "reject_note",
        "rejecting-group",
        "DashboardNote",
    ] {
        assert!(r.body.contains(part), "{part} in {}", r.body);
    }
    assert_eq!(
        running.subscriptions().len(),
        2,
        "{:?}",
        running.subscriptions()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while running
        .in_memory_broker()
        .unwrap()
        .dead_letters()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get(&app, "/dashboard/dead-letters").await;
    assert!(
        r.body.contains("rejecting-group") && r.body.contains("failed note 2"),
        "{}",
        r.body
    );

    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_postgres() {
    suite(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_mysql() {
    suite(mysql().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_sqlite() {
    suite(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_when_configured() {
    let Some(outbox) = sqlite().await else { return };
    let (running, _, _) = start_app(outbox).await;
    let app = mounted(
        Dashboard::new(&running)
            .basic_auth("ops", "pa55")
            .bearer_token("t0k"),
    );
    let with = |auth: Option<String>| {
        let mut req = Request::get("/dashboard").header(header::HOST, HOST);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.body(Body::empty()).unwrap()
    };
    let r = send(&app, with(None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    let basic = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    assert_eq!(
        send(&app, with(Some(basic("ops:wrong")))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, with(Some("Bearer nope".into()))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, with(Some(basic("ops:pa55")))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with(Some("Bearer t0k".into()))).await.status,
        StatusCode::OK
    );
    // A change without credentials is refused before anything else.
    let req = Request::post(format!(
        "/dashboard/messages/{}/delete",
        uuid::Uuid::now_v7()
    ))
    .header(header::HOST, HOST)
    .body(Body::empty())
    .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::UNAUTHORIZED);
    // Served on a non-loopback address without credentials: warned.
    assert!(Dashboard::new(&running).warn_if_exposed("0.0.0.0:8080".parse().unwrap()));
    assert!(!Dashboard::new(&running).warn_if_exposed("127.0.0.1:8080".parse().unwrap()));
    assert!(!Dashboard::new(&running)
        .bearer_token("x")
        .warn_if_exposed("0.0.0.0:8080".parse().unwrap()));
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_outbox_the_pages_say_so() {
    let running = heytom_mq::App::builder()
        .in_memory()
        .discover(false)
        .start()
        .await
        .unwrap();
    let app = heytom_mq::dashboard::router(&running);
    let r = get(&app, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("no local message table"));
    assert_eq!(get(&app, "/messages").await.status, StatusCode::NOT_FOUND);
    assert!(get(&app, "/messages/x")
        .await
        .body
        .contains("no local message table"));
    let r = get(&app, "/asyncapi.json").await;
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(r.status, StatusCode::OK);
    let served: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        served["asyncapi"], "3.0.0",
        "the app's own document: {served}"
    );
    let doc = serde_json::json!({"asyncapi": "3.0.0"});
    let app = Dashboard::new(&running)
        .asyncapi_document(doc.clone())
        .router();
    let r = get(&app, "/asyncapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
        doc
    );
    running.shutdown().await.unwrap();
}

/// A log sink for one test thread.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn warnings(&self) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches("without authentication")
            .count()
    }
}

// Current-thread runtime: the router runs on the thread whose subscriber
// collects the log.
#[tokio::test]
async fn reaching_it_beyond_loopback_without_credentials_is_logged_once() {
    let log = Log::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let running = heytom_mq::App::builder()
        .in_memory()
        .discover(false)
        .start()
        .await
        .unwrap();
    let at = |host: &'static str| {
        Request::get("/")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };

    let local = heytom_mq::dashboard::router(&running);
    for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
        assert_eq!(send(&local, at(host)).await.status, StatusCode::OK);
    }
    assert_eq!(log.warnings(), 0, "loopback is not exposed");

    let exposed = heytom_mq::dashboard::router(&running);
    assert_eq!(
        send(&exposed, at("ops.example.com")).await.status,
        StatusCode::OK
    );
    assert_eq!(log.warnings(), 1);
    send(&exposed, at("10.1.2.3:8080")).await;
    assert_eq!(log.warnings(), 1, "warned once");

    let protected = Dashboard::new(&running).bearer_token("t").router();
    send(&protected, at("ops.example.com")).await;
    assert_eq!(log.warnings(), 1, "no warning with credentials");
    running.shutdown().await.unwrap();
}
