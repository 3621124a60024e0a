//! W3C trace context (`traceparent` / `tracestate`) in message headers,
//! from and to the OpenTelemetry context of `tracing` spans
//! (through `tracing-opentelemetry`).
//!
//! Written and read here rather than through the global propagator, so
//! that it works without configuration: the W3C format is what every
//! transport carries.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::event::headers::{TRACEPARENT, TRACESTATE};
use crate::event::Headers;

/// Whether `span` has a valid OpenTelemetry span context.
pub(super) fn has_context(span: &Span) -> bool {
    !span.is_disabled() && span.context().span().span_context().is_valid()
}

/// Writes `span`'s context into `headers`; leaves them alone when the span
/// has none (no OpenTelemetry layer), so a `traceparent` the caller set
/// travels unchanged.
pub(super) fn inject(span: &Span, headers: &mut Headers) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return;
    }
    headers.insert(TRACEPARENT.to_owned(), traceparent(sc));
    let state = sc.trace_state().header();
    if state.is_empty() {
        headers.remove(TRACESTATE);
    } else {
        headers.insert(TRACESTATE.to_owned(), state);
    }
}

/// The `traceparent` value of a span context (version 00).
pub(super) fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()
    )
}

/// The remote span context in `headers`, if they carry a valid `traceparent`.
pub(super) fn extract(headers: &Headers) -> Option<SpanContext> {
    let value = headers.get(TRACEPARENT)?;
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    // Version 00 has exactly four parts; later versions may append more.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !(hex(version) && hex(trace_id) && hex(span_id) && hex(flags)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = headers
        .get(TRACESTATE)
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    sc.is_valid().then_some(sc)
}

/// Makes the context in `headers` the parent of `span` (before the span
/// starts); nothing when they carry none or no layer is installed.
pub(super) fn set_parent(span: &Span, headers: &Headers) {
    if let Some(sc) = extract(headers) {
        // Fails only without an OpenTelemetry layer: then there is no trace to join.
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_bad_values_are_ignored() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let value = traceparent(&sc);
        assert_eq!(
            value,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let mut h = Headers::new();
        h.insert(TRACEPARENT.to_owned(), value);
        h.insert(TRACESTATE.to_owned(), "congo=t61rcWkgMzE".to_owned());
        let back = extract(&h).expect("valid");
        assert_eq!(back.trace_id(), sc.trace_id());
        assert_eq!(back.span_id(), sc.span_id());
        assert!(back.is_sampled() && back.is_remote());
        assert_eq!(back.trace_state().header(), "congo=t61rcWkgMzE");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            h.insert(TRACEPARENT.to_owned(), bad.to_owned());
            assert!(extract(&h).is_none(), "{bad:?} accepted");
        }
    }
}
