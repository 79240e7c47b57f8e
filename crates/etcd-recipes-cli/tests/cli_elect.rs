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

/// `sh -c` printing `<leader key> <fencing token> <pid>`, then sleeping until signalled.
const LEADING: &str = "echo \"$ETCD_LEADER_KEY $ETCD_LEADER_REV $$\"; exec sleep 120";

/// A line of [`LEADING`]: (key, token, pid).
fn leading(line: &str) -> Result<(String, i64, u32)> {
    let f: Vec<&str> = line.split(' ').collect();
    anyhow::ensure!(f.len() == 3, "unexpected line {line:?}");
    Ok((f[0].to_owned(), f[1].parse()?, f[2].parse()?))
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn latch_runs_the_command_only_while_leader_and_again_after_a_loss() -> Result<()> {
    let etcd = etcd()?;
    let latch = |value: &str| tool(&etcd, &["--ttl", "2", "elect", "--latch", "job", value, "--", "sh", "-c", LEADING]);
    let mut a = Proc::spawn(latch("a"))?;
    let (a_key, a_rev, a_pid) = leading(&a.line(SOON)?)?;
    assert!(a_key.starts_with("job/"), "{a_key}");
    let mut b = Proc::spawn(latch("b"))?;
    common::eventually(SOON, "b in line", || Ok(keys(&etcd, "job/")?.len() == 2))?;
    b.no_line(A_WHILE)?;

    // Deleting a's key ends its leadership: its command is terminated, b's runs, a campaigns again.
    etcd.run_etcdctl(["del", &a_key])?;
    let (b_key, b_rev, b_pid) = leading(&b.line(SOON)?)?;
    assert!(b_rev > a_rev && b_key != a_key);
    common::eventually(SOON, "a's command to be terminated", || Ok(gone(a_pid)))?;
    // Written before the command was stopped, but read from the pipe by another thread.
    common::eventually(SOON, "a to report the loss", || Ok(a.stderr().contains("leadership lost")))?;
    common::eventually(SOON, "a in line again", || Ok(keys(&etcd, "job/")?.len() == 2))?;

    // SIGTERM reaches b's command, whose exit code b exits with; a leads again, on a new lease.
    b.signal("TERM")?;
    assert_eq!(b.wait(SOON)?, 143, "{}", b.stderr());
    assert!(gone(b_pid));
    let (a_key2, a_rev2, _) = leading(&a.line(SOON)?)?;
    assert!(a_rev2 > b_rev && a_key2 != a_key, "{a_key2} {a_rev2}");
    a.interrupt()?;
    assert_eq!(a.wait(SOON)?, 130, "{}", a.stderr());
    assert!(keys(&etcd, "job/")?.is_empty(), "nothing left");
    Ok(())
}

#[test]
fn latch_stops_the_command_when_valid_until_passes_and_runs_it_again() -> Result<()> {
    let etcd = etcd()?;
    let mut a = Proc::spawn(tool(&etcd, &["--ttl", "2", "elect", "--latch", "frozen", "--", "sh", "-c", LEADING]))?;
    let (key, rev, pid) = leading(&a.line(SOON)?)?;
    // etcd frozen: no keep-alive answer, so valid_until passes and the command is stopped although
    // nobody told the tool anything.
    etcd.pause(0)?;
    let stopped = common::eventually(SOON, "the command to be stopped", || Ok(gone(pid)));
    etcd.resume(0)?;
    stopped?;
    let (key2, rev2, _) = leading(&a.line(SOON)?)?;
    assert!(rev2 > rev && key2 != key, "a new term: {key2} {rev2}");
    a.signal("TERM")?;
    assert_eq!(a.wait(SOON)?, 143, "{}", a.stderr());
    Ok(())
}

#[test]
fn latch_trace_and_a_command_that_ends_by_itself() -> Result<()> {
    let etcd = etcd()?;
    let out = run(tool(&etcd, &["trace", "elect", "--latch", "traced", "me", "--", "sh", "-c", "exit 7"]), SOON)?;
    assert_eq!(out.code, 7, "{out:?}");
    for want in
        ["election.campaign: Txn traced/", "latch.run: leader with fencing token", "cmd.run: started", "latch.close"]
    {
        assert!(out.stderr.contains(want), "no {want:?} in:\n{}", out.stderr);
    }
    assert!(keys(&etcd, "traced/")?.is_empty(), "closing revoked the lease");

    // A signal while following ends the tool with 0, and its candidacy with it.
    let leader = Proc::spawn(tool(&etcd, &["elect", "--latch", "quiet", "one", "--", "sh", "-c", LEADING]))?;
    leader.line(SOON)?;
    let mut follower = Proc::spawn(tool(&etcd, &["elect", "--latch", "quiet", "two", "--", "true"]))?;
    common::eventually(SOON, "the follower in line", || Ok(keys(&etcd, "quiet/")?.len() == 2))?;
    follower.interrupt()?;
    assert_eq!(follower.wait(SOON)?, 0, "{}", follower.stderr());
    common::eventually(SOON, "the follower's key to go", || Ok(keys(&etcd, "quiet/")?.len() == 1))?;
    leader.interrupt()?;
    let out = run(tool(&etcd, &["elect", "--latch", "quiet", "x"]), SOON)?;
    assert_eq!(out.code, 1, "--latch without CMD is a usage error: {out:?}");
    Ok(())
}
