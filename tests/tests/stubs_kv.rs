//! The generated KV stubs against real etcd: put, range, delete and txn.

use anyhow::Result;
use etcd_tests::{channel, single};
use etcd_wire::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, kv_client::KvClient,
    request_op, response_op,
};

#[tokio::test]
async fn put_range_delete() -> Result<()> {
    let etcd = single()?;
    let mut kv = KvClient::new(channel(&etcd.endpoints()[0]).await?);

    let put = kv
        .put(PutRequest { key: "greeting".into(), value: "hello".into(), prev_kv: true, ..Default::default() })
        .await?
        .into_inner();
    assert!(put.prev_kv.is_none(), "a fresh key has no previous value");
    let rev = put.header.expect("header").revision;

    let got = kv.range(RangeRequest { key: "greeting".into(), ..Default::default() }).await?.into_inner();
    assert_eq!(got.count, 1);
    let kv0 = &got.kvs[0];
    assert_eq!((&kv0.key[..], &kv0.value[..]), (&b"greeting"[..], &b"hello"[..]));
    assert_eq!((kv0.create_revision, kv0.mod_revision, kv0.version), (rev, rev, 1));

    // A prefix range: key .. prefix_end.
    for k in ["p/a", "p/b", "p/c", "q"] {
        kv.put(PutRequest { key: k.into(), value: "v".into(), ..Default::default() }).await?;
    }
    let prefix =
        kv.range(RangeRequest { key: "p/".into(), range_end: "p0".into(), ..Default::default() }).await?.into_inner();
    let keys: Vec<_> = prefix.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, ["p/a", "p/b", "p/c"].map(bytes_of));

    let del = kv
        .delete_range(DeleteRangeRequest { key: "p/".into(), range_end: "p0".into(), prev_kv: true })
        .await?
        .into_inner();
    assert_eq!(del.deleted, 3);
    assert_eq!(del.prev_kvs.len(), 3);
    let after = kv.range(RangeRequest { key: "p/".into(), range_end: "p0".into(), ..Default::default() }).await?;
    assert_eq!(after.into_inner().count, 0);
    Ok(())
}

#[tokio::test]
async fn txn_compare_and_swap() -> Result<()> {
    let etcd = single()?;
    let mut kv = KvClient::new(channel(&etcd.endpoints()[0]).await?);
    kv.put(PutRequest { key: "cas".into(), value: "1".into(), ..Default::default() }).await?;

    let swap = |expect: &'static str, new: &'static str| TxnRequest {
        compare: vec![Compare {
            key: "cas".into(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            target_union: Some(compare::TargetUnion::Value(expect.into())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: "cas".into(),
                value: new.into(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest { key: "cas".into(), ..Default::default() })),
        }],
    };

    let ok = kv.txn(swap("1", "2")).await?.into_inner();
    assert!(ok.succeeded);
    assert!(matches!(ok.responses[0].response, Some(response_op::Response::ResponsePut(_))));

    let stale = kv.txn(swap("1", "3")).await?.into_inner();
    assert!(!stale.succeeded, "the compare must fail: the value is now 2");
    match &stale.responses[0].response {
        Some(response_op::Response::ResponseRange(r)) => assert_eq!(&r.kvs[0].value[..], b"2"),
        other => panic!("expected the else-branch range, got {other:?}"),
    }
    Ok(())
}

fn bytes_of(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}
