//! The consumer settings of a subscription, which every event sharing its
//! consumer must ask for alike.

use crate::event::Route;

/// The consumer settings an event's route asks for. Events that share a
/// consumer (same topic and group) must ask for the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConsumerSettings {
    pub(super) auto_commit: bool,
    pub(super) auto_offset_reset: &'static str,
    pub(super) session_timeout_ms: Option<u32>,
    pub(super) max_in_flight: usize,
}

impl ConsumerSettings {
    pub(super) fn of(route: &Route, default_max_in_flight: usize) -> Self {
        let k = route.as_kafka();
        ConsumerSettings {
            auto_commit: k.and_then(|r| r.enable_auto_commit).unwrap_or(false),
            auto_offset_reset: k
                .and_then(|r| r.auto_offset_reset)
                .map_or("earliest", |a| a.as_str()),
            session_timeout_ms: k.and_then(|r| r.session_timeout_ms),
            max_in_flight: k
                .and_then(|r| r.max_poll_records)
                .map_or(default_max_in_flight, |n| n as usize)
                .max(1),
        }
    }

    /// What differs from `other`, in attribute terms.
    pub(super) fn differences(&self, other: &Self) -> Vec<String> {
        let mut d = Vec::new();
        if self.auto_commit != other.auto_commit {
            d.push(format!(
                "enable_auto_commit {} vs {}",
                self.auto_commit, other.auto_commit
            ));
        }
        if self.auto_offset_reset != other.auto_offset_reset {
            d.push(format!(
                "auto_offset_reset {} vs {}",
                self.auto_offset_reset, other.auto_offset_reset
            ));
        }
        if self.session_timeout_ms != other.session_timeout_ms {
            let show = |v: Option<u32>| v.map_or_else(|| "unset".to_owned(), |v| v.to_string());
            d.push(format!(
                "session_timeout_ms {} vs {}",
                show(self.session_timeout_ms),
                show(other.session_timeout_ms)
            ));
        }
        if self.max_in_flight != other.max_in_flight {
            d.push(format!(
                "max_poll_records {} vs {}",
                self.max_in_flight, other.max_in_flight
            ));
        }
        d
    }
}
