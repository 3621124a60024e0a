//! Runnable examples for heytom-mq; see `cargo run --example quickstart`.
