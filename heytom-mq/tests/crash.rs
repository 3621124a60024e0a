//! Real crashes: the app runs in a child process (this test binary run
//! again as `crash_child`) and is killed with SIGKILL — no destructor, no
//! shutdown, no flush — at the worst moments, on PostgreSQL and RabbitMQ.
//! A fresh process must then deliver everything. Each test prints
//! `CRASH <case> committed=.. delivered=.. lost=.. duplicates=.. recovery=..`.
//!
//! (a) right after commits, before the relay sent them;
//! (b) while a handler is mid-way (its message is redelivered: the handler
//!     runs again, which at-least-once allows);
//! (c) while a scanner holds leases on a batch.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use heytom_mq::prelude::*;
use heytom_mq::{HandlerEntry, LocalMessageRetryOptions, RunningApp};
use serde::{Deserialize, Serialize};

mod outage_support;
use outage_support::{
    counter, pg_url, purge, rabbit, rabbit_url, require_services, unique, Count, Seen,
};
use sqlx::AssertSqlSafe;

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "crash.committed",
    exchange = "heytom.crash.test",
    exchange_type = "topic",
    queue_name = "heytom.crash.committed",
    durable = true
)]
struct Committed {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "crash.handled",
    exchange = "heytom.crash.test",
    exchange_type = "topic",
    queue_name = "heytom.crash.handled",
    durable = true
)]
struct Handled {
    n: u32,
}

/// One crash at a time: the cases share the broker and a queue.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn services() -> Option<sqlx::PgPool> {
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(&pg_url())
        .await
    {
        Ok(p) => p,
        Err(e) if require_services() => {
            panic!("PostgreSQL unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: PostgreSQL unreachable ({e}); skipping this test");
            return None;
        }
    };
    match lapin::Connection::connect(&rabbit_url(), lapin::ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "probe".into()).await;
            Some(pool)
        }
        Err(e) if require_services() => {
            panic!("RabbitMQ unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: RabbitMQ unreachable ({e}); skipping this test");
            None
        }
    }
}

/// A producing app with the outbox on `table`, the default lease, a 200 ms scan.
async fn outbox_app(pool: sqlx::PgPool, table: &str, after_commit: bool) -> RunningApp {
    App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .outbox(
            Outbox::postgres(pool)
                .table_name(table)
                .dispatch_after_commit(after_commit),
        )
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_millis(200),
            batch_size: 500,
            ..Default::default()
        })
        .start()
        .await
        .expect("outbox app")
}

/// Prints `start <id>`, works (the first three events 200 ms, the others
/// a minute: they are mid-way when the process dies), prints `done <id>`.
struct Slow;

impl EventHandler<Handled> for Slow {
    async fn handle(&self, event: Handled, ctx: Context) -> Result<(), HandlerError> {
        println!("start {}", ctx.event_id());
        let work = if event.n < 3 { 200 } else { 60_000 };
        tokio::time::sleep(Duration::from_millis(work)).await;
        println!("done {}", ctx.event_id());
        Ok(())
    }
}

/// This binary run again as the child `role`, stdout piped, killed on drop.
struct ChildApp {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildApp {
    fn spawn(role: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", "crash_child", "--nocapture"])
            .env("HEYTOM_CRASH_ROLE", role)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the child app");
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildApp { child, lines }
    }

    /// Reads lines until `f` says stop (or 60 s pass); returns them.
    fn read_until(&self, mut f: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let stop = f(&l);
                got.push(l);
                if stop {
                    return got;
                }
            }
        }
        panic!("the child never reached the crash point; it printed {got:?}");
    }

    /// Everything the child printed that was not read yet (after its death).
    fn rest(&self) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            got.push(l);
        }
        got
    }

    /// SIGKILL: no shutdown, no destructor, no flush.
    fn kill(&mut self) -> Instant {
        self.child.kill().expect("SIGKILL the child");
        let at = Instant::now();
        let _ = self.child.wait();
        at
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: a role chosen by the parent test; never runs alone.
#[test]
#[ignore = "the child process of the crash tests; they run it"]
fn crash_child() {
    let role = std::env::var("HEYTOM_CRASH_ROLE").expect("HEYTOM_CRASH_ROLE");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
        match role.as_str() {
            "produce" | "produce-scan" => {
                let table = std::env::var("HEYTOM_CRASH_TABLE").unwrap();
                let app = outbox_app(pool.clone(), &table, role == "produce").await;
                let producer = app.producer();
                for n in 0.. {
                    let mut tx = producer.begin(&pool).await.unwrap();
                    tx.publish(&Committed { n }).await.unwrap();
                    tx.commit().await.unwrap();
                    println!("committed {n}");
                }
            }
            "consume" => {
                let _app = App::builder()
                    .rabbitmq(rabbit())
                    .discover(false)
                    .handler_entry(HandlerEntry::from_type::<Handled, Slow>("slow", Slow))
                    .start()
                    .await
                    .unwrap();
                println!("ready");
                std::future::pending::<()>().await;
            }
            other => panic!("unknown role {other}"),
        }
    });
}

async fn count_rows(pool: &sqlx::PgPool, table: &str, filter: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {filter}");
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `want` distinct ids arrived; returns the time it took.
async fn wait_delivered(seen: &Seen, want: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    while seen.lock().unwrap().len() < want {
        assert!(
            start.elapsed() < timeout,
            "only {} of {want} delivered after {timeout:?}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Kills a producing child at a chosen moment; a fresh app on the same
/// table must deliver every committed row. `wait_for_lease`: kill only
/// once a scanner holds leases on rows (else right after 300 commits).
async fn producer_crash(case: &str, role: &str, wait_for_lease: bool) {
    let _x = EXCLUSIVE.lock().await;
    let Some(pool) = services().await else { return };
    let table = format!("Crash_{}", unique());
    let (consumer, seen) = counter::<Committed>().await;
    let mut child = ChildApp::spawn(role, &[("HEYTOM_CRASH_TABLE", &table)]);
    child.read_until(|l| l == "committed 300");
    if wait_for_lease {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count_rows(&pool, &table, "Status <> 1 AND LockedBy IS NOT NULL").await == 0 {
            assert!(Instant::now() < deadline, "no scanner ever held a lease");
        }
    }
    let killed = child.kill();
    // A COMMIT the child sent just before it died may still land: count
    // again at the end.
    let committed = count_rows(&pool, &table, "1 = 1").await as usize;
    let unsent = count_rows(&pool, &table, "Status <> 1").await;
    let leased = count_rows(&pool, &table, "Status <> 1 AND LockedBy IS NOT NULL").await;
    let fresh = outbox_app(pool.clone(), &table, true).await;
    wait_delivered(&seen, committed, Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_rows(&pool, &table, "Status <> 1").await > 0 {
        assert!(Instant::now() < deadline, "rows left unsent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = killed.elapsed();
    // Late duplicates arrive within a few leases.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (delivered, total) = {
        let s = seen.lock().unwrap();
        (s.len(), s.values().sum::<usize>())
    };
    let still_unsent = count_rows(&pool, &table, "Status <> 1").await;
    let committed = count_rows(&pool, &table, "1 = 1").await as usize;
    fresh.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await;
    println!(
        "CRASH {case} committed={committed} unsent_at_kill={unsent} leased_at_kill={leased} delivered={delivered} lost={} duplicates={} recovery={recovery:?}",
        committed.saturating_sub(delivered),
        total - delivered,
    );
    assert_eq!(delivered, committed, "every committed row delivered");
    assert_eq!(still_unsent, 0, "every row ends Sent");
    if wait_for_lease {
        assert!(leased > 0, "the kill came while a scanner held leases");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_commits_loses_nothing() {
    producer_crash("a:after-commit", "produce", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_scanner_holds_leases_loses_nothing() {
    producer_crash("c:scanner-leases", "produce-scan", true).await;
}

/// A consumer killed while its handler is mid-way: the message was not
/// acked, so a fresh consumer gets it again; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_handler_redelivers_the_message() {
    let _x = EXCLUSIVE.lock().await;
    let Some(_pool) = services().await else {
        return;
    };
    let queue = Handled::route().as_rabbitmq().unwrap().queue_name.unwrap();
    // Declare the topology, then empty the queue.
    let (first, _) = counter::<Handled>().await;
    first.shutdown().await.unwrap();
    purge(queue).await;
    let sender = App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(sender.producer().send(&Handled { n }).await.unwrap());
    }
    let mut child = ChildApp::spawn("consume", &[]);
    let mut started = Vec::new();
    let mut done = Vec::new();
    let mut note = |l: &str| {
        if let Some(id) = l.strip_prefix("start ") {
            started.push(id.to_owned());
        }
        if let Some(id) = l.strip_prefix("done ") {
            done.push(id.to_owned());
        }
    };
    let mut finished = 0;
    let mut running = 0;
    child.read_until(|l| {
        note(l);
        finished += usize::from(l.starts_with("done "));
        running += usize::from(l.starts_with("start "));
        // Mid-way: three finished, a slow one started.
        finished >= 3 && running > finished
    });
    let killed = child.kill();
    for l in child.rest() {
        note(&l);
    }
    let mid: Vec<&String> = started.iter().filter(|s| !done.contains(s)).collect();
    let (fresh, seen) = {
        let seen = Seen::default();
        let app = App::builder()
            .rabbitmq(rabbit())
            .discover(false)
            .handler_entry(HandlerEntry::from_type::<Handled, Count>(
                "slow",
                Count(seen.clone()),
            ))
            .start()
            .await
            .unwrap();
        (app, seen)
    };
    // Every message not finished in the killed process comes again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = ids
            .iter()
            .map(|id| id.to_string())
            .filter(|id| {
                !done.contains(id) && !seen.lock().unwrap().contains_key(&id.parse().unwrap())
            })
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} messages never handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handled_again: Vec<String> = {
        let s = seen.lock().unwrap();
        s.keys().map(|k| k.to_string()).collect()
    };
    fresh.shutdown().await.unwrap();
    sender.shutdown().await.unwrap();
    let lost = ids
        .iter()
        .filter(|id| !done.contains(&id.to_string()) && !handled_again.contains(&id.to_string()))
        .count();
    // Messages whose handler had started in the killed process and ran again.
    let reruns = handled_again
        .iter()
        .filter(|id| started.contains(id))
        .count();
    let mid_lost = mid.iter().filter(|id| !handled_again.contains(id)).count();
    println!(
        "CRASH b:mid-handler published={} finished_before_kill={} mid_way={} lost={lost} handler_reruns={reruns} recovery={recovery:?}",
        ids.len(),
        done.len(),
        mid.len(),
    );
    assert_eq!(lost, 0, "nothing lost");
    assert_eq!(mid_lost, 0, "every message mid-way is redelivered");
    assert!(!mid.is_empty(), "the kill came while handlers were mid-way");
    assert!(reruns >= 1, "the message mid-way ran again");
}
