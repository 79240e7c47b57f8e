//! Interop with the real `etcdctl` of the harness's etcd release: `etcdctl lock` and
//! `etcd-recipes lock` exclude each other whichever starts first, and `elect` / `elect -l` work
//! across the two tools both ways.

mod common;

use anyhow::Result;
use common::{A_WHILE, Proc, SOON, etcd, etcdctl, run, tool};

#[test]
fn etcdctl_lock_first_excludes_ours() -> Result<()> {
    let etcd = etcd()?;
    let mut theirs = Proc::spawn(etcdctl(&etcd, &["lock", "shared"]))?;
    let key = theirs.line(SOON)?;
    assert!(key.starts_with("shared/"), "{key:?}");

    for strategy in ["mutex", "rpc"] {
        let out = run(tool(&etcd, &["lock", "--try", "--strategy", strategy, "shared", "--", "echo", "ran"]), SOON)?;
        assert_eq!(out.code, 2, "{strategy}: {out:?}");
        assert!(out.stderr.contains("locked by another session") && out.stderr.contains(&key), "{out:?}");
    }
    let mut ours = Proc::spawn(tool(&etcd, &["lock", "shared", "--", "echo", "ours-acquired"]))?;
    ours.no_line(A_WHILE)?;
    theirs.interrupt()?; // etcdctl unlocks on SIGINT
    assert_eq!(ours.line(SOON)?, "ours-acquired");
    assert_eq!(ours.wait(SOON)?, 0, "{}", ours.stderr());
    theirs.wait(SOON)?;
    Ok(())
}

#[test]
fn our_lock_first_excludes_etcdctl() -> Result<()> {
    let etcd = etcd()?;
    for strategy in ["mutex", "rpc"] {
        let mut ours = Proc::spawn(tool(&etcd, &["lock", "--strategy", strategy, "shared"]))?;
        let key = ours.line(SOON)?;
        assert!(key.starts_with("shared/"), "{key:?}");

        let mut theirs = Proc::spawn(etcdctl(&etcd, &["lock", "shared", "echo", "etcdctl-acquired"]))?;
        theirs.no_line(A_WHILE)?;
        ours.interrupt()?;
        assert_eq!(ours.wait(SOON)?, 0, "{strategy}: {}", ours.stderr());
        assert_eq!(theirs.line(SOON)?, "etcdctl-acquired", "{strategy}");
        assert_eq!(theirs.wait(SOON)?, 0, "{strategy}: {}", theirs.stderr());
    }
    Ok(())
}

#[test]
fn etcdctl_observes_our_campaign() -> Result<()> {
    let etcd = etcd()?;
    let mut ours = Proc::spawn(tool(&etcd, &["elect", "interop-elect", "ours"]))?;
    let key = ours.line(SOON)?;
    assert_eq!(ours.line(SOON)?, "ours");

    let mut observer = Proc::spawn(etcdctl(&etcd, &["elect", "-l", "interop-elect"]))?;
    assert_eq!(observer.line(SOON)?, key);
    assert_eq!(observer.line(SOON)?, "ours");

    // An etcdctl candidate queues behind ours and takes over when we resign.
    let mut theirs = Proc::spawn(etcdctl(&etcd, &["elect", "interop-elect", "theirs"]))?;
    theirs.no_line(A_WHILE)?;
    ours.interrupt()?;
    assert_eq!(ours.wait(SOON)?, 0, "{}", ours.stderr());
    let their_key = theirs.line(SOON)?;
    assert_eq!(theirs.line(SOON)?, "theirs");
    assert_eq!(observer.line(SOON)?, their_key);
    assert_eq!(observer.line(SOON)?, "theirs");
    theirs.interrupt()?;
    observer.interrupt()?;
    theirs.wait(SOON)?;
    observer.wait(SOON)?;
    Ok(())
}

#[test]
fn we_observe_an_etcdctl_campaign() -> Result<()> {
    let etcd = etcd()?;
    let mut theirs = Proc::spawn(etcdctl(&etcd, &["elect", "interop-elect", "theirs"]))?;
    let their_key = theirs.line(SOON)?;
    assert_eq!(theirs.line(SOON)?, "theirs");

    let mut observer = Proc::spawn(tool(&etcd, &["elect", "-l", "interop-elect"]))?;
    assert_eq!(observer.line(SOON)?, their_key);
    assert_eq!(observer.line(SOON)?, "theirs");

    let mut ours = Proc::spawn(tool(&etcd, &["elect", "interop-elect", "ours"]))?;
    ours.no_line(A_WHILE)?;
    theirs.interrupt()?; // etcdctl resigns on SIGINT
    let our_key = ours.line(SOON)?;
    assert_eq!(ours.line(SOON)?, "ours");
    assert_eq!(observer.line(SOON)?, our_key);
    assert_eq!(observer.line(SOON)?, "ours");
    ours.interrupt()?;
    assert_eq!(ours.wait(SOON)?, 0, "{}", ours.stderr());
    observer.interrupt()?;
    assert_eq!(observer.wait(SOON)?, 0, "{}", observer.stderr());
    theirs.wait(SOON)?;
    Ok(())
}
