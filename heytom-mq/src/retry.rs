//! Retry policy for failing handlers.

use std::time::Duration;

use crate::error::{check, Result};

/// How often and how patiently a failing handler is retried before its
/// message goes to the dead-letter destination.
///
/// The setters take any value; [`RetryPolicy::validate`] (run by
/// `AppBuilder::build` and by the manual consumers' `start`/`subscribe`)
/// rejects those out of range with an [`Error::Configuration`](crate::Error::Configuration):
/// `max_attempts` at least 1, each backoff at most
/// [`RetryPolicy::MAX_BACKOFF`] (1 day), `multiplier` a finite number from
/// 1 to [`RetryPolicy::MAX_MULTIPLIER`] (100).
///
/// ```
/// use std::time::Duration;
/// use heytom_mq::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(5)
///     .initial_backoff(Duration::from_millis(50))
///     .max_backoff(Duration::from_secs(2));
/// assert_eq!(policy.backoff(1), Duration::from_millis(50));
/// assert_eq!(policy.backoff(2), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first delivery included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound of any wait.
    pub max_backoff: Duration,
    /// Growth of the wait from one retry to the next.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// 3 attempts, waiting 200 ms then 400 ms (doubling, at most 30 s).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure dead-letters.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the attempts in all, the first delivery included (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the first wait (at most [`MAX_BACKOFF`](Self::MAX_BACKOFF)).
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Sets the longest wait (at most [`MAX_BACKOFF`](Self::MAX_BACKOFF)).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Sets the growth factor (a finite number from 1 to
    /// [`MAX_MULTIPLIER`](Self::MAX_MULTIPLIER)).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// The longest `initial_backoff` and `max_backoff` accepted: 1 day.
    pub const MAX_BACKOFF: Duration = check::DAY;
    /// The largest `multiplier` accepted.
    pub const MAX_MULTIPLIER: f64 = 100.0;

    /// Checks every setting; the error names the setting and its range.
    ///
    /// ```
    /// use heytom_mq::RetryPolicy;
    ///
    /// assert!(RetryPolicy::default().validate().is_ok());
    /// let err = RetryPolicy::default().multiplier(f64::NAN).validate().unwrap_err();
    /// assert!(err.to_string().contains("RetryPolicy::multiplier"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        check::int(
            "RetryPolicy::max_attempts (deliveries in all, the first included)",
            self.max_attempts,
            1,
            i128::from(u32::MAX),
        )?;
        check::duration(
            "RetryPolicy::initial_backoff",
            self.initial_backoff,
            Duration::ZERO,
            Self::MAX_BACKOFF,
        )?;
        check::duration(
            "RetryPolicy::max_backoff",
            self.max_backoff,
            Duration::ZERO,
            Self::MAX_BACKOFF,
        )?;
        if !(self.multiplier.is_finite() && (1.0..=Self::MAX_MULTIPLIER).contains(&self.multiplier))
        {
            return Err(crate::Error::config(format!(
                "RetryPolicy::multiplier must be a finite number between 1 and {}, found {}",
                Self::MAX_MULTIPLIER,
                self.multiplier
            )));
        }
        Ok(())
    }

    /// The wait after failed attempt number `attempt` (1-based): the
    /// initial backoff grown by the multiplier, at most the max backoff.
    /// Never panics, whatever the settings: a multiplier that
    /// [`validate`](Self::validate) would refuse counts as 1.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exp = multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = self.initial_backoff.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max_backoff.as_secs_f64() {
            self.max_backoff
        } else {
            Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_configuration_errors() {
        let bad = [
            RetryPolicy::default().max_attempts(0),
            RetryPolicy::default().multiplier(-2.0),
            RetryPolicy::default().multiplier(0.5),
            RetryPolicy::default().multiplier(f64::NAN),
            RetryPolicy::default().multiplier(f64::INFINITY),
            RetryPolicy::default().multiplier(1e6),
            RetryPolicy::default().initial_backoff(Duration::MAX),
            RetryPolicy::default().max_backoff(Duration::MAX),
        ];
        for p in bad {
            let e = p.validate().unwrap_err();
            assert!(matches!(e, crate::Error::Configuration(_)), "{p:?}");
            assert!(e.to_string().contains("RetryPolicy::"), "{e}");
            // Even refused settings never make the arithmetic panic.
            for attempt in [0, 1, 2, 64, u32::MAX] {
                let _ = p.backoff(attempt);
            }
        }
        assert!(RetryPolicy::none().validate().is_ok());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(800));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
    }
}
