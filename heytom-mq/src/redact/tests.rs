//! `redact_url` on every URL form, `looks_secret`, `scrub`.

use super::*;

/// Redacts `url`, checks the result and that no secret survived.
#[track_caller]
fn check(url: &str, expected: &str, secrets: &[&str]) {
    let shown = redact_url(url);
    assert_eq!(shown, expected, "redact_url({url:?})");
    for s in secrets {
        assert!(!shown.contains(s), "{s:?} survives in {shown:?}");
        assert!(
            url_secrets(url).iter().any(|m| m == s || m.contains(s)),
            "url_secrets({url:?}) misses {s:?}: {:?}",
            url_secrets(url)
        );
    }
}

#[test]
fn amqp_and_amqps_userinfo() {
    check(
        "amqp://guest:secret@host:5672/%2f",
        "amqp://guest:***@host:5672/%2f",
        &["secret"],
    );
    check(
        "amqps://svc:s3cr3t@broker.example:5671/prod?heartbeat=10",
        "amqps://svc:***@broker.example:5671/prod?heartbeat=10",
        &["s3cr3t"],
    );
    // No password: nothing to hide.
    check("amqp://guest@host", "amqp://guest@host", &[]);
    check("amqp://localhost:5672", "amqp://localhost:5672", &[]);
}

#[test]
fn postgres_mysql_sqlite_userinfo() {
    check(
        "postgres://u:pw@db:5432/app",
        "postgres://u:***@db:5432/app",
        &["pw"],
    );
    check(
        "postgresql://u:pw@h1:5432,h2:5432/app?target_session_attrs=read-write",
        "postgresql://u:***@h1:5432,h2:5432/app?target_session_attrs=read-write",
        &["pw"],
    );
    check(
        "mysql://root:hunter2@127.0.0.1:3306/app",
        "mysql://root:***@127.0.0.1:3306/app",
        &["hunter2"],
    );
    check(
        "mariadb://root:hunter2@db/app",
        "mariadb://root:***@db/app",
        &["hunter2"],
    );
    check(
        "sqlite://user:hunter2@/var/db.sqlite",
        "sqlite://user:***@/var/db.sqlite",
        &["hunter2"],
    );
    check("sqlite::memory:", "sqlite::memory:", &[]);
    check("sqlite:data@home.db", "sqlite:data@home.db", &[]);
}

#[test]
fn passwords_with_reserved_characters() {
    // `@` in the password: the last `@` of the authority ends the userinfo.
    check(
        "postgres://u:p@a:b@h/db",
        "postgres://u:***@h/db",
        &["p@a:b"],
    );
    // Percent-encoded password.
    check(
        "amqp://u:p%40ss%2Fw0rd@h/v",
        "amqp://u:***@h/v",
        &["p%40ss%2Fw0rd", "p@ss/w0rd"],
    );
    // `/`, `?` and `#` in an unencoded password.
    check("amqp://u:a/b?c#d@h/v", "amqp://u:***@h/v", &["a/b?c#d"]);
    check("amqp://u:pa?ss@h", "amqp://u:***@h", &["pa?ss"]);
    // A comma in the password.
    check("amqp://u:pa,ss@h", "amqp://u:***@h", &["pa,ss"]);
    // An `@` in the query is not a userinfo.
    check(
        "postgres://h:5432/db?application_name=me@corp",
        "postgres://h:5432/db?application_name=me@corp",
        &[],
    );
}

#[test]
fn query_string_passwords() {
    check(
        "postgres://h/db?user=u&password=hunter2&sslmode=require",
        "postgres://h/db?user=u&password=***&sslmode=require",
        &["hunter2"],
    );
    check(
        "mysql://h/db?pass=hunter2",
        "mysql://h/db?pass=***",
        &["hunter2"],
    );
    check(
        "amqp://h/v?auth_mechanism=plain&token=abc.def.ghi",
        "amqp://h/v?auth_mechanism=plain&token=***",
        &["abc.def.ghi"],
    );
    check(
        "postgres://h/db?sslpassword=k3y&sslkey=/etc/key.pem",
        "postgres://h/db?sslpassword=***&sslkey=/etc/key.pem",
        &["k3y"],
    );
    check(
        "sqlite:///var/app.db?key=hunter2&mode=rwc",
        "sqlite:///var/app.db?key=***&mode=rwc",
        &["hunter2"],
    );
    check(
        "mysql://h/db?pwd=hunter2",
        "mysql://h/db?pwd=***",
        &["hunter2"],
    );
    check(
        "mysql://h/db?api_key=hunter2&client_secret=s3",
        "mysql://h/db?api_key=***&client_secret=***",
        &["hunter2"],
    );
    // Percent-encoded names and values.
    check(
        "postgres://h/db?pass%77ord=hun%74er2",
        "postgres://h/db?pass%77ord=***",
        &["hun%74er2", "hunter2"],
    );
    check(
        "postgres://u:pw@h/db?PASSWORD=x1y2z3",
        "postgres://u:***@h/db?PASSWORD=***",
        &["x1y2z3"],
    );
    // Both userinfo and query.
    check(
        "amqp://u:one111@h/v?password=two222",
        "amqp://u:***@h/v?password=***",
        &["one111", "two222"],
    );
}

#[test]
fn key_value_connection_strings() {
    check(
        "host=db user=app password=hunter2 dbname=x",
        "host=db user=app password=*** dbname=x",
        &["hunter2"],
    );
    check(
        "host=db password='hunter 2' dbname=x",
        "host=db password=*** dbname=x",
        &["hunter 2"],
    );
}

#[test]
fn kafka_host_lists() {
    check("h1:9092,h2:9092", "h1:9092,h2:9092", &[]);
    check(
        "svc:hunter2@h1:9092,h2:9092",
        "svc:***@h1:9092,h2:9092",
        &["hunter2"],
    );
    check(
        "h1:9092,svc:hunter2@h2:9092",
        "h1:9092,svc:***@h2:9092",
        &["hunter2"],
    );
    check(
        "SASL_SSL://svc:hunter2@h1:9093,SASL_SSL://svc:hunter3@h2:9093",
        "SASL_SSL://svc:***@h1:9093,SASL_SSL://svc:***@h2:9093",
        &["hunter2", "hunter3"],
    );
    check("svc:pa,ss@h1:9092", "svc:***@h1:9092", &["pa,ss"]);
    check("svc:p@ss@h1:9092,h2", "svc:***@h1:9092,h2", &["p@ss"]);
    check("[::1]:9092", "[::1]:9092", &[]);
}

#[test]
fn secret_names() {
    for name in [
        "sasl.password",
        "sasl.jaas.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "ssl_key_pem",
        "SASL.PASSWORD",
        "password",
        "pass",
        "pwd",
        "token",
        "access_token",
        "api-key",
        "client_credentials",
        "private_key",
        "pass%77ord",
    ] {
        assert!(looks_secret(name), "{name}");
    }
    for name in [
        "bootstrap.servers",
        "sasl.username",
        "sasl.mechanism",
        "ssl.key.location",
        "ssl.certificate.location",
        "acks",
        "authSource",
        "compass",
        "sslkey",
        "heartbeat",
    ] {
        assert!(!looks_secret(name), "{name}");
    }
}

#[test]
fn scrub_masks_every_form() {
    let text = "rejected p@ss w0rd, p%40ss%20w0rd and p@ss w0rd again";
    let out = scrub(text, ["p@ss w0rd"]);
    assert_eq!(out, "rejected ***, *** and *** again");
    // Too short to mask without garbling.
    assert_eq!(scrub("a b", ["a"]), "a b");
}
