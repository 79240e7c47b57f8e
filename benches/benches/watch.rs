//! `watch`:
//! - `watch/put_to_event/<client>`: a put from one client → the event at a watcher on another;
//! - `watch/events/1_watcher`: event throughput to one watcher, puts 64 in flight;
//! - `watch/events/1000_watchers`: 1,000 watchers on one key sharing the client's one watch stream;
//!   each put delivers 1,000 events (criterion's throughput counts events).

mod common;

use std::time::{Duration, Instant};

use criterion::Throughput;
use etcd_benches::peer::peer_client;
use etcd_benches::{BoxError, KV_VALUE, Server, in_flight, runtime, unique};
use etcd_wire::{PutOptions, WatchOptions};
use futures::StreamExt;

fn main() -> Result<(), BoxError> {
    let server = Server::start(false)?;
    eprintln!("watch: against {}", server.describe());
    let rt = runtime();
    let _entered = rt.enter();
    let (writer, reader) =
        rt.block_on(async { Ok::<_, BoxError>((server.client().await?, server.client().await?)) })?;
    let mut c = common::criterion();

    let mut group = c.benchmark_group("watch/put_to_event");
    group.bench_function("etcd-wire", |b| {
        let key = unique("watch-latency");
        let mut watcher = rt.block_on(reader.watch(key.clone(), WatchOptions::new())).expect("watch");
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    writer.put(key.clone(), &KV_VALUE[..], PutOptions::new()).await.expect("put");
                    loop {
                        let resp = watcher.next().await.expect("watch ended").expect("watch failed");
                        if !resp.events.is_empty() {
                            break;
                        }
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    });
    group.bench_function("etcd-client", |b| {
        let key = unique("watch-latency");
        let mut stream = rt
            .block_on(async {
                let mut peer = peer_client(server.endpoints()).await?;
                let mut stream = peer.watch(key.as_str(), None).await?;
                stream.message().await?; // the `created` answer
                Ok::<_, etcd_client::Error>(stream)
            })
            .expect("etcd-client watch");
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    writer.put(key.clone(), &KV_VALUE[..], PutOptions::new()).await.expect("put");
                    loop {
                        let resp = stream.message().await.expect("watch failed").expect("watch ended");
                        if !resp.events().is_empty() {
                            break;
                        }
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    });
    group.finish();

    let mut group = c.benchmark_group("watch/events");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_watcher", |b| {
        let key = unique("watch-one");
        let mut watcher = rt.block_on(reader.watch(key.clone(), WatchOptions::new())).expect("watch");
        b.iter_custom(|iters| {
            rt.block_on(async {
                let writes = in_flight(iters, 64, |_| async {
                    writer.put(key.clone(), &KV_VALUE[..], PutOptions::new()).await.map(drop)
                });
                let reads = async {
                    let mut seen = 0;
                    while seen < iters {
                        seen += watcher.next().await.expect("watch ended").expect("watch failed").events.len() as u64;
                    }
                };
                let start = Instant::now();
                let (written, ()) = tokio::join!(writes, reads);
                written.expect("put");
                start.elapsed()
            })
        });
    });
    const WATCHERS: u64 = 1000;
    group.throughput(Throughput::Elements(WATCHERS));
    group.bench_function("1000_watchers", |b| {
        let key = unique("watch-many");
        let watchers = rt
            .block_on(
                futures::stream::iter(0..WATCHERS)
                    .map(|_| reader.watch(key.clone(), WatchOptions::new()))
                    .buffer_unordered(64)
                    .collect::<Vec<_>>(),
            )
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .expect("watch");
        let mut all = futures::stream::select_all(watchers);
        b.iter_custom(|iters| {
            rt.block_on(async {
                let writes = in_flight(iters, 64, |_| async {
                    writer.put(key.clone(), &KV_VALUE[..], PutOptions::new()).await.map(drop)
                });
                let reads = async {
                    let mut seen = 0;
                    while seen < iters * WATCHERS {
                        seen += all.next().await.expect("watch ended").expect("watch failed").events.len() as u64;
                    }
                };
                let start = Instant::now();
                let (written, ()) = tokio::join!(writes, reads);
                written.expect("put");
                start.elapsed()
            })
        });
    });
    group.finish();
    c.final_summary();
    Ok(())
}
