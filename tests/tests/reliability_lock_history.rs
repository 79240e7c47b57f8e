//! Lock histories checked against a mutex (`etcd_tests::history`), in process: contenders, each
//! with its own client and session, take the lock in rounds (all invoke `lock()` together),
//! record when they invoked, acquired (with the token and the guard's `valid_until`) and
//! released, and the checker looks for two holders at once, tokens out of order and releases
//! of locks not held. The worker-process lock sets (`reliability_lockset`) run the same checker.
//!
//! The same workload on [`broken::skip_the_line`] (a lock that never waits for the keys ahead of
//! it) must be caught.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, ensure};
use etcd_recipes::{Session, Strategy};
use etcd_tests::history::{self, Record, Report, Step, Violation};
use etcd_tests::lockset::{epoch_ms, now_ms};
use etcd_tests::{broken, single};
use etcd_wire::{Client, ClientOptions, DeleteOptions};
use tokio::sync::Barrier;

const CONTENDERS: usize = 3;
const ROUNDS: usize = 6;
const HOLD: Duration = Duration::from_millis(20);

/// The lock under test.
#[derive(Debug, Clone, Copy)]
enum Lock {
    Real(Strategy),
    SkipsTheLine,
}

/// Runs the rounds and checks the history.
async fn rounds(lock: Lock) -> Result<Report> {
    let etcd = single()?;
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));
    let barrier = Arc::new(Barrier::new(CONTENDERS));
    let name = format!("history-{lock:?}");
    let mut tasks = Vec::new();
    for c in 0..CONTENDERS {
        let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
        let (records, barrier, name) = (records.clone(), barrier.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let me = format!("c{c}");
            let record =
                |step| records.lock().unwrap_or_else(|e| e.into_inner()).push(Record::new(&me, now_ms(), step));
            let session = Session::builder(&client).ttl(30).build().await?;
            for _ in 0..ROUNDS {
                barrier.wait().await;
                record(Step::Invoke);
                match lock {
                    Lock::Real(strategy) => {
                        let guard = strategy.new_lock(&session, &name)?.lock().await?;
                        let token = guard.fencing_token();
                        record(Step::Acquired { token, valid_until_ms: epoch_ms(guard.valid_until()) });
                        tokio::time::sleep(HOLD).await;
                        record(Step::ReleaseInvoked { token });
                        guard.unlock().await?;
                        record(Step::Released { token });
                    }
                    Lock::SkipsTheLine => {
                        let (key, token) = broken::skip_the_line(&session, &name).await?;
                        record(Step::Acquired { token, valid_until_ms: epoch_ms(session.valid_until()) });
                        tokio::time::sleep(HOLD).await;
                        record(Step::ReleaseInvoked { token });
                        client.delete(key, DeleteOptions::new()).await?;
                        record(Step::Released { token });
                    }
                }
            }
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await???;
    }
    let records = records.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = history::check(&records, 1);
    println!("{lock:?}: {report}");
    Ok(report)
}

async fn is_a_mutex(strategy: Strategy) -> Result<()> {
    let report = rounds(Lock::Real(strategy)).await?;
    ensure!(report.is_valid(), "{strategy:?}: {report}");
    ensure!(report.claims.len() == CONTENDERS * ROUNDS, "{strategy:?}: {report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_history_is_a_mutex_mutex() -> Result<()> {
    is_a_mutex(Strategy::Mutex).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_history_is_a_mutex_naive() -> Result<()> {
    is_a_mutex(Strategy::Naive).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_history_is_a_mutex_lease_ttl() -> Result<()> {
    is_a_mutex(Strategy::LeaseTtl).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_history_is_a_mutex_rpc() -> Result<()> {
    is_a_mutex(Strategy::Rpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_history_is_a_mutex_semaphore() -> Result<()> {
    is_a_mutex(Strategy::Semaphore).await
}

/// The checker can fail: contenders that never wait hold the lock together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_history_check_catches_a_lock_that_skips_the_line() -> Result<()> {
    let report = rounds(Lock::SkipsTheLine).await?;
    ensure!(
        report.violations.iter().any(|v| matches!(v, Violation::Overlap { .. })),
        "two holders at once went unnoticed: {report}"
    );
    Ok(())
}
