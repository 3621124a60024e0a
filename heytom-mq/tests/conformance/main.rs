//! One conformance suite, run by every transport.
//!
//! In the manner of Watermill's pub/sub test suite: the checks in
//! [`checks`] are written once against the user-facing API
//! (`#[derive(Event)]`, `#[handler]`, `App::builder()...start()`,
//! `RunningApp::producer()`, `RunningApp::shutdown()`), and each transport
//! module instantiates them through a [`harness::Fixture`]: how to build an
//! `AppBuilder` for that transport with topology unique to the run, how to
//! publish raw bytes with the transport's own client, and how to read its
//! dead-letter destination. A [`harness::Features`] matrix gates the checks
//! only some transports support.
//!
//! Each transport module declares the suite's events with its own
//! attributes (`suite_events!`), then `suite_handlers!` generates the
//! `#[handler]` functions (one sub-module per check, discovered with
//! `discover_in`) and `suite_tests!` one `#[tokio::test]` per check.
//!
//! Every event carries a `run` nonce fresh per test; handlers acknowledge
//! and ignore events of other runs, so topology names that are fixed at
//! compile time (topics, routing keys) never mix runs up.
//!
//! Tests that need a broker print a notice and return when it is
//! unreachable, and fail when `HEYTOM_TEST_REQUIRE_SERVICES=1`.

#[macro_use]
mod harness;
mod checks;
mod custom;
#[cfg(feature = "kafka")]
mod kafka;
mod memory;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
