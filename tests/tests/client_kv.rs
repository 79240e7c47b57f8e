//! The typed client's KV and Txn calls against real etcd: options, typed responses, typed errors.

use anyhow::Result;
use etcd_tests::requests_started;
use etcd_tests::single;
use etcd_wire::{
    Client, ClientOptions, Compare, CompareOp, DeleteOptions, Error, GetOptions, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse,
};

async fn connect(etcd: &etcd_harness::EtcdCluster) -> Result<Client> {
    Ok(Client::connect(etcd.endpoints(), ClientOptions::default()).await?)
}

#[tokio::test]
async fn get_options_cover_ranges_sorting_and_revisions() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let mut revs = Vec::new();
    for (k, v) in [("a/1", "x"), ("a/2", "yy"), ("a/3", "zzz"), ("b", "w")] {
        revs.push(c.put(k, v, PutOptions::new()).await?.header.revision);
    }

    let prefix = c.get("a/", GetOptions::new().with_prefix()).await?;
    assert_eq!(prefix.count, 3);
    assert_eq!(prefix.kvs.iter().map(|kv| kv.key_str().into_owned()).collect::<Vec<_>>(), ["a/1", "a/2", "a/3"]);

    let limited = c.get("a/", GetOptions::new().with_prefix().with_limit(2)).await?;
    assert_eq!((limited.kvs.len(), limited.more, limited.count), (2, true, 3));

    let desc = c.get("a/", GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend)).await?;
    assert_eq!(desc.kvs[0].value, "zzz");

    let from = c.get("a/3", GetOptions::new().with_from_key()).await?;
    assert_eq!(from.kvs.iter().map(|kv| kv.key_str().into_owned()).collect::<Vec<_>>(), ["a/3", "b"]);

    let range = c.get("a/2", GetOptions::new().with_range("b")).await?;
    assert_eq!(range.count, 2);

    let keys = c.get("a/", GetOptions::new().with_prefix().with_keys_only()).await?;
    assert!(keys.kvs.iter().all(|kv| kv.value.is_empty()));
    let count = c.get("a/", GetOptions::new().with_prefix().with_count_only()).await?;
    assert_eq!((count.count, count.kvs.len()), (3, 0));

    // Reading at an old revision sees the store as it was.
    let old = c.get("a/", GetOptions::new().with_prefix().with_revision(revs[1])).await?;
    assert_eq!(old.count, 2);
    let serial = c.get("a/1", GetOptions::new().with_serializable()).await?;
    assert_eq!(serial.kvs[0].value, "x");

    let modr = c.get("a/", GetOptions::new().with_prefix().with_mod_revision_range(revs[1], 0)).await?;
    assert_eq!(modr.count, 3, "count ignores the filter; kvs apply it");
    assert_eq!(modr.kvs.len(), 2);
    let created = c.get("a/", GetOptions::new().with_prefix().with_create_revision_range(0, revs[0])).await?;
    assert_eq!(created.kvs.len(), 1);
    Ok(())
}

#[tokio::test]
async fn put_and_delete_return_previous_values() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    assert!(c.put("k", "1", PutOptions::new().with_prev_kv()).await?.prev_kv.is_none());
    let second = c.put("k", "2", PutOptions::new().with_prev_kv()).await?;
    let prev = second.prev_kv.expect("previous value");
    assert_eq!((prev.value.as_ref(), prev.version), (&b"1"[..], 1));

    let got = c.get("k", GetOptions::new()).await?;
    assert_eq!((got.kvs[0].version, got.kvs[0].mod_revision), (2, second.header.revision));

    // ignore_value keeps the value while changing nothing else.
    c.put("k", "", PutOptions::new().with_ignore_value()).await?;
    assert_eq!(c.get("k", GetOptions::new()).await?.kvs[0].value, "2");

    for k in ["d/1", "d/2"] {
        c.put(k, "v", PutOptions::new()).await?;
    }
    let del = c.delete("d/", DeleteOptions::new().with_prefix().with_prev_kv()).await?;
    assert_eq!((del.deleted, del.prev_kvs.len()), (2, 2));
    assert_eq!(c.delete("nothing", DeleteOptions::new()).await?.deleted, 0);
    Ok(())
}

#[tokio::test]
async fn txn_branches_nest_and_report_typed_responses() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let created = c
        .txn(
            Txn::new()
                .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("lock", "a", PutOptions::new())])
                .or_else([TxnOp::get("lock", GetOptions::new())]),
        )
        .await?;
    assert!(created.succeeded);
    assert!(matches!(created.responses[0], TxnOpResponse::Put(_)));

    let again = c
        .txn(
            Txn::new()
                .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("lock", "b", PutOptions::new())])
                .or_else([TxnOp::get("lock", GetOptions::new())]),
        )
        .await?;
    assert!(!again.succeeded);
    assert_eq!(again.gets().next().map(|g| g.kvs[0].value.clone()), Some("a".into()));

    // Every compare target and operator.
    let rev = created.header.revision;
    let all = c
        .txn(Txn::new().when([
            Compare::value("lock", CompareOp::Equal, "a"),
            Compare::value("lock", CompareOp::NotEqual, "b"),
            Compare::version("lock", CompareOp::Equal, 1),
            Compare::create_revision("lock", CompareOp::Equal, rev),
            Compare::mod_revision("lock", CompareOp::Less, rev + 1),
            Compare::mod_revision("lock", CompareOp::Greater, rev - 1),
            Compare::lease("lock", CompareOp::Equal, 0),
        ]))
        .await?;
    assert!(all.succeeded);

    let nested = c
        .txn(
            Txn::new().and_then([TxnOp::txn(
                Txn::new()
                    .when([Compare::value("lock", CompareOp::Equal, "zzz")])
                    .or_else([TxnOp::delete("lock", DeleteOptions::new())]),
            )]),
        )
        .await?;
    match &nested.responses[0] {
        TxnOpResponse::Txn(inner) => {
            assert!(!inner.succeeded);
            assert!(matches!(&inner.responses[0], TxnOpResponse::Delete(d) if d.deleted == 1));
        }
        other => panic!("expected a nested txn response, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn errors_are_typed() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    // Client-side validation: nothing is sent.
    assert!(matches!(c.put("", "v", PutOptions::new()).await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(c.get("", GetOptions::new()).await, Err(Error::InvalidArgument { .. })));

    let rev = c.put("k", "v", PutOptions::new()).await?.header.revision;
    let future = c.get("k", GetOptions::new().with_revision(rev + 100)).await;
    assert!(matches!(future, Err(Error::FutureRevision { .. })), "{future:?}");

    c.put("k", "v2", PutOptions::new()).await?;
    c.compact(rev + 1, true).await?;
    let compacted = c.get("k", GetOptions::new().with_revision(rev)).await;
    assert!(matches!(compacted, Err(Error::Compacted { .. })), "{compacted:?}");

    // etcd's default --max-txn-ops is 128.
    let ops = (0..129).map(|i| TxnOp::put(format!("t/{i}"), "v", PutOptions::new()));
    let big = c.txn(Txn::new().and_then(ops)).await;
    assert!(matches!(big, Err(Error::TooManyTxnOps { .. })), "{big:?}");
    assert_eq!(c.get("t/", GetOptions::new().with_prefix()).await?.count, 0, "nothing half-written");

    let lease_put = c.put("k", "v", PutOptions::new().with_lease(0x1234)).await;
    assert!(matches!(lease_put, Err(Error::LeaseNotFound { .. })), "{lease_put:?}");
    Ok(())
}

#[tokio::test]
async fn namespaces_isolate_keys() -> Result<()> {
    let etcd = single()?;
    let root = connect(&etcd).await?;
    let app = root.with_namespace("app/");
    let other = root.with_namespace("other/");

    app.put("k", "in-app", PutOptions::new()).await?;
    other.put("k", "in-other", PutOptions::new()).await?;
    root.put("k", "at-root", PutOptions::new()).await?;

    assert_eq!(app.get("k", GetOptions::new()).await?.kvs[0].value, "in-app");
    assert_eq!(root.get("app/k", GetOptions::new()).await?.kvs[0].value, "in-app");
    // "All keys" inside a namespace stays inside it, and results come back without the prefix.
    let all = app.get("", GetOptions::new().with_prefix()).await?;
    assert_eq!(all.kvs.iter().map(|kv| kv.key_str().into_owned()).collect::<Vec<_>>(), ["k"]);
    let from = app.get("\0", GetOptions::new().with_from_key()).await?;
    assert_eq!(from.count, 1);

    let swapped = app
        .txn(Txn::new().when([Compare::value("k", CompareOp::Equal, "in-app")]).and_then([TxnOp::put(
            "k",
            "swapped",
            PutOptions::new().with_prev_kv(),
        )]))
        .await?;
    assert!(swapped.succeeded);
    match &swapped.responses[0] {
        TxnOpResponse::Put(p) => assert_eq!(p.prev_kv.as_ref().map(|kv| kv.key.clone()), Some("k".into())),
        other => panic!("{other:?}"),
    }
    app.delete("", DeleteOptions::new().with_prefix()).await?;
    assert_eq!(root.get("k", GetOptions::new()).await?.kvs[0].value, "at-root");
    assert_eq!(other.get("k", GetOptions::new()).await?.kvs[0].value, "in-other");
    assert_eq!(root.with_namespace("app/").with_namespace("x/").namespace(), b"app/x/");
    Ok(())
}

#[tokio::test]
async fn many_calls_in_flight_on_one_client() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let puts = (0..256).map(|i| {
        let c = c.clone();
        async move { c.put(format!("par/{i:03}"), format!("{i}"), PutOptions::new()).await }
    });
    for r in futures::future::join_all(puts).await {
        r?;
    }
    assert_eq!(c.get("par/", GetOptions::new().with_prefix().with_count_only()).await?.count, 256);
    Ok(())
}

/// etcd before 3.5.5 panics when a read-only Txn is cancelled while the server reads
/// (etcd-io/etcd#14110: "unexpected error during txn"). Callers drop futures all the time (a
/// `timeout`, a `select!`), so the client must never let that cancellation reach the server: a
/// read-only Txn, once sent, runs to its end. Hundreds of read-only Txns abandoned at every stage
/// leave the member serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_read_only_txns_never_crash_the_server() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let value = "v".repeat(200);
    for i in 0..500 {
        c.put(format!("ro/{i:04}"), value.clone(), PutOptions::new()).await?;
    }
    let read = || Txn::new().and_then([TxnOp::get("ro/", GetOptions::new().with_prefix())]);
    for i in 0..400u64 {
        let _ = tokio::time::timeout(std::time::Duration::from_micros(i * 37 % 4000), c.txn(read())).await;
    }
    let after = c.txn(read()).await;
    let log = etcd.log_tail(0, 5);
    assert!(after.is_ok(), "the member stopped serving: {after:?}\n{log}");
    assert_eq!(after?.gets().next().map(|g| g.count), Some(500));
    Ok(())
}

/// RangeStream is etcd 3.7's: the servers tested here (3.5.1, 3.4.23) answer gRPC `Unimplemented`,
/// which comes back as `Error::Unsupported`, for a plain client and a namespaced one alike, while
/// the same read through `get` works. Bad input fails on the client, before any RPC.
#[tokio::test]
async fn get_stream_is_unsupported_before_etcd_3_7() -> Result<()> {
    let etcd = single()?;
    let url = etcd.endpoints()[0].clone();
    let c = connect(&etcd).await?;
    let app = c.with_namespace("app/");
    for k in ["a", "b", "c"] {
        app.put(k, "v", PutOptions::new()).await?;
    }

    let sent = requests_started(&url, &["Range", "RangeStream"])?;
    let r = c.get_stream("", GetOptions::new()).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "an empty key: {r:?}");
    let r = c.get_stream("k", GetOptions::new().with_limit(-1)).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert_eq!(requests_started(&url, &["Range", "RangeStream"])?, sent);

    for (who, client) in [("plain", &c), ("namespaced", &app)] {
        let r = client.get_stream("", GetOptions::new().with_prefix()).await;
        match &r {
            Err(e @ Error::Unsupported { what, status }) => {
                assert_eq!(what, "etcdserverpb.KV/RangeStream", "{who}");
                assert_eq!(status.code(), etcd_wire::GrpcCode::Unimplemented);
                assert!(!e.is_unavailable() && !e.is_indeterminate(), "{who}: {e:?}");
                assert!(e.to_string().contains("RangeStream"), "{e}");
            }
            other => panic!("{who}: etcd {} answered {other:?}", etcd.version()),
        }
    }
    let all = app.get("", GetOptions::new().with_prefix()).await?;
    assert_eq!((all.count, all.kvs[0].key_str().as_ref()), (3, "a"), "get reads what get_stream could not");
    Ok(())
}
