//! The dashboard in a real browser: headless Chromium driven over
//! WebDriver (`chromedriver`, Debian packages `chromium` and
//! `chromium-driver`) against the router served on 127.0.0.1 under
//! `/dashboard`. It loads the overview, opens a failed message, clicks
//! requeue and sees the row become Sent; it checks that a `<script>` body
//! shows as text; it saves screenshots (into `docs/img/` for the README
//! with `HEYTOM_UPDATE_SCREENSHOTS=1`).
//!
//! Without chromedriver on the PATH (or `HEYTOM_CHROMEDRIVER`) the test
//! skips with a notice, and fails under `HEYTOM_TEST_REQUIRE_SERVICES=1`.
#![cfg(feature = "dashboard")]

mod dashboard_support;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use dashboard_support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use heytom_mq::MessageStatus;

/// Kills chromedriver (and so its browser) however the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HEYTOM_CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_driver(bin: &PathBuf) -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let driver = Driver(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (driver, port)
}

async fn browser(driver_port: u16) -> Client {
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
    ];
    args.push("--force-device-scale-factor=1");
    let mut chrome = serde_json::json!({ "args": args });
    if std::path::Path::new("/usr/bin/chromium").is_file() {
        chrome["binary"] = "/usr/bin/chromium".into();
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".to_owned(), chrome);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a chromium session")
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("element text")
}

/// Waits until the element's text is `want`; the page may reload meanwhile.
async fn wait_text(client: &Client, css: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = match client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got.trim() == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} shows {got:?}, not {want:?}, after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ten minutes of Sent rows (a wave of 10 to 40 per 10 s), written as the
/// relay leaves them, for the rate chart of the screenshot; returns how many.
async fn history(pool: &sqlx::SqlitePool, table: &str) -> u64 {
    let now = Utc::now();
    let mut tx = pool.begin().await.expect("begin");
    let mut n = 0;
    for bucket in 0..60i64 {
        let rows = 25.0 + 15.0 * ((bucket as f64) / 6.0).sin();
        for i in 0..rows as i64 {
            let sent = now - TimeDelta::seconds(600 - bucket * 10 - i % 10);
            let sql = format!(
                "INSERT INTO [{table}] ([Id], [MQType], [Topic], [MessageType], [MessageBody], \
                 [Status], [CreatedAt], [UpdatedAt], [RetryCount]) \
                 VALUES (?, 'InMemory', 'DashboardNote', 'DashboardNote', '{{}}', 1, ?, ?, 0)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(sent - TimeDelta::milliseconds(40))
                .bind(sent)
                .execute(&mut *tx)
                .await
                .expect("a history row");
            n += 1;
        }
    }
    tx.commit().await.expect("commit");
    n
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // The README's pictures are refreshed on request; a plain test run
    // leaves the tracked files alone and writes beside the build.
    let dir = if std::env::var_os("HEYTOM_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/img")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("docs/img");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_a_failed_message_in_chromium() {
    let Some(bin) = chromedriver() else {
        if require_services() {
            panic!("chromedriver not found and HEYTOM_TEST_REQUIRE_SERVICES=1: install the Debian packages chromium and chromium-driver");
        }
        eprintln!("NOTICE: chromedriver not found; skipping the browser test");
        return;
    };
    let Some(pool) = sqlite_pool().await else {
        return;
    };
    let (running, outbox, _) = start_app(heytom_mq::Outbox::sqlite(pool.clone())).await;
    let seeded = seed(&outbox).await;
    let sent = history(&pool, outbox.get_table_name()).await;
    let admin = running.outbox_admin().expect("admin");
    assert_eq!(admin.status_counts().await.unwrap().sent, sent + 2);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new().nest("/dashboard", heytom_mq::dashboard::router(&running));
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });

    let (_driver, driver_port) = start_driver(&bin).await;
    let client = browser(driver_port).await;
    let base = format!("http://{addr}/dashboard");

    // The overview: four failed rows.
    client.goto(&base).await.expect("overview");
    assert_eq!(text_of(&client, "#count-failed .value").await, "4");
    screenshot(&client, "dashboard-overview.png").await;

    // The failed list, then the oldest failed message.
    client
        .find(Locator::Css("#count-failed"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let target = seeded.failed[0];
    let link = format!("tr[data-id=\"{target}\"] a");
    // Four failed rows: one page (50 per page).
    wait_text(&client, "h1", "Messages").await;
    screenshot(&client, "dashboard-messages.png").await;
    client
        .find(Locator::Css(&link))
        .await
        .unwrap_or_else(|e| panic!("row of {target} in the failed list: {e}"))
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&client, "#message-id").await, target.to_string());
    assert_eq!(text_of(&client, "#status").await, "Failed");
    assert_eq!(text_of(&client, "#retry-count").await, "3");
    screenshot(&client, "dashboard-message.png").await;

    // Requeue: the page shows Pending, then (reloading itself) Sent.
    client
        .find(Locator::Css("#requeue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#status", "Sent").await;
    assert_eq!(
        admin.message(target).await.unwrap().map(|m| m.status),
        Some(MessageStatus::Sent)
    );

    // A body with a script tag is shown as text, not run.
    client
        .goto(&format!("{base}/messages/{}", seeded.script))
        .await
        .unwrap();
    let body = text_of(&client, "#body").await;
    assert!(body.contains("<script>alert('x')</script>"), "{body}");
    let scripts: serde_json::Value = client
        .execute("return document.scripts.length", vec![])
        .await
        .unwrap();
    assert_eq!(
        scripts,
        serde_json::json!(0),
        "no script element on the page"
    );

    client.close().await.expect("close the browser");
    server.abort();
    running.shutdown().await.expect("shutdown");
}
