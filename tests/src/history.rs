//! A lock-history checker: is a recorded history of acquisitions and releases one a lock with
//! `permits` holders (1 for a mutex, N for a semaphore) may produce?
//!
//! Every holder records, on one clock (all processes run on this machine):
//! - when it *invoked* `lock()` and when the call *returned* with a fencing token;
//! - the lock's `valid_until` each time it looked (the instant before which the library promises
//!   the lock is still held; see `LockGuard::valid_until`);
//! - when it invoked `unlock()` and whether that returned;
//! - or that it crashed / lost the lock.
//!
//! From that, each acquisition *claims* the lock from its return until the earliest of: its
//! unlock's invocation, the last `valid_until` it was promised, and (for one that crashed or lost
//! the lock) its `Gone` record; one still held when the history ends claims its whole promise. [`check`] then finds every way the history breaks the model:
//! - [`Violation::Overlap`]: more than `permits` claims cover one instant;
//! - [`Violation::TokenOrder`]: an acquisition that returned before another was invoked has a
//!   token that is not smaller (fencing tokens must grow with real-time acquisition order);
//! - [`Violation::UnmatchedRelease`]: an unlock for a token the process does not hold (never
//!   acquired, or already released).
//!
//! A claim's end is the holder's own promise, so a holder paused past its TTL whose lease expired
//! claims nothing after its `valid_until`: a correct lock lets the next holder in after that,
//! never before.

use std::collections::BTreeMap;
use std::fmt;

/// What one holder did, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `lock()` was called.
    Invoke,
    /// `lock()` returned: the lock is held with this fencing token, promised until `valid_until_ms`.
    Acquired {
        /// The fencing token.
        token: i64,
        /// The `valid_until` at that moment (ms on the shared clock); `None` if none was given.
        valid_until_ms: Option<u64>,
    },
    /// The holder looked at its lock's `valid_until` again.
    Valid {
        /// The fencing token.
        token: i64,
        /// The `valid_until` now (ms); `None` once the lease is known lost.
        valid_until_ms: Option<u64>,
    },
    /// `unlock()` was called.
    ReleaseInvoked {
        /// The fencing token being released.
        token: i64,
    },
    /// `unlock()` returned (successfully or not: the claim already ended at its invocation).
    Released {
        /// The fencing token.
        token: i64,
    },
    /// The holder learned it lost the lock, or stopped recording (crash, kill): its claim ends here.
    Gone,
}

/// One record: who, when (ms on the shared clock), what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The holder (a worker or task name; one acquisition at a time each).
    pub process: String,
    /// When, in ms.
    pub t_ms: u64,
    /// What.
    pub step: Step,
}

impl Record {
    /// A record.
    pub fn new(process: impl Into<String>, t_ms: u64, step: Step) -> Record {
        Record { process: process.into(), t_ms, step }
    }
}

/// One acquisition as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Who.
    pub process: String,
    /// The fencing token.
    pub token: i64,
    /// When `lock()` was invoked.
    pub invoked_ms: u64,
    /// When `lock()` returned.
    pub acquired_ms: u64,
    /// When the claim ends (see the module docs).
    pub until_ms: u64,
}

/// A way a history breaks the lock model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// More than `permits` claims hold at `at_ms`: these.
    Overlap {
        /// The instant.
        at_ms: u64,
        /// The claims holding then.
        holders: Vec<Claim>,
    },
    /// `earlier` returned before `later` was invoked, yet its token is not smaller.
    TokenOrder {
        /// The first acquisition.
        earlier: Claim,
        /// The second.
        later: Claim,
    },
    /// `process` released `token`, which it did not hold.
    UnmatchedRelease {
        /// Who.
        process: String,
        /// The token.
        token: i64,
        /// When.
        at_ms: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let claim = |c: &Claim| format!("{} token {} [{}..{}]", c.process, c.token, c.acquired_ms, c.until_ms);
        match self {
            Violation::Overlap { at_ms, holders } => {
                let names: Vec<_> = holders.iter().map(claim).collect();
                write!(f, "{} holders at {at_ms}: {}", holders.len(), names.join(", "))
            }
            Violation::TokenOrder { earlier, later } => {
                write!(f, "token order: {} returned before {} was invoked", claim(earlier), claim(later))
            }
            Violation::UnmatchedRelease { process, token, at_ms } => {
                write!(f, "{process} released token {token} at {at_ms} without holding it")
            }
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every acquisition, in acquisition order.
    pub claims: Vec<Claim>,
    /// The most claims holding at one instant.
    pub max_holders: usize,
    /// Every violation (empty for a valid history).
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether the history is valid.
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} acquisitions, at most {} holders at once", self.claims.len(), self.max_holders)?;
        for v in self.violations.iter().take(10) {
            write!(f, "\n  VIOLATION: {v}")?;
        }
        if self.violations.len() > 10 {
            write!(f, "\n  ... and {} more", self.violations.len() - 10)?;
        }
        Ok(())
    }
}

/// Checks `records` (in any order; each process's own in time order) against a lock that admits
/// `permits` holders at once.
pub fn check(records: &[Record], permits: usize) -> Report {
    let mut report = Report::default();
    let mut by_process: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_process.entry(r.process.as_str()).or_default().push(r);
    }
    for (process, mut mine) in by_process {
        mine.sort_by_key(|r| r.t_ms);
        let mut invoked: Option<u64> = None;
        // The open claim: token, invoked, acquired, promised until.
        let mut open: Option<(i64, u64, u64, Option<u64>)> = None;
        let close = |open: (i64, u64, u64, Option<u64>), end: u64, claims: &mut Vec<Claim>| {
            let (token, invoked_ms, acquired_ms, promised) = open;
            let until_ms = promised.map_or(end, |p| p.min(end)).max(acquired_ms);
            claims.push(Claim { process: process.to_owned(), token, invoked_ms, acquired_ms, until_ms });
        };
        for r in &mine {
            match r.step {
                Step::Invoke => invoked = Some(r.t_ms),
                Step::Acquired { token, valid_until_ms } => {
                    if let Some(o) = open.take() {
                        close(o, r.t_ms, &mut report.claims);
                    }
                    open = Some((token, invoked.take().unwrap_or(r.t_ms), r.t_ms, valid_until_ms));
                }
                Step::Valid { token, valid_until_ms } => {
                    if let Some(o) = open.as_mut().filter(|o| o.0 == token) {
                        // A promise only ever extends the claim; `None` (lease known lost) ends it
                        // at the last promise.
                        if let Some(v) = valid_until_ms {
                            o.3 = Some(o.3.map_or(v, |p| p.max(v)));
                        } else if o.3.is_none() {
                            o.3 = Some(r.t_ms);
                        }
                    }
                }
                Step::ReleaseInvoked { token } => match open.take() {
                    Some(o) if o.0 == token => close(o, r.t_ms, &mut report.claims),
                    other => {
                        open = other;
                        report.violations.push(Violation::UnmatchedRelease {
                            process: process.to_owned(),
                            token,
                            at_ms: r.t_ms,
                        });
                    }
                },
                Step::Released { .. } => {}
                Step::Gone => {
                    if let Some(o) = open.take() {
                        close(o, r.t_ms, &mut report.claims);
                    }
                }
            }
        }
        // Still held when the history ends: claimed for as long as it was promised (a process
        // that was killed records `Gone` instead).
        if let (Some(o), Some(last)) = (open, mine.last()) {
            let end = if o.3.is_some() { u64::MAX } else { last.t_ms };
            close(o, end, &mut report.claims);
        }
    }
    report.claims.sort_by_key(|c| (c.acquired_ms, c.token));

    // Holders at each instant: a sweep over claim starts and ends (an end at t frees the lock
    // for a start at t: intervals are half-open).
    let mut edges: Vec<(u64, bool, usize)> = Vec::new();
    for (i, c) in report.claims.iter().enumerate() {
        if c.until_ms > c.acquired_ms {
            edges.push((c.acquired_ms, true, i));
            edges.push((c.until_ms, false, i));
        }
    }
    edges.sort_by_key(|&(t, start, _)| (t, start));
    let mut holding: Vec<usize> = Vec::new();
    let mut reported_until = 0;
    for (t, start, i) in edges {
        if !start {
            holding.retain(|&h| h != i);
            continue;
        }
        holding.push(i);
        report.max_holders = report.max_holders.max(holding.len());
        if holding.len() > permits && t >= reported_until {
            let holders: Vec<Claim> = holding.iter().map(|&h| report.claims[h].clone()).collect();
            reported_until = holders.iter().map(|c| c.until_ms).min().unwrap_or(t);
            report.violations.push(Violation::Overlap { at_ms: t, holders });
        }
    }

    // Tokens grow with real-time order: `a` returned before `b` was invoked ⇒ a.token < b.token.
    let mut by_invoke: Vec<&Claim> = report.claims.iter().collect();
    by_invoke.sort_by_key(|c| c.invoked_ms);
    let mut done_before: Option<&Claim> = None; // the largest token among claims returned so far
    let mut by_return: Vec<&Claim> = report.claims.iter().collect();
    by_return.sort_by_key(|c| c.acquired_ms);
    let mut next_returned = 0;
    for b in by_invoke {
        while next_returned < by_return.len() && by_return[next_returned].acquired_ms < b.invoked_ms {
            let a = by_return[next_returned];
            if done_before.is_none_or(|d| a.token > d.token) {
                done_before = Some(a);
            }
            next_returned += 1;
        }
        if let Some(a) = done_before
            && a.token >= b.token
        {
            report.violations.push(Violation::TokenOrder { earlier: a.clone(), later: b.clone() });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(p: &str, invoke: u64, at: u64, token: i64, valid: u64) -> [Record; 2] {
        [
            Record::new(p, invoke, Step::Invoke),
            Record::new(p, at, Step::Acquired { token, valid_until_ms: Some(valid) }),
        ]
    }

    fn release(p: &str, at: u64, token: i64) -> [Record; 2] {
        [Record::new(p, at, Step::ReleaseInvoked { token }), Record::new(p, at + 1, Step::Released { token })]
    }

    fn history(parts: &[&[Record]]) -> Vec<Record> {
        parts.iter().flat_map(|p| p.iter().cloned()).collect()
    }

    #[test]
    fn a_clean_handoff_is_valid() {
        let h = history(&[
            &acquire("a", 0, 10, 5, 10_000),
            &acquire("b", 5, 40, 7, 10_000),
            &release("a", 30, 5),
            &release("b", 60, 7),
        ]);
        let r = check(&h, 1);
        assert!(r.is_valid(), "{r}");
        assert_eq!((r.claims.len(), r.max_holders), (2, 1));
    }

    #[test]
    fn two_holders_at_once_are_caught() {
        // b is let in while a still holds: what a lock that skips the predecessor check does.
        let h = history(&[&acquire("a", 0, 10, 5, 10_000), &acquire("b", 5, 20, 7, 10_000), &release("a", 30, 5)]);
        let r = check(&h, 1);
        assert!(matches!(&r.violations[..], [Violation::Overlap { at_ms: 20, holders }] if holders.len() == 2), "{r}");
        assert!(check(&h, 2).is_valid(), "a semaphore of 2 allows it");
    }

    #[test]
    fn a_paused_holder_claims_only_until_its_promise() {
        // a is paused past its TTL: its promise (valid_until 100) ends before b acquires at 150,
        // even though a only calls unlock at 500. Valid. With a promise past 150, it is not.
        let ok = history(&[&acquire("a", 0, 10, 5, 100), &acquire("b", 20, 150, 7, 10_000), &release("a", 500, 5)]);
        assert!(check(&ok, 1).is_valid());
        let late = history(&[&acquire("a", 0, 10, 5, 200), &acquire("b", 20, 150, 7, 10_000), &release("a", 500, 5)]);
        assert!(!check(&late, 1).is_valid());
        // A later promise extends the claim.
        let mut extended = ok.clone();
        extended.push(Record::new("a", 90, Step::Valid { token: 5, valid_until_ms: Some(400) }));
        assert!(!check(&extended, 1).is_valid());
    }

    #[test]
    fn tokens_must_grow_with_acquisition_order() {
        let h = history(&[
            &acquire("a", 0, 10, 9, 10_000),
            &release("a", 20, 9),
            &acquire("b", 30, 40, 8, 10_000),
            &release("b", 50, 8),
        ]);
        let r = check(&h, 1);
        assert!(matches!(&r.violations[..], [Violation::TokenOrder { .. }]), "{r}");
        // Concurrent invocations may return in either order of tokens.
        let h = history(&[
            &acquire("a", 0, 10, 9, 10_000),
            &release("a", 20, 9),
            &acquire("b", 5, 40, 8, 10_000),
            &release("b", 50, 8),
        ]);
        assert!(check(&h, 1).is_valid());
    }

    #[test]
    fn releases_must_match_a_held_token() {
        let h = history(&[&acquire("a", 0, 10, 5, 10_000), &release("a", 20, 5), &release("a", 30, 5)]);
        let r = check(&h, 1);
        assert!(matches!(&r.violations[..], [Violation::UnmatchedRelease { token: 5, .. }]), "{r}");
        let h = history(&[&release("b", 30, 3)]);
        assert!(!check(&h, 1).is_valid());
    }

    #[test]
    fn a_crashed_holder_claims_until_its_last_record() {
        let mut h = history(&[&acquire("a", 0, 10, 5, 10_000), &acquire("b", 20, 300, 7, 10_000)]);
        h.push(Record::new("a", 100, Step::Gone));
        assert!(check(&h, 1).is_valid());
        h.push(Record::new("a", 400, Step::Valid { token: 5, valid_until_ms: Some(500) }));
        // A record after Gone for a closed claim changes nothing.
        assert!(check(&h, 1).is_valid());
    }

    #[test]
    fn semaphore_counts_holders() {
        let h = history(&[
            &acquire("a", 0, 10, 5, 10_000),
            &acquire("b", 0, 11, 6, 10_000),
            &acquire("c", 0, 12, 7, 10_000),
            &release("a", 20, 5),
            &release("b", 20, 6),
            &release("c", 20, 7),
        ]);
        assert!(check(&h, 3).is_valid());
        let r = check(&h, 2);
        assert_eq!((r.max_holders, r.violations.len()), (3, 1), "{r}");
    }
}
