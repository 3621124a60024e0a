//! One declaration at a time per name (an exchange, a topic): the sends
//! that meet a name not declared yet wait for the one declaration in
//! flight and then find it done, instead of each making their own (a new
//! producer's first burst of concurrent sends); declarations of other
//! names go on beside it (one slow `CreateTopics` holds up its own topic
//! only).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(crate) struct DeclareOnce {
    by_name: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DeclareOnce {
    /// Waits for `name`'s turn; the caller looks again whether it is
    /// declared, declares it if not, and lets the guard go.
    pub(crate) async fn turn(&self, name: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
            match by_name.get(name) {
                Some(l) => l.clone(),
                None => by_name.entry(name.to_owned()).or_default().clone(),
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn one_turn_per_name_at_a_time_other_names_beside_it() {
        let once = DeclareOnce::default();
        let a = once.turn("a").await;
        // Another name's turn is not held up by `a`'s.
        let b = once.turn("b").now_or_never().expect("b's turn at once");
        // `a` again waits until the first turn ends.
        let mut again = Box::pin(once.turn("a"));
        assert!((&mut again).now_or_never().is_none(), "a is taken");
        drop(a);
        assert!(
            again.now_or_never().is_some(),
            "a's next turn after the first"
        );
        drop(b);
    }
}
