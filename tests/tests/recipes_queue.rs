//! Queue and PriorityQueue against real etcd: etcd's `TestQueue*` and `TestPrQueue*`, ported by name.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use etcd_recipes::{Error, PriorityQueue, Queue};
use etcd_tests::{single, three};
use etcd_wire::{Client, ClientOptions, GetOptions};
use tokio::task::JoinSet;

const MANY_QUEUE_CLIENTS: usize = 3;
const QUEUE_ITEMS_PER_CLIENT: usize = 2;

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// One client per member.
async fn clients(etcd: &etcd_tests::etcd_harness::EtcdCluster) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for ep in etcd.endpoints() {
        clients.push(connect(&[ep]).await?);
    }
    Ok(clients)
}

/// Either kind of queue, as Go's `testQueue` interface; the priority queue gets a priority from
/// the item number (order does not matter to these tests).
#[derive(Clone)]
enum AnyQueue {
    Fifo(Queue),
    Priority(PriorityQueue),
}

impl AnyQueue {
    async fn enqueue(&self, value: String, n: usize) -> etcd_recipes::Result<()> {
        match self {
            AnyQueue::Fifo(q) => q.enqueue(value).await,
            AnyQueue::Priority(q) => q.enqueue(value, (n % 2) as u16).await,
        }
    }
    async fn dequeue(&self) -> etcd_recipes::Result<Bytes> {
        match self {
            AnyQueue::Fifo(q) => q.dequeue().await,
            AnyQueue::Priority(q) => q.dequeue().await,
        }
    }
}

/// Go's `testReadersWriters`: writers enqueue, readers dequeue until every item is taken; each
/// item comes out exactly once.
async fn readers_writers(readers: Vec<AnyQueue>, writers: Vec<AnyQueue>) -> Result<()> {
    let total = writers.len() * QUEUE_ITEMS_PER_CLIENT;
    let mut tasks = JoinSet::new();
    for (w, q) in writers.into_iter().enumerate() {
        tasks.spawn(async move {
            for j in 0..QUEUE_ITEMS_PER_CLIENT {
                q.enqueue(format!("{w}-{j}"), j).await?;
            }
            anyhow::Ok(Vec::new())
        });
    }
    let claimed = Arc::new(AtomicUsize::new(0));
    for q in readers {
        let claimed = claimed.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            while claimed.fetch_add(1, Ordering::SeqCst) < total {
                got.push(q.dequeue().await?);
            }
            anyhow::Ok(got)
        });
    }
    let mut items = Vec::new();
    while let Some(done) = tokio::time::timeout(Duration::from_secs(30), tasks.join_next()).await? {
        items.extend(done??);
    }
    items.sort();
    let mut expected: Vec<Bytes> = (0..total / QUEUE_ITEMS_PER_CLIENT)
        .flat_map(|w| (0..QUEUE_ITEMS_PER_CLIENT).map(move |j| Bytes::from(format!("{w}-{j}"))))
        .collect();
    expected.sort();
    assert_eq!(items, expected, "every item is dequeued exactly once");
    Ok(())
}

async fn queue_n_reader_m_writer(n: usize, m: usize) -> Result<()> {
    let etcd = three()?;
    let cs = clients(&etcd).await?;
    let make = |i: usize| Queue::new(&cs[i % cs.len()], "q").map(AnyQueue::Fifo);
    let readers = (0..n).map(make).collect::<etcd_recipes::Result<_>>()?;
    let writers = (0..m).map(|i| make(i + 1)).collect::<etcd_recipes::Result<_>>()?;
    readers_writers(readers, writers).await?;
    assert!(cs[0].get("q/", GetOptions::new().with_prefix()).await?.kvs.is_empty());
    Ok(())
}

/// Go's `TestQueueOneReaderOneWriter`: the queue is FIFO, also while the reader waits on an
/// empty queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_queue_one_reader_one_writer() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let writer = Queue::new(&c, "testq")?;
    let producer = tokio::spawn(async move {
        for i in 0..5 {
            writer.enqueue(i.to_string()).await?;
        }
        anyhow::Ok(())
    });
    let q = Queue::new(&c, "testq")?;
    for i in 0..5 {
        let v = tokio::time::timeout(Duration::from_secs(10), q.dequeue()).await??;
        assert_eq!(v, i.to_string(), "dequeued out of order");
    }
    producer.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_queue_many_reader_one_writer() -> Result<()> {
    queue_n_reader_m_writer(MANY_QUEUE_CLIENTS, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_queue_one_reader_many_writer() -> Result<()> {
    queue_n_reader_m_writer(1, MANY_QUEUE_CLIENTS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_queue_many_reader_many_writer() -> Result<()> {
    queue_n_reader_m_writer(MANY_QUEUE_CLIENTS, MANY_QUEUE_CLIENTS).await
}

/// Go's `TestPrQueueOneReaderOneWriter`: items come out in priority order; and (beyond Go) in
/// FIFO order within a priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pr_queue_one_reader_one_writer() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let q = PriorityQueue::new(&c, "testprq")?;
    // Priorities in [0, 2], so they collide; the item names its priority and its place.
    let priorities = [2u16, 0, 1, 2, 0, 1, 1, 0];
    for (i, pr) in priorities.iter().enumerate() {
        q.enqueue(format!("{pr}-{i}"), *pr).await?;
    }
    let mut last: Option<(u16, usize)> = None;
    for _ in 0..priorities.len() {
        let v = tokio::time::timeout(Duration::from_secs(10), q.dequeue()).await??;
        let text = String::from_utf8(v.to_vec())?;
        let (pr, place) = text.split_once('-').ok_or_else(|| anyhow::anyhow!("bad item {text}"))?;
        let now = (pr.parse::<u16>()?, place.parse::<usize>()?);
        assert!(last.is_none_or(|l| l < now), "{now:?} came out after {last:?}");
        last = Some(now);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pr_queue_many_reader_many_writer() -> Result<()> {
    let etcd = three()?;
    let cs = clients(&etcd).await?;
    let make = |i: usize| PriorityQueue::new(&cs[i % cs.len()], "prq").map(AnyQueue::Priority);
    let readers = (0..MANY_QUEUE_CLIENTS).map(make).collect::<etcd_recipes::Result<_>>()?;
    let writers = (0..MANY_QUEUE_CLIENTS).map(|i| make(i + 1)).collect::<etcd_recipes::Result<_>>()?;
    readers_writers(readers, writers).await?;
    assert!(cs[0].get("prq/", GetOptions::new().with_prefix()).await?.kvs.is_empty());
    Ok(())
}

/// A priority queue's waiting reader wakes for a later put; a dropped `dequeue` takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_waiting_and_cancelled_dequeue() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let q = Queue::new(&c, "waitq")?;
    assert!(tokio::time::timeout(Duration::from_millis(300), q.dequeue()).await.is_err());
    q.enqueue("kept").await?;
    assert_eq!(q.dequeue().await?, "kept", "the cancelled dequeue took nothing");

    let pq = PriorityQueue::new(&c, "waitprq")?;
    let reader = pq.clone();
    let watching = etcd_tests::watchers(&etcd.endpoints())?;
    let waiting = tokio::spawn(async move { reader.dequeue().await });
    etcd_tests::wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!waiting.is_finished());
    pq.enqueue("late", 7).await?;
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), waiting).await???, "late");
    assert!(matches!(Queue::new(&c, ""), Err(Error::InvalidArgument(_))));
    assert!(matches!(PriorityQueue::new(&c, ""), Err(Error::InvalidArgument(_))));
    Ok(())
}
