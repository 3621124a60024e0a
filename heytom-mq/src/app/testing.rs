//! The test harness's hooks into [`AppBuilder`] (feature `testing`): the
//! harness lives in `crate::testing`; these only reach the builder's fields.

use std::sync::Arc;

use super::AppBuilder;
use crate::handler::HandlerRegistration;
use crate::transport::Transport;

impl AppBuilder {
    /// Every event travels on `transport` (an in-memory one), whatever
    /// transports were configured.
    pub(crate) fn only_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.in_memory = None;
        self.transports.clear();
        self.transport(transport)
    }

    /// Discovers only what the filter set so far and `also` both accept.
    pub(crate) fn narrow_discovery(
        mut self,
        also: impl Fn(&HandlerRegistration) -> bool + Send + Sync + 'static,
    ) -> Self {
        let before = self.filter.take();
        self.filter = Some(Box::new(move |r| {
            before.as_ref().is_none_or(|f| f(r)) && also(r)
        }));
        self
    }
}
