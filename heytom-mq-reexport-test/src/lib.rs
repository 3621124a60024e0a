//! A crate with no sqlx dependency of its own, like a service that takes
//! sqlx from heytom-mq: `tests/reexport.rs` runs the local message table
//! (on SQLite) through `heytom_mq::sqlx` alone.
