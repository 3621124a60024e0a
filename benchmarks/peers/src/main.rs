//! heytom-mq against ruststream, side by side on the same brokers, in one
//! process, in alternating rounds (issue 11, item 7). See README.md.

mod common;
mod kafka;
mod outbox;
mod rabbit;

use common::{env_num, Cfg, Figures};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let cfg = Cfg::from_env();
    println!(
        "peers: heytom-mq (path) vs ruststream 0.7 (ruststream-lapin, ruststream-rdkafka, ruststream-sqlx)\n\
         {} RabbitMQ / {} Kafka msgs/round (outbox {} tx/round, latency {} commits), {} B JSON payload, \
         {} rounds, 8 handlers at once on each side; run id {}",
        cfg.count,
        cfg.kafka_count,
        cfg.outbox_count,
        cfg.latency_count,
        common::payload_len(),
        cfg.rounds,
        cfg.run
    );
    let only = std::env::var("PEERS_ONLY").unwrap_or_default();
    let want = |s: &str| only.is_empty() || only.split(',').any(|o| o == s);
    let mut figs = Figures::default();
    if want("rabbitmq") {
        rabbit::run(&cfg, &mut figs).await?;
    }
    if want("kafka") {
        match &cfg.kafka {
            Some(_) => kafka::run(&cfg, &mut figs).await?,
            None => println!(
                "kafka: HEYTOM_KAFKA_BOOTSTRAP_SERVERS is not set; skipped \
                 (eval \"$(scripts/kafka-broker.sh start)\")"
            ),
        }
    }
    if want("outbox") {
        outbox::run(&cfg, &mut figs).await?;
    }
    figs.print_summary(env_num("PEERS_ROUNDS", 5) as usize);
    Ok(())
}
