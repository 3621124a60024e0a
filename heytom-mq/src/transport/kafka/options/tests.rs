//! What the options resolve to, and what their Debug output hides.

use super::super::{KafkaTransport, ProducerKey};
use super::*;

/// `effective_acks` mirrors how the producers are configured: checked
/// against the configuration the transport really builds.
#[test]
fn effective_acks_matches_the_producer_configuration() {
    let variants = [
        KafkaOptions::new("h:9092"),
        KafkaOptions::new("h:9092").property("acks", "0"),
        KafkaOptions::new("h:9092").producer_property("acks", "0"),
        KafkaOptions::new("h:9092")
            .property("acks", "0")
            .producer_property("acks", "all"),
    ];
    for options in variants {
        let t = KafkaTransport::new(options.clone()).unwrap();
        for route_acks in [None, Some(Acks::None), Some(Acks::Leader), Some(Acks::All)] {
            let key = ProducerKey {
                acks: route_acks.map(Acks::as_str),
                ..ProducerKey::default()
            };
            let config = t.inner.producer_config(key);
            let real = config
                .get("acks")
                .or_else(|| config.get("request.required.acks"))
                .map(str::to_owned);
            assert_eq!(
                options.effective_acks(route_acks),
                real,
                "{options:?} {route_acks:?}"
            );
        }
    }
}

#[test]
fn misspelled_and_secret_properties_are_masked_in_debug() {
    let o = KafkaOptions::new("h:9092")
        .property("sasl.pasword", "hunter22")
        .property("sasl.password", "hunter23")
        .property("linger.ms", "5");
    let shown = format!("{o:?}");
    assert!(
        !shown.contains("hunter22") && !shown.contains("hunter23"),
        "{shown}"
    );
    assert!(shown.contains("\"linger.ms\", \"5\""), "{shown}");
}

#[test]
fn known_property_values_stay_visible_in_debug() {
    let o = KafkaOptions::new("h:9092")
        .property("acks", "all")
        .producer_property("message.timeout.ms", "1000")
        .consumer_property("auto.offset.reset", "earliest");
    let shown = format!("{o:?}");
    for pair in [
        "(\"acks\", \"all\")",
        "(\"message.timeout.ms\", \"1000\")",
        "(\"auto.offset.reset\", \"earliest\")",
    ] {
        assert!(shown.contains(pair), "{pair} in {shown}");
    }
}
