//! Election under faults: three candidate processes (`lockset_worker mode=elect`) on a 3-member
//! cluster, three observers (one client per member). The leader's process is SIGKILLed, twice:
//! every observer then sees exactly one new leader, the same one, within the session TTL plus one
//! handoff, and exactly one candidate process reports being elected.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use etcd_harness::{ClientProcess, ClusterConfig, EtcdCluster};
use etcd_recipes::{Election, Session};
use etcd_tests::eventually;
use etcd_tests::lockset::{Event, Strategy, WorkerArgs, WorkerMode, now_ms, parse_lines};
use etcd_wire::{Client, ClientOptions, GetOptions, SortOrder, SortTarget};
use futures::StreamExt;

const WORKER: &str = env!("CARGO_BIN_EXE_lockset_worker");
const TTL: u64 = 2;
/// What one handoff may take on a busy machine, on top of the TTL: the lease's expiry on the
/// leader, the delete event, the next candidate's check, the observers' reads. Generous on
/// purpose (2 shared cores); the measured times are printed.
const HANDOFF: Duration = Duration::from_secs(5);

/// A leader as an observer saw it: (create revision, value), and when.
type Seen = Arc<Mutex<Vec<(Instant, i64, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_is_replaced_once_and_every_observer_agrees() -> Result<()> {
    let etcd = Arc::new(EtcdCluster::start(ClusterConfig::default().with_members(3))?);
    let e = etcd.clone();
    tokio::task::spawn_blocking(move || e.wait_for_leader(Duration::from_secs(30))).await??;
    let name = "rel-election";

    let mut candidates = Vec::new();
    for i in 0..3 {
        let args = WorkerArgs {
            endpoints: etcd.endpoints(),
            strategy: Strategy::Mutex,
            permits: 1,
            mode: WorkerMode::Elect,
            ttl_secs: TTL,
            name: name.to_owned(),
            id: format!("candidate-{i}"),
            duration: Duration::from_secs(120),
            max_ops: None,
            hold_ms: (0, 0),
            stop_file: None,
        };
        candidates.push(ClientProcess::spawn(args.id.clone(), args.command(WORKER.as_ref()))?);
    }

    let mut observers = Vec::new();
    let mut tasks = Vec::new();
    for endpoint in etcd.endpoints() {
        let client = Client::connect([endpoint], ClientOptions::default()).await?;
        let session = Session::new(&client).await?;
        let seen: Seen = Arc::default();
        let out = seen.clone();
        let mut leaders = Box::pin(Election::new(&session, name)?.observe());
        tasks.push(tokio::spawn(async move {
            while let Some(kv) = leaders.next().await {
                let kv = kv?;
                let entry = (Instant::now(), kv.create_revision, kv.value_str().into_owned());
                out.lock().unwrap_or_else(PoisonError::into_inner).push(entry);
            }
            anyhow::Ok(())
        }));
        observers.push((seen, session));
    }
    let latest = |seen: &Seen| seen.lock().unwrap_or_else(PoisonError::into_inner).last().cloned();

    let direct = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;

    // The first leader, as every observer sees it.
    let mut leader = eventually(Duration::from_secs(30), "a first leader seen by every observer", || async {
        let firsts: BTreeSet<_> = observers.iter().map(|(s, _)| latest(s).map(|l| (l.1, l.2))).collect();
        match firsts.into_iter().collect::<Vec<_>>()[..] {
            [Some(ref one)] => Some(one.clone()),
            _ => None,
        }
    })
    .await?;

    for round in 0..2 {
        let victim = candidates.iter().position(|c| c.name() == leader.1).context("the leader is a candidate")?;
        let counts: Vec<usize> =
            observers.iter().map(|(s, _)| s.lock().unwrap_or_else(PoisonError::into_inner).len()).collect();
        let (killed_at, killed_ms) = (Instant::now(), now_ms());
        candidates[victim].kill()?;

        // Every observer sees a new leader.
        let deadline = Duration::from_secs(TTL) + HANDOFF;
        eventually(deadline + Duration::from_secs(20), "every observer to see a new leader", || async {
            observers.iter().all(|(s, _)| latest(s).is_some_and(|l| l.1 != leader.0)).then_some(())
        })
        .await?;
        // Settled, by what etcd and the processes say, not by a pause: the new leader's process
        // reports it was elected, and etcd holds exactly the live candidates' keys with the
        // observed leader's the oldest. Nothing is left to change the leader (its process lives,
        // the others wait behind it); then look at everything observed since the kill.
        let live = candidates.len() - 1 - round;
        eventually(deadline + Duration::from_secs(20), "the new leader to settle", || async {
            let now = latest(&observers[0].0)?;
            let process = candidates.iter().find(|c| c.name() == now.2)?;
            let reported = parse_lines(process)
                .iter()
                .any(|l| l.t_ms >= killed_ms && matches!(l.event, Event::Elected { token } if token == now.1));
            let by_age = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
            let keys = direct.get(format!("{name}/"), by_age).await.ok()?.kvs;
            (reported && keys.len() == live && keys[0].create_revision == now.1).then_some(())
        })
        .await?;
        let mut next = BTreeSet::new();
        let mut slowest = Duration::ZERO;
        for ((seen, _), before) in observers.iter().zip(&counts) {
            let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            let after: Vec<_> = seen[*before..].iter().filter(|l| l.1 != leader.0).collect();
            ensure!(
                after.len() == 1,
                "round {round}: an observer saw {} leaders after the kill: {after:?}",
                after.len()
            );
            next.insert((after[0].1, after[0].2.clone()));
            slowest = slowest.max(after[0].0.duration_since(killed_at));
        }
        ensure!(next.len() == 1, "round {round}: observers disagree on the new leader: {next:?}");
        let new = next.into_iter().next().context("a new leader")?;
        let elected: Vec<&str> = candidates
            .iter()
            .filter(|c| parse_lines(c).iter().any(|l| l.t_ms >= killed_ms && matches!(l.event, Event::Elected { .. })))
            .map(|c| c.name())
            .collect();
        ensure!(elected == [new.1.as_str()], "round {round}: elected after the kill: {elected:?}, observed {new:?}");
        println!("round {round}: {} killed; {} elected, seen by every observer within {slowest:?}", leader.1, new.1);
        ensure!(
            slowest <= deadline,
            "round {round}: the new leader took {slowest:?} (TTL {TTL} s + handoff {HANDOFF:?})"
        );
        leader = new;
    }
    for t in &tasks {
        if t.is_finished() {
            bail!("an observer stopped");
        }
    }
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}
