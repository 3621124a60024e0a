//! `RunningApp::health()` and the `/health/*` endpoints (feature `axum`),
//! against the real broker: RabbitMQ stopped (`rabbitmqctl stop_app`, under
//! the flock on `/tmp/heytom-rabbit-outage.lock`, restarted by a guard even
//! when the test fails) turns `/health/ready` into a 503 naming RabbitMQ;
//! started again, it is 200. The outbox part is broken on purpose too (its
//! table dropped under the scanner).

use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use heytom_mq::prelude::*;
use heytom_mq::{HandlerEntry, RunningApp};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt;

mod outage_support;
use outage_support::{rabbit, rabbit_url, require_services, unique};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "health.checked",
    exchange = "heytom.health.test",
    exchange_type = "topic"
)]
struct HealthChecked {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
struct LocalPing {
    n: u32,
}

/// GET `path` on the app's health router: the status and the JSON body.
async fn get(running: &RunningApp, path: &str) -> (StatusCode, Value) {
    let response = heytom_mq::health::router(running)
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

/// Polls `/health/ready` until it answers `want`; the last body.
async fn ready_becomes(running: &RunningApp, want: StatusCode, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let (status, body) = get(running, "/health/ready").await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < until,
            "/health/ready did not answer {want} within {within:?}; last answer {status}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn sqlite_pool(name: &str) -> sqlx::SqlitePool {
    let path = std::env::temp_dir().join(format!("heytom-health-{name}.db"));
    let _ = std::fs::remove_file(&path);
    let opts =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap()
}

fn fast_scanner() -> LocalMessageRetryOptions {
    LocalMessageRetryOptions {
        scan_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_in_memory_app_is_ready_until_it_shuts_down() {
    let running = App::builder()
        .in_memory()
        .discover(false)
        .handler_entry(HandlerEntry::from_closure("ping", |_: LocalPing| async {}))
        .start()
        .await
        .unwrap();
    let health = running.health();
    assert!(health.is_ready(), "{health:?}");
    assert_eq!(health.transports.len(), 1);
    assert_eq!(health.transports[0].transport, "InMemory");
    assert!(health.transports[0].state.is_connected());
    assert_eq!(health.subscriptions.len(), 1);
    assert_eq!(health.subscriptions[0].handlers, vec!["ping".to_owned()]);
    assert!(health.subscriptions[0].state.is_running());

    let (status, live) = get(&running, "/health/live").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(live["live"], true);
    let (status, body) = get(&running, "/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ready"], true);
    assert_eq!(body["transports"][0]["state"], "connected");
    assert_eq!(body["subscriptions"][0]["state"], "running");

    let check = running.health_check();
    running.shutdown().await.unwrap();
    let after = check.health();
    assert!(!after.is_ready());
    assert!(
        after.problems.iter().any(|p| p.contains("shutting down")),
        "{after:?}"
    );
    assert!(after
        .subscriptions
        .iter()
        .all(|s| s.state == heytom_mq::SubscriptionState::Stopped));
}

#[tokio::test]
async fn the_outbox_scanner_failing_makes_the_app_unready() {
    let table = format!("HealthRows{}", unique());
    let pool = sqlite_pool(&table).await;
    let running = App::builder()
        .in_memory()
        .discover(false)
        .handler_entry(HandlerEntry::from_closure("ping", |_: LocalPing| async {}))
        .outbox(Outbox::sqlite(pool.clone()).table_name(&table))
        .local_message_retry(fast_scanner())
        .start()
        .await
        .unwrap();
    let body = ready_becomes(&running, StatusCode::OK, Duration::from_secs(60)).await;
    // Counted by a scan that succeeded.
    let until = Instant::now() + Duration::from_secs(60);
    while running
        .health()
        .outbox
        .unwrap()
        .last_successful_scan
        .is_none()
    {
        assert!(Instant::now() < until, "no successful scan: {body:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outbox = running.health().outbox.unwrap();
    assert_eq!(outbox.table, table);
    assert_eq!(outbox.pending, Some(0));
    assert_eq!(outbox.failed, Some(0));
    assert!(outbox.is_ok());

    // Break it: the table goes away under the scanner.
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE \"{table}\"")))
        .execute(&pool)
        .await
        .unwrap();
    let body = ready_becomes(
        &running,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(body["ready"], false);
    let problems = body["problems"].to_string();
    assert!(problems.contains("outbox scan failed"), "{body:#}");
    assert!(body["outbox"]["last_error"].is_string(), "{body:#}");
    assert!(!running.health().is_ready());
    let _ = running.shutdown().await;
}

/// Holds the flock other broker-breaking tests take while RabbitMQ is down
/// (released when the file is closed).
struct OutageLock {
    _file: std::fs::File,
}

impl OutageLock {
    fn take() -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/heytom-rabbit-outage.lock")
            .expect("the outage lock file");
        // SAFETY: a valid open descriptor; flock has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        OutageLock { _file: file }
    }
}

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// RabbitMQ stopped (`stop_app`) while it lives; started again when it is
/// dropped, also when the test panics. Declared after the lock, so it is
/// dropped first: the broker is up again before the lock is released.
struct BrokerStopped {
    _lock: OutageLock,
    started: bool,
}

impl BrokerStopped {
    fn stop() -> Self {
        let lock = OutageLock::take();
        let guard = BrokerStopped {
            _lock: lock,
            started: false,
        };
        rabbitmqctl(&["stop_app"]).expect("stop RabbitMQ");
        guard
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            if let Err(e) = rabbitmqctl(&["start_app"]) {
                eprintln!("{e}");
            }
            let _ = rabbitmqctl(&["await_startup"]);
        }
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        self.start();
    }
}

async fn delete_queue(queue: &str) {
    if let Ok(conn) =
        lapin::Connection::connect(&rabbit_url(), lapin::ConnectionProperties::default()).await
    {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.queue_delete(queue.into(), Default::default()).await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
}

#[tokio::test]
async fn ready_is_503_while_rabbitmq_is_stopped_and_200_once_it_is_back() {
    let queue = format!("heytom.health.{}", unique());
    let started = App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .handler_entry(
            HandlerEntry::from_closure("health_checked", |_: HealthChecked| async {})
                .group(queue.clone()),
        )
        .start()
        .await;
    let running = match started {
        Ok(r) => r,
        Err(e) if !require_services() => {
            eprintln!("skipped: RabbitMQ is not reachable ({e})");
            return;
        }
        Err(e) => panic!("RabbitMQ is required: {e}"),
    };
    let body = ready_becomes(&running, StatusCode::OK, Duration::from_secs(60)).await;
    assert_eq!(body["transports"][0]["transport"], "RabbitMQ");
    assert_eq!(body["transports"][0]["state"], "connected");
    assert_eq!(body["subscriptions"][0]["group"], queue.as_str());
    assert_eq!(body["subscriptions"][0]["state"], "running");

    let mut broker = BrokerStopped::stop();
    let down = ready_becomes(
        &running,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(down["ready"], false);
    let problems = down["problems"].to_string();
    assert!(problems.contains("RabbitMQ"), "{down:#}");
    // The transport reports the error it got, the subscription its loss.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let health = running.health();
        let transport = &health.transports[0];
        let subscription = &health.subscriptions[0];
        let transport_down = matches!(
            &transport.state,
            heytom_mq::ConnectionState::Reconnecting { last_error: Some(e), .. } if !e.is_empty()
        );
        let subscription_down = matches!(
            subscription.state,
            heytom_mq::SubscriptionState::Reconnecting { .. }
        );
        if transport_down && subscription_down {
            break;
        }
        assert!(
            Instant::now() < until,
            "transport and subscription not both reported down: {health:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (live, _) = get(&running, "/health/live").await;
    assert_eq!(live, StatusCode::OK, "live while the broker is down");

    broker.start();
    let up = ready_becomes(&running, StatusCode::OK, Duration::from_secs(120)).await;
    drop(broker);
    assert_eq!(up["ready"], true);
    assert_eq!(up["problems"], serde_json::json!([]));
    assert_eq!(up["transports"][0]["state"], "connected");
    assert_eq!(up["subscriptions"][0]["state"], "running");

    let _ = running.shutdown().await;
    delete_queue(&queue).await;
}
