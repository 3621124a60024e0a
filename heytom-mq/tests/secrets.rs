//! No secret in any error, Debug print or log line.
//!
//! librdkafka (and rdkafka's `Display`) echo the value of a property they
//! reject; RabbitMQ and database URL parsers may quote the URL. Every test
//! here puts a distinct secret into one option or URL form and checks that
//! it shows in none of the `Display`, `Debug` or log output the crate
//! produces. The log output of the whole test binary is captured and
//! checked for every secret used here.
//!
//! Against the real services where a connection is involved: RabbitMQ
//! (`HEYTOM_RABBITMQ_URL`), Kafka (`HEYTOM_KAFKA_BOOTSTRAP_SERVERS` or a
//! broker `scripts/kafka-broker.sh` starts) and PostgreSQL
//! (`HEYTOM_TEST_POSTGRES_URL`). Unreachable services skip with a notice,
//! or fail when `HEYTOM_TEST_REQUIRE_SERVICES=1`.

mod kafka_support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{Error, KafkaTransport};

// ---------------------------------------------------------------- log capture

/// Everything logged by this test binary (every level, every target).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Captured(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        buf
    })
}

/// What was logged so far.
fn logged() -> String {
    let bytes = logs().lock().unwrap_or_else(|p| p.into_inner()).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every secret the tests of this binary use: none may be logged.
const SECRETS: &[&str] = &[
    "S3cr3t-Sasl-Plain",
    "S3cr3t-Sasl-Scram",
    "S3cr3t-Ssl-Key",
    "S3cr3t-Prop-Sasl",
    "S3cr3t-Jaas",
    "S3cr3t-Oauth-Client",
    "S3cr3t-Oauth-Config",
    "S3cr3t-Prop-Ssl-Key",
    "S3cr3t-Key-Pem",
    "S3cr3t-Keystore",
    "S3cr3t-Producer-Prop",
    "S3cr3t-Consumer-Prop",
    "S3cr3t-Misspelled",
    "S3cr3t-Bootstrap",
    "S3cr3t-Amqp",
    "S3cr3t-Amqps",
    "S3cr3t-Wrong-Pw",
    "S3cr3t-Bad-Port",
    "S3cr3t-Pg",
    "S3cr3t-Pg-Query",
    "S3cr3t-Mysql",
    "S3cr3t-Sqlite",
];

/// `what` (a Display or Debug text) holds none of `secrets`.
#[track_caller]
fn clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows the secret {s:?}: {text}");
        // Nor its percent-encoded form.
        let encoded = s.replace('-', "%2D");
        assert!(!text.contains(&encoded), "{what} shows {encoded:?}: {text}");
    }
}

#[track_caller]
fn clean_error(e: &Error, secrets: &[&str]) {
    clean("Display", &e.to_string(), secrets);
    clean("Debug", &format!("{e:?}"), secrets);
    clean("alternate Debug", &format!("{e:#?}"), secrets);
}

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------- Kafka options

/// Each way to give Kafka a secret, with the secret it carries.
fn kafka_secret_options() -> Vec<(&'static str, KafkaOptions, &'static str)> {
    let base = || KafkaOptions::new("127.0.0.1:9092");
    vec![
        ("sasl_plain", base().sasl_plain("svc", "S3cr3t-Sasl-Plain"), "S3cr3t-Sasl-Plain"),
        (
            "sasl",
            base().sasl("SCRAM-SHA-512", "svc", "S3cr3t-Sasl-Scram"),
            "S3cr3t-Sasl-Scram",
        ),
        ("ssl_key_password", base().ssl_key_password("S3cr3t-Ssl-Key"), "S3cr3t-Ssl-Key"),
        ("sasl.password", base().property("sasl.password", "S3cr3t-Prop-Sasl"), "S3cr3t-Prop-Sasl"),
        (
            "sasl.jaas.config",
            base().property(
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="svc" password="S3cr3t-Jaas";"#,
            ),
            "S3cr3t-Jaas",
        ),
        (
            "sasl.oauthbearer.client.secret",
            base().property("sasl.oauthbearer.client.secret", "S3cr3t-Oauth-Client"),
            "S3cr3t-Oauth-Client",
        ),
        (
            "sasl.oauthbearer.config",
            base().property("sasl.oauthbearer.config", "principal=svc secret=S3cr3t-Oauth-Config"),
            "S3cr3t-Oauth-Config",
        ),
        ("ssl.key.password", base().property("ssl.key.password", "S3cr3t-Prop-Ssl-Key"), "S3cr3t-Prop-Ssl-Key"),
        (
            "ssl.key.pem",
            base().property(
                "ssl.key.pem",
                "-----BEGIN PRIVATE KEY-----\nS3cr3t-Key-Pem\n-----END PRIVATE KEY-----",
            ),
            "S3cr3t-Key-Pem",
        ),
        (
            "ssl.keystore.password",
            base().property("ssl.keystore.password", "S3cr3t-Keystore"),
            "S3cr3t-Keystore",
        ),
        (
            "producer_property sasl.password",
            base().producer_property("sasl.password", "S3cr3t-Producer-Prop"),
            "S3cr3t-Producer-Prop",
        ),
        (
            "consumer_property sasl.password",
            base().consumer_property("sasl.password", "S3cr3t-Consumer-Prop"),
            "S3cr3t-Consumer-Prop",
        ),
        (
            "misspelled sasl.pasword",
            base().property("sasl.pasword", "S3cr3t-Misspelled"),
            "S3cr3t-Misspelled",
        ),
        (
            "bootstrap servers with userinfo",
            KafkaOptions::new("svc:S3cr3t-Bootstrap@127.0.0.1:9092,127.0.0.1:9093"),
            "S3cr3t-Bootstrap",
        ),
    ]
}

#[test]
fn kafka_options_debug_shows_no_secret() {
    logs();
    for (what, options, secret) in kafka_secret_options() {
        let shown = format!("{options:?}");
        clean(what, &shown, &[secret]);
        clean(what, &format!("{options:#?}"), &[secret]);
        assert!(shown.contains("***"), "{what}: nothing masked in {shown}");
    }
    // Non-secret values stay visible.
    let shown = format!(
        "{:?}",
        KafkaOptions::new("h:9092").property("linger.ms", "7")
    );
    assert!(shown.contains("\"linger.ms\", \"7\""), "{shown}");
}

/// Every option, handed to librdkafka: a property it rejects (an unknown
/// `sasl.jaas.config`, a misspelled `sasl.pasword`, an OAuth secret this
/// build does not support) comes back as a configuration error that names
/// the property but not its value; the others create clients whose Debug
/// shows no secret either.
#[test]
fn kafka_configuration_errors_show_no_secret() {
    logs();
    let mut rejected = Vec::new();
    for (what, options, secret) in kafka_secret_options() {
        for result in [
            KafkaProducer::new(options.clone()).map(|p| format!("{p:?}")),
            KafkaConsumer::new(options.clone()).map(|c| format!("{c:?}")),
            KafkaTransport::new(options.clone()).map(|t| format!("{t:?}")),
        ] {
            match result {
                Ok(debug) => clean(what, &debug, &[secret]),
                Err(e) => {
                    clean_error(&e, &[secret]);
                    assert!(matches!(e, Error::Configuration(_)), "{what}: {e:?}");
                    rejected.push((what, e.to_string()));
                }
            }
        }
    }
    let rejected_for = |name: &str| {
        rejected
            .iter()
            .find(|(w, _)| *w == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("librdkafka accepted {name}; rejected: {rejected:#?}"))
    };
    // The real librdkafka errors that echoed the value before.
    let jaas = rejected_for("sasl.jaas.config");
    assert!(
        jaas.contains("sasl.jaas.config") && jaas.contains("JAAS"),
        "{jaas}"
    );
    let typo = rejected_for("misspelled sasl.pasword");
    assert!(
        typo.contains("sasl.pasword") && typo.contains("No such configuration property"),
        "{typo}"
    );
    eprintln!("{jaas}\n{typo}");
}

/// An invalid `sasl.mechanism` next to real SASL credentials: rejected when
/// the client is created, with nothing of the credentials in the error.
#[test]
fn invalid_sasl_mechanism_with_credentials_shows_no_secret() {
    logs();
    let options = KafkaOptions::new("127.0.0.1:9092")
        .security_protocol("sasl_plaintext")
        .sasl("BOGUS-MECHANISM", "svc", "S3cr3t-Sasl-Plain")
        .property(
            "sasl.jaas.config",
            r#"PlainLoginModule required username="svc" password="S3cr3t-Jaas";"#,
        );
    let e = KafkaProducer::new(options.clone()).unwrap_err();
    clean_error(&e, &["S3cr3t-Sasl-Plain", "S3cr3t-Jaas"]);
    let options = options.producer_property("sasl.jaas.config", "x"); // still rejected
    let e = KafkaConsumer::new(options).unwrap_err();
    clean_error(&e, &["S3cr3t-Sasl-Plain", "S3cr3t-Jaas"]);
    // Without the JAAS property librdkafka gets as far as the mechanism.
    let e = KafkaProducer::new(
        KafkaOptions::new("127.0.0.1:9092")
            .security_protocol("sasl_plaintext")
            .sasl("BOGUS-MECHANISM", "svc", "S3cr3t-Sasl-Plain"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("BOGUS-MECHANISM"), "{e}");
    clean_error(&e, &["S3cr3t-Sasl-Plain"]);
}

/// SASL credentials sent to the real (plaintext) broker: the failures are
/// logged and returned without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_authentication_failures_show_no_secret() {
    logs();
    let Some(servers) = kafka_support::bootstrap() else {
        return;
    };
    let options = KafkaOptions::new(servers)
        .security_protocol("sasl_plaintext")
        .sasl_plain("svc", "S3cr3t-Sasl-Plain")
        .operation_timeout(Duration::from_secs(3))
        .producer_property("message.timeout.ms", "3000");
    match KafkaTransport::connect(options.clone()).await {
        Ok(t) => clean("transport", &format!("{t:?}"), &["S3cr3t-Sasl-Plain"]),
        Err(e) => clean_error(&e, &["S3cr3t-Sasl-Plain"]),
    }
    let producer = KafkaProducer::new(options).unwrap();
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping;
    impl Event for Ping {
        const NAME: &'static str = "SecretsTestPing";
        fn route() -> &'static Route {
            static R: Route = Route::Kafka(heytom_mq::KafkaRoute::new("heytom-test-secrets-ping"));
            &R
        }
        fn partition_key(&self) -> Option<String> {
            None
        }
    }
    if let Err(e) = producer.send(&Ping).await {
        clean_error(&e, &["S3cr3t-Sasl-Plain"]);
    }
    clean("logs", &logged(), SECRETS);
}

// ---------------------------------------------------------------- RabbitMQ

#[test]
fn rabbitmq_options_debug_shows_no_secret() {
    for (url, secret) in [
        ("amqp://svc:S3cr3t-Amqp@127.0.0.1:5672/%2f", "S3cr3t-Amqp"),
        (
            "amqps://svc:S3cr3t-Amqps@broker.example:5671/prod?heartbeat=10",
            "S3cr3t-Amqps",
        ),
        ("amqp://svc:S3cr3t%2DAmqp@127.0.0.1/%2f", "S3cr3t-Amqp"),
    ] {
        let o = RabbitMqOptions::new(url);
        clean(url, &format!("{o:?}"), &[secret]);
        clean(url, &o.redacted_url(), &[secret]);
    }
}

/// A URL the parser rejects after reading the password: the error quotes
/// neither the URL nor the password.
#[tokio::test]
async fn rabbitmq_url_errors_show_no_secret() {
    logs();
    for url in [
        "amqp://svc:S3cr3t-Bad-Port@127.0.0.1:notaport/%2f",
        "amqp://svc:S3cr3t-Bad-Port@127.0.0.1:5672/%2f?heartbeat=soon",
        "amqp://svc:S3cr3t%2DBad%2DPort@127.0.0.1:99999/%2f",
        "http://svc:S3cr3t-Bad-Port@127.0.0.1/",
        "svc:S3cr3t-Bad-Port@127.0.0.1",
    ] {
        let e = RabbitMqProducer::connect(RabbitMqOptions::new(url))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Configuration(_)), "{url}: {e:?}");
        clean_error(&e, &["S3cr3t-Bad-Port"]);
        let e = RabbitMqConsumer::connect(RabbitMqOptions::new(url))
            .await
            .unwrap_err();
        clean_error(&e, &["S3cr3t-Bad-Port"]);
    }
}

/// A wrong password against the real broker: the connection error and the
/// log lines about it hold no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_wrong_password_shows_no_secret() {
    logs();
    let url = std::env::var("HEYTOM_RABBITMQ_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    // Same broker, same user, wrong password.
    let Some((head, host)) = url.split_once('@') else {
        panic!("HEYTOM_RABBITMQ_URL without userinfo: cannot make a wrong password");
    };
    let user = head.rsplit_once(':').map_or(head, |(u, _)| u);
    let wrong = format!("{user}:S3cr3t-Wrong-Pw@{host}");
    let options = RabbitMqOptions::new(wrong).connect_timeout(Duration::from_secs(5));
    match RabbitMqProducer::connect(options.clone()).await {
        Ok(_) => panic!("the broker accepted a wrong password"),
        Err(Error::Connection { .. }) | Err(Error::Configuration(_)) => {}
        Err(e) if !require_services() => eprintln!("NOTICE: {e}"),
        Err(e) => panic!("unexpected {e:?}"),
    }
    for e in [
        RabbitMqProducer::connect(options.clone())
            .await
            .unwrap_err(),
        RabbitMqConsumer::connect(options).await.unwrap_err(),
    ] {
        clean_error(&e, &["S3cr3t-Wrong-Pw"]);
    }
    clean("logs", &logged(), SECRETS);
}

// ---------------------------------------------------------------- databases

/// Database URLs the outbox cannot use, each with a password in another
/// place: the error shows the URL redacted.
#[tokio::test]
async fn outbox_url_errors_show_no_secret() {
    logs();
    for (url, secret) in [
        ("postgres://app:S3cr3t-Pg@db:notaport/app", "S3cr3t-Pg"),
        (
            "postgresql://app@db:5432/app?password=S3cr3t-Pg-Query&port=x",
            "S3cr3t-Pg-Query",
        ),
        ("mysql://root:S3cr3t-Mysql@db:notaport/app", "S3cr3t-Mysql"),
        (
            "mariadb://root:S3cr3t-Mysql@db:3306/app?ssl-mode=bogus",
            "S3cr3t-Mysql",
        ),
        (
            "sqlite://u:S3cr3t-Sqlite@/tmp/x.db?mode=bogus",
            "S3cr3t-Sqlite",
        ),
        ("redis://u:S3cr3t-Pg@db/0", "S3cr3t-Pg"),
    ] {
        match Outbox::from_url(url) {
            Ok(outbox) => clean(url, &format!("{outbox:?}"), &[secret]),
            Err(e) => {
                assert!(matches!(e, Error::Configuration(_)), "{url}: {e:?}");
                clean_error(&e, &[secret]);
            }
        }
    }
}

/// A real PostgreSQL refusing a login: the storage error holds no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_login_failures_show_no_secret() {
    logs();
    let base = std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let Some((_, host)) = base.split_once('@') else {
        return;
    };
    let url = format!("postgres://no_such_role:S3cr3t-Pg@{host}");
    let outbox = Outbox::from_url(&url).expect("a valid URL");
    clean("Outbox", &format!("{outbox:?}"), &["S3cr3t-Pg"]);
    match tokio::time::timeout(Duration::from_secs(20), outbox.ensure_table()).await {
        Ok(Err(e)) => clean_error(&e, &["S3cr3t-Pg"]),
        Ok(Ok(())) => panic!("PostgreSQL accepted an unknown role"),
        Err(_) if require_services() => panic!("PostgreSQL did not answer"),
        Err(_) => eprintln!("NOTICE: PostgreSQL did not answer; skipping"),
    }
    let built = App::builder().discover(false).outbox(outbox).build().await;
    if let Err(e) = built {
        clean_error(&e, &["S3cr3t-Pg"]);
    }
    clean("logs", &logged(), SECRETS);
}
