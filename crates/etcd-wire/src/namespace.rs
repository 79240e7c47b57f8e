//! Key prefixing for [`Client::with_namespace`](crate::Client::with_namespace), after Go's
//! `client/v3/namespace`: keys and range ends gain the prefix on the way out, results lose it on
//! the way back, so code written for a whole keyspace runs unchanged inside a prefix.

use bytes::{Bytes, BytesMut};

use crate::range::prefix_range_end;

/// A key prefix; empty means no namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Namespace(Bytes);

impl Namespace {
    /// This namespace with `more` appended.
    pub(crate) fn join(&self, more: &[u8]) -> Namespace {
        let mut b = BytesMut::from(&self.0[..]);
        b.extend_from_slice(more);
        Namespace(b.freeze())
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.0
    }

    /// `prefix + key`.
    pub(crate) fn key(&self, key: Bytes) -> Bytes {
        if self.0.is_empty() {
            return key;
        }
        let mut b = BytesMut::with_capacity(self.0.len() + key.len());
        b.extend_from_slice(&self.0);
        b.extend_from_slice(&key);
        b.freeze()
    }

    /// `prefix + key` as the start of a range ending at `end` (before namespacing). A range from
    /// the empty key (every key, or every key up to `end`) starts at `"\0"`: etcd refuses an empty
    /// key, and no key sorts below `"\0"` (Go's clientv3 does the same).
    pub(crate) fn range_key(&self, key: Bytes, end: &[u8]) -> Bytes {
        let key = self.key(key);
        if key.is_empty() && !end.is_empty() { Bytes::from_static(&[0]) } else { key }
    }

    /// The range end for a range that starts at `prefix + key`: empty stays empty (one key);
    /// `"\0"` (every key from `key` on) becomes the end of the namespace; others gain the prefix.
    pub(crate) fn range_end(&self, end: Bytes) -> Bytes {
        if self.0.is_empty() || end.is_empty() {
            return end;
        }
        if end[..] == [0] {
            return prefix_range_end(&self.0);
        }
        self.key(end)
    }

    /// `key` without the prefix (unchanged if it does not carry it).
    pub(crate) fn strip(&self, key: Bytes) -> Bytes {
        if key.starts_with(&self.0) { key.slice(self.0.len()..) } else { key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_range_from_the_empty_key_starts_at_zero() {
        let none = Namespace::default();
        assert_eq!(none.range_key(Bytes::new(), b"\0"), "\0");
        assert_eq!(none.range_key(Bytes::new(), b""), "");
        assert_eq!(none.join(b"ns/").range_key(Bytes::new(), b"\0"), "ns/");
    }

    #[test]
    fn prefixes_and_strips() {
        let ns = Namespace::default().join(b"app/");
        assert_eq!(ns.key(Bytes::from_static(b"k")), "app/k");
        assert_eq!(ns.range_end(Bytes::new()), "");
        assert_eq!(ns.range_end(Bytes::from_static(b"\0")), "app0");
        assert_eq!(ns.range_end(Bytes::from_static(b"z")), "app/z");
        assert_eq!(ns.strip(Bytes::from_static(b"app/k")), "k");
        assert_eq!(ns.join(b"x/").prefix(), b"app/x/");
    }

    proptest! {
        #[test]
        fn strip_inverts_key(prefix in proptest::collection::vec(any::<u8>(), 0..8), key in proptest::collection::vec(any::<u8>(), 0..8)) {
            let ns = Namespace::default().join(&prefix);
            prop_assert_eq!(ns.strip(ns.key(Bytes::from(key.clone()))), Bytes::from(key));
        }
    }
}
