//! What the recipes record through the [`metrics`](https://docs.rs/metrics) facade, with the
//! `metrics` feature (without it, every function here is empty and compiles away), so a service
//! can graph lock contention with no code of its own:
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `etcd_lock_acquired_total` | counter | `recipe` | locks (permits, leaderships) taken |
//! | `etcd_lock_wait_seconds` | histogram | `recipe` | how long each acquisition took, the wait in line included |
//! | `etcd_lock_hold_seconds` | histogram | `recipe` | from acquisition to release (`unlock`, a dropped guard, `resign`) |
//! | `etcd_lock_lost_total` | counter | `recipe`, `reason` | holds found lost: `lease`, `key_gone`, `expired` (by [`lost`](crate::LockGuard::lost) or [`while_held`](crate::LockGuard::while_held)), or `gone_at_release` (an `unlock` or `resign` that found nothing to release) |
//!
//! `recipe` is the recipe's name as traces show it (`mutex`, `semaphore`, `naive`, `lease_ttl`,
//! `rpc`, `rwmutex`, `election`, ...). A hold found lost is counted once. With etcd-wire's own
//! `metrics` feature on as well (this feature turns it on), every RPC below is recorded too.

use std::time::Duration;

use crate::held::Lost;

/// A hold taken after `waited`.
pub(crate) fn acquired(recipe: &'static str, waited: Duration) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("etcd_lock_acquired_total", "recipe" => recipe).increment(1);
        metrics::histogram!("etcd_lock_wait_seconds", "recipe" => recipe).record(waited.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (recipe, waited);
}

/// A hold released after `held` (its release starts now).
pub(crate) fn released(recipe: &'static str, held: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("etcd_lock_hold_seconds", "recipe" => recipe).record(held.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (recipe, held);
}

/// A hold found lost, for `why` (`None`: a release found nothing to release).
pub(crate) fn lost(recipe: &'static str, why: Option<Lost>) {
    #[cfg(feature = "metrics")]
    {
        let reason = match why {
            Some(Lost::Lease(_)) => "lease",
            Some(Lost::KeyGone) => "key_gone",
            Some(Lost::Expired) => "expired",
            None => "gone_at_release",
        };
        metrics::counter!("etcd_lock_lost_total", "recipe" => recipe, "reason" => reason).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (recipe, why);
}
