//! `etcd-recipes lock` against a harness-started etcd: with and without CMD, `--try`, `--timeout`,
//! every `--strategy`, `--trace`, signals, and a session lost while the lock is held.

mod common;

use anyhow::{Context, Result, ensure};
use common::{A_WHILE, Proc, SOON, etcd, eventually, keys, run, tool};

#[test]
fn command_runs_under_the_lock_with_its_env_and_exit_code() -> Result<()> {
    let etcd = etcd()?;
    let out =
        run(tool(&etcd, &["lock", "job", "--", "sh", "-c", "echo \"$ETCD_LOCK_KEY $ETCD_LOCK_REV\"; exit 7"]), SOON)?;
    assert_eq!(out.code, 7, "{out:?}");
    let (key, rev) = out.stdout.split_once(' ').context("two words")?;
    assert!(key.starts_with("job/") && key.len() > 4, "{out:?}");
    assert!(rev.parse::<i64>()? > 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    // Released when the command ended: nothing left under the name, and the next holder gets in.
    assert!(keys(&etcd, "job/")?.is_empty());
    let out = run(tool(&etcd, &["lock", "--try", "job", "sh", "-c", "echo $ETCD_LOCK_REV"]), SOON)?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.parse::<i64>()? > rev.parse::<i64>()?, "the fencing token grows: {out:?}");
    Ok(())
}

#[test]
fn without_command_it_prints_the_key_and_holds_until_a_signal() -> Result<()> {
    let etcd = etcd()?;
    for signal in ["INT", "TERM"] {
        let mut holder = Proc::spawn(tool(&etcd, &["lock", "held"]))?;
        let key = holder.line(SOON)?;
        assert!(key.starts_with("held/"), "first line {key:?}");
        assert_eq!(holder.line(SOON)?, "", "the (empty) value line, as etcdctl prints it");
        assert_eq!(keys(&etcd, "held/")?, std::slice::from_ref(&key));

        let tried = run(tool(&etcd, &["lock", "--try", "held", "--", "true"]), SOON)?;
        assert_eq!(tried.code, 2, "{tried:?}");
        assert!(tried.stderr.contains("locked by another session"), "{tried:?}");
        assert!(tried.stderr.contains(&key), "the message names the holder: {tried:?}");
        assert_eq!(tried.stderr.trim().lines().count(), 1, "{tried:?}");

        holder.signal(signal)?;
        assert_eq!(holder.wait(SOON)?, 0, "stderr: {}", holder.stderr());
        assert!(keys(&etcd, "held/")?.is_empty(), "SIG{signal} released the lock");
        assert_eq!(run(tool(&etcd, &["lock", "--try", "held", "--", "true"]), SOON)?.code, 0);
    }
    Ok(())
}

#[test]
fn timeout_gives_up_with_a_message_and_leaves_no_key() -> Result<()> {
    let etcd = etcd()?;
    let holder = Proc::spawn(tool(&etcd, &["lock", "busy"]))?;
    let key = holder.line(SOON)?;
    let out = run(tool(&etcd, &["lock", "--timeout", "1s", "busy", "--", "echo", "ran"]), SOON)?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("gave up waiting for lock \"busy\" after 1s"), "{out:?}");
    assert!(out.stderr.contains("--timeout") && out.stderr.contains(&key), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.took >= std::time::Duration::from_secs(1), "{out:?}");
    eventually(SOON, "the waiter's key to go", || Ok(keys(&etcd, "busy/")? == [key.clone()]))?;
    holder.interrupt()?;
    Ok(())
}

#[test]
fn every_strategy_excludes_and_hands_over() -> Result<()> {
    let etcd = etcd()?;
    for strategy in ["mutex", "naive", "lease", "rpc", "semaphore"] {
        let name = format!("strat-{strategy}");
        let mut holder = Proc::spawn(tool(&etcd, &["lock", "--strategy", strategy, &name]))?;
        let key = holder.line(SOON)?;
        let want = if matches!(strategy, "mutex" | "rpc" | "semaphore") { format!("{name}/") } else { name.clone() };
        assert!(key.starts_with(&want), "{strategy}: key {key:?}");

        let tried = run(tool(&etcd, &["lock", "--strategy", strategy, "--try", &name, "--", "true"]), SOON)?;
        assert_eq!(tried.code, 2, "{strategy}: {tried:?}");
        assert!(tried.stderr.contains("locked by another session"), "{strategy}: {tried:?}");

        let mut waiter = Proc::spawn(tool(
            &etcd,
            &["lock", "--strategy", strategy, &name, "--", "sh", "-c", "echo got $ETCD_LOCK_KEY $ETCD_LOCK_REV"],
        ))?;
        waiter.no_line(A_WHILE).with_context(|| format!("{strategy}: the waiter ran while the lock was held"))?;
        holder.interrupt()?;
        assert_eq!(holder.wait(SOON)?, 0, "{strategy}: {}", holder.stderr());
        let got = waiter.line(SOON)?;
        let words: Vec<&str> = got.split(' ').collect();
        assert!(words.len() == 3 && words[0] == "got" && words[1].starts_with(&want), "{strategy}: {got:?}");
        assert!(words[2].parse::<i64>()? > 0, "{strategy}: {got:?}");
        assert_eq!(waiter.wait(SOON)?, 0, "{strategy}: {}", waiter.stderr());
    }
    Ok(())
}

/// `lock -n 2`, as `consul lock -n`: two hold at once, a third `--try` is refused, a third that
/// waits runs its command once one holder leaves (the other still holding), with `--trace`
/// showing the semaphore's steps; `-n 0` is refused.
#[test]
fn permits_let_n_hold_at_once() -> Result<()> {
    let etcd = etcd()?;
    let mut first = Proc::spawn(tool(&etcd, &["lock", "-n", "2", "enc"]))?;
    let mut second = Proc::spawn(tool(&etcd, &["lock", "-n", "2", "enc"]))?;
    let (k1, k2) = (first.line(SOON)?, second.line(SOON)?);
    ensure!(k1.starts_with("enc/") && k2.starts_with("enc/") && k1 != k2, "{k1:?} {k2:?}");

    let tried = run(tool(&etcd, &["lock", "-n", "2", "--try", "enc", "--", "true"]), SOON)?;
    ensure!(tried.code == 2 && tried.stderr.contains("all 2 permits"), "{tried:?}");
    ensure!(keys(&etcd, "enc/")?.len() == 2, "a refused try leaves no key");

    let cmd = ["--trace", "lock", "-n", "2", "enc", "--", "sh", "-c", "echo got $ETCD_LOCK_KEY $ETCD_LOCK_REV"];
    let mut waiter = Proc::spawn(tool(&etcd, &cmd))?;
    eventually(SOON, "the waiter in line", || Ok(keys(&etcd, "enc/")?.len() == 3))?;
    second.interrupt()?;
    ensure!(second.wait(SOON)? == 0, "{}", second.stderr());
    let got = waiter.line(SOON)?;
    ensure!(got.starts_with("got enc/"), "{got:?}");
    ensure!(waiter.wait(SOON)? == 0, "{}", waiter.stderr());
    ensure!(first.is_running(), "the first holder kept its permit");
    let trace = waiter.stderr();
    ensure!(trace.contains("semaphore.acquire") && trace.contains("Txn(mark)"), "{trace}");
    first.interrupt()?;
    ensure!(first.wait(SOON)? == 0, "{}", first.stderr());
    ensure!(keys(&etcd, "enc/")?.is_empty());

    let zero = run(tool(&etcd, &["lock", "-n", "0", "enc", "--", "true"]), SOON)?;
    ensure!(zero.code == 1 && zero.stderr.contains("at least one permit"), "{zero:?}");
    Ok(())
}

#[test]
fn trace_prints_rpcs_watches_and_events() -> Result<()> {
    let etcd = etcd()?;
    // Uncontended, with the global flag.
    let out = run(tool(&etcd, &["--trace", "lock", "solo", "--", "true"]), SOON)?;
    assert_eq!(out.code, 0, "{out:?}");
    for want in [
        "session.start: LeaseGrant",
        "mutex.lock: Txn solo/",
        "@rev",
        " ms",
        "mutex.unlock: Txn",
        "session.close: LeaseRevoke",
    ] {
        assert!(out.stderr.contains(want), "no {want:?} in:\n{}", out.stderr);
    }
    assert!(out.stderr.lines().all(|l| l.starts_with("trace[")), "{}", out.stderr);

    // Contended, naive: the waiter watches the key and sees its DELETE (the `trace` subcommand form).
    let holder = Proc::spawn(tool(&etcd, &["lock", "--strategy", "naive", "herd"]))?;
    holder.line(SOON)?;
    let mut waiter = Proc::spawn(tool(&etcd, &["trace", "lock", "--strategy", "naive", "herd", "--", "true"]))?;
    eventually(SOON, "the waiter to watch", || Ok(waiter.stderr().contains("naive.lock: watch herd")))?;
    holder.interrupt()?;
    assert_eq!(waiter.wait(SOON)?, 0, "{}", waiter.stderr());
    let err = waiter.stderr();
    for want in
        ["naive.lock: Txn herd -> else", "waiting for its delete", "event DELETE herd", "naive.lock: Txn herd -> then"]
    {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    Ok(())
}

#[test]
fn signals_reach_the_command_and_its_exit_is_reported() -> Result<()> {
    let etcd = etcd()?;
    // SIGTERM to the tool is passed on; the command's own exit code comes back; the lock is released.
    let script = "trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.1; done";
    let mut p = Proc::spawn(tool(&etcd, &["lock", "sig", "--", "sh", "-c", script]))?;
    assert_eq!(p.line(SOON)?, "ready");
    p.signal("TERM")?;
    assert_eq!(p.line(SOON)?, "got-term");
    assert_eq!(p.wait(SOON)?, 5, "{}", p.stderr());
    assert!(keys(&etcd, "sig/")?.is_empty());

    // A command killed by a signal: 128 + the signal.
    let out = run(tool(&etcd, &["lock", "sig", "--", "sh", "-c", "kill -KILL $$"]), SOON)?;
    assert_eq!(out.code, 128 + 9, "{out:?}");
    // A command that does not exist: 127, one line, and the lock is not kept.
    let out = run(tool(&etcd, &["lock", "sig", "--", "/no/such/command"]), SOON)?;
    assert_eq!(out.code, 127, "{out:?}");
    assert!(out.stderr.contains("cannot run \"/no/such/command\""), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(keys(&etcd, "sig/")?.is_empty());

    // A signal while waiting: not acquired, 128 + SIGINT, no key left behind.
    let holder = Proc::spawn(tool(&etcd, &["lock", "sig"]))?;
    let key = holder.line(SOON)?;
    let mut waiter = Proc::spawn(tool(&etcd, &["lock", "sig", "--", "echo", "ran"]))?;
    eventually(SOON, "the waiter to queue", || Ok(keys(&etcd, "sig/")?.len() == 2))?;
    waiter.interrupt()?;
    assert_eq!(waiter.wait(SOON)?, 130, "{}", waiter.stderr());
    assert!(waiter.stderr().contains("SIGINT while waiting for lock \"sig\""), "{}", waiter.stderr());
    eventually(SOON, "the waiter's key to go", || Ok(keys(&etcd, "sig/")? == [key.clone()]))?;
    holder.interrupt()?;
    Ok(())
}

#[test]
fn losing_the_session_is_reported_and_terminates_the_command() -> Result<()> {
    let etcd = etcd()?;
    let mut with_cmd =
        Proc::spawn(tool(&etcd, &["--ttl", "2", "lock", "lost", "--", "sh", "-c", "echo $$; exec sleep 120"]))?;
    let cmd_pid: u32 = with_cmd.line(SOON)?.parse()?;
    let mut holding = Proc::spawn(tool(&etcd, &["--ttl", "2", "lock", "lost-too"]))?;
    holding.line(SOON)?;
    let mut leader = Proc::spawn(tool(&etcd, &["--ttl", "2", "elect", "lost-elect", "me"]))?;
    leader.line(SOON)?;

    // Freeze etcd for longer than the TTL: the keep-alives go unanswered past the lease's deadline.
    etcd.pause(0)?;
    let results = (|| -> Result<_> { Ok((with_cmd.wait(SOON)?, holding.wait(SOON)?, leader.wait(SOON)?)) })();
    etcd.resume(0)?;
    let (with_cmd_code, holding_code, leader_code) = results?;

    assert_eq!(with_cmd_code, 3, "{}", with_cmd.stderr());
    assert!(with_cmd.stderr().contains("etcd-recipes: session lost while holding the lock: "), "{}", with_cmd.stderr());
    assert!(!std::path::Path::new(&format!("/proc/{cmd_pid}")).exists(), "the command still runs");
    assert_eq!(holding_code, 3, "{}", holding.stderr());
    assert!(holding.stderr().contains("session lost while holding the lock"), "{}", holding.stderr());
    assert_eq!(leader_code, 3, "{}", leader.stderr());
    assert!(leader.stderr().contains("session lost while leader"), "{}", leader.stderr());
    Ok(())
}

#[test]
fn a_deleted_lock_key_is_reported_as_lost() -> Result<()> {
    let etcd = etcd()?;
    let mut p = Proc::spawn(tool(&etcd, &["lock", "gone", "--", "sh", "-c", "echo ready; exec sleep 120"]))?;
    assert_eq!(p.line(SOON)?, "ready");
    let key = keys(&etcd, "gone/")?.pop().context("a key")?;
    etcd.run_etcdctl(["del", &key])?;
    assert_eq!(p.wait(SOON)?, 3, "{}", p.stderr());
    let err = p.stderr();
    ensure!(err.contains("lock lost while holding it: the lock key") && err.contains("was deleted"), "{err}");
    Ok(())
}
