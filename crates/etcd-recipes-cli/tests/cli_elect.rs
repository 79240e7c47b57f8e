//! `etcd-recipes elect` and `elect -l` against a harness-started etcd.

mod common;

use anyhow::Result;
use common::{A_WHILE, Proc, SOON, etcd, keys, run, tool};

#[test]
fn campaigns_hand_over_and_the_observer_follows() -> Result<()> {
    let etcd = etcd()?;
    let mut observer = Proc::spawn(tool(&etcd, &["elect", "-l", "sched"]))?;
    // No leader yet: nothing printed.
    observer.no_line(std::time::Duration::from_millis(500))?;

    let mut first = Proc::spawn(tool(&etcd, &["elect", "sched", "host-a"]))?;
    let first_key = first.line(SOON)?;
    assert!(first_key.starts_with("sched/"), "{first_key:?}");
    assert_eq!(first.line(SOON)?, "host-a");
    assert_eq!(observer.line(SOON)?, first_key);
    assert_eq!(observer.line(SOON)?, "host-a");

    let mut second = Proc::spawn(tool(&etcd, &["elect", "sched", "host-b"]))?;
    second.no_line(A_WHILE)?;
    first.interrupt()?;
    assert_eq!(first.wait(SOON)?, 0, "{}", first.stderr());
    let second_key = second.line(SOON)?;
    assert!(second_key.starts_with("sched/") && second_key != first_key, "{second_key:?}");
    assert_eq!(second.line(SOON)?, "host-b");
    assert_eq!(observer.line(SOON)?, second_key);
    assert_eq!(observer.line(SOON)?, "host-b");
    assert_eq!(keys(&etcd, "sched/")?, [second_key], "the first leader resigned");

    second.signal("TERM")?;
    assert_eq!(second.wait(SOON)?, 0, "{}", second.stderr());
    assert!(keys(&etcd, "sched/")?.is_empty(), "SIGTERM resigned");
    observer.interrupt()?;
    assert_eq!(observer.wait(SOON)?, 0, "{}", observer.stderr());
    Ok(())
}

#[test]
fn trace_shows_the_campaign() -> Result<()> {
    let etcd = etcd()?;
    let mut p = Proc::spawn(tool(&etcd, &["trace", "elect", "traced", "me"]))?;
    p.line(SOON)?;
    assert_eq!(p.line(SOON)?, "me");
    p.interrupt()?;
    assert_eq!(p.wait(SOON)?, 0);
    let err = p.stderr();
    for want in ["election.campaign: Txn traced/", "elected with fencing token", "election.resign", "session.close"] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    Ok(())
}

#[test]
fn signal_while_campaigning_withdraws() -> Result<()> {
    let etcd = etcd()?;
    let leader = Proc::spawn(tool(&etcd, &["elect", "queue", "one"]))?;
    let key = leader.line(SOON)?;
    let mut waiting = Proc::spawn(tool(&etcd, &["elect", "queue", "two"]))?;
    common::eventually(SOON, "the second candidate", || Ok(keys(&etcd, "queue/")?.len() == 2))?;
    waiting.interrupt()?;
    assert_eq!(waiting.wait(SOON)?, 130, "{}", waiting.stderr());
    common::eventually(SOON, "the candidacy to go", || Ok(keys(&etcd, "queue/")? == [key.clone()]))?;
    leader.interrupt()?;
    // Usage: a proposal and -l together make no sense.
    let out = run(tool(&etcd, &["elect", "-l", "queue", "three"]), SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    Ok(())
}
