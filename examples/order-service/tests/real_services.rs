//! The order service as a real process on the real services (PostgreSQL,
//! RabbitMQ, Kafka), driven over HTTP: orders are invoiced by billing
//! (RabbitMQ), counted once by analytics (Kafka), reminded on time,
//! cancelled; a service killed with SIGKILL right after taking an order
//! invoices it after its restart; bad requests get clear answers.
//!
//! Servers: `HEYTOM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), `HEYTOM_TEST_RABBITMQ_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
//! `HEYTOM_KAFKA_BOOTSTRAP_SERVERS` (default: a tansu broker started by
//! `scripts/kafka-broker.sh`). Each run uses its own PostgreSQL schema.
//! Unreachable servers skip the test with a notice, or fail it when
//! `HEYTOM_TEST_REQUIRE_SERVICES=1`.

use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use heytom_mq::sqlx::{self, AssertSqlSafe, PgPool};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A generous upper bound for anything to happen on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn reachable(host_ports: &str) -> bool {
    host_ports.split(',').any(|s| {
        s.trim()
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| StdTcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

/// The host:port of an `amqp://user:pass@host:port/vhost` URL.
fn amqp_host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    }
}

/// The Kafka broker: `HEYTOM_KAFKA_BOOTSTRAP_SERVERS`, or one the repository's
/// script starts.
fn kafka() -> Result<String, String> {
    if let Ok(servers) = std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS") {
        return if reachable(&servers) {
            Ok(servers)
        } else {
            Err(format!("Kafka at {servers} is not reachable"))
        };
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-broker.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("export HEYTOM_KAFKA_BOOTSTRAP_SERVERS="))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| {
            format!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The services, or `None` (after a notice) when one is missing and
/// services are not required.
async fn services() -> Option<(PgPool, String, String, String)> {
    let pg_url = env_or(
        "HEYTOM_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let rabbit_url = env_or(
        "HEYTOM_TEST_RABBITMQ_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    );
    let missing = |what: String| {
        assert!(
            !require_services(),
            "HEYTOM_TEST_REQUIRE_SERVICES=1 but {what}"
        );
        eprintln!("skipping the order service test: {what}");
        None
    };
    let pool = match PgPool::connect(&pg_url).await {
        Ok(p) => p,
        Err(e) => return missing(format!("PostgreSQL at {pg_url} is not reachable: {e}")),
    };
    if !reachable(&amqp_host_port(&rabbit_url)) {
        return missing(format!("RabbitMQ at {rabbit_url} is not reachable"));
    }
    let kafka = match kafka() {
        Ok(k) => k,
        Err(e) => return missing(e),
    };
    Some((pool, pg_url, rabbit_url, kafka))
}

/// The service's process; killed when dropped.
struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServiceProcess {
    async fn start(env: &[(&str, String)]) -> ServiceProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_order-service"));
        cmd.env_remove("HEYTOM_DATABASE_URL")
            .env_remove("HEYTOM_RABBITMQ_URL")
            .env_remove("HEYTOM_KAFKA_BOOTSTRAP_SERVERS")
            .env("ORDER_SERVICE_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the order-service binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("stdout readable") {
                if let Some(addr) = line.strip_prefix("order-service listening on http://") {
                    return addr.parse::<SocketAddr>().expect("an address");
                }
            }
            panic!("order-service exited before listening");
        })
        .await
        .expect("order-service listens in time");
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServiceProcess { child, addr }
    }

    /// SIGKILL: no shutdown, nothing flushed.
    async fn kill(mut self) {
        self.child.kill().await.expect("killed");
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("stops in time")
            .expect("waited");
        assert!(status.success(), "order-service exited with {status}");
    }
}

/// One HTTP/1.1 request; the status and the JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, json)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    http(addr, "GET", path, None).await
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http(addr, "POST", path, Some(&body.to_string())).await
}

/// Polls `GET path` until `done` holds for a 200 answer; fails after [`PATIENCE`].
async fn until(addr: SocketAddr, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(addr, path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: GET {path} answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn place(addr: SocketAddr, customer: &str, amount_cents: i64) -> String {
    let (status, order) = post(
        addr,
        "/orders",
        json!({ "customer": customer, "amount_cents": amount_cents }),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "created", "{order}");
    order["id"].as_str().expect("an id").to_owned()
}

async fn invoiced(addr: SocketAddr, id: &str) -> Value {
    until(addr, &format!("/orders/{id}"), "billing's invoice", |o| {
        o["status"] == "invoiced" && o["invoice"]["status"] == "open"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_over_http_on_postgres_rabbitmq_and_kafka() {
    let Some((pool, pg_url, rabbit_url, kafka)) = services().await else {
        return;
    };
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 10..];
    let schema = format!("order_service_{run}");
    // The schema name is ours: a fixed prefix and hex digits.
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("schema created");
    let _drop_schema = DropSchema {
        url: pg_url.clone(),
        schema: schema.clone(),
    };
    let separator = if pg_url.contains('?') { '&' } else { '?' };
    let database_url = format!("{pg_url}{separator}options=-c%20search_path%3D{schema}");
    let env = [
        ("HEYTOM_DATABASE_URL", database_url),
        ("HEYTOM_RABBITMQ_URL", rabbit_url),
        ("HEYTOM_KAFKA_BOOTSTRAP_SERVERS", kafka),
        ("ORDER_SERVICE_REMINDER_AFTER_SECS", "3".to_owned()),
    ];
    let customer = format!("ada-{run}");
    let stats_path = format!("/customers/{customer}/stats");

    let service = ServiceProcess::start(&env).await;
    let addr = service.addr;
    assert_eq!(get(addr, "/health").await.0, 200);

    // An order: invoiced by billing (RabbitMQ), counted by analytics (Kafka),
    // reminded once its reminder is due.
    let first = place(addr, &customer, 1999).await;
    invoiced(addr, &first).await;
    until(addr, &stats_path, "analytics' count", |s| {
        s["orders_invoiced"] == 1 && s["revenue_cents"] == 1999
    })
    .await;
    let reminded = until(
        addr,
        &format!("/orders/{first}"),
        "the payment reminder",
        |o| o["reminders_sent"] == 1,
    )
    .await;
    assert_eq!(reminded["status"], "invoiced");

    // Cancelled: billing voids the invoice; a second cancel is a conflict.
    let second = place(addr, &customer, 500).await;
    invoiced(addr, &second).await;
    let (status, cancelled) = post(addr, &format!("/orders/{second}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    until(
        addr,
        &format!("/orders/{second}"),
        "the void invoice",
        |o| o["invoice"]["status"] == "void",
    )
    .await;
    let (status, body) = post(addr, &format!("/orders/{second}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");

    // Bad requests.
    assert_eq!(get(addr, "/orders/no-such-order").await.0, 404);
    assert_eq!(
        post(addr, "/orders/no-such-order/cancel", json!({}))
            .await
            .0,
        404
    );
    let (status, body) = post(
        addr,
        "/orders",
        json!({ "customer": customer, "amount_cents": -5 }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("amount_cents")),
        "{body}"
    );
    let (status, body) = http(addr, "POST", "/orders", Some("{\"customer\":")).await;
    assert_eq!(status, 400, "{body}");

    // Killed right after taking an order: the order and its event were
    // committed together, so after the restart it is invoiced all the same.
    let third = place(addr, &customer, 250).await;
    service.kill().await;
    let service = ServiceProcess::start(&env).await;
    let addr = service.addr;
    invoiced(addr, &third).await;
    // Its reminder, scheduled in the same transaction, survived the kill.
    until(
        addr,
        &format!("/orders/{third}"),
        "the reminder after the restart",
        |o| o["reminders_sent"] == 1,
    )
    .await;

    // Every invoiced order counted once: 1999 + 500 + 250 (the cancelled
    // one was invoiced before it was cancelled).
    let stats = until(addr, &stats_path, "analytics' count of three", |s| {
        s["orders_invoiced"] == 3
    })
    .await;
    assert_eq!(stats["revenue_cents"], 2749, "{stats}");
    let (status, first_order) = get(addr, &format!("/orders/{first}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        first_order["reminders_sent"], 1,
        "one reminder, not one per start"
    );

    service.stop().await;
    let invoices: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {schema}.invoices"
    )))
    .fetch_one(&pool)
    .await
    .expect("counted");
    assert_eq!(invoices, 3, "one invoice per order");
}

/// Drops the run's schema when the test ends, passed or failed.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Its own runtime on its own thread: the test's may be unwinding.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = PgPool::connect(&url).await.ok()?;
                sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&pool)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop schema {}", self.schema);
        }
    }
}
